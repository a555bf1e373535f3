//! Local mode: every Plugin replica is a supervised plugin-runtime child process.
//!
//! ```text
//!  config/plugins/*.yaml ──(manifests::watch)──▶ Supervisor ──▶ Entry per plugin
//!                                                   │            (target: generation × replicas)
//!                    start/stop/restart/config ─────┤                 │ rollout::plan, on every
//!                                                   │                 ▼ instance state change
//!                                                   │            instance task per instance
//!                                                   │                 └─▶ plugin-runtime child
//!                    gateway: route / snapshot ◀────┘  (ready, not retiring instances only)
//! ```
//! Every change of what an instance runs (restart, config, manifest edit) is a new generation;
//! the reconciler moves the instances toward it with at most one extra instance and without
//! retiring a ready one before its replacement is ready (`rollout`), so changes do not fail
//! calls. A retired instance leaves routing first, lingers ([`SupervisorConfig::linger`]) and
//! then drains. Stop and removal stop every instance at once. Children get only the
//! environment listed in [`env`].

pub mod env;
pub mod manifests;
mod os;
pub mod overrides;
mod replica;
pub mod rollout;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bkg_core::logs::LogRing;
use bkg_core::wire::Instance;
use bkg_core::{Phase, Plugin, PluginSpec, PluginStatus};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use replica::{Order, Replica};
pub use replica::{ReplicaState, ReplicaStatus};
use rollout::{Action, Observed, Progress, Target};

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
    /// How long a retired instance that was serving stays up after it left routing, before it
    /// is asked to stop: a call the gateway routed to it just before still arrives and is
    /// answered (the runtime refuses new calls once it drains).
    pub linger: Duration,
    /// Where API config changes are kept across restarts ([`overrides`]); `None`: in memory.
    pub overrides_dir: Option<PathBuf>,
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
            linger: Duration::from_secs(1),
            overrides_dir: None,
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
    /// The plugin's replica count is fixed by its manifest (`spec.replicas`).
    #[error(
        "plugin {0:?} has a fixed spec.replicas; set spec.scaling to let the autoscaler own the count"
    )]
    NotScalable(String),
    /// The new generation did not become ready; the previous one keeps serving.
    #[error("plugin {id:?}: {message}")]
    RolloutFailed { id: String, message: String },
}

/// A plugin as the gateway sees it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The effective manifest (overrides applied) with its observed status.
    pub plugin: Plugin,
    /// Changes whenever the effective spec changes.
    pub generation: u64,
    pub instances: Vec<Instance>,
    /// The newest manifest's error while the last valid one runs (or none ever did).
    pub manifest_error: Option<String>,
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
    /// Moves whenever a plugin is added, removed or may have changed, so readers that derive
    /// something from every spec (the gateway's alias table) know when to derive it again.
    specs: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Event>,
    http: reqwest::Client,
}

/// One plugin: what is wanted (manifest, overrides, generation) and the instances running it.
struct Entry {
    manifest: Arc<Plugin>,
    enabled_override: Option<bool>,
    config_override: Option<serde_json::Value>,
    /// The desired generation: bumped by restart and by every change of what an instance runs
    /// (not by a change of the replica count alone).
    generation: u64,
    /// The effective manifest (overrides applied), shared with every route.
    effective: Arc<Plugin>,
    /// Instances of this and older generations, in the order they were started; retired ones
    /// stay listed (stopping) until their task ends.
    instances: Vec<InstanceHandle>,
    logs: LogRing,
    /// Set while the newest manifest for this id is invalid.
    manifest_error: Option<String>,
    /// True when no valid manifest was ever seen: nothing runs.
    placeholder: bool,
    /// The autoscaler's latest count, when `spec.scaling` owns the replica count.
    scaled: Option<usize>,
    /// When the replica count last changed (RFC 3339).
    last_scale_time: Option<String>,
    /// The latest changes of the replica count, oldest first.
    scale_history: std::collections::VecDeque<bkg_core::ScaleRecord>,
    /// Wakes this plugin's reconciler; instances notify it on every status change.
    wake: Arc<Notify>,
    /// Bumped after every reconcile step, for callers waiting on a roll.
    progress: watch::Sender<u64>,
    reconciler: JoinHandle<()>,
}

