//! Driving the real router in process: one request in, its status, headers and body out, and
//! the multipart body of an update. Shared by the handler and auth tests.
// Each test crate uses a different subset.
#![allow(dead_code, reason = "shared by two test crates, each using part of it")]

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `code` of the first error of a notary error body.
    pub(crate) fn code(&self) -> String {
        self.json().pointer("/errors/0/code").and_then(Value::as_str).unwrap_or_default().to_owned()
    }

    /// The `WWW-Authenticate` header, or empty.
    pub(crate) fn challenge(&self) -> String {
        self.headers.get("www-authenticate").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
    }
}

/// Sends `request` through `app` and reads the whole response.
pub(crate) async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap_or_else(|error| match error {});
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.map(|bytes| bytes.to_vec()).unwrap_or_default();
    Reply { status, headers, body }
}

/// A multipart update body with one part per (role, bytes), and its content type.
pub(crate) fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "tufa-test-boundary";
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
