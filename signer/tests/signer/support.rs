//! Shared fixtures: stores on SQLite and on a fresh PostgreSQL database, software backends with
//! fixed KEKs.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use tufa_signer::backend::software::{Kek, KeyRing, SoftwareBackend};
use tufa_signer::service::SignerService;
use tufa_signer::store::Store;

pub const KEK_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const KEK_B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

/// A ring of `(name, hex)` KEKs with `active` sealing.
pub fn ring(keks: &[(&str, &str)], active: &str) -> KeyRing {
    let keks = keks.iter().map(|(name, hex)| Kek::from_hex(name, hex, "test").unwrap()).collect();
    KeyRing::new(keks, Some(active)).unwrap()
}

pub fn software(keks: &[(&str, &str)], active: &str) -> Arc<SoftwareBackend> {
    Arc::new(SoftwareBackend::new(ring(keks, active)))
}

/// A migrated SQLite store in a temporary directory (kept alive by the returned guard).
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_file(&dir.path().join("tufa-signer.db")).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// A migrated store on a fresh database of the PostgreSQL cluster at `DATABASE_URL`.
pub async fn postgres_store() -> Store {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need a throwaway cluster with a superuser \
             (e.g. `source pg_throwaway.sh && pg_throwaway_start`, see notes/stack.md section 4)"
        )
    });
    let admin_options = PgConnectOptions::from_str(&url).expect("DATABASE_URL is not a PostgreSQL URL");
    let name = format!(
        "tufa_signer_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    );
    let mut admin = admin_options.connect().await.expect("cannot connect to DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let pool = PgPoolOptions::new().max_connections(4).connect_with(admin_options.database(&name)).await.unwrap();
    let store = Store::from_postgres_pool(pool);
    store.migrate().await.unwrap();
    store
}

pub fn service(store: Store, backend: Arc<SoftwareBackend>) -> SignerService {
    SignerService::new(store, backend)
}
