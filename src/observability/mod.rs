//! Logging set-up and the gateway's counters. Counters are plain atomics bumped on the request
//! path; `/metrics` renders them in the Prometheus text format. Never logs secrets: the access
//! log carries the canonical path only, never the query string or headers.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, LogFormat};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: 1xx..5xx, and 0 for none written.
    by_class: [AtomicU64; 6],
    denied: AtomicU64,
    csrf_failures: [AtomicU64; 4],
}

impl Metrics {
    pub fn record_request(&self, status: u16, denied: bool) {
        let class = (status / 100).min(5) as usize;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        if denied {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn csrf_failure(&self, f: crate::http::csrf::CsrfFailure) {
        self.csrf_failures[f as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests_total(&self) -> u64 {
        self.by_class
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Appends the request counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP portcullis_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE portcullis_requests_total counter\n");
        for (i, c) in self.by_class.iter().enumerate() {
            let class = if i == 0 {
                "none".to_string()
            } else {
                format!("{i}xx")
            };
            let _ = writeln!(
                out,
                "portcullis_requests_total{{class=\"{class}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP portcullis_denied_total Requests refused by the gateway.\n");
        out.push_str("# TYPE portcullis_denied_total counter\n");
        let _ = writeln!(
            out,
            "portcullis_denied_total {}",
            self.denied.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP portcullis_csrf_failures_total Unsafe requests refused by the CSRF check, by reason.\n",
        );
        out.push_str("# TYPE portcullis_csrf_failures_total counter\n");
        for f in crate::http::csrf::CsrfFailure::ALL {
            let _ = writeln!(
                out,
                "portcullis_csrf_failures_total{{reason=\"{}\"}} {}",
                f.reason(),
                self.csrf_failures[f as usize].load(Ordering::Relaxed)
            );
        }
    }
}

/// Installs the global tracing subscriber (pretty or JSON) and routes Pingora's `log` records
/// through it. Safe to call once; later calls are ignored.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
