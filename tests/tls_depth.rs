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

    // Log lines reach the file through a batching writer: wait for the last one to land.
    eventually(
        Duration::from_secs(3),
        "upstream TLS failures logged",
        || async {
            (g.log().matches("upstream TLS f").count()
                + g.log().matches("upstream TLS refused").count()
                >= 3)
                .then_some(())
        },
    )
    .await;
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
    eventually(
        Duration::from_secs(5),
        "protocol_version counted",
        || async {
            (g.metric("portcullis_tls_handshake_failures_total{reason=\"protocol_version\"}")
                .await
                >= 1)
                .then_some(())
        },
    )
    .await;
    // Counted before it is logged: wait for the line.
    eventually(
        Duration::from_secs(3),
        "protocol_version logged",
        || async {
            g.log()
                .lines()
                .any(|l| {
                    l.contains("TLS handshake failed")
                        && l.contains("\"reason\":\"protocol_version\"")
                        && l.contains("\"sni\":\"localhost\"")
                })
                .then_some(())
        },
    )
    .await;

    // The default listener takes both.
    let g12 = Gateway::start(Options::default()).await;
    let (ok, text) = openssl_connects(g12.https.port(), "-tls1_2", &g12.ca.pem);
    assert!(ok, "{text}");
    let _ = Duration::from_secs(0);
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn client_with(g: &Gateway, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(g.ca.pem.as_bytes()).unwrap())
        .resolve("localhost", g.https)
        .http1_only()
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_routes_take_verified_client_certificates_and_pass_their_identity() {
    let agents = TestCa::new("Agent CA");
    let stranger = TestCa::new("Stranger CA");
    let (a1_cert, a1_key, a1_der) = agents.client_leaf("agent-1.internal");
    let (a2_cert, a2_key, _) = agents.client_leaf("agent-2.internal");
    let (x_cert, x_key, _) = stranger.client_leaf("agent-1.internal");
    let fp = sha256_hex(&a1_der);
    let policy = format!(
        r#"
[mtls]
ca_file = "agents-ca.pem"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "agents"
path_prefix = "/whoami"
upstream = "worker"
auth = "mtls"
client_cert_allow = ["sha256:{fp}", "san:agent-9.internal"]

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true
"#
    );
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), policy),
            ("agents-ca.pem".into(), agents.pem.clone()),
        ],
        ..Options::default()
    })
    .await;

    // No certificate: refused on the mTLS route, fine on a normal one.
    let anon = client_with(&g, None);
    let r = anon.get(g.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"client_certificate_required"}"#
    );
    assert_eq!(
        anon.get(g.url("/v1/models")).send().await.unwrap().status(),
        200
    );

    // The allowed agent: its identity reaches the worker.
    let a1 = client_with(&g, Some((&a1_cert, &a1_key)));
    let r = a1.get(g.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let who: serde_json::Value = r.json().await.unwrap();
    assert_eq!(who["subject"], "agent-1.internal");
    assert_eq!(who["auth"], "mtls");
    assert_eq!(who["client_cert"], format!("sha256:{fp}"));

    // Same CA, not on the allow-list.
    let a2 = client_with(&g, Some((&a2_cert, &a2_key)));
    let r = a2.get(g.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"client_certificate_denied"}"#
    );
    assert_eq!(
        a2.get(g.url("/v1/models")).send().await.unwrap().status(),
        200
    );

    // A certificate from another CA: the handshake itself is refused.
    let x = client_with(&g, Some((&x_cert, &x_key)));
    let err = x.get(g.url("/v1/models")).send().await;
    assert!(err.is_err(), "a foreign client certificate was accepted");
    eventually(
        Duration::from_secs(5),
        "bad client certificate counted",
        || async {
            (g.metric(
                "portcullis_tls_handshake_failures_total{reason=\"client_certificate_invalid\"}",
            )
            .await
                >= 1)
                .then_some(())
        },
    )
    .await;

    // A client certificate forged with a self-made identity does not help either, and the
    // gateway's own identity headers cannot be sent in.
    let r = anon
        .get(g.url("/whoami"))
        .header("x-portcullis-client-cert", format!("sha256:{fp}"))
        .header("x-portcullis-subject", "agent-1.internal")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_mtls_listener_refuses_handshakes_without_a_valid_unrevoked_certificate() {
    let agents = TestCa::new("Agent CA");
    let (good_cert, good_key, _) = agents.client_leaf_serial("agent-1.internal", 1001);
    let (bad_cert, bad_key, _) = agents.client_leaf_serial("agent-2.internal", 1002);
    let policy = r#"
[mtls]
ca_file = "agents-ca.pem"
crl_files = ["agents.crl"]
required = true

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true
"#;
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), policy.into()),
            ("agents-ca.pem".into(), agents.pem.clone()),
            ("agents.crl".into(), agents.crl(&[1002])),
        ],
        ..Options::default()
    })
    .await;
    assert!(client_with(&g, None)
        .get(g.url("/v1/models"))
        .send()
        .await
        .is_err());
    assert!(
        client_with(&g, Some((&bad_cert, &bad_key)))
            .get(g.url("/v1/models"))
            .send()
            .await
            .is_err(),
        "a revoked certificate was accepted"
    );
    let r = client_with(&g, Some((&good_cert, &good_key)))
        .get(g.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_counted_and_logged_with_reason_client_and_sni() {
    let g = Gateway::start(Options::default()).await;
    // A client that does not trust the gateway's CA aborts the handshake with an alert.
    let stranger = TestCa::new("Stranger");
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(stranger.pem.as_bytes()).unwrap())
        .resolve("localhost", g.https)
        .build()
        .unwrap();
    assert!(c.get(g.url("/health")).send().await.is_err());
    // Plain HTTP on the HTTPS port.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(g.https).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    let series = |r: &str| format!("portcullis_tls_handshake_failures_total{{reason=\"{r}\"}}");
    eventually(
        Duration::from_secs(5),
        "handshake failures counted",
        || async {
            (g.metric(&series("client_rejected_certificate")).await >= 1
                && g.metric(&series("malformed")).await >= 1)
                .then_some(())
        },
    )
    .await;
    // Each is counted before it is logged: wait for both lines.
    eventually(
        Duration::from_secs(3),
        "handshake failures logged",
        || async {
            let log = g.log();
            (log.contains("\"reason\":\"client_rejected_certificate\"")
                && log.contains("\"reason\":\"malformed\""))
            .then_some(())
        },
    )
    .await;
    let log = g.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"reason\":\"client_rejected_certificate\"")
                && l.contains("\"sni\":\"localhost\"")
                && l.contains("\"client\":\"127.0.0.1\"")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"reason\":\"malformed\"")),
        "{log}"
    );
    // Pingora's own line is replaced, not duplicated.
    assert!(!log.contains("Downstream handshake error"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exposed_and_warned_about() {
    let g = Gateway::start(Options::default()).await;
    let m = g.metrics().await;
    // The metric is the notAfter timestamp; the days left are counted from now.
    let days_left = |at: f64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        (at - now) / 86_400.0
    };
    let long: f64 = m
        .lines()
        .find(|l| {
            l.starts_with("portcullis_certificate_expiry_timestamp_seconds{name=\"localhost\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .map(days_left)
        .unwrap_or_else(|| panic!("{m}"));
    assert!(long > 300.0, "{long}");
    assert!(!g.log().contains("certificate expires soon"));

    // A certificate with 5 days left, dropped into the folder: exposed and warned about.
    let (cert, key) = g.ca.leaf_expiring(&["soon.test"], 5);
    write_pair(&g.cert_dir(), "soon", &cert, &key);
    let (days, _) = eventually(Duration::from_secs(10), "expiry metric", || async {
        g.metrics()
            .await
            .lines()
            .find(|l| {
                l.starts_with("portcullis_certificate_expiry_timestamp_seconds{name=\"soon\"}")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(days_left)
    })
    .await;
    assert!((4.9..=5.01).contains(&days), "{days}");
    let what = format!(
        "expiry warning (log: {})",
        g.log()
            .lines()
            .filter(|l| l.contains("expire") || l.contains("cert"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eventually(Duration::from_secs(5), &what, || async {
        g.log()
            .lines()
            .any(|l| {
                l.contains("certificate expires soon")
                    && l.contains("\"certificate\":\"soon\"")
                    && (l.contains("\"days_left\":4") || l.contains("\"days_left\":5"))
            })
            .then_some(())
    })
    .await;
}

/// A rustls client presenting `cert`/`key`, trusting the gateway's CA, offering HTTP/1.1; it
/// keeps TLS sessions for resumption (rustls' default in-memory store).
fn mtls_client_config(g: &Gateway, cert: &str, key: &str) -> std::sync::Arc<rustls::ClientConfig> {
    mtls_client_config_alpn(g, cert, key, b"http/1.1")
}

/// The same, offering only `alpn`.
fn mtls_client_config_alpn(
    g: &Gateway,
    cert: &str,
    key: &str,
    alpn: &[u8],
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(g.ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    std::sync::Arc::new(cfg)
}

/// One HTTP/2 connection driven by hand, so a test knows every request went over it.
struct H2Conn {
    send: h2::client::SendRequest<bytes::Bytes>,
    /// The connection task: it ends when the connection does.
    conn: tokio::task::JoinHandle<()>,
}

impl H2Conn {
    async fn open(g: &Gateway, cfg: std::sync::Arc<rustls::ClientConfig>) -> H2Conn {
        let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = h2::client::handshake(tls).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn { send, conn }
    }

    /// `GET path` on this connection: (status, body), or the error that ended the stream.
    async fn get(&mut self, g: &Gateway, path: &str) -> Result<(u16, String), h2::Error> {
        let req = http::Request::get(format!("https://localhost:{}{path}", g.https.port()))
            .body(())
            .unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(10), self.send.clone().ready())
            .await
            .expect("HTTP/2 connection ready in time")?;
        self.send = ready;
        let (resp, _) = self.send.send_request(req, true)?;
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("HTTP/2 answer in time")?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }

    /// Waits for the connection to end (the server closed it).
    async fn ended(self) {
        tokio::time::timeout(Duration::from_secs(10), self.conn)
            .await
            .expect("the gateway closes the HTTP/2 connection")
            .unwrap();
    }
}

/// Sends one keep-alive `GET path` on `tls` and reads its answer: (status, body), or `None`
/// when the connection ends first.
async fn keepalive_get<S>(tls: &mut S, path: &str) -> Option<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), common::read_message(tls))
        .await
        .ok()??;
    let status = head.get(9..12)?.parse().ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_by_a_crl_reload_loses_its_open_and_resumed_connections() {
    use rustls::HandshakeKind;
    let agents = TestCa::new("Agent CA");
    let (cert, key, _) = agents.client_leaf_serial("agent-1.internal", 1001);
    let policy = r#"
[mtls]
ca_file = "agents-ca.pem"
crl_files = ["agents.crl"]

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "agents"
path_prefix = "/whoami"
upstream = "worker"
auth = "mtls"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true
"#;
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), policy.into()),
            ("agents-ca.pem".into(), agents.pem.clone()),
            ("agents.crl".into(), agents.crl(&[9999])),
        ],
        ..Options::default()
    })
    .await;
    let connector = tokio_rustls::TlsConnector::from(mtls_client_config(&g, &cert, &key));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
        connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
    };
    // Two HTTP/1.1 keep-alive connections, the second resuming the first's session, and one
    // HTTP/2 connection, each admitted.
    let mut first = connect().await.unwrap();
    assert_eq!(keepalive_get(&mut first, "/whoami").await.unwrap().0, 200);
    let mut open = connect().await.unwrap();
    assert_eq!(
        open.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "the gateway resumes sessions"
    );
    assert_eq!(keepalive_get(&mut open, "/whoami").await.unwrap().0, 200);
    drop(first);
    let mut h2 = H2Conn::open(&g, mtls_client_config_alpn(&g, &cert, &key, b"h2")).await;
    assert_eq!(h2.get(&g, "/whoami").await.unwrap().0, 200);
    assert!(g.metric("portcullis_connections ").await >= 2);

    // The CRL now revokes the certificate.
    let generation = g.generation().await;
    rename_over(&g.policy_dir().join("agents.crl"), &agents.crl(&[1001]));
    eventually(Duration::from_secs(10), "CRL reloaded", || async {
        (g.generation().await > generation).then_some(())
    })
    .await;

    // The open HTTP/1.1 connection: refused, then closed.
    let (status, body) = keepalive_get(&mut open, "/v1/models").await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(body, r#"{"error":"client_certificate_denied"}"#);
    assert!(keepalive_get(&mut open, "/v1/models").await.is_none());

    // A resumed session never meets the verifier: refused all the same.
    let mut again = connect().await.expect("a resumed handshake");
    assert_eq!(
        again.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    let got = keepalive_get(&mut again, "/whoami").await;
    assert_eq!(got.as_ref().map(|g| g.0), Some(403), "{got:?}");

    // The HTTP/2 connection: refused on the same connection, which the gateway then closes
    // (the HTTP/1.1 ones are closed already, so no connection is left open).
    let (status, body) = h2.get(&g, "/v1/models").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"error":"client_certificate_denied"}"#)
    );
    h2.ended().await;
    eventually(
        Duration::from_secs(10),
        "every connection closed",
        || async { (g.metric("portcullis_connections ").await == 0).then_some(()) },
    )
    .await;
    let log = g.log();
    assert!(
        log.contains("client certificate no longer passes: closing the connection"),
        "{log}"
    );
}

/// A rustls client without a certificate, offering only `alpn`.
fn anonymous_client_config(g: &Gateway, alpn: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut cfg = (*g.tls_client_config()).clone();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    std::sync::Arc::new(cfg)
}

fn required_policy(required: bool) -> String {
    format!(
        r#"
[mtls]
ca_file = "agents-ca.pem"
required = {required}

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_requiring_client_certificates_refuses_open_connections_without_one() {
    let agents = TestCa::new("Agent CA");
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), required_policy(false)),
            ("agents-ca.pem".into(), agents.pem.clone()),
        ],
        ..Options::default()
    })
    .await;
    // Without a certificate, over HTTP/1.1 and HTTP/2: admitted while certificates are optional.
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let mut h1 = tokio_rustls::TlsConnector::from(anonymous_client_config(&g, b"http/1.1"))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(keepalive_get(&mut h1, "/v1/models").await.unwrap().0, 200);
    let mut h2 = H2Conn::open(&g, anonymous_client_config(&g, b"h2")).await;
    assert_eq!(h2.get(&g, "/v1/models").await.unwrap().0, 200);

    let generation = g.generation().await;
    rename_over(&g.policy_dir().join("p.toml"), &required_policy(true));
    eventually(Duration::from_secs(10), "policy reloaded", || async {
        (g.generation().await > generation).then_some(())
    })
    .await;

    // Both connections: refused, then closed.
    let required = r#"{"error":"client_certificate_required"}"#;
    let (status, body) = keepalive_get(&mut h1, "/v1/models").await.unwrap();
    assert_eq!((status, body.as_str()), (403, required));
    assert!(keepalive_get(&mut h1, "/v1/models").await.is_none());
    let (status, body) = h2.get(&g, "/v1/models").await.unwrap();
    assert_eq!((status, body.as_str()), (403, required));
    h2.ended().await;
}

