//! The store's queries, each written once for SQLite and PostgreSQL.
//!
//! sqlx's pools, transactions and rows are different types per database, so each method body is
//! written once inside [`per_dialect!`], which compiles it once per dialect with `D` naming that
//! dialect. Where the SQL truly differs (locking, how times are stored, batch statements), the
//! body calls a [`Dialect`] function; `sqlite.rs` and `postgres.rs` implement them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Pool, QueryBuilder, Transaction};

use crate::error::{from_sqlx, is_foreign_key_violation, is_unique_violation};
use crate::postgres::Postgres;
use crate::sqlite::{Sqlite, SqlitePools};
use crate::validate::{check_update, inserted_timestamps, now};
use tufa_audit::Hash;
use tufa_audit::entry::{Entry, hash_hex, parse_hash_hex};

use crate::{
    ApiToken, AuditFilter, AuditSigningKey, Change, ChangeCategory, Checkpoint, CurrentEntry, ExpiringCursor, Grant,
    GrantKey, KeyOwner, NewFile, NewGrant, NewTargetEvent, Principal, PrincipalKind, ROOT_ROLE, Record, RoleBinding,
    Store, StoreError, StoredEntry, StoredFile, StoredKey, TIMESTAMP_ROLE, TargetEvent, TokenKey, TokenKeyKind,
    Tombstone, Update,
};

/// What differs between the two SQL dialects; everything else is written once in this file.
pub(crate) trait Dialect: Sized + 'static {
    /// The backend's name, as [`Store::backend`] reports it.
    const NAME: &'static str;
    /// Whether a [`Batch`] of statements is sent as one statement of `WITH` parts (PostgreSQL)
    /// rather than as one text of several statements (SQLite).
    const BATCH_AS_CTES: bool;
    /// Written before a column in a `WHERE` term to keep the planner from using an index on it
    /// (SQLite's unary `+`; empty for PostgreSQL, whose planner has statistics). Without it,
    /// SQLite picks `grants_gun_idx` for the record's grant statements and walks every grant a
    /// repository's role ever had, so each publish gets slower than the last.
    const UNINDEXED: &'static str;
    /// The sqlx database.
    type Db: sqlx::Database;
    /// The connection pools the dialect keeps.
    type Pools: Send + Sync;
    /// How a time is stored: INTEGER microseconds in SQLite, `timestamptz` in PostgreSQL.
    type Time: Send;

    /// A time in storage form (whole microseconds).
    fn time(time: DateTime<Utc>) -> Self::Time;
    /// A stored time read back from `column`.
    fn read_time(value: Self::Time, column: &str) -> Result<DateTime<Utc>, StoreError>;
    /// The pool for reads.
    fn reader(pools: &Self::Pools) -> &Pool<Self::Db>;
    /// The pool for writes outside a transaction.
    fn writer(pools: &Self::Pools) -> &Pool<Self::Db>;

    /// Starts a write transaction that holds `gun`'s lock until it ends.
    async fn begin_for_gun(pools: &Self::Pools, gun: &str) -> Result<Tx<Self>, StoreError>;
    /// Starts a write transaction that takes no lock of its own (beyond what the dialect's
    /// writes always take).
    async fn begin_write(pools: &Self::Pools) -> Result<Tx<Self>, StoreError>;
    /// Serialises writes to the token keys until the transaction ends, so that checking for an
    /// active key and inserting one cannot interleave with another process doing the same.
    async fn lock_token_keys(tx: &mut Tx<Self>) -> Result<(), StoreError>;
    /// Serialises changefeed inserts until the transaction ends, so that ids become visible in
    /// order.
    async fn lock_changefeed(tx: &mut Tx<Self>) -> Result<(), StoreError>;
    /// Serialises audit appends until the transaction ends, so that positions are gapless and
    /// each entry links to the one before it, across processes.
    async fn lock_audit(tx: &mut Tx<Self>) -> Result<(), StoreError>;
    /// The current files of `roles` (not empty) in `gun`, ordered by role.
    async fn current_many(pools: &Self::Pools, gun: &str, roles: &[&str]) -> Result<Vec<FileRow<Self>>, StoreError>;
    /// What an update reads in its transaction before it writes, in as few round trips as the
    /// dialect allows: the stored timestamp's version, the newest stored version of each file's
    /// role (fails with [`StoreError::OldVersion`] unless every file's version is above it), and,
    /// with the audit lock held from here to the end of the transaction, the log's last entry.
    async fn prepare_update(tx: &mut Tx<Self>, gun: &str, files: &[NewFile]) -> Result<UpdateReads, StoreError>;
    /// Inserts the current pointers (the old ones are already deleted); a pointer naming no
    /// stored file is an error.
    async fn set_current(tx: &mut Tx<Self>, gun: &str, current: &[CurrentEntry]) -> Result<(), StoreError>;
}

/// What [`Dialect::prepare_update`] read.
pub(crate) struct UpdateReads {
    /// The version of the repository's current timestamp, if it has one.
    pub(crate) timestamp: Option<i64>,
    /// The audit log's last entry (position and leaf hash as stored), read under the audit lock.
    pub(crate) last_entry: Option<(i64, String)>,
}

/// One row of a [`Dialect::prepare_update`] statement: what it is (see [`update_reads`]), a role,
/// a version or position, and a leaf hash.
pub(crate) type UpdateReadRow = (i64, Option<String>, Option<i64>, Option<String>);

/// [`UpdateReads`] from the rows of a [`Dialect::prepare_update`] statement: (0, role, newest
/// stored version) per file, (1, -, timestamp version) and (2, -, position, leaf hash) for the
/// log's last entry if it has one. Fails with [`StoreError::OldVersion`] for the first file whose
/// version is not above its role's newest.
pub(crate) fn update_reads(files: &[NewFile], rows: Vec<UpdateReadRow>) -> Result<UpdateReads, StoreError> {
    let mut reads = UpdateReads { timestamp: None, last_entry: None };
    let mut newest: Vec<(String, i64)> = Vec::new();
    for (what, role, version, leaf) in rows {
        match (what, role, version, leaf) {
            (0, Some(role), Some(version), _) => newest.push((role, version)),
            (0, _, None, _) => {}
            (1, _, version, _) => reads.timestamp = version,
            (2, _, Some(seq), Some(leaf)) => reads.last_entry = Some((seq, leaf)),
            (what, ..) => {
                return Err(StoreError::Internal(format!("the update's first read gave a row of kind {what}")));
            }
        }
    }
    for file in files {
        if newest.iter().any(|(role, version)| *role == file.role && *version >= file.version) {
            return Err(StoreError::OldVersion { role: file.role.clone() });
        }
    }
    Ok(reads)
}

/// A write transaction of dialect `D`.
pub(crate) type Tx<D> = Transaction<'static, <D as Dialect>::Db>;

/// The open connection pools, one variant per dialect.
pub(crate) enum Pools {
    /// A SQLite file (or in-memory database).
    Sqlite(SqlitePools),
    /// A PostgreSQL pool.
    Postgres(sqlx::PgPool),
}

/// Runs a body written once against whichever dialect `$pools` holds: `$p` is bound to that
/// dialect's pools and `$d` names its [`Dialect`] type.
macro_rules! per_dialect {
    ($pools:expr, |$p:ident, $d:ident| $body:expr) => {
        match $pools {
            Pools::Sqlite($p) => {
                type $d = Sqlite;
                $body
            }
            Pools::Postgres($p) => {
                type $d = Postgres;
                $body
            }
        }
    };
}

/// Appends one changefeed record in the transaction `$tx` of dialect `$d`, holding the
/// dialect's changefeed lock until the transaction ends.
macro_rules! append_change {
    ($d:ty, $tx:expr, $gun:expr, $version:expr, $sha256:expr, $category:expr, $at:expr) => {{
        <$d>::lock_changefeed($tx).await?;
        sqlx::query(
            "INSERT INTO changefeed (created_at, gun, version, sha256, category) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(<$d>::time($at))
        .bind($gun)
        .bind($version)
        .bind($sha256)
        .bind($category.as_str())
        .execute(&mut **$tx)
        .await
        .map_err(from_sqlx)?;
    }};
}

/// Columns of `tuf_files f` that make up a [`FileRow`].
macro_rules! file_columns {
    () => {
        "f.role, f.version, f.sha256, f.data, f.expires, f.created_at"
    };
}
pub(crate) use file_columns;

/// The current-file join: pointer row `c` to file row `f`.
macro_rules! current_join {
    () => {
        " FROM current_files c JOIN tuf_files f \
          ON f.gun = c.gun AND f.role = c.role AND f.version = c.version "
    };
}
pub(crate) use current_join;

/// Columns of `server_keys` that make up a [`KeyRow`].
macro_rules! key_columns {
    () => {
        "key_id, gun, role, algorithm, public, sealed_private, kek_id, created_at, last_used"
    };
}

/// Columns of `changefeed` that make up a [`ChangeRow`].
macro_rules! change_columns {
    () => {
        "SELECT id, created_at, gun, version, sha256, category FROM changefeed "
    };
}

/// Columns of `principals` that make up a [`PrincipalRow`].
macro_rules! principal_columns {
    () => {
        "name, kind, password_hash, created_at"
    };
}

/// Columns of `api_tokens` that make up an [`ApiTokenRow`].
macro_rules! api_token_columns {
    () => {
        "id, principal, secret_hash, created_at, expires_at, revoked_at"
    };
}

/// Columns of `role_bindings` that make up a [`BindingRow`].
macro_rules! binding_columns {
    () => {
        "principal, role, pattern, created_at"
    };
}

/// Columns of `tombstones` that make up a [`TombstoneRow`].
macro_rules! tombstone_columns {
    () => {
        "gun, root, deleted_at"
    };
}

/// Columns of `token_keys` that make up a [`TokenKeyRow`].
macro_rules! token_key_columns {
    () => {
        "id, kind, algorithm, certificate, sealed_private, kek_id, created_at, retired_at"
    };
}

/// A `tuf_files` row as the dialect stores it.
#[derive(sqlx::FromRow)]
pub(crate) struct FileRow<D: Dialect> {
    role: String,
    version: i64,
    sha256: String,
    data: Vec<u8>,
    expires: Option<D::Time>,
    created_at: D::Time,
}

impl<D: Dialect> FileRow<D> {
    fn into_file(self) -> Result<StoredFile, StoreError> {
        Ok(StoredFile {
            role: self.role,
            version: self.version,
            sha256: self.sha256,
            data: self.data,
            expires: self.expires.map(|value| D::read_time(value, "expires")).transpose()?,
            created_at: D::read_time(self.created_at, "created_at")?,
        })
    }
}

/// A `changefeed` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct ChangeRow<D: Dialect> {
    id: i64,
    created_at: D::Time,
    gun: String,
    version: i64,
    sha256: String,
    category: String,
}

impl<D: Dialect> ChangeRow<D> {
    fn into_change(self) -> Result<Change, StoreError> {
        Ok(Change {
            id: self.id,
            created_at: D::read_time(self.created_at, "created_at")?,
            gun: self.gun,
            version: self.version,
            sha256: self.sha256,
            category: ChangeCategory::parse(&self.category)?,
        })
    }
}

/// A `server_keys` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct KeyRow<D: Dialect> {
    key_id: String,
    gun: String,
    role: String,
    algorithm: String,
    public: Vec<u8>,
    sealed_private: Vec<u8>,
    kek_id: String,
    created_at: D::Time,
    last_used: Option<D::Time>,
}

impl<D: Dialect> KeyRow<D> {
    fn into_key(self) -> Result<StoredKey, StoreError> {
        Ok(StoredKey {
            key_id: self.key_id,
            gun: self.gun,
            role: self.role,
            algorithm: self.algorithm,
            public: self.public,
            sealed_private: self.sealed_private,
            kek_id: self.kek_id,
            created_at: D::read_time(self.created_at, "created_at")?,
            last_used: self.last_used.map(|value| D::read_time(value, "last_used")).transpose()?,
        })
    }
}

/// A `principals` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct PrincipalRow<D: Dialect> {
    name: String,
    kind: String,
    password_hash: Option<String>,
    created_at: D::Time,
}

