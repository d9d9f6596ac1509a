//! Request hygiene over raw sockets: classic smuggling and framing tricks never reach the
//! upstream, and a slowloris client is cut off at the header timeout while others are served.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opts(port: u16) -> Options {
    public_route_to(port, 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_framing_tricks_never_reach_the_upstream() {
    let up = common::upstream::TestUpstream::start(0).await;
    let (port, seen) = (up.port, up.seen.clone());
    let g = Gateway::start(opts(port)).await;
    // A well-formed request reaches it, as a control.
    let ok = g
        .raw(b"GET /control HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    seen.lock().unwrap().clear();

    let cases: &[(&str, &[u8])] = &[
        ("CL+TE", b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        ("TE+CL", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /smuggled HTTP/1.1\r\n\r\n0\r\n\r\n"),
        ("duplicate differing CL", b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc"),
        ("CL list", b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3, 30\r\n\r\nabc"),
        ("obfuscated TE: xchunked", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE: chunked, identity", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE with space before colon", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n"),
        ("obs-fold TE", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
        ("NUL in header", b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n"),
        ("CR in header value", b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n"),
        ("no Host on HTTP/1.1", b"GET /a HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ];
    // Malformed chunk framing: Pingora streams the request head before it reaches the bad
    // chunk, so the upstream sees a head whose body is then aborted (no request completes, no
    // second request follows); the client gets 400.
    let aborted: &[(&str, &[u8])] = &[
        ("bad chunk size", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("negative chunk size", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
        ("oversized chunk size", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        // nginx refuses it too: a peer reading the LF as a line end would frame differently.
        ("bare LF in a chunk extension", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ("bare LF in the last chunk's extension", b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0;a\nb\r\n\r\n"),
    ];
    let more: &[(&str, &[u8])] = &[
        (
            "two Host headers",
            b"GET /a HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        ),
        (
            "absolute-form for another host",
            b"GET http://evil.example/a HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "TE on HTTP/1.0",
            b"POST /a HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "space in header name",
            b"GET /a HTTP/1.1\r\nHost: localhost\r\nX A: b\r\n\r\n",
        ),
    ];
    let mut leaked = Vec::new();
    for (name, req) in cases.iter().chain(more.iter()) {
        let resp = g.raw(req).await;
        let status = resp.get(9..12).unwrap_or("---").to_string();
        let reached = std::mem::take(&mut *seen.lock().unwrap());
        if !reached.is_empty() || status.starts_with('2') {
            leaked.push(format!("{name}: status {status}, upstream saw {reached:?}"));
        }
    }
    for (name, req) in aborted {
        let resp = g.raw(req).await;
        // The aborted head may be recorded a moment after the client's answer: let it land
        // here rather than in the next case.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let status = resp.get(9..12).unwrap_or("---").to_string();
        let reached = std::mem::take(&mut *seen.lock().unwrap());
        if reached.len() > 1 || !status.starts_with('4') {
            leaked.push(format!("{name}: status {status}, upstream saw {reached:?}"));
        }
    }
    assert!(
        leaked.is_empty(),
        "reached the upstream:\n{}",
        leaked.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let up = common::upstream::TestUpstream::start(0).await;
    let port = up.port;
    let g = Gateway::start(opts(port)).await;
    // Completes TLS, then trickles its request header one byte every 200 ms.
    let mut slow = g.tls_connect().await;
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
        (
            start.elapsed(),
            n.map(|r| r.unwrap_or(0)).unwrap_or(usize::MAX),
        )
    });
    // A TCP client that never even starts TLS is cut too.
    let mut idle = tokio::net::TcpStream::connect(g.https).await.unwrap();
    // Meanwhile, a normal client is served on one keep-alive connection that outlives the
    // header deadline: only connections that never send a request are cut.
    let c = g.client(true);
    for _ in 0..8 {
        assert_eq!(c.get(g.url("/normal")).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (took, n) = trickle.await.unwrap();
    assert_eq!(
        n, 0,
        "the slow connection should be closed without an answer"
    );
    assert!(took < Duration::from_millis(2500), "cut after {took:?}");
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut b))
        .await
        .expect("idle TCP cut");
    assert!(matches!(r, Ok(0) | Err(_)));
    let m = g.metrics().await;
    let cut: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_slow_clients_cut_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cut, 2, "only the slow and the idle connection are cut");
}

/// Log lines at `level` in the gateway's JSON log.
fn lines_at<'a>(log: &'a str, level: &str) -> Vec<&'a str> {
    let tag = format!("\"level\":\"{level}\"");
    log.lines().filter(|l| l.contains(&tag)).collect()
}

/// A request the gateway refuses on purpose is a security event (WARN), not a fault: operators
/// page on ERROR. Over HTTP/1.1 a Connection header naming a protected header; over HTTP/2 a
/// streamed body (no length declared) that runs over the route's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliberate_refusal_is_logged_as_a_warning_not_an_error() {
    // An upstream that reads and never answers: the 413 must come from the gateway's body
    // limit, never race an upstream that answers before the body is through.
    use tokio::io::AsyncReadExt;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = silent.accept().await {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 8192];
                while let Ok(n @ 1..) = s.read(&mut b).await {
                    recorder.lock().unwrap().extend_from_slice(&b[..n]);
                }
            });
        }
    });
    let mut o = opts(port);
    o.policy[0].1 = o.policy[0]
        .1
        .edit("public = true\n", "public = true\nmax_body_bytes = 1024\n");
    let g = Gateway::start(o).await;
    let resp = g
        .raw(b"GET /a HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Forwarded-For\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n")
        .await;
    assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");
    let r = g
        .client(false)
        .post(g.url("/a"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([
            Ok::<_, std::io::Error>(vec![b'x'; 4096]),
        ])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 413);
    let forwarded = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(!forwarded.contains("10.9.9.9"), "{forwarded}");
    let (refusals, _) = eventually(Duration::from_secs(5), "both refusals logged", || async {
        let log = g.log();
        let n = lines_at(&log, "WARN")
            .iter()
            .filter(|l| l.contains("request refused"))
            .count();
        (n >= 2).then_some(n)
    })
    .await;
    assert_eq!(refusals, 2);
    let log = g.log();
    assert!(lines_at(&log, "ERROR").is_empty(), "{log}");
}

/// Pipelined HTTP/1.1 requests (RFC 9112 §9.3.2): every request is answered, in order, on the
/// connection they arrived on; none is left unanswered on an open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_answered_in_order() {
    let up = common::upstream::TestUpstream::start(0).await;
    let g = Gateway::start(opts(up.port)).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "two GETs",
            b"GET /p1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /p2 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        (
            "a POST with a body, then a GET",
            b"POST /p1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabcGET /p2 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
    ];
    for (name, req) in cases {
        up.seen.lock().unwrap().clear();
        let mut tls = g.tls_connect().await;
        tls.write_all(req).await.unwrap();
        let (heads, _) = common::read_responses(&mut tls, 2).await;
        assert_eq!(heads.len(), 2, "{name}: {heads:?}");
        assert!(
            heads.iter().all(|h| h.starts_with("http/1.1 200")),
            "{name}: {heads:?}"
        );
        let seen = up.seen.lock().unwrap().clone();
        let paths: Vec<&str> = seen
            .iter()
            .filter_map(|h| h.split_whitespace().nth(1))
            .collect();
        assert_eq!(paths, ["/p1", "/p2"], "{name}: in order");
        // The connection carries on after them.
        tls.write_all(b"GET /p3 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let (heads, _) = common::read_responses(&mut tls, 1).await;
        assert_eq!(
            heads.len(),
            1,
            "{name}: a third request on the same connection"
        );
    }
}

/// A malformed chunked body is a refusal (WARN) and a client that resets its HTTP/2 stream
/// mid-body has simply gone (INFO): neither is a fault, so neither is logged at ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_and_a_client_gone_mid_body_are_not_errors() {
    // An upstream that takes the request body and never answers, so the gateway is still
    // reading the client's body when the client leaves.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let g2 = got.clone();
    let _up = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let got = g2.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut b).await {
                    got.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let g = Gateway::start(opts(port)).await;
    let resp = g
        .raw(b"POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n")
        .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "the 400 says the connection closes: {resp}"
    );
    eventually(Duration::from_secs(5), "the refusal is logged", || async {
        lines_at(&g.log(), "WARN")
            .iter()
            .any(|l| l.contains("request refused") && l.contains("InvalidChunk"))
            .then_some(())
    })
    .await;
    // HTTP/2: a POST with three body bytes, then the client cancels the stream
    // (RST_STREAM(CANCEL)) while the gateway waits for the rest.
    let mut cfg = (*g.tls_client_config()).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut hpack = vec![0x83, 0x87, 0x04, 0x07];
    hpack.extend_from_slice(b"/upload");
    hpack.extend_from_slice(&[0x01, 0x09]);
    hpack.extend_from_slice(b"localhost");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &hpack));
    out.extend(frame(0x0, 0, 1, b"abc"));
    tls.write_all(&out).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the request reaches the upstream",
        || async { (got.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    tls.write_all(&frame(0x3, 0, 1, &8u32.to_be_bytes()))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the client's leaving is logged",
        || async {
            lines_at(&g.log(), "INFO")
                .iter()
                .any(|l| l.contains("client connection ended"))
                .then_some(())
        },
    )
    .await;
    let log = g.log();
    assert!(lines_at(&log, "ERROR").is_empty(), "{log}");
}
