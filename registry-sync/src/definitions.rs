//! Declarative feature definitions: `features.yaml` at the repo root and every `*.yaml` under
//! `features/`. They are read, checked as a whole (every problem reported together, each naming
//! the file, the line where it can be found, the object and the fix), and turned into the typed
//! model that `quiver apply` writes to the registry.
//!
//! The format (documented in README.md):
//!
//! ```yaml
//! entities:        [{name, join_keys: [one key], value_type: INT64, description, tags, owner}]
//! sources:         [{name, type: file|request|push, path, timestamp_field, created_timestamp_column,
//!                    date_partition_column, field_mapping, batch_source (push), schema (request)}]
//! feature_views:   [{name, entities, ttl: 1d, source, online, offline, tags, description, owner,
//!                    schema: [{name, dtype: Float32}]}]
//! feature_services: [{name, description, tags, owner,
//!                     features: [view | {view: [feature, ...]} | {view, alias, features, join_key_map}]}]
//! label_views:     [{name, entities, ttl, source, online, tags, description, owner, schema,
//!                    labeler_field: labeler, conflict_policy: last_write_wins|labeler_priority|
//!                    majority_vote, reference_feature_view}]
//! on_demand_feature_views: [{name, sources: [view, ...], request_source (a request source's
//!                    name) or request_schema: [{name, dtype}], description, tags, owner,
//!                    write_to_online_store (computed at write time and stored),
//!                    features: [{name, dtype, expr: "view.feature * 2 + request_field"}]}]
//! ```
//!
//! On-demand views declared here are native: each feature is an expression of quiver's
//! language (`quiver_core::expr`), type-checked here against the sources' declared types.
//!
//! Length: the YAML shapes and the whole-repo checker whose messages name their fields, kept
//! together; about 200 lines at the end are tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::model::{
    ConflictPolicy, DataSource, Entity, FeatureService, FeatureView, Field, LabelOptions, Meta,
    Projection, SourceKind, Tags, ViewKind,
};
use quiver_core::on_demand::{OnDemandSource, OnDemandView, Transformation};
use quiver_core::registry::ProjectRegistry;
use quiver_core::{STRUCT_SCHEMA_TAG, ValueType, accepted_dtypes, struct_schema_tag};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::yaml::Yaml;

/// The default event-time column of a file source that does not name one.
pub const DEFAULT_TIMESTAMP_FIELD: &str = "event_timestamp";

