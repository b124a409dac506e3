//! `quiver apply`: diff a project's definitions against the registry and rewrite it.
//!
//! The definitions are the truth for the objects they can express (entities, file/request/push
//! sources, feature views, feature services, native on-demand views): those are created,
//! updated or deleted to match. Label views declared in the definitions are created and updated,
//! but one the definitions do not name is kept, never deleted: it holds human labels (Feast's own
//! `feast apply` is the way to remove it). Objects definitions cannot express are never touched:
//! Python on-demand views (unless a definition takes over the name), stream feature views,
//! sources of other types, and every other project. An unchanged object keeps its exact bytes,
//! so applying the same definitions twice changes nothing.

use std::collections::HashMap;
use std::fmt;

use prost::Message;
use quiver_core::model::{
    DUMMY_ENTITY, DataSource, Entity, FeatureService, FeatureView, Meta, Project, SourceKind,
    ViewKind,
};
use quiver_core::on_demand::{OnDemandView, Transformation};
use quiver_core::registry::{ObjectKind, ObjectWrite, ProjectRegistry, RegistryFile};
use quiver_core::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub kind: ObjectKind,
    pub name: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            Action::Create => "Created",
            Action::Update => "Updated",
            Action::Delete => "Deleted",
        };
        let what = match self.kind {
            ObjectKind::Project => "project",
            ObjectKind::Entity => "entity",
            ObjectKind::DataSource => "data source",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::StreamFeatureView => "stream feature view",
            ObjectKind::FeatureService => "feature service",
            ObjectKind::OnDemandFeatureView => "on-demand feature view",
            ObjectKind::LabelView => "label view",
        };
        write!(f, "{verb} {what} {}", self.name)
    }
}

/// What an apply did (or would do): every change, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Objects left as they were because definitions cannot express them.
    pub kept: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Objects compare equal for apply when they differ only in registry bookkeeping.
fn strip_entity(e: &Entity) -> Entity {
    Entity {
        meta: Meta::default(),
        ..e.clone()
    }
}

fn strip_view(v: &FeatureView) -> FeatureView {
    FeatureView {
        meta: Meta::default(),
        materialization_intervals: Vec::new(),
        ..v.clone()
    }
}

fn strip_service(s: &FeatureService) -> FeatureService {
    FeatureService {
        meta: Meta::default(),
        ..s.clone()
    }
}

fn strip_on_demand(v: &OnDemandView) -> OnDemandView {
    OnDemandView {
        meta: Meta::default(),
        ..v.clone()
    }
}

/// Whether definitions can express this source (so apply manages it).
fn managed_source(s: &DataSource) -> bool {
    !matches!(s.kind, SourceKind::Other { .. })
}

/// The first of `items` by name (as `iter().find` would), in one pass: lookups per object
/// would make an apply quadratic in the number of objects.
fn by_name<'a, T, K: std::hash::Hash + Eq + 'a>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> HashMap<K, &'a T> {
    let mut out = HashMap::with_capacity(items.len());
    for it in items {
        out.entry(key(it)).or_insert(it);
    }
    out
}

