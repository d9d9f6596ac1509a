//! The way upstream: `upstream_peer` picks the address, `fail_to_connect` moves to the next one,
//! `connected_to_upstream` holds the minimum TLS version, and `upstream_request_filter` writes
//! the identity and forwarding headers (removing those the client may not set).

use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;

use super::{Gateway, RequestCtx, X_REQUEST_ID};
use crate::decide;
use crate::policy::model::UpstreamTarget;

/// The client's address as a header value; an IPv4 address is written without `fmt`.
fn address_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an address is a header value");
    };
    let (buf, n) = crate::http::digits::ipv4(v4);
    HeaderValue::from_bytes(&buf[..n]).expect("digits and dots are a header value")
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_SUBJECT: HeaderName = HeaderName::from_static("x-portcullis-subject");
static X_CAPABILITIES: HeaderName = HeaderName::from_static("x-portcullis-capabilities");
static X_ROOM: HeaderName = HeaderName::from_static("x-portcullis-room");
static X_AUTH: HeaderName = HeaderName::from_static("x-portcullis-auth");
static X_ROUTE: HeaderName = HeaderName::from_static("x-portcullis-route");
static X_CLIENT_CERT: HeaderName = HeaderName::from_static("x-portcullis-client-cert");
static X_CSP_NONCE: HeaderName = HeaderName::from_static("x-portcullis-csp-nonce");

/// Removes cookie `name` from the request's `Cookie` headers, keeping the others.
fn strip_cookie(req: &mut RequestHeader, name: &str) -> Result<()> {
    let kept: Vec<String> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(name))
        .map(str::to_string)
        .collect();
    req.remove_header(&header::COOKIE);
    if !kept.is_empty() {
        req.insert_header(header::COOKIE, kept.join("; "))?;
    }
    Ok(())
}

/// Client headers that legacy stacks or other proxies take as the client's address, its host,
/// its scheme, the path or the method: always removed (a path or method override gets past
/// blocked paths and method allow-lists). Sorted, for a binary search with `_` read as `-`.
const OVERRIDE_HEADERS: [&[u8]; 28] = [
    b"cf-connecting-ip",
    b"client-ip",
    b"fastly-client-ip",
    b"forwarded",
    b"forwarded-for",
    b"front-end-https",
    b"proxy-client-ip",
    b"true-client-ip",
    b"wl-proxy-client-ip",
    b"x-client-ip",
    b"x-cluster-client-ip",
    b"x-envoy-external-address",
    b"x-envoy-original-path",
    b"x-forwarded",
    b"x-host",
    b"x-http-method",
    b"x-http-method-override",
    b"x-method-override",
    b"x-original-host",
    b"x-original-uri",
    b"x-original-url",
    b"x-originating-ip",
    b"x-proxyuser-ip",
    b"x-real-ip",
    b"x-remote-addr",
    b"x-remote-ip",
    b"x-request-id",
    b"x-rewrite-url",
];

/// Headers a client may not set: identity and forwarding headers are the gateway's to write, and
/// the override headers above. Names are compared with `_` read as `-`, as CGI-style stacks
/// (WSGI, PHP, Apache CGI) read them, so `X_Portcullis_Subject` is `X-Portcullis-Subject`.
fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    starts_folded(n, b"x-portcullis-")
        || starts_folded(n, b"x-forwarded-")
        || OVERRIDE_HEADERS
            .binary_search_by(|h| cmp_folded(h, n))
            .is_ok()
}

/// Orders a listed name against a lower-case header name read with `_` as `-`.
fn cmp_folded(listed: &[u8], name: &[u8]) -> std::cmp::Ordering {
    let fold = |c: &u8| if *c == b'_' { b'-' } else { *c };
    listed.iter().copied().cmp(name.iter().map(fold))
}

