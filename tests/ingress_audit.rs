//! The Ingress audit in AccessPolicy status, on a real kube-apiserver with the chart's RBAC:
//! which Ingresses reach a policy (`status.usedBy`), and `HeadersProtected=False` naming an
//! Ingress whose `auth-response-headers` leaves out a mapped header — the misconfiguration
//! that lets a client forge an identity header.

mod common;

use std::time::Duration;

use common::cluster::ControlPlane;
use common::replica::{Replica, SYSTEM_NS};
use common::*;
use serde_json::{Value, json};

const SVC: &str = "http://accessgate.accessgate-system.svc.cluster.local";

fn ingress(namespace: &str, name: &str, auth_url: &str, response_headers: &str) -> String {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": {
            "nginx.ingress.kubernetes.io/auth-url": auth_url,
            "nginx.ingress.kubernetes.io/auth-response-headers": response_headers,
        }},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": format!("{name}.example.test"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app", "port": {"number": 80}}}}
        ]}}]}
    })
    .to_string()
}

fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

#[test]
fn status_names_the_ingresses_and_the_headers_they_leave_unprotected() {
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    cp.kubectl_ok(&["create", "namespace", "other"]);
    let policy = json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"issuer": {"url": issuer.url, "jwksUri": issuer.certs_url()}, "audiences": [AUD],
            "claimHeaders": [
                {"header": "X-Auth-Request-Email", "claim": "email"},
                {"header": "X-Auth-Request-Groups", "claim": "custom.groups"}]}});
    cp.apply(&policy.to_string()).unwrap();
    let replica = Replica::start(&kc, "replica-a", &[]);
    let get = || cp.get_json(&["accesspolicy", "web", "-n", "apps"]);
    let wait = |what: &str, f: &dyn Fn(&Value) -> bool| {
        let mut last = Value::Null;
        let ok = eventually(Duration::from_secs(60), || {
            last = get();
            f(&last)
        });
        assert!(
            ok,
            "{what}: {:#}\n{}",
            last["status"],
            replica.proc.output()
        );
        last
    };
    wait("no Ingress yet", &|o| {
        condition(o, "HeadersProtected").is_some_and(|(s, r, _)| s == "Unknown" && r == "NoIngress")
    });

    // An Ingress naming the policy but listing only one of its two headers.
    cp.apply(&ingress(
        "apps",
        "dashboard",
        &format!("{SVC}/auth/apps/web"),
        "X-Auth-Request-Email",
    ))
    .unwrap();
    let obj = wait("the unprotected header is named", &|o| {
        condition(o, "HeadersProtected")
            .is_some_and(|(s, r, _)| s == "False" && r == "ResponseHeadersNotListed")
    });
    let (_, _, message) = condition(&obj, "HeadersProtected").unwrap();
    assert!(
        message.contains("Ingress dashboard") && message.contains("x-auth-request-groups"),
        "{message}"
    );
    assert!(!message.contains("x-auth-request-email"), "{message}");
    assert_eq!(obj["status"]["usedBy"]["ingresses"], json!(["dashboard"]));
    let table = cp.kubectl_ok(&["get", "acp", "web", "-n", "apps"]);
    assert!(
        table.contains("HEADERS-PROTECTED") && table.contains("False"),
        "{table}"
    );
    let warned = eventually(Duration::from_secs(30), || {
        cp.get_json(&["events.events.k8s.io", "-n", "apps"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "ResponseHeadersNotListed" && e["type"] == "Warning")
    });
    assert!(warned, "no Warning event");

    // Another namespace's Ingress reaching the same policy is counted, never named.
    cp.apply(&ingress(
        "other",
        "secret-project",
        &format!("{SVC}/auth/apps/web"),
        "X-Auth-Request-Email,X-Auth-Request-Groups",
    ))
    .unwrap();
    let obj = wait("the other namespace is counted", &|o| {
        o["status"]["usedBy"]["otherNamespaces"] == 1
    });
    assert!(
        !obj["status"].to_string().contains("secret-project"),
        "{:#}",
        obj["status"]
    );

    // Fixed annotation: protected.
    cp.apply(&ingress(
        "apps",
        "dashboard",
        &format!("{SVC}/auth/apps/web"),
        "X-Auth-Request-Email, X-Auth-Request-Groups",
    ))
    .unwrap();
    wait("all headers listed", &|o| {
        condition(o, "HeadersProtected").is_some_and(|(s, r, _)| s == "True" && r == "AllListed")
    });
}
