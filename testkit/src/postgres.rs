//! One fresh PostgreSQL database per test, created inside the cluster that `DATABASE_URL` points
//! at (a superuser URL, e.g. from `scripts/pg-throwaway.sh`) and always dropped afterwards.
//!
//! The API is synchronous and shells out to `psql`, so the same helper serves blocking black-box
//! tests and async tokio tests alike (it never needs a runtime, so it can be created and dropped
//! inside one). Dropping runs during unwinding too, so a failing test leaves nothing behind;
//! databases of test processes that were killed outright (no unwinding) are removed by the next
//! [`PgDatabase::create`] on the same machine in the same cluster.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::process::{run_tool, run_with_timeout};

/// Every database this helper creates has a name starting with this prefix, followed by a tag of
/// the creating machine ([`host_tag`]) and the creating process's id.
pub const NAME_PREFIX: &str = "tufa_test_";

/// The message a PostgreSQL test fails with when there is no cluster to test against.
pub const NO_DATABASE_URL: &str = "DATABASE_URL is not set, so this PostgreSQL test cannot run. Run the suite with \
     scripts/test.sh (it starts a throwaway cluster), or first \
     `source scripts/pg-throwaway.sh && pg_throwaway_start` to export DATABASE_URL.";

/// Names of databases made by this process differ by this counter.
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// Why a test database could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgError {
    /// `DATABASE_URL` is unset or empty.
    NoDatabaseUrl,
    /// `psql` failed; the text holds its command line and output.
    Psql(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::NoDatabaseUrl => formatter.write_str(NO_DATABASE_URL),
            PgError::Psql(output) => write!(formatter, "psql failed:\n{output}"),
        }
    }
}

impl std::error::Error for PgError {}

/// A database that exists until this value is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates a new, empty database and fails the calling test with instructions when that is
    /// impossible: the PostgreSQL variants of the tests must never pass without PostgreSQL.
    #[expect(clippy::panic, reason = "test support: a PostgreSQL test without PostgreSQL must fail loudly")]
    pub fn create() -> PgDatabase {
        PgDatabase::try_create().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Creates a new, empty database in the cluster at `DATABASE_URL`.
    pub fn try_create() -> Result<PgDatabase, PgError> {
        let admin_url = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => return Err(PgError::NoDatabaseUrl),
        };
        PgDatabase::create_in(&admin_url)
    }

    /// Creates a new, empty database in the cluster at `admin_url` (a role with CREATEDB).
    pub fn create_in(admin_url: &str) -> Result<PgDatabase, PgError> {
        drop_orphans(admin_url);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "{NAME_PREFIX}{}_{}_{}_{nanos}",
            host_tag(),
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase { admin_url: admin_url.to_owned(), url: with_database(admin_url, &name), name })
    }

    /// The URL of this database (same credentials, host and parameters as the admin URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the cluster this database was created in.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Never panics: a failing drop must not hide (or, while unwinding, abort) the test.
        if let Err(error) = drop_database(&self.admin_url, &self.name) {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// Drops `name` (and ends its connections) if it exists.
fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let output = run_with_timeout(&mut psql_command(admin_url, &sql), b"", Duration::from_secs(30))?;
    if output.success() { Ok(()) } else { Err(output.to_string()) }
}

/// Drops this helper's databases that were made on this machine by a process that no longer
/// runs: a test process killed by a timeout never unwinds, so its databases would otherwise stay.
/// Databases made on other machines (a shared cluster) are left alone. Best effort and silent.
fn drop_orphans(admin_url: &str) {
    let own = format!("{NAME_PREFIX}{}_", host_tag());
    let query = format!("SELECT datname FROM pg_database WHERE datname LIKE '{own}%'");
    let Ok(output) = run_tool(psql_command(admin_url, &query).args(["-t", "-A"])) else { return };
    for name in output.stdout.lines().map(str::trim) {
        let creator = name.strip_prefix(&own).and_then(|rest| rest.split('_').next());
        let alive = creator.is_none_or(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
        let valid = name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !alive && valid {
            let _ = drop_database(admin_url, name);
        }
    }
}

/// Eight hex digits derived (FNV-1a) from this machine's host name, so that process ids in
/// database names are only compared with processes of the same machine.
pub fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hash =
        host.trim().bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    format!("{hash:08x}")
}

