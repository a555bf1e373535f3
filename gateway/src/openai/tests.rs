//! The `/v1` translations and OpenAI's error shape, without a server.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::aliases::AliasTable;

fn translated(endpoint: Endpoint, body: Value) -> Result<Translated, ApiError> {
    translate(endpoint, body.to_string().as_bytes())
}

fn error_of(endpoint: Endpoint, body: Value) -> (StatusCode, OpenAiError) {
    from_api_error(&translated(endpoint, body).expect_err("refused"))
}

#[test]
fn routes_and_methods() {
    assert_eq!(
        Endpoint::of(&Method::POST, "/v1/embeddings"),
        Some(Endpoint::Embeddings)
    );
    assert_eq!(
        Endpoint::of(&Method::POST, "/v1/rerank"),
        Some(Endpoint::Rerank)
    );
    assert_eq!(
        Endpoint::of(&Method::GET, "/v1/models"),
        Some(Endpoint::Models)
    );
    assert_eq!(
        Endpoint::of(&Method::GET, "/v1/embeddings"),
        Some(Endpoint::WrongMethod("POST"))
    );
    assert_eq!(
        Endpoint::of(&Method::POST, "/v1/chat/completions"),
        Some(Endpoint::ChatCompletions)
    );
    assert_eq!(
        Endpoint::of(&Method::POST, "/v1/audio/speech"),
        Some(Endpoint::Unknown)
    );
    assert_eq!(
        Endpoint::of(&Method::DELETE, "/v1/models"),
        Some(Endpoint::WrongMethod("GET"))
    );
    assert_eq!(Endpoint::of(&Method::POST, "/api/plugins/x/invoke"), None);
    assert_eq!(Endpoint::of(&Method::GET, "/v1beta"), None);
}

#[test]
fn embeddings_pass_the_body_through_to_the_embeddings_capability() {
    let body = json!({"model": "minilm", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 384, "user": "u"});
    let t = translated(Endpoint::Embeddings, body.clone()).expect("ok");
    assert_eq!(t.model.as_deref(), Some("minilm"));
    assert_eq!(t.capability, "embeddings");
    assert_eq!(t.shape, Shape::AsIs);
    assert_eq!(
        serde_json::from_str::<Value>(&t.payload).expect("json"),
        body
    );
}

