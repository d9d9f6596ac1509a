//! DNS dynamic updates (RFC 2136) signed with TSIG (RFC 8945), for `dns-01` challenges: the
//! `_acme-challenge` TXT records are added to, and removed from, the zone at its primary server
//! (BIND, Knot, PowerDNS, …) over TCP.
//!
//! Every request is signed; the answer must be signed with the same key and carry the request's
//! MAC, or it is refused. A server that refuses the update (a wrong key, a key without the
//! right, a name outside the zone) answers with an RCODE that the error names, with the TSIG
//! error when there is one.

use std::time::Duration;

use base64::Engine;
use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TSIG key: its name, algorithm and secret.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm.name())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    pub fn parse(text: &str) -> Option<TsigAlgorithm> {
        match text.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            TsigAlgorithm::HmacSha256 => hmac::HMAC_SHA256,
            TsigAlgorithm::HmacSha384 => hmac::HMAC_SHA384,
            TsigAlgorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

impl TsigKey {
    /// A key from its base64 secret, as `tsig-keygen` prints it.
    pub fn new(
        name: &str,
        algorithm: TsigAlgorithm,
        secret_b64: &str,
    ) -> Result<TsigKey, UpdateError> {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_b64.trim())
            .map_err(|_| UpdateError::Key("the TSIG secret is not base64"))?;
        if secret.len() < 16 {
            return Err(UpdateError::Key("the TSIG secret is shorter than 16 bytes"));
        }
        Ok(TsigKey {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            algorithm,
            secret,
        })
    }
}

/// One change to the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Adds a TXT record (`name`, `value`, TTL).
    AddTxt(String, String, u32),
    /// Removes that TXT record (and only it).
    DeleteTxt(String, String),
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("DNS server {server}: {source}")]
    Io {
        server: String,
        source: std::io::Error,
    },
    #[error("DNS server {server} did not answer within {0:?}", .timeout)]
    Timeout { server: String, timeout: Duration },
    #[error("DNS server {server} refused the update: {rcode}{tsig}")]
    Refused {
        server: String,
        rcode: &'static str,
        tsig: String,
    },
    #[error("DNS server {server}: {0}", .why)]
    BadAnswer { server: String, why: String },
    #[error("{0}")]
    Name(String),
    #[error("{0}")]
    Key(&'static str),
}

const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const FUDGE: u16 = 300;

/// Sends `changes` to the zone `zone` at `server` (`host:port`) as one signed update.
pub async fn update(
    server: &str,
    zone: &str,
    key: &TsigKey,
    changes: &[Change],
    timeout: Duration,
) -> Result<(), UpdateError> {
    let id: u16 = rand::random();
    let time_signed = crate::auth::now_unix();
    let (request, mac) = signed_update(id, zone, key, changes, time_signed)?;
    let answer = match tokio::time::timeout(timeout, exchange(server, &request)).await {
        Ok(Ok(a)) => a,
        Ok(Err(source)) => {
            return Err(UpdateError::Io {
                server: server.into(),
                source,
            })
        }
        Err(_) => {
            return Err(UpdateError::Timeout {
                server: server.into(),
                timeout,
            })
        }
    };
    check_answer(server, id, key, &mac, &answer)
}

async fn exchange(server: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&(request.len() as u16).to_be_bytes());
    framed.extend_from_slice(request);
    s.write_all(&framed).await?;
    let len = s.read_u16().await? as usize;
    let mut answer = vec![0u8; len];
    s.read_exact(&mut answer).await?;
    Ok(answer)
}

