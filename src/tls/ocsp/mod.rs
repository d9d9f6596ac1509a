//! OCSP (RFC 6960) for stapling: the responder URL from a certificate's Authority Information
//! Access, the DER request to send there, and the verification of the responder's answer.
//!
//! Pure and I/O-free: fetching, caching and the clock belong to the caller, which passes `now`.
//! DER is read with the `asn1-rs` parser that `x509-parser` re-exports; the request is small and
//! fixed in shape, so it is encoded here by hand. Signatures are checked with `ring`.
//!
//! What [`verify_response`] accepts:
//! - `responseStatus` successful and a `id-pkix-ocsp-basic` response;
//! - a `SingleResponse` whose CertID names this certificate: same serial, and issuer name and key
//!   hashes that match the issuer under the CertID's own hash (SHA-1, SHA-256, SHA-384, SHA-512);
//! - a signature by the issuer itself, or by a delegated responder whose certificate is included
//!   in the response, was issued (and signed) by the issuer, carries the `id-kp-OCSPSigning`
//!   extended key usage and is within its validity at `now`. The responder is the one the
//!   `responderID` names (by subject name, compared byte for byte, or by SHA-1 key hash);
//! - signature algorithms sha256/384/512WithRSAEncryption (2048 to 8192-bit keys),
//!   ecdsa-with-SHA256/384 on P-256 or P-384, and Ed25519. SHA-1 and RSA-PSS signatures are
//!   refused as unsupported;
//! - `thisUpdate <= now + skew` and, when `nextUpdate` is present, `nextUpdate > now - skew`,
//!   with `skew` = [`CLOCK_SKEW_SECS`] unless [`verify_response_with_skew`] is used. A response
//!   without `nextUpdate` has no expiry of its own: the caller decides how long to keep it.
//!
//! Not checked: nonces (stapled responses carry none) and `producedAt` beyond reporting it.

use std::borrow::Cow;

use ring::digest;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{oid, Any, Class, FromDer, Header, Oid, Tag};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
use x509_parser::x509::SubjectPublicKeyInfo;

/// How far the responder's clock and ours may disagree, in seconds, when checking `thisUpdate`
/// and `nextUpdate` (and a delegated responder certificate's validity).
pub const CLOCK_SKEW_SECS: i64 = 300;

const OID_OCSP_BASIC: &[u8] = &oid!(raw 1.3.6.1.5.5.7.48.1.1);
const OID_SHA1: &[u8] = &oid!(raw 1.3.14.3.2.26);
const OID_SHA256: &[u8] = &oid!(raw 2.16.840.1.101.3.4.2.1);
const OID_SHA384: &[u8] = &oid!(raw 2.16.840.1.101.3.4.2.2);
const OID_SHA512: &[u8] = &oid!(raw 2.16.840.1.101.3.4.2.3);
const OID_RSA_ENCRYPTION: &[u8] = &oid!(raw 1.2.840.113549.1.1.1);
const OID_SHA256_WITH_RSA: &[u8] = &oid!(raw 1.2.840.113549.1.1.11);
const OID_SHA384_WITH_RSA: &[u8] = &oid!(raw 1.2.840.113549.1.1.12);
const OID_SHA512_WITH_RSA: &[u8] = &oid!(raw 1.2.840.113549.1.1.13);
const OID_EC_PUBLIC_KEY: &[u8] = &oid!(raw 1.2.840.10045.2.1);
const OID_P256: &[u8] = &oid!(raw 1.2.840.10045.3.1.7);
const OID_P384: &[u8] = &oid!(raw 1.3.132.0.34);
const OID_ECDSA_SHA256: &[u8] = &oid!(raw 1.2.840.10045.4.3.2);
const OID_ECDSA_SHA384: &[u8] = &oid!(raw 1.2.840.10045.4.3.3);
const OID_ED25519: &[u8] = &oid!(raw 1.3.101.112);

