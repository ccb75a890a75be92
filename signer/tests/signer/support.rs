//! Shared fixtures: stores on SQLite and on a fresh PostgreSQL database, software backends with
//! fixed KEKs.

use std::str::FromStr as _;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tufa_signer::backend::software::{Kek, KeyRing, SoftwareBackend};
use tufa_signer::service::SignerService;
use tufa_signer::store::Store;
use tufa_testkit::postgres::PgDatabase;

pub(crate) const KEK_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub(crate) const KEK_B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

/// A ring of `(name, hex)` KEKs with `active` sealing.
pub(crate) fn ring(keks: &[(&str, &str)], active: &str) -> KeyRing {
    let keks = keks.iter().map(|(name, hex)| Kek::from_hex(name, hex, "test").unwrap()).collect();
    KeyRing::new(keks, Some(active)).unwrap()
}

pub(crate) fn software(keks: &[(&str, &str)], active: &str) -> Arc<SoftwareBackend> {
    Arc::new(SoftwareBackend::new(ring(keks, active)))
}

/// A migrated SQLite store in a temporary directory (kept alive by the returned guard).
pub(crate) async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_file(&dir.path().join("tufa-signer.db")).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// A migrated store on a fresh database of the PostgreSQL cluster at `DATABASE_URL`; the
/// database is dropped when the returned guard is (also when the test fails).
pub(crate) async fn postgres_store() -> (Store, PgDatabase) {
    let database = PgDatabase::create();
    let options = PgConnectOptions::from_str(database.url()).expect("the test database URL parses");
    let pool = PgPoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
    let store = Store::from_postgres_pool(pool);
    store.migrate().await.unwrap();
    (store, database)
}

pub(crate) fn service(store: Store, backend: Arc<SoftwareBackend>) -> SignerService {
    SignerService::new(store, backend)
}

/// One test database, on SQLite (a file in a temporary directory) or on a fresh PostgreSQL
/// database, that several stores (standing in for several signer processes) and raw SQL (standing
/// in for an administrator with write access) can open.
pub(crate) enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    pub(crate) fn postgres() -> TestDb {
        TestDb::Postgres(PgDatabase::create())
    }

    /// The database URL, as `--database-url` takes it.
    pub(crate) fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite:{}", dir.path().join("tufa-signer.db").display()),
            TestDb::Postgres(database) => database.url().to_owned(),
        }
    }

    /// A new store (its own pool) on the database, migrated.
    pub(crate) async fn store(&self) -> Store {
        let store = match self {
            TestDb::Sqlite(dir) => Store::open_sqlite_file(&dir.path().join("tufa-signer.db")).await.unwrap(),
            TestDb::Postgres(database) => {
                let options = PgConnectOptions::from_str(database.url()).unwrap();
                Store::from_postgres_pool(PgPoolOptions::new().max_connections(4).connect_with(options).await.unwrap())
            }
        };
        store.migrate().await.unwrap();
        store
    }

    /// Runs `sql` (one or more statements) on its own connection.
    pub(crate) async fn execute(&self, sql: &str) {
        use sqlx::Connection as _;
        use sqlx::Executor as _;
        match self {
            TestDb::Sqlite(dir) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("tufa-signer.db"));
                let mut connection = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                connection.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
                connection.close().await.unwrap();
            }
            TestDb::Postgres(database) => {
                let mut connection = sqlx::PgConnection::connect(database.url()).await.unwrap();
                connection.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
                connection.close().await.unwrap();
            }
        }
    }
}
