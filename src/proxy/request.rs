//! The request's first phases: `early_request_filter` takes the policy snapshot and bounds the
//! connection, `request_filter` hands the request to `decide` and applies the answer, and
//! `request_body_filter` meters the body (and the client's frames on a WebSocket tunnel).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;

use super::connection::bound_connection;
use super::tunnel::{revoked_close, ws_timeout};
use super::{websocket, Gateway, RequestCtx};
use crate::auth;
use crate::decide::{self, screen};
use crate::http::deny::Deny;
use crate::http::headers as profiles;

const HEALTH_BODY: &[u8] = br#"{"status":"ok"}"#;

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

/// Whether raw HTTP/1 header bytes carry a Content-Length field (any case, any spacing).
fn raw_has_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > 14
            && line[..14].eq_ignore_ascii_case(b"content-length")
            && line[14..].iter().find(|b| !matches!(b, b' ' | b'\t')) == Some(&b':')
    })
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

impl Gateway {
    fn new_request_id(&self) -> HeaderValue {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 24];
        let s = format_request_id(self.request_prefix, n, &mut buf);
        HeaderValue::from_bytes(s).expect("hex is a valid header value")
    }

    /// One policy snapshot for the whole request; the connection's bounds, the request id and
    /// the trace span.
    pub(super) async fn start_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let policy = self.handles.policy.snapshot();
        bound_connection(
            session,
            &self.handles.config.connections,
            policy.network.header_timeout,
        );
        ctx.request_id = Some(self.new_request_id());
        if let Some(otel) = crate::observability::otel::get() {
            let req = session.req_header();
            ctx.trace = Some(otel.start_request(&req.headers, req.method.as_str()));
        }
        if let Some(peer_addr) = session.client_addr().and_then(|a| a.as_inet()) {
            // The connection delivered a request header: it is off the slowloris watch.
            self.handles.header_deadline.request_seen(peer_addr);
        }
        ctx.policy = Some(policy);
        Ok(())
    }

    /// Hands the request to `decide` and applies the answer: the canonical target, stripped
    /// queries, WebSocket timers, or the JSON refusal and what it sets off. `true` when the
    /// request was answered here.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(policy) = ctx.policy.clone() else {
            return self.deny(session, ctx, Deny::Internal).await;
        };
        let shadow = || self.handles.metrics.shadow_denial();
        let deps = decide::Deps {
            now: decide::Now::read(),
            auth: &self.handles.auth,
            limiters: &self.handles.limiters,
            backoff: &self.handles.backoff,
            resilience: &self.handles.resilience,
            shared: Some(&self.handles.shared_state),
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
            ctx.ws_guard = Some(self.handles.ws_sessions.register(
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

    /// Meters the request body against the route's limit; on a WebSocket tunnel, the client's
    /// frames against their budget, the token's expiry and revocation, and the closing handshake.
    pub(super) async fn watch_request_body(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
