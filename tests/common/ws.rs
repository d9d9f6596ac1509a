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
