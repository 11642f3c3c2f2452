//! Keeping the index in step with changes: a change recompiles nothing and rebuilds only the
//! host patterns it touches. Host claims are settled afresh ([`resolve`], over the claims
//! alone) only when the set of claims or the routing inputs moved; an edit that keeps a
//! policy's hosts (its rules, audiences, headers) touches its own routes and nothing else.
//!
//! Applying changes one by one gives the same index as applying them all at once (the tests
//! below check it on random change sequences): every replica routes alike whatever batches
//! its watch delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Change, HISTORY, HostRouting, PolicyEntry, PolicyIndex, Route, RouteConflict, Routes};
use crate::core::hosts::{HostClaim, HostRights, Ledger, carved_out, resolve, wildcard_suffix};
use crate::core::policy::{CompiledPolicy, PolicyKey};

/// Revisions are unique in the process, so an index of one updater never passes for a
/// successor of another's.
static REVISIONS: AtomicU64 = AtomicU64::new(1);

/// One policy's host claims as host resolution reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyHostClaims {
    seniority: i64,
    /// Sorted, deduplicated host patterns.
    patterns: Vec<String>,
}

/// Changes recorded but not yet routed.
#[derive(Debug, Default)]
struct Staged {
    revision: Option<u64>,
    /// Host patterns whose routes may have moved.
    dirty: BTreeSet<String>,
    /// The claims of each policy whose claims changed, as they were before the stage.
    host_claims_before: HashMap<PolicyKey, Option<PolicyHostClaims>>,
    /// Policies whose entry, conflicts or refused hosts changed.
    touched: BTreeSet<PolicyKey>,
}

/// Keeps a [`PolicyIndex`] and what updating it needs: who claims each host pattern.
#[derive(Debug, Default)]
pub struct IndexUpdater {
    index: PolicyIndex,
    staged: Staged,
    host_claims: HashMap<PolicyKey, PolicyHostClaims>,
    /// Host pattern → the enforceable policies claiming it.
    claimants: HashMap<String, BTreeSet<PolicyKey>>,
    /// Patterns served under another namespace's wildcard (see [`carved_out`]).
    carved: HashSet<String>,
}

impl IndexUpdater {
    /// The index as last updated.
    pub fn index(&self) -> &PolicyIndex {
        &self.index
    }

    /// Applies `changes` (a policy's new entry, `None` when it is gone) and returns the new
    /// index: [`IndexUpdater::stage`], then [`IndexUpdater::settle`].
    pub fn apply(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        seniority: impl Fn(&PolicyKey) -> i64,
        routing: HostRouting,
        resettle: bool,
    ) -> PolicyIndex {
        self.stage(changes, seniority);
        self.settle(routing, resettle)
    }

    /// Records `changes` and the host claims they make (`seniority(policy)`: how old its
    /// claims are); nothing is routed until [`IndexUpdater::settle`].
    pub fn stage(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        seniority: impl Fn(&PolicyKey) -> i64,
    ) {
        self.next_revision();
        for (key, entry) in changes {
            let old = self.set_entry(&key, entry.clone());
            for policy in [&old, &entry].into_iter().flatten().filter_map(ready) {
                self.staged
                    .dirty
                    .extend(policy.routes.iter().map(|(host, _)| host.clone()));
            }
            let host_claims = entry
                .as_ref()
                .and_then(|e| host_claims_of(e, seniority(&key)));
            if self.host_claims.get(&key) != host_claims.as_ref() {
                // What it claimed before this stage: a removal and a re-adding in one batch
                // (a file rewritten) moves nothing.
                if !self.staged.host_claims_before.contains_key(&key) {
                    let before = self.host_claims.get(&key).cloned();
                    self.staged.host_claims_before.insert(key.clone(), before);
                }
                self.set_host_claims(&key, host_claims);
            }
            self.staged.touched.insert(key);
        }
    }

    /// Routes what was staged and returns the new index. `resettle`: the routing inputs
    /// (ledger, rights, clock) may differ from the last call's, so host claims are settled
    /// afresh even if no claim changed.
    pub fn settle(&mut self, routing: HostRouting, resettle: bool) -> PolicyIndex {
        let revision = self.next_revision();
        let mut dirty = std::mem::take(&mut self.staged.dirty);
        let host_claims_before = std::mem::take(&mut self.staged.host_claims_before);
        let host_claims_moved = host_claims_before
            .iter()
            .any(|(key, before)| self.host_claims.get(key) != before.as_ref());
        if host_claims_moved || resettle || self.index.revision == 0 {
            self.resettle(&routing, &mut dirty);
        }
        for pattern in dirty {
            self.route_pattern(pattern);
        }
        let Staged { touched, .. } = std::mem::take(&mut self.staged);
        self.record(revision, touched);
        self.index.clone()
    }

