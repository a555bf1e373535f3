//! What our packed encoders share: the post-LayerNorm encoder layer (MPNet, JinaBERT v2, GTE,
//! NomicBERT; BERT keeps its own, with no position terms in attention), the
//! checks every model's load and forward make, and token lookups.
//!
//! ```text
//!  xs ─▶ qkv ─▶ packed attention (+ the model's position terms) ─▶ out ─▶ LayerNorm(xs + ·)
//!     ─▶ feed-forward (plain: act(up)·down; gated: act(gate)·rest·down) ─▶ LayerNorm(xs + ·)
//! ```

use candle_core::{Device, Tensor};

use super::PackedBatch;
use crate::error::{Error, Result};
use crate::layers::{AttentionLayout, BatchPositions, HiddenAct, LayerNorm, Linear, attention};

/// The feed-forward half of a layer.
pub enum FeedForward {
    /// `down(act(up(x)))` (MPNet).
    Plain { up: Linear, down: Linear },
    /// `down(act(gate) · rest)` with gate and rest from one fused matmul of `2·intermediate`
    /// outputs; `gate_first` says which half is the gate (JinaBERT: gate first; GTE and
    /// NomicBERT stack up, then gate).
    Gated {
        fused: Linear,
        down: Linear,
        intermediate: usize,
        gate_first: bool,
    },
}

pub struct PostNormLayer {
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub ff: FeedForward,
    pub ff_norm: LayerNorm,
}

/// The attention shape every layer of a model shares.
#[derive(Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Refuses a config whose hidden size does not split into its heads.
    pub fn new(hidden: usize, heads: usize) -> Result<Self> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Config(format!(
                "hidden_size {hidden} is not divisible by num_attention_heads {heads}"
            )));
        }
        Ok(Self {
            heads,
            head_dim: hidden / heads,
        })
    }
}

impl PostNormLayer {
    pub fn forward(
        &self,
        xs: &Tensor,
        layout: &AttentionLayout,
        heads: Heads,
        positions: &BatchPositions,
        act: HiddenAct,
    ) -> Result<Tensor> {
        let qkv = self.qkv.forward(xs)?;
        let ctx = attention(&qkv, layout, heads.heads, heads.head_dim, positions)?;
        let xs = self
            .attn_norm
            .forward_residual(&self.attn_out.forward(&ctx)?, xs)?;
        let ff = match &self.ff {
            FeedForward::Plain { up, down } => down.forward(&up.forward_act(&xs, Some(act))?)?,
            FeedForward::Gated {
                fused,
                down,
                intermediate,
                gate_first,
            } => down.forward(&fused.forward_gated(&xs, act, *intermediate, *gate_first)?)?,
        };
        self.ff_norm.forward_residual(&ff, &xs)
    }
}

/// Refuses a batch with a sequence longer than the model's positions.
pub fn check_len(batch: &PackedBatch, max_positions: usize) -> Result<()> {
    if batch.max_len() > max_positions {
        return Err(Error::InvalidInput(format!(
            "a sequence of {} tokens exceeds the model's {max_positions} positions",
            batch.max_len(),
        )));
    }
    Ok(())
}

/// Rows `values` of the table `table` (token or position embeddings).
pub fn lookup(table: &Tensor, values: &[u32], device: &Device) -> Result<Tensor> {
    Ok(table.index_select(&Tensor::from_slice(values, values.len(), device)?, 0)?)
}
