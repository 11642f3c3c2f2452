//! Changing a policy safely, through `accessgate serve` and real HTTP: a dry-run policy lets
//! an app that has no auth today through while counting what it would refuse, and never
//! hides another policy's denial; a candidate's disagreements are counted and logged while
//! the live answer stays what it was.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const DRY_RUN: &str = "  mode: dryRun\n";

/// A candidate that admits only the `admins` group; the live policy admits any valid token.
const ADMINS_CANDIDATE: &str =
    "  candidate:\n    rules:\n      allow:\n        - { group: admins }\n";

#[test]
fn a_dry_run_policy_lets_an_app_without_auth_through_and_counts_what_it_would_deny() {
    let issuer = Issuer::start();
    let policy = policy_yaml(
        "apps",
        "legacy",
        &issuer.url,
        &format!("{DRY_RUN}  hosts: [legacy.example.test]\n"),
    );
    let server = Server::start(&[("p.yaml", &policy)], &[]);
    assert_eq!(server.metric_sum("accessgate_dry_run_policies", &[]), 1.0);

    // No token, and a client's own identity header: let through, no identity sent back, the
    // would-be denial counted under its reason.
    for path in ["/auth/apps/legacy", "/auth?host=legacy.example.test"] {
        let answer = server.auth(
            path,
            "https://legacy.example.test/page",
            &[("x-auth-request-email", "ceo@example.com")],
        );
        answer.assert_allow();
        assert_eq!(answer.header("x-auth-request-email"), None, "{path}");
    }
    let would_deny = [
        ("policy", "apps/legacy"),
        ("verdict", "deny"),
        ("reason", "token_missing"),
    ];
    assert_eq!(
        server.metric_sum("accessgate_dry_run_decisions_total", &would_deny),
        2.0
    );
    assert_eq!(
        server.metric_sum(
            "accessgate_decisions_total",
            &[("policy", "apps/legacy"), ("reason", "dry_run")]
        ),
        2.0
    );

    // A valid token: allowed as it would be when enforced, with its identity headers.
    let answer = server.with_token("/auth/apps/legacy", &issuer.token(json!({})));
    answer.assert_allow();
    assert_eq!(
        answer.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(
        server.metric_sum(
            "accessgate_dry_run_decisions_total",
            &[("policy", "apps/legacy"), ("verdict", "allow")]
        ),
        1.0
    );
}

#[test]
fn a_dry_run_policy_never_suppresses_the_enforcing_policy_on_its_route() {
    let issuer = Issuer::start();
    let site = policy_yaml("apps", "site", &issuer.url, "  hosts: [app.example.test]\n");
    let admin = policy_yaml(
        "apps",
        "admin-trial",
        &issuer.url,
        &format!(
            "{DRY_RUN}  hosts: [app.example.test]\n  paths: [/admin]\n  rules:\n    allow:\n      - {{ group: admins }}\n"
        ),
    );
    let server = Server::start(&[("site.yaml", &site), ("admin.yaml", &admin)], &[]);
    let bare = "/auth?host=app.example.test";

    // The dry-run policy's longer prefix does not open /admin: the site policy still refuses.
    server
        .auth(bare, "https://app.example.test/admin/users", &[])
        .assert_deny(401, "token_missing");
    assert_eq!(
        server.metric_sum(
            "accessgate_decisions_total",
            &[("policy", "apps/site"), ("reason", "token_missing")]
        ),
        1.0
    );
    // A valid token outside `admins`: the site allows, the dry-run policy would refuse.
    let answer = server.auth(
        bare,
        "https://app.example.test/admin/users",
        &[("cf-access-jwt-assertion", &issuer.token(json!({})))],
    );
    answer.assert_allow();
    for (verdict, reason, n) in [("deny", "token_missing", 1.0), ("deny", "rule_denied", 1.0)] {
        assert_eq!(
            server.metric_sum(
                "accessgate_dry_run_decisions_total",
                &[
                    ("policy", "apps/admin-trial"),
                    ("verdict", verdict),
                    ("reason", reason)
                ]
            ),
            n
        );
    }
}

#[test]
fn a_candidate_that_disagrees_on_a_group_is_counted_and_logged_and_the_answer_is_unchanged() {
    let issuer = Issuer::start();
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("decisions.jsonl");
    let policy = policy_yaml("apps", "web", &issuer.url, ADMINS_CANDIDATE);
    let server = Server::start(
        &[("p.yaml", &policy)],
        &["--decision-log", log.to_str().unwrap()],
    );
    let eng = issuer.token(json!({"claims": {"custom": {"groups": ["eng"]}}}));
    let admin = issuer.token(json!({"claims": {"custom": {"groups": ["admins"]}}}));

    // Live admits both; the candidate would refuse the engineer.
    server.with_token("/auth/apps/web", &eng).assert_allow();
    server.with_token("/auth/apps/web", &admin).assert_allow();
    server
        .auth("/auth/apps/web", "https://app.example.test/", &[])
        .assert_deny(401, "token_missing");
    let count = |result: &str, reason: &str| {
        server.metric_sum(
            "accessgate_candidate_decisions_total",
            &[
                ("policy", "apps/web"),
                ("result", result),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(count("candidate_denies", "rule_denied"), 1.0);
    assert_eq!(count("agree", "ok"), 2.0);
    assert_eq!(
        server.metric_sum(
            "accessgate_decisions_total",
            &[("policy", "apps/web"), ("decision", "allow")]
        ),
        2.0,
        "the candidate never changes the answer"
    );
    assert!(
        eventually(Duration::from_secs(5), || server
            .proc
            .output()
            .contains("candidate rules disagree with the live policy")),
        "the disagreement is in the operational log:\n{}",
        server.proc.output()
    );

    let mut lines: Vec<Value> = Vec::new();
    assert!(eventually(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.len() >= 3
    }));
    assert_eq!(
        lines[0]["candidate"],
        json!({"policy": "apps/web", "result": "candidate_denies", "reason": "rule_denied"})
    );
    assert_eq!(lines[0]["verdict"], "allow");
    assert!(lines[1].get("candidate").is_none(), "{}", lines[1]);
}

#[test]
fn a_candidate_that_does_not_compile_leaves_the_live_policy_enforced() {
    let issuer = Issuer::start();
    let policy = policy_yaml(
        "apps",
        "web",
        &issuer.url,
        "  rules:\n    deny:\n      - { group: banned }\n  candidate:\n    rules:\n      groupsClaim: \"a..b\"\n",
    );
    let server = Server::start(&[("p.yaml", &policy)], &[]);
    server
        .with_token("/auth/apps/web", &issuer.token(json!({})))
        .assert_allow();
    server
        .with_token(
            "/auth/apps/web",
            &issuer.token(json!({"claims": {"custom": {"groups": ["banned"]}}})),
        )
        .assert_deny(403, "rule_denied");
    assert_eq!(
        server.metric_sum("accessgate_candidate_decisions_total", &[]),
        0.0,
        "a broken candidate is not evaluated"
    );
}
