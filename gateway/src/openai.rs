//! The routes OpenAI-, TEI- and Cohere-compatible clients call, as translations onto invoke.
//!
//! ```text
//!  POST /v1/embeddings {model, input, …}      ─▶ (model → plugin, "embeddings", body as is)
//!  POST /v1/rerank {model?, query, texts, …}  ─▶ (model → plugin, "rerank", body less model)
//!  POST /v1/rerank {model, query, documents}  ─▶ (… "rerank", {query, texts, top_n}) ─▶ Cohere's
//!                                                {results: [{index, relevance_score}]}
//!  POST /v1/chat/completions {model, messages, stream?} ─▶ (… "chat"), whole or as SSE (chat.rs)
//!  POST /v1/completions {model, prompt, stream?}        ─▶ (… "completions"), whole or as SSE
//!  GET  /v1/models                            ─▶ the plugins and aliases the key may call
//! ```
//!
//! Each call then takes the invoke path (`crate::invoke`): the same key, scopes, size limit,
//! rate limit, schema validation, metrics and trace. `model` is a plugin id or an alias
//! (`crate::aliases`). What differs is the error shape: OpenAI's
//! `{"error": {message, type, param, code}}`, which the OpenAI SDKs turn into their exception
//! classes by status (401 `AuthenticationError`, 404 `NotFoundError`, 429 `RateLimitError`…).

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::wire::Problem;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::problem::ApiError;
use crate::{AppState, REQUEST_ID, front};

/// A route under `/v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Embeddings,
    Rerank,
    ChatCompletions,
    Completions,
    Models,
    /// A `/v1` path the gateway does not serve (404); answered in OpenAI's shape too.
    Unknown,
    /// A served `/v1` path with another method than the one it allows (405 with `Allow`).
    WrongMethod(&'static str),
}

impl Endpoint {
    /// The `/v1` route of a request, if it is one.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        let rest = path
            .strip_prefix("/v1/")
            .or((path == "/v1").then_some(""))?;
        let (endpoint, wants) = match rest {
            "embeddings" => (Endpoint::Embeddings, Method::POST),
            "rerank" => (Endpoint::Rerank, Method::POST),
            "chat/completions" => (Endpoint::ChatCompletions, Method::POST),
            "completions" => (Endpoint::Completions, Method::POST),
            "models" => (Endpoint::Models, Method::GET),
            _ => return Some(Endpoint::Unknown),
        };
        Some(if *method == wants {
            endpoint
        } else {
            Endpoint::WrongMethod(if wants == Method::GET { "GET" } else { "POST" })
        })
    }

    /// The route as spans and logs name it.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Rerank => "/v1/rerank",
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Models => "/v1/models",
            Endpoint::Unknown | Endpoint::WrongMethod(_) => "/v1/*",
        }
    }
}

/// How the plugin's answer is handed back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// Relayed unchanged (OpenAI embeddings, TEI rerank: the capability answers in that shape).
    #[default]
    AsIs,
    /// TEI's `[{index, score}]` turned into Cohere's `{results: [{index, relevance_score}]}`.
    Cohere,
    /// `{text, finish_reason, usage}` (or its stream) as OpenAI's chat or text completion.
    Generation(chat::Generation),
}

/// A `/v1` request as an invoke: the model it names (a plugin id or an alias), the capability
/// and the payload for it.
#[derive(Debug, PartialEq)]
pub struct Translated {
    pub model: Option<String>,
    pub capability: &'static str,
    /// JSON text of the payload.
    pub payload: String,
    pub shape: Shape,
    /// Invoke the capability's stream (`stream: true`).
    pub stream: bool,
}

