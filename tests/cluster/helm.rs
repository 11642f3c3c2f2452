//! The Helm chart, with helm built from the Go module proxy: lint, rendered manifests
//! (security context, RBAC from the shared rules file, every value), schema refusals, a real
//! install into a kube-apiserver where the installed ServiceAccount runs the controller, and
//! a CRD upgrade that applies (a new field is stored after `helm upgrade`, the CRD and the
//! policies survive `helm uninstall`).

use std::path::Path;
use std::time::Duration;

use crate::chart_support::*;
use crate::common::cluster::ControlPlane;
use crate::common::*;
use serde_json::{Value, json};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/accessgate/files/rbac-rules.yaml"
);
const CHART_CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/accessgate/files/accesspolicy-crd.yaml"
);
const GENERATED_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/accesspolicy.yaml");
const CRD_NAME: &str = "accesspolicies.accessgate.dev";
const SA: &str = "system:serviceaccount:accessgate-system:accessgate";

fn rules() -> Value {
    read_yaml(Path::new(RULES))
}

fn deployment(objs: &[Value]) -> &Value {
    find(objs, "Deployment")[0]
}

fn container(objs: &[Value]) -> &Value {
    &deployment(objs)["spec"]["template"]["spec"]["containers"][0]
}

fn args(objs: &[Value]) -> Vec<String> {
    container(objs)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// `helm template` must fail, saying `needle`.
#[track_caller]
fn refused(sets: &[&str], needle: &str) {
    let mut a = vec!["template", "accessgate", CHART, "--kube-version", "1.33.0"];
    for s in sets {
        a.extend_from_slice(&["--set", s]);
    }
    let (ok, _, err) = helm(&a);
    assert!(!ok, "{sets:?} was accepted");
    assert!(err.contains(needle), "{sets:?}: {err}");
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
        "networkPolicy.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true",
        "--set",
        "dashboards.enabled=true,autoscaling.enabled=true,crds.keep=false,tests.enabled=false",
        "--set",
        "watchNamespaces={a,b}",
    ]);
    // The chart's own files: no crds/ directory (Helm would install that copy too, and never
    // upgrade it).
    assert!(
        !Path::new(CHART).join("crds").exists(),
        "charts/accessgate/crds/ is back: the CRD is rendered from templates/crd.yaml"
    );
}

