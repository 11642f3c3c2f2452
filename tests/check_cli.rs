//! `accessgate check` explains a decision step by step and exits with the verdict.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn check(policy: &std::path::Path, token: &str, url: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "check",
        "--policy",
        policy.to_str().unwrap(),
        "--token",
        token,
    ]);
    if let Some(u) = url {
        cmd.args(["--url", u]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_explains_allow_and_each_kind_of_deny() {
    let issuer = Issuer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    let extra = "  hosts: [app.example.test]\n  rules:\n    deny:\n      - { group: banned }\n";
    std::fs::write(&file, policy_yaml("apps", "web", &issuer.url, extra)).unwrap();

    let (code, out) = check(
        &file,
        &issuer.token(json!({})),
        Some("https://app.example.test/x"),
    );
    assert_eq!(code, 0, "{out}");
    for needle in [
        "routes to this policy",
        "ok   signature",
        "ok   aud",
        "x-auth-request-email: alice@example.com",
        "ALLOW (200)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    let (code, out) = check(&file, &issuer.token(json!({"ttl": -7200})), None);
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL exp") && out.contains("DENY (401 token_expired)"),
        "{out}"
    );

    let (code, out) = check(&file, &issuer.mint(json!({"aud": ["nope"]})), None);
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL aud") && out.contains("audience_mismatch"),
        "{out}"
    );

    let (code, out) = check(
        &file,
        &issuer.token(json!({"claims": {"custom": {"groups": ["banned"]}}})),
        None,
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL rule deny") && out.contains("rule_denied"),
        "{out}"
    );

    let mut forged = issuer.token(json!({})).into_bytes();
    let i = forged.len() - 20;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let (code, out) = check(&file, std::str::from_utf8(&forged).unwrap(), None);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL signature"), "{out}");
    assert!(
        !out.contains(&String::from_utf8(forged).unwrap()),
        "the token is never printed"
    );
}
