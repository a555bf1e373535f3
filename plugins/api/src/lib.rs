//! The plugin contract: what a bkg plugin implements and nothing more.
//!
//! ```text
//!   plugin-runtime ──(hosts one)──▶ Box<dyn Plugin> ◀── plugins/echo, plugins/candle, …
//! ```
//!
//! A plugin crate depends on this crate only: never on the runtime, axum or kube. The runtime
//! owns HTTP, timeouts, concurrency limits, metrics exposition and logs; a plugin owns its
//! capabilities and their work.

#![forbid(unsafe_code)]

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use async_trait::async_trait;
pub use prometheus_client;

/// One thing a plugin can do, with JSON Schemas for its input and output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CapabilityDescriptor {
    pub id: String,
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
}

/// What a plugin learns when it starts.
#[derive(Clone, Debug)]
pub struct StartContext {
    /// The plugin id (`metadata.name` of its manifest).
    pub plugin_id: String,
    /// The manifest's free-form `spec.config` (an empty object when absent).
    pub config: Value,
}

/// What a plugin learns about one invoke.
#[derive(Clone, Debug)]
pub struct InvokeContext {
    /// The request id the gateway assigned; echo it in logs.
    pub request_id: String,
    /// When the runtime will answer 504 on the plugin's behalf; long work should stop by then.
    pub deadline: Instant,
}

/// Typed plugin failures. The runtime maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin does not offer this capability (404).
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// The payload is well-formed JSON but the plugin cannot use it (422).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The plugin cannot serve this now, e.g. no model is loaded (503).
    #[error("not ready: {0}")]
    NotReady(String),
    /// The plugin's queue is full; retry after the given seconds (429).
    #[error("overloaded: retry after {retry_after_secs}s")]
    Overloaded { retry_after_secs: u32 },
    /// The plugin's start-up configuration is unusable.
    #[error("invalid config: {0}")]
    Config(String),
    /// The work failed (500).
    #[error("{message}")]
    Failed {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl PluginError {
    /// A failure with a message and no underlying error.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            source: None,
        }
    }

    /// A stable, low-cardinality name for metric labels and problem types.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownCapability(_) => "unknown_capability",
            Self::InvalidInput(_) => "invalid_input",
            Self::NotReady(_) => "not_ready",
            Self::Overloaded { .. } => "overloaded",
            Self::Config(_) => "invalid_config",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A plugin hosted by the bkg plugin-runtime: one instance per process.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Version of the implementation.
    fn version(&self) -> &'static str;

    /// The capabilities this implementation offers.
    fn capabilities(&self) -> Vec<CapabilityDescriptor>;

    /// Prepares the plugin (e.g. loads its model). The runtime reports ready only after this
    /// returns `Ok`.
    async fn start(&self, ctx: StartContext) -> Result<(), PluginError>;

    /// Runs one capability.
    async fn invoke(
        &self,
        capability: &str,
        payload: Value,
        ctx: InvokeContext,
    ) -> Result<Value, PluginError>;

    /// Releases resources before the process exits, after in-flight invokes have drained.
    async fn stop(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Facts for the runtime's info endpoint, e.g. the compute device.
    fn details(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Plugin-specific telemetry values, e.g. queue depth.
    fn telemetry(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Registers plugin-specific Prometheus metrics; the runtime serves them on `/metrics`.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}
