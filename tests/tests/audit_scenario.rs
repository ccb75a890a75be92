//! The audit record of what really happened, end to end with the real clients.
//!
//! A multi-signer repository, on SQLite and PostgreSQL, without auth and with `--auth builtin`
//! (four users, so principals are recorded): an owner (Docker CLI, and the notary CLI in the same
//! trust directory) creates it with `docker trust signer add` for alice, adds bob the same way;
//! alice signs tag v1 with the notary CLI, bob signs it with `docker trust sign`, alice changes it;
//! the owner removes alice with `docker trust signer remove` and rotates the targets key with
//! `notary key rotate`, then delegates `targets/qa` to carol's certificate with `notary delegation
//! add`, and carol signs v1 there. Then `tufa-server audit grants` (now and at every past step),
//! `audit key-grants` for each delegate key and the root key, `audit history` of v1 and `audit
//! log` filters must state exactly that, every answer tied to the publish entry that made it. Key
//! IDs, canonical IDs and subjects are computed from the key files with openssl, not read back.
//!
//! A checkpoint signed by a SoftHSM key: tufa-server signing through tufa-signer on the PKCS#11
//! backend; after a publish and a clean stop, `tufa-server audit verify` passes with the printed
//! verifier key, which is the signer's PKCS#11 key for `tufa-audit-checkpoints`; the signer's own
//! log verifies too, and its sign entries are the server entries' online signatures.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use tufa_tests::audit::{
    between, certificate_canonical_id, ec_key_pair, ecdsa_key_id, ecdsa_x509_key_id, json_lines, now,
    printed_checkpoint, private_keys_by_role, sha256_hex,
};
use tufa_tests::docker::{self, DockerTrust};
use tufa_tests::flows::{
    RELEASES, delegation_key, init_with_server_snapshot, path_arg, publish_delegated, publish_target,
};
use tufa_tests::notary::Notary;
use tufa_tests::pki;
use tufa_tests::process::run_tool;
use tufa_tests::signer::{KeyBackend, Signer, Stack};
use tufa_tests::tufa::{AuthServer, Backend, start_builtin, start_with_auth};

/// The registry host of the image names (docker sends that host's credentials).
const REGISTRY_HOST: &str = "registry.tufa.test";

/// The repository of the multi-signer scenario.
const GUN: &str = "registry.tufa.test/team/app";

/// The password of every user in the builtin-auth variant.
const PASSWORD: &str = "correct horse battery staple";

/// The signer role docker makes for alice and bob.
const ALICE_ROLE: &str = "targets/alice";
const BOB_ROLE: &str = "targets/bob";

/// The delegation the owner makes for carol's certificate with the notary CLI.
const QA_ROLE: &str = "targets/qa";

/// The repository name the server's checkpoint key is created under at the signer.
const CHECKPOINT_GUN: &str = "tufa-audit-checkpoints";

/// One key of a grant as `audit grants` prints it.
fn grant_key(key_id: &str, canonical_id: &str, subject: Option<&str>) -> Value {
    json!({"keyid": key_id, "canonical_id": canonical_id, "subject": subject})
}

/// A bare ECDSA key: its ID is its canonical ID, and it has no certificate subject.
fn bare_key(key_id: &str) -> Value {
    grant_key(key_id, key_id, None)
}

/// The parts of a grant this test states exactly (times and positions are checked separately).
fn grant_shape(grant: &Value) -> Value {
    json!({
        "gun": grant["gun"],
        "delegating_role": grant["delegating_role"],
        "role": grant["role"],
        "version": grant["version"],
        "threshold": grant["threshold"],
        "paths": grant["paths"],
        "keys": grant["keys"],
        "principal": grant["principal"],
    })
}

/// `grants` in a stable order.
fn sorted(mut grants: Vec<Value>) -> Vec<Value> {
    grants.sort_by_key(Value::to_string);
    grants
}

/// The keys a step's grants name.
struct Keys {
    /// The root key as root.json lists it (a certificate) and its canonical (bare key) ID.
    root: (String, String),
    /// The targets key before and after the rotation.
    targets: (String, String),
    snapshot: String,
    timestamp: String,
    alice: String,
    bob: String,
    /// Carol's certificate as targets.json lists it and its canonical (bare key) ID.
    carol: (String, String),
}

/// What the test expects `audit grants` to print after a step.
struct Expect<'a> {
    keys: &'a Keys,
    principal: Value,
}

