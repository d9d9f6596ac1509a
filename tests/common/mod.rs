//! Test harness: a per-test CA and certificates (rcgen), a temp folder with config, policies and
//! certificates, and the real `portcullis` binary started on free loopback ports. Readiness is
//! awaited through the admin listener; nothing sleeps to synchronise.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod auth;
pub mod bind;
pub mod pebble;
pub mod redis;
pub mod upstream;
pub mod ws;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA generated for one test run.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    key: KeyPair,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// A client certificate (EKU clientAuth) for `name` as a DNS SAN: (certificate PEM, key PEM,
    /// certificate DER).
    pub fn client_leaf(&self, name: &str) -> (String, String, Vec<u8>) {
        self.client_leaf_serial(name, rand::random::<u32>() as u64 + 1)
    }

    /// `client_leaf` with a chosen serial number (for CRLs).
    pub fn client_leaf_serial(&self, name: &str, serial: u64) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A client certificate for `name` that expires `secs` seconds from now: (certificate PEM,
    /// key PEM).
    pub fn client_leaf_expiring_in(&self, name: &str, secs: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::seconds(secs);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf for `names` that expires in `days` days: (certificate PEM, key PEM).
    pub fn leaf_expiring(&self, names: &[&str], days: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(days);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A PEM CRL revoking `serials`, valid for a day.
    pub fn crl(&self, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// A leaf for `names` (DNS names or IPs): (certificate PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        for n in names {
            match n.parse::<std::net::IpAddr>() {
                Ok(ip) => p.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => p
                    .subject_alt_names
                    .push(SanType::DnsName((*n).try_into().unwrap())),
            }
        }
        p.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `str::replace` that must find what it replaces: a policy variant written as an edit of a
/// shared text fails loudly when that text changes, instead of silently testing the original.
pub trait Edit {
    fn edit(&self, from: &str, to: &str) -> String;
}

impl Edit for str {
    fn edit(&self, from: &str, to: &str) -> String {
        assert!(
            self.contains(from),
            "the text no longer contains {from:?}: this edit would do nothing"
        );
        self.replace(from, to)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port nothing listens on, for as long as the returned socket lives: it stays
/// bound (without listening), so connections to it are refused and no other test's listener can
/// take it in the meantime, as one from [`free_port`] could.
pub fn dead_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

pub struct Options {
    pub policy: Vec<(String, String)>,
    pub grace_seconds: u64,
    pub unready_seconds: u64,
    pub extra_certs: Vec<(String, Vec<String>)>,
    pub env: Vec<(String, String)>,
    pub http_listener: bool,
    /// Fixed listener ports (default: free ones), for servers that must know them first.
    pub https_port: Option<u16>,
    pub http_port: Option<u16>,
    /// Appended to `portcullis.toml` (e.g. a `[tls.acme]` section).
    pub config_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: vec![("default.toml".into(), DEFAULT_POLICY.into())],
            grace_seconds: 5,
            unready_seconds: 0,
            extra_certs: Vec::new(),
            env: Vec::new(),
            http_listener: true,
            https_port: None,
            http_port: None,
            config_extra: String::new(),
        }
    }
}

impl Options {
    /// The defaults with one policy file, `p.toml`, holding `text`.
    pub fn with_policy(text: impl Into<String>) -> Options {
        Options {
            policy: vec![("p.toml".into(), text.into())],
            ..Options::default()
        }
    }
}

/// Settings a test's environment could leak into a gateway it starts; removed first.
pub const GATEWAY_ENV: [&str; 8] = [
    "PORTCULLIS_CONFIG",
    "PORTCULLIS_MODE",
    "ENV",
    "PORTCULLIS_HTTPS_ADDR",
    "PORTCULLIS_HTTP_ADDR",
    "PORTCULLIS_ADMIN_ADDR",
    "PORTCULLIS_POLICY_DIR",
    "PORTCULLIS_CERT_DIR",
];

/// A running gateway process with its own folder.
pub struct Gateway {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub ca: Arc<TestCa>,
}

impl Gateway {
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.https.port(), path)
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    pub async fn start(opts: Options) -> Gateway {
        init();
        let ca = Arc::new(TestCa::new("Portcullis Test CA"));
        match Self::try_start(&opts, ca).await {
            Ok(g) => g,
            Err(log) => panic!("gateway did not start:\n{log}"),
        }
    }

    async fn try_start(opts: &Options, ca: Arc<TestCa>) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["policies", "certs", "data"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for (name, text) in &opts.policy {
            std::fs::write(root.join("policies").join(name), text).unwrap();
        }
        let (c, k) = ca.leaf(&["localhost", "127.0.0.1"]);
        write_pair(&root.join("certs"), "localhost", &c, &k);
        for (name, names) in &opts.extra_certs {
            let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            let (c, k) = ca.leaf(&names);
            write_pair(&root.join("certs"), name, &c, &k);
        }
        // Port 0 unless a test needs a port it chose: the gateway binds any free port and
        // writes the real addresses to its ready file, so no port is picked and released here.
        let https = format!("127.0.0.1:{}", opts.https_port.unwrap_or(0));
        let http = opts
            .http_listener
            .then(|| format!("127.0.0.1:{}", opts.http_port.unwrap_or(0)));
        let config = format!(
            "mode = \"development\"\nthreads = 2\n\n[listeners]\nhttps = \"{https}\"\nhttp = \"{}\"\nadmin = \"127.0.0.1:0\"\nready_file = \"ready.json\"\n\n[tls]\ncert_dir = \"certs\"\ndefault_cert = \"localhost\"\n\n[shutdown]\ngrace_seconds = {}\nunready_seconds = {}\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n",
            http.unwrap_or_else(|| "off".into()),
            opts.grace_seconds,
            opts.unready_seconds,
        );
        std::fs::write(root.join("portcullis.toml"), config + &opts.config_extra).unwrap();
        let log = std::fs::File::create(root.join("gateway.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("serve")
            .arg("--config")
            .arg(root.join("portcullis.toml"))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for k in GATEWAY_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let unknown: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut g = Gateway {
            child: Some(child),
            dir,
            https: unknown,
            http: None,
            admin: unknown,
            ca,
        };
        let ready = g.dir.path().join("ready.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = g.child_mut().try_wait() {
                return Err(g.log());
            }
            // Written whole (renamed into place) once the gateway is ready.
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                // A listener on an unspecified address (`0.0.0.0`, or a dual-stack `[::]`) is
                // reached on IPv4 loopback.
                let addr = |k: &str| {
                    v[k].as_str().map(|a| {
                        let mut a: SocketAddr = a.parse().unwrap();
                        if a.ip().is_unspecified() {
                            a = SocketAddr::from(([127, 0, 0, 1], a.port()));
                        }
                        a
                    })
                };
                g.https = addr("https").unwrap();
                g.http = addr("http");
                g.admin = addr("admin").unwrap();
                return Ok(g);
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30 s\n{}", g.log()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A client that trusts only this test's CA. `http1` forces HTTP/1.1.
    pub fn client(&self, http1: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap())
            .resolve("localhost", self.https)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        b = if http1 { b.http1_only() } else { b };
        b.build().unwrap()
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("http://{}{}", self.admin, path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The value of the metrics line that starts with `series` (name and labels), 0 when absent.
    pub async fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn generation(&self) -> u64 {
        self.admin_json("/status").await["policy"]["generation"]
            .as_u64()
            .unwrap()
    }

    /// A rustls client config trusting only this test's CA.
    pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

use rustls::pki_types::pem::PemObject;

impl Gateway {
    /// The leaf certificate (DER) served for `sni`, verified against the PEM roots `root` for
    /// that name (an ACME server's issuing root, say).
    pub async fn served_leaf(&self, root: &str, sni: &str) -> Result<Vec<u8>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(root.as_bytes()) {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.https)
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(sni.to_string().try_into().unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
    }

    /// Sends raw bytes over a TLS connection (HTTP/1.1 ALPN) and returns everything read until
    /// the server closes or 5 s pass. For requests no well-behaved client would send.
    pub async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = self.tls_connect().await;
        tls.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A TLS connection to the HTTPS listener for `localhost`, offering HTTP/1.1 only.
    pub async fn tls_connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let connector = tokio_rustls::TlsConnector::from(self.tls_client_config());
        let tcp = tokio::net::TcpStream::connect(self.https).await.unwrap();
        connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    }

    /// `GET path` over a raw connection; returns the status code.
    pub async fn raw_get_status(&self, path: &str) -> u16 {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let resp = self.raw(req.as_bytes()).await;
        resp.get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status for {path}: {resp:?}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) {
    std::fs::write(dir.join(format!("{name}.crt")), cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, start.elapsed());
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Compares `actual` with the golden file at `path`; `BLESS=1` rewrites it (review the diff).
pub fn golden(path: &Path, actual: &str) {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing golden {} (BLESS=1 writes it)", path.display()));
    assert_eq!(actual, expected, "golden {} differs", path.display());
}

/// Writes a file the way editors do: a temp file renamed over the original.
pub fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("swp-tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Reads one HTTP/1.1 message (head and a `content-length` body) from `s`: the lower-cased head
/// and the body, or `None` when the peer closes first.
pub async fn read_message<S>(s: &mut S) -> Option<(String, Vec<u8>)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, body)) = whole_message(&buf) {
            return Some((head, buf[body].to_vec()));
        }
    }
}

/// The first whole message (head and `content-length` body) at the start of `buf`: its
/// lower-cased head and where its body lies, or `None` while it is incomplete.
fn whole_message(buf: &[u8]) -> Option<(String, std::ops::Range<usize>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (buf.len() >= end + 4 + len).then(|| (head, end + 4..end + 4 + len))
}

/// Reads until `n` whole responses (`content-length` bodies) have arrived or the server closes;
/// returns the lower-cased heads, and whether the connection was closed. Pipelined answers
/// may share one read, which [`read_message`] would drop.
pub async fn read_responses<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    n: usize,
) -> (Vec<String>, bool) {
    let (mut buf, mut heads) = (Vec::new(), Vec::new());
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((head, body)) = whole_message(&buf) {
            buf.drain(..body.end);
            heads.push(head);
        }
        if heads.len() >= n {
            return (heads, false);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (heads, true),
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => panic!("neither a response nor a close within 5 s: {heads:?}"),
        }
    }
}

/// Reads one HTTP/1.1 request from `s` ([`read_message`]). For the small servers tests run.
pub async fn read_request(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    read_message(s).await
}

/// One public route `/` to an external upstream on `port`, with the policy's header timeout at
/// `header_ms`.
pub fn public_route_to(port: u16, header_ms: u64) -> Options {
    Options::with_policy(format!(
        "{}\n[network]\nheader_timeout_ms = {header_ms}\n",
        public_route_policy(port, "")
    ))
}

/// The policy of one public route `/` to an external upstream on `port` (health checks off),
/// with `upstream_lines` added to the upstream's table.
pub fn public_route_policy(port: u16, upstream_lines: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "app"
kind = "external"
addresses = ["127.0.0.1:{port}"]
health_check_interval_seconds = 0
{upstream_lines}

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
public = true
"#
    )
}

/// `portcullis check` on a policy folder alone (development mode, no certificates): whether it
/// passed, and its stdout and stderr together.
pub fn check_policy_dir(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "/dev/null"])
        .env("PORTCULLIS_POLICY_DIR", dir)
        .env("PORTCULLIS_CERT_DIR", dir.join("certs"))
        .env_remove("PORTCULLIS_MODE")
        .env_remove("ENV")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The value of metric `name` (no labels, or the first series) in a metrics page; panics when
/// it is missing.
/// Waits until `g`'s shared store is connected (`portcullis_shared_state_up` 1): the gateway
/// serves before that, in each limit's failure mode. Returns how long it took.
pub async fn wait_up(g: &Gateway, within: Duration) -> Duration {
    eventually(within, "shared state up", || async {
        (metric_in(&g.metrics().await, "portcullis_shared_state_up") == 1.0).then_some(())
    })
    .await
    .1
}

pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}
