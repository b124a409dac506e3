//! Registries kept in object stores: `s3://bucket/key` (Amazon S3 or an S3-compatible server)
//! and `gs://bucket/key` (Google Cloud Storage), where Feast's file registry often lives.
//!
//! This is the one place quiver configures an object-store client; the CLI (`apply`, `list`,
//! `materialize`, `historical`, `offline serve`), the sidecar (which polls the object) and the
//! registry service use it for registries, and the offline side uses [`bucket_client`] for file
//! sources in S3 and GCS. It is built on the `object_store` crate with only its S3 and GCS
//! clients.
//!
//! An object store has no locks, so a read-modify-write is optimistic: read the object and its
//! ETag (GCS: its generation), change it, and write it back with a conditional put that the
//! store refuses when the object changed in between (S3 `If-Match`, `If-None-Match: *` for a new
//! object; GCS `x-goog-if-generation-match`). The loser re-reads and tries again, so two
//! writers never lose one another's change ([`ObjectRegistry::update_registry`]). A store that
//! ignores these conditions would silently lose changes; [`ObjectRegistry::check_conditional_writes`]
//! finds that out (the registry service runs it at start).
//!
//! Configuration comes from the standard environment, as Feast's (boto3, google-cloud-storage)
//! does, so a Feast user changes nothing:
//! - S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//!   `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`), `AWS_ALLOW_HTTP`, the
//!   `AWS_PROFILE` keys and region in `~/.aws` (which object_store does not read, boto3 does), web
//!   identity and instance credentials; and Feast's `FEAST_S3_ENDPOINT_URL` when no AWS endpoint
//!   is set. An `http://` endpoint is allowed without `AWS_ALLOW_HTTP` (it was asked for).
//! - GCS: `GOOGLE_SERVICE_ACCOUNT` (a service-account JSON file, which may carry `gcs_base_url`
//!   and `disable_oauth` for an emulator), `GOOGLE_SERVICE_ACCOUNT_KEY`,
//!   `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server; `STORAGE_EMULATOR_HOST` (the
//!   Google client libraries' emulator switch) sends requests there unsigned.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};
use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::registry::RegistryFile;
use quiver_core::time::Timestamp;

pub use crate::location::{ObjectScheme, ObjectUri};

/// The largest registry object read (a registry of thousands of views is a few MB).
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// How many times a conditional write that lost a race is retried (re-read, re-applied).
pub const MAX_ATTEMPTS: usize = 8;

/// One version of an object, as the store identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The ETag (S3, GCS).
    pub e_tag: Option<String>,
    /// The object version (GCS generation; S3 version id when versioning is on).
    pub version: Option<String>,
    /// Milliseconds since the epoch.
    pub last_modified_ms: i64,
    pub size: u64,
}

impl ObjectVersion {
    fn from_meta(meta: &object_store::ObjectMeta) -> ObjectVersion {
        ObjectVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
            last_modified_ms: meta.last_modified.timestamp_millis(),
            size: meta.size,
        }
    }
}

/// Why an object-store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// A conditional write lost: the object changed since it was read (or exists, when it was
    /// to be created).
    #[error("{0}")]
    Conflict(String),
    /// Something to fix before retrying helps: a missing bucket, credentials, permissions, a
    /// store without conditional writes.
    #[error("{0}")]
    Config(String),
    /// The store could not be reached, or failed.
    #[error("{0}")]
    Unavailable(String),
}

