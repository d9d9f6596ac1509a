//! WebSocket budgets and token expiry through the gateway: a peer over its message budget is
//! closed with 1008 while a peer within budget in the same room carries on, an oversized message
//! is refused with 1009, and a session is closed with 4001 when its token expires, even idle.

mod common;

use common::auth::now;
use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "room-key-for-budget-tests-0123456789ab";

fn opts() -> Options {
    let p = format!(
        r#"
[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "rooms"
path_prefix = "/rooms/"
upstream = "rooms"
auth = "room"

[rooms]
keys = [{{ kid = "k1", algorithm = "HS256", secret = "{KEY}" }}]

[websocket]
messages_per_second = 20
max_message_bytes = 1024
idle_timeout_seconds = 60
"#
    );
    Options {
        policy: vec![("p.toml".into(), p)],
        ..Default::default()
    }
}

use common::ws::Ws;

async fn connect(g: &Gateway, room: &str, token: Option<&str>) -> Ws {
    common::ws::open(g, "localhost", &format!("/rooms/{room}/ws"), token, false)
        .await
        .unwrap()
}

/// Reads until a close frame; returns its code.
async fn close_code(ws: &mut Ws, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_message_budget_is_closed_and_others_carry_on() {
    let g = Gateway::start(opts()).await;
    let mut calm = connect(&g, "lobby", None).await;
    let mut noisy = connect(&g, "lobby", None).await;
    for i in 0..100 {
        if noisy
            .send(Message::Text(format!("spam {i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut noisy, Duration::from_secs(5)).await, 1008);
    // The calm peer still talks, within its budget, to a peer the room server has registered.
    let mut other = common::ws::join(&g, &mut calm, "lobby", false).await;
    for i in 0..5 {
        calm.send(Message::Text(format!("calm {i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), other.next()).await
    {
        if m.to_text().unwrap_or("").starts_with("calm") {
            got += 1;
        }
    }
    assert!(got >= 1, "the calm peer's messages still flow");
    calm.send(Message::Text("still here".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused() {
    let g = Gateway::start(opts()).await;
    let mut ws = connect(&g, "big", None).await;
    ws.send(Message::Text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_closed_when_its_token_expires_even_when_idle() {
    let g = Gateway::start(opts()).await;
    let exp = now() + 3;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let token = jsonwebtoken::encode(
        &h,
        &serde_json::json!({"iss": "portcullis-rooms", "sub": "tess", "room": "timed", "exp": exp}),
        &EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap();
    let mut ws = connect(&g, "timed", Some(&token)).await;
    let code = close_code(&mut ws, Duration::from_secs(6)).await;
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(code, 4001);
    let off = at - exp as f64;
    assert!(off.abs() <= 0.5, "closed {off:+.3} s from expiry");
}
