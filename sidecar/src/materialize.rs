//! Feast's `POST /materialize` and `POST /materialize-incremental`, served by the ingest role.
//!
//! The bodies are Feast's (`feast/feature_server.py`'s `MaterializeRequest` and
//! `MaterializeIncrementalRequest`): `start_ts`/`end_ts` (ISO 8601; no offset means UTC),
//! `feature_views` (null or absent: every online view), `disable_event_timestamp` (the window
//! 1970 to now), `full_feature_names` (no effect on what is written), `version` (Feast's
//! versioned views, which quiver does not have: refused unless null). Unknown keys are ignored,
//! as Feast does. They are checked here; the run itself (reading the sources, the online
//! writes, the intervals recorded in the registry) is a [`Materializer`] the binary plugs in:
//! the sidecar crate links no Parquet reader, so the lean `quiver-sidecar` answers 501.
//!
//! The answer is `{"status": "ok", "feature_views": [{name, start, end, written, skipped}]}`
//! once every view is written and recorded (Feast answers `null`; its client reads any JSON).

use std::sync::Arc;

use quiver_core::fault::ErrorKind;
use quiver_core::time::{self, Timestamp};
use quiver_online_store::OnlineStore;
use serde_json::Value as Json;

use crate::error::ApiError;

/// Which window to materialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `/materialize`: START to END, both inclusive.
    Range { start: Timestamp, end: Timestamp },
    /// `/materialize-incremental`: from each view's latest recorded end (with none, `now - ttl`)
    /// to END.
    Incremental { end: Timestamp },
}

/// A checked materialization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializeRequest {
    pub window: Window,
    /// The views named by `feature_views`; empty: every online view.
    pub views: Vec<String>,
}

/// What a run did to one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMaterialized {
    pub view: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub written: u64,
    pub skipped: u64,
}

/// Runs materializations (the full binary's, on quiver's offline engine).
pub trait Materializer: Send + Sync {
    /// Materializes `request` into `store`, every view planned and checked before any write,
    /// then records the intervals in the registry (only when every view succeeded). Errors
    /// carry their kind: an unknown view or a bad window is the caller's, an unreadable source
    /// or registry an upstream's. Called on a blocking thread, inside the server's runtime.
    fn materialize(
        &self,
        store: &OnlineStore,
        request: &MaterializeRequest,
    ) -> Result<Vec<ViewMaterialized>, ApiError>;
}

/// Whether the materialize endpoints are served.
#[derive(Clone, Default)]
pub enum MaterializeSupport {
    /// Not this server's job (not the ingest role): 404.
    #[default]
    Off,
    /// The ingest role of a binary without the offline engine (the lean `quiver-sidecar`): 501.
    Unlinked,
    On(Arc<dyn Materializer>),
}

impl std::fmt::Debug for MaterializeSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaterializeSupport::Off => "Off",
            MaterializeSupport::Unlinked => "Unlinked",
            MaterializeSupport::On(_) => "On",
        })
    }
}

fn unprocessable(message: String) -> ApiError {
    ApiError::unprocessable("ValidationError", message)
}

fn timestamp(field: &str, value: Option<&str>) -> Result<Timestamp, ApiError> {
    let value = value.ok_or_else(|| {
        unprocessable(format!(
            "{field} is required: an ISO 8601 date-time like 2026-01-01T00:00:00 (no offset: UTC)"
        ))
    })?;
    time::parse_datetime(value).ok_or_else(|| {
        ApiError::bad_request(
            "InvalidTimestamp",
            format!(
                "{field}: {value:?} is not an ISO 8601 date-time like 2026-01-01T00:00:00 (optionally with Z or +HH:MM)"
            ),
        )
    })
}

/// Parses and checks a body of `/materialize` (`incremental` false) or
/// `/materialize-incremental`; `now` is the end of a `disable_event_timestamp` window.
pub fn parse(
    body: &[u8],
    incremental: bool,
    now: Timestamp,
) -> Result<MaterializeRequest, ApiError> {
    let body: Json = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("MalformedJson", format!("request body is not JSON: {e}"))
    })?;
    let Json::Object(body) = body else {
        return Err(unprocessable("the body must be a JSON object".to_owned()));
    };
    // Feast's fields, each checked by name; unknown keys are ignored, as Feast does.
    let text = |field: &str| -> Result<Option<&str>, ApiError> {
        match body.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(other) => Err(unprocessable(format!(
                "{field} must be a string, got {other}"
            ))),
        }
    };
    let disable_event_timestamp = match body.get("disable_event_timestamp") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(other) => {
            return Err(unprocessable(format!(
                "disable_event_timestamp must be true or false, got {other}"
            )));
        }
    };
    let views = match body.get("feature_views") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(names)) => names
            .iter()
            .enumerate()
            .map(|(i, n)| match n {
                Json::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                other => Err(unprocessable(format!(
                    "feature_views[{i}] must be a feature view name, got {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(unprocessable(format!(
                "feature_views must be a list of feature view names, got {other}"
            )));
        }
    };
    if let Some(version) = text("version")? {
        return Err(unprocessable(format!(
            "version: {version:?}: quiver has no versioned feature views; leave version out"
        )));
    }
    let window = if incremental {
        Window::Incremental {
            end: timestamp("end_ts", text("end_ts")?)?,
        }
    } else if disable_event_timestamp {
        Window::Range {
            start: Timestamp::default(),
            end: now,
        }
    } else {
        let start = timestamp("start_ts", text("start_ts")?)?;
        let end = timestamp("end_ts", text("end_ts")?)?;
        if (start.seconds, start.nanos) > (end.seconds, end.nanos) {
            return Err(ApiError::bad_request(
                "InvalidTimestamp",
                format!(
                    "start_ts {} is after end_ts {}",
                    time::format_rfc3339(&start),
                    time::format_rfc3339(&end)
                ),
            ));
        }
        Window::Range { start, end }
    };
    Ok(MaterializeRequest { window, views })
}

