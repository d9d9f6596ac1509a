//! OCSP stapling against a real responder: certificates and responses are minted by the
//! `openssl` CLI (`openssl ocsp -index … -rsigner … -reqin … -respout …`, offline mode) and
//! served from a loopback HTTP server started here; `openssl s_client -status` is the client.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

const CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:ocsp.test
authorityInfoAccess = OCSP;URI:http://127.0.0.1:${ENV::OCSP_PORT}/
";

const SERIAL: &str = "0A11CE";

/// A CA, a leaf for `ocsp.test` naming the responder on `port`, and the responder's index.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(port: u16) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("openssl.cnf"), CNF).unwrap();
        let pki = Pki { dir };
        let p = port.to_string();
        pki.run(
            &p,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ca.key",
            ],
        );
        pki.run(
            &p,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=OCSP Test CA",
                "-days",
                "30",
                "-extensions",
                "ca",
                "-out",
                "ca.pem",
            ],
        );
        pki.run(
            &p,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "leaf.key",
            ],
        );
        pki.run(
            &p,
            &[
                "req",
                "-new",
                "-key",
                "leaf.key",
                "-subj",
                "/CN=ocsp.test",
                "-out",
                "leaf.csr",
            ],
        );
        pki.run(
            &p,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &format!("0x{SERIAL}"),
                "-days",
                "30",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "leaf",
                "-out",
                "leaf.pem",
            ],
        );
        pki.set_revoked(false);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, port: &str, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .env("OPENSSL_CONF", self.path("openssl.cnf"))
            .env("OCSP_PORT", port)
            .output()
            .expect("the OCSP tests need the openssl command-line tool (OpenSSL 3)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn set_revoked(&self, revoked: bool) {
        let line = if revoked {
            format!("R\t491231235959Z\t240101000000Z\t{SERIAL}\tunknown\t/CN=ocsp.test\n")
        } else {
            format!("V\t491231235959Z\t\t{SERIAL}\tunknown\t/CN=ocsp.test\n")
        };
        std::fs::write(self.path("index.txt"), line).unwrap();
    }

    /// Writes the pair `name` (leaf + CA chain) into `dir`.
    fn install(&self, dir: &Path, name: &str) {
        let chain = std::fs::read_to_string(self.path("leaf.pem")).unwrap()
            + &std::fs::read_to_string(self.path("ca.pem")).unwrap();
        write_pair(
            dir,
            name,
            &chain,
            &std::fs::read_to_string(self.path("leaf.key")).unwrap(),
        );
    }

    /// `openssl ocsp` in offline responder mode, answering `request` (valid one day).
    fn respond(&self, request: &[u8]) -> Vec<u8> {
        let n = rand::random::<u32>();
        let (req, resp) = (format!("req-{n}.der"), format!("resp-{n}.der"));
        std::fs::write(self.path(&req), request).unwrap();
        self.run(
            "0",
            &[
                "ocsp",
                "-index",
                "index.txt",
                "-CA",
                "ca.pem",
                "-rsigner",
                "ca.pem",
                "-rkey",
                "ca.key",
                "-reqin",
                &req,
                "-respout",
                &resp,
                "-ndays",
                "1",
            ],
        );
        std::fs::read(self.path(&resp)).unwrap()
    }
}

/// An HTTP OCSP responder on 127.0.0.1:`port`; `up` false refuses connections.
struct Responder {
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    async fn start(port: u16, pki: Arc<Pki>, up: Arc<AtomicBool>) -> Responder {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r2 = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                if !up.load(Ordering::SeqCst) {
                    drop(s);
                    continue;
                }
                let (pki, requests) = (pki.clone(), r2.clone());
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut s).await else {
                        return;
                    };
                    assert!(head.starts_with("post "), "{head}");
                    assert!(
                        head.contains("content-type: application/ocsp-request"),
                        "{head}"
                    );
                    requests.fetch_add(1, Ordering::SeqCst);
                    let der = tokio::task::spawn_blocking(move || pki.respond(&body))
                        .await
                        .unwrap();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        der.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&der).await;
                });
            }
        });
        Responder { requests, task }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What `openssl s_client -status` says about the staple for `sni`: Some(status) or None.
fn staple(port: u16, sni: &str) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", sni, "-status"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains("OCSP response: no response sent") {
        return None;
    }
    assert!(text.contains("OCSP Response Status: successful"), "{text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Cert Status: "))
        .map(str::to_string)
}

