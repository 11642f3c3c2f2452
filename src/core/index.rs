//! The live set of policies: lookup by `namespace/name` and by host + path. Pure; the
//! sources build a new index and the server swaps it in whole (see `state::AppState`).
//!
//! Host routing is shared between tenants, so it follows two rules:
//! - **A host belongs to one namespace**: the one whose claim on it is oldest (see
//!   [`Seniority`]). Claims on that host from other namespaces, on any path, are not
//!   routed and change nothing for the owner; they are reported per policy
//!   ([`PolicyIndex::hosts_owned_elsewhere`]) without naming the owner.
//! - **Within the owner namespace**, two policies on the same host and path are a conflict:
//!   neither is chosen (the route denies with `policy_invalid`) and both are told why.
//!
//! Path prefixes match whole segments, ASCII-case-insensitively: backends such as Express
//! or ASP.NET route `/ADMIN` to `/admin`, so a case change must not select another policy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use url::Url;

use crate::core::policy::{CompiledPolicy, PolicyKey};
use crate::core::reason::Reason;

/// A policy as the index holds it: enforceable, or refused with the validation message.
#[derive(Debug, Clone)]
pub enum Entry {
    Ready(Arc<CompiledPolicy>),
    Invalid {
        message: String,
        /// The `metadata.generation` that failed validation.
        generation: Option<i64>,
    },
}

impl Entry {
    /// The `metadata.generation` this entry was built from.
    pub fn generation(&self) -> Option<i64> {
        match self {
            Entry::Ready(p) => p.generation,
            Entry::Invalid { generation, .. } => *generation,
        }
    }
}

#[derive(Debug, Clone)]
enum Route {
    Policy(Arc<CompiledPolicy>),
    /// Two or more policies claim the same host and path: none of them is chosen.
    Conflict,
}

/// A route claimed by several policies of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    pub host: String,
    pub path: String,
    pub policies: Vec<PolicyKey>,
}

/// When a claim on a host began; the oldest claim owns the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seniority {
    /// Cluster: the policy's `creationTimestamp` (seconds). The same instant on every
    /// replica, so all replicas agree; ties go to the smaller `namespace/name`.
    Created(i64),
    /// File mode: the reload in which this process first saw the namespace claim the host.
    /// Claims first seen together (at start-up, or in one reload) are a tie that nobody
    /// wins: the host is routed to neither until one claim goes away.
    FirstSeen(u64),
}

impl Seniority {
    fn rank(self) -> i128 {
        match self {
            Seniority::Created(t) => i128::from(t),
            Seniority::FirstSeen(n) => i128::from(n),
        }
    }

    fn ties_refused(self) -> bool {
        matches!(self, Seniority::FirstSeen(_))
    }
}

/// The operator's mapping of namespaces to the host patterns they may claim, e.g.
/// `team-a=*.team-a.example.com,app.example.com` (flag `--host-claims`, repeatable). A
/// pattern is a host name, or `*.` and a suffix matching one or more labels before it.
/// Once any mapping is given, a namespace not listed may claim no host.
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
                let name = pattern.strip_prefix("*.").unwrap_or(pattern);
                if !crate::core::policy::is_dns_name(name) {
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
}

impl NamespaceHosts {
    pub fn may_claim(&self, namespace: &str, host: &str) -> bool {
        self.patterns.get(namespace).is_some_and(|list| {
            list.iter().any(|p| match p.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => p == host,
            })
        })
    }
}

/// Why a policy's claim on a host is not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostRefusal {
    /// Another namespace's claim is older (or, in file mode, as old).
    OwnedElsewhere,
    /// The operator's host-claim rules do not let this namespace claim the host.
    NotAllowed,
}

#[derive(Debug, Default)]
pub struct PolicyIndex {
    by_name: HashMap<String, HashMap<String, Entry>>,
    /// Per host, prefixes (lowercase) sorted longest first.
    by_host: HashMap<String, Vec<(String, Route)>>,
    conflicts: Vec<RouteConflict>,
    refused: HashMap<PolicyKey, Vec<(String, HostRefusal)>>,
    len: usize,
}

impl PolicyIndex {
    /// An index where every claim is equally old (`FirstSeen(0)`): a host claimed from two
    /// namespaces is routed to neither. For single-policy uses and tests.
    pub fn build(entries: impl IntoIterator<Item = (PolicyKey, Entry)>) -> Self {
        Self::build_with(entries, |_, _| Seniority::FirstSeen(0), None)
    }

