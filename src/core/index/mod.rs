//! The live set of policies: lookup by `namespace/name` and by host + path. Pure; a source keeps
//! an [`IndexUpdater`] and hands it what changed, and the server swaps in the index it returns.
//!
//! A host routes only for the namespace [`crate::core::hosts::resolve`] gives it; claims from
//! other namespaces change nothing for the holder and are reported per policy
//! ([`PolicyIndex::refused_hosts`]) without naming it; two of the holder's policies on one route
//! are a conflict, and neither is chosen. Path prefixes match whole segments, ignoring ASCII
//! case (Express and ASP.NET route `/ADMIN` to `/admin`). The maps are persistent (`imbl`), so
//! one policy's change costs its own entries, not a rebuild. See docs/routing.md.

mod update;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use url::Url;

use crate::core::hosts::{Clock, HostRights, Ledger, Ties, wildcard_suffixes};
pub use crate::core::hosts::{HostRefusal, NamespaceHosts};
use crate::core::policy::{CompiledPolicy, PolicyKey};
use crate::core::reason::Reason;
pub use update::IndexUpdater;

/// A policy as the index holds it: enforceable, or refused with the validation message.
#[derive(Debug, Clone)]
pub enum PolicyEntry {
    Ready(Arc<CompiledPolicy>),
    Invalid {
        message: String,
        /// The `metadata.generation` that failed validation.
        generation: Option<i64>,
    },
}

impl PolicyEntry {
    /// The `metadata.generation` this entry was built from.
    pub fn generation(&self) -> Option<i64> {
        match self {
            PolicyEntry::Ready(p) => p.generation,
            PolicyEntry::Invalid { generation, .. } => *generation,
        }
    }
}

/// The policies one request is decided by.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The policy whose verdict is the answer, or why there is none. With a dry-run policy
    /// and no enforcing one (`Err(PolicyUnknown)`), the request is let through.
    pub enforcing: Result<Arc<CompiledPolicy>, Reason>,
    /// A dry-run policy the request selected: evaluated and counted, never the answer.
    pub dry_run: Option<Arc<CompiledPolicy>>,
}

impl Selected {
    /// `selected` as looked up; when it is a dry-run policy, `enforcing` gives the answer.
    fn of<'a>(
        selected: Result<&'a Arc<CompiledPolicy>, Reason>,
        enforcing: impl FnOnce() -> Result<&'a Arc<CompiledPolicy>, Reason>,
    ) -> Self {
        match selected {
            Ok(p) if p.dry_run => Selected {
                enforcing: enforcing().cloned(),
                dry_run: Some(p.clone()),
            },
            other => Selected {
                enforcing: other.cloned(),
                dry_run: None,
            },
        }
    }
}

/// A policy's new entry, or `None` when it is gone.
pub type Change = (PolicyKey, Option<PolicyEntry>);

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

/// How host claims are settled for one update (see [`crate::core::hosts`]).
#[derive(Debug, Clone, Copy)]
pub struct HostRouting<'a> {
    /// The ledger as last recorded.
    pub ledger: &'a Ledger,
    pub rights: HostRights<'a>,
    pub ties: Ties,
    /// The ledger writer's clock; `None` on a replica that only reads the ledger.
    pub clock: Option<Clock>,
}

impl HostRouting<'static> {
    /// Any namespace may claim; equal claims from two namespaces go to neither. For
    /// single-policy uses and tests.
    pub fn open() -> Self {
        static EMPTY: Ledger = Ledger::new();
        HostRouting {
            ledger: &EMPTY,
            rights: HostRights::Open,
            ties: Ties::Nobody,
            clock: None,
        }
    }
}

/// Routes under one host pattern: prefixes (lowercase) sorted longest first. Empty when the
/// pattern is held by a namespace that does not claim it now: nothing routes, and the
/// request is not handed to a less specific pattern.
type Routes = Vec<(String, Route)>;

/// Persistent map: cloning is O(1), an insert copies one path of the tree.
type PMap<K, V> = imbl::HashMap<K, V>;

