//! The compiled, immutable policy. Built once per reload by `compile`, shared as `Arc<Policy>`;
//! a request takes one snapshot and answers every question against it. Everything here is
//! ready to use on the hot path: matchers are pre-built and header values pre-encoded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::auth::jwt::{Issuer, RoomKeys};
pub use crate::auth::Provider;
use crate::config::Mode;
use crate::http::path::{Readings, Under};
use crate::limits::{BackoffSpec, LimitSpec};

#[derive(Debug)]
pub struct Policy {
    /// Set by the store when the policy is installed; 0 before that.
    pub generation: u64,
    pub mode: Mode,
    /// Routes ordered most specific first: host-bound before any-host, longer prefixes first.
    pub routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
    pub blocked: BlockedPaths,
    /// Paths that need the admin capability or an admin network, whatever route serves them.
    pub admin: AdminPaths,
    /// Security-header profiles; routes refer to them by index.
    pub headers: HeaderSettings,
    /// Keys for signed URLs; `None` when the policy has none.
    pub signed_urls: Option<crate::http::signed::SignedUrls>,
    /// Alert rules over the security-event stream.
    pub alerts: Vec<crate::policy::specs::AlertRule>,
    /// Client-certificate verification; `None` = no client certificates asked for.
    pub mtls: Option<crate::policy::specs::MtlsSettings>,
    /// The `Strict-Transport-Security` value, or `None` when disabled.
    pub hsts: Option<HeaderValue>,
    pub worker: WorkerSettings,
    pub rooms: RoomSettings,
    pub auth: AuthSettings,
    pub network: NetworkSettings,
    pub limits: Vec<LimitSpec>,
    /// Redis for state shared by replicas; `None` = everything stays in this process.
    pub shared_state: Option<crate::policy::specs::SharedSettings>,
    pub websocket: crate::policy::specs::WsBudget,
    pub sources: Vec<PathBuf>,
    /// Files named by `file:` secret references: a change to one reloads the policy
    /// (Kubernetes updates Secret mounts in place).
    pub secret_files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct NetworkSettings {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub ipv6_prefix: u8,
    pub max_header_bytes: usize,
    pub max_connections_per_ip: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Forward client header names containing `_` (default: dropped).
    pub allow_underscores_in_headers: bool,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            max_header_bytes: 32 * 1024,
            max_connections_per_ip: 256,
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            allow_underscores_in_headers: false,
        }
    }
}

/// Compiled authentication settings.
#[derive(Debug)]
pub struct AuthSettings {
    pub default_providers: Vec<Provider>,
    pub issuers: Vec<Issuer>,
    pub room_keys: RoomKeys,
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    /// After the worker token rotates, how long the previous one is still accepted.
    pub previous_token_grace: Duration,
    /// Extra client headers to strip, lower-case.
    pub strip_headers: Vec<HeaderName>,
    /// Whether any route uses the `static` provider (the worker token must be resolved).
    pub needs_worker_token: bool,
    /// Leeway for room tokens' `exp`/`nbf`, seconds.
    pub room_leeway: u64,
    /// Capability names the policy declares beyond the built-in ones.
    pub extra_capabilities: Vec<Box<str>>,
    /// Lockouts after repeated failures; `None` = off.
    pub backoff: Option<BackoffSpec>,
}

