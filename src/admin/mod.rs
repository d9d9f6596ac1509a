//! The admin listener (loopback by default): `/health`, `/ready`, `/metrics` and a JSON status
//! page, plus the plain-HTTP listener that answers every request with a 308 to HTTPS. Reads
//! gateway state; never changes policy or certificates.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::backends::{full, json, Body};
use crate::handles::Shared;

mod page;

/// On a listener that is not loopback, everything but `/health` and `/ready` needs the worker
/// token; `/metrics` also opens to the policy's metrics token (`[admin] metrics_token`).
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    if shared.config.admin_addr.ip().is_loopback() {
        return true;
    }
    let Some(presented) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| crate::auth::bearer(v.as_bytes()).ok())
    else {
        return false;
    };
    if shared
        .auth
        .worker
        .load()
        .as_ref()
        .as_ref()
        .is_some_and(|w| w.matches(presented))
    {
        return true;
    }
    req.uri().path() == "/metrics"
        && shared
            .policy
            .snapshot()
            .admin
            .metrics_token
            .as_ref()
            .is_some_and(|m| m.matches(presented))
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if !matches!(path, "/health" | "/ping" | "/ready") && !authorized(&shared, &req) {
        return Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .header("www-authenticate", "Bearer realm=\"portcullis-admin\"")
            .body(full(r#"{"error":"admin_token_required"}"#))
            .expect("valid response");
    }
    match path {
        "/status.html" => {
            let (html, nonce) = page::render(&shared);
            Response::builder()
                .status(200)
                .header("content-type", "text/html; charset=utf-8")
                .header("content-security-policy", page::csp(&nonce))
                .header("x-content-type-options", "nosniff")
                .header("cache-control", "no-store")
                .body(full(html))
                .expect("valid response")
        }
        "/health" | "/ping" => json(200, &serde_json::json!({"status": "ok"})),
        "/ready" => {
            if shared.ready.load(Ordering::Acquire) {
                json(200, &serde_json::json!({"status": "ready"}))
            } else {
                json(503, &serde_json::json!({"status": "not_ready"}))
            }
        }
        "/metrics" => Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4")
            .body(full(render_metrics(&shared)))
            .expect("valid response"),
        "/" | "/status" => json(200, &status(&shared)),
        _ => json(404, &serde_json::json!({"error": "not_found"})),
    }
}

fn status(shared: &Shared) -> serde_json::Value {
    let policy = shared.policy.snapshot();
    let certs = shared.certs.snapshot();
    let staples = shared.stapler.info();
    serde_json::json!({
        "mode": shared.config.mode.as_str(),
        "ready": shared.ready.load(Ordering::Acquire),
        "policy": {
            "generation": policy.generation,
            "sources": policy.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "routes": policy.routes.iter().map(|r| r.name.to_string()).collect::<Vec<_>>(),
            "last_reload_error": shared.policy.last_error(),
        },
        "certificates": certs.entries.iter().map(|e| {
            let ocsp = staples.iter().find(|i| i.name == e.name);
            serde_json::json!({
                "name": e.name, "names": e.names, "not_after": e.not_after,
                "ocsp": ocsp.map(|i| serde_json::json!({
                    "stapled": i.stapled,
                    "this_update": i.this_update,
                    "next_update": i.next_update,
                    "last_error": i.last_error,
                })),
            })
        }).collect::<Vec<_>>(),
        "in_flight": shared.in_flight.load(Ordering::Relaxed),
    })
}

/// Appends one metric family: its HELP and TYPE lines, then one sample per `(labels, value)`.
/// A label value in the text exposition format: `\`, `"` and line feeds escaped (a certificate's
/// name comes from its file name, which may hold any of them).
fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn one(value: u64) -> Vec<(String, u64)> {
    vec![(String::new(), value)]
}

fn render_metrics(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    shared.metrics.render(o);
    let now = crate::auth::now_unix() as i64;
    o.push_str("# HELP portcullis_certificate_expiry_timestamp_seconds When each served certificate expires (notAfter, Unix seconds).\n");
    o.push_str("# TYPE portcullis_certificate_expiry_timestamp_seconds gauge\n");
    for e in &shared.certs.snapshot().entries {
        let _ = writeln!(
            o,
            "portcullis_certificate_expiry_timestamp_seconds{{name=\"{}\"}} {}",
            label(&e.name),
            e.not_after
        );
    }
    o.push_str("# HELP portcullis_ocsp_staple_age_seconds Age of the served OCSP staple (since its thisUpdate), per certificate.\n");
    o.push_str("# TYPE portcullis_ocsp_staple_age_seconds gauge\n");
    for i in shared.stapler.info() {
        if let (true, Some(t)) = (i.stapled, i.this_update) {
            let _ = writeln!(
                o,
                "portcullis_ocsp_staple_age_seconds{{name=\"{}\"}} {}",
                label(&i.name),
                now - t
            );
        }
    }
    family(
        o,
        "portcullis_ocsp_events_total",
        "counter",
        "OCSP refresh outcomes: good, revoked, unknown, fetch_error, invalid, expired.",
        &shared
            .stapler
            .events()
            .into_iter()
            .map(|(e, n)| (format!("event=\"{e}\""), n))
            .collect::<Vec<_>>(),
    );
    if let Some(a) = &shared.acme {
        family(
            o,
            "portcullis_acme_orders_total",
            "counter",
            "ACME certificate orders, by result (issued, failed).",
            &[
                ("result=\"issued\"".to_string(), load(&a.stats.issued)),
                ("result=\"failed\"".to_string(), load(&a.stats.failed)),
            ],
        );
        family(
            o,
            "portcullis_acme_certificates_loaded_total",
            "counter",
            "ACME certificates served from storage at start, without a new order.",
            &[(String::new(), load(&a.stats.loaded_from_storage))],
        );
    }
    let p = &shared.policy;
    family(
        o,
        "portcullis_policy_generation",
        "gauge",
        "Generation of the running policy.",
        &one(p.generation()),
    );
    family(
        o,
        "portcullis_policy_reloads_total",
        "counter",
        "Policy reloads by result.",
        &[
            ("result=\"ok\"".into(), load(&p.reloads_ok)),
            ("result=\"error\"".into(), load(&p.reloads_failed)),
        ],
    );
    let c = &shared.certs;
    family(
        o,
        "portcullis_cert_reloads_total",
        "counter",
        "Certificate folder reloads by result.",
        &[
            ("result=\"ok\"".into(), load(&c.reloads_ok)),
            ("result=\"error\"".into(), load(&c.reloads_failed)),
        ],
    );
    family(
        o,
        "portcullis_in_flight_requests",
        "gauge",
        "Requests being handled.",
        &one(shared.in_flight.load(Ordering::Relaxed) as u64),
    );
    let r = &shared.rooms;
    family(
        o,
        "portcullis_room_overflows_total",
        "counter",
        "Room peer queues found full; their backlog is dropped.",
        &one(load(&r.overflows)),
    );
    family(
        o,
        "portcullis_room_resyncs_total",
        "counter",
        "Room peers told to resync after their queue overflowed.",
        &one(load(&r.resyncs)),
    );
    family(
        o,
        "portcullis_room_slow_closes_total",
        "counter",
        "Room peers closed with 1013 for not reading.",
        &one(load(&r.slow_closes)),
    );
    let stats = shared.limiters.stats();
    let per_limit = |f: &dyn Fn(&crate::limits::rate::LimitStat) -> u64| -> Vec<(String, u64)> {
        stats
            .iter()
            .map(|s| (format!("limit=\"{}\"", s.0), f(s)))
            .collect()
    };
    family(
        o,
        "portcullis_rate_limited_total",
        "counter",
        "Requests refused by a rate limit.",
        &per_limit(&|s| s.2),
    );
    family(
        o,
        "portcullis_rate_limit_keys",
        "gauge",
        "Distinct keys a limit holds (bounded by its max_keys).",
        &per_limit(&|s| s.1 as u64),
    );
    family(
        o,
        "portcullis_rate_limit_overflow_total",
        "counter",
        "Requests counted in a limit's shared overflow bucket.",
        &per_limit(&|s| s.3),
    );
    let st = &shared.shared_state.stats;
    family(
        o,
        "portcullis_shared_state_up",
        "gauge",
        "1 while the shared store (Redis) answers; 0 when it is unreachable or not configured.",
        &one(shared.shared_state.is_up() as u64),
    );
    family(
        o,
        "portcullis_shared_state_errors_total",
        "counter",
        "Shared-store calls that failed or timed out.",
        &one(load(&st.errors)),
    );
    family(
        o,
        "portcullis_shared_state_fallbacks_total",
        "counter",
        "Global-limit checks decided by the failure mode while the shared store was unreachable.",
        &[
            ("mode=\"fail_open\"".into(), load(&st.fallback_open)),
            ("mode=\"fail_closed\"".into(), load(&st.fallback_closed)),
        ],
    );
    family(
        o,
        "portcullis_shared_state_round_trips_total",
        "counter",
        "Calls to the shared store from the request path (global limits, auth failures).",
        &one(load(&st.round_trips)),
    );
    family(
        o,
        "portcullis_shared_state_reserved_total",
        "counter",
        "Global-limit requests admitted from this replica's reserved tokens, without a call.",
        &one(load(&st.reserved_hits)),
    );
    family(
        o,
        "portcullis_revocations",
        "gauge",
        "Token revocations (jti, sub, kid) this replica holds.",
        &one(shared.auth.revocations.len() as u64),
    );
    family(
        o,
        "portcullis_auth_lockouts_total",
        "counter",
        "Lockouts started after repeated authentication failures.",
        &one(load(&shared.backoff.lockouts)),
    );
    family(
        o,
        "portcullis_connections_refused_total",
        "counter",
        "Connections dropped by a connection cap.",
        &one(load(&shared.connections.refused)),
    );
    family(
        o,
        "portcullis_slow_clients_cut_total",
        "counter",
        "Connections cut for not sending a request header in time.",
        &one(load(&shared.header_deadline.cut)),
    );
    family(
        o,
        "portcullis_connections",
        "gauge",
        "Connections open on the HTTPS listener.",
        &one(shared.connections.total.load(Ordering::Relaxed) as u64),
    );
    let circuits: Vec<(String, u64)> = shared
        .resilience
        .open_circuits()
        .into_iter()
        .map(|(u, a, open)| (format!("upstream=\"{u}\",address=\"{a}\""), open as u64))
        .collect();
    family(
        o,
        "portcullis_circuit_open",
        "gauge",
        "Whether an upstream address's circuit is open (1) or closed (0).",
        &circuits,
    );
    let a = &shared.auth;
    family(
        o,
        "portcullis_token_signature_checks_total",
        "counter",
        "Token signatures verified (cache misses reaching the crypto).",
        &one(load(&a.stats.signature_checks)),
    );
    family(
        o,
        "portcullis_token_cache_total",
        "counter",
        "Verified-token cache lookups by result.",
        &[
            ("result=\"hit\"".into(), load(&a.cache.hits)),
            ("result=\"miss\"".into(), load(&a.cache.misses)),
        ],
    );
    let mut jwks = Vec::new();
    for c in a.jwks.all() {
        let (total, failed) = (load(&c.fetches), load(&c.fetch_failures));
        jwks.push((format!("url=\"{}\",result=\"ok\"", c.url()), total - failed));
        jwks.push((format!("url=\"{}\",result=\"error\"", c.url()), failed));
    }
    family(
        o,
        "portcullis_jwks_fetches_total",
        "counter",
        "JWKS fetches by result.",
        &jwks,
    );
    out
}

/// A `Host` value safe to put in a `Location`: a DNS name or IP literal, without the port.
fn redirect_host(host: Option<&str>) -> Option<&str> {
    let host = host?;
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    ok.then_some(name)
}

/// The plain-HTTP listener: ACME `http-01` challenge answers while an order is open; every
/// other request gets a 308 to the same path on HTTPS.
pub async fn redirect(
    https: SocketAddr,
    challenges: Option<Arc<crate::tls::acme::Challenges>>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let (Some(c), Some(token)) = (
        challenges,
        req.uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/"),
    ) {
        return match c.http01(token) {
            Some(key_authorization) => Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .body(full(key_authorization.into_bytes()))
                .expect("valid response"),
            None => Response::builder()
                .status(404)
                .header("content-type", "application/json")
                .body(full(&br#"{"error":"not_found"}"#[..]))
                .expect("valid response"),
        };
    }
    let fallback = if https.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        https.ip().to_string()
    };
    let host = redirect_host(
        req.headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok()),
    )
    .map(str::to_string)
    .unwrap_or(fallback);
    let port = if https.port() == 443 {
        String::new()
    } else {
        format!(":{}", https.port())
    };
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = if target.starts_with('/') { target } else { "/" };
    let location = format!("https://{host}{port}{target}");
    Response::builder()
        .status(308)
        .header("location", location)
        .header("content-type", "application/json")
        .body(full(&br#"{"error":"https_required"}"#[..]))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_hosts_are_sanitised() {
        assert_eq!(redirect_host(Some("example.com:8080")), Some("example.com"));
        assert_eq!(redirect_host(Some("[::1]:8080")), Some("[::1]"));
        assert_eq!(redirect_host(Some("evil.com/x")), None);
        assert_eq!(redirect_host(Some("a\"b")), None);
        assert_eq!(redirect_host(None), None);
    }
}
