//! A real one-node Kubernetes cluster for the chart's pods (tests/node: kubelet, containerd,
//! runc, CNI bridge, kube-proxy, controller-manager and scheduler on the loopback control
//! plane), the accessgate image built from the project's Dockerfile (tests/node/accessgate-image.sh),
//! helm and kubectl helpers, and the dev issuer behind TLS where pods reach it.
//!
//! One node cluster per test binary, started by the first test that asks ([`Node::shared`]);
//! tests take [`Node::lock`] so they run one at a time (two CPUs run a whole cluster here).
//! A watchdog process stops the cluster (tests/node/stop.sh) and the host processes once the
//! test binary has exited, however it ended, panics included.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::ControlPlane;
use super::{Issuer, Listening, built_tool, eventually, start_on_free_port, wait_listening};

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/accessgate");
const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
/// The release binary the image is built from (tests/run.sh builds it before `cargo test`).
const RELEASE_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/accessgate");
/// The node's address on the pod bridge: pods reach the host here.
pub const NODE_IP: &str = "10.88.0.1";
/// The ConfigMap holding the issuer's CA, created in each namespace a release goes to.
pub const CA_CONFIGMAP: &str = "issuer-ca";
/// The one-node-per-machine lock file tests/node/start.sh keeps.
const MACHINE_LOCK: &str = "/run/accessgate-node.dir";

pub struct Node {
    /// The node's control plane (kubectl as admin, policy helpers).
    pub cp: ControlPlane,
    /// tests/node/start.sh's `node.env`.
    pub env: HashMap<String, String>,
    /// The accessgate image built from the Dockerfile: (repository, tag).
    pub image: (String, String),
    /// The `helm test` Pod's image (a local curl): (repository, tag).
    pub curl_image: (String, String),
    /// The dev issuer, reachable from pods over https at [`TlsIssuer::url`].
    pub issuer: TlsIssuer,
    /// Values every install of the tests adds (the local images, the issuer's CA and address):
    /// what the README's quick start leaves out.
    pub test_values: PathBuf,
    helm: &'static str,
    /// How long `start.sh` took.
    pub started_in: Duration,
}

