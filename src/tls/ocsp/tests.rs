//! Unit tests of the responder URL, the OCSP request and the verification of responses.
//!
//! Everything here is minted by the `openssl` command-line tool (OpenSSL 3) at test time and
//! answered by its offline responder (`openssl ocsp -index`): real keys, certificates and
//! responses, nothing mocked. Without `openssl` on PATH these tests fail, saying so.

use super::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Has the top bit set, so its DER INTEGER needs a leading zero byte.
const LEAF_SERIAL: &str = "C0FFEE12";
const REVOKED_SERIAL: &str = "3003";
/// 2024-01-01T00:00:00Z, as `openssl ca` writes it in `index.txt`.
const REVOKED_AT: &str = "240101000000Z";
const REVOKED_AT_UNIX: i64 = 1_704_067_200;
const DAY: i64 = 86_400;

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
authorityInfoAccess = caIssuers;URI:http://127.0.0.1:1/ca.der,OCSP;URI:ldap://127.0.0.1:1/ocsp,OCSP;URI:http://127.0.0.1:1/
[responder]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = OCSPSigning
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Rsa,
    Ec,
}

impl Kind {
    fn genpkey_args(self) -> [&'static str; 4] {
        match self {
            Kind::Rsa => ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Kind::Ec => ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        }
    }

    /// The digests `openssl ocsp -rmd` signs with that `verify_response` must accept.
    fn digests(self) -> &'static [&'static str] {
        match self {
            Kind::Rsa => &["sha256", "sha384", "sha512"],
            Kind::Ec => &["sha256", "sha384"],
        }
    }
}

/// A throw-away PKI in a temporary directory: `ca` (CN=Portcullis Test CA, of the given
/// kind), `leaf` (serial C0FFEE12, AIA with the OCSP URL) issued by it, and an `index.txt`
/// listing the leaf as valid and serial 3003 as revoked.
struct Pki {
    dir: tempfile::TempDir,
    kind: Kind,
}

impl Pki {
    fn new(kind: Kind) -> Pki {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::write(dir.path().join("openssl.cnf"), OPENSSL_CNF).unwrap();
        let pki = Pki { dir, kind };
        pki.self_signed("ca", "/CN=Portcullis Test CA", kind);
        pki.issue("leaf", "ca", "/CN=localhost", LEAF_SERIAL, "leaf", Kind::Ec);
        std::fs::write(
            pki.path("index.txt"),
            format!(
                "V\t491231235959Z\t\t{LEAF_SERIAL}\tunknown\t/CN=localhost\n\
                     R\t491231235959Z\t{REVOKED_AT}\t{REVOKED_SERIAL}\tunknown\t/CN=revoked.localhost\n"
            ),
        )
        .unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `openssl` in the PKI directory with its own configuration; returns stdout.
    fn openssl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .env("OPENSSL_CONF", self.path("openssl.cnf"))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the OCSP tests need the `openssl` command-line tool (OpenSSL 3) on \
                         PATH to mint certificates and responses; running it failed: {e}"
                )
            });
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn key(&self, name: &str, kind: Kind) {
        let key = format!("{name}.key");
        let mut args = vec!["genpkey"];
        args.extend(kind.genpkey_args());
        args.extend(["-out", &key]);
        self.openssl(&args);
    }

    fn self_signed(&self, name: &str, subject: &str, kind: Kind) {
        self.key(name, kind);
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            subject,
            "-days",
            "30",
            "-extensions",
            "ca",
            "-out",
            &pem,
        ]);
    }

    /// A certificate `name` issued by `ca` with the extensions of config section
    /// `extensions`.
    fn issue(
        &self,
        name: &str,
        ca: &str,
        subject: &str,
        serial_hex: &str,
        extensions: &str,
        kind: Kind,
    ) {
        self.key(name, kind);
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        let serial = format!("0x{serial_hex}");
        self.openssl(&["req", "-new", "-key", &key, "-subj", subject, "-out", &csr]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            extensions,
            "-out",
            &pem,
        ]);
    }

    /// The DER of certificate `name`.
    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read(self.path(&format!("{name}.pem"))).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM certificate");
        pem.contents
    }

    /// A request written by `openssl ocsp -issuer ca.pem -no_nonce ARGS -reqout`.
    fn openssl_request(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec!["ocsp", "-issuer", "ca.pem", "-no_nonce"];
        all.extend(args);
        all.extend(["-reqout", "openssl-req.der"]);
        self.openssl(&all);
        std::fs::read(self.path("openssl-req.der")).unwrap()
    }

    /// The answer of `openssl ocsp` in offline responder mode, signed by `signer`, to
    /// `request`. Valid for one day unless `args` says `-ndays`.
    fn respond(&self, request: &[u8], signer: &str, args: &[&str]) -> Vec<u8> {
        std::fs::write(self.path("req.der"), request).unwrap();
        let (pem, key) = (format!("{signer}.pem"), format!("{signer}.key"));
        let mut all = vec![
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            &pem,
            "-rkey",
            &key,
            "-reqin",
            "req.der",
            "-respout",
            "resp.der",
        ];
        if !args.contains(&"-ndays") {
            all.extend(["-ndays", "1"]);
        }
        all.extend(args);
        self.openssl(&all);
        std::fs::read(self.path("resp.der")).unwrap()
    }

    fn leaf_request(&self) -> Vec<u8> {
        build_request(&self.der("leaf"), &self.der("ca")).expect("build the request")
    }

    fn verify_leaf(&self, response: &[u8], now: i64) -> Result<Verified, OcspError> {
        verify_response(response, &self.der("leaf"), &self.der("ca"), now)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_good(verified: &Verified, now: i64) {
    assert_eq!(verified.status, CertStatus::Good);
    assert!(
        (verified.this_update - now).abs() < 120,
        "{verified:?} at {now}"
    );
    assert!(
        (verified.produced_at - now).abs() < 120,
        "{verified:?} at {now}"
    );
    assert_eq!(verified.next_update, Some(verified.this_update + DAY));
}

#[test]
fn responder_url_comes_from_aia_and_is_none_without_it() {
    let pki = Pki::new(Kind::Ec);
    assert_eq!(
        responder_url(&pki.der("leaf")).as_deref(),
        Some("http://127.0.0.1:1/")
    );
    assert_eq!(responder_url(&pki.der("ca")), None);
    pki.issue(
        "plain",
        "ca",
        "/CN=plain.localhost",
        "5005",
        "server",
        Kind::Ec,
    );
    assert_eq!(responder_url(&pki.der("plain")), None);
    assert_eq!(responder_url(b"not a certificate"), None);
}

#[test]
fn request_matches_openssl_and_names_the_serial() {
    for kind in [Kind::Rsa, Kind::Ec] {
        let pki = Pki::new(kind);
        let ours = pki.leaf_request();
        let theirs = pki.openssl_request(&["-cert", "leaf.pem"]);
        assert_eq!(hex(&ours), hex(&theirs), "{kind:?} CA");

        std::fs::write(pki.path("ours.der"), &ours).unwrap();
        let text = pki.openssl(&["ocsp", "-reqin", "ours.der", "-req_text"]);
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains(&format!("Serial Number: {LEAF_SERIAL}")),
            "{text}"
        );
        assert!(text.contains("Hash Algorithm: sha1"), "{text}");
    }
}