impl Classified for ObjectError {
    fn kind(&self) -> ErrorKind {
        match self {
            ObjectError::Conflict(_) => ErrorKind::Conflict,
            // The store refused us (bucket, credentials, permissions): an upstream's answer
            // that only its operator can change.
            ObjectError::Config(_) => ErrorKind::UpstreamFailed,
            ObjectError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<ObjectError> for String {
    fn from(e: ObjectError) -> String {
        e.to_string()
    }
}

/// What the environment says about where S3 is, for the pure parts of [`ObjectRegistry::open`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct S3Env {
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (object_store reads them itself).
    aws_endpoint: Option<String>,
    /// Feast's `FEAST_S3_ENDPOINT_URL`.
    feast_endpoint: Option<String>,
    allow_http: bool,
}

impl S3Env {
    fn from_env() -> S3Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        S3Env {
            aws_endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            feast_endpoint: var("FEAST_S3_ENDPOINT_URL"),
            allow_http: var("AWS_ALLOW_HTTP")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }

    /// The endpoint to set explicitly (Feast's, when AWS's is not set), and whether plain
    /// HTTP is allowed.
    fn resolve(&self) -> (Option<String>, bool) {
        let explicit = match &self.aws_endpoint {
            Some(_) => None,
            None => self.feast_endpoint.clone(),
        };
        let effective = self.aws_endpoint.as_ref().or(explicit.as_ref());
        let http = self.allow_http || effective.is_some_and(|e| e.trim().starts_with("http://"));
        (explicit, http)
    }
}

/// The keys of one `[section]` of an AWS shared config or credentials file (INI: `key = value`,
/// `#`/`;` comments).
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    out
}

/// What boto3 (so Feast) would also take from `~/.aws`: the profile's keys from the shared
/// credentials file and its region from the config file, for whatever the environment does not
/// set. `credentials`/`config` are the files' texts; `profile` is `AWS_PROFILE` or `default`.
#[derive(Debug, Default, PartialEq, Eq)]
struct AwsProfile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
}

impl AwsProfile {
    fn parse(credentials: Option<&str>, config: Option<&str>, profile: &str) -> AwsProfile {
        let mut p = AwsProfile::default();
        for (k, v) in credentials.map_or_else(Vec::new, |t| ini_section(t, profile)) {
            match k.as_str() {
                "aws_access_key_id" => p.access_key_id = Some(v),
                "aws_secret_access_key" => p.secret_access_key = Some(v),
                "aws_session_token" => p.session_token = Some(v),
                _ => {}
            }
        }
        let section = if profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        for (k, v) in config.map_or_else(Vec::new, |t| ini_section(t, &section)) {
            if k == "region" {
                p.region = Some(v);
            }
        }
        p
    }

    /// Reads the files where boto3 looks for them (small files; at most 1 MiB each is read).
    fn load() -> AwsProfile {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let home = var("HOME").map(std::path::PathBuf::from);
        let read = |explicit: Option<String>, default: &str| {
            let path = explicit
                .map(std::path::PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))?;
            let file = std::fs::File::open(path).ok()?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(file, 1 << 20), &mut text)
                .ok()?;
            Some(text)
        };
        let credentials = read(var("AWS_SHARED_CREDENTIALS_FILE"), "credentials");
        let config = read(var("AWS_CONFIG_FILE"), "config");
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        AwsProfile::parse(credentials.as_deref(), config.as_deref(), &profile)
    }
}

/// `STORAGE_EMULATOR_HOST` as a base URL (`host:port` gets `http://`).
fn emulator_base_url(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    }
}

/// Waits a little before another attempt after a lost race: the one backoff's wait for the
/// attempt (uniform in [20 ms, 20 ms·2^attempt], at most 700 ms), so two losers do not collide
/// again in lockstep.
pub async fn pause_after_conflict(attempt: usize) {
    let mut backoff =
        quiver_core::backoff::Backoff::new(Duration::from_millis(20), Duration::from_millis(700));
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    tokio::time::sleep(backoff.delay_for_attempt(attempt)).await;
}

