//! Materializing write-time on-demand views (`write_to_online_store=True`), as Feast 0.67's
//! `_materialize_odfv` does it:
//!
//! ```text
//! each source feature view ─▶ its latest row per entity key in the window (the scan
//!   materialization uses; join keys and event time only) ─▶ entity table: distinct
//!   (join keys, event_timestamp) ─▶ historical retrieval of the view's outputs at those times
//!   (the point-in-time join, then the transformation: native expressions in the join, or
//!   Feast's transformation service for pandas views) ─▶ one row per entity key (Redis: the
//!   first, SQLite: the last, as Feast's two stores end up) ─▶ written as Feast writes an
//!   on-demand view: the outputs and the join keys as fields, event and created time = now
//! ```
//!
//! Nothing is recorded in the registry (Feast records no interval for on-demand views); an
//! incremental run starts at `END - the longest ttl of the source views` (52 weeks without
//! one), as Feast's does. Memory is bounded by the entities in the window: their keys, the
//! entity table and one output row each.
//!
//! What Feast cannot materialize either is left out of a run over every view, with the reason
//! (a view that reads request data: Feast's run fails on it; no source feature view; source
//! views with different join keys or time columns), and refused when named. Python-mode views
//! are left out too: Feast computes them in its own process, and its transformation service
//! runs pandas functions only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use futures::StreamExt as _;
use quiver_core::model::{FeatureView, SourceKind};
use quiver_core::on_demand::{OnDemandView, Transformation};
use quiver_core::registry::ProjectRegistry;
use quiver_core::time::Timestamp;
use quiver_core::{Value, ValueType, entity_key};
use quiver_online_store::{OnlineStore, ViewLayout, WriteRow, WriteStats};
use quiver_transform::TransformClient;

use crate::Error;
use crate::convert::{self, KeyEncoder, Nanos};
use crate::historical::{EngineOptions, Entities, Features, HistoricalEngine};
use crate::materialize::{Event, Partition, ViewRun, Window, WriteOptions, Writer};

/// A write-time on-demand view that can be materialized, resolved against the registry.
#[derive(Debug, Clone)]
pub struct OnDemandJob<'a> {
    pub view: &'a OnDemandView,
    /// Its source feature views, each once.
    pub sources: Vec<&'a FeatureView>,
    /// The join keys they share, in the first source's order.
    pub join_keys: Vec<(String, ValueType)>,
    /// Computed by Feast's transformation service (else natively).
    pub service: bool,
}

/// Which write-time views a run materializes, and which it leaves out (name, why).
#[derive(Debug, Default)]
pub struct Selected<'a> {
    pub views: Vec<OnDemandJob<'a>>,
    pub skipped: Vec<(String, String)>,
}

