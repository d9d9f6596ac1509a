//! `[tls.acme]`: names the gateway obtains and renews certificates for by itself, and for
//! `dns-01` the DNS server it publishes challenge records at (RFC 2136 with TSIG).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    directory: Option<String>,
    contact: Option<Vec<String>>,
    accept_terms: Option<bool>,
    names: Option<Vec<String>>,
    challenge: Option<String>,
    storage: Option<PathBuf>,
    renew_before_seconds: Option<u64>,
    ca_file: Option<PathBuf>,
    retry_min_seconds: Option<u64>,
    retry_max_seconds: Option<u64>,
    /// `dns-01`: where the challenge records are published.
    dns: Option<RawAcmeDns>,
    /// Account, certificates, locks and challenge answers in the policy's `[shared_state]`.
    shared: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcmeDns {
    server: Option<String>,
    zone: Option<String>,
    tsig_key: Option<String>,
    tsig_algorithm: Option<String>,
    tsig_secret: Option<String>,
    ttl_seconds: Option<u32>,
    propagation_seconds: Option<u64>,
}

/// `[tls.acme.dns]`: the zone's primary server, which takes RFC 2136 updates signed with a TSIG
/// key, for the `_acme-challenge` TXT records of `dns-01`.
#[derive(Clone)]
pub struct AcmeDns {
    /// `host:port` (port 53 when none is given).
    pub server: String,
    /// The zone the names are in (`example.com`).
    pub zone: String,
    pub tsig_key: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    pub tsig_algorithm: String,
    /// The key's secret, base64 as `tsig-keygen` prints it (resolved from `env:`/`file:`).
    pub tsig_secret: String,
    pub ttl: u32,
    /// How long to wait after the update before asking the ACME server to look (secondary
    /// servers catching up); 0 by default.
    pub propagation: std::time::Duration,
}

impl std::fmt::Debug for AcmeDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeDns")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("tsig_key", &self.tsig_key)
            .finish_non_exhaustive()
    }
}

/// `env:NAME`, `file:/path` (relative to the configuration file) or the value itself.
fn secret(value: &str, base: &Path, what: &str) -> Result<String, String> {
    let v = if let Some(name) = value.strip_prefix("env:") {
        crate::env::var(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{what}: environment variable {name} is not set"))?
    } else if let Some(path) = value.strip_prefix("file:") {
        let path = base.join(path);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?
            .trim()
            .to_string()
    } else {
        value.to_string()
    };
    crate::redact::register_secret(&v);
    Ok(v)
}

fn resolve_dns(raw: RawAcmeDns, base: &Path, names: &[String]) -> Result<AcmeDns, String> {
    let server = raw
        .server
        .ok_or("tls.acme.dns.server: the zone's primary DNS server (host or host:port)")?;
    let server = if server.parse::<std::net::SocketAddr>().is_ok()
        || server
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
    {
        server
    } else if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]:53")
    } else {
        format!("{server}:53")
    };
    let zone = raw
        .zone
        .ok_or("tls.acme.dns.zone: the zone the names are in (example.com)")?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    // A zone may be a single label (a private TLD) as well as a host-like name.
    if !(acme_name_ok(&zone) || !zone.contains('.') && acme_label_ok(&zone)) {
        return Err(format!(
            "tls.acme.dns.zone: {zone:?} is not a DNS zone name"
        ));
    }
    for n in names {
        let base_name = n.strip_prefix("*.").unwrap_or(n);
        if base_name != zone && !base_name.ends_with(&format!(".{zone}")) {
            return Err(format!(
                "tls.acme.names: {n:?} is not in the zone {zone:?} (tls.acme.dns.zone)"
            ));
        }
    }
    let tsig_key = raw
        .tsig_key
        .ok_or("tls.acme.dns.tsig_key: the TSIG key's name, as the server knows it")?;
    let tsig_algorithm = raw
        .tsig_algorithm
        .unwrap_or_else(|| "hmac-sha256".into())
        .to_ascii_lowercase();
    if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&tsig_algorithm.as_str()) {
        return Err(format!(
            "tls.acme.dns.tsig_algorithm: {tsig_algorithm:?} (expected hmac-sha256, hmac-sha384 or hmac-sha512)"
        ));
    }
    let raw_secret = raw
        .tsig_secret
        .ok_or("tls.acme.dns.tsig_secret: the key's base64 secret, as env:NAME or file:/path")?;
    let tsig_secret = secret(&raw_secret, base, "tls.acme.dns.tsig_secret")?;
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(tsig_secret.trim()) {
        Ok(k) if k.len() >= 16 => {}
        Ok(_) => return Err("tls.acme.dns.tsig_secret: shorter than 16 bytes".into()),
        Err(_) => return Err("tls.acme.dns.tsig_secret: not base64".into()),
    }
    let ttl = raw.ttl_seconds.unwrap_or(60).clamp(1, 86_400);
    let propagation =
        std::time::Duration::from_secs(raw.propagation_seconds.unwrap_or(0).min(3600));
    Ok(AcmeDns {
        server,
        zone,
        tsig_key,
        tsig_algorithm,
        tsig_secret,
        ttl,
        propagation,
    })
}

