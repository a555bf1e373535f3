//! REST handlers: `/api/plugins/...`, `/healthz`, and `/metrics` (on the metrics listener).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::Phase;
use bkg_core::wire::{InvokeRequest, Logs, Overview, PluginInfo, Telemetry, TelemetryHistory};
use serde::Deserialize;
#[allow(unused_imports)]
use serde_json::json;

use crate::AppState;
use crate::auth::Principal;
use crate::backend::PluginView;
use crate::invoke;
use crate::problem::ApiError;

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The gateway is serving", body = Object, example = json!({"status": "ok", "mode": "local"}))))]
pub async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "mode": state.backend.mode()}))
}

/// The OpenAPI document; open like `/healthz`, since it holds no secrets.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Prometheus metrics: OpenMetrics when the Accept header asks for it, else text format 0.0.4.
/// Served only by [`crate::metrics_router`], on its own listener.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let plugins = state.backend.list().await;
    state.metrics.observe_plugins(plugins.iter().map(|v| {
        crate::metrics::PluginSeries {
            id: v.plugin.id(),
            phase: phase_of(v),
            up: !v.ready_endpoints().is_empty(),
            capabilities: v
                .plugin
                .spec
                .capabilities
                .iter()
                .map(|c| c.id.as_str())
                .collect(),
        }
    }));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return ApiError::Internal(e.to_string()).into_response();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = bkg_core::exposition::negotiate(accept, text);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn phase_of(view: &PluginView) -> Phase {
    view.plugin
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(Phase::Starting)
}

pub(crate) async fn info(state: &AppState, view: &PluginView) -> PluginInfo {
    let caps = if view.plugin.spec.capabilities.is_empty() {
        Some(invoke::capabilities(state, view).await)
    } else {
        None
    };
    let mut info =
        bkg_core::wire::plugin_info(&view.plugin, caps.as_deref(), view.instances.clone());
    if view.manifest_error.is_some() {
        info.manifest_error = view.manifest_error.clone();
    }
    if !info.aliases.is_empty() {
        state
            .backend
            .aliases()
            .await
            .fill(view.plugin.id(), &mut info.aliases);
    }
    info
}

#[utoipa::path(get, path = "/api/aliases", tag = "plugins",
    responses((status = 200, description = "Every alias of an enabled plugin and how its traffic splits between the plugins naming it (spec.aliases)", body = Vec<crate::aliases::AliasInfo>)))]
pub async fn aliases(State(state): State<AppState>) -> Json<Vec<crate::aliases::AliasInfo>> {
    Json(crate::aliases::AliasInfo::list(
        &*state.backend.aliases().await,
    ))
}

async fn find(state: &AppState, id: &str) -> ApiResult<PluginView> {
    state
        .backend
        .get(id)
        .await
        .ok_or_else(|| ApiError::UnknownPlugin(id.to_owned()))
}

#[utoipa::path(get, path = "/api/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin", body = Vec<PluginInfo>)))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<PluginInfo>> {
    let mut out = Vec::new();
    for view in state.backend.list().await {
        out.push(info(&state, &view).await);
    }
    Json(out)
}

#[utoipa::path(get, path = "/api/plugins/{id}", tag = "plugins", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    responses((status = 200, description = "The plugin", body = PluginInfo), (status = 404, response = crate::openapi::NotFound)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PluginInfo>> {
    let view = find(&state, &id).await?;
    Ok(Json(info(&state, &view).await))
}

async fn after_action(state: &AppState, id: &str) -> ApiResult<Response> {
    let view = find(state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(info(state, &view).await)).into_response())
}

#[utoipa::path(post, path = "/api/plugins/{id}/start", tag = "lifecycle", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    responses((status = 202, description = "Starting; the plugin as it is now", body = PluginInfo),
        (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict)))]
pub async fn start(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    state.backend.start(&id).await?;
    after_action(&state, &id).await
}

#[utoipa::path(post, path = "/api/plugins/{id}/stop", tag = "lifecycle", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    responses((status = 202, description = "Stopping; the plugin as it is now", body = PluginInfo),
        (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict)))]
pub async fn stop(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    state.backend.stop(&id).await?;
    after_action(&state, &id).await
}

#[utoipa::path(post, path = "/api/plugins/{id}/restart", tag = "lifecycle", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    responses((status = 202, description = "Restarting; the plugin as it is now. Locally, replicas are replaced one at a time, each old one only after its replacement is ready", body = PluginInfo),
        (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict)))]
pub async fn restart(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    state.backend.restart(&id).await?;
    after_action(&state, &id).await
}

fn body_or_problem(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| ApiError::Body {
        status: rejection.status(),
        detail: rejection.body_text(),
    })
}

#[utoipa::path(post, path = "/api/plugins/{id}/config", tag = "lifecycle", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    request_body(content = Object, description = "The new plugin config (replaces spec.config). Replicas are replaced one at a time, each old one only after its replacement is ready, so calls keep being answered"),
    responses((status = 200, description = "The plugin with its new config. Locally: answered once the new config serves on every replica (or after 60 s with the roll still going on). A 409 says the plugin did not start with it: the detail carries its error, and the previous config keeps serving", body = PluginInfo),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict), (status = 413, response = crate::openapi::TooLarge)))]
pub async fn set_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_or_problem(body)?;
    let view = find(&state, &id).await?;
    let config: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the request body is not valid JSON: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::BadRequest(
            "the plugin config must be a JSON object".into(),
        ));
    }
    // The schema its implementation publishes, checked here for both backends, so a config
    // the plugin would refuse starts nothing.
    let errors = bkg_core::plugin_config::validate(&view.plugin.spec.implementation, Some(&config));
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    state.backend.set_config(&id, config).await?;
    let view = find(&state, &id).await?;
    Ok(Json(info(&state, &view).await).into_response())
}

