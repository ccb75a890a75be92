//! In-process tests of the server-wide upload bounds through the real router: an upload that
//! cannot get buffer space in time is refused with `503 UNAVAILABLE` and changes nothing, and the
//! space comes back when the upload holding it goes away.
#![expect(clippy::unwrap_used, reason = "test helpers fail by panicking")]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{Request, StatusCode};
use hyper::body::Frame;
use tower::ServiceExt as _;
use tufa_core::keys::Algorithm;
use tufa_core::update::Limits;
use tufa_server::app::{AppState, HttpSettings, router};
use tufa_server::metrics::Metrics;
use tufa_server::service::{Service, ServiceSettings};
use tufa_server::signing::{LocalSigner, SealingKey};
use tufa_server::upload::UploadGate;
use tufa_store::Store;

const GUN: &str = "tufa.test/uploads";

/// A body that delivers its first bytes and then nothing more: an upload stuck mid-transfer.
struct Stuck(Option<Bytes>);

impl hyper::body::Body for Stuck {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Poll::Pending,
        }
    }
}

async fn app(gate: UploadGate) -> (Router, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = tufa_store::open_sqlite(&dir.path().join("tufa.db")).await.unwrap();
    let signer = Arc::new(LocalSigner::new(store.clone(), SealingKey::new("test".into(), &[9; 32]).unwrap()));
    let state = AppState {
        service: Service::new(
            store.clone(),
            signer,
            ServiceSettings { key_algorithm: Algorithm::Ecdsa, limits: Limits::default() },
        ),
        http: Arc::new(HttpSettings { max_body_bytes: 1000, uploads: gate, ..HttpSettings::default() }),
        metrics: Arc::new(Metrics::default()),
        auth: Arc::new(tufa_server::auth::Authenticator::None),
    };
    (router(state), store, dir)
}

fn upload(length: usize, body: Body) -> Request<Body> {
    Request::post(format!("/v2/{GUN}/_trust/tuf/"))
        .header("content-type", "multipart/form-data; boundary=b")
        .header("content-length", length.to_string())
        .body(body)
        .unwrap()
}

/// A complete multipart body of exactly `length` bytes whose one part is not JSON.
fn garbage(length: usize) -> Vec<u8> {
    let head = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"targets\"\r\n\r\n";
    let tail = b"\r\n--b--\r\n";
    let mut body = head.to_vec();
    body.resize(length - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

async fn reply(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn an_upload_without_buffer_space_gets_503_until_the_space_is_free() {
    let (app, store, _dir) = app(UploadGate::new(4, 1500, Duration::from_millis(100))).await;
    // One upload declares 1000 bytes, sends 900 and stalls, holding 1000 of the 1500 bytes.
    let stuck = tokio::spawn({
        let app = app.clone();
        async move { app.oneshot(upload(1000, Body::new(Stuck(Some(Bytes::from(vec![b'-'; 900])))))).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (status, body) = reply(&app, upload(800, Body::from(garbage(800)))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    // A smaller upload still fits beside the stuck one and is read and judged.
    let (status, body) = reply(&app, upload(500, Body::from(garbage(500)))).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_JSON")));

    // The stuck upload goes away (its client disconnects); its space is free again.
    stuck.abort();
    let _ = stuck.await;
    let (status, body) = reply(&app, upload(800, Body::from(garbage(800)))).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_JSON")));
    assert!(store.current_all(GUN).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_declared_length_alone_holds_no_buffer_space() {
    let (app, _store, _dir) = app(UploadGate::new(4, 1000, Duration::from_millis(100))).await;
    // A client declares the largest body and sends nothing.
    let silent = tokio::spawn({
        let app = app.clone();
        async move { app.oneshot(upload(1000, Body::new(Stuck(None)))).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = reply(&app, upload(1000, Body::from(garbage(1000)))).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_JSON")));
    silent.abort();
}

#[tokio::test]
async fn an_upload_over_the_body_limit_is_refused_before_it_is_buffered() {
    // The budget is smaller than the declared length, so only the limit check can answer at once.
    let (app, _store, _dir) = app(UploadGate::new(4, 1000, Duration::from_secs(30))).await;
    let started = std::time::Instant::now();
    let (status, body) = reply(&app, upload(5000, Body::new(Stuck(None)))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["errors"][0]["detail"], "request body exceeds the limit of 1000 bytes");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
