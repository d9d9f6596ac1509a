//! The gateway's background work, each piece a named task (`Tasks`): OCSP stapling, the alert
//! engine, SIGHUP, JWKS prefetch, ACME keepers, certificate expiry warnings, limiter and
//! exception upkeep, the header deadline, name resolution, health checks and the readiness
//! probe; and what a newly applied policy sets off.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::checks::{close_expired_exceptions, log_exceptions, warn_expiring, SecretFiles};
use super::tasks::Tasks;
use crate::handles::Shared;
use crate::policy::store::AppliedHook;
use crate::{observability, tls, upstreams};

/// Starts every background task of the gateway `h` on `tasks`.
pub(super) fn start(tasks: &Tasks, h: &Arc<Shared>) {
    tasks.spawn("ocsp stapler", h.stapler.clone().run());
    // Security events and the alert engine (rules come from the live policy).
    let (events, receiver) = observability::alerts::SecurityEvents::new();
    observability::alerts::install(events.clone());
    tasks.spawn(
        "alert engine",
        observability::alerts::run(events, receiver, h.policy.clone()),
    );
    tasks.spawn("sighup", sighup(h.clone()));
    // Every JWKS is fetched before serving, and again whenever a reload names a new one.
    let (auth, urls) = (h.auth.clone(), h.policy.snapshot().auth.jwks_urls());
    tasks.spawn(
        "jwks prefetch",
        async move { auth.jwks.prewarm(urls).await },
    );
    if let Some(acme) = &h.acme {
        for keeper in acme.keepers() {
            tasks.spawn("acme keeper", keeper);
        }
    }
    // Certificate expiry: warned about at start and daily when under the threshold.
    let (certs, warn_days) = (h.certs.clone(), h.config.cert_expiry_warn_days);
    tasks.every(
        "certificate expiry",
        Duration::from_secs(86_400),
        move || {
            warn_expiring(&certs, warn_days);
            async {}
        },
    );
    // Once a second: a policy whose secret files changed is reloaded, expired exceptions close,
    // limiters and the shared store evict idle state, stale backoff entries go.
    let (g, mut secrets, mut token_error) = (h.clone(), SecretFiles::default(), None);
    tasks.every("upkeep", Duration::from_secs(1), move || {
        let policy = g.policy.clone();
        let reload = secrets.changed(&policy.snapshot());
        close_expired_exceptions(&policy.snapshot(), crate::clock::now_unix());
        g.limiters.maintain();
        g.shared_state.maintain();
        g.backoff
            .evict_idle(Duration::from_secs(3600), std::time::Instant::now());
        rotate_worker_token(
            &g.auth,
            policy.snapshot().auth.previous_token_grace,
            &mut token_error,
        );
        async move {
            if reload {
                tracing::info!("a secret file named by the policy changed: reloading");
                let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
            }
        }
    });
    // Cut connections that have not sent a request header in time (slowloris).
    let g = h.clone();
    tasks.every("header deadline", Duration::from_millis(100), move || {
        g.header_deadline
            .reap(g.policy.snapshot().network.header_timeout);
        async {}
    });
    // Named upstream addresses: resolved at start and on reload, and again every 30 s here; a
    // failed lookup keeps the last good addresses.
    let g = h.clone();
    tasks.every("name resolution", upstreams::RESOLVE_EVERY, move || {
        let (r, p) = (g.resilience.clone(), g.policy.snapshot());
        async move {
            let _ = tokio::task::spawn_blocking(move || {
                r.resolve_names_with(&p, upstreams::RESOLVE_EVERY, &|a: &str| {
                    use std::net::ToSocketAddrs;
                    a.to_socket_addrs().map(|i| i.collect())
                })
            })
            .await;
        }
    });
    // Active health checks for external upstream pools.
    let g = h.clone();
    let last = Arc::new(tokio::sync::Mutex::new(std::collections::HashMap::new()));
    tasks.every("health checks", Duration::from_millis(500), move || {
        let (g, last) = (g.clone(), last.clone());
        async move {
            let mut last = last.lock().await;
            g.resilience
                .check_health(&g.policy.snapshot(), &mut last)
                .await;
        }
    });
    tasks.spawn("readiness probe", ready_when_serving(h.clone()));
}

