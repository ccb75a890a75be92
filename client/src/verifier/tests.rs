//! Tests of the verifier against a small in-process HTTP server that serves repositories built
//! in the test and records every request: the shared fetch, the cache, the timestamp refresh,
//! the persisted rollback protection, the rotation chain, server errors and the token dance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tufa_core::keys::PrivateKey;
use zeroize::Zeroizing;

use super::*;
use crate::RoleRequirement;
use crate::testutil::{Delegated, GUN, Repo, digest, key};
use crate::tuf::RepoFiles;
use crate::tuf::sha256_hex;

/// What the test server serves and saw.
#[derive(Default)]
struct Served {
    /// Path → body.
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// Paths requested, in order (token requests excluded).
    requests: Mutex<Vec<String>>,
    /// A status answered to every metadata request instead of the files.
    status: Mutex<Option<u16>>,
    /// With auth: the Basic credentials the token endpoint accepts.
    basic: Option<String>,
}

impl Served {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self, file: &str) -> usize {
        self.requests().iter().filter(|path| path.ends_with(&format!("/_trust/tuf/{file}"))).count()
    }

    /// Serves `root` and `files` as a Notary server does.
    fn publish(&self, root: &[u8], files: &RepoFiles) {
        let base = format!("/v2/{GUN}/_trust/tuf");
        let mut served = self.files.lock().unwrap();
        let version =
            tufa_core::metadata::Root::from_signed(&tufa_core::metadata::Signed::parse(root).unwrap()).unwrap().version;
        served.insert(format!("{base}/root.json"), root.to_vec());
        served.insert(format!("{base}/{version}.root.json"), root.to_vec());
        served.insert(format!("{base}/root.{}.json", sha256_hex(root)), root.to_vec());
        served.insert(format!("{base}/timestamp.json"), files.timestamp.clone());
        served.insert(format!("{base}/snapshot.{}.json", sha256_hex(&files.snapshot)), files.snapshot.clone());
        for (role, bytes) in &files.roles {
            served.insert(format!("{base}/{role}.{}.json", sha256_hex(bytes)), bytes.clone());
        }
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: u16, headers: &str, body: &[u8]) {
    let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n", body.len());
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// Starts the server; returns its base URL.
async fn start(served: Arc<Served>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let base = format!("http://{address}");
    let realm = format!("{base}/token");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let served = served.clone();
            let realm = realm.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(count) => request.extend_from_slice(&buffer[..count]),
                    }
                }
                let text = String::from_utf8_lossy(&request).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let authorization = text
                    .lines()
                    .find_map(|line| {
                        line.strip_prefix("authorization: ").or_else(|| line.strip_prefix("Authorization: "))
                    })
                    .unwrap_or_default()
                    .to_owned();
                if let Some(basic) = &served.basic {
                    if path.starts_with("/token") {
                        if authorization == format!("Basic {basic}") {
                            respond(&mut stream, 200, "", br#"{"token":"good","expires_in":300}"#).await;
                        } else {
                            respond(&mut stream, 401, "", b"{}").await;
                        }
                        return;
                    }
                    if authorization != "Bearer good" {
                        served.requests.lock().unwrap().push(format!("401 {path}"));
                        let challenge = format!(
                            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:{GUN}:pull\"\r\n"
                        );
                        respond(&mut stream, 401, &challenge, b"{}").await;
                        return;
                    }
                }
                served.requests.lock().unwrap().push(path.clone());
                let forced = *served.status.lock().unwrap();
                if let Some(status) = forced {
                    respond(&mut stream, status, "", b"{}").await;
                    return;
                }
                let body = served.files.lock().unwrap().get(&path).cloned();
                match body {
                    Some(body) => respond(&mut stream, 200, "", &body).await,
                    None => respond(&mut stream, 404, "", b"{}").await,
                }
            });
        }
    });
    base
}

fn config(url: &str, state: &std::path::Path, refresh: Duration) -> Config {
    Config {
        server_url: url.to_owned(),
        ca_pem: None,
        credentials: Credentials::None,
        state_dir: state.to_path_buf(),
        max_repositories: 4,
        refresh,
        max_staleness: Duration::from_secs(3600),
    }
}

