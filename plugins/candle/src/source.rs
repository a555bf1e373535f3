//! Turning a [`ModelSource`] into a local model directory (and a GGUF file, when it names one).
//!
//! Hub models are fetched file by file into the standard HF cache (`HF_HOME`, layout shared
//! with Python's `huggingface_hub`), so a cache warmed by either side serves both. With
//! `HF_HUB_OFFLINE=1` only the cache is consulted.

use std::path::{Path, PathBuf};

use hf_hub::api::Progress;
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::artifacts::{self, DEFAULT_POOLING_CONFIG};
use crate::config::ModelSource;
use crate::error::{Error, Result};

const DEFAULT_REVISION: &str = "main";

/// A model's files on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The Hugging Face layout directory; with a GGUF, the one holding the tokenizer files.
    pub dir: PathBuf,
    /// The `.gguf` file to generate with, when the source names one.
    pub gguf: Option<PathBuf>,
}

/// Returns the model's files, downloading them if needed. Blocking.
/// Reads `HF_HOME` and `HF_HUB_OFFLINE` from the environment.
pub fn materialize(source: &ModelSource) -> Result<ModelFiles> {
    materialize_with(source, Cache::from_env(), hub_offline())
}

/// [`materialize`] with an explicit cache and offline switch (tests, tools).
pub fn materialize_with(source: &ModelSource, cache: Cache, offline: bool) -> Result<ModelFiles> {
    match source {
        ModelSource::Path { path, gguf_file } => Ok(ModelFiles {
            dir: path.clone(),
            gguf: gguf_file.as_ref().map(|f| path.join(f)),
        }),
        ModelSource::Hub {
            model_id,
            revision,
            gguf_file,
            tokenizer_id,
        } => {
            let repo = |id: &str, revision: Option<&String>| HubRepo {
                model_id: id.to_owned(),
                revision: revision
                    .cloned()
                    .unwrap_or_else(|| DEFAULT_REVISION.to_owned()),
                cache: cache.clone(),
                offline,
            };
            let weights = repo(model_id.as_str(), revision.as_ref());
            let Some(file) = gguf_file else {
                return Ok(ModelFiles {
                    dir: weights.fetch_all()?,
                    gguf: None,
                });
            };
            let gguf = weights.fetch(file)?;
            // Another repository's tokenizer comes from its default branch: the revision
            // belongs to the GGUF repository.
            let dir = match tokenizer_id {
                Some(id) => repo(id.as_str(), None).fetch_tokenizer()?,
                None => weights.fetch_tokenizer()?,
            };
            Ok(ModelFiles {
                dir,
                gguf: Some(gguf),
            })
        }
    }
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

struct HubRepo {
    model_id: String,
    revision: String,
    cache: Cache,
    offline: bool,
}

impl HubRepo {
    fn error(&self, file: &str, message: impl Into<String>) -> Error {
        Error::Hub {
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            file: file.to_owned(),
            message: message.into(),
        }
    }

    /// Fetches the required files, then the optional sentence-transformers ones, and returns
    /// the snapshot directory they share.
    fn fetch_all(&self) -> Result<PathBuf> {
        tracing::info!(model_id = %self.model_id, revision = %self.revision, offline = self.offline, "fetching model");
        let config = self.fetch(artifacts::CONFIG)?;
        self.fetch(artifacts::TOKENIZER)?;
        self.fetch(artifacts::WEIGHTS)?;
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| self.error(artifacts::CONFIG, "cached file has no parent directory"))?;
        for file in [
            artifacts::MODULES,
            artifacts::SENTENCE_CONFIG,
            artifacts::TOKENIZER_CONFIG,
            // Causal language models: EOS ids and a chat template kept apart from the config.
            artifacts::GENERATION_CONFIG,
            artifacts::CHAT_TEMPLATE,
        ] {
            self.fetch_optional(file);
        }
        let pooling =
            artifacts::pooling_config_path(&dir)?.unwrap_or_else(|| DEFAULT_POOLING_CONFIG.into());
        self.fetch_optional(&pooling);
        Ok(dir)
    }

    /// Only what a GGUF model needs beside its weights: the tokenizer, its config (chat
    /// template) and the generation config (EOS ids).
    fn fetch_tokenizer(&self) -> Result<PathBuf> {
        tracing::info!(model_id = %self.model_id, revision = %self.revision, offline = self.offline, "fetching tokenizer");
        let tokenizer = self.fetch(artifacts::TOKENIZER)?;
        for file in [
            artifacts::TOKENIZER_CONFIG,
            artifacts::GENERATION_CONFIG,
            artifacts::CHAT_TEMPLATE,
        ] {
            self.fetch_optional(file);
        }
        tokenizer
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| self.error(artifacts::TOKENIZER, "cached file has no parent directory"))
    }

    fn fetch_optional(&self, file: &str) {
        if let Err(e) = self.fetch(file) {
            tracing::debug!(file, error = %e, "optional model file not available");
        }
    }

    fn fetch(&self, file: &str) -> Result<PathBuf> {
        if let Some(path) = self.cached(file) {
            return Ok(path);
        }
        if self.offline {
            return Err(self.error(
                file,
                format!(
                    "HF_HUB_OFFLINE is set and the file is not in the HF cache at {}",
                    self.cache.path().display()
                ),
            ));
        }
        let api = ApiBuilder::from_cache(self.cache.clone())
            .with_progress(false)
            .build()
            .map_err(|e| self.error(file, e.to_string()))?;
        let repo = api.repo(Repo::with_revision(
            self.model_id.clone(),
            RepoType::Model,
            self.revision.clone(),
        ));
        repo.download_with_progress(file, LogProgress::default())
            .map_err(|e| self.error(file, e.to_string()))
    }

    /// The file in the local snapshot of the revision (a branch name via `refs/`, or a commit).
    fn cached(&self, file: &str) -> Option<PathBuf> {
        let repo_dir = self
            .cache
            .path()
            .join(Repo::new(self.model_id.clone(), RepoType::Model).folder_name());
        let is_commit =
            self.revision.len() == 40 && self.revision.chars().all(|c| c.is_ascii_hexdigit());
        let commit = if is_commit {
            self.revision.clone()
        } else {
            std::fs::read_to_string(repo_dir.join("refs").join(&self.revision))
                .ok()?
                .trim()
                .to_owned()
        };
        let path = repo_dir.join("snapshots").join(commit).join(file);
        path.is_file().then_some(path)
    }
}

