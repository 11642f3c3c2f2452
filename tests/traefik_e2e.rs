//! End to end behind real Traefik v3 (`forwardAuth`, built from the Go module proxy by
//! `tests/traefik/build.sh`) on the forward dialect: the nginx suite's scenarios that apply
//! (identity headers, spoofing, 401/403, rotation), as `caddy_e2e` runs them behind Caddy.

mod common;

use common::echo::received;
use common::stack::Stack;
use common::traefik::Traefik;
use serde_json::json;

fn stack() -> Stack<Traefik> {
    Stack::start()
}

#[test]
fn valid_tokens_reach_upstream_with_identity_headers() {
    let s = stack();
    let token = s
        .issuer
        .token(json!({"sub": "u-9", "claims": {"custom": {"groups": ["eng"]}}}));
    let seen = s.through(&[("cf-access-jwt-assertion", &token)]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"]
    );
    assert_eq!(received(&seen, "x-auth-request-user"), ["u-9"]);
    assert_eq!(received(&seen, "x-auth-request-groups"), ["eng"]);
    let seen = s.through(&[("cookie", &format!("CF_Authorization={token}"))]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"]
    );
    assert_eq!(received(&seen, "x-auth-request-user"), ["u-9"]);
    assert_eq!(received(&seen, "x-auth-request-groups"), ["eng"]);
}

#[test]
fn client_cannot_spoof_identity_headers_through_traefik() {
    let s = stack();
    // email and sub are claims of this token; custom.groups is not.
    let token = s.issuer.token(json!({"sub": "u-1"}));
    let seen = s.through(&[
        ("cf-access-jwt-assertion", &token),
        ("x-auth-request-email", "ceo@example.com"),
        ("x-auth-request-user", "root"),
        ("x-auth-request-groups", "admins"),
    ]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"],
        "{seen}"
    );
    assert_eq!(received(&seen, "x-auth-request-user"), ["u-1"], "{seen}");
    assert!(
        !received(&seen, "x-auth-request-groups").contains(&"admins".to_string()),
        "a client-sent header without a claim behind it reached the upstream: {seen}"
    );
    assert_eq!(
        received(&seen, "x-auth-request-groups"),
        Vec::<String>::new(),
        "the upstream got a groups header though the token has no groups claim: {seen}"
    );
}

#[test]
fn denials_and_rotation() {
    let s = stack();
    s.refused(&[], 401);
    s.refused(
        &[(
            "cf-access-jwt-assertion",
            &s.issuer.mint(json!({"aud": ["0".repeat(64)]})),
        )],
        403,
    );
    s.refused(
        &[(
            "cf-access-jwt-assertion",
            &s.issuer.token(json!({"ttl": -3600})),
        )],
        401,
    );
    let old = s.issuer.token(json!({}));
    s.through(&[("cf-access-jwt-assertion", &old)]);
    s.issuer.rotate();
    s.through(&[("cf-access-jwt-assertion", &s.issuer.token(json!({})))]);
    s.through(&[("cf-access-jwt-assertion", &old)]);
}
