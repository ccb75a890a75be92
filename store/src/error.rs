//! The store's error type and the mapping from database errors to it.

use sqlx::migrate::MigrateError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write would not raise the version of `role`: a stored file of the same GUN and
    /// role has the same or a higher version, the batch holds the same role and version
    /// twice, or (for role `timestamp`) the current timestamp is not the one the caller
    /// validated against.
    #[error("{role}: a file with the same or a newer version is already stored")]
    OldVersion {
        /// The role whose version was rejected.
        role: String,
    },
    /// What the caller asked to create exists already (a principal's name, a token's id). The
    /// message says what, e.g. `principal "alice" already exists`.
    #[error("{0}")]
    Conflict(String),
    /// Something the request refers to does not exist (the principal of a new API token). The
    /// message says what, e.g. `no principal "bob"`.
    #[error("{0}")]
    NotFound(String),
    /// The database could not be reached or is overloaded; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a broken invariant or an unexpected database error.
    #[error("storage error: {0}")]
    Internal(String),
}

impl StoreError {
    /// The same error with its message rewritten by `rewrite`; [`StoreError::OldVersion`]
    /// carries no message and is returned as it is.
    pub(crate) fn map_message(self, rewrite: impl FnOnce(String) -> String) -> StoreError {
        match self {
            StoreError::Conflict(message) => StoreError::Conflict(rewrite(message)),
            StoreError::NotFound(message) => StoreError::NotFound(rewrite(message)),
            StoreError::Unavailable(message) => StoreError::Unavailable(rewrite(message)),
            StoreError::Internal(message) => StoreError::Internal(rewrite(message)),
            old @ StoreError::OldVersion { .. } => old,
        }
    }

    /// The same error with `context: ` before its message.
    pub(crate) fn context(self, context: &str) -> StoreError {
        self.map_message(|message| format!("{context}: {message}"))
    }
}

/// Whether `error` is transient: the database cannot be reached, is overloaded, busy or
/// locked, cancelled the statement or lost a serialisation race, so that the same request may
/// succeed later. Anything else (a constraint violation, a missing table, a malformed row, a bad
/// URL) is not. This is the one classification of database errors, used by both binaries' stores.
///
/// Database-reported codes are read per dialect: PostgreSQL SQLSTATEs (class 08, class 53,
/// 57P0x, 57014, 55P03, 40001, 40P01) and SQLite extended result codes (BUSY, LOCKED, IOERR,
/// FULL, CANTOPEN and their extended variants). A migration error is classified by the database
/// error inside it.
pub fn is_transient(error: &sqlx::Error) -> bool {
    use sqlx::Error;
    match error {
        Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed => true,
        Error::Database(database) => {
            let Some(code) = database.code() else {
                return false;
            };
            if database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite_code_is_transient(&code)
            } else if database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
                pg_code_is_transient(&code)
            } else {
                false
            }
        }
        Error::Migrate(migrate) => match &**migrate {
            MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => is_transient(inner),
            _ => false,
        },
        _ => false,
    }
}

/// Maps a database error: [`StoreError::Unavailable`] when [`is_transient`], else
/// [`StoreError::Internal`].
pub(crate) fn from_sqlx(error: sqlx::Error) -> StoreError {
    let transient = is_transient(&error);
    let message = match error {
        sqlx::Error::Migrate(migrate) => return from_migrate(*migrate),
        sqlx::Error::Database(database) => database.to_string(),
        other => other.to_string(),
    };
    if transient { StoreError::Unavailable(message) } else { StoreError::Internal(message) }
}

/// Maps a migration error, naming the migration that failed.
pub(crate) fn from_migrate(error: MigrateError) -> StoreError {
    match error {
        MigrateError::Execute(inner) => from_sqlx(inner).context("migrating"),
        MigrateError::ExecuteMigration(inner, version) => {
            from_sqlx(inner).context(&format!("applying migration {version}"))
        }
        other => StoreError::Internal(format!("migrating: {other}")),
    }
}

/// PostgreSQL SQLSTATEs that mean "try again later" rather than "bug".
fn pg_code_is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: too many connections, disk full
        || code.starts_with("57P0") // admin/crash shutdown, cannot connect now, database dropped
        || code == "57014" // query canceled (statement_timeout)
        || code == "55P03" // lock not available (lock_timeout)
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock detected
}

/// SQLite result codes (extended codes, reported as decimal text) that mean "try again
/// later": busy or locked past the busy timeout, I/O errors, a full disk, unopenable file.
fn sqlite_code_is_transient(code: &str) -> bool {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    const SQLITE_IOERR: i64 = 10;
    const SQLITE_FULL: i64 = 13;
    const SQLITE_CANTOPEN: i64 = 14;
    match code.parse::<i64>() {
        Ok(extended) => {
            matches!(extended & 0xff, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN)
        }
        Err(_) => false,
    }
}

/// Whether `error` is a unique or primary key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db_error) => db_error.is_unique_violation(),
        _ => false,
    }
}

/// Whether `error` is a foreign key violation.
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db_error) => db_error.is_foreign_key_violation(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_codes() {
        for code in ["08006", "08001", "57P01", "57P03", "53300", "53100", "40P01", "57014"] {
            assert!(pg_code_is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22001", "XX000"] {
            assert!(!pg_code_is_transient(code), "{code}");
        }
    }

    #[test]
    fn sqlite_codes() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED, SQLITE_IOERR_WRITE (778).
        for code in ["5", "517", "6", "778", "13", "14"] {
            assert!(sqlite_code_is_transient(code), "{code}");
        }
        // SQLITE_CONSTRAINT_UNIQUE (2067), SQLITE_ERROR, garbage.
        for code in ["2067", "1", "x"] {
            assert!(!sqlite_code_is_transient(code), "{code}");
        }
    }

    #[test]
    fn transport_errors_are_unavailable() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let message = refused.to_string();
        assert!(matches!(from_sqlx(refused), StoreError::Unavailable(ref text) if *text == message));
        assert!(matches!(from_sqlx(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        assert!(matches!(from_sqlx(sqlx::Error::PoolClosed), StoreError::Unavailable(_)));
        assert!(matches!(from_sqlx(sqlx::Error::RowNotFound), StoreError::Internal(_)));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(is_transient(&sqlx::Error::WorkerCrashed));
    }

    #[test]
    fn messages() {
        let old = StoreError::OldVersion { role: "targets".into() };
        assert_eq!(old.to_string(), "targets: a file with the same or a newer version is already stored");
        assert_eq!(StoreError::Unavailable("x".into()).to_string(), "database unavailable: x");
        assert_eq!(StoreError::Internal("y".into()).to_string(), "storage error: y");
        let conflict = StoreError::Conflict("principal \"alice\" already exists".into());
        assert_eq!(conflict.to_string(), "principal \"alice\" already exists");
        assert_eq!(StoreError::NotFound("no principal \"bob\"".into()).to_string(), "no principal \"bob\"");
        let context = StoreError::Conflict("x".into()).context("adding");
        assert!(matches!(context, StoreError::Conflict(ref text) if text == "adding: x"), "{context:?}");
    }
}
