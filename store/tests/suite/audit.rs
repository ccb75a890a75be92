//! The audit tables: gapless chained entries written with the change they record, the Merkle
//! tree's stored hashes, checkpoints, grants and target history.

use std::sync::Arc;

use chrono::Duration;
use tufa_audit::entry::kinds;
use tufa_audit::tree::{self, Frontier};
use tufa_audit::verify::LogVerifier;
use tufa_audit::{CheckpointKey, NewEntry};
use tufa_store::{AuditFilter, AuditSigningKey, GrantKey, NewGrant, NewTargetEvent, Record, Store, StoreError};

use crate::support::{Repo, deletion, now};

const GUN: &str = "example.com/app";

fn all(store_limit: u32) -> AuditFilter {
    AuditFilter { limit: store_limit, ..AuditFilter::default() }
}

/// Checks the whole log as `audit verify` would, without checkpoints.
async fn verify_all(store: &Arc<dyn Store>) -> tufa_audit::Report {
    let key = CheckpointKey::new(
        "test/audit",
        tufa_core::keys::PrivateKey::generate(tufa_core::keys::Algorithm::Ecdsa).expect("key").public_key(),
    )
    .expect("key");
    let mut verifier = LogVerifier::new(&key, &[]);
    for stored in store.audit_entries(&all(10_000)).await.expect("entries") {
        verifier.push(&stored.entry, stored.leaf_hash);
    }
    verifier.finish()
}

fn grant(delegating: &str, delegated: &str, version: i64, keys: &[&str]) -> NewGrant {
    NewGrant {
        delegating_role: delegating.into(),
        delegated_role: delegated.into(),
        version,
        threshold: 1,
        paths: (delegating != "root").then(|| r#"["releases/"]"#.to_owned()),
        keys: keys
            .iter()
            .map(|key| GrantKey { key_id: (*key).into(), canonical_id: format!("canonical-{key}"), subject: None })
            .collect(),
    }
}

fn event(name: &str, version: i64, change: &str, sha256: &str) -> NewTargetEvent {
    NewTargetEvent {
        name: name.into(),
        role: "targets/releases".into(),
        version,
        change: change.into(),
        sha256: Some(sha256.into()),
        length: Some(10),
        signer_keys: vec!["k1".to_owned()].into(),
        signer_canonical_ids: vec!["canonical-k1".to_owned()].into(),
    }
}

pub(crate) async fn audit_entries_are_written_with_their_change(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let mut first = v1.first_publish(GUN);
    first.record.entry = first.record.entry.by(Some("alice")).from_request(Some("10.0.0.1"), Some("r1"));
    first.record.keys = vec!["k1".into(), "k1".into(), "k2".into()];
    store.update(first).await.expect("first publish");
    // A publish that fails (stale timestamp version) leaves no entry.
    let v2 = Repo::new(2, "v2");
    let stale = v2.next_publish(GUN, 7);
    assert!(matches!(store.update(stale).await, Err(StoreError::OldVersion { .. })));
    assert_eq!(store.audit_size().await.expect("size"), 1);
    store.update(v2.next_publish(GUN, 1)).await.expect("second publish");
    assert!(store.delete_gun(GUN, deletion(GUN)).await.expect("delete"));
    // Deleting nothing records nothing.
    assert!(!store.delete_gun(GUN, deletion(GUN)).await.expect("delete nothing"));
    assert_eq!(store.audit_size().await.expect("size"), 3);

    let entries = store.audit_entries(&all(100)).await.expect("entries");
    let summary: Vec<(u64, &str, Option<&str>)> = entries
        .iter()
        .map(|stored| (stored.entry.seq, stored.entry.kind.as_str(), stored.entry.principal.as_deref()))
        .collect();
    assert_eq!(summary, vec![(0, "publish", Some("alice")), (1, "publish", None), (2, "delete", None)]);
    assert_eq!(entries[0].entry.address.as_deref(), Some("10.0.0.1"));
    assert_eq!(entries[0].entry.request_id.as_deref(), Some("r1"));
    assert_eq!(entries[0].entry.prev, None);
    assert_eq!(entries[1].entry.prev, entries[0].leaf_hash);
    assert_eq!(entries[2].entry.prev, entries[1].leaf_hash);
    assert!(verify_all(&store).await.ok());

    // Filters: by key, principal, GUN, position, time.
    let by_key = store.audit_entries(&AuditFilter { key: Some("k2".into()), ..all(10) }).await.expect("by key");
    assert_eq!(by_key.iter().map(|stored| stored.entry.seq).collect::<Vec<_>>(), vec![0]);
    let by_principal =
        store.audit_entries(&AuditFilter { principal: Some("alice".into()), ..all(10) }).await.expect("by principal");
    assert_eq!(by_principal.len(), 1);
    let after = store.audit_entries(&AuditFilter { after: Some(0), ..all(1) }).await.expect("page");
    assert_eq!(after.iter().map(|stored| stored.entry.seq).collect::<Vec<_>>(), vec![1]);
    let future = store.audit_entries(&AuditFilter { since: Some(now() + Duration::hours(1)), ..all(10) }).await;
    assert_eq!(future.expect("since").len(), 0);
    let other = store.audit_entries(&AuditFilter { gun: Some("other/gun".into()), ..all(10) }).await;
    assert_eq!(other.expect("gun").len(), 0);

    // The stored Merkle hashes give the same root as the entries themselves.
    let mut frontier = Frontier::new();
    for stored in &entries {
        frontier.push(stored.entry.leaf_hash());
    }
    let hashes = store.audit_hashes(&tree::root_reads(3)).await.expect("hashes");
    assert_eq!(tree::root(3, &hashes).expect("root"), frontier.root());
}

pub(crate) async fn audit_appends_are_gapless_under_concurrency(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for n in 0..12 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append_audit(Record::new(NewEntry::new(kinds::KEY_CREATE, serde_json::json!({ "n": n })))).await
        }));
    }
    let mut positions = Vec::new();
    for task in tasks {
        positions.push(task.await.expect("task").expect("append"));
    }
    positions.sort_unstable();
    assert_eq!(positions, (0..12).collect::<Vec<u64>>());
    let batch: Vec<Record> =
        (0..5).map(|n| Record::new(NewEntry::new(kinds::KEY_CREATE, serde_json::json!({ "batch": n })))).collect();
    assert_eq!(store.append_audit_batch(batch).await.expect("batch"), 12);
    assert_eq!(store.audit_size().await.expect("size"), 17);
    let report = verify_all(&store).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 17);
}

