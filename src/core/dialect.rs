//! Turning a proxy's auth subrequest into the original request it stands for. Pure.
//!
//! Each dialect ([`nginx`], [`forward`], [`envoy`], [`grpc`]) reads only the headers its proxy
//! sets and overwrites, never ones a client could add unchecked; Traefik's ingress-nginx
//! provider calls `/auth…` in the shape of `forward` and is read as such. A request carrying
//! another dialect's headers is refused (`dialect_mismatch`), so a proxy left pointing at the
//! wrong endpoint after a migration fails closed instead of guessing. Routing must see exactly
//! what the proxy routed on, so [`Routing::Strict`] also refuses authorities and paths that a
//! proxy and a backend could read two ways. What each endpoint reads and refuses, and why:
//! docs/routing.md.

use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::core::reason::Reason;

/// The request the proxy is asking about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    pub method: String,
    pub scheme: String,
    /// Lowercase, without port or trailing dot.
    pub host: String,
    /// Decoded and normalised (no `.`/`..` segments, no repeated slashes), for routing.
    pub path: String,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
}

/// How much of the original request selects the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// `/…/{namespace}/{name}`: the policy is named; host and path are only logged.
    Named,
    /// Bare endpoints: host and path choose the policy, so ambiguous forms are refused.
    Strict,
}

/// Headers only ingress-nginx's auth subrequest carries.
const NGINX_HEADERS: &[&str] = &["x-original-url", "x-original-method"];
/// Headers only the forward-auth proxies (Traefik, Caddy) send.
const FORWARD_HEADERS: &[&str] = &["x-forwarded-uri", "x-forwarded-method"];
/// Headers only Envoy adds.
const ENVOY_HEADERS: &[&str] = &["x-envoy-expected-rq-timeout-ms", "x-envoy-internal"];

fn refuse_foreign(headers: &HeaderMap, foreign: &[&[&str]]) -> Result<(), Reason> {
    if foreign
        .iter()
        .flat_map(|set| set.iter())
        .any(|h| headers.contains_key(*h))
    {
        return Err(Reason::DialectMismatch);
    }
    Ok(())
}

/// The host of an authority as a proxy routes on it: lowercase, no port, no trailing dot.
///
/// Only plain names and IP literals pass: the URL parser would otherwise percent-decode
/// and IDNA-map a host (`adm%69n`, fullwidth letters) into a name the proxy never matched,
/// and read `a:@b`, `a:#` or `a\b` as something else than the proxy did.
pub fn routed_host(authority: &str) -> Result<String, Reason> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']').ok_or(Reason::RequestMalformed)?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| Reason::RequestMalformed)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(Reason::RequestMalformed)?),
            };
            (ip.to_string(), port)
        }
        None => {
            let (name, port) = match authority.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (authority, None),
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                || name.starts_with('.')
                || name.contains("..")
            {
                return Err(Reason::RequestMalformed);
            }
            (name.to_ascii_lowercase(), port)
        }
    };
    if let Some(port) = port {
        // nginx takes `host:` as `host`; anything else must be a real port.
        if !port.is_empty()
            && (port.len() > 5
                || !port.bytes().all(|b| b.is_ascii_digit())
                || port.parse::<u32>().map_or(true, |p| p > 65535))
        {
            return Err(Reason::RequestMalformed);
        }
    }
    Ok(host)
}

/// A path as a backend might read it in more than one way: matrix parameters (`;`, which
/// Tomcat/Spring strip, `..;` read as `..`), backslashes (a separator on some servers, not
/// in nginx), escapes of the separator or of `%` itself (decoded twice by some stacks), and
/// segments a server trims ([`has_trimmed_segment`]).
fn is_ambiguous_path(raw: &str) -> bool {
    if raw.contains([';', '\\']) || has_trimmed_segment(raw) {
        return true;
    }
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_uppercase()),
                (b'3', b'B') | (b'5', b'C') | (b'2', b'F') | (b'2', b'5')
            )
    })
}

/// A segment ending in `.` or in whitespace, raw or percent-encoded (`admin.`, `admin%2E`,
/// `admin%20`, `admin%C2%A0`): Windows path normalisation (IIS, ASP.NET, anything mapping
/// URLs onto files) trims trailing dots and spaces, and .NET also tab, CR, LF, VT, FF, NEL
/// and no-break space, so `/admin./users` is served as `/admin/users` while the prefix
/// match sees a segment `admin.` under another policy. Whitespace is Unicode's (a superset
/// of every trimmed character). The dot segments `.` and `..` are not: [`normalise_path`]
/// resolves them as nginx does. Looked at before they are resolved, so `/x/admin./..` counts.
fn has_trimmed_segment(raw: &str) -> bool {
    percent_decode_str(raw)
        .decode_utf8_lossy()
        .split('/')
        .any(|segment| {
            !matches!(segment, "." | "..")
                && segment.ends_with(|c: char| c == '.' || c.is_whitespace())
        })
}

/// The original request from its parts as a proxy wrote them.
fn original(
    method: &str,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
    routing: Routing,
    headers: &HeaderMap,
    client_ip_header: &str,
) -> Result<OriginalRequest, Reason> {
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || !is_method_token(method) {
        return Err(Reason::RequestMalformed);
    }
    let host = routed_host(authority)?;
    let raw_path = path_and_query.split(['?', '#']).next().unwrap_or_default();
    if !raw_path.starts_with('/') || (routing == Routing::Strict && is_ambiguous_path(raw_path)) {
        return Err(Reason::RequestMalformed);
    }
    Ok(OriginalRequest {
        method: method.to_owned(),
        scheme,
        host,
        path: normalise_path(raw_path)?,
        client_ip: one_header(headers, client_ip_header)
            .ok()
            .flatten()
            .map(str::to_owned),
        request_id: one_header(headers, "x-request-id")
            .ok()
            .flatten()
            .map(str::to_owned),
    })
}

/// Traefik ForwardAuth / Caddy `forward_auth`: `X-Forwarded-Method`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Forwarded-Uri` (both proxies overwrite client copies by default).
pub fn forward(headers: &HeaderMap, routing: Routing) -> Result<OriginalRequest, Reason> {
    refuse_foreign(headers, &[NGINX_HEADERS, ENVOY_HEADERS])?;
    let uri = one_header(headers, "x-forwarded-uri")?.ok_or(Reason::RequestMalformed)?;
    let host = one_header(headers, "x-forwarded-host")?.ok_or(Reason::RequestMalformed)?;
    let proto = one_header(headers, "x-forwarded-proto")?.unwrap_or("https");
    let method = one_header(headers, "x-forwarded-method")?.unwrap_or("GET");
    original(
        method,
        proto,
        host,
        uri,
        routing,
        headers,
        "x-forwarded-for",
    )
}

