//! Model architectures behind one trait.
//!
//! ```text
//!  config.json ──▶ ModelConfig (tagged by model_type) ──match once──▶ Box<dyn EmbeddingModel>
//!                        └─ Bert(BertConfig) ─────────────────────────▶ bert::BertModel
//! ```
//!
//! Adding an architecture (say a Qwen-style decoder embedder) means one new file, one enum
//! variant and one match arm; nothing downstream changes because every model speaks the same
//! packed-batch language.

mod bert;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

pub use bert::{BertConfig, BertModel};

use crate::error::{Error, Result};
use crate::layers::Weights;

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
}

/// `config.json`, by `model_type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "model_type", rename_all = "snake_case")]
pub enum ModelConfig {
    Bert(BertConfig),
}

impl ModelConfig {
    /// Parses `config.json`. Reads `model_type` first (or guesses it from `architectures`) so an
    /// unknown architecture gets a clear error instead of serde's list of missing fields.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let model_type = match value.get("model_type").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => guess_model_type(&value).ok_or_else(|| {
                Error::UnsupportedArchitecture("<config.json names no model_type>".into())
            })?,
        };
        match model_type.as_str() {
            "bert" => {}
            _ => return Err(Error::UnsupportedArchitecture(model_type)),
        }
        if let Some(obj) = value.as_object_mut() {
            obj.insert("model_type".into(), Value::String(model_type));
        }
        serde_json::from_value(value).map_err(|e| Error::Config(format!("config.json: {e}")))
    }

    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Bert(_) => "bert",
        }
    }

    /// Builds the model; the one place that matches on the architecture.
    pub fn build(&self, weights: &mut Weights, device: &Device) -> Result<Box<dyn EmbeddingModel>> {
        Ok(match self {
            Self::Bert(c) => Box::new(BertModel::load(c, weights, device)?),
        })
    }
}

fn guess_model_type(config: &Value) -> Option<String> {
    let archs = config.get("architectures")?.as_array()?;
    archs
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with("Bert"))
        .map(|_| "bert".to_owned())
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
