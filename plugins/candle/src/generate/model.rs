//! Causal language models, each conversation with its own KV cache (a [`Session`]).
//!
//! Llama, Qwen2 and Qwen3 run on our [`super::decoder::Decoder`], which advances many
//! conversations in one pass ([`LanguageModel::forward_batch`]). The other families come from
//! candle-transformers, one conversation per forward: candle-transformers keeps the cache in a `llama::Cache` passed to `forward` (quantized Llama) or
//! inside the model (Mistral, Phi-3, Gemma, quantized Llama). Those are cheap to clone:
//! tensors are reference-counted, so a clone shares the weights and the RoPE tables and only its
//! cache is its own. A [`Session`] is that clone plus its position. GGUF files run on the
//! quantized models ([`super::gguf`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{gemma, mistral, phi3, quantized_llama};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::chat::{ChatTemplate, token_text};
use super::decoder::{self, Decoder};
use super::gguf::{self, Lease, Quantized};
use crate::error::{Error, Result};
use crate::layers::Weights;
use crate::models::decoder::{normalize_config, var_builder, weights_error};

/// The `model_type`s text generation accepts (safetensors; GGUF: [`gguf::SUPPORTED`]).
pub const SUPPORTED: &str = "llama, qwen2, qwen3, mistral, phi3, gemma";

enum Arch {
    /// Llama, Qwen2, Qwen3: batched.
    Decoder(Decoder),
    /// The others are never run themselves: each session runs a clone.
    Mistral(mistral::Model),
    Phi3(phi3::Model),
    Gemma(gemma::Model),
    QuantizedLlama(Box<quantized_llama::ModelWeights>),
    /// Not cloneable: a session leases an instance.
    QuantizedQwen2(std::sync::Arc<gguf::Instances>),
}

enum Kv {
    Decoder(decoder::Cache),
    Mistral(Box<mistral::Model>),
    Phi3(Box<phi3::Model>),
    Gemma(Box<gemma::Model>),
    QuantizedLlama(Box<quantized_llama::ModelWeights>),
    /// Leased at the first forward (leasing may read the file, and `session` cannot fail).
    QuantizedQwen2(Option<Box<Lease>>),
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
    /// `model_type` of config.json, or a GGUF's `general.architecture` with its file type.
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

/// What every model family reads the same way: the tokenizer, the chat template and the EOS
/// tokens of `generation_config.json` and `tokenizer_config.json` (read once, for both).
struct TextFiles {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    eos: Vec<u32>,
}

impl TextFiles {
    /// `eos`: what the model's own config says. `gguf`: the GGUF's metadata, which fills in
    /// for a missing `tokenizer_config.json` (template, BOS/EOS names).
    fn load(dir: &Path, mut eos: Vec<u32>, gguf: Option<&gguf::Metadata>) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(Error::MissingFile {
                dir: dir.to_owned(),
                file: "tokenizer.json",
            });
        }
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::BadFile {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
        let config = match read_json(&dir.join("tokenizer_config.json"))? {
            Some(config) => config,
            None => {
                let name = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
                serde_json::json!({
                    "bos_token": name(gguf.and_then(|g| g.bos)),
                    "eos_token": name(gguf.and_then(|g| g.eos)),
                })
            }
        };
        let template =
            ChatTemplate::from_dir(dir, &config, gguf.and_then(|g| g.chat_template.clone()))?;
        if let Some(g) = read_json(&dir.join("generation_config.json"))? {
            eos.extend(ids(g.get("eos_token_id")));
        }
        let name = token_text(config.get("eos_token"));
        eos.extend(tokenizer.token_to_id(&name));
        eos.sort_unstable();
        eos.dedup();
        Ok(Self {
            tokenizer,
            template,
            eos,
        })
    }
}

