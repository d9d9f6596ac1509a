//! Blocked paths stay blocked in every spelling, over real sockets: the bypass corpus and random
//! encodings are sent raw (client libraries would normalise them) to a gateway whose catch-all
//! route forwards everything else to a recording upstream — which must receive none of them.
//! The path the upstream receives is the path that was matched.

mod common;

use common::upstream::TestUpstream;
use common::*;
use portcullis::policy::paths::{bypass_corpus, encode_variant};
use proptest::strategy::{Strategy, ValueTree};
use std::time::Duration;

const PREFIXES: [&str; 6] = [
    "/terminal",
    "/.git",
    "/.env",
    "/debug/pprof",
    "/actuator",
    "/server-status",
];

fn policy(port: u16, extra: &str) -> Options {
    let p = format!(
        r#"
[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{port}"]

[[routes]]
name = "v1"
path_prefix = "/v1/"
upstream = "api"
public = true

[[routes]]
name = "all"
path_prefix = "/"
upstream = "api"
public = true

[blocked]
paths = ["/.git", "/.env", "/debug/pprof", "/actuator", "/server-status"]
{extra}
"#
    );
    Options::with_policy(p)
}

/// The request line's target of every head the upstream received.
fn targets(up: &TestUpstream) -> Vec<String> {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|h| h.split(' ').nth(1).map(str::to_string))
        .collect()
}

async fn status_of(g: &Gateway, target: &str) -> u16 {
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let resp = g.raw(req.as_bytes()).await;
    // A request line the HTTP parser rejects may be answered 400 or just closed: either way
    // nothing is forwarded, which the upstream side checks.
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bypass_spelling_is_refused_and_the_upstream_receives_nothing() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;

    // The catch-all really forwards: the test can fail.
    assert_eq!(status_of(&g, "/terminals").await, 200);
    assert_eq!(targets(&up), vec!["/terminals"]);
    up.seen.lock().unwrap().clear();

    let mut sent = 0;
    for prefix in PREFIXES {
        let corpus = bypass_corpus(prefix, true);
        assert!(corpus.len() >= 40, "{prefix}: {}", corpus.len());
        for variant in corpus {
            let status = status_of(&g, &variant).await;
            assert!(
                matches!(status, 400 | 403 | 0),
                "{variant:?} answered {status}"
            );
            sent += 1;
        }
    }
    // Every variant in its own connection, all answered before we look.
    assert!(sent >= 240);
    assert_eq!(targets(&up), Vec::<String>::new(), "forwarded upstream");
    // Named cases from the corpus, with their exact answers.
    for (target, status, code) in [
        ("/%74erminal", 403, "path_blocked"),
        ("//terminal", 403, "path_blocked"),
        ("/./terminal", 403, "path_blocked"),
        ("/x/../terminal", 403, "path_blocked"),
        ("/TERMINAL", 403, "path_blocked"),
        ("/terminal%2f", 400, "path_encoded_separator"),
        ("/%2e%2e/terminal", 400, "path_encoded_dot"),
        ("/%2574erminal", 400, "path_double_encoding"),
        ("/terminal;a", 400, "path_parameter_on_blocked"),
        ("/x/..;/terminal", 400, "path_parameter_on_blocked"),
        ("/%c0%ae%c0%ae/terminal", 400, "path_invalid_utf8"),
        ("/terminal%00", 400, "path_control_byte"),
        ("https://localhost/terminal", 403, "path_blocked"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let resp = g.raw(req.as_bytes()).await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{target}: {resp}"
        );
        assert!(
            resp.contains(&format!("\"error\":\"{code}\"")),
            "{target}: {resp}"
        );
    }
    // Refused by the HTTP layer itself or by the gateway, never forwarded.
    for target in [
        "\\terminal",
        "/x\\..\\terminal",
        "https://evil.example/terminal",
        "https://evil.example/v1/models",
        "*",
        "localhost:443",
    ] {
        assert!(matches!(status_of(&g, target).await, 400 | 0), "{target}");
    }
    assert_eq!(targets(&up), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_encodings_of_blocked_paths_never_reach_the_upstream() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (
        0usize..PREFIXES.len(),
        proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
    );
    for _ in 0..300 {
        let (which, choices) = strategy.new_tree(&mut runner).unwrap().current();
        let variant = encode_variant(PREFIXES[which], &choices, true);
        let status = status_of(&g, &variant).await;
        assert!(
            matches!(status, 400 | 403 | 0),
            "{variant:?} answered {status}"
        );
    }
    assert_eq!(targets(&up), Vec::<String>::new(), "forwarded upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_path_that_was_matched() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    for (sent, forwarded, route) in [
        ("/v1/./models//x", "/v1/models/x", "v1"),
        ("/x/../v1/models", "/v1/models", "v1"),
        ("/%76%31/models?q=%2F", "/v1/models?q=%2F", "v1"),
        ("/v2/../../v1/a%3bb", "/v1/a%3Bb", "v1"),
        ("/V1/models", "/V1/models", "all"),
        ("/v1;x/models", "/v1;x/models", "all"),
    ] {
        up.seen.lock().unwrap().clear();
        assert_eq!(status_of(&g, sent).await, 200, "{sent}");
        let heads = up.seen.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "{sent}: {heads:?}");
        let target = heads[0].split(' ').nth(1).unwrap();
        assert_eq!(target, forwarded, "{sent}");
        assert!(
            heads[0].contains(&format!("x-portcullis-route: {route}")),
            "{sent}: {}",
            heads[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_opens_a_blocked_path_for_its_route_until_it_expires() {
    let up = TestUpstream::start(0).await;
    // Far enough ahead that the gateway has started (on a loaded machine too) before it expires.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let soon = soon
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let extra = format!(
        "[[blocked.exceptions]]\npath = \"/actuator/health\"\nroute = \"all\"\nreason = \"OPS-7: load balancer probe\"\nexpires_at = \"{soon}\"\n"
    );
    let g = Gateway::start(policy(up.port, &extra)).await;
    assert_eq!(status_of(&g, "/actuator/health").await, 200);
    assert_eq!(status_of(&g, "/actuator/env").await, 403);
    assert_eq!(status_of(&g, "/%61ctuator/health").await, 200);
    assert_eq!(targets(&up), vec!["/actuator/health", "/actuator/health"]);
    let (_, _) = eventually(Duration::from_secs(15), "exception to close", || async {
        (status_of(&g, "/actuator/health").await == 403).then_some(())
    })
    .await;
    let (_, _) = eventually(Duration::from_secs(5), "expiry logged", || async {
        g.log()
            .contains("blocked-path exception expired")
            .then_some(())
    })
    .await;
    assert!(g.log().contains("OPS-7: load balancer probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_paths_reports_every_prefix_refused() {
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(policy(up.port, "")).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["selftest", "paths", "--config"])
        .arg(g.dir.path().join("portcullis.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for prefix in PREFIXES {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("PASS {prefix}: "))),
            "{text}"
        );
    }
    assert!(text.contains("all refused"), "{text}");

    // A policy that opens a hole is reported as such.
    std::fs::write(
        g.policy_dir().join("p.toml"),
        std::fs::read_to_string(g.policy_dir().join("p.toml"))
            .unwrap()
            .edit("[blocked]\n", "[blocked]\ncase_sensitive = true\n")
            .edit(
                "path_prefix = \"/\"\n",
                "path_prefix = \"/\"\ncase_sensitive = false\n",
            ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["selftest", "paths", "--config"])
        .arg(g.dir.path().join("portcullis.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "case variants are skipped: {text}");
    assert!(text.contains("case variants skipped"), "{text}");
}
