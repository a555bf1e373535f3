//! Capability descriptors (JSON Schemas) and the payload shapes behind them.

use base64::Engine as _;
use bkg_plugin_api::{CapabilityDescriptor, Cost, CostUnit};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::ModelSource;
use crate::engine::ModelInfo;
use crate::error::{Error, Result};

pub const LOAD: &str = "model.load";
pub const UNLOAD: &str = "model.unload";
pub const INFER: &str = "model.infer";
pub const EMBEDDINGS: &str = "embeddings";

fn input_schema() -> Value {
    json!({
        "description": "One text, or a list of texts embedded together.",
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
        ]
    })
}

fn model_info_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "architecture": {"type": "string"},
            "dimensions": {"type": "integer"},
            "max_seq_length": {"type": "integer", "description": "Token limit, special tokens included."},
            "pooling": {"enum": ["mean", "cls", "max", "last_token"]},
            "normalize": {"type": "boolean", "description": "Default L2 normalization."},
            "dtype": {"enum": ["f32", "bf16", "f16"]},
            "device": {"type": "string"}
        }
    })
}

pub fn descriptors() -> Vec<CapabilityDescriptor> {
    vec![
        CapabilityDescriptor {
            id: LOAD.into(),
            name: "Load model".into(),
            description: "Loads a model (an embedder, cross-encoder, classifier or causal language model), replacing \
                the current one once the new one is ready. A Hub model is downloaded into the HF cache (HF_HOME) unless \
                HF_HUB_OFFLINE=1; a path names a local directory in Hugging Face layout; gguf_file picks a quantized \
                GGUF language model in either. On failure the previous model stays loaded."
                .into(),
            input_schema: json!({
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["model_id"],
                        "properties": {
                            "model_id": {"type": "string", "examples": ["sentence-transformers/all-MiniLM-L6-v2"]},
                            "revision": {"type": "string", "default": "main"},
                            "gguf_file": {"type": "string", "pattern": "\\.gguf$", "description": "A quantized GGUF file of the repository to generate with; only it is fetched."},
                            "tokenizer_id": {"type": "string", "description": "With gguf_file: the repository holding tokenizer.json and tokenizer_config.json (default: model_id)."}
                        },
                        "additionalProperties": false
                    },
                    {
                        "type": "object",
                        "required": ["path"],
                        "properties": {
                            "path": {"type": "string", "description": "A directory inside the model root (the config's model_root, else BKG_MODEL_ROOT); relative paths resolve against it. Without a model root, loading by path is refused."},
                            "gguf_file": {"type": "string", "pattern": "\\.gguf$", "description": "A quantized GGUF file in the directory to generate with; tokenizer.json lies beside it."}
                        },
                        "additionalProperties": false
                    }
                ]
            }),
            output_schema: json!({
                "type": "object",
                "required": ["model", "load_ms"],
                "properties": {"model": model_info_schema(), "load_ms": {"type": "integer"}}
            }),
            management: true,
            cost: None,
            streaming: false,
        },
        CapabilityDescriptor {
            id: UNLOAD.into(),
            name: "Unload model".into(),
            description: "Unloads the current model; requests already queued are still answered. Embedding \
                requests then answer 503 until model.load."
                .into(),
            input_schema: json!({"type": "object", "additionalProperties": false}),
            output_schema: json!({
                "type": "object",
                "properties": {"unloaded": {"type": ["string", "null"], "description": "Name of the unloaded model, null if none was loaded."}}
            }),
            management: true,
            cost: None,
            streaming: false,
        },
        CapabilityDescriptor {
            id: INFER.into(),
            name: "Embed".into(),
            description: "Embeds one or more texts. Inputs longer than the model's max_seq_length are cut (and \
                flagged in `truncated`) unless truncation is off, in which case they are refused (422)."
                .into(),
            input_schema: json!({
                "type": "object",
                "required": ["input"],
                "properties": {
                    "input": input_schema(),
                    "normalize": {"type": "boolean", "description": "L2-normalize; default from the model (sentence-transformers Normalize module) or config."},
                    "truncate": {"type": "boolean", "description": "Cut over-long inputs; default from config (true)."},
                    "prompt_name": prompt_name_schema(),
                    "dimensions": dimensions_schema()
                },
                "additionalProperties": false
            }),
            output_schema: json!({
                "type": "object",
                "required": ["model", "dimensions", "embeddings", "truncated", "normalized", "usage"],
                "properties": {
                    "model": {"type": "string"},
                    "dimensions": {"type": "integer"},
                    "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "description": "One vector per input, in input order."},
                    "truncated": {"type": "array", "items": {"type": "boolean"}, "description": "Per input: tokens were cut off."},
                    "normalized": {"type": "boolean"},
                    "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer", "description": "Tokens embedded, special tokens included, after truncation."}}}
                }
            }),
            management: false,
            cost: Some(per_input()),
            streaming: false,
        },
        CapabilityDescriptor {
            id: EMBEDDINGS.into(),
            name: "Embeddings (OpenAI-compatible)".into(),
            description: "The OpenAI /v1/embeddings request and response shapes. `model` is accepted and \
                ignored (the loaded model answers); `encoding_format` may be float or base64 (little-endian f32)."
                .into(),
            input_schema: json!({
                "type": "object",
                "required": ["input"],
                "properties": {
                    "input": input_schema(),
                    "model": {"type": "string"},
                    "encoding_format": {"enum": ["float", "base64"], "default": "float"},
                    "dimensions": dimensions_schema(),
                    "prompt_name": prompt_name_schema(),
                    "user": {"type": "string"}
                }
            }),
            output_schema: json!({
                "type": "object",
                "required": ["object", "data", "model", "usage"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "object": {"const": "embedding"},
                            "index": {"type": "integer"},
                            "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}
                        }
                    }},
                    "model": {"type": "string"},
                    "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}
                }
            }),
            management: false,
            cost: Some(per_input()),
            streaming: false,
        },
    ]
    .into_iter()
    .chain(crate::scoring::descriptors())
    .collect()
}

