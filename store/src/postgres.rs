//! The PostgreSQL backend.
//!
//! Writes to one GUN are serialised with a transaction-scoped advisory lock on a hash of the
//! GUN. Changefeed inserts are additionally serialised across all GUNs with a second
//! advisory lock taken just before the insert and held until commit: identity values are
//! handed out in call order but become visible in commit order, and without the lock a
//! reader paging by id could skip a record that committed late.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};

use crate::error::{from_pg, from_pg_migrate, is_unique_violation};
use crate::validate::{check_update, dangling_pointer, inserted_timestamps, now, to_micros};
use crate::{Change, ChangeCategory, DatabaseUrl, Store, StoreError, StoredFile, StoredKey, TIMESTAMP_ROLE, Update};

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
    let mut migrator = sqlx::migrate!("../migrations/server/postgres");
    // A binary from the previous release must keep running on a schema migrated by the next.
    migrator.set_ignore_missing(true);
    migrator
}

/// [`Store`] on a PostgreSQL connection pool.
pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects, runs the embedded migrations and returns the store.
    pub(crate) async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose()).map_err(|error| {
            StoreError::Internal(format!("invalid PostgreSQL URL {url}: {}", url.scrub(&error.to_string())))
        })?;
        let connected = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
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
                return Err(with_context(
                    StoreError::Unavailable(format!("no connection within {} s: {cause}", ACQUIRE_TIMEOUT.as_secs())),
                    url,
                ));
            }
            Err(error) => return Err(with_context(from_pg(error), url)),
        };
        migrator().run(&pool).await.map_err(|error| with_context(from_pg_migrate(error), url))?;
        tracing::info!(backend = "postgres", database = %url, "store opened, schema up to date");
        Ok(PgStore { pool })
    }

    /// Takes the GUN's advisory lock for the rest of the transaction.
    async fn lock_gun(tx: &mut Transaction<'static, Postgres>, gun: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(gun)
            .execute(&mut **tx)
            .await
            .map_err(from_pg)?;
        Ok(())
    }

    /// Appends a changefeed record; holds the changefeed lock until the transaction ends.
    async fn append_change(
        tx: &mut Transaction<'static, Postgres>,
        gun: &str,
        version: i64,
        sha256: &str,
        category: ChangeCategory,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(CHANGEFEED_LOCK.0)
            .bind(CHANGEFEED_LOCK.1)
            .execute(&mut **tx)
            .await
            .map_err(from_pg)?;
        sqlx::query(
            "INSERT INTO changefeed (created_at, gun, version, sha256, category) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(at)
        .bind(gun)
        .bind(version)
        .bind(sha256)
        .bind(category.as_str())
        .execute(&mut **tx)
        .await
        .map_err(from_pg)?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn current(&self, gun: &str, role: &str) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = $1 AND c.role = $2"))
            .bind(gun)
            .bind(role)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_pg)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn current_many(&self, gun: &str, roles: &[&str]) -> Result<Vec<StoredFile>, StoreError> {
        if roles.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            current_join!(),
            "WHERE c.gun = $1 AND c.role = ANY($2) ORDER BY c.role"
        ))
        .bind(gun)
        .bind(roles)
        .fetch_all(&self.pool)
        .await
        .map_err(from_pg)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn current_all(&self, gun: &str) -> Result<Vec<StoredFile>, StoreError> {
        let rows =
            sqlx::query(concat!("SELECT ", file_columns!(), current_join!(), "WHERE c.gun = $1 ORDER BY c.role"))
                .bind(gun)
                .fetch_all(&self.pool)
                .await
                .map_err(from_pg)?;
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
        .fetch_optional(&self.pool)
        .await
        .map_err(from_pg)?;
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
        .fetch_optional(&self.pool)
        .await
        .map_err(from_pg)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn update(&self, update: Update) -> Result<(), StoreError> {
        check_update(&update)?;
        let gun = update.gun.as_str();
        let at = now();
        let mut tx = self.pool.begin().await.map_err(from_pg)?;
        Self::lock_gun(&mut tx, gun).await?;

        let stored_timestamp: Option<i64> =
            sqlx::query_scalar("SELECT version FROM current_files WHERE gun = $1 AND role = $2")
                .bind(gun)
                .bind(TIMESTAMP_ROLE)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_pg)?;
        if stored_timestamp != update.expected_timestamp_version {
            return Err(StoreError::OldVersion { role: TIMESTAMP_ROLE.into() });
        }

        if !update.files.is_empty() {
            let roles: Vec<&str> = update.files.iter().map(|file| file.role.as_str()).collect();
            let newest: Vec<(String, i64)> = sqlx::query_as(
                "SELECT role, MAX(version) FROM tuf_files \
                 WHERE gun = $1 AND role = ANY($2) GROUP BY role",
            )
            .bind(gun)
            .bind(&roles)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_pg)?;
            for file in &update.files {
                let too_old = newest.iter().any(|(role, version)| *role == file.role && *version >= file.version);
                if too_old {
                    return Err(StoreError::OldVersion { role: file.role.clone() });
                }
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
            .bind(file.expires.map(to_micros))
            .bind(at)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) => {
                    return Err(StoreError::OldVersion { role: file.role.clone() });
                }
                Err(error) => return Err(from_pg(error)),
            }
        }

        sqlx::query("DELETE FROM current_files WHERE gun = $1").bind(gun).execute(&mut *tx).await.map_err(from_pg)?;
        if !update.current.is_empty() {
            let roles: Vec<&str> = update.current.iter().map(|entry| entry.role.as_str()).collect();
            let checksums: Vec<&str> = update.current.iter().map(|entry| entry.sha256.as_str()).collect();
            let inserted = sqlx::query(
                "INSERT INTO current_files (gun, role, version, expires) \
                 SELECT f.gun, f.role, f.version, f.expires \
                 FROM UNNEST($2::text[], $3::text[]) AS wanted (role, sha256) \
                 JOIN tuf_files f \
                   ON f.gun = $1 AND f.role = wanted.role AND f.sha256 = wanted.sha256",
            )
            .bind(gun)
            .bind(&roles)
            .bind(&checksums)
            .execute(&mut *tx)
            .await
            .map_err(from_pg)?
            .rows_affected();
            if usize::try_from(inserted).ok() != Some(update.current.len()) {
                let missing: Option<(String, String)> = sqlx::query_as(
                    "SELECT wanted.role, wanted.sha256 \
                     FROM UNNEST($2::text[], $3::text[]) AS wanted (role, sha256) \
                     WHERE NOT EXISTS (SELECT 1 FROM tuf_files f WHERE f.gun = $1 \
                       AND f.role = wanted.role AND f.sha256 = wanted.sha256) \
                     LIMIT 1",
                )
                .bind(gun)
                .bind(&roles)
                .bind(&checksums)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_pg)?;
                return Err(match missing {
                    Some((role, sha256)) => dangling_pointer(gun, &role, &sha256),
                    None => StoreError::Internal(format!(
                        "current set for {gun}: {inserted} pointers written for {} entries",
                        update.current.len()
                    )),
                });
            }
        }

        for timestamp in inserted_timestamps(&update) {
            Self::append_change(&mut tx, gun, timestamp.version, &timestamp.sha256, ChangeCategory::Update, at).await?;
        }
        tx.commit().await.map_err(from_pg)
    }

    async fn delete_gun(&self, gun: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(from_pg)?;
        Self::lock_gun(&mut tx, gun).await?;
        sqlx::query("DELETE FROM current_files WHERE gun = $1").bind(gun).execute(&mut *tx).await.map_err(from_pg)?;
        let deleted = sqlx::query("DELETE FROM tuf_files WHERE gun = $1")
            .bind(gun)
            .execute(&mut *tx)
            .await
            .map_err(from_pg)?
            .rows_affected();
        if deleted > 0 {
            Self::append_change(&mut tx, gun, 0, "", ChangeCategory::Deletion, now()).await?;
        }
        tx.commit().await.map_err(from_pg)?;
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
        let rows = query.fetch_all(&self.pool).await.map_err(from_pg)?;
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
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(from_pg)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1 FROM tuf_files, current_files, changefeed, server_keys LIMIT 0")
            .execute(&self.pool)
            .await
            .map_err(from_pg)?;
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
        .bind(to_micros(key.created_at))
        .bind(key.last_used.map(to_micros))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => {
                Err(StoreError::Internal(format!("server key {} already exists", key.key_id)))
            }
            Err(error) => Err(from_pg(error)),
        }
    }

    async fn key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", key_columns!(), " FROM server_keys WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_pg)?;
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
        .fetch_optional(&self.pool)
        .await
        .map_err(from_pg)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn mark_key_used(&self, key_id: &str) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE server_keys SET last_used = $2 WHERE key_id = $1")
            .bind(key_id)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(from_pg)?
            .rows_affected();
        if updated == 0 {
            return Err(StoreError::Internal(format!("no server key {key_id}")));
        }
        Ok(())
    }
}

