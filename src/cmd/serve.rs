//! `accessgate serve`: the auth service on a directory of policies, no cluster needed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::core::index::NamespaceHosts;
use crate::serve::state::AppState;
use crate::serve::{self, ListenerLimits, Listening, ServeError, Services};
use crate::source::class::InstallClass;
use crate::source::files;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot load policies: {0}")]
    Policies(#[from] files::LoadError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub policies: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Connection limits of both listeners.
    pub listeners: ListenerLimits,
    pub services: Services,
    /// The operator's namespace → host patterns (`--host-claims`); `None`: any namespace.
    pub host_claims: Option<Arc<NamespaceHosts>>,
    /// How long a namespace keeps a host it stopped claiming (`--host-release-after`).
    pub host_release_after: std::time::Duration,
    /// Which of the directory's policies this install serves (`--class`).
    pub class: InstallClass,
}

/// A started service: its listeners (with their addresses) and shared state.
pub struct ServeHandle {
    pub listening: Listening,
    pub state: Arc<AppState>,
}

/// Loads the policies (refusing to start on a bad set), binds both listeners and spawns
/// the servers and the directory watcher. Returns once everything is accepting requests.
pub async fn start(config: ServeConfig) -> Result<ServeHandle, StartError> {
    // No status to write in file mode: decisions are counted in metrics only.
    let state = serve::bootstrap(&config.services)?;
    let mut ledger = files::HostLedger::new(config.host_claims.clone(), config.host_release_after);
    let mut parsed = files::ParsedFiles::for_class(config.class.clone());
    let loaded = files::reload(
        &config.policies,
        state.as_ref(),
        &state.metrics,
        &mut ledger,
        &mut parsed,
    )?;
    tracing::info!(
        dir = %config.policies.display(),
        policies = loaded.policies,
        class = %config.class,
        ignored_other_class = loaded.ignored_other_class,
        "policies loaded"
    );

    let listening = serve::listen(
        &state,
        config.listen,
        config.admin_listen,
        &config.listeners,
    )
    .await?;
    let running = ServeHandle {
        listening,
        state: state.clone(),
    };
    let dir = config.policies.clone();
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = files::watch(dir, state, metrics, ledger, parsed).await {
            tracing::error!(error = %e, "policy directory watch stopped; policies are no longer reloaded");
        }
    });
    Ok(running)
}

/// The shutdown sequence ([`crate::serve::drain_and_stop`]) for a file-mode service.
pub async fn drain_and_stop_running(
    running: ServeHandle,
    drain: std::time::Duration,
    grace: std::time::Duration,
) {
    serve::drain_and_stop(&running.state, running.listening, drain, grace).await;
}
