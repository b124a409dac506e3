//! Materialization's selection on Spark: the latest row per entity key in the window, in one
//! pass (`ROW_NUMBER()` over the source filtered to the window, partitioned by the keys,
//! newest event then newest created time first), optionally one shard of the keys. Spark
//! streams the winners back and quiver's own writers ([`crate::materialize::Writer`]) write
//! them, with the same key and value encoding as the local engine: the online bytes are the
//! same whichever engine selected.
//!
//! Shards: the job's [`Shard`] `i/n` keeps the keys whose serialized entity key hashes to `i`
//! ([`crate::shard::spark_key_expr`], [`crate::shard::spark_predicate`]): the same keys the local
//! engine's shard `i/n` writes, so the shards of one run may even mix engines.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use quiver_core::ValueType;
use quiver_core::model::FeatureView;
use quiver_core::registry::ProjectRegistry;
use quiver_online_store::{OnlineStore, ViewLayout, WriteRow, WriteStats};

use super::client::{SessionOptions, SparkSession};
use super::{ident, micros, source_from, view_columns};
use crate::Error;
use crate::convert::{self, Nanos};
use crate::materialize::{
    DUMMY_ENTITY_ID, Event, Job, KeyColumn, ViewPlan, ViewRun, WriteOptions, Writer, view_window,
};
use crate::shard::{self, Shard};

/// A view ready to select on Spark: what the writers need, and the query.
pub struct SparkViewPlan {
    pub plan: ViewPlan,
    pub start: quiver_core::time::Timestamp,
    pub end: quiver_core::time::Timestamp,
    query: String,
}

/// Checks a view against its source as Spark reads it and builds the selection query.
pub async fn plan_view(
    session: &SparkSession,
    registry: &ProjectRegistry,
    view: &FeatureView,
    repo_dir: &Path,
    (start, end): (Nanos, Nanos),
    shard: Shard,
    n: usize,
) -> Result<(ViewPlan, String, Option<String>), Error> {
    let (source, from) = source_from(view, repo_dir, n)?;
    if let Some(setup) = &from.setup {
        session
            .run_sql(setup)
            .await
            .map_err(|e| e.context(format!("feature view {}: source {}", view.name, from.shown)))?;
    }
    let schema = session
        .schema_of(&from.sql)
        .await
        .map_err(|e| e.context(format!("feature view {}: source {}", view.name, from.shown)))?;
    let features: Vec<String> = view.features.iter().map(|f| f.name.clone()).collect();
    let cols = view_columns(registry, view, &source, &features, &schema, &from.shown)?;
    let query = selection_sql(&cols, &from.sql, (start, end), shard)?;
    let plan = ViewPlan {
        view: view.name.clone(),
        ttl: view.ttl,
        keys: cols
            .keys
            .iter()
            .map(|(join_key, column, value_type, _)| KeyColumn {
                join_key: join_key.clone(),
                column: column.clone(),
                value_type: *value_type,
            })
            .collect(),
        ts_column: cols.ts.clone(),
        created_column: cols.created.clone(),
        shard,
        features: cols
            .features
            .iter()
            .zip(&view.features)
            .map(|(c, f)| (c.clone(), f.dtype))
            .collect(),
        layout: Arc::new(ViewLayout::new(
            &registry.project,
            &view.name,
            view.features.iter().map(|f| f.name.clone()),
        )),
        files: Vec::new(),
    };
    Ok((plan, query, from.setup))
}

