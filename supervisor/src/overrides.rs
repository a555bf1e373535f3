//! API config changes that outlive `bkg up`: `POST /api/plugins/{id}/config` writes
//! `<plugins dir>/.bkg/overrides/<id>.config.json`, read again when the plugin's manifest is
//! first seen. The file records the manifest spec it was made against: a manifest that changed
//! since (edited while `bkg up` was down) wins and the file is removed, as a manifest edit drops
//! API overrides while running.

use std::path::{Path, PathBuf};

use bkg_core::PluginSpec;
use serde::{Deserialize, Serialize};

/// One override file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OverrideFile {
    /// The config the API set; the plugin runs with it in place of `spec.config`.
    config: serde_json::Value,
    /// The manifest spec when the config was set.
    manifest_spec: PluginSpec,
}

fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.config.json"))
}

/// Writes the override of `id` (atomically: a reader never sees half a file).
pub fn store(
    dir: &Path,
    id: &str,
    manifest_spec: &PluginSpec,
    config: &serde_json::Value,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(&OverrideFile {
        config: config.clone(),
        manifest_spec: manifest_spec.clone(),
    })
    .map_err(std::io::Error::other)?;
    let target = path(dir, id);
    let tmp = dir.join(format!(".{id}.config.json.tmp"));
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, &target)
}

/// The stored config of `id` when it was made against `manifest_spec`; a file made against
/// another manifest, or unreadable, is removed (and said so in the log).
pub fn load(dir: &Path, id: &str, manifest_spec: &PluginSpec) -> Option<serde_json::Value> {
    let file = path(dir, id);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read a config override");
            return None;
        }
    };
    match serde_json::from_str::<OverrideFile>(&text) {
        Ok(stored) if stored.manifest_spec == *manifest_spec => {
            tracing::info!(plugin = %id, file = %file.display(), "config from the API restored");
            Some(stored.config)
        }
        Ok(_) => {
            tracing::info!(plugin = %id, file = %file.display(), "the manifest changed since the config was set by the API: the manifest wins");
            remove(dir, id);
            None
        }
        Err(e) => {
            tracing::warn!(plugin = %id, file = %file.display(), error = %e, "unreadable config override removed");
            remove(dir, id);
            None
        }
    }
}

/// Forgets the override of `id` (a manifest edit dropped it).
pub fn remove(dir: &Path, id: &str) {
    match std::fs::remove_file(path(dir, id)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(plugin = %id, error = %e, "cannot remove a config override"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(greeting: &str) -> PluginSpec {
        serde_json::from_value(serde_json::json!({
            "implementation": "echo",
            "config": {"greeting": greeting},
        }))
        .expect("spec")
    }

    #[test]
    fn a_stored_config_comes_back_until_the_manifest_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let config = serde_json::json!({"greeting": "from the API"});
        store(dir.path(), "echo", &spec("hello"), &config).expect("store");
        assert_eq!(load(dir.path(), "echo", &spec("hello")), Some(config));
        assert_eq!(load(dir.path(), "other", &spec("hello")), None);
        // The manifest was edited meanwhile: it wins, and the file is gone for good.
        assert_eq!(load(dir.path(), "echo", &spec("edited")), None);
        assert!(!dir.path().join("echo.config.json").exists());
        assert_eq!(load(dir.path(), "echo", &spec("hello")), None);
    }

    #[test]
    fn an_unreadable_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("echo.config.json"), "{not json").expect("write");
        assert_eq!(load(dir.path(), "echo", &spec("hello")), None);
        assert!(!dir.path().join("echo.config.json").exists());
    }
}