impl AuthSettings {
    pub fn jwks_urls(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter_map(|i| i.jwks.as_ref().map(|j| j.0.clone()))
            .collect()
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub hosts: Vec<HostPattern>,
    pub prefix: Box<str>,
    pub methods: MethodSet,
    pub upstream: usize,
    pub public: bool,
    /// Providers tried in order for a non-public route.
    pub auth: Vec<Provider>,
    /// Capabilities required (all).
    pub capabilities: Vec<Box<str>>,
    pub query_token: bool,
    pub forward_authorization: bool,
    pub max_body_bytes: u64,
    pub websocket: bool,
    /// Whether `prefix` matches case-sensitively (default true).
    pub case_sensitive: bool,
    /// Index into `Policy::headers.profiles`.
    pub headers: usize,
    pub cors: Option<crate::http::cors::Cors>,
    pub csrf: Option<crate::http::csrf::Csrf>,
    /// A cookie carrying the bearer token (cookie sessions); such requests need CSRF checks.
    pub session_cookie: Option<Box<str>>,
    /// A valid signed URL admits a request in place of authentication.
    pub signed_urls: bool,
    /// Client certificates admitted by `auth = "mtls"`; empty = any verified one.
    pub client_cert_allow: Vec<crate::policy::specs::AllowEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<str>),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// Allowed methods as a bit set; `ALL` when the route lists none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(pub u16);

impl MethodSet {
    pub const ALL: MethodSet = MethodSet(u16::MAX);
    const NAMES: [&'static str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];

    pub fn bit(method: &str) -> Option<u16> {
        Self::NAMES
            .iter()
            .position(|m| *m == method)
            .map(|i| 1 << i)
    }
    pub fn allows(self, method: &http::Method) -> bool {
        self == Self::ALL || Self::bit(method.as_str()).is_some_and(|b| self.0 & b != 0)
    }
    pub fn names(self) -> Vec<&'static str> {
        if self == Self::ALL {
            return vec!["*"];
        }
        Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Route {
    /// The host patterns as written (`api.example.com`, `*.example.com`); empty = any host.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(e) => e.to_string(),
                HostPattern::Suffix(s) => format!("*{s}"),
            })
            .collect()
    }

    /// `public`, or `auth:` and the providers in order (`auth:static|jwt`).
    pub fn access_summary(&self) -> String {
        if self.public {
            return "public".into();
        }
        let providers: Vec<&str> = self.auth.iter().map(|p| p.as_str()).collect();
        format!("auth:{}", providers.join("|"))
    }

    /// Whether the route takes credentials a browser presents by itself on a cross-site
    /// request, WebSocket handshakes included: a session cookie or a client certificate.
    pub fn ambient_credentials(&self) -> bool {
        !self.public && (self.session_cookie.is_some() || self.auth.contains(&Provider::Mtls))
    }

    pub fn matches_host(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host))
    }
    /// Segment-aware prefix match: `/v1` matches `/v1` and `/v1/x`, not `/v1x`.
    pub fn matches_path(&self, path: &str) -> bool {
        prefix_matches(&self.prefix, path, self.case_sensitive)
    }
}

pub(crate) fn prefix_matches(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    if path.len() < prefix.len() || !path.is_char_boundary(prefix.len()) {
        return false;
    }
    let head = &path[..prefix.len()];
    let same = if case_sensitive {
        head == prefix
    } else {
        head.eq_ignore_ascii_case(prefix)
    };
    same && (prefix.ends_with('/')
        || path.len() == prefix.len()
        || matches!(path.as_bytes()[prefix.len()], b'/' | b';'))
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub target: UpstreamTarget,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// How long a pooled connection to the upstream may wait unused.
    pub idle_timeout: Duration,
    pub breaker: crate::policy::specs::BreakerSpec,
    pub health_interval: Option<Duration>,
    /// Consecutive passed checks that bring a down address back, and failed ones that take an
    /// address out.
    pub health_rise: u32,
    pub health_fall: u32,
    /// Retries on a reused connection may be this share (percent) of the upstream's requests.
    pub retry_budget_percent: u8,
    /// An HTTP check in place of the TCP one (`health_check_path` set).
    pub health_http: Option<crate::policy::specs::HttpCheck>,
    /// Pinned CAs for an upstream over TLS; `None` = the system store.
    pub tls_ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Refuse upstream TLS below 1.3.
    pub tls13_only: bool,
    /// Keeps pooled upstream connections apart by trust settings: Pingora's connection pool
    /// ignores the CA bundle, so a connection verified against one CA would otherwise be reused
    /// for an upstream that pins another.
    pub tls_group: u64,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(
        name: Arc<str>,
        target: UpstreamTarget,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Self {
        Upstream {
            name,
            target,
            connect_timeout,
            read_timeout,
            idle_timeout: Duration::from_secs(60),
            breaker: crate::policy::specs::BreakerSpec {
                failures: 5,
                open_for: Duration::from_secs(10),
            },
            health_interval: Some(Duration::from_secs(5)),
            health_rise: 2,
            health_fall: 2,
            health_http: None,
            retry_budget_percent: 20,
            tls_ca: None,
            tls13_only: false,
            tls_group: 0,
            next: AtomicUsize::new(0),
        }
    }
    /// Round-robin over an external upstream's addresses.
    pub fn next_address(&self, addresses: &[String]) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % addresses.len().max(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// The in-process worker API.
    Worker,
    /// The in-process WebSocket room server.
    Rooms,
    External {
        addresses: Vec<String>,
        tls: bool,
        sni: String,
    },
}

impl UpstreamTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamTarget::Worker => "worker",
            UpstreamTarget::Rooms => "rooms",
            UpstreamTarget::External { .. } => "external",
        }
    }
}

