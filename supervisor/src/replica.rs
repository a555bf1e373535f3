//! One instance of a local plugin: a supervised plugin-runtime child process of one generation.
//!
//! ```text
//!   spawn ─▶ Starting ─(readyz 200)─▶ Running ─(exit)─▶ Backoff ─▶ spawn …
//!      │                                  │                 │
//!      └─(exit 78 / too many crashes)─────┴──────────────▶ Error (until retired)
//!
//!   Order::Stop {linger} ─▶ Stopping: out of routing, wait `linger`, SIGTERM (the runtime
//!                             drains), SIGKILL after the grace period ─▶ task ends
//! ```
//! An instance never changes generation: a restart, config change or manifest edit starts new
//! instances beside it and retires it once they are ready (see [`super::rollout`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bkg_core::logs::{self, LogRing};
use bkg_core::{Plugin, quantity};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, broadcast, watch};

use super::{Event, SupervisorConfig, env, os};

/// What the supervisor tells an instance. Closing the channel means "stop now".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Run,
    /// Leave routing, wait `linger` so that calls already routed here arrive, then stop
    /// gracefully.
    Stop {
        linger: Duration,
    },
}

/// What a replica is, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    Stopped,
    Starting,
    Running,
    Stopping,
    /// Waiting before the next restart.
    Backoff,
    /// Gave up: too many crashes or a configuration error. Waits for a change.
    Error,
}

/// Observed state of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub state: ReplicaState,
    pub pid: Option<u32>,
    pub addr: Option<SocketAddr>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// RFC 3339 time the current child started.
    pub started_at: Option<String>,
}

impl ReplicaStatus {
    fn stopped() -> Self {
        Self {
            state: ReplicaState::Stopped,
            pid: None,
            addr: None,
            restarts: 0,
            last_error: None,
            started_at: None,
        }
    }
}

/// Everything an instance task needs.
pub struct Replica {
    pub plugin_id: String,
    /// Small number naming the instance (`echo-0`) and prefixing its log lines.
    pub slot: usize,
    pub generation: u64,
    /// The effective manifest this instance runs.
    pub plugin: Arc<Plugin>,
    pub config: Arc<SupervisorConfig>,
    pub control: watch::Receiver<Order>,
    pub status: watch::Sender<ReplicaStatus>,
    pub logs: LogRing,
    pub events: broadcast::Sender<Event>,
    pub http: reqwest::Client,
    /// Wakes the plugin's reconciler after every status change.
    pub wake: Arc<Notify>,
}

/// How one child ended.
enum Ended {
    /// The supervisor asked for it (retired, stopped, removed).
    Stopped,
    /// It exited (or was killed for exceeding its memory limit) on its own.
    Crashed { reason: String, config_error: bool },
}

impl Replica {
    fn log(&self, message: &str) {
        self.logs
            .push(jiff::Timestamp::now().to_string(), "supervisor", message);
        tracing::info!(plugin = %self.plugin_id, replica = self.slot, generation = self.generation, "{message}");
    }

    /// A supervisor note about a failure: kept in the plugin's log ring and logged once, at
    /// `error` for giving up and `warn` for a crash that is retried.
    fn log_failure(&self, message: &str, give_up: bool) {
        self.logs
            .push(jiff::Timestamp::now().to_string(), "supervisor", message);
        if give_up {
            tracing::error!(plugin = %self.plugin_id, replica = self.slot, generation = self.generation, "{message}");
        } else {
            tracing::warn!(plugin = %self.plugin_id, replica = self.slot, generation = self.generation, "{message}");
        }
    }

    fn emit(&self, ready: bool, message: String) {
        let _ = self.events.send(Event {
            plugin: self.plugin_id.clone(),
            ready,
            message,
        });
    }

    fn publish(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        self.status.send_modify(f);
        self.wake.notify_one();
    }

    /// The linger the supervisor asked for, if it asked this instance to stop.
    fn stop_requested(&self) -> Option<Duration> {
        if self.control.has_changed().is_err() {
            return Some(Duration::ZERO);
        }
        match *self.control.borrow() {
            Order::Run => None,
            Order::Stop { linger } => Some(linger),
        }
    }

