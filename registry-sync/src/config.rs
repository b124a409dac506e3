//! `feature_store.yaml`: the repo configuration, with Feast's keys and defaults.
//!
//! Unknown keys are allowed (Feast repos carry provider-specific ones). A known key with a wrong
//! value is an error naming the key and what is accepted. `FEATURE_STORE_YAML_BASE64`, when set,
//! carries the whole file and takes its place, as in Feast.

use std::fmt;
use std::path::{Path, PathBuf};

use quiver_core::fault::{Classified, ErrorKind};

use crate::yaml::{Mapping, Yaml};
use base64::Engine as _;

pub const CONFIG_FILE: &str = "feature_store.yaml";
pub const CONFIG_ENV: &str = "FEATURE_STORE_YAML_BASE64";

/// A configuration problem: where it is, which key, and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Classified for ConfigError {
    /// A `feature_store.yaml` that parses but says something quiver cannot use.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unprocessable
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    /// The folder relative paths are resolved against.
    pub repo_dir: PathBuf,
    pub project: String,
    pub registry: RegistryConfig,
    pub provider: String,
    pub online_store: OnlineStoreConfig,
    pub offline_store: OfflineStoreConfig,
    pub entity_key_serialization_version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryType {
    File,
    Sql,
    Remote,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    pub registry_type: RegistryType,
    /// A local path (relative to the repo), an object-store URI, a database URL (sql) or a
    /// server address (remote), as written.
    pub path: String,
    pub cache_ttl_seconds: u64,
}

