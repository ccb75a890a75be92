//! The Kubernetes admission review (`admission.k8s.io/v1` `AdmissionReview`), validating and mutating, as a pure
//! function of the request body, the policy and the verifier ([`review`]).
//!
//! Objects checked: Pods (`spec`), Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers and
//! Jobs (`spec.template.spec`), CronJobs (`spec.jobTemplate.spec.template.spec`); in each, `containers`,
//! `initContainers` and `ephemeralContainers`; on CREATE and UPDATE (other operations, and other kinds, are
//! admitted). An enforced failure denies with status 403 and `<image>: <reason>`; a permissive one admits with a
//! warning, an audit annotation (recorded in the API server's audit log) and an audit line in Tufa's own log. The mutating review also rewrites every trusted tag reference to
//! `registry/path@sha256:…` (the signed digest) with a JSON Patch.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tufa_policy::{ImageRef, Policy};

use crate::ImageVerifier;
use crate::gate::{self, Failure, Judgement};

/// The largest review body accepted, in bytes (the API server sends at most 3 MiB objects in practice).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// The most distinct images one reviewed object may name.
pub const MAX_IMAGES_PER_REVIEW: usize = 100;

/// The API version reviewed and answered.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The key of the audit annotation that records the untrusted images a permissive rule admitted (the API
/// server files it as `<webhook name>/admitted-untrusted-images` in its audit log).
pub const AUDIT_ANNOTATION: &str = "admitted-untrusted-images";

/// Which webhook is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewKind {
    /// `/validate`: allow or deny.
    Validate,
    /// `/mutate`: deny what validating would deny, and pin tags to signed digests.
    Mutate,
}

/// A review that cannot be answered: the caller answers with [`ReviewError::status`] and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The body is larger than [`MAX_REVIEW_BYTES`].
    #[error("the admission review is {0} bytes long; at most {MAX_REVIEW_BYTES} are accepted")]
    TooLarge(usize),
    /// The body is not an `admission.k8s.io/v1` AdmissionReview with a well-formed request.
    #[error("malformed admission review: {0}")]
    Malformed(String),
}

impl ReviewError {
    /// The HTTP status to answer with: 413 for a body too large, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge(_) => 413,
            Self::Malformed(_) => 400,
        }
    }
}

fn malformed(message: impl Into<String>) -> ReviewError {
    ReviewError::Malformed(message.into())
}

/// Where a kind keeps its pod spec, as JSON object keys from the object's root.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// Escapes one JSON pointer token (RFC 6901).
fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// One container image found in the object.
struct Found {
    /// The JSON pointer of its `image` field.
    pointer: String,
    /// The image as written.
    image: String,
}

/// Collects the images of every container list in the pod spec of `object`; a pod spec that is absent has none.
fn images(object: &Value, path: &[&str]) -> Result<Vec<Found>, ReviewError> {
    let mut spec = object;
    let mut pointer = String::new();
    for step in path {
        match spec.get(step) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(inner @ Value::Object(_)) => {
                spec = inner;
                pointer.push('/');
                pointer.push_str(&pointer_token(step));
            }
            Some(_) => return Err(malformed(format!("{pointer}/{step} must be an object"))),
        }
    }
    let mut found = Vec::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let items = match spec.get(list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(_) => return Err(malformed(format!("{pointer}/{list} must be an array"))),
        };
        for (index, item) in items.iter().enumerate() {
            let Value::Object(container) = item else {
                return Err(malformed(format!("{pointer}/{list}/{index} must be an object")));
            };
            match container.get("image") {
                // The API leaves the image optional in templates (a controller may fill it in); nothing to check.
                None | Some(Value::Null) => {}
                Some(Value::String(image)) => {
                    found.push(Found { pointer: format!("{pointer}/{list}/{index}/image"), image: image.clone() });
                }
                Some(_) => return Err(malformed(format!("{pointer}/{list}/{index}/image must be a string"))),
            }
        }
    }
    Ok(found)
}

fn string_field<'a>(object: &'a Map<String, Value>, field: &str, path: &str) -> Result<Option<&'a str>, ReviewError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(malformed(format!("{path}{field} must be a string"))),
    }
}

