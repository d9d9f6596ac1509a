//! Abuse controls through the gateway: client identity behind trusted proxies, rate limits with
//! 429 headers and recovery, bounded limiter memory, auth-failure lockouts, body/header caps and
//! per-IP connection caps.

mod common;

use common::*;
use std::time::Duration;

fn policy(network: &str, limits: &str, extra: &str) -> Options {
    let p = format!(
        r#"
[auth]
default_provider = "local"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "whoami"
path_prefix = "/whoami"
upstream = "worker"

[[routes]]
name = "admin"
path_prefix = "/admin/"
upstream = "worker"
max_body_bytes = 1000

[network]
{network}

{limits}
{extra}
"#
    );
    Options {
        policy: vec![("p.toml".into(), p)],
        ..Default::default()
    }
}

const TWO_PER_SECOND: &str = "[[limits]]\nname = \"per-ip\"\nkey = [\"ip\"]\nrequests = 2\nper_seconds = 1\nburst = 2\nroutes = [\"whoami\"]\n";

async fn get(c: &reqwest::Client, g: &Gateway, xff: Option<&str>) -> reqwest::Response {
    let mut r = c.get(g.url("/whoami"));
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_limits_apply_to_the_forwarded_client() {
    let g = Gateway::start(policy(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        TWO_PER_SECOND,
        "",
    ))
    .await;
    let c = g.client(true);
    let who: serde_json::Value = get(&c, &g, Some("198.51.100.1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["forwarded_for"], "198.51.100.1");
    assert_eq!(get(&c, &g, Some("198.51.100.1")).await.status(), 200);
    let limited = get(&c, &g, Some("198.51.100.1")).await;
    assert_eq!(limited.status(), 429);
    let h = limited.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-limit"], "2");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-reset"], retry.to_string().as_str());
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["limit"], "per-ip");
    // Another forwarded client is its own bucket.
    assert_eq!(get(&c, &g, Some("198.51.100.2")).await.status(), 200);
    // After Retry-After, the first client passes again.
    tokio::time::sleep(Duration::from_millis(retry * 1000 + 50)).await;
    assert_eq!(get(&c, &g, Some("198.51.100.1")).await.status(), 200);
    assert!(g
        .metrics()
        .await
        .contains("portcullis_rate_limited_total{limit=\"per-ip\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let g = Gateway::start(policy("", TWO_PER_SECOND, "")).await;
    let c = g.client(true);
    let who: serde_json::Value = get(&c, &g, Some("203.0.113.50"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        who["forwarded_for"], "127.0.0.1",
        "the forged header is overwritten upstream"
    );
    assert_eq!(get(&c, &g, Some("203.0.113.51")).await.status(), 200);
    assert_eq!(get(&c, &g, Some("203.0.113.52")).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_client_keys_stays_within_the_bound() {
    // A slow refill (100 an hour): a key used once is not idle again for 36 s, so the
    // once-a-second eviction frees no slot during the test however slowly it runs.
    let limits = "[[limits]]\nname = \"flood\"\nkey = [\"ip\"]\nrequests = 100\nper_seconds = 3600\nburst = 100\nmax_keys = 50\n";
    let g = Gateway::start(policy("trusted_proxies = [\"127.0.0.1/32\"]", limits, "")).await;
    let c = g.client(false);
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let (c, url) = (c.clone(), g.url("/whoami"));
        tasks.push(tokio::spawn(async move {
            for i in 0..100u32 {
                let ip = format!("10.{t}.{}.{}", i / 250, i % 250 + 1);
                let _ = c
                    .get(&url)
                    .header("x-forwarded-for", ip)
                    .send()
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = g.metrics().await;
    let keys: usize = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_rate_limit_keys{limit=\"flood\"} "))
        .unwrap()
        .parse()
        .unwrap();
    let overflow: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_rate_limit_overflow_total{limit=\"flood\"} "))
        .unwrap()
        .parse()
        .unwrap();
    // The bound: max_keys, + the 256 overflow buckets, + at most one key per proxy thread
    // racing past the size check at the same moment (2 threads here).
    assert!(keys <= 50 + 256 + 2, "{keys} keys held for a bound of 50");
    assert!(overflow >= 300, "{overflow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_tokens_lock_out_with_growing_lockouts_reset_by_success() {
    let extra = "[auth.backoff]\nmax_failures = 3\nlockout_seconds = 1\nmax_lockout_seconds = 4\n";
    let mut opts = policy("", "", extra);
    opts.policy[0].1 = opts.policy[0].1.edit(
        "default_provider = \"local\"",
        "default_provider = \"static\"",
    );
    let token_dir = tempfile::tempdir().unwrap();
    opts.env = vec![
        (
            "PORTCULLIS_WORKER_TOKEN".into(),
            "the-real-worker-token-0123".into(),
        ),
        (
            "PORTCULLIS_TOKEN_FILE".into(),
            token_dir.path().join("t").display().to_string(),
        ),
    ];
    let g = Gateway::start(opts).await;
    let c = g.client(true);
    let call = |token: &'static str| {
        let (c, url) = (c.clone(), g.url("/whoami"));
        async move {
            let r = c
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, retry)
        }
    };
    for _ in 0..3 {
        assert_eq!(call("wrong-token-wrong-token").await.0, 401);
    }
    // Locked: even the right token waits.
    assert_eq!(
        call("the-real-worker-token-0123").await,
        (429, Some("1".into()))
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(call("wrong-token-wrong-token").await.0, 401);
    }
    assert_eq!(
        call("wrong-token-wrong-token").await,
        (429, Some("2".into())),
        "the second lockout is twice as long"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(call("the-real-worker-token-0123").await.0, 200);
    // Success reset the record: two more failures do not lock.
    for _ in 0..2 {
        assert_eq!(call("wrong-token-wrong-token").await.0, 401);
    }
    assert_eq!(call("the-real-worker-token-0123").await.0, 200);
    assert!(g
        .metrics()
        .await
        .contains("portcullis_auth_lockouts_total 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_headers_over_their_limits_are_refused() {
    let g = Gateway::start(policy("max_header_bytes = 2048", "", "")).await;
    let c = g.client(true);
    let r = c
        .put(g.url("/admin/storage/b/k"))
        .body(vec![0u8; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "body_too_large"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![1u8; 500])).collect();
    let r = c
        .put(g.url("/admin/storage/b/k"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(!g.data_dir().join("storage/b/k").exists());
    assert_eq!(
        c.put(g.url("/admin/storage/b/k"))
            .body(vec![0u8; 1000])
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let r = c
        .get(g.url("/whoami"))
        .header("x-big", "a".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_per_ip_are_capped_before_tls() {
    let g = Gateway::start(policy("max_connections_per_ip = 3", "", "")).await;
    let connector = tokio_rustls::TlsConnector::from(g.tls_client_config());
    let connect = || {
        let connector = connector.clone();
        let addr = g.https;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await
        }
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect().await.expect("within the cap"));
    }
    // The readiness probe and the admin client use other paths; the fourth TLS connection from
    // this address is dropped before its handshake.
    assert!(connect().await.is_err(), "fourth connection admitted");
    held.pop();
    let (ok, _) = eventually(Duration::from_secs(3), "slot released", || async {
        connect().await.ok()
    })
    .await;
    drop(ok);
    assert!(g
        .metrics()
        .await
        .contains("portcullis_connections_refused_total"));
}

/// Public routes behind a trusted proxy on 127.0.0.1, with admin paths open to that proxy's
/// network only: whoever the gateway takes for the client decides the admin check.
const PROXIED_PUBLIC: &str = r#"
[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "whoami"
path_prefix = "/whoami"
upstream = "worker"
public = true

[[routes]]
name = "admin"
path_prefix = "/admin/"
upstream = "worker"
public = true

[network]
trusted_proxies = ["127.0.0.1/32"]

[admin]
networks = ["127.0.0.1/32"]
"#;

async fn send(
    c: &reqwest::Client,
    g: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut r = c.get(g.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_forwarded_hop_never_makes_the_trusted_proxy_the_client() {
    let g = Gateway::start(Options::with_policy(PROXIED_PUBLIC)).await;
    for http1 in [true, false] {
        let c = g.client(http1);
        // A forwarded client outside the admin network is refused the admin path.
        let (s, b) = send(&c, &g, "/admin/x", &[("x-forwarded-for", "198.51.100.7")]).await;
        assert_eq!((s, b["error"].as_str()), (403, Some("admin_required")));
        // Hops the walk has to pass that do not parse: nobody knows the client, and the proxy
        // (inside the admin network) must not stand in for it.
        for xff in ["unknown", "x", "", "198.51.100.7, unknown", "198.51.100.7,"] {
            let (s, b) = send(&c, &g, "/admin/x", &[("x-forwarded-for", xff)]).await;
            assert_eq!(
                (s, b["error"].as_str()),
                (400, Some("bad_forwarded_for")),
                "X-Forwarded-For {xff:?} (http1: {http1})"
            );
        }
        // Garbage left of the client's address is the client's own: ignored.
        let (s, b) = send(
            &c,
            &g,
            "/admin/x",
            &[("x-forwarded-for", "unknown, 198.51.100.7")],
        )
        .await;
        assert_eq!((s, b["error"].as_str()), (403, Some("admin_required")));
        let (s, who) = send(
            &c,
            &g,
            "/whoami",
            &[("x-forwarded-for", "nonsense, 198.51.100.7")],
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(who["forwarded_for"], "198.51.100.7");
        // X-Real-IP from the trusted peer: believed only when the chain names no client, and
        // an unparsable one is refused like a bad hop.
        let (s, who) = send(&c, &g, "/whoami", &[("x-real-ip", "192.0.2.44")]).await;
        assert_eq!(
            (s, who["forwarded_for"].as_str()),
            (200, Some("192.0.2.44"))
        );
        let (s, b) = send(
            &c,
            &g,
            "/admin/x",
            &[
                ("x-forwarded-for", "198.51.100.7"),
                ("x-real-ip", "127.0.0.1"),
            ],
        )
        .await;
        assert_eq!((s, b["error"].as_str()), (403, Some("admin_required")));
        let (s, b) = send(&c, &g, "/admin/x", &[("x-real-ip", "unknown")]).await;
        assert_eq!((s, b["error"].as_str()), (400, Some("bad_forwarded_for")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_real_ip_from_an_untrusted_peer_changes_nothing() {
    let g = Gateway::start(Options::with_policy(
        PROXIED_PUBLIC.edit("trusted_proxies = [\"127.0.0.1/32\"]", ""),
    ))
    .await;
    for http1 in [true, false] {
        let c = g.client(http1);
        let (s, who) = send(&c, &g, "/whoami", &[("x-real-ip", "192.0.2.44")]).await;
        assert_eq!((s, who["forwarded_for"].as_str()), (200, Some("127.0.0.1")));
        // Unparsable headers from an untrusted peer are not read at all.
        let (s, _) = send(&c, &g, "/whoami", &[("x-forwarded-for", "unknown")]).await;
        assert_eq!(s, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_key_table_leaves_established_clients_their_own_bucket() {
    // Room for 3 keys, a burst of 3 and a refill of 3 an hour: no key falls idle (and is
    // evicted) during the test however slowly it runs.
    let limits = "[[limits]]\nname = \"per-ip\"\nkey = [\"ip\"]\nrequests = 3\nper_seconds = 3600\nburst = 3\nmax_keys = 3\nroutes = [\"whoami\"]\n";
    let g = Gateway::start(policy("trusted_proxies = [\"127.0.0.1/32\"]", limits, "")).await;
    let clients = [(true, "198.51.100.1"), (false, "198.51.100.2")];
    for (http1, client) in clients {
        assert_eq!(get(&g.client(http1), &g, Some(client)).await.status(), 200);
    }
    // A newcomer fills the table; another, over both protocols, drains its overflow bucket.
    assert_eq!(
        get(&g.client(true), &g, Some("203.0.113.1")).await.status(),
        200
    );
    let mut limited = 0;
    for i in 0..12 {
        let c = g.client(i % 2 == 0);
        if get(&c, &g, Some("203.0.113.2")).await.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 8, "only {limited} newcomer requests limited");
    // Each established client still has its own two requests left, and no more.
    for (http1, client) in clients {
        let c = g.client(http1);
        for n in 0..2 {
            assert_eq!(
                get(&c, &g, Some(client)).await.status(),
                200,
                "request {n} of {client} (http1: {http1})"
            );
        }
        assert_eq!(get(&c, &g, Some(client)).await.status(), 429);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_chains_over_several_lines_with_ports_and_brackets_name_the_client() {
    let g = Gateway::start(Options::with_policy(PROXIED_PUBLIC)).await;
    let whoami = |c: reqwest::Client,
                  headers: Vec<(&'static str, reqwest::header::HeaderValue)>| {
        let url = g.url("/whoami");
        async move {
            let mut r = c.get(url);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
            (status, body)
        }
    };
    let v = |s: &[u8]| reqwest::header::HeaderValue::from_bytes(s).unwrap();
    for http1 in [true, false] {
        let c = g.client(http1);
        for (lines, client) in [
            // Several header lines are one chain, walked from the last line's right end.
            (
                vec![&b"6.6.6.6"[..], b"198.51.100.7:5555", b"127.0.0.1:443"],
                "198.51.100.7",
            ),
            (
                vec![&b"[2001:db8::1]:8443"[..], b"127.0.0.1"],
                "2001:db8::1",
            ),
            (vec![&b"[2001:db8::1]"[..]], "2001:db8::1"),
            // Garbage (non-ASCII included) left of the client is the client's own.
            (
                vec![&b"\xff\xfe caf\xc3\xa9, 198.51.100.7"[..], b"127.0.0.1"],
                "198.51.100.7",
            ),
            // Every hop a trusted proxy: the leftmost is the client.
            (vec![&b"127.0.0.1:1"[..], b"127.0.0.1"], "127.0.0.1"),
        ] {
            let headers = lines.iter().map(|l| ("x-forwarded-for", v(l))).collect();
            let (s, who) = whoami(c.clone(), headers).await;
            assert_eq!(
                (s, who["forwarded_for"].as_str()),
                (200, Some(client)),
                "{:?} (http1: {http1})",
                lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(l))
                    .collect::<Vec<_>>()
            );
        }
        // With a chain present, X-Real-IP is never read, even when every hop is trusted.
        let (s, who) = whoami(
            c.clone(),
            vec![
                ("x-forwarded-for", v(b"127.0.0.1")),
                ("x-real-ip", v(b"192.0.2.44")),
            ],
        )
        .await;
        assert_eq!(
            (s, who["forwarded_for"].as_str()),
            (200, Some("127.0.0.1")),
            "http1: {http1}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_proxy_on_a_dual_stack_listener_is_still_trusted() {
    // On [::] an IPv4 peer arrives as ::ffff:127.0.0.1: it must still match 127.0.0.1/32 for
    // trusted proxies and admin networks.
    let policy = PROXIED_PUBLIC.edit(
        "[network]",
        "[auth]\ndefault_provider = \"static\"\n\n[network]",
    );
    let g = Gateway::start(Options {
        env: vec![
            ("PORTCULLIS_HTTPS_ADDR".into(), "[::]:0".into()),
            (
                "PORTCULLIS_WORKER_TOKEN".into(),
                "dual-stack-test-worker-token-0123456789".into(),
            ),
        ],
        ..Options::with_policy(policy)
    })
    .await;
    for http1 in [true, false] {
        let c = g.client(http1);
        let (s, who) = send(&c, &g, "/whoami", &[("x-forwarded-for", "198.51.100.7")]).await;
        assert_eq!(
            (s, who["forwarded_for"].as_str()),
            (200, Some("198.51.100.7")),
            "http1: {http1}"
        );
        // The proxy itself, in the admin network, is admitted as such.
        let (s, _) = send(&c, &g, "/admin/x", &[]).await;
        assert_ne!(s, 403, "http1: {http1}");
    }
}
