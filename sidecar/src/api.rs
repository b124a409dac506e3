//! Feast's `POST /get-online-features`: the request body and the field statuses of the answer.
//!
//! The request's mistakes are 4xx with a message naming the field (see [`crate::error`], where
//! every error gets its status).

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
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

/// The `entities` object: column name → values, in the order the request gives them (the
/// response echoes them in that order).
#[derive(Debug, Default)]
pub struct EntityColumns(pub Vec<(String, Vec<Json>)>);

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
                while let Some((k, v)) = map.next_entry::<String, Vec<Json>>()? {
                    if out.iter().any(|(name, _)| *name == k) {
                        return Err(serde::de::Error::custom(format!(
                            "entity column {k:?} is given twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(EntityColumns(out))
            }
        }
        d.deserialize_map(Columns)
    }
}

/// Parses a request body. Malformed JSON is a 400; JSON of the wrong shape a 422; both say
/// where (line and column) and what was expected.
pub fn parse_request(body: &[u8]) -> Result<OnlineRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let message = format!("request body: {e}");
        if e.is_data() {
            ApiError::unprocessable("InvalidRequest", message)
        } else {
            ApiError::bad_request("MalformedJson", message)
        }
    })
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
}