impl<D: Dialect> PrincipalRow<D> {
    fn into_principal(self) -> Result<Principal, StoreError> {
        let kind = PrincipalKind::parse(&self.kind).ok_or_else(|| {
            StoreError::Internal(format!(
                "principal {:?} has an unknown kind {:?} in the database",
                self.name, self.kind
            ))
        })?;
        Ok(Principal {
            name: self.name,
            kind,
            password_hash: self.password_hash,
            created_at: D::read_time(self.created_at, "created_at")?,
        })
    }
}

/// An `api_tokens` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct ApiTokenRow<D: Dialect> {
    id: String,
    principal: String,
    secret_hash: String,
    created_at: D::Time,
    expires_at: Option<D::Time>,
    revoked_at: Option<D::Time>,
}

impl<D: Dialect> ApiTokenRow<D> {
    fn into_token(self) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            id: self.id,
            principal: self.principal,
            secret_hash: self.secret_hash,
            created_at: D::read_time(self.created_at, "created_at")?,
            expires_at: self.expires_at.map(|value| D::read_time(value, "expires_at")).transpose()?,
            revoked_at: self.revoked_at.map(|value| D::read_time(value, "revoked_at")).transpose()?,
        })
    }
}

/// One GUN of an expiring page: the GUN and its earliest expiring timestamp or snapshot.
#[derive(sqlx::FromRow)]
struct ExpiringRow<D: Dialect> {
    gun: String,
    expires: D::Time,
}

/// A `key_owners` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct KeyOwnerRow<D: Dialect> {
    key_id: String,
    gun: String,
    role: String,
    requester: Option<String>,
    created_at: D::Time,
}

impl<D: Dialect> KeyOwnerRow<D> {
    fn into_owner(self) -> Result<KeyOwner, StoreError> {
        Ok(KeyOwner {
            key_id: self.key_id,
            gun: self.gun,
            role: self.role,
            requester: self.requester,
            created_at: D::read_time(self.created_at, "created_at")?,
        })
    }
}

/// The columns of a `key_owners` row, in [`KeyOwnerRow`] order.
macro_rules! key_owner_columns {
    () => {
        "key_id, gun, role, requester, created_at"
    };
}

/// A `role_bindings` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct BindingRow<D: Dialect> {
    principal: String,
    role: String,
    pattern: String,
    created_at: D::Time,
}

impl<D: Dialect> BindingRow<D> {
    fn into_binding(self) -> Result<RoleBinding, StoreError> {
        Ok(RoleBinding {
            principal: self.principal,
            role: self.role,
            pattern: self.pattern,
            created_at: D::read_time(self.created_at, "created_at")?,
        })
    }
}

/// A `tombstones` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct TombstoneRow<D: Dialect> {
    gun: String,
    root: Vec<u8>,
    deleted_at: D::Time,
}

impl<D: Dialect> TombstoneRow<D> {
    fn into_tombstone(self) -> Result<Tombstone, StoreError> {
        Ok(Tombstone { gun: self.gun, root: self.root, deleted_at: D::read_time(self.deleted_at, "deleted_at")? })
    }
}

/// A `token_keys` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct TokenKeyRow<D: Dialect> {
    id: String,
    kind: String,
    algorithm: String,
    certificate: Vec<u8>,
    sealed_private: Vec<u8>,
    kek_id: String,
    created_at: D::Time,
    retired_at: Option<D::Time>,
}

impl<D: Dialect> TokenKeyRow<D> {
    fn into_key(self) -> Result<TokenKey, StoreError> {
        let kind = TokenKeyKind::parse(&self.kind).ok_or_else(|| {
            StoreError::Internal(format!("token key {:?} has an unknown kind {:?} in the database", self.id, self.kind))
        })?;
        Ok(TokenKey {
            id: self.id,
            kind,
            algorithm: self.algorithm,
            certificate: self.certificate,
            sealed_private: self.sealed_private,
            kek_id: self.kek_id,
            created_at: D::read_time(self.created_at, "created_at")?,
            retired_at: self.retired_at.map(|value| D::read_time(value, "retired_at")).transpose()?,
        })
    }
}

/// Inserts `key` into `token_keys` in the transaction `$tx` of dialect `$d`. A key id that
/// exists already is [`StoreError::Conflict`].
macro_rules! insert_token_key {
    ($d:ty, $tx:expr, $key:expr) => {{
        let key: &TokenKey = $key;
        let inserted = sqlx::query(concat!(
            "INSERT INTO token_keys (",
            token_key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&key.id)
        .bind(key.kind.as_str())
        .bind(&key.algorithm)
        .bind(&key.certificate)
        .bind(&key.sealed_private)
        .bind(&key.kek_id)
        .bind(<$d>::time(key.created_at))
        .bind(key.retired_at.map(<$d>::time))
        .execute(&mut **$tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!("token key {:?} already exists", key.id)));
            }
            Err(error) => return Err(from_sqlx(error)),
        }
    }};
}

/// Converts the rows of a query into domain values.
fn convert<R, T>(rows: Vec<R>, into: fn(R) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(into).collect()
}

/// Columns of `audit_log` that make up an [`EntryRow`].
macro_rules! entry_columns {
    () => {
        "SELECT seq, created_at, kind, gun, principal, address, request_id, details, prev_hash, leaf_hash FROM audit_log "
    };
}

/// An `audit_log` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct EntryRow<D: Dialect> {
    seq: i64,
    created_at: D::Time,
    kind: String,
    gun: Option<String>,
    principal: Option<String>,
    address: Option<String>,
    request_id: Option<String>,
    details: String,
    prev_hash: Option<String>,
    leaf_hash: String,
}

impl<D: Dialect> EntryRow<D> {
    fn into_entry(self) -> Result<StoredEntry, StoreError> {
        let seq = u64::try_from(self.seq)
            .map_err(|_| StoreError::Internal(format!("audit_log.seq holds a negative position {}", self.seq)))?;
        // A link that is not a hash cannot be the previous entry's: keep an all-zero link, which
        // fails the chain check, so verification reports the row instead of stopping.
        let prev = self.prev_hash.map(|text| parse_hash_hex(&text).unwrap_or(Hash([0; 32])));
        Ok(StoredEntry {
            entry: Entry {
                seq,
                time: D::read_time(self.created_at, "created_at")?,
                kind: self.kind,
                gun: self.gun,
                principal: self.principal,
                address: self.address,
                request_id: self.request_id,
                details: self.details,
                prev,
            },
            leaf_hash: parse_hash_hex(&self.leaf_hash),
        })
    }
}

/// An `audit_checkpoints` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct CheckpointRow<D: Dialect> {
    id: i64,
    size: i64,
    root: String,
    note: String,
    created_at: D::Time,
}

impl<D: Dialect> CheckpointRow<D> {
    fn into_checkpoint(self) -> Result<Checkpoint, StoreError> {
        Ok(Checkpoint {
            id: self.id,
            size: u64::try_from(self.size)
                .map_err(|_| StoreError::Internal(format!("audit_checkpoints.size is negative: {}", self.size)))?,
            root: self.root,
            note: self.note,
            created_at: D::read_time(self.created_at, "created_at")?,
        })
    }
}

/// An `audit_signing_keys` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct AuditKeyRow<D: Dialect> {
    key_id: String,
    name: String,
    keytype: String,
    public: Vec<u8>,
    created_at: D::Time,
}

/// A `grants` row as the dialect stores it (its keys are read separately).
#[derive(sqlx::FromRow)]
struct GrantRow<D: Dialect> {
    id: i64,
    gun: String,
    delegating_role: String,
    delegated_role: String,
    version: i64,
    threshold: i64,
    paths: Option<String>,
    principal: Option<String>,
    audit_seq: Option<i64>,
    created_at: D::Time,
    superseded_at: Option<D::Time>,
    superseded_seq: Option<i64>,
}

impl<D: Dialect> GrantRow<D> {
    fn into_grant(self) -> Result<Grant, StoreError> {
        let paths = self.paths;
        Ok(Grant {
            id: self.id,
            gun: self.gun,
            grant: NewGrant {
                delegating_role: self.delegating_role,
                delegated_role: self.delegated_role,
                version: self.version,
                threshold: self.threshold,
                paths,
                keys: Vec::new(),
            },
            principal: self.principal,
            audit_seq: self.audit_seq,
            created_at: D::read_time(self.created_at, "created_at")?,
            superseded_at: self.superseded_at.map(|value| D::read_time(value, "superseded_at")).transpose()?,
            superseded_seq: self.superseded_seq,
        })
    }
}

/// Columns of `grants` that make up a [`GrantRow`].
macro_rules! grant_columns {
    () => {
        "g.id, g.gun, g.delegating_role, g.delegated_role, g.version, g.threshold, g.paths, g.principal, \
         g.audit_seq, g.created_at, g.superseded_at, g.superseded_seq"
    };
}

/// The `SELECT` of every `target_history` column that makes up a [`TargetEventRow`].
macro_rules! event_columns {
    () => {
        "SELECT id, gun, name, role, version, change, sha256, length, signer_keys, signer_canonical_ids, principal, \
         audit_seq, created_at FROM target_history "
    };
}

/// A `target_history` row as the dialect stores it.
#[derive(sqlx::FromRow)]
struct TargetEventRow<D: Dialect> {
    id: i64,
    gun: String,
    name: String,
    role: String,
    version: i64,
    change: String,
    sha256: Option<String>,
    length: Option<i64>,
    signer_keys: String,
    signer_canonical_ids: Option<String>,
    principal: Option<String>,
    audit_seq: Option<i64>,
    created_at: D::Time,
}

impl<D: Dialect> TargetEventRow<D> {
    fn into_event(self) -> Result<TargetEvent, StoreError> {
        let list = |text: &str, column: &str| {
            serde_json::from_str::<Vec<String>>(text).map_err(|error| {
                StoreError::Internal(format!("target_history.{column} of row {} is not a list: {error}", self.id))
            })
        };
        let signer_keys = list(&self.signer_keys, "signer_keys")?;
        // Left out when the same as the key IDs (see `canonical_ids_column`).
        let signer_canonical_ids = match &self.signer_canonical_ids {
            Some(text) => list(text, "signer_canonical_ids")?,
            None => signer_keys.clone(),
        };
        Ok(TargetEvent {
            id: self.id,
            gun: self.gun,
            event: NewTargetEvent {
                name: self.name,
                role: self.role,
                version: self.version,
                change: self.change,
                sha256: self.sha256,
                length: self.length,
                signer_keys: signer_keys.into(),
                signer_canonical_ids: signer_canonical_ids.into(),
            },
            principal: self.principal,
            audit_seq: self.audit_seq,
            created_at: D::read_time(self.created_at, "created_at")?,
        })
    }
}

/// Most rows one multi-row INSERT carries (each row binds at most 12 values; SQLite allows
/// 32,766 and PostgreSQL 65,535 parameters per statement).
const INSERT_CHUNK: usize = 500;

/// Most target-history rows one INSERT carries: a row binds 4 values when the rows are one file's
/// (see [`push_history_rows`]) and 12 otherwise. Larger chunks save little CPU (the statement of
/// a full chunk is prepared once per connection) and cost memory while a chunk is written.
const HISTORY_CHUNK: usize = INSERT_CHUNK;

/// The audit position after the log's last entry at `last` (0 for an empty log).
fn position_after(last: Option<i64>) -> Result<u64, StoreError> {
    match last {
        None => Ok(0),
        Some(last) => u64::try_from(last)
            .ok()
            .and_then(|last| last.checked_add(1))
            .ok_or_else(|| StoreError::Internal(format!("audit entry position {last} is out of range"))),
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Internal(format!("{what} {value} is beyond the database's range")))
}

/// What this process last appended to the audit log: the entry's position and leaf hash, and
/// the stored hashes the next append reads. An append uses them only while that entry is still
/// the log's last (checked under the audit lock, so another process's append or a rolled-back
/// transaction is noticed), and reads the hashes from the database otherwise.
#[derive(Default)]
pub(crate) struct AuditTip(std::sync::Mutex<Option<(u64, Hash, tufa_audit::tree::Hashes)>>);

