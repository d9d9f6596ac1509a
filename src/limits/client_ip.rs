//! Who the client is: the TCP peer, unless that peer is a trusted proxy — then `X-Forwarded-For`
//! is walked from the right and the first address that is not a trusted proxy is the client
//! (`X-Real-IP` is honoured only from trusted peers too). IPv6 clients are bucketed by prefix so
//! one host cannot dodge a limit by rotating through its /64.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Resolves the client address from the peer and the forwarding headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    // Rightmost first: each hop appends what it saw, so the right end is the most trustworthy.
    let mut hops = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return peer };
        for part in s.split(',') {
            match parse_ip(part.trim()) {
                Some(ip) => hops.push(ip),
                None => return peer,
            }
        }
    }
    for ip in hops.iter().rev() {
        if !is_trusted(ip) {
            return *ip;
        }
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| parse_ip(s.trim()))
    {
        return ip;
    }
    // Every hop was a trusted proxy: the leftmost is the best we know.
    hops.first().copied().unwrap_or(peer)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        })
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
        assert_eq!(resolve(peer, &h(&["1.2.3.4"]), &trusted), peer);
        assert_eq!(resolve(peer, &h(&["1.2.3.4"]), &[]), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // The client forged "6.6.6.6"; the proxy appended the real address.
        assert_eq!(
            resolve(peer, &h(&["6.6.6.6, 198.51.100.7"]), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve(peer, &h(&["6.6.6.6", "198.51.100.7, 10.0.0.3"]), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Garbage in the chain: do not guess.
        assert_eq!(
            resolve(peer, &h(&["nonsense, 198.51.100.7"]), &trusted),
            peer
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
