//! Who may route a host on the host-selecting endpoints (bare `/auth`, `/forward`, gRPC without
//! context). Pure: the sources say what each namespace serves and what the ledger recorded;
//! [`resolve`] decides, and the index routes what it decided.
//!
//! Three rules, in order: a right to the host ([`HostRights`]: the namespace serves it, or the
//! operator grants it); durable ownership ([`Ledger`]: the holder keeps a pattern through a
//! delete-and-recreate or a short absence, so a waiting claim cannot take it on a blip; a pattern
//! nobody holds goes to the oldest claim); and wildcards cover (a foreign claim under a held
//! wildcard is refused; the most specific held pattern routes, as nginx prefers an exact server
//! name). See docs/routing.md.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::core::policy::{PolicyKey, is_dns_name};

/// A policy `hosts` entry: a host name, or `*.` and a suffix of two or more labels.
pub fn is_host_pattern(s: &str) -> bool {
    match wildcard_suffix(s) {
        Some(suffix) => is_dns_name(suffix) && suffix.contains('.'),
        None => is_dns_name(s),
    }
}

/// `*.apps.example.com` → `apps.example.com`.
pub fn wildcard_suffix(pattern: &str) -> Option<&str> {
    pattern.strip_prefix("*.")
}

/// `name` is one or more labels followed by `.suffix`.
fn under(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// Every host `inner` matches, `outer` matches too.
pub fn covers(outer: &str, inner: &str) -> bool {
    outer == inner
        || wildcard_suffix(outer)
            .is_some_and(|suffix| under(wildcard_suffix(inner).unwrap_or(inner), suffix))
}

/// The patterns that could route `host`, most specific first: the host itself, then each
/// wildcard suffix from the longest (`*.b.c.d` before `*.c.d`). Suffixes of one label are
/// never patterns.
pub fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.match_indices('.')
        .map(move |(i, _)| &host[i + 1..])
        .filter(|suffix| suffix.contains('.'))
}

/// The operator's mapping of namespaces to the host patterns they may claim, e.g.
/// `team-a=*.team-a.example.com,app.example.com` (flag `--host-claims`, repeatable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceHosts {
    patterns: HashMap<String, Vec<String>>,
}

impl NamespaceHosts {
    /// Parses `NAMESPACE=PATTERN[,PATTERN...]` specs.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, String> {
        let mut patterns: HashMap<String, Vec<String>> = HashMap::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (ns, list) = spec
                .split_once('=')
                .ok_or_else(|| format!("{spec:?}: expected NAMESPACE=PATTERN[,PATTERN...]"))?;
            if ns.is_empty() {
                return Err(format!("{spec:?}: empty namespace"));
            }
            for pattern in list.split(',') {
                let name = wildcard_suffix(pattern).unwrap_or(pattern);
                if !is_dns_name(name) {
                    return Err(format!(
                        "{spec:?}: {pattern:?} is not a lowercase host name or *.suffix"
                    ));
                }
                patterns
                    .entry(ns.to_owned())
                    .or_default()
                    .push(pattern.to_owned());
            }
        }
        Ok(NamespaceHosts { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a rule lets `namespace` claim `pattern` (a host or a wildcard).
    pub fn may_claim_host(&self, namespace: &str, pattern: &str) -> bool {
        self.patterns
            .get(namespace)
            .is_some_and(|list| list.iter().any(|rule| covers(rule, pattern)))
    }
}

/// A host a namespace serves through its own routing objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Served {
    Exact(String),
    /// An Ingress `*.suffix`: exactly one label.
    OneLabel(String),
    /// An HTTPRoute `*.suffix`: one or more labels.
    AnyDepth(String),
}

/// The hosts each namespace serves itself: Ingress rule hosts and accepted HTTPRoute
/// hostnames. A rule or route without a host serves no host in particular and grants none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedHosts {
    by_namespace: HashMap<String, HashSet<Served>>,
}

