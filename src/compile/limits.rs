//! The `[network]` and `[[limits]]` parts of the compile step: trusted proxies as CIDRs (never
//! "trust all"), connection and header caps, and rate-limit definitions checked against routes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::config::line_of;
use crate::limits::LimitSpec;
use crate::policy::model::NetworkSettings;
use crate::policy::raw::{RawLimit, RawNetwork};
use crate::policy::source::{PolicyError, SourceFile};

fn err<T>(
    file: &SourceFile,
    errors: &mut Vec<PolicyError>,
    at: &Spanned<T>,
    field: String,
    message: String,
) {
    errors.push(PolicyError {
        file: file.path.display().to_string(),
        line: line_of(&file.text, at.span().start),
        field,
        message,
    });
}

/// A network from policy: a CIDR or a single address, truncated to its prefix; "every
/// address" (`/0`) is refused with `everything` as the reason.
pub(crate) fn parse_network(text: &str, everything: &str) -> Result<ipnet::IpNet, String> {
    let parsed = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    match parsed {
        Ok(net) if net.prefix_len() == 0 => Err(format!("{text:?} {everything}")),
        Ok(net) => Ok(net.trunc()),
        Err(_) => Err(format!("{text:?} is not an IP address or CIDR")),
    }
}

pub(crate) fn compile_network(
    net: Option<(&SourceFile, &Spanned<RawNetwork>)>,
    errors: &mut Vec<PolicyError>,
) -> NetworkSettings {
    let mut out = NetworkSettings::default();
    let Some((file, n)) = net else { return out };
    let n = n.get_ref();
    for (i, p) in n.trusted_proxies.iter().enumerate() {
        match parse_network(
            p.get_ref(),
            "trusts every address; list your proxies' CIDRs",
        ) {
            Ok(net) => out.trusted_proxies.push(net),
            Err(m) => err(file, errors, p, format!("network.trusted_proxies[{i}]"), m),
        }
    }
    if let Some(p) = &n.ipv6_prefix {
        if !(16..=128).contains(p.get_ref()) {
            err(
                file,
                errors,
                p,
                "network.ipv6_prefix".into(),
                "must be between 16 and 128".into(),
            );
        } else {
            out.ipv6_prefix = *p.get_ref();
        }
    }
    let mut bounded =
        |v: &Option<Spanned<u64>>, field: &str, lo: u64, hi: u64, slot: &mut usize| {
            if let Some(s) = v {
                if *s.get_ref() < lo || *s.get_ref() > hi {
                    err(
                        file,
                        errors,
                        s,
                        format!("network.{field}"),
                        format!("must be between {lo} and {hi}"),
                    );
                } else {
                    *slot = *s.get_ref() as usize;
                }
            }
        };
    bounded(
        &n.max_header_bytes,
        "max_header_bytes",
        1024,
        1 << 20,
        &mut out.max_header_bytes,
    );
    bounded(
        &n.max_connections_per_ip,
        "max_connections_per_ip",
        1,
        1_000_000,
        &mut out.max_connections_per_ip,
    );
    bounded(
        &n.max_connections,
        "max_connections",
        1,
        10_000_000,
        &mut out.max_connections,
    );
    let mut header_ms = out.header_timeout.as_millis() as usize;
    bounded(
        &n.header_timeout_ms,
        "header_timeout_ms",
        100,
        600_000,
        &mut header_ms,
    );
    out.header_timeout = Duration::from_millis(header_ms as u64);
    out.allow_underscores_in_headers = n.allow_underscores_in_headers;
    out
}

