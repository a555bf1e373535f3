//! Model architectures behind one trait, and the one place that maps `model_type` to them.
//!
//! ```text
//!  config.json ──▶ ModelConfig { arch (by model_type), task (by architectures[0]) }
//!                    ├─ bert         ─▶ bert::BertModel (ours: packed, AVX-512 kernels)
//!                    ├─ xlm-roberta  ─▶ bert::BertModel with RoBERTa positions
//!                    ├─ bert + alibi ─▶ jina_bert::JinaBert (ours, packed, + ALiBi, GLU)
//!                    ├─ mpnet        ─▶ mpnet::MpNet (ours, packed, + relative position bias)
//!                    ├─ gte          ─▶ rope_encoder::RopeEncoder (ours, packed, rotary, GLU)
//!                    ├─ nomic_bert   ─▶ rope_encoder::RopeEncoder, no biases, SiLU
//!                    ├─ modernbert   ─▶ candle-transformers, through padded::Padded (+ mask)
//!                    ├─ qwen2/qwen3/ ─▶ causal::PackedDecoder (ours, the generation decoder:
//!                    │  mistral          packed, AVX-512) on CPUs with our kernels; elsewhere
//!                    │                   candle-transformers through padded::Padded (mistral:
//!                    │                   its qwen2 network with zero Q/K/V biases)
//!                    └─ task: Embed, or Classify{labels} ─▶ head::ClassifierHead on [CLS]
//! ```
//!
//! Every model speaks the packed-batch language ([`PackedBatch`] in, one row per token out);
//! candle-transformers' models want `[batch, max_len]`, so [`padded`] pads and unpacks for
//! them once, and pooling and heads downstream never know the difference.

mod bert;
mod causal;
pub(crate) mod decoder;
mod gte;
mod head;
mod jina_bert;
mod mistral;
mod modernbert;
mod mpnet;
mod nomic_bert;
mod padded;
mod post_norm;
mod qwen2;
mod qwen3;
mod rope_encoder;
mod xlm_roberta;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

pub use bert::{BertConfig, BertModel};
pub use head::{ClassifierHead, ModernBertHead};

use crate::error::{Error, Result};
use crate::layers::Weights;
use crate::pooling::Pooling;

/// The `model_type`s [`ModelConfig::from_json`] accepts, for error messages.
pub const SUPPORTED: &str = "bert, jina-bert (bert with alibi), xlm-roberta, mpnet, gte, nomic_bert, modernbert, qwen2, qwen3, mistral";

/// A batch of token sequences stacked end to end, without padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedBatch {
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// `offsets[i]..offsets[i + 1]` are sequence `i`'s tokens; one entry more than sequences.
    pub offsets: Vec<usize>,
}

impl PackedBatch {
    /// Packs `(ids, type_ids)` pairs.
    pub fn new<'a>(seqs: impl IntoIterator<Item = (&'a [u32], &'a [u32])>) -> Self {
        let mut batch = Self {
            offsets: vec![0],
            ..Self::default()
        };
        for (ids, types) in seqs {
            batch.input_ids.extend_from_slice(ids);
            batch.type_ids.extend_from_slice(types);
            batch.positions.extend(0..ids.len() as u32);
            batch.offsets.push(batch.input_ids.len());
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn total_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// A text encoder: token ids in, one hidden state per token out.
pub trait EmbeddingModel: Send + Sync {
    /// `[total_tokens, hidden_size]` for the packed batch, in the model's compute dtype.
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor>;

    fn hidden_size(&self) -> usize;

    /// Longest sequence the position embeddings cover.
    fn max_positions(&self) -> usize;

    fn architecture(&self) -> &'static str;

    /// Runs on candle-transformers' ops rather than our packed kernels (reported in
    /// `ModelInfo::kernels`).
    fn candle_transformers(&self) -> bool {
        false
    }

    /// Computes in f32 whatever dtype was asked for (reported in `ModelInfo::dtype`).
    fn f32_only(&self) -> bool {
        false
    }
}

/// The encoder network, by `config.json`'s `model_type`.
#[derive(Debug, Clone)]
pub enum Architecture {
    Bert(BertConfig),
    XlmRoberta(BertConfig),
    MpNet(Box<mpnet::Config>),
    JinaBert(Box<jina_bert::Config>),
    /// gte and nomic_bert.
    Rope(Box<rope_encoder::Config>),
    ModernBert(Box<modernbert::Config>, ModernBertHead),
    /// Decoders: candle-transformers' config, and ours for the packed decoder on CPUs with
    /// our kernels (none when it cannot run this config).
    Qwen2(Box<qwen2::Config>, Option<Box<DecoderConfig>>),
    Qwen3(Box<qwen3::Config>, Option<Box<DecoderConfig>>),
    Mistral(Box<qwen2::Config>, Option<Box<DecoderConfig>>),
}

type DecoderConfig = crate::generate::decoder::Config;

impl Architecture {
    /// Whether a `*ForSequenceClassification` checkpoint of this family loads (its head is in
    /// [`head`]).
    fn has_classifier_head(&self) -> bool {
        matches!(
            self,
            Self::Bert(_) | Self::XlmRoberta(_) | Self::ModernBert(..)
        )
    }
}

/// What the checkpoint is for, from `architectures`: a `*ForSequenceClassification` head
/// makes a cross-encoder (one label: rerank) or a classifier (`id2label`); anything else is
/// a sentence embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Embed,
    Classify { labels: Vec<String> },
}

impl Task {
    fn from_config(config: &Value) -> Result<Self> {
        let head = config
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .is_some_and(|a| a.ends_with("ForSequenceClassification"));
        if !head {
            return Ok(Self::Embed);
        }
        let id2label = config.get("id2label").and_then(Value::as_object);
        let n = id2label
            .map(|m| m.len())
            .or_else(|| {
                config
                    .get("num_labels")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize)
            })
            .unwrap_or(2);
        let labels = (0..n)
            .map(|i| {
                id2label
                    .and_then(|m| m.get(&i.to_string()))
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("LABEL_{i}"), str::to_owned)
            })
            .collect::<Vec<_>>();
        if labels.is_empty() {
            return Err(Error::Config("config.json: id2label is empty".into()));
        }
        Ok(Self::Classify { labels })
    }

    /// The capabilities a model with this task serves (besides model.load/unload).
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self {
            Self::Embed => vec![crate::schema::INFER, crate::schema::EMBEDDINGS],
            Self::Classify { labels } if labels.len() == 1 => {
                vec![crate::scoring::RERANK, crate::scoring::CLASSIFY]
            }
            Self::Classify { .. } => vec![crate::scoring::CLASSIFY],
        }
    }
}