impl RegistryConfig {
    /// The registry file when it is on the local file system (resolved against the repo).
    pub fn local_path(&self, repo_dir: &Path) -> Option<PathBuf> {
        if self.registry_type != RegistryType::File {
            return None;
        }
        if let Some(path) = self.path.strip_prefix("file://") {
            return Some(repo_dir.join(path));
        }
        (!self.path.contains("://")).then(|| repo_dir.join(&self.path))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisType {
    Redis,
    RedisCluster,
    RedisSentinel,
}

/// A parsed Feast Redis connection string: `host:port[,host:port][,db=0][,ssl=true][,password=...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConnection {
    pub hosts: Vec<(String, u16)>,
    pub db: i64,
    pub ssl: bool,
    /// redis-py's `ssl_ca_certs`: a PEM file of CAs to trust.
    pub ssl_ca_certs: Option<String>,
    /// redis-py's `ssl_cert_reqs=none`: do not verify the server's certificate.
    pub ssl_insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OnlineStoreConfig {
    Sqlite {
        path: String,
    },
    Redis {
        redis_type: RedisType,
        connection: RedisConnection,
        key_ttl_seconds: Option<u64>,
        sentinel_master: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum OfflineStoreConfig {
    /// Local or object-store files (Feast's `file`, `dask`, `duckdb`).
    Files { kind: String },
    /// A remote offline server (Arrow Flight).
    Remote { host: String, port: u16 },
    /// Spark through Spark Connect (Feast's `type: spark`, `spark_conf["spark.remote"]`).
    Spark(crate::spark::SparkConfig),
}

impl RepoConfig {
    /// Reads `DIR/feature_store.yaml`, or `FEATURE_STORE_YAML_BASE64` when it is set.
    pub fn load(repo_dir: &Path) -> Result<RepoConfig, ConfigError> {
        if let Ok(encoded) = std::env::var(CONFIG_ENV) {
            let err = |message: String| ConfigError {
                source: CONFIG_ENV.to_owned(),
                key: String::new(),
                message,
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| err(format!("not valid base64: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".to_owned()))?;
            return RepoConfig::parse(&text, repo_dir, CONFIG_ENV);
        }
        let path = repo_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            source: path.display().to_string(),
            key: String::new(),
            message: format!("cannot read it ({e}); a feature repo needs a {CONFIG_FILE}"),
        })?;
        RepoConfig::parse(&text, repo_dir, &path.display().to_string())
    }

    /// Parses the text of a `feature_store.yaml`; `source` names it in errors.
    pub fn parse(text: &str, repo_dir: &Path, source: &str) -> Result<RepoConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            source: source.to_owned(),
            key: key.to_owned(),
            message,
        };
        let doc: Yaml = crate::yaml::from_str(text, crate::yaml::LIMITS)
            .map_err(|e| err("", format!("not valid YAML: {e}")))?;
        let root = doc.as_mapping().ok_or_else(|| {
            err(
                "",
                "expected a mapping of keys (project, registry, online_store, ...)".to_owned(),
            )
        })?;

        let project = match root.get("project") {
            Some(Yaml::String(p)) if is_valid_project_name(p) => p.clone(),
            Some(Yaml::String(p)) => {
                return Err(err(
                    "project",
                    format!(
                        "{p:?} is not a valid project name: use letters, digits, underscores and hyphens, not starting with _ or -"
                    ),
                ));
            }
            Some(_) => return Err(err("project", "expected a string".to_owned())),
            None => {
                return Err(err(
                    "project",
                    "is required (the name of the project)".to_owned(),
                ));
            }
        };

        let registry = parse_registry(root.get("registry"), &err)?;
        let provider = match root.get("provider") {
            None | Some(Yaml::Null) => "local".to_owned(),
            Some(Yaml::String(s)) => s.clone(),
            Some(_) => {
                return Err(err(
                    "provider",
                    "expected a string such as local".to_owned(),
                ));
            }
        };
        let online_store = parse_online_store(root.get("online_store"), &err)?;
        let offline_store = parse_offline_store(root.get("offline_store"), &err)?;
        let entity_key_serialization_version = match root.get("entity_key_serialization_version") {
            None | Some(Yaml::Null) => 3,
            Some(v) if v.as_u64() == Some(3) => 3,
            Some(v) => {
                return Err(err(
                    "entity_key_serialization_version",
                    format!(
                        "{} is not supported: only 3 is (Feast removed 1 and 2); re-serialize the online store with Feast's v2-to-v3 guide",
                        yaml_text(v)
                    ),
                ));
            }
        };
        Ok(RepoConfig {
            repo_dir: repo_dir.to_path_buf(),
            project,
            registry,
            provider,
            online_store,
            offline_store,
            entity_key_serialization_version,
        })
    }

    /// Where the registry is: a file (resolved against the repo) or an `s3://`/`gs://` object.
    /// A SQL or remote registry, or an unknown scheme, is an error naming what is supported.
    pub fn registry_location(&self) -> Result<crate::location::RegistryLocation, String> {
        if self.registry.registry_type != RegistryType::File {
            return Err(format!(
                "registry {:?} ({:?}): only a registry file (a local path, s3:// or gs://) is \
                 supported here",
                self.registry.path, self.registry.registry_type
            ));
        }
        crate::location::resolve(&self.registry.path, &self.repo_dir)
    }

    /// The registry file on the local file system, or an error saying which registries this
    /// build can write.
    pub fn local_registry_path(&self) -> Result<PathBuf, String> {
        self.registry.local_path(&self.repo_dir).ok_or_else(|| {
            format!(
                "registry {:?} ({:?}): only a registry file on a local path is supported here",
                self.registry.path, self.registry.registry_type
            )
        })
    }
}

/// Feast's rule: word characters and hyphens, not starting with `_` or `-`.
pub fn is_valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['_', '-'])
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

fn yaml_text(v: &Yaml) -> String {
    v.to_string()
}

fn get_str<'a>(
    m: &'a Mapping,
    key: &str,
    full_key: &str,
    err: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<&'a str>, ConfigError> {
    match m.get(key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::String(s)) => Ok(Some(s)),
        Some(v) => Err(err(
            full_key,
            format!("expected a string, got {}", yaml_text(v)),
        )),
    }
}

fn get_u64(
    m: &Mapping,
    key: &str,
    full_key: &str,
    err: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<u64>, ConfigError> {
    match m.get(key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            err(
                full_key,
                format!("expected a non-negative integer, got {}", yaml_text(v)),
            )
        }),
    }
}

