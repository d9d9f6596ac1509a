//! The HTTPS front door over real sockets: HTTP/1.1 and HTTP/2 to the in-process worker, HSTS,
//! the 308 redirect listener, blocked paths, gateway-answered health checks, identity headers.

mod common;

use common::*;
use std::io::{Read, Write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_http2_reaches_the_worker_with_hsts() {
    let g = Gateway::start(Options::default()).await;
    for (http1, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let r = g
            .client(http1)
            .get(g.url("/v1/models"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        assert!(r.headers().get("server").is_none());
        assert!(r.headers().contains_key("x-request-id"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["data"][0]["id"], "portcullis-echo-1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let g = Gateway::start(Options::default()).await;
    let other = TestCa::new("Someone else");
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(other.pem.as_bytes()).unwrap())
        .resolve("localhost", g.https)
        .build()
        .unwrap();
    assert!(c.get(g.url("/health")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_answers_308_to_the_https_url() {
    let g = Gateway::start(Options::default()).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let http = g.http.unwrap();
    let r = c
        .get(format!("http://localhost:{}/v1/models?x=1", http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{}/v1/models?x=1", g.https.port())
    );
    // A Host header that is not a host name never reaches the Location.
    let mut s = std::net::TcpStream::connect(http).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.contains(&format!(
            "location: https://127.0.0.1:{}/\r\n",
            g.https.port()
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_is_refused_in_every_spelling() {
    let g = Gateway::start(Options::default()).await;
    let c = g.client(true);
    for path in [
        "/terminal",
        "/terminal/",
        "/terminal/x",
        "//terminal",
        "/a/../terminal",
        "/TERMINAL/x",
        "/%74erminal",
        "/.git/config",
    ] {
        let r = c.get(g.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(r.headers().contains_key("strict-transport-security"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "path_blocked", "{path}");
    }
    // Sent raw: HTTP client libraries normalise these before they leave.
    for path in [
        "/%2e%2e/terminal",
        "/%2E%2E/terminal",
        "/terminal%2fx",
        "/%252e",
        "/a/%2e%2e/terminal",
        "/x\\..\\terminal",
        "/terminal;x=1",
        "/v1/..;/terminal",
    ] {
        assert_eq!(g.raw_get_status(path).await, 400, "{path}");
    }
    for path in ["/terminal", "/./terminal", "/v1/../terminal/", "/TeRmInAl"] {
        assert_eq!(g.raw_get_status(path).await, 403, "{path}");
    }
    // Not a blocked prefix: a sibling name.
    let r = c.get(g.url("/terminals")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "no_route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ping_answer_with_no_upstream_running() {
    let (dead, _held) = dead_port();
    let policy = format!(
        "[[upstreams]]\nname = \"gone\"\nkind = \"external\"\naddresses = [\"127.0.0.1:{dead}\"]\nconnect_timeout_ms = 500\nhealth_check_interval_seconds = 0\n\n[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"gone\"\npublic = true\n"
    );
    let g = Gateway::start(Options {
        policy: vec![("p.toml".into(), policy)],
        ..Default::default()
    })
    .await;
    let c = g.client(false);
    for p in ["/health", "/ping"] {
        let r = c.get(g.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    }
    let r = c.get(g.url("/anything")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_the_gateways_own() {
    let g = Gateway::start(Options::default()).await;
    let r = g
        .client(true)
        .get(g.url("/whoami"))
        .header("x-portcullis-subject", "admin")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let who: serde_json::Value = r.json().await.unwrap();
    assert_eq!(who["subject"], "1");
    assert_eq!(who["forwarded_for"], "127.0.0.1");
    assert_eq!(who["forwarded_proto"], "https");
    assert_eq!(who["route"], "whoami");
    assert_eq!(who["request_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_bad_methods_are_refused() {
    let g = Gateway::start(Options::default()).await;
    let c = g.client(true);
    let r = c.post(g.url("/v1/models")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    // CL + TE, in both orders and spellings: refused before anything reaches the worker.
    for req in [
        &b"PUT /admin/storage/b/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"PUT /admin/storage/b/k HTTP/1.1\r\nHost: localhost\r\ntransfer-encoding: chunked\r\ncontent-length : 4\r\n\r\n0\r\n\r\n"[..],
        &b"PUT /admin/storage/b/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"[..],
    ] {
        let resp = g.raw(req).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
    assert!(!g.data_dir().join("storage/b/k").exists());
}
