//! One fresh PostgreSQL database per test, created inside the cluster that `DATABASE_URL`
//! points at (a superuser URL, e.g. from `scripts/pg-throwaway.sh`) and dropped afterwards.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::run_tool;

/// Names of databases made by this process differ by this counter.
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A database that exists until this value is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates a new, empty database. Panics with instructions when `DATABASE_URL` is not
    /// set: the PostgreSQL variants of the tests must never pass without PostgreSQL.
    pub fn create() -> PgDatabase {
        let admin_url = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => panic!(
                "DATABASE_URL is not set, so this PostgreSQL test cannot run. Run the suite with \
                 scripts/test.sh (it starts a throwaway cluster), or first \
                 `source scripts/pg-throwaway.sh && pg_throwaway_start` to export DATABASE_URL."
            ),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let name =
            format!("tufa_test_{}_{}_{nanos}", std::process::id(), NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        let url = with_database(&admin_url, &name);
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        PgDatabase { admin_url, name, url }
    }

    /// The URL of this database (same credentials and host as `DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort: a failing drop must not hide the test's own failure.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let output = crate::process::run_with_timeout(
            &mut psql_command(&self.admin_url, &sql),
            b"",
            std::time::Duration::from_secs(30),
        );
        if !output.success() {
            eprintln!("could not drop test database {}:\n{output}", self.name);
        }
    }
}

/// Replaces the database name in a `postgres://user@host:port/db?params` URL.
fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let (head, rest) = url.split_at(authority_start);
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(path_start);
    let query = path_and_query.find('?').map_or("", |index| &path_and_query[index..]);
    format!("{head}{authority}/{database}{query}")
}

fn psql(url: &str, sql: &str) {
    run_tool(&mut psql_command(url, sql));
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

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        let check = |url: &str, expected: &str| assert_eq!(with_database(url, "t1"), expected);
        check("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/t1");
        check("postgres://u:p@h:1/db?sslmode=disable", "postgres://u:p@h:1/t1?sslmode=disable");
        check("postgres://u@h:1", "postgres://u@h:1/t1");
        check("postgres://u@h:1?x=y", "postgres://u@h:1/t1?x=y");
    }
}
