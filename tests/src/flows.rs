//! End-to-end flows driven by the real notary CLI against any [`Server`]. Each flow is one
//! test per server kind (see [`crate::flow_tests!`]); each works on its own server, so flows
//! may run in parallel and use fixed GUNs.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::notary::{ListedTarget, Notary};
use crate::pki;
use crate::process::run_tool;
use crate::server::Server;

/// The delegation every flow uses: docker's conventional name.
pub const RELEASES: &str = "targets/releases";

/// Answer to the notary CLI's "Are you sure you want to proceed?" prompt.
pub const YES: &[u8] = b"yes\n";

/// Flow 1: init, add, publish, list; then remove, publish, list.
pub fn publish_list_remove(server: &Server) {
    let gun = "tufa.test/publish";
    let owner = Notary::new(server, "owner");
    owner.ok(&["init", "-p", gun]);
    assert_eq!(owner.list(gun, None), Vec::new(), "a freshly published repository has no targets");

    let file = owner.write_file("v1.bin", b"first release\n");
    owner.ok(&["add", gun, "v1", path_arg(&file)]);
    owner.ok(&["publish", gun]);
    let expected = vec![listed("v1", &file, "targets")];
    assert_eq!(owner.list(gun, None), sorted(&expected));

    // What the owner cached is exactly what the server serves.
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let served = server.metadata(gun, &format!("{role}.json"));
        assert_eq!(served.status, 200, "GET {role}.json: {served}");
        let cached = fs::read(owner.cached_metadata(gun, role)).expect("read cached metadata");
        assert!(served.body == cached, "{role}.json served by the server differs from the client's verified copy");
    }

    let reader = Notary::new(server, "reader");
    assert_eq!(reader.list(gun, None), sorted(&expected), "a client with no cache sees the same targets");

    owner.ok(&["remove", gun, "v1"]);
    owner.ok(&["publish", gun]);
    assert_eq!(owner.list(gun, None), Vec::new(), "the removed target is gone for the owner");
    assert_eq!(reader.list(gun, None), Vec::new(), "the removed target is gone for a reader with a cache");
}

/// Flow 2: the owner delegates `targets/releases` to a key that only the delegate holds;
/// the delegate publishes into it and re-signs it with `notary witness`.
pub fn delegation_publish_and_witness(server: &Server) {
    let gun = "tufa.test/delegation";
    let owner = Notary::new(server, "owner");
    let delegate = Notary::new(server, "delegate");
    // A delegate cannot sign the snapshot, so (as docker does) the server holds that key.
    init_with_server_snapshot(&owner, gun);

    let delegate_key = delegation_key(&delegate);
    let cert = path_arg(&delegate_key.cert);
    owner.ok(&["delegation", "add", "-p", gun, RELEASES, cert, "--all-paths"]);
    let delegations = server.metadata_json(gun, "targets")["signed"]["delegations"]["roles"].clone();
    assert_eq!(delegations[0]["name"], RELEASES, "targets.json declares the delegation: {delegations}");

    let expected = vec![publish_delegated(&delegate, gun, "v2", b"delegated release\n", RELEASES)];
    assert_eq!(owner.list(gun, None), sorted(&expected), "the owner sees the delegate's target");
    assert_eq!(owner.list(gun, Some(RELEASES)), sorted(&expected));
    assert_signed_by_delegation(server, gun, RELEASES);

    let version_before = version(&server.metadata_json(gun, RELEASES));
    delegate.ok(&["witness", gun, RELEASES, "-p"]);
    let version_after = version(&server.metadata_json(gun, RELEASES));
    assert_eq!(version_after, version_before + 1, "witness re-signs the delegation with a new version");
    let fetched = server.metadata(gun, &format!("{version_after}.{RELEASES}.json"));
    assert_eq!(fetched.status, 200, "GET {version_after}.{RELEASES}.json: {fetched}");
    assert_eq!(owner.list(gun, None), sorted(&expected), "witnessing keeps the targets");
    assert_eq!(Notary::new(server, "reader").list(gun, None), sorted(&expected));
}

/// Flow 3: rotate the snapshot key and then the timestamp key to new server-held keys.
pub fn server_managed_key_rotation(server: &Server) {
    let gun = "tufa.test/server-keys";
    let owner = Notary::new(server, "owner");
    owner.ok(&["init", "-p", gun]);
    let mut expected = vec![publish_target(&owner, gun, "v1", b"one\n")];

    for role in ["snapshot", "timestamp"] {
        let root_before = server.metadata_json(gun, "root");
        owner.ok(&["key", "rotate", gun, role, "-r"]);
        let root_after = server.metadata_json(gun, "root");
        assert_eq!(version(&root_after), version(&root_before) + 1, "rotating {role} publishes a new root");
        assert_ne!(role_key_ids(&root_after, role), role_key_ids(&root_before, role), "{role} key changed");

        let name = format!("after-{role}");
        expected.push(publish_target(&owner, gun, &name, name.as_bytes()));
        assert_eq!(owner.list(gun, None), sorted(&expected));
        assert_signed_by_root_role(server, gun, role);
    }
    assert_eq!(Notary::new(server, "reader").list(gun, None), sorted(&expected));
}

