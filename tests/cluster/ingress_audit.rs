//! The Ingress audit in AccessPolicy status, on a real kube-apiserver with the chart's RBAC:
//! which Ingresses reach a policy (`status.usedBy`), and `HeadersProtected=False` naming an
//! Ingress whose `auth-response-headers` leaves out a mapped header — the misconfiguration
//! that lets a client forge an identity header. Only Ingresses whose `auth-url` reaches this
//! install count; one naming a policy it does not serve gets a Warning Event.

use std::time::Duration;

use crate::common::cluster::ControlPlane;
use crate::common::replica::{Replica, SYSTEM_NS};
use crate::common::*;
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

fn web_policy(issuer: &Issuer, name: &str) -> String {
    json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"issuer": {"url": issuer.url, "jwksUri": issuer.certs_url()}, "audiences": [AUD],
            "claimHeaders": [
                {"header": "X-Auth-Request-Email", "claim": "email"},
                {"header": "X-Auth-Request-Groups", "claim": "custom.groups"}]}})
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
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    cp.kubectl_ok(&["create", "namespace", "other"]);
    cp.apply(&web_policy(&issuer, "web")).unwrap();
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

/// Issue 19: the audit read only the auth-url's path, so an Ingress whose auth-url names a
/// misspelt Service, namespace or port (its requests never reach accessgate) was listed in
/// `usedBy` and judged for `HeadersProtected`.
#[test]
fn only_ingresses_whose_auth_url_reaches_this_install_are_audited() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    cp.apply(&web_policy(&issuer, "web")).unwrap();
    let replica = Replica::start(&kc, "replica-a", &[]);

    // Each names the policy and lists none of its headers: counted, each would make
    // HeadersProtected False.
    for (name, auth_url) in [
        (
            "misspelt-service",
            "http://acessgate.accessgate-system.svc.cluster.local/auth/apps/web",
        ),
        (
            "misspelt-namespace",
            "http://accessgate.accessgate-sytem.svc.cluster.local/auth/apps/web",
        ),
        (
            "other-port",
            "http://accessgate.accessgate-system.svc.cluster.local:8080/auth/apps/web",
        ),
        (
            "other-domain",
            "http://accessgate.accessgate-system.svc.corp.internal/auth/apps/web",
        ),
        ("bare-name", "http://accessgate/auth/apps/web"),
        (
            "https",
            "https://accessgate.accessgate-system.svc.cluster.local/auth/apps/web",
        ),
        ("ip", "http://10.96.0.10/auth/apps/web"),
    ] {
        cp.apply(&ingress("apps", name, auth_url, "")).unwrap();
    }
    // The right Service, in a short form the search path completes, listing both headers.
    cp.apply(&ingress(
        "apps",
        "short",
        "http://accessgate.accessgate-system/auth/apps/web",
        "X-Auth-Request-Email,X-Auth-Request-Groups",
    ))
    .unwrap();

    let mut last = Value::Null;
    let audited = eventually(Duration::from_secs(60), || {
        last = cp.get_json(&["accesspolicy", "web", "-n", "apps"]);
        last["status"]["usedBy"]["ingresses"] == json!(["short"])
    });
    assert!(audited, "{:#}\n{}", last["status"], replica.proc.output());
    assert!(
        last["status"]["usedBy"]["otherNamespaces"]
            .as_u64()
            .unwrap_or(0)
            == 0,
        "{:#}",
        last["status"]
    );
    assert_eq!(
        condition(&last, "HeadersProtected"),
        Some((
            "True".to_owned(),
            "AllListed".to_owned(),
            "every Ingress reaching this policy lists its identity headers in nginx.ingress.kubernetes.io/auth-response-headers".to_owned()
        )),
        "{:#}",
        last["status"]
    );
}

/// `AuthPolicyNotFound` Events on `ingress` in `apps`, as `kubectl get events` lists them.
fn policy_not_found_events(cp: &ControlPlane, ingress: &str) -> Vec<Value> {
    let selector = format!("involvedObject.name={ingress},reason=AuthPolicyNotFound");
    cp.get_json(&["events", "-n", "apps", "--field-selector", &selector])["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn missing_gauge(replica: &Replica) -> f64 {
    metric_sum(
        &replica.metrics(),
        "accessgate_ingress_policy_missing",
        &[("ingress_namespace", "apps")],
    )
}

/// An Ingress whose auth-url reaches this install and names a policy that does not exist
/// is refused on every request, and nothing said why: now the elected replica puts one
/// Warning Event on it, and every replica counts it, until the policy exists.
#[test]
fn an_ingress_naming_a_missing_policy_gets_one_warning_event_until_the_policy_exists() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    let a = Replica::start(&kc, "replica-a", &[]);
    let b = Replica::start(&kc, "replica-b", &[]);

    cp.apply(&ingress(
        "apps",
        "dangling",
        &format!("{SVC}/auth/apps/nope"),
        "X-Auth-Request-Email",
    ))
    .unwrap();
    // The same reference through another Service: another install's business, not this one's.
    cp.apply(&ingress(
        "apps",
        "not-ours",
        "http://accessgate-blue.accessgate-system.svc.cluster.local/auth/apps/nope",
        "X-Auth-Request-Email",
    ))
    .unwrap();

    let logs = || format!("{}\n{}", a.proc.output(), b.proc.output());
    let warned = eventually(Duration::from_secs(60), || {
        !policy_not_found_events(&cp, "dangling").is_empty()
    });
    assert!(warned, "no AuthPolicyNotFound event:\n{}", logs());
    let counted = eventually(Duration::from_secs(30), || {
        missing_gauge(&a) == 1.0 && missing_gauge(&b) == 1.0
    });
    assert!(
        counted,
        "a: {}, b: {}",
        missing_gauge(&a),
        missing_gauge(&b)
    );
    // Several more looks (one every 2 s) by both replicas: still the one Event, from the
    // elected replica.
    std::thread::sleep(Duration::from_secs(7));
    let events = policy_not_found_events(&cp, "dangling");
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["type"], "Warning", "{e:#}");
    assert_eq!(e["involvedObject"]["kind"], "Ingress", "{e:#}");
    let note = e["message"].as_str().unwrap_or_default();
    assert!(
        note.contains("AccessPolicy apps/nope") && note.contains("does not serve"),
        "{note}"
    );
    assert!(
        e["count"].as_u64().unwrap_or(1) <= 1 && e["series"].is_null(),
        "{e:#}"
    );
    assert!(
        policy_not_found_events(&cp, "not-ours").is_empty(),
        "an Ingress for another Service was warned"
    );

    // The policy appears: the gauge clears on every replica, and no further Event.
    cp.apply(&web_policy(&issuer, "nope")).unwrap();
    let cleared = eventually(Duration::from_secs(30), || {
        missing_gauge(&a) == 0.0 && missing_gauge(&b) == 0.0
    });
    assert!(
        cleared,
        "a: {}, b: {}",
        missing_gauge(&a),
        missing_gauge(&b)
    );
    assert_eq!(policy_not_found_events(&cp, "dangling").len(), 1);
}
