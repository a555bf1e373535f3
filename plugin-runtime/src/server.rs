//! HTTP handlers of the plugin protocol `bkg.plugin/v1`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bkg_plugin_api::{InvokeContext, Plugin, PluginError};
use bkg_wire::{
    self as wire, Capability, Logs, PROBLEM_JSON, Problem, ProblemKind, RuntimeInfo, Telemetry,
};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::Config;
use crate::logs::LogBuffer;
use crate::metrics::{InvokeSeries, Metrics, PluginLabels};
use crate::process::{self, CpuSampler};

/// Header carrying the request id from the gateway to the runtime and back.
pub use bkg_wire::REQUEST_ID;

/// Shared state of the one hosted plugin.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    plugin: Arc<dyn Plugin>,
    /// What `/v1/info` reports; read again after the plugin starts ([`AppState::refresh_capabilities`]).
    capabilities: RwLock<Vec<Capability>>,
    /// The ids invokes may name, fixed when the state is made (the metric series are per id).
    capability_ids: HashSet<String>,
    logs: LogBuffer,
    registry: Registry,
    metrics: Metrics,
    /// The invoke series of each capability and of `_unknown`.
    series: InvokeSeries,
    ready: AtomicBool,
    /// Invokes running, streams included (a stream holds its slot until it ends).
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    started: Instant,
    cpu: Mutex<CpuSampler>,
}

impl AppState {
    pub fn new(config: Config, plugin: Arc<dyn Plugin>, logs: LogBuffer) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        plugin.register_metrics(&mut registry);
        let capabilities = wire_capabilities(plugin.as_ref());
        let capability_ids: HashSet<String> = capabilities.iter().map(|c| c.id.clone()).collect();
        let series = InvokeSeries::new(
            &metrics,
            &config.plugin_id,
            capability_ids.iter().map(String::as_str).chain([UNKNOWN]),
        );
        metrics
            .ready
            .get_or_create(&PluginLabels {
                plugin: config.plugin_id.clone(),
            })
            .set(0);
        Self(Arc::new(Inner {
            slots: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            config,
            plugin,
            capabilities: RwLock::new(capabilities),
            capability_ids,
            logs,
            registry,
            metrics,
            series,
            ready: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            started: Instant::now(),
            cpu: Mutex::new(CpuSampler::new()),
        }))
    }

    /// Reads the plugin's capabilities again: a plugin may know its schemas only once started
    /// (brainml derives them from the model it loaded). Called after a successful start, before
    /// readiness, so the gateway (which asks ready instances) sees the final ones. The ids stay
    /// those read at construction; a plugin whose ids change is logged and keeps the old ids.
    pub fn refresh_capabilities(&self) {
        let fresh = wire_capabilities(self.0.plugin.as_ref());
        let ids: HashSet<String> = fresh.iter().map(|c| c.id.clone()).collect();
        if ids != self.0.capability_ids {
            tracing::warn!(
                before = ?self.0.capability_ids,
                after = ?ids,
                "the plugin's capability ids changed at start; invokes accept only the first ones"
            );
        }
        *self
            .0
            .capabilities
            .write()
            .unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// Flips readiness; `/readyz` and invokes follow it.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
        self.0
            .metrics
            .ready
            .get_or_create(&PluginLabels {
                plugin: self.0.config.plugin_id.clone(),
            })
            .set(i64::from(ready));
    }

    fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    fn record_error(&self, message: String) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
        *self.0.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

/// The plugin's capabilities in the protocol's shape.
fn wire_capabilities(plugin: &dyn Plugin) -> Vec<Capability> {
    plugin
        .capabilities()
        .into_iter()
        .map(|c| Capability {
            id: c.id,
            name: c.name,
            description: c.description,
            input_schema: c.input_schema,
            output_schema: c.output_schema,
            management: c.management,
            cost: c.cost.map(wire_cost),
            streaming: c.streaming,
        })
        .collect()
}

