//! Development certificates: a local CA (`dev-ca.pem`) and a `localhost` leaf signed by it,
//! generated on first run in `development` mode when the certificate folder has no pair. The
//! CA's private key is never written, so the CA can sign nothing else after this run.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

pub const DEV_CA_FILE: &str = "dev-ca.pem";

/// Why the development certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("{}: cannot create: {source}", dir.display())]
    Folder {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("generating development certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Generates the development CA and `localhost` leaf into `dir`. Returns the CA path.
pub fn generate_dev_certs(dir: &Path) -> Result<PathBuf, DevCertError> {
    generate_dev_certs_for(dir, &[])
}

/// Generates a development CA and a leaf for `localhost`, the loopback addresses and `names`
/// (host names or IP addresses) into `dir` (the pair is `localhost.crt`/`.key`). Returns the CA
/// path.
pub fn generate_dev_certs_for(dir: &Path, names: &[&str]) -> Result<PathBuf, DevCertError> {
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Folder {
        dir: dir.to_path_buf(),
        source,
    })?;
    let err = DevCertError::Generate;

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "Portcullis Development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;

    let leaf_key = KeyPair::generate().map_err(err)?;
    let mut dns = vec!["localhost".to_string()];
    let mut ips: Vec<std::net::IpAddr> = vec![
        "127.0.0.1".parse().expect("literal"),
        "::1".parse().expect("literal"),
    ];
    for n in names {
        match n.parse::<std::net::IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns.iter().any(|d| d == n) => dns.push(n.to_string()),
            Err(_) => {}
        }
    }
    let mut leaf = CertificateParams::new(dns).map_err(err)?;
    for ip in ips {
        leaf.subject_alt_names.push(SanType::IpAddress(ip));
    }
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Within the 398-day limit browsers enforce, so the leaf works beyond curl too.
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(397);
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(err)?;

    let io = |p: &Path, source: std::io::Error| DevCertError::Write {
        path: p.to_path_buf(),
        source,
    };
    let ca_path = dir.join(DEV_CA_FILE);
    let key_path = dir.join("localhost.key");
    let crt_path = dir.join("localhost.crt");
    crate::files::write_atomic(&key_path, leaf_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| io(&key_path, e))?;
    crate::files::write_atomic(&crt_path, leaf_cert.pem().as_bytes(), 0o644)
        .map_err(|e| io(&crt_path, e))?;
    crate::files::write_atomic(&ca_path, ca_cert.pem().as_bytes(), 0o644)
        .map_err(|e| io(&ca_path, e))?;
    Ok(ca_path)
}
