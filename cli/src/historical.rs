//! `quiver historical`: a point-in-time-correct training dataset from the repo's file sources
//! (Feast's `get_historical_features`), written to a file or stdout. With `offline_store: {type:
//! spark}` the join runs on Spark (quiver_offline::spark).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quiver_core::registry::ProjectRegistry;
use quiver_offline::historical::{EngineOptions, Features, HistoricalEngine};
use quiver_offline::on_demand::{TransformClient, TransformConfig, select_with_on_demand};
use quiver_offline::output::{Output, write_stream};
use quiver_registry::config::RepoConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature repo (its feature_store.yaml names the registry).
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// The entity table: .parquet, .csv or .arrow; join keys and an event_timestamp column. A
    /// local file, or in S3 or GCS (`s3://bucket/entities.parquet`, or a prefix of part files
    /// ending in `/`).
    #[arg(
        long,
        required_unless_present = "entities_sql",
        conflicts_with = "entities_sql"
    )]
    entities: Option<String>,
    /// With `offline_store: type: spark`: the entity rows are a Spark SQL query that Spark runs
    /// where the data is, instead of a file quiver reads and uploads: a table is
    /// `SELECT * FROM db.entities`, Parquet files ``SELECT * FROM parquet.`s3a://bucket/entities/` ``.
    /// Rows keep the order Spark reads them in.
    #[arg(long)]
    entities_sql: Option<String>,
    /// Features as view:feature, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "feature_service",
        conflicts_with = "feature_service"
    )]
    features: Vec<String>,
    /// A feature service instead of --features.
    #[arg(long)]
    feature_service: Option<String>,
    /// Name feature columns view__feature.
    #[arg(long)]
    full_feature_names: bool,
    /// Memory for sorts and joins (e.g. 2GiB, 512MiB, 2G); past it they spill to disk.
    #[arg(long, value_parser = quiver_core::size::parse_nonzero_bytes)]
    memory_limit: Option<usize>,
    /// Directory for spill files (default: the system temp dir).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Parallel partitions (default: four per core).
    #[arg(long)]
    partitions: Option<usize>,
    /// Where to write: .parquet, .csv or .arrow, a local file or an object in S3 or GCS
    /// (`s3://bucket/training.parquet`, uploaded when complete); `-` writes an Arrow IPC stream
    /// to stdout.
    #[arg(
        long,
        required_unless_present = "spark_out",
        conflicts_with = "spark_out"
    )]
    out: Option<String>,
    /// With `offline_store: type: spark`: Spark writes the output itself, as Parquet, and the rows
    /// never pass through quiver: a folder (`s3a://bucket/training/`, `hdfs://...`, or an
    /// absolute path on Spark's machines) or `table:NAME` for a table in Spark's catalog. It must
    /// not exist yet.
    #[arg(long)]
    spark_out: Option<String>,
    /// Feast's transformation service (`feast serve_transformations --port P` in the repo),
    /// HOST:PORT: computes the on-demand feature views the request reads.
    #[arg(long, env = "QUIVER_TRANSFORMATION_SERVICE")]
    transformation_service: Option<String>,
    /// Deadline for one call to the transformation service (one batch of at most 10,000 rows).
    #[arg(long, default_value = "60s", value_parser = quiver_core::time::parse_duration)]
    transformation_timeout: Duration,
}

/// The repo's registry, for its project.
pub fn load_registry(repo: &Path) -> anyhow::Result<(RepoConfig, ProjectRegistry)> {
    let config = RepoConfig::load(repo)?;
    let handle = quiver_cmd::registry_io::RepoRegistry::open(&config)?;
    let registry = handle
        .read_or_empty()?
        .project(&config.project)
        .with_context(|| format!("registry {}", handle.describe()))?;
    Ok((config, registry))
}

