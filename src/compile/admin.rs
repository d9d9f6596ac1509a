//! `[admin]` and `[[blocked.exceptions]]`: which admin paths open to whom, the metrics token, and
//! the dated exceptions that open a blocked path for a while.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use toml::Spanned;

use super::auth::Errs;
use crate::auth::secret;
use crate::config::Mode;
use crate::policy::model::{AdminPaths, BlockException, MetricsToken};
use crate::policy::raw::{RawAdmin, RawBlockException};
use crate::policy::source::{PolicyError, SourceFile};

/// Compiles `[admin]`.
pub(crate) fn compile_admin(
    raw: Option<(&SourceFile, &Spanned<RawAdmin>)>,
    known_caps: &HashSet<String>,
    check_path: impl Fn(&str) -> Result<(), String>,
    errors: &mut Vec<PolicyError>,
) -> AdminPaths {
    let mut out = AdminPaths {
        prefixes: vec!["/admin".into()],
        capability: "policy.admin".into(),
        networks: Vec::new(),
        metrics_token: None,
    };
    let Some((file, a)) = raw else {
        return out;
    };
    let mut e = Errs { file, errors };
    let a = a.get_ref();
    if let Some(ps) = &a.paths {
        out.prefixes.clear();
        for (i, p) in ps.get_ref().iter().enumerate() {
            match check_path(p) {
                // Matching respects segment boundaries: `/admin/` is `/admin`, so the bare
                // `/admin` (and `/admin;x`, `/admin%20`) is covered too.
                Ok(()) => {
                    let v = match p.trim_end_matches('/') {
                        "" => "/",
                        v => v,
                    };
                    if !out.prefixes.iter().any(|x| &**x == v) {
                        out.prefixes.push(v.into());
                    }
                }
                Err(m) => e.at(ps, format!("admin.paths[{i}]"), m),
            }
        }
    }
    if let Some(c) = &a.capability {
        if known_caps.contains(c.get_ref()) {
            out.capability = c.get_ref().as_str().into();
        } else {
            e.at(
                c,
                "admin.capability",
                format!("unknown capability {:?}", c.get_ref()),
            );
        }
    }
    for (i, n) in a.networks.iter().enumerate() {
        match super::limits::parse_network(n.get_ref(), "admits every address") {
            Ok(net) => out.networks.push(net),
            Err(m) => e.at(n, format!("admin.networks[{i}]"), m),
        }
    }
    out
}

/// The shortest metrics token accepted (bytes, after resolving the reference).
const MIN_METRICS_TOKEN_BYTES: usize = 32;

/// Compiles `[admin] metrics_token`: a secret reference outside development, at least 32
/// bytes of printable ASCII without spaces (what a bearer token can carry).
pub(crate) fn compile_metrics_token(
    raw: Option<(&SourceFile, &Spanned<RawAdmin>)>,
    mode: Mode,
    errors: &mut Vec<PolicyError>,
) -> Option<MetricsToken> {
    let (file, a) = raw?;
    let t = a.get_ref().metrics_token.as_ref()?;
    let mut e = Errs { file, errors };
    if mode != Mode::Development && !secret::is_reference(t.get_ref()) {
        e.at(
            t,
            "admin.metrics_token",
            "a clear-text secret in a policy file; use env:NAME or file:/path",
        );
        return None;
    }
    match secret::resolve(t.get_ref(), e.base()) {
        Ok(v) if v.len() < MIN_METRICS_TOKEN_BYTES => {
            e.at(
                t,
                "admin.metrics_token",
                format!(
                    "metrics token is {} bytes; at least {MIN_METRICS_TOKEN_BYTES}",
                    v.len()
                ),
            );
            None
        }
        Ok(v) if !v.bytes().all(|b| b.is_ascii_graphic()) => {
            e.at(
                t,
                "admin.metrics_token",
                "metrics token must be one printable word (no spaces or control characters)",
            );
            None
        }
        Ok(v) => Some(MetricsToken::new(&v)),
        Err(m) => {
            e.at(t, "admin.metrics_token", m);
            None
        }
    }
}

/// Parses an RFC 3339 time (string or TOML date-time) to unix seconds.
fn parse_time(v: &toml::Value) -> Result<(u64, String), String> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => return Err("write an RFC 3339 time, e.g. \"2026-12-31T00:00:00Z\"".into()),
    };
    let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!("{text:?} is not an RFC 3339 time with an offset (e.g. 2026-12-31T00:00:00Z)")
        })?;
    let secs = t.unix_timestamp();
    if secs < 0 {
        return Err(format!("{text:?} is before 1970"));
    }
    Ok((secs as u64, text))
}

/// Compiles `[[blocked.exceptions]]`. An exception already expired is kept (closed) and noted.
pub(crate) fn compile_exceptions(
    file: &SourceFile,
    raw: &[RawBlockException],
    route_names: &HashSet<String>,
    blocked: &dyn Fn(&str) -> bool,
    check_path: impl Fn(&str) -> Result<(), String>,
    errors: &mut Vec<PolicyError>,
) -> Vec<BlockException> {
    let mut e = Errs { file, errors };
    let mut out = Vec::new();
    for (i, x) in raw.iter().enumerate() {
        let at = format!("blocked.exceptions[{i}]");
        let path = x.path.get_ref();
        let mut ok = true;
        if let Err(m) = check_path(path) {
            e.at(&x.path, format!("{at}.path"), m);
            ok = false;
        } else if !blocked(path) {
            e.at(
                &x.path,
                format!("{at}.path"),
                format!("{path:?} is not under a blocked prefix; nothing to open"),
            );
            ok = false;
        }
        if !route_names.contains(x.route.get_ref()) {
            e.at(
                &x.route,
                format!("{at}.route"),
                format!("unknown route {:?}", x.route.get_ref()),
            );
            ok = false;
        }
        if x.reason.get_ref().trim().len() < 3 {
            e.at(
                &x.reason,
                format!("{at}.reason"),
                "say why the path is opened (a ticket or a sentence)",
            );
            ok = false;
        }
        let expires = match parse_time(x.expires_at.get_ref()) {
            Ok(t) => Some(t),
            Err(m) => {
                e.at(&x.expires_at, format!("{at}.expires_at"), m);
                None
            }
        };
        if let (true, Some((secs, text))) = (ok, expires) {
            out.push(BlockException {
                path: path.as_str().into(),
                route: Arc::from(x.route.get_ref().as_str()),
                reason: x.reason.get_ref().as_str().into(),
                expires_at: secs,
                expires_text: text.into(),
                closed_logged: AtomicBool::new(false),
            });
        }
    }
    out
}
