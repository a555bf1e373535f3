//! GTE encoders (`model_type: gte`, transformers ≥ 5: gte-multilingual-base; Alibaba's
//! remote-code checkpoints name it `new`): [`super::rope_encoder`] with biases on Q/K/V/O and
//! the down projection, rotary base 160 000 unless the config says otherwise.

use serde::Deserialize;
use serde_json::Value;

use super::rope_encoder::{Config, Names, UpGate, rope_theta};
use crate::layers::HiddenAct;

#[derive(Deserialize)]
struct Raw {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "gelu")]
    hidden_act: HiddenAct,
    max_position_embeddings: usize,
    #[serde(default = "one")]
    type_vocab_size: usize,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
}

fn gelu() -> HiddenAct {
    HiddenAct::Gelu
}
fn one() -> usize {
    1
}
fn eps() -> f64 {
    1e-12
}

pub fn config(value: Value) -> Result<Config, String> {
    let theta = rope_theta(&value, 160_000.0)?;
    let r: Raw = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(Config {
        architecture: "gte",
        vocab_size: r.vocab_size,
        hidden_size: r.hidden_size,
        num_hidden_layers: r.num_hidden_layers,
        num_attention_heads: r.num_attention_heads,
        intermediate_size: r.intermediate_size,
        hidden_act: r.hidden_act,
        max_position_embeddings: r.max_position_embeddings,
        type_vocab_size: r.type_vocab_size,
        layer_norm_eps: r.layer_norm_eps,
        rope_theta: theta,
        bias: true,
        names: Names {
            embed_norm: "embeddings.LayerNorm",
            layer: "encoder.layer",
            qkv: "attention.qkv_proj",
            attn_out: "attention.o_proj",
            attn_norm: "attn_ln",
            up_gate: UpGate::Fused("mlp.up_gate_proj"),
            down: "mlp.down_proj",
            mlp_norm: "mlp_ln",
        },
    })
}