fn file_from_row(row: &PgRow) -> Result<StoredFile, StoreError> {
    let file = StoredFile {
        role: row.try_get("role").map_err(from_pg)?,
        version: row.try_get("version").map_err(from_pg)?,
        sha256: row.try_get("sha256").map_err(from_pg)?,
        data: row.try_get("data").map_err(from_pg)?,
        expires: row.try_get("expires").map_err(from_pg)?,
        created_at: row.try_get("created_at").map_err(from_pg)?,
    };
    Ok(file)
}

fn change_from_row(row: &PgRow) -> Result<Change, StoreError> {
    let category: String = row.try_get("category").map_err(from_pg)?;
    Ok(Change {
        id: row.try_get("id").map_err(from_pg)?,
        created_at: row.try_get("created_at").map_err(from_pg)?,
        gun: row.try_get("gun").map_err(from_pg)?,
        version: row.try_get("version").map_err(from_pg)?,
        sha256: row.try_get("sha256").map_err(from_pg)?,
        category: ChangeCategory::parse(&category)?,
    })
}

fn key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key_id: row.try_get("key_id").map_err(from_pg)?,
        gun: row.try_get("gun").map_err(from_pg)?,
        role: row.try_get("role").map_err(from_pg)?,
        algorithm: row.try_get("algorithm").map_err(from_pg)?,
        public: row.try_get("public").map_err(from_pg)?,
        sealed_private: row.try_get("sealed_private").map_err(from_pg)?,
        kek_id: row.try_get("kek_id").map_err(from_pg)?,
        created_at: row.try_get("created_at").map_err(from_pg)?,
        last_used: row.try_get("last_used").map_err(from_pg)?,
    })
}

/// Prefixes an error with the (redacted) server URL and removes the password from it.
fn with_context(error: StoreError, url: &DatabaseUrl) -> StoreError {
    match error {
        StoreError::Unavailable(message) => {
            StoreError::Unavailable(format!("PostgreSQL at {url}: {}", url.scrub(&message)))
        }
        StoreError::Internal(message) => StoreError::Internal(format!("PostgreSQL at {url}: {}", url.scrub(&message))),
        old @ StoreError::OldVersion { .. } => old,
    }
}
