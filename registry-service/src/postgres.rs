//! The registry in PostgreSQL, in Feast's SQL-registry layout (feast/infra/registry/sql.py,
//! Feast 0.67): one table per object kind, one serialized proto per row, keyed by (name,
//! project_id); `feast_metadata` rows per project. A registry `feast apply` wrote with
//! `registry_type: sql` is read as it is, and what the service writes Feast reads.
//!
//! The service's own bookkeeping is one extra table, `quiver_registry_versions` (project,
//! version, fingerprint), which Feast never looks at. Every read-modify-write runs in one
//! transaction under a transaction-scoped advisory lock, so several service replicas (and
//! their version checks) serialize on the database.

use std::str::FromStr;

use quiver_core::registry::{ObjectKind, ProjectRegistry, RegistryFile, identify};
use quiver_core::time::Timestamp;
use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, GenericClient, NoTls};
use xxhash_rust::xxh3::xxh3_64;

use quiver_registry::store::IntervalEdit;

use crate::store::{
    Applied, ApplyError, Loaded, RecordError, Recorded, RegistryStoreError, VersionRecord,
    Versions, bump, changed_objects, plan_apply, plan_record, reconcile,
};

/// The advisory lock every read-modify-write takes ("quiver" in ASCII).
const LOCK_KEY: i64 = 0x7175_6976_6572;

/// (kind, table, name column, proto column) of the object kinds the service reads and writes.
const TABLES: [(ObjectKind, &str, &str, &str); 8] = [
    (
        ObjectKind::Project,
        "projects",
        "project_name",
        "project_proto",
    ),
    (
        ObjectKind::Entity,
        "entities",
        "entity_name",
        "entity_proto",
    ),
    (
        ObjectKind::DataSource,
        "data_sources",
        "data_source_name",
        "data_source_proto",
    ),
    (
        ObjectKind::FeatureView,
        "feature_views",
        "feature_view_name",
        "feature_view_proto",
    ),
    (
        ObjectKind::StreamFeatureView,
        "stream_feature_views",
        "feature_view_name",
        "feature_view_proto",
    ),
    (
        ObjectKind::FeatureService,
        "feature_services",
        "feature_service_name",
        "feature_service_proto",
    ),
    (
        ObjectKind::OnDemandFeatureView,
        "on_demand_feature_views",
        "feature_view_name",
        "feature_view_proto",
    ),
    (
        ObjectKind::LabelView,
        "label_views",
        "feature_view_name",
        "feature_view_proto",
    ),
];

