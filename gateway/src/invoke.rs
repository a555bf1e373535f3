//! The path of one invoke through the gateway.
//!
//! ```text
//!  body ─▶ parse InvokeRequest ─▶ find plugin ─▶ find capability ─▶ validate payload
//!       ─▶ pick a ready instance (round robin) ─▶ POST /v1/invoke/{cap} ─▶ relay answer
//! ```
//! A call that never reached a runtime (connection refused) is retried once on another ready
//! instance; one that did reach it is never retried, since the plugin may have acted on it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::Phase;
use bkg_core::wire::{Capability, FieldError, InvokeRequest, PROBLEM_JSON, RuntimeInfo};
use tracing::Instrument;

use crate::AppState;
use crate::backend::PluginView;
use crate::problem::ApiError;

/// Compiled input-schema validators, keyed by plugin, capability and spec generation.
#[derive(Default)]
pub struct Validators {
    cache: Mutex<HashMap<(String, String, u64), Arc<jsonschema::Validator>>>,
}

impl Validators {
    fn get(
        &self,
        view: &PluginView,
        capability: &Capability,
    ) -> Result<Arc<jsonschema::Validator>, ApiError> {
        let key = (
            view.plugin.id().to_owned(),
            capability.id.clone(),
            view.generation,
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache.get(&key) {
            return Ok(v.clone());
        }
        let validator = jsonschema::validator_for(&capability.input_schema).map_err(|e| {
            ApiError::Internal(format!(
                "the input schema of capability {:?} is not a valid JSON Schema: {e}",
                capability.id
            ))
        })?;
        // Old generations of this plugin are dead weight.
        cache.retain(|(p, _, g), _| !(p == &key.0 && *g != key.2));
        let validator = Arc::new(validator);
        cache.insert(key, validator.clone());
        Ok(validator)
    }
}

/// Capabilities reported by runtimes, for plugins whose manifest declares none.
#[derive(Default)]
pub struct RuntimeCapabilities {
    cache: Mutex<HashMap<(String, u64), Vec<Capability>>>,
}

impl RuntimeCapabilities {
    pub fn cached(&self, view: &PluginView) -> Option<Vec<Capability>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&(view.plugin.id().to_owned(), view.generation))
            .cloned()
    }

    /// Asks a ready instance for its capabilities when the manifest declares none.
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        view: &PluginView,
    ) -> Option<Vec<Capability>> {
        if let Some(caps) = self.cached(view) {
            return Some(caps);
        }
        let endpoint = view.ready_endpoints().first().map(|e| e.to_string())?;
        let info: RuntimeInfo = http
            .get(format!("{endpoint}/v1/info"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            (view.plugin.id().to_owned(), view.generation),
            info.capabilities.clone(),
        );
        Some(info.capabilities)
    }
}

/// The capabilities clients see: the manifest's, or the runtime's when it declares none.
pub async fn capabilities(state: &AppState, view: &PluginView) -> Vec<Capability> {
    if !view.plugin.spec.capabilities.is_empty() {
        return view
            .plugin
            .spec
            .capabilities
            .iter()
            .map(Capability::from)
            .collect();
    }
    state
        .runtime_caps
        .fetch(&state.http, view)
        .await
        .unwrap_or_default()
}

/// Parses the body of an invoke call.
pub fn parse_request(body: &Bytes) -> Result<InvokeRequest, ApiError> {
    serde_json::from_slice::<InvokeRequest>(body).map_err(|e| {
        if e.is_data() {
            ApiError::BadRequest(format!("invalid invoke request: {e}"))
        } else {
            ApiError::MalformedJson(format!("the request body is not valid JSON: {e}"))
        }
    })
}

