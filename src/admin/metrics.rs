//! `/metrics`: every family the gateway exposes, collected at scrape time from the handles'
//! atomics and encoded by prometheus-client ([`crate::observability::exposition`]). Family
//! names are an interface: dashboards and `examples/prometheus/rules.yml` rely on them, so a
//! rename is listed in CHANGELOG.md.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::handles::Shared;
use crate::observability::exposition::{self, labels, one, Families, Format, Labels};

/// The whole exposition, in `format`.
pub(super) fn render(shared: &Arc<Shared>, format: Format) -> Result<String, std::fmt::Error> {
    let shared = shared.clone();
    exposition::render(format, move |f| collect(&shared, f))
}

/// One family of integer samples: a counter, or a gauge.
fn family(o: &mut Families, name: &str, kind: &str, help: &str, samples: &[(Labels, u64)]) {
    if kind == "counter" {
        o.counter(name, help, samples);
    } else {
        let samples: Vec<(Labels, i64)> = samples
            .iter()
            .map(|(l, v)| (l.clone(), i64::try_from(*v).unwrap_or(i64::MAX)))
            .collect();
        o.gauge(name, help, &samples);
    }
}

fn collect(shared: &Shared, o: &mut Families) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    shared.metrics.collect(o);
    let now = crate::auth::now_unix() as i64;
    o.gauge(
        "portcullis_certificate_expiry_timestamp_seconds",
        "When each served certificate expires (notAfter, Unix seconds).",
        &shared
            .certs
            .snapshot()
            .entries
            .iter()
            .map(|e| (labels([("name", &e.name)]), e.not_after))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "portcullis_ocsp_staple_age_seconds",
        "Age of the served OCSP staple (since its thisUpdate), per certificate.",
        &shared
            .stapler
            .info()
            .into_iter()
            .filter_map(|i| match (i.stapled, i.this_update) {
                (true, Some(t)) => Some((labels([("name", &i.name)]), now - t)),
                _ => None,
            })
            .collect::<Vec<_>>(),
    );
    family(
        o,
        "portcullis_ocsp_events_total",
        "counter",
        "OCSP refresh outcomes: good, revoked, unknown, fetch_error, invalid, expired.",
        &shared
            .stapler
            .events()
            .into_iter()
            .map(|(e, n)| (labels([("event", e)]), n))
            .collect::<Vec<_>>(),
    );
    if let Some(a) = &shared.acme {
        family(
            o,
            "portcullis_acme_orders_total",
            "counter",
            "ACME certificate orders, by result (issued, failed).",
            &[
                (labels([("result", "issued")]), load(&a.stats.issued)),
                (labels([("result", "failed")]), load(&a.stats.failed)),
            ],
        );
        family(
            o,
            "portcullis_acme_certificates_loaded_total",
            "counter",
            "ACME certificates served from storage at start, without a new order.",
            &[(Vec::new(), load(&a.stats.loaded_from_storage))],
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
            (labels([("result", "ok")]), load(&p.reloads_ok)),
            (labels([("result", "error")]), load(&p.reloads_failed)),
        ],
    );
    let c = &shared.certs;
    family(
        o,
        "portcullis_cert_reloads_total",
        "counter",
        "Certificate folder reloads by result.",
        &[
            (labels([("result", "ok")]), load(&c.reloads_ok)),
            (labels([("result", "error")]), load(&c.reloads_failed)),
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
    let per_limit = |f: &dyn Fn(&crate::limits::rate::LimitStat) -> u64| -> Vec<(Labels, u64)> {
        stats
            .iter()
            .map(|s| (labels([("limit", s.0.as_ref())]), f(s)))
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
            (labels([("mode", "fail_open")]), load(&st.fallback_open)),
            (labels([("mode", "fail_closed")]), load(&st.fallback_closed)),
        ],
    );
    family(
        o,
        "portcullis_shared_state_reconnects_total",
        "counter",
        "Connections to the shared store made again after one ended: a failover, a restart, a cut.",
        &one(load(&st.reconnects)),
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
    let circuits: Vec<(Labels, u64)> = shared
        .resilience
        .open_circuits()
        .into_iter()
        .map(|(u, a, open)| {
            (
                labels([("upstream", &u.to_string()), ("address", &a.to_string())]),
                open as u64,
            )
        })
        .collect();
    family(
        o,
        "portcullis_circuit_open",
        "gauge",
        "Whether an upstream address's circuit is open (1) or closed (0).",
        &circuits,
    );
    let budgets = shared.resilience.retry_budgets();
    let mut connections = Vec::new();
    for (name, b) in &budgets {
        connections.push((
            labels([("upstream", name), ("reused", "false")]),
            load(&b.opened),
        ));
        connections.push((
            labels([("upstream", name), ("reused", "true")]),
            load(&b.reused),
        ));
    }
    family(
        o,
        "portcullis_upstream_connections_total",
        "counter",
        "Upstream connections requests were sent on (a retried request counts each attempt): opened for the request (reused false) or taken from the idle pool (reused true).",
        &connections,
    );
    let mut retries = Vec::new();
    for (name, b) in budgets {
        retries.push((
            labels([("upstream", &name), ("result", "sent")]),
            load(&b.sent),
        ));
        retries.push((
            labels([("upstream", &name), ("result", "budget_exhausted")]),
            load(&b.exhausted),
        ));
    }
    family(
        o,
        "portcullis_upstream_retries_total",
        "counter",
        "Requests sent again after a reused upstream connection failed before the response (sent), and those the retry budget refused (budget_exhausted).",
        &retries,
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
            (labels([("result", "hit")]), load(&a.cache.hits)),
            (labels([("result", "miss")]), load(&a.cache.misses)),
        ],
    );
    let mut jwks = Vec::new();
    for c in a.jwks.all() {
        let (total, failed) = (load(&c.fetches), load(&c.fetch_failures));
        jwks.push((labels([("url", c.url()), ("result", "ok")]), total - failed));
        jwks.push((labels([("url", c.url()), ("result", "error")]), failed));
    }
    family(
        o,
        "portcullis_jwks_fetches_total",
        "counter",
        "JWKS fetches by result.",
        &jwks,
    );
}
