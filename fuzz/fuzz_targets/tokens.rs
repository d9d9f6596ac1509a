//! Token parsing: the bearer parser on arbitrary header bytes, and the room-token verifier on
//! arbitrary strings, which must refuse every one (none carries a valid signature) without
//! panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwt::{self, RoomKeys, VerifyStats};
use portcullis::compile::compile;
use portcullis::config::Mode;
use portcullis::policy::SourceFile;

fn keys() -> &'static RoomKeys {
    static KEYS: OnceLock<RoomKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let text = "[rooms]\nkeys = [{ kid = \"k1\", algorithm = \"HS256\", \
                    secret = \"fuzz-room-key-0123456789abcdefghijklmnop\" }]\n";
        let files = vec![SourceFile {
            path: "/fuzz/p.toml".into(),
            text: text.into(),
        }];
        compile(&files, Mode::Development)
            .expect("room key policy")
            .auth
            .room_keys
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = portcullis::auth::bearer(data);
    if let Ok(token) = std::str::from_utf8(data) {
        let stats = VerifyStats::default();
        assert!(
            jwt::verify_room_token(token, keys(), 0, &stats).is_err(),
            "accepted: {token:?}"
        );
    }
});