pub(crate) async fn grants_and_target_history(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let mut first = v1.first_publish(GUN);
    first.record.entry = first.record.entry.by(Some("alice"));
    first.record.grants = vec![
        grant("root", "targets", 1, &["root-k"]),
        grant("targets", "targets/qa", 1, &["k3"]),
        grant("targets", "targets/releases", 1, &["k1"]),
    ];
    first.record.history = vec![event("v1.0", 1, "added", "aa")];
    store.update(first).await.expect("first publish");
    let between = now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let v2 = Repo::new(2, "v2");
    let mut second = v2.next_publish(GUN, 1);
    second.record.entry = second.record.entry.by(Some("bob"));
    // Only the changed grant is ended and made again; targets/qa is left in force.
    second.record.superseded = vec![("targets".into(), "targets/releases".into())];
    second.record.grants = vec![grant("targets", "targets/releases", 2, &["k1", "k2"])];
    second.record.history = vec![event("v1.0", 2, "changed", "bb")];
    store.update(second).await.expect("second publish");

    let current = store.grants(GUN, None).await.expect("grants");
    type Shape<'a> = (&'a str, &'a str, i64, Vec<&'a str>, Option<&'a str>);
    let shape: Vec<Shape<'_>> = current
        .iter()
        .map(|g| {
            (
                g.grant.delegating_role.as_str(),
                g.grant.delegated_role.as_str(),
                g.grant.version,
                g.grant.keys.iter().map(|k| k.key_id.as_str()).collect(),
                g.principal.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("root", "targets", 1, vec!["root-k"], Some("alice")),
            ("targets", "targets/qa", 1, vec!["k3"], Some("alice")),
            ("targets", "targets/releases", 2, vec!["k1", "k2"], Some("bob")),
        ]
    );
    assert_eq!(current[2].grant.paths.as_deref(), Some(r#"["releases/"]"#));
    assert_eq!(current[2].audit_seq, Some(1));
    assert_eq!((current[1].audit_seq, current[1].superseded_seq), (Some(0), None));
    let past = store.grants(GUN, Some(between)).await.expect("past grants");
    assert_eq!(past.iter().map(|g| g.grant.version).collect::<Vec<_>>(), vec![1, 1, 1]);
    assert_eq!(past[2].grant.keys.len(), 1);

    let k2 = store.key_grants("k2").await.expect("key grants");
    assert_eq!(k2.iter().map(|g| (g.gun.as_str(), g.grant.version)).collect::<Vec<_>>(), vec![(GUN, 2)]);
    let by_canonical = store.key_grants("canonical-k1").await.expect("canonical");
    assert_eq!(by_canonical.len(), 2);
    assert_eq!(store.grant_history(GUN).await.expect("history").len(), 4);

    let history = store.target_history(GUN, "v1.0").await.expect("target history");
    let shape: Vec<(&str, i64, Option<&str>, Option<&str>)> = history
        .iter()
        .map(|e| (e.event.change.as_str(), e.event.version, e.event.sha256.as_deref(), e.principal.as_deref()))
        .collect();
    assert_eq!(shape, vec![("added", 1, Some("aa"), Some("alice")), ("changed", 2, Some("bb"), Some("bob"))]);
    assert_eq!(history[0].event.signer_keys.to_vec(), vec!["k1".to_owned()]);
    assert_eq!(history[0].event.signer_canonical_ids.to_vec(), vec!["canonical-k1".to_owned()]);
    // The first grant of targets/releases ended with the second publish (entry 1).
    let ended = store.grant_history(GUN).await.expect("history");
    assert_eq!((ended[2].grant.delegated_role.as_str(), ended[2].superseded_seq), ("targets/releases", Some(1)));

    // More ended grants than one statement's batch holds: all of them end, and only them.
    let v3 = Repo::new(3, "v3");
    let mut third = v3.next_publish(GUN, 2);
    third.record.grants = (0..100).map(|n| grant("targets/qa", &format!("targets/qa/{n:03}"), 3, &["k4"])).collect();
    store.update(third).await.expect("third publish");
    let v4 = Repo::new(4, "v4");
    let mut fourth = v4.next_publish(GUN, 3);
    fourth.record.superseded = (0..90).map(|n| ("targets/qa".to_owned(), format!("targets/qa/{n:03}"))).collect();
    store.update(fourth).await.expect("fourth publish");
    let current = store.grants(GUN, None).await.expect("grants");
    let qa: Vec<&str> = current
        .iter()
        .filter(|g| g.grant.delegating_role == "targets/qa")
        .map(|g| g.grant.delegated_role.as_str())
        .collect();
    assert_eq!(qa, (90..100).map(|n| format!("targets/qa/{n:03}")).collect::<Vec<_>>());
    assert_eq!(current.len(), 3 + 10);
    let history = store.grant_history(GUN).await.expect("history");
    assert_eq!(history.iter().filter(|g| g.superseded_seq == Some(3)).count(), 90);
    let ended = store.grants_ended_by_entries(1, 3).await.expect("ended grants");
    let ended_by: Vec<(Option<i64>, &str)> =
        ended.iter().map(|g| (g.superseded_seq, g.grant.delegated_role.as_str())).collect();
    let mut expected = vec![(Some(1), "targets/releases".to_owned())];
    expected.extend((0..90).map(|n| (Some(3), format!("targets/qa/{n:03}"))));
    assert_eq!(ended_by, expected.iter().map(|(seq, role)| (*seq, role.as_str())).collect::<Vec<_>>());

    // Deleting the repository ends every grant.
    assert!(store.delete_gun(GUN, deletion(GUN)).await.expect("delete"));
    assert_eq!(store.grants(GUN, None).await.expect("grants after delete"), Vec::new());
    assert_eq!(store.grants(GUN, Some(between)).await.expect("still in the past").len(), 3);
}

/// Target events of two files, streamed a chunk at a time: `first` events of `targets/a`, then
/// three of `targets/b`, each call giving events of one file only (as the server's source does).
struct TwoFiles {
    first: usize,
    given: usize,
}

fn file_event(role: &str, index: usize, signers: &[&str]) -> NewTargetEvent {
    NewTargetEvent {
        name: format!("t{index:05}"),
        role: role.into(),
        version: if role == "targets/a" { 3 } else { 8 },
        change: if index.is_multiple_of(3) { "removed".into() } else { "added".into() },
        sha256: (!index.is_multiple_of(5)).then(|| format!("{index:064x}")),
        length: (!index.is_multiple_of(7)).then(|| i64::try_from(index).expect("small")),
        signer_keys: signers.iter().map(|key| (*key).to_owned()).collect::<Vec<_>>().into(),
        signer_canonical_ids: signers.iter().map(|key| format!("canonical-{key}")).collect::<Vec<_>>().into(),
    }
}

impl tufa_store::EventSource for TwoFiles {
    fn next_events(&mut self, _files: &[tufa_store::NewFile], max: usize) -> Result<Vec<NewTargetEvent>, String> {
        let total = self.first + 3;
        let end = if self.given < self.first { self.first.min(self.given + max) } else { total.min(self.given + max) };
        let events = (self.given..end)
            .map(|index| match index < self.first {
                true => file_event("targets/a", index, &["k1", "k2"]),
                false => file_event("targets/b", index, &["k3"]),
            })
            .collect();
        self.given = end;
        Ok(events)
    }
}

/// Every target-history row is written with exactly its values and in order, whether the rows of
/// a publish are one file's (their shared values bound once), several files' (each row bound in
/// full) or streamed in several chunks.
pub(crate) async fn target_history_rows_keep_their_values_and_order(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let mut first = v1.first_publish(GUN);
    first.record.entry = first.record.entry.by(Some("alice"));
    let inline = vec![
        file_event("targets/a", 1, &["k1"]),
        file_event("targets/a", 2, &["k1"]),
        file_event("targets/b", 3, &[]),
        file_event("targets/a", 4, &["k1", "k2"]),
    ];
    first.record.history = inline.clone();
    store.update(first).await.expect("first publish");
    let v2 = Repo::new(2, "v2");
    let mut second = v2.next_publish(GUN, 1);
    let streamed_count = 4_500;
    second.record.streamed =
        Some(tufa_store::StreamedEvents::new(Box::new(TwoFiles { first: streamed_count, given: 0 })));
    store.update(second).await.expect("second publish");

    let written = store.history_of_entries(0, 1).await.expect("history");
    let mut expected: Vec<(NewTargetEvent, Option<&str>, Option<i64>)> =
        inline.into_iter().map(|event| (event, Some("alice"), Some(0))).collect();
    let mut source = TwoFiles { first: streamed_count, given: 0 };
    loop {
        let chunk = tufa_store::EventSource::next_events(&mut source, &[], 1_000).expect("events");
        if chunk.is_empty() {
            break;
        }
        expected.extend(chunk.into_iter().map(|event| (event, None, Some(1))));
    }
    let got: Vec<(NewTargetEvent, Option<&str>, Option<i64>)> =
        written.iter().map(|row| (row.event.clone(), row.principal.as_deref(), row.audit_seq)).collect();
    assert_eq!(got.len(), expected.len());
    for (index, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, expected, "row {index}");
    }
    assert!(written.windows(2).all(|pair| pair[0].id < pair[1].id), "rows are in id order");
    assert!(written.iter().all(|row| row.gun == GUN));
}

/// A small record's key-index and history rows wait in `audit_pending` until they are moved in a
/// batch: every query that reads them moves them first, a move takes each entry once, and rows of
/// a large record written later still follow them.
pub(crate) async fn small_records_index_rows_are_moved_in_order(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let mut first = v1.first_publish(GUN);
    first.record.entry = first.record.entry.by(Some("alice"));
    first.record.keys = vec!["key-a".to_owned(), "key-b".to_owned(), "key-a".to_owned()];
    first.record.history = vec![event("v1.0", 1, "added", "aa"), event("v1.1", 1, "added", "bb")];
    store.update(first).await.expect("first publish");
    // The first move takes the one pending entry; nothing is left for a second.
    assert_eq!(store.flush_audit_index().await.expect("move"), 1);
    assert_eq!(store.flush_audit_index().await.expect("move again"), 0);
    let history = store.target_history(GUN, "v1.1").await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].event.sha256.as_deref(), history[0].principal.as_deref(), history[0].audit_seq),
        (Some("bb"), Some("alice"), Some(0))
    );

    // Unmoved rows are found by each query that reads them, without an explicit move.
    let v2 = Repo::new(2, "v2");
    let mut second = v2.next_publish(GUN, 1);
    second.record.keys = vec!["key-c".to_owned()];
    second.record.history = vec![event("v1.0", 2, "changed", "cc")];
    store.update(second).await.expect("second publish");
    let by_key = |key: &str| AuditFilter { key: Some(key.to_owned()), ..all(10) };
    let found = store.audit_entries(&by_key("key-c")).await.expect("entries of key-c");
    assert_eq!(found.iter().map(|stored| stored.entry.seq).collect::<Vec<_>>(), vec![1]);
    let found = store.audit_entries(&by_key("key-a")).await.expect("entries of key-a");
    assert_eq!(found.iter().map(|stored| stored.entry.seq).collect::<Vec<_>>(), vec![0]);
    assert_eq!(store.flush_audit_index().await.expect("moved by the query"), 0);

    // A small record, then a streamed one: the streamed rows come after the pending ones.
    let v3 = Repo::new(3, "v3");
    let mut third = v3.next_publish(GUN, 2);
    third.record.history = vec![event("v1.0", 3, "changed", "dd")];
    store.update(third).await.expect("third publish");
    let v4 = Repo::new(4, "v4");
    let mut fourth = v4.next_publish(GUN, 3);
    fourth.record.streamed = Some(tufa_store::StreamedEvents::new(Box::new(TwoFiles { first: 600, given: 0 })));
    store.update(fourth).await.expect("fourth publish");
    let v5 = Repo::new(5, "v5");
    let mut fifth = v5.next_publish(GUN, 4);
    fifth.record.history = vec![event("v1.0", 5, "changed", "ee")];
    store.update(fifth).await.expect("fifth publish");
    let rows = store.history_of_entries(0, 4).await.expect("history");
    let seqs: Vec<Option<i64>> = rows.iter().map(|row| row.audit_seq).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] <= pair[1]), "rows follow their entries: {seqs:?}");
    assert!(rows.windows(2).all(|pair| pair[0].id < pair[1].id), "in id order");
    assert_eq!(rows.iter().filter(|row| row.audit_seq == Some(3)).count(), 603);
    let history = store.target_history(GUN, "v1.0").await.expect("v1.0");
    let versions: Vec<i64> = history.iter().map(|row| row.event.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 5]);
    assert!(verify_all(&store).await.problems.is_empty(), "the log verifies");
}

