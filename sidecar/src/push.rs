//! Feast's write endpoints: `POST /push` and `POST /write-to-online-store`.
//!
//! A body carries a column-major table (`df: {column: [values...]}`) that is checked whole
//! against the registry before anything is written: every target view's join keys, event time
//! and features must be there, typed as the registry says; a column no target uses (in an
//! online-only push: one going offline may carry the batch source's other columns), ragged
//! columns, a bad timestamp or value are 4xx errors naming the column (and row). Rows are then
//! written with Feast's rule (strictly newer event time wins), the latest row per entity when a
//! table repeats one, and the sidecar's own cache entries of those entities are dropped at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use quiver_core::time::{self, Timestamp};
use quiver_core::{Value, entity_key, json, range};
use quiver_online_store::{OnlineStore, WriteRow, WriteStats};
use serde_json::Value as Json;

pub use crate::push_body::Df;
use crate::push_body::parse_body;

use crate::error::ApiError;
use crate::registry::{ServingRegistry, ServingView};

/// Where `to: offline` rows go. The sidecar does not link a Parquet writer: the binary plugs
/// one in (quiver's offline crate appends to the push source's batch source).
pub trait OfflineWriter: Send + Sync {
    /// Appends the table to the file source at `source_uri` (a local path, or an `s3://` or
    /// `gs://` object or prefix, reached through `s3_endpoint_override` when it is not empty);
    /// `hints` give each column's type (`None`: an event or created time). Returns where the
    /// rows went. All or nothing. Called on a blocking thread.
    fn append(
        &self,
        source_uri: &str,
        s3_endpoint_override: &str,
        columns: &[(String, Vec<Json>)],
        rows: usize,
        hints: &[(String, Option<quiver_core::ValueType>)],
    ) -> Result<String, OfflineWriteError>;
}

/// Why an offline append failed: whose fault (the kind) and the full message. The message of
/// an upstream's or an internal failure is logged, not sent to the caller (it can carry what an
/// object store answered).
#[derive(Debug, Clone)]
pub struct OfflineWriteError {
    pub kind: quiver_core::fault::ErrorKind,
    /// What the caller may read (an upstream's own words left out).
    pub message: String,
    /// Everything, for the log.
    pub detail: String,
}

impl OfflineWriteError {
    /// The answer to the caller: the message for the caller's own mistakes; for the rest a
    /// generic message naming the source, with the details in the log.
    fn into_api(self, view: &str, uri: &str) -> ApiError {
        use quiver_core::fault::Fault;
        match self.kind.fault() {
            Fault::Caller => {
                if self.detail != self.message {
                    tracing::debug!(view, source = uri, error = %self.detail, "offline push refused");
                }
                ApiError::new(self.kind, "ValidationError", self.message)
            }
            Fault::Upstream => {
                tracing::warn!(view, source = uri, error = %self.detail, "offline push failed upstream");
                ApiError::new(
                    self.kind,
                    "OfflineStoreUnavailable",
                    format!(
                        "feature view {view}: writing to its batch source {uri} failed at the \
                         store; the server's log has the details"
                    ),
                )
            }
            Fault::Internal => {
                tracing::error!(view, source = uri, error = %self.detail, "offline push failed");
                ApiError::new(
                    self.kind,
                    "OfflineWriteFailed",
                    format!(
                        "feature view {view}: writing to its batch source {uri} failed; the \
                         server's log has the details"
                    ),
                )
            }
        }
    }
}

/// What the write endpoints accept.
#[derive(Clone)]
pub struct PushConfig {
    /// When set, writes need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Most rows in one body (413 beyond).
    pub max_rows: usize,
    /// Largest body (413 beyond).
    pub max_body_bytes: usize,
    /// Most JSON values in one body's `df`, list elements included (413 beyond). Counted while
    /// parsing, as rows are, so a body is refused before it is materialized: a parsed value
    /// takes about 80 bytes, so this bounds one request's table to about 80 MB.
    pub max_values: usize,
    /// Redis `EXPIRE` for written keys (Feast's `key_ttl_seconds`).
    pub key_ttl_seconds: Option<u64>,
    /// `to: offline` support; without it such pushes are refused (501).
    pub offline: Option<Arc<dyn OfflineWriter>>,
    /// `POST /materialize` and `/materialize-incremental` (the ingest role), behind the same
    /// token.
    pub materialize: crate::materialize::MaterializeSupport,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_rows", &self.max_rows)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_values", &self.max_values)
            .field("key_ttl_seconds", &self.key_ttl_seconds)
            .field("offline", &self.offline.is_some())
            .field("materialize", &self.materialize)
            .finish()
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            token: None,
            max_rows: 100_000,
            max_body_bytes: 16 << 20,
            max_values: 1_000_000,
            key_ttl_seconds: None,
            offline: None,
            materialize: crate::materialize::MaterializeSupport::Off,
        }
    }
}

