//! The Helm chart, with helm built from the Go module proxy: lint, rendered manifests
//! (security context, RBAC from the shared rules file), schema, and a real install into a
//! kube-apiserver where the installed ServiceAccount runs the controller.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::ControlPlane;
use common::*;
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/accessgate");
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/accessgate/files/rbac-rules.yaml"
);
const NS: &str = "accessgate-system";
const SA: &str = "system:serviceaccount:accessgate-system:accessgate";

fn helm_bin() -> String {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/controlplane/build-helm.sh"
        ))
        .output()
        .expect("build-helm.sh");
    assert!(
        out.status.success(),
        "building helm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

fn helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm_bin()).args(args).output().expect("helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn helm_ok(args: &[&str]) -> String {
    let (ok, out, err) = helm(args);
    assert!(ok, "helm {args:?} failed: {err}\n{out}");
    out
}

/// `helm template` as a list of objects.
fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        "1.33.0",
    ];
    args.extend_from_slice(extra);
    let text = helm_ok(&args);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objs
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

fn find<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn rules() -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap()
}

#[test]
fn chart_lints_strictly() {
    helm_ok(&["lint", "--strict", CHART, "--kube-version", "1.33.0"]);
    helm_ok(&[
        "lint",
        "--strict",
        CHART,
        "--kube-version",
        "1.33.0",
        "--set",
        "networkPolicy.enabled=true,serviceMonitor.enabled=true",
        "--set",
        "watchNamespaces={a,b}",
    ]);
}

#[test]
fn default_render_is_secure_and_least_privilege() {
    let objs = render(&[]);
    eprintln!("default render: {} objects: {:?}", objs.len(), kinds(&objs));
    assert_eq!(
        kinds(&objs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let dep = find(&objs, "Deployment")[0];
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--service-name=accessgate"));
    assert!(
        !args.iter().any(|a| a.starts_with("--allow-fetch-cidr")),
        "no fetch guard exceptions by default: {args:?}"
    );
    // RBAC is exactly the shared rules file, which the controller tests run under.
    let r = rules();
    assert_eq!(find(&objs, "ClusterRole")[0]["rules"], r["cluster"]);
    assert_eq!(find(&objs, "Role")[0]["rules"], r["lease"]);
    assert_eq!(find(&objs, "Role")[0]["metadata"]["namespace"], NS);
    let verbs: Vec<&str> = r["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["verbs"].as_array().unwrap())
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        !verbs
            .iter()
            .any(|v| matches!(*v, "*" | "delete" | "update" | "deletecollection")),
        "{verbs:?}"
    );
    let svc = find(&objs, "Service")[0];
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
}

#[test]
fn non_default_values_render() {
    let objs = render(&[
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "networkPolicy.enabled=true,networkPolicy.metricsNamespace=monitoring",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "replicaCount=3,service.port=8080,logLevel=debug,podDisruptionBudget.enabled=false",
        "--set",
        "fetch.allowCidrs={10.96.0.0/12,fd00::/8}",
        "--set",
        "hostClaims.team-a={*.a.example.com,b.example.com}",
    ]);
    eprintln!(
        "non-default render: {} objects: {:?}",
        objs.len(),
        kinds(&objs)
    );
    assert!(
        find(&objs, "ClusterRoleBinding").is_empty(),
        "namespaced install must not bind cluster-wide"
    );
    let bindings: Vec<&str> = find(&objs, "RoleBinding")
        .iter()
        .filter_map(|b| b["metadata"]["namespace"].as_str())
        .collect();
    assert!(
        bindings.contains(&"team-a") && bindings.contains(&"team-b") && bindings.contains(&NS),
        "{bindings:?}"
    );
    assert!(find(&objs, "PodDisruptionBudget").is_empty());
    let np = find(&objs, "NetworkPolicy")[0];
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "http");
    assert_eq!(find(&objs, "ServiceMonitor").len(), 1);
    let dep = find(&objs, "Deployment")[0];
    assert_eq!(dep["spec"]["replicas"], 3);
    let args: Vec<&str> = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--namespaces=team-a,team-b")
            && args.contains(&"--service-port=8080")
            && args.contains(&"--log=debug")
            && args.contains(&"--allow-fetch-cidr=10.96.0.0/12")
            && args.contains(&"--allow-fetch-cidr=fd00::/8")
            && args.contains(&"--host-claims=team-a=*.a.example.com,b.example.com"),
        "{args:?}"
    );
}

