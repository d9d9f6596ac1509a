//! A WebSocket echo server for the benchmarks: every message back to its sender.
//!
//!   cargo run --release --example ws_echo -- --listen 127.0.0.1:18090

use futures_util::{SinkExt, StreamExt};

#[path = "common.rs"]
mod common;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = common::arg("--listen", "127.0.0.1:18090");
    let l = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("ws_echo listening on {addr}");
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(m)) = rx.next().await {
                if m.is_text() || m.is_binary() {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                } else if m.is_close() {
                    // tungstenite has queued the close reply; flushing sends it, and the
                    // stream then ends once the handshake is complete.
                    let _ = tx.flush().await;
                }
            }
        });
    }
}
