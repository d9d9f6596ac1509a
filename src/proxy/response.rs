//! The response: `response_filter` decorates the upstream's head; the gateway's own answers
//! (refusals, health, CORS preflights) are written here with the same headers; and
//! `response_body_filter` ends a revoked WebSocket session with its close frame.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::tunnel::revoked_close;
use super::{Gateway, RequestCtx, X_REQUEST_ID};
use crate::http::cors;
use crate::http::deny::Deny;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Whether the request announces a body (chunked, or a non-zero Content-Length).
fn declares_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(header::TRANSFER_ENCODING)
        || req
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

impl Gateway {
    /// The upstream's response head: the upstream's time and trace span end, a WebSocket
    /// session opens at 101, and the head gets the gateway's headers.
    pub(super) fn take_response_head(
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
            self.handles.metrics.detail.ws_opened();
        }
        self.decorate(upstream_response, ctx, session.req_header())
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

    pub(super) async fn respond(
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

    pub(super) async fn deny(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        deny: Deny,
    ) -> Result<bool> {
        let status = deny.status();
        let body = match deny.body() {
            std::borrow::Cow::Borrowed(b) => Bytes::from_static(b),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        };
        ctx.deny = Some(deny);
        self.respond(session, ctx, status, body).await?;
        Ok(true)
    }

    /// Answers an allowed CORS preflight with 204.
    pub(super) async fn respond_preflight(
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

    /// Nothing follows the gateway's close frame; a session a reload or a token revocation
    /// ended gets its close frame in place of the upstream's end.
    pub(super) fn watch_response_body(
        &self,
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
}
