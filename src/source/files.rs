//! The standalone source: every AccessPolicy manifest in a directory (`*.yaml`, `*.yml`,
//! `*.json`; multi-document; other kinds skipped, as `kubectl apply -f DIR` files often mix
//! them), reloaded when the directory changes.
//!
//! The set is all-or-nothing: if any file or policy is invalid the previous good set stays (at
//! start-up there is none, so `serve` refuses to start). Installs can share a directory: each
//! validates only its class's policies ([`InstallClass`]), but every `className` must be
//! well-formed, since a malformed one would be nobody's. See docs/operating.md, "Standalone mode
//! (no cluster)".

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use serde::Deserialize;

use super::PolicySink;
use super::class::InstallClass;
use crate::api::AccessPolicy;
use crate::core::hosts::{Clock, HostRights, Ties};
use crate::core::index::{
    Change, HostRouting, IndexUpdater, NamespaceHosts, PolicyEntry, PolicyIndex,
};
use crate::core::policy::{PolicyKey, check_class_name, compile};
use crate::metrics::Metrics;
use crate::metrics::ReloadLabels;

const API_VERSION: &str = "accessgate.dev/v1alpha1";
const KIND: &str = "AccessPolicy";

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct LoadError {
    pub file: String,
    pub message: String,
}

fn load_err(file: &Path, message: impl Into<String>) -> LoadError {
    named_err(&file.display().to_string(), message)
}

