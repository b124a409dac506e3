//! Feast's registry: one serialized `feast.core.Registry` holding the objects of every project.
//!
//! [`RegistryFile`] keeps each object as the bytes it was read with, so that rewriting a registry
//! leaves every object quiver did not change exactly as it was, including fields and whole
//! object kinds (saved datasets, permissions) that quiver does not model.
//! [`ProjectRegistry`] is the typed view of one project that the rest of quiver works with.

use prost::Message;

use crate::Error;
use crate::model::{DataSource, Entity, FeatureService, FeatureView, Project, ViewKind};
use crate::on_demand::OnDemandView;
use crate::proto::core as pb;
use crate::time::Timestamp;

/// The `registry_schema_version` Feast writes.
pub const REGISTRY_SCHEMA_VERSION: &str = "1";

/// A whole registry, every object kept as its serialized bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryFile {
    raw: pb::RawRegistry,
}

/// The object kinds quiver models, with the registry list each lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Project,
    Entity,
    DataSource,
    FeatureView,
    StreamFeatureView,
    FeatureService,
    /// Read as [`OnDemandView`] (the pickled function is kept in the bytes, never decoded).
    OnDemandFeatureView,
    /// Feast 0.67's label views (`label_views`, field 19).
    LabelView,
}

impl ObjectKind {
    /// Every kind, in the order registries list them.
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Project,
        ObjectKind::Entity,
        ObjectKind::DataSource,
        ObjectKind::FeatureView,
        ObjectKind::StreamFeatureView,
        ObjectKind::FeatureService,
        ObjectKind::OnDemandFeatureView,
        ObjectKind::LabelView,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Project => "Project",
            ObjectKind::Entity => "Entity",
            ObjectKind::DataSource => "DataSource",
            ObjectKind::FeatureView => "FeatureView",
            ObjectKind::StreamFeatureView => "StreamFeatureView",
            ObjectKind::FeatureService => "FeatureService",
            ObjectKind::OnDemandFeatureView => "OnDemandFeatureView",
            ObjectKind::LabelView => "LabelView",
        }
    }

    /// The registry list a view lives in.
    pub fn of_view(view: &FeatureView) -> ObjectKind {
        match view.kind {
            ViewKind::Batch => ObjectKind::FeatureView,
            ViewKind::Stream => ObjectKind::StreamFeatureView,
            ViewKind::Label(_) => ObjectKind::LabelView,
        }
    }
}

/// One project's objects, typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectRegistry {
    pub project: String,
    /// The project object, when the registry has one (Feast writes one since 0.40).
    pub project_object: Option<Project>,
    pub entities: Vec<Entity>,
    pub data_sources: Vec<DataSource>,
    /// Batch and stream feature views and label views together; `FeatureView::kind` tells them
    /// apart.
    pub feature_views: Vec<FeatureView>,
    pub feature_services: Vec<FeatureService>,
    /// On-demand feature views (computed through Feast's transformation service).
    pub on_demand_views: Vec<OnDemandView>,
}

impl ProjectRegistry {
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == name)
    }

    pub fn data_source(&self, name: &str) -> Option<&DataSource> {
        self.data_sources.iter().find(|s| s.name == name)
    }

    pub fn feature_view(&self, name: &str) -> Option<&FeatureView> {
        self.feature_views.iter().find(|v| v.name == name)
    }

    pub fn feature_service(&self, name: &str) -> Option<&FeatureService> {
        self.feature_services.iter().find(|s| s.name == name)
    }

    pub fn on_demand_view(&self, name: &str) -> Option<&OnDemandView> {
        self.on_demand_views.iter().find(|v| v.name == name)
    }
}

/// One stored object: its kind, name and serialized proto.
pub type RawObject<'a> = (ObjectKind, String, &'a [u8]);

/// What a write changes for one object: its kind and name, and its new serialized proto
/// (`None` deletes it).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectWrite {
    pub kind: ObjectKind,
    pub name: String,
    pub bytes: Option<Vec<u8>>,
}

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, Error> {
    M::decode(bytes).map_err(|e| Error::invalid(format!("registry: malformed {what}: {e}")))
}