    /// Builds the index; `seniority(policy, host)` says how old a policy's claim on a host
    /// is, `rules` (the operator's, if any) which namespaces may claim which hosts.
    pub fn build_with(
        entries: impl IntoIterator<Item = (PolicyKey, Entry)>,
        seniority: impl Fn(&PolicyKey, &str) -> Seniority,
        rules: Option<&NamespaceHosts>,
    ) -> Self {
        let mut index = PolicyIndex::default();
        // host -> every (policy, path) claiming it
        let mut by_host: HashMap<&str, Vec<(Arc<CompiledPolicy>, String)>> = HashMap::new();
        let entries: Vec<(PolicyKey, Entry)> = entries.into_iter().collect();
        for (_, entry) in &entries {
            if let Entry::Ready(p) = entry {
                for (host, path) in &p.routes {
                    by_host
                        .entry(host.as_str())
                        .or_default()
                        .push((p.clone(), path.to_ascii_lowercase()));
                }
            }
        }
        let mut claims: HashMap<(String, String), Vec<Arc<CompiledPolicy>>> = HashMap::new();
        for (host, mut claimants) in by_host {
            if let Some(rules) = rules {
                claimants.retain(|(p, _)| {
                    let ok = rules.may_claim(&p.key.namespace, host);
                    if !ok {
                        index.refuse(&p.key, host, HostRefusal::NotAllowed);
                    }
                    ok
                });
            }
            let owner = owner(&claimants, host, &seniority);
            for (p, path) in claimants {
                if owner.as_deref() == Some(p.key.namespace.as_str()) {
                    claims.entry((host.to_owned(), path)).or_default().push(p);
                } else {
                    index.refuse(&p.key, host, HostRefusal::OwnedElsewhere);
                }
            }
        }
        for ((host, path), mut policies) in claims {
            // A policy listing `/x` and `/X` claims one route once.
            policies.sort_by(|a, b| a.key.cmp(&b.key));
            policies.dedup_by(|a, b| a.key == b.key);
            let route = if policies.len() == 1 {
                Route::Policy(policies.pop().expect("one element"))
            } else {
                let mut keys: Vec<PolicyKey> = policies.iter().map(|p| p.key.clone()).collect();
                keys.sort();
                keys.dedup();
                index.conflicts.push(RouteConflict {
                    host: host.clone(),
                    path: path.clone(),
                    policies: keys,
                });
                Route::Conflict
            };
            index.by_host.entry(host).or_default().push((path, route));
        }
        for routes in index.by_host.values_mut() {
            routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        index
            .conflicts
            .sort_by(|a, b| (&a.host, &a.path).cmp(&(&b.host, &b.path)));
        for hosts in index.refused.values_mut() {
            hosts.sort();
            hosts.dedup();
        }
        for (key, entry) in entries {
            index
                .by_name
                .entry(key.namespace)
                .or_default()
                .insert(key.name, entry);
            index.len += 1;
        }
        index
    }

    fn refuse(&mut self, key: &PolicyKey, host: &str, why: HostRefusal) {
        self.refused
            .entry(key.clone())
            .or_default()
            .push((host.to_owned(), why));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// For `/auth/{namespace}/{name}`.
    pub fn by_name(&self, namespace: &str, name: &str) -> Result<&Arc<CompiledPolicy>, Reason> {
        match self.by_name.get(namespace).and_then(|m| m.get(name)) {
            Some(Entry::Ready(p)) => Ok(p),
            Some(Entry::Invalid { .. }) => Err(Reason::PolicyInvalid),
            None => Err(Reason::PolicyUnknown),
        }
    }

    /// For the bare `/auth`: the longest path prefix (whole segments, ASCII case ignored)
    /// under the exact host.
    pub fn by_route(&self, host: &str, path: &str) -> Result<&Arc<CompiledPolicy>, Reason> {
        let routes = self.by_host.get(host).ok_or(Reason::PolicyUnknown)?;
        for (prefix, route) in routes {
            if segment_prefix(prefix, path) {
                return match route {
                    Route::Policy(p) => Ok(p),
                    Route::Conflict => Err(Reason::PolicyInvalid),
                };
            }
        }
        Err(Reason::PolicyUnknown)
    }

    pub fn entry(&self, key: &PolicyKey) -> Option<&Entry> {
        self.by_name.get(&key.namespace)?.get(&key.name)
    }

    pub fn entries(&self) -> impl Iterator<Item = (PolicyKey, &Entry)> {
        self.by_name.iter().flat_map(|(ns, m)| {
            m.iter()
                .map(move |(name, e)| (PolicyKey::new(ns.clone(), name.clone()), e))
        })
    }

    pub fn conflicts(&self) -> &[RouteConflict] {
        &self.conflicts
    }

    /// The hosts `key` claims that are not routed to it, and why.
    pub fn refused_hosts(&self, key: &PolicyKey) -> &[(String, HostRefusal)] {
        self.refused.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every policy with a refused host claim.
    pub fn refusals(&self) -> impl Iterator<Item = (&PolicyKey, &[(String, HostRefusal)])> {
        self.refused.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// Every JWKS URL an enforceable policy needs.
    pub fn jwks_uris(&self) -> HashSet<Url> {
        self.by_name
            .values()
            .flat_map(|m| m.values())
            .filter_map(|e| match e {
                Entry::Ready(p) => Some(p.jwks_uri.clone()),
                Entry::Invalid { .. } => None,
            })
            .collect()
    }
}

/// The namespace that owns `host` among its claimants, if any.
fn owner(
    claimants: &[(Arc<CompiledPolicy>, String)],
    host: &str,
    seniority: &impl Fn(&PolicyKey, &str) -> Seniority,
) -> Option<String> {
    // Oldest claim per namespace, then the oldest namespace.
    let mut oldest: Vec<(i128, &PolicyKey, bool)> = Vec::new();
    for (p, _) in claimants {
        let s = seniority(&p.key, host);
        let rank = s.rank();
        match oldest
            .iter_mut()
            .find(|(_, k, _)| k.namespace == p.key.namespace)
        {
            Some(o) if (rank, &p.key) < (o.0, o.1) => *o = (rank, &p.key, s.ties_refused()),
            Some(_) => {}
            None => oldest.push((rank, &p.key, s.ties_refused())),
        }
    }
    oldest.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let first = oldest.first()?;
    if first.2 && oldest.get(1).is_some_and(|second| second.0 == first.0) {
        return None;
    }
    Some(first.1.namespace.clone())
}

/// `/api` matches `/api`, `/API/x` and `/api/x`, not `/apix`. `prefix` is lowercase; both
/// are normalised (no trailing slash but `/`). Non-ASCII bytes compare exactly.
fn segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.len() >= prefix.len()
            && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{AccessPolicySpec, IssuerSpec, compile};

    fn policy(name: &str, hosts: &[&str], paths: &[&str]) -> (PolicyKey, Entry) {
        in_ns("ns", name, hosts, paths)
    }

    fn in_ns(ns: &str, name: &str, hosts: &[&str], paths: &[&str]) -> (PolicyKey, Entry) {
        let spec = AccessPolicySpec {
            issuer: IssuerSpec {
                team_domain: Some("t.cloudflareaccess.com".into()),
                ..Default::default()
            },
            audiences: vec!["a".repeat(64)],
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let key = PolicyKey::new(ns, name);
        (
            key.clone(),
            Entry::Ready(Arc::new(compile(key, None, &spec).unwrap())),
        )
    }

    #[test]
    fn lookup_by_name() {
        let idx = PolicyIndex::build([
            policy("a", &[], &[]),
            (
                PolicyKey::new("ns", "bad"),
                Entry::Invalid {
                    message: "x".into(),
                    generation: None,
                },
            ),
        ]);
        assert_eq!(idx.by_name("ns", "a").unwrap().key.name, "a");
        assert_eq!(idx.by_name("ns", "bad").unwrap_err(), Reason::PolicyInvalid);
        assert_eq!(idx.by_name("ns", "zzz").unwrap_err(), Reason::PolicyUnknown);
        assert_eq!(
            idx.by_name("other", "a").unwrap_err(),
            Reason::PolicyUnknown
        );
    }

    #[test]
    fn longest_segment_prefix_wins() {
        let idx = PolicyIndex::build([
            policy("root", &["app.example.com"], &[]),
            policy("api", &["app.example.com"], &["/api"]),
            policy("admin", &["app.example.com"], &["/api/admin"]),
        ]);
        let name = |path: &str| {
            idx.by_route("app.example.com", path)
                .map(|p| p.key.name.clone())
        };
        assert_eq!(name("/").unwrap(), "root");
        assert_eq!(name("/apix").unwrap(), "root");
        assert_eq!(name("/api").unwrap(), "api");
        assert_eq!(name("/api/v1").unwrap(), "api");
        assert_eq!(name("/api/admin/users").unwrap(), "admin");
        assert_eq!(
            idx.by_route("other.example.com", "/").unwrap_err(),
            Reason::PolicyUnknown
        );
    }

    #[test]
    fn conflicting_routes_choose_nobody() {
        let idx = PolicyIndex::build([
            policy("one", &["app.example.com"], &["/x"]),
            policy("two", &["app.example.com"], &["/x"]),
            policy("root", &["app.example.com"], &[]),
        ]);
        assert_eq!(
            idx.by_route("app.example.com", "/x/y").unwrap_err(),
            Reason::PolicyInvalid
        );
        assert_eq!(
            idx.by_route("app.example.com", "/z").unwrap().key.name,
            "root"
        );
        assert_eq!(idx.conflicts().len(), 1);
        assert_eq!(
            idx.conflicts()[0].policies,
            vec![PolicyKey::new("ns", "one"), PolicyKey::new("ns", "two")]
        );
    }

    #[test]
    fn jwks_uris_are_deduplicated() {
        let idx = PolicyIndex::build([policy("a", &[], &[]), policy("b", &[], &[])]);
        assert_eq!(idx.jwks_uris().len(), 1);
    }

    /// Seniority from a table of (namespace, creation second).
    fn created(table: &'static [(&'static str, i64)]) -> impl Fn(&PolicyKey, &str) -> Seniority {
        move |k, _| Seniority::Created(table.iter().find(|(ns, _)| *ns == k.namespace).unwrap().1)
    }

    fn routed_to(idx: &PolicyIndex, host: &str, path: &str) -> Result<String, Reason> {
        idx.by_route(host, path).map(|p| p.key.to_string())
    }

    #[test]
    fn a_newer_namespace_cannot_take_a_host_on_any_path() {
        let entries = || {
            [
                in_ns("victim", "admin", &["admin.example.com"], &["/"]),
                in_ns("tenant", "grab", &["admin.example.com"], &["/x"]),
                in_ns("tenant", "same", &["admin.example.com"], &["/"]),
            ]
        };
        let idx = PolicyIndex::build_with(
            entries(),
            created(&[("victim", 100), ("tenant", 200)]),
            None,
        );
        assert_eq!(
            routed_to(&idx, "admin.example.com", "/x/y").unwrap(),
            "victim/admin"
        );
        assert_eq!(
            routed_to(&idx, "admin.example.com", "/").unwrap(),
            "victim/admin"
        );
        assert!(
            idx.conflicts().is_empty(),
            "the owner's route is not a conflict"
        );
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("tenant", "grab")),
            &[("admin.example.com".to_owned(), HostRefusal::OwnedElsewhere)]
        );
        assert!(
            idx.refused_hosts(&PolicyKey::new("victim", "admin"))
                .is_empty()
        );
        // The tenant's policies are still usable by name: only host routing is refused.
        assert!(idx.by_name("tenant", "grab").is_ok());

        // Older tenant: the tenant owns the host, the victim's claim is refused.
        let idx = PolicyIndex::build_with(
            entries(),
            created(&[("victim", 300), ("tenant", 200)]),
            None,
        );
        assert_eq!(
            routed_to(&idx, "admin.example.com", "/").unwrap(),
            "tenant/same"
        );
    }

