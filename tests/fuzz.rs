//! Property-based fuzzing of the parsers that take hostile input: the policy compiler, the
//! WebSocket frame meter, and token parsing. Each property runs thousands of generated cases
//! (proptest, stable Rust); a panic or a violated property fails with the shrunk input.

use std::time::{Duration, Instant};

use portcullis::auth::jwt::{self, VerifyStats};
use portcullis::compile::compile;
use portcullis::config::Mode;
use portcullis::policy::SourceFile;
use portcullis::proxy::websocket::{FrameMeter, WsBudget};
use proptest::prelude::*;

const DEFAULT_POLICY: &str = include_str!("../policies/default.toml");
const ROOM_KEY: &str = "fuzz-room-key-0123456789abcdefghijklmnop";

fn file(text: &str) -> Vec<SourceFile> {
    vec![SourceFile {
        path: "/fuzz/p.toml".into(),
        text: text.into(),
    }]
}

/// A client→server frame: FIN, opcode, mask bit set, the payload masked with `key`.
fn frame(opcode: u8, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn generous() -> WsBudget {
    WsBudget {
        bytes_per_second: 1 << 34,
        messages_per_second: 1_000_000,
        max_message_bytes: 1 << 20,
        idle_timeout: Duration::from_secs(60),
    }
}

fn room_keys() -> jwt::RoomKeys {
    let text = format!(
        "[rooms]\nkeys = [{{ kid = \"k1\", algorithm = \"HS256\", secret = \"{ROOM_KEY}\" }}]\n"
    );
    compile(&file(&text), Mode::Development)
        .expect("room key policy")
        .auth
        .room_keys
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any text: the compiler answers Ok or a list of errors with a line, never panics.
    #[test]
    fn the_policy_compiler_never_panics_on_any_text(text in r"(\PC|\n|\[|\]|=|\x22|\{|\})*") {
        if let Err(e) = compile(&file(&text), Mode::Production) {
            prop_assert!(!e.0.is_empty());
            for err in &e.0 {
                prop_assert!(err.line >= 1);
            }
        }
    }

    /// The default policy with one line removed, duplicated or cut short: compiled or refused
    /// with errors, never a panic.
    #[test]
    fn mutated_policies_compile_or_are_refused(line in 0usize..400, how in 0u8..3, cut in 0usize..40) {
        let lines: Vec<&str> = DEFAULT_POLICY.lines().collect();
        let at = line % lines.len();
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        match how {
            0 => { out.remove(at); }
            1 => { let l = out[at].clone(); out.insert(at, l); }
            _ => { let l = &out[at]; let end = l.char_indices().nth(cut).map(|(i, _)| i).unwrap_or(l.len()); out[at] = l[..end].to_string(); }
        }
        let _ = compile(&file(&out.join("\n")), Mode::Development);
    }

    /// Arbitrary bytes, in arbitrary chunks: the frame meter returns a verdict, never panics.
    #[test]
    fn the_frame_meter_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), splits in proptest::collection::vec(1usize..512, 1..16)) {
        let now = Instant::now();
        let mut m = FrameMeter::new(generous(), now);
        let mut rest = &data[..];
        for s in splits.iter().cycle() {
            if rest.is_empty() { break; }
            let n = (*s).min(rest.len());
            if m.feed(&rest[..n], now).is_err() { break; }
            rest = &rest[n..];
        }
    }

    /// Tokens: any string is refused by the room verifier (it never holds a valid signature) and
    /// nothing panics, including the bearer parser on any header bytes.
    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(
        parts in proptest::collection::vec(r"[A-Za-z0-9_\-=+/.]{0,80}", 1..5),
        header in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let token = parts.join(".");
        let keys = room_keys();
        prop_assert!(jwt::verify_room_token(&token, &keys, 0, &VerifyStats::default()).is_err());
        let _ = portcullis::auth::bearer(&header);
    }

    /// A real room token with one character changed anywhere is refused.
    #[test]
    fn a_tampered_room_token_is_refused(at in 0usize..400, with in r"[A-Za-z0-9_\-.=]") {
        let keys = room_keys();
        let token = jwt::mint_room_token(&keys, Some("k1"), "fuzz", "lobby", &[], 300).unwrap();
        let stats = VerifyStats::default();
        prop_assert!(jwt::verify_room_token(&token, &keys, 0, &stats).is_ok());
        let i = at % token.len();
        if token[i..].starts_with(with.as_str()) { return Ok(()); }
        let mut bad = token.clone();
        bad.replace_range(i..i + 1, &with);
        prop_assert!(jwt::verify_room_token(&bad, &keys, 0, &stats).is_err(), "{}", bad);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Valid masked frames (data, fragmented, ping, close), split anywhere: all accepted, each
    /// message counted once.
    #[test]
    fn valid_frames_are_accepted_however_they_are_split(
        messages in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..20_000), any::<bool>()), 1..6),
        key in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(1usize..9000, 1..12),
    ) {
        let mut stream = Vec::new();
        for (payload, fragmented) in &messages {
            if *fragmented && payload.len() > 1 {
                let (a, b) = payload.split_at(payload.len() / 2);
                stream.extend(frame(0x2, false, a, key));
                stream.extend(frame(0x9, true, b"ping", key));
                stream.extend(frame(0x0, true, b, key));
            } else {
                stream.extend(frame(0x1, true, payload, key));
            }
        }
        stream.extend(frame(0x8, true, &[0x03, 0xe8], key));
        let now = Instant::now();
        let mut m = FrameMeter::new(generous(), now);
        let mut rest = &stream[..];
        for c in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let n = (*c).min(rest.len());
            prop_assert_eq!(m.feed(&rest[..n], now), Ok(()));
            rest = &rest[n..];
        }
        prop_assert!(m.close_seen);
    }
}

/// A frame with a 64-bit length (over 65 535 bytes), split into small chunks, is accepted.
#[test]
fn a_large_frame_with_a_64_bit_length_is_accepted() {
    let payload = vec![7u8; 70_000];
    let stream = frame(0x2, true, &payload, [1, 2, 3, 4]);
    assert_eq!(stream[1] & 0x7f, 127);
    let now = Instant::now();
    let mut m = FrameMeter::new(generous(), now);
    for chunk in stream.chunks(777) {
        assert_eq!(m.feed(chunk, now), Ok(()));
    }
    assert_eq!(m.messages_seen, 1);
}