/// Serialises the node tests of a binary (a poisoned lock is taken over: one failed test
/// must not fail the others).
pub fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_env(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// Says so when a source file is newer than the release binary the image is built from (the
/// suite then tests an older build: run `cargo build --release --locked`).
fn warn_if_stale(binary: &Path) {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    let mut newest = None;
    let mut dirs = vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, path));
                }
            }
        }
    }
    if let (Some(built), Some((t, path))) = (built, newest) {
        if t > built {
            eprintln!(
                "warning: {} is newer than {}: the node suite tests the older build (run `cargo build --release --locked`)",
                path.display(),
                binary.display()
            );
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Node {
    /// The node cluster of this test binary, started (and the images built and imported) by
    /// the first caller.
    pub fn shared() -> &'static Node {
        static NODE: OnceLock<Node> = OnceLock::new();
        NODE.get_or_init(Node::start)
    }

    fn start() -> Node {
        assert!(
            Path::new(RELEASE_BIN).is_file(),
            "{RELEASE_BIN} missing: the node suite builds its image from the release binary; run `cargo build --release --locked` first (tests/run.sh does)"
        );
        warn_if_stale(Path::new(RELEASE_BIN));
        // One node cluster per machine: a previous test binary's watchdog may still be
        // stopping its cluster.
        let free = eventually(Duration::from_secs(90), || {
            !Path::new(MACHINE_LOCK).exists()
        });
        assert!(
            free,
            "another node cluster runs on this machine ({MACHINE_LOCK}: {})",
            std::fs::read_to_string(MACHINE_LOCK).unwrap_or_default()
        );
        let helm = built_tool("tests/controlplane/build-helm.sh");
        let dir = tempfile::Builder::new()
            .prefix("accessgate-node-")
            .tempdir()
            .unwrap();
        let dir_s = dir.path().display().to_string();
        // The image first: if it cannot be built, no cluster was started.
        let images = run(Command::new("bash")
            .arg(format!("{NODE_DIR}/accessgate-image.sh"))
            .arg(RELEASE_BIN));
        let refs: Vec<(String, String)> = images
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(r, t)| (r.to_owned(), t.to_owned()))
            .collect();
        assert_eq!(refs.len(), 2, "accessgate-image.sh printed {images}");
        let split = |r: &str| {
            let (repo, tag) = r.rsplit_once(':').unwrap();
            (repo.to_owned(), tag.to_owned())
        };

        // The watchdog: stops the cluster and the host processes when this binary exits.
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill $(cat '{dir_s}.pids' 2>/dev/null) 2>/dev/null; rm -f '{dir_s}.pids'; bash '{NODE_DIR}/stop.sh' '{dir_s}' >'{dir_s}.stop.log' 2>&1 && rm -f '{dir_s}.stop.log'; rm -rf '{dir_s}'",
            me = std::process::id(),
        );
        Command::new("setsid")
            .args(["--fork", "bash", "-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the node cluster's watchdog");

        let started = Instant::now();
        let out = Command::new("bash")
            .arg(format!("{NODE_DIR}/start.sh"))
            .arg(dir.path())
            .output()
            .expect("run tests/node/start.sh");
        assert!(
            out.status.success(),
            "tests/node/start.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let started_in = started.elapsed();
        // The issuer's nginx listens on the bridge address start.sh created; the watchdog
        // kills the host processes listed in DIR.pids.
        let issuer = TlsIssuer::start(dir.path());
        let pids: Vec<String> = issuer.pids().iter().map(u32::to_string).collect();
        std::fs::write(format!("{dir_s}.pids"), pids.join(" ")).unwrap();
        let env = read_env(&dir.path().join("node.env"));
        let cp_env = read_env(&dir.path().join("controlplane.env"));
        for (_, tarball) in &refs {
            let mut ctr: Vec<&str> = env["ACCESSGATE_NODE_CTR"].split_whitespace().collect();
            ctr.extend(["images", "import", tarball]);
            run(Command::new(ctr[0]).args(&ctr[1..]));
        }
        let test_values = dir.path().join("test-values.yaml");
        let image = split(&refs[0].0);
        let curl_image = split(&refs[1].0);
        let values = json!({
            "image": {"repository": image.0, "tag": image.1, "pullPolicy": "Never"},
            "tests": {"image": {"repository": curl_image.0, "tag": curl_image.1, "pullPolicy": "Never"}},
            "fetch": {"allowCidrs": [format!("{NODE_IP}/32")]},
            "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/accessgate/ca/ca.crt"}],
            "extraVolumes": [{"name": "issuer-ca", "configMap": {"name": CA_CONFIGMAP}}],
            "extraVolumeMounts": [{"name": "issuer-ca", "mountPath": "/etc/accessgate/ca", "readOnly": true}],
        });
        std::fs::write(&test_values, values.to_string()).unwrap();
        Node {
            cp: ControlPlane { dir, env: cp_env },
            env,
            image,
            curl_image,
            issuer,
            test_values,
            helm,
            started_in,
        }
    }

    pub fn dir(&self) -> &Path {
        self.cp.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.cp.admin_kubeconfig()
    }

    /// helm against the node's API server; (success, stdout, stderr).
    pub fn helm(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(self.helm)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("helm");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[track_caller]
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.helm(args);
        assert!(ok, "helm {args:?} failed: {err}\n{out}");
        out
    }

    /// The namespace and the ConfigMap with the issuer's CA the test values mount.
    pub fn prepare_namespace(&self, ns: &str) {
        let cm = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CA_CONFIGMAP, "namespace": ns},
             "data": {"ca.crt": std::fs::read_to_string(&self.issuer.ca).unwrap()}},
        ]});
        self.cp.apply(&cm.to_string()).expect("namespace and CA");
    }

    /// `helm install RELEASE CHART -n NS --create-namespace -f TEST_VALUES ARGS… --wait`;
    /// how long it took, or helm's error.
    pub fn install(&self, release: &str, ns: &str, args: &[&str]) -> Result<Duration, String> {
        self.prepare_namespace(ns);
        let values = self.test_values.display().to_string();
        let mut a = vec![
            "install",
            release,
            CHART,
            "--namespace",
            ns,
            "--create-namespace",
            "-f",
            &values,
        ];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--wait", "--timeout", "180s"]);
        let started = Instant::now();
        let (ok, out, err) = self.helm(&a);
        if ok {
            Ok(started.elapsed())
        } else {
            Err(format!("{err}\n{out}\n{}", self.health()))
        }
    }

    /// Uninstalls a release and deletes its namespace without waiting for the pods' drain.
    pub fn uninstall(&self, release: &str, ns: &str) {
        let _ = self.helm(&["uninstall", release, "--namespace", ns, "--wait=false"]);
        let _ = self
            .cp
            .kubectl(&["delete", "namespace", ns, "--wait=false"], None);
    }

    /// The release's pods (selected by the chart's instance label), as JSON.
    pub fn pods(&self, ns: &str, release: &str) -> Vec<Value> {
        let sel = format!("app.kubernetes.io/instance={release},app.kubernetes.io/name=accessgate");
        self.cp.get_json(&["pods", "-n", ns, "-l", &sel])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Names of the release's pods that are Running, Ready and not being deleted.
    pub fn ready_pods(&self, ns: &str, release: &str) -> Vec<String> {
        self.pods(ns, release)
            .iter()
            .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn cluster_ip(&self, ns: &str, svc: &str) -> String {
        self.cp.get_json(&["service", svc, "-n", ns])["spec"]["clusterIP"]
            .as_str()
            .expect("a ClusterIP")
            .to_owned()
    }

    /// The Lease's holder, if any.
    pub fn lease_holder(&self, ns: &str, lease: &str) -> Option<String> {
        let (ok, out, _) = self.cp.kubectl(
            &[
                "get",
                "lease",
                lease,
                "-n",
                ns,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        );
        (ok && !out.trim().is_empty()).then(|| out.trim().to_owned())
    }

    /// The IPs the Service's EndpointSlices mark ready.
    pub fn ready_endpoints(&self, ns: &str, svc: &str) -> Vec<String> {
        let sel = format!("kubernetes.io/service-name={svc}");
        let slices = self.cp.get_json(&["endpointslices", "-n", ns, "-l", &sel]);
        let mut ips: Vec<String> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        ips.sort();
        ips
    }

    /// The host pid of the accessgate process in pod `name` (its environment names the pod).
    pub fn container_pid(&self, pod: &str) -> Option<u32> {
        let want = format!("POD_NAME={pod}");
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                exe.ends_with("accessgate")
                    && std::fs::read(format!("/proc/{pid}/environ"))
                        .map(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
                        .unwrap_or(false)
            })
    }

    /// `kubectl get pods -n NS -w` (the table kubectl prints) in the background, each line
    /// with the time it came.
    pub fn watch_pods(&self, ns: &str) -> PodWatch {
        let mut child = Command::new(format!("{}/kubectl", self.cp.env["ACCESSGATE_CP_BIN"]))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["get", "pods", "-n", ns, "-w"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get pods -w");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().unwrap();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((t0.elapsed(), line));
            }
        });
        PodWatch { child, lines }
    }

    /// An Eviction of `pod` (policy/v1, what `kubectl drain` sends): the API server's HTTP
    /// status and message.
    pub fn evict(&self, ns: &str, pod: &str) -> (u16, String) {
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": pod, "namespace": ns}});
        let resp = self
            .cp
            .admin_http()
            .post(format!(
                "{}/api/v1/namespaces/{ns}/pods/{pod}/eviction",
                self.cp.server()
            ))
            .json(&body)
            .send()
            .expect("eviction request");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Publishes `svc.ns.svc.cluster.local` in the node's stand-in cluster DNS (dnsmasq on the
    /// bridge address, tests/node/start.sh): appended to its hosts file, re-read on SIGHUP.
    pub fn publish_service_dns(&self, ns: &str, svc: &str) {
        let ip = self.cluster_ip(ns, svc);
        let fqdn = format!("{svc}.{ns}.svc.cluster.local");
        let hosts = self.dir().join("dns/hosts");
        let mut text = std::fs::read_to_string(&hosts).unwrap_or_default();
        if !text.lines().any(|l| l.ends_with(&format!(" {fqdn}"))) {
            text.push_str(&format!("{ip} {fqdn}\n"));
            std::fs::write(&hosts, text).unwrap();
        }
        let pid = std::fs::read_to_string(self.dir().join("dnsmasq.pid"))
            .expect("dnsmasq.pid: tests/node/start.sh runs dnsmasq when dnsmasq-base is installed");
        run(Command::new("kill").args(["-HUP", pid.trim()]));
    }

    /// What the node says about itself, for failure messages: its conditions (DiskPressure,
    /// MemoryPressure, Ready), taints, the free space of the filesystem its state lives on (the
    /// kubelet evicts below 1 GiB), and the cluster's last Warning events (evictions,
    /// FailedScheduling). A pod that vanished or never came usually has its reason here.
    pub fn health(&self) -> String {
        let node = self.cp.get_json(&["nodes"]);
        let mut out = String::new();
        for n in node["items"].as_array().into_iter().flatten() {
            let conds: Vec<String> = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!("{}={} ({})", c["type"], c["status"], c["reason"]).replace('"', "")
                })
                .collect();
            out.push_str(&format!(
                "node {}: {}; taints {}\n",
                n["metadata"]["name"],
                conds.join(", "),
                n["spec"]["taints"]
            ));
        }
        let df = Command::new("df")
            .args(["-h", "--output=avail,pcent"])
            .arg(self.dir())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " "))
            .unwrap_or_default();
        out.push_str(&format!(
            "free space under {}: {df}\n",
            self.dir().display()
        ));
        let (_, events, _) = self.cp.kubectl(
            &[
                "get",
                "events",
                "-A",
                "--field-selector",
                "type=Warning",
                "--sort-by=.lastTimestamp",
            ],
            None,
        );
        let last: Vec<&str> = events.lines().rev().take(15).collect();
        out.push_str("last Warning events:\n");
        for line in last.into_iter().rev() {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }

    /// The container logs of a pod (the current container).
    pub fn logs(&self, ns: &str, pod: &str) -> String {
        self.cp.kubectl(&["logs", "-n", ns, pod], None).1
    }
}

pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A running `kubectl get pods -w`; stopped on drop.
pub struct PodWatch {
    child: Child,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl PodWatch {
    /// What kubectl printed so far, each line prefixed with the seconds since the watch began.
    pub fn timeline(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(t, l)| format!("  [{:6.2}s] {l}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dev issuer (`accessgate dev-issuer` on loopback) behind real nginx terminating TLS on
/// the node's bridge address, with a certificate from a CA of its own: pods reach it at
/// `https://10.88.0.1:PORT` (a policy's issuer must be https unless on loopback, and the
/// pods' loopback is their own).
pub struct TlsIssuer {
    inner: Mutex<Issuer>,
    nginx: Mutex<Child>,
    /// `https://10.88.0.1:PORT`.
    pub url: String,
    /// The CA certificate (PEM) that signed nginx's certificate.
    pub ca: PathBuf,
}

impl TlsIssuer {
    fn start(dir: &Path) -> TlsIssuer {
        let inner = Issuer::start();
        let pki = dir.join("issuer-pki");
        std::fs::create_dir_all(&pki).unwrap();
        let p = |f: &str| pki.join(f).display().to_string();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=accessgate node test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ]);
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=accessgate-node-issuer",
            "-keyout",
            &p("tls.key"),
            "-out",
            &p("tls.csr"),
        ]);
        std::fs::write(
            pki.join("ext.cnf"),
            format!("subjectAltName=IP:{NODE_IP}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("tls.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("tls.crt"),
        ]);
        let upstream = inner.url.clone();
        let (nginx, port) = start_on_free_port("nginx (issuer TLS)", |port| {
            let prefix = dir.join(format!("issuer-nginx-{port}"));
            for d in ["logs", "run"] {
                std::fs::create_dir_all(prefix.join(d)).unwrap();
            }
            let pr = prefix.display();
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {pr}/run/nginx.pid;\nevents {{ worker_connections 256; }}\nhttp {{\n    access_log {pr}/logs/access.log;\n    client_body_temp_path {pr}/run/body; proxy_temp_path {pr}/run/proxy;\n    fastcgi_temp_path {pr}/run/fcgi; uwsgi_temp_path {pr}/run/uwsgi; scgi_temp_path {pr}/run/scgi;\n    server {{\n        listen 127.0.0.1:{port} ssl;\n        listen {NODE_IP}:{port} ssl;\n        ssl_certificate {crt};\n        ssl_certificate_key {key};\n        location / {{ proxy_pass {upstream}; }}\n    }}\n}}\n",
                crt = p("tls.crt"),
                key = p("tls.key"),
            );
            let conf_path = prefix.join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let error_log = prefix.join("logs/error.log");
            let mut child = Command::new("/usr/sbin/nginx")
                .args([
                    "-p",
                    &pr.to_string(),
                    "-e",
                    &error_log.display().to_string(),
                ])
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let log = || std::fs::read_to_string(&error_log).unwrap_or_default();
            match wait_listening(
                "nginx (issuer TLS)",
                &mut child,
                port,
                Duration::from_secs(20),
                log,
            ) {
                Listening::Yes => Some((child, port)),
                Listening::PortTaken => None,
            }
        });
        TlsIssuer {
            inner: Mutex::new(inner),
            nginx: Mutex::new(nginx),
            url: format!("https://{NODE_IP}:{port}"),
            ca: pki.join("ca.crt"),
        }
    }

    fn pids(&self) -> Vec<u32> {
        vec![
            self.inner.lock().unwrap().proc.pid(),
            self.nginx.lock().unwrap().id(),
        ]
    }

    /// A token for [`super::AUD`] from this issuer (its `iss` is the https URL pods know),
    /// plus `extra` MintRequest fields.
    pub fn token(&self, extra: Value) -> String {
        let mut req = json!({"claims": {"iss": self.url}});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.inner.lock().unwrap().token(req)
    }
}
