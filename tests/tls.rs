//! Certificates: SNI picks by SAN, a replaced pair is served to new connections without a
//! restart, and a garbage pair is refused while the previous one keeps serving. The server's
//! cipher-suite order wins over the client's.

mod common;

use common::*;
use std::time::Duration;

/// The leaf certificate (DER) the gateway presents for `sni`.
async fn served_cert(g: &Gateway, sni: &str) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(g.tls_client_config());
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let tls = connector
        .connect(sni.to_string().try_into().unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn sans(der: &[u8]) -> Vec<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

fn opts() -> Options {
    Options {
        extra_certs: vec![
            ("alpha".into(), vec!["alpha.test".into()]),
            (
                "beta".into(),
                vec!["beta.test".into(), "*.beta.test".into()],
            ),
        ],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_by_san() {
    let g = Gateway::start(opts()).await;
    assert_eq!(sans(&served_cert(&g, "alpha.test").await), ["alpha.test"]);
    assert_eq!(sans(&served_cert(&g, "beta.test").await)[0], "beta.test");
    assert_eq!(
        sans(&served_cert(&g, "api.beta.test").await)[0],
        "beta.test"
    );
    assert_eq!(sans(&served_cert(&g, "localhost").await), ["localhost"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_restart() {
    let g = Gateway::start(opts()).await;
    let before = served_cert(&g, "alpha.test").await;
    let (c, k) = g.ca.leaf(&["alpha.test", "www.alpha.test"]);
    // Key first, then certificate: between the two writes the pair does not match and is
    // refused, so the old pair keeps serving until the new one is complete.
    std::fs::write(g.cert_dir().join("alpha.key"), k).unwrap();
    std::fs::write(g.cert_dir().join("alpha.crt"), c).unwrap();
    let (after, _) = eventually(Duration::from_secs(3), "new certificate served", || async {
        let now = served_cert(&g, "alpha.test").await;
        (now != before).then_some(now)
    })
    .await;
    assert_eq!(sans(&after), ["alpha.test", "www.alpha.test"]);
    // The new SAN routes to the new certificate.
    assert_eq!(served_cert(&g, "www.alpha.test").await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_certificate_is_refused_and_the_old_one_kept() {
    let g = Gateway::start(opts()).await;
    let before = served_cert(&g, "beta.test").await;
    let errors_before = reload_errors(&g).await;
    std::fs::write(
        g.cert_dir().join("beta.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    eventually(Duration::from_secs(3), "reload error counted", || async {
        (reload_errors(&g).await > errors_before).then_some(())
    })
    .await;
    assert_eq!(served_cert(&g, "beta.test").await, before);
    // A certificate whose key belongs to another certificate is refused too.
    let (c, _) = g.ca.leaf(&["beta.test"]);
    let errs = reload_errors(&g).await;
    std::fs::write(g.cert_dir().join("beta.crt"), c).unwrap();
    eventually(Duration::from_secs(3), "mismatch counted", || async {
        (reload_errors(&g).await > errs).then_some(())
    })
    .await;
    assert_eq!(served_cert(&g, "beta.test").await, before);
    logged(&g, &["does not belong to this certificate"]).await;
    // Requests keep flowing.
    let r = g.client(false).get(g.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Waits for the log to hold every one of `texts` (a reload error is counted before it is
/// logged).
async fn logged(g: &Gateway, texts: &[&str]) {
    let what = format!("{texts:?} logged");
    eventually(Duration::from_secs(3), &what, || async {
        let log = g.log();
        texts.iter().all(|t| log.contains(t)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_half_of_a_pair_keeps_the_old_pair_serving() {
    let g = Gateway::start(opts()).await;
    let before = served_cert(&g, "beta.test").await;
    let key = std::fs::read(g.cert_dir().join("beta.key")).unwrap();
    // The key goes missing (a swap half done, a mistaken delete).
    let errs = reload_errors(&g).await;
    std::fs::remove_file(g.cert_dir().join("beta.key")).unwrap();
    eventually(Duration::from_secs(3), "missing key counted", || async {
        (reload_errors(&g).await > errs).then_some(())
    })
    .await;
    assert_eq!(served_cert(&g, "beta.test").await, before);
    logged(&g, &["beta.key is missing"]).await;
    // Then the certificate instead.
    std::fs::write(g.cert_dir().join("beta.key"), &key).unwrap();
    let errs = reload_errors(&g).await;
    std::fs::remove_file(g.cert_dir().join("beta.crt")).unwrap();
    eventually(
        Duration::from_secs(3),
        "missing certificate counted",
        || async { (reload_errors(&g).await > errs).then_some(()) },
    )
    .await;
    assert_eq!(served_cert(&g, "beta.test").await, before);
    logged(&g, &["its certificate", "beta.crt is missing"]).await;
    // Both gone is a deliberate removal: the name falls back to the default certificate, which
    // does not cover it.
    std::fs::remove_file(g.cert_dir().join("beta.key")).unwrap();
    let connector = tokio_rustls::TlsConnector::from(g.tls_client_config());
    eventually(Duration::from_secs(3), "pair removed", || async {
        let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
        let name = "beta.test".try_into().unwrap();
        let e = connector.connect(name, tcp).await.err()?;
        e.to_string().contains("not valid for name").then_some(())
    })
    .await;
    let r = g.client(false).get(g.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn reload_errors(g: &Gateway) -> u64 {
    g.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_cert_reloads_total{result=\"error\"} "))
        .unwrap()
        .parse()
        .unwrap()
}

/// The suite negotiated by a client that offers `suites` in that order, at `version`.
async fn negotiated(
    g: &Gateway,
    suites: Vec<rustls::SupportedCipherSuite>,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::CipherSuite {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(g.ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_cipher_order_wins_over_the_clients() {
    use rustls::crypto::ring::cipher_suite as cs;
    let g = Gateway::start(Options::default()).await;
    // Each client prefers the suite the server ranks last; the server's first choice wins.
    let tls13 = negotiated(
        &g,
        vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
        ],
        &rustls::version::TLS13,
    )
    .await;
    assert_eq!(tls13, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    let tls12 = negotiated(
        &g,
        vec![
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ],
        &rustls::version::TLS12,
    )
    .await;
    assert_eq!(
        tls12,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    );
}
