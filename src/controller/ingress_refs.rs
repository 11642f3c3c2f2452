//! Ingresses whose `auth-url` reaches this install and names a policy it does not serve. Every
//! request through one is refused (`503 policy_unknown`, 500 from ingress-nginx), and nothing
//! else says why: there is no policy whose status could.
//!
//! [`dangling`] finds them (pure). [`IngressRefs::run`] polls every [`EVERY`] on every replica
//! (the stores are in memory, a look is one pass) to keep the gauge; the elected one puts a
//! Warning Event on the Ingress once a finding has lasted [`SETTLE`], so an Ingress applied just
//! before its policy gets none. The note repeats only the Ingress's own annotation and does not
//! tell "no such policy" from "not watched", so it tells a tenant nothing about other
//! namespaces. See docs/operating.md, "Troubleshooting by status".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::watch;

use super::audit;
use super::install::InstallService;
use crate::core::index::PolicyIndex;
use crate::core::policy::PolicyKey;
use crate::metrics::IngressNamespaceLabels;
use crate::serve::state::AppState;
use crate::source::kube::Policies;

/// The Event reason.
pub const REASON: &str = "AuthPolicyNotFound";

/// How often the Ingresses are looked at.
pub const EVERY: Duration = Duration::from_secs(2);

/// How long a finding must last before it counts.
pub const SETTLE: Duration = Duration::from_secs(3);

/// An Ingress whose auth-url reaches this install and names a policy it does not serve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dangling {
    pub ingress_namespace: String,
    pub ingress_name: String,
    pub uid: String,
    /// The annotation as written: another value is another finding.
    pub auth_url: String,
    pub policy: PolicyKey,
}

/// Every Ingress whose auth-url reaches `install` and names a policy `index` does not hold.
/// An invalid policy is held (its status says why); so is one of any class this install
/// serves.
pub fn dangling<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    index: &PolicyIndex,
    install: &InstallService,
) -> Vec<Dangling> {
    ingresses
        .into_iter()
        .filter_map(|ing| {
            let auth_url = audit::auth_url(ing)?;
            let path = install.path_on_this_install(auth_url).ok()?;
            let (namespace, name) = audit::named_policy(path)?;
            let policy = PolicyKey::new(namespace, name);
            if index.entry(&policy).is_some() {
                return None;
            }
            Some(Dangling {
                ingress_namespace: ing.metadata.namespace.clone().unwrap_or_default(),
                ingress_name: ing.metadata.name.clone().unwrap_or_default(),
                uid: ing.metadata.uid.clone().unwrap_or_default(),
                auth_url: auth_url.to_owned(),
                policy,
            })
        })
        .collect()
}

impl Dangling {
    /// What the Ingress's owner reads in `kubectl describe ingress`.
    pub fn note(&self) -> String {
        format!(
            "nginx.ingress.kubernetes.io/auth-url names AccessPolicy {}, which this accessgate does not serve (no such policy, or its namespace is not watched): every request through this Ingress is refused (503 policy_unknown; ingress-nginx answers 500). Create the policy or correct the auth-url.",
            self.policy
        )
    }

    fn ingress_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(Ingress::api_version(&()).into_owned()),
            kind: Some(Ingress::kind(&()).into_owned()),
            namespace: Some(self.ingress_namespace.clone()),
            name: Some(self.ingress_name.clone()),
            uid: Some(self.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        }
    }
}

/// Findings per Ingress namespace.
pub fn count_by_namespace<'a>(
    findings: impl IntoIterator<Item = &'a Dangling>,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for d in findings {
        *counts.entry(d.ingress_namespace.clone()).or_insert(0) += 1;
    }
    counts
}

/// Findings with the time each was first seen, kept across looks.
#[derive(Debug, Default)]
pub struct Findings {
    first_seen: BTreeMap<Dangling, Instant>,
}

impl Findings {
    /// Takes a new look; returns the findings that have lasted [`SETTLE`].
    pub fn update(&mut self, now: Instant, found: Vec<Dangling>) -> Vec<&Dangling> {
        let found: BTreeSet<Dangling> = found.into_iter().collect();
        self.first_seen.retain(|d, _| found.contains(d));
        for d in found {
            self.first_seen.entry(d).or_insert(now);
        }
        self.first_seen
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) >= SETTLE)
            .map(|(d, _)| d)
            .collect()
    }
}

