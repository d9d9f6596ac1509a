//! The client connection: the bounds set on it at each request, and ending it after a response.

use std::time::Duration;

use pingora::proxy::Session;

use crate::sessions;

/// Bounds the life of the request's connection: how long an HTTP/1.1 connection may idle
/// before the next request, how long the next request's header may take once it has started,
/// and how long this request's body (HTTP/1.1 or HTTP/2) may go without a byte. Set on every
/// request so the bounds follow the connection across keep-alive reuse; a WebSocket tunnel
/// re-arms its own read timeout at 101.
pub(super) fn bound_connection(
    session: &mut Session,
    bounds: &crate::config::ConnectionBounds,
    header_timeout: Duration,
) {
    // Only where keep-alive is already on: an HTTP/1.0 client without keep-alive, or one that
    // said `Connection: close`, keeps its connection closing.
    if let (Some(_), Some(idle)) = (session.get_keepalive(), bounds.keepalive_timeout) {
        session.set_keepalive(Some(idle.as_secs().max(1)));
    }
    session.set_header_timeout(Some(header_timeout));
    session.set_read_timeout(bounds.body_timeout);
    // Each write of the response (HTTP/2: each wait for the stream's flow-control window) must
    // complete within the bound: a client that stops reading cannot hold the connection.
    session.set_write_timeout(bounds.send_timeout);
    // Pipelined requests (RFC 9112 §9.3.2) are answered one after another, in order; without
    // this Pingora answered the first with `keep-alive` and then dropped the rest.
    session.set_pipelining_enabled(true);
}

/// Ends the client's connection after this response: HTTP/1.1 by not keeping it alive; HTTP/2,
/// whose other streams share it, by shutting the socket's read side, so the connection ends
/// once the server sees end of input. A stream can outlive its connection and the descriptor
/// be reused by then: it is shut down only while its addresses are still the connection's.
pub(super) fn close_client_connection(session: &mut Session) {
    session.set_keepalive(None);
    if session.is_http2() {
        let Some(s) = session.digest().and_then(|d| d.socket_digest.as_ref()) else {
            return;
        };
        // The peer address is read at accept (it is the client's); the local one when first
        // asked for, so it is compared only if it was.
        let inet = |a: Option<&Option<pingora::protocols::l4::socket::SocketAddr>>| {
            a.map(|a| a.as_ref().and_then(|a| a.as_inet().copied()))
        };
        let Some(Some(peer)) = inet(s.peer_addr.get()) else {
            return;
        };
        let fd = s.raw_fd();
        let Some((now_local, now_peer)) = sessions::addresses(fd) else {
            return;
        };
        let same_local = match inet(s.local_addr.get()) {
            Some(local) => local == Some(now_local),
            None => true,
        };
        if now_peer == peer && same_local {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read);
        }
    }
}