    /// Ends `revision`: what it touched joins the history, which keeps the last [`HISTORY`].
    fn record(&mut self, revision: u64, touched: BTreeSet<PolicyKey>) {
        let index = &mut self.index;
        index
            .history
            .insert(revision, touched.into_iter().collect());
        while index.history.len() > HISTORY {
            if let Some(&(oldest, _)) = index.history.get_min() {
                index.history.remove(&oldest);
                index.history_floor = oldest;
            }
        }
        index.revision = revision;
    }

    /// The namespaces with an enforceable policy claiming hosts, as staged.
    pub fn namespaces_claiming_hosts(&self) -> impl Iterator<Item = &str> {
        self.host_claims.keys().map(|k| k.namespace.as_str())
    }

    /// The revision the next index will carry (one per stage and settle pair).
    fn next_revision(&mut self) -> u64 {
        *self.staged.revision.get_or_insert_with(|| {
            let revision = REVISIONS.fetch_add(1, Ordering::Relaxed);
            if self.index.history_floor == 0 {
                self.index.history_floor = revision;
            }
            revision
        })
    }

    /// Puts `entry` in the by-name map and the counts; returns what it replaced.
    fn set_entry(&mut self, key: &PolicyKey, entry: Option<PolicyEntry>) -> Option<PolicyEntry> {
        let index = &mut self.index;
        let names = index.by_name.entry(key.namespace.clone()).or_default();
        let old = match &entry {
            Some(e) => names.insert(key.name.clone(), e.clone()),
            None => names.remove(&key.name),
        };
        if names.is_empty() {
            index.by_name.remove(&key.namespace);
        }
        for (e, up) in [(&old, false), (&entry, true)] {
            let Some(e) = e else { continue };
            let count = match e {
                PolicyEntry::Ready(p) => {
                    let users = index.jwks.entry(p.jwks_uri.clone()).or_default();
                    *users = if up { *users + 1 } else { *users - 1 };
                    if *users == 0 {
                        index.jwks.remove(&p.jwks_uri);
                    }
                    if p.dry_run {
                        index.dry_run = if up {
                            index.dry_run + 1
                        } else {
                            index.dry_run - 1
                        };
                    }
                    &mut index.ready
                }
                PolicyEntry::Invalid { .. } => &mut index.invalid,
            };
            *count = if up { *count + 1 } else { *count - 1 };
        }
        old
    }

