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
use crate::layers::{AttentionLayout, BatchPositions, HiddenAct, LayerNorm, Linear, Weights};

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
    /// The layers run the CPU attention kernel (weights loaded for the CPU kernels).
    cpu_kernels: bool,
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
            cpu_kernels: w.cpu_kernels(),
        })
    }

    /// `[heads, 2·span − 1]`: the bias of key `j` for query `i` at `span − 1 + (j − i)`.
    fn relative_table(&self, span: usize) -> Result<Vec<f32>> {
        // [buckets, heads]
        let weights = self
            .relative_bias
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        let weights = &weights;
        let width = (2 * span).saturating_sub(1) as i64;
        let buckets = self.buckets;
        Ok((0..self.heads.heads)
            .flat_map(|h| {
                (0..width).map(move |k| weights[bucket(k - (width - 1) / 2, buckets) as usize][h])
            })
            .collect())
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
        let layout =
            AttentionLayout::new(&batch.offsets, self.cpu_kernels, xs.dtype(), &self.device)?;
        let positions = BatchPositions::new(&layout).with_relative(
            self.relative_table(layout.max_len())?,
            self.heads.heads,
            xs.dtype(),
            &self.device,
        )?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &layout, self.heads, &positions, self.act)?;
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
