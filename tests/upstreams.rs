//! External upstreams through the gateway: a killed upstream gets quick 502s, then its circuit
//! opens (fast 503s), then closes after the upstream returns; active health checks take a dead
//! address out of rotation and put it back.

mod common;

use common::*;
use std::time::{Duration, Instant};

use common::upstream::TestUpstream as Upstream;

fn opts(port: u16, health: u64) -> Options {
    let p = format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{port}"]
connect_timeout_ms = 500
circuit_failures = 3
circuit_open_ms = 1000
health_check_interval_seconds = {health}

[[routes]]
name = "api"
path_prefix = "/"
upstream = "api"
public = true
"#
    );
    Options::with_policy(p)
}

async fn status(c: &reqwest::Client, g: &Gateway) -> (u16, String, Duration) {
    let t = Instant::now();
    let r = c.get(g.url("/thing")).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_on_a_dead_upstream_and_closes_when_it_returns() {
    let port = free_port();
    let up = Upstream::start(port).await;
    let g = Gateway::start(opts(port, 0)).await;
    let c = g.client(true);
    assert_eq!(status(&c, &g).await.0, 200);
    up.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let (s, body, took) = status(&c, &g).await;
        assert_eq!(s, 502, "{body}");
        assert!(body.contains("upstream_unavailable"));
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    let (s, body, took) = status(&c, &g).await;
    assert_eq!(
        (s, body.as_str()),
        (503, r#"{"error":"upstream_circuit_open"}"#)
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(g.metrics().await.contains(&format!(
        "portcullis_circuit_open{{upstream=\"api\",address=\"127.0.0.1:{port}\"}} 1"
    )));
    let up = Upstream::start(port).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&c, &g).await.0, 200, "the half-open probe succeeds");
    assert_eq!(status(&c, &g).await.0, 200);
    assert!(g.metrics().await.contains(&format!(
        "portcullis_circuit_open{{upstream=\"api\",address=\"127.0.0.1:{port}\"}} 0"
    )));
    up.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_address_out_and_put_it_back() {
    let port = free_port();
    let up = Upstream::start(port).await;
    let g = Gateway::start(opts(port, 1)).await;
    let c = g.client(true);
    assert_eq!(status(&c, &g).await.0, 200);
    up.kill();
    eventually(Duration::from_secs(4), "marked down", || async {
        (status(&c, &g).await.0 == 503).then_some(())
    })
    .await;
    eventually(Duration::from_secs(3), "health check logged", || async {
        g.log().contains("health check: down").then_some(())
    })
    .await;
    let up = Upstream::start(port).await;
    eventually(Duration::from_secs(4), "marked up", || async {
        (status(&c, &g).await.0 == 200).then_some(())
    })
    .await;
    assert!(g.log().contains("health check: up"));
    up.kill();
}
