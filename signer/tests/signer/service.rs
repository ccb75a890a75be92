//! The service semantics (spec section 4.3) and KEK rotation, run against SQLite and PostgreSQL.

use chrono::{Duration, Utc};
use tufa_core::keys::sha256;
use tufa_signer::run::{RotationReport, RunError, check_sealed_keys, print_audit, rotate_kek};
use tufa_signer::service::{MAX_CONTENT_BYTES, ServiceError, SignerService};
use tufa_signer::store::{Actor, EventFilter, KeyRecord, Store};

use crate::support::{KEK_A, KEK_B, ring, service, software, sqlite_store};

const GUN: &str = "docker.io/library/alpine";
const CLIENT: &str = "CN=tufa-server";

/// Runs `suite` on a fresh SQLite store and a fresh PostgreSQL database.
macro_rules! on_both_databases {
    ($($suite:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $suite() {
                    let (store, _dir) = crate::support::sqlite_store().await;
                    super::$suite(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $suite() {
                    let (store, _database) = crate::support::postgres_store().await;
                    super::$suite(store).await;
                }
            )*
        }
    };
}

on_both_databases!(
    create_key_is_idempotent_until_first_sign,
    key_info_round_trips,
    sign_verifies_records_and_marks_used,
    unknown_keys_are_not_found,
    malformed_requests_are_invalid_arguments,
    delete_is_idempotent_and_keeps_the_audit_trail,
    audit_trail_filters_and_pages,
    keys_of_another_backend_are_refused,
    kek_rotation_reseals_keys,
    migrations_are_idempotent,
    start_up_refuses_keks_that_cannot_open_the_stored_keys,
);

fn signer(store: Store) -> SignerService {
    service(store, software(&[("a", KEK_A)], "a"))
}

async fn create_key_is_idempotent_until_first_sign(store: Store) {
    let signer = signer(store);
    let first = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    let again = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    assert_eq!(first, again, "a never-used key is handed out again");

    let snapshot = signer.create_key("ecdsa", GUN, "snapshot").await.unwrap();
    let ed25519 = signer.create_key("ed25519", GUN, "timestamp").await.unwrap();
    let other_gun = signer.create_key("ecdsa", "example.com/other", "timestamp").await.unwrap();
    let distinct = [&first.key_id, &snapshot.key_id, &ed25519.key_id, &other_gun.key_id];
    for (index, key_id) in distinct.iter().enumerate() {
        assert_eq!(distinct.iter().filter(|other| *other == key_id).count(), 1, "key {index} is shared");
    }

    signer.sign(&first.key_id, b"payload", CLIENT).await.unwrap();
    let after_use = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    assert_ne!(after_use.key_id, first.key_id, "a used key is never handed out again");
    assert_eq!(signer.create_key("ecdsa", GUN, "timestamp").await.unwrap(), after_use);
}

async fn key_info_round_trips(store: Store) {
    let signer = signer(store);
    for (algorithm, keytype, public_len) in [("ecdsa", "ecdsa", 91), ("ed25519", "ed25519", 32)] {
        let created = signer.create_key(algorithm, GUN, "snapshot").await.unwrap();
        let info = signer.key_info(&created.key_id).await.unwrap();
        assert_eq!(info, created);
        assert_eq!(info.role, "snapshot");
        assert_eq!(info.algorithm.as_str(), keytype);
        assert_eq!(info.public.len(), public_len, "{algorithm} public key length");
        assert_eq!(info.public_key().key_id(), info.key_id, "the key ID is the TUF ID of the returned public key");
    }
}

async fn sign_verifies_records_and_marks_used(store: Store) {
    let signer = signer(store.clone());
    for (algorithm, method) in [("ecdsa", "ecdsa"), ("ed25519", "eddsa")] {
        let key = signer.create_key(algorithm, GUN, "timestamp").await.unwrap();
        assert_eq!(store.key(&key.key_id).await.unwrap().unwrap().last_used, None);
        let message = format!("{{\"signed\":\"{algorithm}\"}}").into_bytes();
        let before = Utc::now() - Duration::seconds(1);
        let signed = signer.sign(&key.key_id, &message, CLIENT).await.unwrap();
        assert_eq!(signed.method, method);
        assert_eq!(signed.key_id, key.key_id);
        assert_eq!(signed.signature.len(), 64);
        key.public_key().verify(signed.method, &message, &signed.signature).unwrap();

        let record = store.key(&key.key_id).await.unwrap().unwrap();
        assert!(record.last_used.is_some_and(|used| used >= before), "last_used is set");

        let filter = EventFilter { key_id: Some(key.key_id.clone()), ..EventFilter::default() };
        let events = signer.sign_events(&filter).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].client_subject, CLIENT);
        assert_eq!(events[0].payload_sha256, hex::encode(sha256(&message)));
        assert_eq!(events[0].gun, GUN);
        assert_eq!(events[0].role, "timestamp");
        assert!(events[0].created_at >= before && events[0].created_at <= Utc::now() + Duration::seconds(1));
    }
}

