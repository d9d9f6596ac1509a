//! TLS beyond the basics, over real sockets: upstream TLS against a pinned CA with a minimum
//! version, a TLS 1.3-only listener, client certificates (mTLS) and handshake telemetry.

mod common;

use common::upstream::TlsTestUpstream;
use common::*;
use std::time::Duration;

fn upstream_policy(good: u16, old: u16) -> String {
    format!(
        r#"
[[upstreams]]
name = "pinned"
kind = "external"
addresses = ["127.0.0.1:{good}"]
tls = true
sni = "upstream.test"
ca_file = "ca-right.pem"

[[upstreams]]
name = "wrong-ca"
kind = "external"
addresses = ["127.0.0.1:{good}"]
tls = true
sni = "upstream.test"
ca_file = "ca-wrong.pem"

[[upstreams]]
name = "wrong-name"
kind = "external"
addresses = ["127.0.0.1:{good}"]
tls = true
sni = "other.test"
ca_file = "ca-right.pem"

[[upstreams]]
name = "old-strict"
kind = "external"
addresses = ["127.0.0.1:{old}"]
tls = true
sni = "upstream.test"
ca_file = "ca-right.pem"
min_tls_version = "1.3"

[[upstreams]]
name = "old-lenient"
kind = "external"
addresses = ["127.0.0.1:{old}"]
tls = true
sni = "upstream.test"
ca_file = "ca-right.pem"

[[routes]]
name = "pinned"
path_prefix = "/pinned"
upstream = "pinned"
public = true

[[routes]]
name = "wrong-ca"
path_prefix = "/wrong-ca"
upstream = "wrong-ca"
public = true

[[routes]]
name = "wrong-name"
path_prefix = "/wrong-name"
upstream = "wrong-name"
public = true

[[routes]]
name = "old-strict"
path_prefix = "/old-strict"
upstream = "old-strict"
public = true

[[routes]]
name = "old-lenient"
path_prefix = "/old-lenient"
upstream = "old-lenient"
public = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified_against_the_pinned_ca_name_and_minimum_version() {
    let right = TestCa::new("Upstream CA");
    let wrong = TestCa::new("Some Other CA");
    let (cert, key) = right.leaf(&["upstream.test"]);
    let modern = TlsTestUpstream::start(&cert, &key, false).await;
    let old = TlsTestUpstream::start(&cert, &key, true).await;
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), upstream_policy(modern.port, old.port)),
            ("ca-right.pem".into(), right.pem.clone()),
            ("ca-wrong.pem".into(), wrong.pem.clone()),
        ],
        ..Options::default()
    })
    .await;
    let c = g.client(true);
    let get = |path: &str| {
        let (c, url) = (c.clone(), g.url(path));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/pinned").await, (200, "tls-ok".into()));
    assert_eq!(get("/old-lenient").await, (200, "tls-ok".into()));

    let (status, body) = get("/wrong-ca").await;
    assert_eq!(status, 502, "{body}");
    let (status, _) = get("/wrong-name").await;
    assert_eq!(status, 502);
    let (status, _) = get("/old-strict").await;
    assert_eq!(status, 502);

    let log = g.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("upstream TLS failed") || l.contains("upstream TLS refused"))
        .collect();
    assert!(
        failures
            .iter()
            .any(|l| l.contains("\"upstream\":\"wrong-ca\"") && l.contains("UnknownIssuer")),
        "{log}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("\"upstream\":\"wrong-name\"") && l.contains("not valid for name")),
        "{log}"
    );
    assert!(
        failures
            .iter()
            .any(|l| l.contains("\"upstream\":\"old-strict\"") && l.contains("TLSv1_2")),
        "{log}"
    );
}

fn openssl_connects(port: u16, version_flag: &str, ca: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["s_client", version_flag, "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&ca_path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl (Debian package openssl) is needed for this test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("Verify return code: 0"),
        text,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls13_only_listener_refuses_tls12_clients() {
    let g = Gateway::start(Options {
        env: vec![("PORTCULLIS_TLS_MIN_VERSION".into(), "1.3".into())],
        ..Options::default()
    })
    .await;
    let (ok, text) = openssl_connects(g.https.port(), "-tls1_3", &g.ca.pem);
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    let (ok, text) = openssl_connects(g.https.port(), "-tls1_2", &g.ca.pem);
    assert!(!ok, "TLS 1.2 was accepted: {text}");

    // The default listener takes both.
    let g12 = Gateway::start(Options::default()).await;
    let (ok, text) = openssl_connects(g12.https.port(), "-tls1_2", &g12.ca.pem);
    assert!(ok, "{text}");
    let _ = Duration::from_secs(0);
}
