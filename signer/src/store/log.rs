//! The signer's tamper-evident log in its database: appending `tufa_audit` entries and the Merkle
//! tree's stored hashes inside the caller's write transaction, and the statements that differ
//! between SQLite and PostgreSQL (the lock that serialises appends, reading a set of stored
//! hashes).
//!
//! Appends from several signer processes on one database are serialised in the database: on
//! PostgreSQL by a transaction-scoped advisory lock taken before the log's tail is read, on SQLite
//! by the write lock `BEGIN IMMEDIATE` takes. Positions are therefore gapless and every entry
//! links to the one before it.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _, SqliteConnection};
use tufa_audit::entry::{hash_hex, parse_hash_hex};
use tufa_audit::tree::{self, Hashes};
use tufa_audit::{Entry, Hash, NewEntry};

use tufa_audit::entry::kinds;
use tufa_audit::verify::StoredCheckpoint;

use super::{
    Actor, KeyRecord, Pool, Store, StoreError, map_error, postgres_event, postgres_key, postgres_time, sqlite_event,
    sqlite_key, sqlite_time,
};

/// The two-key PostgreSQL advisory lock that serialises appends to the signer's log ("tfsg", 1).
/// Two-key locks live apart from tufa-server's per-GUN one-key locks, and the first key differs
/// from tufa-server's ("tufa"), so both may share a database.
pub(super) const LOG_LOCK: (i32, i32) = (0x7466_7367, 1);

/// The statements of the log that a dialect provides; implemented for both connection types.
/// The futures are `Send` so that the audit writer can run on any runtime thread.
pub(super) trait LogConnection: Send {
    /// Takes the log's append lock for the rest of the transaction.
    fn lock_log(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The position and leaf hash of the last entry, if any.
    fn log_tail(&mut self) -> impl Future<Output = Result<Option<(u64, Hash)>, StoreError>> + Send;
    /// The stored hashes at `indexes` (those present).
    fn stored_hashes(&mut self, indexes: &[u64]) -> impl Future<Output = Result<Hashes, StoreError>> + Send;
    /// Inserts one entry with its leaf hash.
    fn insert_entry(&mut self, entry: &Entry, leaf: &Hash) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Inserts stored hashes.
    fn insert_hashes(&mut self, hashes: &[(u64, Hash)]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A position or index as the databases store it (BIGINT).
pub(super) fn to_db(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Internal(format!("log position {value} is out of range")))
}

/// A stored position or index read back; negative values are damage.
pub(super) fn from_db(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Internal(format!("column {column} holds a negative value {value}")))
}

fn parse_hash(text: &str, column: &str) -> Result<Hash, StoreError> {
    parse_hash_hex(text).ok_or_else(|| StoreError::Internal(format!("column {column} holds a malformed hash {text:?}")))
}

fn hash_from_bytes(bytes: &[u8], index: i64) -> Result<Hash, StoreError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Internal(format!("stored hash {index} has {} bytes, not 32", bytes.len())))?;
    Ok(Hash(array))
}

/// Writes the statements that are the same text in both dialects once, for one connection type.
macro_rules! common_statements {
    () => {
        async fn log_tail(&mut self) -> Result<Option<(u64, Hash)>, StoreError> {
            const SQL: &str = "SELECT seq, leaf_hash FROM signer_audit_entries ORDER BY seq DESC LIMIT 1";
            let Some(row) = sqlx::query(SQL).fetch_optional(&mut *self).await.map_err(map_error)? else {
                return Ok(None);
            };
            let seq: i64 = row.try_get("seq").map_err(map_error)?;
            let leaf: String = row.try_get("leaf_hash").map_err(map_error)?;
            Ok(Some((from_db(seq, "seq")?, parse_hash(&leaf, "leaf_hash")?)))
        }

        async fn insert_entry(&mut self, entry: &Entry, leaf: &Hash) -> Result<(), StoreError> {
            const SQL: &str = "INSERT INTO signer_audit_entries \
                 (seq, time, kind, gun, principal, address, request_id, details, prev, leaf_hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
            sqlx::query(SQL)
                .bind(to_db(entry.seq)?)
                .bind(entry.time.timestamp_micros())
                .bind(&entry.kind)
                .bind(entry.gun.as_deref())
                .bind(entry.principal.as_deref())
                .bind(entry.address.as_deref())
                .bind(entry.request_id.as_deref())
                .bind(&entry.details)
                .bind(entry.prev.as_ref().map(hash_hex))
                .bind(hash_hex(leaf))
                .execute(&mut *self)
                .await
                .map_err(map_error)?;
            Ok(())
        }

        async fn insert_hashes(&mut self, hashes: &[(u64, Hash)]) -> Result<(), StoreError> {
            const SQL: &str = "INSERT INTO signer_audit_hashes (idx, hash) VALUES ($1, $2)";
            for (index, hash) in hashes {
                sqlx::query(SQL)
                    .bind(to_db(*index)?)
                    .bind(hash.0.as_slice())
                    .execute(&mut *self)
                    .await
                    .map_err(map_error)?;
            }
            Ok(())
        }
    };
}