/// The protocol's routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.0.config.max_body_bytes;
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/telemetry", get(telemetry))
        .route("/v1/load", get(load))
        .route("/v1/logs", get(logs))
        .route("/v1/invoke/{capability}", post(invoke))
        .route("/v1/invoke/{capability}/stream", post(invoke_stream))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The metrics port's only route (see `Config::metrics_listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn problem(
    status: StatusCode,
    kind: ProblemKind,
    title: &str,
    detail: String,
    request_id: Option<&str>,
) -> Response {
    let mut body = Problem::new(status.as_u16(), kind, title, detail);
    body.request_id = request_id.map(str::to_owned);
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        "ready".into_response()
    } else {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::NotReady,
            "Plugin not ready",
            format!(
                "plugin {:?} is starting or draining",
                state.0.config.plugin_id
            ),
            None,
        )
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.0.registry) {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::Metrics,
            "Metrics encoding failed",
            e.to_string(),
            None,
        );
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = bkg_wire::exposition::negotiate(accept, text);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn info(State(state): State<AppState>) -> axum::Json<RuntimeInfo> {
    let s = &state.0;
    axum::Json(RuntimeInfo {
        protocol: wire::PROTOCOL_VERSION.to_owned(),
        plugin_id: s.config.plugin_id.clone(),
        implementation: s.config.implementation.clone(),
        implementation_version: s.plugin.version().to_owned(),
        ready: state.is_ready(),
        capabilities: s
            .capabilities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        details: s.plugin.details(),
    })
}

async fn telemetry(State(state): State<AppState>) -> axum::Json<Telemetry> {
    let s = &state.0;
    let cpu_percent = s.cpu.lock().unwrap_or_else(|e| e.into_inner()).sample();
    axum::Json(Telemetry {
        plugin_id: s.config.plugin_id.clone(),
        cpu_percent,
        memory_mb: process::rss_bytes(None).unwrap_or(0) as f64 / (1024.0 * 1024.0),
        uptime_secs: s.started.elapsed().as_secs(),
        request_count: s.requests.load(Ordering::Relaxed),
        error_count: s.errors.load(Ordering::Relaxed),
        last_error: s
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        replicas: 1,
        extra: s.plugin.telemetry(),
    })
}

