//! The adapter between our packed batches and models that want `[batch, max_len]`.
//!
//! ```text
//!  PackedBatch  a a a b b c c c c          (no padding)
//!        │ right ▼
//!  ids   [a a a 0]   mask [1 1 1 0]
//!        [b b 0 0]        [1 1 0 0]   ──▶ candle-transformers forward ──▶ [3, 4, hidden]
//!        [c c c c]        [1 1 1 1]
//!        │ unpad ▼  (index_select of the real rows, in packed order)
//!  [total_tokens, hidden]  ──▶ pooling / heads as for every other model
//! ```
//!
//! Right padding keeps every real token at positions `0..len`, so rotary positions need no
//! offset, and under a causal mask a real token never sees the padding after it: the last
//! real token's state is the same as if the sequence ran alone.

use candle_core::{Device, Tensor};

use super::PackedBatch;
use crate::error::Result;

pub struct Padded {
    /// `[batch, max_len]` u32 token ids, padded with `pad_id`.
    pub ids: Tensor,
    /// `[batch, max_len]` u8: 1 on real tokens (for models that mask padding themselves).
    pub mask: Tensor,
    /// Rows of the flattened `[batch * max_len]` output that hold real tokens, packed order.
    rows: Tensor,
}

impl Padded {
    pub fn right(batch: &PackedBatch, pad_id: u32, device: &Device) -> Result<Self> {
        let (n, len) = (batch.len(), batch.max_len());
        let mut ids = vec![pad_id; n * len];
        let mut mask = vec![0u8; n * len];
        let mut rows = Vec::with_capacity(batch.total_tokens());
        for (i, w) in batch.offsets.windows(2).enumerate() {
            let seq = &batch.input_ids[w[0]..w[1]];
            ids[i * len..i * len + seq.len()].copy_from_slice(seq);
            mask[i * len..i * len + seq.len()].fill(1);
            rows.extend((i * len..i * len + seq.len()).map(|r| r as u32));
        }
        let total = rows.len();
        Ok(Self {
            ids: Tensor::from_vec(ids, (n, len), device)?,
            mask: Tensor::from_vec(mask, (n, len), device)?,
            rows: Tensor::from_vec(rows, total, device)?,
        })
    }

    /// `[batch, max_len, hidden]` back to the packed `[total_tokens, hidden]`.
    pub fn unpad(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, l, h) = hidden.dims3()?;
        Ok(hidden.reshape((b * l, h))?.index_select(&self.rows, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_to_the_packed_rows() {
        let batch = PackedBatch::new([
            (&[5u32, 6, 7][..], &[0u32; 3][..]),
            (&[8][..], &[0][..]),
            (&[9, 10][..], &[0, 0][..]),
        ]);
        let p = Padded::right(&batch, 0, &Device::Cpu).unwrap();
        assert_eq!(
            p.ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0], vec![9, 10, 0]]
        );
        assert_eq!(
            p.mask.to_vec2::<u8>().unwrap(),
            vec![vec![1, 1, 1], vec![1, 0, 0], vec![1, 1, 0]]
        );
        // A fake "model output" whose hidden state is the token id: unpadding gives the ids back.
        let hidden = p
            .ids
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .unsqueeze(2)
            .unwrap();
        let back = p.unpad(&hidden).unwrap().flatten_all().unwrap();
        assert_eq!(
            back.to_vec1::<f32>().unwrap(),
            vec![5., 6., 7., 8., 9., 10.]
        );
    }
}
