//! Typing a request: which plan it asks for, its entity columns checked and typed by that plan,
//! and the slots to look up, one per distinct (view, entity key), that its rows fan out from.
//!
//! Everything here is the caller's fault when it fails (4xx, naming the field), and it all runs
//! before the cache is touched.

use std::collections::HashMap;

use quiver_core::{Value, entity_key, json};
use serde_json::Value as Json;

use crate::cache::{CacheKey, EntityBytes};
use crate::error::ApiError;
use crate::registry::{Plan, PlanKey, ServingRegistry};

/// Per request: one lookup per distinct (view, entity key).
pub(crate) struct Slot {
    pub key: CacheKey,
    /// The view's index in the registry.
    pub view: usize,
}

/// The slots of a request and, for each plan group, the slot of each row.
pub(crate) struct Slots {
    pub slots: Vec<Slot>,
    pub row_slots: Vec<Vec<usize>>,
}

/// The plan cache's key for the features a request names (a feature service wins over a list).
pub(crate) fn plan_key(
    features: Option<Vec<String>>,
    feature_service: Option<String>,
    full_names: bool,
) -> Result<PlanKey, ApiError> {
    match (feature_service, features) {
        (Some(name), _) => Ok(PlanKey::Service { name, full_names }),
        (None, Some(refs)) => Ok(PlanKey::Features { refs, full_names }),
        (None, None) => Err(ApiError::bad_request(
            "MissingFeatures",
            "the request names no features: give features: [\"view:feature\", ...] or feature_service",
        )),
    }
}

/// The number of entity rows: every column equally long, and within the limit.
pub(crate) fn entity_rows(columns: &[(String, Vec<Json>)], max: usize) -> Result<usize, ApiError> {
    let rows = columns.first().map_or(0, |(_, v)| v.len());
    for (name, values) in columns {
        if values.len() != rows {
            return Err(ApiError::bad_request(
                "RaggedEntityColumns",
                format!(
                    "entity columns have different lengths: {} has {rows} values, {name} has {}",
                    columns[0].0,
                    values.len()
                ),
            ));
        }
    }
    if rows > max {
        return Err(ApiError::too_large(
            "TooManyEntityRows",
            format!("{rows} entity rows; at most {max} per request"),
        ));
    }
    Ok(rows)
}

/// The plan's entity columns, found in the request and typed as the registry declares them.
pub(crate) fn typed_columns(
    plan: &Plan,
    columns: &[(String, Vec<Json>)],
) -> Result<Vec<Vec<Value>>, ApiError> {
    let mut typed: Vec<Vec<Value>> = Vec::with_capacity(plan.entity_columns.len());
    for (name, ty) in &plan.entity_columns {
        let (_, values) = columns.iter().find(|(n, _)| n == name).ok_or_else(|| {
            ApiError::bad_request("MissingEntityColumn", format!("entity column {name} is missing from entities: the requested features are keyed on it"))
        })?;
        let parsed = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json::parse_entity_value(v, *ty).map_err(|e| {
                    ApiError::bad_request(
                        "InvalidEntityValue",
                        format!("entities.{name}[{i}]: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<Value>, ApiError>>()?;
        typed.push(parsed);
    }
    Ok(typed)
}

/// The request fields the plan's on-demand views read, typed as declared, and taken out of
/// the request's columns (Feast does not echo them); a column that is also an entity column
/// stays.
pub(crate) fn request_fields(
    plan: &Plan,
    columns: &mut Vec<(String, Vec<Json>)>,
) -> Result<Vec<Vec<Value>>, ApiError> {
    let mut out = Vec::with_capacity(plan.request_fields.len());
    for (name, ty) in &plan.request_fields {
        let Some(at) = columns.iter().position(|(n, _)| n == name) else {
            return Err(ApiError::bad_request(
                "MissingRequestField",
                format!(
                    "request field {name} is missing from entities: an on-demand feature view requested reads it ({ty})"
                ),
            ));
        };
        let parsed = columns[at]
            .1
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json::parse_value(v, *ty).map_err(|e| {
                    ApiError::bad_request(
                        "InvalidRequestValue",
                        format!("entities.{name}[{i}]: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<Value>, ApiError>>()?;
        out.push(parsed);
    }
    columns.retain(|(n, _)| {
        !plan.request_fields.iter().any(|(f, _)| f == n)
            || plan.entity_columns.iter().any(|(c, _)| c == n)
    });
    Ok(out)
}

/// One slot per distinct (view, entity key); rows fan out from it.
pub(crate) fn slots(
    reg: &ServingRegistry,
    plan: &Plan,
    typed: &[Vec<Value>],
    rows: usize,
) -> Result<Slots, ApiError> {
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of: HashMap<(usize, EntityBytes), usize> = HashMap::new();
    let mut row_slots: Vec<Vec<usize>> = Vec::with_capacity(plan.groups.len());
    let mut key_buf = Vec::with_capacity(64);
    for group in &plan.groups {
        let view = &reg.views[group.view];
        let mut per_row = Vec::with_capacity(rows);
        // Row r of every key column of the group.
        #[allow(clippy::needless_range_loop)]
        for r in 0..rows {
            let pairs: smallvec::SmallVec<[(&str, &Value); 4]> = group
                .keys
                .iter()
                .map(|(k, col)| (k.as_str(), &typed[*col][r]))
                .collect();
            key_buf.clear();
            entity_key::serialize_into(&mut key_buf, &pairs)
                .map_err(|e| ApiError::bad_request("InvalidEntityValue", e.to_string()))?;
            // Small requests find duplicates by a linear scan; large ones through a map.
            let existing = if rows <= 32 {
                slots.iter().position(|s| {
                    s.view == group.view && s.key.entity.as_slice() == key_buf.as_slice()
                })
            } else {
                slot_of
                    .get(&(group.view, EntityBytes::from_slice(&key_buf)))
                    .copied()
            };
            let slot = match existing {
                Some(slot) => slot,
                None => {
                    let ek = EntityBytes::from_slice(&key_buf);
                    if rows > 32 {
                        slot_of.insert((group.view, ek.clone()), slots.len());
                    }
                    slots.push(Slot {
                        key: CacheKey {
                            view: view.id,
                            entity: ek,
                        },
                        view: group.view,
                    });
                    slots.len() - 1
                }
            };
            per_row.push(slot);
        }
        row_slots.push(per_row);
    }
    Ok(Slots { slots, row_slots })
}
