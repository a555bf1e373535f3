//! The brainml plugin: classical and custom models exported to ONNX, run with tract (pure
//! Rust, no native runtime, no download).
//!
//! | capability | does |
//! |---|---|
//! | `predict` | named input tensors (`{"inputs": {"X": {"shape": [2, 4], "data": [...]}}}` or nested arrays) → the named outputs `{"outputs": {"label": {"dtype", "shape", "data"}, ...}}` |
//!
//! ```text
//!  start: model.path / Hub file ──▶ bytes ──▶ Model::load (checks, tract optimize) ──▶ Signature
//!                                                                  │
//!            capabilities(): predict's input/output schemas ◀──────┤
//!  invoke: payload ──tensor::parse_input (422 naming /inputs/X)──▶ WorkerPool (429 when full)
//!                                             ──▶ `workers` threads: plan.run ──▶ outputs JSON
//! ```
//!
//! Inference runs on the plugin API's [`WorkerPool`]: at most `queue_capacity` requests are
//! accepted and not yet answered (the rest are a 429 at once), on `workers` OS threads, never
//! on tokio's. The plan is shared: tract's `SimplePlan::run` takes `&self` and keeps each run's
//! state on the calling thread.
//!
//! The schemas `predict` reports are derived from the model's signature once it is loaded, so
//! the runtime reads the capabilities again after `start` and the gateway validates payloads
//! against the model's own names, dtypes and shapes.

#![forbid(unsafe_code)]

mod error;
mod model;
mod schema;
pub mod signature;
mod source;
mod tensor;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bkg_plugin_api::worker_pool::WorkerPool;
use bkg_plugin_api::{
    CapabilityDescriptor, InvokeContext, Plugin, PluginError, StartContext, async_trait,
};
use serde_json::{Map, Value, json};
use tract_onnx::prelude::Tensor;

pub use error::Error;
pub use model::Model;
pub use source::ModelSource;

/// The capability's id.
pub const PREDICT: &str = "predict";

/// Creates the plugin; the runtime calls this once per process.
pub fn new_plugin() -> Box<dyn Plugin> {
    Box::new(Brainml::default())
}

fn default_queue_capacity() -> usize {
    64
}

fn default_workers() -> usize {
    2
}

/// `spec.config`: which model, and how much work is accepted at once.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "brainml plugin config")]
pub struct BrainmlConfig {
    /// The ONNX model: `{path}` (relative to `BKG_MODEL_ROOT` when set) or
    /// `{model_id, file, revision?}` on the Hugging Face Hub.
    pub model: ModelSource,
    /// Requests accepted and not yet answered; more are refused with 429.
    #[serde(default = "default_queue_capacity")]
    #[schemars(range(min = 1, max = 65536))]
    pub queue_capacity: usize,
    /// Threads running the model, each on one request at a time.
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: usize,
}

/// The JSON Schema of `spec.config` (draft 2020-12), as `plugins/brainml/config.schema.json`
/// holds it.
pub fn config_schema() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<BrainmlConfig>();
    Value::from(schema)
}

/// Reads a config (the manifest's `spec.config`), with the bounds its schema states.
pub fn parse_config(value: &Value) -> Result<BrainmlConfig, PluginError> {
    if value.is_null() || value.as_object().is_some_and(Map::is_empty) {
        return Err(PluginError::Config(
            "`model` is required: {path} of an .onnx file, or {model_id, file} on the Hub".into(),
        ));
    }
    let config: BrainmlConfig = serde_json::from_value(value.clone())
        .map_err(|e| PluginError::Config(format!("the config does not match its schema: {e}")))?;
    if !(1..=65536).contains(&config.queue_capacity) {
        return Err(PluginError::Config(
            "`queue_capacity` must be 1 to 65536".into(),
        ));
    }
    if !(1..=64).contains(&config.workers) {
        return Err(PluginError::Config("`workers` must be 1 to 64".into()));
    }
    Ok(config)
}

/// The `predict` descriptor; the schemas are the model's once one is loaded.
pub fn predict_descriptor(signature: Option<&signature::Signature>) -> CapabilityDescriptor {
    let (input_schema, output_schema) = match signature {
        Some(s) => (schema::input_schema(s), schema::output_schema(s)),
        None => (schema::unloaded_input_schema(), json!({"type": "object"})),
    };
    CapabilityDescriptor {
        id: PREDICT.into(),
        name: "Predict".into(),
        description: "Runs the ONNX model on named input tensors (shape + row-major data, or \
                      nested arrays) and returns its named outputs."
            .into(),
        input_schema,
        output_schema,
        ..CapabilityDescriptor::default()
    }
}

/// The inference queue: input tensors in, the model's outputs (or its error) out.
type Queue = WorkerPool<Vec<Tensor>, Result<Vec<Tensor>, Error>>;

struct Started {
    model: Arc<Model>,
    queue: Queue,
    source: String,
}

#[derive(Default)]
struct Brainml {
    started: OnceLock<Started>,
}

