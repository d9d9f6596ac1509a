//! Raw policy files → compiled `Policy`. Checks every field and cross-reference and collects
//! *all* errors, each rendered as `file:line: field.path: message`, so an operator fixes a broken
//! edit in one pass. One file per part of the policy, compiled in the order their
//! cross-references need: `auth`, `upstreams`, `headers` (profiles, CORS, CSRF, signed URLs,
//! mTLS), `routes`, `admin` (admin paths and blocked-path exceptions), `limits` and `alerts`.
//! Never touches the running policy: `open_store` hands the compiler to the `PolicyStore`, which
//! decides whether to swap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::config::{line_of, Mode};
use crate::policy::model::*;
use crate::policy::raw::*;
use crate::policy::source::{field_path_at, PolicyError, PolicyErrors, SourceFile};
use crate::policy::store::{Loader, PolicyStore};
use admin::{compile_admin, compile_exceptions, compile_metrics_token};
use alerts::compile_alerts;
use auth::{compile_auth, compile_room_access};
use common::{check_path, hsts_header, Ctx, Pending};
use headers::{compile_headers, compile_mtls, compile_signed_urls, Errs};
use limits::{compile_limits, compile_network, compile_websocket};
use routes::{compile_routes, RouteRefs};
use shared_state::compile_shared_state;
use upstreams::compile_upstreams;

mod admin;
mod alerts;
mod auth;
mod common;
mod headers;
mod limits;
mod routes;
mod shared_state;
mod upstreams;

#[cfg(test)]
mod tests;

pub use common::CompileOptions;

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

/// Compiles policy files for a given mode, with no provider override.
pub fn compile(files: &[SourceFile], mode: Mode) -> Result<Policy, PolicyErrors> {
    compile_with(
        files,
        &CompileOptions {
            mode,
            auth_override: None,
            listener: None,
            acme_shared: false,
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
    let (compiled_upstreams, upstream_index) = compile_upstreams(files, &upstreams, &mut errors);

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
    let (compiled_routes, route_names) = compile_routes(
        files,
        &routes,
        &RouteRefs {
            opts,
            known_caps: &known_caps,
            default_auth: &default_auth,
            upstream_index: &upstream_index,
            upstreams: &compiled_upstreams,
            profile_index: &profile_index,
            header_settings: &header_settings,
            signed: &signed,
            has_mtls: mtls.is_some(),
        },
        &mut auth_settings,
        &mut errors,
    );

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

    let mut routes = compiled_routes;
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

/// Opens the policy folder as a live store whose reloads compile with `options`. In production a
/// policy that fails the posture checklist is refused, at start and on every reload alike; a
/// rejected reload raises the `reload_failure` alert.
pub fn open_store(
    dir: PathBuf,
    allow_embedded: bool,
    options: CompileOptions,
) -> Result<Arc<PolicyStore>, PolicyErrors> {
    let gate_dir = dir.clone();
    let loader = Loader {
        compile: Box::new(move |files| {
            let policy = compile_with(files, &options)?;
            if options.mode == Mode::Production {
                posture_gate(&policy, files, &gate_dir, options.acme_shared)?;
            }
            Ok(policy)
        }),
        rejected: Box::new(|_| {
            crate::observability::alerts::emit(
                crate::observability::alerts::EventKind::ReloadFailure,
                None,
            )
        }),
    };
    PolicyStore::open(dir, allow_embedded, loader)
}

/// The posture checks that depend on the policy alone; any FAIL refuses it.
fn posture_gate(
    policy: &Policy,
    files: &[SourceFile],
    dir: &std::path::Path,
    acme_shared: bool,
) -> Result<(), PolicyErrors> {
    let production = crate::config::Mode::Production;
    let fails: Vec<_> =
        crate::posture::policy_items(policy, files, production, crate::auth::now_unix())
            .into_iter()
            .chain(crate::posture::acme_shared_item(
                acme_shared,
                policy,
                production,
            ))
            .filter(|i| i.status == crate::posture::Status::Fail)
            .map(|i| PolicyError {
                file: dir.display().to_string(),
                line: 0,
                field: format!("posture {}", i.id),
                message: format!("FAIL: {} — {}", i.finding, i.remedy),
            })
            .collect();
    if fails.is_empty() {
        Ok(())
    } else {
        Err(PolicyErrors(fails))
    }
}
