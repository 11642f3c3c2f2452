//! Traefik as a drop-in for ingress-nginx: its `kubernetesIngressNGINX` provider reads the
//! same Ingresses and `nginx.ingress.kubernetes.io/auth-url` annotations, but calls the auth
//! service ForwardAuth-style (`X-Forwarded-Method/-Proto/-Host/-Uri/-For`, overwritten; the
//! client's other headers passed through, `X-Original-*` included; never its own
//! `X-Original-URL`). accessgate reads that call on `/auth/{ns}/{name}` and `/auth` with the
//! forward dialect, and refuses one carrying both header sets.
//!
//! The first test sends such calls directly; the others run real Traefik v3.7.9 with the
//! provider against the test kube-apiserver (`common::cluster`), `accessgate serve` with a
//! policy directory, and an echo backend behind an `ExternalName` Service.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::cluster::ControlPlane;
use common::echo::{Echo, received};
use common::stack::{HEADERS, HOST, MAPPING, PATH};
use common::traefik_nginx::{TraefikIngressNginx, backend, ingress};
use common::*;
use serde_json::{Value, json};

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

/// Control plane, issuer, `accessgate serve`, echo backend and Traefik, with namespace
/// `apps` holding Service `app` (→ the echo backend), and the IngressClass `nginx`.
struct Cluster {
    cp: ControlPlane,
    issuer: Issuer,
    server: Server,
    echo: Echo,
    traefik: TraefikIngressNginx,
}

