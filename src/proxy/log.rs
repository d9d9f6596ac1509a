//! What a request leaves behind: the logs, metrics and alerts of a refusal, the summary in
//! Pingora's error logs, and the access line, metrics, trace and upstream outcome of `logging`.

use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorSource;

use super::connection::close_client_connection;
use super::{Gateway, RequestCtx};
use crate::decide;
use crate::http::deny::Deny;
use crate::http::host;

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

impl Gateway {
    /// Pingora's error logs use this summary; ours never includes the query string, so tokens
    /// passed as `?access_token=` cannot leak through it.
    pub(super) fn summarize(&self, session: &Session) -> String {
        let req = session.req_header();
        format!(
            "{} {}, Host: {}",
            req.method,
            req.uri.path(),
            request_host(req)
        )
    }

    /// What a refusal sets off besides its response: the security log, the CSRF metric, the
    /// lockout alert, closing a connection whose client certificate no longer passes.
    pub(super) fn refused(&self, session: &mut Session, ctx: &RequestCtx, d: &Deny) {
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
                self.handles.metrics.csrf_failure(*f);
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

    /// The access line, metrics, trace, security events, and the upstream address's outcome.
    pub(super) async fn log_request(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        self.handles
            .metrics
            .record_request(status, ctx.deny.is_some());
        if ctx.response_aborted {
            self.handles.metrics.response_aborted();
        }
        let route: &Arc<str> = match (&ctx.policy, ctx.facts.route) {
            (Some(p), Some(r)) => &p.routes[r].name,
            _ => &self.no_route,
        };
        self.handles.metrics.detail.record(
            route,
            status,
            ctx.started.elapsed(),
            ctx.upstream_took,
            ctx.deny
                .as_ref()
                .filter(|d| d.is_auth_failure() || matches!(d, Deny::AuthLockedOut { .. }))
                .map(|d| d.code()),
            ctx.trace.as_ref().and_then(|t| t.sampled_trace_id()),
        );
        if ctx.ws_open {
            self.handles
                .metrics
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
                decide::upstream::finish(policy, choice, failed, &self.handles.resilience);
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
