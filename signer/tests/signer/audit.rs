//! The signer's tamper-evident log on SQLite and PostgreSQL: what each operation appends, gapless
//! positions under concurrent signing by two "processes" (two pools on one database), failures
//! that append nothing, the reserved checkpoint key, signed checkpoints, the backfill of old sign
//! events, and tampering (an edited, deleted, inserted and swapped row) found by `verify_log`
//! with the position it happened at.

use std::sync::Arc;

use serde_json::json;
use tufa_audit::checkpoint;
use tufa_audit::tree::Frontier;
use tufa_audit::verify::{ProblemKind, Report};
use tufa_audit::{Entry, NewEntry};
use tufa_core::keys::sha256;
use tufa_signer::backend::KeyBackend;
use tufa_signer::backend::software::SoftwareBackend;
use tufa_signer::checkpoint::{Checkpointer, CheckpointerError, Made};
use tufa_signer::run::{KeySource, verify_log};
use tufa_signer::service::{ServiceError, SignerService};
use tufa_signer::store::{Actor, CHECKPOINT_ROLE, EventFilter, Store, StoredEntry};

use crate::support::{KEK_A, TestDb, software};

const GUN: &str = "docker.io/library/alpine";
const ORIGIN: &str = "signer.example.com/audit";

/// Runs `suite` on a fresh SQLite database and a fresh PostgreSQL database.
macro_rules! on_both_databases {
    ($($suite:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    super::$suite(crate::support::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    super::$suite(crate::support::TestDb::postgres()).await;
                }
            )*
        }
    };
}

on_both_databases!(
    operations_become_chained_entries,
    concurrent_signers_append_without_gaps,
    failed_operations_append_nothing,
    the_checkpoint_key_is_reserved,
    processes_starting_together_share_one_checkpoint_key,
    checkpoints_cover_new_entries_and_verify_with_their_key,
    old_sign_events_are_backfilled_in_order,
    an_edited_row_is_named,
    a_deleted_row_is_named,
    an_inserted_row_is_named,
    swapped_rows_are_named,
);

fn backend() -> Arc<SoftwareBackend> {
    software(&[("a", KEK_A)], "a")
}

fn client(request: &str) -> Actor {
    Actor {
        principal: Some("CN=tufa-server".to_owned()),
        address: Some("10.0.0.7:50123".to_owned()),
        request_id: Some(request.to_owned()),
    }
}

async fn entries(store: &Store) -> Vec<StoredEntry> {
    store.audit_entries(None, 10_000).await.unwrap()
}

fn details(entry: &Entry) -> serde_json::Value {
    serde_json::from_str(&entry.details).unwrap()
}

async fn checkpointer(store: &Store, backend: Arc<SoftwareBackend>) -> Checkpointer {
    let backend: Arc<dyn KeyBackend> = backend;
    Checkpointer::open(store.clone(), backend, Some(ORIGIN)).await.unwrap()
}

async fn verify(store: &Store, key: &Checkpointer) -> Report {
    let verification = verify_log(store, Some(&key.key().vkey())).await.unwrap();
    assert_eq!(verification.source, KeySource::Pinned);
    verification.report
}

fn problems(report: &Report) -> Vec<(Option<u64>, ProblemKind)> {
    report.problems.iter().map(|problem| (problem.position, problem.kind)).collect()
}

