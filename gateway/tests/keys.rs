//! `/api/keys` through `oneshot` on the router: list, create, revoke and expiry against a real
//! key file, and the scopes that may use them.

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use bkg_gateway::auth::{KeyFile, KeyStore};
use bkg_gateway::backend::local::LocalBackend;
use bkg_gateway::{AppState, Config};
use bkg_supervisor::{Supervisor, SupervisorConfig};
use serde_json::{Value, json};

const BOOTSTRAP: &str = "bkg_keysTestBootstrap0000000000000000000000";

/// A gateway whose key file holds an admin key `ops` and a read key `viewer`, plus the
/// `BKG_API_KEY`-style bootstrap key. Returns the state, the keys and the file.
fn app(dir: &Path) -> (AppState, String, String, std::path::PathBuf) {
    let path = dir.join("keys.yaml");
    let (admin, admin_entry) = bkg_gateway::auth::generate("ops", &["admin".into()]).expect("key");
    let (reader, reader_entry) =
        bkg_gateway::auth::generate("viewer", &["read".into()]).expect("key");
    let file = KeyFile {
        keys: vec![admin_entry, reader_entry],
    };
    std::fs::write(&path, serde_yaml::to_string(&file).expect("yaml")).expect("write");
    let supervisor = Supervisor::new(SupervisorConfig::new(
        "/nonexistent/plugin-runtime".into(),
        dir.join("work"),
    ));
    let keys = KeyStore::load(Some(path.clone()), Some(BOOTSTRAP)).expect("keys");
    let state = AppState::new(
        Config::default(),
        Arc::new(LocalBackend::new(supervisor)),
        Arc::new(keys),
    );
    (state, admin, reader, path)
}

async fn call(
    state: &AppState,
    key: &str,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let answer = common::send(state, common::request(method, uri, key, body.to_string())).await;
    (answer.status, answer.json())
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|k| k["id"].as_str().expect("id"))
        .collect()
}

#[tokio::test]
async fn the_list_shows_every_key_and_never_a_secret_or_hash() {
    let dir = tempfile::tempdir().expect("dir");
    let (state, admin, _, path) = app(dir.path());
    let (status, list) = call(&state, &admin, "GET", "/api/keys", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), ["ops", "viewer", "bootstrap"]);
    let ops = &list[0];
    assert_eq!(ops["scopes"], json!(["admin"]));
    assert_eq!(ops["source"], "file");
    assert_eq!(ops["expired"], false);
    assert!(ops["created_at"].is_string(), "{ops}");
    assert!(
        ops["last_used_at"].is_string(),
        "the calling key was just used: {ops}"
    );
    assert!(
        list[1].get("last_used_at").is_none(),
        "viewer never called: {}",
        list[1]
    );
    assert_eq!(list[2]["source"], "env");
    let text = list.to_string();
    let stored = std::fs::read_to_string(&path).expect("file");
    for secret in [admin.as_str(), BOOTSTRAP] {
        assert!(!text.contains(secret), "a key in the list: {text}");
    }
    assert!(!text.contains("sha256:"), "a hash in the list: {text}");
    for line in stored.lines().filter(|l| l.contains("sha256:")) {
        let hash = line.split("sha256:").nth(1).expect("hex");
        assert!(!text.contains(hash), "a hash in the list: {text}");
    }
}

