//! Feast's `POST /get-online-features`: the request body and the field statuses of the answer.
//!
//! The request's mistakes are 4xx with a message naming the field (see [`crate::error`], where
//! every error gets its status).

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value as Json;

pub use crate::error::ApiError;

/// Feast's `GetOnlineFeaturesRequest` as JSON. Unknown keys are ignored, as Feast does.
#[derive(Debug, Deserialize)]
pub struct OnlineRequest {
    #[serde(default)]
    pub features: Option<Vec<String>>,
    #[serde(default)]
    pub feature_service: Option<String>,
    #[serde(default)]
    pub entities: EntityColumns,
    #[serde(default)]
    pub full_feature_names: bool,
}

/// Most entity columns (join keys and request fields) one request may give. A request needs one
/// per join key and request field it uses; the cap bounds the work a body can ask for.
pub const MAX_ENTITY_COLUMNS: usize = 256;

/// The `entities` object: column name → values, in the order the request gives them (the
/// response echoes them in that order). Columns past [`MAX_ENTITY_COLUMNS`] are skipped
/// unread and counted, and the request refused (`parse_request`).
#[derive(Debug, Default)]
pub struct EntityColumns(pub Vec<(String, Vec<Json>)>, usize);

impl From<Vec<(String, Vec<Json>)>> for EntityColumns {
    fn from(columns: Vec<(String, Vec<Json>)>) -> EntityColumns {
        EntityColumns(columns, 0)
    }
}

impl<'de> Deserialize<'de> for EntityColumns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = EntityColumns;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of entity columns: {\"join_key\": [values, ...]}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntityColumns, A::Error> {
                let mut out: Vec<(String, Vec<Json>)> = Vec::new();
                // A set, not a scan of `out`: 85k distinct columns in 1 MiB took 9.5 s scanned.
                let mut seen: HashSet<String> = HashSet::new();
                while out.len() < MAX_ENTITY_COLUMNS {
                    let Some((k, v)) = map.next_entry::<String, Vec<Json>>()? else {
                        return Ok(EntityColumns(out, 0));
                    };
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "entity column {k:?} is given twice"
                        )));
                    }
                    out.push((k, v));
                }
                // Past the cap: the rest is only counted (still checked as JSON).
                let mut extra = 0;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    extra += 1;
                }
                Ok(EntityColumns(out, extra))
            }
        }
        d.deserialize_map(Columns)
    }
}

/// Parses a request body. Malformed JSON is a 400; JSON of the wrong shape a 422; both say
/// where (line and column) and what was expected.
pub fn parse_request(body: &[u8]) -> Result<OnlineRequest, ApiError> {
    let request: OnlineRequest = serde_json::from_slice(body).map_err(|e| {
        let message = format!("request body: {e}");
        if e.is_data() {
            ApiError::unprocessable("InvalidRequest", message)
        } else {
            ApiError::bad_request("MalformedJson", message)
        }
    })?;
    let extra = request.entities.1;
    if extra > 0 {
        return Err(ApiError::bad_request(
            "TooManyEntityColumns",
            format!(
                "entities: {} columns; at most {MAX_ENTITY_COLUMNS} per request (one per join key and request field)",
                MAX_ENTITY_COLUMNS + extra
            ),
        ));
    }
    Ok(request)
}

/// Feast's field statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Present,
    NotFound,
    OutsideMaxAge,
    /// The online store could not be read in time (only in degraded mode), or the stored value
    /// does not decode (see [`crate::engine::read_through`]).
    Invalid,
}

impl Status {
    pub fn as_json(self) -> &'static str {
        match self {
            Status::Present => "\"PRESENT\"",
            Status::NotFound => "\"NOT_FOUND\"",
            Status::OutsideMaxAge => "\"OUTSIDE_MAX_AGE\"",
            Status::Invalid => "\"INVALID\"",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_columns_keep_request_order() {
        let r = parse_request(
            br#"{"entities": {"z": [1], "a": ["x"]}, "features": ["v:f"], "other": 1}"#,
        )
        .unwrap();
        let names: Vec<&str> = r.entities.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        assert!(!r.full_feature_names);
    }

    #[test]
    fn bad_bodies_are_4xx_naming_the_problem() {
        let e = parse_request(b"{\"features\": [").unwrap_err();
        assert_eq!((e.status(), e.class), (400, "MalformedJson"));
        let e = parse_request(br#"{"features": "v:f"}"#).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.message.contains("expected a sequence"), "{e}");
        let e = parse_request(br#"{"entities": {"a": [1], "a": [2]}}"#).unwrap_err();
        assert!(e.message.contains("given twice"), "{e}");
        let e = parse_request(br#"{"entities": {"a": 1}}"#).unwrap_err();
        assert_eq!(e.status(), 422);
    }

    /// The largest body the sidecar accepts (1 MiB), filled with distinct entity columns: the
    /// duplicate check was quadratic (85k columns: 9.5 s of CPU). Now the cap refuses it with a
    /// 400 naming the limit, in time linear in the body.
    #[test]
    fn many_entity_columns_are_refused_in_linear_time() {
        let max_body = crate::SidecarConfig::default().max_body_bytes;
        let mut body = String::from(r#"{"features": ["v:f"], "entities": {"#);
        let mut n = 0;
        while body.len() + 32 < max_body {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&format!("\"c{n}\":[1]"));
            n += 1;
        }
        body.push_str("}}");
        assert!(n > 80_000, "{n}");
        let t = std::time::Instant::now();
        let e = parse_request(body.as_bytes()).unwrap_err();
        let took = t.elapsed();
        assert_eq!((e.status(), e.class), (400, "TooManyEntityColumns"), "{e}");
        assert!(
            e.message.contains(&format!("{n} columns; at most 256")),
            "{e}"
        );
        // Linear: a few ms in release, well under 1 s in a debug build (was 9.5 s).
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");

        // At the cap, with a duplicate last: the set finds it.
        let mut cols: Vec<String> = (0..MAX_ENTITY_COLUMNS)
            .map(|i| format!("\"c{i}\":[1]"))
            .collect();
        let ok = format!(
            r#"{{"features": ["v:f"], "entities": {{{}}}}}"#,
            cols.join(",")
        );
        assert_eq!(
            parse_request(ok.as_bytes()).unwrap().entities.0.len(),
            MAX_ENTITY_COLUMNS
        );
        cols[MAX_ENTITY_COLUMNS - 1] = "\"c0\":[2]".to_owned();
        let dup = format!(
            r#"{{"features": ["v:f"], "entities": {{{}}}}}"#,
            cols.join(",")
        );
        let e = parse_request(dup.as_bytes()).unwrap_err();
        assert!(e.message.contains("\"c0\" is given twice"), "{e}");
    }
}
