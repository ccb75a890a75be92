//! The SQLite backend.
//!
//! One file in WAL mode, opened through two pools: a single writer connection, so that this
//! process's writes queue in the pool instead of spinning in SQLite's busy handler, and a
//! few reader connections, which WAL lets run beside the writer. Write transactions start
//! with `BEGIN IMMEDIATE` so they take SQLite's write lock up front; that also keeps them
//! correct if another process writes to the same file. Timestamps are stored as INTEGER
//! microseconds since the Unix epoch.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::error::{from_sqlite, from_sqlite_migrate, is_unique_violation};
use crate::validate::{check_update, dangling_pointer, inserted_timestamps, now};
use crate::{Change, ChangeCategory, Store, StoreError, StoredFile, StoredKey, TIMESTAMP_ROLE, Update};

/// How long SQLite waits for another process's write lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reader waits for a pooled connection.
const READ_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a writer waits for the writer connection (writes queue there).
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections.
const READERS: u32 = 4;

/// Columns of `tuf_files f` that make up a [`StoredFile`].
macro_rules! file_columns {
    () => {
        "f.role, f.version, f.sha256, f.data, f.expires, f.created_at"
    };
}

/// Columns of `server_keys` that make up a [`StoredKey`].
macro_rules! key_columns {
    () => {
        "key_id, gun, role, algorithm, public, sealed_private, kek_id, created_at, last_used"
    };
}

/// The current-file join: pointer row `c` to file row `f`.
macro_rules! current_join {
    () => {
        " FROM current_files c JOIN tuf_files f \
          ON f.gun = c.gun AND f.role = c.role AND f.version = c.version "
    };
}

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("../migrations/server/sqlite");
    // A binary from the previous release must keep running on a schema migrated by the next.
    migrator.set_ignore_missing(true);
    migrator
}

