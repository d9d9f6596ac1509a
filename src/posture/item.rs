//! One checklist item, its status, and the small judgements the checks share: what production
//! refuses, and which addresses are public.

use std::fmt::Write;
use std::net::IpAddr;

use crate::config::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One checklist item.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: &'static str,
    pub status: Status,
    pub finding: String,
    /// What to do about a WARN or FAIL.
    pub remedy: String,
}

impl Item {
    pub(super) fn pass(id: &'static str, finding: impl Into<String>) -> Item {
        Item {
            id,
            status: Status::Pass,
            finding: finding.into(),
            remedy: String::new(),
        }
    }
    pub(super) fn new(
        id: &'static str,
        status: Status,
        finding: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Item {
        Item {
            id,
            status,
            finding: finding.into(),
            remedy: remedy.into(),
        }
    }
    /// The line printed when production refuses on this item.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}: {}", self.status.as_str(), self.id, self.finding);
        if !self.remedy.is_empty() && self.status != Status::Pass {
            let _ = write!(s, " — {}", self.remedy);
        }
        s
    }
}

/// FAIL in production, WARN elsewhere.
pub(super) fn prod_fail(mode: Mode) -> Status {
    if mode == Mode::Production {
        Status::Fail
    } else {
        Status::Warn
    }
}

/// OCSP state of one certificate, as far as posture knows it.
#[derive(Debug, Clone)]
pub struct OcspView {
    pub name: String,
    /// Whether the certificate names an OCSP responder.
    pub has_responder: bool,
    pub stapled: bool,
    pub next_update: Option<i64>,
    pub last_error: Option<String>,
}

pub(super) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Whether an address is routable on the public internet (not loopback, private, link-local,
/// unique-local, CGNAT or unspecified).
pub(super) fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            !(v.is_loopback()
                || v.is_unspecified()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_are_told_apart() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "0.0.0.0",
            "fd00::1",
            "::1",
            "100.64.0.1",
        ] {
            assert!(!is_global(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2001:db8::1", "203.0.113.9"] {
            assert!(is_global(a.parse().unwrap()), "{a}");
        }
    }
}
