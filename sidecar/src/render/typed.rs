//! The answer as typed columns instead of bytes: what the KServe enrichment
//! ([`crate::enrich`]) builds model inputs from, with the statuses both byte encodings give
//! (decided by the same [`cell`] and [`feature_status`]).

use quiver_core::{Value, ValueType};

use super::{Table, cell, computed, feature_status};
use crate::api::Status;
use crate::engine::Output;
use crate::error::ApiError;
use crate::registry::ServingRegistry;

/// Render an answer as a [`FeatureTable`].
#[derive(Debug, Clone, Copy)]
pub struct Typed;

/// A request's features: one column per feature, in the plan's output order (a feature
/// service's order), computed (native on-demand) columns last.
#[derive(Debug)]
pub struct FeatureTable {
    pub rows: usize,
    pub columns: Vec<FeatureColumn>,
}

/// One feature's values and statuses, one per entity row; a value is `Value::Null` where the
/// status is NOT_FOUND or INVALID.
#[derive(Debug)]
pub struct FeatureColumn {
    pub name: String,
    pub dtype: ValueType,
    pub values: Vec<Value>,
    pub statuses: Vec<Status>,
}

impl Output for Typed {
    type Out = FeatureTable;
    fn render_table(
        self,
        reg: &ServingRegistry,
        table: &Table<'_>,
    ) -> Result<FeatureTable, ApiError> {
        let Table {
            plan,
            row_slots,
            entries,
            rows,
            now,
            ..
        } = *table;
        let mut columns = Vec::with_capacity(plan.columns.len() + plan.computed.len());
        for col in &plan.columns {
            let view = &reg.views[plan.groups[col.group].view];
            let mut values = Vec::with_capacity(rows);
            let mut statuses = Vec::with_capacity(rows);
            for r in 0..rows {
                let (status, row) = cell(view, &entries[row_slots[col.group][r]], now);
                statuses.push(feature_status(status, row, col.feature));
                values.push(
                    row.and_then(|row| row.values.get(col.feature))
                        .cloned()
                        .unwrap_or(Value::Null),
                );
            }
            columns.push(FeatureColumn {
                name: col.name.clone(),
                dtype: view.features[col.feature].1,
                values,
                statuses,
            });
        }
        for c in computed(table) {
            columns.push(FeatureColumn {
                name: c.name,
                dtype: c.dtype,
                values: c.values,
                statuses: c.statuses,
            });
        }
        Ok(FeatureTable { rows, columns })
    }
}
