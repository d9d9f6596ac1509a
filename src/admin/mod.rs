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
use crate::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
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
    serde_json::json!({
        "mode": shared.config.mode.as_str(),
        "ready": shared.ready.load(Ordering::Acquire),
        "policy": {
            "generation": policy.generation,
            "sources": policy.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "routes": policy.routes.iter().map(|r| r.name.to_string()).collect::<Vec<_>>(),
            "last_reload_error": shared.policy.last_error(),
        },
        "certificates": certs.entries.iter().map(|e| serde_json::json!({
            "name": e.name, "names": e.names, "not_after": e.not_after,
        })).collect::<Vec<_>>(),
        "in_flight": shared.in_flight.load(Ordering::Relaxed),
    })
}

fn render_metrics(shared: &Shared) -> String {
    let mut out = String::with_capacity(2048);
    shared.metrics.render(&mut out);
    let p = &shared.policy;
    let _ = writeln!(
        out,
        "# HELP portcullis_policy_generation Generation of the running policy."
    );
    let _ = writeln!(out, "# TYPE portcullis_policy_generation gauge");
    let _ = writeln!(out, "portcullis_policy_generation {}", p.generation());
    let _ = writeln!(
        out,
        "# HELP portcullis_policy_reloads_total Policy reloads by result."
    );
    let _ = writeln!(out, "# TYPE portcullis_policy_reloads_total counter");
    let _ = writeln!(
        out,
        "portcullis_policy_reloads_total{{result=\"ok\"}} {}",
        p.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "portcullis_policy_reloads_total{{result=\"error\"}} {}",
        p.reloads_failed.load(Ordering::Relaxed)
    );
    let c = &shared.certs;
    let _ = writeln!(
        out,
        "# HELP portcullis_cert_reloads_total Certificate folder reloads by result."
    );
    let _ = writeln!(out, "# TYPE portcullis_cert_reloads_total counter");
    let _ = writeln!(
        out,
        "portcullis_cert_reloads_total{{result=\"ok\"}} {}",
        c.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "portcullis_cert_reloads_total{{result=\"error\"}} {}",
        c.reloads_failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_in_flight_requests Requests being handled."
    );
    let _ = writeln!(out, "# TYPE portcullis_in_flight_requests gauge");
    let _ = writeln!(
        out,
        "portcullis_in_flight_requests {}",
        shared.in_flight.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP portcullis_room_overflows_total Room peer queues found full; their backlog is dropped.");
    let _ = writeln!(out, "# TYPE portcullis_room_overflows_total counter");
    let _ = writeln!(
        out,
        "portcullis_room_overflows_total {}",
        shared.rooms.overflows.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP portcullis_room_resyncs_total Room peers told to resync after their queue overflowed.");
    let _ = writeln!(out, "# TYPE portcullis_room_resyncs_total counter");
    let _ = writeln!(
        out,
        "portcullis_room_resyncs_total {}",
        shared.rooms.resyncs.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_room_slow_closes_total Room peers closed with 1013 for not reading."
    );
    let _ = writeln!(out, "# TYPE portcullis_room_slow_closes_total counter");
    let _ = writeln!(
        out,
        "portcullis_room_slow_closes_total {}",
        shared.rooms.slow_closes.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_rate_limited_total Requests refused by a rate limit."
    );
    let _ = writeln!(out, "# TYPE portcullis_rate_limited_total counter");
    let stats = shared.limiters.stats();
    for (name, _, limited, _) in &stats {
        let _ = writeln!(
            out,
            "portcullis_rate_limited_total{{limit=\"{name}\"}} {limited}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP portcullis_rate_limit_keys Distinct keys a limit holds (bounded by its max_keys)."
    );
    let _ = writeln!(out, "# TYPE portcullis_rate_limit_keys gauge");
    for (name, keys, _, _) in &stats {
        let _ = writeln!(out, "portcullis_rate_limit_keys{{limit=\"{name}\"}} {keys}");
    }
    let _ = writeln!(out, "# HELP portcullis_rate_limit_overflow_total Requests counted in a limit's shared overflow bucket.");
    let _ = writeln!(out, "# TYPE portcullis_rate_limit_overflow_total counter");
    for (name, _, _, overflow) in &stats {
        let _ = writeln!(
            out,
            "portcullis_rate_limit_overflow_total{{limit=\"{name}\"}} {overflow}"
        );
    }
    let _ = writeln!(out, "# HELP portcullis_auth_lockouts_total Lockouts started after repeated authentication failures.");
    let _ = writeln!(out, "# TYPE portcullis_auth_lockouts_total counter");
    let _ = writeln!(
        out,
        "portcullis_auth_lockouts_total {}",
        shared.backoff.lockouts.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_connections_refused_total Connections dropped by a connection cap."
    );
    let _ = writeln!(out, "# TYPE portcullis_connections_refused_total counter");
    let _ = writeln!(
        out,
        "portcullis_connections_refused_total {}",
        shared.connections.refused.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP portcullis_slow_clients_cut_total Connections cut for not sending a request header in time.");
    let _ = writeln!(out, "# TYPE portcullis_slow_clients_cut_total counter");
    let _ = writeln!(
        out,
        "portcullis_slow_clients_cut_total {}",
        shared.header_deadline.cut.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_connections Connections open on the HTTPS listener."
    );
    let _ = writeln!(out, "# TYPE portcullis_connections gauge");
    let _ = writeln!(
        out,
        "portcullis_connections {}",
        shared.connections.total.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP portcullis_circuit_open Whether an upstream address's circuit is open (1) or closed (0).");
    let _ = writeln!(out, "# TYPE portcullis_circuit_open gauge");
    for (u, a, open) in shared.resilience.open_circuits() {
        let _ = writeln!(
            out,
            "portcullis_circuit_open{{upstream=\"{u}\",address=\"{a}\"}} {}",
            open as u8
        );
    }
    let a = &shared.auth;
    let _ = writeln!(out, "# HELP portcullis_token_signature_checks_total Token signatures verified (cache misses reaching the crypto).");
    let _ = writeln!(
        out,
        "# TYPE portcullis_token_signature_checks_total counter"
    );
    let _ = writeln!(
        out,
        "portcullis_token_signature_checks_total {}",
        a.stats.signature_checks.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_token_cache_total Verified-token cache lookups by result."
    );
    let _ = writeln!(out, "# TYPE portcullis_token_cache_total counter");
    let _ = writeln!(
        out,
        "portcullis_token_cache_total{{result=\"hit\"}} {}",
        a.cache.hits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "portcullis_token_cache_total{{result=\"miss\"}} {}",
        a.cache.misses.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP portcullis_jwks_fetches_total JWKS fetches by result."
    );
    let _ = writeln!(out, "# TYPE portcullis_jwks_fetches_total counter");
    for c in a.jwks.all() {
        let total = c.fetches.load(Ordering::Relaxed);
        let failed = c.fetch_failures.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "portcullis_jwks_fetches_total{{url=\"{}\",result=\"ok\"}} {}",
            c.url(),
            total - failed
        );
        let _ = writeln!(
            out,
            "portcullis_jwks_fetches_total{{url=\"{}\",result=\"error\"}} {}",
            c.url(),
            failed
        );
    }
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

/// The plain-HTTP listener: every request gets a 308 to the same path on HTTPS.
pub async fn redirect(https: SocketAddr, req: Request<Incoming>) -> Response<Body> {
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
