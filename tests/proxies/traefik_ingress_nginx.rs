//! Traefik as a drop-in for ingress-nginx: its `kubernetesIngressNGINX` provider reads the
//! same Ingresses and `nginx.ingress.kubernetes.io/auth-url` annotations, but calls the auth
//! service ForwardAuth-style (`X-Forwarded-Method/-Proto/-Host/-Uri/-For`, overwritten; the
//! client's other headers passed through, `X-Original-*` included; never its own
//! `X-Original-URL`). accessgate reads that call on `/auth/{ns}/{name}` and `/auth` with the
//! forward dialect, and refuses one carrying both header sets.
//!
//! The first test sends such calls directly; the others run real Traefik v3.7.9 with the
//! provider against the test kube-apiserver (`common::cluster`), `accessgate serve` with a
//! policy directory, and an echo backend behind an `ExternalName` Service: the proxy
//! contract on Ingresses written for ingress-nginx, then what only this provider does.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::echo::{Echo, received};
use crate::common::stack::{MAPPING, PATH, Proxy, Stack, assert_decided, decided_since, decisions};
use crate::common::traefik_nginx::IngressNginxProvider;
use crate::common::*;
use crate::contract;

type ProviderStack = Stack<IngressNginxProvider>;

const ADMINS_ONLY: &str = "  rules:\n    allow:\n      - { group: admins }\n";

/// One control plane and one Traefik at a time: the two end-to-end tests would otherwise
/// run two API servers side by side on a small machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `GET {auth}{path}` shaped as Traefik's provider sends it (v3.7.9,
/// `pkg/middlewares/ingressnginx/snippet/snippet.go`, `writeHeader`), plus `extra`.
fn traefik_call(server: &Server, path: &str, extra: &[(&str, &str)]) -> (u16, String, Value) {
    let mut req = http()
        .get(format!("{}{path}", server.auth))
        .header("x-forwarded-for", "127.0.0.1")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "app.example.test:8080")
        .header("x-forwarded-uri", PATH)
        .header("user-agent", "curl/8");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("auth request");
    let status = resp.status().as_u16();
    let reason = resp
        .headers()
        .get("x-accessgate-reason")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
        .collect();
    (status, reason, Value::Object(headers))
}

#[test]
fn auth_endpoints_read_a_forward_shaped_call() {
    let issuer = Issuer::start();
    let server = Server::start(
        &[
            (
                "web.yaml",
                &policy_yaml("apps", "web", &issuer.url, MAPPING),
            ),
            (
                "admin.yaml",
                &policy_yaml(
                    "apps",
                    "admin",
                    &issuer.url,
                    &format!("  hosts: [app.example.test]\n  paths: [/some]\n{ADMINS_ONLY}"),
                ),
            ),
        ],
        &[],
    );
    let token = issuer.token(json!({"sub": "u-7"}));
    let t = ("cf-access-jwt-assertion", token.as_str());

    // Named: the policy from the path, the request from X-Forwarded-*.
    let (status, reason, headers) = traefik_call(&server, "/auth/apps/web", &[t]);
    assert_eq!((status, reason.as_str()), (200, ""));
    assert_eq!(headers["x-auth-request-email"], "alice@example.com");
    assert_eq!(headers["x-auth-request-user"], "u-7");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        traefik_call(&server, "/auth/apps/web", &[]).1,
        "token_missing"
    );
    // Both header sets: a client's X-Original-* passed through by Traefik.
    for extra in [
        ("x-original-url", "https://app.example.test/"),
        ("x-original-method", "GET"),
    ] {
        for path in ["/auth/apps/web", "/auth?host=$host", "/auth"] {
            let (status, reason, _) = traefik_call(&server, path, &[t, extra]);
            assert_eq!(
                (status, reason.as_str()),
                (400, "dialect_mismatch"),
                "{path} {extra:?}"
            );
        }
    }
    // Bare /auth: routed on X-Forwarded-Host (+ path); a host parameter must name the same
    // host, except the uninterpolated text `$host`.
    for path in [
        "/auth?host=$host",
        "/auth?host=app.example.test",
        "/auth?host=APP.example.test",
        "/auth",
    ] {
        let (status, reason, _) = traefik_call(&server, path, &[t]);
        // /some/page meets the admins-only policy: the route was chosen by host and path.
        assert_eq!((status, reason.as_str()), (403, "rule_denied"), "{path}");
    }
    for path in [
        "/auth?host=other.example.test",
        "/auth?host=app.example.test:8080",
        "/auth?host=%61pp.example.test",
        "/auth?host=app.example.test&host=app.example.test",
        "/auth?host=",
    ] {
        let (status, reason, _) = traefik_call(&server, path, &[t]);
        assert_eq!(
            (status, reason.as_str()),
            (400, "request_malformed"),
            "{path}"
        );
    }
    let (status, reason, _) = traefik_call(
        &server,
        "/auth?host=$host",
        &[t, ("x-forwarded-uri", "/admin;/x")],
    );
    assert_eq!(
        (status, reason.as_str()),
        (400, "request_malformed"),
        "two X-Forwarded-Uri"
    );
}