fn parse_registry(
    v: Option<&Yaml>,
    err: &impl Fn(&str, String) -> ConfigError,
) -> Result<RegistryConfig, ConfigError> {
    let mut cfg = RegistryConfig {
        registry_type: RegistryType::File,
        path: "data/registry.db".to_owned(),
        cache_ttl_seconds: 600,
    };
    match v {
        None | Some(Yaml::Null) => {}
        Some(Yaml::String(path)) => cfg.path = path.clone(),
        Some(Yaml::Mapping(m)) => {
            if let Some(t) = get_str(m, "registry_type", "registry.registry_type", err)? {
                cfg.registry_type = match t {
                    "file" => RegistryType::File,
                    "sql" => RegistryType::Sql,
                    "remote" => RegistryType::Remote,
                    other => {
                        return Err(err(
                            "registry.registry_type",
                            format!("{other:?} is not supported: expected file, sql or remote"),
                        ));
                    }
                };
            }
            cfg.path = get_str(m, "path", "registry.path", err)?
                .ok_or_else(|| {
                    err(
                        "registry.path",
                        "is required when registry is a mapping".to_owned(),
                    )
                })?
                .to_owned();
            if let Some(ttl) = get_u64(m, "cache_ttl_seconds", "registry.cache_ttl_seconds", err)? {
                cfg.cache_ttl_seconds = ttl;
            }
        }
        Some(other) => {
            return Err(err(
                "registry",
                format!(
                    "expected a path or a mapping with registry_type and path, got {}",
                    yaml_text(other)
                ),
            ));
        }
    }
    if cfg.path.trim().is_empty() {
        return Err(err("registry.path", "must not be empty".to_owned()));
    }
    Ok(cfg)
}

fn parse_online_store(
    v: Option<&Yaml>,
    err: &impl Fn(&str, String) -> ConfigError,
) -> Result<OnlineStoreConfig, ConfigError> {
    let default_sqlite = || OnlineStoreConfig::Sqlite {
        path: "data/online.db".to_owned(),
    };
    let empty = Mapping::new();
    let (kind, m) = match v {
        None | Some(Yaml::Null) => return Ok(default_sqlite()),
        Some(Yaml::String(kind)) => (kind.as_str(), &empty),
        Some(Yaml::Mapping(m)) => (
            get_str(m, "type", "online_store.type", err)?.unwrap_or("sqlite"),
            m,
        ),
        Some(other) => {
            return Err(err(
                "online_store",
                format!(
                    "expected a mapping with a type (sqlite or redis), got {}",
                    yaml_text(other)
                ),
            ));
        }
    };
    match kind {
        "sqlite" | "feast.infra.online_stores.sqlite.SqliteOnlineStore" => {
            Ok(OnlineStoreConfig::Sqlite {
                path: get_str(m, "path", "online_store.path", err)?
                    .unwrap_or("data/online.db")
                    .to_owned(),
            })
        }
        "redis" | "feast.infra.online_stores.redis.RedisOnlineStore" => {
            let redis_type = match get_str(m, "redis_type", "online_store.redis_type", err)? {
                None | Some("redis") => RedisType::Redis,
                Some("redis_cluster") => RedisType::RedisCluster,
                Some("redis_sentinel") => RedisType::RedisSentinel,
                Some(other) => {
                    return Err(err(
                        "online_store.redis_type",
                        format!(
                            "{other:?} is not supported: expected redis, redis_cluster or redis_sentinel"
                        ),
                    ));
                }
            };
            let conn = get_str(
                m,
                "connection_string",
                "online_store.connection_string",
                err,
            )?
            .unwrap_or("localhost:6379");
            let connection = parse_redis_connection(conn)
                .map_err(|message| err("online_store.connection_string", message))?;
            Ok(OnlineStoreConfig::Redis {
                redis_type,
                connection,
                key_ttl_seconds: get_u64(
                    m,
                    "key_ttl_seconds",
                    "online_store.key_ttl_seconds",
                    err,
                )?,
                sentinel_master: get_str(
                    m,
                    "sentinel_master",
                    "online_store.sentinel_master",
                    err,
                )?
                .unwrap_or("mymaster")
                .to_owned(),
            })
        }
        other => Err(err(
            "online_store.type",
            format!("{other:?} is not supported: expected sqlite or redis"),
        )),
    }
}

