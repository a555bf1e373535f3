//! One replica of a local plugin: a supervised plugin-runtime child process.
//!
//! ```text
//!            ┌──────────── control: Desired {running, generation, plugin} ───────────┐
//!            ▼                                                                       │
//!   Stopped ─▶ spawn ─▶ Starting ─(readyz 200)─▶ Running ─(exit)─▶ Backoff ─▶ spawn …
//!                 │                                  │                 │
//!                 └─(exit 78 / too many crashes)─────┴──────────────▶ Error (until changed)
//! ```
//! A new generation (restart, config change) or `running = false` stops the child gracefully
//! (SIGTERM, then SIGKILL after the grace period) before anything else happens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bkg_core::logs::{self, LogRing};
use bkg_core::{Plugin, quantity};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};

use super::{Event, SupervisorConfig, os};

/// What the supervisor wants a replica to be.
#[derive(Clone, Debug)]
pub struct Desired {
    pub running: bool,
    /// Bumped by restart and by every spec change; a new value replaces the child.
    pub generation: u64,
    pub plugin: Arc<Plugin>,
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

/// Everything a replica task needs.
pub struct Replica {
    pub plugin_id: String,
    pub index: usize,
    pub config: Arc<SupervisorConfig>,
    pub control: watch::Receiver<Desired>,
    pub status: watch::Sender<ReplicaStatus>,
    pub logs: LogRing,
    pub events: broadcast::Sender<Event>,
    pub http: reqwest::Client,
}

/// How one child ended.
enum Ended {
    /// The supervisor asked for it (stop, restart, new spec, removal).
    Replaced,
    /// The task must end: the plugin was removed or the supervisor shuts down.
    Shutdown,
    /// It exited (or was killed for exceeding its memory limit) on its own.
    Crashed { reason: String, config_error: bool },
}

impl Replica {
    fn log(&self, message: &str) {
        self.logs
            .push(jiff::Timestamp::now().to_string(), "supervisor", message);
        tracing::info!(plugin = %self.plugin_id, replica = self.index, "{message}");
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
    }

    /// Runs until the control channel closes; the child never outlives this task.
    pub async fn run(mut self) {
        let mut crashes: u32 = 0;
        loop {
            let desired = self.control.borrow_and_update().clone();
            if !desired.running {
                self.publish(|s| {
                    s.state = ReplicaState::Stopped;
                    s.pid = None;
                    s.addr = None;
                });
                crashes = 0;
                if self.control.changed().await.is_err() {
                    return;
                }
                continue;
            }
            match self.run_child(&desired, &mut crashes).await {
                Ended::Shutdown => return,
                Ended::Replaced => {}
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
                        self.log(&format!("giving up after {why}: {reason}"));
                        self.emit(false, format!("error: {reason}"));
                        crashes = 0;
                        if self.control.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let delay = self.backoff(crashes);
                    self.log(&format!("{reason}; restarting in {}ms", delay.as_millis()));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        changed = self.control.changed() => {
                            if changed.is_err() { return; }
                        }
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

    async fn run_child(&mut self, desired: &Desired, crashes: &mut u32) -> Ended {
        let plugin = &desired.plugin;
        let addr_file = self.config.work_dir.join(format!(
            "{}-{}-{}.addr",
            self.plugin_id, self.index, desired.generation
        ));
        let _ = std::fs::remove_file(&addr_file);
        let mut child = match self.spawn(plugin, &addr_file) {
            Ok(child) => child,
            Err(e) => {
                return Ended::Crashed {
                    reason: format!("cannot start {}: {e}", self.config.runtime_bin.display()),
                    config_error: false,
                };
            }
        };
        let pid = child.id();
        let last_line = Arc::new(Mutex::new(None::<String>));
        let prefix = if plugin.spec.replicas > 1 {
            format!("[{}] ", self.index)
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
            "started plugin-runtime pid {}",
            pid.unwrap_or_default()
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
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                changed = self.control.changed() => {
                    let shutdown = changed.is_err();
                    let next = self.control.borrow().clone();
                    if shutdown || !next.running || next.generation != desired.generation {
                        self.publish(|s| s.state = ReplicaState::Stopping);
                        self.stop_child(&mut child, grace).await;
                        let _ = std::fs::remove_file(&addr_file);
                        return if shutdown { Ended::Shutdown } else { Ended::Replaced };
                    }
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
                        addr = std::fs::read_to_string(&addr_file).ok().and_then(|s| s.trim().parse().ok());
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
                    }
                }
            }
        }
    }

    fn spawn(&self, plugin: &Plugin, addr_file: &PathBuf) -> std::io::Result<Child> {
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
            .env("BKG_PLUGIN_CONFIG", config.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // The OTLP endpoint is inherited; the host's service name is not the runtime's.
            .env_remove("OTEL_SERVICE_NAME");
        for var in &spec.env {
            cmd.env(&var.name, &var.value);
        }
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

fn describe_exit(status: std::io::Result<ExitStatus>, last_line: &Mutex<Option<String>>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "exited".to_owned(),
        },
        Err(e) => format!("wait failed: {e}"),
    };
    match last_line.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(line) => format!("{how}; last output: {line}"),
        None => how,
    }
}

async fn capture(
    stream: impl AsyncRead + Unpin,
    name: &'static str,
    prefix: String,
    logs: LogRing,
    last_line: Arc<Mutex<Option<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let rendered = format!("{prefix}{}", logs::render(&line));
        logs.push(jiff::Timestamp::now().to_string(), name, &rendered);
        *last_line.lock().unwrap_or_else(|e| e.into_inner()) = Some(rendered);
    }
}

impl Default for ReplicaStatus {
    fn default() -> Self {
        Self::stopped()
    }
}