/// What candle-transformers' configs of these families need and transformers 5 writes
/// elsewhere or not at all.
fn family_config(model_type: &str, config: &Value) -> Value {
    let mut c = normalize_config(config.clone());
    let Some(obj) = c.as_object_mut() else {
        return c;
    };
    let rope = config.get("rope_parameters");
    match model_type {
        // Mistral applies `sliding_window` whenever it is set (no `use_sliding_window` flag):
        // keep the file's value, null included, not the Qwen2 reading of it.
        "mistral" => {
            obj.insert(
                "sliding_window".into(),
                config.get("sliding_window").cloned().unwrap_or(Value::Null),
            );
        }
        // transformers 5 keeps Phi-3's partial rotary factor and LongRoPE factors in
        // `rope_parameters`; candle reads them at the top level.
        "phi3" => {
            if let Some(rope) = rope {
                if let Some(f) = rope.get("partial_rotary_factor").and_then(Value::as_f64)
                    && f < 1.0
                    && obj.get("partial_rotary_factor").is_none_or(Value::is_null)
                {
                    obj.insert("partial_rotary_factor".into(), Value::from(f));
                }
                if matches!(
                    rope.get("rope_type").and_then(Value::as_str),
                    Some("longrope")
                ) && obj.get("rope_scaling").is_none_or(Value::is_null)
                {
                    obj.insert(
                        "rope_scaling".into(),
                        serde_json::json!({
                            "type": "longrope",
                            "short_factor": rope.get("short_factor"),
                            "long_factor": rope.get("long_factor"),
                        }),
                    );
                }
            }
        }
        // Gemma names its activation `hidden_activation` in some configs and `hidden_act` in
        // others; candle refuses both at once, and Gemma's default is GeLU (tanh), not SiLU.
        "gemma" => {
            let act = if config
                .get("hidden_activation")
                .is_some_and(|a| !a.is_null())
            {
                Value::Null
            } else {
                config
                    .get("hidden_act")
                    .filter(|a| !a.is_null())
                    .cloned()
                    .unwrap_or_else(|| Value::from("gelu_pytorch_tanh"))
            };
            obj.insert("hidden_act".into(), act);
        }
        _ => {}
    }
    c
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
        if !SUPPORTED.split(", ").any(|s| s == model_type) {
            return Err(Error::UnsupportedArchitecture(format!(
                "{model_type} (text generation supports {SUPPORTED})"
            )));
        }
        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(missing("model.safetensors"));
        }
        if decoder::MODEL_TYPES.contains(&model_type.as_str()) {
            let c = decoder::Config::from_json(&config).map_err(|message| Error::BadFile {
                path: dir.join("config.json"),
                message,
            })?;
            let model = Decoder::load(c, Weights::load(&weights_path, dtype, device, true)?)?;
            let text = TextFiles::load(dir, ids(config.get("eos_token_id")), None)?;
            return Ok(Self {
                max_positions: model.config().max_positions,
                arch: Arch::Decoder(model),
                tokenizer: text.tokenizer,
                template: text.template,
                eos: text.eos,
                model_type,
                device: device.clone(),
            });
        }
        let weights = Weights::load(&weights_path, dtype, device, false)?;
        let vb = var_builder(&weights, device, dtype)?;
        let c = family_config(&model_type, &config);
        fn parse<T: serde::de::DeserializeOwned>(dir: &Path, c: Value) -> Result<T> {
            serde_json::from_value(c).map_err(|e| Error::BadFile {
                path: dir.join("config.json"),
                message: e.to_string(),
            })
        }
        let built = |e| weights_error(&weights, e);
        let (arch, max_positions) = match model_type.as_str() {
            "mistral" => {
                let c: mistral::Config = parse(dir, c)?;
                let model = mistral::Model::new(&c, vb).map_err(built)?;
                (Arch::Mistral(model), c.max_position_embeddings)
            }
            "phi3" => {
                let c: phi3::Config = parse(dir, c)?;
                let model = phi3::Model::new(&c, vb).map_err(built)?;
                (Arch::Phi3(model), c.max_position_embeddings)
            }
            _ => {
                let c: gemma::Config = parse(dir, c)?;
                let model = gemma::Model::new(false, &c, vb).map_err(built)?;
                (Arch::Gemma(model), c.max_position_embeddings)
            }
        };
        let text = TextFiles::load(dir, ids(config.get("eos_token_id")), None)?;
        Ok(Self {
            arch,
            tokenizer: text.tokenizer,
            template: text.template,
            eos: text.eos,
            max_positions,
            model_type,
            device: device.clone(),
        })
    }

    /// Loads a `.gguf` file; the tokenizer files are in `dir` (`tokenizer.json`, optionally
    /// `tokenizer_config.json` and `generation_config.json`). The weights stay quantized;
    /// activations are f32.
    pub fn load_gguf(path: &Path, dir: &Path, device: &Device) -> Result<Self> {
        let (quantized, meta) = gguf::load(path, device)?;
        let text = TextFiles::load(dir, meta.eos.into_iter().collect(), Some(&meta))?;
        let arch = match quantized {
            Quantized::Llama(m) => Arch::QuantizedLlama(m),
            Quantized::Qwen2(i) => Arch::QuantizedQwen2(i),
        };
        Ok(Self {
            arch,
            tokenizer: text.tokenizer,
            template: text.template,
            eos: text.eos,
            max_positions: meta.context,
            model_type: format!("{} (gguf)", meta.arch),
            device: device.clone(),
        })
    }

    /// A new conversation with an empty cache.
    pub fn session(&self) -> Session {
        let kv = match &self.arch {
            Arch::Decoder(model) => Kv::Decoder(model.cache()),
            Arch::Mistral(model) => Kv::Mistral(Box::new(model.clone())),
            Arch::Phi3(model) => Kv::Phi3(Box::new(model.clone())),
            Arch::Gemma(model) => Kv::Gemma(Box::new(model.clone())),
            Arch::QuantizedLlama(model) => Kv::QuantizedLlama(model.clone()),
            Arch::QuantizedQwen2(_) => Kv::QuantizedQwen2(None),
        };
        Session { kv, pos: 0 }
    }

    /// Runs `tokens` (the whole prompt, then one token per step) through the model after what
    /// the session holds; returns the next token's logits (`[vocab]`, f32).
    pub fn forward(&self, session: &mut Session, tokens: &[u32]) -> Result<Tensor> {
        Ok(self.forward_batch(&mut [session], &[tokens])?.squeeze(0)?)
    }

    /// [`LanguageModel::forward`] for several conversations: each runs its own `tokens` after
    /// what its session holds; returns `[conversations, vocab]` (f32). One pass for the
    /// [`Decoder`] families, one forward per conversation for the others.
    pub fn forward_batch(
        &self,
        sessions: &mut [&mut Session],
        tokens: &[&[u32]],
    ) -> Result<Tensor> {
        for (session, t) in sessions.iter().zip(tokens) {
            self.check(session, t)?;
        }
        if let Arch::Decoder(model) = &self.arch {
            let mut caches: Vec<&mut decoder::Cache> = sessions
                .iter_mut()
                .map(|s| match &mut s.kv {
                    Kv::Decoder(c) => c,
                    _ => unreachable!("a session belongs to the model that made it"),
                })
                .collect();
            let logits = model.forward(&mut caches, tokens)?;
            for (session, t) in sessions.iter_mut().zip(tokens) {
                session.pos += t.len();
            }
            return Ok(logits);
        }
        let rows = sessions
            .iter_mut()
            .zip(tokens)
            .map(|(s, t)| self.forward_one(s, t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    fn check(&self, session: &Session, tokens: &[u32]) -> Result<()> {
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
        Ok(())
    }

    /// One conversation through a candle-transformers model.
    fn forward_one(&self, session: &mut Session, tokens: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = match (&self.arch, &mut session.kv) {
            (Arch::Mistral(_), Kv::Mistral(model)) => model.forward(&input, session.pos)?,
            (Arch::Phi3(_), Kv::Phi3(model)) => model.forward(&input, session.pos)?,
            (Arch::Gemma(_), Kv::Gemma(model)) => model.forward(&input, session.pos)?,
            (Arch::QuantizedLlama(_), Kv::QuantizedLlama(model)) => {
                model.forward(&input, session.pos)?
            }
            (Arch::QuantizedQwen2(instances), Kv::QuantizedQwen2(lease)) => {
                if lease.is_none() {
                    *lease = Some(Box::new(instances.lease()?));
                }
                lease
                    .as_mut()
                    .and_then(|l| l.model())
                    .ok_or_else(|| Error::Inference("the session lost its model".into()))?
                    .forward(&input, session.pos)?
            }
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
