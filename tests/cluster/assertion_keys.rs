//! The elected replica rotates the upstream assertion's key Secret one step when it is due
//! (next → current → previous, a new next drawn), on a real API server, with no more access
//! than the chart grants: get and update on that one Secret.

use std::time::Duration;

use crate::common::cluster::ControlPlane;
use crate::common::replica::{Replica, SYSTEM_NS};
use crate::common::*;
use serde_json::{Value, json};

const SECRET: &str = "accessgate-assertion-keys";

fn pem_of(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap_or_default(),
    )
    .unwrap()
}

#[test]
fn the_leader_rotates_the_key_secret_one_step_when_it_is_due() {
    let _slot = crate::own_cluster_slot();
    let cp = ControlPlane::start();
    let kc = cp.service_account_kubeconfig(SYSTEM_NS, "accessgate");
    let (a, b) = (
        accessgate::keys::signing::new_key_pem().unwrap(),
        accessgate::keys::signing::new_key_pem().unwrap(),
    );
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    // As the chart renders it: the Secret, and a Role on exactly that Secret.
    for manifest in [
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": SYSTEM_NS,
                "annotations": {"accessgate.dev/rotated-at": "2020-01-01T00:00:00Z"}},
            "data": {"current.pem": b64(&a), "next.pem": b64(&b)}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "accessgate-assertion-keys", "namespace": SYSTEM_NS},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET], "verbs": ["get", "update"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "accessgate-assertion-keys", "namespace": SYSTEM_NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "accessgate-assertion-keys"},
            "subjects": [{"kind": "ServiceAccount", "name": "accessgate", "namespace": SYSTEM_NS}]}),
    ] {
        cp.apply(&manifest.to_string()).unwrap();
    }
    // The replica's mounted copy of the Secret.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("current.pem"), &a).unwrap();
    std::fs::write(dir.path().join("next.pem"), &b).unwrap();
    let replica = Replica::start(
        &kc,
        "replica-a",
        &[
            "--assertion-keys",
            dir.path().to_str().unwrap(),
            "--assertion-keys-secret",
            SECRET,
            "--assertion-key-rotation",
            "24h",
        ],
    );

    let mut secret = Value::Null;
    assert!(
        eventually(Duration::from_secs(40), || {
            secret = cp.get_json(&["secret", SECRET, "-n", SYSTEM_NS]);
            pem_of(&secret, "current.pem") == b
        }),
        "not rotated: {}",
        replica.proc.output()
    );
    assert_eq!(
        pem_of(&secret, "previous.pem"),
        a,
        "the old current stays published"
    );
    let next = pem_of(&secret, "next.pem");
    assert!(next.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{next}");
    assert!(next != a && next != b);
    let at = secret["metadata"]["annotations"]["accessgate.dev/rotated-at"]
        .as_str()
        .unwrap();
    let at = humantime::parse_rfc3339(at).unwrap();
    assert!(
        at.elapsed().unwrap_or_default() < Duration::from_secs(120),
        "{at:?}"
    );

    // One step per period: the next look (a minute later) changes nothing.
    let version = secret["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(65));
    let again = cp.get_json(&["secret", SECRET, "-n", SYSTEM_NS]);
    assert_eq!(again["metadata"]["resourceVersion"], version);
    assert!(
        !replica.proc.output().contains("rotation failed"),
        "{}",
        replica.proc.output()
    );
}