#[test]
fn bad_embeddings_requests_name_the_param() {
    for (body, param) in [
        (json!({"input": "a"}), "model"),
        (json!({"model": 3, "input": "a"}), "model"),
        (json!({"model": ""}), "model"),
        (json!({"model": "m"}), "input"),
    ] {
        let (status, e) = error_of(Endpoint::Embeddings, body.clone());
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(e.type_, "invalid_request_error");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        assert!(e.message.contains(param), "{e:?}");
    }
    let (status, e) = from_api_error(&translate(Endpoint::Embeddings, b"{").expect_err("bad"));
    assert_eq!(
        (status, e.code.as_deref()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );
    let (status, _) = error_of(Endpoint::Embeddings, json!(["not", "an", "object"]));
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn tei_rerank_drops_only_the_model_and_cohere_is_translated() {
    let tei = translated(
        Endpoint::Rerank,
        json!({"model": "rr", "query": "q", "texts": ["a", "b"], "top_n": 1, "return_text": true, "raw_scores": false}),
    )
    .expect("tei");
    assert_eq!(
        (tei.model.as_deref(), tei.capability, tei.shape),
        (Some("rr"), "rerank", Shape::AsIs)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&tei.payload).expect("json"),
        json!({"query": "q", "texts": ["a", "b"], "top_n": 1, "return_text": true, "raw_scores": false})
    );
    let tei_without_model =
        translated(Endpoint::Rerank, json!({"query": "q", "texts": ["a"]})).expect("ok");
    assert_eq!(tei_without_model.model, None);

    let cohere = translated(
        Endpoint::Rerank,
        json!({"model": "rr", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 2, "return_documents": false}),
    )
    .expect("cohere");
    assert_eq!(cohere.shape, Shape::Cohere);
    assert_eq!(
        serde_json::from_str::<Value>(&cohere.payload).expect("json"),
        json!({"query": "q", "texts": ["a", "b"], "top_n": 2})
    );
    let out = cohere_results(br#"[{"index":1,"score":0.9},{"index":0,"score":0.1,"text":"a"}]"#)
        .expect("reshaped");
    assert_eq!(
        serde_json::from_slice::<Value>(&out).expect("json"),
        json!({"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]})
    );
    assert!(cohere_results(br#"{"error": 1}"#).is_none());

    for (body, param) in [
        (json!({"texts": ["a"]}), "query"),
        (json!({"query": "q"}), "texts"),
        (
            json!({"query": "q", "texts": [], "documents": []}),
            "documents",
        ),
        (json!({"query": "q", "documents": [1]}), "documents"),
    ] {
        let (status, e) = error_of(Endpoint::Rerank, body.clone());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
    }
}

#[test]
fn gateway_errors_map_to_openai_status_type_and_code() {
    let cases = [
        (
            ApiError::Unauthorized("the API key is not valid".into()),
            401,
            "authentication_error",
            Some("invalid_api_key"),
            None,
        ),
        (
            ApiError::Forbidden("key \"k\" may not call model \"m\"".into()),
            403,
            "permission_error",
            Some("insufficient_scope"),
            None,
        ),
        (
            ApiError::UnknownPlugin("nope".into()),
            404,
            "not_found_error",
            Some("model_not_found"),
            Some("model"),
        ),
        (
            ApiError::RateLimited {
                detail: "slow down".into(),
                retry_after: 3,
            },
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
            None,
        ),
        (
            ApiError::Body {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: "big".into(),
            },
            413,
            "invalid_request_error",
            Some("request_too_large"),
            None,
        ),
        (
            ApiError::InvalidPayload {
                capability: "embeddings".into(),
                errors: vec![bkg_core::wire::FieldError {
                    field: "/input/0".into(),
                    message: "not a string".into(),
                }],
            },
            400,
            "invalid_request_error",
            Some("invalid_payload"),
            Some("input"),
        ),
        (
            ApiError::Unavailable {
                detail: "starting".into(),
                retry_after: Some(1),
            },
            503,
            "server_error",
            Some("plugin_unavailable"),
            None,
        ),
    ];
    for (error, status, type_, code, param) in cases {
        let (s, e) = from_api_error(&error);
        assert_eq!(s.as_u16(), status, "{error:?}");
        assert_eq!(e.type_, type_, "{error:?}");
        assert_eq!(e.code.as_deref(), code, "{error:?}");
        assert_eq!(e.param.as_deref(), param, "{error:?}");
        assert!(!e.message.is_empty());
    }
}

#[tokio::test]
async fn refusals_carry_retry_after_and_www_authenticate() {
    let limited = refuse(&ApiError::RateLimited {
        detail: "x".into(),
        retry_after: 7,
    });
    assert_eq!(limited.headers()[header::RETRY_AFTER], "7");
    let (status, body) = body_of(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]
            .as_object()
            .expect("error")
            .contains_key("param"),
        "param is always present"
    );

    let unauthorized = refuse(&ApiError::Unauthorized("no key".into()));
    assert!(
        unauthorized
            .headers()
            .contains_key(header::WWW_AUTHENTICATE)
    );
    assert_eq!(
        unauthorized.headers()[header::CONTENT_TYPE],
        "application/json"
    );
}

#[tokio::test]
async fn a_plugins_problem_becomes_an_openai_error_with_its_status() {
    let problem = json!({
        "type": "https://bkg.rs/problems/invalid-input", "title": "Invalid input", "status": 422,
        "detail": "dimensions: this model only produces 384 dimensions",
        "errors": [{"field": "/dimensions", "message": "too large"}]
    });
    let mut relayed = (StatusCode::UNPROCESSABLE_ENTITY, problem.to_string()).into_response();
    relayed.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(bkg_core::wire::PROBLEM_JSON),
    );
    let (status, body) = body_of(answer(Shape::AsIs, Ok(relayed), 1 << 20).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        json!({"error": {
            "message": "dimensions: this model only produces 384 dimensions",
            "type": "invalid_request_error", "param": "dimensions", "code": "invalid_input"
        }})
    );

    let ok = (StatusCode::OK, r#"{"object":"list"}"#).into_response();
    let (status, body) = body_of(answer(Shape::AsIs, Ok(ok), 1 << 20).await).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"object": "list"})));
}

#[test]
fn models_are_the_plugins_and_whole_aliases_a_key_may_call() {
    let mut a: bkg_core::PluginSpec = serde_yaml::from_str(
        "{implementation: echo, aliases: [{name: stable, weight: 90}, {name: a-only}]}",
    )
    .expect("spec");
    a.enabled = true;
    let b: bkg_core::PluginSpec =
        serde_yaml::from_str("{implementation: echo, aliases: [{name: stable, weight: 10}]}")
            .expect("spec");
    let plugins = [
        bkg_core::Plugin::new("echo-a", a),
        bkg_core::Plugin::new("echo-b", b),
    ];
    let table = AliasTable::build(&plugins);
    let ids = [("echo-a".to_owned(), 5), ("echo-b".to_owned(), 7)];

    let all = model_list(&ids, &table, |_| true);
    let names: Vec<&str> = all.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(names, ["a-only", "echo-a", "echo-b", "stable"]);
    assert_eq!(all.object, "list");
    assert!(
        all.data
            .iter()
            .all(|m| m.object == "model" && m.owned_by == "bkg")
    );
    assert_eq!(all.data[3].created, 5);

    // A key for echo-a alone may not use `stable`, which also sends calls to echo-b.
    let scoped = model_list(&ids, &table, |id| id == "echo-a");
    let names: Vec<&str> = scoped.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(names, ["a-only", "echo-a"]);
}