/// Parses Feast's Redis connection string: comma-separated `host:port` entries and `key=value`
/// options (`db`, `ssl`, `password`, `username`; others are ignored as redis-py would accept them).
pub fn parse_redis_connection(text: &str) -> Result<RedisConnection, String> {
    let mut conn = RedisConnection {
        hosts: Vec::new(),
        db: 0,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        username: None,
        password: None,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((key, value)) = part.split_once('=') {
            match key.trim() {
                "db" => {
                    conn.db = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("db={value:?}: expected a database number"))?
                }
                "ssl" => {
                    conn.ssl = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(format!("ssl={value:?}: expected true or false")),
                    }
                }
                "password" => conn.password = Some(value.to_owned()),
                "ssl_ca_certs" => conn.ssl_ca_certs = Some(value.trim().to_owned()),
                "ssl_cert_reqs" => {
                    conn.ssl_insecure = match value.trim().to_ascii_lowercase().as_str() {
                        "none" => true,
                        "required" | "optional" => false,
                        _ => {
                            return Err(format!(
                                "ssl_cert_reqs={value:?}: expected none, optional or required"
                            ));
                        }
                    }
                }
                "username" => conn.username = Some(value.to_owned()),
                _ => {}
            }
        } else {
            let (host, port) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("{part:?}: expected host:port"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{part:?}: port must be a number from 0 to 65535"))?;
            if host.is_empty() {
                return Err(format!("{part:?}: the host is empty"));
            }
            conn.hosts.push((host.to_owned(), port));
        }
    }
    if conn.hosts.is_empty() {
        return Err(format!(
            "{text:?} names no host: expected host:port[,host:port][,db=0][,ssl=true][,password=...]"
        ));
    }
    Ok(conn)
}

fn parse_offline_store(
    v: Option<&Yaml>,
    err: &impl Fn(&str, String) -> ConfigError,
) -> Result<OfflineStoreConfig, ConfigError> {
    let empty = Mapping::new();
    let (kind, m) = match v {
        None | Some(Yaml::Null) => ("dask", &empty),
        Some(Yaml::String(kind)) => (kind.as_str(), &empty),
        Some(Yaml::Mapping(m)) => (
            get_str(m, "type", "offline_store.type", err)?.unwrap_or("dask"),
            m,
        ),
        Some(other) => {
            return Err(err(
                "offline_store",
                format!(
                    "expected a mapping with a type (file, dask, duckdb, remote or spark), got {}",
                    yaml_text(other)
                ),
            ));
        }
    };
    match kind {
        "file" | "dask" | "duckdb" => Ok(OfflineStoreConfig::Files {
            kind: kind.to_owned(),
        }),
        "remote" => {
            let host = get_str(m, "host", "offline_store.host", err)?
                .ok_or_else(|| {
                    err(
                        "offline_store.host",
                        "is required for a remote offline store".to_owned(),
                    )
                })?
                .to_owned();
            let port = get_u64(m, "port", "offline_store.port", err)?.unwrap_or(8815);
            let port = u16::try_from(port)
                .map_err(|_| err("offline_store.port", format!("{port} is not a port number")))?;
            Ok(OfflineStoreConfig::Remote { host, port })
        }
        "spark" => parse_spark(m, err),
        other => Err(err(
            "offline_store.type",
            format!("{other:?} is not supported: expected file, dask, duckdb, remote or spark"),
        )),
    }
}