fn ca_signed_good(kind: Kind) {
    let pki = Pki::new(kind);
    let request = pki.leaf_request();
    for digest in kind.digests() {
        let now = now();
        let response = pki.respond(&request, "ca", &["-rmd", digest]);
        let verified = pki
            .verify_leaf(&response, now)
            .unwrap_or_else(|e| panic!("{kind:?} CA, {digest}: {e}"));
        assert_good(&verified, now);
    }
}

#[test]
fn ca_signed_good_rsa() {
    ca_signed_good(Kind::Rsa);
}

#[test]
fn ca_signed_good_ec() {
    ca_signed_good(Kind::Ec);
}

fn delegated_responder_good(kind: Kind) {
    let pki = Pki::new(kind);
    pki.issue(
        "responder",
        "ca",
        "/CN=Portcullis Test OCSP Responder",
        "4004",
        "responder",
        pki.kind,
    );
    let request = pki.leaf_request();
    // By name (the default), by key hash, and with a second digest.
    for args in [&[][..], &["-resp_key_id"], &["-rmd", "sha384"]] {
        let now = now();
        let response = pki.respond(&request, "responder", args);
        let verified = pki
            .verify_leaf(&response, now)
            .unwrap_or_else(|e| panic!("{kind:?} responder, {args:?}: {e}"));
        assert_good(&verified, now);
    }
}

#[test]
fn delegated_responder_good_rsa() {
    delegated_responder_good(Kind::Rsa);
}

#[test]
fn delegated_responder_good_ec() {
    delegated_responder_good(Kind::Ec);
}

fn revoked_entry_reported(kind: Kind) {
    let pki = Pki::new(kind);
    pki.issue(
        "revoked",
        "ca",
        "/CN=revoked.localhost",
        REVOKED_SERIAL,
        "leaf",
        Kind::Ec,
    );
    let (revoked, ca) = (pki.der("revoked"), pki.der("ca"));
    let request = build_request(&revoked, &ca).unwrap();
    let now = now();
    let response = pki.respond(&request, "ca", &[]);
    let verified = verify_response(&response, &revoked, &ca, now).unwrap();
    assert_eq!(
        verified.status,
        CertStatus::Revoked {
            revoked_at: REVOKED_AT_UNIX
        }
    );
    assert!((verified.this_update - now).abs() < 120);
}

