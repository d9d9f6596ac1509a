//! ACME challenges: the answers of open orders (`http-01` and `tls-alpn-01`), shared with
//! replicas through the storage folder, and the `tls-alpn-01` handshake before Pingora's TLS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;

use super::storage::{lock, write_private};

/// The ALPN protocol of `tls-alpn-01` (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Challenge answers the ACME server is about to fetch. Each is also written under
/// `<storage>/challenges/`, so a replica sharing the folder answers for an order another placed
/// (the validation may reach any replica behind the load balancer).
pub struct Challenges {
    dir: PathBuf,
    /// With shared storage: answers other replicas published in Redis.
    shared: Arc<super::shared::SharedAcme>,
    /// `http-01`: token → key authorization.
    http01: Mutex<HashMap<String, String>>,
    /// `tls-alpn-01`: name → self-signed certificate carrying the key authorization digest.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

/// Safe as a file name: what tokens (base64url) and host names are made of, no leading dot.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Challenges {
    pub fn new(storage: &Path, shared: Arc<super::shared::SharedAcme>) -> Challenges {
        Challenges {
            dir: storage.join("challenges"),
            shared,
            http01: Mutex::new(HashMap::new()),
            alpn: Mutex::new(HashMap::new()),
        }
    }

    /// The key authorization for an `http-01` token, while its order (ours or a replica's) is
    /// open.
    pub fn http01(&self, token: &str) -> Option<String> {
        if let Some(k) = lock(&self.http01).get(token) {
            return Some(k.clone());
        }
        if !plain_name(token) {
            return None;
        }
        std::fs::read_to_string(self.dir.join("http-01").join(token)).ok()
    }

    /// As [`Challenges::http01`], and with shared storage also the answers of orders other
    /// replicas placed.
    pub async fn http01_anywhere(&self, token: &str) -> Option<String> {
        if let Some(k) = self.http01(token) {
            return Some(k);
        }
        if !self.shared.is_attached() || !plain_name(token) {
            return None;
        }
        self.shared
            .get(&format!("http-01:{token}"))
            .await
            .ok()
            .flatten()
    }

    /// The `tls-alpn-01` certificate for `name`, while its order (ours or a replica's) is open.
    fn alpn_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(c) = lock(&self.alpn).get(name) {
            return Some(c.clone());
        }
        if !plain_name(name) {
            return None;
        }
        let hex = std::fs::read_to_string(self.dir.join("tls-alpn-01").join(name)).ok()?;
        let digest: Vec<u8> = (0..hex.trim().len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        if digest.len() != 32 {
            return None;
        }
        alpn_challenge_cert(name, &digest).ok()
    }
}

/// Removes an order's challenge answers (in memory and in the folder) when the order ends,
/// however it ends.
pub(super) struct Published<'a> {
    pub(super) challenges: &'a Challenges,
    pub(super) files: Vec<PathBuf>,
    pub(super) tokens: Vec<String>,
    pub(super) names: Vec<String>,
}

impl Published<'_> {
    pub(super) fn http01(
        &mut self,
        token: String,
        key_authorization: String,
    ) -> Result<(), String> {
        let path = self.challenges.dir.join("http-01").join(&token);
        if plain_name(&token) {
            write_private(&path, key_authorization.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            self.files.push(path);
        }
        lock(&self.challenges.http01).insert(token.clone(), key_authorization);
        self.tokens.push(token);
        Ok(())
    }

    pub(super) fn alpn(&mut self, name: String, digest: &[u8]) -> Result<(), String> {
        let path = self.challenges.dir.join("tls-alpn-01").join(&name);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, hex.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        self.files.push(path);
        let cert = alpn_challenge_cert(&name, digest)?;
        lock(&self.challenges.alpn).insert(name.clone(), cert);
        self.names.push(name);
        Ok(())
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let mut h = lock(&self.challenges.http01);
        for t in &self.tokens {
            h.remove(t);
        }
        drop(h);
        let mut a = lock(&self.challenges.alpn);
        for n in &self.names {
            a.remove(n);
        }
    }
}