#[test]
fn default_render_is_secure_and_least_privilege() {
    let objs = render(&[]);
    eprintln!("default render: {} objects: {:?}", objs.len(), kinds(&objs));
    assert_eq!(
        kinds(&objs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "Pod",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let dep = deployment(&objs);
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
    assert_eq!(pod["terminationGracePeriodSeconds"], 40);
    assert!(pod.get("priorityClassName").is_none());
    assert!(pod.get("volumes").is_none());
    let c = container(&objs);
    assert_eq!(c["image"], "ghcr.io/accessgate/accessgate:0.1.0");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
    // Shutdown: the kubelet's sleep action (no shell in distroless), inside the grace period.
    assert_eq!(c["lifecycle"]["preStop"], json!({"sleep": {"seconds": 15}}));
    assert!(c["resources"]["limits"]["memory"].is_string());
    let args = args(&objs);
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--service-name=accessgate".to_owned()));
    assert!(args.contains(&"--lease-name=accessgate-leader".to_owned()));
    assert!(
        !args.iter().any(|a| a.starts_with("--allow-fetch-cidr")),
        "no fetch guard exceptions by default: {args:?}"
    );
    // After the 15 s preStop sleep: a short drain, then what is left of the 40 s grace period
    // (minus a margin for the Lease release) for requests in flight.
    assert!(
        args.contains(&"--drain-period=5s".to_owned())
            && args.contains(&"--shutdown-grace=15s".to_owned()),
        "{args:?}"
    );
    // RBAC is exactly the shared rules file, which the controller tests run under (for the
    // default release the Lease name is the binary's default, so the lease rules match too).
    let r = rules();
    assert_eq!(
        named(&objs, "ClusterRole", "accessgate-system:accessgate")["rules"],
        r["cluster"]
    );
    let role = find(&objs, "Role")[0];
    assert_eq!(role["rules"], r["lease"]);
    assert_eq!(role["metadata"]["namespace"], NS);
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
    let pdb = find(&objs, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    // Off unless asked for.
    for kind in [
        "HorizontalPodAutoscaler",
        "PrometheusRule",
        "ConfigMap",
        "ServiceMonitor",
    ] {
        assert!(find(&objs, kind).is_empty(), "{kind} rendered by default");
    }
}

#[test]
fn non_default_values_render() {
    let objs = render(&[
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "networkPolicy.metricsNamespaces={monitoring}",
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
    let dep = deployment(&objs);
    assert_eq!(dep["spec"]["replicas"], 3);
    let args = args(&objs);
    for want in [
        "--namespaces=team-a,team-b",
        "--service-port=8080",
        "--log=debug",
        "--allow-fetch-cidr=10.96.0.0/12",
        "--allow-fetch-cidr=fd00::/8",
        "--host-claims=team-a=*.a.example.com,b.example.com",
    ] {
        assert!(args.contains(&want.to_owned()), "{want} not in {args:?}");
    }
}

/// The class values become `--class` (always) and `--claim-unclassed` (only when set: left
/// out, the binary decides from the class).
#[test]
fn class_values_render_into_args() {
    let default = args(&render(&[]));
    assert!(
        default.contains(&"--class=accessgate".to_owned()),
        "{default:?}"
    );
    assert!(
        !default.iter().any(|a| a.starts_with("--claim-unclassed")),
        "{default:?}"
    );
    let blue = args(&render(&["--set", "className=blue,claimUnclassed=false"]));
    for want in ["--class=blue", "--claim-unclassed=false"] {
        assert!(blue.contains(&want.to_owned()), "{want} not in {blue:?}");
    }
}

/// `helm template` of release `name` in `namespace`, with every optional object on, watching
/// all namespaces (a ClusterRoleBinding) and one (RoleBindings there): each object as (kind,
/// namespace or `-` when cluster-scoped, name).
fn object_names(name: &str, namespace: &str, sets: &[&str]) -> Vec<(String, String, String)> {
    let mut names = Vec::new();
    for scope in ["watchNamespaces=[]", r#"watchNamespaces=["apps"]"#] {
        let mut a = vec![
            "template",
            name,
            CHART,
            "--namespace",
            namespace,
            "--kube-version",
            "1.33.0",
            "--set",
            "serviceMonitor.enabled=true,prometheusRule.enabled=true,autoscaling.enabled=true",
            "--set-json",
            scope,
        ];
        for s in sets {
            a.extend_from_slice(&["--set", s]);
        }
        let docs: Vec<Value> = serde_saphyr::from_multiple(&helm_ok(&a)).unwrap();
        let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        names.extend(docs.iter().filter(|o| !o.is_null()).map(|o| {
            (
                s(&o["kind"]),
                s(&o["metadata"]["namespace"]),
                s(&o["metadata"]["name"]),
            )
        }));
    }
    names.sort();
    names.dedup();
    names
}

/// Releases side by side (charts/accessgate/README.md, "Several installs in one cluster"): two of one name in two
/// namespaces, two of two names in one namespace. Apart from the CRD, which only the first
/// installs, no two share a named object: not the Service their status names, not the Lease or
/// the host ledger, not a ClusterRole or binding. And each has its own class.
#[test]
fn releases_side_by_side_share_no_named_object() {
    let second = ["crds.install=false", "className=blue"];
    let releases = [
        object_names("accessgate", "accessgate-system", &[]),
        object_names("accessgate", "accessgate-blue", &second),
        object_names("blue", "accessgate-system", &second),
    ];
    for (i, a) in releases.iter().enumerate() {
        assert!(
            a.iter().any(|(k, _, _)| k == "ClusterRoleBinding")
                && a.iter().any(|(k, _, _)| k == "RoleBinding"),
            "{a:?}"
        );
        for b in &releases[i + 1..] {
            let shared: Vec<_> = a.iter().filter(|o| b.contains(o)).collect();
            assert!(shared.is_empty(), "shared: {shared:?}");
        }
    }
    assert_eq!(
        releases
            .iter()
            .filter(|r| r.iter().any(|(k, _, _)| k == "CustomResourceDefinition"))
            .count(),
        1
    );
}

/// The CRD comes from templates/ (so `helm upgrade` applies it), is exactly what
/// `accessgate crd` generates, and carries the keep annotation unless told otherwise.
#[test]
fn crd_is_rendered_from_templates_with_keep() {
    let objs = render(&[]);
    let crd = find(&objs, "CustomResourceDefinition")[0].clone();
    assert_eq!(crd["metadata"]["name"], CRD_NAME);
    assert_eq!(
        crd["metadata"]["annotations"],
        json!({"helm.sh/resource-policy": "keep"})
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    // Apart from Helm's labels and the annotation, the rendered CRD is the generated one
    // (helm re-serialises it: `minimum: 0.0` comes out as `0`, the same number to the API
    // server, so numbers are compared as numbers).
    let mut bare = crd.clone();
    bare["metadata"] = json!({"name": CRD_NAME});
    assert!(
        numbers_as_f64(bare) == numbers_as_f64(read_yaml(Path::new(CHART_CRD))),
        "the rendered CRD differs from files/accesspolicy-crd.yaml"
    );
    assert_eq!(
        std::fs::read_to_string(CHART_CRD).unwrap(),
        std::fs::read_to_string(GENERATED_CRD).unwrap(),
        "charts/accessgate/files/accesspolicy-crd.yaml differs from crds/accesspolicy.yaml: copy it over"
    );

    let objs = render(&["--set", "crds.keep=false"]);
    let crd = find(&objs, "CustomResourceDefinition")[0];
    assert!(crd["metadata"].get("annotations").is_none(), "{crd}");
    let objs = render(&["--set", "crds.install=false"]);
    assert!(find(&objs, "CustomResourceDefinition").is_empty());
}

/// `v` with every number as a float, so `0` and `0.0` compare equal.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}

/// A PodDisruptionBudget only where it can be satisfied during a drain.
#[test]
fn pdb_only_with_more_than_one_replica() {
    let count = |sets: &str| find(&render(&["--set", sets]), "PodDisruptionBudget").len();
    assert_eq!(count("replicaCount=1"), 0);
    assert_eq!(count("replicaCount=2"), 1);
    assert_eq!(
        count("autoscaling.enabled=true,autoscaling.minReplicas=1"),
        0
    );
    assert_eq!(
        count("autoscaling.enabled=true,autoscaling.minReplicas=2,replicaCount=1"),
        1
    );
    let objs = render(&[
        "--set",
        "podDisruptionBudget.minAvailable=50%,podDisruptionBudget.unhealthyPodEvictionPolicy=IfHealthyBudget",
    ]);
    let pdb = find(&objs, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["minAvailable"], "50%");
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "IfHealthyBudget");
}

/// get/patch on the release's own Lease and host ledger ConfigMap only; create stands alone
/// (RBAC cannot scope it by name: the name is in the body, not the URL).
#[test]
fn own_namespace_rbac_is_scoped_to_the_release_lease_and_ledger() {
    for (sets, lease, ledger) in [
        (vec![], "accessgate-leader", "accessgate-hosts"),
        (
            vec!["--set", "fullnameOverride=gate"],
            "gate-leader",
            "gate-hosts",
        ),
    ] {
        let objs = render(&sets);
        assert!(args(&objs).contains(&format!("--lease-name={lease}")));
        assert!(args(&objs).contains(&format!("--host-ledger={ledger}")));
        let rules = find(&objs, "Role")[0]["rules"].as_array().unwrap().clone();
        assert_eq!(rules.len(), 4, "{rules:?}");
        for r in &rules {
            let name = match r["resources"].as_array().unwrap().as_slice() {
                [l] if l == "leases" => lease,
                [c] if c == "configmaps" => ledger,
                other => panic!("unexpected resources {other:?}"),
            };
            let verbs = r["verbs"].as_array().unwrap();
            if verbs.contains(&json!("create")) {
                assert_eq!(verbs, &[json!("create")], "create shares a rule: {r}");
                assert!(r.get("resourceNames").is_none());
            } else {
                assert_eq!(r["resourceNames"], json!([name]), "{r}");
            }
        }
    }
}

/// App teams manage AccessPolicies through the built-in roles; nobody but accessgate
/// writes status.
#[test]
fn aggregated_cluster_roles_for_app_teams() {
    let objs = render(&[]);
    let view = named(&objs, "ClusterRole", "accessgate-system:accessgate-view");
    let edit = named(&objs, "ClusterRole", "accessgate-system:accessgate-edit");
    let labels = |o: &Value, key: &str| o["metadata"]["labels"][key].clone();
    for key in ["view", "edit", "admin"] {
        assert_eq!(
            labels(
                view,
                &format!("rbac.authorization.k8s.io/aggregate-to-{key}")
            ),
            "true"
        );
    }
    assert!(labels(edit, "rbac.authorization.k8s.io/aggregate-to-view").is_null());
    for key in ["edit", "admin"] {
        assert_eq!(
            labels(
                edit,
                &format!("rbac.authorization.k8s.io/aggregate-to-{key}")
            ),
            "true"
        );
    }
    assert_eq!(view["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    for role in [view, edit] {
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(rule["resources"], json!(["accesspolicies"]), "{rule}");
        }
    }
    let objs = render(&["--set", "rbac.aggregateClusterRoles=false"]);
    assert_eq!(find(&objs, "ClusterRole").len(), 1);
}

#[test]
fn pod_values_render() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let objs = render(&[
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "extraArgs={--identity-cache-mib=8}",
        "--set",
        "extraEnv[0].name=SSL_CERT_FILE,extraEnv[0].value=/etc/accessgate/ca/bundle.pem",
        "--set",
        "extraVolumes[0].name=ca,extraVolumes[0].configMap.name=ca-bundle",
        "--set",
        "extraVolumeMounts[0].name=ca,extraVolumeMounts[0].mountPath=/etc/accessgate/ca,extraVolumeMounts[0].readOnly=true",
        "--set",
        "podSecurityContext.runAsUser=10001,podSecurityContext.fsGroup=null",
        "--set",
        "securityContext.readOnlyRootFilesystem=true,securityContext.runAsUser=10001",
        "--set",
        "livenessProbe.periodSeconds=20,livenessProbe.failureThreshold=6",
        "--set",
        "readinessProbe.periodSeconds=2,readinessProbe.timeoutSeconds=1",
        "--set",
        "terminationGracePeriodSeconds=90,drainSeconds=30",
    ]);
    let pod = &deployment(&objs)["spec"]["template"]["spec"];
    let c = container(&objs);
    assert_eq!(
        c["image"],
        format!("ghcr.io/accessgate/accessgate@{digest}")
    );
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(args(&objs).last().unwrap(), "--identity-cache-mib=8");
    let env = c["env"].as_array().unwrap();
    assert_eq!(
        env[0]["name"], "POD_NAME",
        "the chart's own env stays first"
    );
    assert_eq!(
        env.last().unwrap(),
        &json!({"name": "SSL_CERT_FILE", "value": "/etc/accessgate/ca/bundle.pem"})
    );
    assert_eq!(
        pod["volumes"],
        json!([{"name": "ca", "configMap": {"name": "ca-bundle"}}])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "ca", "mountPath": "/etc/accessgate/ca", "readOnly": true}])
    );
    // Overrides merge with the defaults; null removes a key.
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"].get("fsGroup").is_none());
    assert_eq!(c["securityContext"]["runAsUser"], 10001);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["periodSeconds"], 20);
    assert_eq!(c["livenessProbe"]["failureThreshold"], 6);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 2);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
    assert_eq!(pod["terminationGracePeriodSeconds"], 90);
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 30);

    // No preStop hook at all with drainSeconds=0.
    let objs = render(&["--set", "drainSeconds=0"]);
    assert!(container(&objs).get("lifecycle").is_none());
    // The grace period has to leave the process time after the sleep.
    refused(&["drainSeconds=40"], "must be larger than drainSeconds");
}