/// Whether an S3 builder has credentials of its own (keys, a web identity, a container's
/// credentials endpoint, or signing off), so that it would not fall back to the EC2 instance
/// metadata service.
fn s3_has_credentials(b: &AmazonS3Builder) -> bool {
    use object_store::aws::AmazonS3ConfigKey as K;
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.trim().is_empty());
    has(K::AccessKeyId)
        || has(K::SecretAccessKey)
        || (has(K::WebIdentityTokenFile) && has(K::RoleArn))
        || has(K::ContainerCredentialsRelativeUri)
        || (has(K::ContainerCredentialsFullUri) && has(K::ContainerAuthorizationTokenFile))
        || b.get_config_value(&K::SkipSignature)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Whether a GCS builder has credentials of its own (a service account, application default
/// credentials, or signing off), so that it would not fall back to the GCE metadata server.
fn gcs_has_credentials(b: &GoogleCloudStorageBuilder) -> bool {
    use object_store::gcp::GoogleConfigKey as K;
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.trim().is_empty());
    let well_known = std::env::var_os("HOME").is_some_and(|home| {
        std::path::Path::new(&home)
            .join(".config/gcloud/application_default_credentials.json")
            .exists()
    });
    has(K::ServiceAccount)
        || has(K::ServiceAccountKey)
        || has(K::ApplicationCredentials)
        || well_known
        || b.get_config_value(&K::SkipSignature)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The credentials of a client that has none and may not ask the instance metadata service:
/// every request fails at once, saying what to set, and nothing is sent anywhere.
#[derive(Debug)]
struct NoCredentials<T> {
    store: &'static str,
    hint: &'static str,
    _credential: std::marker::PhantomData<fn() -> T>,
}

impl<T> NoCredentials<T> {
    fn new(store: &'static str, hint: &'static str) -> NoCredentials<T> {
        NoCredentials {
            store,
            hint,
            _credential: std::marker::PhantomData,
        }
    }
}

impl<T: std::fmt::Debug + Send + Sync + 'static> object_store::CredentialProvider
    for NoCredentials<T>
{
    type Credential = T;

    // `async_trait`'s signature, written out (the crate is not a dependency here).
    fn get_credential<'s, 'f>(
        &'s self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = object_store::Result<Arc<T>>> + Send + 'f>,
    >
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            Err(object_store::Error::Unauthenticated {
                path: String::new(),
                source: format!(
                    "no credentials for {}, and the instance metadata service is not allowed: {}",
                    self.store, self.hint
                )
                .into(),
            })
        })
    }
}