impl ServedHosts {
    /// An Ingress rule's `host` (wildcards match one label, as the Ingress API defines).
    pub fn add_ingress_host(&mut self, namespace: &str, host: &str) {
        self.add(namespace, host, Served::OneLabel);
    }

    /// An HTTPRoute's hostname (wildcards match one or more labels).
    pub fn add_route_hostname(&mut self, namespace: &str, host: &str) {
        self.add(namespace, host, Served::AnyDepth);
    }

    fn add(&mut self, namespace: &str, host: &str, wildcard: fn(String) -> Served) {
        let host = host.to_ascii_lowercase();
        if !is_host_pattern(&host) {
            return;
        }
        let served = match wildcard_suffix(&host) {
            Some(suffix) => wildcard(suffix.to_owned()),
            None => Served::Exact(host),
        };
        self.by_namespace
            .entry(namespace.to_owned())
            .or_default()
            .insert(served);
    }

    /// Whether `namespace` serves every host `pattern` matches.
    pub fn serves(&self, namespace: &str, pattern: &str) -> bool {
        let Some(served) = self.by_namespace.get(namespace) else {
            return false;
        };
        served.iter().any(|s| match (s, wildcard_suffix(pattern)) {
            (Served::Exact(h), None) => h == pattern,
            (Served::Exact(_), Some(_)) => false,
            (Served::OneLabel(suffix), None) => {
                under(pattern, suffix) && !pattern[..pattern.len() - suffix.len() - 1].contains('.')
            }
            (Served::OneLabel(suffix), Some(p)) => p == suffix,
            (Served::AnyDepth(suffix), None) => under(pattern, suffix),
            (Served::AnyDepth(suffix), Some(p)) => p == suffix || under(p, suffix),
        })
    }

    /// Every (namespace, pattern) served; wildcards as `*.suffix`.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, String)> {
        self.by_namespace.iter().flat_map(|(ns, served)| {
            served.iter().map(move |s| {
                let pattern = match s {
                    Served::Exact(h) => h.clone(),
                    Served::OneLabel(suffix) | Served::AnyDepth(suffix) => format!("*.{suffix}"),
                };
                (ns.as_str(), pattern)
            })
        })
    }
}

/// The holder of the most specific wildcard in `ledger` strictly covering `pattern`.
pub fn covering_holder<'a>(ledger: &'a Ledger, pattern: &str) -> Option<&'a Holding> {
    let base = wildcard_suffix(pattern).unwrap_or(pattern);
    wildcard_suffixes(base).find_map(|suffix| ledger.get(&format!("*.{suffix}")))
}

/// Why a policy's claim on a host is not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostRefusal {
    /// Another namespace holds the host, or a wildcard covering it.
    OwnedElsewhere,
    /// File mode: the operator's host-claim rules (or, without rules, the first namespace's
    /// sole right to claim hosts) do not let this namespace claim the host.
    NotAllowed,
    /// Cluster: no Ingress or HTTPRoute of this namespace serves the host and no operator
    /// rule grants it.
    NotServed,
}

/// Which namespaces may claim which host patterns.
#[derive(Debug, Clone, Copy)]
pub enum HostRights<'a> {
    /// File mode without rules: this namespace (the first to claim hosts) may claim any host;
    /// no other may. `None`: nobody (several namespaces claimed hosts at once).
    FirstNamespace(Option<&'a str>),
    /// File mode with rules: only what they grant.
    Rules(&'a NamespaceHosts),
    /// Cluster: what the namespace serves itself, and what the rules (if any) grant.
    Served {
        served: &'a ServedHosts,
        rules: Option<&'a NamespaceHosts>,
    },
    /// Anyone: single-namespace uses (`accessgate check`, tests of other rules).
    Open,
}

impl HostRights<'_> {
    pub fn check(&self, namespace: &str, pattern: &str) -> Result<(), HostRefusal> {
        let ok = match self {
            HostRights::Open => true,
            HostRights::FirstNamespace(first) => *first == Some(namespace),
            HostRights::Rules(rules) => rules.may_claim_host(namespace, pattern),
            HostRights::Served { served, rules } => {
                served.serves(namespace, pattern)
                    || rules.is_some_and(|r| r.may_claim_host(namespace, pattern))
            }
        };
        match (ok, self) {
            (true, _) => Ok(()),
            (false, HostRights::Served { .. }) => Err(HostRefusal::NotServed),
            (false, _) => Err(HostRefusal::NotAllowed),
        }
    }
}

