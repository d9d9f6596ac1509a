//! The policy compiler on arbitrary text: it compiles, or refuses with errors that each carry a
//! line number; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::compile::compile;
use portcullis::config::Mode;
use portcullis::policy::SourceFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = vec![SourceFile {
        path: "/fuzz/p.toml".into(),
        text: text.into(),
    }];
    for mode in [Mode::Development, Mode::Production] {
        if let Err(e) = compile(&files, mode) {
            assert!(!e.0.is_empty(), "a refusal without an error");
            for err in &e.0 {
                assert!(err.line >= 1, "an error without a line: {err:?}");
            }
        }
    }
});
