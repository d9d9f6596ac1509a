//! Admin and blocked paths, identity headers and hosts in every spelling, over HTTP/1.1 and
//! HTTP/2 against the real binary. A logging upstream sits behind catch-all public routes (`/`,
//! and `/api` without its slash): it must receive no spelling of an admin or blocked path
//! (`;` parameters, `%3B`, `..;`, trailing whitespace and dots, case, and their combinations) and
//! no client-sent identity or override header; innocent requests through the same routes do
//! arrive, so every test here can fail.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::upstream::TestUpstream;
use common::*;
use portcullis::policy::paths::bypass_corpus;

const ADMIN: [&str; 2] = ["/admin/", "/internal"];
const BLOCKED: [&str; 3] = ["/terminal", "/.git", "/debug/pprof"];

fn policy(port: u16, network: &str) -> Options {
    let with_policy = Options::with_policy(format!(
        r#"
[[upstreams]]
name = "log"
kind = "external"
addresses = ["127.0.0.1:{port}"]
health_check_interval_seconds = 0

[[routes]]
name = "all"
path_prefix = "/"
upstream = "log"
public = true

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "log"
public = true

[[routes]]
name = "host"
hosts = ["api.example.com", "*.apps.example.com"]
path_prefix = "/"
upstream = "log"
public = true

[admin]
paths = ["/admin/", "/internal"]

[blocked]
paths = ["/debug/pprof"]

[network]
{network}
"#
    ));
    Options {
        // The corpus sends thousands of requests over one HTTP/2 connection.
        config_extra: "\n[network]\nmax_requests_per_connection = 0\n".into(),
        ..with_policy
    }
}

/// Every spelling of `prefix` (and of a path below it) that some backend reads as the prefix:
/// leads that `..;` or `..%3B` away from another segment (also through the `/api` route), the
/// protected segment in three cases, and suffixes that add a parameter, an encoded `;`, trailing
/// whitespace or a dot — each combined with every other.
fn spellings(prefix: &str) -> Vec<String> {
    let inner = prefix.trim_matches('/');
    let segments: Vec<&str> = inner.split('/').collect();
    let mixed = |s: &str| -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    };
    let leads = [
        "",
        "/x/..;",
        "/api/..;",
        "/x;y/..;",
        "/api/..%3B",
        "/x/..%3bz",
        "/x/..%20",
        "/api/..;x",
    ];
    let suffixes = [
        "", ";", ";x", ";x=1;y=2", "%3B", "%3Bx", "%3bx=1", "%20", "%20%20", "%20;x", ";x%20",
        "%20%3Bx", ".", "%20.",
    ];
    let mut out = Vec::new();
    for lead in leads {
        for case in 0..3 {
            for suffix in suffixes {
                // The suffix on each protected segment in turn.
                for at in 0..segments.len() {
                    let path: Vec<String> = segments
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let s = match case {
                                0 => s.to_string(),
                                1 => s.to_ascii_uppercase(),
                                _ => mixed(s),
                            };
                            if i == at {
                                format!("{s}{suffix}")
                            } else {
                                s
                            }
                        })
                        .collect();
                    out.push(format!("{lead}/{}/storage/b/k", path.join("/")));
                    // The prefix itself, with nothing below it (`/admin;x`, `/ADMIN%20`).
                    out.push(format!("{lead}/{}", path.join("/")));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Requests through the same routes that must arrive, verbatim.
const INNOCENT: [&str; 8] = [
    "/administrator/x",
    "/internals/x",
    "/terminals",
    "/api/x;y",
    "/x/..;/public/a",
    "/admin-ui%20/x",
    "/ok%3Bx;y/z",
    "/debug/pprofile",
];

/// The request-line target of every head the upstream received.
fn targets(up: &TestUpstream) -> Vec<String> {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|h| h.split(' ').nth(1).map(str::to_string))
        .collect()
}

async fn h1(g: &Gateway, host: &str, target: &str, headers: &str) -> (u16, String) {
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    let resp = g.raw(req.as_bytes()).await;
    // A request the HTTP layer rejects may be answered 400 or just closed: either way nothing
    // is forwarded, which the upstream side checks.
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, resp)
}

