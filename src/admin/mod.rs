//! The admin listener (loopback by default): `/health`, `/ready`, `/metrics` and a JSON status
//! page, plus the plain-HTTP listener that answers every request with a 308 to HTTPS. Reads
//! gateway state; never changes policy or certificates.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::backends::{full, json, Body};
use crate::handles::Shared;
use crate::observability::exposition::Format;

mod metrics;
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
        "/metrics" => {
            let format = Format::from_accept(
                req.headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            match metrics::render(&shared, format) {
                Ok(text) => Response::builder()
                    .status(200)
                    .header("content-type", format.content_type())
                    .body(full(text))
                    .expect("valid response"),
                Err(e) => {
                    tracing::error!(error = %e, "rendering /metrics failed");
                    json(500, &serde_json::json!({"error": "metrics_unavailable"}))
                }
            }
        }
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
        return match c.http01_anywhere(token).await {
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