/// Feast 0.67's tables (`metadata.create_all` in sql.py), created when missing so that a new
/// database works with the service first and Feast later (Feast then finds them in place),
/// and with Feast's `schema_mode: verify`. Plus the service's version table.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS projects (project_id VARCHAR(255) NOT NULL, project_name VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, project_proto BYTEA NOT NULL, PRIMARY KEY (project_id));
CREATE INDEX IF NOT EXISTS idx_projects_project_id ON projects (project_id);
CREATE TABLE IF NOT EXISTS entities (entity_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, entity_proto BYTEA NOT NULL, PRIMARY KEY (entity_name, project_id));
CREATE INDEX IF NOT EXISTS idx_entities_project_id ON entities (project_id);
CREATE TABLE IF NOT EXISTS data_sources (data_source_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, data_source_proto BYTEA NOT NULL, PRIMARY KEY (data_source_name, project_id));
CREATE INDEX IF NOT EXISTS idx_data_sources_project_id ON data_sources (project_id);
CREATE TABLE IF NOT EXISTS feature_views (feature_view_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, materialized_intervals BYTEA, feature_view_proto BYTEA NOT NULL, user_metadata BYTEA, PRIMARY KEY (feature_view_name, project_id));
CREATE INDEX IF NOT EXISTS idx_feature_views_project_id ON feature_views (project_id);
CREATE TABLE IF NOT EXISTS stream_feature_views (feature_view_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, feature_view_proto BYTEA NOT NULL, user_metadata BYTEA, PRIMARY KEY (feature_view_name, project_id));
CREATE INDEX IF NOT EXISTS idx_stream_feature_views_project_id ON stream_feature_views (project_id);
CREATE TABLE IF NOT EXISTS on_demand_feature_views (feature_view_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, feature_view_proto BYTEA NOT NULL, user_metadata BYTEA, PRIMARY KEY (feature_view_name, project_id));
CREATE INDEX IF NOT EXISTS idx_on_demand_feature_views_project_id ON on_demand_feature_views (project_id);
CREATE TABLE IF NOT EXISTS label_views (feature_view_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, feature_view_proto BYTEA NOT NULL, user_metadata BYTEA, PRIMARY KEY (feature_view_name, project_id));
CREATE INDEX IF NOT EXISTS idx_label_views_project_id ON label_views (project_id);
CREATE TABLE IF NOT EXISTS feature_services (feature_service_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, feature_service_proto BYTEA NOT NULL, PRIMARY KEY (feature_service_name, project_id));
CREATE INDEX IF NOT EXISTS idx_feature_services_project_id ON feature_services (project_id);
CREATE TABLE IF NOT EXISTS saved_datasets (saved_dataset_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, saved_dataset_proto BYTEA NOT NULL, PRIMARY KEY (saved_dataset_name, project_id));
CREATE INDEX IF NOT EXISTS idx_saved_datasets_project_id ON saved_datasets (project_id);
CREATE TABLE IF NOT EXISTS validation_references (validation_reference_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, validation_reference_proto BYTEA NOT NULL, PRIMARY KEY (validation_reference_name, project_id));
CREATE INDEX IF NOT EXISTS idx_validation_references_project_id ON validation_references (project_id);
CREATE TABLE IF NOT EXISTS managed_infra (infra_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, infra_proto BYTEA NOT NULL, PRIMARY KEY (infra_name, project_id));
CREATE INDEX IF NOT EXISTS idx_managed_infra_project_id ON managed_infra (project_id);
CREATE TABLE IF NOT EXISTS permissions (permission_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, last_updated_timestamp BIGINT NOT NULL, permission_proto BYTEA NOT NULL, PRIMARY KEY (permission_name, project_id));
CREATE INDEX IF NOT EXISTS idx_permissions_project_id ON permissions (project_id);
CREATE TABLE IF NOT EXISTS feature_view_version_history (feature_view_name VARCHAR(255) NOT NULL, project_id VARCHAR(255) NOT NULL, version_number INTEGER NOT NULL, feature_view_type VARCHAR(50) NOT NULL, feature_view_proto BYTEA NOT NULL, created_timestamp BIGINT NOT NULL, description TEXT, version_id VARCHAR(36) NOT NULL, PRIMARY KEY (feature_view_name, project_id, version_number));
CREATE INDEX IF NOT EXISTS idx_fv_version_history_project_id ON feature_view_version_history (project_id);
CREATE TABLE IF NOT EXISTS feast_metadata (project_id VARCHAR(255) NOT NULL, metadata_key VARCHAR(50) NOT NULL, metadata_value TEXT NOT NULL, last_updated_timestamp BIGINT NOT NULL, PRIMARY KEY (project_id, metadata_key));
CREATE INDEX IF NOT EXISTS idx_feast_metadata_project_id ON feast_metadata (project_id);
CREATE TABLE IF NOT EXISTS quiver_registry_versions (project_id VARCHAR(255) NOT NULL, version BIGINT NOT NULL, fingerprint BIGINT NOT NULL, last_updated_timestamp BIGINT NOT NULL, PRIMARY KEY (project_id));
"#;

pub struct PgStore {
    config: Config,
    describe: String,
    /// One connection, reopened when it breaks. The service reads its store rarely (polls and
    /// applies); requests are answered from memory.
    client: Mutex<Option<Client>>,
}

fn unavailable(e: tokio_postgres::Error) -> RegistryStoreError {
    RegistryStoreError::Unavailable(format!("postgres: {e}"))
}