/// Who holds a host pattern, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holding {
    pub namespace: String,
    /// When the namespace took the pattern (Unix seconds).
    pub since: i64,
    /// Since when the namespace no longer claims it (Unix seconds); the pattern is freed a
    /// grace period later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent_since: Option<i64>,
}

/// Host pattern → holder. Kept where every replica reads it and a restart keeps it (the
/// cluster's ConfigMap; file mode's memory).
pub type Ledger = BTreeMap<String, Holding>;

/// One policy's claim on one host pattern.
#[derive(Debug, Clone, Copy)]
pub struct HostClaim<'a> {
    pub key: &'a PolicyKey,
    pub pattern: &'a str,
    /// Older claims win a pattern nobody holds: the policy's `creationTimestamp` in the
    /// cluster, the same for every claim in file mode.
    pub seniority: i64,
}

/// How two new claims of the same age on one pattern are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ties {
    /// Cluster: the smaller `namespace/name` (every replica sees the same timestamps).
    ToSmallerName,
    /// File mode: claims first seen together: nobody wins until one goes away.
    Nobody,
}

/// The writer's clock: with it, absences are recorded and expire; without it (a replica
/// that only reads the ledger), holdings stand until the writer changes them.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: i64,
    /// Seconds a holder may be absent before the pattern is freed.
    pub grace: i64,
}

#[derive(Debug, Default)]
pub struct Resolution {
    pub ledger: Ledger,
    /// Per policy: its host patterns that are not routed to it, and why.
    pub refused: HashMap<PolicyKey, Vec<(String, HostRefusal)>>,
}

impl Resolution {
    /// Whether `namespace` holds `pattern` now.
    pub fn holds(&self, namespace: &str, pattern: &str) -> bool {
        self.ledger
            .get(pattern)
            .is_some_and(|h| h.namespace == namespace && h.absent_since.is_none())
    }
}

