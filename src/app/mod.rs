//! Assembly: `serve` builds the gateway from a static `Config` and a policy folder — the HTTPS
//! proxy (Pingora + rustls), the in-process backends, the admin and redirect listeners, the
//! background tasks and the hot-reload watchers — and runs it until shutdown.

pub mod checks;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};

use crate::backends::rooms::RoomServer;
use crate::backends::worker::Worker;
use crate::backends::BackendAddrs;
use crate::config::{Config, Mode};
use crate::observability::Metrics;
use crate::proxy::Gateway;
use crate::tls::{CertResolver, CertStore};

use crate::handles::Shared;
use crate::{
    admin, auth, backends, config, limits, observability, policy, shared, tls, upstreams, watch,
};
use checks::{close_expired_exceptions, log_exceptions, posture, warn_expiring, SecretFiles};

/// Why the gateway could not start. Each carries every line an operator needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("policy refused:\n{0}")]
    Policy(policy::PolicyErrors),
    #[error("certificates refused:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Certs(Vec<tls::CertError>),
    #[error("{what} {addr}: cannot listen: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("production posture check failed ({} FAIL):\n{}", .0.len(), .0.join("\n"))]
    Posture(Vec<String>),
    #[error("{0}")]
    DevCerts(#[from] tls::dev::DevCertError),
    #[error("tls-alpn-01 responder: {0}")]
    AlpnChallenges(rustls::Error),
    #[error("{0}")]
    Tracing(#[from] observability::otel::OtelError),
    #[error("{0}")]
    Other(String),
}

/// In development mode with no certificate pairs, generates a development CA and leaf.
/// Returns the CA path when it generated one.
pub fn ensure_dev_certs(config: &Config) -> Result<Option<std::path::PathBuf>, StartError> {
    let has_pairs = tls::store::find_pairs(&config.cert_dir)
        .map(|p| !p.is_empty())
        .unwrap_or(false);
    if has_pairs {
        return Ok(None);
    }
    if config.acme.is_some() {
        // ACME fills an empty folder's place; the folder must exist to be watched.
        std::fs::create_dir_all(&config.cert_dir)
            .map_err(|e| StartError::Other(format!("{}: {e}", config.cert_dir.display())))?;
        return Ok(None);
    }
    if config.mode != Mode::Development {
        return Err(StartError::Other(format!(
            "{}: no certificate pairs (NAME.crt + NAME.key); {} mode never generates certificates",
            config.cert_dir.display(),
            config.mode.as_str()
        )));
    }
    tls::dev::generate_dev_certs(&config.cert_dir)
        .map(Some)
        .map_err(StartError::DevCerts)
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<StdListener, StartError> {
    let l = StdListener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| StartError::Bind { what, addr, source })?;
    Ok(l)
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

/// On SIGTERM: fail `/ready` first, give load balancers `unready_seconds` to notice, then let
/// Pingora stop accepting and drain; exit as soon as no request is in flight (or at the grace
/// deadline, whichever is first).
struct DrainFirst {
    shared: Arc<Shared>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainFirst {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {
                self.shared.ready.store(false, Ordering::Release);
                let unready = Duration::from_secs(self.shared.config.unready_seconds);
                tracing::info!(unready_seconds = unready.as_secs(), grace_seconds = self.shared.config.grace_seconds, "SIGTERM: /ready now fails; draining");
                tokio::time::sleep(unready).await;
                let in_flight = self.shared.in_flight.clone();
                let grace = Duration::from_secs(self.shared.config.grace_seconds);
                std::thread::spawn(move || {
                    let start = std::time::Instant::now();
                    let mut idle_checks = 0;
                    while start.elapsed() < grace {
                        std::thread::sleep(Duration::from_millis(100));
                        if in_flight.load(Ordering::Relaxed) == 0 {
                            idle_checks += 1;
                            if idle_checks >= 3 {
                                tracing::info!(after_ms = start.elapsed().as_millis() as u64, "drained: no request in flight; exiting");
                                observability::flush_logs();
                                std::process::exit(0);
                            }
                        } else {
                            idle_checks = 0;
                        }
                    }
                });
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

/// Starts the gateway and blocks until it shuts down.
pub fn serve(mut config: Config) -> Result<(), StartError> {
    crate::tls::install_crypto_provider_for(config.tls_min_version);
    match observability::otel::init_from_env() {
        Ok(true) => tracing::info!("OpenTelemetry traces are exported over OTLP"),
        Ok(false) => {}
        Err(e) => return Err(StartError::Tracing(e)),
    }
    if config.mode == Mode::Production {
        // The same checklist as `portcullis posture`: any FAIL and production does not start.
        let report = posture(&config);
        let fails: Vec<String> = report.failures().iter().map(|i| i.line()).collect();
        if !fails.is_empty() {
            return Err(StartError::Posture(fails));
        }
    }
    let policy = crate::compile::open_store(
        config.policy_dir.clone(),
        !config.policy_dir_explicit,
        crate::compile::CompileOptions::for_config(&config),
    )
    .map_err(StartError::Policy)?;
    let dev_ca = ensure_dev_certs(&config)?;
    let certs = CertStore::open(config.cert_dir.clone(), config.default_cert.clone())
        .map_err(StartError::Certs)?;

    let acme = config
        .acme
        .clone()
        .map(|a| tls::acme::Acme::new(a, certs.clone()));
    if let Some(a) = &acme {
        a.load_stored();
    }
    if certs.snapshot().entries.is_empty() && acme.is_none() {
        return Err(StartError::Other(format!(
            "{}: no certificate pairs to serve",
            config.cert_dir.display()
        )));
    }

    // Bind everything we own before starting, so a busy port is a clear error, not a panic.
    let worker_l = bind("worker backend", "127.0.0.1:0".parse().expect("literal"))?;
    let rooms_l = bind("rooms backend", "127.0.0.1:0".parse().expect("literal"))?;
    let admin_l = bind("admin listener", config.admin_addr)?;
    let http_l = config
        .http_addr
        .map(|a| bind("http listener", a))
        .transpose()?;
    // Bound here and handed to Pingora, so a busy port is a clear error and port 0 (any free
    // port) is known before the proxy starts: from here on the configuration names the real
    // addresses.
    let https_l = bind("https listener", config.https_addr)?;
    let local = |l: &StdListener| l.local_addr().map_err(|e| StartError::Other(e.to_string()));
    config.https_addr = local(&https_l)?;
    config.admin_addr = local(&admin_l)?;
    if let Some(l) = &http_l {
        config.http_addr = Some(local(l)?);
    }
    if let Some(ca) = dev_ca {
        eprintln!(
            "portcullis: generated a development CA: {}\n  try: curl --cacert {} https://localhost:{}/health",
            ca.display(),
            ca.display(),
            config.https_addr.port()
        );
    }
    let backends = BackendAddrs {
        worker: worker_l
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?,
        rooms: rooms_l
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?,
    };

    let auth = Arc::new(auth::AuthState::new(config.token_file.clone()));
    // An admin listener off loopback is guarded by the worker token.
    if policy.snapshot().auth.needs_worker_token || !config.admin_addr.ip().is_loopback() {
        auth.ensure_worker_token()
            .map_err(|e| StartError::Other(e.to_string()))?;
    }
    let limiters = Arc::new(limits::LimiterRegistry::default());
    let backoff = Arc::new(limits::AuthBackoff::new(100_000));
    let connections = crate::connections::ConnectionCounts::new();
    let resilience = Arc::new(upstreams::Resilience::default());
    // Named upstream addresses resolve before the first request (a failure is logged; those
    // requests get 502 until a later lookup succeeds).
    resilience.apply(&policy.snapshot());
    let header_deadline = crate::connections::HeaderDeadline::new();
    let metrics = Arc::new(Metrics::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let ws_sessions = Arc::new(crate::sessions::WsRegistry::default());
    let rooms = RoomServer::new(policy.clone());
    let stapler = tls::stapler::Stapler::new(
        certs.clone(),
        config.data_dir.join("ocsp"),
        config.ocsp_max_refresh,
    );
    // The in-process side: backends, admin, redirect, watchers, SIGHUP. Sized apart from the
    // proxy's runtime, which Pingora owns.
    let aux = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("portcullis-aux")
        .enable_all()
        .build()
        .map_err(|e| StartError::Other(format!("cannot start the backend runtime: {e}")))?;
    // State shared with other replicas (Redis) when the policy names a store; followed on reload.
    let shared_store = shared::SharedStore::new(
        auth.revocations.clone(),
        backoff.clone(),
        {
            let ws = ws_sessions.clone();
            Box::new(move |revoked| {
                ws.close_revoked(revoked);
            })
        },
        aux.handle().clone(),
    );
    shared_store.configure(policy.snapshot().shared_state.as_ref());
    if let Some(s) = &policy.snapshot().shared_state {
        // Serve with global limits from the first request where the store answers in time.
        let (store, wait) = (shared_store.clone(), s.connect_timeout * 2);
        let up = aux.block_on(async move {
            let deadline = tokio::time::Instant::now() + wait;
            while !store.is_up() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            store.is_up()
        });
        if !up {
            tracing::warn!(target: "portcullis::shared", endpoint = %s.endpoint(), "shared state not reachable at start: serving with each global limit's failure mode until it is");
        }
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        policy: policy.clone(),
        certs: certs.clone(),
        auth: auth.clone(),
        limiters: limiters.clone(),
        backoff: backoff.clone(),
        connections: connections.clone(),
        resilience: resilience.clone(),
        header_deadline: header_deadline.clone(),
        metrics: metrics.clone(),
        rooms: rooms.clone(),
        stapler: stapler.clone(),
        ready: AtomicBool::new(false),
        in_flight: in_flight.clone(),
        shared_state: shared_store.clone(),
        ws_sessions: ws_sessions.clone(),
        backends,
        acme: acme.clone(),
    });

    // OCSP staples before the first handshake where possible: cached ones, then one quick fetch.
    if aux
        .block_on(async { tokio::time::timeout(Duration::from_secs(6), stapler.prime()).await })
        .is_err()
    {
        tracing::warn!(target: "portcullis::tls", "OCSP responders slow at start; serving without staples until they answer");
    }
    aux.spawn(stapler.clone().run());
    // Security events and the alert engine (rules come from the live policy).
    let (events, event_rx) = observability::alerts::SecurityEvents::new();
    observability::alerts::install(events.clone());
    aux.spawn(observability::alerts::run(events, event_rx, policy.clone()));
    {
        let _guard = aux.enter();
        let to_tokio = |l: StdListener| {
            tokio::net::TcpListener::from_std(l).map_err(|e| StartError::Other(e.to_string()))
        };
        let worker = Arc::new(Worker {
            policy: policy.clone(),
            data_dir: config.data_dir.clone(),
        });
        let worker_l = to_tokio(worker_l)?;
        // The worker is reached only through the gateway, whose pooled connections wait idle;
        // the listeners clients reach bound each request head (and so the idle wait) by the
        // policy's header timeout at start.
        let client_header_timeout = Some(policy.snapshot().network.header_timeout);
        aux.spawn(backends::serve_http(
            worker_l,
            Arc::new(move |req| worker.clone().handle(req)),
            None,
        ));
        aux.spawn(rooms.clone().serve(to_tokio(rooms_l)?));
        let admin_shared = shared.clone();
        aux.spawn(backends::serve_http(
            to_tokio(admin_l)?,
            Arc::new(move |req| admin::handle(admin_shared.clone(), req)),
            client_header_timeout,
        ));
        if let Some(l) = http_l {
            let https = config.https_addr;
            let challenges = acme.as_ref().map(|a| a.challenges.clone());
            aux.spawn(backends::serve_http(
                to_tokio(l)?,
                Arc::new(move |req| admin::redirect(https, challenges.clone(), req)),
                client_header_timeout,
            ));
        }
        if let Some(a) = &acme {
            a.spawn();
        }
        let (p, c) = (policy.clone(), certs.clone());
        aux.spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading policy and certificates");
                let (p, c) = (p.clone(), c.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    p.reload();
                    c.reload_and_log();
                })
                .await;
            }
        });
        // Fetch every JWKS before serving, and again whenever a reload names a new one; resolve
        // the worker token when a reload starts using the static provider.
        let prewarm = auth.clone();
        let urls = policy.snapshot().auth.jwks_urls();
        aux.spawn(async move { prewarm.jwks.prewarm(urls).await });
        let (hook_auth, handle) = (auth.clone(), aux.handle().clone());
        log_exceptions(&policy.snapshot());
        let ws = ws_sessions.clone();
        let store = shared_store.clone();
        let names = resilience.clone();
        policy.set_on_applied(Box::new(move |p| {
            log_exceptions(p);
            // New upstream names get their addresses now, before requests need them.
            names.apply(p);
            store.configure(p.shared_state.as_ref());
            // Sessions the new policy no longer admits are closed (4403); the rest stay open.
            ws.revalidate(p);
            if p.auth.needs_worker_token {
                if let Err(e) = hook_auth.ensure_worker_token() {
                    tracing::error!(error = %e, "worker token unavailable; the static provider refuses every token");
                }
            }
            let (a, urls) = (hook_auth.clone(), p.auth.jwks_urls());
            handle.spawn(async move { a.jwks.prewarm(urls).await });
        }));
        // Certificate expiry: warned about at start and daily when under the threshold.
        let (expiry_certs, warn_days) = (certs.clone(), config.cert_expiry_warn_days);
        aux.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(86_400));
            loop {
                tick.tick().await;
                warn_expiring(&expiry_certs, warn_days);
            }
        });
        // Limiter upkeep: evict idle buckets and stale backoff entries every second.
        let (l, b, pol, st) = (
            limiters.clone(),
            backoff.clone(),
            policy.clone(),
            shared_store.clone(),
        );
        aux.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut secrets = SecretFiles::default();
            loop {
                tick.tick().await;
                if secrets.changed(&pol.snapshot()) {
                    tracing::info!("a secret file named by the policy changed: reloading");
                    let p = pol.clone();
                    let _ = tokio::task::spawn_blocking(move || p.reload()).await;
                }
                close_expired_exceptions(&pol.snapshot(), auth::now_unix());
                l.maintain();
                st.maintain();
                b.evict_idle(Duration::from_secs(3600), std::time::Instant::now());
            }
        });
        // Cut connections that have not sent a request header in time (slowloris).
        let (d, p) = (header_deadline.clone(), policy.clone());
        aux.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                d.reap(p.snapshot().network.header_timeout);
            }
        });
        // Named upstream addresses: resolved at start (below) and on reload, and again every
        // 30 s here; a failed lookup keeps the last good addresses.
        let (r, p) = (resilience.clone(), policy.clone());
        aux.spawn(async move {
            let mut tick = tokio::time::interval(upstreams::RESOLVE_EVERY);
            loop {
                tick.tick().await;
                let (r, p) = (r.clone(), p.snapshot());
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
        let (r, p) = (resilience.clone(), policy.clone());
        aux.spawn(async move {
            let mut last = std::collections::HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                r.check_health(&p.snapshot(), &mut last).await;
            }
        });
        // Ready once the HTTPS listener completes a TLS handshake.
        let ready_shared = shared.clone();
        let probe = match config.https_addr {
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
        let probe_certs = certs.clone();
        let ready_file = config.ready_file.clone();
        let addresses = (config.https_addr, config.http_addr, config.admin_addr);
        aux.spawn(async move {
            loop {
                if tls::probe::handshake_ok(probe, probe_certs.clone()).await {
                    ready_shared.ready.store(true, Ordering::Release);
                    if let Some(path) = &ready_file {
                        write_ready_file(path, &addresses);
                    }
                    tracing::info!(https = %probe, "ready");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let _policy_watch = if policy.dir().is_dir() {
        let p = policy.clone();
        Some(
            watch::watch_folder(
                policy.dir(),
                Duration::from_millis(150),
                "policy",
                move || {
                    p.reload();
                },
            )
            .map_err(|e| {
                StartError::Other(format!(
                    "{}: cannot watch: {e}",
                    config.policy_dir.display()
                ))
            })?,
        )
    } else {
        tracing::warn!(dir = %config.policy_dir.display(), "policy folder missing: running the embedded default policy (not reloadable)");
        None
    };
    let (c, warn_days) = (certs.clone(), config.cert_expiry_warn_days);
    let _cert_watch = watch::watch_folder(
        certs.dir(),
        Duration::from_millis(150),
        "certs",
        move || {
            c.reload_and_log();
            warn_expiring(&c, warn_days);
        },
    )
    .map_err(|e| StartError::Other(format!("{}: cannot watch: {e}", config.cert_dir.display())))?;

    // The HTTPS proxy on Pingora.
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.grace_seconds),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // The service takes the socket bound above instead of binding its address again.
    server.listen_fds().lock().add(
        config.https_addr.to_string(),
        std::os::fd::IntoRawFd::into_raw_fd(https_l),
    );
    let gateway = Gateway::new(shared.clone());
    pingora::protocols::http::v1::common::set_preserve_header_case(config.preserve_header_case);
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "portcullis-https",
    );
    // Requests per connection (Pingora counts the reuses after the first request; HTTP/2
    // streams in the vendored pingora-core) and the HTTP/2 idle bound; the per-request bounds
    // are set in `early_request_filter`.
    if let Some(app) = service.app_logic_mut() {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.keepalive_request_limit = config.connections.max_requests.map(|n| n - 1);
        options.h2_idle_timeout = config.connections.keepalive_timeout;
        app.server_options = Some(options);
    }
    let verified = Arc::new(tls::client_auth::JustVerified::default());
    let mut tls = TlsSettings::with_callbacks(Box::new(tls::client_auth::HandshakeCallbacks {
        verified: verified.clone(),
    }))
    .map_err(|e| StartError::Other(e.to_string()))?;
    tls.set_cert_resolver(Arc::new(CertResolver(certs.clone())));
    // Asks for client certificates only while the policy has an [mtls] bundle.
    tls.set_client_cert_verifier(Arc::new(tls::client_auth::PolicyClientVerifier {
        store: policy.clone(),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        verified,
    }));
    tls.enable_h2();
    // The server's suite order wins (strongest first in ring's list), not the client's.
    tls.set_ignore_client_order(true);
    service
        .endpoints()
        .set_pre_tls_callback(Arc::new(tls::acme::PreTls {
            caps: crate::connections::ConnectionCaps {
                policy: policy.clone(),
                counts: connections,
                deadline: header_deadline.clone(),
            },
            acme: match (&acme, config.acme.as_ref().map(|a| a.challenge)) {
                (Some(a), Some(config::AcmeChallenge::TlsAlpn01)) => Some(
                    tls::acme::AlpnChallenges::new(a.challenges.clone())
                        .map_err(StartError::AlpnChallenges)?,
                ),
                _ => None,
            },
        }));
    // The read buffer below TLS, off by default: rustls reads into its own buffer, so a second
    // one below it (Pingora's default is 64 KiB) costs memory on every idle connection and a
    // copy on every read. Only large uploads read in more, smaller syscalls without it
    // (`bench/results/2026-12-06.md`).
    service.add_listener(
        pingora::listeners::ListenerConfig::tcp(config.https_addr.to_string())
            .tls(tls)
            .l4_buffer(pingora::listeners::L4BufferSettings::new(
                config.read_buffer_bytes,
                pingora::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE,
            )),
    );
    server.add_service(service);

    let p = policy.snapshot();
    tracing::info!(
        mode = config.mode.as_str(),
        https = %config.https_addr,
        http = %config.http_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        admin = %config.admin_addr,
        routes = p.routes.len(),
        generation = p.generation,
        certificates = certs.snapshot().entries.len(),
        "portcullis starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainFirst { shared }),
    });
    observability::otel::shutdown();
    drop(aux);
    Ok(())
}
