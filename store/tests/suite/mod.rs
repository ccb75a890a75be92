//! The storage conformance suite: every check takes a fresh, empty store and must pass on
//! every backend.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tufa_store::{ChangeCategory, CurrentEntry, Store, StoreError, StoredFile, StoredKey, Update};

mod audit;
mod auth;
mod keys_owned;

pub(crate) use audit::{
    account_changes_are_recorded_only_when_they_happen, audit_appends_are_gapless_under_concurrency,
    audit_entries_are_written_with_their_change, checkpoints_and_signing_key, grants_and_target_history,
    history_canonical_ids_read_back_whether_or_not_they_differ, pending_index_rows_move_once_under_concurrency,
    small_records_index_rows_are_moved_in_order, target_history_rows_keep_their_values_and_order,
};
pub(crate) use auth::{
    api_tokens, kek_ids_include_token_keys, principal_removal_cascades, principals, role_bindings, token_key_race,
    token_key_race_in_one_store, token_keys, tombstones,
};
pub(crate) use keys_owned::{expiring_pages, key_owners};

use crate::support::{Repo, deletion, expiring_at, file, now, pointer, sha256_hex, update};

const GUN: &str = "example.com/app";
const OTHER_GUN: &str = "example.com/other";

fn assert_old_version(result: Result<(), StoreError>, expected_role: &str) {
    match result {
        Err(StoreError::OldVersion { role }) => assert_eq!(role, expected_role),
        other => panic!("expected OldVersion for {expected_role}, got {other:?}"),
    }
}