/// Diffs `desired` (from definitions) against `current` (from the registry) and applies the
/// result to `file`, stamping created and updated objects with `now`. Returns the plan.
pub fn apply(
    file: &mut RegistryFile,
    desired: &ProjectRegistry,
    now: Timestamp,
) -> Result<Plan, quiver_core::Error> {
    let project = desired.project.as_str();
    let current = file.project(project)?;
    let have_entities = by_name(&current.entities, |e| e.name.as_str());
    let want_entities = by_name(&desired.entities, |e| e.name.as_str());
    let have_sources = by_name(&current.data_sources, |s| s.name.as_str());
    let want_sources = by_name(&desired.data_sources, |s| s.name.as_str());
    let view_key = |v: &'_ FeatureView| (v.name.clone(), ObjectKind::of_view(v));
    let have_views = by_name(&current.feature_views, view_key);
    let want_views = by_name(&desired.feature_views, view_key);
    let have_services = by_name(&current.feature_services, |s| s.name.as_str());
    let want_services = by_name(&desired.feature_services, |s| s.name.as_str());
    let have_odfvs = by_name(&current.on_demand_views, |v| v.name.as_str());
    let want_odfvs = by_name(&desired.on_demand_views, |v| v.name.as_str());
    let mut plan = Plan::default();
    let mut writes: Vec<ObjectWrite> = Vec::new();
    let mut record =
        |plan: &mut Plan, action: Action, kind: ObjectKind, name: &str, bytes: Option<Vec<u8>>| {
            plan.changes.push(Change {
                action,
                kind,
                name: name.to_owned(),
            });
            writes.push(ObjectWrite {
                kind,
                name: name.to_owned(),
                bytes,
            });
        };
    let created_meta = || Meta {
        created: Some(now),
        last_updated: Some(now),
    };
    let updated_meta = |old: &Meta| Meta {
        created: old.created.or(Some(now)),
        last_updated: Some(now),
    };

    if current.project_object.is_none() {
        let p = Project {
            name: project.to_owned(),
            description: String::new(),
            tags: Default::default(),
            owner: String::new(),
            meta: created_meta(),
        };
        record(
            &mut plan,
            Action::Create,
            ObjectKind::Project,
            project,
            Some(p.to_proto().encode_to_vec()),
        );
    }

    // Entities.
    for want in &desired.entities {
        match have_entities.get(want.name.as_str()).copied() {
            Some(have) if strip_entity(have) == strip_entity(want) => {}
            Some(have) => {
                let e = Entity {
                    meta: updated_meta(&have.meta),
                    ..want.clone()
                };
                record(
                    &mut plan,
                    Action::Update,
                    ObjectKind::Entity,
                    &want.name,
                    Some(e.to_proto(project).encode_to_vec()),
                );
            }
            None => {
                let e = Entity {
                    meta: created_meta(),
                    ..want.clone()
                };
                record(
                    &mut plan,
                    Action::Create,
                    ObjectKind::Entity,
                    &want.name,
                    Some(e.to_proto(project).encode_to_vec()),
                );
            }
        }
    }
    for have in &current.entities {
        // Feast's hidden entity belongs to entity-less and on-demand views, never to definitions.
        if have.name != DUMMY_ENTITY && !want_entities.contains_key(have.name.as_str()) {
            record(
                &mut plan,
                Action::Delete,
                ObjectKind::Entity,
                &have.name,
                None,
            );
        }
    }

    // Data sources (no bookkeeping fields of their own).
    for want in &desired.data_sources {
        let bytes = Some(want.to_proto(project).encode_to_vec());
        match have_sources.get(want.name.as_str()).copied() {
            Some(have) if have == want => {}
            Some(_) => record(
                &mut plan,
                Action::Update,
                ObjectKind::DataSource,
                &want.name,
                bytes,
            ),
            None => record(
                &mut plan,
                Action::Create,
                ObjectKind::DataSource,
                &want.name,
                bytes,
            ),
        }
    }
    for have in &current.data_sources {
        if !want_sources.contains_key(have.name.as_str()) {
            if managed_source(have) {
                record(
                    &mut plan,
                    Action::Delete,
                    ObjectKind::DataSource,
                    &have.name,
                    None,
                );
            } else {
                plan.kept.push(format!(
                    "data source {} (a type definitions cannot express)",
                    have.name
                ));
            }
        }
    }

    // Feature views and label views, each in its own registry list. A stream view of the same
    // name is left alone; definitions make batch and label views.
    let encode_view = |v: &FeatureView| match v.kind {
        ViewKind::Label(_) => v.to_label_proto(project).encode_to_vec(),
        _ => v.to_proto(project).encode_to_vec(),
    };
    for want in &desired.feature_views {
        let kind = ObjectKind::of_view(want);
        let have = have_views.get(&(want.name.clone(), kind)).copied();
        match have {
            Some(have) if strip_view(have) == strip_view(want) => {}
            Some(have) => {
                let v = FeatureView {
                    meta: updated_meta(&have.meta),
                    materialization_intervals: have.materialization_intervals.clone(),
                    ..want.clone()
                };
                record(
                    &mut plan,
                    Action::Update,
                    kind,
                    &want.name,
                    Some(encode_view(&v)),
                );
            }
            None => {
                let v = FeatureView {
                    meta: created_meta(),
                    ..want.clone()
                };
                record(
                    &mut plan,
                    Action::Create,
                    kind,
                    &want.name,
                    Some(encode_view(&v)),
                );
            }
        }
    }
    let declared = |v: &FeatureView| want_views.contains_key(&view_key(v));
    for have in &current.feature_views {
        match have.kind {
            ViewKind::Batch if !declared(have) => {
                record(
                    &mut plan,
                    Action::Delete,
                    ObjectKind::FeatureView,
                    &have.name,
                    None,
                );
            }
            ViewKind::Stream => plan.kept.push(format!("stream feature view {}", have.name)),
            ViewKind::Label(_) if !declared(have) => {
                plan.kept.push(format!("label view {}", have.name));
            }
            ViewKind::Batch | ViewKind::Label(_) => {}
        }
    }

    // Feature services.
    for want in &desired.feature_services {
        match have_services.get(want.name.as_str()).copied() {
            Some(have) if strip_service(have) == strip_service(want) => {}
            Some(have) => {
                let s = FeatureService {
                    meta: updated_meta(&have.meta),
                    ..want.clone()
                };
                record(
                    &mut plan,
                    Action::Update,
                    ObjectKind::FeatureService,
                    &want.name,
                    Some(s.to_proto(project).encode_to_vec()),
                );
            }
            None => {
                let s = FeatureService {
                    meta: created_meta(),
                    ..want.clone()
                };
                record(
                    &mut plan,
                    Action::Create,
                    ObjectKind::FeatureService,
                    &want.name,
                    Some(s.to_proto(project).encode_to_vec()),
                );
            }
        }
    }
    for have in &current.feature_services {
        if !want_services.contains_key(have.name.as_str()) {
            record(
                &mut plan,
                Action::Delete,
                ObjectKind::FeatureService,
                &have.name,
                None,
            );
        }
    }
    // On-demand views: definitions declare native ones; Python ones (from `feast apply`) are
    // kept unless a definition takes over their name.
    for want in &desired.on_demand_views {
        let kind = ObjectKind::OnDemandFeatureView;
        match have_odfvs.get(want.name.as_str()).copied() {
            Some(have) if strip_on_demand(have) == strip_on_demand(want) => {}
            Some(have) => {
                let v = OnDemandView {
                    meta: updated_meta(&have.meta),
                    ..want.clone()
                };
                let bytes = v.to_proto(project).encode_to_vec();
                record(&mut plan, Action::Update, kind, &want.name, Some(bytes));
            }
            None => {
                let v = OnDemandView {
                    meta: created_meta(),
                    ..want.clone()
                };
                let bytes = v.to_proto(project).encode_to_vec();
                record(&mut plan, Action::Create, kind, &want.name, Some(bytes));
            }
        }
    }
    for odfv in &current.on_demand_views {
        if want_odfvs.contains_key(odfv.name.as_str()) {
            continue;
        }
        if matches!(odfv.transformation, Transformation::Native { .. }) {
            record(
                &mut plan,
                Action::Delete,
                ObjectKind::OnDemandFeatureView,
                &odfv.name,
                None,
            );
        } else {
            plan.kept
                .push(format!("on-demand feature view {}", odfv.name));
        }
    }

    file.apply(project, &writes)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions;

    const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet}
