//! Response hardening over real sockets: security-header profiles (and `Server` removal), CORS
//! preflights answered by the gateway, CSRF for cookie sessions, signed URLs.

mod common;

use std::time::Duration;

use common::upstream::TestUpstream;
use common::*;

const NOISY: &[u8] = b"HTTP/1.1 200 OK\r\nserver: nginx/1.22\r\nx-powered-by: PHP/8\r\nx-frame-options: ALLOWALL\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nok";

fn opts(port: u16, body: &str, env: Vec<(String, String)>) -> Options {
    let p = format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{port}"]
{body}
"#
    );
    Options {
        env,
        ..Options::with_policy(p)
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_profiles_are_applied_exactly_and_server_is_removed() {
    let up = TestUpstream::start_with(0, NOISY).await;
    let routes = r#"
[headers]
default_profile = "api-strict"
remove = ["x-debug-info"]

[headers.profiles.embeddable]
extends = "api-strict"
frame_options = "SAMEORIGIN"
content_security_policy = "default-src 'none'; frame-ancestors 'self'"

[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "api"
public = true

[[routes]]
name = "app"
path_prefix = "/app/"
upstream = "api"
public = true
headers = "browser-app"

[[routes]]
name = "ws"
path_prefix = "/ws/"
upstream = "api"
public = true
headers = "ws-only"

[[routes]]
name = "embed"
path_prefix = "/embed/"
upstream = "api"
public = true
headers = "embeddable"

[[routes]]
name = "raw"
path_prefix = "/raw/"
upstream = "api"
public = true
headers = "none"
"#;
    let g = Gateway::start(opts(up.port, routes, vec![])).await;
    let c = g.client(false);

    let r = c.get(g.url("/api/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let expected = [
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "permissions-policy",
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
    ];
    for (name, value) in expected {
        assert_eq!(header(&r, name), Some(value), "{name}");
        assert_eq!(r.headers().get_all(name).iter().count(), 1, "{name} once");
    }
    assert_eq!(header(&r, "server"), None);
    assert_eq!(header(&r, "x-powered-by"), None);

    // The gateway's own answers carry the default profile too.
    let r = c.get(g.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&r, "server"), None);

    // browser-app: a fresh nonce per response, the same one the upstream was handed.
    let mut nonces = Vec::new();
    for _ in 0..2 {
        up.seen.lock().unwrap().clear();
        let r = c.get(g.url("/app/index.html")).send().await.unwrap();
        let csp = header(&r, "content-security-policy").unwrap().to_string();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap()
            .to_string();
        assert_eq!(nonce.len(), 24, "{csp}");
        let head = up.seen.lock().unwrap()[0].clone();
        assert!(
            head.contains(&format!("x-portcullis-csp-nonce: {nonce}")),
            "{head}"
        );
        assert_eq!(
            header(&r, "referrer-policy"),
            Some("strict-origin-when-cross-origin")
        );
        nonces.push(nonce);
    }
    assert_ne!(nonces[0], nonces[1]);

    let r = c.get(g.url("/ws/x")).send().await.unwrap();
    assert_eq!(
        header(&r, "content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(header(&r, "cross-origin-opener-policy"), None);

    let r = c.get(g.url("/embed/x")).send().await.unwrap();
    assert_eq!(header(&r, "x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"));

    // "none": only HSTS and the removals; the upstream's own X-Frame-Options passes.
    let r = c.get(g.url("/raw/x")).send().await.unwrap();
    assert_eq!(header(&r, "content-security-policy"), None);
    assert_eq!(header(&r, "x-frame-options"), Some("ALLOWALL"));
    assert_eq!(header(&r, "server"), None);
    assert!(header(&r, "strict-transport-security").is_some());
}

const CORS_ROUTES: &str = r#"
[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "api"
public = true

[routes.cors]
origins = ["https://app.example", "http://localhost:3000"]
methods = ["GET", "POST"]
headers = ["content-type", "x-trace"]
expose_headers = ["x-request-id"]
credentials = true
max_age_seconds = 300
"#;

async fn preflight(
    c: &reqwest::Client,
    g: &Gateway,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    let mut r = c
        .request(reqwest::Method::OPTIONS, g.url("/api/items"))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if !headers.is_empty() {
        r = r.header("access-control-request-headers", headers);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_by_the_gateway() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(opts(up.port, CORS_ROUTES, vec![])).await;
    let c = g.client(true);

    let r = preflight(
        &c,
        &g,
        "https://app.example",
        "POST",
        "Content-Type, X-Trace",
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type, x-trace")
    );
    assert_eq!(header(&r, "access-control-max-age"), Some("300"));
    assert!(header(&r, "vary").unwrap().contains("Origin"));

    for (origin, method, hdrs, detail) in [
        ("https://evil.example", "POST", "", "origin not allowed"),
        ("https://app.example.evil", "GET", "", "origin not allowed"),
        ("null", "GET", "", "origin not allowed"),
        ("https://APP.example:443", "GET", "", "origin not allowed"),
        ("https://app.example", "DELETE", "", "method not allowed"),
        (
            "https://app.example",
            "POST",
            "x-secret",
            "request header not allowed",
        ),
    ] {
        let r = preflight(&c, &g, origin, method, hdrs).await;
        assert_eq!(r.status(), 403, "{origin} {method} {hdrs}");
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "cors_denied");
        assert_eq!(body["detail"], detail);
    }
    // No preflight reached the upstream.
    assert!(up.seen.lock().unwrap().is_empty());

    // Actual requests: the allowed origin is echoed with credentials; others get nothing.
    let r = c
        .get(g.url("/api/items"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(header(&r, "vary"), Some("Origin"));
    let r = c
        .get(g.url("/api/items"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "vary"), Some("Origin"));
}

fn check_in(mode: &str, policy: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.toml"), policy).unwrap();
    std::fs::write(
        dir.path().join("portcullis.toml"),
        format!("mode = \"{mode}\"\n[tls]\ncert_dir = \"certs\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path().join("portcullis.toml"))
        .env_remove("PORTCULLIS_MODE")
        .env_remove("ENV")
        .env("PORTCULLIS_WORKER_TOKEN", "w".repeat(43))
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

#[test]
fn wildcard_cors_with_credentials_or_auth_is_refused_in_production() {
    let policy = |credentials: bool, public: bool| {
        format!(
            r#"
[auth]
default_provider = "static"

[[upstreams]]
name = "w"
kind = "worker"

[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "w"
public = {public}

[routes.cors]
origins = ["*"]
credentials = {credentials}
"#
        )
    };
    let (ok, out) = check_in("production", &policy(true, true));
    assert!(!ok, "{out}");
    assert!(
        out.contains("routes[0].cors.origins: \"*\" with credentials = true"),
        "{out}"
    );
    let (ok, out) = check_in("production", &policy(false, false));
    assert!(!ok, "{out}");
    assert!(
        out.contains("\"*\" on a route that requires authentication"),
        "{out}"
    );
    // A public route may share itself with every origin, without credentials.
    let (ok, out) = check_in("production", &policy(false, true));
    assert!(!out.contains("cors.origins"), "{out}");
    let _ = ok;
    // Development warns and answers "*" without credentials instead.
    let (ok, out) = check_in("development", &policy(true, true));
    assert!(ok, "{out}");
}

const TOKEN: &str = "csrf-test-worker-token-0123456789abcdefghijk";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_refuses_cross_origin_cookie_posts_and_accepts_same_origin_with_token() {
    let up = TestUpstream::start(0).await;
    let routes = r#"
[[routes]]
name = "app"
path_prefix = "/app/"
upstream = "api"
auth = "static"
session_cookie = "session"

[routes.csrf]
origins = ["https://app.example"]
"#;
    let g = Gateway::start(opts(
        up.port,
        routes,
        vec![("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into())],
    ))
    .await;
    let c = g.client(true);
    let session = format!("session={TOKEN}");

    // A safe request with the session cookie is authenticated and issued a CSRF cookie.
    let r = c
        .get(g.url("/app/form"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = header(&r, "set-cookie").unwrap().to_string();
    assert!(set.starts_with("__Host-csrf="), "{set}");
    assert!(
        set.contains("Secure") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let csrf = set
        .trim_start_matches("__Host-csrf=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The session cookie (a bearer token) is not forwarded; other cookies are.
    let head = up.seen.lock().unwrap().last().unwrap().clone();
    assert!(!head.contains(TOKEN), "{head}");
    up.seen.lock().unwrap().clear();

    let cookies = format!("{session}; __Host-csrf={csrf}; theme=dark");
    let post = |origin: &str, token: Option<&str>| {
        let mut r = c
            .post(g.url("/app/transfer"))
            .header("cookie", &cookies)
            .header("origin", origin)
            .body("amount=100");
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let same = format!("https://localhost:{}", g.https.port());

    // Cross-origin, even with a token copied from somewhere: refused before the upstream.
    let r = post("https://evil.example", Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"csrf_failed","reason":"origin_not_allowed"}"#
    );
    // Same origin without the header, or with another value.
    let r = post(&same, None).await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"csrf_failed","reason":"token_missing"}"#
    );
    let r = post(&same, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"csrf_failed","reason":"token_mismatch"}"#
    );
    assert!(up.seen.lock().unwrap().is_empty());

    // Same origin (or a listed one) with the token: through.
    let r = post(&same, Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post("https://app.example", Some(&csrf)).await.unwrap();
    assert_eq!(r.status(), 200);
    let head = up.seen.lock().unwrap()[0].clone();
    assert!(head.contains("theme=dark"), "{head}");
    assert!(!head.contains(TOKEN), "{head}");

    // A bearer token is not ambient: no CSRF check.
    let r = c
        .post(g.url("/app/transfer"))
        .bearer_auth(TOKEN)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let m = g.metrics().await;
    assert!(
        m.contains("portcullis_csrf_failures_total{reason=\"origin_not_allowed\"} 1"),
        "{m}"
    );
    assert!(m.contains("portcullis_csrf_failures_total{reason=\"token_missing\"} 1"));
    assert!(m.contains("portcullis_csrf_failures_total{reason=\"token_mismatch\"} 1"));
}

fn sign(g: &Gateway, env: &[(String, String)], path: &str, ttl: &str, key: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["url", "sign", "--path", path, "--ttl", ttl, "--config"])
        .arg(g.dir.path().join("portcullis.toml"));
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_admit_exactly_the_signed_path_until_expiry() {
    let up = TestUpstream::start(0).await;
    let env = vec![
        ("URL_KEY_NEW".to_string(), "n".repeat(40)),
        ("URL_KEY_OLD".to_string(), "o".repeat(40)),
        ("PORTCULLIS_WORKER_TOKEN".to_string(), TOKEN.to_string()),
    ];
    let routes = r#"
[signed_urls]
keys = [
  { id = "2026-11", secret = "env:URL_KEY_NEW" },
  { id = "2026-10", secret = "env:URL_KEY_OLD" },
]
max_ttl_seconds = 3600

[[routes]]
name = "assets"
path_prefix = "/admin/storage/assets/"
methods = ["GET", "HEAD"]
upstream = "api"
auth = "static"
signed_urls = true
"#;
    let g = Gateway::start(opts(up.port, routes, env.clone())).await;
    let c = g.client(true);
    let status = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(url).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.text().await.unwrap())
        }
    };

    let url = sign(&g, &env, "/admin/storage/assets/a.png", "10m", None);
    assert!(
        url.contains("expires=") && url.contains("&kid=2026-11&sig="),
        "{url}"
    );
    let (s, _) = status(g.url(&url)).await;
    assert_eq!(s, 200);
    // Forwarded without the signature parameters, as the signed-URL identity.
    let head = up.seen.lock().unwrap().last().unwrap().clone();
    assert!(
        head.starts_with("GET /admin/storage/assets/a.png HTTP/1.1"),
        "{head}"
    );
    assert!(head.contains("x-portcullis-auth: signed_url"), "{head}");

    // Signed with the previous key: still good (rotation).
    let old = sign(
        &g,
        &env,
        "/admin/storage/assets/a.png",
        "10m",
        Some("2026-10"),
    );
    assert_eq!(status(g.url(&old)).await.0, 200);

    // Tampered path, wrong key id, unknown key id, extra parameter, no signature.
    let tampered = url.replace("/a.png", "/b.png");
    assert_eq!(
        status(g.url(&tampered)).await,
        (403, r#"{"error":"signature_invalid"}"#.into())
    );
    let wrong_kid = url.replace("kid=2026-11", "kid=2026-10");
    assert_eq!(
        status(g.url(&wrong_kid)).await,
        (403, r#"{"error":"signature_invalid"}"#.into())
    );
    let unknown_kid = url.replace("kid=2026-11", "kid=2025-01");
    assert_eq!(
        status(g.url(&unknown_kid)).await,
        (403, r#"{"error":"signature_unknown_key"}"#.into())
    );
    assert_eq!(
        status(g.url(&format!("{url}&download=1"))).await,
        (403, r#"{"error":"signature_malformed"}"#.into())
    );
    assert_eq!(status(g.url("/admin/storage/assets/a.png")).await.0, 401);

    // Expired.
    let short = sign(&g, &env, "/admin/storage/assets/a.png", "1s", None);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        status(g.url(&short)).await,
        (403, r#"{"error":"signature_expired"}"#.into())
    );

    // Longer than the policy allows: the CLI refuses to sign.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "url",
            "sign",
            "--path",
            "/admin/storage/assets/a.png",
            "--ttl",
            "2h",
            "--config",
        ])
        .arg(g.dir.path().join("portcullis.toml"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_ttl_seconds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_need_the_admin_capability_whatever_the_route() {
    let up = TestUpstream::start(0).await;
    let routes = r#"
[[routes]]
name = "everything"
path_prefix = "/"
upstream = "api"
public = true
"#;
    let g = Gateway::start(opts(up.port, routes, vec![])).await;
    let c = g.client(true);
    let r = c.get(g.url("/admin/storage/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "admin_required"
    );
    let r = c.get(g.url("/ADMIN/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(up.seen.lock().unwrap().is_empty());
    let r = c.get(g.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // An admin network opens them.
    let g2 = Gateway::start(opts(
        up.port,
        &format!("{routes}\n[admin]\nnetworks = [\"127.0.0.0/8\"]\n"),
        vec![],
    ))
    .await;
    let r = g2
        .client(true)
        .get(g2.url("/admin/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An upstream with a CORS answer of its own: any origin, with credentials, and its timings.
const SELF_CORS: &[u8] = b"HTTP/1.1 200 OK\r\ntiming-allow-origin: *\r\naccess-control-allow-origin: https://evil.example\r\naccess-control-allow-credentials: true\r\naccess-control-allow-methods: PUT, DELETE\r\naccess-control-expose-headers: x-secret\r\naccess-control-max-age: 86400\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_cors_rule_replaces_the_upstreams_own_cors_headers() {
    let up = TestUpstream::start_with(0, SELF_CORS).await;
    let routes = format!(
        "{CORS_ROUTES}\n[[routes]]\nname = \"plain\"\npath_prefix = \"/plain/\"\nupstream = \"api\"\npublic = true\n"
    );
    let g = Gateway::start(opts(up.port, &routes, vec![])).await;
    for http1 in [true, false] {
        let c = g.client(http1);
        // A foreign origin: the upstream would have granted it; the gateway's rule does not.
        let r = c
            .get(g.url("/api/items"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.version() == reqwest::Version::HTTP_2,
            !http1,
            "{:?}",
            r.version()
        );
        let acl: Vec<&str> = r
            .headers()
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("access-control-") || *k == "timing-allow-origin")
            .collect();
        assert!(acl.is_empty(), "http1={http1}: {acl:?}");
        // An allowed origin: the gateway's answer alone, not the upstream's beside it.
        let r = c
            .get(g.url("/api/items"))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        let all = |name: &str| -> Vec<String> {
            r.headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(all("access-control-allow-origin"), ["https://app.example"]);
        assert_eq!(all("access-control-allow-credentials"), ["true"]);
        assert_eq!(all("access-control-expose-headers"), ["x-request-id"]);
        assert!(all("access-control-allow-methods").is_empty());
        assert!(all("access-control-max-age").is_empty());
        // A route without a CORS rule leaves the upstream's answer alone.
        let r = c
            .get(g.url("/plain/x"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://evil.example")
        );
        assert_eq!(header(&r, "timing-allow-origin"), Some("*"));
    }
}

/// A WebSocket handshake over HTTP/1.1 (browsers open WebSockets over HTTP/1.1; the gateway
/// takes no HTTP/2 extended CONNECT).
async fn ws_handshake(g: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut r = g
        .client(true)
        .get(g.url(path))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshakes_on_cookie_routes_must_come_from_an_allowed_origin() {
    let up = TestUpstream::start(0).await;
    let routes = r#"
[[routes]]
name = "live"
path_prefix = "/live/"
upstream = "api"
auth = "static"
websocket = true
session_cookie = "session"

[routes.csrf]
origins = ["https://app.example"]
"#;
    let g = Gateway::start(opts(
        up.port,
        routes,
        vec![("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into())],
    ))
    .await;
    let session = format!("session={TOKEN}");

    // Cross-site WebSocket hijacking: a page elsewhere opens the socket, the browser adds the
    // session cookie. Refused before the upstream, as is a cookie handshake with no origin.
    let (status, body) = ws_handshake(
        &g,
        "/live/feed",
        &[("cookie", &session), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        r#"{"error":"csrf_failed","reason":"origin_not_allowed"}"#
    );
    let (status, body) = ws_handshake(&g, "/live/feed", &[("cookie", &session)]).await;
    assert_eq!(status, 403);
    assert_eq!(body, r#"{"error":"csrf_failed","reason":"origin_missing"}"#);
    assert!(up.seen.lock().unwrap().is_empty());

    // The gateway's own origin, a listed one, or a bearer token (not ambient): through.
    let same = format!("https://localhost:{}", g.https.port());
    for origin in [same.as_str(), "https://app.example"] {
        let (status, _) = ws_handshake(
            &g,
            "/live/feed",
            &[("cookie", &session), ("origin", origin)],
        )
        .await;
        assert_eq!(status, 200, "{origin}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = ws_handshake(
        &g,
        "/live/feed",
        &[
            ("authorization", &bearer),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = up.seen.lock().unwrap().len();
    assert_eq!(seen, 3);
    let m = g.metrics().await;
    assert!(
        m.contains("portcullis_csrf_failures_total{reason=\"origin_not_allowed\"} 1"),
        "{m}"
    );
}
