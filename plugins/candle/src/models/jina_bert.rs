//! JinaBERT v2 encoders (jina-embeddings-v2-small/base-en, -de, -es, -code): BERT's
//! post-LayerNorm network with ALiBi instead of a position table (each head's scores get
//! `−slope·|i − j|`, so no length limit but the config's) and a gated feed-forward,
//! `LayerNorm(x + wo(act(gate) · rest))` with gate and rest from one `gated_layers` matmul.
//! Its `config.json` says `model_type: bert` with `position_embedding_type: alibi` (the
//! network lives in jinaai's remote code; transformers has no class for it).
//!
//! Our own code on the packed batch like [`super::mpnet`]: candle-transformers' `jina_bert`
//! takes no attention mask (so padded batches would attend to padding) and builds its ALiBi
//! table for all `max_position_embeddings` at load (8192² per head for the v2 models).

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::post_norm::{FeedForward, Heads, PostNormLayer, check_len, lookup};
use super::{EmbeddingModel, PackedBatch};
use crate::error::Result;
use crate::layers::{AttentionLayout, BatchPositions, HiddenAct, LayerNorm, Linear, Weights};

/// The subset of a JinaBERT v2 `config.json` the forward pass needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// `geglu` (GELU gate, the published models) or `reglu` (ReLU gate).
    #[serde(default = "default_ff")]
    pub feed_forward_type: String,
    #[serde(skip, default = "default_act")]
    pub act: HiddenAct,
}

fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_ff() -> String {
    "geglu".into()
}
fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}

/// Whether a `model_type: bert` config is JinaBERT's.
pub fn is_jina(value: &Value) -> bool {
    value.get("position_embedding_type").and_then(Value::as_str) == Some("alibi")
}

pub fn config(value: Value) -> std::result::Result<Config, String> {
    let mut c: Config = serde_json::from_value(value).map_err(|e| e.to_string())?;
    c.act = match c.feed_forward_type.as_str() {
        "geglu" => HiddenAct::Gelu,
        "reglu" => HiddenAct::Relu,
        other => {
            return Err(format!(
                "feed_forward_type {other:?} is not supported (only \"geglu\", \"reglu\")"
            ));
        }
    };
    Ok(c)
}

/// ALiBi's per-head slopes (Press et al.; jinaai's `_get_alibi_head_slopes`): a geometric
/// series from `2^(−8/n)`, with the odd entries of the next power of two filling in when the
/// head count is not one.
fn slopes(heads: usize) -> Vec<f64> {
    fn power_of_2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    }
    if heads.is_power_of_two() {
        return power_of_2(heads);
    }
    let closest = 1 << heads.ilog2();
    let mut s = power_of_2(closest);
    s.extend(
        slopes(2 * closest)
            .into_iter()
            .step_by(2)
            .take(heads - closest),
    );
    s
}

pub struct JinaBert {
    word: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    slopes: Vec<f64>,
    layers: Vec<PostNormLayer>,
    act: HiddenAct,
    heads: Heads,
    hidden: usize,
    max_positions: usize,
    device: Device,
    /// The layers run the CPU attention kernel (weights loaded for the CPU kernels).
    cpu_kernels: bool,
}

impl JinaBert {
    pub fn load(c: &Config, w: &mut Weights, device: &Device) -> Result<Self> {
        let heads = Heads::new(c.hidden_size, c.num_attention_heads)?;
        w.detect_prefix(
            "embeddings.word_embeddings.weight",
            &["", "bert.", "model."],
        );
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let eps = c.layer_norm_eps;
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                let part = |n: &str| -> Result<(Tensor, Tensor)> {
                    let name = format!("{p}.attention.self.{n}");
                    Ok((
                        w.get(&format!("{name}.weight"), &[h, h])?,
                        w.get(&format!("{name}.bias"), &[h])?,
                    ))
                };
                Ok(PostNormLayer {
                    qkv: Linear::fuse(
                        &[part("query")?, part("key")?, part("value")?],
                        w.packing(),
                    )?,
                    attn_out: Linear::load(w, &format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: LayerNorm::load(
                        w,
                        &format!("{p}.attention.output.LayerNorm"),
                        h,
                        eps,
                    )?,
                    ff: FeedForward::Gated {
                        fused: Linear::load_opt_bias(
                            w,
                            &format!("{p}.mlp.gated_layers"),
                            h,
                            2 * i,
                            false,
                        )?,
                        down: Linear::load(w, &format!("{p}.mlp.wo"), i, h)?,
                        intermediate: i,
                        gate_first: true,
                    },
                    ff_norm: LayerNorm::load(w, &format!("{p}.mlp.layernorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            token_type: w.get(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            embed_norm: LayerNorm::load(w, "embeddings.LayerNorm", h, eps)?,
            slopes: slopes(c.num_attention_heads),
            layers,
            act: c.act,
            heads,
            hidden: h,
            max_positions: c.max_position_embeddings,
            device: device.clone(),
            cpu_kernels: w.cpu_kernels(),
        })
    }

    /// `[heads, 2·span − 1]`: `−slope_h · |j − i|` at `span − 1 + (j − i)`.
    fn alibi(&self, span: usize) -> Vec<f32> {
        let width = (2 * span).saturating_sub(1) as i64;
        self.slopes
            .iter()
            .flat_map(|&s| {
                (0..width).map(move |k| -(s as f32) * (k - (width - 1) / 2).abs() as f32)
            })
            .collect()
    }
}

impl EmbeddingModel for JinaBert {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        check_len(batch, self.max_positions)?;
        let xs = lookup(&self.word, &batch.input_ids, &self.device)?.add(&lookup(
            &self.token_type,
            &batch.type_ids,
            &self.device,
        )?)?;
        let mut xs = self.embed_norm.forward(&xs)?;
        let layout =
            AttentionLayout::new(&batch.offsets, self.cpu_kernels, xs.dtype(), &self.device)?;
        let positions = BatchPositions::new(&layout).with_relative(
            self.alibi(layout.max_len()),
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
        "jina-bert"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_follow_the_paper_for_any_head_count() {
        let s8 = slopes(8);
        let want: Vec<f64> = (1..=8).map(|i| 2f64.powi(-i)).collect();
        assert!(
            s8.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{s8:?}"
        );
        // 12 heads (the v2 base models): the 8 of 8, then slopes 1, 3, 5, 7 of 16.
        let s12 = slopes(12);
        let s16 = slopes(16);
        assert_eq!(&s12[..8], &s8[..]);
        assert_eq!(&s12[8..], &[s16[0], s16[2], s16[4], s16[6]]);
    }
}
