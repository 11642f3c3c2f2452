//! The decision log through `accessgate serve`: one line per decision with the documented
//! fields, the subject as a keyed hash (e-mail only when asked), never a byte of a token,
//! cookie or query string, and a sink nobody reads never holds up a request.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const NAMED: &str = "/auth/apps/web";

fn policy(issuer: &Issuer) -> String {
    policy_yaml(
        "apps",
        "web",
        &issuer.url,
        "  rules:\n    deny:\n      - { group: banned }\n",
    )
}

fn key_file(dir: &Path) -> String {
    let path = dir.join("decision-log.key");
    std::fs::write(&path, "an-install-secret-of-32-bytes!!!\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// An issuer, and a directory with the path of a decision log in it.
fn logged() -> (Issuer, tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("decisions.jsonl");
    (Issuer::start(), out, log)
}

/// `accessgate serve` on [`policy`], logging decisions to `sink`.
fn serve(issuer: &Issuer, sink: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--decision-log", sink.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&[("p.yaml", &policy(issuer))], &args)
}

/// The log's lines once `n` are there.
fn lines(path: &Path, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let complete = eventually(Duration::from_secs(10), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        got.len() >= n
    });
    assert!(complete, "{} of {n} lines: {got:?}", got.len());
    got
}

#[test]
fn each_decision_is_one_line_naming_who_and_why_and_never_the_token() {
    let (issuer, out, log) = logged();
    let key = key_file(out.path());
    let server = serve(&issuer, &log, &["--decision-log-key-file", &key]);
    let alice = issuer.token(json!({"sub": "user-alice", "email": "alice@example.com"}));
    let alice_again =
        issuer.token(json!({"sub": "user-alice", "email": "alice@example.com", "ttl": 1800}));
    let banned = issuer.token(
        json!({"sub": "user-mallory", "email": "mallory@example.com", "claims": {"custom": {"groups": ["banned"]}}}),
    );
    // Alice's claims under another token's signature.
    let forged = format!(
        "{}.{}",
        alice.rsplit_once('.').unwrap().0,
        banned.rsplit_once('.').unwrap().1
    );
    let url = "https://app.example.test/report?code=query-secret";

    server
        .auth(NAMED, url, &[("cf-access-jwt-assertion", &alice)])
        .assert_allow();
    server
        .auth(
            NAMED,
            url,
            &[("cookie", &format!("CF_Authorization={alice_again}"))],
        )
        .assert_allow();
    server
        .auth(NAMED, url, &[("cf-access-jwt-assertion", &banned)])
        .assert_deny(403, "rule_denied");
    server
        .auth(NAMED, url, &[("cf-access-jwt-assertion", &forged)])
        .assert_deny(401, "signature_invalid");
    server
        .auth(NAMED, url, &[])
        .assert_deny(401, "token_missing");

    let got = lines(&log, 5);
    assert_eq!(got.len(), 5, "one line per decision: {got:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    for token in [&alice, &alice_again, &banned, &forged] {
        for segment in token.split('.').filter(|s| s.len() >= 8) {
            assert!(
                !text.contains(segment),
                "a token segment is in the log:\n{text}"
            );
        }
    }
    for secret in ["query-secret", "CF_Authorization", "alice@", "mallory@"] {
        assert!(!text.contains(secret), "{secret} is in the log:\n{text}");
    }

    let (allow, cookie, denied, forged_line, missing) =
        (&got[0], &got[1], &got[2], &got[3], &got[4]);
    for (field, want) in [
        ("policy", "apps/web"),
        ("host", "app.example.test"),
        ("path", "/report"),
        ("method", "GET"),
        ("verdict", "allow"),
        ("token_type", "app"),
    ] {
        assert_eq!(allow[field], want, "{field}: {allow}");
    }
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["kid"], issuer.certs()["keys"][0]["kid"], "{allow}");
    assert!(allow["time"].as_str().unwrap().ends_with('Z'), "{allow}");
    // One person, two tokens, one subject; another person, another subject.
    let subject = allow["subject"].as_str().unwrap();
    assert_eq!(subject.len(), 32, "{allow}");
    assert_eq!(cookie["subject"], subject, "{cookie}");
    assert_ne!(denied["subject"], subject, "{denied}");
    assert_eq!(
        (
            denied["verdict"].as_str(),
            denied["reason"].as_str(),
            &denied["status"]
        ),
        (Some("deny"), Some("rule_denied"), &json!(403)),
        "{denied}"
    );
    // Refused before a token verified: no token facts.
    for (line, reason) in [
        (forged_line, "signature_invalid"),
        (missing, "token_missing"),
    ] {
        assert_eq!(line["reason"], reason, "{line}");
        assert!(line["subject"].is_null() && line["kid"].is_null(), "{line}");
    }
    assert_eq!(
        server.metric_sum(
            "accessgate_decision_log_lines_total",
            &[("result", "written")]
        ),
        5.0
    );
}

#[test]
fn allows_have_their_own_rate_and_email_is_opt_in() {
    let (issuer, _out, log) = logged();
    let server = serve(
        &issuer,
        &log,
        &[
            "--decision-log-allows-per-second",
            "0",
            "--decision-log-email",
        ],
    );
    let bob =
        issuer.token(json!({"sub": "user-bob", "email": "bob@example.com", "claims": {"custom": {"groups": ["banned"]}}}));
    let carol = issuer.token(json!({"sub": "user-carol", "email": "carol@example.com"}));
    server.with_token(NAMED, &carol).assert_allow();
    server
        .with_token(NAMED, &bob)
        .assert_deny(403, "rule_denied");
    let got = lines(&log, 1);
    assert_eq!(got.len(), 1, "the allow is not logged at rate 0: {got:?}");
    assert_eq!(got[0]["email"], "bob@example.com", "{}", got[0]);
    assert_eq!(
        server.metric_sum(
            "accessgate_decision_log_lines_total",
            &[("result", "rate_limited")]
        ),
        1.0
    );
    assert!(
        server
            .proc
            .output()
            .contains("subject hashes are keyed per process"),
        "no key file: said in the log"
    );
}

#[test]
fn a_sink_nobody_reads_never_holds_a_request() {
    let issuer = Issuer::start();
    let out = tempfile::tempdir().unwrap();
    let fifo = out.path().join("decisions.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Nobody opens the pipe's reading end: the writer cannot even open it.
    let server = serve(
        &issuer,
        &fifo,
        &[
            "--decision-log-allows-per-second",
            "1000000",
            "--decision-log-queue-lines",
            "64",
        ],
    );
    let token = issuer.token(json!({}));
    // Many more decisions than the queue holds: every one is answered.
    for _ in 0..300 {
        server.with_token(NAMED, &token).assert_allow();
    }
    let dropped = server.metric_sum(
        "accessgate_decision_log_lines_total",
        &[("result", "queue_full")],
    );
    assert_eq!(
        dropped,
        300.0 - 64.0,
        "all but the queue's 64 lines are dropped"
    );
    assert_eq!(
        server.metric_sum(
            "accessgate_decision_log_lines_total",
            &[("result", "written")]
        ),
        0.0
    );
}
