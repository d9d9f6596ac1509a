//! Renewal by ACME Renewal Information (RFC 9773). Debian's Pebble (2.4) has no `renewalInfo`
//! endpoint, so the one thing it lacks stands in front of it: a server that serves Pebble's
//! directory with `renewalInfo` added, and answers that endpoint with a window the test sets.
//! Everything else (account, order, validation, issuance) is Pebble's. A window in the future
//! holds renewal back although the lifetime rule says renew; a window in the past renews at
//! once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pebble::Pebble;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stand-in for the `renewalInfo` endpoint, in front of Pebble's directory.
struct AriFront {
    port: u16,
    /// The suggested window (RFC 3339 start, end).
    window: Arc<Mutex<(String, String)>>,
    /// Certificate identifiers asked about.
    asked: Arc<Mutex<Vec<String>>>,
}

fn rfc3339(offset_seconds: i64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + offset_seconds;
    let dt = time_of(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.0, dt.1, dt.2, dt.3, dt.4, dt.5
    )
}

/// (year, month, day, hour, minute, second) of a Unix time, UTC.
fn time_of(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

impl AriFront {
    async fn start(pebble: &Pebble) -> AriFront {
        let (cert, key) = pebble.https_pair();
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let window = Arc::new(Mutex::new((rfc3339(30 * 86_400), rfc3339(31 * 86_400))));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let pebble_dir = pebble.directory();
        let pebble_client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&pebble.https_ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        let (w, a) = (window.clone(), asked.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, w, a, pebble_dir, client) = (
                    acceptor.clone(),
                    w.clone(),
                    a.clone(),
                    pebble_dir.clone(),
                    pebble_client.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|x| x == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (status, extra, body) = if path == "/dir" {
                        let mut dir: serde_json::Value = client
                            .get(&pebble_dir)
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        dir["renewalInfo"] =
                            format!("https://127.0.0.1:{port}/renewal-info").into();
                        ("200 OK", String::new(), dir.to_string())
                    } else if let Some(id) = path.strip_prefix("/renewal-info/") {
                        a.lock().unwrap().push(id.to_string());
                        let (start, end) = w.lock().unwrap().clone();
                        (
                            "200 OK",
                            "Retry-After: 1\r\n".to_string(),
                            serde_json::json!({"suggestedWindow": {"start": start, "end": end}})
                                .to_string(),
                        )
                    } else {
                        ("404 Not Found", String::new(), String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(response.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        AriFront {
            port,
            window,
            asked,
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }
}

const ISSUED: &str = "portcullis_acme_orders_total{result=\"issued\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_follows_the_servers_suggested_window() {
    let name = "ari.acme.test";
    let pebble = Pebble::start(free_port(), free_port(), 3600);
    let front = AriFront::start(&pebble).await;
    let storage = tempfile::tempdir().unwrap();
    // By the lifetime rule these one-hour certificates would renew 10 s after issuance.
    let config = pebble
        .acme_config(&[name], "http-01", storage.path())
        .replace(&pebble.directory(), &front.directory())
        + "renew_before_seconds = 3590\n";
    let g = Gateway::start(Options {
        https_port: Some(pebble.tls_port),
        http_port: Some(pebble.http_port),
        config_extra: config,
        ..Default::default()
    })
    .await;
    let root = pebble.issuing_root().await;
    let (first, _) = eventually(Duration::from_secs(60), "issued", || async {
        g.served_leaf(&root, name).await.ok()
    })
    .await;
    // The keeper asks about this certificate: its authority key identifier and serial.
    let leaf = x509_parser::parse_x509_certificate(&first).unwrap().1;
    use base64::Engine;
    let serial =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(leaf.tbs_certificate.raw_serial());
    eventually(
        Duration::from_secs(10),
        "renewal information asked",
        || async {
            front
                .asked
                .lock()
                .unwrap()
                .iter()
                .any(|id| id.ends_with(&format!(".{serial}")))
                .then_some(())
        },
    )
    .await;
    // A window a month ahead holds renewal back past the lifetime rule's 10 s.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(g.metric(ISSUED).await, 1, "{}", g.log());
    assert_eq!(g.served_leaf(&root, name).await.unwrap(), first);
    assert!(g
        .log()
        .contains("renewal scheduled by the server's renewal information"));
    // A window that has begun: renewed at once.
    *front.window.lock().unwrap() = (rfc3339(-7200), rfc3339(-3600));
    let start = std::time::Instant::now();
    while g.metric(ISSUED).await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not renewed:\n{}\n{}",
            g.log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    println!("renewed {took:?} after the window opened");
    let renewed = eventually(Duration::from_secs(10), "the renewal served", || async {
        g.served_leaf(&root, name)
            .await
            .ok()
            .filter(|l| *l != first)
    })
    .await
    .0;
    assert_ne!(renewed, first);
}

#[test]
fn dates_are_written_as_rfc3339() {
    assert_eq!(time_of(0), (1970, 1, 1, 0, 0, 0));
    assert_eq!(time_of(951_782_400), (2000, 2, 29, 0, 0, 0));
    assert_eq!(time_of(1_798_761_599), (2026, 12, 31, 23, 59, 59));
}
