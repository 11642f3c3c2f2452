//! The standalone source: every AccessPolicy manifest in a directory (`*.yaml`, `*.yml`,
//! `*.json`; multi-document; other kinds skipped, as `kubectl apply -f DIR` files often mix
//! them), reloaded when the directory changes.
//!
//! The set is all-or-nothing: if any file or policy is invalid the previous good set stays
//! in force and the error names the file and field. At start-up there is no previous set,
//! so `serve` refuses to start.
//!
//! Installs can share a directory: each loads only its class's policies ([`InstallClass`]).
//! Another class's policy is not validated here (its install judges it), except that its
//! `className` must be well-formed: a malformed one would be nobody's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Deserialize;

use super::PolicySink;
use super::class::InstallClass;
use crate::core::hosts::{Clock, HostRights, Ledger, Ties};
use crate::core::index::{Entry, HostRouting, NamespaceHosts, PolicyIndex};
use crate::core::policy::{AccessPolicy, PolicyKey, check_class_name, compile};
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

/// File mode's host ledger, in memory: who holds which host, and which namespace claimed
/// hosts first. Without `--host-claims` that first namespace may claim any host and every
/// other namespace needs a rule; claims first seen together tie (nobody wins). A holder
/// keeps its hosts through reloads that drop them until `grace` has passed (checked at each
/// reload); a restart starts a new ledger.
#[derive(Debug)]
pub struct HostLedger {
    ledger: Ledger,
    first_namespace: Option<String>,
    /// The operator's namespace → host patterns, if any.
    rules: Option<Arc<NamespaceHosts>>,
    grace: Duration,
}

impl HostLedger {
    pub fn new(rules: Option<Arc<NamespaceHosts>>, grace: Duration) -> Self {
        HostLedger {
            ledger: Ledger::new(),
            first_namespace: None,
            rules,
            grace,
        }
    }

    /// The index of a freshly loaded set, with this set's claims recorded.
    pub fn index(&mut self, entries: Vec<(PolicyKey, Entry)>) -> PolicyIndex {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.index_at(entries, now)
    }

    fn index_at(&mut self, entries: Vec<(PolicyKey, Entry)>, now: i64) -> PolicyIndex {
        if self.rules.is_none() {
            self.first_namespace = self.first_namespace_of(&entries, now);
        }
        let rights = match (&self.rules, &self.first_namespace) {
            (Some(rules), _) => HostRights::Rules(rules),
            (None, first) => HostRights::FirstNamespace(first.as_deref()),
        };
        let index = PolicyIndex::build_with(
            entries,
            |_| 0,
            HostRouting {
                ledger: &self.ledger,
                rights,
                ties: Ties::Nobody,
                clock: Some(Clock {
                    now,
                    grace: self.grace.as_secs() as i64,
                }),
            },
        );
        self.ledger = index.ledger().clone();
        index
    }

    /// The namespace still holding hosts (absent for less than the grace period), else the
    /// only namespace claiming any.
    fn first_namespace_of(&self, entries: &[(PolicyKey, Entry)], now: i64) -> Option<String> {
        let grace = self.grace.as_secs() as i64;
        let holding = self.ledger.values().find(|h| {
            h.absent_since
                .is_none_or(|since| now.saturating_sub(since) < grace)
        });
        if let Some(holding) = holding {
            return Some(holding.namespace.clone());
        }
        let mut claiming = entries.iter().filter_map(|(key, entry)| match entry {
            Entry::Ready(p) if !p.routes.is_empty() => Some(key.namespace.as_str()),
            _ => None,
        });
        let first = claiming.next()?;
        claiming.all(|ns| ns == first).then(|| first.to_owned())
    }
}

/// Reads and validates every policy in `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<(PolicyKey, Entry)>, LoadError> {
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

/// Each file's digest (SHA-256 of its text, not the text: 10,000 policies are megabytes) and
/// what it parsed to, from the previous load: parsing YAML is most of a
/// reload's cost, and a change usually touches one file of many. Parsed for one install's
/// class ([`Default`]: the default class).
#[derive(Default)]
pub struct ParsedFiles {
    files: HashMap<PathBuf, (Digest, ClassEntries)>,
    class: InstallClass,
}

impl ParsedFiles {
    /// An empty cache for an install of `class`.
    pub fn for_class(class: InstallClass) -> Self {
        ParsedFiles {
            files: HashMap::new(),
            class,
        }
    }

