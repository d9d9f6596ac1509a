//! Raw policy files → compiled `Policy`. Checks every field and cross-reference and collects
//! *all* errors, each rendered as `file:line: field.path: message`, so an operator fixes a broken
//! edit in one pass. Never touches the running policy: the store decides whether to swap.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use toml::Spanned;

use super::compile_auth::{check_provider, compile_auth, compile_room_access};
use super::compile_http::{
    compile_admin, compile_alerts, compile_cors, compile_csrf, compile_exceptions, compile_headers,
    compile_metrics_token, compile_mtls, compile_signed_urls, valid_cookie_name, Errs,
};
use super::compile_limits::{
    compile_limits, compile_network, compile_shared_state, compile_websocket,
};
use super::model::*;
use super::raw::*;
use crate::config::{line_of, Mode};
use crate::http::path::canonicalize;

/// One policy file's name and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// One problem in a policy, pointing at the file, line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}: {}", self.file, self.field, self.message);
        }
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// All errors of one compile attempt.
#[derive(Debug, Clone)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

pub const DEFAULT_HSTS_MAX_AGE: u64 = 31_536_000;
pub const ALWAYS_BLOCKED: &str = "/terminal";
/// Paths that leak source, secrets or internals when a backend exposes them by accident; blocked
/// unless `[blocked] builtin = false`.
pub const DANGEROUS_PATHS: &[&str] = &[
    "/.git",
    "/.env",
    "/.svn",
    "/.hg",
    "/.DS_Store",
    "/debug/pprof",
    "/actuator",
    "/server-status",
    "/server-info",
    "/phpinfo.php",
    "/wp-admin",
];
/// The policy shipped inside the binary, used when the policy folder does not exist.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../policies/default.toml");

/// Reads every `*.toml` file of a policy folder (following symlinks, skipping hidden entries such
/// as Kubernetes' `..data`), sorted by name. A missing folder yields the embedded default when
/// `allow_embedded` (the folder was not named by the operator), and is an error otherwise.
pub fn read_dir(dir: &Path, allow_embedded: bool) -> Result<Vec<SourceFile>, PolicyErrors> {
    let one = |line: usize, message: String| {
        PolicyErrors(vec![PolicyError {
            file: dir.display().to_string(),
            line,
            field: "policy_dir".into(),
            message,
        }])
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if allow_embedded && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![SourceFile {
                path: PathBuf::from("<embedded default policy>"),
                text: EMBEDDED_DEFAULT.to_string(),
            }])
        }
        Err(e) => return Err(one(0, format!("cannot read the policy folder: {e}"))),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".toml") && p.is_file()
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(one(0, "no *.toml policy files in the policy folder".into()));
    }
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push(SourceFile { path, text }),
            Err(e) => errors.push(PolicyError {
                file: path.display().to_string(),
                line: 0,
                field: "(file)".into(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(PolicyErrors(errors))
    }
}

struct Ctx<'a> {
    file: &'a SourceFile,
    errors: &'a mut Vec<PolicyError>,
}

impl Ctx<'_> {
    fn err(&mut self, offset: usize, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.path.display().to_string(),
            line: line_of(&self.file.text, offset),
            field: field.into(),
            message: message.into(),
        });
    }
    fn err_at<T>(
        &mut self,
        at: &Spanned<T>,
        field: impl Into<String>,
        message: impl std::fmt::Display,
    ) {
        self.err(at.span().start, field, message.to_string())
    }
}

/// A route or upstream before cross-references are resolved, remembering where it was written.
struct Pending<T> {
    file: usize,
    index: usize,
    raw: T,
}

/// What a compile depends on besides the files.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions {
    pub mode: Mode,
    /// `AUTH_PROVIDER` from the environment: replaces the policy's default provider.
    pub auth_override: Option<crate::auth::Provider>,
    /// The HTTPS listener the policy will be served on, when known: the development providers
    /// (`none`, `local`) admit anyone, so they are refused on a listener that is not loopback.
    pub listener: Option<std::net::SocketAddr>,
}

/// Compiles policy files for a given mode, with no provider override.
pub fn compile(files: &[SourceFile], mode: Mode) -> Result<Policy, PolicyErrors> {
    compile_with(
        files,
        &CompileOptions {
            mode,
            auth_override: None,
            listener: None,
        },
    )
}

