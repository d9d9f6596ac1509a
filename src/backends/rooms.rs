//! The in-process WebSocket room server at `/rooms/{room}/ws`. Every message is broadcast to the
//! room's other peers through a bounded per-peer queue: a peer whose queue fills has its backlog
//! dropped and gets `{"type":"resync"}` (the others never wait for it); a peer whose socket
//! accepts nothing for the policy's slow-peer timeout is closed with 1013 (try again later).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use crate::policy::PolicyStore;

pub const RESYNC: &str = r#"{"type":"resync"}"#;

struct Peer {
    tx: mpsc::Sender<Message>,
    overflow: Arc<AtomicBool>,
    subject: Arc<str>,
    kick: Arc<tokio::sync::Notify>,
}

/// Close code sent to a peer removed by a `kick`.
pub const KICKED: u16 = 4003;

/// What the gateway verified about a peer, from the identity headers it forwarded.
#[derive(Debug, Clone, Default)]
struct PeerIdentity {
    subject: Option<String>,
    capabilities: Vec<String>,
}

impl PeerIdentity {
    fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == "*" || c == cap)
    }
}

#[derive(Default)]
struct Room {
    peers: HashMap<u64, Peer>,
}

pub struct RoomServer {
    policy: Arc<PolicyStore>,
    rooms: Mutex<HashMap<String, Room>>,
    next_peer: AtomicU64,
    /// Times a peer's queue was found full (its backlog will be dropped).
    pub overflows: AtomicU64,
    pub resyncs: AtomicU64,
    pub slow_closes: AtomicU64,
}

