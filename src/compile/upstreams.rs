//! `[[upstreams]]`: addresses, TLS to the upstream, timeouts, circuit breakers and health checks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::common::{check_host_port, host_of, load_ca_bundle, valid_name, Ctx, Pending};
use crate::policy::model::*;
use crate::policy::raw::*;
use crate::policy::source::{PolicyError, SourceFile};

/// The compiled upstreams, and each one's index by name.
pub(super) fn compile_upstreams(
    files: &[SourceFile],
    upstreams: &[Pending<RawUpstream>],
    errors: &mut Vec<PolicyError>,
) -> (Vec<Upstream>, HashMap<String, usize>) {
    let mut compiled_upstreams = Vec::new();
    let mut upstream_index: HashMap<String, usize> = HashMap::new();
    for u in upstreams {
        let mut cx = Ctx {
            file: &files[u.file],
            errors,
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
        if let Some(p) = &raw.retry_budget_percent {
            if *p.get_ref() > 100 {
                cx.err_at(
                    p,
                    format!("{at}.retry_budget_percent"),
                    "must be between 0 and 100",
                );
            } else {
                compiled.retry_budget_percent = *p.get_ref() as u8;
            }
        }
        compiled.health_http = http_check(raw, &compiled, &at, &mut cx);
        compiled_upstreams.push(compiled);
    }
    (compiled_upstreams, upstream_index)
}

/// The HTTP health check, when `health_check_path` asks for one.
fn http_check(
    raw: &RawUpstream,
    compiled: &Upstream,
    at: &str,
    cx: &mut Ctx,
) -> Option<crate::policy::specs::HttpCheck> {
    let extra = [
        raw.health_check_method
            .as_ref()
            .map(|v| (v.span(), "health_check_method")),
        raw.health_check_host
            .as_ref()
            .map(|v| (v.span(), "health_check_host")),
        raw.health_check_statuses
            .as_ref()
            .map(|v| (v.span(), "health_check_statuses")),
    ];
    let Some(path) = &raw.health_check_path else {
        for (span, key) in extra.into_iter().flatten() {
            cx.err(
                span.start,
                format!("{at}.{key}"),
                "needs health_check_path (the HTTP check's path)",
            );
        }
        return None;
    };
    let UpstreamTarget::External { tls, .. } = &compiled.target else {
        cx.err_at(
            path,
            format!("{at}.health_check_path"),
            "health checks are for external upstreams",
        );
        return None;
    };
    let p = path.get_ref();
    if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        cx.err_at(
            path,
            format!("{at}.health_check_path"),
            "must start with / and hold no spaces or control characters",
        );
        return None;
    }
    let method = match raw
        .health_check_method
        .as_ref()
        .map(|m| m.get_ref().to_ascii_uppercase())
    {
        None => "GET",
        Some(m) if m == "GET" => "GET",
        Some(m) if m == "HEAD" => "HEAD",
        Some(m) if m == "OPTIONS" => "OPTIONS",
        Some(_) => {
            let m = raw.health_check_method.as_ref().expect("matched Some");
            cx.err_at(
                m,
                format!("{at}.health_check_method"),
                "one of GET, HEAD, OPTIONS",
            );
            return None;
        }
    };
    let host = match &raw.health_check_host {
        Some(h)
            if h.get_ref().is_empty() || h.get_ref().bytes().any(|b| b <= b' ' || b == 0x7f) =>
        {
            cx.err_at(
                h,
                format!("{at}.health_check_host"),
                "a host name, with an optional port",
            );
            return None;
        }
        Some(h) => Some(h.get_ref().clone()),
        None => None,
    };
    let mut statuses = Vec::new();
    match &raw.health_check_statuses {
        None => statuses.push((200, 399)),
        Some(list) => {
            for s in list.get_ref() {
                let range = match s {
                    RawStatus::Code(c) if (100..=599).contains(c) => Some((*c, *c)),
                    RawStatus::Class(c) if c.len() == 3 && c.ends_with("xx") => c[..1]
                        .parse::<u16>()
                        .ok()
                        .filter(|d| (1..=5).contains(d))
                        .map(|d| (d * 100, d * 100 + 99)),
                    _ => None,
                };
                match range {
                    Some(r) => statuses.push(r),
                    None => {
                        cx.err_at(
                            list,
                            format!("{at}.health_check_statuses"),
                            "each entry is a status code (100-599) or a class (\"2xx\")",
                        );
                        return None;
                    }
                }
            }
            if statuses.is_empty() {
                cx.err_at(
                    list,
                    format!("{at}.health_check_statuses"),
                    "must name at least one status",
                );
                return None;
            }
        }
    }
    let tls = if *tls {
        match health_tls_config(compiled) {
            Ok(c) => Some(c),
            Err(m) => {
                cx.err_at(path, format!("{at}.health_check_path"), m);
                return None;
            }
        }
    } else {
        None
    };
    Some(crate::policy::specs::HttpCheck {
        method,
        path: p.clone(),
        host,
        statuses,
        tls,
    })
}

/// The TLS client settings of an upstream's requests, for its health checks: its pinned CAs or
/// the system's roots, and TLS 1.3 only when it asks for that.
fn health_tls_config(u: &Upstream) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &u.tls_ca {
        Some(ca) => {
            for c in ca.iter() {
                roots
                    .add(rustls::pki_types::CertificateDer::from(
                        c.borrow_raw_cert().clone(),
                    ))
                    .map_err(|e| format!("the CA bundle: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if u.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