impl Cluster {
    fn start(policies: &dyn Fn(&Issuer) -> Vec<(&'static str, String)>) -> Cluster {
        let cp = ControlPlane::start();
        let issuer = Issuer::start();
        let files = policies(&issuer);
        let files: Vec<(&str, &str)> = files.iter().map(|(n, b)| (*n, b.as_str())).collect();
        let server = Server::start(&files, &[]);
        let echo = Echo::start();
        let traefik = TraefikIngressNginx::start(&cp);
        cp.kubectl_ok(&["create", "namespace", "apps"]);
        cp.apply(&backend("apps", "app", echo.port()).to_string())
            .unwrap_or_else(|e| panic!("apply the backend: {e}"));
        Cluster {
            cp,
            issuer,
            server,
            echo,
            traefik,
        }
    }

    /// Applies an Ingress in `apps` for `host` → Service `app` and waits until Traefik
    /// routes it; returns the status of a request without a token.
    #[track_caller]
    fn ingress(&self, name: &str, host: &str, annotations: &[(&str, &str)]) -> u16 {
        self.cp
            .apply(&ingress("apps", name, host, "app", annotations).to_string())
            .unwrap_or_else(|e| panic!("apply Ingress {name}: {e}"));
        self.traefik.wait_routed(host, PATH)
    }

    /// A request through Traefik that must reach the backend: 200 from the echo backend,
    /// one more request there, for [`PATH`]. Returns what the backend received.
    #[track_caller]
    fn through(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Value {
        let before = self.echo.count();
        let resp = self.traefik.get(host, path, headers);
        assert_eq!(
            resp.status(),
            200,
            "{host}{path}: {}\naccessgate:\n{}\ntraefik:\n{}",
            resp.headers()
                .get("x-accessgate-reason")
                .map(|v| v.to_str().unwrap_or_default())
                .unwrap_or_default(),
            self.server.proc.output(),
            self.traefik.log()
        );
        assert_eq!(self.echo.count(), before + 1);
        let seen: Value = resp.json().unwrap();
        assert_eq!(seen["uri"], path);
        seen
    }

    /// A request through Traefik that must be refused with `status` (and accessgate's
    /// `reason`, which Traefik relays), with nothing reaching the backend.
    #[track_caller]
    fn refused(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
        reason: &str,
    ) -> reqwest::blocking::Response {
        let before = self.echo.count();
        let resp = self.traefik.get(host, path, headers);
        let got = resp
            .headers()
            .get("x-accessgate-reason")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        assert_eq!(
            (resp.status().as_u16(), got.as_str()),
            (status, reason),
            "{host}{path} {headers:?}\ntraefik:\n{}",
            self.traefik.log()
        );
        assert_eq!(
            self.echo.count(),
            before,
            "a refused request reached the backend"
        );
        resp
    }
}

#[test]
fn unchanged_ingress_nginx_annotations_protect_a_route_behind_traefik() {
    let _serial = serial();
    let c = Cluster::start(&|issuer| {
        vec![("web.yaml", policy_yaml("apps", "web", &issuer.url, MAPPING))]
    });
    let auth_url = format!("{}/auth/apps/web", c.server.auth);
    // The annotations exactly as written for ingress-nginx.
    let status = c.ingress(
        "web",
        HOST,
        &[
            ("auth-url", &auth_url),
            ("auth-response-headers", &HEADERS.join(",")),
        ],
    );
    assert_eq!(status, 401, "no token");
    // The provider read the Ingress: it wrote the status (ingresses/status update).
    let published = eventually(Duration::from_secs(60), || {
        c.cp.get_json(&["ingress", "web", "-n", "apps"])["status"]["loadBalancer"]["ingress"]
            == json!([{"ip": "127.0.0.1"}])
    });
    assert!(
        published,
        "Ingress status not written:\n{}",
        c.traefik.log()
    );

    // A valid token: 200 with the identity headers at the backend, from header or cookie.
    let token = c
        .issuer
        .token(json!({"sub": "u-9", "claims": {"custom": {"groups": ["eng", "ops"]}}}));
    for creds in [
        ("cf-access-jwt-assertion", token.clone()),
        ("cookie", format!("CF_Authorization={token}")),
    ] {
        let seen = c.through(HOST, PATH, &[(creds.0, &creds.1)]);
        assert_eq!(
            received(&seen, "x-auth-request-email"),
            ["alice@example.com"]
        );
        assert_eq!(received(&seen, "x-auth-request-user"), ["u-9"]);
        assert_eq!(received(&seen, "x-auth-request-groups"), ["eng,ops"]);
    }

    // Client copies of the mapped headers: replaced, or removed when the token has no claim
    // behind them (and the underscore spelling deleted at the entry point).
    let plain = c.issuer.token(json!({"sub": "u-1"}));
    let seen = c.through(
        HOST,
        PATH,
        &[
            ("cf-access-jwt-assertion", &plain),
            ("x-auth-request-email", "ceo@example.com"),
            ("x-auth-request-user", "root"),
            ("x-auth-request-groups", "admins"),
            ("x_auth_request_groups", "admins"),
        ],
    );
    assert_eq!(
        received(&seen, "x-auth-request-email"),
        ["alice@example.com"],
        "{seen}"
    );
    assert_eq!(received(&seen, "x-auth-request-user"), ["u-1"], "{seen}");
    assert!(
        received(&seen, "x-auth-request-groups").is_empty(),
        "a client-sent identity header reached the backend: {seen}"
    );
    assert!(
        received(&seen, "x_auth_request_groups").is_empty(),
        "underscore spelling reached the backend: {seen}"
    );

    // No token, a bad token, the wrong audience.
    let resp = c.refused(HOST, PATH, &[], 401, "token_missing");
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer realm=\"accessgate\"")
    );
    c.refused(
        HOST,
        PATH,
        &[(
            "cf-access-jwt-assertion",
            &c.issuer.token(json!({"ttl": -3600})),
        )],
        401,
        "token_expired",
    );
    c.refused(
        HOST,
        PATH,
        &[(
            "cf-access-jwt-assertion",
            &c.issuer.mint(json!({"aud": ["0".repeat(64)]})),
        )],
        403,
        "audience_mismatch",
    );

    // Traefik passes a client's X-Original-* through: with Traefik's own X-Forwarded-* that
    // is both header sets, refused even with a valid token.
    for spoof in [
        ("x-original-url", "https://app.example.test/"),
        ("x-original-method", "GET"),
    ] {
        c.refused(
            HOST,
            PATH,
            &[("cf-access-jwt-assertion", &token), spoof],
            400,
            "dialect_mismatch",
        );
    }
    // Client X-Forwarded-* are overwritten by Traefik, not read from the client.
    c.through(
        HOST,
        PATH,
        &[
            ("cf-access-jwt-assertion", &token),
            ("x-forwarded-host", "evil.example.test"),
            ("x-forwarded-uri", "/elsewhere"),
            ("x-forwarded-method", "not a method"),
        ],
    );

    // The policy file edited: enforced through Traefik, and again when restored.
    c.server.replace_policy(
        "web.yaml",
        &policy_yaml(
            "apps",
            "web",
            &c.issuer.url,
            &format!("{MAPPING}{ADMINS_ONLY}"),
        ),
    );
    c.refused(
        HOST,
        PATH,
        &[("cf-access-jwt-assertion", &token)],
        403,
        "rule_denied",
    );
    let admin = c
        .issuer
        .token(json!({"claims": {"custom": {"groups": ["admins"]}}}));
    let seen = c.through(HOST, PATH, &[("cf-access-jwt-assertion", &admin)]);
    assert_eq!(received(&seen, "x-auth-request-groups"), ["admins"]);
    c.server.replace_policy(
        "web.yaml",
        &policy_yaml("apps", "web", &c.issuer.url, MAPPING),
    );
    c.through(HOST, PATH, &[("cf-access-jwt-assertion", &token)]);

