//! OpenTelemetry over OTLP/gRPC, against a real gRPC receiver: grpcio serving the collector's
//! own protocol definitions (opentelemetry-proto), in `tests/fixtures/otlp_grpc_receiver.py`.
//! Plain and TLS (a private CA from `OTEL_EXPORTER_OTLP_CERTIFICATE`, a client certificate for
//! a receiver that requires one), headers from `OTEL_EXPORTER_OTLP_HEADERS`; a collector that
//! hangs costs requests nothing; bad TLS settings stop the start with a clear error.
//!
//! The receiver's Python packages: `PORTCULLIS_TEST_OTLP_PYTHON` names an interpreter that has
//! them, or the test installs them from PyPI into a virtual environment under `target/`.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::upstream::TestUpstream;
use common::*;

/// The receiver's packages, pinned.
const PACKAGES: &[&str] = &[
    "grpcio==1.85.4",
    "opentelemetry-proto==1.45.2",
    "protobuf==7.36.2",
];

/// An interpreter that can import grpc and the OTLP protos, made once per test binary.
fn python() -> PathBuf {
    static PYTHON: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut slot = PYTHON.lock().unwrap();
    if let Some(p) = &*slot {
        return p.clone();
    }
    let p = match std::env::var_os("PORTCULLIS_TEST_OTLP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => venv(),
    };
    let ok = Command::new(&p)
        .args([
            "-c",
            "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import grpc and opentelemetry.proto (pip install {})",
        p.display(),
        PACKAGES.join(" ")
    );
    *slot = Some(p.clone());
    p
}

/// A virtual environment under the target folder holding exactly `PACKAGES`.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otlp-venv");
    let python = dir.join("bin/python");
    let marker = dir.join(".installed");
    let want = PACKAGES.join(" ");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("python3 runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}\n(python3 with venv and pip is needed; apt-get install python3-venv)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(PACKAGES));
    std::fs::write(&marker, want).unwrap();
    python
}

/// The receiver, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(args: &[&str]) -> Receiver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/otlp_grpc_receiver.py"
        );
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the receiver's first line").unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let port = v["listening"].as_u64().unwrap_or_else(|| panic!("{first}")) as u16;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let s = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                s.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver { child, port, spans }
    }

    async fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(Duration::from_secs(20), "spans received", || async {
            let s = self.spans.lock().unwrap().clone();
            (s.len() >= n).then_some(s)
        })
        .await
        .0
    }
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

fn policy(upstream: u16) -> String {
    format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{upstream}"]

[[routes]]
name = "orders"
path_prefix = "/orders/"
upstream = "api"
public = true
"#
    )
}

