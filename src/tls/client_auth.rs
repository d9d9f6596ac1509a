//! Client certificates (mTLS). The listener's verifier follows the live policy: it asks for a
//! certificate only while the policy has an `[mtls]` CA bundle, verifies against that bundle
//! (and its CRLs), and demands one only when `[mtls] required = true`; routes decide the rest
//! (`auth = "mtls"`, `client_cert_allow`). After the handshake the verified certificate's
//! SHA-256 fingerprint, subject and SANs are kept with the connection for the request phase.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::auth::{Identity, Provider};
pub use crate::policy::specs::{AllowEntry, MtlsSettings};
use crate::policy::PolicyStore;

/// What a finished handshake tells the request phase.
#[derive(Debug)]
pub struct HandshakeInfo {
    pub sni: Option<Box<str>>,
    pub version: &'static str,
    /// The verified client certificate's identity, when one was presented.
    pub client: Option<Arc<ClientCert>>,
    /// The connection's client certificate as the live policy sees it (shared with the
    /// WebSocket tunnels opened on the connection, which a reload re-checks).
    pub cert: Arc<CertCheck>,
}

/// A connection's client certificate chain, checked again against the live `[mtls]` settings:
/// after the CA bundle or CRLs change (a resumed session skips the verifier, and a long-lived
/// connection outlives any reload), once `required` is switched on for a connection without
/// one, and once the certificate expires while the connection stays open.
#[derive(Debug)]
pub struct CertCheck {
    /// Leaf first; empty when the client presented no certificate.
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's notAfter, in Unix seconds.
    not_after: i64,
    /// The `MtlsSettings::id` the chain last passed; `UNCHECKED` before the first check,
    /// `FAILED` for good once a check failed (the connection is being closed).
    state: AtomicU64,
}

const UNCHECKED: u64 = 0;
const FAILED: u64 = u64::MAX;

impl CertCheck {
    pub fn new(chain: Vec<CertificateDer<'static>>) -> CertCheck {
        let not_after = chain.first().map_or(i64::MAX, |leaf| {
            // A chain the verifier accepted parses; should it not, the expiry is left to the
            // verifier's own check on the next bundle change.
            x509_parser::parse_x509_certificate(leaf.as_ref())
                .map_or(i64::MAX, |(_, c)| c.validity().not_after.timestamp())
        });
        CertCheck {
            chain,
            not_after,
            state: AtomicU64::new(UNCHECKED),
        }
    }

    /// A chain the listener's verifier accepted during this handshake under `mtls_id`: the
    /// first request needs no second verification.
    fn verified_under(self, mtls_id: u64) -> CertCheck {
        self.state.store(mtls_id, Ordering::Relaxed);
        self
    }

    /// Whether the connection may still be served under `mtls` (the live `[mtls]`): its
    /// certificate verified against the current CA bundle and CRLs (once per change of them),
    /// not expired, and present if certificates are now required. `Err` says why not; a
    /// failure is kept, so later requests on the connection pay no verification.
    pub fn check(&self, mtls: Option<&MtlsSettings>, now_unix: i64) -> Result<(), &'static str> {
        let state = self.state.load(Ordering::Acquire);
        if state == FAILED {
            return Err("client certificate already refused on this connection");
        }
        let Some((leaf, intermediates)) = self.chain.split_first() else {
            return match mtls {
                Some(m) if m.required => self.fail("client certificate now required"),
                _ => Ok(()),
            };
        };
        let Some(m) = mtls else {
            return self.fail("client certificates are no longer configured");
        };
        if now_unix > self.not_after {
            return self.fail("client certificate has expired");
        }
        if state == m.id {
            return Ok(());
        }
        if m.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_err()
        {
            return self.fail("client certificate no longer passes the CA bundle or CRLs");
        }
        self.state.store(m.id, Ordering::Release);
        Ok(())
    }

    fn fail(&self, why: &'static str) -> Result<(), &'static str> {
        self.state.store(FAILED, Ordering::Release);
        Err(why)
    }
}

#[derive(Debug)]
pub struct ClientCert {
    /// Lower-case hex SHA-256 of the leaf certificate (DER).
    pub sha256: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// DNS, URI, e-mail and IP subject alternative names, as text.
    pub sans: Vec<String>,
    /// The identity a route with `auth = "mtls"` gives the request.
    pub identity: Arc<Identity>,
}