    /// Waits until the supervisor asks this instance to stop.
    async fn stop_wanted(&mut self) {
        loop {
            if self.stop_requested().is_some() || self.control.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs until the supervisor retires the instance; the child never outlives this task.
    /// The task's end closes the status channel, which is how the supervisor knows it is gone.
    pub async fn run(mut self) {
        self.supervise().await;
        self.status.send_modify(|s| {
            s.state = ReplicaState::Stopped;
            s.pid = None;
            s.addr = None;
        });
        let wake = self.wake.clone();
        drop(self);
        wake.notify_one();
    }

    async fn supervise(&mut self) {
        let mut crashes: u32 = 0;
        loop {
            if self.stop_requested().is_some() {
                return;
            }
            match self.run_child(&mut crashes).await {
                Ended::Stopped => return,
                Ended::Crashed {
                    reason,
                    config_error,
                } => {
                    crashes += 1;
                    let restarts = self.status.borrow().restarts + 1;
                    let give_up = config_error || crashes >= self.config.max_crashes;
                    self.publish(|s| {
                        s.pid = None;
                        s.addr = None;
                        s.restarts = restarts;
                        s.last_error = Some(reason.clone());
                        s.state = if give_up {
                            ReplicaState::Error
                        } else {
                            ReplicaState::Backoff
                        };
                    });
                    if give_up {
                        let why = if config_error {
                            "a configuration error".to_owned()
                        } else {
                            format!("{crashes} crashes in a row")
                        };
                        self.log_failure(&format!("giving up after {why}: {reason}"), true);
                        self.emit(false, format!("error: {reason}"));
                        // Phase Error until the supervisor retires this instance (a new
                        // generation replaces it).
                        self.stop_wanted().await;
                        return;
                    }
                    let delay = self.backoff(crashes);
                    self.log_failure(
                        &format!("{reason}; restarting in {}ms", delay.as_millis()),
                        false,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop_wanted() => return,
                    }
                }
            }
        }
    }

    fn backoff(&self, crashes: u32) -> Duration {
        let factor = 2u32.saturating_pow(crashes.saturating_sub(1));
        self.config
            .backoff_initial
            .saturating_mul(factor)
            .min(self.config.backoff_max)
    }

    async fn run_child(&mut self, crashes: &mut u32) -> Ended {
        let addr_file = AddrFile::new(self.config.work_dir.join(format!(
            "{}-{}-{}.addr",
            self.plugin_id, self.slot, self.generation
        )));
        let plugin = self.plugin.clone();
        // The manifest was accepted only with every required reference resolvable
        // (`manifests`), and bkg up's environment does not change; this is the same check.
        let env = match env::resolve(&plugin.spec.env, |name| std::env::var(name).ok()) {
            Ok(env) => env,
            Err(errors) => {
                let reason = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Ended::Crashed {
                    reason,
                    config_error: true,
                };
            }
        };
        let mut child = match self.spawn(&plugin, &env, &addr_file.path) {
            Ok(child) => child,
            Err(e) => {
                return Ended::Crashed {
                    reason: format!("cannot start {}: {e}", self.config.runtime_bin.display()),
                    config_error: false,
                };
            }
        };
        let pid = child.id();
        let last_line = Arc::new(Mutex::new(LastWords::default()));
        let prefix = if plugin.spec.replicas.unwrap_or(1) > 1 || plugin.spec.scaling.is_some() {
            format!("[{}] ", self.slot)
        } else {
            String::new()
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(
                out,
                "stdout",
                prefix.clone(),
                self.logs.clone(),
                last_line.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(
                err,
                "stderr",
                prefix,
                self.logs.clone(),
                last_line.clone(),
            ));
        }
        self.log(&format!(
            "started plugin-runtime pid {} (generation {})",
            pid.unwrap_or_default(),
            self.generation
        ));
        self.publish(|s| {
            s.state = ReplicaState::Starting;
            s.pid = pid;
            s.addr = None;
            s.started_at = Some(jiff::Timestamp::now().to_string());
        });

        let memory_limit = plugin
            .spec
            .resources
            .memory
            .as_ref()
            .and_then(|q| quantity::to_bytes(q).ok());
        let grace = Duration::from_secs(u64::from(plugin.spec.resources.timeout_seconds) + 5);
        let mut addr: Option<SocketAddr> = None;
        let mut ready_since: Option<Instant> = None;
        // A starting child is probed soon and then less often (5, 10, 20, 25, 25 … ms): a
        // replica started for a held invoke (scale from zero) is routed within milliseconds
        // of its readiness; a ready one is probed every second.
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut starting_probe = Duration::from_millis(5);
        loop {
            tokio::select! {
                status = child.wait() => {
                    let config_error = matches!(&status, Ok(s) if s.code() == Some(78));
                    // Let the capture tasks read the child's last words before describing the exit.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let reason = describe_exit(status, &last_line);
                    self.emit(false, format!("exited: {reason}"));
                    return Ended::Crashed { reason, config_error };
                }
                _ = self.control.changed() => {
                    let Some(linger) = self.stop_requested() else { continue };
                    self.publish(|s| s.state = ReplicaState::Stopping);
                    if ready_since.is_some() && !linger.is_zero() {
                        // Out of routing now; calls the gateway already routed here still
                        // arrive during the linger and are then drained by the runtime.
                        tokio::select! {
                            _ = tokio::time::sleep(linger) => {}
                            _ = child.wait() => {}
                            _ = async { while self.control.changed().await.is_ok() {} } => {}
                        }
                    }
                    self.stop_child(&mut child, grace).await;
                    return Ended::Stopped;
                }
                _ = tick.tick() => {
                    if let Some((rss, limit)) = over_limit(memory_limit, pid) {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        let reason = format!(
                            "OOMKilled: resident memory {} MiB exceeded the limit {} MiB",
                            rss / (1024 * 1024),
                            limit / (1024 * 1024)
                        );
                        self.emit(false, reason.clone());
                        return Ended::Crashed { reason, config_error: false };
                    }
                    if addr.is_none() {
                        addr = std::fs::read_to_string(&addr_file.path).ok().and_then(|s| s.trim().parse().ok());
                    }
                    let Some(a) = addr else { continue };
                    let ready = self.probe(a).await;
                    match (ready, ready_since) {
                        (true, None) => {
                            ready_since = Some(Instant::now());
                            self.publish(|s| { s.state = ReplicaState::Running; s.addr = Some(a); });
                            let message = format!("ready at http://{a}");
                            self.log(&message);
                            self.emit(true, message);
                        }
                        (true, Some(since)) if *crashes > 0 && since.elapsed() >= self.config.stable_after => {
                            *crashes = 0;
                        }
                        (false, Some(_)) => {
                            ready_since = None;
                            self.publish(|s| s.state = ReplicaState::Starting);
                            self.log("readiness probe failing");
                        }
                        _ => {}
                    }
                    // Probe a running child less often.
                    if ready_since.is_some() {
                        tick.reset_after(Duration::from_millis(900));
                    } else {
                        tick.reset_after(starting_probe);
                        starting_probe = (starting_probe * 2).min(Duration::from_millis(25));
                    }
                }
            }
        }
    }

    fn spawn(
        &self,
        plugin: &Plugin,
        env: &[(String, String)],
        addr_file: &Path,
    ) -> std::io::Result<Child> {
        let spec = &plugin.spec;
        let config = spec.config.clone().unwrap_or_else(|| serde_json::json!({}));
        let mut cmd = Command::new(&self.config.runtime_bin);
        cmd.arg("--plugin")
            .arg(&spec.implementation)
            .arg("--id")
            .arg(&self.plugin_id)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--addr-file")
            .arg(addr_file)
            .arg("--timeout-secs")
            .arg(spec.resources.timeout_seconds.to_string())
            .arg("--max-concurrency")
            .arg(spec.resources.max_concurrency.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Nothing is inherited but what running needs (see `env`): never the gateway's
            // keys or anything else the host was started with.
            .env_clear()
            .envs(env::inherited(std::env::vars_os()));
        cmd.envs(env.iter().map(|(name, value)| (name, value)));
        // The supervisor's own settings come last, so a manifest cannot replace them.
        cmd.env("BKG_PLUGIN_CONFIG", config.to_string());
        if let Some(bytes) = spec
            .resources
            .memory
            .as_ref()
            .and_then(|q| quantity::to_bytes(q).ok())
        {
            cmd.env("BKG_MEMORY_LIMIT_BYTES", bytes.to_string());
        }
        os::prepare_child(&mut cmd);
        cmd.spawn()
    }

    async fn probe(&self, addr: SocketAddr) -> bool {
        let url = format!("http://{addr}/readyz");
        matches!(
            self.http.get(url).timeout(Duration::from_secs(1)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    async fn stop_child(&self, child: &mut Child, grace: Duration) {
        let Some(pid) = child.id() else { return };
        self.log(&format!(
            "stopping pid {pid} (SIGTERM, {}s grace)",
            grace.as_secs()
        ));
        if os::terminate(pid).is_err() {
            let _ = child.start_kill();
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(_) => self.log(&format!("pid {pid} stopped")),
            Err(_) => {
                self.log(&format!(
                    "pid {pid} ignored SIGTERM for {}s; killing",
                    grace.as_secs()
                ));
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// The child's resident memory and the limit, when it is over the limit.
fn over_limit(limit: Option<u64>, pid: Option<u32>) -> Option<(u64, u64)> {
    let limit = limit?;
    let rss = os::rss_bytes(pid?)?;
    (rss > limit).then_some((rss, limit))
}

/// What a child said last: its last line, and its last line that reads as an error (a log line
/// at ERROR, or an `error:` line such as clap's). A usage error's last line is clap's trailer
/// ("For more information, try '--help'."), which says nothing; the error line does.
#[derive(Debug, Default)]
struct LastWords {
    line: Option<String>,
    error: Option<String>,
}

impl LastWords {
    fn heard(&mut self, rendered: &str) {
        if rendered.trim().is_empty() {
            return;
        }
        if is_error_line(rendered) {
            self.error = Some(rendered.to_owned());
        }
        self.line = Some(rendered.to_owned());
    }

    /// The line worth quoting: the last error line, else the last line.
    fn take(&mut self) -> Option<String> {
        let error = self.error.take();
        let line = self.line.take();
        error.or(line)
    }
}

/// A rendered line (`logs::render`: `LEVEL message fields…`, or raw text) that reports an error.
fn is_error_line(rendered: &str) -> bool {
    let text = rendered.trim_start();
    // Without the `[slot] ` prefix of multi-replica plugins.
    let text = match text.strip_prefix('[').and_then(|t| t.split_once("] ")) {
        Some((slot, rest)) if slot.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => text,
    };
    text.starts_with("ERROR") || text.starts_with("error:") || text.starts_with("Error:")
}

fn describe_exit(status: std::io::Result<ExitStatus>, last: &Mutex<LastWords>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "exited".to_owned(),
        },
        Err(e) => format!("wait failed: {e}"),
    };
    match last.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(line) => format!("{how}; last output: {line}"),
        None => how,
    }
}

async fn capture(
    stream: impl AsyncRead + Unpin,
    name: &'static str,
    prefix: String,
    logs: LogRing,
    last: Arc<Mutex<LastWords>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let rendered = format!("{prefix}{}", logs::render(&line));
        logs.push(jiff::Timestamp::now().to_string(), name, &rendered);
        last.lock()
            .unwrap_or_else(|e| e.into_inner())
            .heard(&rendered);
    }
}

/// The file a child writes its bound address to, and the `.tmp` file it writes first (the
/// runtime renames it into place). Both are removed when the child is gone, whichever way it
/// ended: a child stopped before the rename leaves the `.tmp` behind.
struct AddrFile {
    path: PathBuf,
}

impl AddrFile {
    fn new(path: PathBuf) -> Self {
        let file = Self { path };
        file.remove();
        file
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("tmp"));
    }
}

impl Drop for AddrFile {
    fn drop(&mut self) {
        self.remove();
    }
}

impl Default for ReplicaStatus {
    fn default() -> Self {
        Self::stopped()
    }
}