#[test]
fn revoked_entry_reported_rsa() {
    revoked_entry_reported(Kind::Rsa);
}

#[test]
fn revoked_entry_reported_ec() {
    revoked_entry_reported(Kind::Ec);
}

#[test]
fn unlisted_certificate_is_unknown() {
    let pki = Pki::new(Kind::Ec);
    pki.issue(
        "unlisted",
        "ca",
        "/CN=unlisted.localhost",
        "2002",
        "leaf",
        Kind::Ec,
    );
    let (unlisted, ca) = (pki.der("unlisted"), pki.der("ca"));
    let request = build_request(&unlisted, &ca).unwrap();
    let response = pki.respond(&request, "ca", &[]);
    let verified = verify_response(&response, &unlisted, &ca, now()).unwrap();
    assert_eq!(verified.status, CertStatus::Unknown);
}

#[test]
fn sha256_cert_id_is_accepted() {
    let pki = Pki::new(Kind::Ec);
    let request = pki.openssl_request(&["-sha256", "-cert", "leaf.pem"]);
    let response = pki.respond(&request, "ca", &[]);
    let now = now();
    assert_good(&pki.verify_leaf(&response, now).unwrap(), now);
}

#[test]
fn response_for_another_serial_does_not_match() {
    let pki = Pki::new(Kind::Ec);
    let request = pki.openssl_request(&["-serial", "0x2002"]);
    let response = pki.respond(&request, "ca", &[]);
    assert_eq!(
        pki.verify_leaf(&response, now()),
        Err(OcspError::NoMatchingResponse)
    );
}

#[test]
fn unrelated_signers_are_rejected() {
    let pki = Pki::new(Kind::Rsa);
    let request = pki.leaf_request();

    // Another CA, named differently: not the issuer, not a delegate of it.
    pki.self_signed("other", "/CN=Unrelated Test CA", Kind::Rsa);
    let response = pki.respond(&request, "other", &[]);
    assert!(
        matches!(
            pki.verify_leaf(&response, now()),
            Err(OcspError::UntrustedResponder(_))
        ),
        "{:?}",
        pki.verify_leaf(&response, now())
    );

    // A CA that takes the issuer's name but has its own key.
    pki.self_signed("impostor", "/CN=Portcullis Test CA", Kind::Ec);
    let response = pki.respond(&request, "impostor", &[]);
    assert_eq!(
        pki.verify_leaf(&response, now()),
        Err(OcspError::BadSignature)
    );

    // OCSP signers certified by those two: not by the issuer.
    for (ca, serial) in [("other", "6006"), ("impostor", "7007")] {
        let signer = format!("{ca}-responder");
        let subject = format!("/CN={ca} OCSP Responder");
        pki.issue(&signer, ca, &subject, serial, "responder", Kind::Ec);
        let response = pki.respond(&request, &signer, &[]);
        match pki.verify_leaf(&response, now()) {
            Err(OcspError::UntrustedResponder(why)) => {
                assert!(why.contains("responder certificate"), "{why}")
            }
            other => panic!("responder certified by {ca}: {other:?}"),
        }
    }
}