impl RegistryFile {
    /// An empty registry, as a new repo starts with.
    pub fn empty() -> RegistryFile {
        RegistryFile::default()
    }

    /// Reads a serialized `feast.core.Registry`.
    pub fn decode(bytes: &[u8]) -> Result<RegistryFile, Error> {
        let raw = decode::<pb::RawRegistry>(bytes, "Registry")?;
        let file = RegistryFile { raw };
        // Fail now on a corrupt object, not later in the middle of serving.
        for project in file.project_names()? {
            file.project(&project)?;
        }
        Ok(file)
    }

    /// Serializes the registry, stamped with a new version id and update time.
    pub fn encode(&mut self, version_id: &str, now: Timestamp) -> Vec<u8> {
        self.raw.registry_schema_version = REGISTRY_SCHEMA_VERSION.to_owned();
        self.raw.version_id = version_id.to_owned();
        self.raw.last_updated = Some(now);
        self.raw.encode_to_vec()
    }

    pub fn version_id(&self) -> &str {
        &self.raw.version_id
    }

    pub fn last_updated(&self) -> Option<Timestamp> {
        self.raw.last_updated
    }

    /// Every project that owns an object or has a project object, sorted.
    pub fn project_names(&self) -> Result<Vec<String>, Error> {
        let mut names = std::collections::BTreeSet::new();
        for kind in ObjectKind::ALL {
            for bytes in self.list(kind) {
                names.insert(identify(kind, bytes)?.0);
            }
        }
        names.remove("");
        Ok(names.into_iter().collect())
    }

    /// The typed objects of one project (empty lists for a project the registry does not know).
    pub fn project(&self, project: &str) -> Result<ProjectRegistry, Error> {
        let mut out = ProjectRegistry {
            project: project.to_owned(),
            ..ProjectRegistry::default()
        };
        for bytes in &self.raw.projects {
            let p = Project::from_proto(decode(bytes, "Project")?);
            if p.name == project {
                out.project_object = Some(p);
            }
        }
        for bytes in &self.raw.entities {
            let p: pb::Entity = decode(bytes, "Entity")?;
            if p.spec.as_ref().is_some_and(|s| s.project == project) {
                out.entities.push(Entity::from_proto(p));
            }
        }
        for bytes in &self.raw.data_sources {
            let p: pb::DataSource = decode(bytes, "DataSource")?;
            if p.project == project {
                out.data_sources.push(DataSource::from_proto(p));
            }
        }
        for bytes in &self.raw.feature_views {
            let p: pb::FeatureView = decode(bytes, "FeatureView")?;
            if p.spec.as_ref().is_some_and(|s| s.project == project) {
                out.feature_views.push(FeatureView::from_proto(p));
            }
        }
        for bytes in &self.raw.stream_feature_views {
            let p: pb::StreamFeatureView = decode(bytes, "StreamFeatureView")?;
            if p.spec.as_ref().is_some_and(|s| s.project == project) {
                out.feature_views.push(FeatureView::from_stream_proto(p));
            }
        }
        for bytes in &self.raw.label_views {
            let p: pb::LabelView = decode(bytes, "LabelView")?;
            if p.spec.as_ref().is_some_and(|s| s.project == project) {
                out.feature_views.push(FeatureView::from_label_proto(p));
            }
        }
        for bytes in &self.raw.feature_services {
            let p: pb::FeatureService = decode(bytes, "FeatureService")?;
            if p.spec.as_ref().is_some_and(|s| s.project == project) {
                out.feature_services.push(FeatureService::from_proto(p));
            }
        }
        for bytes in &self.raw.on_demand_feature_views {
            let p: pb::OnDemandFeatureView = decode(bytes, "OnDemandFeatureView")?;
            if p.spec.as_ref().is_some_and(|s| s.project == project) {
                out.on_demand_views.push(OnDemandView::from_proto(p));
            }
        }
        Ok(out)
    }

