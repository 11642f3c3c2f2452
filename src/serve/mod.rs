//! Serving: the auth and admin listeners ([`http`]) and the state they share ([`state`]).
//! [`bootstrap`] builds that state the same way for `serve`, `run` and `demo`; [`listen`]
//! binds and serves both listeners.

pub mod http;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::identity::{IdentityClient, IdentityConfig};
use crate::keys::tokens::TokenCache;
use crate::keys::{KeyConfig, KeyStore};
use crate::metrics::Metrics;
use state::{AppState, DecisionObserver};

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
}

/// What the shared state is built from.
#[derive(Debug, Clone)]
pub struct Services {
    pub keys: KeyConfig,
    pub token_cache_bytes: u64,
    /// Identity enrichment: cache size and the fetch guard.
    pub enrichment: IdentityConfig,
}

/// The state every handler shares: metrics, key caches, the verified-token cache, the
/// identity client, and (in the cluster) the observer counting decisions for status.
pub fn bootstrap(
    services: &Services,
    observer: Option<Arc<dyn DecisionObserver>>,
) -> Result<Arc<AppState>, ServeError> {
    let metrics = Metrics::new();
    let keys = KeyStore::new(services.keys.clone(), metrics.clone())?;
    let identity = IdentityClient::new(services.enrichment.clone(), metrics.clone())?;
    Ok(AppState::new(
        keys,
        metrics,
        TokenCache::new(services.token_cache_bytes),
        identity,
        observer,
    ))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
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
    tokio::spawn(serve_http(auth, http::auth_router(state.clone())));
    tokio::spawn(serve_http(admin, http::admin_router(state.clone())));
    Ok(addrs)
}

pub async fn serve_http(listener: TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