fn assert_internal(result: Result<(), StoreError>, needle: &str) {
    match result {
        Err(StoreError::Internal(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected Internal({needle}), got {other:?}"),
    }
}

/// Roles and versions of a list of files, for short assertions.
fn summary(files: &[StoredFile]) -> Vec<(String, i64)> {
    files.iter().map(|file| (file.role.clone(), file.version)).collect()
}

async fn current_version(store: &Arc<dyn Store>, gun: &str, role: &str) -> Option<i64> {
    store.current(gun, role).await.expect("current").map(|file| file.version)
}

async fn change_count(store: &Arc<dyn Store>) -> usize {
    store.changefeed(None, 0, 1000).await.expect("changefeed").len()
}

pub(crate) async fn verbatim_bytes(store: Arc<dyn Store>) {
    assert!(matches!(store.backend(), "sqlite" | "postgres"));
    store.ping().await.expect("ping");

    // Every byte value, NUL and invalid UTF-8 included, and a 2 MiB file.
    let odd: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let expires = now() + Duration::days(14);
    let mut repo = Repo::new(1, "v1");
    repo.root.data = odd.clone();
    repo.root.sha256 = sha256_hex(&odd);
    repo.targets.data = big.clone();
    repo.targets.sha256 = sha256_hex(&big);
    repo.timestamp = expiring_at(repo.timestamp, expires);

    let before = Utc::now() - Duration::seconds(1);
    store.update(repo.first_publish(GUN)).await.expect("publish");
    let after = Utc::now() + Duration::seconds(1);

    let root = store.current(GUN, "root").await.expect("read").expect("root");
    assert_eq!(root.data, odd);
    assert_eq!(root.sha256, sha256_hex(&odd));
    assert_eq!((root.role.as_str(), root.version), ("root", 1));
    assert_eq!(root.expires, None);
    assert!(before <= root.created_at && root.created_at <= after, "{root:?}");

    let targets = store.current(GUN, "targets").await.expect("read").expect("targets");
    assert_eq!(targets.data.len(), big.len());
    assert!(targets.data == big, "2 MiB file changed on the way");

    let timestamp = store.current(GUN, "timestamp").await.expect("read").expect("timestamp");
    assert_eq!(timestamp.expires, Some(expires));
    assert_eq!(timestamp.data, repo.timestamp.data);

    // Sub-microsecond precision is dropped the same way on every backend.
    let precise = expires + Duration::nanoseconds(999);
    let snapshot = expiring_at(file("snapshot", 2, "precise"), precise);
    let all = [&repo.root, &repo.targets, &snapshot, &repo.timestamp];
    store.update(update(GUN, &[&snapshot], &all, Some(1))).await.expect("update");
    let stored = store.current(GUN, "snapshot").await.expect("read").expect("snapshot");
    assert_eq!(stored.expires, Some(expires));
}

pub(crate) async fn current_reads(store: Arc<dyn Store>) {
    assert_eq!(store.current(GUN, "root").await.expect("read"), None);
    assert!(store.current_all(GUN).await.expect("read").is_empty());

    let repo = Repo::new(2, "a");
    store.update(repo.first_publish(GUN)).await.expect("publish");
    let other = Repo::new(5, "other");
    store.update(other.first_publish(OTHER_GUN)).await.expect("publish other");

    for stored in repo.all() {
        let current = store.current(GUN, &stored.role).await.expect("read").expect("present");
        assert_eq!(current.data, stored.data);
        assert_eq!(current.sha256, stored.sha256);
        assert_eq!(current.version, stored.version);
    }
    assert_eq!(store.current(GUN, "targets/releases").await.expect("read"), None);
    assert_eq!(store.current("nobody", "root").await.expect("read"), None);

    let many = store.current_many(GUN, &["timestamp", "root", "targets/missing"]).await.expect("read");
    assert_eq!(summary(&many), [("root".to_string(), 1), ("timestamp".to_string(), 2)]);
    assert!(store.current_many(GUN, &[]).await.expect("read").is_empty());

    let all = store.current_all(GUN).await.expect("read");
    assert_eq!(
        summary(&all),
        [
            ("root".to_string(), 1),
            ("snapshot".to_string(), 2),
            ("targets".to_string(), 2),
            ("timestamp".to_string(), 2),
        ]
    );
    let all_other = store.current_all(OTHER_GUN).await.expect("read");
    assert_eq!(
        summary(&all_other),
        [
            ("root".to_string(), 1),
            ("snapshot".to_string(), 5),
            ("targets".to_string(), 5),
            ("timestamp".to_string(), 5),
        ]
    );
}

pub(crate) async fn current_pointer_moves(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let delegation = file("targets/releases", 1, "v1");
    let mut first: Vec<&_> = v1.all().to_vec();
    first.push(&delegation);
    store.update(update(GUN, &first, &first, None)).await.expect("publish v1");
    assert_eq!(current_version(&store, GUN, "targets/releases").await, Some(1));

    // v2 drops the delegation from the current set.
    let v2 = Repo::new(2, "v2");
    store.update(v2.next_publish(GUN, 1)).await.expect("publish v2");
    assert_eq!(current_version(&store, GUN, "targets").await, Some(2));
    assert_eq!(current_version(&store, GUN, "timestamp").await, Some(2));
    assert_eq!(current_version(&store, GUN, "root").await, Some(1));
    assert_eq!(store.current(GUN, "targets/releases").await.expect("read"), None);
    assert_eq!(store.current_all(GUN).await.expect("read").len(), 4);

    // Old versions stay readable by version and checksum.
    let old = store.by_version(GUN, "targets", 1).await.expect("read").expect("v1 kept");
    assert_eq!(old.data, v1.targets.data);
    let old =
        store.by_checksum(GUN, "targets/releases", &delegation.sha256).await.expect("read").expect("delegation kept");
    assert_eq!(old.version, 1);

    // A pointer may move back to an older stored file (the server decides what is current).
    let back = [&v1.root, &v1.targets, &v2.snapshot, &v2.timestamp];
    store.update(update(GUN, &[], &back, Some(2))).await.expect("repoint");
    assert_eq!(current_version(&store, GUN, "targets").await, Some(1));
}

pub(crate) async fn by_checksum_and_version(store: Arc<dyn Store>) {
    let repo = Repo::new(3, "same");
    store.update(repo.first_publish(GUN)).await.expect("publish");
    // The same bytes under another GUN are a separate row.
    store.update(repo.first_publish(OTHER_GUN)).await.expect("publish other");
    store.delete_gun(OTHER_GUN, deletion(OTHER_GUN)).await.expect("delete other");

    let found = store.by_checksum(GUN, "snapshot", &repo.snapshot.sha256).await.expect("read").expect("found");
    assert_eq!((found.version, found.data.clone()), (3, repo.snapshot.data.clone()));
    assert_eq!(found.sha256, repo.snapshot.sha256);

    let misses = [
        (GUN, "targets", repo.snapshot.sha256.as_str()),
        (OTHER_GUN, "snapshot", repo.snapshot.sha256.as_str()),
        (GUN, "snapshot", &"0".repeat(64)),
    ];
    for (gun, role, checksum) in misses {
        let missing = store.by_checksum(gun, role, checksum).await.expect("read");
        assert_eq!(missing, None, "{gun} {role} {checksum}");
    }

    let found = store.by_version(GUN, "timestamp", 3).await.expect("read").expect("found");
    assert_eq!(found.data, repo.timestamp.data);
    for (gun, role, version) in [(GUN, "timestamp", 2), (GUN, "timestamp", 4), (OTHER_GUN, "root", 1)] {
        let missing = store.by_version(gun, role, version).await.expect("read");
        assert_eq!(missing, None, "{gun} {role} {version}");
    }
}

pub(crate) async fn old_version_rejected(store: Arc<dyn Store>) {
    store.update(Repo::new(2, "v2").first_publish(GUN)).await.expect("publish");
    let changes = change_count(&store).await;

    // Same version as stored, and lower than stored, each with a valid rest of the batch.
    for (version, tag) in [(2, "same"), (1, "lower")] {
        let targets = file("targets", version, tag);
        let snapshot = file("snapshot", 3, tag);
        let timestamp = file("timestamp", 3, tag);
        let root = Repo::new(2, "v2").root;
        let rejected =
            update(GUN, &[&snapshot, &targets, &timestamp], &[&root, &targets, &snapshot, &timestamp], Some(2));
        assert_old_version(store.update(rejected).await, "targets");
        assert_eq!(store.by_version(GUN, "snapshot", 3).await.expect("read"), None);
        assert_eq!(store.by_version(GUN, "timestamp", 3).await.expect("read"), None);
    }

    // The same role and version twice in one batch.
    let first = file("targets", 3, "first");
    let second = file("targets", 3, "second");
    assert_old_version(store.update(update(GUN, &[&first, &second], &[], Some(2))).await, "targets");

    // Nothing of the rejected batches was written.
    assert_eq!(store.by_version(GUN, "targets", 3).await.expect("read"), None);
    assert_eq!(current_version(&store, GUN, "timestamp").await, Some(2));
    assert_eq!(current_version(&store, GUN, "targets").await, Some(2));
    assert_eq!(store.current_all(GUN).await.expect("read").len(), 4);
    assert_eq!(change_count(&store).await, changes);

    // Versions need not be consecutive.
    store.update(Repo::new(10, "v10").next_publish(GUN, 2)).await.expect("jump to v10");
    assert_eq!(current_version(&store, GUN, "targets").await, Some(10));
}

pub(crate) async fn expected_timestamp_checked(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    // The GUN has no timestamp yet, so expecting one fails.
    let mut wrong = v1.first_publish(GUN);
    wrong.expected_timestamp_version = Some(1);
    assert_old_version(store.update(wrong).await, "timestamp");
    assert!(store.current_all(GUN).await.expect("read").is_empty());
    assert_eq!(store.by_version(GUN, "root", 1).await.expect("read"), None);

    store.update(v1.first_publish(GUN)).await.expect("publish v1");
    let changes = change_count(&store).await;

    let v2 = Repo::new(2, "v2");
    for expected in [None, Some(0), Some(2)] {
        let mut stale = v2.next_publish(GUN, 1);
        stale.expected_timestamp_version = expected;
        assert_old_version(store.update(stale).await, "timestamp");
        assert_eq!(store.by_version(GUN, "targets", 2).await.expect("read"), None);
        assert_eq!(current_version(&store, GUN, "timestamp").await, Some(1));
    }
    assert_eq!(change_count(&store).await, changes);

    store.update(v2.next_publish(GUN, 1)).await.expect("publish v2");
    assert_eq!(current_version(&store, GUN, "timestamp").await, Some(2));
}

pub(crate) async fn dangling_pointer_rejected(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    store.update(v1.first_publish(GUN)).await.expect("publish v1");
    let other = Repo::new(1, "other");
    store.update(other.first_publish(OTHER_GUN)).await.expect("publish other");
    let changes = change_count(&store).await;

    let v2 = Repo::new(2, "v2");
    let unstored = file("targets/releases", 1, "never stored");
    let cases = [
        // A checksum nobody stored.
        CurrentEntry { role: "targets/releases".into(), sha256: unstored.sha256.clone() },
        // A file of another GUN.
        pointer(&other.targets),
        // A stored file of this GUN, but under another role.
        CurrentEntry { role: "snapshot".into(), sha256: v1.targets.sha256.clone() },
    ];
    for bad in cases {
        let mut current: Vec<CurrentEntry> = [&v1.root, &v2.timestamp].into_iter().map(pointer).collect();
        current.push(bad);
        let rejected = Update {
            gun: GUN.into(),
            files: vec![v2.targets.clone(), v2.snapshot.clone(), v2.timestamp.clone()],
            current,
            expected_timestamp_version: Some(1),
            record: deletion(GUN),
        };
        assert_internal(store.update(rejected).await, "not stored");
        // Atomic: the batch's files were not inserted and the pointers did not move.
        assert_eq!(store.by_version(GUN, "targets", 2).await.expect("read"), None);
        assert_eq!(store.by_version(GUN, "timestamp", 2).await.expect("read"), None);
        let current = store.current_all(GUN).await.expect("read");
        assert_eq!(current.len(), 4);
        assert!(current.iter().all(|file| file.version == 1));
    }
    assert_eq!(change_count(&store).await, changes);
}

pub(crate) async fn malformed_updates(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let mut wrong_sum = v1.first_publish(GUN);
    wrong_sum.files[1].data.push(b' ');
    assert_internal(store.update(wrong_sum).await, "does not match");

    let mut upper = v1.first_publish(GUN);
    upper.files[0].sha256 = upper.files[0].sha256.to_uppercase();
    assert_internal(store.update(upper).await, "lowercase hex");

    let mut twice = v1.first_publish(GUN);
    twice.current.push(pointer(&v1.root));
    assert_internal(store.update(twice).await, "twice");

    let mut no_gun = v1.first_publish(GUN);
    no_gun.gun.clear();
    assert_internal(store.update(no_gun).await, "empty GUN");

    assert!(store.current_all(GUN).await.expect("read").is_empty());
    assert_eq!(change_count(&store).await, 0);
}

pub(crate) async fn changefeed_records(store: Arc<dyn Store>) {
    assert!(store.changefeed(None, 0, 100).await.expect("feed").is_empty());

    let a1 = Repo::new(1, "a1");
    store.update(a1.first_publish(GUN)).await.expect("a1");
    let b1 = Repo::new(1, "b1");
    store.update(b1.first_publish(OTHER_GUN)).await.expect("b1");
    let a2 = Repo::new(2, "a2");
    store.update(a2.next_publish(GUN, 1)).await.expect("a2");
    // A batch without a timestamp writes no record.
    let targets = file("targets", 3, "a3");
    let current = [&a2.root, &targets, &a2.snapshot, &a2.timestamp];
    store.update(update(GUN, &[&targets], &current, Some(2))).await.expect("targets only");
    assert!(store.delete_gun(OTHER_GUN, deletion(OTHER_GUN)).await.expect("delete"));

    let all = store.changefeed(None, 0, 100).await.expect("feed");
    let seen: Vec<(&str, i64, &str, ChangeCategory)> = all
        .iter()
        .map(|change| (change.gun.as_str(), change.version, change.sha256.as_str(), change.category))
        .collect();
    assert_eq!(
        seen,
        [
            (GUN, 1, a1.timestamp.sha256.as_str(), ChangeCategory::Update),
            (OTHER_GUN, 1, b1.timestamp.sha256.as_str(), ChangeCategory::Update),
            (GUN, 2, a2.timestamp.sha256.as_str(), ChangeCategory::Update),
            (OTHER_GUN, 0, "", ChangeCategory::Deletion),
        ]
    );
    let ids: Vec<i64> = all.iter().map(|change| change.id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert!(all.windows(2).all(|pair| pair[0].created_at <= pair[1].created_at));
    assert!(all.iter().all(|change| change.created_at <= Utc::now()));
    assert_eq!(ChangeCategory::Update.as_str(), "update");
    assert_eq!(ChangeCategory::Deletion.to_string(), "deletion");

    let page = |changes: Vec<tufa_store::Change>| -> Vec<i64> { changes.iter().map(|change| change.id).collect() };
    // Forward paging.
    assert_eq!(page(store.changefeed(None, 0, 2).await.expect("feed")), ids[..2]);
    assert_eq!(page(store.changefeed(None, ids[1], 2).await.expect("feed")), ids[2..]);
    assert!(store.changefeed(None, ids[3], 2).await.expect("feed").is_empty());
    // Backwards paging, returned oldest to newest.
    assert_eq!(page(store.changefeed(None, -1, -2).await.expect("feed")), ids[2..]);
    assert_eq!(page(store.changefeed(None, -1, 2).await.expect("feed")), ids[2..]);
    assert_eq!(page(store.changefeed(None, 0, -2).await.expect("feed")), ids[2..]);
    assert_eq!(page(store.changefeed(None, ids[3], -2).await.expect("feed")), ids[1..3]);
    assert_eq!(page(store.changefeed(None, ids[2], -5).await.expect("feed")), ids[..2]);
    assert!(store.changefeed(None, ids[0], -5).await.expect("feed").is_empty());
    assert_eq!(page(store.changefeed(None, -1, -100).await.expect("feed")), ids);
    // Zero records is the caller's default to pick; the store returns nothing.
    assert!(store.changefeed(None, 0, 0).await.expect("feed").is_empty());

    // Per-GUN filter.
    assert_eq!(page(store.changefeed(Some(GUN), 0, 100).await.expect("feed")), [ids[0], ids[2]]);
    assert_eq!(page(store.changefeed(Some(GUN), ids[0], 1).await.expect("feed")), [ids[2]]);
    assert_eq!(page(store.changefeed(Some(OTHER_GUN), -1, -1).await.expect("feed")), [ids[3]]);
    assert_eq!(page(store.changefeed(Some(OTHER_GUN), ids[3], -10).await.expect("feed")), [ids[1]]);
    assert!(store.changefeed(Some("nobody"), 0, 10).await.expect("feed").is_empty());
}

pub(crate) async fn delete_gun(store: Arc<dyn Store>) {
    assert!(!store.delete_gun(GUN, deletion(GUN)).await.expect("delete nothing"));
    assert_eq!(change_count(&store).await, 0);

    let v1 = Repo::new(1, "v1");
    store.update(v1.first_publish(GUN)).await.expect("publish");
    store.update(Repo::new(2, "v2").next_publish(GUN, 1)).await.expect("v2");
    store.update(Repo::new(1, "other").first_publish(OTHER_GUN)).await.expect("other");
    store.insert_key(&key("k1", GUN, "timestamp")).await.expect("key");

    assert!(store.delete_gun(GUN, deletion(GUN)).await.expect("delete"));
    assert!(store.current_all(GUN).await.expect("read").is_empty());
    for (role, version) in [("root", 1), ("targets", 1), ("targets", 2), ("timestamp", 2)] {
        assert_eq!(store.by_version(GUN, role, version).await.expect("read"), None);
    }
    assert_eq!(store.by_checksum(GUN, "root", &v1.root.sha256).await.expect("read"), None);
    // Other GUNs and the server's keys are untouched.
    assert_eq!(store.current_all(OTHER_GUN).await.expect("read").len(), 4);
    assert!(store.key("k1").await.expect("key").is_some());

    let feed = store.changefeed(Some(GUN), -1, -1).await.expect("feed");
    assert_eq!(feed.len(), 1);
    assert_eq!((feed[0].category, feed[0].version, feed[0].sha256.as_str()), (ChangeCategory::Deletion, 0, ""));
    let changes = change_count(&store).await;
    assert!(!store.delete_gun(GUN, deletion(GUN)).await.expect("delete again"));
    assert_eq!(change_count(&store).await, changes);

    // The GUN starts over from scratch.
    store.update(v1.first_publish(GUN)).await.expect("republish");
    assert_eq!(current_version(&store, GUN, "timestamp").await, Some(1));
}

pub(crate) async fn expiring(store: Arc<dyn Store>) {
    let now = now();
    let soon = |hours: i64| now + Duration::hours(hours);
    let publish = |gun: &'static str, version: i64, timestamp_expiry, snapshot_expiry| {
        let mut repo = Repo::new(version, gun);
        repo.targets = expiring_at(repo.targets, soon(-100));
        repo.timestamp.expires = timestamp_expiry;
        repo.snapshot.expires = snapshot_expiry;
        repo
    };
    // Fresh timestamp that expires in an hour.
    let x = publish("x", 1, Some(soon(1)), Some(soon(720)));
    store.update(x.first_publish("x")).await.expect("x");
    // Expired snapshot.
    let y = publish("y", 1, Some(soon(240)), Some(soon(-1)));
    store.update(y.first_publish("y")).await.expect("y");
    // An expired targets file and an expired old timestamp do not count.
    let z1 = publish("z", 1, Some(soon(-50)), Some(soon(720)));
    store.update(z1.first_publish("z")).await.expect("z1");
    let z2 = publish("z", 2, Some(soon(240)), Some(soon(720)));
    store.update(z2.next_publish("z", 1)).await.expect("z2");
    // No expiry at all.
    let w = publish("w", 1, None, None);
    store.update(w.first_publish("w")).await.expect("w");

    assert_eq!(store.expiring(soon(2), 10).await.expect("sweep"), ["y", "x"]);
    assert_eq!(store.expiring(soon(2), 1).await.expect("sweep"), ["y"]);
    assert!(store.expiring(soon(-2), 10).await.expect("sweep").is_empty());
    assert!(store.expiring(soon(2), 0).await.expect("sweep").is_empty());
    assert_eq!(store.expiring(soon(1000), 10).await.expect("sweep"), ["y", "x", "z"]);
}

fn key(key_id: &str, gun: &str, role: &str) -> StoredKey {
    StoredKey {
        key_id: key_id.into(),
        gun: gun.into(),
        role: role.into(),
        algorithm: "ecdsa".into(),
        public: format!("public {key_id}").into_bytes(),
        sealed_private: vec![0, 1, 2, 255, 254, key_id.len() as u8],
        kek_id: "kek-2026".into(),
        created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("time"),
        last_used: None,
    }
}

pub(crate) async fn keys(store: Arc<dyn Store>) {
    for id in ["k3", "k1", "k2"] {
        store.insert_key(&key(id, GUN, "timestamp")).await.expect("insert");
    }
    store.insert_key(&key("k0", GUN, "snapshot")).await.expect("insert");
    let mut rsa = key("a0", GUN, "timestamp");
    rsa.algorithm = "rsa".into();
    store.insert_key(&rsa).await.expect("insert");

    assert_eq!(store.key("k1").await.expect("get"), Some(key("k1", GUN, "timestamp")));
    assert_eq!(store.key("missing").await.expect("get"), None);
    assert_internal(store.insert_key(&key("k1", GUN, "timestamp")).await, "already exists");

    let unused = store.unused_key(GUN, "timestamp", "ecdsa").await.expect("unused").expect("some key");
    assert_eq!(unused.key_id, "k1");

    let before = Utc::now() - Duration::seconds(1);
    store.mark_key_used("k1").await.expect("mark");
    let used = store.key("k1").await.expect("get").expect("k1");
    let last_used = used.last_used.expect("marked");
    assert!(before <= last_used && last_used <= Utc::now() + Duration::seconds(1));
    let next = store.unused_key(GUN, "timestamp", "ecdsa").await.expect("unused").expect("some key");
    assert_eq!(next.key_id, "k2");

    let snapshot_key = store.unused_key(GUN, "snapshot", "ecdsa").await.expect("unused");
    assert_eq!(snapshot_key.map(|key| key.key_id), Some("k0".into()));
    let rsa_key = store.unused_key(GUN, "timestamp", "rsa").await.expect("unused");
    assert_eq!(rsa_key.map(|key| key.key_id), Some("a0".into()));
    assert_eq!(store.unused_key(OTHER_GUN, "timestamp", "ecdsa").await.expect("unused"), None);

    for id in ["k2", "k3"] {
        store.mark_key_used(id).await.expect("mark");
    }
    assert_eq!(store.unused_key(GUN, "timestamp", "ecdsa").await.expect("unused"), None);
    assert_internal(store.mark_key_used("missing").await, "no server key");
}

/// Which key-encryption keys sealed the stored keys, and one key per KEK.
pub(crate) async fn keys_by_kek(store: Arc<dyn Store>) {
    assert_eq!(store.kek_ids().await.expect("kek ids"), Vec::<String>::new());
    assert_eq!(store.key_sealed_with("kek-2026").await.expect("by kek"), None);
    for (id, kek) in [("k3", "kek-b"), ("k2", "kek-a"), ("k1", "kek-b"), ("k4", "kek-a")] {
        let mut sealed = key(id, GUN, "timestamp");
        sealed.kek_id = kek.into();
        store.insert_key(&sealed).await.expect("insert");
    }
    assert_eq!(store.kek_ids().await.expect("kek ids"), ["kek-a", "kek-b"]);
    let first_a = store.key_sealed_with("kek-a").await.expect("by kek").expect("a key");
    assert_eq!((first_a.key_id.as_str(), first_a.kek_id.as_str()), ("k2", "kek-a"));
    let mut expected = key("k2", GUN, "timestamp");
    expected.kek_id = "kek-a".into();
    assert_eq!(first_a, expected);
    let first_b = store.key_sealed_with("kek-b").await.expect("by kek").expect("a key");
    assert_eq!((first_b.key_id.as_str(), first_b.kek_id.as_str()), ("k1", "kek-b"));
    assert_eq!(store.key_sealed_with("kek-c").await.expect("by kek"), None);
}

/// Eight publishers race three times on one GUN: to publish version 1, to publish version
/// 2 on top of it, and to publish eight different versions on top of version 2. Each race
/// has exactly one winner, and the stored state is exactly the winner's publish.
pub(crate) async fn concurrent_publishes(store: Arc<dyn Store>) {
    const RACERS: i64 = 8;
    // (expected timestamp, base version, whether each racer adds its number to the version)
    let rounds = [(None, 1, false), (Some(1), 2, false), (Some(2), 10, true)];
    let mut feed_versions = Vec::new();
    for (round, (expected, base, spread)) in rounds.into_iter().enumerate() {
        let version_of = move |racer: i64| if spread { base + racer } else { base };
        let tag = move |racer: i64| format!("round {round} racer {racer}");
        let mut racers = Vec::new();
        for racer in 0..RACERS {
            let store = store.clone();
            let repo = Repo::new(version_of(racer), &tag(racer));
            racers.push(tokio::spawn(async move {
                let update = match expected {
                    None => repo.first_publish(GUN),
                    Some(previous) => repo.next_publish(GUN, previous),
                };
                (racer, store.update(update).await)
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            let (racer, result) = racer.await.expect("racer task");
            match result {
                Ok(()) => winners.push(racer),
                Err(StoreError::OldVersion { .. }) => {}
                Err(other) => panic!("round {round} racer {racer}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");

        let winner = Repo::new(version_of(winners[0]), &tag(winners[0]));
        let current = store.current_all(GUN).await.expect("read");
        let expected_current = [&winner.root, &winner.snapshot, &winner.targets, &winner.timestamp];
        assert_eq!(current.len(), expected_current.len());
        for (stored, expected) in current.iter().zip(expected_current) {
            assert_eq!((&stored.role, &stored.data), (&expected.role, &expected.data));
        }
        // Losers left no rows behind.
        for racer in (0..RACERS).filter(|racer| *racer != winners[0]) {
            let loser = file("timestamp", version_of(racer), &tag(racer));
            let found = store.by_checksum(GUN, "timestamp", &loser.sha256).await.expect("read");
            assert_eq!(found, None, "round {round}: racer {racer} left a timestamp");
        }
        feed_versions.push(version_of(winners[0]));
    }
    let feed = store.changefeed(Some(GUN), 0, 100).await.expect("feed");
    let versions: Vec<i64> = feed.iter().map(|change| change.version).collect();
    assert_eq!(versions, feed_versions);
}