impl AuditTip {
    /// The stored hashes `reads`, if the log's last entry is the one at `seq` with hash `leaf`
    /// that this process appended and all of them are known.
    fn hashes(&self, seq: u64, leaf: &Hash, reads: &[u64]) -> Option<tufa_audit::tree::Hashes> {
        let guard = self.0.lock().ok()?;
        let (known_seq, known_leaf, hashes) = guard.as_ref()?;
        if *known_seq != seq || known_leaf != leaf {
            return None;
        }
        reads.iter().map(|index| hashes.get(index).map(|hash| (*index, *hash))).collect()
    }

    /// Remembers the entry at `seq` with hash `leaf`, appended with the stored hashes `fetched`
    /// read and `new` written after the entry with hash `prev`, keeping the hashes of the tree's
    /// right edge (every stored hash later appends read): from these, or from what it knew of
    /// the entry before if that was `prev` (each leaf hash covers the one before it, so the same
    /// leaf means the same log up to it, whichever process wrote it), or none.
    fn appended(
        &self,
        seq: u64,
        leaf: Hash,
        prev: Option<&Hash>,
        fetched: &tufa_audit::tree::Hashes,
        new: &[(u64, Hash)],
    ) {
        let Some(size) = seq.checked_add(1) else { return };
        let Ok(mut tip) = self.0.lock() else { return };
        let before = match (tip.take(), prev, seq.checked_sub(1)) {
            (Some((known_seq, known_leaf, known)), Some(prev), Some(last))
                if known_seq == last && known_leaf == *prev =>
            {
                known
            }
            _ => tufa_audit::tree::Hashes::new(),
        };
        let known: Option<tufa_audit::tree::Hashes> = tufa_audit::tree::frontier(size)
            .into_iter()
            .map(|index| {
                let hash = new
                    .iter()
                    .find(|(written, _)| *written == index)
                    .map(|(_, hash)| *hash)
                    .or_else(|| fetched.get(&index).copied())
                    .or_else(|| before.get(&index).copied())?;
                Some((index, hash))
            })
            .collect();
        *tip = known.map(|known| (seq, leaf, known));
    }
}

/// The statements of one change's record, sent to the database as one: SQLite runs a text of
/// several statements in one call; PostgreSQL runs one statement whose parts are data-modifying
/// `WITH` queries (each named, so a later part can read an earlier part's `RETURNING` rows).
/// One call instead of one per table is most of what the record costs a publish.
struct Batch<DB: sqlx::Database> {
    query: QueryBuilder<DB>,
    as_ctes: bool,
    parts: usize,
}

impl<DB: sqlx::Database> Batch<DB> {
    fn new(as_ctes: bool) -> Self {
        Batch { query: QueryBuilder::new(""), as_ctes, parts: 0 }
    }

    /// Starts the part named `name` (the name matters with `WITH` parts only); the caller writes
    /// one statement into the returned builder, then calls [`Batch::end`].
    fn part(&mut self, name: &str) -> &mut QueryBuilder<DB> {
        match (self.as_ctes, self.parts) {
            (true, 0) => self.query.push(format_args!("WITH {name} AS (")),
            (true, _) => self.query.push(format_args!(", {name} AS (")),
            (false, 0) => &mut self.query,
            (false, _) => self.query.push("; "),
        };
        self.parts = self.parts.saturating_add(1);
        &mut self.query
    }

    /// Ends the current part.
    fn end(&mut self) {
        if self.as_ctes {
            self.query.push(")");
        }
    }

    /// The one statement (or text of statements) to run.
    fn finish(mut self) -> QueryBuilder<DB> {
        if self.as_ctes {
            self.query.push(" SELECT 1");
        }
        self.query
    }
}

/// An update with at most this many files has them inserted in its record's batch.
const BATCHED_FILES: usize = 16;

/// Grants with at most this many rows and keys are written in the record's one batch; more in
/// statements of their own.
const BATCHED_GRANTS: usize = 64;
/// See [`BATCHED_GRANTS`].
const BATCHED_GRANT_KEYS: usize = 256;

/// The `audit_pending` row of a small record: the entry's key-index rows and (for a change of a
/// repository) its target-history rows, as one JSON object.
fn pending_rows_json(
    gun: Option<&str>,
    principal: Option<&str>,
    at: DateTime<Utc>,
    keys: &std::collections::BTreeSet<&String>,
    history: &[NewTargetEvent],
) -> String {
    let history: Vec<serde_json::Value> = history
        .iter()
        .map(|event| {
            serde_json::json!([
                event.name,
                event.role,
                event.version,
                event.change,
                event.sha256,
                event.length,
                &event.signer_keys[..],
                &event.signer_canonical_ids[..],
            ])
        })
        .collect();
    serde_json::json!({
        "gun": gun,
        "principal": principal,
        "at": at.timestamp_micros(),
        "keys": keys,
        "history": history,
    })
    .to_string()
}

/// The rows an `audit_pending` row holds.
#[derive(Debug)]
struct PendingRows {
    gun: Option<String>,
    principal: Option<String>,
    at: DateTime<Utc>,
    keys: Vec<String>,
    history: Vec<NewTargetEvent>,
}

/// Reads the `audit_pending` row of entry `seq`; an unreadable one is an error that names it
/// (nothing is moved, so `audit verify` still sees the entry's rows missing).
fn parse_pending_rows(seq: i64, text: &str) -> Result<PendingRows, StoreError> {
    type HistoryRow = (String, String, i64, String, Option<String>, Option<i64>, Vec<String>, Vec<String>);
    #[derive(serde::Deserialize)]
    struct Stored {
        gun: Option<String>,
        principal: Option<String>,
        at: i64,
        keys: Vec<String>,
        history: Vec<HistoryRow>,
    }
    let unreadable =
        |why: String| StoreError::Internal(format!("audit_pending row of entry {seq} is unreadable: {why}"));
    let stored: Stored = serde_json::from_str(text).map_err(|error| unreadable(error.to_string()))?;
    let at = DateTime::from_timestamp_micros(stored.at).ok_or_else(|| unreadable(format!("time {}", stored.at)))?;
    let history = stored
        .history
        .into_iter()
        .map(|(name, role, version, change, sha256, length, keys, canonical)| NewTargetEvent {
            name,
            role,
            version,
            change,
            sha256,
            length,
            signer_keys: keys.into(),
            signer_canonical_ids: canonical.into(),
        })
        .collect();
    Ok(PendingRows { gun: stored.gun, principal: stored.principal, at, keys: stored.keys, history })
}

/// Moves up to `$limit` pending rows (oldest entries first) into `audit_keys_used` and
/// `target_history`, in transaction `$tx` of dialect `$d`, which holds the audit lock. Evaluates
/// to the number of entries whose rows moved.
macro_rules! flush_pending {
    ($d:ty, $tx:expr, $limit:expr) => {{
        let limit: i64 = $limit;
        let pending: Vec<(i64, String)> = sqlx::query_as("SELECT seq, rows FROM audit_pending ORDER BY seq LIMIT $1")
            .bind(limit)
            .fetch_all(&mut **$tx)
            .await
            .map_err(from_sqlx)?;
        let moved = pending.len();
        if let Some(&(last, _)) = pending.last() {
            let mut entries = Vec::with_capacity(pending.len());
            for (seq, text) in &pending {
                entries.push((*seq, parse_pending_rows(*seq, text)?));
            }
            drop(pending);
            let keys: Vec<(&String, i64)> =
                entries.iter().flat_map(|(seq, rows)| rows.keys.iter().map(move |key| (key, *seq))).collect();
            for chunk in keys.chunks(INSERT_CHUNK) {
                let mut query = QueryBuilder::<<$d as Dialect>::Db>::new("INSERT INTO audit_keys_used (key_id, seq) ");
                query.push_values(chunk, |mut row, (key, seq)| {
                    row.push_bind((*key).clone()).push_bind(*seq);
                });
                query.build().execute(&mut **$tx).await.map_err(from_sqlx)?;
            }
            // Consecutive entries of one repository share a statement, up to a chunk of rows.
            let mut run: Vec<EventInsert<'_>> = Vec::new();
            let mut run_gun: Option<&str> = None;
            for (seq, rows) in &entries {
                let Some(gun) = rows.gun.as_deref() else { continue };
                for event in &rows.history {
                    if run_gun != Some(gun) || run.len() >= HISTORY_CHUNK {
                        if let Some(previous) = run_gun.filter(|_| !run.is_empty()) {
                            insert_history_chunk!($d, $tx, previous, std::mem::take(&mut run));
                        }
                        run_gun = Some(gun);
                    }
                    run.push((event, rows.principal.as_deref(), Some(*seq), rows.at));
                }
            }
            if let Some(gun) = run_gun.filter(|_| !run.is_empty()) {
                insert_history_chunk!($d, $tx, gun, run);
            }
            sqlx::query("DELETE FROM audit_pending WHERE seq <= $1")
                .bind(last)
                .execute(&mut **$tx)
                .await
                .map_err(from_sqlx)?;
        }
        moved
    }};
}

/// Most entries one transaction of [`Store::flush_audit_index`] moves the pending rows of: a move
/// holds the write lock (SQLite) or the audit lock (PostgreSQL) for about 0.2 ms per entry here, and
/// publishes waiting for it go in between two transactions.
const FLUSH_ENTRIES: i64 = 32;

