//! The certificate store: every `NAME.crt`/`NAME.pem` + `NAME.key` pair of the certificate
//! folder, loaded, checked (key matches certificate, names parsed) and indexed by SAN for SNI.
//! Held in an `ArcSwap` and swapped on change; a pair that fails to load keeps its previous
//! version serving. Files without a `.key` beside them (CA bundles such as `dev-ca.pem`) are
//! not server certificates and are skipped.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: {message}")]
    BadCertificate { path: String, message: String },
    #[error("{path}: no usable private key: {message}")]
    BadKey { path: String, message: String },
    #[error("{cert}: the private key {key} does not belong to this certificate")]
    KeyMismatch { cert: String, key: String },
    #[error("{cert}: its private key {key} is missing")]
    MissingKey { cert: String, key: String },
    #[error("{key}: its certificate {cert} is missing")]
    MissingCert { key: String, cert: String },
    #[error("{0}: cannot read the certificate folder: {1}")]
    Folder(String, std::io::Error),
}

/// One loaded certificate.
pub struct CertEntry {
    pub name: String,
    pub cert_path: PathBuf,
    pub key: Arc<CertifiedKey>,
    /// DNS names and IP addresses from the SAN extension (lower-case).
    pub names: Vec<String>,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// The same key with an OCSP staple, once the stapler has a good response; served in its
    /// place.
    pub stapled: arc_swap::ArcSwapOption<CertifiedKey>,
    /// Raw file contents, to notice when nothing changed.
    fingerprint: u64,
}

impl CertEntry {
    /// Identifies the files' contents: equal fingerprints, same certificate and key.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// What a handshake for this certificate presents: stapled when a staple is held.
    pub fn served(&self) -> Arc<CertifiedKey> {
        match self.stapled.load_full() {
            Some(k) => k,
            None => self.key.clone(),
        }
    }
}

impl fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertEntry")
            .field("name", &self.name)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// An immutable set of certificates with its SNI index.
#[derive(Debug, Default)]
pub struct CertSet {
    pub entries: Vec<Arc<CertEntry>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

impl CertSet {
    fn build(entries: Vec<Arc<CertEntry>>, default_name: Option<&str>) -> CertSet {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for n in &e.names {
                if let Some(rest) = n.strip_prefix("*.") {
                    wildcard.entry(rest.to_string()).or_insert(i);
                } else {
                    exact.entry(n.clone()).or_insert(i);
                }
            }
        }
        let default = default_name
            .and_then(|d| entries.iter().position(|e| e.name == d))
            .or(if entries.is_empty() { None } else { Some(0) });
        CertSet {
            entries,
            exact,
            wildcard,
            default,
        }
    }

    /// The certificate for an SNI name (exact SAN, then wildcard, then the default).
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertEntry>> {
        let idx = sni
            .and_then(|name| {
                let lower;
                let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower = name.to_ascii_lowercase();
                    lower.as_str()
                } else {
                    name
                };
                self.exact.get(name).copied().or_else(|| {
                    name.split_once('.')
                        .and_then(|(_, rest)| self.wildcard.get(rest).copied())
                })
            })
            .or(self.default)?;
        self.entries.get(idx)
    }
}

/// Result of loading the folder.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub kept_previous: Vec<String>,
    pub errors: Vec<CertError>,
}

#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    default_name: Option<String>,
    current: ArcSwap<CertSet>,
    reload_lock: Mutex<()>,
    /// Certificates obtained over ACME, served after the folder's (see `tls::acme`).
    acme: Mutex<Vec<Arc<CertEntry>>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

fn fingerprint(a: &[u8], b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.hash(&mut h);
    b.hash(&mut h);
    h.finish()
}

/// The folder's files that are not hidden, as (path, file name).
fn visible_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (!name.starts_with('.')).then(|| (e.path(), name))
        })
        .collect())
}

