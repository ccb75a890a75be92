//! The SQLite dialect: opening the database and the few statements that differ from
//! PostgreSQL. The queries themselves are in `sql.rs`.
//!
//! One file in WAL mode, opened through two pools: a single writer connection, so that this
//! process's writes queue in the pool instead of spinning in SQLite's busy handler, and a
//! few reader connections, which WAL lets run beside the writer. Write transactions start
//! with `BEGIN IMMEDIATE` so they take SQLite's write lock up front; that also keeps them
//! correct if another process writes to the same file. Timestamps are stored as INTEGER
//! microseconds since the Unix epoch.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Pool, QueryBuilder};
use tufa_common::files::FileError;

use crate::error::{from_migrate, from_sqlx};
use crate::sql::{Dialect, FileRow, Pools, Tx, UpdateReadRow, UpdateReads, current_join, file_columns, update_reads};
use crate::validate::dangling_pointer;
use crate::{CurrentEntry, NewFile, StoreError, TIMESTAMP_ROLE};

/// How long SQLite waits for another process's write lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reader waits for a pooled connection.
const READ_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a writer waits for the writer connection (writes queue there).
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections.
const READERS: u32 = 4;

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../migrations/server/sqlite");
    // A binary from the previous release must keep running on a schema migrated by the next.
    migrator.set_ignore_missing(true);
    migrator
}

/// The SQLite [`Dialect`].
pub(crate) struct Sqlite;

/// A reader pool and a one-connection writer pool on the same database.
pub(crate) struct SqlitePools {
    reader: SqlitePool,
    writer: SqlitePool,
}

/// Creates an empty SQLite database file at `path`, readable and writable by its owner only
/// (mode 0600 whatever the umask), unless something already exists there, which is left as it
/// is. SQLite gives the `-wal` and `-shm` files it creates later the database file's mode, so
/// they are owner-only too. Both binaries call this before opening a database file.
pub fn create_sqlite_file(path: &Path) -> Result<(), FileError> {
    match tufa_common::files::create_private_file(path) {
        Ok(_) => Ok(()),
        Err(error) if error.io_kind() == Some(std::io::ErrorKind::AlreadyExists) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates the database file owner-only when it is missing ([`create_sqlite_file`]) and returns the
/// connection options both binaries open their SQLite files with: WAL journal, foreign keys on,
/// and a busy timeout for another process's write lock.
pub fn sqlite_file_options(path: &Path) -> Result<SqliteConnectOptions, FileError> {
    create_sqlite_file(path)?;
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT))
}

/// Opens (creating it owner-only if missing) the file and runs the embedded migrations.
pub(crate) async fn open(path: &Path) -> Result<Pools, StoreError> {
    let context = |error: StoreError| error.context(&format!("SQLite database {}", path.display()));
    let options =
        sqlite_file_options(path).map_err(|error| StoreError::Unavailable(format!("SQLite database: {error}")))?;
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
        // A COMMIT that fails (SQLITE_FULL on a full disk) leaves the connection inside its
        // transaction; closing it instead of reusing it lets the next write start afresh once
        // space is back, without a restart.
        .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
        .connect_with(options.clone())
        .await
        .map_err(|error| context(from_sqlx(error)))?;
    migrator().run(&writer).await.map_err(|error| context(from_migrate(error)))?;
    let reader = SqlitePoolOptions::new()
        .max_connections(READERS)
        .acquire_timeout(READ_ACQUIRE_TIMEOUT)
        .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
        .connect_with(options)
        .await
        .map_err(|error| context(from_sqlx(error)))?;
    tracing::info!(backend = "sqlite", path = %path.display(), "store opened, schema up to date");
    Ok(Pools::Sqlite(SqlitePools { reader, writer }))
}

/// Opens a new in-memory database (`sqlite::memory:`) and runs the migrations. A private
/// in-memory database exists only on its one connection, so reads and writes share a single
/// connection that the pool never closes; the data lives as long as the store.
pub(crate) async fn open_memory() -> Result<Pools, StoreError> {
    let context = |error: StoreError| error.context("SQLite database sqlite::memory:");
    let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| context(from_sqlx(error)))?;
    migrator().run(&pool).await.map_err(|error| context(from_migrate(error)))?;
    tracing::info!(backend = "sqlite", path = "sqlite::memory:", "in-memory store opened, schema up to date");
    Ok(Pools::Sqlite(SqlitePools { reader: pool.clone(), writer: pool }))
}

impl Dialect for Sqlite {
    const NAME: &'static str = "sqlite";
    const BATCH_AS_CTES: bool = false;
    const UNINDEXED: &'static str = "+";
    type Db = sqlx::Sqlite;
    type Pools = SqlitePools;
    type Time = i64;

    /// Whole microseconds since the Unix epoch.
    fn time(time: DateTime<Utc>) -> i64 {
        time.timestamp_micros()
    }

    fn read_time(value: i64, column: &str) -> Result<DateTime<Utc>, StoreError> {
        DateTime::from_timestamp_micros(value)
            .ok_or_else(|| StoreError::Internal(format!("column {column} holds an out-of-range time {value}")))
    }

    fn reader(pools: &SqlitePools) -> &Pool<sqlx::Sqlite> {
        &pools.reader
    }

