//! Per-route request counters and latency histograms, authentication failures by reason, and
//! WebSocket sessions. A route's counters are created the first time it answers and found
//! through a read lock afterwards; everything else is an atomic add.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last is +Inf.
    buckets: [AtomicU64; 13],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {}",
            self.count.load(Ordering::Relaxed)
        );
    }
}

#[derive(Debug, Default)]
pub struct RouteStats {
    statuses: RwLock<Vec<(u16, AtomicU64)>>,
    pub latency: Histogram,
    pub upstream_latency: Histogram,
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
    /// an authentication refusal, if it was one.
    pub fn record(
        &self,
        route: &Arc<str>,
        status: u16,
        took: Duration,
        upstream: Option<Duration>,
        auth_failure: Option<&str>,
    ) {
        let r = self.route(route);
        r.count(status);
        r.latency.observe(took);
        if let Some(u) = upstream {
            r.upstream_latency.observe(u);
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

    pub fn render(&self, out: &mut String) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&Arc<str>> = routes.keys().collect();
        names.sort();
        out.push_str(
            "# HELP portcullis_route_requests_total Requests answered, by route and status.\n",
        );
        out.push_str("# TYPE portcullis_route_requests_total counter\n");
        for n in &names {
            let s = routes[*n]
                .statuses
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for (status, c) in s.iter() {
                let _ = writeln!(
                    out,
                    "portcullis_route_requests_total{{route=\"{n}\",status=\"{status}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP portcullis_request_duration_seconds Time from request head to the end of the answer, by route.\n");
        out.push_str("# TYPE portcullis_request_duration_seconds histogram\n");
        for n in &names {
            routes[*n].latency.render(
                out,
                "portcullis_request_duration_seconds",
                &format!("route=\"{n}\""),
            );
        }
        out.push_str("# HELP portcullis_upstream_duration_seconds Time from sending upstream to its response head, by route.\n");
        out.push_str("# TYPE portcullis_upstream_duration_seconds histogram\n");
        for n in &names {
            routes[*n].upstream_latency.render(
                out,
                "portcullis_upstream_duration_seconds",
                &format!("route=\"{n}\""),
            );
        }
        out.push_str("# HELP portcullis_auth_failures_total Requests refused for authentication or authorization, by reason.\n");
        out.push_str("# TYPE portcullis_auth_failures_total counter\n");
        for (i, r) in AUTH_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "portcullis_auth_failures_total{{reason=\"{r}\"}} {}",
                self.auth_failures[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP portcullis_websocket_sessions Open WebSocket sessions.\n");
        out.push_str("# TYPE portcullis_websocket_sessions gauge\n");
        let _ = writeln!(
            out,
            "portcullis_websocket_sessions {}",
            self.ws_open.load(Ordering::Relaxed).max(0)
        );
        out.push_str(
            "# HELP portcullis_websocket_closed_total WebSocket sessions ended, by reason.\n",
        );
        out.push_str("# TYPE portcullis_websocket_closed_total counter\n");
        for (i, r) in WS_CLOSE_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "portcullis_websocket_closed_total{{reason=\"{r}\"}} {}",
                self.ws_closed[i].load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"r\"");
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.0005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"r\",le=\"0.005\"} 2"),
            "{out}"
        );
        assert!(out.contains("x_bucket{route=\"r\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count{route=\"r\"} 3"), "{out}");
    }
}