/// An HTTP/2 connection to the gateway (ALPN h2, SNI localhost) sending raw pseudo-headers.
async fn h2_connect(g: &Gateway) -> h2::client::SendRequest<Bytes> {
    let mut cfg = (*g.tls_client_config()).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// `GET https://{authority}{target}` on `send`: the status and body, or 0 when the stream was
/// reset (nothing forwarded either way; the upstream side checks).
async fn h2(
    send: &h2::client::SendRequest<Bytes>,
    authority: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut b = http::Request::builder()
        .method("GET")
        .uri(format!("https://{authority}{target}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(()).unwrap();
    let mut s = send.clone().ready().await.unwrap();
    let Ok((resp, _)) = s.send_request(req, true) else {
        return (0, String::new());
    };
    let Ok(resp) = resp.await else {
        return (0, String::new());
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

fn code(body: &str) -> &str {
    body.split("\"error\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_blocked_paths_in_every_spelling_never_reach_the_upstream() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    let send = h2_connect(&g).await;

    // Control: innocent paths through the same catch-all routes arrive verbatim, both ways.
    for target in INNOCENT {
        let (status, resp) = h1(&g, "localhost", target, "").await;
        assert_eq!(status, 200, "HTTP/1.1 {target}: {resp}");
        let (status, body) = h2(&send, "localhost", target, &[]).await;
        assert_eq!(status, 200, "HTTP/2 {target}: {body}");
    }
    let expected: Vec<String> = INNOCENT
        .iter()
        .flat_map(|t| [t.to_string(), t.to_string()])
        .collect();
    assert_eq!(targets(&up), expected);
    up.seen.lock().unwrap().clear();

    let mut sent = 0;
    for prefix in ADMIN.iter().chain(&BLOCKED) {
        let corpus = spellings(prefix);
        assert!(corpus.len() >= 300, "{prefix}: {}", corpus.len());
        for target in corpus {
            // Refused by the gateway itself, with its reason: a dropped connection or a bare
            // 400 from the HTTP layer proves nothing about the gateway's decision.
            let (status, resp) = h1(&g, "localhost", &target, "").await;
            assert!(
                matches!(status, 400 | 403) && !code(&resp).is_empty(),
                "HTTP/1.1 {target} answered {status}: {resp}"
            );
            let (status, body) = h2(&send, "localhost", &target, &[]).await;
            assert!(
                matches!(status, 400 | 403) && !code(&body).is_empty(),
                "HTTP/2 {target} answered {status}: {body}"
            );
            sent += 2;
        }
    }
    assert!(sent >= 3000, "{sent}");
    assert_eq!(targets(&up), Vec::<String>::new(), "forwarded upstream");

    // Named cases with their exact answers, both ways.
    for (target, status, error) in [
        ("/admin/storage/b/k", 403, "admin_required"),
        ("/ADMIN/storage/b/k", 403, "admin_required"),
        ("/admin;x/storage/b/k", 400, "path_parameter_on_admin"),
        ("/admin%3Bx/storage/b/k", 400, "path_parameter_on_admin"),
        ("/x/..;/admin/storage/b/k", 400, "path_parameter_on_admin"),
        ("/api/..;/admin/storage/b/k", 400, "path_parameter_on_admin"),
        ("/internal;jsessionid=1", 400, "path_parameter_on_admin"),
        ("/admin%20/storage/b/k", 400, "path_lookalike_of_admin"),
        ("/Admin./storage/b/k", 400, "path_lookalike_of_admin"),
        ("/x/..%20/admin/storage/b/k", 400, "path_lookalike_of_admin"),
        ("/terminal%3Bx", 400, "path_parameter_on_blocked"),
        ("/api/..%3B/terminal", 400, "path_parameter_on_blocked"),
        ("/debug%20/pprof", 400, "path_lookalike_of_blocked"),
        // Non-ASCII letters that case-map to ASCII (dotless i; long s and the Kelvin sign in
        // the unit tests).
        ("/adm%C4%B1n/storage/b/k", 400, "path_lookalike_of_admin"),
        ("/%C4%B1nternal", 400, "path_lookalike_of_admin"),
        ("/.g%C4%B1t/config", 400, "path_lookalike_of_blocked"),
        // A fullwidth `；` folds to a parameter separator.
        (
            "/admin%EF%BC%9Bx/storage/b/k",
            400,
            "path_lookalike_of_admin",
        ),
        (
            "/api/..%EF%BC%9B/terminal",
            400,
            "path_lookalike_of_blocked",
        ),
    ] {
        let (got, resp) = h1(&g, "localhost", target, "").await;
        assert_eq!(
            (got, code(&resp)),
            (status, error),
            "HTTP/1.1 {target}: {resp}"
        );
        let (got, body) = h2(&send, "localhost", target, &[]).await;
        assert_eq!(
            (got, code(&body)),
            (status, error),
            "HTTP/2 {target}: {body}"
        );
    }
    assert_eq!(targets(&up), Vec::<String>::new(), "forwarded upstream");
}

/// The bare admin prefix in the spellings a catch-all route would otherwise forward, and the
/// canonicalizer's spellings (`//`, `/./`, `%61dmin`, fullwidth, `%2e`, backslash, absolute
/// form) of each admin prefix: every one is refused by the gateway itself, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_prefixes_in_every_canonicalizer_spelling_are_refused() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    let send = h2_connect(&g).await;
    let mut corpus: Vec<String> = [
        "/admin",
        "/ADMIN",
        "/admin;x",
        "/admin%20",
        "/admin.",
        "/a;b/../admin",
        "/Admin/",
        "/%61dmin",
    ]
    .map(String::from)
    .to_vec();
    for prefix in ADMIN {
        corpus.extend(bypass_corpus(prefix.trim_end_matches('/'), true));
    }
    for target in &corpus {
        let (status, resp) = h1(&g, "localhost", target, "").await;
        assert!(
            matches!(status, 400 | 403),
            "HTTP/1.1 {target} answered {status}: {resp}"
        );
        // Only what the HTTP/2 client can put in `:path`.
        if target.starts_with('/') && target.parse::<http::uri::PathAndQuery>().is_ok() {
            let (status, body) = h2(&send, "localhost", target, &[]).await;
            assert!(
                matches!(status, 400 | 403),
                "HTTP/2 {target} answered {status}: {body}"
            );
        }
    }
    for target in [
        "/admin",
        "/ADMIN",
        "/admin/",
        "//admin",
        "/%61dmin",
        "/internal",
    ] {
        let (status, resp) = h1(&g, "localhost", target, "").await;
        assert_eq!(
            (status, code(&resp)),
            (403, "admin_required"),
            "HTTP/1.1 {target}"
        );
        let (status, body) = h2(&send, "localhost", target, &[]).await;
        assert_eq!(
            (status, code(&body)),
            (403, "admin_required"),
            "HTTP/2 {target}"
        );
    }
    assert_eq!(targets(&up), Vec::<String>::new(), "forwarded upstream");
}

/// Identity, forwarding and override headers, each as written, upper-case, with `_` for every
/// `-` and with one `_`, and some twice.
fn identity_headers() -> Vec<(String, String)> {
    let names = [
        "x-portcullis-subject",
        "x-portcullis-capabilities",
        "x-portcullis-auth",
        "x-portcullis-room",
        "x-portcullis-route",
        "x-portcullis-client-cert",
        "x-portcullis-csp-nonce",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "forwarded",
        "x-request-id",
        "true-client-ip",
        "x-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-forwarded",
        "forwarded-for",
        "x-original-host",
        "x-host",
        "x-proxyuser-ip",
        "client-ip",
        "x-cluster-client-ip",
        "x-remote-addr",
        "x-remote-ip",
        "x-originating-ip",
        "front-end-https",
        "x-original-uri",
        "proxy-client-ip",
        "wl-proxy-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-envoy-external-address",
        "x-envoy-original-path",
    ];
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let variants = [
            n.to_string(),
            n.to_ascii_uppercase(),
            n.replace('-', "_"),
            n.replacen('-', "_", 1),
            n.replace('-', "_").to_ascii_uppercase(),
        ];
        for (j, v) in variants.into_iter().enumerate() {
            out.push((v, format!("spoofed-{i}-{j}")));
        }
    }
    out.push(("x-portcullis-subject".into(), "spoofed-again".into()));
    out.push(("x_portcullis_subject".into(), "spoofed-again".into()));
    out
}

/// Sends the identity headers (and the controls) both ways; returns the two heads received.
async fn send_identity_headers(g: &Gateway, up: &TestUpstream, path: &str) -> Vec<String> {
    up.seen.lock().unwrap().clear();
    let headers = identity_headers();
    let raw: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect::<String>()
        + "X-Control: kept\r\nx_custom_header: underscore\r\n";
    let (status, resp) = h1(g, "localhost", path, &raw).await;
    assert_eq!(status, 200, "{resp}");
    let send = h2_connect(g).await;
    // HTTP/2 field names are lower-case on the wire.
    let mut h2_headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    h2_headers.push(("x-control".into(), "kept".into()));
    h2_headers.push(("x_custom_header".into(), "underscore".into()));
    let refs: Vec<(&str, &str)> = h2_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, body) = h2(&send, "localhost", path, &refs).await;
    assert_eq!(status, 200, "{body}");
    let heads = up.seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    heads.iter().map(|h| h.to_ascii_lowercase()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_override_headers_never_arrive_in_any_spelling() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    for head in send_identity_headers(&g, &up, "/hdr").await {
        assert!(!head.contains("spoofed"), "{head}");
        // The control arrives; names with `_` are dropped by default.
        assert!(head.contains("x-control: kept"), "{head}");
        assert!(!head.contains("x_custom_header"), "{head}");
        // The gateway's own values are there, once.
        assert_eq!(head.matches("x-portcullis-route:").count(), 1, "{head}");
        assert!(head.contains("x-portcullis-route: all"), "{head}");
        assert!(head.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscores_allowed_by_policy_still_never_carry_identity() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "allow_underscores_in_headers = true")).await;
    for head in send_identity_headers(&g, &up, "/hdr").await {
        assert!(!head.contains("spoofed"), "{head}");
        assert!(head.contains("x-control: kept"), "{head}");
        assert!(head.contains("x_custom_header: underscore"), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_normalized_before_routing_and_bad_hosts_refused() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    let send = h2_connect(&g).await;
    let route_of = |up: &TestUpstream| -> Vec<String> {
        let heads = std::mem::take(&mut *up.seen.lock().unwrap());
        heads
            .iter()
            .map(|h| {
                h.to_ascii_lowercase()
                    .lines()
                    .find_map(|l| l.strip_prefix("x-portcullis-route: ").map(str::to_string))
                    .unwrap_or_default()
            })
            .collect()
    };
    // Control: another host takes the any-host route.
    assert_eq!(h1(&g, "localhost", "/h", "").await.0, 200);
    assert_eq!(h2(&send, "localhost", "/h", &[]).await.0, 200);
    assert_eq!(route_of(&up), ["all", "all"]);
    for host in [
        "api.example.com",
        "api.example.com.",
        "API.EXAMPLE.COM",
        "Api.Example.Com.",
        "api.example.com:8443",
        "api.example.com.:443",
        "x.apps.example.com.",
        "X.APPS.EXAMPLE.COM:1",
    ] {
        let (status, resp) = h1(&g, host, "/h", "").await;
        assert_eq!(status, 200, "HTTP/1.1 {host}: {resp}");
        let (status, body) = h2(&send, host, "/h", &[]).await;
        assert_eq!(status, 200, "HTTP/2 {host}: {body}");
        assert_eq!(route_of(&up), ["host", "host"], "{host}");
    }
    // A rewritten target keeps its host: over HTTP/2 the host is only in `:authority`, and the
    // canonical path replaces the URI.
    for target in ["/x/../h", "//h", "/%68", "/./h"] {
        up.seen.lock().unwrap().clear();
        let (status, resp) = h1(&g, "api.example.com", target, "").await;
        assert_eq!(status, 200, "HTTP/1.1 {target}: {resp}");
        let (status, body) = h2(&send, "api.example.com", target, &[]).await;
        assert_eq!(status, 200, "HTTP/2 {target}: {body}");
        let heads: Vec<String> = up
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        assert_eq!(heads.len(), 2, "{heads:?}");
        for head in &heads {
            assert!(head.starts_with("get /h "), "{target}: {head}");
            let lines: Vec<&str> = head.lines().collect();
            assert!(lines.contains(&"host: api.example.com"), "{target}: {head}");
            assert!(
                lines.contains(&"x-forwarded-host: api.example.com"),
                "{target}: {head}"
            );
        }
        assert_eq!(route_of(&up), ["host", "host"], "{target}");
    }
    for host in [
        "api.example.com..",
        "api..example.com",
        "api.example.com:x",
        "api.example.com:99999",
        "api.example.com:1:2",
        "user@api.example.com",
        "api.example.com,localhost",
        "[::1",
        "",
        "api.example.com:0",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.000.000.001",
    ] {
        let (status, resp) = h1(&g, host, "/h", "").await;
        // Refused by the gateway, or already by the HTTP layer (a bare 400 without a body).
        assert_eq!(status, 400, "HTTP/1.1 {host:?}: {resp}");
        assert!(
            matches!(code(&resp), "bad_host" | ""),
            "HTTP/1.1 {host:?}: {resp}"
        );
    }
    // The gateway's own answer where the HTTP layer lets the value through.
    for host in [
        "api..example.com",
        "api.example.com:x",
        "api.example.com:99999",
        "",
        "api.example.com:0",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.000.000.001",
    ] {
        let (_, resp) = h1(&g, host, "/h", "").await;
        assert_eq!(code(&resp), "bad_host", "HTTP/1.1 {host:?}: {resp}");
    }
    // HTTP/2 `:authority` values the client library lets through.
    for authority in [
        "api..example.com",
        "api.example.com..",
        "a_b..c:1",
        "127.1",
        "2130706433",
        "api.example.com:0",
    ] {
        let (status, body) = h2(&send, authority, "/h", &[]).await;
        assert!(
            matches!(status, 400 | 0),
            "HTTP/2 {authority}: {status} {body}"
        );
    }
    assert_eq!(route_of(&up), Vec::<String>::new(), "forwarded upstream");
}
