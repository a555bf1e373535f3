//! The `chat` and `completions` capabilities: their schemas, parsing and answers.
//!
//! Requests take OpenAI's chat-completions and completions bodies (the gateway's `/v1/*` routes
//! pass them through), plus `top_k`, `repetition_penalty` and `ignore_eos` from transformers and
//! vLLM. Answers are the plain facts — text, finish reason, usage — which the gateway shapes
//! into OpenAI's objects (ids, timestamps and the `model` name are its business):
//!
//! ```text
//!  whole:   {"model", "text", "finish_reason", "usage": {prompt_tokens, completion_tokens, total_tokens}}
//!  stream:  {"text": "…"} … then {"model", "finish_reason", "usage"}
//! ```

use bkg_plugin_api::CapabilityDescriptor;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::Message;
use super::sampling::SamplingParams;
use super::scheduler::{FinishReason, Usage};
use crate::error::{Error, Result};

pub const CHAT: &str = "chat";
pub const COMPLETIONS: &str = "completions";

/// What a generation request asks for, once parsed.
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

pub struct GenerateCall {
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub ignore_eos: bool,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's `content`: a string, or OpenAI's list of parts of which text parts are used.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    messages: Option<Vec<RawMessage>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    ignore_eos: Option<bool>,
    // Accepted and handled elsewhere (the gateway picks the streaming route) or without effect.
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    user: Option<String>,
}

fn to_usize(field: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::InvalidInput(format!("{field}: too large")))
}

/// Parses a `chat` (`messages`) or `completions` (`prompt`) request.
pub fn parse(capability: &str, payload: Value) -> Result<GenerateCall> {
    let r: Request = serde_json::from_value(payload)
        .map_err(|e| Error::InvalidInput(format!("the request: {e}")))?;
    let _ = (&r.model, &r.stream, &r.stream_options, &r.user);
    if r.n.is_some_and(|n| n != 1) {
        return Err(Error::InvalidInput("n: only 1 choice per request".into()));
    }
    let prompt = match capability {
        CHAT => {
            if r.prompt.is_some() {
                return Err(Error::InvalidInput(
                    "prompt: not a chat field (use messages, or the completions capability)".into(),
                ));
            }
            let raw = r
                .messages
                .ok_or_else(|| Error::InvalidInput("messages: required".into()))?;
            let mut messages = Vec::with_capacity(raw.len());
            for (i, m) in raw.into_iter().enumerate() {
                let content = match m.content {
                    Some(Content::Text(t)) => t,
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for (j, p) in parts.into_iter().enumerate() {
                            match (p.kind.as_str(), p.text) {
                                ("text", Some(t)) => text.push_str(&t),
                                (kind, _) => {
                                    return Err(Error::InvalidInput(format!(
                                        "messages[{i}].content[{j}].type: {kind:?} is not supported (text only)"
                                    )));
                                }
                            }
                        }
                        text
                    }
                    None => String::new(),
                };
                messages.push(Message {
                    role: m.role,
                    content,
                });
            }
            Prompt::Chat(messages)
        }
        _ => {
            if r.messages.is_some() {
                return Err(Error::InvalidInput(
                    "messages: not a completions field (use prompt, or the chat capability)".into(),
                ));
            }
            Prompt::Text(
                r.prompt
                    .ok_or_else(|| Error::InvalidInput("prompt: required".into()))?,
            )
        }
    };
    let max_tokens = r.max_completion_tokens.or(r.max_tokens);
    let defaults = SamplingParams::default();
    let params = SamplingParams {
        temperature: r.temperature.unwrap_or(defaults.temperature),
        top_p: r.top_p.unwrap_or(defaults.top_p),
        top_k: r
            .top_k
            .map(|k| to_usize("top_k", k))
            .transpose()?
            .unwrap_or(0),
        repetition_penalty: r.repetition_penalty.unwrap_or(1.0),
        seed: r.seed,
        max_tokens: max_tokens.map(|m| to_usize("max_tokens", m)).transpose()?,
        stop: match r.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
    };
    params.validate()?;
    Ok(GenerateCall {
        prompt,
        params,
        ignore_eos: r.ignore_eos.unwrap_or(false),
    })
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

pub fn answer(model: &str, text: &str, finish: FinishReason, usage: &Usage) -> Value {
    json!({"model": model, "text": text, "finish_reason": finish, "usage": usage_json(usage)})
}

