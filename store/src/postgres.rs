//! The PostgreSQL dialect: connecting and the few statements that differ from SQLite. The
//! queries themselves are in `sql.rs`.
//!
//! Writes to one GUN are serialised with a transaction-scoped advisory lock on a hash of the
//! GUN. Changefeed inserts are additionally serialised across all GUNs with a second
//! advisory lock taken just before the insert and held until commit: identity values are
//! handed out in call order but become visible in commit order, and without the lock a
//! reader paging by id could skip a record that committed late. Batches use array
//! parameters (`ANY`, `UNNEST`) and times are native `timestamptz`.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Pool};

use crate::error::{from_migrate, from_sqlx};
use crate::sql::{Dialect, FileRow, Pools, Tx, UpdateReadRow, UpdateReads, current_join, file_columns, update_reads};
use crate::validate::{dangling_pointer, to_micros};
use crate::{CurrentEntry, DatabaseUrl, NewFile, StoreError, TIMESTAMP_ROLE};

/// How long a caller waits for a pooled connection (or for a new one to be opened) before
/// the store reports [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long `open` spends finding out why the server could not be reached.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Upper bound on pooled connections.
const MAX_CONNECTIONS: u32 = 16;

/// The two-key advisory lock that serialises changefeed inserts ("tufa", 1). Two-key locks
/// live in a different key space from the one-key per-GUN locks.
const CHANGEFEED_LOCK: (i32, i32) = (0x7475_6661, 1);

/// The two-key advisory lock that serialises writes to `token_keys` ("tufa", 2).
const TOKEN_KEYS_LOCK: (i32, i32) = (0x7475_6661, 2);

/// The advisory lock that serialises audit appends (positions and links) across processes.
const AUDIT_LOCK: (i32, i32) = (0x7475_6661, 3);

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../migrations/server/postgres");
    // A binary from the previous release must keep running on a schema migrated by the next.
    migrator.set_ignore_missing(true);
    migrator
}

/// The PostgreSQL [`Dialect`].
pub(crate) struct Postgres;

/// Connects, runs the embedded migrations and returns the pool.
pub(crate) async fn open(url: &DatabaseUrl) -> Result<Pools, StoreError> {
    // Drivers sometimes quote the URL they failed on: name the server, never its password.
    let context =
        |error: StoreError| error.map_message(|message| format!("PostgreSQL at {url}: {}", url.scrub(&message)));
    let options = PgConnectOptions::from_str(url.expose()).map_err(|error| {
        StoreError::Internal(format!("invalid PostgreSQL URL {url}: {}", url.scrub(&error.to_string())))
    })?;
    let connected = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection left inside a transaction (a COMMIT that failed) is closed, not reused.
        .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
        .connect_with(options.clone())
        .await;
    let pool = match connected {
        Ok(pool) => pool,
        Err(sqlx::Error::PoolTimedOut) => {
            // The pool retries refused connections until its deadline and then only says
            // "timed out"; one direct attempt tells the operator why.
            let cause = match tokio::time::timeout(DIAGNOSE_TIMEOUT, PgConnection::connect_with(&options)).await {
                Ok(Err(error)) => error.to_string(),
                Ok(Ok(connection)) => {
                    let _ = connection.close().await;
                    "the server answers now; it did not before".into()
                }
                Err(_) => "no answer".into(),
            };
            let seconds = ACQUIRE_TIMEOUT.as_secs();
            return Err(context(StoreError::Unavailable(format!("no connection within {seconds} s: {cause}"))));
        }
        Err(error) => return Err(context(from_sqlx(error))),
    };
    migrator().run(&pool).await.map_err(|error| context(from_migrate(error)))?;
    tracing::info!(backend = "postgres", database = %url, "store opened, schema up to date");
    Ok(Pools::Postgres(pool))
}

impl Dialect for Postgres {
    const NAME: &'static str = "postgres";
    const BATCH_AS_CTES: bool = true;
    const UNINDEXED: &'static str = "";
    type Db = sqlx::Postgres;
    type Pools = PgPool;
    type Time = DateTime<Utc>;

    /// `timestamptz` keeps microseconds; truncating here makes what is written what is read.
    fn time(time: DateTime<Utc>) -> DateTime<Utc> {
        to_micros(time)
    }

    fn read_time(value: DateTime<Utc>, _column: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(value)
    }

    fn reader(pool: &PgPool) -> &Pool<sqlx::Postgres> {
        pool
    }

    fn writer(pool: &PgPool) -> &Pool<sqlx::Postgres> {
        pool
    }