fn prompt_name_schema() -> Value {
    json!({"type": "string", "description": "One of the model's prompts (config_sentence_transformers.json), put before \
        every input, e.g. `query`; default: the model's default_prompt_name, else none. An unknown name is refused (422)."})
}

fn dimensions_schema() -> Value {
    json!({"type": "integer", "minimum": 1, "description": "Matryoshka truncation: keep the first n dimensions, then \
        renormalize (when normalizing). More than the model has is refused (422)."})
}

/// Embedding work grows with the number of texts, so each one is a unit of the rate limit.
fn per_input() -> Cost {
    Cost {
        unit: CostUnit::Inputs,
        field: Some("/input".into()),
        per: None,
    }
}

fn parse<T: for<'de> Deserialize<'de>>(payload: Value) -> Result<T> {
    serde_json::from_value(payload).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// `input` as a list of texts; token-id arrays (allowed by OpenAI) are refused clearly.
fn texts(input: &Value) -> Result<Vec<String>> {
    let wrong = || Error::InvalidInput("input must be a string or an array of strings".into());
    match input {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect(),
        _ => Err(wrong()),
    }
}

/// A `model.load` request. A path is confined to the model root later
/// ([`crate::config::confine`]); a Hub id and revision must not walk out of the HF cache.
pub fn parse_load(payload: Value) -> Result<ModelSource> {
    let source = parse::<ModelSource>(payload)?;
    let walks =
        |s: &str| s.starts_with('/') || s.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if source
        .gguf_file()
        .is_some_and(|f| walks(f) || f.contains('\\') || !f.ends_with(".gguf"))
    {
        return Err(Error::BadModelId(
            "gguf_file must name a .gguf file inside the model's directory or repository",
        ));
    }
    if let ModelSource::Hub {
        model_id,
        revision,
        tokenizer_id,
        ..
    } = &source
    {
        for id in std::iter::once(model_id).chain(tokenizer_id) {
            if walks(id) || id.contains('\\') {
                return Err(Error::BadModelId(
                    "model_id and tokenizer_id must be <name> or <org>/<name>",
                ));
            }
        }
        if revision
            .as_deref()
            .is_some_and(|r| walks(r) || r.contains('\\'))
        {
            return Err(Error::BadModelId(
                "revision must be a branch, tag or commit",
            ));
        }
    }
    Ok(source)
}

/// `model.infer` request.
#[derive(Debug)]
pub struct InferRequest {
    pub texts: Vec<String>,
    pub normalize: Option<bool>,
    pub truncate: Option<bool>,
    pub prompt_name: Option<String>,
    pub dimensions: Option<usize>,
}

pub fn parse_infer(payload: Value) -> Result<InferRequest> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        input: Value,
        normalize: Option<bool>,
        truncate: Option<bool>,
        prompt_name: Option<String>,
        dimensions: Option<Value>,
    }
    let raw: Raw = parse(payload)?;
    Ok(InferRequest {
        texts: texts(&raw.input)?,
        normalize: raw.normalize,
        truncate: raw.truncate,
        prompt_name: raw.prompt_name,
        dimensions: dimensions(raw.dimensions.as_ref())?,
    })
}

