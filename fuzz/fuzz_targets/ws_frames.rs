//! The WebSocket frame meter on arbitrary client bytes, fed in chunks whose sizes the input
//! chooses: it returns a verdict for every chunk and never panics. The first byte picks the chunk
//! size, so the corpus exercises frames split across reads.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::websocket::{FrameMeter, WsBudget};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let budget = WsBudget {
        bytes_per_second: 1 << 34,
        messages_per_second: 1_000_000,
        max_message_bytes: 1 << 16,
        idle_timeout: Duration::from_secs(60),
    };
    let now = Instant::now();
    let mut meter = FrameMeter::new(budget, now);
    for piece in rest.chunks(chunk) {
        if meter.feed(piece, now).is_err() {
            break;
        }
    }
});
