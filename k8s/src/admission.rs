//! The `admission.k8s.io/v1` AdmissionReview, as much of it as a mutating webhook reads and
//! writes. The field names are the API's; unknown request fields are ignored, so newer API
//! servers work unchanged.
//!
//! Hand-written rather than kube-core's `admission` module: this is all of it, with nothing
//! pulled in beyond serde, and the pod inside is read with k8s-openapi's `Pod`.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// The envelope, in both directions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse>,
}

/// group/version/kind as the API server sends it (`group` is empty for the core group).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Copied into the response: the API server matches the two by it.
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub operation: String,
    /// Empty on CREATE when the object has only a `generateName`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub object: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The JSON Patch, base64 (standard alphabet, padded), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// One RFC 6902 operation: `add`, or `replace` (where the enrichment rewiring changes the model's
/// container).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    pub value: Value,
}

impl PatchOp {
    pub fn add(path: impl Into<String>, value: Value) -> PatchOp {
        PatchOp {
            op: "add".to_owned(),
            path: path.into(),
            value,
        }
    }

    /// Replaces a value that exists (the operation fails if it does not).
    pub fn replace(path: impl Into<String>, value: Value) -> PatchOp {
        PatchOp {
            op: "replace".to_owned(),
            path: path.into(),
            value,
        }
    }
}

/// Escapes one JSON Pointer segment (RFC 6901): `~` → `~0`, `/` → `~1`, so the annotation key
/// `quiver.dev/status` is the path segment `quiver.dev~1status`.
pub fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl AdmissionResponse {
    pub fn allow(uid: &str) -> AdmissionResponse {
        AdmissionResponse {
            uid: uid.to_owned(),
            allowed: true,
            ..AdmissionResponse::default()
        }
    }

    /// Allowed, with the patch attached (nothing attached when there are no operations).
    pub fn allow_with_patch(uid: &str, ops: &[PatchOp]) -> Result<AdmissionResponse, String> {
        let mut resp = AdmissionResponse::allow(uid);
        if !ops.is_empty() {
            let json = serde_json::to_vec(ops).map_err(|e| format!("encoding the patch: {e}"))?;
            resp.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
            resp.patch_type = Some("JSONPatch".to_owned());
        }
        Ok(resp)
    }

    /// Denied: `message` is what `kubectl` and the ReplicaSet's events show.
    pub fn deny(uid: &str, code: u16, reason: &str, message: String) -> AdmissionResponse {
        AdmissionResponse {
            uid: uid.to_owned(),
            allowed: false,
            status: Some(Status {
                code: Some(i32::from(code)),
                message: Some(message),
                reason: Some(reason.to_owned()),
                status: Some("Failure".to_owned()),
                ..Status::default()
            }),
            ..AdmissionResponse::default()
        }
    }

    /// The patch decoded back into operations (for tests and logs).
    pub fn patch_ops(&self) -> Result<Vec<PatchOp>, String> {
        let Some(patch) = &self.patch else {
            return Ok(Vec::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .map_err(|e| format!("patch is not base64: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON Patch: {e}"))
    }

    pub fn into_review(self) -> AdmissionReview {
        AdmissionReview {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            request: None,
            response: Some(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(pointer_segment("quiver.dev/status"), "quiver.dev~1status");
        assert_eq!(pointer_segment("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn responses_serialize_as_the_api_expects() {
        let ops = [PatchOp::add("/metadata/annotations", serde_json::json!({}))];
        let resp = AdmissionResponse::allow_with_patch("u1", &ops).unwrap();
        let json = serde_json::to_value(resp.clone().into_review()).unwrap();
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(json["kind"], "AdmissionReview");
        assert_eq!(json["response"]["uid"], "u1");
        assert_eq!(json["response"]["allowed"], true);
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        assert!(json["response"].get("status").is_none());
        assert!(json["response"].get("warnings").is_none());
        assert_eq!(resp.patch_ops().unwrap(), ops);

        let denied = AdmissionResponse::deny("u2", 422, "Invalid", "bad".to_owned());
        let json = serde_json::to_value(denied.into_review()).unwrap();
        assert_eq!(json["response"]["allowed"], false);
        assert_eq!(json["response"]["status"]["code"], 422);
        assert_eq!(json["response"]["status"]["message"], "bad");
        assert!(json["response"].get("patch").is_none());
    }
}
