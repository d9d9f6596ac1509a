//! Settings the policy holds for the modules that act on them: WebSocket budgets, circuit
//! breakers, the shared store, alert rules, client-certificate rules. They are data, defined
//! here so the policy model depends on no module that acts at run time; their behavior lives
//! with those modules (`proxy::websocket`, `upstreams`, `shared`, `observability::alerts`,
//! `tls::client_auth`), which re-export them.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::danger::ClientCertVerifier;

/// Budgets from the policy's `[websocket]` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsBudget {
    pub bytes_per_second: u64,
    pub messages_per_second: u64,
    pub max_message_bytes: u64,
    pub idle_timeout: Duration,
}

impl Default for WsBudget {
    fn default() -> Self {
        WsBudget {
            bytes_per_second: 1 << 20,
            messages_per_second: 100,
            max_message_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// An HTTP health check: the request it sends and the statuses that pass. Over TLS for an
/// upstream over TLS, verified as its requests are.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub method: &'static str,
    pub path: String,
    /// The `Host` header: the policy's, else the TLS name, else the address as written.
    pub host: Option<String>,
    /// Inclusive status ranges that pass.
    pub statuses: Vec<(u16, u16)>,
    /// The upstream's trust settings, for a check over TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpCheck {
    pub fn passes(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Breaker settings from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSpec {
    pub failures: u32,
    pub open_for: Duration,
}

/// The compiled `[shared_state]` section. Secrets are resolved; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SharedSettings {
    pub topology: Topology,
    pub password: Option<String>,
    pub username: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// How the store is reached.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Topology {
    /// One server (`url`).
    Single(String),
    /// The primary that Redis Sentinel names for `master`; `sentinels` are its URLs.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        username: Option<String>,
        password: Option<String>,
    },
    /// A Redis Cluster reached through any of these seed nodes.
    Cluster(Vec<String>),
}

impl Topology {
    /// The URLs the configuration names (one server, the sentinels or the seed nodes).
    pub fn urls(&self) -> &[String] {
        match self {
            Topology::Single(u) => std::slice::from_ref(u),
            Topology::Sentinel { sentinels, .. } => sentinels,
            Topology::Cluster(nodes) => nodes,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}

impl std::fmt::Debug for SharedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSettings")
            .field("endpoint", &self.endpoint())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedSettings {
    pub fn new(url: String) -> Self {
        Self::with_topology(Topology::Single(url))
    }

    pub fn with_topology(topology: Topology) -> Self {
        SharedSettings {
            topology,
            password: None,
            username: None,
            ca_pem: None,
            prefix: "portcullis:".into(),
            connect_timeout: Duration::from_millis(1000),
            command_timeout: Duration::from_millis(50),
        }
    }

    /// Whether every connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.topology
            .urls()
            .iter()
            .all(|u| u.starts_with("rediss://"))
    }

    /// The `host:port` of each URL, without credentials, path or query.
    pub fn hosts(&self) -> Vec<&str> {
        self.topology.urls().iter().map(|u| host_of(u)).collect()
    }

    /// For logs: the URLs without credentials, path or query, e.g. `redis://10.0.0.5:6379`,
    /// `sentinel://10.0.0.1:26379,10.0.0.2:26379/portcullis` or
    /// `cluster://10.0.0.1:7000,10.0.0.2:7000`.
    pub fn endpoint(&self) -> String {
        let tls = if self.tls() { "s" } else { "" };
        let hosts = self.hosts().join(",");
        match &self.topology {
            Topology::Single(_) => format!("redis{tls}://{hosts}"),
            Topology::Sentinel { master, .. } => format!("sentinel{tls}://{hosts}/{master}"),
            Topology::Cluster(_) => format!("cluster{tls}://{hosts}"),
        }
    }
}

/// `host:port` of a Redis URL.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or("");
    let rest = rest.rsplit_once('@').map(|x| x.1).unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or("")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    AuthFailure,
    Lockout,
    BlockedPath,
    Csrf,
    BudgetClose,
    RevokedStaple,
    ReloadFailure,
    CertificateFailure,
    BadForwardedFor,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::AuthFailure,
        EventKind::Lockout,
        EventKind::BlockedPath,
        EventKind::Csrf,
        EventKind::BudgetClose,
        EventKind::RevokedStaple,
        EventKind::ReloadFailure,
        EventKind::CertificateFailure,
        EventKind::BadForwardedFor,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AuthFailure => "auth_failure",
            EventKind::Lockout => "lockout",
            EventKind::BlockedPath => "blocked_path",
            EventKind::Csrf => "csrf",
            EventKind::BudgetClose => "budget_close",
            EventKind::RevokedStaple => "revoked_staple",
            EventKind::ReloadFailure => "reload_failure",
            EventKind::CertificateFailure => "certificate_failure",
            EventKind::BadForwardedFor => "bad_forwarded_for",
        }
    }
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A compiled `[[alerts]]` rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: Arc<str>,
    pub event: EventKind,
    /// Alert when the count in a window goes above this.
    pub threshold: u64,
    pub window: Duration,
    /// Count per client IP instead of overall.
    pub per_ip: bool,
    pub webhook: String,
    pub slack: bool,
}

/// One `client_cert_allow` entry of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    Sha256(String),
    San(String),
    Cn(String),
}

/// Why a `client_cert_allow` entry is not one; names the entry as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowEntryError {
    #[error("{0:?}: a SHA-256 fingerprint is 64 hex digits")]
    Fingerprint(String),
    #[error("{0:?}: use sha256:<fingerprint>, san:<name> or cn:<name>")]
    Form(String),
}

impl AllowEntry {
    pub fn parse(s: &str) -> Result<AllowEntry, AllowEntryError> {
        if let Some(h) = s.strip_prefix("sha256:") {
            let hex: String = h.chars().filter(|c| *c != ':').collect();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(AllowEntryError::Fingerprint(s.to_string()));
            }
            return Ok(AllowEntry::Sha256(hex.to_ascii_lowercase()));
        }
        if let Some(n) = s.strip_prefix("san:").filter(|n| !n.is_empty()) {
            return Ok(AllowEntry::San(n.to_string()));
        }
        if let Some(n) = s.strip_prefix("cn:").filter(|n| !n.is_empty()) {
            return Ok(AllowEntry::Cn(n.to_string()));
        }
        Err(AllowEntryError::Form(s.to_string()))
    }
}

/// Compiled `[mtls]`.
pub struct MtlsSettings {
    pub verifier: Arc<dyn ClientCertVerifier>,
    pub required: bool,
    /// Names the CA bundle and CRLs by content (never 0 nor `u64::MAX`): a connection's
    /// certificate is verified again when it changes.
    pub id: u64,
}