#[test]
fn unchanged_ingress_nginx_annotations_protect_a_route_behind_traefik() {
    let _serial = serial();
    // The annotations exactly as written for ingress-nginx (IngressNginxProvider::start).
    let s = ProviderStack::start();
    // The provider read the Ingress: it wrote the status (ingresses/status update).
    let published = eventually(Duration::from_secs(60), || {
        s.proxy.cp.get_json(&["ingress", "web", "-n", "apps"])["status"]["loadBalancer"]["ingress"]
            == json!([{"ip": "127.0.0.1"}])
    });
    assert!(published, "Ingress status not written:\n{}", s.proxy.log());

    // The proxy contract, on this one cluster.
    contract::valid_tokens_reach_upstream_with_identity_headers(&s);
    contract::client_cannot_spoof_identity_headers(&s);
    contract::denials_reach_the_client_and_nothing_reaches_upstream(&s);
    contract::key_rotation_mid_run_refuses_nothing(&s);
    let web = |spec: &str| policy_yaml("apps", "web", &s.issuer.url, &format!("{MAPPING}{spec}"));
    s.server
        .replace_policy("web.yaml", &web(contract::SERVICE_ONLY));
    contract::client_cannot_supply_identity_a_service_token_lacks(&s);
    s.server.replace_policy("web.yaml", &web(""));

    // The underscore spelling of a mapped header is deleted at the entry point
    // (`underscoreHeadersStrategy: delete`), so no backend reads it as the header.
    let token = s.issuer.token(json!({}));
    let seen = s.through(&[
        ("cf-access-jwt-assertion", &token),
        ("x_auth_request_groups", "admins"),
    ]);
    assert!(
        received(&seen, "x_auth_request_groups").is_empty(),
        "underscore spelling reached the backend: {seen}"
    );

    // Traefik passes a client's X-Original-* through: with Traefik's own X-Forwarded-* that
    // is both header sets, refused even with a valid token.
    for spoof in [
        ("x-original-url", "https://app.example.test/"),
        ("x-original-method", "GET"),
    ] {
        s.refused(
            &[("cf-access-jwt-assertion", &token), spoof],
            400,
            "dialect_mismatch",
        );
    }
    // Client X-Forwarded-* are overwritten by Traefik, not read from the client.
    s.through(&[
        ("cf-access-jwt-assertion", &token),
        ("x-forwarded-host", "evil.example.test"),
        ("x-forwarded-uri", "/elsewhere"),
        ("x-forwarded-method", "not a method"),
    ]);

    // The policy file edited: enforced through Traefik, and again when restored.
    s.server.replace_policy("web.yaml", &web(ADMINS_ONLY));
    s.refused(&[("cf-access-jwt-assertion", &token)], 403, "rule_denied");
    let admin = s
        .issuer
        .token(json!({"claims": {"custom": {"groups": ["admins"]}}}));
    let seen = s.through(&[("cf-access-jwt-assertion", &admin)]);
    assert_eq!(received(&seen, "x-auth-request-groups"), ["admins"]);
    s.server.replace_policy("web.yaml", &web(""));
    s.through(&[("cf-access-jwt-assertion", &token)]);

    // Everything the provider needed was granted.
    let log = s.proxy.log();
    assert!(
        !log.contains("forbidden"),
        "the provider was refused something:\n{log}"
    );
}

