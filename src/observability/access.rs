//! The access log line, one per request. With the JSON log format it is written straight into the
//! batch buffer (`batch`) in the shape `tracing`'s JSON formatter gives every other event
//! (flattened fields, microsecond UTC timestamp), without a trip through its field visitors:
//! it is the one line every request writes. Every field a request supplies (request id, method,
//! path, subject, key) passes `redact` on its own before it is escaped, so the line goes out as
//! it is instead of being scanned whole again on the log thread. With the pretty format, or when
//! the access target is filtered out, it goes through `tracing` (and whole-line redaction).

use std::cell::RefCell;

use crate::http::digits::{ipv4, push_u64};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static JSON: AtomicBool = AtomicBool::new(false);

/// Set by `init_logging`: whether log lines are JSON (and the access line may be written direct).
pub(super) fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// One request's access line. Strings are as the request left them; escaping happens on write.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub client: Option<std::net::SocketAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub decision: &'static str,
    pub reason: &'a str,
    pub subject: &'a str,
    pub auth: &'a str,
    pub key: &'a str,
    pub generation: u64,
    pub duration_us: u64,
    pub upstream: &'a str,
    pub upstream_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: &'a str,
}

impl Line<'_> {
    /// Logs the line at INFO under `portcullis::access`.
    pub fn log(&self) {
        if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO) {
            return;
        }
        if JSON.load(Ordering::Relaxed) {
            BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.clear();
                self.write_json(&mut b, SystemTime::now());
                super::batch::BatchWriter::get().append_clean(&b);
            });
            return;
        }
        let client = self.client.map(|c| c.to_string()).unwrap_or_default();
        tracing::info!(
            target: "portcullis::access",
            request_id = self.request_id,
            client = %client,
            method = self.method,
            path = self.path,
            route = self.route,
            status = self.status,
            decision = self.decision,
            reason = self.reason,
            subject = self.subject,
            auth = self.auth,
            key = self.key,
            generation = self.generation,
            duration_us = self.duration_us,
            upstream = self.upstream,
            upstream_us = self.upstream_us,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            error = self.error,
            "request"
        );
    }

    fn write_json(&self, b: &mut Vec<u8>, now: SystemTime) {
        b.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(b, now);
        b.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
        untrusted_field(b, "request_id", self.request_id);
        b.extend_from_slice(b",\"client\":\"");
        match self.client {
            Some(std::net::SocketAddr::V4(a)) => {
                let (ip, n) = ipv4(*a.ip());
                b.extend_from_slice(&ip[..n]);
                b.push(b':');
                push_u64(b, a.port().into());
            }
            // An IPv6 address prints with nothing to escape (hex digits, `:`, `[`, `]`, `%`
            // and a numeric scope).
            Some(a) => {
                let _ = write!(b, "{a}");
            }
            None => {}
        }
        b.push(b'"');
        untrusted_field(b, "method", self.method);
        untrusted_field(b, "path", self.path);
        str_field(b, "route", self.route);
        num_field(b, "status", self.status as u64);
        str_field(b, "decision", self.decision);
        str_field(b, "reason", self.reason);
        untrusted_field(b, "subject", self.subject);
        str_field(b, "auth", self.auth);
        untrusted_field(b, "key", self.key);
        num_field(b, "generation", self.generation);
        num_field(b, "duration_us", self.duration_us);
        str_field(b, "upstream", self.upstream);
        num_field(b, "upstream_us", self.upstream_us);
        num_field(b, "bytes_in", self.bytes_in);
        num_field(b, "bytes_out", self.bytes_out);
        str_field(b, "error", self.error);
        b.extend_from_slice(b",\"target\":\"portcullis::access\"}\n");
    }
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second a line was written in.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

fn str_field(b: &mut Vec<u8>, name: &str, value: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":\"");
    escape(b, value);
    b.push(b'"');
}

/// A field whose value came with the request (or from a token): redacted, then escaped.
fn untrusted_field(b: &mut Vec<u8>, name: &str, value: &str) {
    str_field(b, name, &crate::redact::redact(value));
}

fn num_field(b: &mut Vec<u8>, name: &str, value: u64) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":");
    push_u64(b, value);
}

