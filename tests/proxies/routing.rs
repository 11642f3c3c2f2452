//! Routing you can trust, end to end behind real nginx rendered like ingress-nginx: the
//! bypasses an adversarial review found (authority confusion, absolute-form request lines,
//! a tenant claiming another namespace's host, path forms that select a weaker policy),
//! each sent byte for byte and each required to be refused with nothing reaching the
//! upstream, and each denial accessgate's own, for its reason (counted in its `/metrics`):
//! nginx's 500 alone would be as much accessgate unreachable as a request refused.
//!
//! Set-up: namespace `victim` owns `app.example.test` (`/` open to any valid token,
//! `/admin` only for group `admins`) and `admin.example.test` (only `admins`); namespace
//! `tenant` has its own issuer and later claims `admin.example.test` for itself. nginx
//! serves both hosts with the documented bare-endpoint auth URL `/auth?host=$host`, and
//! `named.example.test` with `/auth/victim/console`.

use std::time::Duration;

use serde_json::json;

use crate::common::echo::Echo;
use crate::common::nginx::{Nginx, Site};
use crate::common::stack::{assert_decided, decisions};
use crate::common::*;

const ADMINS_ONLY: &str = "  rules:\n    allow:\n      - { group: admins }\n";

/// Policy `namespace/name` for `issuer` claiming `hosts` (YAML flow items), with `rest` of
/// its spec (lines indented by two spaces).
fn policy(namespace: &str, name: &str, issuer: &Issuer, hosts: &str, rest: &str) -> String {
    policy_yaml(
        namespace,
        name,
        &issuer.url,
        &format!("  hosts: [{hosts}]\n{rest}"),
    )
}

struct Tenancy {
    victim: Issuer,
    tenant: Issuer,
    server: Server,
    echo: Echo,
    nginx: Nginx,
}

impl Tenancy {
    fn start() -> Tenancy {
        let victim = Issuer::start();
        let tenant = Issuer::start();
        let app = policy("victim", "app", &victim, "app.example.test", "");
        let admin = policy(
            "victim",
            "admin",
            &victim,
            "app.example.test",
            &format!("  paths: [/admin]\n{ADMINS_ONLY}"),
        );
        let console = policy(
            "victim",
            "console",
            &victim,
            "admin.example.test",
            ADMINS_ONLY,
        );
        let server = Server::start(
            &[
                ("app.yaml", &app),
                ("admin.yaml", &admin),
                ("console.yaml", &console),
            ],
            &[],
        );
        let echo = Echo::start();
        let bare = format!("{}/auth?host=$host", server.auth);
        let site = |host: &str, auth_url: &str| Site {
            host: host.into(),
            auth_url: auth_url.into(),
            response_headers: vec!["X-Auth-Request-Email".into()],
        };
        let nginx = Nginx::start(
            &[
                site("app.example.test", &bare),
                site("admin.example.test", &bare),
                site(
                    "named.example.test",
                    &format!("{}/auth/victim/console", server.auth),
                ),
            ],
            echo.port(),
        );
        Tenancy {
            victim,
            tenant,
            server,
            echo,
            nginx,
        }
    }

    fn user_token(&self) -> String {
        self.victim.token(json!({}))
    }

    fn admin_token(&self) -> String {
        self.victim
            .token(json!({"claims": {"custom": {"groups": ["admins"]}}}))
    }

    /// `GET target` with `Host: host` and the token; the status the client saw.
    fn send(&self, target: &str, host: &str, token: &str) -> u16 {
        self.nginx
            .raw_get(target, host, &[("Cf-Access-Jwt-Assertion", token)])
    }

    /// A request nginx must refuse with `status` because accessgate denied it for `reason`,
    /// with nothing reaching the upstream.
    #[track_caller]
    fn assert_refused(&self, target: &str, host: &str, token: &str, status: u16, reason: &str) {
        let (before, decided) = (self.echo.count(), decisions(&self.server));
        let got = self.send(target, host, token);
        assert_eq!(
            got,
            status,
            "GET {target} Host: {host}\n{}",
            self.nginx.error_log()
        );
        assert_decided(&self.server, &decided, reason);
        assert_eq!(
            self.echo.count(),
            before,
            "GET {target} Host: {host} reached the upstream"
        );
    }

    #[track_caller]
    fn assert_through(&self, target: &str, host: &str, token: &str) {
        let (before, decided) = (self.echo.count(), decisions(&self.server));
        assert_eq!(
            self.send(target, host, token),
            200,
            "GET {target} Host: {host}"
        );
        assert_decided(&self.server, &decided, "ok");
        assert_eq!(self.echo.count(), before + 1);
    }

