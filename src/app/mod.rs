//! Assembly: `serve` builds the gateway from a static `Config` and a policy folder and runs it
//! until shutdown: the checks at start, the policy store and certificates, the sockets, the one
//! bundle of shared handles (`crate::handles::Shared`), the services (`services.rs`: backends,
//! admin and redirect listeners, the HTTPS proxy on Pingora), the named background tasks
//! (`background.rs`, supervised by `tasks.rs`), the hot-reload watchers, and the drain on
//! SIGTERM (`shutdown.rs`).

mod background;
pub mod checks;
mod errors;
mod services;
mod shutdown;
mod tasks;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use pingora::server::RunArgs;

use crate::backends::rooms::RoomServer;
use crate::backends::BackendAddrs;
use crate::config::{Config, Mode};
use crate::handles::Shared;
use crate::observability::Metrics;
use crate::policy::PolicyStore;
use crate::tls::CertStore;
use crate::{auth, limits, observability, shared, tls, upstreams, watch};
use checks::{log_exceptions, posture, warn_expiring};
pub use errors::StartError;
use services::Sockets;
use tasks::Tasks;

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

/// Starts the gateway and blocks until it shuts down.
pub fn serve(mut config: Config) -> Result<(), StartError> {
    check_at_start(&config)?;
    let policy = crate::compile::open_store(
        config.policy_dir.clone(),
        !config.policy_dir_explicit,
        crate::compile::CompileOptions::for_config(&config),
    )
    .map_err(StartError::Policy)?;
    if config.acme.as_ref().is_some_and(|a| a.shared) && policy.snapshot().shared_state.is_none() {
        return Err(StartError::Other(
            "tls.acme.shared = true keeps ACME state in the policy's [shared_state] store, and the policy has none".into(),
        ));
    }
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
    let sockets = bind_all(&mut config)?;
    if let Some(ca) = dev_ca {
        eprintln!(
            "portcullis: generated a development CA: {}\n  try: curl --cacert {} https://localhost:{}/health",
            ca.display(),
            ca.display(),
            config.https_addr.port()
        );
    }
    // The in-process side: backends, admin, redirect, background tasks. Sized apart from the
    // proxy's runtime, which Pingora owns.
    let aux = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("portcullis-aux")
        .enable_all()
        .build()
        .map_err(|e| StartError::Other(format!("cannot start the backend runtime: {e}")))?;
    let backends = BackendAddrs {
        worker: local_addr(&sockets.worker)?,
        rooms: local_addr(&sockets.rooms)?,
    };
    let h = handles(config, policy, certs, acme, backends, &aux)?;

    let tasks = Tasks::new(aux.handle().clone());
    // The listeners first: ACME's http-01 answers come from the HTTP listener.
    let https = services::start_listeners(&tasks, &h, &aux, sockets)?;
    background::start(&tasks, &h);
    log_exceptions(&h.policy.snapshot());
    h.policy
        .set_on_applied(background::on_applied(&h, aux.handle().clone()));
    let _watches = watch_folders(&h)?;
    let server = services::https_server(&h, https)?;

    let p = h.policy.snapshot();
    tracing::info!(
        mode = h.config.mode.as_str(),
        https = %h.config.https_addr,
        http = %h.config.http_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        admin = %h.config.admin_addr,
        routes = p.routes.len(),
        generation = p.generation,
        certificates = h.certs.snapshot().entries.len(),
        tasks = tasks.names().len(),
        "portcullis starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(shutdown::DrainFirst { shared: h.clone() }),
    });
    tasks.stop();
    observability::otel::shutdown();
    drop(aux);
    Ok(())
}

/// What must hold before anything is built: the TLS crypto provider, the trace exporter, and
/// in production the posture checklist (any FAIL and production does not start).
fn check_at_start(config: &Config) -> Result<(), StartError> {
    crate::tls::install_crypto_provider_for(config.tls_min_version);
    match observability::otel::init_from_env() {
        Ok(_) => {}
        Err(e) => return Err(StartError::Tracing(e)),
    }
    if config.mode == Mode::Production {
        let report = posture(config);
        let fails: Vec<String> = report.failures().iter().map(|i| i.line()).collect();
        if !fails.is_empty() {
            return Err(StartError::Posture(fails));
        }
    }
    Ok(())
}

/// Binds every socket the gateway owns before anything starts, so a busy port is a clear error,
/// and writes the real addresses (port 0 picks any free port) back into `config`.
fn bind_all(config: &mut Config) -> Result<Sockets, StartError> {
    let sockets = Sockets {
        worker: bind("worker backend", "127.0.0.1:0".parse().expect("literal"))?,
        rooms: bind("rooms backend", "127.0.0.1:0".parse().expect("literal"))?,
        admin: bind("admin listener", config.admin_addr)?,
        http: config
            .http_addr
            .map(|a| bind("http listener", a))
            .transpose()?,
        // Handed to Pingora rather than bound by it: see `services::https_server`.
        https: bind("https listener", config.https_addr)?,
    };
    config.https_addr = local_addr(&sockets.https)?;
    config.admin_addr = local_addr(&sockets.admin)?;
    if let Some(l) = &sockets.http {
        config.http_addr = Some(local_addr(l)?);
    }
    Ok(sockets)
}

