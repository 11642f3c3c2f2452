//! End to end behind real nginx doing what ingress-nginx generates for `auth-url` +
//! `auth-response-headers`, with the dev issuer, `accessgate serve` and an echo upstream.

mod common;

use std::time::{Duration, Instant};

use common::echo::{Echo, received};
use common::nginx::{Nginx, Site};
use common::*;
use serde_json::json;

const HEADERS: [&str; 3] = [
    "X-Auth-Request-Email",
    "X-Auth-Request-User",
    "X-Auth-Request-Groups",
];

fn mapping() -> &'static str {
    "  hosts: [app.example.test]\n  claimHeaders:\n    - { header: X-Auth-Request-Email, claim: email }\n    - { header: X-Auth-Request-User, claim: sub }\n    - { header: X-Auth-Request-Groups, claim: custom.groups, join: \",\" }\n"
}

struct Stack {
    issuer: Issuer,
    server: Server,
    echo: Echo,
    nginx: Nginx,
}

impl Stack {
    fn start(extra_args: &[&str]) -> Stack {
        let issuer = Issuer::start();
        let server = Server::start(
            &[(
                "web.yaml",
                &policy_yaml("apps", "web", &issuer.url, mapping()),
            )],
            extra_args,
        );
        let echo = Echo::start();
        let site = Site {
            host: "app.example.test".into(),
            auth_url: format!("{}/auth/apps/web", server.auth),
            response_headers: HEADERS.iter().map(|s| s.to_string()).collect(),
        };
        let nginx = Nginx::start(&[site], echo.port());
        Stack {
            issuer,
            server,
            echo,
            nginx,
        }
    }

    fn get(&self, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        self.nginx
            .get("app.example.test", "/some/page?x=1", headers)
    }

    /// A request that must be refused with `status`, reaching nothing upstream.
    #[track_caller]
    fn assert_refused(&self, headers: &[(&str, &str)], status: u16) {
        let before = self.echo.count();
        let resp = self.get(headers);
        assert_eq!(resp.status().as_u16(), status, "{}", self.nginx.error_log());
        assert_eq!(
            self.echo.count(),
            before,
            "a refused request reached the upstream"
        );
    }

    /// A request that must reach the upstream; returns what the upstream saw.
    #[track_caller]
    fn assert_through(&self, headers: &[(&str, &str)]) -> serde_json::Value {
        let before = self.echo.count();
        let resp = self.get(headers);
        assert_eq!(resp.status().as_u16(), 200, "{}", self.nginx.error_log());
        assert_eq!(self.echo.count(), before + 1);
        resp.json().unwrap()
    }
}

#[test]
fn valid_header_token_reaches_upstream_with_identity_headers() {
    let s = Stack::start(&[]);
    let token = s
        .issuer
        .token(json!({"sub": "u-42", "claims": {"custom": {"groups": ["eng", "ops"]}}}));
    let seen = s.assert_through(&[("cf-access-jwt-assertion", &token)]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"]
    );
    assert_eq!(received(&seen, "x-auth-request-user"), ["u-42"]);
    assert_eq!(received(&seen, "x-auth-request-groups"), ["eng,ops"]);
    assert_eq!(seen["uri"], "/some/page?x=1");
}

#[test]
fn valid_cookie_token_reaches_upstream() {
    let s = Stack::start(&[]);
    let token = s.issuer.token(json!({}));
    let seen = s.assert_through(&[("cookie", &format!("CF_Authorization={token}"))]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"]
    );
}

#[test]
fn client_cannot_spoof_identity_headers() {
    let s = Stack::start(&[]);
    // Claim present: the client's copy is replaced by the verified value.
    let token = s.issuer.token(json!({}));
    let seen = s.assert_through(&[
        ("cf-access-jwt-assertion", &token),
        ("x-auth-request-email", "ceo@example.com"),
        ("x-auth-request-groups", "admins"),
    ]);
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"]
    );
    // Claim absent (no groups in the token): the client's copy is dropped, not passed on.
    assert!(
        received(&seen, "x-auth-request-groups").is_empty(),
        "{seen}"
    );
    // A service token has no email at all: still nothing from the client.
    let server2 = Server::start(
        &[(
            "web.yaml",
            &policy_yaml(
                "apps",
                "web",
                &s.issuer.url,
                &format!("{}  tokenTypes: [service]\n", mapping()),
            ),
        )],
        &[],
    );
    let site = Site {
        host: "svc.example.test".into(),
        auth_url: format!("{}/auth/apps/web", server2.auth),
        response_headers: HEADERS.iter().map(|s| s.to_string()).collect(),
    };
    let nginx2 = Nginx::start(&[site], s.echo.port());
    let svc = s.issuer.token(json!({"type": "service"}));
    let resp = nginx2.get(
        "svc.example.test",
        "/",
        &[
            ("cf-access-jwt-assertion", &svc),
            ("x-auth-request-email", "ceo@example.com"),
            ("X-Auth-Request-User", "root"),
        ],
    );
    assert_eq!(resp.status(), 200);
    let seen: serde_json::Value = resp.json().unwrap();
    assert!(received(&seen, "x-auth-request-email").is_empty(), "{seen}");
    assert!(received(&seen, "x-auth-request-user").is_empty(), "{seen}");
}

