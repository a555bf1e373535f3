//! `bkg up`: the embedded default. Plugin manifests from a folder, each replica a supervised
//! local process, behind the same gateway the cluster uses.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bkg_gateway::auth::KeyStore;
use bkg_gateway::backend::local::LocalBackend;
use bkg_supervisor::manifests::ManifestDir;
use bkg_supervisor::{Supervisor, SupervisorConfig};

/// `service.name` of this command's traces unless OTEL_SERVICE_NAME says otherwise.
const SERVICE: &str = "bkg-gateway";

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Port the gateway listens on.
    #[arg(long, env = "BKG_PORT", default_value_t = 43119)]
    port: u16,
    /// Address the gateway binds to.
    #[arg(long, env = "BKG_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Folder of Plugin manifests (watched for changes).
    #[arg(long, env = "BKG_PLUGINS", default_value = "config/plugins")]
    plugins: PathBuf,
    /// The plugin-runtime executable; defaults to the one next to `bkg`.
    #[arg(long, env = "BKG_RUNTIME_BIN")]
    runtime_bin: Option<PathBuf>,
    /// How often the manifest folder is rescanned, in milliseconds.
    #[arg(long, env = "BKG_WATCH_INTERVAL_MS", default_value_t = 500)]
    watch_interval_ms: u64,
    /// Largest request body the gateway accepts, in bytes.
    #[arg(long, env = "BKG_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Key file with hashed, scoped API keys (reloaded when it changes).
    #[arg(long, env = "BKG_KEYS_FILE", default_value = ".bkg/keys.yaml")]
    keys_file: PathBuf,
    /// Bootstrap admin key, accepted in addition to the key file.
    #[arg(long, env = "BKG_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Built admin UI to serve at `/`; defaults to admin-ui/dist/admin-ui/browser when present.
    #[arg(long, env = "BKG_UI_DIR")]
    ui_dir: Option<PathBuf>,
    #[command(flatten)]
    rate_limit: crate::gateway::RateLimitArgs,
    #[command(flatten)]
    connections: crate::gateway::ConnectionArgs,
    #[command(flatten)]
    history: crate::gateway::HistoryArgs,
    #[command(flatten)]
    metrics: crate::gateway::MetricsArgs,
    /// Log format of the host's own log lines (stderr): `text` or `json`.
    #[arg(long, env = "BKG_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let traces = crate::process::init_tracing(&args.log_format, SERVICE);
    let invoke_spans = traces.exporting();
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(serve(args, invoke_spans))
}

fn default_runtime_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bkg executable")?;
    let dir = exe.parent().context("the bkg executable has no folder")?;
    Ok(dir.join("plugin-runtime"))
}

/// `invoke_spans`: traces are exported, so invokes get spans (see `bkg_gateway::Config`).
async fn serve(args: UpArgs, invoke_spans: bool) -> anyhow::Result<()> {
    let runtime_bin = match args.runtime_bin {
        Some(path) => path,
        None => default_runtime_bin()?,
    };
    anyhow::ensure!(
        runtime_bin.is_file(),
        "plugin-runtime not found at {} (build it with `cargo build -p bkg-plugin-runtime` or pass --runtime-bin)",
        runtime_bin.display()
    );
    anyhow::ensure!(
        args.plugins.is_dir(),
        "the manifest folder {} does not exist",
        args.plugins.display()
    );
    let work_dir = work_dir()?;
    let mut supervisor_config = SupervisorConfig::new(runtime_bin, work_dir.path().to_path_buf());
    // Config set through the API survives a restart, next to the manifests (hidden: not read as
    // a manifest).
    supervisor_config.overrides_dir = Some(args.plugins.join(".bkg").join("overrides"));
    let supervisor = Supervisor::new(supervisor_config);

    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;

    // Tell the person at the terminal when each plugin becomes ready, or fails.
    let mut events = supervisor.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(e) if e.ready => println!("✔ {} {}", e.plugin, e.message),
                Ok(e) if e.message.starts_with("error") => println!("✘ {} {}", e.plugin, e.message),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });

    let mut dir = ManifestDir::new(&args.plugins);
    for e in dir.scan(&supervisor) {
        tracing::error!(file = %e.file.display(), "{}", e.message);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(dir.watch(
        supervisor.clone(),
        Duration::from_millis(args.watch_interval_ms.max(50)),
        stop_rx.clone(),
    ));

    let keys = Arc::new(load_keys(&args.keys_file, args.api_key.as_deref())?);
    let ui_dir = args.ui_dir.clone().or_else(|| {
        let built = PathBuf::from("admin-ui/dist/admin-ui/browser");
        built.join("index.html").is_file().then_some(built)
    });
    let state = bkg_gateway::AppState::new(
        bkg_gateway::Config {
            listen: addr,
            max_body_bytes: args.max_body_bytes,
            ui_dir,
            default_rate_limit: args.rate_limit.default_limit(),
            invoke_spans,
            connections: args.connections.limits(),
            telemetry_interval: args.history.interval(),
            ..Default::default()
        },
        Arc::new(LocalBackend::new(supervisor.clone())),
        keys,
    );
    println!(
        "bkg gateway listening on http://{addr}  (plugins from {})",
        args.plugins.display()
    );
    print_key_help(&args.keys_file, args.api_key.is_some());
    let metrics = args.metrics.spawn(state.clone(), stop_rx.clone()).await?;
    let mut gateway_stop = stop_rx.clone();
    let server = tokio::spawn(bkg_gateway::serve(listener, state, async move {
        let _ = gateway_stop.wait_for(|s| *s).await;
    }));

    crate::process::shutdown_signal().await;
    println!("shutting down: draining the gateway, then stopping every plugin");
    let _ = stop_tx.send(true);
    // The plugins keep serving while the gateway answers what it has already read.
    let served = server.await;
    let _ = watcher.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    supervisor.shutdown().await;
    match served {
        Ok(result) => result.context("gateway failed")?,
        Err(e) => anyhow::bail!("gateway task failed: {e}"),
    }
    drop(work_dir);
    Ok(())
}

