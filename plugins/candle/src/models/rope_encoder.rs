//! The network GTE and NomicBERT share (transformers' `GteModel`, `NomicBertModel`): BERT's post-LayerNorm layers with rotary positions instead of a
//! position table and a gated feed-forward, `down(act(gate(x)) · up(x))`. The families differ
//! in biases (GTE's Q/K/V/O and down projections have them, NomicBERT's none), the activation
//! (GELU, SiLU), the rotary base and their tensors' names; [`super::gte`] and
//! [`super::nomic_bert`] read their configs into [`Config`]. Checkpoints keep the original
//! fused layout (Q/K/V in one tensor, gate and up in one or two), which transformers also
//! writes back on save.
//!
//! Our own code (candle-transformers has no GTE, and its `nomic_bert` is a second copy of
//! the same network on padded batches), on the packed batch like [`super::bert`]: dense layers
//! on the packed rows with the CPU kernels, attention on the padded layout with rotary Q, K.

use candle_core::{Device, Tensor};

use super::post_norm::{FeedForward, Heads, PostNormLayer, check_len, lookup};
use super::{EmbeddingModel, PackedBatch};
use crate::error::Result;
use crate::layers::{AttentionLayout, BatchPositions, HiddenAct, LayerNorm, Linear, Weights};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub architecture: &'static str,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    /// 0: no token-type table (gte-base-en-v1.5).
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub rope_theta: f64,
    /// Q/K/V/O and the down projection carry biases.
    pub bias: bool,
    pub names: Names,
}

/// Where a family keeps each tensor; `{l}` stands for the layer's prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    pub embed_norm: &'static str,
    pub layer: &'static str,
    pub qkv: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    /// One `[2·intermediate, hidden]` tensor, up then gate (GTE), or up and gate apart.
    pub up_gate: UpGate,
    pub down: &'static str,
    pub mlp_norm: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpGate {
    Fused(&'static str),
    Apart {
        up: &'static str,
        gate: &'static str,
    },
}

/// `rope_parameters.rope_theta` (transformers 5) or `rope_theta`, refusing the scaled rotary
/// variants this network does not compute.
pub fn rope_theta(value: &serde_json::Value, default: f64) -> std::result::Result<f64, String> {
    let params = value.get("rope_parameters");
    if let Some(kind) = params
        .and_then(|p| p.get("rope_type"))
        .and_then(serde_json::Value::as_str)
        && kind != "default"
    {
        return Err(format!(
            "rope_parameters.rope_type {kind:?} is not supported (only \"default\")"
        ));
    }
    Ok(params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| value.get("rope_theta"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(default))
}

pub struct RopeEncoder {
    word: Tensor,
    token_type: Option<Tensor>,
    embed_norm: LayerNorm,
    layers: Vec<PostNormLayer>,
    act: HiddenAct,
    heads: Heads,
    hidden: usize,
    max_positions: usize,
    /// `[head_dim / 2]`, `1 / theta^(2i / head_dim)` as transformers computes it in f32.
    inv_freq: Vec<f32>,
    architecture: &'static str,
    device: Device,
    /// The layers run the CPU attention kernel (weights loaded for the CPU kernels).
    cpu_kernels: bool,
}

impl RopeEncoder {
    pub fn load(c: &Config, w: &mut Weights, device: &Device) -> Result<Self> {
        let heads = Heads::new(c.hidden_size, c.num_attention_heads)?;
        w.detect_prefix(
            "embeddings.word_embeddings.weight",
            &["", "new.", "bert.", "model."],
        );
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let eps = c.layer_norm_eps;
        let linear =
            |name: &str, n_in: usize, n_out: usize, bias: bool| -> Result<(Tensor, Tensor)> {
                let weight = w.get(&format!("{name}.weight"), &[n_out, n_in])?;
                let bias = match bias {
                    true => w.get(&format!("{name}.bias"), &[n_out])?,
                    false => Tensor::zeros(n_out, weight.dtype(), weight.device())?,
                };
                Ok((weight, bias))
            };
        let n = &c.names;
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("{}.{l}", n.layer);
                let at = |name: &str| format!("{p}.{name}");
                let up_gate = match n.up_gate {
                    UpGate::Fused(name) => linear(&at(name), h, 2 * i, false)?,
                    UpGate::Apart { up, gate } => {
                        let (u, ub) = linear(&at(up), h, i, false)?;
                        let (g, gb) = linear(&at(gate), h, i, false)?;
                        (Tensor::cat(&[u, g], 0)?, Tensor::cat(&[ub, gb], 0)?)
                    }
                };
                Ok(PostNormLayer {
                    qkv: Linear::fuse(&[linear(&at(n.qkv), h, 3 * h, c.bias)?], w.packing())?,
                    attn_out: Linear::fuse(&[linear(&at(n.attn_out), h, h, c.bias)?], w.packing())?,
                    attn_norm: LayerNorm::load(w, &at(n.attn_norm), h, eps)?,
                    ff: FeedForward::Gated {
                        fused: Linear::fuse(&[up_gate], w.packing())?,
                        down: Linear::fuse(&[linear(&at(n.down), i, h, c.bias)?], w.packing())?,
                        intermediate: i,
                        gate_first: false,
                    },
                    ff_norm: LayerNorm::load(w, &at(n.mlp_norm), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head_dim = heads.head_dim;
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|k| 1.0 / (c.rope_theta as f32).powf(k as f32 / head_dim as f32))
            .collect();
        Ok(Self {
            word: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            token_type: match c.type_vocab_size {
                0 => None,
                n => Some(w.get("embeddings.token_type_embeddings.weight", &[n, h])?),
            },
            embed_norm: LayerNorm::load(w, n.embed_norm, h, eps)?,
            layers,
            act: c.hidden_act,
            heads,
            hidden: h,
            max_positions: c.max_position_embeddings,
            inv_freq,
            architecture: c.architecture,
            device: device.clone(),
            cpu_kernels: w.cpu_kernels(),
        })
    }

    /// `cos` and `sin` of positions `0..len`, `[len, head_dim / 2]`.
    fn rope_tables(&self, len: usize) -> (Vec<f32>, Vec<f32>) {
        let angles = (0..len).flat_map(|p| self.inv_freq.iter().map(move |f| p as f32 * f));
        angles.map(|a| (a.cos(), a.sin())).unzip()
    }
}

impl EmbeddingModel for RopeEncoder {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        check_len(batch, self.max_positions)?;
        let mut xs = lookup(&self.word, &batch.input_ids, &self.device)?;
        if let Some(types) = &self.token_type {
            xs = xs.add(&lookup(types, &batch.type_ids, &self.device)?)?;
        }
        let mut xs = self.embed_norm.forward(&xs)?;
        let layout =
            AttentionLayout::new(&batch.offsets, self.cpu_kernels, xs.dtype(), &self.device)?;
        let (cos, sin) = self.rope_tables(layout.max_len());
        let positions =
            BatchPositions::new(&layout).with_rope(cos, sin, xs.dtype(), &self.device)?;
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
        self.architecture
    }
}
