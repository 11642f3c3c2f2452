//! The elected replica's status writer: event-driven, so status costs the API server nothing
//! while nothing changes.
//!
//! Changes are queued by policy where they happen (an object event, a new index, a key set or
//! fetch error that moved, an audit change, leadership gained). A policy is written only when
//! its desired status differs from the stored one, at most once per `min_interval` (a flapping
//! policy is no write storm), with up to [`CONCURRENT_PATCHES`] in flight and a backoff per
//! object. Patches run beside the loop, so a slow API server delays status, never enforcement or
//! another policy's write. See docs/operating.md, "Replicas, status and decisions".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinError, JoinSet};
use url::Url;

use super::FIELD_MANAGER;
use super::audit::{self, Audit};
use super::install::InstallService;
use super::ledger::LedgerWriter;
use super::status::{self, Inputs};
use crate::api::{AccessPolicy, AccessPolicyStatus};
use crate::core::index::{PolicyEntry, PolicyIndex};
use crate::core::policy::PolicyKey;
use crate::metrics::{StatusWriteLabels, StatusWriterMetrics};
use crate::serve::state::AppState;
use crate::source::kube::Policies;

/// Status patches in flight at once.
pub const CONCURRENT_PATCHES: usize = 8;

/// How often queued work (backoffs, minimum intervals) and key statuses are looked at
/// without a wake-up.
const TICK: Duration = Duration::from_secs(1);

/// A status patch unanswered this long is given up as failed (and retried after the
/// backoff). The client has no read timeout, and the API server ends its own requests after
/// 60 s: this only ends writes nobody is answering, e.g. over a connection that silently died,
/// which would otherwise hold their policy and a patch slot for good.
const PATCH_TIMEOUT: Duration = Duration::from_secs(70);

pub struct StatusWriter {
    pub client: Client,
    pub recorder: Recorder,
    pub policies: Policies,
    pub ledger: LedgerWriter,
    pub state: Arc<AppState>,
    /// Base of the `authUrl` status field.
    pub auth_base_url: String,
    /// This install's Service: the audit counts only Ingresses whose auth-url reaches it.
    pub install: InstallService,
    /// This replica's name, for its logs.
    pub identity: String,
    /// The shortest time between two writes of one policy's status.
    pub min_interval: Duration,
    /// Woken by policy and Ingress watch events and by every new index.
    pub wake: Arc<Notify>,
    pub seen: Seen,
    pub queue: HashSet<PolicyKey>,
    pub last_write: HashMap<PolicyKey, Written>,
    /// Per object: failed status writes in a row, and when to try again.
    pub failures: HashMap<PolicyKey, (u32, Instant)>,
    /// Status patches in flight. They run beside the loop, not in it: one the API server is
    /// slow to answer must hold neither other policies' writes nor a leadership change or
    /// shutdown (a loop awaiting its batch of patches did all three).
    pub in_flight: JoinSet<Outcome>,
    /// The policy each patch in flight writes (at most one per policy).
    pub writing: HashMap<tokio::task::Id, PolicyKey>,
}

/// How one status patch ended.
pub struct Outcome {
    key: PolicyKey,
    over: Option<String>,
    status: AccessPolicyStatus,
    result: Result<(), PatchError>,
    took: Duration,
}

#[derive(Debug, thiserror::Error)]
enum PatchError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// A status this replica wrote: when, and over which stored version, so a look before the
/// watch has delivered the write does not write it again.
pub struct Written {
    at: Instant,
    over: Option<String>,
    status: AccessPolicyStatus,
}

/// What the writer last looked at, to tell what moved since.
#[derive(Default)]
pub struct Seen {
    index: Option<Arc<PolicyIndex>>,
    objects: HashMap<PolicyKey, Arc<AccessPolicy>>,
    keys: HashMap<Url, (Vec<String>, Option<String>)>,
    ingresses: Vec<(String, String)>,
    audits: BTreeMap<PolicyKey, Audit>,
}

/// Exponential backoff for a failing status write: 0.5 s, 1 s, 2 s, … capped at 60 s.
pub fn status_retry_delay(failures: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(7)))
        .min(Duration::from_secs(60))
}

impl StatusWriter {
    fn metrics(&self) -> &StatusWriterMetrics {
        &self.state.metrics.status
    }

