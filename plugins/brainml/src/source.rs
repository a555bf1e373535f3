//! Where the ONNX file comes from: a path (a volume mounted into the pod, or the repository
//! under `bkg up`) or a file of a Hugging Face Hub repository, fetched into the HF cache.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// The model root: relative paths resolve against it (`BKG_MODEL_ROOT`, where the operator
/// mounts `resources.modelCache`), else against the working directory.
pub const MODEL_ROOT_ENV: &str = "BKG_MODEL_ROOT";

/// `model`: `{path}` or `{model_id, file, revision?}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ModelSource {
    /// An `.onnx` file on local disk; relative paths resolve against `BKG_MODEL_ROOT` when it
    /// is set, else the runtime's working directory (the repository under `make up`).
    Path { path: PathBuf },
    /// A file of a Hub repository, downloaded into the HF cache (`HF_HOME`); with
    /// `HF_HUB_OFFLINE=1`, only the cache is read.
    Hub {
        model_id: String,
        /// The `.onnx` file inside the repository, e.g. `model.onnx` or `onnx/model.onnx`.
        file: String,
        #[serde(default)]
        revision: Option<String>,
    },
}

impl ModelSource {
    /// A short name for logs, errors and `/v1/info`.
    pub fn display_name(&self) -> String {
        match self {
            Self::Path { path } => path.display().to_string(),
            Self::Hub { model_id, file, .. } => format!("{model_id}/{file}"),
        }
    }

    /// The local file, fetching it first for a Hub source. Blocking.
    pub fn materialize(&self) -> Result<PathBuf> {
        match self {
            Self::Path { path } => {
                let root = std::env::var_os(MODEL_ROOT_ENV).map(PathBuf::from);
                Ok(resolve(path, root.as_deref()))
            }
            Self::Hub {
                model_id,
                file,
                revision,
            } => {
                let revision = revision.clone().unwrap_or_else(|| "main".into());
                let repo = Repo::with_revision(model_id.clone(), RepoType::Model, revision.clone());
                let fail = |why: String| {
                    Error::Fetch(format!(
                        "cannot fetch {file} of {model_id}@{revision}: {why}"
                    ))
                };
                if hub_offline() {
                    return Cache::from_env().repo(repo).get(file).ok_or_else(|| {
                        fail("HF_HUB_OFFLINE is set and it is not in the HF cache".into())
                    });
                }
                let api = ApiBuilder::from_env()
                    .with_progress(false)
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                api.repo(repo).get(file).map_err(|e| fail(e.to_string()))
            }
        }
    }
}

/// `path`, against `root` when relative.
pub fn resolve(path: &Path, root: Option<&Path>) -> PathBuf {
    match root {
        Some(root) if path.is_relative() => root.join(path),
        _ => path.to_owned(),
    }
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it.
fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}