impl ClientCert {
    pub fn from_der(der: &[u8]) -> ClientCert {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let (common_name, sans) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, c)) => {
                let cn = c
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|a| a.as_str().ok())
                    .map(str::to_string);
                let sans = c
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|ext| {
                        ext.value
                            .general_names
                            .iter()
                            .filter_map(|g| {
                                use x509_parser::extensions::GeneralName;
                                match g {
                                    GeneralName::DNSName(d) => Some(d.to_string()),
                                    GeneralName::URI(u) => Some(u.to_string()),
                                    GeneralName::RFC822Name(e) => Some(e.to_string()),
                                    GeneralName::IPAddress(ip) => match ip.len() {
                                        4 => Some(
                                            std::net::Ipv4Addr::from(
                                                <[u8; 4]>::try_from(*ip).unwrap_or_default(),
                                            )
                                            .to_string(),
                                        ),
                                        16 => Some(
                                            std::net::Ipv6Addr::from(
                                                <[u8; 16]>::try_from(*ip).unwrap_or_default(),
                                            )
                                            .to_string(),
                                        ),
                                        _ => None,
                                    },
                                    _ => None,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (cn, sans)
            }
            Err(_) => (None, Vec::new()),
        };
        let subject = sans
            .first()
            .cloned()
            .or_else(|| common_name.clone())
            .unwrap_or_else(|| format!("sha256:{sha256}"));
        let identity = Arc::new(Identity {
            subject: Arc::from(subject.as_str()),
            provider: Provider::Mtls,
            all_capabilities: false,
            capabilities: Arc::from(Vec::new()),
            room: None,
            expires_at: None,
            verified_by: Some(Arc::from(format!("sha256:{sha256}").as_str())),
            token_id: None,
            key_id: None,
        });
        ClientCert {
            sha256,
            common_name,
            sans,
            identity,
        }
    }

    /// Whether an allow-list entry (`sha256:HEX`, `san:NAME`, `cn:NAME`) names this certificate.
    pub fn matches(&self, entry: &AllowEntry) -> bool {
        match entry {
            AllowEntry::Sha256(h) => *h == self.sha256,
            AllowEntry::San(s) => self.sans.iter().any(|x| x.eq_ignore_ascii_case(s)),
            AllowEntry::Cn(c) => self.common_name.as_deref() == Some(c.as_str()),
        }
    }
}

/// Leaves the listener's verifier has just accepted, each with the `MtlsSettings::id` it
/// accepted it under, until the handshake callback takes them: the first request of a full
/// handshake then needs no second verification (a resumed session never meets the verifier and
/// finds nothing here). The verifier has no per-connection state, so leaves are matched by
/// their SHA-256: two handshakes presenting the same leaf at once may take each other's entry,
/// which that same leaf has just passed. Bounded: entries left by handshakes that failed after
/// the verifier are dropped when it fills.
#[derive(Debug, Default)]
pub struct JustVerified(Mutex<HashMap<[u8; 32], u64>>);

const JUST_VERIFIED_MAX: usize = 4096;

fn leaf_key(leaf: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, leaf).as_ref());
    k
}

impl JustVerified {
    fn put(&self, leaf: &[u8], mtls_id: u64) {
        let k = leaf_key(leaf);
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= JUST_VERIFIED_MAX && !m.contains_key(&k) {
                m.clear();
            }
            m.insert(k, mtls_id);
        }
    }

    fn take(&self, leaf: &[u8]) -> Option<u64> {
        let k = leaf_key(leaf);
        self.0.lock().ok()?.remove(&k)
    }
}

/// Keeps SNI, version and the client certificate with the connection.
pub struct HandshakeCallbacks {
    /// Shared with the listener's `PolicyClientVerifier`.
    pub verified: Arc<JustVerified>,
}

#[async_trait]
impl TlsAccept for HandshakeCallbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let info = HandshakeInfo {
            sni: tls.server_name().map(Into::into),
            version: tls.version().unwrap_or(""),
            client: tls
                .peer_certificate_der()
                .map(|der| Arc::new(ClientCert::from_der(der))),
            cert: Arc::new({
                let chain = tls
                    .peer_cert_chain_der()
                    .map(<[_]>::to_vec)
                    .unwrap_or_default();
                let verified = chain.first().and_then(|leaf| self.verified.take(leaf));
                let check = CertCheck::new(chain);
                match verified {
                    Some(id) => check.verified_under(id),
                    None => check,
                }
            }),
        };
        Some(Arc::new(info))
    }
}

/// The handshake information of a request's connection.
pub fn handshake_info(session: &pingora::proxy::Session) -> Option<&HandshakeInfo> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<HandshakeInfo>())
}

/// The listener's client-certificate verifier, following the live policy.
#[derive(Debug)]
pub struct PolicyClientVerifier {
    pub store: Arc<PolicyStore>,
    pub provider: Arc<rustls::crypto::CryptoProvider>,
    /// Shared with the listener's `HandshakeCallbacks`.
    pub verified: Arc<JustVerified>,
}

