//! OpenTelemetry over OTLP/HTTP against a receiver in the test (JSON encoding): a server span
//! per request continuing the client's `traceparent`, with route, decision and status; an
//! upstream child span whose context the upstream receives as `traceparent`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::upstream::TestUpstream;
use common::*;
use tokio::io::AsyncWriteExt;

/// An OTLP/HTTP receiver: records every span of every JSON export posted to `/v1/traces`.
async fn receiver() -> (
    u16,
    Arc<Mutex<Vec<serde_json::Value>>>,
    Arc<Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let services = Arc::new(Mutex::new(Vec::new()));
    let (s2, v2) = (spans.clone(), services.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (spans, services) = (s2.clone(), v2.clone());
            tokio::spawn(async move {
                // Keep-alive: one request after the other on the same connection.
                while let Some((head, body)) = read_request(&mut s).await {
                    assert!(head.starts_with("post /v1/traces "), "{head}");
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                        for a in rs["resource"]["attributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            if a["key"] == "service.name" {
                                services.lock().unwrap().push(
                                    a["value"]["stringValue"].as_str().unwrap_or("").to_string(),
                                );
                            }
                        }
                        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                            for sp in ss["spans"].as_array().into_iter().flatten() {
                                spans.lock().unwrap().push(sp.clone());
                            }
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                        .await;
                }
            });
        }
    });
    (port, spans, services)
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_receiver_and_traceparent_reaches_the_upstream() {
    let (otlp, spans, services) = receiver().await;
    let up = TestUpstream::start(0).await;
    let policy = format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{}"]

[[routes]]
name = "orders"
path_prefix = "/orders/"
upstream = "api"
public = true
"#,
        up.port
    );
    let g = Gateway::start(Options {
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{otlp}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/json".into()),
            ("OTEL_SERVICE_NAME".into(), "portcullis-test".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Options::with_policy(policy)
    })
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_parent = "00f067aa0ba902b7";
    let c = g.client(true);
    let r = c
        .get(g.url("/orders/42"))
        .header("traceparent", format!("00-{trace_id}-{client_parent}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(g.url("/terminal")).send().await.unwrap().status(),
        403
    );

    // The upstream got a traceparent in the same trace, naming the gateway's upstream span.
    let head = up.seen.lock().unwrap()[0].clone();
    let tp = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent upstream: {head}"))
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], trace_id, "{tp}");
    assert_ne!(
        parts[2], client_parent,
        "the gateway's own span, not the client's"
    );

    let (all, _) = eventually(Duration::from_secs(15), "spans exported", || async {
        let s = spans.lock().unwrap().clone();
        (s.len() >= 3).then_some(s)
    })
    .await;
    let server = all
        .iter()
        .find(|s| attr(s, "http.route").and_then(|v| v["stringValue"].as_str()) == Some("orders"))
        .unwrap_or_else(|| panic!("no server span for the route: {all:?}"));
    assert_eq!(server["traceId"], trace_id);
    assert_eq!(server["parentSpanId"], client_parent);
    assert_eq!(server["kind"], 2, "SERVER");
    assert_eq!(
        attr(server, "portcullis.decision").unwrap()["stringValue"],
        "allow"
    );
    assert_eq!(
        attr(server, "url.path").unwrap()["stringValue"],
        "/orders/42"
    );
    let upstream = all
        .iter()
        .find(|s| s["kind"] == 3)
        .unwrap_or_else(|| panic!("no client span: {all:?}"));
    assert_eq!(upstream["traceId"], trace_id);
    assert_eq!(upstream["parentSpanId"], server["spanId"]);
    assert_eq!(
        upstream["spanId"], parts[2],
        "the upstream saw the upstream span's id"
    );
    // The refused request has its span too, with the reason.
    let denied = all
        .iter()
        .find(|s| {
            attr(s, "portcullis.reason").and_then(|v| v["stringValue"].as_str())
                == Some("path_blocked")
        })
        .unwrap_or_else(|| panic!("no span for the blocked request: {all:?}"));
    assert_eq!(
        attr(denied, "portcullis.decision").unwrap()["stringValue"],
        "deny"
    );
    assert!(services
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == "portcullis-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_traced_and_traceparent_passes_through() {
    let up = TestUpstream::start(0).await;
    let policy = format!(
        "[[upstreams]]\nname = \"api\"\nkind = \"external\"\naddresses = [\"127.0.0.1:{}\"]\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"api\"\npublic = true\n",
        up.port
    );
    let g = Gateway::start(Options::with_policy(policy)).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = g
        .client(true)
        .get(g.url("/x"))
        .header("traceparent", tp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = up.seen.lock().unwrap()[0].clone();
    assert!(head.contains(&format!("traceparent: {tp}")), "{head}");
    assert!(!g.log().contains("OpenTelemetry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_https_trusts_the_ca_named_by_otel_exporter_otlp_certificate() {
    let ca = TestCa::new("OTLP HTTP test CA");
    let (cert, key) = ca.leaf(&["localhost"]);
    let collector = common::upstream::TlsTestUpstream::start(&cert, &key, false).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let up = TestUpstream::start(0).await;
    let policy = format!(
        "[[upstreams]]\nname = \"api\"\nkind = \"external\"\naddresses = [\"127.0.0.1:{}\"]\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"api\"\npublic = true\n",
        up.port
    );
    let g = Gateway::start(Options {
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
                format!("https://localhost:{}/v1/traces", collector.port),
            ),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
                ca_file.display().to_string(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Options::with_policy(policy)
    })
    .await;
    let r = g.client(true).get(g.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The collector only counts handshakes that verified: the private CA was trusted.
    eventually(Duration::from_secs(15), "an export over TLS", || async {
        (collector
            .handshakes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
        .then_some(())
    })
    .await;
    assert!(g.log().contains("http/protobuf"), "{}", g.log());
}