/// The next ledger and the refused claims, from the last ledger and today's claims.
pub fn resolve(
    previous: &Ledger,
    host_claims: &[HostClaim],
    rights: &HostRights,
    ties: Ties,
    clock: Option<Clock>,
) -> Resolution {
    let mut refused: HashMap<PolicyKey, Vec<(String, HostRefusal)>> = HashMap::new();
    let mut eligible = Vec::with_capacity(host_claims.len());
    for host_claim in host_claims {
        match rights.check(&host_claim.key.namespace, host_claim.pattern) {
            Ok(()) => eligible.push(*host_claim),
            Err(why) => refused
                .entry(host_claim.key.clone())
                .or_default()
                .push((host_claim.pattern.to_owned(), why)),
        }
    }
    let claimed_hosts: HashSet<(&str, &str)> = eligible
        .iter()
        .map(|c| (c.key.namespace.as_str(), c.pattern))
        .collect();

    let mut ledger = previous.clone();
    ledger.retain(|pattern, holding| {
        if claimed_hosts.contains(&(holding.namespace.as_str(), pattern.as_str())) {
            holding.absent_since = None;
            return true;
        }
        match clock {
            None => true,
            Some(clock) => {
                let since = *holding.absent_since.get_or_insert(clock.now);
                clock.now.saturating_sub(since) < clock.grace
            }
        }
    });

    // Each pattern's claims, for the tie check (a scan of every claim for each would be
    // quadratic in a first load of 10,000 policies).
    let mut by_pattern: HashMap<&str, Vec<&HostClaim>> = HashMap::new();
    for host_claim in &eligible {
        by_pattern
            .entry(host_claim.pattern)
            .or_default()
            .push(host_claim);
    }

    // Patterns nobody holds: oldest claim first; at equal age a wildcard before the patterns
    // it covers, so it is not blocked by a claim it would cover.
    let mut fresh: Vec<&HostClaim> = eligible
        .iter()
        .filter(|c| !ledger.contains_key(c.pattern))
        .collect();
    fresh.sort_by(|a, b| {
        (a.seniority, specificity(a.pattern), a.key, a.pattern).cmp(&(
            b.seniority,
            specificity(b.pattern),
            b.key,
            b.pattern,
        ))
    });
    for host_claim in fresh {
        let namespace = host_claim.key.namespace.as_str();
        if ledger.contains_key(host_claim.pattern)
            || covered_elsewhere(&ledger, host_claim.pattern, namespace)
        {
            continue;
        }
        let tied = ties == Ties::Nobody
            && by_pattern[host_claim.pattern]
                .iter()
                .any(|o| o.key.namespace != namespace && o.seniority == host_claim.seniority);
        if tied {
            continue;
        }
        ledger.insert(
            host_claim.pattern.to_owned(),
            Holding {
                namespace: namespace.to_owned(),
                since: clock.map_or(host_claim.seniority, |c| c.now),
                absent_since: None,
            },
        );
    }

    let mut resolution = Resolution {
        ledger,
        refused: HashMap::new(),
    };
    for host_claim in &eligible {
        if !resolution.holds(&host_claim.key.namespace, host_claim.pattern) {
            refused
                .entry(host_claim.key.clone())
                .or_default()
                .push((host_claim.pattern.to_owned(), HostRefusal::OwnedElsewhere));
        }
    }
    for hosts in refused.values_mut() {
        hosts.sort();
        hosts.dedup();
    }
    resolution.refused = refused;
    resolution
}

/// Wildcards with fewer labels first, then longer wildcards, then exact hosts.
fn specificity(pattern: &str) -> (bool, usize) {
    match wildcard_suffix(pattern) {
        Some(suffix) => (false, suffix.matches('.').count()),
        None => (true, 0),
    }
}

/// Another namespace holds a wildcard covering `pattern`.
fn covered_elsewhere(ledger: &Ledger, pattern: &str, namespace: &str) -> bool {
    let base = wildcard_suffix(pattern).unwrap_or(pattern);
    wildcard_suffixes(base).any(|suffix| {
        ledger
            .get(&format!("*.{suffix}"))
            .is_some_and(|h| h.namespace != namespace)
    })
}

