//! The signer's own database: key metadata (GUN, role, algorithm, public key, the backend's
//! handle, last use), the trail of signatures, and the tamper-evident audit log (entries, the
//! Merkle tree's stored hashes, signed checkpoints; see [`log`] for how appends are serialised).
//! SQLite (a file in the data directory, the default) or PostgreSQL, with forward-only
//! migrations embedded from `migrations/signer/`.
//!
//! Every signature, key creation and key deletion is written in one transaction with its audit
//! entry: there is no such row without its entry.
//!
//! Queries are runtime-checked (`sqlx::query`), written once per dialect.

use std::fmt;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{FromRow as _, Row as _};
use tokio::sync::{mpsc, oneshot};
use tufa_audit::NewEntry;
use tufa_audit::entry::kinds;
use tufa_store::{DatabaseUrl, SqliteLocation, UrlError, is_transient, sqlite_file_options};

/// Name of the migrations bookkeeping table, distinct from sqlx's default so that the signer's
/// schema can share a database with another application (tufa-server uses the default).
pub const MIGRATIONS_TABLE: &str = "_tufa_signer_migrations";

/// Largest page [`Store::sign_events`] returns.
pub const MAX_EVENT_PAGE: u32 = 10_000;

const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite migrations.
pub fn sqlite_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../migrations/signer/sqlite");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    // A binary from the previous release must keep running on a schema migrated by the next.
    migrator.set_ignore_missing(true);
    migrator
}

/// The PostgreSQL migrations.
pub fn postgres_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../migrations/signer/postgres");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    // A binary from the previous release must keep running on a schema migrated by the next.
    migrator.set_ignore_missing(true);
    migrator
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now (connection refused, pool exhausted, locked); a retry
    /// later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else (constraint violations, malformed rows, bad URLs).
    #[error("database error: {0}")]
    Internal(String),
}

impl From<UrlError> for StoreError {
    fn from(error: UrlError) -> Self {
        StoreError::Internal(error.to_string())
    }
}

/// Maps a database error with the store's one classification ([`tufa_store::is_transient`]).
fn map_error(error: sqlx::Error) -> StoreError {
    if is_transient(&error) {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Internal(error.to_string())
    }
}

/// One key as the signer records it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// TUF key ID (lower-case hex SHA-256 of the key object).
    pub key_id: String,
    /// The GUN the key was created for.
    pub gun: String,
    /// The role the key was created for.
    pub role: String,
    /// `ecdsa` or `ed25519`.
    pub algorithm: String,
    /// Raw public key bytes (ECDSA: DER SubjectPublicKeyInfo; Ed25519: 32 bytes).
    pub public: Vec<u8>,
    /// The backend holding the private key (`software`, `pkcs11`).
    pub backend: String,
    /// What the backend needs to use the key (sealed PKCS#8, token object ID). Never plaintext.
    pub handle: Vec<u8>,
    /// The KEK that sealed `handle` (software) or the backend's label.
    pub sealed_with: String,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When the key last signed; `None` if it never has.
    pub last_used: Option<DateTime<Utc>>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KeyRecord")
            .field("key_id", &self.key_id)
            .field("gun", &self.gun)
            .field("role", &self.role)
            .field("algorithm", &self.algorithm)
            .field("backend", &self.backend)
            .field("handle_len", &self.handle.len())
            .field("sealed_with", &self.sealed_with)
            .field("created_at", &self.created_at)
            .field("last_used", &self.last_used)
            .finish()
    }
}

/// Who asked for a change and from where, as the audit log records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The authenticated principal: the client certificate's subject, or `tufa-signer` itself.
    pub principal: Option<String>,
    /// The client's network address, if known.
    pub address: Option<String>,
    /// The gRPC request ID, if the client sent one.
    pub request_id: Option<String>,
}

impl Actor {
    /// The signer itself (its own checkpoint key, maintenance commands).
    pub fn signer() -> Actor {
        Actor { principal: Some(SIGNER_PRINCIPAL.to_owned()), address: None, request_id: None }
    }
}

/// The principal the signer records for what it does on its own behalf.
pub const SIGNER_PRINCIPAL: &str = "tufa-signer";

