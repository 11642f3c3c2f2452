//! Serving: the one authorization service ([`authorize`]) and its adapters, the auth and
//! admin listeners ([`http`], [`grpc`]), and the state they share ([`state`]). A request
//! reads top to bottom: adapter (dialect) → [`authorize`] (policy, verify, keys, identity,
//! conclude) → [`record`] → the [`verdict`] rendered by the adapter. [`bootstrap`] builds
//! the state the same way for `serve`, `run` and `demo`; [`listen`] binds and serves both
//! listeners, each with the connection limits of [`listener`].

pub mod authorize;
pub mod decision_log;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod record;
pub mod shadow;
pub mod state;
pub mod verdict;

use crate::keys::signing::{AssertionConfig, AssertionSigner, SigningError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::core::index::NamespaceHosts;
use crate::identity::{IdentityClient, IdentityConfig};
use crate::keys::tokens::TokenCache;
use crate::keys::{KeyConfig, KeyStore};
use crate::metrics::{DecisionLogLabels, Metrics};
use crate::source::class::InstallClass;
use decision_log::{DecisionLog, DecisionLogConfig, DecisionLogCounters, DecisionLogError};
pub use listener::{ConnectionLimits, ListenerLimits};
use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    DecisionLog(#[from] DecisionLogError),
    #[error("upstream assertion keys: {0}")]
    Signing(#[from] SigningError),
}

/// What `serve` and `run` start the same way: both listeners and their limits, the state
/// behind them, and how hosts are routed and policies chosen.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Connection limits of both listeners.
    pub listeners: ListenerLimits,
    pub services: Services,
    /// The operator's namespace → host patterns (`--host-claims`); `None`: in file mode any
    /// namespace, in cluster mode the hosts a namespace serves itself.
    pub host_claims: Option<Arc<NamespaceHosts>>,
    /// How long a namespace keeps a host it stopped claiming (`--host-release-after`).
    pub host_release_after: Duration,
    /// Which policies this install serves (`--class`).
    pub class: InstallClass,
}

/// What the shared state is built from.
#[derive(Debug, Clone)]
pub struct Services {
    pub keys: KeyConfig,
    pub token_cache_bytes: u64,
    /// Identity enrichment: cache size and the fetch guard.
    pub enrichment: IdentityConfig,
    /// The decision log; `None`: off.
    pub decision_log: Option<DecisionLogConfig>,
    /// The upstream assertion's keys and issuer.
    pub assertion: AssertionConfig,
}

/// The state every handler shares: metrics, key caches, the verified-token cache and the
/// identity client.
pub fn bootstrap(services: &Services) -> Result<Arc<AppState>, ServeError> {
    let metrics = Metrics::new();
    let keys = KeyStore::new(services.keys.clone(), metrics.clone())?;
    let identity = IdentityClient::new(services.enrichment.clone(), metrics.clone())?;
    let decision_log = match &services.decision_log {
        None => None,
        Some(config) => {
            let line = |result| {
                metrics
                    .decision_log_lines
                    .get_or_create(&DecisionLogLabels { result })
                    .clone()
            };
            let counters = DecisionLogCounters {
                written: line("written"),
                rate_limited: line("rate_limited"),
                queue_full: line("queue_full"),
                sink_failed: line("sink_failed"),
            };
            Some(DecisionLog::start(config.clone(), counters)?)
        }
    };
    let signer = AssertionSigner::start(&services.assertion)?.map(Arc::new);
    Ok(AppState::new(
        keys,
        metrics,
        TokenCache::new(services.token_cache_bytes),
        identity,
        decision_log,
        signer,
    ))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}

/// How often the assertion key directory is looked at.
const KEY_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the auth and admin listeners and serves them in the background until
/// [`Listening::shutdown`]. The auth listener speaks HTTP/1.1 and HTTP/2 cleartext: the HTTP
/// dialects and gRPC ext_authz share it.
pub async fn listen(
    state: &Arc<AppState>,
    config: &ServiceConfig,
) -> Result<Listening, ServeError> {
    let limits = &config.listeners;
    let auth = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    let (auth_addr, admin_addr) = (auth.local_addr()?, admin.local_addr()?);
    tracing::info!(auth = %auth_addr, admin = %admin_addr, "listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(signer) = state.signer.clone() {
        // A mounted Secret changes in place (kubelet's sync, within about a minute).
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                signer.reload_if_changed();
            }
        });
    }
    let tasks = vec![
        tokio::spawn(listener::serve(
            auth,
            "auth",
            grpc::auth_listener(state.clone()),
            limits.auth,
            state.metrics.clone(),
            stopped.clone(),
        )),
        tokio::spawn(listener::serve(
            admin,
            "admin",
            http::admin_router(state.clone()),
            limits.admin,
            state.metrics.clone(),
            stopped,
        )),
    ];
    Ok(Listening {
        auth_addr,
        admin_addr,
        stop,
        tasks,
    })
}

/// Two listeners being served.
pub struct Listening {
    pub auth_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listening {
    /// Stops accepting connections, closes those with no request in flight (idle, or still
    /// sending a request head) at once, and waits (at most `grace`) for requests in flight
    /// to be answered; their connections are closed after their current request.
    pub async fn shutdown(self, grace: std::time::Duration) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(grace = ?grace, "requests still in flight after the grace period; closing");
        }
    }
}

/// The shutdown sequence of a serving process, the same for `serve` and `run`: on SIGTERM
/// (Ctrl-C exits without it) `/readyz` turns 503 at once so the endpoint leaves the
/// Service, the auth listener keeps answering for `drain` while proxies and kube-proxy
/// catch up, then the listeners stop accepting, close every connection with no request in
/// flight at once, and finish what is in flight (at most `grace`).
pub async fn drain_and_stop(
    state: &AppState,
    listening: Listening,
    drain: std::time::Duration,
    grace: std::time::Duration,
) {
    state.begin_drain();
    tracing::info!(drain = ?drain, "shutting down: not ready, draining");
    tokio::time::sleep(drain).await;
    listening.shutdown(grace).await;
    tracing::info!("listeners stopped");
}

/// A plain server without the listeners' limits, for the loopback dev issuer.
pub async fn serve_http(listener: TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(no_delay(listener), router).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

/// HTTP/2 (gRPC) writes an answer as several frames; with Nagle's algorithm the last one
/// waits for the peer's delayed ACK, about 40 ms per call: no delay on every connection.
fn no_delay(listener: TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    })
}