/// Compiles policy files. Returns every error found, sorted by file and line.
pub fn compile_with(files: &[SourceFile], opts: &CompileOptions) -> Result<Policy, PolicyErrors> {
    let mode = opts.mode;
    let mut errors = Vec::new();
    let mut parsed: Vec<(usize, RawPolicyFile)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        match toml::from_str::<RawPolicyFile>(&file.text) {
            Ok(raw) => parsed.push((i, raw)),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                errors.push(PolicyError {
                    file: file.path.display().to_string(),
                    line: line_of(&file.text, offset),
                    field: field_path_at(&file.text, offset).unwrap_or_else(|| "(syntax)".into()),
                    message: e.message().trim().to_string(),
                });
            }
        }
    }

    // Singleton sections: at most one file may define each.
    let mut blocked = None;
    let mut hsts = None;
    let mut worker = None;
    let mut rooms = None;
    let mut auth = None;
    let mut network = None;
    let mut websocket = None;
    let mut admin = None;
    let mut headers = None;
    let mut signed_urls = None;
    let mut mtls = None;
    let mut shared_state = None;
    let mut raw_limits: Vec<(usize, usize, RawLimit)> = Vec::new();
    let mut raw_alerts: Vec<(usize, usize, RawAlert)> = Vec::new();
    let mut routes = Vec::new();
    let mut upstreams = Vec::new();
    for (fi, raw) in parsed {
        let mut cx = Ctx {
            file: &files[fi],
            errors: &mut errors,
        };
        fn take<T>(
            cx: &mut Ctx<'_>,
            slot: &mut Option<(usize, Spanned<T>)>,
            fi: usize,
            value: Option<Spanned<T>>,
            name: &str,
            files: &[SourceFile],
        ) {
            if let Some(v) = value {
                if let Some((prev, _)) = slot {
                    let prev = files[*prev].path.display().to_string();
                    cx.err_at(&v, name, format!("[{name}] is already defined in {prev}"));
                } else {
                    *slot = Some((fi, v));
                }
            }
        }
        take(&mut cx, &mut blocked, fi, raw.blocked, "blocked", files);
        take(&mut cx, &mut hsts, fi, raw.hsts, "hsts", files);
        take(&mut cx, &mut worker, fi, raw.worker, "worker", files);
        take(&mut cx, &mut rooms, fi, raw.rooms, "rooms", files);
        take(&mut cx, &mut auth, fi, raw.auth, "auth", files);
        take(&mut cx, &mut network, fi, raw.network, "network", files);
        take(
            &mut cx,
            &mut websocket,
            fi,
            raw.websocket,
            "websocket",
            files,
        );
        take(&mut cx, &mut admin, fi, raw.admin, "admin", files);
        take(&mut cx, &mut headers, fi, raw.headers, "headers", files);
        take(&mut cx, &mut mtls, fi, raw.mtls, "mtls", files);
        take(
            &mut cx,
            &mut shared_state,
            fi,
            raw.shared_state,
            "shared_state",
            files,
        );
        take(
            &mut cx,
            &mut signed_urls,
            fi,
            raw.signed_urls,
            "signed_urls",
            files,
        );
        for (index, a) in raw.alerts.into_iter().enumerate() {
            raw_alerts.push((fi, index, a));
        }
        for (index, l) in raw.limits.into_iter().enumerate() {
            raw_limits.push((fi, index, l));
        }
        for (index, r) in raw.routes.into_iter().enumerate() {
            routes.push(Pending {
                file: fi,
                index,
                raw: r,
            });
        }
        for (index, u) in raw.upstreams.into_iter().enumerate() {
            upstreams.push(Pending {
                file: fi,
                index,
                raw: u,
            });
        }
    }

    // [auth] and room keys
    let auth_compiled = compile_auth(
        auth.as_ref().map(|(fi, a)| (&files[*fi], a)),
        rooms.as_ref().map(|(fi, r)| (&files[*fi], r)),
        opts,
        &mut errors,
    );
    let mut auth_settings = auth_compiled.settings;
    let known_caps = auth_compiled.known_capabilities;
    let default_auth = auth_settings.default_providers.clone();

    // [[upstreams]]
    let mut compiled_upstreams = Vec::new();
    let mut upstream_index: HashMap<String, usize> = HashMap::new();
    for u in &upstreams {
        let mut cx = Ctx {
            file: &files[u.file],
            errors: &mut errors,
        };
        let at = format!("upstreams[{}]", u.index);
        let raw = &u.raw;
        let name = raw.name.get_ref();
        if !valid_name(name) {
            cx.err_at(
                &raw.name,
                format!("{at}.name"),
                format!("invalid name {name:?}: use letters, digits, '-' and '_'"),
            );
        } else if upstream_index.contains_key(name) {
            cx.err_at(
                &raw.name,
                format!("{at}.name"),
                format!("duplicate upstream {name:?}"),
            );
        }
        let target = match raw.kind.get_ref().as_str() {
            k @ ("worker" | "rooms") => {
                if let Some(a) = &raw.addresses {
                    cx.err_at(
                        a,
                        format!("{at}.addresses"),
                        format!("an in-process `{k}` upstream takes no addresses"),
                    );
                }
                if raw.tls {
                    cx.err_at(
                        &raw.kind,
                        format!("{at}.tls"),
                        format!("an in-process `{k}` upstream is not reached over TLS"),
                    );
                }
                if k == "worker" {
                    UpstreamTarget::Worker
                } else {
                    UpstreamTarget::Rooms
                }
            }
            "external" => {
                let addrs = raw
                    .addresses
                    .as_ref()
                    .map(|a| a.get_ref().clone())
                    .unwrap_or_default();
                if addrs.is_empty() {
                    cx.err_at(
                        &raw.kind,
                        format!("{at}.addresses"),
                        "an external upstream needs at least one host:port address",
                    );
                }
                for (i, a) in addrs.iter().enumerate() {
                    if let Err(m) = check_host_port(a) {
                        let span = raw.addresses.as_ref().map(|s| s.span().start).unwrap_or(0);
                        cx.err(span, format!("{at}.addresses[{i}]"), m);
                    }
                }
                let sni = raw.sni.clone().unwrap_or_else(|| {
                    addrs
                        .first()
                        .map(|a| host_of(a).to_string())
                        .unwrap_or_default()
                });
                UpstreamTarget::External {
                    addresses: addrs,
                    tls: raw.tls,
                    sni,
                }
            }
            other => {
                cx.err_at(
                    &raw.kind,
                    format!("{at}.kind"),
                    format!("unknown kind {other:?} (expected worker, rooms or external)"),
                );
                UpstreamTarget::Worker
            }
        };
        let ms = |v: &Option<Spanned<u64>>, field: &str, default: u64, cx: &mut Ctx<'_>| match v {
            Some(s) if *s.get_ref() == 0 || *s.get_ref() > 3_600_000 => {
                cx.err_at(
                    s,
                    format!("{at}.{field}"),
                    "must be between 1 and 3600000 milliseconds",
                );
                Duration::from_millis(default)
            }
            Some(s) => Duration::from_millis(*s.get_ref()),
            None => Duration::from_millis(default),
        };
        let connect = ms(
            &raw.connect_timeout_ms,
            "connect_timeout_ms",
            5_000,
            &mut cx,
        );
        let read = ms(&raw.read_timeout_ms, "read_timeout_ms", 60_000, &mut cx);
        upstream_index
            .entry(name.clone())
            .or_insert(compiled_upstreams.len());
        let mut compiled = Upstream::new(Arc::from(name.as_str()), target, connect, read);
        let is_tls = matches!(compiled.target, UpstreamTarget::External { tls: true, .. });
        match (&raw.ca_file, raw.system_roots, is_tls) {
            (Some(f), _, false) | (Some(f), true, _) => cx.err_at(
                f,
                format!("{at}.ca_file"),
                "a CA bundle is for an external upstream with tls = true and without system_roots",
            ),
            (Some(f), false, true) => {
                let base = files[u.file].path.parent().unwrap_or(Path::new("."));
                match load_ca_bundle(&base.join(f.get_ref())) {
                    Ok(ca) => compiled.tls_ca = Some(ca),
                    Err(m) => cx.err_at(f, format!("{at}.ca_file"), m),
                }
            }
            (None, false, true) => cx.err_at(
                &raw.name,
                format!("{at}.ca_file"),
                "an upstream over TLS needs ca_file (a pinned CA bundle) or system_roots = true",
            ),
            _ => {}
        }
        if is_tls {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            if let Some(ca) = &compiled.tls_ca {
                for c in ca.iter() {
                    c.borrow_raw_cert().hash(&mut h);
                }
            } else {
                "system".hash(&mut h);
            }
            raw.min_tls_version
                .as_ref()
                .map(|v| v.get_ref().clone())
                .hash(&mut h);
            compiled.tls_group = h.finish();
        }
        if let Some(v) = &raw.min_tls_version {
            match crate::config::TlsVersion::parse(v.get_ref()) {
                Some(crate::config::TlsVersion::V13) => compiled.tls13_only = true,
                Some(_) => {}
                None => cx.err_at(
                    v,
                    format!("{at}.min_tls_version"),
                    format!("{:?} (expected \"1.2\" or \"1.3\")", v.get_ref()),
                ),
            }
        }
        if let Some(f) = &raw.circuit_failures {
            if !(1..=1000).contains(f.get_ref()) {
                cx.err_at(
                    f,
                    format!("{at}.circuit_failures"),
                    "must be between 1 and 1000",
                );
            } else {
                compiled.breaker.failures = *f.get_ref() as u32;
            }
        }
        if let Some(o) = &raw.circuit_open_ms {
            if !(10..=3_600_000).contains(o.get_ref()) {
                cx.err_at(
                    o,
                    format!("{at}.circuit_open_ms"),
                    "must be between 10 and 3600000",
                );
            } else {
                compiled.breaker.open_for = Duration::from_millis(*o.get_ref());
            }
        }
        if let Some(i) = &raw.idle_timeout_seconds {
            if *i.get_ref() > 3600 {
                cx.err_at(
                    i,
                    format!("{at}.idle_timeout_seconds"),
                    "must be at most 3600",
                );
            } else {
                compiled.idle_timeout = Duration::from_secs(*i.get_ref());
            }
        }
        if let Some(h) = &raw.health_check_interval_seconds {
            if *h.get_ref() > 3600 {
                cx.err_at(
                    h,
                    format!("{at}.health_check_interval_seconds"),
                    "must be at most 3600",
                );
            } else {
                compiled.health_interval =
                    (*h.get_ref() > 0).then(|| Duration::from_secs(*h.get_ref()));
            }
        }
        for (v, key, slot) in [
            (
                &raw.health_check_rise,
                "health_check_rise",
                &mut compiled.health_rise,
            ),
            (
                &raw.health_check_fall,
                "health_check_fall",
                &mut compiled.health_fall,
            ),
        ] {
            if let Some(v) = v {
                if (1..=10).contains(v.get_ref()) {
                    *slot = *v.get_ref() as u32;
                } else {
                    cx.err_at(v, format!("{at}.{key}"), "must be between 1 and 10");
                }
            }
        }
        compiled_upstreams.push(compiled);
    }

    let (header_settings, profile_index) = compile_headers(
        headers.as_ref().map(|(fi, h)| (&files[*fi], h)),
        &mut errors,
    );
    let signed = compile_signed_urls(
        signed_urls.as_ref().map(|(fi, s)| (&files[*fi], s)),
        mode,
        &mut errors,
    );

    let mtls_settings = mtls.as_ref().and_then(|(fi, m)| {
        let mut e = Errs {
            file: &files[*fi],
            errors: &mut errors,
        };
        compile_mtls(&mut e, m)
    });

    // [[routes]]
    let mut compiled_routes: Vec<(Route, usize, usize)> = Vec::new();
    let mut route_names: HashMap<String, ()> = HashMap::new();
    for r in &routes {
        let mut cx = Ctx {
            file: &files[r.file],
            errors: &mut errors,
        };
        let at = format!("routes[{}]", r.index);
        let raw = &r.raw;
        let name = raw.name.get_ref();
        if !valid_name(name) {
            cx.err_at(
                &raw.name,
                format!("{at}.name"),
                format!("invalid name {name:?}: use letters, digits, '-' and '_'"),
            );
        } else if route_names.insert(name.clone(), ()).is_some() {
            cx.err_at(
                &raw.name,
                format!("{at}.name"),
                format!("duplicate route {name:?}"),
            );
        }
        let prefix = raw.path_prefix.get_ref();
        if let Err(m) = check_path(prefix) {
            cx.err_at(&raw.path_prefix, format!("{at}.path_prefix"), m);
        }
        let mut hosts = Vec::new();
        if let Some(hs) = &raw.hosts {
            if hs.get_ref().is_empty() {
                cx.err_at(
                    hs,
                    format!("{at}.hosts"),
                    "an empty list matches nothing; leave `hosts` out to match any host",
                );
            }
            for (i, h) in hs.get_ref().iter().enumerate() {
                match parse_host_pattern(h) {
                    Ok(p) => hosts.push(p),
                    Err(m) => cx.err_at(hs, format!("{at}.hosts[{i}]"), m),
                }
            }
        }
        let mut methods = MethodSet::ALL;
        if let Some(ms) = &raw.methods {
            if ms.get_ref().is_empty() {
                cx.err_at(
                    ms,
                    format!("{at}.methods"),
                    "an empty list allows nothing; leave `methods` out to allow all",
                );
            }
            methods = MethodSet(0);
            for (i, m) in ms.get_ref().iter().enumerate() {
                match MethodSet::bit(m) {
                    Some(b) => methods.0 |= b,
                    None => cx.err_at(
                        ms,
                        format!("{at}.methods[{i}]"),
                        format!("unknown method {m:?} (use upper case, e.g. \"GET\")"),
                    ),
                }
            }
        }
        let upstream = match upstream_index.get(raw.upstream.get_ref()) {
            Some(i) => *i,
            None => {
                let known: Vec<&str> = {
                    let mut k: Vec<&str> = upstream_index.keys().map(|s| s.as_str()).collect();
                    k.sort();
                    k
                };
                cx.err_at(
                    &raw.upstream,
                    format!("{at}.upstream"),
                    format!(
                        "unknown upstream {:?} (defined: {})",
                        raw.upstream.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                usize::MAX
            }
        };
        let is_rooms = compiled_upstreams
            .get(upstream)
            .is_some_and(|u| u.target == UpstreamTarget::Rooms);
        let mut auth = Vec::new();
        match &raw.auth {
            Some(p) => {
                if p.get_ref().items().is_empty() {
                    cx.err_at(p, format!("{at}.auth"), "list at least one provider");
                }
                for name in p.get_ref().items() {
                    match check_provider(name, mode) {
                        Ok(pr) if auth.contains(&pr) => cx.err_at(
                            p,
                            format!("{at}.auth"),
                            format!("provider {name:?} listed twice"),
                        ),
                        Ok(pr) => auth.push(pr),
                        Err(m) => cx.err_at(p, format!("{at}.auth"), m),
                    }
                }
            }
            None => {
                if !raw.public
                    && mode != Mode::Development
                    && default_auth.iter().any(|p| p.development_only())
                {
                    cx.err_at(&raw.name, format!("{at}.auth"), format!("non-public route needs an authentication provider; \"{}\" is for development only", default_auth[0].as_str()));
                }
                auth = default_auth.clone();
            }
        }
        // Other modes refuse the development providers outright (above).
        if let Some(addr) = opts.listener.filter(|a| !a.ip().is_loopback()) {
            if let Some(dev) = auth.iter().find(|p| p.development_only()) {
                if !raw.public && mode == Mode::Development {
                    let span = raw
                        .auth
                        .as_ref()
                        .map_or(raw.name.span().start, |a| a.span().start);
                    cx.err(
                        span,
                        format!("{at}.auth"),
                        format!(
                            "authentication provider \"{}\" admits anyone and is served only on a loopback listener, but the HTTPS listener is {addr}: bind it to 127.0.0.1 (PORTCULLIS_HTTPS_ADDR or [listeners] https), or use another provider (AUTH_PROVIDER=static, auth.default_provider or the route's auth)",
                            dev.as_str()
                        ),
                    );
                }
            }
        }
        if raw.public && raw.auth.is_some() {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "a public route takes no authentication provider",
            );
        }
        if auth.contains(&crate::auth::Provider::Room) && !is_rooms && upstream != usize::MAX {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "the room provider is only for routes to a `rooms` upstream",
            );
        }
        if auth.contains(&crate::auth::Provider::Jwt) && auth_settings.issuers.is_empty() {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "the jwt provider needs at least one [[auth.issuers]]",
            );
        }
        if !raw.public && auth.contains(&crate::auth::Provider::Static) {
            auth_settings.needs_worker_token = true;
        }
        let mut capabilities: Vec<Box<str>> = Vec::new();
        if let Some(cs) = &raw.capabilities {
            for (i, c) in cs.get_ref().iter().enumerate() {
                if known_caps.contains(c) {
                    capabilities.push(c.as_str().into());
                } else {
                    cx.err_at(
                        cs,
                        format!("{at}.capabilities[{i}]"),
                        format!("unknown capability {c:?} (declare it in auth.capabilities)"),
                    );
                }
            }
            if raw.public && !capabilities.is_empty() {
                cx.err_at(
                    cs,
                    format!("{at}.capabilities"),
                    "a public route has no identity to hold capabilities",
                );
            }
        }
        if raw.query_token && !raw.websocket.unwrap_or(is_rooms) {
            cx.err_at(
                &raw.name,
                format!("{at}.query_token"),
                "query-string tokens are accepted only on WebSocket routes",
            );
        }
        let headers_idx = match &raw.headers {
            Some(h) => match profile_index.get(h.get_ref()) {
                Some(i) => *i,
                None => {
                    let mut known: Vec<&str> = profile_index.keys().map(|s| s.as_str()).collect();
                    known.sort();
                    cx.err_at(
                        h,
                        format!("{at}.headers"),
                        format!(
                            "unknown header profile {:?} (defined: {})",
                            h.get_ref(),
                            known.join(", ")
                        ),
                    );
                    header_settings.default
                }
            },
            None => header_settings.default,
        };
        let session_cookie = match &raw.session_cookie {
            Some(c) if !valid_cookie_name(c.get_ref()) => {
                cx.err_at(c, format!("{at}.session_cookie"), "not a valid cookie name");
                None
            }
            Some(c) if raw.public => {
                cx.err_at(
                    c,
                    format!("{at}.session_cookie"),
                    "a public route does not authenticate",
                );
                None
            }
            Some(c) => Some(c.get_ref().as_str().into()),
            None => None,
        };
        if session_cookie.is_some() && raw.csrf.is_none() {
            cx.err_at(
                &raw.name,
                format!("{at}.csrf"),
                "a cookie-authenticated route needs [routes.csrf] (cookies ride along on cross-site requests)",
            );
        }
        if !raw.public
            && raw.websocket.unwrap_or(is_rooms)
            && auth.contains(&crate::auth::Provider::Mtls)
            && raw.csrf.is_none()
        {
            cx.err_at(
                &raw.name,
                format!("{at}.csrf"),
                "a WebSocket route taking client certificates needs [routes.csrf] with its allowed origins (a browser presents its certificate on a cross-site handshake)",
            );
        }
        if raw.signed_urls && signed.is_none() {
            cx.err_at(
                &raw.name,
                format!("{at}.signed_urls"),
                "signed URLs need [signed_urls] keys in the policy",
            );
        }
        let mut client_cert_allow = Vec::new();
        if let Some(list) = &raw.client_cert_allow {
            if !auth.contains(&crate::auth::Provider::Mtls) {
                cx.err_at(
                    list,
                    format!("{at}.client_cert_allow"),
                    "an allow-list of client certificates needs auth = \"mtls\"",
                );
            }
            for (i, entry) in list.get_ref().iter().enumerate() {
                match crate::policy::specs::AllowEntry::parse(entry) {
                    Ok(a) => client_cert_allow.push(a),
                    Err(m) => cx.err_at(list, format!("{at}.client_cert_allow[{i}]"), m),
                }
            }
        }
        if auth.contains(&crate::auth::Provider::Mtls) && mtls.is_none() {
            cx.err_at(
                &raw.name,
                format!("{at}.auth"),
                "the mtls provider needs an [mtls] section with the client CA bundle",
            );
        }
        let mut e = Errs {
            file: cx.file,
            errors: cx.errors,
        };
        let csrf = raw
            .csrf
            .as_ref()
            .and_then(|c| compile_csrf(&mut e, &at, c, raw.cors.as_ref()));
        let cors = raw.cors.as_ref().and_then(|c| {
            compile_cors(
                &mut e,
                &at,
                c,
                methods,
                raw.public,
                csrf.as_ref().map(|c| &c.header),
                mode,
            )
        });
        let mut cx = Ctx {
            file: e.file,
            errors: e.errors,
        };
        let route = Route {
            name: Arc::from(name.as_str()),
            hosts,
            prefix: prefix.clone().into_boxed_str(),
            methods,
            upstream,
            public: raw.public,
            auth,
            capabilities,
            query_token: raw.query_token,
            forward_authorization: raw.forward_authorization,
            max_body_bytes: match &raw.max_body_bytes {
                Some(m) if *m.get_ref() > 1 << 34 => {
                    cx.err_at(
                        m,
                        format!("{at}.max_body_bytes"),
                        "must be at most 17179869184",
                    );
                    16 << 20
                }
                Some(m) => *m.get_ref(),
                None => 16 << 20,
            },
            websocket: raw.websocket.unwrap_or(is_rooms),
            case_sensitive: raw.case_sensitive.unwrap_or(true),
            headers: headers_idx,
            cors,
            csrf,
            session_cookie,
            signed_urls: raw.signed_urls,
            client_cert_allow,
        };
        compiled_routes.push((route, r.file, raw.path_prefix.span().start));
    }
    // Two routes that would answer the same requests make the second unreachable.
    for i in 0..compiled_routes.len() {
        for j in 0..i {
            let (a, _, _) = &compiled_routes[j];
            let (b, fi, off) = &compiled_routes[i];
            if a.prefix == b.prefix && a.hosts == b.hosts && a.methods.0 & b.methods.0 != 0 {
                let mut cx = Ctx {
                    file: &files[*fi],
                    errors: &mut errors,
                };
                let idx = routes[i].index;
                cx.err(
                    *off,
                    format!("routes[{idx}].path_prefix"),
                    format!(
                        "same hosts, prefix and methods as route {:?}: one of them can never match",
                        &*a.name
                    ),
                );
            }
        }
    }

    // [blocked]
    let builtin = blocked.as_ref().is_none_or(|(_, b)| b.get_ref().builtin);
    let mut blocked_paths = BlockedPaths {
        prefixes: std::iter::once(ALWAYS_BLOCKED)
            .chain(DANGEROUS_PATHS.iter().copied().filter(|_| builtin))
            .map(Into::into)
            .collect(),
        case_sensitive: false,
        exceptions: Vec::new(),
    };
    if let Some((fi, b)) = &blocked {
        let mut cx = Ctx {
            file: &files[*fi],
            errors: &mut errors,
        };
        blocked_paths.case_sensitive = b.get_ref().case_sensitive;
        for (i, p) in b.get_ref().paths.iter().enumerate() {
            match check_path(p.get_ref()) {
                Ok(()) if p.get_ref() == "/" => cx.err_at(
                    p,
                    format!("blocked.paths[{i}]"),
                    "blocking \"/\" blocks everything",
                ),
                Ok(()) => {
                    let v = p.get_ref().trim_end_matches('/');
                    if !blocked_paths.prefixes.iter().any(|x| &**x == v) {
                        blocked_paths.prefixes.push(v.into());
                    }
                }
                Err(m) => cx.err_at(p, format!("blocked.paths[{i}]"), m),
            }
        }
        let names: std::collections::HashSet<String> = route_names.keys().cloned().collect();
        let (prefixes, cs) = (&blocked_paths.prefixes, blocked_paths.case_sensitive);
        let is_blocked = |p: &str| prefixes.iter().any(|x| prefix_matches(x, p, cs));
        let exceptions = compile_exceptions(
            &files[*fi],
            &b.get_ref().exceptions,
            &names,
            &is_blocked,
            check_path,
            &mut errors,
        );
        blocked_paths.exceptions = exceptions;
    }
    let mut admin_paths = compile_admin(
        admin.as_ref().map(|(fi, a)| (&files[*fi], a)),
        &known_caps,
        check_path,
        &mut errors,
    );
    admin_paths.metrics_token = compile_metrics_token(
        admin.as_ref().map(|(fi, a)| (&files[*fi], a)),
        mode,
        &mut errors,
    );

    // [hsts]
    let mut hsts_value = Some(hsts_header(DEFAULT_HSTS_MAX_AGE, true, false));
    if let Some((fi, h)) = &hsts {
        let mut cx = Ctx {
            file: &files[*fi],
            errors: &mut errors,
        };
        let h = h.get_ref();
        let max_age = h
            .max_age
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or(DEFAULT_HSTS_MAX_AGE);
        if h.preload && (!h.include_subdomains || max_age < DEFAULT_HSTS_MAX_AGE) {
            let off = h.max_age.as_ref().map(|m| m.span().start).unwrap_or(0);
            cx.err(
                off,
                "hsts.preload",
                "preload needs include_subdomains = true and max_age of at least 31536000",
            );
        }
        hsts_value = h
            .enabled
            .then(|| hsts_header(max_age, h.include_subdomains, h.preload));
    }

    // [worker]
    let mut worker_settings = WorkerSettings {
        models: Vec::new(),
        max_object_bytes: 8 * 1024 * 1024,
    };
    if let Some((fi, w)) = &worker {
        let mut cx = Ctx {
            file: &files[*fi],
            errors: &mut errors,
        };
        let w = w.get_ref();
        worker_settings.models = w.models.clone();
        if let Some(m) = &w.max_object_bytes {
            if *m.get_ref() == 0 || *m.get_ref() > 1 << 32 {
                cx.err_at(
                    m,
                    "worker.max_object_bytes",
                    "must be between 1 and 4294967296",
                );
            } else {
                worker_settings.max_object_bytes = *m.get_ref();
            }
        }
    }

    // [rooms]
    let (default_locked, access) = compile_room_access(
        rooms.as_ref().map(|(fi, r)| (&files[*fi], r)),
        &known_caps,
        !auth_settings.room_keys.keys.is_empty(),
        &mut errors,
    );
    let mut room_settings = RoomSettings {
        queue_capacity: 256,
        max_peers: 64,
        max_message_bytes: 64 * 1024,
        slow_peer_timeout: Duration::from_secs(10),
        default_locked,
        access: access.clone(),
    };
    if let Some((fi, r)) = &rooms {
        let mut cx = Ctx {
            file: &files[*fi],
            errors: &mut errors,
        };
        let r = r.get_ref();
        let mut bounded =
            |v: &Option<Spanned<u64>>, field: &str, lo: u64, hi: u64, slot: &mut u64| {
                if let Some(s) = v {
                    if *s.get_ref() < lo || *s.get_ref() > hi {
                        cx.err_at(
                            s,
                            format!("rooms.{field}"),
                            format!("must be between {lo} and {hi}"),
                        );
                    } else {
                        *slot = *s.get_ref();
                    }
                }
            };
        let (mut q, mut p, mut m, mut t) = (256u64, 64u64, 65536u64, 10_000u64);
        bounded(&r.queue_capacity, "queue_capacity", 1, 65_536, &mut q);
        bounded(&r.max_peers, "max_peers", 1, 100_000, &mut p);
        bounded(
            &r.max_message_bytes,
            "max_message_bytes",
            1,
            16 << 20,
            &mut m,
        );
        bounded(
            &r.slow_peer_timeout_ms,
            "slow_peer_timeout_ms",
            100,
            600_000,
            &mut t,
        );
        room_settings = RoomSettings {
            queue_capacity: q as usize,
            max_peers: p as usize,
            max_message_bytes: m as usize,
            slow_peer_timeout: Duration::from_millis(t),
            default_locked,
            access,
        };
    }

    let network_settings = compile_network(
        network.as_ref().map(|(fi, n)| (&files[*fi], n)),
        &mut errors,
    );
    let ws_budget = compile_websocket(
        websocket.as_ref().map(|(fi, w)| (&files[*fi], w)),
        &mut errors,
    );
    let limit_refs: Vec<(&SourceFile, usize, &RawLimit)> = raw_limits
        .iter()
        .map(|(fi, i, l)| (&files[*fi], *i, l))
        .collect();
    let shared_settings = compile_shared_state(
        shared_state.as_ref().map(|(fi, s)| (&files[*fi], s)),
        &mut errors,
    );
    let limits = compile_limits(
        &limit_refs,
        &route_names.keys().cloned().collect(),
        shared_state.is_some(),
        &mut errors,
    );

    let alert_refs: Vec<(&SourceFile, usize, &RawAlert)> = raw_alerts
        .iter()
        .map(|(fi, i, a)| (&files[*fi], *i, a))
        .collect();
    let alerts = compile_alerts(&alert_refs, &mut errors);

    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(PolicyErrors(errors));
    }

    let mut routes: Vec<Route> = compiled_routes.into_iter().map(|(r, _, _)| r).collect();
    routes.sort_by_key(|r| (r.hosts.is_empty(), std::cmp::Reverse(r.prefix.len())));
    Ok(Policy {
        generation: 0,
        mode,
        routes,
        upstreams: compiled_upstreams,
        blocked: blocked_paths,
        admin: admin_paths,
        headers: header_settings,
        signed_urls: signed,
        mtls: mtls_settings,
        alerts,
        hsts: hsts_value,
        worker: worker_settings,
        rooms: room_settings,
        auth: auth_settings,
        network: network_settings,
        limits,
        shared_state: shared_settings,
        websocket: ws_budget,
        sources: files.iter().map(|f| f.path.clone()).collect(),
        secret_files: crate::posture::secret_files(files),
    })
}