    /// Applies writes to one project's objects. An object that is neither written nor deleted
    /// keeps its exact bytes and its position; a new object is appended to its list.
    pub fn apply(&mut self, project: &str, writes: &[ObjectWrite]) -> Result<(), Error> {
        // Per kind, the project's objects are identified once (a proto decode each), so an
        // apply of n objects costs O(n), not a scan of the list per write.
        for kind in ObjectKind::ALL {
            let mut kind_writes = writes.iter().filter(|w| w.kind == kind).peekable();
            if kind_writes.peek().is_none() {
                continue;
            }
            let list = self.list_mut(kind);
            // name -> positions of the project's objects of that name, in list order.
            let mut at: std::collections::HashMap<String, std::collections::VecDeque<usize>> =
                std::collections::HashMap::new();
            for (i, bytes) in list.iter().enumerate() {
                let (p, name) = identify(kind, bytes)?;
                if p == project {
                    at.entry(name).or_default().push_back(i);
                }
            }
            let mut removed = vec![false; list.len()];
            for w in kind_writes {
                let found = at.get_mut(&w.name).and_then(|q| q.front().copied());
                match (found, &w.bytes) {
                    (Some(i), Some(bytes)) => list[i] = bytes.clone(),
                    (Some(i), None) => {
                        removed[i] = true;
                        if let Some(q) = at.get_mut(&w.name) {
                            q.pop_front();
                        }
                    }
                    (None, Some(bytes)) => {
                        at.entry(w.name.clone()).or_default().push_back(list.len());
                        list.push(bytes.clone());
                        removed.push(false);
                    }
                    (None, None) => {}
                }
            }
            let mut i = 0;
            list.retain(|_| {
                let keep = !removed[i];
                i += 1;
                keep
            });
        }
        Ok(())
    }

    /// The raw serialized objects of one kind (all projects).
    pub fn list(&self, kind: ObjectKind) -> &[Vec<u8>] {
        match kind {
            ObjectKind::Project => &self.raw.projects,
            ObjectKind::Entity => &self.raw.entities,
            ObjectKind::DataSource => &self.raw.data_sources,
            ObjectKind::FeatureView => &self.raw.feature_views,
            ObjectKind::StreamFeatureView => &self.raw.stream_feature_views,
            ObjectKind::FeatureService => &self.raw.feature_services,
            ObjectKind::OnDemandFeatureView => &self.raw.on_demand_feature_views,
            ObjectKind::LabelView => &self.raw.label_views,
        }
    }

    fn list_mut(&mut self, kind: ObjectKind) -> &mut Vec<Vec<u8>> {
        match kind {
            ObjectKind::Project => &mut self.raw.projects,
            ObjectKind::Entity => &mut self.raw.entities,
            ObjectKind::DataSource => &mut self.raw.data_sources,
            ObjectKind::FeatureView => &mut self.raw.feature_views,
            ObjectKind::StreamFeatureView => &mut self.raw.stream_feature_views,
            ObjectKind::FeatureService => &mut self.raw.feature_services,
            ObjectKind::OnDemandFeatureView => &mut self.raw.on_demand_feature_views,
            ObjectKind::LabelView => &mut self.raw.label_views,
        }
    }

