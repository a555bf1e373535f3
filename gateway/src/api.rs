//! REST handlers: `/api/plugins/...`, `/healthz`, `/metrics`.

use std::borrow::Cow;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::Phase;
use bkg_core::wire::{InvokeRequest, Logs, PluginInfo, Telemetry};
use serde::Deserialize;
#[allow(unused_imports)]
use serde_json::json;
use tracing::Instrument;

use crate::auth::Principal;
use crate::backend::PluginView;
use crate::invoke;
use crate::metrics::{CapabilityLabels, PluginLabels, RequestLabels};
use crate::problem::ApiError;
use crate::{AppState, RequestId};

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

#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus metrics: OpenMetrics when the Accept header asks for it, else text format 0.0.4",
        content((String = "text/plain"), (String = "application/openmetrics-text")))))]
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
    PluginInfo::from_plugin(&view.plugin, caps.as_deref(), view.instances.clone())
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
    responses((status = 202, description = "Restarting; the plugin as it is now", body = PluginInfo),
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
    request_body(content = Object, description = "The new plugin config (replaces spec.config; replicas restart with it)"),
    responses((status = 200, description = "The plugin with its new config", body = PluginInfo),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict), (status = 413, response = crate::openapi::TooLarge)))]
pub async fn set_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_or_problem(body)?;
    find(&state, &id).await?;
    let config: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the request body is not valid JSON: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::BadRequest(
            "the plugin config must be a JSON object".into(),
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

#[utoipa::path(get, path = "/api/whoami", tag = "auth",
    responses((status = 200, description = "The calling key's id and scopes", body = Object,
        example = json!({"key_id": "ci", "scopes": ["read", "invoke:echo"]}))))]
pub async fn whoami(Extension(who): Extension<Principal>) -> Json<serde_json::Value> {
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

#[utoipa::path(post, path = "/api/plugins/{id}/invoke", tag = "invoke", params(("id" = String, Path, description = "Plugin id (metadata.name)", example = "echo")),
    request_body(content = InvokeRequest, description = "The capability and its payload, validated against the capability's input schema",
        example = json!({"capability": "echo", "payload": {"text": "hello"}})),
    responses((status = 200, description = "The capability's output (any JSON)", body = serde_json::Value),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 422, response = crate::openapi::PluginRefused),
        (status = 429, response = crate::openapi::RateLimited),
        (status = 500, response = crate::openapi::PluginFailed), (status = 502, response = crate::openapi::BadGateway),
        (status = 503, response = crate::openapi::Unavailable), (status = 504, response = crate::openapi::Timeout)))]