/// Appends `$record`'s audit entry in transaction `$tx` of dialect `$d` at `$at`, with its
/// stored Merkle hashes and key index, holding the dialect's audit lock until the transaction
/// ends; for a change of repository `$gun` (`Some`), also supersedes the grants of the roles it
/// replaces and writes its grants and target history (the streamed part of the history is the
/// caller's). `$tip` is the store's [`AuditTip`]. Evaluates to the entry's position.
macro_rules! append_entry {
    ($d:ty, $tx:expr, $record:expr, $at:expr, $tip:expr) => {
        append_entry!($d, $tx, None::<&str>, $record, $at, $tip, None, None).0
    };
    ($d:ty, $tx:expr, $gun:expr, $record:expr, $at:expr, $tip:expr, $last:expr, $files:expr) => {{
        let record: &Record = $record;
        let at: DateTime<Utc> = $at;
        let tip: &AuditTip = $tip;
        let read: Option<Option<(i64, String)>> = $last;
        let files: Option<&mut Vec<NewFile>> = $files;
        let last: Option<(i64, String)> = match read {
            Some(last) => last,
            None => {
                <$d>::lock_audit($tx).await?;
                sqlx::query_as("SELECT seq, leaf_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut **$tx)
                    .await
                    .map_err(from_sqlx)?
            }
        };
        let (seq, prev) = match last {
            None => (0_u64, None),
            Some((seq, hash)) => {
                let prev = parse_hash_hex(&hash).ok_or_else(|| {
                    StoreError::Internal(format!("audit entry {seq} has an unreadable leaf hash; run `audit verify`"))
                })?;
                (position_after(Some(seq))?, Some(prev))
            }
        };
        let entry = record.entry.at(seq, at, prev);
        let leaf = entry.leaf_hash();
        let reads = tufa_audit::tree::append_reads(seq);
        let known = match (&prev, seq.checked_sub(1)) {
            (Some(prev), Some(last)) => tip.hashes(last, prev, &reads),
            _ => None,
        };
        let fetched = match known {
            Some(hashes) => hashes,
            None if reads.is_empty() => tufa_audit::tree::Hashes::new(),
            None => {
                let mut fetched = tufa_audit::tree::Hashes::new();
                let mut query =
                    QueryBuilder::<<$d as Dialect>::Db>::new("SELECT idx, hash FROM audit_hashes WHERE idx IN (");
                let mut list = query.separated(", ");
                for index in &reads {
                    list.push_bind(to_i64(*index, "stored hash index")?);
                }
                query.push(")");
                let rows: Vec<(i64, Vec<u8>)> =
                    query.build_query_as().fetch_all(&mut **$tx).await.map_err(from_sqlx)?;
                for (index, hash) in rows {
                    let hash: [u8; 32] = hash
                        .try_into()
                        .map_err(|_| StoreError::Internal(format!("stored audit hash {index} is not 32 bytes")))?;
                    fetched.insert(u64::try_from(index).unwrap_or_default(), Hash(hash));
                }
                fetched
            }
        };
        let new_hashes = tufa_audit::tree::append(seq, leaf, &fetched)
            .map_err(|error| StoreError::Internal(format!("audit tree: {error}")))?;
        let seq_i64 = to_i64(seq, "audit entry position")?;
        let mut batch = Batch::<<$d as Dialect>::Db>::new(<$d>::BATCH_AS_CTES);
        let query = batch.part("hashes");
        query.push("INSERT INTO audit_hashes (idx, hash) ");
        let mut values = Vec::with_capacity(new_hashes.len());
        for (index, hash) in &new_hashes {
            values.push((to_i64(*index, "stored hash index")?, hash.0.to_vec()));
        }
        query.push_values(values, |mut row, (index, hash)| {
            row.push_bind(index).push_bind(hash);
        });
        batch.end();
        let query = batch.part("entry");
        query.push(
            "INSERT INTO audit_log (seq, created_at, kind, gun, principal, address, request_id, details, prev_hash, \
             leaf_hash) ",
        );
        query.push_values([&entry], |mut row, entry| {
            row.push_bind(seq_i64)
                .push_bind(<$d>::time(entry.time))
                .push_bind(entry.kind.clone())
                .push_bind(entry.gun.clone())
                .push_bind(entry.principal.clone())
                .push_bind(entry.address.clone())
                .push_bind(entry.request_id.clone())
                .push_bind(entry.details.clone())
                .push_bind(entry.prev.as_ref().map(hash_hex))
                .push_bind(hash_hex(&leaf));
        });
        batch.end();
        let keys: std::collections::BTreeSet<&String> = record.keys.iter().collect();
        let gun: Option<&str> = $gun;
        let principal = record.entry.principal.as_deref();
        let grant_keys = record.grants.iter().map(|grant| grant.keys.len()).sum::<usize>();
        let grants_batched = record.grants.len() <= BATCHED_GRANTS && grant_keys <= BATCHED_GRANT_KEYS;
        let history_batched = record.history.len() <= INSERT_CHUNK;
        let superseded_batched = record.superseded.len() <= BATCHED_GRANTS;
        // A small record's key-index and history rows go into `audit_pending` as one row, moved
        // into their tables later in batches (see `flush_pending`); a large record writes its rows
        // now, after the pending ones, so rows stay in the order of their entries.
        let deferred = grants_batched && history_batched && record.streamed.is_none();
        let history: &[NewTargetEvent] = if gun.is_some() { &record.history } else { &[] };
        if deferred {
            if !keys.is_empty() || !history.is_empty() {
                let rows = pending_rows_json(gun, principal, at, &keys, history);
                let query = batch.part("pending");
                query.push("INSERT INTO audit_pending (seq, rows) ");
                query.push_values([rows], |mut row, rows| {
                    row.push_bind(seq_i64).push_bind(rows);
                });
                batch.end();
            }
        } else {
            flush_pending!($d, $tx, i64::MAX);
            if !keys.is_empty() {
                let query = batch.part("keys");
                query.push("INSERT INTO audit_keys_used (key_id, seq) ");
                query.push_values(keys, |mut row, key| {
                    row.push_bind(key.clone()).push_bind(seq_i64);
                });
                batch.end();
            }
        }
        if let Some(gun) = gun {
            if !record.superseded.is_empty() && superseded_batched {
                let query = batch.part("superseded");
                push_superseded!($d, query, gun, at, seq_i64, &record.superseded);
                batch.end();
            }
            if grants_batched && !record.grants.is_empty() {
                let query = batch.part("granted");
                query.push(
                    "INSERT INTO grants (gun, delegating_role, delegated_role, version, threshold, paths, principal, \
                     audit_seq, created_at, superseded_at) ",
                );
                query.push_values(&record.grants, |mut row, grant| {
                    row.push_bind(gun.to_owned())
                        .push_bind(grant.delegating_role.clone())
                        .push_bind(grant.delegated_role.clone())
                        .push_bind(grant.version)
                        .push_bind(grant.threshold)
                        .push_bind(grant.paths.clone())
                        .push_bind(principal.map(str::to_owned))
                        .push_bind(Some(seq_i64))
                        .push_bind(<$d>::time(at))
                        .push_bind(None::<<$d as Dialect>::Time>);
                });
                if <$d>::BATCH_AS_CTES {
                    query.push(" RETURNING id, delegating_role, delegated_role");
                }
                batch.end();
                let mut keys: Vec<(&NewGrant, &GrantKey)> = Vec::with_capacity(grant_keys);
                for grant in &record.grants {
                    let mut sorted: Vec<&GrantKey> = grant.keys.iter().collect();
                    sorted.sort_by(|a, b| a.key_id.cmp(&b.key_id));
                    sorted.dedup_by(|a, b| a.key_id == b.key_id);
                    keys.extend(sorted.into_iter().map(|key| (grant, key)));
                }
                if !keys.is_empty() {
                    let query = batch.part("granted_keys");
                    query.push(
                        "INSERT INTO grant_keys (grant_id, key_id, canonical_id, subject) \
                         SELECT g.id, v.column3, v.column4, v.column5 FROM (",
                    );
                    query.push_values(keys, |mut row, (grant, key)| {
                        row.push_bind(grant.delegating_role.clone())
                            .push_bind(grant.delegated_role.clone())
                            .push_bind(key.key_id.clone())
                            .push_bind(key.canonical_id.clone())
                            .push_bind(key.subject.clone());
                    });
                    if <$d>::BATCH_AS_CTES {
                        // The grants of this statement are only visible as its `granted` part.
                        query.push(
                            ") AS v JOIN granted AS g ON g.delegating_role = v.column1 \
                             AND g.delegated_role = v.column2",
                        );
                    } else {
                        // Through `grants_entry_idx` (this entry's grants), not every grant
                        // of the repository's role.
                        query.push(format_args!(
                            ") AS v JOIN grants AS g ON g.delegating_role = v.column1 \
                             AND g.delegated_role = v.column2 WHERE {}g.gun = ",
                            <$d>::UNINDEXED
                        ));
                        query.push_bind(gun.to_owned()).push(" AND g.audit_seq = ").push_bind(seq_i64);
                    }
                    batch.end();
                }
            }
            if !deferred && history_batched && !record.history.is_empty() {
                let rows: Vec<EventInsert<'_>> =
                    record.history.iter().map(|event| (event, principal, Some(seq_i64), at)).collect();
                let query = batch.part("history");
                push_history_rows!($d, query, gun, &rows);
                batch.end();
            }
        }
        // An update whose record is all in the batch has its files inserted by the batch too: one
        // round trip for both. A record written in parts goes first, and its rows are dropped
        // before the files are inserted (see `update`).
        // `Some(first file's role, if any)` when the files are in the batch.
        let files_batched: Option<Option<String>> = match (files, gun) {
            (Some(files), Some(gun))
                if grants_batched && history_batched && record.streamed.is_none() && files.len() <= BATCHED_FILES =>
            {
                if !files.is_empty() {
                    let query = batch.part("files");
                    query.push("INSERT INTO tuf_files (gun, role, version, sha256, data, expires, created_at) ");
                    query.push_values(files.iter_mut(), |mut row, file| {
                        // The bytes are moved into the statement: binding a reference would copy them.
                        row.push_bind(gun.to_owned())
                            .push_bind(file.role.clone())
                            .push_bind(file.version)
                            .push_bind(file.sha256.clone())
                            .push_bind(std::mem::take(&mut file.data))
                            .push_bind(file.expires.map(<$d>::time))
                            .push_bind(<$d>::time(at));
                    });
                    batch.end();
                }
                Some(files.first().map(|file| file.role.clone()))
            }
            _ => None,
        };
        // Many grants ended: in statements of their own, before the batch makes new ones.
        if let Some(gun) = gun
            && !superseded_batched
        {
            for chunk in record.superseded.chunks(INSERT_CHUNK) {
                let mut query = QueryBuilder::<<$d as Dialect>::Db>::new("");
                push_superseded!($d, query, gun, at, seq_i64, chunk);
                query.build().execute(&mut **$tx).await.map_err(from_sqlx)?;
            }
        }
        match batch.finish().build().execute(&mut **$tx).await {
            Ok(_) => {}
            // The versions were checked under the lock that serialises this repository's updates; a
            // duplicate version can only come from a writer that does not take it.
            Err(error) if is_unique_violation(&error) && files_batched.is_some() => {
                return Err(StoreError::OldVersion { role: files_batched.flatten().unwrap_or_default() });
            }
            Err(error) => return Err(from_sqlx(error)),
        }
        if let Some(gun) = gun {
            if !grants_batched {
                insert_grants!(
                    $d,
                    $tx,
                    gun,
                    record.grants.iter().map(|grant| (grant, principal, Some(seq_i64), at, None)).collect()
                );
            }
            if !history_batched {
                for chunk in record.history.chunks(HISTORY_CHUNK) {
                    insert_history_chunk!(
                        $d,
                        $tx,
                        gun,
                        chunk.iter().map(|event| (event, principal, Some(seq_i64), at)).collect()
                    );
                }
            }
        }
        tip.appended(seq, leaf, prev.as_ref(), &fetched, &new_hashes);
        (seq_i64, files_batched.is_some())
    }};
}

/// Writes into `$query` (a builder of dialect `$d`) the UPDATE that ends, at `$at` by entry
/// `$seq`, `$gun`'s grants in force for the (delegating role, delegated role) pairs `$pairs`.
macro_rules! push_superseded {
    ($d:ty, $query:expr, $gun:expr, $at:expr, $seq:expr, $pairs:expr) => {{
        let pairs: &[(String, String)] = $pairs;
        $query.push("UPDATE grants SET superseded_at = ");
        $query.push_bind(<$d>::time($at)).push(", superseded_seq = ").push_bind($seq);
        // Through `grants_active_idx` (the repository's grants in force), not every grant its
        // roles ever had.
        $query.push(" WHERE gun = ").push_bind($gun.to_owned()).push(format_args!(
            " AND superseded_at IS NULL AND ({}delegating_role, {}delegated_role) IN (VALUES ",
            <$d>::UNINDEXED,
            <$d>::UNINDEXED
        ));
        let mut list = $query.separated(", ");
        for (delegating, delegated) in pairs {
            list.push("(");
            list.push_bind_unseparated(delegating.clone());
            list.push_unseparated(", ");
            list.push_bind_unseparated(delegated.clone());
            list.push_unseparated(")");
        }
        $query.push(")");
    }};
}

/// One grant row to insert: the grant, who published it, the entry that recorded it, since when
/// and until when (a backfilled grant may have ended already).
type GrantInsert<'a> = (&'a NewGrant, Option<&'a str>, Option<i64>, DateTime<Utc>, Option<DateTime<Utc>>);

/// One target-history row to insert: the event, who published it, its entry, and when.
type EventInsert<'a> = (&'a NewTargetEvent, Option<&'a str>, Option<i64>, DateTime<Utc>);

/// Inserts the grant rows `$rows` (a `Vec<GrantInsert>`) of `$gun` and then all their keys, in
/// transaction `$tx` of dialect `$d`.
macro_rules! insert_grants {
    ($d:ty, $tx:expr, $gun:expr, $rows:expr) => {{
        let rows: Vec<GrantInsert<'_>> = $rows;
        let mut grant_keys: Vec<(i64, &GrantKey)> = Vec::new();
        for (grant, principal, audit_seq, since, until) in rows {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO grants (gun, delegating_role, delegated_role, version, threshold, paths, principal, \
                 audit_seq, created_at, superseded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind($gun)
            .bind(&grant.delegating_role)
            .bind(&grant.delegated_role)
            .bind(grant.version)
            .bind(grant.threshold)
            .bind(grant.paths.as_deref())
            .bind(principal)
            .bind(audit_seq)
            .bind(<$d>::time(since))
            .bind(until.map(<$d>::time))
            .fetch_one(&mut **$tx)
            .await
            .map_err(from_sqlx)?;
            let mut keys: Vec<&GrantKey> = grant.keys.iter().collect();
            keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            keys.dedup_by(|a, b| a.key_id == b.key_id);
            grant_keys.extend(keys.into_iter().map(|key| (id, key)));
        }
        // Every grant's keys in as few statements as the chunk size allows.
        for chunk in grant_keys.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::<<$d as Dialect>::Db>::new(
                "INSERT INTO grant_keys (grant_id, key_id, canonical_id, subject) ",
            );
            query.push_values(chunk, |mut row, (id, key)| {
                row.push_bind(*id)
                    .push_bind(key.key_id.clone())
                    .push_bind(key.canonical_id.clone())
                    .push_bind(key.subject.clone());
            });
            query.build().execute(&mut **$tx).await.map_err(from_sqlx)?;
        }
    }};
}

/// The stored `signer_canonical_ids` of a history row: `NULL` when the canonical IDs are the key IDs
/// themselves (a key that is not a certificate is its own canonical ID), which is most rows; a
/// large publish's rows would otherwise repeat a second list of 64-character IDs each.
fn canonical_ids_column(keys: &[String], canonical: &[String]) -> Option<String> {
    (keys != canonical).then(|| serde_json::to_string(canonical).unwrap_or_default())
}

/// Whether two target-history rows share everything but the target itself: the file (role,
/// version, signer lists), who published it, its entry and when.
fn same_run(a: &EventInsert<'_>, b: &EventInsert<'_>) -> bool {
    let (event, principal, audit_seq, at) = a;
    let (other, other_principal, other_seq, other_at) = b;
    event.role == other.role
        && event.version == other.version
        && event.signer_keys[..] == other.signer_keys[..]
        && event.signer_canonical_ids[..] == other.signer_canonical_ids[..]
        && principal == other_principal
        && audit_seq == other_seq
        && at == other_at
}

/// Whether all of `rows` are [`same_run`]: the changes of one targets file, as a large publish
/// writes them.
fn one_run(rows: &[EventInsert<'_>]) -> bool {
    rows.iter().zip(rows.iter().skip(1)).all(|(a, b)| same_run(a, b))
}

/// Writes into `$query` (a builder of dialect `$d`) the INSERT of `$gun`'s target history rows
/// `$rows` (a `&[EventInsert]`), in order. When the rows are [`one_run`] (one file's changes),
/// the values they share are bound once, and each row binds only its target's name, change,
/// digest and length (`INSERT ... SELECT` over a `VALUES` list, in SQLite and PostgreSQL);
/// otherwise each row binds all twelve values.
macro_rules! push_history_rows {
    ($d:ty, $query:expr, $gun:expr, $rows:expr) => {{
        let gun: &str = $gun;
        let rows: &[EventInsert<'_>] = $rows;
        let list_json = |list: &[String]| serde_json::to_string(list).unwrap_or_default();
        $query.push(
            "INSERT INTO target_history (gun, name, role, version, change, sha256, length, signer_keys, \
             signer_canonical_ids, principal, audit_seq, created_at) ",
        );
        match rows.first() {
            Some((first, principal, audit_seq, at)) if one_run(rows) => {
                $query.push("SELECT ");
                $query.push_bind(gun.to_owned());
                $query.push(", v.column1, ");
                $query.push_bind(first.role.clone());
                $query.push(", ");
                $query.push_bind(first.version);
                $query.push(", v.column2, v.column3, v.column4, ");
                $query.push_bind(list_json(&first.signer_keys));
                $query.push(", ");
                $query.push_bind(canonical_ids_column(&first.signer_keys, &first.signer_canonical_ids));
                $query.push(", ");
                $query.push_bind(principal.map(str::to_owned));
                $query.push(", ");
                $query.push_bind(*audit_seq);
                $query.push(", ");
                $query.push_bind(<$d>::time(*at));
                $query.push(" FROM (");
                $query.push_values(rows, |mut row, (event, _, _, _)| {
                    row.push_bind(event.name.clone())
                        .push_bind(event.change.clone())
                        .push_bind(event.sha256.clone())
                        .push_bind(event.length);
                });
                $query.push(") AS v");
            }
            _ => {
                $query.push_values(rows, |mut row, (event, principal, audit_seq, at)| {
                    row.push_bind(gun.to_owned())
                        .push_bind(event.name.clone())
                        .push_bind(event.role.clone())
                        .push_bind(event.version)
                        .push_bind(event.change.clone())
                        .push_bind(event.sha256.clone())
                        .push_bind(event.length)
                        .push_bind(list_json(&event.signer_keys))
                        .push_bind(canonical_ids_column(&event.signer_keys, &event.signer_canonical_ids))
                        .push_bind(principal.map(str::to_owned))
                        .push_bind(*audit_seq)
                        .push_bind(<$d>::time(*at));
                });
            }
        }
    }};
}

/// Inserts one chunk `$chunk` (a `Vec<EventInsert>` of at most [`HISTORY_CHUNK`] rows) of `$gun`'s
/// target history in transaction `$tx` of dialect `$d`.
macro_rules! insert_history_chunk {
    ($d:ty, $tx:expr, $gun:expr, $chunk:expr) => {{
        let chunk: Vec<EventInsert<'_>> = $chunk;
        let mut query = QueryBuilder::<<$d as Dialect>::Db>::new("");
        push_history_rows!($d, query, $gun, &chunk);
        query.build().execute(&mut **$tx).await.map_err(from_sqlx)?;
    }};
}

/// The grants of the `grants` rows `$rows`, with their keys read from pools `$pools` of dialect
/// `$d`: the result every grant query returns.
macro_rules! grants_with_keys {
    ($d:ty, $pools:expr, $rows:expr) => {{
        let mut grants = convert($rows, GrantRow::into_grant)?;
        attach_grant_keys!($d, $pools, grants);
        Ok(grants)
    }};
}

/// Reads the keys of `$grants` (from pools `$pools` of dialect `$d`) into them.
macro_rules! attach_grant_keys {
    ($d:ty, $pools:expr, $grants:expr) => {{
        let ids: Vec<i64> = $grants.iter().map(|grant| grant.id).collect();
        let mut keys: std::collections::BTreeMap<i64, Vec<GrantKey>> = std::collections::BTreeMap::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::<<$d as Dialect>::Db>::new(
                "SELECT grant_id, key_id, canonical_id, subject FROM grant_keys WHERE grant_id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(") ORDER BY grant_id, key_id");
            let rows: Vec<(i64, String, String, Option<String>)> =
                query.build_query_as().fetch_all(<$d>::reader($pools)).await.map_err(from_sqlx)?;
            for (grant_id, key_id, canonical_id, subject) in rows {
                keys.entry(grant_id).or_default().push(GrantKey { key_id, canonical_id, subject });
            }
        }
        for grant in &mut $grants {
            grant.grant.keys = keys.remove(&grant.id).unwrap_or_default();
        }
    }};
}

/// Runs one statement `$query` in a write transaction of dialect `$d` and, when it changed a row,
/// appends `$record`'s audit entry in the same transaction and commits. Evaluates to the rows changed.
macro_rules! audited_statement {
    ($d:ty, $pools:expr, $tip:expr, $record:expr, $query:expr) => {{
        let mut tx = <$d>::begin_write($pools).await?;
        let changed = $query.execute(&mut *tx).await.map_err(from_sqlx)?.rows_affected();
        if changed > 0 {
            append_entry!($d, &mut tx, $record, now(), $tip);
            tx.commit().await.map_err(from_sqlx)?;
        }
        changed
    }};
}

/// [`Store`] on a SQL database.
pub(crate) struct SqlStore {
    pools: Pools,
    tip: AuditTip,
    /// Held while this process moves pending index rows: queries that arrive meanwhile wait for
    /// that move and then find nothing left, instead of each queueing a write transaction (a
    /// flood of reads must not fill the writer's queue ahead of publishes).
    moving: tokio::sync::Mutex<()>,
}

/// The `SELECT` of the grants whose entry column `$column` (the entry that made them, or ended
/// them) lies between `$1` and `$2`, ordered by that entry, then as written.
macro_rules! grants_by_entry_sql {
    ($column:literal) => {
        concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants g WHERE g.",
            $column,
            " >= $1 AND g.",
            $column,
            " <= $2 ORDER BY g.",
            $column,
            ", g.id"
        )
    };
}

impl SqlStore {
    /// The grants `sql` ([`grants_by_entry_sql`]) selects for entries `from..=to`, with their
    /// keys when `keys`.
    async fn grants_by_entry(
        &self,
        sql: &'static str,
        from: u64,
        to: u64,
        keys: bool,
    ) -> Result<Vec<Grant>, StoreError> {
        let (from, to) = (to_i64(from, "audit position")?, to_i64(to, "audit position")?);
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, GrantRow<D>>(sql)
                .bind(from)
                .bind(to)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            if keys { grants_with_keys!(D, pools, rows) } else { convert(rows, GrantRow::into_grant) }
        })
    }

    /// A store over open, migrated pools.
    pub(crate) fn new(pools: Pools) -> SqlStore {
        SqlStore { pools, tip: AuditTip::default(), moving: tokio::sync::Mutex::new(()) }
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        per_dialect!(&self.pools, |_pools, D| D::NAME)
    }

    async fn current(&self, gun: &str, role: &str) -> Result<Option<StoredFile>, StoreError> {
        const SQL: &str = concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = $1 AND c.role = $2");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, FileRow<D>>(SQL)
                .bind(gun)
                .bind(role)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(FileRow::into_file).transpose()
        })
    }

    async fn current_many(&self, gun: &str, roles: &[&str]) -> Result<Vec<StoredFile>, StoreError> {
        if roles.is_empty() {
            return Ok(Vec::new());
        }
        per_dialect!(&self.pools, |pools, D| convert(D::current_many(pools, gun, roles).await?, FileRow::into_file))
    }

    async fn current_versions(&self, gun: &str) -> Result<Vec<(String, i64)>, StoreError> {
        const SQL: &str = "SELECT role, version FROM current_files WHERE gun = $1 ORDER BY role";
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query_as::<_, (String, i64)>(SQL).bind(gun).fetch_all(D::reader(pools)).await.map_err(from_sqlx)
        })
    }

    async fn current_heads(&self, gun: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        // `length` of a BLOB (SQLite) or `bytea` (PostgreSQL) is read from the value's header,
        // without loading the value.
        const SQL: &str = concat!(
            "SELECT c.role, f.sha256, CAST(length(f.data) AS BIGINT)",
            current_join!(),
            "WHERE c.gun = $1 ORDER BY c.role"
        );
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query_as::<_, (String, String, i64)>(SQL)
                .bind(gun)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)
        })
    }

    async fn current_all(&self, gun: &str) -> Result<Vec<StoredFile>, StoreError> {
        const SQL: &str = concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = $1 ORDER BY c.role");
        per_dialect!(&self.pools, |pools, D| {
            let rows =
                sqlx::query_as::<_, FileRow<D>>(SQL).bind(gun).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, FileRow::into_file)
        })
    }

    async fn by_checksum(&self, gun: &str, role: &str, sha256_hex: &str) -> Result<Option<StoredFile>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            file_columns!(),
            " FROM tuf_files f WHERE f.gun = $1 AND f.role = $2 AND f.sha256 = $3 \
              ORDER BY f.version DESC LIMIT 1"
        );
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, FileRow<D>>(SQL)
                .bind(gun)
                .bind(role)
                .bind(sha256_hex)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(FileRow::into_file).transpose()
        })
    }

    async fn by_version(&self, gun: &str, role: &str, version: i64) -> Result<Option<StoredFile>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            file_columns!(),
            " FROM tuf_files f WHERE f.gun = $1 AND f.role = $2 AND f.version = $3"
        );
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, FileRow<D>>(SQL)
                .bind(gun)
                .bind(role)
                .bind(version)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(FileRow::into_file).transpose()
        })
    }

    async fn update(&self, mut update: Update) -> Result<(), StoreError> {
        const INSERT_FILE: &str = "INSERT INTO tuf_files (gun, role, version, sha256, data, expires, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)";
        check_update(&update)?;
        let gun = update.gun.as_str();
        let at = now();
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_for_gun(pools, gun).await?;
            let reads = D::prepare_update(&mut tx, gun, &update.files).await?;
            if reads.timestamp != update.expected_timestamp_version {
                return Err(StoreError::OldVersion { role: TIMESTAMP_ROLE.into() });
            }
            // A streamed record's target events go first, under the position its entry will
            // take (the audit lock is held since `prepare_update` read the last entry): what the
            // entry says of them (counts, digest) is known once they are written, in one pass.
            let streamed = update.record.streamed.clone();
            let principal = update.record.entry.principal.clone();
            let next_seq = to_i64(position_after(reads.last_entry.as_ref().map(|(last, _)| *last))?, "audit position")?;
            if let Some(streamed) = &streamed {
                // Rows of earlier entries still pending go first.
                flush_pending!(D, &mut tx, i64::MAX);
                loop {
                    let chunk = streamed.next_events(&update.files, HISTORY_CHUNK).map_err(StoreError::Internal)?;
                    if chunk.is_empty() {
                        break;
                    }
                    insert_history_chunk!(
                        D,
                        &mut tx,
                        gun,
                        chunk.iter().map(|event| (event, principal.as_deref(), Some(next_seq), at)).collect()
                    );
                }
                streamed.finish_entry(&mut update.record.entry).map_err(StoreError::Internal)?;
            }
            // Then the record, and its rows dropped before the files are inserted: the largest
            // file's INSERT is the moment of peak memory, and the history of a large targets
            // file is about as large again. A small update's files go in the record's batch.
            let (_, files_inserted) = append_entry!(
                D,
                &mut tx,
                Some(gun),
                &update.record,
                at,
                &self.tip,
                Some(reads.last_entry),
                Some(&mut update.files)
            );
            drop(std::mem::take(&mut update.record.history));
            drop(std::mem::take(&mut update.record.grants));
            // Streamed grants after the entry: it ends the grants they replace first.
            if let Some(streamed) = streamed {
                loop {
                    let chunk = streamed.next_grants(&update.files, BATCHED_GRANTS).map_err(StoreError::Internal)?;
                    if chunk.is_empty() {
                        break;
                    }
                    insert_grants!(
                        D,
                        &mut tx,
                        gun,
                        chunk.iter().map(|grant| (grant, principal.as_deref(), Some(next_seq), at, None)).collect()
                    );
                }
            }
            let unwritten: &mut [NewFile] = if files_inserted { &mut [] } else { &mut update.files };
            for file in unwritten {
                // The bytes are moved into the statement: binding a reference would copy them,
                // and a file may be as large as an upload (tens of MiB). Nothing below reads them.
                let inserted = sqlx::query(INSERT_FILE)
                    .bind(gun)
                    .bind(&file.role)
                    .bind(file.version)
                    .bind(&file.sha256)
                    .bind(std::mem::take(&mut file.data))
                    .bind(file.expires.map(D::time))
                    .bind(D::time(at))
                    .execute(&mut *tx)
                    .await;
                match inserted {
                    Ok(_) => {}
                    Err(error) if is_unique_violation(&error) => {
                        return Err(StoreError::OldVersion { role: file.role.clone() });
                    }
                    Err(error) => return Err(from_sqlx(error)),
                }
            }
            if update.files.iter().any(|file| file.role == ROOT_ROLE) {
                sqlx::query("DELETE FROM tombstones WHERE gun = $1")
                    .bind(gun)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            sqlx::query("DELETE FROM current_files WHERE gun = $1")
                .bind(gun)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            D::set_current(&mut tx, gun, &update.current).await?;
            for timestamp in inserted_timestamps(&update) {
                append_change!(D, &mut tx, gun, timestamp.version, &timestamp.sha256, ChangeCategory::Update, at);
            }
            tx.commit().await.map_err(from_sqlx)
        })
    }

    async fn delete_gun(&self, gun: &str, record: Record) -> Result<bool, StoreError> {
        const CURRENT_ROOT: &str = concat!("SELECT f.data", current_join!(), "WHERE c.gun = $1 AND c.role = $2");
        const UPSERT_TOMBSTONE: &str = "INSERT INTO tombstones (gun, root, deleted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (gun) DO UPDATE SET root = excluded.root, deleted_at = excluded.deleted_at";
        let at = now();
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_for_gun(pools, gun).await?;
            let root: Option<Vec<u8>> = sqlx::query_scalar(CURRENT_ROOT)
                .bind(gun)
                .bind(ROOT_ROLE)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            if let Some(root) = root {
                sqlx::query(UPSERT_TOMBSTONE)
                    .bind(gun)
                    .bind(root)
                    .bind(D::time(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            sqlx::query("DELETE FROM current_files WHERE gun = $1")
                .bind(gun)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let deleted = sqlx::query("DELETE FROM tuf_files WHERE gun = $1")
                .bind(gun)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            if deleted > 0 {
                append_change!(D, &mut tx, gun, 0_i64, "", ChangeCategory::Deletion, at);
                // The entry names the grants the deletion ends (read under the repository's lock),
                // so that one revived behind the server's back is found by `audit verify`.
                let in_force: Vec<(String, String)> = sqlx::query_as(
                    "SELECT delegating_role, delegated_role FROM grants WHERE gun = $1 AND superseded_at IS NULL",
                )
                .bind(gun)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
                let mut record = record;
                if let Some(details) = record.entry.details.as_object_mut() {
                    let pairs = in_force.iter().map(|(a, b)| (a.as_str(), b.as_str()));
                    details.insert("ended_grants".to_owned(), tufa_audit::entry::ended_grants(pairs));
                }
                let seq = append_entry!(D, &mut tx, &record, at, &self.tip);
                sqlx::query(
                    "UPDATE grants SET superseded_at = $2, superseded_seq = $3 WHERE gun = $1 AND superseded_at IS NULL",
                )
                .bind(gun)
                .bind(D::time(at))
                .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            tx.commit().await.map_err(from_sqlx)?;
            Ok(deleted > 0)
        })
    }

    async fn changefeed(&self, gun: Option<&str>, change_id: i64, records: i64) -> Result<Vec<Change>, StoreError> {
        let limit = i64::try_from(records.unsigned_abs()).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let backwards = records < 0 || change_id < 0;
        let sql = match (backwards, gun.is_some()) {
            (false, false) => concat!(change_columns!(), "WHERE id > $1 ORDER BY id ASC LIMIT $2"),
            (false, true) => concat!(change_columns!(), "WHERE id > $1 AND gun = $3 ORDER BY id ASC LIMIT $2"),
            (true, false) => concat!(change_columns!(), "WHERE id < $1 ORDER BY id DESC LIMIT $2"),
            (true, true) => concat!(change_columns!(), "WHERE id < $1 AND gun = $3 ORDER BY id DESC LIMIT $2"),
        };
        // Going backwards from a non-positive id means "from the newest".
        let bound = if backwards && change_id <= 0 { i64::MAX } else { change_id };
        let mut changes = per_dialect!(&self.pools, |pools, D| {
            let mut query = sqlx::query_as::<_, ChangeRow<D>>(sql).bind(bound).bind(limit);
            if let Some(gun) = gun {
                query = query.bind(gun);
            }
            convert(query.fetch_all(D::reader(pools)).await.map_err(from_sqlx)?, ChangeRow::into_change)
        })?;
        if backwards {
            changes.reverse();
        }
        Ok(changes)
    }

    async fn expiring(&self, before: DateTime<Utc>, limit: i64) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT gun FROM current_files \
             WHERE role IN ('timestamp', 'snapshot') AND expires < $1 \
             GROUP BY gun ORDER BY MIN(expires), gun LIMIT $2";
        if limit <= 0 {
            return Ok(Vec::new());
        }
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query_scalar(SQL)
                .bind(D::time(before))
                .bind(limit)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)
        })
    }

    async fn expiring_page(
        &self,
        before: DateTime<Utc>,
        after: Option<&ExpiringCursor>,
        limit: i64,
    ) -> Result<Vec<ExpiringCursor>, StoreError> {
        const FIRST: &str = "SELECT gun, MIN(expires) AS expires FROM current_files \
             WHERE role IN ('timestamp', 'snapshot') AND expires < $1 \
             GROUP BY gun ORDER BY MIN(expires), gun LIMIT $2";
        const NEXT: &str = "SELECT gun, MIN(expires) AS expires FROM current_files \
             WHERE role IN ('timestamp', 'snapshot') AND expires < $1 \
             GROUP BY gun HAVING MIN(expires) > $3 OR (MIN(expires) = $3 AND gun > $4) \
             ORDER BY MIN(expires), gun LIMIT $2";
        if limit <= 0 {
            return Ok(Vec::new());
        }
        per_dialect!(&self.pools, |pools, D| {
            let mut query = sqlx::query_as::<_, ExpiringRow<D>>(if after.is_some() { NEXT } else { FIRST })
                .bind(D::time(before))
                .bind(limit);
            if let Some(after) = after {
                query = query.bind(D::time(after.expires)).bind(&after.gun);
            }
            let rows = query.fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            rows.into_iter()
                .map(|row| Ok(ExpiringCursor { gun: row.gun, expires: D::read_time(row.expires, "expires")? }))
                .collect()
        })
    }

    async fn record_key_owner(&self, owner: &KeyOwner) -> Result<KeyOwner, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO key_owners (",
            key_owner_columns!(),
            ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING"
        );
        const SELECT: &str = concat!("SELECT ", key_owner_columns!(), " FROM key_owners WHERE key_id = $1");
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            sqlx::query(INSERT)
                .bind(&owner.key_id)
                .bind(&owner.gun)
                .bind(&owner.role)
                .bind(&owner.requester)
                .bind(D::time(owner.created_at))
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let row = sqlx::query_as::<_, KeyOwnerRow<D>>(SELECT)
                .bind(&owner.key_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            tx.commit().await.map_err(from_sqlx)?;
            row.into_owner()
        })
    }

    async fn key_owner(&self, key_id: &str) -> Result<Option<KeyOwner>, StoreError> {
        const SQL: &str = concat!("SELECT ", key_owner_columns!(), " FROM key_owners WHERE key_id = $1");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, KeyOwnerRow<D>>(SQL)
                .bind(key_id)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(KeyOwnerRow::into_owner).transpose()
        })
    }

    async fn pending_keys(&self, requester: &str) -> Result<Vec<KeyOwner>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_owner_columns!(),
            " FROM key_owners k WHERE requester = $1 \
              AND NOT EXISTS (SELECT 1 FROM current_files c WHERE c.gun = k.gun) \
              ORDER BY created_at, key_id"
        );
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, KeyOwnerRow<D>>(SQL)
                .bind(requester)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            convert(rows, KeyOwnerRow::into_owner)
        })
    }

    async fn drop_keys(&self, key_ids: &[String]) -> Result<u64, StoreError> {
        if key_ids.is_empty() {
            return Ok(0);
        }
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            let mut removed = 0;
            for key_id in key_ids {
                removed += sqlx::query("DELETE FROM key_owners WHERE key_id = $1")
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?
                    .rows_affected();
                sqlx::query("DELETE FROM server_keys WHERE key_id = $1 AND last_used IS NULL")
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            }
            tx.commit().await.map_err(from_sqlx)?;
            Ok(removed)
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        const SQL: &str = "SELECT 1 FROM tuf_files, current_files, changefeed, server_keys, \
             principals, api_tokens, role_bindings, tombstones, token_keys, key_owners LIMIT 0";
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query(SQL).execute(D::reader(pools)).await.map(drop).map_err(from_sqlx)
        })
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        const SQL: &str =
            concat!("INSERT INTO server_keys (", key_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        per_dialect!(&self.pools, |pools, D| {
            let inserted = sqlx::query(SQL)
                .bind(&key.key_id)
                .bind(&key.gun)
                .bind(&key.role)
                .bind(&key.algorithm)
                .bind(&key.public)
                .bind(&key.sealed_private)
                .bind(&key.kek_id)
                .bind(D::time(key.created_at))
                .bind(key.last_used.map(D::time))
                .execute(D::writer(pools))
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(error) if is_unique_violation(&error) => {
                    Err(StoreError::Internal(format!("server key {} already exists", key.key_id)))
                }
                Err(error) => Err(from_sqlx(error)),
            }
        })
    }

    async fn key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        const SQL: &str = concat!("SELECT ", key_columns!(), " FROM server_keys WHERE key_id = $1");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, KeyRow<D>>(SQL)
                .bind(key_id)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(KeyRow::into_key).transpose()
        })
    }

    async fn unused_key(&self, gun: &str, role: &str, algorithm: &str) -> Result<Option<StoredKey>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM server_keys WHERE gun = $1 AND role = $2 AND algorithm = $3 \
              AND last_used IS NULL ORDER BY key_id LIMIT 1"
        );
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, KeyRow<D>>(SQL)
                .bind(gun)
                .bind(role)
                .bind(algorithm)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(KeyRow::into_key).transpose()
        })
    }

    async fn mark_key_used(&self, key_id: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE server_keys SET last_used = $2 WHERE key_id = $1";
        let updated = per_dialect!(&self.pools, |pools, D| {
            sqlx::query(SQL)
                .bind(key_id)
                .bind(D::time(now()))
                .execute(D::writer(pools))
                .await
                .map_err(from_sqlx)?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::Internal(format!("no server key {key_id}")));
        }
        Ok(())
    }

    async fn kek_ids(&self) -> Result<Vec<String>, StoreError> {
        // UNION (not UNION ALL) also makes the ids distinct.
        const SQL: &str = "SELECT kek_id FROM server_keys UNION SELECT kek_id FROM token_keys ORDER BY kek_id";
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query_scalar(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)
        })
    }

    async fn key_sealed_with(&self, kek_id: &str) -> Result<Option<StoredKey>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", key_columns!(), " FROM server_keys WHERE kek_id = $1 ORDER BY key_id LIMIT 1");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, KeyRow<D>>(SQL)
                .bind(kek_id)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(KeyRow::into_key).transpose()
        })
    }

    async fn add_principal(&self, principal: &Principal, record: &Record) -> Result<(), StoreError> {
        const SQL: &str = concat!("INSERT INTO principals (", principal_columns!(), ") VALUES ($1, $2, $3, $4)");
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            let inserted = sqlx::query(SQL)
                .bind(&principal.name)
                .bind(principal.kind.as_str())
                .bind(principal.password_hash.as_deref())
                .bind(D::time(principal.created_at))
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {
                    append_entry!(D, &mut tx, record, now(), &self.tip);
                    tx.commit().await.map_err(from_sqlx)
                }
                Err(error) if is_unique_violation(&error) => {
                    Err(StoreError::Conflict(format!("principal {:?} already exists", principal.name)))
                }
                Err(error) => Err(from_sqlx(error)),
            }
        })
    }

    async fn set_password_hash(&self, name: &str, hash: Option<&str>, record: &Record) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE principals SET password_hash = $2 WHERE name = $1";
        let updated = per_dialect!(&self.pools, |pools, D| {
            audited_statement!(D, pools, &self.tip, record, sqlx::query(SQL).bind(name).bind(hash))
        });
        Ok(updated > 0)
    }

    async fn principal(&self, name: &str) -> Result<Option<Principal>, StoreError> {
        const SQL: &str = concat!("SELECT ", principal_columns!(), " FROM principals WHERE name = $1");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, PrincipalRow<D>>(SQL)
                .bind(name)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(PrincipalRow::into_principal).transpose()
        })
    }

    async fn principals(&self) -> Result<Vec<Principal>, StoreError> {
        const SQL: &str = concat!("SELECT ", principal_columns!(), " FROM principals ORDER BY name");
        per_dialect!(&self.pools, |pools, D| {
            let rows =
                sqlx::query_as::<_, PrincipalRow<D>>(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, PrincipalRow::into_principal)
        })
    }

    async fn remove_principal(&self, name: &str, record: &Record) -> Result<bool, StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            // Tokens first: they reference the principal.
            for sql in ["DELETE FROM api_tokens WHERE principal = $1", "DELETE FROM role_bindings WHERE principal = $1"]
            {
                sqlx::query(sql).bind(name).execute(&mut *tx).await.map_err(from_sqlx)?;
            }
            let removed = sqlx::query("DELETE FROM principals WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            if removed == 0 {
                // Not a principal: dropping the transaction rolls back the deletes above.
                return Ok(false);
            }
            append_entry!(D, &mut tx, record, now(), &self.tip);
            tx.commit().await.map_err(from_sqlx)?;
            Ok(true)
        })
    }

    async fn insert_api_token(&self, token: &ApiToken, record: &Record) -> Result<(), StoreError> {
        const SQL: &str =
            concat!("INSERT INTO api_tokens (", api_token_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6)");
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            let inserted = sqlx::query(SQL)
                .bind(&token.id)
                .bind(&token.principal)
                .bind(&token.secret_hash)
                .bind(D::time(token.created_at))
                .bind(token.expires_at.map(D::time))
                .bind(token.revoked_at.map(D::time))
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {
                    append_entry!(D, &mut tx, record, now(), &self.tip);
                    tx.commit().await.map_err(from_sqlx)
                }
                Err(error) if is_foreign_key_violation(&error) => {
                    Err(StoreError::NotFound(format!("no principal {:?}", token.principal)))
                }
                Err(error) if is_unique_violation(&error) => {
                    Err(StoreError::Conflict(format!("API token {:?} already exists", token.id)))
                }
                Err(error) => Err(from_sqlx(error)),
            }
        })
    }

    async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        const SQL: &str = concat!("SELECT ", api_token_columns!(), " FROM api_tokens WHERE id = $1");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, ApiTokenRow<D>>(SQL)
                .bind(id)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(ApiTokenRow::into_token).transpose()
        })
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        const SQL: &str = concat!("SELECT ", api_token_columns!(), " FROM api_tokens ORDER BY principal, id");
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, ApiTokenRow<D>>(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, ApiTokenRow::into_token)
        })
    }

    async fn revoke_api_token(&self, id: &str, at: DateTime<Utc>, record: &Record) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        let updated = per_dialect!(&self.pools, |pools, D| {
            audited_statement!(D, pools, &self.tip, record, sqlx::query(SQL).bind(id).bind(D::time(at)))
        });
        Ok(updated > 0)
    }

    async fn add_binding(
        &self,
        principal: &str,
        role: &str,
        pattern: &str,
        record: &Record,
    ) -> Result<bool, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO role_bindings (",
            binding_columns!(),
            ") VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
        );
        let inserted = per_dialect!(&self.pools, |pools, D| {
            audited_statement!(
                D,
                pools,
                &self.tip,
                record,
                sqlx::query(SQL).bind(principal).bind(role).bind(pattern).bind(D::time(now()))
            )
        });
        Ok(inserted > 0)
    }

    async fn remove_binding(
        &self,
        principal: &str,
        role: &str,
        pattern: &str,
        record: &Record,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM role_bindings WHERE principal = $1 AND role = $2 AND pattern = $3";
        let removed = per_dialect!(&self.pools, |pools, D| {
            audited_statement!(D, pools, &self.tip, record, sqlx::query(SQL).bind(principal).bind(role).bind(pattern))
        });
        Ok(removed > 0)
    }

    async fn bindings(&self) -> Result<Vec<RoleBinding>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", binding_columns!(), " FROM role_bindings ORDER BY principal, pattern, role");
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, BindingRow<D>>(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, BindingRow::into_binding)
        })
    }

    async fn bindings_for(&self, principals: &[&str]) -> Result<Vec<RoleBinding>, StoreError> {
        if principals.is_empty() {
            return Ok(Vec::new());
        }
        per_dialect!(&self.pools, |pools, D| {
            // One placeholder per name: valid SQL in both dialects, and callers ask for a few
            // names (a principal and `anonymous`).
            let mut query = QueryBuilder::<<D as Dialect>::Db>::new(concat!(
                "SELECT ",
                binding_columns!(),
                " FROM role_bindings WHERE principal IN ("
            ));
            let mut list = query.separated(", ");
            for principal in principals {
                list.push_bind(*principal);
            }
            query.push(") ORDER BY principal, pattern, role");
            let rows: Vec<BindingRow<D>> =
                query.build_query_as().fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, BindingRow::into_binding)
        })
    }

    async fn tombstone(&self, gun: &str) -> Result<Option<Tombstone>, StoreError> {
        const SQL: &str = concat!("SELECT ", tombstone_columns!(), " FROM tombstones WHERE gun = $1");
        per_dialect!(&self.pools, |pools, D| {
            let row = sqlx::query_as::<_, TombstoneRow<D>>(SQL)
                .bind(gun)
                .fetch_optional(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            row.map(TombstoneRow::into_tombstone).transpose()
        })
    }

    async fn tombstones(&self) -> Result<Vec<Tombstone>, StoreError> {
        const SQL: &str = concat!("SELECT ", tombstone_columns!(), " FROM tombstones ORDER BY gun");
        per_dialect!(&self.pools, |pools, D| {
            let rows =
                sqlx::query_as::<_, TombstoneRow<D>>(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, TombstoneRow::into_tombstone)
        })
    }

    async fn clear_tombstone(&self, gun: &str, record: &Record) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM tombstones WHERE gun = $1";
        let removed = per_dialect!(&self.pools, |pools, D| audited_statement!(
            D,
            pools,
            &self.tip,
            record,
            sqlx::query(SQL).bind(gun)
        ));
        Ok(removed > 0)
    }

    async fn insert_token_key(&self, key: &TokenKey) -> Result<bool, StoreError> {
        const ACTIVE: &str = "SELECT id FROM token_keys WHERE kind = $1 AND retired_at IS NULL";
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            D::lock_token_keys(&mut tx).await?;
            if key.retired_at.is_none() {
                let active: Option<String> = sqlx::query_scalar(ACTIVE)
                    .bind(key.kind.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                if active.is_some() {
                    return Ok(false);
                }
            }
            insert_token_key!(D, &mut tx, key);
            tx.commit().await.map_err(from_sqlx)?;
            Ok(true)
        })
    }

    async fn rotate_token_key(&self, new: &TokenKey, at: DateTime<Utc>, record: &Record) -> Result<(), StoreError> {
        const RETIRE: &str = "UPDATE token_keys SET retired_at = $2 WHERE kind = $1 AND retired_at IS NULL";
        if new.retired_at.is_some() {
            return Err(StoreError::Internal(format!(
                "token key {:?} is retired, so it cannot become the active {} key",
                new.id, new.kind
            )));
        }
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            D::lock_token_keys(&mut tx).await?;
            sqlx::query(RETIRE).bind(new.kind.as_str()).bind(D::time(at)).execute(&mut *tx).await.map_err(from_sqlx)?;
            insert_token_key!(D, &mut tx, new);
            append_entry!(D, &mut tx, record, now(), &self.tip);
            tx.commit().await.map_err(from_sqlx)
        })
    }

    async fn token_keys(&self) -> Result<Vec<TokenKey>, StoreError> {
        const SQL: &str = concat!("SELECT ", token_key_columns!(), " FROM token_keys ORDER BY created_at, id");
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, TokenKeyRow<D>>(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, TokenKeyRow::into_key)
        })
    }

    async fn append_audit(&self, record: Record) -> Result<u64, StoreError> {
        let at = now();
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            let seq = append_entry!(D, &mut tx, &record, at, &self.tip);
            tx.commit().await.map_err(from_sqlx)?;
            Ok(u64::try_from(seq).unwrap_or_default())
        })
    }

    async fn append_audit_batch(&self, records: Vec<Record>) -> Result<u64, StoreError> {
        let at = now();
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            let mut first = None;
            for record in &records {
                let seq = append_entry!(D, &mut tx, record, at, &self.tip);
                first.get_or_insert(seq);
            }
            tx.commit().await.map_err(from_sqlx)?;
            Ok(first.and_then(|seq| u64::try_from(seq).ok()).unwrap_or_default())
        })
    }

    async fn audit_size(&self) -> Result<u64, StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
                .fetch_one(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            Ok(last.and_then(|seq| u64::try_from(seq).ok()).map_or(0, |seq| seq + 1))
        })
    }

    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let after = filter.after.map(|after| to_i64(after, "audit position")).transpose()?.unwrap_or(-1);
        let limit = i64::from(filter.limit.max(1));
        if filter.key.is_some() {
            self.flush_audit_index().await?;
        }
        per_dialect!(&self.pools, |pools, D| {
            let mut query = QueryBuilder::<<D as Dialect>::Db>::new(entry_columns!());
            query.push("WHERE seq > ").push_bind(after);
            if let Some(gun) = &filter.gun {
                query.push(" AND gun = ").push_bind(gun.clone());
            }
            if let Some(principal) = &filter.principal {
                query.push(" AND principal = ").push_bind(principal.clone());
            }
            if let Some(key) = &filter.key {
                query
                    .push(" AND seq IN (SELECT seq FROM audit_keys_used WHERE key_id = ")
                    .push_bind(key.clone())
                    .push(")");
            }
            if let Some(since) = filter.since {
                query.push(" AND created_at >= ").push_bind(D::time(since));
            }
            if let Some(until) = filter.until {
                query.push(" AND created_at < ").push_bind(D::time(until));
            }
            query.push(" ORDER BY seq ASC LIMIT ").push_bind(limit);
            let rows: Vec<EntryRow<D>> = query.build_query_as().fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, EntryRow::into_entry)
        })
    }

    async fn audit_hashes(&self, indexes: &[u64]) -> Result<tufa_audit::tree::Hashes, StoreError> {
        let mut hashes = tufa_audit::tree::Hashes::new();
        if indexes.is_empty() {
            return Ok(hashes);
        }
        per_dialect!(&self.pools, |pools, D| {
            for chunk in indexes.chunks(INSERT_CHUNK) {
                let mut query =
                    QueryBuilder::<<D as Dialect>::Db>::new("SELECT idx, hash FROM audit_hashes WHERE idx IN (");
                let mut list = query.separated(", ");
                for index in chunk {
                    list.push_bind(to_i64(*index, "stored hash index")?);
                }
                query.push(")");
                let rows: Vec<(i64, Vec<u8>)> =
                    query.build_query_as().fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
                for (index, hash) in rows {
                    let hash: [u8; 32] = hash
                        .try_into()
                        .map_err(|_| StoreError::Internal(format!("stored audit hash {index} is not 32 bytes")))?;
                    hashes.insert(u64::try_from(index).unwrap_or_default(), Hash(hash));
                }
            }
            Ok(hashes)
        })
    }

    async fn insert_checkpoint(&self, size: u64, root: &str, note: &str) -> Result<(), StoreError> {
        let size = to_i64(size, "checkpoint size")?;
        let at = now();
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query("INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)")
                .bind(size)
                .bind(root)
                .bind(note)
                .bind(D::time(at))
                .execute(D::writer(pools))
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        const SQL: &str = "SELECT id, size, root, note, created_at FROM audit_checkpoints ORDER BY id";
        per_dialect!(&self.pools, |pools, D| {
            let rows =
                sqlx::query_as::<_, CheckpointRow<D>>(SQL).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            convert(rows, CheckpointRow::into_checkpoint)
        })
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        const SQL: &str =
            "SELECT id, size, root, note, created_at FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1";
        per_dialect!(&self.pools, |pools, D| {
            let row =
                sqlx::query_as::<_, CheckpointRow<D>>(SQL).fetch_optional(D::reader(pools)).await.map_err(from_sqlx)?;
            row.map(CheckpointRow::into_checkpoint).transpose()
        })
    }

    async fn audit_signing_key(&self) -> Result<Option<AuditSigningKey>, StoreError> {
        const SQL: &str =
            "SELECT key_id, name, keytype, public, created_at FROM audit_signing_keys WHERE active = TRUE";
        per_dialect!(&self.pools, |pools, D| {
            let row =
                sqlx::query_as::<_, AuditKeyRow<D>>(SQL).fetch_optional(D::writer(pools)).await.map_err(from_sqlx)?;
            row.map(|row| {
                Ok(AuditSigningKey {
                    key_id: row.key_id,
                    name: row.name,
                    keytype: row.keytype,
                    public: row.public,
                    created_at: D::read_time(row.created_at, "created_at")?,
                })
            })
            .transpose()
        })
    }

    async fn insert_audit_signing_key(&self, key: &AuditSigningKey) -> Result<bool, StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_write(pools).await?;
            D::lock_audit(&mut tx).await?;
            let active: Option<String> =
                sqlx::query_scalar("SELECT key_id FROM audit_signing_keys WHERE active = TRUE")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
            if active.is_some() {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO audit_signing_keys (key_id, name, keytype, public, active, created_at) \
                 VALUES ($1, $2, $3, $4, TRUE, $5)",
            )
            .bind(&key.key_id)
            .bind(&key.name)
            .bind(&key.keytype)
            .bind(&key.public)
            .bind(D::time(key.created_at))
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            tx.commit().await.map_err(from_sqlx)?;
            Ok(true)
        })
    }

    async fn grants(&self, gun: &str, at: Option<DateTime<Utc>>) -> Result<Vec<Grant>, StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            let mut query = QueryBuilder::<<D as Dialect>::Db>::new(concat!(
                "SELECT ",
                grant_columns!(),
                " FROM grants g WHERE g.gun = "
            ));
            query.push_bind(gun.to_owned());
            match at {
                None => {
                    query.push(" AND g.superseded_at IS NULL");
                }
                Some(at) => {
                    query
                        .push(" AND g.created_at <= ")
                        .push_bind(D::time(at))
                        .push(" AND (g.superseded_at IS NULL OR g.superseded_at > ")
                        .push_bind(D::time(at))
                        .push(")");
                }
            }
            query.push(" ORDER BY g.delegating_role, g.delegated_role, g.id");
            let rows: Vec<GrantRow<D>> = query.build_query_as().fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            grants_with_keys!(D, pools, rows)
        })
    }

    async fn grant_history(&self, gun: &str) -> Result<Vec<Grant>, StoreError> {
        const SQL: &str = concat!("SELECT ", grant_columns!(), " FROM grants g WHERE g.gun = $1 ORDER BY g.id");
        per_dialect!(&self.pools, |pools, D| {
            let rows =
                sqlx::query_as::<_, GrantRow<D>>(SQL).bind(gun).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            grants_with_keys!(D, pools, rows)
        })
    }

    async fn key_grants(&self, key_id: &str) -> Result<Vec<Grant>, StoreError> {
        const SQL: &str = concat!(
            "SELECT DISTINCT ",
            grant_columns!(),
            " FROM grants g JOIN grant_keys k ON k.grant_id = g.id WHERE k.key_id = $1 OR k.canonical_id = $1 \
             ORDER BY g.id"
        );
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, GrantRow<D>>(SQL)
                .bind(key_id)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            grants_with_keys!(D, pools, rows)
        })
    }

    async fn flush_audit_index(&self) -> Result<usize, StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            const ANY: &str = "SELECT seq FROM audit_pending LIMIT 1";
            let any: Option<i64> = sqlx::query_scalar(ANY).fetch_optional(D::reader(pools)).await.map_err(from_sqlx)?;
            if any.is_none() {
                return Ok(0);
            }
            let _moving = self.moving.lock().await;
            // Another caller may have moved them while this one waited.
            let any: Option<i64> = sqlx::query_scalar(ANY).fetch_optional(D::reader(pools)).await.map_err(from_sqlx)?;
            if any.is_none() {
                return Ok(0);
            }
            let mut total = 0;
            loop {
                let mut tx = D::begin_write(pools).await?;
                D::lock_audit(&mut tx).await?;
                let moved = flush_pending!(D, &mut tx, FLUSH_ENTRIES);
                tx.commit().await.map_err(from_sqlx)?;
                total += moved;
                if i64::try_from(moved).unwrap_or(i64::MAX) < FLUSH_ENTRIES {
                    return Ok(total);
                }
            }
        })
    }

    async fn target_history(&self, gun: &str, name: &str) -> Result<Vec<TargetEvent>, StoreError> {
        const SQL: &str = concat!(event_columns!(), "WHERE gun = $1 AND name = $2 ORDER BY id");
        self.flush_audit_index().await?;
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, TargetEventRow<D>>(SQL)
                .bind(gun)
                .bind(name)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            convert(rows, TargetEventRow::into_event)
        })
    }

    async fn history_of_entries(&self, from: u64, to: u64) -> Result<Vec<TargetEvent>, StoreError> {
        const SQL: &str = concat!(event_columns!(), "WHERE audit_seq >= $1 AND audit_seq <= $2 ORDER BY audit_seq, id");
        let (from, to) = (to_i64(from, "audit position")?, to_i64(to, "audit position")?);
        self.flush_audit_index().await?;
        per_dialect!(&self.pools, |pools, D| {
            let rows = sqlx::query_as::<_, TargetEventRow<D>>(SQL)
                .bind(from)
                .bind(to)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)?;
            convert(rows, TargetEventRow::into_event)
        })
    }

    async fn grants_of_entries(&self, from: u64, to: u64) -> Result<Vec<Grant>, StoreError> {
        self.grants_by_entry(grants_by_entry_sql!("audit_seq"), from, to, true).await
    }

    async fn grants_ended_by_entries(&self, from: u64, to: u64) -> Result<Vec<Grant>, StoreError> {
        self.grants_by_entry(grants_by_entry_sql!("superseded_seq"), from, to, false).await
    }

    async fn audit_state(&self, name: &str) -> Result<Option<String>, StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query_scalar("SELECT value FROM audit_state WHERE name = $1")
                .bind(name)
                .fetch_optional(D::writer(pools))
                .await
                .map_err(from_sqlx)
        })
    }

    async fn backfill(
        &self,
        gun: &str,
        grants: Vec<Grant>,
        history: Vec<TargetEvent>,
        record: Option<&Record>,
        done: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        per_dialect!(&self.pools, |pools, D| {
            let mut tx = D::begin_for_gun(pools, gun).await?;
            // Rows of entries still pending go first (under the audit lock).
            D::lock_audit(&mut tx).await?;
            flush_pending!(D, &mut tx, i64::MAX);
            if let Some(record) = record {
                append_entry!(D, &mut tx, record, now(), &self.tip);
            }
            insert_grants!(
                D,
                &mut tx,
                gun,
                grants.iter().map(|grant| (&grant.grant, None, None, grant.created_at, grant.superseded_at)).collect()
            );
            for chunk in history.chunks(HISTORY_CHUNK) {
                insert_history_chunk!(
                    D,
                    &mut tx,
                    gun,
                    chunk.iter().map(|event| (&event.event, None, None, event.created_at)).collect()
                );
            }
            if let Some((name, value)) = done {
                sqlx::query(
                    "INSERT INTO audit_state (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            }
            tx.commit().await.map_err(from_sqlx)
        })
    }

    async fn guns_with_files(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT DISTINCT gun FROM tuf_files WHERE gun > $1 ORDER BY gun LIMIT $2";
        per_dialect!(&self.pools, |pools, D| {
            sqlx::query_scalar(SQL)
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(D::reader(pools))
                .await
                .map_err(from_sqlx)
        })
    }

    async fn file_versions(&self, gun: &str) -> Result<Vec<(String, i64, DateTime<Utc>)>, StoreError> {
        const SQL: &str =
            "SELECT role, version, created_at FROM tuf_files WHERE gun = $1 ORDER BY created_at, role, version";
        per_dialect!(&self.pools, |pools, D| {
            let rows: Vec<(String, i64, <D as Dialect>::Time)> =
                sqlx::query_as(SQL).bind(gun).fetch_all(D::reader(pools)).await.map_err(from_sqlx)?;
            rows.into_iter().map(|(role, version, at)| Ok((role, version, D::read_time(at, "created_at")?))).collect()
        })
    }
}
