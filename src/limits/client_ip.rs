//! Who the client is: the TCP peer, unless that peer is a trusted proxy — then `X-Forwarded-For`
//! (every header line, in order) is walked from the right and the first address that is not a
//! trusted proxy is the client; when every hop is a trusted proxy, the leftmost is. A hop that
//! does not parse (`unknown`, empty, garbage) before any untrusted address is reached leaves the
//! client unknown: the request is refused rather than blamed on the proxy. Hops may carry a port
//! (`192.0.2.1:443`, `[2001:db8::1]:443`) or IPv6 brackets alone. `X-Real-IP` is believed only
//! from a trusted peer, and only when there is no `X-Forwarded-For` at all. Addresses are
//! compared in canonical form (an IPv4-mapped IPv6 peer is its IPv4 address). IPv6 clients are
//! bucketed by prefix so one host cannot dodge a limit by rotating through its /64.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The forwarding headers of a trusted peer do not say who the client is: a hop that had to be
/// walked past does not parse, or `X-Real-IP` is not one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnparsableForwarding;

/// Resolves the client address from the peer and the forwarding headers. Never returns a
/// trusted proxy's address in place of a hop it could not read.
pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Result<IpAddr, UnparsableForwarding> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Ok(peer);
    }
    let forwarded = headers.get_all("x-forwarded-for");
    if forwarded.iter().next().is_none() {
        // No chain at all: the trusted peer may name the client in X-Real-IP, once.
        let mut real = headers.get_all("x-real-ip").iter();
        let Some(v) = real.next() else {
            return Ok(peer);
        };
        if real.next().is_some() {
            return Err(UnparsableForwarding);
        }
        return parse_hop(v.as_bytes()).ok_or(UnparsableForwarding);
    }
    // Rightmost first: each hop appends what it saw, so the right end is the most trustworthy.
    // Only what is walked past matters: garbage left of the first untrusted hop (non-ASCII
    // bytes included) is the client's own and never even decoded.
    let mut leftmost_trusted = None;
    for line in forwarded.iter().rev() {
        for part in line.as_bytes().rsplit(|&b| b == b',') {
            match parse_hop(part) {
                Some(ip) if is_trusted(&ip) => leftmost_trusted = Some(ip),
                Some(ip) => return Ok(ip),
                None => return Err(UnparsableForwarding),
            }
        }
    }
    // Every hop was a trusted proxy: the leftmost is the client.
    Ok(leftmost_trusted.unwrap_or(peer))
}

