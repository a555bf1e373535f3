//! Local mode: every Plugin replica is a supervised plugin-runtime child process.
//!
//! ```text
//!  config/plugins/*.yaml ──(manifests::watch)──▶ Supervisor ──▶ Entry per plugin
//!                                                                  └─▶ replica task per replica
//!                                                                        └─▶ plugin-runtime child
//! ```
//! The gateway reads snapshots (phase, ready endpoints, logs) and drives start, stop, restart
//! and config through the same handle.

pub mod manifests;
mod os;
mod replica;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bkg_core::logs::LogRing;
use bkg_core::wire::Instance;
use bkg_core::{Phase, Plugin, PluginStatus};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use replica::Replica;
pub use replica::{Desired, ReplicaState, ReplicaStatus};

/// How the supervisor runs children.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The plugin-runtime executable.
    pub runtime_bin: PathBuf,
    /// Where children write their bound addresses.
    pub work_dir: PathBuf,
    /// Log lines kept per plugin.
    pub log_lines: usize,
    /// First restart delay after a crash; doubles per crash.
    pub backoff_initial: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// Crashes in a row after which a replica goes to phase Error.
    pub max_crashes: u32,
    /// Time ready after which the crash count starts over.
    pub stable_after: Duration,
}

impl SupervisorConfig {
    /// Defaults for `runtime_bin`, with addresses written under `work_dir`.
    pub fn new(runtime_bin: PathBuf, work_dir: PathBuf) -> Self {
        Self {
            runtime_bin,
            work_dir,
            log_lines: 1000,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_crashes: 5,
            stable_after: Duration::from_secs(30),
        }
    }
}

/// Something worth telling the person at the terminal.
#[derive(Clone, Debug)]
pub struct Event {
    pub plugin: String,
    /// True when a replica just became ready.
    pub ready: bool,
    pub message: String,
}

/// Why a supervisor call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no plugin {0:?}")]
    NotFound(String),
    #[error("plugin {id:?} has an invalid manifest: {message}")]
    InvalidManifest { id: String, message: String },
}

/// A plugin as the gateway sees it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The effective manifest (overrides applied) with its observed status.
    pub plugin: Plugin,
    /// Changes whenever the effective spec changes.
    pub generation: u64,
    pub instances: Vec<Instance>,
}

/// What the gateway needs to route one call: the effective manifest (shared, not copied) and
/// the addresses of ready replicas.
#[derive(Clone, Debug)]
pub struct Route {
    pub plugin: Arc<Plugin>,
    /// Same value as [`Snapshot::generation`].
    pub generation: u64,
    pub ready: Vec<std::net::SocketAddr>,
}

/// Handle to the local supervisor; cheap to clone.
#[derive(Clone)]
pub struct Supervisor(Arc<Inner>);

struct Inner {
    config: Arc<SupervisorConfig>,
    entries: Mutex<BTreeMap<String, Entry>>,
    events: broadcast::Sender<Event>,
    http: reqwest::Client,
}

struct Entry {
    manifest: Arc<Plugin>,
    enabled_override: Option<bool>,
    config_override: Option<serde_json::Value>,
    generation: u64,
    replicas: Vec<ReplicaHandle>,
    logs: LogRing,
    /// Set while the newest manifest for this id is invalid.
    manifest_error: Option<String>,
    /// True when no valid manifest was ever seen: nothing runs.
    placeholder: bool,
}

struct ReplicaHandle {
    control: watch::Sender<Desired>,
    status: watch::Receiver<ReplicaStatus>,
    task: JoinHandle<()>,
}

impl Entry {
    fn effective(&self) -> Plugin {
        let mut plugin = (*self.manifest).clone();
        if let Some(enabled) = self.enabled_override {
            plugin.spec.enabled = enabled;
        }
        if let Some(config) = &self.config_override {
            plugin.spec.config = Some(config.clone());
        }
        plugin
    }

    fn desired(&self) -> Desired {
        let plugin = self.effective();
        Desired {
            running: plugin.spec.enabled && !self.placeholder,
            generation: self.generation,
            plugin: Arc::new(plugin),
        }
    }
}

impl Supervisor {
    pub fn new(config: SupervisorConfig) -> Self {
        let (events, _) = broadcast::channel(256);
        Self(Arc::new(Inner {
            config: Arc::new(config),
            entries: Mutex::new(BTreeMap::new()),
            events,
            http: reqwest::Client::new(),
        }))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.0.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events for the terminal: readiness, exits, give-ups.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.events.subscribe()
    }

