//! Adversarial cases for the update verifier: each builds a small repository the way the notary
//! client does (certificate root key, ECDSA role keys) and asserts the exact verdict.
#![expect(clippy::unwrap_used, clippy::panic, reason = "test helpers outside #[test] functions fail by panicking")]

#[path = "support/repo.rs"]
mod repo;

use std::collections::BTreeMap;

use chrono::Utc;
use repo::{GUN, Key, Repo, expires, no_delegations, published, sign, target};
use serde_json::{Value, json};
use tufa_core::keys::{Algorithm, PrivateKey, sha256};
use tufa_core::names::{Gun, RoleName};
use tufa_core::update::{
    Limits, RepoState, UpdateError, Validated, check_replaced, check_replaced_size, current_set, draft_snapshot,
    draft_timestamp, validate,
};

fn uploads(files: &[(&str, &[u8])]) -> BTreeMap<RoleName, Vec<u8>> {
    files.iter().map(|(role, bytes)| (RoleName::parse(role).unwrap(), bytes.to_vec())).collect()
}

fn run(state: &RepoState, files: &[(&str, &[u8])]) -> Result<Validated, UpdateError> {
    validate(&Gun::parse(GUN).unwrap(), state, uploads(files), Utc::now(), &Limits::default())
}

/// The role and version of every file an accepted update stores, in upload order; panics with
/// the error when the update was refused.
fn stored(result: Result<Validated, UpdateError>) -> Vec<(String, i64)> {
    match result {
        Ok(validated) => validated.files.iter().map(|file| (file.role.as_str().to_owned(), file.version)).collect(),
        Err(error) => panic!("update was refused: {error:?}"),
    }
}

fn expect_err(result: Result<Validated, UpdateError>, check: impl Fn(&UpdateError) -> bool) {
    match result {
        Ok(_) => panic!("update was accepted"),
        Err(error) => assert!(check(&error), "unexpected error: {error:?}"),
    }
}

#[test]
fn first_publish_with_client_snapshot_is_accepted() {
    let repo = Repo::new();
    let root = repo.root(1);
    let targets = repo.targets(2, json!({"v1": target(b"hello")}), no_delegations());
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    let validated =
        run(&RepoState::default(), &[("root", &root), ("targets", &targets), ("snapshot", &snapshot)]).unwrap();
    assert!(validated.snapshot_uploaded);
    assert_eq!(validated.files.len(), 3);
}

#[test]
fn first_publish_without_snapshot_needs_a_generated_one_listing_exact_bytes() {
    let repo = Repo::new();
    let root = repo.root(1);
    let targets = repo.targets(2, json!({}), no_delegations());
    let validated = run(&RepoState::default(), &[("root", &root), ("targets", &targets)]).unwrap();
    assert!(!validated.snapshot_uploaded);
    let draft = draft_snapshot(None, &validated.loaded, Utc::now()).unwrap();
    assert_eq!(draft.version, 1);
    let snapshot = draft.finish(&[]);
    let timestamp = draft_timestamp(None, &snapshot.bytes, Utc::now()).unwrap().finish(&[]);
    let available: BTreeMap<String, &[u8]> =
        BTreeMap::from([("root".to_owned(), &root[..]), ("targets".to_owned(), &targets[..])]);
    let set = current_set(&snapshot, &timestamp, &available).unwrap();
    let targets_entry = set.iter().find(|(role, _)| role == "targets").unwrap();
    assert_eq!(targets_entry.1, hex::encode(sha256(&targets)));
    assert_eq!(set.len(), 4);
}

#[test]
fn missing_root_is_refused() {
    let repo = Repo::new();
    let targets = repo.targets(2, json!({}), no_delegations());
    expect_err(run(&RepoState::default(), &[("targets", &targets)]), |error| {
        matches!(error, UpdateError::Validation(_))
    });
}

