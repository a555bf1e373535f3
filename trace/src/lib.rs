//! OpenTelemetry for every bkg process: one trace per invoke, from the gateway into the runtime.
//!
//! ```text
//!  client ──traceparent?──▶ gateway: request ─▶ invoke ─▶ forward ──traceparent──▶ runtime: invoke
//! ```
//!
//! Spans always get W3C trace ids, so log lines and the `traceparent` sent on carry them. They
//! are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the other standard `OTEL_*` variables
//! (service name, resource attributes, headers, sampler, batch delays) apply as the SDK reads them.

#![forbid(unsafe_code)]

use http::HeaderMap;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

/// The process's tracer provider; dropping it flushes spans still buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Why spans are not exported although an endpoint is set (a bad protocol value).
    pub export_error: Option<String>,
}

impl Tracing {
    /// Sets the W3C propagator and builds the provider. `service` is `service.name` unless
    /// `OTEL_SERVICE_NAME` is set.
    pub fn init(service: &'static str) -> Self {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|s| s.is_empty()) {
            resource = resource.with_service_name(service);
        }
        let builder = SdkTracerProvider::builder().with_resource(resource.build());
        let (provider, export_error) = if !export_configured() {
            (builder.build(), None)
        } else {
            match otlp_exporter() {
                Ok(exporter) => (builder.with_batch_exporter(exporter).build(), None),
                Err(e) => (builder.build(), Some(e)),
            }
        };
        Self {
            provider,
            export_error,
        }
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        // Only what a trace reader uses: the span fields we set. Location, thread and target
        // attributes, busy/idle timing and context activation cost allocations or clock reads
        // on every span or every poll of an instrumented future (≈ a third of the gateway's
        // CPU per echo invoke, measured with perf); ids and parent links do not need them.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("bkg"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// True when an OTLP endpoint is configured.
pub fn export_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// OTLP over HTTP: `http/protobuf` unless `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` is `http/json`.
fn otlp_exporter() -> Result<opentelemetry_otlp::SpanExporter, String> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    let protocol = match protocol.as_str() {
        "" | "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use http/protobuf or http/json"
            ));
        }
    };
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| e.to_string())
}

/// Makes `span` a child of the trace the caller sent in `traceparent` (if any) and records its
/// trace id in the span's `trace_id` field, so log lines inside it join the trace.
pub fn continue_from(span: &tracing::Span, headers: &HeaderMap) {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        span.record("trace_id", own.trace_id().to_string());
    }
}

/// Adds `traceparent` (and `tracestate`) so the receiver's spans become children of `span`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_traceparent_is_continued_and_passed_on() {
        let tracing = Tracing::init("test");
        let subscriber = tracing_subscriber::registry().with(tracing.layer());
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = HeaderMap::new();
            incoming.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .expect("header"),
            );
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&span, &incoming);
            let child = span.in_scope(|| tracing::info_span!("forward"));
            let mut outgoing = HeaderMap::new();
            inject(&child, &mut outgoing);
            let sent = outgoing["traceparent"].to_str().expect("ascii");
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "same trace: {sent}"
            );
            assert!(!sent.contains("00f067aa0ba902b7"), "a new span id: {sent}");
        });
    }

    #[test]
    fn without_a_caller_a_new_trace_starts() {
        let tracing = Tracing::init("test");
        let subscriber = tracing_subscriber::registry().with(tracing.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&span, &HeaderMap::new());
            let mut outgoing = HeaderMap::new();
            inject(&span, &mut outgoing);
            let sent = outgoing["traceparent"].to_str().expect("ascii");
            assert_eq!(sent.len(), 55, "{sent}");
            assert!(!sent.starts_with("00-00000000000000000000000000000000"));
        });
    }
}