async fn load(State(state): State<AppState>) -> axum::Json<wire::Load> {
    let s = &state.0;
    let slots = s.config.max_concurrency.max(1);
    axum::Json(wire::Load {
        in_flight: slots.saturating_sub(s.slots.available_permits()) as u64,
        waiting: s.waiting.load(Ordering::Relaxed) as u64,
        requests: s.requests.load(Ordering::Relaxed),
    })
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn logs(State(state): State<AppState>, Query(q): Query<LogsQuery>) -> axum::Json<Logs> {
    axum::Json(Logs {
        plugin_id: state.0.config.plugin_id.clone(),
        lines: state.0.logs.tail(q.lines.unwrap_or(100)),
    })
}

/// Releases the waiting-count reservation however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The capability label of calls to capabilities the plugin does not have, so a scanner cannot
/// explode the series count.
const UNKNOWN: &str = "_unknown";

async fn invoke(
    State(state): State<AppState>,
    Path(capability): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    invoke_any(state, capability, headers, body, false).await
}

/// `POST /v1/invoke/{capability}/stream`: a streaming capability's values, one JSON document
/// per line (`application/x-ndjson`), written as the plugin yields them. Errors before the
/// first value are problem+json with their status; an error later is the last line,
/// `{"error": <problem>}`. A client that disconnects drops the plugin's stream.
async fn invoke_stream(
    State(state): State<AppState>,
    Path(capability): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    invoke_any(state, capability, headers, body, true).await
}

async fn invoke_any(
    state: AppState,
    capability: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    stream: bool,
) -> Response {
    let started = Instant::now();
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| bkg_wire::usable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let s = &state.0;
    s.requests.fetch_add(1, Ordering::Relaxed);
    let in_flight = s.series.start();
    let label = if s.capability_ids.contains(&capability) {
        capability.as_str()
    } else {
        UNKNOWN
    };
    // `&str` fields and a lazily formatted `otel.name` (log lines leave it out): the log layer
    // formats span fields when the span opens, on every invoke.
    let span = tracing::info_span!(
        "invoke",
        otel.name = %format_args!("POST /v1/invoke/{label}"),
        otel.kind = "server",
        plugin = s.config.plugin_id.as_str(),
        capability = label,
        request_id = request_id.as_str(),
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    bkg_trace::continue_from(&span, &headers);
    let response = invoke_inner(&state, &capability, &request_id, body, stream, in_flight)
        .instrument(span.clone())
        .await;
    let code = response.status();
    span.record("http.response.status_code", code.as_u16());
    if !code.is_success() {
        state.record_error(format!("{capability}: HTTP {}", code.as_u16()));
    }
    s.series
        .observe(label, code.as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn invoke_inner(
    state: &AppState,
    capability: &str,
    request_id: &str,
    body: Result<Bytes, BytesRejection>,
    stream: bool,
    in_flight: crate::metrics::InFlight,
) -> Response {
    let s = &state.0;
    let rid = Some(request_id);
    if !state.is_ready() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::NotReady,
            "Plugin not ready",
            format!("plugin {:?} is starting or draining", s.config.plugin_id),
            rid,
        );
    }
    if !s.capability_ids.contains(capability) {
        return problem(
            StatusCode::NOT_FOUND,
            ProblemKind::UnknownCapability,
            "Unknown capability",
            format!(
                "plugin {:?} has no capability {capability:?}",
                s.config.plugin_id
            ),
            rid,
        );
    }
    if stream
        && !s
            .capabilities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|c| c.id == capability && c.streaming)
    {
        return problem(
            StatusCode::NOT_FOUND,
            ProblemKind::UnknownCapability,
            "Capability does not stream",
            format!(
                "capability {capability:?} answers whole responses only: POST /v1/invoke/{capability}"
            ),
            rid,
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                ProblemKind::BodyTooLarge
            } else {
                ProblemKind::BadBody
            };
            return problem(
                status,
                kind,
                "Request body refused",
                rejection.body_text(),
                rid,
            );
        }
    };
    // The payload stays the caller's JSON text (checked, not parsed into values), so a plugin
    // can answer numbers exactly as they were written (`Plugin::invoke_raw`).
    let payload: &RawValue = if body.is_empty() {
        RawValue::NULL
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    ProblemKind::MalformedJson,
                    "Malformed JSON",
                    format!("the request body is not valid JSON: {e}"),
                    rid,
                );
            }
        }
    };

    // Admission: run now, wait in a bounded queue, or refuse at once.
    let permit = match s.slots.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            if s.waiting.fetch_add(1, Ordering::SeqCst) >= s.config.max_queue {
                s.waiting.fetch_sub(1, Ordering::SeqCst);
                let mut response = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ProblemKind::Overloaded,
                    "Runtime overloaded",
                    format!(
                        "{} invokes running and {} waiting; retry later",
                        s.config.max_concurrency, s.config.max_queue
                    ),
                    rid,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            let _waiting = Waiting(&s.waiting);
            match s.slots.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => {
                    return problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ProblemKind::NotReady,
                        "Plugin not ready",
                        "the runtime is shutting down".into(),
                        rid,
                    );
                }
            }
        }
    };

    let timeout = s.config.invoke_timeout;
    let ctx = InvokeContext {
        request_id: request_id.to_owned(),
        deadline: Instant::now() + timeout,
    };
    if stream {
        // The invoke timeout bounds the start; the stream then runs as long as it yields (its
        // length is the plugin's to bound, e.g. max_tokens). The plugin queues streams itself.
        let payload: serde_json::Value = match serde_json::from_str(payload.get()) {
            Ok(v) => v,
            Err(e) => return plugin_error(PluginError::InvalidInput(e.to_string()), rid),
        };
        let started =
            tokio::time::timeout(timeout, s.plugin.invoke_stream(capability, payload, ctx)).await;
        return match started {
            // The stream keeps its slot and its in-flight count until it ends or the client
            // goes away, so admission, /v1/load and the gauge see it, and drain waits for it.
            Ok(Ok(values)) => ndjson(values, request_id, (permit, in_flight)),
            Ok(Err(e)) => plugin_error(e, rid),
            Err(_) => problem(
                StatusCode::GATEWAY_TIMEOUT,
                ProblemKind::InvokeTimeout,
                "Invoke timed out",
                format!(
                    "capability {capability:?} did not start streaming within {}",
                    format_duration(timeout)
                ),
                rid,
            ),
        };
    }
    let result = tokio::time::timeout(timeout, s.plugin.invoke_raw(capability, payload, ctx)).await;
    drop(permit);
    match result {
        Ok(Ok(output)) => {
            let body: Box<str> = output.into();
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                String::from(body),
            )
                .into_response();
            if let Ok(id) = HeaderValue::from_str(request_id) {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            response
        }
        Ok(Err(e)) => plugin_error(e, rid),
        Err(_) => {
            tracing::warn!(
                request_id,
                capability,
                timeout_secs = timeout.as_secs_f64(),
                "invoke timed out"
            );
            problem(
                StatusCode::GATEWAY_TIMEOUT,
                ProblemKind::InvokeTimeout,
                "Invoke timed out",
                format!(
                    "capability {capability:?} did not answer within {}",
                    format_duration(timeout)
                ),
                rid,
            )
        }
    }
}