impl LogConnection for SqliteConnection {
    /// The write lock taken by `BEGIN IMMEDIATE` already serialises appends.
    async fn lock_log(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite has no array parameters: the indexes travel as one JSON array.
    async fn stored_hashes(&mut self, indexes: &[u64]) -> Result<Hashes, StoreError> {
        const SQL: &str = "SELECT idx, hash FROM signer_audit_hashes WHERE idx IN (SELECT value FROM json_each($1))";
        if indexes.is_empty() {
            return Ok(Hashes::new());
        }
        let list = serde_json::to_string(indexes).map_err(|error| StoreError::Internal(error.to_string()))?;
        let rows = sqlx::query(SQL).bind(list).fetch_all(&mut *self).await.map_err(map_error)?;
        read_hashes(rows.iter().map(|row| Ok((row.try_get("idx")?, row.try_get("hash")?))))
    }

    common_statements!();
}

impl LogConnection for PgConnection {
    async fn lock_log(&mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOG_LOCK.0)
            .bind(LOG_LOCK.1)
            .execute(&mut *self)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn stored_hashes(&mut self, indexes: &[u64]) -> Result<Hashes, StoreError> {
        const SQL: &str = "SELECT idx, hash FROM signer_audit_hashes WHERE idx = ANY($1)";
        if indexes.is_empty() {
            return Ok(Hashes::new());
        }
        let list = indexes.iter().map(|index| to_db(*index)).collect::<Result<Vec<i64>, _>>()?;
        let rows = sqlx::query(SQL).bind(list).fetch_all(&mut *self).await.map_err(map_error)?;
        read_hashes(rows.iter().map(|row| Ok((row.try_get("idx")?, row.try_get("hash")?))))
    }

    common_statements!();
}

fn read_hashes(rows: impl Iterator<Item = Result<(i64, Vec<u8>), sqlx::Error>>) -> Result<Hashes, StoreError> {
    let mut hashes = Hashes::new();
    for row in rows {
        let (index, bytes) = row.map_err(map_error)?;
        hashes.insert(from_db(index, "idx")?, hash_from_bytes(&bytes, index)?);
    }
    Ok(hashes)
}

/// The end of the log inside one write transaction: takes the lock, then appends entry after
/// entry, remembering the stored hashes it wrote so that a batch reads each hash at most once.
pub(super) struct Appender {
    next: u64,
    prev: Option<Hash>,
    written: Hashes,
}

impl Appender {
    /// Takes the log's lock in the transaction on `connection` and reads the log's tail.
    pub(super) async fn start<C: LogConnection + ?Sized>(connection: &mut C) -> Result<Appender, StoreError> {
        connection.lock_log().await?;
        let tail = connection.log_tail().await?;
        let next = match tail {
            Some((seq, _)) => {
                seq.checked_add(1).ok_or_else(|| StoreError::Internal("the audit log is full".to_owned()))?
            }
            None => 0,
        };
        Ok(Appender { next, prev: tail.map(|(_, hash)| hash), written: Hashes::new() })
    }

    /// The position the next entry gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next
    }

    /// Appends `entry` at the next position, written at `time`, with its stored hashes; returns
    /// the entry as stored.
    pub(super) async fn append<C: LogConnection + ?Sized>(
        &mut self,
        connection: &mut C,
        entry: &NewEntry,
        time: DateTime<Utc>,
    ) -> Result<Entry, StoreError> {
        let seq = self.next;
        let reads = tree::append_reads(seq);
        let missing: Vec<u64> = reads.iter().copied().filter(|index| !self.written.contains_key(index)).collect();
        let mut hashes = connection.stored_hashes(&missing).await?;
        for index in &reads {
            if let Some(hash) = self.written.get(index) {
                hashes.insert(*index, *hash);
            }
        }
        let stored = entry.at(seq, time, self.prev);
        let leaf = stored.leaf_hash();
        let new = tree::append(seq, leaf, &hashes)
            .map_err(|error| StoreError::Internal(format!("cannot append audit entry {seq}: {error}")))?;
        connection.insert_entry(&stored, &leaf).await?;
        connection.insert_hashes(&new).await?;
        self.written.extend(new);
        self.prev = Some(leaf);
        self.next = seq + 1;
        Ok(stored)
    }
}

