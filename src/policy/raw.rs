//! The policy files as written by operators: serde structs with `deny_unknown_fields`, spans on
//! the fields that cross-reference others so errors point at a line. Nothing outside
//! `crate::policy` sees these types; the runtime works on the compiled model.

use serde::Deserialize;
use toml::Spanned;

/// One `policies/*.toml` file. Every section is optional so a policy can be split across files;
/// singleton sections (`blocked`, `hsts`, `worker`, `rooms`, `auth`, `admin`, `headers`,
/// `signed_urls`, `mtls`, …) may appear in one file only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyFile {
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    pub blocked: Option<Spanned<RawBlocked>>,
    pub hsts: Option<Spanned<RawHsts>>,
    pub worker: Option<Spanned<RawWorker>>,
    pub rooms: Option<Spanned<RawRooms>>,
    pub auth: Option<Spanned<RawAuth>>,
    pub network: Option<Spanned<RawNetwork>>,
    pub websocket: Option<Spanned<RawWebSocket>>,
    #[serde(default)]
    pub limits: Vec<RawLimit>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub headers: Option<Spanned<RawHeaders>>,
    pub signed_urls: Option<Spanned<RawSignedUrls>>,
    pub mtls: Option<Spanned<RawMtls>>,
    #[serde(default)]
    pub alerts: Vec<RawAlert>,
    pub shared_state: Option<Spanned<RawSharedState>>,
}

/// State shared by replicas (Redis): global limits, lockouts and the revocation list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedState {
    /// One server: `redis://host:port/db` or `rediss://` for TLS; `env:NAME` / `file:/path`
    /// allowed. Exactly one of `url`, `sentinels` and `cluster_nodes`.
    pub url: Option<Spanned<String>>,
    /// Redis Sentinel: the sentinels' URLs (`redis://host:26379`); the primary they name for
    /// `sentinel_master` is the store.
    pub sentinels: Option<Vec<Spanned<String>>>,
    pub sentinel_master: Option<Spanned<String>>,
    /// The sentinels' own credentials, when they differ from the data nodes' (`env:` / `file:`).
    pub sentinel_username: Option<Spanned<String>>,
    pub sentinel_password: Option<Spanned<String>>,
    /// Redis Cluster: seed nodes' URLs; the rest of the cluster is discovered from them.
    pub cluster_nodes: Option<Vec<Spanned<String>>>,
    /// Password (`env:NAME` / `file:/path`); overrides one in the URL.
    pub password: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    /// PEM CA bundle that signs the server's certificate (`rediss://` only; relative to the
    /// policy file). Absent = the system's roots.
    pub ca_file: Option<Spanned<String>>,
    /// Prefix of every key and channel (default `portcullis:`).
    pub key_prefix: Option<Spanned<String>>,
    pub connect_timeout_ms: Option<Spanned<u64>>,
    /// How long a request waits for Redis before the limit's failure mode applies (default 50).
    pub command_timeout_ms: Option<Spanned<u64>>,
}

impl RawSharedState {
    /// Every URL the section names, as written.
    pub fn urls(&self) -> impl Iterator<Item = &String> {
        self.url
            .iter()
            .chain(self.sentinels.iter().flatten())
            .chain(self.cluster_nodes.iter().flatten())
            .map(|u| u.get_ref())
    }
}

/// An alert rule: more than `threshold` events within `window_seconds` → POST to `webhook`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub name: Spanned<String>,
    /// auth_failure, lockout, blocked_path, csrf, budget_close, revoked_staple, reload_failure,
    /// certificate_failure, bad_forwarded_for
    pub event: Spanned<String>,
    pub threshold: Spanned<u64>,
    pub window_seconds: Option<Spanned<u64>>,
    /// "global" (default) or "ip".
    pub per: Option<Spanned<String>>,
    /// The webhook URL, or `env:NAME` / `file:/path` holding it.
    pub webhook: Spanned<String>,
    /// "json" (default) or "slack" (`{"text": …}`).
    pub format: Option<Spanned<String>>,
}

/// Client certificates: the CA bundle they must chain to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    /// PEM bundle of the CAs client certificates must chain to (relative to the policy file).
    pub ca_file: Spanned<String>,
    /// PEM CRLs checked for revoked client certificates.
    #[serde(default)]
    pub crl_files: Vec<Spanned<String>>,
    /// Refuse every handshake without a valid client certificate (the whole listener).
    #[serde(default)]
    pub required: bool,
}

