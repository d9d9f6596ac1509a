//! External upstreams through the gateway: a killed upstream gets quick 502s, then its circuit
//! opens (fast 503s), then closes after the upstream returns; active health checks take a dead
//! address out of rotation and put it back.

mod common;

use common::*;
use std::time::{Duration, Instant};

use common::upstream::TestUpstream as Upstream;

/// One external upstream `api` over `ports` on 127.0.0.1, with `settings` (its breaker and
/// health-check keys), serving every path.
fn pool(ports: &[u16], settings: &str) -> Options {
    let addresses: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    Options::with_policy(format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = [{}]
{settings}

[[routes]]
name = "api"
path_prefix = "/"
upstream = "api"
public = true
"#,
        addresses.join(", ")
    ))
}

fn opts(port: u16, health: u64) -> Options {
    pool(
        &[port],
        &format!(
            "connect_timeout_ms = 500\ncircuit_failures = 3\ncircuit_open_ms = 1000\nhealth_check_interval_seconds = {health}"
        ),
    )
}

async fn status(c: &reqwest::Client, g: &Gateway) -> (u16, String, Duration) {
    let t = Instant::now();
    let r = c.get(g.url("/thing")).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_on_a_dead_upstream_and_closes_when_it_returns() {
    let up = Upstream::start(0).await;
    let port = up.port;
    // Open for 2 s: long enough that the metric is read inside the open period on a loaded
    // machine.
    let g = Gateway::start(pool(
        &[port],
        "connect_timeout_ms = 500\ncircuit_failures = 3\ncircuit_open_ms = 2000\nhealth_check_interval_seconds = 0",
    ))
    .await;
    let c = g.client(true);
    assert_eq!(status(&c, &g).await.0, 200);
    up.kill().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let (s, body, took) = status(&c, &g).await;
        assert_eq!(s, 502, "{body}");
        assert!(body.contains("upstream_unavailable"));
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    let (s, body, took) = status(&c, &g).await;
    assert_eq!(
        (s, body.as_str()),
        (503, r#"{"error":"upstream_circuit_open"}"#)
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(g.metrics().await.contains(&format!(
        "portcullis_circuit_open{{upstream=\"api\",address=\"127.0.0.1:{port}\"}} 1"
    )));
    let up = Upstream::start(port).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status(&c, &g).await.0, 200, "the half-open probe succeeds");
    assert_eq!(status(&c, &g).await.0, 200);
    assert!(g.metrics().await.contains(&format!(
        "portcullis_circuit_open{{upstream=\"api\",address=\"127.0.0.1:{port}\"}} 0"
    )));
    up.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_address_out_and_put_it_back() {
    let up = Upstream::start(0).await;
    let port = up.port;
    let g = Gateway::start(opts(port, 1)).await;
    let c = g.client(true);
    assert_eq!(status(&c, &g).await.0, 200);
    up.kill().await;
    eventually(Duration::from_secs(4), "marked down", || async {
        (status(&c, &g).await.0 == 503).then_some(())
    })
    .await;
    eventually(Duration::from_secs(3), "health check logged", || async {
        g.log().contains("health check: down").then_some(())
    })
    .await;
    let up = Upstream::start(port).await;
    eventually(Duration::from_secs(4), "marked up", || async {
        (status(&c, &g).await.0 == 200).then_some(())
    })
    .await;
    // The address is back in rotation before the line is written.
    eventually(Duration::from_secs(3), "health check up logged", || async {
        g.log().contains("health check: up").then_some(())
    })
    .await;
    up.kill().await;
}

/// An upstream that dies in the middle of its responses: `/cl` promises 100 bytes and sends 5,
/// `/chunked` sends one chunk and no last chunk, `/ok` answers whole. Each connection closes
/// after its answer, like a crashed process's would.
async fn cut_short_upstream() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let answer: &[u8] = if head.starts_with("GET /cl ") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello"
                } else if head.starts_with("GET /chunked ") {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                };
                let _ = s.write_all(answer).await;
                let _ = s.flush().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_upstream_cuts_short_reaches_the_client_as_incomplete() {
    let port = cut_short_upstream().await;
    let g = Gateway::start(pool(
        &[port],
        "circuit_failures = 100\nhealth_check_interval_seconds = 0",
    ))
    .await;

    // HTTP/2: the truncated stream is reset, not ended; the connection and its other streams
    // carry on.
    let h2 = g.client(false);
    for path in ["/chunked", "/cl"] {
        // The reset may overtake the head: either way the request fails with INTERNAL_ERROR.
        let err = match h2.get(g.url(path)).send().await {
            Ok(r) => {
                assert_eq!(r.version(), reqwest::Version::HTTP_2);
                assert_eq!(r.status(), 200);
                r.bytes().await.expect_err(path)
            }
            Err(e) => e,
        };
        let chain = format!("{err:?}");
        assert!(chain.contains("INTERNAL_ERROR"), "{path}: {chain}");
        let ok = h2.get(g.url("/ok")).send().await.unwrap();
        assert_eq!(ok.version(), reqwest::Version::HTTP_2);
        assert_eq!(
            ok.text().await.unwrap(),
            "ok",
            "the connection survives the reset"
        );
    }

    // HTTP/1.1: the connection closes short of the promised length or the last chunk, and no
    // error page is appended to the body that had started.
    let cl = g.raw(b"GET /cl HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let (head, body) = cl.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("content-length: 100"),
        "{head}"
    );
    assert_eq!(body, "hello", "{cl}");
    let chunked = g
        .raw(b"GET /chunked HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let (head, body) = chunked.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(
        body, "5\r\nhello\r\n",
        "no last chunk, nothing appended: {chunked}"
    );
    let h1 = g.client(true);
    let err = h1
        .get(g.url("/chunked"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    assert!(err.is_err(), "{err:?}");

    // Counted, and logged as aborted rather than answered; the client sees the close before
    // the request is logged and counted.
    eventually(Duration::from_secs(3), "5 aborts counted", || async {
        g.metrics()
            .await
            .contains("portcullis_responses_aborted_total 5")
            .then_some(())
    })
    .await;
    eventually(Duration::from_secs(3), "the abort logged", || async {
        g.log()
            .contains("response aborted: the proxy failed after the response had started")
            .then_some(())
    })
    .await;
    assert!(!g.log().contains("cannot send again"), "{}", g.log());
}

/// Reads one HTTP/1.1 response with a content-length body from `s`: (head, body).
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    while got.len() < end + 4 + len {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed inside the body");
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_leaves_the_clients_http1_connection_open_unless_a_body_was_left_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Nothing listens on the upstream's port: every request gets a 502.
    let (port, _dead) = dead_port();
    let g = Gateway::start(pool(
        &[port],
        "circuit_failures = 100\nhealth_check_interval_seconds = 0",
    ))
    .await;
    let mut tls = g.tls_connect().await;
    for i in 0..3 {
        tls.write_all(b"GET /thing HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut tls).await;
        assert!(head.starts_with("http/1.1 502"), "request {i}: {head}");
        assert_eq!(body, r#"{"error":"upstream_unavailable"}"#);
        assert!(!head.contains("connection: close"), "request {i}: {head}");
    }
    // A request body the gateway never read (the upstream failed first) could be taken for the
    // next request: that connection closes, and says so.
    tls.write_all(b"POST /thing HTTP/1.1\r\nHost: localhost\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (head, _) = read_response(&mut tls).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection closes");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_the_next_address() {
    let (dead, _held) = dead_port();
    let up = Upstream::start(0).await;
    let g = Gateway::start(pool(
        &[dead, up.port],
        "circuit_failures = 3\ncircuit_open_ms = 60000\nhealth_check_interval_seconds = 0",
    ))
    .await;
    let c = g.client(true);
    // Round-robin sends every other request to the dead address first: each is retried on the
    // live one, request body included, since nothing reached the dead one.
    for i in 0..6 {
        let r = c.get(g.url("/thing")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {i}");
        let r = c
            .post(g.url("/upload"))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "POST {i}");
    }
    let seen = up.seen.lock().unwrap().clone();
    // (A body, having no blank line after it, is recorded with the head that follows it.)
    assert_eq!(seen.iter().filter(|b| b.contains("GET /thing")).count(), 6);
    assert_eq!(
        seen.iter().filter(|b| b.contains("POST /upload")).count(),
        6
    );
    assert!(g.log().contains("trying the next address"), "{}", g.log());
    // The dead address's failures opened its circuit: requests stop trying it.
    assert!(g.metrics().await.contains(&format!(
        "portcullis_circuit_open{{upstream=\"api\",address=\"127.0.0.1:{dead}\"}} 1"
    )));
    up.kill().await;
    // With no address left to try, the client gets its 502 (then 503 once every circuit is open).
    let r = c.get(g.url("/thing")).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 502 | 503), "{}", r.status());
}

/// Named addresses are resolved when the policy is applied and on a timer, never per request:
/// a name that resolves is served, and one that does not answers 502 over HTTP/1.1 and HTTP/2
/// (before, each such request looked the name up and panicked on the failure, dropping the
/// connection without an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_upstream_addresses_resolve_off_the_request_path() {
    let up = Upstream::start(0).await;
    let g = Gateway::start(Options::with_policy(format!(
        r#"
[[upstreams]]
name = "named"
kind = "external"
addresses = ["localhost:{}"]
health_check_interval_seconds = 0

[[upstreams]]
name = "nowhere"
kind = "external"
addresses = ["no-such-host.invalid:80"]
health_check_interval_seconds = 0

[[routes]]
name = "named"
path_prefix = "/named"
upstream = "named"
public = true

[[routes]]
name = "nowhere"
path_prefix = "/nowhere"
upstream = "nowhere"
public = true
"#,
        up.port
    )))
    .await;
    for http1 in [true, false] {
        let c = g.client(http1);
        for _ in 0..2 {
            let r = c.get(g.url("/named/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "http1 {http1}");
            let r = c.get(g.url("/nowhere/x")).send().await.unwrap();
            assert_eq!(r.status(), 502, "http1 {http1}");
            assert!(r.text().await.unwrap().contains("upstream_unavailable"));
        }
    }
    assert_eq!(up.seen.lock().unwrap().len(), 4);
    assert!(
        g.log().contains("upstream name does not resolve"),
        "{}",
        g.log()
    );
}

/// An address whose name has never resolved takes no request while the pool has one that has,
/// health checks off: before, round-robin gave it every other request, each answered 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_name_in_a_pool_takes_no_requests() {
    let up = Upstream::start(0).await;
    let g = Gateway::start(Options::with_policy(format!(
        r#"
[[upstreams]]
name = "pool"
kind = "external"
addresses = ["no-such-host.invalid:80", "127.0.0.1:{}"]
health_check_interval_seconds = 0

[[routes]]
name = "pool"
path_prefix = "/"
upstream = "pool"
public = true
"#,
        up.port
    )))
    .await;
    for http1 in [true, false] {
        let c = g.client(http1);
        for i in 0..4 {
            let r = c.get(g.url("/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "http1 {http1}, request {i}");
        }
    }
    assert_eq!(up.seen.lock().unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_one_the_upstream_closed_is_never_used() {
    // Idle upstream connections wait in the vendored pool without a task each, and a checkout
    // tests the one it takes (vendored pingora-core, `connectors/idle.rs`).
    let up = Upstream::start(0).await;
    let g = Gateway::start(opts(up.port, 0)).await;
    let c = g.client(true);
    for _ in 0..5 {
        assert_eq!(status(&c, &g).await.0, 200);
    }
    assert_eq!(up.accepted(), 1, "one upstream connection, reused");
    // The upstream closes its idle connection: the next requests never get it, none fails.
    up.close_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        assert_eq!(status(&c, &g).await.0, 200);
    }
    assert_eq!(up.accepted(), 2, "a new connection, then reused");
    // Requests at once take a connection each; afterwards they are all kept and reused.
    let clients: Vec<_> = (0..6).map(|_| g.client(true)).collect();
    let answers = futures_util::future::join_all(clients.iter().map(|c| status(c, &g))).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    let after_burst = up.accepted();
    for _ in 0..10 {
        assert_eq!(status(&c, &g).await.0, 200);
    }
    assert_eq!(up.accepted(), after_burst, "kept connections are reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_pool_keeps_as_many_idle_connections_as_configured() {
    // A burst of requests at once takes an upstream connection each. When it ends, the pool
    // keeps `network.upstream_idle_connections` of them per proxy thread (the harness runs two:
    // one each keeps two) and closes the rest; the default keeps the whole burst for the next.
    const BURST: usize = 6;
    for (kept, env) in [(2, Some("1")), (BURST, None)] {
        let (port, mut events) = slow_upstream(Duration::from_millis(400)).await;
        let mut o = pool(
            &[port],
            "connect_timeout_ms = 2000\nhealth_check_interval_seconds = 0",
        );
        if let Some(n) = env {
            o.env
                .push(("PORTCULLIS_UPSTREAM_IDLE_CONNECTIONS".into(), n.into()));
        }
        let g = Gateway::start(o).await;
        // Each client's TLS connection is made first, one after the other (all through one
        // upstream connection), so the burst's requests reach the gateway together.
        let clients: Vec<_> = (0..BURST).map(|_| g.client(true)).collect();
        for c in &clients {
            assert_eq!(status(c, &g).await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut accepted = accepted_in(&drain(&mut events));
        let answers = futures_util::future::join_all(clients.iter().map(|c| status(c, &g))).await;
        assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
        // Every request of the burst arrived on a connection of its own (the upstream answers
        // each after 400 ms, so none was free for another), then the surplus is closed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = drain(&mut events);
        accepted += accepted_in(&seen);
        let requests = seen.iter().filter(|e| e.starts_with("request")).count();
        let closed = seen.iter().filter(|e| *e == "closed").count();
        assert_eq!(requests, BURST, "{seen:?}");
        assert_eq!(closed, BURST - kept, "kept {kept} of {BURST}: {seen:?}");
        // Requests after the burst reuse a kept connection, and none of the kept ones is closed.
        for _ in 0..kept {
            assert_eq!(status(&clients[0], &g).await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = drain(&mut events);
        accepted += accepted_in(&after);
        assert!(
            !after.iter().any(|e| e == "closed"),
            "kept {kept}: a kept connection was closed: {after:?}"
        );
        // The metric agrees with the upstream: as many opened as it accepted, and every other
        // request (none is retried here) sent on a connection taken from the pool.
        let m = g.metrics().await;
        let count = |reused: &str| {
            let series = format!(
                "portcullis_upstream_connections_total{{upstream=\"api\",reused=\"{reused}\"}}"
            );
            metric_in(&m, &series) as usize
        };
        let (opened, reused) = (count("false"), count("true"));
        assert_eq!(opened, accepted, "opened, against the upstream's count");
        assert_eq!(opened + reused, 2 * BURST + kept, "{opened} + {reused}");
    }
}

/// How many connections `events` says the upstream accepted.
fn accepted_in(events: &[String]) -> usize {
    events.iter().filter(|e| *e == "accepted").count()
}

/// The events `slow_upstream` has reported so far.
fn drain(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// An upstream that reads one request head per connection and answers it after `delay` (`200`,
/// body `ok`), reporting on `events` when it accepts a connection (`accepted`), when a request
/// arrives (`request <path>`) and when the gateway closes a connection it holds (`closed`).
async fn slow_upstream(delay: Duration) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            let _ = tx.send("accepted".to_string());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send("closed".to_string());
                            return;
                        }
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_string();
                        got.drain(..end + 4);
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let _ = tx.send(format!("request {path}"));
                        // Thinks for `delay`, noticing meanwhile a close (or more bytes).
                        let pause = tokio::time::sleep(delay);
                        tokio::pin!(pause);
                        loop {
                            tokio::select! {
                                _ = &mut pause => break,
                                r = s.read(&mut chunk) => match r {
                                    Ok(0) | Err(_) => {
                                        let _ = tx.send("closed".to_string());
                                        return;
                                    }
                                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                                },
                            }
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

async fn next_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    within: Duration,
) -> String {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await.expect("the upstream runs") {
                e if e == "accepted" => continue,
                e => return e,
            }
        }
    })
    .await
    .expect("an upstream event in time")
}

/// A gateway in front of [`slow_upstream`] (`delay`), and a TLS connection whose `GET path`
/// the upstream has received: the gateway, the connection and the upstream's events.
async fn request_to_slow_upstream(
    delay: Duration,
    path: &str,
) -> (
    Gateway,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::AsyncWriteExt;
    let (port, mut events) = slow_upstream(delay).await;
    let g = Gateway::start(opts(port, 0)).await;
    let mut tls = g.tls_connect().await;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        format!("request {path}")
    );
    (g, tls, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_the_upstream_thinks_frees_the_upstream_connection() {
    // A request without a body takes the vendored bodiless path (pingora-proxy,
    // `proxy_h1_bodiless`), which watches the client's connection while it waits for the
    // upstream: the client leaving ends the request and its upstream connection at once, long
    // before the upstream would answer (30 s) or time out (60 s).
    let (_g, tls, mut events) = request_to_slow_upstream(Duration::from_secs(30), "/slow").await;
    drop(tls);
    let t = Instant::now();
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        "closed"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_cancels_its_request_frees_the_upstream_connection() {
    // HTTP/2 requests without a body take the bodiless path too, which watches the request's
    // stream while the upstream thinks: the client resetting it (a cancelled request) ends the
    // request and its upstream connection at once, not after the upstream's 30 s.
    let (port, mut events) = slow_upstream(Duration::from_secs(30)).await;
    let g = Gateway::start(opts(port, 0)).await;
    let c = g.client(false);
    // The gateway answers `/health` itself: the connection is made, and is HTTP/2.
    let first = c.get(g.url("/health")).send().await.unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    let pending = tokio::spawn({
        let (c, url) = (c.clone(), g.url("/slow"));
        async move { c.get(url).send().await.map(|r| r.status()) }
    });
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        "request /slow"
    );
    // Dropping the pending request resets its stream; the connection stays open.
    pending.abort();
    let t = Instant::now();
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        "closed"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_behind_a_slow_answer_waits_its_turn() {
    // The bodiless path keeps the first bytes of a request that arrives while the upstream is
    // still answering the one before, and serves it next on the same connection.
    use tokio::io::AsyncWriteExt;
    let (_g, mut tls, mut events) =
        request_to_slow_upstream(Duration::from_millis(500), "/first").await;
    // The next request arrives in two pieces while the first is being answered.
    tls.write_all(b"G").await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.write_all(b"ET /second HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (heads, closed) = common::read_responses(&mut tls, 2).await;
    assert!(!closed, "the connection stays open: {heads:?}");
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads.iter().all(|h| h.starts_with("http/1.1 200")),
        "{heads:?}"
    );
    assert_eq!(
        next_event(&mut events, Duration::from_secs(5)).await,
        "request /second"
    );
}

/// Header names pass through HTTP/1 in one of two documented spellings: by default as HTTP/2
/// writes them (well-known names title-cased, others lower-case), with
/// `network.preserve_header_case` exactly as they arrived. Values, and every header, arrive
/// either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_keep_their_case_only_when_asked() {
    const MIXED: &[u8] = b"HTTP/1.1 200 OK\r\nX-Upstream-Says: Hello\r\ncontent-TYPE: text/plain\r\nContent-Length: 2\r\n\r\nok";
    for preserve in [false, true] {
        let up = Upstream::start_with(0, MIXED).await;
        let mut opts = public_route_to(up.port, 10_000);
        opts.env.push((
            "PORTCULLIS_PRESERVE_HEADER_CASE".into(),
            preserve.to_string(),
        ));
        let g = Gateway::start(opts).await;
        let answer = g
            .raw(b"GET /case HTTP/1.1\r\nHost: localhost\r\nX-Client-Says: Hi\r\nACCEPT: */*\r\nConnection: close\r\n\r\n")
            .await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(body, "ok");
        let seen = up.seen.lock().unwrap().clone();
        let request = seen.first().expect("the upstream got the request").clone();
        let lines = |text: &str| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
        let (sent, got) = (lines(&request), lines(head));
        // (to the upstream, back to the client), each as it must read in this mode
        let (to_upstream, to_client) = if preserve {
            (
                ["X-Client-Says: Hi", "ACCEPT: */*"],
                ["X-Upstream-Says: Hello", "content-TYPE: text/plain"],
            )
        } else {
            (
                ["x-client-says: Hi", "accept: */*"],
                ["x-upstream-says: Hello", "Content-Type: text/plain"],
            )
        };
        for line in to_upstream {
            assert!(sent.contains(&line.to_string()), "{line}: {request}");
        }
        for line in to_client {
            assert!(got.contains(&line.to_string()), "{line}: {head}");
        }
        assert!(sent.contains(&"Host: localhost".to_string()), "{request}");
    }
}

/// Hop-by-hop fields stop at the gateway: the standard ones, `Proxy-Connection`, `HTTP2-Settings`
/// and whatever the client's `Connection` nominates; a request that has none arrives with every
/// field it sent.
#[tokio::test]
async fn hop_by_hop_fields_stop_at_the_gateway_and_the_others_go_on() {
    let up = Upstream::start(0).await;
    let g = Gateway::start(public_route_to(up.port, 10_000)).await;
    // Two requests on one connection: the first without a hop-by-hop field, the second with
    // every kind (and `close`, so the answer ends).
    let answer = g
        .raw(
            b"GET /plain HTTP/1.1\r\nHost: localhost\r\nX-One: 1\r\nAccept: */*\r\nX-Two: 2\r\n\r\n\
GET /hops HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Nominated\r\nKeep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Nominated: 1\r\nX-Kept: 2\r\n\
Proxy-Authorization: Basic Zm9vOmJhcg==\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        )
        .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let lines = |text: &str| {
        text.lines()
            .skip(1)
            .map(|l| l.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let plain = lines(&seen[0]);
    for line in ["x-one: 1", "accept: */*", "x-two: 2", "host: localhost"] {
        assert!(plain.contains(&line.to_string()), "{line}: {}", seen[0]);
    }
    let hops = lines(&seen[1]);
    assert!(hops.contains(&"x-kept: 2".to_string()), "{}", seen[1]);
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-nominated",
        "proxy-authorization",
        "http2-settings",
    ] {
        assert!(
            !hops.iter().any(|l| l.starts_with(&format!("{name}:"))),
            "{name} reached the upstream: {}",
            seen[1]
        );
    }
}

/// A pooled upstream connection is reused within the upstream's `idle_timeout_seconds` and never
/// after it: the first request past the timeout opens a new connection (and `0` reuses none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_is_not_reused_past_its_idle_timeout() {
    for (idle, wait_ms, connections) in [(None, 1500, 1), (Some(1), 1500, 2), (Some(0), 0, 2)] {
        let up = Upstream::start(0).await;
        let idle_line = idle.map_or(String::new(), |s| format!("idle_timeout_seconds = {s}"));
        let policy = public_route_policy(up.port, &idle_line);
        let g = Gateway::start(Options::with_policy(policy)).await;
        let client = g.client(true);
        for i in 0..2 {
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            }
            let r = client.get(g.url("/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "idle_timeout_seconds {idle:?}");
        }
        assert_eq!(
            up.accepted(),
            connections,
            "idle_timeout_seconds {idle:?}, second request after {wait_ms} ms"
        );
    }
}

/// When every address refuses, each failure counts once against its own circuit: the address a
/// request ends on is recorded when the request ends, not also when its connect failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_address_counts_once_against_its_circuit() {
    let ((a, _held_a), (b, _held_b)) = (dead_port(), dead_port());
    let g = Gateway::start(pool(
        &[a, b],
        "circuit_failures = 2\ncircuit_open_ms = 60000\nhealth_check_interval_seconds = 0",
    ))
    .await;
    let c = g.client(true);
    let open = |m: &str, port: u16| {
        m.contains(&format!(
            "portcullis_circuit_open{{upstream=\"api\",address=\"127.0.0.1:{port}\"}} 1"
        ))
    };
    // One request tries both addresses: one failure each, below the threshold of two.
    let r = c.get(g.url("/thing")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let m = g.metrics().await;
    assert!(!open(&m, a) && !open(&m, b), "{m}");
    // A second request tries both again: each has failed twice, and both circuits are open.
    let r = c.get(g.url("/thing")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let m = g.metrics().await;
    assert!(open(&m, a) && open(&m, b), "{m}");
    let r = c.get(g.url("/thing")).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

/// An upstream that accepts connections but answers every request 503 passes a TCP check and
/// fails an HTTP one: with `health_check_path`, it leaves rotation and its requests go to the
/// healthy address. The check sends the configured method, path and Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_takes_an_address_that_answers_5xx_out_of_rotation() {
    let good = Upstream::start(0).await;
    let sick = Upstream::start_with(
        0,
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nsick",
    )
    .await;
    let g = Gateway::start(pool(
        &[good.port, sick.port],
        "circuit_failures = 100\nhealth_check_interval_seconds = 1\nhealth_check_fall = 1\n\
         health_check_path = \"/healthz\"\nhealth_check_method = \"HEAD\"\n\
         health_check_host = \"api.internal\"\nhealth_check_statuses = [\"2xx\", 304]",
    ))
    .await;
    eventually(Duration::from_secs(5), "the 5xx address out", || async {
        g.log().contains("health check: down").then_some(())
    })
    .await;
    let c = g.client(true);
    for _ in 0..10 {
        assert_eq!(
            status(&c, &g).await.0,
            200,
            "only the healthy address serves"
        );
    }
    let log = g.log();
    assert!(
        log.contains(&format!("127.0.0.1:{}", sick.port)) && log.contains("status 503"),
        "the reason is logged: {log}"
    );
    let heads = sick.seen.lock().unwrap().clone();
    let check = heads
        .iter()
        .find(|h| h.starts_with("HEAD /healthz HTTP/1.1"))
        .unwrap_or_else(|| panic!("no health check request: {heads:?}"));
    assert!(
        check.to_ascii_lowercase().contains("host: api.internal"),
        "{check}"
    );
    // The healthy address passed its checks: it was never logged down.
    assert!(
        !log.contains(&format!(
            "\"address\":\"127.0.0.1:{}\",\"failures\"",
            good.port
        )),
        "{log}"
    );
}

/// An upstream over TLS is checked over TLS, verified against its pinned CA, and stays in
/// rotation while it answers 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_of_a_tls_upstream_goes_over_verified_tls() {
    let ca = TestCa::new("upstream CA");
    let (cert, key) = ca.leaf(&["api.internal"]);
    let up = common::upstream::TlsTestUpstream::start(&cert, &key, false).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let g = Gateway::start(Options::with_policy(format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{}"]
tls = true
sni = "api.internal"
ca_file = "{}"
health_check_interval_seconds = 1
health_check_fall = 1
health_check_path = "/ready"

[[routes]]
name = "api"
path_prefix = "/"
upstream = "api"
public = true
"#,
        up.port,
        ca_file.display()
    )))
    .await;
    // Handshakes come from checks alone until a request is sent.
    eventually(Duration::from_secs(5), "checks over TLS", || async {
        (up.handshakes.load(std::sync::atomic::Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
    assert!(!g.log().contains("health check: down"), "{}", g.log());
    let r = g.client(true).get(g.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls-ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_settings_without_a_path_or_with_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("up.toml"),
        "[[upstreams]]\nname = \"a\"\nkind = \"external\"\naddresses = [\"127.0.0.1:1\"]\nhealth_check_method = \"POST\"\n\n\
         [[upstreams]]\nname = \"b\"\nkind = \"external\"\naddresses = [\"127.0.0.1:1\"]\nhealth_check_path = \"/h\"\nhealth_check_method = \"DELETE\"\n\n\
         [[upstreams]]\nname = \"c\"\nkind = \"external\"\naddresses = [\"127.0.0.1:1\"]\nhealth_check_path = \"/h\"\nhealth_check_statuses = [\"6xx\"]\n",
    )
    .unwrap();
    let (ok, text) = check_policy_dir(dir.path());
    assert!(!ok, "{text}");
    for want in [
        "up.toml:5: upstreams[0].health_check_method: needs health_check_path",
        "up.toml:12: upstreams[1].health_check_method: one of GET, HEAD, OPTIONS",
        "upstreams[2].health_check_statuses: each entry is a status code",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
}

/// An upstream that answers the first request on each connection and keeps it open, then
/// closes the connection when the next request arrives on it, without answering: each pooled
/// connection fails the request that reuses it, as a keep-alive race with an upstream closing
/// idle connections does. Returns its port and how many requests reached it.
async fn one_request_per_connection() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let s2 = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let served = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                let mut answered = false;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        if answered {
                            // The second request: close the connection, no answer.
                            return;
                        }
                        answered = true;
                        got.clear();
                        served.fetch_add(1, Ordering::Relaxed);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (port, served)
}

async fn retries(g: &Gateway, result: &str) -> u64 {
    let m = g.metrics().await;
    let prefix =
        format!("portcullis_upstream_retries_total{{upstream=\"api\",result=\"{result}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}: {m}"))
}

/// Every pooled connection fails the request that reuses it. Idempotent requests are sent once
/// more on a fresh connection and all succeed, each retry counted; a POST is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_meets_a_closed_pooled_connection_is_retried_once() {
    let (port, served) = one_request_per_connection().await;
    let g = Gateway::start(pool(
        &[port],
        "circuit_failures = 100\nhealth_check_interval_seconds = 0\nretry_budget_percent = 100",
    ))
    .await;
    let c = g.client(true);
    for i in 0..40 {
        let (s, body, _) = status(&c, &g).await;
        assert_eq!(s, 200, "request {i}: {body}");
    }
    let sent = retries(&g, "sent").await;
    assert!(sent >= 10, "retries counted: {sent}");
    assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 40);
    assert_eq!(retries(&g, "budget_exhausted").await, 0);
    assert!(g.log().contains("retrying once"), "{}", g.log());

    // A POST on a reused connection is not retried: its failure reaches the client.
    let mut failed = 0;
    for _ in 0..6 {
        let r = c.post(g.url("/thing")).body("x").send().await.unwrap();
        if r.status() == 502 {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "a POST that met a closed connection was retried"
    );
    assert_eq!(retries(&g, "sent").await, sent, "POSTs are never retried");
}

/// With the budget at its default share, an upstream that fails every reused request gets a
/// bounded number of retries: the rest fail, and the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries_when_an_upstream_keeps_failing() {
    let (port, _) = one_request_per_connection().await;
    let g = Gateway::start(pool(
        &[port],
        "circuit_failures = 1000\nhealth_check_interval_seconds = 0\nretry_budget_percent = 5",
    ))
    .await;
    let c = g.client(true);
    let mut failed = 0;
    for _ in 0..120 {
        if status(&c, &g).await.0 != 200 {
            failed += 1;
        }
    }
    let (sent, exhausted) = (
        retries(&g, "sent").await,
        retries(&g, "budget_exhausted").await,
    );
    // A starting balance of 10, plus 5% of the requests.
    assert!(
        sent <= 10 + 120 * 5 / 100 + 1,
        "retries beyond the budget: {sent}"
    );
    assert!(
        exhausted > 0 && failed > 0,
        "sent {sent}, exhausted {exhausted}, failed {failed}"
    );
    assert!(g.log().contains("retry budget spent"), "{}", g.log());
}
