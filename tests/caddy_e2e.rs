//! End to end behind real Caddy (`forward_auth`) on the forward dialect: the nginx suite's
//! scenarios that apply (identity headers, spoofing, 401/403, rotation).

mod common;

use common::caddy::Caddy;
use common::echo::received;
use common::stack::Stack;
use serde_json::json;

fn stack() -> Stack<Caddy> {
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
}

#[test]
fn client_cannot_spoof_identity_headers_through_caddy() {
    let s = stack();
    let token = s.issuer.token(json!({}));
    let seen = s.through(&[
        ("cf-access-jwt-assertion", &token),
        ("x-auth-request-email", "ceo@example.com"),
        ("x-auth-request-groups", "admins"),
    ]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"]
    );
    // The token has no groups claim: the client's value must not reach the upstream. Caddy
    // before 2.10 (Debian ships 2.6.2) writes its unexpanded placeholder for a header the
    // answer omitted; that constant is all that may arrive, never a client's text.
    let groups = received(&seen, "x-auth-request-groups");
    assert!(
        groups
            .iter()
            .all(|v| v == "{http.reverse_proxy.header.X-Auth-Request-Groups}"),
        "a client-sent header without a claim behind it reached the upstream: {seen}"
    );
}

#[test]
fn the_caddy_example_strips_client_copies_before_forward_auth() {
    // Real Caddy adapts the example; in the JSON it runs, every mapped header is deleted
    // from the request before the forward_auth subroute.
    let out = std::process::Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/Caddyfile"))
        .output()
        .expect("run caddy adapt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let forward = json
        .find("/forward/monitoring/grafana")
        .expect("forward_auth uri");
    for header in [
        "x-auth-request-email",
        "x-auth-request-user",
        "x-auth-request-groups",
    ] {
        let delete = json
            .find(&format!("\"delete\":[\"{header}\"]"))
            .unwrap_or_else(|| panic!("{header} is not deleted: {json}"));
        assert!(
            delete < forward,
            "{header} is deleted after forward_auth runs"
        );
    }
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
