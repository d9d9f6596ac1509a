//! WebSocket rooms through the gateway (wss, HTTP/1.1 upgrade): peers see each other's messages,
//! a peer that stops reading gets `resync` while the others keep their pace, a peer that never
//! reads is closed with 1013, and a full room refuses newcomers.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// These tests push tens of megabytes through one machine's loopback; run them one at a time so
/// they measure the room server, not each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use common::ws::Ws;

async fn connect(
    g: &Gateway,
    room: &str,
    small_buffer: bool,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    match common::ws::open(
        g,
        "localhost",
        &format!("/rooms/{room}/ws"),
        None,
        small_buffer,
    )
    .await
    {
        Ok(ws) => Ok(ws),
        Err(status) => Err(tokio_tungstenite::tungstenite::Error::Http(
            http::Response::builder().status(status).body(None).unwrap(),
        )),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("message within 10 s")
        {
            Some(Ok(Message::Text(t))) => return t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

fn rooms_policy(queue: u32, slow_ms: u32, max_peers: u32) -> Options {
    let p = DEFAULT_POLICY
        .edit("queue_capacity = 256", &format!("queue_capacity = {queue}"))
        .edit(
            "slow_peer_timeout_ms = 10000",
            &format!("slow_peer_timeout_ms = {slow_ms}"),
        )
        .edit("max_peers = 64", &format!("max_peers = {max_peers}"))
        // These tests push tens of megabytes through one peer on purpose.
        .edit(
            "bytes_per_second = 1048576",
            "bytes_per_second = 17179869184",
        )
        .edit("messages_per_second = 100", "messages_per_second = 1000000");
    Options {
        policy: vec![("default.toml".into(), p)],
        ..debug_options()
    }
}

/// Room tests log the room server at debug level: when one fails, its panic message carries the
/// log, which says when and why each peer left (an intermittent early close is still open).
fn debug_options() -> Options {
    Options {
        env: vec![(
            "PORTCULLIS_LOG_LEVEL".into(),
            "portcullis=debug,info".into(),
        )],
        ..Options::default()
    }
}

/// Connects a new peer to `room` and waits until it receives `a`'s messages (the join is done).
///
/// Upgraded sessions stay open: 150 pairs meet in turn, none of their tunnels ends early. (The
/// end of an upgrade request's own empty body, handled after the upstream's 101, used to end
/// the tunnel now and then; see `vendor/README.md`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upgraded_session_stays_open() {
    let _serial = SERIAL.lock().await;
    let g = Gateway::start(Options::default()).await;
    for i in 0..150 {
        let (mut a, mut b) = common::ws::pair(&g, &format!("stay-{i}")).await;
        b.send(Message::Text("back".into())).await.unwrap();
        assert_eq!(next_text(&mut a).await, "back", "pair {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_see_each_others_messages() {
    let _serial = SERIAL.lock().await;
    let g = Gateway::start(debug_options()).await;
    let mut a = connect(&g, "lobby", false).await.unwrap();
    let mut b = common::ws::join(&g, &mut a, "lobby", false).await;
    b.send(Message::Text("from b".into())).await.unwrap();
    assert_eq!(next_text(&mut a).await, "from b");
    a.send(Message::Text("from a".into())).await.unwrap();
    assert_eq!(next_text(&mut b).await, "from a");
    // Another room hears nothing of this one.
    let mut other = connect(&g, "elsewhere", false).await.unwrap();
    a.send(Message::Text("private".into())).await.unwrap();
    assert_eq!(next_text(&mut b).await, "private");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.next())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_gets_resync_while_others_keep_pace() {
    let _serial = SERIAL.lock().await;
    let g = Gateway::start(rooms_policy(8, 60_000, 64)).await;
    let mut a = connect(&g, "busy", false).await.unwrap();
    let mut b = common::ws::join(&g, &mut a, "busy", false).await;
    let mut c = common::ws::join(&g, &mut a, "busy", true).await;
    // Drain what c may have been sent during the join handshake with b.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), c.next()).await {}
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), b.next()).await {}

    // c stops reading. a and b talk in lockstep until c's queue has overflowed.
    let payload = "x".repeat(32 * 1024);
    let mut sent = 0u32;
    while g.metric("portcullis_room_overflows_total").await == 0 || sent < 64 {
        for _ in 0..32 {
            a.send(Message::Text(format!("{sent}:{payload}")))
                .await
                .unwrap();
            let got = next_text(&mut b).await;
            assert_eq!(
                got.split(':').next().unwrap(),
                sent.to_string(),
                "b fell behind or got resync"
            );
            sent += 1;
        }
        assert!(sent < 20_000, "c's queue never overflowed");
    }
    // b kept its pace and saw every message in order; now c reads again and is told to resync.
    let mut seen = 0;
    loop {
        let t = next_text(&mut c).await;
        if t == r#"{"type":"resync"}"# {
            break;
        }
        seen += 1;
        assert!(seen <= sent, "no resync among {seen} messages");
    }
    assert!(
        seen < sent,
        "c should have lost its backlog (saw {seen} of {sent})"
    );
    // After the resync c is live again.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), c.next()).await {}
    a.send(Message::Text("after".into())).await.unwrap();
    assert_eq!(next_text(&mut c).await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_with_1013() {
    let _serial = SERIAL.lock().await;
    let g = Gateway::start(rooms_policy(4, 300, 64)).await;
    let mut a = connect(&g, "r", false).await.unwrap();
    let mut c = common::ws::join(&g, &mut a, "r", true).await;
    let payload = "y".repeat(32 * 1024);
    let mut sent = 0;
    while g.metric("portcullis_room_slow_closes_total").await == 0 {
        for _ in 0..16 {
            a.send(Message::Text(payload.clone())).await.unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(sent < 20_000, "never closed");
    }
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => break f.code,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_newcomers() {
    let _serial = SERIAL.lock().await;
    let g = Gateway::start(rooms_policy(8, 10_000, 2)).await;
    let mut a = connect(&g, "small", false).await.unwrap();
    let _b = common::ws::join(&g, &mut a, "small", false).await;
    match connect(&g, "small", false).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // Not a WebSocket route: plain GET to the rooms server is not an upgrade.
    let r = g
        .client(true)
        .get(g.url("/rooms/small/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "websocket_required"
    );
}
