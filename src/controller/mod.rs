//! `accessgate run`: the in-cluster mode. Every replica watches AccessPolicies and serves
//! auth from them; the replica holding the Lease also writes status and Events.

pub mod audit;
pub mod counters;
pub mod ledger;
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
use crate::serve::{self, ListenerLimits, Listening, ServeError, Services};
use crate::source::kube::{self as kube_source, HostsConfig, Policies};
use counters::DecisionStats;
use ledger::LedgerWriter;

use status::{Change, Inputs};

const FIELD_MANAGER: &str = "accessgate";

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Connection limits of both listeners.
    pub listeners: ListenerLimits,
    /// Keys, token cache and identity client; the fetch guard is always on in cluster mode.
    pub services: Services,
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// The operator's namespace → host patterns (`--host-claims`), granted on top of the
    /// hosts a namespace serves itself.
    pub host_claims: Option<Arc<NamespaceHosts>>,
    /// The host ledger ConfigMap (in `lease_namespace`).
    pub host_ledger: String,
    /// How long a namespace keeps a host it stopped claiming.
    pub host_release_after: Duration,
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

/// A running replica: serving, watching, and (when elected) writing status.
pub struct Running {
    pub state: Arc<AppState>,
    pub listening: Listening,
    stop_writer: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<()>,
    lease: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
}

impl Running {
    /// The shutdown sequence: not ready, drain, stop the listeners (in-flight requests
    /// answered), then stop writing status and release the Lease (holder cleared) so a
    /// standby takes over at once instead of waiting for it to expire.
    pub async fn shutdown(self, drain: Duration, grace: Duration) {
        serve::drain_and_stop(&self.state, self.listening, drain, grace).await;
        release_lease(
            self.stop_writer,
            self.writer,
            self.lease,
            Duration::from_secs(10),
        )
        .await;
    }

    /// Ctrl-C: no drain, no grace period (requests in flight end with the process). Stops
    /// writing status and releases the Lease as [`Running::shutdown`] does, waiting at most
    /// `within` for both; past that the Lease expires as after a crash.
    pub async fn interrupt(self, within: Duration) {
        let release = release_lease(self.stop_writer, self.writer, self.lease, within);
        if tokio::time::timeout(within, release).await.is_err() {
            tracing::warn!("lease release timed out; it will expire");
        }
    }
}

type LeaseTask = tokio::task::JoinHandle<
    Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
>;

/// Stops the status writer, then waits at most `within` for the lease task to release the
/// Lease (holder cleared).
async fn release_lease(
    stop_writer: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<()>,
    lease: LeaseTask,
    within: Duration,
) {
    let _ = stop_writer.send(true);
    let _ = writer.await;
    // The writer held the only leadership receiver: the lease task releases and ends.
    match tokio::time::timeout(within, lease).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "lease not released; it will expire"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed; the lease will expire"),
        Err(_) => tracing::warn!("lease release timed out; it will expire"),
    }
}

/// Starts everything and returns; the tasks run until [`Running::shutdown`].
pub async fn start(config: RunConfig) -> Result<Running, RunError> {
    let client = Client::try_default().await?;
    let counters = Arc::new(DecisionStats::default());
    let state = serve::bootstrap(&config.services, Some(counters.clone()))?;
    let policies = kube_source::start(
        client.clone(),
        &config.namespaces,
        state.clone(),
        HostsConfig {
            rules: config.host_claims.clone(),
            ledger_namespace: config.lease_namespace.clone(),
            ledger_name: config.host_ledger.clone(),
        },
    )
    .await;
    let listening = serve::listen(
        &state,
        config.listen,
        config.admin_listen,
        &config.listeners,
    )
    .await?;

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
    let (leader, lease) = manager.watch().await;
    let reporter = Reporter {
        controller: "accessgate".into(),
        instance: Some(config.identity.clone()),
    };
    let ledger = LedgerWriter {
        client: client.clone(),
        policies: policies.clone(),
        state: state.clone(),
        release_after: config.host_release_after,
        last_settled: None,
    };
    let writer = StatusWriter {
        client: client.clone(),
        recorder: Recorder::new(client, reporter),
        policies,
        ledger,
        state: state.clone(),
        counters,
        config,
        last_write: HashMap::new(),
        failures: HashMap::new(),
    };
    let (stop_writer, stop) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(writer.run(leader, stop));
    Ok(Running {
        state,
        listening,
        stop_writer,
        writer,
        lease,
    })
}

struct StatusWriter {
    client: Client,
    recorder: Recorder,
    policies: Policies,
    ledger: LedgerWriter,
    state: Arc<AppState>,
    counters: Arc<DecisionStats>,
    config: RunConfig,
    last_write: HashMap<String, Instant>,
    /// Per object: failed status writes in a row, and when to try again.
    failures: HashMap<String, (u32, Instant)>,
}

/// Exponential backoff for a failing status write: 0.5 s, 1 s, 2 s, … capped at 60 s.
fn status_retry_delay(failures: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(7)))
        .min(Duration::from_secs(60))
}

impl StatusWriter {
    async fn run(
        mut self,
        mut leader: tokio::sync::watch::Receiver<bool>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut was_leader = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let is_leader = *leader.borrow_and_update();
            if is_leader != was_leader {
                tracing::info!(identity = %self.config.identity, leader = is_leader, "leadership changed");
                was_leader = is_leader;
                self.last_write.clear();
            }
            if is_leader {
                self.ledger.settle().await;
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
        let ingresses = self.policies.ingresses();
        let audits = audit::audit(ingresses.iter().map(AsRef::as_ref), &index);
        for obj in self.policies.objects() {
            let key = PolicyKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
            let label = key.to_string();
            let entry = index.entry(&key);
            let jwks = match entry {
                Some(crate::core::index::Entry::Ready(p)) => Some(p.jwks_uri.clone()),
                _ => None,
            };
            // The generation the index holds, not the object's: status describes what is
            // enforced, and a newer generation is not until the index is rebuilt.
            let generation = match entry {
                Some(e) => e.generation(),
                None => obj.status.as_ref().and_then(|s| s.observed_generation),
            };
            let inputs = Inputs {
                generation,
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
                replica: &self.config.identity,
                audit: audits.get(&key),
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
            let backing_off = self
                .failures
                .get(&uid)
                .is_some_and(|(_, retry_at)| Instant::now() < *retry_at);
            if !due || backing_off {
                continue;
            }
            match self.patch_status(&obj, &desired).await {
                Ok(()) => {
                    self.failures.remove(&uid);
                    self.last_write.insert(uid, Instant::now());
                    for ev in status::events(obj.status.as_ref(), &desired) {
                        self.publish(&obj, ev).await;
                    }
                }
                Err(e) => {
                    let failed = self.failures.get(&uid).map_or(0, |(n, _)| *n) + 1;
                    let wait = status_retry_delay(failed);
                    self.failures.insert(uid, (failed, Instant::now() + wait));
                    tracing::warn!(policy = %label, error = %e, attempt = failed, retry_in = ?wait, "status write failed; will retry")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_status_writes_back_off_exponentially() {
        let delays: Vec<u64> = (1..=10)
            .map(|n| status_retry_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000
            ]
        );
    }
}
