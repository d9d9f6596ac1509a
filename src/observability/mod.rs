//! Logging set-up and the gateway's counters. Counters are plain atomics bumped on the request
//! path; `/metrics` hands them to the prometheus-client encoders ([`exposition`]). Never logs secrets: the access
//! log carries the canonical path only, never the query string or headers.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, LogFormat};
use exposition::{labels, one, Families};

pub mod access;
pub mod alerts;
pub mod batch;
pub mod exposition;
pub mod handshakes;
pub mod otel;
pub mod otlp;
pub use crate::redact;
pub mod routes;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: 1xx..5xx, and 0 for none written.
    by_class: [AtomicU64; 6],
    denied: AtomicU64,
    csrf_failures: [AtomicU64; 4],
    shadow_denials: AtomicU64,
    /// Responses aborted after they had started (the client sees them incomplete).
    aborted: AtomicU64,
    /// Per-route counters and histograms, auth failures, WebSocket sessions.
    pub detail: routes::Detail,
}

impl Metrics {
    pub fn record_request(&self, status: u16, denied: bool) {
        let class = (status / 100).min(5) as usize;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        if denied {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A response was aborted after its head had gone out.
    pub fn response_aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    /// A shadow rule would have refused a request.
    pub fn shadow_denial(&self) {
        self.shadow_denials.fetch_add(1, Ordering::Relaxed);
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

    /// The request counters, for a scrape.
    pub fn collect(&self, f: &mut Families) {
        self.detail.collect(f);
        if let Some(h) = alerts::hub() {
            f.counter(
                "portcullis_security_events_total",
                "Security events, by kind.",
                &h.counts()
                    .into_iter()
                    .map(|(k, n)| (labels([("event", k)]), n))
                    .collect::<Vec<_>>(),
            );
            f.counter(
                "portcullis_alerts_total",
                "Alerts by delivery result; dropped = events lost to a full queue.",
                &[
                    ("sent", &h.alerts_sent),
                    ("failed", &h.alerts_failed),
                    ("events_dropped", &h.dropped),
                ]
                .map(|(k, a)| (labels([("result", k)]), a.load(Ordering::Relaxed))),
            );
        }
        f.counter(
            "portcullis_requests_total",
            "Requests answered, by status class.",
            &self
                .by_class
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let class = if i == 0 {
                        "none".to_string()
                    } else {
                        format!("{i}xx")
                    };
                    (labels([("class", &class)]), c.load(Ordering::Relaxed))
                })
                .collect::<Vec<_>>(),
        );
        f.counter(
            "portcullis_denied_total",
            "Requests refused by the gateway.",
            &one(self.denied.load(Ordering::Relaxed)),
        );
        f.counter(
            "portcullis_responses_aborted_total",
            "Responses aborted after they had started, when the upstream failed mid-response: the client sees them incomplete (HTTP/2 stream reset, HTTP/1.1 connection closed).",
            &one(self.aborted.load(Ordering::Relaxed)),
        );
        f.counter(
            "portcullis_shadow_denials_total",
            "Requests a shadow rule would have refused (not enforced).",
            &one(self.shadow_denials.load(Ordering::Relaxed)),
        );
        f.counter(
            "portcullis_csrf_failures_total",
            "Unsafe requests refused by the CSRF check, by reason.",
            &crate::http::csrf::CsrfFailure::ALL.map(|r| {
                (
                    labels([("reason", r.reason())]),
                    self.csrf_failures[r as usize].load(Ordering::Relaxed),
                )
            }),
        );
        f.counter(
            "portcullis_tls_handshake_failures_total",
            "Failed TLS handshakes on the HTTPS listener, by reason.",
            &handshakes::Reason::ALL.map(|r| {
                (
                    labels([("reason", r.as_str())]),
                    handshakes::FAILURES[r as usize].load(Ordering::Relaxed),
                )
            }),
        );
    }
}

/// Installs the global tracing subscriber (pretty or JSON) and routes Pingora's `log` records
/// through it. Safe to call once; later calls are ignored.
/// Writes out every buffered log line; call before the process exits.
pub fn flush_logs() {
    batch::BatchWriter::get().flush();
}

pub fn init_logging(config: &Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Every line passes the redaction writer: no secret reaches the log, whoever wrote it. Lines
    // are redacted and written in batches by the log thread (`batch`): no request waits on it.
    let fmt = tracing_subscriber::fmt::layer().with_writer(batch::BatchWriter::get());
    access::set_json(matches!(config.log_format, LogFormat::Json));
    let fmt = match config.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    // Pingora's listener lines are rewritten by `ListenerEvents` (below), not printed as is.
    let fmt = fmt.with_filter(NotListenerEvents);
    let most_verbose = filter.max_level_hint();
    // `ListenerEvents` comes last, so it rewrites a line after the formatter has skipped it.
    // It carries a filter of its own (one that passes everything): a layer without one above a
    // filtered layer makes `tracing-subscriber` ask again at every call of a callsite the level
    // filter turned off, in case that layer wants it. Each of the h2 crate's per-frame
    // `trace!` lines then cost a walk of the layers, 1.2% of the gateway's CPU under HTTP/2.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(ListenerEvents.with_filter(tracing_subscriber::filter::LevelFilter::TRACE))
        .try_init();
    // The per-layer filters leave the subscriber without a level hint, so `try_init` lets every
    // `log` record through to be judged by the filter: Pingora's per-request `debug!` and
    // `trace!` lines each cost a dispatcher lookup. Records the filter would drop anyway are
    // dropped where they are written instead.
    if let Some(level) = most_verbose {
        use tracing_log::AsLog;
        tracing_log::log::set_max_level(level.as_log());
    }
}

const PINGORA_LISTENER: &str = "pingora_core::services::listening";

/// Whether an event is one of Pingora's listener lines. Pingora logs through `log`; such events
/// carry their real target only once normalized.
fn is_listener_event(event: &tracing::Event<'_>) -> bool {
    use tracing_log::NormalizeEvent;
    match event.normalized_metadata() {
        Some(m) => m.target() == PINGORA_LISTENER,
        None => event.metadata().target() == PINGORA_LISTENER,
    }
}

/// A per-layer filter keeping Pingora's listener lines out of the formatted log.
struct NotListenerEvents;

impl<S> tracing_subscriber::layer::Filter<S> for NotListenerEvents {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !is_listener_event(event)
    }
}