#[tokio::test]
async fn a_created_key_works_at_once_is_stored_hashed_and_stops_when_revoked() {
    let dir = tempfile::tempdir().expect("dir");
    let (state, admin, _, path) = app(dir.path());
    let (status, made) = call(
        &state,
        &admin,
        "POST",
        "/api/keys",
        json!({"id": "ci", "scopes": ["read"], "description": "the CI"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().expect("key once").to_owned();
    assert!(key.starts_with("bkg_") && key.len() == 44, "{key}");
    assert_eq!(made["scopes"], json!(["read"]));
    let stored = std::fs::read_to_string(&path).expect("file");
    assert!(!stored.contains(&key), "the key itself is never stored");
    let file: KeyFile = serde_yaml::from_str(&stored).expect("still a key file");
    assert_eq!(
        file.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["ops", "viewer", "ci"],
        "earlier keys are kept"
    );
    // At once, without waiting for the reloader; with its own scopes only.
    let (status, who) = call(&state, &key, "GET", "/api/whoami", Value::Null).await;
    assert_eq!((status, &who["key_id"]), (StatusCode::OK, &json!("ci")));
    let (status, _) = call(&state, &key, "GET", "/api/plugins", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&state, &key, "POST", "/api/plugins/x/stop", Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = call(&state, &admin, "GET", "/api/keys", Value::Null).await;
    assert!(!list.to_string().contains(&key));

    // The same id again is refused: creating never replaces a key.
    let (status, problem) = call(
        &state,
        &admin,
        "POST",
        "/api/keys",
        json!({"id": "ci", "scopes": ["admin"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    let (status, _) = call(&state, &admin, "DELETE", "/api/keys/ci", Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = call(&state, &key, "GET", "/api/whoami", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = call(&state, &admin, "DELETE", "/api/keys/ci", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(&state, &admin, "GET", "/api/keys", Value::Null).await;
    assert_eq!(ids(&list), ["ops", "viewer", "bootstrap"]);
}

#[tokio::test]
async fn an_expired_key_gets_401_saying_so() {
    let dir = tempfile::tempdir().expect("dir");
    let (state, admin, _, path) = app(dir.path());
    let (status, made) = call(
        &state,
        &admin,
        "POST",
        "/api/keys",
        json!({"id": "temp", "scopes": ["read"], "expires_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["expires_at"], "2099-01-01T00:00:00Z");
    let key = made["key"].as_str().expect("key").to_owned();
    let (status, _) = call(&state, &key, "GET", "/api/plugins", Value::Null).await;
    assert_eq!(status, StatusCode::OK);

    // Time passes: move its expiry into the past, as the file would read then.
    let text = std::fs::read_to_string(&path).expect("file");
    let text = text.replace("2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z");
    std::fs::write(&path, text).expect("write");
    state.keys.reload().expect("reload");
    let (status, problem) = call(&state, &key, "GET", "/api/plugins", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("expired") && detail.contains("temp"),
        "{detail}"
    );
    let (_, list) = call(&state, &admin, "GET", "/api/keys", Value::Null).await;
    let temp = list
        .as_array()
        .expect("list")
        .iter()
        .find(|k| k["id"] == "temp")
        .expect("still listed");
    assert_eq!(temp["expired"], true);
    // Invokes, served in front of the router, refuse it the same way.
    let (status, problem) = call(
        &state,
        &key,
        "POST",
        "/api/plugins/echo/invoke",
        json!({"capability": "echo", "payload": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired"))
    );

    // An expiry in the past, or not a time, is refused at creation.
    for at in [
        "2001-01-01T00:00:00Z",
        "tomorrow",
        "2099-01-01T00:00Z",
        "2099-01-01",
    ] {
        let (status, problem) = call(
            &state,
            &admin,
            "POST",
            "/api/keys",
            json!({"id": "late", "scopes": ["read"], "expires_at": at}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{at}: {problem}");
    }
}

#[tokio::test]
async fn only_admin_keys_manage_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let (state, admin, reader, _) = app(dir.path());
    let (_, made) = call(
        &state,
        &admin,
        "POST",
        "/api/keys",
        json!({"id": "caller", "scopes": ["invoke", "manage:echo"]}),
    )
    .await;
    let invoker = made["key"].as_str().expect("key").to_owned();
    for key in [&reader, &invoker] {
        for (method, uri, body) in [
            ("GET", "/api/keys", Value::Null),
            (
                "POST",
                "/api/keys",
                json!({"id": "sneaky", "scopes": ["admin"]}),
            ),
            ("DELETE", "/api/keys/ops", Value::Null),
        ] {
            let (status, problem) = call(&state, key, method, uri, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {problem}");
        }
    }
    let (status, _) = call(&state, "bkg_nobody", "GET", "/api/keys", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = call(&state, &admin, "GET", "/api/keys", Value::Null).await;
    assert!(!ids(&list).contains(&"sneaky"));
    assert!(ids(&list).contains(&"ops"));
}

#[tokio::test]
async fn a_key_cannot_revoke_itself_nor_the_bootstrap_key() {
    let dir = tempfile::tempdir().expect("dir");
    let (state, admin, _, _) = app(dir.path());
    let (status, problem) = call(&state, &admin, "DELETE", "/api/keys/ops", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("itself"))
    );
    let (status, problem) =
        call(&state, &admin, "DELETE", "/api/keys/bootstrap", Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, _) = call(
        &state,
        BOOTSTRAP,
        "DELETE",
        "/api/keys/bootstrap",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = call(&state, &admin, "GET", "/api/whoami", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "the caller still gets in");
}

#[tokio::test]
async fn bad_requests_are_400_and_the_file_is_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let (state, admin, _, path) = app(dir.path());
    for body in [
        json!({"id": "x", "scopes": []}),
        json!({"id": "x", "scopes": ["write"]}),
        json!({"id": "", "scopes": ["read"]}),
        json!({"id": "a/b", "scopes": ["read"]}),
        json!({"id": "x", "scopes": ["read"], "extra": 1}),
        json!({"scopes": ["read"]}),
        json!([1]),
    ] {
        let (status, problem) = call(&state, &admin, "POST", "/api/keys", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    // The file holds two keys: the API adds keys up to MAX_KEYS, then refuses.
    for i in 2..bkg_gateway::keys::MAX_KEYS {
        let (status, problem) = call(
            &state,
            &admin,
            "POST",
            "/api/keys",
            json!({"id": format!("k{i}"), "scopes": ["read"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{i}: {problem}");
    }
    let (status, problem) = call(
        &state,
        &admin,
        "POST",
        "/api/keys",
        json!({"id": "more", "scopes": ["read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let file: KeyFile =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("file")).expect("yaml");
    assert_eq!(file.keys.len(), bkg_gateway::keys::MAX_KEYS);
}

#[tokio::test]
async fn without_a_key_file_changes_are_409() {
    let dir = tempfile::tempdir().expect("dir");
    let supervisor = Supervisor::new(SupervisorConfig::new(
        "/nonexistent/plugin-runtime".into(),
        dir.path().to_path_buf(),
    ));
    let keys = KeyStore::load(None, Some(BOOTSTRAP)).expect("keys");
    let state = AppState::new(
        Config::default(),
        Arc::new(LocalBackend::new(supervisor)),
        Arc::new(keys),
    );
    let (status, list) = call(&state, BOOTSTRAP, "GET", "/api/keys", Value::Null).await;
    assert_eq!((status, ids(&list)), (StatusCode::OK, vec!["bootstrap"]));
    let (status, problem) = call(
        &state,
        BOOTSTRAP,
        "POST",
        "/api/keys",
        json!({"id": "ci", "scopes": ["read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
}

#[tokio::test]
async fn the_first_key_creates_the_file_and_its_folder() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("not-yet").join("keys.yaml");
    let supervisor = Supervisor::new(SupervisorConfig::new(
        "/nonexistent/plugin-runtime".into(),
        dir.path().to_path_buf(),
    ));
    let keys = KeyStore::load(Some(path.clone()), Some(BOOTSTRAP)).expect("keys");
    let state = AppState::new(
        Config::default(),
        Arc::new(LocalBackend::new(supervisor)),
        Arc::new(keys),
    );
    let (status, made) = call(
        &state,
        BOOTSTRAP,
        "POST",
        "/api/keys",
        json!({"id": "first", "scopes": ["read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only");
}
