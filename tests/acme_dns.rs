//! `dns-01` against real servers on loopback: BIND 9 is the zone's primary and takes the
//! gateway's RFC 2136 updates signed with TSIG; Pebble resolves through BIND to validate. A
//! wildcard certificate is issued, served by SNI for names under it, and renewed; the challenge
//! records are removed afterwards; an update that BIND refuses (a wrong key) is a logged,
//! counted certificate failure.

mod common;

use std::time::Duration;

use common::bind::Bind;
use common::pebble::Pebble;
use common::*;

const SECRET_ENV: &str = "PORTCULLIS_TEST_TSIG_SECRET";

async fn gateway(
    pebble: &Pebble,
    bind: &Bind,
    names: &[&str],
    secret: &str,
    extra: &str,
) -> Gateway {
    let storage = tempfile::tempdir().unwrap().keep();
    Gateway::start(Options {
        https_port: Some(pebble.tls_port),
        config_extra: pebble.acme_config(names, "dns-01", &storage)
            + extra
            + &bind.acme_dns_config(SECRET_ENV),
        env: vec![(SECRET_ENV.into(), secret.into())],
        ..Default::default()
    })
    .await
}

const ISSUED: &str = "portcullis_acme_orders_total{result=\"issued\"}";
const FAILED: &str = "portcullis_acme_orders_total{result=\"failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_is_issued_over_dns01_served_by_sni_and_renewed() {
    let bind = Bind::start("example.test");
    // One-hour certificates renewed when 3590 s are left: a renewal every ~10 s.
    let pebble = Pebble::start_with_dns(bind.port, 3600);
    let g = gateway(
        &pebble,
        &bind,
        &["*.example.test"],
        &bind.secret,
        "renew_before_seconds = 3590\n",
    )
    .await;
    let root = pebble.issuing_root().await;
    let (first, took) = eventually(Duration::from_secs(60), "the wildcard issued", || async {
        g.served_leaf(&root, "api.example.test").await.ok()
    })
    .await;
    println!("*.example.test issued and served {took:?} after start");
    // Any name under the wildcard, by SNI, gets it; the parent name is not covered.
    let leaf = rustls::pki_types::CertificateDer::from(first.clone());
    let parsed = x509_parser::parse_x509_certificate(&leaf).unwrap().1;
    let sans: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(sans, ["DNSName(*.example.test)"]);
    assert_eq!(
        g.served_leaf(&root, "rooms.example.test").await.unwrap(),
        first
    );
    // The challenge records are gone once the order is done.
    eventually(
        Duration::from_secs(5),
        "challenge records removed",
        || async {
            bind.txt("_acme-challenge.example.test")
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(
        bind.log()
            .contains("updating zone 'example.test/IN': adding an RR")
            && bind.log().contains("deleting an RR"),
        "{}",
        bind.log()
    );

    // Renewed: a new certificate is served for the same names.
    let (_, took) = eventually(Duration::from_secs(60), "a renewal", || async {
        (g.metric(ISSUED).await >= 2).then_some(())
    })
    .await;
    let renewed = eventually(Duration::from_secs(10), "the renewal served", || async {
        g.served_leaf(&root, "api.example.test")
            .await
            .ok()
            .filter(|l| *l != first)
    })
    .await
    .0;
    assert_ne!(renewed, first);
    println!("renewed {took:?} later");
    assert_eq!(g.metric(FAILED).await, 0, "{}", g.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_refused_by_tsig_is_a_logged_counted_certificate_failure() {
    let bind = Bind::start("example.test");
    let pebble = Pebble::start_with_dns(bind.port, 3600);
    use base64::Engine;
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let g = gateway(&pebble, &bind, &["*.example.test"], &wrong, "").await;
    eventually(Duration::from_secs(20), "the failure counted", || async {
        (g.metric(FAILED).await >= 1).then_some(())
    })
    .await;
    let log = g.log();
    assert!(
        log.contains("refused the update: NOTAUTH (TSIG BADSIG)"),
        "{log}"
    );
    assert!(log.contains("certificate issuance failed"), "{log}");
    assert!(!log.contains(&wrong), "the secret is never logged");
    assert!(
        bind.log().contains("request has invalid signature"),
        "{}",
        bind.log()
    );
    assert!(
        g.metric("portcullis_security_events_total{event=\"certificate_failure\"}")
            .await
            >= 1
    );
    assert_eq!(g.metric(ISSUED).await, 0);
}