fn named_err(file_name: &str, message: impl Into<String>) -> LoadError {
    LoadError {
        file: file_name.to_owned(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// File mode's index keeper and host ledger, in memory: who holds which host, and which
/// namespace claimed hosts first. Without `--host-claims` that first namespace may claim any
/// host and every other namespace needs a rule; claims first seen together tie (nobody wins).
/// A holder keeps its hosts through reloads that drop them until `grace` has passed (checked
/// at each reload); a restart starts a new ledger.
#[derive(Debug)]
pub struct HostLedger {
    updater: IndexUpdater,
    first_namespace: Option<String>,
    /// The operator's namespace → host patterns, if any.
    rules: Option<Arc<NamespaceHosts>>,
    grace: Duration,
}

impl HostLedger {
    pub fn new(rules: Option<Arc<NamespaceHosts>>, grace: Duration) -> Self {
        HostLedger {
            updater: IndexUpdater::default(),
            first_namespace: None,
            rules,
            grace,
        }
    }

    /// The index with `changes` applied and their claims recorded.
    pub fn apply(&mut self, changes: Vec<Change>) -> PolicyIndex {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.apply_at(changes, now)
    }

    /// The index of a freshly loaded whole set (what is not in `entries` is gone).
    pub fn index(&mut self, entries: Vec<(PolicyKey, PolicyEntry)>) -> PolicyIndex {
        let changes = self.whole_set(entries);
        self.apply(changes)
    }

    fn whole_set(&self, entries: Vec<(PolicyKey, PolicyEntry)>) -> Vec<Change> {
        let present: HashSet<&PolicyKey> = entries.iter().map(|(k, _)| k).collect();
        let mut changes: Vec<_> = (self.updater.index().entries())
            .filter(|(k, _)| !present.contains(k))
            .map(|(k, _)| (k, None))
            .collect();
        changes.extend(entries.into_iter().map(|(k, e)| (k, Some(e))));
        changes
    }

    fn apply_at(&mut self, changes: Vec<Change>, now: i64) -> PolicyIndex {
        self.updater.stage(changes, |_| 0);
        let mut resettle = false;
        if self.rules.is_none() {
            let first = self.first_namespace_of(now);
            resettle |= first != self.first_namespace;
            self.first_namespace = first;
        }
        let rights = match (&self.rules, &self.first_namespace) {
            (Some(rules), _) => HostRights::Rules(rules),
            (None, first) => HostRights::FirstNamespace(first.as_deref()),
        };
        let ledger = self.updater.index().shared_ledger();
        // An absent holder's hosts are freed by time, not by a change: look again each reload.
        resettle |= ledger.values().any(|h| h.absent_since.is_some());
        self.updater.settle(
            HostRouting {
                ledger: &ledger,
                rights,
                ties: Ties::Nobody,
                clock: Some(Clock {
                    now,
                    grace: self.grace.as_secs() as i64,
                }),
            },
            resettle,
        )
    }

    /// The namespace still holding hosts (absent for less than the grace period), else the
    /// only namespace claiming any.
    fn first_namespace_of(&self, now: i64) -> Option<String> {
        let grace = self.grace.as_secs() as i64;
        let holding = self.updater.index().ledger().values().find(|h| {
            h.absent_since
                .is_none_or(|since| now.saturating_sub(since) < grace)
        });
        if let Some(holding) = holding {
            return Some(holding.namespace.clone());
        }
        let mut claiming = self.updater.namespaces_claiming_hosts();
        let first = claiming.next()?;
        claiming.all(|ns| ns == first).then(|| first.to_owned())
    }
}

/// Reads and validates every policy in `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<(PolicyKey, PolicyEntry)>, LoadError> {
    load_dir_cached(dir, &mut ParsedFiles::default())
}

/// The files of `dir` that hold policies, in name order.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| load_err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// What each file held at the last load, so a reload reads, hashes and parses again only
/// what changed: parsing YAML is most of a reload's cost, and a change usually touches one
/// file of many. Parsed for one install's class ([`Default`]: the default class).
#[derive(Default)]
pub struct ParsedFiles {
    files: HashMap<PathBuf, ParsedFile>,
    /// Which file defines each policy.
    owners: HashMap<PolicyKey, PathBuf>,
    class: InstallClass,
}

#[derive(Clone)]
struct ParsedFile {
    stat: Stat,
    /// SHA-256 of the text, not the text: 10,000 policies are megabytes.
    digest: Digest,
    entries: ClassEntries,
}

/// A file's identity and size and when it was last written, as `stat` tells (through
/// symlinks, so a ConfigMap's `..data` swap shows as new files). Equal stats are trusted
/// only for a file written well before it was looked at: a write in the same clock tick as
/// the look could leave them equal (git's "racy clean" case), so such a file is read again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    /// When it was looked at.
    seen: SystemTime,
}

impl Stat {
    fn of(file: &Path) -> Option<Stat> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(file).ok()?;
        Some(Stat {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            seen: SystemTime::now(),
        })
    }

    /// Whether the file is surely as it was when `before` was taken.
    fn unchanged_since(&self, before: &Stat) -> bool {
        const RACY: Duration = Duration::from_secs(2);
        let written = std::time::UNIX_EPOCH
            + Duration::new(before.mtime.0.max(0) as u64, before.mtime.1 as u32);
        (self.dev, self.ino, self.len, self.mtime)
            == (before.dev, before.ino, before.len, before.mtime)
            && before.seen.duration_since(written).is_ok_and(|d| d > RACY)
    }
}

impl ParsedFiles {
    /// An empty cache for an install of `class`.
    pub fn for_class(class: InstallClass) -> Self {
        ParsedFiles {
            class,
            ..Default::default()
        }
    }

    /// Policies of other classes in the files last loaded.
    pub fn other_class(&self) -> usize {
        self.files.values().map(|f| f.entries.other_class).sum()
    }

    /// Every policy last loaded.
    fn entries(&self) -> Vec<(PolicyKey, PolicyEntry)> {
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        files
            .into_iter()
            .flat_map(|(_, f)| f.entries.entries.iter().cloned())
            .collect()
    }

    /// Whether `dir` still holds exactly the files and texts last loaded.
    fn is_current(&self, dir: &Path) -> bool {
        let Ok(files) = policy_files(dir) else {
            return false;
        };
        files.len() == self.files.len()
            && files.iter().all(|f| {
                self.files.get(f).is_some_and(|parsed| {
                    std::fs::read(f).is_ok_and(|now| digest_of(&now) == parsed.digest)
                })
            })
    }
}