/// Resolves a view, or says why it cannot be materialized.
fn resolve<'a>(
    registry: &'a ProjectRegistry,
    view: &'a OnDemandView,
) -> Result<OnDemandJob<'a>, String> {
    if !view.write_to_online_store {
        return Err(
            "it is not a write-time view (write_to_online_store is false): it is computed per request, nothing is stored"
                .to_owned(),
        );
    }
    let request: Vec<&str> = view
        .request_fields()
        .map(|(_, f)| f.name.as_str())
        .collect();
    if !request.is_empty() {
        return Err(format!(
            "it reads request data ({}), which a materialization has no rows of (Feast's fails on it); write it with POST /write-to-online-store",
            request.join(", ")
        ));
    }
    let service = match &view.transformation {
        Transformation::Native { .. } => match view.native_program() {
            Some(Ok(_)) => false,
            Some(Err(e)) => return Err(format!("its expressions do not compile: {e}")),
            None => return Err("it has no expressions".to_owned()),
        },
        t if t.runs_on_transformation_service() => true,
        t => {
            return Err(format!(
                "its mode is {:?}: Feast computes such views in its own process, and its transformation service runs mode \"pandas\" only",
                t.mode()
            ));
        }
    };
    let mut sources: Vec<&FeatureView> = Vec::new();
    for p in view.view_sources() {
        let fv = registry
            .feature_view(&p.view)
            .ok_or_else(|| format!("its source feature view {} is not in the registry", p.view))?;
        if !sources.iter().any(|s| s.name == fv.name) {
            sources.push(fv);
        }
    }
    let Some(first) = sources.first() else {
        return Err("it has no source feature view".to_owned());
    };
    let join_keys = crate::join_keys(registry, first).map_err(|e| e.message())?;
    if join_keys.is_empty() {
        return Err(format!(
            "its source feature view {} has no entities: there are no join keys to store its rows by",
            first.name
        ));
    }
    let time_field = |v: &FeatureView| {
        v.batch_source.as_ref().map(|s| match &s.kind {
            SourceKind::Push { batch_source } => batch_source.timestamp_field.clone(),
            _ => s.timestamp_field.clone(),
        })
    };
    let first_time = time_field(first);
    for s in &sources[1..] {
        let mut theirs = crate::join_keys(registry, s).map_err(|e| e.message())?;
        let mut ours = join_keys.clone();
        theirs.sort();
        ours.sort();
        if theirs != ours {
            return Err(format!(
                "its source feature views {} and {} have different join keys",
                first.name, s.name
            ));
        }
        if time_field(s) != first_time {
            return Err(format!(
                "its source feature views {} and {} have different timestamp fields (Feast skips such a view)",
                first.name, s.name
            ));
        }
    }
    Ok(OnDemandJob {
        view,
        sources,
        join_keys,
        service,
    })
}