/// A signature about to be recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignEvent {
    /// The key that signed.
    pub key_id: String,
    /// The key's GUN.
    pub gun: String,
    /// The key's role.
    pub role: String,
    /// The key's algorithm (`ecdsa`, `ed25519`).
    pub algorithm: String,
    /// Subject DN of the client certificate that asked for the signature.
    pub client_subject: String,
    /// Lower-case hex SHA-256 of the signed payload.
    pub payload_sha256: String,
    /// The client's network address, if known.
    pub address: Option<String>,
    /// The gRPC request ID, if the client sent one.
    pub request_id: Option<String>,
}

/// One recorded signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignEvent {
    /// Position in the trail (increasing).
    pub id: i64,
    /// The key that signed.
    pub key_id: String,
    /// The key's GUN.
    pub gun: String,
    /// The key's role.
    pub role: String,
    /// Subject DN of the requesting client certificate.
    pub client_subject: String,
    /// Lower-case hex SHA-256 of the signed payload.
    pub payload_sha256: String,
    /// When the signature was made.
    pub created_at: DateTime<Utc>,
    /// The position of the signature's entry in the audit log (`None` only for a signature a
    /// previous release recorded and not yet appended to the log).
    pub audit_seq: Option<i64>,
}

/// Which audit events to list: all filters combine; results are ordered by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events of this key.
    pub key_id: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events with a larger `id` (the paging cursor: the last `id` of the previous page).
    pub after_id: Option<i64>,
    /// Page size, at most [`MAX_EVENT_PAGE`].
    pub limit: u32,
}

impl Default for EventFilter {
    fn default() -> Self {
        EventFilter { key_id: None, since: None, until: None, after_id: None, limit: 100 }
    }
}

/// The database dialect behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// PostgreSQL binds times natively (SQLite's counterpart is [`sqlite_time`]).
fn postgres_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time
}

/// Runs one query body against whichever pool is open. sqlx's pools are different types, so the
/// body is written once and instantiated per dialect, with `$time` bound to that dialect's time
/// encoder and `$key`/`$event` to its row decoders.
macro_rules! per_dialect {
    ($pool:expr, |$conn:ident, $time:pat_param, $key:pat_param, $event:pat_param| $body:expr) => {
        match $pool {
            Pool::Sqlite($conn) => {
                let ($time, $key, $event) = (sqlite_time, sqlite_key, sqlite_event);
                $body
            }
            Pool::Postgres($conn) => {
                let ($time, $key, $event) = (postgres_time, postgres_key, postgres_event);
                $body
            }
        }
    };
}

/// Runs `$body` inside a write transaction `$tx` on whichever pool is open: `BEGIN IMMEDIATE` on
/// SQLite (the database's one write lock, taken up front, so that two writers never deadlock on
/// upgrading a read lock), a plain transaction on PostgreSQL (whose appends to the log take the
/// log's advisory lock). The body commits; a body that returns early rolls back.
macro_rules! per_dialect_write {
    ($pool:expr, |$tx:ident, $time:pat_param, $key:pat_param, $event:pat_param| $body:expr) => {
        match $pool {
            Pool::Sqlite(pool) => {
                let ($time, $key, $event) = (sqlite_time, sqlite_key, sqlite_event);
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_error)?;
                $body
            }
            Pool::Postgres(pool) => {
                let ($time, $key, $event) = (postgres_time, postgres_key, postgres_event);
                let mut $tx = pool.begin().await.map_err(map_error)?;
                $body
            }
        }
    };
}

/// The signer's database.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The group-commit writer for sign events, started on first use.
    audit: Arc<OnceLock<mpsc::Sender<AuditJob>>>,
}

/// Most sign events one audit transaction holds.
const AUDIT_BATCH: usize = 256;

/// One sign event waiting for the audit writer, and where to send its outcome.
struct AuditJob {
    event: NewSignEvent,
    reply: oneshot::Sender<Result<SignEvent, StoreError>>,
}