/// Flow 4: rotate the client-held targets key and, twice, the root key; a reader whose
/// cached root is three versions old catches up.
pub fn client_key_rotation_and_stale_reader(server: &Server) {
    let gun = "tufa.test/client-keys";
    let owner = Notary::new(server, "owner");
    owner.ok(&["init", "-p", gun]);
    let mut expected = vec![publish_target(&owner, gun, "v1", b"one\n")];
    let stale = Notary::new(server, "stale-reader");
    assert_eq!(stale.list(gun, None), sorted(&expected));
    let stale_root = version(&read_json(&stale.cached_metadata(gun, "root")));

    let root_before = server.metadata_json(gun, "root");
    owner.ok(&["key", "rotate", gun, "targets"]);
    let root_after = server.metadata_json(gun, "root");
    assert_ne!(role_key_ids(&root_after, "targets"), role_key_ids(&root_before, "targets"));
    expected.push(publish_target(&owner, gun, "v2", b"two\n"));
    assert_eq!(owner.list(gun, None), sorted(&expected));
    assert_signed_by_root_role(server, gun, "targets");

    for rotation in 1..=2 {
        let root_before = server.metadata_json(gun, "root");
        // Root rotation asks for confirmation; without "yes" the CLI aborts with status 0.
        owner.ok_with_input(YES, &["key", "rotate", gun, "root"]);
        let root_after = server.metadata_json(gun, "root");
        assert_eq!(version(&root_after), version(&root_before) + 1, "root rotation {rotation}");
        assert_ne!(role_key_ids(&root_after, "root"), role_key_ids(&root_before, "root"));
        let name = format!("after-root-{rotation}");
        expected.push(publish_target(&owner, gun, &name, name.as_bytes()));
        assert_eq!(owner.list(gun, None), sorted(&expected));
    }

    let current_root = version(&server.metadata_json(gun, "root"));
    assert!(current_root >= stale_root + 3, "the reader's root (v{stale_root}) is stale (now v{current_root})");
    assert_eq!(stale.list(gun, None), sorted(&expected), "the stale reader catches up through the root chain");
    let caught_up = version(&read_json(&stale.cached_metadata(gun, "root")));
    assert_eq!(caught_up, current_root, "the stale reader now trusts the newest root");
}

/// Flow 5: `notary delete --remote` removes the repository from the server; the GUN can
/// then be initialised again from scratch.
pub fn delete_remote(server: &Server) {
    let gun = "tufa.test/delete";
    let owner = Notary::new(server, "owner");
    owner.ok(&["init", "-p", gun]);
    publish_target(&owner, gun, "v1", b"doomed\n");
    assert_eq!(server.metadata(gun, "root.json").status, 200);

    owner.ok(&["delete", gun, "--remote"]);
    for file in ["root.json", "targets.json", "snapshot.json", "timestamp.json", "1.root.json"] {
        let response = server.metadata(gun, file);
        assert_eq!(response.status, 404, "GET {file} after delete: {response}");
        assert_eq!(response.error_code().as_deref(), Some("METADATA_NOT_FOUND"), "GET {file}: {response}");
    }
    assert!(!owner.cached_metadata(gun, "root").exists(), "delete also drops the local cache");

    let fresh = Notary::new(server, "fresh");
    let output = fresh.fails(&["list", gun]);
    assert!(
        output.combined().contains("does not have trust data for"),
        "a fresh client reports a missing repository:\n{output}"
    );

    // Deletion is complete: a new repository with the same name starts again at version 1.
    owner.ok(&["init", "-p", gun]);
    let reborn = vec![publish_target(&owner, gun, "v2", b"reborn\n")];
    assert_eq!(fresh.list(gun, None), reborn);
}

