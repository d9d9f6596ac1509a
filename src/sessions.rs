//! Open WebSocket sessions, re-checked on every policy reload. A session whose route, route
//! access or room rule no longer admits it is closed with `4403 "access revoked by policy"`;
//! every other session is left alone. The gateway cannot wake a tunnel from outside, so it shuts
//! down the tunnel's upstream socket: the upstream side ends, Pingora hands the response filter
//! the end of the stream, and the close frame goes out in its place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::{Identity, Provider};
use crate::backends::rooms::room_of;
use crate::policy::model::{Policy, UpstreamTarget};
use crate::tls::client_auth::CertCheck;

/// One open session, as admitted.
#[derive(Debug)]
pub struct WsSession {
    pub route: Arc<str>,
    /// The request path (the room is read from it).
    pub path: Box<str>,
    pub identity: Option<Arc<Identity>>,
    /// The connection's client certificate (TLS connections), checked against `[mtls]` again on
    /// every reload like the connection's requests are.
    pub cert: Option<Arc<CertCheck>>,
    /// The upstream socket: its fd and both addresses, to check it is still the same socket
    /// before shutting it down (an fd number can be reused once closed).
    upstream: Mutex<Option<(RawFd, SocketAddr, SocketAddr)>>,
    pub revoked: AtomicBool,
    /// Why it was closed: a policy reload or a revoked token.
    pub why: std::sync::atomic::AtomicU8,
}

/// Why the gateway closes an open session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Why {
    PolicyRevoked = 0,
    TokenRevoked = 1,
}

#[derive(Debug, Default)]
pub struct WsRegistry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<WsSession>>>,
    pub revoked_total: AtomicU64,
}

/// Unregisters its session when the request's context is dropped, however the session ends.
pub struct WsGuard {
    id: u64,
    pub session: Arc<WsSession>,
    registry: Arc<WsRegistry>,
}

impl Drop for WsGuard {
    fn drop(&mut self) {
        // Forget the socket first: from here on nothing shuts it down.
        if let Ok(mut u) = self.session.upstream.lock() {
            *u = None;
        }
        if let Ok(mut open) = self.registry.open.lock() {
            open.remove(&self.id);
        }
    }
}

/// The local and peer addresses of a TCP socket.
pub(crate) fn addresses(fd: RawFd) -> Option<(SocketAddr, SocketAddr)> {
    use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
    let addr = |s: SockaddrStorage| -> Option<SocketAddr> {
        if let Some(a) = s.as_sockaddr_in() {
            return Some(SocketAddr::from((a.ip(), a.port())));
        }
        s.as_sockaddr_in6()
            .map(|a| SocketAddr::from((a.ip(), a.port())))
    };
    let local = getsockname::<SockaddrStorage>(fd).ok().and_then(addr)?;
    let peer = getpeername::<SockaddrStorage>(fd).ok().and_then(addr)?;
    Some((local, peer))
}

impl WsRegistry {
    pub fn register(
        self: &Arc<Self>,
        route: Arc<str>,
        path: &str,
        identity: Option<Arc<Identity>>,
        cert: Option<Arc<CertCheck>>,
    ) -> WsGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(WsSession {
            route,
            path: path.into(),
            identity,
            cert,
            upstream: Mutex::new(None),
            revoked: AtomicBool::new(false),
            why: std::sync::atomic::AtomicU8::new(Why::PolicyRevoked as u8),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, session.clone());
        }
        WsGuard {
            id,
            session,
            registry: self.clone(),
        }
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Re-checks every open session against `policy`; closes those it no longer admits.
    /// Returns how many were closed.
    pub fn revalidate(&self, policy: &Policy) -> usize {
        self.close_where(|s| still_admitted(policy, s).err(), Why::PolicyRevoked)
    }

    /// Closes the sessions whose identity the revocation list names.
    pub fn close_revoked(&self, revocations: &crate::auth::revoked::Revocations) -> usize {
        let now = crate::clock::now_unix();
        self.close_matching(
            &|id| revocations.check(id, now).map(|k| k.as_str()),
            Why::TokenRevoked,
        )
    }

    /// Closes the sessions whose identity `revoked` names (a revoked token).
    pub fn close_matching(
        &self,
        revoked: &dyn Fn(&Identity) -> Option<&'static str>,
        why: Why,
    ) -> usize {
        self.close_where(|s| s.identity.as_deref().and_then(revoked), why)
    }