/// The patterns a namespace serves itself under a wildcard another namespace holds: the
/// wildcard's policy must not decide for them (nginx sends that traffic to the serving
/// namespace's backend, not the wildcard holder's), so they route nowhere unless held.
pub fn carved_out<'a>(
    served: &'a ServedHosts,
    ledger: &'a Ledger,
) -> impl Iterator<Item = String> + 'a {
    served.patterns().filter_map(move |(ns, pattern)| {
        covering_holder(ledger, &pattern)
            .is_some_and(|h| h.namespace != ns)
            .then_some(pattern)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for ok in [
            "a.example.com",
            "*.apps.example.com",
            "*.example.com",
            "localhost",
        ] {
            assert!(is_host_pattern(ok), "{ok}");
        }
        for bad in [
            "*.com", "*", "*.", "a.*.com", "**.a.com", "*a.com", "A.com", "",
        ] {
            assert!(!is_host_pattern(bad), "{bad}");
        }
        assert!(covers("*.a.com", "x.a.com"));
        assert!(covers("*.a.com", "x.y.a.com"));
        assert!(covers("*.a.com", "*.y.a.com"));
        assert!(covers("*.a.com", "*.a.com"));
        assert!(!covers("*.a.com", "a.com"));
        assert!(!covers("*.a.com", "xa.com"));
        assert!(!covers("x.a.com", "*.a.com"));
        // An empty label is not a name under the suffix.
        assert!(!covers("*.a.com", ".a.com"));
        assert_eq!(
            wildcard_suffixes("s.apps.example.com").collect::<Vec<_>>(),
            ["apps.example.com", "example.com"]
        );
    }

    /// RFC 1035 limits: a label of at most 63 characters, a name of at most 253 (a
    /// wildcard's suffix is such a name).
    #[test]
    fn patterns_keep_the_dns_length_limits() {
        let label = |len: usize| "a".repeat(len);
        assert!(is_host_pattern(&format!("{}.example.com", label(63))));
        assert!(!is_host_pattern(&format!("{}.example.com", label(64))));
        assert!(is_host_pattern(&format!("*.{}.com", label(63))));
        assert!(!is_host_pattern(&format!("*.{}.com", label(64))));
        // Three 63-character labels and one of `last`: 192 + `last` characters.
        let name = |last: usize| format!("{0}.{0}.{0}.{1}", label(63), label(last));
        assert_eq!(name(61).len(), 253);
        assert!(is_host_pattern(&name(61)));
        assert!(!is_host_pattern(&name(62)));
        assert!(is_host_pattern(&format!("*.{}", name(61))));
        assert!(!is_host_pattern(&format!("*.{}", name(62))));
    }

    #[test]
    fn served_wildcards_follow_their_api() {
        let mut served = ServedHosts::default();
        served.add_ingress_host("ing", "*.apps.example.com");
        served.add_route_hostname("route", "*.gw.example.com");
        served.add_ingress_host("ing", "Exact.Example.com");
        served.add_ingress_host("ing", "");
        assert!(served.serves("ing", "x.apps.example.com"));
        assert!(
            !served.serves("ing", "x.y.apps.example.com"),
            "Ingress: one label"
        );
        assert!(served.serves("ing", "*.apps.example.com"));
        assert!(!served.serves("ing", "apps.example.com"));
        assert!(served.serves("ing", "exact.example.com"));
        assert!(served.serves("route", "x.y.gw.example.com"));
        assert!(served.serves("route", "*.y.gw.example.com"));
        assert!(!served.serves("route", "*.example.com"));
        assert!(!served.serves("other", "x.apps.example.com"));
    }

    fn key(ns: &str, name: &str) -> PolicyKey {
        PolicyKey::new(ns, name)
    }

    fn host_claim<'a>(key: &'a PolicyKey, pattern: &'a str, seniority: i64) -> HostClaim<'a> {
        HostClaim {
            key,
            pattern,
            seniority,
        }
    }

    fn holder(r: &Resolution, pattern: &str) -> Option<String> {
        r.ledger
            .get(pattern)
            .filter(|h| h.absent_since.is_none())
            .map(|h| h.namespace.clone())
    }

    const CLOCK: fn(i64) -> Option<Clock> = |now| Some(Clock { now, grace: 100 });

    #[test]
    fn a_held_wildcard_covers_newer_foreign_host_claims() {
        let (victim, tenant) = (key("victim", "apps"), key("tenant", "grab"));
        let host_claims = [
            host_claim(&victim, "*.apps.example.com", 10),
            host_claim(&tenant, "secret.apps.example.com", 5),
        ];
        // The tenant's claim is older, but the wildcard was held first.
        let mut ledger = Ledger::new();
        ledger.insert(
            "*.apps.example.com".into(),
            Holding {
                namespace: "victim".into(),
                since: 1,
                absent_since: None,
            },
        );
        let r = resolve(
            &ledger,
            &host_claims,
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(50),
        );
        assert_eq!(holder(&r, "secret.apps.example.com"), None);
        assert_eq!(
            r.refused[&tenant],
            [(
                "secret.apps.example.com".to_owned(),
                HostRefusal::OwnedElsewhere
            )]
        );
        // Fresh, equally old: the wildcard goes first and covers the specific claim.
        let host_claims = [
            host_claim(&tenant, "secret.apps.example.com", 10),
            host_claim(&victim, "*.apps.example.com", 10),
        ];
        let r = resolve(
            &Ledger::new(),
            &host_claims,
            &HostRights::Open,
            Ties::Nobody,
            CLOCK(50),
        );
        assert_eq!(holder(&r, "*.apps.example.com").as_deref(), Some("victim"));
        assert!(r.refused.contains_key(&tenant));
    }

    #[test]
    fn a_specific_host_held_before_the_wildcard_keeps_its_owner() {
        let (a, b) = (key("a", "p"), key("b", "p"));
        let first = resolve(
            &Ledger::new(),
            &[host_claim(&a, "x.apps.example.com", 1)],
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(1),
        );
        let host_claims = [
            host_claim(&a, "x.apps.example.com", 1),
            host_claim(&b, "*.apps.example.com", 2),
        ];
        let r = resolve(
            &first.ledger,
            &host_claims,
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(2),
        );
        assert_eq!(holder(&r, "x.apps.example.com").as_deref(), Some("a"));
        assert_eq!(holder(&r, "*.apps.example.com").as_deref(), Some("b"));
        assert!(r.refused.is_empty());
    }

    #[test]
    fn an_absent_holder_keeps_the_host_for_the_grace_period() {
        let (owner, tenant) = (key("owner", "p"), key("tenant", "p"));
        let both = [
            host_claim(&owner, "h.example.com", 1),
            host_claim(&tenant, "h.example.com", 2),
        ];
        let r = resolve(
            &Ledger::new(),
            &both,
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(10),
        );
        assert_eq!(holder(&r, "h.example.com").as_deref(), Some("owner"));
        // The owner's policy is deleted (or Invalid): the tenant still may not take it.
        let tenant_only = [host_claim(&tenant, "h.example.com", 2)];
        let r = resolve(
            &r.ledger,
            &tenant_only,
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(20),
        );
        assert_eq!(r.ledger["h.example.com"].absent_since, Some(20));
        assert!(r.refused.contains_key(&tenant));
        // A replica without the clock changes nothing.
        let read = resolve(
            &r.ledger,
            &tenant_only,
            &HostRights::Open,
            Ties::ToSmallerName,
            None,
        );
        assert_eq!(read.ledger, r.ledger);
        // Re-created (a new object, newer than the tenant's): the owner has it back.
        let recreated = key("owner", "p2");
        let back = [
            host_claim(&recreated, "h.example.com", 99),
            host_claim(&tenant, "h.example.com", 2),
        ];
        let r2 = resolve(
            &r.ledger,
            &back,
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(110),
        );
        assert_eq!(holder(&r2, "h.example.com").as_deref(), Some("owner"));
        assert_eq!(r2.ledger["h.example.com"].absent_since, None);
        // Absent past the grace period: freed, and the waiting claim takes it.
        let r3 = resolve(
            &r.ledger,
            &tenant_only,
            &HostRights::Open,
            Ties::ToSmallerName,
            CLOCK(120),
        );
        assert_eq!(holder(&r3, "h.example.com").as_deref(), Some("tenant"));
        assert_eq!(r3.ledger["h.example.com"].since, 120);
    }

    #[test]
    fn host_claims_without_a_right_are_refused_before_ownership() {
        let mut served = ServedHosts::default();
        served.add_ingress_host("victim", "*.apps.example.com");
        let rules = NamespaceHosts::parse(&["ops=admin.example.com"]).unwrap();
        let rights = HostRights::Served {
            served: &served,
            rules: Some(&rules),
        };
        let (victim, tenant, ops) = (key("victim", "p"), key("tenant", "p"), key("ops", "p"));
        let host_claims = [
            host_claim(&tenant, "secret.apps.example.com", 1),
            host_claim(&victim, "*.apps.example.com", 5),
            host_claim(&ops, "admin.example.com", 9),
        ];
        let r = resolve(
            &Ledger::new(),
            &host_claims,
            &rights,
            Ties::ToSmallerName,
            None,
        );
        assert_eq!(
            r.refused[&tenant],
            [("secret.apps.example.com".to_owned(), HostRefusal::NotServed)]
        );
        assert_eq!(holder(&r, "*.apps.example.com").as_deref(), Some("victim"));
        assert_eq!(holder(&r, "admin.example.com").as_deref(), Some("ops"));
        assert_eq!(r.refused.len(), 1);
    }

    #[test]
    fn file_mode_rights_belong_to_the_first_namespace() {
        let (a, b) = (key("a", "p"), key("b", "p"));
        let host_claims = [
            host_claim(&a, "x.example.com", 0),
            host_claim(&b, "y.example.com", 0),
        ];
        let r = resolve(
            &Ledger::new(),
            &host_claims,
            &HostRights::FirstNamespace(Some("a")),
            Ties::Nobody,
            CLOCK(1),
        );
        assert_eq!(holder(&r, "x.example.com").as_deref(), Some("a"));
        assert_eq!(
            r.refused[&b],
            [("y.example.com".to_owned(), HostRefusal::NotAllowed)]
        );
        let r = resolve(
            &Ledger::new(),
            &host_claims,
            &HostRights::FirstNamespace(None),
            Ties::Nobody,
            CLOCK(1),
        );
        assert_eq!(r.refused.len(), 2);
    }

    #[test]
    fn equal_fresh_host_claims_tie_in_file_mode_and_go_by_name_in_the_cluster() {
        let (a, b) = (key("a", "p"), key("b", "p"));
        let host_claims = [
            host_claim(&b, "h.example.com", 5),
            host_claim(&a, "h.example.com", 5),
        ];
        let r = resolve(
            &Ledger::new(),
            &host_claims,
            &HostRights::Open,
            Ties::Nobody,
            CLOCK(1),
        );
        assert_eq!(holder(&r, "h.example.com"), None);
        assert_eq!(r.refused.len(), 2);
        let r = resolve(
            &Ledger::new(),
            &host_claims,
            &HostRights::Open,
            Ties::ToSmallerName,
            None,
        );
        assert_eq!(holder(&r, "h.example.com").as_deref(), Some("a"));
    }

    #[test]
    fn namespace_host_patterns() {
        let rules = NamespaceHosts::parse(&[
            "team-a=*.a.example.com,app.example.com",
            "ops=admin.example.com",
        ])
        .unwrap();
        assert!(rules.may_claim_host("team-a", "x.a.example.com"));
        assert!(rules.may_claim_host("team-a", "x.y.a.example.com"));
        assert!(rules.may_claim_host("team-a", "*.y.a.example.com"));
        assert!(rules.may_claim_host("team-a", "app.example.com"));
        assert!(
            !rules.may_claim_host("team-a", "a.example.com"),
            "the wildcard needs a label"
        );
        assert!(!rules.may_claim_host("team-a", "xa.example.com"));
        assert!(!rules.may_claim_host("team-a", "*.example.com"));
        assert!(!rules.may_claim_host("team-a", "admin.example.com"));
        assert!(
            !rules.may_claim_host("other", "app.example.com"),
            "unlisted namespaces claim nothing"
        );
        assert!(rules.may_claim_host("ops", "admin.example.com"));
        assert!(!rules.is_empty());
        assert!(NamespaceHosts::parse::<&str>(&[]).unwrap().is_empty());
        for bad in [
            "noequals",
            "=a.example.com",
            "ns=*",
            "ns=A.example.com",
            "ns=a..b",
            "ns=*.*.a",
        ] {
            assert!(NamespaceHosts::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
