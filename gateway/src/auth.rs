//! API keys: scoped bearer tokens, stored only as SHA-256 hashes and compared in constant time.
//!
//! A key looks like `bkg_<40 base62 characters>` (about 238 bits of entropy), so a fast hash is
//! enough: there is nothing to brute-force. The key file (local mode) or mounted Secret (cluster
//! mode) holds `{id, hash, scopes}` entries (optionally `created_at` and `expires_at`, RFC 3339)
//! and is reloaded when it changes. `GET/POST/DELETE /api/keys` manage it through [`KeyStore`]
//! (`crate::keys`); when each key was last used is kept in memory only, so serving a request
//! never writes the file.
//!
//! | scope | allows |
//! |---|---|
//! | `read` | list and get plugins, telemetry, logs, WebSockets |
//! | `invoke` | invoke any capability that is not a management one; `invoke:<plugin>` or `invoke:<plugin>/<capability>` narrow it |
//! | `manage:<plugin>` | invoke the plugin's management capabilities (e.g. `model.load`, `model.unload`), which no invoke scope grants |
//! | `admin` | everything, including management capabilities, start, stop, restart and config |

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One permission a key carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Admin,
    Invoke {
        plugin: Option<String>,
        capability: Option<String>,
    },
    /// The management capabilities of one plugin.
    Manage {
        plugin: String,
    },
}

/// What the scope grammar accepts, for error messages.
const SCOPES: &str = "read, invoke, invoke:<plugin>[/<capability>], manage:<plugin> or admin";

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            "invoke" => Ok(Scope::Invoke {
                plugin: None,
                capability: None,
            }),
            other if other.starts_with("manage:") => {
                let plugin = &other["manage:".len()..];
                if plugin.is_empty() || plugin.contains('/') {
                    return Err(format!("scope {other:?} must be manage:<plugin>"));
                }
                Ok(Scope::Manage {
                    plugin: plugin.to_owned(),
                })
            }
            other => {
                let rest = other
                    .strip_prefix("invoke:")
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| format!("unknown scope {other:?}: use {SCOPES}"))?;
                let (plugin, capability) = match rest.split_once('/') {
                    Some((p, c)) if !p.is_empty() && !c.is_empty() => (p, Some(c.to_owned())),
                    Some(_) => {
                        return Err(format!(
                            "scope {other:?} must be invoke:<plugin>/<capability>"
                        ));
                    }
                    None => (rest, None),
                };
                Ok(Scope::Invoke {
                    plugin: Some(plugin.to_owned()),
                    capability,
                })
            }
        }
    }
}

/// One stored key: never the key itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyEntry {
    /// Public name of the key, used in logs and metrics.
    pub id: String,
    /// `sha256:<hex>` of the whole key.
    pub hash: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the key was made (RFC 3339); absent in files written before keys had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// After this instant (RFC 3339) the key is refused with 401; absent: it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Prompt plus completion tokens the key may use per minute (429 beyond); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

/// The key file: `keys: [ {id, hash, scopes}, … ]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct KeyFile {
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    /// The key's token limit (`crate::tokens`).
    pub tokens_per_minute: Option<u32>,
}

