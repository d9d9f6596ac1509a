//! The `ProxyHttp` implementation: an adapter between Pingora's phases and the gateway's
//! decisions (`crate::decide`, see docs/architecture.md). Each request takes ONE policy snapshot
//! in `early_request_filter`; `request_filter` hands the request to `decide` and applies the
//! answer (the canonical target, stripped queries, WebSocket timers, or the JSON refusal and the
//! logs and alerts it sets off); the later hooks write headers, watch WebSocket budgets, and
//! record the outcome.

pub mod sessions;
pub mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::auth::{self, AuthState};
use crate::connections::HeaderDeadline;
use crate::decide::{self, screen};
use crate::http::deny::Deny;
use crate::http::{cors, headers as profiles, host};
use crate::limits::{AuthBackoff, LimiterRegistry};
use crate::observability::Metrics;
use crate::policy::model::{Policy, UpstreamTarget};
use crate::policy::PolicyStore;
use crate::upstreams::Resilience;

/// Addresses of the in-process backends, bound before the proxy starts.
#[derive(Debug, Clone, Copy)]
pub struct BackendAddrs {
    pub worker: SocketAddr,
    pub rooms: SocketAddr,
}

pub struct Gateway {
    pub policy: Arc<PolicyStore>,
    pub auth: Arc<AuthState>,
    pub limiters: Arc<LimiterRegistry>,
    pub backoff: Arc<AuthBackoff>,
    pub resilience: Arc<Resilience>,
    pub header_deadline: Arc<HeaderDeadline>,
    pub backends: BackendAddrs,
    pub metrics: Arc<Metrics>,
    pub in_flight: Arc<AtomicUsize>,
    /// Open WebSocket sessions, re-checked on each policy reload.
    pub ws_sessions: Arc<sessions::WsRegistry>,
    /// State shared with other replicas (Redis), when the policy configures it.
    pub shared: Arc<crate::shared::SharedStore>,
    /// `[network]` of the static configuration: idle, body and requests-per-connection bounds.
    pub connections: crate::config::ConnectionBounds,
    request_seq: AtomicU64,
    request_prefix: u32,
    /// The route label of requests no route answered.
    no_route: Arc<str>,
}

impl Gateway {
    // One argument per shared component, all built once in `serve`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Arc<PolicyStore>,
        auth: Arc<AuthState>,
        limits: (Arc<LimiterRegistry>, Arc<AuthBackoff>),
        resilience: Arc<Resilience>,
        header_deadline: Arc<HeaderDeadline>,
        backends: BackendAddrs,
        metrics: Arc<Metrics>,
        in_flight: Arc<AtomicUsize>,
        ws_sessions: Arc<sessions::WsRegistry>,
        shared: Arc<crate::shared::SharedStore>,
    ) -> Self {
        Gateway {
            policy,
            auth,
            limiters: limits.0,
            backoff: limits.1,
            resilience,
            header_deadline,
            backends,
            metrics,
            in_flight,
            ws_sessions,
            shared,
            connections: crate::config::ConnectionBounds::default(),
            request_seq: AtomicU64::new(0),
            request_prefix: rand::random(),
            no_route: Arc::from("-"),
        }
    }
}

/// Bounds the life of the request's connection: how long an HTTP/1.1 connection may idle
/// before the next request, how long the next request's header may take once it has started,
/// and how long this request's body (HTTP/1.1 or HTTP/2) may go without a byte. Set on every
/// request so the bounds follow the connection across keep-alive reuse; a WebSocket tunnel
/// re-arms its own read timeout at 101.
fn bound_connection(
    session: &mut Session,
    bounds: &crate::config::ConnectionBounds,
    header_timeout: Duration,
) {
    // Only where keep-alive is already on: an HTTP/1.0 client without keep-alive, or one that
    // said `Connection: close`, keeps its connection closing.
    if let (Some(_), Some(idle)) = (session.get_keepalive(), bounds.keepalive_timeout) {
        session.set_keepalive(Some(idle.as_secs().max(1)));
    }
    session.set_header_timeout(Some(header_timeout));
    session.set_read_timeout(bounds.body_timeout);
    // Each write of the response (HTTP/2: each wait for the stream's flow-control window) must
    // complete within the bound: a client that stops reading cannot hold the connection.
    session.set_write_timeout(bounds.send_timeout);
    // Pipelined requests (RFC 9112 §9.3.2) are answered one after another, in order; without
    // this Pingora answered the first with `keep-alive` and then dropped the rest.
    session.set_pipelining_enabled(true);
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
    /// The WebSocket session was opened (101), and why the gateway closed it, if it did.
    pub ws_open: bool,
    pub ws_close: Option<&'static str>,
    /// The session's entry among the open WebSocket sessions.
    pub ws_guard: Option<sessions::WsGuard>,
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
/// The client's address as a header value; an IPv4 address is written without `fmt`.
fn address_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an address is a header value");
    };
    let (buf, n) = crate::http::digits::ipv4(v4);
    HeaderValue::from_bytes(&buf[..n]).expect("digits and dots are a header value")
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_SUBJECT: HeaderName = HeaderName::from_static("x-portcullis-subject");
static X_CAPABILITIES: HeaderName = HeaderName::from_static("x-portcullis-capabilities");
static X_ROOM: HeaderName = HeaderName::from_static("x-portcullis-room");
static X_AUTH: HeaderName = HeaderName::from_static("x-portcullis-auth");
static X_ROUTE: HeaderName = HeaderName::from_static("x-portcullis-route");
static X_CLIENT_CERT: HeaderName = HeaderName::from_static("x-portcullis-client-cert");
static X_CSP_NONCE: HeaderName = HeaderName::from_static("x-portcullis-csp-nonce");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const HEALTH_BODY: &[u8] = br#"{"status":"ok"}"#;

