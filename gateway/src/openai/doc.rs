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