/// Admin paths: reachable only with the admin capability or from an admin network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Path prefixes (default `["/admin/"]`), matched case-insensitively on whole segments (a
    /// trailing `/` is dropped: `/admin/` covers `/admin` too).
    pub paths: Option<Spanned<Vec<String>>>,
    /// The capability that opens them (default `policy.admin`).
    pub capability: Option<Spanned<String>>,
    /// Client networks (CIDRs) that may reach them without the capability.
    #[serde(default)]
    pub networks: Vec<Spanned<String>>,
    /// A bearer token (`env:NAME` or `file:/path`) that opens `/metrics` on the admin listener
    /// off loopback, and nothing else.
    pub metrics_token: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// Profile for routes that name none (default `api-strict`).
    pub default_profile: Option<Spanned<String>>,
    /// Response headers removed from upstream responses besides `Server` and `X-Powered-By`.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
    /// Policy-defined profiles, by name.
    #[serde(default)]
    pub profiles: std::collections::BTreeMap<String, Spanned<RawHeaderProfile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderProfile {
    /// A built-in or earlier-defined profile whose values this one starts from.
    pub extends: Option<String>,
    pub content_security_policy: Option<String>,
    pub csp_nonce: Option<bool>,
    pub content_type_options: Option<bool>,
    pub frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    pub cross_origin_opener_policy: Option<String>,
    pub cross_origin_resource_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignedUrls {
    /// HMAC keys; secrets may be `env:NAME` or `file:/path`.
    pub keys: Vec<RawSigningKey>,
    /// Key id new URLs are signed with (default: the first).
    pub sign_with: Option<Spanned<String>>,
    /// Longest lifetime of a signed URL (default 604800, a week).
    pub max_ttl_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    pub id: Spanned<String>,
    pub secret: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`https://app.example.com`), or `"*"`.
    pub origins: Spanned<Vec<String>>,
    /// Methods a preflight may ask for (default: the route's methods).
    pub methods: Option<Spanned<Vec<String>>>,
    /// Request headers a preflight may ask for (default `content-type`, `authorization`).
    pub headers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    pub max_age_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCsrf {
    /// Origins allowed besides the request's own (default: the route's CORS origins).
    pub origins: Option<Spanned<Vec<String>>>,
    /// The double-submit cookie (default `__Host-csrf`).
    pub cookie: Option<Spanned<String>>,
    /// The header that must repeat it (default `x-csrf-token`).
    pub header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// CIDRs of proxies whose `X-Forwarded-For` is believed. Never "trust all".
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// IPv6 clients are limited per prefix of this length (default 64).
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// Total size of request header names and values; larger gets 431 (default 32768).
    pub max_header_bytes: Option<Spanned<u64>>,
    /// Concurrent connections per client IP, enforced before TLS (default 256; trusted proxies
    /// are exempt).
    pub max_connections_per_ip: Option<Spanned<u64>>,
    /// Concurrent connections in all (default 10000).
    pub max_connections: Option<Spanned<u64>>,
    /// A new connection must finish TLS and send its first request header within this
    /// (default 10000); slower clients (slowloris) are cut off.
    pub header_timeout_ms: Option<Spanned<u64>>,
    /// Forward client header names containing `_` (default false: dropped, as nginx and Envoy
    /// can; CGI-style backends read `X_Forwarded_For` as `X-Forwarded-For`).
    #[serde(default)]
    pub allow_underscores_in_headers: bool,
}

/// Budgets for each WebSocket client connection, enforced by the gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    pub bytes_per_second: Option<Spanned<u64>>,
    pub messages_per_second: Option<Spanned<u64>>,
    pub max_message_bytes: Option<Spanned<u64>>,
    /// A client silent this long is closed (1001).
    pub idle_timeout_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub name: Spanned<String>,
    /// What a bucket is per: any of `ip`, `subject`, `route`; empty = one bucket for all.
    #[serde(default)]
    pub key: Vec<Spanned<String>>,
    /// Sustained rate: `requests` per `per_seconds`.
    pub requests: Spanned<u64>,
    pub per_seconds: Option<Spanned<u64>>,
    /// Requests allowed at once (default `requests`).
    pub burst: Option<Spanned<u64>>,
    /// Route names; absent = every route.
    pub routes: Option<Spanned<Vec<String>>>,
    /// Distinct keys held before newcomers share one bucket (default 100000).
    pub max_keys: Option<Spanned<u64>>,
    /// Log and count would-be refusals without refusing (a dry run for a new limit).
    #[serde(default)]
    pub shadow: bool,
    /// `local` (default: per replica) or `global` (across replicas, needs `[shared_state]`).
    pub scope: Option<Spanned<String>>,
    /// A global limit while Redis is unreachable: `fail_open` (default: the local limit
    /// applies) or `fail_closed` (503).
    pub failure_mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    /// Host names this route answers (`api.example.com`, `*.example.com`); absent = any host.
    pub hosts: Option<Spanned<Vec<String>>>,
    pub path_prefix: Spanned<String>,
    /// Allowed methods; absent = all.
    pub methods: Option<Spanned<Vec<String>>>,
    pub upstream: Spanned<String>,
    /// A public route needs no authentication.
    #[serde(default)]
    pub public: bool,
    /// Authentication provider(s) for a non-public route, tried in order (`"jwt"` or
    /// `["static", "jwt"]`); absent = the policy's default.
    pub auth: Option<Spanned<OneOrMany>>,
    /// Capabilities a caller must hold (all of them).
    pub capabilities: Option<Spanned<Vec<String>>>,
    /// Accept `?access_token=` (for browsers' WebSocket handshakes). Removed before forwarding.
    #[serde(default)]
    pub query_token: bool,
    /// Forward the client's `Authorization` header upstream (default: removed).
    #[serde(default)]
    pub forward_authorization: bool,
    /// Largest request body; larger gets 413 (default 16 MiB).
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Whether WebSocket upgrades are allowed; absent = allowed when the upstream is `rooms`.
    pub websocket: Option<bool>,
    /// Whether `path_prefix` matches case-sensitively (default true).
    pub case_sensitive: Option<bool>,
    /// Security-header profile (default: `headers.default_profile`).
    pub headers: Option<Spanned<String>>,
    pub cors: Option<Spanned<RawCors>>,
    pub csrf: Option<Spanned<RawCsrf>>,
    /// Cookie carrying the bearer token for browser sessions; unsafe requests then need CSRF.
    pub session_cookie: Option<Spanned<String>>,
    /// Admit a request with a valid signed URL in place of authentication.
    #[serde(default)]
    pub signed_urls: bool,
    /// With `auth = "mtls"`: the client certificates admitted (`sha256:…`, `san:…`, `cn:…`);
    /// absent = any certificate the `[mtls]` bundle verifies.
    pub client_cert_allow: Option<Spanned<Vec<String>>>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(|s| s.as_str()).collect(),
        }
    }
}