/// [`Store`] on a SQLite file.
pub(crate) struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the file, runs the embedded migrations and returns the store.
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
            .connect_with(options.clone().create_if_missing(true))
            .await
            .map_err(|error| context(from_sqlite(error), &shown))?;
        migrator().run(&writer).await.map_err(|error| context(from_sqlite_migrate(error), &shown))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(READ_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| context(from_sqlite(error), &shown))?;
        tracing::info!(backend = "sqlite", path = %shown, "store opened, schema up to date");
        Ok(SqliteStore { reader, writer })
    }

    /// Opens a new in-memory database (`sqlite::memory:`), runs the migrations and returns the
    /// store. A private in-memory database exists only on its one connection, so reads and writes
    /// share a single connection that the pool never closes; the data lives as long as the store.
    pub(crate) async fn open_memory() -> Result<Self, StoreError> {
        const SHOWN: &str = "sqlite::memory:";
        let options = SqliteConnectOptions::new().in_memory(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| context(from_sqlite(error), &SHOWN))?;
        migrator().run(&pool).await.map_err(|error| context(from_sqlite_migrate(error), &SHOWN))?;
        tracing::info!(backend = "sqlite", path = SHOWN, "in-memory store opened, schema up to date");
        Ok(SqliteStore { reader: pool.clone(), writer: pool })
    }

    /// Starts a write transaction holding SQLite's write lock.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(from_sqlite)
    }

    async fn append_change(
        tx: &mut Transaction<'static, Sqlite>,
        gun: &str,
        version: i64,
        sha256: &str,
        category: ChangeCategory,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO changefeed (created_at, gun, version, sha256, category) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(micros(at))
        .bind(gun)
        .bind(version)
        .bind(sha256)
        .bind(category.as_str())
        .execute(&mut **tx)
        .await
        .map_err(from_sqlite)?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn current(&self, gun: &str, role: &str) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = $1 AND c.role = $2"))
            .bind(gun)
            .bind(role)
            .fetch_optional(&self.reader)
            .await
            .map_err(from_sqlite)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn current_many(&self, gun: &str, roles: &[&str]) -> Result<Vec<StoredFile>, StoreError> {
        if roles.is_empty() {
            return Ok(Vec::new());
        }
        // SQLite has no array parameters: one placeholder per role.
        let mut query =
            QueryBuilder::<Sqlite>::new(concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = "));
        query.push_bind(gun).push(" AND c.role IN (");
        let mut list = query.separated(", ");
        for role in roles {
            list.push_bind(*role);
        }
        query.push(") ORDER BY c.role");
        let rows = query.build().fetch_all(&self.reader).await.map_err(from_sqlite)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn current_all(&self, gun: &str) -> Result<Vec<StoredFile>, StoreError> {
        let rows =
            sqlx::query(concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = $1 ORDER BY c.role"))
                .bind(gun)
                .fetch_all(&self.reader)
                .await
                .map_err(from_sqlite)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn by_checksum(&self, gun: &str, role: &str, sha256_hex: &str) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            " FROM tuf_files f WHERE f.gun = $1 AND f.role = $2 AND f.sha256 = $3 \
              ORDER BY f.version DESC LIMIT 1"
        ))
        .bind(gun)
        .bind(role)
        .bind(sha256_hex)
        .fetch_optional(&self.reader)
        .await
        .map_err(from_sqlite)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn by_version(&self, gun: &str, role: &str, version: i64) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            " FROM tuf_files f WHERE f.gun = $1 AND f.role = $2 AND f.version = $3"
        ))
        .bind(gun)
        .bind(role)
        .bind(version)
        .fetch_optional(&self.reader)
        .await
        .map_err(from_sqlite)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn update(&self, update: Update) -> Result<(), StoreError> {
        check_update(&update)?;
        let gun = update.gun.as_str();
        let at = now();
        let mut tx = self.begin_write().await?;

        let stored_timestamp: Option<i64> =
            sqlx::query_scalar("SELECT version FROM current_files WHERE gun = $1 AND role = $2")
                .bind(gun)
                .bind(TIMESTAMP_ROLE)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlite)?;
        if stored_timestamp != update.expected_timestamp_version {
            return Err(StoreError::OldVersion { role: TIMESTAMP_ROLE.into() });
        }

        for file in &update.files {
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM tuf_files WHERE gun = $1 AND role = $2")
                    .bind(gun)
                    .bind(&file.role)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(from_sqlite)?;
            if newest.is_some_and(|newest| newest >= file.version) {
                return Err(StoreError::OldVersion { role: file.role.clone() });
            }
        }

        for file in &update.files {
            let inserted = sqlx::query(
                "INSERT INTO tuf_files (gun, role, version, sha256, data, expires, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(gun)
            .bind(&file.role)
            .bind(file.version)
            .bind(&file.sha256)
            .bind(&file.data)
            .bind(file.expires.map(micros))
            .bind(micros(at))
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) => {
                    return Err(StoreError::OldVersion { role: file.role.clone() });
                }
                Err(error) => return Err(from_sqlite(error)),
            }
        }

        sqlx::query("DELETE FROM current_files WHERE gun = $1")
            .bind(gun)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlite)?;
        for entry in &update.current {
            let inserted = sqlx::query(
                "INSERT INTO current_files (gun, role, version, expires) \
                 SELECT f.gun, f.role, f.version, f.expires FROM tuf_files f \
                 WHERE f.gun = $1 AND f.role = $2 AND f.sha256 = $3 \
                 ORDER BY f.version DESC LIMIT 1",
            )
            .bind(gun)
            .bind(&entry.role)
            .bind(&entry.sha256)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlite)?
            .rows_affected();
            if inserted != 1 {
                return Err(dangling_pointer(gun, &entry.role, &entry.sha256));
            }
        }

        for timestamp in inserted_timestamps(&update) {
            Self::append_change(&mut tx, gun, timestamp.version, &timestamp.sha256, ChangeCategory::Update, at).await?;
        }
        tx.commit().await.map_err(from_sqlite)
    }

    async fn delete_gun(&self, gun: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM current_files WHERE gun = $1")
            .bind(gun)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlite)?;
        let deleted = sqlx::query("DELETE FROM tuf_files WHERE gun = $1")
            .bind(gun)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlite)?
            .rows_affected();
        if deleted > 0 {
            Self::append_change(&mut tx, gun, 0, "", ChangeCategory::Deletion, now()).await?;
        }
        tx.commit().await.map_err(from_sqlite)?;
        Ok(deleted > 0)
    }

    async fn changefeed(&self, gun: Option<&str>, change_id: i64, records: i64) -> Result<Vec<Change>, StoreError> {
        let limit = i64::try_from(records.unsigned_abs()).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let backwards = records < 0 || change_id < 0;
        let sql = match (backwards, gun.is_some()) {
            (false, false) => concat!(
                "SELECT id, created_at, gun, version, sha256, category FROM changefeed ",
                "WHERE id > $1 ORDER BY id ASC LIMIT $2"
            ),
            (false, true) => concat!(
                "SELECT id, created_at, gun, version, sha256, category FROM changefeed ",
                "WHERE id > $1 AND gun = $3 ORDER BY id ASC LIMIT $2"
            ),
            (true, false) => concat!(
                "SELECT id, created_at, gun, version, sha256, category FROM changefeed ",
                "WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ),
            (true, true) => concat!(
                "SELECT id, created_at, gun, version, sha256, category FROM changefeed ",
                "WHERE id < $1 AND gun = $3 ORDER BY id DESC LIMIT $2"
            ),
        };
        // Going backwards from a non-positive id means "from the newest".
        let bound = if backwards && change_id <= 0 { i64::MAX } else { change_id };
        let mut query = sqlx::query(sql).bind(bound).bind(limit);
        if let Some(gun) = gun {
            query = query.bind(gun);
        }
        let rows = query.fetch_all(&self.reader).await.map_err(from_sqlite)?;
        let mut changes = rows.iter().map(change_from_row).collect::<Result<Vec<_>, _>>()?;
        if backwards {
            changes.reverse();
        }
        Ok(changes)
    }

    async fn expiring(&self, before: DateTime<Utc>, limit: i64) -> Result<Vec<String>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT gun FROM current_files \
             WHERE role IN ('timestamp', 'snapshot') AND expires < $1 \
             GROUP BY gun ORDER BY MIN(expires), gun LIMIT $2",
        )
        .bind(micros(before))
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlite)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 FROM tuf_files, current_files, changefeed, server_keys LIMIT 0")
            .execute(&self.reader)
            .await
            .map_err(from_sqlite)?;
        Ok(())
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let inserted = sqlx::query(concat!(
            "INSERT INTO server_keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&key.key_id)
        .bind(&key.gun)
        .bind(&key.role)
        .bind(&key.algorithm)
        .bind(&key.public)
        .bind(&key.sealed_private)
        .bind(&key.kek_id)
        .bind(micros(key.created_at))
        .bind(key.last_used.map(micros))
        .execute(&self.writer)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => {
                Err(StoreError::Internal(format!("server key {} already exists", key.key_id)))
            }
            Err(error) => Err(from_sqlite(error)),
        }
    }

    async fn key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", key_columns!(), " FROM server_keys WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(from_sqlite)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn unused_key(&self, gun: &str, role: &str, algorithm: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM server_keys WHERE gun = $1 AND role = $2 AND algorithm = $3 \
              AND last_used IS NULL ORDER BY key_id LIMIT 1"
        ))
        .bind(gun)
        .bind(role)
        .bind(algorithm)
        .fetch_optional(&self.reader)
        .await
        .map_err(from_sqlite)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn mark_key_used(&self, key_id: &str) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE server_keys SET last_used = $2 WHERE key_id = $1")
            .bind(key_id)
            .bind(micros(now()))
            .execute(&self.writer)
            .await
            .map_err(from_sqlite)?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::Internal(format!("no server key {key_id}")));
        }
        Ok(())
    }
}