#[test]
fn denials_reach_the_client_and_nothing_reaches_upstream() {
    let s = Stack::start(&[]);
    s.assert_refused(&[], 401);
    let wrong_aud = s.issuer.mint(json!({"aud": ["0".repeat(64)]}));
    s.assert_refused(&[("cf-access-jwt-assertion", &wrong_aud)], 403);
    let service = s.issuer.token(json!({"type": "service"}));
    s.assert_refused(&[("cf-access-jwt-assertion", &service)], 403);
    let expired = s.issuer.token(json!({"ttl": -3600}));
    s.assert_refused(&[("cf-access-jwt-assertion", &expired)], 401);
    let resp = s.get(&[]);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"accessgate\""),
        "ingress-nginx passes WWW-Authenticate to the client"
    );
}

#[test]
fn key_rotation_mid_run() {
    let s = Stack::start(&[]);
    let old = s.issuer.token(json!({}));
    s.assert_through(&[("cf-access-jwt-assertion", &old)]);
    s.issuer.rotate();
    let new = s.issuer.token(json!({}));
    // First request with the new kid: one refetch, allowed.
    s.assert_through(&[("cf-access-jwt-assertion", &new)]);
    // The previous key is still published: its tokens keep working.
    s.assert_through(&[("cf-access-jwt-assertion", &old)]);
}

#[test]
fn jwks_outage_keeps_serving_from_cache_and_accessgate_down_fails_closed() {
    let mut s = Stack::start(&[]);
    let token = s.issuer.token(json!({}));
    s.assert_through(&[("cf-access-jwt-assertion", &token)]);
    s.issuer.certs_mode("fail");
    s.assert_through(&[("cf-access-jwt-assertion", &token)]);
    s.issuer.proc.kill();
    s.assert_through(&[("cf-access-jwt-assertion", &token)]);
    // accessgate itself gone: nginx answers 500, nothing reaches the upstream.
    s.server.proc.kill();
    s.assert_refused(&[("cf-access-jwt-assertion", &token)], 500);
}

#[test]
fn policy_file_edits_take_effect_within_a_second() {
    let s = Stack::start(&[]);
    let token = s
        .issuer
        .token(json!({"claims": {"custom": {"groups": ["eng"]}, "department": "R&D"}}));
    let seen = s.assert_through(&[("cf-access-jwt-assertion", &token)]);
    assert_eq!(received(&seen, "x-auth-request-groups"), ["eng"]);

    // New mapping: groups as JSON now.
    let edited = policy_yaml(
        "apps",
        "web",
        &s.issuer.url,
        "  claimHeaders:\n    - { header: X-Auth-Request-Groups, claim: custom.groups, format: json }\n",
    );
    let started = Instant::now();
    s.server.write_policy("web.yaml", &edited);
    let applied = eventually(Duration::from_secs(1), || {
        let r = s.get(&[("cf-access-jwt-assertion", &token)]);
        let seen: serde_json::Value = r.json().unwrap();
        received(&seen, "x-auth-request-groups") == [r#"["eng"]"#]
    });
    assert!(applied, "mapping change not applied within 1 s");
    eprintln!("mapping change applied after {:?}", started.elapsed());

    // Audience removed: the same token is refused from then on.
    let started = Instant::now();
    s.server.write_policy(
        "web.yaml",
        &policy_yaml("apps", "web", &s.issuer.url, "").replace(AUD, &"e".repeat(64)),
    );
    let applied = eventually(Duration::from_secs(1), || {
        s.get(&[("cf-access-jwt-assertion", &token)]).status() == 403
    });
    assert!(applied, "audience removal not applied within 1 s");
    eprintln!("audience removal applied after {:?}", started.elapsed());
}

#[test]
fn bare_auth_routes_two_hosts_to_their_policies() {
    let issuer = Issuer::start();
    let server = Server::start(
        &[
            (
                "a.yaml",
                &policy_yaml(
                    "apps",
                    "a",
                    &issuer.url,
                    "  hosts: [a.example.test]\n  claimHeaders:\n    - { header: X-Auth-Request-User, claim: email }\n",
                ),
            ),
            (
                "b.yaml",
                &policy_yaml(
                    "apps",
                    "b",
                    &issuer.url,
                    "  hosts: [b.example.test]\n  tokenTypes: [service]\n  claimHeaders:\n    - { header: X-Auth-Request-User, claim: common_name }\n",
                ),
            ),
        ],
        &[],
    );
    let echo = Echo::start();
    let site = |host: &str| Site {
        host: host.into(),
        auth_url: format!("{}/auth?host=$host", server.auth),
        response_headers: vec!["X-Auth-Request-User".into()],
    };
    let nginx = Nginx::start(
        &[site("a.example.test"), site("b.example.test")],
        echo.port(),
    );
    let user = issuer.token(json!({}));
    let svc = issuer.token(json!({"type": "service", "common_name": "robot.access"}));

    let seen: serde_json::Value = nginx
        .get("a.example.test", "/", &[("cf-access-jwt-assertion", &user)])
        .json()
        .unwrap();
    assert_eq!(
        received(&seen, "x-auth-request-user"),
        ["alice@example.com"]
    );
    assert_eq!(
        nginx
            .get("a.example.test", "/", &[("cf-access-jwt-assertion", &svc)])
            .status(),
        403
    );

    let seen: serde_json::Value = nginx
        .get("b.example.test", "/", &[("cf-access-jwt-assertion", &svc)])
        .json()
        .unwrap();
    assert_eq!(received(&seen, "x-auth-request-user"), ["robot.access"]);
    assert_eq!(
        nginx
            .get("b.example.test", "/", &[("cf-access-jwt-assertion", &user)])
            .status(),
        403
    );
}
