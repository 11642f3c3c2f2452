//! Real Traefik v3 (built from the Go module proxy by `tests/traefik/build.sh`) running its
//! `kubernetesIngressNGINX` provider against the test kube-apiserver ([`ControlPlane`]):
//! the drop-in for ingress-nginx, reading the same `networking.k8s.io/v1` Ingresses and
//! `nginx.ingress.kubernetes.io/*` annotations.
//!
//! Traefik runs outside the cluster, as the provider allows: `endpoint`, `token` (a bound
//! ServiceAccount token, as a pod gets) and `certAuthFilePath`, with exactly the RBAC of
//! [`rbac_rules`]. Backends are `ExternalName` Services naming a loopback port ([`backend`]).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::ControlPlane;
use super::stack::{PATH, Proxy, ProxyProcess};
use super::{Listening, eventually, start_on_free_port, wait_listening};

/// Where Traefik's ServiceAccount lives.
pub const TRAEFIK_NS: &str = "traefik-system";
/// Traefik's ServiceAccount (and ClusterRole, ClusterRoleBinding).
pub const TRAEFIK_SA: &str = "traefik-ingress-nginx";

/// What the provider (v3.7.9, `pkg/provider/kubernetes/ingress-nginx/client.go`) asks the API
/// server for: informers (list + watch, never get) on Ingresses, Services, EndpointSlices,
/// Secrets and ConfigMaps in the watched namespaces and on IngressClasses (cluster-wide; if
/// that list is forbidden it ignores IngressClasses and then processes no Ingress that names
/// a class), plus `update` on `ingresses/status` when `publishService` or
/// `publishStatusAddress` is set. `namespaces` list/watch only with `watchNamespaceSelector`,
/// `pods` get only for OpenTelemetry attributes: neither is granted here.
pub fn rbac_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"], "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
    ])
}

/// The IngressClass ingress-nginx installs, which the provider selects by its controller
/// (`k8s.io/ingress-nginx`, the provider's default `controllerClass`).
pub fn ingress_class() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}})
}

/// A Service `name` in `namespace` (port 80, named `http`) for the loopback port `port`.
///
/// An `ExternalName` Service naming `127.0.0.1`, target port `port` (the provider dials
/// `externalName:targetPort`): the API server refuses loopback addresses in an
/// EndpointSlice ("may not be in the loopback range"), so the hand-made EndpointSlice a
/// ClusterIP Service would need cannot point at a loopback backend.
pub fn backend(namespace: &str, name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                 "ports": [{"name": "http", "port": 80, "targetPort": port}]}})
}

/// An Ingress of class `nginx` routing `host` (all paths) to Service `service` port 80,
/// with `annotations` (names without the `nginx.ingress.kubernetes.io/` prefix).
pub fn ingress(
    namespace: &str,
    name: &str,
    host: &str,
    service: &str,
    annotations: &[(&str, &str)],
) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), json!(v)))
        .collect();
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

/// The traefik binary (`tests/traefik/build.sh`; a no-op when cached).
fn traefik_binary() -> &'static str {
    super::built_tool("tests/traefik/build.sh")
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Traefik with only the `kubernetesIngressNGINX` provider, one plain-HTTP entry point on
/// loopback, and `underscoreHeadersStrategy: delete` (README, Security notes); stopped on drop.
pub struct TraefikIngressNginx {
    pub process: ProxyProcess,
}

