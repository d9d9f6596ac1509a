//! OpenTelemetry traces over OTLP (HTTP or gRPC, [`super::otlp`]), off unless an OTLP endpoint
//! or protocol is set; when off, a request carries no trace state at all. When on: a server span per request (continuing the client's W3C `traceparent`), with
//! route, decision, reason and status; a client span for the upstream call, whose context is
//! sent upstream as `traceparent`. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and the
//! `OTEL_BSP_*` batch settings are honoured.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

static OTEL: OnceLock<Otel> = OnceLock::new();

/// Why tracing could not start as the environment asks.
pub type OtelError = super::otlp::OtlpError;

/// Starts the exporter when the environment asks for one (see [`super::otlp`]). Returns whether
/// tracing is on.
pub fn init_from_env() -> Result<bool, OtelError> {
    use super::otlp::{build, Settings};
    let Some(settings) = Settings::from_env()? else {
        return Ok(false);
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name("portcullis");
    }
    let provider = build(&settings, |exporter| {
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build()
    })?;
    let tracer = provider.tracer("portcullis");
    let _ = OTEL.set(Otel {
        provider,
        tracer,
        propagator: TraceContextPropagator::new(),
    });
    tracing::info!(
        protocol = settings.wire.name(),
        endpoint = %settings.shown_endpoint(),
        "OpenTelemetry traces are exported over OTLP"
    );
    Ok(true)
}

/// The tracer, when tracing is on.
pub fn get() -> Option<&'static Otel> {
    OTEL.get()
}

/// Flushes what is buffered (at shutdown).
pub fn shutdown() {
    if let Some(o) = OTEL.get() {
        let _ = o.provider.shutdown();
    }
}

struct HeaderExtract<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInject<'a>(&'a mut pingora::http::RequestHeader);

impl Injector for HeaderInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) {
            let _ = self.0.insert_header(name, value);
        }
    }
}

/// The spans of one request.
pub struct RequestSpans {
    method: String,
    server: Span,
    /// The server span as a parent for the upstream span.
    cx: Context,
    upstream: Option<Span>,
}

impl Otel {
    /// A server span continuing the client's `traceparent`, if any.
    pub fn start_request(&self, headers: &http::HeaderMap, method: &str) -> Box<RequestSpans> {
        let parent = self.propagator.extract(&HeaderExtract(headers));
        let server = self
            .tracer
            .span_builder(format!("{method} request"))
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method.to_string())])
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_remote_span_context(server.span_context().clone());
        Box::new(RequestSpans {
            method: method.to_string(),
            server,
            cx,
            upstream: None,
        })
    }
}

impl RequestSpans {
    /// The request's trace id when its trace is sampled (exported), for metric exemplars.
    pub fn sampled_trace_id(&self) -> Option<opentelemetry::trace::TraceId> {
        let cx = self.server.span_context();
        cx.is_sampled().then(|| cx.trace_id())
    }

    /// Starts the upstream span and writes its `traceparent` into the upstream request.
    pub fn start_upstream(&mut self, upstream: &str, req: &mut pingora::http::RequestHeader) {
        let Some(otel) = get() else { return };
        let span = otel
            .tracer
            .span_builder(format!("upstream {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("portcullis.upstream", upstream.to_string())])
            .start_with_context(&otel.tracer, &self.cx);
        let cx = self
            .cx
            .with_remote_span_context(span.span_context().clone());
        req.remove_header("traceparent");
        req.remove_header("tracestate");
        otel.propagator.inject_context(&cx, &mut HeaderInject(req));
        self.upstream = Some(span);
    }

    /// The upstream answered with `status`.
    pub fn end_upstream(&mut self, status: u16) {
        if let Some(mut s) = self.upstream.take() {
            s.set_attribute(KeyValue::new("http.response.status_code", status as i64));
            s.end();
        }
    }

    /// Ends the request: its route, decision, reason, path and status.
    pub fn finish(
        mut self,
        route: &str,
        path: &str,
        status: u16,
        reason: Option<&str>,
        error: Option<&str>,
    ) {
        if let Some(mut s) = self.upstream.take() {
            if let Some(e) = error {
                s.set_status(Status::error(e.to_string()));
            }
            s.end();
        }
        let s = &mut self.server;
        s.update_name(format!("{} {route}", self.method));
        s.set_attribute(KeyValue::new("http.route", route.to_string()));
        s.set_attribute(KeyValue::new("url.path", path.to_string()));
        s.set_attribute(KeyValue::new("http.response.status_code", status as i64));
        s.set_attribute(KeyValue::new(
            "portcullis.decision",
            if reason.is_some() { "deny" } else { "allow" },
        ));
        if let Some(r) = reason {
            s.set_attribute(KeyValue::new("portcullis.reason", r.to_string()));
        }
        if status >= 500 || error.is_some() {
            s.set_status(Status::error(error.unwrap_or("server error").to_string()));
        }
        s.end();
    }
}
