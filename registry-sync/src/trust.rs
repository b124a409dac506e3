//! Trusted locations: where file sources and push targets may be, as the operator (not whoever
//! can apply definitions) decides.
//!
//! A source path is trusted when it resolves (real path, symlinks followed) inside the repo
//! directory or under one of the operator's allowed locations; an `s3://`/`gs://` source when
//! its bucket (and key prefix) is allowed; an `s3_endpoint_override` when the endpoint is
//! allowed. Anything else is refused when definitions are applied ([`Trust::check_registry`],
//! by `quiver apply` and the registry service) and again when a server uses the location
//! (push, materialization, historical retrieval, the offline servers), since a registry Feast
//! wrote was never checked by quiver.
//!
//! One mechanism for every binary: flags of `quiver` and `quiver-sidecar`
//! (`--allow-location`, `--allow-endpoint`, `--allow-instance-metadata`) or their environment
//! variables ([`ENV_LOCATIONS`], [`ENV_ENDPOINTS`], [`ENV_INSTANCE_METADATA`]), installed once
//! at start ([`install`]); library code reads the process's policy with [`policy`].
//!
//! The same policy says whether object-store clients may ask the cloud's instance metadata
//! service for credentials (off unless the operator enabled it).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use quiver_core::model::{DataSource, SourceKind};
use quiver_core::registry::ProjectRegistry;

use crate::location::ObjectScheme;

/// Allowed locations besides the repo: absolute path prefixes and `s3://bucket[/prefix]`,
/// `gs://bucket[/prefix]`, comma-separated.
pub const ENV_LOCATIONS: &str = "QUIVER_ALLOW_LOCATIONS";
/// Allowed `s3_endpoint_override` endpoints (`http://minio:9000`), comma-separated.
pub const ENV_ENDPOINTS: &str = "QUIVER_ALLOW_ENDPOINTS";
/// `true`: object-store clients without credentials may ask the instance metadata service.
pub const ENV_INSTANCE_METADATA: &str = "QUIVER_ALLOW_INSTANCE_METADATA";

/// An allowed object-store location: a bucket, or a key prefix in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedObjects {
    scheme: ObjectScheme,
    bucket: String,
    /// Key prefix without slashes at either end; empty: the whole bucket.
    prefix: String,
}

/// An endpoint, compared by scheme and authority (host and port), lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    scheme: String,
    authority: String,
}

impl Endpoint {
    fn parse(text: &str) -> Result<Endpoint, String> {
        let t = text.trim();
        let Some((scheme, rest)) = t.split_once("://") else {
            return Err(format!(
                "endpoint {t:?}: expected a URL such as http://minio:9000"
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "endpoint {t:?}: expected an http:// or https:// URL"
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') || !path.trim_matches('/').is_empty() {
            return Err(format!(
                "endpoint {t:?}: expected scheme://host[:port] without a path or user"
            ));
        }
        Ok(Endpoint {
            scheme,
            authority: authority.to_ascii_lowercase(),
        })
    }
}

/// The operator's policy: see the module's documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Absolute path prefixes, lexically normalized, and their real paths when they exist.
    paths: Vec<PathBuf>,
    objects: Vec<AllowedObjects>,
    endpoints: Vec<Endpoint>,
    instance_metadata: bool,
}

/// A location that is not trusted, or not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Untrusted {
    /// The field at fault: `path` or `s3_endpoint_override`.
    pub field: &'static str,
    pub message: String,
}

/// A source of a registry that names an untrusted location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `source "name"`.
    pub object: String,
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

const HOW: &str = "the operator allows other locations with --allow-location / \
                   QUIVER_ALLOW_LOCATIONS";

/// `path` with `.` and `..` removed lexically; `None` when `..` climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                depth -= 1;
                out.pop();
            }
            Component::Normal(p) => {
                depth += 1;
                out.push(p);
            }
        }
    }
    Some(out)
}

/// The real path of `path` (absolute): its longest existing ancestor canonicalized (symlinks
/// followed), then the components that do not exist yet, which must not contain `..`.
pub fn real_path(path: &Path) -> Result<PathBuf, String> {
    let mut existing = path.to_path_buf();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut real) => {
                for part in tail.iter().rev() {
                    if part == ".." || part == "." {
                        return Err(format!(
                            "{}: '.' or '..' after a folder that does not exist",
                            path.display()
                        ));
                    }
                    real.push(part);
                }
                return Ok(real);
            }
            Err(e) => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(format!("{}: {e}", path.display()));
                };
                // `a/..` is not popped lexically: `..` would name a folder of the link target.
                if !existing.pop() {
                    return Err(format!("{}: {e}", path.display()));
                }
                tail.push(name);
            }
        }
    }
}