/// Publishes and appends that leave index rows pending, racing with moves of those rows: every
/// entry's rows end up in their tables exactly once.
pub(crate) async fn pending_index_rows_move_once_under_concurrency(store: Arc<dyn Store>) {
    let writers = 12;
    let mut tasks = Vec::new();
    for n in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let gun = format!("example.com/app-{n}");
            let repo = Repo::new(1, &format!("r{n}"));
            let mut publish = repo.first_publish(&gun);
            publish.record.keys = vec![format!("publish-key-{n}")];
            publish.record.history = vec![event("v1.0", 1, "added", &format!("{n:02x}"))];
            store.update(publish).await.expect("publish");
            let mut record = Record::new(NewEntry::new(kinds::KEY_CREATE, serde_json::json!({ "n": n })));
            record.keys = vec![format!("online-key-{n}")];
            store.append_audit(record).await.expect("append");
        }));
    }
    let movers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    store.flush_audit_index().await.expect("move");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks.into_iter().chain(movers) {
        task.await.expect("task");
    }
    let entries = u64::try_from(writers * 2).expect("small");
    assert_eq!(store.audit_size().await.expect("size"), entries);
    let rows = store.history_of_entries(0, entries - 1).await.expect("history");
    assert_eq!(rows.len(), writers, "one history row per publish: {rows:?}");
    for n in 0..writers {
        let history = store.target_history(&format!("example.com/app-{n}"), "v1.0").await.expect("history");
        assert_eq!(history.len(), 1, "app-{n}");
        assert_eq!(history[0].event.sha256.as_deref(), Some(format!("{n:02x}").as_str()));
        for key in [format!("publish-key-{n}"), format!("online-key-{n}")] {
            let found = store.audit_entries(&AuditFilter { key: Some(key.clone()), ..all(10) }).await.expect("by key");
            assert_eq!(found.len(), 1, "{key}");
        }
    }
    assert_eq!(store.flush_audit_index().await.expect("nothing left"), 0);
    assert!(verify_all(&store).await.ok(), "the log verifies");
}

