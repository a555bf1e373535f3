//! bkg-gateway: the REST API in front of every plugin.
//!
//! The gateway never runs plugins itself. It talks to them through one [`backend::Backend`]
//! (local child processes or Kubernetes pods) and to their runtimes over the plugin protocol.

#![forbid(unsafe_code)]

mod api;
pub mod backend;
mod invoke;
mod metrics;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bkg_core::wire::{PROBLEM_JSON, Problem};
use prometheus_client::registry::Registry;

pub use backend::{Backend, BackendError, PluginView};
pub use problem::ApiError;

/// Header carrying the request id on every request and response.
pub const REQUEST_ID: &str = "x-request-id";

/// Typed gateway configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest plugin answer relayed (502 above).
    pub max_response_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 43119)),
            max_body_bytes: 2 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Shared state of the gateway.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub backend: Arc<dyn Backend>,
    pub http: reqwest::Client,
    pub validators: invoke::Validators,
    pub runtime_caps: invoke::RuntimeCapabilities,
    pub round_robin: AtomicUsize,
    pub registry: Registry,
    pub metrics: metrics::Metrics,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, backend: Arc<dyn Backend>) -> Self {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        Self(Arc::new(Inner {
            config,
            backend,
            http,
            validators: Default::default(),
            runtime_caps: Default::default(),
            round_robin: AtomicUsize::new(0),
            registry,
            metrics,
        }))
    }
}

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/plugins", get(api::list))
        .route("/api/plugins/{id}", get(api::get_one))
        .route("/api/plugins/{id}/start", post(api::start))
        .route("/api/plugins/{id}/stop", post(api::stop))
        .route("/api/plugins/{id}/restart", post(api::restart))
        .route("/api/plugins/{id}/config", post(api::set_config))
        .route("/api/plugins/{id}/telemetry", get(api::telemetry))
        .route("/api/plugins/{id}/logs", get(api::logs))
        .route("/api/plugins/{id}/invoke", post(api::invoke))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The request id of the current request (from `x-request-id` or generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Gives every request an id, returns it on every response, and stamps it into problem bodies.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        response = stamp_problem(response, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

async fn stamp_problem(response: Response, id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return parts.status.into_response();
    };
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(mut problem) if problem.request_id.as_deref() != Some(id) => {
            problem.request_id = Some(id.to_owned());
            let bytes = serde_json::to_vec(&problem).unwrap_or_else(|_| bytes.to_vec());
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
        _ => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// Serves the gateway until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