/// Embeddings and the facts a response reports about them.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub truncated: Vec<bool>,
    pub prompt_tokens: usize,
    pub normalized: bool,
}

/// Answers are written straight to JSON text from typed structs: each float is formatted
/// once, as the shortest text that reads back as the same `f32` (`0.1`, not the
/// `0.10000000149011612` an `f32` widened into a [`Value`] prints), with no [`Value`] node
/// allocated per number. For 384 dimensions that halves the body and the work per sentence
/// (docs/BENCHMARKS.md, "CPU-side work per sentence").
#[derive(Serialize)]
struct InferAnswer<'a> {
    model: &'a str,
    dimensions: usize,
    embeddings: &'a [Vec<f32>],
    truncated: &'a [bool],
    normalized: bool,
    usage: Usage,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_tokens: Option<usize>,
}

pub fn infer_response(info: &ModelInfo, e: Embedded) -> Box<RawValue> {
    raw(&InferAnswer {
        model: &info.name,
        dimensions: e.vectors.first().map_or(info.dimensions, Vec::len),
        embeddings: &e.vectors,
        truncated: &e.truncated,
        normalized: e.normalized,
        usage: Usage {
            prompt_tokens: e.prompt_tokens,
            total_tokens: None,
        },
    })
}

fn raw(answer: &impl Serialize) -> Box<RawValue> {
    // Strings, integers, bools and finite or non-finite floats (`null`) always serialize.
    serde_json::value::to_raw_value(answer).expect("an answer of plain fields serializes")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

/// OpenAI embeddings request.
#[derive(Debug)]
pub struct OpenAiRequest {
    pub texts: Vec<String>,
    pub encoding_format: EncodingFormat,
    pub dimensions: Option<usize>,
    pub prompt_name: Option<String>,
}

pub fn parse_openai(payload: Value) -> Result<OpenAiRequest> {
    #[derive(Deserialize)]
    struct Raw {
        input: Value,
        #[serde(default)]
        encoding_format: Option<EncodingFormat>,
        dimensions: Option<Value>,
        prompt_name: Option<String>,
    }
    let raw: Raw = parse(payload)?;
    Ok(OpenAiRequest {
        texts: texts(&raw.input)?,
        encoding_format: raw.encoding_format.unwrap_or_default(),
        dimensions: dimensions(raw.dimensions.as_ref())?,
        prompt_name: raw.prompt_name,
    })
}

/// `dimensions` as JSON Schema's integers, as the gateway checks them (`384.0` is 384).
fn dimensions(v: Option<&Value>) -> Result<Option<usize>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => bkg_plugin_api::as_u64(v)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&d| d > 0)
            .map(Some)
            .ok_or_else(|| Error::InvalidInput("dimensions: must be a positive integer".into())),
    }
}

#[derive(Serialize)]
struct OpenAiAnswer<'a> {
    object: &'static str,
    data: Vec<OpenAiEmbedding<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct OpenAiEmbedding<'a> {
    object: &'static str,
    index: usize,
    embedding: Vector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Float(&'a [f32]),
    /// Little-endian `f32` bytes, as OpenAI's `encoding_format: "base64"`.
    Base64(String),
}