/// Turns Pingora's listener log lines into events of our own: a failed TLS handshake becomes a
/// counted, classified event with the client address and SNI (target `portcullis::tls`), other
/// listener errors pass through under `portcullis::listener`.
struct ListenerEvents;

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ListenerEvents {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if !is_listener_event(event) {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        use crate::observability::handshakes::{
            classify, count, parse_pingora_line, sni_of, Reason,
        };
        match parse_pingora_line(&m.0) {
            Some((peer, error)) => {
                let reason = classify(error);
                count(reason);
                let sni = peer.as_ref().and_then(sni_of);
                let client = peer.map(|p| p.ip().to_string()).unwrap_or_default();
                let sni = sni.as_deref().unwrap_or("-");
                if matches!(reason, Reason::Closed | Reason::Timeout) {
                    tracing::info!(target: "portcullis::tls", reason = reason.as_str(), client, sni, error, "TLS handshake failed");
                } else {
                    tracing::warn!(target: "portcullis::tls", reason = reason.as_str(), client, sni, error, "TLS handshake failed");
                }
            }
            // Anything else keeps Pingora's own level: a listener stopping at shutdown is news,
            // not a fault, and only faults may page an operator.
            None => {
                use tracing_log::NormalizeEvent;
                let level = event
                    .normalized_metadata()
                    .map(|m| *m.level())
                    .unwrap_or(*event.metadata().level());
                match level {
                    tracing::Level::ERROR => {
                        tracing::error!(target: "portcullis::listener", "{}", m.0)
                    }
                    tracing::Level::WARN => {
                        tracing::warn!(target: "portcullis::listener", "{}", m.0)
                    }
                    tracing::Level::INFO => {
                        tracing::info!(target: "portcullis::listener", "{}", m.0)
                    }
                    tracing::Level::DEBUG => {
                        tracing::debug!(target: "portcullis::listener", "{}", m.0)
                    }
                    tracing::Level::TRACE => {
                        tracing::trace!(target: "portcullis::listener", "{}", m.0)
                    }
                }
            }
        }
    }
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-12-02T10:00:00Z`).
pub fn format_unix(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs.min(253_402_300_799) as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
