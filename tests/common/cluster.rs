//! A real control plane for tests: etcd + kube-apiserver built from Go modules
//! (tests/controlplane), started on loopback, plus kubectl and a ServiceAccount bound to
//! exactly the RBAC the Helm chart grants (charts/accessgate/files/rbac-rules.yaml).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::{AUD, eventually, http};

const CP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/controlplane");
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/accessgate/files/rbac-rules.yaml"
);
const CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/accesspolicy.yaml");

pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl ControlPlane {
    /// Starts etcd + kube-apiserver (building them first if the cache is empty, which
    /// tests/run.sh does ahead of time) and installs the AccessPolicy CRD.
    pub fn start() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("accessgate-cp-")
            .tempdir()
            .unwrap();
        let cp = ControlPlane {
            env: HashMap::new(),
            dir,
        };
        cp.run_script("start.sh");
        let mut cp = cp;
        cp.env = read_env(&cp.dir.path().join("controlplane.env"));
        cp.kubectl_ok(&["apply", "--server-side", "-f", CRD]);
        cp.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/accesspolicies.accessgate.dev",
            "--timeout=60s",
        ]);
        cp
    }

    /// One control plane for every test of a test binary that asks for it (each test then
    /// keeps to its own namespaces and install), started by the first. A static is never
    /// dropped, so a watchdog process stops it once the binary has exited, however it ended.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cp = ControlPlane::start();
            let dir = cp.dir.path().display();
            let watchdog = format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; bash '{CP}/stop.sh' '{dir}'; rm -rf '{dir}'",
                std::process::id()
            );
            // Its own session (a Ctrl-C to the test's process group leaves it to clean up),
            // forked off so this process has no child to wait for.
            Command::new("setsid")
                .args(["--fork", "bash", "-c", &watchdog])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("start the control plane's watchdog");
            cp
        })
    }

    fn run_script(&self, script: &str) {
        let out = Command::new("bash")
            .arg(format!("{CP}/{script}"))
            .arg(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops etcd and kube-apiserver; [`ControlPlane::restart`] brings them back with the same data.
    pub fn stop(&self) {
        self.run_script("stop.sh");
    }

    pub fn restart(&self) {
        self.run_script("start.sh");
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub fn server(&self) -> &str {
        &self.env["ACCESSGATE_CP_APISERVER_URL"]
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    /// An HTTP client that talks to the API server as cluster admin (its client certificate),
    /// for requests faster than a kubectl process each.
    pub fn admin_http(&self) -> reqwest::blocking::Client {
        let pki = self.dir.path().join("pki");
        let read = |f: &str| std::fs::read(pki.join(f)).unwrap_or_else(|e| panic!("pki/{f}: {e}"));
        let identity = [read("admin.crt"), read("admin.key")].concat();
        reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&read("ca.crt")).unwrap()])
            .identity(reqwest::Identity::from_pem(&identity).expect("admin identity"))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
    }

    /// The running kube-apiserver's process id.
    pub fn apiserver_pid(&self) -> u32 {
        let pidfile = self.dir.path().join("kube-apiserver.pid");
        std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
            .trim()
            .parse()
            .expect("a pid in kube-apiserver.pid")
    }

    /// etcd's own `/metrics` text (etcd serves it on its client URL).
    pub fn etcd_metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.env["ACCESSGATE_CP_ETCD_URL"]))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("etcd /metrics")
    }

    fn kubectl_bin(&self) -> String {
        format!("{}/kubectl", self.env["ACCESSGATE_CP_BIN"])
    }

    /// kubectl as cluster admin; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = Command::new(self.kubectl_bin())
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// `kubectl apply -f -`.
    pub fn apply(&self, manifest: &str) -> Result<String, String> {
        let (ok, out, err) = self.kubectl(&["apply", "-f", "-"], Some(manifest));
        if ok { Ok(out) } else { Err(err) }
    }

    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).unwrap()
    }

    /// A ServiceAccount in `namespace` bound to exactly the chart's rules, and a kubeconfig
    /// that authenticates as it.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        self.install_service_account_kubeconfig(
            namespace,
            name,
            "accessgate-leader",
            "accessgate-hosts",
        )
    }

    /// [`ControlPlane::service_account_kubeconfig`] for an install whose Lease and host ledger
    /// are `lease` and `ledger`: the chart's rules with those names, as a release gets them.
    pub fn install_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        lease: &str,
        ledger: &str,
    ) -> PathBuf {
        let mut rules: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
        for rule in rules["lease"].as_array_mut().unwrap() {
            if let Some(names) = rule.get_mut("resourceNames") {
                *names = match names[0].as_str() {
                    Some("accessgate-leader") => json!([lease]),
                    Some("accessgate-hosts") => json!([ledger]),
                    other => panic!("rbac-rules.yaml names {other:?}"),
                };
            }
        }
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules["cluster"]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": rules["lease"]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        ]});
        self.apply(&objects.to_string()).expect("apply RBAC");
        self.token_kubeconfig(namespace, name)
    }

    /// A kubeconfig authenticating as an existing ServiceAccount (a bound token, as a pod gets).
    pub fn token_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{name}.kubeconfig"));
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.server(), "certificate-authority": self.ca_cert()}}],
            "users": [{"name": name, "user": {"token": token.trim()}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name, "namespace": namespace}}],
            "current-context": "test",
        });
        std::fs::write(&path, kubeconfig.to_string()).unwrap();
        path
    }

    /// A copy of `kubeconfig` (one [`ControlPlane::token_kubeconfig`] wrote) that reaches the
    /// API server through `server`, a plain-HTTP proxy in front of it.
    pub fn kubeconfig_via(&self, kubeconfig: &Path, server: &str) -> PathBuf {
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
        config["clusters"][0]["cluster"] = json!({ "server": server });
        let name = kubeconfig.file_stem().unwrap().to_string_lossy();
        let path = self.dir.path().join(format!("{name}-via-proxy.kubeconfig"));
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    /// Polls `accesspolicy NAMESPACE/NAME` until `f` holds; panics with the last status after
    /// `timeout`.
    #[track_caller]
    pub fn wait_policy(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut obj = Value::Null;
        let matched = eventually(timeout, || {
            obj = self.get_json(&["accesspolicy", name, "-n", namespace]);
            f(&obj)
        });
        assert!(
            matched,
            "status of {namespace}/{name} never matched; last: {:#}",
            obj["status"]
        );
        obj
    }

    /// `kubectl get ARGS --watch -o json` in the background: every version of the objects
    /// the API server reports, in order, from the current one on.
    pub fn watch(&self, args: &[&str]) -> Watch {
        let mut child = Command::new(self.kubectl_bin())
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .arg("get")
            .args(args)
            .args(["--watch", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl watch");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for obj in serde_json::Deserializer::from_reader(out).into_iter::<Value>() {
                match obj {
                    Ok(obj) => sink.lock().unwrap().push(obj),
                    Err(_) => break,
                }
            }
        });
        Watch { child, seen }
    }
}

/// A running `kubectl get --watch`; stopped on drop.
pub struct Watch {
    child: Child,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Watch {
    /// The versions reported so far, oldest first.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(format!("{CP}/stop.sh"))
            .arg(self.dir.path())
            .output();
    }
}

/// A policy in `namespace` for the dev issuer at `issuer`, with `extra` spec fields (JSON,
/// each after a comma).
pub fn policy_in(namespace: &str, name: &str, issuer: &str, extra: &str) -> String {
    format!(
        r#"{{"apiVersion":"accessgate.dev/v1alpha1","kind":"AccessPolicy","metadata":{{"name":"{name}","namespace":"{namespace}"}},
"spec":{{"issuer":{{"url":"{issuer}","jwksUri":"{issuer}/cdn-cgi/access/certs"}},"audiences":["{AUD}"]{extra}}}}}"#
    )
}

/// A policy's `Ready` condition: (status, reason).
pub fn ready_condition(obj: &Value) -> Option<(String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_owned(),
                c["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
}

fn read_env(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}