fn local_addr(l: &StdListener) -> Result<SocketAddr, StartError> {
    l.local_addr().map_err(|e| StartError::Other(e.to_string()))
}

/// Builds the process's shared handles, each ready before the first request: the worker token
/// when needed, upstream names resolved, the shared store connected (or its failure mode
/// announced), OCSP staples primed.
fn handles(
    config: Config,
    policy: Arc<PolicyStore>,
    certs: Arc<CertStore>,
    acme: Option<Arc<tls::acme::Acme>>,
    backends: BackendAddrs,
    aux: &tokio::runtime::Runtime,
) -> Result<Arc<Shared>, StartError> {
    let auth = Arc::new(auth::AuthState::new(config.token_file.clone()));
    // An admin listener off loopback is guarded by the worker token.
    if policy.snapshot().auth.needs_worker_token || !config.admin_addr.ip().is_loopback() {
        auth.ensure_worker_token()
            .map_err(|e| StartError::Other(e.to_string()))?;
    }
    let backoff = Arc::new(limits::AuthBackoff::new(100_000));
    let resilience = Arc::new(upstreams::Resilience::default());
    // Named upstream addresses resolve before the first request (a failure is logged; those
    // requests get 502 until a later lookup succeeds).
    resilience.apply(&policy.snapshot());
    let ws_sessions = Arc::new(crate::sessions::WsRegistry::default());
    // State shared with other replicas (Redis) when the policy names a store; followed on reload.
    let shared_state = shared::SharedStore::new(
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
    shared_state.configure(policy.snapshot().shared_state.as_ref());
    if let Some(a) = &acme {
        a.attach_shared(shared_state.clone());
    }
    if let Some(s) = &policy.snapshot().shared_state {
        // Serve with global limits from the first request where the store answers in time.
        let (store, wait) = (shared_state.clone(), s.connect_timeout * 2);
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
    let stapler = tls::stapler::Stapler::new(
        certs.clone(),
        config.data_dir.join("ocsp"),
        config.ocsp_max_refresh,
    );
    // OCSP staples before the first handshake where possible: cached ones, then one quick fetch.
    if aux
        .block_on(async { tokio::time::timeout(Duration::from_secs(6), stapler.prime()).await })
        .is_err()
    {
        tracing::warn!(target: "portcullis::tls", "OCSP responders slow at start; serving without staples until they answer");
    }
    Ok(Arc::new(Shared {
        rooms: RoomServer::new(policy.clone()),
        policy,
        certs,
        auth,
        limiters: Arc::new(limits::LimiterRegistry::default()),
        backoff,
        connections: crate::connections::ConnectionCounts::new(),
        resilience,
        header_deadline: crate::connections::HeaderDeadline::new(),
        metrics: Arc::new(Metrics::default()),
        stapler,
        ready: AtomicBool::new(false),
        in_flight: Arc::new(AtomicUsize::new(0)),
        shared_state,
        ws_sessions,
        backends,
        acme,
        config,
    }))
}

/// Watches the policy folder (when it exists) and the certificate folder; dropping the watchers
/// stops them.
fn watch_folders(h: &Arc<Shared>) -> Result<Vec<watch::FolderWatch>, StartError> {
    let mut watchers = Vec::new();
    if h.policy.dir().is_dir() {
        let p = h.policy.clone();
        watchers.push(
            watch::watch_folder(
                h.policy.dir(),
                Duration::from_millis(150),
                "policy",
                move || {
                    p.reload();
                },
            )
            .map_err(|e| {
                StartError::Other(format!(
                    "{}: cannot watch: {e}",
                    h.config.policy_dir.display()
                ))
            })?,
        );
    } else {
        tracing::warn!(dir = %h.config.policy_dir.display(), "policy folder missing: running the embedded default policy (not reloadable)");
    }
    let (c, warn_days) = (h.certs.clone(), h.config.cert_expiry_warn_days);
    watchers.push(
        watch::watch_folder(
            h.certs.dir(),
            Duration::from_millis(150),
            "certs",
            move || {
                c.reload_and_log();
                warn_expiring(&c, warn_days);
            },
        )
        .map_err(|e| {
            StartError::Other(format!(
                "{}: cannot watch: {e}",
                h.config.cert_dir.display()
            ))
        })?,
    );
    Ok(watchers)
}