/// A client for the bucket of `uri`, configured from the environment as Feast's clients are (see
/// the module's documentation), and where its requests go, for error messages.
/// `endpoint_override` (a `FileSource`'s `s3_endpoint_override`) wins over the environment's
/// S3 endpoint. Fails, naming `what` and the URI, when the configuration is unusable; it does
/// not touch the network: the first request says whether the store is reachable.
pub fn bucket_client(
    uri: &ObjectUri,
    endpoint_override: Option<&str>,
    what: &str,
) -> Result<(Arc<dyn ObjectStore>, String), String> {
    // Bounded retries: an unreachable endpoint fails in seconds, not object_store's
    // default of three minutes.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    };
    let client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60));
    let (store, endpoint): (Arc<dyn ObjectStore>, String) = match uri.scheme {
        ObjectScheme::S3 => {
            let env = S3Env::from_env();
            let (from_env, env_http) = env.resolve();
            // A source's own endpoint wins over the environment's.
            let own = endpoint_override.map(str::trim).filter(|e| !e.is_empty());
            let explicit = own.map(str::to_owned).or(from_env);
            let allow_http = env_http || own.is_some_and(|e| e.starts_with("http://"));
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&uri.bucket)
                .with_retry(retry)
                .with_client_options(client)
                .with_allow_http(allow_http);
            if let Some(e) = &explicit {
                b = b.with_endpoint(e.trim());
            }
            // The environment wins; ~/.aws fills in what it leaves out, as in boto3.
            let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
            let profile = AwsProfile::load();
            if !set("AWS_ACCESS_KEY_ID")
                && !set("AWS_WEB_IDENTITY_TOKEN_FILE")
                && let (Some(id), Some(secret)) =
                    (&profile.access_key_id, &profile.secret_access_key)
            {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = &profile.session_token {
                    b = b.with_token(token);
                }
            }
            if !set("AWS_REGION")
                && !set("AWS_DEFAULT_REGION")
                && let Some(region) = &profile.region
            {
                b = b.with_region(region);
            }
            if !crate::trust::policy().instance_metadata() && !s3_has_credentials(&b) {
                b = b.with_credentials(Arc::new(NoCredentials::<object_store::aws::AwsCredential>::new(
                    "S3",
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile in \
                     ~/.aws/credentials) or a web identity, or let quiver ask the instance \
                     metadata service (--allow-instance-metadata / QUIVER_ALLOW_INSTANCE_METADATA=true)",
                )));
            }
            let endpoint = own
                .map(str::to_owned)
                .or(env.aws_endpoint)
                .or(explicit)
                .unwrap_or_else(|| "AWS S3".to_owned());
            let s3 = b.build().map_err(|e| {
                format!("{what} {uri}: cannot set up the S3 client ({endpoint}): {e}")
            })?;
            (Arc::new(s3), endpoint)
        }
        ObjectScheme::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&uri.bucket)
                .with_retry(retry);
            let mut endpoint = "Google Cloud Storage".to_owned();
            match std::env::var("STORAGE_EMULATOR_HOST") {
                Ok(host) if !host.trim().is_empty() => {
                    endpoint = emulator_base_url(&host);
                    // Unsigned, with a fixed empty token, as Google's client libraries
                    // do for an emulator: no credential lookup, and never a request to
                    // the metadata server.
                    let none = object_store::StaticCredentialProvider::new(
                        object_store::gcp::GcpCredential {
                            bearer: String::new(),
                        },
                    );
                    b = b
                        .with_client_options(client.with_allow_http(true))
                        .with_base_url(&endpoint)
                        .with_credentials(Arc::new(none))
                        .with_skip_signature(true);
                }
                _ => {
                    b = b.with_client_options(client);
                    if !crate::trust::policy().instance_metadata() && !gcs_has_credentials(&b) {
                        b = b.with_credentials(Arc::new(NoCredentials::<
                            object_store::gcp::GcpCredential,
                        >::new(
                            "GCS",
                            "set GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS to a \
                             key file, or let quiver ask the metadata server \
                             (--allow-instance-metadata / QUIVER_ALLOW_INSTANCE_METADATA=true)",
                        )));
                    }
                }
            }
            let gcs = b.build().map_err(|e| {
                format!(
                    "{what} {uri}: cannot set up the GCS client ({endpoint}; credentials \
                     from GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS or the \
                     metadata server): {e}"
                )
            })?;
            (Arc::new(gcs), endpoint)
        }
    };
    Ok((store, endpoint))
}

/// A registry object in S3 or GCS, with a client configured from the environment.
#[derive(Debug, Clone)]
pub struct ObjectRegistry {
    uri: ObjectUri,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    /// Where requests go, for error messages ("s3 endpoint http://...").
    endpoint: String,
}

impl ObjectRegistry {
    /// A client for `uri`. Fails (naming the URI) when the configuration is unusable; it does
    /// not touch the network: the first request says whether the store is reachable.
    pub fn open(uri: &ObjectUri) -> Result<ObjectRegistry, String> {
        let (store, endpoint) = bucket_client(uri, None, "registry")?;
        let path = ObjectPath::parse(&uri.key)
            .map_err(|e| format!("registry {uri}: not a valid object key: {e}"))?;
        Ok(ObjectRegistry {
            uri: uri.clone(),
            store,
            path,
            endpoint,
        })
    }

    pub fn uri(&self) -> &ObjectUri {
        &self.uri
    }

    /// The object `name` beside this one, on the same client (e.g. the registry service's
    /// version record).
    pub fn sibling(&self, name: &str) -> Result<ObjectRegistry, String> {
        let uri = self.uri.sibling(name);
        let path = ObjectPath::parse(&uri.key)
            .map_err(|e| format!("registry {uri}: not a valid object key: {e}"))?;
        Ok(ObjectRegistry {
            uri,
            store: Arc::clone(&self.store),
            path,
            endpoint: self.endpoint.clone(),
        })
    }