/// How many updates [`PolicyIndex::changed_since`] looks back over; a reader further behind
/// looks at every policy.
const HISTORY: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct PolicyIndex {
    by_name: PMap<String, PMap<String, PolicyEntry>>,
    /// Exact hosts.
    by_host: PMap<String, Arc<Routes>>,
    /// Wildcard patterns, by suffix (`*.apps.example.com` under `apps.example.com`).
    by_suffix: PMap<String, Arc<Routes>>,
    /// (host pattern, path) → the conflict there.
    conflicts: imbl::OrdMap<(String, String), Arc<RouteConflict>>,
    refused: Arc<HashMap<PolicyKey, Vec<(String, HostRefusal)>>>,
    ledger: Arc<Ledger>,
    ready: usize,
    invalid: usize,
    /// Of the ready ones, those in dry-run.
    dry_run: usize,
    /// JWKS URL → how many enforceable policies use it.
    jwks: PMap<Url, usize>,
    /// Which update built this index (the first is 1).
    revision: u64,
    /// The recent revisions of this index's updater, each with the policies it changed what
    /// the index says about (entry, conflicts, refused hosts); the last [`HISTORY`] kept.
    history: imbl::OrdMap<u64, Arc<[PolicyKey]>>,
    /// The earliest revision [`PolicyIndex::changed_since`] can answer for: every later one
    /// is in `history`.
    history_floor: u64,
}

impl PolicyIndex {
    /// An index where any namespace may claim any host, every claim equally old: a host
    /// claimed from two namespaces is routed to neither. For single-policy uses and tests.
    pub fn build(entries: impl IntoIterator<Item = (PolicyKey, PolicyEntry)>) -> Self {
        Self::build_with(entries, |_| 0, HostRouting::open())
    }

    /// Builds the index in one go; `seniority(policy)` says how old a policy's claims are
    /// (older claims win hosts nobody holds), `routing` who may claim what and who holds
    /// what.
    pub fn build_with(
        entries: impl IntoIterator<Item = (PolicyKey, PolicyEntry)>,
        seniority: impl Fn(&PolicyKey) -> i64,
        routing: HostRouting,
    ) -> Self {
        IndexUpdater::default().apply(
            entries.into_iter().map(|(k, e)| (k, Some(e))),
            seniority,
            routing,
            true,
        )
    }

