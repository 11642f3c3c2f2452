//! Cloudflare identity enrichment against the dev issuer's get-identity: groups and device
//! posture reach headers and rules; fetches are cached per identity and coalesced; failures
//! deny unless the policy says to continue.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn calls(issuer: &Issuer) -> u64 {
    let v: Value = http()
        .get(format!("{}/identity-calls", issuer.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["calls"].as_u64().unwrap()
}

fn set_identity(issuer: &Issuer, cfg: Value) {
    let r = http()
        .post(format!("{}/identity", issuer.url))
        .json(&cfg)
        .send()
        .unwrap();
    assert!(r.status().is_success());
}

fn identity_mode(issuer: &Issuer, mode: &str) {
    let r = http()
        .post(format!("{}/identity-mode", issuer.url))
        .json(&json!({"mode": mode}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
}

const ENRICHED: &str = "  identity: {}\n  claimHeaders:\n    - { header: X-Groups, claim: identity.groups }\n    - { header: X-Disk-Encrypted, claim: identity.devicePosture.disk-encryption }\n    - { header: X-Idp, claim: identity.idp.type }\n  rules:\n    groupsClaim: identity.groups\n    allow:\n      - { group: sre }\n";
const LENIENT: &str = "  identity: { onError: continueWithoutIdentity, cacheFor: 30s }\n  claimHeaders:\n    - { header: X-Groups, claim: identity.groups }\n    - { header: X-Email, claim: email }\n";

fn setup() -> (Issuer, Server) {
    let issuer = Issuer::start();
    let server = Server::start(
        &[
            (
                "strict.yaml",
                &policy_yaml("apps", "strict", &issuer.url, ENRICHED),
            ),
            (
                "lenient.yaml",
                &policy_yaml("apps", "lenient", &issuer.url, LENIENT),
            ),
        ],
        &[],
    );
    set_identity(
        &issuer,
        json!({"email": "alice@example.com", "groups": ["sre", "eng"], "idp": "okta", "country": "DE", "posture": {"disk-encryption": true, "firewall": false}}),
    );
    (issuer, server)
}

#[test]
fn identity_groups_and_posture_reach_headers_and_rules() {
    let (issuer, server) = setup();
    let a = server.with_token("/auth/apps/strict", &issuer.token(json!({})));
    a.assert_allow();
    assert_eq!(a.header("x-groups"), Some("sre,eng"));
    assert_eq!(a.header("x-disk-encrypted"), Some("true"));
    assert_eq!(a.header("x-idp"), Some("okta"));
    // Bob's identity has no groups: the allow rule on identity.groups refuses him.
    let bob = issuer.token(json!({"email": "bob@example.com"}));
    server
        .with_token("/auth/apps/strict", &bob)
        .assert_deny(403, "rule_denied");
}

#[test]
fn identities_are_cached_per_token_and_concurrent_fetches_coalesce() {
    let (issuer, server) = setup();
    let token = issuer.token(json!({}));
    let before = calls(&issuer);
    for _ in 0..5 {
        server
            .with_token("/auth/apps/strict", &token)
            .assert_allow();
    }
    assert_eq!(
        calls(&issuer) - before,
        1,
        "five requests with one token: one fetch"
    );

    let fresh = issuer.token(json!({"claims": {"identity_nonce": "concurrent-1"}}));
    let before = calls(&issuer);
    let url = format!("{}/auth/apps/strict", server.auth);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let r = http()
                    .get(&url)
                    .header("x-original-url", "https://app.example.test/")
                    .header("cf-access-jwt-assertion", &fresh)
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
            });
        }
    });
    assert_eq!(
        calls(&issuer) - before,
        1,
        "sixteen concurrent requests: one fetch"
    );
}

#[test]
fn failures_deny_by_default_or_continue_without_identity() {
    let (issuer, server) = setup();
    identity_mode(&issuer, "fail");
    server
        .with_token("/auth/apps/strict", &issuer.token(json!({})))
        .assert_deny(503, "identity_unavailable");
    // Lenient: decided on the token alone; a token's own `identity` claim is never trusted
    // in place of a fetched one.
    let spoof = issuer.token(json!({"claims": {"identity": {"groups": ["admins"]}}}));
    let a = server.with_token("/auth/apps/lenient", &spoof);
    a.assert_allow();
    assert_eq!(a.header("x-email"), Some("alice@example.com"));
    assert_eq!(a.header("x-groups"), None);
    identity_mode(&issuer, "ok");
    std::thread::sleep(Duration::from_millis(50));
    let a = server.with_token("/auth/apps/lenient", &issuer.token(json!({})));
    assert_eq!(a.header("x-groups"), Some("sre,eng"));
}