    /// Turns an object_store error into one that names the URI, the endpoint and what to do.
    fn error(&self, op: &str, e: object_store::Error) -> ObjectError {
        let uri = &self.uri;
        let endpoint = &self.endpoint;
        let text = e.to_string();
        let bucket_missing = text.contains("NoSuchBucket")
            || text.contains("bucket does not exist")
            || text.contains("Bucket not found");
        match e {
            _ if bucket_missing => ObjectError::Config(format!(
                "registry {uri}: the bucket {:?} does not exist at {endpoint}: create it, or fix \
                 the registry path",
                uri.bucket
            )),
            object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotModified { .. } => ObjectError::Conflict(format!(
                "registry {uri}: changed by another writer during {op}"
            )),
            object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. } => ObjectError::Config(format!(
                "registry {uri}: {op}: the store ({endpoint}) does not support conditional \
                     writes, which quiver needs so that concurrent writers never lose one \
                     another's change: {text}"
            )),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => ObjectError::Config(format!(
                "registry {uri}: {op} refused by {endpoint}: check the credentials \
                 ({}): {text}",
                match uri.scheme {
                    ObjectScheme::S3 =>
                        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a web identity or an instance role",
                    ObjectScheme::Gcs =>
                        "GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS or the metadata server",
                }
            )),
            _ if text.contains("token request") || text.contains("credential") => {
                ObjectError::Config(format!(
                    "registry {uri}: {op}: no usable credentials for {endpoint}: {}: {text}",
                    match uri.scheme {
                        ObjectScheme::S3 => {
                            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile in \
                             ~/.aws/credentials), or run with a web identity or instance role"
                        }
                        ObjectScheme::Gcs => {
                            "set GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS to a \
                             key file, or run where the metadata server gives a service account"
                        }
                    }
                ))
            }
            _ if text.contains("Header missing from response") => ObjectError::Config(format!(
                "registry {uri}: {op}: the server at {endpoint} is not compatible enough with {}: \
                 its answer lacks headers the real service sends ({text}); an emulator that \
                 implements only part of the API (e.g. gcp-storage-emulator, whose XML API sends \
                 no ETag or Last-Modified) cannot hold a registry quiver writes",
                match uri.scheme {
                    ObjectScheme::S3 => "S3",
                    ObjectScheme::Gcs => "GCS's XML API",
                }
            )),
            _ => ObjectError::Unavailable(format!(
                "registry {uri}: {op} failed at {endpoint}: {text}"
            )),
        }
    }

    /// The object's current version, or `None` when it does not exist.
    pub async fn head(&self) -> Result<Option<ObjectVersion>, ObjectError> {
        match self.store.head(&self.path).await {
            Ok(meta) => Ok(Some(ObjectVersion::from_meta(&meta))),
            Err(object_store::Error::NotFound { .. }) => {
                // A missing bucket answers HEAD with a bare 404 too: tell it apart, so that a
                // typo in the bucket is not "an empty registry".
                self.check_bucket().await?;
                Ok(None)
            }
            Err(e) => Err(self.error("reading (HEAD)", e)),
        }
    }

    /// The object's bytes and version, or `None` when it does not exist.
    pub async fn get(&self) -> Result<Option<(Bytes, ObjectVersion)>, ObjectError> {
        let result = match self.store.get(&self.path).await {
            Ok(r) => r,
            Err(e @ object_store::Error::NotFound { .. }) => {
                let err = self.error("reading", e);
                if let ObjectError::Config(_) = err {
                    return Err(err);
                }
                self.check_bucket().await?;
                return Ok(None);
            }
            Err(e) => return Err(self.error("reading", e)),
        };
        let version = ObjectVersion::from_meta(&result.meta);
        if version.size > MAX_OBJECT_BYTES {
            return Err(ObjectError::Config(format!(
                "registry {}: {} bytes, more than the {} quiver reads",
                self.uri, version.size, MAX_OBJECT_BYTES
            )));
        }
        let bytes = result.bytes().await.map_err(|e| self.error("reading", e))?;
        Ok(Some((bytes, version)))
    }

    /// Errors when the bucket itself is missing (a listing of the object's own key answers
    /// NoSuchBucket then, and an empty or one-entry list otherwise).
    async fn check_bucket(&self) -> Result<(), ObjectError> {
        match self.store.list_with_delimiter(Some(&self.path)).await {
            Ok(_) => Ok(()),
            Err(e) => match self.error("listing", e) {
                err @ ObjectError::Config(_) => Err(err),
                // Listing may be refused (a policy that allows only Get/Put): then the bucket
                // cannot be told apart from the object; the object is taken as missing.
                _ => Ok(()),
            },
        }
    }

    /// Writes `bytes` if the object is still at `expected` (`None`: only if it does not exist
    /// yet). A lost race is [`ObjectError::Conflict`].
    pub async fn put(
        &self,
        bytes: Bytes,
        expected: Option<&ObjectVersion>,
    ) -> Result<ObjectVersion, ObjectError> {
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: v.e_tag.clone(),
                version: v.version.clone(),
            }),
        };
        let size = bytes.len() as u64;
        let put = self
            .store
            .put_opts(&self.path, PutPayload::from(bytes), PutOptions::from(mode))
            .await
            .map_err(|e| self.error("writing", e))?;
        Ok(ObjectVersion {
            e_tag: put.e_tag,
            version: put.version,
            // Not returned by a put; a HEAD tells it when needed.
            last_modified_ms: 0,
            size,
        })
    }

    /// Writes `bytes` whatever the object holds (for objects that are not read-modify-written).
    pub async fn put_unconditionally(&self, bytes: Bytes) -> Result<(), ObjectError> {
        self.store
            .put(&self.path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.error("writing", e))
    }

    /// Checks that the store refuses a write whose condition does not hold. A store that
    /// ignores `If-Match` (or GCS's generation match) would let two writers overwrite one
    /// another silently; such a store is refused with an error that says so. Writes nothing
    /// on a store that checks; on one that does not, the probe object it wrote
    /// (`.<name>.quiver-probe`, beside the registry) is deleted again.
    pub async fn check_conditional_writes(&self) -> Result<(), ObjectError> {
        let probe = self
            .sibling(&format!(".{}.quiver-probe", self.uri.file_name()))
            .map_err(ObjectError::Config)?;
        let impossible = ObjectVersion {
            e_tag: Some("\"quiver-probe-no-such-etag\"".to_owned()),
            version: Some("1".to_owned()),
            last_modified_ms: 0,
            size: 0,
        };
        match probe
            .put(Bytes::from_static(b"quiver probe"), Some(&impossible))
            .await
        {
            Err(ObjectError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => {
                // Best effort: the store is refused either way.
                let _ = probe.store.delete(&probe.path).await;
                Err(ObjectError::Config(format!(
                    "registry {}: the store at {} ignored a conditional write (it wrote {} although \
                 its condition could not hold): concurrent writers could lose one another's \
                 changes, so quiver does not write registries there. Use a store with conditional \
                 writes (AWS S3, GCS, MinIO, R2), a registry file on a volume, or PostgreSQL",
                    self.uri, self.endpoint, probe.uri
                )))
            }
        }
    }

    /// The registry and its version; a missing object is an empty registry (`None`).
    pub async fn read_registry(
        &self,
    ) -> Result<(RegistryFile, Option<ObjectVersion>), ObjectError> {
        match self.get().await? {
            Some((bytes, version)) => {
                let file = RegistryFile::decode(&bytes).map_err(|e| {
                    ObjectError::Config(format!("registry {}: not a Feast registry: {e}", self.uri))
                })?;
                Ok((file, Some(version)))
            }
            None => Ok((RegistryFile::empty(), None)),
        }
    }

    /// A read-modify-write of the registry that never loses a concurrent writer's change: reads
    /// it, lets `change` modify it (returning `Ok(None)` for "nothing to write", or a value to
    /// hand back), writes it conditionally, and on a lost race starts over from a fresh read
    /// (up to [`MAX_ATTEMPTS`] times). `change` may therefore run more than once.
    pub async fn update_registry<T>(
        &self,
        mut change: impl FnMut(&mut RegistryFile) -> Result<Option<T>, String>,
        version_id: impl Fn() -> String,
        now: impl Fn() -> Timestamp,
    ) -> Result<Option<T>, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut file, version) = self.read_registry().await?;
            let Some(out) = change(&mut file)? else {
                return Ok(None);
            };
            let bytes = Bytes::from(file.encode(&version_id(), now()));
            match self.put(bytes, version.as_ref()).await {
                Ok(_) => return Ok(Some(out)),
                Err(ObjectError::Conflict(m)) if attempt < MAX_ATTEMPTS => {
                    tracing::info!("{m}; reading it again");
                    pause_after_conflict(attempt).await;
                }
                Err(ObjectError::Conflict(m)) => {
                    return Err(format!(
                        "{m}; gave up after {MAX_ATTEMPTS} attempts (the registry is being written \
                         continuously)"
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_endpoints_from_the_environment() {
        // Nothing set: AWS itself, HTTPS.
        assert_eq!(S3Env::default().resolve(), (None, false));
        // Feast's variable is used when AWS's is not; an http endpoint allows plain HTTP.
        let feast = S3Env {
            feast_endpoint: Some("http://127.0.0.1:9000".into()),
            ..S3Env::default()
        };
        assert_eq!(
            feast.resolve(),
            (Some("http://127.0.0.1:9000".into()), true)
        );
        // AWS_ENDPOINT_URL wins (object_store reads it itself), and still allows http.
        let both = S3Env {
            aws_endpoint: Some("http://minio:9000".into()),
            feast_endpoint: Some("https://elsewhere".into()),
            allow_http: false,
        };
        assert_eq!(both.resolve(), (None, true));
        let https = S3Env {
            feast_endpoint: Some("https://s3.example".into()),
            ..S3Env::default()
        };
        assert_eq!(https.resolve(), (Some("https://s3.example".into()), false));
        let allow = S3Env {
            allow_http: true,
            ..S3Env::default()
        };
        assert_eq!(allow.resolve(), (None, true));
    }

    #[test]
    fn aws_profiles_as_boto3_reads_them() {
        let credentials = "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key=sd\n\n\
                           # a comment\n[team]\nAWS_ACCESS_KEY_ID = AKTEAM\naws_secret_access_key = st\n\
                           aws_session_token = tok\n";
        let config = "[default]\nregion = eu-west-1\n[profile team]\nregion=us-west-2\n";
        assert_eq!(
            AwsProfile::parse(Some(credentials), Some(config), "default"),
            AwsProfile {
                access_key_id: Some("AKDEFAULT".into()),
                secret_access_key: Some("sd".into()),
                session_token: None,
                region: Some("eu-west-1".into()),
            }
        );
        assert_eq!(
            AwsProfile::parse(Some(credentials), Some(config), "team"),
            AwsProfile {
                access_key_id: Some("AKTEAM".into()),
                secret_access_key: Some("st".into()),
                session_token: Some("tok".into()),
                region: Some("us-west-2".into()),
            }
        );
        assert_eq!(
            AwsProfile::parse(None, None, "default"),
            AwsProfile::default()
        );
        assert_eq!(
            AwsProfile::parse(Some(credentials), None, "missing"),
            AwsProfile::default()
        );
    }

    #[test]
    fn emulator_hosts() {
        assert_eq!(emulator_base_url("localhost:9023"), "http://localhost:9023");
        assert_eq!(
            emulator_base_url("http://127.0.0.1:9023/"),
            "http://127.0.0.1:9023"
        );
        assert_eq!(emulator_base_url("https://gcs.local"), "https://gcs.local");
    }

    #[test]
    fn opening_does_not_touch_the_network() {
        let uri = ObjectUri::parse("s3://bucket/dir/registry.db")
            .unwrap()
            .unwrap();
        let reg = ObjectRegistry::open(&uri).unwrap();
        assert_eq!(reg.uri().to_string(), "s3://bucket/dir/registry.db");
        assert_eq!(
            reg.sibling(".registry.db.versions.json").unwrap().uri().key,
            "dir/.registry.db.versions.json"
        );
    }
}