/// Writes queued sign events in batches: each batch is one transaction, and every caller is
/// answered only after its event and its audit log entry have committed. A failed batch is
/// retried event by event, so one bad event cannot fail the others.
async fn audit_writer(pool: Pool, mut jobs: mpsc::Receiver<AuditJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < AUDIT_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let events: Vec<&NewSignEvent> = batch.iter().map(|job| &job.event).collect();
        match write_sign_events(&pool, &events).await {
            Ok(stored) => {
                for (job, event) in batch.into_iter().zip(stored) {
                    let _ = job.reply.send(Ok(event));
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(error));
                }
            }
            Err(_) => {
                for job in batch {
                    let result = write_sign_events(&pool, &[&job.event]).await.and_then(|mut stored| {
                        stored.pop().ok_or_else(|| StoreError::Internal("the audit write returned no event".into()))
                    });
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// The audit entry of a signature recorded as sign event `id`.
fn sign_entry(event: &NewSignEvent, id: i64, algorithm: Option<&str>) -> NewEntry {
    NewEntry::new(
        kinds::SIGN,
        serde_json::json!({
            "event_id": id,
            "key_id": event.key_id,
            "gun": event.gun,
            "role": event.role,
            "algorithm": algorithm,
            "client_subject": event.client_subject,
            "payload_sha256": event.payload_sha256,
        }),
    )
    .gun(&event.gun)
    .by(Some(&event.client_subject))
    .from_request(event.address.as_deref(), event.request_id.as_deref())
}

/// The audit entry of a key created or deleted (`kind`).
fn key_entry(kind: &str, key: &KeyRecord, actor: &Actor) -> NewEntry {
    NewEntry::new(
        kind,
        serde_json::json!({
            "key_id": key.key_id,
            "gun": key.gun,
            "role": key.role,
            "algorithm": key.algorithm,
            "backend": key.backend,
        }),
    )
    .gun(&key.gun)
    .by(actor.principal.as_deref())
    .from_request(actor.address.as_deref(), actor.request_id.as_deref())
}

/// Appends sign events with their audit log entries and sets their keys' `last_used`, all in
/// one transaction.
async fn write_sign_events(pool: &Pool, events: &[&NewSignEvent]) -> Result<Vec<SignEvent>, StoreError> {
    const MARK: &str = "UPDATE signer_keys SET last_used = $2 WHERE key_id = $1";
    const INSERT: &str = "INSERT INTO signer_sign_events \
         (key_id, gun, role, client_subject, payload_sha256, created_at, audit_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
    let mut stored = Vec::with_capacity(events.len());
    per_dialect_write!(pool, |transaction, time, _, _| {
        let mut log = log::Appender::start(&mut *transaction).await?;
        for event in events {
            let at = now();
            sqlx::query(MARK).bind(&event.key_id).bind(time(at)).execute(&mut *transaction).await.map_err(map_error)?;
            let seq = log.next_seq();
            let row = sqlx::query(INSERT)
                .bind(&event.key_id)
                .bind(&event.gun)
                .bind(&event.role)
                .bind(&event.client_subject)
                .bind(&event.payload_sha256)
                .bind(time(at))
                .bind(log::to_db(seq)?)
                .fetch_one(&mut *transaction)
                .await
                .map_err(map_error)?;
            let id: i64 = row.try_get("id").map_err(map_error)?;
            let entry = log.append(&mut *transaction, &sign_entry(event, id, Some(&event.algorithm)), at).await?;
            stored.push(stored_event(event, id, at, entry.seq)?);
        }
        transaction.commit().await.map_err(map_error)?;
    });
    Ok(stored)
}

fn stored_event(event: &NewSignEvent, id: i64, at: DateTime<Utc>, seq: u64) -> Result<SignEvent, StoreError> {
    Ok(SignEvent {
        id,
        key_id: event.key_id.clone(),
        gun: event.gun.clone(),
        role: event.role.clone(),
        client_subject: event.client_subject.clone(),
        payload_sha256: event.payload_sha256.clone(),
        created_at: at,
        audit_seq: Some(log::to_db(seq)?),
    })
}

impl fmt::Debug for Store {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Store").field("dialect", &self.dialect()).finish()
    }
}

/// SQLite timestamps: fixed-width UTC text, so that text order is time order.
fn sqlite_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_sqlite_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| StoreError::Internal(format!("malformed timestamp {text:?} in the database")))
}

