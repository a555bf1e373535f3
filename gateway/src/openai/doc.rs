//! The OpenAPI entries of the `/v1` routes, which [`crate::invoke::serve_entry`] and
//! [`super::serve_other`] answer in front of the router (so these functions are never routed),
//! and the request shapes they name.

use serde::Deserialize;
use serde_json::Value;

use super::{ErrorBody, ModelList};

/// `POST /v1/embeddings`' body (OpenAI's). Fields other than `model` reach the plugin's
/// `embeddings` capability unchanged.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EmbeddingsRequest {
    /// A plugin id or an alias (`GET /v1/models`).
    model: String,
    /// A text or a list of texts.
    #[schema(value_type = Object)]
    input: Value,
    /// `float` (default) or `base64` (little-endian f32).
    #[schema(nullable = false)]
    encoding_format: Option<String>,
    /// Must equal the model's dimensions, when given.
    dimensions: Option<u32>,
    user: Option<String>,
}

/// `POST /v1/rerank`'s body: TEI's (`texts`) or Cohere's (`documents`, answered in Cohere's
/// shape). Without `model`, the one plugin that offers `rerank`.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RerankRequest {
    /// A plugin id or an alias; optional while one plugin offers `rerank`.
    model: Option<String>,
    query: String,
    /// TEI: the texts to rank.
    texts: Option<Vec<String>>,
    /// Cohere: the documents to rank (strings or `{text}`).
    #[schema(value_type = Option<Vec<Object>>)]
    documents: Option<Vec<Value>>,
    top_n: Option<u32>,
    return_text: Option<bool>,
    raw_scores: Option<bool>,
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body(content = EmbeddingsRequest, example = json!({"model": "candle", "input": ["hello", "world"]})),
    responses(
        (status = 200, description = "OpenAI's embeddings list, as the plugin's `embeddings` capability answers it", body = Object,
            example = json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}], "model": "candle", "usage": {"prompt_tokens": 3, "total_tokens": 3}})),
        (status = 400, description = "Malformed JSON or a field the capability refuses (param names it)", body = ErrorBody),
        (status = 401, description = "No key, or a key that is not valid", body = ErrorBody),
        (status = 403, description = "The key may not call this model", body = ErrorBody),
        (status = 404, description = "No plugin or alias of that name (code model_not_found), or it has no embeddings capability", body = ErrorBody),
        (status = 413, description = "The body is larger than the gateway accepts", body = ErrorBody),
        (status = 422, description = "The plugin refused the input", body = ErrorBody),
        (status = 429, description = "Rate limit used up, or the plugin is overloaded (Retry-After)", body = ErrorBody),
        (status = 500, description = "The plugin failed", body = ErrorBody),
        (status = 502, description = "The plugin's answer could not be relayed", body = ErrorBody),
        (status = 503, description = "No ready replica (Retry-After)", body = ErrorBody),
        (status = 504, description = "The plugin did not answer in time", body = ErrorBody)))]
#[allow(dead_code)]
pub fn embeddings() {}

#[utoipa::path(post, path = "/v1/rerank", tag = "openai",
    request_body(content = RerankRequest, example = json!({"query": "what is bkg?", "texts": ["a gateway", "a cat"]})),
    responses(
        (status = 200, description = "TEI's `[{index, score, text?}]` sorted by score, or for a Cohere request `{results: [{index, relevance_score}]}`", body = Object),
        (status = 400, description = "Malformed JSON or a field the capability refuses (param names it)", body = ErrorBody),
        (status = 401, description = "No key, or a key that is not valid", body = ErrorBody),
        (status = 403, description = "The key may not call this model", body = ErrorBody),
        (status = 404, description = "No plugin or alias of that name (code model_not_found), or it has no rerank capability", body = ErrorBody),
        (status = 413, description = "The body is larger than the gateway accepts", body = ErrorBody),
        (status = 422, description = "The plugin refused the input", body = ErrorBody),
        (status = 429, description = "Rate limit used up, or the plugin is overloaded (Retry-After)", body = ErrorBody),
        (status = 500, description = "The plugin failed", body = ErrorBody),
        (status = 502, description = "The plugin's answer could not be relayed", body = ErrorBody),
        (status = 503, description = "No ready replica (Retry-After)", body = ErrorBody),
        (status = 504, description = "The plugin did not answer in time", body = ErrorBody)))]
#[allow(dead_code)]
pub fn rerank() {}