    fn write_and_reload(&self, file: &str, body: &str) {
        write_and_reload(&self.server, file, body)
    }
}

/// Writes a policy file and waits until `serve` has reloaded it.
fn write_and_reload(server: &Server, file: &str, body: &str) {
    let reloads = || {
        server
            .metrics()
            .lines()
            .find(|l| l.starts_with("accessgate_policy_reloads_total{result=\"success\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = reloads();
    server.write_policy(file, body);
    assert!(
        eventually(Duration::from_secs(10), || reloads() > before),
        "{file} not reloaded"
    );
}

/// ingress-nginx's 500 is what the client sees when accessgate answers 400 (or 503).
const NGINX_500: u16 = 500;
/// accessgate's reason for a request it cannot read safely.
const MALFORMED: &str = "request_malformed";
/// A token of the tenant's issuer on a route of the victim's policy: its key is not the
/// victim issuer's.
const FOREIGN_KEY: &str = "key_unknown";

#[test]
fn the_set_up_allows_what_it_should() {
    let t = Tenancy::start();
    let (user, admin) = (t.user_token(), t.admin_token());
    t.assert_through("/", "app.example.test", &user);
    t.assert_refused(
        "/admin/users",
        "app.example.test",
        &user,
        403,
        "rule_denied",
    );
    t.assert_through("/admin/users", "app.example.test", &admin);
    t.assert_refused("/", "admin.example.test", &user, 403, "rule_denied");
    t.assert_through("/", "admin.example.test", &admin);
    t.assert_through("/", "named.example.test", &admin);
}

#[test]
fn userinfo_in_the_host_header_cannot_pick_another_policy() {
    let t = Tenancy::start();
    let user = t.user_token();
    // nginx routes on `admin.example.test`; the URL parser used to see `app.example.test`.
    for host in [
        "admin.example.test:@app.example.test",
        "admin.example.test:@evil.tenant.example",
    ] {
        t.assert_refused("/", host, &user, NGINX_500, MALFORMED);
        t.assert_refused("/dash", host, &user, NGINX_500, MALFORMED);
    }
    let tenant_minted = t.tenant.token(json!({}));
    t.assert_refused(
        "/",
        "admin.example.test:@evil.tenant.example",
        &tenant_minted,
        NGINX_500,
        MALFORMED,
    );
    // The per-Ingress endpoint validates the authority the same way.
    t.assert_refused(
        "/",
        "named.example.test:@app.example.test",
        &t.admin_token(),
        NGINX_500,
        MALFORMED,
    );
}

#[test]
fn fragment_or_query_in_the_host_header_cannot_hide_the_path() {
    let t = Tenancy::start();
    let user = t.user_token();
    for host in ["app.example.test:#", "app.example.test:?"] {
        t.assert_refused("/admin/users", host, &user, NGINX_500, MALFORMED);
    }
}

#[test]
fn absolute_form_request_line_cannot_disagree_with_the_host_header() {
    let t = Tenancy::start();
    let user = t.user_token();
    // nginx serves admin.example.test; X-Original-URL says app.example.test.
    t.assert_refused(
        "http://admin.example.test/dash",
        "app.example.test",
        &user,
        NGINX_500,
        MALFORMED,
    );
    // The same request line with an agreeing Host header is an ordinary request.
    t.assert_refused(
        "http://admin.example.test/dash",
        "admin.example.test",
        &user,
        403,
        "rule_denied",
    );
    t.assert_through(
        "http://admin.example.test/dash",
        "admin.example.test",
        &t.admin_token(),
    );
}

#[test]
fn path_forms_cannot_select_a_weaker_policy() {
    let t = Tenancy::start();
    let user = t.user_token();
    // Case variants now meet the /admin policy (Express, ASP.NET match paths this way).
    for path in ["/ADMIN/users", "/Admin/users", "/aDmIn"] {
        t.assert_refused(path, "app.example.test", &user, 403, "rule_denied");
    }
    // Forms a backend could read as /admin are refused outright.
    for path in [
        "/admin;/users",
        "/admin%3B/users",
        "/public/..;/admin/users",
        "/admin/users\\..\\..\\x",
        "/public%2F..%2Fadmin",
        "/%2561dmin",
    ] {
        t.assert_refused(path, "app.example.test", &user, NGINX_500, MALFORMED);
    }
}

#[test]
fn a_tenant_cannot_take_a_host_from_another_namespace() {
    let t = Tenancy::start();
    let tenant_minted = t.tenant.token(json!({}));
    // The tenant claims a path under the victim's host, then the victim's exact route.
    t.write_and_reload(
        "tenant-x.yaml",
        &policy(
            "tenant",
            "grab",
            &t.tenant,
            "admin.example.test",
            "  paths: [/x]\n",
        ),
    );
    t.assert_refused(
        "/x/anything",
        "admin.example.test",
        &tenant_minted,
        401,
        FOREIGN_KEY,
    );
    t.write_and_reload(
        "tenant-root.yaml",
        &policy(
            "tenant",
            "same",
            &t.tenant,
            "admin.example.test, app.example.test",
            "",
        ),
    );
    t.assert_refused("/", "admin.example.test", &tenant_minted, 401, FOREIGN_KEY);
    t.assert_refused("/", "app.example.test", &tenant_minted, 401, FOREIGN_KEY);
    // No denial of service: the owner's routes work exactly as before.
    t.assert_through("/x/anything", "admin.example.test", &t.admin_token());
    t.assert_through("/", "app.example.test", &t.user_token());
    t.assert_refused(
        "/admin",
        "app.example.test",
        &t.user_token(),
        403,
        "rule_denied",
    );
    // The owner's log names the refused claim, not the owner.
    t.server
        .proc
        .wait_line("host claims not routed", Duration::from_secs(10));
}

#[test]
fn host_claim_rules_keep_each_namespace_to_its_hosts() {
    let issuer = Issuer::start();
    let claim = |ns: &str, host: &str| policy(ns, "p", &issuer, host, "");
    // `tenant` is older (seen at start-up alone) but may only claim *.tenant.example.test.
    let server = Server::start(
        &[("tenant.yaml", &claim("tenant", "admin.example.test"))],
        &[
            "--host-claims",
            "tenant=*.tenant.example.test",
            "--host-claims",
            "ops=admin.example.test,*.ops.example.test",
        ],
    );
    let token = issuer.token(json!({}));
    let ask = |host: &str| {
        server.auth(
            &format!("/auth?host={host}"),
            &format!("https://{host}/"),
            &[("cf-access-jwt-assertion", &token)],
        )
    };
    ask("admin.example.test").assert_deny(503, "policy_unknown");
    write_and_reload(&server, "ops.yaml", &claim("ops", "admin.example.test"));
    ask("admin.example.test").assert_allow();
    // A namespace the rules do not list claims nothing, even a host nobody else claims.
    write_and_reload(&server, "other.yaml", &claim("other", "x.ops.example.test"));
    ask("x.ops.example.test").assert_deny(503, "policy_unknown");
    assert!(server.proc.output().contains("host claims not routed"));
}

/// The `/forward` dialect (Traefik, Caddy) asked about `GET https://{host}/` with `token`:
/// status and reason.
fn forward(server: &Server, host: &str, token: &str) -> (u16, String) {
    let resp = http()
        .get(format!("{}/forward", server.auth))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", "/")
        .header("cf-access-jwt-assertion", token)
        .send()
        .unwrap();
    let reason = resp
        .headers()
        .get("x-accessgate-reason")
        .map_or("", |v| v.to_str().unwrap())
        .to_owned();
    (resp.status().as_u16(), reason)
}

/// nginx serving `*.apps.example.test` (as the victim's wildcard Ingress) through the bare
/// endpoint, in front of an echo upstream.
fn wildcard_site(server: &Server) -> (Echo, Nginx) {
    let echo = Echo::start();
    let nginx = Nginx::start(
        &[Site {
            host: "*.apps.example.test".into(),
            auth_url: format!("{}/auth?host=$host", server.auth),
            response_headers: vec!["X-Auth-Request-Email".into()],
        }],
        echo.port(),
    );
    (echo, nginx)
}

/// The tenant's policy `tenant/grab`, with its own issuer, claims `secret.apps.example.test`.
fn tenant_claims_secret(server: &Server, tenant: &Issuer) {
    write_and_reload(
        server,
        "tenant.yaml",
        &policy("tenant", "grab", tenant, "secret.apps.example.test", ""),
    );
}

/// Finding (HIGH): the victim's Ingress serves `*.apps.example.test` through the bare
/// endpoint; a tenant's policy with its own issuer claimed `secret.apps.example.test` and its
/// self-minted token got 200 at the victim's backend. Now the victim's policy holds the
/// wildcard and a newer foreign claim under it is refused on every host-selecting endpoint.
#[test]
fn a_tenant_cannot_take_a_host_under_a_wildcard_another_namespace_holds() {
    let (victim, tenant) = (Issuer::start(), Issuer::start());
    let server = Server::start(
        &[(
            "apps.yaml",
            &policy("victim", "apps", &victim, "\"*.apps.example.test\"", ""),
        )],
        &[],
    );
    let (echo, nginx) = wildcard_site(&server);
    // Through nginx: the client's status, accessgate's one decision, and whether the
    // upstream got the request.
    let through = |host: &str, token: &str, status: u16, reason: &str| {
        let (before, decided) = (echo.count(), decisions(&server));
        let got = nginx.raw_get("/", host, &[("Cf-Access-Jwt-Assertion", token)]);
        assert_eq!(got, status, "{host}");
        assert_decided(&server, &decided, reason);
        assert_eq!(echo.count() - before, usize::from(status == 200), "{host}");
    };
    let victim_token = victim.token(json!({}));
    through("secret.apps.example.test", &victim_token, 200, "ok");
    through("a.b.apps.example.test", &victim_token, 200, "ok");

    tenant_claims_secret(&server, &tenant);
    let evil = tenant.token(json!({"email": "eve@evil.test"}));
    through("secret.apps.example.test", &evil, 401, FOREIGN_KEY);
    assert_eq!(
        forward(&server, "secret.apps.example.test", &evil),
        (401, FOREIGN_KEY.to_owned())
    );
    // The owner's users are unaffected.
    through("secret.apps.example.test", &victim_token, 200, "ok");
    assert_eq!(
        forward(&server, "secret.apps.example.test", &victim_token),
        (200, String::new())
    );
    server
        .proc
        .wait_line("host claims not routed", Duration::from_secs(10));
}

/// The same with a host the victim serves but its policy forgot: in file mode a second
/// namespace's claim needs an operator rule, so the tenant's claim routes nothing.
#[test]
fn a_second_namespace_claims_no_host_without_a_rule_in_file_mode() {
    let (victim, tenant) = (Issuer::start(), Issuer::start());
    let www = policy("victim", "apps", &victim, "www.apps.example.test", "");
    let server = Server::start(&[("www.yaml", &www)], &[]);
    let (echo, nginx) = wildcard_site(&server);
    tenant_claims_secret(&server, &tenant);
    let evil = tenant.token(json!({}));
    let (before, decided) = (echo.count(), decisions(&server));
    let got = nginx.raw_get(
        "/",
        "secret.apps.example.test",
        &[("Cf-Access-Jwt-Assertion", &evil)],
    );
    assert_eq!(got, NGINX_500, "accessgate's 503, as nginx shows it");
    assert_decided(&server, &decided, "policy_unknown");
    assert_eq!(echo.count(), before);
    assert_eq!(
        forward(&server, "secret.apps.example.test", &evil),
        (503, "policy_unknown".to_owned())
    );
    // A rule lets it.
    let ruled = Server::start(
        &[
            ("www.yaml", &www),
            (
                "tenant.yaml",
                &policy("tenant", "grab", &tenant, "secret.apps.example.test", ""),
            ),
        ],
        &[
            "--host-claims",
            "victim=*.apps.example.test",
            "--host-claims",
            "tenant=secret.apps.example.test",
        ],
    );
    assert_eq!(
        forward(&ruled, "secret.apps.example.test", &evil),
        (200, String::new())
    );
}

/// Finding (MEDIUM): the owner's claim absent from one reload handed the host to a waiting
/// foreign claim for good. Now the owner keeps it through the absence.
#[test]
fn an_owner_absent_for_one_reload_keeps_its_host() {
    let victim = Issuer::start();
    let tenant = Issuer::start();
    let console = policy("victim", "console", &victim, "admin.example.test", "");
    let grab = policy("tenant", "grab", &tenant, "admin.example.test", "");
    // The operator lets both namespaces claim it: ownership alone decides.
    let server = Server::start(
        &[("console.yaml", &console)],
        &[
            "--host-claims",
            "victim=admin.example.test",
            "--host-claims",
            "tenant=admin.example.test",
        ],
    );
    write_and_reload(&server, "grab.yaml", &grab);
    let (victim_token, evil) = (victim.token(json!({})), tenant.token(json!({})));
    // The host routes to the owner's policy: its users through, the tenant's tokens refused.
    let owner_holds = || {
        assert_eq!(
            forward(&server, "admin.example.test", &victim_token),
            (200, String::new())
        );
        assert_eq!(
            forward(&server, "admin.example.test", &evil),
            (401, FOREIGN_KEY.to_owned())
        );
    };
    owner_holds();
    // One reload without the owner (a bad deploy, a file being replaced)...
    server.reload_after(|dir| std::fs::remove_file(dir.join("console.yaml")).unwrap());
    assert_eq!(
        forward(&server, "admin.example.test", &evil),
        (503, "policy_unknown".to_owned()),
        "held for the absent owner, not handed over"
    );
    write_and_reload(&server, "console.yaml", &console);
    owner_holds();
}
