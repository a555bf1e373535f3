//! Causal language models from candle-transformers, each conversation with its own KV cache.
//!
//! candle-transformers keeps the cache in a `llama::Cache` passed to `forward` (Llama) or
//! inside the model (Qwen2). Both are cheap to clone: tensors are reference-counted, so a clone
//! shares the weights and the RoPE tables and only its cache is its own. A [`Session`] is that
//! clone plus its position.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, qwen2};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::layers::Weights;
use crate::models::decoder::{normalize_config, var_builder, weights_error};

/// The `model_type`s text generation accepts.
pub const SUPPORTED: &str = "llama, qwen2";

enum Arch {
    Llama {
        model: llama::Llama,
        /// Never written to: each session clones it (empty KV, shared RoPE tables).
        cache: llama::Cache,
    },
    /// Never run itself: each session runs a clone.
    Qwen2(qwen2::ModelForCausalLM),
}

enum Kv {
    Llama(llama::Cache),
    Qwen2(Box<qwen2::ModelForCausalLM>),
}

/// One conversation's state: its KV cache and how many tokens it holds.
pub struct Session {
    kv: Kv,
    pos: usize,
}

impl Session {
    pub fn position(&self) -> usize {
        self.pos
    }
}

pub struct LanguageModel {
    arch: Arch,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Tokens that end the answer (`eos_token_id` of the configs, the template's EOS token).
    pub eos: Vec<u32>,
    /// Prompt and answer together fit in this many positions.
    pub max_positions: usize,
    pub model_type: String,
    device: Device,
}

/// `eos_token_id` is a number or a list of numbers.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::BadFile {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

impl LanguageModel {
    /// Loads a model directory in Hugging Face layout (`config.json`, `tokenizer.json`,
    /// `model.safetensors`, optionally `tokenizer_config.json` with the chat template and
    /// `generation_config.json`).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let missing = |file: &'static str| Error::MissingFile {
            dir: dir.to_owned(),
            file,
        };
        let config = read_json(&dir.join("config.json"))?.ok_or_else(|| missing("config.json"))?;
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(missing("model.safetensors"));
        }
        let weights = Weights::load(&weights_path, dtype, device, false)?;
        let vb = var_builder(&weights, device, dtype)?;
        let bad_config = |e: serde_json::Error| Error::BadFile {
            path: dir.join("config.json"),
            message: e.to_string(),
        };
        let (arch, max_positions) = match model_type.as_str() {
            "llama" => {
                let c: llama::LlamaConfig =
                    serde_json::from_value(normalize_config(config.clone())).map_err(bad_config)?;
                let c = c.into_config(false);
                let model = llama::Llama::load(vb, &c).map_err(|e| weights_error(&weights, e))?;
                let cache = llama::Cache::new(true, dtype, &c, device)?;
                (Arch::Llama { model, cache }, c.max_position_embeddings)
            }
            "qwen2" => {
                let c: qwen2::Config =
                    serde_json::from_value(normalize_config(config.clone())).map_err(bad_config)?;
                let model =
                    qwen2::ModelForCausalLM::new(&c, vb).map_err(|e| weights_error(&weights, e))?;
                (Arch::Qwen2(model), c.max_position_embeddings)
            }
            other => {
                return Err(Error::UnsupportedArchitecture(format!(
                    "{other} (text generation supports {SUPPORTED})"
                )));
            }
        };
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(missing("tokenizer.json"));
        }
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let template = ChatTemplate::from_dir(dir)?;
        let mut eos = ids(config.get("eos_token_id"));
        if let Some(g) = read_json(&dir.join("generation_config.json"))? {
            eos.extend(ids(g.get("eos_token_id")));
        }
        if let Some(t) = read_json(&dir.join("tokenizer_config.json"))? {
            let name = match t.get("eos_token") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(Into::into),
                _ => None,
            };
            eos.extend(name.and_then(|n| tokenizer.token_to_id(&n)));
        }
        eos.sort_unstable();
        eos.dedup();
        Ok(Self {
            arch,
            tokenizer,
            template,
            eos,
            max_positions,
            model_type,
            device: device.clone(),
        })
    }

    /// A new conversation with an empty cache.
    pub fn session(&self) -> Session {
        let kv = match &self.arch {
            Arch::Llama { cache, .. } => Kv::Llama(cache.clone()),
            Arch::Qwen2(model) => Kv::Qwen2(Box::new(model.clone())),
        };
        Session { kv, pos: 0 }
    }

    /// Runs `tokens` (the whole prompt, then one token per step) through the model after what
    /// the session holds; returns the next token's logits (`[vocab]`, f32).
    pub fn forward(&self, session: &mut Session, tokens: &[u32]) -> Result<Tensor> {
        if tokens.is_empty() {
            return Err(Error::InvalidInput("nothing to run: no tokens".into()));
        }
        if session.pos + tokens.len() > self.max_positions {
            return Err(Error::InvalidInput(format!(
                "{} tokens exceed the model's context of {} positions",
                session.pos + tokens.len(),
                self.max_positions
            )));
        }
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = match (&self.arch, &mut session.kv) {
            (Arch::Llama { model, .. }, Kv::Llama(cache)) => {
                model.forward(&input, session.pos, cache)?
            }
            (Arch::Qwen2(_), Kv::Qwen2(model)) => model.forward(&input, session.pos)?,
            _ => unreachable!("a session belongs to the model that made it"),
        };
        session.pos += tokens.len();
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?)
    }

    /// `special`: let the tokenizer add its special tokens (BOS for a raw completion prompt);
    /// a rendered chat template has already written them as text.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }
}
