//! Replicas sharing state through a real redis-server on loopback: one global limit across
//! three gateways, a lockout started through one replica applying at the others, revocation
//! through the CLI reaching every replica within a second (and closing an open WebSocket), and
//! Redis stopped and started again under fail-open and fail-closed limits.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "shared-state-test-secret-0123456789abcdef";
const ROOM_KEY: &str = "shared-state-room-key-0123456789abcdefgh";

/// A policy with the shared store at `url` (each test its own key prefix), JWT auth on
/// `/whoami`, a public `/v1/` route, the room server, and `extra` (limits, backoff).
fn policy(url: &str, prefix: &str, backoff: &str, extra: &str) -> String {
    format!(
        r#"
[shared_state]
url = "{url}"
key_prefix = "{prefix}"
command_timeout_ms = 200
connect_timeout_ms = 300

[auth]
default_provider = "jwt"
{backoff}

[[auth.issuers]]
name = "hs"
issuer = "https://hs.test"
audiences = ["api"]
algorithms = ["HS256"]
secret = "{SECRET}"

[rooms]
keys = [{{ kid = "rk1", algorithm = "HS256", secret = "{ROOM_KEY}" }}]

[[rooms.access]]
room = "ops"
mode = "locked"

[[upstreams]]
name = "worker"
kind = "worker"

[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "whoami"
path_prefix = "/whoami"
upstream = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true

[[routes]]
name = "rooms"
path_prefix = "/rooms/"
upstream = "rooms"
auth = "room"
{extra}
"#
    )
}

fn token(sub: &str, jti: &str) -> String {
    common::auth::hs256(
        SECRET.as_bytes(),
        None,
        &serde_json::json!({
            "iss": "https://hs.test", "aud": "api", "sub": sub, "jti": jti,
            "exp": common::auth::now() + 3600,
        }),
    )
}

async fn start(n: usize, text: &str) -> Vec<Gateway> {
    let mut out = Vec::new();
    for _ in 0..n {
        let g = Gateway::start(Options::with_policy(text)).await;
        wait_up(&g, Duration::from_secs(5)).await;
        out.push(g);
    }
    out
}

async fn status(c: &reqwest::Client, g: &Gateway, path: &str, bearer: Option<&str>) -> u16 {
    let mut r = c.get(g.url(path));
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status().as_u16()
}

fn cli(g: &Gateway, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(g.dir.path().join("portcullis.toml"))
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

use common::metric_in as metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_global_limit() {
    let redis = Redis::shared();
    let t1 = Redis::fresh_prefix("t1");
    // 100 per 10 minutes: refill adds nothing measurable during the test.
    let limit = "[[limits]]\nname = \"shared\"\nkey = [\"route\"]\nrequests = 100\nper_seconds = 600\nburst = 100\nscope = \"global\"\nroutes = [\"models\"]\n";
    let gws = start(3, &policy(&redis.url(), &t1, "", limit)).await;
    // 300 requests, 100 at each replica, 10 at a time per replica, all at once.
    let mut tasks = Vec::new();
    for g in &gws {
        for _ in 0..10 {
            let (c, url) = (g.client(true), g.url("/v1/models"));
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut limited) = (0u32, 0u32);
                for _ in 0..10 {
                    match c.get(&url).send().await.unwrap().status().as_u16() {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("unexpected status {s}"),
                    }
                }
                (ok, limited)
            }));
        }
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    println!("admitted {ok}, limited {limited} of 300 across 3 replicas (limit 100)");
    assert_eq!(ok + limited, 300);
    assert!((95..=105).contains(&ok), "admitted {ok}, want 100 ± 5%");
    // Each replica admitted some, so the limit was shared rather than won by one.
    for g in &gws {
        let m = g.metrics().await;
        assert!(metric(&m, "portcullis_shared_state_round_trips_total") > 0.0);
        assert_eq!(metric(&m, "portcullis_shared_state_up"), 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_started_through_one_replica_applies_at_the_others() {
    let redis = Redis::shared();
    let t2 = Redis::fresh_prefix("t2");
    let backoff = "backoff = { max_failures = 3, window_seconds = 60, lockout_seconds = 30, max_lockout_seconds = 60 }";
    let gws = start(3, &policy(&redis.url(), &t2, backoff, "")).await;
    let good = token("alice", "t2-good");
    let cs: Vec<_> = gws.iter().map(|g| g.client(true)).collect();
    for (c, g) in cs.iter().zip(&gws) {
        assert_eq!(status(c, g, "/whoami", Some(&good)).await, 200);
    }
    // Three bad tokens, spread over two replicas, count as three failures from one client.
    assert_eq!(
        status(&cs[0], &gws[0], "/whoami", Some("bad.token.1")).await,
        401
    );
    assert_eq!(
        status(&cs[0], &gws[0], "/whoami", Some("bad.token.2")).await,
        401
    );
    assert_eq!(
        status(&cs[1], &gws[1], "/whoami", Some("bad.token.3")).await,
        401
    );
    // Every replica now refuses even a good token from that client, including the third,
    // which saw no failure at all.
    for (c, g) in cs.iter().zip(&gws) {
        let (_, took) = eventually(Duration::from_secs(1), "lockout everywhere", || async {
            let r = c
                .get(g.url("/whoami"))
                .bearer_auth(&good)
                .send()
                .await
                .unwrap();
            if r.status() != 429 {
                return None;
            }
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: serde_json::Value = r.json().await.unwrap();
            (body["error"] == "too_many_auth_failures" && (25..=30).contains(&retry)).then_some(())
        })
        .await;
        println!("locked out at {} after {took:?}", g.https);
    }
    assert_eq!(
        metric(&gws[1].metrics().await, "portcullis_auth_lockouts_total"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_through_the_cli_reaches_every_replica_within_a_second() {
    let redis = Redis::shared();
    let t3 = Redis::fresh_prefix("t3");
    // Revoked tokens count as failed authentications; this test sends many from one address.
    let no_backoff = "backoff = { max_failures = 0 }";
    let gws = start(3, &policy(&redis.url(), &t3, no_backoff, "")).await;
    let cs: Vec<_> = gws.iter().map(|g| g.client(true)).collect();
    let (t1, t2) = (token("alice", "tok-1"), token("alice", "tok-2"));
    let other = token("bob", "tok-3");
    for (c, g) in cs.iter().zip(&gws) {
        for t in [&t1, &t2, &other] {
            assert_eq!(status(c, g, "/whoami", Some(t)).await, 200);
        }
    }
    // An open WebSocket in a locked room, with a room token for subject "carol".
    let (ok, room_token) = cli(
        &gws[1],
        &[
            "token", "mint", "--room", "ops", "--sub", "carol", "--ttl", "1h",
        ],
    );
    assert!(ok, "{room_token}");
    let mut ws = common::ws::open(
        &gws[1],
        "localhost",
        "/rooms/ops/ws",
        Some(room_token.trim()),
        false,
    )
    .await
    .expect("room token admitted");

    // Revoke one token by id: the next request with it fails everywhere within a second.
    let (ok, out) = cli(
        &gws[0],
        &["token", "revoke", "--jti", "tok-1", "--ttl", "1h"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("revoked jti \"tok-1\""), "{out}");
    let revoked_at = Instant::now();
    for (c, g) in cs.iter().zip(&gws) {
        eventually(Duration::from_secs(1), "revoked everywhere", || async {
            (status(c, g, "/whoami", Some(&t1)).await == 401).then_some(())
        })
        .await;
        // Only that token: the same subject's other token still passes.
        assert_eq!(status(c, g, "/whoami", Some(&t2)).await, 200);
    }
    println!(
        "tok-1 refused at 3 replicas {:?} after the CLI returned",
        revoked_at.elapsed()
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(1));

    // Revoke a subject: the open session using it is closed with 4401.
    let (ok, out) = cli(&gws[2], &["token", "revoke", "--sub", "carol"]);
    assert!(ok, "{out}");
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(_)) => continue,
                other => panic!("session ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the revoked session is closed within a second");
    assert_eq!(closed, (4401, "token revoked".to_string()));
    // A new session with it is refused too.
    assert!(common::ws::open(
        &gws[1],
        "localhost",
        "/rooms/ops/ws",
        Some(room_token.trim()),
        false
    )
    .await
    .is_err());

    // The list, a revocation for a subject, and lifting one.
    let (ok, list) = cli(&gws[0], &["token", "revocations"]);
    assert!(ok, "{list}");
    assert!(
        list.contains("jti  tok-1") && list.contains("sub  carol"),
        "{list}"
    );
    assert!(list.contains("2 revocation(s)"), "{list}");
    let (ok, out) = cli(&gws[0], &["token", "unrevoke", "--jti", "tok-1"]);
    assert!(ok && out.contains("unrevoked"), "{out}");
    for (c, g) in cs.iter().zip(&gws) {
        eventually(Duration::from_secs(1), "unrevoked everywhere", || async {
            (status(c, g, "/whoami", Some(&t1)).await == 200).then_some(())
        })
        .await;
    }
    // A replica started later loads the list from the store.
    let late = Gateway::start(Options::with_policy(policy(
        &redis.url(),
        &t3,
        no_backoff,
        "",
    )))
    .await;
    let lc = late.client(true);
    let carol = token("carol", "tok-9");
    assert_eq!(status(&lc, &late, "/whoami", Some(&carol)).await, 401);
    assert_eq!(status(&lc, &late, "/whoami", Some(&other)).await, 200);
    assert!(!late.log().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_fail_open_limits_turn_local_fail_closed_refuse_and_both_recover() {
    let mut redis = Redis::start();
    let limits = r#"
[[limits]]
name = "open"
key = ["ip"]
requests = 5
per_seconds = 600
burst = 5
scope = "global"
failure_mode = "fail_open"
routes = ["models"]

[[limits]]
name = "closed"
key = ["ip", "subject"]
requests = 1000
per_seconds = 1
scope = "global"
failure_mode = "fail_closed"
routes = ["whoami"]
"#;
    let g = Gateway::start(Options::with_policy(policy(
        &redis.url(),
        "t4:",
        "",
        limits,
    )))
    .await;
    wait_up(&g, Duration::from_secs(5)).await;
    let c = g.client(true);
    let t = token("alice", "t4");
    assert_eq!(status(&c, &g, "/whoami", Some(&t)).await, 200);
    // Two of the five global tokens used while Redis is up.
    assert_eq!(status(&c, &g, "/v1/models", None).await, 200);
    assert_eq!(status(&c, &g, "/v1/models", None).await, 200);

    redis.stop();
    // Fail closed: 503 with its own error.
    let (_, took) = eventually(
        Duration::from_secs(3),
        "fail-closed limit answers 503",
        || async {
            let r = c
                .get(g.url("/whoami"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap();
            if r.status() != 503 {
                return None;
            }
            let body: serde_json::Value = r.json().await.unwrap();
            (body["error"] == "rate_limit_unavailable" && body["limit"] == "closed").then_some(())
        },
    )
    .await;
    println!("fail-closed after {took:?}");
    // Fail open: the replica's own limit (5 per 10 minutes, untouched so far) applies.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(status(&c, &g, "/v1/models", None).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let m = g.metrics().await;
    assert_eq!(metric(&m, "portcullis_shared_state_up"), 0.0);
    assert!(
        m.contains("portcullis_shared_state_fallbacks_total{mode=\"fail_open\"} 7"),
        "{m}"
    );
    assert!(metric(&m, "portcullis_shared_state_errors_total") >= 1.0);
    // One log line for the change of state, however many requests met it.
    let down_lines = || g.log().matches("shared state unreachable").count();
    assert_eq!(down_lines(), 1, "{}", g.log());

    redis.restart();
    let (_, took) = eventually(
        Duration::from_secs(5),
        "fail-closed limit recovers",
        || async { (status(&c, &g, "/whoami", Some(&t)).await == 200).then_some(()) },
    )
    .await;
    println!("recovered after {took:?}");
    // Global again: the fresh store has five tokens for this client.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(status(&c, &g, "/v1/models", None).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_eq!(
        metric(&g.metrics().await, "portcullis_shared_state_up"),
        1.0
    );
    assert_eq!(down_lines(), 1);
    assert_eq!(
        g.log().matches("shared state reachable").count(),
        2,
        "{}",
        g.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_limit_without_a_store_and_bad_settings_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        (
            "[[limits]]\nname = \"g\"\nrequests = 1\nscope = \"global\"\n",
            "limits[0].scope: a global limit needs a [shared_state] section",
        ),
        (
            "[[limits]]\nname = \"g\"\nrequests = 1\nfailure_mode = \"fail_closed\"\n",
            "only a limit with scope = \"global\" has a failure mode",
        ),
        (
            "[shared_state]\nurl = \"http://127.0.0.1:6379\"\n",
            "shared_state.url: must start with redis:// or rediss://",
        ),
        (
            "[shared_state]\nurl = \"env:PORTCULLIS_TEST_UNSET_REDIS_URL\"\n",
            "environment variable PORTCULLIS_TEST_UNSET_REDIS_URL is not set",
        ),
        (
            "[shared_state]\nurl = \"redis://127.0.0.1:6379\"\nca_file = \"ca.pem\"\n",
            "ca_file needs a rediss:// URL",
        ),
    ];
    for (text, want) in bad {
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("check")
            .current_dir(dir.path())
            .env_remove("PORTCULLIS_TEST_UNSET_REDIS_URL");
        for k in GATEWAY_ENV {
            cmd.env_remove(k);
        }
        let out = cmd
            .env("PORTCULLIS_POLICY_DIR", dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
    // `policy diff` shows a limit turning global as closing (one count for every replica).
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let limit = "[[limits]]\nname = \"g\"\nrequests = 10\n";
    let store = "[shared_state]\nurl = \"redis://127.0.0.1:6379\"\n";
    std::fs::write(old.path().join("p.toml"), limit).unwrap();
    std::fs::write(
        new.path().join("p.toml"),
        format!("{store}{limit}scope = \"global\"\nfailure_mode = \"fail_closed\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["policy", "diff"])
        .arg(old.path())
        .arg(new.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[closes]")
            && text.contains("(global, fail closed)")
            && text.contains("shared_state: none → redis://127.0.0.1:6379"),
        "{text}"
    );

    // Revocation needs the store.
    let g = Gateway::start(Options::default()).await;
    let (ok, out) = cli(&g, &["token", "revoke", "--jti", "x"]);
    assert!(!ok);
    assert!(out.contains("no [shared_state] section"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_store_with_a_password_by_reference() {
    let ca = TestCa::new("Redis Test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("redis.crt"),
        dir.path().join("redis.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, format!("{cert}{}", ca.pem)).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let password = "redis-password-0123456789abcdef";
    let redis = Redis::start_tls(&cert_path, &key_path, password);
    let limit = "[[limits]]\nname = \"g\"\nkey = [\"ip\"]\nrequests = 2\nper_seconds = 600\nscope = \"global\"\nfailure_mode = \"fail_closed\"\nroutes = [\"models\"]\n";
    let text = |pw_env: &str| {
        policy(
            &format!("rediss://localhost:{}/0", redis.port),
            &Redis::fresh_prefix("t5"),
            "",
            limit,
        )
        .edit(
            "command_timeout_ms = 200",
            &format!(
                "command_timeout_ms = 200\npassword = \"env:{pw_env}\"\nca_file = \"{}\"",
                ca_path.display()
            ),
        )
    };
    let mut opts = Options::with_policy(text("PORTCULLIS_TEST_REDIS_PASSWORD"));
    opts.env = vec![("PORTCULLIS_TEST_REDIS_PASSWORD".into(), password.into())];
    let g = Gateway::start(opts).await;
    wait_up(&g, Duration::from_secs(5)).await;
    let c = g.client(true);
    let statuses = [
        status(&c, &g, "/v1/models", None).await,
        status(&c, &g, "/v1/models", None).await,
        status(&c, &g, "/v1/models", None).await,
    ];
    assert_eq!(statuses, [200, 200, 429], "{}", g.log());
    assert_eq!(
        metric(&g.metrics().await, "portcullis_shared_state_up"),
        1.0
    );
    assert!(!g.log().contains(password));

    // A wrong password: the store is down (fail closed answers 503) and the log never shows it.
    let mut opts = Options::with_policy(text("PORTCULLIS_TEST_REDIS_PASSWORD"));
    opts.env = vec![(
        "PORTCULLIS_TEST_REDIS_PASSWORD".into(),
        "wrong-password-0123456789".into(),
    )];
    let bad = Gateway::start(opts).await;
    let bc = bad.client(true);
    assert_eq!(status(&bc, &bad, "/v1/models", None).await, 503);
    assert_eq!(
        metric(&bad.metrics().await, "portcullis_shared_state_up"),
        0.0
    );
    let log = bad.log();
    assert!(log.contains("shared state unreachable"), "{log}");
    assert!(!log.contains("wrong-password-0123456789") && !log.contains(password));
}