async fn unknown_keys_are_not_found(store: Store) {
    let signer = signer(store);
    let unknown = "ab".repeat(32);
    let expected = ServiceError::NotFound(format!("key {unknown} not found"));
    assert_eq!(signer.key_info(&unknown).await.unwrap_err(), expected);
    assert_eq!(signer.sign(&unknown, b"m", CLIENT).await.unwrap_err(), expected);
}

async fn malformed_requests_are_invalid_arguments(store: Store) {
    let signer = signer(store);
    let key = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    let invalid = |result: Result<(), ServiceError>, needle: &str| match result {
        Err(ServiceError::InvalidArgument(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected INVALID_ARGUMENT containing {needle:?}, got {other:?}"),
    };
    invalid(signer.create_key("rsa", GUN, "timestamp").await.map(drop), "unsupported key algorithm \"rsa\"");
    invalid(signer.create_key("", GUN, "timestamp").await.map(drop), "algorithm is missing");
    invalid(signer.create_key("ecdsa", "", "timestamp").await.map(drop), "invalid GUN");
    invalid(signer.create_key("ecdsa", &"g".repeat(256), "timestamp").await.map(drop), "longer than 255 bytes");
    invalid(signer.create_key("ecdsa", GUN, "bogus").await.map(drop), "invalid role \"bogus\"");
    invalid(signer.create_key("ecdsa", GUN, "").await.map(drop), "invalid role");
    invalid(signer.key_info("").await.map(drop), "key ID is missing");
    invalid(signer.key_info("abc").await.map(drop), "64 lower-case hex digits");
    invalid(signer.key_info(&key.key_id.to_uppercase()).await.map(drop), "64 lower-case hex digits");
    invalid(signer.delete_key("../etc").await, "64 lower-case hex digits");
    invalid(signer.sign(&key.key_id, b"", CLIENT).await.map(drop), "content is empty");
    let oversized = vec![b'x'; MAX_CONTENT_BYTES + 1];
    invalid(signer.sign(&key.key_id, &oversized, CLIENT).await.map(drop), "at most 1048576 bytes");
    // The largest accepted message signs.
    signer.sign(&key.key_id, &oversized[..MAX_CONTENT_BYTES], CLIENT).await.unwrap();
    // Delegation roles are valid role names.
    signer.create_key("ecdsa", GUN, "targets/releases").await.unwrap();
}

async fn delete_is_idempotent_and_keeps_the_audit_trail(store: Store) {
    let signer = signer(store);
    let key = signer.create_key("ed25519", GUN, "timestamp").await.unwrap();
    signer.sign(&key.key_id, b"m", CLIENT).await.unwrap();
    signer.delete_key(&key.key_id).await.unwrap();
    signer.delete_key(&key.key_id).await.unwrap();
    assert!(matches!(signer.key_info(&key.key_id).await, Err(ServiceError::NotFound(_))));
    assert!(matches!(signer.sign(&key.key_id, b"m", CLIENT).await, Err(ServiceError::NotFound(_))));
    let filter = EventFilter { key_id: Some(key.key_id.clone()), ..EventFilter::default() };
    assert_eq!(signer.sign_events(&filter).await.unwrap().len(), 1);
}

async fn audit_trail_filters_and_pages(store: Store) {
    let signer = signer(store.clone());
    let first = signer.create_key("ecdsa", GUN, "timestamp").await.unwrap();
    let second = signer.create_key("ecdsa", GUN, "snapshot").await.unwrap();
    let start = Utc::now() - Duration::seconds(1);
    for index in 0..5 {
        signer.sign(&first.key_id, format!("first {index}").as_bytes(), "CN=one").await.unwrap();
        signer.sign(&second.key_id, format!("second {index}").as_bytes(), "CN=two").await.unwrap();
    }
    let all = signer.sign_events(&EventFilter { limit: 1000, ..EventFilter::default() }).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|pair| pair[0].id < pair[1].id), "ordered by id");

    let first_only = EventFilter { key_id: Some(first.key_id.clone()), limit: 1000, ..EventFilter::default() };
    let events = signer.sign_events(&first_only).await.unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|event| event.client_subject == "CN=one" && event.key_id == first.key_id));

    // Paging with the cursor.
    let mut page = EventFilter { limit: 3, ..EventFilter::default() };
    let mut seen = Vec::new();
    loop {
        let events = signer.sign_events(&page).await.unwrap();
        let Some(last) = events.last() else { break };
        page.after_id = Some(last.id);
        seen.extend(events.iter().map(|event| event.id));
    }
    assert_eq!(seen, all.iter().map(|event| event.id).collect::<Vec<_>>());

    // Time ranges.
    let since_future = EventFilter { since: Some(Utc::now() + Duration::hours(1)), ..EventFilter::default() };
    assert!(signer.sign_events(&since_future).await.unwrap().is_empty());
    let in_range = EventFilter {
        since: Some(start),
        until: Some(Utc::now() + Duration::seconds(1)),
        limit: 1000,
        ..EventFilter::default()
    };
    assert_eq!(signer.sign_events(&in_range).await.unwrap().len(), 10);
    let until_start = EventFilter { until: Some(start), ..EventFilter::default() };
    assert!(signer.sign_events(&until_start).await.unwrap().is_empty());

    // The JSON-lines printer follows pages and honours the limit.
    let mut out = Vec::new();
    assert_eq!(print_audit(&store, EventFilter::default(), Some(7), &mut out).await.unwrap(), 7);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0]["key_id"], first.key_id.as_str());
    assert_eq!(lines[0]["client_subject"], "CN=one");
    assert_eq!(lines[0]["payload_sha256"], hex::encode(sha256(b"first 0")));
    let mut out = Vec::new();
    assert_eq!(print_audit(&store, EventFilter::default(), None, &mut out).await.unwrap(), 10);
}