/// Envoy ext_authz (HTTP service): the check request keeps the original method, its path is
/// the configured prefix plus the original path, and `Host` is the original authority.
/// `path_and_query` is what follows the prefix.
pub fn envoy(
    headers: &HeaderMap,
    method: &str,
    path_and_query: &str,
) -> Result<OriginalRequest, Reason> {
    refuse_foreign(headers, &[NGINX_HEADERS, FORWARD_HEADERS])?;
    let host = one_header(headers, "host")?.ok_or(Reason::RequestMalformed)?;
    let proto = one_header(headers, "x-forwarded-proto")?.unwrap_or("https");
    original(
        method,
        proto,
        host,
        path_and_query,
        Routing::Named,
        headers,
        "x-forwarded-for",
    )
}

/// The `/auth` endpoints: the call a controller makes for the
/// `nginx.ingress.kubernetes.io/auth-url` annotation, from either controller that reads it.
///
/// - ingress-nginx sends `X-Original-URL` (always): read by [`ingress_nginx`].
/// - Traefik's `kubernetesIngressNGINX` provider makes a ForwardAuth-shaped call instead:
///   `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For` (overwritten), the client's
///   other headers passed through, never `X-Original-*`. A call with `X-Forwarded-Uri` and
///   no `X-Original-URL` is read by [`forward`], with [`forward`]'s checks; see
///   [`traefik_ingress_nginx`] for the `host` parameter of the bare `/auth`.
///
/// A call carrying both sets (`X-Original-URL` or `X-Original-Method` with `X-Forwarded-Uri`
/// or `X-Forwarded-Method`) is `dialect_mismatch` either way. Through Traefik that is how a
/// client's own `X-Original-URL` arrives (Traefik does not strip it), so it is refused and
/// never read as the request. ingress-nginx always sets `X-Original-URL`, so behind it a
/// client's `X-Forwarded-Uri` still meets the ingress-nginx reading and is refused there.
pub fn nginx(
    headers: &HeaderMap,
    routing: Routing,
    routed_host: Option<&str>,
) -> Result<OriginalRequest, Reason> {
    if !headers.contains_key("x-original-url") && headers.contains_key("x-forwarded-uri") {
        return traefik_ingress_nginx(headers, routing, routed_host);
    }
    ingress_nginx(headers, routing, routed_host)
}

/// Traefik's `kubernetesIngressNGINX` provider on `/auth…`: the forward dialect.
///
/// For [`Routing::Strict`] (bare `/auth`) the policy is chosen by `X-Forwarded-Host`, which
/// Traefik sets from the `Host` it routed on (as on `/forward`). `routed_host` is the `host`
/// query parameter of an auth URL written for ingress-nginx (`/auth?host=$host`); Traefik
/// (v3.7.9) interpolates `$host` there (lowercase, no port), so it must name the same host as
/// `X-Forwarded-Host`, by the rules of [`ingress_nginx`] (a plain host, no port), or the
/// call is refused. The literal text `$host` — what a controller that does not interpolate
/// sends — is ignored: it names no host. No parameter: `X-Forwarded-Host` alone.
pub fn traefik_ingress_nginx(
    headers: &HeaderMap,
    routing: Routing,
    routed_host: Option<&str>,
) -> Result<OriginalRequest, Reason> {
    let request = forward(headers, routing)?;
    if routing == Routing::Strict {
        if let Some(param) = routed_host.filter(|h| *h != "$host") {
            if routed_host_param(param)? != request.host {
                return Err(Reason::RequestMalformed);
            }
        }
    }
    Ok(request)
}

/// The `host` query parameter as nginx's `$host`: a plain host without a port (one means the
/// auth URL passed something else, such as `$http_host`, the client's header again).
fn routed_host_param(param: &str) -> Result<String, Reason> {
    if param.rsplit(']').next().unwrap_or_default().contains(':') {
        return Err(Reason::RequestMalformed);
    }
    routed_host(param)
}

/// ingress-nginx `auth-url`: `X-Original-URL` (`$scheme://$http_host$request_uri`),
/// `X-Original-Method`, `X-Real-IP`, `X-Request-ID`.
///
/// For [`Routing::Strict`], `routed_host` is nginx's own `$host`, passed by the auth URL
/// (`/auth?host=$host`): `X-Original-URL` carries the client's `Host` header, but nginx
/// chose the server block from the request line when it was in absolute form
/// (`GET http://admin.example.com/ HTTP/1.1` with `Host: public.example.com`). The two
/// must agree, or the request is refused.
pub fn ingress_nginx(
    headers: &HeaderMap,
    routing: Routing,
    routed_host: Option<&str>,
) -> Result<OriginalRequest, Reason> {
    refuse_foreign(headers, &[FORWARD_HEADERS, ENVOY_HEADERS])?;
    let raw_url = one_header(headers, "x-original-url")?.ok_or(Reason::RequestMalformed)?;
    let (scheme, rest) = raw_url.split_once("://").ok_or(Reason::RequestMalformed)?;
    let (authority, path_and_query) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let method = one_header(headers, "x-original-method")?.unwrap_or("GET");
    let request = original(
        method,
        scheme,
        authority,
        path_and_query,
        routing,
        headers,
        "x-real-ip",
    )?;
    if routing == Routing::Strict {
        let routed = routed_host_param(routed_host.ok_or(Reason::RequestMalformed)?)?;
        if routed != request.host {
            return Err(Reason::RequestMalformed);
        }
    }
    Ok(request)
}

/// `url` read as `X-Original-URL` is (method GET, no other headers): what `accessgate
/// check --url` shows routing on.
pub fn original_url(url: &str, routing: Routing) -> Result<OriginalRequest, Reason> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-original-url",
        url.parse().map_err(|_| Reason::RequestMalformed)?,
    );
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default());
    let host = authority.map(|a| match a.find(']') {
        Some(end) => &a[..=end],
        None => a.split(':').next().unwrap_or_default(),
    });
    ingress_nginx(&headers, routing, host)
}

