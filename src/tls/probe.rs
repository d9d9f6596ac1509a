//! The readiness probe: a real TLS handshake against our own HTTPS listener, trusting exactly the
//! certificates the store serves (pinned by their DER bytes). Readiness then means "the listener
//! completes handshakes", and the probe leaves no handshake error in the log.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::CertStore;

#[derive(Debug)]
struct PinnedToStore {
    store: Arc<CertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedToStore {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let set = self.store.snapshot();
        let ours = set.entries.iter().any(|e| {
            e.key
                .end_entity_cert()
                .is_ok_and(|c| c.as_ref() == end_entity.as_ref())
        });
        if ours {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not a certificate this gateway serves".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Completes one TLS handshake with the listener at `addr`.
pub async fn handshake_ok(addr: SocketAddr, store: Arc<CertStore>) -> bool {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedToStore { store, provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let name = ServerName::IpAddress(addr.ip().into());
    match connector.connect(name, tcp).await {
        Ok(mut tls) => {
            use tokio::io::AsyncWriteExt;
            let _ = tls.shutdown().await;
            true
        }
        Err(_) => false,
    }
}
