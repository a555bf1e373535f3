//! Streamed invokes hold their slot and in-flight count until the stream ends or its client
//! goes away, and a client that goes away cancels the plugin's stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bkg_plugin_api::{
    CapabilityDescriptor, InvokeContext, Plugin, PluginError, StartContext, ValueStream,
};
use bkg_plugin_runtime::{AppState, Config, logs::LogBuffer, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// Streams what the test sends it, one value per message.
struct Relay {
    values: Mutex<Option<mpsc::Receiver<Value>>>,
}

#[async_trait::async_trait]
impl Plugin for Relay {
    fn version(&self) -> &'static str {
        "test"
    }

    fn capabilities(&self) -> Vec<CapabilityDescriptor> {
        vec![CapabilityDescriptor {
            id: "relay".into(),
            name: "Relay".into(),
            description: "Streams the test's values".into(),
            input_schema: json!({}),
            output_schema: json!({}),
            management: false,
            cost: None,
            streaming: true,
        }]
    }

    async fn start(&self, _: StartContext) -> Result<(), PluginError> {
        Ok(())
    }

    async fn invoke(&self, _: &str, _: Value, _: InvokeContext) -> Result<Value, PluginError> {
        Err(PluginError::InvalidInput("streams only".into()))
    }

    async fn invoke_stream(
        &self,
        _: &str,
        _: Value,
        _: InvokeContext,
    ) -> Result<ValueStream, PluginError> {
        let rx = self
            .values
            .lock()
            .expect("lock")
            .take()
            .ok_or_else(|| PluginError::InvalidInput("one stream per test".into()))?;
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|v| (Ok(v), rx))
        })))
    }
}

fn config() -> Config {
    Config {
        implementation: "relay".into(),
        plugin_id: "relay".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        addr_file: None,
        metrics_listen: None,
        plugin_config: json!({}),
        invoke_timeout: Duration::from_secs(5),
        max_concurrency: 1,
        max_queue: 0,
        max_body_bytes: 1024,
        drain_timeout: Duration::from_secs(5),
    }
}

async fn get(state: &AppState, uri: &str) -> String {
    let request = Request::get(uri).body(Body::empty()).expect("request");
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("answer");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn load_in_flight(state: &AppState) -> u64 {
    let load: Value = serde_json::from_str(&get(state, "/v1/load").await).expect("load");
    load["in_flight"].as_u64().expect("in_flight")
}

#[tokio::test]
async fn an_open_stream_holds_its_slot_until_its_client_goes_away() {
    let (tx, rx) = mpsc::channel(4);
    let plugin = Arc::new(Relay {
        values: Mutex::new(Some(rx)),
    });
    let state = AppState::new(config(), plugin, LogBuffer::new(100));
    state.set_ready(true);
    let request = Request::post("/v1/invoke/relay/stream")
        .body(Body::from("{}"))
        .expect("request");
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    tx.send(json!({"text": "a"})).await.expect("send");
    let frame = body.frame().await.expect("a frame").expect("data");
    assert_eq!(
        frame.data_ref().map(|b| &b[..]),
        Some(&b"{\"text\":\"a\"}\n"[..])
    );

    // Between values, the stream is in flight and holds the only slot.
    assert_eq!(load_in_flight(&state).await, 1);
    let metrics = get(&state, "/metrics").await;
    assert!(
        metrics.contains(r#"bkg_runtime_invoke_in_flight{plugin="relay"} 1"#),
        "{metrics}"
    );
    let refused = router(state.clone())
        .oneshot(
            Request::post("/v1/invoke/relay/stream")
                .body(Body::from("{}"))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The client goes away: the plugin's stream is dropped and the slot comes back.
    drop(body);
    tokio::time::timeout(Duration::from_secs(60), tx.closed())
        .await
        .expect("the plugin's stream was dropped");
    assert_eq!(load_in_flight(&state).await, 0);
    let metrics = get(&state, "/metrics").await;
    assert!(
        metrics.contains(r#"bkg_runtime_invoke_in_flight{plugin="relay"} 0"#),
        "{metrics}"
    );
}