/// [`load_dir`], parsing again only the files whose text differs from what `parsed` holds
/// (which it then holds instead). A failed load leaves `parsed` as it was.
pub fn load_dir_cached(
    dir: &Path,
    parsed: &mut ParsedFiles,
) -> Result<Vec<(PolicyKey, PolicyEntry)>, LoadError> {
    load_changes(dir, parsed)?;
    Ok(parsed.entries())
}

/// What changed in `dir` since `parsed` was filled: each policy added or edited with its
/// entry, each one gone with `None`. Files whose stat is unchanged are not read; files read
/// again whose text is unchanged are not parsed. All or nothing: on an error `parsed` is as
/// it was.
pub fn load_changes(dir: &Path, parsed: &mut ParsedFiles) -> Result<Vec<Change>, LoadError> {
    let listed = policy_files(dir)?;
    let mut moved: Vec<(PathBuf, Option<ParsedFile>)> = Vec::new();
    let mut restat: Vec<(PathBuf, Stat)> = Vec::new();
    for file in &listed {
        let stat = Stat::of(file).ok_or_else(|| load_err(file, "cannot stat"))?;
        let before = parsed.files.get(file);
        if before.is_some_and(|b| stat.unchanged_since(&b.stat)) {
            continue;
        }
        let text = std::fs::read_to_string(file).map_err(|e| load_err(file, e.to_string()))?;
        let digest = digest_of(text.as_bytes());
        match before {
            Some(b) if b.digest == digest => restat.push((file.clone(), stat)),
            _ => {
                let entries =
                    parse_class_manifests(&file.display().to_string(), &text, &parsed.class)?;
                moved.push((
                    file.clone(),
                    Some(ParsedFile {
                        stat,
                        digest,
                        entries,
                    }),
                ));
            }
        }
    }
    let listed: HashSet<&PathBuf> = listed.iter().collect();
    moved.extend(
        parsed
            .files
            .keys()
            .filter(|f| !listed.contains(f))
            .map(|f| (f.clone(), None)),
    );

    // Who defines what once the moved files are taken as they are now.
    let mut released: HashSet<&PolicyKey> = HashSet::new();
    for (file, _) in &moved {
        if let Some(before) = parsed.files.get(file) {
            released.extend(before.entries.entries.iter().map(|(k, _)| k));
        }
    }
    let mut claimed: HashMap<&PolicyKey, &PathBuf> = HashMap::new();
    for (file, now) in &moved {
        let mut in_file = HashSet::new();
        for (key, _) in now.iter().flat_map(|f| &f.entries.entries) {
            let unchanged_owner = || {
                parsed
                    .owners
                    .get(key)
                    .filter(|owner| *owner != file && !released.contains(key))
            };
            let first = if in_file.insert(key) {
                claimed.insert(key, file).or_else(unchanged_owner)
            } else {
                Some(file)
            };
            if let Some(first) = first {
                return Err(load_err(
                    file,
                    format!("policy {key} is also defined in {}", first.display()),
                ));
            }
        }
    }

    // A policy still defined (in its file or another) is an edit, not a removal and an
    // addition: every old definition is dropped before the new ones are taken.
    let mut gone: Vec<PolicyKey> = Vec::new();
    for (file, _) in &moved {
        if let Some(before) = parsed.files.remove(file) {
            for (key, _) in before.entries.entries {
                parsed.owners.remove(&key);
                gone.push(key);
            }
        }
    }
    let mut added = Vec::new();
    for (file, now) in moved {
        if let Some(now) = now {
            for (key, entry) in &now.entries.entries {
                parsed.owners.insert(key.clone(), file.clone());
                added.push((key.clone(), Some(entry.clone())));
            }
            parsed.files.insert(file, now);
        }
    }
    let mut changes: Vec<Change> = gone
        .into_iter()
        .filter(|key| !parsed.owners.contains_key(key))
        .map(|key| (key, None))
        .collect();
    for (file, stat) in restat {
        if let Some(f) = parsed.files.get_mut(&file) {
            f.stat = stat;
        }
    }
    changes.extend(added);
    Ok(changes)
}

