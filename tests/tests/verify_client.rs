//! The verifier of tufa-client against a real tufa-server (and Go notary-server) holding trust
//! data published by the real notary CLI (top-level targets and the delegation
//! targets/releases): trusted with the digest notary lists, unsigned tag, wrong digest, unpinned
//! root, missing required role, no trust data, offline from the persisted cache once the server
//! is gone; and authentication with a password (registry-token dance) or an API token.

use std::fs;
use std::time::Duration;

use serde_json::Value;
use tufa_client::{
    Config, Credentials, Requirement, RoleName, RoleRequirement, RootPin, Verdict, Verifier, VerifyError,
};
use tufa_core::keys::PublicKey;
use tufa_tests::flows::{
    RELEASES, delegation_key, init_with_server_snapshot, path_arg, publish_delegated, publish_target,
};
use tufa_tests::go_notary;
use tufa_tests::notary::Notary;
use tufa_tests::server::Server;
use tufa_tests::tufa::{self, Backend};

const GUN: &str = "tufa.test/verify";

fn requirement(pin: RootPin, roles: RoleRequirement) -> Requirement {
    Requirement { pin, roles, allow_expired_cached: false }
}

fn any() -> Requirement {
    requirement(RootPin::None, RoleRequirement::Any)
}

fn releases() -> RoleName {
    RoleName::parse(RELEASES).unwrap()
}

fn config(url: &str, ca: &[u8], state_dir: &std::path::Path, max_staleness: Duration) -> Config {
    Config {
        server_url: url.to_owned(),
        ca_pem: Some(ca.to_vec()),
        credentials: Credentials::None,
        state_dir: state_dir.to_path_buf(),
        max_repositories: 8,
        // Every verification asks the server for the timestamp.
        refresh: Duration::ZERO,
        max_staleness,
    }
}

