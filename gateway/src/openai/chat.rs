//! `POST /v1/chat/completions` and `POST /v1/completions` on a plugin's `chat` and
//! `completions` capabilities.
//!
//! ```text
//!  {model, messages|prompt, stream?, stream_options?, …}
//!   ─▶ refuse what the plugins cannot do (n > 1, logprobs, tools…: 400 naming param)
//!   ─▶ invoke (whole) ─▶ {model, text, finish_reason, usage} ─▶ chat.completion / text_completion
//!   ─▶ invoke/stream  ─▶ NDJSON {"text"}… {"finish_reason","usage"} ─▶ SSE chunks, data: [DONE]
//! ```
//!
//! The SSE body converts line by line as the runtime's frames arrive; only the unfinished line
//! is held. A plugin's input errors (422) are OpenAI's 400 `invalid_request_error`, with `param`
//! taken from the plugin's `field: message` detail, so the SDKs raise `BadRequestError`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bkg_core::wire::Problem;
use bytes::Bytes;
use http_body::{Body, Frame};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{OpenAiError, Shape, Translated, error_response, error_type, invalid, refuse};
use crate::invoke::stream::{Event, Lines};
use crate::problem::ApiError;
use crate::tokens::Usage;

/// Which of the two routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// How a generation answer goes back: whole or as SSE, under the model name the client used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub kind: Kind,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with `usage` and no choices.
    pub include_usage: bool,
    pub model: String,
}

/// Parameters OpenAI defines that the plugins do not implement, with the value that means
/// "not used" (accepted and left out). Any other value is a 400 naming the parameter.
/// True for the value of a parameter that means it is not used.
type Unused = fn(&Value) -> bool;

const UNSUPPORTED: &[(&str, Unused)] = &[
    ("n", |v| v.as_u64() == Some(1)),
    ("logprobs", |v| v == &Value::Bool(false)),
    ("top_logprobs", |v| v.as_u64() == Some(0)),
    ("best_of", |v| v.as_u64() == Some(1)),
    ("echo", |v| v == &Value::Bool(false)),
    ("suffix", |v| v.as_str() == Some("")),
    ("presence_penalty", |v| v.as_f64() == Some(0.0)),
    ("frequency_penalty", |v| v.as_f64() == Some(0.0)),
    ("logit_bias", |v| v.as_object().is_some_and(Map::is_empty)),
    ("tools", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("tool_choice", |v| v.as_str() == Some("none")),
    ("functions", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("function_call", |v| v.as_str() == Some("none")),
    ("parallel_tool_calls", |_| true),
    ("response_format", |v| {
        v.get("type").and_then(Value::as_str) == Some("text")
    }),
    ("audio", |_| false),
    ("modalities", |v| v == &json!(["text"])),
    ("prediction", |_| false),
    ("reasoning_effort", |_| false),
    ("web_search_options", |_| false),
    ("store", |v| v == &Value::Bool(false)),
    ("metadata", |_| true),
    ("service_tier", |_| true),
];

/// The invoke a chat or completions request becomes.
pub fn translate(kind: Kind, mut object: Map<String, Value>) -> Result<Translated, ApiError> {
    let model = match object.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        None | Some(Value::Null) => {
            return Err(invalid(
                "model",
                "is required: a plugin id or an alias (GET /v1/models lists them)",
            ));
        }
        Some(_) => return Err(invalid("model", "must be a non-empty string")),
    };
    match kind {
        Kind::Chat if !object.get("messages").is_some_and(Value::is_array) => {
            return Err(invalid("messages", "is required and must be an array"));
        }
        Kind::Completion if !object.get("prompt").is_some_and(Value::is_string) => {
            return Err(invalid(
                "prompt",
                "is required and must be one string (lists of prompts and token ids are not supported)",
            ));
        }
        _ => {}
    }
    for (param, unused) in UNSUPPORTED {
        match object.get(*param) {
            None | Some(Value::Null) => {
                object.remove(*param);
            }
            Some(v) if unused(v) => {
                object.remove(*param);
            }
            Some(_) => {
                return Err(invalid(
                    param,
                    "is not supported by this gateway's generation plugins: leave it out",
                ));
            }
        }
    }
    let stream = match object.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("stream", "must be a boolean")),
    };
    let include_usage = match object.remove("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) if stream => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(invalid("stream_options", "include_usage must be a boolean"));
            }
        },
        Some(Value::Object(_)) => {
            return Err(invalid(
                "stream_options",
                "is only allowed when stream is true",
            ));
        }
        Some(_) => return Err(invalid("stream_options", "must be an object")),
    };
    Ok(Translated {
        model: Some(model.clone()),
        capability: match kind {
            Kind::Chat => "chat",
            Kind::Completion => "completions",
        },
        payload: Value::Object(object).to_string(),
        shape: Shape::Generation(Generation {
            kind,
            stream,
            include_usage,
            model,
        }),
        stream,
    })
}