/// Whether two lower-case header names are the same with `_` read as `-`.
fn eq_folded(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

fn starts_folded(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && eq_folded(&name[..prefix.len()], prefix)
}

impl Gateway {
    /// The peer of the request's route: an in-process backend, or the external address `decide`
    /// chose.
    pub(super) fn peer_for(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        let mut peer = match &upstream.target {
            UpstreamTarget::Worker => {
                HttpPeer::new(self.handles.backends.worker, false, String::new())
            }
            UpstreamTarget::Rooms => {
                HttpPeer::new(self.handles.backends.rooms, false, String::new())
            }
            UpstreamTarget::External {
                addresses,
                tls,
                sni,
            } => {
                let state = match &ctx.upstream_addr {
                    Some(c) => c.state.clone(),
                    None => self.handles.resilience.address(
                        policy,
                        policy.routes[r].upstream,
                        upstream.next_address(addresses),
                    ),
                };
                // Names were resolved when the policy was applied and are refreshed on a
                // timer: a request never looks one up.
                let Some(addr) = state.socket_addr() else {
                    let mut e = Error::new_up(ErrorType::ConnectNoRoute);
                    e.set_context("the upstream's address name has not resolved");
                    return Err(e);
                };
                HttpPeer::new(addr, *tls, sni.clone())
            }
        };
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.total_connection_timeout =
            Some(upstream.connect_timeout + Duration::from_secs(1));
        peer.options.read_timeout = if ctx.facts.websocket {
            None
        } else {
            Some(upstream.read_timeout)
        };
        peer.options.idle_timeout = Some(upstream.idle_timeout);
        if let Some(ca) = &upstream.tls_ca {
            peer.options.ca = Some(ca.clone());
        }
        peer.group_key = upstream.tls_group;
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        Ok(Box::new(peer))
    }

    /// A connection to an external address failed (refused, timed out, TLS refused): nothing
    /// reached the upstream, so the request, body and all, may go to another address. The
    /// failure counts against this address's circuit, and the next address whose circuit admits
    /// a request and that this request has not tried is picked; with none left the error
    /// stands and the client gets its 502.
    pub(super) fn retry_elsewhere(&self, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return e;
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        let (Some(choice), false) = (ctx.upstream_addr.as_mut(), ctx.facts.websocket) else {
            return e;
        };
        let from = choice.idx;
        if decide::upstream::retry(policy, choice, &self.handles.resilience) {
            if let UpstreamTarget::External { addresses, .. } = &upstream.target {
                tracing::info!(
                    upstream = &*upstream.name,
                    address = %addresses[from],
                    next = %addresses[choice.idx],
                    reason = %e,
                    "upstream connect failed; trying the next address"
                );
            }
            e.set_retry(true);
        }
        e
    }

    /// An error on an upstream connection once it was established. The request is sent once
    /// more (to another address when there is one) only if: the connection was a reused, pooled
    /// one, which the upstream may have closed as the request went out; no byte of the response
    /// has reached the client; the method is idempotent; a body, if any, is still whole in the
    /// retry buffer; it was not retried already; and the upstream's retry budget has a token.
    pub(super) fn retry_reused(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        e.set_retry(false);
        if !client_reused
            || ctx.retried
            || ctx.facts.websocket
            || session.response_written().is_some()
            || !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            return e;
        }
        let (Some(policy), Some(r), Some(choice)) =
            (&ctx.policy, ctx.facts.route, ctx.upstream_addr.as_mut())
        else {
            return e;
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        if !self
            .handles
            .resilience
            .retry_budget(policy, choice.upstream)
            .withdraw()
        {
            tracing::warn!(
                upstream = &*upstream.name,
                reason = %e,
                "retry budget spent: the failed request is not retried"
            );
            return e;
        }
        ctx.retried = true;
        let from = choice.idx;
        decide::upstream::move_on(policy, choice, &self.handles.resilience);
        if let UpstreamTarget::External { addresses, .. } = &upstream.target {
            tracing::info!(
                upstream = &*upstream.name,
                address = %addresses[from],
                next = %addresses[choice.idx],
                reason = %e,
                "reused upstream connection failed before the response; retrying once"
            );
        }
        e.set_retry(true);
        e
    }

    /// Counts the connection a request is sent on, for `portcullis_upstream_connections_total`.
    pub(super) fn count_connection(&self, reused: bool, ctx: &RequestCtx) {
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return;
        };
        self.handles
            .resilience
            .count_connection(policy, policy.routes[r].upstream, reused);
    }

    /// Refuses an upstream connection below TLS 1.3 when the upstream asks for it.
    pub(super) fn check_upstream_tls(
        &self,
        peer: &HttpPeer,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(policy), Some(r)) = (&ctx.policy, ctx.facts.route) else {
            return Ok(());
        };
        let upstream = &policy.upstreams[policy.routes[r].upstream];
        if !upstream.tls13_only {
            return Ok(());
        }
        let version = digest
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|s| s.version.to_string())
            .unwrap_or_default();
        if version != "TLSv1_3" && version != "TLSv1.3" {
            tracing::warn!(
                upstream = &*upstream.name,
                address = %peer._address,
                negotiated = if version.is_empty() { "none" } else { version.as_str() },
                "upstream TLS refused: below the minimum TLS 1.3"
            );
            let mut e = Error::new_up(ErrorType::TLSHandshakeFailure);
            e.set_context(format!(
                "upstream negotiated {version}, below the minimum TLS 1.3"
            ));
            return Err(e);
        }
        Ok(())
    }

    /// The request head as the upstream gets it: client-sent identity, forwarding and override
    /// headers removed, credentials kept at the gateway unless the route forwards them, and the
    /// gateway's own headers written.
    pub(super) fn write_upstream_headers(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let policy = ctx.policy.as_ref();
        let route = policy.zip(ctx.facts.route).map(|(p, r)| &p.routes[r]);
        // Names with `_` are dropped unless the policy allows them (nginx's
        // `underscores_in_headers off`): a CGI-style backend reads them as their `-` twins.
        let drop_underscores = !policy.is_some_and(|p| p.network.allow_underscores_in_headers);
        let strip: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|k| {
                let name = k.as_str();
                is_identity_header(name)
                    || (drop_underscores && name.contains('_'))
                    || policy.is_some_and(|p| {
                        p.auth
                            .strip_headers
                            .iter()
                            .any(|h| eq_folded(h.as_str().as_bytes(), name.as_bytes()))
                    })
            })
            .cloned()
            .collect();
        for name in strip {
            upstream_request.remove_header(&name);
        }
        if !route.is_some_and(|r| r.public || r.forward_authorization) {
            upstream_request.remove_header(&header::AUTHORIZATION);
            // A session cookie is a bearer token too: it stays at the gateway.
            if let Some(name) = route.and_then(|r| r.session_cookie.as_deref()) {
                strip_cookie(upstream_request, name)?;
            }
        }
        if !upstream_request.headers.contains_key(header::HOST) {
            if let Some(h) = &ctx.facts.host {
                upstream_request.insert_header(header::HOST, h.as_str())?;
            }
        }
        let host = ctx.facts.route_host().to_string();
        if let Some(ip) = ctx.facts.client {
            upstream_request.insert_header(X_FORWARDED_FOR.clone(), address_value(ip))?;
        }
        upstream_request.insert_header(X_FORWARDED_PROTO.clone(), "https")?;
        if !host.is_empty() {
            upstream_request.insert_header(X_FORWARDED_HOST.clone(), host)?;
        }
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(X_REQUEST_ID.clone(), id.clone())?;
        }
        if let Some(identity) = &ctx.facts.identity {
            upstream_request.insert_header(X_SUBJECT.clone(), &*identity.subject)?;
            upstream_request.insert_header(X_CAPABILITIES.clone(), identity.capability_header())?;
            upstream_request.insert_header(X_AUTH.clone(), identity.provider.as_str())?;
            if let Some(room) = &identity.room {
                upstream_request.insert_header(X_ROOM.clone(), &**room)?;
            }
            if identity.provider == crate::auth::Provider::Mtls {
                if let Some(fp) = &identity.verified_by {
                    upstream_request.insert_header(X_CLIENT_CERT.clone(), &**fp)?;
                }
            }
        }
        if let Some(r) = route {
            upstream_request.insert_header(X_ROUTE.clone(), &*r.name)?;
        }
        if let Some(n) = &ctx.csp_nonce {
            upstream_request.insert_header(X_CSP_NONCE.clone(), n.as_str())?;
        }
        ctx.upstream_sent = Some(Instant::now());
        if let (Some(t), Some(r)) = (ctx.trace.as_mut(), route) {
            let upstream = &policy.expect("a route implies a policy").upstreams[r.upstream].name;
            t.start_upstream(upstream, upstream_request);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_is_written_as_display_writes_it() {
        for a in 0..=255u8 {
            for ip in [
                [a, 0, 9, 10],
                [10, a, 99, 100],
                [255, 1, a, 0],
                [1, 2, 3, a],
            ] {
                let ip = std::net::IpAddr::from(ip);
                assert_eq!(address_value(ip).to_str().unwrap(), ip.to_string());
            }
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_value(v6).to_str().unwrap(), "2001:db8::1");
    }

    #[test]
    fn identity_and_override_headers_match_in_every_spelling() {
        for name in [
            "x-portcullis-subject",
            "x_portcullis_subject",
            "x-portcullis_capabilities",
            "x_forwarded_for",
            "x-forwarded-host",
            "x_real_ip",
            "forwarded",
            "x_request_id",
            "true-client-ip",
            "true_client_ip",
            "x-client-ip",
            "x-original-url",
            "x_original_url",
            "x-rewrite-url",
            "x-http-method-override",
            "x_http_method_override",
            "x-http-method",
            "x-method-override",
            "x-forwarded",
            "x_forwarded",
            "forwarded-for",
            "x-original-host",
            "x-host",
            "x-proxyuser-ip",
            "client-ip",
            "client_ip",
            "x-cluster-client-ip",
            "x-remote-addr",
            "x-remote-ip",
            "x-originating-ip",
            "front-end-https",
            "front_end_https",
            "x-original-uri",
            "proxy-client-ip",
            "wl-proxy-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-envoy-external-address",
            "x-envoy-original-path",
            "x-rewrite-url",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        // The binary search needs the list sorted.
        assert!(OVERRIDE_HEADERS.windows(2).all(|w| w[0] < w[1]));
        for name in [
            "x-portcullis",
            "x-client-ipx",
            "accept",
            "x-real-ipv6",
            "forwarded-x",
            "x-hosts",
            "x-forwarde",
            "a",
            "zz",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }
}
