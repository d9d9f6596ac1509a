//! Handshake telemetry. Pingora reports a failed handshake only as a log line ("Downstream
//! handshake error from ADDR: …"), after the connection is gone, and without the SNI. So: the
//! pre-TLS hook reads the ClientHello's SNI (and puts the bytes back for rustls), remembers it
//! by peer address for a while, and a tracing layer turns Pingora's line into a counted,
//! classified, structured event with client IP and SNI. No key material is ever looked at.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pingora::protocols::l4::stream::Stream as L4Stream;
use tokio::io::AsyncReadExt;

/// Why a handshake failed, as counted in `portcullis_tls_handshake_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ProtocolVersion,
    NoSharedCipher,
    UnknownServerName,
    ClientCertMissing,
    ClientCertInvalid,
    ClientRejectedCertificate,
    Malformed,
    Timeout,
    Closed,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::ProtocolVersion,
        Reason::NoSharedCipher,
        Reason::UnknownServerName,
        Reason::ClientCertMissing,
        Reason::ClientCertInvalid,
        Reason::ClientRejectedCertificate,
        Reason::Malformed,
        Reason::Timeout,
        Reason::Closed,
        Reason::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ProtocolVersion => "protocol_version",
            Reason::NoSharedCipher => "no_shared_cipher",
            Reason::UnknownServerName => "unknown_server_name",
            Reason::ClientCertMissing => "client_certificate_missing",
            Reason::ClientCertInvalid => "client_certificate_invalid",
            Reason::ClientRejectedCertificate => "client_rejected_certificate",
            Reason::Malformed => "malformed",
            Reason::Timeout => "timeout",
            Reason::Closed => "closed",
            Reason::Other => "other",
        }
    }
}

/// Classifies a rustls / Pingora handshake error text.
pub fn classify(error: &str) -> Reason {
    let e = error;
    if e.contains("NoCipherSuitesInCommon") || e.contains("no ciphersuites in common") {
        // With a TLS 1.3-only provider a TLS 1.2 client finds no suite: say what it is.
        if e.contains("TLS12") || e.contains("ProtocolVersion") {
            return Reason::ProtocolVersion;
        }
        return Reason::NoSharedCipher;
    }
    if e.contains("ProtocolVersion")
        || e.contains("SupportedVersionsExtensionRequired")
        || e.contains("protocol version")
    {
        return Reason::ProtocolVersion;
    }
    if e.contains("no server certificate chain resolved") {
        return Reason::UnknownServerName;
    }
    if e.contains("NoCertificatesPresented") || e.contains("peer sent no certificates") {
        return Reason::ClientCertMissing;
    }
    if e.contains("invalid peer certificate")
        || e.contains("client certificates are not configured")
    {
        return Reason::ClientCertInvalid;
    }
    if e.contains("received fatal alert") {
        if e.contains("UnknownCA")
            || e.contains("BadCertificate")
            || e.contains("CertificateUnknown")
            || e.contains("CertificateExpired")
            || e.contains("UnsupportedCertificate")
        {
            return Reason::ClientRejectedCertificate;
        }
        if e.contains("ProtocolVersion") {
            return Reason::ProtocolVersion;
        }
        if e.contains("HandshakeFailure") {
            return Reason::NoSharedCipher;
        }
    }
    if e.contains("corrupt message")
        || e.contains("InvalidMessage")
        || e.contains("InappropriateMessage")
    {
        return Reason::Malformed;
    }
    if e.contains("timeout") || e.contains("timed out") {
        return Reason::Timeout;
    }
    if e.contains("eof")
        || e.contains("EOF")
        || e.contains("reset by peer")
        || e.contains("Broken pipe")
        || e.contains("ConnectionClosed")
    {
        return Reason::Closed;
    }
    Reason::Other
}

/// Handshake failure counters by reason.
pub static FAILURES: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

pub fn count(reason: Reason) {
    FAILURES[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// SNI names seen in recent ClientHellos, by peer address (newest last, bounded).
static RECENT: Mutex<VecDeque<(SocketAddr, Box<str>)>> = Mutex::new(VecDeque::new());
const RECENT_MAX: usize = 2048;

pub fn remember_sni(peer: SocketAddr, sni: &str) {
    let mut r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    if r.len() >= RECENT_MAX {
        r.pop_front();
    }
    r.push_back((peer, sni.into()));
}

pub fn sni_of(peer: &SocketAddr) -> Option<Box<str>> {
    let r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    r.iter()
        .rev()
        .find(|(p, _)| p == peer)
        .map(|(_, s)| s.clone())
}

/// Reads the first TLS record (the ClientHello) and puts it back for rustls. Returns its SNI.
/// A client that sends nothing is left to the header deadline, which shuts the socket.
pub async fn peek_sni(stream: &mut L4Stream) -> Option<String> {
    let (buf, len) = peek_first_record(stream).await;
    len.and_then(|len| sni_from_record(&buf[..len]))
}

/// The bytes read while looking for the first TLS record, and that record's length when they
/// hold one; everything read is put back, so the next reader sees the stream untouched.
pub async fn peek_first_record(stream: &mut L4Stream) -> (Vec<u8>, Option<usize>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let want = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() >= 5 {
            if buf[0] != 0x16 {
                break None;
            }
            let len = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
            if buf.len() >= len || buf.len() >= 16 * 1024 + 5 {
                break Some(len.min(buf.len()));
            }
        }
    };
    stream.rewind(&buf);
    (buf, want)
}

/// The server_name of a ClientHello record, if it carries one.
pub fn sni_from_record(rec: &[u8]) -> Option<String> {
    let mut list = Reader(hello_extension(rec, 0)?);
    let mut names = Reader(list.vec16()?);
    while !names.0.is_empty() {
        let kind = names.u8()?;
        let name = names.vec16()?;
        if kind == 0 {
            let s = std::str::from_utf8(name).ok()?;
            // Only what a host name can be: never echo arbitrary bytes into logs.
            if s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Some(s.to_ascii_lowercase());
            }
            return None;
        }
    }
    None
}