/// The raw value of the one `host` parameter in a query string, undecoded (a decoded
/// `adm%69n` would name a host nginx never matched). Two `host` parameters: refused.
pub fn host_param(query: Option<&str>) -> Result<Option<&str>, Reason> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        if let Some(value) = pair.strip_prefix("host=") {
            if found.replace(value).is_some() {
                return Err(Reason::RequestMalformed);
            }
        }
    }
    Ok(found)
}

/// A method as nginx parses one (`A-Z`, `_`, `-`): it forwards extension methods such as
/// `VERSION-CONTROL`, `M-SEARCH` or `MY_METHOD`, and nothing else.
fn is_method_token(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
}

/// Zero or one value, as text. Two values of a header the proxy sets means someone else
/// set one too.
fn one_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Reason> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Reason::RequestMalformed);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Reason::RequestMalformed)
}

/// The path as nginx routes it (`$uri`): percent-decoded, dot segments resolved and
/// slashes merged, so a policy chosen by path prefix cannot be dodged with `%2e%2e` or
/// `//`. Refuses what does not decode to text or holds control characters.
pub fn normalise_path(raw: &str) -> Result<String, Reason> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Reason::RequestMalformed)?;
    if decoded.chars().any(char::is_control) {
        return Err(Reason::RequestMalformed);
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// At most this many entries in a gRPC check's header map (pseudo-headers included): Envoy
/// admits 100 request headers by default (`max_request_headers_count`) and adds a few of
/// its own (`x-forwarded-proto`, `x-request-id`, ...) before the check.
pub const GRPC_MAX_HEADERS: usize = 128;
/// At most this many bytes of names and values in a gRPC check's header map: Envoy admits
/// 60 KiB of request headers by default (`max_request_headers_kb`).
pub const GRPC_MAX_HEADER_BYTES: usize = 96 * 1024;

/// The original request as gRPC ext_authz describes it (`attributes.request.http` in
/// `envoy.service.auth.v3.CheckRequest`): method, scheme, authority and path each in a
/// field of its own, filled by the proxy from what it routed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcHttp<'a> {
    pub method: &'a str,
    /// Empty reads as `https`, as a missing `X-Forwarded-Proto` does.
    pub scheme: &'a str,
    /// `host`: the `:authority` (or `Host`) the proxy routed on.
    pub host: &'a str,
    /// `path`: the request target as sent, query included, undecoded.
    pub path: &'a str,
    /// `id`: the proxy's own request id (Envoy's stream id), logged when no `X-Request-ID`.
    pub id: &'a str,
    /// `attributes.source` address, logged when no `X-Forwarded-For`.
    pub source_ip: Option<&'a str>,
}

/// gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`, sent by Envoy Gateway,
/// Istio, Contour, kgateway): the original request from [`GrpcHttp`], the client's headers
/// (for tokens and `X-Request-ID`) as [`grpc_headers`] built them.
///
/// The same checks as every HTTP dialect: a method token, `http`/`https`, a plain host
/// ([`routed_host`]), a path that starts with `/` and is text an HTTP header could carry
/// (visible ASCII, as `X-Original-URL` must be), and for [`Routing::Strict`] no ambiguous
/// path. No header names another proxy's dialect here: the request arrives in fields, not
/// headers, so client headers such as `X-Forwarded-Uri` are only passed through.
pub fn grpc(
    http: &GrpcHttp<'_>,
    headers: &HeaderMap,
    routing: Routing,
) -> Result<OriginalRequest, Reason> {
    // `HeaderValue::to_str`'s rule: what the other dialects read from a header.
    if !http
        .path
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(Reason::RequestMalformed);
    }
    let scheme = if http.scheme.is_empty() {
        "https"
    } else {
        http.scheme
    };
    let mut request = original(
        http.method,
        scheme,
        http.host,
        http.path,
        routing,
        headers,
        "x-forwarded-for",
    )?;
    if request.client_ip.is_none() {
        request.client_ip = http
            .source_ip
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned);
    }
    if request.request_id.is_none() && !http.id.is_empty() {
        request.request_id = Some(http.id.to_owned());
    }
    Ok(request)
}

