//! The in-cluster source: AccessPolicies watched through the API server (all namespaces or a
//! list), compiled into the same index the file source builds.
//!
//! The reflector stores keep the last known objects while the API server is unreachable, so
//! auth keeps answering from them; on reconnect the watcher re-lists and the stores (and so
//! the index) resync, deletions included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use super::PolicySink;
use crate::core::index::{Entry, NamespaceHosts, PolicyIndex, Seniority};
use crate::core::policy::{AccessPolicy, PolicyKey, compile};

/// Builds the index from API objects. A policy that fails validation stays in the index as
/// invalid (its requests get `policy_invalid`, its status says why); the rest are unaffected.
/// A host belongs to the namespace of the oldest policy claiming it (`creationTimestamp`,
/// which every replica sees alike).
pub fn index_from(objects: &[Arc<AccessPolicy>], rules: Option<&NamespaceHosts>) -> PolicyIndex {
    let mut created = HashMap::new();
    let entries: Vec<_> = objects
        .iter()
        .map(|obj| {
            let key = PolicyKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
            let at = obj
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MAX, |t| t.0.as_second());
            created.insert(key.clone(), at);
            let entry = match compile(key.clone(), obj.metadata.generation, &obj.spec) {
                Ok(p) => Entry::Ready(Arc::new(p)),
                Err(e) => Entry::Invalid {
                    message: e.to_string(),
                    generation: obj.metadata.generation,
                },
            };
            (key, entry)
        })
        .collect();
    PolicyIndex::build_with(
        entries,
        |key, _| Seniority::Created(created.get(key).copied().unwrap_or(i64::MAX)),
        rules,
    )
}

/// What the index was built from: a rebuild is needed only when this changes (status
/// writes, which the watch also reports, do not change it).
fn fingerprint(objects: &[Arc<AccessPolicy>]) -> Vec<(String, Option<i64>)> {
    let mut fp: Vec<_> = objects
        .iter()
        .map(|o| {
            (
                o.uid().unwrap_or_else(|| o.name_any()),
                o.metadata.generation,
            )
        })
        .collect();
    fp.sort();
    fp
}

/// The watched objects, across the configured namespaces.
#[derive(Clone)]
pub struct Policies {
    stores: Vec<Store<AccessPolicy>>,
}

impl Policies {
    pub fn objects(&self) -> Vec<Arc<AccessPolicy>> {
        self.stores.iter().flat_map(|s| s.state()).collect()
    }
}

/// Starts the watches and the task that keeps `state`'s index in step with them.
pub fn start(
    client: Client,
    namespaces: &[String],
    sink: Arc<dyn PolicySink>,
    host_claims: Option<Arc<NamespaceHosts>>,
) -> Policies {
    let apis: Vec<Api<AccessPolicy>> = if namespaces.is_empty() {
        vec![Api::all(client)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let changed = Arc::new(Notify::new());
    let mut stores = Vec::new();
    for api in apis {
        let (reader, writer) = reflector::store();
        stores.push(reader);
        let changed = changed.clone();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => changed.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "AccessPolicy watch failed; serving the last known policies and retrying")
                    }
                }
            }
        });
    }
    let policies = Policies { stores };
    tokio::spawn(keep_index(policies.clone(), changed, sink, host_claims));
    policies
}

async fn keep_index(
    policies: Policies,
    changed: Arc<Notify>,
    sink: Arc<dyn PolicySink>,
    host_claims: Option<Arc<NamespaceHosts>>,
) {
    for store in &policies.stores {
        if store.wait_until_ready().await.is_err() {
            return;
        }
    }
    let mut last = None;
    loop {
        let objects = policies.objects();
        let fp = fingerprint(&objects);
        if last.as_ref() != Some(&fp) {
            let index = index_from(&objects, host_claims.as_deref());
            tracing::info!(
                policies = index.len(),
                "policy set updated from the API server"
            );
            sink.install(index);
            last = Some(fp);
        }
        changed.notified().await;
        // Let a burst of events (a re-list, a multi-object apply) settle into one rebuild.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