#[test]
fn values_schema_refuses_nonsense() {
    for bad in [
        "replicaCount=0",
        "logFormat=xml",
        "service.port=0",
        "jwks.refresh=soon",
        "fetch.allowCidrs={everything}",
        "fetch.nope=1",
        "hostClaims.team-a={Admin.example.com}",
        "hostClaims.Team_A={a.example.com}",
        "nope=1",
    ] {
        let (ok, _, err) = helm(&[
            "template",
            "accessgate",
            CHART,
            "--kube-version",
            "1.33.0",
            "--set",
            bad,
        ]);
        assert!(!ok, "{bad} was accepted");
        assert!(err.contains("schema"), "{bad}: {err}");
    }
}

#[test]
fn installs_into_a_real_api_server_and_its_service_account_runs_the_controller() {
    let cp = ControlPlane::start();
    let kc = cp.admin_kubeconfig();
    let kc = kc.to_str().unwrap();
    let notes = helm_ok(&[
        "install",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--create-namespace",
        "--kubeconfig",
        kc,
    ]);
    assert!(
        notes.contains("nginx.ingress.kubernetes.io/auth-url"),
        "{notes}"
    );
    assert!(
        notes.contains("http://accessgate.accessgate-system.svc.cluster.local/auth/"),
        "{notes}"
    );

    // What the controller needs: yes. A sample of what it must not have: no.
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--as", SA]);
        let (_, out, _) = cp.kubectl(&a, None);
        out.trim().to_owned()
    };
    for yes in [
        vec!["list", "accesspolicies.accessgate.dev", "-A"],
        vec!["watch", "accesspolicies.accessgate.dev", "-A"],
        vec!["get", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec![
            "patch",
            "accesspolicies.accessgate.dev",
            "--subresource=status",
            "-n",
            "apps",
        ],
        vec!["create", "events.events.k8s.io", "-n", "apps"],
        vec!["patch", "events.events.k8s.io", "-n", "apps"],
        vec!["get", "leases.coordination.k8s.io", "-n", NS],
        vec!["create", "leases.coordination.k8s.io", "-n", NS],
        vec!["patch", "leases.coordination.k8s.io", "-n", NS],
    ] {
        assert_eq!(can(&yes), "yes", "{yes:?}");
    }
    for no in [
        vec!["delete", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["update", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["patch", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["get", "secrets", "-n", NS],
        vec!["list", "pods", "-A"],
        vec!["patch", "leases.coordination.k8s.io", "-n", "kube-system"],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ] {
        assert_eq!(can(&no), "no", "{no:?}");
    }

    // The installed ServiceAccount's token runs the controller (out of cluster: no kubelet here).
    let issuer = Issuer::start();
    let sa_kc = cp.token_kubeconfig(NS, "accessgate");
    let proc = Proc::spawn_env(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--pod-namespace",
            NS,
            "--lease-name",
            "accessgate-leader",
            "--identity",
            "local",
            // The dev issuer is on loopback, which the fetch guard refuses otherwise.
            "--allow-fetch-cidr",
            "127.0.0.0/8",
        ],
        &[("KUBECONFIG", sa_kc.to_str().unwrap())],
    );
    proc.wait_line("\"listening\"", Duration::from_secs(30));
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    let policy = json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"issuer": {"url": issuer.url, "jwksUri": issuer.certs_url()}, "audiences": [AUD]}});
    cp.apply(&policy.to_string()).unwrap();
    let ready = eventually(Duration::from_secs(30), || {
        let o = cp.get_json(&["accesspolicy", "web", "-n", "apps"]);
        o["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    assert!(
        ready,
        "policy never became Ready under the chart's ServiceAccount:\n{}",
        proc.output()
    );

    // Upgrade with new values, then uninstall: the CRD (and so the policies) stay.
    helm_ok(&[
        "upgrade",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--kubeconfig",
        kc,
        "--set",
        "logLevel=debug,replicaCount=3",
    ]);
    let dep = cp.get_json(&["deployment", "accessgate", "-n", NS]);
    assert_eq!(dep["spec"]["replicas"], 3);
    helm_ok(&[
        "uninstall",
        "accessgate",
        "--namespace",
        NS,
        "--kubeconfig",
        kc,
    ]);
    let (gone, _, _) = cp.kubectl(&["get", "serviceaccount", "accessgate", "-n", NS], None);
    assert!(!gone, "uninstall left the ServiceAccount");
    cp.kubectl_ok(&["get", "crd", "accesspolicies.accessgate.dev"]);
    cp.kubectl_ok(&["get", "accesspolicy", "web", "-n", "apps"]);
}