/// The size and root of the log as it stands in the transaction on `connection` (after its
/// lock was taken).
pub(super) async fn tree_head<C: LogConnection + ?Sized>(connection: &mut C) -> Result<(u64, Hash), StoreError> {
    let size = match connection.log_tail().await? {
        Some((seq, _)) => seq + 1,
        None => 0,
    };
    let hashes = connection.stored_hashes(&tree::root_reads(size)).await?;
    let root = tree::root(size, &hashes)
        .map_err(|error| StoreError::Internal(format!("cannot compute the audit log's root: {error}")))?;
    Ok((size, root))
}

/// The role recorded for the signer's checkpoint key. It is not a TUF role name, so CreateKey can
/// never ask for it, and the service refuses every client operation on a key with it.
pub const CHECKPOINT_ROLE: &str = "tufa-signer-audit-checkpoint";

/// Largest page [`Store::audit_entries`] returns.
pub const MAX_ENTRY_PAGE: u32 = 10_000;

/// One entry as stored, with the leaf hash stored beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// The entry's columns. A `prev` column that is not a hash reads as the all-zero hash, which
    /// no entry has, so the damage shows as a broken link.
    pub entry: Entry,
    /// The stored leaf hash; the all-zero hash when the column is not a hash.
    pub leaf_hash: Hash,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// Row ID (increasing).
    pub id: i64,
    /// Entries it covers.
    pub size: u64,
    /// Root hash, lowercase hex.
    pub root: String,
    /// The C2SP signed note.
    pub note: String,
    /// The key that signed it.
    pub key_id: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

impl AuditCheckpoint {
    /// The form `tufa_audit::verify::LogVerifier` reads.
    pub fn stored(&self) -> StoredCheckpoint {
        StoredCheckpoint { size: self.size, note: self.note.clone() }
    }
}

fn read_time(micros: i64, column: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Internal(format!("column {column} holds an out-of-range time {micros}")))
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    time: i64,
    kind: String,
    gun: Option<String>,
    principal: Option<String>,
    address: Option<String>,
    request_id: Option<String>,
    details: String,
    prev: Option<String>,
    leaf_hash: String,
}

impl EntryRow {
    fn into_stored(self) -> Result<StoredEntry, StoreError> {
        let damaged = Hash([0; 32]);
        Ok(StoredEntry {
            entry: Entry {
                seq: from_db(self.seq, "seq")?,
                time: read_time(self.time, "time")?,
                kind: self.kind,
                gun: self.gun,
                principal: self.principal,
                address: self.address,
                request_id: self.request_id,
                details: self.details,
                prev: self.prev.map(|prev| parse_hash_hex(&prev).unwrap_or(damaged)),
            },
            leaf_hash: parse_hash_hex(&self.leaf_hash).unwrap_or(damaged),
        })
    }
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    id: i64,
    size: i64,
    root: String,
    note: String,
    key_id: String,
    created_at: i64,
}

impl CheckpointRow {
    fn into_checkpoint(self) -> Result<AuditCheckpoint, StoreError> {
        Ok(AuditCheckpoint {
            id: self.id,
            size: from_db(self.size, "size")?,
            root: self.root,
            note: self.note,
            key_id: self.key_id,
            created_at: read_time(self.created_at, "created_at")?,
        })
    }
}

impl Store {
    /// Up to `limit` (at most [`MAX_ENTRY_PAGE`]) log entries after position `after` (from the
    /// first when `None`), in position order.
    pub async fn audit_entries(&self, after: Option<u64>, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        const SQL: &str = "SELECT seq, time, kind, gun, principal, address, request_id, details, prev, leaf_hash \
             FROM signer_audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2";
        let after = match after {
            Some(seq) => to_db(seq)?,
            None => -1,
        };
        let limit = i64::from(limit.min(MAX_ENTRY_PAGE));
        per_dialect!(&self.pool, |pool, _, _, _| {
            let rows: Vec<EntryRow> =
                sqlx::query_as(SQL).bind(after).bind(limit).fetch_all(pool).await.map_err(map_error)?;
            rows.into_iter().map(EntryRow::into_stored).collect()
        })
    }