/// The client's headers from a gRPC check's header list (`headers`, or `header_map` with
/// raw values), as an HTTP server would have received them, so token extraction is the
/// same code for every protocol. Pseudo-headers (`:authority`, `:path`, ...) are skipped:
/// their values arrive in [`GrpcHttp`]. Refused (`request_malformed`): more than
/// [`GRPC_MAX_HEADERS`] entries or [`GRPC_MAX_HEADER_BYTES`] bytes, a value that is not
/// UTF-8, a name or value HTTP could not carry (CR, LF, NUL, spaces in names).
pub fn grpc_headers<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<HeaderMap, Reason> {
    use axum::http::{HeaderName, HeaderValue};

    let mut headers = HeaderMap::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for (name, value) in pairs {
        count += 1;
        bytes += name.len() + value.len();
        if count > GRPC_MAX_HEADERS || bytes > GRPC_MAX_HEADER_BYTES {
            return Err(Reason::RequestMalformed);
        }
        if name.starts_with(':') {
            continue;
        }
        std::str::from_utf8(value).map_err(|_| Reason::RequestMalformed)?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Reason::RequestMalformed)?;
        let value = HeaderValue::from_bytes(value).map_err(|_| Reason::RequestMalformed)?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    /// Method, scheme, host and path as the dialect read them.
    pub(super) fn request_line(r: &OriginalRequest) -> (&str, &str, &str, &str) {
        (
            r.method.as_str(),
            r.scheme.as_str(),
            r.host.as_str(),
            r.path.as_str(),
        )
    }

    /// An `X-Original-URL` the nginx dialect must refuse.
    fn assert_malformed_url(bad: &str) {
        assert_eq!(
            named(&h(&[("x-original-url", bad)])),
            Err(Reason::RequestMalformed),
            "{bad}"
        );
    }

    /// The authority and path a structured-URL property test assembles from its pieces.
    pub(super) fn authority_and_path(
        user: Option<&str>,
        host: &[&str],
        port: Option<&str>,
        segments: &[&str],
    ) -> (String, String) {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        (
            format!("{user}{}{port}", host.join(".")),
            format!("/{}", segments.join("/")),
        )
    }

    fn named(m: &HeaderMap) -> Result<OriginalRequest, Reason> {
        nginx(m, Routing::Named, None)
    }

    fn fwd(m: &HeaderMap) -> Result<OriginalRequest, Reason> {
        forward(m, Routing::Named)
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn reads_what_ingress_nginx_sends() {
        let r = named(&h(&[
            ("x-original-url", "https://App.Example.COM:8443/api/v1?q=1"),
            ("x-original-method", "POST"),
            ("x-real-ip", "203.0.113.9"),
            ("x-request-id", "abc"),
        ]))
        .unwrap();
        assert_eq!(r.host, "app.example.com");
        assert_eq!(r.path, "/api/v1");
        assert_eq!(r.method, "POST");
        assert_eq!(r.scheme, "https");
        assert_eq!(r.client_ip.as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn extension_methods_nginx_forwards_are_accepted() {
        for m in ["VERSION-CONTROL", "M-SEARCH", "MY_METHOD", "PROPFIND"] {
            let r = named(&h(&[
                ("x-original-url", "https://a/"),
                ("x-original-method", m),
            ]));
            assert_eq!(r.unwrap().method, m);
        }
        for bad in ["", "get", "GET POST", "G(ET", "GET\"x", "GET1"] {
            let r = named(&h(&[
                ("x-original-url", "https://a/"),
                ("x-original-method", bad),
            ]));
            assert_eq!(r, Err(Reason::RequestMalformed), "{bad:?}");
        }
    }

    #[test]
    fn missing_or_bad_original_url_is_malformed() {
        assert_eq!(named(&h(&[])), Err(Reason::RequestMalformed));
        for bad in [
            "/relative",
            "not a url",
            "ftp://x/y",
            "http://",
            "https://exa mple.com/",
        ] {
            assert_malformed_url(bad);
        }
        let two = h(&[
            ("x-original-url", "https://a/"),
            ("x-original-url", "https://b/"),
        ]);
        assert_eq!(named(&two), Err(Reason::RequestMalformed));
    }

    #[test]
    fn foreign_dialect_headers_are_refused() {
        // Traefik's and Caddy's forward headers, Envoy's marker.
        for (name, value) in [("x-forwarded-uri", "/"), ("x-envoy-internal", "true")] {
            let r = named(&h(&[("x-original-url", "https://a/"), (name, value)]));
            assert_eq!(r, Err(Reason::DialectMismatch), "{name}");
        }
    }

    #[test]
    fn forward_reads_what_traefik_and_caddy_send() {
        let r = fwd(&h(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "App.Example.com"),
            ("x-forwarded-uri", "/api/../admin?x=1"),
            ("x-forwarded-for", "198.51.100.7"),
        ]))
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.path.as_str()),
            ("POST", "app.example.com", "/admin")
        );
        assert_eq!(r.client_ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(
            fwd(&h(&[("x-forwarded-host", "a")])),
            Err(Reason::RequestMalformed),
            "no uri"
        );
        assert_eq!(
            fwd(&h(&[("x-forwarded-host", "a@b"), ("x-forwarded-uri", "/")])),
            Err(Reason::RequestMalformed),
            "userinfo smuggled into the host"
        );
        assert_eq!(
            fwd(&h(&[
                ("x-forwarded-host", "a"),
                ("x-forwarded-uri", "/"),
                ("x-original-url", "https://a/")
            ])),
            Err(Reason::DialectMismatch)
        );
    }

    /// The auth call Traefik's `kubernetesIngressNGINX` provider (v3.7) makes for `auth-url`:
    /// the client's headers plus `X-Forwarded-*` it overwrites, and `extra`.
    fn traefik_call(extra: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = h(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "App.Example.com:8080"),
            ("x-forwarded-uri", "/api/../admin?x=1"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-request-id", "r-1"),
            ("cf-access-jwt-assertion", "tok"),
        ]);
        for (k, v) in extra {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn auth_reads_traefiks_ingress_nginx_call_as_the_forward_dialect() {
        for routing in [Routing::Named, Routing::Strict] {
            let m = traefik_call(&[]);
            assert_eq!(
                nginx(&m, routing, None),
                forward(&m, routing),
                "{routing:?}"
            );
        }
        let r = named(&traefik_call(&[])).unwrap();
        assert_eq!(
            request_line(&r),
            ("POST", "http", "app.example.com", "/admin")
        );
        assert_eq!(r.client_ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(r.request_id.as_deref(), Some("r-1"));
        // The forward dialect's checks, all of them.
        let mut no_host = traefik_call(&[]);
        no_host.remove("x-forwarded-host");
        assert_eq!(named(&no_host), Err(Reason::RequestMalformed));
        for (name, value) in [
            ("x-forwarded-uri", "/again"),
            ("x-forwarded-host", "other.example.com"),
            ("x-forwarded-method", "GET"),
        ] {
            assert_eq!(
                named(&traefik_call(&[(name, value)])),
                Err(Reason::RequestMalformed),
                "two {name}"
            );
        }
        let mut m = traefik_call(&[]);
        m.insert("x-forwarded-host", HeaderValue::from_static("a:@b"));
        assert_eq!(named(&m), Err(Reason::RequestMalformed), "userinfo");
        m.insert("x-forwarded-host", HeaderValue::from_static("a"));
        m.insert("x-forwarded-method", HeaderValue::from_static("get"));
        assert_eq!(named(&m), Err(Reason::RequestMalformed), "method");
        m.insert("x-forwarded-method", HeaderValue::from_static("GET"));
        m.insert("x-forwarded-uri", HeaderValue::from_static("/admin;/x"));
        assert!(
            named(&m).is_ok(),
            "the named endpoint chooses nothing by path"
        );
        assert_eq!(
            nginx(&m, Routing::Strict, None),
            Err(Reason::RequestMalformed),
            "ambiguous path on the bare endpoint"
        );
    }

    #[test]
    fn both_header_sets_on_auth_are_a_dialect_mismatch() {
        // Traefik passes a client's X-Original-* through to the auth call.
        for (name, value) in [
            ("x-original-url", "https://app.example.com/public"),
            ("x-original-method", "GET"),
        ] {
            for (routing, host) in [
                (Routing::Named, None),
                (Routing::Strict, Some("app.example.com")),
                (Routing::Strict, Some("$host")),
            ] {
                assert_eq!(
                    nginx(&traefik_call(&[(name, value)]), routing, host),
                    Err(Reason::DialectMismatch),
                    "{name} {routing:?}"
                );
            }
        }
        // ingress-nginx always sets X-Original-URL: a client's X-Forwarded-Uri/-Method next
        // to it is refused, as before.
        for foreign in ["x-forwarded-uri", "x-forwarded-method"] {
            let m = h(&[
                ("x-original-url", "https://app.example.com/"),
                ("x-forwarded-host", "app.example.com"),
                (foreign, "/"),
            ]);
            assert_eq!(named(&m), Err(Reason::DialectMismatch), "{foreign}");
        }
        // No URL in either form: read as ingress-nginx's call, whose foreign header it refuses.
        assert_eq!(
            named(&h(&[("x-forwarded-method", "GET")])),
            Err(Reason::DialectMismatch)
        );
        assert_eq!(
            named(&traefik_call(&[("x-envoy-internal", "true")])),
            Err(Reason::DialectMismatch)
        );
    }

    #[test]
    fn bare_auth_routes_a_traefik_call_on_its_forwarded_host() {
        let strict = |param: Option<&str>| nginx(&traefik_call(&[]), Routing::Strict, param);
        // Traefik (v3.7.9) interpolates `$host` (lowercase, no port); a controller that does not
        // sends the literal text, which names no host and is ignored.
        for ok in [
            None,
            Some("app.example.com"),
            Some("APP.example.com."),
            Some("$host"),
        ] {
            let r = strict(ok).unwrap_or_else(|e| panic!("{ok:?}: {e:?}"));
            assert_eq!(
                (r.host.as_str(), r.path.as_str()),
                ("app.example.com", "/admin")
            );
        }
        for bad in [
            "evil.example.com",
            "app.example.com:8080",
            "%61pp.example.com",
            "",
            "${host}",
            "$http_host",
            "$HOST",
            "a@app.example.com",
        ] {
            assert_eq!(strict(Some(bad)), Err(Reason::RequestMalformed), "{bad:?}");
        }
        // The literal `$host` is ignored only in the forward shape: ingress-nginx interpolates it.
        assert_eq!(
            routed("https://app.example.com/", Some("$host")),
            Err(Reason::RequestMalformed)
        );
    }

    #[test]
    fn envoy_reads_method_path_and_authority() {
        let r = envoy(
            &h(&[("host", "app.example.com:8443")]),
            "DELETE",
            "/items/7?force=1",
        )
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.path.as_str()),
            ("DELETE", "app.example.com", "/items/7")
        );
        assert_eq!(
            envoy(&h(&[("host", "a"), ("x-forwarded-uri", "/")]), "GET", "/"),
            Err(Reason::DialectMismatch)
        );
        assert_eq!(
            envoy(&h(&[]), "GET", "/"),
            Err(Reason::RequestMalformed),
            "no Host"
        );
    }

    fn routed(url: &str, host_param: Option<&str>) -> Result<OriginalRequest, Reason> {
        nginx(&h(&[("x-original-url", url)]), Routing::Strict, host_param)
    }

    #[test]
    fn authority_tricks_in_original_url_are_malformed() {
        // Each of these made the URL parser see another host or path than nginx routed on.
        for bad in [
            "https://admin.example.com:@public.example.com/x",
            "https://admin.example.com:@evil.tenant.example/x",
            "https://user@app.example.com/x",
            "https://app.example.com:#/admin/users",
            "https://app.example.com:?/admin/users",
            "https://app.example.com\\evil/admin",
            "https://adm%69n.example.com/",
            "https://\u{ff41}dmin.example.com/",
            "https://app.example.com:99999/",
            "https://app.example.com:8x/",
            "https://app.example.com:-1/",
            "https://.example.com/",
            "https://a..b/",
            "https:///x",
            "https://app.example.com",
            "ftp://app.example.com/",
        ] {
            assert_malformed_url(bad);
        }
        let ok = named(&h(&[("x-original-url", "https://App.Example.com.:/x")])).unwrap();
        assert_eq!(ok.host, "app.example.com");
        let v6 = named(&h(&[("x-original-url", "http://[::1]:8080/x")])).unwrap();
        assert_eq!(v6.host, "::1");
    }

    /// A port is one to five ASCII digits up to 65535; leading zeros count as digits
    /// (`00080` is port 80, `000080` has six). No sign, nothing `u32` parsing would also
    /// read: the host is what routes, and an authority two readers could take apart
    /// differently is refused, not guessed.
    #[test]
    fn only_real_ports_follow_the_host() {
        for ok in [
            "app:80",
            "app:0",
            "app:65535",
            "app:00080",
            "app:",
            "[::1]:65535",
        ] {
            assert!(routed_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "app:+80",
            "app:-0",
            "app: 80",
            "app:65536",
            "app:99999",
            "app:000080",
            "app:4294967376",
            "app:8x",
            "app:80:80",
            "[::1]:+80",
            "[::1]:65536",
            "[::1]80",
        ] {
            assert_eq!(routed_host(bad), Err(Reason::RequestMalformed), "{bad}");
        }
    }

    /// RFC 1035: a name is at most 253 characters written without its trailing dot.
    #[test]
    fn a_host_name_is_at_most_253_characters() {
        // Three 63-character labels and one of `last`: 192 + `last` characters.
        let name = |last: usize| format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(last));
        let longest = name(61);
        assert_eq!(longest.len(), 253);
        assert_eq!(routed_host(&longest).as_deref(), Ok(longest.as_str()));
        assert_eq!(
            routed_host(&format!("{longest}.:443")).as_deref(),
            Ok(longest.as_str()),
            "the trailing dot and the port are not part of the name"
        );
        assert_eq!(routed_host(&name(62)), Err(Reason::RequestMalformed));
    }

    #[test]
    fn bare_auth_needs_the_host_nginx_routed_on() {
        let r = routed("https://app.example.com/admin", Some("app.example.com")).unwrap();
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("app.example.com", "/admin")
        );
        // Absolute-form request line: nginx routed on admin, the Host header said public.
        assert_eq!(
            routed("http://public.example.com/dash", Some("admin.example.com")),
            Err(Reason::RequestMalformed)
        );
        assert_eq!(
            routed("https://app.example.com/", None),
            Err(Reason::RequestMalformed)
        );
        for bad in [
            "",
            "adm%69n.example.com",
            "a?b",
            "$host",
            "app.example.com/x",
            "app.example.com:443",
            "[::1]:80",
        ] {
            assert_eq!(
                routed("https://app.example.com/", Some(bad)),
                Err(Reason::RequestMalformed),
                "{bad}"
            );
        }
        assert!(routed("https://[::1]/", Some("[::1]")).is_ok());
    }

    #[test]
    fn a_url_alone_is_read_as_the_bare_endpoint_would() {
        let r = original_url("https://App.example.com:8443/ADMIN/x", Routing::Strict).unwrap();
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("app.example.com", "/ADMIN/x")
        );
        assert!(original_url("http://[::1]:8080/", Routing::Strict).is_ok());
        assert!(original_url("http://[::1]/", Routing::Strict).is_ok());
        assert_eq!(
            original_url("https://a:@b/", Routing::Strict),
            Err(Reason::RequestMalformed)
        );
        assert_eq!(
            original_url("https://a/x;y", Routing::Strict),
            Err(Reason::RequestMalformed)
        );
    }

    #[test]
    fn host_param_is_raw_and_single() {
        assert_eq!(host_param(Some("host=a.example")), Ok(Some("a.example")));
        assert_eq!(host_param(Some("x=1&host=a%62")), Ok(Some("a%62")));
        assert_eq!(host_param(None), Ok(None));
        assert_eq!(
            host_param(Some("host=a&host=b")),
            Err(Reason::RequestMalformed)
        );
    }

    #[test]
    fn paths_a_backend_could_read_another_way_are_refused_when_routing() {
        for bad in [
            "/admin;/users",
            "/admin%3B/users",
            "/admin%3b/users",
            "/public/..;/admin/users",
            "/admin/users\\..\\..\\x",
            "/admin%5Cx",
            "/public%2F..%2Fadmin",
            "/public%2f..%2fadmin",
            "/a%252e%252e/admin",
        ] {
            let url = format!("https://app.example.com{bad}");
            assert_refused_when_routing(bad);
            // Named endpoints choose no policy by path: apps with matrix parameters still work.
            assert!(
                named(&h(&[("x-original-url", &url)])).is_ok(),
                "named {bad}"
            );
        }
        // Query and fragment are not part of the path.
        let r = routed(
            "https://app.example.com/a?x=;%2F#b;",
            Some("app.example.com"),
        )
        .unwrap();
        assert_eq!(r.path, "/a");
    }

    /// `bad` (a path) is refused by the host-routed `/auth` and by `/forward`.
    #[track_caller]
    fn assert_refused_when_routing(bad: &str) {
        let url = format!("https://app.example.com{bad}");
        assert_eq!(
            routed(&url, Some("app.example.com")),
            Err(Reason::RequestMalformed),
            "{bad}"
        );
        assert_eq!(
            forward(
                &h(&[
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", bad)
                ]),
                Routing::Strict
            ),
            Err(Reason::RequestMalformed),
            "forward {bad}"
        );
    }

    /// Segment endings Windows path normalisation trims (IIS, ASP.NET, anything serving
    /// files): each of these reaches `/admin/users` there, `admin.` or `admin ` here.
    const TRIMMED_SEGMENTS: &[&str] = &[
        "/admin./users",
        "/admin%2e/users",
        "/admin%2E/users",
        "/admin%20/users",
        "/admin /users",
        "/admin%c2%a0/users",
        "/admin%C2%A0/users",
        "/admin%e3%80%80/users",
        "/admin...",
        "/admin%2e%2e%2e/users",
        "/admin. ./users",
        "/admin.",
        "/admin%2e",
        "/ /admin",
        "/x/admin./../y",
    ];

    #[test]
    fn segments_ending_in_a_dot_or_whitespace_are_refused_when_routing() {
        let control = ["/admin%09/users", "/admin%0b/users", "/admin%0d/users"];
        for bad in TRIMMED_SEGMENTS.iter().chain(&control) {
            assert_refused_when_routing(bad);
        }
        // By name no policy is chosen by path: accepted, as `;` is.
        for bad in TRIMMED_SEGMENTS {
            let url = format!("https://app.example.com{bad}");
            assert!(named(&h(&[("x-original-url", &url)])).is_ok(), "{bad}");
        }
        // Dot segments are resolved, dots inside a segment are ordinary.
        for (ok, path) in [
            ("/admin/./users", "/admin/users"),
            ("/admin/%2e/users", "/admin/users"),
            ("/x/../admin/users", "/admin/users"),
            ("/x/%2e%2e/admin", "/admin"),
            ("/.well-known/x", "/.well-known/x"),
            ("/v1.2/x.json", "/v1.2/x.json"),
            ("/a b/c", "/a b/c"),
        ] {
            let url = format!("https://app.example.com{ok}");
            let r = routed(&url, Some("app.example.com")).unwrap();
            assert_eq!(r.path, path, "{ok}");
        }
    }

    #[test]
    fn paths_are_normalised_like_nginx() {
        assert_eq!(normalise_path("/").unwrap(), "/");
        assert_eq!(normalise_path("//admin//x/").unwrap(), "/admin/x");
        assert_eq!(normalise_path("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalise_path("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalise_path("/%61dmin").unwrap(), "/admin");
        assert_eq!(normalise_path("/../../etc").unwrap(), "/etc");
        assert_eq!(normalise_path("/%ff"), Err(Reason::RequestMalformed));
        assert_eq!(normalise_path("/a%0d%0ab"), Err(Reason::RequestMalformed));
    }

    proptest! {
        /// Whatever the segment, ending it in a dot or in whitespace (raw or escaped, any
        /// case) makes the route-selecting endpoints refuse the path.
        #[test]
        fn a_trimmed_ending_on_any_segment_is_refused_when_routing(
            before in prop::collection::vec("[a-zA-Z0-9._~-]{0,6}", 0..3),
            segment in "[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,6}",
            ending in prop::sample::select(vec![
                ".", "%2e", "%2E", "..", "%2e.", " ", "%20", "%09", "%0a", "%0B", "%0c", "%0D",
                "%c2%a0", "%C2%85", "%e2%80%80", "%e2%80%a8", "%e3%80%80", ". ", "%20.",
            ]),
            after in prop::collection::vec("[a-z0-9]{1,6}", 0..3),
        ) {
            let mut segments = before;
            segments.push(format!("{segment}{ending}"));
            segments.extend(after);
            let path = format!("/{}", segments.join("/"));
            let url = format!("https://app.example.com{path}");
            prop_assert_eq!(routed(&url, Some("app.example.com")), Err(Reason::RequestMalformed), "{}", path);
        }

        #[test]
        fn normalised_paths_are_canonical(raw in "[/a-z%.0-9]{0,40}") {
            if let Ok(p) = normalise_path(&raw) {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.contains("//"));
                prop_assert!(!p.split('/').any(|s| s == "." || s == ".."));
                // Idempotent once decoded bytes hold no further escapes.
                if !p.contains('%') {
                    prop_assert_eq!(normalise_path(&p).unwrap(), p);
                }
            }
        }

        /// URLs built from the pieces proxies and attackers put in them (userinfo, ports,
        /// `#?\\@%[]`, matrix parameters, escapes, dot segments, non-ASCII), so that every
        /// branch of the authority and path checks is reached, not refused up front.
        #[test]
        fn nginx_dialect_reads_or_refuses_structured_urls(
            scheme in prop::sample::select(vec!["http", "https", "HTTPS", "ftp", ""]),
            sep in prop::sample::select(vec!["://", ":/", "://"]),
            user in prop::option::weighted(0.2, "[a-z:]{0,6}"),
            host in prop::collection::vec(
                prop::sample::select(vec!["app", "Example", "com", "x-1", "127", "0", "", "%61", "\u{ff41}", "a\\b", "[::1]"]), 1..4),
            port in prop::option::weighted(0.4, prop::sample::select(vec!["", "80", "8443", "65535", "65536", "99999", "x", "#", "?", "@evil"])),
            segments in prop::collection::vec(
                prop::sample::select(vec!["admin", "ADMIN", "..", ".", "", ";", "..;", "a;b", "%2F", "%2f", "%3B", "%5C", "%25", "%2e%2e", "%ff", "\\", "é", "%00", "x?y", "#f"]), 0..6),
            method in prop::sample::select(vec!["GET", "POST", "M-SEARCH", "get", "", "G ET", "VERSION-CONTROL"]),
        ) {
            let (authority, path) = authority_and_path(user.as_deref(), &host, port, &segments);
            let url = format!("{scheme}{sep}{authority}{path}");
            let mut m = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&url) { m.insert("x-original-url", v); }
            if let Ok(v) = HeaderValue::from_str(method) { m.insert("x-original-method", v); }
            if let Ok(r) = named(&m) {
                // Only a plain host, lowercase; the method a token; the path canonical.
                prop_assert!(user.is_none(), "userinfo accepted: {url}");
                prop_assert!(r.host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b':'), "{url} -> {}", r.host);
                prop_assert!(matches!(r.scheme.as_str(), "http" | "https"));
                prop_assert!(r.method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_'));
                prop_assert!(r.path.starts_with('/') && !r.path.contains("//"), "{}", r.path);
                prop_assert!(!r.path.split('/').any(|s| s == "." || s == ".."));
                // Routing reads the same request, or refuses more, never something else.
                match nginx(&m, Routing::Strict, Some(&r.host)) {
                    Ok(strict) => {
                        prop_assert_eq!(&strict, &r);
                        let raw = path.split(['?', '#']).next().unwrap_or_default();
                        prop_assert!(!is_ambiguous_path(raw), "ambiguous path routed: {path}");
                    }
                    Err(e) => prop_assert_eq!(e, Reason::RequestMalformed),
                }
            }
        }
    }
}

