//! Per-route request counters and latency histograms, authentication failures by reason, and
//! WebSocket sessions. A route's counters are created the first time it answers and found
//! through a read lock afterwards; everything else is an atomic add.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::trace::TraceId;

use super::exposition::{labels, one, Families, Histogram};

/// Histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// Observes `d`, with the request's trace id as the bucket's exemplar when it was traced.
fn observe(h: &Histogram, d: Duration, trace: Option<TraceId>) {
    h.observe(
        d.as_secs_f64(),
        trace.map(|t| vec![("trace_id", t.to_string())]),
        trace.map(|_| std::time::SystemTime::now()),
    );
}

#[derive(Debug)]
pub struct RouteStats {
    statuses: RwLock<Vec<(u16, AtomicU64)>>,
    pub latency: Histogram,
    pub upstream_latency: Histogram,
}

impl Default for RouteStats {
    fn default() -> RouteStats {
        RouteStats {
            statuses: RwLock::default(),
            latency: histogram(),
            upstream_latency: histogram(),
        }
    }
}

impl RouteStats {
    fn count(&self, status: u16) {
        {
            let s = self.statuses.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, c)) = s.iter().find(|(k, _)| *k == status) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut s = self.statuses.write().unwrap_or_else(|p| p.into_inner());
        match s.iter().find(|(k, _)| *k == status) {
            Some((_, c)) => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            None => s.push((status, AtomicU64::new(1))),
        }
    }
}

/// The auth-related refusals counted in `portcullis_auth_failures_total{reason}`.
pub const AUTH_REASONS: [&str; 14] = [
    "auth_missing",
    "auth_malformed",
    "auth_invalid",
    "auth_keys_unavailable",
    "capability_denied",
    "room_denied",
    "too_many_auth_failures",
    "client_certificate_required",
    "client_certificate_denied",
    "signature_invalid",
    "signature_expired",
    "signature_malformed",
    "signature_unknown_key",
    "admin_required",
];

/// Why the gateway closed WebSocket sessions, for `portcullis_websocket_closed_total{reason}`.
pub const WS_CLOSE_REASONS: [&str; 7] = [
    "policy_violation",
    "message_too_big",
    "protocol_error",
    "token_expired",
    "idle_timeout",
    "policy_revoked",
    "ended",
];

#[derive(Debug, Default)]
pub struct Detail {
    routes: RwLock<HashMap<Arc<str>, Arc<RouteStats>>>,
    auth_failures: [AtomicU64; 14],
    ws_open: AtomicI64,
    ws_closed: [AtomicU64; 7],
}

impl Detail {
    pub fn route(&self, name: &Arc<str>) -> Arc<RouteStats> {
        if let Some(r) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return r.clone();
        }
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// One answered request on `route` (`"-"` when none matched); `auth_failure` is the code of
    /// an authentication refusal, if it was one; `trace` its trace id, if it was traced (the
    /// latency buckets' exemplar).
    pub fn record(
        &self,
        route: &Arc<str>,
        status: u16,
        took: Duration,
        upstream: Option<Duration>,
        auth_failure: Option<&str>,
        trace: Option<TraceId>,
    ) {
        let r = self.route(route);
        r.count(status);
        observe(&r.latency, took, trace);
        if let Some(u) = upstream {
            observe(&r.upstream_latency, u, trace);
        }
        if let Some(code) = auth_failure {
            if let Some(i) = AUTH_REASONS.iter().position(|c| *c == code) {
                self.auth_failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn ws_open(&self) -> i64 {
        self.ws_open.load(Ordering::Relaxed).max(0)
    }

    pub fn ws_opened(&self) {
        self.ws_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended; `reason` is one of `WS_CLOSE_REASONS`.
    pub fn ws_closed(&self, reason: &str) {
        self.ws_open.fetch_sub(1, Ordering::Relaxed);
        let i = WS_CLOSE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(WS_CLOSE_REASONS.len() - 1);
        self.ws_closed[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn collect(&self, f: &mut Families) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&Arc<str>> = routes.keys().collect();
        names.sort();
        let mut requests = Vec::new();
        for n in &names {
            let s = routes[*n]
                .statuses
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for (status, c) in s.iter() {
                requests.push((
                    labels([("route", n), ("status", &status.to_string())]),
                    c.load(Ordering::Relaxed),
                ));
            }
        }
        f.counter(
            "portcullis_route_requests_total",
            "Requests answered, by route and status.",
            &requests,
        );
        let by_route = |h: fn(&RouteStats) -> &Histogram| -> Vec<(_, &Histogram)> {
            names
                .iter()
                .map(|n| (labels([("route", n)]), h(&routes[*n])))
                .collect()
        };
        f.histogram(
            "portcullis_request_duration_seconds",
            "Time from request head to the end of the answer, by route.",
            &by_route(|r| &r.latency),
        );
        f.histogram(
            "portcullis_upstream_duration_seconds",
            "Time from sending upstream to its response head, by route.",
            &by_route(|r| &r.upstream_latency),
        );
        f.counter(
            "portcullis_auth_failures_total",
            "Requests refused for authentication or authorization, by reason.",
            &AUTH_REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        labels([("reason", r)]),
                        self.auth_failures[i].load(Ordering::Relaxed),
                    )
                })
                .collect::<Vec<_>>(),
        );
        f.gauge(
            "portcullis_websocket_sessions",
            "Open WebSocket sessions.",
            &one(self.ws_open.load(Ordering::Relaxed).max(0)),
        );
        f.counter(
            "portcullis_websocket_closed_total",
            "WebSocket sessions ended, by reason.",
            &WS_CLOSE_REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        labels([("reason", r)]),
                        self.ws_closed[i].load(Ordering::Relaxed),
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::exposition::{render, Format};

    #[test]
    fn histograms_are_cumulative_and_traced_requests_leave_an_exemplar() {
        let d = Arc::new(Detail::default());
        let r: Arc<str> = "r".into();
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        d.record(&r, 200, Duration::from_micros(300), None, None, None);
        d.record(&r, 200, Duration::from_millis(3), None, None, Some(trace));
        d.record(&r, 503, Duration::from_secs(5), None, None, None);
        let d2 = d.clone();
        let out = render(Format::OpenMetrics, move |f| d2.collect(f)).unwrap();
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix}: {out}"))
                .to_string()
        };
        let b = "portcullis_request_duration_seconds_bucket";
        assert!(
            line(&format!("{b}{{le=\"0.0005\",route=\"r\"}}")).contains(" 1"),
            "{out}"
        );
        let traced = line(&format!("{b}{{le=\"0.005\",route=\"r\"}}"));
        assert!(
            traced.starts_with(&format!(
                "{b}{{le=\"0.005\",route=\"r\"}} 2 # {{trace_id=\"{trace}\"}} 0.003"
            )),
            "{traced}"
        );
        assert!(
            line(&format!("{b}{{le=\"+Inf\",route=\"r\"}}")).ends_with(" 3"),
            "{out}"
        );
        assert!(
            out.contains("portcullis_request_duration_seconds_count{route=\"r\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("portcullis_route_requests_total{route=\"r\",status=\"503\"} 1"),
            "{out}"
        );
        let text = render(Format::PrometheusText, move |f| d.collect(f)).unwrap();
        assert!(!text.contains("trace_id"), "{text}");
    }
}