async fn keys_of_another_backend_are_refused(store: Store) {
    let signer = signer(store.clone());
    let key_id = "cd".repeat(32);
    store
        .insert_key(
            &KeyRecord {
                key_id: key_id.clone(),
                gun: GUN.to_owned(),
                role: "timestamp".to_owned(),
                algorithm: "ecdsa".to_owned(),
                public: vec![1, 2, 3],
                backend: "pkcs11".to_owned(),
                handle: vec![4, 5, 6],
                sealed_with: "pkcs11".to_owned(),
                created_at: Utc::now(),
                last_used: None,
            },
            &Actor::default(),
        )
        .await
        .unwrap();
    // The key is visible, but neither signs nor is handed out by CreateKey of this backend.
    assert_eq!(signer.key_info(&key_id).await.unwrap().public, vec![1, 2, 3]);
    let error = signer.sign(&key_id, b"m", CLIENT).await.unwrap_err();
    assert!(
        matches!(&error, ServiceError::FailedPrecondition(message) if message.contains("pkcs11 backend")),
        "{error:?}"
    );
    assert_ne!(signer.create_key("ecdsa", GUN, "timestamp").await.unwrap().key_id, key_id);
    assert!(matches!(signer.delete_key(&key_id).await, Err(ServiceError::FailedPrecondition(_))));
}

