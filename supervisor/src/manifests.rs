//! Keeps the supervisor in step with a folder of Plugin manifests (hot-swap).
//!
//! The folder is rescanned on an interval; a file whose bytes changed is parsed again. Polling
//! (rather than inotify) sees editors' rename-on-save and network filesystems alike, and a scan of
//! a few files costs microseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bkg_core::Plugin;
use bkg_core::manifest::{self, ManifestError};

use super::{Supervisor, env};

/// What was last read from one file.
#[derive(Debug, Default)]
struct FileState {
    hash: u64,
    /// Ids this file defined in its last readable version.
    ids: BTreeSet<String>,
}

/// A folder of manifests and what the supervisor was told about it.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

/// One problem found while scanning, for the terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanError {
    pub file: PathBuf,
    pub message: String,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    /// Reads the folder once and applies what changed. Returns the problems found in changed
    /// files; unchanged files are not re-reported.
    pub fn scan(&mut self, supervisor: &Supervisor) -> Vec<ScanError> {
        let mut errors = Vec::new();
        let paths = match manifest_files(&self.dir) {
            Ok(paths) => paths,
            Err(e) => {
                errors.push(ScanError {
                    file: self.dir.clone(),
                    message: format!("cannot read the manifest folder: {e}"),
                });
                return errors;
            }
        };
        // Ids claimed by files earlier in name order win over later duplicates.
        let mut owner: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (path, state) in &self.files {
            if paths.contains(path) {
                for id in &state.ids {
                    owner.entry(id.clone()).or_insert_with(|| path.clone());
                }
            }
        }
        for path in &paths {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let hash = {
                let mut h = DefaultHasher::new();
                text.hash(&mut h);
                h.finish()
            };
            if self.files.get(path).is_some_and(|s| s.hash == hash) {
                continue;
            }
            let previous = self.files.remove(path).unwrap_or_default();
            let mut ids = BTreeSet::new();
            for doc in manifest::parse_documents(&text) {
                match doc.and_then(resolvable) {
                    Ok(plugin) => {
                        let id = plugin.id().to_owned();
                        if let Some(other) = owner.get(&id).filter(|o| *o != path) {
                            errors.push(ScanError {
                                file: path.clone(),
                                message: format!(
                                    "plugin {id:?} is already defined in {}; ignored here",
                                    other.display()
                                ),
                            });
                            continue;
                        }
                        owner.insert(id.clone(), path.clone());
                        ids.insert(id);
                        supervisor.apply(plugin);
                    }
                    Err(e) => {
                        let message = format!("{}: {e}", path.display());
                        // A file that is not YAML (or has no readable name) is shown under
                        // its file name, so the mistake is on a card and not only here.
                        let id = e.name.clone().or_else(|| {
                            path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
                        });
                        if let Some(id) =
                            id.as_deref().filter(|id| manifest::validate_id(id).is_ok())
                        {
                            // Keep the last valid version running; show the mistake on the plugin.
                            if previous.ids.contains(id) || !owner.contains_key(id) {
                                ids.insert(id.to_owned());
                                owner.insert(id.to_owned(), path.clone());
                                supervisor.report_invalid(id, message.clone());
                            }
                        }
                        errors.push(ScanError {
                            file: path.clone(),
                            message,
                        });
                    }
                }
            }
            for gone in previous.ids.difference(&ids) {
                supervisor.remove(gone);
            }
            self.files.insert(path.clone(), FileState { hash, ids });
        }
        let removed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !paths.contains(*p))
            .cloned()
            .collect();
        for path in removed {
            if let Some(state) = self.files.remove(&path) {
                for id in state.ids {
                    if owner.get(&id).is_none_or(|o| *o == path) {
                        supervisor.remove(&id);
                    }
                }
            }
        }
        errors
    }

    /// Rescans every `interval` until `stop` turns true, logging problems as they appear.
    pub async fn watch(
        mut self,
        supervisor: Supervisor,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for e in self.scan(&supervisor) {
                tracing::error!(file = %e.file.display(), "{}", e.message);
            }
        }
    }
}

/// A manifest is refused locally, like a schema error, when its `spec.implementation` is not
/// one the local plugin-runtime has (a cluster may run other implementations in an image of
/// their own, `spec.image`), or a `spec.env` reference it needs cannot be resolved from
/// `bkg up`'s environment ([`env::resolve`]); the last valid version keeps running.
fn resolvable(plugin: Plugin) -> Result<Plugin, ManifestError> {
    let implementation = &plugin.spec.implementation;
    if bkg_core::plugin_config::schema(implementation).is_none() {
        let known: Vec<_> = bkg_core::plugin_config::implementations().collect();
        return Err(ManifestError {
            name: Some(plugin.id().to_owned()),
            errors: vec![bkg_core::wire::FieldError {
                field: "spec.implementation".to_owned(),
                message: format!(
                    "unknown implementation {implementation:?}: the local plugin-runtime runs {}",
                    known.join(", ")
                ),
            }],
        });
    }
    match env::resolve(&plugin.spec.env, |name| std::env::var(name).ok()) {
        Ok(_) => Ok(plugin),
        Err(errors) => Err(ManifestError {
            name: Some(plugin.id().to_owned()),
            errors,
        }),
    }
}

/// `*.yaml`, `*.yml` and `*.json` files directly in `dir`, in name order.
fn manifest_files(dir: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_manifest && !hidden && path.is_file() {
            out.insert(path);
        }
    }
    Ok(out)
}
