//! Authentication end to end through the gateway: every provider, the exact 401/403/503 bodies,
//! JWT attacks, JWKS caching and outages, room tokens and key rotation, capabilities, query
//! tokens kept out of logs, and the verified-token cache.

mod common;

use common::auth::*;
use common::*;
use std::time::Duration;

const MISSING: &str =
    r#"{"detail": "Authorization header required. Use 'Authorization: Bearer YOUR_TOKEN'"}"#;
const MALFORMED: &str =
    r#"{"detail": "Invalid authorization header format. Use 'Authorization: Bearer YOUR_TOKEN'"}"#;
const INVALID: &str = r#"{"detail": "Invalid authentication token"}"#;
const SECRET: &str = "an-hmac-secret-of-at-least-thirty-two-bytes!";

fn base_policy(extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "worker"
kind = "worker"

[[upstreams]]
name = "rooms"
kind = "rooms"

{extra}
"#
    )
}

async fn status_and_body(
    c: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut r = c.get(url);
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.text().await.unwrap(), www)
}

fn opts(policy: String, env: Vec<(&str, String)>) -> Options {
    Options {
        policy: vec![("p.toml".into(), policy)],
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_from_the_environment_and_the_exact_401_bodies() {
    let token_dir = tempfile::tempdir().unwrap();
    let policy = base_policy("[auth]\nbackoff = { max_failures = 0 }\n\n[[routes]]\nname = \"whoami\"\npath_prefix = \"/whoami\"\nupstream = \"worker\"\nauth = \"static\"\n");
    let g = Gateway::start(opts(
        policy,
        vec![
            (
                "PORTCULLIS_WORKER_TOKEN",
                "env-token-0123456789abcdef".into(),
            ),
            (
                "PORTCULLIS_TOKEN_FILE",
                token_dir.path().join("t.yaml").display().to_string(),
            ),
        ],
    ))
    .await;
    let c = g.client(true);
    let url = g.url("/whoami");
    let (s, body, www) = status_and_body(&c, &url, None).await;
    assert_eq!((s, body.as_str()), (401, MISSING));
    assert_eq!(www.as_deref(), Some("Bearer realm=\"portcullis\""));
    for bad in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer a b",
        "Token env-token-0123456789abcdef",
    ] {
        let (s, body, www) = status_and_body(&c, &url, Some(bad)).await;
        assert_eq!((s, body.as_str()), (401, MALFORMED), "{bad}");
        assert!(www.unwrap().contains("invalid_request"));
    }
    let (s, body, www) = status_and_body(&c, &url, Some("Bearer env-token-0123456789abcdeX")).await;
    assert_eq!((s, body.as_str()), (401, INVALID));
    assert!(www.unwrap().contains("invalid_token"));
    let (s, body, _) = status_and_body(&c, &url, Some("Bearer env-token-0123456789abcdef")).await;
    assert_eq!(s, 200, "{body}");
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(who["subject"], "worker");
    // The environment token was used: no token file was written.
    assert!(!token_dir.path().join("t.yaml").exists());
    assert!(g
        .log()
        .contains("environment variable PORTCULLIS_WORKER_TOKEN"));
    assert!(
        !g.log().contains("env-token-0123456789abcdef"),
        "token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_worker_token_is_saved_0600_and_the_file_beats_generation_but_not_env() {
    use std::os::unix::fs::PermissionsExt;
    let token_dir = tempfile::tempdir().unwrap();
    let file = token_dir.path().join("portcullis/deployment.yaml");
    let policy = base_policy("[[routes]]\nname = \"whoami\"\npath_prefix = \"/whoami\"\nupstream = \"worker\"\nauth = \"static\"\n");
    let env = vec![("PORTCULLIS_TOKEN_FILE", file.display().to_string())];
    let g = Gateway::start(opts(policy.clone(), env.clone())).await;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("worker_auth_token: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert_eq!(token.len(), 43, "32 bytes of URL-safe base64");
    let log = g.log();
    assert!(
        log.contains(&format!("Authorization: Bearer {token}")),
        "banner shows the full line once"
    );
    assert!(log.contains(&format!("{}…{}", &token[..4], &token[token.len() - 4..])));
    let c = g.client(true);
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {token}")))
            .await
            .0,
        200
    );
    drop(g);

    // Restart: the file is used, and the full token is not printed again.
    let g = Gateway::start(opts(policy.clone(), env.clone())).await;
    assert!(g.log().contains(&format!("token file {}", file.display())));
    assert!(!g.log().contains(&format!("Bearer {token}")));
    assert_eq!(
        status_and_body(
            &g.client(true),
            &g.url("/whoami"),
            Some(&format!("Bearer {token}"))
        )
        .await
        .0,
        200
    );
    drop(g);

    // The environment beats the file.
    let mut env2 = env.clone();
    env2.push(("WORKER_AUTH_TOKEN", "compat-env-token-0123456789".into()));
    let g = Gateway::start(opts(policy.clone(), env2)).await;
    let c = g.client(true);
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {token}")))
            .await
            .0,
        401
    );
    assert_eq!(
        status_and_body(
            &c,
            &g.url("/whoami"),
            Some("Bearer compat-env-token-0123456789")
        )
        .await
        .0,
        200
    );
    drop(g);

    // A token file readable by others stops the gateway at start.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", "/dev/null"])
        .env("PORTCULLIS_TOKEN_FILE", &file)
        .env("PORTCULLIS_POLICY_DIR", write_policy_dir(&policy).path())
        .env("PORTCULLIS_CERT_DIR", token_dir.path().join("certs"))
        .env(
            "PORTCULLIS_HTTPS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("PORTCULLIS_HTTP_ADDR", "off")
        .env(
            "PORTCULLIS_ADMIN_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env_remove("PORTCULLIS_WORKER_TOKEN")
        .env_remove("WORKER_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by group or others"));
}

fn write_policy_dir(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("p.toml"), text).unwrap();
    d
}

fn jwt_policy(es_pem_path: &str, rsa_pem_path: &str, jwks_url: Option<&str>) -> String {
    let jwks = jwks_url
        .map(|u| format!("\n[[auth.issuers]]\nname = \"idp\"\nissuer = \"https://idp.test\"\nalgorithms = [\"ES256\"]\njwks_url = \"{u}\"\njwks_ttl_seconds = 1\njwks_refetch_interval_seconds = 30\njwks_max_stale_seconds = 120\nleeway_seconds = 0\n"))
        .unwrap_or_default();
    base_policy(&format!(
        r#"
[auth]
default_provider = "jwt"
cache_ttl_seconds = 300
# These tests send many bad tokens on purpose; lockouts are tested on their own.
backoff = {{ max_failures = 0 }}

[[auth.issuers]]
name = "hs"
issuer = "https://hs.test"
audiences = ["api"]
algorithms = ["HS256"]
secret = "{SECRET}"
leeway_seconds = 0

[[auth.issuers]]
name = "es"
issuer = "https://es.test"
algorithms = ["ES256"]
leeway_seconds = 0
required_claims = ["sub"]
keys = [{{ kid = "es1", algorithm = "ES256", pem_file = "{es_pem_path}" }}]

[[auth.issuers]]
name = "rsa"
issuer = "https://rsa.test"
algorithms = ["RS256"]
leeway_seconds = 0
keys = [{{ kid = "rsa1", algorithm = "RS256", pem_file = "{rsa_pem_path}" }}]
{jwks}
[[routes]]
name = "whoami"
path_prefix = "/whoami"
upstream = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
capabilities = ["query.read"]
"#
    ))
}

struct JwtSetup {
    g: Gateway,
    es: EcKey,
    _keys: tempfile::TempDir,
}

async fn jwt_gateway(jwks_url: Option<&str>) -> JwtSetup {
    let es = EcKey::new();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("es1.pem"), &es.public_pem).unwrap();
    let rsa = std::fs::canonicalize("tests/fixtures/keys/rsa-test-public.pem").unwrap();
    let policy = jwt_policy(
        &keys.path().join("es1.pem").display().to_string(),
        &rsa.display().to_string(),
        jwks_url,
    );
    let g = Gateway::start(opts(policy, vec![])).await;
    JwtSetup { g, es, _keys: keys }
}

