//! bkg-gateway: the REST API in front of every plugin.
//!
//! The gateway never runs plugins itself. It talks to them through one [`backend::Backend`]
//! (local child processes or Kubernetes pods) and to their runtimes over the plugin protocol.

#![forbid(unsafe_code)]

pub mod aliases;
mod api;
pub mod auth;
pub mod backend;
pub mod conn;
mod front;
pub mod history;
mod invoke;
pub mod keys;
mod logbudget;
mod metrics;
pub mod openai;
pub mod openapi;
mod problem;
pub mod ratelimit;
pub mod scale;
mod telemetry;
pub mod tokens;
pub mod upstream;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{any, delete, get, post};
use prometheus_client::registry::Registry;

pub use backend::{Backend, BackendError, PluginView};
pub use front::Gateway;
pub use problem::ApiError;

/// The hash map of the invoke path's caches (metrics handles, validators, rate-limit buckets,
/// idle connections). Their keys are plugin, capability and key ids and runtime addresses the
/// gateway already knows, never raw client input, so a fast non-cryptographic hash is safe;
/// SipHash was 4 % of the gateway's instructions per invoke.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Header carrying the request id on every request and response.
pub use bkg_core::wire::REQUEST_ID;

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
    /// Build OpenTelemetry spans for each invoke (request, invoke, forward): on when spans are
    /// exported. Off, the invoke path continues and passes on W3C trace ids without spans.
    pub invoke_spans: bool,
    /// Client connection limits: cap, header-read timeout, drain grace.
    pub connections: conn::Limits,
    /// How often the gateway samples every plugin's telemetry into its 10-minute history.
    pub telemetry_interval: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 43119)),
            max_body_bytes: 2 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            ui_dir: None,
            default_rate_limit: None,
            invoke_spans: false,
            connections: conn::Limits::default(),
            telemetry_interval: std::time::Duration::from_secs(5),
        }
    }
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
    /// For invokes (every call): keep-alive connections driven by the calling task.
    pub upstream: upstream::Upstream,
    pub validators: invoke::Validators,
    pub runtime_caps: invoke::RuntimeCapabilities,
    pub round_robin: AtomicUsize,
    /// Which plugin of an alias the next call goes to (smooth weighted round robin).
    pub alias_picker: aliases::Picker,
    pub rate_limiter: ratelimit::RateLimiter,
    /// Tokens used per key, and their tokens-per-minute limits.
    pub tokens: tokens::Ledger,
    pub registry: Registry,
    pub metrics: metrics::Metrics,
    /// The open client connections.
    pub(crate) connections: Arc<conn::Connections>,
    /// How many failed invokes get a log line of their own.
    pub(crate) failure_logs: logbudget::LogBudget,
    /// Replica decisions and invokes held at zero replicas (`scale`).
    pub autoscaler: scale::Autoscaler,
    /// CPU time of local replica processes at the previous autoscaler round.
    pub(crate) cpu_samples: scale::CpuSamples,
    /// The last 10 minutes of every plugin (`history`).
    pub history: history::History,
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
        let cap = config
            .connections
            .max_connections
            .unwrap_or_else(|| conn::cap_for_fd_limit(conn::fd_limit()));
        let connections = Arc::new(conn::Connections::new(
            cap,
            metrics.connections_open.clone(),
            metrics.connections_evicted.clone(),
        ));
        let history = history::History::new(config.telemetry_interval);
        Self(Arc::new(Inner {
            history,
            config,
            rate_limiter,
            tokens: Default::default(),
            backend,
            keys,
            http,
            upstream: Default::default(),
            validators: Default::default(),
            runtime_caps: Default::default(),
            round_robin: AtomicUsize::new(0),
            alias_picker: Default::default(),
            registry,
            metrics,
            connections,
            failure_logs: logbudget::LogBudget::default(),
            autoscaler: Default::default(),
            cpu_samples: Default::default(),
        }))
    }
}

/// The gateway's routes: invokes served directly, the rest through the axum router.
pub fn router(state: AppState) -> Gateway {
    Gateway::new(state.clone(), routes(state))
}

/// The routes other than `POST /api/plugins/{id}/invoke[/stream]` and `/v1`.
fn routes(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    // Everything under /api and /ws needs a key; the middleware runs only on matched routes.
    let protected = Router::new()
        .route("/api/whoami", get(api::whoami))
        .route("/api/keys", get(keys::list).post(keys::create))
        .route("/api/keys/{id}", delete(keys::revoke))
        .route("/api/plugins", get(api::list))
        .route("/api/aliases", get(api::aliases))
        .route("/api/plugins/{id}", get(api::get_one))
        .route("/api/plugins/{id}/start", post(api::start))
        .route("/api/plugins/{id}/stop", post(api::stop))
        .route("/api/plugins/{id}/restart", post(api::restart))
        .route("/api/plugins/{id}/config", post(api::set_config))
        .route("/api/plugins/{id}/telemetry", get(api::telemetry))
        .route(
            "/api/plugins/{id}/telemetry/history",
            get(api::telemetry_history),
        )
        .route("/api/overview", get(api::overview))
        .route("/api/plugins/{id}/logs", get(api::logs))
        .route("/ws/plugins", get(ws::all))
        .route("/ws/plugins/{id}", get(ws::one))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            front::authorize,
        ));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/api/openapi.json", get(api::openapi))
        // POST never gets here (see `Gateway`).
        .route("/api/plugins/{id}/invoke", any(invoke::method_not_allowed))
        .route(
            "/api/plugins/{id}/invoke/stream",
            any(invoke::method_not_allowed),
        )
        .merge(protected)
        .fallback(front::fallback)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(front::stamp_request_id))
        .with_state(state)
}

/// The metrics listener's routes: `/metrics` and nothing else. It is not on the gateway's own
/// port, where anyone who can reach the API could read the key ids and plugin names it lists;
/// a NetworkPolicy admits only the scraper to this one (as the runtimes' metrics port).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics))
        .with_state(state)
}

/// Serves [`metrics_router`] on its own listener until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the gateway until `shutdown` resolves. The key file is re-read when it changes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let keys = state.keys.clone();
    let housekeeping = state.clone();
    let housekeeping_state = state.clone();
    let reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        for round in 0u64.. {
            tick.tick().await;
            housekeeping
                .failure_logs
                .log_left_out(std::time::Instant::now());
            if round % 30 == 29 {
                housekeeping.rate_limiter.sweep();
                housekeeping.upstream.sweep();
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
    let _sampler = AbortOnDrop(telemetry::spawn_sampler(housekeeping_state.clone()));
    let _autoscaler = AbortOnDrop(scale::spawn(housekeeping_state));
    front::serve_connections(listener, router(state), shutdown).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
