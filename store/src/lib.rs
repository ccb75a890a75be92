//! Tufa's storage: TUF metadata files, the per-GUN set of current files, the changefeed, the
//! server's online keys and the auth tables (principals, API tokens, role bindings, tombstones
//! of deleted GUNs, token-signing keys), behind one [`Store`] trait with SQLite and PostgreSQL
//! backends.
//!
//! The store speaks in domain words and knows SQL, never HTTP or JSON: the server parses
//! and verifies metadata, then hands the store finished rows. Bytes go in and come out
//! verbatim.
//!
//! Two design points matter to callers:
//!
//! * Every GUN has a set of *current* pointers (role -> stored file). Reading current
//!   metadata is one indexed query joining the pointer and the file; the server decides which
//!   files are current and passes the complete set with each [`Update`].
//! * [`Store::update`] is one transaction that holds a per-GUN lock and checks
//!   [`Update::expected_timestamp_version`] against the stored current timestamp, so of two
//!   concurrent publishes to one GUN exactly one wins and the other gets
//!   [`StoreError::OldVersion`].

mod audit;
mod auth;
mod error;
mod postgres;
mod sql;
mod sqlite;
mod url;
mod validate;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use audit::{
    AuditFilter, AuditSigningKey, Checkpoint, EventSource, Grant, GrantKey, NewGrant, NewTargetEvent, Record,
    StoredEntry, StreamedEvents, TargetEvent,
};
pub use auth::{ApiToken, Principal, PrincipalKind, RoleBinding, TokenKey, TokenKeyKind, Tombstone};
pub use error::{StoreError, is_transient};
pub use sqlite::{create_sqlite_file, sqlite_file_options};
pub use url::{Backend, DatabaseUrl, SqliteLocation, UrlError, redact_url};

/// The role name whose stored files produce changefeed records.
pub(crate) const TIMESTAMP_ROLE: &str = "timestamp";

/// The role name whose current file a GUN's tombstone keeps.
pub(crate) const ROOT_ROLE: &str = "root";

/// A stored metadata file.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Full role name, e.g. `root`, `targets/releases`.
    pub role: String,
    /// The file's `signed.version`.
    pub version: i64,
    /// Lowercase hex SHA-256 of `data`.
    pub sha256: String,
    /// The file's bytes exactly as stored.
    pub data: Vec<u8>,
    /// The file's `signed.expires`, if it has one.
    pub expires: Option<DateTime<Utc>>,
    /// When the store wrote the row.
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for StoredFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredFile")
            .field("role", &self.role)
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("data_len", &self.data.len())
            .field("expires", &self.expires)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A metadata file to insert as part of an [`Update`].
#[derive(Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Full role name.
    pub role: String,
    /// The file's `signed.version`.
    pub version: i64,
    /// Lowercase hex SHA-256 of `data`; the store checks it.
    pub sha256: String,
    /// The exact bytes to store and later serve.
    pub data: Vec<u8>,
    /// The file's `signed.expires`, if it has one.
    pub expires: Option<DateTime<Utc>>,
}

impl fmt::Debug for NewFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewFile")
            .field("role", &self.role)
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("data_len", &self.data.len())
            .field("expires", &self.expires)
            .finish()
    }
}

/// One current pointer: for `role`, serve the stored file of this GUN with this checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentEntry {
    /// Full role name.
    pub role: String,
    /// Lowercase hex SHA-256 of the file to point at.
    pub sha256: String,
}

/// An atomic change to one GUN: new files plus the complete new set of current pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The GUN being updated.
    pub gun: String,
    /// Rows to insert. Each must have a version higher than every stored version of its role.
    pub files: Vec<NewFile>,
    /// The complete new set of current pointers for this GUN; it replaces the old set. Each
    /// entry must reference a file of this GUN and role, either in `files` or already stored;
    /// otherwise the update fails with [`StoreError::Internal`] and nothing is written.
    pub current: Vec<CurrentEntry>,
    /// The version of the current timestamp the server validated against, or `None` if the
    /// GUN had no current timestamp. A mismatch fails with [`StoreError::OldVersion`] for
    /// role `timestamp`.
    pub expected_timestamp_version: Option<i64>,
    /// The audit entry, grants and target history of this change, written in its transaction.
    pub record: Record,
}

/// What a changefeed record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeCategory {
    /// A timestamp was stored.
    Update,
    /// A GUN was deleted.
    Deletion,
}