async fn operations_become_chained_entries(db: TestDb) {
    let store = db.store().await;
    let signer = SignerService::new(store.clone(), backend());
    let key = signer.create_key_as("ecdsa", GUN, "timestamp", &client("req-1")).await.unwrap();
    let signed = signer.sign_as(&key.key_id, b"payload", &client("req-2")).await.unwrap();
    assert_eq!(signed.audit_seq, 1);
    // A never-used key handed out again is no new key: nothing is appended.
    signer.create_key("ecdsa", GUN, "snapshot").await.unwrap();
    signer.create_key("ecdsa", GUN, "snapshot").await.unwrap();
    signer.delete_key_as(&key.key_id, &client("req-3")).await.unwrap();
    // Deleting a key that is gone appends nothing either.
    signer.delete_key_as(&key.key_id, &client("req-4")).await.unwrap();

    let events = store.sign_events(&EventFilter::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].audit_seq, Some(1));

    let log = entries(&store).await;
    let kinds: Vec<&str> = log.iter().map(|stored| stored.entry.kind.as_str()).collect();
    assert_eq!(kinds, ["signer.key.create", "sign", "signer.key.create", "signer.key.delete"]);
    let key_details = json!({
        "key_id": key.key_id, "gun": GUN, "role": "timestamp", "algorithm": "ecdsa", "backend": "software",
    });
    let created = &log[0].entry;
    assert_eq!(details(created), key_details);
    assert_eq!(
        (
            created.gun.as_deref(),
            created.principal.as_deref(),
            created.address.as_deref(),
            created.request_id.as_deref()
        ),
        (Some(GUN), Some("CN=tufa-server"), Some("10.0.0.7:50123"), Some("req-1"))
    );
    let sign = &log[1].entry;
    assert_eq!(
        details(sign),
        json!({
            "event_id": events[0].id,
            "key_id": key.key_id,
            "gun": GUN,
            "role": "timestamp",
            "algorithm": "ecdsa",
            "client_subject": "CN=tufa-server",
            "payload_sha256": hex::encode(sha256(b"payload")),
        })
    );
    assert_eq!((sign.principal.as_deref(), sign.request_id.as_deref()), (Some("CN=tufa-server"), Some("req-2")));
    assert_eq!(sign.time, events[0].created_at, "the entry and the sign event share one time");
    let unnamed = &log[2].entry;
    assert_eq!((unnamed.principal.as_deref(), unnamed.address.as_deref()), (None, None));
    assert_eq!(details(&log[3].entry), key_details);
    assert_eq!(log[3].entry.request_id.as_deref(), Some("req-3"));

    // Positions from 0 without gaps, each entry's stored hash its own, each linked to the one before.
    for (position, stored) in log.iter().enumerate() {
        assert_eq!(stored.entry.seq, position as u64);
        assert_eq!(stored.leaf_hash, stored.entry.leaf_hash());
        let expected_prev = position.checked_sub(1).map(|before| log[before].leaf_hash);
        assert_eq!(stored.entry.prev, expected_prev, "link of entry {position}");
    }
}

async fn concurrent_signers_append_without_gaps(db: TestDb) {
    // Two stores with their own pools: two signer processes on one database.
    let (first_store, second_store) = (db.store().await, db.store().await);
    let first = SignerService::new(first_store.clone(), backend());
    let second = SignerService::new(second_store.clone(), backend());
    let one = first.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    let two = second.create_key("ed25519", GUN, "snapshot").await.unwrap();
    let mut tasks = Vec::new();
    for index in 0..40 {
        for (signer, key_id) in [(first.clone(), one.key_id.clone()), (second.clone(), two.key_id.clone())] {
            tasks.push(tokio::spawn(async move {
                signer.sign(&key_id, format!("message {index}").as_bytes(), "CN=tufa-server").await.unwrap().audit_seq
            }));
        }
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..82).collect::<Vec<u64>>(), "every signature has its own position, without gaps");

    let log = entries(&first_store).await;
    assert_eq!(log.len(), 82);
    for (position, stored) in log.iter().enumerate() {
        assert_eq!(stored.entry.seq, position as u64);
    }
    let events = first_store.sign_events(&EventFilter { limit: 1000, ..EventFilter::default() }).await.unwrap();
    assert_eq!(events.len(), 80);
    for event in &events {
        let entry = &log[usize::try_from(event.audit_seq.unwrap()).unwrap()].entry;
        assert_eq!(details(entry)["event_id"], event.id);
        assert_eq!(details(entry)["payload_sha256"], event.payload_sha256.as_str());
    }
    let checkpoints = checkpointer(&second_store, backend()).await;
    assert_eq!(checkpoints.checkpoint().await.unwrap().map(|made| made.size), Some(83));
    let report = verify(&first_store, &checkpoints).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.checkpoints), (83, 1));
}

