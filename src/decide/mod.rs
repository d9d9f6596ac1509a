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
pub mod route;
pub mod screen;
pub mod signed;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::auth::{AuthState, Identity};
use crate::http::deny::Deny;
use crate::limits::{AuthBackoff, LimiterRegistry};
use crate::policy::model::Policy;
use crate::policy::paths::Screened;
use crate::shared::SharedStore;
use crate::tls::client_auth::HandshakeInfo;
use crate::upstreams::Resilience;

/// The request as the decisions see it: its head, where it came from and over what.
pub struct RequestView<'r> {
    pub method: &'r Method,
    pub uri: &'r Uri,
    /// The request target as it was sent (Pingora keeps a target that is not origin-form
    /// verbatim while giving `uri` only its path).
    pub raw_target: &'r [u8],
    pub version: Version,
    pub headers: &'r HeaderMap,
    /// HTTP/1 with `Transfer-Encoding`: whether the raw header bytes also carried a
    /// `Content-Length` (Pingora drops it from the parsed headers).
    pub raw_content_length: bool,
    /// A WebSocket upgrade request.
    pub upgrade: bool,
    /// The TCP peer; `None` when the connection has no IP address.
    pub peer: Option<IpAddr>,
    /// The TLS handshake, when there is one.
    pub tls: Option<&'r HandshakeInfo>,
}

/// One reading of the clocks, taken once per request.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub unix: u64,
    pub mono: Instant,
}

impl Now {
    pub fn read() -> Now {
        Now {
            unix: crate::auth::now_unix(),
            mono: Instant::now(),
        }
    }
}

/// What the decisions consult and count besides the policy.
pub struct Deps<'a> {
    pub now: Now,
    pub auth: &'a AuthState,
    pub limiters: &'a LimiterRegistry,
    pub backoff: &'a AuthBackoff,
    pub resilience: &'a Resilience,
    /// State shared with other replicas, when configured.
    pub shared: Option<&'a SharedStore>,
    /// Called when a shadow rule would have refused.
    pub on_shadow: &'a (dyn Fn() + Sync),
}

/// What the steps learned about the request, kept whatever the outcome.
#[derive(Debug, Default)]
pub struct Facts {
    /// The client: the TCP peer, or the forwarded address when the peer is a trusted proxy.
    pub client: Option<IpAddr>,
    /// The client's limiting key (IPv6 bucketed by prefix).
    pub client_key: Option<IpAddr>,
    /// The request's `Host` (or HTTP/2 `:authority`) as sent: routing, the upstream's `Host`
    /// and `X-Forwarded-Host` and the CSRF origin check all use this one value.
    pub host: Option<String>,
    /// Where, in `host`, the normalized host that routes match lies.
    host_span: std::ops::Range<usize>,
    /// The canonical target to forward in place of the one sent (the path that was matched).
    pub target: Option<Uri>,
    /// What screening the path found.
    pub screened: Option<Screened>,
    pub route: Option<usize>,
    pub identity: Option<Arc<Identity>>,
    pub websocket: bool,
    /// Why the connection's client certificate no longer passes; the connection is closed.
    pub cert_refused: Option<&'static str>,
    /// A lockout this request's failed authentication started.
    pub lockout: Option<Duration>,
}

impl Facts {
    /// The normalized host routes match (see `host::normalize`); empty when there is none.
    pub fn route_host(&self) -> &str {
        self.host
            .as_deref()
            .and_then(|h| h.get(self.host_span.clone()))
            .unwrap_or("")
    }

    /// The route's name, `-` before one is chosen.
    pub fn route_name<'p>(&self, policy: &'p Policy) -> Option<&'p str> {
        self.route.map(|r| &*policy.routes[r].name)
    }
}

/// An admitted request.
#[derive(Debug)]
pub enum Admission {
    /// The gateway answers it itself: `/health` and `/ping`.
    Health,
    /// An allowed CORS preflight, answered 204 with these headers.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// Forwarded upstream.
    Forward(Forward),
}

/// How an admitted request goes upstream.
#[derive(Debug, Default)]
pub struct Forward {
    /// A verified signed URL: its query is not forwarded.
    pub strip_query: bool,
    /// The route reads `?access_token=`: it is removed before forwarding.
    pub strip_token: bool,
    /// A safe request on a CSRF route without the CSRF cookie: the response issues one.
    pub issue_csrf: bool,
    /// The external address chosen (index) and its breaker state.
    pub address: Option<upstream::Choice>,
}

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
    let uri = target.as_ref().unwrap_or(req.uri);
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
