//! The plugin's start-up configuration (the manifest's `spec.config`).
//!
//! ```json
//! {
//!   "model": {"model_id": "sentence-transformers/all-MiniLM-L6-v2", "revision": "main"},
//!   "normalize": null, "truncate": true, "pooling": null,
//!   "batching": true, "max_batch_size": 32, "max_batch_tokens": 16384,
//!   "max_wait_ms": 2, "queue_capacity": 1024, "dtype": "f32", "device": "auto",
//!   "kernels": "auto", "model_root": "/models"
//! }
//! ```
//!
//! Every key is optional. Unknown keys are refused so a typo (`max_batchsize`) is not
//! silently ignored.
//!
//! [`schema`] is the JSON Schema of this config, derived from [`PluginConfig`] with schemars
//! (`additionalProperties: false`, the same bounds [`PluginConfig::from_value`] checks). The
//! operator and `bkg up` must not link Candle, so they read the committed copy,
//! `plugins/candle/config.schema.json`, through `bkg_core::plugin_config`; a test here holds
//! that file to this type (`make config-schemas` rewrites it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pooling::Pooling;

/// The model root when the config names none: relative model paths resolve against it, and
/// `model.load` may only load directories inside it (see [`confine`]).
pub const MODEL_ROOT_ENV: &str = "BKG_MODEL_ROOT";

/// Where a model comes from: `{path, gguf_file?}` or `{model_id, revision?, gguf_file?,
/// tokenizer_id?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelSource {
    /// A directory in Hugging Face layout on local disk.
    Path {
        path: PathBuf,
        /// A quantized `.gguf` file in the directory to generate with (Llama, Mistral, Qwen2),
        /// instead of `model.safetensors`; `tokenizer.json` and `tokenizer_config.json` lie
        /// beside it.
        #[serde(default)]
        gguf_file: Option<String>,
    },
    /// A Hub repository, downloaded into the HF cache (`HF_HOME`).
    Hub {
        model_id: String,
        #[serde(default)]
        revision: Option<String>,
        /// A quantized `.gguf` file of the repository to generate with; only it is fetched.
        #[serde(default)]
        gguf_file: Option<String>,
        /// With `gguf_file`: the repository of the tokenizer files (GGUF repositories rarely
        /// ship `tokenizer.json`), e.g. the model the GGUF was converted from; its main
        /// revision. Default: `model_id`.
        #[serde(default)]
        tokenizer_id: Option<String>,
    },
}

impl ModelSource {
    /// A short name for responses and logs.
    pub fn display_name(&self) -> String {
        let (name, gguf) = match self {
            Self::Path { path, gguf_file } => (path.display().to_string(), gguf_file),
            Self::Hub {
                model_id,
                gguf_file,
                ..
            } => (model_id.clone(), gguf_file),
        };
        match gguf {
            Some(file) => format!("{name}/{file}"),
            None => name,
        }
    }

    /// A local directory, no GGUF.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Path {
            path: path.into(),
            gguf_file: None,
        }
    }

    /// A Hub repository's safetensors model.
    pub fn hub(model_id: impl Into<String>, revision: Option<String>) -> Self {
        Self::Hub {
            model_id: model_id.into(),
            revision,
            gguf_file: None,
            tokenizer_id: None,
        }
    }

    /// The `.gguf` file named, if any.
    pub fn gguf_file(&self) -> Option<&str> {
        match self {
            Self::Path { gguf_file, .. } | Self::Hub { gguf_file, .. } => gguf_file.as_deref(),
        }
    }

    /// Resolves a relative path against the model root, so manifests can name models
    /// relative to a volume mount without knowing where it is. For the start-up config only:
    /// the manifest is the operator's, while `model.load` paths are confined with [`confine`].
    pub fn resolved(self, root: Option<&Path>) -> Self {
        match (self, root) {
            (Self::Path { path, gguf_file }, Some(root)) if path.is_relative() => Self::Path {
                path: root.join(path),
                gguf_file,
            },
            (other, _) => other,
        }
    }
}

