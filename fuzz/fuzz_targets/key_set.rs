//! `keys::parse_key_set` on any response body (JWKS or Cloudflare certs document): never
//! panics, and a set it returns is non-empty with usable key ids.
#![no_main]

use accessgate::keys::{MAX_KID_LEN, parse_key_set};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = parse_key_set(data) {
        assert!(!set.is_empty());
        for kid in set.ids() {
            assert!(!kid.is_empty() && kid.len() <= MAX_KID_LEN);
            assert_eq!(set.get(&kid).map(|k| k.kid.as_str()), Some(kid.as_str()));
        }
    }
});
