//! `accessgate migrate` as a pipeline runs it: a JSON report, exit 0 when auth survives on the
//! chosen targets and 3 when it would be lost, and the manifests written for the ones that
//! keep it (validated against the upstream CRDs in tests/proxies/gateway_examples.rs).

mod common;

use std::process::Command;

use common::BIN;
use serde_json::Value;

fn migrate(args: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN)
        .arg("migrate")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ingress-nginx.yaml");

#[test]
fn the_example_ingress_keeps_its_auth_and_gets_its_manifests() {
    let out = tempfile::tempdir().unwrap();
    let (code, report) = migrate(&["--from", EXAMPLE, "--out", out.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["authLost"], false);
    let ing = &report["ingresses"][0];
    assert_eq!(
        (&ing["namespace"], &ing["name"]),
        (&"monitoring".into(), &"grafana".into())
    );
    assert_eq!(
        ing["outcomes"],
        serde_json::json!({"traefik-provider": "unchanged", "gateway-api": "change", "envoy-gateway": "change", "ingress2gateway": "auth-lost"})
    );
    assert_eq!(ing["responseHeaders"].as_array().map(Vec::len), Some(3));
    for dir in ["gateway-api", "envoy-gateway"] {
        let text =
            std::fs::read_to_string(out.path().join(dir).join("monitoring-grafana.yaml")).unwrap();
        assert!(text.contains("path: /envoy/monitoring/grafana"), "{text}");
        assert!(text.contains("x-auth-request-groups"), "{text}");
    }
    // ingress2gateway as a chosen target: its silent loss fails the run.
    let (code, report) = migrate(&["--from", EXAMPLE, "--target", "ingress2gateway"]);
    assert_eq!((code, &report["authLost"]), (3, &Value::Bool(true)));
}

#[test]
fn an_auth_snippet_or_a_host_chosen_policy_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let snippet = example.replace(
        "  annotations:\n",
        "  annotations:\n    nginx.ingress.kubernetes.io/auth-snippet: \"proxy_set_header X-Team a;\"\n",
    );
    assert_ne!(snippet, example, "the example changed: update this test");
    std::fs::write(dir.path().join("snippet.yaml"), &snippet).unwrap();
    let (code, report) = migrate(&["--from", dir.path().to_str().unwrap()]);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(
        report["ingresses"][0]["outcomes"]["traefik-provider"],
        "auth-lost"
    );

    let bare = example.replace("/auth/monitoring/grafana", "/auth?host=$host");
    assert_ne!(bare, example);
    std::fs::write(dir.path().join("snippet.yaml"), &bare).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (code, report) = migrate(&[
        "--from",
        dir.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(
        report["written"],
        serde_json::json!([]),
        "nothing written that could not work"
    );
    assert_eq!(
        report["ingresses"][0]["outcomes"]["traefik-provider"],
        "unchanged"
    );
}
