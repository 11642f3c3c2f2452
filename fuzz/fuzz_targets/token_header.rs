//! `verify::read_header` on any text: never panics, and only ever admits an allowed
//! algorithm with a non-empty `kid` of bounded length.
#![no_main]

use accessgate::keys::MAX_KID_LEN;
use accessgate::core::verify::read_header;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    if let Ok(header) = read_header(&token, &[Algorithm::RS256]) {
        assert_eq!(header.alg, Algorithm::RS256);
        assert!(!header.kid.is_empty() && header.kid.len() <= MAX_KID_LEN);
    }
});
