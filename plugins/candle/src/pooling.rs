//! Pooling: from one hidden state per token to one vector per input.
//!
//! Works on the packed layout the models return — all sequences' tokens stacked into one
//! `[total_tokens, hidden]` matrix, with `offsets` marking where each sequence starts — so
//! no padding token can ever leak into a mean.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How token states become a sentence vector (sentence-transformers' pooling modes): `mean`
/// (average over the sequence's tokens, special tokens included, as sentence-transformers
/// does), `cls` (the first token's state), `max` (element-wise maximum over the tokens) or
/// `last_token` (the last token's state, for decoder-style embedders).
// No doc comments on the variants: the config schema keeps a plain `enum` (see config::Dtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    LastToken,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
            Self::LastToken => "last_token",
        }
    }

    /// Pools `hidden` (`[total_tokens, hidden]`) into `[sequences, hidden]` f32.
    ///
    /// `offsets` has one more entry than there are sequences: sequence `i` owns rows
    /// `offsets[i]..offsets[i + 1]`.
    pub fn apply(self, hidden: &Tensor, offsets: &[usize]) -> Result<Tensor> {
        let hidden = hidden.to_dtype(DType::F32)?;
        let device = hidden.device();
        let n = offsets.len().saturating_sub(1);
        let pooled = match self {
            Self::Cls => {
                hidden.index_select(&row_index(offsets[..n].iter().copied(), device)?, 0)?
            }
            Self::LastToken => {
                hidden.index_select(&row_index(offsets[1..].iter().map(|e| e - 1), device)?, 0)?
            }
            Self::Mean => {
                // One small matmul with a block "averaging" matrix: row i holds 1/len_i over
                // sequence i's tokens. Cheaper than n narrow+mean ops, and exact.
                let total = offsets[n];
                let mut weights = vec![0f32; n * total];
                for i in 0..n {
                    let (start, end) = (offsets[i], offsets[i + 1]);
                    let w = 1.0 / (end - start) as f32;
                    weights[i * total + start..i * total + end].fill(w);
                }
                Tensor::from_vec(weights, (n, total), device)?.matmul(&hidden)?
            }
            Self::Max => {
                let rows = (0..n)
                    .map(|i| {
                        hidden
                            .narrow(0, offsets[i], offsets[i + 1] - offsets[i])?
                            .max_keepdim(0)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)?
            }
        };
        Ok(pooled)
    }
}

fn row_index(rows: impl Iterator<Item = usize>, device: &Device) -> candle_core::Result<Tensor> {
    let rows: Vec<u32> = rows.map(|r| r as u32).collect();
    let len = rows.len();
    Tensor::from_vec(rows, len, device)
}

/// Scales `v` to unit L2 length, leaving an all-zero vector alone instead of dividing by zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed() -> (Tensor, Vec<usize>) {
        // Two sequences: rows 0..2 and 2..5 of a 5x2 matrix.
        let h = Tensor::new(
            &[[1f32, 2.], [3., 4.], [10., -1.], [20., 5.], [30., 0.]],
            &Device::Cpu,
        )
        .unwrap();
        (h, vec![0, 2, 5])
    }

    #[test]
    fn pooling_modes_see_only_their_own_rows() {
        let (h, off) = packed();
        let get = |p: Pooling| p.apply(&h, &off).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(get(Pooling::Mean), vec![vec![2., 3.], vec![20., 4. / 3.]]);
        assert_eq!(get(Pooling::Cls), vec![vec![1., 2.], vec![10., -1.]]);
        assert_eq!(get(Pooling::LastToken), vec![vec![3., 4.], vec![30., 0.]]);
        assert_eq!(get(Pooling::Max), vec![vec![3., 4.], vec![30., 5.]]);
    }

    #[test]
    fn normalize_gives_unit_length_and_spares_zero() {
        let mut v = vec![3f32, 4.];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.; 3]);
    }
}