/// `/rooms/{room}/ws` → room name (letters, digits, `-`, `_`, up to 64).
pub fn room_of(path: &str) -> Option<&str> {
    let room = path.strip_prefix("/rooms/")?.strip_suffix("/ws")?;
    ((1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(room)
}

fn reject(status: u16, code: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(format!("{{\"error\":\"{code}\"}}")));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl RoomServer {
    pub fn new(policy: Arc<PolicyStore>) -> Arc<Self> {
        Arc::new(RoomServer {
            policy,
            rooms: Mutex::new(HashMap::new()),
            next_peer: AtomicU64::new(1),
            overflows: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            slow_closes: AtomicU64::new(0),
        })
    }

    pub fn peers_in(&self, room: &str) -> usize {
        self.rooms
            .lock()
            .map(|r| r.get(room).map(|r| r.peers.len()).unwrap_or(0))
            .unwrap_or(0)
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(self.clone().connection(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rooms: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) {
        let settings = self.policy.snapshot().rooms.clone();
        let mut room_name = None;
        let mut who = PeerIdentity::default();
        // The error type is tungstenite's handshake response; its size is not ours to choose.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let Some(room) = room_of(req.uri().path()) else {
                return Err(reject(404, "no_such_room_path"));
            };
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            who.subject = h("x-portcullis-subject");
            who.capabilities = h("x-portcullis-capabilities")
                .map(|c| {
                    c.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if self.peers_in(room) >= settings.max_peers {
                return Err(reject(503, "room_full"));
            }
            room_name = Some(room.to_string());
            Ok(resp)
        };
        let config = WebSocketConfig {
            max_message_size: Some(settings.max_message_bytes),
            max_frame_size: Some(settings.max_message_bytes),
            ..Default::default()
        };
        let ws =
            match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                .await
            {
                Ok(ws) => ws,
                Err(e) => {
                    tracing::debug!(error = %e, "rooms: handshake refused");
                    return;
                }
            };
        let Some(room) = room_name else { return };
        let (mut sink, mut stream) = ws.split();

        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<Message>(settings.queue_capacity);
        let overflow = Arc::new(AtomicBool::new(false));
        let kick = Arc::new(tokio::sync::Notify::new());
        let subject: Arc<str> =
            Arc::from(who.subject.clone().unwrap_or_else(|| "anonymous".into()));
        let joined = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let r = rooms.entry(room.clone()).or_default();
            if r.peers.len() >= settings.max_peers {
                false
            } else {
                r.peers.insert(
                    id,
                    Peer {
                        tx: tx.clone(),
                        overflow: overflow.clone(),
                        subject: subject.clone(),
                        kick: kick.clone(),
                    },
                );
                true
            }
        };
        if !joined {
            // Lost a race for the last place since the handshake check.
            let close = CloseFrame {
                code: CloseCode::Again,
                reason: "room full".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
            return;
        }
        drop(tx);

        // Writer: drains this peer's queue into its socket.
        let server = self.clone();
        let slow = settings.slow_peer_timeout;
        let kicked = kick.clone();
        let mut writer = tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => break },
                    _ = kicked.notified() => {
                        let close = Message::Close(Some(CloseFrame { code: CloseCode::from(KICKED), reason: "kicked".into() }));
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.send(close)).await;
                        return;
                    }
                };
                let out = if overflow.swap(false, Ordering::AcqRel) {
                    // The queue overflowed: drop the backlog and tell the peer to resync.
                    while rx.try_recv().is_ok() {}
                    server.resyncs.fetch_add(1, Ordering::Relaxed);
                    Message::Text(RESYNC.to_string())
                } else {
                    msg
                };
                match tokio::time::timeout(slow, sink.send(out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        server.slow_closes.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("rooms: closing a peer that cannot keep up (1013)");
                        let close = Message::Close(Some(CloseFrame {
                            code: CloseCode::Again,
                            reason: "too slow".into(),
                        }));
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            sink.send(close),
                        )
                        .await;
                        return;
                    }
                }
            }
            let _ = sink.close().await;
        });

        // Reader: broadcasts what this peer sends, until it leaves or its writer gives up.
        let mut writer_done = false;
        let joined_at = std::time::Instant::now();
        let mut why = "writer finished";
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = &mut writer => {
                    writer_done = true;
                    break;
                }
            };
            let msg = match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
                Some(Ok(Message::Close(_))) => {
                    why = "close frame";
                    break;
                }
                None => {
                    why = "end of stream";
                    break;
                }
                Some(Err(e)) => {
                    tracing::info!(room = %room, error = %e, "rooms: peer connection failed");
                    why = "error";
                    break;
                }
                Some(Ok(_)) => continue,
            };
            if let Message::Text(t) = &msg {
                if let Some(reply) = self.control(&room, &who, t) {
                    let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(me) = rooms.get(&room).and_then(|r| r.peers.get(&id)) {
                        let _ = me.tx.try_send(Message::Text(reply));
                    }
                    continue;
                }
            }
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = rooms.get(&room) {
                for (pid, peer) in &r.peers {
                    if *pid == id {
                        continue;
                    }
                    if let Err(mpsc::error::TrySendError::Full(_)) = peer.tx.try_send(msg.clone()) {
                        if !peer.overflow.swap(true, Ordering::AcqRel) {
                            self.overflows.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        tracing::debug!(room = %room, why, after_ms = joined_at.elapsed().as_millis() as u64, "rooms: peer left");
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = rooms.get_mut(&room) {
                r.peers.remove(&id);
                if r.peers.is_empty() {
                    rooms.remove(&room);
                }
            }
        }
        // Dropping the peer's sender ends the writer once its queue is drained.
        if !writer_done {
            let _ = writer.await;
        }
    }
}

impl RoomServer {
    /// Handles a control message (`{"type":"kick","subject":"…"}`); returns the reply for the
    /// sender, or `None` when the message is ordinary room traffic.
    fn control(&self, room: &str, who: &PeerIdentity, text: &str) -> Option<String> {
        if !text.starts_with('{') || !text.contains("\"type\"") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        match v.get("type").and_then(|t| t.as_str())? {
            "kick" => {
                if !who.has("room.admin") {
                    return Some(
                        r#"{"type":"error","error":"capability_denied","required":"room.admin"}"#
                            .to_string(),
                    );
                }
                let target = v.get("subject").and_then(|s| s.as_str()).unwrap_or("");
                let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
                let mut kicked = 0;
                if let Some(r) = rooms.get(room) {
                    for p in r.peers.values().filter(|p| &*p.subject == target) {
                        p.kick.notify_one();
                        kicked += 1;
                    }
                }
                tracing::info!(room, target, kicked, by = ?who.subject, "rooms: kick");
                Some(
                    serde_json::json!({"type": "kicked", "subject": target, "peers": kicked})
                        .to_string(),
                )
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_paths() {
        assert_eq!(room_of("/rooms/lobby/ws"), Some("lobby"));
        assert_eq!(room_of("/rooms//ws"), None);
        assert_eq!(room_of("/rooms/a/b/ws"), None);
        assert_eq!(room_of("/rooms/lobby"), None);
    }
}
