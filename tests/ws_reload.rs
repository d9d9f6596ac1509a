//! Policy reloads and open WebSocket sessions: sessions the new policy still admits stay open
//! through any number of reloads; a session in a room that becomes locked is closed with 4403.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "room-key-for-reload-tests-0123456789abcd";

fn policy(ops_mode: &str, burst: u32) -> String {
    format!(
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

[[rooms.access]]
room = "ops"
mode = "{ops_mode}"

[[limits]]
name = "per-ip"
key = ["ip"]
requests = 1000
per_seconds = 1
burst = {burst}
"#
    )
}

/// `from` says something; `to` hears it within two seconds.
async fn talk(from: &mut Ws, to: &mut Ws, text: &str) {
    from.send(Message::Text(text.into())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, to.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(text) => return,
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("{text:?} not heard: {other:?}"),
        }
    }
}

async fn reload(g: &Gateway, text: &str) {
    let before = g.generation().await;
    rename_over(&g.policy_dir().join("p.toml"), text);
    eventually(Duration::from_secs(10), "policy applied", || async {
        (g.generation().await > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaffected_sessions_survive_reloads_and_a_newly_locked_room_is_closed() {
    let g = Gateway::start(Options::with_policy(policy("open", 100))).await;
    let (mut a, mut b) = common::ws::pair(&g, "lobby").await;
    let (mut ops, mut ops2) = common::ws::pair(&g, "ops").await;
    talk(&mut a, &mut b, "before").await;
    talk(&mut ops, &mut ops2, "ops before").await;

    // Ten reloads that change something, but nothing these sessions depend on.
    for i in 0..10 {
        reload(&g, &policy("open", 101 + i)).await;
        talk(&mut a, &mut b, &format!("after reload {i}")).await;
    }
    talk(&mut ops, &mut ops2, "ops still open").await;

    // The ops room becomes locked: its anonymous sessions are no longer admitted.
    reload(&g, &policy("locked", 200)).await;
    for ws in [&mut ops, &mut ops2] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let code = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => break u16::from(f.code),
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected a close frame, got {other:?}\n{}", g.log()),
            }
        };
        assert_eq!(code, 4403, "access revoked by policy");
    }
    // The lobby carries on.
    talk(&mut b, &mut a, "lobby after the lock").await;
    assert!(
        g.log()
            .contains("policy reload: closing a WebSocket session it no longer admits"),
        "{}",
        g.log()
    );
    let m = g.metrics().await;
    assert!(
        m.contains("reason=\"policy_revoked\"} 2"),
        "{}",
        m.lines()
            .filter(|l| l.contains("websocket"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A new anonymous join to the locked room is refused at the handshake.
    let refused = common::ws::open(&g, "localhost", "/rooms/ops/ws", None, false).await;
    assert_eq!(refused.err(), Some(401));
}
