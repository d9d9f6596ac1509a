//! A request the proxy failed: `suppress_error_log` picks the level it is logged at, and
//! `fail_to_proxy` answers the client (an error response, a WebSocket close frame, or an abort
//! of a response already under way).

use std::time::{Duration, Instant};

use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use pingora::{ErrorSource, ErrorType};

use super::tunnel::revoked_close;
use super::{websocket, Gateway, RequestCtx};
use crate::http::deny::Deny;

impl Gateway {
    /// Pingora logs every failed request as ERROR ("Fail to proxy"); operators page on ERROR,
    /// so only faults keep that level. A request the gateway or Pingora refused on purpose (bad
    /// framing, a Connection header naming a protected header, a body over its limit, a
    /// WebSocket closed for its budget) is a security event at WARN; a client that went away
    /// or stalled past a timeout is routine, at INFO. Upstream and internal failures stay ERROR.
    pub(super) fn log_failure_below_error(&self, ctx: &RequestCtx, e: &Error) -> bool {
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

    /// Answers a request the proxy failed: a close frame on a WebSocket tunnel, an abort of a
    /// response already under way, or the error response (502, 504, 413, 400).
    pub(super) async fn answer_failure(
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
}