/// Logs download progress at every tenth, so a slow first start is visible in the pod log.
#[derive(Default)]
struct LogProgress {
    file: String,
    total: usize,
    done: usize,
    next_tenth: usize,
}

impl Progress for LogProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_owned();
        self.total = size;
        self.next_tenth = 1;
        tracing::info!(file = filename, bytes = size, "downloading");
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        if self.total > 0 && self.done * 10 >= self.next_tenth * self.total {
            tracing::info!(file = %self.file, percent = self.done * 100 / self.total, "download progress");
            self.next_tenth = self.done * 10 / self.total + 1;
        }
    }

    fn finish(&mut self) {
        tracing::info!(file = %self.file, bytes = self.done, "downloaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_lookup_misses_cleanly_in_an_empty_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = HubRepo {
            model_id: "org/model".into(),
            revision: "main".into(),
            cache: Cache::new(tmp.path().join("hub")),
            offline: true,
        };
        assert_eq!(repo.cached("config.json"), None);
        let err = repo.fetch_all().unwrap_err().to_string();
        assert!(
            err.contains("HF_HUB_OFFLINE") && err.contains("org/model"),
            "{err}"
        );
    }

    #[test]
    fn a_gguf_comes_from_its_repo_and_the_tokenizer_from_tokenizer_id() {
        let tmp = tempfile::tempdir().unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        for (repo, file) in [
            ("models--org--m-GGUF", "m-q8_0.gguf"),
            ("models--org--m", "tokenizer.json"),
        ] {
            let root = tmp.path().join("hub").join(repo);
            std::fs::create_dir_all(root.join("refs")).unwrap();
            std::fs::create_dir_all(root.join("snapshots").join(sha)).unwrap();
            std::fs::write(root.join("refs/main"), sha).unwrap();
            std::fs::write(root.join("snapshots").join(sha).join(file), "x").unwrap();
        }
        let source = |tokenizer_id: Option<&str>| ModelSource::Hub {
            model_id: "org/m-GGUF".into(),
            revision: None,
            gguf_file: Some("m-q8_0.gguf".into()),
            tokenizer_id: tokenizer_id.map(Into::into),
        };
        let files = materialize_with(
            &source(Some("org/m")),
            Cache::new(tmp.path().join("hub")),
            true,
        )
        .unwrap();
        assert!(files.gguf.unwrap().ends_with("m-q8_0.gguf"));
        assert!(files.dir.join("tokenizer.json").is_file());
        // Without tokenizer_id the GGUF repository must hold the tokenizer, and says so.
        let err = materialize_with(&source(None), Cache::new(tmp.path().join("hub")), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("org/m-GGUF"),
            "{err}"
        );
    }

    #[test]
    fn offline_lookup_follows_refs_into_snapshots() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("hub/models--org--model");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::create_dir_all(root.join("snapshots").join(sha)).unwrap();
        std::fs::write(root.join("refs/main"), sha).unwrap();
        std::fs::write(root.join("snapshots").join(sha).join("config.json"), "{}").unwrap();
        let repo = |rev: &str| HubRepo {
            model_id: "org/model".into(),
            revision: rev.into(),
            cache: Cache::new(tmp.path().join("hub")),
            offline: true,
        };
        assert!(repo("main").cached("config.json").is_some());
        assert!(repo(sha).cached("config.json").is_some());
        assert!(repo("main").cached("tokenizer.json").is_none());
    }
}