/// Flow 6: the server rejects a targets file whose signed part was changed and one signed
/// with another repository's key, and keeps serving the previous bytes.
pub fn rejects_tampered_and_foreign_updates(server: &Server) {
    let gun = "tufa.test/rejections";
    let other_gun = "tufa.test/rejections-other";
    let owner = Notary::new(server, "owner");
    // Server-held snapshot keys, so that a targets-only upload is complete and the
    // signature is the only thing wrong with it.
    init_with_server_snapshot(&owner, gun);
    let expected = vec![publish_target(&owner, gun, "v1", b"genuine\n")];
    init_with_server_snapshot(&owner, other_gun);
    for name in ["o1", "o2", "o3"] {
        publish_target(&owner, other_gun, name, name.as_bytes());
    }
    let other_gun_targets = owner.list(other_gun, None);
    assert_eq!(other_gun_targets.len(), 3);

    // After a publish with a server-held snapshot key the CLI does not refresh its cache;
    // a `list` does.
    owner.list(gun, None);
    let served_before = server.metadata(gun, "targets.json");
    assert_eq!(served_before.status, 200, "{served_before}");
    let cached = fs::read(owner.cached_metadata(gun, "targets")).expect("read cached targets.json");
    assert!(cached == served_before.body, "the client caches the served bytes");

    // (a) A changed target length (and a higher version) under the old signature.
    let genuine: Value = serde_json::from_slice(&cached).expect("cached targets.json is JSON");
    let genuine_version = version(&genuine);
    let mut tampered = genuine.clone();
    tampered["signed"]["version"] = Value::from(genuine_version + 1);
    let length = genuine["signed"]["targets"]["v1"]["length"].as_u64().expect("target length");
    tampered["signed"]["targets"]["v1"]["length"] = Value::from(length + 1);
    let body = serde_json::to_vec(&tampered).expect("serialise tampered targets");
    let response = server.post_update(gun, &[("targets", &body)]);
    assert_bad_targets(&response, "a tampered targets.json");

    // (b) A genuine, newer targets.json of another repository, signed with its key.
    let foreign = fs::read(owner.cached_metadata(other_gun, "targets")).expect("read other targets.json");
    let foreign_version = version(&serde_json::from_slice(&foreign).expect("JSON"));
    assert!(foreign_version > genuine_version, "the foreign file must not lose on its version alone");
    let response = server.post_update(gun, &[("targets", &foreign)]);
    assert_bad_targets(&response, "another repository's targets.json");

    let served_after = server.metadata(gun, "targets.json");
    assert_eq!(served_after.status, 200, "{served_after}");
    assert!(served_after.body == served_before.body, "targets.json changed after rejected updates");
    assert_eq!(owner.list(gun, None), sorted(&expected));
    assert_eq!(Notary::new(server, "reader").list(gun, None), sorted(&expected));
    assert_eq!(owner.list(other_gun, None), other_gun_targets, "the other repository is untouched");
}

/// Flow 7: a repository whose snapshot key is held by the server from its first publish
/// (what docker does): the first upload carries no snapshot and the server makes one.
pub fn server_managed_snapshot_from_start(server: &Server) {
    let gun = "tufa.test/server-snapshot";
    let owner = Notary::new(server, "owner");
    init_with_server_snapshot(&owner, gun);
    let first = server.metadata(gun, "1.snapshot.json");
    assert_eq!(first.status, 200, "the server generated snapshot version 1: {first}");
    assert_signed_by_root_role(server, gun, "snapshot");

    let expected = vec![publish_target(&owner, gun, "v1", b"one\n"), publish_target(&owner, gun, "v2", b"two\n")];
    assert_eq!(owner.list(gun, None), sorted(&expected));
    assert_signed_by_root_role(server, gun, "snapshot");
    assert_eq!(Notary::new(server, "reader").list(gun, None), sorted(&expected));
}

/// `notary init <gun>` without publishing, then `notary key rotate <gun> snapshot -r`:
/// the rotation is the first publish, so the repository never had a client-held snapshot key.
/// (The 0.7 CLI has no init flag for this; docker asks for `snapshot.key` during init.)
pub fn init_with_server_snapshot(owner: &Notary, gun: &str) {
    owner.ok(&["init", gun]);
    owner.ok(&["key", "rotate", gun, "snapshot", "-r"]);
}

/// Creates a P-256 delegation key for `targets/releases` in `delegate`'s own trust dir (an
/// openssl key imported with `notary key import`) and returns the key with its self-signed
/// certificate, which the owner passes to `notary delegation add`.
pub fn delegation_key(delegate: &Notary) -> pki::CertifiedKey {
    let pair = pki::self_signed(delegate.scratch_dir(), "delegation", "delegate");
    delegate.ok(&["key", "import", path_arg(&pair.key), "--role", RELEASES]);
    pair
}