pub(crate) async fn checkpoints_and_signing_key(store: Arc<dyn Store>) {
    assert_eq!(store.audit_signing_key().await.expect("none"), None);
    let key = AuditSigningKey {
        key_id: "abc".into(),
        name: "tufa.example/audit".into(),
        keytype: "ecdsa".into(),
        public: vec![1, 2, 3],
        created_at: now(),
    };
    assert!(store.insert_audit_signing_key(&key).await.expect("insert"));
    let other = AuditSigningKey { key_id: "def".into(), ..key.clone() };
    assert!(!store.insert_audit_signing_key(&other).await.expect("second"));
    assert_eq!(store.audit_signing_key().await.expect("read"), Some(key));

    assert_eq!(store.latest_checkpoint().await.expect("none"), None);
    store.insert_checkpoint(3, "r3", "note 3").await.expect("cp");
    store.insert_checkpoint(5, "r5", "note 5").await.expect("cp");
    let latest = store.latest_checkpoint().await.expect("latest").expect("some");
    assert_eq!((latest.size, latest.root.as_str(), latest.note.as_str()), (5, "r5", "note 5"));
    assert_eq!(store.checkpoints().await.expect("all").iter().map(|c| c.size).collect::<Vec<_>>(), vec![3, 5]);
}

pub(crate) async fn account_changes_are_recorded_only_when_they_happen(store: Arc<dyn Store>) {
    let record = |kind: &str| Record::new(NewEntry::new(kind, serde_json::json!({})).by(Some("admin-cli:root")));
    // Changes that change nothing record nothing.
    assert!(!store.set_password_hash("nobody", None, &record(kinds::PRINCIPAL_PASSWORD)).await.expect("no user"));
    assert!(!store.remove_principal("nobody", &record(kinds::PRINCIPAL_REMOVE)).await.expect("no user"));
    assert!(!store.remove_binding("nobody", "reader", "*", &record(kinds::ROLE_REVOKE)).await.expect("no binding"));
    assert!(!store.clear_tombstone(GUN, &record(kinds::TOMBSTONE_CLEAR)).await.expect("no tombstone"));
    assert_eq!(store.audit_size().await.expect("size"), 0);
    // Each change records exactly one entry with the actor.
    assert!(store.add_binding("ci", "reader", "*", &record(kinds::ROLE_GRANT)).await.expect("grant"));
    assert!(!store.add_binding("ci", "reader", "*", &record(kinds::ROLE_GRANT)).await.expect("again"));
    assert!(store.remove_binding("ci", "reader", "*", &record(kinds::ROLE_REVOKE)).await.expect("revoke"));
    let entries = store.audit_entries(&all(10)).await.expect("entries");
    let kinds: Vec<(&str, Option<&str>)> =
        entries.iter().map(|stored| (stored.entry.kind.as_str(), stored.entry.principal.as_deref())).collect();
    assert_eq!(kinds, vec![("role.grant", Some("admin-cli:root")), ("role.revoke", Some("admin-cli:root"))]);
}