impl PgStore {
    /// Connects, and creates Feast's tables (and the version table) where missing.
    pub async fn open(url: &str) -> Result<PgStore, String> {
        let config =
            Config::from_str(url).map_err(|e| format!("--store: not a PostgreSQL URL: {e}"))?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let describe = format!(
            "postgresql://{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config
                .get_ports()
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            config.get_dbname().unwrap_or("")
        );
        let store = PgStore {
            config,
            describe,
            client: Mutex::new(None),
        };
        {
            let mut guard = store
                .connected()
                .await
                .map_err(|e| format!("--store {}: {e}", store.describe))?;
            let Some(client) = guard.as_mut() else {
                return Err(format!("--store {}: not connected", store.describe));
            };
            let batch =
                format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_KEY}); {SCHEMA} COMMIT;");
            client.batch_execute(&batch).await.map_err(|e| {
                format!(
                    "--store {}: creating Feast's registry tables: {e}",
                    store.describe
                )
            })?;
        }
        Ok(store)
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn connected(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, RegistryStoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.config.connect(NoTls),
            )
            .await
            .map_err(|_| {
                RegistryStoreError::Unavailable(format!("{}: connect timed out", self.describe))
            })?
            .map_err(|e| RegistryStoreError::Unavailable(format!("{}: {e}", self.describe)))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "registry store connection closed");
                }
            });
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// Runs `f` in a transaction under the advisory lock; a broken connection is dropped so
    /// the next call reconnects.
    async fn in_transaction<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<(T, bool), ApplyError>,
    ) -> Result<T, ApplyError> {
        let mut guard = self.connected().await?;
        let result = async {
            let Some(client) = guard.as_mut() else {
                return Err(ApplyError::Store(RegistryStoreError::Unavailable(
                    "not connected".into(),
                )));
            };
            let tx = client.transaction().await.map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
                .await
                .map_err(unavailable)?;
            let (value, commit) = f(&tx).await?;
            if commit {
                tx.commit().await.map_err(unavailable)?;
            }
            Ok(value)
        }
        .await;
        if guard.as_ref().is_some_and(Client::is_closed) {
            *guard = None;
        }
        result
    }

    pub async fn load(&self) -> Result<Loaded, RegistryStoreError> {
        let result = self
            .in_transaction(async |tx| {
                let mut loaded = read_all(tx).await?;
                let changed = reconcile(&loaded.file, &mut loaded.versions)?;
                if changed {
                    write_versions(tx, &loaded.versions, now_seconds()).await?;
                }
                Ok((loaded, changed))
            })
            .await;
        match result {
            Ok(l) => Ok(l),
            Err(ApplyError::Store(e)) => Err(e),
            Err(ApplyError::Conflict { .. }) => Err(RegistryStoreError::Unavailable(
                "unexpected conflict while loading".into(),
            )),
        }
    }

    /// A hash of every object row and version record, computed by the database (one short
    /// answer per poll, whatever the registry's size).
    pub async fn change_token(&self) -> Result<u64, RegistryStoreError> {
        let mut parts = Vec::new();
        for (kind, table, name_col, proto_col) in TABLES {
            parts.push(format!(
                "SELECT '{}:' || project_id || ':' || {name_col} || ':' || md5({proto_col}) AS t FROM {table}",
                kind.label()
            ));
        }
        parts.push(
            "SELECT 'v:' || project_id || ':' || version || ':' || fingerprint AS t FROM quiver_registry_versions"
                .to_owned(),
        );
        let sql = format!(
            "SELECT coalesce(md5(string_agg(t, ',' ORDER BY t)), '') FROM ({}) AS x",
            parts.join(" UNION ALL ")
        );
        let mut guard = self.connected().await?;
        let result = match guard.as_mut() {
            Some(client) => client.query_one(&sql, &[]).await.map_err(unavailable),
            None => Err(RegistryStoreError::Unavailable("not connected".into())),
        };
        if guard.as_ref().is_some_and(Client::is_closed) {
            *guard = None;
        }
        let row = result?;
        let text: String = row.try_get(0).map_err(unavailable)?;
        Ok(xxh3_64(text.as_bytes()))
    }

    pub async fn apply(
        &self,
        base_version: Option<u64>,
        desired: ProjectRegistry,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        self.in_transaction(async |tx| {
            let mut loaded = read_all(tx).await?;
            let before = loaded.file.clone();
            let project = desired.project.as_str();
            let (plan, current, reconciled) =
                plan_apply(&mut loaded, project, base_version, &desired, now)?;
            if dry_run {
                loaded.file = before;
                return Ok((
                    Applied {
                        plan,
                        previous_version: current,
                        version: current,
                        loaded,
                    },
                    false,
                ));
            }
            let mut version = current;
            if !plan.is_empty() {
                for (kind, name, bytes) in changed_objects(&plan, &loaded.file, project)? {
                    write_object(tx, kind, project, &name, bytes.as_deref(), now.seconds).await?;
                }
                write_feast_metadata(tx, project, now.seconds).await?;
                version = bump(&mut loaded, project, current)?;
            }
            if reconciled || !plan.is_empty() {
                write_versions(tx, &loaded.versions, now.seconds).await?;
            }
            Ok((
                Applied {
                    plan,
                    previous_version: current,
                    version,
                    loaded,
                },
                true,
            ))
        })
        .await
    }
}

