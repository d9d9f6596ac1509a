//! What the section compilers share: the options of a compile, the error context, entries that
//! wait for their cross-references, and the name, path and address checks.

use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use toml::Spanned;

use crate::config::{line_of, Mode};
use crate::http::path::canonicalize;
use crate::policy::model::HostPattern;
use crate::policy::source::{PolicyError, SourceFile};

/// What a compile depends on besides the files.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions {
    pub mode: Mode,
    /// `AUTH_PROVIDER` from the environment: replaces the policy's default provider.
    pub auth_override: Option<crate::auth::Provider>,
    /// The HTTPS listener the policy will be served on, when known: the development providers
    /// (`none`, `local`) admit anyone, so they are refused on a listener that is not loopback.
    pub listener: Option<std::net::SocketAddr>,
    /// `[tls.acme] shared = true`: the policy's store holds private keys, which production
    /// refuses to send to it in clear (posture item `acme-shared`).
    pub acme_shared: bool,
}

impl CompileOptions {
    /// The options the gateway's configuration implies: its mode, `AUTH_PROVIDER`, and the HTTPS
    /// listener the policy will be served on.
    pub fn for_config(config: &crate::config::Config) -> Self {
        CompileOptions {
            mode: config.mode,
            auth_override: config.auth_provider,
            listener: Some(config.https_addr),
            acme_shared: config.acme.as_ref().is_some_and(|a| a.shared),
        }
    }
}

pub(super) struct Ctx<'a> {
    pub file: &'a SourceFile,
    pub errors: &'a mut Vec<PolicyError>,
}

impl Ctx<'_> {
    pub(super) fn err(
        &mut self,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(PolicyError {
            file: self.file.path.display().to_string(),
            line: line_of(&self.file.text, offset),
            field: field.into(),
            message: message.into(),
        });
    }
    pub(super) fn err_at<T>(
        &mut self,
        at: &Spanned<T>,
        field: impl Into<String>,
        message: impl std::fmt::Display,
    ) {
        self.err(at.span().start, field, message.to_string())
    }
}

/// A route or upstream before cross-references are resolved, remembering where it was written.
pub(super) struct Pending<T> {
    pub file: usize,
    pub index: usize,
    pub raw: T,
}

/// Reads a PEM bundle of CA certificates for upstream verification.
pub(super) fn load_ca_bundle(path: &Path) -> Result<Arc<pingora::protocols::tls::CaType>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        if x509_parser::parse_x509_certificate(&c).is_err() {
            return Err(format!("{}: not an X.509 certificate", path.display()));
        }
        out.push(pingora::utils::tls::WrappedX509::new(
            c.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(format!("{}: no certificates in the bundle", path.display()));
    }
    Ok(Arc::from(out.into_boxed_slice()))
}

pub(super) fn hsts_header(max_age: u64, sub: bool, preload: bool) -> HeaderValue {
    let mut v = format!("max-age={max_age}");
    if sub {
        v.push_str("; includeSubDomains");
    }
    if preload {
        v.push_str("; preload");
    }
    HeaderValue::from_str(&v).expect("HSTS value is ASCII")
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A policy path must be absolute and already canonical, so it compares byte-for-byte with a
/// canonical request path.
pub(super) fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/'"));
    }
    if p.contains(['?', '#']) {
        return Err(format!("{p:?} must not contain a query or fragment"));
    }
    match canonicalize(p) {
        Ok(c) if c == p => Ok(()),
        Ok(c) => Err(format!("{p:?} is not canonical; write {c:?}")),
        Err(e) => Err(format!("{p:?} is not a valid path: {e}")),
    }
}

pub(super) fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
    let (wild, rest) = match h.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, h),
    };
    let ok = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !ok {
        return Err(format!(
            "invalid host {h:?} (lower-case DNS name, optionally starting with \"*.\"; no port)"
        ));
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{rest}").into_boxed_str())
    } else {
        HostPattern::Exact(rest.into())
    })
}

pub(super) fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

pub(super) fn check_host_port(a: &str) -> Result<(), String> {
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("{a:?} needs a port (host:port)"));
    };
    if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
        return Err(format!("{a:?}: invalid port {port:?}"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(format!("{a:?}: invalid host"));
    }
    Ok(())
}
