//! `accessgate serve`: the auth service on a directory of policies, no cluster needed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::serve::state::AppState;
use crate::serve::{self, Listening, ServeError, ServiceConfig};
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
    pub service: ServiceConfig,
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
    let service = &config.service;
    let state = serve::bootstrap(&service.services)?;
    let mut ledger =
        files::HostLedger::new(service.host_claims.clone(), service.host_release_after);
    let mut parsed = files::ParsedFiles::for_class(service.class.clone());
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
        class = %service.class,
        ignored_other_class = loaded.ignored_other_class,
        "policies loaded"
    );

    let listening = serve::listen(&state, service).await?;
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