/// Prefix of work folders in the temporary directory: `bkg-up-<pid>-<random>`.
const WORK_DIR_PREFIX: &str = "bkg-up-";

/// A fresh work folder (children's address files) named after this process, after removing
/// the folders of earlier `bkg up` processes that no longer run (killed ones cannot clean up).
fn work_dir() -> anyhow::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    for stale in stale_work_dirs(&tmp) {
        match std::fs::remove_dir_all(&stale) {
            Ok(()) => {
                tracing::info!(dir = %stale.display(), "removed the work folder of a bkg up that no longer runs")
            }
            Err(e) => {
                tracing::warn!(dir = %stale.display(), error = %e, "cannot remove a stale work folder")
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{WORK_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&tmp)
        .context("creating a work folder")
}

/// Folders `bkg-up-<pid>-*` directly in `tmp` whose pid no longer runs. Links, and folders
/// without a pid in their name (made by older versions), are left alone.
fn stale_work_dirs(tmp: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(WORK_DIR_PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                return false;
            };
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
        .map(|e| e.path())
        .collect()
}

/// Every start says where the keys are and how to make a new admin key (the key itself is
/// shown only once, when it is made).
fn print_key_help(keys_file: &std::path::Path, bootstrap_key: bool) {
    let shown = std::path::absolute(keys_file).unwrap_or_else(|_| keys_file.to_path_buf());
    let also = if bootstrap_key {
        " and the key in BKG_API_KEY"
    } else {
        ""
    };
    println!(
        "API keys: {}{also} (hashes only; reloaded when the file changes)",
        shown.display()
    );
    // The executable that runs now: `bkg` is often not on PATH (`make up` runs it from target/).
    let bkg = std::env::current_exe().unwrap_or_else(|_| "bkg".into());
    println!(
        "New admin key: {} apikey create --id admin-2 --scopes admin --keys-file {}",
        bkg.display(),
        shown.display()
    );
}

/// Keys from the key file and `BKG_API_KEY`. With neither, an admin key is made, printed once,
/// and its hash stored in the key file so it keeps working after a restart.
fn load_keys(path: &std::path::Path, api_key: Option<&str>) -> anyhow::Result<KeyStore> {
    if api_key.is_none() && !path.exists() {
        let (key, entry) = bkg_gateway::auth::generate("admin", &["admin".to_owned()])
            .map_err(anyhow::Error::msg)?;
        crate::apikey::append(path, entry)?;
        println!("No API key configured: generated an admin key (shown once, store it now):");
        println!("    {key}");
        println!(
            "Its hash is in {}. Use it as: Authorization: Bearer <key>",
            path.display()
        );
    }
    KeyStore::load(Some(path.to_path_buf()), api_key).context("loading API keys")
}
