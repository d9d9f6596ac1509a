//! The request's host as routes match it: the `Host` header (or HTTP/2 `:authority`) without its
//! port and without a trailing dot, so `API.example.com.:8443` is `api.example.com` to every
//! host-bound route (matchers compare case-insensitively). A value that is not a host is refused
//! rather than left to fall through to the routes that accept any host.

/// `raw` without its port and trailing dot, or `None` when it is not a valid `host[:port]`: a
/// DNS name (letters, digits, `-`, `_`, labels of 1 to 63 characters, at most 253 in all), an
/// IPv4 address or a bracketed IPv6 address, then an optional port of at most 5 digits below
/// 65536. Borrows from `raw`; allocates nothing.
pub fn normalize(raw: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inner, port)
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    if let Some(p) = port {
        let digits = p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || (!p.is_empty() && !(1..=65535).contains(&p.parse::<u32>().ok()?)) {
            return None;
        }
    }
    if raw.starts_with('[') {
        return Some(host);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    // A name whose last label is numeric is an IPv4 address to resolvers (`127.1`,
    // `2130706433`, `0x7f.0.0.1`, `127.000.000.001` all reach 127.0.0.1): only the one
    // dotted-decimal spelling, without a trailing dot, is a host.
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
    if numeric && (name.len() != host.len() || name.parse::<std::net::Ipv4Addr>().is_err()) {
        return None;
    }
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn ports_trailing_dots_and_brackets_are_removed() {
        assert_eq!(normalize("api.example.com"), Some("api.example.com"));
        assert_eq!(normalize("api.example.com."), Some("api.example.com"));
        assert_eq!(normalize("API.Example.COM.:8443"), Some("API.Example.COM"));
        assert_eq!(normalize("api.example.com:"), Some("api.example.com"));
        assert_eq!(normalize("127.0.0.1:1"), Some("127.0.0.1"));
        assert_eq!(normalize("[::1]:8443"), Some("::1"));
        assert_eq!(normalize("[::1]"), Some("::1"));
        assert_eq!(normalize("localhost"), Some("localhost"));
        assert_eq!(normalize("my_host.internal"), Some("my_host.internal"));
        assert_eq!(normalize("10.0.0.1:8443"), Some("10.0.0.1"));
        assert_eq!(normalize("1.example.com"), Some("1.example.com"));
        assert_eq!(normalize("0xdead.example"), Some("0xdead.example"));
    }

    #[test]
    fn what_is_not_a_host_is_refused() {
        for bad in [
            "",
            ".",
            ":8443",
            "api.example.com..",
            "api..example.com",
            ".api.example.com",
            "api.example.com:x",
            "api.example.com:99999",
            "api.example.com:123456",
            "api.example.com:-1",
            "api.example.com: 1",
            "a:b:c",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[nothex]",
            "user@api.example.com",
            "api.example.com/x",
            "api example.com",
            "api.example.com%2e",
            "ａｐｉ.example.com",
            "api.example.com,evil.example",
            "api.example.com:0",
            "localhost:00",
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "0x7f000001",
            "127.000.000.001",
            "127.0.0.01",
            "127.0.0.1.",
            "1.2.3.4.5",
            "256.0.0.1",
            "example.123",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(normalize(&"a".repeat(64)), None);
        assert_eq!(normalize(&["a"; 130].join(".")), None);
    }
}
