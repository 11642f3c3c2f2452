//! The policy file loader (`source::files::parse_manifests`) on any file contents: never
//! panics; what it accepts is compiled and named.
#![no_main]

use accessgate::core::index::Entry;
use accessgate::source::files::parse_manifests;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_manifests("fuzz.yaml", &text) {
        Ok(entries) => {
            for (key, entry) in entries {
                assert!(!key.name.is_empty(), "{key}");
                assert!(matches!(entry, Entry::Ready(_)), "{key}");
            }
        }
        Err(e) => assert_eq!(e.file, "fuzz.yaml"),
    }
});
