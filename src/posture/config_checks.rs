//! The checks on the static configuration: the listeners, the development providers on them,
//! the worker token, TLS versions, keep-alive bounds and logging.

use std::net::SocketAddr;

use super::item::{is_global, prod_fail, Item, Status};
use crate::config::Config;
use crate::policy::Policy;

/// The development providers admit anyone: `serve` refuses them on a listener that is not
/// loopback in every mode, so this is a FAIL whatever the mode.
pub(super) fn dev_providers_item(config: &Config, p: &Policy) -> Item {
    let dev: Vec<&str> = p
        .routes
        .iter()
        .filter(|r| !r.public && r.auth.iter().any(|a| a.development_only()))
        .map(|r| &*r.name)
        .collect();
    let addr = config.https_addr;
    if dev.is_empty() {
        return Item::pass("dev-providers", "no route uses none/local");
    }
    if addr.ip().is_loopback() {
        return Item::pass(
            "dev-providers",
            format!("none/local served on loopback {addr} only"),
        );
    }
    Item::new(
        "dev-providers",
        Status::Fail,
        format!(
            "route(s) {} admit anyone (none/local) on the HTTPS listener {addr}, which is not loopback: serve refuses to start",
            dev.join(", ")
        ),
        "bind the HTTPS listener to 127.0.0.1 (PORTCULLIS_HTTPS_ADDR) or use static, jwt, room or mtls (AUTH_PROVIDER=static)",
    )
}

pub(super) fn worker_token_item(
    config: &Config,
    p: &Policy,
    env: &dyn Fn(&str) -> Option<String>,
) -> Item {
    let needed = p.auth.needs_worker_token || !config.admin_addr.ip().is_loopback();
    if !needed {
        return Item::pass(
            "worker-token",
            "not used (no static provider; admin listener on loopback)",
        );
    }
    let weak = |what: String, len: usize| {
        Item::new(
            "worker-token",
            prod_fail(config.mode),
            format!("{what} is {len} characters"),
            "use `portcullis token generate` (32 random bytes)",
        )
    };
    for name in ["PORTCULLIS_WORKER_TOKEN", "WORKER_AUTH_TOKEN"] {
        if let Some(t) = env(name) {
            let len = t.trim().len();
            if len < 32 {
                return weak(name.to_string(), len);
            }
            return Item::pass("worker-token", format!("from {name} ({len} characters)"));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let file = &config.token_file;
    match std::fs::metadata(file) {
        Err(_) => Item::pass(
            "worker-token",
            "generated at start: 32 random bytes saved with mode 0600",
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Item::new(
            "worker-token",
            Status::Fail,
            format!(
                "token file is readable by group or others (mode {:o})",
                m.permissions().mode() & 0o777
            ),
            "chmod 600 the token file",
        ),
        Ok(_) => {
            let len = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        l.trim()
                            .strip_prefix("worker_auth_token:")
                            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').len())
                    })
                })
                .unwrap_or(0);
            if len < 32 {
                return weak("the token in the token file".into(), len);
            }
            Item::pass(
                "worker-token",
                format!("token file, mode 0600 ({len} characters)"),
            )
        }
    }
}

pub(super) fn listeners_item(config: &Config) -> Item {
    let http = match config.http_addr {
        Some(a) => format!("; HTTP {a} only redirects to HTTPS (308)"),
        None => "; no plain-HTTP listener".into(),
    };
    Item::pass(
        "tls-listeners",
        format!("HTTPS {} terminates TLS{http}", config.https_addr),
    )
}

pub(super) fn admin_listener_item(config: &Config) -> Item {
    let a: SocketAddr = config.admin_addr;
    if a.ip().is_loopback() {
        return Item::pass("admin-listener", format!("{a} (loopback)"));
    }
    if is_global(a.ip()) {
        return Item::new(
            "admin-listener",
            prod_fail(config.mode),
            format!("{a} is a public address (metrics, status page)"),
            "bind the admin listener to loopback or a private address",
        );
    }
    Item::new(
        "admin-listener",
        Status::Warn,
        format!("{a} is reachable off this host (plain HTTP; worker token required)"),
        "keep its port internal (NetworkPolicy) or bind 127.0.0.1",
    )
}

pub(super) fn tls_version_item(config: &Config) -> Item {
    Item::pass(
        "tls-version",
        match config.tls_min_version {
            crate::config::TlsVersion::V13 => "TLS 1.3 only",
            crate::config::TlsVersion::V12 => "TLS 1.2 and 1.3 (AEAD, forward-secret suites)",
        },
    )
}

/// The bounds on a client connection's life: without an idle timeout a few addresses can hold
/// every connection slot with connections that sent one request and went quiet.
pub(super) fn keepalive_item(config: &Config, header_timeout: Option<std::time::Duration>) -> Item {
    let b = &config.connections;
    let secs = |d: Option<std::time::Duration>| match d {
        Some(d) => format!("{} s", d.as_secs()),
        None => "off".to_string(),
    };
    let header = match header_timeout {
        Some(d) if d.subsec_millis() == 0 => format!("{} s", d.as_secs()),
        Some(d) => format!("{} ms", d.as_millis()),
        None => "per policy".to_string(),
    };
    let finding = format!(
        "idle {}, header {header}, body {}, send {}, {} request(s) per connection",
        secs(b.keepalive_timeout),
        secs(b.body_timeout),
        secs(b.send_timeout),
        b.max_requests
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unlimited".into()),
    );
    if b.keepalive_timeout.is_none() {
        return Item::new(
            "keepalive",
            prod_fail(config.mode),
            format!("keep-alive bounds off: {finding}"),
            "set network.keepalive_timeout_seconds in portcullis.toml (75 is the default)",
        );
    }
    if b.body_timeout.is_none() || b.send_timeout.is_none() || b.max_requests.is_none() {
        return Item::new(
            "keepalive",
            Status::Warn,
            format!("keep-alive bounds partly off: {finding}"),
            "set network.body_timeout_seconds, network.send_timeout_seconds and \
             network.max_requests_per_connection",
        );
    }
    Item::pass("keepalive", finding)
}

pub(super) fn logging_item(config: &Config) -> Item {
    let level = &config.log_level;
    if level.contains("debug") || level.contains("trace") {
        return Item::new(
            "logging",
            prod_fail(config.mode),
            format!("log level {level:?} writes request details"),
            "use info (PORTCULLIS_LOG_LEVEL=info)",
        );
    }
    Item::pass(
        "logging",
        format!(
            "{level}, {}, secrets redacted",
            match config.log_format {
                crate::config::LogFormat::Json => "json",
                crate::config::LogFormat::Pretty => "text",
            }
        ),
    )
}
