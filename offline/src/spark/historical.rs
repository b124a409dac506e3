//! Historical retrieval on Spark: quiver's point-in-time join as Spark SQL.
//!
//! The entity table goes up as a temporary view of only what the join needs: the row's
//! position (`__row`), its time in nanoseconds (`__t`), and each join-key column cast to the
//! type keys are compared as. The entity columns themselves never leave quiver: Spark answers
//! `__row` and the features, sorted by `__row`, and they are zipped back onto the entity rows
//! as read, so the entity side of the output is exactly the DataFusion engine's.
//!
//! Per view, union and window (no rows × versions join, which is what makes Feast's Spark
//! store slow): feature rows (keys, `ts`, `created`, the features packed into one struct) and
//! entity rows (keys, `T`, a null struct) are unioned, partitioned by the keys and ordered by
//! time, then side (features before entities at equal times: the bound is inclusive), then
//! created time (nulls first: the larger created time wins a tie); `last(struct, true)` over
//! the rows so far is each entity row's latest candidate. The ttl is checked on it afterwards
//! (`ts >= T - ttl`; if the latest candidate is too old, every one is). Views are joined back
//! to the entity rows on `__row`, and the whole answer sorted by it.
//!
//! Source rows are read only within `[min(T) - max ttl, max(T)]`, and rows with a null key or
//! time never match. Times are compared in nanoseconds; Spark's timestamps have microseconds.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use quiver_core::registry::ProjectRegistry;

use super::client::{SessionOptions, SparkSession, SparkTarget};
use super::{ident, micros, source_from, view_columns};
use crate::Error;
use crate::historical::{
    self, Entities, Selection, canonical_key_type, output_name, prepare_entities,
    strip_pandas_index, with_utc_time,
};

const ENTITIES: &str = "__quiver_entities";

/// Historical retrieval on a Spark Connect server.
#[derive(Debug, Clone)]
pub struct SparkEngine {
    pub config: quiver_registry::spark::SparkConfig,
    pub options: SessionOptions,
}

/// A retrieval under way on Spark: the output's schema and rows, and its batches.
pub struct SparkRetrieval {
    pub schema: SchemaRef,
    pub rows: usize,
    pub stream: SendableRecordBatchStream,
}

impl SparkEngine {
    pub fn new(config: quiver_registry::spark::SparkConfig) -> SparkEngine {
        SparkEngine {
            config,
            options: SessionOptions::default(),
        }
    }