/// One problem in the definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub file: String,
    pub line: Option<usize>,
    /// The object, e.g. `feature view driver_hourly_stats`; empty for file-level problems.
    pub object: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.object.is_empty() {
            write!(f, ": {}", self.object)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the problems found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the feature definitions:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

impl Classified for DefinitionErrors {
    /// Definitions that parse as YAML but do not check out (the registry service's 422).
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unprocessable
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefsFile {
    #[serde(default)]
    entities: Vec<EntityDef>,
    #[serde(default)]
    sources: Vec<SourceDef>,
    #[serde(default)]
    feature_views: Vec<ViewDef>,
    #[serde(default)]
    feature_services: Vec<ServiceDef>,
    #[serde(default)]
    label_views: Vec<LabelDef>,
    #[serde(default)]
    on_demand_feature_views: Vec<OnDemandDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDemandDef {
    name: Name,
    #[serde(default)]
    sources: Vec<String>,
    request_source: Option<String>,
    request_schema: Option<Vec<FieldDef>>,
    #[serde(default)]
    features: Vec<OnDemandFeatureDef>,
    /// Computed when rows are written and stored (Feast's `write_to_online_store`).
    #[serde(default)]
    write_to_online_store: bool,
    #[serde(default)]
    description: String,
    tags: Option<Yaml>,
    #[serde(default)]
    owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDemandFeatureDef {
    name: Name,
    dtype: String,
    expr: Option<String>,
    #[serde(default)]
    description: String,
    tags: Option<Yaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityDef {
    name: Name,
    join_keys: Option<Vec<String>>,
    value_type: Option<String>,
    #[serde(default)]
    description: String,
    tags: Option<Yaml>,
    #[serde(default)]
    owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceDef {
    name: Name,
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<String>,
    timestamp_field: Option<String>,
    #[serde(default)]
    created_timestamp_column: String,
    #[serde(default)]
    date_partition_column: String,
    #[serde(default)]
    field_mapping: BTreeMap<String, String>,
    batch_source: Option<String>,
    schema: Option<Vec<FieldDef>>,
    #[serde(default)]
    s3_endpoint_override: String,
    /// A spark source's catalog table, SQL query, and the format of its `path`.
    table: Option<String>,
    query: Option<String>,
    file_format: Option<String>,
    #[serde(default)]
    description: String,
    tags: Option<Yaml>,
    #[serde(default)]
    owner: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDef {
    name: Name,
    dtype: String,
    #[serde(default)]
    description: String,
    tags: Option<Yaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewDef {
    name: Name,
    #[serde(default)]
    entities: Vec<String>,
    ttl: Option<Yaml>,
    source: Option<String>,
    online: Option<bool>,
    offline: Option<bool>,
    tags: Option<Yaml>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    schema: Vec<FieldDef>,
}

/// A Feast 0.67 label view: a view's fields (no `offline`) and what labels add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelDef {
    name: Name,
    #[serde(default)]
    entities: Vec<String>,
    ttl: Option<Yaml>,
    source: Option<String>,
    online: Option<bool>,
    tags: Option<Yaml>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    schema: Vec<FieldDef>,
    labeler_field: Option<String>,
    conflict_policy: Option<String>,
    #[serde(default)]
    reference_feature_view: String,
}

impl LabelDef {
    /// The view part, checked like a feature view; and the label part.
    fn split(self) -> (ViewDef, (Option<String>, Option<String>, String)) {
        (
            ViewDef {
                name: self.name,
                entities: self.entities,
                ttl: self.ttl,
                source: self.source,
                online: self.online,
                offline: None,
                tags: self.tags,
                description: self.description,
                owner: self.owner,
                schema: self.schema,
            },
            (
                self.labeler_field,
                self.conflict_policy,
                self.reference_feature_view,
            ),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDef {
    name: Name,
    #[serde(default)]
    features: Vec<Yaml>,
    #[serde(default)]
    description: String,
    tags: Option<Yaml>,
    #[serde(default)]
    owner: String,
}

/// Most objects (entities, sources, views, services, on-demand views, together) one set of
/// definitions may hold. Far above real repos; it bounds what one apply costs.
pub const MAX_OBJECTS: usize = 10_000;

/// Most problems listed in one report; the rest are counted.
pub const MAX_PROBLEMS: usize = 100;

/// Most names a message lists (e.g. the declared entities); the rest are counted.
const MAX_LISTED: usize = 10;

/// A definitions file as read.
struct SourceFile {
    label: String,
    text: String,
}

/// A name as written in a definitions file, with the line it is on (for messages). Reads and
/// prints as the string it holds.
struct Name {
    value: String,
    line: usize,
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = Spanned::<String>::deserialize(d)?;
        Ok(Name {
            line: s.referenced.line() as usize,
            value: s.value,
        })
    }
}

impl std::ops::Deref for Name {
    type Target = String;
    fn deref(&self) -> &String {
        &self.value
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.value
    }
}

/// Where each object and field is, built once while reading the files, so that locating a
/// problem is a lookup (scanning the text per problem made 10k problems quadratic).
#[derive(Default)]
struct Lines {
    /// (file, section) -> object name -> the lines of its definitions, in file order.
    objects: HashMap<(usize, &'static str), HashMap<String, Vec<usize>>>,
    /// (file, section, object name) -> field (schema entry or feature) name -> its first line.
    fields: HashMap<(usize, &'static str, String), HashMap<String, usize>>,
}

impl Lines {
    fn object(&mut self, file: usize, section: &'static str, name: &Name) {
        self.objects
            .entry((file, section))
            .or_default()
            .entry(name.value.clone())
            .or_default()
            .push(name.line);
    }

    /// The fields of an object: only its first definition's (a duplicate is reported on its
    /// own line).
    fn fields<'a>(
        &mut self,
        file: usize,
        section: &'static str,
        object: &Name,
        names: impl Iterator<Item = &'a Name>,
    ) {
        let entry = self
            .fields
            .entry((file, section, object.value.clone()))
            .or_default();
        if !entry.is_empty() {
            return;
        }
        for n in names {
            entry.entry(n.value.clone()).or_insert(n.line);
        }
    }

    /// The line of the `nth` (0-based) definition of `name` in `section`; with `field`, the
    /// line of that field of the object (its own line when not found).
    fn locate(
        &self,
        file: usize,
        section: &str,
        name: &str,
        nth: usize,
        field: Option<&str>,
    ) -> Option<usize> {
        let section = SECTIONS.iter().find(|s| **s == section)?;
        let object_line = *self.objects.get(&(file, *section))?.get(name)?.get(nth)?;
        let Some(field) = field else {
            return Some(object_line);
        };
        let found = self
            .fields
            .get(&(file, *section, name.to_owned()))
            .and_then(|f| f.get(field));
        Some(found.copied().unwrap_or(object_line))
    }
}

const SECTIONS: [&str; 6] = [
    "entities",
    "sources",
    "feature_views",
    "feature_services",
    "label_views",
    "on_demand_feature_views",
];

/// `names` joined for a message, at most [`MAX_LISTED`] of them.
fn listing<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = names.len();
    let mut out = names.take(MAX_LISTED).collect::<Vec<_>>().join(", ");
    if n > MAX_LISTED {
        out.push_str(&format!(", ... ({n} in all)"));
    }
    out
}

/// The definition files of a repo: `features.yaml` (or `.yml`), then every `*.yaml`/`*.yml`
/// under `features/`, sorted by path.
pub fn definition_files(repo_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for name in ["features.yaml", "features.yml"] {
        let p = repo_dir.join(name);
        if p.is_file() {
            files.push(p);
        }
    }
    let mut nested = Vec::new();
    collect_yaml(&repo_dir.join("features"), &mut nested);
    nested.sort();
    files.extend(nested);
    files
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// Reads and checks the definitions of the repo at `repo_dir` for `project`.
pub fn load(repo_dir: &Path, project: &str) -> Result<ProjectRegistry, DefinitionErrors> {
    let files = definition_files(repo_dir);
    if files.is_empty() {
        return Err(DefinitionErrors(vec![DefinitionError {
            file: repo_dir.display().to_string(),
            line: None,
            object: String::new(),
            message: "no feature definitions found: write features.yaml (or *.yaml files under features/); \
                      a Python Feast repo is applied with `feast apply`, and quiver reads the registry it writes"
                .to_owned(),
        }]));
    }
    let mut sources = Vec::new();
    for path in files {
        let label = path
            .strip_prefix(repo_dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(SourceFile { label, text }),
            Err(e) => {
                return Err(DefinitionErrors(vec![DefinitionError {
                    file: label,
                    line: None,
                    object: String::new(),
                    message: format!("cannot read the file: {e}"),
                }]));
            }
        }
    }
    parse_files(&sources, project)
}

/// Checks definitions given as `(file label, YAML text)` pairs (what [`load`] reads).
pub fn parse(files: &[(&str, &str)], project: &str) -> Result<ProjectRegistry, DefinitionErrors> {
    let sources: Vec<SourceFile> = files
        .iter()
        .map(|(label, text)| SourceFile {
            label: (*label).to_owned(),
            text: (*text).to_owned(),
        })
        .collect();
    parse_files(&sources, project)
}

/// An object of a definitions file, remembered with the file it came from.
struct Located<T> {
    file: usize,
    def: T,
}

struct Checker<'a> {
    files: &'a [SourceFile],
    lines: Lines,
    errors: Vec<DefinitionError>,
    /// Problems past [`MAX_PROBLEMS`], counted only.
    unlisted: usize,
}

impl Checker<'_> {
    fn report(
        &mut self,
        file: usize,
        section: &str,
        kind: &str,
        name: &str,
        message: impl Into<String>,
    ) {
        self.report_nth(file, section, kind, name, 0, message);
    }

    /// Reports a problem with one field of an object, pointing at the field's line.
    fn report_field(
        &mut self,
        file: usize,
        section: &str,
        kind: &str,
        name: &str,
        field: &str,
        message: impl Into<String>,
    ) {
        let line = self.lines.locate(file, section, name, 0, Some(field));
        self.push(file, line, kind, name, message.into());
    }

    /// Reports a problem with the `nth` object of that name in the file (for duplicates).
    fn report_nth(
        &mut self,
        file: usize,
        section: &str,
        kind: &str,
        name: &str,
        nth: usize,
        message: impl Into<String>,
    ) {
        let line = self.lines.locate(file, section, name, nth, None);
        self.push(file, line, kind, name, message.into());
    }

    fn push(&mut self, file: usize, line: Option<usize>, kind: &str, name: &str, message: String) {
        if self.errors.len() >= MAX_PROBLEMS {
            self.unlisted += 1;
            return;
        }
        self.errors.push(DefinitionError {
            file: self.files[file].label.clone(),
            line,
            object: format!("{kind} {name:?}"),
            message,
        });
    }

    /// Problems found so far, listed or not.
    fn problems(&self) -> usize {
        self.errors.len() + self.unlisted
    }

    /// Whether any problem was found (listed or not).
    fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    fn into_errors(mut self) -> DefinitionErrors {
        if self.unlisted > 0 {
            self.errors.push(DefinitionError {
                file: "(definitions)".to_owned(),
                line: None,
                object: String::new(),
                message: format!(
                    "{} more problems not listed (at most {MAX_PROBLEMS} are): fix these and apply again",
                    self.unlisted
                ),
            });
        }
        DefinitionErrors(self.errors)
    }
}

fn parse_files(files: &[SourceFile], project: &str) -> Result<ProjectRegistry, DefinitionErrors> {
    let mut ck = Checker {
        files,
        lines: Lines::default(),
        errors: Vec::new(),
        unlisted: 0,
    };
    let mut entity_defs = Vec::new();
    let mut source_defs = Vec::new();
    let mut view_defs = Vec::new();
    let mut service_defs = Vec::new();
    let mut label_defs = Vec::new();
    let mut on_demand_defs = Vec::new();
    let mut objects = 0usize;
    for (i, f) in files.iter().enumerate() {
        let parsed: Result<Option<DefsFile>, _> =
            crate::yaml::from_str(&f.text, crate::yaml::LIMITS);
        match parsed {
            Ok(doc) => {
                let doc = doc.unwrap_or_default();
                objects += doc.entities.len()
                    + doc.sources.len()
                    + doc.feature_views.len()
                    + doc.feature_services.len()
                    + doc.label_views.len()
                    + doc.on_demand_feature_views.len();
                if objects > MAX_OBJECTS {
                    return Err(DefinitionErrors(vec![DefinitionError {
                        file: f.label.clone(),
                        line: None,
                        object: String::new(),
                        message: format!(
                            "the definitions hold {objects} objects up to this file; at most {MAX_OBJECTS} \
                             (entities, sources, views and services together) can be applied at once"
                        ),
                    }]));
                }
                index_lines(&mut ck.lines, i, &doc);
                entity_defs.extend(doc.entities.into_iter().map(|def| Located { file: i, def }));
                source_defs.extend(doc.sources.into_iter().map(|def| Located { file: i, def }));
                view_defs.extend(doc.feature_views.into_iter().map(|def| Located { file: i, def }));
                service_defs.extend(doc.feature_services.into_iter().map(|def| Located { file: i, def }));
                label_defs.extend(doc.label_views.into_iter().map(|def| Located { file: i, def }));
                on_demand_defs.extend(doc.on_demand_feature_views.into_iter().map(|def| Located { file: i, def }));
            }
            Err(e) => ck.errors.push(DefinitionError {
                file: f.label.clone(),
                line: e.line,
                object: String::new(),
                message: format!(
                    "{}; the file holds the lists entities, sources, feature_views, feature_services, label_views and on_demand_feature_views",
                    e.message
                ),
            }),
        }
    }
    if ck.failed() {
        return Err(ck.into_errors());
    }

    let entities = check_entities(&mut ck, entity_defs);
    let data_sources = check_sources(&mut ck, source_defs);
    let mut declared_views: HashSet<String> =
        view_defs.iter().map(|v| v.def.name.clone()).collect();
    let mut feature_views = check_views(&mut ck, view_defs, &entities, &data_sources, VIEWS);
    let label_views = check_label_views(
        &mut ck,
        label_defs,
        &entities,
        &data_sources,
        &declared_views,
    );
    declared_views.extend(label_views.iter().map(|v| v.name.clone()));
    feature_views.extend(label_views);
    let declared_on_demand: HashSet<String> =
        on_demand_defs.iter().map(|v| v.def.name.clone()).collect();
    let on_demand_views = check_on_demand(
        &mut ck,
        on_demand_defs,
        &feature_views,
        &declared_views,
        &data_sources,
    );
    let declared_views: HashSet<String> =
        declared_views.union(&declared_on_demand).cloned().collect();
    let feature_services = check_services(
        &mut ck,
        service_defs,
        &feature_views,
        &on_demand_views,
        &declared_views,
    );

    if ck.failed() {
        return Err(ck.into_errors());
    }
    Ok(ProjectRegistry {
        project: project.to_owned(),
        project_object: None,
        entities,
        data_sources,
        feature_views,
        feature_services,
        on_demand_views,
    })
}

/// Records where every object and field of a file is.
fn index_lines(lines: &mut Lines, file: usize, doc: &DefsFile) {
    for d in &doc.entities {
        lines.object(file, "entities", &d.name);
    }
    for d in &doc.sources {
        lines.object(file, "sources", &d.name);
        if let Some(schema) = &d.schema {
            lines.fields(file, "sources", &d.name, schema.iter().map(|f| &f.name));
        }
    }
    for d in &doc.feature_views {
        lines.object(file, "feature_views", &d.name);
        lines.fields(
            file,
            "feature_views",
            &d.name,
            d.schema.iter().map(|f| &f.name),
        );
    }
    for d in &doc.label_views {
        lines.object(file, "label_views", &d.name);
        lines.fields(
            file,
            "label_views",
            &d.name,
            d.schema.iter().map(|f| &f.name),
        );
    }
    for d in &doc.feature_services {
        lines.object(file, "feature_services", &d.name);
    }
    for d in &doc.on_demand_feature_views {
        const S: &str = "on_demand_feature_views";
        lines.object(file, S, &d.name);
        let request = d.request_schema.iter().flatten().map(|f| &f.name);
        lines.fields(
            file,
            S,
            &d.name,
            d.features.iter().map(|f| &f.name).chain(request),
        );
    }
}

/// Feast's name rule: word characters and hyphens, not starting with `_` or `-`.
fn valid_name(name: &str) -> bool {
    crate::config::is_valid_project_name(name)
}

fn tags(
    ck: &mut Checker,
    file: usize,
    section: &str,
    kind: &str,
    name: &str,
    v: Option<Yaml>,
) -> Tags {
    let mut out = Tags::new();
    let Some(v) = v else {
        return out;
    };
    let Some(m) = v.as_mapping() else {
        ck.report(
            file,
            section,
            kind,
            name,
            "tags: expected a mapping of key: value",
        );
        return out;
    };
    for (k, v) in m {
        let text = |y: &Yaml| match y {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Number(n) => Some(n.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match (text(k), text(v)) {
            (Some(k), Some(v)) => {
                out.insert(k, v);
            }
            _ => ck.report(
                file,
                section,
                kind,
                name,
                "tags: keys and values must be plain strings",
            ),
        }
    }
    out
}

fn check_names<T>(
    ck: &mut Checker,
    items: &[Located<T>],
    name_of: impl Fn(&T) -> &str,
    section: &str,
    kind: &str,
) {
    // (file, name) -> how many seen so far in that file, to point at the right occurrence.
    let mut per_file: HashMap<(usize, &str), usize> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for it in items {
        let name = name_of(&it.def);
        let nth = per_file.entry((it.file, name)).or_default();
        if !valid_name(name) {
            ck.report_nth(it.file, section, kind, name, *nth, "invalid name: use letters, digits, underscores and hyphens, not starting with _ or -");
        } else if !seen.insert(name) {
            ck.report_nth(
                it.file,
                section,
                kind,
                name,
                *nth,
                format!("{kind} {name:?} is defined twice: rename or remove one"),
            );
        }
        *nth += 1;
    }
}

fn check_entities(ck: &mut Checker, defs: Vec<Located<EntityDef>>) -> Vec<Entity> {
    const S: &str = "entities";
    const K: &str = "entity";
    check_names(ck, &defs, |d| &d.name, S, K);
    let mut out: Vec<Entity> = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    for Located { file, def } in defs {
        if !done.insert(def.name.value.clone()) {
            continue; // a duplicate, already reported
        }
        let join_key = match def.join_keys.as_deref() {
            None => def.name.value.clone(),
            Some([key]) if !key.trim().is_empty() => key.clone(),
            Some([_]) => {
                ck.report(
                    file,
                    S,
                    K,
                    &def.name,
                    "join_keys: the join key must not be empty",
                );
                continue;
            }
            Some(keys) => {
                ck.report(
                    file,
                    S,
                    K,
                    &def.name,
                    format!("join_keys has {} keys; Feast allows exactly one per entity: define one entity per key and list them all in the view's entities", keys.len()),
                );
                continue;
            }
        };
        let value_type = match def.value_type.as_deref() {
            None => {
                ck.report(
                    file,
                    S,
                    K,
                    &def.name,
                    "value_type is required: one of STRING, INT64, INT32, BYTES, UNIX_TIMESTAMP",
                );
                continue;
            }
            Some(t) => {
                match ValueType::from_proto_name(t).or_else(|| ValueType::from_dtype_name(t)) {
                    Some(vt) if vt.is_keyable() => vt,
                    Some(vt) => {
                        ck.report(
                        file,
                        S,
                        K,
                        &def.name,
                        format!("value_type {} cannot be an entity key in Feast; use STRING, INT64, INT32, BYTES or UNIX_TIMESTAMP", vt.proto_name()),
                    );
                        continue;
                    }
                    None => {
                        ck.report(file, S, K, &def.name, format!("unknown value_type {t:?}: expected STRING, INT64, INT32, BYTES or UNIX_TIMESTAMP"));
                        continue;
                    }
                }
            }
        };
        let tags = tags(ck, file, S, K, &def.name, def.tags);
        out.push(Entity {
            name: def.name.into(),
            join_key,
            value_type,
            description: def.description,
            tags,
            owner: def.owner,
            meta: Meta::default(),
        });
    }
    out
}

fn check_fields(
    ck: &mut Checker,
    file: usize,
    section: &str,
    kind: &str,
    name: &str,
    defs: Vec<FieldDef>,
) -> Vec<Field> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for f in defs {
        if f.name.trim().is_empty() {
            ck.report(
                file,
                section,
                kind,
                name,
                "schema: a field has an empty name",
            );
            continue;
        }
        if !seen.insert(f.name.clone()) {
            ck.report(
                file,
                section,
                kind,
                name,
                format!("schema: field {:?} is listed twice", f.name),
            );
            continue;
        }
        let Some(dtype) = ValueType::from_dtype_name(&f.dtype) else {
            ck.report_field(
                file,
                section,
                kind,
                name,
                &f.name,
                format!(
                    "schema: field {:?} has unknown dtype {:?}; expected {}",
                    f.name,
                    f.dtype,
                    accepted_dtypes()
                ),
            );
            continue;
        };
        let mut tags = tags(ck, file, section, kind, name, f.tags);
        // Feast keeps a struct's field schema in a tag; without it Feast reads the field as
        // Struct({_value: String}).
        match struct_schema_tag(&f.dtype) {
            Some(Ok(schema)) => {
                tags.insert(STRUCT_SCHEMA_TAG.to_owned(), schema);
            }
            Some(Err(e)) => {
                ck.report_field(
                    file,
                    section,
                    kind,
                    name,
                    &f.name,
                    format!("schema: field {:?}: {e}", f.name),
                );
                continue;
            }
            None => {}
        }
        out.push(Field {
            name: f.name.into(),
            dtype,
            description: f.description,
            tags,
        });
    }
    out
}

fn check_sources(ck: &mut Checker, defs: Vec<Located<SourceDef>>) -> Vec<DataSource> {
    const S: &str = "sources";
    const K: &str = "source";
    check_names(ck, &defs, |d| &d.name, S, K);
    // File sources first: push sources embed the batch source they name.
    let mut out: Vec<DataSource> = Vec::new();
    let mut pushes = Vec::new();
    for Located { file, mut def } in defs {
        let kind_word = def.kind.clone().unwrap_or_else(|| "file".to_owned());
        let not_for = |ck: &mut Checker, key: &str, present: bool| {
            if present {
                ck.report(
                    file,
                    S,
                    K,
                    &def.name,
                    format!("{key} does not apply to a {kind_word} source: remove it"),
                );
            }
        };
        if kind_word != "spark" {
            not_for(ck, "table", def.table.is_some());
            not_for(ck, "query", def.query.is_some());
            not_for(ck, "file_format", def.file_format.is_some());
        }
        let kind = match kind_word.as_str() {
            "spark" => {
                not_for(ck, "batch_source", def.batch_source.is_some());
                not_for(ck, "schema", def.schema.is_some());
                not_for(
                    ck,
                    "s3_endpoint_override",
                    !def.s3_endpoint_override.is_empty(),
                );
                let given = |v: &Option<String>| {
                    v.as_deref()
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                };
                let (table, query, path) = (given(&def.table), given(&def.query), given(&def.path));
                let set = [&table, &query, &path]
                    .iter()
                    .filter(|v| v.is_some())
                    .count();
                if set != 1 {
                    ck.report(file, S, K, &def.name, "a spark source needs exactly one of table (a catalog table), query (Spark SQL) or path (with file_format)");
                    continue;
                }
                let file_format = given(&def.file_format);
                match (&path, &file_format) {
                    (Some(_), None) => {
                        ck.report(file, S, K, &def.name, "file_format is required with path (parquet, csv, json, orc, avro, delta, ...)");
                        continue;
                    }
                    (None, Some(_)) => {
                        ck.report(
                            file,
                            S,
                            K,
                            &def.name,
                            "file_format applies to path only: remove it",
                        );
                        continue;
                    }
                    _ => {}
                }
                SourceKind::Spark {
                    table: table.unwrap_or_default(),
                    query: query.unwrap_or_default(),
                    path: path.unwrap_or_default(),
                    file_format: file_format.unwrap_or_default(),
                    date_partition_column_format: String::new(),
                }
            }
            "file" => {
                not_for(ck, "batch_source", def.batch_source.is_some());
                not_for(ck, "schema", def.schema.is_some());
                match def.path.as_deref().map(str::trim) {
                    Some(p) if !p.is_empty() => SourceKind::File {
                        uri: p.to_owned(),
                        s3_endpoint_override: def.s3_endpoint_override.clone(),
                    },
                    _ => {
                        ck.report(file, S, K, &def.name, "path is required for a file source (relative to the repo, or s3://, gs://)");
                        continue;
                    }
                }
            }
            "request" => {
                not_for(ck, "path", def.path.is_some());
                not_for(ck, "batch_source", def.batch_source.is_some());
                not_for(ck, "timestamp_field", def.timestamp_field.is_some());
                let schema = check_fields(
                    ck,
                    file,
                    S,
                    K,
                    &def.name,
                    def.schema.take().unwrap_or_default(),
                );
                if schema.is_empty() {
                    ck.report(
                        file,
                        S,
                        K,
                        &def.name,
                        "schema is required for a request source: list its fields as {name, dtype}",
                    );
                    continue;
                }
                SourceKind::Request { schema }
            }
            "push" => {
                not_for(ck, "path", def.path.is_some());
                not_for(ck, "schema", def.schema.is_some());
                // A push source's rows are timed by its batch source's columns.
                not_for(ck, "timestamp_field", def.timestamp_field.is_some());
                not_for(
                    ck,
                    "created_timestamp_column",
                    !def.created_timestamp_column.is_empty(),
                );
                match def.batch_source.clone() {
                    Some(b) => {
                        pushes.push((file, def, b));
                        continue;
                    }
                    None => {
                        ck.report(file, S, K, &def.name, "batch_source is required for a push source: name a file source that keeps its history");
                        continue;
                    }
                }
            }
            other => {
                ck.report(
                    file,
                    S,
                    K,
                    &def.name,
                    format!("unknown type {other:?}: expected file, spark, request or push"),
                );
                continue;
            }
        };
        let tags = tags(ck, file, S, K, &def.name, def.tags.take());
        let timestamp_field = match kind {
            SourceKind::File { .. } | SourceKind::Spark { .. } => def
                .timestamp_field
                .clone()
                .unwrap_or_else(|| DEFAULT_TIMESTAMP_FIELD.to_owned()),
            _ => String::new(),
        };
        out.push(source_from(def, kind, tags, timestamp_field));
    }
    let mut by_name: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    for (file, mut def, batch_name) in pushes {
        let batch = match by_name.get(&batch_name).map(|&i| &out[i]) {
            Some(b) if matches!(b.kind, SourceKind::File { .. } | SourceKind::Spark { .. }) => {
                b.clone()
            }
            Some(_) => {
                ck.report(file, S, K, &def.name, format!("batch_source {batch_name:?} is not a file or spark source; a push source's history must be one"));
                continue;
            }
            None => {
                ck.report(
                    file,
                    S,
                    K,
                    &def.name,
                    format!("batch_source {batch_name:?} is not defined under sources"),
                );
                continue;
            }
        };
        let tags = tags(ck, file, S, K, &def.name, def.tags.take());
        let kind = SourceKind::Push {
            batch_source: Box::new(batch),
        };
        by_name.insert(def.name.value.clone(), out.len());
        out.push(source_from(def, kind, tags, String::new()));
    }
    out
}

fn source_from(
    def: SourceDef,
    kind: SourceKind,
    tags: Tags,
    timestamp_field: String,
) -> DataSource {
    DataSource {
        name: def.name.into(),
        kind,
        timestamp_field,
        created_timestamp_column: def.created_timestamp_column,
        date_partition_column: def.date_partition_column,
        field_mapping: def.field_mapping,
        description: def.description,
        tags,
        owner: def.owner,
    }
}

fn parse_ttl(v: &Yaml) -> Result<std::time::Duration, String> {
    match v {
        Yaml::Number(n) => n
            .as_u64()
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("ttl {n}: expected a whole, non-negative number of seconds or a duration like 1d, 2h, 30m")),
        Yaml::String(s) => quiver_core::time::parse_duration(s).map_err(|e| format!("ttl: {e}")),
        _ => Err("ttl: expected a duration like 1d, 2h, 30m, or 0 for no expiry".to_owned()),
    }
}

/// The section and the word for the views a list holds, for messages.
const VIEWS: (&str, &str) = ("feature_views", "feature view");
const LABEL_VIEWS: (&str, &str) = ("label_views", "label view");

/// Label views: checked as views are, then given their label options. A label view may not
/// share a name with a feature view (features are referenced as `view:feature`).
fn check_label_views(
    ck: &mut Checker,
    defs: Vec<Located<LabelDef>>,
    entities: &[Entity],
    sources: &[DataSource],
    feature_views: &HashSet<String>,
) -> Vec<FeatureView> {
    let (s, k) = LABEL_VIEWS;
    let mut views = Vec::new();
    let mut options = HashMap::new();
    for Located { file, def } in defs {
        let (view, (labeler_field, policy, reference)) = def.split();
        let name = view.name.clone();
        if feature_views.contains(&name) {
            ck.report(file, s, k, &name, "a feature view has the same name: rename one (features are referenced as view:feature)");
            continue;
        }
        let conflict_policy = match policy.as_deref().map(|p| (p, ConflictPolicy::from_name(p))) {
            None => ConflictPolicy::LastWriteWins,
            Some((_, Some(p))) => p,
            Some((p, None)) => {
                ck.report(file, s, k, &name, format!("conflict_policy: {p:?} is not one of last_write_wins, labeler_priority, majority_vote"));
                continue;
            }
        };
        options.insert(
            name,
            LabelOptions {
                labeler_field: labeler_field.unwrap_or_else(|| "labeler".to_owned()),
                conflict_policy,
                reference_feature_view: reference,
            },
        );
        views.push(Located { file, def: view });
    }
    let mut out = check_views(ck, views, entities, sources, LABEL_VIEWS);
    for v in &mut out {
        if let Some(o) = options.remove(&v.name) {
            v.kind = ViewKind::Label(o);
        }
    }
    out
}

fn check_views(
    ck: &mut Checker,
    defs: Vec<Located<ViewDef>>,
    entities: &[Entity],
    sources: &[DataSource],
    (section, kind): (&str, &str),
) -> Vec<FeatureView> {
    check_names(ck, &defs, |d| &d.name, section, kind);
    let entity_names = || listing(entities.iter().map(|e| e.name.as_str()));
    let entity_by_name: HashMap<&str, &Entity> =
        entities.iter().map(|e| (e.name.as_str(), e)).collect();
    let source_by_name: HashMap<&str, &DataSource> =
        sources.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = Vec::new();
    for Located { file, def } in defs {
        let name = def.name.value.clone();
        let mut ok = true;
        let mut report = |ck: &mut Checker, msg: String| {
            ok = false;
            ck.report(file, section, kind, &name, msg);
        };
        if def.entities.is_empty() {
            report(
                ck,
                "entities: list at least one entity the view is keyed on".to_owned(),
            );
        }
        let mut view_entities = Vec::new();
        let mut seen = HashSet::new();
        for e in &def.entities {
            if !seen.insert(e.as_str()) {
                report(ck, format!("entities: {e:?} is listed twice"));
                continue;
            }
            match entity_by_name.get(e.as_str()) {
                Some(&ent) => view_entities.push(ent),
                None => report(
                    ck,
                    format!(
                        "unknown entity {e:?}: declare it under entities (declared: {})",
                        entity_names()
                    ),
                ),
            }
        }
        let source = match def.source.as_deref() {
            None => {
                report(
                    ck,
                    "source is required: name a file or push source".to_owned(),
                );
                None
            }
            Some(s) => match source_by_name.get(s).copied() {
                Some(src) if matches!(src.kind, SourceKind::Request { .. }) => {
                    report(
                        ck,
                        format!(
                            "source {s:?} is a request source, which only on-demand views can use: name a file or push source"
                        ),
                    );
                    None
                }
                Some(src) => Some(src),
                None => {
                    report(
                        ck,
                        format!(
                            "unknown source {s:?}: declare it under sources (declared: {})",
                            listing(sources.iter().map(|x| x.name.as_str()))
                        ),
                    );
                    None
                }
            },
        };
        let ttl = match def.ttl.as_ref().map(parse_ttl).transpose() {
            Ok(t) => t.unwrap_or_default(),
            Err(e) => {
                report(ck, e);
                Default::default()
            }
        };
        let errors_before = ck.problems();
        let fields = check_fields(ck, file, section, kind, &name, def.schema);
        if ck.problems() > errors_before {
            ok = false;
        }
        // Schema fields named like a join key are the entity columns, as in Feast.
        let mut features = Vec::new();
        let mut entity_columns: Vec<Field> = Vec::new();
        let by_join_key: HashMap<&str, &Entity> = view_entities
            .iter()
            .map(|e| (e.join_key.as_str(), *e))
            .collect();
        for f in fields {
            match by_join_key.get(f.name.as_str()).copied() {
                Some(e) if e.value_type != f.dtype => {
                    ok = false;
                    ck.report(
                        file,
                        section,
                        kind,
                        &name,
                        format!("schema: {:?} is the join key of entity {:?}, which is {}, but the schema says {}", f.name, e.name, e.value_type.proto_name(), f.dtype),
                    );
                }
                Some(_) => entity_columns.push(f),
                None => features.push(f),
            }
        }
        let mut have: HashSet<String> = entity_columns.iter().map(|c| c.name.clone()).collect();
        for e in &view_entities {
            if have.insert(e.join_key.clone()) {
                entity_columns.push(Field::new(e.join_key.clone(), e.value_type));
            }
        }
        if features.is_empty() && ok {
            ok = false;
            ck.report(
                file,
                section,
                kind,
                &name,
                "schema lists no features: add {name, dtype} entries",
            );
        }
        let tags = tags(ck, file, section, kind, &name, def.tags);
        if !ok {
            continue;
        }
        let Some(source) = source else { continue };
        let (batch_source, stream_source) = match &source.kind {
            SourceKind::Push { batch_source } => {
                (Some((**batch_source).clone()), Some(source.clone()))
            }
            _ => (Some(source.clone()), None),
        };
        out.push(FeatureView {
            name: def.name.into(),
            kind: ViewKind::Batch,
            entities: def.entities,
            features,
            entity_columns,
            ttl,
            batch_source,
            stream_source,
            online: def.online.unwrap_or(true),
            offline: def.offline.unwrap_or(false),
            description: def.description,
            tags,
            owner: def.owner,
            meta: Meta::default(),
            materialization_intervals: Vec::new(),
        });
    }
    out
}

/// One `features:` entry of a feature service.
struct ServiceEntry {
    view: String,
    alias: Option<String>,
    /// `None`: every feature of the view.
    features: Option<Vec<String>>,
    join_key_map: BTreeMap<String, String>,
}

/// Reads a `features:` entry in any of its three forms.
fn parse_service_entry(entry: &Yaml) -> Result<ServiceEntry, String> {
    const FORMS: &str = "expected a view name, {view: [feature, ...]}, or {view: name, alias: name, features: [...]}";
    let strings = |v: &Yaml, what: &str| -> Result<Vec<String>, String> {
        v.as_sequence()
            .ok_or_else(|| format!("{what}: expected a list of feature names"))?
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{what}: feature names must be strings"))
            })
            .collect()
    };
    match entry {
        Yaml::String(view) => Ok(ServiceEntry {
            view: view.clone(),
            alias: None,
            features: None,
            join_key_map: BTreeMap::new(),
        }),
        Yaml::Mapping(m) if m.contains_key("view") => {
            let mut view = None;
            let mut alias = None;
            let mut features = None;
            let mut join_key_map = BTreeMap::new();
            for (k, v) in m {
                match k.as_str() {
                    Some("view") => {
                        view = Some(v.as_str().ok_or("view: expected a view name")?.to_owned())
                    }
                    Some("alias") => {
                        alias = Some(v.as_str().ok_or("alias: expected a name")?.to_owned())
                    }
                    Some("features") => features = Some(strings(v, "features")?),
                    Some("join_key_map") => {
                        for (a, b) in v
                            .as_mapping()
                            .ok_or("join_key_map: expected a mapping of join key: request column")?
                        {
                            match (a.as_str(), b.as_str()) {
                                (Some(a), Some(b)) => {
                                    join_key_map.insert(a.to_owned(), b.to_owned());
                                }
                                _ => {
                                    return Err(
                                        "join_key_map: keys and values must be strings".to_owned()
                                    );
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(format!("unknown key {}: {FORMS}", k));
                    }
                }
            }
            Ok(ServiceEntry {
                view: view.ok_or(FORMS)?,
                alias,
                features,
                join_key_map,
            })
        }
        Yaml::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().ok_or(FORMS)?;
            let view = k.as_str().ok_or(FORMS)?.to_owned();
            let features = strings(v, &view)?;
            Ok(ServiceEntry {
                view,
                alias: None,
                features: Some(features),
                join_key_map: BTreeMap::new(),
            })
        }
        _ => Err(FORMS.to_owned()),
    }
}

fn check_services(
    ck: &mut Checker,
    defs: Vec<Located<ServiceDef>>,
    views: &[FeatureView],
    on_demand: &[OnDemandView],
    declared_views: &HashSet<String>,
) -> Vec<FeatureService> {
    const S: &str = "feature_services";
    const K: &str = "feature service";
    check_names(ck, &defs, |d| &d.name, S, K);
    // (features, join keys) of every view a service can name: feature views and on-demand
    // views (which have no join keys of their own).
    let by_name: HashMap<&str, (&[Field], &[Field])> = views
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                (v.features.as_slice(), v.entity_columns.as_slice()),
            )
        })
        .chain(
            on_demand
                .iter()
                .map(|v| (v.name.as_str(), (v.features.as_slice(), &[][..]))),
        )
        .collect();
    // Each view's features by name, built when a service first names the view.
    let mut feature_index: HashMap<&str, HashMap<&str, &Field>> = HashMap::new();
    let mut out = Vec::new();
    for Located { file, def } in defs {
        let name = def.name.value.clone();
        let errors_before = ck.problems();
        if def.features.is_empty() {
            ck.report(
                file,
                S,
                K,
                &name,
                "features is empty: list the views (or view: [features]) the service serves",
            );
        }
        let mut projections = Vec::new();
        let mut used_names = HashSet::new();
        let mut skipped = false;
        for entry in &def.features {
            let ServiceEntry {
                view: view_name,
                alias,
                features: wanted,
                join_key_map,
            } = match parse_service_entry(entry) {
                Ok(x) => x,
                Err(e) => {
                    ck.report(file, S, K, &name, format!("features: {e}"));
                    continue;
                }
            };
            let Some(&(view_features, view_keys)) = by_name.get(view_name.as_str()) else {
                if declared_views.contains(&view_name) {
                    // The view itself is invalid and already reported.
                    skipped = true;
                    continue;
                }
                ck.report(file, S, K, &name, format!("unknown feature view {view_name:?}: define it under feature_views (or on_demand_feature_views) or fix the name"));
                continue;
            };
            let features = match wanted {
                None => view_features.to_vec(),
                Some(list) if list.is_empty() => {
                    ck.report(file, S, K, &name, format!("{view_name}: the feature list is empty: list features or name the view alone for all of them"));
                    continue;
                }
                Some(list) => {
                    let index = feature_index
                        .entry(
                            by_name
                                .get_key_value(view_name.as_str())
                                .map_or("", |(k, _)| *k),
                        )
                        .or_insert_with(|| {
                            view_features.iter().map(|x| (x.name.as_str(), x)).collect()
                        });
                    let mut fields = Vec::new();
                    let mut listed: HashSet<String> = HashSet::new();
                    for f in list {
                        match index.get(f.as_str()) {
                            Some(&field) if listed.insert(f.clone()) => fields.push(field.clone()),
                            Some(_) => ck.report(
                                file,
                                S,
                                K,
                                &name,
                                format!("{view_name}: feature {f:?} is listed twice"),
                            ),
                            None => {
                                let have = listing(view_features.iter().map(|x| x.name.as_str()));
                                ck.report(file, S, K, &name, format!("feature view {view_name:?} has no feature {f:?} (it has: {have})"));
                            }
                        }
                    }
                    fields
                }
            };
            let keys: HashSet<&str> = if join_key_map.is_empty() {
                HashSet::new()
            } else {
                view_keys.iter().map(|c| c.name.as_str()).collect()
            };
            for key in join_key_map.keys() {
                if !keys.contains(key.as_str()) {
                    ck.report(
                        file,
                        S,
                        K,
                        &name,
                        format!(
                            "join_key_map: {key:?} is not a join key of feature view {view_name:?}"
                        ),
                    );
                }
            }
            let projection = Projection {
                view: view_name,
                alias,
                features,
                join_key_map,
            };
            if !used_names.insert(projection.name_to_use().to_owned()) {
                ck.report(
                    file,
                    S,
                    K,
                    &name,
                    format!("{:?} is used twice; give one of them an alias (view: {}, alias: other_name)", projection.name_to_use(), projection.view),
                );
                continue;
            }
            projections.push(projection);
        }
        let tags = tags(ck, file, S, K, &name, def.tags);
        if skipped || ck.problems() > errors_before {
            continue;
        }
        out.push(FeatureService {
            name: def.name.into(),
            projections,
            description: def.description,
            tags,
            owner: def.owner,
            meta: Meta::default(),
        });
    }
    out
}

fn check_on_demand(
    ck: &mut Checker,
    defs: Vec<Located<OnDemandDef>>,
    views: &[FeatureView],
    declared_views: &HashSet<String>,
    sources: &[DataSource],
) -> Vec<OnDemandView> {
    const S: &str = "on_demand_feature_views";
    const K: &str = "on-demand feature view";
    check_names(ck, &defs, |d| &d.name, S, K);
    let view_by_name: HashMap<&str, &FeatureView> =
        views.iter().map(|v| (v.name.as_str(), v)).collect();
    let source_by_name: HashMap<&str, &DataSource> =
        sources.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: Vec<OnDemandView> = Vec::new();
    let mut done: HashSet<String> = HashSet::new();
    for Located { file, def } in defs {
        let name = def.name.value.clone();
        if !done.insert(name.clone()) {
            continue; // a duplicate, already reported
        }
        let errors_before = ck.problems();
        if declared_views.contains(&name) {
            ck.report(
                file,
                S,
                K,
                &name,
                format!(
                    "{name:?} is also a feature view's name: views share one namespace, rename one"
                ),
            );
        }
        let mut odfv_sources = Vec::new();
        let mut skipped = false;
        for v in &def.sources {
            match view_by_name.get(v.as_str()).copied() {
                Some(view) => odfv_sources.push(OnDemandSource::View(Projection {
                    view: view.name.clone(),
                    alias: None,
                    features: view.features.clone(),
                    join_key_map: BTreeMap::new(),
                })),
                // The view itself is invalid and already reported.
                None if declared_views.contains(v) => skipped = true,
                None => ck.report(
                    file,
                    S,
                    K,
                    &name,
                    format!("sources: unknown feature view {v:?}: list feature views whose features the expressions read"),
                ),
            }
        }
        match (&def.request_source, def.request_schema) {
            (Some(_), Some(_)) => ck.report(
                file,
                S,
                K,
                &name,
                "request_source and request_schema both given: name a request source or list the fields inline, not both",
            ),
            (Some(r), None) => match source_by_name.get(r.as_str()).copied() {
                Some(DataSource {
                    kind: SourceKind::Request { schema },
                    ..
                }) => odfv_sources.push(OnDemandSource::Request {
                    name: r.clone(),
                    schema: schema.clone(),
                }),
                Some(s) => ck.report(
                    file,
                    S,
                    K,
                    &name,
                    format!("request_source {r:?} is a {} source: name a source of type request", s.kind_name()),
                ),
                None => ck.report(
                    file,
                    S,
                    K,
                    &name,
                    format!("request_source {r:?} is not defined under sources (as type: request)"),
                ),
            },
            (None, Some(fields)) => {
                let schema = check_fields(ck, file, S, K, &name, fields);
                odfv_sources.push(OnDemandSource::Request {
                    name: format!("{name}_request"),
                    schema,
                });
            }
            (None, None) => {}
        }
        if odfv_sources.is_empty() && !skipped && ck.problems() == errors_before {
            ck.report(
                file,
                S,
                K,
                &name,
                "no inputs: list sources (feature views) and/or a request_source",
            );
        }
        // Feast keys sources by name, so the registry holds them sorted.
        odfv_sources.sort_by(|a, b| a.name().cmp(b.name()));
        if def.features.is_empty() {
            ck.report(
                file,
                S,
                K,
                &name,
                "features is empty: add {name, dtype, expr} entries",
            );
        }
        let mut features = Vec::new();
        let mut expressions = Vec::new();
        let mut listed: HashSet<String> = HashSet::new();
        for f in def.features {
            if !listed.insert(f.name.value.clone()) {
                ck.report_field(
                    file,
                    S,
                    K,
                    &name,
                    &f.name,
                    format!("features: {:?} is listed twice", f.name),
                );
                continue;
            }
            let Some(dtype) = ValueType::from_dtype_name(&f.dtype) else {
                ck.report_field(
                    file,
                    S,
                    K,
                    &name,
                    &f.name,
                    format!(
                        "features: {:?} has unknown dtype {:?}; expected {}",
                        f.name,
                        f.dtype,
                        accepted_dtypes()
                    ),
                );
                continue;
            };
            let Some(expr) = f.expr else {
                ck.report_field(file, S, K, &name, &f.name, format!("features: {:?} has no expr: write the expression that computes it, e.g. expr: \"view.feature * 2\"", f.name));
                continue;
            };
            let tags = tags(ck, file, S, K, &name, f.tags);
            features.push(Field {
                name: f.name.value.clone(),
                dtype,
                description: f.description,
                tags,
            });
            expressions.push((f.name.into(), expr));
        }
        let tags = tags(ck, file, S, K, &name, def.tags);
        if skipped || ck.problems() > errors_before {
            continue;
        }
        // A write-time view's rows are keyed by its source views' entities.
        let (mut entities, mut entity_columns) = (Vec::<String>::new(), Vec::<Field>::new());
        if def.write_to_online_store {
            for p in odfv_sources.iter().filter_map(|s| match s {
                OnDemandSource::View(p) => Some(p),
                OnDemandSource::Request { .. } => None,
            }) {
                let Some(v) = views.iter().find(|v| v.name == p.view) else {
                    continue;
                };
                for e in &v.entities {
                    if !entities.contains(e) {
                        entities.push(e.clone());
                    }
                }
                for c in &v.entity_columns {
                    if !entity_columns.iter().any(|x| x.name == c.name) {
                        entity_columns.push(c.clone());
                    }
                }
            }
            if entity_columns.is_empty() {
                ck.report(
                    file,
                    S,
                    K,
                    &name,
                    "write_to_online_store: true needs a source feature view with entities (its rows are stored per entity): add one to sources",
                );
                continue;
            }
        }
        let view = OnDemandView {
            name: name.clone(),
            features,
            sources: odfv_sources,
            transformation: Transformation::Native { expressions },
            write_to_online_store: def.write_to_online_store,
            entities,
            entity_columns,
            description: def.description,
            tags,
            owner: def.owner,
            meta: Meta::default(),
        };
        // Every expression checked against its sources' types and its declared dtype.
        if let Some(Err(e)) = view.native_program() {
            ck.report_field(
                file,
                S,
                K,
                &name,
                &e.feature,
                format!("features: {:?}: expr {}", e.feature, e.error),
            );
            continue;
        }
        out.push(view);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - name: customer
    value_type: STRING
sources:
  - name: stats
    type: file
    path: data/stats.parquet
    created_timestamp_column: created
  - {name: stats_push, type: push, batch_source: stats}
  - name: req
    type: request
    schema: [{name: x, dtype: Float64}]
feature_views:
  - name: driver_hourly
    entities: [driver]
    ttl: 1d
    source: stats
    tags: {team: ops, tier: 1}
    schema:
      - {name: driver_id, dtype: Int64}
      - {name: conv_rate, dtype: Float32}
      - {name: zones, dtype: Array(Int32)}
  - name: fresh
    entities: [driver, customer]
    source: stats_push
    ttl: 0
    schema: [{name: conv_rate, dtype: Float32}]
feature_services:
  - name: ranking
    features:
      - driver_hourly: [conv_rate]
      - fresh
      - {view: driver_hourly, alias: again, features: [zones]}
"#;

    #[test]
    fn good_definitions_become_the_model() {
        let reg = parse(&[("features.yaml", GOOD)], "demo").unwrap();
        assert_eq!(reg.entities.len(), 2);
        let customer = reg.entity("customer").unwrap();
        assert_eq!(customer.join_key, "customer");
        assert_eq!(customer.value_type, ValueType::String);

        let view = reg.feature_view("driver_hourly").unwrap();
        assert_eq!(view.ttl.as_secs(), 86_400);
        assert!(view.online);
        assert_eq!(view.tags.get("tier").map(String::as_str), Some("1"));
        let names: Vec<_> = view.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["conv_rate", "zones"]);
        assert_eq!(
            view.entity_columns,
            [Field::new("driver_id", ValueType::Int64)]
        );
        assert_eq!(
            view.batch_source.as_ref().unwrap().timestamp_field,
            DEFAULT_TIMESTAMP_FIELD
        );

        let fresh = reg.feature_view("fresh").unwrap();
        assert_eq!(fresh.stream_source.as_ref().unwrap().name, "stats_push");
        assert_eq!(fresh.batch_source.as_ref().unwrap().name, "stats");
        assert_eq!(fresh.entity_columns.len(), 2);

        let svc = reg.feature_service("ranking").unwrap();
        assert_eq!(svc.projections.len(), 3);
        assert_eq!(svc.projections[0].features.len(), 1);
        assert_eq!(svc.projections[1].features.len(), 1);
        assert_eq!(svc.projections[2].alias.as_deref(), Some("again"));
        assert_eq!(reg.data_sources.len(), 3);
    }

    #[test]
    fn spark_sources_as_feast_writes_them() {
        let defs = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: t, type: spark, table: db.driver_stats, timestamp_field: ts}
  - {name: q, type: spark, query: "SELECT * FROM db.x WHERE y > 1"}
  - {name: p, type: spark, path: "s3a://b/stats", file_format: parquet, created_timestamp_column: created}
  - {name: pp, type: push, batch_source: p}
feature_views:
  - name: v
    entities: [driver]
    source: pp
    schema: [{name: f, dtype: Int64}]
"#;
        let reg = parse(&[("features.yaml", defs)], "demo").unwrap();
        let t = reg.data_sources.iter().find(|s| s.name == "t").unwrap();
        assert!(
            matches!(&t.kind, SourceKind::Spark { table, query, path, .. } if table == "db.driver_stats" && query.is_empty() && path.is_empty())
        );
        assert_eq!(t.timestamp_field, "ts");
        let q = reg.data_sources.iter().find(|s| s.name == "q").unwrap();
        assert_eq!(q.timestamp_field, DEFAULT_TIMESTAMP_FIELD);
        // The proto is Feast's: BATCH_SPARK with spark_options, Feast's class name.
        let proto = q.to_proto("demo");
        assert_eq!(proto.r#type, 11);
        assert!(
            proto
                .data_source_class_type
                .ends_with("spark_source.SparkSource")
        );
        assert_eq!(DataSource::from_proto(proto), q.clone());
        let v = reg.feature_view("v").unwrap();
        assert!(matches!(
            &v.batch_source.as_ref().unwrap().kind,
            SourceKind::Spark { path, file_format, .. } if path == "s3a://b/stats" && file_format == "parquet"
        ));

        let bad = r#"
sources:
  - {name: two, type: spark, table: a, query: "SELECT 1"}
  - {name: none, type: spark}
  - {name: nofmt, type: spark, path: /x}
  - {name: fmt, type: spark, table: a, file_format: csv}
  - {name: f, type: file, path: x.parquet, table: a}
"#;
        let errs = parse(&[("features.yaml", bad)], "demo").unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        for (name, words) in [
            ("\"two\"", "exactly one of table"),
            ("\"none\"", "exactly one of table"),
            ("\"nofmt\"", "file_format is required"),
            ("\"fmt\"", "applies to path only"),
            ("\"f\"", "table does not apply to a file source"),
        ] {
            assert!(
                text.iter().any(|t| t.contains(name) && t.contains(words)),
                "missing {name} .. {words} in:\n{}",
                text.join("\n")
            );
        }
    }

    #[test]
    fn every_problem_is_reported_with_file_line_and_object() {
        let bad = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: driver, join_keys: [id2], value_type: INT64}
  - {name: ratio, join_keys: [r], value_type: DOUBLE}
  - {name: pair, join_keys: [a, b], value_type: STRING}
sources:
  - {name: stats, type: file, path: data/stats.parquet}
  - {name: p, type: push, batch_source: nowhere}
feature_views:
  - name: v1
    entities: [driver, rider]
    source: missing
    ttl: 2x
    schema:
      - {name: f, dtype: Float128}
  - name: v2
    entities: [driver]
    source: stats
    schema: [{name: g, dtype: Int64}]
feature_services:
  - name: s
    features:
      - v2: [nope]
      - ghost
"#;
        let errs = parse(&[("features.yaml", bad)], "demo").unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let expect = [
            ("features.yaml:4: entity \"driver\"", "defined twice"),
            (
                "features.yaml:5: entity \"ratio\"",
                "cannot be an entity key",
            ),
            ("features.yaml:6: entity \"pair\"", "exactly one"),
            ("features.yaml:9: source \"p\"", "not defined under sources"),
            (
                "features.yaml:11: feature view \"v1\"",
                "unknown entity \"rider\"",
            ),
            (
                "features.yaml:11: feature view \"v1\"",
                "unknown source \"missing\"",
            ),
            ("features.yaml:11: feature view \"v1\"", "invalid duration"),
            (
                "features.yaml:16: feature view \"v1\"",
                "unknown dtype \"Float128\"",
            ),
            (
                "features.yaml:22: feature service \"s\"",
                "has no feature \"nope\"",
            ),
            (
                "features.yaml:22: feature service \"s\"",
                "unknown feature view \"ghost\"",
            ),
        ];
        for (prefix, words) in expect {
            assert!(
                text.iter()
                    .any(|t| t.starts_with(prefix) && t.contains(words)),
                "missing {prefix} .. {words} in:\n{}",
                text.join("\n")
            );
        }
        assert_eq!(errs.len(), expect.len(), "{}", text.join("\n"));
    }

    #[test]
    fn syntax_and_unknown_keys_are_located() {
        let errs = parse(
            &[(
                "features/a.yaml",
                "entities:\n  - name: x\n    valu_type: INT64\n",
            )],
            "p",
        )
        .unwrap_err()
        .0;
        assert_eq!(errs[0].file, "features/a.yaml");
        assert_eq!(errs[0].line, Some(3), "the line of the unknown key");
        assert!(errs[0].message.contains("valu_type"), "{}", errs[0].message);

        let errs = parse(&[("f.yaml", "entities: [\n")], "p").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].line.is_some());
    }

    #[test]
    fn label_views_are_views_with_label_options() {
        let defs = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: labels_batch, path: data/labels.parquet}
  - {name: labels_push, type: push, batch_source: labels_batch}
label_views:
  - name: quality
    entities: [driver]
    source: labels_push
    conflict_policy: majority_vote
    reference_feature_view: hourly
    schema: [{name: is_reliable, dtype: Int64}, {name: labeler, dtype: String}]
"#;
        let reg = parse(&[("features.yaml", defs)], "p").unwrap();
        let view = reg.feature_view("quality").unwrap();
        assert_eq!(
            view.label_options(),
            Some(&LabelOptions {
                labeler_field: "labeler".into(),
                conflict_policy: ConflictPolicy::MajorityVote,
                reference_feature_view: "hourly".into(),
            })
        );
        assert_eq!(view.stream_source.as_ref().unwrap().name, "labels_push");
        assert_eq!(view.batch_source.as_ref().unwrap().name, "labels_batch");
        assert_eq!(view.entity_columns[0].name, "driver_id");

        let bad = defs.replace("majority_vote", "loudest_wins");
        let errs = parse(&[("features.yaml", &bad)], "p").unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(8));
        assert_eq!(errs[0].object, "label view \"quality\"");
        assert!(errs[0].message.contains("loudest_wins"), "{}", errs[0]);
        assert!(errs[0].message.contains("last_write_wins"), "{}", errs[0]);

        let clash = format!(
            "{defs}feature_views:\n  - {{name: quality, entities: [driver], source: labels_batch, schema: [{{name: f, dtype: Bool}}]}}\n"
        );
        let errs = parse(&[("features.yaml", &clash)], "p").unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("same name"), "{}", errs[0]);
        // A label view without entities is reported under label_views.
        let no_entities = defs.replace(
            "    entities: [driver]\n    source: labels_push",
            "    source: labels_push",
        );
        let errs = parse(&[("features.yaml", &no_entities)], "p")
            .unwrap_err()
            .0;
        assert_eq!(errs[0].object, "label view \"quality\"");
        assert_eq!(errs[0].line, Some(8));
    }

    #[test]
    fn push_sources_take_their_times_from_the_batch_source() {
        let defs = "sources:\n  - {name: s, path: d.parquet}\n  - {name: p, type: push, batch_source: s, timestamp_field: ts}\n";
        let errs = parse(&[("features.yaml", defs)], "p").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(3));
        assert!(
            errs[0]
                .message
                .contains("timestamp_field does not apply to a push source"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn objects_can_be_split_across_files() {
        let a = "entities:\n  - {name: driver, value_type: INT64}\n";
        let b = "sources:\n  - {name: s, path: d.parquet}\nfeature_views:\n  - {name: v, entities: [driver], source: s, schema: [{name: f, dtype: Bool}]}\n";
        let reg = parse(&[("features/a.yaml", a), ("features/b.yaml", b)], "p").unwrap();
        assert_eq!(reg.feature_views[0].entity_columns[0].name, "driver");
        assert!(
            parse(&[("empty.yaml", "")], "p")
                .unwrap()
                .entities
                .is_empty()
        );
    }

    const ODFV: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet}
  - name: vals
    type: request
    schema: [{name: val_to_add, dtype: Int64}]
feature_views:
  - name: hourly
    entities: [driver]
    source: stats
    schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]