    /// Who holds which host pattern after this update.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// [`PolicyIndex::ledger`], shared rather than copied.
    pub fn shared_ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    pub fn len(&self) -> usize {
        self.ready + self.invalid
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enforceable policies.
    pub fn ready(&self) -> usize {
        self.ready
    }

    /// Enforceable policies in dry-run (evaluated, not enforcing).
    pub fn dry_run(&self) -> usize {
        self.dry_run
    }

    /// Policies refused by validation.
    pub fn invalid(&self) -> usize {
        self.invalid
    }

    /// For `/auth/{namespace}/{name}`.
    pub fn by_name(&self, namespace: &str, name: &str) -> Result<&Arc<CompiledPolicy>, Reason> {
        match self.by_name.get(namespace).and_then(|m| m.get(name)) {
            Some(PolicyEntry::Ready(p)) => Ok(p),
            Some(PolicyEntry::Invalid { .. }) => Err(Reason::PolicyInvalid),
            None => Err(Reason::PolicyUnknown),
        }
    }

    /// For the bare `/auth`: the most specific held host pattern (the host, then wildcards
    /// from the longest suffix), then the longest path prefix under it (whole segments, ASCII
    /// case ignored). A pattern that matches but routes no prefix is a miss, never a
    /// fall-through to a wider pattern another policy holds.
    pub fn by_route(&self, host: &str, path: &str) -> Result<&Arc<CompiledPolicy>, Reason> {
        self.route(host, path, false)
    }

    /// [`PolicyIndex::by_name`] as a [`Selected`].
    pub fn select_name(&self, namespace: &str, name: &str) -> Selected {
        Selected::of(self.by_name(namespace, name), || Err(Reason::PolicyUnknown))
    }

    /// [`PolicyIndex::by_route`] as a [`Selected`]: when it routes to a dry-run policy, the
    /// answer is the route as if that policy did not exist (its shorter prefixes; with no
    /// enforcing route left on its pattern, the next wider pattern), so a dry-run policy
    /// never hides another policy's denial.
    pub fn select_route(&self, host: &str, path: &str) -> Selected {
        Selected::of(self.by_route(host, path), || self.route(host, path, true))
    }

    /// With `enforcing_only`, dry-run policies' routes are passed over, and a pattern with
    /// nothing else is treated as absent. An empty pattern (held, not claimed now) still ends
    /// the search.
    fn route(
        &self,
        host: &str,
        path: &str,
        enforcing_only: bool,
    ) -> Result<&Arc<CompiledPolicy>, Reason> {
        let present = |routes: &&Arc<Routes>| {
            !enforcing_only
                || routes.is_empty()
                || routes
                    .iter()
                    .any(|(_, r)| !matches!(r, Route::Policy(p) if p.dry_run))
        };
        let routes = self.by_host.get(host).filter(present).or_else(|| {
            if self.by_suffix.is_empty() {
                return None;
            }
            wildcard_suffixes(host).find_map(|suffix| self.by_suffix.get(suffix).filter(present))
        });
        for (prefix, route) in routes.ok_or(Reason::PolicyUnknown)?.iter() {
            if segment_prefix(prefix, path) {
                return match route {
                    Route::Policy(p) if enforcing_only && p.dry_run => continue,
                    Route::Policy(p) => Ok(p),
                    Route::Conflict => Err(Reason::PolicyInvalid),
                };
            }
        }
        Err(Reason::PolicyUnknown)
    }

    pub fn entry(&self, key: &PolicyKey) -> Option<&PolicyEntry> {
        self.by_name.get(&key.namespace)?.get(&key.name)
    }

    pub fn entries(&self) -> impl Iterator<Item = (PolicyKey, &PolicyEntry)> {
        self.by_name.iter().flat_map(|(ns, m)| {
            m.iter()
                .map(move |(name, e)| (PolicyKey::new(ns.clone(), name.clone()), e))
        })
    }

    /// Every route conflict, by host pattern and path.
    pub fn conflicts(&self) -> impl Iterator<Item = &RouteConflict> {
        self.conflicts.values().map(AsRef::as_ref)
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
        self.jwks.keys().cloned().collect()
    }

    /// Which update built this index.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The policies whose entry, conflicts or refused hosts may differ from what the index
    /// of `revision` said; `None` when `revision` is not an earlier index of this one's
    /// updater (then any may).
    pub fn changed_since(&self, revision: u64) -> Option<Vec<PolicyKey>> {
        if revision < self.history_floor || revision > self.revision {
            return None;
        }
        let mut moved: Vec<PolicyKey> = self
            .history
            .range(revision + 1..)
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect();
        moved.sort();
        moved.dedup();
        Some(moved)
    }
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
    use crate::api::{AccessPolicySpec, IssuerSpec};
    use crate::core::policy::compile;

    fn policy(name: &str, hosts: &[&str], paths: &[&str]) -> (PolicyKey, PolicyEntry) {
        in_ns("ns", name, hosts, paths)
    }

    fn in_ns(ns: &str, name: &str, hosts: &[&str], paths: &[&str]) -> (PolicyKey, PolicyEntry) {
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
            PolicyEntry::Ready(Arc::new(compile(key, None, &spec).unwrap())),
        )
    }

    /// `policy` in dry-run.
    fn dry(ns: &str, name: &str, hosts: &[&str], paths: &[&str]) -> (PolicyKey, PolicyEntry) {
        let (key, entry) = in_ns(ns, name, hosts, paths);
        let PolicyEntry::Ready(p) = entry else {
            unreachable!()
        };
        let mut p = (*p).clone();
        p.dry_run = true;
        (key, PolicyEntry::Ready(Arc::new(p)))
    }

