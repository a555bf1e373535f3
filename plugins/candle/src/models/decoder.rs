//! What the candle-transformers models (qwen2, qwen3, mistral, modernbert) share: reading their `config.json` whichever
//! transformers version wrote it, and loading candle-transformers' models from our checkpoint.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::layers::Weights;

/// Fills what candle-transformers' configs require and newer or older `config.json`s leave
/// out: transformers 5 moved `rope_theta` into `rope_parameters` and writes
/// `sliding_window: null` when it is off.
pub fn normalize_config(mut value: Value) -> Value {
    let Some(obj) = value.as_object_mut() else {
        return value;
    };
    let get_u64 =
        |obj: &serde_json::Map<String, Value>, k: &str| obj.get(k).and_then(Value::as_u64);
    if !obj.get("rope_theta").is_some_and(Value::is_number) {
        let theta = obj
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .cloned()
            .unwrap_or(Value::from(10_000.0));
        obj.insert("rope_theta".into(), theta);
    }
    let positions = get_u64(obj, "max_position_embeddings").unwrap_or(32_768);
    // candle-transformers' qwen2 applies `sliding_window` whether or not `use_sliding_window`
    // is on; transformers only when it is.
    let windowed = obj
        .get("use_sliding_window")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !windowed || !obj.get("sliding_window").is_some_and(Value::is_number) {
        obj.insert("sliding_window".into(), Value::from(positions));
    }
    let layers = get_u64(obj, "num_hidden_layers").unwrap_or(0);
    if !obj.get("max_window_layers").is_some_and(Value::is_number) {
        obj.insert("max_window_layers".into(), Value::from(layers));
    }
    if let (Some(h), Some(heads)) = (
        get_u64(obj, "hidden_size"),
        get_u64(obj, "num_attention_heads"),
    ) && !obj.get("head_dim").is_some_and(Value::is_number)
        && heads > 0
    {
        obj.insert("head_dim".into(), Value::from(h / heads));
    }
    for (key, default) in [
        ("use_sliding_window", Value::Bool(false)),
        ("tie_word_embeddings", Value::Bool(false)),
        ("attention_bias", Value::Bool(false)),
        ("hidden_act", Value::from("silu")),
    ] {
        if obj.get(key).is_none_or(Value::is_null) {
            obj.insert(key.into(), default);
        }
    }
    value
}

/// A VarBuilder over the checkpoint, every tensor under `model.` as candle-transformers
/// expects (embedding checkpoints are saved from the bare model, without the prefix).
pub fn var_builder(w: &Weights, device: &Device, dtype: DType) -> Result<VarBuilder<'static>> {
    var_builder_with(w, device, dtype, |_| Ok(()))
}

/// [`var_builder`], with `extra` adding or adjusting tensors (names under `model.`) first.
pub fn var_builder_with(
    w: &Weights,
    device: &Device,
    dtype: DType,
    extra: impl FnOnce(&mut HashMap<String, Tensor>) -> Result<()>,
) -> Result<VarBuilder<'static>> {
    let tensors =
        candle_core::safetensors::load(w.path(), &Device::Cpu).map_err(|e| Error::Weights {
            path: w.path().to_owned(),
            message: e.to_string(),
        })?;
    let tensors: HashMap<String, _> = tensors
        .into_iter()
        .map(
            |(k, t)| match k.starts_with("model.") || k.starts_with("lm_head.") {
                true => (k, t),
                false => (format!("model.{k}"), t),
            },
        )
        .collect();
    let mut tensors = tensors;
    extra(&mut tensors)?;
    Ok(VarBuilder::from_tensors(tensors, dtype, device))
}

/// A candle-transformers load error, said as a weights problem of this file: its first line
/// only, since candle appends a backtrace when RUST_BACKTRACE is set.
pub fn weights_error(w: &Weights, e: candle_core::Error) -> Error {
    let text = e.to_string();
    Error::Weights {
        path: w.path().to_owned(),
        message: text.lines().next().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_of_either_transformers_version_fill_the_same_fields() {
        let v4 = normalize_config(json!({"rope_theta": 1e6, "sliding_window": 4096,
            "use_sliding_window": false, "max_position_embeddings": 32768,
            "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}));
        let v5 = normalize_config(json!({"rope_parameters": {"rope_theta": 1e6},
            "sliding_window": null, "max_position_embeddings": 32768,
            "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}));
        for v in [&v4, &v5] {
            assert_eq!(v["rope_theta"], json!(1e6));
            assert_eq!(
                v["sliding_window"],
                json!(32768),
                "no window when it is off"
            );
            assert_eq!(v["head_dim"], json!(16));
            assert_eq!(v["max_window_layers"], json!(2));
        }
    }
}