/// The task: what it reads, and where it reports.
pub struct IngressRefs {
    pub client: Client,
    pub reporter: Reporter,
    pub policies: Policies,
    pub state: Arc<AppState>,
    pub install: InstallService,
}

impl IngressRefs {
    pub fn new(
        client: Client,
        policies: Policies,
        state: Arc<AppState>,
        config: &super::RunConfig,
    ) -> Self {
        IngressRefs {
            client,
            reporter: Reporter {
                controller: "accessgate".into(),
                instance: Some(config.identity.clone()),
            },
            policies,
            state,
            install: config.install.clone(),
        }
    }

    /// Looks every [`EVERY`] until `stop`; announces on the elected replica only. `stop`
    /// ends it at once, even mid-announce: it holds a leadership receiver, and the Lease is
    /// released only when every receiver is gone.
    pub async fn run(self, leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = self.look_forever(leader) => {}
        }
    }

    async fn look_forever(&self, mut leader: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut findings = Findings::default();
        let mut announced: BTreeSet<Dangling> = BTreeSet::new();
        let mut gauged: BTreeSet<String> = BTreeSet::new();
        loop {
            tick.tick().await;
            // Before the first index every reference would look dangling.
            if !self.state.is_ready() {
                continue;
            }
            let ingresses = self.policies.ingresses();
            let found = dangling(
                ingresses.iter().map(AsRef::as_ref),
                &self.state.index(),
                &self.install,
            );
            let standing = findings.update(Instant::now(), found);
            gauged = self.set_gauge(count_by_namespace(standing.iter().copied()), &gauged);
            announced.retain(|d| standing.contains(&d));
            if !*leader.borrow_and_update() {
                // The next term announces afresh: this replica cannot know what the
                // leader in between did.
                announced.clear();
                continue;
            }
            for d in standing {
                if !announced.contains(d) && self.announce(d).await {
                    announced.insert(d.clone());
                }
            }
        }
    }

    /// Sets the gauge per namespace, drops namespaces no longer counted; returns those set.
    fn set_gauge(
        &self,
        counts: BTreeMap<String, i64>,
        previous: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let gauge = &self.state.metrics.ingress_policy_missing;
        for gone in previous.iter().filter(|ns| !counts.contains_key(*ns)) {
            gauge.remove(&IngressNamespaceLabels {
                ingress_namespace: gone.clone(),
            });
        }
        for (ns, n) in &counts {
            gauge
                .get_or_create(&IngressNamespaceLabels {
                    ingress_namespace: ns.clone(),
                })
                .set(*n);
        }
        counts.into_keys().collect()
    }

    /// One Warning Event on the Ingress; false when it could not be recorded (tried again
    /// at the next look).
    async fn announce(&self, d: &Dangling) -> bool {
        let event = Event {
            type_: EventType::Warning,
            reason: REASON.into(),
            note: Some(d.note()),
            action: "CheckAuthUrl".into(),
            secondary: None,
        };
        // A recorder of its own: a shared one would fold a later finding on the same
        // Ingress into the earlier Event's series, keeping the earlier note.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        match recorder.publish(&event, &d.ingress_ref()).await {
            Ok(()) => {
                tracing::info!(ingress = %format!("{}/{}", d.ingress_namespace, d.ingress_name), policy = %d.policy, "auth-url names a policy this install does not serve");
                true
            }
            Err(e) => {
                tracing::warn!(ingress = %format!("{}/{}", d.ingress_namespace, d.ingress_name), reason = REASON, error = %e, "event not recorded; will retry");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::cloudflare_policy;
    use crate::core::index::PolicyEntry;

    fn install() -> InstallService {
        InstallService::chart_default()
    }

    fn index(policies: &[(&str, &str)]) -> PolicyIndex {
        PolicyIndex::build(policies.iter().map(|(ns, name)| {
            let key = PolicyKey::new(*ns, *name);
            let entry = PolicyEntry::Ready(Arc::new(cloudflare_policy(key.clone(), Some(1))));
            (key, entry)
        }))
    }

    fn ingress(ns: &str, name: &str, auth_url: &str) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                "annotations": {audit::AUTH_URL: auth_url}},
        }))
        .unwrap()
    }

    fn found(ingresses: &[Ingress], index: &PolicyIndex) -> Vec<(String, String)> {
        dangling(ingresses, index, &install())
            .into_iter()
            .map(|d| (d.ingress_name, d.policy.to_string()))
            .collect()
    }

    #[test]
    fn a_named_policy_this_install_does_not_serve_is_dangling() {
        let svc = "http://accessgate.accessgate-system.svc.cluster.local";
        let all = [
            ingress("apps", "ok", &format!("{svc}/auth/apps/web")),
            ingress("apps", "typo", &format!("{svc}/auth/apps/nope")),
            ingress("apps", "forward", &format!("{svc}/forward/apps/gone")),
            ingress(
                "apps",
                "envoy",
                "http://accessgate.accessgate-system/envoy/x/y/z",
            ),
            ingress("apps", "elsewhere-ns", &format!("{svc}/auth/unwatched/web")),
        ];
        assert_eq!(
            found(&all, &index(&[("apps", "web")])),
            [
                ("typo".to_owned(), "apps/nope".to_owned()),
                ("forward".to_owned(), "apps/gone".to_owned()),
                ("envoy".to_owned(), "x/y".to_owned()),
                ("elsewhere-ns".to_owned(), "unwatched/web".to_owned()),
            ]
        );
    }

    #[test]
    fn ingresses_that_do_not_reach_this_install_or_name_no_policy_are_not_its_concern() {
        let all = [
            // Another install's Service, a misspelt one, a bare name: not this install's.
            ingress(
                "apps",
                "other",
                "http://other.ns.svc.cluster.local/auth/apps/nope",
            ),
            ingress(
                "apps",
                "misspelt",
                "http://acessgate.accessgate-system/auth/apps/nope",
            ),
            ingress("apps", "bare", "http://accessgate/auth/apps/nope"),
            // Host routing and non-policy paths name no policy.
            ingress(
                "apps",
                "routed",
                "http://accessgate.accessgate-system/auth?host=$host",
            ),
            ingress(
                "apps",
                "health",
                "http://accessgate.accessgate-system/healthz",
            ),
        ];
        assert!(found(&all, &index(&[])).is_empty());
    }

    #[test]
    fn the_note_names_only_the_reference_the_ingress_wrote() {
        let all = [ingress(
            "apps",
            "typo",
            "http://accessgate.accessgate-system/auth/apps/nope",
        )];
        let d = &dangling(&all, &index(&[("other", "secret")]), &install())[0];
        let note = d.note();
        assert!(note.contains("AccessPolicy apps/nope"), "{note}");
        assert!(
            !note.contains("other") && !note.contains("secret"),
            "{note}"
        );
        assert!(note.len() < 1000, "{}", note.len());
        let r = d.ingress_ref();
        assert_eq!(
            (r.kind.as_deref(), r.namespace.as_deref(), r.name.as_deref()),
            (Some("Ingress"), Some("apps"), Some("typo"))
        );
    }

    #[test]
    fn a_finding_counts_once_it_has_lasted_the_settle_time() {
        let all = [ingress(
            "apps",
            "typo",
            "http://accessgate.accessgate-system/auth/apps/nope",
        )];
        let look = || dangling(&all, &index(&[]), &install());
        let mut findings = Findings::default();
        let t0 = Instant::now();
        assert!(findings.update(t0, look()).is_empty());
        assert!(findings.update(t0 + SETTLE / 2, look()).is_empty());
        assert_eq!(findings.update(t0 + SETTLE, look()).len(), 1);
        // Gone (the policy was created), then back: it settles afresh.
        assert!(findings.update(t0 + SETTLE * 2, Vec::new()).is_empty());
        assert!(findings.update(t0 + SETTLE * 3, look()).is_empty());
    }

    #[test]
    fn another_annotation_value_is_another_finding() {
        let first = dangling(
            &[ingress(
                "apps",
                "i",
                "http://accessgate.accessgate-system/auth/apps/a",
            )],
            &index(&[]),
            &install(),
        );
        let second = dangling(
            &[ingress(
                "apps",
                "i",
                "http://accessgate.accessgate-system:80/auth/apps/a",
            )],
            &index(&[]),
            &install(),
        );
        assert_eq!(first[0].policy, second[0].policy);
        assert_ne!(first, second);
    }

    #[test]
    fn findings_are_counted_per_ingress_namespace() {
        let all = [
            ingress("a", "1", "http://accessgate.accessgate-system/auth/a/x"),
            ingress("a", "2", "http://accessgate.accessgate-system/auth/a/y"),
            ingress("b", "3", "http://accessgate.accessgate-system/auth/a/x"),
        ];
        let found = dangling(&all, &index(&[]), &install());
        assert_eq!(
            count_by_namespace(&found),
            BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)])
        );
    }
}
