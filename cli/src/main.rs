//! The `quiver` binary: parses the command line and hands over to the library crates.

use std::process::ExitCode;

use clap::Parser;

mod apply;
mod demo;
mod historical;
mod inject;
mod list;
mod materialize;
mod offline;
mod registry;
mod registry_io;
mod serve;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// quiver: a Feast-compatible feature store built around a sidecar.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "QUIVER_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// See quiver do its job end to end on the embedded default: a repo, apply, a training
    /// dataset, materialize into SQLite, the sidecar answering, a short load. Needs nothing
    /// installed or running.
    Demo(demo::Args),
    /// Validate the repo's YAML definitions and write them to its registry (like `feast apply`).
    Apply(apply::Args),
    /// List the objects a repo's registry holds for its project.
    List(list::Args),
    /// Load the latest source row per entity in [START, END] into the online store (like
    /// `feast materialize`), then record the interval in the registry.
    Materialize(materialize::RangeArgs),
    /// Materialize from each view's last recorded end up to END (like
    /// `feast materialize-incremental`).
    MaterializeIncremental(materialize::IncrementalArgs),
    /// Build a point-in-time-correct training dataset from the repo's file sources (like Feast's
    /// get_historical_features).
    Historical(historical::Args),
    /// The offline server: `quiver offline serve` (Arrow Flight for Feast clients, HTTP).
    Offline(offline::Args),
    /// Serve Feast's online API (POST /get-online-features) from an in-process cache: the sidecar.
    Serve(serve::Args),
    /// Kubernetes: the sidecar injector webhook (`quiver inject serve`).
    Inject(inject::Args),
    /// The central registry service (`quiver registry serve --store URI`).
    Registry(registry::Args),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Apply(args) => apply::run(args),
        Command::Demo(args) => demo::run(args),
        Command::List(args) => list::run(args),
        Command::Materialize(args) => materialize::run_range(args),
        Command::MaterializeIncremental(args) => materialize::run_incremental(args),
        Command::Historical(args) => historical::run(args),
        Command::Offline(args) => offline::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Registry(args) => registry::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