/// Where pushed rows go (`to` in a push body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTo {
    Online,
    Offline,
    OnlineAndOffline,
}

/// A parsed write: the target views and the table.
pub struct WriteRequest {
    pub views: Vec<usize>,
    pub to: PushTo,
    pub columns: Vec<(String, Vec<Json>)>,
    pub rows: usize,
    /// Feast's `transform_on_write` (a write-time on-demand view computes its rows; false: the
    /// table carries them).
    pub transform_on_write: bool,
}

/// The created-time column Feast's remote online store always sends to `/write-to-online-store`.
const CLIENT_CREATED: &str = "created";

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("ValidationError", message)
}

fn str_field<'a>(body: &'a serde_json::Map<String, Json>, name: &str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        Some(Json::String(s)) => Ok(s),
        Some(other) => Err(unprocessable(format!(
            "{name} must be a string, got {}",
            kind(other)
        ))),
        None => Err(unprocessable(format!("{name} is required"))),
    }
}

fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Parses and checks a `/push` (`by_source`) or `/write-to-online-store` body.
pub fn parse(
    reg: &ServingRegistry,
    body: &[u8],
    by_source: bool,
    config: &PushConfig,
) -> Result<WriteRequest, ApiError> {
    let (mut body, df) = parse_body(body, config)?;
    let transform_on_write = crate::write_time::transform_on_write(&body)?;
    let (views, to) = if by_source {
        let name = str_field(&body, "push_source_name")?;
        let views: Vec<usize> = reg
            .views
            .iter()
            .enumerate()
            .filter(|(_, v)| v.push_source.as_deref() == Some(name))
            .map(|(i, _)| i)
            .collect();
        if views.is_empty() {
            return Err(ApiError::not_found(
                "PushSourceNotFoundException",
                format!(
                    "no feature view of project {} is fed by push source {name:?}",
                    reg.project
                ),
            ));
        }
        let to = match body.remove("to") {
            None | Some(Json::Null) => PushTo::Online,
            Some(Json::String(s)) => match s.as_str() {
                "online" => PushTo::Online,
                "offline" => PushTo::Offline,
                "online_and_offline" => PushTo::OnlineAndOffline,
                other => {
                    return Err(unprocessable(format!(
                        "to must be online, offline or online_and_offline, got {other:?}"
                    )));
                }
            },
            Some(other) => {
                return Err(unprocessable(format!(
                    "to must be a string, got {}",
                    kind(&other)
                )));
            }
        };
        (views, to)
    } else {
        let name = str_field(&body, "feature_view_name")?;
        let i = reg
            .views
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| {
                // Feast's class for this endpoint (`feast serve` raises it here, not
                // FeatureViewNotFoundException).
                ApiError::not_found(
                    "FeastObjectNotFoundException",
                    format!(
                        "feature_view_name: feature view {name} does not exist in project {}",
                        reg.project
                    ),
                )
            })?;
        (vec![i], PushTo::Online)
    };
    let Some(Df { mut columns, rows }) = df else {
        return Err(unprocessable(
            "df is required: an object of columns, {\"column\": [values, ...]}",
        ));
    };
    let rows = rows.unwrap_or(0);
    // Feast's remote online store client sends a `created` column with every write, null when
    // its rows have no created time; `feast serve` ignores it for a view without one.
    if !views
        .iter()
        .any(|&i| reg.views[i].created_field.as_deref() == Some("created"))
    {
        columns.retain(|(c, values)| !(c == "created" && values.iter().all(Json::is_null)));
    }
    // A write-time on-demand view reads its inputs, not a view's columns.
    if let [i] = views[..]
        && let Some(wt) = &reg.views[i].write_time
    {
        crate::write_time::check_columns(&reg.views[i], wt, &mut columns, transform_on_write)?;
        return Ok(WriteRequest {
            views,
            to,
            columns,
            rows,
            transform_on_write,
        });
    }
    // Every target view's columns must be present; every column must be used by some view.
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for &i in &views {
        let v = &reg.views[i];
        let required = v
            .join_keys
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(std::iter::once(v.timestamp_field.as_str()))
            .chain(v.features.iter().map(|(f, _)| f.as_str()));
        for column in required {
            if !columns.iter().any(|(c, _)| c == column) {
                return Err(unprocessable(format!(
                    "df has no column {column:?}, which feature view {} needs",
                    v.name
                )));
            }
            used.insert(column);
        }
        used.extend(v.created_field.as_deref());
    }
    // Feast's remote online store sends a `created` column with every write, null when the
    // view has no created-time column: such a column carries nothing and is dropped.
    if !by_source && !used.contains(CLIENT_CREATED) {
        columns.retain(|(c, values)| c != CLIENT_CREATED || !values.iter().all(Json::is_null));
    }
    // A push that goes offline may carry the batch source's other columns (Feast's offline
    // write takes the source's whole schema): the appender checks them against the source's
    // columns, and the online write ignores them.
    if to == PushTo::Online
        && let Some((unknown, _)) = columns.iter().find(|(c, _)| !used.contains(c.as_str()))
    {
        return Err(unprocessable(format!(
            "df column {unknown:?} is not a join key, timestamp or feature of {}",
            views
                .iter()
                .map(|&i| reg.views[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(WriteRequest {
        views,
        to,
        columns,
        rows,
        transform_on_write,
    })
}

/// An event time in a pushed table: an ISO 8601 string (no offset: UTC) or epoch seconds.
fn parse_time(j: &Json) -> Option<Timestamp> {
    match j {
        Json::String(s) => time::parse_datetime(s),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Timestamp {
                    seconds: i,
                    nanos: 0,
                })
            } else {
                let f = n.as_f64()?;
                f.is_finite().then(|| Timestamp {
                    seconds: f.floor() as i64,
                    nanos: ((f - f.floor()) * 1e9) as i32,
                })
            }
        }
        _ => None,
    }
}

/// A cell of a column; a missing one (an optional column left out) reads as null.
fn cell(column: &[Json], row: usize) -> &Json {
    const NULL: &Json = &Json::Null;
    column.get(row).unwrap_or(NULL)
}

/// Builds one view's rows (the latest per entity key), checking every value.
pub fn view_rows(view: &ServingView, req: &WriteRequest) -> Result<Vec<WriteRow>, ApiError> {
    let column = |name: &str| -> &[Json] {
        req.columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    };
    let keys: Vec<(&str, quiver_core::ValueType, &[Json])> = view
        .join_keys
        .iter()
        .map(|(k, t)| (k.as_str(), *t, column(k)))
        .collect();
    let ts = column(&view.timestamp_field);
    let created = view.created_field.as_deref().map(column);
    let features: Vec<(&str, quiver_core::ValueType, &[Json])> = view
        .features
        .iter()
        .map(|(f, t)| (f.as_str(), *t, column(f)))
        .collect();
    let mut latest: HashMap<Vec<u8>, WriteRow> = HashMap::with_capacity(req.rows);
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut key_values = Vec::with_capacity(keys.len());
    for row in 0..req.rows {
        key_values.clear();
        for (name, ty, values) in &keys {
            let v = json::parse_entity_value(cell(values, row), *ty)
                .map_err(|e| unprocessable(format!("df column {name:?}, row {row}: {e}")))?;
            range::check_value(&v)
                .map_err(|e| unprocessable(format!("df column {name:?}, row {row}: {e}")))?;
            key_values.push((*name, v));
        }
        let pairs: Vec<(&str, &quiver_core::Value)> =
            key_values.iter().map(|(n, v)| (*n, v)).collect();
        let key = entity_key::serialize(&pairs)
            .map_err(|e| unprocessable(format!("df row {row}: {e}")))?;
        let event_ts = parse_time(cell(ts, row)).ok_or_else(|| {
            unprocessable(format!(
                "df column {:?}, row {row}: expected an ISO 8601 date-time or epoch seconds, got {}",
                view.timestamp_field,
                cell(ts, row)
            ))
        })?;
        range::check_timestamp(&event_ts).map_err(|e| {
            unprocessable(format!(
                "df column {:?}, row {row}: {e}",
                view.timestamp_field
            ))
        })?;
        let created_ts = match created.map(|c| cell(c, row)) {
            Some(c) if !c.is_null() => Some(parse_time(c).ok_or_else(|| {
                unprocessable(format!(
                    "df column {:?}, row {row}: expected an ISO 8601 date-time or epoch seconds",
                    view.created_field.as_deref().unwrap_or_default()
                ))
            })?),
            _ => None,
        };
        if let Some(c) = &created_ts {
            range::check_timestamp(c).map_err(|e| {
                unprocessable(format!(
                    "df column {:?}, row {row}: {e}",
                    view.created_field.as_deref().unwrap_or_default()
                ))
            })?;
        }
        let mut values = Vec::with_capacity(features.len());
        for (name, ty, column) in &features {
            let v = json::parse_value(cell(column, row), *ty)
                .map_err(|e| unprocessable(format!("df column {name:?}, row {row}: {e}")))?;
            range::check_value(&v)
                .map_err(|e| unprocessable(format!("df column {name:?}, row {row}: {e}")))?;
            let v = if v.is_null() { Value::missing(*ty) } else { v };
            values.push(v.encode_to_vec());
        }
        let candidate = WriteRow::new(key.clone(), event_ts, created_ts, &values);
        match latest.get_mut(&key) {
            Some(existing) => {
                let newer = |r: &WriteRow| {
                    (
                        r.event_ts.seconds,
                        r.event_ts.nanos,
                        r.created_ts.map(|c| (c.seconds, c.nanos)),
                    )
                };
                if newer(&candidate) >= newer(existing) {
                    *existing = candidate;
                }
            }
            None => {
                order.push(key.clone());
                latest.insert(key, candidate);
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| latest.remove(&k))
        .collect())
}

/// What a write did.
pub struct Written {
    pub online: WriteStats,
    /// Entity keys written online (for cache invalidation).
    pub keys: Vec<Vec<u8>>,
    /// Where offline rows went, if any.
    pub offline: Option<String>,
}

/// Performs a checked request: every view's rows are built (and so checked) first; then the
/// offline append (all or nothing), then the online writes, view by view. A write-time
/// on-demand view's rows are computed first (`transform`: Feast's transformation service).
pub async fn write(
    store: &OnlineStore,
    reg: &ServingRegistry,
    req: WriteRequest,
    config: &PushConfig,
    transform: Option<&quiver_transform::TransformClient>,
    metrics: &crate::metrics::Metrics,
) -> Result<Written, ApiError> {
    if let [i] = req.views[..]
        && reg.views[i].write_time.is_some()
    {
        let on_write = req.transform_on_write;
        return crate::write_time::write(
            store,
            reg,
            req,
            on_write,
            transform,
            metrics,
            config.key_ttl_seconds,
        )
        .await;
    }
    let mut batches = Vec::with_capacity(req.views.len());
    for &i in &req.views {
        let view = &reg.views[i];
        batches.push((i, view_rows(view, &req)?));
    }
    let WriteRequest {
        views,
        to,
        columns,
        rows,
        ..
    } = req;
    let offline = if to == PushTo::Online {
        None
    } else {
        let writer = config.offline.clone().ok_or_else(|| {
            ApiError::new(
                quiver_core::fault::ErrorKind::NotImplemented,
                "NotImplemented",
                "to: offline is not available on this server (no offline writer configured); push with to: online",
            )
        })?;
        // Every view of a push source shares its batch source.
        let view = &reg.views[views[0]];
        let uri = view.batch_source_uri.clone().ok_or_else(|| {
            unprocessable(format!(
                "feature view {}: its batch source is not a file source, so rows cannot be pushed offline",
                view.name
            ))
        })?;
        let endpoint = view.batch_source_s3_endpoint.clone();
        let mut hints: Vec<(String, Option<quiver_core::ValueType>)> = Vec::new();
        for &i in &views {
            let v = &reg.views[i];
            hints.extend(v.join_keys.iter().map(|(k, t)| (k.clone(), Some(*t))));
            hints.extend(v.features.iter().map(|(f, t)| (f.clone(), Some(*t))));
            hints.push((v.timestamp_field.clone(), None));
            hints.extend(v.created_field.clone().map(|c| (c, None)));
        }
        let view_name = view.name.clone();
        let shown = uri.clone();
        let written = tokio::task::spawn_blocking(move || {
            writer.append(&uri, &endpoint, &columns, rows, &hints)
        })
        .await
        .map_err(|e| ApiError::internal("OfflineWriteFailed", e.to_string()))?
        .map_err(|e| e.into_api(&view_name, &shown))?;
        Some(written)
    };
    if to == PushTo::Offline {
        return Ok(Written {
            online: WriteStats::default(),
            keys: Vec::new(),
            offline,
        });
    }
    let (online, keys) = write_online(store, reg, batches, config.key_ttl_seconds).await?;
    Ok(Written {
        online,
        keys,
        offline,
    })
}

/// Writes built rows to the online store, view by view; returns the rows written and skipped
/// and the entity keys touched (for cache invalidation).
async fn write_online(
    store: &OnlineStore,
    reg: &ServingRegistry,
    batches: Vec<(usize, Vec<WriteRow>)>,
    key_ttl_seconds: Option<u64>,
) -> Result<(WriteStats, Vec<Vec<u8>>), ApiError> {
    let mut stats = WriteStats::default();
    let mut keys = Vec::new();
    for (i, rows) in batches {
        let layout = Arc::clone(&reg.layouts[reg.views[i].layout]);
        keys.extend(rows.iter().map(|r| r.entity_key.clone()));
        stats += store
            .write(&layout, rows.into(), key_ttl_seconds)
            .await
            .map_err(|e| {
                ApiError::from_store(
                    &e,
                    format!("writing feature view {}: {e}", reg.views[i].name),
                )
            })?;
    }
    keys.sort_unstable();
    keys.dedup();
    Ok((stats, keys))
}
