//! `portcullis check`: the configuration, policy, certificates and posture, offline.

use crate::app::checks::posture;
use crate::config::Config;
use crate::config::Mode;
use crate::{auth, policy, tls};

/// What `check` found.
pub struct CheckReport {
    pub lines: Vec<String>,
    pub errors: Vec<String>,
}

/// Validates configuration, every policy file and every certificate offline, like `nginx -t`.
pub fn check(config: &Config) -> CheckReport {
    crate::tls::install_crypto_provider();
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    lines.push(format!(
        "config: {} (mode {})",
        config
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "embedded defaults".into()),
        config.mode.as_str()
    ));
    match policy::read_dir(&config.policy_dir, !config.policy_dir_explicit).and_then(|files| {
        let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
        crate::compile::compile_with(&files, &crate::compile::CompileOptions::for_config(config))
            .map(|p| (p, names))
    }) {
        Ok((p, names)) => {
            if config.acme.as_ref().is_some_and(|a| a.shared) && p.shared_state.is_none() {
                errors.push(
                    "tls.acme.shared = true keeps ACME state in the policy's [shared_state] store, and the policy has none".into(),
                );
            }
            lines.push(format!(
                "policy: {} ({} routes, {} upstreams)",
                names.join(", "),
                p.routes.len(),
                p.upstreams.len()
            ));
            lines.push(format!(
                "  {:<16} {:<22} {:<18} {:<14} {:<12} {}",
                "ROUTE", "HOSTS", "PREFIX", "METHODS", "UPSTREAM", "ACCESS"
            ));
            for r in &p.routes {
                let hosts = if r.hosts.is_empty() {
                    "*".to_string()
                } else {
                    r.host_names().join(",")
                };
                let up = &p.upstreams[r.upstream];
                let access = r.access_summary();
                let mut extras = String::new();
                for (on, tag) in [
                    (r.websocket, " +ws"),
                    (r.signed_urls, " +signed-urls"),
                    (r.session_cookie.is_some(), " +cookie"),
                    (r.cors.is_some(), " +cors"),
                    (r.csrf.is_some(), " +csrf"),
                ] {
                    if on {
                        extras.push_str(tag);
                    }
                }
                lines.push(format!(
                    "  {:<16} {:<22} {:<18} {:<14} {:<12} {access}{extras} headers:{}",
                    &*r.name,
                    hosts,
                    &*r.prefix,
                    r.methods.names().join(","),
                    format!("{}({})", up.name, up.target.kind()),
                    p.headers.profiles[r.headers].name,
                ));
            }
            let side_doors = crate::posture::rooms_side_doors(&p);
            if !side_doors.is_empty() {
                lines.push(format!(
                    "warning: route(s) {} reach the room server without the room provider: locked rooms refuse their clients (room tokens are read only with auth = \"room\")",
                    side_doors.join(", ")
                ));
            }
            lines.push(format!(
                "blocked: {}",
                p.blocked
                    .prefixes
                    .iter()
                    .map(|b| &**b)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for e in &p.blocked.exceptions {
                let state = if auth::now_unix() < e.expires_at {
                    "open"
                } else {
                    "expired"
                };
                lines.push(format!(
                    "  exception ({state}): {} for route {} until {} — {}",
                    e.path, e.route, e.expires_text, e.reason
                ));
            }
            lines.push(format!(
                "admin paths: {} (need {}{})",
                p.admin
                    .prefixes
                    .iter()
                    .map(|b| &**b)
                    .collect::<Vec<_>>()
                    .join(", "),
                p.admin.capability,
                if p.admin.networks.is_empty() {
                    String::new()
                } else {
                    format!(
                        " or a client in {}",
                        p.admin
                            .networks
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
        }
        Err(e) => errors.extend(e.0.iter().map(|e| e.to_string())),
    }
    match tls::store::find_pairs(&config.cert_dir) {
        Ok(pairs) if pairs.is_empty() && config.acme.is_some() => {
            let names = config.acme.as_ref().map(|a| a.names.join(", "));
            lines.push(format!(
                "certificates: none in {}; obtained over ACME for {}",
                config.cert_dir.display(),
                names.unwrap_or_default()
            ));
        }
        Err(_) if config.acme.is_some() => {
            lines.push(format!(
                "certificates: {} is created at start; certificates obtained over ACME",
                config.cert_dir.display()
            ));
        }
        Ok(pairs) if pairs.is_empty() => {
            if config.mode == Mode::Development {
                lines.push(format!(
                    "certificates: none in {}; development certificates will be generated on start",
                    config.cert_dir.display()
                ));
            } else {
                errors.push(format!(
                    "{}: no certificate pairs (NAME.crt + NAME.key)",
                    config.cert_dir.display()
                ));
            }
        }
        Ok(pairs) => {
            for (name, cert, key) in pairs {
                match tls::store::load_pair(&name, &cert, &key) {
                    Ok(e) => lines.push(format!(
                        "certificate: {name} ({}) valid until {}",
                        e.names.join(", "),
                        format_epoch(e.not_after)
                    )),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(e) if config.mode == Mode::Development => {
            lines.push(format!(
                "certificates: {e}; development certificates will be generated on start"
            ));
        }
        Err(e) => errors.push(e.to_string()),
    }
    if config.mode == Mode::Production {
        // What production `serve` would refuse on besides (already listed) compile and
        // certificate errors.
        let clean = errors.is_empty();
        errors.extend(
            posture(config)
                .failures()
                .iter()
                .filter(|i| i.id != "policy" && (i.id != "certificates" || clean))
                .map(|i| i.line()),
        );
    }
    CheckReport { lines, errors }
}

fn format_epoch(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => format!("{secs} s after 1970-01-01"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn epoch_dates() {
        assert_eq!(super::format_epoch(0), "1970-01-01");
        assert_eq!(super::format_epoch(1_798_761_600), "2027-01-01");
    }
}
