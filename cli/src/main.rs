//! The `quiver` binary: parses the command line and hands over to the library crates.

use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use quiver_cmd::common::Logging;
use quiver_sidecar::push::OfflineWriter;

mod apply;
mod demo;
mod historical;
mod inject;
mod list;
mod materialize;
mod offline;
mod registry;
mod shards;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// quiver: a Feast-compatible feature store built around a sidecar.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about, propagate_version = true)]
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
    Serve(quiver_cmd::serve::Args),
    /// Kubernetes: the sidecar injector webhook (`quiver inject serve`).
    Inject(inject::Args),
    /// The central registry service (`quiver registry serve --store URI`).
    Registry(registry::Args),
}

/// `to: offline` pushes: appended as Parquet to the push source's batch source. The full binary's
/// part of `serve` (the lean `quiver-sidecar` has no Parquet writer).
struct ParquetPush(Arc<quiver_offline::append::ParquetAppender>);

impl ParquetPush {
    fn for_repo(repo_dir: &std::path::Path) -> Arc<dyn OfflineWriter> {
        Arc::new(ParquetPush(quiver_offline::append::ParquetAppender::new(
            repo_dir,
        )))
    }
}

impl OfflineWriter for ParquetPush {
    fn append(
        &self,
        source_uri: &str,
        s3_endpoint_override: &str,
        columns: &[(String, Vec<serde_json::Value>)],
        rows: usize,
        hints: &[(String, Option<quiver_core::ValueType>)],
    ) -> Result<String, quiver_sidecar::push::OfflineWriteError> {
        use quiver_offline::append::ColumnKind;
        let hints: Vec<(String, ColumnKind)> = hints
            .iter()
            .map(|(c, t)| (c.clone(), t.map_or(ColumnKind::Time, ColumnKind::Value)))
            .collect();
        self.0
            .append(source_uri, s3_endpoint_override, columns, rows, &hints)
            .map_err(|e| quiver_sidecar::push::OfflineWriteError {
                kind: quiver_core::fault::Classified::kind(&e),
                message: e.public_message(),
                detail: e.message(),
            })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.logging.init();
    if let Err(e) = cli.trust.install() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Apply(args) => apply::run(args),
        Command::Demo(args) => demo::run(args),
        Command::List(args) => list::run(args),
        Command::Materialize(args) => materialize::run_range(args),
        Command::MaterializeIncremental(args) => materialize::run_incremental(args),
        Command::Historical(args) => historical::run(args),
        Command::Offline(args) => offline::run(args),
        Command::Serve(args) => quiver_cmd::serve::run(
            args,
            Some(quiver_cmd::serve::OfflineParts {
                writer: ParquetPush::for_repo,
                materializer: materialize::ServeMaterializer::for_serve,
            }),
        ),
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