/// Sends a traced request and a blocked one, and checks what the receiver got: the server span
/// continues the client's trace, the upstream span is its child and is what the upstream saw,
/// the refusal has its reason, and every span names the service.
async fn traces_arrive(g: &Gateway, up: &TestUpstream, rx: &Receiver) -> Vec<serde_json::Value> {
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_parent = "00f067aa0ba902b7";
    let c = g.client(true);
    let r = c
        .get(g.url("/orders/42"))
        .header("traceparent", format!("00-{trace_id}-{client_parent}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(g.url("/terminal")).send().await.unwrap().status(),
        403
    );
    let head = up.seen.lock().unwrap()[0].clone();
    let tp = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent upstream: {head}"))
        .to_string();
    let upstream_span_id = tp.split('-').nth(2).unwrap().to_string();

    let all = rx.wait_for(3).await;
    let server = all
        .iter()
        .find(|s| attr(s, "http.route") == Some("orders"))
        .unwrap_or_else(|| panic!("no server span for the route: {all:#?}"));
    assert_eq!(server["traceId"], trace_id);
    assert_eq!(server["parentSpanId"], client_parent);
    assert_eq!(server["kind"], 2, "SERVER");
    assert_eq!(attr(server, "portcullis.decision"), Some("allow"));
    assert_eq!(attr(server, "url.path"), Some("/orders/42"));
    assert_eq!(attr(server, "http.request.method"), Some("GET"));
    let upstream = all
        .iter()
        .find(|s| s["kind"] == 3)
        .unwrap_or_else(|| panic!("no client span: {all:#?}"));
    assert_eq!(upstream["traceId"], trace_id);
    assert_eq!(upstream["parentSpanId"], server["spanId"]);
    assert_eq!(upstream["spanId"], upstream_span_id.as_str());
    assert_eq!(attr(upstream, "portcullis.upstream"), Some("api"));
    let denied = all
        .iter()
        .find(|s| attr(s, "portcullis.reason") == Some("path_blocked"))
        .unwrap_or_else(|| panic!("no span for the blocked request: {all:#?}"));
    assert_eq!(attr(denied, "portcullis.decision"), Some("deny"));
    assert_ne!(denied["traceId"], trace_id, "a trace of its own");
    assert!(all.iter().all(|s| s["_service"] == "portcullis-grpc"));
    all
}

fn otel_env(endpoint: String, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
        ("OTEL_SERVICE_NAME".into(), "portcullis-grpc".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_receiver_with_their_links_attributes_and_headers() {
    let rx = Receiver::start(&[]);
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(Options {
        env: otel_env(
            format!("http://127.0.0.1:{}", rx.port),
            &[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20collector-token,x-tenant=edge",
            )],
        ),
        ..Options::with_policy(policy(up.port))
    })
    .await;
    let all = traces_arrive(&g, &up, &rx).await;
    let md = &all[0]["_metadata"];
    assert_eq!(md["authorization"], "Bearer collector-token", "{md}");
    assert_eq!(md["x-tenant"], "edge", "{md}");
    let log = g.log();
    assert!(
        log.contains("grpc") && log.contains("OpenTelemetry traces are exported"),
        "{log}"
    );
    assert!(!log.contains("collector-token"), "headers are not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_receiver_that_requires_a_client_certificate_gets_the_spans() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("OTLP test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let (client_cert, client_key, _) = ca.client_leaf("portcullis");
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let (cert, key, ca_pem) = (
        write("server.pem", &cert),
        write("server.key", &key),
        write("ca.pem", &ca.pem),
    );
    let (client_cert, client_key) = (
        write("client.pem", &client_cert),
        write("client.key", &client_key),
    );
    let rx = Receiver::start(&["--tls", &cert, &key, "--client-ca", &ca_pem]);
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(Options {
        env: otel_env(
            format!("https://localhost:{}", rx.port),
            &[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_pem),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &client_cert),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &client_key),
            ],
        ),
        ..Options::with_policy(policy(up.port))
    })
    .await;
    traces_arrive(&g, &up, &rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_costs_requests_nothing() {
    // Accepts connections and never answers: every export waits out its timeout.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in hang.incoming().map_while(Result::ok) {
            h.lock().unwrap().push(s);
        }
    });
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(Options {
        env: otel_env(
            format!("http://127.0.0.1:{port}"),
            &[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16"),
            ],
        ),
        ..Options::with_policy(policy(up.port))
    })
    .await;
    let c = g.client(true);
    // Far more spans than the queue holds, while the first export hangs: each request is
    // answered as it would be with no tracing (the batch queue drops what does not fit).
    for i in 0..300 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.get(g.url(&format!("/orders/{i}"))).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} waited on the collector"))
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        !held.lock().unwrap().is_empty(),
        "the exporter did connect to the hanging collector"
    );
    // /metrics and /ready answer too.
    assert_eq!(
        reqwest::get(format!("http://{}/ready", g.admin))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// `serve` with `env`, expected to refuse to start: its stderr and stdout.
async fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORTCULLIS_HTTPS_ADDR", "127.0.0.1:0")
            .env("PORTCULLIS_ADMIN_ADDR", "127.0.0.1:0")
            .env("PORTCULLIS_HTTP_ADDR", "off")
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .expect("the gateway exits")
    .unwrap();
    assert!(!out.status.success(), "started with {env:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_settings_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let missing = missing.to_str().unwrap();
    let err = refused_start(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4317"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing),
    ])
    .await;
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains(missing),
        "{err}"
    );

    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let err = refused_start(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4317"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", not_pem.to_str().unwrap()),
    ])
    .await;
    assert!(err.contains("holds no PEM certificate"), "{err}");

    let err = refused_start(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", not_pem.to_str().unwrap()),
    ])
    .await;
    assert!(err.contains("go together"), "{err}");

    let err = refused_start(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc+json")]).await;
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("grpc+json"),
        "{err}"
    );
}