impl Principal {
    pub fn can_read(&self) -> bool {
        self.scopes
            .iter()
            .any(|s| matches!(s, Scope::Read | Scope::Admin))
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// May call some capability of `plugin`: a plain one or, with `manage:<plugin>`, a
    /// management one. Checked before the capability is known.
    pub fn can_call(&self, plugin: &str, capability: Option<&str>) -> bool {
        self.can_invoke(plugin, capability) || self.can_manage(plugin)
    }

    /// May invoke `capability` of `plugin` (or, with `None`, some capability of it) when it is
    /// not a management capability.
    pub fn can_invoke(&self, plugin: &str, capability: Option<&str>) -> bool {
        self.scopes.iter().any(|s| match s {
            Scope::Admin => true,
            Scope::Read | Scope::Manage { .. } => false,
            Scope::Invoke {
                plugin: p,
                capability: c,
            } => {
                p.as_deref().is_none_or(|p| p == plugin)
                    && match (c.as_deref(), capability) {
                        (None, _) | (Some(_), None) => true,
                        (Some(c), Some(want)) => c == want,
                    }
            }
        })
    }

    /// May invoke the management capabilities of `plugin`: `admin` or `manage:<plugin>`, never
    /// an invoke scope.
    pub fn can_manage(&self, plugin: &str) -> bool {
        self.scopes.iter().any(|s| match s {
            Scope::Admin => true,
            Scope::Manage { plugin: p } => p == plugin,
            Scope::Read | Scope::Invoke { .. } => false,
        })
    }

    /// Scope names as the key file spells them.
    pub fn scope_names(&self) -> Vec<String> {
        self.scopes
            .iter()
            .map(|s| match s {
                Scope::Read => "read".to_owned(),
                Scope::Admin => "admin".to_owned(),
                Scope::Invoke {
                    plugin: None,
                    capability: _,
                } => "invoke".to_owned(),
                Scope::Invoke {
                    plugin: Some(p),
                    capability: None,
                } => format!("invoke:{p}"),
                Scope::Invoke {
                    plugin: Some(p),
                    capability: Some(c),
                } => format!("invoke:{p}/{c}"),
                Scope::Manage { plugin } => format!("manage:{plugin}"),
            })
            .collect()
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A stored entry, compiled: its decoded hash, the principal it authenticates, its expiry and
/// when it was last used (Unix seconds, 0 for never; shared across reloads).
struct Compiled {
    hash: [u8; 32],
    principal: Arc<Principal>,
    expires: Option<Timestamp>,
    last_used: Arc<AtomicI64>,
    entry: KeyEntry,
}

struct Loaded {
    keys: Vec<Compiled>,
    modified: Option<SystemTime>,
}

/// The keys the gateway accepts; reloaded from its file when the file changes.
pub struct KeyStore {
    path: Option<PathBuf>,
    bootstrap: Option<KeyEntry>,
    loaded: RwLock<Loaded>,
    /// Serialises the API's writes of the key file (read, change, write, reload).
    pub(crate) writing: Mutex<()>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No stored key has this hash.
    Unknown,
    /// The key is known but its `expires_at` has passed.
    Expired { key_id: String, at: String },
}

/// What `GET /api/keys` shows of one key: never the key or its hash.
#[derive(Serialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Public name of the key.
    pub id: String,
    /// `read`, `invoke`, `invoke:<plugin>[/<capability>]`, `manage:<plugin>` or `admin`.
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was made (RFC 3339), if the key file says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When this gateway process last authenticated it (RFC 3339); kept in memory, so it
    /// starts empty after a restart and each gateway replica knows its own calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// After this the key is refused (RFC 3339); absent: it never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `expires_at` has passed.
    pub expired: bool,
    /// `file` (the key file, which the API edits) or `env` (BKG_API_KEY, which it cannot).
    pub source: String,
    /// Prompt plus completion tokens the key may use per minute; absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Tokens the key has used through this gateway process (generation capabilities, as the
    /// plugins report them); in memory, like `last_used_at`.
    pub usage: crate::tokens::Usage,
}

/// `sha256:<hex>` of a key.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn parse_hash(hash: &str) -> Option<[u8; 32]> {
    let hex = hash.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A new random key and its stored entry.
pub fn generate(id: &str, scopes: &[String]) -> Result<(String, KeyEntry), String> {
    for s in scopes {
        s.parse::<Scope>()?;
    }
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut secret = String::from("bkg_");
    let random = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let mut bits: u128 = 0;
    let mut bytes = random.iter().flat_map(|u| *u.as_bytes());
    while secret.len() < 44 {
        if bits < 62 {
            bits = bits
                .wrapping_mul(256)
                .wrapping_add(u128::from(bytes.next().unwrap_or(0)));
            bits = bits
                .wrapping_mul(256)
                .wrapping_add(u128::from(bytes.next().unwrap_or(0)));
            continue;
        }
        secret.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    let entry = KeyEntry {
        id: id.to_owned(),
        hash: hash_key(&secret),
        scopes: scopes.to_vec(),
        description: None,
        created_at: Some(now_rfc3339()),
        expires_at: None,
        tokens_per_minute: None,
    };
    Ok((secret, entry))
}

/// An RFC 3339 timestamp (`2026-01-31T12:00:00Z`, `…T12:00:00.5+02:00`), strictly: jiff alone
/// also takes other ISO 8601 spellings the OpenAPI `date-time` format does not.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let head_ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head_ok {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let zone_ok = matches!(rest, "Z" | "z")
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'
            && rest[1..3]
                .bytes()
                .chain(rest[4..6].bytes())
                .all(|d| d.is_ascii_digit()));
    if !zone_ok {
        return None;
    }
    text.parse().ok()
}

/// Now, to the second, as RFC 3339.
pub fn now_rfc3339() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn compile(
    entries: Vec<KeyEntry>,
    path: &Path,
    previous: &[Compiled],
) -> Result<Vec<Compiled>, KeyError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let invalid = |message: String| KeyError::Invalid {
                path: path.to_path_buf(),
                message: format!("keys[{i}] ({}): {message}", entry.id),
            };
            let hash = parse_hash(&entry.hash)
                .ok_or_else(|| invalid("hash must be sha256:<64 hex digits>".into()))?;
            let scopes = entry
                .scopes
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            let expires = match &entry.expires_at {
                None => None,
                Some(at) => Some(parse_rfc3339(at).ok_or_else(|| {
                    invalid(format!("expires_at {at:?} is not an RFC 3339 time"))
                })?),
            };
            let principal = Principal {
                key_id: entry.id.clone(),
                scopes,
                tokens_per_minute: entry.tokens_per_minute,
            };
            // The same key (same id and hash) keeps its last use across reloads.
            let last_used = previous
                .iter()
                .find(|c| c.hash == hash && c.entry.id == entry.id)
                .map_or_else(|| Arc::new(AtomicI64::new(0)), |c| c.last_used.clone());
            Ok(Compiled {
                hash,
                principal: Arc::new(principal),
                expires,
                last_used,
                entry,
            })
        })
        .collect()
}

