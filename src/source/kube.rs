//! The in-cluster source: AccessPolicies watched through the API server (all namespaces or a
//! list), compiled into the same index the file source builds. Host routing also reads who
//! serves which host (Ingresses; HTTPRoutes where Gateway API is installed) and the host
//! ledger ConfigMap the leader writes (`controller::ledger`); every replica reads
//! them alike, so every replica routes alike.
//!
//! The reflector stores keep the last known objects while the API server is unreachable, so
//! auth keeps answering from them; on reconnect the watcher re-lists and the stores (and so
//! the index) resync, deletions included.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::PolicySink;
use super::class::InstallClass;
use super::hosts::{ledger_from, served_hosts};
use crate::api::AccessPolicy;
use crate::core::hosts::{Clock, HostClaim, HostRights, Ledger, ServedHosts, Ties, resolve};
use crate::core::index::{
    Change, HostRouting, IndexUpdater, NamespaceHosts, PolicyEntry, PolicyIndex,
};
use crate::core::policy::{PolicyKey, compile};

/// How the cluster settles host claims.
#[derive(Debug, Clone)]
pub struct HostsConfig {
    /// The operator's namespace → host patterns (`--host-claims`), granted on top of what
    /// each namespace serves.
    pub rules: Option<Arc<NamespaceHosts>>,
    /// The ledger ConfigMap, in accessgate's own namespace.
    pub ledger_namespace: String,
    pub ledger_name: String,
}

/// What the host rules read from the cluster at one moment.
pub struct HostInputs {
    pub served: ServedHosts,
    pub ledger: Ledger,
    pub rules: Option<Arc<NamespaceHosts>>,
}

impl HostInputs {
    fn rights(&self) -> HostRights<'_> {
        HostRights::Served {
            served: &self.served,
            rules: self.rules.as_deref(),
        }
    }

    /// How replicas settle claims: from the recorded ledger, without a clock (only the
    /// leader's ledger writer moves holdings in time).
    fn routing(&self) -> HostRouting<'_> {
        HostRouting {
            ledger: &self.ledger,
            rights: self.rights(),
            ties: Ties::ToSmallerName,
            clock: None,
        }
    }
}

/// Builds the index from API objects. A policy that fails validation stays in the index as
/// invalid (its requests get `policy_invalid`, its status says why); the rest are unaffected.
/// Host claims are settled by the recorded ledger and what each namespace serves; a host
/// nobody holds goes to the oldest policy claiming it (`creationTimestamp`, which every
/// replica sees alike). Only the leader's ledger writer moves holdings in time.
pub fn index_from(objects: &[Arc<AccessPolicy>], hosts: &HostInputs) -> PolicyIndex {
    let created = creation_seconds(objects);
    PolicyIndex::build_with(
        objects.iter().map(|obj| entry_of(obj)),
        |key| created.get(key).copied().unwrap_or(i64::MAX),
        hosts.routing(),
    )
}

/// A policy object compiled into its index entry.
fn entry_of(obj: &AccessPolicy) -> (PolicyKey, PolicyEntry) {
    let key = PolicyKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
    let entry = match compile(key.clone(), obj.metadata.generation, &obj.spec) {
        Ok(p) => PolicyEntry::Ready(Arc::new(p)),
        Err(e) => PolicyEntry::Invalid {
            message: e.to_string(),
            generation: obj.metadata.generation,
        },
    };
    (key, entry)
}

fn created_second(obj: &AccessPolicy) -> i64 {
    obj.metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| t.0.as_second())
}

fn creation_seconds(objects: &[Arc<AccessPolicy>]) -> HashMap<PolicyKey, i64> {
    objects
        .iter()
        .map(|obj| {
            let key = PolicyKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
            (key, created_second(obj))
        })
        .collect()
}