/// Splits `s3://bucket/key` or `gs://bucket[/key]` into scheme, bucket and key (trimmed of
/// slashes); `None` for anything else.
fn split_object(uri: &str) -> Option<(ObjectScheme, &str, &str)> {
    let uri = uri.trim();
    let (scheme, rest) = if let Some(r) = uri.strip_prefix("s3://") {
        (ObjectScheme::S3, r)
    } else if let Some(r) = uri.strip_prefix("gs://") {
        (ObjectScheme::Gcs, r)
    } else {
        return None;
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some((scheme, bucket, key.trim_matches('/')))
}

impl Trust {
    /// The policy from the operator's lists: `locations` are absolute paths or
    /// `s3://bucket[/prefix]`, `gs://bucket[/prefix]`; `endpoints` are URLs allowed as a
    /// source's `s3_endpoint_override`. Errors name the entry at fault.
    pub fn new(
        locations: &[String],
        endpoints: &[String],
        instance_metadata: bool,
    ) -> Result<Trust, String> {
        let mut trust = Trust {
            instance_metadata,
            ..Trust::default()
        };
        for entry in locations.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
            if let Some((scheme, bucket, prefix)) = split_object(entry) {
                if bucket.is_empty() {
                    return Err(format!("allowed location {entry:?}: no bucket"));
                }
                if prefix.split('/').any(|s| s == "..") {
                    return Err(format!("allowed location {entry:?}: '..' in the prefix"));
                }
                trust.objects.push(AllowedObjects {
                    scheme,
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                });
                continue;
            }
            if entry.contains("://") {
                return Err(format!(
                    "allowed location {entry:?}: expected an absolute path, s3://BUCKET[/PREFIX] \
                     or gs://BUCKET[/PREFIX]"
                ));
            }
            let path = Path::new(entry);
            let lexical = normalize(path)
                .filter(|_| path.is_absolute())
                .ok_or_else(|| format!("allowed location {entry:?}: not an absolute path"))?;
            if let Ok(real) = std::fs::canonicalize(&lexical)
                && real != lexical
            {
                trust.paths.push(real);
            }
            trust.paths.push(lexical);
        }
        for e in endpoints.iter().filter(|e| !e.trim().is_empty()) {
            trust.endpoints.push(Endpoint::parse(e)?);
        }
        Ok(trust)
    }

    /// The policy from [`ENV_LOCATIONS`], [`ENV_ENDPOINTS`] and [`ENV_INSTANCE_METADATA`].
    pub fn from_env() -> Result<Trust, String> {
        let list = |k: &str| -> Vec<String> {
            std::env::var(k)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let metadata = std::env::var(ENV_INSTANCE_METADATA)
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        Trust::new(&list(ENV_LOCATIONS), &list(ENV_ENDPOINTS), metadata)
    }

    /// Whether object-store clients without credentials may ask the instance metadata service.
    pub fn instance_metadata(&self) -> bool {
        self.instance_metadata
    }

    /// Resolves a local source path (relative to `repo_dir`, or absolute, or `file://`) to its
    /// real path, and checks that it is inside the repo or an allowed location.
    pub fn local_path(&self, repo_dir: &Path, uri: &str) -> Result<PathBuf, Untrusted> {
        let untrusted = |message: String| Untrusted {
            field: "path",
            message,
        };
        let local = uri.trim().strip_prefix("file://").unwrap_or(uri.trim());
        if local.contains("://") {
            return Err(untrusted(format!(
                "{uri:?}: only local paths, s3:// and gs:// are supported"
            )));
        }
        let repo = std::fs::canonicalize(repo_dir)
            .map_err(|e| untrusted(format!("the repo folder {}: {e}", repo_dir.display())))?;
        let real = real_path(&repo.join(local)).map_err(untrusted)?;
        if real.starts_with(&repo) || self.paths.iter().any(|p| real.starts_with(p)) {
            return Ok(real);
        }
        Err(untrusted(format!(
            "{uri:?} resolves to {}, outside the repo ({}) and the allowed locations; {HOW}",
            real.display(),
            repo.display()
        )))
    }

    /// Checks a local source path without a repo to resolve it against (the registry service):
    /// a relative path must stay inside whatever repo uses it, an absolute one must be under an
    /// allowed location. Symlinks are checked where the path is used.
    pub fn local_path_lexical(&self, uri: &str) -> Result<(), Untrusted> {
        let local = uri.trim().strip_prefix("file://").unwrap_or(uri.trim());
        let path = Path::new(local);
        let fail = |why: &str| Untrusted {
            field: "path",
            message: format!("{uri:?} {why}; {HOW}"),
        };
        if local.contains("://") {
            return Err(Untrusted {
                field: "path",
                message: format!("{uri:?}: only local paths, s3:// and gs:// are supported"),
            });
        }
        let Some(lexical) = normalize(path) else {
            return Err(fail("climbs out of the repo with '..'"));
        };
        if !path.is_absolute() || self.paths.iter().any(|p| lexical.starts_with(p)) {
            return Ok(());
        }
        Err(fail("is outside the repo and the allowed locations"))
    }

    /// Checks an `s3://`/`gs://` location: its bucket (and key prefix) must be allowed.
    pub fn object(&self, uri: &str) -> Result<(), Untrusted> {
        let Some((scheme, bucket, key)) = split_object(uri) else {
            return Err(Untrusted {
                field: "path",
                message: format!("{uri:?}: not an s3:// or gs:// location"),
            });
        };
        let allowed = self.objects.iter().any(|a| {
            a.scheme == scheme
                && a.bucket == bucket
                && (a.prefix.is_empty()
                    || key == a.prefix
                    || key
                        .strip_prefix(a.prefix.as_str())
                        .is_some_and(|r| r.starts_with('/')))
        });
        if allowed && !key.split('/').any(|s| s == "..") {
            return Ok(());
        }
        Err(Untrusted {
            field: "path",
            message: format!(
                "{uri:?}: the bucket {}{bucket} (or this prefix of it) is not an allowed \
                 location; {HOW}",
                scheme.prefix()
            ),
        })
    }

    /// Checks a source's `s3_endpoint_override`: empty (the environment's endpoint, which is
    /// the operator's) or an allowed endpoint.
    pub fn endpoint(&self, endpoint_override: &str) -> Result<(), Untrusted> {
        if endpoint_override.trim().is_empty() {
            return Ok(());
        }
        let fail = |message: String| Untrusted {
            field: "s3_endpoint_override",
            message,
        };
        let e = Endpoint::parse(endpoint_override).map_err(fail)?;
        if self.endpoints.contains(&e) {
            return Ok(());
        }
        Err(fail(format!(
            "{:?} is not an allowed endpoint; the operator allows endpoints with \
             --allow-endpoint / QUIVER_ALLOW_ENDPOINTS",
            endpoint_override.trim()
        )))
    }

    /// Checks a file source's location: `repo_dir` resolves local paths (symlinks followed);
    /// without it (the registry service) they are checked lexically.
    pub fn source(
        &self,
        repo_dir: Option<&Path>,
        uri: &str,
        endpoint_override: &str,
    ) -> Result<(), Untrusted> {
        self.endpoint(endpoint_override)?;
        if split_object(uri).is_some() {
            return self.object(uri);
        }
        match repo_dir {
            Some(repo) => self.local_path(repo, uri).map(|_| ()),
            None => self.local_path_lexical(uri),
        }
    }

    /// Every file source of `registry` (named sources, push sources' batch sources, views'
    /// own copies) that names an untrusted location, once each.
    pub fn check_registry(
        &self,
        registry: &ProjectRegistry,
        repo_dir: Option<&Path>,
    ) -> Vec<Problem> {
        let mut seen = BTreeSet::new();
        let mut problems = Vec::new();
        let mut visit = |s: &DataSource, problems: &mut Vec<Problem>| {
            let mut s = s;
            if let SourceKind::Push { batch_source } = &s.kind {
                s = batch_source;
            }
            if let SourceKind::File {
                uri,
                s3_endpoint_override,
            } = &s.kind
                && seen.insert((s.name.clone(), uri.clone(), s3_endpoint_override.clone()))
                && let Err(e) = self.source(repo_dir, uri, s3_endpoint_override)
            {
                problems.push(Problem {
                    object: format!("source {:?}", s.name),
                    field: e.field,
                    message: e.message,
                });
            }
        };
        for s in &registry.data_sources {
            visit(s, &mut problems);
        }
        for v in &registry.feature_views {
            for s in [&v.batch_source, &v.stream_source].into_iter().flatten() {
                visit(s, &mut problems);
            }
        }
        problems
    }
}

static POLICY: OnceLock<Trust> = OnceLock::new();

/// Installs the process's policy (a binary does, from its flags, before anything reads it).
/// Fails, returning it, when one is already in place.
pub fn install(trust: Trust) -> Result<(), Trust> {
    POLICY.set(trust)
}

/// The process's policy: the one installed, else the environment's, else (the environment
/// does not parse) the strictest: the repo only, no instance metadata.
pub fn policy() -> &'static Trust {
    POLICY.get_or_init(|| Trust::from_env().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn local_paths_stay_in_the_repo_or_an_allowed_prefix() {
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join("data")).unwrap();
        std::fs::write(outside.path().join("secret.csv"), "a\n1\n").unwrap();
        let strict = Trust::default();
        assert!(strict.local_path(repo.path(), "data/x.parquet").is_ok());
        assert!(strict.local_path(repo.path(), "data/new/x.parquet").is_ok());
        assert!(
            strict
                .local_path(repo.path(), "file://data/x.parquet")
                .is_ok()
        );
        let out = outside.path().join("secret.csv");
        let e = strict
            .local_path(repo.path(), out.to_str().unwrap())
            .unwrap_err();
        assert_eq!(e.field, "path");
        assert!(e.message.contains("outside the repo"), "{}", e.message);
        assert!(strict.local_path(repo.path(), "../x.parquet").is_err());
        assert!(
            strict
                .local_path(repo.path(), "data/../../x.parquet")
                .is_err()
        );
        assert!(strict.local_path(repo.path(), "nope/../../x").is_err());
        // A symlink inside the repo that points out of it escapes nothing.
        std::os::unix::fs::symlink(outside.path(), repo.path().join("link")).unwrap();
        assert!(strict.local_path(repo.path(), "link/secret.csv").is_err());
        assert!(
            strict
                .local_path(repo.path(), "link/new/x.parquet")
                .is_err()
        );
        // The operator's prefix lets it in.
        let allowed =
            Trust::new(&strings(&[outside.path().to_str().unwrap()]), &[], false).unwrap();
        assert!(allowed.local_path(repo.path(), "link/secret.csv").is_ok());
        assert!(
            allowed
                .local_path(repo.path(), out.to_str().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn without_a_repo_paths_are_checked_lexically() {
        let t = Trust::new(&strings(&["/srv/data/"]), &[], false).unwrap();
        assert!(t.local_path_lexical("data/x.parquet").is_ok());
        assert!(t.local_path_lexical("a/../b.parquet").is_ok());
        assert!(t.local_path_lexical("../x.parquet").is_err());
        assert!(t.local_path_lexical("/etc/passwd").is_err());
        assert!(t.local_path_lexical("/srv/data/x.parquet").is_ok());
        assert!(t.local_path_lexical("/srv/data/../x.parquet").is_err());
        assert!(t.local_path_lexical("/srv/database/x").is_err());
        assert!(t.local_path_lexical("http://x/y").is_err());
    }

    #[test]
    fn buckets_prefixes_and_endpoints_must_be_allowed() {
        let t = Trust::new(
            &strings(&["s3://data", "gs://lake/features/"]),
            &strings(&["http://minio:9000/"]),
            false,
        )
        .unwrap();
        assert!(t.object("s3://data/x.parquet").is_ok());
        assert!(t.object("s3://data/").is_ok());
        assert!(t.object("s3://other/x.parquet").is_err());
        assert!(t.object("gs://data/x.parquet").is_err());
        assert!(t.object("gs://lake/features/x.parquet").is_ok());
        assert!(t.object("gs://lake/features").is_ok());
        assert!(t.object("gs://lake/featuresX/x.parquet").is_err());
        assert!(t.object("gs://lake/other/x.parquet").is_err());
        assert!(t.endpoint("").is_ok());
        assert!(t.endpoint("http://MINIO:9000").is_ok());
        let e = t.endpoint("http://169.254.169.254").unwrap_err();
        assert_eq!(e.field, "s3_endpoint_override");
        assert!(t.endpoint("https://minio:9000").is_err());
        assert!(t.endpoint("nonsense").is_err());
        assert!(
            t.source(None, "s3://data/x.parquet", "http://evil:1")
                .is_err()
        );
        assert!(Trust::default().object("s3://data/x.parquet").is_err());
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Trust::new(&strings(&["relative/dir"]), &[], false).is_err());
        assert!(Trust::new(&strings(&["s3://"]), &[], false).is_err());
        assert!(Trust::new(&strings(&["ftp://x"]), &[], false).is_err());
        assert!(Trust::new(&[], &strings(&["minio:9000"]), false).is_err());
        assert!(Trust::new(&[], &strings(&["http://u@h:1"]), false).is_err());
    }
}