    fn writer(pools: &SqlitePools) -> &Pool<sqlx::Sqlite> {
        &pools.writer
    }

    /// `BEGIN IMMEDIATE` takes the database's one write lock, which covers every GUN.
    async fn begin_for_gun(pools: &SqlitePools, _gun: &str) -> Result<Tx<Sqlite>, StoreError> {
        pools.writer.begin_with("BEGIN IMMEDIATE").await.map_err(from_sqlx)
    }

    /// `BEGIN IMMEDIATE`: the one write lock, taken up front.
    async fn begin_write(pools: &SqlitePools) -> Result<Tx<Sqlite>, StoreError> {
        pools.writer.begin_with("BEGIN IMMEDIATE").await.map_err(from_sqlx)
    }

    /// The write lock taken by `BEGIN IMMEDIATE` already serialises token-key writes.
    async fn lock_token_keys(_tx: &mut Tx<Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    /// The write lock taken by `BEGIN IMMEDIATE` already serialises changefeed inserts.
    async fn lock_changefeed(_tx: &mut Tx<Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    /// The write lock taken by `BEGIN IMMEDIATE` already serialises audit appends.
    async fn lock_audit(_tx: &mut Tx<Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite has no array parameters: one placeholder per role.
    async fn current_many(pools: &SqlitePools, gun: &str, roles: &[&str]) -> Result<Vec<FileRow<Sqlite>>, StoreError> {
        let mut query =
            QueryBuilder::<sqlx::Sqlite>::new(concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = "));
        query.push_bind(gun).push(" AND c.role IN (");
        let mut list = query.separated(", ");
        for role in roles {
            list.push_bind(*role);
        }
        query.push(") ORDER BY c.role");
        query.build_query_as().fetch_all(&pools.reader).await.map_err(from_sqlx)
    }

    /// One statement (each is a round trip to the connection's worker thread): the newest version of
    /// each file's role, the stored timestamp's version and the log's last entry, as rows of (what,
    /// role, version, leaf hash). `BEGIN IMMEDIATE` already holds the lock that serialises appends.
    async fn prepare_update(tx: &mut Tx<Sqlite>, gun: &str, files: &[NewFile]) -> Result<UpdateReads, StoreError> {
        let mut query = QueryBuilder::<sqlx::Sqlite>::new("");
        if !files.is_empty() {
            // One MAX per role, correlated: SQLite answers each with a single seek to the end of the role's
            // versions, where `role IN (...) GROUP BY role` would read every version of every role.
            query.push("SELECT 0, wanted.column1, (SELECT MAX(f.version) FROM tuf_files f WHERE f.gun = ");
            query.push_bind(gun).push(" AND f.role = wanted.column1), NULL FROM (");
            query.push_values(files, |mut row, file| {
                row.push_bind(file.role.as_str());
            });
            query.push(") AS wanted UNION ALL ");
        }
        query.push("SELECT 1, NULL, (SELECT version FROM current_files WHERE gun = ");
        query.push_bind(gun).push(" AND role = ").push_bind(TIMESTAMP_ROLE);
        query.push(
            "), NULL UNION ALL SELECT 2, NULL, a.seq, a.leaf_hash FROM \
             (SELECT seq, leaf_hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS a",
        );
        let rows: Vec<UpdateReadRow> = query.build_query_as().fetch_all(&mut **tx).await.map_err(from_sqlx)?;
        update_reads(files, rows)
    }

    /// One statement for the whole set, inserting each pointer's newest file with that checksum; when fewer rows
    /// were inserted than asked for, the first pointer whose file does not exist is named (the caller then drops
    /// the transaction).
    async fn set_current(tx: &mut Tx<Sqlite>, gun: &str, current: &[CurrentEntry]) -> Result<(), StoreError> {
        if current.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO current_files (gun, role, version, expires) \
             SELECT f.gun, f.role, f.version, f.expires FROM (",
        );
        query.push_values(current, |mut row, entry| {
            row.push_bind(entry.role.as_str()).push_bind(entry.sha256.as_str());
        });
        // The inner lookup goes through the (gun, role, sha256) index: a role such as the timestamp has one
        // version per publish, so a search by (gun, role) alone would read every one of them.
        query
            .push(") AS wanted JOIN tuf_files f ON f.gun = ")
            .push_bind(gun)
            .push(" AND f.role = wanted.column1 AND f.version = (SELECT g.version FROM tuf_files g WHERE g.gun = ")
            .push_bind(gun)
            .push(" AND g.role = wanted.column1 AND g.sha256 = wanted.column2 ORDER BY g.version DESC LIMIT 1)");
        let inserted = query.build().execute(&mut **tx).await.map_err(from_sqlx)?.rows_affected();
        if usize::try_from(inserted).is_ok_and(|inserted| inserted == current.len()) {
            return Ok(());
        }
        for entry in current {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM tuf_files WHERE gun = $1 AND role = $2 AND sha256 = $3 LIMIT 1")
                    .bind(gun)
                    .bind(&entry.role)
                    .bind(&entry.sha256)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(from_sqlx)?;
            if found.is_none() {
                return Err(dangling_pointer(gun, &entry.role, &entry.sha256));
            }
        }
        Err(StoreError::Internal(format!("{gun}: {inserted} of {} current-file pointers were set", current.len())))
    }
}
