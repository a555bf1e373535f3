//! Multi-head self-attention over a packed batch.
//!
//! ```text
//!  packed qkv [T, 3·H·D] ──gather──▶ padded [B, L, 3, H, D] ──▶ softmax(QKᵀ/√D + mask)·V
//!        ▲                                                               │
//!        └──────────── packed out [T, H·D] ◀──scatter (drop pad rows)────┘
//! ```
//!
//! Only attention needs a rectangular `[B, L]` shape; every dense layer runs on the packed
//! `[T, ·]` rows, so padding costs FLOPs in attention alone (a few percent of the model).
//! When all sequences have the same length the gather and mask are skipped altogether.

use candle_core::{D, DType, Device, IndexOp, Tensor};

use crate::error::Result;

/// Per-batch index tensors shared by every layer's attention.
#[derive(Debug)]
pub struct AttentionLayout {
    batch: usize,
    max_len: usize,
    gather: Option<Gather>,
}

#[derive(Debug)]
struct Gather {
    /// `[B·L]`: for each padded slot, the packed row to copy (pad slots copy row 0; masked).
    pad_index: Tensor,
    /// `[T]`: for each packed row, its slot in the padded layout.
    unpad_index: Tensor,
    /// `[B, 1, 1, L]`: 0 for real keys, a large negative number for padding keys.
    mask: Tensor,
}

impl AttentionLayout {
    /// `offsets[i]..offsets[i + 1]` are sequence `i`'s rows in the packed batch.
    pub fn new(offsets: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        let batch = offsets.len().saturating_sub(1);
        let lens: Vec<usize> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let max_len = lens.iter().copied().max().unwrap_or(0);
        if lens.iter().all(|&l| l == max_len) {
            return Ok(Self {
                batch,
                max_len,
                gather: None,
            });
        }
        let mut pad_index = vec![0u32; batch * max_len];
        let mut unpad_index = Vec::with_capacity(offsets[batch]);
        // Large but finite in the compute dtype: -inf would turn into NaN under bf16
        // arithmetic, and f16 ends at 65504.
        let masked = if dtype == DType::F16 { -1e4 } else { -1e9 };
        let mut mask = vec![0f32; batch * max_len];
        for (b, &len) in lens.iter().enumerate() {
            for pos in 0..max_len {
                let slot = b * max_len + pos;
                if pos < len {
                    pad_index[slot] = (offsets[b] + pos) as u32;
                    unpad_index.push(slot as u32);
                } else {
                    mask[slot] = masked;
                }
            }
        }
        let t = unpad_index.len();
        let gather = Gather {
            pad_index: Tensor::from_vec(pad_index, batch * max_len, device)?,
            unpad_index: Tensor::from_vec(unpad_index, t, device)?,
            mask: Tensor::from_vec(mask, (batch, 1, 1, max_len), device)?.to_dtype(dtype)?,
        };
        Ok(Self {
            batch,
            max_len,
            gather: Some(gather),
        })
    }

    /// The padded sequence length `L` (positional tables for one batch are `[L, ·]`).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rows × columns of the rectangular attention problem (for padding statistics).
    pub fn padded_tokens(&self) -> usize {
        self.batch * self.max_len
    }
}

/// What some encoders add to plain scaled dot-product attention, in the padded layout where
/// every sequence's positions are `0..L`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PositionTerms<'a> {
    /// `[1, heads, L, L]`, added to the scores (MPNet's relative position bias).
    pub bias: Option<&'a Tensor>,
    /// `cos` and `sin`, `[L, head_dim / 2]`: rotary positions applied to Q and K, halves
    /// rotated (GPT-NeoX / Llama layout).
    pub rope: Option<(&'a Tensor, &'a Tensor)>,
}

/// `qkv`: `[T, 3·heads·head_dim]` (Q, K, V stacked per row) → context `[T, heads·head_dim]`.
pub fn packed_attention(
    qkv: &Tensor,
    layout: &AttentionLayout,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    packed_attention_with(qkv, layout, heads, head_dim, PositionTerms::default())
}

/// [`packed_attention`] with a score bias or rotary positions.
pub fn packed_attention_with(
    qkv: &Tensor,
    layout: &AttentionLayout,
    heads: usize,
    head_dim: usize,
    terms: PositionTerms<'_>,
) -> Result<Tensor> {
    let (b, l) = (layout.batch, layout.max_len);
    let hidden = heads * head_dim;
    let padded = match &layout.gather {
        Some(g) => qkv.index_select(&g.pad_index, 0)?,
        None => qkv.clone(),
    };
    let x = padded.reshape((b, l, 3, heads, head_dim))?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    // [B, H, L, D] each; scaling Q first touches T·D values instead of L² scores.
    let mut q = (x.i((.., .., 0))?.transpose(1, 2)?.contiguous()? * scale)?;
    let mut k = x.i((.., .., 1))?.transpose(1, 2)?.contiguous()?;
    let v = x.i((.., .., 2))?.transpose(1, 2)?.contiguous()?;
    if let Some((cos, sin)) = terms.rope {
        q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
    }
    let mut scores = q.matmul(&k.transpose(D::Minus2, D::Minus1)?)?;
    if let Some(bias) = terms.bias {
        scores = scores.broadcast_add(bias)?;
    }
    let scores = match &layout.gather {
        Some(g) => scores.broadcast_add(&g.mask)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let ctx = probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b * l, hidden))?;
    Ok(match &layout.gather {
        Some(g) => ctx.index_select(&g.unpad_index, 0)?,
        None => ctx,
    })
}
