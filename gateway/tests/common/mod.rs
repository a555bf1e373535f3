//! What the gateway's integration tests share: a backend with fixed plugins, runtime
//! stand-ins served on loopback, key files, and one way to send a request through the router
//! and read the answer.
//!
//! Each test binary uses a part of it, so unused items are expected here.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use bkg_core::Plugin;
use bkg_core::wire::{Instance, LogLine};
use bkg_gateway::auth::{KeyEntry, KeyFile, KeyStore};
use bkg_gateway::backend::{Backend, BackendError, PluginView};
use bkg_gateway::{AppState, router};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The plugins given, as they are: lifecycle calls succeed and change nothing.
pub struct Fixed(pub Vec<PluginView>);

#[async_trait::async_trait]
impl Backend for Fixed {
    fn mode(&self) -> &'static str {
        "test"
    }
    async fn list(&self) -> Vec<PluginView> {
        self.0.clone()
    }
    async fn get(&self, id: &str) -> Option<PluginView> {
        self.0.iter().find(|v| v.plugin.id() == id).cloned()
    }
    async fn start(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn stop(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn restart(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn set_config(&self, _: &str, _: Value) -> Result<(), BackendError> {
        Ok(())
    }
    async fn logs(&self, _: &str, _: usize) -> Result<Vec<LogLine>, BackendError> {
        Ok(Vec::new())
    }
}

/// Serves `app` (a runtime stand-in) on a loopback port for the rest of the test; its URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The plugin of `manifest` with one ready instance at `endpoint`.
pub fn view(manifest: &str, endpoint: &str) -> PluginView {
    let plugin: Plugin = serde_yaml::from_str(manifest).expect("plugin");
    PluginView {
        instances: vec![Instance {
            name: format!("{}-0", plugin.id()),
            state: "running".into(),
            ready: true,
            endpoint: Some(endpoint.to_owned()),
            pid: None,
            restarts: 0,
            started_at: None,
            last_error: None,
        }],
        plugin,
        generation: 1,
        manifest_error: None,
    }
}

/// A key file in `dir` holding `keys`, loaded.
pub fn key_store(dir: &std::path::Path, keys: Vec<KeyEntry>) -> KeyStore {
    let path = dir.join("keys.yaml");
    std::fs::write(
        &path,
        serde_yaml::to_string(&KeyFile { keys }).expect("yaml"),
    )
    .expect("write");
    KeyStore::load(Some(path), None).expect("load")
}

/// A JSON request with a bearer key (none when `key` is empty).
pub fn request(method: &str, uri: &str, key: &str, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if !key.is_empty() {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(body.into()).expect("request")
}

/// What the router answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// Sends `request` through the gateway's router and reads the whole answer.
pub async fn send(state: &AppState, request: Request<Body>) -> Answer {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}
