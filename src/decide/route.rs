//! The route and what it admits: the gateway's own health answer, the path decision (blocked
//! paths, routes by host and prefix), CORS preflight, methods, WebSocket rules and the declared
//! body size.

use http::{header, HeaderName, HeaderValue, Method};

use super::request::{Facts, Now, RequestView};
use crate::http::cors;
use crate::http::deny::Deny;
use crate::policy::model::{Policy, Route, UpstreamTarget};
use crate::policy::paths::PathVerdict;

/// `/health` and `/ping`, answered by the gateway itself, always public.
pub fn is_health(method: &Method, path: &str) -> bool {
    (path == "/health" || path == "/ping") && matches!(*method, Method::GET | Method::HEAD)
}

/// The route serving `path` (canonical) on the request's host, or why there is none.
pub fn route(policy: &Policy, path: &str, now: Now, facts: &mut Facts) -> Result<usize, Deny> {
    let verdict = match facts.screened {
        Some(screened) => policy.decide_screened(facts.route_host(), path, screened, now.unix),
        None => policy.decide_path(facts.route_host(), path, now.unix),
    };
    match verdict {
        PathVerdict::Refused(d) => Err(d),
        PathVerdict::Routed(idx, _) => {
            facts.route = Some(idx);
            Ok(idx)
        }
    }
}

/// A CORS preflight on a route with a CORS rule is answered by the rule: its headers, or the
/// refusal.
pub fn preflight(
    route: &Route,
    req: &RequestView<'_>,
) -> Result<Option<Vec<(HeaderName, HeaderValue)>>, Deny> {
    let Some(rule) = &route.cors else {
        return Ok(None);
    };
    if !cors::is_preflight(req.method, req.headers) {
        return Ok(None);
    }
    rule.preflight(req.headers)
        .map(Some)
        .map_err(Deny::CorsDenied)
}

/// Methods, WebSocket rules and the declared body size; answers whether the route leads to the
/// room server.
pub fn admit(
    policy: &Policy,
    route: &Route,
    req: &RequestView<'_>,
    facts: &mut Facts,
) -> Result<bool, Deny> {
    if !route.methods.allows(req.method) {
        return Err(Deny::MethodNotAllowed);
    }
    facts.websocket = req.upgrade;
    if req.upgrade && !route.websocket {
        return Err(Deny::WebSocketNotAllowed);
    }
    let to_rooms = policy.upstreams[route.upstream].target == UpstreamTarget::Rooms;
    if !req.upgrade && to_rooms {
        // The room server speaks only WebSocket.
        return Err(Deny::WebSocketRequired);
    }
    if !req.upgrade {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.max_body_bytes) {
            return Err(Deny::BodyTooLarge);
        }
    }
    Ok(to_rooms)
}
