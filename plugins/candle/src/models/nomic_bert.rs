//! NomicBERT encoders (nomic-embed-text-v1, v1.5): [`super::rope_encoder`] without biases,
//! SiLU-gated feed-forward, rotary base 1 000 unless the config says otherwise. Reads the
//! config as transformers ≥ 5 writes it or as nomic-ai's remote code does (`n_embd`, …).

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
    #[serde(default = "silu")]
    hidden_act: HiddenAct,
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    head_dim: Option<usize>,
}

fn silu() -> HiddenAct {
    HiddenAct::Silu
}
fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}

pub fn config(value: Value) -> Result<Config, String> {
    let value = from_remote_code(value)?;
    let theta = rope_theta(&value, 1_000.0)?;
    let r: Raw = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if let Some(d) = r.head_dim
        && r.num_attention_heads > 0
        && d != r.hidden_size / r.num_attention_heads
    {
        return Err(format!(
            "head_dim {d} differs from hidden_size / num_attention_heads ({})",
            r.hidden_size / r.num_attention_heads
        ));
    }
    Ok(Config {
        architecture: "nomic_bert",
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
        bias: false,
        names: Names {
            embed_norm: "emb_ln",
            layer: "encoder.layers",
            qkv: "attn.Wqkv",
            attn_out: "attn.out_proj",
            attn_norm: "norm1",
            up_gate: UpGate::Apart {
                up: "mlp.fc11",
                gate: "mlp.fc12",
            },
            down: "mlp.fc2",
            mlp_norm: "norm2",
        },
    })
}

/// nomic-ai's remote-code `config.json` (`n_embd`, `rotary_emb_base`, …) in transformers'
/// names, refusing the variants the network here does not compute.
fn from_remote_code(mut value: Value) -> Result<Value, String> {
    let Some(obj) = value.as_object_mut() else {
        return Ok(value);
    };
    if !obj.contains_key("n_embd") {
        return Ok(value);
    }
    for (key, want) in [
        ("rotary_emb_fraction", Value::from(1.0)),
        ("rotary_emb_interleaved", Value::Bool(false)),
        ("prenorm", Value::Bool(false)),
        ("qkv_proj_bias", Value::Bool(false)),
        ("mlp_fc1_bias", Value::Bool(false)),
        ("mlp_fc2_bias", Value::Bool(false)),
        ("activation_function", Value::from("swiglu")),
    ] {
        if let Some(v) = obj.get(key)
            && !v.is_null()
            && v.as_f64()
                .zip(want.as_f64())
                .map_or(*v != want, |(a, b)| a != b)
        {
            return Err(format!("{key} {v} is not supported (only {want})"));
        }
    }
    if obj
        .get("rotary_scaling_factor")
        .is_some_and(|v| !v.is_null())
    {
        return Err("rotary_scaling_factor (dynamic NTK rotary) is not supported".into());
    }
    for (from, to) in [
        ("n_embd", "hidden_size"),
        ("n_head", "num_attention_heads"),
        ("n_layer", "num_hidden_layers"),
        ("n_inner", "intermediate_size"),
        ("n_positions", "max_position_embeddings"),
        ("layer_norm_epsilon", "layer_norm_eps"),
        ("rotary_emb_base", "rope_theta"),
    ] {
        if let Some(v) = obj.remove(from) {
            obj.insert(to.into(), v);
        }
    }
    obj.insert("hidden_act".into(), Value::from("silu"));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_code_configs_read_as_transformers_ones() {
        let v5 = config(
            json!({"vocab_size": 30528, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "silu",
            "max_position_embeddings": 8192, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0}}),
        )
        .unwrap();
        let remote = config(json!({"vocab_size": 30528, "n_embd": 768, "n_layer": 12,
            "n_head": 12, "n_inner": 3072, "activation_function": "swiglu", "n_positions": 8192,
            "type_vocab_size": 2, "layer_norm_epsilon": 1e-12, "rotary_emb_base": 1000,
            "rotary_emb_fraction": 1.0, "qkv_proj_bias": false, "prenorm": false,
            "rotary_scaling_factor": null}))
        .unwrap();
        assert_eq!(v5, remote);
        let half = config(
            json!({"vocab_size": 8, "n_embd": 8, "n_layer": 1, "n_head": 2,
            "n_inner": 16, "n_positions": 8, "rotary_emb_fraction": 0.5}),
        )
        .unwrap_err();
        assert!(half.contains("rotary_emb_fraction"), "{half}");
    }
}