async fn failed_operations_append_nothing(db: TestDb) {
    let store = db.store().await;
    let signer = SignerService::new(store.clone(), backend());
    let key = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    // A key sealed under a KEK this signer does not hold: the backend cannot sign with it.
    let foreign = SignerService::new(store.clone(), software(&[("b", crate::support::KEK_B)], "b"));
    let unusable = foreign.create_key("ecdsa", GUN, "targets/releases").await.unwrap();
    let checkpoints = checkpointer(&store, backend()).await;
    let before = entries(&store).await;
    assert_eq!(before.len(), 3);

    let unknown = "ab".repeat(32);
    assert_eq!(
        signer.sign(&unknown, b"m", "CN=x").await.unwrap_err(),
        ServiceError::NotFound(format!("key {unknown} not found"))
    );
    assert_eq!(
        signer.sign(&key.key_id, b"", "CN=x").await.unwrap_err(),
        ServiceError::InvalidArgument("content is empty: there is nothing to sign".to_owned())
    );
    assert_eq!(
        signer.sign(&unusable.key_id, b"m", "CN=x").await.unwrap_err(),
        ServiceError::Unavailable("the signer's key backend is unavailable; try again later".to_owned())
    );
    assert!(matches!(signer.sign(checkpoints.key_id(), b"m", "CN=x").await, Err(ServiceError::FailedPrecondition(_))));
    assert!(matches!(signer.create_key("rsa", GUN, "timestamp").await, Err(ServiceError::InvalidArgument(_))));
    assert!(matches!(signer.delete_key(checkpoints.key_id()).await, Err(ServiceError::FailedPrecondition(_))));

    assert_eq!(entries(&store).await, before, "no failed operation left an entry");
    assert!(store.sign_events(&EventFilter::default()).await.unwrap().is_empty(), "nor a sign event");
}

async fn the_checkpoint_key_is_reserved(db: TestDb) {
    let store = db.store().await;
    let backend = backend();
    let signer = SignerService::new(store.clone(), backend.clone());
    let checkpoints = checkpointer(&store, backend.clone()).await;
    let key_id = checkpoints.key_id().to_owned();
    let record = store.key(&key_id).await.unwrap().unwrap();
    assert_eq!(
        (record.gun.as_str(), record.role.as_str(), record.algorithm.as_str()),
        (ORIGIN, CHECKPOINT_ROLE, "ecdsa")
    );
    let log = entries(&store).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entry.kind, "signer.key.create");
    assert_eq!(log[0].entry.principal.as_deref(), Some("tufa-signer"));
    assert_eq!(log[0].entry.gun.as_deref(), Some(ORIGIN));

    let refused = ServiceError::FailedPrecondition(format!(
        "key {key_id} is the signer's audit checkpoint key and signs only audit checkpoints"
    ));
    assert_eq!(signer.sign(&key_id, b"m", "CN=x").await.unwrap_err(), refused);
    assert_eq!(signer.key_info(&key_id).await.unwrap_err(), refused);
    assert_eq!(signer.delete_key(&key_id).await.unwrap_err(), refused);
    assert_eq!(
        signer.create_key("ecdsa", ORIGIN, CHECKPOINT_ROLE).await.unwrap_err(),
        ServiceError::InvalidArgument(format!(
            "role {CHECKPOINT_ROLE:?} is reserved for the signer's audit checkpoint key"
        ))
    );
    assert!(store.key(&key_id).await.unwrap().is_some(), "still there");

    // Another process (or a restart) finds the same key; no second key is created.
    let again = Checkpointer::open(db.store().await, backend.clone(), None).await.unwrap();
    assert_eq!(again.key_id(), key_id);
    assert_eq!(again.key().vkey(), checkpoints.key().vkey());
    assert_eq!(entries(&store).await.len(), 1);
    // A configured origin that is not the stored one is refused.
    let error = Checkpointer::open(store.clone(), backend, Some("other.example/audit")).await.unwrap_err();
    let CheckpointerError::Origin(message) = error else { panic!("expected an origin error, got {error:?}") };
    assert!(message.starts_with(&format!("the audit log's origin is \"{ORIGIN}\"")), "{message}");
}

