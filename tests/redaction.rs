//! No secret reaches the log: requests carry tokens in headers, cookies and query strings, on
//! successful and failing paths (401, 403, 502 from a dead upstream, a refused WebSocket), with
//! the gateway logging at debug level (Pingora and rustls included); the whole log is then
//! searched for every secret.

mod common;

use common::auth::hs256;
use common::*;

const WORKER: &str = "worker-token-for-redaction-0123456789";
const HS_SECRET: &str = "hs-secret-for-redaction-tests-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_headers_cookies_and_queries_never_reach_the_log() {
    let (dead, _held) = dead_port();
    let policy = format!(
        r#"
[auth]
default_provider = "jwt"
backoff = {{ max_failures = 0 }}

[[auth.issuers]]
name = "hs"
issuer = "https://hs.test"
algorithms = ["HS256"]
secret = "env:REDACTION_HS_SECRET"

[[upstreams]]
name = "worker"
kind = "worker"

[[upstreams]]
name = "dead"
kind = "external"
addresses = ["127.0.0.1:{dead}"]
connect_timeout_ms = 300

[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "api"
path_prefix = "/v1/"
upstream = "worker"
auth = ["static", "jwt"]

[[routes]]
name = "app"
path_prefix = "/app/"
upstream = "worker"
auth = "jwt"
session_cookie = "session"

[routes.csrf]

[[routes]]
name = "dead"
path_prefix = "/dead/"
upstream = "dead"
auth = "static"

[[routes]]
name = "rooms"
path_prefix = "/rooms/"
upstream = "rooms"
auth = "room"
query_token = true
"#
    );
    let g = Gateway::start(Options {
        env: vec![
            ("PORTCULLIS_WORKER_TOKEN".into(), WORKER.into()),
            ("REDACTION_HS_SECRET".into(), HS_SECRET.into()),
            ("PORTCULLIS_LOG_LEVEL".into(), "debug".into()),
        ],
        ..Options::with_policy(policy)
    })
    .await;
    let good_jwt = hs256(
        HS_SECRET.as_bytes(),
        None,
        &serde_json::json!({"iss": "https://hs.test", "sub": "alice", "exp": common::auth::now() + 600}),
    );
    let bad_jwt = hs256(
        b"some-other-secret-entirely-0123456789",
        None,
        &serde_json::json!({"iss": "https://hs.test", "sub": "mallory", "exp": common::auth::now() + 600}),
    );
    let secrets = [
        WORKER,
        HS_SECRET,
        good_jwt.as_str(),
        bad_jwt.as_str(),
        "query-secret-value-1",
        "sig-secret-value-2",
        "token-secret-value-3",
        "cookie-secret-value-4",
        "dXNlcjpwYXNzd29yZA",
        "room-query-token-5",
    ];
    let c = g.client(true);
    let statuses = [
        c.get(g.url("/v1/models")).bearer_auth(WORKER).send().await.unwrap().status(),
        c.get(g.url("/v1/models")).bearer_auth(&good_jwt).send().await.unwrap().status(),
        c.get(g.url("/v1/models")).bearer_auth(&bad_jwt).send().await.unwrap().status(),
        c.get(g.url("/v1/models"))
            .header("authorization", "Basic dXNlcjpwYXNzd29yZA")
            .send()
            .await
            .unwrap()
            .status(),
        c.get(g.url(
            "/v1/models?access_token=query-secret-value-1&sig=sig-secret-value-2&token=token-secret-value-3",
        ))
        .bearer_auth(WORKER)
        .send()
        .await
        .unwrap()
        .status(),
        c.get(g.url("/app/page"))
            .header("cookie", format!("session={good_jwt}; other=cookie-secret-value-4"))
            .send()
            .await
            .unwrap()
            .status(),
        c.post(g.url("/app/page"))
            .header("cookie", format!("session={good_jwt}; other=cookie-secret-value-4"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap()
            .status(),
        c.get(g.url("/dead/x?access_token=query-secret-value-1"))
            .bearer_auth(WORKER)
            .send()
            .await
            .unwrap()
            .status(),
    ];
    // /app/page reaches the worker (which has no such page); the dead upstream is 502, or 503
    // once its health check has taken it out.
    let mut got = statuses.map(|s| s.as_u16());
    if got[7] == 503 {
        got[7] = 502;
    }
    assert_eq!(got, [200, 200, 401, 401, 200, 404, 403, 502]);
    // A WebSocket handshake with a bad query token: refused, and the token stays out of the log.
    let ws = common::ws::open(
        &g,
        "localhost",
        "/rooms/locked/ws?access_token=room-query-token-5",
        None,
        false,
    )
    .await;
    assert!(ws.is_err());
    // Let the last lines land.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = g.log();
    assert!(
        log.lines().count() > 50,
        "debug logging should be busy:\n{log}"
    );
    assert!(
        log.contains("[redacted]"),
        "nothing was redacted, so nothing was tested"
    );
    for s in secrets {
        if let Some(line) = log.lines().find(|l| l.contains(s)) {
            panic!("secret {s:?} in the log:\n{line}");
        }
    }
}
