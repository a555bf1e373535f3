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
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bkg_core::Phase;
use bkg_core::wire::{Capability, FieldError, InvokeRequest, PROBLEM_JSON, RuntimeInfo};
use tracing::Instrument;

use crate::AppState;
use crate::backend::{PluginView, Route};
use crate::problem::ApiError;

/// Compiled input-schema validators: plugin id → (spec generation, capability id → validator).
/// Looked up by `&str` on every invoke, so the hot path allocates nothing here.
#[derive(Default)]
pub struct Validators {
    cache: Mutex<HashMap<String, PluginValidators>>,
}

/// One plugin's validators: the spec generation they were compiled for, by capability id.
type PluginValidators = (u64, HashMap<String, Arc<jsonschema::Validator>>);

impl Validators {
    fn get(
        &self,
        plugin: &str,
        generation: u64,
        capability: &str,
        schema: &serde_json::Value,
    ) -> Result<Arc<jsonschema::Validator>, ApiError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, validators)) = cache.get(plugin)
            && *g == generation
            && let Some(v) = validators.get(capability)
        {
            return Ok(v.clone());
        }
        let validator = Arc::new(jsonschema::validator_for(schema).map_err(|e| {
            ApiError::Internal(format!(
                "the input schema of capability {capability:?} is not a valid JSON Schema: {e}"
            ))
        })?);
        let entry = cache
            .entry(plugin.to_owned())
            .or_insert_with(|| (generation, HashMap::new()));
        if entry.0 != generation {
            // Validators of an older spec are dead weight.
            *entry = (generation, HashMap::new());
        }
        entry.1.insert(capability.to_owned(), validator.clone());
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
    plugin: &str,
    generation: u64,
    capability: &str,
    schema: &serde_json::Value,
    payload: &serde_json::Value,
) -> Result<(), ApiError> {
    if schema == &serde_json::Value::Bool(true) {
        return Ok(());
    }
    let validator = state
        .validators
        .get(plugin, generation, capability, schema)?;
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
            capability: capability.to_owned(),
            errors,
        })
    }
}

/// Why a plugin has no ready instance, as a 503.
pub async fn unavailable(state: &AppState, id: &str) -> ApiError {
    let Some(view) = state.backend.get(id).await else {
        return ApiError::UnknownPlugin(id.to_owned());
    };
    let status = view.plugin.status.as_ref();
    let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Starting);
    let detail = match phase {
        Phase::Stopped | Phase::Stopping => format!("plugin {id:?} is {phase}; start it first"),
        Phase::Error => format!(
            "plugin {id:?} is in phase error: {}",
            status
                .and_then(|s| s.last_error.clone())
                .unwrap_or_default()
        ),
        _ => format!("plugin {id:?} has no ready instance yet"),
    };
    ApiError::Unavailable {
        detail,
        retry_after: Some(1),
    }
}

/// Sends the payload to a ready instance and relays its answer.
pub async fn forward(
    state: &AppState,
    route: &Route,
    capability: &str,
    payload: &serde_json::Value,
    request_id: &str,
) -> Result<Response, ApiError> {
    let id = route.plugin.id();
    let endpoints = &route.endpoints;
    if endpoints.is_empty() {
        return Err(unavailable(state, id).await);
    }
    let body =
        Bytes::from(serde_json::to_vec(payload).map_err(|e| ApiError::Internal(e.to_string()))?);
    let timeout = Duration::from_secs(u64::from(route.plugin.spec.resources.timeout_seconds));
    let start = state.round_robin.fetch_add(1, Ordering::Relaxed);
    // At most two attempts, each on a different instance.
    let attempts = endpoints.len().min(2);
    let mut last_error = String::new();
    for attempt in 0..attempts {
        let endpoint = endpoints[(start + attempt) % endpoints.len()].as_str();
        let span = tracing::info_span!(
            "forward",
            otel.name = %format!("POST /v1/invoke/{capability}"),
            otel.kind = "client",
            server.address = %endpoint,
            attempt,
        );
        let uri = format!("{endpoint}/v1/invoke/{capability}");
        let mut request = axum::http::Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", request_id)
            .body(http_body_util::Full::new(body.clone()))
            .map_err(|e| ApiError::Internal(format!("building the upstream request: {e}")))?;
        bkg_trace::inject(&span, request.headers_mut());
        // The runtime answers 504 itself at the timeout; this margin only catches a hung one.
        let sent = tokio::time::timeout(
            timeout + Duration::from_secs(2),
            state.upstream.request(request).instrument(span),
        )
        .await;
        match sent {
            Ok(Ok(response)) => return relay(state, response).await,
            Ok(Err(e)) if e.is_connect() => {
                tracing::warn!(plugin = id, endpoint, error = %e, "instance unreachable; trying another");
                last_error = e.to_string();
            }
            Ok(Err(e)) => {
                return Err(ApiError::BadGateway(format!(
                    "plugin {id:?} failed to answer: {}",
                    error_chain(&e)
                )));
            }
            Err(_elapsed) => {
                return Err(ApiError::Timeout {
                    plugin: id.to_owned(),
                    secs: timeout.as_secs(),
                });
            }
        }
    }
    Err(ApiError::Unavailable {
        detail: format!("no instance of plugin {id:?} could be reached: {last_error}"),
        retry_after: Some(1),
    })
}

/// An error with its sources, `a: b: c` (hyper's top-level messages alone say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn relay(
    state: &AppState,
    response: axum::http::Response<hyper::body::Incoming>,
) -> Result<Response, ApiError> {
    use http_body_util::BodyExt;
    let (parts, incoming) = response.into_parts();
    let status = parts.status;
    let is_problem = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let retry_after = parts.headers.get(header::RETRY_AFTER).cloned();
    let limit = state.config.max_response_bytes;
    let too_large =
        || ApiError::BadGateway(format!("the plugin's answer is larger than {limit} bytes"));
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = match http_body_util::Limited::new(incoming, limit)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(ApiError::BadGateway(format!(
                "reading the plugin's answer failed: {}",
                error_chain(e.as_ref())
            )));
        }
    };
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