    #[test]
    fn equal_creation_times_go_to_the_smaller_name() {
        let idx = PolicyIndex::build_with(
            [
                in_ns("b", "p", &["h.example"], &[]),
                in_ns("a", "p", &["h.example"], &[]),
            ],
            |_, _| Seniority::Created(5),
            None,
        );
        assert_eq!(routed_to(&idx, "h.example", "/").unwrap(), "a/p");
    }

    #[test]
    fn claims_first_seen_together_are_routed_to_nobody() {
        let idx = PolicyIndex::build([
            in_ns("a", "p", &["h.example"], &[]),
            in_ns("b", "p", &["h.example"], &[]),
        ]);
        assert_eq!(
            routed_to(&idx, "h.example", "/"),
            Err(Reason::PolicyUnknown)
        );
        assert_eq!(idx.refused_hosts(&PolicyKey::new("a", "p")).len(), 1);
        assert_eq!(idx.refused_hosts(&PolicyKey::new("b", "p")).len(), 1);
        // One namespace, several policies: ownership is per namespace, routes as before.
        let idx = PolicyIndex::build_with(
            [
                in_ns("a", "p", &["h.example"], &[]),
                in_ns("a", "q", &["h.example"], &["/q"]),
                in_ns("b", "p", &["h.example"], &[]),
            ],
            |k, _| Seniority::FirstSeen(if k.namespace == "a" { 1 } else { 2 }),
            None,
        );
        assert_eq!(routed_to(&idx, "h.example", "/q/1").unwrap(), "a/q");
        assert_eq!(routed_to(&idx, "h.example", "/").unwrap(), "a/p");
    }