#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, description = "The plugins and aliases the key may call (an alias only when the key may call every plugin it routes to)", body = ModelList),
        (status = 401, description = "No key, or a key that is not valid", body = ErrorBody)))]
#[allow(dead_code)]
pub fn models() {}

/// One message of a conversation.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (others: 400, param messages).
    role: String,
    /// The text, or OpenAI's list of parts of which `text` parts are used.
    #[schema(value_type = String)]
    content: Value,
}

/// `stream_options`, with `stream: true` only.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamOptions {
    /// One more chunk before `[DONE]` with `usage` and no choices.
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`' body (OpenAI's). `n` > 1, `logprobs`, `tools` and the other
/// parameters the plugins do not implement are refused with 400 naming `param`.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatCompletionRequest {
    /// A plugin id or an alias whose plugin offers `chat` (`GET /v1/models`).
    model: String,
    messages: Vec<ChatMessage>,
    /// At most this many new tokens.
    #[schema(minimum = 1)]
    max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    max_completion_tokens: Option<u32>,
    /// 0: greedy.
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    /// A string or up to 4 strings.
    #[schema(value_type = Option<Object>)]
    stop: Option<Value>,
    /// Answer as server-sent events (`chat.completion.chunk`), then `data: [DONE]`.
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    user: Option<String>,
}

/// `POST /v1/completions`' body (OpenAI's legacy completions): one prompt string.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CompletionRequest {
    /// A plugin id or an alias whose plugin offers `completions`.
    model: String,
    prompt: String,
    #[schema(minimum = 1)]
    max_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    #[schema(value_type = Option<Object>)]
    stop: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    user: Option<String>,
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = ChatCompletionRequest, example = json!({"model": "llm", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16})),
    responses(
        (status = 200, description = "OpenAI's `chat.completion`; with `stream: true`, `text/event-stream` of `chat.completion.chunk` events (the first delta carries the role, the last the finish_reason; with include_usage one more with `usage` and no choices), then `data: [DONE]`. An error after the stream started is a `data: {\"error\": …}` event that ends it",
            content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Malformed JSON, an unsupported parameter, or input the model refuses (unknown role, max_tokens beyond the context, a prompt too long): param names it", body = ErrorBody),
        (status = 401, description = "No key, or a key that is not valid", body = ErrorBody),
        (status = 403, description = "The key may not call this model", body = ErrorBody),
        (status = 404, description = "No plugin or alias of that name (code model_not_found), or it has no chat capability", body = ErrorBody),
        (status = 413, description = "The body is larger than the gateway accepts", body = ErrorBody),
        (status = 429, description = "Rate limit or the key's tokens per minute used up, or the plugin is overloaded (Retry-After)", body = ErrorBody),
        (status = 500, description = "The plugin failed", body = ErrorBody),
        (status = 502, description = "The plugin's answer could not be relayed", body = ErrorBody),
        (status = 503, description = "No ready replica (Retry-After)", body = ErrorBody),
        (status = 504, description = "The plugin did not answer in time", body = ErrorBody)))]
#[allow(dead_code)]
pub fn chat_completions() {}

#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body(content = CompletionRequest, example = json!({"model": "llm", "prompt": "The capital of France is", "max_tokens": 8})),
    responses(
        (status = 200, description = "OpenAI's `text_completion`; with `stream: true`, `text/event-stream` of `text_completion` chunks, then `data: [DONE]`",
            content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Malformed JSON, an unsupported parameter, or input the model refuses: param names it", body = ErrorBody),
        (status = 401, description = "No key, or a key that is not valid", body = ErrorBody),
        (status = 403, description = "The key may not call this model", body = ErrorBody),
        (status = 404, description = "No plugin or alias of that name (code model_not_found), or it has no completions capability", body = ErrorBody),
        (status = 413, description = "The body is larger than the gateway accepts", body = ErrorBody),
        (status = 429, description = "Rate limit or the key's tokens per minute used up, or the plugin is overloaded (Retry-After)", body = ErrorBody),
        (status = 500, description = "The plugin failed", body = ErrorBody),
        (status = 502, description = "The plugin's answer could not be relayed", body = ErrorBody),
        (status = 503, description = "No ready replica (Retry-After)", body = ErrorBody),
        (status = 504, description = "The plugin did not answer in time", body = ErrorBody)))]
#[allow(dead_code)]
pub fn completions() {}
