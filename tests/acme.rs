//! Automatic certificates against a real ACME server, Pebble, on 127.0.0.1: issuance over
//! `http-01` and over `tls-alpn-01` as seen by a client trusting only Pebble's root, renewal
//! without a restart or a failed request, an outage survived on the stored certificate, and a
//! restart that places no new order.

mod common;

use common::pebble::Pebble;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A gateway with `[tls.acme]` for `names` against `pebble`, storing under `storage`.
async fn gateway(
    pebble: &Pebble,
    names: &[&str],
    challenge: &str,
    storage: &Path,
    extra: &str,
) -> Gateway {
    Gateway::start(Options {
        https_port: Some(pebble.tls_port),
        http_port: Some(pebble.http_port),
        config_extra: pebble.acme_config(names, challenge, storage) + extra,
        ..Default::default()
    })
    .await
}

/// A client that trusts only `root` and sends `name` to the gateway.
fn client_for(g: &Gateway, root: &str, name: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve(name, g.https)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Waits until `name` is served with a certificate `root` verifies; on timeout, shows both logs.
async fn issued(g: &Gateway, pebble: &Pebble, root: &str, name: &str) -> (Vec<u8>, Duration) {
    let start = std::time::Instant::now();
    loop {
        if let Ok(leaf) = g.served_leaf(root, name).await {
            return (leaf, start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "{name} not issued in 60 s\n--- gateway\n{}\n--- pebble\n{}",
                g.log(),
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ISSUED: &str = "portcullis_acme_orders_total{result=\"issued\"}";
const FAILED: &str = "portcullis_acme_orders_total{result=\"failed\"}";

fn acme_status(g: &Gateway) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["acme", "status", "--config"])
        .arg(g.dir.path().join("portcullis.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_a_certificate_and_a_restart_reuses_it_without_an_order() {
    let name = "api.acme-http.test";
    let pebble = Pebble::start(free_port(), free_port(), 90 * 86_400);
    let storage = tempfile::tempdir().unwrap();
    let g = gateway(&pebble, &[name], "http-01", storage.path(), "").await;
    let root = pebble.issuing_root().await;
    let (leaf, took) = issued(&g, &pebble, &root, name).await;
    eprintln!("http-01: issued and served {took:?} after start");
    // A real request over it, trusting only Pebble's root.
    let r = client_for(&g, &root, name)
        .get(format!("https://{name}:{}/health", g.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(g.metric(ISSUED).await, 1);
    // The account key and the certificate are private.
    for entry in walk(storage.path()) {
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", entry.display());
    }
    let status = acme_status(&g);
    assert!(status.contains(name), "{status}");
    assert!(!status.contains("none stored"), "{status}");
    let log = g.log();
    assert!(log.contains("ACME: certificate issued"), "{log}");
    drop(g);

    // A restart with the stored state serves the same certificate and orders nothing.
    let orders_before = pebble.log().matches("POST /order-plz").count();
    let g = gateway(&pebble, &[name], "http-01", storage.path(), "").await;
    assert_eq!(g.served_leaf(&root, name).await.unwrap(), leaf);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(g.metric(ISSUED).await, 0);
    assert_eq!(
        g.metric("portcullis_acme_certificates_loaded_total").await,
        1
    );
    assert_eq!(
        pebble.log().matches("POST /order-plz").count(),
        orders_before
    );
    assert!(g.log().contains("serving the stored certificate"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_and_renews_without_a_failed_request() {
    let name = "rooms.acme-alpn.test";
    // One-hour certificates, renewed when 3590 s are left: a renewal every ~10 s.
    let pebble = Pebble::start(free_port(), free_port(), 3600);
    let storage = tempfile::tempdir().unwrap();
    let g = Arc::new(
        gateway(
            &pebble,
            &[name],
            "tls-alpn-01",
            storage.path(),
            "renew_before_seconds = 3590\n",
        )
        .await,
    );
    let root = pebble.issuing_root().await;
    let (first, took) = issued(&g, &pebble, &root, name).await;
    eprintln!("tls-alpn-01: issued and served {took:?} after start");
    assert!(g.log().contains("answered a tls-alpn-01 validation"));

    // Requests on fresh connections all through the renewals: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (g, root, stop, ok, failed) = (
            g.clone(),
            root.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let c = client_for(&g, &root, name);
                match c
                    .get(format!("https://{name}:{}/health", g.https.port()))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    let (_, took) = eventually(Duration::from_secs(60), "two renewals", || async {
        (g.metric(ISSUED).await >= 3).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let now_served = g.served_leaf(&root, name).await.unwrap();
    assert_ne!(now_served, first, "the renewed certificate is served");
    eprintln!(
        "two renewals in {took:?}; {} requests served, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_outage_keeps_the_stored_certificate_serving_and_recovers() {
    let name = "edge.acme-outage.test";
    let mut pebble = Pebble::start(free_port(), free_port(), 3600);
    let storage = tempfile::tempdir().unwrap();
    let g = gateway(
        &pebble,
        &[name],
        "http-01",
        storage.path(),
        "renew_before_seconds = 3590\n",
    )
    .await;
    let root = pebble.issuing_root().await;
    let (leaf, _) = issued(&g, &pebble, &root, name).await;

    pebble.stop();
    let failed_before = g.metric(FAILED).await;
    eventually(
        Duration::from_secs(30),
        "renewal failure counted",
        || async { (g.metric(FAILED).await >= failed_before + 2).then_some(()) },
    )
    .await;
    // Still served, still valid.
    let during = g.served_leaf(&root, name).await.unwrap();
    let issued_during = g.metric(ISSUED).await;
    assert!(g.log().contains("ACME: certificate issuance failed"));
    let events = g.metrics().await;
    assert!(
        events.lines().any(|l| l
            .starts_with("portcullis_security_events_total{event=\"certificate_failure\"}")
            && !l.ends_with(" 0")),
        "{events}"
    );
    let status = acme_status(&g);
    assert!(status.contains("failure(s)"), "{status}");
    // The certificate served during the outage is one Pebble issued before it went down.
    assert!(during == leaf || issued_during > 1);

    // Pebble comes back (with a new root): the next attempt renews.
    pebble.start_again();
    let new_root = pebble.issuing_root().await;
    let (_, took) = issued(&g, &pebble, &new_root, name).await;
    eprintln!("recovered {took:?} after the ACME server returned");
    assert!(g.metric(ISSUED).await > issued_during);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_the_storage_folder_order_a_name_once() {
    let name = "shared.acme-replicas.test";
    // Pebble validates on replica A's listeners only, as a load balancer might route it there;
    // whichever replica orders, A answers from the shared folder.
    let pebble = Pebble::start(free_port(), free_port(), 90 * 86_400);
    let storage = tempfile::tempdir().unwrap();
    let names = [name];
    let (a, b) = tokio::join!(
        gateway(&pebble, &names, "http-01", storage.path(), ""),
        Gateway::start(Options {
            config_extra: pebble.acme_config(&[name], "http-01", storage.path()),
            ..Default::default()
        })
    );
    let root = pebble.issuing_root().await;
    let (leaf_a, _) = issued(&a, &pebble, &root, name).await;
    let (leaf_b, took) = issued(&b, &pebble, &root, name).await;
    eprintln!("both replicas serve it; the second {took:?} after the first");
    assert_eq!(leaf_a, leaf_b, "one certificate, served by both");
    assert_eq!(
        a.metric(ISSUED).await + b.metric(ISSUED).await,
        1,
        "one order between them"
    );
    assert_eq!(pebble.log().matches("POST /order-plz").count(), 1);
    let waited = a.log().contains("another process holds the order lock")
        || b.log().contains("another process holds the order lock");
    assert!(waited, "one replica waited for the other's lock");
    // The challenge files are gone with the order.
    assert!(walk(&storage.path().join("challenges")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_the_challenge_of_an_order_another_placed() {
    // Replica B orders `name`; Pebble can reach only replica A, which has no order for it and
    // answers from the shared storage folder.
    let name = "via-peer.acme-replicas.test";
    let pebble = Pebble::start(free_port(), free_port(), 90 * 86_400);
    let storage = tempfile::tempdir().unwrap();
    let a = gateway(
        &pebble,
        &["a-only.acme-replicas.test"],
        "http-01",
        storage.path(),
        "",
    )
    .await;
    let b = Gateway::start(Options {
        config_extra: pebble.acme_config(&[name], "http-01", storage.path()),
        ..Default::default()
    })
    .await;
    let root = pebble.issuing_root().await;
    let (_, took) = issued(&b, &pebble, &root, name).await;
    eprintln!("issued to B through A's listener in {took:?}");
    assert_eq!(b.metric(ISSUED).await, 1);
    assert!(
        a.served_leaf(&root, name).await.is_err(),
        "A does not serve B's name"
    );
}
