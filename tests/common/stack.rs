//! The end-to-end stack every proxy suite runs: the dev issuer, `accessgate serve` with one
//! policy (`apps/web`), an echo upstream, and a real proxy in front of it that asks
//! accessgate about each request on the proxy's own endpoint (`/auth/...` for nginx,
//! `/forward/...` for Caddy and Traefik) and copies the identity headers to the upstream.
//!
//! ```text
//! client ──► proxy ──(auth subrequest)──► accessgate serve ──(JWKS)──► dev issuer
//!              └──────(allowed only)────► echo upstream (records what it received)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;

use serde_json::Value;

use super::caddy::Caddy;
use super::echo::Echo;
use super::nginx::{Nginx, Site};
use super::traefik::Traefik;
use super::{Issuer, Server, get_through, http, metric_sum, policy_yaml};

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

    /// What the proxy sends the upstream for a header it copies from an allow that did not
    /// carry it (no claim behind it): nothing, unless the proxy writes a constant of its own.
    fn withheld_header_value(&self, _name: &str) -> Option<String> {
        None
    }

    /// Whether a denied client gets accessgate's answer itself (its headers, the reason
    /// among them), not a page of the proxy's own.
    fn relays_denials(&self) -> bool {
        true
    }
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

    /// `auth_request` answers a denial itself, passing on only `WWW-Authenticate`.
    fn relays_denials(&self) -> bool {
        false
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
        self.process.get(&http(), host, path, headers)
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// Caddy before 2.10 (Debian ships 2.6.2) writes its unexpanded placeholder for a header
    /// the answer omitted: a constant, never a client's text.
    fn withheld_header_value(&self, name: &str) -> Option<String> {
        Some(format!("{{http.reverse_proxy.header.{name}}}"))
    }
}

/// Traefik's `forwardAuth` middleware on `/forward/{namespace}/{name}`.
impl Proxy for Traefik {
    fn start(host: &str, auth: &str, policy: &str, headers: &[&str], upstream: u16) -> Traefik {
        Traefik::start(host, &format!("{auth}/forward/{policy}"), headers, upstream)
    }

    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
        self.process.get(&http(), host, path, headers)
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

/// A proxy's process, listening on loopback `port`, with its files and its log (`log_file`)
/// in `dir`; killed on drop.
pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log_file: &'static str,
}

impl ProxyProcess {
    /// The proxy's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log_file)).unwrap_or_default()
    }

    /// `GET path` sent by `client` through the proxy, as a client of `host` sends it
    /// (`Host: host:port`), with `headers`.
    pub fn get(
        &self,
        client: &reqwest::blocking::Client,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        get_through(client, self.port, host, path, headers)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `candidates` that exists: a proxy Debian packages as `package`, which
/// tests/run.sh installs.
pub fn installed(candidates: &[&'static str], package: &str) -> &'static str {
    candidates
        .iter()
        .find(|c| Path::new(c).exists())
        .unwrap_or_else(|| {
            panic!("{package} is not installed: run tests/run.sh (it installs Debian's {package}) or `apt-get install {package}`")
        })
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

    /// A request that must reach the upstream, unchanged: allowed by accessgate (one `ok`
    /// decision), answered 200 by the upstream, which saw exactly one more request, for
    /// [`PATH`]. Returns what the upstream received.
    #[track_caller]
    pub fn through(&self, headers: &[(&str, &str)]) -> Value {
        self.through_at(HOST, PATH, headers)
    }

    /// [`Stack::through`] for `path` on `host`.
    #[track_caller]
    pub fn through_at(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Value {
        let (before, decided) = (self.echo.count(), decisions(&self.server));
        let resp = self.proxy.get(host, path, headers);
        assert_eq!(
            resp.status(),
            200,
            "{host}{path}: accessgate said {:?}\nproxy log:\n{}",
            decided_since(&self.server, &decided),
            self.proxy.log()
        );
        assert_decided(&self.server, &decided, "ok");
        assert_eq!(self.echo.count(), before + 1);
        let seen: Value = resp.json().unwrap();
        assert_eq!(seen["uri"], path);
        seen
    }

    /// A request that must be refused with `status` because accessgate denied it for
    /// `reason` (one decision, counted in its `/metrics`; on the client's answer too where
    /// the proxy relays it), with nothing reaching the upstream.
    #[track_caller]
    pub fn refused(
        &self,
        headers: &[(&str, &str)],
        status: u16,
        reason: &str,
    ) -> reqwest::blocking::Response {
        self.refused_at(HOST, PATH, headers, status, reason)
    }

    /// [`Stack::refused`] for `path` on `host`.
    #[track_caller]
    pub fn refused_at(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
        reason: &str,
    ) -> reqwest::blocking::Response {
        let (before, decided) = (self.echo.count(), decisions(&self.server));
        let resp = self.proxy.get(host, path, headers);
        assert_eq!(
            resp.status().as_u16(),
            status,
            "{host}{path}: accessgate said {:?}\nproxy log:\n{}",
            decided_since(&self.server, &decided),
            self.proxy.log()
        );
        assert_decided(&self.server, &decided, reason);
        if self.proxy.relays_denials() {
            let relayed = resp.headers().get("x-accessgate-reason");
            assert_eq!(
                relayed.and_then(|v| v.to_str().ok()),
                Some(reason),
                "the client did not get accessgate's answer"
            );
        }
        assert_eq!(
            self.echo.count(),
            before,
            "a refused request reached the upstream"
        );
        resp
    }
}

/// accessgate's decisions so far by reason code (`ok` for an allow), summed over policies:
/// `accessgate_decisions_total` in its `/metrics`. A count of its own, so a test tells a
/// denial accessgate made from one the proxy made up (accessgate unreachable) and one
/// reason from another behind the same status.
pub fn decisions(server: &Server) -> BTreeMap<String, u64> {
    let text = http()
        .get(format!("{}/metrics", server.admin))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("accessgate's /metrics: {e}"));
    let mut by_reason = BTreeMap::new();
    for line in text.lines() {
        let Some(labels) = line.strip_prefix("accessgate_decisions_total{") else {
            continue;
        };
        let reason = labels
            .split_once("reason=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(reason, _)| reason.to_owned())
            .expect("a reason label");
        let sum = metric_sum(line, "accessgate_decisions_total", &[]) as u64;
        *by_reason.entry(reason).or_default() += sum;
    }
    by_reason
}

/// The decisions `server` made since `before` (from [`decisions`]), by reason.
pub fn decided_since(server: &Server, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    decisions(server)
        .into_iter()
        .filter_map(|(reason, n)| {
            let new = n - before.get(&reason).copied().unwrap_or(0);
            (new > 0).then_some((reason, new))
        })
        .collect()
}

/// Asserts that `server` made exactly one decision since `before`, for `reason`.
#[track_caller]
pub fn assert_decided(server: &Server, before: &BTreeMap<String, u64>, reason: &str) {
    assert_eq!(
        decided_since(server, before),
        BTreeMap::from([(reason.to_owned(), 1)]),
        "accessgate's decisions (want one {reason}):\n{}",
        server.proc.output()
    );
}