/// The security event a refusal is, if any.
fn security_event(d: &Deny) -> Option<crate::observability::alerts::EventKind> {
    use crate::observability::alerts::EventKind;
    Some(match d {
        d if d.is_auth_failure() => EventKind::AuthFailure,
        Deny::BlockedPath
        | Deny::PathParameterOnBlocked
        | Deny::LookalikeOfBlocked
        | Deny::PathParameterOnAdmin
        | Deny::LookalikeOfAdmin => EventKind::BlockedPath,
        Deny::Csrf(_) => EventKind::Csrf,
        Deny::BadForwardedFor => EventKind::BadForwardedFor,
        _ => return None,
    })
}

/// Drops the query string (a verified signed URL's parameters are not forwarded).
fn strip_query(session: &mut Session) {
    let req = session.req_header();
    if let Some(uri) = screen::with_target(&req.uri, req.uri.path().to_string()) {
        session.req_header_mut().set_uri(uri);
    }
}

/// Removes `access_token` from the request target so it is never forwarded.
fn strip_query_token(session: &mut Session) {
    let req = session.req_header();
    let Some(q) = req.uri.query() else { return };
    if auth::query_token(q).is_none() && !q.split('&').any(|kv| kv == "access_token") {
        return;
    }
    let rest = auth::strip_query_token(q);
    let target = if rest.is_empty() {
        req.uri.path().to_string()
    } else {
        format!("{}?{rest}", req.uri.path())
    };
    if let Some(uri) = screen::with_target(&req.uri, target) {
        session.req_header_mut().set_uri(uri);
    }
}

/// Removes cookie `name` from the request's `Cookie` headers, keeping the others.
fn strip_cookie(req: &mut RequestHeader, name: &str) -> Result<()> {
    let kept: Vec<String> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(name))
        .map(str::to_string)
        .collect();
    req.remove_header(&header::COOKIE);
    if !kept.is_empty() {
        req.insert_header(header::COOKIE, kept.join("; "))?;
    }
    Ok(())
}

/// Client headers that legacy stacks or other proxies take as the client's address, its host,
/// its scheme, the path or the method: always removed (a path or method override gets past
/// blocked paths and method allow-lists). Sorted, for a binary search with `_` read as `-`.
const OVERRIDE_HEADERS: [&[u8]; 28] = [
    b"cf-connecting-ip",
    b"client-ip",
    b"fastly-client-ip",
    b"forwarded",
    b"forwarded-for",
    b"front-end-https",
    b"proxy-client-ip",
    b"true-client-ip",
    b"wl-proxy-client-ip",
    b"x-client-ip",
    b"x-cluster-client-ip",
    b"x-envoy-external-address",
    b"x-envoy-original-path",
    b"x-forwarded",
    b"x-host",
    b"x-http-method",
    b"x-http-method-override",
    b"x-method-override",
    b"x-original-host",
    b"x-original-uri",
    b"x-original-url",
    b"x-originating-ip",
    b"x-proxyuser-ip",
    b"x-real-ip",
    b"x-remote-addr",
    b"x-remote-ip",
    b"x-request-id",
    b"x-rewrite-url",
];

/// Headers a client may not set: identity and forwarding headers are the gateway's to write, and
/// the override headers above. Names are compared with `_` read as `-`, as CGI-style stacks
/// (WSGI, PHP, Apache CGI) read them, so `X_Portcullis_Subject` is `X-Portcullis-Subject`.
fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    starts_folded(n, b"x-portcullis-")
        || starts_folded(n, b"x-forwarded-")
        || OVERRIDE_HEADERS
            .binary_search_by(|h| cmp_folded(h, n))
            .is_ok()
}

/// Orders a listed name against a lower-case header name read with `_` as `-`.
fn cmp_folded(listed: &[u8], name: &[u8]) -> std::cmp::Ordering {
    let fold = |c: &u8| if *c == b'_' { b'-' } else { *c };
    listed.iter().copied().cmp(name.iter().map(fold))
}

/// Whether two lower-case header names are the same with `_` read as `-`.
fn eq_folded(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

fn starts_folded(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && eq_folded(&name[..prefix.len()], prefix)
}

/// The request's `Host` (or HTTP/2 `:authority`) as sent, `None` when there is none.
fn raw_host(req: &RequestHeader) -> Option<Result<&str, ()>> {
    match req.headers.get(header::HOST) {
        Some(h) => Some(h.to_str().map_err(|_| ())),
        None => req.uri.authority().map(|a| Ok(a.as_str())),
    }
}

/// The request's host without port or trailing dot (see `host::normalize`), lower-case
/// comparison left to the matchers; empty when absent or invalid (refused early).
fn request_host(req: &RequestHeader) -> &str {
    match raw_host(req) {
        Some(Ok(raw)) => host::normalize(raw).unwrap_or(""),
        _ => "",
    }
}

/// Whether the request announces a body (chunked, or a non-zero Content-Length).
fn declares_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(header::TRANSFER_ENCODING)
        || req
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Whether raw HTTP/1 header bytes carry a Content-Length field (any case, any spacing).
fn raw_has_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > 14
            && line[..14].eq_ignore_ascii_case(b"content-length")
            && line[14..].iter().find(|b| !matches!(b, b' ' | b'\t')) == Some(&b':')
    })
}

