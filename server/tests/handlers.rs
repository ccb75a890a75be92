//! In-process handler tests: the real router over a real SQLite store and the in-process signer,
//! driven with `oneshot`. Each bad request must get notary's code and a 4xx and change nothing.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

#[path = "../../core/tests/support/repo.rs"]
mod repo;
#[path = "support/router.rs"]
mod router;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{Duration, Utc};
use repo::{GUN, Key, Repo, expires, no_delegations, sign, target};
use router::{Reply, multipart, send};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tufa_core::keys::{Algorithm, PublicKey, sha256};
use tufa_core::metadata::{Signature, Signed, Snapshot, Timestamp};
use tufa_core::update::{Limits, draft_timestamp};
use tufa_server::app::{AppState, HttpSettings, router};
use tufa_server::metrics::Metrics;
use tufa_server::service::{Service, ServiceSettings};
use tufa_server::signing::{LocalSigner, OnlineSignature, OnlineSigner, SealingKey, SignerError};
use tufa_store::{CurrentEntry, Store, Update};

struct Harness {
    app: Router,
    store: Arc<dyn Store>,
    signer: Arc<LocalSigner>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(None).await
}

/// The harness, with `signer` instead of the in-process signer for the service when given.
async fn harness_with(signer_override: Option<Arc<dyn OnlineSigner>>) -> Harness {
    harness_configured(signer_override, 256 * 1024).await
}

/// The harness, with `signer` instead of the in-process signer when given, taking bodies up to `max_body_bytes`.
async fn harness_configured(signer_override: Option<Arc<dyn OnlineSigner>>, max_body_bytes: usize) -> Harness {
    harness_limited(signer_override, max_body_bytes, Limits::default()).await
}

/// [`harness_configured`] with the verifier's `limits`.
async fn harness_limited(
    signer_override: Option<Arc<dyn OnlineSigner>>,
    max_body_bytes: usize,
    limits: Limits,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = tufa_store::open_sqlite(&dir.path().join("tufa.db")).await.unwrap();
    let signer = Arc::new(LocalSigner::new(store.clone(), SealingKey::new("test".into(), &[9; 32]).unwrap()));
    let state = AppState {
        service: Service::new(
            store.clone(),
            signer_override.unwrap_or_else(|| signer.clone()),
            ServiceSettings { key_algorithm: Algorithm::Ecdsa, limits },
        ),
        http: Arc::new(HttpSettings { max_body_bytes, ..HttpSettings::default() }),
        metrics: Arc::new(Metrics::default()),
        auth: Arc::new(tufa_server::auth::Authenticator::None),
    };
    Harness { app: router(state), store, signer, _dir: dir }
}

impl Harness {
    async fn call(&self, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        send(&self.app, builder.body(Body::from(body)).unwrap()).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, Vec::new()).await
    }

    async fn post_files(&self, files: &[(&str, &[u8])]) -> Reply {
        let (content_type, body) = multipart(files);
        self.call(Method::POST, &format!("/v2/{GUN}/_trust/tuf/"), Some(&content_type), body).await
    }

    /// The bodies of the current files of `roles`, as clients read them.
    async fn current(&self, roles: &[&str]) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        for role in roles {
            bodies.push(self.get(&format!("/v2/{GUN}/_trust/tuf/{role}.json")).await.body);
        }
        bodies
    }

    async fn server_key(&self, role: &str) -> PublicKey {
        let reply = self.get(&format!("/v2/{GUN}/_trust/tuf/{role}.key")).await;
        assert_eq!(reply.status, StatusCode::OK);
        PublicKey::from_json(&reply.json()).unwrap()
    }
}

/// A root whose timestamp key (and optionally snapshot key) is held by the server.
async fn root_with_server_keys(harness: &Harness, repo: &Repo, server_snapshot: bool) -> Vec<u8> {
    let timestamp = harness.server_key("timestamp").await;
    let mut body = repo.root_body(1);
    body["keys"][timestamp.key_id()] = timestamp.to_json();
    body["roles"]["timestamp"] = json!({"keyids": [timestamp.key_id()], "threshold": 1});
    if server_snapshot {
        let snapshot = harness.server_key("snapshot").await;
        body["keys"][snapshot.key_id()] = snapshot.to_json();
        body["roles"]["snapshot"] = json!({"keyids": [snapshot.key_id()], "threshold": 1});
    }
    sign(&body, &[&repo.root_key])
}

/// Publishes root v1, targets v2 and a client snapshot v2; returns (root, targets, snapshot).
async fn first_publish(harness: &Harness, repo: &Repo) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let root = root_with_server_keys(harness, repo, false).await;
    let targets = repo.targets(2, json!({"v1": target(b"hello")}), no_delegations());
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    let reply = harness.post_files(&[("targets", &targets), ("root", &root), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    (root, targets, snapshot)
}

fn parse_timestamp(bytes: &[u8]) -> (Signed<'_>, Timestamp) {
    let signed = Signed::parse(bytes).unwrap();
    let timestamp = Timestamp::from_signed(&signed).unwrap();
    (signed, timestamp)
}

#[tokio::test]
async fn ping_health_and_unknown_routes() {
    let harness = harness().await;
    let reply = harness.get("/v2/").await;
    assert_eq!((reply.status, reply.body.as_slice()), (StatusCode::OK, b"{}".as_slice()));
    assert_eq!(harness.get("/_notary_server/health").await.status, StatusCode::OK);
    let reply = harness.get("/nothing/here").await;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "METADATA_NOT_FOUND".into()));
    assert_eq!(
        reply.json(),
        json!({"errors": [{"code": "METADATA_NOT_FOUND", "message": "You have requested metadata that does not exist."}]})
    );
    let reply = harness.call(Method::PATCH, "/v2/", None, Vec::new()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = harness.get(&format!("/v2/{GUN}/_trust/tuf/root.json")).await;
    assert_eq!((reply.status, reply.json()["errors"][0]["detail"].clone()), (StatusCode::NOT_FOUND, json!({})));
    assert_eq!(reply.headers["content-type"], "application/json; charset=utf-8");
    let metrics = harness.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("tufa_http_requests_total{operation=\"GetRole\",code=\"404\"} 1"), "{text}");
}

