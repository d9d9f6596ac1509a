//! Per-component costs of the request decision path, so a regression shows up where it happens:
//! route matching (with the blocked-path check), path canonicalization, a verified-token cache
//! hit, a rate-limit check, and `decide` whole (every step of a request, as the gateway runs
//! them). `cargo bench --bench decision`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::auth::cache::{token_hash, TokenCache};
use portcullis::auth::Identity;
use portcullis::compile::compile;
use portcullis::config::Mode;
use portcullis::limits::LimiterRegistry;
use portcullis::policy::SourceFile;

fn policy() -> portcullis::policy::Policy {
    let text = include_str!("../policies/default.toml").to_string()
        + r#"
[[limits]]
name = "per-ip"
key = ["ip"]
requests = 1000000000
per_seconds = 1
"#;
    compile_text(text)
}

fn compile_text(text: String) -> portcullis::policy::Policy {
    compile(
        &[SourceFile {
            path: "bench.toml".into(),
            text,
        }],
        Mode::Development,
    )
    .expect("the bench policy compiles")
}

fn decision(c: &mut Criterion) {
    let p = policy();
    let mut g = c.benchmark_group("decision");
    g.bench_function("route match /v1/models", |b| {
        b.iter(|| black_box(p.decide_path(black_box("localhost"), black_box("/v1/models"), 0)))
    });
    g.bench_function("route match, blocked /terminal/x", |b| {
        b.iter(|| black_box(p.decide_path(black_box("localhost"), black_box("/terminal/x"), 0)))
    });
    g.bench_function("canonicalize, already canonical", |b| {
        b.iter(|| {
            black_box(portcullis::http::path::canonicalize(black_box(
                "/v1/models/abc",
            )))
        })
    });
    g.bench_function("canonicalize, dot segments and escapes", |b| {
        b.iter(|| {
            black_box(portcullis::http::path::canonicalize(black_box(
                "/v1//a/./b/../m%6Fdels/%7Eabc",
            )))
        })
    });
    let cache = TokenCache::default();
    let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";
    cache.insert(token_hash(token), Arc::new(Identity::worker()), 1, 1000);
    g.bench_function("token cache hit (hash + lookup)", |b| {
        b.iter(|| black_box(cache.get(&token_hash(black_box(token)), Duration::from_secs(300), 1)))
    });
    let registry = LimiterRegistry::default();
    let spec = &p.limits[0];
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    g.bench_function("rate-limit check (per ip)", |b| {
        b.iter(|| {
            let key = registry
                .key(spec, black_box(client), None, "models")
                .expect("a key");
            black_box(spec.limiter(&registry).check(key))
        })
    });
    g.finish();
}

/// A policy like a deployment's: the worker token on the API routes, a per-IP limit.
const STATIC_POLICY: &str = r#"
[auth]
default_provider = "static"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
methods = ["GET", "HEAD"]
upstream = "worker"

[[routes]]
name = "assets"
path_prefix = "/assets/"
upstream = "worker"
public = true

[[limits]]
name = "per-ip"
key = ["ip"]
requests = 1000000000
per_seconds = 1
"#;

const WORKER_TOKEN: &str = "bench-worker-token-0123456789abcdef";

/// Runs `decide` to completion: without a shared store nothing in it waits, so one poll does.
fn decide_now(
    policy: &portcullis::policy::Policy,
    view: &portcullis::decide::RequestView<'_>,
    deps: &portcullis::decide::Deps<'_>,
) -> bool {
    use std::future::Future;
    let mut facts = portcullis::decide::Facts::default();
    let mut fut = std::pin::pin!(portcullis::decide::decide(policy, view, deps, &mut facts));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r.is_ok(),
        std::task::Poll::Pending => panic!("decide waited without a shared store"),
    }
}

fn decide_whole(c: &mut Criterion) {
    use portcullis::decide::{Deps, Now, RequestView};
    let policy = compile_text(STATIC_POLICY.into());
    let dir = tempfile::tempdir().unwrap();
    let auth = portcullis::auth::AuthState::new(dir.path().join("token"));
    let env = |k: &str| (k == "PORTCULLIS_WORKER_TOKEN").then(|| WORKER_TOKEN.to_string());
    let token = portcullis::auth::WorkerToken::resolve(&env, dir.path().join("token")).unwrap();
    auth.worker.store(Some(Arc::new(token)));
    let limiters = LimiterRegistry::default();
    let backoff = portcullis::limits::AuthBackoff::new(1000);
    let resilience = portcullis::upstreams::Resilience::default();
    let shadow = || {};
    let deps = Deps {
        now: Now::read(),
        auth: &auth,
        limiters: &limiters,
        backoff: &backoff,
        resilience: &resilience,
        shared: None,
        on_shadow: &shadow,
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, "api.example.com".parse().unwrap());
    headers.insert(http::header::USER_AGENT, "bench/1".parse().unwrap());
    headers.insert(http::header::ACCEPT, "*/*".parse().unwrap());
    let public: http::Uri = "/assets/app.js".parse().unwrap();
    let mut with_token = headers.clone();
    with_token.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {WORKER_TOKEN}").parse().unwrap(),
    );
    let models: http::Uri = "/v1/models".parse().unwrap();
    let view = |uri: &'static http::Uri, headers: &'static http::HeaderMap| RequestView {
        method: &http::Method::GET,
        uri,
        raw_target: uri.path().as_bytes(),
        version: http::Version::HTTP_11,
        headers,
        raw_content_length: false,
        upgrade: false,
        peer: Some("203.0.113.7".parse().unwrap()),
        tls: None,
    };
    let (public, models): (&'static http::Uri, &'static http::Uri) =
        (Box::leak(Box::new(public)), Box::leak(Box::new(models)));
    let (headers, with_token): (&'static http::HeaderMap, &'static http::HeaderMap) = (
        Box::leak(Box::new(headers)),
        Box::leak(Box::new(with_token)),
    );
    let mut g = c.benchmark_group("decide");
    let anonymous = view(public, headers);
    assert!(decide_now(&policy, &anonymous, &deps));
    g.bench_function("public route", |b| {
        b.iter(|| black_box(decide_now(&policy, black_box(&anonymous), &deps)))
    });
    let worker = view(models, with_token);
    assert!(decide_now(&policy, &worker, &deps));
    g.bench_function("worker token (cached)", |b| {
        b.iter(|| black_box(decide_now(&policy, black_box(&worker), &deps)))
    });
    g.finish();
}

criterion_group!(benches, decision, decide_whole);
criterion_main!(benches);
