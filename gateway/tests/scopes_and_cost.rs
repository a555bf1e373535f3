//! Management capabilities and cost-aware rate limits on the invoke path, against a runtime
//! stand-in on loopback: which keys reach a management capability (declared by the manifest
//! or reported by the runtime's `/v1/info`), and how many units a call takes from its bucket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use bkg_core::Plugin;
use bkg_core::wire::Instance;
use bkg_gateway::auth::{KeyFile, KeyStore, generate};
use bkg_gateway::backend::PluginView;
use bkg_gateway::{AppState, Config};
use serde_json::{Value, json};

/// A runtime stand-in: `/v1/info` reports `unload` as a management capability and `infer`
/// as a plain one; every invoke answers `{}` and is counted.
async fn runtime() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let info = json!({
        "protocol": "bkg.plugin/v1", "plugin_id": "p", "implementation": "candle",
        "implementation_version": "0", "ready": true,
        "capabilities": [
            {"id": "unload", "name": "Unload", "management": true},
            {"id": "infer", "name": "Infer", "cost": {"unit": "inputs"}}
        ]
    });
    let app = axum::Router::new()
        .route(
            "/v1/info",
            axum::routing::get(move || async move { axum::Json(info) }),
        )
        .route(
            "/v1/invoke/{capability}",
            axum::routing::post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { axum::Json(json!({})) }
            }),
        );
    let url = common::serve(app).await;
    (url, hits)
}

/// Keys by name: `invoke`, `invoke-p`, `invoke-p-unload`, `manage-p`, `manage-q`, `admin`.
struct Secrets {
    secrets: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

impl Secrets {
    fn new() -> (KeyStore, Self) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys.yaml");
        let mut file = KeyFile::default();
        let mut secrets = Vec::new();
        for (name, scopes) in [
            ("invoke", &["invoke"][..]),
            ("invoke-p", &["invoke:p"]),
            ("invoke-p-unload", &["invoke:p/unload"]),
            ("manage-p", &["manage:p"]),
            ("manage-q", &["manage:q", "invoke"]),
            ("admin", &["admin"]),
        ] {
            let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
            let (secret, entry) = generate(name, &scopes).expect("key");
            file.keys.push(entry);
            secrets.push((name, secret));
        }
        std::fs::write(&path, serde_yaml::to_string(&file).expect("yaml")).expect("write");
        let store = KeyStore::load(Some(path), None).expect("load");
        (store, Self { secrets, _dir: dir })
    }

    fn get(&self, name: &str) -> &str {
        &self
            .secrets
            .iter()
            .find(|(n, _)| *n == name)
            .expect("known key")
            .1
    }
}

fn state(manifest: &str, endpoint: &str, keys: KeyStore) -> AppState {
    let plugin: Plugin = serde_yaml::from_str(manifest).expect("plugin");
    let view = PluginView {
        plugin,
        generation: 1,
        manifest_error: None,
        instances: vec![Instance {
            name: "p-0".into(),
            state: "running".into(),
            ready: true,
            endpoint: Some(endpoint.to_owned()),
            pid: None,
            restarts: 0,
            started_at: None,
            last_error: None,
        }],
    };
    AppState::new(
        Config::default(),
        Arc::new(common::Fixed(vec![view])),
        Arc::new(keys),
    )
}

async fn invoke(
    state: &AppState,
    key: &str,
    capability: &str,
    payload: Value,
) -> (StatusCode, Value) {
    let body = json!({"capability": capability, "payload": payload}).to_string();
    let answer = common::send(
        state,
        common::request("POST", "/api/plugins/p/invoke", key, body),
    )
    .await;
    (answer.status, answer.json())
}

const DECLARED: &str = "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: p}\n\
spec:\n  implementation: candle\n  capabilities:\n    - {id: unload, management: true}\n    - {id: infer}\n";

const UNDECLARED: &str = "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: p}\nspec:\n  implementation: candle\n";

#[tokio::test]
async fn management_capabilities_need_admin_or_manage_scopes() {
    // Marked in the manifest, or (the manifest lists no capabilities) reported by the runtime.
    for manifest in [DECLARED, UNDECLARED] {
        let (url, hits) = runtime().await;
        let (store, keys) = Secrets::new();
        let state = state(manifest, &url, store);
        for name in ["invoke", "invoke-p", "invoke-p-unload", "manage-q"] {
            let (status, body) = invoke(&state, keys.get(name), "unload", json!({})).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {body}");
            assert_eq!(body["type"], "https://bkg.rs/problems/forbidden");
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "no refused call reached the runtime"
        );
        for name in ["manage-p", "admin"] {
            let (status, body) = invoke(&state, keys.get(name), "unload", json!({})).await;
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
        }
        // manage:p reaches the management capabilities only.
        let (status, body) = invoke(&state, keys.get("manage-p"), "infer", json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = invoke(&state, keys.get("invoke-p"), "infer", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test]
async fn a_call_takes_as_many_units_as_it_has_inputs() {
    let manifest = "apiVersion: bkg.rs/v1alpha1\nkind: Plugin\nmetadata: {name: p}\n\
spec:\n  implementation: candle\n  capabilities:\n    - id: infer\n      \
rateLimit: {requestsPerSecond: 1, burst: 300}\n      cost: {unit: inputs}\n";
    let (url, hits) = runtime().await;
    let (store, keys) = Secrets::new();
    let key = keys.get("invoke");
    let state = state(manifest, &url, store);
    let inputs = |n: usize| json!({"input": vec!["a long text to embed"; n]});
    let (status, body) = invoke(&state, key, "infer", inputs(256)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 300 - 256 = 44 units are left (plus one a second): a second call of 256 must wait for
    // about 212 more, which a call counted as one would not.
    let (status, body) = invoke(&state, key, "infer", inputs(256)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("this call costs 256"), "{detail}");
    let wait: u32 = detail
        .rsplit("retry in ")
        .next()
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("retry in Ns");
    assert!((150..=212).contains(&wait), "{detail}");
    // What is left still serves smaller calls.
    let (status, body) = invoke(&state, key, "infer", inputs(40)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // More than the bucket ever holds: refused for good (413), not "retry later".
    let (status, body) = invoke(&state, key, "infer", inputs(301)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["type"], "https://bkg.rs/problems/cost-over-burst");
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("301"),
        "{body}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}