/// Why an OCSP request could not be built or a response was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("the {which} certificate does not parse: {message}")]
    BadCertificate {
        which: &'static str,
        message: String,
    },
    #[error("the certificate's issuer name is not the issuer certificate's subject")]
    IssuerMismatch,
    #[error("malformed OCSP response: cannot read {0}")]
    Malformed(&'static str),
    #[error("the OCSP responder answered {} ({status}) instead of successful", status_name(*.status))]
    NotSuccessful { status: u32 },
    #[error("unsupported OCSP response type {0} (only id-pkix-ocsp-basic is understood)")]
    UnsupportedResponseType(String),
    #[error("the OCSP response has no status for this certificate (no CertID matches its serial and issuer)")]
    NoMatchingResponse,
    #[error("the OCSP response signature does not verify under the responder's key")]
    BadSignature,
    #[error("the OCSP response is signed by an untrusted responder: {0}")]
    UntrustedResponder(String),
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("the OCSP response is not yet valid: thisUpdate {this_update} is after now {now} (allowing {skew}s of clock skew)")]
    NotYetValid {
        this_update: i64,
        now: i64,
        skew: i64,
    },
    #[error("the OCSP response has expired: nextUpdate {next_update} is before now {now} (allowing {skew}s of clock skew)")]
    Expired {
        next_update: i64,
        now: i64,
        skew: i64,
    },
}

fn status_name(status: u32) -> &'static str {
    match status {
        0 => "successful",
        1 => "malformedRequest",
        2 => "internalError",
        3 => "tryLater",
        5 => "sigRequired",
        6 => "unauthorized",
        _ => "an unknown status",
    }
}

/// The revocation status the responder gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    /// `revoked_at` is the revocation time, in seconds since the epoch.
    Revoked {
        revoked_at: i64,
    },
    Unknown,
}

/// A response that parsed, matched the certificate, was signed by a trusted responder and is
/// current. Times are seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub status: CertStatus,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub produced_at: i64,
}

/// The OCSP responder URL from the certificate's Authority Information Access (the first
/// `http://` one), if any. A certificate that does not parse has none.
pub fn responder_url(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let url = cert
        .iter_extensions()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => Some(aia),
            _ => None,
        })
        .flat_map(|aia| aia.accessdescs.iter())
        .filter(|desc| desc.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP)
        .find_map(|desc| match desc.access_location {
            GeneralName::URI(uri) if uri.len() > 7 && uri[..7].eq_ignore_ascii_case("http://") => {
                Some(uri.to_owned())
            }
            _ => None,
        });
    url
}