/// The ledger the leader records: the enforced policies' claims settled with its clock
/// (absences stamped, holdings past the grace period freed, free hosts taken).
pub fn next_ledger(policies: &Policies, index: &PolicyIndex, clock: Clock) -> Ledger {
    let hosts = policies.host_inputs();
    let created = creation_seconds(&policies.objects());
    let ready: Vec<_> = index
        .entries()
        .filter_map(|(key, entry)| match entry {
            PolicyEntry::Ready(p) => Some((key, p.clone())),
            PolicyEntry::Invalid { .. } => None,
        })
        .collect();
    let mut host_claims = Vec::new();
    for (key, p) in &ready {
        let seniority = created.get(key).copied().unwrap_or(i64::MAX);
        let mut patterns: Vec<&str> = p.routes.iter().map(|(h, _)| h.as_str()).collect();
        patterns.sort_unstable();
        patterns.dedup();
        host_claims.extend(patterns.into_iter().map(|pattern| HostClaim {
            key,
            pattern,
            seniority,
        }));
    }
    resolve(
        &hosts.ledger,
        &host_claims,
        &hosts.rights(),
        Ties::ToSmallerName,
        Some(clock),
    )
    .ledger
}

/// This install's policies among `objects`, and how many of them are other classes'
/// (left to their installs: not indexed, no status, no Events).
fn of_class(
    objects: Vec<Arc<AccessPolicy>>,
    class: &InstallClass,
) -> (Vec<Arc<AccessPolicy>>, usize) {
    let seen = objects.len();
    let ours: Vec<_> = objects
        .into_iter()
        .filter(|o| class.owns(&o.spec))
        .collect();
    let others = seen - ours.len();
    (ours, others)
}

/// The watched objects: policies across the configured namespaces, the routing objects
/// that say who serves which host, and the host ledger.
#[derive(Clone)]
pub struct Policies {
    stores: Vec<Store<AccessPolicy>>,
    /// Which of the watched policies are this install's.
    class: Arc<InstallClass>,
    ingresses: Vec<Store<Ingress>>,
    routes: Vec<Store<DynamicObject>>,
    ledger: Store<ConfigMap>,
    pub hosts: Arc<HostsConfig>,
    /// Woken by every watch event and every new index: the status writer waits on it.
    pub changed: Arc<Notify>,
}

impl Policies {
    /// This install's policies (its class): the only ones it indexes and writes status and
    /// Events for.
    pub fn objects(&self) -> Vec<Arc<AccessPolicy>> {
        self.objects_and_others().0
    }

    /// [`Policies::objects`], and how many policies of other classes were left out.
    fn objects_and_others(&self) -> (Vec<Arc<AccessPolicy>>, usize) {
        let all = self.stores.iter().flat_map(|s| s.state()).collect();
        of_class(all, &self.class)
    }

    pub fn ingresses(&self) -> Vec<Arc<Ingress>> {
        self.ingresses.iter().flat_map(|s| s.state()).collect()
    }

    /// What each namespace serves and the ledger as recorded now.
    pub fn host_inputs(&self) -> HostInputs {
        let ingresses = self.ingresses();
        let routes: Vec<_> = self.routes.iter().flat_map(|s| s.state()).collect();
        let map = self.ledger.state().into_iter().next();
        let (ledger, unreadable) = ledger_from(map.as_deref());
        if !unreadable.is_empty() {
            tracing::warn!(configmap = %self.hosts.ledger_name, keys = ?unreadable, "host ledger entries unreadable; those hosts are settled afresh");
        }
        HostInputs {
            served: served_hosts(
                ingresses.iter().map(AsRef::as_ref),
                routes.iter().map(AsRef::as_ref),
            ),
            ledger,
            rules: self.hosts.rules.clone(),
        }
    }

    async fn wait_until_ready(&self) -> bool {
        for store in &self.stores {
            if store.wait_until_ready().await.is_err() {
                return false;
            }
        }
        for store in &self.ingresses {
            if store.wait_until_ready().await.is_err() {
                return false;
            }
        }
        for store in &self.routes {
            if store.wait_until_ready().await.is_err() {
                return false;
            }
        }
        self.ledger.wait_until_ready().await.is_ok()
    }
}

/// One `Api` per watched namespace, or one for all.
fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// Who is woken by a watch event: the index builder, and the status writer (cluster mode's
/// elected replica looks at what moved).
#[derive(Clone, Default)]
struct Wake {
    index: Arc<Notify>,
    writer: Arc<Notify>,
    /// Set by the watches host rights read (Ingresses, HTTPRoutes, the ledger), so the
    /// index builder re-reads them only when they moved.
    marks: Option<Arc<AtomicBool>>,
}

impl Wake {
    fn notify(&self) {
        if let Some(marks) = &self.marks {
            marks.store(true, Ordering::Release);
        }
        self.index.notify_one();
        self.writer.notify_one();
    }

