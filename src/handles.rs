//! The process's shared handles: one struct, built once by `serve`, read by the proxy, the
//! admin listener and the background tasks.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crate::backends::rooms::RoomServer;
use crate::backends::BackendAddrs;
use crate::config::Config;
use crate::observability::Metrics;
use crate::policy::PolicyStore;
use crate::sessions::WsRegistry;
use crate::tls::CertStore;
use crate::{auth, limits, shared, tls, upstreams};

/// State shared by the proxy, the admin listener, the backends and the background tasks.
pub struct Shared {
    pub config: Config,
    pub policy: Arc<PolicyStore>,
    pub certs: Arc<CertStore>,
    pub auth: Arc<auth::AuthState>,
    pub limiters: Arc<limits::LimiterRegistry>,
    pub backoff: Arc<limits::AuthBackoff>,
    pub connections: Arc<crate::connections::ConnectionCounts>,
    pub resilience: Arc<upstreams::Resilience>,
    pub header_deadline: Arc<crate::connections::HeaderDeadline>,
    pub metrics: Arc<Metrics>,
    pub rooms: Arc<RoomServer>,
    pub stapler: Arc<tls::stapler::Stapler>,
    /// `/ready` answers 200 only while this is set: after the HTTPS listener accepts, until
    /// SIGTERM.
    pub ready: AtomicBool,
    pub in_flight: Arc<AtomicUsize>,
    /// State shared with other replicas (Redis), when the policy configures it.
    pub shared_state: Arc<shared::SharedStore>,
    /// Open WebSocket sessions, re-checked on each policy reload.
    pub ws_sessions: Arc<WsRegistry>,
    /// The in-process backends' addresses, bound before the proxy starts.
    pub backends: BackendAddrs,
    pub acme: Option<Arc<tls::acme::Acme>>,
}