/// A history row's canonical IDs read back whether they are its key IDs (then the store leaves
/// them out of the row) or differ from them, and the log still verifies.
pub(crate) async fn history_canonical_ids_read_back_whether_or_not_they_differ(store: Arc<dyn Store>) {
    let v1 = Repo::new(1, "v1");
    let mut first = v1.first_publish(GUN);
    let mut own = event("plain", 1, "added", "aa");
    own.signer_keys = vec!["k9".to_owned(), "k8".to_owned()].into();
    own.signer_canonical_ids = own.signer_keys.clone();
    let mut none = event("unsigned", 1, "added", "bb");
    none.signer_keys = Vec::new().into();
    none.signer_canonical_ids = Vec::new().into();
    first.record.history = vec![own, event("certified", 1, "added", "cc"), none];
    store.update(first).await.expect("publish");
    let lists = |name: &'static str| {
        let store = store.clone();
        async move {
            let history = store.target_history(GUN, name).await.expect("history");
            assert_eq!(history.len(), 1, "{name}");
            (history[0].event.signer_keys.to_vec(), history[0].event.signer_canonical_ids.to_vec())
        }
    };
    let strings = |list: &[&str]| list.iter().map(|key| (*key).to_owned()).collect::<Vec<_>>();
    assert_eq!(lists("plain").await, (strings(&["k9", "k8"]), strings(&["k9", "k8"])));
    assert_eq!(lists("certified").await, (strings(&["k1"]), strings(&["canonical-k1"])));
    assert_eq!(lists("unsigned").await, (Vec::new(), Vec::new()));
    assert!(verify_all(&store).await.problems.is_empty());
}
