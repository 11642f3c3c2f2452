//! `verify::extract_token` on a request's token-carrying headers.
//!
//! Input: lines separated by `\n`; each line's first byte picks the header (byte % 3:
//! `0` = `cf-access-jwt-assertion`, `1` = `cookie`, `2` = `authorization`) and the rest is
//! the raw value (any bytes, so non-UTF-8 obs-text is reached too). Values `HeaderValue`
//! rejects are skipped, as hyper would never deliver them.
#![no_main]

use accessgate::core::policy::TokenSource;
use accessgate::core::verify::{MAX_TOKEN_BYTES, extract_token};
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 3] = ["cf-access-jwt-assertion", "cookie", "authorization"];

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((selector, value)) = line.split_first() else {
            continue;
        };
        let name = NAMES[usize::from(*selector) % NAMES.len()];
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }
    let sources = [
        TokenSource::Header,
        TokenSource::Cookie,
        TokenSource::Bearer,
    ];
    if let Ok(token) = extract_token(&map, &sources) {
        assert!(!token.is_empty());
        assert!(token.len() <= MAX_TOKEN_BYTES);
    }
});