    fn set_host_claims(&mut self, key: &PolicyKey, host_claims: Option<PolicyHostClaims>) {
        if let Some(old) = self.host_claims.remove(key) {
            for pattern in old.patterns {
                if let Some(keys) = self.claimants.get_mut(&pattern) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.claimants.remove(&pattern);
                    }
                }
            }
        }
        if let Some(new) = host_claims {
            for pattern in &new.patterns {
                self.claimants
                    .entry(pattern.clone())
                    .or_default()
                    .insert(key.clone());
            }
            self.host_claims.insert(key.clone(), new);
        }
    }

    /// Settles every claim afresh; the patterns whose holder or carve-out moved join `dirty`.
    fn resettle(&mut self, routing: &HostRouting, dirty: &mut BTreeSet<String>) {
        let host_claims: Vec<HostClaim> = self
            .host_claims
            .iter()
            .flat_map(|(key, c)| {
                c.patterns.iter().map(move |pattern| HostClaim {
                    key,
                    pattern,
                    seniority: c.seniority,
                })
            })
            .collect();
        let resolution = resolve(
            routing.ledger,
            &host_claims,
            &routing.rights,
            routing.ties,
            routing.clock,
        );
        moved_holdings(&self.index.ledger, &resolution.ledger, dirty);
        // Policies whose refusals moved: their status says which hosts are refused.
        let (before, after) = (&self.index.refused, &resolution.refused);
        for key in before.keys().chain(after.keys()) {
            if before.get(key) != after.get(key) {
                self.staged.touched.insert(key.clone());
            }
        }
        let carved: HashSet<String> = match routing.rights {
            HostRights::Served { served, .. } => carved_out(served, &resolution.ledger).collect(),
            _ => HashSet::new(),
        };
        dirty.extend(self.carved.symmetric_difference(&carved).cloned());
        self.carved = carved;
        self.index.ledger = Arc::new(resolution.ledger);
        self.index.refused = Arc::new(resolution.refused);
    }

    /// Recomputes the routes under `pattern` from its claimants and holder.
    fn route_pattern(&mut self, pattern: String) {
        let holding = self.index.ledger.get(&pattern);
        let exists = holding.is_some() || self.carved.contains(&pattern);
        let holder = holding
            .filter(|h| h.absent_since.is_none())
            .map(|h| h.namespace.as_str());
        // lowercase path → the holder's policies claiming it
        let mut by_path: BTreeMap<String, Vec<Arc<CompiledPolicy>>> = BTreeMap::new();
        if let (Some(holder), Some(keys)) = (holder, self.claimants.get(&pattern)) {
            for key in keys.iter().filter(|k| k.namespace == holder) {
                let Some(PolicyEntry::Ready(p)) = self.index.entry(key) else {
                    continue;
                };
                for (_, path) in p.routes.iter().filter(|(h, _)| *h == pattern) {
                    by_path
                        .entry(path.to_ascii_lowercase())
                        .or_default()
                        .push(p.clone());
                }
            }
        }
        let mut routes: Routes = Vec::with_capacity(by_path.len());
        let mut conflicts = Vec::new();
        for (path, mut policies) in by_path {
            // A policy listing `/x` and `/X` claims one route once.
            policies.sort_by(|a, b| a.key.cmp(&b.key));
            policies.dedup_by(|a, b| a.key == b.key);
            let route = if policies.len() == 1 {
                Route::Policy(policies.pop().expect("one element"))
            } else {
                conflicts.push(RouteConflict {
                    host: pattern.clone(),
                    path: path.clone(),
                    policies: policies.iter().map(|p| p.key.clone()).collect(),
                });
                Route::Conflict
            };
            routes.push((path, route));
        }
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        self.set_conflicts(&pattern, conflicts);
        let map = match wildcard_suffix(&pattern) {
            Some(suffix) => (&mut self.index.by_suffix, suffix.to_owned()),
            None => (&mut self.index.by_host, pattern),
        };
        if exists {
            map.0.insert(map.1, Arc::new(routes));
        } else {
            map.0.remove(&map.1);
        }
    }

    /// Replaces the conflicts under `pattern`; the policies named before or after are touched
    /// (their status tells of the conflict).
    fn set_conflicts(&mut self, pattern: &str, now: Vec<RouteConflict>) {
        let conflicts = &mut self.index.conflicts;
        let before: Vec<(String, String)> = conflicts
            .range((pattern.to_owned(), String::new())..)
            .take_while(|((host, _), _)| host == pattern)
            .map(|(k, _)| k.clone())
            .collect();
        let mut named: Vec<PolicyKey> = Vec::new();
        for key in before {
            if let Some(old) = conflicts.remove(&key) {
                named.extend(old.policies.iter().cloned());
            }
        }
        for conflict in now {
            named.extend(conflict.policies.iter().cloned());
            conflicts.insert(
                (conflict.host.clone(), conflict.path.clone()),
                Arc::new(conflict),
            );
        }
        self.staged.touched.extend(named);
    }
}

fn ready(entry: &PolicyEntry) -> Option<&Arc<CompiledPolicy>> {
    match entry {
        PolicyEntry::Ready(p) => Some(p),
        PolicyEntry::Invalid { .. } => None,
    }
}

/// An enforceable policy's host claims; an invalid one claims nothing.
fn host_claims_of(entry: &PolicyEntry, seniority: i64) -> Option<PolicyHostClaims> {
    let policy = ready(entry)?;
    let mut patterns: Vec<String> = policy.routes.iter().map(|(h, _)| h.clone()).collect();
    patterns.sort_unstable();
    patterns.dedup();
    (!patterns.is_empty()).then_some(PolicyHostClaims {
        seniority,
        patterns,
    })
}