impl ClientCertVerifier for PolicyClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.store.snapshot().mtls.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.store
            .snapshot()
            .mtls
            .as_ref()
            .is_some_and(|m| m.required)
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would have to outlive the policy generation; an empty list lets the client
        // offer any certificate, which is then verified against the current bundle.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.store.snapshot().mtls {
            Some(m) => {
                let verified = m
                    .verifier
                    .verify_client_cert(end_entity, intermediates, now)?;
                self.verified.put(end_entity, m.id);
                Ok(verified)
            }
            None => Err(rustls::Error::General(
                "client certificates are not configured".into(),
            )),
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

/// The `MtlsSettings::id` of a CA bundle and its CRLs.
pub fn bundle_id(ca_pem: &[u8], crl_pems: &[Vec<u8>]) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(ca_pem.len() as u64).to_be_bytes());
    ctx.update(ca_pem);
    for c in crl_pems {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c);
    }
    let d = ctx.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(id).clamp(1, FAILED - 1)
}

impl std::fmt::Debug for MtlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsSettings")
            .field("required", &self.required)
            .finish()
    }
}

/// Why a CA bundle and CRLs do not make a client-certificate verifier.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("CA bundle: {0}")]
    CaPem(rustls::pki_types::pem::Error),
    #[error("CA bundle: unusable certificate: {0}")]
    CaCertificate(rustls::Error),
    #[error("CA bundle: no certificates")]
    NoCertificates,
    #[error("CRL: {0}")]
    CrlPem(rustls::pki_types::pem::Error),
    #[error("cannot build the client verifier: {0}")]
    Build(rustls::server::VerifierBuilderError),
}

/// Builds the verifier for a CA bundle and CRLs (PEM bytes).
pub fn build_verifier(
    ca_pem: &[u8],
    crl_pems: &[Vec<u8>],
) -> Result<Arc<dyn ClientCertVerifier>, VerifierError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(VerifierError::CaPem)?;
        roots.add(c).map_err(VerifierError::CaCertificate)?;
    }
    if roots.is_empty() {
        return Err(VerifierError::NoCertificates);
    }
    let mut crls = Vec::new();
    for pem in crl_pems {
        for c in rustls::pki_types::CertificateRevocationListDer::pem_slice_iter(pem) {
            crls.push(c.map_err(VerifierError::CrlPem)?);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls)
        .allow_unauthenticated()
        .build()
        .map_err(VerifierError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse() {
        let h = "AB:".repeat(31) + "AB";
        assert_eq!(
            AllowEntry::parse(&format!("sha256:{h}")).unwrap(),
            AllowEntry::Sha256("ab".repeat(32))
        );
        assert_eq!(
            AllowEntry::parse("san:agent-1.internal").unwrap(),
            AllowEntry::San("agent-1.internal".into())
        );
        assert!(AllowEntry::parse("sha256:abc").is_err());
        assert!(AllowEntry::parse("agent").is_err());
        assert!(AllowEntry::parse("san:").is_err());
    }

    /// A CA and a client leaf it signed: (CA PEM, leaf DER).
    fn ca_and_leaf() -> (String, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["agent.internal".to_string()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = p.signed_by(&key, &ca, &ca_key).unwrap();
        (ca.pem(), leaf.der().clone())
    }

    fn settings(ca_pem: &str) -> MtlsSettings {
        MtlsSettings {
            verifier: build_verifier(ca_pem.as_bytes(), &[]).unwrap(),
            required: false,
            id: bundle_id(ca_pem.as_bytes(), &[]),
        }
    }

    #[test]
    fn a_chain_the_handshake_verified_is_not_verified_again_until_the_bundle_changes() {
        let (ca, leaf) = ca_and_leaf();
        let (other_ca, _) = ca_and_leaf();
        // A bundle that would refuse the leaf, named as the one the handshake passed it under:
        // the first request trusts the handshake and verifies nothing.
        let stale = settings(&other_ca);
        let handshake = CertCheck::new(vec![leaf.clone()]).verified_under(stale.id);
        assert_eq!(handshake.check(Some(&stale), 0), Ok(()));
        // Without that stamp (a resumed session), the same request verifies, and fails.
        let resumed = CertCheck::new(vec![leaf.clone()]);
        assert!(resumed.check(Some(&stale), 0).is_err());
        // ... and keeps failing without verifying again, even under a bundle it would pass.
        assert!(resumed.check(Some(&settings(&ca)), 0).is_err());
        // A changed bundle verifies again.
        let fresh = CertCheck::new(vec![leaf]).verified_under(stale.id);
        assert_eq!(fresh.check(Some(&settings(&ca)), 0), Ok(()));
    }

    #[test]
    fn the_verifier_hands_each_leaf_to_its_own_handshake_once() {
        let (_, leaf) = ca_and_leaf();
        let (_, other) = ca_and_leaf();
        let v = JustVerified::default();
        v.put(leaf.as_ref(), 7);
        assert_eq!(v.take(other.as_ref()), None);
        assert_eq!(v.take(leaf.as_ref()), Some(7));
        assert_eq!(v.take(leaf.as_ref()), None);
    }
}