#[derive(Debug)]
pub struct BlockedPaths {
    pub prefixes: Vec<Box<str>>,
    pub case_sensitive: bool,
    pub exceptions: Vec<BlockException>,
}

/// A blocked path opened for one route until a deadline, with the reason it was opened.
#[derive(Debug)]
pub struct BlockException {
    pub path: Box<str>,
    pub route: Arc<str>,
    pub reason: Box<str>,
    /// Unix seconds; the exception closes by itself at this time.
    pub expires_at: u64,
    /// As written in the policy (RFC 3339), for logs.
    pub expires_text: Box<str>,
    /// Set once the expiry has been logged.
    pub closed_logged: std::sync::atomic::AtomicBool,
}

/// How `readings` stand to a set of protected prefixes: the strictest answer over all of them
/// (an ambiguous reading under any prefix outranks the path itself being under another).
pub fn classify(prefixes: &[Box<str>], case_sensitive: bool, readings: &Readings) -> Under {
    classify_at(prefixes, case_sensitive, readings).0
}

/// `classify`, with the first prefix the path is under in any reading (what `find` answers).
pub fn classify_at(
    prefixes: &[Box<str>],
    case_sensitive: bool,
    readings: &Readings,
) -> (Under, Option<usize>) {
    let mut worst = Under::No;
    let mut first = None;
    for (i, p) in prefixes.iter().enumerate() {
        let under = readings.under(p, case_sensitive);
        if under != Under::No && first.is_none() {
            first = Some(i);
        }
        match under {
            Under::Parameter => return (Under::Parameter, first),
            Under::Lookalike => worst = Under::Lookalike,
            Under::Yes if worst == Under::No => worst = Under::Yes,
            _ => {}
        }
    }
    (worst, first)
}

impl BlockedPaths {
    /// The blocked prefix covering `path` in any of its readings (see `Readings`), if any.
    /// `path` must be canonical.
    pub fn find(&self, path: &str) -> Option<&str> {
        let readings = Readings::of(path);
        self.prefixes
            .iter()
            .find(|p| readings.under(p, self.case_sensitive) != Under::No)
            .map(|p| &**p)
    }

    /// How `readings` stand to the blocked prefixes.
    pub fn classify(&self, readings: &Readings) -> Under {
        classify(&self.prefixes, self.case_sensitive, readings)
    }

    /// Whether `path` is refused for `route` at `now` (unix seconds): `Ok(None)` when not
    /// blocked, `Ok(Some(exception))` when blocked but opened for this route, `Err(prefix)`
    /// when refused.
    pub fn decide(
        &self,
        path: &str,
        route: Option<&str>,
        now: u64,
    ) -> Result<Option<&BlockException>, &str> {
        let found = self.find(path);
        self.decide_found(found, path, route, now)
    }

