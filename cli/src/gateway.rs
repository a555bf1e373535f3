//! `bkg gateway --backend kubernetes`: the gateway alone, in front of plugins someone else runs
//! (`bkg operator` on a cluster). `bkg up` stays the all-in-one local stack.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bkg_gateway::backend::kubernetes::KubernetesBackend;

/// `service.name` of this command's traces unless OTEL_SERVICE_NAME says otherwise.
const SERVICE: &str = "bkg-gateway";

/// Where the plugins behind the gateway run.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BackendKind {
    /// Plugin resources on the cluster the kubeconfig (or the pod's service account) points at.
    Kubernetes,
}

#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Backend to route to (the local process backend is `bkg up`).
    #[arg(long, env = "BKG_BACKEND", value_enum, default_value_t = BackendKind::Kubernetes)]
    backend: BackendKind,
    /// Namespace of the Plugins to serve; the kubeconfig's (or the pod's) namespace when unset.
    #[arg(long, env = "BKG_NAMESPACE")]
    namespace: Option<String>,
    /// Address the gateway listens on.
    #[arg(long, env = "BKG_LISTEN", default_value = "0.0.0.0:43119")]
    listen: SocketAddr,
    /// Largest request body the gateway accepts, in bytes.
    #[arg(long, env = "BKG_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Key file with hashed, scoped API keys (a mounted Secret; reloaded when it changes).
    #[arg(long, env = "BKG_KEYS_FILE")]
    keys_file: Option<std::path::PathBuf>,
    /// Bootstrap admin key, accepted in addition to the key file.
    #[arg(long, env = "BKG_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Built admin UI to serve at `/`.
    #[arg(long, env = "BKG_UI_DIR")]
    ui_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    rate_limit: RateLimitArgs,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    history: HistoryArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Log format: `text` or `json`.
    #[arg(long, env = "BKG_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// The gateway's metrics listener (shared by `bkg gateway` and `bkg up`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MetricsArgs {
    /// Serve `/metrics` (and nothing else) on this address. The API port never serves it: it
    /// names key ids and plugins, so only what may scrape should reach it. Unset: not served.
    #[arg(long, env = "BKG_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds the metrics listener, prints its URL and serves it until `stop` turns true.
    pub async fn spawn(
        self,
        state: bkg_gateway::AppState,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
        let Some(addr) = self.metrics_listen else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        Ok(Some(tokio::spawn(bkg_gateway::serve_metrics(
            listener,
            state,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ))))
    }
}

/// The gateway's default invoke rate limit (shared by `bkg gateway` and `bkg up`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RateLimitArgs {
    /// Calls per second each API key may make to one capability when its Plugin sets no
    /// `rateLimit`; 0 turns the default off.
    #[arg(long, env = "BKG_RATE_LIMIT_RPS", default_value_t = 100)]
    rate_limit_rps: u32,
    /// Calls allowed at once under the default limit (the token bucket's size).
    #[arg(long, env = "BKG_RATE_LIMIT_BURST", default_value_t = 200)]
    rate_limit_burst: u32,
}

/// The gateway's telemetry history (shared by `bkg gateway` and `bkg up`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct HistoryArgs {
    /// Milliseconds between two samples of every plugin's telemetry in the 10-minute history
    /// (`GET /api/plugins/{id}/telemetry/history`, `GET /api/overview`).
    #[arg(long, env = "BKG_TELEMETRY_INTERVAL_MS", default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub telemetry_interval_ms: u64,
}

impl HistoryArgs {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.telemetry_interval_ms)
    }
}

/// Client connection limits (shared by `bkg gateway` and `bkg up`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ConnectionArgs {
    /// Client connections open at most; at the cap the oldest idle one is closed for a new one.
    /// Default: half the open-files limit left after a reserve of 128.
    #[arg(long, env = "BKG_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a connection may take to send a complete request head, counted from when the
    /// gateway starts waiting for one (so also the keep-alive idle timeout).
    #[arg(long, env = "BKG_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    header_read_timeout_secs: u64,
}

impl ConnectionArgs {
    /// The gateway's limits, after raising the open-files limit as far as allowed.
    pub fn limits(&self) -> bkg_gateway::conn::Limits {
        let nofile = bkg_gateway::conn::raise_fd_limit();
        let max_connections = self
            .max_connections
            .unwrap_or_else(|| bkg_gateway::conn::cap_for_fd_limit(nofile));
        tracing::info!(nofile, max_connections, "connection limits");
        bkg_gateway::conn::Limits {
            max_connections: Some(max_connections),
            header_read_timeout: std::time::Duration::from_secs(
                self.header_read_timeout_secs.max(1),
            ),
            ..Default::default()
        }
    }
}

impl RateLimitArgs {
    pub fn default_limit(&self) -> Option<bkg_core::RateLimit> {
        (self.rate_limit_rps > 0).then(|| bkg_core::RateLimit {
            requests_per_second: self.rate_limit_rps,
            burst: Some(self.rate_limit_burst.max(1)),
        })
    }
}

pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let traces = crate::process::init_tracing(&args.log_format, SERVICE);
    let invoke_spans = traces.exporting();
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(serve(args, invoke_spans))
}

/// `invoke_spans`: traces are exported, so invokes get spans (see `bkg_gateway::Config`).
async fn serve(args: GatewayArgs, invoke_spans: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.keys_file.is_some() || args.api_key.is_some(),
        "no API keys: pass --keys-file (BKG_KEYS_FILE) or --api-key (BKG_API_KEY)"
    );
    let keys = bkg_gateway::auth::KeyStore::load(args.keys_file.clone(), args.api_key.as_deref())
        .context("loading API keys")?;
    let backend = match args.backend {
        BackendKind::Kubernetes => KubernetesBackend::connect(args.namespace.clone())
            .await
            .context("starting the Kubernetes backend")?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let state = bkg_gateway::AppState::new(
        bkg_gateway::Config {
            listen: addr,
            max_body_bytes: args.max_body_bytes,
            ui_dir: args.ui_dir.clone(),
            default_rate_limit: args.rate_limit.default_limit(),
            invoke_spans,
            connections: args.connections.limits(),
            telemetry_interval: args.history.interval(),
            ..Default::default()
        },
        Arc::new(backend),
        Arc::new(keys),
    );
    println!("bkg gateway listening on http://{addr}  (backend: kubernetes)");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = args.metrics.spawn(state.clone(), stop_rx).await?;
    let served = bkg_gateway::serve(listener, state, crate::process::shutdown_signal())
        .await
        .context("gateway failed");
    let _ = stop_tx.send(true);
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    served
}