pub fn last_chunk(model: &str, finish: FinishReason, usage: &Usage) -> Value {
    json!({"model": model, "finish_reason": finish, "usage": usage_json(usage)})
}

fn sampling_schema() -> serde_json::Map<String, Value> {
    let v = json!({
        "model": {"type": "string", "description": "Accepted and ignored: the loaded model answers (the gateway routes by it)."},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "At most this many new tokens (default: the plugin's generation.max_tokens)."},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "description": "OpenAI's newer name for max_tokens; wins over it."},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1, "description": "0: greedy, the most likely token each step."},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "top_k": {"type": "integer", "minimum": 0, "default": 0, "description": "0: no top-k cut."},
        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "default": 1},
        "seed": {"type": "integer", "minimum": 0, "description": "Same seed and parameters, same answer."},
        "stop": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4}]},
        "n": {"type": "integer", "const": 1},
        "ignore_eos": {"type": "boolean", "default": false, "description": "Generate past end-of-sequence tokens (benchmarks)."},
        "stream": {"type": "boolean", "description": "Use the streaming route instead; accepted here for OpenAI clients."},
        "stream_options": {"type": "object"},
        "user": {"type": "string"}
    });
    v.as_object().cloned().unwrap_or_default()
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "required": ["model", "text", "finish_reason", "usage"],
        "properties": {
            "model": {"type": "string"},
            "text": {"type": "string"},
            "finish_reason": {"enum": ["stop", "length"]},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"}
                }
            }
        }
    })
}

pub fn descriptors() -> Vec<CapabilityDescriptor> {
    let mut chat = sampling_schema();
    chat.insert(
        "messages".into(),
        json!({
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"enum": super::chat::ROLES},
                    "content": {"oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}, "text": {"type": "string"}}}},
                        {"type": "null"}
                    ]},
                    "name": {"type": "string"}
                }
            },
            "examples": [[{"role": "user", "content": "What is the capital of France?"}]]
        }),
    );
    let mut completions = sampling_schema();
    completions.insert(
        "prompt".into(),
        json!({"type": "string", "examples": ["The capital of France is"]}),
    );
    vec![
        CapabilityDescriptor {
            id: CHAT.into(),
            name: "Chat".into(),
            description: "Answers a conversation with a loaded causal language model (Llama, Qwen2), its \
                chat template rendered as transformers renders it. Streams with the runtime's /stream route; \
                the gateway serves it as OpenAI's /v1/chat/completions."
                .into(),
            input_schema: json!({"type": "object", "required": ["messages"], "properties": chat, "additionalProperties": false}),
            output_schema: output_schema(),
            management: false,
            cost: None,
            streaming: true,
        },
        CapabilityDescriptor {
            id: COMPLETIONS.into(),
            name: "Complete text".into(),
            description: "Continues a prompt with a loaded causal language model; OpenAI's /v1/completions \
                through the gateway."
                .into(),
            input_schema: json!({"type": "object", "required": ["prompt"], "properties": completions, "additionalProperties": false}),
            output_schema: output_schema(),
            management: false,
            cost: None,
            streaming: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_bodies_parse_and_bad_ones_name_the_field() {
        let call = parse(
            CHAT,
            json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                   "max_tokens": 5, "stop": "\n", "stream": true, "stream_options": {"include_usage": true}}),
        )
        .unwrap();
        assert!(matches!(&call.prompt, Prompt::Chat(m) if m[0].content == "hi"));
        assert_eq!(call.params.max_tokens, Some(5));
        assert_eq!(call.params.stop, ["\n"]);
        for (cap, body, field) in [
            (CHAT, json!({}), "messages"),
            (CHAT, json!({"messages": [], "n": 2}), "n"),
            (
                CHAT,
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                CHAT,
                json!({"messages": [], "temperature": 9}),
                "temperature",
            ),
            (CHAT, json!({"messages": [], "max_tokens": 0}), "max_tokens"),
            (COMPLETIONS, json!({"messages": []}), "messages"),
            (COMPLETIONS, json!({}), "prompt"),
        ] {
            let err = parse(cap, body.clone())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(field), "{body}: {err}");
        }
        let err = parse(CHAT, json!({"messages": [], "frequency_penalty_x": 1}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("frequency_penalty_x"), "{err}");
    }
}