async fn processes_starting_together_share_one_checkpoint_key(db: TestDb) {
    let mut starts = Vec::new();
    for _ in 0..4 {
        let store = db.store().await;
        starts.push(tokio::spawn(async move {
            let backend: Arc<dyn KeyBackend> = backend();
            Checkpointer::open(store, backend, Some(ORIGIN)).await.unwrap().key_id().to_owned()
        }));
    }
    let mut key_ids = Vec::new();
    for start in starts {
        key_ids.push(start.await.unwrap());
    }
    key_ids.dedup();
    assert_eq!(key_ids.len(), 1, "one checkpoint key for all: {key_ids:?}");
    let log = entries(&db.store().await).await;
    assert_eq!(log.len(), 1, "its creation is recorded once");
    assert_eq!(details(&log[0].entry)["key_id"], key_ids[0].as_str());
}

async fn checkpoints_cover_new_entries_and_verify_with_their_key(db: TestDb) {
    let store = db.store().await;
    let backend = backend();
    let signer = SignerService::new(store.clone(), backend.clone());
    let key = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    signer.sign(&key.key_id, b"one", "CN=tufa-server").await.unwrap();
    let checkpoints = checkpointer(&store, backend.clone()).await;

    let Made { size, note } = checkpoints.checkpoint().await.unwrap().unwrap();
    assert_eq!(size, 3, "the two entries and the checkpoint key's creation");
    let head = checkpoint::open(&note, checkpoints.key()).unwrap();
    let mut frontier = Frontier::new();
    for stored in entries(&store).await {
        frontier.push(stored.entry.leaf_hash());
    }
    assert_eq!((head.origin.as_str(), head.size, head.root), (ORIGIN, 3, frontier.root()));
    assert!(note.starts_with(&format!("{ORIGIN}\n3\n")), "{note}");
    assert_eq!(checkpoints.checkpoint().await.unwrap(), None, "nothing new, no checkpoint");

    signer.sign(&key.key_id, b"two", "CN=tufa-server").await.unwrap();
    assert_eq!(checkpoints.checkpoint().await.unwrap().map(|made| made.size), Some(4));
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!((latest.size, latest.key_id.as_str()), (4, checkpoints.key_id()));

    let report = verify(&store, &checkpoints).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.entries, report.checkpoints, report.latest.map(|latest| latest.size)), (4, 2, Some(4)));

    // Without a pinned key, the key of the latest checkpoint is read from the database.
    let unpinned = verify_log(&store, None).await.unwrap();
    assert_eq!(unpinned.source, KeySource::Database);
    assert_eq!(unpinned.key.vkey(), checkpoints.key().vkey());
    assert!(unpinned.report.ok());

    // Pinned to another key, no checkpoint is trusted.
    let other = TestDb::sqlite();
    let other_store = other.store().await;
    let impostor = checkpointer(&other_store, backend).await;
    let report = verify_log(&store, Some(&impostor.key().vkey())).await.unwrap().report;
    assert_eq!(problems(&report), [(None, ProblemKind::CheckpointInvalid), (None, ProblemKind::CheckpointInvalid)]);
    assert_eq!(report.checkpoints, 0);
}

