//! Feast's response JSON, written straight into one `String`: the request's entity columns
//! echoed, then each feature column's values, statuses and event times.
//!
//! A cache hit only copies bytes: every value's JSON and its row's event time were rendered when
//! the row was cached ([`crate::cache::Row`]). Status and event time depend on the (view, entity)
//! only, so each plan group's `statuses` and `event_timestamps` arrays are rendered once and
//! copied into every column of the group; a group with a value that did not decode gets
//! per-column arrays instead (that value's status is INVALID).

use quiver_core::json;
use serde_json::Value as Json;

use super::{Table, cell, feature_status};
use crate::api::Status;
use crate::registry::ServingRegistry;

const EPOCH_TS: &str = "\"1970-01-01T00:00:00Z\"";

/// The response JSON of `table`.
pub(crate) fn respond(reg: &ServingRegistry, table: &Table<'_>) -> String {
    let Table {
        plan,
        columns,
        row_slots,
        entries,
        rows,
        now,
        ..
    } = *table;
    // Only the request's join-key columns come back, as from Feast (a request-only column, e.g.
    // an on-demand view's input, is not an output).
    let columns: smallvec::SmallVec<[&(String, Vec<Json>); 8]> = columns
        .iter()
        .filter(|(name, _)| plan.echoed(name).is_some())
        .collect();
    let mut out =
        String::with_capacity(512 + rows * (plan.columns.len() * 64 + columns.len() * 64));
    out.push_str("{\"metadata\":{\"feature_names\":[");
    for (i, (name, _)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(&mut out, name);
    }
    if !columns.is_empty() && !plan.names_json.is_empty() {
        out.push(',');
    }
    out.push_str(&plan.names_json);
    out.push_str("]},\"results\":[");
    // Entity columns echo the request; a number given for a String join key comes back as the
    // text it was keyed by, as Feast echoes it.
    for (c, (name, values)) in columns.iter().map(|c| (&c.0, &c.1)).enumerate() {
        if c > 0 {
            out.push(',');
        }
        let as_text = plan
            .entity_columns
            .iter()
            .any(|(n, ty)| n == name && *ty == quiver_core::ValueType::String);
        out.push_str("{\"values\":[");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match v {
                Json::Number(n) if as_text => json::write_str(&mut out, &n.to_string()),
                _ => write_json(&mut out, v),
            }
        }
        out.push_str("],\"statuses\":[");
        push_repeated(&mut out, Status::Present.as_json(), rows);
        out.push_str("],\"event_timestamps\":[");
        push_repeated(&mut out, EPOCH_TS, rows);
        out.push_str("]}");
    }
    // Each group's tail once; `None` for a group holding a value that did not decode.
    let mut tails: Vec<Option<String>> = Vec::with_capacity(plan.groups.len());
    for (g, group) in plan.groups.iter().enumerate() {
        let view = &reg.views[group.view];
        let mut corrupt = false;
        let cells: smallvec::SmallVec<[(Status, &str); 16]> = (0..rows)
            .map(|r| match cell(view, &entries[row_slots[g][r]], now) {
                (status, Some(row)) => {
                    corrupt |= row.has_corrupt();
                    (status, row.ts_json())
                }
                (status, None) => (status, EPOCH_TS),
            })
            .collect();
        if corrupt {
            tails.push(None);
            continue;
        }
        let mut tail = String::with_capacity(64 + rows * 48);
        write_tail(&mut tail, cells.iter().copied());
        tails.push(Some(tail));
    }
    for (c, col) in plan.columns.iter().enumerate() {
        if c > 0 || !columns.is_empty() {
            out.push(',');
        }
        out.push_str("{\"values\":[");
        for r in 0..rows {
            if r > 0 {
                out.push(',');
            }
            let value = match &entries[row_slots[col.group][r]] {
                Ok(entry) => entry
                    .row
                    .as_ref()
                    .and_then(|row| row.value_json(col.feature))
                    .map_or("null", |j| j),
                Err(_) => "null",
            };
            out.push_str(value);
        }
        match &tails[col.group] {
            Some(tail) => out.push_str(tail),
            None => {
                let view = &reg.views[plan.groups[col.group].view];
                let cells =
                    (0..rows).map(
                        |r| match cell(view, &entries[row_slots[col.group][r]], now) {
                            (status, Some(row)) => (
                                feature_status(status, Some(row), col.feature),
                                row.ts_json(),
                            ),
                            (status, None) => (status, EPOCH_TS),
                        },
                    );
                write_tail(&mut out, cells);
            }
        }
    }
    out.push_str("]}");
    out
}

/// `],"statuses":[...],"event_timestamps":[...]}`: the end of a feature column.
fn write_tail<'a>(out: &mut String, cells: impl Iterator<Item = (Status, &'a str)> + Clone) {
    out.push_str("],\"statuses\":[");
    for (r, (status, _)) in cells.clone().enumerate() {
        if r > 0 {
            out.push(',');
        }
        out.push_str(status.as_json());
    }
    out.push_str("],\"event_timestamps\":[");
    for (r, (_, ts)) in cells.enumerate() {
        if r > 0 {
            out.push(',');
        }
        out.push_str(ts);
    }
    out.push_str("]}");
}

/// Echoes a request value: integers without the formatting machinery, the rest via serde_json.
fn write_json(out: &mut String, v: &Json) {
    match v {
        Json::Number(n) if n.is_i64() => json::write_int(out, n.as_i64().unwrap_or_default()),
        Json::String(s) => json::write_str(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn push_repeated(out: &mut String, item: &str, n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
}
