//! `/v1/embeddings`, `/v1/rerank` and `/v1/models` through the router, against a runtime
//! stand-in on loopback: what the runtime receives (the translated payload), what the client
//! gets back (its own shapes, OpenAI's errors), and that the calls are counted as invokes.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bkg_gateway::auth::generate;
use bkg_gateway::{AppState, Config, router};
use serde_json::{Value, json};
use tower::ServiceExt;

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A runtime stand-in: `rerank` answers TEI's sorted list, `embeddings` OpenAI's list (or a
/// 422 problem for `dimensions: 999`); every payload it receives is recorded.
async fn runtime() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/invoke/{capability}",
        axum::routing::post(
            move |axum::extract::Path(capability): axum::extract::Path<String>,
                  axum::Json(payload): axum::Json<Value>| {
                let record = record.clone();
                async move {
                    record
                        .lock()
                        .expect("lock")
                        .push((capability.clone(), payload.clone()));
                    use axum::response::IntoResponse;
                    match capability.as_str() {
                        "rerank" => axum::Json(json!([
                            {"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}
                        ]))
                        .into_response(),
                        _ if payload["dimensions"] == 999 => (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            [("content-type", "application/problem+json")],
                            json!({"type": "https://bkg.rs/problems/invalid-input", "title": "Invalid input",
                                "status": 422, "detail": "this model only produces 2 dimensions",
                                "errors": [{"field": "/dimensions", "message": "too many"}]})
                            .to_string(),
                        )
                            .into_response(),
                        _ => axum::Json(json!({
                            "object": "list", "model": "m",
                            "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
                            "usage": {"prompt_tokens": 2, "total_tokens": 2}
                        }))
                        .into_response(),
                    }
                }
            },
        ),
    );
    (common::serve(app).await, seen)
}

/// `embed` offers embeddings (rate limited to a burst of 2 per key) and rerank, under the
/// alias `mini`; `other` only echo.
const EMBED: &str = concat!(
    "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: embed}\nspec:\n",
    "  implementation: candle\n  aliases: [{name: mini}]\n  capabilities:\n",
    "    - {id: embeddings, rateLimit: {requestsPerSecond: 1, burst: 2}}\n",
    "    - {id: rerank}\n",
);
const OTHER: &str = concat!(
    "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: other}\nspec:\n",
    "  implementation: echo\n  capabilities:\n    - {id: echo}\n",
);

struct Stand {
    state: AppState,
    seen: Seen,
    admin: String,
    other_only: String,
    _dir: tempfile::TempDir,
}

async fn stand() -> Stand {
    let (url, seen) = runtime().await;
    let dir = tempfile::tempdir().expect("dir");
    let (admin, a) = generate("admin", &["admin".to_owned()]).expect("key");
    let (other_only, o) = generate("other-only", &["invoke:other".to_owned()]).expect("key");
    let keys = common::key_store(dir.path(), vec![a, o]);
    let backend = common::Fixed(vec![common::view(EMBED, &url), common::view(OTHER, &url)]);
    let config = Config {
        max_body_bytes: 4096,
        ..Config::default()
    };
    Stand {
        state: AppState::new(config, Arc::new(backend), Arc::new(keys)),
        seen,
        admin,
        other_only,
        _dir: dir,
    }
}

async fn call(
    stand: &Stand,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let answer = common::send(
        &stand.state,
        common::request(method, path, key, body.to_owned()),
    )
    .await;
    (answer.status, answer.header("retry-after"), answer.json())
}

fn last_payload(stand: &Stand) -> (String, Value) {
    stand
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a call")
}

#[tokio::test]
async fn embeddings_pass_through_and_errors_come_in_openais_shape() {
    let s = stand().await;
    let body = json!({"model": "mini", "input": ["a"], "user": "u"}).to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", &s.admin, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"][0]["embedding"], json!([0.6, 0.8]));
    assert_eq!(
        last_payload(&s),
        (
            "embeddings".into(),
            json!({"model": "mini", "input": ["a"], "user": "u"})
        ),
        "the body reaches the plugin's embeddings capability unchanged"
    );

    // A plugin's 422 problem becomes OpenAI's error, naming the param.
    let body = json!({"model": "embed", "input": "a", "dimensions": 999}).to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", &s.admin, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["param"], "dimensions");
    assert_eq!(answer["error"]["type"], "invalid_request_error");

    // The capability's rate limit (burst 2, both used above): 429 with Retry-After.
    let body = json!({"model": "embed", "input": "a"}).to_string();
    let (status, retry_after, answer) = call(&s, "POST", "/v1/embeddings", &s.admin, &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "rate_limit_exceeded");
    assert!(retry_after.is_some());

    // The gateway's body limit, the model, the key's scope.
    let big = json!({"model": "embed", "input": "x".repeat(5000)}).to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", &s.admin, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "request_too_large");
    let unknown = json!({"model": "nope", "input": "a"}).to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", &s.admin, &unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "model_not_found");
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", &s.other_only, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["type"], "permission_error");
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", "bkg_wrong", &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"]["code"], "invalid_api_key");
    // A plugin without the capability.
    let echo = json!({"model": "other", "input": "a"}).to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/embeddings", &s.admin, &echo).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "capability_not_found");

    // Counted as invokes of the plugin and capability, and as calls of the alias.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &s.state.registry).expect("encode");
    for line in [
        r#"bkg_gateway_invoke_requests_total{plugin="embed",capability="embeddings",code="200"} 1"#,
        r#"bkg_gateway_invoke_requests_total{plugin="embed",capability="embeddings",code="429"} 1"#,
        r#"bkg_gateway_alias_requests_total{alias="mini",plugin="embed"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

#[tokio::test]
async fn rerank_takes_tei_and_cohere_requests() {
    let s = stand().await;
    // TEI, without a model: the one plugin that offers rerank.
    let tei = json!({"query": "q", "texts": ["a", "b"], "return_text": false}).to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/rerank", &s.admin, &tei).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!([{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}])
    );
    assert_eq!(
        last_payload(&s),
        (
            "rerank".into(),
            json!({"query": "q", "texts": ["a", "b"], "return_text": false})
        )
    );

    let cohere =
        json!({"model": "mini", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 2})
            .to_string();
    let (status, _, answer) = call(&s, "POST", "/v1/rerank", &s.admin, &cohere).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]})
    );
    assert_eq!(
        last_payload(&s),
        (
            "rerank".into(),
            json!({"query": "q", "texts": ["a", "b"], "top_n": 2})
        )
    );
}

#[tokio::test]
async fn models_list_what_the_key_may_call() {
    let s = stand().await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (status, _, all) = call(&s, "GET", "/v1/models", &s.admin, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["object"], "list");
    assert_eq!(ids(&all), ["embed", "mini", "other"]);
    assert_eq!(all["data"][0]["owned_by"], "bkg");
    let (_, _, scoped) = call(&s, "GET", "/v1/models", &s.other_only, "").await;
    assert_eq!(ids(&scoped), ["other"]);
    let (status, _, answer) = call(&s, "GET", "/v1/models", "bkg_wrong", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"]["type"], "authentication_error");
    let request = Request::builder()
        .method("TRACE")
        .uri("/v1/embeddings")
        .body(Body::empty())
        .expect("request");
    let response = router(s.state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    let (status, _, answer) = call(&s, "POST", "/v1/audio/speech", &s.admin, "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["error"]["message"].is_string());
    // Served now: a chat call without a model names the param.
    let (status, _, answer) = call(&s, "POST", "/v1/chat/completions", &s.admin, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["param"], "model");
}