pub async fn invoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let in_flight = state
        .metrics
        .in_flight
        .get_or_create(&PluginLabels { plugin: id.clone() })
        .clone();
    in_flight.inc();
    let span = tracing::info_span!(
        "invoke",
        plugin = %id,
        capability = tracing::field::Empty,
        key_id = %who.key_id,
    );
    let (capability_label, result) = invoke_inner(&state, &id, &request_id.0, &who, body)
        .instrument(span.clone())
        .await;
    in_flight.dec();
    if let Some(capability) = &capability_label {
        span.record("capability", capability.as_str());
    }
    let response = match result {
        Ok(response) => {
            if response.status().is_server_error() {
                span.in_scope(|| {
                    tracing::warn!(
                        status = response.status().as_u16(),
                        "plugin answered an error"
                    )
                });
            }
            response
        }
        Err(error) => {
            span.in_scope(|| log_refusal(&error));
            error.into_response()
        }
    };
    // Labels only for known plugins and capabilities, so scanners cannot explode series.
    let plugin_label = if capability_label.is_some() {
        id
    } else {
        "_unknown".to_owned()
    };
    let capability_label = capability_label.unwrap_or_else(|| "_unknown".to_owned());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            plugin: plugin_label.clone(),
            capability: capability_label.clone(),
            code: response.status().as_u16().to_string(),
        })
        .inc();
    state
        .metrics
        .duration
        .get_or_create(&CapabilityLabels {
            plugin: plugin_label,
            capability: capability_label,
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Refusals are logged (inside the invoke span: plugin, capability, request and trace id);
/// client mistakes at debug, the gateway's or a plugin's failures at warn.
fn log_refusal(error: &ApiError) {
    let status = error.status().as_u16();
    if status >= 500 {
        tracing::warn!(status, error = %error, "invoke failed");
    } else {
        tracing::debug!(status, error = %error, "invoke refused");
    }
}

/// Returns the capability label (when the plugin and capability are known) and the answer.
async fn invoke_inner(
    state: &AppState,
    id: &str,
    request_id: &str,
    who: &Principal,
    body: Result<Bytes, BytesRejection>,
) -> (Option<String>, ApiResult<Response>) {
    let Some(route) = state.backend.route(id).await else {
        return (None, Err(ApiError::UnknownPlugin(id.to_owned())));
    };
    let known = Some("_unknown".to_owned());
    let body = match body_or_problem(body) {
        Ok(b) => b,
        Err(e) => return (known, Err(e)),
    };
    let request = match invoke::parse_request(&body) {
        Ok(r) => r,
        Err(e) => return (known, Err(e)),
    };
    if !who.can_invoke(id, Some(&request.capability)) {
        return (
            known,
            Err(ApiError::Forbidden(format!(
                "key {:?} may not invoke {}/{}",
                who.key_id, id, request.capability
            ))),
        );
    }
    let declared = &route.plugin.spec.capabilities;
    let unknown_capability = || ApiError::UnknownCapability {
        plugin: id.to_owned(),
        capability: request.capability.clone(),
    };
    // The capability and its input schema: from the manifest (borrowed), or, when the manifest
    // declares none, as the runtime reports them.
    let (capability, schema): (String, Cow<'_, serde_json::Value>) = if declared.is_empty() {
        let view = match find(state, id).await {
            Ok(v) => v,
            Err(e) => return (known, Err(e)),
        };
        let caps = invoke::capabilities(state, &view).await;
        match caps.into_iter().find(|c| c.id == request.capability) {
            Some(c) => (c.id, Cow::Owned(c.input_schema)),
            // A plugin that is not running cannot report capabilities its manifest leaves out.
            None if route.endpoints.is_empty() => {
                return (known, Err(invoke::unavailable(state, id).await));
            }
            None => {
                return (known, Err(unknown_capability()));
            }
        }
    } else {
        match declared.iter().find(|c| c.id == request.capability) {
            Some(c) => (
                c.id.clone(),
                c.input_schema
                    .as_ref()
                    .map_or(Cow::Owned(serde_json::Value::Bool(true)), Cow::Borrowed),
            ),
            None => {
                return (known, Err(unknown_capability()));
            }
        }
    };
    let label = Some(capability.clone());
    if let Err(exceeded) = state
        .rate_limiter
        .check(&route.plugin, &capability, &who.key_id)
    {
        state
            .metrics
            .rate_limited
            .get_or_create(&CapabilityLabels {
                plugin: id.to_owned(),
                capability: capability.clone(),
            })
            .inc();
        let limit = exceeded.limit;
        return (
            label,
            Err(ApiError::RateLimited {
                detail: format!(
                    "key {:?} may call {id}/{capability} {} times per second (burst {}); retry in {}s",
                    who.key_id,
                    limit.requests_per_second,
                    limit.burst(),
                    exceeded.retry_after_secs()
                ),
                retry_after: exceeded.retry_after_secs(),
            }),
        );
    }
    if let Err(e) = invoke::validate(
        state,
        id,
        route.generation,
        &capability,
        &schema,
        &request.payload,
    ) {
        return (label, Err(e));
    }
    let result = invoke::forward(state, &route, &capability, &request.payload, request_id).await;
    (label, result)
}