#[test]
fn root_problems_are_bad_root() {
    let repo = Repo::new();
    let targets = repo.targets(2, json!({}), no_delegations());
    // Version jump on a new repository.
    let root = repo.root(3);
    expect_err(
        run(&RepoState::default(), &[("root", &root), ("targets", &targets)]),
        |error| matches!(error, UpdateError::BadRoot(message) if message.contains("increment")),
    );
    // Certificate for another GUN.
    let mut other = Repo::new();
    other.root_key = Key::root("other.example.com/app");
    let root = other.root(1);
    expect_err(run(&RepoState::default(), &[("root", &root), ("targets", &targets)]), |error| {
        matches!(error, UpdateError::BadRoot(_))
    });
    // A key map entry under a wrong ID.
    let mut body = repo.root_body(1);
    let fake = "0".repeat(64);
    body["keys"][&fake] = repo.targets.public.to_json();
    let root = sign(&body, &[&repo.root_key]);
    expect_err(
        run(&RepoState::default(), &[("root", &root), ("targets", &targets)]),
        |error| matches!(error, UpdateError::BadRoot(message) if message.contains("does not match")),
    );
    // Signed by a key outside the root role.
    let root = sign(&repo.root_body(1), &[&repo.targets]);
    expect_err(run(&RepoState::default(), &[("root", &root), ("targets", &targets)]), |error| {
        matches!(error, UpdateError::BadRoot(_))
    });
}

#[test]
fn root_rotation_needs_the_previous_root_key() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let mut rotated = Repo::new();
    rotated.targets = Key::ecdsa();
    // New root signed only by the new root key: refused.
    let root = rotated.root(2);
    expect_err(
        run(&state, &[("root", &root)]),
        |error| matches!(error, UpdateError::BadRoot(message) if message.contains("previous root")),
    );
    // Signed by both old and new root keys: accepted.
    let both = sign(&rotated.root_body(2), &[&repo.root_key, &rotated.root_key]);
    assert_eq!(stored(run(&state, &[("root", &both)])), [("root".to_owned(), 2)]);
}

#[test]
fn targets_problems_are_bad_targets() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    // Tampered after signing.
    let good = repo.targets(3, json!({"v1": target(b"x")}), no_delegations());
    let tampered = String::from_utf8(good).unwrap().replacen("\"length\":1", "\"length\":2", 1).into_bytes();
    expect_err(run(&state, &[("targets", &tampered)]), |error| matches!(error, UpdateError::BadTargets(_)));
    // Signed by the wrong key.
    let wrong = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(10), "targets": {}, "version": 3}),
        &[&repo.snapshot],
    );
    expect_err(
        run(&state, &[("targets", &wrong)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("threshold")),
    );
    // Expired.
    let expired = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(-1), "targets": {}, "version": 3}),
        &[&repo.targets],
    );
    expect_err(
        run(&state, &[("targets", &expired)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("expired")),
    );
    // Target names that escape.
    for name in ["../etc/passwd", "/abs", "a/../../b"] {
        let bad = repo.targets(3, json!({ name: target(b"x") }), no_delegations());
        expect_err(run(&state, &[("targets", &bad)]), |error| matches!(error, UpdateError::BadTargets(_)));
    }
    // A control character is written raw by the canonical encoder, which JSON does not allow.
    let bad = repo.targets(3, json!({ "ctl\u{1}": target(b"x") }), no_delegations());
    expect_err(
        run(&state, &[("targets", &bad)]),
        |error| matches!(error, UpdateError::Malformed(message) if message.contains("invalid JSON")),
    );
    // Non-integral version: not metadata at all.
    let bad = String::from_utf8(repo.targets(3, json!({}), no_delegations())).unwrap().replacen(
        "\"version\":3",
        "\"version\":3.5",
        1,
    );
    expect_err(run(&state, &[("targets", bad.as_bytes())]), |error| matches!(error, UpdateError::Malformed(_)));
}