impl Gateway {
    fn new_request_id(&self) -> HeaderValue {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 24];
        let s = format_request_id(self.request_prefix, n, &mut buf);
        HeaderValue::from_bytes(s).expect("hex is a valid header value")
    }

    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        body: Bytes,
    ) -> Result<()> {
        let mut resp = ResponseHeader::build_no_case(status, Some(7))?;
        resp.insert_header(header::CONTENT_TYPE, JSON)?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(header::CACHE_CONTROL, NO_STORE)?;
        if status == 405 {
            if let (Some(p), Some(r)) = (&ctx.policy, ctx.facts.route) {
                resp.insert_header(header::ALLOW, p.routes[r].methods.names().join(", "))?;
            }
        }
        if let Some(d) = &ctx.deny {
            if let Some(challenge) = d.www_authenticate() {
                resp.insert_header(header::WWW_AUTHENTICATE, challenge.as_ref())?;
            }
            for (name, value) in d.extra_headers() {
                resp.insert_header(name, value)?;
            }
        }
        self.decorate(&mut resp, ctx, session.req_header())?;
        // Keep the connection only when no request body could be left unread on it, and never
        // after a framing problem.
        let framing = matches!(ctx.deny, Some(Deny::AmbiguousLength));
        if framing || declares_body(session.req_header()) {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }

    async fn deny(&self, session: &mut Session, ctx: &mut RequestCtx, deny: Deny) -> Result<bool> {
        let status = deny.status();
        let body = match deny.body() {
            std::borrow::Cow::Borrowed(b) => Bytes::from_static(b),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        };
        ctx.deny = Some(deny);
        self.respond(session, ctx, status, body).await?;
        Ok(true)
    }

    /// What a refusal sets off besides its response: the security log, the CSRF metric, the
    /// lockout alert, closing a connection whose client certificate no longer passes.
    fn refused(&self, session: &mut Session, ctx: &RequestCtx, d: &Deny) {
        let client = ctx
            .facts
            .client_key
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if let Some(why) = ctx.facts.cert_refused {
            tracing::info!(
                target: "portcullis::security",
                reason = why,
                client = %client,
                "client certificate no longer passes: closing the connection"
            );
            close_client_connection(session);
        }
        if let Some(lockout) = ctx.facts.lockout {
            tracing::warn!(
                target: "portcullis::security",
                client = %client,
                lockout_seconds = lockout.as_secs(),
                "authentication lockout"
            );
            crate::observability::alerts::emit(
                crate::observability::alerts::EventKind::Lockout,
                ctx.facts.client,
            );
        }
        let path = session.req_header().uri.path();
        match d {
            Deny::BlockedPath => tracing::info!(
                target: "portcullis::security",
                path,
                client = %client,
                "blocked path refused"
            ),
            Deny::Signature(f) => tracing::info!(
                target: "portcullis::security",
                reason = f.code(),
                client = %client,
                "signed URL refused"
            ),
            Deny::AdminRequired => tracing::info!(
                target: "portcullis::security",
                path,
                client = %client,
                "admin path refused"
            ),
            Deny::Csrf(f) => {
                self.metrics.csrf_failure(*f);
                tracing::info!(
                    target: "portcullis::security",
                    reason = f.reason(),
                    client = %client,
                    route = ctx.route_name(),
                    "CSRF check failed"
                );
            }
            _ => {}
        }
    }

    /// Sends a close frame to the WebSocket client (best effort: it may be gone already).
    async fn close_websocket(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        close: websocket::Close,
    ) {
        ctx.ws_close = Some(close.metric());
        if matches!(
            close,
            websocket::Close::PolicyViolation(_) | websocket::Close::TooBig
        ) {
            crate::observability::alerts::emit(
                crate::observability::alerts::EventKind::BudgetClose,
                ctx.facts.client,
            );
        }
        tracing::info!(
            target: "portcullis::security",
            code = close.code(),
            reason = close.reason(),
            "closing WebSocket session"
        );
        let frame = Bytes::from(close.frame());
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            session.write_response_body(Some(frame), false),
        )
        .await;
    }

    /// Headers every HTTPS response carries: HSTS, the request id, the route's security-header
    /// profile (replacing upstream values), CORS for an allowed origin, a CSRF cookie when one is
    /// due; `Server`, `X-Powered-By` and the policy's other removals go.
    fn decorate(
        &self,
        resp: &mut ResponseHeader,
        ctx: &RequestCtx,
        req: &RequestHeader,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            resp.insert_header(X_REQUEST_ID.clone(), id.clone())?;
        }
        let Some(policy) = ctx.policy.as_ref() else {
            resp.remove_header(&header::SERVER);
            return Ok(());
        };
        if let Some(hsts) = &policy.hsts {
            resp.insert_header(header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        for name in &policy.headers.remove {
            resp.remove_header(name);
        }
        let route = ctx.facts.route.map(|r| &policy.routes[r]);
        // On a route with a CORS rule, the rule is the only CORS answer: an upstream's own grants
        // go before the header profile and the rule add the gateway's (a preflight's own answer
        // carries the rule's headers already).
        if route.is_some_and(|r| r.cors.is_some()) && !cors::is_preflight(&req.method, &req.headers)
        {
            for name in cors::upstream_grants(&resp.headers) {
                resp.remove_header(&name);
            }
        }
        let profile = &policy.headers.profiles[route.map_or(policy.headers.default, |r| r.headers)];
        for (name, value) in &profile.set {
            resp.insert_header(name.clone(), value.clone())?;
        }
        if let Some((name, value)) = ctx.csp_nonce.as_deref().and_then(|n| profile.csp_with(n)) {
            resp.insert_header(name, value)?;
        }
        let Some(route) = route else {
            return Ok(());
        };
        if let Some(rule) = &route.cors {
            // A preflight's own answer carries its headers; a refused one gets none.
            if !cors::is_preflight(&req.method, &req.headers) {
                resp.append_header(header::VARY, cors::VARY_ORIGIN)?;
                for (name, value) in rule.actual(req.headers.get(header::ORIGIN)) {
                    resp.insert_header(name, value)?;
                }
            } else if resp.status != http::StatusCode::NO_CONTENT {
                resp.append_header(header::VARY, cors::VARY_PREFLIGHT)?;
            }
        }
        if ctx.issue_csrf {
            if let Some(rule) = &route.csrf {
                resp.append_header(header::SET_COOKIE, rule.issue())?;
            }
        }
        Ok(())
    }

    /// Answers an allowed CORS preflight with 204.
    async fn respond_preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<()> {
        let mut resp = ResponseHeader::build_no_case(204, Some(8))?;
        for (name, value) in headers {
            resp.insert_header(name, value)?;
        }
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
        self.decorate(&mut resp, ctx, session.req_header())?;
        if declares_body(session.req_header()) {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), true).await?;
        Ok(())
    }
}

