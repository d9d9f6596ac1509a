//! The request's decisions, as one pipeline with no Pingora types: the gateway's proxy hooks and
//! `portcullis policy test` both call [`decide`], so the dry run cannot drift from what the
//! gateway does. The steps, in the order a request meets them, each in its own file:
//!
//! 1. [`screen`]: who the client is, header size, framing, host, target form, canonical path;
//! 2. [`screen::client_cert`]: the connection's client certificate against the live `[mtls]`;
//! 3. [`route`]: the gateway's own answers (health), the route, CORS preflight, methods,
//!    WebSocket rules, declared body size;
//! 4. [`limits`]: rate limits keyed by client or route;
//! 5. [`signed`]: a signed URL;
//! 6. [`authn`]: backoff, credentials, capabilities, rooms, then the limits keyed by subject;
//! 7. [`admin`]: admin paths;
//! 8. [`csrf`]: cross-site request checks;
//! 9. [`upstream`]: an external address whose circuit admits the request.
//!
//! What a step learns (the client, the host, the route, the identity) is written to [`Facts`],
//! which the caller keeps for logging and for the response whatever the outcome. What `decide`
//! does besides answering: it counts rate limits and authentication failures in the limiters and
//! backoff of [`Deps`] (that is the decision's state), and logs the shadow rules it applies.

pub mod admin;
pub mod authn;
pub mod csrf;
pub mod limits;
pub mod request;
pub mod route;
pub mod screen;
pub mod signed;
pub mod upstream;

use std::net::IpAddr;

use crate::http::deny::Deny;
use crate::policy::model::Policy;

pub use request::{Admission, Deps, Facts, Forward, Now, RequestView};

/// Runs every step against `policy`, in order; the first refusal ends it.
pub async fn decide(
    policy: &Policy,
    req: &RequestView<'_>,
    deps: &Deps<'_>,
    facts: &mut Facts,
) -> Result<Admission, Deny> {
    screen::screen(policy, req, facts)?;
    screen::client_cert(policy, req, deps, facts)?;
    // The canonical target from here on: every later step judges the path that is forwarded.
    let target = facts.target.clone();
    let uri = target.as_deref().unwrap_or(req.uri);
    let path = uri.path();
    if route::is_health(req.method, path) {
        return Ok(Admission::Health);
    }
    let idx = route::route(policy, path, deps.now, facts)?;
    let route = &policy.routes[idx];
    if let Some(headers) = route::preflight(route, req)? {
        return Ok(Admission::Preflight(headers));
    }
    let to_rooms = route::admit(policy, route, req, facts)?;
    let client_key = facts
        .client_key
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    limits::check(policy, deps, idx, client_key, None, false).await?;
    let mut forward = Forward::default();
    if let Some(identity) = signed::verify(policy, route, req.method, uri, deps.now)? {
        facts.identity = Some(identity);
        forward.strip_query = true;
    }
    let authenticated = !route.public && facts.identity.is_none();
    if authenticated {
        let identity =
            authn::authenticate_client(policy, route, req, path, to_rooms, deps, facts).await?;
        let subject = identity.subject.clone();
        facts.identity = Some(identity);
        limits::check(policy, deps, idx, client_key, Some(&subject), true).await?;
    } else if to_rooms {
        // Authentication (which holds the room lock) did not run: a public route or a signed
        // URL reaches the room server only where a room is open.
        authn::room_gate(policy, path, facts.identity.as_deref(), deps.on_shadow)?;
    }
    admin::check(policy, path, facts)?;
    forward.issue_csrf = csrf::check(route, req, facts)?;
    forward.strip_token = route.query_token;
    forward.address = upstream::pick(policy, route, deps.resilience)?;
    Ok(Admission::Forward(forward))
}
