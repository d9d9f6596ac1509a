//! Opens N TLS keep-alive connections, sends one HTTP/1.1 request on each (so every proxy holds
//! it as an idle keep-alive connection after its first response), prints `ready`, and holds them
//! for the given seconds. The caller reads the proxy's RSS before and while they are held.
//!
//!   cargo run --release --example idle_conns -- --addr 127.0.0.1:18445 --ca ca.pem \
//!       --count 10000 --hold 20

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common.rs"]
mod common;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = common::arg("--addr", "127.0.0.1:18445");
    let ca = common::arg("--ca", "");
    let count: usize = common::arg("--count", "10000").parse().unwrap();
    let hold: u64 = common::arg("--hold", "20").parse().unwrap();
    let path = common::arg("--path", "/small");
    let token = common::arg("--token", "");
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let config = common::tls_config(&ca, false);
    let mut held = Vec::with_capacity(count);
    let mut failed = 0;
    // In batches, so the proxy's accept queue is never the bottleneck being measured.
    for chunk in 0..count.div_ceil(200) {
        let mut batch = Vec::new();
        for _ in 0..200.min(count - chunk * 200) {
            let (addr, config, path, auth) =
                (addr.clone(), config.clone(), path.clone(), auth.clone());
            batch.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect("localhost".try_into().unwrap(), tcp)
                    .await
                    .ok()?;
                let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
                tls.write_all(req.as_bytes()).await.ok()?;
                let mut buf = vec![0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                (n > 12 && &buf[9..12] == b"200").then_some(tls)
            }));
        }
        for t in batch {
            match t.await.ok().flatten() {
                Some(s) => held.push(s),
                None => failed += 1,
            }
        }
    }
    println!("ready {} held, {} failed", held.len(), failed);
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(held);
}
