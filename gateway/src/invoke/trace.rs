//! How one invoke is traced: OpenTelemetry spans when spans are exported, W3C ids otherwise.
//!
//! ```text
//!  exported:  request (server) ─▶ invoke ─▶ forward (client) ──traceparent──▶ runtime
//!  not:       caller's traceparent (or a new trace) ─▶ a new span id ──traceparent──▶ runtime
//! ```
//!
//! Either way the runtime continues the caller's trace, and log lines about the invoke carry
//! plugin, capability, key, request id and trace id as the fields of one span. Without an
//! exporter that span is only built when a line is logged: building three spans per call that
//! nobody receives was about a third of the gateway's instructions per echo invoke.

use axum::http::HeaderMap;
use bkg_trace::w3c::TraceParent;
use tracing::Span;

/// The route a call came in on, for the server span.
#[derive(Clone, Copy)]
pub enum Route<'a> {
    /// `POST /api/plugins/{id}/invoke` with this id (or alias).
    Invoke(&'a str),
    /// `POST /api/plugins/{id}/invoke/stream` with this id (or alias).
    InvokeStream(&'a str),
    /// A `/v1` route (`crate::openai`).
    V1(&'static str),
}

/// The tracing state of one invoke.
pub enum Trace {
    Spans { request: Span, invoke: Span },
    Ids(TraceParent),
}

impl Trace {
    /// Starts tracing a call that came in on `route`, continuing the caller's `traceparent`.
    pub fn begin(spans: bool, request_id: &str, route: Route<'_>, headers: &HeaderMap) -> Self {
        if !spans {
            return Trace::Ids(TraceParent::continue_from(headers));
        }
        let (name, path, id) = match route {
            Route::Invoke(id) => (
                "POST /api/plugins/{id}/invoke",
                format!("/api/plugins/{id}/invoke"),
                Some(id),
            ),
            Route::InvokeStream(id) => (
                "POST /api/plugins/{id}/invoke/stream",
                format!("/api/plugins/{id}/invoke/stream"),
                Some(id),
            ),
            Route::V1(path) => (path, path.to_owned(), None),
        };
        let request = tracing::info_span!(
            "request",
            otel.name = %format_args!("{}{name}", if id.is_none() { "POST " } else { "" }),
            otel.kind = "server",
            http.request.method = "POST",
            url.path = %path,
            http.response.status_code = tracing::field::Empty,
            request_id,
            trace_id = tracing::field::Empty,
        );
        bkg_trace::continue_from(&request, headers);
        let invoke = tracing::info_span!(
            parent: &request,
            "invoke",
            plugin = id,
            capability = tracing::field::Empty,
            key_id = tracing::field::Empty,
        );
        Trace::Spans { request, invoke }
    }

    /// The span the invoke's own work runs in (none without an exporter).
    pub fn span(&self) -> Option<Span> {
        match self {
            Trace::Spans { invoke, .. } => Some(invoke.clone()),
            Trace::Ids(_) => None,
        }
    }

    /// A client span for one attempt and the `traceparent` that makes the runtime's span its
    /// child.
    pub fn forward(
        &self,
        capability: &str,
        endpoint: std::net::SocketAddr,
        attempt: usize,
    ) -> (Span, String) {
        match self {
            Trace::Spans { invoke, .. } => {
                let span = tracing::info_span!(
                    parent: invoke,
                    "forward",
                    otel.name = %format_args!("POST /v1/invoke/{capability}"),
                    otel.kind = "client",
                    server.address = %endpoint,
                    attempt,
                );
                let mut headers = HeaderMap::new();
                bkg_trace::inject(&span, &mut headers);
                let traceparent = headers
                    .get(bkg_trace::w3c::TRACEPARENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (span, traceparent)
            }
            Trace::Ids(here) => (Span::none(), here.child().to_string()),
        }
    }

    /// Names the plugin on the invoke span, once a `/v1` model or an alias is resolved to one.
    pub fn plugin(&self, id: &str) {
        if let Trace::Spans { invoke, .. } = self {
            invoke.record("plugin", id);
        }
    }

    /// Names the calling key on the invoke span.
    pub fn key(&self, key_id: &str) {
        if let Trace::Spans { invoke, .. } = self {
            invoke.record("key_id", key_id);
        }
    }

    /// Names the capability on the invoke span.
    pub fn capability(&self, capability: &str) {
        if let Trace::Spans { invoke, .. } = self {
            invoke.record("capability", capability);
        }
    }

    /// Records the response status on the server span.
    pub fn finish(&self, status: u16) {
        if let Trace::Spans { request, .. } = self {
            request.record("http.response.status_code", status);
        }
    }

    /// Runs `log` (which emits events) inside a span with the invoke's ids, so each line
    /// carries them however the invoke is traced.
    pub fn log(&self, fields: &Fields<'_>, log: impl FnOnce()) {
        match self {
            Trace::Spans { invoke, .. } => invoke.in_scope(log),
            Trace::Ids(here) => {
                // At error level, so the span exists whenever any event of the invoke is logged.
                let span = tracing::error_span!(
                    "invoke",
                    plugin = fields.plugin,
                    capability = fields.capability,
                    key_id = fields.key_id,
                    request_id = fields.request_id,
                    trace_id = %here.trace_id,
                );
                span.in_scope(log);
            }
        }
    }
}

/// What log lines about an invoke say about it.
pub struct Fields<'a> {
    pub plugin: &'a str,
    pub capability: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub request_id: &'a str,
}