on_demand_feature_views:
  - name: adjusted
    sources: [hourly]
    request_source: vals
    features:
      - {name: plus_val, dtype: Float64, expr: "hourly.conv_rate + val_to_add"}
      - {name: busy, dtype: Bool, expr: "hourly.trips > 10"}
  - name: inline
    request_schema: [{name: x, dtype: String}]
    features:
      - {name: greeting, dtype: String, expr: "'hi ' || x"}
"#;

    #[test]
    fn native_on_demand_views_become_the_model() {
        let reg = parse(&[("features.yaml", ODFV)], "p").unwrap();
        let v = reg.on_demand_view("adjusted").unwrap();
        assert_eq!(v.sources.len(), 2);
        assert_eq!(v.features[0], Field::new("plus_val", ValueType::Double));
        let program = v.native_program().unwrap().unwrap();
        assert_eq!(program.inputs.len(), 3);
        let inline = reg.on_demand_view("inline").unwrap();
        let fields: Vec<_> = inline
            .request_fields()
            .map(|(s, f)| (s, f.name.as_str()))
            .collect();
        assert_eq!(fields, [("inline_request", "x")]);
    }

    #[test]
    fn write_time_native_views_are_keyed_by_their_source_views_entities() {
        let yaml = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet}
feature_views:
  - name: hourly
    entities: [driver]
    source: stats
    schema: [{name: conv_rate, dtype: Float32}]