/// The 501 of a binary without the offline engine.
pub fn unlinked() -> ApiError {
    ApiError::new(
        ErrorKind::NotImplemented,
        "NotImplemented",
        "materialization needs quiver's offline engine, which this binary (quiver-sidecar) does not link: run `quiver serve --role ingest` from the full quiver binary",
    )
}

/// The answer to a finished run.
pub fn answer(done: &[ViewMaterialized]) -> String {
    let mut out = String::from("{\"status\":\"ok\",\"feature_views\":[");
    for (i, v) in done.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        quiver_core::json::write_str(&mut out, &v.view);
        out.push_str(",\"start\":");
        quiver_core::json::write_str(&mut out, &time::format_rfc3339(&v.start));
        out.push_str(",\"end\":");
        quiver_core::json::write_str(&mut out, &time::format_rfc3339(&v.end));
        out.push_str(&format!(
            ",\"written\":{},\"skipped\":{}}}",
            v.written, v.skipped
        ));
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    };

    fn at(s: &str) -> Timestamp {
        time::parse_datetime(s).unwrap()
    }

    #[test]
    fn feast_bodies_parse() {
        // What Feast 0.67's SDK sends (`datetime.isoformat()`, naive or with an offset).
        let r = parse(
            br#"{"start_ts": "2026-01-01T09:00:00", "end_ts": "2026-01-01T12:00:00+00:00",
                 "feature_views": ["a"], "disable_event_timestamp": false,
                 "full_feature_names": false, "other": 1}"#,
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            r.window,
            Window::Range {
                start: at("2026-01-01T09:00:00"),
                end: at("2026-01-01T12:00:00")
            }
        );
        assert_eq!(r.views, ["a"]);
        let r = parse(
            br#"{"end_ts": "2026-01-01T12:00:00.250000", "feature_views": null}"#,
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(
            r.window,
            Window::Incremental {
                end: at("2026-01-01T12:00:00.25")
            }
        );
        assert!(r.views.is_empty());
        let r = parse(br#"{"disable_event_timestamp": true}"#, false, NOW).unwrap();
        assert_eq!(
            r.window,
            Window::Range {
                start: Timestamp::default(),
                end: NOW
            }
        );
    }

    #[test]
    fn bad_bodies_are_4xx_naming_the_field() {
        let cases: [(&[u8], bool, u16, &str); 12] = [
            (b"{", false, 400, "request body is not JSON"),
            (
                br#"{"start_ts": 1, "end_ts": "2026-01-01"}"#,
                false,
                422,
                "start_ts must be a string",
            ),
            (
                br#"{"disable_event_timestamp": "yes"}"#,
                false,
                422,
                "disable_event_timestamp",
            ),
            (
                br#"{"end_ts": "2026-01-01", "feature_views": [""]}"#,
                true,
                422,
                "feature_views[0]",
            ),
            (b"[1]", false, 422, "JSON object"),
            (
                br#"{"end_ts": "2026-01-01T00:00:00"}"#,
                false,
                422,
                "start_ts is required",
            ),
            (
                br#"{"start_ts": "2026-01-01T00:00:00"}"#,
                false,
                422,
                "end_ts is required",
            ),
            (br#"{}"#, true, 422, "end_ts is required"),
            (
                br#"{"end_ts": "yesterday"}"#,
                true,
                400,
                "end_ts: \"yesterday\"",
            ),
            (
                br#"{"start_ts": "2026-01-02", "end_ts": "2026-01-01"}"#,
                false,
                400,
                "start_ts 2026-01-02T00:00:00Z is after end_ts",
            ),
            (
                br#"{"end_ts": "2026-01-01", "feature_views": "a"}"#,
                true,
                422,
                "feature_views",
            ),
            (
                br#"{"end_ts": "2026-01-01", "version": "v2"}"#,
                true,
                422,
                "version",
            ),
        ];
        for (body, incremental, status, text) in cases {
            let e = parse(body, incremental, NOW).unwrap_err();
            assert_eq!(e.status(), status, "{e}");
            assert!(e.message.contains(text), "{e} (wanted {text:?})");
        }
    }

    #[test]
    fn the_answer_lists_each_view() {
        let body = answer(&[ViewMaterialized {
            view: "v".into(),
            start: at("2026-01-01T09:00:00"),
            end: at("2026-01-01T12:00:00"),
            written: 3,
            skipped: 1,
        }]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["feature_views"][0]["name"], "v");
        assert_eq!(v["feature_views"][0]["end"], "2026-01-01T12:00:00Z");
        assert_eq!(v["feature_views"][0]["written"], 3);
    }
}
