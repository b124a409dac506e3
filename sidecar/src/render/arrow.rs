//! The binary fast path: the same answer as the JSON response, as one Arrow IPC stream record
//! batch, for callers that send `Accept: application/vnd.apache.arrow.stream`.
//!
//! One row per entity row. Columns: the request's entity columns (typed by the registry), then
//! for each feature `name` (its Arrow type: Int32, Int64, Float32, Float64, Boolean, Utf8,
//! Binary, Timestamp(s, UTC), List of those; Json, Map and Struct values as JSON text), and
//! `name__status` (Utf8) and `name__event_timestamp` (Timestamp(ns, UTC)).
//!
//! Unlike the JSON renderer, which copies pre-rendered bytes, this one builds typed arrays from
//! the cached rows' decoded values.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampSecondBuilder,
};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampNanosecondArray, TimestampSecondArray,
};
use arrow_schema::{Field, Schema};
use quiver_core::{Value, ValueType, json};

use super::{ComputedColumn, Table, cell, feature_status};
use crate::api::Status;
use crate::error::ApiError;
use crate::registry::ServingRegistry;

pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";

/// A cell of a feature column: the value (None: null), its status, its event time (nanos).
pub type Cell<'a> = (Option<&'a Value>, Status, Option<i64>);

/// The Arrow IPC stream of `table`.
pub(crate) fn respond(
    reg: &ServingRegistry,
    table: &Table<'_>,
    computed: &[ComputedColumn],
) -> Result<Vec<u8>, ApiError> {
    let Table {
        plan,
        columns,
        typed,
        row_slots,
        entries,
        rows,
        now,
        ..
    } = *table;
    let mut out = Vec::with_capacity(columns.len() + plan.columns.len() * 3);
    // The request's join-key columns, in request order (other request columns are not echoed).
    for (name, _) in columns {
        if let Some(i) = plan.echoed(name) {
            let array = values_array(plan.entity_columns[i].1, typed[i].iter().map(Some));
            out.push((name.clone(), array));
        }
    }
    for col in &plan.columns {
        let view = &reg.views[plan.groups[col.group].view];
        let cells: Vec<Cell<'_>> = (0..rows)
            .map(
                |r| match cell(view, &entries[row_slots[col.group][r]], now) {
                    (status, Some(row)) => {
                        let ts = row
                            .event_ts
                            .seconds
                            .saturating_mul(1_000_000_000)
                            .saturating_add(i64::from(row.event_ts.nanos));
                        (
                            row.values.get(col.feature).filter(|v| !v.is_null()),
                            feature_status(status, Some(row), col.feature),
                            Some(ts),
                        )
                    }
                    (status, None) => (None, status, None),
                },
            )
            .collect();
        let dtype = view.features[col.feature].1;
        out.push((
            col.name.clone(),
            values_array(dtype, cells.iter().map(|c| c.0)),
        ));
        out.push((
            format!("{}__status", col.name),
            status_array(cells.iter().map(|c| c.1)),
        ));
        out.push((
            format!("{}__event_timestamp", col.name),
            timestamp_array(cells.iter().map(|c| c.2)),
        ));
    }
    for col in computed {
        out.push((
            col.name.clone(),
            values_array(
                col.dtype,
                col.values.iter().map(|v| Some(v).filter(|v| !v.is_null())),
            ),
        ));
        out.push((
            format!("{}__status", col.name),
            status_array(col.statuses.iter().copied()),
        ));
        out.push((
            format!("{}__event_timestamp", col.name),
            timestamp_array(col.values.iter().map(|_| Some(0))),
        ));
    }
    encode(out)
}

