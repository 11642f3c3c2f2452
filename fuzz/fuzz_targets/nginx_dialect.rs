//! `dialect::nginx` on an auth subrequest's headers, and `dialect::normalise_path`.
//!
//! Input: lines separated by `\n`. Lines 1–3 are the values of `x-original-url`,
//! `x-original-method` and `x-real-ip`; every further line's first byte picks a header
//! (byte % 8, see `EXTRA`) and the rest is appended as its value, so repeated and foreign
//! headers are reached too. Values `HeaderValue` rejects are skipped. The whole input (as
//! lossy UTF-8) is also given to `normalise_path`.
#![no_main]

use accessgate::core::dialect::{Routing, nginx, normalise_path, routed_host};
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const FIRST: [&str; 3] = ["x-original-url", "x-original-method", "x-real-ip"];
const EXTRA: [&str; 8] = [
    "x-original-url",
    "x-original-method",
    "x-real-ip",
    "x-request-id",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-internal",
];

/// An HTTP method is a token (RFC 9110 `tchar`s); the dialect may accept fewer, never more.
fn is_token(m: &str) -> bool {
    !m.is_empty()
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What the module promises of a normalised path.
fn check_path(p: &str) {
    assert!(p.starts_with('/'), "{p:?}");
    assert!(!p.contains("//"), "{p:?}");
    assert!(!p.split('/').any(|s| s == "." || s == ".."), "{p:?}");
    assert!(!p.chars().any(char::is_control), "{p:?}");
    // Idempotent once the decoded text holds no further escapes.
    if !p.contains('%') {
        assert_eq!(normalise_path(p).as_deref(), Ok(p));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let (name, value) = if i < FIRST.len() {
            (FIRST[i], line)
        } else {
            let Some((selector, value)) = line.split_first() else {
                continue;
            };
            (EXTRA[usize::from(*selector) % EXTRA.len()], value)
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }
    if let Ok(req) = nginx(&map, Routing::Named, None) {
        assert!(is_token(&req.method), "{:?}", req.method);
        assert!(req.scheme == "http" || req.scheme == "https");
        assert_eq!(req.host, req.host.to_ascii_lowercase());
        check_path(&req.path);
        // The route-selecting form only ever refuses more, and reads the same request.
        let host = routed_host(&req.host).ok();
        if let Ok(strict) = nginx(&map, Routing::Strict, host.as_deref()) {
            assert_eq!(strict, req);
        }
    } else {
        assert!(nginx(&map, Routing::Strict, Some("a.example")).is_err());
    }

    if let Ok(p) = normalise_path(&String::from_utf8_lossy(data)) {
        check_path(&p);
    }
});
