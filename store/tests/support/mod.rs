//! Test databases (a SQLite file in a temp dir, a fresh PostgreSQL database per test) and
//! fixture builders shared by the conformance suite.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use tufa_audit::NewEntry;
use tufa_audit::entry::kinds;
use tufa_store::{CurrentEntry, DatabaseUrl, NewFile, Record, Store, Update};
use tufa_testkit::postgres::PgDatabase;

/// A SQLite store in its own temp dir, removed on drop.
pub(crate) struct SqliteDb {
    pub store: Arc<dyn Store>,
    /// Keeps the directory alive as long as the store.
    _dir: tempfile::TempDir,
}

impl SqliteDb {
    pub(crate) async fn create() -> SqliteDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = tufa_store::open_sqlite(&dir.path().join("tufa.sqlite")).await.expect("open SQLite store");
        SqliteDb { store, _dir: dir }
    }
}

/// A PostgreSQL database created for one test inside the `DATABASE_URL` cluster and dropped
/// (with its connections) on drop, also when the test fails; see `tufa_testkit::postgres`.
pub(crate) struct PgDb {
    /// URL of this test's database.
    pub url: String,
    _database: PgDatabase,
}

impl PgDb {
    pub(crate) async fn create() -> PgDb {
        let database = PgDatabase::create();
        PgDb { url: database.url().to_owned(), _database: database }
    }

    /// Opens a store on this database.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        tufa_store::open(&url(&self.url)).await.expect("open PostgreSQL store")
    }
}

/// Parses a database URL the test wrote itself.
pub(crate) fn url(text: &str) -> DatabaseUrl {
    DatabaseUrl::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// A file whose bytes name its role, version and `tag`, so different publishers' files differ.
pub(crate) fn file(role: &str, version: i64, tag: &str) -> NewFile {
    let data = format!(r#"{{"signed":{{"_type":"{role}","version":{version}}},"tag":"{tag}"}}"#).into_bytes();
    NewFile { role: role.into(), version, sha256: sha256_hex(&data), data, expires: None }
}

/// Sets a file's expiry.
pub(crate) fn expiring_at(mut file: NewFile, expires: DateTime<Utc>) -> NewFile {
    file.expires = Some(expires);
    file
}

/// A current pointer at `file`.
pub(crate) fn pointer(file: &NewFile) -> CurrentEntry {
    CurrentEntry { role: file.role.clone(), sha256: file.sha256.clone() }
}

/// An update that inserts `files` and makes exactly `current` current.
pub(crate) fn update(
    gun: &str,
    files: &[&NewFile],
    current: &[&NewFile],
    expected_timestamp_version: Option<i64>,
) -> Update {
    Update {
        gun: gun.into(),
        files: files.iter().map(|file| (*file).clone()).collect(),
        current: current.iter().map(|file| pointer(file)).collect(),
        expected_timestamp_version,
        record: Record::new(NewEntry::new(kinds::PUBLISH, serde_json::json!({})).gun(gun)),
    }
}

/// The audit record of an account, token, binding, tombstone or key change in a test.
pub(crate) fn change() -> Record {
    Record::new(NewEntry::new(kinds::ROLE_GRANT, serde_json::json!({"test": true})))
}

/// The audit record of deleting `gun`.
pub(crate) fn deletion(gun: &str) -> Record {
    Record::new(NewEntry::new(kinds::DELETE, serde_json::json!({})).gun(gun))
}

/// The four files of a whole repository version: root v1 and targets, snapshot and
/// timestamp at `version`.
pub(crate) struct Repo {
    pub root: NewFile,
    pub targets: NewFile,
    pub snapshot: NewFile,
    pub timestamp: NewFile,
}

impl Repo {
    pub(crate) fn new(version: i64, tag: &str) -> Repo {
        Repo {
            root: file("root", 1, "root"),
            targets: file("targets", version, tag),
            snapshot: file("snapshot", version, tag),
            timestamp: file("timestamp", version, tag),
        }
    }

    pub(crate) fn all(&self) -> [&NewFile; 4] {
        [&self.root, &self.targets, &self.snapshot, &self.timestamp]
    }

    /// The first publish: all four files, nothing current before.
    pub(crate) fn first_publish(&self, gun: &str) -> Update {
        update(gun, &self.all(), &self.all(), None)
    }

    /// A later publish on top of timestamp `previous`: new targets, snapshot and timestamp.
    pub(crate) fn next_publish(&self, gun: &str, previous: i64) -> Update {
        update(gun, &[&self.targets, &self.snapshot, &self.timestamp], &self.all(), Some(previous))
    }
}

/// Now, at the microsecond precision the store keeps.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
