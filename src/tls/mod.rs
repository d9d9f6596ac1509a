//! TLS termination: the certificate store and SNI resolver (hot: the folder is watched),
//! development certificate generation, client-certificate verification (mTLS), and OCSP request building and response verification (`ocsp`) under the stapler
//! (`stapler`), and automatic certificates over ACME (`acme`). Must not make routing or
//! authentication decisions.

pub mod acme;
pub mod client_auth;
pub mod dev;
pub mod ocsp;
pub mod probe;
pub mod stapler;
pub mod store;

pub use store::{CertError, CertResolver, CertSet, CertStore};

/// Makes rustls use ring, the provider Pingora's rustls integration is built on. Idempotent.
pub fn install_crypto_provider() {
    install_crypto_provider_for(crate::config::TlsVersion::V12);
}

/// Installs ring as the process-wide provider; for a TLS 1.3 floor, with TLS 1.3 cipher suites
/// only. Pingora fixes the protocol versions at 1.2 + 1.3 when it builds its TLS configs, so the
/// provider's suites are what decide: with no 1.2 suite, a TLS 1.2 handshake (client or server
/// side) finds nothing in common and fails. Call before anything builds a TLS config.
pub fn install_crypto_provider_for(min: crate::config::TlsVersion) {
    let mut provider = rustls::crypto::ring::default_provider();
    if min == crate::config::TlsVersion::V13 {
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
    }
    let _ = provider.install_default();
}