/// `offline_store: {type: spark, spark_conf: {spark.remote: sc://..., ...}}`. quiver runs Spark
/// work through Spark Connect only, so `spark.remote` is required; the other entries are set on
/// every session quiver opens (values may be strings, numbers or booleans, as in Feast).
fn parse_spark(
    m: &Mapping,
    err: &impl Fn(&str, String) -> ConfigError,
) -> Result<OfflineStoreConfig, ConfigError> {
    const KEY: &str = "offline_store.spark_conf";
    let conf_map = match m.get("spark_conf") {
        None | Some(Yaml::Null) => None,
        Some(Yaml::Mapping(c)) => Some(c),
        Some(other) => {
            return Err(err(
                KEY,
                format!(
                    "expected a mapping of Spark settings, got {}",
                    yaml_text(other)
                ),
            ));
        }
    };
    let mut conf = std::collections::BTreeMap::new();
    for (k, v) in conf_map.into_iter().flatten() {
        let Some(k) = k.as_str() else {
            return Err(err(KEY, format!("key {} is not a string", yaml_text(k))));
        };
        let value = match v {
            Yaml::String(s) => s.clone(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Number(n) => n.to_string(),
            other => {
                return Err(err(
                    &format!("{KEY}.{k}"),
                    format!(
                        "expected a string, number or boolean, got {}",
                        yaml_text(other)
                    ),
                ));
            }
        };
        conf.insert(k.to_owned(), value);
    }
    let remote_key = format!("{KEY}.spark.remote");
    let url = conf.remove("spark.remote").ok_or_else(|| {
        err(
            &remote_key,
            "is required: quiver runs Spark work through Spark Connect (e.g. sc://spark-connect:15002)"
                .to_owned(),
        )
    })?;
    let remote = crate::spark::SparkRemote::parse(&url).map_err(|e| err(&remote_key, e))?;
    Ok(OfflineStoreConfig::Spark(crate::spark::SparkConfig {
        remote,
        conf,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RepoConfig, ConfigError> {
        RepoConfig::parse(text, Path::new("/repo"), "feature_store.yaml")
    }

    #[test]
    fn minimal_config_takes_feast_defaults() {
        let c = parse("project: demo\n").unwrap();
        assert_eq!(c.project, "demo");
        assert_eq!(c.registry.path, "data/registry.db");
        assert_eq!(
            c.registry.local_path(Path::new("/repo")),
            Some(PathBuf::from("/repo/data/registry.db"))
        );
        assert!(matches!(c.online_store, OnlineStoreConfig::Sqlite { .. }));
        assert_eq!(c.entity_key_serialization_version, 3);
    }

    #[test]
    fn spark_offline_store_as_feast_writes_it() {
        let c = parse(
            "project: demo\noffline_store:\n  type: spark\n  spark_conf:\n    spark.remote: \"sc://spark:15002/;token=s3cret\"\n    spark.sql.shuffle.partitions: 8\n    spark.sql.session.timeZone: UTC\n    spark.sql.ansi.enabled: false\n  staging_location: s3://b/stage\n",
        )
        .unwrap();
        let OfflineStoreConfig::Spark(spark) = c.offline_store else {
            panic!("{:?}", c.offline_store)
        };
        assert_eq!(spark.remote.host, "spark");
        assert_eq!(spark.remote.token.as_deref(), Some("s3cret"));
        assert!(spark.remote.use_ssl);
        assert_eq!(
            spark
                .conf
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            [
                "spark.sql.ansi.enabled=false",
                "spark.sql.session.timeZone=UTC",
                "spark.sql.shuffle.partitions=8"
            ]
        );
        assert!(!format!("{spark:?}").contains("s3cret"));
    }

    #[test]
    fn full_config_with_unknown_keys() {
        let c = parse(
            "project: demo\nprovider: local\nregistry:\n  registry_type: file\n  path: s3://b/registry.pb\n  cache_ttl_seconds: 60\n\
             online_store:\n  type: redis\n  redis_type: redis_cluster\n  connection_string: \"r1:7000,r2:7001,ssl=true,password=p=w,db=0,ssl_ca_certs=/etc/ca.pem,ssl_cert_reqs=none\"\n  key_ttl_seconds: 3600\n\
             offline_store:\n  type: remote\n  host: offline\n  port: 8815\nentity_key_serialization_version: 3\nauth:\n  type: no_auth\nsomething_new: 1\n",
        )
        .unwrap();
        assert_eq!(c.registry.cache_ttl_seconds, 60);
        assert_eq!(c.registry.local_path(Path::new("/repo")), None);
        // An object-store registry is a location (the bucket "b" is too short to be valid).
        assert!(
            c.registry_location()
                .unwrap_err()
                .contains("s3://b/registry.pb")
        );
        let mut c = c;
        c.registry.path = "s3://bucket/feast/registry.pb".into();
        assert_eq!(
            c.registry_location().unwrap().to_string(),
            "s3://bucket/feast/registry.pb"
        );
        c.registry.registry_type = RegistryType::Sql;
        assert!(c.registry_location().unwrap_err().contains("Sql"));
        let OnlineStoreConfig::Redis {
            redis_type,
            connection,
            key_ttl_seconds,
            ..
        } = c.online_store
        else {
            panic!("expected redis");
        };
        assert_eq!(redis_type, RedisType::RedisCluster);
        assert_eq!(
            connection.hosts,
            [("r1".to_owned(), 7000), ("r2".to_owned(), 7001)]
        );
        assert!(connection.ssl);
        assert_eq!(connection.password.as_deref(), Some("p=w"));
        assert_eq!(connection.ssl_ca_certs.as_deref(), Some("/etc/ca.pem"));
        assert!(connection.ssl_insecure);
        assert_eq!(key_ttl_seconds, Some(3600));
        assert_eq!(
            c.offline_store,
            OfflineStoreConfig::Remote {
                host: "offline".into(),
                port: 8815
            }
        );
    }

    #[test]
    fn sentinel_config() {
        let c = parse(
            "project: demo\nonline_store:\n  type: redis\n  redis_type: redis_sentinel\n  sentinel_master: prod\n  connection_string: \"s1:26379,s2:26379,password=pw,ssl=true\"\n",
        )
        .unwrap();
        let OnlineStoreConfig::Redis {
            redis_type,
            connection,
            sentinel_master,
            ..
        } = c.online_store
        else {
            panic!("expected redis");
        };
        assert_eq!(redis_type, RedisType::RedisSentinel);
        assert_eq!(sentinel_master, "prod");
        assert_eq!(
            connection.hosts,
            [("s1".to_owned(), 26379), ("s2".to_owned(), 26379)]
        );
        assert_eq!(connection.password.as_deref(), Some("pw"));
        assert!(connection.ssl);
        // Feast's default master name.
        let c = parse(
            "project: demo\nonline_store:\n  type: redis\n  redis_type: redis_sentinel\n  connection_string: s1:26379\n",
        )
        .unwrap();
        assert!(matches!(
            c.online_store,
            OnlineStoreConfig::Redis { sentinel_master, .. } if sentinel_master == "mymaster"
        ));
    }

    #[test]
    fn wrong_values_name_the_key() {
        let cases = [
            ("registry: data/r.db\n", "project"),
            ("project: _bad\n", "project"),
            (
                "project: p\nentity_key_serialization_version: 2\n",
                "entity_key_serialization_version",
            ),
            (
                "project: p\nonline_store:\n  type: dynamodb\n",
                "online_store.type",
            ),
            (
                "project: p\nonline_store:\n  type: redis\n  connection_string: \"h:notaport\"\n",
                "online_store.connection_string",
            ),
            (
                "project: p\nonline_store:\n  type: redis\n  redis_type: memcached\n",
                "online_store.redis_type",
            ),
            (
                "project: p\nregistry:\n  registry_type: nosql\n  path: x\n",
                "registry.registry_type",
            ),
            (
                "project: p\nregistry:\n  cache_ttl_seconds: 5\n",
                "registry.path",
            ),
            (
                "project: p\noffline_store:\n  type: spark\n",
                "offline_store.spark_conf.spark.remote",
            ),
            (
                "project: p\noffline_store:\n  type: spark\n  spark_conf:\n    spark.remote: sc://h:x\n",
                "offline_store.spark_conf.spark.remote",
            ),
            (
                "project: p\noffline_store:\n  type: spark\n  spark_conf: [a]\n",
                "offline_store.spark_conf",
            ),
            (
                "project: p\noffline_store:\n  type: spark\n  spark_conf:\n    spark.remote: sc://h\n    spark.x: [1]\n",
                "offline_store.spark_conf.spark.x",
            ),
            (
                "project: p\noffline_store:\n  type: bigquery\n",
                "offline_store.type",
            ),
            (
                "project: p\nregistry:\n  path: x\n  cache_ttl_seconds: soon\n",
                "registry.cache_ttl_seconds",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            assert!(!e.to_string().contains("panicked"), "{e}");
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.to_string().contains(key), "{e}");
        }
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("project: [unclosed\n").is_err());
    }
}