/// Turns the body of `POST /v1/embeddings` or `POST /v1/rerank` into an invoke. Only what
/// routing needs is checked here; the capability's input schema and the plugin check the rest.
pub fn translate(endpoint: Endpoint, body: &[u8]) -> Result<Translated, ApiError> {
    let mut object: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        Err(e) => {
            return Err(ApiError::MalformedJson(format!(
                "the request body is not valid JSON: {e}"
            )));
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => return chat::translate(chat::Kind::Chat, object),
        Endpoint::Completions => return chat::translate(chat::Kind::Completion, object),
        _ => {}
    }
    let model = match object.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        Some(_) => return Err(invalid("model", "must be a non-empty string")),
    };
    match endpoint {
        Endpoint::Embeddings => {
            if model.is_none() {
                return Err(invalid(
                    "model",
                    "is required: a plugin id or an alias (GET /v1/models lists them)",
                ));
            }
            if !object.contains_key("input") {
                return Err(invalid("input", "is required"));
            }
            Ok(Translated {
                model,
                capability: "embeddings",
                payload: String::from_utf8_lossy(body).into_owned(),
                shape: Shape::AsIs,
                stream: false,
            })
        }
        Endpoint::Rerank => {
            if !object.get("query").is_some_and(Value::is_string) {
                return Err(invalid("query", "is required and must be a string"));
            }
            object.remove("model");
            let shape = match (object.contains_key("texts"), object.remove("documents")) {
                (false, Some(documents)) => {
                    let texts = cohere_texts(documents)?;
                    let mut payload = Map::new();
                    payload.insert("query".into(), object.remove("query").unwrap_or_default());
                    payload.insert("texts".into(), Value::Array(texts));
                    if let Some(n) = object.remove("top_n") {
                        payload.insert("top_n".into(), n);
                    }
                    object = payload;
                    Shape::Cohere
                }
                (true, None) => Shape::AsIs,
                (true, Some(_)) => {
                    return Err(invalid(
                        "documents",
                        "send texts (TEI) or documents (Cohere), not both",
                    ));
                }
                (false, None) => {
                    return Err(invalid(
                        "texts",
                        "is required: the texts to rank against the query",
                    ));
                }
            };
            Ok(Translated {
                model,
                capability: "rerank",
                payload: Value::Object(object).to_string(),
                shape,
                stream: false,
            })
        }
        Endpoint::Models
        | Endpoint::Unknown
        | Endpoint::WrongMethod(_)
        | Endpoint::ChatCompletions
        | Endpoint::Completions => Err(ApiError::MethodNotAllowed),
    }
}

/// Cohere's `documents`: strings, or objects with a `text`.
fn cohere_texts(documents: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(items) = documents else {
        return Err(invalid("documents", "must be an array"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(_) => Ok(d),
            Value::Object(mut o) => match o.remove("text") {
                Some(t @ Value::String(_)) => Ok(t),
                _ => Err(invalid(
                    &format!("documents[{i}]"),
                    "must be a string or {\"text\": string}",
                )),
            },
            _ => Err(invalid(
                &format!("documents[{i}]"),
                "must be a string or {\"text\": string}",
            )),
        })
        .collect()
}

/// A refused field, in the problem shape the invoke path uses (its pointer becomes `param`).
fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::InvalidPayload {
        capability: field.to_owned(),
        errors: vec![bkg_core::wire::FieldError {
            field: format!("/{field}"),
            message: format!("{field} {message}"),
        }],
    }
}

/// TEI's rerank answer as Cohere's: `[{index, score, text?}]` → `{results: [{index,
/// relevance_score}]}`, in the plugin's order (TEI sorts by score).
pub fn cohere_results(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Ranked {
        index: u64,
        score: f64,
    }
    let ranked: Vec<Ranked> = serde_json::from_slice(body).ok()?;
    let results: Vec<Value> = ranked
        .iter()
        .map(|r| json!({"index": r.index, "relevance_score": r.score}))
        .collect();
    serde_json::to_vec(&json!({"results": results})).ok()
}

/// OpenAI's error body.
#[derive(Serialize, Deserialize, Debug, PartialEq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: OpenAiError,
}

/// One error as OpenAI's API describes it.
#[derive(Serialize, Deserialize, Debug, PartialEq, utoipa::ToSchema)]
pub struct OpenAiError {
    /// What went wrong, for people.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A stable code: `invalid_api_key`, `model_not_found`, `rate_limit_exceeded`, or the
    /// slug of the problem the gateway or plugin reported.
    pub code: Option<String>,
}

/// The error type OpenAI uses for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// A JSON pointer (`/input/0`) as OpenAI names a param (`input`): its first segment.
fn param_of(pointer: &str) -> Option<String> {
    pointer
        .trim_start_matches('/')
        .split(['/', '['])
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The last segment of a problem's `type` URI: `…/problems/rate-limited` → `rate_limited`.
fn code_of(problem_type: &str) -> Option<String> {
    problem_type
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "about:blank")
        .map(|s| s.replace('-', "_"))
}