    pub async fn run(mut self, mut leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            let mut ended = None;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tick.tick() => {}
                _ = leader.changed() => {}
                Some(done) = self.in_flight.join_next_with_id() => ended = Some(done),
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Some(done) = ended {
                self.finished(done);
                // Every patch that has ended, in one pass.
                while let Some(done) = self.in_flight.try_join_next_with_id() {
                    self.finished(done);
                }
            }
            let is_leader = *leader.borrow_and_update();
            if is_leader != was_leader {
                tracing::info!(identity = %self.identity, leader = is_leader, "leadership changed");
                was_leader = is_leader;
                self.metrics().leader.set(i64::from(is_leader));
                // A new term looks at every policy once, from what is stored.
                self.seen = Seen::default();
                self.queue.clear();
                self.last_write.clear();
                // Patches of the old term are dropped (aborted) with their set.
                self.in_flight = JoinSet::new();
                self.writing.clear();
            }
            // Taken on every replica, so a follower's list does not grow.
            let shadowed = self.state.shadows.take_changed();
            if is_leader {
                self.ledger.settle().await;
                self.queue.extend(shadowed);
                self.notice_changes();
                self.write_queued();
            }
            if leader.has_changed().is_err() {
                tracing::error!("leader election stopped; this replica no longer writes status");
                return;
            }
        }
    }

    /// Queues every policy whose inputs moved since the last look.
    fn notice_changes(&mut self) {
        let index = self.state.index().clone();
        let objects: HashMap<PolicyKey, Arc<AccessPolicy>> = self
            .policies
            .objects()
            .into_iter()
            .map(|o| (key_of(&o), o))
            .collect();
        for (key, obj) in &objects {
            let moved = self
                .seen
                .objects
                .get(key)
                .is_none_or(|old| old.resource_version() != obj.resource_version());
            if moved {
                self.queue.insert(key.clone());
            }
        }
        self.last_write.retain(|k, _| objects.contains_key(k));
        self.failures.retain(|k, _| objects.contains_key(k));
        self.queue.retain(|k| objects.contains_key(k));

        let index_moved = self
            .seen
            .index
            .as_ref()
            .is_none_or(|old| !Arc::ptr_eq(old, &index));
        if index_moved {
            // Only the policies the index says moved (one edit, not all 10,000), unless it
            // cannot say.
            match self
                .seen
                .index
                .as_ref()
                .and_then(|old| index.changed_since(old.revision()))
            {
                Some(moved) => self
                    .queue
                    .extend(moved.into_iter().filter(|k| objects.contains_key(k))),
                None => self.queue.extend(objects.keys().cloned()),
            }
        }

        let keys: HashMap<Url, (Vec<String>, Option<String>)> = index
            .jwks_uris()
            .into_iter()
            .map(|url| {
                let status = self.state.keys.status(&url);
                let seen = status.map(|s| (s.ids, s.error)).unwrap_or_default();
                (url, seen)
            })
            .collect();
        let keys_moved: HashSet<&Url> = keys
            .iter()
            .filter(|(url, now)| self.seen.keys.get(*url) != Some(*now))
            .map(|(url, _)| url)
            .collect();
        if !keys_moved.is_empty() {
            for (key, entry) in index.entries() {
                if let PolicyEntry::Ready(p) = entry
                    && keys_moved.contains(&p.jwks_uri)
                {
                    self.queue.insert(key);
                }
            }
        }

        let ingresses = self.policies.ingresses();
        let versions = ingress_versions(&ingresses);
        if index_moved || versions != self.seen.ingresses {
            let audits = audit::audit(ingresses.iter().map(AsRef::as_ref), &index, &self.install);
            let keys_of = |m: &BTreeMap<PolicyKey, Audit>| m.keys().cloned().collect::<Vec<_>>();
            for key in keys_of(&audits)
                .into_iter()
                .chain(keys_of(&self.seen.audits))
            {
                if audits.get(&key) != self.seen.audits.get(&key) {
                    self.queue.insert(key);
                }
            }
            self.seen.audits = audits;
            self.seen.ingresses = versions;
        }
        self.seen.index = Some(index);
        self.seen.objects = objects;
        self.seen.keys = keys;
    }

    /// Starts writing the queued policies whose status differs from the stored one.
    fn write_queued(&mut self) {
        let Some(index) = self.seen.index.clone() else {
            return;
        };
        let now = Instant::now();
        let stamp = Timestamp::now();
        let mut waiting = HashSet::new();
        for key in std::mem::take(&mut self.queue) {
            let Some(obj) = self.seen.objects.get(&key).cloned() else {
                continue;
            };
            // One patch per policy at a time: the end of this one looks at it again.
            let writing = self.writing.values().any(|k| *k == key);
            let backing_off = self.failures.get(&key).is_some_and(|(_, at)| now < *at);
            let last = self.last_write.get(&key);
            let too_soon = last.is_some_and(|w| now.duration_since(w.at) < self.min_interval);
            if writing || backing_off || too_soon {
                waiting.insert(key);
                continue;
            }
            // Until the index holds this generation there is nothing new to say (status
            // describes what is enforced); the new index wakes the writer again.
            let caught_up = index
                .entry(&key)
                .is_some_and(|e| e.generation() == obj.metadata.generation);
            if !caught_up {
                continue;
            }
            let desired = self.desired(&index, &key, &obj, stamp);
            let already_sent = last.is_some_and(|w| {
                w.over.as_deref() == obj.resource_version().as_deref() && w.status == desired
            });
            if already_sent || !status::needs_write(obj.status.as_ref(), &desired) {
                continue;
            }
            if self.in_flight.len() >= CONCURRENT_PATCHES {
                waiting.insert(key);
                continue;
            }
            self.start_write(key, obj, desired);
        }
        self.queue = waiting;
        self.metrics()
            .queue
            .set((self.queue.len() + self.writing.len()) as i64);
    }

    /// Patches `obj`'s status to `desired` beside the loop, then publishes the Events the
    /// change calls for (many policies changing at once mean many Events, sent concurrently
    /// like the patches so the next changes do not wait behind them).
    fn start_write(&mut self, key: PolicyKey, obj: Arc<AccessPolicy>, desired: AccessPolicyStatus) {
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let events = status::events(obj.status.as_ref(), &desired);
        let writes = key.clone();
        let task = self.in_flight.spawn(async move {
            let started = Instant::now();
            let result =
                match tokio::time::timeout(PATCH_TIMEOUT, patch_status(&client, &obj, &desired))
                    .await
                {
                    Ok(r) => r.map_err(PatchError::from),
                    Err(_) => Err(PatchError::TimedOut(PATCH_TIMEOUT)),
                };
            let took = started.elapsed();
            if result.is_ok() {
                for ev in events {
                    publish(&recorder, &obj, ev).await;
                }
            }
            Outcome {
                key,
                over: obj.resource_version(),
                status: desired,
                result,
                took,
            }
        });
        self.writing.insert(task.id(), writes);
    }

    /// Records how a patch ended: a success as the last write, a failure for a retry after
    /// the object's backoff.
    fn finished(&mut self, done: Result<(tokio::task::Id, Outcome), JoinError>) {
        let (task, outcome) = match done {
            Ok(done) => done,
            Err(e) => {
                // Only a panic gets here (aborted patches go with their set): the policy is
                // looked at again by the next change.
                if let Some(key) = self.writing.remove(&e.id()) {
                    tracing::error!(policy = %key, error = %e, "status write task failed");
                }
                return;
            }
        };
        self.writing.remove(&task);
        let Outcome {
            key,
            over,
            status,
            result,
            took,
        } = outcome;
        self.metrics().patch_seconds.observe(took.as_secs_f64());
        match result {
            Ok(()) => {
                self.count("ok");
                self.failures.remove(&key);
                let written = Written {
                    at: Instant::now(),
                    over,
                    status,
                };
                self.last_write.insert(key, written);
            }
            Err(e) => {
                self.count("failed");
                let failed = self.failures.get(&key).map_or(0, |(n, _)| *n) + 1;
                let wait = status_retry_delay(failed);
                tracing::warn!(policy = %key, error = %e, attempt = failed, retry_in = ?wait, "status write failed; will retry");
                self.failures
                    .insert(key.clone(), (failed, Instant::now() + wait));
                self.queue.insert(key);
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics()
            .patches
            .get_or_create(&StatusWriteLabels { result })
            .inc();
    }

    fn desired(
        &self,
        index: &PolicyIndex,
        key: &PolicyKey,
        obj: &AccessPolicy,
        now: Timestamp,
    ) -> AccessPolicyStatus {
        let entry = index.entry(key);
        let jwks = match entry {
            Some(PolicyEntry::Ready(p)) => Some(&p.jwks_uri),
            _ => None,
        };
        // The generation the index holds, not the object's: status describes what is
        // enforced, and a newer generation is not until the index is rebuilt.
        let generation = match entry {
            Some(e) => e.generation(),
            None => obj.status.as_ref().and_then(|s| s.observed_generation),
        };
        status::desired(&Inputs {
            generation,
            previous: obj.status.as_ref(),
            entry,
            conflicts: index
                .conflicts()
                .filter(|c| c.policies.contains(key))
                .collect(),
            refused_hosts: index.refused_hosts(key),
            keys: jwks.and_then(|u| self.state.keys.status(u)),
            audit: self.seen.audits.get(key),
            auth_url: format!("{}/auth/{}/{}", self.auth_base_url, key.namespace, key.name),
            would_deny: self.state.shadows.would_deny(key, generation),
            disagreed: self.state.shadows.disagreed(key, generation),
            now,
        })
    }
}

async fn publish(recorder: &Recorder, obj: &AccessPolicy, ev: status::EventSpec) {
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
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(policy = %obj.name_any(), reason = ev.reason, error = %e, "event not recorded");
    }
}

fn key_of(obj: &AccessPolicy) -> PolicyKey {
    PolicyKey::new(obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Each Ingress's uid and resourceVersion, sorted: changes when any Ingress does.
fn ingress_versions(ingresses: &[Arc<Ingress>]) -> Vec<(String, String)> {
    let mut v: Vec<_> = ingresses
        .iter()
        .map(|i| {
            (
                i.uid().unwrap_or_default(),
                i.resource_version().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn patch_status(
    client: &Client,
    obj: &AccessPolicy,
    status: &AccessPolicyStatus,
) -> Result<(), kube::Error> {
    let api: Api<AccessPolicy> =
        Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
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