/// The directory a `model.load` request names, confined to the model root.
///
/// The request's path (relative to the root, or absolute) is canonicalized, which resolves
/// `..` and every symlink, and must then lie inside the canonical root. Every way of failing
/// (no such path, not a directory, outside the root, through a symlink that leads out) is the
/// one [`Error::ModelPathRefused`], which names no path: a caller cannot tell what exists
/// outside the root. Blocking (file system).
pub fn confine(root: Option<&Path>, requested: &Path) -> Result<PathBuf> {
    let root = root.ok_or(Error::NoModelRoot)?;
    let root = std::fs::canonicalize(root).map_err(|_| Error::NoModelRoot)?;
    let real = std::fs::canonicalize(root.join(requested)).map_err(|_| Error::ModelPathRefused)?;
    if real.starts_with(&root) && real.is_dir() {
        Ok(real)
    } else {
        Err(Error::ModelPathRefused)
    }
}

/// Weight and activation precision: `f32`, `bf16` (half the memory traffic; kept only where it
/// holds cosine > 0.999 against f32) or `f16` (CUDA only: `device: cuda`).
// Variants carry no doc comments: schemars would then describe them as a `oneOf` of consts, and
// a wrong value would be reported as "not valid under any of the schemas" instead of naming
// the choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
    // GPU tensor cores run f16 as fast as bf16 with three more mantissa bits. Candle's CPU
    // matmul in f16 has no fast kernel, so the config refuses it without CUDA.
    F16,
}

impl Dtype {
    pub fn candle(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

/// Why `dtype: f16` is refused without `device: cuda`; the schema's rule carries it too.
pub const F16_NEEDS_CUDA: &str =
    "dtype f16 needs a CUDA device (device: cuda); on CPU use f32 or bf16";

/// Which CPU kernels run the model: `auto` (the hand-written AVX-512 kernels when the CPU has
/// them, else candle) or `candle` (candle's portable ops only: the reference path, and a switch
/// if a kernel misbehaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    #[default]
    Auto,
    Candle,
}

/// Which compute device to use: `auto` (CUDA when built with the `cuda` feature and a GPU is
/// present, else CPU), `cpu` or `cuda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// The Candle plugin's `spec.config`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(title = "Candle plugin config", transform = f16_needs_cuda)]
pub struct PluginConfig {
    /// The model loaded at start; none means start empty and wait for `model.load`.
    pub model: Option<ModelSource>,
    /// L2-normalize embeddings; `None` follows the model (sentence-transformers `Normalize`).
    pub normalize: Option<bool>,
    /// Truncate over-long inputs to the model's limit (reported per input) instead of refusing.
    pub truncate: bool,
    /// Override the model's pooling (`mean`, `cls`, `max`, `last_token`).
    pub pooling: Option<Pooling>,
    /// Off: every input runs alone (batch size 1), for benchmarks and debugging.
    pub batching: bool,
    /// Most inputs in one forward pass.
    #[schemars(range(min = 1))]
    pub max_batch_size: usize,
    /// Upper bound on padded tokens (batch rows × longest input) in one forward pass.
    #[schemars(range(min = 1))]
    pub max_batch_tokens: usize,
    /// How long the queue waits for company before running a non-full batch.
    pub max_wait_ms: u64,
    /// Inputs that may wait at once; beyond this requests are refused with 429.
    #[schemars(range(min = 1))]
    pub queue_capacity: usize,
    /// Most texts one `rerank` call may score (and inputs one `classify` call may hold);
    /// more are refused with 422 naming `texts` (`inputs`).
    #[schemars(range(min = 1))]
    pub max_rerank_texts: usize,
    pub dtype: Dtype,
    pub device: DeviceChoice,
    pub kernels: Kernels,
    /// The only directory `model.load` may load paths from (and the base of relative ones);
    /// unset, `BKG_MODEL_ROOT`; neither set, `model.load` by path is refused.
    pub model_root: Option<PathBuf>,
    /// Text generation, when the model is a causal language model (Llama, Qwen2, Mistral, Phi-3, Gemma; GGUF Llama, Mistral, Qwen2).
    pub generation: GenerationConfig,
}

/// How many conversations a causal language model serves at once, and how long they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// Conversations generating at once; they share the model's decode steps.
    #[schemars(range(min = 1))]
    pub max_active: usize,
    /// Requests waiting for a place; beyond this they are refused with 429.
    #[schemars(range(min = 1))]
    pub max_queued: usize,
    /// New tokens when a request sets no `max_tokens`.
    #[schemars(range(min = 1))]
    pub max_tokens: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        let l = crate::generate::Limits::default();
        Self {
            max_active: l.max_active,
            max_queued: l.max_queued,
            max_tokens: l.default_max_tokens,
        }
    }
}