/// How an ACME server checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `http://<name>/.well-known/acme-challenge/<token>` on the plain-HTTP listener (port 80).
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on the HTTPS listener (port 443).
    TlsAlpn01,
    /// A TXT record at `_acme-challenge.<name>`, published by a DNS update; the only one that
    /// proves a wildcard name.
    Dns01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Dns01 => "dns-01",
        }
    }
}

/// `[tls.acme]`: names the gateway obtains and renews certificates for by itself.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL (Let's Encrypt's production directory by default).
    pub directory: String,
    /// `mailto:` contacts for the account.
    pub contact: Vec<String>,
    pub names: Vec<String>,
    pub challenge: AcmeChallenge,
    /// Account key, certificates and state (default `<data_dir>/acme`).
    pub storage: PathBuf,
    /// Renew this long before expiry; by default when a third of the lifetime is left.
    pub renew_before: Option<std::time::Duration>,
    /// Extra roots to trust for the directory (a private ACME server, a test CA).
    pub ca_file: Option<PathBuf>,
    /// Backoff after a failed attempt: starts at `retry_min`, doubles, capped at `retry_max`.
    pub retry_min: std::time::Duration,
    pub retry_max: std::time::Duration,
    /// With `dns-01`: where the challenge records go.
    pub dns: Option<AcmeDns>,
    /// Keep the account, certificates, order locks and challenge answers in the policy's
    /// `[shared_state]` Redis (the storage folder is then a local copy).
    pub shared: bool,
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// A host name an ACME certificate can be issued for: lower-case DNS labels, at least two, and
/// no IP address. (A wildcard is `*.` before such a name.)
fn acme_name_ok(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(acme_label_ok)
}

fn acme_label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn resolve_acme(
    raw: RawAcme,
    base: &Path,
    data_dir: &Path,
    http_on: bool,
) -> Result<AcmeConfig, String> {
    let directory = raw.directory.unwrap_or_else(|| LETS_ENCRYPT.to_string());
    if !directory.starts_with("https://") {
        return Err(format!(
            "tls.acme.directory: {directory:?} must be an https:// URL"
        ));
    }
    if raw.accept_terms != Some(true) {
        return Err(
            "tls.acme.accept_terms: must be true (you accept the ACME server's terms of service)"
                .into(),
        );
    }
    let names = raw.names.unwrap_or_default();
    if names.is_empty() {
        return Err("tls.acme.names: list at least one host name".into());
    }
    let mut contact = Vec::new();
    for c in raw.contact.unwrap_or_default() {
        let mail = c.strip_prefix("mailto:").unwrap_or(&c);
        if !mail.contains('@') || mail.contains(char::is_whitespace) {
            return Err(format!("tls.acme.contact: {c:?} is not an e-mail address"));
        }
        contact.push(format!("mailto:{mail}"));
    }
    let challenge = match raw.challenge.as_deref().unwrap_or("http-01") {
        "http-01" => AcmeChallenge::Http01,
        "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
        "dns-01" => AcmeChallenge::Dns01,
        other => {
            return Err(format!(
            "tls.acme.challenge: {other:?} (expected \"http-01\", \"tls-alpn-01\" or \"dns-01\")"
        ))
        }
    };
    for n in &names {
        let wildcard = n.strip_prefix("*.");
        if !acme_name_ok(wildcard.unwrap_or(n)) {
            return Err(format!(
                "tls.acme.names: {n:?} is not a lower-case host name (nor *. before one; no IP addresses)"
            ));
        }
        if wildcard.is_some() && challenge != AcmeChallenge::Dns01 {
            return Err(format!(
                "tls.acme.names: {n:?}: a wildcard name needs challenge = \"dns-01\""
            ));
        }
    }
    if challenge == AcmeChallenge::Http01 && !http_on {
        return Err(
            "tls.acme.challenge: http-01 needs the plain-HTTP listener (listeners.http)".into(),
        );
    }
    let dns = match (challenge, raw.dns) {
        (AcmeChallenge::Dns01, Some(d)) => Some(resolve_dns(d, base, &names)?),
        (AcmeChallenge::Dns01, None) => {
            return Err("tls.acme.challenge: dns-01 needs a [tls.acme.dns] section (the zone's server and TSIG key)".into())
        }
        (_, Some(_)) => {
            return Err("tls.acme.dns: only with challenge = \"dns-01\"".into())
        }
        (_, None) => None,
    };
    let shared = raw.shared.unwrap_or(false);
    if shared && challenge == AcmeChallenge::TlsAlpn01 {
        return Err("tls.acme.shared: use http-01 or dns-01 (a tls-alpn-01 answer is held by the replica that placed the order)".into());
    }
    let under = |p: PathBuf, root: &Path| if p.is_absolute() { p } else { root.join(p) };
    let storage = raw
        .storage
        .map(|p| under(p, base))
        .unwrap_or_else(|| data_dir.join("acme"));
    let retry_min = raw.retry_min_seconds.unwrap_or(60).max(1);
    let retry_max = raw.retry_max_seconds.unwrap_or(3600).max(retry_min);
    Ok(AcmeConfig {
        directory,
        contact,
        names,
        challenge,
        storage,
        renew_before: raw.renew_before_seconds.map(std::time::Duration::from_secs),
        ca_file: raw.ca_file.map(|p| under(p, base)),
        retry_min: std::time::Duration::from_secs(retry_min),
        retry_max: std::time::Duration::from_secs(retry_max),
        dns,
        shared,
    })
}
