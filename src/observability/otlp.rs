//! The OTLP span exporter the standard `OTEL_*` variables ask for: HTTP (`http/protobuf`, the
//! default, or `http/json`) or gRPC (`grpc`), each with the signal-specific `…_TRACES_…` form
//! taking precedence over the general one.
//!
//! - Endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (HTTP appends `/v1/traces`); unset, the collector's defaults, `http://localhost:4318` for
//!   HTTP and `http://localhost:4317` for gRPC. A gRPC endpoint without a scheme is TLS unless
//!   `OTEL_EXPORTER_OTLP_INSECURE=true`.
//! - TLS: `OTEL_EXPORTER_OTLP_CERTIFICATE` (the CA to trust instead of the system's roots) and
//!   `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` with `OTEL_EXPORTER_OTLP_CLIENT_KEY` (a client
//!   certificate for a collector that asks for one), for both protocols. The files are read and
//!   checked at start, so a wrong path is an error then rather than a silent loss of traces.
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT` and `…_COMPRESSION` (`gzip`) are read by the
//!   exporter itself.
//!
//! gRPC needs a Tokio runtime; the SDK's batch processor exports from its own thread with no
//! runtime. [`Grpc`] gives the exporter a one-thread runtime of its own, so the request path
//! never shares a thread with an export, and a collector that is slow or down only ever holds
//! up that thread (the batch queue drops spans when it is full; requests never wait).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the exporter could not be built as the environment asks.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{var}={value:?}: the protocol is one of grpc, http/protobuf and http/json")]
    Protocol { var: &'static str, value: String },
    #[error("{var}={path:?}: {reason}")]
    File {
        var: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together; only {0} is set")]
    HalfIdentity(&'static str),
    #[error("{0} is set but the endpoint {1:?} is not https; TLS settings need an https endpoint")]
    TlsWithoutHttps(&'static str, String),
    #[error("the gRPC exporter's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the OTLP HTTP client: {0}")]
    HttpClient(String),
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The signal-specific variable if set, else the general one: the variable's name and value.
fn either(traces: &'static str, general: &'static str) -> Option<(&'static str, String)> {
    env(traces)
        .map(|v| (traces, v))
        .or_else(|| env(general).map(|v| (general, v)))
}

/// The wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    HttpProtobuf,
    HttpJson,
    Grpc,
}

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::HttpProtobuf => "http/protobuf",
            Wire::HttpJson => "http/json",
            Wire::Grpc => "grpc",
        }
    }
}

/// What the environment asks for, before anything is built.
#[derive(Debug)]
pub struct Settings {
    pub wire: Wire,
    /// The endpoint as the exporter will be given it, or `None` to let the HTTP exporter apply
    /// its own `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` rule.
    pub endpoint: Option<String>,
    tls: Tls,
}

/// The TLS files, read and parsed.
#[derive(Debug, Default)]
struct Tls {
    ca: Option<(&'static str, Vec<u8>)>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Settings {
    /// Reads the `OTEL_*` variables. `None` when tracing is not asked for: neither an endpoint
    /// nor a protocol is set, or `OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env() -> Result<Option<Settings>, OtlpError> {
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let protocol = either(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        let traces_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let general_endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT");
        if disabled
            || (protocol.is_none() && traces_endpoint.is_none() && general_endpoint.is_none())
        {
            return Ok(None);
        }
        let wire = match protocol {
            None => Wire::HttpProtobuf,
            Some((_, v)) if v == "http/protobuf" => Wire::HttpProtobuf,
            Some((_, v)) if v == "http/json" => Wire::HttpJson,
            Some((_, v)) if v == "grpc" => Wire::Grpc,
            Some((var, value)) => return Err(OtlpError::Protocol { var, value }),
        };
        let endpoint = match wire {
            // gRPC has no path to append: either variable is the endpoint as given.
            Wire::Grpc => {
                let e = traces_endpoint
                    .or(general_endpoint)
                    .unwrap_or_else(|| "http://localhost:4317".into());
                Some(if e.contains("://") {
                    e
                } else {
                    let insecure = either(
                        "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
                        "OTEL_EXPORTER_OTLP_INSECURE",
                    )
                    .is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"));
                    format!("{}://{e}", if insecure { "http" } else { "https" })
                })
            }
            _ => match (traces_endpoint, general_endpoint) {
                (Some(e), _) => Some(e),
                (None, Some(_)) => None,
                (None, None) => Some("http://localhost:4318/v1/traces".into()),
            },
        };
        let tls = Tls::from_env()?;
        let shown = endpoint
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_default();
        if !shown.starts_with("https://") {
            if let Some((var, _)) = &tls.ca {
                return Err(OtlpError::TlsWithoutHttps(var, shown));
            }
            if tls.identity.is_some() {
                return Err(OtlpError::TlsWithoutHttps(
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    shown,
                ));
            }
        }
        Ok(Some(Settings {
            wire,
            endpoint,
            tls,
        }))
    }

    /// The endpoint for the log line.
    pub fn shown_endpoint(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| {
            format!(
                "{}/v1/traces",
                env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .unwrap_or_default()
                    .trim_end_matches('/')
            )
        })
    }
}