fn read_file(path: &Path) -> Result<(Vec<KeyEntry>, Option<SystemTime>), KeyError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: KeyFile = serde_yaml::from_str(&text).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((file.keys, modified))
}

impl KeyStore {
    /// Keys from `path` (if given and present) plus an optional bootstrap admin key.
    pub fn load(path: Option<PathBuf>, bootstrap_key: Option<&str>) -> Result<Self, KeyError> {
        let bootstrap = bootstrap_key.map(|key| KeyEntry {
            id: "bootstrap".to_owned(),
            hash: hash_key(key),
            scopes: vec!["admin".to_owned()],
            description: Some("BKG_API_KEY".to_owned()),
            created_at: None,
            expires_at: None,
            tokens_per_minute: None,
        });
        let store = Self {
            path,
            bootstrap,
            loaded: RwLock::new(Loaded {
                keys: Vec::new(),
                modified: None,
            }),
            writing: Mutex::new(()),
        };
        store.reload()?;
        Ok(store)
    }

    /// Number of keys accepted.
    pub fn len(&self) -> usize {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again if it changed since the last load. A broken file keeps the old keys.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified
            == self
                .loaded
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .modified
        {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Reads the file now (the API's writes call this so a new key works at once).
    pub fn reload(&self) -> Result<(), KeyError> {
        let (entries, modified) = match &self.path {
            Some(path) if path.exists() => read_file(path)?,
            _ => (Vec::new(), None),
        };
        let mut all = entries;
        all.extend(self.bootstrap.clone());
        let path = self.path.as_deref().unwrap_or(Path::new("(keys)"));
        let keys = {
            let previous = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            compile(all, path, &previous.keys)?
        };
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded { keys, modified };
        Ok(())
    }

    /// The key file the API edits, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The id of the `BKG_API_KEY` key, which lives in no file.
    pub fn bootstrap_id(&self) -> Option<&str> {
        self.bootstrap.as_ref().map(|e| e.id.as_str())
    }

    /// The principal holding `token`, if any. Every stored hash is compared in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        self.check(token).ok()
    }

    /// The principal holding `token`, or why it is refused (unknown, or expired). A key that
    /// gets in has its last use noted (in memory: one atomic store per second at most).
    pub fn check(&self, token: &str) -> Result<Arc<Principal>, Refusal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for key in &loaded.keys {
            if bool::from(key.hash.ct_eq(&digest)) && found.is_none() {
                found = Some(key);
            }
        }
        let key = found.ok_or(Refusal::Unknown)?;
        let now = Timestamp::now();
        if let Some(at) = key.expires
            && at <= now
        {
            return Err(Refusal::Expired {
                key_id: key.entry.id.clone(),
                at: at.to_string(),
            });
        }
        let secs = now.as_second();
        if key.last_used.load(Ordering::Relaxed) != secs {
            key.last_used.store(secs, Ordering::Relaxed);
        }
        Ok(key.principal.clone())
    }

    /// Every key the gateway accepts (or accepted, for expired ones), in file order, the
    /// bootstrap key last. No key and no hash.
    pub fn list(&self) -> Vec<KeyInfo> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let now = Timestamp::now();
        // The bootstrap key is compiled last.
        let from_file = loaded.keys.len() - usize::from(self.bootstrap.is_some());
        loaded
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let last = k.last_used.load(Ordering::Relaxed);
                KeyInfo {
                    id: k.entry.id.clone(),
                    scopes: k.entry.scopes.clone(),
                    description: k.entry.description.clone(),
                    created_at: k.entry.created_at.clone(),
                    last_used_at: (last > 0)
                        .then(|| Timestamp::from_second(last).ok())
                        .flatten()
                        .map(|t| t.to_string()),
                    expires_at: k.entry.expires_at.clone(),
                    expired: k.expires.is_some_and(|at| at <= now),
                    source: if i < from_file { "file" } else { "env" }.to_owned(),
                    tokens_per_minute: k.entry.tokens_per_minute,
                    usage: crate::tokens::Usage::default(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_authenticate_with_their_scopes_only() {
        let (key, entry) =
            generate("ci", &["read".into(), "invoke:echo/echo".into()]).expect("key");
        assert!(key.starts_with("bkg_") && key.len() == 44, "{key}");
        assert!(!entry.hash.contains(&key[4..]));
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys.yaml");
        let file = KeyFile { keys: vec![entry] };
        std::fs::write(&path, serde_yaml::to_string(&file).expect("yaml")).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&key), "the key itself is never stored");
        let store = KeyStore::load(Some(path), None).expect("load");
        let who = store.authenticate(&key).expect("known key");
        assert_eq!(who.key_id, "ci");
        assert!(who.can_read());
        assert!(!who.is_admin());
        assert!(who.can_invoke("echo", Some("echo")));
        assert!(!who.can_invoke("echo", Some("sleep")));
        assert!(!who.can_invoke("candle", None));
        assert!(store.authenticate("bkg_wrong").is_none());
        assert!(store.authenticate(&key[..43]).is_none());
    }

    #[test]
    fn the_bootstrap_key_is_admin_and_files_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys.yaml");
        let store = KeyStore::load(Some(path.clone()), Some("s3cret-bootstrap-key")).expect("load");
        assert!(
            store
                .authenticate("s3cret-bootstrap-key")
                .is_some_and(|p| p.is_admin())
        );
        let (key, entry) = generate("late", &["read".into()]).expect("key");
        assert!(store.authenticate(&key).is_none());
        std::fs::write(
            &path,
            serde_yaml::to_string(&KeyFile { keys: vec![entry] }).expect("yaml"),
        )
        .expect("write");
        assert!(store.reload_if_changed().expect("reload"));
        assert_eq!(
            store.authenticate(&key).map(|p| p.key_id.clone()),
            Some("late".into())
        );
        std::fs::write(&path, "keys: [{id: x, hash: nope, scopes: [read]}]").expect("write");
        // Make sure the mtime moves even on coarse clocks.
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(later)
            .expect("mtime");
        let err = store.reload_if_changed().expect_err("broken file");
        assert!(err.to_string().contains("keys[0] (x)"), "{err}");
        assert!(
            store.authenticate(&key).is_some(),
            "a broken file keeps the old keys"
        );
    }