/// Adds to `dirty` the patterns held differently in `after` than in `before`.
fn moved_holdings(before: &Ledger, after: &Ledger, dirty: &mut BTreeSet<String>) {
    for (pattern, holding) in before {
        if after.get(pattern) != Some(holding) {
            dirty.insert(pattern.clone());
        }
    }
    for pattern in after.keys() {
        if !before.contains_key(pattern) {
            dirty.insert(pattern.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::api::{AccessPolicySpec, IssuerSpec, PolicyMode};
    use crate::core::hosts::{ServedHosts, Ties};
    use crate::core::policy::compile;
    use crate::core::reason::Reason;

    const NAMESPACES: [&str; 3] = ["a", "b", "c"];
    const NAMES: [&str; 2] = ["p", "q"];
    const PATTERNS: [&str; 5] = [
        "h.example.com",
        "x.example.com",
        "*.example.com",
        "*.x.example.com",
        "y.x.example.com",
    ];
    const PATHS: [&str; 4] = ["/", "/x", "/X", "/y"];
    const PROBE_HOSTS: [&str; 6] = [
        "h.example.com",
        "x.example.com",
        "z.example.com",
        "y.x.example.com",
        "w.x.example.com",
        "example.com",
    ];
    const PROBE_PATHS: [&str; 3] = ["/", "/x/1", "/y"];

    /// One policy's state in a generated history: `None` when absent.
    #[derive(Debug, Clone)]
    enum Spec {
        Ready {
            hosts: Vec<usize>,
            paths: Vec<usize>,
            audience: u8,
            dry_run: bool,
        },
        Invalid,
    }

    fn entry(key: &PolicyKey, spec: &Spec, generation: i64) -> PolicyEntry {
        match spec {
            Spec::Invalid => PolicyEntry::Invalid {
                message: "bad".into(),
                generation: Some(generation),
            },
            Spec::Ready {
                hosts,
                paths,
                audience,
                dry_run,
            } => {
                let spec = AccessPolicySpec {
                    issuer: IssuerSpec {
                        team_domain: Some("t.cloudflareaccess.com".into()),
                        ..Default::default()
                    },
                    audiences: vec![format!("{audience:064}")],
                    hosts: hosts.iter().map(|h| PATTERNS[*h].to_owned()).collect(),
                    paths: paths.iter().map(|p| PATHS[*p].to_owned()).collect(),
                    mode: dry_run.then_some(PolicyMode::DryRun),
                    ..Default::default()
                };
                match compile(key.clone(), Some(generation), &spec) {
                    Ok(p) => PolicyEntry::Ready(Arc::new(p)),
                    // e.g. paths without hosts
                    Err(e) => PolicyEntry::Invalid {
                        message: e.to_string(),
                        generation: Some(generation),
                    },
                }
            }
        }
    }

    fn spec() -> impl Strategy<Value = Spec> {
        prop_oneof![
            1 => Just(Spec::Invalid),
            6 => (
                prop::collection::vec(0..PATTERNS.len(), 0..3),
                prop::collection::vec(0..PATHS.len(), 0..3),
                0u8..3,
                prop::bool::weighted(0.25),
            )
                .prop_map(|(hosts, paths, audience, dry_run)| Spec::Ready { hosts, paths, audience, dry_run }),
        ]
    }

    /// A change: policy (namespace, name), its new spec or removal, its creation second (a
    /// re-created policy is younger), and whether a batch ends after it.
    fn history() -> impl Strategy<Value = Vec<(usize, usize, Option<Spec>, i64, bool)>> {
        prop::collection::vec(
            (
                0..NAMESPACES.len(),
                0..NAMES.len(),
                prop::option::weighted(0.8, spec()),
                0i64..3,
                any::<bool>(),
            ),
            1..40,
        )
    }

    /// Everything the index answers, in a comparable form.
    fn answers(idx: &PolicyIndex) -> impl PartialEq + std::fmt::Debug {
        let mut routes = Vec::new();
        for host in PROBE_HOSTS {
            for path in PROBE_PATHS {
                let selected = idx.select_route(host, path);
                routes.push((
                    idx.by_route(host, path).map(|p| p.key.to_string()),
                    selected.enforcing.map(|p| p.key.to_string()),
                    selected.dry_run.map(|p| p.key.to_string()),
                ));
            }
        }
        let mut names = Vec::new();
        let mut refused = Vec::new();
        for ns in NAMESPACES {
            for name in NAMES {
                let key = PolicyKey::new(ns, name);
                names.push(idx.by_name(ns, name).map(|p| p.generation));
                refused.push(idx.refused_hosts(&key).to_vec());
            }
        }
        let conflicts: Vec<RouteConflict> = idx.conflicts().cloned().collect();
        let mut jwks: Vec<String> = idx.jwks_uris().iter().map(ToString::to_string).collect();
        jwks.sort();
        (
            routes,
            names,
            refused,
            conflicts,
            idx.ledger().clone(),
            (idx.len(), idx.ready(), idx.invalid(), idx.dry_run()),
            jwks,
        )
    }

    /// What the index says about one policy (what its status shows).
    fn about(idx: &PolicyIndex, key: &PolicyKey) -> impl PartialEq + use<> {
        let entry = idx.entry(key).map(|e| match e {
            PolicyEntry::Ready(p) => (p.generation, Some(p.routes.clone())),
            PolicyEntry::Invalid { generation, .. } => (*generation, None),
        });
        let conflicts: Vec<RouteConflict> = idx
            .conflicts()
            .filter(|c| c.policies.contains(key))
            .cloned()
            .collect();
        (entry, conflicts, idx.refused_hosts(key).to_vec())
    }

    fn check_history(
        history: Vec<(usize, usize, Option<Spec>, i64, bool)>,
        routing: HostRouting,
    ) -> Result<(), TestCaseError> {
        let mut live: BTreeMap<PolicyKey, (PolicyEntry, i64)> = BTreeMap::new();
        let mut updater = IndexUpdater::default();
        let mut batch: Vec<Change> = Vec::new();
        let mut seen: Option<PolicyIndex> = None;
        for (generation, (ns, name, spec, created, end)) in history.into_iter().enumerate() {
            let key = PolicyKey::new(NAMESPACES[ns], NAMES[name]);
            let entry = spec.map(|s| entry(&key, &s, generation as i64));
            match &entry {
                Some(e) => live.insert(key.clone(), (e.clone(), created)),
                None => live.remove(&key),
            };
            batch.push((key, entry));
            if !end {
                continue;
            }
            let ages = live.clone();
            let seniority = move |k: &PolicyKey| ages.get(k).map_or(i64::MAX, |(_, c)| *c);
            let stepped = updater.apply(batch.drain(..), &seniority, routing, false);
            let whole = PolicyIndex::build_with(
                live.iter().map(|(k, (e, _))| (k.clone(), e.clone())),
                &seniority,
                routing,
            );
            prop_assert_eq!(answers(&stepped), answers(&whole));
            // Every policy whose entry, conflicts or refusals differ from the last index a
            // reader saw is reported as changed.
            if let Some(before) = &seen {
                let moved = stepped.changed_since(before.revision()).unwrap();
                for ns in NAMESPACES {
                    for name in NAMES {
                        let key = PolicyKey::new(ns, name);
                        if about(before, &key) != about(&stepped, &key) {
                            prop_assert!(moved.contains(&key), "{key} moved unreported");
                        }
                    }
                }
            }
            seen = Some(stepped);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random histories of creates, edits, invalid specs and deletions, applied in random
        /// batches, route exactly as the same policies indexed at once: with ties to nobody
        /// (file mode) and to the smaller name (cluster).
        #[test]
        fn changes_applied_one_by_one_index_as_all_at_once(history in history()) {
            check_history(history.clone(), HostRouting::open())?;
            check_history(history, HostRouting { ties: Ties::ToSmallerName, ..HostRouting::open() })?;
        }

        /// The same, where rights come from what namespaces serve (carve-outs included) and a
        /// ledger records earlier holdings.
        #[test]
        fn changes_under_served_rights_and_a_ledger_index_as_all_at_once(history in history()) {
            let mut served = ServedHosts::default();
            served.add_ingress_host("a", "*.example.com");
            served.add_ingress_host("b", "h.example.com");
            served.add_ingress_host("b", "y.x.example.com");
            served.add_route_hostname("c", "*.x.example.com");
            served.add_ingress_host("c", "x.example.com");
            let mut ledger = Ledger::new();
            ledger.insert("x.example.com".into(), crate::core::hosts::Holding {
                namespace: "c".into(),
                since: 0,
                absent_since: None,
            });
            let routing = HostRouting {
                ledger: &ledger,
                rights: HostRights::Served { served: &served, rules: None },
                ties: Ties::ToSmallerName,
                clock: None,
            };
            check_history(history, routing)?;
        }
    }

    /// The dry-run count follows each policy in and out of dry-run, and out of the index.
    #[test]
    fn the_dry_run_count_follows_edits_and_deletions() {
        let key = PolicyKey::new("a", "p");
        let spec = |dry_run| Spec::Ready {
            hosts: vec![0],
            paths: vec![],
            audience: 0,
            dry_run,
        };
        let mut updater = IndexUpdater::default();
        let mut counts = Vec::new();
        for change in [Some(spec(true)), Some(spec(false)), Some(spec(true)), None] {
            let entry = change.map(|s| entry(&key, &s, 1));
            let idx = updater.apply([(key.clone(), entry)], |_| 0, HostRouting::open(), false);
            counts.push((idx.ready(), idx.dry_run()));
        }
        assert_eq!(counts, [(1, 1), (1, 0), (1, 1), (0, 0)]);
    }

    /// An edit reports only the policy it changed, whether it kept its hosts or moved one;
    /// earlier indexes are untouched.
    #[test]
    fn an_edit_reports_what_it_touched() {
        let key = |n: &str| PolicyKey::new("a", n);
        let ready = |n: &str, hosts: Vec<usize>, audience| {
            entry(
                &key(n),
                &Spec::Ready {
                    hosts,
                    paths: vec![],
                    audience,
                    dry_run: false,
                },
                1,
            )
        };
        let mut updater = IndexUpdater::default();
        let routing = HostRouting::open();
        let first = updater.apply(
            [
                (key("p"), Some(ready("p", vec![0], 0))),
                (key("q"), Some(ready("q", vec![1], 0))),
            ],
            |_| 0,
            routing,
            false,
        );
        let edited = updater.apply(
            [(key("p"), Some(ready("p", vec![0], 1)))],
            |_| 0,
            routing,
            false,
        );
        assert_eq!(edited.changed_since(first.revision()), Some(vec![key("p")]));
        assert_eq!(edited.by_route("x.example.com", "/").unwrap().key, key("q"));
        let moved = updater.apply(
            [(key("p"), Some(ready("p", vec![2], 1)))],
            |_| 0,
            routing,
            false,
        );
        assert_eq!(moved.changed_since(edited.revision()), Some(vec![key("p")]));
        assert_eq!(moved.changed_since(0), None, "not an index of this line");
        assert_eq!(
            moved.changed_since(moved.revision()),
            Some(vec![]),
            "itself"
        );
        assert_eq!(
            moved.changed_since(moved.revision() + 1),
            None,
            "a revision this index has not seen"
        );
        assert_eq!(moved.by_route("z.example.com", "/").unwrap().key, key("p"));
        assert_eq!(
            moved.by_route("h.example.com", "/").unwrap().key,
            key("p"),
            "through the wildcard"
        );
        assert_eq!(
            moved.by_route("example.com", "/").err(),
            Some(Reason::PolicyUnknown)
        );
        // The earlier index is untouched by later updates.
        assert_eq!(first.by_route("h.example.com", "/").unwrap().key, key("p"));

        // The history keeps the last HISTORY revisions: a reader that far behind still gets
        // the list, one further behind must look at every policy. (Revisions are counted
        // across the process, so they are taken from the indexes, never computed.)
        let mut last = moved.clone();
        for i in 0..HISTORY {
            last = updater.apply(
                [(key("p"), Some(ready("p", vec![2], (i % 2) as u8)))],
                |_| 0,
                routing,
                false,
            );
        }
        assert_eq!(last.history.len(), HISTORY);
        assert_eq!(last.changed_since(moved.revision()), Some(vec![key("p")]));
        assert_eq!(last.changed_since(edited.revision()), None);
    }

    /// Two policies meeting on one route are both touched, and both again when it clears.
    #[test]
    fn a_conflict_touches_both_policies() {
        let key = |n: &str| PolicyKey::new("a", n);
        let on = |n: &str, path| {
            entry(
                &key(n),
                &Spec::Ready {
                    hosts: vec![0],
                    paths: vec![path],
                    audience: 0,
                    dry_run: false,
                },
                1,
            )
        };
        let mut updater = IndexUpdater::default();
        let routing = HostRouting::open();
        let apart = updater.apply(
            [(key("p"), Some(on("p", 1))), (key("q"), Some(on("q", 3)))],
            |_| 0,
            routing,
            false,
        );
        let met = updater.apply([(key("q"), Some(on("q", 2)))], |_| 0, routing, false);
        assert_eq!(met.conflicts().count(), 1);
        let mut moved = met.changed_since(apart.revision()).unwrap();
        moved.sort();
        assert_eq!(moved, vec![key("p"), key("q")]);
        let cleared = updater.apply([(key("p"), Some(on("p", 3)))], |_| 0, routing, false);
        assert_eq!(cleared.conflicts().count(), 0);
        let mut moved = cleared.changed_since(met.revision()).unwrap();
        moved.sort();
        assert_eq!(moved, vec![key("p"), key("q")]);
    }
}
