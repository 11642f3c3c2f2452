//! The end-to-end stack every proxy suite runs: the dev issuer, `accessgate serve` with one
//! policy (`apps/web`), an echo upstream, and a real proxy in front of it that asks
//! accessgate about each request on the proxy's own endpoint (`/auth/...` for nginx,
//! `/forward/...` for Caddy and Traefik) and copies the identity headers to the upstream.
//!
//! ```text
//! client ──► proxy ──(auth subrequest)──► accessgate serve ──(JWKS)──► dev issuer
//!              └──────(allowed only)────► echo upstream (records what it received)
//! ```

use serde_json::Value;

use super::caddy::Caddy;
use super::echo::Echo;
use super::nginx::{Nginx, Site};
use super::traefik::Traefik;
use super::{Issuer, Server, policy_yaml};

/// The host the proxy serves and the policy routes.
pub const HOST: &str = "app.example.test";
/// The request target every stack request sends.
pub const PATH: &str = "/some/page?x=1";
/// The identity headers the policy sets and the proxy copies to the upstream.
pub const HEADERS: [&str; 3] = [
    "X-Auth-Request-Email",
    "X-Auth-Request-User",
    "X-Auth-Request-Groups",
];
/// The policy's spec beyond issuer and audience: [`HOST`], and email, sub and groups
/// (joined with `,`) as [`HEADERS`].
pub const MAPPING: &str = "  hosts: [app.example.test]\n  claimHeaders:\n    - { header: X-Auth-Request-Email, claim: email }\n    - { header: X-Auth-Request-User, claim: sub }\n    - { header: X-Auth-Request-Groups, claim: custom.groups, join: \",\" }\n";

/// A real proxy configured, as its documentation says, to ask an external auth service.
pub trait Proxy: Sized {
    /// Serves `host`, asking the auth server at `auth` (`http://127.0.0.1:PORT`) about
    /// policy `policy` (`namespace/name`) on this proxy's endpoint, copying `headers` from an
    /// allow to the request it sends to the upstream on `upstream_port`.
    fn start(host: &str, auth: &str, policy: &str, headers: &[&str], upstream_port: u16) -> Self;

    /// `GET path` with `Host: host` (as this proxy expects it) and `headers`, through the proxy.
    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response;

    /// The proxy's own log, for failure messages.
    fn log(&self) -> String;
}

/// ingress-nginx's `auth-url` on `/auth/{namespace}/{name}`.
impl Proxy for Nginx {
    fn start(host: &str, auth: &str, policy: &str, headers: &[&str], upstream: u16) -> Nginx {
        let site = Site {
            host: host.into(),
            auth_url: format!("{auth}/auth/{policy}"),
            response_headers: headers.iter().map(|h| h.to_string()).collect(),
        };
        Nginx::start(&[site], upstream)
    }

    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        Nginx::get(self, host, path, headers)
    }

    fn log(&self) -> String {
        self.error_log()
    }
}

/// Caddy's `forward_auth` on `/forward/{namespace}/{name}`.
impl Proxy for Caddy {
    fn start(host: &str, auth: &str, policy: &str, headers: &[&str], upstream: u16) -> Caddy {
        let authority = auth.strip_prefix("http://").expect("http auth URL");
        Caddy::start(
            host,
            authority,
            &format!("/forward/{policy}"),
            headers,
            upstream,
        )
    }

    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        Caddy::get(self, host, path, headers)
    }

    fn log(&self) -> String {
        Caddy::log(self)
    }
}

/// Traefik's `forwardAuth` middleware on `/forward/{namespace}/{name}`.
impl Proxy for Traefik {
    fn start(host: &str, auth: &str, policy: &str, headers: &[&str], upstream: u16) -> Traefik {
        Traefik::start(host, &format!("{auth}/forward/{policy}"), headers, upstream)
    }

    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        Traefik::get(self, host, path, headers)
    }

    fn log(&self) -> String {
        Traefik::log(self)
    }
}

/// Issuer, auth server, upstream and proxy `P`, started together and stopped on drop.
pub struct Stack<P: Proxy> {
    pub issuer: Issuer,
    pub server: Server,
    pub echo: Echo,
    pub proxy: P,
}

impl<P: Proxy> Stack<P> {
    /// The policy `apps/web` for the stack's issuer, with [`MAPPING`].
    pub fn start() -> Stack<P> {
        Self::with_spec(MAPPING)
    }

    /// The policy `apps/web` for the stack's issuer, with `spec` (lines indented by two
    /// spaces) beyond issuer and audience.
    pub fn with_spec(spec: &str) -> Stack<P> {
        let issuer = Issuer::start();
        let server = Server::start(
            &[("web.yaml", &policy_yaml("apps", "web", &issuer.url, spec))],
            &[],
        );
        let echo = Echo::start();
        let proxy = P::start(HOST, &server.auth, "apps/web", &HEADERS, echo.port());
        Stack {
            issuer,
            server,
            echo,
            proxy,
        }
    }

    /// `GET` [`PATH`] on [`HOST`] through the proxy with `headers`.
    pub fn get(&self, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        self.proxy.get(HOST, PATH, headers)
    }

    /// A request that must reach the upstream, unchanged: answered 200 by the upstream, which
    /// saw exactly one more request, for [`PATH`]. Returns what the upstream received.
    #[track_caller]
    pub fn through(&self, headers: &[(&str, &str)]) -> Value {
        let before = self.echo.count();
        let resp = self.get(headers);
        assert_eq!(resp.status(), 200, "proxy log:\n{}", self.proxy.log());
        assert_eq!(self.echo.count(), before + 1);
        let seen: Value = resp.json().unwrap();
        assert_eq!(seen["uri"], PATH);
        seen
    }

    /// A request that must be refused with `status`, with nothing reaching the upstream.
    #[track_caller]
    pub fn refused(&self, headers: &[(&str, &str)], status: u16) {
        let before = self.echo.count();
        let resp = self.get(headers);
        assert_eq!(
            resp.status().as_u16(),
            status,
            "proxy log:\n{}",
            self.proxy.log()
        );
        assert_eq!(
            self.echo.count(),
            before,
            "a refused request reached the upstream"
        );
    }
}
