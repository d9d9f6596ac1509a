//! What the decisions read and answer: the request as they see it, their dependencies, what
//! they learn on the way, and the admission.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::auth::{AuthState, Identity};
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
    /// The system's clocks.
    pub fn read() -> Now {
        Now::at(&crate::clock::SystemClock)
    }

    /// `clock`'s readings (a test's `ManualClock`).
    pub fn at(clock: &dyn crate::clock::Clock) -> Now {
        Now {
            unix: clock.unix(),
            mono: clock.mono(),
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
    pub(super) host_span: std::ops::Range<usize>,
    /// The canonical target to forward in place of the one sent (the path that was matched).
    /// Boxed: rarely set, and this struct lives in every request's state.
    pub target: Option<Box<Uri>>,
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

    /// The route's name, once one is chosen.
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
    pub address: Option<super::upstream::Choice>,
}
