//! plugin-runtime: hosts exactly one plugin instance per process.
//!
//! ```text
//!  gateway ──HTTP──▶ /v1/invoke/{capability} ──▶ admission (bounded) ──▶ timeout ──▶ Plugin::invoke
//!                    /v1/info /v1/telemetry /v1/logs /livez /readyz /metrics
//! ```
//!
//! The protocol is documented in docs/PLUGIN-PROTOCOL.md so a plugin written in another language
//! can ship its own image and still sit behind the bkg gateway.

#![forbid(unsafe_code)]

mod listen;
pub mod logs;
pub mod metrics;
pub mod process;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bkg_plugin_api::{Plugin, StartContext};
use tokio::net::TcpListener;

pub use server::{AppState, metrics_router, router};

/// A plugin implementation compiled into this runtime.
pub struct Implementation {
    pub name: &'static str,
    pub create: fn() -> Box<dyn Plugin>,
}

/// Every implementation this build of the runtime can host.
pub fn implementations() -> Vec<Implementation> {
    vec![
        #[cfg(feature = "echo")]
        Implementation {
            name: "echo",
            create: bkg_plugin_echo::new_plugin,
        },
        #[cfg(feature = "candle")]
        Implementation {
            name: "candle",
            create: bkg_plugin_candle::new_plugin,
        },
        #[cfg(feature = "rustyface")]
        Implementation {
            name: "rustyface",
            create: bkg_plugin_rustyface::new_plugin,
        },
        #[cfg(feature = "brainml")]
        Implementation {
            name: "brainml",
            create: bkg_plugin_brainml::new_plugin,
        },
    ]
}

/// Creates the named implementation.
pub fn create(name: &str) -> Option<Box<dyn Plugin>> {
    implementations()
        .into_iter()
        .find(|i| i.name == name)
        .map(|i| (i.create)())
}

/// Typed configuration of one runtime process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Plugin implementation to host.
    pub implementation: String,
    /// Plugin id (the manifest's `metadata.name`).
    pub plugin_id: String,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where to write the bound address once listening (for supervisors that pass port 0).
    pub addr_file: Option<PathBuf>,
    /// A second address serving only `/metrics`, so a NetworkPolicy can let Prometheus scrape
    /// without reaching the invoke API (which trusts its callers: the gateway authenticates).
    pub metrics_listen: Option<SocketAddr>,
    /// The manifest's `spec.config`.
    pub plugin_config: serde_json::Value,
    /// Longest time one invoke may run.
    pub invoke_timeout: Duration,
    /// Invokes run at once.
    pub max_concurrency: usize,
    /// Invokes allowed to wait for a slot before new ones are refused with 503.
    pub max_queue: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight invokes.
    pub drain_timeout: Duration,
}

/// Why the runtime stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown plugin implementation {name:?}; this runtime hosts: {available}")]
    UnknownImplementation { name: String, available: String },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the bound address to {path}")]
    AddrFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cause is the source, not part of this message: error chains print it once.
    #[error("plugin failed to start")]
    Start(#[source] bkg_plugin_api::PluginError),
    #[error("server error")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// Exit code: 78 (EX_CONFIG) for what a manifest change must fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::UnknownImplementation { .. }
            | Error::Start(bkg_plugin_api::PluginError::Config(_)) => 78,
            _ => 1,
        }
    }
}

/// Serves the plugin until `shutdown` resolves, then drains in-flight invokes and stops it.
pub async fn run(
    config: Config,
    logs: logs::LogBuffer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let plugin: Arc<dyn Plugin> = create(&config.implementation)
        .ok_or_else(|| Error::UnknownImplementation {
            name: config.implementation.clone(),
            available: implementations()
                .iter()
                .map(|i| i.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?
        .into();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })?,
        ),
        None => None,
    };
    let state = AppState::new(config.clone(), plugin.clone(), logs);
    tracing::info!(%addr, plugin_id = %config.plugin_id, implementation = %config.implementation, "listening");
    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr).map_err(|source| Error::AddrFile {
            path: path.clone(),
            source,
        })?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut metrics_server = None;
    if let Some(listener) = metrics_listener {
        let metrics_addr = listener.local_addr().map_err(Error::Serve)?;
        tracing::info!(addr = %metrics_addr, "serving /metrics");
        let stop_rx = stop_rx.clone();
        let app = server::metrics_router(state.clone());
        metrics_server = Some(tokio::spawn(async move {
            listen::serve(listener, app, stop_rx, listen::Limits::default()).await;
        }));
    }
    let server_state = state.clone();
    let drain_timeout = config.drain_timeout;
    let server = tokio::spawn(async move {
        listen::serve(
            listener,
            router(server_state),
            stop_rx,
            listen::Limits::default(),
        )
        .await;
        Ok::<(), std::io::Error>(())
    });

    // Start the plugin while already answering probes: liveness passes, readiness waits.
    let started = plugin
        .start(StartContext {
            plugin_id: config.plugin_id.clone(),
            config: config.plugin_config.clone(),
        })
        .await;
    if let Err(e) = started {
        // Logged once, by the caller that exits on it.
        let _ = stop_tx.send(true);
        return Err(Error::Start(e));
    }
    state.refresh_capabilities();
    state.set_ready(true);
    tracing::info!(plugin_id = %config.plugin_id, "ready");

    shutdown.await;
    tracing::info!("shutting down: draining in-flight invokes");
    state.set_ready(false);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(Error::Serve(e)),
        Ok(Err(join)) => tracing::error!(error = %join, "server task failed"),
        Err(_) => tracing::warn!(
            timeout_secs = drain_timeout.as_secs(),
            "drain timeout passed; abandoning in-flight invokes"
        ),
    }
    // A scrape takes milliseconds; the port is closed once `run` returns.
    if let Some(metrics) = metrics_server
        && tokio::time::timeout(Duration::from_secs(2), metrics)
            .await
            .is_err()
    {
        tracing::warn!("metrics listener did not stop within 2 s");
    }
    if let Err(e) = plugin.stop().await {
        tracing::warn!(error = %e, "plugin stop failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes `addr` atomically so a reader never sees half a line.
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, path)
}