    /// Adds a plugin or replaces its manifest. An unchanged manifest changes nothing; a changed
    /// one drops API overrides (the file is the source of truth) and rolls the replicas.
    pub fn apply(&self, plugin: Plugin) {
        let id = plugin.id().to_owned();
        let mut entries = self.entries();
        match entries.get_mut(&id) {
            Some(entry) => {
                entry.manifest_error = None;
                if entry.manifest.spec == plugin.spec && !entry.placeholder {
                    return;
                }
                entry.manifest = Arc::new(plugin);
                entry.placeholder = false;
                entry.enabled_override = None;
                entry.config_override = None;
                entry.generation += 1;
                tracing::info!(plugin = %id, "manifest changed");
                self.reconcile(&id, entry);
            }
            None => {
                let mut entry = Entry {
                    manifest: Arc::new(plugin),
                    enabled_override: None,
                    config_override: None,
                    generation: 1,
                    replicas: Vec::new(),
                    logs: LogRing::new(self.0.config.log_lines),
                    manifest_error: None,
                    placeholder: false,
                };
                tracing::info!(plugin = %id, "manifest added");
                self.reconcile(&id, &mut entry);
                entries.insert(id, entry);
            }
        }
    }

    /// Records that the newest manifest for `id` is invalid. A running plugin keeps its last
    /// valid spec; an unknown one is listed in phase Error so the mistake is visible.
    pub fn report_invalid(&self, id: &str, message: String) {
        let mut entries = self.entries();
        let entry = entries.entry(id.to_owned()).or_insert_with(|| Entry {
            manifest: Arc::new(Plugin::new(id, placeholder_spec())),
            enabled_override: None,
            config_override: None,
            generation: 0,
            replicas: Vec::new(),
            logs: LogRing::new(self.0.config.log_lines),
            manifest_error: None,
            placeholder: true,
        });
        entry
            .logs
            .push(jiff::Timestamp::now().to_string(), "supervisor", &message);
        entry.manifest_error = Some(message);
    }

    /// Removes a plugin; its children stop gracefully. Resolves when they have exited.
    pub fn remove(&self, id: &str) -> Option<JoinHandle<()>> {
        let entry = self.entries().remove(id)?;
        tracing::info!(plugin = %id, "manifest removed");
        Some(tokio::spawn(async move {
            let tasks: Vec<_> = entry
                .replicas
                .into_iter()
                .map(|r| {
                    drop(r.control);
                    r.task
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
        }))
    }

    /// Ids of every plugin, valid or not.
    pub fn ids(&self) -> Vec<String> {
        self.entries().keys().cloned().collect()
    }

    /// Stops every plugin and waits for every child to exit.
    pub async fn shutdown(&self) {
        let ids = self.ids();
        let handles: Vec<_> = ids.iter().filter_map(|id| self.remove(id)).collect();
        for handle in handles {
            let _ = handle.await;
        }
    }

    fn reconcile(&self, id: &str, entry: &mut Entry) {
        let desired = entry.desired();
        let wanted = if entry.placeholder {
            0
        } else {
            usize::try_from(desired.plugin.spec.replicas).unwrap_or(0)
        };
        // Dropping a handle's control sender ends that replica (its child stops gracefully).
        entry.replicas.truncate(wanted);
        for handle in &entry.replicas {
            handle.control.send_replace(desired.clone());
        }
        while entry.replicas.len() < wanted {
            let index = entry.replicas.len();
            let (control, control_rx) = watch::channel(desired.clone());
            let (status_tx, status) = watch::channel(ReplicaStatus::default());
            let replica = Replica {
                plugin_id: id.to_owned(),
                index,
                config: self.0.config.clone(),
                control: control_rx,
                status: status_tx,
                logs: entry.logs.clone(),
                events: self.0.events.clone(),
                http: self.0.http.clone(),
            };
            let task = tokio::spawn(replica.run());
            entry.replicas.push(ReplicaHandle {
                control,
                status,
                task,
            });
        }
    }

    fn with_entry<T>(&self, id: &str, f: impl FnOnce(&Self, &mut Entry) -> T) -> Result<T, Error> {
        let mut entries = self.entries();
        let entry = entries
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if entry.placeholder {
            return Err(Error::InvalidManifest {
                id: id.to_owned(),
                message: entry.manifest_error.clone().unwrap_or_default(),
            });
        }
        Ok(f(self, entry))
    }

    /// Starts a stopped plugin (as `enabled: true` would).
    pub fn start(&self, id: &str) -> Result<(), Error> {
        self.with_entry(id, |sup, entry| {
            entry.enabled_override = Some(true);
            // A plugin in phase Error starts over.
            entry.generation += 1;
            sup.reconcile(id, entry);
        })
    }

    /// Stops a plugin (as `enabled: false` would).
    pub fn stop(&self, id: &str) -> Result<(), Error> {
        self.with_entry(id, |sup, entry| {
            entry.enabled_override = Some(false);
            sup.reconcile(id, entry);
        })
    }

    /// Replaces every replica with a fresh process.
    pub fn restart(&self, id: &str) -> Result<(), Error> {
        self.with_entry(id, |sup, entry| {
            entry.enabled_override = Some(true);
            entry.generation += 1;
            sup.reconcile(id, entry);
        })
    }

    /// Replaces the plugin config and rolls the replicas.
    pub fn set_config(&self, id: &str, config: serde_json::Value) -> Result<(), Error> {
        self.with_entry(id, |sup, entry| {
            entry.config_override = Some(config);
            entry.generation += 1;
            sup.reconcile(id, entry);
        })
    }

    /// The plugin's captured logs (children's output and supervisor notes).
    pub fn logs(&self, id: &str) -> Option<LogRing> {
        self.entries().get(id).map(|e| e.logs.clone())
    }

    /// Every plugin's current state.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.entries()
            .iter()
            .map(|(id, entry)| snapshot(id, entry))
            .collect()
    }

    /// The hot path of every invoke: no manifest copy, no status computed. `None` when the
    /// plugin is unknown or has no replica (callers then ask [`Supervisor::snapshot`] why).
    pub fn route(&self, id: &str) -> Option<Route> {
        let entries = self.entries();
        let entry = entries.get(id)?;
        let plugin = entry.replicas.first()?.control.borrow().plugin.clone();
        let ready = entry
            .replicas
            .iter()
            .filter_map(|r| {
                let status = r.status.borrow();
                (status.state == ReplicaState::Running)
                    .then_some(status.addr)
                    .flatten()
            })
            .collect();
        Some(Route {
            plugin,
            generation: entry.generation,
            ready,
        })
    }

    /// One plugin's current state.
    pub fn snapshot(&self, id: &str) -> Option<Snapshot> {
        self.entries().get(id).map(|entry| snapshot(id, entry))
    }
}

/// The spec shown for an id whose manifest was never valid: disabled, no replicas.
fn placeholder_spec() -> bkg_core::PluginSpec {
    bkg_core::PluginSpec {
        implementation: "invalid".into(),
        display_name: None,
        version: None,
        description: None,
        author: None,
        capabilities: Vec::new(),
        enabled: false,
        replicas: 0,
        env: Vec::new(),
        config: None,
        resources: Default::default(),
        rate_limit: None,
        image: None,
    }
}

fn state_name(state: &ReplicaState) -> &'static str {
    match state {
        ReplicaState::Stopped => "stopped",
        ReplicaState::Starting => "starting",
        ReplicaState::Running => "running",
        ReplicaState::Stopping => "stopping",
        ReplicaState::Backoff => "backoff",
        ReplicaState::Error => "error",
    }
}