struct InstanceHandle {
    slot: usize,
    generation: u64,
    control: watch::Sender<Order>,
    status: watch::Receiver<ReplicaStatus>,
    /// Told to stop: no longer routable, even while still running.
    retiring: bool,
    task: JoinHandle<()>,
}

impl InstanceHandle {
    /// True once the task ended (it closes its status channel as it ends).
    fn finished(&self) -> bool {
        self.status.has_changed().is_err()
    }

    fn ready(&self) -> bool {
        !self.retiring && self.status.borrow().state == ReplicaState::Running
    }
}

impl Entry {
    fn new(
        manifest: Arc<Plugin>,
        placeholder: bool,
        logs: LogRing,
        reconciler: JoinHandle<()>,
        wake: Arc<Notify>,
    ) -> Self {
        let mut entry = Entry {
            effective: manifest.clone(),
            manifest,
            enabled_override: None,
            config_override: None,
            generation: u64::from(!placeholder),
            instances: Vec::new(),
            logs,
            manifest_error: None,
            placeholder,
            scaled: None,
            last_scale_time: None,
            scale_history: Default::default(),
            wake,
            progress: watch::channel(0).0,
            reconciler,
        };
        entry.effective = Arc::new(entry.effective_plugin());
        entry
    }

    fn effective_plugin(&self) -> Plugin {
        let mut plugin = (*self.manifest).clone();
        if let Some(enabled) = self.enabled_override {
            plugin.spec.enabled = enabled;
        }
        if let Some(config) = &self.config_override {
            plugin.spec.config = Some(config.clone());
        }
        plugin
    }

    /// Recomputes the effective manifest after a change of manifest or overrides, and starts
    /// a new generation when what an instance runs changed.
    fn changed(&mut self, new_generation: bool) {
        let effective = self.effective_plugin();
        if new_generation || template(&effective.spec) != template(&self.effective.spec) {
            self.generation += 1;
        }
        self.effective = Arc::new(effective);
    }

    fn target(&self) -> Target {
        let spec = &self.effective.spec;
        // A GPU has no room for a second copy of the model: replace, then start (as the
        // Deployment on a cluster does).
        let (max_surge, max_unavailable) = if spec.resources.gpu.is_some() {
            (0, 1)
        } else {
            (1, 0)
        };
        Target {
            generation: self.generation,
            replicas: if self.placeholder {
                0
            } else {
                self.desired_replicas()
            },
            running: spec.enabled && !self.placeholder,
            max_surge,
            max_unavailable,
        }
    }

    /// Replicas wanted while enabled: the fixed count, or the autoscaler's latest decision
    /// (`minReplicas` until it made one) within the bounds.
    fn desired_replicas(&self) -> usize {
        let spec = &self.effective.spec;
        let count = match &spec.scaling {
            None => spec.fixed_replicas(),
            Some(s) => self
                .scaled
                .map_or(spec.initial_replicas(), |n| {
                    i32::try_from(n).unwrap_or(i32::MAX)
                })
                .clamp(s.min_replicas.max(0), s.max_replicas.max(0)),
        };
        usize::try_from(count).unwrap_or(0)
    }

    fn observed(&self) -> Vec<Observed> {
        self.instances
            .iter()
            .map(|h| Observed {
                generation: h.generation,
                ready: h.ready(),
                retiring: h.retiring,
            })
            .collect()
    }

    fn failed(&self) -> Vec<bool> {
        self.instances
            .iter()
            .map(|h| h.status.borrow().state == ReplicaState::Error)
            .collect()
    }

    fn progress(&self) -> Progress {
        rollout::progress(self.target(), &self.observed(), &self.failed())
    }
}

/// What an instance runs: the spec without the replica count and the on/off switch, which
/// change how many instances run, not what each one is, and without the aliases, which only
/// the gateway's routing reads (a weight change moves traffic, never restarts a replica).
fn template(spec: &PluginSpec) -> PluginSpec {
    PluginSpec {
        replicas: None,
        scaling: None,
        enabled: true,
        aliases: Vec::new(),
        ..spec.clone()
    }
}

