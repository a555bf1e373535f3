//! bkg-gateway: the REST API in front of every plugin.
//!
//! The gateway never runs plugins itself. It talks to them through one [`backend::Backend`]
//! (local child processes or Kubernetes pods) and to their runtimes over the plugin protocol.

#![forbid(unsafe_code)]

mod api;
pub mod auth;
pub mod backend;
mod invoke;
mod metrics;
pub mod openapi;
mod problem;
pub mod ratelimit;
mod telemetry;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bkg_core::wire::{PROBLEM_JSON, Problem};
use prometheus_client::registry::Registry;
use tracing::Instrument;

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
    /// Built admin UI to serve at `/` (SPA: unknown paths get its index.html).
    pub ui_dir: Option<PathBuf>,
    /// Rate limit per API key and capability for plugins that set none; `None`: unlimited.
    pub default_rate_limit: Option<bkg_core::RateLimit>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 43119)),
            max_body_bytes: 2 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            ui_dir: None,
            default_rate_limit: None,
        }
    }
}

/// The pooled HTTP/1.1 client the invoke path forwards with.
pub type Upstream = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

fn upstream_client() -> Upstream {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Shared state of the gateway.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub backend: Arc<dyn Backend>,
    pub keys: Arc<auth::KeyStore>,
    /// For the runtimes' info and telemetry (few calls).
    pub http: reqwest::Client,
    /// For invokes (every call): a bare hyper client, without reqwest's URL parsing, redirect
    /// policy and extra layers on the hot path.
    pub upstream: Upstream,
    pub validators: invoke::Validators,
    pub runtime_caps: invoke::RuntimeCapabilities,
    pub round_robin: AtomicUsize,
    pub rate_limiter: ratelimit::RateLimiter,
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
    pub fn new(config: Config, backend: Arc<dyn Backend>, keys: Arc<auth::KeyStore>) -> Self {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        let rate_limiter = ratelimit::RateLimiter::new(config.default_rate_limit);
        Self(Arc::new(Inner {
            config,
            rate_limiter,
            backend,
            keys,
            http,
            upstream: upstream_client(),
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
    // Everything under /api and /ws needs a key; the middleware runs only on matched routes.
    let protected = Router::new()
        .route("/api/whoami", get(api::whoami))
        .route("/api/plugins", get(api::list))
        .route("/api/plugins/{id}", get(api::get_one))
        .route("/api/plugins/{id}/start", post(api::start))
        .route("/api/plugins/{id}/stop", post(api::stop))
        .route("/api/plugins/{id}/restart", post(api::restart))
        .route("/api/plugins/{id}/config", post(api::set_config))
        .route("/api/plugins/{id}/telemetry", get(api::telemetry))
        .route("/api/plugins/{id}/logs", get(api::logs))
        .route("/api/plugins/{id}/invoke", post(api::invoke))
        .route("/ws/plugins", get(ws::all))
        .route("/ws/plugins/{id}", get(ws::one))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/openapi.json", get(api::openapi))
        .merge(protected)
        .fallback(fallback)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Unknown `/api` and `/ws` paths are problems; anything else is the admin UI (when built).
async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    let ui = state
        .config
        .ui_dir
        .as_ref()
        .filter(|_| !(path.starts_with("/api/") || path == "/api" || path.starts_with("/ws/")));
    match ui {
        Some(dir) => {
            let index = dir.join("index.html");
            let serve = tower_http::services::ServeDir::new(dir)
                .fallback(tower_http::services::ServeFile::new(index));
            match tower::ServiceExt::oneshot(serve, req).await {
                Ok(response) => response.map(axum::body::Body::new),
                Err(e) => ApiError::Internal(e.to_string()).into_response(),
            }
        }
        None => ApiError::NotFound(path.to_owned()).into_response(),
    }
}

/// Authenticates the bearer key (header, or WebSocket subprotocol for browsers) and checks the
/// scope the route needs. The key itself is never logged or stored.
async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let from_protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(ws::BEARER_PREFIX))
        });
    let Some(token) = from_header.or(from_protocol).filter(|t| !t.is_empty()) else {
        return ApiError::Unauthorized(
            "an API key is required: send Authorization: Bearer <key>".into(),
        )
        .into_response();
    };
    let Some(who) = state.keys.authenticate(token) else {
        return ApiError::Unauthorized("the API key is not valid".into()).into_response();
    };
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allowed = match (req.method().as_str(), segments.as_slice()) {
        (_, ["api", "whoami"]) => true,
        ("POST", ["api", "plugins", id, "invoke"]) => who.can_invoke(id, None),
        ("POST", _) => who.is_admin(),
        _ => who.can_read(),
    };
    if !allowed {
        return ApiError::Forbidden(format!(
            "key {:?} lacks the scope for {} {path}",
            who.key_id,
            req.method()
        ))
        .into_response();
    }
    state.metrics.observe_key(&who.key_id);
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The request id of the current request (from `x-request-id` or generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Gives every request an id and a server span (continuing the caller's W3C trace when it sent
/// `traceparent`), returns the id on every response, and stamps it into problem bodies.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {}", req.method(), route(req.uri().path())),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
        trace_id = tracing::field::Empty,
    );
    bkg_trace::continue_from(&span, req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let content_type = response.headers().get(header::CONTENT_TYPE);
    let is_problem = content_type.is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let is_plain_error = (response.status().is_client_error()
        || response.status().is_server_error())
        && content_type.is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if is_plain_error {
        // An extractor's rejection (a bad query string, a path that is not UTF-8): axum answers
        // those in text/plain; our clients get one error shape.
        response = problem_from_text(response).await;
    }
    if is_problem || is_plain_error {
        response = stamp_problem(response, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// The route template of a path, for span names: ids would make every name unique.
fn route(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => "/healthz",
        ["metrics"] => "/metrics",
        ["api", "whoami"] => "/api/whoami",
        ["api", "openapi.json"] => "/api/openapi.json",
        ["api", "plugins"] => "/api/plugins",
        ["api", "plugins", _] => "/api/plugins/{id}",
        ["api", "plugins", _, action] => match *action {
            "start" => "/api/plugins/{id}/start",
            "stop" => "/api/plugins/{id}/stop",
            "restart" => "/api/plugins/{id}/restart",
            "config" => "/api/plugins/{id}/config",
            "telemetry" => "/api/plugins/{id}/telemetry",
            "logs" => "/api/plugins/{id}/logs",
            "invoke" => "/api/plugins/{id}/invoke",
            _ => "/api/*",
        },
        ["ws", "plugins"] => "/ws/plugins",
        ["ws", "plugins", _] => "/ws/plugins/{id}",
        ["api", ..] => "/api/*",
        _ => "/*",
    }
}

async fn problem_from_text(response: Response) -> Response {
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    ApiError::Rejected {
        status,
        detail: text,
    }
    .into_response()
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

/// Serves the gateway until `shutdown` resolves. The key file is re-read when it changes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let keys = state.keys.clone();
    let housekeeping = state.clone();
    let reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        for round in 0u64.. {
            tick.tick().await;
            if round % 30 == 29 {
                housekeeping.rate_limiter.sweep();
            }
            match keys.reload_if_changed() {
                Ok(true) => tracing::info!(keys = keys.len(), "API keys reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "API keys not reloaded; keeping the previous ones")
                }
            }
        }
    });
    let _reloader = AbortOnDrop(reloader);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