/// Picks the write-time views of a run: `names` (each must be a materializable write-time
/// view; an error otherwise), or, with `None`, every write-time view, the ones that cannot be
/// materialized left out with their reason. `service`: whether a transformation service is
/// configured; a pandas view needs one (`flag` names how to give it).
pub fn select<'a>(
    registry: &'a ProjectRegistry,
    names: Option<&[String]>,
    service: bool,
    flag: &str,
) -> Result<Selected<'a>, Error> {
    let mut out = Selected::default();
    let candidates: Vec<&OnDemandView> = match names {
        Some(names) => names
            .iter()
            .map(|n| {
                registry.on_demand_view(n).ok_or_else(|| {
                    Error::not_found(format!(
                        "unknown on-demand feature view {n:?} in project {}",
                        registry.project
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        None => registry
            .on_demand_views
            .iter()
            .filter(|v| v.write_to_online_store)
            .collect(),
    };
    let mut needs_service = Vec::new();
    for view in candidates {
        match resolve(registry, view) {
            Ok(job) => {
                if job.service && !service {
                    needs_service.push(view.name.as_str());
                }
                out.views.push(job);
            }
            Err(why) if names.is_some() => {
                return Err(Error::unprocessable(format!(
                    "on-demand feature view {} cannot be materialized: {why}",
                    view.name
                )));
            }
            Err(why) => out.skipped.push((view.name.clone(), why)),
        }
    }
    if !needs_service.is_empty() {
        return Err(Error::bad_request(format!(
            "write-time on-demand feature view {} is computed by Feast's transformation service: run `feast serve_transformations --port P` in the feature repo and pass {flag} 127.0.0.1:P (or name the views to materialize without it)",
            needs_service.join(", ")
        )));
    }
    Ok(out)
}

/// The window of a write-time view: a range as given; an incremental run from END back by the
/// longest ttl of its sources (52 weeks when none has one), as Feast's.
pub fn window(job: &OnDemandJob<'_>, window: Window) -> (Timestamp, Timestamp) {
    match window {
        Window::Range { start, end } => (start, end),
        Window::Incremental { end } => {
            let ttl = job.sources.iter().map(|s| s.ttl).max().unwrap_or_default();
            let back = if ttl.is_zero() {
                Duration::from_secs(52 * 7 * 86_400)
            } else {
                ttl
            };
            let start = convert::nanos_to_timestamp(
                convert::timestamp_to_nanos(&end).saturating_sub(back.as_nanos() as Nanos),
            );
            (start, end)
        }
    }
}

/// What to materialize: the write-time views, over which window, computed how.
pub struct Job<'a> {
    pub repo_dir: &'a Path,
    pub registry: &'a ProjectRegistry,
    pub views: Vec<OnDemandJob<'a>>,
    pub window: Window,
    /// Feast's transformation service, for pandas views.
    pub client: Option<Arc<TransformClient>>,
    /// Spill directory and partitions of the retrieval (its memory limit is the write
    /// options' budget).
    pub engine: EngineOptions,
}

/// Materializes the job's write-time views into `store`, one after another.
pub async fn run(
    job: &Job<'_>,
    store: &OnlineStore,
    options: &WriteOptions,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Vec<ViewRun>, Error> {
    let mut runs = Vec::with_capacity(job.views.len());
    for view in &job.views {
        runs.push(run_view(job, view, store, options, events).await?);
    }
    Ok(runs)
}

async fn run_view(
    job: &Job<'_>,
    odfv: &OnDemandJob<'_>,
    store: &OnlineStore,
    options: &WriteOptions,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<ViewRun, Error> {
    let began = Instant::now();
    let name = odfv.view.name.as_str();
    let in_view = |e: Error| e.context(format_args!("on-demand feature view {name}"));
    let (start, end) = window(odfv, job.window);
    let nanos = (
        convert::timestamp_to_nanos(&start),
        convert::timestamp_to_nanos(&end),
    );
    // 1. The latest row of each entity key in the window, of every source view: its key and
    //    event time (Feast's pull_latest_from_table_or_query).
    let mut plans = Vec::with_capacity(odfv.sources.len());
    for source in &odfv.sources {
        let mut plan =
            crate::materialize::plan_view(job.registry, source, job.repo_dir, Some(nanos))
                .await
                .map_err(in_view)?;
        plan.features.clear();
        plans.push(Arc::new(plan));
    }
    events(Event::Scanning {
        view: name,
        rows: plans.iter().map(|p| p.rows_to_scan()).sum(),
    });
    let (mut scanned, mut in_window) = (0, 0);
    let mut entity_rows: Vec<(Box<[u8]>, Nanos)> = Vec::new();
    for plan in &plans {
        let budget = options.memory_budget;
        let scan_plan = Arc::clone(plan);
        let latest = tokio::task::spawn_blocking(move || {
            crate::materialize::scan_latest(&scan_plan, nanos, Partition::ALL, budget, &mut |_| {})
        })
        .await
        .map_err(|e| Error::internal(format!("on-demand feature view {name}: scan stopped: {e}")))??
        .ok_or_else(|| {
            Error::OutOfResources(format!(
                "on-demand feature view {name}: the entities of source feature view {} in the window do not fit the memory budget of {budget} bytes",
                plan.view
            ))
        })?;
        scanned += latest.scanned;
        in_window += latest.in_window;
        entity_rows.extend(latest.key_times().map(|(k, t)| (Box::from(k), t)));
    }
    events(Event::Scanned {
        view: name,
        rows: scanned,
    });
    // Distinct (keys, time), in a stable order.
    entity_rows.sort_unstable();
    entity_rows.dedup();
    let scan_elapsed = began.elapsed();
    if entity_rows.is_empty() {
        return Ok(finish(
            name,
            (start, end),
            (scanned, in_window, 0),
            WriteStats::default(),
            scan_elapsed,
            began,
            events,
        ));
    }
    // 2. The outputs at those times: the point-in-time join and the transformation.
    let entities = entity_table(&odfv.join_keys, &entity_rows).map_err(in_view)?;
    drop(entity_rows);
    let refs: Vec<String> = odfv
        .view
        .features
        .iter()
        .map(|f| format!("{name}:{}", f.name))
        .collect();
    let selection =
        crate::on_demand::select_with_on_demand(job.registry, &Features::Refs(refs), false)?;
    let client = match (&selection.on_demand, &job.client) {
        (Some(_), None) => {
            return Err(Error::internal(format!(
                "on-demand feature view {name}: computed by the transformation service, and none is configured"
            )));
        }
        (_, client) => client.clone(),
    };
    let engine = HistoricalEngine::new(&EngineOptions {
        memory_limit: Some(options.memory_budget),
        ..job.engine.clone()
    })?;
    let (_planned, schema, mut stream) = selection
        .execute(&engine, job.registry, job.repo_dir, entities, client)
        .await
        .map_err(in_view)?;
    let outputs = odfv.view.features.len();
    let fields = schema.fields().len();
    if fields < outputs {
        return Err(Error::internal(format!(
            "on-demand feature view {name}: the retrieval has {fields} columns for {outputs} outputs"
        )));
    }
    for (i, f) in odfv.view.features.iter().enumerate() {
        let got = schema.field(fields - outputs + i).name();
        if *got != f.name {
            return Err(Error::internal(format!(
                "on-demand feature view {name}: the retrieval's column {got} stands where output {} was expected",
                f.name
            )));
        }
    }
    let key_columns: Vec<usize> = odfv
        .join_keys
        .iter()
        .map(|(k, _)| {
            schema.index_of(k).map_err(|_| {
                Error::internal(format!(
                    "on-demand feature view {name}: no join key {k} in the retrieval"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let key_types: Vec<(&str, ValueType)> = odfv
        .join_keys
        .iter()
        .map(|(k, t)| (k.as_str(), *t))
        .collect();
    let encoder = KeyEncoder::new(&key_types);
    // 3. One row per entity key: Feast's Redis store keeps the first row of a key (a later
    //    one, stamped with the same time, is not newer), its SQLite store the last.
    let keep_last = matches!(store, OnlineStore::Sqlite(_));
    let mut rows: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut values: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    let mut any_value = false;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::query(format!("on-demand feature view {name}"), e))?;
        let keys: Vec<&dyn Array> = key_columns
            .iter()
            .map(|&c| batch.column(c).as_ref())
            .collect();
        for row in 0..batch.num_rows() {
            let mut key = Vec::new();
            encoder
                .encode(&mut key, &keys, row)
                .map_err(|e| Error::unprocessable(format!("on-demand feature view {name}: {e}")))?;
            let mut encoded = Vec::with_capacity(outputs + key_columns.len());
            for (i, f) in odfv.view.features.iter().enumerate() {
                let column = batch.column(fields - outputs + i);
                any_value |= !column.is_null(row);
                let mut out = Vec::new();
                convert::encode_at(&mut out, column.as_ref(), row, f.dtype).map_err(|e| {
                    Error::unprocessable(format!(
                        "on-demand feature view {name}: feature {}: {e}",
                        f.name
                    ))
                })?;
                encoded.push(out);
            }
            for (&c, (k, t)) in key_columns.iter().zip(&odfv.join_keys) {
                let v = convert::key_value_at(batch.column(c).as_ref(), row, *t).map_err(|e| {
                    Error::unprocessable(format!(
                        "on-demand feature view {name}: join key {k}: {e}"
                    ))
                })?;
                encoded.push(v.encode_to_vec());
            }
            match rows.get(&key) {
                Some(&at) if keep_last => values[at].1 = encoded,
                Some(_) => {}
                None => {
                    rows.insert(key.clone(), values.len());
                    values.push((key, encoded));
                }
            }
        }
    }
    drop(rows);
    let entities = values.len() as u64;
    // Feast writes nothing when every output is null (its "empty feature columns" warning).
    if !any_value {
        return Ok(finish(
            name,
            (start, end),
            (scanned, in_window, entities),
            WriteStats::default(),
            scan_elapsed,
            began,
            events,
        ));
    }
    // 4. Written as Feast writes an on-demand view: stamped with the time of the write.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    };
    let layout = Arc::new(ViewLayout::new(
        &job.registry.project,
        name,
        odfv.view
            .features
            .iter()
            .map(|f| f.name.clone())
            .chain(odfv.join_keys.iter().map(|(k, _)| k.clone())),
    ));
    events(Event::Writing {
        view: name,
        rows: entities,
    });
    let mut writer = Writer::with_layout(store, name, layout, options);
    let mut progress = |rows| events(Event::Written { view: name, rows });
    for (key, encoded) in values {
        writer
            .push(WriteRow::new(key, now, Some(now), &encoded), &mut progress)
            .await
            .map_err(|e| writer.failed(Some(entities), e))?;
    }
    let stats = writer.finish(Some(entities), &mut progress).await?;
    Ok(finish(
        name,
        (start, end),
        (scanned, in_window, entities),
        stats,
        scan_elapsed,
        began,
        events,
    ))
}

fn finish(
    view: &str,
    (start, end): (Timestamp, Timestamp),
    (scanned, in_window, entities): (u64, u64, u64),
    stats: WriteStats,
    scan_elapsed: Duration,
    began: Instant,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> ViewRun {
    let run = ViewRun {
        view: view.to_owned(),
        start,
        end,
        scanned,
        in_window,
        entities,
        stats,
        passes: 1,
        segments: 0,
        scan_elapsed,
        elapsed: began.elapsed(),
    };
    events(Event::Done { view, run: &run });
    run
}

/// The entity table of the retrieval: the join keys (typed as the entities are) and
/// `event_timestamp` (UTC), one row per distinct (entity key, time).
fn entity_table(
    join_keys: &[(String, ValueType)],
    rows: &[(Box<[u8]>, Nanos)],
) -> Result<Entities, Error> {
    let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(rows.len()); join_keys.len()];
    for (key, _) in rows {
        let pairs = entity_key::deserialize(key)
            .map_err(|e| Error::internal(format!("an entity key read back: {e}")))?;
        for ((k, _), column) in join_keys.iter().zip(columns.iter_mut()) {
            let v = pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::internal(format!("an entity key without {k}")))?;
            column.push(v);
        }
    }
    let mut fields = Vec::with_capacity(join_keys.len() + 1);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(join_keys.len() + 1);
    for ((k, t), values) in join_keys.iter().zip(columns) {
        let array: ArrayRef = match t {
            ValueType::Int64 => Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
                Value::Int64(x) => Some(*x),
                _ => None,
            }))),
            ValueType::Int32 => Arc::new(Int32Array::from_iter(values.iter().map(|v| match v {
                Value::Int32(x) => Some(*x),
                _ => None,
            }))),
            ValueType::UnixTimestamp => Arc::new(
                TimestampNanosecondArray::from_iter(values.iter().map(|v| match v {
                    Value::UnixTimestamp(s) => s.checked_mul(1_000_000_000),
                    _ => None,
                }))
                .with_timezone("UTC"),
            ),
            ValueType::String => Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            }))),
            ValueType::Bytes => Arc::new(BinaryArray::from_iter(values.iter().map(|v| match v {
                Value::Bytes(b) => Some(b.as_slice()),
                _ => None,
            }))),
            other => {
                return Err(Error::unprocessable(format!(
                    "join key {k} is of type {other}, which an entity key cannot hold"
                )));
            }
        };
        fields.push(Field::new(k, array.data_type().clone(), false));
        arrays.push(array);
    }
    fields.push(Field::new(
        "event_timestamp",
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    ));
    arrays.push(Arc::new(
        TimestampNanosecondArray::from_iter_values(
            rows.iter()
                .map(|(_, t)| i64::try_from(*t).unwrap_or(i64::MAX)),
        )
        .with_timezone("UTC"),
    ));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)
        .map_err(|e| Error::arrow("the entity table", e))?;
    Ok(Entities {
        schema,
        batches: vec![batch],
    })
}