fn snapshot(id: &str, entry: &Entry) -> Snapshot {
    let mut plugin = entry.effective();
    let statuses: Vec<ReplicaStatus> = entry
        .replicas
        .iter()
        .map(|r| r.status.borrow().clone())
        .collect();
    let instances: Vec<Instance> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| Instance {
            name: format!("{id}-{i}"),
            state: state_name(&s.state).to_owned(),
            ready: s.state == ReplicaState::Running,
            endpoint: s.addr.map(|a| format!("http://{a}")),
            pid: s.pid,
            restarts: s.restarts,
            started_at: s.started_at.clone(),
            last_error: s.last_error.clone(),
        })
        .collect();
    let ready = instances.iter().filter(|i| i.ready).count();
    let wants_running = plugin.spec.enabled && !entry.placeholder;
    let any = |state: ReplicaState| statuses.iter().any(|s| s.state == state);
    let phase = if entry.placeholder {
        Phase::Error
    } else if !wants_running {
        if any(ReplicaState::Stopping) || statuses.iter().any(|s| s.pid.is_some()) {
            Phase::Stopping
        } else {
            Phase::Stopped
        }
    } else if ready > 0 {
        Phase::Running
    } else if !statuses.is_empty() && statuses.iter().all(|s| s.state == ReplicaState::Error) {
        Phase::Error
    } else if statuses.is_empty() {
        // Enabled with zero replicas: nothing to run.
        Phase::Stopped
    } else {
        Phase::Starting
    };
    let last_error = entry
        .manifest_error
        .clone()
        .or_else(|| statuses.iter().find_map(|s| s.last_error.clone()));
    plugin.status = Some(PluginStatus {
        phase: Some(phase),
        conditions: Vec::new(),
        observed_generation: Some(i64::try_from(entry.generation).unwrap_or(i64::MAX)),
        ready_replicas: Some(i32::try_from(ready).unwrap_or(i32::MAX)),
        endpoint: instances
            .iter()
            .find(|i| i.ready)
            .and_then(|i| i.endpoint.clone()),
        last_error,
    });
    Snapshot {
        plugin,
        generation: entry.generation,
        instances,
    }
}