    /// This wake, also setting `flag`.
    fn marking(&self, flag: &Arc<AtomicBool>) -> Wake {
        Wake {
            marks: Some(flag.clone()),
            ..self.clone()
        }
    }
}

/// Watches `api` into `writer`'s store in the background, waking `changed` on each event.
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    what: &'static str,
    changed: Wake,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let reader = writer.as_reader();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify(),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} watch failed; serving from the last known objects and retrying")
                }
            }
        }
    });
    reader
}

/// Gateway API's HTTPRoute, when its CRD is installed (checked once at start).
async fn http_route_resource(client: &Client) -> Option<ApiResource> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => Some(resource),
        Err(e) => {
            tracing::info!(error = %e, "HTTPRoute not served by the API server: host rights come from Ingresses only");
            None
        }
    }
}

/// Starts the watches and the task that keeps `state`'s index in step with them.
pub async fn start(
    client: Client,
    namespaces: &[String],
    sink: Arc<dyn PolicySink>,
    hosts: HostsConfig,
    class: InstallClass,
) -> Policies {
    let changed = Wake::default();
    let hosts_moved = Arc::new(AtomicBool::new(true));
    let watch = |what| {
        (
            watcher::Config::default(),
            what,
            changed.marking(&hosts_moved),
        )
    };
    let stores = apis::<AccessPolicy>(&client, namespaces)
        .into_iter()
        .map(|api| {
            let changed = changed.clone();
            spawn_watch(
                api,
                watcher::Config::default(),
                Writer::default(),
                "AccessPolicy",
                changed,
            )
        })
        .collect();
    let ingresses = apis::<Ingress>(&client, namespaces)
        .into_iter()
        .map(|api| {
            let (config, what, changed) = watch("Ingress");
            spawn_watch(api, config, Writer::default(), what, changed)
        })
        .collect();
    let mut routes = Vec::new();
    if let Some(resource) = http_route_resource(&client).await {
        let apis: Vec<Api<DynamicObject>> = if namespaces.is_empty() {
            vec![Api::all_with(client.clone(), &resource)]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced_with(client.clone(), ns, &resource))
                .collect()
        };
        for api in apis {
            let (config, what, changed) = watch("HTTPRoute");
            routes.push(spawn_watch(
                api,
                config,
                Writer::new(resource.clone()),
                what,
                changed,
            ));
        }
    }
    let (config, what, changed_ledger) = watch("host ledger ConfigMap");
    let ledger = spawn_watch(
        Api::<ConfigMap>::namespaced(client.clone(), &hosts.ledger_namespace),
        config.fields(&format!("metadata.name={}", hosts.ledger_name)),
        Writer::default(),
        what,
        changed_ledger,
    );
    let policies = Policies {
        stores,
        class: Arc::new(class),
        ingresses,
        routes,
        ledger,
        hosts: Arc::new(hosts),
        changed: changed.writer.clone(),
    };
    tokio::spawn(keep_index(policies.clone(), changed, hosts_moved, sink));
    policies
}

/// What the index holds of one policy object, by uid.
struct Indexed {
    key: PolicyKey,
    generation: Option<i64>,
}

