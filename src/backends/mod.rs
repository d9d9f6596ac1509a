//! In-process backends so the gateway works out of the box: the worker HTTP API and the
//! WebSocket room server, each on its own loopback listener, reached through the proxy like any
//! upstream. They read settings from the live policy but make no gateway decisions: the gateway
//! has already authenticated and authorised what reaches them.

pub mod rooms;
pub mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

/// Addresses of the in-process backends, bound before the proxy starts.
#[derive(Debug, Clone, Copy)]
pub struct BackendAddrs {
    pub worker: std::net::SocketAddr,
    pub rooms: std::net::SocketAddr,
}

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(value).unwrap_or_default()))
        .expect("static response parts are valid")
}

pub fn error(status: u16, code: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": code }))
}

/// Serves HTTP/1.1 on `listener` with `handler` until the process ends. With `header_timeout`,
/// every request head (the first, and each next one on a kept-alive connection, so the idle
/// wait between requests too) must arrive within it, or the connection is closed.
pub async fn serve_http<H, F>(
    listener: TcpListener,
    handler: Arc<H>,
    header_timeout: Option<std::time::Duration>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.keep_alive(true);
            if let Some(t) = header_timeout {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(t);
            }
            let _ = builder
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