/// A DER OCSPRequest for `cert` issued by `issuer`: one CertID with SHA-1 issuerNameHash and
/// issuerKeyHash (over the issuer's subject DER and its subjectPublicKey BIT STRING contents) and
/// the certificate's serial; no nonce, no signature. Byte for byte what
/// `openssl ocsp -issuer I -cert C -no_nonce -reqout` writes.
pub fn build_request(cert_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>, OcspError> {
    let (cert, issuer) = parse_pair(cert_der, issuer_der)?;
    let hash = &digest::SHA1_FOR_LEGACY_USE_ONLY;
    let hash_algorithm = tlv(
        TAG_SEQUENCE,
        &[tlv(TAG_OID, OID_SHA1), tlv(TAG_NULL, &[])].concat(),
    );
    let cert_id = tlv(
        TAG_SEQUENCE,
        &[
            hash_algorithm,
            tlv(TAG_OCTET_STRING, name_hash(hash, &issuer).as_ref()),
            tlv(
                TAG_OCTET_STRING,
                key_hash(hash, issuer.public_key()).as_ref(),
            ),
            tlv(TAG_INTEGER, cert.raw_serial()),
        ]
        .concat(),
    );
    let request = tlv(TAG_SEQUENCE, &cert_id);
    let request_list = tlv(TAG_SEQUENCE, &request);
    let tbs_request = tlv(TAG_SEQUENCE, &request_list);
    Ok(tlv(TAG_SEQUENCE, &tbs_request))
}

/// Parses and verifies a DER OCSPResponse for `cert`/`issuer` at `now` (seconds since the epoch),
/// allowing [`CLOCK_SKEW_SECS`] of clock skew. See the module documentation for exactly what is
/// checked. Revoked and Unknown are `Ok`: the signature and times were verified all the same,
/// and the caller decides what to do with them.
pub fn verify_response(
    resp_der: &[u8],
    cert_der: &[u8],
    issuer_der: &[u8],
    now: i64,
) -> Result<Verified, OcspError> {
    verify_response_with_skew(resp_der, cert_der, issuer_der, now, CLOCK_SKEW_SECS)
}

/// [`verify_response`] with an explicit clock skew allowance, in seconds.
pub fn verify_response_with_skew(
    resp_der: &[u8],
    cert_der: &[u8],
    issuer_der: &[u8],
    now: i64,
    skew: i64,
) -> Result<Verified, OcspError> {
    let (cert, issuer) = parse_pair(cert_der, issuer_der)?;
    let basic = parse_response(resp_der)?;
    check_signature(&basic, &issuer, now, skew)?;
    let single = basic
        .responses
        .iter()
        .find(|single| single.cert_id.names(&cert, &issuer))
        .ok_or(OcspError::NoMatchingResponse)?;
    if single.this_update > now.saturating_add(skew) {
        return Err(OcspError::NotYetValid {
            this_update: single.this_update,
            now,
            skew,
        });
    }
    if let Some(next_update) = single.next_update {
        if next_update <= now.saturating_sub(skew) {
            return Err(OcspError::Expired {
                next_update,
                now,
                skew,
            });
        }
    }
    Ok(Verified {
        status: single.status,
        this_update: single.this_update,
        next_update: single.next_update,
        produced_at: basic.produced_at,
    })
}

fn parse_cert<'a>(der: &'a [u8], which: &'static str) -> Result<X509Certificate<'a>, OcspError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(OcspError::BadCertificate {
            which,
            message: "trailing data after the certificate".into(),
        }),
        Err(e) => Err(OcspError::BadCertificate {
            which,
            message: e.to_string(),
        }),
    }
}

fn parse_pair<'a>(
    cert_der: &'a [u8],
    issuer_der: &'a [u8],
) -> Result<(X509Certificate<'a>, X509Certificate<'a>), OcspError> {
    let cert = parse_cert(cert_der, "subject")?;
    let issuer = parse_cert(issuer_der, "issuer")?;
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(OcspError::IssuerMismatch);
    }
    Ok((cert, issuer))
}

fn name_hash(alg: &'static digest::Algorithm, issuer: &X509Certificate) -> digest::Digest {
    digest::digest(alg, issuer.subject().as_raw())
}

fn key_hash(alg: &'static digest::Algorithm, spki: &SubjectPublicKeyInfo) -> digest::Digest {
    digest::digest(alg, &spki.subject_public_key.data)
}

fn oid_display(oid: &[u8]) -> String {
    let oid = Oid::new(Cow::Borrowed(oid));
    let dotted = oid.to_id_string();
    match x509_parser::objects::oid2sn(&oid, x509_parser::objects::oid_registry()) {
        Ok(name) => format!("{name} ({dotted})"),
        Err(_) => dotted,
    }
}

// ---- DER encoding (the request) ----

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

// ---- DER decoding (the response) ----

/// A cursor over a run of DER elements.
#[derive(Clone, Copy)]
struct Der<'a> {
    rest: &'a [u8],
}