/// Keeps the index in step with the watches: each round hands the updater only the policies
/// whose uid or generation moved (status writes, which the watch also reports, move
/// neither), and re-reads host rights only when their watches fired.
async fn keep_index(
    policies: Policies,
    changed: Wake,
    hosts_moved: Arc<AtomicBool>,
    sink: Arc<dyn PolicySink>,
) {
    if !policies.wait_until_ready().await {
        return;
    }
    let mut updater = IndexUpdater::default();
    let mut indexed: HashMap<String, Indexed> = HashMap::new();
    let mut hosts: Option<HostInputs> = None;
    let mut other_class_before = None;
    loop {
        let (objects, other_class) = policies.objects_and_others();
        let mut resettle = false;
        if hosts_moved.swap(false, Ordering::AcqRel) || hosts.is_none() {
            let now = policies.host_inputs();
            resettle = hosts
                .as_ref()
                .is_none_or(|h| h.served != now.served || h.ledger != now.ledger);
            hosts = Some(now);
        }
        let (changes, created) = policy_changes(&objects, &mut indexed);
        let hosts = hosts.as_ref().expect("read above");
        if !changes.is_empty() || resettle || other_class_before != Some(other_class) {
            let moved = changes.len();
            let index = updater.apply(
                changes,
                |key| created.get(key).copied().unwrap_or(i64::MAX),
                hosts.routing(),
                resettle,
            );
            tracing::info!(
                policies = index.len(),
                changed = moved,
                hosts_moved = resettle,
                class = %policies.class,
                ignored_other_class = other_class,
                "policy set updated from the API server"
            );
            sink.ignored_other_class(other_class);
            sink.install(index);
            changed.writer.notify_one();
            other_class_before = Some(other_class);
        }
        changed.index.notified().await;
        // Let a burst of events (a re-list, a multi-object apply) settle into one update.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index changes that bring `indexed` to `objects`: removals first (a policy deleted and
/// created again under its name is a removal, then a new entry), then each new or edited
/// policy compiled; and the creation second of each.
fn policy_changes(
    objects: &[Arc<AccessPolicy>],
    indexed: &mut HashMap<String, Indexed>,
) -> (Vec<Change>, HashMap<PolicyKey, i64>) {
    let uid = |obj: &AccessPolicy| {
        obj.metadata.uid.clone().unwrap_or_else(|| {
            format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
        })
    };
    let mut still = 0;
    let mut edited = Vec::new();
    for obj in objects {
        let known = match obj.metadata.uid.as_deref() {
            Some(u) => indexed.get(u),
            None => indexed.get(&uid(obj)),
        };
        match known {
            Some(i) if i.generation == obj.metadata.generation => still += 1,
            Some(_) => {
                still += 1;
                edited.push(obj);
            }
            None => edited.push(obj),
        }
    }
    let mut changes = Vec::new();
    if still < indexed.len() {
        let present: HashSet<String> = objects.iter().map(|o| uid(o)).collect();
        indexed.retain(|uid, i| {
            let keep = present.contains(uid);
            if !keep {
                changes.push((i.key.clone(), None));
            }
            keep
        });
    }
    let mut created = HashMap::with_capacity(edited.len());
    for obj in edited {
        let (key, entry) = entry_of(obj);
        indexed.insert(
            uid(obj),
            Indexed {
                key: key.clone(),
                generation: obj.metadata.generation,
            },
        );
        created.insert(key.clone(), created_second(obj));
        changes.push((key, Some(entry)));
    }
    (changes, created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccessPolicySpec, IssuerSpec};
    use crate::core::reason::Reason;

    fn policy(name: &str, class: Option<&str>) -> Arc<AccessPolicy> {
        let mut p = AccessPolicy::new(
            name,
            AccessPolicySpec {
                class_name: class.map(str::to_owned),
                issuer: IssuerSpec {
                    team_domain: Some("t.cloudflareaccess.com".into()),
                    ..Default::default()
                },
                audiences: vec!["a".repeat(64)],
                ..Default::default()
            },
        );
        p.metadata.namespace = Some("apps".into());
        Arc::new(p)
    }

    fn no_hosts() -> HostInputs {
        HostInputs {
            served: ServedHosts::default(),
            ledger: Ledger::new(),
            rules: None,
        }
    }

    /// Another install's policy never reaches the index: by name it is unknown here, as if
    /// it did not exist, and it is counted as ignored.
    #[test]
    fn policies_of_other_classes_are_left_out_of_the_index() {
        let watched = vec![
            policy("unclassed", None),
            policy("blue", Some("blue")),
            policy("default", Some("accessgate")),
        ];
        let (ours, others) = of_class(watched.clone(), &InstallClass::default());
        assert_eq!(others, 1);
        let index = index_from(&ours, &no_hosts());
        assert!(index.by_name("apps", "unclassed").is_ok());
        assert!(index.by_name("apps", "default").is_ok());
        assert_eq!(
            index.by_name("apps", "blue").err(),
            Some(Reason::PolicyUnknown)
        );

        let (ours, others) = of_class(watched, &InstallClass::new("blue", None));
        assert_eq!(others, 2);
        let index = index_from(&ours, &no_hosts());
        assert!(index.by_name("apps", "blue").is_ok());
        for theirs in ["unclassed", "default"] {
            assert_eq!(
                index.by_name("apps", theirs).err(),
                Some(Reason::PolicyUnknown)
            );
        }
    }
}