/// A plugin's whole generation answer.
#[derive(Deserialize)]
struct Whole {
    text: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(kind: Kind) -> String {
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The whole answer in OpenAI's shape (`chat.completion` or `text_completion`).
pub fn whole_answer(g: &Generation, body: &[u8]) -> Option<Value> {
    let w: Whole = serde_json::from_slice(body).ok()?;
    let usage = usage_json(w.usage.unwrap_or_default());
    let choice = match g.kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": w.text},
            "finish_reason": w.finish_reason,
            "logprobs": null,
        }),
        Kind::Completion => json!({
            "index": 0,
            "text": w.text,
            "finish_reason": w.finish_reason,
            "logprobs": null,
        }),
    };
    Some(json!({
        "id": new_id(g.kind),
        "object": match g.kind { Kind::Chat => "chat.completion", Kind::Completion => "text_completion" },
        "created": now_secs(),
        "model": g.model,
        "choices": [choice],
        "usage": usage,
    }))
}

/// A plugin's problem in OpenAI's shape for these routes: its input errors (422) become 400
/// `invalid_request_error` naming the parameter, as OpenAI answers them.
pub fn error_of(kind: Kind, status: StatusCode, problem: &Problem) -> (StatusCode, OpenAiError) {
    let mut error = super::from_problem_value(status, problem);
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    error.type_ = error_type(status).to_owned();
    if status == StatusCode::BAD_REQUEST && error.param.is_none() {
        error.param = param_of_detail(kind, &problem.detail);
    }
    if problem.detail.contains("context") {
        error.code = Some("context_length_exceeded".into());
    }
    (status, error)
}

/// The parameter a plugin's `[invalid input: ]field: message` detail names: its first segment
/// (`messages[0].role` → `messages`); a detail about the prompt names the prompt's field.
fn param_of_detail(kind: Kind, detail: &str) -> Option<String> {
    let detail = detail.strip_prefix("invalid input: ").unwrap_or(detail);
    if let Some((field, _)) = detail.split_once(": ")
        && !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']'))
    {
        return field.split(['.', '[']).next().map(str::to_owned);
    }
    detail.contains("prompt").then(|| {
        match kind {
            Kind::Chat => "messages",
            Kind::Completion => "prompt",
        }
        .to_owned()
    })
}

/// The invoke path's answer to a chat or completions call, in OpenAI's shapes.
pub async fn answer(g: Generation, result: Result<Response, ApiError>, limit: usize) -> Response {
    let response = match result {
        Ok(response) => response,
        Err(error) => return refuse(&error),
    };
    let status = response.status();
    if status.is_success() && g.stream {
        let body = Sse::new(response.into_body(), g, limit);
        let mut out = Response::new(axum::body::Body::new(body));
        let headers = out.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return out;
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = axum::body::to_bytes(response.into_body(), limit)
        .await
        .unwrap_or_default();
    if status.is_success() {
        return match whole_answer(&g, &body) {
            Some(value) => axum::Json(value).into_response(),
            None => refuse(&ApiError::BadGateway(
                "the plugin's answer is not {text, finish_reason, usage}".into(),
            )),
        };
    }
    let mut out = match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => {
            let (status, error) = error_of(g.kind, status, &problem);
            error_response(status, error, None)
        }
        Err(_) => error_response(status, super::from_problem(status, &body), None),
    };
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}

/// The runtime's NDJSON as OpenAI's server-sent events, converted as each line completes.
pub struct Sse {
    inner: axum::body::Body,
    lines: Lines,
    g: Generation,
    id: String,
    created: u64,
    /// The first chunk (with the assistant's role) has gone out.
    opened: bool,
    /// Nothing more to send.
    done: bool,
}

