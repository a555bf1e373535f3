//! Gateway routes through `oneshot` on the router, over a real (empty) local supervisor.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bkg_gateway::backend::local::LocalBackend;
use bkg_gateway::{AppState, Config, router};
use bkg_supervisor::{Supervisor, SupervisorConfig};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const KEY: &str = "bkg_routesTestKey000000000000000000000000000";

fn app() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let supervisor = Supervisor::new(SupervisorConfig::new(
        "/nonexistent/plugin-runtime".into(),
        dir.path().to_path_buf(),
    ));
    let keys = bkg_gateway::auth::KeyStore::load(None, Some(KEY)).expect("keys");
    let state = AppState::new(
        Config::default(),
        Arc::new(LocalBackend::new(supervisor)),
        Arc::new(keys),
    );
    (state, dir)
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    request_id: Option<&str>,
) -> (StatusCode, String, Option<String>, Value) {
    let mut request = common::request(method, uri, KEY, "{}");
    if let Some(id) = request_id {
        request
            .headers_mut()
            .insert("x-request-id", id.parse().expect("header value"));
    }
    let answer = common::send(state, request).await;
    (
        answer.status,
        answer.header("content-type").unwrap_or_default(),
        answer.header("x-request-id"),
        answer.json(),
    )
}

#[tokio::test]
async fn every_plugin_route_answers_404_problem_for_an_unknown_plugin() {
    let (state, _dir) = app();
    for (method, uri) in [
        ("GET", "/api/plugins/ghost"),
        ("POST", "/api/plugins/ghost/start"),
        ("POST", "/api/plugins/ghost/stop"),
        ("POST", "/api/plugins/ghost/restart"),
        ("POST", "/api/plugins/ghost/config"),
        ("GET", "/api/plugins/ghost/telemetry"),
        ("GET", "/api/plugins/ghost/logs"),
        ("POST", "/api/plugins/ghost/invoke"),
    ] {
        let (status, content_type, id, body) = call(&state, method, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(content_type, "application/problem+json", "{method} {uri}");
        assert_eq!(
            body["type"], "https://bkg.rs/problems/unknown-plugin",
            "{method} {uri}"
        );
        assert_eq!(body["request_id"].as_str(), id.as_deref(), "{method} {uri}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let (state, _dir) = app();
    let (status, content_type, _, body) = call(&state, "GET", "/api/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["type"], "https://bkg.rs/problems/not-found");
    let (status, _, _, body) = call(&state, "DELETE", "/api/plugins", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["type"], "https://bkg.rs/problems/method-not-allowed");
    // The invoke route is served in front of the router, which still answers its other methods.
    let (status, content_type, id, body) =
        call(&state, "GET", "/api/plugins/echo/invoke", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["request_id"].as_str(), id.as_deref());
}

#[tokio::test]
async fn invoke_ids_are_percent_decoded_and_need_a_key() {
    let (state, _dir) = app();
    let (status, _, _, body) = call(&state, "POST", "/api/plugins/gh%6Fst/invoke", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"ghost\"")),
        "{body}"
    );
    let request = Request::post("/api/plugins/ghost/invoke")
        .body(Body::from("{}"))
        .expect("request");
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let (state, _dir) = app();
    let (_, _, id, body) = call(&state, "GET", "/api/plugins/ghost", Some("abc-123")).await;
    assert_eq!(id.as_deref(), Some("abc-123"));
    assert_eq!(body["request_id"], "abc-123");
    let (status, _, id, body) = call(&state, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok", "mode": "local"}));
    assert_eq!(id.map(|i| i.len()), Some(36), "a UUID is generated");
    let (status, _, _, body) = call(&state, "GET", "/api/plugins", None).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!([])));
}

/// `/metrics` lists key ids and plugin names: the API port does not serve it, with a key or
/// without; the metrics listener's router does.
#[tokio::test]
async fn metrics_are_served_only_by_the_metrics_router() {
    let (state, _dir) = app();
    // A keyed call, so the key id is in the registry.
    let (status, ..) = call(&state, "GET", "/api/plugins", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _, body) = call(&state, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "https://bkg.rs/problems/not-found");
    let bare = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("request");
    let response = router(state.clone())
        .oneshot(bare)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(!text.contains("bkg_gateway_"), "{text}");

    let metrics = bkg_gateway::metrics_router(state.clone())
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = String::from_utf8(
        metrics
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(text.contains("bkg_gateway_"), "{text}");
    assert!(text.contains("key_id="), "{text}");

    // With the admin UI served at `/`, `/metrics` is still a 404, not the UI's index page.
    let ui = tempfile::tempdir().expect("ui dir");
    std::fs::write(ui.path().join("index.html"), "<html>ui</html>").expect("index");
    let with_ui = AppState::new(
        Config {
            ui_dir: Some(ui.path().to_path_buf()),
            ..Config::default()
        },
        state.backend.clone(),
        state.keys.clone(),
    );
    let (status, _, _, body) = call(&with_ui, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "https://bkg.rs/problems/not-found");
    let (status, ..) = call(&with_ui, "GET", "/plugins/echo", None).await;
    assert_eq!(status, StatusCode::OK, "the UI still serves its own routes");
}
