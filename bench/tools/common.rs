// Shared by the benchmark tools: a rustls client config trusting one CA file.
#![allow(dead_code)] // Each tool uses part of it.

use std::sync::Arc;

pub fn tls_config(ca: &str, h2: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read the CA file") {
        roots
            .add(c.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let mut c = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(c)
}

/// `--name value` from the command line, or the default.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}
