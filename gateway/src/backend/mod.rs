//! The one interface between the gateway and wherever plugins run.
//!
//! - [`local::LocalBackend`]: child processes under the local supervisor (`bkg up`).
//! - [`kubernetes::KubernetesBackend`]: Plugin resources run by `bkg operator` (Plugins and
//!   EndpointSlices).

pub mod kubernetes;
pub mod local;

use std::net::SocketAddr;
use std::sync::Arc;

use bkg_core::Plugin;
use bkg_core::wire::{Instance, LogLine};

/// What the invoke path needs: the plugin's effective manifest (shared, never copied per call)
/// and its ready endpoints. Status and instances are left out; when no endpoint is ready the
/// caller asks [`Backend::get`] why.
#[derive(Clone, Debug)]
pub struct Route {
    pub plugin: Arc<Plugin>,
    /// Same value as [`PluginView::generation`] (validator caches key on it).
    pub generation: u64,
    /// Address of each ready instance.
    pub endpoints: Vec<SocketAddr>,
}

/// The socket address of an `http://ip:port` endpoint; runtimes are addressed by IP (local
/// children on loopback, pods by the IPs of their EndpointSlices).
pub fn socket_addr(endpoint: &str) -> Option<SocketAddr> {
    endpoint.strip_prefix("http://")?.parse().ok()
}

impl From<PluginView> for Route {
    fn from(view: PluginView) -> Self {
        Self {
            endpoints: view
                .ready_endpoints()
                .into_iter()
                .filter_map(socket_addr)
                .collect(),
            generation: view.generation,
            plugin: Arc::new(view.plugin),
        }
    }
}

/// A plugin as the gateway routes to it.
#[derive(Clone, Debug)]
pub struct PluginView {
    /// Effective manifest with observed status.
    pub plugin: Plugin,
    /// Changes whenever the spec changes (validator caches key on it).
    pub generation: u64,
    pub instances: Vec<Instance>,
    /// Locally: the error of the newest manifest file while an older version runs (or none
    /// ever did). A cluster reports it through the Plugin's conditions instead.
    pub manifest_error: Option<String>,
}

impl PluginView {
    /// Endpoints (`http://host:port`) of ready instances.
    pub fn ready_endpoints(&self) -> Vec<&str> {
        self.instances
            .iter()
            .filter(|i| i.ready)
            .filter_map(|i| i.endpoint.as_deref())
            .collect()
    }
}

/// Why a backend refused an action.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("no plugin {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// Where plugins run: listing, lifecycle, config and logs.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `local` or `kubernetes`, shown on `/healthz`.
    fn mode(&self) -> &'static str;
    async fn list(&self) -> Vec<PluginView>;
    async fn get(&self, id: &str) -> Option<PluginView>;
    /// The invoke path's view of one plugin; backends override it to avoid copying manifests.
    async fn route(&self, id: &str) -> Option<Route> {
        self.get(id).await.map(Route::from)
    }
    /// Every alias and the plugins it routes to. Backends keep this up to date as specs change
    /// (the default derives it from a full listing, for backends that track nothing).
    async fn aliases(&self) -> Arc<crate::aliases::AliasTable> {
        let views = self.list().await;
        Arc::new(crate::aliases::AliasTable::build(
            views.iter().map(|v| &v.plugin),
        ))
    }
    async fn start(&self, id: &str) -> Result<(), BackendError>;
    async fn stop(&self, id: &str) -> Result<(), BackendError>;
    async fn restart(&self, id: &str) -> Result<(), BackendError>;
    async fn set_config(&self, id: &str, config: serde_json::Value) -> Result<(), BackendError>;
    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<LogLine>, BackendError>;
    /// Sets the replica count of a plugin whose `spec.scaling` owns it: the autoscaler's
    /// decision (`crate::scale`), clamped by the backend to the plugin's bounds. Returns the
    /// count now wanted. `reason` is recorded with the change (log line, Event).
    async fn scale(&self, id: &str, replicas: u32, reason: &str) -> Result<u32, BackendError> {
        let _ = (replicas, reason);
        Err(BackendError::Unavailable(format!(
            "the {} backend cannot scale plugin {id:?}",
            self.mode()
        )))
    }
}