/// Storage form of a timestamp: whole microseconds since the Unix epoch.
fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn from_micros(value: i64, column: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Internal(format!("column {column} holds an out-of-range time {value}")))
}

fn time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let value: i64 = row.try_get(column).map_err(from_sqlite)?;
    from_micros(value, column)
}

fn optional_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let value: Option<i64> = row.try_get(column).map_err(from_sqlite)?;
    value.map(|value| from_micros(value, column)).transpose()
}

fn file_from_row(row: &SqliteRow) -> Result<StoredFile, StoreError> {
    Ok(StoredFile {
        role: row.try_get("role").map_err(from_sqlite)?,
        version: row.try_get("version").map_err(from_sqlite)?,
        sha256: row.try_get("sha256").map_err(from_sqlite)?,
        data: row.try_get("data").map_err(from_sqlite)?,
        expires: optional_time(row, "expires")?,
        created_at: time(row, "created_at")?,
    })
}

fn change_from_row(row: &SqliteRow) -> Result<Change, StoreError> {
    let category: String = row.try_get("category").map_err(from_sqlite)?;
    Ok(Change {
        id: row.try_get("id").map_err(from_sqlite)?,
        created_at: time(row, "created_at")?,
        gun: row.try_get("gun").map_err(from_sqlite)?,
        version: row.try_get("version").map_err(from_sqlite)?,
        sha256: row.try_get("sha256").map_err(from_sqlite)?,
        category: ChangeCategory::parse(&category)?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key_id: row.try_get("key_id").map_err(from_sqlite)?,
        gun: row.try_get("gun").map_err(from_sqlite)?,
        role: row.try_get("role").map_err(from_sqlite)?,
        algorithm: row.try_get("algorithm").map_err(from_sqlite)?,
        public: row.try_get("public").map_err(from_sqlite)?,
        sealed_private: row.try_get("sealed_private").map_err(from_sqlite)?,
        kek_id: row.try_get("kek_id").map_err(from_sqlite)?,
        created_at: time(row, "created_at")?,
        last_used: optional_time(row, "last_used")?,
    })
}

/// Names the database file in an error.
fn context(error: StoreError, path: &impl std::fmt::Display) -> StoreError {
    match error {
        StoreError::Unavailable(message) => StoreError::Unavailable(format!("SQLite database {path}: {message}")),
        StoreError::Internal(message) => StoreError::Internal(format!("SQLite database {path}: {message}")),
        old @ StoreError::OldVersion { .. } => old,
    }
}
