//! `portcullis policy diff` and `portcullis policy test` on fixture policies (golden outputs),
//! the dry run checked against a live gateway answering the same requests, and shadow rules.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const ROOM_KEY: &str = "policy-tools-room-key-of-forty-bytes-0000";
const WORKER: &str = "policy-tools-worker-token-0123456789abcdef";

fn portcullis(args: &[&str]) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .args(["--config", "/dev/null"])
        .env("DIFF_ROOM_KEY", ROOM_KEY)
        .env("PORTCULLIS_WORKER_TOKEN", WORKER)
        .env_remove("PORTCULLIS_MODE")
        .env_remove("ENV")
        .env_remove("AUTH_PROVIDER")
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

const OLD: &str = "tests/fixtures/policy-diff/old";
const NEW: &str = "tests/fixtures/policy-diff/new";

#[test]
fn diff_prints_effective_changes_per_route() {
    let (out, err, ok) = portcullis(&["policy", "diff", OLD, NEW]);
    assert!(ok, "{err}");
    golden(Path::new("tests/fixtures/policy-diff/diff.out"), &out);
    // Reordered routes and upstreams, and defaults written out, are not changes.
    assert!(!out.contains("route rooms"), "{out}");
    let (same, _, ok) = portcullis(&["policy", "diff", NEW, NEW]);
    assert!(ok);
    assert_eq!(
        same,
        "0 change(s): 0 open access, 0 close access, 0 other\n"
    );
}

#[test]
fn diff_refuses_a_broken_side_with_its_errors() {
    let (_, err, ok) = portcullis(&["policy", "diff", OLD, "tests/fixtures/policy/bad-folder"]);
    assert!(!ok);
    assert!(err.contains("does not compile"), "{err}");
}

fn requests_file(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string("tests/fixtures/policy-test/requests.toml").unwrap();
    let p = dir.join("requests.toml");
    std::fs::write(&p, text.edit("WORKER_TOKEN", WORKER)).unwrap();
    p
}

#[test]
fn policy_test_prints_each_decision_and_checks_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let req = requests_file(dir.path());
    let req = req.to_str().unwrap();
    let (out, err, ok) = portcullis(&["policy", "test", "--policy", NEW, "--requests", req]);
    assert!(ok, "{out}{err}");
    golden(Path::new("tests/fixtures/policy-test/new.out"), &out);

    // The same requests against the old policy: the expectations written for the new one
    // no longer hold, and the run says which.
    let (out, _, ok) = portcullis(&["policy", "test", "--policy", OLD, "--requests", req]);
    assert!(!ok, "mismatches exit 1");
    golden(Path::new("tests/fixtures/policy-test/old.out"), &out);
    assert!(out.contains("EXPECTED"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[request]]\npath = \"/\"\nmethod = 7\n").unwrap();
    let (_, err, ok) = portcullis(&[
        "policy",
        "test",
        "--policy",
        NEW,
        "--requests",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("bad.toml: line 3:"), "{err}");
}

/// Each dry-run decision matches what the running gateway answers for the same request.
#[tokio::test]
async fn the_dry_run_agrees_with_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let req = requests_file(dir.path());
    let (out, err, _) = portcullis(&[
        "policy",
        "test",
        "--policy",
        NEW,
        "--requests",
        req.to_str().unwrap(),
    ]);
    assert!(err.is_empty(), "{err}");
    let mut opts =
        Options::with_policy(std::fs::read_to_string(Path::new(NEW).join("policy.toml")).unwrap());
    opts.env = vec![
        ("DIFF_ROOM_KEY".into(), ROOM_KEY.into()),
        ("PORTCULLIS_WORKER_TOKEN".into(), WORKER.into()),
    ];
    let g = Gateway::start(opts).await;
    let compared = compare_with_gateway(&g, &req, &out).await;
    assert!(compared >= 12, "{compared}");
}

