//! The plugin contract: what a bkg plugin implements and nothing more.
//!
//! ```text
//!   plugin-runtime ──(hosts one)──▶ Box<dyn Plugin> ◀── plugins/echo, plugins/candle, …
//! ```
//!
//! A plugin crate depends on this crate only: never on the runtime, axum or kube. The runtime
//! owns HTTP, timeouts, concurrency limits, metrics exposition and logs; a plugin owns its
//! capabilities and their work. [`worker_pool`] is the one piece of work most plugins share:
//! blocking inference on their own threads behind a bounded queue.

#![forbid(unsafe_code)]

pub mod worker_pool;

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use async_trait::async_trait;
pub use prometheus_client;

/// One thing a plugin can do, with JSON Schemas for its input and output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CapabilityDescriptor {
    pub id: String,
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    /// Changes the plugin for every caller (load or unload a model, …): the gateway then asks
    /// for the `admin` or `manage:<plugin>` scope, which the invoke scopes do not grant.
    #[serde(default)]
    pub management: bool,
    /// What one call costs against the gateway's rate limit; `None`, one unit.
    #[serde(default)]
    pub cost: Option<Cost>,
    /// Also answers as a stream of JSON values ([`Plugin::invoke_stream`]; the runtime's
    /// `POST /v1/invoke/{capability}/stream`, one value per NDJSON line).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
}

/// What a streaming capability yields: JSON values as the work produces them, then the end of
/// the stream. An `Err` ends it (the runtime writes it as the last line). Dropping the stream
/// means the caller went away: the plugin should stop the work.
pub type ValueStream =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<Value, PluginError>> + Send>>;

/// How much of a rate limit one call uses: `ceil(measure / per)` units, at least one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Cost {
    pub unit: CostUnit,
    /// JSON pointer to the payload field that `Inputs` and `Tokens` count; `None`, `/input`.
    #[serde(default)]
    pub field: Option<String>,
    /// Counted things per unit; `None`, 1.
    #[serde(default)]
    pub per: Option<u32>,
}

/// What a [`Cost`] counts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CostUnit {
    /// Items of the array at `field` (a single value counts as one).
    Inputs,
    /// Bytes of the payload's JSON text.
    Bytes,
    /// Estimated tokens of the text at `field`: a quarter of its UTF-8 bytes, rounded up.
    Tokens,
}

/// The protocol's one rule for integers, JSON Schema's: a number is an integer when its
/// fractional part is zero, however it is written (`3`, `3.0`, `3e0`). The gateway validates
/// payloads with this rule, so a plugin reading an integer field should read it with this
/// function rather than [`Value::as_u64`], which refuses `3.0`.
pub fn as_integer(value: &Value) -> Option<i128> {
    let n = value.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    let f = n.as_f64()?;
    // 2^127 bounds i128; larger (or non-finite) values are not integers a plugin can use.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38).then_some(f as i128)
}

/// [`as_integer`] narrowed to `u64`.
pub fn as_u64(value: &Value) -> Option<u64> {
    as_integer(value).and_then(|i| u64::try_from(i).ok())
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
/// The payload's JSON text as a [`Value`], for [`Plugin::invoke_raw`] implementations that
/// take the [`Value`] path; not JSON is the caller's error.
pub fn parse_payload(payload: &RawValue) -> Result<Value, PluginError> {
    serde_json::from_str(payload.get())
        .map_err(|e| PluginError::InvalidInput(format!("the payload is not valid JSON: {e}")))
}

#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Version of the implementation.
    fn version(&self) -> &'static str;

    /// The capabilities this implementation offers.
    fn capabilities(&self) -> Vec<CapabilityDescriptor>;

    /// The JSON Schema (draft 2020-12) of the `spec.config` this implementation accepts; the
    /// default accepts any object. A plugin derives it from its config type (schemars) so the
    /// schema cannot drift from what [`Plugin::start`] parses. The operator and `bkg up` check
    /// manifests against a committed copy before starting anything (`bkg_core::plugin_config`),
    /// since they do not link plugin code; `plugin-runtime --config-schema` prints this one.
    fn config_schema(&self) -> Value {
        serde_json::json!({"type": "object"})
    }

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

    /// Runs one capability on the payload's JSON text as the caller wrote it, and answers JSON
    /// text. The runtime calls this; the default parses into [`Value`] and calls
    /// [`Plugin::invoke`]. A plugin that must keep numbers exactly (a 60-digit integer, `-0`),
    /// which [`Value`] cannot, overrides it.
    async fn invoke_raw(
        &self,
        capability: &str,
        payload: &RawValue,
        ctx: InvokeContext,
    ) -> Result<Box<RawValue>, PluginError> {
        let output = self
            .invoke(capability, parse_payload(payload)?, ctx)
            .await?;
        serde_json::value::to_raw_value(&output)
            .map_err(|e| PluginError::failed(format!("the answer cannot be encoded: {e}")))
    }

    /// Runs a capability that declares `streaming`, answering a stream of JSON values. The
    /// default: no capability streams.
    async fn invoke_stream(
        &self,
        capability: &str,
        _payload: Value,
        _ctx: InvokeContext,
    ) -> Result<ValueStream, PluginError> {
        Err(PluginError::InvalidInput(format!(
            "capability {capability:?} does not stream"
        )))
    }

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integers_follow_json_schema() {
        for (value, want) in [
            (json!(3), Some(3)),
            (json!(3.0), Some(3)),
            (json!(-0.0), Some(0)),
            (json!(-7), Some(-7)),
            (json!(u64::MAX), Some(i128::from(u64::MAX))),
            (json!(1e3), Some(1000)),
            (json!(3.5), None),
            (json!("3"), None),
            (json!(null), None),
        ] {
            assert_eq!(as_integer(&value), want, "{value}");
        }
        assert_eq!(as_u64(&json!(1500.0)), Some(1500));
        assert_eq!(as_u64(&json!(-1)), None);
        let wide: Value = serde_json::from_str("1e300").expect("json");
        assert_eq!(as_integer(&wide), None, "beyond i128");
    }
}
