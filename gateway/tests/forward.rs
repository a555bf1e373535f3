//! The invoke path's forwarding against real HTTP servers on loopback: which failures are
//! retried on another instance, and the response size limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::StatusCode;
use bkg_core::Plugin;
use bkg_core::wire::Instance;
use bkg_gateway::backend::PluginView;
use bkg_gateway::{AppState, Config};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const KEY: &str = "bkg_forwardTestKey00000000000000000000000000";

fn state(endpoints: &[String], config: Config) -> AppState {
    let plugin: Plugin = serde_yaml::from_str(
        "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: p}\n\
         spec:\n  implementation: echo\n  capabilities:\n    - {id: echo, inputSchema: {type: object}}\n",
    )
    .expect("plugin");
    let instances = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| Instance {
            name: format!("p-{i}"),
            state: "running".into(),
            ready: true,
            endpoint: Some(e.clone()),
            pid: None,
            restarts: 0,
            started_at: None,
            last_error: None,
        })
        .collect();
    let view = PluginView {
        plugin,
        generation: 1,
        manifest_error: None,
        instances,
    };
    let keys = bkg_gateway::auth::KeyStore::load(None, Some(KEY)).expect("keys");
    AppState::new(config, Arc::new(common::Fixed(vec![view])), Arc::new(keys))
}

async fn invoke(state: &AppState) -> (StatusCode, Value) {
    let (status, bytes) = invoke_raw(
        state,
        json!({"capability": "echo", "payload": {"x": 1}}).to_string(),
    )
    .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn invoke_raw(state: &AppState, body: String) -> (StatusCode, bytes::Bytes) {
    let answer = common::send(
        state,
        common::request("POST", "/api/plugins/p/invoke", KEY, body),
    )
    .await;
    (answer.status, answer.body)
}

/// A runtime stand-in that answers every invoke with `answer` and counts calls.
async fn runtime(answer: fn() -> axum::response::Response) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/v1/invoke/{capability}",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { answer() }
        }),
    );
    let url = common::serve(app).await;
    (url, hits)
}

/// A server that reads a request and closes the connection without answering: the request
/// reached it, so the gateway must not send it anywhere else.
async fn hang_up() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            if socket.read(&mut buf).await.is_ok_and(|n| n > 0) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            drop(socket);
        }
    });
    (url, hits)
}

/// An address nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

fn echo() -> axum::response::Response {
    axum::response::IntoResponse::into_response(axum::Json(json!({"x": 1})))
}

#[tokio::test]
async fn a_call_that_never_reached_an_instance_goes_to_another() {
    let (live, hits) = runtime(echo).await;
    let state = state(&[closed_port(), live], Config::default());
    // Round robin starts on each instance once: both calls must land on the live one.
    for _ in 0..2 {
        let (status, body) = invoke(&state).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"x": 1}));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_call_that_reached_an_instance_is_never_sent_again() {
    let (a, hits_a) = hang_up().await;
    let (b, hits_b) = hang_up().await;
    let state = state(&[a, b], Config::default());
    let (status, body) = invoke(&state).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["status"], 502);
    assert_eq!(
        hits_a.load(Ordering::SeqCst) + hits_b.load(Ordering::SeqCst),
        1,
        "the request reached one instance and must not be retried"
    );
}

#[tokio::test]
async fn answers_over_the_response_limit_are_refused() {
    fn sized() -> axum::response::Response {
        axum::response::IntoResponse::into_response(vec![b'x'; 4096])
    }
    fn streamed() -> axum::response::Response {
        let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512]));
        axum::response::Response::new(Body::from_stream(futures::stream::iter(chunks)))
    }
    for answer in [sized as fn() -> _, streamed] {
        let (url, hits) = runtime(answer).await;
        let config = Config {
            max_response_bytes: 1024,
            ..Config::default()
        };
        let state = state(&[url], config);
        let (status, body) = invoke(&state).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("larger than 1024 bytes"), "{body}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
    // Under the limit, the same answer passes.
    let (url, _) = runtime(echo).await;
    let config = Config {
        max_response_bytes: 1024,
        ..Config::default()
    };
    assert_eq!(invoke(&state(&[url], config)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn payloads_are_relayed_as_the_client_wrote_them() {
    // The stand-in answers with the body it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/v1/invoke/{capability}",
        axum::routing::post(|body: bytes::Bytes| async move {
            ([("content-type", "application/json")], body)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let state = state(&[url], Config::default());
    let written = r#"{"b": [1, 2.50, "\u00e9"], "n": 1e3}"#;
    let (status, body) = invoke_raw(
        &state,
        format!(r#"{{"capability": "echo", "payload": {written}}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        &body[..],
        written.as_bytes(),
        "byte for byte, not re-encoded"
    );
    // A payload left out is null, which this input schema refuses.
    let (status, body) = invoke_raw(&state, r#"{"capability": "echo"}"#.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
    let problem: Value = serde_json::from_slice(&body).expect("problem");
    assert_eq!(problem["type"], "https://bkg.rs/problems/invalid-payload");
    // A body with an unknown field is refused as before.
    let (status, _) = invoke_raw(
        &state,
        r#"{"capability": "echo", "payload": {}, "extra": 1}"#.into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