    fn close_where(&self, reason: impl Fn(&WsSession) -> Option<&'static str>, why: Why) -> usize {
        let sessions: Vec<Arc<WsSession>> = match self.open.lock() {
            Ok(o) => o.values().cloned().collect(),
            Err(_) => return 0,
        };
        let mut closed = 0;
        for s in sessions {
            if s.revoked.load(Ordering::Relaxed) {
                continue;
            }
            let Some(reason) = reason(&s) else {
                continue;
            };
            let Ok(upstream) = s.upstream.lock() else {
                continue;
            };
            s.why.store(why as u8, Ordering::Relaxed);
            s.revoked.store(true, Ordering::Release);
            let subject = s.identity.as_ref().map(|i| &*i.subject).unwrap_or("-");
            match why {
                Why::PolicyRevoked => tracing::info!(
                    target: "portcullis::security",
                    route = &*s.route,
                    path = &*s.path,
                    subject,
                    why = reason,
                    "policy reload: closing a WebSocket session it no longer admits"
                ),
                Why::TokenRevoked => tracing::info!(
                    target: "portcullis::security",
                    route = &*s.route,
                    path = &*s.path,
                    subject,
                    revoked_by = reason,
                    "token revoked: closing its WebSocket session"
                ),
            }
            if let Some((fd, local, peer)) = *upstream {
                if addresses(fd) == Some((local, peer)) {
                    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
                }
            }
            closed += 1;
        }
        self.revoked_total
            .fetch_add(closed as u64, Ordering::Relaxed);
        closed
    }
}

impl WsSession {
    /// Why the gateway closed it, once `revoked` is set.
    pub fn close_reason(&self) -> Why {
        if self.why.load(Ordering::Relaxed) == Why::TokenRevoked as u8 {
            Why::TokenRevoked
        } else {
            Why::PolicyRevoked
        }
    }

    /// Records the tunnel's upstream socket (from `connected_to_upstream`).
    pub fn set_upstream(&self, fd: RawFd) {
        if let (Some((local, peer)), Ok(mut u)) = (addresses(fd), self.upstream.lock()) {
            *u = Some((fd, local, peer));
        }
    }
}

/// Whether the session would be admitted by `policy` as it was: its connection's client
/// certificate (or its absence) still passing `[mtls]`, same route (by name) still
/// taking WebSocket upgrades, its credentials still enough for the route, and the room rule
/// still letting it in. Credentials are not re-verified (keys and expiry were checked at the
/// handshake; expiry closes the session on its own).
fn still_admitted(policy: &Policy, s: &WsSession) -> Result<(), &'static str> {
    // The connection's client certificate, as its requests would be checked now.
    if let Some(cert) = &s.cert {
        cert.check(policy.mtls.as_ref(), crate::auth::now_unix() as i64)?;
    }
    let Some(route) = policy.routes.iter().find(|r| r.name == s.route) else {
        return Err("route removed");
    };
    if !route.websocket {
        return Err("route no longer takes WebSocket upgrades");
    }
    if !route.matches_path(&s.path) {
        return Err("route no longer serves the path");
    }
    if policy.blocked.find(&s.path).is_some() {
        return Err("path now blocked");
    }
    // The room lock holds whatever route reached the room server.
    let to_rooms = policy.upstreams[route.upstream].target == UpstreamTarget::Rooms;
    if to_rooms {
        let room = room_of(&s.path).unwrap_or("");
        let (locked, caps) = policy.rooms.access_for(room);
        let locked = locked && !policy.rooms.shadow_for(room);
        let admitted = match &s.identity {
            Some(identity) => identity.may_join(room, locked, caps).is_ok(),
            None => !locked,
        };
        if !admitted {
            return Err("room rule no longer admits the session");
        }
    }
    if route.public {
        return Ok(());
    }
    let Some(identity) = &s.identity else {
        return Err("route no longer public");
    };
    let dev = route.auth.iter().any(|p| p.development_only());
    // An open room's anonymous peer (no token at all).
    let anonymous = identity.provider == Provider::Room && identity.room.is_none();
    if !dev
        && !anonymous
        && !route.auth.contains(&identity.provider)
        && identity.provider != Provider::SignedUrl
    {
        return Err("route no longer accepts the session's credentials");
    }
    if identity.missing(&route.capabilities).is_some() {
        return Err("route now needs a capability the session lacks");
    }
    if anonymous && !dev && !(to_rooms && route.auth.contains(&Provider::Room)) {
        return Err("route no longer admits anonymous sessions");
    }
    Ok(())
}
