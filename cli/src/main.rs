//! `bkg`: the composition root. Parses arguments and wires the crates together; no logic lives
//! here that a library crate could own.

#![forbid(unsafe_code)]

mod apikey;
mod gateway;
mod operator;
mod process;
mod render;
mod up;

use clap::{Parser, Subcommand};

/// The gateway allocates per request (headers, JSON, spans) from many tokio workers at once;
/// glibc malloc's arena locks showed up in its profile, mimalloc's thread-local heaps do not.
/// (The plugin runtime keeps glibc malloc: the Candle plugin tunes it with mallopt.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bkg runs ML plugins as managed processes or pods behind one secure gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the local stack: every Plugin manifest in a folder as supervised processes, behind the
    /// gateway.
    Up(up::UpArgs),
    /// Print the Plugin CustomResourceDefinition as YAML.
    Crd,
    /// Print the gateway's OpenAPI 3.1 document (also served at /api/openapi.json).
    Openapi,
    /// Run the Kubernetes operator: reconcile Plugin resources into Deployments and Services.
    Operator(operator::OperatorArgs),
    /// Print, as multi-document YAML, the objects the operator would apply for Plugin manifests.
    Render(render::RenderArgs),
    /// Run the gateway alone in front of a backend (`--backend kubernetes`).
    Gateway(gateway::GatewayArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Apikey(apikey::ApiKeyCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", bkg_core::crd_yaml());
            Ok(())
        }
        Command::Openapi => {
            println!("{}", bkg_gateway::openapi::document());
            Ok(())
        }
        Command::Up(args) => up::run(args),
        Command::Operator(args) => operator::run(args),
        Command::Render(args) => render::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Apikey(command) => apikey::run(command),
    }
}