impl ChangeCategory {
    /// The wire and database spelling: `update` or `deletion`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeCategory::Update => "update",
            ChangeCategory::Deletion => "deletion",
        }
    }

    /// Parses the database spelling.
    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "update" => Ok(ChangeCategory::Update),
            "deletion" => Ok(ChangeCategory::Deletion),
            other => Err(StoreError::Internal(format!("unknown changefeed category {other:?} in the database"))),
        }
    }
}

impl fmt::Display for ChangeCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One changefeed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the feed; increases with every record.
    pub id: i64,
    /// When the record was written.
    pub created_at: DateTime<Utc>,
    /// The GUN that changed.
    pub gun: String,
    /// The stored timestamp's version, or 0 for a deletion.
    pub version: i64,
    /// The stored timestamp's lowercase hex SHA-256, or empty for a deletion.
    pub sha256: String,
    /// What happened.
    pub category: ChangeCategory,
}

/// An online key held by the server. The private half arrives sealed; the store never sees
/// plaintext key material.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The TUF key ID.
    pub key_id: String,
    /// The GUN the key was generated for.
    pub gun: String,
    /// The role the key signs for (`timestamp` or `snapshot`).
    pub role: String,
    /// The key algorithm, e.g. `ecdsa`.
    pub algorithm: String,
    /// The public key bytes.
    pub public: Vec<u8>,
    /// The private key, encrypted by the server.
    pub sealed_private: Vec<u8>,
    /// Which key-encryption key sealed `sealed_private`.
    pub kek_id: String,
    /// When the key was generated.
    pub created_at: DateTime<Utc>,
    /// When the key was first put into use, `None` while it is unused.
    pub last_used: Option<DateTime<Utc>>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("key_id", &self.key_id)
            .field("gun", &self.gun)
            .field("role", &self.role)
            .field("algorithm", &self.algorithm)
            .field("public_len", &self.public.len())
            .field("sealed_private", &"<sealed>")
            .field("kek_id", &self.kek_id)
            .field("created_at", &self.created_at)
            .field("last_used", &self.last_used)
            .finish()
    }
}

/// Which repository and role an online key was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    /// The TUF key ID (canonical: the bare key's ID).
    pub key_id: String,
    /// The GUN the key was issued for.
    pub gun: String,
    /// `timestamp` or `snapshot`.
    pub role: String,
    /// The client address that asked for the key, when known.
    pub requester: Option<String>,
    /// When the key was issued (or first claimed by its repository).
    pub created_at: DateTime<Utc>,
}

/// Where the re-signer stopped: the next page starts after this expiry and GUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringCursor {
    /// The earliest expiry of the last GUN returned.
    pub expires: DateTime<Utc>,
    /// The last GUN returned.
    pub gun: String,
}

