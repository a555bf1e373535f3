//! `/api/keys` (scope admin): list, create and revoke API keys.
//!
//! ```text
//!  POST /api/keys ─▶ validate ─▶ lock ─▶ read key file ─▶ add entry ─▶ write tmp, rename ─▶ reload
//!  DELETE /api/keys/{id} ───────────────────────────────▶ drop entry ─┘
//! ```
//!
//! The key file is the one the gateway already reloads (`--keys-file`, `.bkg/keys.yaml` for
//! `bkg up`), read afresh before each change so edits made by hand or by `bkg apikey create`
//! are kept. On a cluster that file is a Secret mounted read-only: a change is refused with 409
//! saying to edit the Secret with kubectl (the gateway has no RBAC to write Secrets, and its
//! replicas would each hold a different in-memory view until the kubelet synced the mount).
//!
//! Bounded so a fuzzer or a loop cannot grow the file without limit ([`MAX_KEYS`]); a key cannot
//! revoke itself, so a client cannot lock itself out by accident.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
#[allow(unused_imports)]
use serde_json::json;

use crate::AppState;
use crate::auth::{self, KeyFile, KeyInfo, KeyStore, Principal, Scope};
use crate::problem::ApiError;

/// Most keys the API lets the key file hold (a file edited by hand may hold more).
pub const MAX_KEYS: usize = 200;
/// Largest `tokens_per_minute` the API takes (the OpenAPI document says so too).
const MAX_TOKENS_PER_MINUTE: u32 = 1_000_000_000;
/// Most scopes one key may carry.
const MAX_SCOPES: usize = 32;

/// `POST /api/keys`: the key to make.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Public name of the key, unique: letters, digits, `.`, `_` and `-`.
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        min_length = 1,
        max_length = 64,
        example = "ci"
    )]
    pub id: String,
    /// `read`, `invoke`, `invoke:<plugin>[/<capability>]`, `manage:<plugin>` or `admin`.
    #[schema(value_type = Vec<ScopeName>, min_items = 1, max_items = 32, example = json!(["read", "invoke:echo"]))]
    pub scopes: Vec<String>,
    /// RFC 3339 time after which the key is refused (401); in the future. Absent: never.
    #[schema(format = DateTime, example = "2030-01-01T00:00:00Z")]
    #[serde(default)]
    pub expires_at: Option<String>,
    /// A note for people (who holds the key, what for).
    #[schema(max_length = 200)]
    #[serde(default)]
    pub description: Option<String>,
    /// Prompt plus completion tokens the key may use per minute (429 `rate_limit_exceeded`
    /// beyond, with Retry-After). Absent: no limit.
    #[schema(minimum = 1, maximum = 1_000_000_000, example = 10000)]
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

/// One scope, as the key file spells it.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^(read|admin|invoke(:[^/]+(/[\s\S]+)?)?|manage:[^/]+)$", example = "invoke:echo")]
#[allow(dead_code)]
pub struct ScopeName(String);

/// What `POST /api/keys` answers: the key itself, this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: String,
    /// The bearer token. Only its hash is stored: it is never shown again.
    pub key: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

#[utoipa::path(get, path = "/api/keys", tag = "keys",
    responses((status = 200, description = "Every key the gateway accepts (expired ones marked): never a key or its hash", body = Vec<KeyInfo>)))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<KeyInfo>> {
    let mut keys = state.keys.list();
    for key in &mut keys {
        key.usage = state.tokens.usage(&key.id);
    }
    Json(keys)
}

#[utoipa::path(post, path = "/api/keys", tag = "keys",
    request_body(content = CreateKey, description = "The key's id, scopes and optional expiry"),
    responses((status = 201, description = "Made and in force at once; the answer holds the key, which is never shown again", body = CreatedKey),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge)))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| ApiError::Body {
        status: rejection.status(),
        detail: rejection.body_text(),
    })?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the request body is not valid JSON: {e}")))?;
    let wanted: CreateKey = serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not a key: {e}")))?;
    let expires = validate(&wanted)?;
    let (secret, mut entry) =
        auth::generate(&wanted.id, &wanted.scopes).map_err(ApiError::BadRequest)?;
    entry.expires_at = expires;
    entry.description = wanted.description.filter(|d| !d.is_empty());
    entry.tokens_per_minute = wanted.tokens_per_minute;
    if state.keys.bootstrap_id() == Some(entry.id.as_str()) {
        return Err(taken(&entry.id));
    }
    let made = entry.clone();
    edit(&state.keys, move |file| {
        if file.keys.iter().any(|k| k.id == entry.id) {
            return Err(taken(&entry.id));
        }
        if file.keys.len() >= MAX_KEYS {
            return Err(ApiError::Conflict(format!(
                "the key file holds {} keys, the most the API adds ({MAX_KEYS}): revoke some first",
                file.keys.len()
            )));
        }
        file.keys.push(entry);
        Ok(())
    })?;
    tracing::info!(key_id = %made.id, scopes = ?made.scopes, "API key created");
    let created = CreatedKey {
        id: made.id,
        key: secret,
        scopes: made.scopes,
        created_at: made.created_at.unwrap_or_default(),
        expires_at: made.expires_at,
        tokens_per_minute: made.tokens_per_minute,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id", example = "ci")),
    responses((status = 204, description = "Revoked: refused from now on"),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict)))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let known = state.keys.list().into_iter().find(|k| k.id == id);
    let Some(known) = known else {
        return Err(ApiError::UnknownKey(id));
    };
    if id == who.key_id {
        return Err(ApiError::Conflict(format!(
            "key {id:?} is the key making this call, and a key cannot revoke itself: use another admin key"
        )));
    }
    if known.source != "file" {
        return Err(ApiError::Conflict(format!(
            "key {id:?} comes from BKG_API_KEY, not the key file: unset it and restart to retire it"
        )));
    }
    edit(&state.keys, |file| {
        let before = file.keys.len();
        file.keys.retain(|k| k.id != id);
        if file.keys.len() == before {
            return Err(ApiError::UnknownKey(id.clone()));
        }
        Ok(())
    })?;
    tracing::info!(key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn taken(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "a key with id {id:?} exists: pick another id, or revoke that key first"
    ))
}

