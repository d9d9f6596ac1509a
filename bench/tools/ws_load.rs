//! WebSocket echo load: N connections each sending a message and waiting for its echo, for D
//! seconds; prints echoed messages per second.
//!
//!   cargo run --release --example ws_load -- --url wss://127.0.0.1:18445/ws --ca ca.pem \
//!       --connections 50 --seconds 5 --size 64

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[path = "common.rs"]
mod common;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = common::arg("--url", "ws://127.0.0.1:18090/");
    let ca = common::arg("--ca", "");
    let conns: usize = common::arg("--connections", "50").parse().unwrap();
    let secs: u64 = common::arg("--seconds", "5").parse().unwrap();
    let size: usize = common::arg("--size", "64").parse().unwrap();
    let token = common::arg("--token", "");
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (url, ca, count, errors, token) = (
            url.clone(),
            ca.clone(),
            count.clone(),
            errors.clone(),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut req = url.as_str().into_client_request().unwrap();
            if !token.is_empty() {
                req.headers_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            let host = req.uri().host().unwrap().to_string();
            let port = req.uri().port_u16().unwrap();
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .unwrap();
            tcp.set_nodelay(true).unwrap();
            let payload = "x".repeat(size);
            macro_rules! pump {
                ($ws:expr) => {{
                    let mut ws = $ws;
                    while Instant::now() < end {
                        if ws.send(Message::Text(payload.clone())).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        match ws.next().await {
                            Some(Ok(Message::Text(_))) => {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    let _ = ws.close(None).await;
                }};
            }
            if url.starts_with("wss://") {
                let name = if host.parse::<std::net::IpAddr>().is_ok() {
                    "localhost".to_string()
                } else {
                    host.clone()
                };
                let tls = tokio_rustls::TlsConnector::from(common::tls_config(&ca, false))
                    .connect(name.try_into().unwrap(), tcp)
                    .await
                    .unwrap();
                let (ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
                pump!(ws)
            } else {
                let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
                pump!(ws)
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = count.load(Ordering::Relaxed);
    println!(
        "{:.0} messages/s ({} echoed, {} errors)",
        n as f64 / secs as f64,
        n,
        errors.load(Ordering::Relaxed)
    );
}
