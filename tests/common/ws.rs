//! WebSocket clients for tests: wss through the gateway with the test CA, an optional bearer
//! token, and an optional tiny receive buffer (to make a peer that stops reading fill up fast).

use super::Gateway;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens `wss://{host}{path_and_query}`; a refused handshake returns its HTTP status.
pub async fn open(
    g: &Gateway,
    host: &str,
    path_and_query: &str,
    bearer: Option<&str>,
    small_buffer: bool,
) -> Result<Ws, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if small_buffer {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let tcp = socket.connect(g.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(g.tls_client_config())
        .connect(host.to_string().try_into().unwrap(), tcp)
        .await
        .unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("wss://{host}:{}{path_and_query}", g.https.port())
        .into_client_request()
        .unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::client_async(req, tls).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// Opens a second peer in `room` and returns it once it hears `a` (already in the room): a
/// peer's 101 can arrive a moment before the room server has registered it, so `a` repeats a
/// greeting until it is heard. A tunnel that ends instead is a failure: the gateway must keep
/// every upgraded session open (see `vendor/README.md`).
pub async fn join(g: &Gateway, a: &mut Ws, room: &str, small_buffer: bool) -> Ws {
    match try_join(g, a, room, small_buffer).await {
        Ok(b) => b,
        Err(e) => panic!("{e}\n{}", g.log()),
    }
}

/// Two peers that have met in `room`.
pub async fn pair(g: &Gateway, room: &str) -> (Ws, Ws) {
    let mut a = open(g, "localhost", &format!("/rooms/{room}/ws"), None, false)
        .await
        .unwrap_or_else(|s| panic!("opening {room}: HTTP {s}"));
    let b = join(g, &mut a, room, false).await;
    (a, b)
}

pub async fn try_join(
    g: &Gateway,
    a: &mut Ws,
    room: &str,
    small_buffer: bool,
) -> Result<Ws, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut b = open(
        g,
        "localhost",
        &format!("/rooms/{room}/ws"),
        None,
        small_buffer,
    )
    .await
    .unwrap_or_else(|s| panic!("joining {room}: HTTP {s}"));
    for i in 0..150 {
        if let Err(e) = a.send(Message::Text(format!("hello-{i}"))).await {
            return Err(format!(
                "the first peer's connection failed while {room} was joined: {e}"
            ));
        }
        match tokio::time::timeout(std::time::Duration::from_millis(200), b.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with("hello-") => return Ok(b),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                return Err(format!(
                    "the second peer's session to {room} ended right after its upgrade"
                ));
            }
            _ => {}
        }
    }
    Err(format!("peers never met in {room}"))
}
