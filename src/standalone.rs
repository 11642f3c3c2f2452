//! `accessgate serve`: the auth service on a directory of policies, no cluster needed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::identity::{IdentityClient, IdentityConfig};
use crate::index::NamespaceHosts;
use crate::keys::{KeyConfig, KeyStore};
use crate::metrics::Metrics;
use crate::server;
use crate::source::files;
use crate::state::AppState;
use crate::tokencache::TokenCache;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot load policies: {0}")]
    Policies(#[from] files::LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot watch the policy directory: {0}")]
    Watch(#[from] notify::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub policies: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub keys: KeyConfig,
    pub token_cache_bytes: u64,
    /// The operator's namespace → host patterns (`--host-claims`); `None`: any namespace.
    pub host_claims: Option<Arc<NamespaceHosts>>,
    /// Identity enrichment: cache size and the fetch guard.
    pub enrichment: IdentityConfig,
}

/// A started service: its bound addresses and shared state.
pub struct Running {
    pub auth_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}

/// Loads the policies (refusing to start on a bad set), binds both listeners and spawns
/// the servers and the directory watcher. Returns once everything is accepting requests.
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    let metrics = Metrics::new();
    let keys = KeyStore::new(config.keys.clone(), metrics.clone())?;
    let identity = IdentityClient::new(config.enrichment.clone(), metrics.clone())?;
    let state = AppState::new(
        keys,
        metrics,
        TokenCache::new(config.token_cache_bytes),
        identity,
    );
    let mut clock = files::ClaimClock::new(config.host_claims.clone());
    let n = files::reload(&config.policies, &state, &mut clock)?;
    tracing::info!(dir = %config.policies.display(), policies = n, "policies loaded");

    let (auth_addr, admin_addr) = listen(&state, config.listen, config.admin_listen).await?;
    let running = Running {
        auth_addr,
        admin_addr,
        state: state.clone(),
    };
    let dir = config.policies.clone();
    tokio::spawn(async move {
        if let Err(e) = files::watch(dir, state, clock).await {
            tracing::error!(error = %e, "policy directory watch stopped; policies are no longer reloaded");
        }
    });
    Ok(running)
}

/// Binds the auth and admin listeners and serves them in the background.
pub async fn listen(
    state: &Arc<AppState>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<(SocketAddr, SocketAddr), ServeError> {
    let auth = bind(listen).await?;
    let admin = bind(admin_listen).await?;
    let addrs = (auth.local_addr()?, admin.local_addr()?);
    tracing::info!(auth = %addrs.0, admin = %addrs.1, "listening");
    tokio::spawn(serve_http(auth, server::auth_router(state.clone())));
    tokio::spawn(serve_http(admin, server::admin_router(state.clone())));
    Ok(addrs)
}

pub async fn serve_http(listener: TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
