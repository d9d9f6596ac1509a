//! The `ProxyHttp` implementation: an adapter between Pingora's phases and the gateway's
//! decisions (`crate::decide`, see docs/architecture.md). Each request takes ONE policy snapshot
//! in `early_request_filter`; `request_filter` hands the request to `decide` and applies the
//! answer (the canonical target, stripped queries, WebSocket timers, or the JSON refusal and the
//! logs and alerts it sets off); the later hooks write headers, watch WebSocket budgets, and
//! record the outcome.
//!
//! This file holds the gateway, the request's context and the hooks; each hook's work lives in
//! the file of its phase, in the order a request meets them: `connection.rs` (the client
//! connection's bounds), `request.rs`, `upstream.rs`, `response.rs`, `failure.rs` and `log.rs`;
//! `tunnel.rs` serves the WebSocket hooks beside `websocket.rs` (the open sessions are
//! `crate::sessions`).

mod connection;
mod failure;
mod log;
mod request;
mod response;
mod tunnel;
mod upstream;
pub mod websocket;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::decide;
use crate::handles::Shared;
use crate::http::deny::Deny;
use crate::policy::model::Policy;

/// The gateway's `ProxyHttp`: the process's shared handles and the request-id sequence.
pub struct Gateway {
    pub handles: Arc<Shared>,
    request_seq: AtomicU64,
    request_prefix: u32,
    /// The route label of requests no route answered.
    no_route: Arc<str>,
}

impl Gateway {
    pub fn new(handles: Arc<Shared>) -> Self {
        Gateway {
            handles,
            request_seq: AtomicU64::new(0),
            request_prefix: rand::random(),
            no_route: Arc::from("-"),
        }
    }
}

/// Decrements the in-flight count when a request's context is dropped, however it ends.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything one request decided, against one policy snapshot.
pub struct RequestCtx {
    _in_flight: InFlight,
    pub policy: Option<Arc<Policy>>,
    /// What the decisions learned: client, host, route, identity.
    pub facts: decide::Facts,
    pub deny: Option<Deny>,
    pub request_id: Option<HeaderValue>,
    pub started: Instant,
    /// Request body bytes seen (for the route's body limit on chunked uploads).
    pub body_bytes: u64,
    /// Client→server frame accounting on an upgraded WebSocket.
    pub ws_meter: Option<websocket::FrameMeter>,
    /// When the session's token expires.
    pub ws_deadline: Option<Instant>,
    pub ws_idle: Duration,
    /// The gateway has sent its close frame and waits (briefly) for the client's reply, dropping
    /// data both ways, so the close frame is read before the TCP connection goes.
    pub ws_closing: bool,
    /// The response had started when the proxy failed, and was aborted.
    pub response_aborted: bool,
    /// The external address `decide` chose, and those the request failed to connect to.
    pub upstream_addr: Option<decide::upstream::Choice>,
    /// This response's CSP nonce (routes whose header profile asks for one).
    pub csp_nonce: Option<String>,
    /// A safe request on a CSRF route without the CSRF cookie: the response issues one.
    pub issue_csrf: bool,
    /// When the request went upstream, and how long the upstream took to answer its head.
    pub upstream_sent: Option<Instant>,
    pub upstream_took: Option<Duration>,
    /// The request was sent again after a reused upstream connection failed.
    pub retried: bool,
    /// The WebSocket session was opened (101), and why the gateway closed it, if it did.
    pub ws_open: bool,
    pub ws_close: Option<&'static str>,
    /// The session's entry among the open WebSocket sessions.
    pub ws_guard: Option<crate::sessions::WsGuard>,
    /// OpenTelemetry spans, when tracing is on.
    pub trace: Option<Box<crate::observability::otel::RequestSpans>>,
}

impl RequestCtx {
    fn route_name(&self) -> &str {
        self.policy
            .as_deref()
            .and_then(|p| self.facts.route_name(p))
            .unwrap_or("-")
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.handles.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestCtx {
            _in_flight: InFlight(self.handles.in_flight.clone()),
            policy: None,
            facts: decide::Facts::default(),
            deny: None,
            request_id: None,
            started: Instant::now(),
            body_bytes: 0,
            ws_meter: None,
            ws_deadline: None,
            ws_idle: Duration::from_secs(300),
            ws_closing: false,
            response_aborted: false,
            upstream_addr: None,
            csp_nonce: None,
            issue_csrf: false,
            upstream_sent: None,
            upstream_took: None,
            retried: false,
            ws_open: false,
            ws_close: None,
            ws_guard: None,
            trace: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.start_request(session, ctx).await
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.admit(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.watch_request_body(session, body, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.peer_for(ctx)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.retry_elsewhere(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.retry_reused(peer, session, e, ctx, client_reused)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(g) = &ctx.ws_guard {
            g.session.set_upstream(fd);
        }
        self.count_connection(reused, ctx);
        self.check_upstream_tls(peer, digest, ctx)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.write_upstream_headers(upstream_request, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.take_response_head(session, upstream_response, ctx)
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        self.log_failure_below_error(ctx, e)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.watch_response_body(body, end_of_stream, ctx)
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        self.summarize(session)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log_request(session, e, ctx).await
    }
}