#[test]
fn traefik_calls_auth_forward_style_routes_bare_auth_and_redirects_to_signin() {
    let _serial = serial();
    let s = ProviderStack::start();
    s.server.replace_policy(
        "route.yaml",
        &policy_yaml(
            "apps",
            "route",
            &s.issuer.url,
            "  hosts: [route.example.test]\n",
        ),
    );
    s.server.replace_policy(
        "route-admin.yaml",
        &policy_yaml(
            "apps",
            "route-admin",
            &s.issuer.url,
            &format!("  hosts: [route.example.test]\n  paths: [/admin]\n{ADMINS_ONLY}"),
        ),
    );
    let token = s.issuer.token(json!({}));
    let t = ("cf-access-jwt-assertion", token.as_str());
    let port = s.proxy.traefik.process.port;

    // What the provider sends: an auth service that records the call (the echo server).
    let probe = Echo::start();
    s.proxy.ingress(
        "probe",
        "probe.example.test",
        &[(
            "auth-url",
            &format!("http://127.0.0.1:{}/auth/apps/web?host=$host", probe.port()),
        )],
    );
    let (before, upstream) = (probe.count(), s.echo.count());
    let resp = s.proxy.get(
        "probe.example.test",
        PATH,
        &[
            t,
            ("x-original-url", "https://evil.example.test/admin"),
            ("x-forwarded-host", "evil.example.test"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.1"),
        ],
    );
    // The probe answers 200 to anything: the request goes through.
    assert_eq!(resp.status(), 200, "{}", s.proxy.log());
    assert_eq!((probe.count(), s.echo.count()), (before + 1, upstream + 1));
    let call = probe.last().unwrap();
    let one = |name: &str| received(&call, name);
    assert_eq!(
        call["uri"], "/auth/apps/web?host=probe.example.test",
        "Traefik interpolates $host (lowercase, no port): {call}"
    );
    assert_eq!(call["method"], "GET");
    assert_eq!(
        one("x-forwarded-host"),
        [format!("probe.example.test:{port}")]
    );
    assert_eq!(one("x-forwarded-uri"), [PATH]);
    assert_eq!(one("x-forwarded-method"), ["GET"]);
    assert_eq!(one("x-forwarded-proto"), ["http"]);
    assert_eq!(one("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(one("cf-access-jwt-assertion"), [token.as_str()]);
    assert_eq!(
        one("x-original-url"),
        ["https://evil.example.test/admin"],
        "the client's X-Original-URL is passed through: {call}"
    );
    assert!(one("x-original-method").is_empty(), "{call}");

    // Bare /auth?host=$host, as written for ingress-nginx: routed by host and path.
    let status = s.proxy.ingress(
        "route",
        "route.example.test",
        &[("auth-url", &format!("{}/auth?host=$host", s.server.auth))],
    );
    assert_eq!(status, 401);
    s.through_at("route.example.test", PATH, &[t]);
    s.refused_at(
        "route.example.test",
        "/admin/users",
        &[t],
        403,
        "rule_denied",
    );
    s.refused_at(
        "route.example.test",
        "/x/../ADMIN/users",
        &[t],
        403,
        "rule_denied",
    );
    s.refused_at(
        "route.example.test",
        "/admin/users",
        &[t, ("x-forwarded-uri", "/public")],
        403,
        "rule_denied",
    );
    let admins = s
        .issuer
        .token(json!({"claims": {"custom": {"groups": ["admins"]}}}));
    s.through_at(
        "route.example.test",
        "/admin/users",
        &[("cf-access-jwt-assertion", &admins)],
    );
    s.refused_at(
        "route.example.test",
        PATH,
        &[t, ("x-original-url", "https://route.example.test/")],
        400,
        "dialect_mismatch",
    );
    // An auth URL naming another host than the one Traefik routed: refused.
    let status = s.proxy.ingress(
        "copied",
        "copied.example.test",
        &[(
            "auth-url",
            &format!("{}/auth?host=route.example.test", s.server.auth),
        )],
    );
    assert_eq!(status, 400);
    s.refused_at("copied.example.test", PATH, &[t], 400, "request_malformed");

    // auth-signin: a 401 becomes a redirect with rd= the original URL; other denials and an
    // allow are not redirected.
    let status = s.proxy.ingress(
        "signin",
        "signin.example.test",
        &[
            ("auth-url", &format!("{}/auth/apps/web", s.server.auth)),
            ("auth-signin", "https://login.example.test/start"),
        ],
    );
    assert_eq!(status, 302);
    let (before, decided) = (s.echo.count(), decisions(&s.server));
    let resp = s.proxy.get("signin.example.test", PATH, &[]);
    assert_eq!(
        resp.status(),
        302,
        "accessgate said {:?}",
        decided_since(&s.server, &decided)
    );
    assert_decided(&s.server, &decided, "token_missing");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "https://login.example.test/start?rd=http://signin.example.test:{port}%2Fsome%2Fpage%3Fx%3D1"
        )
    );
    assert_eq!(s.echo.count(), before);
    s.through_at("signin.example.test", PATH, &[t]);
    s.refused_at(
        "signin.example.test",
        PATH,
        &[(
            "cf-access-jwt-assertion",
            &s.issuer.mint(json!({"aud": ["0".repeat(64)]})),
        )],
        403,
        "audience_mismatch",
    );
    s.refused_at(
        "signin.example.test",
        PATH,
        &[t, ("x-original-url", "https://signin.example.test/")],
        400,
        "dialect_mismatch",
    );
}

/// The move checked end to end: `accessgate migrate` says the Ingress works unchanged on
/// Traefik's provider, and the same requests through real nginx (as ingress-nginx renders
/// that Ingress) and through real Traefik (its provider reading it from the API server) get
/// the same verdicts and the same identity headers upstream.
#[test]
fn migrate_says_unchanged_and_nginx_and_traefik_agree_on_every_request() {
    use crate::common::nginx::Nginx;
    use crate::common::stack::{HEADERS, HOST};
    let _serial = serial();
    let after = ProviderStack::start();
    // Before: nginx in front of the same accessgate and the same upstream.
    let before = <Nginx as Proxy>::start(
        HOST,
        &after.server.auth,
        "apps/web",
        &HEADERS,
        after.echo.port(),
    );

    // The Ingress as stored, through the migration check; its auth-url names the harness's
    // loopback listener where a cluster's would name the Service, so the check reads it with
    // the Service's name in its place (the path and every annotation as stored).
    let ingress = after.proxy.cp.get_json(&["ingress", "web", "-n", "apps"]);
    let as_in_a_cluster = ingress.to_string().replace(
        &after.server.auth,
        "http://accessgate.accessgate-system.svc.cluster.local",
    );
    assert_ne!(as_in_a_cluster, ingress.to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, as_in_a_cluster).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_accessgate"))
        .args(["migrate", "--json", "--from", file.to_str().unwrap()])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        report["ingresses"][0]["outcomes"]["traefik-provider"], "unchanged",
        "{report:#}"
    );

    let issuer = &after.issuer;
    let alice = issuer.token(
        json!({"email": "alice@example.com", "claims": {"custom": {"groups": ["eng", "sre"]}}}),
    );
    let expired = issuer.token(json!({"ttl": -7200}));
    let other_app = issuer.mint(json!({"aud": ["another-app"]}));
    let service =
        issuer.mint(json!({"aud": [AUD], "type": "app", "sub": "", "common_name": "ci.access"}));
    let cookie = format!("CF_Authorization={alice}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "a valid token",
            vec![("cf-access-jwt-assertion", alice.as_str())],
        ),
        ("the same in the cookie", vec![("cookie", cookie.as_str())]),
        ("no token", vec![]),
        (
            "an expired token",
            vec![("cf-access-jwt-assertion", expired.as_str())],
        ),
        (
            "a token for another app",
            vec![("cf-access-jwt-assertion", other_app.as_str())],
        ),
        (
            "a service token on a people-only policy",
            vec![("cf-access-jwt-assertion", service.as_str())],
        ),
        (
            "a forged identity beside a valid token",
            vec![
                ("cf-access-jwt-assertion", alice.as_str()),
                ("x-auth-request-email", "ceo@example.com"),
                ("x-auth-request-groups", "admins"),
            ],
        ),
        (
            "a forged identity alone",
            vec![("x-auth-request-email", "ceo@example.com")],
        ),
    ];
    let mut allowed = Vec::new();
    for (what, headers) in &cases {
        let a = before.get(HOST, PATH, headers);
        let b = after.proxy.get(HOST, PATH, headers);
        let (sa, sb) = (a.status().as_u16(), b.status().as_u16());
        assert_eq!(sa, sb, "{what}: nginx answered {sa}, Traefik {sb}");
        if sa == 200 {
            let (ja, jb): (Value, Value) = (a.json().unwrap(), b.json().unwrap());
            for h in [
                "x-auth-request-email",
                "x-auth-request-user",
                "x-auth-request-groups",
            ] {
                assert_eq!(
                    received(&ja, h),
                    received(&jb, h),
                    "{what}: {h} upstream differs between nginx and Traefik"
                );
            }
            allowed.push((*what, received(&ja, "x-auth-request-email")));
        }
    }
    // Not a vacuous agreement: the good tokens passed with Alice's identity (never the forged
    // one), and the other cases were refused by both.
    assert_eq!(
        allowed
            .iter()
            .filter(|(what, _)| what.contains("valid token") || what.contains("cookie"))
            .map(|(_, email)| email.clone())
            .collect::<Vec<_>>(),
        vec![vec!["alice@example.com".to_owned()]; 3]
    );
    assert!(
        allowed
            .iter()
            .all(|(_, email)| email != &["ceo@example.com"]),
        "{allowed:?}"
    );
    assert!(
        allowed.len() < cases.len(),
        "nothing was refused: {allowed:?}"
    );
}