/// A runtime for DataFusion: its futures are deep, so worker stacks are larger than tokio's
/// default.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(quiver_cmd::common::runtime_builder(None)
        .thread_stack_size(16 << 20)
        .build()?)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, registry) = load_registry(&args.repo)?;
    let features = match &args.feature_service {
        Some(name) => Features::Service(name.clone()),
        None => Features::Refs(args.features.clone()),
    };
    let selection = select_with_on_demand(&registry, &features, args.full_feature_names)?;
    let views = &selection.views;
    let view_count = views.views.len()
        + views.on_demand.len()
        + selection
            .on_demand
            .as_ref()
            .map_or(0, |p| p.views().count());
    let client = match (&selection.on_demand, &args.transformation_service) {
        (Some(plan), None) => anyhow::bail!(
            "on-demand feature view {} is computed by Feast's transformation service: run `feast serve_transformations --port P` in the feature repo and pass --transformation-service 127.0.0.1:P",
            plan.views().collect::<Vec<_>>().join(", ")
        ),
        (Some(_), Some(endpoint)) => Some(std::sync::Arc::new(TransformClient::new(
            TransformConfig::new(endpoint, args.transformation_timeout),
        ))),
        (None, _) => None,
    };
    let mut options = EngineOptions {
        memory_limit: args.memory_limit,
        spill_dir: args.spill_dir.clone(),
        ..EngineOptions::default()
    };
    if let Some(p) = args.partitions {
        options.partitions = p.max(1);
    }
    let mut engine = HistoricalEngine::new(&options)?;
    if args.entities_sql.is_some() || args.spark_out.is_some() {
        return finish_in_spark(args, &config, &registry, &selection, &engine, view_count);
    }
    if let quiver_registry::config::OfflineStoreConfig::Spark(spark) = &config.offline_store {
        // The join runs on Spark; the entity table is read here and uploaded.
        engine = engine.with_spark(quiver_offline::spark::historical::SparkEngine::new(
            spark.clone(),
        ));
    }
    let (Some(entities), Some(out)) = (args.entities.clone(), args.out.clone()) else {
        anyhow::bail!("--entities and --out are both needed");
    };
    let started = Instant::now();
    let rt = runtime()?;
    let to_stdout = out == "-";
    rt.block_on(async move {
        let entities = engine.read_entities_at(&entities).await?;
        let (planned, schema, stream) = selection
            .execute(&engine, &registry, &config.repo_dir, entities, client)
            .await?;
        let out_at = out;
        let mut out = Output::create_at(&out_at, &schema, args.spill_dir.as_deref())?;
        let bar = progress_bar(planned.rows as u64);
        let rows = write_stream(stream, &mut out, &mut |n| bar.set_position(n)).await?;
        if out.uploads() {
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar.set_message(format!("uploading to {out_at}"));
        }
        out.finish().await?;
        bar.finish_and_clear();
        let (spill_files, spilled) = planned.spilled();
        let summary = format!(
            "{rows} rows x {} columns from {} feature view{} in {:.2}s{}",
            schema.fields().len(),
            view_count,
            if view_count == 1 { "" } else { "s" },
            started.elapsed().as_secs_f64(),
            if spill_files > 0 {
                format!(
                    " (spilled {:.1} MiB in {spill_files} files)",
                    spilled as f64 / (1024.0 * 1024.0)
                )
            } else {
                String::new()
            }
        );
        // Keep stdout clean when the data goes there.
        if to_stdout {
            eprintln!("{summary}");
        } else {
            println!("{summary} -> {out_at}");
        }
        anyhow::Ok(())
    })
}

/// `--entities-sql` or `--spark-out`: Spark reads the entity rows where they are, or writes the
/// output itself, or both (quiver_offline::spark::historical::SparkEngine::retrieve_in_spark).
fn finish_in_spark(
    args: Args,
    config: &RepoConfig,
    registry: &ProjectRegistry,
    selection: &quiver_offline::on_demand::Selection,
    engine: &HistoricalEngine,
    view_count: usize,
) -> anyhow::Result<()> {
    use quiver_offline::spark::SparkTarget;
    use quiver_offline::spark::historical::{InSpark, SparkEngine, SparkEntities};
    let quiver_registry::config::OfflineStoreConfig::Spark(spark) = &config.offline_store else {
        anyhow::bail!(
            "--entities-sql and --spark-out run on Spark: {} needs offline_store: {{type: spark, spark_conf: {{spark.remote: sc://host:15002}}}}",
            config.repo_dir.join("feature_store.yaml").display()
        );
    };
    if let Some(plan) = &selection.on_demand {
        anyhow::bail!(
            "on-demand feature view {}: --entities-sql and --spark-out do not compute on-demand views; request them with --entities and --out",
            plan.views().collect::<Vec<_>>().join(", ")
        );
    }
    // Checked before anything is read.
    let target = args
        .spark_out
        .as_deref()
        .map(SparkTarget::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--spark-out {e}"))?;
    let started = Instant::now();
    let rt = runtime()?;
    rt.block_on(async move {
        let entities = match (&args.entities_sql, &args.entities) {
            (Some(query), _) => SparkEntities::Query(query.clone()),
            (None, Some(at)) => SparkEntities::Uploaded(engine.read_entities_at(at).await?),
            (None, None) => anyhow::bail!("--entities or --entities-sql is needed"),
        };
        let done = SparkEngine::new(spark.clone())
            .retrieve_in_spark(
                registry,
                &config.repo_dir,
                &selection.views,
                args.full_feature_names,
                entities,
                target,
            )
            .await?;
        let views = format!(
            "{view_count} feature view{}",
            if view_count == 1 { "" } else { "s" }
        );
        match done {
            InSpark::Written { rows } => println!(
                "{rows} rows from {views} in {:.2}s, written by Spark to {}",
                started.elapsed().as_secs_f64(),
                args.spark_out.as_deref().unwrap_or_default()
            ),
            InSpark::Streamed(r) => {
                let at = args.out.as_deref().unwrap_or("-");
                let mut out = Output::create_at(at, &r.schema, args.spill_dir.as_deref())?;
                let bar = progress_bar(r.rows as u64);
                let rows = write_stream(r.stream, &mut out, &mut |n| bar.set_position(n)).await?;
                out.finish().await?;
                bar.finish_and_clear();
                let summary = format!(
                    "{rows} rows x {} columns from {views} in {:.2}s",
                    r.schema.fields().len(),
                    started.elapsed().as_secs_f64()
                );
                if at == "-" {
                    eprintln!("{summary}");
                } else {
                    println!("{summary} -> {at}");
                }
            }
        }
        anyhow::Ok(())
    })
}

fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} joining and sorting, then writing [{bar:30}] {human_pos}/{human_len} rows",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
