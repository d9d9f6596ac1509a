//! WebSocket tunnels: the gateway parses client→server frames as they pass (masking, lengths,
//! fragmentation, control frames) to enforce per-connection budgets — bytes and messages per
//! second, and the largest message — and closes a session when its token expires. A peer over
//! budget gets a close frame (1008, or 1009 for an oversized message, 1002 for a protocol
//! violation) and both sides are dropped; other sessions are untouched.

pub use crate::policy::specs::WsBudget;
use std::time::Instant;

/// Why a session is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    PolicyViolation(&'static str),
    TooBig,
    Protocol,
    TokenExpired,
    Idle,
    /// A policy reload no longer admits the session.
    PolicyRevoked,
    /// The session's token was revoked.
    TokenRevoked,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::PolicyViolation(_) => 1008,
            Close::TooBig => 1009,
            Close::Protocol => 1002,
            Close::TokenExpired => 4001,
            Close::Idle => 1001,
            Close::PolicyRevoked => 4403,
            Close::TokenRevoked => 4401,
        }
    }
    /// The label under `portcullis_websocket_closed_total{reason}`.
    pub fn metric(self) -> &'static str {
        match self {
            Close::PolicyViolation(_) => "policy_violation",
            Close::TooBig => "message_too_big",
            Close::Protocol => "protocol_error",
            Close::TokenExpired => "token_expired",
            Close::Idle => "idle_timeout",
            Close::PolicyRevoked => "policy_revoked",
            Close::TokenRevoked => "token_revoked",
        }
    }
    pub fn reason(self) -> &'static str {
        match self {
            Close::PolicyViolation(r) => r,
            Close::TooBig => "message too big",
            Close::Protocol => "protocol error",
            Close::TokenExpired => "token expired",
            Close::Idle => "idle timeout",
            Close::PolicyRevoked => "access revoked by policy",
            Close::TokenRevoked => "token revoked",
        }
    }
    /// A server→client close frame (unmasked).
    pub fn frame(self) -> Vec<u8> {
        let reason = self.reason().as_bytes();
        let mut f = Vec::with_capacity(4 + reason.len());
        f.push(0x88);
        f.push((2 + reason.len()) as u8);
        f.extend_from_slice(&self.code().to_be_bytes());
        f.extend_from_slice(reason);
        f
    }
}

/// A token bucket refilled continuously at `rate` per second, holding at most one second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }
    fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a frame header (up to 14 bytes).
    Header,
    /// Skipping `left` payload bytes of the current frame.
    Payload { left: u64 },
}

/// Incremental client→server frame parser with budget accounting.
#[derive(Debug)]
pub struct FrameMeter {
    budget: WsBudget,
    state: State,
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the data message being assembled (across fragments).
    message_bytes: u64,
    in_message: bool,
    bytes: Bucket,
    messages: Bucket,
    pub messages_seen: u64,
    /// The client sent a close frame.
    pub close_seen: bool,
}

impl FrameMeter {
    pub fn new(budget: WsBudget, now: Instant) -> FrameMeter {
        FrameMeter {
            budget,
            state: State::Header,
            header: [0; 14],
            have: 0,
            message_bytes: 0,
            in_message: false,
            bytes: Bucket::new(budget.bytes_per_second, now),
            messages: Bucket::new(budget.messages_per_second, now),
            messages_seen: 0,
            close_seen: false,
        }
    }

    /// After the gateway sent its close frame: watches for the client's close reply, ignoring
    /// budgets (the data is being discarded anyway). Parse errors end the wait.
    pub fn await_close(&mut self, data: &[u8], now: Instant) -> bool {
        self.bytes.rate = f64::MAX;
        self.bytes.tokens = f64::MAX;
        self.messages.rate = f64::MAX;
        self.messages.tokens = f64::MAX;
        self.feed(data, now).is_err() || self.close_seen
    }

