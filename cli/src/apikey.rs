//! `bkg apikey create`: makes a key, prints it once, and stores only its hash.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bkg_gateway::auth::{self, KeyFile};

#[derive(clap::Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create a key; prints the key (once) and its hashed entry.
    Create(CreateArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Scopes, comma-separated: read, invoke, invoke:<plugin>[/<capability>], manage:<plugin>
    /// (the plugin's management capabilities, e.g. model.load), admin.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// Public name of the key (shown in logs and metrics).
    #[arg(long, default_value = "key")]
    id: String,
    /// RFC 3339 time after which the gateway refuses the key (401), e.g. 2030-01-01T00:00:00Z.
    #[arg(long)]
    expires_at: Option<String>,
    /// Prompt plus completion tokens the key may use per minute (429 beyond); none: no limit.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    tokens_per_minute: Option<u32>,
    /// Append the hashed entry to this key file (created if missing).
    #[arg(long, env = "BKG_KEYS_FILE")]
    keys_file: Option<PathBuf>,
}

pub fn run(command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let (key, mut entry) = auth::generate(&args.id, &args.scopes).map_err(anyhow::Error::msg)?;
    if let Some(at) = &args.expires_at {
        let when = auth::parse_rfc3339(at).with_context(|| {
            format!("--expires-at {at:?} is not an RFC 3339 time such as 2030-01-01T00:00:00Z")
        })?;
        entry.expires_at = Some(when.to_string());
    }
    entry.tokens_per_minute = args.tokens_per_minute;
    println!("API key (shown once, store it now): {key}");
    println!("key file entry:");
    print!(
        "{}",
        serde_yaml::to_string(&KeyFile {
            keys: vec![entry.clone()]
        })?
    );
    if let Some(path) = args.keys_file {
        append(&path, entry)?;
        println!("appended to {}", path.display());
    }
    Ok(())
}

/// Adds an entry to a key file, replacing an entry with the same id.
pub fn append(path: &Path, entry: auth::KeyEntry) -> anyhow::Result<()> {
    let mut file: KeyFile = match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a key file", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    file.keys.retain(|k| k.id != entry.id);
    file.keys.push(entry);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&file)?)?;
    set_private(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Hashes are not secrets, but the file decides who gets in: owner-only.
fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
