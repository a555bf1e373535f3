//! Qwen2 decoder embedders (gte-Qwen2, stella): candle-transformers' model, causal attention,
//! last-token pooling, through the padded adapter.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2::Model;
use serde_json::Value;

pub use candle_transformers::models::qwen2::Config;

use super::decoder::{normalize_config, var_builder, weights_error};
use super::padded::Padded;
use super::{EmbeddingModel, PackedBatch};
use crate::error::Result;
use crate::layers::Weights;

pub fn config(value: Value) -> serde_json::Result<Config> {
    serde_json::from_value(normalize_config(value))
}

pub struct Qwen2 {
    /// Never run itself: each forward runs on a clone, whose KV cache starts empty (the model
    /// keeps one for generation, and does not let us clear it).
    template: Mutex<Model>,
    hidden: usize,
    max_positions: usize,
    device: Device,
    architecture: &'static str,
}

impl Qwen2 {
    pub fn load(c: &Config, w: &Weights, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_var_builder(c, w, var_builder(w, device, dtype)?, device, "qwen2")
    }

    /// The network over weights already gathered (Mistral's, with zero Q/K/V biases).
    pub fn from_var_builder(
        c: &Config,
        w: &Weights,
        vb: VarBuilder<'static>,
        device: &Device,
        architecture: &'static str,
    ) -> Result<Self> {
        let model = Model::new(c, vb).map_err(|e| weights_error(w, e))?;
        Ok(Self {
            template: Mutex::new(model),
            hidden: c.hidden_size,
            max_positions: c.max_position_embeddings,
            device: device.clone(),
            architecture,
        })
    }
}

impl EmbeddingModel for Qwen2 {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        super::post_norm::check_len(batch, self.max_positions)?;
        let padded = Padded::right(batch, 0, &self.device)?;
        let mut model = self
            .template
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let hidden = model.forward(&padded.ids, 0, None)?;
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
        self.architecture
    }
}