#[test]
fn one_key_signing_twice_counts_once() {
    let mut repo = Repo::new();
    let mut body = repo.root_body(1);
    body["roles"]["targets"]["threshold"] = json!(2);
    let root = sign(&body, &[&repo.root_key]);
    repo.targets = Key {
        private: PrivateKey::from_pkcs8(Algorithm::Ecdsa, &repo.targets.private.pkcs8()).unwrap(),
        public: repo.targets.public.clone(),
    };
    let targets_body = json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(10), "targets": {}, "version": 2});
    let targets = sign(&targets_body, &[&repo.targets, &repo.targets]);
    expect_err(
        run(&RepoState::default(), &[("root", &root), ("targets", &targets)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("threshold")),
    );
}

#[test]
fn delegations_are_held_to_their_paths() {
    let repo = Repo::new();
    let delegate = Key::ecdsa();
    let delegations = json!({
        "keys": { delegate.id(): delegate.public.to_json() },
        "roles": [{"keyids": [delegate.id()], "name": "targets/releases", "paths": ["release/"], "threshold": 1}]
    });
    let state = published(&repo, &repo.targets(2, json!({}), delegations));
    let delegated = |targets: Value, delegations: Value| {
        sign(
            &json!({"_type": "Targets", "delegations": delegations, "expires": expires(10), "targets": targets, "version": 1}),
            &[&delegate],
        )
    };
    let inside = delegated(json!({"release/v1": target(b"a")}), no_delegations());
    assert_eq!(stored(run(&state, &[("targets/releases", &inside)])), [("targets/releases".to_owned(), 1)]);
    let outside = delegated(json!({"other/v1": target(b"a")}), no_delegations());
    expect_err(
        run(&state, &[("targets/releases", &outside)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("outside the paths")),
    );
    let wide_child = delegated(
        json!({}),
        json!({"keys": {delegate.id(): delegate.public.to_json()},
               "roles": [{"keyids": [delegate.id()], "name": "targets/releases/x", "paths": [""], "threshold": 1}]}),
    );
    expect_err(
        run(&state, &[("targets/releases", &wide_child)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("paths outside")),
    );
    // A grandchild, under a stored child that declares it among others: the stored child is read
    // keeping only the paths this upload needs, and the grandchild is held to them.
    let x = Key::ecdsa();
    let children: Vec<Value> = (0..50)
        .map(|index| json!({"keyids": [x.id()], "name": format!("targets/releases/c{index}"), "paths": [format!("release/c{index}/")], "threshold": 1}))
        .collect();
    let parent = delegated(json!({}), json!({"keys": {x.id(): x.public.to_json()}, "roles": children}));
    let mut files = state.files().clone();
    files.insert("targets/releases".into(), parent);
    let with_children = RepoState::new(files);
    let grandchild = |name: &str| {
        sign(
            &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(10),
                    "targets": {name: target(b"g")}, "version": 1}),
            &[&x],
        )
    };
    let inside = grandchild("release/c7/v1");
    assert_eq!(
        stored(run(&with_children, &[("targets/releases/c7", &inside)])),
        [("targets/releases/c7".to_owned(), 1)]
    );
    let beside = grandchild("release/c8/v1");
    expect_err(
        run(&with_children, &[("targets/releases/c7", &beside)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("outside the paths")),
    );
    let undeclared = delegated(json!({}), no_delegations());
    expect_err(
        run(&state, &[("targets/other", &undeclared)]),
        |error| matches!(error, UpdateError::BadTargets(message) if message.contains("not a delegation")),
    );
    // A delegation signed by the top-level targets key instead of the delegate's.
    let wrong = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(10), "targets": {}, "version": 1}),
        &[&repo.targets],
    );
    expect_err(run(&state, &[("targets/releases", &wrong)]), |error| matches!(error, UpdateError::BadTargets(_)));
    // Too deep.
    let limits = Limits { max_delegation_depth: 1, ..Limits::default() };
    let deep =
        validate(&Gun::parse(GUN).unwrap(), &state, uploads(&[("targets/releases/a", &inside)]), Utc::now(), &limits);
    expect_err(deep, |error| matches!(error, UpdateError::BadTargets(message) if message.contains("deeper")));
}