impl Sse {
    pub fn new(inner: axum::body::Body, g: Generation, max_line: usize) -> Self {
        Self {
            inner,
            lines: Lines::new(max_line),
            id: new_id(g.kind),
            created: now_secs(),
            g,
            opened: false,
            done: false,
        }
    }

    /// One chunk of the stream with these choices (and `usage`, when asked for).
    fn chunk(&self, out: &mut Vec<u8>, choices: Value, usage: Option<Value>) {
        let object = match self.g.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut value = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.g.model,
            "choices": choices,
        });
        if self.g.include_usage {
            value["usage"] = usage.unwrap_or(Value::Null);
        }
        event(out, &value);
    }

    fn choice(&self, text: Option<&str>, finish_reason: Option<&str>) -> Value {
        match self.g.kind {
            Kind::Chat => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}])
            }
            Kind::Completion => json!([{
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason
            }]),
        }
    }

    fn open(&mut self, out: &mut Vec<u8>) {
        if self.opened {
            return;
        }
        self.opened = true;
        if self.g.kind == Kind::Chat {
            let choices = json!([{
                "index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null
            }]);
            self.chunk(out, choices, None);
        }
    }

    /// Converts one NDJSON line into events.
    fn line(&mut self, out: &mut Vec<u8>, line: &[u8]) {
        if self.done {
            return;
        }
        match Event::parse(line) {
            Event::Text(text) => {
                self.open(out);
                let choices = self.choice(Some(&text), None);
                self.chunk(out, choices, None);
            }
            Event::Last {
                finish_reason,
                usage,
            } => {
                self.open(out);
                let choices = self.choice(None, Some(finish_reason.as_deref().unwrap_or("stop")));
                self.chunk(out, choices, None);
                if self.g.include_usage {
                    let usage = usage_json(usage.unwrap_or_default());
                    self.chunk(out, json!([]), Some(usage));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            Event::Error(problem) => {
                let status =
                    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let (_, error) = error_of(self.g.kind, status, &problem);
                event(out, &json!({"error": error}));
                self.done = true;
            }
            Event::Other => {}
        }
    }
}

/// Appends one `data:` event.
fn event(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

impl Body for Sse {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else {
                        continue;
                    };
                    let mut lines = std::mem::replace(&mut this.lines, Lines::new(0));
                    let fed = lines.feed(data, |l| this.line(&mut out, l));
                    this.lines = lines;
                    if let Err(limit) = fed {
                        this.fail(
                            &mut out,
                            format!("a line of the plugin's stream is longer than {limit} bytes"),
                        );
                    }
                }
                Some(Err(e)) => {
                    this.fail(&mut out, format!("the plugin's stream broke off: {e}"));
                }
                None => {
                    if let Some(last) = this.lines.finish() {
                        this.line(&mut out, &last);
                    }
                    if !this.done {
                        this.fail(
                            &mut out,
                            "the plugin's stream ended without a finish_reason".into(),
                        );
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}

impl Sse {
    fn fail(&mut self, out: &mut Vec<u8>, message: String) {
        let error = OpenAiError {
            message,
            type_: error_type(StatusCode::BAD_GATEWAY).to_owned(),
            param: None,
            code: Some("bad_gateway".into()),
        };
        event(out, &json!({ "error": error }));
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn requests_become_invokes_and_unsupported_parameters_are_named() {
        let t = translate(
            Kind::Chat,
            object(
                json!({"model": "llm", "messages": [{"role": "user", "content": "hi"}],
                "stream": true, "stream_options": {"include_usage": true}, "n": 1,
                "presence_penalty": 0, "max_tokens": 4}),
            ),
        )
        .expect("ok");
        assert_eq!(t.capability, "chat");
        assert!(t.stream);
        let payload: Value = serde_json::from_str(&t.payload).expect("json");
        assert_eq!(
            payload,
            json!({"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        );
        let Shape::Generation(g) = t.shape else {
            panic!("a generation shape")
        };
        assert!(g.include_usage && g.stream);
        for (body, param) in [
            (json!({"model": "m", "messages": [], "n": 2}), "n"),
            (
                json!({"model": "m", "messages": [], "logprobs": true}),
                "logprobs",
            ),
            (
                json!({"model": "m", "messages": [], "tools": [{"type": "function"}]}),
                "tools",
            ),
            (
                json!({"model": "m", "messages": [], "stream_options": {}}),
                "stream_options",
            ),
            (json!({"messages": []}), "model"),
            (json!({"model": "m"}), "messages"),
        ] {
            let error = translate(Kind::Chat, object(body.clone())).expect_err("refused");
            let (status, e) = super::super::from_api_error(&error);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
        let error = translate(
            Kind::Completion,
            object(json!({"model": "m", "prompt": ["a", "b"]})),
        )
        .expect_err("refused");
        assert_eq!(error.first_field(), Some("/prompt"));
    }

    #[test]
    fn plugin_input_errors_are_400_naming_the_parameter() {
        let problem = |detail: &str| {
            Problem::new(
                422,
                bkg_core::wire::ProblemKind::InvalidInput,
                "Invalid input",
                detail,
            )
        };
        for (kind, detail, param) in [
            (
                Kind::Chat,
                "invalid input: messages[0].role: unknown role \"robot\"",
                Some("messages"),
            ),
            (
                Kind::Chat,
                "invalid input: max_tokens: 900 new tokens after a prompt of 5 exceed the model's context of 512 tokens",
                Some("max_tokens"),
            ),
            (
                Kind::Chat,
                "invalid input: the prompt has 600 tokens; the model's context is 512 tokens",
                Some("messages"),
            ),
            (
                Kind::Completion,
                "invalid input: the prompt has 600 tokens; the model's context is 512 tokens",
                Some("prompt"),
            ),
            (Kind::Chat, "invalid input: something else", None),
        ] {
            let (status, e) = error_of(kind, StatusCode::UNPROCESSABLE_ENTITY, &problem(detail));
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(e.type_, "invalid_request_error");
            assert_eq!(e.param.as_deref(), param, "{detail}");
        }
    }

    fn generation(kind: Kind, include_usage: bool) -> Generation {
        Generation {
            kind,
            stream: true,
            include_usage,
            model: "llm".into(),
        }
    }

    async fn events(g: Generation, ndjson: Vec<&'static str>) -> Vec<String> {
        let frames = futures::stream::iter(
            ndjson
                .into_iter()
                .map(|f| Ok::<_, std::convert::Infallible>(Bytes::from_static(f.as_bytes()))),
        );
        let body = Sse::new(axum::body::Body::from_stream(frames), g, 1 << 16);
        let bytes = body.collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec())
            .expect("utf-8")
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("data event").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_stream_becomes_chunks_then_usage_then_done() {
        // Lines split across frames on purpose.
        let got = events(
            generation(Kind::Chat, true),
            vec![
                "{\"text\":\"He\"}\n{\"te",
                "xt\":\"llo\"}\n",
                "{\"finish_reason\":\"length\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7},\"model\":\"x\"}\n",
            ],
        )
        .await;
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[5], "[DONE]");
        let chunks: Vec<Value> = got[..5]
            .iter()
            .map(|c| serde_json::from_str(c).expect("json"))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "He");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "llo");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["total_tokens"], 7);
        assert!(chunks[..4].iter().all(|c| c["usage"].is_null()));
        let id = &chunks[0]["id"];
        assert!(id.as_str().is_some_and(|i| i.starts_with("chatcmpl-")));
        assert!(
            chunks
                .iter()
                .all(|c| &c["id"] == id && c["created"] == chunks[0]["created"])
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
    }

    #[tokio::test]
    async fn an_error_line_or_a_cut_stream_ends_with_an_error_event() {
        let got = events(
            generation(Kind::Completion, false),
            vec![
                "{\"text\":\"a\"}\n",
                "{\"error\":{\"type\":\"https://bkg.rs/problems/plugin-error\",\"title\":\"Plugin error\",\"status\":500,\"detail\":\"boom\"}}\n",
            ],
        )
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        let first: Value = serde_json::from_str(&got[0]).expect("json");
        assert_eq!(first["choices"][0]["text"], "a");
        assert!(first.get("usage").is_none());
        let error: Value = serde_json::from_str(&got[1]).expect("json");
        assert_eq!(error["error"]["message"], "boom");
        assert_eq!(error["error"]["type"], "server_error");

        let cut = events(generation(Kind::Chat, false), vec!["{\"text\":\"a\"}\n"]).await;
        let last: Value = serde_json::from_str(cut.last().expect("event")).expect("json");
        assert_eq!(last["error"]["code"], "bad_gateway");
        assert!(!cut.iter().any(|e| e == "[DONE]"));
    }
}