    /// Accounts for one chunk of client→server bytes.
    ///
    /// A budget violation is reported after the whole chunk is parsed, so the parser stays in
    /// step with the frames and can recognise the client's close reply that follows; a protocol
    /// error is reported at once.
    pub fn feed(&mut self, mut data: &[u8], now: Instant) -> Result<(), Close> {
        let mut verdict = if self.bytes.take(data.len() as f64, now) {
            Ok(())
        } else {
            Err(Close::PolicyViolation("byte budget exceeded"))
        };
        while !data.is_empty() {
            match self.state {
                State::Payload { left } => {
                    let n = (data.len() as u64).min(left);
                    data = &data[n as usize..];
                    self.state = if left == n {
                        State::Header
                    } else {
                        State::Payload { left: left - n }
                    };
                }
                State::Header => {
                    let need = self.header_len();
                    let take = (need - self.have).min(data.len());
                    self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have < 2 || self.have < self.header_len() {
                        continue;
                    }
                    match self.frame_complete(now) {
                        Ok(()) => {}
                        Err(Close::Protocol) => return Err(Close::Protocol),
                        Err(budget) => {
                            if verdict.is_ok() {
                                verdict = Err(budget);
                            }
                        }
                    }
                }
            }
        }
        verdict
    }

    /// Header length implied by the bytes seen so far (2 until the length byte is known).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + mask
    }

    fn frame_complete(&mut self, now: Instant) -> Result<(), Close> {
        let h = &self.header;
        let fin = h[0] & 0x80 != 0;
        let rsv = h[0] & 0x70;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => n as u64,
        };
        self.have = 0;
        // Clients must mask; no extensions are negotiated through us, so RSV bits must be clear.
        // A 64-bit length must have its top bit clear (RFC 6455 §5.2).
        if !masked || rsv != 0 || len >> 63 != 0 {
            return Err(Close::Protocol);
        }
        // The payload is skipped whatever the budgets say, to stay in step with the frames.
        self.state = if len == 0 {
            State::Header
        } else {
            State::Payload { left: len }
        };
        match opcode {
            0x8..=0xA => {
                // Control frames: never fragmented, at most 125 bytes; they count as messages.
                if !fin || len > 125 {
                    return Err(Close::Protocol);
                }
                if opcode == 0x8 {
                    self.close_seen = true;
                }
                self.count_message(now)?;
            }
            0x0..=0x2 => {
                let continuation = opcode == 0;
                if continuation != self.in_message {
                    return Err(Close::Protocol);
                }
                // Saturating: a huge continuation must not wrap the total back under the limit.
                self.message_bytes = if continuation {
                    self.message_bytes.saturating_add(len)
                } else {
                    len
                };
                if self.message_bytes > self.budget.max_message_bytes {
                    return Err(Close::TooBig);
                }
                self.in_message = !fin;
                if fin {
                    self.count_message(now)?;
                }
            }
            _ => return Err(Close::Protocol),
        }
        Ok(())
    }

    fn count_message(&mut self, now: Instant) -> Result<(), Close> {
        self.messages_seen += 1;
        if self.messages.take(1.0, now) {
            Ok(())
        } else {
            Err(Close::PolicyViolation("message budget exceeded"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [1, 2, 3, 4];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn a_budget_breach_keeps_the_parser_in_step_for_the_close_reply() {
        let mut m = FrameMeter::new(budget(), Instant::now());
        let now = Instant::now();
        // Eleven messages breach the 10/s budget on the eleventh; the chunk ends inside a
        // twelfth, whose rest comes in the next chunk, then the client's close reply.
        let mut chunk = Vec::new();
        for i in 0..11 {
            chunk.extend(frame(true, 0x1, format!("message {i}").as_bytes()));
        }
        let twelfth = frame(true, 0x1, &[b'x'; 40]);
        chunk.extend_from_slice(&twelfth[..20]);
        assert!(matches!(
            m.feed(&chunk, now),
            Err(Close::PolicyViolation(_))
        ));
        assert!(
            !m.await_close(&twelfth[20..], now),
            "mid-frame bytes are not a close"
        );
        assert!(!m.await_close(&frame(true, 0x1, b"still talking"), now));
        assert!(m.await_close(&frame(true, 0x8, &[0x03, 0xe8]), now));
    }

    fn budget() -> WsBudget {
        WsBudget {
            bytes_per_second: 1 << 30,
            messages_per_second: 10,
            max_message_bytes: 1000,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn messages_are_counted_across_arbitrary_chunking() {
        let now = Instant::now();
        let mut m = FrameMeter::new(budget(), now);
        let mut stream = Vec::new();
        stream.extend(frame(false, 1, b"hel"));
        stream.extend(frame(true, 0, b"lo"));
        stream.extend(frame(true, 9, b"ping"));
        stream.extend(frame(true, 2, &[7u8; 300]));
        for chunk in stream.chunks(3) {
            m.feed(chunk, now).unwrap();
        }
        assert_eq!(m.messages_seen, 3);
    }

    #[test]
    fn budgets_and_sizes_are_enforced() {
        let now = Instant::now();
        let mut m = FrameMeter::new(budget(), now);
        for _ in 0..10 {
            m.feed(&frame(true, 1, b"x"), now).unwrap();
        }
        assert_eq!(
            m.feed(&frame(true, 1, b"x"), now),
            Err(Close::PolicyViolation("message budget exceeded"))
        );
        // A second later the budget has refilled.
        let mut m2 = FrameMeter::new(budget(), now);
        for _ in 0..10 {
            m2.feed(&frame(true, 1, b"x"), now).unwrap();
        }
        m2.feed(&frame(true, 1, b"x"), now + Duration::from_millis(200))
            .unwrap();
        let mut big = FrameMeter::new(budget(), now);
        assert_eq!(big.feed(&frame(false, 1, &[0; 600]), now), Ok(()));
        assert_eq!(
            big.feed(&frame(true, 0, &[0; 600]), now),
            Err(Close::TooBig)
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        let now = Instant::now();
        let unmasked = [0x81u8, 0x01, b'x'];
        assert_eq!(
            FrameMeter::new(budget(), now).feed(&unmasked, now),
            Err(Close::Protocol)
        );
        assert_eq!(
            FrameMeter::new(budget(), now).feed(&frame(true, 0, b"x"), now),
            Err(Close::Protocol),
            "continuation without a start"
        );
        assert_eq!(
            FrameMeter::new(budget(), now).feed(&frame(false, 9, b"x"), now),
            Err(Close::Protocol),
            "fragmented control frame"
        );
        assert_eq!(
            FrameMeter::new(budget(), now).feed(&frame(true, 3, b"x"), now),
            Err(Close::Protocol),
            "reserved opcode"
        );
        let f = Close::TokenExpired.frame();
        assert_eq!(&f[..4], &[0x88, 15, 0x0f, 0xa1]);
    }

    /// Found by the cargo-fuzz target `ws_frames`: a continuation whose 64-bit length wrapped the
    /// message total back under the limit, after which the meter took every later byte for
    /// payload and metered nothing.
    #[test]
    fn a_huge_continuation_length_cannot_wrap_the_message_size() {
        let now = Instant::now();
        let start = frame(false, 2, &[0u8; 100]);
        for len in [u64::MAX - 50, (1u64 << 63) - 50] {
            let mut cont = vec![0x80u8, 0x80 | 127];
            cont.extend_from_slice(&len.to_be_bytes());
            cont.extend_from_slice(&[1, 2, 3, 4]);
            let mut m = FrameMeter::new(budget(), now);
            assert_eq!(m.feed(&start, now), Ok(()));
            let verdict = m.feed(&cont, now);
            assert!(
                matches!(verdict, Err(Close::Protocol | Close::TooBig)),
                "{len}: {verdict:?}"
            );
        }
    }
}