fn ws_mtls_policy() -> &'static str {
    r#"
[mtls]
ca_file = "agents-ca.pem"
crl_files = ["agents.crl"]

[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "rooms"
path_prefix = "/rooms/"
upstream = "rooms"
auth = "mtls"

[routes.csrf]
origins = ["https://app.example"]
"#
}

/// Opens `wss://localhost/rooms/lobby/ws` presenting `cert`, sending `origin`.
async fn open_mtls_ws(
    g: &Gateway,
    cert: &str,
    key: &str,
    origin: &str,
) -> Result<common::ws::Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(mtls_client_config(g, cert, key))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut req = format!("wss://localhost:{}/rooms/lobby/ws", g.https.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::client_async(req, tls).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_websockets_check_origin_and_close_when_the_certificate_is_revoked() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let agents = TestCa::new("Agent CA");
    let (cert, key, _) = agents.client_leaf_serial("agent-1.internal", 1001);
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), ws_mtls_policy().into()),
            ("agents-ca.pem".into(), agents.pem.clone()),
            ("agents.crl".into(), agents.crl(&[9999])),
        ],
        ..Options::default()
    })
    .await;
    // A page on another site: the browser would present the installed certificate.
    let refused = open_mtls_ws(&g, &cert, &key, "https://evil.example").await;
    assert_eq!(refused.err(), Some(403));
    let mut ws = open_mtls_ws(&g, &cert, &key, "https://app.example")
        .await
        .unwrap_or_else(|s| panic!("HTTP {s}\n{}", g.log()));

    // The CRL now revokes the certificate: the open tunnel is closed with 4403.
    let generation = g.generation().await;
    rename_over(&g.policy_dir().join("agents.crl"), &agents.crl(&[1001]));
    eventually(Duration::from_secs(10), "CRL reloaded", || async {
        (g.generation().await > generation).then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => break u16::from(f.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}\n{}", g.log()),
        }
    };
    assert_eq!(code, 4403, "access revoked by policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_on_an_open_connection_stops_working() {
    let agents = TestCa::new("Agent CA");
    let (cert, key) = agents.client_leaf_expiring_in("agent-1.internal", 3);
    let g = Gateway::start(Options {
        policy: vec![
            ("p.toml".into(), required_policy(false)),
            ("agents-ca.pem".into(), agents.pem.clone()),
        ],
        ..Options::default()
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(g.https).await.unwrap();
    let mut h1 = tokio_rustls::TlsConnector::from(mtls_client_config(&g, &cert, &key))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut h2 = H2Conn::open(&g, mtls_client_config_alpn(&g, &cert, &key, b"h2")).await;
    assert_eq!(keepalive_get(&mut h1, "/v1/models").await.unwrap().0, 200);
    assert_eq!(h2.get(&g, "/v1/models").await.unwrap().0, 200);
    // The same connections, asked again until the certificate's notAfter has passed (no reload
    // happens in between): refused, then closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let denied = r#"{"error":"client_certificate_denied"}"#;
    loop {
        let (status, body) = keepalive_get(&mut h1, "/v1/models").await.unwrap();
        if status == 403 {
            assert_eq!(body, denied);
            break;
        }
        assert_eq!(status, 200);
        assert!(tokio::time::Instant::now() < deadline, "still admitted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(keepalive_get(&mut h1, "/v1/models").await.is_none());
    let (status, body) = h2.get(&g, "/v1/models").await.unwrap();
    assert_eq!((status, body.as_str()), (403, denied));
    h2.ended().await;
}