/// Checks what the OpenAPI schema cannot say (and what it can, for clients that ignore it);
/// returns the expiry as RFC 3339.
fn validate(wanted: &CreateKey) -> Result<Option<String>, ApiError> {
    let id = &wanted.id;
    let id_ok = (1..=64).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !id_ok {
        return Err(ApiError::BadRequest(format!(
            "id {id:?} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    if wanted
        .tokens_per_minute
        .is_some_and(|t| !(1..=MAX_TOKENS_PER_MINUTE).contains(&t))
    {
        return Err(ApiError::BadRequest(format!(
            "tokens_per_minute must be 1 to {MAX_TOKENS_PER_MINUTE} (leave it out for no limit)"
        )));
    }
    if wanted.scopes.is_empty() || wanted.scopes.len() > MAX_SCOPES {
        return Err(ApiError::BadRequest(format!(
            "scopes must list 1 to {MAX_SCOPES} scopes"
        )));
    }
    for s in &wanted.scopes {
        s.parse::<Scope>().map_err(ApiError::BadRequest)?;
    }
    if wanted
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 200)
    {
        return Err(ApiError::BadRequest(
            "description must be at most 200 characters".into(),
        ));
    }
    let Some(at) = &wanted.expires_at else {
        return Ok(None);
    };
    let when = auth::parse_rfc3339(at).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "expires_at {at:?} is not an RFC 3339 time such as 2030-01-01T00:00:00Z"
        ))
    })?;
    if when <= k8s_openapi::jiff::Timestamp::now() {
        return Err(ApiError::BadRequest(format!(
            "expires_at {at:?} is not in the future"
        )));
    }
    Ok(Some(when.to_string()))
}

/// Reads the key file, applies `change`, writes it back atomically (owner-only) and reloads the
/// store, one change at a time.
fn edit(
    store: &KeyStore,
    change: impl FnOnce(&mut KeyFile) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let Some(path) = store.path() else {
        return Err(ApiError::Conflict(
            "this gateway has no key file (only BKG_API_KEY): pass --keys-file to manage keys through the API".into(),
        ));
    };
    let _one_at_a_time = store.writing.lock().unwrap_or_else(|e| e.into_inner());
    let mut file: KeyFile = match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text).map_err(|e| {
            ApiError::Conflict(format!(
                "the key file {} is not valid ({e}): fix it by hand first",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::default(),
        Err(e) => return Err(io_error(path, e)),
    };
    change(&mut file)?;
    let text = serde_yaml::to_string(&file).map_err(|e| ApiError::Internal(e.to_string()))?;
    write_private(path, &text).map_err(|e| io_error(path, e))?;
    store
        .reload()
        .map_err(|e| ApiError::Internal(format!("the key file was written but not reloaded: {e}")))
}

/// Writes `text` to a temporary file beside `path` (mode 0600), then renames it over `path`, so
/// the reloader never reads half a file.
fn write_private(path: &FsPath, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map_or_else(|| "keys".into(), |n| n.to_string_lossy().into_owned());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn io_error(path: &FsPath, e: std::io::Error) -> ApiError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => ApiError::Conflict(format!(
            "the key file {} is read-only here ({e}): on a cluster the keys are managed by the Secret it is mounted from; edit it with kubectl (docs/HELM.md)",
            path.display()
        )),
        _ => ApiError::Internal(format!("cannot write the key file {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_key_file_is_a_409_naming_the_secret() {
        let path = FsPath::new("/etc/bkg/keys/keys.yaml");
        for kind in [
            std::io::ErrorKind::ReadOnlyFilesystem,
            std::io::ErrorKind::PermissionDenied,
        ] {
            let e = io_error(path, std::io::Error::from(kind));
            assert_eq!(e.status(), StatusCode::CONFLICT);
            let detail = e.to_string();
            assert!(
                detail.contains("Secret") && detail.contains("kubectl"),
                "{detail}"
            );
        }
        let other = io_error(path, std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