impl Brainml {
    /// Checks the payload against the signature and builds the input tensors (in the model's
    /// order) and the indices of the outputs asked for.
    fn prepare(model: &Model, payload: &Value) -> Result<(Vec<Tensor>, Vec<usize>), Error> {
        let Value::Object(payload) = payload else {
            return Err(Error::field(
                "/",
                "the payload must be an object with `inputs`",
            ));
        };
        if let Some(key) = payload
            .keys()
            .find(|k| !matches!(k.as_str(), "inputs" | "outputs"))
        {
            return Err(Error::field(
                &format!("/{}", tensor::escape(key)),
                "unknown field (the payload has `inputs` and optionally `outputs`)",
            ));
        }
        let sig = &model.signature;
        let inputs = match payload.get("inputs") {
            Some(Value::Object(inputs)) => inputs,
            Some(_) => {
                return Err(Error::field(
                    "/inputs",
                    "must be an object of named tensors",
                ));
            }
            None => return Err(Error::field("/inputs", "is required")),
        };
        let names = || {
            sig.inputs
                .iter()
                .map(|s| format!("{} ({})", s.name, s.describe()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(unknown) = inputs
            .keys()
            .find(|k| !sig.inputs.iter().any(|s| &s.name == *k))
        {
            return Err(Error::field(
                &format!("/inputs/{}", tensor::escape(unknown)),
                format!(
                    "the model has no input {unknown:?}; its inputs: {}",
                    names()
                ),
            ));
        }
        let mut bound = HashMap::new();
        let tensors = sig
            .inputs
            .iter()
            .map(|spec| match inputs.get(&spec.name) {
                Some(value) => tensor::parse_input(spec, value, &mut bound),
                None => Err(Error::field(
                    &format!("/inputs/{}", tensor::escape(&spec.name)),
                    format!(
                        "is required: the model's {} is {}",
                        spec.name,
                        spec.describe()
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let wanted = match payload.get("outputs") {
            None | Some(Value::Null) => (0..sig.outputs.len()).collect(),
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .and_then(|n| sig.outputs.iter().position(|o| o.name == n))
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                sig.outputs.iter().map(|o| o.name.as_str()).collect();
                            Error::field(
                                &format!("/outputs/{i}"),
                                format!("must name one of the model's outputs: {known:?}"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(Error::field(
                    "/outputs",
                    "must be a non-empty array of output names",
                ));
            }
        };
        Ok((tensors, wanted))
    }
}

#[async_trait]
impl Plugin for Brainml {
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn config_schema(&self) -> Value {
        config_schema()
    }

    fn capabilities(&self) -> Vec<CapabilityDescriptor> {
        let signature = self.started.get().map(|s| &s.model.signature);
        vec![predict_descriptor(signature)]
    }

    async fn start(&self, ctx: StartContext) -> Result<(), PluginError> {
        let config = parse_config(&ctx.config)?;
        let source = config.model.clone();
        let (model, path) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let path = source.materialize()?;
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::Model(format!(
                    "cannot read the model file {}: {e}",
                    path.display()
                ))
            })?;
            Ok((Model::load(&bytes, &path.display().to_string())?, path))
        })
        .await
        .map_err(|e| PluginError::failed(format!("the model loader stopped: {e}")))?
        .map_err(PluginError::from)?;
        let model = Arc::new(model);
        let queue = WorkerPool::spawn("bkg-brainml", config.workers, config.queue_capacity, |_| {
            let model = Arc::clone(&model);
            move |inputs| model.run(inputs)
        })
        .map_err(|e| Error::Inference(format!("cannot start an inference thread: {e}")))?;
        tracing::info!(
            plugin_id = %ctx.plugin_id,
            model = %path.display(),
            inputs = ?model.signature.inputs.iter().map(|s| format!("{}: {}", s.name, s.describe())).collect::<Vec<_>>(),
            outputs = ?model.signature.outputs.iter().map(|s| format!("{}: {}", s.name, s.describe())).collect::<Vec<_>>(),
            workers = config.workers,
            "brainml plugin started"
        );
        // A second start keeps the first model: the runtime starts a plugin once per process.
        let _ = self.started.set(Started {
            model,
            queue,
            source: config.model.display_name(),
        });
        Ok(())
    }

    async fn invoke(
        &self,
        capability: &str,
        payload: Value,
        ctx: InvokeContext,
    ) -> Result<Value, PluginError> {
        if capability != PREDICT {
            return Err(PluginError::UnknownCapability(capability.to_owned()));
        }
        let started = self
            .started
            .get()
            .ok_or_else(|| PluginError::NotReady("no model is loaded".into()))?;
        let (inputs, wanted) = Self::prepare(&started.model, &payload)?;
        let outputs = started
            .queue
            .run(inputs, Some(ctx.deadline))
            .await
            .map_err(Error::from)??;
        let mut answer = Map::new();
        for ix in wanted {
            let (Some(spec), Some(tensor)) =
                (started.model.signature.outputs.get(ix), outputs.get(ix))
            else {
                return Err(PluginError::failed(
                    "the model answered fewer outputs than it declares",
                ));
            };
            answer.insert(spec.name.clone(), tensor::output_json(tensor)?);
        }
        tracing::debug!(request_id = %ctx.request_id, "predicted");
        Ok(json!({"outputs": answer}))
    }

    fn details(&self) -> Map<String, Value> {
        let mut details = Map::new();
        if let Some(s) = self.started.get() {
            details.insert("model".into(), json!(s.source));
            let list = |specs: &[signature::TensorSpec]| -> Value {
                specs
                    .iter()
                    .map(|t| json!({"name": t.name, "dtype": t.dtype.name(), "shape": t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>()}))
                    .collect()
            };
            details.insert("inputs".into(), list(&s.model.signature.inputs));
            details.insert("outputs".into(), list(&s.model.signature.outputs));
        }
        details
    }

    fn telemetry(&self) -> Map<String, Value> {
        let mut t = Map::new();
        if let Some(s) = self.started.get() {
            t.insert("queue_depth".into(), json!(s.queue.depth()));
        }
        t
    }
}

#[cfg(test)]
mod tests;