/// Now, truncated to microseconds (the precision both dialects keep).
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The `signer_keys` columns every key query selects, in [`KeyRecord`] order.
macro_rules! key_columns {
    () => {
        "key_id, gun, role, algorithm, public, backend, handle, sealed_with, created_at, last_used"
    };
}

/// Inserts a `signer_keys` row for `$key` through `$executor`, with times encoded by `$time`.
macro_rules! insert_key_row {
    ($executor:expr, $key:expr, $time:expr) => {
        sqlx::query(
            "INSERT INTO signer_keys \
             (key_id, gun, role, algorithm, public, backend, handle, sealed_with, created_at, last_used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(&$key.key_id)
        .bind(&$key.gun)
        .bind(&$key.role)
        .bind(&$key.algorithm)
        .bind(&$key.public)
        .bind(&$key.backend)
        .bind(&$key.handle)
        .bind(&$key.sealed_with)
        .bind($time($key.created_at))
        .execute($executor)
        .await
        .map(drop)
        .map_err(map_error)
    };
}

// After the macros above, which it uses.
mod log;

pub use log::{AuditCheckpoint, CHECKPOINT_ROLE, MAX_ENTRY_PAGE, StoredEntry};

impl Store {
    /// Connects to `url` (see [`DatabaseUrl::parse`] for the forms). SQLite files are created
    /// when missing; `sqlite::memory:` is one in-memory database that lives as long as the store.
    pub async fn connect(url: &DatabaseUrl) -> Result<Store, StoreError> {
        match url.sqlite_location() {
            Some(SqliteLocation::File(path)) => Store::open_sqlite_file(path).await,
            Some(SqliteLocation::Memory) => {
                // A private in-memory database exists only on its one connection, which the pool
                // must therefore never close.
                let pool = SqlitePoolOptions::new()
                    .min_connections(1)
                    .max_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
                    .connect_with(SqliteConnectOptions::new().in_memory(true).foreign_keys(true))
                    .await
                    .map_err(map_error)?;
                Ok(Store { pool: Pool::Sqlite(pool), audit: Arc::default() })
            }
            None => {
                let options = PgConnectOptions::from_str(url.expose()).map_err(|error| {
                    StoreError::Internal(format!("invalid PostgreSQL URL {url}: {}", url.scrub(&error.to_string())))
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(|error| match map_error(error) {
                        StoreError::Unavailable(message) => {
                            StoreError::Unavailable(format!("PostgreSQL at {url}: {}", url.scrub(&message)))
                        }
                        StoreError::Internal(message) => {
                            StoreError::Internal(format!("PostgreSQL at {url}: {}", url.scrub(&message)))
                        }
                    })?;
                Ok(Store { pool: Pool::Postgres(pool), audit: Arc::default() })
            }
        }
    }

    /// Opens the SQLite database file at `path`, creating it owner-only (0600) when missing.
    pub async fn open_sqlite_file(path: &Path) -> Result<Store, StoreError> {
        let options =
            sqlite_file_options(path).map_err(|error| StoreError::Unavailable(format!("SQLite database: {error}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(map_error)?;
        Ok(Store { pool: Pool::Sqlite(pool), audit: Arc::default() })
    }

    /// Wraps an existing SQLite pool (tests).
    pub fn from_sqlite_pool(pool: SqlitePool) -> Store {
        Store { pool: Pool::Sqlite(pool), audit: Arc::default() }
    }

    /// Wraps an existing PostgreSQL pool (tests).
    pub fn from_postgres_pool(pool: PgPool) -> Store {
        Store { pool: Pool::Postgres(pool), audit: Arc::default() }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let result = match &self.pool {
            Pool::Sqlite(pool) => sqlite_migrator().run(pool).await,
            Pool::Postgres(pool) => postgres_migrator().run(pool).await,
        };
        result.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(inner) => map_error(inner),
            other => StoreError::Internal(format!("migration failed: {other}")),
        })?;
        let appended = self.backfill_log().await?;
        if appended > 0 {
            tracing::info!(entries = appended, "signatures recorded before the audit log appended to it");
        }
        Ok(())
    }

    /// Appends an entry for every sign event that has none (those a release before the audit
    /// log recorded), in `id` order, with the event's own time and its client subject as the
    /// principal. Returns how many were appended.
    pub async fn backfill_log(&self) -> Result<u64, StoreError> {
        const SELECT: &str = "SELECT e.id, e.key_id, e.gun, e.role, e.client_subject, e.payload_sha256, \
             e.created_at, e.audit_seq, k.algorithm \
             FROM signer_sign_events e LEFT JOIN signer_keys k ON k.key_id = e.key_id \
             WHERE e.audit_seq IS NULL ORDER BY e.id LIMIT 500";
        const MARK: &str = "UPDATE signer_sign_events SET audit_seq = $2 WHERE id = $1";
        let mut appended = 0u64;
        loop {
            let count = per_dialect_write!(&self.pool, |transaction, _, _, event| {
                let mut log = log::Appender::start(&mut *transaction).await?;
                let rows = sqlx::query(SELECT).fetch_all(&mut *transaction).await.map_err(map_error)?;
                for row in &rows {
                    let old = event(row)?;
                    let algorithm: Option<String> = row.try_get("algorithm").map_err(map_error)?;
                    // The algorithm is that of the key, unknown (null) when it was deleted since.
                    let new = NewSignEvent {
                        key_id: old.key_id,
                        gun: old.gun,
                        role: old.role,
                        algorithm: algorithm.clone().unwrap_or_default(),
                        client_subject: old.client_subject,
                        payload_sha256: old.payload_sha256,
                        address: None,
                        request_id: None,
                    };
                    let entry = sign_entry(&new, old.id, algorithm.as_deref());
                    let stored = log.append(&mut *transaction, &entry, old.created_at).await?;
                    sqlx::query(MARK)
                        .bind(old.id)
                        .bind(log::to_db(stored.seq)?)
                        .execute(&mut *transaction)
                        .await
                        .map_err(map_error)?;
                }
                transaction.commit().await.map_err(map_error)?;
                rows.len()
            });
            if count == 0 {
                return Ok(appended);
            }
            appended += u64::try_from(count).unwrap_or(u64::MAX);
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
        .map_err(map_error)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// Records a new key with its `signer.key.create` audit entry, in one transaction.
    /// `last_used` is ignored (a new key has never signed).
    pub async fn insert_key(&self, key: &KeyRecord, actor: &Actor) -> Result<(), StoreError> {
        per_dialect_write!(&self.pool, |transaction, time, _, _| {
            let mut log = log::Appender::start(&mut *transaction).await?;
            insert_key_row!(&mut *transaction, key, time)?;
            log.append(&mut *transaction, &key_entry(kinds::SIGNER_KEY_CREATE, key, actor), now()).await?;
            transaction.commit().await.map_err(map_error)
        })
    }

    /// The key with ID `key_id`.
    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", key_columns!(), " FROM signer_keys WHERE key_id = $1");
        per_dialect!(&self.pool, |pool, _, key, _| {
            let row = sqlx::query(SQL).bind(key_id).fetch_optional(pool).await.map_err(map_error)?;
            row.as_ref().map(key).transpose()
        })
    }

    /// The never-used key with the lowest ID for this GUN, role, algorithm and backend.
    pub async fn unused_key(
        &self,
        gun: &str,
        role: &str,
        algorithm: &str,
        backend: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signer_keys \
             WHERE gun = $1 AND role = $2 AND algorithm = $3 AND backend = $4 AND last_used IS NULL \
             ORDER BY key_id LIMIT 1"
        );
        per_dialect!(&self.pool, |pool, _, key, _| {
            let row = sqlx::query(SQL)
                .bind(gun)
                .bind(role)
                .bind(algorithm)
                .bind(backend)
                .fetch_optional(pool)
                .await
                .map_err(map_error)?;
            row.as_ref().map(key).transpose()
        })
    }

    /// Sets the key's `last_used` to `at`. Returns whether the key exists.
    pub async fn mark_used(&self, key_id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE signer_keys SET last_used = $2 WHERE key_id = $1";
        let rows = per_dialect!(&self.pool, |pool, time, _, _| {
            sqlx::query(SQL).bind(key_id).bind(time(at)).execute(pool).await.map(|done| done.rows_affected())
        })
        .map_err(map_error)?;
        Ok(rows > 0)
    }

    /// Records a signature: appends the audit event and sets the key's `last_used`. Concurrent
    /// calls share one transaction (group commit); each returns only once its event has committed.
    pub async fn record_signature(&self, event: &NewSignEvent) -> Result<SignEvent, StoreError> {
        let sender = self.audit.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(4 * AUDIT_BATCH);
            tokio::spawn(audit_writer(self.pool.clone(), receiver));
            sender
        });
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the audit writer has stopped".to_owned());
        sender.send(AuditJob { event: event.clone(), reply }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Deletes a key and appends its `signer.key.delete` audit entry, in one transaction.
    /// Returns whether it existed (nothing is written when it did not).
    pub async fn delete_key(&self, key_id: &str, actor: &Actor) -> Result<bool, StoreError> {
        const SQL: &str = concat!("DELETE FROM signer_keys WHERE key_id = $1 RETURNING ", key_columns!());
        per_dialect_write!(&self.pool, |transaction, _, key, _| {
            let mut log = log::Appender::start(&mut *transaction).await?;
            let row = sqlx::query(SQL).bind(key_id).fetch_optional(&mut *transaction).await.map_err(map_error)?;
            let Some(record) = row.as_ref().map(key).transpose()? else {
                return Ok(false);
            };
            log.append(&mut *transaction, &key_entry(kinds::SIGNER_KEY_DELETE, &record, actor), now()).await?;
            transaction.commit().await.map_err(map_error)?;
            Ok(true)
        })
    }

    /// Audit events matching `filter`, in `id` order.
    pub async fn sign_events(&self, filter: &EventFilter) -> Result<Vec<SignEvent>, StoreError> {
        const SQL: &str = "SELECT id, key_id, gun, role, client_subject, payload_sha256, created_at, audit_seq \
             FROM signer_sign_events \
             WHERE ($1 IS NULL OR key_id = $1) \
               AND ($2 IS NULL OR created_at >= $2) \
               AND ($3 IS NULL OR created_at < $3) \
               AND id > $4 \
             ORDER BY id LIMIT $5";
        let limit = i64::from(filter.limit.min(MAX_EVENT_PAGE));
        let after = filter.after_id.unwrap_or(0);
        per_dialect!(&self.pool, |pool, time, _, event| {
            let rows = sqlx::query(SQL)
                .bind(filter.key_id.as_deref())
                .bind(filter.since.map(time))
                .bind(filter.until.map(time))
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(map_error)?;
            rows.iter().map(event).collect()
        })
    }

    /// Up to `limit` keys of `backend` sealed with a KEK other than `active`, in key ID order
    /// after `after_key_id` (for re-sealing in batches).
    pub async fn keys_sealed_with_other(
        &self,
        backend: &str,
        active: &str,
        after_key_id: &str,
        limit: u32,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signer_keys WHERE backend = $1 AND sealed_with <> $2 AND key_id > $3 \
             ORDER BY key_id LIMIT $4"
        );
        let limit = i64::from(limit);
        per_dialect!(&self.pool, |pool, _, key, _| {
            let rows = sqlx::query(SQL)
                .bind(backend)
                .bind(active)
                .bind(after_key_id)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(map_error)?;
            rows.iter().map(key).collect()
        })
    }

    /// The distinct KEK names (`sealed_with`) of the keys of `backend`, in ascending order.
    pub async fn sealed_with_names(&self, backend: &str) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT DISTINCT sealed_with FROM signer_keys WHERE backend = $1 ORDER BY sealed_with";
        per_dialect!(&self.pool, |pool, _, _, _| {
            sqlx::query_scalar(SQL).bind(backend).fetch_all(pool).await.map_err(map_error)
        })
    }

    /// The key of `backend` with the lowest ID among those sealed with KEK `name`, if any.
    pub async fn key_sealed_with(&self, backend: &str, name: &str) -> Result<Option<KeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM signer_keys WHERE backend = $1 AND sealed_with = $2 ORDER BY key_id LIMIT 1"
        );
        per_dialect!(&self.pool, |pool, _, key, _| {
            let row = sqlx::query(SQL).bind(backend).bind(name).fetch_optional(pool).await.map_err(map_error)?;
            row.as_ref().map(key).transpose()
        })
    }

    /// Replaces a key's handle, but only if it still is `old_handle` (so a concurrent change is
    /// never overwritten). Returns whether the row changed.
    pub async fn replace_handle(
        &self,
        key_id: &str,
        old_handle: &[u8],
        new_handle: &[u8],
        sealed_with: &str,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE signer_keys SET handle = $3, sealed_with = $4 WHERE key_id = $1 AND handle = $2";
        let rows = per_dialect!(&self.pool, |pool, _, _, _| {
            sqlx::query(SQL)
                .bind(key_id)
                .bind(old_handle)
                .bind(new_handle)
                .bind(sealed_with)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(map_error)?;
        Ok(rows > 0)
    }
}

/// How a dialect stores a time: SQLite as fixed-width RFC 3339 text, PostgreSQL as `timestamptz`.
trait StoredTime {
    fn into_time(self) -> Result<DateTime<Utc>, StoreError>;
}

impl StoredTime for String {
    fn into_time(self) -> Result<DateTime<Utc>, StoreError> {
        parse_sqlite_time(&self)
    }
}

impl StoredTime for DateTime<Utc> {
    fn into_time(self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self)
    }
}

/// A `signer_keys` row, with times in the dialect's storage type `T`.
#[derive(sqlx::FromRow)]
struct KeyRow<T> {
    key_id: String,
    gun: String,
    role: String,
    algorithm: String,
    public: Vec<u8>,
    backend: String,
    handle: Vec<u8>,
    sealed_with: String,
    created_at: T,
    last_used: Option<T>,
}

impl<T: StoredTime> KeyRow<T> {
    fn into_record(self) -> Result<KeyRecord, StoreError> {
        Ok(KeyRecord {
            key_id: self.key_id,
            gun: self.gun,
            role: self.role,
            algorithm: self.algorithm,
            public: self.public,
            backend: self.backend,
            handle: self.handle,
            sealed_with: self.sealed_with,
            created_at: self.created_at.into_time()?,
            last_used: self.last_used.map(StoredTime::into_time).transpose()?,
        })
    }
}

/// A `signer_sign_events` row, with its time in the dialect's storage type `T`.
#[derive(sqlx::FromRow)]
struct EventRow<T> {
    id: i64,
    key_id: String,
    gun: String,
    role: String,
    client_subject: String,
    payload_sha256: String,
    created_at: T,
    audit_seq: Option<i64>,
}

impl<T: StoredTime> EventRow<T> {
    fn into_event(self) -> Result<SignEvent, StoreError> {
        Ok(SignEvent {
            id: self.id,
            key_id: self.key_id,
            gun: self.gun,
            role: self.role,
            client_subject: self.client_subject,
            payload_sha256: self.payload_sha256,
            created_at: self.created_at.into_time()?,
            audit_seq: self.audit_seq,
        })
    }
}

fn sqlite_key(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    KeyRow::<String>::from_row(row).map_err(map_error)?.into_record()
}

fn postgres_key(row: &PgRow) -> Result<KeyRecord, StoreError> {
    KeyRow::<DateTime<Utc>>::from_row(row).map_err(map_error)?.into_record()
}

fn sqlite_event(row: &SqliteRow) -> Result<SignEvent, StoreError> {
    EventRow::<String>::from_row(row).map_err(map_error)?.into_event()
}

fn postgres_event(row: &PgRow) -> Result<SignEvent, StoreError> {
    EventRow::<DateTime<Utc>>::from_row(row).map_err(map_error)?.into_event()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_are_fixed_width_and_round_trip() {
        let whole = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let fractional = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(sqlite_time(whole), "2023-11-14T22:13:20.000000Z");
        assert_eq!(sqlite_time(fractional), "2023-11-14T22:13:20.123456Z");
        assert!(sqlite_time(whole) < sqlite_time(fractional));
        assert_eq!(parse_sqlite_time(&sqlite_time(fractional)).unwrap(), fractional);
        assert_eq!(
            parse_sqlite_time("yesterday").unwrap_err().to_string(),
            StoreError::Internal(r#"malformed timestamp "yesterday" in the database"#.to_owned()).to_string()
        );
    }

    /// Concurrent signs share audit transactions, yet each caller gets its own committed event.
    #[tokio::test]
    async fn concurrent_sign_events_are_group_committed_and_all_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_file(&dir.path().join("signer.db")).await.unwrap();
        store.migrate().await.unwrap();
        let mut tasks = Vec::new();
        for index in 0..64_u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let event = NewSignEvent {
                    key_id: format!("{index:064x}"),
                    gun: "example.com/app".into(),
                    role: "timestamp".into(),
                    algorithm: "ecdsa".into(),
                    client_subject: "CN=tufa-server".into(),
                    payload_sha256: format!("{:064x}", index + 1000),
                    address: None,
                    request_id: None,
                };
                let stored = store.record_signature(&event).await.unwrap();
                assert_eq!((stored.key_id, stored.payload_sha256), (event.key_id, event.payload_sha256));
                (stored.id, stored.audit_seq.unwrap())
            }));
        }
        let mut ids = Vec::new();
        let mut seqs = Vec::new();
        for task in tasks {
            let (id, seq) = task.await.unwrap();
            ids.push(id);
            seqs.push(seq);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 64, "every caller got its own event");
        seqs.sort_unstable();
        assert_eq!(seqs, (0..64).collect::<Vec<i64>>(), "every event has its own log position, without gaps");
        let recorded = store.sign_events(&EventFilter { limit: 1000, ..EventFilter::default() }).await.unwrap();
        assert_eq!(recorded.len(), 64, "every event committed");
        let entries = store.audit_entries(None, 1000).await.unwrap();
        assert_eq!(entries.len(), 64, "every event has its log entry");
        for event in &recorded {
            let entry = &entries[usize::try_from(event.audit_seq.unwrap()).unwrap()].entry;
            let details: serde_json::Value = serde_json::from_str(&entry.details).unwrap();
            assert_eq!(entry.kind, "sign");
            assert_eq!(details["event_id"], event.id);
            assert_eq!(details["payload_sha256"], event.payload_sha256.as_str());
        }
    }

    /// The signer's database file and SQLite's `-wal`/`-shm` files are owner-only.
    #[tokio::test]
    async fn sqlite_files_are_created_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_file(&dir.path().join("tufa-signer.db")).await.unwrap();
        store.migrate().await.unwrap();
        assert!(!store.mark_used(&"0".repeat(64), now()).await.unwrap(), "no such key");
        for name in ["tufa-signer.db", "tufa-signer.db-wal", "tufa-signer.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        store.close().await;
    }

    /// A real SQLite busy error is transient (the old copy of the classification missed the
    /// extended codes); a constraint violation is not.
    #[tokio::test]
    async fn sqlite_busy_is_unavailable() {
        use sqlx::{Connection as _, Executor as _};
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut first = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        first.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").await.unwrap();
        first.execute("INSERT INTO t VALUES (1)").await.unwrap();
        let duplicate = first.execute("INSERT INTO t VALUES (1)").await.unwrap_err();
        assert!(matches!(map_error(duplicate), StoreError::Internal(_)));
        first.execute("BEGIN IMMEDIATE").await.unwrap();
        let mut second = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        let busy = second.execute("BEGIN IMMEDIATE").await.unwrap_err();
        let message = busy.to_string();
        match map_error(busy) {
            StoreError::Unavailable(text) => assert_eq!(text, message),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn connection_failures_are_unavailable() {
        assert!(matches!(map_error(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        assert!(matches!(map_error(sqlx::Error::RowNotFound), StoreError::Internal(_)));
    }
}
