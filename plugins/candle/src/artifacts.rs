//! Reading a model directory in Hugging Face layout.
//!
//! ```text
//!  dir/config.json              architecture and sizes          (required)
//!  dir/tokenizer.json           fast tokenizer                  (required)
//!  dir/model.safetensors        weights                         (required)
//!  dir/modules.json             sentence-transformers pipeline  (optional)
//!  dir/1_Pooling/config.json    pooling mode                    (optional)
//!  dir/sentence_bert_config.json  max_seq_length                (optional)
//!  dir/tokenizer_config.json    model_max_length fallback       (optional)
//!  dir/config_sentence_transformers.json  prompts, default_prompt_name (optional)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pooling::Pooling;

pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const MODULES: &str = "modules.json";
pub const SENTENCE_CONFIG: &str = "sentence_bert_config.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const DEFAULT_POOLING_CONFIG: &str = "1_Pooling/config.json";
pub const ST_CONFIG: &str = "config_sentence_transformers.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";
pub const CHAT_TEMPLATE: &str = "chat_template.jinja";

/// What sentence-transformers' own files say about using the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceSettings {
    pub pooling: Option<Pooling>,
    /// A `Normalize` module follows pooling.
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
    /// Named prefixes (`query: `…) a request picks with `prompt_name`.
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_prompt_name: Option<String>,
}

/// A checked model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub config_json: String,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
    pub sentence: SentenceSettings,
    /// `model_max_length` from `tokenizer_config.json`, when sensible.
    pub tokenizer_max_length: Option<usize>,
}

impl ModelDir {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::BadFile {
                path: dir.to_owned(),
                message: "not a directory".into(),
            });
        }
        let required = |file: &'static str| {
            let p = dir.join(file);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::MissingFile {
                    dir: dir.to_owned(),
                    file,
                })
            }
        };
        let config_path = required(CONFIG)?;
        let tokenizer = required(TOKENIZER)?;
        let weights = required(WEIGHTS).map_err(|e| match dir.join("pytorch_model.bin").is_file() {
            true => Error::BadFile {
                path: dir.join("pytorch_model.bin"),
                message: "only safetensors weights are supported; convert with safetensors' convert script".into(),
            },
            false => e,
        })?;
        let config_json = read(&config_path)?;
        let tokenizer_max_length = optional_json(&dir.join(TOKENIZER_CONFIG))?
            .and_then(|v| v.get("model_max_length").and_then(Value::as_u64))
            // Tokenizers without a limit store a huge sentinel (1e30).
            .filter(|&n| n > 0 && n < 1_000_000)
            .map(|n| n as usize);
        Ok(Self {
            sentence: read_sentence_settings(dir)?,
            dir: dir.to_owned(),
            config_json,
            tokenizer,
            weights,
            tokenizer_max_length,
        })
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::BadFile {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    serde_json::from_str(&read(path)?)
        .map(Some)
        .map_err(|e| Error::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The file names sentence-transformers declares in `modules.json`, if any.
pub fn pooling_config_path(dir: &Path) -> Result<Option<String>> {
    Ok(read_modules(dir)?.and_then(|mods| {
        mods.into_iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| format!("{}/config.json", m.path))
    }))
}

fn read_modules(dir: &Path) -> Result<Option<Vec<Module>>> {
    let path = dir.join(MODULES);
    optional_json(&path)?
        .map(|v| {
            serde_json::from_value(v).map_err(|e| Error::BadFile {
                path,
                message: e.to_string(),
            })
        })
        .transpose()
}

fn read_sentence_settings(dir: &Path) -> Result<SentenceSettings> {
    let modules = read_modules(dir)?;
    let normalize = modules
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.kind.ends_with(".Normalize")));
    let pooling_file = modules
        .as_ref()
        .and_then(|m| m.iter().find(|m| m.kind.ends_with(".Pooling")))
        .map(|m| format!("{}/config.json", m.path))
        .unwrap_or_else(|| DEFAULT_POOLING_CONFIG.to_owned());
    let pooling_path = dir.join(&pooling_file);
    let pooling = optional_json(&pooling_path)?
        .map(|v| parse_pooling(&v, &pooling_path))
        .transpose()?;
    let max_seq_length = optional_json(&dir.join(SENTENCE_CONFIG))?
        .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
        .map(|n| n as usize);
    let st_path = dir.join(ST_CONFIG);
    let st = optional_json(&st_path)?;
    let prompts: BTreeMap<String, String> = match st.as_ref().and_then(|v| v.get("prompts")) {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(p) => serde_json::from_value(p.clone()).map_err(|e| Error::BadFile {
            path: st_path.clone(),
            message: format!("prompts: {e}"),
        })?,
    };
    let default_prompt_name = st
        .as_ref()
        .and_then(|v| v.get("default_prompt_name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(name) = &default_prompt_name
        && !prompts.contains_key(name)
    {
        return Err(Error::BadFile {
            path: st_path,
            message: format!("default_prompt_name {name:?} is not one of the prompts"),
        });
    }
    Ok(SentenceSettings {
        pooling,
        normalize,
        max_seq_length,
        prompts,
        default_prompt_name,
    })
}

/// sentence-transformers' pooling config: exactly one supported mode must be on.
fn parse_pooling(v: &Value, path: &Path) -> Result<Pooling> {
    let on = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        ("pooling_mode_lasttoken", Some(Pooling::LastToken)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
    ];
    let enabled: Vec<_> = modes.iter().filter(|(k, _)| on(k)).collect();
    match enabled.as_slice() {
        [(_, Some(p))] => Ok(*p),
        [(k, None)] => Err(Error::BadFile {
            path: path.to_owned(),
            message: format!("{k} is not supported"),
        }),
        [] => Err(Error::BadFile {
            path: path.to_owned(),
            message: "no pooling mode is enabled".into(),
        }),
        _ => Err(Error::BadFile {
            path: path.to_owned(),
            message: "several pooling modes at once (concatenated) are not supported".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pooling_config_needs_exactly_one_supported_mode() {
        let p = Path::new("p");
        assert_eq!(
            parse_pooling(&json!({"pooling_mode_cls_token": true}), p).unwrap(),
            Pooling::Cls
        );
        assert!(parse_pooling(&json!({}), p).is_err());
        assert!(
            parse_pooling(
                &json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}),
                p
            )
            .is_err()
        );
        assert!(parse_pooling(&json!({"pooling_mode_mean_sqrt_len_tokens": true}), p).is_err());
    }
}
