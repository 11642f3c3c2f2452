//! `accessgate check` explains a decision step by step and exits with the verdict.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn check(policy: &std::path::Path, token: &str, url: Option<&str>) -> (i32, String) {
    match url {
        Some(u) => check_args(policy, token, &["--url", u]),
        None => check_args(policy, token, &[]),
    }
}

fn check_args(policy: &std::path::Path, token: &str, extra: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "check",
        "--policy",
        policy.to_str().unwrap(),
        "--token",
        token,
    ]);
    cmd.args(extra);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_token_segment(&format!("{stdout}\n{stderr}"), token);
    (out.status.code().unwrap_or(-1), stdout)
}

/// The token is never printed, whole or in part: none of its header, payload or signature
/// segments (each is enough to replay or read the claims) appears in `output`.
#[track_caller]
fn assert_no_token_segment(output: &str, token: &str) {
    for (segment, part) in token.split('.').zip(["header", "payload", "signature"]) {
        assert!(
            segment.len() < 8 || !output.contains(segment),
            "the token's {part} segment was printed:\n{output}"
        );
    }
}

/// `policy` written to `p.yaml` in a fresh directory (kept while the guard lives).
fn policy_file(policy: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, policy).unwrap();
    (dir, file)
}

#[test]
fn check_explains_allow_and_each_kind_of_deny() {
    let issuer = Issuer::start();
    let extra = "  hosts: [app.example.test]\n  rules:\n    deny:\n      - { group: banned }\n";
    let (_dir, file) = policy_file(&policy_yaml("apps", "web", &issuer.url, extra));

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
    // check_args has asserted that no segment of this (or any) token was printed.
}

/// A policy whose rules read `identity.groups`, which only get-identity supplies: the
/// server enriches before it decides, so `check` must too, or the two disagree.
const GROUPS_FROM_IDENTITY: &str = "  identity: {}\n  rules:\n    groupsClaim: identity.groups\n    allow:\n      - { group: sre }\n    deny:\n      - { group: contractors }\n";

#[test]
fn check_and_server_agree_on_a_policy_with_identity_enrichment() {
    let issuer = Issuer::start();
    let policy = policy_yaml("apps", "idp", &issuer.url, GROUPS_FROM_IDENTITY);
    let server = Server::start(&[("p.yaml", &policy)], &[]);
    let (_dir, file) = policy_file(&policy);
    issuer.set_identity(json!({"email": "alice@example.com", "groups": ["sre"]}));
    issuer.set_identity(json!({"email": "carol@example.com", "groups": ["sre", "contractors"]}));

    // Alice is in `sre` only according to get-identity: the server allows her.
    let alice = issuer.token(json!({}));
    server.with_token("/auth/apps/idp", &alice).assert_allow();
    let (code, out) = check(&file, &alice, None);
    assert_eq!(code, 0, "check must agree with the server's 200:\n{out}");
    assert!(
        out.contains("ok   identity") && out.contains("ALLOW (200)"),
        "{out}"
    );

    // Carol's get-identity groups include `contractors`, which a deny rule names: the
    // server refuses her although her token alone would pass the deny rule.
    let carol = issuer.token(json!({"email": "carol@example.com"}));
    server
        .with_token("/auth/apps/idp", &carol)
        .assert_deny(403, "rule_denied");
    let (code, out) = check(&file, &carol, None);
    assert_eq!(code, 1, "check must agree with the server's 403:\n{out}");
    assert!(out.contains("DENY (403 rule_denied)"), "{out}");

    // --no-identity decides on the token alone, and says so.
    let (code, out) = check_args(&file, &alice, &["--no-identity"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--no-identity") && out.contains("DENY (403 rule_denied)"),
        "{out}"
    );
}

/// `check` evaluates the token against the live rules and the candidate and shows both; the
/// exit code is the live verdict. On a dry-run policy it says the verdict is not enforced.
#[test]
fn check_shows_the_candidate_beside_the_live_verdict_and_says_dry_run() {
    let issuer = Issuer::start();
    let (_dir, file) = policy_file(&policy_yaml(
        "apps",
        "web",
        &issuer.url,
        "  candidate:\n    rules:\n      allow:\n        - { group: admins }\n",
    ));
    let eng = issuer.token(json!({"claims": {"custom": {"groups": ["eng"]}}}));
    let (code, out) = check(&file, &eng, None);
    assert_eq!(code, 0, "the live policy allows:\n{out}");
    assert!(out.contains("ALLOW (200)"), "{out}");
    assert!(out.contains("candidate spec.candidate"), "{out}");
    assert!(out.contains("DENY (403 rule_denied)"), "{out}");
    assert!(
        out.contains("differs  YES: candidate_denies (rule_denied)"),
        "{out}"
    );
    let admin = issuer.token(json!({"claims": {"custom": {"groups": ["admins"]}}}));
    let (code, out) = check(&file, &admin, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("differs  no"), "{out}");

    std::fs::write(
        &file,
        policy_yaml(
            "apps",
            "web",
            &issuer.url,
            "  mode: dryRun\n  rules:\n    allow:\n      - { group: admins }\n",
        ),
    )
    .unwrap();
    let (code, out) = check(&file, &eng, None);
    assert_eq!(
        code, 1,
        "the policy's own verdict, though not enforced:\n{out}"
    );
    assert!(out.contains("DENY (403 rule_denied)"), "{out}");
    assert!(out.contains("mode     dry-run"), "{out}");
}
