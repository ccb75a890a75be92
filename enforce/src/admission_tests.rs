//! Tests of the admission review over recorded AdmissionReview bodies (`tests/data/admission/`), one per kind.

use serde_json::json;

use super::*;
use crate::testing::{APP_V1, FLAKY_ERROR, NGINX, SIDECAR, TestVerifier, V2_REASON, data, policy};

/// Runs a recorded review; returns the response (with `patch` decoded into JSON) and the images verified.
async fn run(name: &str, kind: ReviewKind) -> (Value, Vec<String>) {
    let verifier = TestVerifier::new();
    let body = data(&format!("admission/{name}.json"));
    let answer = review(&body, kind, &policy(), &verifier).await.unwrap();
    let mut document: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(document["apiVersion"], json!("admission.k8s.io/v1"), "{name}");
    assert_eq!(document["kind"], json!("AdmissionReview"), "{name}");
    let mut response = document["response"].take();
    if let Some(Value::String(patch)) = response.get("patch") {
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        response["patch"] = serde_json::from_slice(&bytes).unwrap();
    }
    let asked = verifier.asked.lock().unwrap().clone();
    (response, asked)
}

fn replace(path: &str, value: &str) -> Value {
    json!({"op": "replace", "path": path, "value": value})
}

fn patched(uid: &str, ops: Vec<Value>) -> Value {
    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": ops})
}

fn denied(uid: &str, message: &str) -> Value {
    json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": message}})
}

fn app() -> String {
    format!("registry.example.com/team/app@{APP_V1}")
}

fn sidecar() -> String {
    format!("registry.example.com/team/sidecar@{SIDECAR}")
}

fn nginx() -> String {
    format!("docker.io/library/nginx@{NGINX}")
}

#[tokio::test]
async fn pod_with_init_containers() {
    let uid = "b3c1d7a2-5e7f-4c59-93a4-0d7e0f1c2a11";
    let (validated, asked) = run("pod_create", ReviewKind::Validate).await;
    assert_eq!(validated, json!({"uid": uid, "allowed": true}));
    // Each image is verified once, in the order of the containers.
    assert_eq!(
        asked,
        vec![
            "registry.example.com/team/app:v1",
            "registry.example.com/team/sidecar:1.4",
            "docker.io/library/nginx:1.25"
        ]
    );
    let (mutated, _) = run("pod_create", ReviewKind::Mutate).await;
    assert_eq!(
        mutated,
        patched(
            uid,
            vec![
                replace("/spec/containers/0/image", &app()),
                replace("/spec/containers/1/image", &sidecar()),
                replace("/spec/initContainers/0/image", &nginx()),
            ]
        )
    );
}

#[tokio::test]
async fn untrusted_and_disallowed_images_are_denied_by_both_webhooks() {
    let uid = "c9a3a0a4-0f0e-4e0c-a5e4-7d5a8c1c6b22";
    let message = format!(
        "quay.io/evil/miner:latest: registry quay.io is not in registries.allowed (mode enforced by \
         content-trust.mode); \
         registry.example.com/team/app:v2: {V2_REASON} (mode enforced by content-trust.mode)"
    );
    for kind in [ReviewKind::Validate, ReviewKind::Mutate] {
        assert_eq!(run("pod_untrusted", kind).await.0, denied(uid, &message), "{kind:?}");
    }
}

#[tokio::test]
async fn permissive_admits_with_a_warning() {
    let uid = "0f3b2a8e-3d11-4b6b-8f0a-9c2d1e4f5a33";
    let warning = "registry.example.com/lab/exp:latest: no trust data for registry.example.com/lab/exp (mode \
                   permissive by rule \"registry.example.com/lab/*\")";
    assert_eq!(
        run("pod_permissive", ReviewKind::Validate).await.0,
        json!({"uid": uid, "allowed": true, "warnings": [warning],
            "auditAnnotations": {"admitted-untrusted-images": warning}})
    );
    assert_eq!(
        run("pod_permissive", ReviewKind::Mutate).await.0,
        json!({"uid": uid, "allowed": true, "warnings": [warning], "patchType": "JSONPatch",
            "auditAnnotations": {"admitted-untrusted-images": warning},
            "patch": [replace("/spec/containers/1/image", &app())]})
    );
}