impl GenerationConfig {
    pub fn limits(&self) -> crate::generate::Limits {
        crate::generate::Limits {
            max_active: self.max_active,
            max_queued: self.max_queued,
            default_max_tokens: self.max_tokens,
        }
    }
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            model: None,
            normalize: None,
            truncate: true,
            pooling: None,
            batching: true,
            max_batch_size: 32,
            max_batch_tokens: 16_384,
            max_wait_ms: 2,
            queue_capacity: 1024,
            max_rerank_texts: 256,
            dtype: Dtype::F32,
            device: DeviceChoice::Auto,
            kernels: Kernels::Auto,
            model_root: None,
            generation: GenerationConfig::default(),
        }
    }
}

/// The rule a struct schema cannot say by itself: `dtype: f16` only with `device: cuda`. Its
/// `description` is the message a refusal shows (`bkg_core::plugin_config` reports a failed
/// `then` by its description).
fn f16_needs_cuda(schema: &mut Schema) {
    schema.insert(
        "if".into(),
        json_schema!({"properties": {"dtype": {"const": "f16"}}, "required": ["dtype"]}).into(),
    );
    schema.insert(
        "then".into(),
        json_schema!({
            "description": F16_NEEDS_CUDA,
            "properties": {"device": {"const": "cuda"}},
            "required": ["device"]
        })
        .into(),
    );
}

/// The JSON Schema of `spec.config` (draft 2020-12), as `plugins/candle/config.schema.json`
/// holds it.
pub fn schema() -> serde_json::Value {
    let schema = SchemaGenerator::default().into_root_schema_for::<PluginConfig>();
    serde_json::Value::from(schema)
}