/// A gateway error in OpenAI's shape, with its status.
pub fn from_api_error(error: &ApiError) -> (StatusCode, OpenAiError) {
    let status = error.status();
    let (param, code) = match error {
        ApiError::Unauthorized(_) => (None, Some("invalid_api_key".to_owned())),
        ApiError::UnknownPlugin(_) => {
            (Some("model".to_owned()), Some("model_not_found".to_owned()))
        }
        ApiError::RateLimited { .. } => (None, Some("rate_limit_exceeded".to_owned())),
        ApiError::InvalidPayload { .. } => (
            error.first_field().and_then(param_of),
            Some("invalid_payload".to_owned()),
        ),
        _ => (None, problem_code(error)),
    };
    let message = match error {
        ApiError::UnknownPlugin(model) => format!(
            "the model {model:?} does not exist: name a plugin id or an alias (GET /v1/models lists them)"
        ),
        ApiError::InvalidPayload { errors, .. } => errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    (
        status,
        OpenAiError {
            message,
            type_: error_type(status).to_owned(),
            param,
            code,
        },
    )
}

/// A stable code for the errors without a more specific one.
fn problem_code(error: &ApiError) -> Option<String> {
    let code = match error {
        ApiError::MalformedJson(_) => "malformed_json",
        ApiError::BadRequest(_) | ApiError::Rejected { .. } => "bad_request",
        ApiError::Body { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
            "request_too_large"
        }
        ApiError::Body { .. } => "bad_body",
        ApiError::UnknownCapability { .. } => "capability_not_found",
        ApiError::Conflict(_) => "conflict",
        ApiError::Unavailable { .. } => "plugin_unavailable",
        ApiError::Timeout { .. } => "timeout",
        ApiError::BadGateway(_) => "bad_gateway",
        ApiError::Overloaded(_) => "overloaded",
        ApiError::Forbidden(_) => "insufficient_scope",
        ApiError::CostOverBurst(_) => "cost_over_burst",
        ApiError::NotFound(_) | ApiError::UnknownKey(_) => "not_found",
        ApiError::MethodNotAllowed => "method_not_allowed",
        _ => return None,
    };
    Some(code.to_owned())
}

/// A plugin's error answer (problem+json, relayed by invoke) in OpenAI's shape; a body that is
/// no problem becomes the message.
pub fn from_problem(status: StatusCode, body: &[u8]) -> OpenAiError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => from_problem_value(status, &problem),
        Err(_) => OpenAiError {
            message: String::from_utf8_lossy(body).chars().take(1000).collect(),
            type_: error_type(status).to_owned(),
            param: None,
            code: None,
        },
    }
}

/// A problem in OpenAI's shape.
pub fn from_problem_value(status: StatusCode, problem: &Problem) -> OpenAiError {
    OpenAiError {
        message: if problem.detail.is_empty() {
            problem.title.clone()
        } else {
            problem.detail.clone()
        },
        type_: error_type(status).to_owned(),
        param: problem.errors.first().and_then(|e| param_of(&e.field)),
        code: code_of(&problem.type_),
    }
}

/// An OpenAI error answer: JSON, with `Retry-After` where a retry can pass and
/// `WWW-Authenticate` on 401.
pub fn error_response(
    status: StatusCode,
    error: OpenAiError,
    retry_after: Option<u32>,
) -> Response {
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bkg\""),
        );
    }
    response
}

/// Answers a gateway error in OpenAI's shape.
pub fn refuse(error: &ApiError) -> Response {
    let (status, body) = from_api_error(error);
    error_response(status, body, error.retry_after())
}

