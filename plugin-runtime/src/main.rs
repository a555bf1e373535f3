//! `plugin-runtime --plugin echo --id echo`: hosts one plugin until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bkg_plugin_runtime::{Config, logs::LogBuffer, logs::TeeWriter};
use clap::Parser;

/// Hosts exactly one bkg plugin per process behind the bkg.plugin/v1 HTTP protocol.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Plugin implementation to host (e.g. `echo`, `candle`).
    #[arg(long, env = "BKG_PLUGIN")]
    plugin: String,
    /// Plugin id (the manifest's metadata.name); defaults to the implementation name.
    #[arg(long, env = "BKG_PLUGIN_ID")]
    id: Option<String>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "BKG_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// File to write the bound address to once listening.
    #[arg(long, env = "BKG_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Also serve `/metrics` (and nothing else) on this address, for scrapers that must not
    /// reach the invoke API.
    #[arg(long, env = "BKG_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Plugin config as a JSON object (the manifest's spec.config).
    #[arg(long, env = "BKG_PLUGIN_CONFIG", conflicts_with = "config_file")]
    config: Option<String>,
    /// File holding the plugin config as JSON (e.g. a mounted ConfigMap).
    #[arg(long, env = "BKG_PLUGIN_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Seconds one invoke may run before it is answered with 504.
    #[arg(long, env = "BKG_INVOKE_TIMEOUT_SECS", default_value_t = 30.0)]
    timeout_secs: f64,
    /// Invokes that run at once.
    #[arg(long, env = "BKG_MAX_CONCURRENCY", default_value_t = 64)]
    max_concurrency: usize,
    /// Invokes that may wait for a slot; beyond that the runtime answers 503 at once.
    #[arg(long, env = "BKG_MAX_QUEUE", default_value_t = 1024)]
    max_queue: usize,
    /// Largest request body in bytes.
    #[arg(long, env = "BKG_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds SIGTERM waits for in-flight invokes; defaults to the invoke timeout plus 5.
    #[arg(long, env = "BKG_DRAIN_SECS")]
    drain_secs: Option<f64>,
    /// Log lines kept for /v1/logs.
    #[arg(long, env = "BKG_LOG_LINES", default_value_t = 1000)]
    log_lines: usize,
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "BKG_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Print the JSON Schema of the plugin's config (spec.config) and exit.
    #[arg(long)]
    config_schema: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.config_schema {
        return print_config_schema(&args.plugin);
    }
    let logs = LogBuffer::new(args.log_lines);
    let _tracing = init_tracing(&args.log_format, logs.clone());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let config = config_from(args)?;
        bkg_plugin_runtime::run(config, logs, shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .downcast_ref::<bkg_plugin_runtime::Error>()
                .map_or(1, |e| e.exit_code());
            tracing::error!(error = format!("{e:#}"), "runtime exiting");
            std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// `--config-schema`: what `make config-schemas` writes to `plugins/<name>/config.schema.json`.
fn print_config_schema(implementation: &str) -> std::process::ExitCode {
    let Some(plugin) = bkg_plugin_runtime::create(implementation) else {
        let available: Vec<_> = bkg_plugin_runtime::implementations()
            .iter()
            .map(|i| i.name)
            .collect();
        eprintln!(
            "unknown plugin implementation {implementation:?}; this runtime hosts: {}",
            available.join(", ")
        );
        return std::process::ExitCode::from(2);
    };
    match serde_json::to_string_pretty(&plugin.config_schema()) {
        Ok(text) => {
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot encode the config schema: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn config_from(args: Args) -> anyhow::Result<Config> {
    let raw = match (&args.config, &args.config_file) {
        (Some(json), _) => Some(json.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading plugin config {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let plugin_config = match raw {
        Some(raw) if !raw.trim().is_empty() => {
            serde_json::from_str(&raw).context("plugin config is not valid JSON")?
        }
        _ => serde_json::json!({}),
    };
    anyhow::ensure!(
        args.timeout_secs > 0.0 && args.timeout_secs.is_finite(),
        "--timeout-secs must be positive"
    );
    let invoke_timeout = Duration::from_secs_f64(args.timeout_secs);
    let drain_timeout = args
        .drain_secs
        .map(Duration::from_secs_f64)
        .unwrap_or(invoke_timeout + Duration::from_secs(5));
    Ok(Config {
        plugin_id: args.id.unwrap_or_else(|| args.plugin.clone()),
        implementation: args.plugin,
        listen: args.listen,
        addr_file: args.addr_file,
        metrics_listen: args.metrics_listen,
        plugin_config,
        invoke_timeout,
        max_concurrency: args.max_concurrency,
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_bytes,
        drain_timeout,
    })
}

/// JSON log lines (with the fields of every open span: plugin, capability, request id, trace
/// id) to stdout and the `/v1/logs` ring; OpenTelemetry spans exported when OTEL_* says so.
fn init_tracing(format: &str, logs: LogBuffer) -> bkg_trace::Tracing {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let tracing = bkg_trace::Tracing::init("bkg-plugin-runtime");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing.layer());
    registry
        .with(bkg_trace::log_layer(
            format != "text",
            false,
            TeeWriter::new(logs),
        ))
        .init();
    if let Some(e) = &tracing.export_error {
        ::tracing::warn!("OpenTelemetry export disabled: {e}");
    }
    tracing
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