/// A JSON string's content, escaped as serde_json escapes it.
fn escape(b: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        b.extend_from_slice(&bytes[from..i]);
        if esc.is_empty() {
            b.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(c >> 4) as usize],
                HEX[(c & 15) as usize],
            ]);
        } else {
            b.extend_from_slice(esc);
        }
        from = i + 1;
    }
    b.extend_from_slice(&bytes[from..]);
}

/// `2026-12-06T18:30:00.123456Z`, as tracing-subscriber prints `SystemTime`.
fn timestamp(b: &mut Vec<u8>, now: SystemTime) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|s| {
        let mut s = s.borrow_mut();
        if s.0 != secs {
            *s = (secs, civil(secs));
        }
        b.extend_from_slice(&s.1);
    });
    let micros = d.subsec_micros();
    b.push(b'.');
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        b.push(b'0' + (micros / div % 10) as u8);
    }
    b.push(b'Z');
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS` (UTC).
fn civil(secs: u64) -> [u8; 19] {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = [0u8; 19];
    let mut w = &mut out[..];
    let _ = write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            request_id: "req-1",
            client: None,
            method: "GET",
            path: "/v1/\"quoted\"\\\n\u{1}é",
            route: "api",
            status: 200,
            decision: "allow",
            reason: "-",
            subject: "alice",
            auth: "jwt",
            key: "k1",
            generation: 3,
            duration_us: 1234,
            upstream: "worker",
            upstream_us: 1000,
            bytes_in: 0,
            bytes_out: 20,
            error: "-",
        }
    }

    #[test]
    fn the_direct_line_is_json_with_every_field_and_escapes_what_it_must() {
        let addr: std::net::SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let mut l = line();
        l.client = Some(addr);
        let mut b = Vec::new();
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_765_000_000_123_456);
        l.write_json(&mut b, t);
        assert_eq!(b.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["timestamp"], "2025-12-06T05:46:40.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["target"], "portcullis::access");
        assert_eq!(v["client"], "127.0.0.1:4433");
        assert_eq!(v["path"], "/v1/\"quoted\"\\\n\u{1}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["generation"], 3);
        assert_eq!(v["duration_us"], 1234);
        assert_eq!(v["bytes_out"], 20);
        assert_eq!(v["subject"], "alice");
        assert_eq!(v.as_object().unwrap().len(), 22);
        // The escapes are serde_json's own.
        let s = std::str::from_utf8(&b).unwrap();
        assert!(s.contains(r#""path":"/v1/\"quoted\"\\\n\u0001é""#), "{s}");
    }

    #[test]
    fn secrets_in_request_fields_are_redacted_before_the_line_is_written() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVz";
        let path = format!("/a/{jwt};token=abc123/b");
        let subject = format!("Bearer {jwt}");
        let mut l = line();
        l.path = &path;
        l.subject = &subject;
        l.request_id = jwt;
        l.key = "password=hunter22";
        let mut b = Vec::new();
        l.write_json(&mut b, SystemTime::now());
        let s = String::from_utf8(b).unwrap();
        for secret in [jwt, "abc123", "hunter22"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["path"], "/a/[redacted];token=[redacted]");
        assert_eq!(v["request_id"], "[redacted]");
    }

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(&civil(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&civil(1_796_515_199), b"2026-12-05T23:59:59");
        assert_eq!(&civil(4_107_542_400), b"2100-03-01T00:00:00");
    }

    #[test]
    fn addresses_and_microseconds_are_written_as_display_writes_them() {
        for (addr, micros) in [
            ("0.0.0.0:1", 5u64),
            ("255.255.255.255:65535", 999_999),
            ("10.20.30.40:8443", 120_000),
            ("[2001:db8::1]:443", 0),
            ("[fe80::1%2]:80", 42),
        ] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let mut l = line();
            l.client = Some(addr);
            let mut b = Vec::new();
            let t = UNIX_EPOCH + std::time::Duration::from_micros(1_765_000_000_000_000 + micros);
            l.write_json(&mut b, t);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["client"], addr.to_string());
            let stamp = v["timestamp"].as_str().unwrap();
            assert_eq!(&stamp[19..], format!(".{micros:06}Z"), "{stamp}");
        }
    }

    #[test]
    fn a_missing_client_is_an_empty_string_as_before() {
        let mut b = Vec::new();
        line().write_json(&mut b, SystemTime::now());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["client"], "");
    }
}