type Digest = [u8; 32];

fn digest_of(bytes: &[u8]) -> Digest {
    let mut d = [0u8; 32];
    d.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    d
}

/// Parses and validates the manifests in `text` (the contents of the file `file_name`, which
/// only names the file in errors): every `AccessPolicy` document, compiled, whatever its
/// class; other kinds skipped.
pub fn parse_manifests(
    file_name: &str,
    text: &str,
) -> Result<Vec<(PolicyKey, PolicyEntry)>, LoadError> {
    parse_documents(file_name, text, None).map(|parsed| parsed.entries)
}

/// One file's policies for one install: those of its class, compiled, and how many of
/// other classes were passed over.
#[derive(Clone, Debug, Default)]
pub struct ClassEntries {
    pub entries: Vec<(PolicyKey, PolicyEntry)>,
    pub other_class: usize,
}

/// [`parse_manifests`] for an install of `class`: other classes' policies are counted, not
/// compiled.
pub fn parse_class_manifests(
    file_name: &str,
    text: &str,
    class: &InstallClass,
) -> Result<ClassEntries, LoadError> {
    parse_documents(file_name, text, Some(class))
}

/// The policies of `text`, of `class` when one is given.
fn parse_documents(
    file_name: &str,
    text: &str,
    class: Option<&InstallClass>,
) -> Result<ClassEntries, LoadError> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| named_err(file_name, format!("not valid YAML: {e}")))?;
    let mut out = ClassEntries::default();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let at = |msg: String| named_err(file_name, format!("document {}: {msg}", i + 1));
        let meta: TypeMeta = serde_json::from_value(doc.clone()).map_err(|e| at(e.to_string()))?;
        if meta.kind != KIND {
            continue;
        }
        if meta.api_version != API_VERSION {
            return Err(at(format!(
                "apiVersion {:?} is not {API_VERSION}",
                meta.api_version
            )));
        }
        let policy: AccessPolicy = serde_path_to_error::deserialize(doc)
            .map_err(|e| at(format!("{}: {}", e.path(), e.inner())))?;
        let name = policy
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| at("metadata.name is required".into()))?;
        let namespace = policy
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = PolicyKey::new(namespace, name);
        check_class_name(&policy.spec).map_err(|e| at(format!("policy {key}: {e}")))?;
        if class.is_some_and(|c| !c.owns(&policy.spec)) {
            out.other_class += 1;
            continue;
        }
        let compiled = compile(key.clone(), policy.metadata.generation, &policy.spec)
            .map_err(|e| at(format!("policy {key}: {e}")))?;
        out.entries
            .push((key, PolicyEntry::Ready(Arc::new(compiled))));
    }
    Ok(out)
}

/// What a reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// This install's policies.
    pub policies: usize,
    /// Policies of other classes in the directory, left to their installs.
    pub ignored_other_class: usize,
}

/// Loads `dir` and installs it, parsing again only the files that changed since `parsed`
/// was filled (see [`load_dir_cached`]); the caller decides what a failure means.
pub fn reload(
    dir: &Path,
    sink: &dyn PolicySink,
    metrics: &Metrics,
    ledger: &mut HostLedger,
    parsed: &mut ParsedFiles,
) -> Result<Reloaded, LoadError> {
    // Counted once the outcome is in force, so a reader of the metric sees the new set.
    let count = |result| {
        metrics
            .policy_reloads
            .get_or_create(&ReloadLabels { result })
            .inc()
    };
    let changes = load_changes(dir, parsed).inspect_err(|_| {
        count("error");
    })?;
    let index = ledger.apply(changes);
    let reloaded = Reloaded {
        policies: index.len(),
        ignored_other_class: parsed.other_class(),
    };
    sink.ignored_other_class(reloaded.ignored_other_class);
    sink.install(index);
    count("success");
    Ok(reloaded)
}

