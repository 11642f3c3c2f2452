//! `accessgate run`: the in-cluster mode. Every replica watches AccessPolicies and serves
//! auth from them; the replica holding the Lease also writes status and Events.

pub mod counters;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use serde_json::json;

use crate::core::index::NamespaceHosts;
use crate::core::policy::{AccessPolicy, AccessPolicyStatus, PolicyKey};
use crate::serve::state::AppState;
use crate::serve::{self, ServeError, Services};
use crate::source::kube::{self as kube_source, Policies};
use counters::DecisionStats;

use status::{Change, Inputs};

const FIELD_MANAGER: &str = "accessgate";

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Keys, token cache and identity client; the fetch guard is always on in cluster mode.
    pub services: Services,
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// The operator's namespace → host patterns (`--host-claims`); `None`: any namespace.
    pub host_claims: Option<Arc<NamespaceHosts>>,
    /// Base of the `authUrl` status field, e.g. `http://accessgate.accessgate-system.svc.cluster.local`.
    pub auth_base_url: String,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub identity: String,
    /// Counter-only status changes are written at most this often per policy.
    pub status_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Starts everything and returns; the tasks run until the process ends.
pub async fn start(config: RunConfig) -> Result<Arc<AppState>, RunError> {
    let client = Client::try_default().await?;
    let counters = Arc::new(DecisionStats::default());
    let state = serve::bootstrap(&config.services, Some(counters.clone()))?;
    let policies = kube_source::start(
        client.clone(),
        &config.namespaces,
        state.clone(),
        config.host_claims.clone(),
    );
    serve::listen(&state, config.listen, config.admin_listen).await?;

    let seconds = config.lease_duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_parameters(LeaseParams::new(
            &config.identity,
            seconds,
            (seconds / 3).max(1),
        ))
        .build()
        .await?;
    let (leader, _task) = manager.watch().await;
    let reporter = Reporter {
        controller: "accessgate".into(),
        instance: Some(config.identity.clone()),
    };
    let writer = StatusWriter {
        client: client.clone(),
        recorder: Recorder::new(client, reporter),
        policies,
        state: state.clone(),
        counters,
        config,
        last_write: HashMap::new(),
    };
    tokio::spawn(writer.run(leader));
    Ok(state)
}

struct StatusWriter {
    client: Client,
    recorder: Recorder,
    policies: Policies,
    state: Arc<AppState>,
    counters: Arc<DecisionStats>,
    config: RunConfig,
    last_write: HashMap<String, Instant>,
}

impl StatusWriter {
    async fn run(mut self, mut leader: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut was_leader = false;
        loop {
            tick.tick().await;
            let is_leader = *leader.borrow_and_update();
            if is_leader != was_leader {
                tracing::info!(identity = %self.config.identity, leader = is_leader, "leadership changed");
                was_leader = is_leader;
                self.last_write.clear();
            }
            if is_leader {
                self.write_all().await;
            }
            if leader.has_changed().is_err() {
                tracing::error!("leader election stopped; this replica no longer writes status");
                return;
            }
        }
    }

    async fn write_all(&mut self) {
        let index = self.state.index();
        let now = Timestamp::now();
        for obj in self.policies.objects() {
            let key = PolicyKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
            let label = key.to_string();
            let entry = index.entry(&key);
            let jwks = match entry {
                Some(crate::core::index::Entry::Ready(p)) => Some(p.jwks_uri.clone()),
                _ => None,
            };
            let inputs = Inputs {
                generation: obj.metadata.generation,
                previous: obj.status.as_ref(),
                entry,
                conflicts: index
                    .conflicts()
                    .iter()
                    .filter(|c| c.policies.contains(&key))
                    .collect(),
                refused_hosts: index.refused_hosts(&key),
                keys: jwks.as_ref().and_then(|u| self.state.keys.status(u)),
                stats: self.counters.snapshot(&label),
                stats_since: self.counters.since(),
                auth_url: format!(
                    "{}/auth/{}/{}",
                    self.config.auth_base_url, key.namespace, key.name
                ),
                now,
            };
            let desired = status::desired(&inputs);
            let uid = obj.uid().unwrap_or_else(|| label.clone());
            let due = match status::change(obj.status.as_ref(), &desired) {
                Change::None => false,
                Change::Significant => true,
                Change::Noise => self
                    .last_write
                    .get(&uid)
                    .is_none_or(|t| t.elapsed() >= self.config.status_interval),
            };
            if !due {
                continue;
            }
            match self.patch_status(&obj, &desired).await {
                Ok(()) => {
                    self.last_write.insert(uid, Instant::now());
                    for ev in status::events(obj.status.as_ref(), &desired) {
                        self.publish(&obj, ev).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(policy = %label, error = %e, "status write failed; will retry")
                }
            }
        }
    }

    async fn patch_status(
        &self,
        obj: &AccessPolicy,
        status: &AccessPolicyStatus,
    ) -> Result<(), kube::Error> {
        let api: Api<AccessPolicy> =
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": AccessPolicy::api_version(&()),
            "kind": AccessPolicy::kind(&()),
            "status": status,
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    async fn publish(&self, obj: &AccessPolicy, ev: status::EventSpec) {
        let event = Event {
            type_: if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: ev.reason.into(),
            note: Some(ev.note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(policy = %obj.name_any(), reason = ev.reason, error = %e, "event not recorded");
        }
    }
}
