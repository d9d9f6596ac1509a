//! Room tokens through the gateway: locked and open rooms, tokens bound to their room,
//! capabilities to join, query-string tokens only where allowed and never logged, key rotation
//! by hot reload, `token mint`/`inspect`, and the room server's own capability gate (kick).

mod common;

use common::auth::now;
use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const K1: &str = "room-key-one-0123456789abcdefghijklmnop";
const K2: &str = "room-key-two-0123456789abcdefghijklmnop";

fn policy(keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(kid, secret)| {
            format!("{{ kid = \"{kid}\", algorithm = \"HS256\", secret = \"{secret}\" }}")
        })
        .collect();
    format!(
        r#"
[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "rooms"
path_prefix = "/rooms/"
upstream = "rooms"
auth = "room"
query_token = true

[[routes]]
name = "rooms-strict"
hosts = ["strict.test"]
path_prefix = "/rooms/"
upstream = "rooms"
auth = "room"

[rooms]
default_access = "open"
keys = [{}]

[[rooms.access]]
room = "ops"
mode = "locked"
capabilities = ["query.read"]
"#,
        keys.join(", ")
    )
}

fn token(kid: &str, secret: &str, sub: &str, room: &str, caps: &[&str]) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.into());
    let claims = serde_json::json!({"iss": "portcullis-rooms", "sub": sub, "room": room, "caps": caps, "exp": now() + 600});
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

use common::ws::Ws;

/// Opens a WebSocket; returns the HTTP status of a refused handshake as `Err`.
async fn ws(
    g: &Gateway,
    host: &str,
    path_and_query: &str,
    bearer: Option<&str>,
) -> Result<Ws, u16> {
    common::ws::open(g, host, path_and_query, bearer, false).await
}