/// The canonical ID of the root role's (certificate) key in `root`.
fn root_canonical_key_id(root: &Value) -> String {
    let id = root["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap();
    PublicKey::from_json(&root["signed"]["keys"][id]).unwrap().canonical_id().unwrap()
}

#[test]
fn against_tufa_server() {
    verifies_what_notary_published_and_serves_it_offline(tufa::start(Backend::Sqlite));
}

#[test]
fn against_go_notary_server() {
    verifies_what_notary_published_and_serves_it_offline(go_notary::start(&go_notary::GoServerConfig::default()));
}

fn verifies_what_notary_published_and_serves_it_offline(server: Server) {
    let owner = Notary::new(&server, "owner");
    let delegate = Notary::new(&server, "delegate");
    init_with_server_snapshot(&owner, GUN);
    let top = publish_target(&owner, GUN, "v1", b"top-level release\n");
    let key = delegation_key(&delegate);
    owner.ok(&["delegation", "add", "-p", GUN, RELEASES, path_arg(&key.cert), "--all-paths"]);
    let released = publish_delegated(&delegate, GUN, "v2", b"delegated release\n", RELEASES);
    let root = server.metadata_json(GUN, "root");
    let root_key = root_canonical_key_id(&root);
    let root_cert_id = root["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap().to_owned();

    let ca = fs::read(server.ca_cert()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let verifier = Verifier::new(config(server.url(), &ca, state.path(), Duration::from_secs(3600))).unwrap();
    let verify = |tag: Option<&str>, digest: Option<&str>, req: &Requirement| -> Verdict {
        runtime.block_on(verifier.verify(GUN, tag, digest, req)).unwrap()
    };

    // Trusted: the digest is the SHA-256 notary lists, the role the one that signed it.
    let verdict = verify(Some("v1"), None, &any());
    assert!(verdict.trusted, "{verdict:?}");
    assert_eq!(verdict.digest, Some(format!("sha256:{}", top.digest)));
    assert_eq!(verdict.roles, ["targets"]);
    assert_eq!(verdict.keys.len(), 1);
    let verdict = verify(Some("v2"), Some(&format!("sha256:{}", released.digest)), &any());
    assert!(verdict.trusted, "{verdict:?}");
    assert_eq!(verdict.roles, [RELEASES]);
    // By digest alone.
    let verdict = verify(None, Some(&format!("sha256:{}", released.digest)), &any());
    assert_eq!((verdict.trusted, verdict.roles.clone()), (true, vec![RELEASES.to_owned()]), "{verdict:?}");

    // A required role that signed.
    let only_releases = requirement(RootPin::None, RoleRequirement::AllOf(vec![releases()]));
    assert!(verify(Some("v2"), None, &only_releases).trusted);

    // Unsigned tag.
    let verdict = verify(Some("v9"), None, &any());
    assert_eq!((verdict.trusted, verdict.reason.as_str()), (false, "tag v9 of tufa.test/verify is not signed"));

    // Wrong digest.
    let verdict = verify(Some("v1"), Some(&format!("sha256:{}", released.digest)), &any());
    assert!(!verdict.trusted);
    assert_eq!(
        verdict.reason,
        format!("tag v1 of {GUN} is signed with digest sha256:{}, not sha256:{}", top.digest, released.digest)
    );

    // Missing required role.
    let verdict = verify(Some("v1"), None, &only_releases);
    assert!(!verdict.trusted);
    assert_eq!(verdict.reason, format!("tag v1 of {GUN} is not signed by {RELEASES}; signed only by targets"));

    // Root pinning: by another key refused, by the root's own key (canonical or as root.json
    // lists it) trusted.
    let other = "0".repeat(64);
    let verdict = verify(Some("v1"), None, &requirement(RootPin::RootKeys(vec![other.clone()]), RoleRequirement::Any));
    assert!(!verdict.trusted);
    assert_eq!(verdict.reason, format!("root key {root_key} is not pinned for {GUN}"));
    let verdict = verify(Some("v1"), None, &requirement(RootPin::CertIds(vec![other]), RoleRequirement::Any));
    assert_eq!(verdict.reason, format!("root key {root_cert_id} is not pinned for {GUN}"));
    assert!(
        verify(Some("v1"), None, &requirement(RootPin::RootKeys(vec![root_key.clone()]), RoleRequirement::Any)).trusted
    );
    assert!(verify(Some("v1"), None, &requirement(RootPin::CertIds(vec![root_cert_id]), RoleRequirement::Any)).trusted);

    // A fresh client whose first root is not pinned persists nothing it would trust later.
    let pinned_state = tempfile::tempdir().unwrap();
    let pinned = Verifier::new(config(server.url(), &ca, pinned_state.path(), Duration::from_secs(3600))).unwrap();
    let unpinned = requirement(RootPin::RootKeys(vec!["1".repeat(64)]), RoleRequirement::Any);
    let verdict = runtime.block_on(pinned.verify(GUN, Some("v1"), None, &unpinned)).unwrap();
    assert_eq!(verdict.reason, format!("root key {root_key} is not pinned for {GUN}"));
    assert_eq!(fs::read_dir(pinned_state.path()).unwrap().count(), 0, "an unpinned root is not persisted");

    // No trust data.
    let verdict = runtime.block_on(verifier.verify("tufa.test/none", Some("v1"), None, &any())).unwrap();
    assert_eq!((verdict.trusted, verdict.reason.as_str()), (false, "no trust data for tufa.test/none"));

    // Concurrent verifications of one image all agree.
    let answers = runtime.block_on(async {
        let mut handles = Vec::new();
        let verifier = std::sync::Arc::new(
            Verifier::new(config(server.url(), &ca, state.path(), Duration::from_secs(3600))).unwrap(),
        );
        for _ in 0..16 {
            let verifier = verifier.clone();
            handles.push(tokio::spawn(async move { verifier.verify(GUN, Some("v2"), None, &any()).await.unwrap() }));
        }
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.unwrap());
        }
        answers
    });
    assert!(
        answers.iter().all(|verdict| verdict.trusted && verdict.digest == Some(format!("sha256:{}", released.digest)))
    );

    // Offline: the server is gone; a new verifier on the same state directory answers from the
    // persisted trust data, and refuses to when it is older than allowed.
    let url = server.url().to_owned();
    drop(server);
    let offline = Verifier::new(config(&url, &ca, state.path(), Duration::from_secs(3600))).unwrap();
    let verdict = runtime.block_on(offline.verify(GUN, Some("v2"), None, &only_releases)).unwrap();
    assert!(verdict.trusted, "{verdict:?}");
    assert_eq!(verdict.digest, Some(format!("sha256:{}", released.digest)));
    let verdict = runtime.block_on(offline.verify(GUN, Some("v1"), None, &only_releases)).unwrap();
    assert_eq!(verdict.reason, format!("tag v1 of {GUN} is not signed by {RELEASES}; signed only by targets"));
    let too_old = Verifier::new(config(&url, &ca, state.path(), Duration::ZERO)).unwrap();
    match runtime.block_on(too_old.verify(GUN, Some("v2"), None, &any())) {
        Err(VerifyError::Unavailable(text)) => {
            assert!(text.contains(&format!("the cached trust data of {GUN} is ")), "{text}");
            assert!(text.ends_with("s old, more than the 0s allowed"), "{text}");
        }
        other => panic!("expected the server to be unavailable without usable cache, got {other:?}"),
    }
    // A GUN never fetched cannot be answered offline.
    match runtime.block_on(offline.verify("tufa.test/never", Some("v1"), None, &any())) {
        Err(VerifyError::Unavailable(text)) => assert!(text.starts_with("root of tufa.test/never: "), "{text}"),
        other => panic!("expected the server to be unavailable, got {other:?}"),
    }
}

#[test]
fn authenticates_with_a_password_or_an_api_token() {
    const PASSWORD: &str = "correct horse battery staple";
    let server = tufa::start_builtin(Backend::Sqlite, &[]);
    server.add_user("alice", PASSWORD);
    server.grant("alice", "admin", GUN);
    server.add_user("rita", PASSWORD);
    server.grant("rita", "reader", GUN);
    let rita_token = server.create_token("rita");
    let alice = Notary::with_auth(&server, "alice", "alice", PASSWORD);
    init_with_server_snapshot(&alice, GUN);
    let top = publish_target(&alice, GUN, "v1", b"authenticated release\n");

    let ca = fs::read(server.ca_cert()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let verify = |credentials: Credentials| {
        let state = tempfile::tempdir().unwrap();
        let mut config = config(server.url(), &ca, state.path(), Duration::from_secs(3600));
        config.credentials = credentials;
        let verifier = Verifier::new(config).unwrap();
        runtime.block_on(verifier.verify(GUN, Some("v1"), None, &any()))
    };
    let password =
        |password: &str| Credentials::Basic { username: "rita".into(), password: password.to_owned().into() };

    // Basic credentials at the token realm of the challenge, then the registry token.
    let verdict = verify(password(PASSWORD)).unwrap();
    assert_eq!((verdict.trusted, verdict.digest), (true, Some(format!("sha256:{}", top.digest))));
    // An API token sent directly as Bearer.
    let verdict = verify(Credentials::Token(rita_token.text.clone().into())).unwrap();
    assert!(verdict.trusted, "{verdict:?}");
    // No or wrong credentials: the verifier cannot decide.
    assert_eq!(
        verify(Credentials::None).unwrap_err(),
        VerifyError::Unauthorized("the server requires credentials".into())
    );
    assert_eq!(
        verify(password("wrong")).unwrap_err(),
        VerifyError::Unauthorized("the token service refused the credentials".into())
    );
    assert_eq!(
        verify(Credentials::Token("tufa_nope_nope".to_owned().into())).unwrap_err(),
        VerifyError::Unauthorized(format!("the server refused the token for {GUN}"))
    );
}
