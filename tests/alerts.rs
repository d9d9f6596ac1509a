//! Alert rules over the security-event stream, against a real webhook receiver on loopback:
//! exactly one alert per breach window, a retry after a 500, and requests unaffected while the
//! webhook hangs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "alerts-test-worker-token-0123456789";

/// A webhook receiver: records each POSTed JSON body; answers 500 to the first `fail_first`
/// requests, then 200; with `hang`, never answers at all.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start(fail_first: usize, hang: bool) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b2 = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let bodies = b2.clone();
                tokio::spawn(async move {
                    let Some((_, body)) = read_request(&mut s).await else {
                        return;
                    };
                    let n = {
                        let mut b = bodies.lock().unwrap();
                        b.push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                        b.len()
                    };
                    if hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let status = if n <= fail_first {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let _ = s
                        .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                        .await;
                });
            }
        });
        Hook { port, bodies, task }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn policy(rules: &str) -> String {
    format!(
        r#"
[auth]
default_provider = "static"
backoff = {{ max_failures = 0 }}

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "api"
path_prefix = "/v1/"
upstream = "worker"

{rules}
"#
    )
}

/// A gateway with `rules`, their webhook pointing at `hook`.
async fn start(hook: &Hook, rules: &str) -> Gateway {
    Gateway::start(Options {
        env: vec![
            ("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into()),
            (
                "ALERT_HOOK".into(),
                format!("http://127.0.0.1:{}/hook", hook.port),
            ),
        ],
        ..Options::with_policy(policy(rules))
    })
    .await
}

async fn fail_auth(g: &Gateway, n: usize) -> Duration {
    let c = g.client(true);
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let r = c
            .get(g.url("/v1/models"))
            .bearer_auth("wrong-token-0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_per_breach_window_delivered_after_a_retry() {
    let hook = Hook::start(1, false).await;
    let rules = r#"
[[alerts]]
name = "auth-failures"
event = "auth_failure"
threshold = 3
window_seconds = 4
webhook = "env:ALERT_HOOK"
"#;
    let g = start(&hook, rules).await;
    let window_start = Instant::now();
    // The gateway's window opens with the first failure it logs, after that request's answer:
    // the next window is timed from when the first 401 arrived.
    fail_auth(&g, 1).await;
    let window_opened = Instant::now();
    fail_auth(&g, 9).await;
    // The first POST gets a 500; the same alert comes again and is taken.
    let (bodies, _) = eventually(Duration::from_secs(10), "the retried alert", || async {
        let b = hook.bodies();
        (b.len() >= 2).then_some(b)
    })
    .await;
    assert_eq!(bodies[0]["id"], bodies[1]["id"], "{bodies:?}");
    assert_eq!(bodies[0]["alert"], "auth-failures");
    assert_eq!(bodies[0]["event"], "auth_failure");
    assert_eq!(bodies[0]["count"], 4);
    assert_eq!(bodies[0]["scope"], "global");
    // More failures in the same window: no second alert.
    fail_auth(&g, 5).await;
    assert!(
        window_start.elapsed() < Duration::from_secs(4),
        "the test ran too slowly to judge"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.bodies().len(), 2, "{:?}", hook.bodies());

    // The next window breaches again: one new alert.
    tokio::time::sleep(
        Duration::from_secs(4).saturating_sub(window_opened.elapsed()) + Duration::from_millis(200),
    )
    .await;
    fail_auth(&g, 5).await;
    let (bodies, _) = eventually(
        Duration::from_secs(10),
        "the second window's alert",
        || async {
            let b = hook.bodies();
            (b.len() >= 3).then_some(b)
        },
    )
    .await;
    assert_ne!(bodies[2]["id"], bodies[0]["id"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.bodies().len(), 3);
    let m = g.metrics().await;
    assert!(
        m.contains("portcullis_alerts_total{result=\"sent\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_security_events_total{event=\"auth_failure\"} 20"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_slow_requests() {
    let hook = Hook::start(0, true).await;
    let rules = r#"
[[alerts]]
name = "every-ip"
event = "auth_failure"
threshold = 0
window_seconds = 60
per = "ip"
webhook = "env:ALERT_HOOK"
format = "slack"

[[alerts]]
name = "overall"
event = "auth_failure"
threshold = 0
window_seconds = 1
webhook = "env:ALERT_HOOK"
"#;
    let g = start(&hook, rules).await;
    // Alerts keep being raised (the overall rule every second) while the webhook hangs; every
    // request is still answered at once. The bound is generous on purpose: the webhook's own
    // timeout is 5 s, so a request waiting on it would take at least that.
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        slowest = slowest.max(fail_auth(&g, 10).await);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    let bodies = hook.bodies();
    assert!(!bodies.is_empty(), "the webhook was never called");
    // The Slack-compatible form carries a text line.
    let slack = bodies
        .iter()
        .find(|b| b.get("id").is_none())
        .expect("a slack payload");
    assert!(
        slack["text"].as_str().unwrap().contains("every-ip"),
        "{slack}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_that_names_no_client_is_a_security_event_without_a_client() {
    let hook = Hook::start(0, false).await;
    // The per-client rule comes first: the engine weighs both rules on the same event, so by
    // the time the overall alert is raised, a per-client one would have been too.
    let rules = r#"
[network]
trusted_proxies = ["127.0.0.1/32"]

[[alerts]]
name = "bad-forwarding-per-client"
event = "bad_forwarded_for"
threshold = 0
per = "ip"
webhook = "env:ALERT_HOOK"

[[alerts]]
name = "bad-forwarding-overall"
event = "bad_forwarded_for"
threshold = 1
webhook = "env:ALERT_HOOK"
"#;
    let g = start(&hook, rules).await;
    for http1 in [true, false] {
        let r = g
            .client(http1)
            .get(g.url("/v1/models"))
            .header("x-forwarded-for", "198.51.100.7, unknown")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "http1: {http1}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_forwarded_for");
    }
    let (bodies, _) = eventually(Duration::from_secs(10), "the overall alert", || async {
        let b = hook.bodies();
        (!b.is_empty()).then_some(b)
    })
    .await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["alert"], "bad-forwarding-overall");
    assert_eq!(bodies[0]["event"], "bad_forwarded_for");
    // The trusted proxy (127.0.0.1) was never taken for the client: no per-client count. The
    // log is written by its own thread, a moment after the alert went out.
    let (log, _) = eventually(Duration::from_secs(5), "the alert in the log", || async {
        let log = g.log();
        log.contains("bad-forwarding-overall").then_some(log)
    })
    .await;
    assert!(!log.contains("bad-forwarding-per-client"), "{log}");
    let m = g.metrics().await;
    assert!(
        m.contains("portcullis_security_events_total{event=\"bad_forwarded_for\"} 2"),
        "{m}"
    );
}