/// One element: its decoded header and contents, and its full encoding.
struct Element<'a> {
    any: Any<'a>,
    raw: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(input: &'a [u8]) -> Self {
        Der { rest: input }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn finish(&self, what: &'static str) -> Result<(), OcspError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(OcspError::Malformed(what))
        }
    }

    fn next(&mut self, what: &'static str) -> Result<Element<'a>, OcspError> {
        let (rem, any) = Any::from_der(self.rest).map_err(|_| OcspError::Malformed(what))?;
        let raw = &self.rest[..self.rest.len() - rem.len()];
        self.rest = rem;
        Ok(Element { any, raw })
    }

    fn next_is(&self, class: Class, tag: u32) -> bool {
        matches!(Header::from_der(self.rest), Ok((_, h)) if h.class() == class && h.tag().0 == tag)
    }

    fn universal(&mut self, tag: Tag, what: &'static str) -> Result<Element<'a>, OcspError> {
        let element = self.next(what)?;
        let constructed = element.any.header.is_constructed();
        let want_constructed = tag == Tag::Sequence;
        if element.any.class() != Class::Universal
            || element.any.tag() != tag
            || constructed != want_constructed
        {
            return Err(OcspError::Malformed(what));
        }
        Ok(element)
    }

    /// A SEQUENCE: a cursor over its elements, and its full encoding.
    fn sequence(&mut self, what: &'static str) -> Result<(Der<'a>, &'a [u8]), OcspError> {
        let element = self.universal(Tag::Sequence, what)?;
        Ok((Der::new(element.any.data), element.raw))
    }

    fn oid(&mut self, what: &'static str) -> Result<&'a [u8], OcspError> {
        Ok(self.universal(Tag::Oid, what)?.any.data)
    }

    fn octet_string(&mut self, what: &'static str) -> Result<&'a [u8], OcspError> {
        Ok(self.universal(Tag::OctetString, what)?.any.data)
    }

    /// A BIT STRING's bytes; signatures have no unused bits.
    fn bit_string(&mut self, what: &'static str) -> Result<&'a [u8], OcspError> {
        match self.universal(Tag::BitString, what)?.any.data {
            [0, bits @ ..] => Ok(bits),
            _ => Err(OcspError::Malformed(what)),
        }
    }

    fn generalized_time(&mut self, what: &'static str) -> Result<i64, OcspError> {
        let element = self.universal(Tag::GeneralizedTime, what)?;
        let time = element
            .any
            .generalizedtime()
            .and_then(|t| t.utc_datetime())
            .map_err(|_| OcspError::Malformed(what))?;
        Ok(time.unix_timestamp())
    }

    /// An optional `[n] EXPLICIT` element: a cursor over its contents when present.
    fn explicit(&mut self, n: u32, what: &'static str) -> Result<Option<Der<'a>>, OcspError> {
        if !self.next_is(Class::ContextSpecific, n) {
            return Ok(None);
        }
        let element = self.next(what)?;
        if !element.any.header.is_constructed() {
            return Err(OcspError::Malformed(what));
        }
        Ok(Some(Der::new(element.any.data)))
    }
}

enum ResponderId<'a> {
    /// The DER of the responder's subject name.
    ByName(&'a [u8]),
    /// SHA-1 of the responder's subjectPublicKey BIT STRING contents.
    ByKey(&'a [u8]),
}

impl ResponderId<'_> {
    fn identifies(&self, cert: &X509Certificate) -> bool {
        match self {
            ResponderId::ByName(name) => *name == cert.subject().as_raw(),
            ResponderId::ByKey(hash) => {
                *hash == key_hash(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert.public_key()).as_ref()
            }
        }
    }
}

struct CertId<'a> {
    hash_algorithm: &'a [u8],
    issuer_name_hash: &'a [u8],
    issuer_key_hash: &'a [u8],
    serial: &'a [u8],
}

impl CertId<'_> {
    fn names(&self, cert: &X509Certificate, issuer: &X509Certificate) -> bool {
        let alg = match self.hash_algorithm {
            OID_SHA1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            OID_SHA256 => &digest::SHA256,
            OID_SHA384 => &digest::SHA384,
            OID_SHA512 => &digest::SHA512,
            _ => return false,
        };
        same_integer(self.serial, cert.raw_serial())
            && self.issuer_name_hash == name_hash(alg, issuer).as_ref()
            && self.issuer_key_hash == key_hash(alg, issuer.public_key()).as_ref()
    }
}

/// Two INTEGER contents denote the same value, tolerating redundant leading zero bytes.
fn same_integer(a: &[u8], b: &[u8]) -> bool {
    fn trim(v: &[u8]) -> &[u8] {
        let zeros = v.iter().take_while(|&&b| b == 0).count();
        &v[zeros.min(v.len().saturating_sub(1))..]
    }
    trim(a) == trim(b)
}

struct SingleResponse<'a> {
    cert_id: CertId<'a>,
    status: CertStatus,
    this_update: i64,
    next_update: Option<i64>,
}

struct BasicResponse<'a> {
    /// The full DER of tbsResponseData: what the signature covers.
    tbs: &'a [u8],
    responder: ResponderId<'a>,
    produced_at: i64,
    responses: Vec<SingleResponse<'a>>,
    signature_algorithm: &'a [u8],
    signature: &'a [u8],
    /// The full DER of each included certificate.
    certs: Vec<&'a [u8]>,
}

fn parse_response(der: &[u8]) -> Result<BasicResponse<'_>, OcspError> {
    let mut top = Der::new(der);
    let (mut response, _) = top.sequence("OCSPResponse")?;
    top.finish("the end of OCSPResponse")?;
    let status = response
        .universal(Tag::Enumerated, "responseStatus")?
        .any
        .enumerated()
        .map_err(|_| OcspError::Malformed("responseStatus"))?
        .0;
    if status != 0 {
        return Err(OcspError::NotSuccessful { status });
    }
    let mut bytes = response
        .explicit(0, "responseBytes")?
        .ok_or(OcspError::Malformed("responseBytes"))?;
    response.finish("the end of OCSPResponse")?;
    let (mut response_bytes, _) = bytes.sequence("ResponseBytes")?;
    bytes.finish("responseBytes")?;
    let response_type = response_bytes.oid("responseType")?;
    let basic = response_bytes.octet_string("response")?;
    response_bytes.finish("ResponseBytes")?;
    if response_type != OID_OCSP_BASIC {
        return Err(OcspError::UnsupportedResponseType(oid_display(
            response_type,
        )));
    }
    parse_basic(basic)
}