/// A status in `health_check_statuses`: a code or a class such as `"2xx"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(u16),
    Class(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    /// `worker` or `rooms` (in-process) or `external`.
    pub kind: Spanned<String>,
    /// `host:port` list for `external` upstreams.
    pub addresses: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub tls: bool,
    /// TLS server name for `external` upstreams over TLS; default: the first address's host.
    pub sni: Option<String>,
    /// PEM bundle of the CAs an upstream's certificate must chain to (relative to the policy
    /// file). Required with `tls` unless `system_roots`.
    pub ca_file: Option<Spanned<String>>,
    /// Verify against the system's trust store instead of a pinned bundle.
    #[serde(default)]
    pub system_roots: bool,
    /// Lowest TLS version accepted from the upstream: "1.2" (default) or "1.3".
    pub min_tls_version: Option<Spanned<String>>,
    pub connect_timeout_ms: Option<Spanned<u64>>,
    pub read_timeout_ms: Option<Spanned<u64>>,
    /// Consecutive failures that open an address's circuit (default 5).
    pub circuit_failures: Option<Spanned<u64>>,
    /// How long an open circuit answers 503 before one probe is let through (default 10000).
    pub circuit_open_ms: Option<Spanned<u64>>,
    /// Active TCP health check period for external addresses (default 5; 0 = off).
    pub health_check_interval_seconds: Option<Spanned<u64>>,
    /// Consecutive passed checks that bring a down address back (default 2).
    pub health_check_rise: Option<Spanned<u64>>,
    /// Consecutive failed checks that take an address out (default 2).
    pub health_check_fall: Option<Spanned<u64>>,
    /// Retries may be at most this percent of the upstream's requests (default 20; 0 = none).
    pub retry_budget_percent: Option<Spanned<u64>>,
    /// An HTTP health check to this path instead of a TCP connect.
    pub health_check_path: Option<Spanned<String>>,
    /// The HTTP check's method: GET (default), HEAD or OPTIONS.
    pub health_check_method: Option<Spanned<String>>,
    /// The HTTP check's Host header.
    pub health_check_host: Option<Spanned<String>>,
    /// Statuses that pass the HTTP check: codes (200) or classes ("2xx"); default 2xx and 3xx.
    pub health_check_statuses: Option<Spanned<Vec<RawStatus>>>,
    /// Seconds a pooled connection to the upstream may wait unused before it is closed
    /// (default 60; 0 = none is reused).
    pub idle_timeout_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocked {
    /// Path prefixes refused for every route. `/terminal` is always included.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub case_sensitive: bool,
    /// Include the built-in dangerous-paths registry (default true).
    #[serde(default = "yes")]
    pub builtin: bool,
    /// Blocked paths opened for one route, each with a reason and an expiry.
    #[serde(default)]
    pub exceptions: Vec<RawBlockException>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlockException {
    pub path: Spanned<String>,
    pub route: Spanned<String>,
    pub reason: Spanned<String>,
    /// RFC 3339 time (quoted or a TOML date-time) after which the path is blocked again.
    pub expires_at: Spanned<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub max_age: Option<Spanned<u64>>,
    #[serde(default = "yes")]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    #[serde(default)]
    pub models: Vec<String>,
    pub max_object_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRooms {
    pub queue_capacity: Option<Spanned<u64>>,
    pub max_peers: Option<Spanned<u64>>,
    pub max_message_bytes: Option<Spanned<u64>>,
    pub slow_peer_timeout_ms: Option<Spanned<u64>>,
    /// `open` (no token needed to join) or `locked`; default `open`.
    pub default_access: Option<Spanned<String>>,
    /// `iss` of room tokens; default `portcullis-rooms`.
    pub token_issuer: Option<String>,
    /// Room-token keys by `kid`; several may be active at once for rotation.
    #[serde(default)]
    pub keys: Vec<RawRoomKey>,
    /// Per-room access rules.
    #[serde(default)]
    pub access: Vec<RawRoomAccess>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoomKey {
    pub kid: Spanned<String>,
    /// `HS256`/`HS384`/`HS512`, `ES256`/`ES384`, `RS*`/`PS*`, `EdDSA`.
    pub algorithm: Spanned<String>,
    /// HMAC secret (or `env:NAME` / `file:/path`).
    pub secret: Option<Spanned<String>>,
    /// PEM public key for asymmetric algorithms.
    pub public_key_file: Option<Spanned<String>>,
    /// PEM private key: lets `portcullis token mint` sign with this key.
    pub private_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoomAccess {
    /// A room name, or a prefix ending in `*` (`ops-*`).
    pub room: Spanned<String>,
    /// `open` or `locked`.
    pub mode: Spanned<String>,
    /// Capabilities a room token needs to join.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Log and count would-be refusals of a `locked` rule without refusing.
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub default_provider: Option<Spanned<String>>,
    /// Verified-token cache: how long an entry lives (never past the token's `exp`).
    pub cache_ttl_seconds: Option<Spanned<u64>>,
    pub cache_max_entries: Option<Spanned<u64>>,
    /// After the worker token changes at its source, how long the previous one is still taken.
    pub previous_token_grace_seconds: Option<Spanned<u64>>,
    /// Capability names beyond the built-in ones.
    #[serde(default)]
    pub capabilities: Vec<Spanned<String>>,
    /// Further client-sent headers to remove before forwarding (`X-Portcullis-*` always are).
    #[serde(default)]
    pub strip_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    pub backoff: Option<RawBackoff>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// Failed authentications within the window that start a lockout (default 5; 0 disables).
    pub max_failures: Option<u32>,
    pub window_seconds: Option<u64>,
    /// First lockout; each repeat doubles it (default 1).
    pub lockout_seconds: Option<u64>,
    pub max_lockout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: Spanned<String>,
    /// Expected `iss` claim.
    pub issuer: Option<String>,
    /// Accepted `aud` values; absent = `aud` not checked.
    pub audiences: Option<Vec<String>>,
    /// Allowed algorithms. Never `none`; never HS* together with public keys.
    pub algorithms: Spanned<Vec<String>>,
    /// HMAC secret for HS* (or `env:NAME` / `file:/path`).
    pub secret: Option<Spanned<String>>,
    /// PEM public keys.
    #[serde(default)]
    pub keys: Vec<RawPublicKey>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_ttl_seconds: Option<u64>,
    pub jwks_refetch_interval_seconds: Option<u64>,
    pub jwks_max_stale_seconds: Option<u64>,
    pub leeway_seconds: Option<u64>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    pub subject_claim: Option<String>,
    pub capabilities_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublicKey {
    pub kid: Option<String>,
    pub algorithm: Spanned<String>,
    pub pem_file: Spanned<String>,
}

fn yes() -> bool {
    true
}
