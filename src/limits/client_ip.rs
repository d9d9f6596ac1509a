//! Who the client is: the TCP peer, unless that peer is a trusted proxy — then `X-Forwarded-For`
//! is walked from the right and the first address that is not a trusted proxy is the client.
//! A hop that does not parse (`unknown`, empty, garbage) before any untrusted address is
//! reached leaves the client unknown: the request is refused rather than blamed on the proxy.
//! `X-Real-IP` is believed only from a trusted peer, and only when `X-Forwarded-For` is absent
//! or names trusted proxies alone. IPv6 clients are bucketed by prefix so one host cannot dodge a
//! limit by rotating through its /64.

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
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Ok(peer);
    }
    // Rightmost first: each hop appends what it saw, so the right end is the most trustworthy.
    // Only what is walked past matters: garbage left of the first untrusted hop is the
    // client's own and ignored.
    let mut leftmost_trusted = None;
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(s) = line.to_str() else {
            return Err(UnparsableForwarding);
        };
        for part in s.rsplit(',') {
            match parse_ip(part.trim()) {
                Some(ip) if is_trusted(&ip) => leftmost_trusted = Some(ip),
                Some(ip) => return Ok(ip),
                None => return Err(UnparsableForwarding),
            }
        }
    }
    let mut real = headers.get_all("x-real-ip").iter();
    if let Some(v) = real.next() {
        if real.next().is_some() {
            return Err(UnparsableForwarding);
        }
        return v
            .to_str()
            .ok()
            .and_then(|s| parse_ip(s.trim()))
            .ok_or(UnparsableForwarding);
    }
    // Every hop was a trusted proxy: the leftmost is the best we know.
    Ok(leftmost_trusted.unwrap_or(peer))
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
        assert_eq!(
            resolve(proxy, &with(&["10.0.0.9"], &["192.0.2.44"]), &trusted),
            Ok(real)
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
    fn ipv6_is_bucketed_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(bucket(a, 64), bucket(b, 64));
        assert_ne!(bucket(a, 128), bucket(b, 128));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(bucket(v4, 64), v4);
    }
}