impl PgStore {
    /// Appends materialization intervals in one transaction under the advisory lock.
    pub async fn record(
        &self,
        project: &str,
        edit: &IntervalEdit,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        let result = self
            .in_transaction(async |tx| {
                let mut loaded = read_all(tx).await?;
                let (writes, version) = match plan_record(&mut loaded, project, edit, now) {
                    Ok(planned) => planned,
                    Err(RecordError::Store(e)) => return Err(ApplyError::Store(e)),
                    // Nothing written: the transaction is dropped, not committed.
                    Err(unknown) => return Ok((Err(unknown), false)),
                };
                for w in &writes {
                    write_object(
                        tx,
                        w.kind,
                        project,
                        &w.name,
                        w.bytes.as_deref(),
                        now.seconds,
                    )
                    .await?;
                }
                write_feast_metadata(tx, project, now.seconds).await?;
                write_versions(tx, &loaded.versions, now.seconds).await?;
                Ok((Ok(Recorded { version, loaded }), true))
            })
            .await;
        match result {
            Ok(r) => r,
            Err(ApplyError::Store(e)) => Err(RecordError::Store(e)),
            Err(ApplyError::Conflict { .. }) => Err(RecordError::Store(
                RegistryStoreError::Unavailable("unexpected conflict while recording".into()),
            )),
        }
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Appends `spec.project` (or `project`, for a data source) to a serialized object whose
/// embedded project is not its row's, as Feast's `SqlRegistry.proto()` sets it on read.
/// Appending a field merges it into the message: every other byte stays as stored.
fn with_project(kind: ObjectKind, bytes: &[u8], project: &str) -> Vec<u8> {
    use prost::encoding::encode_varint;
    let mut field = Vec::with_capacity(project.len() + 4);
    let (nested, tag) = match kind {
        ObjectKind::Project => return bytes.to_vec(),
        ObjectKind::Entity => (true, (9 << 3) | 2),
        ObjectKind::DataSource => (false, (21 << 3) | 2),
        ObjectKind::FeatureView
        | ObjectKind::StreamFeatureView
        | ObjectKind::FeatureService
        | ObjectKind::OnDemandFeatureView
        | ObjectKind::LabelView => (true, (2 << 3) | 2),
    };
    encode_varint(tag, &mut field);
    encode_varint(project.len() as u64, &mut field);
    field.extend_from_slice(project.as_bytes());
    let mut out = bytes.to_vec();
    if nested {
        // spec = 1, a length-delimited message.
        encode_varint((1 << 3) | 2, &mut out);
        encode_varint(field.len() as u64, &mut out);
    }
    out.extend_from_slice(&field);
    out
}

async fn read_all(tx: &impl GenericClient) -> Result<Loaded, RegistryStoreError> {
    let mut objects = Vec::new();
    for (kind, table, name_col, proto_col) in TABLES {
        let sql =
            format!("SELECT project_id, {proto_col} FROM {table} ORDER BY project_id, {name_col}");
        for row in tx.query(&sql, &[]).await.map_err(unavailable)? {
            let project: String = row.try_get(0).map_err(unavailable)?;
            let bytes: Vec<u8> = row.try_get(1).map_err(unavailable)?;
            let (embedded, name) = identify(kind, &bytes).map_err(|e| {
                RegistryStoreError::Corrupt(format!("{table} row of project {project}: {e}"))
            })?;
            let bytes = if embedded == project || kind == ObjectKind::Project {
                bytes
            } else {
                tracing::debug!(
                    table,
                    name,
                    project,
                    embedded,
                    "object row without its project; set as Feast does on read"
                );
                with_project(kind, &bytes, &project)
            };
            objects.push((kind, bytes));
        }
    }
    let file = RegistryFile::from_objects(objects);
    // Fail on a corrupt row now, not in the middle of serving.
    for project in file
        .project_names()
        .map_err(|e| RegistryStoreError::Corrupt(e.to_string()))?
    {
        file.project(&project)
            .map_err(|e| RegistryStoreError::Corrupt(format!("project {project}: {e}")))?;
    }
    let mut versions = Versions::new();
    for row in tx
        .query(
            "SELECT project_id, version, fingerprint FROM quiver_registry_versions",
            &[],
        )
        .await
        .map_err(unavailable)?
    {
        let project: String = row.try_get(0).map_err(unavailable)?;
        let version: i64 = row.try_get(1).map_err(unavailable)?;
        let fingerprint: i64 = row.try_get(2).map_err(unavailable)?;
        versions.insert(
            project,
            VersionRecord {
                version: version.max(0) as u64,
                fingerprint: fingerprint as u64,
            },
        );
    }
    Ok(Loaded { file, versions })
}

async fn write_versions(
    tx: &impl GenericClient,
    versions: &Versions,
    now: i64,
) -> Result<(), RegistryStoreError> {
    for (project, rec) in versions {
        tx.execute(
            "INSERT INTO quiver_registry_versions (project_id, version, fingerprint, last_updated_timestamp) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (project_id) DO UPDATE SET version = EXCLUDED.version, \
             fingerprint = EXCLUDED.fingerprint, last_updated_timestamp = EXCLUDED.last_updated_timestamp \
             WHERE quiver_registry_versions.version <> EXCLUDED.version OR quiver_registry_versions.fingerprint <> EXCLUDED.fingerprint",
            &[project, &(rec.version as i64), &(rec.fingerprint as i64), &now],
        )
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

async fn write_object(
    tx: &impl GenericClient,
    kind: ObjectKind,
    project: &str,
    name: &str,
    bytes: Option<&[u8]>,
    now: i64,
) -> Result<(), RegistryStoreError> {
    let Some((_, table, name_col, proto_col)) = TABLES.iter().find(|t| t.0 == kind) else {
        return Err(RegistryStoreError::Corrupt(format!(
            "no table for {}",
            kind.label()
        )));
    };
    match (kind, bytes) {
        (ObjectKind::Project, Some(bytes)) => {
            tx.execute(
                "INSERT INTO projects (project_id, project_name, last_updated_timestamp, project_proto) \
                 VALUES ($1, $1, $2, $3) ON CONFLICT (project_id) DO UPDATE SET \
                 project_proto = EXCLUDED.project_proto, last_updated_timestamp = EXCLUDED.last_updated_timestamp",
                &[&project, &now, &bytes],
            )
            .await
        }
        (ObjectKind::Project, None) => {
            tx.execute("DELETE FROM projects WHERE project_id = $1", &[&project])
                .await
        }
        (_, Some(bytes)) => {
            let sql = format!(
                "INSERT INTO {table} ({name_col}, project_id, last_updated_timestamp, {proto_col}) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT ({name_col}, project_id) DO UPDATE SET \
                 {proto_col} = EXCLUDED.{proto_col}, last_updated_timestamp = EXCLUDED.last_updated_timestamp"
            );
            tx.execute(&sql, &[&name, &project, &now, &bytes]).await
        }
        (_, None) => {
            let sql = format!("DELETE FROM {table} WHERE {name_col} = $1 AND project_id = $2");
            tx.execute(&sql, &[&name, &project]).await
        }
    }
    .map_err(unavailable)?;
    Ok(())
}

/// What Feast's SQL registry keeps per project beside the objects: the time of the last
/// change, and a project uuid set once.
async fn write_feast_metadata(
    tx: &impl GenericClient,
    project: &str,
    now: i64,
) -> Result<(), RegistryStoreError> {
    tx.execute(
        "INSERT INTO feast_metadata (project_id, metadata_key, metadata_value, last_updated_timestamp) \
         VALUES ($1, 'last_updated_timestamp', $2, $3) ON CONFLICT (project_id, metadata_key) DO UPDATE SET \
         metadata_value = EXCLUDED.metadata_value, last_updated_timestamp = EXCLUDED.last_updated_timestamp",
        &[&project, &now.to_string(), &now],
    )
    .await
    .map_err(unavailable)?;
    tx.execute(
        "INSERT INTO feast_metadata (project_id, metadata_key, metadata_value, last_updated_timestamp) \
         VALUES ($1, 'project_uuid', $2, $3) ON CONFLICT (project_id, metadata_key) DO NOTHING",
        &[&project, &uuid::Uuid::new_v4().to_string(), &now],
    )
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use quiver_core::proto::core as pb;

    #[test]
    fn an_appended_project_merges_into_the_stored_bytes() {
        let view = pb::FeatureView {
            spec: Some(pb::FeatureViewSpec {
                name: "v".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = view.encode_to_vec();
        let patched = with_project(ObjectKind::FeatureView, &bytes, "demo");
        assert!(patched.starts_with(&bytes));
        assert_eq!(
            identify(ObjectKind::FeatureView, &patched).unwrap(),
            ("demo".into(), "v".into())
        );
        let source = pb::DataSource {
            name: "s".into(),
            ..Default::default()
        };
        let patched = with_project(ObjectKind::DataSource, &source.encode_to_vec(), "demo");
        assert_eq!(
            identify(ObjectKind::DataSource, &patched).unwrap(),
            ("demo".into(), "s".into())
        );
        let entity = pb::Entity {
            spec: Some(pb::EntitySpecV2 {
                name: "e".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patched = with_project(ObjectKind::Entity, &entity.encode_to_vec(), "demo");
        assert_eq!(
            identify(ObjectKind::Entity, &patched).unwrap(),
            ("demo".into(), "e".into())
        );
    }
}