#[test]
fn autoscaling_renders_an_hpa_and_leaves_replicas_to_it() {
    let objs = render(&[
        "--set",
        "autoscaling.enabled=true,autoscaling.minReplicas=3,autoscaling.maxReplicas=9,autoscaling.targetCPUUtilizationPercentage=60",
    ]);
    assert!(
        deployment(&objs)["spec"].get("replicas").is_none(),
        "the HPA owns the replica count"
    );
    let hpa = find(&objs, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "accessgate");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 9);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"],
        json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}})
    );
    refused(
        &["autoscaling.enabled=true,autoscaling.minReplicas=5,autoscaling.maxReplicas=2"],
        "minReplicas",
    );
}

/// `helm test`: a Pod that asks the Service's admin port for /readyz, never selected by the
/// Service itself, and admitted by the NetworkPolicy.
#[test]
fn helm_test_pod_checks_readyz_through_the_service() {
    let objs = render(&["--set", "networkPolicy.enabled=true"]);
    let pod = named(&objs, "Pod", "accessgate-test-readyz");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "curlimages/curl:8.17.0");
    assert_eq!(
        c["args"].as_array().unwrap().last().unwrap(),
        "http://accessgate.accessgate-system.svc:9090/readyz"
    );
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    // The Service's selector must not match the test Pod.
    let selector = find(&objs, "Service")[0]["spec"]["selector"]
        .as_object()
        .unwrap()
        .clone();
    let labels = &pod["metadata"]["labels"];
    assert!(
        selector.iter().any(|(k, v)| &labels[k] != v),
        "the Service would send traffic to the test Pod: {labels}"
    );
    // The NetworkPolicy admits exactly these labels to the admin port.
    let np = find(&objs, "NetworkPolicy")[0];
    let admitted = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["from"][0]["podSelector"].is_object())
        .expect("a rule for the test Pod");
    assert_eq!(admitted["ports"][0]["port"], "metrics");
    for (k, v) in admitted["from"][0]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[k], v, "{k}");
    }
    let digest = format!("sha256:{}", "cd".repeat(32));
    let objs = render(&["--set", &format!("tests.image.digest={digest}")]);
    assert_eq!(
        named(&objs, "Pod", "accessgate-test-readyz")["spec"]["containers"][0]["image"],
        format!("curlimages/curl@{digest}")
    );
    let objs = render(&["--set", "tests.enabled=false,networkPolicy.enabled=true"]);
    assert!(find(&objs, "Pod").is_empty());
    assert_eq!(
        find(&objs, "NetworkPolicy")[0]["spec"]["ingress"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The NetworkPolicy is on by default: the auth port admits the ingress controllers'
/// namespaces only, the admin port the scraper's (with the ServiceMonitor) and the test Pod;
/// the kubelet's probes come from the node, which a NetworkPolicy always admits.
#[test]
fn network_policy_is_on_by_default_for_the_controllers_and_the_scraper() {
    let from_namespaces = |rule: &Value| -> Vec<String> {
        rule["from"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| {
                f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
            })
            .map(str::to_owned)
            .collect()
    };
    let objs = render(&[]);
    let rules = find(&objs, "NetworkPolicy")[0]["spec"]["ingress"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules.len(), 2, "auth port and the test Pod: {rules:?}");
    assert_eq!(from_namespaces(&rules[0]), ["ingress-nginx"]);
    assert_eq!(
        rules[0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );

    let objs = render(&[
        "--set",
        "networkPolicy.ingressControllerNamespaces={ingress-nginx,traefik}",
        "--set",
        "networkPolicy.ingressControllerPodLabels.app=proxy",
        "--set",
        "serviceMonitor.enabled=true,tests.enabled=false",
        "--set",
        "networkPolicy.extraIngress[0].from[0].ipBlock.cidr=10.0.0.0/16",
    ]);
    let rules = find(&objs, "NetworkPolicy")[0]["spec"]["ingress"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(from_namespaces(&rules[0]), ["ingress-nginx", "traefik"]);
    for from in rules[0]["from"].as_array().unwrap() {
        assert_eq!(from["podSelector"]["matchLabels"], json!({"app": "proxy"}));
    }
    assert_eq!(from_namespaces(&rules[1]), ["monitoring"]);
    assert_eq!(rules[1]["ports"][0]["port"], "metrics");
    assert_eq!(rules[2]["from"][0]["ipBlock"]["cidr"], "10.0.0.0/16");
    assert_eq!(rules.len(), 3);

    // Off when asked; an empty controller list would admit nothing and is refused.
    assert!(
        find(
            &render(&["--set", "networkPolicy.enabled=false"]),
            "NetworkPolicy"
        )
        .is_empty()
    );
    refused(&["networkPolicy.ingressControllerNamespaces={}"], "schema");
    refused(
        &["networkPolicy.ingressControllerNamespaces=null"],
        "networkPolicy.ingressControllerNamespaces is empty",
    );
    refused(
        &["networkPolicy.ingressControllerNamespaces={Ingress_Nginx}"],
        "schema",
    );
    refused(
        &["networkPolicy.ingressControllerNamespace=ingress-nginx"],
        "schema",
    );
}

/// The auth listener's connection limits reach the binary; the memory limit holds a full cap
/// of slow-header connections (144 KiB each, values.yaml has the arithmetic).
#[test]
fn listener_limits_render_into_args_and_fit_the_memory_limit() {
    let defaults = args(&render(&[]));
    for want in [
        "--max-connections=1024",
        "--request-head-timeout=10s",
        "--idle-timeout=120s",
    ] {
        assert!(
            defaults.contains(&want.to_owned()),
            "{want} not in {defaults:?}"
        );
    }
    let objs = render(&[
        "--set",
        "listener.maxConnections=200,listener.requestHeadTimeout=5s,listener.idleTimeout=5m",
    ]);
    let set = args(&objs);
    for want in [
        "--max-connections=200",
        "--request-head-timeout=5s",
        "--idle-timeout=5m",
    ] {
        assert!(set.contains(&want.to_owned()), "{want} not in {set:?}");
    }
    let values = read_yaml(&Path::new(CHART).join("values.yaml"));
    let limit_mib: u64 = values["resources"]["limits"]["memory"]
        .as_str()
        .unwrap()
        .strip_suffix("Mi")
        .unwrap()
        .parse()
        .unwrap();
    let cap = values["listener"]["maxConnections"].as_u64().unwrap();
    // Connections + admin + baseline + full token and identity caches.
    assert!(
        cap * 144 / 1024 + 2 + 35 + 48 < limit_mib,
        "{cap} connections in {limit_mib} MiB"
    );

    for bad in [
        "listener.maxConnections=0",
        "listener.requestHeadTimeout=0s",
        "listener.idleTimeout=soon",
        "listener.nope=1",
    ] {
        refused(&[bad], "schema");
    }
    // Where the schema and the binary read the same duration, they agree.
    for sample in [
        "1s", "10s", "2m", "1000ms", "999ms", "0s", "500ms", "1x", "-1s",
    ] {
        let (schema, binary) = verdicts("listener.requestHeadTimeout", json!(sample));
        assert_eq!(schema, binary, "{sample}: schema {schema}, binary {binary}");
    }
}

/// Umbrella charts pass `global`; the strict schema accepts it (and nothing else unknown).
#[test]
fn global_values_are_accepted() {
    let objs = render(&[
        "--set",
        "global.imageRegistry=registry.example,global.anything.nested=1",
    ]);
    assert_eq!(find(&objs, "Deployment").len(), 1);
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
        // New values: each refuses a wrong type, an unknown key, or a malformed value.
        "global=1",
        "crds.enabled=true",
        "crds.keep=yes",
        "image.digest=latest",
        "image.nope=1",
        "fullnameOverride=Not_A_Name",
        "extraArgs={run}",
        "extraEnv[0].value=x",
        "extraVolumeMounts[0].name=ca",
        "drainSeconds=-1",
        "terminationGracePeriodSeconds=0",
        "livenessProbe.httpGet.path=/",
        "readinessProbe.periodSeconds=0",
        "podDisruptionBudget.unhealthyPodEvictionPolicy=Never",
        "podDisruptionBudget.minAvailable=half",
        "autoscaling.minReplicas=0",
        "autoscaling.targetMemoryUtilizationPercentage=80",
        "rbac.create=false",
        "prometheusRule.denyRatio=2",
        "prometheusRule.denyRatio=1.5",
        "prometheusRule.denyMinRequestsPerSecond=lots",
        "prometheusRule.nope=1",
        "dashboards.namespace=Monitoring",
        "tests.image.repository=",
        "resources.cpu=1",
    ] {
        refused(&[bad], "schema");
    }
}

fn kubectl_json(cp: &ControlPlane, args: &[&str]) -> Value {
    cp.get_json(args)
}

#[test]
fn installs_into_a_real_api_server_and_its_service_account_runs_the_controller() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let kc = cp.admin_kubeconfig();
    let kc = kc.to_str().unwrap();
    let install = [
        "install",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--create-namespace",
        "--kubeconfig",
        kc,
    ];

    // `helm install` itself refuses every value that would crash-loop the pod, naming its
    // key: the schema check runs before any object reaches the API server.
    for bad in CRASHING {
        let mut args = install.to_vec();
        args.extend_from_slice(&["--set", bad.set]);
        let (ok, _, err) = helm(&args);
        assert!(!ok, "helm install took {}", bad.set);
        assert!(
            err.contains(&format!("at '{}'", bad.key)),
            "{}: {err}",
            bad.set
        );
    }

    // The harness applied the CRD with kubectl, as chart 0.1.x did from crds/: Helm will not
    // take over an object it did not create ...
    let (ok, _, err) = helm(&install);
    assert!(!ok, "helm adopted a CRD without ownership metadata");
    assert!(err.contains("invalid ownership metadata"), "{err}");
    // ... until it is labelled and annotated as the release's (charts/accessgate/README.md, "Upgrading from chart 0.1.x").
    cp.kubectl_ok(&[
        "label",
        "crd",
        CRD_NAME,
        "app.kubernetes.io/managed-by=Helm",
    ]);
    cp.kubectl_ok(&[
        "annotate",
        "crd",
        CRD_NAME,
        "meta.helm.sh/release-name=accessgate",
        &format!("meta.helm.sh/release-namespace={NS}"),
    ]);
    let notes = helm_ok(&install);
    assert!(
        notes.contains("nginx.ingress.kubernetes.io/auth-url"),
        "{notes}"
    );
    assert!(
        notes.contains("http://accessgate.accessgate-system.svc.cluster.local/auth/"),
        "{notes}"
    );
    let crd = kubectl_json(&cp, &["crd", CRD_NAME]);
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    // What the controller needs: yes. A sample of what it must not have: no.
    let can = |args: &[&str], who: &str| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--as", who]);
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
        vec![
            "get",
            "leases.coordination.k8s.io/accessgate-leader",
            "-n",
            NS,
        ],
        vec![
            "patch",
            "leases.coordination.k8s.io/accessgate-leader",
            "-n",
            NS,
        ],
        vec!["create", "leases.coordination.k8s.io", "-n", NS],
    ] {
        assert_eq!(can(&yes, SA), "yes", "{yes:?}");
    }
    for no in [
        vec!["delete", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["update", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["patch", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["get", "secrets", "-n", NS],
        vec!["list", "pods", "-A"],
        // Only its own Lease, and only in its namespace.
        vec!["get", "leases.coordination.k8s.io/other-leader", "-n", NS],
        vec!["patch", "leases.coordination.k8s.io/other-leader", "-n", NS],
        vec!["list", "leases.coordination.k8s.io", "-n", NS],
        vec![
            "delete",
            "leases.coordination.k8s.io/accessgate-leader",
            "-n",
            NS,
        ],
        vec!["patch", "leases.coordination.k8s.io", "-n", "kube-system"],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ] {
        assert_eq!(can(&no, SA), "no", "{no:?}");
    }

    // The aggregated roles, bound directly (no controller-manager here to aggregate them into
    // edit/view): an app team edits policies in its namespace, never their status.
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    for role in [
        "accessgate-system:accessgate-view",
        "accessgate-system:accessgate-edit",
    ] {
        cp.kubectl_ok(&[
            "create",
            "rolebinding",
            role.trim_start_matches("accessgate-system:"),
            &format!("--clusterrole={role}"),
            "--user=alice",
            "-n",
            "apps",
        ]);
    }
    for yes in [
        vec!["create", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["patch", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["delete", "accesspolicies.accessgate.dev", "-n", "apps"],
        vec!["list", "accesspolicies.accessgate.dev", "-n", "apps"],
    ] {
        assert_eq!(can(&yes, "alice"), "yes", "{yes:?}");
    }
    for no in [
        vec![
            "patch",
            "accesspolicies.accessgate.dev",
            "--subresource=status",
            "-n",
            "apps",
        ],
        vec!["create", "accesspolicies.accessgate.dev", "-n", "other"],
    ] {
        assert_eq!(can(&no, "alice"), "no", "{no:?}");
    }

    // The installed ServiceAccount's token runs the controller (out of cluster: no kubelet
    // here), leader election included under the name-scoped Lease rules.
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
    let lease = cp.get_json(&["lease", "accessgate-leader", "-n", NS]);
    assert_eq!(lease["spec"]["holderIdentity"], "local");

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
        "--set",
        "jwks.refresh=10s,jwks.retry=1h30m,fetch.allowCidrs={10.96.0.0/12,fd00::/8}",
    ]);
    let dep = cp.get_json(&["deployment", "accessgate", "-n", NS]);
    assert_eq!(dep["spec"]["replicas"], 3);
    let args = &dep["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--jwks-retry=1h30m")),
        "{args}"
    );
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
    cp.kubectl_ok(&["get", "crd", CRD_NAME]);
    cp.kubectl_ok(&["get", "accesspolicy", "web", "-n", "apps"]);
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The chart as the next release would ship it: the CRD gained an optional restricting field
/// in `spec` (`maxTokenAge`), the chart version is bumped.
fn next_chart(dir: &Path) -> String {
    let chart = dir.join("accessgate");
    copy_dir(Path::new(CHART), &chart);
    let crd_path = chart.join("files/accesspolicy-crd.yaml");
    let mut crd = read_yaml(&crd_path);
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert!(spec.get("maxTokenAge").is_none(), "pick another test field");
    spec["maxTokenAge"] = json!({
        "description": "Refuse tokens issued longer ago than this (test field).",
        "type": "string",
        "pattern": "^[0-9]+(s|m|h)$"
    });
    // JSON is YAML: the template reads it with fromYaml all the same.
    std::fs::write(&crd_path, serde_json::to_string_pretty(&crd).unwrap()).unwrap();
    let meta_path = chart.join("Chart.yaml");
    let meta: String = std::fs::read_to_string(&meta_path)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("version:") {
                "version: 0.99.0".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&meta_path, meta + "\n").unwrap();
    chart.to_str().unwrap().to_owned()
}

/// `helm upgrade` applies CRD changes (a chart's crds/ never would: the API server would
/// prune a new restricting field from stored policies, failing open), and the CRD with its
/// policies outlives the release.
#[test]
fn crd_upgrade_applies_new_fields_and_uninstall_keeps_crd_and_policies() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let kc = cp.admin_kubeconfig();
    let kc = kc.to_str().unwrap();
    // A cluster without the CRD: the chart creates it.
    cp.kubectl_ok(&["delete", "crd", CRD_NAME, "--wait=true"]);
    helm_ok(&[
        "install",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--create-namespace",
        "--kubeconfig",
        kc,
    ]);
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{CRD_NAME}"),
        "--timeout=60s",
    ]);
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    let policy = |name: &str| {
        json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"issuer": {"url": "https://issuer.example", "jwksUri": "https://issuer.example/keys"},
                     "audiences": [AUD], "maxTokenAge": "10m"}})
        .to_string()
    };
    let stored = |name: &str| {
        cp.get_json(&["accesspolicy", name, "-n", "apps"])["spec"]["maxTokenAge"].clone()
    };

    // Before the upgrade the API server does not know the field: strict validation refuses
    // it, and a client that skips validation has it silently pruned.
    let err = cp.apply(&policy("web")).unwrap_err();
    assert!(err.contains("maxTokenAge"), "{err}");
    let (ok, _, err) = cp.kubectl(
        &["apply", "--validate=false", "-f", "-"],
        Some(&policy("web")),
    );
    assert!(ok, "{err}");
    assert!(stored("web").is_null(), "an unknown field was stored");

    // The next chart version's CRD has it; `helm upgrade` applies the CRD.
    let tmp = tempfile::tempdir().unwrap();
    let next = next_chart(tmp.path());
    helm_ok(&[
        "upgrade",
        "accessgate",
        &next,
        "--namespace",
        NS,
        "--kubeconfig",
        kc,
    ]);
    let crd = cp.get_json(&["crd", CRD_NAME]);
    assert!(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["maxTokenAge"]
            .is_object(),
        "helm upgrade did not apply the CRD change"
    );
    assert_eq!(
        crd["metadata"]["labels"]["helm.sh/chart"],
        "accessgate-0.99.0"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // The API server picks the new schema up within moments; then the field is stored.
    let applied = eventually(Duration::from_secs(30), || {
        cp.apply(&policy("web")).is_ok() && stored("web") == "10m"
    });
    assert!(applied, "the new field was not stored after the upgrade");
    cp.apply(&policy("api")).unwrap();
    assert_eq!(stored("api"), "10m");

    // Dropping the CRD from the release (crds.install=false) does not delete it: keep.
    helm_ok(&[
        "upgrade",
        "accessgate",
        &next,
        "--namespace",
        NS,
        "--kubeconfig",
        kc,
        "--set",
        "crds.install=false",
    ]);
    cp.kubectl_ok(&["get", "crd", CRD_NAME]);

    // Uninstall keeps the CRD and every policy, new field included.
    helm_ok(&[
        "uninstall",
        "accessgate",
        "--namespace",
        NS,
        "--kubeconfig",
        kc,
    ]);
    let (gone, _, _) = cp.kubectl(&["get", "deployment", "accessgate", "-n", NS], None);
    assert!(!gone, "uninstall left the Deployment");
    cp.kubectl_ok(&["get", "crd", CRD_NAME]);
    assert_eq!(stored("web"), "10m");
    assert_eq!(stored("api"), "10m");

    // Installing again under the same release name takes the kept CRD back over.
    helm_ok(&[
        "install",
        "accessgate",
        &next,
        "--namespace",
        NS,
        "--kubeconfig",
        kc,
    ]);
    let crd = cp.get_json(&["crd", CRD_NAME]);
    assert_eq!(
        crd["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "accessgate"
    );
    assert_eq!(stored("web"), "10m");
}

/// A value that passes a loose schema but stops `accessgate` at start: a crash-looping
/// Deployment. The schema refuses it (helm names `key`); rendered anyway, the binary refuses
/// the flag it becomes, naming `flag` and, where clap quotes one, the value.
struct Crashing {
    set: &'static str,
    key: &'static str,
    flag: &'static str,
    value: Option<&'static str>,
}

const fn crashing(
    set: &'static str,
    key: &'static str,
    flag: &'static str,
    value: Option<&'static str>,
) -> Crashing {
    Crashing {
        set,
        key,
        flag,
        value,
    }
}

const CRASHING: &[Crashing] = &[
    crashing(
        "jwks.refresh=0s",
        "/jwks/refresh",
        "--jwks-refresh",
        Some("0s"),
    ),
    crashing(
        "jwks.refresh=9s",
        "/jwks/refresh",
        "--jwks-refresh",
        Some("9s"),
    ),
    crashing("jwks.retry=1s", "/jwks/retry", "--jwks-retry", Some("1s")),
    crashing(
        "jwks.refetchMinInterval=9999ms",
        "/jwks/refetchMinInterval",
        "--jwks-refetch-min-interval",
        Some("9999ms"),
    ),
    crashing(
        "jwks.maxStale=1x",
        "/jwks/maxStale",
        "--jwks-max-stale",
        Some("1x"),
    ),
    crashing(
        "jwks.timeout=5",
        "/jwks/timeout",
        "--jwks-timeout",
        Some("5"),
    ),
    crashing(
        "leaseDuration=-10s",
        "/leaseDuration",
        "--lease-duration",
        Some("-10s"),
    ),
    crashing(
        "statusInterval=soon",
        "/statusInterval",
        "--status-interval",
        Some("soon"),
    ),
    crashing("logLevel=nonsense", "/logLevel", "--log", Some("nonsense")),
    crashing(
        "logLevel=accessgate=verbose",
        "/logLevel",
        "--log",
        Some("accessgate=verbose"),
    ),
    crashing("logLevel=INFO", "/logLevel", "--log", Some("INFO")),
    crashing("className=Blue", "/className", "--class", Some("Blue")),
    crashing(
        "className=blue.green",
        "/className",
        "--class",
        Some("blue.green"),
    ),
    crashing("logLevel=", "/logLevel", "--log", Some("")),
    crashing(
        "clusterDomain=cluster.local.",
        "/clusterDomain",
        "--cluster-domain",
        Some("cluster.local."),
    ),
    crashing(
        "fetch.allowCidrs={300.1.1.1/8}",
        "/fetch/allowCidrs/0",
        "--allow-fetch-cidr",
        Some("300.1.1.1/8"),
    ),
    crashing(
        "fetch.allowCidrs={10.0.0.0/33}",
        "/fetch/allowCidrs/0",
        "--allow-fetch-cidr",
        Some("10.0.0.0/33"),
    ),
    crashing(
        "fetch.allowCidrs={fe80::1%eth0}",
        "/fetch/allowCidrs/0",
        "--allow-fetch-cidr",
        Some("fe80::1%eth0"),
    ),
    // A flag the chart sets, again: clap refuses the second one.
    crashing(
        "extraArgs={--jwks-refresh=1m}",
        "/extraArgs/0",
        "--jwks-refresh",
        None,
    ),
    crashing("extraArgs={--log=debug}", "/extraArgs/0", "--log", None),
    crashing(
        "extraArgs={--service-port=81}",
        "/extraArgs/0",
        "--service-port",
        None,
    ),
];

/// Values that must keep working, each in the form an operator would write it.
const GOOD: &[&str] = &[
    "logLevel=warn\\,accessgate=debug",
    "logLevel=accessgate::keys=trace",
    "logLevel=off",
    "jwks.refresh=10s,jwks.retry=10000ms,jwks.refetchMinInterval=1m",
    "jwks.refresh=1h30m,jwks.maxStale=2d,jwks.timeout=500ms",
    "statusInterval=1m30s,leaseDuration=15s",
    "fetch.allowCidrs={10.96.0.0/12,fd00::/8,127.0.0.1,::1,::ffff:10.0.0.0/104}",
    "extraArgs={--token-cache-mib=64,--identity-cache-mib=8}",
    "className=blue",
    "className=green,claimUnclassed=true",
    "claimUnclassed=false",
    "clusterDomain=corp.internal",
];

/// `helm template` with these `--set`s, the schema check skipped or not.
fn template(sets: &[&str], skip_schema: bool) -> (bool, String, String) {
    let mut args = vec![
        "template",
        "accessgate",
        CHART,
        "--namespace",
        NS,
        "--kube-version",
        "1.33.0",
    ];
    if skip_schema {
        args.push("--skip-schema-validation");
    }
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    helm(&args)
}

/// The accessgate container's args in a rendered chart.
fn rendered_args(manifests: &str) -> Vec<String> {
    let objs: Vec<Value> = serde_saphyr::from_multiple(manifests).unwrap();
    let objs: Vec<Value> = objs.into_iter().filter(|o| !o.is_null()).collect();
    let args = &container(&objs)["args"];
    assert!(
        args.is_array(),
        "no args in the rendered Deployment: {args}"
    );
    args.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("arg {a} is not a string"))
                .to_owned()
        })
        .collect()
}

