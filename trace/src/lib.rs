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

mod fields;
mod ids;
pub mod w3c;

pub use fields::{JsonSpanFields, TextSpanFields, log_layer};
use http::HeaderMap;
pub use ids::IdsLayer;
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
    /// Spans go to an OTLP exporter.
    exporting: bool,
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
            exporting: export_configured() && export_error.is_none(),
            provider,
            export_error,
        }
    }

    /// The `tracing` layer: OpenTelemetry spans when they are exported, otherwise only the W3C
    /// ids that log lines and `traceparent` need ([`IdsLayer`]).
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let otel = self.exporting.then(|| self.otel_layer());
        let ids = (!self.exporting).then(IdsLayer::default);
        tracing_subscriber::Layer::and_then(otel, ids)
    }

    /// True when spans are exported over OTLP. Without an exporter, hot paths may carry W3C
    /// ids ([`w3c::TraceParent`]) instead of building spans no one receives.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    fn otel_layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        // Only what a trace reader uses: the span fields we set, ids and parent links; no
        // location, thread or target attributes, busy/idle timings or context activation.
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
    // Ids only (no exporter): the header is parsed directly, which costs a tenth of a pass
    // through OpenTelemetry's propagator and its context.
    let trace_id = ids::with_ids(span, |ids| {
        if let Some(caller) = w3c::TraceParent::from_headers(headers) {
            ids.trace_id = caller.trace_id;
            ids.flags = caller.flags;
        }
        ids.trace_id
    });
    // OpenTelemetry spans: the propagator also carries the caller's `tracestate`.
    let trace_id = trace_id.or_else(|| {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let own = span.context().span().span_context().clone();
        own.is_valid().then(|| own.trace_id())
    });
    if let Some(trace_id) = trace_id {
        let hex = w3c::trace_id_hex(trace_id);
        span.record("trace_id", std::str::from_utf8(&hex).unwrap_or_default());
    }
}

/// Adds `traceparent` (and `tracestate`) so the receiver's spans become children of `span`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = ids::with_ids(span, |ids| {
        opentelemetry::Context::new().with_remote_span_context(ids.span_context())
    })
    .unwrap_or_else(|| span.context());
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Runs `check` under each of the two layers: OpenTelemetry spans and ids only.
    fn under_both_layers(check: impl Fn()) {
        let tracing = Tracing::init("test");
        assert!(!tracing.exporting, "no OTLP endpoint is set in unit tests");
        let otel = tracing_subscriber::registry().with(tracing.otel_layer());
        tracing::subscriber::with_default(otel, &check);
        let ids = tracing_subscriber::registry().with(tracing.layer());
        tracing::subscriber::with_default(ids, &check);
    }

    /// Headers of a caller inside trace 4bf92f35…, span 00f067aa…, sampled.
    fn caller() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        headers
    }

    fn traceparent(span: &tracing::Span) -> String {
        let mut outgoing = HeaderMap::new();
        inject(span, &mut outgoing);
        outgoing["traceparent"].to_str().expect("ascii").to_owned()
    }

    #[test]
    fn a_traceparent_is_continued_and_passed_on() {
        under_both_layers(|| {
            let incoming = caller();
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&span, &incoming);
            let child = span.in_scope(|| tracing::info_span!("forward"));
            let sent = traceparent(&child);
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "same trace: {sent}"
            );
            assert!(sent.ends_with("-01"), "still sampled: {sent}");
            assert!(!sent.contains("00f067aa0ba902b7"), "a new span id: {sent}");
            assert_ne!(
                traceparent(&span),
                sent,
                "parent and child differ in span id"
            );
        });
    }

    #[test]
    fn without_a_caller_a_new_trace_starts() {
        under_both_layers(|| {
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&span, &HeaderMap::new());
            let sent = traceparent(&span);
            assert_eq!(sent.len(), 55, "{sent}");
            assert!(!sent.starts_with("00-00000000000000000000000000000000"));
            let child = span.in_scope(|| tracing::info_span!("forward"));
            assert_eq!(traceparent(&child)[..35], sent[..35], "one trace");
            let other = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&other, &HeaderMap::new());
            assert_ne!(
                traceparent(&other)[..35],
                sent[..35],
                "a new trace per request"
            );
        });
    }

    #[test]
    fn log_lines_inside_a_request_carry_its_trace_id() {
        let tracing = Tracing::init("test");
        let buffer = fields::Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(tracing.layer()).with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_span_list(true)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let incoming = caller();
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&span, &incoming);
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = buffer.text();
        assert!(
            text.contains(r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#),
            "{text}"
        );
    }
}
