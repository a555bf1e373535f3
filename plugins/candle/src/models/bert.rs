//! BERT encoders (all-MiniLM-L6-v2, bge-small, e5-small and other `BertModel` checkpoints),
//! and XLM-RoBERTa, which is the same network with positions counted from `pad_token_id + 1`.
//!
//! Our own code rather than candle-transformers': it runs on the packed batch with the
//! hand-written AVX-512 kernels, which measured faster on CPU (BENCH-NOTES.md).
//! Post-LayerNorm transformer; every dense layer runs on the packed token rows, and Q/K/V are
//! fused into one matmul per layer.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::layers::{
    AttentionLayout, BatchPositions, HiddenAct, LayerNorm, Linear, Weights, attention,
};
use crate::models::{EmbeddingModel, PackedBatch};

/// The subset of a BERT `config.json` the forward pass needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Added to every position id: 0 for BERT, `pad_token_id + 1` for (XLM-)RoBERTa.
    #[serde(skip)]
    pub position_offset: u32,
    #[serde(skip, default = "default_architecture")]
    pub architecture: &'static str,
}

fn default_architecture() -> &'static str {
    "bert"
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    act: HiddenAct,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    max_positions: usize,
    position_offset: u32,
    architecture: &'static str,
    device: Device,
    /// The hand-written CPU attention runs (see [`crate::kernels`]).
    cpu_kernels: bool,
}

impl BertModel {
    pub fn load(c: &BertConfig, w: &mut Weights, device: &Device) -> Result<Self> {
        if c.position_embedding_type != "absolute" {
            return Err(Error::Config(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                c.position_embedding_type
            )));
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        w.detect_prefix(
            "embeddings.word_embeddings.weight",
            &["", "bert.", "roberta.", "model."],
        );
        let h = c.hidden_size;
        let embeddings = Embeddings {
            word: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: w.get(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            norm: LayerNorm::load(w, "embeddings.LayerNorm", h, c.layer_norm_eps)?,
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                let part = |n: &str| -> Result<(Tensor, Tensor)> {
                    let name = format!("{p}.attention.self.{n}");
                    Ok((
                        w.get(&format!("{name}.weight"), &[h, h])?,
                        w.get(&format!("{name}.bias"), &[h])?,
                    ))
                };
                Ok(Layer {
                    qkv: Linear::fuse(
                        &[part("query")?, part("key")?, part("value")?],
                        w.packing(),
                    )?,
                    attn_out: Linear::load(w, &format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: LayerNorm::load(
                        w,
                        &format!("{p}.attention.output.LayerNorm"),
                        h,
                        c.layer_norm_eps,
                    )?,
                    intermediate: Linear::load(
                        w,
                        &format!("{p}.intermediate.dense"),
                        h,
                        c.intermediate_size,
                    )?,
                    output: Linear::load(w, &format!("{p}.output.dense"), c.intermediate_size, h)?,
                    out_norm: LayerNorm::load(
                        w,
                        &format!("{p}.output.LayerNorm"),
                        h,
                        c.layer_norm_eps,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            act: c.hidden_act,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
            hidden: h,
            max_positions: c
                .max_position_embeddings
                .saturating_sub(c.position_offset as usize),
            position_offset: c.position_offset,
            architecture: c.architecture,
            device: device.clone(),
            cpu_kernels: w.cpu_kernels(),
        })
    }

    fn index(&self, values: &[u32]) -> Result<Tensor> {
        Ok(Tensor::from_slice(values, values.len(), &self.device)?)
    }
}

impl EmbeddingModel for BertModel {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        super::post_norm::check_len(batch, self.max_positions)?;
        let e = &self.embeddings;
        let positions = match self.position_offset {
            0 => self.index(&batch.positions)?,
            off => self.index(&batch.positions.iter().map(|p| p + off).collect::<Vec<_>>())?,
        };
        let mut xs = e
            .word
            .index_select(&self.index(&batch.input_ids)?, 0)?
            .add(&e.position.index_select(&positions, 0)?)?
            .add(
                &e.token_type
                    .index_select(&self.index(&batch.type_ids)?, 0)?,
            )?;
        xs = e.norm.forward(&xs)?;
        let layout =
            AttentionLayout::new(&batch.offsets, self.cpu_kernels, xs.dtype(), &self.device)?;
        let positions = BatchPositions::new(&layout);
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&xs)?;
            let ctx = attention(&qkv, &layout, self.heads, self.head_dim, &positions)?;
            xs = layer
                .attn_norm
                .forward_residual(&layer.attn_out.forward(&ctx)?, &xs)?;
            let ff = layer.intermediate.forward_act(&xs, Some(self.act))?;
            xs = layer
                .out_norm
                .forward_residual(&layer.output.forward(&ff)?, &xs)?;
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
