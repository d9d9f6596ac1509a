//! The storage folder and what the manager and the challenges share: the clock, mutexes that
//! outlive a panic, private atomic writes, the order locks, and each name's certificate and
//! state files.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tls::store::{load_pair, CertEntry};

pub(super) fn now() -> i64 {
    crate::auth::now_unix() as i64
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes a storage file: atomically, readable by our user only.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::files::write_atomic(path, bytes, 0o600)
}

/// Held while a name is being ordered; removes its lock file when dropped.
pub(super) struct NameLock(PathBuf);

impl Drop for NameLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const STALE_LOCK: Duration = Duration::from_secs(600);

pub(super) fn try_lock(storage: &Path, name: &str) -> std::io::Result<Option<NameLock>> {
    let path = storage.join("locks").join(format!("{name}.lock"));
    std::fs::create_dir_all(path.parent().unwrap_or(storage))?;
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "pid {} at {}", std::process::id(), now());
                return Ok(Some(NameLock(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > STALE_LOCK) {
                    tracing::warn!(target: "portcullis::tls", name, "ACME: removing a stale order lock");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `(not_before, not_after)` of a chain's leaf.
pub(super) fn validity(entry: &CertEntry) -> Option<(i64, i64)> {
    let leaf = entry.key.cert.first()?;
    let (_, c) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

/// The certificate's ACME Renewal Information identifier (RFC 9773 4.1): its authority key
/// identifier and serial number; `None` without an authority key identifier.
pub(super) fn ari_id(entry: &CertEntry) -> Option<instant_acme::CertificateIdentifier<'static>> {
    use rustls::pki_types::Der;
    let leaf = entry.key.cert.first()?;
    let (_, c) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let aki = c
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })?;
    Some(
        instant_acme::CertificateIdentifier::new(
            Der::from_slice(&aki),
            Der::from_slice(c.tbs_certificate.raw_serial()),
        )
        .into_owned(),
    )
}

/// What `portcullis acme status` shows for a name; kept in `state/<name>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameStatus {
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub next_renewal: Option<i64>,
    pub last_issued: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: u32,
}

/// The certificate and state files of a storage folder.
pub fn cert_path(storage: &Path, name: &str) -> PathBuf {
    storage.join("certs").join(format!("{name}.pem"))
}

pub(super) fn state_path(storage: &Path, name: &str) -> PathBuf {
    storage.join("state").join(format!("{name}.json"))
}

/// Reads a name's stored state (default when none).
pub fn read_status(storage: &Path, name: &str) -> NameStatus {
    std::fs::read(state_path(storage, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// A stored certificate with its validity, if it loads.
pub fn read_stored(storage: &Path, name: &str) -> Option<(CertEntry, i64, i64)> {
    let path = cert_path(storage, name);
    if !path.exists() {
        return None;
    }
    match load_pair(name, &path, &path) {
        Ok(e) => {
            let (nb, na) = validity(&e)?;
            Some((e, nb, na))
        }
        Err(e) => {
            tracing::warn!(target: "portcullis::tls", name, error = %e, "ACME: the stored certificate does not load; ordering a new one");
            None
        }
    }
}
