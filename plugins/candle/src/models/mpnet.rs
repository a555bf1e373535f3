//! MPNet encoders (all-mpnet-base-v2, multi-qa-mpnet): BERT's post-LayerNorm network without
//! token types, positions counted from 2 (after `<pad>`, 1) as in RoBERTa, and a T5-style
//! relative position bias, shared by all layers, added to every attention score.
//!
//! Our own code (candle-transformers has no MPNet), on the packed batch like [`super::bert`]:
//! the dense layers run on the packed token rows with the CPU kernels, attention on the
//! padded layout, where the bias table is `[heads, L, L]` for the batch's longest sequence.

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::post_norm::{FeedForward, Heads, PostNormLayer, check_len, lookup};
use super::{EmbeddingModel, PackedBatch};
use crate::error::Result;
use crate::layers::{AttentionLayout, HiddenAct, LayerNorm, Linear, PositionTerms, Weights};

/// The subset of an MPNet `config.json` the forward pass needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

/// transformers' `MPNetEmbeddings` counts positions from its `padding_idx`, fixed at 1 (MPNet's
/// `<pad>`) whatever `pad_token_id` says, plus one.
const POSITION_OFFSET: u32 = 2;

fn default_eps() -> f64 {
    1e-12
}
fn default_buckets() -> usize {
    32
}

pub fn config(value: Value) -> serde_json::Result<Config> {
    serde_json::from_value(value)
}

/// The bucket of the relative distance `key − query`, as transformers'
/// `MPNetEncoder.relative_position_bucket` computes it (in f32, `max_distance` 128): half
/// the buckets per direction, exact up to a quarter of them, logarithmic beyond.
fn bucket(relative: i64, num_buckets: usize) -> u32 {
    let half = (num_buckets / 2) as i64;
    let n = -relative;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    ret += if n < max_exact {
        n
    } else {
        let scale = (128.0f32 / max_exact as f32).ln();
        let large = max_exact
            + ((n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32) as i64;
        large.min(half - 1)
    };
    ret as u32
}

pub struct MpNet {
    word: Tensor,
    position: Tensor,
    embed_norm: LayerNorm,
    /// `[buckets, heads]`.
    relative_bias: Tensor,
    buckets: usize,
    layers: Vec<PostNormLayer>,
    act: HiddenAct,
    heads: Heads,
    hidden: usize,
    max_positions: usize,
    position_offset: u32,
    device: Device,
}

impl MpNet {
    pub fn load(c: &Config, w: &mut Weights, device: &Device) -> Result<Self> {
        let heads = Heads::new(c.hidden_size, c.num_attention_heads)?;
        w.detect_prefix(
            "embeddings.word_embeddings.weight",
            &["", "mpnet.", "model."],
        );
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                let part = |n: &str| -> Result<(Tensor, Tensor)> {
                    let name = format!("{p}.attention.attn.{n}");
                    Ok((
                        w.get(&format!("{name}.weight"), &[h, h])?,
                        w.get(&format!("{name}.bias"), &[h])?,
                    ))
                };
                Ok(PostNormLayer {
                    qkv: Linear::fuse(&[part("q")?, part("k")?, part("v")?], w.packing())?,
                    attn_out: Linear::load(w, &format!("{p}.attention.attn.o"), h, h)?,
                    attn_norm: LayerNorm::load(w, &format!("{p}.attention.LayerNorm"), h, eps)?,
                    ff: FeedForward::Plain {
                        up: Linear::load(
                            w,
                            &format!("{p}.intermediate.dense"),
                            h,
                            c.intermediate_size,
                        )?,
                        down: Linear::load(
                            w,
                            &format!("{p}.output.dense"),
                            c.intermediate_size,
                            h,
                        )?,
                    },
                    ff_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let position_offset = POSITION_OFFSET;
        Ok(Self {
            word: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            embed_norm: LayerNorm::load(w, "embeddings.LayerNorm", h, eps)?,
            relative_bias: w.get(
                "encoder.relative_attention_bias.weight",
                &[c.relative_attention_num_buckets, c.num_attention_heads],
            )?,
            buckets: c.relative_attention_num_buckets,
            layers,
            act: c.hidden_act,
            heads,
            hidden: h,
            max_positions: c
                .max_position_embeddings
                .saturating_sub(position_offset as usize),
            position_offset,
            device: device.clone(),
        })
    }

    /// `[1, heads, len, len]`: the bias of key `j` for query `i`.
    fn position_bias(&self, len: usize) -> Result<Tensor> {
        let ids: Vec<u32> = (0..len as i64)
            .flat_map(|i| (0..len as i64).map(move |j| (i, j)))
            .map(|(i, j)| bucket(j - i, self.buckets))
            .collect();
        Ok(lookup(&self.relative_bias, &ids, &self.device)?
            .t()?
            .reshape((1, self.heads.heads, len, len))?)
    }
}

impl EmbeddingModel for MpNet {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        check_len(batch, self.max_positions)?;
        let positions: Vec<u32> = batch
            .positions
            .iter()
            .map(|p| p + self.position_offset)
            .collect();
        let xs = lookup(&self.word, &batch.input_ids, &self.device)?.add(&lookup(
            &self.position,
            &positions,
            &self.device,
        )?)?;
        let mut xs = self.embed_norm.forward(&xs)?;
        let layout = AttentionLayout::new(&batch.offsets, xs.dtype(), &self.device)?;
        let bias = self.position_bias(layout.max_len())?.to_dtype(xs.dtype())?;
        let terms = PositionTerms {
            bias: Some(&bias),
            rope: None,
        };
        for layer in &self.layers {
            xs = layer.forward(&xs, &layout, self.heads, terms, self.act)?;
        }
        Ok(xs)
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn architecture(&self) -> &'static str {
        "mpnet"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_transformers_at_the_log_boundaries() {
        // transformers' relative_position_bucket(-n) with 32 buckets, for n = key − query < 0
        // (query after key: the lower half), from torch.
        let want = [
            (15, 9),
            (16, 10),
            (17, 10),
            (31, 11),
            (32, 12),
            (33, 12),
            (63, 13),
            (64, 14),
            (65, 14),
            (127, 15),
            (128, 15),
            (300, 15),
        ];
        for (n, b) in want {
            assert_eq!(bucket(-n, 32), b, "n = {n}");
            assert_eq!(bucket(n, 32), b + 16, "n = -{n}");
        }
        assert_eq!((bucket(0, 32), bucket(-3, 32), bucket(3, 32)), (0, 3, 19));
    }
}