/// Tufa's storage operations. Implemented for SQLite and PostgreSQL; obtain one with [`open`].
///
/// Every method that changes principals, tokens, role bindings, tombstones or keys takes the
/// [`Record`] of that change and appends its audit entry in the same transaction, only when
/// something changed: no change without its record, no record without its change.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// The current file of `role` in `gun`, in one query.
    async fn current(&self, gun: &str, role: &str) -> Result<Option<StoredFile>, StoreError>;

    /// The current files of the given roles, in one query, ordered by role. Roles without a
    /// current file are left out.
    async fn current_many(&self, gun: &str, roles: &[&str]) -> Result<Vec<StoredFile>, StoreError>;

    /// All current files of `gun`, ordered by role.
    async fn current_all(&self, gun: &str) -> Result<Vec<StoredFile>, StoreError>;

    /// The role and version of every current file of `gun`, ordered by role, without their bytes.
    async fn current_versions(&self, gun: &str) -> Result<Vec<(String, i64)>, StoreError>;

    /// The role, lower-case hex SHA-256 and size in bytes of every current file of `gun`,
    /// ordered by role, without reading their bytes.
    async fn current_heads(&self, gun: &str) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// The stored file of `gun` and `role` whose SHA-256 is `sha256_hex` (lowercase).
    async fn by_checksum(&self, gun: &str, role: &str, sha256_hex: &str) -> Result<Option<StoredFile>, StoreError>;

    /// The stored file of `gun` and `role` with this version.
    async fn by_version(&self, gun: &str, role: &str, version: i64) -> Result<Option<StoredFile>, StoreError>;

    /// Applies `update` in one transaction: takes the GUN's lock, checks the expected
    /// timestamp version and the new versions, inserts the files, replaces the current set
    /// and writes one changefeed `update` record per inserted timestamp. When the update
    /// inserts a file of role `root`, it also deletes the GUN's [`Tombstone`]; an update
    /// without a root leaves the tombstone alone. Appends [`Update::record`]'s audit entry and
    /// writes its grants and target history in the same transaction. All or nothing.
    async fn update(&self, update: Update) -> Result<(), StoreError>;

    /// Hard-deletes every file and current pointer of `gun`. If the GUN had a current root,
    /// first writes (or replaces) its [`Tombstone`] with that root's bytes. If any file was
    /// deleted, writes one changefeed `deletion` record and `record`'s audit entry, marks the
    /// GUN's grants superseded and returns `true`. Server keys are kept. All in one transaction.
    async fn delete_gun(&self, gun: &str, record: Record) -> Result<bool, StoreError>;

    /// Changefeed page, optionally for one GUN, always ordered oldest to newest.
    ///
    /// With `records > 0` and `change_id >= 0`: up to `records` changes with id above
    /// `change_id`. With `records < 0` or `change_id < 0`: up to `|records|` changes going
    /// backwards, from below `change_id` when it is positive and from the newest otherwise.
    /// `records == 0` returns nothing (the HTTP layer maps 0 to its default page size).
    async fn changefeed(&self, gun: Option<&str>, change_id: i64, records: i64) -> Result<Vec<Change>, StoreError>;

    /// Up to `limit` distinct GUNs whose current timestamp or snapshot expires before
    /// `before`, soonest expiry first.
    async fn expiring(&self, before: DateTime<Utc>, limit: i64) -> Result<Vec<String>, StoreError>;

    /// Up to `limit` GUNs whose current timestamp or snapshot expires before `before`, in order of
    /// their earliest such expiry then GUN, starting after `after` (from the first when `None`):
    /// a keyset page, so a caller can walk every expiring repository.
    async fn expiring_page(
        &self,
        before: DateTime<Utc>,
        after: Option<&ExpiringCursor>,
        limit: i64,
    ) -> Result<Vec<ExpiringCursor>, StoreError>;

    /// Records that `owner.key_id` was issued for `owner.gun` and `owner.role`. A key that already
    /// has an owner keeps it (the first record wins); returns the owner now recorded.
    async fn record_key_owner(&self, owner: &KeyOwner) -> Result<KeyOwner, StoreError>;

    /// The recorded owner of an online key.
    async fn key_owner(&self, key_id: &str) -> Result<Option<KeyOwner>, StoreError>;

    /// The keys `requester` asked for whose repository has no current files (never published, or
    /// deleted), oldest first.
    async fn pending_keys(&self, requester: &str) -> Result<Vec<KeyOwner>, StoreError>;

    /// Forgets the owners of `key_ids` and deletes those of them the in-process signer holds and
    /// never used, in one transaction. Returns how many owner records were removed.
    async fn drop_keys(&self, key_ids: &[String]) -> Result<u64, StoreError>;

    /// A cheap check that the database answers and has the schema.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new server key. A key ID that already exists is an [`StoreError::Internal`].
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// The server key with this ID.
    async fn key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError>;

    /// The unused key (never marked used) for `gun`, `role` and `algorithm` with the lowest
    /// key ID.
    async fn unused_key(&self, gun: &str, role: &str, algorithm: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Records that the key is in use now. An unknown key ID is an [`StoreError::Internal`].
    async fn mark_key_used(&self, key_id: &str) -> Result<(), StoreError>;

    /// The distinct key-encryption key ids of the stored server keys ([`StoredKey::kek_id`])
    /// and token keys ([`TokenKey::kek_id`], retired ones included), in ascending order: which
    /// key-encryption keys this database's keys need.
    async fn kek_ids(&self) -> Result<Vec<String>, StoreError>;

    /// The server key with the lowest key ID among those sealed by `kek_id`, if any. Token keys
    /// are not considered.
    async fn key_sealed_with(&self, kek_id: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Adds a principal. A name that exists already is [`StoreError::Conflict`].
    async fn add_principal(&self, principal: &Principal, record: &Record) -> Result<(), StoreError>;

    /// Sets (or with `None` removes) the principal's password hash. `false`: no such principal.
    async fn set_password_hash(&self, name: &str, hash: Option<&str>, record: &Record) -> Result<bool, StoreError>;

    /// The principal with this name.
    async fn principal(&self, name: &str) -> Result<Option<Principal>, StoreError>;

    /// All principals, ordered by name.
    async fn principals(&self) -> Result<Vec<Principal>, StoreError>;

    /// Removes the principal with its API tokens and role bindings, in one transaction.
    /// `false`: no such principal, and nothing was changed (bindings of a name that is not a
    /// principal, such as `anonymous`, are kept).
    async fn remove_principal(&self, name: &str, record: &Record) -> Result<bool, StoreError>;

    /// Stores an API token. A principal that does not exist is [`StoreError::NotFound`]; a token
    /// id that exists already is [`StoreError::Conflict`].
    async fn insert_api_token(&self, token: &ApiToken, record: &Record) -> Result<(), StoreError>;

    /// The API token with this id, revoked or expired ones included.
    async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError>;

    /// All API tokens, ordered by principal, then id.
    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Marks the token revoked at `at`. `false`: no such token, or it was revoked already (the
    /// first revocation time is kept).
    async fn revoke_api_token(&self, id: &str, at: DateTime<Utc>, record: &Record) -> Result<bool, StoreError>;

    /// Binds `role` on `pattern` to `principal`, created now. `false`: that exact binding
    /// existed already (it is left as it was). The principal need not be stored.
    async fn add_binding(
        &self,
        principal: &str,
        role: &str,
        pattern: &str,
        record: &Record,
    ) -> Result<bool, StoreError>;

    /// Removes that exact binding. `false`: there was none.
    async fn remove_binding(
        &self,
        principal: &str,
        role: &str,
        pattern: &str,
        record: &Record,
    ) -> Result<bool, StoreError>;

    /// All role bindings, ordered by principal, pattern, then role.
    async fn bindings(&self) -> Result<Vec<RoleBinding>, StoreError>;

    /// The role bindings of these principals only, in one query, ordered like
    /// [`Store::bindings`]. Names that are not bound contribute nothing.
    async fn bindings_for(&self, principals: &[&str]) -> Result<Vec<RoleBinding>, StoreError>;

    /// The tombstone of `gun`, if it was deleted and not re-created with a new root since.
    async fn tombstone(&self, gun: &str) -> Result<Option<Tombstone>, StoreError>;

    /// All tombstones, ordered by GUN.
    async fn tombstones(&self) -> Result<Vec<Tombstone>, StoreError>;

    /// Deletes the tombstone of `gun`. `false`: there was none.
    async fn clear_tombstone(&self, gun: &str, record: &Record) -> Result<bool, StoreError>;

    /// Stores a token key. `false`: `key` is active (not retired) and an active key of its
    /// kind exists already; nothing is written, and the caller should re-read the active key.
    /// At most one key per kind is active, also across processes sharing one database. A key
    /// id that exists already is [`StoreError::Conflict`].
    async fn insert_token_key(&self, key: &TokenKey) -> Result<bool, StoreError>;

    /// In one transaction, retires the active key of `new.kind` (if any) at `at` and stores
    /// `new` as the active key of its kind. `new` must not be retired
    /// ([`StoreError::Internal`]); a key id that exists already is [`StoreError::Conflict`].
    /// Concurrent rotations are serialised: each retires the key the one before it stored.
    async fn rotate_token_key(&self, new: &TokenKey, at: DateTime<Utc>, record: &Record) -> Result<(), StoreError>;

    /// All token keys, retired ones included, ordered by creation time, then id.
    async fn token_keys(&self) -> Result<Vec<TokenKey>, StoreError>;

    /// Appends `record`'s audit entry on its own, for a change made outside this database (a key
    /// created by a remote signer); returns its position. Its grants and history are ignored.
    async fn append_audit(&self, record: Record) -> Result<u64, StoreError>;

    /// Appends the entries of `records` in order, in one transaction; returns the position of
    /// the first. For bulk writes (backfill, benchmarks); grants and history are ignored.
    async fn append_audit_batch(&self, records: Vec<Record>) -> Result<u64, StoreError>;

    /// The number of audit entries, which is the Merkle tree's size.
    async fn audit_size(&self) -> Result<u64, StoreError>;

    /// Audit entries matching `filter`, in log order, at most `filter.limit` (at least 1).
    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<StoredEntry>, StoreError>;

    /// The stored Merkle hashes with these indexes; indexes not stored are left out.
    async fn audit_hashes(&self, indexes: &[u64]) -> Result<tufa_audit::tree::Hashes, StoreError>;

    /// Stores a signed checkpoint of the first `size` entries.
    async fn insert_checkpoint(&self, size: u64, root: &str, note: &str) -> Result<(), StoreError>;

    /// Every stored checkpoint, oldest first.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// The checkpoint of the largest tree, if any.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// The active checkpoint-signing key.
    async fn audit_signing_key(&self) -> Result<Option<AuditSigningKey>, StoreError>;

    /// Records the active checkpoint-signing key. `false`: one is recorded already (nothing is
    /// written; re-read it), also when another process raced this one.
    async fn insert_audit_signing_key(&self, key: &AuditSigningKey) -> Result<bool, StoreError>;

    /// The grants of `gun` in effect now (`at` = `None`) or at `at`, ordered by delegating role,
    /// delegated role, then id.
    async fn grants(&self, gun: &str, at: Option<DateTime<Utc>>) -> Result<Vec<Grant>, StoreError>;

    /// Every grant `gun` ever had, superseded ones included, oldest first.
    async fn grant_history(&self, gun: &str) -> Result<Vec<Grant>, StoreError>;

    /// Every grant, in any repository and at any time, that lists `key_id` (as listed or as
    /// canonical key ID), oldest first.
    async fn key_grants(&self, key_id: &str) -> Result<Vec<Grant>, StoreError>;

    /// Moves the key-index and target-history rows of small audit entries, which their
    /// transactions leave in `audit_pending`, into their tables: in the entries' order, in
    /// transactions of at most 32 entries each, so publishes waiting for the lock go in between.
    /// The queries that read those rows do it first; the server also does it every half second
    /// and at shutdown. Returns the number of entries whose rows moved.
    async fn flush_audit_index(&self) -> Result<usize, StoreError>;

    /// Every recorded event of target `name` in `gun`, oldest first.
    async fn target_history(&self, gun: &str, name: &str) -> Result<Vec<TargetEvent>, StoreError>;

    /// The target events recorded by the audit entries at positions `from..=to`, ordered by entry,
    /// then as written.
    async fn history_of_entries(&self, from: u64, to: u64) -> Result<Vec<TargetEvent>, StoreError>;

    /// The grants recorded by the audit entries at positions `from..=to` (with their keys),
    /// ordered by entry, then as written.
    async fn grants_of_entries(&self, from: u64, to: u64) -> Result<Vec<Grant>, StoreError>;

    /// The grants ended by the audit entries at positions `from..=to` (`superseded_seq` in the
    /// range), without their keys, ordered by the entry that ended them, then as written.
    async fn grants_ended_by_entries(&self, from: u64, to: u64) -> Result<Vec<Grant>, StoreError>;

    /// A value kept in the audit state table (e.g. whether the backfill ran).
    async fn audit_state(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Stores rebuilt grants and target events of `gun` (principal and audit entry unknown;
    /// times as given; ids ignored) with `record`'s audit entry if given, and sets the audit state `done`
    /// (name, value) if given, in one transaction.
    async fn backfill(
        &self,
        gun: &str,
        grants: Vec<Grant>,
        history: Vec<TargetEvent>,
        record: Option<&Record>,
        done: Option<(&str, &str)>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` GUNs that have stored files, in order, after `after`.
    async fn guns_with_files(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>, StoreError>;

    /// Every stored file of `gun` as (role, version, when stored), oldest first.
    async fn file_versions(&self, gun: &str) -> Result<Vec<(String, i64, DateTime<Utc>)>, StoreError>;
}

/// Opens the database named by `url` and brings its schema up to date.
///
/// A SQLite file is created if missing; `sqlite::memory:` opens one in-memory database that
/// lives as long as the returned store. An unreachable PostgreSQL server fails with
/// [`StoreError::Unavailable`] after about three seconds. Error messages never contain the
/// URL's password.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn Store>, StoreError> {
    let pools = match url.sqlite_location() {
        Some(SqliteLocation::File(path)) => sqlite::open(path).await?,
        Some(SqliteLocation::Memory) => sqlite::open_memory().await?,
        None => postgres::open(url).await?,
    };
    Ok(Arc::new(sql::SqlStore::new(pools)))
}

/// Opens (creating it if missing) the SQLite database file at `path` and brings its schema
/// up to date.
pub async fn open_sqlite(path: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(sql::SqlStore::new(sqlite::open(path).await?)))
}