/// The plugin's values as NDJSON, each line flushed as it comes; `hold` (the stream's slot and
/// in-flight count) is released when the body is dropped: at the end, or when the client goes.
fn ndjson<H: Send + 'static>(
    values: bkg_plugin_api::ValueStream,
    request_id: &str,
    hold: H,
) -> Response {
    use futures_util::StreamExt;
    let rid = request_id.to_owned();
    let mut failed = false;
    let lines = values
        .take_while(move |item| {
            // Nothing follows an error line.
            let go = !failed;
            failed |= item.is_err();
            std::future::ready(go)
        })
        .map(move |item| {
            let line = match item {
                Ok(value) => serde_json::to_vec(&value),
                Err(e) => {
                    tracing::warn!(request_id = %rid, error = %e, "stream failed");
                    let (status, kind, title) = plugin_problem(&e);
                    let mut p = Problem::new(status.as_u16(), kind, title, e.to_string());
                    p.request_id = Some(rid.clone());
                    serde_json::to_vec(&serde_json::json!({"error": p}))
                }
            };
            let _held = &hold;
            line.map(|mut l| {
                l.push(b'\n');
                Bytes::from(l)
            })
        });
    let mut response = Response::new(axum::body::Body::from_stream(lines));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID, id);
    }
    response
}

/// A plugin's declared cost as the protocol carries it.
fn wire_cost(cost: bkg_plugin_api::Cost) -> bkg_wire::Cost {
    use bkg_plugin_api::CostUnit as Unit;
    bkg_wire::Cost {
        unit: match cost.unit {
            Unit::Inputs => bkg_wire::CostUnit::Inputs,
            Unit::Bytes => bkg_wire::CostUnit::Bytes,
            Unit::Tokens => bkg_wire::CostUnit::Tokens,
        },
        field: cost.field,
        per: cost.per,
    }
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// How the protocol says a plugin's failure: status, kind, title.
fn plugin_problem(e: &PluginError) -> (StatusCode, ProblemKind, &'static str) {
    match e {
        PluginError::UnknownCapability(_) => (
            StatusCode::NOT_FOUND,
            ProblemKind::UnknownCapability,
            "Unknown capability",
        ),
        PluginError::InvalidInput(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::InvalidInput,
            "Invalid input",
        ),
        PluginError::NotReady(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::NotReady,
            "Plugin not ready",
        ),
        PluginError::Overloaded { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Overloaded,
            "Plugin overloaded",
        ),
        PluginError::Config(_) | PluginError::Failed { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::PluginError,
            "Plugin error",
        ),
    }
}

fn plugin_error(e: PluginError, rid: Option<&str>) -> Response {
    let detail = e.to_string();
    let (status, kind, title) = plugin_problem(&e);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(request_id = rid, error = %detail, "invoke failed");
    }
    let mut response = problem(status, kind, title, detail, rid);
    if let PluginError::Overloaded { retry_after_secs } = e {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    response
}
