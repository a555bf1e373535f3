//! Causal language models, each conversation with its own KV cache (a [`Session`]).
//!
//! Llama-style families run on [`super::decoder::Decoder`], which advances many conversations
//! in one pass ([`LanguageModel::forward_batch`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use super::decoder::{self, Decoder};
use crate::error::{Error, Result};
use crate::layers::Weights;

/// The `model_type`s text generation accepts.
pub const SUPPORTED: &str = "llama, qwen2, qwen3";

enum Arch {
    Decoder(Decoder),
}

enum Kv {
    Decoder(decoder::Cache),
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
        let bad_config = |message: String| Error::BadFile {
            path: dir.join("config.json"),
            message,
        };
        let (arch, max_positions) = match model_type.as_str() {
            t if decoder::MODEL_TYPES.contains(&t) => {
                let c = decoder::Config::from_json(&config).map_err(bad_config)?;
                let weights = Weights::load(&weights_path, dtype, device, true)?;
                let model = Decoder::load(c, weights)?;
                let positions = model.config().max_positions;
                (Arch::Decoder(model), positions)
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
        })
    }

    /// A new conversation with an empty cache.
    pub fn session(&self) -> Session {
        let kv = match &self.arch {
            Arch::Decoder(model) => Kv::Decoder(model.cache()),
        };
        Session { kv, pos: 0 }
    }

    /// Runs `tokens` (the whole prompt, then one token per step) through the model after what
    /// the session holds; returns the next token's logits (`[vocab]`, f32).
    pub fn forward(&self, session: &mut Session, tokens: &[u32]) -> Result<Tensor> {
        Ok(self.forward_batch(&mut [session], &[tokens])?.squeeze(0)?)
    }

    /// [`LanguageModel::forward`] for several conversations in one pass: each runs its own
    /// `tokens` after what its session holds; returns `[conversations, vocab]` (f32).
    pub fn forward_batch(
        &self,
        sessions: &mut [&mut Session],
        tokens: &[&[u32]],
    ) -> Result<Tensor> {
        if tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::InvalidInput("nothing to run: no tokens".into()));
        }
        for (session, t) in sessions.iter().zip(tokens) {
            if session.pos + t.len() > self.max_positions {
                return Err(Error::InvalidInput(format!(
                    "{} tokens exceed the model's context of {} positions",
                    session.pos + t.len(),
                    self.max_positions
                )));
            }
        }
        let logits = match &self.arch {
            Arch::Decoder(model) => {
                let mut caches: Vec<&mut decoder::Cache> = sessions
                    .iter_mut()
                    .map(|s| match &mut s.kv {
                        Kv::Decoder(c) => c,
                    })
                    .collect();
                model.forward(&mut caches, tokens)?
            }
        };
        for (session, t) in sessions.iter_mut().zip(tokens) {
            session.pos += t.len();
        }
        Ok(logits)
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