    #[test]
    fn conflicts_stay_within_the_owner_namespace() {
        let idx = PolicyIndex::build_with(
            [
                in_ns("a", "one", &["h.example"], &["/x"]),
                in_ns("a", "two", &["h.example"], &["/X"]),
                in_ns("z", "late", &["h.example"], &["/x"]),
            ],
            created(&[("a", 1), ("z", 2)]),
            None,
        );
        assert_eq!(
            routed_to(&idx, "h.example", "/x"),
            Err(Reason::PolicyInvalid)
        );
        assert_eq!(
            idx.conflicts()[0].policies,
            vec![PolicyKey::new("a", "one"), PolicyKey::new("a", "two")],
            "no foreign policy named"
        );
    }

    #[test]
    fn prefixes_ignore_ascii_case_only() {
        let idx = PolicyIndex::build([
            policy("root", &["app.example.com"], &[]),
            policy("admin", &["app.example.com"], &["/Admin"]),
        ]);
        for path in ["/admin", "/ADMIN/users", "/Admin/users", "/aDmIn"] {
            assert_eq!(
                routed_to(&idx, "app.example.com", path).unwrap(),
                "ns/admin",
                "{path}"
            );
        }
        assert_eq!(
            routed_to(&idx, "app.example.com", "/adminx").unwrap(),
            "ns/root"
        );
        // Kelvin sign is not an ASCII K.
        let idx = PolicyIndex::build([policy("root", &["h"], &[]), policy("k", &["h"], &["/k"])]);
        assert_eq!(routed_to(&idx, "h", "/\u{212A}").unwrap(), "ns/root");
    }

