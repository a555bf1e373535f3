//! Layer normalization over the last dimension, usually right after a residual add.
//!
//! On an AVX-512 CPU with f32 activations the add and the normalization run as one pass in
//! [`crate::kernels::add_layer_norm`]; elsewhere candle's add and candle-nn's fused norm.

use candle_core::{DType, Tensor};

use super::{Weights, with_cpu_f32};
use crate::error::{Error, Result};
use crate::kernels;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    /// Host copies for the CPU kernel.
    weight_host: Vec<f32>,
    bias_host: Vec<f32>,
    eps: f32,
    /// Use the fused CPU kernel.
    fast: bool,
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
            weight_host: weight.to_dtype(DType::F32)?.to_vec1()?,
            bias_host: bias.to_dtype(DType::F32)?.to_vec1()?,
            weight,
            bias,
            eps: eps as f32,
            fast: w.cpu_kernels(),
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }

    /// `LayerNorm(xs + residual)` for 2-D `[rows, hidden]` inputs.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if !self.fast || xs.dtype() != DType::F32 {
            return Ok(self.forward(&xs.add(residual)?)?);
        }
        let (rows, hidden) = xs.dims2()?;
        let out = with_cpu_f32(xs, |x| {
            with_cpu_f32(residual, |r| {
                kernels::add_layer_norm(x, r, &self.weight_host, &self.bias_host, self.eps)
            })
        })??
        .ok_or_else(|| {
            Error::Inference("the layer-norm kernel is not supported on this CPU".into())
        })?;
        Ok(Tensor::from_vec(out, (rows, hidden), xs.device())?)
    }
}
