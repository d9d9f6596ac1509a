//! Worker storage through the gateway: byte-exact round trips, traversal refused, a size limit
//! answered 413, and no partial object ever visible under its real name.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn limited(max: u64) -> Options {
    let p = DEFAULT_POLICY.edit(
        "max_object_bytes = 8388608",
        &format!("max_object_bytes = {max}"),
    );
    Options {
        policy: vec![("default.toml".into(), p)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_returns_identical_bytes() {
    let g = Gateway::start(Options::default()).await;
    for http1 in [true, false] {
        let c = g.client(http1);
        let body: Vec<u8> = (0..1_000_003u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let r = c
            .put(g.url("/admin/storage/reports/q3.bin"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = c
            .get(g.url("/admin/storage/reports/q3.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().to_vec(), body);
        let cols: serde_json::Value = c
            .get(g.url("/admin/collections"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cols["collections"][0]["name"], "reports");
        assert_eq!(cols["collections"][0]["objects"], 1);
        assert_eq!(
            c.delete(g.url("/admin/storage/reports/q3.bin"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            c.get(g.url("/admin/storage/reports/q3.bin"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_keys_are_refused() {
    let g = Gateway::start(Options::default()).await;
    std::fs::write(g.dir.path().join("secret.txt"), "top secret").unwrap();
    for path in [
        "/admin/storage/b/..",
        "/admin/storage/b/../../secret.txt",
        "/admin/storage/b/%2e%2e",
        "/admin/storage/b/%2E%2E/secret.txt",
        "/admin/storage/b//etc/passwd",
        "/admin/storage/b/%2fetc%2fpasswd",
        "/admin/storage/../../secret.txt",
        "/admin/storage/b/.tmp-0",
    ] {
        let put = format!("PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
        let resp = g.raw(put.as_bytes()).await;
        let status: u16 = resp[9..12].parse().unwrap();
        assert!((400..500).contains(&status), "{path}: {resp}");
        let status = g.raw_get_status(path).await;
        assert!((400..500).contains(&status), "{path}: GET {status}");
    }
    // Nothing was written anywhere.
    let storage = g.data_dir().join("storage");
    let files: Vec<_> = walk(&storage);
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(
        std::fs::read_to_string(g.dir.path().join("secret.txt")).unwrap(),
        "top secret"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_limit_get_413_and_leave_nothing() {
    let g = Gateway::start(limited(1024)).await;
    let c = g.client(true);
    let r = c
        .put(g.url("/admin/storage/b/big"))
        .body(vec![7u8; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Without a declared length (chunked), the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![1u8; 512])).collect();
    let r = c
        .put(g.url("/admin/storage/b/streamed"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        c.put(g.url("/admin/storage/b/small"))
            .body(vec![1u8; 1024])
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let files = walk(&g.data_dir().join("storage"));
    assert_eq!(files, vec![g.data_dir().join("storage/b/small")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_partial_object_is_ever_visible() {
    let g = Arc::new(Gateway::start(Options::default()).await);
    let size = 2 * 1024 * 1024;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (g, stop) = (g.clone(), stop.clone());
        tokio::spawn(async move {
            let c = g.client(false);
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .get(g.url("/admin/storage/live/obj"))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    404 => {}
                    200 => {
                        let b = r.bytes().await.unwrap();
                        assert_eq!(b.len(), size, "partial object visible");
                        assert!(b.iter().all(|x| *x == b[0]), "mixed object visible");
                        seen += 1;
                    }
                    s => panic!("unexpected {s}"),
                }
            }
            seen
        })
    };
    let c = g.client(true);
    for i in 0..12u8 {
        // Every third upload is cut off half-way: the old object must stay whole.
        if i % 3 == 2 {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
                Ok(vec![i; size / 2]),
                Err(std::io::Error::other("client gave up")),
            ];
            let r = c
                .put(g.url("/admin/storage/live/obj"))
                .header("content-length", size.to_string())
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                )))
                .send()
                .await;
            assert!(r.is_err() || r.unwrap().status() != 201);
        } else {
            let r = c
                .put(g.url("/admin/storage/live/obj"))
                .body(vec![i; size])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);
    // Aborted uploads left no temp file behind.
    let (_, _) = eventually(Duration::from_secs(3), "temp files removed", || async {
        let files = walk(&g.data_dir().join("storage"));
        (files == vec![g.data_dir().join("storage/live/obj")]).then_some(())
    })
    .await;
}