/// Replaces the database name in a `postgres://user@host:port/db?params` URL.
pub fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let (head, rest) = url.split_at(authority_start);
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(path_start);
    let query = path_and_query.find('?').and_then(|index| path_and_query.get(index..)).unwrap_or("");
    format!("{head}{authority}/{database}{query}")
}

/// Runs one SQL statement as the admin role.
fn psql(url: &str, sql: &str) -> Result<(), PgError> {
    run_tool(&mut psql_command(url, sql)).map(drop).map_err(PgError::Psql)
}

/// `psql` from `PG_BINDIR` when the throwaway script exported it, else from `PATH`.
fn psql_command(url: &str, sql: &str) -> Command {
    let program = std::env::var_os("PG_BINDIR")
        .map(|dir| PathBuf::from(dir).join("psql"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let mut command = Command::new(program);
    command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]);
    command
}

/// How many databases named `name` the cluster at `admin_url` has (0 or 1), for tests that check
/// that a database is gone.
pub fn database_count(admin_url: &str, name: &str) -> Result<u32, String> {
    let query = format!("SELECT count(*) FROM pg_database WHERE datname = '{}'", name.replace('\'', "''"));
    let output = run_tool(psql_command(admin_url, &query).args(["-t", "-A"]))?;
    output.stdout.trim().parse().map_err(|error| format!("unexpected count {:?}: {error}", output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        let check = |url: &str, expected: &str| assert_eq!(with_database(url, "t1"), expected);
        check("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/t1");
        check("postgres://u:p@h:1/db?sslmode=disable", "postgres://u:p@h:1/t1?sslmode=disable");
        check("postgres://u@h:1", "postgres://u@h:1/t1");
        check("postgres://u@h:1?x=y", "postgres://u@h:1/t1?x=y");
    }

    #[test]
    fn no_database_url_is_its_own_error() {
        assert_eq!(PgError::NoDatabaseUrl.to_string(), NO_DATABASE_URL);
    }

    #[test]
    fn a_dropped_database_is_gone_even_after_a_panic() {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| panic!("{NO_DATABASE_URL}"));

        let database = PgDatabase::create_in(&admin_url).unwrap();
        let name = database.name().to_owned();
        assert!(name.starts_with(&format!("{NAME_PREFIX}{}_{}_", host_tag(), std::process::id())), "{name}");
        assert_eq!(database_count(&admin_url, &name), Ok(1));
        let answer = run_tool(psql_command(database.url(), "SELECT current_database()").args(["-t", "-A"])).unwrap();
        assert_eq!(answer.stdout.trim(), name, "the URL names the new database");
        drop(database);
        assert_eq!(database_count(&admin_url, &name), Ok(0));

        let mut created = String::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let database = PgDatabase::create_in(&admin_url).unwrap();
            created = database.name().to_owned();
            panic!("the test fails while holding {}", database.name());
        }));
        let payload = outcome.expect_err("the closure panics");
        assert_eq!(payload.downcast_ref::<String>(), Some(&format!("the test fails while holding {created}")));
        assert!(created.starts_with(NAME_PREFIX), "{created}");
        assert_eq!(database_count(&admin_url, &created), Ok(0));
    }

    #[test]
    fn databases_of_dead_processes_are_dropped() {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| panic!("{NO_DATABASE_URL}"));
        // A pid above the kernel's maximum (4194304) never runs. (Another test process may sweep
        // the orphan first; either way it must be gone once a database has been created.)
        let orphan = format!("{NAME_PREFIX}{}_4999999_0_1", host_tag());
        psql(&admin_url, &format!("CREATE DATABASE {orphan}")).unwrap();
        // Made on another machine: never swept, whatever its pid.
        let foreign = format!("{NAME_PREFIX}zzzzzzzz_4999999_0_{}", std::process::id());
        psql(&admin_url, &format!("CREATE DATABASE {foreign}")).unwrap();
        let fresh = PgDatabase::create_in(&admin_url).unwrap();
        assert_eq!(database_count(&admin_url, &orphan), Ok(0));
        assert_eq!(database_count(&admin_url, &foreign), Ok(1));
        assert_eq!(database_count(&admin_url, fresh.name()), Ok(1));
        drop_database(&admin_url, &foreign).unwrap();
    }
}
