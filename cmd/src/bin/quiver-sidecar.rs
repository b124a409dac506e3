//! `quiver-sidecar`: the lean sidecar binary. `quiver-sidecar serve` takes the same flags as
//! `quiver serve`; `to: offline` pushes belong to the full `quiver` binary (501 here).

use std::process::ExitCode;

use clap::Parser;
use quiver_cmd::common::Logging;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// quiver's sidecar: Feast's online API from an in-process cache, beside a model.
#[derive(Debug, Parser)]
#[command(name = "quiver-sidecar", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    logging: Logging,

    #[command(flatten)]
    trust: quiver_cmd::common::TrustArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve Feast's online API (POST /get-online-features) from an in-process cache.
    Serve(quiver_cmd::serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.logging.init();
    if let Err(e) = cli.trust.install() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(args) => quiver_cmd::serve::run(args, None),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