pub fn openai_response(info: &ModelInfo, e: Embedded, format: EncodingFormat) -> Box<RawValue> {
    let data = e
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => Vector::Float(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    raw(&OpenAiAnswer {
        object: "list",
        data,
        model: &info.name,
        usage: Usage {
            prompt_tokens: e.prompt_tokens,
            total_tokens: Some(e.prompt_tokens),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            architecture: "bert",
            dimensions: 3,
            max_seq_length: 8,
            pooling: crate::pooling::Pooling::Mean,
            normalize: false,
            dtype: "f32",
            device: "cpu".into(),
            kernels: "candle",
            capabilities: vec![],
            labels: vec![],
            prompts: vec![],
            default_prompt_name: None,
        }
    }

    /// Floats go out as the shortest text that reads back as the same `f32`, in both shapes.
    #[test]
    fn answers_write_each_float_once_and_exactly() {
        let vectors = vec![
            vec![0.1f32, -0.033468, 1e-7],
            vec![f32::MIN_POSITIVE, 3.0, -0.0],
        ];
        let embedded = || Embedded {
            vectors: vectors.clone(),
            truncated: vec![false, true],
            prompt_tokens: 7,
            normalized: false,
        };
        let infer = infer_response(&info(), embedded());
        assert!(
            infer
                .get()
                .contains(r#""embeddings":[[0.1,-0.033468,1e-7],[1.1754944e-38,3.0,-0.0]]"#),
            "{infer}"
        );
        let back: Value = serde_json::from_str(infer.get()).expect("json");
        assert_eq!(back["dimensions"], 3);
        assert_eq!(back["truncated"], json!([false, true]));
        assert_eq!(back["usage"], json!({"prompt_tokens": 7}));
        for (row, v) in vectors.iter().enumerate() {
            for (i, x) in v.iter().enumerate() {
                let read = back["embeddings"][row][i].as_f64().expect("number") as f32;
                assert_eq!(read.to_bits(), x.to_bits(), "[{row}][{i}]");
            }
        }
        let openai = openai_response(&info(), embedded(), EncodingFormat::Float);
        let back: Value = serde_json::from_str(openai.get()).expect("json");
        assert_eq!(back["object"], "list");
        assert_eq!(back["model"], "m");
        assert_eq!(
            back["usage"],
            json!({"prompt_tokens": 7, "total_tokens": 7})
        );
        assert_eq!(back["data"][1]["object"], "embedding");
        assert_eq!(back["data"][1]["index"], 1);
        assert_eq!(
            back["data"][0]["embedding"],
            json!([0.1f64, -0.033468, 1e-7])
        );
        let b64 = openai_response(&info(), embedded(), EncodingFormat::Base64);
        let back: Value = serde_json::from_str(b64.get()).expect("json");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(back["data"][0]["embedding"].as_str().expect("base64"))
            .expect("decodes");
        assert_eq!(
            bytes,
            [0.1f32, -0.033468, 1e-7].map(f32::to_le_bytes).concat()
        );
    }

    #[test]
    fn input_is_a_string_or_list_of_strings() {
        assert_eq!(parse_infer(json!({"input": "a"})).unwrap().texts, vec!["a"]);
        assert_eq!(
            parse_infer(json!({"input": ["a", "b"]})).unwrap().texts,
            vec!["a", "b"]
        );
        assert!(parse_infer(json!({"input": [1, 2]})).is_err());
        assert!(
            parse_infer(json!({"inputs": "a"})).is_err(),
            "typos are refused"
        );
        assert!(parse_openai(json!({"input": [[1, 2]]})).is_err());
        assert_eq!(
            parse_openai(json!({"input": "a", "user": "u"}))
                .unwrap()
                .encoding_format,
            EncodingFormat::Float
        );
    }

    #[test]
    fn every_capability_has_object_schemas() {
        for d in descriptors() {
            assert!(
                d.input_schema.is_object() && d.output_schema.is_object(),
                "{}",
                d.id
            );
        }
    }
}