#[test]
fn snapshot_must_match_exact_bytes() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let root = state.file("root").unwrap().to_vec();
    let targets = repo.targets(3, json!({"v": target(b"1")}), no_delegations());
    let mut reformatted = targets.clone();
    reformatted.push(b'\n');
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &reformatted)]);
    expect_err(
        run(&state, &[("targets", &targets), ("snapshot", &snapshot)]),
        |error| matches!(error, UpdateError::BadSnapshot(message) if message.contains("does not match")),
    );
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets), ("targets/ghost", b"{}")]);
    expect_err(
        run(&state, &[("targets", &targets), ("snapshot", &snapshot)]),
        |error| matches!(error, UpdateError::BadSnapshot(message) if message.contains("does not have")),
    );
    let snapshot = repo.snapshot(3, &[("root", &root), ("targets", &targets)]);
    assert_eq!(
        stored(run(&state, &[("targets", &targets), ("snapshot", &snapshot)])),
        [("targets".to_owned(), 3), ("snapshot".to_owned(), 3)]
    );
}

#[test]
fn a_deleted_root_is_continued_only_by_its_keys_compared_by_public_key() {
    use tufa_core::verify::signed_by_previous_root;
    let old = Repo::new();
    let previous = old.root(1);
    // Re-created by the same root key under a re-issued certificate: accepted, though the key ID differs.
    let mut same_owner = Repo::new();
    same_owner.root_key = old.root_key.reissued(GUN);
    assert_ne!(same_owner.root_key.id(), old.root_key.id());
    assert_eq!(signed_by_previous_root(&previous, &same_owner.root(1)), Ok(()));
    // Unchanged root key: accepted.
    assert_eq!(signed_by_previous_root(&previous, &old.root(1)), Ok(()));
    // Another owner's root: refused.
    let stranger = Repo::new();
    assert_eq!(
        signed_by_previous_root(&previous, &stranger.root(1)),
        Err("the new root is signed by 0 of the 1 required keys of the deleted repository's last root".to_owned())
    );
    // The stranger's root listing the old key's ID but signed by the stranger: refused.
    let mut body = stranger.root_body(1);
    body["keys"][old.root_key.id()] = old.root_key.public.to_json();
    let forged = sign(&body, &[&stranger.root_key]);
    assert_eq!(
        signed_by_previous_root(&previous, &forged),
        Err("the new root is signed by 0 of the 1 required keys of the deleted repository's last root".to_owned())
    );
    // Garbage as the new root: a clear error.
    assert_eq!(signed_by_previous_root(&previous, b"{").map_err(|error| error.starts_with("the new root:")), Err(true));
}

#[test]
fn a_delegation_whose_last_key_was_removed_has_null_key_ids_and_is_accepted() {
    // What the notary client and `docker trust signer remove` upload: Go writes the empty list as null.
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let delegations =
        json!({"keys": {}, "roles": [{"name": "targets/releases", "keyids": null, "threshold": 1, "paths": [""]}]});
    let targets = repo.targets(3, json!({}), delegations);
    assert_eq!(stored(run(&state, &[("targets", &targets)])), [("targets".to_owned(), 3)]);
}