/// The wire form of a name, lower-case, uncompressed.
fn push_name(out: &mut Vec<u8>, name: &str) -> Result<(), UpdateError> {
    let name = name.trim_end_matches('.');
    if name.len() > 253 {
        return Err(UpdateError::Name(format!("{name:?} is too long for DNS")));
    }
    for label in name.split('.').filter(|l| !l.is_empty()) {
        if label.len() > 63 {
            return Err(UpdateError::Name(format!(
                "{name:?} has a label longer than 63 bytes"
            )));
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    Ok(())
}

fn push_rr_head(
    out: &mut Vec<u8>,
    name: &str,
    kind: u16,
    class: u16,
    ttl: u32,
) -> Result<(), UpdateError> {
    push_name(out, name)?;
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    Ok(())
}

fn txt_rdata(value: &str) -> Result<Vec<u8>, UpdateError> {
    if value.len() > 255 {
        return Err(UpdateError::Name("a TXT value over 255 bytes".into()));
    }
    let mut r = vec![value.len() as u8];
    r.extend_from_slice(value.as_bytes());
    Ok(r)
}

/// The TSIG variables that follow the message in the MAC's input (RFC 8945 4.3.3).
fn tsig_variables(key: &TsigKey, time_signed: u64, error: u16, other: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    // Names were checked when the request was built; these cannot fail.
    let _ = push_name(&mut v, &key.name);
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    let _ = push_name(&mut v, key.algorithm.name());
    v.extend_from_slice(&time_signed.to_be_bytes()[2..]);
    v.extend_from_slice(&FUDGE.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// The update message with its TSIG record, and the request MAC (the answer signs over it).
fn signed_update(
    id: u16,
    zone: &str,
    key: &TsigKey,
    changes: &[Change],
    time_signed: u64,
) -> Result<(Vec<u8>, Vec<u8>), UpdateError> {
    let mut m = Vec::with_capacity(512);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&(5u16 << 11).to_be_bytes()); // opcode UPDATE
    m.extend_from_slice(&1u16.to_be_bytes()); // zone
    m.extend_from_slice(&0u16.to_be_bytes()); // prerequisites
    m.extend_from_slice(&(changes.len() as u16).to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes()); // additional, before TSIG
    push_name(&mut m, zone)?;
    m.extend_from_slice(&TYPE_SOA.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    for c in changes {
        let (name, value, class, ttl) = match c {
            Change::AddTxt(n, v, ttl) => (n, v, CLASS_IN, *ttl),
            Change::DeleteTxt(n, v) => (n, v, CLASS_NONE, 0),
        };
        let in_zone = name.trim_end_matches('.').to_ascii_lowercase();
        let zone_l = zone.trim_end_matches('.').to_ascii_lowercase();
        if in_zone != zone_l && !in_zone.ends_with(&format!(".{zone_l}")) {
            return Err(UpdateError::Name(format!(
                "{name} is not in the zone {zone}"
            )));
        }
        push_rr_head(&mut m, name, TYPE_TXT, class, ttl)?;
        let rdata = txt_rdata(value)?;
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
    }
    let hkey = hmac::Key::new(key.algorithm.ring(), &key.secret);
    let mut ctx = hmac::Context::with_key(&hkey);
    ctx.update(&m);
    ctx.update(&tsig_variables(key, time_signed, 0, &[]));
    let mac = ctx.sign().as_ref().to_vec();
    // The TSIG record.
    push_rr_head(&mut m, &key.name, TYPE_TSIG, CLASS_ANY, 0)?;
    let mut rdata = Vec::new();
    push_name(&mut rdata, key.algorithm.name())?;
    rdata.extend_from_slice(&time_signed.to_be_bytes()[2..]);
    rdata.extend_from_slice(&FUDGE.to_be_bytes());
    rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rdata.extend_from_slice(&mac);
    rdata.extend_from_slice(&id.to_be_bytes());
    rdata.extend_from_slice(&0u16.to_be_bytes()); // error
    rdata.extend_from_slice(&0u16.to_be_bytes()); // other length
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&rdata);
    m[10..12].copy_from_slice(&1u16.to_be_bytes());
    Ok((m, mac))
}

fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADSIG",
        17 => "BADKEY",
        18 => "BADTIME",
        22 => "BADTRUNC",
        _ => "an unknown code",
    }
}

/// A cursor over a DNS message.
struct Reader<'a> {
    m: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.m.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// Skips a name (labels or a compression pointer); returns it lower-case, dotted, for the
    /// names that matter here, which servers send uncompressed.
    fn name(&mut self) -> Option<String> {
        let mut out = String::new();
        loop {
            let len = *self.take(1)?.first()?;
            match len {
                0 => return Some(out),
                l if l & 0xc0 == 0xc0 => {
                    self.take(1)?;
                    out.push_str("(compressed)");
                    return Some(out);
                }
                l if l < 64 => {
                    let label = self.take(l as usize)?;
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
                }
                _ => return None,
            }
        }
    }

    fn skip_rr(&mut self) -> Option<()> {
        self.name()?;
        self.take(8)?;
        let len = self.u16()? as usize;
        self.take(len)?;
        Some(())
    }
}

