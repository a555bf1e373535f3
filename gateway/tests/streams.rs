//! Streamed invokes and the generation routes through the router, against a runtime stand-in
//! on loopback whose streams the test feeds line by line: frames reach the client before the
//! stream ends, the in-flight gauge counts a stream until it ends, a client that goes away
//! closes the runtime's stream, tokens are charged to the key and its limit answers 429.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use bkg_gateway::auth::generate;
use bkg_gateway::{AppState, Config, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

type Feed = Arc<Mutex<Option<mpsc::Receiver<String>>>>;

const USAGE: &str = r#"{"finish_reason":"length","model":"tiny","usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;

/// A runtime stand-in: `/v1/invoke/{capability}/stream` streams the lines the test sends (one
/// stream per feed); `/v1/invoke/chat` answers a whole generation.
async fn runtime(feed: Feed) -> String {
    let app = axum::Router::new()
        .route(
            "/v1/invoke/{capability}/stream",
            axum::routing::post(move || {
                let feed = feed.clone();
                async move {
                    let rx = feed.lock().expect("lock").take().expect("one stream per feed");
                    let lines = futures::stream::unfold(rx, |mut rx| async {
                        rx.recv()
                            .await
                            .map(|l| (Ok::<_, std::convert::Infallible>(Bytes::from(l + "\n")), rx))
                    });
                    (
                        [("content-type", "application/x-ndjson")],
                        Body::from_stream(lines),
                    )
                }
            }),
        )
        .route(
            "/v1/invoke/{capability}",
            axum::routing::post(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"model":"tiny","text":"Hello","finish_reason":"stop","usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
                )
            }),
        );
    common::serve(app).await
}

const LLM: &str = concat!(
    "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: llm}\nspec:\n",
    "  implementation: candle\n  capabilities:\n",
    "    - {id: chat, streaming: true}\n    - {id: completions, streaming: true}\n",
);

struct Stand {
    state: AppState,
    admin: String,
    limited: String,
    feed: Feed,
    _dir: tempfile::TempDir,
}

async fn stand() -> Stand {
    let feed: Feed = Arc::default();
    let url = runtime(feed.clone()).await;
    let dir = tempfile::tempdir().expect("dir");
    let (admin, a) = generate("admin", &["admin".to_owned()]).expect("key");
    let (limited, mut l) = generate("limited", &["invoke:llm".to_owned()]).expect("key");
    l.tokens_per_minute = Some(5);
    let keys = common::key_store(dir.path(), vec![a, l]);
    let backend = common::Fixed(vec![common::view(LLM, &url)]);
    Stand {
        state: AppState::new(Config::default(), Arc::new(backend), Arc::new(keys)),
        admin,
        limited,
        feed,
        _dir: dir,
    }
}

impl Stand {
    /// A new stream the test feeds.
    fn feed(&self) -> mpsc::Sender<String> {
        let (tx, rx) = mpsc::channel(8);
        *self.feed.lock().expect("lock") = Some(rx);
        tx
    }

    async fn open(&self, path: &str, key: &str, body: Value) -> axum::response::Response {
        router(self.state.clone())
            .oneshot(common::request("POST", path, key, body.to_string()))
            .await
            .expect("infallible")
    }
}

async fn next_text(body: &mut Body) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
        .await
        .expect("a frame in time")
        .expect("a frame")
        .expect("data");
    String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned()
}

#[tokio::test]
async fn a_stream_is_relayed_line_by_line_and_counted_until_it_ends() {
    let s = stand().await;
    let tx = s.feed();
    let response = s
        .open(
            "/api/plugins/llm/invoke/stream",
            &s.admin,
            json!({"capability": "chat", "payload": {"messages": []}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    tx.send(r#"{"text":"He"}"#.into()).await.expect("send");
    assert_eq!(next_text(&mut body).await, "{\"text\":\"He\"}\n");
    // The runtime has not finished: the stream is in flight.
    assert_eq!(s.state.metrics.in_flight_now("llm"), 1);
    tx.send(USAGE.into()).await.expect("send");
    drop(tx);
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, format!("{USAGE}\n").as_bytes());
    assert_eq!(s.state.metrics.in_flight_now("llm"), 0);
    let usage = s.state.tokens.usage("admin");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 2));
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_runtimes_stream() {
    let s = stand().await;
    let tx = s.feed();
    let response = s
        .open(
            "/v1/chat/completions",
            &s.admin,
            json!({"model": "llm", "messages": [], "stream": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    tx.send(r#"{"text":"He"}"#.into()).await.expect("send");
    let events = next_text(&mut body).await;
    assert!(events.contains(r#""role":"assistant""#), "{events}");
    assert_eq!(s.state.metrics.in_flight_now("llm"), 1);
    drop(body);
    // The gateway dropped its runtime connection, so the runtime dropped the stream.
    tokio::time::timeout(Duration::from_secs(60), tx.closed())
        .await
        .expect("the runtime's stream was closed");
    assert_eq!(s.state.metrics.in_flight_now("llm"), 0);
    assert_eq!(s.state.tokens.usage("admin").completion_tokens, 0);
}

#[tokio::test]
async fn sse_chunks_end_with_usage_and_done() {
    let s = stand().await;
    let tx = s.feed();
    for line in [r#"{"text":"He"}"#, r#"{"text":"llo"}"#, USAGE] {
        tx.send(line.into()).await.expect("send");
    }
    drop(tx);
    let answer = common::send(
        &s.state,
        common::request(
            "POST",
            "/v1/completions",
            &s.admin,
            json!({"model": "llm", "prompt": "x", "stream": true, "stream_options": {"include_usage": true}})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data"))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    let texts: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, "Hello");
    assert_eq!(chunks.last().expect("usage")["usage"]["total_tokens"], 9);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
}

#[tokio::test]
async fn whole_answers_are_chat_completions_and_a_key_over_its_tokens_gets_429() {
    let s = stand().await;
    let body = json!({"model": "llm", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let answer = common::send(
        &s.state,
        common::request("POST", "/v1/chat/completions", &s.limited, body.clone()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let v = answer.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 9);
    // 9 tokens against 5 a minute: the next call waits (OpenAI's shape on /v1).
    let answer = common::send(
        &s.state,
        common::request("POST", "/v1/chat/completions", &s.limited, body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded");
    assert!(answer.header("retry-after").is_some());
    // …and problem+json on the invoke route.
    let answer = common::send(
        &s.state,
        common::request(
            "POST",
            "/api/plugins/llm/invoke",
            &s.limited,
            json!({"capability": "chat", "payload": {"messages": []}}).to_string(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(answer.header("retry-after").is_some());
    // The key's usage is listed with its limit.
    let answer = common::send(&s.state, common::request("GET", "/api/keys", &s.admin, "")).await;
    let keys = answer.json();
    let limited = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == "limited")
        .expect("listed")
        .clone();
    assert_eq!(limited["tokens_per_minute"], 5);
    assert_eq!(
        limited["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 2})
    );
}
