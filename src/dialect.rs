//! Turning a proxy's auth subrequest into the original request it stands for. Pure.
//!
//! Each dialect reads only the headers its proxy sets (and overwrites), never headers a
//! client could add unchecked:
//! - `nginx`: ingress-nginx `auth-url` (`X-Original-URL`, `X-Original-Method`);
//! - `forward`: Traefik ForwardAuth and Caddy `forward_auth` (`X-Forwarded-Method`, `-Proto`,
//!   `-Host`, `-Uri`);
//! - `envoy`: Envoy ext_authz over HTTP (the original method and path on the request line,
//!   the original authority in `Host`).
//!
//! A request carrying another dialect's headers is refused (`dialect_mismatch`), so a proxy
//! left pointing at the wrong endpoint after a migration fails closed instead of guessing.

use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;
use url::Url;

use crate::reason::Reason;

/// The request the proxy is asking about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    pub method: String,
    pub scheme: String,
    /// Lowercase, without port.
    pub host: String,
    /// Decoded and normalised (no `.`/`..` segments, no repeated slashes), for routing.
    pub path: String,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
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

fn host_of(url: &Url) -> Result<String, Reason> {
    match url.host() {
        Some(url::Host::Domain(d)) => Ok(d.trim_end_matches('.').to_ascii_lowercase()),
        Some(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        None => Err(Reason::RequestMalformed),
    }
}

/// An absolute URL from its parts, parsed (and so validated) by the URL parser.
fn url_from_parts(scheme: &str, authority: &str, path_and_query: &str) -> Result<Url, Reason> {
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || !path_and_query.starts_with('/')
    {
        return Err(Reason::RequestMalformed);
    }
    if authority.contains(['/', '?', '#', '@', '\\']) {
        return Err(Reason::RequestMalformed);
    }
    Url::parse(&format!("{scheme}://{authority}{path_and_query}"))
        .map_err(|_| Reason::RequestMalformed)
}

fn original(
    method: &str,
    url: &Url,
    headers: &HeaderMap,
    client_ip_header: &str,
) -> Result<OriginalRequest, Reason> {
    if !is_method_token(method) {
        return Err(Reason::RequestMalformed);
    }
    Ok(OriginalRequest {
        method: method.to_owned(),
        scheme: url.scheme().to_owned(),
        host: host_of(url)?,
        path: normalise_path(url.path())?,
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
pub fn forward(headers: &HeaderMap) -> Result<OriginalRequest, Reason> {
    refuse_foreign(headers, &[NGINX_HEADERS, ENVOY_HEADERS])?;
    let uri = one_header(headers, "x-forwarded-uri")?.ok_or(Reason::RequestMalformed)?;
    let host = one_header(headers, "x-forwarded-host")?.ok_or(Reason::RequestMalformed)?;
    let proto = one_header(headers, "x-forwarded-proto")?.unwrap_or("https");
    let method = one_header(headers, "x-forwarded-method")?.unwrap_or("GET");
    let url = url_from_parts(proto, host, uri)?;
    original(method, &url, headers, "x-forwarded-for")
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
    let url = url_from_parts(proto, host, path_and_query)?;
    original(method, &url, headers, "x-forwarded-for")
}

/// ingress-nginx `auth-url`: `X-Original-URL` (`$scheme://$http_host$request_uri`),
/// `X-Original-Method`, `X-Real-IP`, `X-Request-ID`.
pub fn nginx(headers: &HeaderMap) -> Result<OriginalRequest, Reason> {
    refuse_foreign(headers, &[FORWARD_HEADERS, ENVOY_HEADERS])?;
    let raw_url = one_header(headers, "x-original-url")?.ok_or(Reason::RequestMalformed)?;
    let url = Url::parse(raw_url).map_err(|_| Reason::RequestMalformed)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Reason::RequestMalformed);
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(Reason::RequestMalformed),
    };
    let method = one_header(headers, "x-original-method")?.unwrap_or("GET");
    if !is_method_token(method) {
        return Err(Reason::RequestMalformed);
    }
    Ok(OriginalRequest {
        method: method.to_owned(),
        scheme: url.scheme().to_owned(),
        host,
        path: normalise_path(url.path())?,
        client_ip: one_header(headers, "x-real-ip")
            .ok()
            .flatten()
            .map(str::to_owned),
        request_id: one_header(headers, "x-request-id")
            .ok()
            .flatten()
            .map(str::to_owned),
    })
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

/// The path as the proxy routed it: percent-decoded, dot segments resolved and slashes
/// merged (nginx's `$uri`), so a policy chosen by path prefix cannot be dodged with
/// `%2e%2e`, `//` or `%2F`. Refuses what does not decode to text.
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn reads_what_ingress_nginx_sends() {
        let r = nginx(&h(&[
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
            let r = nginx(&h(&[
                ("x-original-url", "https://a/"),
                ("x-original-method", m),
            ]));
            assert_eq!(r.unwrap().method, m);
        }
        for bad in ["", "get", "GET POST", "G(ET", "GET\"x", "GET1"] {
            let r = nginx(&h(&[
                ("x-original-url", "https://a/"),
                ("x-original-method", bad),
            ]));
            assert_eq!(r, Err(Reason::RequestMalformed), "{bad:?}");
        }
    }

    #[test]
    fn missing_or_bad_original_url_is_malformed() {
        assert_eq!(nginx(&h(&[])), Err(Reason::RequestMalformed));
        for bad in [
            "/relative",
            "not a url",
            "ftp://x/y",
            "http://",
            "https://exa mple.com/",
        ] {
            assert_eq!(
                nginx(&h(&[("x-original-url", bad)])),
                Err(Reason::RequestMalformed),
                "{bad}"
            );
        }
        let two = h(&[
            ("x-original-url", "https://a/"),
            ("x-original-url", "https://b/"),
        ]);
        assert_eq!(nginx(&two), Err(Reason::RequestMalformed));
    }

    #[test]
    fn foreign_dialect_headers_are_refused() {
        let r = nginx(&h(&[
            ("x-original-url", "https://a/"),
            ("x-forwarded-uri", "/"),
        ]));
        assert_eq!(r, Err(Reason::DialectMismatch));
    }

    #[test]
    fn forward_reads_what_traefik_and_caddy_send() {
        let r = forward(&h(&[
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
            forward(&h(&[("x-forwarded-host", "a")])),
            Err(Reason::RequestMalformed),
            "no uri"
        );
        assert_eq!(
            forward(&h(&[("x-forwarded-host", "a@b"), ("x-forwarded-uri", "/")])),
            Err(Reason::RequestMalformed),
            "userinfo smuggled into the host"
        );
        assert_eq!(
            forward(&h(&[
                ("x-forwarded-host", "a"),
                ("x-forwarded-uri", "/"),
                ("x-original-url", "https://a/")
            ])),
            Err(Reason::DialectMismatch)
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

    #[test]
    fn nginx_refuses_other_dialects() {
        let r = nginx(&h(&[
            ("x-original-url", "https://a/"),
            ("x-envoy-internal", "true"),
        ]));
        assert_eq!(r, Err(Reason::DialectMismatch));
    }

    #[test]
    fn paths_are_normalised_like_nginx() {
        assert_eq!(normalise_path("/").unwrap(), "/");
        assert_eq!(normalise_path("//admin//x/").unwrap(), "/admin/x");
        assert_eq!(normalise_path("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalise_path("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalise_path("/public%2F..%2Fadmin").unwrap(), "/admin");
        assert_eq!(normalise_path("/%61dmin").unwrap(), "/admin");
        assert_eq!(normalise_path("/../../etc").unwrap(), "/etc");
        assert_eq!(normalise_path("/%ff"), Err(Reason::RequestMalformed));
        assert_eq!(normalise_path("/a%0d%0ab"), Err(Reason::RequestMalformed));
    }

    proptest! {
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

        #[test]
        fn nginx_dialect_never_panics(url in "\\PC{0,80}", method in "\\PC{0,10}") {
            let mut m = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&url) { m.insert("x-original-url", v); }
            if let Ok(v) = HeaderValue::from_str(&method) { m.insert("x-original-method", v); }
            let _ = nginx(&m);
        }
    }
}
