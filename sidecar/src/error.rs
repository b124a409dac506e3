//! The sidecar's errors: what a request is answered with when it cannot be served.
//!
//! An [`ApiError`] is a kind ([`ErrorKind`]: whose fault, and from it the HTTP status and the log
//! level, in `quiver_core::fault`'s one table), a stable class name for Feast's clients (Feast's
//! exception names where Feast has one, e.g. `FeatureViewNotFoundException`) and a message that
//! names the field or input at fault.
//!
//! The body is Feast's error detail, as `feast serve` writes it: a JSON *string* whose text is
//! the object `{"module": "feast.errors", "class": ..., "message": ...}` (FastAPI's
//! `JSONResponse(content=exc.to_error_detail())`). Feast's remote online store parses exactly
//! that and raises `feast.errors.<class>`, so a client of quiver gets the exception class a
//! client of `feast serve` gets. `module` is there only for Feast's own classes
//! ([`feast_module`]); quiver's other classes (a malformed body, an unknown feature) leave it
//! out, so Feast's SDK raises its `RuntimeError` carrying the status and the body, as it does for
//! `feast serve`'s unclassified errors. The status stays quiver's: by fault, 4xx for the
//! caller, 5xx for an upstream or a bug.
//!
//! The online store's failures are classified in one function, [`ApiError::from_store`]:
//! unreachable or past the request's deadline is 503 (`OnlineStoreUnavailable`: retry later; the
//! deadline is the sidecar's own serving budget, so it is reported as the store being unavailable
//! for this request, not as a gateway timeout), data not in Feast's layout is 502
//! (`OnlineStoreCorrupt`).

use quiver_core::fault::{Classified, ErrorKind};
use quiver_online_store::StoreError;

/// An error answered to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {class}: {message}", kind.http_status())]
pub struct ApiError {
    pub kind: ErrorKind,
    /// A stable name for the kind of error (Feast's exception names where Feast has one).
    pub class: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, class: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            class,
            message: message.into(),
        }
    }

    /// The HTTP status, from the kind.
    pub fn status(&self) -> u16 {
        self.kind.http_status()
    }

    pub fn bad_request(class: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, class, message)
    }
    pub fn not_found(class: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, class, message)
    }
    pub fn too_large(class: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::TooLarge, class, message)
    }
    pub fn unprocessable(class: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Unprocessable, class, message)
    }
    pub fn method_not_allowed(method: &hyper::Method, path: &str) -> ApiError {
        ApiError::new(
            ErrorKind::MethodNotAllowed,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}"),
        )
    }
    pub fn internal(class: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, class, message)
    }

    /// The online store failed with `e`; `message` says what could not be done, and why.
    pub fn from_store(e: &StoreError, message: impl Into<String>) -> ApiError {
        let (kind, class) = store_error_kind(e);
        ApiError::new(kind, class, message)
    }

    /// Feast's error detail: the JSON string of `{"module"?, "class", "message"}`.
    pub fn to_body(&self) -> String {
        let mut detail = String::with_capacity(self.message.len() + 80);
        detail.push('{');
        if let Some(module) = feast_module(self.class) {
            detail.push_str("\"module\":");
            quiver_core::json::write_str(&mut detail, module);
            detail.push(',');
        }
        detail.push_str("\"class\":");
        quiver_core::json::write_str(&mut detail, self.class);
        detail.push_str(",\"message\":");
        quiver_core::json::write_str(&mut detail, &self.message);
        detail.push('}');
        let mut out = String::with_capacity(detail.len() + detail.len() / 4 + 2);
        quiver_core::json::write_str(&mut out, &detail);
        out
    }
}

impl Classified for ApiError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// The Python module of `class` when it is one of Feast's exception classes (which Feast's SDK
/// re-raises by name), `None` for quiver's own classes. Every name here exists in Feast 0.67's
/// `feast/errors.py` (the compat suite raises them through the real SDK).
pub fn feast_module(class: &str) -> Option<&'static str> {
    match class {
        "FeatureViewNotFoundException"
        | "FeatureServiceNotFoundException"
        | "FeastObjectNotFoundException"
        | "OnDemandFeatureViewNotFoundException"
        | "EntityNotFoundException"
        | "RequestDataNotFoundInEntityRowsException"
        | "PushSourceNotFoundException"
        | "FeatureNameCollisionError" => Some("feast.errors"),
        _ => None,
    }
}

/// The one place an online store failure gets its kind and class name.
pub fn store_error_kind(e: &StoreError) -> (ErrorKind, &'static str) {
    match e {
        StoreError::Timeout | StoreError::Unavailable(_) => {
            (ErrorKind::Unavailable, "OnlineStoreUnavailable")
        }
        StoreError::Corrupt(_) => (ErrorKind::UpstreamFailed, "OnlineStoreCorrupt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_upstream_faults_with_their_own_status() {
        let e = ApiError::from_store(&StoreError::Timeout, "reading: timed out");
        assert_eq!((e.status(), e.class), (503, "OnlineStoreUnavailable"));
        assert_eq!(e.message, "reading: timed out");
        let e = ApiError::from_store(&StoreError::Unavailable("refused".into()), "x");
        assert_eq!(e.status(), 503);
        let e = ApiError::from_store(&StoreError::Corrupt("bad _ts".into()), "x");
        assert_eq!((e.status(), e.class), (502, "OnlineStoreCorrupt"));
        assert_eq!(e.kind.fault(), quiver_core::fault::Fault::Upstream);
    }

    /// The body a client reads: the detail string, and the object inside it.
    fn detail(e: &ApiError) -> serde_json::Value {
        let outer: serde_json::Value = serde_json::from_str(&e.to_body()).unwrap();
        serde_json::from_str(outer.as_str().expect("the body is a JSON string")).unwrap()
    }

    #[test]
    fn bodies_are_feast_error_details() {
        let e = ApiError::not_found(
            "FeatureViewNotFoundException",
            "Feature view \"x\" does not exist",
        );
        let d = detail(&e);
        assert_eq!(d["module"], "feast.errors");
        assert_eq!(d["class"], "FeatureViewNotFoundException");
        assert_eq!(d["message"], "Feature view \"x\" does not exist");
        // quiver's own classes carry no module: Feast's SDK raises RuntimeError with the text.
        let d = detail(&ApiError::bad_request("MalformedJson", "line 1"));
        assert!(d.get("module").is_none(), "{d}");
        assert_eq!(
            (d["class"].as_str(), d["message"].as_str()),
            (Some("MalformedJson"), Some("line 1"))
        );
    }

    #[test]
    fn display_leads_with_the_status() {
        let e = ApiError::not_found("NotFound", "no endpoint /x");
        assert_eq!(e.to_string(), "404 NotFound: no endpoint /x");
    }
}
