//! The local backend: plugins are child processes of this host's supervisor.
//!
//! A config change answers once the new generation is ready on every replica (or failed to
//! start, while the previous one keeps serving): the supervisor rolls one instance at a time,
//! so waiting costs no failed calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bkg_core::wire::LogLine;
use bkg_supervisor::{self as local, Snapshot, Supervisor};

use super::{Backend, BackendError, PluginView, Route};
use crate::aliases::AliasTable;

/// Longest a config change waits for its roll before answering with the plugin as it is then.
const ROLLOUT_WAIT: Duration = Duration::from_secs(60);

/// Adapts the local supervisor to the gateway's backend interface.
#[derive(Clone)]
pub struct LocalBackend {
    supervisor: Supervisor,
    /// The alias table and the supervisor's spec version it was derived at: derived again
    /// only after a manifest edit, start, stop or config change moved the version.
    aliases: Arc<Mutex<(u64, Arc<AliasTable>)>>,
}

impl LocalBackend {
    pub fn new(supervisor: Supervisor) -> Self {
        Self {
            supervisor,
            aliases: Arc::new(Mutex::new((u64::MAX, Arc::default()))),
        }
    }
}

fn view(s: Snapshot) -> PluginView {
    PluginView {
        plugin: s.plugin,
        generation: s.generation,
        instances: s.instances,
        manifest_error: s.manifest_error,
    }
}

fn map_err(e: local::Error) -> BackendError {
    match e {
        local::Error::NotFound(id) => BackendError::NotFound(id),
        e @ (local::Error::InvalidManifest { .. }
        | local::Error::RolloutFailed { .. }
        | local::Error::NotScalable(_)) => BackendError::Conflict(e.to_string()),
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn mode(&self) -> &'static str {
        "local"
    }

    async fn list(&self) -> Vec<PluginView> {
        self.supervisor.snapshots().into_iter().map(view).collect()
    }

    async fn get(&self, id: &str) -> Option<PluginView> {
        self.supervisor.snapshot(id).map(view)
    }

    async fn route(&self, id: &str) -> Option<Route> {
        match self.supervisor.route(id) {
            Some(r) => Some(Route {
                plugin: r.plugin,
                generation: r.generation,
                endpoints: r.ready,
            }),
            // No replica (stopped with zero replicas, or a never-valid manifest).
            None => self.get(id).await.map(Route::from),
        }
    }

    async fn aliases(&self) -> Arc<AliasTable> {
        let version = self.supervisor.spec_version();
        let mut cached = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0 != version {
            let snapshots = self.supervisor.snapshots();
            *cached = (
                version,
                Arc::new(AliasTable::build(snapshots.iter().map(|s| &s.plugin))),
            );
        }
        cached.1.clone()
    }

    async fn start(&self, id: &str) -> Result<(), BackendError> {
        self.supervisor.start(id).map(drop).map_err(map_err)
    }

    async fn stop(&self, id: &str) -> Result<(), BackendError> {
        self.supervisor.stop(id).map_err(map_err)
    }

    async fn restart(&self, id: &str) -> Result<(), BackendError> {
        self.supervisor.restart(id).map(drop).map_err(map_err)
    }

    /// Answers after the roll: `Ok` once the new config serves on every replica (or after
    /// [`ROLLOUT_WAIT`], with the roll going on), `Conflict` when it failed to start, naming
    /// the plugin's error (the previous config keeps serving).
    async fn set_config(&self, id: &str, config: serde_json::Value) -> Result<(), BackendError> {
        let generation = self.supervisor.set_config(id, config).map_err(map_err)?;
        match tokio::time::timeout(ROLLOUT_WAIT, self.supervisor.rollout(id, generation)).await {
            Ok(done) => done.map_err(map_err),
            Err(_still_rolling) => Ok(()),
        }
    }

    async fn scale(&self, id: &str, replicas: u32, reason: &str) -> Result<u32, BackendError> {
        let n = usize::try_from(replicas).unwrap_or(usize::MAX);
        self.supervisor
            .scale(id, n, reason)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(map_err)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<LogLine>, BackendError> {
        self.supervisor
            .logs(id)
            .map(|ring| ring.tail(lines))
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))
    }
}