/// Builds a typed array of entity or feature values.
pub fn values_array<'a>(
    dtype: ValueType,
    cells: impl Iterator<Item = Option<&'a Value>>,
) -> ArrayRef {
    macro_rules! list {
        ($builder:expr, $($pat:pat => $items:expr),+) => {{
            let mut b = ListBuilder::new($builder);
            for c in cells {
                match c {
                    $(Some($pat) => {
                        for item in $items {
                            b.values().append_value(item);
                        }
                        b.append(true);
                    })+
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match dtype {
        ValueType::Int32 => Arc::new(Int32Array::from_iter(cells.map(|c| match c {
            Some(Value::Int32(v)) => Some(*v),
            _ => None,
        }))),
        ValueType::Int64 => Arc::new(Int64Array::from_iter(cells.map(|c| match c {
            Some(Value::Int64(v)) => Some(*v),
            _ => None,
        }))),
        ValueType::Float => Arc::new(Float32Array::from_iter(cells.map(|c| match c {
            Some(Value::Float(v)) => Some(*v),
            _ => None,
        }))),
        ValueType::Double => Arc::new(Float64Array::from_iter(cells.map(|c| match c {
            Some(Value::Double(v)) => Some(*v),
            _ => None,
        }))),
        ValueType::Bool => Arc::new(BooleanArray::from_iter(cells.map(|c| match c {
            Some(Value::Bool(v)) => Some(*v),
            _ => None,
        }))),
        ValueType::String
        | ValueType::Json
        | ValueType::Uuid
        | ValueType::TimeUuid
        | ValueType::Decimal => Arc::new(StringArray::from_iter(cells.map(|c| match c {
            Some(
                Value::String(s)
                | Value::Json(s)
                | Value::Uuid(s)
                | Value::TimeUuid(s)
                | Value::Decimal(s),
            ) => Some(s.as_str()),
            _ => None,
        }))),
        // As Feast's server prints it: ISO 8601 in its zone.
        ValueType::ZonedTimestamp => Arc::new(StringArray::from_iter(cells.map(|c| match c {
            Some(Value::ZonedTimestamp { seconds, zone }) => json::zoned_iso(*seconds, zone),
            _ => None,
        }))),
        ValueType::Bytes | ValueType::PdfBytes | ValueType::ImageBytes => {
            Arc::new(BinaryArray::from_iter(cells.map(|c| match c {
                Some(Value::Bytes(b)) => Some(b.as_slice()),
                _ => None,
            })))
        }
        ValueType::UnixTimestamp => Arc::new(
            TimestampSecondArray::from_iter(cells.map(|c| match c {
                Some(Value::UnixTimestamp(v)) => Some(*v),
                _ => None,
            }))
            .with_timezone("UTC"),
        ),
        ValueType::Int32List | ValueType::Int32Set => {
            list!(Int32Builder::new(), Value::Int32List(l) | Value::Int32Set(l) => l.iter().copied())
        }
        ValueType::Int64List | ValueType::Int64Set => {
            list!(Int64Builder::new(), Value::Int64List(l) | Value::Int64Set(l) => l.iter().copied())
        }
        ValueType::FloatList | ValueType::FloatSet => {
            list!(Float32Builder::new(), Value::FloatList(l) | Value::FloatSet(l) => l.iter().copied())
        }
        ValueType::DoubleList | ValueType::DoubleSet => {
            list!(Float64Builder::new(), Value::DoubleList(l) | Value::DoubleSet(l) => l.iter().copied())
        }
        ValueType::BoolList | ValueType::BoolSet => {
            list!(BooleanBuilder::new(), Value::BoolList(l) | Value::BoolSet(l) => l.iter().copied())
        }
        ValueType::StringList
        | ValueType::StringSet
        | ValueType::JsonList
        | ValueType::UuidList
        | ValueType::TimeUuidList
        | ValueType::UuidSet
        | ValueType::TimeUuidSet
        | ValueType::DecimalList
        | ValueType::DecimalSet => {
            list!(StringBuilder::new(), Value::StringList(l) | Value::StringSet(l) | Value::JsonList(l) | Value::UuidList(l) | Value::TimeUuidList(l) | Value::UuidSet(l) | Value::TimeUuidSet(l) | Value::DecimalList(l) | Value::DecimalSet(l) => l.iter())
        }
        ValueType::BytesList | ValueType::BytesSet => {
            list!(BinaryBuilder::new(), Value::BytesList(l) | Value::BytesSet(l) => l.iter())
        }
        ValueType::UnixTimestampList | ValueType::UnixTimestampSet => {
            list!(TimestampSecondBuilder::new().with_timezone("UTC"), Value::UnixTimestampList(l) | Value::UnixTimestampSet(l) => l.iter().copied())
        }
        // Map, Struct, nested lists and the rest: their JSON text (a ScalarMap's is null, as
        // Feast's server answers it).
        _ => Arc::new(StringArray::from_iter(
            cells.map(|c| c.filter(|v| !v.is_null()).map(json::value_to_string)),
        )),
    }
}

pub fn status_array(statuses: impl Iterator<Item = Status>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        statuses.map(|s| s.as_json().trim_matches('"')),
    ))
}

pub fn timestamp_array(nanos: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter(nanos).with_timezone("UTC"))
}

/// Writes named columns as an Arrow IPC stream with one record batch.
pub fn encode(columns: Vec<(String, ArrayRef)>) -> Result<Vec<u8>, ApiError> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(name, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, a)| a).collect();
    let internal = |e: arrow_schema::ArrowError| {
        ApiError::internal("ArrowEncodingFailed", format!("arrow encoding failed: {e}"))
    };
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(internal)?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    {
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(internal)?;
        w.write(&batch).map_err(internal)?;
        w.finish().map_err(internal)?;
    }
    Ok(out)
}
