//! `portcullis posture`: golden checklists for a secure and an insecure production setup; `serve`
//! in production refuses the insecure one listing every FAIL; a hot reload that would FAIL is
//! refused and the running policy kept.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const JWT_SECRET: &str = "posture-test-secret-of-forty-bytes-000000";
const WORKER_TOKEN: &str = "posture-test-worker-token-0123456789abcdef";

/// A production setup in a temp folder: the fixture's policies, certificates and a config.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(fixture: &str, config_extra: &str, dev_certs: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("policies")).unwrap();
        std::fs::create_dir_all(root.join("certs")).unwrap();
        let src = Path::new("tests/fixtures/posture").join(fixture);
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, root.join("policies").join(p.file_name().unwrap())).unwrap();
        }
        if dev_certs {
            portcullis::tls::dev::generate_dev_certs(&root.join("certs")).unwrap();
        } else {
            let ca = TestCa::new("Posture Test CA");
            let (c, k) = ca.leaf(&["localhost", "127.0.0.1"]);
            write_pair(&root.join("certs"), "localhost", &c, &k);
        }
        let https = free_port();
        std::fs::write(
            root.join("portcullis.toml"),
            format!(
                "mode = \"production\"\n{config_extra}\n[listeners]\nhttps = \"127.0.0.1:{https}\"\nhttp = \"off\"\n\n[tls]\ncert_dir = \"certs\"\n"
            ),
        )
        .unwrap();
        Setup { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(args)
            .arg("--config")
            .arg(self.root().join("portcullis.toml"))
            .current_dir(self.root())
            .env("POSTURE_JWT_SECRET", JWT_SECRET)
            .env("PORTCULLIS_DATA_DIR", self.root().join("data"))
            .env("PORTCULLIS_TOKEN_FILE", self.root().join("token.yaml"));
        for k in GATEWAY_ENV.iter().chain(&[
            "PORTCULLIS_LOG_LEVEL",
            "LOG_LEVEL",
            "PORTCULLIS_WORKER_TOKEN",
            "WORKER_AUTH_TOKEN",
            "AUTH_PROVIDER",
        ]) {
            cmd.env_remove(k);
        }
        cmd
    }

    /// `posture` output with the temp folder and the random port taken out.
    fn posture(&self, cmd: &mut Command) -> (String, bool) {
        let out = cmd.output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let root = self.root().display().to_string();
        let text = text.replace(&root, "$DIR");
        let text = regex_free_port(&text);
        (text, out.status.success())
    }
}