#[test]
fn each_limit_is_refused_by_name_with_its_value() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let gun = Gun::parse(GUN).unwrap();
    let check = |limits: Limits, files: &[(&str, &[u8])], expected: UpdateError| {
        let result = validate(&gun, &state, uploads(files), Utc::now(), &limits);
        match result {
            Ok(_) => panic!("accepted over a limit; expected {expected:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    };
    let tight = Limits {
        max_delegation_depth: 16,
        max_signatures: 1,
        max_root_keys: 4,
        max_role_keyids: 1,
        max_delegations: 1,
        max_delegation_keys: 1,
        max_delegation_paths: 1,
        max_targets: 1,
        max_upload_targets: 1,
        max_replaced_bytes: 1,
    };

    // Keys per root: the repository's root has four; five is one too many.
    let mut body = repo.root_body(2);
    let extra = Key::ecdsa();
    body["keys"][extra.id()] = extra.public.to_json();
    let root = sign(&body, &[&repo.root_key]);
    check(
        tight,
        &[("root", &root)],
        UpdateError::BadRoot("root keys: 5 is more than the limit max_root_keys = 4".into()),
    );

    // Key IDs per root role.
    let mut body = repo.root_body(2);
    body["roles"]["targets"]["keyids"] = json!([repo.targets.id(), repo.snapshot.id()]);
    let root = sign(&body, &[&repo.root_key]);
    check(
        tight,
        &[("root", &root)],
        UpdateError::BadRoot("root role targets key IDs: 2 is more than the limit max_role_keyids = 1".into()),
    );

    // Signatures per file.
    let root = sign(&repo.root_body(2), &[&repo.root_key, &repo.targets]);
    check(
        tight,
        &[("root", &root)],
        UpdateError::BadRoot("root signatures: 2 is more than the limit max_signatures = 1".into()),
    );

    // Targets per file.
    let targets = repo.targets(3, json!({"a": target(b"a"), "b": target(b"b")}), no_delegations());
    check(
        tight,
        &[("targets", &targets)],
        UpdateError::BadTargets("targets targets: 2 is more than the limit max_targets = 1".into()),
    );

    // Delegations, delegation keys, key IDs per delegation and paths per delegation.
    let (a, b) = (Key::ecdsa(), Key::ecdsa());
    let keys = json!({a.id(): a.public.to_json(), b.id(): b.public.to_json()});
    let cases = [
        (
            json!({"keys": keys.clone(), "roles": []}),
            "targets delegation keys: 2 is more than the limit max_delegation_keys = 1",
        ),
        (
            json!({"keys": {}, "roles": [
                {"keyids": [], "name": "targets/a", "paths": [""], "threshold": 1},
                {"keyids": [], "name": "targets/b", "paths": [""], "threshold": 1}]}),
            "targets delegations: 2 is more than the limit max_delegations = 1",
        ),
        (
            json!({"keys": {}, "roles": [{"keyids": [a.id(), b.id()], "name": "targets/a", "paths": [""], "threshold": 1}]}),
            "targets delegation \"targets/a\" key IDs: 2 is more than the limit max_role_keyids = 1",
        ),
        (
            json!({"keys": {}, "roles": [{"keyids": [a.id()], "name": "targets/a", "paths": ["x/", "y/"], "threshold": 1}]}),
            "targets delegation \"targets/a\" paths: 2 is more than the limit max_delegation_paths = 1",
        ),
    ];
    for (delegations, message) in cases {
        let targets = repo.targets(3, json!({}), delegations);
        check(tight, &[("targets", &targets)], UpdateError::BadTargets(message.into()));
    }

    // The defaults accept what a real repository holds.
    let many: serde_json::Map<String, Value> = (0..2_000).map(|index| (format!("v{index}"), target(b"x"))).collect();
    let targets = repo.targets(3, Value::Object(many), no_delegations());
    assert_eq!(stored(run(&state, &[("targets", &targets)])), vec![("targets".to_owned(), 3)]);
}

#[test]
fn the_keys_whose_signatures_counted_are_named_per_uploaded_role() {
    let repo = Repo::new();
    let root = repo.root(1);
    let delegate = Key::ecdsa();
    let delegations = json!({
        "keys": { delegate.id(): delegate.public.to_json() },
        "roles": [{"keyids": [delegate.id()], "name": "targets/releases", "paths": ["release/"], "threshold": 1}]
    });
    let targets = repo.targets(2, json!({}), delegations);
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
    let validated =
        run(&RepoState::default(), &[("root", &root), ("targets", &targets), ("snapshot", &snapshot)]).unwrap();
    let signers = |pairs: &[(&str, Vec<String>)]| -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(role, ids)| ((*role).to_owned(), ids.clone())).collect()
    };
    assert_eq!(
        validated.signers,
        signers(&[
            ("root", vec![repo.root_key.id()]),
            ("snapshot", vec![repo.snapshot.id()]),
            ("targets", vec![repo.targets.id()]),
        ])
    );

    // A delegation signed by a key outside its role (ignored) and twice by its own key (counted once).
    let state = published(&repo, &targets);
    let releases = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(10), "targets": {}, "version": 1}),
        &[&repo.targets, &delegate, &delegate],
    );
    let validated = run(&state, &[("targets/releases", &releases)]).unwrap();
    assert_eq!(validated.signers, signers(&[("targets/releases", vec![delegate.id()])]));

    // A root rotation names the new and the previous root key, in signature order.
    let rotated = Repo::new();
    let both = sign(&rotated.root_body(2), &[&rotated.root_key, &repo.root_key]);
    let validated = run(&state, &[("root", &both)]).unwrap();
    assert_eq!(validated.signers, signers(&[("root", vec![rotated.root_key.id(), repo.root_key.id()])]));
    let both = sign(&rotated.root_body(2), &[&repo.root_key, &rotated.root_key]);
    let validated = run(&state, &[("root", &both)]).unwrap();
    assert_eq!(validated.signers, signers(&[("root", vec![repo.root_key.id(), rotated.root_key.id()])]));
}

