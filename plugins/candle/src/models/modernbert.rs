//! ModernBERT encoders (gte-modernbert, nomic-modernbert): candle-transformers' model through
//! the padded adapter, with its padding mask and alternating global / sliding-window attention.
//! Runs in f32 whatever the configured dtype: candle-transformers builds its attention masks
//! in f32 and adds them to the scores as they are.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::modernbert::ModernBert as Model;
use serde_json::Value;

pub use candle_transformers::models::modernbert::Config;

use super::decoder::{var_builder, weights_error};
use super::padded::Padded;
use super::{EmbeddingModel, ModernBertHead, PackedBatch};
use crate::error::Result;
use crate::layers::Weights;
use crate::pooling::Pooling;

/// Reads `config.json`, written by transformers 4 (`norm_eps`, `global_rope_theta`) or 5
/// (`rope_parameters` per attention kind), into candle-transformers' config.
pub fn config(mut value: Value) -> serde_json::Result<Config> {
    if let Some(obj) = value.as_object_mut() {
        let theta = |obj: &serde_json::Map<String, Value>, kind: &str, default: f64| {
            obj.get("rope_parameters")
                .and_then(|p| p.get(kind))
                .and_then(|p| p.get("rope_theta"))
                .cloned()
                .unwrap_or(Value::from(default))
        };
        if !obj.contains_key("global_rope_theta") {
            let t = theta(obj, "full_attention", 160_000.0);
            obj.insert("global_rope_theta".into(), t);
        }
        if !obj.contains_key("local_rope_theta") {
            let t = theta(obj, "sliding_attention", 10_000.0);
            obj.insert("local_rope_theta".into(), t);
        }
        if !obj.contains_key("layer_norm_eps") {
            let eps = obj.get("norm_eps").cloned().unwrap_or(Value::from(1e-5));
            obj.insert("layer_norm_eps".into(), eps);
        }
    }
    serde_json::from_value(value)
}

/// The classification head's settings (`ModernBertForSequenceClassification`).
pub fn head_config(value: &Value) -> ModernBertHead {
    let flag = |k: &str, default: bool| value.get(k).and_then(Value::as_bool).unwrap_or(default);
    ModernBertHead {
        pooling: match value.get("classifier_pooling").and_then(Value::as_str) {
            Some("mean") => Pooling::Mean,
            _ => Pooling::Cls,
        },
        dense_bias: flag("classifier_bias", false),
        norm_bias: flag("norm_bias", false),
        eps: value
            .get("norm_eps")
            .or_else(|| value.get("layer_norm_eps"))
            .and_then(Value::as_f64)
            .unwrap_or(1e-5),
    }
}

pub struct ModernBert {
    model: Model,
    pad_id: u32,
    hidden: usize,
    max_positions: usize,
    device: Device,
}

impl ModernBert {
    pub fn load(c: &Config, w: &Weights, device: &Device) -> Result<Self> {
        let model =
            Model::load(var_builder(w, device, DType::F32)?, c).map_err(|e| weights_error(w, e))?;
        Ok(Self {
            model,
            pad_id: c.pad_token_id,
            hidden: c.hidden_size,
            max_positions: c.max_position_embeddings,
            device: device.clone(),
        })
    }
}

impl EmbeddingModel for ModernBert {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        super::post_norm::check_len(batch, self.max_positions)?;
        let padded = Padded::right(batch, self.pad_id, &self.device)?;
        let hidden = self.model.forward(&padded.ids, &padded.mask)?;
        padded.unpad(&hidden)
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn architecture(&self) -> &'static str {
        "modernbert"
    }

    fn candle_transformers(&self) -> bool {
        true
    }

    fn f32_only(&self) -> bool {
        true
    }
}