    #[test]
    fn host_claim_rules_refuse_before_seniority() {
        let idx = PolicyIndex::build_with(
            [
                in_ns("old", "p", &["admin.example.com"], &[]),
                in_ns("ops", "p", &["admin.example.com"], &[]),
            ],
            created(&[("old", 1), ("ops", 9)]),
            Some(&NamespaceHosts::parse(&["ops=*.example.com"]).unwrap()),
        );
        assert_eq!(routed_to(&idx, "admin.example.com", "/").unwrap(), "ops/p");
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("old", "p")),
            &[("admin.example.com".to_owned(), HostRefusal::NotAllowed)]
        );
    }

    #[test]
    fn namespace_host_patterns() {
        let rules = NamespaceHosts::parse(&[
            "team-a=*.a.example.com,app.example.com",
            "ops=admin.example.com",
        ])
        .unwrap();
        assert!(rules.may_claim("team-a", "x.a.example.com"));
        assert!(rules.may_claim("team-a", "x.y.a.example.com"));
        assert!(rules.may_claim("team-a", "app.example.com"));
        assert!(
            !rules.may_claim("team-a", "a.example.com"),
            "the wildcard needs a label"
        );
        assert!(!rules.may_claim("team-a", "xa.example.com"));
        assert!(!rules.may_claim("team-a", "admin.example.com"));
        assert!(
            !rules.may_claim("other", "app.example.com"),
            "unlisted namespaces claim nothing"
        );
        assert!(rules.may_claim("ops", "admin.example.com"));
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
