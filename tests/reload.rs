//! Live policy: edits by write, rename-over and ConfigMap-style symlink swap each change routing
//! within a second; a broken edit keeps the running policy and reports its errors; reloads under
//! concurrent load lose no request; SIGHUP reloads too.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A policy whose `/whoami` route is named `name`, so the worker's echo shows which is live.
fn policy(name: &str) -> String {
    DEFAULT_POLICY.edit("name = \"whoami\"", &format!("name = \"{name}\""))
}

async fn live_route(g: &Gateway, c: &reqwest::Client) -> String {
    let r = c.get(g.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["route"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_for_route(g: &Gateway, c: &reqwest::Client, name: &str) -> Duration {
    let (_, took) = eventually(
        Duration::from_secs(1),
        &format!("route {name} live"),
        || async { (live_route(g, c).await == name).then_some(()) },
    )
    .await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_write_and_rename_over_change_routing_within_a_second() {
    let g = Gateway::start(Options {
        policy: vec![("default.toml".into(), policy("v1"))],
        ..Default::default()
    })
    .await;
    let c = g.client(true);
    assert_eq!(live_route(&g, &c).await, "v1");
    let file = g.policy_dir().join("default.toml");

    std::fs::write(&file, policy("v2")).unwrap();
    let took = wait_for_route(&g, &c, "v2").await;
    eprintln!("write applied in {took:?}");

    rename_over(&file, &policy("v3"));
    let took = wait_for_route(&g, &c, "v3").await;
    eprintln!("rename-over applied in {took:?}");
    assert!(g.generation().await >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_changes_routing_within_a_second() {
    // Build the layout Kubernetes uses: policies/default.toml -> ..data/default.toml,
    // ..data -> ..v1, and an update swaps ..data atomically.
    let g = Gateway::start(Options {
        policy: vec![("default.toml".into(), policy("cm1"))],
        ..Default::default()
    })
    .await;
    let c = g.client(true);
    let dir = g.policy_dir();
    let write_version = |v: &str, text: &str| {
        let d = dir.join(v);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("default.toml"), text).unwrap();
    };
    write_version("..v1", &policy("cm1"));
    symlink("..v1", dir.join("..data")).unwrap();
    std::fs::remove_file(dir.join("default.toml")).unwrap();
    symlink("..data/default.toml", dir.join("default.toml")).unwrap();
    wait_for_route(&g, &c, "cm1").await;

    write_version("..v2", &policy("cm2"));
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    let took = wait_for_route(&g, &c, "cm2").await;
    eprintln!("symlink swap applied in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_running_policy_and_reports_every_error() {
    let g = Gateway::start(Options {
        policy: vec![("default.toml".into(), policy("good"))],
        ..Default::default()
    })
    .await;
    let c = g.client(true);
    let generation = g.generation().await;
    let broken = policy("bad")
        .edit("upstream = \"rooms\"", "upstream = \"nowhere\"")
        .edit("queue_capacity = 256", "queue_capacity = 0");
    std::fs::write(g.policy_dir().join("default.toml"), broken).unwrap();
    let (err, _) = eventually(Duration::from_secs(2), "reload error reported", || async {
        g.admin_json("/status").await["policy"]["last_reload_error"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert!(
        err.contains("routes[3].upstream: unknown upstream \"nowhere\""),
        "{err}"
    );
    assert!(
        err.contains("rooms.queue_capacity: must be between 1 and 65536"),
        "{err}"
    );
    assert_eq!(live_route(&g, &c).await, "good");
    assert_eq!(g.generation().await, generation);
    assert!(g
        .metrics()
        .await
        .contains("portcullis_policy_reloads_total{result=\"error\"} 1"));
    assert!(g.log().contains("policy reload rejected"));

    // Fixing it applies, and clears the error.
    std::fs::write(g.policy_dir().join("default.toml"), policy("fixed")).unwrap();
    wait_for_route(&g, &c, "fixed").await;
    assert!(g.admin_json("/status").await["policy"]["last_reload_error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_concurrent_requests_lose_nothing() {
    let g = Arc::new(
        Gateway::start(Options {
            policy: vec![("default.toml".into(), policy("r0"))],
            ..Default::default()
        })
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (g, stop, ok, failed) = (g.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let c = g.client(i % 2 == 0);
            while !stop.load(Ordering::Relaxed) {
                let good = match c.get(g.url("/whoami")).send().await {
                    Ok(r) if r.status() == 200 => r.json::<serde_json::Value>().await.is_ok(),
                    other => {
                        eprintln!("failed: {other:?}");
                        false
                    }
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let c = g.client(true);
    let start_gen = g.generation().await;
    for i in 1..=20 {
        let name = format!("r{i}");
        let file = g.policy_dir().join("default.toml");
        if i % 2 == 0 {
            rename_over(&file, &policy(&name));
        } else {
            std::fs::write(&file, policy(&name)).unwrap();
        }
        wait_for_route(&g, &c, &name).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(g.generation().await >= start_gen + 20);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "only {} requests",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policy() {
    let g = Gateway::start(Options {
        policy: vec![("default.toml".into(), policy("h1"))],
        ..Default::default()
    })
    .await;
    let before = g.generation().await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &g.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(
        Duration::from_secs(2),
        "generation bumped by SIGHUP",
        || async { (g.generation().await > before).then_some(()) },
    )
    .await;
}
