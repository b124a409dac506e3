//! Rendering an answer: the same table as Feast's JSON ([`json`]) or as one Arrow IPC record
//! batch ([`arrow`]), side by side. Both read a [`Table`] and decide each cell's status through
//! [`cell`] and [`feature_status`], so the two encodings never disagree.
//!
//! Statuses: a row older than its view's ttl is OUTSIDE_MAX_AGE (value still given, as Feast
//! does); an entity never written is NOT_FOUND; a read that failed (degraded mode) or a stored
//! value that does not decode is INVALID with a null value, never PRESENT.

pub mod arrow;
pub mod json;
pub mod typed;

use std::time::Duration;

use quiver_core::Value;
use quiver_core::time::Timestamp;
use quiver_online_store::StoreError;
use serde_json::Value as Json;

use crate::api::Status;
use crate::cache::{Entry, Row};
use crate::error::ApiError;
use crate::registry::{Plan, ServingRegistry, ServingView};

/// The response encoding a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Feast's JSON.
    Json,
    /// One Arrow IPC stream record batch (`Accept: application/vnd.apache.arrow.stream`).
    Arrow,
}

/// Everything an answer is rendered from, JSON or Arrow.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    pub plan: &'a Plan,
    /// The request's entity columns, echoed first.
    pub columns: &'a [(String, Vec<Json>)],
    /// The plan's entity columns, typed.
    pub typed: &'a [Vec<Value>],
    /// The plan's request fields (inputs of native on-demand views), typed.
    pub request: &'a [Vec<Value>],
    /// For each plan group, the slot of each row.
    pub row_slots: &'a [Vec<usize>],
    /// The lookup of each slot.
    pub entries: &'a [Result<&'a Entry, &'a StoreError>],
    pub rows: usize,
    /// Wall-clock now (since the Unix epoch), for ttl.
    pub now: Duration,
}

/// Renders `table` in `format`.
pub(crate) fn render(
    reg: &ServingRegistry,
    table: &Table<'_>,
    format: Format,
) -> Result<Vec<u8>, ApiError> {
    let computed = computed(table);
    Ok(match format {
        Format::Json => json::respond(reg, table, &computed).into_bytes(),
        Format::Arrow => arrow::respond(reg, table, &computed)?,
    })
}

/// The values of the plan's computed columns (native on-demand views), in column order: each
/// view's program evaluated row by row over its source features (as read, whatever their
/// status: a missing row reads as nulls) and the request fields. Their status is PRESENT and
/// their event time the epoch, as Feast gives on-demand features; INVALID where a source read
/// failed.
pub(crate) fn computed(table: &Table<'_>) -> Vec<ComputedColumn> {
    use crate::registry::PlanInput;
    static NULL: Value = Value::Null;
    let Table {
        plan,
        request,
        row_slots,
        entries,
        rows,
        ..
    } = *table;
    let mut out = Vec::new();
    for view in &plan.computed {
        let mut values: Vec<Vec<Value>> = view
            .outputs
            .iter()
            .map(|_| Vec::with_capacity(rows))
            .collect();
        let mut statuses = vec![Status::Present; rows];
        for (r, status) in statuses.iter_mut().enumerate() {
            let input = |slot: usize| -> &Value {
                match view.inputs[slot] {
                    PlanInput::Feature { group, feature } => match &entries[row_slots[group][r]] {
                        Ok(entry) => entry
                            .row
                            .as_ref()
                            .and_then(|row| row.values.get(feature))
                            .unwrap_or(&NULL),
                        Err(_) => &NULL,
                    },
                    PlanInput::Request(i) => request[i].get(r).unwrap_or(&NULL),
                }
            };
            if view.inputs.iter().any(|i| {
                matches!(i, PlanInput::Feature { group, .. } if entries[row_slots[*group][r]].is_err())
            }) {
                *status = Status::Invalid;
            }
            for (k, (output, _)) in view.outputs.iter().enumerate() {
                values[k].push(view.program.outputs[*output].1.eval_row(&input));
            }
        }
        for ((output, name), values) in view.outputs.iter().zip(values) {
            out.push(ComputedColumn {
                name: name.clone(),
                dtype: view.program.outputs[*output].0.dtype,
                values,
                statuses: statuses.clone(),
            });
        }
    }
    out
}

/// One computed column's values and statuses.
pub(crate) struct ComputedColumn {
    pub name: String,
    pub dtype: quiver_core::ValueType,
    pub values: Vec<Value>,
    pub statuses: Vec<Status>,
}

/// The status of one (view, entity) read, and its row when there is one.
pub(crate) fn cell<'a>(
    view: &ServingView,
    entry: &Result<&'a Entry, &StoreError>,
    now: Duration,
) -> (Status, Option<&'a Row>) {
    match entry {
        Ok(entry) => match &entry.row {
            Some(row) if expired(view.ttl, row.event_ts, now) => (Status::OutsideMaxAge, Some(row)),
            Some(row) => (Status::Present, Some(row)),
            None => (Status::NotFound, None),
        },
        Err(_) => (Status::Invalid, None),
    }
}

/// The status of one feature of a cell: INVALID where its stored value did not decode.
#[inline]
pub(crate) fn feature_status(status: Status, row: Option<&Row>, feature: usize) -> Status {
    match row {
        Some(row) if row.has_corrupt() && row.is_corrupt(feature) => Status::Invalid,
        _ => status,
    }
}

/// Whether a value with this event time is older than the view's ttl (zero: never).
pub(crate) fn expired(ttl: Duration, event_ts: Timestamp, now: Duration) -> bool {
    if ttl.is_zero() {
        return false;
    }
    let event = Duration::new(
        event_ts.seconds.max(0) as u64,
        event_ts.nanos.clamp(0, 999_999_999) as u32,
    );
    now.saturating_sub(event) > ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_expiry_is_strictly_older_than_ttl() {
        let ttl = Duration::from_secs(3600);
        let now = Duration::from_secs(10_000);
        let at = |s| Timestamp {
            seconds: s,
            nanos: 0,
        };
        assert!(!expired(ttl, at(10_000 - 3600), now));
        assert!(expired(ttl, at(10_000 - 3601), now));
        assert!(!expired(Duration::ZERO, at(0), now));
    }

    #[test]
    fn a_value_that_did_not_decode_is_invalid_not_present() {
        let row = Row::with_corrupt(
            Timestamp::default(),
            vec![Value::Int64(1), Value::Null],
            vec![1],
        );
        assert_eq!(
            feature_status(Status::Present, Some(&row), 0),
            Status::Present
        );
        assert_eq!(
            feature_status(Status::Present, Some(&row), 1),
            Status::Invalid
        );
        assert_eq!(
            feature_status(Status::OutsideMaxAge, Some(&row), 1),
            Status::Invalid
        );
    }
}