async fn staple_async(port: u16, sni: &'static str) -> Option<String> {
    tokio::task::spawn_blocking(move || staple(port, sni))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staples_are_fetched_verified_refreshed_dropped_when_revoked_and_kept_while_down() {
    let port = free_port();
    let pki = Arc::new(Pki::new(port));
    let up = Arc::new(AtomicBool::new(true));
    let responder = Responder::start(port, pki.clone(), up.clone()).await;
    let g = Gateway::start(Options {
        env: vec![("PORTCULLIS_OCSP_MAX_REFRESH_SECONDS".into(), "1".into())],
        ..Options::default()
    })
    .await;
    let https = g.https.port();

    // The harness's own certificate names no responder: served without a staple, no noise.
    assert_eq!(staple_async(https, "localhost").await, None);

    pki.install(&g.cert_dir(), "ocsp");
    eventually(Duration::from_secs(15), "a good staple", || async {
        (staple_async(https, "ocsp.test").await.as_deref() == Some("good")).then_some(())
    })
    .await;
    assert!(responder.requests.load(Ordering::SeqCst) >= 1);

    // Revoked at the responder: after the next refresh no staple is served, loudly.
    pki.set_revoked(true);
    eventually(Duration::from_secs(15), "the staple withdrawn", || async {
        staple_async(https, "ocsp.test")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // The staple is withdrawn before the line is written.
    eventually(Duration::from_secs(3), "REVOKED logged", || async {
        g.log()
            .contains("OCSP says the certificate is REVOKED")
            .then_some(())
    })
    .await;
    let m = g.metrics().await;
    assert!(
        !m.contains("portcullis_ocsp_events_total{event=\"revoked\"} 0"),
        "{m}"
    );

    // Good again, then the responder goes away: the last good staple keeps being served.
    pki.set_revoked(false);
    eventually(Duration::from_secs(15), "a good staple again", || async {
        (staple_async(https, "ocsp.test").await.as_deref() == Some("good")).then_some(())
    })
    .await;
    up.store(false, Ordering::SeqCst);
    let before = g.log().matches("OCSP refresh failed").count();
    eventually(Duration::from_secs(15), "failed refreshes", || async {
        (g.log().matches("OCSP refresh failed").count() >= before + 2).then_some(())
    })
    .await;
    assert_eq!(
        staple_async(https, "ocsp.test").await.as_deref(),
        Some("good")
    );

    // Nothing about the responder-less certificate in the log.
    assert!(
        !g.log()
            .lines()
            .any(|l| l.contains("OCSP") && l.contains("\"certificate\":\"localhost\"")),
        "{}",
        g.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staples_survive_a_restart_without_the_responder() {
    let port = free_port();
    let pki = Arc::new(Pki::new(port));
    let up = Arc::new(AtomicBool::new(true));
    let _responder = Responder::start(port, pki.clone(), up.clone()).await;
    let shared = tempfile::tempdir().unwrap();
    let (certs, data) = (shared.path().join("certs"), shared.path().join("data"));
    std::fs::create_dir_all(&certs).unwrap();
    pki.install(&certs, "ocsp");
    let env = vec![
        (
            "PORTCULLIS_CERT_DIR".to_string(),
            certs.display().to_string(),
        ),
        (
            "PORTCULLIS_DATA_DIR".to_string(),
            data.display().to_string(),
        ),
    ];
    {
        let g = Gateway::start(Options {
            env: env.clone(),
            ..Options::default()
        })
        .await;
        // Fetched before serving: the very first handshake is stapled.
        assert_eq!(
            staple_async(g.https.port(), "ocsp.test").await.as_deref(),
            Some("good")
        );
    }
    up.store(false, Ordering::SeqCst);
    let g = Gateway::start(Options {
        env,
        ..Options::default()
    })
    .await;
    assert_eq!(
        staple_async(g.https.port(), "ocsp.test").await.as_deref(),
        Some("good"),
        "{}",
        g.log()
    );
    assert!(g.log().contains("OCSP staple restored from the cache"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_supplied_ocsp_file_is_stapled_without_asking_the_responder() {
    // The AIA names a port nobody listens on: only the file can provide the staple.
    let pki = Pki::new(free_port());
    let g = Gateway::start(Options::default()).await;
    let leaf = std::fs::read(pki.path("leaf.pem")).unwrap();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let der = |pem: &[u8]| x509_parser::pem::parse_x509_pem(pem).unwrap().1.contents;
    let request = portcullis::tls::ocsp::build_request(&der(&leaf), &der(&ca)).unwrap();
    std::fs::write(g.cert_dir().join("ocsp.ocsp"), pki.respond(&request)).unwrap();
    pki.install(&g.cert_dir(), "ocsp");
    eventually(Duration::from_secs(15), "the file's staple", || async {
        (staple_async(g.https.port(), "ocsp.test").await.as_deref() == Some("good")).then_some(())
    })
    .await;
    // A file for a revoked certificate is verified too, and never stapled.
    pki.set_revoked(true);
    std::fs::write(g.cert_dir().join("ocsp.ocsp"), pki.respond(&request)).unwrap();
    eventually(
        Duration::from_secs(15),
        "the revoked file refused",
        || async {
            staple_async(g.https.port(), "ocsp.test")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}