/// Replaces `127.0.0.1:<port>` of the HTTPS listener with `127.0.0.1:PORT`.
fn regex_free_port(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("HTTPS 127.0.0.1:") {
        let start = i + "HTTPS 127.0.0.1:".len();
        out.push_str(&rest[..start]);
        out.push_str("PORT");
        rest = rest[start..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[test]
fn a_secure_production_setup_passes() {
    let s = Setup::new("secure", "", false);
    let mut cmd = s.command(&["posture"]);
    cmd.env("PORTCULLIS_WORKER_TOKEN", WORKER_TOKEN);
    let (out, ok) = s.posture(&mut cmd);
    golden(Path::new("tests/fixtures/posture/secure.out"), &out);
    assert!(ok, "{out}");
    assert!(out.contains("0 FAIL, 0 WARN"), "{out}");
}

fn insecure() -> Setup {
    let s = Setup::new(
        "insecure",
        "[log]\nlevel = \"debug\"\n\n[auth]\ntoken_file = \"token.yaml\"\n\n[network]\nkeepalive_timeout_seconds = 0\n",
        true,
    );
    // A short token in a token file others can read.
    let token = s.root().join("token.yaml");
    std::fs::write(&token, "worker_auth_token: \"short-token-1234\"\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    s
}

#[test]
fn an_insecure_production_setup_fails_with_remedies() {
    let s = insecure();
    let mut cmd = s.command(&["posture"]);
    cmd.env("PORTCULLIS_ADMIN_ADDR", "203.0.113.5:9901");
    let (out, ok) = s.posture(&mut cmd);
    golden(Path::new("tests/fixtures/posture/insecure.out"), &out);
    assert!(!ok, "posture exits 1 on a FAIL");
    for id in [
        "hsts",
        "terminal",
        "jwt",
        "secrets",
        "worker-token",
        "admin-listener",
        "logging",
        "keepalive",
        "certificates",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains(&format!(" {id} "))),
            "{id} should FAIL:\n{out}"
        );
    }
}

#[test]
fn production_serve_refuses_an_insecure_setup_listing_every_fail() {
    let s = insecure();
    let mut posture = s.command(&["posture"]);
    posture.env("PORTCULLIS_ADMIN_ADDR", "203.0.113.5:9901");
    let (report, _) = s.posture(&mut posture);
    let fails: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(fails.len() >= 8, "{report}");

    let mut serve = s.command(&["serve"]);
    serve.env("PORTCULLIS_ADMIN_ADDR", "203.0.113.5:9901");
    let out = serve.output().unwrap();
    assert!(!out.status.success(), "production must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "production posture check failed ({} FAIL)",
            fails.len()
        )),
        "{stderr}"
    );
    for f in fails {
        // "FAIL  hsts   finding" in the report is "FAIL hsts: finding — remedy" at start.
        let mut words = f.split_whitespace();
        let (_, id) = (words.next(), words.next().unwrap());
        let finding: Vec<&str> = words.collect();
        let line = format!("FAIL {id}: {}", finding.join(" "));
        let line = line.replace("$DIR", &s.root().display().to_string());
        assert!(stderr.contains(&line), "missing {line:?} in:\n{stderr}");
    }
}

/// `[tls.acme] shared = true` keeps the ACME account key and the certificates' private keys in
/// the policy's store. Plain `redis://` off this host, or a store there without a password, is a
/// FAIL in production (where limits and lockouts in such a store only warn), and `posture` exits
/// 1 on it, as `serve` then refuses to start; a store on this host, or TLS with a password, passes.
#[test]
fn shared_acme_keys_never_go_to_an_exposed_store_in_production() {
    let acme = "[tls.acme]\naccept_terms = true\nnames = [\"api.example.com\"]\nshared = true\n";
    for (store, want) in [
        ("url = \"redis://10.0.0.5:6379\"", "FAIL"),
        ("url = \"rediss://10.0.0.5:6380\"", "FAIL"),
        (
            "url = \"rediss://10.0.0.5:6380\"\npassword = \"env:POSTURE_REDIS_PASSWORD\"",
            "PASS",
        ),
        ("url = \"redis://127.0.0.1:6379\"", "PASS"),
    ] {
        let s = Setup::new("secure", acme, false);
        // http-01 answers on the plain-HTTP listener.
        let config = s.root().join("portcullis.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let http = format!("http = \"127.0.0.1:{}\"", free_port());
        std::fs::write(&config, text.replace("http = \"off\"", &http)).unwrap();
        let policy = s.root().join("policies/policy.toml");
        let text = std::fs::read_to_string(&policy).unwrap();
        std::fs::write(&policy, format!("{text}\n[shared_state]\n{store}\n")).unwrap();
        let mut cmd = s.command(&["posture"]);
        cmd.env("PORTCULLIS_WORKER_TOKEN", WORKER_TOKEN)
            .env("POSTURE_REDIS_PASSWORD", "posture-redis-password");
        let (out, ok) = s.posture(&mut cmd);
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("acme-shared"))
            .unwrap_or_else(|| panic!("no acme-shared item for {store}:\n{out}"));
        assert!(line.starts_with(want), "{store}:\n{out}");
        if want == "FAIL" {
            assert!(line.contains("private keys"), "{line}");
            assert!(!ok, "posture exits 1 on the FAIL:\n{out}");
        }
    }
}