/// The statements that create the previous release's schema and rows: signer migration 0001,
/// one key and three sign events (of that key and of a deleted one), written without log entries.
async fn previous_release(db: &TestDb) {
    match db {
        TestDb::Sqlite(dir) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("tufa-signer.db"))
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            tufa_signer::store::sqlite_migrator().run_to(1, &pool).await.unwrap();
            pool.close().await;
        }
        TestDb::Postgres(database) => {
            let pool = sqlx::PgPool::connect(database.url()).await.unwrap();
            tufa_signer::store::postgres_migrator().run_to(1, &pool).await.unwrap();
            pool.close().await;
        }
    }
    let (t1, t2, t3) = match db {
        TestDb::Sqlite(_) => {
            ("'2025-01-02T03:04:05.000001Z'", "'2025-01-02T03:04:06.000000Z'", "'2025-01-03T00:00:00.000000Z'")
        }
        TestDb::Postgres(_) => (
            "'2025-01-02T03:04:05.000001Z'::timestamptz",
            "'2025-01-02T03:04:06Z'::timestamptz",
            "'2025-01-03T00:00:00Z'::timestamptz",
        ),
    };
    let (key, gone) = ("aa".repeat(32), "bb".repeat(32));
    db.execute(&format!(
        "INSERT INTO signer_keys (key_id, gun, role, algorithm, public, backend, handle, sealed_with, created_at) \
         VALUES ('{key}', '{GUN}', 'timestamp', 'ecdsa', {blob}, 'software', {blob}, 'a', {t1})",
        blob = match db {
            TestDb::Sqlite(_) => "x'00'",
            TestDb::Postgres(_) => "'\\x00'::bytea",
        }
    ))
    .await;
    for (key_id, subject, digest, time) in
        [(&key, "CN=one", "01", t1), (&gone, "CN=two", "02", t2), (&key, "CN=one", "03", t3)]
    {
        db.execute(&format!(
            "INSERT INTO signer_sign_events (key_id, gun, role, client_subject, payload_sha256, created_at) \
             VALUES ('{key_id}', '{GUN}', 'timestamp', '{subject}', '{}', {time})",
            digest.repeat(32)
        ))
        .await;
    }
}

async fn old_sign_events_are_backfilled_in_order(db: TestDb) {
    previous_release(&db).await;
    let store = db.store().await;
    let log = entries(&store).await;
    let events = store.sign_events(&EventFilter::default()).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(log.len(), 3);
    for ((stored, event), position) in log.iter().zip(&events).zip(0i64..) {
        let entry = &stored.entry;
        assert_eq!(event.audit_seq, Some(position));
        assert_eq!(entry.kind, "sign");
        assert_eq!(entry.time, event.created_at, "the entry keeps the signature's own time");
        assert_eq!(entry.principal.as_deref(), Some(event.client_subject.as_str()));
        assert_eq!((entry.address.as_deref(), entry.request_id.as_deref()), (None, None));
        let algorithm = if event.key_id == "aa".repeat(32) { json!("ecdsa") } else { json!(null) };
        assert_eq!(
            details(entry),
            json!({
                "event_id": event.id,
                "key_id": event.key_id,
                "gun": GUN,
                "role": "timestamp",
                "algorithm": algorithm,
                "client_subject": event.client_subject,
                "payload_sha256": event.payload_sha256,
            })
        );
    }
    assert_eq!(log[0].entry.time.to_rfc3339(), "2025-01-02T03:04:05.000001+00:00");

    // A second start appends nothing; new entries follow the backfilled ones.
    store.migrate().await.unwrap();
    assert_eq!(store.backfill_log().await.unwrap(), 0);
    let checkpoints = checkpointer(&store, backend()).await;
    assert_eq!(entries(&store).await.len(), 4);
    checkpoints.checkpoint().await.unwrap();
    assert!(verify(&store, &checkpoints).await.ok());
}

/// A log of 9 entries whose first 7 a checkpoint covers: a key's creation, five signatures, the
/// checkpoint key's creation (checkpoint), then two more signatures.
pub(crate) async fn tamper_target(db: &TestDb) -> (Store, Checkpointer) {
    let store = db.store().await;
    let backend = backend();
    let signer = SignerService::new(store.clone(), backend.clone());
    let key = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    for index in 0..5 {
        signer.sign(&key.key_id, format!("before {index}").as_bytes(), "CN=tufa-server").await.unwrap();
    }
    let checkpoints = checkpointer(&store, backend).await;
    assert_eq!(checkpoints.checkpoint().await.unwrap().map(|made| made.size), Some(7));
    for index in 0..2 {
        signer.sign(&key.key_id, format!("after {index}").as_bytes(), "CN=tufa-server").await.unwrap();
    }
    let report = verify(&store, &checkpoints).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 9);
    (store, checkpoints)
}