impl Supervisor {
    pub fn new(config: SupervisorConfig) -> Self {
        let (events, _) = broadcast::channel(256);
        Self(Arc::new(Inner {
            config: Arc::new(config),
            entries: Mutex::new(BTreeMap::new()),
            specs: std::sync::atomic::AtomicU64::new(0),
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

    fn new_entry(&self, id: &str, manifest: Plugin, placeholder: bool) -> Entry {
        let wake = Arc::new(Notify::new());
        let reconciler = tokio::spawn(reconcile_on_wake(
            Arc::downgrade(&self.0),
            id.to_owned(),
            wake.clone(),
        ));
        Entry::new(
            Arc::new(manifest),
            placeholder,
            LogRing::new(self.0.config.log_lines),
            reconciler,
            wake,
        )
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
                let was_placeholder = entry.placeholder;
                if was_placeholder {
                    // Never ran here: a config stored by an earlier `bkg up` may still hold.
                    entry.config_override = self.stored_config(&id, &plugin.spec);
                } else {
                    entry.config_override = None;
                    if let Some(dir) = &self.0.config.overrides_dir {
                        overrides::remove(dir, &id);
                    }
                }
                entry.manifest = Arc::new(plugin);
                entry.placeholder = false;
                entry.enabled_override = None;
                entry.changed(was_placeholder);
                tracing::info!(plugin = %id, generation = entry.generation, "manifest changed");
                self.reconcile(&id, entry);
            }
            None => {
                let stored = self.stored_config(&id, &plugin.spec);
                let mut entry = self.new_entry(&id, plugin, false);
                if stored.is_some() {
                    entry.config_override = stored;
                    entry.effective = Arc::new(entry.effective_plugin());
                }
                tracing::info!(plugin = %id, "manifest added");
                self.reconcile(&id, &mut entry);
                entries.insert(id, entry);
            }
        }
    }

    /// The config an earlier `POST …/config` stored for this manifest, if any.
    fn stored_config(&self, id: &str, spec: &PluginSpec) -> Option<serde_json::Value> {
        overrides::load(self.0.config.overrides_dir.as_deref()?, id, spec)
    }

    /// Records that the newest manifest for `id` is invalid. A running plugin keeps its last
    /// valid spec; an unknown one is listed in phase Error so the mistake is visible.
    pub fn report_invalid(&self, id: &str, message: String) {
        let mut entries = self.entries();
        if !entries.contains_key(id) {
            let entry = self.new_entry(id, Plugin::new(id, placeholder_spec()), true);
            entries.insert(id.to_owned(), entry);
        }
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        entry
            .logs
            .push(jiff::Timestamp::now().to_string(), "supervisor", &message);
        entry.manifest_error = Some(message);
    }

    /// Removes a plugin; its children stop gracefully. Resolves when they have exited.
    pub fn remove(&self, id: &str) -> Option<JoinHandle<()>> {
        let entry = self.entries().remove(id)?;
        self.0
            .specs
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        tracing::info!(plugin = %id, "manifest removed");
        entry.reconciler.abort();
        Some(tokio::spawn(async move {
            let tasks: Vec<_> = entry
                .instances
                .into_iter()
                .map(|h| {
                    // A closed control channel stops the instance at once.
                    drop(h.control);
                    h.task
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
        }))
    }

    /// A number that changes whenever a plugin is added or removed or its effective spec may
    /// have changed (every reconcile step counts: it runs on each manifest edit, start, stop
    /// and config change).
    pub fn spec_version(&self) -> u64 {
        self.0.specs.load(std::sync::atomic::Ordering::Acquire)
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

    /// One step toward the entry's target (see [`rollout::plan`]): forgets instances whose
    /// task ended, retires and starts instances, and tells waiters.
    fn reconcile(&self, id: &str, entry: &mut Entry) {
        self.0
            .specs
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        entry.instances.retain(|h| !h.finished());
        let actions = rollout::plan(entry.target(), &entry.observed());
        for action in actions {
            match action {
                Action::Retire { index, linger } => {
                    let handle = &mut entry.instances[index];
                    handle.retiring = true;
                    let linger = if linger {
                        self.0.config.linger
                    } else {
                        Duration::ZERO
                    };
                    handle.control.send_replace(Order::Stop { linger });
                }
                Action::Start => {
                    let handle = self.start_instance(id, entry);
                    entry.instances.push(handle);
                }
            }
        }
        entry.progress.send_modify(|n| *n += 1);
    }

    fn start_instance(&self, id: &str, entry: &Entry) -> InstanceHandle {
        // The lowest slot no listed instance holds, so names stay small and unique.
        let slot = (0..)
            .find(|s| entry.instances.iter().all(|h| h.slot != *s))
            .unwrap_or(0);
        let (control, control_rx) = watch::channel(Order::Run);
        let (status_tx, status) = watch::channel(ReplicaStatus::default());
        let replica = Replica {
            plugin_id: id.to_owned(),
            slot,
            generation: entry.generation,
            plugin: entry.effective.clone(),
            config: self.0.config.clone(),
            control: control_rx,
            status: status_tx,
            logs: entry.logs.clone(),
            events: self.0.events.clone(),
            http: self.0.http.clone(),
            wake: entry.wake.clone(),
        };
        InstanceHandle {
            slot,
            generation: entry.generation,
            control,
            status,
            retiring: false,
            task: tokio::spawn(replica.run()),
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

    /// Starts a stopped plugin (as `enabled: true` would). Returns the new generation.
    pub fn start(&self, id: &str) -> Result<u64, Error> {
        self.with_entry(id, |sup, entry| {
            entry.enabled_override = Some(true);
            // A plugin in phase Error starts over.
            entry.changed(true);
            sup.reconcile(id, entry);
            entry.generation
        })
    }

    /// Stops a plugin (as `enabled: false` would): every instance at once.
    pub fn stop(&self, id: &str) -> Result<(), Error> {
        self.with_entry(id, |sup, entry| {
            entry.enabled_override = Some(false);
            entry.changed(false);
            sup.reconcile(id, entry);
        })
    }

    /// Replaces every instance with a fresh process, one at a time, each old one retired only
    /// once its replacement is ready. Returns the new generation.
    pub fn restart(&self, id: &str) -> Result<u64, Error> {
        self.with_entry(id, |sup, entry| {
            entry.enabled_override = Some(true);
            entry.changed(true);
            sup.reconcile(id, entry);
            entry.generation
        })
    }

    /// Replaces the plugin config and rolls the instances as [`Supervisor::restart`] does.
    /// Returns the new generation, for [`Supervisor::rollout`].
    pub fn set_config(&self, id: &str, config: serde_json::Value) -> Result<u64, Error> {
        self.with_entry(id, |sup, entry| {
            if let Some(dir) = &sup.0.config.overrides_dir
                && let Err(e) = overrides::store(dir, id, &entry.manifest.spec, &config)
            {
                // It still applies now; only a restart of `bkg up` would forget it.
                tracing::error!(plugin = %id, dir = %dir.display(), error = %e, "cannot store the config; it is lost on restart");
            }
            entry.config_override = Some(config);
            entry.changed(true);
            sup.reconcile(id, entry);
            entry.generation
        })
    }

    /// Sets the replica count of a plugin whose `spec.scaling` owns it (the autoscaler's
    /// decision), clamped to `[minReplicas, maxReplicas]`. Returns the count now wanted.
    /// Refused for a plugin with a fixed `replicas`: its manifest owns the count.
    pub fn scale(&self, id: &str, replicas: usize, reason: &str) -> Result<usize, Error> {
        self.with_entry(id, |sup, entry| {
            if entry.effective.spec.scaling.is_none() {
                return Err(Error::NotScalable(id.to_owned()));
            }
            let before = entry.desired_replicas();
            entry.scaled = Some(replicas);
            let after = entry.desired_replicas();
            if after != before {
                let now = jiff::Timestamp::now().to_string();
                let message = format!("scaled from {before} to {after} replicas: {reason}");
                tracing::info!(plugin = %id, from = before, to = after, reason, "scaled");
                entry.logs.push(now.clone(), "supervisor", &message);
                if entry.scale_history.len() == bkg_core::crd::SCALE_HISTORY {
                    entry.scale_history.pop_front();
                }
                entry.scale_history.push_back(bkg_core::ScaleRecord {
                    time: now.clone(),
                    from: i32::try_from(before).unwrap_or(i32::MAX),
                    to: i32::try_from(after).unwrap_or(i32::MAX),
                    reason: reason.to_owned(),
                });
                entry.last_scale_time = Some(now);
                let _ = sup.0.events.send(Event {
                    plugin: id.to_owned(),
                    ready: false,
                    message,
                });
                sup.reconcile(id, entry);
            }
            Ok(after)
        })?
    }

    /// Waits until `generation` of plugin `id` is fully rolled out: every instance of it ready
    /// and no older one routable. `Ok` too when a newer change superseded it or the plugin was
    /// stopped; [`Error::RolloutFailed`] when an instance of it gave up (the previous
    /// generation keeps serving).
    pub async fn rollout(&self, id: &str, generation: u64) -> Result<(), Error> {
        let mut progress = {
            let entries = self.entries();
            let entry = entries
                .get(id)
                .ok_or_else(|| Error::NotFound(id.to_owned()))?;
            entry.progress.subscribe()
        };
        loop {
            {
                let entries = self.entries();
                let entry = entries
                    .get(id)
                    .ok_or_else(|| Error::NotFound(id.to_owned()))?;
                if entry.generation != generation {
                    return Ok(());
                }
                match entry.progress() {
                    Progress::Done => return Ok(()),
                    Progress::Failed => {
                        return Err(Error::RolloutFailed {
                            id: id.to_owned(),
                            message: rollout_error(entry).unwrap_or_default(),
                        });
                    }
                    Progress::Rolling => {}
                }
            }
            if progress.changed().await.is_err() {
                return Err(Error::NotFound(id.to_owned()));
            }
        }
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
    /// plugin is unknown or has no instance that is not retiring (callers then ask
    /// [`Supervisor::snapshot`] why). Only ready instances that are not retiring are routed:
    /// during a roll, the new generation's ready ones and the old ones not yet replaced.
    pub fn route(&self, id: &str) -> Option<Route> {
        let entries = self.entries();
        let entry = entries.get(id)?;
        if entry.instances.iter().all(|h| h.retiring) {
            return None;
        }
        let ready = entry
            .instances
            .iter()
            .filter(|h| !h.retiring)
            .filter_map(|h| {
                let status = h.status.borrow();
                (status.state == ReplicaState::Running)
                    .then_some(status.addr)
                    .flatten()
            })
            .collect();
        Some(Route {
            plugin: entry.effective.clone(),
            generation: entry.generation,
            ready,
        })
    }

    /// One plugin's current state.
    pub fn snapshot(&self, id: &str) -> Option<Snapshot> {
        self.entries().get(id).map(|entry| snapshot(id, entry))
    }
}

/// Runs reconcile steps for plugin `id` whenever one of its instances changes state, until the
/// supervisor is gone or the entry was removed (or replaced by a new one with its own waker).
async fn reconcile_on_wake(inner: Weak<Inner>, id: String, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(inner) = inner.upgrade() else { return };
        let supervisor = Supervisor(inner);
        let mut entries = supervisor.entries();
        match entries.get_mut(&id) {
            Some(entry) if Arc::ptr_eq(&entry.wake, &wake) => supervisor.reconcile(&id, entry),
            _ => return,
        }
    }
}

/// Why the entry's current generation failed to roll out, when it did.
fn rollout_error(entry: &Entry) -> Option<String> {
    let failed = entry.instances.iter().find(|h| {
        !h.retiring
            && h.generation == entry.generation
            && h.status.borrow().state == ReplicaState::Error
    })?;
    let reason = failed
        .status
        .borrow()
        .last_error
        .clone()
        .unwrap_or_else(|| "gave up".to_owned());
    let serving = entry
        .instances
        .iter()
        .filter(|h| h.generation != entry.generation && h.ready())
        .count();
    Some(if serving > 0 {
        format!(
            "generation {} did not become ready ({reason}); {serving} instance(s) of the previous generation keep serving",
            entry.generation
        )
    } else {
        format!(
            "generation {} did not become ready: {reason}",
            entry.generation
        )
    })
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
        replicas: Some(0),
        scaling: None,
        env: Vec::new(),
        config: None,
        resources: Default::default(),
        rate_limit: None,
        image: None,
        aliases: Vec::new(),
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
    let mut plugin = (*entry.effective).clone();
    let statuses: Vec<(bool, ReplicaStatus)> = entry
        .instances
        .iter()
        .map(|h| (h.retiring, h.status.borrow().clone()))
        .collect();
    let instances: Vec<Instance> = entry
        .instances
        .iter()
        .zip(&statuses)
        .map(|(h, (retiring, s))| Instance {
            name: format!("{id}-{}", h.slot),
            state: if *retiring && s.state != ReplicaState::Stopped {
                "stopping".to_owned()
            } else {
                state_name(&s.state).to_owned()
            },
            ready: !retiring && s.state == ReplicaState::Running,
            endpoint: s.addr.map(|a| format!("http://{a}")),
            pid: s.pid,
            restarts: s.restarts,
            started_at: s.started_at.clone(),
            last_error: s.last_error.clone(),
        })
        .collect();
    let ready = instances.iter().filter(|i| i.ready).count();
    let live: Vec<&ReplicaStatus> = statuses
        .iter()
        .filter(|(retiring, _)| !retiring)
        .map(|(_, s)| s)
        .collect();
    let wants_running = plugin.spec.enabled && !entry.placeholder;
    let phase = if entry.placeholder {
        Phase::Error
    } else if !wants_running {
        if statuses
            .iter()
            .any(|(_, s)| s.state != ReplicaState::Stopped)
        {
            Phase::Stopping
        } else {
            Phase::Stopped
        }
    } else if ready > 0 {
        Phase::Running
    } else if !live.is_empty() && live.iter().all(|s| s.state == ReplicaState::Error) {
        Phase::Error
    } else if entry.target().replicas == 0 && plugin.spec.scaling.is_some() {
        // Scaled to zero: an invoke is held while a replica starts, so the plugin serves.
        Phase::Running
    } else if entry.target().replicas == 0 {
        // Enabled with zero replicas: nothing to run.
        Phase::Stopped
    } else {
        Phase::Starting
    };
    // The manifest's mistake first, then a failed roll, then what an instance of the current
    // generation said, then anything an instance said.
    let last_error = entry
        .manifest_error
        .clone()
        .or_else(|| rollout_error(entry))
        .or_else(|| {
            entry
                .instances
                .iter()
                .zip(&statuses)
                .filter(|(h, _)| h.generation == entry.generation)
                .find_map(|(_, (_, s))| s.last_error.clone())
        })
        .or_else(|| statuses.iter().find_map(|(_, s)| s.last_error.clone()));
    plugin.status = Some(PluginStatus {
        phase: Some(phase),
        conditions: Vec::new(),
        observed_generation: Some(i64::try_from(entry.generation).unwrap_or(i64::MAX)),
        replicas: Some(i32::try_from(live.len()).unwrap_or(i32::MAX)),
        ready_replicas: Some(i32::try_from(ready).unwrap_or(i32::MAX)),
        desired_replicas: Some(
            i32::try_from(if wants_running {
                entry.target().replicas
            } else {
                0
            })
            .unwrap_or(i32::MAX),
        ),
        scaling_owner: Some(plugin.spec.scaling_owner()),
        selector: None,
        last_scale_time: entry.last_scale_time.clone(),
        scale_history: entry.scale_history.iter().cloned().collect(),
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
        manifest_error: entry.manifest_error.clone(),
    }
}