/// One forwarded hop: an address, with an optional port (`192.0.2.1:443`, `[2001:db8::1]:443`)
/// or IPv6 brackets alone (`[2001:db8::1]`), surrounded by optional whitespace.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The limiting key of an address: IPv4 as is, IPv6 truncated to `v6_prefix` bits.
pub fn bucket(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let p = v6_prefix.min(128) as u32;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6((bits & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in xff {
            m.append("x-forwarded-for", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(peer, &h(&["1.2.3.4"]), &trusted), Ok(peer));
        assert_eq!(resolve(peer, &h(&["1.2.3.4"]), &[]), Ok(peer));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // The client forged "6.6.6.6"; the proxy appended the real address.
        assert_eq!(
            resolve(peer, &h(&["6.6.6.6, 198.51.100.7"]), &trusted),
            Ok("198.51.100.7".parse::<IpAddr>().unwrap())
        );
        assert_eq!(
            resolve(peer, &h(&["6.6.6.6", "198.51.100.7, 10.0.0.3"]), &trusted),
            Ok("198.51.100.7".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn an_unparsable_hop_is_never_the_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        // Garbage left of the client's address is the client's own: the walk stops before it.
        for xff in [
            "nonsense, 198.51.100.7",
            "unknown,198.51.100.7",
            ", 198.51.100.7",
        ] {
            assert_eq!(resolve(peer, &h(&[xff]), &trusted), Ok(client), "{xff}");
        }
        // Garbage the walk has to pass: nobody knows the client, and it is not the proxy.
        for xff in [
            "x",
            "",
            "unknown",
            "198.51.100.7, unknown",
            "198.51.100.7, , 10.0.0.3",
            "198.51.100.7,",
        ] {
            assert_eq!(
                resolve(peer, &h(&[xff]), &trusted),
                Err(UnparsableForwarding),
                "{xff:?}"
            );
        }
        assert_eq!(
            resolve(peer, &h(&["198.51.100.7", "garbage"]), &trusted),
            Err(UnparsableForwarding)
        );
        assert_eq!(
            resolve(peer, &h(&["garbage", "198.51.100.7"]), &trusted),
            Ok(client)
        );
        // An untrusted peer's headers are never read, garbage or not.
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(outsider, &h(&["x"]), &trusted), Ok(outsider));
    }

    #[test]
    fn x_real_ip_only_from_a_trusted_peer_and_only_when_the_chain_is_all_trusted() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let with = |xff: &[&str], real: &[&str]| {
            let mut m = h(xff);
            for r in real {
                m.append("x-real-ip", r.parse().unwrap());
            }
            m
        };
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let real: IpAddr = "192.0.2.44".parse().unwrap();
        assert_eq!(
            resolve(outsider, &with(&[], &["192.0.2.44"]), &trusted),
            Ok(outsider)
        );
        assert_eq!(
            resolve(proxy, &with(&[], &["192.0.2.44"]), &trusted),
            Ok(real)
        );
        // A chain of trusted hops alone: its leftmost is the client, X-Real-IP is not read.
        assert_eq!(
            resolve(proxy, &with(&["10.0.0.9"], &["192.0.2.44"]), &trusted),
            Ok("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            resolve(proxy, &with(&["10.0.0.9"], &["unknown"]), &trusted),
            Ok("10.0.0.9".parse().unwrap())
        );
        assert_eq!(
            resolve(proxy, &with(&["198.51.100.7"], &["192.0.2.44"]), &trusted),
            Ok("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            resolve(proxy, &with(&[], &["unknown"]), &trusted),
            Err(UnparsableForwarding)
        );
        assert_eq!(
            resolve(proxy, &with(&[], &["192.0.2.44", "192.0.2.45"]), &trusted),
            Err(UnparsableForwarding)
        );
        // All trusted and no X-Real-IP: the leftmost hop, then the peer itself.
        assert_eq!(
            resolve(proxy, &with(&["10.0.0.9, 10.0.0.3"], &[]), &trusted),
            Ok("10.0.0.9".parse().unwrap())
        );
        assert_eq!(resolve(proxy, &with(&[], &[]), &trusted), Ok(proxy));
    }

    #[test]
    fn hops_with_ports_brackets_and_foreign_bytes() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:f::/48".parse().unwrap(),
        ];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        for (xff, client) in [
            ("[2001:db8::1]", v6),
            (" [2001:db8::1] , 10.0.0.3", v6),
            ("[2001:db8::1]:8443, [2001:db8:f::5]:443", v6),
            ("198.51.100.7:1234, 10.0.0.3:80", v4),
            ("::ffff:198.51.100.7", v4),
            ("[::ffff:198.51.100.7]:99", v4),
        ] {
            assert_eq!(resolve(peer, &h(&[xff]), &trusted), Ok(client), "{xff}");
        }
        // Non-ASCII garbage left of the client is the client's own.
        let mut m = HeaderMap::new();
        m.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe caf\xc3\xa9, 198.51.100.7").unwrap(),
        );
        assert_eq!(resolve(peer, &m, &trusted), Ok(v4));
        // Non-ASCII bytes the walk has to pass are a bad hop.
        let mut m = HeaderMap::new();
        m.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"198.51.100.7, \xff").unwrap(),
        );
        assert_eq!(resolve(peer, &m, &trusted), Err(UnparsableForwarding));
        // Unbalanced brackets are not an address.
        assert_eq!(
            resolve(peer, &h(&["[2001:db8::1"]), &trusted),
            Err(UnparsableForwarding)
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_is_compared_as_ipv4() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A dual-stack listener reports an IPv4 proxy as ::ffff:10.0.0.2.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(
            resolve(mapped, &h(&["198.51.100.7"]), &trusted),
            Ok("198.51.100.7".parse::<IpAddr>().unwrap())
        );
        // An untrusted mapped peer is the client, as its IPv4 address.
        let outsider: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(
            resolve(outsider, &h(&["198.51.100.7"]), &trusted),
            Ok("203.0.113.9".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn ipv6_is_bucketed_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(bucket(a, 64), bucket(b, 64));
        assert_ne!(bucket(a, 128), bucket(b, 128));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(bucket(v4, 64), v4);
    }
}