#[test]
fn a_key_signing_under_two_key_ids_is_named_once_by_its_first_counted_signature() {
    let repo = Repo::new();
    let certificate = repo.targets.reissued(GUN);
    let mut body = repo.root_body(1);
    body["keys"][certificate.id()] = certificate.public.to_json();
    body["roles"]["targets"] = json!({"keyids": [repo.targets.id(), certificate.id()], "threshold": 1});
    let root = sign(&body, &[&repo.root_key]);
    let targets = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": expires(10), "targets": {}, "version": 1}),
        &[&certificate, &repo.targets],
    );
    let validated = run(&RepoState::default(), &[("root", &root), ("targets", &targets)]).unwrap();
    assert_eq!(validated.signers.get("targets"), Some(&vec![certificate.id()]));
}

#[test]
fn replaced_files_may_hold_up_to_the_limit_and_not_a_byte_more() {
    let limits = Limits { max_replaced_bytes: 1000, ..Limits::default() };
    assert_eq!(check_replaced_size([400, 600], &limits), Ok(()));
    assert_eq!(check_replaced_size([], &limits), Ok(()));
    match check_replaced_size([400, 601], &limits) {
        Err(UpdateError::BadTargets(message)) => {
            assert!(message.contains("hold 1001 bytes, more than the limit of 1000 bytes"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(check_replaced_size([u64::MAX, 1], &limits).is_err());
}

#[test]
fn replaced_targets_count_with_the_uploaded_ones_up_to_the_limit() {
    let repo = Repo::new();
    let limits = Limits { max_upload_targets: 3, ..Limits::default() };
    let two = repo.targets(2, json!({"a": target(b"a"), "b": target(b"b")}), no_delegations());
    let none = repo.targets(2, json!({}), no_delegations());
    assert_eq!(check_replaced(1, [two.as_slice()], &limits), Ok(()));
    assert_eq!(check_replaced(3, [none.as_slice()], &limits), Ok(()));
    match check_replaced(2, [two.as_slice()], &limits) {
        Err(UpdateError::BadTargets(message)) => assert!(
            message.contains("the uploaded files list 2 targets and the stored files they replace 2: 4 is more than the limit max_upload_targets = 3"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