/// SIGHUP reloads the policy and the certificates.
async fn sighup(h: Arc<Shared>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: reload by editing the folders");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading policy and certificates");
        let h = h.clone();
        let _ = tokio::task::spawn_blocking(move || {
            h.policy.reload();
            h.certs.reload_and_log();
        })
        .await;
    }
}

/// Marks the gateway ready once its HTTPS listener completes a TLS handshake, and writes the
/// ready file.
async fn ready_when_serving(h: Arc<Shared>) {
    let probe = match h.config.https_addr {
        a if a.ip().is_unspecified() => SocketAddr::new(
            if a.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            a.port(),
        ),
        a => a,
    };
    let addresses = (h.config.https_addr, h.config.http_addr, h.config.admin_addr);
    loop {
        if tls::probe::handshake_ok(probe, h.certs.clone()).await {
            h.ready.store(true, Ordering::Release);
            if let Some(path) = &h.config.ready_file {
                write_ready_file(path, &addresses);
            }
            tracing::info!(https = %probe, "ready");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker token read from a file follows the file: a new token takes over at once, the
/// previous one is accepted for `[auth] previous_token_grace_seconds`, and the overlap's end is
/// logged. Both tokens appear in the log only masked. An unreadable source is logged when its
/// error first appears or changes (`last_error`), not every second.
fn rotate_worker_token(
    auth: &crate::auth::AuthState,
    grace: Duration,
    last_error: &mut Option<String>,
) {
    let now = crate::clock::now_unix();
    let result = auth.refresh_worker_token(now, grace);
    match &result {
        Err(e) if last_error.as_deref() != Some(e.to_string().as_str()) => {
            tracing::error!(error = %e, "worker token source unreadable; keeping the current token");
            *last_error = Some(e.to_string());
        }
        Err(_) => {}
        Ok(_) => *last_error = None,
    }
    if let Ok(Some(r)) = result {
        match r.previous_until_unix {
            Some(until) => tracing::warn!(
                new = %r.new,
                previous = %r.previous,
                previous_accepted_until = %crate::observability::format_unix(until),
                "worker token rotated; the previous token is accepted until the overlap ends"
            ),
            None => tracing::warn!(
                new = %r.new,
                previous = %r.previous,
                "worker token rotated; the previous token is no longer accepted"
            ),
        }
    }
    if let Some(previous) = auth.end_overlap(now) {
        tracing::warn!(previous = %previous, "worker token overlap ended; the previous token is no longer accepted");
    }
}

/// What each newly applied policy sets off: exceptions logged, new upstream names resolved, the
/// shared store reconfigured, sessions the policy no longer admits closed, the worker token
/// resolved when the static provider comes into use, new JWKS fetched.
pub(super) fn on_applied(h: &Arc<Shared>, runtime: tokio::runtime::Handle) -> AppliedHook {
    let h = h.clone();
    Box::new(move |p| {
        log_exceptions(p);
        // New upstream names get their addresses now, before requests need them.
        h.resilience.apply(p);
        h.shared_state.configure(p.shared_state.as_ref());
        // Sessions the new policy no longer admits are closed (4403); the rest stay open.
        h.ws_sessions.revalidate(p);
        if p.auth.needs_worker_token {
            if let Err(e) = h.auth.ensure_worker_token() {
                tracing::error!(error = %e, "worker token unavailable; the static provider refuses every token");
            }
        }
        let (a, urls) = (h.auth.clone(), p.auth.jwks_urls());
        runtime.spawn(async move { a.jwks.prewarm(urls).await });
    })
}

/// Writes the listeners' addresses as JSON (`{"https": …, "http": … or null, "admin": …}`) to
/// `path`, whole or not at all (a temporary file renamed over it), for whoever started the
/// gateway on port 0: it appears once the gateway is ready.
fn write_ready_file(
    path: &std::path::Path,
    (https, http, admin): &(SocketAddr, Option<SocketAddr>, SocketAddr),
) {
    let text = serde_json::json!({
        "https": https.to_string(),
        "http": http.map(|a| a.to_string()),
        "admin": admin.to_string(),
    })
    .to_string();
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, text + "\n").and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "could not write the ready file");
    }
}
