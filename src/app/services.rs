//! The services `serve` starts: the in-process backends, the admin and redirect listeners (on the
//! auxiliary runtime, as named tasks), and the HTTPS proxy on Pingora with its TLS settings and
//! the checks that run before TLS.

use std::net::TcpListener as StdListener;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use super::errors::StartError;
use super::tasks::Tasks;
use crate::backends::worker::Worker;
use crate::handles::Shared;
use crate::proxy::Gateway;
use crate::tls::CertResolver;
use crate::{admin, backends, config, tls};

/// The sockets bound before anything starts, so a busy port is a clear error and port 0 is
/// known before the proxy starts.
pub(super) struct Sockets {
    pub worker: StdListener,
    pub rooms: StdListener,
    pub admin: StdListener,
    pub http: Option<StdListener>,
    pub https: StdListener,
}

/// Starts the worker and rooms backends and the admin and redirect listeners.
pub(super) fn start_listeners(
    tasks: &Tasks,
    h: &Arc<Shared>,
    runtime: &tokio::runtime::Runtime,
    sockets: Sockets,
) -> Result<StdListener, StartError> {
    let _guard = runtime.enter();
    let to_tokio = |l: StdListener| {
        tokio::net::TcpListener::from_std(l).map_err(|e| StartError::Other(e.to_string()))
    };
    let worker = Arc::new(Worker {
        policy: h.policy.clone(),
        data_dir: h.config.data_dir.clone(),
    });
    // The worker is reached only through the gateway, whose pooled connections wait idle; the
    // listeners clients reach bound each request head (and so the idle wait) by the policy's
    // header timeout at start.
    let client_header_timeout = Some(h.policy.snapshot().network.header_timeout);
    tasks.spawn(
        "worker backend",
        backends::serve_http(
            to_tokio(sockets.worker)?,
            Arc::new(move |req| worker.clone().handle(req)),
            None,
        ),
    );
    tasks.spawn(
        "rooms backend",
        h.rooms.clone().serve(to_tokio(sockets.rooms)?),
    );
    let admin_shared = h.clone();
    tasks.spawn(
        "admin listener",
        backends::serve_http(
            to_tokio(sockets.admin)?,
            Arc::new(move |req| admin::handle(admin_shared.clone(), req)),
            client_header_timeout,
        ),
    );
    if let Some(l) = sockets.http {
        let https = h.config.https_addr;
        let challenges = h.acme.as_ref().map(|a| a.challenges.clone());
        tasks.spawn(
            "http redirect",
            backends::serve_http(
                to_tokio(l)?,
                Arc::new(move |req| admin::redirect(https, challenges.clone(), req)),
                client_header_timeout,
            ),
        );
    }
    Ok(sockets.https)
}

/// The HTTPS proxy: Pingora's server with the gateway's service on the socket bound by `serve`.
pub(super) fn https_server(h: &Arc<Shared>, https: StdListener) -> Result<Server, StartError> {
    let config = &h.config;
    let conf = ServerConf {
        threads: config.threads,
        // Pingora's pool holds this many per thread across all upstreams (its default is 128).
        upstream_keepalive_pool_size: config.upstream_idle_connections,
        grace_period_seconds: Some(config.grace_seconds),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // The service takes the socket bound above instead of binding its address again.
    server.listen_fds().lock().add(
        config.https_addr.to_string(),
        std::os::fd::IntoRawFd::into_raw_fd(https),
    );
    pingora::protocols::http::v1::common::set_preserve_header_case(config.preserve_header_case);
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(h.clone()),
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
    tls.set_cert_resolver(Arc::new(CertResolver(h.certs.clone())));
    // Asks for client certificates only while the policy has an [mtls] bundle.
    tls.set_client_cert_verifier(Arc::new(tls::client_auth::PolicyClientVerifier {
        store: h.policy.clone(),
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
                policy: h.policy.clone(),
                counts: h.connections.clone(),
                deadline: h.header_deadline.clone(),
            },
            acme: match (&h.acme, config.acme.as_ref().map(|a| a.challenge)) {
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
    Ok(server)
}