/// The protocols a ClientHello record offers by ALPN (empty when it has no ALPN extension).
pub fn alpn_from_record(rec: &[u8]) -> Option<Vec<&[u8]>> {
    let Some(body) = hello_extension(rec, 16) else {
        // A ClientHello without ALPN offers nothing; anything else is not a ClientHello.
        return hello_extensions(rec).map(|_| Vec::new());
    };
    let mut list = Reader(body);
    let mut protocols = Reader(list.vec16()?);
    let mut out = Vec::new();
    while !protocols.0.is_empty() {
        let n = protocols.u8()? as usize;
        out.push(protocols.take(n)?);
    }
    Some(out)
}

/// The body of extension `ty` in a ClientHello record.
fn hello_extension(rec: &[u8], ty: u16) -> Option<&[u8]> {
    let mut exts = Reader(hello_extensions(rec)?);
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let body = exts.vec16()?;
        if typ == ty {
            return Some(body);
        }
    }
    None
}

/// The extensions block of a ClientHello record (`None` if the record is not one).
fn hello_extensions(rec: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(rec.get(5..)?);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let mut hello = Reader(r.vec24()?);
    hello.take(2 + 32)?; // version, random
    let sid = hello.u8()? as usize;
    hello.take(sid)?;
    let suites = hello.u16()? as usize;
    hello.take(suites)?;
    let comp = hello.u8()? as usize;
    hello.take(comp)?;
    hello.vec16()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn vec24(&mut self) -> Option<&'a [u8]> {
        let n = self.u24()? as usize;
        self.take(n)
    }
    fn u24(&mut self) -> Option<u32> {
        self.take(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

/// Parses Pingora's "Downstream handshake error from ADDR: ERROR" line.
pub fn parse_pingora_line(msg: &str) -> Option<(Option<SocketAddr>, &str)> {
    if let Some(rest) = msg.strip_prefix("Downstream handshake error from ") {
        let (addr, err) = rest.split_once(": ")?;
        return Some((addr.parse().ok(), err));
    }
    if let Some(err) = msg.strip_prefix("Downstream handshake error: ") {
        return Some((None, err));
    }
    if msg.starts_with("Downstream handshake timeout") {
        return Some((None, "timeout"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `sni`.
    fn hello(sni: &str) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            std::sync::Arc::new(cfg),
            sni.to_string().try_into().unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn sni_is_read_from_a_real_client_hello() {
        assert_eq!(
            sni_from_record(&hello("api.example.com")).as_deref(),
            Some("api.example.com")
        );
        let h = hello("localhost");
        for cut in [0, 5, 10, 50, h.len() - 1] {
            let _ = sni_from_record(&h[..cut]);
        }
        assert_eq!(sni_from_record(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            classify("TLSHandshakeFailure context: TLS accept() failed: peer is incompatible: NoCipherSuitesInCommon"),
            Reason::NoSharedCipher
        );
        assert_eq!(
            classify("TLS accept() failed: received fatal alert: UnknownCA"),
            Reason::ClientRejectedCertificate
        );
        assert_eq!(
            classify("TLS accept() failed: invalid peer certificate: UnknownIssuer"),
            Reason::ClientCertInvalid
        );
        assert_eq!(
            classify("TLS accept() failed: peer sent no certificates"),
            Reason::ClientCertMissing
        );
        assert_eq!(
            classify("TLS accept() failed: received corrupt message of type InvalidContentType"),
            Reason::Malformed
        );
        assert_eq!(
            parse_pingora_line("Downstream handshake error from 127.0.0.1:5000: boom"),
            Some((Some("127.0.0.1:5000".parse().unwrap()), "boom"))
        );
    }

    #[test]
    fn recent_sni_is_found_by_peer() {
        let p: SocketAddr = "192.0.2.7:4444".parse().unwrap();
        remember_sni(p, "a.example");
        remember_sni(p, "b.example");
        assert_eq!(sni_of(&p).as_deref(), Some("b.example"));
    }
}
