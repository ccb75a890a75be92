//! Scratch PostgreSQL databases for audit-bench: created next to the database `DATABASE_URL`
//! names, dropped at the end, and the server settings that decide what a commit costs.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A database created for one run; [`Scratch::drop_now`] removes it.
pub(crate) struct Scratch {
    admin_url: String,
    name: String,
    /// The URL of the scratch database.
    pub(crate) url: String,
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|index| index + 3).ok_or("DATABASE_URL has no scheme")?;
    let path_start = base.get(authority_start..).and_then(|rest| rest.find('/')).map(|index| authority_start + index);
    let authority = path_start.and_then(|index| base.get(..index)).unwrap_or(base);
    Ok(match query {
        Some(query) => format!("{authority}/{name}?{query}"),
        None => format!("{authority}/{name}"),
    })
}

impl Scratch {
    /// Creates database `audit_bench_<purpose>_<pid>` on the server of `admin_url`.
    pub(crate) async fn create(admin_url: &str, purpose: &str) -> Result<Scratch, String> {
        // The name is made of a fixed prefix, `purpose` (a literal of this program) and the process
        // ID, so it is a plain identifier and safe to write into the statements below.
        let name = format!("audit_bench_{purpose}_{}", std::process::id());
        let mut connection = PgConnection::connect(admin_url)
            .await
            .map_err(|error| format!("cannot connect to DATABASE_URL: {error}"))?;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(&mut connection)
            .await
            .map_err(|error| format!("drop {name}: {error}"))?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .map_err(|error| format!("create {name}: {error}"))?;
        let url = with_database(admin_url, &name)?;
        Ok(Scratch { admin_url: admin_url.to_owned(), name, url })
    }

    /// The database's size on disk, in bytes.
    pub(crate) async fn size(&self) -> Result<i64, String> {
        let mut connection = PgConnection::connect(&self.admin_url).await.map_err(|error| error.to_string())?;
        sqlx::query_scalar("SELECT pg_database_size($1)")
            .bind(&self.name)
            .fetch_one(&mut connection)
            .await
            .map_err(|error| error.to_string())
    }

    /// Drops the database (its connections must be closed).
    pub(crate) async fn drop_now(self) -> Result<(), String> {
        let mut connection = PgConnection::connect(&self.admin_url).await.map_err(|error| error.to_string())?;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut connection)
            .await
            .map(|_| ())
            .map_err(|error| format!("drop {}: {error}", self.name))
    }
}

/// The PostgreSQL version and the settings that decide what a commit costs, for the report.
pub(crate) async fn settings(admin_url: &str) -> String {
    let Ok(mut connection) = PgConnection::connect(admin_url).await else {
        return "unknown".into();
    };
    let mut parts = Vec::new();
    for setting in ["server_version", "fsync", "synchronous_commit"] {
        let value: Result<String, _> =
            sqlx::query_scalar("SELECT current_setting($1)").bind(setting).fetch_one(&mut connection).await;
        parts.push(format!("{setting}={}", value.unwrap_or_else(|_| "?".into())));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        let cases = [
            ("postgres://u:p@127.0.0.1:5432/postgres", "postgres://u:p@127.0.0.1:5432/x"),
            ("postgres://u@h/db?sslmode=disable", "postgres://u@h/x?sslmode=disable"),
            ("postgresql://h:1", "postgresql://h:1/x"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "x").as_deref(), Ok(expected), "{url}");
        }
    }
}