fn claims(iss: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({ "iss": iss, "sub": "alice", "aud": "api", "exp": now() + 600, "iat": now() });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_hs256_and_es256_pass_and_capabilities_gate_routes() {
    let s = jwt_gateway(None).await;
    let (g, c) = (&s.g, s.g.client(false));
    let hs = hs256(
        SECRET.as_bytes(),
        None,
        &claims(
            "https://hs.test",
            serde_json::json!({"caps": ["query.read"]}),
        ),
    );
    let (st, body, _) = status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {hs}"))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["subject"],
        "alice"
    );
    assert_eq!(
        status_and_body(&c, &g.url("/v1/models"), Some(&format!("Bearer {hs}")))
            .await
            .0,
        200
    );

    let es = s.es.sign(
        Some("es1"),
        &claims(
            "https://es.test",
            serde_json::json!({"sub": "bob", "scope": "archive.read"}),
        ),
    );
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {es}")))
            .await
            .0,
        200
    );
    let (st, body, www) =
        status_and_body(&c, &g.url("/v1/models"), Some(&format!("Bearer {es}"))).await;
    assert_eq!(st, 403);
    assert_eq!(
        body,
        r#"{"error": "capability_denied", "required": "query.read"}"#
    );
    assert_eq!(
        www.as_deref(),
        Some("Bearer error=\"insufficient_scope\", scope=\"query.read\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_capabilities_outside_the_safe_set_never_reach_the_upstream() {
    let s = jwt_gateway(None).await;
    let g = &s.g;
    let hs = hs256(
        SECRET.as_bytes(),
        None,
        &claims(
            "https://hs.test",
            serde_json::json!({"caps": ["read,policy.admin", "query.read", "a b", "x;y", "urn:team:ops", "Policy.Admin", "team.ops"]}),
        ),
    );
    let es = s.es.sign(
        Some("es1"),
        &claims(
            "https://es.test",
            serde_json::json!({"sub": "bob", "caps": "read,policy.admin QUERY.READ query.read"}),
        ),
    );
    for http1 in [true, false] {
        let c = g.client(http1);
        for (token, forwarded) in [(&hs, "query.read,team.ops"), (&es, "query.read")] {
            let (st, body, _) =
                status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {token}"))).await;
            assert_eq!(st, 200, "{body}");
            let who: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(who["capabilities"], forwarded, "http1: {http1}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attacks_are_all_refused_with_401() {
    let s = jwt_gateway(None).await;
    let (g, c) = (&s.g, s.g.client(true));
    let good = claims("https://hs.test", serde_json::json!({}));
    let rsa_public = std::fs::read("tests/fixtures/keys/rsa-test-public.pem").unwrap();
    let es_good = s.es.sign(
        Some("es1"),
        &claims("https://es.test", serde_json::json!({})),
    );
    let mut tampered: Vec<&str> = es_good.split('.').collect();
    let evil_payload = b64(
        claims("https://es.test", serde_json::json!({"sub": "admin"}))
            .to_string()
            .as_bytes(),
    );
    tampered[1] = &evil_payload;
    let tampered = tampered.join(".");
    let es_parts: Vec<&str> = es_good.split('.').collect();
    let zero_sig = format!("{}.{}.{}", es_parts[0], es_parts[1], b64(&[0u8; 64]));
    let mut attacks: Vec<(&str, String)> = vec![
        (
            "expired",
            hs256(
                SECRET.as_bytes(),
                None,
                &claims("https://hs.test", serde_json::json!({"exp": now() - 10})),
            ),
        ),
        (
            "not yet valid",
            hs256(
                SECRET.as_bytes(),
                None,
                &claims("https://hs.test", serde_json::json!({"nbf": now() + 600})),
            ),
        ),
        (
            "wrong iss",
            hs256(
                SECRET.as_bytes(),
                None,
                &claims("https://evil.test", serde_json::json!({})),
            ),
        ),
        (
            "wrong aud",
            hs256(
                SECRET.as_bytes(),
                None,
                &claims("https://hs.test", serde_json::json!({"aud": "other"})),
            ),
        ),
        (
            "no exp",
            hs256(
                SECRET.as_bytes(),
                None,
                &serde_json::json!({"iss": "https://hs.test", "sub": "x", "aud": "api"}),
            ),
        ),
        (
            "wrong secret",
            hs256(b"another-secret-that-is-long-enough-000", None, &good),
        ),
        // Key confusion: HS256 with the RSA public key as the HMAC secret.
        (
            "key confusion",
            hs256(
                &rsa_public,
                Some("rsa1"),
                &claims("https://rsa.test", serde_json::json!({})),
            ),
        ),
        (
            "unknown kid",
            s.es.sign(
                Some("nope"),
                &claims("https://es.test", serde_json::json!({})),
            ),
        ),
        ("tampered payload", tampered),
        ("zero ES256 signature", zero_sig),
        ("truncated", es_good[..es_good.len() - 10].to_string()),
        ("two segments", es_parts[..2].join(".")),
        (
            "non-base64",
            format!("{}.{}!.{}", es_parts[0], es_parts[1], es_parts[2]),
        ),
        (
            "oversized",
            format!("{}.{}.{}", es_parts[0], "A".repeat(9000), es_parts[2]),
        ),
        (
            "embedded jwk",
            raw_token(
                &serde_json::json!({"alg": "ES256", "jwk": s.es.jwk("x")}),
                &claims("https://es.test", serde_json::json!({})),
                &[1; 64],
            ),
        ),
        (
            "jku",
            raw_token(
                &serde_json::json!({"alg": "ES256", "kid": "es1", "jku": "http://127.0.0.1:1/k"}),
                &claims("https://es.test", serde_json::json!({})),
                &[1; 64],
            ),
        ),
        (
            "crit",
            raw_token(
                &serde_json::json!({"alg": "HS256", "crit": ["exp"]}),
                &good,
                b"x",
            ),
        ),
        (
            "kid traversal",
            hs256(
                SECRET.as_bytes(),
                Some("../../../../dev/null"),
                &claims("https://es.test", serde_json::json!({})),
            ),
        ),
    ];
    for alg in ["none", "None", "NONE", "nOnE"] {
        attacks.push((
            "alg none",
            raw_token(&serde_json::json!({"alg": alg, "typ": "JWT"}), &good, b""),
        ));
        attacks.push((
            "alg none, no signature",
            format!(
                "{}.",
                raw_token(&serde_json::json!({"alg": alg}), &good, b"").trim_end_matches('.')
            ),
        ));
    }
    for (name, token) in attacks {
        let (st, body, _) =
            status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {token}"))).await;
        assert_eq!((st, body.as_str()), (401, INVALID), "{name}");
    }
    assert!(!g.log().contains(&es_good), "token leaked into the log");
}

/// An IdP with key `j1`, its JWKS server, and a gateway that has fetched the set once (prewarm).
async fn prewarmed_jwks() -> (EcKey, JwksServer, JwtSetup) {
    let idp = EcKey::new();
    let server = JwksServer::start(jwks_body(&[idp.jwk("j1")])).await;
    let s = jwt_gateway(Some(&server.url())).await;
    eventually(Duration::from_secs(5), "prewarm", || async {
        (server.hits() == 1).then_some(())
    })
    .await;
    (idp, server, s)
}

/// Keys past their TTL (1 s here) are fetched again for the next token, even though the last
/// fetch succeeded within the refetch interval (30 s, which spaces out failed fetches): a key
/// rotated in meanwhile is found instead of its token refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_past_their_ttl_are_refreshed_however_recent_the_last_good_fetch() {
    let (idp, server, s) = prewarmed_jwks().await;
    let (g, c) = (&s.g, s.g.client(true));
    let idp2 = EcKey::new();
    *server.body.lock().unwrap() = jwks_body(&[idp.jwk("j1"), idp2.jwk("j2")]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t2 = idp2.sign(
        Some("j2"),
        &claims("https://idp.test", serde_json::json!({})),
    );
    let (st, body, _) = status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {t2}"))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_prewarmed_refetched_once_per_unknown_kid_and_served_stale() {
    let (idp, server, s) = prewarmed_jwks().await;
    let (g, c) = (&s.g, s.g.client(true));
    let ok = idp.sign(
        Some("j1"),
        &claims("https://idp.test", serde_json::json!({"sub": "carol"})),
    );
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {ok}")))
            .await
            .0,
        200
    );

    // The IdP rotates in j2: a token with the new kid triggers exactly one refetch.
    let idp2 = EcKey::new();
    *server.body.lock().unwrap() = jwks_body(&[idp.jwk("j1"), idp2.jwk("j2")]);
    let hits = server.hits();
    let t2 = idp2.sign(
        Some("j2"),
        &claims("https://idp.test", serde_json::json!({})),
    );
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {t2}")))
            .await
            .0,
        200
    );
    assert_eq!(server.hits(), hits + 1);
    // Unknown kids do not cause a refetch storm: within the interval, no further fetch.
    for i in 0..5 {
        let bogus = idp2.sign(
            Some(&format!("ghost{i}")),
            &claims("https://idp.test", serde_json::json!({})),
        );
        let (st, body, _) =
            status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {bogus}"))).await;
        assert_eq!((st, body.as_str()), (401, INVALID));
    }
    assert_eq!(server.hits(), hits + 1);

    // The IdP goes down; keys are past their TTL but within max-stale: still served.
    server.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = idp.sign(
        Some("j1"),
        &claims("https://idp.test", serde_json::json!({"sub": "dave"})),
    );
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {fresh}")))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_at_all_is_503_not_401() {
    // A real JWKS server that is down before the gateway ever reaches it.
    let server = JwksServer::start(jwks_body(&[])).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = jwt_gateway(Some(&server.url())).await;
    let idp = EcKey::new();
    let t = idp.sign(
        Some("j1"),
        &claims("https://idp.test", serde_json::json!({})),
    );
    let (st, body, _) = status_and_body(
        &s.g.client(true),
        &s.g.url("/whoami"),
        Some(&format!("Bearer {t}")),
    )
    .await;
    assert_eq!(st, 503);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "auth_keys_unavailable");
    assert!(!body.contains(&t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_verify_the_signature_once_and_an_expired_cached_token_is_refused() {
    let s = jwt_gateway(None).await;
    let (g, c) = (&s.g, s.g.client(false));
    let checks = |m: String| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("portcullis_token_signature_checks_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = checks(g.metrics().await);
    let t = s.es.sign(
        Some("es1"),
        &claims("https://es.test", serde_json::json!({"exp": now() + 3})),
    );
    for _ in 0..20 {
        assert_eq!(
            status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {t}")))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        checks(g.metrics().await) - before,
        1,
        "one signature check for 20 requests"
    );
    // Wait out the token's life (leeway 0): the cached entry must not outlive it.
    let deadline = now() + 4;
    while now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, body, _) = status_and_body(&c, &g.url("/whoami"), Some(&format!("Bearer {t}"))).await;
    assert_eq!((st, body.as_str()), (401, INVALID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let s = jwt_gateway(None).await;
    let t = hs256(
        SECRET.as_bytes(),
        None,
        &claims(
            "https://hs.test",
            serde_json::json!({"caps": ["query.read"]}),
        ),
    );
    let r =
        s.g.client(true)
            .get(s.g.url("/whoami"))
            .header("authorization", format!("Bearer {t}"))
            .header("x-portcullis-subject", "root")
            .header("X-Portcullis-Capabilities", "*")
            .header("x-portcullis-room", "ops")
            .send()
            .await
            .unwrap();
    let who: serde_json::Value = r.json().await.unwrap();
    assert_eq!(who["subject"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_provider_in_the_environment_overrides_the_policy_default() {
    let token_dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(Options {
        env: vec![
            ("AUTH_PROVIDER".into(), "static".into()),
            (
                "PORTCULLIS_WORKER_TOKEN".into(),
                "override-token-0123456789".into(),
            ),
            (
                "PORTCULLIS_TOKEN_FILE".into(),
                token_dir.path().join("t.yaml").display().to_string(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let c = g.client(true);
    assert_eq!(
        status_and_body(&c, &g.url("/whoami"), None).await.1,
        MISSING
    );
    let (s, body, _) = status_and_body(
        &c,
        &g.url("/whoami"),
        Some("Bearer override-token-0123456789"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["subject"],
        "worker"
    );
    // Public paths stay public.
    assert_eq!(status_and_body(&c, &g.url("/health"), None).await.0, 200);
}

#[test]
fn development_providers_are_refused_at_start_outside_development() {
    let dir = tempfile::tempdir().unwrap();
    for (mode_var, mode) in [("PORTCULLIS_MODE", "production"), ("ENV", "staging")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config", "/dev/null"])
            .env_remove("PORTCULLIS_MODE")
            .env_remove("ENV")
            .env(mode_var, mode)
            .env(
                "PORTCULLIS_POLICY_DIR",
                std::fs::canonicalize("policies").unwrap(),
            )
            .env("PORTCULLIS_CERT_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is allowed only in development mode"), "{err}");
    }
}
