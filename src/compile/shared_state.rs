//! The `[shared_state]` part of the compile step: one Redis server, the primary Redis Sentinel
//! names, or a Redis Cluster; credentials resolved by reference; timeouts and the key prefix.

use std::time::Duration;

use toml::Spanned;

use crate::config::line_of;
use crate::policy::raw::RawSharedState;
use crate::policy::source::{PolicyError, SourceFile};
use crate::policy::specs::{SharedSettings, Topology};

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

pub(crate) fn compile_shared_state(
    raw: Option<(&SourceFile, &Spanned<RawSharedState>)>,
    errors: &mut Vec<PolicyError>,
) -> Option<SharedSettings> {
    let (file, r) = raw?;
    let base = file.path.parent().unwrap_or(std::path::Path::new("."));
    let raw = r.get_ref();
    let secret = |v: &Spanned<String>, field: &str, errors: &mut Vec<PolicyError>| {
        crate::auth::secret::resolve(v.get_ref(), base)
            .map_err(|m| {
                err(
                    file,
                    errors,
                    v,
                    format!("shared_state.{field}"),
                    m.to_string(),
                )
            })
            .ok()
    };
    // A URL, checked; the error text never carries it (it may hold a password).
    let url = |v: &Spanned<String>, field: &str, errors: &mut Vec<PolicyError>| {
        let url = secret(v, field, errors)?;
        let field = format!("shared_state.{field}");
        if !url.starts_with("rediss://") && !url.starts_with("redis://") {
            err(
                file,
                errors,
                v,
                field,
                "must start with redis:// or rediss://".into(),
            );
            return None;
        }
        match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            Ok(info) => Some((url, info.redis_settings().db())),
            Err(m) => {
                err(
                    file,
                    errors,
                    v,
                    field,
                    format!("not a Redis URL: {}", m.category()),
                );
                None
            }
        }
    };
    let list = |v: &[Spanned<String>], field: &str, errors: &mut Vec<PolicyError>| {
        if v.is_empty() {
            err(
                file,
                errors,
                r,
                format!("shared_state.{field}"),
                "name at least one URL".into(),
            );
            return None;
        }
        let urls: Vec<_> = v.iter().filter_map(|u| url(u, field, errors)).collect();
        (urls.len() == v.len()).then_some(urls)
    };
    let given = [
        raw.url.is_some(),
        raw.sentinels.is_some(),
        raw.cluster_nodes.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        err(
            file,
            errors,
            r,
            "shared_state".into(),
            "needs exactly one of url (one server), sentinels (Redis Sentinel) or cluster_nodes \
             (Redis Cluster)"
                .into(),
        );
        return None;
    }
    if raw.sentinels.is_none() {
        for (v, field) in [
            (&raw.sentinel_master, "sentinel_master"),
            (&raw.sentinel_username, "sentinel_username"),
            (&raw.sentinel_password, "sentinel_password"),
        ] {
            if let Some(v) = v {
                err(
                    file,
                    errors,
                    v,
                    format!("shared_state.{field}"),
                    "only with sentinels".into(),
                );
            }
        }
    }
    let topology = if let Some(u) = &raw.url {
        Topology::Single(url(u, "url", errors)?.0)
    } else if let Some(v) = &raw.sentinels {
        let sentinels = list(v, "sentinels", errors)?;
        let Some(master) = &raw.sentinel_master else {
            err(
                file,
                errors,
                r,
                "shared_state.sentinel_master".into(),
                "required with sentinels: the name the sentinels monitor".into(),
            );
            return None;
        };
        let name = master.get_ref();
        if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            err(
                file,
                errors,
                master,
                "shared_state.sentinel_master".into(),
                "must be 1 to 128 printable characters without spaces".into(),
            );
            return None;
        }
        Topology::Sentinel {
            sentinels: sentinels.into_iter().map(|(u, _)| u).collect(),
            master: name.clone(),
            username: raw
                .sentinel_username
                .as_ref()
                .and_then(|u| secret(u, "sentinel_username", errors)),
            password: raw
                .sentinel_password
                .as_ref()
                .and_then(|p| secret(p, "sentinel_password", errors)),
        }
    } else {
        let v = raw.cluster_nodes.as_deref().unwrap_or_default();
        let nodes = list(v, "cluster_nodes", errors)?;
        if let Some(((_, db), at)) = nodes.iter().zip(v).find(|((_, db), _)| *db != 0) {
            err(
                file,
                errors,
                at,
                "shared_state.cluster_nodes".into(),
                format!("a Redis Cluster has only database 0, not {db}"),
            );
            return None;
        }
        Topology::Cluster(nodes.into_iter().map(|(u, _)| u).collect())
    };
    let mut out = SharedSettings::with_topology(topology);
    let urls = out.topology.urls();
    let tls = out.tls();
    if !tls && urls.iter().any(|u| u.starts_with("rediss://")) {
        err(
            file,
            errors,
            r,
            "shared_state".into(),
            "mixes redis:// and rediss:// URLs: use one scheme for every node".into(),
        );
    }
    out.password = raw
        .password
        .as_ref()
        .and_then(|p| secret(p, "password", errors));
    out.username = raw
        .username
        .as_ref()
        .and_then(|u| secret(u, "username", errors));
    if let Some(ca) = &raw.ca_file {
        if !tls {
            err(
                file,
                errors,
                ca,
                "shared_state.ca_file".into(),
                "ca_file needs a rediss:// URL".into(),
            );
        }
        let path = base.join(ca.get_ref());
        match std::fs::read(&path) {
            Ok(pem) => out.ca_pem = Some(pem),
            Err(e) => err(
                file,
                errors,
                ca,
                "shared_state.ca_file".into(),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
    if let Some(p) = &raw.key_prefix {
        let ok = !p.get_ref().is_empty()
            && p.get_ref().len() <= 64
            && p.get_ref()
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if ok {
            out.prefix = p.get_ref().clone();
        } else {
            err(
                file,
                errors,
                p,
                "shared_state.key_prefix".into(),
                // Braces would move keys into other cluster slots than the ones each script names.
                "must be 1 to 64 printable characters without spaces or braces".into(),
            );
        }
    }
    for (v, field, slot) in [
        (
            &raw.connect_timeout_ms,
            "connect_timeout_ms",
            &mut out.connect_timeout,
        ),
        (
            &raw.command_timeout_ms,
            "command_timeout_ms",
            &mut out.command_timeout,
        ),
    ] {
        if let Some(ms) = v {
            if !(1..=60_000).contains(ms.get_ref()) {
                err(
                    file,
                    errors,
                    ms,
                    format!("shared_state.{field}"),
                    "must be between 1 and 60000".into(),
                );
            } else {
                *slot = Duration::from_millis(*ms.get_ref());
            }
        }
    }
    Some(out)
}