#[utoipa::path(get, path = "/api/plugins/{id}/telemetry", tag = "plugins", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    responses((status = 200, description = "Resource use summed over the plugin's replicas", body = Telemetry),
        (status = 404, response = crate::openapi::NotFound)))]
pub async fn telemetry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Telemetry>> {
    let view = find(&state, &id).await?;
    Ok(Json(crate::telemetry::aggregate(&state, &view).await))
}

#[utoipa::path(get, path = "/api/plugins/{id}/telemetry/history", tag = "plugins", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    responses((status = 200, description = "The plugin's samples of the last 10 minutes (one per sampling interval, BKG_TELEMETRY_INTERVAL_MS) and its recent events: starts, stops, crashes, scale and config changes", body = TelemetryHistory),
        (status = 404, response = crate::openapi::NotFound)))]
pub async fn telemetry_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TelemetryHistory>> {
    let view = find(&state, &id).await?;
    let logs = state.backend.logs(&id, 1000).await.unwrap_or_default();
    let scale = bkg_core::wire::plugin_info(&view.plugin, Some(&[]), Vec::new()).scale_history;
    Ok(Json(state.history.of(&id, &logs, &scale)))
}

#[utoipa::path(get, path = "/api/overview", tag = "plugins",
    responses((status = 200, description = "Every plugin together over the last 10 minutes (request rate, p50/p99 latency, error rate, resource use) and each plugin's request rate and CPU for sparklines", body = Overview)))]
pub async fn overview(State(state): State<AppState>) -> Json<Overview> {
    Json(state.history.overview())
}

#[utoipa::path(get, path = "/api/whoami", tag = "auth",
    responses((status = 200, description = "The calling key's id and scopes", body = Object,
        example = json!({"key_id": "ci", "scopes": ["read", "invoke:echo"]}))))]
pub async fn whoami(Extension(who): Extension<Arc<Principal>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"key_id": who.key_id, "scopes": who.scope_names()}))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    lines: Option<String>,
}

#[utoipa::path(get, path = "/api/plugins/{id}/logs", tag = "plugins",
    params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo"), ("lines" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Newest lines to return (default 100)")),
    responses((status = 200, description = "The newest log lines of every replica", body = Logs),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<Logs>> {
    let lines = match q.lines.as_deref() {
        None => 100,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "lines must be an integer from 1 to 10000, got {n:?}"
                ))
            })?,
    };
    let lines = state.backend.logs(&id, lines).await?;
    Ok(Json(Logs {
        plugin_id: id,
        lines,
    }))
}

#[utoipa::path(post, path = "/api/plugins/{id}/invoke", tag = "invoke", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo"),
        ("capability" = Option<String>, Query, description = "The capability, for an image or multipart body (a JSON body names it inside)", example = "face.detect")),
    request_body(description = "The capability and its payload, validated against the capability's input schema. \
        A capability whose input schema has a property with `contentEncoding: base64` and a `contentMediaType` (RustyFace's `image`: `image/*`) \
        also takes the file itself: as the raw body with that Content-Type, or as a multipart/form-data form whose file part becomes that \
        property (base64) and whose other fields become the payload's options, typed by the schema. Either way the capability comes from \
        ?capability= (or the form's `capability` field). A media type no property declares is a 415, a form without a file part a 400",
        content((InvokeRequest = "application/json", example = json!({"capability": "echo", "payload": {"text": "hello"}})),
            (inline(crate::openapi::MultipartInvoke) = "multipart/form-data"),
            ("image/*"), ("application/octet-stream"))),
    responses((status = 200, description = "The capability's output (any JSON)", body = serde_json::Value),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::PluginRefused),
        (status = 429, response = crate::openapi::RateLimited),
        (status = 500, response = crate::openapi::PluginFailed), (status = 502, response = crate::openapi::BadGateway),
        (status = 503, response = crate::openapi::Unavailable), (status = 504, response = crate::openapi::Timeout)))]
/// The OpenAPI entry of the invoke route, which [`crate::invoke::serve`] answers in front of the
/// router (so this function is never routed).
#[allow(dead_code)]
pub fn invoke() {}

#[utoipa::path(post, path = "/api/plugins/{id}/invoke/stream", tag = "invoke", params(("id" = String, Path, description = "Plugin id (metadata.name) or alias", example = "llm")),
    request_body(content = InvokeRequest, description = "A streaming capability and its payload, validated against the capability's input schema",
        example = json!({"capability": "chat", "payload": {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}})),
    responses((status = 200, description = "The capability's values, one JSON document per line (NDJSON), each relayed as the plugin yields it. For generation: `{\"text\"}` lines, then `{\"finish_reason\", \"usage\", \"model\"}`. An error after the stream started is the last line, `{\"error\": <problem>}`",
            content_type = "application/x-ndjson", body = String),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 422, response = crate::openapi::PluginRefused),
        (status = 429, response = crate::openapi::RateLimited),
        (status = 500, response = crate::openapi::PluginFailed), (status = 502, response = crate::openapi::BadGateway),
        (status = 503, response = crate::openapi::Unavailable), (status = 504, response = crate::openapi::Timeout)))]
/// The OpenAPI entry of the streamed invoke route, answered in front of the router like
/// [`invoke`].
#[allow(dead_code)]
pub fn invoke_stream() {}