impl TraefikIngressNginx {
    /// Installs the IngressClass, Traefik's ServiceAccount and RBAC ([`rbac_rules`]) in `cp`,
    /// then starts Traefik with a token for that ServiceAccount.
    pub fn start(cp: &ControlPlane) -> TraefikIngressNginx {
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            ingress_class(),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TRAEFIK_NS}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": TRAEFIK_SA, "namespace": TRAEFIK_NS}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": TRAEFIK_SA}, "rules": rbac_rules()},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": TRAEFIK_SA},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TRAEFIK_SA},
             "subjects": [{"kind": "ServiceAccount", "name": TRAEFIK_SA, "namespace": TRAEFIK_NS}]},
        ]});
        cp.apply(&objects.to_string())
            .unwrap_or_else(|e| panic!("apply Traefik's RBAC: {e}"));
        let token = cp.kubectl_ok(&[
            "create",
            "token",
            TRAEFIK_SA,
            "-n",
            TRAEFIK_NS,
            "--duration=2h",
        ]);
        let ca = cp.dir.path().join("pki/ca.crt");
        assert!(ca.is_file(), "no CA at {}", ca.display());
        start_on_free_port("traefik (ingress-nginx provider)", |port| {
            Self::start_on(port, cp.server(), token.trim(), &ca)
        })
    }

    /// Starts Traefik on `port`; `None` when another process had taken the port.
    fn start_on(
        port: u16,
        api_server: &str,
        token: &str,
        ca: &std::path::Path,
    ) -> Option<TraefikIngressNginx> {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        let config = [
            "global: { checkNewVersion: false, sendAnonymousUsage: false }".to_owned(),
            "log: { level: DEBUG, noColor: true }".to_owned(),
            "entryPoints:".to_owned(),
            "  web:".to_owned(),
            format!("    address: {}", q(&format!("127.0.0.1:{port}"))),
            "    http: { underscoreHeadersStrategy: delete }".to_owned(),
            "providers:".to_owned(),
            "  kubernetesIngressNGINX:".to_owned(),
            format!("    endpoint: {}", q(api_server)),
            format!("    token: {}", q(token_file.to_str().unwrap())),
            format!("    certAuthFilePath: {}", q(ca.to_str().unwrap())),
            // Written to each Ingress's status once the provider has read it.
            "    publishStatusAddress: [\"127.0.0.1\"]".to_owned(),
        ]
        .join("\n")
            + "\n";
        let config_file = dir.path().join("traefik.yaml");
        std::fs::write(&config_file, config).unwrap();
        let log_path = dir.path().join("traefik.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // A clean environment: with KUBERNETES_SERVICE_HOST or KUBECONFIG set (a CI pod),
        // the provider would take those instead of the endpoint given here.
        let mut child = Command::new(traefik_binary())
            .arg(format!("--configFile={}", config_file.display()))
            .current_dir(dir.path())
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start traefik");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Listening::PortTaken = wait_listening(
            "traefik (ingress-nginx provider)",
            &mut child,
            port,
            Duration::from_secs(60),
            read_log,
        ) {
            return None;
        }
        Some(TraefikIngressNginx {
            process: ProxyProcess {
                child,
                port,
                dir,
                log_file: "traefik.log",
            },
        })
    }

    /// Waits until Traefik routes `host` (answers `path` with anything but its own 404 for an
    /// unknown host, or a 502/503 for a router whose backend it has not resolved yet), then
    /// returns that answer's status. The provider picks an Ingress up a few seconds after it
    /// is written, later on a loaded machine.
    #[track_caller]
    pub fn wait_routed(&self, host: &str, path: &str) -> u16 {
        let mut last = 0;
        let routed = eventually(Duration::from_secs(90), || {
            last = match client()
                .get(format!("http://127.0.0.1:{}{path}", self.process.port))
                .header("host", format!("{host}:{}", self.process.port))
                .timeout(Duration::from_secs(5))
                .send()
            {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            };
            !matches!(last, 0 | 404 | 502 | 503)
        });
        assert!(
            routed,
            "traefik did not route {host} within 90 s (last status {last}):\n{}",
            self.process.log()
        );
        last
    }
}

/// A client that shows redirects instead of following them (the `auth-signin` answer).
fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Traefik's ingress-nginx provider with the cluster it reads, as a stack's proxy: namespace
/// `apps` holds Service `app` (→ the upstream) and Ingresses of class `nginx` written as for
/// ingress-nginx ([`IngressNginxProvider::ingress`]).
pub struct IngressNginxProvider {
    pub traefik: TraefikIngressNginx,
    pub cp: ControlPlane,
}

impl IngressNginxProvider {
    /// Applies an Ingress in `apps` for `host` → Service `app` with `annotations` and waits
    /// until Traefik routes it; returns the status of a request without a token.
    #[track_caller]
    pub fn ingress(&self, name: &str, host: &str, annotations: &[(&str, &str)]) -> u16 {
        self.cp
            .apply(&ingress("apps", name, host, "app", annotations).to_string())
            .unwrap_or_else(|e| panic!("apply Ingress {name}: {e}"));
        self.traefik.wait_routed(host, PATH)
    }
}

/// The annotations exactly as written for ingress-nginx: `auth-url` on
/// `/auth/{namespace}/{name}` and `auth-response-headers`, on Ingress `apps/web`.
impl Proxy for IngressNginxProvider {
    fn start(host: &str, auth: &str, policy: &str, headers: &[&str], upstream: u16) -> Self {
        let cp = ControlPlane::start();
        let traefik = TraefikIngressNginx::start(&cp);
        cp.kubectl_ok(&["create", "namespace", "apps"]);
        cp.apply(&backend("apps", "app", upstream).to_string())
            .unwrap_or_else(|e| panic!("apply the backend: {e}"));
        let provider = IngressNginxProvider { traefik, cp };
        let status = provider.ingress(
            "web",
            host,
            &[
                ("auth-url", &format!("{auth}/auth/{policy}")),
                ("auth-response-headers", &headers.join(",")),
            ],
        );
        assert_eq!(status, 401, "a request without a token, once routed");
        provider
    }

    /// Redirects not followed: the `auth-signin` answer is what is asserted.
    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        self.traefik.process.get(&client(), host, path, headers)
    }

    fn log(&self) -> String {
        self.traefik.process.log()
    }
}
