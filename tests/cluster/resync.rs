//! Missed events: a policy deleted while accessgate's watch is disconnected (the API server
//! down, the object removed straight from etcd) is `policy_unknown` once the watch
//! reconnects and re-lists — deletions are not lost with the connection.

use std::time::Duration;

use crate::common::cluster::ControlPlane;
use crate::common::replica::{Replica, SYSTEM_NS};
use crate::common::*;
use base64::Engine as _;
use serde_json::json;

fn policy(name: &str, issuer: &str) -> String {
    json!({"apiVersion": "accessgate.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"issuer": {"url": issuer, "jwksUri": format!("{issuer}/cdn-cgi/access/certs")}, "audiences": [AUD]}})
    .to_string()
}

#[test]
fn a_policy_deleted_while_the_watch_is_down_is_unknown_after_reconnection() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let issuer = Issuer::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    cp.kubectl_ok(&["create", "namespace", "apps"]);
    let replica = Replica::start(&kc, "replica-a", &[]);
    cp.apply(&policy("web", &issuer.url)).unwrap();
    cp.apply(&policy("gone", &issuer.url)).unwrap();
    let token = issuer.token(json!({}));
    assert!(
        eventually(Duration::from_secs(30), || replica
            .status("/auth/apps/gone", &token)
            == 200),
        "{}",
        replica.proc.output()
    );

    // Take the API server away at once (etcd stays), and confirm it is gone.
    let pid: i32 = std::fs::read_to_string(cp.dir.path().join("kube-apiserver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    // Gone means the process is gone: while it shuts down it fails /readyz but still serves
    // watches, and would pass the deletion on.
    assert!(
        eventually(Duration::from_secs(60), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the API server process is still running"
    );
    assert!(
        !cp.kubectl(&["get", "--raw", "/readyz"], None).0,
        "the API server still answers"
    );

    // Delete the object behind the API server's back, through etcd's JSON gateway.
    let key = base64::engine::general_purpose::STANDARD
        .encode("/registry/accessgate.dev/accesspolicies/apps/gone");
    let deleted: serde_json::Value = http()
        .post(format!(
            "{}/v3/kv/deleterange",
            cp.env["ACCESSGATE_CP_ETCD_URL"]
        ))
        .json(&json!({"key": key}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        deleted["deleted"], "1",
        "etcd did not delete the object: {deleted}"
    );
    // Meanwhile auth keeps answering from what it knew.
    assert_eq!(replica.status("/auth/apps/gone", &token), 200);

    // Back: the watch reconnects, re-lists, and the deletion it never saw is applied.
    cp.stop();
    cp.restart();
    // Refused as unknown, not for want of keys: the deletion was applied.
    let unknown = (503, "policy_unknown".to_owned());
    assert!(
        eventually(Duration::from_secs(90), || replica
            .answer("/auth/apps/gone", &token)
            == unknown),
        "the deleted policy is still served: {:?}\n{}",
        replica.answer("/auth/apps/gone", &token),
        replica.proc.output()
    );
    assert_eq!(replica.status("/auth/apps/web", &token), 200);
}