/// A signer that is down: every call fails with internal detail a client must never see.
struct DownSigner;

const DOWN_DETAIL: &str = "tcp connect to 10.1.2.3:7899 refused (internal detail)";

#[async_trait::async_trait]
impl OnlineSigner for DownSigner {
    async fn create_key(
        &self,
        _gun: &tufa_core::names::Gun,
        _role: tufa_core::names::BaseRole,
        _algorithm: Algorithm,
    ) -> Result<PublicKey, SignerError> {
        Err(SignerError::Unavailable(DOWN_DETAIL.into()))
    }

    async fn public_key(&self, _key_id: &str) -> Result<Option<PublicKey>, SignerError> {
        Err(SignerError::Unavailable(DOWN_DETAIL.into()))
    }

    async fn sign(&self, _key_id: &str, _message: &[u8]) -> Result<OnlineSignature, SignerError> {
        Err(SignerError::Unavailable(DOWN_DETAIL.into()))
    }

    async fn health(&self) -> Result<(), SignerError> {
        Err(SignerError::Unavailable(DOWN_DETAIL.into()))
    }
}

#[tokio::test]
async fn health_names_the_failing_check_without_its_error_text() {
    let harness = harness_with(Some(Arc::new(DownSigner))).await;
    let reply = harness.get("/_notary_server/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, br#"{"Trust operational":"unavailable"}"#);
    assert_eq!(reply.headers["content-type"], "application/json; charset=utf-8");
}

#[tokio::test]
async fn publish_serves_exact_bytes_and_a_server_signed_timestamp() {
    let harness = harness().await;
    let repo = Repo::new();
    let (root, targets, snapshot) = first_publish(&harness, &repo).await;
    let base = format!("/v2/{GUN}/_trust/tuf");
    assert_eq!(harness.get(&format!("{base}/root.json")).await.body, root);
    assert_eq!(harness.get(&format!("{base}/targets.json")).await.body, targets);
    assert_eq!(harness.get(&format!("{base}/1.root.json")).await.body, root);
    assert_eq!(harness.get(&format!("{base}/2.targets.json")).await.body, targets);
    let by_hash = harness.get(&format!("{base}/snapshot.{}.json", hex::encode(sha256(&snapshot)))).await;
    assert_eq!(by_hash.body, snapshot);
    assert_eq!(by_hash.headers["cache-control"], "public, max-age=2592000, s-maxage=2592000");
    let current = harness.get(&format!("{base}/timestamp.json")).await;
    assert_eq!(current.headers["cache-control"], "public, max-age=300, s-maxage=300, must-revalidate");
    let (signed, timestamp) = parse_timestamp(&current.body);
    assert_eq!(timestamp.version, 1);
    assert!(timestamp.snapshot.matches(&snapshot), "timestamp must hash the exact snapshot bytes");
    let key = harness.server_key("timestamp").await;
    let signature = &signed.signatures()[0];
    assert_eq!(signature.keyid, key.key_id());
    key.verify(&signature.method, signed.canonical(), &signature.sig).unwrap();
    // After publishing, the key GET returns the key the root lists, not a new one.
    assert_eq!(harness.server_key("timestamp").await, key);
    let feed = harness.get("/v2/_trust/changefeed?records=10").await.json();
    assert_eq!(feed["count"], 1);
    assert_eq!(feed["records"][0]["Category"], "update");
    assert_eq!(feed["records"][0]["SHA256"], hex::encode(sha256(&current.body)));
}

#[tokio::test]
async fn server_generates_the_snapshot_when_it_holds_the_key() {
    let harness = harness().await;
    let repo = Repo::new();
    let root = root_with_server_keys(&harness, &repo, true).await;
    let targets = repo.targets(2, json!({}), no_delegations());
    let reply = harness.post_files(&[("root", &root), ("targets", &targets)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let snapshot = harness.get(&format!("/v2/{GUN}/_trust/tuf/snapshot.json")).await.body;
    let parsed = Snapshot::from_signed(&Signed::parse(&snapshot).unwrap()).unwrap();
    assert!(parsed.meta["targets"].matches(&targets));
    assert!(parsed.meta["root"].matches(&root));
    // An empty update bumps snapshot and timestamp.
    let reply = harness.post_files(&[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let again = harness.get(&format!("/v2/{GUN}/_trust/tuf/snapshot.json")).await.body;
    assert_eq!(Snapshot::from_signed(&Signed::parse(&again).unwrap()).unwrap().version, parsed.version + 1);
}

#[tokio::test]
async fn without_the_snapshot_key_a_snapshot_is_required() {
    let harness = harness().await;
    let repo = Repo::new();
    let root = root_with_server_keys(&harness, &repo, false).await;
    let targets = repo.targets(2, json!({}), no_delegations());
    let reply = harness.post_files(&[("root", &root), ("targets", &targets)]).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
    assert_eq!(reply.json()["errors"][0]["detail"]["Name"], "ErrBadHierarchy");
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/root.json")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_get_notary_codes_and_change_nothing() {
    let harness = harness().await;
    let repo = Repo::new();
    let (root, targets, _) = first_publish(&harness, &repo).await;
    let same_version_snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    let timestamp_path = format!("/v2/{GUN}/_trust/tuf/timestamp.json");
    let before = harness.get(&timestamp_path).await.body;
    let update_path = format!("/v2/{GUN}/_trust/tuf/");
    let tampered = String::from_utf8(repo.targets(3, json!({"v": target(b"x")}), no_delegations()))
        .unwrap()
        .replacen("\"length\":1", "\"length\":7", 1)
        .into_bytes();
    let wrong_key = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30), "targets": {}, "version": 3}),
        &[&repo.snapshot],
    );
    let multipart_type = Some("multipart/form-data; boundary=x");
    let cases: Vec<(&str, Option<&str>, Vec<u8>, StatusCode)> = vec![
        ("not multipart", Some("application/json"), b"{}".to_vec(), StatusCode::BAD_REQUEST),
        ("no content type", None, b"{}".to_vec(), StatusCode::BAD_REQUEST),
        ("bad framing", multipart_type, b"garbage".to_vec(), StatusCode::BAD_REQUEST),
        ("too large", multipart_type, vec![b'a'; 300 * 1024], StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (what, content_type, body, status) in cases {
        let reply = harness.call(Method::POST, &update_path, content_type, body).await;
        assert_eq!((reply.status, reply.code()), (status, "MALFORMED_UPLOAD".to_owned()), "{what}");
    }
    let no_name = b"--b\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\n{}\r\n--b--\r\n".to_vec();
    let reply = harness.call(Method::POST, &update_path, Some("multipart/form-data; boundary=b"), no_name).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "NO_FILENAME".into()));
    // (what, role, content, expected code, expected detail name)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, &'a str, Option<&'a str>);
    let file_cases: Vec<Case> = vec![
        ("upper-case role", "targets/Rel", targets.clone(), "INVALID_ROLE", None),
        ("unknown role", "foo", targets.clone(), "INVALID_ROLE", None),
        ("not JSON", "targets", b"not json".to_vec(), "MALFORMED_JSON", None),
        ("tampered", "targets", tampered, "INVALID_UPDATE", Some("ErrBadTargets")),
        ("wrong key", "targets", wrong_key, "INVALID_UPDATE", Some("ErrBadTargets")),
        ("same version again", "snapshot", same_version_snapshot, "VERSION", None),
    ];
    for (what, role, content, code, detail) in file_cases {
        let reply = harness.post_files(&[(role, &content)]).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, code.to_owned()), "{what}");
        if let Some(name) = detail {
            assert_eq!(reply.json()["errors"][0]["detail"]["Name"], name, "{what}");
        }
        assert!(reply.body.len() <= 1024, "{what}: error bodies must fit the 1 KiB clients read");
    }
    let (content_type, body) = multipart(&[("targets", &targets)]);
    let reply = harness.call(Method::POST, "/v2/a/../b/_trust/tuf/", Some(&content_type), body).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_GUN".into()));
    for query in ["", "?records=", "?records=abc", "?records=1&change_id=x", "?records=99999999999"] {
        let reply = harness.get(&format!("/v2/_trust/changefeed{query}")).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_PARAMETERS".into()), "{query}");
    }
    assert_eq!(harness.get(&timestamp_path).await.body, before, "nothing may change");
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json")).await.body, targets);
}