/// Whether a watcher event can mean the directory's contents changed. Opening and reading a
/// file raises Access events (notify watches IN_OPEN), and every reload reads every file:
/// reacting to those would reload forever.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `dir` and reloads on every change, debounced. Runs until the process ends.
/// A bad reload logs the file and field and keeps the set in force. `parsed` is what the
/// set in force was loaded from: a change made before the watch began is caught up at once.
pub async fn watch(
    dir: PathBuf,
    sink: Arc<dyn PolicySink>,
    metrics: Arc<Metrics>,
    mut ledger: HostLedger,
    mut parsed: ParsedFiles,
) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let changed = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| is_change(&e.kind)) {
            let _ = changed.send(());
        }
    })?;
    // Watching the directory (not the files) also sees ConfigMap-style symlink swaps.
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    if !parsed.is_current(&dir) {
        let _ = tx.send(());
    }
    // Reloading is synchronous work (hundreds of ms for thousands of policies): it runs on the
    // blocking pool, never on a runtime worker that requests are waiting for.
    while rx.recv().await.is_some() {
        // Editors write in several steps; settle before reading.
        tokio::time::sleep(Duration::from_millis(150)).await;
        while rx.try_recv().is_ok() {}
        let (d, s, m) = (dir.clone(), sink.clone(), metrics.clone());
        let (result, c, p) = tokio::task::spawn_blocking(move || {
            let result = reload(&d, s.as_ref(), &m, &mut ledger, &mut parsed);
            (result, ledger, parsed)
        })
        .await
        .expect("reload task");
        (ledger, parsed) = (c, p);
        match result {
            Ok(r) => tracing::info!(
                dir = %dir.display(),
                policies = r.policies,
                class = %parsed.class,
                ignored_other_class = r.ignored_other_class,
                "policies reloaded"
            ),
            Err(e) => {
                tracing::error!(file = %e.file, error = %e.message, "policy reload failed; keeping the previous set")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hosts::HostRefusal;

    const GOOD: &str = r#"
apiVersion: accessgate.dev/v1alpha1
kind: AccessPolicy
metadata: { name: grafana, namespace: monitoring }
spec:
  issuer: { teamDomain: myteam.cloudflareaccess.com }
  audiences: ["4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2"]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: grafana }
---
apiVersion: accessgate.dev/v1alpha1
kind: AccessPolicy
metadata: { name: other }
spec:
  issuer: { url: "http://127.0.0.1:9400", jwksUri: "http://127.0.0.1:9400/cdn-cgi/access/certs" }
  audiences: [my-app]
"#;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(d.path().join(name), body).unwrap();
        }
        d
    }

    #[test]
    fn loads_multi_document_files_and_skips_other_kinds() {
        let d = dir_with(&[("p.yaml", GOOD), ("README.md", "not yaml: [")]);
        let idx = PolicyIndex::build(load_dir(d.path()).unwrap());
        assert_eq!(idx.len(), 2);
        assert!(idx.by_name("monitoring", "grafana").is_ok());
        assert!(idx.by_name("default", "other").is_ok());
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let bad = GOOD.replace(
            "audiences: [my-app]",
            "audiences: [my-app]\n  algorithms: [HS256]",
        );
        let d = dir_with(&[("p.yaml", &bad)]);
        let e = load_dir(d.path()).unwrap_err();
        assert!(e.file.ends_with("p.yaml"));
        assert!(e.message.contains("spec.algorithms"), "{}", e.message);

        let bad = GOOD.replace(
            "[\"4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2\"]",
            "[nope]",
        );
        let e = load_dir(dir_with(&[("p.yaml", &bad)]).path()).unwrap_err();
        assert!(e.message.contains("spec.audiences[0]"), "{}", e.message);
    }

    #[test]
    fn duplicate_policies_across_files_are_refused() {
        let d = dir_with(&[("a.yaml", GOOD), ("b.yaml", GOOD)]);
        assert!(
            load_dir(d.path())
                .unwrap_err()
                .message
                .contains("also defined")
        );
    }

    #[test]
    fn wrong_api_version_is_refused() {
        let bad = GOOD.replacen("accessgate.dev/v1alpha1", "accessgate.dev/v1", 1);
        assert!(
            load_dir(dir_with(&[("p.yaml", &bad)]).path())
                .unwrap_err()
                .message
                .contains("apiVersion")
        );
    }

    #[test]
    fn broken_yaml_is_refused() {
        assert!(
            load_dir(dir_with(&[("p.yaml", "a: [")]).path())
                .unwrap_err()
                .message
                .contains("YAML")
        );
    }

    fn classed(name: &str, class: &str) -> String {
        format!(
            "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: {name}, namespace: apps }}\nspec:\n  className: {class}\n  issuer: {{ teamDomain: t.cloudflareaccess.com }}\n  audiences: [\"{}\"]\n",
            "a".repeat(64)
        )
    }

    /// Two installs sharing one directory: each loads its own class (the default install
    /// also the unclassed policies) and counts the other's.
    #[test]
    fn installs_sharing_a_directory_load_only_their_class() {
        let d = dir_with(&[("p.yaml", GOOD), ("blue.yaml", &classed("web", "blue"))]);
        let mut default = ParsedFiles::default();
        let idx = PolicyIndex::build(load_dir_cached(d.path(), &mut default).unwrap());
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.by_name("apps", "web").err(),
            Some(crate::core::reason::Reason::PolicyUnknown)
        );
        assert_eq!(default.other_class(), 1);

        let mut blue = ParsedFiles::for_class(InstallClass::new("blue", None));
        let idx = PolicyIndex::build(load_dir_cached(d.path(), &mut blue).unwrap());
        assert_eq!(idx.len(), 1);
        assert!(idx.by_name("apps", "web").is_ok());
        assert!(idx.by_name("monitoring", "grafana").is_err());
        assert_eq!(blue.other_class(), 2);
    }

    /// Another install's policy is its install's to judge; a malformed className would be
    /// nobody's, so every install refuses it.
    #[test]
    fn only_the_class_name_of_another_class_is_checked() {
        let broken_blue = classed("web", "blue").replace("[\"", "[\"not-a-tag-");
        let d = dir_with(&[("p.yaml", GOOD), ("blue.yaml", &broken_blue)]);
        let mut default = ParsedFiles::default();
        assert_eq!(load_dir_cached(d.path(), &mut default).unwrap().len(), 2);
        let mut blue = ParsedFiles::for_class(InstallClass::new("blue", None));
        let e = load_dir_cached(d.path(), &mut blue).unwrap_err();
        assert!(e.message.contains("spec.audiences[0]"), "{}", e.message);

        let d = dir_with(&[("p.yaml", GOOD), ("x.yaml", &classed("web", "Blue"))]);
        let e = load_dir(d.path()).unwrap_err();
        assert!(e.file.ends_with("x.yaml"));
        assert!(e.message.contains("spec.className"), "{}", e.message);
    }

    fn claiming(ns: &str, host: &str) -> String {
        format!(
            "apiVersion: accessgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: p, namespace: {ns} }}\nspec:\n  issuer: {{ teamDomain: t.cloudflareaccess.com }}\n  audiences: [\"{}\"]\n  hosts: [{host}]\n",
            "a".repeat(64)
        )
    }

    fn owner(idx: &PolicyIndex) -> Option<String> {
        idx.by_route("admin.example.com", "/")
            .ok()
            .map(|p| p.key.namespace.clone())
    }

    fn ledger() -> HostLedger {
        HostLedger::new(None, Duration::from_secs(100))
    }

    #[test]
    fn the_first_namespace_keeps_its_hosts_and_a_second_needs_a_rule() {
        let d = dir_with(&[("victim.yaml", &claiming("victim", "admin.example.com"))]);
        let mut hosts = ledger();
        let mut parsed = ParsedFiles::default();
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 0);
        assert_eq!(owner(&idx).as_deref(), Some("victim"));

        std::fs::write(
            d.path().join("tenant.yaml"),
            claiming("tenant", "admin.example.com"),
        )
        .unwrap();
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 1);
        assert_eq!(owner(&idx).as_deref(), Some("victim"));
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("tenant", "p")),
            &[("admin.example.com".to_owned(), HostRefusal::NotAllowed)]
        );

        // The owner goes away for one reload and comes back: it still holds the host.
        std::fs::remove_file(d.path().join("victim.yaml")).unwrap();
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 2);
        assert_eq!(
            owner(&idx),
            None,
            "held for the absent owner, not handed over"
        );
        std::fs::write(
            d.path().join("victim.yaml"),
            claiming("victim", "admin.example.com"),
        )
        .unwrap();
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 3);
        assert_eq!(owner(&idx).as_deref(), Some("victim"));

        // Gone for longer than the grace period: the host and the first-namespace right are
        // free, and the namespace left claiming takes them.
        std::fs::remove_file(d.path().join("victim.yaml")).unwrap();
        hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 10);
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 200);
        assert_eq!(owner(&idx).as_deref(), Some("tenant"));
    }

    #[test]
    fn claims_from_two_namespaces_at_start_up_are_refused_for_both() {
        let d = dir_with(&[
            ("a.yaml", &claiming("a", "admin.example.com")),
            ("b.yaml", &claiming("b", "admin.example.com")),
        ]);
        let mut hosts = ledger();
        let mut parsed = ParsedFiles::default();
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 0);
        assert_eq!(owner(&idx), None);
        std::fs::remove_file(d.path().join("b.yaml")).unwrap();
        let idx = hosts.apply_at(load_changes(d.path(), &mut parsed).unwrap(), 1);
        assert_eq!(owner(&idx).as_deref(), Some("a"));
    }

    /// A reload reports what changed: an edit as the policy's new entry (never a removal and
    /// an addition), a policy moved to another file as an edit, a removed file's policies as
    /// gone; a duplicate across a changed and an unchanged file is refused and changes
    /// nothing.
    #[test]
    fn reloads_report_only_what_changed() {
        let names = |changes: &[Change]| -> Vec<(String, bool)> {
            let mut v: Vec<_> = changes
                .iter()
                .map(|(k, e)| (k.to_string(), e.is_some()))
                .collect();
            v.sort();
            v
        };
        let d = dir_with(&[
            ("a.yaml", &classed("one", "accessgate")),
            ("b.yaml", &classed("two", "accessgate")),
        ]);
        let mut parsed = ParsedFiles::default();
        assert_eq!(load_changes(d.path(), &mut parsed).unwrap().len(), 2);
        assert!(load_changes(d.path(), &mut parsed).unwrap().is_empty());

        let edited =
            classed("one", "accessgate").replace("className", "hosts: [x.example]\n  className");
        std::fs::write(d.path().join("a.yaml"), &edited).unwrap();
        let changes = load_changes(d.path(), &mut parsed).unwrap();
        assert_eq!(names(&changes), [("apps/one".to_owned(), true)]);

        std::fs::remove_file(d.path().join("a.yaml")).unwrap();
        std::fs::write(d.path().join("c.yaml"), &edited).unwrap();
        let changes = load_changes(d.path(), &mut parsed).unwrap();
        assert_eq!(
            names(&changes),
            [("apps/one".to_owned(), true)],
            "moved, not gone"
        );

        std::fs::write(d.path().join("d.yaml"), classed("two", "accessgate")).unwrap();
        let e = load_changes(d.path(), &mut parsed).unwrap_err();
        assert!(e.message.contains("also defined in"), "{}", e.message);
        assert!(e.message.contains("b.yaml"), "{}", e.message);
        std::fs::remove_file(d.path().join("d.yaml")).unwrap();
        std::fs::remove_file(d.path().join("b.yaml")).unwrap();
        let changes = load_changes(d.path(), &mut parsed).unwrap();
        assert_eq!(names(&changes), [("apps/two".to_owned(), false)]);
        assert_eq!(parsed.entries().len(), 1);
    }
}