#[tokio::test]
async fn exempt_namespace_other_operations_and_kinds() {
    let (answer, asked) = run("pod_kube_system", ReviewKind::Mutate).await;
    assert_eq!((answer, asked), (json!({"uid": "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c44", "allowed": true}), vec![]));
    let (answer, asked) = run("pod_delete", ReviewKind::Validate).await;
    assert_eq!((answer, asked), (json!({"uid": "3f4e5d6c-7b8a-4c9d-8ebf-2a3b4c5d6e66", "allowed": true}), vec![]));
    let (answer, asked) = run("configmap_create", ReviewKind::Validate).await;
    assert_eq!((answer, asked), (json!({"uid": "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4dee", "allowed": true}), vec![]));
}

#[tokio::test]
async fn ephemeral_containers_on_update() {
    let message = "busybox: no trust data for docker.io/library/busybox (mode enforced by content-trust.mode)";
    assert_eq!(
        run("pod_ephemeral_update", ReviewKind::Validate).await.0,
        denied("2e3d4c5b-6a7f-4b8c-9dae-1f2a3b4c5d55", message)
    );
}

#[tokio::test]
async fn workload_kinds() {
    let template = "/spec/template/spec";
    assert_eq!(
        run("deployment_create", ReviewKind::Mutate).await.0,
        patched(
            "4a5b6c7d-8e9f-4a0b-9c1d-3e4f5a6b7c77",
            vec![
                replace(&format!("{template}/containers/0/image"), &app()),
                replace(&format!("{template}/containers/1/image"), &sidecar()),
            ]
        )
    );
    assert_eq!(
        run("statefulset_create", ReviewKind::Mutate).await.0,
        denied(
            "5b6c7d8e-9fa0-4b1c-8d2e-4f5a6b7c8d88",
            &format!("registry.example.com/team/app:v2: {V2_REASON} (mode enforced by content-trust.mode)")
        )
    );
    // The exempt debug image is left as it is; the sidecar is pinned.
    let (answer, asked) = run("daemonset_update", ReviewKind::Mutate).await;
    assert_eq!(
        answer,
        patched(
            "6c7d8e9f-a0b1-4c2d-9e3f-5a6b7c8d9e99",
            vec![replace(&format!("{template}/containers/1/image"), &sidecar())]
        )
    );
    assert_eq!(asked, vec!["registry.example.com/team/sidecar:1.4"]);
    assert_eq!(
        run("replicaset_create", ReviewKind::Validate).await.0,
        denied(
            "7d8e9fa0-b1c2-4d3e-8f4a-6b7c8d9e0faa",
            &format!(
                "registry.example.com/team/flaky:v1: trust could not be decided: {FLAKY_ERROR} \
                 (run-options.fail-open is off)"
            )
        )
    );
    // A reference already pinned by digest is not rewritten.
    assert_eq!(
        run("replicationcontroller_create", ReviewKind::Mutate).await.0,
        patched(
            "8e9fa0b1-c2d3-4e4f-9a5b-7c8d9e0f1abb",
            vec![replace(&format!("{template}/containers/0/image"), &nginx())]
        )
    );
    assert_eq!(
        run("job_create", ReviewKind::Mutate).await.0,
        patched(
            "9fa0b1c2-d3e4-4f5a-8b6c-8d9e0f1a2bcc",
            vec![replace(&format!("{template}/containers/0/image"), &app())]
        )
    );
    let (answer, asked) = run("cronjob_create", ReviewKind::Validate).await;
    assert_eq!(
        answer,
        denied(
            "a0b1c2d3-e4f5-4a6b-9c7d-9e0f1a2b3cdd",
            &format!("registry.example.com/team/app:v2: {V2_REASON} (mode enforced by content-trust.mode)")
        )
    );
    assert_eq!(asked, vec!["registry.example.com/team/app:v2", "registry.example.com/team/sidecar:1.4"]);
}

async fn refused(body: &[u8]) -> ReviewError {
    review(body, ReviewKind::Validate, &policy(), &TestVerifier::new()).await.unwrap_err()
}