pub(crate) fn compile_limits(
    limits: &[(&SourceFile, usize, &RawLimit)],
    route_names: &HashSet<String>,
    shared_state: bool,
    errors: &mut Vec<PolicyError>,
) -> Vec<LimitSpec> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (file, index, l) in limits {
        let at = format!("limits[{index}]");
        let name = l.name.get_ref();
        if !names.insert(name.clone()) {
            err(
                file,
                errors,
                &l.name,
                format!("{at}.name"),
                format!("duplicate limit {name:?}"),
            );
        }
        let (mut ip, mut subject, mut route) = (false, false, false);
        for (i, k) in l.key.iter().enumerate() {
            match k.get_ref().as_str() {
                "ip" => ip = true,
                "subject" => subject = true,
                "route" => route = true,
                other => err(
                    file,
                    errors,
                    k,
                    format!("{at}.key[{i}]"),
                    format!("unknown key {other:?} (ip, subject, route)"),
                ),
            }
        }
        let requests = *l.requests.get_ref();
        if requests == 0 || requests > 1_000_000_000 {
            err(
                file,
                errors,
                &l.requests,
                format!("{at}.requests"),
                "must be between 1 and 1000000000".into(),
            );
        }
        let per = l.per_seconds.as_ref().map(|p| *p.get_ref()).unwrap_or(1);
        if per == 0 || per > 86_400 {
            if let Some(p) = &l.per_seconds {
                err(
                    file,
                    errors,
                    p,
                    format!("{at}.per_seconds"),
                    "must be between 1 and 86400".into(),
                );
            }
        }
        let burst = l.burst.as_ref().map(|b| *b.get_ref()).unwrap_or(requests);
        if burst == 0 || burst > 1_000_000_000 {
            if let Some(b) = &l.burst {
                err(
                    file,
                    errors,
                    b,
                    format!("{at}.burst"),
                    "must be between 1 and 1000000000".into(),
                );
            }
        }
        let routes = l.routes.as_ref().map(|rs| {
            for (i, r) in rs.get_ref().iter().enumerate() {
                if !route_names.contains(r) {
                    err(
                        file,
                        errors,
                        rs,
                        format!("{at}.routes[{i}]"),
                        format!("unknown route {r:?}"),
                    );
                }
            }
            rs.get_ref().iter().map(|r| Arc::from(r.as_str())).collect()
        });
        let max_keys = l.max_keys.as_ref().map(|m| *m.get_ref()).unwrap_or(100_000);
        if !(1..=10_000_000).contains(&max_keys) {
            if let Some(m) = &l.max_keys {
                err(
                    file,
                    errors,
                    m,
                    format!("{at}.max_keys"),
                    "must be between 1 and 10000000".into(),
                );
            }
        }
        let mut spec = LimitSpec::new(
            Arc::from(name.as_str()),
            ip,
            subject,
            route,
            requests.clamp(1, 1_000_000_000) as u32,
            Duration::from_secs(per.clamp(1, 86_400)),
            burst.clamp(1, 1_000_000_000) as u32,
            routes,
            max_keys.clamp(1, 10_000_000) as usize,
        );
        spec.shadow = l.shadow;
        if let Some(scope) = &l.scope {
            match scope.get_ref().as_str() {
                "local" => {}
                "global" if shared_state => spec.global = true,
                "global" => err(
                    file,
                    errors,
                    scope,
                    format!("{at}.scope"),
                    "a global limit needs a [shared_state] section (Redis)".into(),
                ),
                other => err(
                    file,
                    errors,
                    scope,
                    format!("{at}.scope"),
                    format!("unknown scope {other:?} (local, global)"),
                ),
            }
        }
        if let Some(mode) = &l.failure_mode {
            match mode.get_ref().as_str() {
                _ if !spec.global && l.scope.as_ref().is_none_or(|s| s.get_ref() != "global") => {
                    err(
                        file,
                        errors,
                        mode,
                        format!("{at}.failure_mode"),
                        "only a limit with scope = \"global\" has a failure mode".into(),
                    )
                }
                "fail_open" => {}
                "fail_closed" => spec.fail_closed = true,
                other => err(
                    file,
                    errors,
                    mode,
                    format!("{at}.failure_mode"),
                    format!("unknown failure mode {other:?} (fail_open, fail_closed)"),
                ),
            }
        }
        out.push(spec);
    }
    out
}

pub(crate) fn compile_websocket(
    ws: Option<(&SourceFile, &Spanned<crate::policy::raw::RawWebSocket>)>,
    errors: &mut Vec<PolicyError>,
) -> crate::policy::specs::WsBudget {
    let mut out = crate::policy::specs::WsBudget::default();
    let Some((file, w)) = ws else { return out };
    let w = w.get_ref();
    let mut bounded = |v: &Option<Spanned<u64>>, field: &str, lo: u64, hi: u64, slot: &mut u64| {
        if let Some(s) = v {
            if *s.get_ref() < lo || *s.get_ref() > hi {
                err(
                    file,
                    errors,
                    s,
                    format!("websocket.{field}"),
                    format!("must be between {lo} and {hi}"),
                );
            } else {
                *slot = *s.get_ref();
            }
        }
    };
    bounded(
        &w.bytes_per_second,
        "bytes_per_second",
        1024,
        1 << 34,
        &mut out.bytes_per_second,
    );
    bounded(
        &w.messages_per_second,
        "messages_per_second",
        1,
        1_000_000,
        &mut out.messages_per_second,
    );
    bounded(
        &w.max_message_bytes,
        "max_message_bytes",
        16,
        1 << 30,
        &mut out.max_message_bytes,
    );
    let mut idle = out.idle_timeout.as_secs();
    bounded(
        &w.idle_timeout_seconds,
        "idle_timeout_seconds",
        1,
        86_400,
        &mut idle,
    );
    out.idle_timeout = Duration::from_secs(idle);
    out
}