/// Checks the answer: our ID, signed by our key over our MAC, NOERROR.
fn check_answer(
    server: &str,
    id: u16,
    key: &TsigKey,
    request_mac: &[u8],
    answer: &[u8],
) -> Result<(), UpdateError> {
    let bad = |why: &str| UpdateError::BadAnswer {
        server: server.into(),
        why: why.into(),
    };
    if answer.len() < 12 || u16::from_be_bytes([answer[0], answer[1]]) != id {
        return Err(bad("an answer that is not to our update"));
    }
    let flags = u16::from_be_bytes([answer[2], answer[3]]);
    if flags & 0x8000 == 0 || (flags >> 11) & 0xf != 5 {
        return Err(bad("an answer that is not to an update"));
    }
    let rcode = flags & 0xf;
    let counts: Vec<u16> = (0..4)
        .map(|i| u16::from_be_bytes([answer[4 + 2 * i], answer[5 + 2 * i]]))
        .collect();
    let mut r = Reader { m: answer, at: 12 };
    for _ in 0..counts[0] {
        r.name().ok_or_else(|| bad("a truncated answer"))?;
        r.take(4).ok_or_else(|| bad("a truncated answer"))?;
    }
    for _ in 0..(counts[1] as u32 + counts[2] as u32 + counts[3].saturating_sub(1) as u32) {
        r.skip_rr().ok_or_else(|| bad("a truncated answer"))?;
    }
    // The TSIG record, last in the additional section.
    let tsig_at = r.at;
    let tsig = if counts[3] > 0 {
        let owner = r.name().ok_or_else(|| bad("a truncated answer"))?;
        let kind = r.u16().ok_or_else(|| bad("a truncated answer"))?;
        r.take(6).ok_or_else(|| bad("a truncated answer"))?;
        let len = r.u16().ok_or_else(|| bad("a truncated answer"))? as usize;
        let rdata = r.take(len).ok_or_else(|| bad("a truncated answer"))?;
        (kind == TYPE_TSIG).then_some((owner, rdata))
    } else {
        None
    };
    let Some((owner, rdata)) = tsig else {
        // An unsigned answer: only an error may come unsigned (the key was refused).
        return Err(match rcode {
            0 => bad("an unsigned answer"),
            c => UpdateError::Refused {
                server: server.into(),
                rcode: rcode_name(c),
                tsig: String::new(),
            },
        });
    };
    let mut t = Reader { m: rdata, at: 0 };
    let parsed = (|| {
        let algorithm = t.name()?;
        let time = t.take(6)?;
        let time_signed = time.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
        let _fudge = t.u16()?;
        let mac_len = t.u16()? as usize;
        let mac = t.take(mac_len)?.to_vec();
        let _original_id = t.u16()?;
        let error = t.u16()?;
        let other_len = t.u16()? as usize;
        let other = t.take(other_len)?.to_vec();
        Some((algorithm, time_signed, mac, error, other))
    })();
    let (algorithm, time_signed, mac, error, other) =
        parsed.ok_or_else(|| bad("a malformed TSIG record"))?;
    if error != 0 || mac.is_empty() {
        return Err(UpdateError::Refused {
            server: server.into(),
            rcode: rcode_name(rcode),
            tsig: format!(" (TSIG {})", rcode_name(error)),
        });
    }
    if owner != key.name || algorithm != key.algorithm.name() {
        return Err(bad("an answer signed with another key"));
    }
    // The MAC covers our MAC, the answer without its TSIG record (additional count one less),
    // and the answer's TSIG variables.
    let mut body = answer[..tsig_at].to_vec();
    body[10..12].copy_from_slice(&(counts[3] - 1).to_be_bytes());
    let hkey = hmac::Key::new(key.algorithm.ring(), &key.secret);
    let mut input = Vec::with_capacity(body.len() + request_mac.len() + 64);
    input.extend_from_slice(&(request_mac.len() as u16).to_be_bytes());
    input.extend_from_slice(request_mac);
    input.extend_from_slice(&body);
    input.extend_from_slice(&tsig_variables(key, time_signed, error, &other));
    hmac::verify(&hkey, &input, &mac)
        .map_err(|_| bad("an answer whose TSIG signature does not verify"))?;
    if rcode != 0 {
        return Err(UpdateError::Refused {
            server: server.into(),
            rcode: rcode_name(rcode),
            tsig: String::new(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TsigKey {
        TsigKey::new(
            "acme-key.",
            TsigAlgorithm::HmacSha256,
            "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==",
        )
        .unwrap()
    }

    #[test]
    fn an_update_outside_the_zone_is_refused_before_sending() {
        let e = signed_update(
            1,
            "example.test",
            &key(),
            &[Change::AddTxt(
                "_acme-challenge.other.test".into(),
                "v".into(),
                60,
            )],
            0,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("is not in the zone example.test"),
            "{e}"
        );
    }

    #[test]
    fn the_request_carries_one_tsig_record_over_the_rest() {
        let (m, mac) = signed_update(
            7,
            "Example.Test.",
            &key(),
            &[Change::AddTxt(
                "_acme-challenge.example.test".into(),
                "v".into(),
                60,
            )],
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(&m[10..12], &1u16.to_be_bytes());
        assert_eq!(mac.len(), 32);
        // The zone name is written lower-case.
        assert!(m.windows(7).any(|w| w == b"example"));
        assert!(!m.windows(7).any(|w| w == b"Example"));
    }

    #[test]
    fn bad_secrets_and_algorithms_are_named() {
        assert!(TsigKey::new("k", TsigAlgorithm::HmacSha256, "not base64!").is_err());
        assert!(TsigKey::new("k", TsigAlgorithm::HmacSha256, "c2hvcnQ=").is_err());
        assert_eq!(
            TsigAlgorithm::parse("HMAC-SHA512."),
            Some(TsigAlgorithm::HmacSha512)
        );
        assert_eq!(TsigAlgorithm::parse("hmac-md5"), None);
    }
}