    /// (the answering policy or its reason, the dry-run policy).
    fn selected(s: Selected) -> (Result<String, Reason>, Option<String>) {
        (
            s.enforcing.map(|p| p.key.to_string()),
            s.dry_run.map(|p| p.key.to_string()),
        )
    }

    #[test]
    fn a_dry_run_policy_is_selected_beside_the_route_as_if_it_did_not_exist() {
        let idx = PolicyIndex::build([
            policy("root", &["app.example.com"], &[]),
            dry("ns", "admin", &["app.example.com"], &["/admin"]),
            dry("ns", "alone", &["new.example.com"], &[]),
            in_ns("platform", "wild", &["*.apps.example.com"], &[]),
            dry("platform", "one", &["one.apps.example.com"], &[]),
            dry("ns", "both", &["both.example.com"], &[]),
            policy("enforced", &["both.example.com"], &["/api"]),
        ]);
        assert_eq!(idx.dry_run(), 4);
        let route = |host: &str, path: &str| selected(idx.select_route(host, path));
        // Under an enforcing prefix: that policy answers, the dry-run one rides along.
        assert_eq!(
            route("app.example.com", "/admin/x"),
            (Ok("ns/root".into()), Some("ns/admin".into()))
        );
        assert_eq!(route("app.example.com", "/"), (Ok("ns/root".into()), None));
        // Alone on its host: nothing enforces, the request passes.
        assert_eq!(
            route("new.example.com", "/"),
            (Err(Reason::PolicyUnknown), Some("ns/alone".into()))
        );
        // Its exact host under a wildcard: the wildcard still answers.
        assert_eq!(
            route("one.apps.example.com", "/"),
            (Ok("platform/wild".into()), Some("platform/one".into()))
        );
        // Enforcing routes left on the host but none for the path: a miss, as without it.
        assert_eq!(
            route("both.example.com", "/other"),
            (Err(Reason::PolicyUnknown), Some("ns/both".into()))
        );
        assert_eq!(
            route("both.example.com", "/api/x"),
            (Ok("ns/enforced".into()), None)
        );
        assert_eq!(
            selected(idx.select_name("ns", "alone")),
            (Err(Reason::PolicyUnknown), Some("ns/alone".into()))
        );
        assert_eq!(
            selected(idx.select_name("ns", "root")),
            (Ok("ns/root".into()), None)
        );
    }

    #[test]
    fn a_dry_run_policy_on_an_enforcing_route_is_still_a_conflict() {
        let idx = PolicyIndex::build([
            policy("live", &["app.example.com"], &["/x"]),
            dry("ns", "trial", &["app.example.com"], &["/x"]),
        ]);
        assert_eq!(
            selected(idx.select_route("app.example.com", "/x")),
            (Err(Reason::PolicyInvalid), None)
        );
    }

    #[test]
    fn lookup_by_name() {
        let idx = PolicyIndex::build([
            policy("a", &[], &[]),
            (
                PolicyKey::new("ns", "bad"),
                PolicyEntry::Invalid {
                    message: "x".into(),
                    generation: None,
                },
            ),
        ]);
        assert_eq!(idx.by_name("ns", "a").unwrap().key.name, "a");
        let mut listed: Vec<String> = idx.entries().map(|(k, _)| k.to_string()).collect();
        listed.sort();
        assert_eq!(listed, ["ns/a", "ns/bad"]);
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
        assert_eq!(idx.conflicts().count(), 1);
        assert_eq!(
            idx.conflicts().next().unwrap().policies,
            vec![PolicyKey::new("ns", "one"), PolicyKey::new("ns", "two")]
        );
    }

    #[test]
    fn jwks_uris_are_deduplicated() {
        let idx = PolicyIndex::build([policy("a", &[], &[]), policy("b", &[], &[])]);
        assert_eq!(idx.jwks_uris().len(), 1);
    }