feature_views:
  - name: hourly
    entities: [driver]
    ttl: 1d
    source: stats
    schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]
feature_services:
  - {name: svc, features: [hourly]}
"#;

    fn ts(s: i64) -> Timestamp {
        Timestamp {
            seconds: s,
            nanos: 0,
        }
    }

    #[test]
    fn apply_creates_then_is_idempotent_then_updates_and_deletes() {
        let desired = definitions::parse(&[("features.yaml", DEFS)], "demo").unwrap();
        let mut file = RegistryFile::empty();
        let plan = apply(&mut file, &desired, ts(100)).unwrap();
        let created: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            created,
            [
                "Created project demo",
                "Created entity driver",
                "Created data source stats",
                "Created feature view hourly",
                "Created feature service svc"
            ]
        );
        let bytes = file.encode("v1", ts(100));

        // Same definitions again: nothing changes, not even a byte of the objects.
        let mut again = RegistryFile::decode(&bytes).unwrap();
        let plan = apply(&mut again, &desired, ts(200)).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(again.encode("v1", ts(100)), bytes);

        // A changed ttl updates the view, keeping its created time; a removed service is deleted.
        let changed = DEFS.replace("ttl: 1d", "ttl: 2h").replace(
            "feature_services:\n  - {name: svc, features: [hourly]}\n",
            "",
        );
        let desired2 = definitions::parse(&[("features.yaml", &changed)], "demo").unwrap();
        let plan = apply(&mut again, &desired2, ts(300)).unwrap();
        let changes: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            changes,
            ["Updated feature view hourly", "Deleted feature service svc"]
        );
        let view = again.project("demo").unwrap().feature_views.remove(0);
        assert_eq!(view.ttl.as_secs(), 7200);
        assert_eq!(view.meta.created, Some(ts(100)));
        assert_eq!(view.meta.last_updated, Some(ts(300)));
    }

    #[test]
    fn native_on_demand_views_are_managed_and_python_ones_kept() {
        let odfv = |expr: &str| {
            format!(
                "{DEFS}on_demand_feature_views:\n  - name: doubled\n    sources: [hourly]\n    features:\n      - {{name: twice, dtype: Float64, expr: \"{expr}\"}}\n"
            )
        };
        let desired =
            definitions::parse(&[("features.yaml", &odfv("hourly.conv_rate * 2"))], "demo")
                .unwrap();
        let mut file = RegistryFile::empty();
        // A Python on-demand view `feast apply` wrote, in the same project.
        let python = OnDemandView {
            name: "python_odfv".into(),
            transformation: Transformation::Pandas(quiver_core::on_demand::Udf {
                name: "f".into(),
                body_text: "def f(df): return df".into(),
            }),
            ..desired.on_demand_views[0].clone()
        };
        file.apply(
            "demo",
            &[ObjectWrite {
                kind: ObjectKind::OnDemandFeatureView,
                name: python.name.clone(),
                bytes: Some(python.to_proto("demo").encode_to_vec()),
            }],
        )
        .unwrap();
        let plan = apply(&mut file, &desired, ts(100)).unwrap();
        assert!(
            plan.changes
                .iter()
                .any(|c| c.to_string() == "Created on-demand feature view doubled")
        );
        assert_eq!(plan.kept, ["on-demand feature view python_odfv"]);
        let bytes = file.encode("v1", ts(100));

        let mut again = RegistryFile::decode(&bytes).unwrap();
        assert!(apply(&mut again, &desired, ts(200)).unwrap().is_empty());

        let changed =
            definitions::parse(&[("features.yaml", &odfv("hourly.conv_rate * 3"))], "demo")
                .unwrap();
        let plan = apply(&mut again, &changed, ts(300)).unwrap();
        let changes: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(changes, ["Updated on-demand feature view doubled"]);
        let stored = again.project("demo").unwrap();
        let v = stored.on_demand_view("doubled").unwrap();
        assert_eq!(v.meta.created, Some(ts(100)));
        assert!(
            matches!(&v.transformation, Transformation::Native { expressions } if expressions[0].1 == "hourly.conv_rate * 3")
        );

        let removed = definitions::parse(&[("features.yaml", DEFS)], "demo").unwrap();
        let plan = apply(&mut again, &removed, ts(400)).unwrap();
        let changes: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(changes, ["Deleted on-demand feature view doubled"]);
        let left: Vec<String> = again
            .project("demo")
            .unwrap()
            .on_demand_views
            .iter()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(left, ["python_odfv"]);
    }
}
