//! A loaded model: tokenizer, encoder network and pooling, usable synchronously.
//!
//! The plugin hands an `Arc<Embedder>` to its batching thread and tokenizes on the caller's
//! task; benchmarks and tests call [`Embedder::embed`] directly.

use std::path::Path;

use candle_core::Device;
use serde::Serialize;

use crate::artifacts::ModelDir;
use crate::config::{DeviceChoice, Dtype, ModelSource};
use crate::error::{Error, Result};
use crate::layers::Weights;
use crate::models::{ClassifierHead, EmbeddingModel, ModelConfig, PackedBatch, Task};
use crate::pooling::{Pooling, l2_normalize};
use crate::source;
use crate::tokenize::{Encoded, Encoder};

/// Overrides applied on top of what the model directory says.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: Dtype,
    pub device: Device,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    /// Use the hand-written AVX-512 kernels where the CPU has them (false: candle only).
    pub cpu_kernels: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: Dtype::F32,
            device: Device::Cpu,
            pooling: None,
            normalize: None,
            cpu_kernels: true,
        }
    }
}

/// Facts about the loaded model, reported in responses and `details()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: &'static str,
    pub dimensions: usize,
    pub max_seq_length: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub dtype: &'static str,
    pub device: String,
    /// `avx512-bf16`, `avx512-f32` or `candle`: which kernels the dense layers run on.
    pub kernels: &'static str,
    /// What this model serves: `model.infer` and `embeddings` (an embedder), `rerank` and
    /// `classify` (a one-label cross-encoder) or `classify` (a classifier).
    pub capabilities: Vec<&'static str>,
    /// A classifier's labels (`id2label`), in logit order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Names of the prompts a request may pick with `prompt_name`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_prompt_name: Option<String>,
}

/// Embedders load from safetensors; a GGUF file holds a language model to generate with.
fn embedder_dir(files: source::ModelFiles) -> Result<std::path::PathBuf> {
    match files.gguf {
        None => Ok(files.dir),
        Some(path) => Err(Error::Config(format!(
            "model.gguf_file {}: GGUF files hold causal language models (chat, completions), not embedders",
            path.display()
        ))),
    }
}

pub struct Embedder {
    encoder: Encoder,
    model: Box<dyn EmbeddingModel>,
    /// A cross-encoder's or classifier's head: batches then yield logits, not embeddings.
    head: Option<ClassifierHead>,
    prompts: std::collections::BTreeMap<String, String>,
    info: ModelInfo,
}

impl Embedder {
    /// Fetches (if from the Hub) and loads a model. Blocking: call from a blocking thread.
    pub fn load_source(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let dir = embedder_dir(source::materialize(source)?)?;
        Self::load(&dir, source.display_name(), opts)
    }

    /// [`Embedder::load_source`] with an explicit HF cache directory (`…/hub`) and offline switch.
    pub fn load_source_with(
        source: &ModelSource,
        hf_cache: &Path,
        offline: bool,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let dir = embedder_dir(source::materialize_with(
            source,
            hf_hub::Cache::new(hf_cache.to_owned()),
            offline,
        )?)?;
        Self::load(&dir, source.display_name(), opts)
    }

