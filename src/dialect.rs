//! Turning a proxy's auth subrequest into the original request it stands for. Pure.
//!
//! Each dialect reads only the headers its proxy sets (and overwrites), never headers a
//! client could add unchecked. Today: ingress-nginx `auth-url`.

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

/// Headers that only other proxies' dialects send. Seeing one on the nginx endpoint means
/// the proxy was configured for another endpoint: refuse rather than guess.
const FOREIGN_HEADERS: &[&str] = &[
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-envoy-expected-rq-timeout-ms",
];

/// ingress-nginx `auth-url`: `X-Original-URL` (`$scheme://$http_host$request_uri`),
/// `X-Original-Method`, `X-Real-IP`, `X-Request-ID`.
pub fn nginx(headers: &HeaderMap) -> Result<OriginalRequest, Reason> {
    if FOREIGN_HEADERS.iter().any(|h| headers.contains_key(*h)) {
        return Err(Reason::DialectMismatch);
    }
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