impl Expect<'_> {
    fn grant(&self, delegating: &str, role: &str, version: u64, paths: Value, keys: Vec<Value>) -> Value {
        json!({
            "gun": GUN,
            "delegating_role": delegating,
            "role": role,
            "version": version,
            "threshold": 1,
            "paths": paths,
            "keys": keys,
            "principal": self.principal,
        })
    }

    /// The four grants of the root in force: targets key `targets`, granted by root version
    /// `targets_version`; the other three unchanged since root version 1 (a new root version
    /// records only the grants it changes).
    fn root(&self, targets_version: u64, targets: &str) -> Vec<Value> {
        let (root_id, root_canonical) = &self.keys.root;
        let subject = format!("CN={GUN}");
        vec![
            self.grant("root", "root", 1, Value::Null, vec![grant_key(root_id, root_canonical, Some(&subject))]),
            self.grant("root", "snapshot", 1, Value::Null, vec![bare_key(&self.keys.snapshot)]),
            self.grant("root", "targets", targets_version, Value::Null, vec![bare_key(targets)]),
            self.grant("root", "timestamp", 1, Value::Null, vec![bare_key(&self.keys.timestamp)]),
        ]
    }

    /// A delegation of all paths made by targets version `version` to `keys` (key IDs).
    fn delegation(&self, role: &str, version: u64, keys: &[&str]) -> Value {
        let mut keys: Vec<&str> = keys.to_vec();
        keys.sort_unstable();
        self.grant("targets", role, version, json!([""]), keys.into_iter().map(bare_key).collect())
    }
}

/// `audit grants GUN [--at TIME]`.
fn grants_at(server: &AuthServer, at: Option<&str>) -> Vec<Value> {
    let mut args = vec!["grants", GUN];
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    json_lines(&server.audit(&args))
}

/// The publish entry of the log that stored `role` at `version`.
#[track_caller]
fn publish_of<'a>(log: &'a [Value], role: &str, version: u64) -> &'a Value {
    let found: Vec<&Value> =
        log.iter().filter(|entry| entry["kind"] == "publish" && entry["details"]["roles"][role] == version).collect();
    assert_eq!(found.len(), 1, "one publish stored {role} v{version}: {found:?}");
    found[0]
}

/// The log entry at `seq`.
#[track_caller]
fn entry_at(log: &[Value], seq: &Value) -> Value {
    log.iter().find(|entry| &entry["seq"] == seq).cloned().unwrap_or_else(|| panic!("no log entry at {seq}"))
}

/// Every grant was made by the publish that stored its delegating role's file at the grant's
/// version: same position, same time, same principal; and a superseded grant ended exactly when
/// a later version of that file was published (the one that changed or removed it).
#[track_caller]
fn assert_grant_provenance(log: &[Value], grants: &[Value]) {
    for grant in grants {
        let delegating = grant["delegating_role"].as_str().expect("delegating_role");
        let version = grant["version"].as_u64().expect("version");
        let made_by = publish_of(log, delegating, version);
        assert_eq!(grant["audit_seq"], made_by["seq"], "{grant}");
        assert_eq!(grant["since"], made_by["time"], "{grant}");
        assert_eq!(grant["principal"], made_by["principal"], "{grant}");
        if grant["until"].is_null() {
            assert_eq!(grant["until_seq"], Value::Null, "{grant}");
        } else {
            let ended_by = entry_at(log, &grant["until_seq"]);
            assert_eq!(ended_by["kind"], "publish", "the entry that ended it: {grant}");
            let stored = ended_by["details"]["roles"][delegating].as_u64().expect("a new version of the file");
            assert!(stored > version, "superseded by a later {delegating} (v{stored}): {grant}");
            assert_eq!(grant["until"], ended_by["time"], "{grant}");
        }
    }
}

/// `audit key-grants <key_id>`: exactly the grants `(role, version)`, oldest first.
#[track_caller]
fn assert_key_grants(server: &AuthServer, key_id: &str, expected: &[(&str, u64)]) -> Vec<Value> {
    let grants = json_lines(&server.audit(&["key-grants", key_id]));
    let mut found: Vec<(String, u64)> = grants
        .iter()
        .map(|grant| (grant["role"].as_str().expect("role").to_owned(), grant["version"].as_u64().expect("version")))
        .collect();
    found.sort_by(|left, right| left.1.cmp(&right.1).then_with(|| left.0.cmp(&right.0)));
    let expected: Vec<(String, u64)> = expected.iter().map(|(role, version)| ((*role).to_owned(), *version)).collect();
    assert_eq!(found, expected, "key-grants {key_id}: {grants:#?}");
    for grant in &grants {
        assert_eq!(grant["gun"], GUN, "{grant}");
        let keys = grant["keys"].as_array().expect("keys");
        assert!(
            keys.iter().any(|key| key["keyid"] == key_id || key["canonical_id"] == key_id),
            "the grant trusts {key_id}: {grant}"
        );
    }
    grants
}

/// The one private key of `role` in a trust directory.
#[track_caller]
fn only_key(keys: &BTreeMap<String, Vec<String>>, role: &str) -> String {
    match keys.get(role).map(Vec::as_slice) {
        Some([only]) => only.clone(),
        other => panic!("expected one {role} key in the trust directory, found {other:?} ({keys:?})"),
    }
}