#[test]
fn delegate_without_ocsp_signing_is_rejected() {
    let pki = Pki::new(Kind::Ec);
    pki.issue(
        "server",
        "ca",
        "/CN=server.localhost",
        "5005",
        "server",
        Kind::Ec,
    );
    let response = pki.respond(&pki.leaf_request(), "server", &[]);
    match pki.verify_leaf(&response, now()) {
        Err(OcspError::UntrustedResponder(why)) => {
            assert!(why.contains("OCSPSigning"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn delegate_outside_its_validity_is_rejected() {
    let pki = Pki::new(Kind::Ec);
    pki.issue(
        "responder",
        "ca",
        "/CN=Responder",
        "4004",
        "responder",
        Kind::Ec,
    );
    // The response itself is good for 60 days; the responder certificate for 30.
    let response = pki.respond(&pki.leaf_request(), "responder", &["-ndays", "60"]);
    let now = now();
    assert_eq!(
        pki.verify_leaf(&response, now).unwrap().status,
        CertStatus::Good
    );
    match pki.verify_leaf(&response, now + 40 * DAY) {
        Err(OcspError::UntrustedResponder(why)) => assert!(why.contains("valid from"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stale_and_future_responses_are_rejected() {
    let pki = Pki::new(Kind::Ec);
    let response = pki.respond(&pki.leaf_request(), "ca", &[]);
    let verified = pki.verify_leaf(&response, now()).unwrap();
    let (this_update, next_update) = (verified.this_update, verified.next_update.unwrap());
    let skew = CLOCK_SKEW_SECS;

    assert!(matches!(
        pki.verify_leaf(&response, now() + 2 * DAY),
        Err(OcspError::Expired { .. })
    ));
    assert!(pki.verify_leaf(&response, next_update + skew - 1).is_ok());
    assert_eq!(
        pki.verify_leaf(&response, next_update + skew),
        Err(OcspError::Expired {
            next_update,
            now: next_update + skew,
            skew
        })
    );

    assert!(matches!(
        pki.verify_leaf(&response, now() - DAY),
        Err(OcspError::NotYetValid { .. })
    ));
    assert!(pki.verify_leaf(&response, this_update - skew).is_ok());
    assert_eq!(
        pki.verify_leaf(&response, this_update - skew - 1),
        Err(OcspError::NotYetValid {
            this_update,
            now: this_update - skew - 1,
            skew
        })
    );

    let (leaf, ca) = (pki.der("leaf"), pki.der("ca"));
    assert!(verify_response_with_skew(&response, &leaf, &ca, next_update - 1, 0).is_ok());
    assert!(matches!(
        verify_response_with_skew(&response, &leaf, &ca, next_update, 0),
        Err(OcspError::Expired { .. })
    ));
}

#[test]
fn tampered_responses_fail_the_signature() {
    for kind in [Kind::Rsa, Kind::Ec] {
        let pki = Pki::new(kind);
        // Without certificates the signature is the last thing in the response.
        let response = pki.respond(&pki.leaf_request(), "ca", &["-resp_no_certs"]);
        assert_good(&pki.verify_leaf(&response, now()).unwrap(), now());

        let mut flipped = response.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        assert_eq!(
            pki.verify_leaf(&flipped, now()),
            Err(OcspError::BadSignature),
            "{kind:?}: flipped signature byte"
        );

        // A byte of the signed CertID: the issuer name hash.
        let ca = pki.der("ca");
        let (_, issuer) = X509Certificate::from_der(&ca).unwrap();
        let name_hash = name_hash(&digest::SHA1_FOR_LEGACY_USE_ONLY, &issuer);
        let at = response
            .windows(20)
            .position(|w| w == name_hash.as_ref())
            .expect("the issuer name hash is in the response");
        let mut tampered = response.clone();
        tampered[at] ^= 0x01;
        assert_eq!(
            pki.verify_leaf(&tampered, now()),
            Err(OcspError::BadSignature),
            "{kind:?}: tampered CertID"
        );
    }
}

#[test]
fn unsupported_unsuccessful_and_malformed_responses_are_reported() {
    let pki = Pki::new(Kind::Rsa);
    let (leaf, ca) = (pki.der("leaf"), pki.der("ca"));

    // SHA-1 signatures are refused.
    let response = pki.respond(&pki.leaf_request(), "ca", &["-rmd", "sha1"]);
    match pki.verify_leaf(&response, now()) {
        Err(e @ OcspError::UnsupportedAlgorithm(_)) => {
            assert!(e.to_string().contains("1.2.840.113549.1.1.5"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    // What a busy responder sends: OCSPResponse { responseStatus tryLater }.
    let try_later = [0x30, 0x03, 0x0a, 0x01, 0x03];
    let err = verify_response(&try_later, &leaf, &ca, now()).unwrap_err();
    assert_eq!(err, OcspError::NotSuccessful { status: 3 });
    assert!(err.to_string().contains("tryLater"), "{err}");

    let good = pki.respond(&pki.leaf_request(), "ca", &[]);
    for broken in [
        &b"not DER"[..],
        &good[..good.len() - 1],
        &[good.clone(), vec![0]].concat(),
    ] {
        assert!(
            matches!(
                verify_response(broken, &leaf, &ca, now()),
                Err(OcspError::Malformed(_))
            ),
            "{:?}",
            verify_response(broken, &leaf, &ca, now())
        );
    }
}

#[test]
fn certificate_pairs_are_checked() {
    let pki = Pki::new(Kind::Ec);
    pki.self_signed("other", "/CN=Unrelated Test CA", Kind::Ec);
    let (leaf, other) = (pki.der("leaf"), pki.der("other"));
    assert_eq!(build_request(&leaf, &other), Err(OcspError::IssuerMismatch));
    assert!(matches!(
        build_request(b"junk", &other),
        Err(OcspError::BadCertificate {
            which: "subject",
            ..
        })
    ));
    assert!(matches!(
        verify_response(&[], &leaf, b"junk", now()),
        Err(OcspError::BadCertificate {
            which: "issuer",
            ..
        })
    ));
}