#[tokio::test]
async fn a_targets_file_no_newer_than_the_stored_one_is_refused_small_or_large() {
    let harness = harness_configured(None, 4 * 1024 * 1024).await;
    let repo = Repo::new();
    let (root, small, _) = first_publish(&harness, &repo).await;
    // A targets file over 256 KiB: its record is read after verification, so its version is checked first.
    let entries: serde_json::Map<String, Value> =
        (0..3000).map(|index| (format!("release/v{index}"), target(format!("content {index}").as_bytes()))).collect();
    let large = repo.targets(3, Value::Object(entries), no_delegations());
    assert!(large.len() > 256 * 1024, "{}", large.len());
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &large)]);
    let reply = harness.post_files(&[("targets", &large), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let timestamp_path = format!("/v2/{GUN}/_trust/tuf/timestamp.json");
    let before = harness.get(&timestamp_path).await.body;
    let log_before = harness.store.audit_size().await.unwrap();
    for (what, targets, version) in [("large", &large, 4), ("small", &small, 5)] {
        let snapshot = repo.snapshot(version, &[("root", &root), ("targets", targets)]);
        let reply = harness.post_files(&[("targets", targets), ("snapshot", &snapshot)]).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "VERSION".to_owned()), "{what}");
    }
    assert_eq!(harness.get(&timestamp_path).await.body, before, "nothing may change");
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json")).await.body, large);
    assert_eq!(harness.store.audit_size().await.unwrap(), log_before, "a refused update has no record");
}

