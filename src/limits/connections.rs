//! Connection caps, enforced before TLS: a per-client-IP cap on concurrent connections (trusted
//! proxies exempt) and a global cap. Pingora has no connection-close hook, so each admitted
//! connection carries a guard in its stream's tracer slot; the stream's drop calls
//! `on_disconnected`, which gives the slot back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::GetSocketDigest;
use pingora::upstreams::peer::{Tracer, Tracing};

use crate::policy::PolicyStore;

const SHARDS: usize = 16;

#[derive(Default)]
pub struct ConnectionCounts {
    per_ip: Vec<Mutex<HashMap<IpAddr, usize>>>,
    pub total: AtomicUsize,
    pub refused: AtomicU64,
}

impl ConnectionCounts {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnectionCounts {
            per_ip: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            total: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        let b = match ip {
            IpAddr::V4(v) => v.octets()[3],
            IpAddr::V6(v) => v.octets()[15],
        };
        &self.per_ip[b as usize % SHARDS]
    }

    /// Takes a slot for `ip` unless a cap is reached. `per_ip` of `None` exempts the address.
    pub fn acquire(&self, ip: IpAddr, per_ip: Option<usize>, total: usize) -> bool {
        if self.total.fetch_add(1, Ordering::AcqRel) >= total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut m = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if per_ip.is_some_and(|cap| *n >= cap) {
            if *n == 0 {
                m.remove(&ip);
            }
            drop(m);
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut m = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
        drop(m);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.shard(&ip)
            .lock()
            .map(|m| m.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Gives the slot back when the connection's stream is dropped.
#[derive(Debug)]
struct SlotGuard {
    ip: IpAddr,
    counts: Arc<ConnectionCounts>,
}

impl std::fmt::Debug for ConnectionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionCounts")
            .field("total", &self.total.load(Ordering::Relaxed))
            .finish()
    }
}

#[derive(Debug)]
struct Noop;

impl Tracing for Noop {
    fn on_connected(&self) {}
    fn on_disconnected(&self) {}
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(Noop)
    }
}

impl Tracing for SlotGuard {
    fn on_connected(&self) {}
    fn on_disconnected(&self) {
        self.counts.release(self.ip);
    }
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        // A clone must not release the slot a second time.
        Box::new(Noop)
    }
}

/// The pre-TLS hook that admits or drops each accepted connection.
pub struct ConnectionCaps {
    pub policy: Arc<PolicyStore>,
    pub counts: Arc<ConnectionCounts>,
}

#[async_trait]
impl PreTlsProcess for ConnectionCaps {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let Some(ip) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
        else {
            return Ok(());
        };
        let policy = self.policy.snapshot();
        let net = &policy.network;
        let exempt = net.trusted_proxies.iter().any(|n| n.contains(&ip));
        let per_ip = (!exempt).then_some(net.max_connections_per_ip);
        if !self.counts.acquire(ip, per_ip, net.max_connections) {
            tracing::debug!(client = %ip, "connection refused: connection cap reached");
            return pingora::Error::e_explain(
                pingora::ErrorType::ConnectRefused,
                "connection cap reached",
            );
        }
        stream.tracer = Some(Tracer(Box::new(SlotGuard {
            ip,
            counts: self.counts.clone(),
        })));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_come_back() {
        let c = ConnectionCounts::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(c.acquire(ip, Some(2), 10));
        assert!(c.acquire(ip, Some(2), 10));
        assert!(!c.acquire(ip, Some(2), 10));
        assert!(c.acquire("192.0.2.2".parse().unwrap(), Some(2), 10));
        c.release(ip);
        assert!(c.acquire(ip, Some(2), 10));
        assert!(
            !c.acquire("192.0.2.3".parse().unwrap(), None, 3),
            "global cap"
        );
        assert_eq!(c.total.load(Ordering::Relaxed), 3);
    }
}
