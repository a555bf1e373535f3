//! Dense layers, `y = x Wᵀ + b`, on 2-D packed activations.
//!
//! The weight is stored already transposed (`[in, out]`, contiguous) so the matmul kernel
//! streams it row by row instead of striding through the checkpoint's `[out, in]` layout on
//! every call.

use candle_core::Tensor;

use super::Weights;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{name}.weight` (`[out, in]`) and `{name}.bias` (`[out]`).
    pub fn load(w: &Weights, name: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias = w.get(&format!("{name}.bias"), &[out_dim])?;
        Self::from_parts(&weight, Some(bias))
    }

    /// Stacks several layers that read the same input into one (e.g. Q, K and V), so the
    /// input is read once and the kernel sees one larger, more efficient matmul.
    pub fn fuse(parts: &[(Tensor, Tensor)]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|(w, _)| w).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|(_, b)| b).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = Tensor::cat(&biases, 0)?;
        Self::from_parts(&weight, Some(bias))
    }

    fn from_parts(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// `xs`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = xs.matmul(&self.weight_t)?;
        match &self.bias {
            Some(b) => ys.broadcast_add(b),
            None => Ok(ys),
        }
    }
}