/// Reads a PEM bundle of CA certificates for upstream verification.
fn load_ca_bundle(path: &Path) -> Result<Arc<pingora::protocols::tls::CaType>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        if x509_parser::parse_x509_certificate(&c).is_err() {
            return Err(format!("{}: not an X.509 certificate", path.display()));
        }
        out.push(pingora::utils::tls::WrappedX509::new(
            c.to_vec(),
            pingora::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(format!("{}: no certificates in the bundle", path.display()));
    }
    Ok(Arc::from(out.into_boxed_slice()))
}

fn hsts_header(max_age: u64, sub: bool, preload: bool) -> HeaderValue {
    let mut v = format!("max-age={max_age}");
    if sub {
        v.push_str("; includeSubDomains");
    }
    if preload {
        v.push_str("; preload");
    }
    HeaderValue::from_str(&v).expect("HSTS value is ASCII")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A policy path must be absolute and already canonical, so it compares byte-for-byte with a
/// canonical request path.
fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/'"));
    }
    if p.contains(['?', '#']) {
        return Err(format!("{p:?} must not contain a query or fragment"));
    }
    match canonicalize(p) {
        Ok(c) if c == p => Ok(()),
        Ok(c) => Err(format!("{p:?} is not canonical; write {c:?}")),
        Err(e) => Err(format!("{p:?} is not a valid path: {e}")),
    }
}

fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
    let (wild, rest) = match h.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, h),
    };
    let ok = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !ok {
        return Err(format!(
            "invalid host {h:?} (lower-case DNS name, optionally starting with \"*.\"; no port)"
        ));
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{rest}").into_boxed_str())
    } else {
        HostPattern::Exact(rest.into())
    })
}

fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

fn check_host_port(a: &str) -> Result<(), String> {
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("{a:?} needs a port (host:port)"));
    };
    if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
        return Err(format!("{a:?}: invalid port {port:?}"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(format!("{a:?}: invalid host"));
    }
    Ok(())
}

/// The dotted field path (`routes[2].upstream`) of the innermost key or value covering `offset`,
/// used to place serde's errors.
pub fn field_path_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = String::new();
    if walk_table(doc.as_table(), offset, &mut path) {
        Some(path)
    } else {
        None
    }
}

fn covers(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn walk_table(table: &toml_edit::Table, offset: usize, path: &mut String) -> bool {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        let base_len = path.len();
        push_key(path, key);
        if covers(key_span.clone(), offset) {
            return true;
        }
        if walk_item(item, offset, path) {
            return true;
        }
        path.truncate(base_len);
    }
    false
}

fn walk_item(item: &toml_edit::Item, offset: usize, path: &mut String) -> bool {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, offset, path) || covers(t.span(), offset),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let base = path.len();
                path.push_str(&format!("[{i}]"));
                if walk_table(t, offset, path) || covers(t.span(), offset) {
                    return true;
                }
                path.truncate(base);
            }
            false
        }
        toml_edit::Item::Value(v) => walk_value(v, offset, path),
        toml_edit::Item::None => false,
    }
}

fn walk_value(v: &toml_edit::Value, offset: usize, path: &mut String) -> bool {
    match v {
        toml_edit::Value::InlineTable(t) => {
            for (key, val) in t.iter() {
                let base = path.len();
                push_key(path, key);
                if covers(t.key(key).and_then(|k| k.span()), offset)
                    || walk_value(val, offset, path)
                {
                    return true;
                }
                path.truncate(base);
            }
            covers(t.span(), offset)
        }
        toml_edit::Value::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                let base = path.len();
                path.push_str(&format!("[{i}]"));
                if walk_value(val, offset, path) {
                    return true;
                }
                path.truncate(base);
            }
            covers(a.span(), offset)
        }
        other => covers(other.span(), offset),
    }
}
