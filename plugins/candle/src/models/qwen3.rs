//! Qwen3 decoder embedders (Qwen3-Embedding): candle-transformers' model, causal attention,
//! last-token pooling, through the padded adapter.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::qwen3::Model;
use serde_json::Value;

pub use candle_transformers::models::qwen3::Config;

use super::decoder::{normalize_config, var_builder, weights_error};
use super::padded::Padded;
use super::{EmbeddingModel, PackedBatch};
use crate::error::Result;
use crate::layers::Weights;

pub fn config(value: Value) -> serde_json::Result<Config> {
    serde_json::from_value(normalize_config(value))
}

pub struct Qwen3 {
    /// Never run itself: each forward runs on a clone, whose KV cache starts empty (the model
    /// keeps one for generation, and does not let us clear it).
    template: Mutex<Model>,
    hidden: usize,
    max_positions: usize,
    device: Device,
}

impl Qwen3 {
    pub fn load(c: &Config, w: &Weights, device: &Device, dtype: DType) -> Result<Self> {
        let model =
            Model::new(c, var_builder(w, device, dtype)?).map_err(|e| weights_error(w, e))?;
        Ok(Self {
            template: Mutex::new(model),
            hidden: c.hidden_size,
            max_positions: c.max_position_embeddings,
            device: device.clone(),
        })
    }
}

impl EmbeddingModel for Qwen3 {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        super::post_norm::check_len(batch, self.max_positions)?;
        let padded = Padded::right(batch, 0, &self.device)?;
        let mut model = self
            .template
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let hidden = model.forward(&padded.ids, 0)?;
        padded.unpad(&hidden)
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn candle_transformers(&self) -> bool {
        true
    }

    fn architecture(&self) -> &'static str {
        "qwen3"
    }
}