/// The multi-signer scenario on `backend`, with builtin auth and four users when `auth`.
fn multi_signer(backend: Backend, auth: bool) {
    let server = if auth {
        let server = start_builtin(backend, &[]);
        // The owner is the repository's admin: `notary key rotate` asks for the `*` action.
        for (user, role) in [("owner", "admin"), ("alice", "publisher"), ("bob", "publisher"), ("carol", "publisher")] {
            server.add_user(user, PASSWORD);
            server.grant(user, role, GUN);
        }
        server.admin_ok(&["user", "add", "inspector", "--service"], b"");
        server.grant("inspector", "reader", GUN);
        server
    } else {
        start_with_auth(backend, "tufa-server audit scenario", Vec::new())
    };
    // Reads metadata with an API token of a reader when auth is on.
    let inspector = auth.then(|| format!("Bearer {}", server.create_token("inspector").text));
    let credentials = |user: &'static str| auth.then_some((user, PASSWORD));
    let principal = |user: &str| if auth { json!(user) } else { Value::Null };

    let owner = DockerTrust::new(&server, "owner", REGISTRY_HOST, credentials("owner"));
    let mut owner_notary = Notary::sharing_trust_dir(&server, "owner-notary", &owner.trust_dir(), docker::PASSPHRASE);
    owner_notary.set_auth(credentials("owner"));
    let mut alice = Notary::new(&server, "alice");
    alice.set_auth(credentials("alice"));
    let bob = DockerTrust::new(&server, "bob", REGISTRY_HOST, credentials("bob"));
    let (alice_key, alice_public) = ec_key_pair(alice.scratch_dir(), "alice");
    let (bob_key, bob_public) = ec_key_pair(bob.config_dir(), "bob");
    let (alice_id, bob_id) = (ecdsa_key_id(&alice_public), ecdsa_key_id(&bob_public));
    let mut carol = Notary::new(&server, "carol");
    carol.set_auth(credentials("carol"));
    let carol_cert = pki::self_signed(carol.scratch_dir(), "carol", "carol");
    let carol_ids = (ecdsa_x509_key_id(&carol_cert.cert), certificate_canonical_id(&carol_cert.cert));

    // marks[k] is a time after step k and before step k + 1 (marks[0]: before anything).
    let mut marks = vec![now()];

    // Step 1: the owner creates the repository with alice as its first signer.
    let output = owner.ok(&["trust", "signer", "add", "--key", path_arg(&alice_public), "alice", GUN]);
    assert!(output.stdout.contains(&format!("Successfully initialized \"{GUN}\"")), "{output}");
    assert!(output.stdout.contains(&format!("Successfully added signer: alice to {GUN}")), "{output}");
    marks.push(now());
    let owner_keys = private_keys_by_role(&owner.trust_dir());
    let (root_canonical, targets_before) = (only_key(&owner_keys, "root"), only_key(&owner_keys, "targets"));

    // Step 2: the owner adds bob.
    let output = owner.ok(&["trust", "signer", "add", "--key", path_arg(&bob_public), "bob", GUN]);
    assert!(output.stdout.contains(&format!("Successfully added signer: bob to {GUN}")), "{output}");
    marks.push(now());

    // Step 3: alice signs tag v1 into targets/releases with the notary CLI.
    alice.ok(&["key", "import", path_arg(&alice_key), "--role", RELEASES]);
    let first = alice.write_file("v1-first.bin", b"release one\n");
    alice.ok(&["add", "-p", GUN, "v1", path_arg(&first), "--roles", RELEASES]);
    marks.push(now());

    // Step 4: bob signs the same v1 with `docker trust sign` (no daemon: the tag exists).
    let output = bob.ok(&["trust", "key", "load", path_arg(&bob_key), "--name", "bob"]);
    assert!(output.stdout.contains("Successfully imported key from"), "{output}");
    let output = bob.ok(&["trust", "sign", &format!("{GUN}:v1")]);
    assert!(output.stdout.contains(&format!("Successfully signed {GUN}:v1")), "{output}");
    marks.push(now());

    // Step 5: alice changes v1.
    let second = alice.write_file("v1-second.bin", b"release one, rebuilt\n");
    alice.ok(&["add", "-p", GUN, "v1", path_arg(&second), "--roles", RELEASES]);
    marks.push(now());

    // Step 6: the owner removes alice (she signed the last release, so docker asks first).
    let output = owner.ok_with_input(b"y\n", &["trust", "signer", "remove", "alice", GUN]);
    assert!(output.stdout.contains(&format!("Successfully removed alice from {GUN}")), "{output}");
    marks.push(now());

    // Step 7: the owner rotates the targets key with the notary CLI (same trust directory).
    let output = owner_notary.ok(&["key", "rotate", GUN, "targets"]);
    assert!(output.combined().contains(&format!("Successfully rotated targets key for repository {GUN}")), "{output}");
    marks.push(now());
    let targets_after = only_key(&private_keys_by_role(&owner.trust_dir()), "targets");
    assert_ne!(targets_after, targets_before, "the targets key was rotated");

    // Step 8: the owner delegates targets/qa to carol's certificate with the notary CLI.
    owner_notary.ok(&["delegation", "add", "-p", GUN, QA_ROLE, path_arg(&carol_cert.cert), "--all-paths"]);
    marks.push(now());

    // Step 9: carol signs v1 (as alice last released it) into targets/qa.
    carol.ok(&["key", "import", path_arg(&carol_cert.key), "--role", QA_ROLE]);
    let qa_file = carol.write_file("v1-qa.bin", b"release one, rebuilt\n");
    carol.ok(&["add", "-p", GUN, "v1", path_arg(&qa_file), "--roles", QA_ROLE]);
    marks.push(now());

    let log = json_lines(&server.audit(&["log", "--gun", GUN]));
    let online_key = |role: &str| {
        let created: Vec<&Value> =
            log.iter().filter(|entry| entry["kind"] == "key.create" && entry["details"]["role"] == role).collect();
        assert_eq!(created.len(), 1, "one {role} key was created for {GUN}: {created:?}");
        created[0]["details"]["key_id"].as_str().expect("key_id").to_owned()
    };
    let response = server.request("GET", &format!("/v2/{GUN}/_trust/tuf/root.json"), inspector.as_deref(), None);
    assert_eq!(response.status, 200, "root.json: {response}");
    let root_json = response.json();
    let root_id = root_json["signed"]["roles"]["root"]["keyids"][0].as_str().expect("root key id").to_owned();
    assert_ne!(root_id, root_canonical, "root.json lists the root key as a certificate");
    let keys = Keys {
        root: (root_id, root_canonical),
        targets: (targets_before, targets_after),
        snapshot: online_key("snapshot"),
        timestamp: online_key("timestamp"),
        alice: alice_id,
        bob: bob_id,
        carol: carol_ids,
    };
    assert_eq!(root_json["signed"]["roles"]["snapshot"]["keyids"], json!([keys.snapshot]));
    assert_eq!(root_json["signed"]["roles"]["timestamp"]["keyids"], json!([keys.timestamp]));
    assert_eq!(root_json["signed"]["roles"]["targets"]["keyids"], json!([keys.targets.1]));

    // Who may sign, after every step: root v1 and targets v2 (docker's init adds the
    // delegations in a second targets version before its one publish), targets v3 adds bob,
    // targets v4 removes alice, root v2 and targets v5 carry the rotated targets key, targets v6
    // adds carol's certificate (with its subject).
    let owner_principal = principal("owner");
    let expect = Expect { keys: &keys, principal: owner_principal.clone() };
    let (a, b) = (keys.alice.as_str(), keys.bob.as_str());
    let with = |root: Vec<Value>, delegations: Vec<Value>| sorted(root.into_iter().chain(delegations).collect());
    // A new version of a file records only the grants it changes: alice's role keeps its grant
    // of targets v2 until her removal, bob's keeps v3's, and root v2 changes only the targets
    // role's grant.
    let after_bob_added = with(
        expect.root(1, &keys.targets.0),
        vec![
            expect.delegation(ALICE_ROLE, 2, &[a]),
            expect.delegation(BOB_ROLE, 3, &[b]),
            expect.delegation(RELEASES, 3, &[a, b]),
        ],
    );
    let (carol_id, carol_canonical) = &keys.carol;
    let after_carol_added = with(
        expect.root(2, &keys.targets.1),
        vec![
            expect.delegation(BOB_ROLE, 3, &[b]),
            expect.delegation(RELEASES, 4, &[b]),
            expect.grant(
                "targets",
                QA_ROLE,
                6,
                json!([""]),
                vec![grant_key(carol_id, carol_canonical, Some("CN=carol"))],
            ),
        ],
    );
    let expected_per_step: Vec<Vec<Value>> = vec![
        Vec::new(),
        with(
            expect.root(1, &keys.targets.0),
            vec![expect.delegation(ALICE_ROLE, 2, &[a]), expect.delegation(RELEASES, 2, &[a])],
        ),
        after_bob_added.clone(),
        after_bob_added.clone(),
        after_bob_added.clone(),
        after_bob_added,
        with(
            expect.root(1, &keys.targets.0),
            vec![expect.delegation(BOB_ROLE, 3, &[b]), expect.delegation(RELEASES, 4, &[b])],
        ),
        with(
            expect.root(2, &keys.targets.1),
            vec![expect.delegation(BOB_ROLE, 3, &[b]), expect.delegation(RELEASES, 4, &[b])],
        ),
        after_carol_added.clone(),
        after_carol_added,
    ];
    for (step, (mark, expected)) in marks.iter().zip(&expected_per_step).enumerate() {
        let grants = grants_at(&server, Some(mark));
        let shapes = sorted(grants.iter().map(grant_shape).collect());
        assert_eq!(&shapes, expected, "grants at {mark} (after step {step})");
        assert_grant_provenance(&log, &grants);
    }
    let now_grants = grants_at(&server, None);
    assert_eq!(sorted(now_grants.iter().map(grant_shape).collect()), expected_per_step[9], "grants now");
    assert!(now_grants.iter().all(|grant| grant["until"].is_null()), "grants in force: {now_grants:#?}");
    assert_grant_provenance(&log, &now_grants);

    // Where each key is trusted: every grant that named it, the superseded ones with `until`
    // (checked by assert_grant_provenance against the publish that changed or removed them).
    let alice_grants = assert_key_grants(&server, &keys.alice, &[(ALICE_ROLE, 2), (RELEASES, 2), (RELEASES, 3)]);
    assert!(alice_grants.iter().all(|grant| !grant["until"].is_null()), "alice is trusted nowhere now");
    let removal = publish_of(&log, "targets", 4);
    assert_eq!(removal["principal"], owner_principal, "the owner removed alice: {removal}");
    assert_eq!(
        alice_grants.iter().filter(|grant| grant["until"] == removal["time"]).count(),
        2,
        "alice's last grants ended with her removal: {alice_grants:#?}"
    );
    assert_grant_provenance(&log, &alice_grants);
    let bob_grants = assert_key_grants(&server, &keys.bob, &[(BOB_ROLE, 3), (RELEASES, 3), (RELEASES, 4)]);
    assert_grant_provenance(&log, &bob_grants);
    // The root key by its canonical ID (what the owner's key file is named) and by the
    // certificate's ID root.json lists: root v2 left the root role's grant as it was.
    let root_grants = assert_key_grants(&server, &keys.root.1, &[("root", 1)]);
    assert_grant_provenance(&log, &root_grants);
    assert!(root_grants[0]["until"].is_null(), "the root key is still trusted: {root_grants:#?}");
    assert_key_grants(&server, &keys.root.0, &[("root", 1)]);
    // Carol's certificate, by the ID targets.json lists and by its canonical ID.
    let carol_grants = assert_key_grants(&server, &keys.carol.0, &[(QA_ROLE, 6)]);
    assert_grant_provenance(&log, &carol_grants);
    assert_key_grants(&server, &keys.carol.1, &[(QA_ROLE, 6)]);
    let old_targets = assert_key_grants(&server, &keys.targets.0, &[("targets", 1)]);
    assert_eq!(old_targets[0]["until"], publish_of(&log, "root", 2)["time"], "the rotation ended the old key's grant");
    assert_key_grants(&server, &keys.targets.1, &[("targets", 2)]);

    // Who added, changed or removed a delegate (or a base role's key), and through which
    // publish: replayed from the grants, each change attributed to the entry that made it.
    let changes = json_lines(&server.audit(&["grant-changes", GUN]));
    let found: Vec<(String, String, String, u64)> = changes
        .iter()
        .map(|change| {
            let text = |field: &str| change[field].as_str().expect(field).to_owned();
            let version = change["version"].as_u64().expect("version");
            let made_by = publish_of(&log, &text("delegating_role"), version);
            assert_eq!(change["audit_seq"], made_by["seq"], "{change}");
            assert_eq!(change["time"], made_by["time"], "{change}");
            assert_eq!(change["principal"], made_by["principal"], "{change}");
            (text("change"), text("delegating_role"), text("role"), version)
        })
        .collect();
    let step = |change: &str, delegating: &str, role: &str, version: u64| {
        (change.to_owned(), delegating.to_owned(), role.to_owned(), version)
    };
    let expected: Vec<(String, String, String, u64)> = vec![
        step("added", "root", "root", 1),
        step("added", "root", "snapshot", 1),
        step("added", "root", "targets", 1),
        step("added", "root", "timestamp", 1),
        step("added", "targets", ALICE_ROLE, 2),
        step("added", "targets", RELEASES, 2),
        step("added", "targets", BOB_ROLE, 3),
        step("changed", "targets", RELEASES, 3),
        step("removed", "targets", ALICE_ROLE, 4),
        step("changed", "targets", RELEASES, 4),
        step("changed", "root", "targets", 2),
        step("added", "targets", QA_ROLE, 6),
    ];
    assert_eq!(found, expected, "grant changes: {changes:#?}");

    // Who signed tag v1: alice into releases, bob into his own role, alice again, carol into qa
    // (with her certificate's ID, as targets.json lists it).
    let history = json_lines(&server.audit(&["history", GUN, "v1"]));
    // Bare keys (alice, bob) have their own ID as canonical ID; carol's certificate does not.
    let event = |change: &str, role: &str, version: u64, file: &[u8], key: (&str, &str), user: &str| {
        json!({
            "gun": GUN, "name": "v1", "change": change, "role": role, "version": version,
            "sha256": sha256_hex(file), "length": file.len(),
            "signer_keys": [key.0], "signer_canonical_ids": [key.1], "principal": principal(user),
        })
    };
    let expected_history = vec![
        event("added", RELEASES, 1, b"release one\n", (a, a), "alice"),
        event("added", BOB_ROLE, 1, b"release one\n", (b, b), "bob"),
        event("changed", RELEASES, 2, b"release one, rebuilt\n", (a, a), "alice"),
        event("added", QA_ROLE, 1, b"release one, rebuilt\n", (&keys.carol.0, &keys.carol.1), "carol"),
    ];
    let shapes: Vec<Value> = history
        .iter()
        .map(|event| {
            let mut shape = event.clone();
            let object = shape.as_object_mut().expect("an object");
            object.remove("audit_seq");
            object.remove("time");
            shape
        })
        .collect();
    assert_eq!(shapes, expected_history, "history of v1: {history:#?}");
    for (event, step) in history.iter().zip([3, 4, 5, 9]) {
        let entry = entry_at(&log, &event["audit_seq"]);
        assert_eq!(entry["kind"], "publish", "{entry}");
        assert_eq!(entry["time"], event["time"], "{event}");
        assert_eq!(entry["principal"], event["principal"], "{event}");
        let time = event["time"].as_str().expect("time");
        assert!(between(&marks[step - 1], time, &marks[step]), "v1 event of step {step} at {time}: {marks:?}");
        let role = event["role"].as_str().expect("role");
        assert_eq!(entry["details"]["signers"][role], event["signer_keys"], "{entry}");
    }

    // The log answers by key and by principal with the same entries.
    let seqs = |entries: &[Value]| entries.iter().map(|entry| entry["seq"].clone()).collect::<Vec<Value>>();
    let by_alice_key = json_lines(&server.audit(&["log", "--gun", GUN, "--key", a]));
    assert_eq!(seqs(&by_alice_key), vec![history[0]["audit_seq"].clone(), history[2]["audit_seq"].clone()]);
    let by_bob_key = json_lines(&server.audit(&["log", "--gun", GUN, "--key", b]));
    assert_eq!(seqs(&by_bob_key), vec![history[1]["audit_seq"].clone()]);
    let by_carol_key = json_lines(&server.audit(&["log", "--gun", GUN, "--key", &keys.carol.0]));
    assert_eq!(seqs(&by_carol_key), vec![history[3]["audit_seq"].clone()]);
    if auth {
        let by_alice = json_lines(&server.audit(&["log", "--principal", "alice"]));
        assert_eq!(seqs(&by_alice), seqs(&by_alice_key), "alice published exactly the releases she signed");
        let by_bob = json_lines(&server.audit(&["log", "--principal", "bob"]));
        assert_eq!(seqs(&by_bob), seqs(&by_bob_key));
        let by_carol = json_lines(&server.audit(&["log", "--principal", "carol"]));
        assert_eq!(seqs(&by_carol), seqs(&by_carol_key));
        let by_owner = json_lines(&server.audit(&["log", "--principal", "owner"]));
        // Steps 1, 2, 6, 7 and 8 stored targets versions 2 to 6 (and root v1 and v2 with them).
        let owner_publishes: Vec<Value> =
            (2..=6).map(|version| publish_of(&log, "targets", version)["seq"].clone()).collect();
        let owner_seqs: Vec<Value> =
            by_owner.iter().filter(|entry| entry["kind"] == "publish").map(|entry| entry["seq"].clone()).collect();
        assert_eq!(owner_seqs, owner_publishes, "the owner's publishes");
    }

    // The whole record, admin commands included, verifies against the shutdown checkpoint.
    let mut server = server;
    server.server_mut().terminate();
    let everything = json_lines(&server.audit(&["log"]));
    let checkpoint = printed_checkpoint(&server.audit(&["checkpoint"]), "verifier key: ");
    assert_eq!(checkpoint.size, everything.len() as u64, "the shutdown checkpoint covers the whole log");
    let verify = server.audit(&["verify", "--checkpoint-key", &checkpoint.vkey]);
    assert_eq!(verify.status.and_then(|status| status.code()), Some(0), "{verify}");
    assert!(verify.stdout.contains("OK: the log is intact"), "{verify}");
}

