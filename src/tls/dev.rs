//! Development certificates: a local CA (`dev-ca.pem`) and a `localhost` leaf signed by it,
//! generated on first run in `development` mode when the certificate folder has no pair. The
//! CA's private key is never written, so the CA can sign nothing else after this run.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

pub const DEV_CA_FILE: &str = "dev-ca.pem";

/// Writes `path` with `mode`, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Generates the development CA and `localhost` leaf into `dir`. Returns the CA path.
pub fn generate_dev_certs(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let err = |e: rcgen::Error| format!("generating development certificates: {e}");

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
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).map_err(err)?;
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("literal")));
    leaf.subject_alt_names
        .push(SanType::IpAddress("::1".parse().expect("literal")));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Within the 398-day limit browsers enforce, so the leaf works beyond curl too.
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(397);
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(err)?;

    let io = |p: &Path, e: std::io::Error| format!("{}: cannot write: {e}", p.display());
    let ca_path = dir.join(DEV_CA_FILE);
    let key_path = dir.join("localhost.key");
    let crt_path = dir.join("localhost.crt");
    write_private(&key_path, leaf_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| io(&key_path, e))?;
    write_private(&crt_path, leaf_cert.pem().as_bytes(), 0o644).map_err(|e| io(&crt_path, e))?;
    write_private(&ca_path, ca_cert.pem().as_bytes(), 0o644).map_err(|e| io(&ca_path, e))?;
    Ok(ca_path)
}