#[tokio::test]
async fn malformed_reviews_are_refused() {
    let error = refused(b"{").await;
    assert_eq!(
        (error.status(), error.to_string()),
        (
            400,
            "malformed admission review: the body is not JSON: EOF while parsing an object at line 1 column 1"
                .to_owned()
        )
    );
    let error = refused(&vec![b' '; MAX_REVIEW_BYTES + 1]).await;
    assert_eq!(
        (error.status(), error.to_string()),
        (
            413,
            format!(
                "the admission review is {} bytes long; at most {MAX_REVIEW_BYTES} are accepted",
                MAX_REVIEW_BYTES + 1
            )
        )
    );
    let beta = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#;
    assert_eq!(
        refused(beta).await,
        ReviewError::Malformed(
            "apiVersion \"admission.k8s.io/v1beta1\" is not supported; send admission.k8s.io/v1".into()
        )
    );
    let no_uid = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"kind":"Pod"}}}"#;
    assert_eq!(refused(no_uid).await, ReviewError::Malformed("request.uid is missing".into()));
    let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    assert_eq!(refused(no_request).await, ReviewError::Malformed("request must be an object".into()));
    let bad_containers = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
        "kind":{"kind":"Deployment"},"operation":"CREATE","object":{"spec":{"template":{"spec":{"containers":{}}}}}}}"#;
    assert_eq!(
        refused(bad_containers).await,
        ReviewError::Malformed("/spec/template/spec/containers must be an array".into())
    );
    let bad_image = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
        "kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"initContainers":[{"name":"a","image":5}]}}}}"#;
    assert_eq!(
        refused(bad_image).await,
        ReviewError::Malformed("/spec/initContainers/0/image must be a string".into())
    );
    let no_object = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
        "kind":{"kind":"Pod"},"operation":"CREATE"}}"#;
    assert_eq!(refused(no_object).await, ReviewError::Malformed("request.object must be an object for CREATE".into()));
}

#[tokio::test]
async fn an_invalid_image_reference_is_denied() {
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1",
        "kind":{"kind":"Pod"},"namespace":"team-a","operation":"CREATE",
        "object":{"spec":{"containers":[{"name":"a","image":"Registry.example.com/Team/App"}]}}}}"#;
    let answer = review(body, ReviewKind::Validate, &policy(), &TestVerifier::new()).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap()["response"],
        denied(
            "u-1",
            "Registry.example.com/Team/App: not a valid image reference: repository name \"Team/App\" must be \
             lowercase (mode enforced by content-trust.mode)"
        )
    );
}

#[tokio::test]
async fn an_object_naming_too_many_images_is_denied_unverified() {
    let body = data("admission/pod_permissive.json");
    let mut document: Value = serde_json::from_slice(&body).unwrap();
    let uid = document["request"]["uid"].as_str().unwrap().to_owned();
    let containers: Vec<Value> = (0..=MAX_IMAGES_PER_REVIEW)
        .map(|index| json!({"name": format!("c{index}"), "image": format!("registry.example.com/team/app{index}:v1")}))
        .collect();
    document["request"]["object"]["spec"]["containers"] = Value::Array(containers.clone());
    let verifier = TestVerifier::new();
    let answer = review(&serde_json::to_vec(&document).unwrap(), ReviewKind::Validate, &policy(), &verifier).await;
    let answer: Value = serde_json::from_slice(&answer.unwrap()).unwrap();
    assert_eq!(
        answer["response"],
        denied(&uid, "the Pod names 101 distinct images; at most 100 are verified in one review")
    );
    assert!(verifier.asked.lock().unwrap().is_empty());
    // At the limit, every image is verified.
    document["request"]["object"]["spec"]["containers"] = Value::Array(containers[..MAX_IMAGES_PER_REVIEW].to_vec());
    let verifier = TestVerifier::new();
    review(&serde_json::to_vec(&document).unwrap(), ReviewKind::Validate, &policy(), &verifier).await.unwrap();
    assert_eq!(verifier.asked.lock().unwrap().len(), MAX_IMAGES_PER_REVIEW);
}