impl PluginConfig {
    /// Parses and checks `spec.config`; `null` counts as empty.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        let config: Self = if value.is_null() {
            Self::default()
        } else {
            serde_json::from_value(value.clone()).map_err(|e| Error::Config(e.to_string()))?
        };
        config.validate()
    }

    fn validate(mut self) -> Result<Self> {
        if self.max_batch_size == 0 {
            return Err(Error::Config("max_batch_size must be at least 1".into()));
        }
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue_capacity must be at least 1".into()));
        }
        let g = self.generation;
        if g.max_active == 0 || g.max_queued == 0 || g.max_tokens == 0 {
            return Err(Error::Config(
                "generation: max_active, max_queued and max_tokens must be at least 1".into(),
            ));
        }
        if self.max_rerank_texts == 0 {
            return Err(Error::Config("max_rerank_texts must be at least 1".into()));
        }
        if self.max_batch_tokens == 0 {
            return Err(Error::Config("max_batch_tokens must be at least 1".into()));
        }
        if self.dtype == Dtype::F16 && self.device != DeviceChoice::Cuda {
            return Err(Error::Config(F16_NEEDS_CUDA.into()));
        }
        let root = self.model_root();
        self.model = self.model.map(|m| m.resolved(root.as_deref()));
        Ok(self)
    }

    /// The model root: the config's `model_root`, else `BKG_MODEL_ROOT`.
    pub fn model_root(&self) -> Option<PathBuf> {
        self.model_root
            .clone()
            .or_else(|| std::env::var_os(MODEL_ROOT_ENV).map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// The batching limits the queue actor runs with.
    pub fn batch_policy(&self) -> BatchPolicy {
        if self.batching {
            BatchPolicy {
                max_batch_size: self.max_batch_size,
                max_batch_tokens: self.max_batch_tokens,
                max_wait: Duration::from_millis(self.max_wait_ms),
                queue_capacity: self.queue_capacity,
            }
        } else {
            BatchPolicy {
                max_batch_size: 1,
                max_batch_tokens: self.max_batch_tokens,
                max_wait: Duration::ZERO,
                queue_capacity: self.queue_capacity,
            }
        }
    }
}

/// Limits for the batching queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_and_null_config_mean_defaults() {
        assert_eq!(
            PluginConfig::from_value(&json!({})).unwrap(),
            PluginConfig::default()
        );
        assert_eq!(
            PluginConfig::from_value(&json!(null)).unwrap(),
            PluginConfig::default()
        );
    }

    #[test]
    fn model_sources_parse() {
        let c = PluginConfig::from_value(&json!({"model": {"path": "/m"}})).unwrap();
        assert_eq!(c.model, Some(ModelSource::path("/m")));
        let c =
            PluginConfig::from_value(&json!({"model": {"model_id": "a/b", "revision": "main"}}))
                .unwrap();
        assert_eq!(c.model, Some(ModelSource::hub("a/b", Some("main".into()))));
        let c = PluginConfig::from_value(&json!({"model": {"path": "/m", "gguf_file": "q8.gguf"}}))
            .unwrap();
        assert_eq!(
            c.model.as_ref().and_then(ModelSource::gguf_file),
            Some("q8.gguf")
        );
        let c = PluginConfig::from_value(&json!({"model": {"model_id": "a/b-GGUF",
            "gguf_file": "b-q4_k_m.gguf", "tokenizer_id": "a/b"}}))
        .unwrap();
        assert_eq!(
            c.model,
            Some(ModelSource::Hub {
                model_id: "a/b-GGUF".into(),
                revision: None,
                gguf_file: Some("b-q4_k_m.gguf".into()),
                tokenizer_id: Some("a/b".into()),
            })
        );
    }

    #[test]
    fn typos_and_zero_limits_are_refused() {
        assert!(PluginConfig::from_value(&json!({"max_batchsize": 4})).is_err());
        assert!(PluginConfig::from_value(&json!({"max_batch_size": 0})).is_err());
        assert!(PluginConfig::from_value(&json!({"dtype": "f64"})).is_err());
    }

    #[test]
    fn f16_is_accepted_on_cuda_and_refused_elsewhere() {
        let c = PluginConfig::from_value(&json!({"dtype": "f16", "device": "cuda"})).unwrap();
        assert_eq!((c.dtype, c.device), (Dtype::F16, DeviceChoice::Cuda));
        for device in [json!("cpu"), json!("auto"), json!(null)] {
            let mut config = json!({"dtype": "f16"});
            if !device.is_null() {
                config["device"] = device.clone();
            }
            match PluginConfig::from_value(&config) {
                Err(Error::Config(message)) => assert_eq!(message, F16_NEEDS_CUDA, "{device}"),
                other => panic!("{device}: {other:?}"),
            }
        }
    }

    /// The schema says what `from_value` accepts: no other keys, the same enums and lower bounds.
    #[test]
    fn the_schema_describes_the_config() {
        let schema = schema();
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["properties"]["max_batch_size"]["minimum"], json!(1));
        let dtype = &schema["$defs"]["Dtype"];
        assert_eq!(dtype["enum"], json!(["f32", "bf16", "f16"]), "{dtype}");
        assert_eq!(schema["then"]["description"], json!(F16_NEEDS_CUDA));
        assert_eq!(schema["properties"].as_object().map(|p| p.len()), Some(15));
    }

    /// The committed schema (read by the operator and `bkg up`) is this type's schema.
    #[test]
    fn the_committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json");
        let on_disk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
                .unwrap_or_default();
        assert!(
            on_disk == schema(),
            "plugins/candle/config.schema.json is stale: run `make config-schemas`"
        );
    }

    #[test]
    fn batching_off_means_batches_of_one() {
        let c = PluginConfig::from_value(&json!({"batching": false})).unwrap();
        let p = c.batch_policy();
        assert_eq!(p.max_batch_size, 1);
        assert_eq!(p.max_wait, Duration::ZERO);
    }
}
