//! Runs the storage conformance suite against SQLite (a temp file per test) and PostgreSQL
//! (a fresh database per test inside the cluster named by `DATABASE_URL`), plus the checks
//! that only make sense for one backend.

// Helpers outside `#[test]` functions are test code too; clippy's in-tests allowances do not
// reach them in an integration test crate.
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod backends;
mod suite;
mod support;

/// Generates one test per suite check and backend: `sqlite::<check>` and `postgres::<check>`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::support::SqliteDb::create().await;
                    crate::suite::$check(db.store.clone()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::support::PgDb::create().await;
                    let store = db.open().await;
                    crate::suite::$check(store).await;
                }
            )*
        }
    };
}

conformance!(
    verbatim_bytes,
    current_reads,
    current_pointer_moves,
    by_checksum_and_version,
    old_version_rejected,
    expected_timestamp_checked,
    dangling_pointer_rejected,
    malformed_updates,
    changefeed_records,
    delete_gun,
    expiring,
    expiring_pages,
    key_owners,
    keys,
    keys_by_kek,
    concurrent_publishes,
    principals,
    api_tokens,
    principal_removal_cascades,
    role_bindings,
    tombstones,
    token_keys,
    kek_ids_include_token_keys,
    token_key_race_in_one_store,
    audit_entries_are_written_with_their_change,
    audit_appends_are_gapless_under_concurrency,
    grants_and_target_history,
    target_history_rows_keep_their_values_and_order,
    small_records_index_rows_are_moved_in_order,
    pending_index_rows_move_once_under_concurrency,
    history_canonical_ids_read_back_whether_or_not_they_differ,
    checkpoints_and_signing_key,
    account_changes_are_recorded_only_when_they_happen,
);