fn parse_basic(der: &[u8]) -> Result<BasicResponse<'_>, OcspError> {
    let mut top = Der::new(der);
    let (mut basic, _) = top.sequence("BasicOCSPResponse")?;
    top.finish("the end of BasicOCSPResponse")?;

    let (mut data, tbs) = basic.sequence("tbsResponseData")?;
    if let Some(mut version) = data.explicit(0, "ResponseData version")? {
        let v = version.universal(Tag::Integer, "ResponseData version")?;
        if v.any.data != [0] {
            return Err(OcspError::Malformed(
                "ResponseData version (only v1 is defined)",
            ));
        }
        version.finish("ResponseData version")?;
    }
    let responder = if let Some(mut by_name) = data.explicit(1, "responderID")? {
        let (_, name) = by_name.sequence("responderID byName")?;
        by_name.finish("responderID byName")?;
        ResponderId::ByName(name)
    } else if let Some(mut by_key) = data.explicit(2, "responderID")? {
        let hash = by_key.octet_string("responderID byKey")?;
        by_key.finish("responderID byKey")?;
        ResponderId::ByKey(hash)
    } else {
        return Err(OcspError::Malformed("responderID"));
    };
    let produced_at = data.generalized_time("producedAt")?;
    let (mut list, _) = data.sequence("responses")?;
    let mut responses = Vec::new();
    while !list.is_empty() {
        let (single, _) = list.sequence("SingleResponse")?;
        responses.push(parse_single(single)?);
    }
    data.explicit(1, "responseExtensions")?;
    data.finish("the end of ResponseData")?;

    let (mut algorithm, _) = basic.sequence("signatureAlgorithm")?;
    let signature_algorithm = algorithm.oid("signatureAlgorithm")?;
    let signature = basic.bit_string("signature")?;
    let mut certs = Vec::new();
    if let Some(mut wrapper) = basic.explicit(0, "certs")? {
        let (mut list, _) = wrapper.sequence("certs")?;
        wrapper.finish("certs")?;
        while !list.is_empty() {
            let (_, cert) = list.sequence("certs entry")?;
            certs.push(cert);
        }
    }
    basic.finish("the end of BasicOCSPResponse")?;

    Ok(BasicResponse {
        tbs,
        responder,
        produced_at,
        responses,
        signature_algorithm,
        signature,
        certs,
    })
}

