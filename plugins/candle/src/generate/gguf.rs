//! GGUF files (llama.cpp's format) run by candle-transformers' quantized Llama and Qwen2: the
//! weights stay quantized (Q8_0, Q4_0, Q4_K, …) and the matmuls run on the quantized blocks,
//! which is what makes a CPU answer small and fast.
//!
//! The tokenizer is not rebuilt from the GGUF's vocabulary: `tokenizer.json` (and
//! `tokenizer_config.json` for the chat template) lie beside the file, or come from the Hub
//! repository `tokenizer_id` names. Mistral GGUFs say `general.architecture = llama` and load
//! as Llama, as llama.cpp loads them.
//!
//! candle's quantized Llama is `Clone` (its KV cache clones with it, the weights are shared),
//! so a conversation runs a clone as with the float models. Its quantized Qwen2 is not: each
//! conversation borrows a whole instance from [`Instances`] and gives it back at its end, so
//! memory holds one copy of the weights per conversation that ran at once (at most
//! `generation.max_active`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_transformers::models::{quantized_llama, quantized_qwen2};

use crate::error::{Error, Result};

/// The `general.architecture`s a GGUF may have.
pub const SUPPORTED: &str = "llama (also Mistral), qwen2";

/// What the file's metadata says besides the weights.
pub struct Metadata {
    pub arch: String,
    pub context: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// `tokenizer.chat_template`: used when no `tokenizer_config.json` carries one.
    pub chat_template: Option<String>,
}

pub enum Quantized {
    /// Never run itself: each session runs a clone.
    Llama(Box<quantized_llama::ModelWeights>),
    Qwen2(Arc<Instances>),
}

fn bad_file(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// candle's error as a weights problem of this file: its first line only (candle appends a
/// backtrace when RUST_BACKTRACE is set).
fn weights_error(path: &Path, e: candle_core::Error) -> Error {
    Error::Weights {
        path: path.to_owned(),
        message: e.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}

fn read(path: &Path) -> Result<(File, Content)> {
    let mut file = File::open(path).map_err(|e| bad_file(path, e))?;
    let content = Content::read(&mut file).map_err(|e| bad_file(path, format!("not GGUF: {e}")))?;
    Ok((file, content))
}

fn number(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

/// Loads the weights of a `.gguf` file. Blocking (file system).
pub fn load(path: &Path, device: &Device) -> Result<(Quantized, Metadata)> {
    let (mut file, content) = read(path)?;
    let text = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v: &Value| v.to_string().ok())
            .cloned()
    };
    let arch = text("general.architecture").ok_or_else(|| {
        bad_file(
            path,
            "no general.architecture in its metadata: not a model file",
        )
    })?;
    let meta = |arch: &str, context: usize| Metadata {
        arch: arch.to_owned(),
        context,
        bos: number(&content, "tokenizer.ggml.bos_token_id"),
        eos: number(&content, "tokenizer.ggml.eos_token_id"),
        chat_template: text("tokenizer.chat_template"),
    };
    match arch.as_str() {
        "llama" => {
            // The RoPE tables stop at MAX_SEQ_LEN whatever the file's context.
            let context = number(&content, "llama.context_length")
                .map_or(quantized_llama::MAX_SEQ_LEN, |n| n as usize)
                .min(quantized_llama::MAX_SEQ_LEN);
            let meta = meta("llama", context);
            let model = quantized_llama::ModelWeights::from_gguf(content, &mut file, device)
                .map_err(|e| weights_error(path, e))?;
            Ok((Quantized::Llama(Box::new(model)), meta))
        }
        "qwen2" => {
            let context = number(&content, "qwen2.context_length")
                .ok_or_else(|| bad_file(path, "no qwen2.context_length in its metadata"))?
                as usize;
            let meta = meta("qwen2", context);
            let instances = Arc::new(Instances {
                path: path.to_owned(),
                device: device.clone(),
                idle: Mutex::new(Vec::new()),
            });
            // One instance now: a broken file fails the load, not the first request.
            let first = quantized_qwen2::ModelWeights::from_gguf(content, &mut file, device)
                .map_err(|e| weights_error(path, e))?;
            instances.give_back(first);
            Ok((Quantized::Qwen2(instances), meta))
        }
        other => Err(Error::UnsupportedArchitecture(format!(
            "{other} in {} (GGUF supports {SUPPORTED})",
            path.display()
        ))),
    }
}

/// Idle instances of a model that cannot be cloned; a conversation leases one.
pub struct Instances {
    path: PathBuf,
    device: Device,
    idle: Mutex<Vec<quantized_qwen2::ModelWeights>>,
}

impl Instances {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<quantized_qwen2::ModelWeights>> {
        // A poisoned lock only means a panic elsewhere while holding it; the list is plain data.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, mut model: quantized_qwen2::ModelWeights) {
        model.clear_kv_cache();
        self.idle().push(model);
    }

    /// An idle instance, or a new one read from the file when all are in use.
    pub fn lease(self: &Arc<Self>) -> Result<Lease> {
        let idle = self.idle().pop();
        let model = match idle {
            Some(m) => m,
            None => {
                tracing::info!(path = %self.path.display(), "another instance of the model for a concurrent conversation");
                let (mut file, content) = read(&self.path)?;
                quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &self.device)
                    .map_err(|e| weights_error(&self.path, e))?
            }
        };
        Ok(Lease {
            model: Some(model),
            instances: Arc::clone(self),
        })
    }

    /// Instances built so far and now idle (tests).
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }
}

/// A conversation's instance; back to the pool, cache cleared, when the conversation ends.
pub struct Lease {
    model: Option<quantized_qwen2::ModelWeights>,
    instances: Arc<Instances>,
}

impl Lease {
    /// `None` never happens: only `drop` takes the model out.
    pub fn model(&mut self) -> Option<&mut quantized_qwen2::ModelWeights> {
        self.model.as_mut()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(model) = self.model.take() {
            self.instances.give_back(model);
        }
    }
}