    /// Policies of other classes in the files last loaded.
    pub fn other_class(&self) -> usize {
        self.files.values().map(|(_, f)| f.other_class).sum()
    }

    /// Whether `dir` still holds exactly the files and texts last loaded.
    fn is_current(&self, dir: &Path) -> bool {
        let Ok(files) = policy_files(dir) else {
            return false;
        };
        files.len() == self.files.len()
            && files.iter().all(|f| {
                self.files.get(f).is_some_and(|(digest, _)| {
                    std::fs::read(f).is_ok_and(|now| digest_of(&now) == *digest)
                })
            })
    }
}

/// [`load_dir`], parsing again only the files whose text differs from what `parsed` holds
/// (which it then holds instead). A failed load leaves `parsed` as it was.
pub fn load_dir_cached(
    dir: &Path,
    parsed: &mut ParsedFiles,
) -> Result<Vec<(PolicyKey, Entry)>, LoadError> {
    let mut seen: HashMap<PolicyKey, PathBuf> = HashMap::new();
    let mut entries = Vec::new();
    let mut now = HashMap::new();
    for file in policy_files(dir)? {
        let text = std::fs::read_to_string(&file).map_err(|e| load_err(&file, e.to_string()))?;
        let digest = digest_of(text.as_bytes());
        let file_entries = match parsed.files.get(&file) {
            Some((before, file_entries)) if *before == digest => file_entries.clone(),
            _ => parse_class_manifests(&file.display().to_string(), &text, &parsed.class)?,
        };
        for (key, entry) in &file_entries.entries {
            if let Some(first) = seen.insert(key.clone(), file.clone()) {
                return Err(load_err(
                    &file,
                    format!("policy {key} is also defined in {}", first.display()),
                ));
            }
            entries.push((key.clone(), entry.clone()));
        }
        now.insert(file, (digest, file_entries));
    }
    parsed.files = now;
    Ok(entries)
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
pub fn parse_manifests(file_name: &str, text: &str) -> Result<Vec<(PolicyKey, Entry)>, LoadError> {
    parse_documents(file_name, text, None).map(|parsed| parsed.entries)
}

/// One file's policies for one install: those of its class, compiled, and how many of
/// other classes were passed over.
#[derive(Clone, Debug, Default)]
pub struct ClassEntries {
    pub entries: Vec<(PolicyKey, Entry)>,
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
        out.entries.push((key, Entry::Ready(Arc::new(compiled))));
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
    let entries = load_dir_cached(dir, parsed).inspect_err(|_| {
        count("error");
    })?;
    let index = ledger.index(entries);
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
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 0);
        assert_eq!(owner(&idx).as_deref(), Some("victim"));

        std::fs::write(
            d.path().join("tenant.yaml"),
            claiming("tenant", "admin.example.com"),
        )
        .unwrap();
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 1);
        assert_eq!(owner(&idx).as_deref(), Some("victim"));
        assert_eq!(
            idx.refused_hosts(&PolicyKey::new("tenant", "p")),
            &[("admin.example.com".to_owned(), HostRefusal::NotAllowed)]
        );

        // The owner goes away for one reload and comes back: it still holds the host.
        std::fs::remove_file(d.path().join("victim.yaml")).unwrap();
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 2);
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
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 3);
        assert_eq!(owner(&idx).as_deref(), Some("victim"));

        // Gone for longer than the grace period: the host and the first-namespace right are
        // free, and the namespace left claiming takes them.
        std::fs::remove_file(d.path().join("victim.yaml")).unwrap();
        hosts.index_at(load_dir(d.path()).unwrap(), 10);
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 200);
        assert_eq!(owner(&idx).as_deref(), Some("tenant"));
    }

    #[test]
    fn claims_from_two_namespaces_at_start_up_are_refused_for_both() {
        let d = dir_with(&[
            ("a.yaml", &claiming("a", "admin.example.com")),
            ("b.yaml", &claiming("b", "admin.example.com")),
        ]);
        let mut hosts = ledger();
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 0);
        assert_eq!(owner(&idx), None);
        std::fs::remove_file(d.path().join("b.yaml")).unwrap();
        let idx = hosts.index_at(load_dir(d.path()).unwrap(), 1);
        assert_eq!(owner(&idx).as_deref(), Some("a"));
    }
}