    #[test]
    fn scopes_parse_and_bad_ones_are_named() {
        assert_eq!("read".parse::<Scope>(), Ok(Scope::Read));
        assert_eq!(
            "invoke:candle/model.infer".parse::<Scope>(),
            Ok(Scope::Invoke {
                plugin: Some("candle".into()),
                capability: Some("model.infer".into())
            })
        );
        assert!(
            "write"
                .parse::<Scope>()
                .expect_err("unknown scope")
                .contains("write")
        );
        assert!("invoke:".parse::<Scope>().is_err());
        assert!("invoke:a/".parse::<Scope>().is_err());
        assert_eq!(
            "manage:candle".parse::<Scope>(),
            Ok(Scope::Manage {
                plugin: "candle".into()
            })
        );
        assert!("manage:".parse::<Scope>().is_err());
        assert!("manage:a/b".parse::<Scope>().is_err());
        assert!(
            "manage"
                .parse::<Scope>()
                .expect_err("no bare manage")
                .contains("manage:<plugin>")
        );
    }

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            key_id: "k".into(),
            scopes: scopes.iter().map(|s| s.parse().expect("scope")).collect(),
            tokens_per_minute: None,
        }
    }

    #[test]
    fn only_admin_and_manage_scopes_grant_management_capabilities() {
        for scopes in [
            &["invoke"][..],
            &["invoke:candle"],
            &["invoke:candle/model.unload"],
            &["read", "invoke"],
            &["manage:echo"],
        ] {
            let who = principal(scopes);
            assert!(!who.can_manage("candle"), "{scopes:?}");
        }
        for scopes in [
            &["admin"][..],
            &["manage:candle"],
            &["invoke:echo", "manage:candle"],
        ] {
            let who = principal(scopes);
            assert!(who.can_manage("candle"), "{scopes:?}");
        }
        let manager = principal(&["manage:candle"]);
        assert!(manager.can_call("candle", Some("model.unload")));
        assert!(
            !manager.can_invoke("candle", Some("model.infer")),
            "manage is not invoke"
        );
        assert!(!manager.can_call("echo", None));
        assert_eq!(manager.scope_names(), vec!["manage:candle".to_owned()]);
    }
}