/// One `#[test]` per store, without and with builtin auth.
macro_rules! per_backend {
    ($($name:ident: $backend:ident, $auth:expr;)+) => {
        $(#[test] fn $name() { multi_signer(Backend::$backend, $auth); })+
    };
}

per_backend! {
    multi_signer_sqlite: Sqlite, false;
    multi_signer_sqlite_builtin_auth: Sqlite, true;
    multi_signer_postgres: Postgres, false;
    multi_signer_postgres_builtin_auth: Postgres, true;
}

/// `audit log --key` with the canonical ID of a certificate a delegate signed with finds the same
/// entries as with the certificate's key ID (as `audit key-grants` does for grants).
fn log_by_canonical_key_id(backend: Backend) {
    const CERT_GUN: &str = "tufa.test/certificate-signed";
    let server = start_with_auth(backend, "tufa-server audit by canonical ID", Vec::new());
    let owner = Notary::new(&server, "owner");
    let delegate = Notary::new(&server, "delegate");
    init_with_server_snapshot(&owner, CERT_GUN);
    let key = delegation_key(&delegate);
    owner.ok(&["delegation", "add", "-p", CERT_GUN, RELEASES, path_arg(&key.cert), "--all-paths"]);
    publish_delegated(&delegate, CERT_GUN, "v1", b"signed with a certificate\n", RELEASES);
    let (key_id, canonical_id) = (ecdsa_x509_key_id(&key.cert), certificate_canonical_id(&key.cert));
    let seqs = |key: &str| -> Vec<Value> {
        json_lines(&server.audit(&["log", "--gun", CERT_GUN, "--key", key]))
            .iter()
            .map(|entry| entry["seq"].clone())
            .collect()
    };
    let history = json_lines(&server.audit(&["history", CERT_GUN, "v1"]));
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["signer_keys"], json!([key_id]), "{history:?}");
    assert_eq!(seqs(&key_id), vec![history[0]["audit_seq"].clone()], "found by the certificate's key ID");
    assert_eq!(seqs(&canonical_id), seqs(&key_id), "found by the canonical key ID {canonical_id} too");
}