    /// One project's objects of every kind, as (kind, name, stored bytes), in registry order.
    pub fn project_objects(&self, project: &str) -> Result<Vec<RawObject<'_>>, Error> {
        let mut out = Vec::new();
        for kind in ObjectKind::ALL {
            for bytes in self.list(kind) {
                let (p, name) = identify(kind, bytes)?;
                if p == project {
                    out.push((kind, name, bytes.as_slice()));
                }
            }
        }
        Ok(out)
    }

    /// A registry holding exactly these objects (e.g. a project snapshot). Nothing is decoded
    /// here: [`RegistryFile::project`] decodes, and so checks, every object of every kind it
    /// reads, and [`RegistryFile::project_names`] every object.
    pub fn from_objects<I>(objects: I) -> RegistryFile
    where
        I: IntoIterator<Item = (ObjectKind, Vec<u8>)>,
    {
        let mut file = RegistryFile::empty();
        for (kind, bytes) in objects {
            file.list_mut(kind).push(bytes);
        }
        file
    }

    /// The serialized bytes of one project's object, as stored.
    pub fn object_bytes(
        &self,
        kind: ObjectKind,
        project: &str,
        name: &str,
    ) -> Result<Option<&[u8]>, Error> {
        for bytes in self.list(kind) {
            let (p, n) = identify(kind, bytes)?;
            if p == project && n == name {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// Count of on-demand feature views across projects (kept untouched by every write).
    pub fn on_demand_view_count(&self) -> usize {
        self.raw.on_demand_feature_views.len()
    }
}

/// (project, name) of a serialized object of the given kind.
pub fn identify(kind: ObjectKind, bytes: &[u8]) -> Result<(String, String), Error> {
    Ok(match kind {
        ObjectKind::Project => {
            let s = decode::<pb::Project>(bytes, "Project")?
                .spec
                .unwrap_or_default();
            (s.name.clone(), s.name)
        }
        ObjectKind::Entity => {
            let s = decode::<pb::Entity>(bytes, "Entity")?
                .spec
                .unwrap_or_default();
            (s.project, s.name)
        }
        ObjectKind::DataSource => {
            let s = decode::<pb::DataSource>(bytes, "DataSource")?;
            (s.project, s.name)
        }
        ObjectKind::FeatureView => {
            let s = decode::<pb::FeatureView>(bytes, "FeatureView")?
                .spec
                .unwrap_or_default();
            (s.project, s.name)
        }
        ObjectKind::StreamFeatureView => {
            let s = decode::<pb::StreamFeatureView>(bytes, "StreamFeatureView")?
                .spec
                .unwrap_or_default();
            (s.project, s.name)
        }
        ObjectKind::FeatureService => {
            let s = decode::<pb::FeatureService>(bytes, "FeatureService")?
                .spec
                .unwrap_or_default();
            (s.project, s.name)
        }
        ObjectKind::OnDemandFeatureView => {
            let s = decode::<pb::OnDemandFeatureView>(bytes, "OnDemandFeatureView")?
                .spec
                .unwrap_or_default();
            (s.project, s.name)
        }
        ObjectKind::LabelView => {
            let s = decode::<pb::LabelView>(bytes, "LabelView")?
                .spec
                .unwrap_or_default();
            (s.project, s.name)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValueType;
    use crate::model::Meta;

    fn entity(name: &str) -> Entity {
        Entity {
            name: name.into(),
            join_key: format!("{name}_id"),
            value_type: ValueType::Int64,
            description: String::new(),
            tags: Default::default(),
            owner: String::new(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn writes_touch_only_their_project_and_keep_unknown_objects() {
        // A registry with an object kind quiver does not model (saved_datasets, field 11).
        let mut raw = pb::RawRegistry::default();
        raw.saved_datasets.push(vec![0x0a, 0x01, 0x78]);
        raw.entities
            .push(entity("driver").to_proto("other").encode_to_vec());
        let mut file = RegistryFile::decode(&raw.encode_to_vec()).unwrap();

        let writes = vec![ObjectWrite {
            kind: ObjectKind::Entity,
            name: "driver".into(),
            bytes: Some(entity("driver").to_proto("mine").encode_to_vec()),
        }];
        file.apply("mine", &writes).unwrap();
        let bytes = file.encode(
            "v1",
            Timestamp {
                seconds: 1,
                nanos: 0,
            },
        );
        let back = RegistryFile::decode(&bytes).unwrap();
        assert_eq!(back.project_names().unwrap(), ["mine", "other"]);
        assert_eq!(back.project("mine").unwrap().entities, [entity("driver")]);
        assert_eq!(back.project("other").unwrap().entities, [entity("driver")]);
        assert_eq!(back.raw.saved_datasets, [vec![0x0a, 0x01, 0x78]]);
        assert_eq!(back.version_id(), "v1");

        let delete = vec![ObjectWrite {
            kind: ObjectKind::Entity,
            name: "driver".into(),
            bytes: None,
        }];
        let mut file = back;
        file.apply("mine", &delete).unwrap();
        assert!(file.project("mine").unwrap().entities.is_empty());
        assert_eq!(file.project("other").unwrap().entities.len(), 1);
    }

    #[test]
    fn corrupt_registry_is_an_error() {
        assert!(RegistryFile::decode(&[0x0a, 0x05, 0x01]).is_err());
        let mut raw = pb::RawRegistry::default();
        raw.entities.push(vec![0x0a, 0x09]);
        assert!(RegistryFile::decode(&raw.encode_to_vec()).is_err());
    }
}
