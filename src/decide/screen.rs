//! Screening, before any route is looked at: who the client is, whether the head is within
//! bounds and unambiguous, the host, the target's form, and the canonical path every later step
//! judges (and that is forwarded).

use http::header;

use super::request::{Deps, Facts, RequestView};
use crate::http::deny::Deny;
use crate::http::host;
use crate::limits::client_ip;
use crate::policy::model::Policy;
use crate::policy::paths::origin_form;

/// Answers the canonical target to forward in place of the one sent, when they differ.
pub fn screen(
    policy: &Policy,
    req: &RequestView<'_>,
    facts: &mut Facts,
) -> Result<Option<Box<http::Uri>>, Deny> {
    let net = &policy.network;
    let mut bad_forwarding = false;
    if let Some(peer) = req.peer {
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
        let peer = peer.to_canonical();
        // Forwarding headers that do not say who the client is: the request is refused below
        // with the client unknown. The peer is a trusted proxy; taking it for the client would
        // blame (and lock out, or admit) everyone behind it.
        match client_ip::resolve(peer, req.headers, &net.trusted_proxies) {
            Ok(client) => {
                facts.client = Some(client);
                facts.client_key = Some(client_ip::bucket(client, net.ipv6_prefix));
            }
            Err(client_ip::UnparsableForwarding) => bad_forwarding = true,
        }
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > net.max_header_bytes {
        return Err(Deny::HeadersTooLarge);
    }
    if bad_forwarding {
        return Err(Deny::BadForwardedFor);
    }
    if req.raw_content_length && req.headers.contains_key(header::TRANSFER_ENCODING)
        || ambiguous_length(req.headers)
    {
        return Err(Deny::AmbiguousLength);
    }
    // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2); HTTP/2 carries :authority instead.
    let hosts = req.headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version == http::Version::HTTP_11) {
        return Err(Deny::BadHost);
    }
    // Routes match the normalized host: one that does not parse is refused, never left to fall
    // through to the routes that take any host.
    let raw_host = match req.headers.get(header::HOST) {
        Some(h) => Some(h.to_str().map_err(|_| ())),
        None => req.uri.authority().map(|a| Ok(a.as_str())),
    };
    if let Some(raw) = raw_host {
        let (raw, routed) = raw
            .ok()
            .and_then(|r| Some((r, host::normalize(r)?)))
            .ok_or(Deny::BadHost)?;
        let start = routed.as_ptr() as usize - raw.as_ptr() as usize;
        facts.host_span = start..start + routed.len();
        facts.host = Some(raw.to_string());
    }
    // An absolute-form target must name the same host as the Host header.
    if let (Some(auth), Some(host)) = (req.uri.authority(), req.headers.get(header::HOST)) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(auth.as_str().as_bytes())
        {
            return Err(Deny::ForeignAbsoluteTarget);
        }
    }
    // What goes on the wire upstream is the raw target unless the URI is replaced, and Pingora
    // keeps a target that is not origin-form verbatim while giving the URI only its path (or
    // "/"): check the raw bytes, so the gateway never judges one path and forwards another.
    let host = req.headers.get(header::HOST).map(|h| h.as_bytes());
    let raw_is_uri = origin_form(req.raw_target, host)?;
    let (canonical, screened) = policy.screen(req.uri.path())?;
    facts.screened = Some(screened);
    let rewritten = match canonical {
        std::borrow::Cow::Borrowed(c) if !raw_is_uri => Some(match req.uri.query() {
            Some(q) => format!("{c}?{q}"),
            None => c.to_string(),
        }),
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(c) => Some(match req.uri.query() {
            Some(q) => format!("{c}?{q}"),
            None => c,
        }),
    };
    // Forward exactly the path that was matched: one canonical view for both. The scheme and
    // authority stay (an HTTP/2 request carries its host only there).
    match rewritten {
        Some(target) => match with_target(req.uri, target) {
            Some(uri) => Ok(Some(Box::new(uri))),
            None => Err(Deny::BadPath(crate::http::path::PathError::BadPercent)),
        },
        None => Ok(None),
    }
}

/// A client certificate is verified again after the CA bundle or CRLs change (a resumed session
/// or a long-lived connection never meets the new verifier otherwise), must not have expired,
/// and must be there once `[mtls] required` is on: a connection that no longer passes gets
/// nothing more (`facts.cert_refused` says why; the caller closes it).
pub fn client_cert(
    policy: &Policy,
    req: &RequestView<'_>,
    deps: &Deps<'_>,
    facts: &mut Facts,
) -> Result<(), Deny> {
    let Some(h) = req.tls else { return Ok(()) };
    let Err(why) = h.cert.check(policy.mtls.as_ref(), deps.now.unix as i64) else {
        return Ok(());
    };
    facts.cert_refused = Some(why);
    Err(if h.client.is_some() {
        Deny::ClientCertDenied
    } else {
        Deny::ClientCertRequired
    })
}

/// CL+TE together, or several Content-Length values that differ, make the body's end ambiguous.
/// (Pingora resolves CL+TE on HTTP/1 by dropping Content-Length, so the caller also looks at the
/// raw header bytes: `RequestView::raw_content_length`.)
pub fn ambiguous_length(headers: &http::HeaderMap) -> bool {
    let mut cls = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = cls.next();
    if first.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match first {
        Some(f) => cls.any(|v| v != f) || f.to_str().map(|s| s.contains(',')).unwrap_or(true),
        None => false,
    }
}

/// `uri` with a new path and query, keeping its scheme and authority (an HTTP/2 request
/// carries its host only in `:authority`).
pub fn with_target(uri: &http::Uri, target: String) -> Option<http::Uri> {
    let mut builder = http::Uri::builder();
    if let Some(scheme) = uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.clone());
    }
    builder.path_and_query(target).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_lengths_are_ambiguous() {
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(!ambiguous_length(&h));
        h.append(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(ambiguous_length(&h));
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        h.append(header::CONTENT_LENGTH, "6".parse().unwrap());
        assert!(ambiguous_length(&h));
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, "5, 5".parse().unwrap());
        assert!(ambiguous_length(&h));
    }
}