    /// Loads a model directory in HF layout.
    pub fn load(dir: &Path, name: String, opts: &LoadOptions) -> Result<Self> {
        let started = std::time::Instant::now();
        let files = ModelDir::open(dir)?;
        let config = ModelConfig::from_json(&files.config_json)?;
        let dtype = opts.dtype.candle();
        let mut weights = Weights::load(&files.weights, dtype, &opts.device, opts.cpu_kernels)?;
        if weights.cpu_kernels() {
            crate::kernels::tune_allocator();
        }
        let built = config.build(&mut weights, &opts.device, dtype)?;
        let (model, head) = (built.encoder, built.head);
        let weights_kernels = match weights.packing() {
            _ if model.candle_transformers() => "candle",
            crate::layers::Packing::Bf16 => "avx512-bf16",
            crate::layers::Packing::F32 => "avx512-f32",
            crate::layers::Packing::None => "candle",
        };
        drop(weights);
        // sentence-transformers' max_seq_length wins; the tokenizer's limit and the position
        // table are fallbacks and hard ceilings.
        let max_len = files
            .sentence
            .max_seq_length
            .or(files.tokenizer_max_length)
            .unwrap_or(model.max_positions())
            .min(model.max_positions());
        let encoder = Encoder::from_file(&files.tokenizer, max_len)?;
        let info = ModelInfo {
            name,
            architecture: model.architecture(),
            dimensions: model.hidden_size(),
            max_seq_length: max_len,
            pooling: opts
                .pooling
                .or(files.sentence.pooling)
                .unwrap_or(config.default_pooling()),
            normalize: opts.normalize.unwrap_or(files.sentence.normalize),
            dtype: match model.f32_only() {
                true => "f32",
                false => opts.dtype.as_str(),
            },
            device: device_name(&opts.device),
            kernels: weights_kernels,
            capabilities: config.task.capabilities(),
            labels: match &config.task {
                Task::Embed => Vec::new(),
                Task::Classify { labels } => labels.clone(),
            },
            prompts: files.sentence.prompts.keys().cloned().collect(),
            default_prompt_name: files.sentence.default_prompt_name.clone(),
        };
        tracing::info!(model = %info.name, dir = %dir.display(), dimensions = info.dimensions,
            max_seq_length = info.max_seq_length, pooling = info.pooling.as_str(), normalize = info.normalize,
            elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(Self {
            encoder,
            model,
            head,
            prompts: files.sentence.prompts,
            info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The model serves `capability` (see [`ModelInfo::capabilities`]).
    pub fn serves(&self, capability: &str) -> bool {
        self.info.capabilities.contains(&capability)
    }

    /// The text a prompt puts before each input: the named one, else the model's default.
    /// An unknown name is refused, naming the field and the choices.
    pub fn prompt(&self, name: Option<&str>) -> Result<Option<&str>> {
        match name.or(self.info.default_prompt_name.as_deref()) {
            None => Ok(None),
            Some(n) => self
                .prompts
                .get(n)
                .map(|p| Some(p.as_str()))
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "prompt_name: {n:?} is not one of this model's prompts ({})",
                        match self.prompts.is_empty() {
                            true => "it has none".to_owned(),
                            false => self.info.prompts.join(", "),
                        }
                    ))
                }),
        }
    }

    /// For already tokenized inputs, in input order: pooled (not yet normalized) embeddings,
    /// or, for a model with a classification head, the logits of each input.
    pub fn embed_encoded(&self, seqs: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let batch = PackedBatch::new(seqs.iter().map(|e| (&e.ids[..], &e.type_ids[..])));
        let hidden = self.model.forward(&batch)?;
        let out = match &self.head {
            None => self.info.pooling.apply(&hidden, &batch.offsets)?,
            Some(head) => head.forward(&hidden, &batch.offsets)?,
        };
        Ok(out.to_vec2::<f32>()?)
    }

    /// Tokenizes and embeds `texts` as one batch; normalizes as the model's settings say.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S], truncate: bool) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encoder.encode_all(texts, truncate)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        let mut out = self.embed_encoded(&refs)?;
        if self.info.normalize {
            out.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok(out)
    }
}

/// Picks the compute device. CUDA needs the `cuda` feature; `auto` falls back to the CPU.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => cuda_device().map_err(Error::Device),
        DeviceChoice::Auto => Ok(cuda_device().unwrap_or(Device::Cpu)),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> std::result::Result<Device, String> {
    Device::new_cuda(0).map_err(|e| format!("CUDA device 0 is not usable: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> std::result::Result<Device, String> {
    Err("this build has no CUDA support (rebuild with --features cuda)".into())
}

pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal".into(),
    }
}