    /// Checks the request (the entity table against the views, every source's columns as Spark
    /// reads them), uploads the entity rows, and starts the join. The stream yields the output
    /// in entity-table order; the Spark session is released when it ends.
    pub async fn retrieve(
        &self,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        selection: &Selection,
        full_feature_names: bool,
        entities: Entities,
    ) -> Result<SparkRetrieval, Error> {
        let entity_schema = strip_pandas_index(&entities.schema);
        let time_column = historical::entity_time_column(&entity_schema)?;
        let entity_schema = with_utc_time(&entity_schema, &time_column);
        let Keys {
            columns: uploaded_keys,
            per_view: view_keys,
        } = plan_keys(registry, selection, full_feature_names, &entity_schema)?;
        let views = &selection.views;
        let (prepared, t_min, t_max) = prepare_entities(&entities, &entity_schema, &time_column)?;
        let rows: usize = prepared.iter().map(|b| b.num_rows()).sum();
        // What goes up: __row, __t, the keys.
        let mut up_fields = vec![
            Field::new("__row", DataType::Int64, false),
            Field::new("__t", DataType::Int64, true),
        ];
        for (i, (_, t, _)) in uploaded_keys.iter().enumerate() {
            up_fields.push(Field::new(format!("__e{i}"), t.clone(), true));
        }
        let up_schema: SchemaRef = Arc::new(Schema::new(up_fields));
        let mut upload = Vec::with_capacity(prepared.len());
        for b in &prepared {
            upload.push(
                RecordBatch::try_new(Arc::clone(&up_schema), internal_columns(b, &uploaded_keys)?)
                    .map_err(|e| Error::arrow("the entity table for Spark", e))?,
            );
        }

        let session = SparkSession::open(&self.config, self.options.clone()).await?;
        let result = self
            .start(
                &session,
                registry,
                repo_dir,
                selection,
                &view_keys,
                (t_min, t_max),
                &up_schema,
                &upload,
            )
            .await;
        let spark_stream = match result {
            Ok(s) => s,
            Err(e) => {
                session.release().await;
                return Err(e);
            }
        };

        // Output: the entity columns as prepared, then the features as Spark typed them.
        let feature_fields: Vec<Field> = {
            let mut out = Vec::new();
            for (n, v) in views.iter().enumerate() {
                for (j, f) in v.features.iter().enumerate() {
                    let t = spark_stream
                        .1
                        .field_with_name(&historical::internal_feature(n, j))
                        .map(|f| f.data_type().clone())
                        .unwrap_or(DataType::Null);
                    out.push(Field::new(output_name(v, f, full_feature_names), t, true));
                }
            }
            out
        };
        let entity_fields: Vec<Field> = entity_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let schema: SchemaRef = Arc::new(Schema::new(
            entity_fields
                .into_iter()
                .chain(feature_fields)
                .collect::<Vec<_>>(),
        ));
        let zip = Zipper {
            entities: prepared,
            width: entity_schema.fields().len(),
            at: (0, 0),
            next_row: 0,
            schema: Arc::clone(&schema),
        };
        let (batches, _) = spark_stream;
        let session = Arc::new(tokio::sync::Mutex::new(Some(session)));
        let state = (batches, zip, session, false);
        let stream =
            futures::stream::unfold(state, |(mut batches, mut zip, session, done)| async move {
                if done {
                    return None;
                }
                match batches.next().await {
                    Some(Ok(b)) => {
                        let out = zip.next(&b);
                        let failed = out.is_err();
                        if failed && let Some(s) = session.lock().await.take() {
                            s.release().await;
                        }
                        Some((out, (batches, zip, session, failed)))
                    }
                    Some(Err(e)) => {
                        if let Some(s) = session.lock().await.take() {
                            s.release().await;
                        }
                        Some((Err(e), (batches, zip, session, true)))
                    }
                    None => {
                        if let Some(s) = session.lock().await.take() {
                            s.release().await;
                        }
                        if zip.next_row != zip.total() {
                            let e = Error::wrap(
                                "Spark",
                                super::SparkError::Protocol(format!(
                                    "answered {} of {} entity rows",
                                    zip.next_row,
                                    zip.total()
                                )),
                            );
                            return Some((Err(e), (batches, zip, session, true)));
                        }
                        None
                    }
                }
            });
        let stream = stream
            .map(|r| r.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e))));
        Ok(SparkRetrieval {
            schema: Arc::clone(&schema),
            rows,
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        })
    }

    /// A retrieval Spark finishes: the entity rows are uploaded whole or read by Spark where
    /// they are, and Spark either writes the output itself (`target`; the rows never pass
    /// through quiver) or streams it back. Entity columns are as Spark holds them; rows are in
    /// the entity table's order (for a query, the order Spark reads it in).
    pub async fn retrieve_in_spark(
        &self,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        selection: &Selection,
        full_feature_names: bool,
        entities: SparkEntities,
        target: Option<SparkTarget>,
    ) -> Result<InSpark, Error> {
        let session = SparkSession::open(&self.config, self.options.clone()).await?;
        let done = self
            .finish_in_spark(
                &session,
                registry,
                repo_dir,
                selection,
                full_feature_names,
                entities,
                target,
            )
            .await;
        match done {
            Ok(InSpark::Streamed(r)) => Ok(InSpark::Streamed(SparkRetrieval {
                stream: releasing(r.stream, session, r.rows),
                ..r
            })),
            other => {
                forget_entities(session).await;
                other
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_in_spark(
        &self,
        session: &SparkSession,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        selection: &Selection,
        full_feature_names: bool,
        entities: SparkEntities,
        target: Option<SparkTarget>,
    ) -> Result<InSpark, Error> {
        // The entity view: the entity columns, then __row, __t and the keys (__e{i}).
        let (entity_columns, keys, rows, bounds) = match entities {
            SparkEntities::Query(query) => {
                let from = format!("({query}) AS __quiver_entity_query");
                let schema = session
                    .schema_of(&from)
                    .await
                    .map_err(|e| e.context("the entity query"))?;
                check_entity_names(&schema)?;
                let time_column = historical::entity_time_column(&schema)?;
                let keys = plan_keys(registry, selection, full_feature_names, &schema)?;
                let mut select = vec![
                    "q.*".to_owned(),
                    // Increasing in the order Spark reads the rows; CACHE computes it once.
                    "monotonically_increasing_id() AS __row".to_owned(),
                    format!("{} * 1000 AS __t", micros(&time_column)),
                ];
                for (i, (column, _, spark_type)) in keys.columns.iter().enumerate() {
                    select.push(format!("CAST({} AS {spark_type}) AS __e{i}", ident(column)));
                }
                session
                    .run_sql(&format!(
                        "CACHE TABLE {ENTITIES} AS SELECT {} FROM {from_q}",
                        select.join(", "),
                        from_q = from.replace("AS __quiver_entity_query", "AS q")
                    ))
                    .await
                    .map_err(|e| e.context("the entity query"))?;
                let (rows, bounds) = entity_extent(session).await?;
                let columns: Vec<String> =
                    schema.fields().iter().map(|f| f.name().clone()).collect();
                (columns, keys, rows, bounds)
            }
            SparkEntities::Uploaded(entities) => {
                let entity_schema = strip_pandas_index(&entities.schema);
                check_entity_names(&entity_schema)?;
                let time_column = historical::entity_time_column(&entity_schema)?;
                let entity_schema = with_utc_time(&entity_schema, &time_column);
                let keys = plan_keys(registry, selection, full_feature_names, &entity_schema)?;
                let (prepared, t_min, t_max) =
                    prepare_entities(&entities, &entity_schema, &time_column)?;
                let rows: usize = prepared.iter().map(|b| b.num_rows()).sum();
                // Spark's timestamps have microseconds (nanosecond ones are refused), so the
                // entity columns go up with their times in microseconds.
                let spark_type = |t: &DataType| match t {
                    DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                        DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                    }
                    other => other.clone(),
                };
                let mut fields: Vec<Field> = entity_schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_data_type(spark_type(f.data_type())))
                    .collect();
                fields.push(Field::new("__row", DataType::Int64, false));
                fields.push(Field::new("__t", DataType::Int64, true));
                for (i, (_, t, _)) in keys.columns.iter().enumerate() {
                    fields.push(Field::new(format!("__e{i}"), t.clone(), true));
                }
                let schema: SchemaRef = Arc::new(Schema::new(fields));
                let width = entity_schema.fields().len();
                let mut upload = Vec::with_capacity(prepared.len());
                for b in &prepared {
                    let mut cols = Vec::with_capacity(schema.fields().len());
                    for (c, f) in b.columns()[..width].iter().zip(schema.fields()) {
                        cols.push(if c.data_type() == f.data_type() {
                            Arc::clone(c)
                        } else {
                            datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| {
                                Error::arrow(format!("entity column {}", f.name()), e)
                            })?
                        });
                    }
                    cols.extend(internal_columns(b, &keys.columns)?);
                    upload.push(
                        RecordBatch::try_new(Arc::clone(&schema), cols)
                            .map_err(|e| Error::arrow("the entity table for Spark", e))?,
                    );
                }
                session.upload_view(ENTITIES, &schema, &upload).await?;
                let columns: Vec<String> = entity_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                (columns, keys, rows, (t_min, t_max))
            }
        };
        let (ctes, _) = self
            .view_ctes(
                session,
                registry,
                repo_dir,
                selection,
                &keys.per_view,
                bounds,
            )
            .await?;
        let mut select: Vec<String> = entity_columns
            .iter()
            .map(|c| format!("e.{}", ident(c)))
            .collect();
        let mut joins = Vec::new();
        for (n, v) in selection.views.iter().enumerate() {
            for (j, f) in v.features.iter().enumerate() {
                select.push(format!(
                    "v{n}.{} AS {}",
                    ident(&historical::internal_feature(n, j)),
                    ident(&output_name(v, f, full_feature_names))
                ));
            }
            joins.push(format!("LEFT JOIN v{n} ON e.__row = v{n}.__row"));
        }
        let query = format!(
            "WITH {} SELECT {} FROM {ENTITIES} e {} ORDER BY e.__row",
            ctes.join(", "),
            select.join(", "),
            joins.join(" ")
        );
        tracing::debug!(query = %query, "historical retrieval on Spark, finished there");
        match target {
            Some(target) => {
                session.write(&query, &target).await.map_err(|e| {
                    e.context(match &target {
                        SparkTarget::Path(p) => format!("writing {p}"),
                        SparkTarget::Table(t) => format!("writing table {t}"),
                    })
                })?;
                Ok(InSpark::Written { rows })
            }
            None => {
                let schema = session
                    .schema_of(&format!("({query}) AS __quiver_out"))
                    .await?;
                let stream = session.sql(&query).await?;
                let stream = stream.map(|r| {
                    r.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
                });
                Ok(InSpark::Streamed(SparkRetrieval {
                    schema: Arc::clone(&schema),
                    rows,
                    stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
                }))
            }
        }
    }

    /// Uploads the entity rows, checks every source, and starts the join query; its batches
    /// and the schema of the features as Spark reads them.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        session: &SparkSession,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        selection: &Selection,
        view_keys: &[Vec<usize>],
        (t_min, t_max): (Option<i64>, Option<i64>),
        up_schema: &SchemaRef,
        upload: &[RecordBatch],
    ) -> Result<(super::client::BatchStream, Schema), Error> {
        let (ctes, feature_types) = self
            .view_ctes(
                session,
                registry,
                repo_dir,
                selection,
                view_keys,
                (t_min, t_max),
            )
            .await?;
        session.upload_view(ENTITIES, up_schema, upload).await?;
        let mut select = vec![format!("e.__row")];
        let mut joins = Vec::new();
        for (n, v) in selection.views.iter().enumerate() {
            for j in 0..v.features.len() {
                select.push(format!(
                    "v{n}.{}",
                    ident(&historical::internal_feature(n, j))
                ));
            }
            joins.push(format!("LEFT JOIN v{n} ON e.__row = v{n}.__row"));
        }
        let query = format!(
            "WITH {} SELECT {} FROM {ENTITIES} e {} ORDER BY e.__row",
            ctes.join(", "),
            select.join(", "),
            joins.join(" ")
        );
        tracing::debug!(query = %query, "historical retrieval on Spark");
        let stream = session.sql(&query).await?;
        Ok((stream, Schema::new(feature_types)))
    }

    /// Checks every view's source as Spark reads it; each view's CTE (`v{n}`, over the
    /// session's entity view) and the features' types as Spark reads them.
    async fn view_ctes(
        &self,
        session: &SparkSession,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        selection: &Selection,
        view_keys: &[Vec<usize>],
        (t_min, t_max): (Option<i64>, Option<i64>),
    ) -> Result<(Vec<String>, Vec<Field>), Error> {
        let mut ctes = Vec::new();
        let mut feature_types = Vec::new();
        for (n, v) in selection.views.iter().enumerate() {
            let (source, from) = source_from(&v.view, repo_dir, n)?;
            if let Some(setup) = &from.setup {
                session.run_sql(setup).await.map_err(|e| {
                    e.context(format!(
                        "feature view {}: source {}",
                        v.view.name, from.shown
                    ))
                })?;
            }
            let schema = session.schema_of(&from.sql).await.map_err(|e| {
                e.context(format!(
                    "feature view {}: source {}",
                    v.view.name, from.shown
                ))
            })?;
            let cols = view_columns(
                registry,
                &v.view,
                &source,
                &v.features,
                &schema,
                &from.shown,
            )?;
            for (j, c) in cols.features.iter().enumerate() {
                let t = schema
                    .field_with_name(c)
                    .map(|f| f.data_type().clone())
                    .unwrap_or(DataType::Null);
                feature_types.push(Field::new(historical::internal_feature(n, j), t, true));
            }
            let ttl = historical::duration_nanos(v.view.ttl);
            ctes.push(view_sql(
                n,
                &cols,
                &view_keys[n],
                &from.sql,
                ttl,
                (t_min, t_max),
            ));
        }
        Ok((ctes, feature_types))
    }
}