impl Tls {
    fn from_env() -> Result<Tls, OtlpError> {
        let read = |var: &'static str, path: String| {
            std::fs::read(&path).map_err(|e| OtlpError::File {
                var,
                path: path.into(),
                reason: e.to_string(),
            })
        };
        let bad = |var: &'static str, path: &str, reason: &str| OtlpError::File {
            var,
            path: path.into(),
            reason: reason.into(),
        };
        let certs = |var: &'static str, path: String| -> Result<Vec<u8>, OtlpError> {
            let pem = read(var, path.clone())?;
            let n = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(var, &path, &format!("not PEM certificates: {e}")))?
                .len();
            if n == 0 {
                return Err(bad(var, &path, "holds no PEM certificate"));
            }
            Ok(pem)
        };
        let ca = match either(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ) {
            Some((var, path)) => Some((var, certs(var, path)?)),
            None => None,
        };
        let cert = either(
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        );
        let key = either(
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        );
        let identity = match (cert, key) {
            (None, None) => None,
            (Some((var, _)), None) | (None, Some((var, _))) => {
                return Err(OtlpError::HalfIdentity(var))
            }
            (Some((cvar, cpath)), Some((kvar, kpath))) => {
                let cert = certs(cvar, cpath)?;
                let key = read(kvar, kpath.clone())?;
                PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| bad(kvar, &kpath, &format!("not a PEM private key: {e}")))?;
                Some((cert, key))
            }
        };
        Ok(Tls { ca, identity })
    }
}

/// Builds the exporter and hands it to `with` (the exporters are different types).
pub fn build<R>(settings: &Settings, with: impl FnOnce(Exporter) -> R) -> Result<R, OtlpError> {
    match settings.wire {
        Wire::Grpc => Ok(with(Exporter::Grpc(Grpc::build(settings)?))),
        wire => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(if wire == Wire::HttpJson {
                    Protocol::HttpJson
                } else {
                    Protocol::HttpBinary
                });
            if let Some(e) = &settings.endpoint {
                b = b.with_endpoint(e.clone());
            }
            if settings.tls.ca.is_some() || settings.tls.identity.is_some() {
                use opentelemetry_otlp::WithHttpConfig;
                b = b.with_http_client(http_client(&settings.tls)?);
            }
            Ok(with(Exporter::Http(b.build()?)))
        }
    }
}

/// A blocking HTTP client that trusts the named CA and presents the client certificate (the
/// exporter's own client trusts the system's roots only).
fn http_client(tls: &Tls) -> Result<reqwest::blocking::Client, OtlpError> {
    let err = |e: reqwest::Error| OtlpError::HttpClient(e.to_string());
    let timeout_ms = either(
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    )
    .and_then(|(_, v)| v.parse::<u64>().ok())
    .unwrap_or(10_000);
    let mut b = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_millis(timeout_ms));
    if let Some((_, pem)) = &tls.ca {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(err)? {
            b = b.add_root_certificate(cert);
        }
        b = b.tls_built_in_root_certs(false);
    }
    if let Some((cert, key)) = &tls.identity {
        let mut pem = key.clone();
        pem.push(b'\n');
        pem.extend_from_slice(cert);
        b = b.identity(reqwest::Identity::from_pem(&pem).map_err(err)?);
    }
    // A blocking client owns a runtime, which may not be built or dropped on a runtime's thread.
    std::thread::spawn(move || b.build().map_err(err))
        .join()
        .map_err(|_| OtlpError::HttpClient("building the client panicked".into()))?
}

/// One of the exporters.
#[derive(Debug)]
pub enum Exporter {
    Http(opentelemetry_otlp::SpanExporter),
    Grpc(Grpc),
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Exporter::Http(e) => e.export(batch).await,
            Exporter::Grpc(e) => e.export(batch).await,
        }
    }
    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        match self {
            Exporter::Http(e) => e.shutdown_with_timeout(timeout),
            Exporter::Grpc(e) => e.shutdown_with_timeout(timeout),
        }
    }
    fn force_flush(&mut self) -> OTelSdkResult {
        match self {
            Exporter::Http(e) => e.force_flush(),
            Exporter::Grpc(e) => e.force_flush(),
        }
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        match self {
            Exporter::Http(e) => e.set_resource(resource),
            Exporter::Grpc(e) => e.set_resource(resource),
        }
    }
}

/// The tonic exporter on a runtime of its own.
#[derive(Debug)]
pub struct Grpc {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Runtime,
}

impl Grpc {
    fn build(settings: &Settings) -> Result<Grpc, OtlpError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-grpc")
            .enable_all()
            .build()
            .map_err(OtlpError::Runtime)?;
        let endpoint = settings.endpoint.clone().unwrap_or_default();
        let mut b = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone());
        if endpoint.starts_with("https://") {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let mut tls = ClientTlsConfig::new();
            tls = match &settings.tls.ca {
                Some((_, pem)) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_native_roots(),
            };
            if let Some((cert, key)) = &settings.tls.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            b = b.with_tls_config(tls);
        }
        // The channel's workers are spawned on the exporter's runtime.
        let inner = {
            let _guard = runtime.enter();
            b.build()?
        };
        Ok(Grpc {
            inner: Arc::new(inner),
            runtime,
        })
    }

    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        // Runs on the exporter's runtime; the join handle can be awaited from any executor.
        let handle = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            handle
                .await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        match Arc::get_mut(&mut self.inner) {
            Some(e) => e.shutdown_with_timeout(timeout),
            // An export still runs; the channel closes when it ends.
            None => Ok(()),
        }
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        Arc::get_mut(&mut self.inner).map_or(Ok(()), |e| e.force_flush())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(e) = Arc::get_mut(&mut self.inner) {
            e.set_resource(resource);
        }
    }
}