/// `accessgate` parses `args` as a pod would start it, with `--help` last: every value goes
/// through its flag's parser, and nothing runs. `Err` holds clap's message.
fn binary_parses(args: &[String]) -> Result<(), String> {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Each value that would crash-loop the pod is refused by the schema, naming its key; and
/// it really would: rendered without the schema check, the binary refuses the args, naming
/// the flag and the value.
#[test]
fn values_that_would_crash_the_pod_are_refused_and_would_crash_it() {
    for bad in CRASHING {
        let (ok, _, err) = template(&[bad.set], false);
        assert!(!ok, "{} was accepted", bad.set);
        assert!(
            err.contains(&format!("at '{}'", bad.key)),
            "{}: {err}",
            bad.set
        );

        let (ok, out, err) = template(&[bad.set], true);
        assert!(ok, "{}: {err}", bad.set);
        let refusal = binary_parses(&rendered_args(&out))
            .expect_err(&format!("the binary accepted {}", bad.set));
        assert!(refusal.contains(bad.flag), "{}: {refusal}", bad.set);
        if let Some(value) = bad.value {
            assert!(
                refusal.contains(&format!("'{value}'")),
                "{}: {refusal}",
                bad.set
            );
        }
    }
}

/// The defaults and values written the ways operators write them pass the schema, and the
/// binary parses the args they render.
#[test]
fn default_and_good_values_pass_the_schema_and_the_binary() {
    for good in [
        &[][..],
        &[
            "watchNamespaces={a,b}",
            "hostClaims.team-a={*.a.example.com}",
        ][..],
    ]
    .into_iter()
    .chain(GOOD.iter().map(std::slice::from_ref))
    {
        let (ok, out, err) = template(good, false);
        assert!(ok, "{good:?}: {err}");
        binary_parses(&rendered_args(&out)).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
}

/// Verdicts on one value at `key` (a dotted path): the schema's, and the binary's on the args
/// rendered from it without the schema check.
fn verdicts(key: &str, value: Value) -> (bool, bool) {
    let mut values = value;
    for k in key.rsplit('.') {
        values = json!({ k: values });
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), values.to_string()).unwrap();
    let path = file.path().to_str().unwrap();
    let with = |skip: bool| {
        let mut args = vec![
            "template",
            "accessgate",
            CHART,
            "--namespace",
            NS,
            "--kube-version",
            "1.33.0",
            "-f",
            path,
        ];
        if skip {
            args.push("--skip-schema-validation");
        }
        helm(&args)
    };
    let (schema_ok, _, _) = with(false);
    let (rendered, out, err) = with(true);
    assert!(rendered, "{key}={values}: {err}");
    (schema_ok, binary_parses(&rendered_args(&out)).is_ok())
}

/// Where the schema and `accessgate` parse the same text, they agree on every sample: the
/// schema never passes a value the binary refuses (a crash loop), nor refuses one it takes.
/// The schema is stricter only where noted (durations: units ms, s, m, h, d, no spaces).
#[test]
fn schema_and_binary_agree_on_log_filters_cidrs_and_durations() {
    let log_filters = [
        "info",
        "warn,accessgate=debug",
        "accessgate::keys=trace",
        "kube_runtime=warn,info",
        "off",
        "nonsense",
        "warn,nonsense",
        "INFO",
        "info,",
        "accessgate=",
        "=debug",
        "info debug",
        "accessgate:keys=debug",
        "[span]=debug",
        "accessgate-x=debug",
    ];
    let cidrs = [
        "10.96.0.0/12",
        "127.0.0.1",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "::1",
        "::",
        "fd00::/8",
        "2001:db8::1/128",
        "::ffff:10.0.0.0/104",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:1.2.3.4",
        "1::",
        "300.1.1.1/8",
        "10.0.0.0/33",
        "1.2.3",
        "1.2.3.4.5",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "1:2:3:4:5:6::1.2.3.4",
        "::1/129",
        "12345::1",
        "[::1]",
        "fe80::1%eth0",
        "everything",
        "",
    ];
    for (key, samples) in [
        ("logLevel", &log_filters[..]),
        (
            "jwks.refresh",
            &[
                "10s", "1m", "0m10s", "10000ms", "1h30m", "2d", "9s", "0s", "9999ms", "1x", "-10s",
            ][..],
        ),
        (
            "jwks.maxStale",
            &["0s", "24h", "90m", "1h30m", "soon", "1x", "-1s"][..],
        ),
        (
            "clusterDomain",
            &[
                "cluster.local",
                "corp.internal",
                "k8s",
                "a-b.c1",
                "Cluster.local",
                "cluster.local.",
                ".cluster.local",
                "cluster..local",
                "-a.local",
                "a-.local",
                "a_b.local",
                "cluster local",
                "",
            ][..],
        ),
    ] {
        for sample in samples {
            let (schema, binary) = verdicts(key, json!(sample));
            assert_eq!(
                schema, binary,
                "{key}={sample:?}: schema {schema}, binary {binary}"
            );
        }
    }
    for cidr in cidrs {
        let (schema, binary) = verdicts("fetch.allowCidrs", json!([cidr]));
        assert_eq!(schema, binary, "{cidr:?}: schema {schema}, binary {binary}");
    }
    // Stricter than the binary, on purpose: one way to write a duration.
    for sample in ["10 s", "5s5s", "1min"] {
        assert_eq!(
            verdicts("jwks.refresh", json!(sample)),
            (false, true),
            "{sample}"
        );
    }
}

/// The flags `accessgate run` reads from each environment variable (`[env: NAME=]` in its
/// help), and every flag it has.
fn run_flags() -> (Vec<String>, Vec<(String, String)>) {
    let out = std::process::Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let (mut flags, mut env) = (Vec::new(), Vec::new());
    for line in help.lines() {
        let line = line.trim_start();
        if let Some(rest) = line
            .strip_prefix("-h, ")
            .or(Some(line))
            .and_then(|l| l.strip_prefix("--"))
        {
            let name = rest.split([' ', '=']).next().unwrap();
            flags.push(name.to_owned());
        } else if let Some(var) = line.split("[env: ").nth(1) {
            let var = var.split('=').next().unwrap().to_owned();
            env.push((var, flags.last().cloned().unwrap()));
        }
    }
    (flags, env)
}

/// The flags the Deployment passes: `--name` in the list items of the template (whatever
/// value they need to render), and those set through an environment variable it defines.
fn chart_set_flags() -> Vec<String> {
    let template =
        std::fs::read_to_string(Path::new(CHART).join("templates/deployment.yaml")).unwrap();
    let mut flags: Vec<String> = template
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .filter_map(|item| item.split_once("--").map(|(_, rest)| rest))
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|rest| rest.split(['=', ' ', '"']).next().unwrap().to_owned())
        .collect();
    let (_, env) = run_flags();
    let container = container(&render(&[])).clone();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let (_, flag) = env
            .iter()
            .find(|(v, _)| v == name)
            .unwrap_or_else(|| panic!("the Deployment sets {name}, which no flag reads"));
        flags.push(flag.clone());
    }
    flags.sort();
    flags.dedup();
    flags
}

/// `extraArgs` refuses every flag the Deployment already sets (from the template, so a flag
/// added there without being added to the schema fails here), and takes every other flag
/// of `accessgate run`.
#[test]
fn extra_args_refuse_exactly_the_flags_the_chart_sets() {
    let chart_set = chart_set_flags();
    assert!(chart_set.len() > 15, "{chart_set:?}");
    for flag in [
        "jwks-retry",
        "log",
        "allow-fetch-cidr",
        "identity",
        "pod-namespace",
    ] {
        assert!(
            chart_set.iter().any(|f| f == flag),
            "{flag} not in {chart_set:?}"
        );
    }
    let (all, _) = run_flags();
    for flag in &all {
        if flag == "help" {
            continue;
        }
        let set = format!("extraArgs={{--{flag}=x}}");
        let (ok, _, err) = template(&[&set], false);
        if chart_set.contains(flag) {
            assert!(!ok, "extraArgs took --{flag}, which the chart sets");
            assert!(err.contains("at '/extraArgs/0'"), "--{flag}: {err}");
        } else {
            assert!(
                ok,
                "extraArgs refused --{flag}, which the chart does not set: {err}"
            );
        }
    }
}