/// Where the entity rows of [`SparkEngine::retrieve_in_spark`] are.
pub enum SparkEntities {
    /// Read by quiver (any `--entities` it reads) and uploaded, every column.
    Uploaded(Entities),
    /// A Spark SQL query Spark runs where the data is: a table (`SELECT * FROM db.t`), Parquet
    /// files (``SELECT * FROM parquet.`s3a://bucket/entities/` ``), or any query.
    Query(String),
}

/// What [`SparkEngine::retrieve_in_spark`] did.
pub enum InSpark {
    /// Spark wrote the output itself; it has this many rows.
    Written { rows: usize },
    /// The output, streamed back.
    Streamed(SparkRetrieval),
}

/// The Spark engine's own column names in the entity view; an entity column may not take one.
fn check_entity_names(schema: &Schema) -> Result<(), Error> {
    for f in schema.fields() {
        let name = f.name().as_str();
        let numbered = name
            .strip_prefix("__e")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if name == "__row" || name == "__t" || numbered {
            return Err(Error::bad_request(format!(
                "entity column {name:?}: __row, __t and __e<number> are the Spark engine's own names; rename the column"
            )));
        }
    }
    Ok(())
}

/// The prepared entity batch's `__row`, `__t` and key columns (`__e{i}`, cast as uploaded).
fn internal_columns(
    b: &RecordBatch,
    keys: &[(String, DataType, &'static str)],
) -> Result<Vec<ArrayRef>, Error> {
    let row = b
        .column_by_name(historical::ROW)
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .ok_or_else(|| Error::internal("prepared entities without their row column"))?;
    let row: Int64Array = row.iter().map(|r| r.map(|r| r as i64)).collect();
    let t = b
        .column_by_name(historical::TIME)
        .ok_or_else(|| Error::internal("prepared entities without their time column"))?;
    let mut cols: Vec<ArrayRef> = vec![Arc::new(row), Arc::clone(t)];
    for (column, canonical, _) in keys {
        let c = b
            .column_by_name(column)
            .ok_or_else(|| Error::internal(format!("prepared entities without column {column}")))?;
        cols.push(
            datafusion::arrow::compute::cast(c, canonical)
                .map_err(|e| Error::arrow(format!("entity column {column:?}"), e))?,
        );
    }
    Ok(cols)
}

/// The entity view's row count and the range of its times (nanoseconds).
async fn entity_extent(
    session: &SparkSession,
) -> Result<(usize, (Option<i64>, Option<i64>)), Error> {
    let mut s = session
        .sql(&format!(
            "SELECT count(*) AS n, min(__t) AS lo, max(__t) AS hi FROM {ENTITIES}"
        ))
        .await?;
    let mut out = None;
    while let Some(b) = s.next().await {
        let b = b?;
        if b.num_rows() == 0 {
            continue;
        }
        let col = |i: usize| -> Result<Option<i64>, Error> {
            let c = b
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| {
                    Error::wrap(
                        "Spark",
                        super::SparkError::Protocol(
                            "the entity table's count and times came back not as BIGINT".to_owned(),
                        ),
                    )
                })?;
            Ok(c.is_valid(0).then(|| c.value(0)))
        };
        out = Some((col(0)?.unwrap_or(0).max(0) as usize, (col(1)?, col(2)?)));
    }
    out.ok_or_else(|| {
        Error::wrap(
            "Spark",
            super::SparkError::Protocol("no count came back for the entity table".to_owned()),
        )
    })
}

/// Drops the cached entity view and ends the session (best effort: the session's end drops
/// its views anyway).
async fn forget_entities(session: SparkSession) {
    let _ = session
        .run_sql(&format!("UNCACHE TABLE IF EXISTS {ENTITIES}"))
        .await;
    session.release().await;
}

/// `stream`, ending the session when it ends (or fails), and failing if it answered a
/// different number of rows than the entity table has.
fn releasing(
    stream: SendableRecordBatchStream,
    session: SparkSession,
    rows: usize,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let state = (stream, Some(session), 0usize);
    let out = futures::stream::unfold(state, move |(mut stream, mut session, seen)| async move {
        session.as_ref()?;
        match stream.next().await {
            Some(Ok(b)) => {
                let seen = seen + b.num_rows();
                Some((Ok(b), (stream, session, seen)))
            }
            Some(Err(e)) => {
                if let Some(s) = session.take() {
                    forget_entities(s).await;
                }
                Some((Err(e), (stream, None, seen)))
            }
            None => {
                if let Some(s) = session.take() {
                    forget_entities(s).await;
                }
                if seen != rows {
                    let e = Error::wrap(
                        "Spark",
                        super::SparkError::Protocol(format!(
                            "answered {seen} of {rows} entity rows"
                        )),
                    );
                    return Some((
                        Err(datafusion::error::DataFusionError::External(Box::new(e))),
                        (stream, None, seen),
                    ));
                }
                None
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, out))
}

/// The entity columns the views join on: each goes to Spark once, as `__e{i}`.
struct Keys {
    /// Per `__e{i}`: the entity column, the Arrow type it is uploaded as, and the Spark SQL
    /// type it is compared as.
    columns: Vec<(String, DataType, &'static str)>,
    /// Per view: the `__e{i}` of its join keys, in the view's join-key order.
    per_view: Vec<Vec<usize>>,
}

/// Checks a request against the entity table's schema (on-demand views, output-name clashes,
/// every join key present with a compatible type) and says which entity columns Spark needs.
fn plan_keys(
    registry: &ProjectRegistry,
    selection: &Selection,
    full_feature_names: bool,
    entity_schema: &Schema,
) -> Result<Keys, Error> {
    if !selection.on_demand.is_empty() {
        return Err(Error::unprocessable(format!(
            "on-demand feature view {} : the Spark engine does not compute on-demand views yet; request them from an offline store of type file",
            selection
                .on_demand
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if selection.views.is_empty() {
        return Err(Error::bad_request("no feature views requested"));
    }
    let views = &selection.views;
    // Output names, checked for clashes up front.
    let mut names: std::collections::HashMap<String, String> = entity_schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), "an entity column".to_owned()))
        .collect();
    for v in views {
        for f in &v.features {
            let out = output_name(v, f, full_feature_names);
            let what = format!("feature {}:{f}", v.name_to_use);
            if let Some(prev) = names.insert(out.clone(), what.clone()) {
                return Err(Error::bad_request(format!(
                    "output column {out:?} would be both {prev} and {what}; use full feature names (view__feature) or a feature service alias"
                )));
            }
        }
    }
    // The entity columns each view joins on, and the type they are compared as.
    let mut uploaded_keys: Vec<(String, DataType, &'static str)> = Vec::new();
    let mut view_keys: Vec<Vec<usize>> = Vec::new();
    for v in views {
        let mut at = Vec::new();
        for (join_key, declared) in crate::join_keys(registry, &v.view)? {
            let entity_column = v
                .join_key_map
                .get(&join_key)
                .cloned()
                .unwrap_or_else(|| join_key.clone());
            let field = entity_schema.field_with_name(&entity_column).map_err(|_| {
                Error::bad_request(format!(
                    "the entity table has no column {entity_column:?}, the join key of feature view {} (entity columns: {})",
                    v.view.name,
                    crate::source::column_list(entity_schema)
                ))
            })?;
            let untyped = v.view.entities.iter().any(|e| {
                registry.entity(e).is_some_and(|e| {
                    e.join_key == join_key && e.value_type == quiver_core::ValueType::Invalid
                })
            });
            let value_type = match (untyped, historical::key_type_of_data(field.data_type())) {
                (true, Some(t)) => t,
                _ => declared,
            };
            let canonical = canonical_key_type(value_type).ok_or_else(|| {
                Error::unprocessable(format!(
                    "feature view {}: join key {join_key} is of type {value_type}; historical retrieval supports Int32, Int64, String and Bytes keys",
                    v.view.name
                ))
            })?;
            if !crate::convert::compatible(field.data_type(), value_type) {
                return Err(Error::bad_request(format!(
                    "entity column {entity_column:?} is {}, but join key {join_key} of feature view {} holds {value_type} values",
                    field.data_type(),
                    v.view.name
                )));
            }
            let spark_type = super::spark_key_type(value_type).ok_or_else(|| {
                Error::internal(format!("no Spark SQL type for key type {value_type}"))
            })?;
            let key = (entity_column, canonical, spark_type);
            let i = match uploaded_keys.iter().position(|p| *p == key) {
                Some(i) => i,
                None => {
                    uploaded_keys.push(key);
                    uploaded_keys.len() - 1
                }
            };
            at.push(i);
        }
        view_keys.push(at);
    }
    Ok(Keys {
        columns: uploaded_keys,
        per_view: view_keys,
    })
}

/// One view's CTE `v{n}`: `__row` and the view's features, one row per entity row with a time.
fn view_sql(
    n: usize,
    cols: &super::ViewColumns,
    keys: &[usize],
    from: &str,
    ttl: i64,
    (t_min, t_max): (Option<i64>, Option<i64>),
) -> String {
    let key_names: Vec<String> = (0..keys.len()).map(|i| format!("__j{i}")).collect();
    // Feature side.
    let mut src = Vec::new();
    for (i, (_, column, _, spark_type)) in cols.keys.iter().enumerate() {
        src.push(format!("CAST({} AS {spark_type}) AS __j{i}", ident(column)));
    }
    let ts = format!("{} * 1000", micros(&cols.ts));
    src.push(format!("{ts} AS __time"));
    src.push("0 AS __side".to_owned());
    src.push(match &cols.created {
        Some(c) => format!("{} AS __created", micros(c)),
        None => "CAST(NULL AS BIGINT) AS __created".to_owned(),
    });
    src.push("CAST(NULL AS BIGINT) AS __row".to_owned());
    src.push("CAST(NULL AS BIGINT) AS __t".to_owned());
    let mut packed = vec![format!("'ts', {ts}")];
    for (j, c) in cols.features.iter().enumerate() {
        packed.push(format!("'f{j}', {}", ident(c)));
    }
    src.push(format!("named_struct({}) AS __hit", packed.join(", ")));
    let mut filter = vec![format!("{} IS NOT NULL", ident(&cols.ts))];
    for (_, column, _, _) in &cols.keys {
        filter.push(format!("{} IS NOT NULL", ident(column)));
    }
    if let Some(t_max) = t_max {
        filter.push(format!("{ts} <= {t_max}"));
        if ttl > 0
            && let Some(t_min) = t_min
        {
            filter.push(format!("{ts} >= {}", t_min.saturating_sub(ttl)));
        }
    }
    // Entity side.
    let mut ent = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        ent.push(format!("__e{k} AS __j{i}"));
    }
    ent.extend([
        "__t AS __time".to_owned(),
        "1 AS __side".to_owned(),
        "CAST(NULL AS BIGINT) AS __created".to_owned(),
        "__row".to_owned(),
        "__t".to_owned(),
        "NULL AS __hit".to_owned(),
    ]);
    let partition = if key_names.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {}", key_names.join(", "))
    };
    let ttl_check = if ttl > 0 {
        format!("w.__w.ts >= w.__t - {ttl}")
    } else {
        "TRUE".to_owned()
    };
    let features: Vec<String> = (0..cols.features.len())
        .map(|j| {
            format!(
                "CASE WHEN {ttl_check} THEN w.__w.f{j} END AS {}",
                ident(&historical::internal_feature(n, j))
            )
        })
        .collect();
    let mut out = vec!["w.__row".to_owned()];
    out.extend(features);
    format!(
        "v{n} AS (SELECT {} FROM (SELECT __side, __row, __t, last(__hit, true) OVER ({partition} ORDER BY __time, __side, __created NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __w FROM (SELECT {} FROM {from} WHERE {} UNION ALL SELECT {} FROM {ENTITIES} WHERE __t IS NOT NULL)) w WHERE w.__side = 1)",
        out.join(", "),
        src.join(", "),
        filter.join(" AND "),
        ent.join(", ")
    )
}

/// Zips Spark's answer (`__row`, features; sorted by `__row`) onto the entity rows.
struct Zipper {
    entities: Vec<RecordBatch>,
    /// Entity columns (the prepared batches carry internal columns after them).
    width: usize,
    /// (batch, row) of the next entity row.
    at: (usize, usize),
    next_row: usize,
    schema: SchemaRef,
}

impl Zipper {
    fn total(&self) -> usize {
        self.entities.iter().map(|b| b.num_rows()).sum()
    }

    fn next(&mut self, answer: &RecordBatch) -> Result<RecordBatch, Error> {
        let n = answer.num_rows();
        if n == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let rows = answer
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::internal("Spark's answer has no BIGINT __row first"))?;
        for (i, r) in rows.iter().enumerate() {
            if r != Some((self.next_row + i) as i64) {
                return Err(Error::wrap(
                    "Spark",
                    super::SparkError::Protocol(format!(
                        "answer row {} is entity row {r:?}, expected {} (rows out of order or missing)",
                        self.next_row + i,
                        self.next_row + i
                    )),
                ));
            }
        }
        // The entity rows these answer, sliced across batch boundaries.
        let mut pieces: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.width];
        let mut left = n;
        while left > 0 {
            let (bi, ri) = self.at;
            let batch = self.entities.get(bi).ok_or_else(|| {
                Error::wrap(
                    "Spark",
                    super::SparkError::Protocol("more answer rows than entity rows".to_owned()),
                )
            })?;
            let take = (batch.num_rows() - ri).min(left);
            for (c, piece) in pieces.iter_mut().enumerate() {
                piece.push(batch.column(c).slice(ri, take));
            }
            left -= take;
            self.at = if ri + take == batch.num_rows() {
                (bi + 1, 0)
            } else {
                (bi, ri + take)
            };
            // Skip empty batches.
            while self
                .entities
                .get(self.at.0)
                .is_some_and(|b| b.num_rows() == 0)
            {
                self.at = (self.at.0 + 1, 0);
            }
        }
        self.next_row += n;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for piece in pieces {
            let refs: Vec<&dyn Array> = piece.iter().map(|a| a.as_ref()).collect();
            columns.push(if refs.len() == 1 {
                Arc::clone(&piece[0])
            } else {
                datafusion::arrow::compute::concat(&refs)
                    .map_err(|e| Error::arrow("joining Spark's answer", e))?
            });
        }
        for (i, f) in self.schema.fields().iter().enumerate().skip(self.width) {
            let c = answer.column(i - self.width + 1);
            columns.push(if c.data_type() == f.data_type() {
                Arc::clone(c)
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
                    .map_err(|e| Error::arrow(format!("column {}", f.name()), e))?
            });
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| Error::arrow("joining Spark's answer", e))
    }
}