/// Answers an AdmissionReview: the response body (JSON) to send with status 200.
///
/// # Errors
/// [`ReviewError`] when the body is too large or is not a well-formed `admission.k8s.io/v1` AdmissionReview.
pub async fn review(
    body: &[u8],
    kind: ReviewKind,
    policy: &Policy,
    verifier: &dyn ImageVerifier,
) -> Result<Vec<u8>, ReviewError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(ReviewError::TooLarge(body.len()));
    }
    let document: Value =
        serde_json::from_slice(body).map_err(|error| malformed(format!("the body is not JSON: {error}")))?;
    let Value::Object(document) = document else {
        return Err(malformed("the body is not a JSON object"));
    };
    match string_field(&document, "apiVersion", "")? {
        Some(API_VERSION) => {}
        Some(other) => return Err(malformed(format!("apiVersion {other:?} is not supported; send {API_VERSION}"))),
        None => return Err(malformed("apiVersion is missing")),
    }
    if string_field(&document, "kind", "")? != Some("AdmissionReview") {
        return Err(malformed("kind must be AdmissionReview"));
    }
    let Some(Value::Object(request)) = document.get("request") else {
        return Err(malformed("request must be an object"));
    };
    let uid = match string_field(request, "uid", "request.")? {
        Some(uid) if !uid.is_empty() => uid,
        _ => return Err(malformed("request.uid is missing")),
    };
    let operation = string_field(request, "operation", "request.")?.unwrap_or_default();
    let object_kind = match request.get("kind") {
        Some(Value::Object(kind)) => string_field(kind, "kind", "request.kind.")?.unwrap_or_default(),
        _ => return Err(malformed("request.kind must be an object")),
    };
    let allowed = |extra: Map<String, Value>| respond(uid, true, extra);
    if operation != "CREATE" && operation != "UPDATE" {
        return Ok(allowed(Map::new()));
    }
    let Some(path) = pod_spec_path(object_kind) else {
        return Ok(allowed(Map::new()));
    };
    let object = match request.get("object") {
        Some(object @ Value::Object(_)) => object,
        _ => return Err(malformed(format!("request.object must be an object for {operation}"))),
    };
    let namespace = match string_field(request, "namespace", "request.")? {
        Some(namespace) => namespace,
        None => object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
    };
    if !namespace.is_empty() && policy.namespace_exempt(namespace) {
        return Ok(allowed(Map::new()));
    }
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let found = images(object, path)?;
    let distinct: std::collections::BTreeSet<&str> = found.iter().map(|item| item.image.as_str()).collect();
    if distinct.len() > MAX_IMAGES_PER_REVIEW {
        // Each image may cost a round trip to the trust server: an object naming thousands of them would hold the
        // webhook past the API server's timeout. No real workload comes near the limit.
        let message = format!(
            "the {object_kind} names {} distinct images; at most {MAX_IMAGES_PER_REVIEW} are verified in one review",
            distinct.len()
        );
        let mut extra = Map::new();
        extra.insert("status".to_owned(), json!({"code": 403, "message": message}));
        return Ok(respond(uid, false, extra));
    }

    // Each distinct image is judged once.
    let mut judged: BTreeMap<&str, (Option<ImageRef>, Judgement)> = BTreeMap::new();
    for item in &found {
        if judged.contains_key(item.image.as_str()) {
            continue;
        }
        let entry = match ImageRef::parse(&item.image) {
            Ok(image) => {
                let judgement = gate::judge(&image, policy, verifier).await;
                (Some(image), judgement)
            }
            Err(error) => {
                let failure = Failure {
                    rule: format!("mode {} by content-trust.mode", policy.mode()),
                    reason: format!("not a valid image reference: {error}"),
                    untrusted: false,
                };
                (None, gate::under_mode(policy.mode(), failure))
            }
        };
        judged.insert(&item.image, entry);
    }

    let mut denials = Vec::new();
    let mut warnings = Vec::new();
    for (image, (_, judgement)) in &judged {
        match judgement {
            Judgement::Denied(failure) => denials.push(format!("{image}: {} ({})", failure.reason, failure.rule)),
            Judgement::Warned(failure) => {
                tracing::warn!(
                    target: "tufa::audit",
                    uid,
                    namespace,
                    kind = object_kind,
                    name,
                    operation,
                    image = *image,
                    rule = failure.rule.as_str(),
                    reason = failure.reason.as_str(),
                    "admitted an image that failed its checks"
                );
                warnings.push(format!("{image}: {} ({})", failure.reason, failure.rule));
            }
            Judgement::Skipped(_) | Judgement::Trusted(_) => {}
        }
    }
    let mut extra = Map::new();
    if !warnings.is_empty() {
        // The API server writes `auditAnnotations` into its own audit log, under the webhook's name: the
        // record of every untrusted image a permissive rule let in, kept where cluster auditors already look.
        extra.insert("auditAnnotations".to_owned(), json!({AUDIT_ANNOTATION: warnings.join("; ")}));
        extra.insert("warnings".to_owned(), json!(warnings));
    }
    if !denials.is_empty() {
        extra.insert("status".to_owned(), json!({"code": 403, "message": denials.join("; ")}));
        return Ok(respond(uid, false, extra));
    }
    if kind == ReviewKind::Mutate {
        let mut patch = Vec::new();
        for item in &found {
            if let Some((Some(image), Judgement::Trusted(verdict))) = judged.get(item.image.as_str())
                && image.digest().is_none()
                && let Some(digest) = &verdict.digest
            {
                patch
                    .push(json!({"op": "replace", "path": item.pointer, "value": format!("{}@{digest}", image.gun())}));
            }
        }
        if !patch.is_empty() {
            let bytes = serde_json::to_vec(&Value::Array(patch)).map_err(|error| malformed(error.to_string()))?;
            extra.insert("patchType".to_owned(), json!("JSONPatch"));
            extra.insert("patch".to_owned(), json!(base64::engine::general_purpose::STANDARD.encode(bytes)));
        }
    }
    Ok(respond(uid, true, extra))
}

/// The AdmissionReview answer for `uid`.
fn respond(uid: &str, allowed: bool, extra: Map<String, Value>) -> Vec<u8> {
    let mut response = Map::new();
    response.insert("uid".to_owned(), json!(uid));
    response.insert("allowed".to_owned(), json!(allowed));
    response.extend(extra);
    let document = json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response});
    // Serialising a `Value` cannot fail; the fallback keeps the function total.
    serde_json::to_vec(&document).unwrap_or_default()
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