/// Adds a file with `contents` as target `name` of the `targets` role and publishes it
/// (`notary add -p`), returning the row `notary list` should then show.
pub fn publish_target(client: &Notary, gun: &str, name: &str, contents: &[u8]) -> ListedTarget {
    let file = client.write_file(&format!("{name}.bin"), contents);
    client.ok(&["add", "-p", gun, name, path_arg(&file)]);
    listed(name, &file, "targets")
}

/// Adds and publishes a target into the delegation `role`.
pub fn publish_delegated(client: &Notary, gun: &str, name: &str, contents: &[u8], role: &str) -> ListedTarget {
    let file = client.write_file(&format!("{name}.bin"), contents);
    client.ok(&["add", "-p", gun, name, path_arg(&file), "--roles", role]);
    listed(name, &file, role)
}

/// The `notary list` row for `file` published as `name` by `role`.
pub fn listed(name: &str, file: &Path, role: &str) -> ListedTarget {
    ListedTarget {
        name: name.to_owned(),
        digest: sha256_hex(file),
        size: fs::metadata(file).expect("stat target file").len(),
        role: role.to_owned(),
    }
}

/// Lower-case hex SHA-256 of a file, from coreutils' `sha256sum`.
fn sha256_hex(file: &Path) -> String {
    let output = run_tool(Command::new("sha256sum").arg(file));
    output.stdout.split_whitespace().next().unwrap_or_default().to_owned()
}

/// `rows` in the order [`Notary::list`] returns them.
pub fn sorted(rows: &[ListedTarget]) -> Vec<ListedTarget> {
    let mut rows = rows.to_vec();
    rows.sort_by(|left, right| left.name.cmp(&right.name).then_with(|| left.role.cmp(&right.role)));
    rows
}

/// A path as a command-line argument (test paths are always UTF-8).
pub fn path_arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// `signed.version` of a metadata file.
pub fn version(metadata: &Value) -> u64 {
    metadata["signed"]["version"].as_u64().unwrap_or_else(|| panic!("no signed.version in {metadata}"))
}

/// The key IDs root lists for `role`, sorted.
pub fn role_key_ids(root: &Value, role: &str) -> Vec<String> {
    let mut ids = string_list(&root["signed"]["roles"][role]["keyids"]);
    ids.sort();
    ids
}

/// The key IDs that signed a metadata file.
fn signature_key_ids(metadata: &Value) -> Vec<String> {
    let signatures = metadata["signatures"].as_array().cloned().unwrap_or_default();
    signatures.iter().filter_map(|signature| signature["keyid"].as_str().map(str::to_owned)).collect()
}

fn string_list(value: &Value) -> Vec<String> {
    let items = value.as_array().cloned().unwrap_or_default();
    items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
}

/// The current `<role>.json` carries a signature by a key that the current root lists for
/// that role (for snapshot/timestamp: the server signed it with the key it was given).
#[track_caller]
fn assert_signed_by_root_role(server: &Server, gun: &str, role: &str) {
    let allowed = role_key_ids(&server.metadata_json(gun, "root"), role);
    let used = signature_key_ids(&server.metadata_json(gun, role));
    assert!(
        used.iter().any(|id| allowed.contains(id)),
        "{role}.json of {gun} is signed by {used:?}, but root allows only {allowed:?}"
    );
}

/// The delegation's current file is signed by a key its parent `targets` declares for it.
#[track_caller]
fn assert_signed_by_delegation(server: &Server, gun: &str, role: &str) {
    let targets = server.metadata_json(gun, "targets");
    let roles = targets["signed"]["delegations"]["roles"].as_array().cloned().unwrap_or_default();
    let declared = roles
        .iter()
        .find(|entry| entry["name"] == role)
        .unwrap_or_else(|| panic!("targets.json of {gun} does not declare {role}"));
    let allowed = string_list(&declared["keyids"]);
    let used = signature_key_ids(&server.metadata_json(gun, role));
    assert!(
        used.iter().any(|id| allowed.contains(id)),
        "{role}.json of {gun} is signed by {used:?}, but targets allows only {allowed:?}"
    );
}

/// A 400 with the single error code `INVALID_UPDATE` whose detail names the targets role
/// as the culprit (`{"Name":"ErrBadTargets","Error":{"Msg":...}}`, which the CLI prints).
#[track_caller]
fn assert_bad_targets(response: &crate::server::HttpResponse, what: &str) {
    assert_eq!(response.status, 400, "uploading {what}: {response}");
    assert_eq!(response.error_code().as_deref(), Some("INVALID_UPDATE"), "uploading {what}: {response}");
    let detail = &response.json()["errors"][0]["detail"];
    assert_eq!(detail["Name"], "ErrBadTargets", "uploading {what}: {response}");
    assert!(detail["Error"]["Msg"].is_string(), "uploading {what}: {response}");
}
