//! The local backend: plugins are child processes of this host's supervisor.

use bkg_core::wire::LogLine;
use bkg_operator::local::{self, Snapshot, Supervisor};

use super::{Backend, BackendError, PluginView, Route};

/// Adapts the local supervisor to the gateway's backend interface.
#[derive(Clone)]
pub struct LocalBackend {
    supervisor: Supervisor,
}

impl LocalBackend {
    pub fn new(supervisor: Supervisor) -> Self {
        Self { supervisor }
    }
}

fn view(s: Snapshot) -> PluginView {
    PluginView {
        plugin: s.plugin,
        generation: s.generation,
        instances: s.instances,
    }
}

fn map_err(e: local::Error) -> BackendError {
    match e {
        local::Error::NotFound(id) => BackendError::NotFound(id),
        e @ local::Error::InvalidManifest { .. } => BackendError::Conflict(e.to_string()),
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

    async fn start(&self, id: &str) -> Result<(), BackendError> {
        self.supervisor.start(id).map_err(map_err)
    }

    async fn stop(&self, id: &str) -> Result<(), BackendError> {
        self.supervisor.stop(id).map_err(map_err)
    }

    async fn restart(&self, id: &str) -> Result<(), BackendError> {
        self.supervisor.restart(id).map_err(map_err)
    }

    async fn set_config(&self, id: &str, config: serde_json::Value) -> Result<(), BackendError> {
        self.supervisor.set_config(id, config).map_err(map_err)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<LogLine>, BackendError> {
        self.supervisor
            .logs(id)
            .map(|ring| ring.tail(lines))
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))
    }
}