fn parse_single(mut single: Der<'_>) -> Result<SingleResponse<'_>, OcspError> {
    let (mut id, _) = single.sequence("CertID")?;
    let (mut algorithm, _) = id.sequence("CertID hashAlgorithm")?;
    let hash_algorithm = algorithm.oid("CertID hashAlgorithm")?;
    let issuer_name_hash = id.octet_string("CertID issuerNameHash")?;
    let issuer_key_hash = id.octet_string("CertID issuerKeyHash")?;
    let serial = id.universal(Tag::Integer, "CertID serialNumber")?.any.data;
    id.finish("CertID")?;

    let status = single.next("certStatus")?;
    if status.any.class() != Class::ContextSpecific {
        return Err(OcspError::Malformed("certStatus"));
    }
    let empty = !status.any.header.is_constructed() && status.any.data.is_empty();
    let status = match status.any.tag().0 {
        0 if empty => CertStatus::Good,
        1 if status.any.header.is_constructed() => {
            let mut info = Der::new(status.any.data);
            let revoked_at = info.generalized_time("revocationTime")?;
            info.explicit(0, "revocationReason")?;
            info.finish("RevokedInfo")?;
            CertStatus::Revoked { revoked_at }
        }
        2 if empty => CertStatus::Unknown,
        _ => return Err(OcspError::Malformed("certStatus")),
    };

    let this_update = single.generalized_time("thisUpdate")?;
    let next_update = match single.explicit(0, "nextUpdate")? {
        Some(mut next) => {
            let time = next.generalized_time("nextUpdate")?;
            next.finish("nextUpdate")?;
            Some(time)
        }
        None => None,
    };
    single.explicit(1, "singleExtensions")?;
    single.finish("the end of SingleResponse")?;

    Ok(SingleResponse {
        cert_id: CertId {
            hash_algorithm,
            issuer_name_hash,
            issuer_key_hash,
            serial,
        },
        status,
        this_update,
        next_update,
    })
}

// ---- signatures and the responder ----

enum SignatureFailure {
    Unsupported(String),
    Invalid,
}

/// Verifies `signature` over `message` under `spki` with the signature algorithm `algorithm`
/// (OID contents).
fn verify_signed(
    spki: &SubjectPublicKeyInfo,
    algorithm: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureFailure> {
    let key_type = spki.algorithm.algorithm.as_bytes();
    let rsa = |alg: &'static dyn VerificationAlgorithm| {
        if key_type == OID_RSA_ENCRYPTION {
            Ok(alg)
        } else {
            Err(SignatureFailure::Invalid)
        }
    };
    let verification: &'static dyn VerificationAlgorithm = match algorithm {
        OID_SHA256_WITH_RSA => rsa(&signature::RSA_PKCS1_2048_8192_SHA256)?,
        OID_SHA384_WITH_RSA => rsa(&signature::RSA_PKCS1_2048_8192_SHA384)?,
        OID_SHA512_WITH_RSA => rsa(&signature::RSA_PKCS1_2048_8192_SHA512)?,
        OID_ECDSA_SHA256 | OID_ECDSA_SHA384 => {
            if key_type != OID_EC_PUBLIC_KEY {
                return Err(SignatureFailure::Invalid);
            }
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .filter(|p| p.tag() == Tag::Oid)
                .map(|p| p.data)
                .unwrap_or_default();
            match (curve, algorithm) {
                (OID_P256, OID_ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
                (OID_P256, _) => &signature::ECDSA_P256_SHA384_ASN1,
                (OID_P384, OID_ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
                (OID_P384, _) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => {
                    return Err(SignatureFailure::Unsupported(format!(
                        "{} on curve {}",
                        oid_display(algorithm),
                        oid_display(curve)
                    )))
                }
            }
        }
        OID_ED25519 => {
            if key_type != OID_ED25519 {
                return Err(SignatureFailure::Invalid);
            }
            &signature::ED25519
        }
        other => return Err(SignatureFailure::Unsupported(oid_display(other))),
    };
    UnparsedPublicKey::new(verification, &spki.subject_public_key.data)
        .verify(message, signature)
        .map_err(|_| SignatureFailure::Invalid)
}

/// Finds the responder the response names, checks it may speak for `issuer`, and verifies the
/// response signature under its key.
fn check_signature(
    basic: &BasicResponse,
    issuer: &X509Certificate,
    now: i64,
    skew: i64,
) -> Result<(), OcspError> {
    let verify = |spki: &SubjectPublicKeyInfo| {
        verify_signed(spki, basic.signature_algorithm, basic.tbs, basic.signature).map_err(|e| {
            match e {
                SignatureFailure::Unsupported(alg) => OcspError::UnsupportedAlgorithm(alg),
                SignatureFailure::Invalid => OcspError::BadSignature,
            }
        })
    };
    if basic.responder.identifies(issuer) {
        return verify(issuer.public_key());
    }
    let mut refusal = None;
    for der in &basic.certs {
        let Ok((_, candidate)) = X509Certificate::from_der(der) else {
            continue;
        };
        if !basic.responder.identifies(&candidate) {
            continue;
        }
        match authorize_delegate(&candidate, issuer, now, skew) {
            Ok(()) => return verify(candidate.public_key()),
            Err(why) => refusal = Some(why),
        }
    }
    Err(OcspError::UntrustedResponder(refusal.unwrap_or_else(
        || "the responder is neither the issuer nor a certificate included in the response".into(),
    )))
}

/// Whether `responder` may sign OCSP responses for certificates of `issuer`: issued and signed by
/// it, with the OCSPSigning extended key usage, and valid at `now`.
fn authorize_delegate(
    responder: &X509Certificate,
    issuer: &X509Certificate,
    now: i64,
    skew: i64,
) -> Result<(), String> {
    let subject = responder.subject().to_string();
    if responder.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "responder certificate {subject} was issued by {}, not by {}",
            responder.issuer(),
            issuer.subject()
        ));
    }
    verify_signed(
        issuer.public_key(),
        responder.signature_algorithm.algorithm.as_bytes(),
        responder.tbs_certificate.as_ref(),
        &responder.signature_value.data,
    )
    .map_err(|e| match e {
        SignatureFailure::Unsupported(alg) => {
            format!("responder certificate {subject} is signed with unsupported {alg}")
        }
        SignatureFailure::Invalid => {
            format!("responder certificate {subject} is not signed by the issuer's key")
        }
    })?;
    match responder.extended_key_usage() {
        Ok(Some(eku)) if eku.value.ocsp_signing => {}
        _ => {
            return Err(format!(
                "responder certificate {subject} lacks the id-kp-OCSPSigning extended key usage"
            ))
        }
    }
    let validity = responder.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now.saturating_add(skew) < not_before || now.saturating_sub(skew) > not_after {
        return Err(format!(
            "responder certificate {subject} is valid from {not_before} to {not_after}, not at {now}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