/// The dry run keeps the state the gateway keeps across requests: failed authentications that
/// lock a client out, and refused connections that open an upstream's circuits. The same list
/// gets the same answers from both, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_agrees_with_the_gateway_on_lockouts_and_circuits() {
    let ((dead1, _held1), (dead2, _held2)) = (dead_port(), dead_port());
    let policy = format!(
        r#"
[auth]
default_provider = "static"

[auth.backoff]
max_failures = 2
lockout_seconds = 60

[[upstreams]]
name = "worker"
kind = "worker"

[[upstreams]]
name = "gone"
kind = "external"
addresses = ["127.0.0.1:{dead1}", "127.0.0.1:{dead2}"]
circuit_failures = 2
circuit_open_ms = 60000
health_check_interval_seconds = 0

[[routes]]
name = "api"
path_prefix = "/v1/"
upstream = "worker"

[[routes]]
name = "legacy"
path_prefix = "/legacy/"
upstream = "gone"
public = true
"#
    );
    let requests = format!(
        r#"
[[request]]
name = "worker token"
path = "/v1/models"
headers = {{ authorization = "Bearer {WORKER}" }}
expect = "allow"

[[request]]
name = "wrong token, once"
path = "/v1/models"
headers = {{ authorization = "Bearer not-the-worker-token-at-all-0000" }}
expect = 401

[[request]]
name = "wrong token, twice: locked out"
path = "/v1/models"
headers = {{ authorization = "Bearer not-the-worker-token-at-all-0000" }}
expect = 401

[[request]]
name = "the right token while locked out"
path = "/v1/models"
headers = {{ authorization = "Bearer {WORKER}" }}
expect = 429

[[request]]
name = "both addresses refuse"
path = "/legacy/a"
upstream = "refuses"
expect = 502

[[request]]
name = "both refuse again: both circuits open"
path = "/legacy/b"
upstream = "refuses"
expect = 502

[[request]]
name = "every circuit open"
path = "/legacy/c"
upstream = "refuses"
expect = 503
"#
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), &policy).unwrap();
    // Not in the policy folder, whose every `.toml` file is policy.
    let files = tempfile::tempdir().unwrap();
    let req = files.path().join("requests.toml");
    std::fs::write(&req, requests).unwrap();
    let (out, err, ok) = portcullis(&[
        "policy",
        "test",
        "--policy",
        dir.path().to_str().unwrap(),
        "--requests",
        req.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("DENY 429 too_many_auth_failures"), "{out}");
    assert!(out.contains("DENY 503 upstream_circuit_open"), "{out}");
    let mut opts = Options::with_policy(policy);
    opts.env = vec![("PORTCULLIS_WORKER_TOKEN".into(), WORKER.into())];
    let g = Gateway::start(opts).await;
    assert_eq!(compare_with_gateway(&g, &req, &out).await, 7);
}

/// Sends each request of the file `req` to the gateway `g` and checks its answer against the
/// dry run's decision for it (in `out`); answers how many were compared (a request from another
/// client address than loopback cannot be sent live).
async fn compare_with_gateway(g: &Gateway, req: &Path, out: &str) -> usize {
    let file: toml::Value = toml::from_str(&std::fs::read_to_string(req).unwrap()).unwrap();
    let requests = file["request"].as_array().unwrap();
    let decisions: Vec<&str> = out.lines().filter(|l| l.contains("]: ")).collect();
    assert_eq!(decisions.len(), requests.len());
    let mut compared = 0;
    for (r, decision) in requests.iter().zip(decisions) {
        if r.get("client_ip").is_some() {
            continue; // The live peer is always loopback.
        }
        let method = r.get("method").and_then(|m| m.as_str()).unwrap_or("GET");
        let path = r["path"].as_str().unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(h) = r.get("headers").and_then(|h| h.as_table()) {
            for (k, v) in h {
                head.push_str(&format!("{k}: {}\r\n", v.as_str().unwrap()));
            }
        }
        if r.get("websocket").and_then(|w| w.as_bool()) == Some(true) {
            head.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        } else {
            head.push_str("Connection: close\r\n\r\n");
        }
        let resp = g.raw(head.as_bytes()).await;
        let status: u16 = resp[9..12].parse().unwrap();
        let verdict = decision.split("]: ").nth(1).unwrap();
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        if let Some(rest) = verdict.strip_prefix("DENY ") {
            let mut w = rest.split_whitespace();
            let (want, code) = (w.next().unwrap(), w.next().unwrap());
            assert_eq!(status.to_string(), want, "{decision}\n{resp}");
            if status != 401 {
                assert!(body.contains(&format!("\"{code}\"")), "{decision}\n{resp}");
            }
        } else {
            // Forwarded: the upstream's own answer (the worker knows no /reports or /exports).
            assert!(
                status == 200 || status == 101 || body.contains("\"not_found\""),
                "{decision}\n{resp}"
            );
        }
        compared += 1;
    }
    compared
}

#[tokio::test]
async fn a_shadow_limit_logs_and_counts_without_refusing() {
    let policy = r#"
[auth]
default_provider = "static"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true

[[limits]]
name = "trial"
key = ["ip"]
requests = 1
per_seconds = 60
shadow = true
"#;
    let g = Gateway::start(Options::with_policy(policy)).await;
    let client = g.client(true);
    for _ in 0..4 {
        let r = client.get(g.url("/v1/models")).send().await.unwrap();
        assert_eq!(r.status(), 200, "a shadow limit never refuses");
    }
    let m = g.metrics().await;
    assert!(m.contains("portcullis_shadow_denials_total 3"), "{m}");
    eventually(Duration::from_secs(5), "shadow log line", || async {
        g.log()
            .contains("shadow rule: rate limit would refuse this request")
            .then_some(())
    })
    .await;
}