/// Ends the client's connection after this response: HTTP/1.1 by not keeping it alive; HTTP/2,
/// whose other streams share it, by shutting the socket's read side, so the connection ends
/// once the server sees end of input. A stream can outlive its connection and the descriptor
/// be reused by then: it is shut down only while its addresses are still the connection's.
fn close_client_connection(session: &mut Session) {
    session.set_keepalive(None);
    if session.is_http2() {
        let Some(s) = session.digest().and_then(|d| d.socket_digest.as_ref()) else {
            return;
        };
        // The peer address is read at accept (it is the client's); the local one when first
        // asked for, so it is compared only if it was.
        let inet = |a: Option<&Option<pingora::protocols::l4::socket::SocketAddr>>| {
            a.map(|a| a.as_ref().and_then(|a| a.as_inet().copied()))
        };
        let Some(Some(peer)) = inet(s.peer_addr.get()) else {
            return;
        };
        let fd = s.raw_fd();
        let Some((now_local, now_peer)) = sessions::addresses(fd) else {
            return;
        };
        let same_local = match inet(s.local_addr.get()) {
            Some(local) => local == Some(now_local),
            None => true,
        };
        if now_peer == peer && same_local {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
        }
    }
}

/// The read timeout of a WebSocket tunnel: idle timeout or token expiry, whichever is sooner.
/// The close frame for a session the gateway revoked (policy reload or revoked token).
fn revoked_close(ctx: &RequestCtx) -> Option<websocket::Close> {
    let s = &ctx.ws_guard.as_ref()?.session;
    if !s.revoked.load(Ordering::Acquire) {
        return None;
    }
    Some(match s.close_reason() {
        sessions::Why::PolicyRevoked => websocket::Close::PolicyRevoked,
        sessions::Why::TokenRevoked => websocket::Close::TokenRevoked,
    })
}

fn ws_timeout(ctx: &RequestCtx, now: Instant) -> Duration {
    let idle = ctx.ws_idle;
    match ctx.ws_deadline {
        Some(d) => d
            .saturating_duration_since(now)
            .min(idle)
            .max(Duration::from_millis(1)),
        None => idle,
    }
}