on_demand_feature_views:
  - name: stored
    sources: [hourly]
    write_to_online_store: true
    features:
      - {name: f, dtype: Float64, expr: "hourly.conv_rate + 1"}
  - name: keyless
    request_schema: [{name: x, dtype: Int64}]
    write_to_online_store: true
    features:
      - {name: g, dtype: Int64, expr: "x + 1"}
"#;
        let errs = parse(&[("features.yaml", yaml)], "p").unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(text[0].contains("\"keyless\""), "{text:?}");
        assert!(
            text[0].contains("write_to_online_store: true needs a source feature view"),
            "{text:?}"
        );
        let good = yaml.split("  - name: keyless").next().unwrap();
        let reg = parse(&[("features.yaml", good)], "p").unwrap();
        let v = reg.on_demand_view("stored").unwrap();
        assert!(v.write_to_online_store);
        assert_eq!(v.entities, ["driver"]);
        assert_eq!(
            v.entity_columns,
            [Field::new("driver_id", ValueType::Int64)]
        );
    }

    #[test]
    fn on_demand_problems_are_located() {
        let bad = r#"
entities:
  - {name: driver, value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet}
feature_views:
  - name: hourly
    entities: [driver]
    source: stats
    schema: [{name: conv_rate, dtype: Float32}]
on_demand_feature_views:
  - name: a
    sources: [hourly, nowhere]
    request_source: stats
    features:
      - {name: f, dtype: Float64, expr: "hourly.conv_rate + 1"}
  - name: b
    sources: [hourly]
    features:
      - {name: ok, dtype: Float64, expr: "hourly.conv_rate * 2"}
      - name: typed
        dtype: Int64
        expr: "hourly.conv_rate + 1"
  - name: c
    sources: [hourly]
    features:
      - {name: g, dtype: Float64, expr: "hourly.conv_rat + (1"}
      - {name: h, dtype: Float64}
"#;
        let errs = parse(&[("features.yaml", bad)], "p").unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let expect = [
            (
                "features.yaml:12: on-demand feature view \"a\"",
                "unknown feature view \"nowhere\"",
            ),
            (
                "features.yaml:12: on-demand feature view \"a\"",
                "request_source \"stats\" is a file source",
            ),
            (
                "features.yaml:21: on-demand feature view \"b\"",
                "\"typed\": expr column 18: the expression is Float64 but the feature is declared Int64",
            ),
            (
                "features.yaml:28: on-demand feature view \"c\"",
                "\"h\" has no expr",
            ),
        ];
        for (prefix, words) in expect {
            assert!(
                text.iter()
                    .any(|t| t.starts_with(prefix) && t.contains(words)),
                "missing {prefix} .. {words} in:\n{}",
                text.join("\n")
            );
        }
        assert_eq!(errs.len(), expect.len(), "{}", text.join("\n"));
    }

    /// Definitions of `n` entities and `n` views (one per entity), block style; with `bad`,
    /// every view has a field of an unknown dtype (a problem located per view).
    fn many(n: usize, bad: bool) -> String {
        let mut t = String::from("entities:\n");
        for i in 0..n {
            t.push_str(&format!(
                "  - name: e{i}\n    join_keys: [k{i}]\n    value_type: INT64\n"
            ));
        }
        t.push_str("sources:\n  - {name: s, path: data/s.parquet}\nfeature_views:\n");
        let dtype = if bad { "Float99" } else { "Float32" };
        for i in 0..n {
            t.push_str(&format!(
                "  - name: v{i}\n    entities: [e{i}]\n    source: s\n    schema:\n      - {{name: x, dtype: Float32}}\n      - {{name: f{i}, dtype: {dtype}}}\n"
            ));
        }
        t
    }

    /// Issue 19: locating each problem rescanned the file (10k entities took 9.6 s, 40k over
    /// 120 s) and the checks compared every object with every other. The largest definitions
    /// allowed, valid or wrong everywhere, check in time linear in their size; the problems
    /// listed are capped and still located on their lines.
    #[test]
    fn the_largest_definitions_check_in_linear_time() {
        let n = MAX_OBJECTS / 2 - 1;
        let good = many(n, false);
        let t = std::time::Instant::now();
        let reg = parse(&[("features.yaml", &good)], "p").unwrap();
        let took_good = t.elapsed();
        assert_eq!((reg.entities.len(), reg.feature_views.len()), (n, n));

        let bad = many(n, true);
        let t = std::time::Instant::now();
        let errs = parse(&[("features.yaml", &bad)], "p").unwrap_err().0;
        let took_bad = t.elapsed();
        assert_eq!(errs.len(), MAX_PROBLEMS + 1);
        // View v0's bad field is on line 3n + 3 + 7 (entities take 3 lines each).
        assert_eq!(errs[0].line, Some(3 * n + 3 + 7), "{}", errs[0]);
        assert!(
            errs[0]
                .message
                .contains("\"f0\" has unknown dtype \"Float99\""),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].line, Some(3 * n + 3 + 7 + 6), "{}", errs[1]);
        let last = &errs[MAX_PROBLEMS];
        assert!(
            last.message
                .starts_with(&format!("{} more problems not listed", n - MAX_PROBLEMS)),
            "{last}"
        );

        // Stated bound, generous for a debug build on a shared machine (release: ~0.1 s).
        for took in [took_good, took_bad] {
            assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        }
        eprintln!("{n} entities + {n} views: valid {took_good:?}, all wrong {took_bad:?}");
    }

    #[test]
    fn object_count_and_nesting_are_capped() {
        let text = many(MAX_OBJECTS / 2 + 1, false);
        let errs = parse(&[("features.yaml", &text)], "p").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message
                .contains(&format!("{} objects", MAX_OBJECTS + 3))
                && errs[0].message.contains(&format!("at most {MAX_OBJECTS}")),
            "{}",
            errs[0]
        );
        // 100k-deep YAML took 20 s before the parser's own limit; now the depth cap, at once.
        let deep = format!(
            "entities: [{{name: e, tags: {}{}}}]",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let t = std::time::Instant::now();
        let errs = parse(&[("features.yaml", &deep)], "p").unwrap_err().0;
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(errs[0].line, Some(1));
        assert!(
            errs[0].message.contains("nested deeper than 32 levels"),
            "{}",
            errs[0]
        );
        // Listings in messages are capped too (one message per view would otherwise repeat
        // every declared name).
        let mut text = many(50, false);
        text.push_str(
            "  - {name: odd, entities: [nope], source: s, schema: [{name: y, dtype: Int64}]}\n",
        );
        let errs = parse(&[("features.yaml", &text)], "p").unwrap_err().0;
        assert!(
            errs[0]
                .message
                .contains("e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, ... (50 in all)"),
            "{}",
            errs[0]
        );
    }
}
