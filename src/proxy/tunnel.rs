//! An upgraded WebSocket tunnel as the hooks see it: its read timeout, the close frame of a
//! session the gateway revoked, and sending a close frame to the client.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::proxy::Session;

use super::{websocket, Gateway, RequestCtx};
use crate::sessions;

/// The close frame for a session the gateway revoked (policy reload or revoked token).
pub(super) fn revoked_close(ctx: &RequestCtx) -> Option<websocket::Close> {
    let s = &ctx.ws_guard.as_ref()?.session;
    if !s.revoked.load(Ordering::Acquire) {
        return None;
    }
    Some(match s.close_reason() {
        sessions::Why::PolicyRevoked => websocket::Close::PolicyRevoked,
        sessions::Why::TokenRevoked => websocket::Close::TokenRevoked,
    })
}

/// The read timeout of a WebSocket tunnel: idle timeout or token expiry, whichever is sooner.
pub(super) fn ws_timeout(ctx: &RequestCtx, now: Instant) -> Duration {
    let idle = ctx.ws_idle;
    match ctx.ws_deadline {
        Some(d) => d
            .saturating_duration_since(now)
            .min(idle)
            .max(Duration::from_millis(1)),
        None => idle,
    }
}

impl Gateway {
    /// Sends a close frame to the WebSocket client (best effort: it may be gone already).
    pub(super) async fn close_websocket(
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
}
