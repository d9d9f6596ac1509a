//! Connection caps, enforced before TLS: a per-client-IP cap on concurrent connections (trusted
//! proxies exempt) and a global cap. Pingora has no connection-close hook, so each admitted
//! connection carries a guard in its stream's tracer slot; the stream's drop calls
//! `on_disconnected`, which gives the slot back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// One connection that has not yet sent a complete request header.
#[derive(Debug)]
struct Pending {
    accepted: Instant,
    fd: RawFd,
    /// Set (under the lock) when the stream is dropped, so the fd is never touched after close.
    closed: Mutex<bool>,
}

/// The header deadline: a connection must complete its TLS handshake and first request header
/// within the policy's `header_timeout_ms`, or it is shut down (slowloris). Pingora only times
/// individual reads, so a client trickling one byte at a time would otherwise hold its slot.
#[derive(Default)]
pub struct HeaderDeadline {
    pending: Vec<Mutex<HashMap<SocketAddr, Arc<Pending>>>>,
    pub cut: AtomicU64,
}

impl HeaderDeadline {
    pub fn new() -> Arc<Self> {
        Arc::new(HeaderDeadline {
            pending: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            cut: AtomicU64::new(0),
        })
    }

    fn shard(&self, peer: &SocketAddr) -> &Mutex<HashMap<SocketAddr, Arc<Pending>>> {
        &self.pending[peer.port() as usize % SHARDS]
    }

    /// The first request header from `peer` arrived: its connection is no longer watched.
    pub fn request_seen(&self, peer: &SocketAddr) {
        let mut m = self.shard(peer).lock().unwrap_or_else(|p| p.into_inner());
        if !m.is_empty() {
            m.remove(peer);
        }
    }

    /// Shuts down connections past `timeout` without a request header. Run periodically.
    pub fn reap(&self, timeout: Duration) {
        let now = Instant::now();
        for shard in &self.pending {
            let late: Vec<Arc<Pending>> = {
                let mut m = shard.lock().unwrap_or_else(|p| p.into_inner());
                let late: Vec<SocketAddr> = m
                    .iter()
                    .filter(|(_, p)| now.duration_since(p.accepted) >= timeout)
                    .map(|(k, _)| *k)
                    .collect();
                late.iter().filter_map(|k| m.remove(k)).collect()
            };
            for p in late {
                let closed = p.closed.lock().unwrap_or_else(|e| e.into_inner());
                if !*closed {
                    // The stream cannot close while we hold its lock, so the fd is still ours.
                    let _ = nix::sys::socket::shutdown(p.fd, nix::sys::socket::Shutdown::Both);
                    self.cut.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "portcullis::security", "connection cut: no request header within the header timeout");
                }
            }
        }
    }
}

/// Gives the slot back when the connection's stream is dropped.
#[derive(Debug)]
struct SlotGuard {
    ip: IpAddr,
    counts: Arc<ConnectionCounts>,
    pending: Option<(SocketAddr, Arc<Pending>, Arc<HeaderDeadline>)>,
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline").finish()
    }
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
        if let Some((peer, p, deadline)) = &self.pending {
            *p.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
            deadline.request_seen(peer);
        }
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
    pub deadline: Arc<HeaderDeadline>,
}

#[async_trait]
impl PreTlsProcess for ConnectionCaps {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let Some(peer) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
        else {
            return Ok(());
        };
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
        let ip = peer.ip().to_canonical();
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
        let pending = Arc::new(Pending {
            accepted: Instant::now(),
            fd: stream.as_raw_fd(),
            closed: Mutex::new(false),
        });
        self.deadline
            .shard(&peer)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, pending.clone());
        stream.tracer = Some(Tracer(Box::new(SlotGuard {
            ip,
            counts: self.counts.clone(),
            pending: Some((peer, pending, self.deadline.clone())),
        })));
        // Remember the SNI so a failed handshake can be reported with it.
        if let Some(sni) = crate::observability::handshakes::peek_sni(stream).await {
            crate::observability::handshakes::remember_sni(peer, &sni);
        }
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
