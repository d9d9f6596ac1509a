//! `/metrics` in valid Prometheus exposition format (parsed with `prometheus-parse`), with the
//! counters moving for each kind of event: requests by route and status, latency histograms,
//! authentication failures by reason, WebSocket sessions opened and closed.

mod common;

use common::*;
use prometheus_parse::{Scrape, Value};
use std::time::Duration;

const TOKEN: &str = "metrics-test-worker-token-0123456789";

async fn scrape(g: &Gateway) -> Scrape {
    let text = g.metrics().await;
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format")
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_for_each_event_in_valid_exposition_format() {
    let policy = DEFAULT_POLICY.edit(
        "capabilities = [\"policy.admin\"]",
        "capabilities = [\"policy.admin\"]\nauth = \"static\"",
    );
    assert_ne!(policy, DEFAULT_POLICY);
    let g = Gateway::start(Options {
        env: vec![("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into())],
        ..Options::with_policy(policy)
    })
    .await;
    let before = scrape(&g).await;
    assert_eq!(value(&before, "portcullis_websocket_sessions", &[]), 0.0);

    let c = g.client(true);
    for _ in 0..3 {
        assert_eq!(
            c.get(g.url("/v1/models")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        c.get(g.url("/terminal")).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        c.get(g.url("/admin/collections"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(g.url("/admin/collections"))
            .header("authorization", "Token nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(g.url("/admin/collections"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A WebSocket session: counted open while it lives, closed after.
    let mut ws = common::ws::open(&g, "localhost", "/rooms/lobby/ws", None, false)
        .await
        .unwrap();
    let during = scrape(&g).await;
    assert_eq!(value(&during, "portcullis_websocket_sessions", &[]), 1.0);
    ws.close(None).await.unwrap();
    drop(ws);
    let (after, _) = eventually(Duration::from_secs(5), "session closed", || async {
        let s = scrape(&g).await;
        (value(&s, "portcullis_websocket_sessions", &[]) == 0.0).then_some(s)
    })
    .await;

    let route = |r: &str, status: &str| {
        value(
            &after,
            "portcullis_route_requests_total",
            &[("route", r), ("status", status)],
        )
    };
    assert_eq!(route("models", "200"), 3.0);
    assert_eq!(route("-", "403"), 1.0, "a blocked path matches no route");
    assert_eq!(route("admin", "401"), 2.0);
    assert_eq!(route("admin", "200"), 1.0);
    assert_eq!(route("rooms", "101"), 1.0);
    assert_eq!(
        value(
            &after,
            "portcullis_auth_failures_total",
            &[("reason", "auth_missing")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "portcullis_auth_failures_total",
            &[("reason", "auth_malformed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "portcullis_websocket_closed_total",
            &[("reason", "ended")]
        ),
        1.0
    );
    // Histograms: every models request observed; upstream timing only for proxied ones.
    let count = |name: &str, r: &str| {
        after
            .samples
            .iter()
            .find(|x| x.metric == name && x.labels.get("route") == Some(r))
            .map(|x| match &x.value {
                Value::Histogram(h) => h.last().map(|c| c.count).unwrap_or(0.0),
                _ => -1.0,
            })
            .unwrap_or(-2.0)
    };
    assert_eq!(count("portcullis_request_duration_seconds", "models"), 3.0);
    assert_eq!(count("portcullis_upstream_duration_seconds", "models"), 3.0);
    assert_eq!(count("portcullis_upstream_duration_seconds", "-"), 0.0);
    // The totals by class still add up.
    assert!(value(&after, "portcullis_requests_total", &[("class", "2xx")]) >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_token_opens_metrics_and_nothing_else() {
    const METRICS_TOKEN: &str = "scraper-only-token-0123456789abcdefgh";
    let port = free_port();
    let policy = DEFAULT_POLICY.edit(
        "capability = \"policy.admin\"\n",
        "capability = \"policy.admin\"\nmetrics_token = \"env:PORTCULLIS_TEST_METRICS_TOKEN\"\n",
    );
    assert_ne!(
        policy, DEFAULT_POLICY,
        "the default policy has an [admin] section"
    );
    let g = Gateway::start(Options {
        env: vec![
            ("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into()),
            ("PORTCULLIS_ADMIN_ADDR".into(), format!("0.0.0.0:{port}")),
            ("PORTCULLIS_TEST_METRICS_TOKEN".into(), METRICS_TOKEN.into()),
            ("AUTH_PROVIDER".into(), "static".into()),
        ],
        ..Options::with_policy(policy)
    })
    .await;
    // The admin listener speaks HTTP/1.1 only.
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = c.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap() }
    };
    let r = get("/metrics", Some(METRICS_TOKEN)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format");
    assert!(text.contains("portcullis_policy_generation"));
    for path in ["/status", "/status.html", "/", "/metrics/", "/metrics?x=1"] {
        let expected = if path == "/metrics?x=1" { 200 } else { 401 };
        assert_eq!(
            get(path, Some(METRICS_TOKEN)).await.status(),
            expected,
            "{path} with the metrics token"
        );
    }
    assert_eq!(get("/metrics", None).await.status(), 401);
    assert_eq!(
        get("/metrics", Some("scraper-only-token-0123456789abcdefgX"))
            .await
            .status(),
        401
    );
    // The worker token still opens everything.
    for path in ["/metrics", "/status"] {
        assert_eq!(get(path, Some(TOKEN)).await.status(), 200, "{path}");
    }
    // It is not a credential on the HTTPS listener.
    let r = g
        .client(true)
        .get(g.url("/v1/models"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// With tracing on, an OpenMetrics scrape links each latency bucket to the trace of a request
/// that fell in it: the exemplar's `trace_id` is the trace the client started. The classic text
/// format, which has no exemplars, is served to everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_scrapes_carry_the_request_trace_id_as_an_exemplar() {
    // Nothing listens on the collector's port: exports fail, and requests do not notice.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let g = Gateway::start(Options {
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector)],
        ..Options::default()
    })
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = g
        .client(true)
        .get(g.url("/whoami"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = reqwest::Client::new()
        .get(format!("http://{}/metrics", g.admin))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = r.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    let exemplar = format!("# {{trace_id=\"{trace_id}\"}}");
    let bucket = om
        .lines()
        .find(|l| {
            l.starts_with("portcullis_request_duration_seconds_bucket") && l.contains(&exemplar)
        })
        .unwrap_or_else(|| panic!("no latency bucket carries {exemplar}:\n{om}"));
    assert!(bucket.contains("route=\"whoami\""), "{bucket}");

    let text = g.metrics().await;
    assert!(
        !text.contains("trace_id") && !text.contains("# EOF"),
        "{text}"
    );
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format");
}
