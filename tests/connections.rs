//! Every client connection's life is bounded (`[network]` in `portcullis.toml` and the policy's
//! header timeout): an idle keep-alive connection is closed, the next request's header and a
//! request body must keep arriving, a connection carries a bounded number of requests, and an
//! idle HTTP/2 connection gets GOAWAY. Each test configures bounds of a second or two and waits
//! for the close with a limit well under the defaults.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// A route to `port` on `/`, with the policy's header timeout at `header_ms` and `network`
/// in `portcullis.toml`'s `[network]`.
fn opts(port: u16, header_ms: u64, network: &str) -> Options {
    Options {
        config_extra: format!("\n[network]\n{network}\n"),
        ..public_route_to(port, header_ms)
    }
}

/// Reads one response head and its `content-length` body; the lower-cased head.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> String {
    tokio::time::timeout(Duration::from_secs(10), common::read_message(s))
        .await
        .expect("a response within 10 s")
        .expect("closed before a whole response")
        .0
}

/// Waits up to `limit` for the server to close; returns how long that took and what it sent
/// first, or panics naming `what`.
async fn closed_within<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
    what: &str,
) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut chunk)).await
        {
            Err(_) => panic!("{what}: still open after {limit:?} (sent {got:?})"),
            Ok(Ok(0)) | Ok(Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n";

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A gateway with these bounds in front of a test upstream, and a TLS connection whose first
/// keep-alive `GET` was answered 200: the upstream, the gateway, the connection and the
/// lower-cased response head (kept so the test owns everything it started).
async fn after_one_request(
    header_ms: u64,
    network: &str,
) -> (common::upstream::TestUpstream, Gateway, Tls, String) {
    let up = common::upstream::TestUpstream::start(0).await;
    let g = Gateway::start(opts(up.port, header_ms, network)).await;
    let mut tls = g.tls_connect().await;
    tls.write_all(GET).await.unwrap();
    let head = read_response(&mut tls).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    (up, g, tls, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout() {
    let (_up, _g, mut tls, head) = after_one_request(10_000, "keepalive_timeout_seconds = 1").await;
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    // One request, then quiet: closed at the idle timeout, long before the header timeout.
    let (took, sent) = closed_within(&mut tls, Duration::from_secs(6), "idle connection").await;
    assert!(sent.is_empty(), "nothing more is sent: {sent:?}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_header_on_a_connection_must_arrive_within_the_header_timeout() {
    let (up, g, mut tls, _) = after_one_request(1000, "keepalive_timeout_seconds = 60").await;
    // The second request starts and never ends: cut at the header timeout (1 s), not at the
    // keep-alive timeout (60 s) that bounds each read.
    tls.write_all(b"GET /b HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let (took, _) = closed_within(&mut tls, Duration::from_secs(6), "half a header").await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert_eq!(up.seen.lock().unwrap().len(), 1, "only the first request");
    // A client cut at a timeout is routine, not a fault: logged at INFO, never ERROR.
    eventually(Duration::from_secs(5), "the cut is logged", || async {
        g.log()
            .lines()
            .any(|l| l.contains("header timeout") && l.contains("\"level\":\"INFO\""))
            .then_some(())
    })
    .await;
    assert!(!g.log().contains("\"level\":\"ERROR\""), "{}", g.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_may_arrive_in_pieces_or_pipelined_and_is_answered_whole() {
    // Between requests the connection waits for the next one's first bytes on its own (vendored
    // pingora-core, `await_next_request`); whatever that wait read must be parsed with the rest.
    let (up, _g, mut tls, _) = after_one_request(5000, "keepalive_timeout_seconds = 60").await;
    let long = format!(
        "GET /pieces/{} HTTP/1.1\r\nHost: localhost\r\nX-Long: {}\r\n\r\n",
        "p".repeat(100),
        "v".repeat(300)
    );
    for piece in [&long[..1], &long[1..70], &long[70..200], &long[200..]] {
        tls.write_all(piece.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = read_response(&mut tls).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Two requests in one write, then one whose first byte came alone.
    tls.write_all(
        b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\nGET /two HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    // Both answers may arrive in one read.
    let (heads, _) = common::read_responses(&mut tls, 2).await;
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in heads {
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
    tls.write_all(b"G").await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.write_all(&GET[1..]).await.unwrap();
    let head = read_response(&mut tls).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen = up.seen.lock().unwrap().join("\n");
    for path in [
        format!("/pieces/{}", "p".repeat(100)),
        "/one".into(),
        "/two".into(),
    ] {
        assert!(
            seen.contains(&format!("GET {path} HTTP/1.1")),
            "{path} in {seen}"
        );
    }
    assert!(seen.contains(&"v".repeat(300)), "the long header whole");
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_tls_connection_holds_little_memory() {
    // An idle connection holds its stream and a small wait for the next request, not a session,
    // its buffers and the request's future (vendored pingora-core: `await_next_request`, the
    // boxed handshake and HTTP/2 branch; no read buffer below TLS by default). Held after one
    // answered request each; the bound has room for a debug build's larger futures and would
    // not hold with the session kept (over 60 KiB each).
    const CONNS: usize = 600;
    let up = common::upstream::TestUpstream::start(0).await;
    let mut o = opts(up.port, 5000, "keepalive_timeout_seconds = 120");
    // The policy ends in its `[network]` table: room for every connection from one address.
    o.policy[0]
        .1
        .push_str("max_connections_per_ip = 5000\nmax_connections = 5000\n");
    let g = Gateway::start(o).await;
    // One connection first, so what every connection shares is in place before measuring.
    let mut first = g.tls_connect().await;
    first.write_all(GET).await.unwrap();
    read_response(&mut first).await;
    let before = rss_kib(g.pid());
    let mut held = vec![first];
    for _ in 0..CONNS {
        let mut tls = g.tls_connect().await;
        tls.write_all(GET).await.unwrap();
        let head = read_response(&mut tls).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        held.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = (rss_kib(g.pid()).saturating_sub(before)) as f64 / CONNS as f64;
    eprintln!("{per:.1} KiB per idle connection");
    assert!(per <= 40.0, "{per:.1} KiB per idle connection");
    drop(held);
}

/// An upstream that accepts and reads but never answers.
async fn silent_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            held.push(tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            }));
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_arriving_is_cut_at_the_body_timeout() {
    let (port, _up) = silent_upstream().await;
    let g = Gateway::start(opts(
        port,
        10_000,
        "keepalive_timeout_seconds = 60\nbody_timeout_seconds = 1",
    ))
    .await;
    let mut tls = g.tls_connect().await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let (took, _) = closed_within(&mut tls, Duration::from_secs(6), "stalled body").await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_at_most_max_requests_per_connection() {
    let (_up, _g, mut tls, first) =
        after_one_request(10_000, "max_requests_per_connection = 2").await;
    assert!(!first.contains("connection: close"), "{first}");
    tls.write_all(GET).await.unwrap();
    let second = read_response(&mut tls).await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(
        second.contains("connection: close"),
        "the last one: {second}"
    );
    let (_, sent) = closed_within(&mut tls, Duration::from_secs(5), "after the limit").await;
    assert!(sent.is_empty(), "{sent:?}");
}

/// An upstream answering every request with `len` bytes of body.
async fn large_upstream(len: usize) -> common::upstream::TestUpstream {
    let mut resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").into_bytes();
    resp.resize(resp.len() + len, b'x');
    common::upstream::TestUpstream::start_with(0, Box::leak(resp.into_boxed_slice())).await
}

/// More than the socket buffers on both sides of the gateway hold.
const LARGE: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_response_is_cut_at_the_send_timeout() {
    let up = large_upstream(LARGE).await;
    let g = Gateway::start(opts(
        up.port,
        10_000,
        "keepalive_timeout_seconds = 60\nsend_timeout_seconds = 1",
    ))
    .await;
    let mut tls = g.tls_connect().await;
    tls.write_all(GET).await.unwrap();
    // The client reads nothing: the gateway's writes stall once the buffers are full, and the
    // stall outlasts the send timeout (1 s) well before this test reads again.
    eventually(
        Duration::from_secs(10),
        "the stalled send is cut",
        || async { g.log().contains("timeout").then_some(()) },
    )
    .await;
    let start = Instant::now();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk)).await {
            Err(_) => panic!("still open after the send timeout ({got} bytes read)"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    assert!(got < LARGE, "the response was cut: {got} bytes");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_grants_no_window_is_cut_at_the_send_timeout() {
    let up = large_upstream(LARGE).await;
    let g = Gateway::start(opts(
        up.port,
        10_000,
        "keepalive_timeout_seconds = 1\nsend_timeout_seconds = 1",
    ))
    .await;
    let mut tls = h2_connect(&g).await;
    let mut hpack = vec![0x82, 0x87, 0x04, 0x02, b'/', b'a', 0x01, 0x09];
    hpack.extend_from_slice(b"localhost");
    tls.write_all(&frame(0x1, 0x5, 1, &hpack)).await.unwrap();
    // The client reads what arrives but never sends WINDOW_UPDATE: the stream stalls at the
    // initial 64 KiB window. The stream is dropped at the send timeout, and the connection,
    // then idle, is closed at the keep-alive timeout.
    let start = Instant::now();
    let mut data = 0usize;
    loop {
        let f = tokio::time::timeout(Duration::from_secs(8), read_frame(&mut tls))
            .await
            .expect("the HTTP/2 connection with a stalled response is still open after 8 s");
        match f {
            None => break,
            Some((0x0, _, 1, payload)) => data += payload.len(),
            Some((0x4, flags, _, _)) if flags & 1 == 0 => {
                tls.write_all(&frame(0x4, 1, 0, &[])).await.unwrap()
            }
            Some(_) => {}
        }
    }
    assert!(data < LARGE, "the response was cut: {data} bytes");
    assert!(start.elapsed() >= Duration::from_millis(900));
}

/// One HTTP/2 frame: (type, flags, stream, payload).
type Frame = (u8, u8, u32, Vec<u8>);

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Frame> {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).await.ok()?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((h[3], h[4], stream, payload))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let up = common::upstream::TestUpstream::start(0).await;
    let g = Gateway::start(opts(up.port, 10_000, "keepalive_timeout_seconds = 1")).await;
    let mut tls = h2_connect(&g).await;
    // GET https://localhost/a (HPACK: :method GET, :scheme https, :path and :authority from
    // literals) ending the stream.
    let mut hpack = vec![0x82, 0x87, 0x04, 0x02, b'/', b'a', 0x01, 0x09];
    hpack.extend_from_slice(b"localhost");
    tls.write_all(&frame(0x1, 0x5, 1, &hpack)).await.unwrap();
    let start = Instant::now();
    let (mut answered, mut goaway) = (None, None);
    loop {
        let f = tokio::time::timeout(Duration::from_secs(6), read_frame(&mut tls))
            .await
            .expect("the idle HTTP/2 connection is still open after 6 s");
        let Some((kind, flags, stream, payload)) = f else {
            break;
        };
        match kind {
            0x4 if flags & 1 == 0 => tls.write_all(&frame(0x4, 1, 0, &[])).await.unwrap(),
            0x1 if stream == 1 => answered = Some(start.elapsed()),
            0x7 => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                goaway = Some((start.elapsed(), code));
            }
            _ => {}
        }
    }
    assert!(answered.is_some(), "the request was answered");
    let (at, code) = goaway.expect("GOAWAY before the close");
    assert_eq!(code, 0, "NO_ERROR");
    assert!(at >= Duration::from_millis(900), "GOAWAY after {at:?}");
}

/// A TLS connection to the gateway offering only HTTP/2, with the preface and SETTINGS sent.
async fn h2_connect(g: &Gateway) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut cfg = (*g.tls_client_config()).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    tls.write_all(&out).await.unwrap();
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_body_that_stops_arriving_is_cut_at_the_body_timeout() {
    let (port, _up) = silent_upstream().await;
    let g = Gateway::start(opts(
        port,
        10_000,
        "keepalive_timeout_seconds = 60\nbody_timeout_seconds = 1",
    ))
    .await;
    let mut tls = h2_connect(&g).await;
    // POST https://localhost/upload, headers ended but not the stream; three body bytes, then
    // nothing more.
    let mut hpack = vec![0x83, 0x87, 0x04, 0x07];
    hpack.extend_from_slice(b"/upload");
    hpack.extend_from_slice(&[0x01, 0x09]);
    hpack.extend_from_slice(b"localhost");
    let mut out = frame(0x1, 0x4, 1, &hpack);
    out.extend(frame(0x0, 0, 1, b"abc"));
    tls.write_all(&out).await.unwrap();
    let start = Instant::now();
    let ended = loop {
        let f = tokio::time::timeout(Duration::from_secs(6), read_frame(&mut tls))
            .await
            .expect("the stalled HTTP/2 body is still waited for after 6 s");
        match f {
            None => break "connection closed",
            Some((0x4, flags, _, _)) if flags & 1 == 0 => {
                tls.write_all(&frame(0x4, 1, 0, &[])).await.unwrap()
            }
            Some((0x1, _, 1, _)) => break "answered",
            Some((0x3, _, 1, _)) => break "reset",
            Some((0x7, ..)) => break "GOAWAY",
            Some(_) => {}
        }
    };
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "{ended} after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_carries_at_most_max_requests_per_connection() {
    let up = common::upstream::TestUpstream::start(0).await;
    let g = Gateway::start(opts(up.port, 10_000, "max_requests_per_connection = 2")).await;
    let mut tls = h2_connect(&g).await;
    let mut hpack = vec![0x82, 0x87, 0x04, 0x02, b'/', b'a', 0x01, 0x09];
    hpack.extend_from_slice(b"localhost");
    let mut out = frame(0x1, 0x5, 1, &hpack);
    out.extend(frame(0x1, 0x5, 3, &hpack));
    tls.write_all(&out).await.unwrap();
    let (mut answered, mut goaway) = (Vec::new(), false);
    loop {
        let f = tokio::time::timeout(Duration::from_secs(6), read_frame(&mut tls))
            .await
            .expect("the HTTP/2 connection is still open after its last request");
        match f {
            None => break,
            Some((0x4, flags, _, _)) if flags & 1 == 0 => {
                tls.write_all(&frame(0x4, 1, 0, &[])).await.unwrap()
            }
            Some((0x1, _, stream, _)) => answered.push(stream),
            Some((0x7, ..)) => goaway = true,
            // A graceful shutdown waits for the PING it sends to be answered.
            Some((0x6, flags, _, payload)) if flags & 1 == 0 => {
                tls.write_all(&frame(0x6, 1, 0, &payload)).await.unwrap()
            }
            Some(_) => {}
        }
    }
    // Two concurrent streams: either may be answered first.
    answered.sort_unstable();
    assert_eq!(answered, [1, 3], "both requests answered");
    assert!(goaway, "GOAWAY after the last request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_answers_the_shutdown_ping_is_refused_and_closed() {
    let up = common::upstream::TestUpstream::start(0).await;
    let g = Gateway::start(opts(
        up.port,
        10_000,
        "keepalive_timeout_seconds = 1\nmax_requests_per_connection = 2",
    ))
    .await;
    let mut tls = h2_connect(&g).await;
    let mut hpack = vec![0x82, 0x87, 0x04, 0x02, b'/', b'a', 0x01, 0x09];
    hpack.extend_from_slice(b"localhost");
    let mut out = frame(0x1, 0x5, 1, &hpack);
    out.extend(frame(0x1, 0x5, 3, &hpack));
    tls.write_all(&out).await.unwrap();
    // The shutdown PING is never answered, so h2's final GOAWAY never comes; the client opens
    // more streams after the first GOAWAY.
    let (mut answered, mut refused, mut more_sent) = (Vec::new(), Vec::new(), false);
    let start = Instant::now();
    loop {
        let f = tokio::time::timeout(Duration::from_secs(8), read_frame(&mut tls))
            .await
            .expect("the draining HTTP/2 connection is still open after 8 s");
        match f {
            None => break,
            Some((0x4, flags, _, _)) if flags & 1 == 0 => {
                tls.write_all(&frame(0x4, 1, 0, &[])).await.unwrap()
            }
            Some((0x1, _, stream, _)) => answered.push(stream),
            Some((0x3, _, stream, payload)) => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                refused.push((stream, code));
            }
            Some((0x7, ..)) if !more_sent => {
                more_sent = true;
                let mut out = frame(0x1, 0x5, 5, &hpack);
                out.extend(frame(0x1, 0x5, 7, &hpack));
                tls.write_all(&out).await.unwrap();
            }
            Some(_) => {}
        }
    }
    assert!(more_sent, "GOAWAY after the last request");
    answered.sort_unstable();
    assert_eq!(
        answered,
        [1, 3],
        "only the requests within the limit are answered"
    );
    // REFUSED_STREAM (7): the client may retry them on a new connection.
    assert_eq!(
        refused,
        [(5, 7), (7, 7)],
        "streams past the limit are refused"
    );
    assert_eq!(
        up.seen.lock().unwrap().len(),
        2,
        "nothing past the limit went upstream"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
}

/// A WebSocket tunnel keeps its own budgets and idle timeout: the connection bounds for
/// requests (idle and body, 1 s here) do not cut a quiet session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_outlives_the_request_bounds() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let policy = r#"
[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "rooms"
path_prefix = "/rooms/"
upstream = "rooms"
auth = "room"

[rooms]
keys = [{ kid = "k1", algorithm = "HS256", secret = "room-key-for-connection-tests-0123456789" }]

[websocket]
idle_timeout_seconds = 60
"#;
    let g = Gateway::start(Options {
        policy: vec![("p.toml".into(), policy.into())],
        config_extra: "\n[network]\nkeepalive_timeout_seconds = 1\nbody_timeout_seconds = 1\n"
            .into(),
        ..Default::default()
    })
    .await;
    let (mut a, mut b) = common::ws::pair(&g, "quiet").await;
    // Quiet for well past both bounds: a wait for time to pass, not for an event.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.send(Message::Text("still here".into())).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = b.next().await {
            if m.to_text().unwrap_or("").contains("still here") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(heard, Ok(true), "the quiet session stays open");
}

/// The plain-HTTP (redirect) and admin listeners bound each request head, and with it the idle
/// wait between requests, by the policy's header timeout: a connection that sends nothing, or
/// trickles half a header, is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_and_admin_listeners_close_silent_and_trickling_connections() {
    let up = common::upstream::TestUpstream::start(0).await;
    let g = Gateway::start(opts(up.port, 1000, "keepalive_timeout_seconds = 60")).await;
    let http = g.http.expect("the plain-HTTP listener");
    for (addr, what) in [(http, "plain HTTP"), (g.admin, "admin")] {
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (took, _) = closed_within(&mut silent, Duration::from_secs(6), what).await;
        assert!(
            took >= Duration::from_millis(900),
            "{what}: closed after {took:?}"
        );
        let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
        trickle
            .write_all(b"GET / HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        closed_within(&mut trickle, Duration::from_secs(6), what).await;
    }
    // A kept-alive connection that goes quiet after a request is closed too.
    let mut idle = tokio::net::TcpStream::connect(http).await.unwrap();
    idle.write_all(GET).await.unwrap();
    let head = read_response(&mut idle).await;
    assert!(head.starts_with("http/1.1 30"), "{head}");
    closed_within(&mut idle, Duration::from_secs(6), "idle plain HTTP").await;
}