/// `config.json`: which network, and which head on top.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub task: Task,
}

/// The loaded network and, for a classification checkpoint, its head.
pub struct Built {
    pub encoder: Box<dyn EmbeddingModel>,
    pub head: Option<ClassifierHead>,
}

impl ModelConfig {
    /// Parses `config.json`. Reads `model_type` first (or guesses it from `architectures`) so an
    /// unknown architecture gets a clear error instead of serde's list of missing fields.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let model_type = match value.get("model_type").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => guess_model_type(&value).ok_or_else(|| {
                Error::UnsupportedArchitecture("<config.json names no model_type>".into())
            })?,
        };
        let task = Task::from_config(&value)?;
        let bad = |e: serde_json::Error| Error::Config(format!("config.json ({model_type}): {e}"));
        let arch = match model_type.as_str() {
            "bert" | "jina-bert" | "jina_bert"
                if model_type != "bert" || jina_bert::is_jina(&value) =>
            {
                Architecture::JinaBert(Box::new(
                    jina_bert::config(value)
                        .map_err(|e| Error::Config(format!("config.json (JinaBERT): {e}")))?,
                ))
            }
            "bert" => Architecture::Bert(serde_json::from_value(value).map_err(bad)?),
            "xlm-roberta" | "roberta" => {
                Architecture::XlmRoberta(xlm_roberta::config(value).map_err(bad)?)
            }
            "mpnet" => Architecture::MpNet(Box::new(mpnet::config(value).map_err(bad)?)),
            "gte" | "nomic_bert" => {
                let read = match model_type.as_str() {
                    "gte" => gte::config,
                    _ => nomic_bert::config,
                };
                Architecture::Rope(Box::new(
                    read(value)
                        .map_err(|e| Error::Config(format!("config.json ({model_type}): {e}")))?,
                ))
            }
            "modernbert" => {
                let head = modernbert::head_config(&value);
                Architecture::ModernBert(Box::new(modernbert::config(value).map_err(bad)?), head)
            }
            "qwen2" | "qwen3" | "mistral" => {
                let packed = DecoderConfig::for_embeddings(&value).ok().map(Box::new);
                match model_type.as_str() {
                    "qwen2" => {
                        Architecture::Qwen2(Box::new(qwen2::config(value).map_err(bad)?), packed)
                    }
                    "qwen3" => {
                        Architecture::Qwen3(Box::new(qwen3::config(value).map_err(bad)?), packed)
                    }
                    _ => Architecture::Mistral(
                        Box::new(mistral::config(value).map_err(|e| {
                            Error::Config(format!("config.json ({model_type}): {e}"))
                        })?),
                        packed,
                    ),
                }
            }
            _ => return Err(Error::UnsupportedArchitecture(model_type)),
        };
        if task != Task::Embed && !arch.has_classifier_head() {
            return Err(Error::Config(format!(
                "config.json: a sequence-classification head on {model_type} is not supported \
                 (only on bert, xlm-roberta and modernbert)"
            )));
        }
        Ok(Self { arch, task })
    }

    pub fn model_type(&self) -> &'static str {
        match self.arch {
            Architecture::Bert(_) => "bert",
            Architecture::XlmRoberta(_) => "xlm-roberta",
            Architecture::MpNet(_) => "mpnet",
            Architecture::JinaBert(_) => "jina-bert",
            Architecture::Rope(ref c) => c.architecture,
            Architecture::ModernBert(..) => "modernbert",
            Architecture::Qwen2(..) => "qwen2",
            Architecture::Qwen3(..) => "qwen3",
            Architecture::Mistral(..) => "mistral",
        }
    }

    /// Pooling when sentence-transformers' files say nothing: decoders carry the sentence in
    /// their last token, encoders are averaged.
    pub fn default_pooling(&self) -> Pooling {
        match self.arch {
            Architecture::Qwen2(..) | Architecture::Qwen3(..) | Architecture::Mistral(..) => {
                Pooling::LastToken
            }
            _ => Pooling::Mean,
        }
    }

    /// Builds the model; the one place that matches on the architecture.
    /// `dtype` is the requested compute dtype: candle-transformers' models use it as is,
    /// while ours follow the weights' packing.
    pub fn build(&self, weights: &mut Weights, device: &Device, dtype: DType) -> Result<Built> {
        let encoder: Box<dyn EmbeddingModel> = match &self.arch {
            Architecture::Bert(c) => Box::new(BertModel::load(c, weights, device)?),
            Architecture::XlmRoberta(c) => Box::new(BertModel::load(c, weights, device)?),
            Architecture::MpNet(c) => Box::new(mpnet::MpNet::load(c, weights, device)?),
            Architecture::JinaBert(c) => Box::new(jina_bert::JinaBert::load(c, weights, device)?),
            Architecture::Rope(c) => Box::new(rope_encoder::RopeEncoder::load(c, weights, device)?),
            Architecture::ModernBert(c, _) => {
                Box::new(modernbert::ModernBert::load(c, weights, device)?)
            }
            Architecture::Qwen2(_, Some(c))
            | Architecture::Qwen3(_, Some(c))
            | Architecture::Mistral(_, Some(c))
                if weights.packing() != crate::layers::Packing::None =>
            {
                Box::new(causal::PackedDecoder::load(c, weights, self.model_type())?)
            }
            Architecture::Qwen2(c, _) => Box::new(qwen2::Qwen2::load(c, weights, device, dtype)?),
            Architecture::Qwen3(c, _) => Box::new(qwen3::Qwen3::load(c, weights, device, dtype)?),
            Architecture::Mistral(c, _) => Box::new(mistral::load(c, weights, device, dtype)?),
        };
        let head = match (&self.task, &self.arch) {
            (Task::Embed, _) => None,
            (Task::Classify { labels }, Architecture::Bert(_)) => Some(ClassifierHead::load_bert(
                weights,
                encoder.hidden_size(),
                labels.len(),
                device,
            )?),
            (Task::Classify { labels }, Architecture::ModernBert(_, head)) => {
                Some(ClassifierHead::load_modernbert(
                    weights,
                    encoder.hidden_size(),
                    labels.len(),
                    head,
                    device,
                )?)
            }
            (Task::Classify { labels }, _) => Some(ClassifierHead::load_roberta(
                weights,
                encoder.hidden_size(),
                labels.len(),
                device,
            )?),
        };
        Ok(Built { encoder, head })
    }
}

