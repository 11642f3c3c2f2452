//! The leader's host ledger writer: records who holds which host in a ConfigMap every
//! replica watches, so ownership survives an owner's delete-and-recreate, a brief absence,
//! an Invalid spell, a leader change and a restart (see [`crate::core::hosts`]).
//!
//! Written only when the settlement changes (a host taken, an absence stamped, a holding
//! freed): nothing in steady state.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::core::hosts::{Clock, Ledger};
use crate::serve::state::AppState;
use crate::source::hosts::ledger_data;
use crate::source::kube::{Policies, next_ledger};

use super::FIELD_MANAGER;

/// How often the leader settles the ledger (also how late an expired absence is noticed).
const SETTLE_EVERY: Duration = Duration::from_secs(2);

pub struct LedgerWriter {
    pub client: Client,
    pub policies: Policies,
    pub state: Arc<AppState>,
    /// How long a namespace keeps a host it stopped claiming.
    pub release_after: Duration,
    pub last_settled: Option<Instant>,
}

impl LedgerWriter {
    /// Settles the ledger if it is time, and records it if it changed.
    pub async fn settle(&mut self) {
        if self
            .last_settled
            .is_some_and(|t| t.elapsed() < SETTLE_EVERY)
        {
            return;
        }
        self.last_settled = Some(Instant::now());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let clock = Clock {
            now,
            grace: self.release_after.as_secs() as i64,
        };
        let recorded = self.policies.host_inputs().ledger;
        let next = next_ledger(&self.policies, &self.state.index(), clock);
        if next == recorded {
            return;
        }
        match self.record(&next).await {
            Ok(()) => tracing::info!(hosts = next.len(), "host ledger recorded"),
            Err(e) => {
                tracing::warn!(error = %e, "host ledger not recorded; host routing keeps the last recorded holders")
            }
        }
    }

    async fn record(&self, ledger: &Ledger) -> Result<(), kube::Error> {
        let hosts = &self.policies.hosts;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &hosts.ledger_namespace);
        let map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": hosts.ledger_name,
                "namespace": hosts.ledger_namespace,
                "labels": {"app.kubernetes.io/managed-by": "accessgate"},
                "annotations": {
                    "accessgate.dev/about": "Who holds which host for host routing; written by the elected accessgate replica. Delete a key to free that host."
                },
            },
            "data": ledger_data(ledger),
        });
        api.patch(
            &hosts.ledger_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&map),
        )
        .await?;
        Ok(())
    }
}