fn opts(p: String) -> Options {
    Options {
        policy: vec![("p.toml".into(), p)],
        extra_certs: vec![("strict".into(), vec!["strict.test".into()])],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_rooms_need_a_token_for_that_room_with_the_capability() {
    let g = Gateway::start(opts(policy(&[("k1", K1)]))).await;
    assert_eq!(
        ws(&g, "localhost", "/rooms/ops/ws", None).await.err(),
        Some(401)
    );
    let other_room = token("k1", K1, "eve", "lobby", &["query.read"]);
    assert_eq!(
        ws(&g, "localhost", "/rooms/ops/ws", Some(&other_room))
            .await
            .err(),
        Some(403)
    );
    let no_cap = token("k1", K1, "eve", "ops", &["archive.read"]);
    assert_eq!(
        ws(&g, "localhost", "/rooms/ops/ws", Some(&no_cap))
            .await
            .err(),
        Some(403)
    );
    let forged = token(
        "k1",
        "not-the-key-0123456789abcdefghijklmnop",
        "eve",
        "ops",
        &["query.read"],
    );
    assert_eq!(
        ws(&g, "localhost", "/rooms/ops/ws", Some(&forged))
            .await
            .err(),
        Some(401)
    );
    let good = token("k1", K1, "olivia", "ops", &["query.read"]);
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&good))
        .await
        .is_ok());
    // The capability denial is the documented body.
    let r = g
        .client(true)
        .get(g.url("/rooms/ops/ws"))
        .header("authorization", format!("Bearer {no_cap}"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error": "capability_denied", "required": "query.read"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rooms_admit_and_query_tokens_work_only_where_allowed_and_never_reach_the_log() {
    let g = Gateway::start(opts(policy(&[("k1", K1)]))).await;
    assert!(
        ws(&g, "localhost", "/rooms/lobby/ws", None).await.is_ok(),
        "open room admits anonymously"
    );
    let t = token("k1", K1, "quinn", "ops", &["query.read"]);
    assert!(ws(
        &g,
        "localhost",
        &format!("/rooms/ops/ws?access_token={t}"),
        None
    )
    .await
    .is_ok());
    assert_eq!(
        ws(
            &g,
            "strict.test",
            &format!("/rooms/ops/ws?access_token={t}"),
            None
        )
        .await
        .err(),
        Some(401)
    );
    assert!(ws(&g, "strict.test", "/rooms/ops/ws", Some(&t))
        .await
        .is_ok());
    // A bad query token is refused, with the token kept out of every log line too.
    let bad = format!("{t}x");
    assert_eq!(
        ws(
            &g,
            "localhost",
            &format!("/rooms/ops/ws?access_token={bad}"),
            None
        )
        .await
        .err(),
        Some(401)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = g.log();
    assert!(
        log.contains("\"path\":\"/rooms/ops/ws\""),
        "access log present"
    );
    assert!(!log.contains(&t), "token leaked into the log");
    assert!(
        !log.contains("access_token"),
        "query string leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_keys_rotate_by_hot_reload() {
    let g = Gateway::start(opts(policy(&[("k1", K1)]))).await;
    let t1 = token("k1", K1, "rita", "ops", &["query.read"]);
    let t2 = token("k2", K2, "rita", "ops", &["query.read"]);
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&t1))
        .await
        .is_ok());
    assert_eq!(
        ws(&g, "localhost", "/rooms/ops/ws", Some(&t2)).await.err(),
        Some(401)
    );
    let generation = g.generation().await;
    std::fs::write(
        g.policy_dir().join("p.toml"),
        policy(&[("k1", K1), ("k2", K2)]),
    )
    .unwrap();
    eventually(Duration::from_secs(2), "k2 added", || async {
        (g.generation().await > generation).then_some(())
    })
    .await;
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&t2))
        .await
        .is_ok());
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&t1))
        .await
        .is_ok());
    let generation = g.generation().await;
    std::fs::write(g.policy_dir().join("p.toml"), policy(&[("k2", K2)])).unwrap();
    eventually(Duration::from_secs(2), "k1 removed", || async {
        (g.generation().await > generation).then_some(())
    })
    .await;
    // Verified (and cached) before; refused now that its key is gone.
    assert_eq!(
        ws(&g, "localhost", "/rooms/ops/ws", Some(&t1)).await.err(),
        Some(401)
    );
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&t2))
        .await
        .is_ok());
    assert!(g.log().contains("\"key\":\"k2\""), "key ids are logged");
    assert!(!g.log().contains(K2), "key material never is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_pass_and_inspect_explains_failures() {
    let g = Gateway::start(opts(policy(&[("k1", K1)]))).await;
    let config = g.dir.path().join("portcullis.toml");
    let mint = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "token",
            "mint",
            "--room",
            "ops",
            "--cap",
            "query.read",
            "--ttl",
            "15m",
            "--kid",
            "k1",
            "--sub",
            "sam",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        mint.status.success(),
        "{}",
        String::from_utf8_lossy(&mint.stderr)
    );
    let t = String::from_utf8(mint.stdout).unwrap().trim().to_string();
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&t)).await.is_ok());

    let inspect = |tok: String| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["token", "inspect", &tok, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    };
    let (ok, report) = inspect(t);
    assert!(ok, "{report}");
    assert!(
        report.contains("verdict: PASS as a room token (key k1)"),
        "{report}"
    );
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let expired = jsonwebtoken::encode(
        &h,
        &serde_json::json!({"iss": "portcullis-rooms", "sub": "x", "room": "ops", "exp": now() - 100}),
        &EncodingKey::from_secret(K1.as_bytes()),
    )
    .unwrap();
    let (ok, report) = inspect(expired);
    assert!(!ok);
    assert!(report.contains("verdict: FAIL: expired"), "{report}");
    let (ok, report) = inspect(token("k9", K1, "x", "ops", &[]));
    assert!(!ok);
    assert!(
        report.contains("kid \"k9\" is not a configured key"),
        "{report}"
    );
    let gen = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["token", "generate"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(gen.stdout).unwrap().trim().len(), 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_room_admin_can_kick() {
    let g = Gateway::start(opts(policy(&[("k1", K1)]))).await;
    let admin = token("k1", K1, "ada", "lobby", &["room.admin"]);
    let plain = token("k1", K1, "bob", "lobby", &[]);
    let mut a = ws(&g, "localhost", "/rooms/lobby/ws", Some(&admin))
        .await
        .unwrap();
    let mut b = ws(&g, "localhost", "/rooms/lobby/ws", Some(&plain))
        .await
        .unwrap();
    // Wait until both are in the room.
    for i in 0.. {
        a.send(Message::Text(format!("hi{i}"))).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(200), b.next()).await;
        if let Ok(Some(Ok(Message::Text(_)))) = got {
            break;
        }
        assert!(i < 50, "never joined: {got:?}\n{}", g.log());
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), b.next()).await {}
    b.send(Message::Text(r#"{"type":"kick","subject":"ada"}"#.into()))
        .await
        .unwrap();
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(5), b.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) if t.contains("\"type\":\"error\"") => break t,
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert!(reply.contains("\"required\":\"room.admin\""), "{reply}");
    a.send(Message::Text(r#"{"type":"kick","subject":"bob"}"#.into()))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), b.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 4003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_join_does_not_clear_an_auth_failure_lockout() {
    let p = policy(&[("k1", K1)])
        + "\n[auth]\nbackoff = { max_failures = 3, window_seconds = 600, lockout_seconds = 600, max_lockout_seconds = 600 }\n";
    let g = Gateway::start(opts(p)).await;
    let forged = token(
        "k1",
        "not-the-key-0123456789abcdefghijklmnop",
        "eve",
        "lobby",
        &[],
    );
    for _ in 0..2 {
        assert_eq!(
            ws(&g, "localhost", "/rooms/lobby/ws", Some(&forged))
                .await
                .err(),
            Some(401)
        );
    }
    // An anonymous join to an open room succeeds, but proves nothing: the two failures stand.
    assert!(ws(&g, "localhost", "/rooms/lobby/ws", None).await.is_ok());
    assert_eq!(
        ws(&g, "localhost", "/rooms/lobby/ws", Some(&forged))
            .await
            .err(),
        Some(401),
        "the third failure starts the lockout"
    );
    assert_eq!(
        ws(&g, "localhost", "/rooms/lobby/ws", None).await.err(),
        Some(429)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentialed_join_clears_the_failures() {
    let p = policy(&[("k1", K1)])
        + "\n[auth]\nbackoff = { max_failures = 3, window_seconds = 600, lockout_seconds = 600, max_lockout_seconds = 600 }\n";
    let g = Gateway::start(opts(p)).await;
    let forged = token(
        "k1",
        "not-the-key-0123456789abcdefghijklmnop",
        "eve",
        "lobby",
        &[],
    );
    let good = token("k1", K1, "olivia", "lobby", &[]);
    for _ in 0..2 {
        assert_eq!(
            ws(&g, "localhost", "/rooms/lobby/ws", Some(&forged))
                .await
                .err(),
            Some(401)
        );
    }
    assert!(ws(&g, "localhost", "/rooms/lobby/ws", Some(&good))
        .await
        .is_ok());
    for _ in 0..2 {
        assert_eq!(
            ws(&g, "localhost", "/rooms/lobby/ws", Some(&forged))
                .await
                .err(),
            Some(401)
        );
    }
    assert!(ws(&g, "localhost", "/rooms/lobby/ws", None).await.is_ok());
}

const JWT_SECRET: &str = "room-route-jwt-secret-0123456789abcdefghij";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_rooms_hold_whatever_route_reaches_the_room_server() {
    // Beside the room route, a public one and a jwt one reach the same room server, each
    // picked by the Host header.
    let p = format!(
        r#"{}
[auth]
default_provider = "jwt"

[[auth.issuers]]
name = "hs"
issuer = "https://hs.test"
algorithms = ["HS256"]
secret = "{JWT_SECRET}"

[[routes]]
name = "rooms-public"
hosts = ["public.test"]
path_prefix = "/rooms/"
upstream = "rooms"
public = true

[[routes]]
name = "rooms-jwt"
hosts = ["jwt.test"]
path_prefix = "/rooms/"
upstream = "rooms"
auth = "jwt"
"#,
        policy(&[("k1", K1)])
    );
    let g = Gateway::start(Options {
        policy: vec![("p.toml".into(), p)],
        extra_certs: vec![
            ("public".into(), vec!["public.test".into()]),
            ("jwt".into(), vec!["jwt.test".into()]),
        ],
        ..Default::default()
    })
    .await;
    let jwt = common::auth::hs256(
        JWT_SECRET.as_bytes(),
        None,
        &serde_json::json!({"iss": "https://hs.test", "sub": "mallory", "caps": ["query.read"], "exp": now() + 600}),
    );
    // The locked room refuses both side doors; the open lobby takes them.
    assert_eq!(
        ws(&g, "public.test", "/rooms/ops/ws", None).await.err(),
        Some(403)
    );
    assert_eq!(
        ws(&g, "jwt.test", "/rooms/ops/ws", Some(&jwt)).await.err(),
        Some(403)
    );
    assert!(ws(&g, "public.test", "/rooms/lobby/ws", None).await.is_ok());
    assert!(ws(&g, "jwt.test", "/rooms/lobby/ws", Some(&jwt))
        .await
        .is_ok());
    // The room route with a room token still opens it.
    let good = token("k1", K1, "olivia", "ops", &["query.read"]);
    assert!(ws(&g, "localhost", "/rooms/ops/ws", Some(&good))
        .await
        .is_ok());
    // A room token is for the room route only: on the public route it is not read.
    assert_eq!(
        ws(&g, "public.test", "/rooms/ops/ws", Some(&good))
            .await
            .err(),
        Some(403)
    );

    // `check` and `posture` name the routes that reach the room server without the room
    // provider.
    let run = |sub: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args([sub, "--config"])
            .arg(g.dir.path().join("portcullis.toml"))
            .current_dir(g.dir.path());
        for k in GATEWAY_ENV.iter().chain(&["AUTH_PROVIDER"]) {
            cmd.env_remove(k);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run("check");
    assert!(
        text.contains("warning: route(s) rooms-public, rooms-jwt reach the room server without the room provider"),
        "{text}"
    );
    let text = run("posture");
    let line = text
        .lines()
        .find(|l| l.contains(" rooms "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("WARN")
            && line.contains("rooms-public, rooms-jwt")
            && line.contains("without the room provider"),
        "{text}"
    );
}
