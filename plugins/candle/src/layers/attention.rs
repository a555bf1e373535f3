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
//!
//! With the CPU kernels ([`crate::kernels::attention`]) there is no padding at all: each
//! (sequence, head) is one task over its own rows, with the position terms applied inside.
//! [`BatchPositions`] holds a batch's terms in the form the path that runs needs.

use candle_core::{D, DType, Device, IndexOp, Tensor};

use super::with_cpu_f32;
use crate::error::{Error, Result};
use crate::kernels::{self, AttentionTerms};

/// Per-batch index tensors shared by every layer's attention.
#[derive(Debug)]
pub struct AttentionLayout {
    batch: usize,
    max_len: usize,
    offsets: Vec<usize>,
    /// Built for [`kernels::attention`]: the packed rows as they are, no padding to gather.
    kernel: bool,
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
    /// `offsets[i]..offsets[i + 1]` are sequence `i`'s rows in the packed batch. `kernel`:
    /// the layers run [`kernels::attention`] on those rows (the model's weights were loaded
    /// for the CPU kernels), so no padded gather is built; otherwise candle's padded path.
    pub fn new(offsets: &[usize], kernel: bool, dtype: DType, device: &Device) -> Result<Self> {
        let batch = offsets.len().saturating_sub(1);
        let lens: Vec<usize> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let max_len = lens.iter().copied().max().unwrap_or(0);
        if kernel || lens.iter().all(|&l| l == max_len) {
            return Ok(Self {
                batch,
                max_len,
                offsets: offsets.to_vec(),
                kernel,
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
            offsets: offsets.to_vec(),
            kernel,
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

/// A batch's position terms, built once per forward for every layer: host tables for the CPU
/// kernel, or tensors in the padded layout for candle's path.
#[derive(Debug)]
pub struct BatchPositions {
    /// As the layout: host tables for the kernel, else padded tensors.
    kernel: bool,
    span: usize,
    relative: Option<Vec<f32>>,
    rope: Option<(Vec<f32>, Vec<f32>)>,
    bias: Option<Tensor>,
    rope_tensors: Option<(Tensor, Tensor)>,
}

impl BatchPositions {
    /// Terms for `layout`'s path, on `layout.max_len()` positions.
    pub fn new(layout: &AttentionLayout) -> Self {
        Self {
            kernel: layout.kernel,
            span: layout.max_len,
            relative: None,
            rope: None,
            bias: None,
            rope_tensors: None,
        }
    }

    /// A score bias that depends only on `j − i`: `table` is `[heads, 2·span − 1]`, entry
    /// `span − 1 + (j − i)` (see [`AttentionTerms::relative`]).
    pub fn with_relative(
        mut self,
        table: Vec<f32>,
        heads: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let l = self.span;
        let width = (2 * l).saturating_sub(1);
        if table.len() != heads * width {
            return Err(Error::Inference(format!(
                "relative position table of {} values for {heads} heads × {width} distances",
                table.len()
            )));
        }
        if !self.kernel {
            let dense: Vec<f32> = (0..heads)
                .flat_map(|h| (0..l).flat_map(move |i| (0..l).map(move |j| (h, i, j))))
                .map(|(h, i, j)| table[h * width + l - 1 + j - i])
                .collect();
            self.bias = Some(Tensor::from_vec(dense, (1, heads, l, l), device)?.to_dtype(dtype)?);
        }
        self.relative = Some(table);
        Ok(self)
    }

    /// Rotary positions: `cos` and `sin` of each position's angles, `[span, head_dim / 2]`.
    pub fn with_rope(
        mut self,
        cos: Vec<f32>,
        sin: Vec<f32>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let l = self.span;
        if cos.len() != sin.len() || (l > 0 && !cos.len().is_multiple_of(l)) {
            return Err(Error::Inference(format!(
                "rotary tables of {} and {} values for {l} positions",
                cos.len(),
                sin.len()
            )));
        }
        if !self.kernel {
            let half = cos.len().checked_div(l).unwrap_or(0);
            let t = |v: &[f32]| -> Result<Tensor> {
                Ok(Tensor::from_slice(v, (l, half), device)?.to_dtype(dtype)?)
            };
            self.rope_tensors = Some((t(&cos)?, t(&sin)?));
        }
        self.rope = Some((cos, sin));
        Ok(self)
    }
}

/// Multi-head self-attention with a batch's position terms, on the path they were built for.
pub fn attention(
    qkv: &Tensor,
    layout: &AttentionLayout,
    heads: usize,
    head_dim: usize,
    positions: &BatchPositions,
) -> Result<Tensor> {
    if !positions.kernel {
        let terms = PositionTerms {
            bias: positions.bias.as_ref(),
            rope: positions.rope_tensors.as_ref().map(|(c, s)| (c, s)),
        };
        return packed_attention_with(qkv, layout, heads, head_dim, terms);
    }
    let terms = AttentionTerms {
        relative: positions.relative.as_deref(),
        rope: positions
            .rope
            .as_ref()
            .map(|(c, s)| (c.as_slice(), s.as_slice())),
        span: positions.span,
        ..AttentionTerms::default()
    };
    let ctx = with_cpu_f32(qkv, |data| {
        kernels::attention(data, &layout.offsets, heads, heads, head_dim, terms)
    })?
    .ok_or_else(|| {
        Error::Inference("the attention kernel is not supported on this CPU or shape".into())
    })?;
    Ok(Tensor::from_vec(
        ctx,
        (qkv.dim(0)?, heads * head_dim),
        qkv.device(),
    )?)
}

/// candle's path: `qkv`: `[T, 3·heads·head_dim]` (Q, K, V stacked per row) → context
/// `[T, heads·head_dim]`, with a score bias or rotary positions in the padded layout.
pub fn packed_attention_with(
    qkv: &Tensor,
    layout: &AttentionLayout,
    heads: usize,
    head_dim: usize,
    terms: PositionTerms<'_>,
) -> Result<Tensor> {
    if layout.kernel {
        return Err(Error::Inference(
            "candle's attention called with a layout built for the CPU kernel".into(),
        ));
    }
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