    #[test]
    fn an_index_counts_its_policies() {
        let idx = PolicyIndex::build([policy("a", &[], &[]), policy("b", &[], &[])]);
        assert_eq!(
            (idx.len(), idx.ready(), idx.invalid(), idx.is_empty()),
            (2, 2, 0, false)
        );
        let refused = (
            PolicyKey::new("ns", "bad"),
            PolicyEntry::Invalid {
                message: "bad".into(),
                generation: Some(1),
            },
        );
        let idx = PolicyIndex::build([policy("a", &[], &[]), refused]);
        assert_eq!((idx.len(), idx.ready(), idx.invalid()), (2, 1, 1));
        assert!(PolicyIndex::build([]).is_empty());
    }

    /// Seniority from a table of (namespace, creation second).
    fn created(table: &'static [(&'static str, i64)]) -> impl Fn(&PolicyKey) -> i64 {
        move |k| table.iter().find(|(ns, _)| *ns == k.namespace).unwrap().1
    }

    /// The cluster's settlement for a fresh ledger: anyone may claim, ties by name.
    fn cluster() -> HostRouting<'static> {
        HostRouting {
            ties: Ties::ToSmallerName,
            ..HostRouting::open()
        }
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
            cluster(),
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
            idx.conflicts().next().is_none(),
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
        // Every refusal, for the warnings a new index logs.
        let mut refusals: Vec<(String, usize)> = idx
            .refusals()
            .map(|(k, hosts)| (k.to_string(), hosts.len()))
            .collect();
        refusals.sort();
        assert_eq!(
            refusals,
            [("tenant/grab".to_owned(), 1), ("tenant/same".to_owned(), 1)]
        );
        // The tenant's policies are still usable by name: only host routing is refused.
        assert!(idx.by_name("tenant", "grab").is_ok());

        // Older tenant: the tenant owns the host, the victim's claim is refused.
        let idx = PolicyIndex::build_with(
            entries(),
            created(&[("victim", 300), ("tenant", 200)]),
            cluster(),
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
            |_| 5,
            cluster(),
        );
        assert_eq!(routed_to(&idx, "h.example", "/").unwrap(), "a/p");
    }

    #[test]
    fn host_claims_first_seen_together_are_routed_to_nobody() {
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
            |k| if k.namespace == "a" { 1 } else { 2 },
            HostRouting::open(),
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
            cluster(),
        );
        assert_eq!(
            routed_to(&idx, "h.example", "/x"),
            Err(Reason::PolicyInvalid)
        );
        assert_eq!(
            idx.conflicts().next().unwrap().policies,
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
        let rules = NamespaceHosts::parse(&["ops=*.example.com"]).unwrap();
        let idx = PolicyIndex::build_with(
            [
                in_ns("old", "p", &["admin.example.com"], &[]),
                in_ns("ops", "p", &["admin.example.com"], &[]),
            ],
            created(&[("old", 1), ("ops", 9)]),
            HostRouting {
                rights: HostRights::Rules(&rules),
                ..cluster()
            },
        );
        assert_eq!(routed_to(&idx, "admin.example.com", "/").unwrap(), "ops/p");
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("old", "p")),
            &[("admin.example.com".to_owned(), HostRefusal::NotAllowed)]
        );
    }

    #[test]
    fn the_most_specific_held_pattern_routes_without_falling_through() {
        let idx = PolicyIndex::build_with(
            [
                in_ns("apps", "all", &["*.apps.example.com"], &[]),
                in_ns("apps", "api", &["*.apps.example.com"], &["/api"]),
                in_ns("team", "one", &["one.apps.example.com"], &["/only"]),
                in_ns("deep", "x", &["*.x.apps.example.com"], &[]),
            ],
            created(&[("team", 1), ("apps", 2), ("deep", 3)]),
            cluster(),
        );
        assert_eq!(
            routed_to(&idx, "a.apps.example.com", "/").unwrap(),
            "apps/all"
        );
        assert_eq!(
            routed_to(&idx, "a.b.apps.example.com", "/api/v").unwrap(),
            "apps/api"
        );
        assert_eq!(
            routed_to(&idx, "one.apps.example.com", "/only/x").unwrap(),
            "team/one"
        );
        // The exact host is held: its unrouted paths do not fall to the wildcard.
        assert_eq!(
            routed_to(&idx, "one.apps.example.com", "/"),
            Err(Reason::PolicyUnknown)
        );
        assert_eq!(
            routed_to(&idx, "apps.example.com", "/"),
            Err(Reason::PolicyUnknown)
        );
        // A newer foreign wildcard under a held one is refused.
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("deep", "x")),
            &[(
                "*.x.apps.example.com".to_owned(),
                HostRefusal::OwnedElsewhere
            )]
        );
        assert_eq!(
            routed_to(&idx, "y.x.apps.example.com", "/").unwrap(),
            "apps/all"
        );
    }

    /// A tenant holding `*.example.com` (it serves it) must not decide for a host another
    /// namespace serves itself but forgot to claim: nginx sends that host to the other
    /// namespace's backend.
    #[test]
    fn a_wildcard_does_not_decide_for_a_host_another_namespace_serves() {
        let mut served = crate::core::hosts::ServedHosts::default();
        served.add_ingress_host("tenant", "*.example.com");
        served.add_ingress_host("victim", "app.example.com");
        let idx = PolicyIndex::build_with(
            [in_ns("tenant", "wild", &["*.example.com"], &[])],
            |_| 0,
            HostRouting {
                rights: HostRights::Served {
                    served: &served,
                    rules: None,
                },
                ..cluster()
            },
        );
        assert_eq!(
            routed_to(&idx, "other.example.com", "/").unwrap(),
            "tenant/wild"
        );
        assert_eq!(
            routed_to(&idx, "app.example.com", "/"),
            Err(Reason::PolicyUnknown)
        );
    }

    #[test]
    fn an_invalid_spell_is_an_absence_not_a_handover() {
        let (owner, tenant) = (
            in_ns("owner", "p", &["h.example.com"], &[]),
            in_ns("tenant", "p", &["h.example.com"], &[]),
        );
        let clock = |now| Some(Clock { now, grace: 60 });
        let first = PolicyIndex::build_with(
            [owner.clone(), tenant.clone()],
            created(&[("owner", 1), ("tenant", 2)]),
            HostRouting {
                clock: clock(10),
                ..cluster()
            },
        );
        assert_eq!(routed_to(&first, "h.example.com", "/").unwrap(), "owner/p");
        let invalid = (
            owner.0.clone(),
            PolicyEntry::Invalid {
                message: "bad".into(),
                generation: Some(2),
            },
        );
        let during = PolicyIndex::build_with(
            [invalid, tenant.clone()],
            created(&[("owner", 1), ("tenant", 2)]),
            HostRouting {
                ledger: first.ledger(),
                clock: clock(20),
                ..cluster()
            },
        );
        assert_eq!(
            routed_to(&during, "h.example.com", "/"),
            Err(Reason::PolicyUnknown)
        );
        let after = PolicyIndex::build_with(
            [owner, tenant],
            created(&[("owner", 1), ("tenant", 2)]),
            HostRouting {
                ledger: during.ledger(),
                clock: clock(30),
                ..cluster()
            },
        );
        assert_eq!(routed_to(&after, "h.example.com", "/").unwrap(), "owner/p");
    }

    #[test]
    fn a_held_host_whose_holder_is_absent_routes_nowhere() {
        let mut ledger = Ledger::new();
        ledger.insert(
            "h.example.com".into(),
            crate::core::hosts::Holding {
                namespace: "owner".into(),
                since: 1,
                absent_since: None,
            },
        );
        let idx = PolicyIndex::build_with(
            [
                in_ns("apps", "all", &["*.example.com"], &[]),
                in_ns("tenant", "grab", &["h.example.com"], &[]),
            ],
            |_| 0,
            HostRouting {
                ledger: &ledger,
                ..cluster()
            },
        );
        assert_eq!(
            routed_to(&idx, "h.example.com", "/"),
            Err(Reason::PolicyUnknown)
        );
        assert_eq!(routed_to(&idx, "z.example.com", "/").unwrap(), "apps/all");
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("tenant", "grab")).len(),
            1
        );
    }
}