/// Validates the payload against the capability's input schema.
pub fn validate(
    state: &AppState,
    view: &PluginView,
    capability: &Capability,
    payload: &serde_json::Value,
) -> Result<(), ApiError> {
    let validator = state.validators.get(view, capability)?;
    let errors: Vec<FieldError> = validator
        .iter_errors(payload)
        .take(20)
        .map(|e| FieldError {
            field: {
                let p = e.instance_path().as_str().to_owned();
                if p.is_empty() { "/".to_owned() } else { p }
            },
            message: e.to_string(),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidPayload {
            capability: capability.id.clone(),
            errors,
        })
    }
}

/// Sends the payload to a ready instance and relays its answer.
pub async fn forward(
    state: &AppState,
    view: &PluginView,
    capability: &str,
    payload: &serde_json::Value,
    request_id: &str,
) -> Result<Response, ApiError> {
    let id = view.plugin.id();
    let endpoints = view.ready_endpoints();
    if endpoints.is_empty() {
        let phase = view
            .plugin
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Starting);
        let detail = match phase {
            Phase::Stopped | Phase::Stopping => format!("plugin {id:?} is {phase}; start it first"),
            Phase::Error => format!(
                "plugin {id:?} is in phase error: {}",
                view.plugin
                    .status
                    .as_ref()
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_default()
            ),
            _ => format!("plugin {id:?} has no ready instance yet"),
        };
        return Err(ApiError::Unavailable {
            detail,
            retry_after: Some(1),
        });
    }
    let body = serde_json::to_vec(payload).map_err(|e| ApiError::Internal(e.to_string()))?;
    let timeout = Duration::from_secs(u64::from(view.plugin.spec.resources.timeout_seconds));
    let start = state.round_robin.fetch_add(1, Ordering::Relaxed);
    // At most two attempts, each on a different instance.
    let attempts = endpoints.len().min(2);
    let mut last_error = String::new();
    for attempt in 0..attempts {
        let endpoint = endpoints[(start + attempt) % endpoints.len()];
        let span = tracing::info_span!(
            "forward",
            otel.name = %format!("POST /v1/invoke/{capability}"),
            otel.kind = "client",
            server.address = %endpoint,
            attempt,
        );
        let mut headers = HeaderMap::new();
        bkg_trace::inject(&span, &mut headers);
        let sent = state
            .http
            .post(format!("{endpoint}/v1/invoke/{capability}"))
            .headers(headers)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", request_id)
            // The runtime answers 504 itself at the timeout; this margin only catches a hung one.
            .timeout(timeout + Duration::from_secs(2))
            .body(body.clone())
            .send()
            .instrument(span)
            .await;
        match sent {
            Ok(response) => return relay(state, response).await,
            Err(e) if e.is_connect() => {
                tracing::warn!(plugin = id, endpoint, error = %e, "instance unreachable; trying another");
                last_error = e.to_string();
            }
            Err(e) if e.is_timeout() => {
                return Err(ApiError::Timeout {
                    plugin: id.to_owned(),
                    secs: timeout.as_secs(),
                });
            }
            Err(e) => {
                return Err(ApiError::BadGateway(format!(
                    "plugin {id:?} failed to answer: {e}"
                )));
            }
        }
    }
    Err(ApiError::Unavailable {
        detail: format!("no instance of plugin {id:?} could be reached: {last_error}"),
        retry_after: Some(1),
    })
}

async fn relay(state: &AppState, response: reqwest::Response) -> Result<Response, ApiError> {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    if response
        .content_length()
        .is_some_and(|n| n > state.config.max_response_bytes as u64)
    {
        return Err(ApiError::BadGateway(format!(
            "the plugin's answer is larger than {} bytes",
            state.config.max_response_bytes
        )));
    }
    let mut body = Vec::new();
    let mut response = response;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > state.config.max_response_bytes {
                    return Err(ApiError::BadGateway(format!(
                        "the plugin's answer is larger than {} bytes",
                        state.config.max_response_bytes
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::BadGateway(format!(
                    "reading the plugin's answer failed: {e}"
                )));
            }
        }
    }
    let content_type = if is_problem {
        PROBLEM_JSON
    } else {
        "application/json"
    };
    let mut out = (status, body).into_response();
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Ok(out)
}