/// The self-signed certificate that answers a `tls-alpn-01` challenge (RFC 8737 §3).
fn alpn_challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The certificate resolver for `tls-alpn-01` handshakes.
#[derive(Debug)]
struct ChallengeResolver(Arc<Challenges>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.alpn_cert(hello.server_name()?)
    }
}

/// Answers `tls-alpn-01` validation handshakes on the HTTPS listener, before Pingora's own
/// handshake: it looks at each ClientHello (already read and put back by the connection caps,
/// so this costs a copy), and one that offers only `acme-tls/1` is completed here with the
/// challenge certificate of an open order (ours or a replica's) and closed. Pingora's TLS
/// settings cannot offer `acme-tls/1` beside `h2` and `http/1.1`, hence the separate handshake.
pub struct AlpnChallenges {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl AlpnChallenges {
    pub fn new(challenges: Arc<Challenges>) -> Result<AlpnChallenges, rustls::Error> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ChallengeResolver(challenges)));
        cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(AlpnChallenges {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        })
    }

    /// True when the connection was a validation handshake, answered here; the caller drops it.
    pub async fn answer(&self, stream: &mut L4Stream) -> bool {
        // The connection caps have read the ClientHello and put it back; read it again.
        let (hello, len) = crate::observability::handshakes::peek_first_record(stream).await;
        let offered = len.is_some_and(|l| offers_only_acme_alpn(&hello[..l]) == Some(true));
        if !offered {
            return false;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(&mut *stream)).await
        {
            Ok(Ok(mut tls)) => {
                tracing::info!(target: "portcullis::tls", sni = ?tls.get_ref().1.server_name(), "ACME: answered a tls-alpn-01 validation");
                let _ = tls.shutdown().await;
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "portcullis::tls", error = %e, "ACME: tls-alpn-01 validation handshake failed")
            }
            Err(_) => {}
        }
        true
    }
}

/// Whether a ClientHello (the start of the stream) offers exactly ALPN `acme-tls/1`, as
/// validators do (RFC 8737 §3). `None` while the record is incomplete.
pub fn offers_only_acme_alpn(b: &[u8]) -> Option<bool> {
    if b.len() < 5 {
        return None;
    }
    if b[0] != 22 {
        return Some(false);
    }
    let len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if b.len() < 5 + len {
        return None;
    }
    Some(
        crate::observability::handshakes::alpn_from_record(&b[..5 + len])
            .is_some_and(|list| list == [ACME_TLS_ALPN]),
    )
}

/// The pre-TLS hook of the HTTPS listener: connection caps, then `tls-alpn-01` answers.
pub struct PreTls {
    pub caps: crate::connections::ConnectionCaps,
    pub acme: Option<AlpnChallenges>,
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.caps.process(stream).await?;
        if let Some(a) = &self.acme {
            if a.answer(stream).await {
                return pingora::Error::e_explain(
                    pingora::ErrorType::HandshakeError,
                    "ACME tls-alpn-01 validation answered",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello from rustls offering `alpn`, as bytes on the wire.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(cfg), "a.example".try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn only_a_hello_offering_just_acme_tls_is_a_validation() {
        let acme = client_hello(&[ACME_TLS_ALPN]);
        assert_eq!(offers_only_acme_alpn(&acme), Some(true));
        assert_eq!(offers_only_acme_alpn(&acme[..acme.len() - 1]), None);
        assert_eq!(offers_only_acme_alpn(&acme[..3]), None);
        let both = client_hello(&[b"h2", ACME_TLS_ALPN]);
        assert_eq!(offers_only_acme_alpn(&both), Some(false));
        assert_eq!(
            offers_only_acme_alpn(&client_hello(&[b"h2", b"http/1.1"])),
            Some(false)
        );
        assert_eq!(offers_only_acme_alpn(&client_hello(&[])), Some(false));
        assert_eq!(offers_only_acme_alpn(b"GET / HTTP/1.1\r\n"), Some(false));
    }

    #[test]
    fn garbage_after_a_record_header_is_not_a_validation() {
        for n in 0..200u8 {
            let mut b = vec![22, 3, 1, 0, n];
            b.extend(std::iter::repeat_n(n, n as usize));
            assert_ne!(offers_only_acme_alpn(&b), Some(true));
        }
    }
}