    /// `decide` for a path whose blocked prefix (if any) the screening already found.
    pub fn decide_found<'s>(
        &'s self,
        found: Option<&'s str>,
        path: &str,
        route: Option<&str>,
        now: u64,
    ) -> Result<Option<&'s BlockException>, &'s str> {
        let Some(prefix) = found else {
            return Ok(None);
        };
        let opened = route.and_then(|r| {
            self.exceptions.iter().find(|e| {
                &*e.route == r
                    && now < e.expires_at
                    && prefix_matches(&e.path, path, self.case_sensitive)
            })
        });
        match opened {
            Some(e) => Ok(Some(e)),
            None => Err(prefix),
        }
    }
}

/// Admin paths: whatever route serves them, a caller needs `capability` or a client address in
/// `networks`.
#[derive(Debug)]
pub struct AdminPaths {
    pub prefixes: Vec<Box<str>>,
    pub capability: Box<str>,
    pub networks: Vec<ipnet::IpNet>,
    /// Opens `/metrics` on the admin listener off loopback, and nothing else.
    pub metrics_token: Option<MetricsToken>,
}

/// A metrics-only bearer credential, resolved from a secret reference at policy load.
pub struct MetricsToken(Box<str>);

impl MetricsToken {
    pub fn new(token: &str) -> MetricsToken {
        MetricsToken(token.into())
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == presented.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(…)")
    }
}

impl AdminPaths {
    /// Whether `path` (canonical) is under an admin prefix in any of its readings: the same
    /// decision as for blocked paths, case-insensitive.
    pub fn covers(&self, path: &str) -> bool {
        self.classify(&Readings::of(path)) != Under::No
    }

    /// How `readings` stand to the admin prefixes.
    pub fn classify(&self, readings: &Readings) -> Under {
        classify(&self.prefixes, false, readings)
    }
    pub fn network_allows(&self, ip: std::net::IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// Compiled security-header profiles.
#[derive(Debug)]
pub struct HeaderSettings {
    pub profiles: Vec<crate::http::headers::HeaderProfile>,
    /// Profile used by routes that name none, and by answers with no route.
    pub default: usize,
    /// Response headers removed from upstream responses, lower-case.
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub models: Vec<String>,
    pub max_object_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub queue_capacity: usize,
    pub max_peers: usize,
    pub max_message_bytes: usize,
    /// A peer whose socket accepts nothing for this long is closed with 1013.
    pub slow_peer_timeout: Duration,
    pub default_locked: bool,
    pub access: Vec<RoomAccess>,
}

#[derive(Debug, Clone)]
pub struct RoomAccess {
    /// Exact name, or a prefix when `prefix` is set.
    pub room: Box<str>,
    pub prefix: bool,
    pub locked: bool,
    pub capabilities: Vec<Box<str>>,
    /// A `locked` rule in dry run: would-be refusals are logged, the room stays open.
    pub shadow: bool,
}

impl RoomSettings {
    /// Whether `room` is locked, and the capabilities a token needs to join it.
    pub fn access_for(&self, room: &str) -> (bool, &[Box<str>]) {
        match self.rule_for(room) {
            Some(r) => (r.locked, &r.capabilities),
            None => (self.default_locked, &[]),
        }
    }

    /// Whether the rule deciding `room` is a shadow rule.
    pub fn shadow_for(&self, room: &str) -> bool {
        self.rule_for(room).is_some_and(|r| r.shadow)
    }

    fn rule_for(&self, room: &str) -> Option<&RoomAccess> {
        self.access
            .iter()
            .find(|a| !a.prefix && &*a.room == room)
            .or_else(|| {
                self.access
                    .iter()
                    .filter(|a| a.prefix && room.starts_with(&*a.room))
                    .max_by_key(|a| a.room.len())
            })
    }
}

impl Policy {
    /// The route for a request, most specific first. `host` has no port.
    pub fn route_for(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matches_path(path) && r.matches_host(host))
    }
}