async fn kek_rotation_reseals_keys(store: Store) {
    let old = service(store.clone(), software(&[("a", KEK_A)], "a"));
    let mut keys = Vec::new();
    for algorithm in ["ecdsa", "ed25519", "ecdsa"] {
        let role = if keys.len() == 2 { "snapshot" } else { "timestamp" };
        keys.push(old.create_key(algorithm, GUN, role).await.unwrap());
    }
    for key in &keys {
        assert_eq!(store.key(&key.key_id).await.unwrap().unwrap().sealed_with, "a");
    }

    // New KEK active, old one still configured: old keys still sign before rotation.
    let both = software(&[("a", KEK_A), ("b", KEK_B)], "b");
    let rotated = service(store.clone(), both.clone());
    rotated.sign(&keys[0].key_id, b"before rotation", CLIENT).await.unwrap();
    let fresh = rotated.create_key("ed25519", "example.com/new", "timestamp").await.unwrap();
    assert_eq!(store.key(&fresh.key_id).await.unwrap().unwrap().sealed_with, "b");

    let report = rotate_kek(&store, &both).await.unwrap();
    assert_eq!(report, RotationReport { resealed: 3, failed: Vec::new() });
    assert_eq!(rotate_kek(&store, &both).await.unwrap(), RotationReport::default(), "rotation is idempotent");

    // Only the new KEK is needed from now on.
    let only_new = service(store.clone(), software(&[("b", KEK_B)], "b"));
    for key in &keys {
        assert_eq!(store.key(&key.key_id).await.unwrap().unwrap().sealed_with, "b");
        let signed = only_new.sign(&key.key_id, b"after rotation", CLIENT).await.unwrap();
        key.public_key().verify(signed.method, b"after rotation", &signed.signature).unwrap();
    }

    // A key whose KEK is gone is reported, not lost.
    let orphan = service(store.clone(), software(&[("c", KEK_A)], "c")).create_key("ecdsa", GUN, "root").await.unwrap();
    let report = rotate_kek(&store, &software(&[("b", KEK_B)], "b")).await.unwrap();
    assert_eq!(report.resealed, 0);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, orphan.key_id);
    assert!(report.failed[0].1.contains("not configured"), "{}", report.failed[0].1);
    // A wrong KEK under the right name is refused as well.
    let impostor = service(store.clone(), software(&[("c", KEK_B)], "c"));
    assert!(matches!(impostor.sign(&orphan.key_id, b"m", CLIENT).await, Err(ServiceError::Internal(_))));
}

async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_store_survives_reopening() {
    let (store, dir) = sqlite_store().await;
    let key = signer(store.clone()).create_key("ecdsa", GUN, "timestamp").await.unwrap();
    store.close().await;
    let reopened = Store::open_sqlite_file(&dir.path().join("tufa-signer.db")).await.unwrap();
    reopened.migrate().await.unwrap();
    let signed = signer(reopened).sign(&key.key_id, b"m", CLIENT).await.unwrap();
    key.public_key().verify(signed.method, b"m", &signed.signature).unwrap();
}

#[tokio::test]
async fn postgres_connection_failure_is_unavailable() {
    // A port nothing listens on: connection refused maps to Unavailable.
    let error = Store::connect(&tufa_store::DatabaseUrl::parse("postgres://nobody@127.0.0.1:1/none").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, tufa_signer::store::StoreError::Unavailable(_)), "{error:?}");
}

/// At start-up every KEK that sealed a stored software key must be configured and must open it.
async fn start_up_refuses_keks_that_cannot_open_the_stored_keys(store: Store) {
    // No keys yet: any KEK will do.
    check_sealed_keys(&store, &ring(&[("b", KEK_B)], "b")).await.unwrap();
    let key = signer(store.clone()).create_key("ecdsa", GUN, "timestamp").await.unwrap();
    // The sealing KEK, also beside another (active) one, passes.
    check_sealed_keys(&store, &ring(&[("a", KEK_A)], "a")).await.unwrap();
    check_sealed_keys(&store, &ring(&[("a", KEK_A), ("b", KEK_B)], "b")).await.unwrap();

    let missing = check_sealed_keys(&store, &ring(&[("b", KEK_B), ("c", KEK_A)], "b")).await.unwrap_err();
    assert_eq!(missing.exit_code(), 2);
    assert_eq!(
        missing.to_string(),
        format!(
            "the database holds software keys sealed with KEK \"a\" (for example key {}), which is not configured \
             (configured: b, c); add it as a [[software.kek]] entry or set TUFA_SIGNER_KEK_A",
            key.key_id
        )
    );

    // A KEK named "a" with other bytes: configured, but not the one that sealed the keys.
    let wrong = check_sealed_keys(&store, &ring(&[("a", KEK_B)], "a")).await.unwrap_err();
    assert!(matches!(wrong, RunError::KekMismatch(_)), "{wrong:?}");
    assert_eq!(wrong.exit_code(), 2);
    assert_eq!(
        wrong.to_string(),
        format!(
            "the configured KEK \"a\" cannot open key {0}, which the database records as sealed with it (backend \
             failure: sealed key {0} does not open with KEK \"a\" (wrong KEK or tampered data)): it is not the KEK \
             that sealed the keys; configure the right one",
            key.key_id
        )
    );
}