#[test]
fn log_by_canonical_key_id_sqlite() {
    log_by_canonical_key_id(Backend::Sqlite);
}

#[test]
fn log_by_canonical_key_id_postgres() {
    log_by_canonical_key_id(Backend::Postgres);
}

/// Rows of a query against tufa-signer's database (SQLite or PostgreSQL), as JSON objects.
fn signer_rows(signer: &Signer, sql: &str) -> Vec<Value> {
    let output = match signer.database_url() {
        Some(url) => run_tool(
            Command::new("psql")
                .args([url, "-At", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!("SELECT coalesce(json_agg(row_to_json(t)), '[]'::json) FROM ({sql}) t")),
        ),
        None => run_tool(Command::new("sqlite3").arg("-json").arg(signer.sqlite_file()).arg(sql)),
    };
    if output.stdout.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&output.stdout).unwrap_or_else(|error| panic!("query output ({error}):\n{output}"))
}

#[test]
fn checkpoint_signed_by_softhsm_key_sqlite() {
    checkpoint_signed_by_softhsm_key(Stack::tufa_server(Signer::tufa(KeyBackend::SoftHsm)));
}

#[test]
fn checkpoint_signed_by_softhsm_key_postgres() {
    checkpoint_signed_by_softhsm_key(Stack::tufa_server_on_postgres(Signer::tufa_on_postgres(KeyBackend::SoftHsm)));
}

