//! Where a registry is: a file on a local path, or an object in S3 (`s3://bucket/key`) or GCS
//! (`gs://bucket/key`), the places Feast's file registry (`registry_type: file`) is kept.
//!
//! Parsing is pure and always compiled, so a build without the `object-store` feature still
//! says precisely what it was given and what it lacks.

use std::fmt;
use std::path::PathBuf;

/// The object stores a registry can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectScheme {
    /// Amazon S3 or an S3-compatible server (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
}

impl ObjectScheme {
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectScheme::S3 => "s3://",
            ObjectScheme::Gcs => "gs://",
        }
    }
}

/// `s3://bucket/key` or `gs://bucket/key`, checked: a bucket, and a key naming an object (not
/// a folder).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUri {
    pub scheme: ObjectScheme,
    pub bucket: String,
    /// The object's key inside the bucket, without a leading `/`.
    pub key: String,
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}/{}", self.scheme.prefix(), self.bucket, self.key)
    }
}

impl ObjectUri {
    /// Parses `uri` when it is an object-store URI: `Ok(None)` for anything else (a local path,
    /// another scheme), an error naming the URI when it is `s3://`/`gs://` but malformed.
    pub fn parse(uri: &str) -> Result<Option<ObjectUri>, String> {
        ObjectUri::parse_as(uri, "registry", "registry.db")
    }

    /// [`ObjectUri::parse`] for another kind of object: errors call the URI a `what` (`source`)
    /// and give `example` (`data.parquet`) as the kind of key expected.
    pub fn parse_as(uri: &str, what: &str, example: &str) -> Result<Option<ObjectUri>, String> {
        let uri = uri.trim();
        let (scheme, rest) = if let Some(rest) = uri.strip_prefix("s3://") {
            (ObjectScheme::S3, rest)
        } else if let Some(rest) = uri.strip_prefix("gs://") {
            (ObjectScheme::Gcs, rest)
        } else {
            return Ok(None);
        };
        let expected = format!(
            "expected {}BUCKET/PATH/{example} (a bucket, then the {what} object's key)",
            scheme.prefix()
        );
        if rest.contains(['?', '#']) {
            return Err(format!(
                "{what} {uri:?}: query strings and fragments are not supported; {expected}"
            ));
        }
        let Some((bucket, key)) = rest.split_once('/') else {
            return Err(format!("{what} {uri:?}: no object key; {expected}"));
        };
        if !valid_bucket(bucket) {
            return Err(format!(
                "{what} {uri:?}: {bucket:?} is not a valid bucket name (3 to 222 lowercase \
                 letters, digits, '.', '-' or '_', starting and ending with a letter or digit); \
                 {expected}"
            ));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(format!(
                "{what} {uri:?}: names a folder, not an object; {expected}"
            ));
        }
        if key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(format!(
                "{what} {uri:?}: the key has an empty, '.' or '..' segment; {expected}"
            ));
        }
        Ok(Some(ObjectUri {
            scheme,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// The object's file name (the key's last segment).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    /// An object beside this one, in the same "folder": e.g. the registry service's version
    /// record `.registry.db.versions.json` next to `registry.db`.
    pub fn sibling(&self, name: &str) -> ObjectUri {
        let key = match self.key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{name}"),
            None => name.to_owned(),
        };
        ObjectUri {
            scheme: self.scheme,
            bucket: self.bucket.clone(),
            key,
        }
    }
}

/// S3's and GCS's bucket rules, loosely: what either accepts (GCS allows `_` and up to 222
/// characters with dots); the service itself has the last word.
fn valid_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    (3..=222).contains(&bytes.len())
        && bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-._".contains(c))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// Where a registry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// A file on the local file system (missing means empty).
    File(PathBuf),
    /// An object in S3 or GCS.
    Object(ObjectUri),
}

impl fmt::Display for RegistryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryLocation::File(p) => write!(f, "{}", p.display()),
            RegistryLocation::Object(u) => write!(f, "{u}"),
        }
    }
}

/// Resolves a registry path as written in `feature_store.yaml` (or given as `--store`):
/// `s3://` and `gs://` are objects, `file://` and plain paths are files (relative ones under
/// `base`), and any other scheme is an error naming what is supported.
pub fn resolve(path: &str, base: &std::path::Path) -> Result<RegistryLocation, String> {
    if let Some(uri) = ObjectUri::parse(path)? {
        return Ok(RegistryLocation::Object(uri));
    }
    let path = path.trim();
    if let Some(p) = path.strip_prefix("file://") {
        return Ok(RegistryLocation::File(base.join(p)));
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(format!(
            "registry {path:?}: {scheme}:// is not supported: use a local path, s3://BUCKET/KEY \
             or gs://BUCKET/KEY"
        ));
    }
    Ok(RegistryLocation::File(base.join(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn object_uris() {
        let u = ObjectUri::parse("s3://my-bucket/feast/registry.db")
            .unwrap()
            .unwrap();
        assert_eq!(u.scheme, ObjectScheme::S3);
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("my-bucket", "feast/registry.db")
        );
        assert_eq!(u.to_string(), "s3://my-bucket/feast/registry.db");
        assert_eq!(u.file_name(), "registry.db");
        assert_eq!(
            u.sibling(".registry.db.versions.json").to_string(),
            "s3://my-bucket/feast/.registry.db.versions.json"
        );
        let g = ObjectUri::parse(" gs://b_1.x/registry.pb ")
            .unwrap()
            .unwrap();
        assert_eq!(g.scheme, ObjectScheme::Gcs);
        assert_eq!(g.key, "registry.pb");
        assert_eq!(g.sibling("v.json").key, "v.json");
        assert_eq!(ObjectUri::parse("data/registry.db").unwrap(), None);
        assert_eq!(ObjectUri::parse("az://c/registry.db").unwrap(), None);
    }

    #[test]
    fn malformed_object_uris_are_named() {
        for (uri, says) in [
            ("s3://bucket", "no object key"),
            ("s3://bucket/", "names a folder"),
            ("gs://bucket/dir/", "names a folder"),
            ("s3:///registry.db", "not a valid bucket name"),
            ("s3://Bucket/registry.db", "not a valid bucket name"),
            ("s3://b/registry.db", "not a valid bucket name"),
            ("s3://bucket//registry.db", "empty, '.' or '..'"),
            ("s3://bucket/a/../registry.db", "empty, '.' or '..'"),
            ("s3://bucket/registry.db?versionId=1", "query strings"),
        ] {
            let err = ObjectUri::parse(uri).unwrap_err();
            assert!(err.contains(says), "{uri}: {err}");
            assert!(err.contains(uri.trim()), "{uri}: {err}");
            assert!(err.contains("BUCKET/PATH/registry.db"), "{err}");
        }
    }

    #[test]
    fn locations() {
        let repo = Path::new("/repo");
        assert_eq!(
            resolve("data/registry.db", repo).unwrap(),
            RegistryLocation::File("/repo/data/registry.db".into())
        );
        assert_eq!(
            resolve("file:///abs/registry.db", repo).unwrap(),
            RegistryLocation::File("/abs/registry.db".into())
        );
        assert!(matches!(
            resolve("gs://bucket/registry.pb", repo).unwrap(),
            RegistryLocation::Object(_)
        ));
        let err = resolve("az://c/registry.db", repo).unwrap_err();
        assert!(err.contains("az:// is not supported"), "{err}");
        assert!(resolve("s3://bucket", repo).is_err());
    }
}