#[cfg(test)]
mod grpc_tests {
    use super::tests::{authority_and_path, request_line};
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn http<'a>(method: &'a str, host: &'a str, path: &'a str) -> GrpcHttp<'a> {
        GrpcHttp {
            method,
            scheme: "https",
            host,
            path,
            ..GrpcHttp::default()
        }
    }

    fn pairs<'a>(list: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
        list.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
    }

    #[test]
    fn reads_the_fields_envoy_fills() {
        let headers = grpc_headers(pairs(&[
            (":authority", "App.Example.com:8443"),
            (":method", "POST"),
            (":path", "/api/../admin/x?q=1"),
            (":scheme", "https"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "req-1"),
            ("cf-access-jwt-assertion", "tok"),
        ]))
        .unwrap();
        assert!(headers.keys().all(|k| !k.as_str().starts_with(':')));
        assert_eq!(headers["cf-access-jwt-assertion"], "tok");
        let r = grpc(
            &GrpcHttp {
                id: "17",
                source_ip: Some("10.0.0.1"),
                ..http("POST", "App.Example.com:8443", "/api/../admin/x?q=1")
            },
            &headers,
            Routing::Strict,
        )
        .unwrap();
        assert_eq!(
            request_line(&r),
            ("POST", "https", "app.example.com", "/admin/x")
        );
        assert_eq!(r.client_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(r.request_id.as_deref(), Some("req-1"));
        // Without those headers: the peer address and Envoy's stream id.
        let r = grpc(
            &GrpcHttp {
                id: "17",
                source_ip: Some("10.0.0.1"),
                scheme: "",
                ..http("GET", "a", "/")
            },
            &HeaderMap::new(),
            Routing::Named,
        )
        .unwrap();
        assert_eq!(r.client_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(r.request_id.as_deref(), Some("17"));
        assert_eq!(r.scheme, "https", "an empty scheme reads as https");
    }

    #[test]
    fn missing_or_bad_fields_are_malformed() {
        let none = HeaderMap::new();
        for bad in [
            http("GET", "", "/"),
            http("GET", "a", ""),
            http("", "a", "/"),
            http("get", "a", "/"),
            http("GET", "a", "relative"),
            http("GET", "a", "*"),
            http("GET", "user@a", "/"),
            http("GET", "admin.example.com:@public.example.com", "/"),
            http("GET", "adm%69n.example.com", "/"),
            http("GET", "a:99999", "/"),
            http("GET", "a", "/caf\u{e9}"),
            http("GET", "a", "/a\r\nx-injected: 1"),
            http("GET", "a", "/%00"),
            GrpcHttp {
                scheme: "ftp",
                ..http("GET", "a", "/")
            },
        ] {
            for routing in [Routing::Named, Routing::Strict] {
                assert_eq!(
                    grpc(&bad, &none, routing),
                    Err(Reason::RequestMalformed),
                    "{bad:?} {routing:?}"
                );
            }
        }
    }

    /// A path host routing must refuse (it could name another policy's path) while a
    /// request routed by name may carry it.
    fn assert_refused_only_when_routing(path: &str) {
        let req = http("GET", "app.example.com", path);
        assert_eq!(
            grpc(&req, &HeaderMap::new(), Routing::Strict),
            Err(Reason::RequestMalformed),
            "{path}"
        );
        assert!(
            grpc(&req, &HeaderMap::new(), Routing::Named).is_ok(),
            "{path}"
        );
    }

    #[test]
    fn ambiguous_paths_are_refused_only_when_routing() {
        for bad in [
            "/admin;/users",
            "/admin%3B/users",
            "/public/..;/admin",
            "/admin\\x",
            "/public%2F..%2Fadmin",
            "/a%252e%252e/admin",
        ] {
            assert_refused_only_when_routing(bad);
        }
    }

    #[test]
    fn segments_ending_in_a_dot_or_space_are_refused_only_when_routing() {
        for bad in [
            "/admin./users",
            "/admin%2e/users",
            "/admin%2E/users",
            "/admin%20/users",
            "/admin /users",
            "/admin%c2%a0/users",
            "/admin...",
        ] {
            assert_refused_only_when_routing(bad);
        }
    }

    #[test]
    fn other_dialects_headers_pass_through() {
        // The request is in fields; a client's X-Forwarded-Uri cannot stand in for them.
        let headers = grpc_headers(pairs(&[
            ("x-forwarded-uri", "/admin"),
            ("x-original-url", "https://evil/"),
        ]))
        .unwrap();
        let r = grpc(&http("GET", "app", "/public"), &headers, Routing::Strict).unwrap();
        assert_eq!((r.host.as_str(), r.path.as_str()), ("app", "/public"));
    }

    #[test]
    fn header_lists_are_bounded_and_must_be_text() {
        let many: Vec<(String, String)> = (0..GRPC_MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let list = |n: usize| -> Vec<(&str, &[u8])> {
            many.iter()
                .take(n)
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect()
        };
        assert_eq!(
            grpc_headers(list(GRPC_MAX_HEADERS)).unwrap().len(),
            GRPC_MAX_HEADERS
        );
        let mut over = list(GRPC_MAX_HEADERS);
        over.push((":path", b"/"));
        assert_eq!(
            grpc_headers(over),
            Err(Reason::RequestMalformed),
            "pseudo-headers count"
        );
        // What Envoy admits by default (60 KiB of request headers) always fits.
        let envoy = "v".repeat(60 * 1024);
        assert!(grpc_headers([("x", envoy.as_bytes())]).is_ok());
        let big = "v".repeat(GRPC_MAX_HEADER_BYTES - 1);
        assert!(grpc_headers([("x", big.as_bytes())]).is_ok());
        let bigger = "v".repeat(GRPC_MAX_HEADER_BYTES);
        assert_eq!(
            grpc_headers([("x", bigger.as_bytes())]),
            Err(Reason::RequestMalformed)
        );
        for (name, value) in [
            ("x", &b"\xff\xfe"[..]),
            ("x", b"a\r\nb: c"),
            ("x", b"a\0"),
            ("bad name", b"v"),
            ("", b"v"),
        ] {
            assert_eq!(
                grpc_headers([(name, value)]),
                Err(Reason::RequestMalformed),
                "{name:?} {value:?}"
            );
        }
        // Uppercase names are folded, repeated names kept apart (header_map does not merge),
        // UTF-8 text kept as its bytes, as an HTTP server would.
        let h = grpc_headers([
            ("CF-Access-Jwt-Assertion", &b"a"[..]),
            ("cf-access-jwt-assertion", b"b"),
            ("x-name", "Zo\u{eb}".as_bytes()),
        ])
        .unwrap();
        assert_eq!(h.get_all("cf-access-jwt-assertion").iter().count(), 2);
        assert_eq!(h["x-name"].as_bytes(), "Zo\u{eb}".as_bytes());
    }

    /// `$host` as nginx routes on it: the authority without its port.
    fn nginx_host(authority: &str) -> &str {
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority.split(':').next().unwrap_or_default(),
        }
    }

    proptest! {
        /// The gRPC dialect reads or refuses exactly what ingress-nginx's would for the same
        /// request, named and routed.
        #[test]
        fn grpc_agrees_with_the_nginx_dialect(
            scheme in prop::sample::select(vec!["http", "https", "HTTPS", "ftp"]),
            user in prop::option::weighted(0.2, "[a-z:]{0,6}"),
            host in prop::collection::vec(
                prop::sample::select(vec!["app", "Example", "com", "x-1", "127", "0", "", "%61", "\u{ff41}", "a\\b", "[::1]"]), 1..4),
            port in prop::option::weighted(0.4, prop::sample::select(vec!["", "80", "8443", "65536", "x", "#", "?", "@evil"])),
            segments in prop::collection::vec(
                prop::sample::select(vec!["admin", "ADMIN", "..", ".", "", ";", "..;", "%2F", "%3B", "%5C", "%25", "%2e%2e", "%ff", "\\", "\u{e9}", "%00", "x?y", "#f", "a b"]), 0..6),
            method in prop::sample::select(vec!["GET", "POST", "M-SEARCH", "get", "", "G ET"]),
        ) {
            let (authority, path) = authority_and_path(user.as_deref(), &host, port, &segments);
            let url = format!("{scheme}://{authority}{path}");
            let mut m = HeaderMap::new();
            match HeaderValue::from_str(&url) {
                Ok(v) => { m.insert("x-original-url", v); }
                Err(_) => return Ok(()), // not a request nginx could send
            }
            if let Ok(v) = HeaderValue::from_str(method) { m.insert("x-original-method", v); }
            let req = GrpcHttp { method, scheme, host: &authority, path: &path, ..GrpcHttp::default() };
            let none = HeaderMap::new();
            prop_assert_eq!(grpc(&req, &none, Routing::Named), nginx(&m, Routing::Named, None), "{}", url);
            prop_assert_eq!(
                grpc(&req, &none, Routing::Strict),
                nginx(&m, Routing::Strict, Some(nginx_host(&authority))),
                "{}", url
            );
        }
    }
}