#[tokio::test]
async fn concurrent_publishes_have_exactly_one_winner() {
    let harness = Arc::new(harness().await);
    let repo = Arc::new(Repo::new());
    let (root, _, _) = first_publish(&harness, &repo).await;
    let mut tasks = Vec::new();
    for index in 0..6_u8 {
        let (harness, repo, root) = (harness.clone(), repo.clone(), root.clone());
        tasks.push(tokio::spawn(async move {
            let targets = repo.targets(3, json!({ format!("t{index}"): target(&[index]) }), no_delegations());
            let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets)]);
            let reply = harness.post_files(&[("targets", &targets), ("snapshot", &snapshot)]).await;
            (reply.status, reply.code(), targets)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (status, code, targets) = task.await.unwrap();
        match status {
            StatusCode::OK => winners.push(targets),
            StatusCode::BAD_REQUEST => assert_eq!(code, "VERSION"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json")).await.body, winners[0]);
    let (_, timestamp) = parse_timestamp(&harness.get(&format!("/v2/{GUN}/_trust/tuf/timestamp.json")).await.body);
    assert_eq!(timestamp.version, 2);
}

/// Replaces the current timestamp of `GUN` with one the server's key signed as if at `signed_at`
/// (so it expires 14 days after that); returns it.
async fn store_timestamp_signed_at(
    harness: &Harness,
    snapshot: &[u8],
    signed_at: chrono::DateTime<Utc>,
) -> tufa_core::update::NewFile {
    let current = harness.store.current_all(GUN).await.unwrap();
    let stored = current.iter().find(|file| file.role == "timestamp").unwrap();
    let key = harness.server_key("timestamp").await;
    let draft = draft_timestamp(Some(&stored.data), snapshot, signed_at).unwrap();
    let signature = harness.signer.sign(&key.key_id(), &draft.canonical).await.unwrap();
    let expired = draft.finish(&[Signature { keyid: key.key_id(), method: signature.method, sig: signature.bytes }]);
    let entries = current
        .iter()
        .filter(|file| file.role != "timestamp")
        .map(|file| CurrentEntry { role: file.role.clone(), sha256: file.sha256.clone() })
        .chain([CurrentEntry { role: "timestamp".into(), sha256: expired.sha256_hex() }])
        .collect();
    harness
        .store
        .update(Update {
            gun: GUN.into(),
            files: vec![tufa_store::NewFile {
                role: "timestamp".into(),
                version: expired.version,
                sha256: expired.sha256_hex(),
                data: expired.bytes.clone(),
                expires: Some(expired.expires),
            }],
            current: entries,
            expected_timestamp_version: Some(stored.version),
            record: test_record(),
        })
        .await
        .unwrap();
    expired
}

#[tokio::test]
async fn an_expired_timestamp_is_re_signed_on_read() {
    let harness = harness().await;
    let repo = Repo::new();
    let (_, _, snapshot) = first_publish(&harness, &repo).await;
    // Store a timestamp that expired yesterday, signed by the server's key.
    let expired = store_timestamp_signed_at(&harness, &snapshot, Utc::now() - Duration::days(15)).await;
    let served = harness.get(&format!("/v2/{GUN}/_trust/tuf/timestamp.json")).await.body;
    let (_, timestamp) = parse_timestamp(&served);
    assert_eq!(timestamp.version, expired.version + 1);
    assert!(timestamp.expires > Utc::now() + Duration::days(13));
    assert!(timestamp.snapshot.matches(&snapshot));
    // A second read serves the same stored bytes: reads do not write when nothing expired.
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/timestamp.json")).await.body, served);
}

/// Posts `files` as an update of `gun`, from `requester` when given.
async fn post_to(harness: &Harness, gun: &str, files: &[(&str, &[u8])]) -> Reply {
    let (content_type, body) = multipart(files);
    harness.call(Method::POST, &format!("/v2/{gun}/_trust/tuf/"), Some(&content_type), body).await
}

#[tokio::test]
async fn a_repository_cannot_borrow_another_repositorys_online_key() {
    let harness = harness().await;
    let victim = Repo::new();
    first_publish(&harness, &victim).await;
    let victim_timestamp = harness.server_key("timestamp").await;
    // The attacker's root lists the victim's timestamp key (anyone can read it).
    let other = "example.com/other";
    let mut attacker = Repo::new();
    attacker.root_key = repo::Key::root(other);
    let mut body = attacker.root_body(1);
    body["keys"][victim_timestamp.key_id()] = victim_timestamp.to_json();
    body["roles"]["timestamp"] = json!({"keyids": [victim_timestamp.key_id()], "threshold": 1});
    let root = sign(&body, &[&attacker.root_key]);
    let targets = attacker.targets(2, json!({"v1": target(b"evil")}), no_delegations());
    let snapshot = attacker.snapshot(2, &[("root", &root), ("targets", &targets)]);
    let reply = post_to(&harness, other, &[("root", &root), ("targets", &targets), ("snapshot", &snapshot)]).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
    assert_eq!(reply.json()["errors"][0]["detail"]["Name"], json!("ErrBadRoot"));
    assert!(harness.store.current_all(other).await.unwrap().is_empty());
    // The victim's key still signs the victim's updates.
    let targets = victim.targets(3, json!({"v2": target(b"good")}), no_delegations());
    let stored_root = harness.store.current(GUN, "root").await.unwrap().unwrap().data;
    let snapshot = victim.snapshot(3, &[("root", &stored_root), ("targets", &targets)]);
    let reply = harness.post_files(&[("targets", &targets), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
}

#[tokio::test]
async fn keys_for_never_published_repositories_are_bounded_per_client_address() {
    use axum::extract::ConnectInfo;
    let harness = harness().await;
    let from = std::net::SocketAddr::from(([10, 0, 0, 1], 40000));
    let cap = tufa_server::service::MAX_PENDING_KEYS_PER_REQUESTER;
    for index in 0..=cap {
        let mut request =
            Request::get(format!("/v2/example.com/probe{index}/_trust/tuf/timestamp.key")).body(Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(from));
        let response = harness.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let pending = harness.store.pending_keys("10.0.0.1").await.unwrap();
    assert_eq!(pending.len(), cap);
    // The oldest was dropped.
    assert_eq!(pending.first().map(|owner| owner.gun.as_str()), Some("example.com/probe1"));
}

#[tokio::test]
async fn the_re_signer_pages_past_repositories_it_cannot_re_sign() {
    use tufa_server::metrics::Metrics;
    let harness = harness().await;
    let victim = Repo::new();
    let (_, _, snapshot) = first_publish(&harness, &victim).await;
    // The victim's timestamp expired a day ago; the server can re-sign it.
    let expired = store_timestamp_signed_at(&harness, &snapshot, Utc::now() - Duration::days(15)).await;
    // Repositories whose timestamp expired earlier and that the server holds no key for: they sort first.
    let past = (Utc::now() - Duration::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for index in 0..3 {
        let gun = format!("blocked.example/repo{index}");
        let repo = Repo::new();
        let root = repo.root(1);
        let targets = repo.targets(1, json!({}), no_delegations());
        let snapshot = repo.snapshot(1, &[("root", &root), ("targets", &targets)]);
        let timestamp = sign(
            &json!({"_type": "Timestamp", "expires": past, "meta": {"snapshot": repo::meta(&snapshot)}, "version": 1}),
            &[&repo.timestamp],
        );
        let file = |role: &str, data: &[u8], expires: Option<chrono::DateTime<Utc>>| tufa_store::NewFile {
            role: role.into(),
            version: 1,
            sha256: hex::encode(sha256(data)),
            data: data.to_vec(),
            expires,
        };
        let files = vec![
            file("root", &root, None),
            file("targets", &targets, None),
            file("snapshot", &snapshot, Some(Utc::now() + Duration::days(300))),
            file("timestamp", &timestamp, Some(Utc::now() - Duration::days(2))),
        ];
        let current =
            files.iter().map(|file| CurrentEntry { role: file.role.clone(), sha256: file.sha256.clone() }).collect();
        harness
            .store
            .update(Update { gun, files, current, expected_timestamp_version: None, record: test_record() })
            .await
            .unwrap();
    }
    let service = Service::new(
        harness.store.clone(),
        harness.signer.clone(),
        ServiceSettings { key_algorithm: Algorithm::Ecdsa, limits: Limits::default() },
    );
    let metrics = Metrics::default();
    let mut warned = std::collections::HashMap::new();
    let window = std::time::Duration::from_secs(24 * 3600);
    tufa_server::run::refresh_round(&service, &metrics, window, 2, &mut warned).await;
    assert_eq!(harness.store.current(GUN, "timestamp").await.unwrap().unwrap().version, expired.version + 1);
    let text = metrics.render();
    assert!(text.contains("tufa_resign_total 1\n"), "{text}");
    assert!(text.contains("tufa_resign_skipped_total 3\n"), "{text}");
    assert_eq!(warned.len(), 3);
    // Another round warns about nobody again.
    tufa_server::run::refresh_round(&service, &metrics, window, 2, &mut warned).await;
    assert_eq!(warned.len(), 3);
    assert!(metrics.render().contains("tufa_resign_skipped_total 6\n"));
}

/// Everything a reader can see of `GUN` and the changefeed, to prove a refused upload changed nothing.
async fn observable(harness: &Harness) -> (Vec<(String, Vec<u8>)>, usize) {
    let files = harness.store.current_all(GUN).await.unwrap().into_iter().map(|file| (file.role, file.data)).collect();
    let changes = harness.store.changefeed(None, 0, 1000).await.unwrap().len();
    (files, changes)
}

/// An envelope whose `signed` member is `text` verbatim, signed over the canonical form of what
/// it reads as (for repeated keys, the last value): what an attacker signs.
fn envelope_around(text: &str, key: &repo::Key) -> Vec<u8> {
    let value: Value = serde_json::from_str(text).unwrap();
    let canonical = tufa_core::canonical::to_canonical(&value).unwrap();
    let signature =
        Signature { keyid: key.id(), method: key.private.method().into(), sig: key.private.sign(&canonical).unwrap() };
    tufa_core::metadata::envelope(text.as_bytes(), &[signature])
}

#[tokio::test]
async fn each_attack_class_gets_its_notary_code_and_changes_nothing() {
    let harness = harness().await;
    let repo = Repo::new();
    first_publish(&harness, &repo).await;
    let before = observable(&harness).await;
    let targets_body = |extra: &str| {
        format!(
            "{{\"_type\":\"Targets\",\"delegations\":{{\"keys\":{{}},\"roles\":[]}},\"expires\":\"{}\",{extra}}}",
            expires(30)
        )
    };
    let ed25519 = tufa_core::keys::PrivateKey::generate(Algorithm::Ed25519).unwrap().public_key();
    let mut mislabelled = ed25519.to_json();
    mislabelled["keytype"] = json!("ecdsa");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "repeated key in signed",
            envelope_around(&targets_body("\"targets\":{},\"targets\":{},\"version\":3"), &repo.targets),
            "MALFORMED_JSON",
        ),
        (
            "case variant beside the real field",
            sign(
                &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30), "version": 3,
                    "targets": {}, "Targets": {"../escape": target(b"x")}}),
                &[&repo.targets],
            ),
            "INVALID_UPDATE",
        ),
        (
            "non-canonical signed",
            envelope_around(&targets_body("\"version\":3,\"targets\":{}"), &repo.targets),
            "MALFORMED_JSON",
        ),
        (
            "version beyond 32 bits",
            sign(
                &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                    "version": 4_294_967_296_i64, "targets": {}}),
                &[&repo.targets],
            ),
            "INVALID_UPDATE",
        ),
        (
            "key type that does not match its bytes",
            repo.targets(
                3,
                json!({}),
                json!({"keys": {ed25519.key_id(): mislabelled},
                    "roles": [{"name": "targets/a", "keyids": [ed25519.key_id()], "threshold": 1, "paths": [""]}]}),
            ),
            "INVALID_UPDATE",
        ),
        (
            "bidi override in a target name",
            repo.targets(3, json!({"release\u{202E}gpj.exe": target(b"x")}), no_delegations()),
            "INVALID_UPDATE",
        ),
        (
            "more delegations than the limit",
            repo.targets(
                3,
                json!({}),
                json!({"keys": {}, "roles": (0..1001)
                    .map(|index| json!({"name": format!("targets/d{index}"), "keyids": [], "threshold": 1, "paths": [""]}))
                    .collect::<Vec<_>>()}),
            ),
            "INVALID_UPDATE",
        ),
        (
            "a body of empty arrays",
            format!("{{\"signed\":{{\"x\":[{}[]]}},\"signatures\":[]}}", "[],".repeat(50_000)).into_bytes(),
            "MALFORMED_JSON",
        ),
        ("nesting beyond the bound", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(), "MALFORMED_JSON"),
    ];
    let mut answers = Vec::new();
    let mut expected = Vec::new();
    for (attack, targets, code) in cases {
        let reply = harness.post_files(&[("targets", &targets)]).await;
        answers.push((attack, reply.status, reply.code()));
        expected.push((attack, StatusCode::BAD_REQUEST, code.to_owned()));
        assert_eq!(observable(&harness).await, before, "{attack} changed what is served");
    }
    assert_eq!(answers, expected);
}