/// A publish through a signer on the PKCS#11 backend; the server's log, its shutdown checkpoint,
/// the signer's sign events and the signer's own log must all agree.
fn checkpoint_signed_by_softhsm_key(mut stack: Stack) {
    const HSM_GUN: &str = "tufa.test/hsm-audited";
    let owner = Notary::new(&stack, "owner");
    owner.ok(&["init", "-p", HSM_GUN]);
    publish_target(&owner, HSM_GUN, "v1", b"signed through an HSM\n");
    // The clean stop signs the last checkpoint, through the signer.
    stack.server_mut().terminate();

    let log = json_lines(&stack.audit(&["log"]));
    let checkpoint = printed_checkpoint(&stack.audit(&["checkpoint"]), "verifier key: ");
    assert_eq!(checkpoint.size, log.len() as u64, "the shutdown checkpoint covers the whole log");
    let verify = stack.audit(&["verify", "--checkpoint-key", &checkpoint.vkey]);
    assert_eq!(verify.status.and_then(|status| status.code()), Some(0), "{verify}");
    assert!(verify.stdout.contains(&format!("entries: {}\n", log.len())), "{verify}");
    assert!(verify.stdout.contains("OK: the log is intact"), "{verify}");

    // The checkpoint key is the signer's PKCS#11 key made for tufa-audit-checkpoints, and the
    // signer recorded signing exactly this checkpoint's text with it.
    let events = stack.signer().audit();
    let checkpoint_events: Vec<&Value> = events.iter().filter(|event| event["gun"] == CHECKPOINT_GUN).collect();
    assert!(!checkpoint_events.is_empty(), "the signer signed the checkpoints: {events:#?}");
    let key_id = checkpoint_events[0]["key_id"].as_str().expect("key_id").to_owned();
    for event in &checkpoint_events {
        assert_eq!(event["key_id"], key_id.as_str(), "one checkpoint key: {event}");
        assert_eq!(event["role"], "timestamp", "{event}");
        assert_eq!(event["client_subject"], "CN=tufa-server", "{event}");
    }
    assert_eq!(checkpoint.origin, format!("tufa-server.audit/{}", &key_id[..16]));
    assert!(checkpoint.vkey.starts_with(&format!("tufa-server.audit/{}+", &key_id[..16])), "{}", checkpoint.vkey);
    let body_digest = sha256_hex(checkpoint.body.as_bytes());
    assert!(
        checkpoint_events.iter().any(|event| event["payload_sha256"] == body_digest.as_str()),
        "the signer recorded the checkpoint {body_digest}: {checkpoint_events:#?}"
    );
    let keys = signer_rows(
        stack.signer(),
        &format!("SELECT key_id, role, backend FROM signer_keys WHERE gun = '{CHECKPOINT_GUN}'"),
    );
    assert_eq!(keys, vec![json!({"key_id": key_id, "role": "timestamp", "backend": "pkcs11"})]);

    // Every online signature the server's entries name is one the signer recorded for this
    // repository, and the signer signed nothing else for it.
    let mut online: Vec<(String, String, String)> = log
        .iter()
        .flat_map(|entry| entry["details"]["online_signatures"].as_array().cloned().unwrap_or_default())
        .map(|signature| {
            let text = |field: &str| signature[field].as_str().expect("online signature field").to_owned();
            (text("role"), text("key_id"), text("payload_sha256"))
        })
        .collect();
    let mut signed: Vec<(String, String, String)> = events
        .iter()
        .filter(|event| event["gun"] == HSM_GUN)
        .map(|event| {
            let text = |field: &str| event[field].as_str().expect("sign event field").to_owned();
            (text("role"), text("key_id"), text("payload_sha256"))
        })
        .collect();
    assert!(!online.is_empty(), "the publishes were signed online: {log:#?}");
    online.sort();
    signed.sort();
    assert_eq!(online, signed, "the server's online signatures are the signer's sign events");

    // The signer's own log: its shutdown checkpoint verifies with its own (PKCS#11) key, and its
    // sign entries are the same signatures, each at the position its event names.
    stack.signer_mut().terminate();
    let signer = stack.signer();
    let signer_checkpoint = printed_checkpoint(&signer.audit_command(&["checkpoint"]), "vkey: ");
    let entries = signer_rows(signer, "SELECT seq, kind, details FROM signer_audit_entries ORDER BY seq");
    assert_eq!(signer_checkpoint.size, entries.len() as u64, "the signer's shutdown checkpoint covers its log");
    let verify = signer.audit_command(&["verify", "--checkpoint-key", &signer_checkpoint.vkey]);
    assert_eq!(verify.status.and_then(|status| status.code()), Some(0), "{verify}");
    assert!(verify.stdout.contains("(pinned)"), "{verify}");
    assert!(verify.stdout.contains(&format!("entries: {}\n", entries.len())), "{verify}");
    let own_keys = signer_rows(
        signer,
        "SELECT backend FROM signer_keys WHERE role = 'tufa-signer-audit-checkpoint' ORDER BY created_at",
    );
    assert_eq!(own_keys, vec![json!({"backend": "pkcs11"})], "the signer's checkpoint key is in the token");
    let details: BTreeMap<i64, Value> = entries
        .iter()
        .filter(|entry| entry["kind"] == "sign")
        .map(|entry| {
            let details = serde_json::from_str(entry["details"].as_str().expect("details")).expect("details JSON");
            (entry["seq"].as_i64().expect("seq"), details)
        })
        .collect();
    for event in &events {
        let seq = event["audit_seq"].as_i64().unwrap_or_else(|| panic!("event not in the log: {event}"));
        let entry = &details[&seq];
        for field in ["key_id", "gun", "role", "payload_sha256"] {
            assert_eq!(entry[field], event[field], "{field} of the sign entry at {seq}: {entry} / {event}");
        }
    }
    let logged: Vec<(String, String, String)> = {
        let mut logged: Vec<(String, String, String)> = details
            .values()
            .filter(|entry| entry["gun"] == HSM_GUN)
            .map(|entry| {
                let text = |field: &str| entry[field].as_str().expect("sign entry field").to_owned();
                (text("role"), text("key_id"), text("payload_sha256"))
            })
            .collect();
        logged.sort();
        logged
    };
    assert_eq!(logged, online, "the signer's log holds the server entries' online signatures");
}
