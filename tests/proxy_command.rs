//! `portcullis proxy --from NAME --to ADDRESS`, end to end: the real binary in front of a real
//! upstream, reached by clients that trust only the certificate it obtained — from its own
//! development CA for a local name, from a real ACME server (Pebble) over http-01 otherwise.

mod common;

use common::pebble::Pebble;
use common::upstream::TestUpstream;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `portcullis proxy`.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    https: SocketAddr,
}

impl Proxy {
    /// Runs `portcullis proxy ARGS` with its state under `state`, on free ports unless `args`
    /// name them; waits (up to `limit`) for its ready file.
    async fn start(args: &[&str], state: &Path, env: &[(&str, &str)], limit: Duration) -> Proxy {
        init();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("proxy").args(args).arg("--state").arg(state);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
        }
        for k in GATEWAY_ENV {
            cmd.env_remove(k);
        }
        cmd.env("PORTCULLIS_ADMIN_ADDR", "127.0.0.1:0")
            .env("PORTCULLIS_READY_FILE", dir.path().join("ready.json"))
            .env_remove("PORTCULLIS_WORKER_TOKEN")
            .env_remove("PORTCULLIS_DATA_DIR")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let ready = dir.path().join("ready.json");
        let start = Instant::now();
        let log = |dir: &tempfile::TempDir| {
            std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default()
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("proxy exited ({status}):\n{}", log(&dir));
            }
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let https: SocketAddr = v["https"].as_str().unwrap().parse().unwrap();
                return Proxy { child, dir, https };
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("proxy not ready after {limit:?}:\n{}", log(&dir));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// A client that trusts only `root_pem` and reaches `name` at this proxy.
    fn client(&self, root_pem: &[u8], name: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(root_pem).unwrap())
            .resolve(name, self.https)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev_ca(state: &Path) -> PathBuf {
    state.join("proxy").join("certs").join("dev-ca.pem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_name_is_served_with_the_secure_defaults_from_one_command() {
    let up = TestUpstream::start(0).await;
    let state = tempfile::tempdir().unwrap();
    let to = format!("127.0.0.1:{}", up.port);
    let name = "app.localhost";
    let p = Proxy::start(
        &["--from", name, "--to", &to, "--rate", "5"],
        state.path(),
        &[],
        Duration::from_secs(30),
    )
    .await;
    let ca = std::fs::read(dev_ca(state.path())).unwrap();
    let c = p.client(&ca, name);
    let url = |path: &str| format!("https://{name}:{}{path}", p.https.port());

    let r = c.get(url("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", p.log());
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "ok");
    assert!(up
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.starts_with("GET /hello ")));
    // The blocked paths hold in any spelling, and nothing reaches the service for them.
    for path in [
        "/terminal",
        "/.git/config",
        "/x/../.env",
        "/TERMINAL/x",
        "//./terminal",
    ] {
        let r = c.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    assert!(!up
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.contains("terminal") || h.contains(".git")));
    // Only the name it was given: another Host finds no route.
    let other = p.client(&ca, "localhost");
    let r = other
        .get(format!("https://localhost:{}/hello", p.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The per-client limit: 5/s with bursts of 10.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(c.get(url("/burst")).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let policy = state.path().join("proxy/policies/proxy.toml");
    assert!(std::fs::read_to_string(&policy).unwrap().contains(&to));
    drop(p);

    // A restart keeps the CA the client trusts.
    let p = Proxy::start(
        &["--from", name, "--to", &to],
        state.path(),
        &[],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(std::fs::read(dev_ca(state.path())).unwrap(), ca);
    let r = p
        .client(&ca, name)
        .get(format!("https://{name}:{}/again", p.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_static_requires_the_worker_token() {
    let up = TestUpstream::start(0).await;
    let state = tempfile::tempdir().unwrap();
    let to = format!("http://127.0.0.1:{}", up.port);
    let token = "proxy-worker-token-0123456789abcdef";
    let p = Proxy::start(
        &["--from", "api.test", "--to", &to, "--auth", "static"],
        state.path(),
        &[("PORTCULLIS_WORKER_TOKEN", token)],
        Duration::from_secs(30),
    )
    .await;
    let ca = std::fs::read(dev_ca(state.path())).unwrap();
    let c = p.client(&ca, "api.test");
    let url = format!("https://api.test:{}/data", p.https.port());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
    let r = c.get(&url).bearer_auth("wrong-token").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", p.log());
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error_before_anything_is_written() {
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("proxy")
            .args(args)
            .arg("--state")
            .arg(state.path().join("s"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, message) in [
        (
            &["--from", "bad name", "--to", "127.0.0.1:1"][..],
            "not a host name",
        ),
        (
            &["--from", "a.test", "--to", "127.0.0.1"][..],
            "expected host:port",
        ),
        (
            &["--from", "a.test", "--to", "ftp://h:21"][..],
            "expected host:port",
        ),
        (
            &["--from", "a.test", "--to", "h:1", "--auth", "jwt"][..],
            "needs --jwks-url",
        ),
        (
            &["--from", "a.test", "--to", "h:1", "--auth", "magic"][..],
            "expected none, static or jwt",
        ),
        (
            &["--from", "a.test", "--to", "h:1", "--headers", "loose"][..],
            "api-strict",
        ),
        (
            &["--from", "10.1.1.1", "--to", "h:1", "--certificate", "acme"][..],
            "need a host name",
        ),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert!(
        !state.path().join("s").exists(),
        "nothing written for a refused command"
    );
}

#[test]
fn a_public_name_is_checked_in_production_before_it_serves() {
    let state = tempfile::tempdir().unwrap();
    let check = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "proxy",
                "--from",
                "api.example.com",
                "--to",
                "10.0.0.7:8080",
                "--check",
            ])
            .args(extra)
            .arg("--state")
            .arg(state.path())
            .env_remove("PORTCULLIS_MODE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check(&["--email", "ops@example.com"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("posture (mode production)"), "{out}");
    assert!(
        out.contains("from ACME (https://acme-v02.api.letsencrypt.org/directory)"),
        "{out}"
    );
    assert!(out.contains("0 FAIL"), "{out}");
    // A JWT issuer without an audience is what production refuses: the check says so.
    let (code, out) = check(&[
        "--auth",
        "jwt",
        "--jwks-url",
        "https://id.example.com/jwks.json",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL  jwt"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issues_the_certificate_for_a_public_name() {
    let up = TestUpstream::start(0).await;
    let name = "api.proxy-acme.test";
    let pebble = Pebble::start(free_port(), free_port(), 90 * 86_400);
    let state = tempfile::tempdir().unwrap();
    let to = format!("127.0.0.1:{}", up.port);
    let listen = format!("127.0.0.1:{}", pebble.tls_port);
    let http = format!("127.0.0.1:{}", pebble.http_port);
    let directory = pebble.directory();
    let ca_file = pebble.https_ca.display().to_string();
    // Ready once the certificate is served: the readiness probe completes a TLS handshake.
    let p = Proxy::start(
        &[
            "--from",
            name,
            "--to",
            &to,
            "--certificate",
            "acme",
            "--email",
            "ops@portcullis.test",
            "--acme-directory",
            &directory,
            "--acme-ca",
            &ca_file,
            "--listen",
            &listen,
            "--http",
            &http,
        ],
        state.path(),
        &[],
        Duration::from_secs(90),
    )
    .await;
    let root = pebble.issuing_root().await;
    let r = p
        .client(root.as_bytes(), name)
        .get(format!("https://{name}:{}/issued", p.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", p.log());
    assert!(p.log().contains("production"), "{}", p.log());
    assert!(
        !dev_ca(state.path()).exists(),
        "no development CA for an ACME name"
    );
}
