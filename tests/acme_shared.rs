//! ACME state in the `[shared_state]` Redis (`[tls.acme] shared = true`) for replicas that
//! share no volume, against real Pebble and redis-server on loopback: two replicas with their
//! own storage folders place one order between them and serve the same certificate, and a
//! replica answers the `http-01` validation of an order the other placed.

mod common;

use std::time::Duration;

use common::pebble::Pebble;
use common::redis::Redis;
use common::*;

fn policy(redis: &Redis, prefix: &str) -> String {
    format!(
        "[shared_state]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
        redis.url()
    )
}

/// A replica with its own storage folder; `on_pebble_ports`: the one Pebble validates at.
async fn replica(
    pebble: &Pebble,
    redis: &Redis,
    prefix: &str,
    name: &str,
    on_pebble_ports: bool,
) -> (Gateway, tempfile::TempDir) {
    let storage = tempfile::tempdir().unwrap();
    let mut o = Options::with_policy(policy(redis, prefix));
    o.config_extra = pebble.acme_config(&[name], "http-01", storage.path()) + "shared = true\n";
    if on_pebble_ports {
        o.https_port = Some(pebble.tls_port);
        o.http_port = Some(pebble.http_port);
    }
    (Gateway::start(o).await, storage)
}

async fn issued(g: &Gateway, root: &str, name: &str) -> Vec<u8> {
    eventually(
        Duration::from_secs(60),
        "the certificate served",
        || async { g.served_leaf(root, name).await.ok() },
    )
    .await
    .0
}

const ISSUED: &str = "portcullis_acme_orders_total{result=\"issued\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_without_a_shared_volume_order_once_through_redis() {
    let name = "both.acme-redis.test";
    let redis = Redis::start();
    let prefix = Redis::fresh_prefix("acme");
    let pebble = Pebble::start(free_port(), free_port(), 90 * 86_400);
    let ((a, a_dir), (b, b_dir)) = tokio::join!(
        replica(&pebble, &redis, &prefix, name, true),
        replica(&pebble, &redis, &prefix, name, false)
    );
    let root = pebble.issuing_root().await;
    let (leaf_a, leaf_b) = (issued(&a, &root, name).await, issued(&b, &root, name).await);
    assert_eq!(leaf_a, leaf_b, "one certificate, served by both");
    assert_eq!(
        a.metric(ISSUED).await + b.metric(ISSUED).await,
        1,
        "one order between them"
    );
    assert_eq!(pebble.log().matches("POST /order-plz").count(), 1);
    assert!(
        a.log().contains("another process holds the order lock")
            || b.log().contains("another process holds the order lock"),
        "one replica waited for the other's lock"
    );
    assert!(
        a.log().contains("certificate taken from the shared store")
            || b.log().contains("certificate taken from the shared store")
    );
    // The certificate and the account are in Redis; each folder holds its own copy.
    let cert = redis.cli(&["GET", &format!("{prefix}acme:cert:{name}")]);
    assert!(cert.contains("BEGIN CERTIFICATE") && cert.contains("PRIVATE KEY"));
    assert!(!redis
        .cli(&["--scan", "--pattern", &format!("{prefix}acme:account:*")])
        .is_empty());
    for dir in [a_dir.path(), b_dir.path()] {
        assert_eq!(
            std::fs::read_to_string(dir.join("certs").join(format!("{name}.pem"))).unwrap(),
            cert.clone() + "\n"
        );
    }
    // No lock and no challenge answer left behind.
    assert!(redis
        .cli(&["--scan", "--pattern", &format!("{prefix}acme:lock:*")])
        .is_empty());
    assert!(redis
        .cli(&["--scan", "--pattern", &format!("{prefix}acme:http-01:*")])
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_from_redis_the_validation_of_an_order_another_placed() {
    // B orders `name`; Pebble reaches only A, which has no order for it and no shared folder.
    let name = "via-redis.acme-redis.test";
    let redis = Redis::start();
    let prefix = Redis::fresh_prefix("acme");
    let pebble = Pebble::start(free_port(), free_port(), 90 * 86_400);
    let (a, _a_dir) = replica(&pebble, &redis, &prefix, "a-only.acme-redis.test", true).await;
    let (b, _b_dir) = replica(&pebble, &redis, &prefix, name, false).await;
    let root = pebble.issuing_root().await;
    issued(&b, &root, name).await;
    assert_eq!(b.metric(ISSUED).await, 1);
    assert!(
        a.served_leaf(&root, name).await.is_err(),
        "A does not serve B's name"
    );
}

#[test]
fn shared_acme_without_a_shared_store_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[tls.acme]\naccept_terms = true\nnames = [\"a.example.test\"]\nshared = true\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.toml"), "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&config)
        .env("PORTCULLIS_POLICY_DIR", dir.path().join("policies"))
        .env("PORTCULLIS_CERT_DIR", dir.path().join("certs"))
        .env_remove("PORTCULLIS_MODE")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "tls.acme.shared = true keeps ACME state in the policy's [shared_state] store"
        ),
        "{text}"
    );
}