fn any() -> Requirement {
    Requirement { pin: RootPin::None, roles: RoleRequirement::Any, allow_expired_cached: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch_and_a_fresh_entry_needs_no_network() {
    let served = Arc::new(Served::default());
    let (root, files) = Repo::new().build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Arc::new(Verifier::new(config(&url, state.path(), Duration::from_secs(600))).unwrap());
    let mut handles = Vec::new();
    for _ in 0..16 {
        let verifier = verifier.clone();
        handles.push(tokio::spawn(async move { verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap() }));
    }
    for handle in handles {
        let verdict = handle.await.unwrap();
        assert_eq!((verdict.trusted, verdict.digest), (true, Some(format!("sha256:{}", digest("v1")))));
    }
    let base = format!("/v2/{GUN}/_trust/tuf");
    assert_eq!(
        served.requests(),
        vec![
            format!("{base}/root.json"),
            format!("{base}/timestamp.json"),
            format!("{base}/snapshot.{}.json", sha256_hex(&files.snapshot)),
            format!("{base}/targets.{}.json", sha256_hex(&files.roles["targets"])),
        ]
    );
    // Fresh: answered from memory.
    assert!(verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap().trusted);
    assert_eq!(served.requests().len(), 4);
}

#[tokio::test]
async fn an_unchanged_timestamp_keeps_the_rest_and_a_new_one_fetches_what_changed() {
    let served = Arc::new(Served::default());
    let mut repo = Repo::new();
    repo.delegations.push(Delegated::new("targets/releases", vec![("v2", digest("v2"))]));
    let (root, files) = repo.build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    assert!(verifier.verify(GUN, Some("v2"), None, &any()).await.unwrap().trusted);
    assert_eq!(served.requests().len(), 5);
    assert!(verifier.verify(GUN, Some("v2"), None, &any()).await.unwrap().trusted);
    assert_eq!(served.requests().len(), 6);
    assert_eq!(served.count("timestamp.json"), 2);
    // A new publish of targets only: timestamp, snapshot and targets are fetched, the
    // delegation comes from the cache.
    repo.root_file = Some(root.clone());
    repo.targets.push(("v3", digest("v3")));
    repo.targets_version = 4;
    let (_, newer) =
        repo.build_with(|role, bytes| if role == "targets/releases" { files.roles[role].clone() } else { bytes });
    served.publish(&root, &newer);
    let verdict = verifier.verify(GUN, Some("v3"), None, &any()).await.unwrap();
    assert!(verdict.trusted, "{verdict:?}");
    let requests = served.requests();
    assert_eq!(requests.len(), 9, "{requests:?}");
    assert!(requests[6].ends_with("/timestamp.json") && requests[8].contains("/targets."), "{requests:?}");
}

#[tokio::test]
async fn a_rollback_is_refused_after_a_restart() {
    let served = Arc::new(Served::default());
    let mut repo = Repo::new();
    repo.targets_version = 5;
    let (root, files) = repo.build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    assert!(verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap().trusted);
    // The server now serves an older targets file signed by the same keys.
    repo.root_file = Some(root.clone());
    repo.targets_version = 3;
    let (_, older) = repo.build();
    served.publish(&root, &older);
    let restarted = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    let verdict = restarted.verify(GUN, Some("v1"), None, &any()).await.unwrap();
    assert_eq!(
        (verdict.trusted, verdict.reason.as_str()),
        (false, "targets version 3 of registry.example.com/app is older than the 5 already seen (rollback)")
    );
}

#[tokio::test]
async fn a_rotated_root_is_reached_through_the_chain() {
    let served = Arc::new(Served::default());
    let mut repo = Repo::new();
    let (root_v1, files) = repo.build();
    served.publish(&root_v1, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    assert!(verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap().trusted);
    // Two rotations of the root key and one of the timestamp key.
    let mut previous: PrivateKey = repo.root_keys.remove(0);
    for version in [2, 3] {
        repo.root_keys = vec![key()];
        repo.root_version = version;
        repo.timestamp_key = key();
        repo.extra_root_signers = vec![previous];
        let root = repo.root();
        repo.root_file = Some(root.clone());
        let (_, files) = repo.build();
        served.publish(&root, &files);
        previous = repo.root_keys.remove(0);
        repo.root_keys = vec![key()];
    }
    let verdict = verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap();
    assert!(verdict.trusted, "{verdict:?}");
    assert_eq!(served.count("2.root.json"), 1);
    let saved = crate::state::StateDir::open(state.path()).unwrap().load(GUN).unwrap().unwrap();
    assert_eq!(saved.versions.get("root"), Some(&3));
    // A root that the trusted one did not sign is refused.
    repo.extra_root_signers = vec![key()];
    repo.root_keys = vec![key()];
    repo.root_version = 4;
    let root = repo.root();
    repo.root_file = Some(root.clone());
    let (_, files) = repo.build();
    served.publish(&root, &files);
    let verdict = verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap();
    assert_eq!(
        verdict.reason,
        "root version 4 of registry.example.com/app is not signed by the keys of root version 3: \
         valid signatures did not meet threshold for root"
    );
}

#[tokio::test]
async fn server_errors_cannot_decide_and_missing_data_is_untrusted() {
    let served = Arc::new(Served::default());
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    let verdict = verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap();
    assert_eq!((verdict.trusted, verdict.reason.as_str()), (false, "no trust data for registry.example.com/app"));
    *served.status.lock().unwrap() = Some(503);
    assert_eq!(
        verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap_err(),
        VerifyError::Unavailable("root of registry.example.com/app: the server answered 503".into())
    );
    assert_eq!(
        verifier.verify("bad gun", Some("v1"), None, &any()).await.unwrap_err().to_string(),
        "invalid request: \"bad gun\" is not a valid repository name: invalid GUN: it contains whitespace or '*'"
    );
    assert_eq!(
        verifier.verify(GUN, None, Some("sha256:1234"), &any()).await.unwrap_err(),
        VerifyError::Input("\"sha256:1234\" is not a sha256 digest".into())
    );
    assert_eq!(
        verifier.verify(GUN, None, None, &any()).await.unwrap_err(),
        VerifyError::Input("neither a tag nor a digest was given".into())
    );
    let none_required = Requirement { roles: RoleRequirement::AllOf(Vec::new()), ..any() };
    assert_eq!(
        verifier.verify(GUN, Some("v1"), None, &none_required).await.unwrap_err(),
        VerifyError::Input("the list of required roles is empty".into())
    );
    let roles = vec![crate::RoleName::parse("targets/a").unwrap()];
    let too_many = Requirement { roles: RoleRequirement::AtLeast { roles, min: 2 }, ..any() };
    assert_eq!(
        verifier.verify(GUN, Some("v1"), None, &too_many).await.unwrap_err(),
        VerifyError::Input("at least 2 of 1 roles can never be required".into())
    );
}

#[tokio::test]
async fn the_registry_token_dance() {
    let served = Arc::new(Served { basic: Some(B64.encode("alice:secret")), ..Served::default() });
    let (root, files) = Repo::new().build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let anonymous = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    assert_eq!(
        anonymous.verify(GUN, Some("v1"), None, &any()).await.unwrap_err(),
        VerifyError::Unauthorized("the server requires credentials".into())
    );
    let mut wrong = config(&url, state.path(), Duration::ZERO);
    wrong.credentials = Credentials::Basic { username: "alice".into(), password: Zeroizing::new("wrong".into()) };
    assert_eq!(
        Verifier::new(wrong).unwrap().verify(GUN, Some("v1"), None, &any()).await.unwrap_err(),
        VerifyError::Unauthorized("the token service refused the credentials".into())
    );
    let mut right = config(&url, state.path(), Duration::ZERO);
    right.credentials = Credentials::Basic { username: "alice".into(), password: Zeroizing::new("secret".into()) };
    let verifier = Verifier::new(right).unwrap();
    assert!(verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap().trusted);
    // The token is reused: only the first request of this verifier was challenged.
    let before = served.requests().iter().filter(|path| path.starts_with("401 ")).count();
    assert!(verifier.verify(GUN, Some("v1"), None, &any()).await.unwrap().trusted);
    assert_eq!(served.requests().iter().filter(|path| path.starts_with("401 ")).count(), before);
    // A configured bearer token is sent up front.
    let mut token = config(&url, state.path(), Duration::ZERO);
    token.credentials = Credentials::Token(Zeroizing::new("good".into()));
    assert!(Verifier::new(token).unwrap().verify(GUN, Some("v1"), None, &any()).await.unwrap().trusted);
    assert_eq!(served.requests().iter().filter(|path| path.starts_with("401 ")).count(), before);
    let mut refused = config(&url, state.path(), Duration::ZERO);
    refused.credentials = Credentials::Token(Zeroizing::new("bad".into()));
    assert_eq!(
        Verifier::new(refused).unwrap().verify(GUN, Some("v1"), None, &any()).await.unwrap_err(),
        VerifyError::Unauthorized("the server refused the token for registry.example.com/app".into())
    );
}

#[tokio::test]
async fn the_lru_is_bounded() {
    let served = Arc::new(Served::default());
    let url = start(served).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    for index in 0..10 {
        let _ = verifier.verify(&format!("example.com/app{index}"), Some("v1"), None, &any()).await.unwrap();
    }
    let slots = verifier.slots.lock().unwrap();
    assert_eq!(slots.slots.len(), 4);
    assert!(slots.slots.contains_key("example.com/app9"));
    assert!(!slots.slots.contains_key("example.com/app0"));
}

#[tokio::test]
async fn an_unreachable_server_is_answered_from_cache_and_not_asked_again_at_once() {
    let served = Arc::new(Served::default());
    let mut repo = Repo::new();
    repo.delegations.push(Delegated::new("targets/releases", vec![("v2", digest("v2"))]));
    let (root, files) = repo.build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    assert!(verifier.verify(GUN, Some("v2"), None, &any()).await.unwrap().trusted);
    let before = served.requests().len();
    *served.status.lock().unwrap() = Some(502);
    let releases = Requirement {
        roles: RoleRequirement::AllOf(vec![crate::RoleName::parse("targets/releases").unwrap()]),
        ..any()
    };
    let verdict = verifier.verify(GUN, Some("v2"), None, &releases).await.unwrap();
    assert_eq!((verdict.trusted, verdict.roles), (true, vec!["targets/releases".to_owned()]));
    assert_eq!(served.requests().len(), before + 1, "one timestamp request, answered 502");
    let verdict = verifier.verify(GUN, Some("v1"), None, &releases).await.unwrap();
    assert_eq!(verdict.reason, format!("tag v1 of {GUN} is not signed by targets/releases; signed only by targets"));
    assert_eq!(served.requests().len(), before + 1, "the server is not asked again at once");
}

#[tokio::test]
async fn a_file_listed_larger_than_the_limit_is_not_fetched() {
    let served = Arc::new(Served::default());
    let repo = Repo::new();
    let (root, files) = repo.build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::ZERO)).unwrap();
    let meta = FileMeta { length: i64::try_from(MAX_METADATA_BYTES).unwrap() + 1, hashes: Default::default() };
    let mut meta = meta;
    meta.hashes.insert("sha256".into(), vec![0; 32]);
    match fetch_listed(verifier.fetcher.as_ref(), GUN, "targets", &meta).await {
        Err(Failure::Refused(refusal)) => assert_eq!(
            refusal.to_string(),
            format!(
                "trust data of {GUN} exceeds a limit: targets is listed with {} bytes, more than {MAX_METADATA_BYTES}",
                MAX_METADATA_BYTES + 1
            )
        ),
        _ => panic!("expected a refusal"),
    }
    assert_eq!(served.requests().len(), 0);
}

#[tokio::test]
async fn a_cached_root_is_checked_again_under_another_pin() {
    let served = Arc::new(Served::default());
    let repo = Repo::new();
    let pinned = repo.root_keys[0].public_key().canonical_id().unwrap();
    let (root, files) = repo.build();
    served.publish(&root, &files);
    let url = start(served.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let verifier = Verifier::new(config(&url, state.path(), Duration::from_secs(600))).unwrap();
    let pin = |keys: Vec<String>| Requirement { pin: RootPin::RootKeys(keys), ..any() };
    assert!(verifier.verify(GUN, Some("v1"), None, &pin(vec![pinned.clone()])).await.unwrap().trusted);
    // The same cached root, from memory, under a pin it does not meet: refused, then accepted
    // again under the pin it meets.
    let other = "0".repeat(64);
    let refused = verifier.verify(GUN, Some("v1"), None, &pin(vec![other])).await.unwrap();
    assert!(!refused.trusted, "{refused:?}");
    assert!(verifier.verify(GUN, Some("v1"), None, &pin(vec![pinned])).await.unwrap().trusted);
    assert_eq!(served.requests().len(), 4, "all answered from the cached data");
}
