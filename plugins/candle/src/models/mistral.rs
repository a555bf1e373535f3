//! Mistral decoder embedders (e5-mistral-7b-instruct, SFR-Embedding-Mistral, Linq-Embed):
//! causal attention, last-token pooling, through the padded adapter.
//!
//! candle-transformers' `mistral::Model` only returns the last position's logits, so the
//! hidden states come from its `qwen2::Model`, which is the same network (RMSNorm, SwiGLU,
//! rotary positions, grouped-query attention, sliding window) plus Q/K/V biases: Mistral's
//! checkpoint loads into it with those biases zero, which computes exactly Mistral's forward.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::decoder::{normalize_config, var_builder_with};
use super::qwen2::{Config, Qwen2};
use crate::error::{Error, Result};
use crate::layers::Weights;

/// Reads a Mistral `config.json` into the Qwen2 config it amounts to.
pub fn config(mut value: Value) -> std::result::Result<Config, String> {
    let get = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    if let (Some(h), Some(n), Some(d)) = (
        get(&value, "hidden_size"),
        get(&value, "num_attention_heads"),
        get(&value, "head_dim"),
    ) && n > 0
        && h / n != d
    {
        return Err(format!(
            "head_dim {d} differs from hidden_size / num_attention_heads ({}), which this \
             model's attention assumes",
            h / n
        ));
    }
    if let Some(obj) = value.as_object_mut() {
        // transformers lets query i see keys i − window < j ≤ i; candle's mask keeps j + window ≥ i.
        match obj.get("sliding_window").and_then(Value::as_u64) {
            Some(w) if w > 0 => {
                obj.insert("sliding_window".into(), Value::from(w - 1));
                obj.insert("use_sliding_window".into(), Value::Bool(true));
            }
            _ => {
                obj.insert("use_sliding_window".into(), Value::Bool(false));
            }
        }
    }
    serde_json::from_value(normalize_config(value)).map_err(|e| e.to_string())
}

/// Loads the checkpoint as a Qwen2 network with zero Q/K/V biases.
pub fn load(c: &Config, w: &Weights, device: &Device, dtype: DType) -> Result<Qwen2> {
    let head_dim = c.hidden_size / c.num_attention_heads.max(1);
    let vb = var_builder_with(w, device, dtype, |tensors| {
        for i in 0..c.num_hidden_layers {
            for (proj, heads) in [
                ("q_proj", c.num_attention_heads),
                ("k_proj", c.num_key_value_heads),
                ("v_proj", c.num_key_value_heads),
            ] {
                let name = format!("model.layers.{i}.self_attn.{proj}.bias");
                if tensors.contains_key(&name) {
                    return Err(Error::Weights {
                        path: w.path().to_owned(),
                        message: format!("a Mistral checkpoint has no {name:?}, this one does"),
                    });
                }
                let zeros = Tensor::zeros(heads * head_dim, DType::F32, &Device::Cpu)?;
                tensors.insert(name, zeros);
            }
        }
        Ok(())
    })?;
    Qwen2::from_var_builder(c, w, vb, device, "mistral")
}
