//! Run-mode wiring: the replica's listeners, watches, Lease and status writer, started
//! together and stopped in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};

use super::ingress_refs::IngressRefs;
use super::install::InstallService;
use super::key_rotation::{KeyRotation, KeyRotationConfig};
use super::ledger::LedgerWriter;
use super::status_writer::{Seen, StatusWriter};
use crate::serve::state::AppState;
use crate::serve::{self, Listening, ServeError, ServiceConfig};
use crate::source::kube::{self as kube_source, HostsConfig};

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Listeners, state and host routing as in file mode; the fetch guard is always on in
    /// cluster mode, and `host_claims` are granted on top of the hosts a namespace serves.
    pub service: ServiceConfig,
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// The host ledger ConfigMap (in `lease_namespace`).
    pub host_ledger: String,
    /// Base of the `authUrl` status field, e.g. `http://accessgate.accessgate-system.svc.cluster.local`.
    pub auth_base_url: String,
    /// This install's Service (`auth_base_url` is its base URL): which auth-urls reach it.
    pub install: InstallService,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub identity: String,
    /// The shortest time between two status writes of one policy.
    pub status_interval: Duration,
    /// The assertion key Secret the elected replica rotates; `None`: no rotation.
    pub key_rotation: Option<KeyRotationConfig>,
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
pub struct ControllerHandle {
    pub state: Arc<AppState>,
    pub listening: Listening,
    stop_writer: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<()>,
    lease: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
}

impl ControllerHandle {
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
    /// writing status and releases the Lease as [`ControllerHandle::shutdown`] does, waiting
    /// at most `within` for both; past that the Lease expires as after a crash.
    pub async fn interrupt(self, within: Duration) {
        let release = release_lease(self.stop_writer, self.writer, self.lease, within);
        if tokio::time::timeout(within, release).await.is_err() {
            tracing::warn!("lease release timed out; it will expire");
        }
    }
}

/// Retries of the first Lease request while the API server is out of reach: doubling from
/// the first to the last.
const LEASE_RETRY_FIRST: Duration = Duration::from_secs(1);
const LEASE_RETRY_MAX: Duration = Duration::from_secs(30);

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
    // The writer, the Ingress reference check and the key rotation (which end on the same
    // signal) held the leadership receivers: the lease task releases and ends.
    match tokio::time::timeout(within, lease).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "lease not released; it will expire"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed; the lease will expire"),
        Err(_) => tracing::warn!("lease release timed out; it will expire"),
    }
}

/// Starts everything and returns; the tasks run until [`ControllerHandle::shutdown`].
pub async fn start(config: RunConfig) -> Result<ControllerHandle, RunError> {
    let client = Client::try_default().await?;
    let state = serve::bootstrap(&config.service.services)?;
    let policies = kube_source::start(
        client.clone(),
        &config.namespaces,
        state.clone(),
        HostsConfig {
            rules: config.service.host_claims.clone(),
            ledger_namespace: config.lease_namespace.clone(),
            ledger_name: config.host_ledger.clone(),
        },
        config.service.class.clone(),
    )
    .await;
    let listening = serve::listen(&state, &config.service).await?;

    let seconds = config.lease_duration.as_secs().max(2);
    // An API server out of reach at start is waited for, not a crash: the replica serves
    // nothing meanwhile (no policy set is loaded, so /readyz says not ready), and it comes up
    // as soon as the API server answers instead of after a kubelet crash-loop back-off.
    let mut retry = LEASE_RETRY_FIRST;
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.lease_namespace)
            .with_parameters(LeaseParams::new(
                &config.identity,
                seconds,
                (seconds / 3).max(1),
            ))
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "leader election cannot reach the API server; not ready until it can");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LEASE_RETRY_MAX);
            }
        }
    };
    let (leader, lease) = manager.watch().await;
    let reporter = Reporter {
        controller: "accessgate".into(),
        instance: Some(config.identity.clone()),
    };
    let ledger = LedgerWriter {
        client: client.clone(),
        policies: policies.clone(),
        state: state.clone(),
        release_after: config.service.host_release_after,
        last_settled: None,
    };
    let writer = StatusWriter {
        client: client.clone(),
        recorder: Recorder::new(client, reporter),
        wake: policies.changed.clone(),
        policies,
        ledger,
        state: state.clone(),
        auth_base_url: config.auth_base_url.clone(),
        install: config.install.clone(),
        identity: config.identity.clone(),
        min_interval: config.status_interval,
        seen: Seen::default(),
        queue: HashSet::new(),
        last_write: HashMap::new(),
        failures: HashMap::new(),
        in_flight: tokio::task::JoinSet::new(),
        writing: HashMap::new(),
    };
    let (stop_writer, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(
        IngressRefs::new(
            writer.client.clone(),
            writer.policies.clone(),
            state.clone(),
            &config,
        )
        .run(leader.clone(), stop.clone()),
    );
    if let Some(config) = config.key_rotation.clone() {
        tokio::spawn(
            KeyRotation {
                client: writer.client.clone(),
                config,
            }
            .run(leader.clone(), stop.clone()),
        );
    }
    let writer = tokio::spawn(writer.run(leader, stop));
    Ok(ControllerHandle {
        state,
        listening,
        stop_writer,
        writer,
        lease,
    })
}