    /// Takes the GUN's advisory lock for the rest of the transaction.
    async fn begin_for_gun(pool: &PgPool, gun: &str) -> Result<Tx<Postgres>, StoreError> {
        let mut tx = pool.begin().await.map_err(from_sqlx)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(gun)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        Ok(tx)
    }

    /// A plain transaction; row locks and constraints do the rest.
    async fn begin_write(pool: &PgPool) -> Result<Tx<Postgres>, StoreError> {
        pool.begin().await.map_err(from_sqlx)
    }

    async fn lock_token_keys(tx: &mut Tx<Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(TOKEN_KEYS_LOCK.0)
            .bind(TOKEN_KEYS_LOCK.1)
            .execute(&mut **tx)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn lock_changefeed(tx: &mut Tx<Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(CHANGEFEED_LOCK.0)
            .bind(CHANGEFEED_LOCK.1)
            .execute(&mut **tx)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn lock_audit(tx: &mut Tx<Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(AUDIT_LOCK.0)
            .bind(AUDIT_LOCK.1)
            .execute(&mut **tx)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn current_many(pool: &PgPool, gun: &str, roles: &[&str]) -> Result<Vec<FileRow<Postgres>>, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            current_join!(),
            "WHERE c.gun = $1 AND c.role = ANY($2) ORDER BY c.role"
        ))
        .bind(gun)
        .bind(roles)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)
    }

    /// The audit lock, then one statement: the newest version of each file's role, the stored
    /// timestamp's version and the log's last entry, as rows of (what, role, version, leaf hash).
    /// The statement runs after the lock is granted, so it sees every append committed before.
    async fn prepare_update(tx: &mut Tx<Postgres>, gun: &str, files: &[NewFile]) -> Result<UpdateReads, StoreError> {
        Self::lock_audit(tx).await?;
        let roles: Vec<&str> = files.iter().map(|file| file.role.as_str()).collect();
        // One MAX per role, correlated: each is a single backward step on the primary key, where
        // `role = ANY(...) GROUP BY role` would read every version of every role (one per publish).
        let rows: Vec<UpdateReadRow> = sqlx::query_as(
            "SELECT 0::bigint, wanted.role, (SELECT MAX(f.version) FROM tuf_files f WHERE f.gun = $1 AND f.role = wanted.role), \
             NULL::text FROM UNNEST($2::text[]) AS wanted (role) \
             UNION ALL SELECT 1, NULL, (SELECT version FROM current_files WHERE gun = $1 AND role = $3), NULL \
             UNION ALL (SELECT 2, NULL, seq, leaf_hash FROM audit_log ORDER BY seq DESC LIMIT 1)",
        )
        .bind(gun)
        .bind(&roles)
        .bind(TIMESTAMP_ROLE)
        .fetch_all(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        update_reads(files, rows)
    }

    /// One statement for the whole set: it inserts every pointer whose file exists and returns
    /// the first one whose file does not (the caller then drops the transaction).
    async fn set_current(tx: &mut Tx<Postgres>, gun: &str, current: &[CurrentEntry]) -> Result<(), StoreError> {
        if current.is_empty() {
            return Ok(());
        }
        let roles: Vec<&str> = current.iter().map(|entry| entry.role.as_str()).collect();
        let checksums: Vec<&str> = current.iter().map(|entry| entry.sha256.as_str()).collect();
        let missing: Option<(String, String)> = sqlx::query_as(
            "WITH wanted (role, sha256) AS (SELECT * FROM UNNEST($2::text[], $3::text[])), \
             inserted AS ( \
               INSERT INTO current_files (gun, role, version, expires) \
               SELECT DISTINCT ON (f.role) f.gun, f.role, f.version, f.expires \
               FROM wanted JOIN tuf_files f \
                 ON f.gun = $1 AND f.role = wanted.role AND f.sha256 = wanted.sha256 \
               ORDER BY f.role, f.version DESC \
               RETURNING role) \
             SELECT wanted.role, wanted.sha256 FROM wanted \
             WHERE NOT EXISTS (SELECT 1 FROM inserted WHERE inserted.role = wanted.role) \
             LIMIT 1",
        )
        .bind(gun)
        .bind(&roles)
        .bind(&checksums)
        .fetch_optional(&mut **tx)
        .await
        .map_err(from_sqlx)?;
        match missing {
            Some((role, sha256)) => Err(dangling_pointer(gun, &role, &sha256)),
            None => Ok(()),
        }
    }
}