/// Finds `(name, cert, key)` triples in a folder, sorted by name.
pub fn find_pairs(dir: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, CertError> {
    let files = visible_files(dir).map_err(|e| CertError::Folder(dir.display().to_string(), e))?;
    let mut pairs = Vec::new();
    for (path, fname) in files {
        let Some(stem) = fname.strip_suffix(".key") else {
            continue;
        };
        let cert = ["crt", "pem"]
            .iter()
            .map(|ext| dir.join(format!("{stem}.{ext}")))
            .find(|p| p.is_file());
        if let Some(cert) = cert {
            pairs.push((stem.to_string(), cert, path));
        }
    }
    pairs.sort();
    Ok(pairs)
}

/// Half pairs in a folder, by name: a `name.crt` without `name.key`, or a `name.key` without
/// `name.crt`/`name.pem` (a lone `.pem` may be a chain or a CA and is left alone). Usually a
/// swap in progress or a file deleted by mistake; the name keeps its previous pair.
pub fn find_orphans(dir: &Path) -> Vec<(String, CertError)> {
    let Ok(files) = visible_files(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (path, fname) in files {
        if let Some(stem) = fname.strip_suffix(".crt") {
            let key = dir.join(format!("{stem}.key"));
            if !key.exists() {
                let (cert, key) = (path.display().to_string(), key.display().to_string());
                out.push((stem.to_string(), CertError::MissingKey { cert, key }));
            }
        } else if let Some(stem) = fname.strip_suffix(".key") {
            let crt = dir.join(format!("{stem}.crt"));
            if !crt.exists() && !dir.join(format!("{stem}.pem")).exists() {
                let (key, cert) = (path.display().to_string(), crt.display().to_string());
                out.push((stem.to_string(), CertError::MissingCert { key, cert }));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Loads and checks one pair.
pub fn load_pair(name: &str, cert_path: &Path, key_path: &Path) -> Result<CertEntry, CertError> {
    let cp = cert_path.display().to_string();
    let kp = key_path.display().to_string();
    let cert_pem = std::fs::read(cert_path).map_err(|e| CertError::Read {
        path: cp.clone(),
        source: e,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|e| CertError::Read {
        path: kp.clone(),
        source: e,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: cp.clone(),
            message: format!("invalid PEM: {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate { path: cp });
    };
    let (names, not_after) = inspect(leaf).map_err(|message| CertError::BadCertificate {
        path: cp.clone(),
        message,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::BadKey {
        path: kp.clone(),
        message: e.to_string(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError::BadKey {
            path: kp.clone(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CertError::KeyMismatch {
        cert: cp.clone(),
        key: kp.clone(),
    })?;
    Ok(CertEntry {
        name: name.to_string(),
        cert_path: cert_path.to_path_buf(),
        key: Arc::new(certified),
        names,
        not_after,
        stapled: arc_swap::ArcSwapOption::empty(),
        fingerprint: fingerprint(&cert_pem, &key_pem),
    })
}

/// SAN names (lower-case DNS names and textual IPs) and expiry of a DER certificate.
fn inspect(der: &[u8]) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.push(d.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*ip) {
                        names.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*ip) {
                        names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        return Err(
            "the certificate has no subjectAltName DNS or IP entries; clients will reject it"
                .into(),
        );
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

impl CertStore {
    /// Loads the folder. Start-up fails if a pair is broken, so operators see it at once.
    pub fn open(
        dir: PathBuf,
        default_name: Option<String>,
    ) -> Result<Arc<CertStore>, Vec<CertError>> {
        let store = CertStore {
            dir,
            default_name,
            current: ArcSwap::from_pointee(CertSet::default()),
            reload_lock: Mutex::new(()),
            acme: Mutex::new(Vec::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        };
        let report = store.load();
        if !report.errors.is_empty() {
            return Err(report.errors);
        }
        Ok(Arc::new(store))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn snapshot(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Re-reads the folder. Broken or half pairs keep their previous version; pairs removed whole
    /// go.
    pub fn load(&self) -> LoadReport {
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.current.load_full();
        let mut report = LoadReport::default();
        let pairs = match find_pairs(&self.dir) {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(e);
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                return report;
            }
        };
        let mut entries = Vec::with_capacity(pairs.len());
        for (name, cert, key) in pairs {
            match load_pair(&name, &cert, &key) {
                Ok(e) => {
                    let same = previous
                        .entries
                        .iter()
                        .find(|p| p.name == name && p.fingerprint == e.fingerprint);
                    entries.push(same.cloned().unwrap_or_else(|| Arc::new(e)));
                    report.loaded.push(name);
                }
                Err(err) => {
                    if let Some(prev) = previous.entries.iter().find(|p| p.name == name) {
                        entries.push(prev.clone());
                        report.kept_previous.push(name);
                    }
                    report.errors.push(err);
                }
            }
        }
        for (name, err) in find_orphans(&self.dir) {
            if let Some(prev) = previous.entries.iter().find(|p| p.name == name) {
                entries.push(prev.clone());
                report.kept_previous.push(name);
            }
            report.errors.push(err);
        }
        entries.extend(
            self.acme
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        let set = CertSet::build(entries, self.default_name.as_deref());
        self.current.store(Arc::new(set));
        if report.errors.is_empty() {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
        report
    }

    /// Serves `entry` for its names (unless a folder certificate covers them), replacing the
    /// previous ACME certificate of the same name. Handshakes in progress keep what they had.
    pub fn set_acme(&self, entry: Arc<CertEntry>) {
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut acme = self.acme.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load_full();
        let mut entries: Vec<Arc<CertEntry>> = current
            .entries
            .iter()
            .filter(|e| !acme.iter().any(|a| Arc::ptr_eq(a, e)))
            .cloned()
            .collect();
        acme.retain(|a| a.name != entry.name);
        acme.push(entry);
        entries.extend(acme.iter().cloned());
        self.current.store(Arc::new(CertSet::build(
            entries,
            self.default_name.as_deref(),
        )));
    }

    /// The fingerprint of the ACME certificate served for `name`.
    pub fn acme_fingerprint(&self, name: &str) -> Option<u64> {
        let acme = self.acme.lock().unwrap_or_else(|p| p.into_inner());
        acme.iter().find(|a| a.name == name).map(|a| a.fingerprint)
    }

    /// Reloads and logs the outcome (used by the watcher and SIGHUP).
    pub fn reload_and_log(&self) {
        let report = self.load();
        for e in &report.errors {
            tracing::error!(error = %e, "certificate refused; the previous version (if any) keeps serving");
        }
        tracing::info!(
            loaded = ?report.loaded,
            kept_previous = ?report.kept_previous,
            "certificates reloaded"
        );
    }
}

/// The SNI resolver handed to rustls: one lock-free load per handshake.
#[derive(Debug)]
pub struct CertResolver(pub Arc<CertStore>);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.current.load();
        set.select(hello.server_name()).map(|e| e.served())
    }
}