fn guess_model_type(config: &Value) -> Option<String> {
    let archs = config.get("architectures")?.as_array()?;
    archs.iter().filter_map(Value::as_str).find_map(|a| {
        [
            ("Bert", "bert"),
            ("XLMRoberta", "xlm-roberta"),
            ("MPNet", "mpnet"),
            ("JinaBert", "jina-bert"),
            ("Gte", "gte"),
            ("NomicBert", "nomic_bert"),
            ("ModernBert", "modernbert"),
            ("Qwen2", "qwen2"),
            ("Qwen3", "qwen3"),
            ("Mistral", "mistral"),
        ]
        .iter()
        .find(|(prefix, _)| a.starts_with(prefix))
        .map(|(_, t)| (*t).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_is_named_in_the_error() {
        let err =
            ModelConfig::from_json(r#"{"model_type": "llama", "hidden_size": 8}"#).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedArchitecture(ref t) if t == "llama"),
            "{err}"
        );
        let err = ModelConfig::from_json(r#"{"architectures": ["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(matches!(err, Error::UnsupportedArchitecture(_)), "{err}");
    }

    #[test]
    fn packing_records_offsets_and_positions() {
        let b = PackedBatch::new([
            (&[1u32, 2, 3][..], &[0u32, 0, 0][..]),
            (&[4, 5][..], &[0, 0][..]),
        ]);
        assert_eq!(b.offsets, vec![0, 3, 5]);
        assert_eq!(b.positions, vec![0, 1, 2, 0, 1]);
        assert_eq!((b.len(), b.total_tokens(), b.max_len()), (2, 5, 3));
    }
}