/// The invoke path's answer to a `/v1` call in the client's shape: errors (the gateway's, and
/// the problems plugins answer) in OpenAI's, a Cohere rerank as Cohere's.
pub async fn answer(shape: Shape, result: Result<Response, ApiError>, limit: usize) -> Response {
    if let Shape::Generation(g) = shape {
        return chat::answer(g, result, limit).await;
    }
    let response = match result {
        Ok(response) => response,
        Err(error) => return refuse(&error),
    };
    let status = response.status();
    if status.is_success() && shape == Shape::AsIs {
        return response;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = axum::body::to_bytes(response.into_body(), limit)
        .await
        .unwrap_or_default();
    if status.is_success() {
        return match cohere_results(&body) {
            Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
            None => refuse(&ApiError::BadGateway(
                "the plugin's rerank answer is not a list of {index, score}".into(),
            )),
        };
    }
    let mut out = error_response(status, from_problem(status, &body), None);
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}

/// `GET /v1/models`' answer.
#[derive(Serialize, Deserialize, Debug, PartialEq, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

/// One plugin or alias a key may call, as OpenAI lists a model.
#[derive(Serialize, Deserialize, Debug, PartialEq, utoipa::ToSchema)]
pub struct Model {
    /// The plugin id or alias, for `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// When the Plugin was created (Unix seconds; 0 when unknown, as locally).
    pub created: i64,
    /// Always `bkg`.
    pub owned_by: String,
}

/// The plugins and aliases `who` may call: every plugin whose id its scopes name, and every
/// alias whose targets it may all call (so a canary never turns a call into a 403).
pub fn model_list(
    plugins: &[(String, i64)],
    aliases: &crate::aliases::AliasTable,
    may_call: impl Fn(&str) -> bool,
) -> ModelList {
    let mut data: Vec<Model> = plugins
        .iter()
        .filter(|(id, _)| may_call(id))
        .map(|(id, created)| model(id, *created))
        .collect();
    for (alias, targets) in aliases.iter() {
        let shadowed = plugins.iter().any(|(id, _)| id == alias);
        if !shadowed && !targets.is_empty() && targets.iter().all(|t| may_call(&t.plugin)) {
            let created = targets
                .iter()
                .filter_map(|t| plugins.iter().find(|(id, _)| *id == t.plugin))
                .map(|(_, c)| *c)
                .min()
                .unwrap_or(0);
            data.push(model(alias, created));
        }
    }
    data.sort_by(|a, b| a.id.cmp(&b.id));
    ModelList {
        object: "list".into(),
        data,
    }
}

fn model(id: &str, created: i64) -> Model {
    Model {
        id: id.to_owned(),
        object: "model".into(),
        created,
        owned_by: "bkg".into(),
    }
}

/// Serves `GET /v1/models` and the `/v1` paths the gateway does not serve.
pub async fn serve_other(state: AppState, endpoint: Endpoint, headers: &HeaderMap) -> Response {
    let request_id = front::request_id(headers);
    let mut response = match endpoint {
        Endpoint::Unknown => error_response(
            StatusCode::NOT_FOUND,
            OpenAiError {
                message: "no such route: the gateway serves POST /v1/embeddings, POST /v1/rerank, POST /v1/chat/completions, POST /v1/completions and GET /v1/models".into(),
                type_: error_type(StatusCode::NOT_FOUND).to_owned(),
                param: None,
                code: Some("not_found".into()),
            },
            None,
        ),
        Endpoint::WrongMethod(allow) => {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                OpenAiError {
                    message: format!("this route answers {allow} only"),
                    type_: error_type(StatusCode::METHOD_NOT_ALLOWED).to_owned(),
                    param: None,
                    code: Some("method_not_allowed".into()),
                },
                None,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            response
        }
        _ => match front::authenticate(&state, headers) {
            Err(e) => refuse(&e),
            Ok(who) => {
                state.metrics.observe_key(&who.key_id);
                let plugins: Vec<(String, i64)> = state
                    .backend
                    .list()
                    .await
                    .iter()
                    .map(|v| {
                        let created = v
                            .plugin
                            .metadata
                            .creation_timestamp
                            .as_ref()
                            .map_or(0, |t| t.0.as_second());
                        (v.plugin.id().to_owned(), created)
                    })
                    .collect();
                let aliases = state.backend.aliases().await;
                let list = model_list(&plugins, &aliases, |id| who.can_call(id, None));
                axum::Json(list).into_response()
            }
        },
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// Bytes of a body, for tests.
#[cfg(test)]
async fn body_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("json"))
}

pub mod chat;
pub mod doc;
#[cfg(test)]
mod tests;