fn format_request_id(prefix: u32, n: u64, buf: &mut [u8; 24]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..8 {
        buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        buf[8 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    &buf[..]
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestCtx {
            _in_flight: InFlight(self.in_flight.clone()),
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
        let policy = self.policy.snapshot();
        bound_connection(session, &self.connections, policy.network.header_timeout);
        ctx.request_id = Some(self.new_request_id());
        if let Some(otel) = crate::observability::otel::get() {
            let req = session.req_header();
            ctx.trace = Some(otel.start_request(&req.headers, req.method.as_str()));
        }
        if let Some(peer_addr) = session.client_addr().and_then(|a| a.as_inet()) {
            // The connection delivered a request header: it is off the slowloris watch.
            self.header_deadline.request_seen(peer_addr);
        }
        ctx.policy = Some(policy);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(policy) = ctx.policy.clone() else {
            return self.deny(session, ctx, Deny::Internal).await;
        };
        let shadow = || self.metrics.shadow_denial();
        let deps = decide::Deps {
            now: decide::Now::read(),
            auth: &self.auth,
            limiters: &self.limiters,
            backoff: &self.backoff,
            resilience: &self.resilience,
            shared: Some(&self.shared),
            on_shadow: &shadow,
        };
        let verdict = {
            let req = session.req_header();
            // Pingora resolves CL+TE on HTTP/1 by dropping Content-Length: the raw header bytes
            // still show the client's.
            let raw_content_length = req.headers.contains_key(header::TRANSFER_ENCODING)
                && session
                    .as_downstream()
                    .as_http1()
                    .is_some_and(|v1| raw_has_content_length(&v1.get_headers_raw_bytes()));
            let view = decide::RequestView {
                method: &req.method,
                uri: &req.uri,
                raw_target: req.raw_path(),
                version: req.version,
                headers: &req.headers,
                raw_content_length,
                upgrade: session.is_upgrade_req(),
                peer: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip()),
                tls: crate::tls::client_auth::handshake_info(session),
            };
            decide::decide(&policy, &view, &deps, &mut ctx.facts).await
        };
        // Forward exactly the path that was matched (and log it, whatever the outcome).
        if let Some(uri) = ctx.facts.target.take() {
            session.req_header_mut().set_uri(*uri);
        }
        let forward = match verdict {
            Ok(decide::Admission::Forward(f)) => f,
            Ok(decide::Admission::Health) => {
                self.respond(session, ctx, 200, Bytes::from_static(HEALTH_BODY))
                    .await?;
                return Ok(true);
            }
            Ok(decide::Admission::Preflight(headers)) => {
                self.respond_preflight(session, ctx, headers).await?;
                return Ok(true);
            }
            Err(d) => {
                self.refused(session, ctx, &d);
                return self.deny(session, ctx, d).await;
            }
        };
        if forward.strip_query {
            strip_query(session);
        }
        ctx.issue_csrf = forward.issue_csrf;
        ctx.upstream_addr = forward.address;
        let route = &policy.routes[ctx.facts.route.expect("a forwarded request has a route")];
        if policy.headers.profiles[route.headers].csp_nonce.is_some() {
            ctx.csp_nonce = Some(profiles::new_nonce());
        }
        if ctx.facts.websocket {
            // Upgraded tunnels are long-lived: the read timeout is the policy's idle timeout or
            // the time left on the token, whichever is sooner, re-armed on every client frame.
            let now = Instant::now();
            ctx.ws_meter = Some(websocket::FrameMeter::new(policy.websocket, now));
            ctx.ws_idle = policy.websocket.idle_timeout;
            ctx.ws_deadline = ctx
                .facts
                .identity
                .as_ref()
                .and_then(|i| i.expires_at)
                .map(|exp| {
                    let wall = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    now + Duration::from_secs(exp).saturating_sub(wall)
                });
            session.set_read_timeout(Some(ws_timeout(ctx, now)));
            ctx.ws_guard = Some(self.ws_sessions.register(
                route.name.clone(),
                session.req_header().uri.path(),
                ctx.facts.identity.clone(),
                crate::tls::client_auth::handshake_info(session).map(|h| h.cert.clone()),
            ));
        }
        if forward.strip_token {
            strip_query_token(session);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.facts.websocket && ctx.ws_closing {
            // Closing handshake: discard what the client still sends until its close frame.
            let now = Instant::now();
            let done = match (body.take(), ctx.ws_meter.as_mut()) {
                (Some(b), Some(m)) => m.await_close(&b, now),
                _ => true,
            };
            if done {
                return Error::e_explain(
                    ErrorType::Custom("websocket closed"),
                    "closing handshake done",
                );
            }
            return Ok(());
        }
        if ctx.facts.websocket {
            let now = Instant::now();
            let verdict = if let Some(close) = revoked_close(ctx) {
                Err(close)
            } else if ctx.ws_deadline.is_some_and(|d| now >= d) {
                Err(websocket::Close::TokenExpired)
            } else {
                match (body.as_ref(), ctx.ws_meter.as_mut()) {
                    (Some(b), Some(m)) => m.feed(b, now),
                    _ => Ok(()),
                }
            };
            if let Err(close) = verdict {
                self.close_websocket(session, ctx, close).await;
                // Wait up to a second for the client's close reply: closing the socket with the
                // client's data unread would reset it, and a reset can discard our close frame.
                ctx.ws_closing = true;
                *body = None;
                session.set_read_timeout(Some(Duration::from_secs(1)));
                return Ok(());
            }
            session.set_read_timeout(Some(ws_timeout(ctx, now)));
            return Ok(());
        }
        if let (Some(b), Some(p), Some(r)) = (body.as_ref(), &ctx.policy, ctx.facts.route) {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > p.routes[r].max_body_bytes {
                ctx.deny = Some(Deny::BodyTooLarge);
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route's limit",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        let mut peer = match &upstream.target {
            UpstreamTarget::Worker => HttpPeer::new(self.backends.worker, false, String::new()),
            UpstreamTarget::Rooms => HttpPeer::new(self.backends.rooms, false, String::new()),
            UpstreamTarget::External {
                addresses,
                tls,
                sni,
            } => {
                let state = match &ctx.upstream_addr {
                    Some(c) => c.state.clone(),
                    None => self.resilience.address(
                        policy,
                        policy.routes[r].upstream,
                        upstream.next_address(addresses),
                    ),
                };
                // Names were resolved when the policy was applied and are refreshed on a
                // timer: a request never looks one up.
                let Some(addr) = state.socket_addr() else {
                    let mut e = Error::new_up(ErrorType::ConnectNoRoute);
                    e.set_context("the upstream's address name has not resolved");
                    return Err(e);
                };
                HttpPeer::new(addr, *tls, sni.clone())
            }
        };
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.total_connection_timeout =
            Some(upstream.connect_timeout + Duration::from_secs(1));
        peer.options.read_timeout = if ctx.facts.websocket {
            None
        } else {
            Some(upstream.read_timeout)
        };
        peer.options.idle_timeout = Some(upstream.idle_timeout);
        if let Some(ca) = &upstream.tls_ca {
            peer.options.ca = Some(ca.clone());
        }
        peer.group_key = upstream.tls_group;
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        Ok(Box::new(peer))
    }

    /// A connection to an external address failed (refused, timed out, TLS refused): nothing
    /// reached the upstream, so the request, body and all, may go to another address. The
    /// failure counts against this address's circuit, and the next address whose circuit admits
    /// a request and that this request has not tried is picked; with none left the error
    /// stands and the client gets its 502.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return e;
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        let (Some(choice), false) = (ctx.upstream_addr.as_mut(), ctx.facts.websocket) else {
            return e;
        };
        let from = choice.idx;
        if decide::upstream::retry(policy, choice, &self.resilience) {
            if let UpstreamTarget::External { addresses, .. } = &upstream.target {
                tracing::info!(
                    upstream = &*upstream.name,
                    address = %addresses[from],
                    next = %addresses[choice.idx],
                    reason = %e,
                    "upstream connect failed; trying the next address"
                );
            }
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(g) = &ctx.ws_guard {
            g.session.set_upstream(fd);
        }
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return Ok(());
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        if !upstream.tls13_only {
            return Ok(());
        }
        let version = digest
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|s| s.version.to_string())
            .unwrap_or_default();
        if version != "TLSv1_3" && version != "TLSv1.3" {
            tracing::warn!(
                upstream = &*upstream.name,
                address = %peer._address,
                negotiated = if version.is_empty() { "none" } else { version.as_str() },
                "upstream TLS refused: below the minimum TLS 1.3"
            );
            let mut e = Error::new_up(ErrorType::TLSHandshakeFailure);
            e.set_context(format!(
                "upstream negotiated {version}, below the minimum TLS 1.3"
            ));
            return Err(e);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let policy = ctx.policy.as_ref();
        let route = policy.zip(ctx.facts.route).map(|(p, r)| &p.routes[r]);
        // Names with `_` are dropped unless the policy allows them (nginx's
        // `underscores_in_headers off`): a CGI-style backend reads them as their `-` twins.
        let drop_underscores = !policy.is_some_and(|p| p.network.allow_underscores_in_headers);
        let strip: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|k| {
                let name = k.as_str();
                is_identity_header(name)
                    || (drop_underscores && name.contains('_'))
                    || policy.is_some_and(|p| {
                        p.auth
                            .strip_headers
                            .iter()
                            .any(|h| eq_folded(h.as_str().as_bytes(), name.as_bytes()))
                    })
            })
            .cloned()
            .collect();
        for name in strip {
            upstream_request.remove_header(&name);
        }
        if !route.is_some_and(|r| r.public || r.forward_authorization) {
            upstream_request.remove_header(&header::AUTHORIZATION);
            // A session cookie is a bearer token too: it stays at the gateway.
            if let Some(name) = route.and_then(|r| r.session_cookie.as_deref()) {
                strip_cookie(upstream_request, name)?;
            }
        }
        if !upstream_request.headers.contains_key(header::HOST) {
            if let Some(h) = &ctx.facts.host {
                upstream_request.insert_header(header::HOST, h.as_str())?;
            }
        }
        let host = ctx.facts.route_host().to_string();
        if let Some(ip) = ctx.facts.client {
            upstream_request.insert_header(X_FORWARDED_FOR.clone(), address_value(ip))?;
        }
        upstream_request.insert_header(X_FORWARDED_PROTO.clone(), "https")?;
        if !host.is_empty() {
            upstream_request.insert_header(X_FORWARDED_HOST.clone(), host)?;
        }
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(X_REQUEST_ID.clone(), id.clone())?;
        }
        if let Some(identity) = &ctx.facts.identity {
            upstream_request.insert_header(X_SUBJECT.clone(), &*identity.subject)?;
            upstream_request.insert_header(X_CAPABILITIES.clone(), identity.capability_header())?;
            upstream_request.insert_header(X_AUTH.clone(), identity.provider.as_str())?;
            if let Some(room) = &identity.room {
                upstream_request.insert_header(X_ROOM.clone(), &**room)?;
            }
            if identity.provider == crate::auth::Provider::Mtls {
                if let Some(fp) = &identity.verified_by {
                    upstream_request.insert_header(X_CLIENT_CERT.clone(), &**fp)?;
                }
            }
        }
        if let Some(r) = route {
            upstream_request.insert_header(X_ROUTE.clone(), &*r.name)?;
        }
        if let Some(n) = &ctx.csp_nonce {
            upstream_request.insert_header(X_CSP_NONCE.clone(), n.as_str())?;
        }
        ctx.upstream_sent = Some(Instant::now());
        if let (Some(t), Some(r)) = (ctx.trace.as_mut(), route) {
            let upstream = &policy.expect("a route implies a policy").upstreams[r.upstream].name;
            t.start_upstream(upstream, upstream_request);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(sent) = ctx.upstream_sent {
            ctx.upstream_took = Some(sent.elapsed());
        }
        if let Some(t) = ctx.trace.as_mut() {
            t.end_upstream(upstream_response.status.as_u16());
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.facts.websocket
        {
            ctx.ws_open = true;
            self.metrics.detail.ws_opened();
        }
        self.decorate(upstream_response, ctx, session.req_header())
    }

    /// Pingora logs every failed request as ERROR ("Fail to proxy"); operators page on ERROR,
    /// so only faults keep that level. A request the gateway or Pingora refused on purpose (bad
    /// framing, a Connection header naming a protected header, a body over its limit, a
    /// WebSocket closed for its budget) is a security event at WARN; a client that went away
    /// or stalled past a timeout is routine, at INFO. Upstream and internal failures stay ERROR.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        let refused = match e.etype() {
            ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::H2Error
            | ErrorType::Custom("PrematureBodyEnd")
                if e.esource() == &ErrorSource::Downstream =>
            {
                tracing::info!(
                    route = ctx.route_name(),
                    reason = %e,
                    "client connection ended during the request"
                );
                return true;
            }
            ErrorType::InvalidHTTPHeader | ErrorType::HTTPStatus(_) => true,
            // Malformed chunked framing (a bare LF, a bad trailer end), whatever the route.
            ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd") => true,
            ErrorType::Custom(_) => ctx.facts.websocket,
            _ => false,
        };
        if refused && e.esource() != &ErrorSource::Upstream {
            tracing::warn!(
                target: "portcullis::security",
                route = ctx.route_name(),
                client = %ctx.facts.client.map(|c| c.to_string()).unwrap_or_default(),
                reason = %e,
                "request refused"
            );
            return true;
        }
        false
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.facts.websocket && ctx.ws_meter.is_some() {
            // The tunnel ended with an error: a client silent past its token's expiry or the
            // idle timeout gets a close frame saying which, if it can still be written.
            if let (false, Some(close)) = (ctx.ws_closing, revoked_close(ctx)) {
                self.close_websocket(session, ctx, close).await;
            } else if !ctx.ws_closing
                && matches!(e.etype(), ErrorType::ReadTimedout)
                && e.esource() == &ErrorSource::Downstream
            {
                let close = if ctx
                    .ws_deadline
                    .is_some_and(|d| Instant::now() + Duration::from_millis(50) >= d)
                {
                    websocket::Close::TokenExpired
                } else {
                    websocket::Close::Idle
                };
                self.close_websocket(session, ctx, close).await;
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if session.response_written().is_some() {
            // The response head, and perhaps part of its body, is already on its way: no error
            // page can follow, and ending the response normally would hand the client a
            // truncated body as if it were whole. Abort it instead, so the client sees it
            // incomplete: RST_STREAM(INTERNAL_ERROR) over HTTP/2, which leaves the connection's
            // other streams alone; over HTTP/1.1 the connection closes without the final chunk
            // or the promised length.
            ctx.response_aborted = true;
            tracing::warn!(
                error = %e,
                source = e.esource().as_str(),
                "response aborted: the proxy failed after the response had started"
            );
            session.set_keepalive(None);
            session.shutdown().await;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let deny = match e.etype() {
            ErrorType::HTTPStatus(413) if matches!(ctx.deny, Some(Deny::BodyTooLarge)) => {
                Some(Deny::BodyTooLarge)
            }
            ErrorType::HTTPStatus(code) => {
                let code = *code;
                // The connection is not reused: the answer says so.
                session.set_keepalive(None);
                let _ = session.respond_error(code).await;
                return FailToProxy {
                    error_code: code,
                    can_reuse_downstream: false,
                };
            }
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                Some(Deny::UpstreamTimeout)
            }
            _ => match e.esource() {
                ErrorSource::Upstream => {
                    if matches!(
                        e.etype(),
                        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert
                    ) {
                        let upstream = ctx
                            .policy
                            .as_ref()
                            .zip(ctx.facts.route)
                            .map(|(p, r)| p.upstreams[p.routes[r].upstream].name.to_string())
                            .unwrap_or_default();
                        tracing::warn!(
                            upstream,
                            reason = %e,
                            "upstream TLS failed; answering 502"
                        );
                    }
                    Some(Deny::UpstreamUnavailable)
                }
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    _ => {
                        session.set_keepalive(None);
                        let _ = session.respond_error(400).await;
                        return FailToProxy {
                            error_code: 400,
                            can_reuse_downstream: false,
                        };
                    }
                },
                _ => Some(Deny::Internal),
            },
        };
        // An upstream that cannot be reached or did not answer in time costs the client its
        // answer, not its connection: an HTTP/1.1 connection whose request was read whole
        // carries on after the 502/504, as it would after any other response. A request body
        // still unread (the upstream failed before taking it) or an error on the client's side
        // closes it: say so, so the client does not send its next request into a closing
        // socket.
        let reuse = matches!(
            deny,
            Some(Deny::UpstreamUnavailable | Deny::UpstreamTimeout)
        ) && session.is_body_done();
        if !reuse {
            session.set_keepalive(None);
        }
        let (code, written) = match deny {
            Some(d) => {
                let status = d.status();
                let written = self.deny(session, ctx, d).await.is_ok();
                if !written {
                    tracing::debug!("could not write the error response; downstream gone");
                }
                (status, written)
            }
            None => (0, false),
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: reuse && written,
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.ws_closing {
            // Nothing may follow our close frame.
            *body = None;
        } else if let (true, Some(close)) = (end_of_stream, revoked_close(ctx)) {
            // A reload or a token revocation ended the session and shut its upstream side: the
            // close frame takes the place of the upstream's end.
            ctx.ws_close = Some(close.metric());
            ctx.ws_closing = true;
            tracing::info!(
                target: "portcullis::security",
                code = close.code(),
                reason = close.reason(),
                "closing WebSocket session"
            );
            *body = Some(Bytes::from(close.frame()));
        }
        Ok(None)
    }

    /// Pingora's error logs use this summary; ours never includes the query string, so tokens
    /// passed as `?access_token=` cannot leak through it.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {}, Host: {}",
            req.method,
            req.uri.path(),
            request_host(req)
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        self.metrics.record_request(status, ctx.deny.is_some());
        if ctx.response_aborted {
            self.metrics.response_aborted();
        }
        let route: &Arc<str> = match (&ctx.policy, ctx.facts.route) {
            (Some(p), Some(r)) => &p.routes[r].name,
            _ => &self.no_route,
        };
        self.metrics.detail.record(
            route,
            status,
            ctx.started.elapsed(),
            ctx.upstream_took,
            ctx.deny
                .as_ref()
                .filter(|d| d.is_auth_failure() || matches!(d, Deny::AuthLockedOut { .. }))
                .map(|d| d.code()),
        );
        if ctx.ws_open {
            self.metrics
                .detail
                .ws_closed(ctx.ws_close.unwrap_or("ended"));
        }
        if let Some(kind) = ctx.deny.as_ref().and_then(security_event) {
            crate::observability::alerts::emit(kind, ctx.facts.client);
        }
        if let Some(t) = ctx.trace.take() {
            t.finish(
                route,
                session.req_header().uri.path(),
                status,
                ctx.deny.as_ref().map(|d| d.code()),
                e.map(|e| e.etype().as_str()),
            );
        }
        if let (Some(choice), Some(policy)) = (&ctx.upstream_addr, &ctx.policy) {
            let failed = e.is_some_and(|e| e.esource() == &ErrorSource::Upstream)
                || matches!(
                    ctx.deny,
                    Some(Deny::UpstreamUnavailable | Deny::UpstreamTimeout)
                )
                || (ctx.deny.is_none() && matches!(status, 502..=504));
            if failed || status != 0 {
                decide::upstream::finish(policy, choice, failed, &self.resilience);
            }
        }
        let upstream_name = match (&ctx.policy, ctx.facts.route, ctx.deny.is_none()) {
            (Some(p), Some(r), true) => &*p.upstreams[p.routes[r].upstream].name,
            _ => "-",
        };
        let req = session.req_header();
        let client = session.client_addr().and_then(|a| a.as_inet()).copied();
        crate::observability::access::Line {
            request_id: ctx
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            client,
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.route_name(),
            status,
            decision: if ctx.deny.is_some() { "deny" } else { "allow" },
            reason: ctx.deny.as_ref().map(|d| d.code()).unwrap_or("-"),
            subject: ctx
                .facts
                .identity
                .as_ref()
                .map(|i| &*i.subject)
                .unwrap_or("-"),
            auth: ctx
                .facts
                .identity
                .as_ref()
                .map(|i| i.provider.as_str())
                .unwrap_or("-"),
            key: ctx
                .facts
                .identity
                .as_ref()
                .and_then(|i| i.verified_by.as_deref())
                .unwrap_or("-"),
            generation: ctx.policy.as_ref().map(|p| p.generation).unwrap_or(0),
            duration_us: ctx.started.elapsed().as_micros() as u64,
            upstream: upstream_name,
            upstream_us: ctx.upstream_took.map(|d| d.as_micros() as u64).unwrap_or(0),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            error: e.map(|e| e.etype().as_str()).unwrap_or("-"),
        }
        .log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_is_written_as_display_writes_it() {
        for a in 0..=255u8 {
            for ip in [
                [a, 0, 9, 10],
                [10, a, 99, 100],
                [255, 1, a, 0],
                [1, 2, 3, a],
            ] {
                let ip = std::net::IpAddr::from(ip);
                assert_eq!(address_value(ip).to_str().unwrap(), ip.to_string());
            }
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_value(v6).to_str().unwrap(), "2001:db8::1");
    }

    #[test]
    fn identity_and_override_headers_match_in_every_spelling() {
        for name in [
            "x-portcullis-subject",
            "x_portcullis_subject",
            "x-portcullis_capabilities",
            "x_forwarded_for",
            "x-forwarded-host",
            "x_real_ip",
            "forwarded",
            "x_request_id",
            "true-client-ip",
            "true_client_ip",
            "x-client-ip",
            "x-original-url",
            "x_original_url",
            "x-rewrite-url",
            "x-http-method-override",
            "x_http_method_override",
            "x-http-method",
            "x-method-override",
            "x-forwarded",
            "x_forwarded",
            "forwarded-for",
            "x-original-host",
            "x-host",
            "x-proxyuser-ip",
            "client-ip",
            "client_ip",
            "x-cluster-client-ip",
            "x-remote-addr",
            "x-remote-ip",
            "x-originating-ip",
            "front-end-https",
            "front_end_https",
            "x-original-uri",
            "proxy-client-ip",
            "wl-proxy-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-envoy-external-address",
            "x-envoy-original-path",
            "x-rewrite-url",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        // The binary search needs the list sorted.
        assert!(OVERRIDE_HEADERS.windows(2).all(|w| w[0] < w[1]));
        for name in [
            "x-portcullis",
            "x-client-ipx",
            "accept",
            "x-real-ipv6",
            "forwarded-x",
            "x-hosts",
            "x-forwarde",
            "a",
            "zz",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn request_ids_are_hex_and_distinct() {
        let mut a = [0u8; 24];
        let mut b = [0u8; 24];
        let x = format_request_id(0xdeadbeef, 1, &mut a).to_vec();
        let y = format_request_id(0xdeadbeef, 2, &mut b).to_vec();
        assert_ne!(x, y);
        assert_eq!(&x[..8], b"deadbeef");
        assert!(x.iter().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn raw_content_length_is_found_in_any_spelling() {
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
        ));
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\ncontent-length : 4\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST /content-length:1 HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
    }
}