/// An audit record for updates a test writes straight into the store.
fn test_record() -> tufa_store::Record {
    tufa_store::Record::new(tufa_audit::NewEntry::new("publish", serde_json::json!({"test": true})))
}

/// The `delegations` of a targets file that lets `delegate` sign `targets/releases` under `release/`.
fn releases_by(delegate: &Key) -> Value {
    json!({
        "keys": {delegate.id(): delegate.public.to_json()},
        "roles": [{"keyids": [delegate.id()], "name": "targets/releases", "paths": ["release/"], "threshold": 1}]
    })
}

/// An update of one targets file keeps the others current: the delegated file stays current (and
/// unread) when targets alone is updated, and targets, its stored parent, is read to judge the
/// delegated file when that alone is updated.
#[tokio::test]
async fn updates_of_one_targets_file_keep_the_others_current() {
    let harness = harness().await;
    let repo = Repo::new();
    let root = root_with_server_keys(&harness, &repo, false).await;
    let delegate = Key::ecdsa();
    let delegations = releases_by(&delegate);
    let delegated = |version: i64, name: &str| {
        sign(
            &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                    "targets": {name: target(name.as_bytes())}, "version": version}),
            &[&delegate],
        )
    };
    let targets = repo.targets(2, json!({}), delegations.clone());
    let releases = delegated(1, "release/v1");
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    let files: [(&str, &[u8]); 4] =
        [("root", &root), ("targets", &targets), ("targets/releases", &releases), ("snapshot", &snapshot)];
    assert_eq!(harness.post_files(&files).await.status, StatusCode::OK);

    // Targets alone: the snapshot must list the stored delegated file, which stays current.
    let targets = repo.targets(3, json!({"v": target(b"3")}), delegations);
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    let reply = harness.post_files(&[("targets", &targets), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets/releases.json")).await.body, releases);

    // The delegated file alone: its parent is read from the store and holds it to its paths.
    let releases = delegated(2, "release/v2");
    let snapshot = repo.snapshot(4, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    let reply = harness.post_files(&[("targets/releases", &releases), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets/releases.json")).await.body, releases);
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json")).await.body, targets);
    let outside = delegated(3, "other/v3");
    let snapshot = repo.snapshot(5, &[("root", &root), ("targets", &targets), ("targets/releases", &outside)]);
    let reply = harness.post_files(&[("targets/releases", &outside), ("snapshot", &snapshot)]).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
}

/// What one update may touch is bounded by the targets its files list and those the stored files
/// it replaces list, and by the stored files' size: a small upload that empties large stored
/// files is refused before the server reads or removes what they hold, and changes nothing.
#[tokio::test]
async fn an_update_may_touch_only_so_many_stored_and_uploaded_targets() {
    let limits = Limits { max_targets: 3, max_upload_targets: 6, ..Limits::default() };
    let harness = harness_limited(None, 256 * 1024, limits).await;
    let repo = Repo::new();
    let root = root_with_server_keys(&harness, &repo, false).await;
    let delegate = Key::ecdsa();
    let parts = ["targets/a", "targets/b", "targets/c"];
    let roles: Vec<Value> = parts
        .iter()
        .map(|part| {
            let paths = [format!("{}/", part.trim_start_matches("targets/"))];
            json!({"keyids": [delegate.id()], "name": part, "paths": paths, "threshold": 1})
        })
        .collect();
    let targets =
        repo.targets(2, json!({}), json!({"keys": {delegate.id(): delegate.public.to_json()}, "roles": roles}));
    let delegated = |part: &str, version: i64, count: usize| {
        let prefix = part.trim_start_matches("targets/");
        let entries: serde_json::Map<String, Value> =
            (0..count).map(|index| (format!("{prefix}/v{index}"), target(&[index as u8]))).collect();
        sign(
            &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                    "targets": entries, "version": version}),
            &[&delegate],
        )
    };
    let full: Vec<Vec<u8>> = parts.iter().map(|part| delegated(part, 1, 3)).collect();
    let mut listed: Vec<(&str, &[u8])> = vec![("root", &root), ("targets", &targets)];
    let snapshot = repo.snapshot(2, &listed);
    let reply = harness.post_files(&[("root", &root), ("targets", &targets), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    // Three files of three targets, one at a time: each update is within the limits.
    for (index, (part, bytes)) in parts.iter().zip(&full).enumerate() {
        listed.push((part, bytes.as_slice()));
        let snapshot = repo.snapshot(3 + index as i64, &listed);
        let reply = harness.post_files(&[(part, bytes), ("snapshot", &snapshot)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    }
    let roles: Vec<&str> = ["targets", "snapshot", "timestamp"].into_iter().chain(parts).collect();
    let before = harness.current(&roles).await;
    let refused = |reply: &Reply, what: &str| {
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains(what), "{body}");
    };

    // All three again in one upload: 9 targets uploaded. Then all three emptied by one small
    // upload: nothing uploaded, but 9 stored targets replaced.
    let more: Vec<Vec<u8>> = parts.iter().map(|part| delegated(part, 2, 3)).collect();
    let empty: Vec<Vec<u8>> = parts.iter().map(|part| delegated(part, 2, 0)).collect();
    let cases = [
        (&more, "the uploaded files' targets: 9 is more than the limit max_upload_targets = 6"),
        (&empty, "the stored files they replace 9: 9 is more than the limit max_upload_targets = 6"),
    ];
    for (contents, what) in cases {
        let files: Vec<(&str, &[u8])> = parts.iter().copied().zip(contents.iter().map(Vec::as_slice)).collect();
        let snapshot = repo.snapshot(6, &[&listed[..2], &files[..]].concat());
        let mut upload = files;
        upload.push(("snapshot", &snapshot));
        refused(&harness.post_files(&upload).await, what);
        assert_eq!(harness.current(&roles).await, before);
    }
    let files: Vec<(&str, &[u8])> = parts.iter().copied().zip(empty.iter().map(Vec::as_slice)).collect();

    // Two of them: six targets replaced, within the limit.
    let mut upload = files[..2].to_vec();
    let snapshot = repo.snapshot(6, &[&listed[..2], &files[..2], &listed[4..]].concat());
    upload.push(("snapshot", &snapshot));
    let reply = harness.post_files(&upload).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets/a.json")).await.body, empty[0]);
}

/// The stored files an update replaces are read whole, so their size is bounded before they are
/// read: over it, the update is refused and changes nothing.
#[tokio::test]
async fn an_update_may_replace_only_so_many_stored_bytes() {
    let repo = Repo::new();
    // The first publish replaces nothing; the next replaces its targets file, of about 500 bytes.
    let limits = Limits { max_replaced_bytes: 100, ..Limits::default() };
    let harness = harness_limited(None, 256 * 1024, limits).await;
    let (root, targets, _) = first_publish(&harness, &repo).await;
    let before = harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json")).await.body;
    assert_eq!(before, targets);
    let newer = repo.targets(3, json!({}), no_delegations());
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &newer)]);
    let reply = harness.post_files(&[("targets", &newer), ("snapshot", &snapshot)]).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains(&format!("hold {} bytes, more than the limit of 100 bytes", targets.len())), "{body}");
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json")).await.body, before);
}

/// An update leaves the current files it does not replace unread when its snapshot lists them as
/// the stored snapshot did; an entry it lists otherwise is checked against the stored bytes:
/// accepted when it still describes them (fewer hashes), refused when it does not, and the
/// refusal changes nothing.
#[tokio::test]
async fn entries_for_files_an_update_leaves_alone_are_checked_however_they_are_written() {
    let harness = harness().await;
    let repo = Repo::new();
    let root = root_with_server_keys(&harness, &repo, false).await;
    let delegate = Key::ecdsa();
    let delegations = releases_by(&delegate);
    let releases = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                "targets": {"release/v1": target(b"v1")}, "version": 1}),
        &[&delegate],
    );
    let targets = repo.targets(2, json!({}), delegations.clone());
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets), ("targets/releases", &releases)]);
    let files: [(&str, &[u8]); 4] =
        [("root", &root), ("targets", &targets), ("targets/releases", &releases), ("snapshot", &snapshot)];
    assert_eq!(harness.post_files(&files).await.status, StatusCode::OK);
    let releases_path = format!("/v2/{GUN}/_trust/tuf/targets/releases.json");

    // The delegated file listed with its SHA-256 alone: not the stored snapshot's entry, so it is
    // checked on the stored bytes, and still describes them.
    let sha256_only = |bytes: &[u8], length: usize| {
        let mut entry = repo::meta(bytes);
        entry["hashes"].as_object_mut().unwrap().remove("sha512");
        entry["length"] = json!(length);
        entry
    };
    let snapshot_with = |version: i64, targets: &[u8], releases_entry: Value| {
        sign(
            &json!({"_type": "Snapshot", "expires": expires(30), "version": version, "meta": {
                "root": repo::meta(&root), "targets": repo::meta(targets), "targets/releases": releases_entry}}),
            &[&repo.snapshot],
        )
    };
    let targets = repo.targets(3, json!({"v": target(b"3")}), delegations.clone());
    let snapshot = snapshot_with(3, &targets, sha256_only(&releases, releases.len()));
    let reply = harness.post_files(&[("targets", &targets), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(harness.get(&releases_path).await.body, releases);
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/snapshot.json")).await.body, snapshot);

    // An entry that does not describe the stored file is refused, and nothing changes.
    let before = harness.current(&["targets", "snapshot", "timestamp", "targets/releases"]).await;
    let newer = repo.targets(4, json!({"v": target(b"4")}), delegations);
    let wrong = snapshot_with(4, &newer, sha256_only(&releases, releases.len() + 1));
    let reply = harness.post_files(&[("targets", &newer), ("snapshot", &wrong)]).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
    assert!(
        String::from_utf8_lossy(&reply.body).contains("targets/releases"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(harness.current(&["targets", "snapshot", "timestamp", "targets/releases"]).await, before);

    // Listed as the stored snapshot lists it (the usual case): left unread, and still current.
    let stored_entry = sha256_only(&releases, releases.len());
    let snapshot = snapshot_with(4, &newer, stored_entry);
    let reply = harness.post_files(&[("targets", &newer), ("snapshot", &snapshot)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(harness.get(&releases_path).await.body, releases);
}

/// A current file that the stored snapshot does not describe (a state no update of this server
/// makes, but an imported or hand-edited database may hold) is judged as reading it would judge
/// it: a new snapshot that repeats the stored entry is refused, one that describes the file is
/// accepted.
#[tokio::test]
async fn a_current_file_the_stored_snapshot_does_not_describe_is_judged_on_its_bytes() {
    let harness = harness().await;
    let repo = Repo::new();
    let root = root_with_server_keys(&harness, &repo, false).await;
    let delegate = Key::ecdsa();
    let delegations = releases_by(&delegate);
    let releases = |version: i64| {
        sign(
            &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(30),
                    "targets": {format!("release/v{version}"): target(b"v")}, "version": version}),
            &[&delegate],
        )
    };
    let (first, second) = (releases(1), releases(2));
    let targets = repo.targets(2, json!({}), delegations.clone());
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets), ("targets/releases", &first)]);
    let files: [(&str, &[u8]); 4] =
        [("root", &root), ("targets", &targets), ("targets/releases", &first), ("snapshot", &snapshot)];
    assert_eq!(harness.post_files(&files).await.status, StatusCode::OK);

    // Behind the server's back: the second version of the delegated file made current, the
    // snapshot still listing the first.
    let current = harness.store.current_all(GUN).await.unwrap();
    let timestamp = current.iter().find(|file| file.role == "timestamp").unwrap().version;
    let second_sha256 = hex::encode(sha256(&second));
    let entries = current
        .iter()
        .map(|file| CurrentEntry {
            role: file.role.clone(),
            sha256: if file.role == "targets/releases" { second_sha256.clone() } else { file.sha256.clone() },
        })
        .collect();
    let file = tufa_store::NewFile {
        role: "targets/releases".into(),
        version: 2,
        sha256: second_sha256,
        data: second.clone(),
        expires: None,
    };
    let update = Update {
        gun: GUN.into(),
        files: vec![file],
        current: entries,
        expected_timestamp_version: Some(timestamp),
        record: test_record(),
    };
    harness.store.update(update).await.unwrap();

    let newer = repo.targets(3, json!({"v": target(b"3")}), delegations);
    let repeating = repo.snapshot(3, &[("root", &root), ("targets", &newer), ("targets/releases", &first)]);
    let reply = harness.post_files(&[("targets", &newer), ("snapshot", &repeating)]).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "INVALID_UPDATE".into()));
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains("snapshot lists targets/releases metadata that the server does not have"), "{body}");

    let describing = repo.snapshot(3, &[("root", &root), ("targets", &newer), ("targets/releases", &second)]);
    let reply = harness.post_files(&[("targets", &newer), ("snapshot", &describing)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets/releases.json")).await.body, second);
}