fn production_policy(hsts: bool) -> String {
    let text = std::fs::read_to_string("tests/fixtures/posture/secure/policy.toml").unwrap();
    if hsts {
        text
    } else {
        text.edit("[hsts]\nmax_age = 31536000", "[hsts]\nenabled = false")
    }
}

#[tokio::test]
async fn a_reload_that_would_fail_posture_is_refused_in_production() {
    let mut opts = Options::with_policy(production_policy(true));
    opts.env = vec![
        ("PORTCULLIS_MODE".into(), "production".into()),
        ("POSTURE_JWT_SECRET".into(), JWT_SECRET.into()),
        ("PORTCULLIS_WORKER_TOKEN".into(), WORKER_TOKEN.into()),
    ];
    let g = Gateway::start(opts).await;
    let client = g.client(true);
    let hsts = |r: &reqwest::Response| r.headers().contains_key("strict-transport-security");
    let r = client.get(g.url("/health")).send().await.unwrap();
    assert!(hsts(&r));

    rename_over(&g.policy_dir().join("p.toml"), &production_policy(false));
    eventually(Duration::from_secs(10), "reload refused", || async {
        g.log()
            .contains("posture hsts: FAIL: Strict-Transport-Security is off")
            .then_some(())
    })
    .await;
    for _ in 0..3 {
        let r = client.get(g.url("/health")).send().await.unwrap();
        assert!(hsts(&r), "the running policy (with HSTS) is kept");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", g.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_policy_reloads_total{result=\"error\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("reload"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A secret read through `file:` (a Kubernetes Secret mount outside the policy folder) is
/// re-read when the file changes: tokens signed with the new key pass, the old key's fail.
#[tokio::test]
async fn a_changed_secret_file_reloads_the_policy() {
    use common::auth::{hs256, now};
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("jwt-hs256");
    let (old_key, new_key) = (
        "the-first-hmac-secret-of-at-least-32-bytes",
        "the-second-hmac-secret-of-at-least-32-bytes",
    );
    std::fs::write(&key_file, format!("{old_key}\n")).unwrap();
    let policy = format!(
        r#"
[auth]
default_provider = "jwt"

[[auth.issuers]]
name = "internal"
issuer = "internal"
audiences = ["api"]
algorithms = ["HS256"]
secret = "file:{}"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "whoami"
path_prefix = "/whoami"
upstream = "worker"
"#,
        key_file.display()
    );
    let g = Gateway::start(Options::with_policy(policy)).await;
    let claims =
        serde_json::json!({"iss": "internal", "aud": "api", "sub": "ana", "exp": now() + 600});
    let (old, new) = (
        hs256(old_key.as_bytes(), None, &claims),
        hs256(new_key.as_bytes(), None, &claims),
    );
    let client = g.client(true);
    let status = |t: String| {
        let (client, url) = (client.clone(), g.url("/whoami"));
        async move {
            client
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(old.clone()).await, 200);
    assert_eq!(status(new.clone()).await, 401);
    let generation = g.generation().await;
    std::fs::write(&key_file, format!("{new_key}\n")).unwrap();
    eventually(
        Duration::from_secs(10),
        "reloaded on the secret change",
        || async { (g.generation().await > generation).then_some(()) },
    )
    .await;
    assert_eq!(status(new).await, 200);
    assert_eq!(status(old).await, 401);
    assert!(!g.log().contains(new_key), "secrets are never logged");
}

/// The development providers admit anyone: on a listener that is not loopback the gateway
/// refuses them at start (naming the setting to change), `check` and `posture` say so, and a
/// reload that would serve them there is refused with the running policy kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_providers_are_refused_on_a_listener_that_is_not_loopback() {
    // The container's old defaults: development mode, the default policy (`local`), all
    // interfaces.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("policies")).unwrap();
    std::fs::create_dir_all(root.join("certs")).unwrap();
    std::fs::write(root.join("policies/default.toml"), DEFAULT_POLICY).unwrap();
    let ca = TestCa::new("Dev Listener Test CA");
    let (c, k) = ca.leaf(&["localhost"]);
    write_pair(&root.join("certs"), "localhost", &c, &k);
    std::fs::write(
        root.join("portcullis.toml"),
        format!(
            "mode = \"development\"\n\n[listeners]\nhttps = \"127.0.0.1:{}\"\nhttp = \"off\"\nadmin = \"127.0.0.1:{}\"\n\n[tls]\ncert_dir = \"certs\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let public_addr = format!("0.0.0.0:{}", free_port());
    let command = |sub: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg(sub)
            .arg("--config")
            .arg(root.join("portcullis.toml"))
            .current_dir(root)
            .env("PORTCULLIS_DATA_DIR", root.join("data"))
            .env("PORTCULLIS_TOKEN_FILE", root.join("token.yaml"));
        for k in GATEWAY_ENV.iter().chain(&[
            "PORTCULLIS_WORKER_TOKEN",
            "WORKER_AUTH_TOKEN",
            "AUTH_PROVIDER",
        ]) {
            cmd.env_remove(k);
        }
        cmd.env("PORTCULLIS_HTTPS_ADDR", &public_addr);
        cmd
    };
    let mut serve = command("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = serve.kill();
        let _ = serve.wait();
        panic!("the gateway serves the local provider on {public_addr}");
    }
    assert!(!status.unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "authentication provider \"local\" admits anyone and is served only on a loopback listener, but the HTTPS listener is {public_addr}"
        )) && stderr.contains("PORTCULLIS_HTTPS_ADDR")
            && stderr.contains("AUTH_PROVIDER=static"),
        "{stderr}"
    );

    let check = command("check").output().unwrap();
    assert!(!check.status.success());
    let out = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        out.contains("is served only on a loopback listener"),
        "{out}"
    );

    let posture = command("posture").output().unwrap();
    let out = String::from_utf8_lossy(&posture.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("dev-providers"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("FAIL")
            && ["models", "whoami", "admin"]
                .iter()
                .all(|r| line.contains(r)),
        "{out}"
    );
    // With AUTH_PROVIDER=static the same setup starts, and `posture` passes the item.
    let posture = command("posture")
        .env("AUTH_PROVIDER", "static")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&posture.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("PASS") && l.contains("dev-providers")),
        "{out}"
    );

    // Started that way, a reload that would serve `local` there is refused.
    let g = Gateway::start(Options {
        env: vec![
            ("PORTCULLIS_HTTPS_ADDR".into(), "0.0.0.0:0".into()),
            ("AUTH_PROVIDER".into(), "static".into()),
            ("PORTCULLIS_WORKER_TOKEN".into(), WORKER_TOKEN.into()),
        ],
        ..Options::default()
    })
    .await;
    for http1 in [true, false] {
        let r = g.client(http1).get(g.url("/whoami")).send().await.unwrap();
        assert_eq!(r.status(), 401, "http1={http1}");
    }
    let generation = g.generation().await;
    rename_over(
        &g.policy_dir().join("default.toml"),
        &DEFAULT_POLICY.edit(
            "path_prefix = \"/whoami\"\n",
            "path_prefix = \"/whoami\"\nauth = \"local\"\n",
        ),
    );
    let (error, _) = eventually(Duration::from_secs(10), "reload refused", || async {
        g.admin_json("/status").await["policy"]["last_reload_error"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert!(
        error.contains("is served only on a loopback listener"),
        "{error}"
    );
    assert_eq!(g.generation().await, generation);
    for http1 in [true, false] {
        let r = g.client(http1).get(g.url("/whoami")).send().await.unwrap();
        assert_eq!(r.status(), 401, "http1={http1}: the running policy is kept");
        let r = g
            .client(http1)
            .get(g.url("/whoami"))
            .bearer_auth(WORKER_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "http1={http1}");
    }
}
