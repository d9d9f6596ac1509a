//! Per-component costs of the request decision path, so a regression shows up where it happens:
//! route matching (with the blocked-path check), path canonicalization, a verified-token cache
//! hit, and a rate-limit check. `cargo bench --bench decision`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::auth::cache::{token_hash, TokenCache};
use portcullis::auth::Identity;
use portcullis::config::Mode;
use portcullis::limits::LimiterRegistry;
use portcullis::policy::{compile, SourceFile};

fn policy() -> portcullis::policy::Policy {
    let text = include_str!("../policies/default.toml").to_string()
        + r#"
[[limits]]
name = "per-ip"
key = ["ip"]
requests = 1000000000
per_seconds = 1
"#;
    compile(
        &[SourceFile {
            path: "bench.toml".into(),
            text,
        }],
        Mode::Development,
    )
    .expect("the default policy compiles")
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

criterion_group!(benches, decision);
criterion_main!(benches);
