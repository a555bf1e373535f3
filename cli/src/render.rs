//! `bkg render -f plugin.yaml`: what the operator would apply, printed instead of applied.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bkg_core::manifest::parse_documents;

use crate::operator::ImageArgs;

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Plugin manifest files or folders of them (`*.yaml`, `*.yml`); `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace to render into; overrides the manifests' (default: `default`).
    #[arg(short, long, env = "BKG_NAMESPACE")]
    namespace: Option<String>,
    #[command(flatten)]
    images: ImageArgs,
}

fn read_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            out.push(("<stdin>".to_owned(), text));
        } else if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            out.extend(read_sources(&files)?);
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((path.display().to_string(), text));
        }
    }
    Ok(out)
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let mut plugins = Vec::new();
    let mut failed = false;
    for (source, text) in read_sources(&args.files)? {
        for doc in parse_documents(&text) {
            match doc {
                Ok(plugin) => plugins.push(plugin),
                Err(e) => {
                    eprintln!("{source}: {e}");
                    failed = true;
                }
            }
        }
    }
    anyhow::ensure!(!failed, "refusing to render invalid manifests");
    let yaml = bkg_operator::k8s::render::render(
        &plugins,
        args.namespace.as_deref(),
        &args.images.images(),
    )?;
    print!("{yaml}");
    Ok(())
}