async fn an_edited_row_is_named(db: TestDb) {
    let (store, checkpoints) = tamper_target(&db).await;
    db.execute(r#"UPDATE signer_audit_entries SET details = '{"forged":true}' WHERE seq = 3"#).await;
    let report = verify(&store, &checkpoints).await;
    assert_eq!(problems(&report), [(Some(3), ProblemKind::Edited), (Some(0), ProblemKind::CheckpointMismatch)]);
    assert!(
        report.problems[0].message.starts_with("the entry at position 3 (sign, "),
        "{}",
        report.problems[0].message
    );
}

async fn a_deleted_row_is_named(db: TestDb) {
    let (store, checkpoints) = tamper_target(&db).await;
    db.execute("DELETE FROM signer_audit_entries WHERE seq = 4").await;
    let report = verify(&store, &checkpoints).await;
    assert_eq!(problems(&report), [(Some(4), ProblemKind::Missing), (Some(0), ProblemKind::CheckpointMismatch)]);
    assert_eq!(report.problems[0].message, "the entry at position 4 is missing: deleted");
}

async fn an_inserted_row_is_named(db: TestDb) {
    let (store, checkpoints) = tamper_target(&db).await;
    // Make room at position 3 (in two steps, so no two rows share a position meanwhile) and
    // insert a well-formed entry there that links to entry 2 and carries its own correct hash.
    db.execute("UPDATE signer_audit_entries SET seq = seq + 1000 WHERE seq >= 3").await;
    db.execute("UPDATE signer_audit_entries SET seq = seq - 999 WHERE seq >= 1000").await;
    let before = &entries(&store).await[2];
    let forged = NewEntry::new("sign", json!({"forged": true})).gun(GUN).by(Some("CN=mallory")).at(
        3,
        before.entry.time,
        Some(before.leaf_hash),
    );
    db.execute(&format!(
        "INSERT INTO signer_audit_entries (seq, time, kind, gun, principal, address, request_id, details, prev, leaf_hash) \
         VALUES (3, {}, 'sign', '{GUN}', 'CN=mallory', NULL, NULL, '{}', '{}', '{}')",
        forged.time.timestamp_micros(),
        forged.details,
        hex::encode(before.leaf_hash.0),
        hex::encode(forged.leaf_hash().0)
    ))
    .await;
    assert_eq!(entries(&store).await[3].entry, forged, "the forged row reads back as built");
    let report = verify(&store, &checkpoints).await;
    assert_eq!(
        problems(&report),
        [
            (Some(4), ProblemKind::Edited),
            (Some(4), ProblemKind::ChainBroken),
            (Some(5), ProblemKind::Edited),
            (Some(6), ProblemKind::Edited),
            (Some(0), ProblemKind::CheckpointMismatch),
            (Some(7), ProblemKind::Edited),
            (Some(8), ProblemKind::Edited),
            (Some(9), ProblemKind::Edited),
        ]
    );
    assert!(
        report.problems[1].message.starts_with("the entry at position 4 does not link to the entry at position 3"),
        "{}",
        report.problems[1].message
    );
}

async fn swapped_rows_are_named(db: TestDb) {
    let (store, checkpoints) = tamper_target(&db).await;
    db.execute("UPDATE signer_audit_entries SET seq = -1 WHERE seq = 2").await;
    db.execute("UPDATE signer_audit_entries SET seq = 2 WHERE seq = 5").await;
    db.execute("UPDATE signer_audit_entries SET seq = 5 WHERE seq = -1").await;
    let report = verify(&store, &checkpoints).await;
    assert_eq!(
        problems(&report),
        [
            (Some(2), ProblemKind::Edited),
            (Some(2), ProblemKind::ChainBroken),
            (Some(3), ProblemKind::ChainBroken),
            (Some(5), ProblemKind::Edited),
            (Some(5), ProblemKind::ChainBroken),
            (Some(6), ProblemKind::ChainBroken),
            (Some(0), ProblemKind::CheckpointMismatch),
        ]
    );
}