/// The selection: keys (as the source holds them), event time, created time, features; one
/// row per distinct key in `[start, end]` (nanoseconds, inclusive).
pub(crate) fn selection_sql(
    cols: &super::ViewColumns,
    from: &str,
    (start, end): (Nanos, Nanos),
    shard: Shard,
) -> Result<String, Error> {
    let ts = format!("{} * 1000", micros(&cols.ts));
    let mut select: Vec<String> = cols.keys.iter().map(|k| ident(&k.1)).collect();
    select.push(format!("{} AS __ts", ident(&cols.ts)));
    select.push(match &cols.created {
        Some(c) => format!("{} AS __created", ident(c)),
        None => "CAST(NULL AS TIMESTAMP) AS __created".to_owned(),
    });
    for (j, f) in cols.features.iter().enumerate() {
        select.push(format!("{} AS __f{j}", ident(f)));
    }
    let mut filter = vec![format!("{ts} >= {start}"), format!("{ts} <= {end}")];
    if !shard.is_all() {
        let keys: Vec<(&str, &str, ValueType)> = cols
            .keys
            .iter()
            .map(|(key, column, t, _)| (key.as_str(), column.as_str(), *t))
            .collect();
        filter.push(shard::spark_predicate(
            &shard::spark_key_expr(&keys)?,
            shard,
        ));
    }
    let partition = if cols.keys.is_empty() {
        String::new()
    } else {
        format!(
            "PARTITION BY {}",
            cols.keys
                .iter()
                .map(|k| ident(&k.1))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let created_order = match &cols.created {
        Some(c) => format!(", {} DESC NULLS LAST", ident(c)),
        None => String::new(),
    };
    let mut out: Vec<String> = cols.keys.iter().map(|k| ident(&k.1)).collect();
    out.push("__ts".to_owned());
    out.push("__created".to_owned());
    out.extend((0..cols.features.len()).map(|j| format!("__f{j}")));
    Ok(format!(
        "SELECT {} FROM (SELECT {}, ROW_NUMBER() OVER ({partition} ORDER BY {} DESC{created_order}) AS __rn FROM {from} WHERE {}) WHERE __rn = 1",
        out.join(", "),
        select.join(", "),
        ident(&cols.ts),
        filter.join(" AND ")
    ))
}

/// Materializes the job's views with Spark selecting and quiver writing: every view is checked
/// first (nothing is written when one is wrong), then selected and written one after another.
/// Recording the intervals is the caller's, as for [`crate::materialize::run`].
pub async fn run(
    config: &quiver_registry::spark::SparkConfig,
    job: &Job<'_>,
    store: &OnlineStore,
    options: &WriteOptions,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Vec<ViewRun>, Error> {
    let session = SparkSession::open(config, SessionOptions::default()).await?;
    let out = run_in(&session, job, store, options, events).await;
    session.release().await;
    out
}

async fn run_in(
    session: &SparkSession,
    job: &Job<'_>,
    store: &OnlineStore,
    options: &WriteOptions,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Vec<ViewRun>, Error> {
    let mut plans = Vec::new();
    for (n, view) in job.views.iter().enumerate() {
        let (start, end) = view_window(view, job.window, job.now);
        let nanos = (
            convert::timestamp_to_nanos(&start),
            convert::timestamp_to_nanos(&end),
        );
        // A CSV source's view is made in the session while planning.
        let (plan, query, _setup) = plan_view(
            session,
            job.registry,
            view,
            job.repo_dir,
            nanos,
            job.shard,
            n,
        )
        .await?;
        plans.push(SparkViewPlan {
            plan,
            start,
            end,
            query,
        });
    }
    let mut runs = Vec::new();
    for p in plans {
        let began = Instant::now();
        let view = p.plan.view.clone();
        events(Event::Scanning {
            view: &view,
            rows: 0,
        });
        let (entities, stats, scan_elapsed) =
            select_and_write(session, &p.plan, &p.query, store, options, events).await?;
        let run = ViewRun {
            view: view.clone(),
            start: p.start,
            end: p.end,
            // Spark read the source; quiver saw only the winners.
            scanned: entities,
            in_window: entities,
            entities,
            stats,
            passes: 1,
            segments: 0,
            scan_elapsed,
            elapsed: began.elapsed(),
        };
        events(Event::Done {
            view: &view,
            run: &run,
        });
        runs.push(run);
    }
    Ok(runs)
}

/// Runs a selection query and writes its winners as they stream in.
pub async fn select_and_write(
    session: &SparkSession,
    plan: &ViewPlan,
    query: &str,
    store: &OnlineStore,
    options: &WriteOptions,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<(u64, WriteStats, Duration), Error> {
    let view = plan.view.as_str();
    let began = Instant::now();
    let mut batches = session
        .sql(query)
        .await
        .map_err(|e| e.context(format!("feature view {view}")))?;
    let mut first = true;
    let n_keys = plan.keys.len();
    let dummy = [(DUMMY_ENTITY_ID, ValueType::String)];
    let key_types: Vec<(&str, ValueType)> = plan
        .keys
        .iter()
        .map(|k| (k.join_key.as_str(), k.value_type))
        .collect();
    let keys = convert::KeyEncoder::new(if n_keys == 0 { &dummy } else { &key_types });
    let empty = arrow_array::StringArray::from(vec![""]);
    let mut writer = Writer::new(store, plan, options);
    let mut selected = 0u64;
    let mut key = Vec::with_capacity(64);
    let mut values = Vec::with_capacity(256);
    let mut progress = |rows: u64| events(Event::Written { view, rows });
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| e.context(format!("feature view {view}")))?;
        if first {
            first = false;
            events(Event::Scanned { view, rows: 0 });
        }
        let ts = batch.column(n_keys);
        let created = batch.column(n_keys + 1);
        let key_columns: Vec<&dyn arrow_array::Array> = if n_keys == 0 {
            vec![&empty]
        } else {
            (0..n_keys).map(|j| batch.column(j).as_ref()).collect()
        };
        for i in 0..batch.num_rows() {
            let Some(t) = convert::time_at(ts.as_ref(), i) else {
                continue;
            };
            let c = convert::time_at(created.as_ref(), i).unwrap_or(Nanos::MIN);
            key.clear();
            let row = if n_keys == 0 { 0 } else { i };
            keys.encode(&mut key, &key_columns, row).map_err(|e| {
                Error::unprocessable(format!(
                    "feature view {view}: a selected row's join keys: {e}"
                ))
            })?;
            values.clear();
            for (j, (column, value_type)) in plan.features.iter().enumerate() {
                let at = values.len();
                values.extend_from_slice(&[0; 4]);
                convert::encode_at(
                    &mut values,
                    batch.column(n_keys + 2 + j).as_ref(),
                    i,
                    *value_type,
                )
                .map_err(|e| {
                    Error::unprocessable(format!(
                        "feature view {view}: column {column:?} of a selected row: {e}"
                    ))
                })?;
                let len = (values.len() - at - 4) as u32;
                values[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            let row = WriteRow::from_packed(
                key.clone(),
                convert::nanos_to_timestamp(t),
                (c != Nanos::MIN).then(|| convert::nanos_to_timestamp(c)),
                values.as_slice().into(),
            );
            selected += 1;
            writer
                .push(row, &mut progress)
                .await
                .map_err(|e| writer.failed(None, e))?;
        }
    }
    let scan_elapsed = began.elapsed();
    events(Event::Writing {
        view,
        rows: selected,
    });
    let stats = writer.finish(Some(selected), &mut progress).await?;
    Ok((selected, stats, scan_elapsed))
}