    /// The log's size, root hash and the current time, read under the log's lock so that a
    /// checkpoint made from them is ordered with every append and every other checkpoint.
    pub async fn audit_tree_head(&self) -> Result<(u64, Hash, DateTime<Utc>), StoreError> {
        per_dialect_write!(&self.pool, |transaction, _, _, _| {
            transaction.lock_log().await?;
            let (size, root) = tree_head(&mut *transaction).await?;
            let time = super::now();
            transaction.commit().await.map_err(map_error)?;
            Ok((size, root, time))
        })
    }

    /// Stores a signed checkpoint.
    pub async fn insert_checkpoint(
        &self,
        size: u64,
        root: &Hash,
        note: &str,
        key_id: &str,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO signer_audit_checkpoints (size, root, note, key_id, created_at) VALUES ($1, $2, $3, $4, $5)";
        let size = to_db(size)?;
        per_dialect!(&self.pool, |pool, _, _, _| {
            sqlx::query(SQL)
                .bind(size)
                .bind(hash_hex(root))
                .bind(note)
                .bind(key_id)
                .bind(created_at.timestamp_micros())
                .execute(pool)
                .await
                .map(drop)
                .map_err(map_error)
        })
    }

    /// The checkpoint of the largest size (the latest of those), if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        const SQL: &str = "SELECT id, size, root, note, key_id, created_at FROM signer_audit_checkpoints \
             ORDER BY size DESC, id DESC LIMIT 1";
        per_dialect!(&self.pool, |pool, _, _, _| {
            let row: Option<CheckpointRow> = sqlx::query_as(SQL).fetch_optional(pool).await.map_err(map_error)?;
            row.map(CheckpointRow::into_checkpoint).transpose()
        })
    }

    /// Every stored checkpoint, in row order.
    pub async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        const SQL: &str = "SELECT id, size, root, note, key_id, created_at FROM signer_audit_checkpoints ORDER BY id";
        per_dialect!(&self.pool, |pool, _, _, _| {
            let rows: Vec<CheckpointRow> = sqlx::query_as(SQL).fetch_all(pool).await.map_err(map_error)?;
            rows.into_iter().map(CheckpointRow::into_checkpoint).collect()
        })
    }

    /// The checkpoint key held by `backend`, or by any backend when `None` (the oldest, should
    /// there be several), if any.
    pub async fn checkpoint_key(&self, backend: Option<&str>) -> Result<Option<KeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signer_keys WHERE role = $1 AND ($2 IS NULL OR backend = $2) ORDER BY created_at, key_id LIMIT 1"
        );
        per_dialect!(&self.pool, |pool, _, key, _| {
            let row =
                sqlx::query(SQL).bind(CHECKPOINT_ROLE).bind(backend).fetch_optional(pool).await.map_err(map_error)?;
            row.as_ref().map(key).transpose()
        })
    }

    /// Records `key` as the checkpoint key of its backend unless another process recorded one
    /// first; returns the key that is now recorded (`key` itself when it was stored). The key's
    /// creation is a `signer.key.create` entry by the signer itself.
    pub async fn insert_checkpoint_key(&self, key: &KeyRecord) -> Result<KeyRecord, StoreError> {
        const EXISTING: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signer_keys WHERE role = $1 AND backend = $2 ORDER BY created_at, key_id LIMIT 1"
        );
        if key.role != CHECKPOINT_ROLE {
            return Err(StoreError::Internal(format!("a checkpoint key must have role {CHECKPOINT_ROLE}")));
        }
        per_dialect_write!(&self.pool, |transaction, time, decode, _| {
            // The log's lock also serialises processes creating the checkpoint key.
            let mut log = Appender::start(&mut *transaction).await?;
            let row = sqlx::query(EXISTING)
                .bind(CHECKPOINT_ROLE)
                .bind(&key.backend)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(map_error)?;
            if let Some(existing) = row.as_ref().map(decode).transpose()? {
                return Ok(existing);
            }
            insert_key_row!(&mut *transaction, key, time)?;
            let entry = super::key_entry(kinds::SIGNER_KEY_CREATE, key, &Actor::signer());
            log.append(&mut *transaction, &entry, super::now()).await?;
            transaction.commit().await.map_err(map_error)?;
            Ok(key.clone())
        })
    }
}
