//! Graceful shutdown: SIGTERM turns `/ready` to 503 first, requests in flight finish, and the
//! process exits as soon as it has drained — well inside the configured grace.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn sigterm(pid: u32) {
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_ready_first_then_drains_in_flight_requests() {
    let mut g = Gateway::start(Options {
        grace_seconds: 20,
        unready_seconds: 1,
        ..Default::default()
    })
    .await;
    let c = g.client(true);

    // A slow upload is in flight when SIGTERM arrives.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    let upload = {
        let (c, url) = (c.clone(), g.url("/admin/storage/s/slow"));
        tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
            c.put(url)
                .header("content-length", "2000")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    eventually(Duration::from_secs(5), "upload in flight", || async {
        (g.admin_json("/status").await["in_flight"].as_u64() == Some(1)).then_some(())
    })
    .await;

    let t0 = Instant::now();
    sigterm(g.pid());
    let admin = reqwest::Client::new();
    eventually(Duration::from_millis(800), "/ready fails", || async {
        let r = admin
            .get(format!("http://{}/ready", g.admin))
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    // Liveness stays green while draining.
    assert_eq!(
        admin
            .get(format!("http://{}/health", g.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);
    assert_eq!(upload.await.unwrap().unwrap(), 201);

    let status = loop {
        if let Some(s) = g.child_mut().try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}\n{}", g.log());
    eprintln!("exited {:?} after SIGTERM", t0.elapsed());
    let stored = std::fs::read(g.data_dir().join("storage/s/slow")).unwrap();
    assert_eq!(stored.len(), 2000);
    // A normal shutdown is news, not a fault: the listener's "Shutting down" line is INFO and
    // nothing in the log is an ERROR (operators page on those).
    let log = g.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        log.lines()
            .any(|l| l.contains("Shutting down") && l.contains("\"level\":\"INFO\"")),
        "{log}"
    );
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
