//! The policy files as written by operators: serde structs with `deny_unknown_fields`, spans on
//! the fields that cross-reference others so errors point at a line. Nothing outside
//! `crate::policy` sees these types; the runtime works on the compiled model.

use serde::Deserialize;
use toml::Spanned;

/// One `policies/*.toml` file. Every section is optional so a policy can be split across files;
/// singleton sections (`blocked`, `hsts`, `worker`, `rooms`, `auth`) may appear in one file only.
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
    /// Authentication provider for a non-public route; absent = the policy's default.
    pub auth: Option<Spanned<String>>,
    /// Whether WebSocket upgrades are allowed; absent = allowed when the upstream is `rooms`.
    pub websocket: Option<bool>,
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
    pub connect_timeout_ms: Option<Spanned<u64>>,
    pub read_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocked {
    /// Path prefixes refused for every route. `/terminal` is always included.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub case_sensitive: bool,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub default_provider: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}
