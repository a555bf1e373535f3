//! Layer normalization over the last dimension, via candle-nn's fused kernel.

use candle_core::Tensor;

use super::Weights;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Loads `{name}.weight` and `{name}.bias`, falling back to the pre-2019 `gamma`/`beta`
    /// names that some BERT checkpoints still carry.
    pub fn load(w: &Weights, name: &str, size: usize, eps: f64) -> Result<Self> {
        let (weight, bias) = if w.contains(&format!("{name}.weight")) {
            (
                w.get(&format!("{name}.weight"), &[size])?,
                w.get(&format!("{name}.bias"), &[size])?,
            )
        } else {
            (
                w.get(&format!("{name}.gamma"), &[size])?,
                w.get(&format!("{name}.beta"), &[size])?,
            )
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}
