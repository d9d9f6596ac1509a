//! Bodies the gateway fetches for itself (JWKS key sets, OCSP responses): read with a bound, so a
//! slow or endless responder never holds more than the bound in memory, nor the fetch until its
//! timeout.

/// Why a bounded read gave up.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Over the bound; the text says which.
    #[error("{0}")]
    TooLarge(&'static str),
    #[error("{0}")]
    Body(#[from] reqwest::Error),
}

/// Reads a response body of at most `limit` bytes: a declared length over it is refused before
/// any of the body is read, and reading stops at the first chunk past it. `too_large` is the
/// error then.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    too_large: &'static str,
) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::TooLarge(too_large));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge(too_large));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A responder that sends a header, then a body it never finishes: what a bounded read must
/// give up on without waiting for the end.
#[cfg(test)]
pub(crate) mod testing {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Keeps a test server's connection open while alive.
    pub struct Hold(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for Hold {
        fn drop(&mut self) {
            if let Some(t) = self.0.take() {
                let _ = t.send(());
            }
        }
    }

    /// Serves one connection at `http://127.0.0.1:<port>/path`: reads the request, sends `head`,
    /// then `body_bytes` of body (chunked if `head` says so), then holds the connection open
    /// without ending the body until the `Hold` is dropped.
    pub async fn stalling_server(
        head: &'static str,
        body_bytes: usize,
        path: &str,
    ) -> (String, Hold) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = vec![b' '; 16 * 1024];
            let mut sent = 0;
            while sent < body_bytes {
                let frame = if head.contains("chunked") {
                    let mut f = format!("{:x}\r\n", chunk.len()).into_bytes();
                    f.extend_from_slice(&chunk);
                    f.extend_from_slice(b"\r\n");
                    f
                } else {
                    chunk.clone()
                };
                if s.write_all(&frame).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
            let _ = hold_rx.await;
        });
        (url, Hold(Some(hold_tx)))
    }
}