    // Everything the provider needed was granted.
    let log = c.traefik.log();
    assert!(
        !log.contains("forbidden"),
        "the provider was refused something:\n{log}"
    );
}

#[test]
fn traefik_calls_auth_forward_style_routes_bare_auth_and_redirects_to_signin() {
    let _serial = serial();
    let c = Cluster::start(&|issuer| {
        vec![
            ("web.yaml", policy_yaml("apps", "web", &issuer.url, MAPPING)),
            (
                "route.yaml",
                policy_yaml(
                    "apps",
                    "route",
                    &issuer.url,
                    "  hosts: [route.example.test]\n",
                ),
            ),
            (
                "route-admin.yaml",
                policy_yaml(
                    "apps",
                    "route-admin",
                    &issuer.url,
                    &format!("  hosts: [route.example.test]\n  paths: [/admin]\n{ADMINS_ONLY}"),
                ),
            ),
        ]
    });
    let token = c.issuer.token(json!({}));
    let t = ("cf-access-jwt-assertion", token.as_str());
    let port = c.traefik.port;

    // What the provider sends: an auth service that records the call (the echo server).
    let probe = Echo::start();
    c.ingress(
        "probe",
        "probe.example.test",
        &[(
            "auth-url",
            &format!("http://127.0.0.1:{}/auth/apps/web?host=$host", probe.port()),
        )],
    );
    let before = probe.count();
    c.through(
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
    assert_eq!(probe.count(), before + 1);
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
    let status = c.ingress(
        "route",
        "route.example.test",
        &[("auth-url", &format!("{}/auth?host=$host", c.server.auth))],
    );
    assert_eq!(status, 401);
    c.through("route.example.test", PATH, &[t]);
    c.refused(
        "route.example.test",
        "/admin/users",
        &[t],
        403,
        "rule_denied",
    );
    c.refused(
        "route.example.test",
        "/x/../ADMIN/users",
        &[t],
        403,
        "rule_denied",
    );
    c.refused(
        "route.example.test",
        "/admin/users",
        &[t, ("x-forwarded-uri", "/public")],
        403,
        "rule_denied",
    );
    let admins = c
        .issuer
        .token(json!({"claims": {"custom": {"groups": ["admins"]}}}));
    c.through(
        "route.example.test",
        "/admin/users",
        &[("cf-access-jwt-assertion", &admins)],
    );
    c.refused(
        "route.example.test",
        PATH,
        &[t, ("x-original-url", "https://route.example.test/")],
        400,
        "dialect_mismatch",
    );
    // An auth URL naming another host than the one Traefik routed: refused.
    let status = c.ingress(
        "copied",
        "copied.example.test",
        &[(
            "auth-url",
            &format!("{}/auth?host=route.example.test", c.server.auth),
        )],
    );
    assert_eq!(status, 400);
    c.refused("copied.example.test", PATH, &[t], 400, "request_malformed");

    // auth-signin: a 401 becomes a redirect with rd= the original URL; other denials and an
    // allow are not redirected.
    let status = c.ingress(
        "signin",
        "signin.example.test",
        &[
            ("auth-url", &format!("{}/auth/apps/web", c.server.auth)),
            ("auth-signin", "https://login.example.test/start"),
        ],
    );
    assert_eq!(status, 302);
    let before = c.echo.count();
    let resp = c.traefik.get("signin.example.test", PATH, &[]);
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "https://login.example.test/start?rd=http://signin.example.test:{port}%2Fsome%2Fpage%3Fx%3D1"
        )
    );
    assert_eq!(c.echo.count(), before);
    c.through("signin.example.test", PATH, &[t]);
    c.refused(
        "signin.example.test",
        PATH,
        &[(
            "cf-access-jwt-assertion",
            &c.issuer.mint(json!({"aud": ["0".repeat(64)]})),
        )],
        403,
        "audience_mismatch",
    );
    c.refused(
        "signin.example.test",
        PATH,
        &[t, ("x-original-url", "https://signin.example.test/")],
        400,
        "dialect_mismatch",
    );
}
