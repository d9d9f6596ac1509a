//! The path canonicalizer: any input is refused or yields an absolute path without empty, `.` or
//! `..` segments, control bytes, backslashes or encoded separators, and canonicalizing it again
//! changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::path::canonicalize;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = canonicalize(raw) else {
        return;
    };
    assert!(c.starts_with('/'), "{c:?}");
    assert!(!c.contains("//"), "{c:?}");
    for seg in c.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{c:?}");
    }
    assert!(
        !c.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'),
        "{c:?}"
    );
    let upper = c.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%2E"] {
        assert!(!upper.contains(bad), "{c:?}");
    }
    assert_eq!(
        canonicalize(&c).as_deref().ok(),
        Some(&*c),
        "not idempotent"
    );
});
