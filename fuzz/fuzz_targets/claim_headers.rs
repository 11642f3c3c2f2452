//! Claims (as a verified token's payload would hold them) → identity headers. Whatever the
//! claims hold, no emitted header value carries a control character or is over-long.
#![no_main]

use std::sync::LazyLock;

use accessgate::core::headers::{MAX_VALUE_BYTES, render};
use accessgate::core::policy::{ClaimEncoding, CompiledClaimHeader};
use accessgate::core::verify::Claims;
use axum::http::HeaderName;
use libfuzzer_sys::fuzz_target;

fn header(name: &'static str, path: &[&str], encoding: ClaimEncoding) -> CompiledClaimHeader {
    CompiledClaimHeader {
        header: HeaderName::from_static(name),
        path: path.iter().map(|s| (*s).to_owned()).collect(),
        encoding,
    }
}

fn text(join: &str) -> ClaimEncoding {
    ClaimEncoding::Text { join: join.into() }
}

static MAPPING: LazyLock<Vec<CompiledClaimHeader>> = LazyLock::new(|| {
    vec![
        header("x-auth-request-email", &["email"], text(",")),
        header("x-auth-request-user", &["sub"], text(",")),
        header("x-auth-request-groups", &["custom", "groups"], text(",")),
        header(
            "x-auth-request-groups-json",
            &["custom", "groups"],
            ClaimEncoding::Json,
        ),
        header("x-auth-request-name", &["name"], ClaimEncoding::Json),
        header("x-auth-request-custom", &["custom"], text("; ")),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<Claims>(data) else {
        return;
    };
    let rendered = render(&claims, &MAPPING);
    for (name, value) in &rendered.set {
        let bytes = value.as_bytes();
        assert!(
            bytes.iter().all(|b| *b >= 0x20 && *b != 0x7f),
            "{name}: control byte in {bytes:?}"
        );
        // The module also promises no C1 controls (U+0080–U+009F as UTF-8).
        assert!(
            !String::from_utf8_lossy(bytes).chars().any(char::is_control),
            "{name}: control character in {bytes:?}"
        );
        assert!(
            bytes.len() <= MAX_VALUE_BYTES,
            "{name}: {} bytes",
            bytes.len()
        );
    }
    // Each configured header is either set or dropped, never both, never twice.
    assert!(rendered.set.len() + rendered.dropped.len() <= MAPPING.len());
});
