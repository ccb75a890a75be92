//! Checks that belong to one backend: URL handling, reopening, and how an unreachable or
//! locked database surfaces as [`StoreError::Unavailable`].

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tufa_store::StoreError;

use crate::support::{PgDb, Repo, url};

const GUN: &str = "example.com/app";

fn expect_unavailable<T>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable(message)) => message,
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected Unavailable, got Ok"),
    }
}

mod sqlite {
    use super::*;

    /// Rows recorded before version 9 of the schema, whose canonical IDs are `NULL` ("none"), read
    /// as they did once `NULL` means "the same as the key IDs"; a new row whose canonical IDs are its
    /// key IDs is stored without them.
    #[tokio::test]
    async fn history_rows_from_before_version_9_read_as_they_did() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tufa.sqlite");
        // The schema as version 8 left it, with one history row of that time.
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).expect("migrations dir");
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/server/sqlite");
        for entry in std::fs::read_dir(&all).expect("migrations") {
            let entry = entry.expect("migration");
            if entry.file_name().to_string_lossy().as_ref() < "0009" {
                std::fs::copy(entry.path(), old.join(entry.file_name())).expect("copy migration");
            }
        }
        let mut connection = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create the version 8 database");
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .expect("migrator")
            .run(&mut connection)
            .await
            .expect("migrate");
        connection
            .execute(
                "INSERT INTO target_history (gun, name, role, version, change, sha256, length, signer_keys, \
                 signer_canonical_ids, principal, audit_seq, created_at) \
                 VALUES ('example.com/app', 'old', 'targets', 1, 'added', NULL, NULL, '[\"k1\"]', NULL, NULL, NULL, 0)",
            )
            .await
            .expect("a version 8 history row");
        connection.close().await.expect("close");

        let store = tufa_store::open_sqlite(&path).await.expect("open and migrate to the current version");
        let history = store.target_history(GUN, "old").await.expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].event.signer_keys.to_vec(), vec!["k1".to_owned()]);
        assert!(history[0].event.signer_canonical_ids.is_empty());

        let mut update = Repo::new(1, "v1").first_publish(GUN);
        let signers: std::sync::Arc<[String]> = vec!["k2".to_owned()].into();
        update.record.history = vec![tufa_store::NewTargetEvent {
            name: "new".into(),
            role: "targets".into(),
            version: 1,
            change: "added".into(),
            sha256: None,
            length: None,
            signer_keys: signers.clone(),
            signer_canonical_ids: signers,
        }];
        store.update(update).await.expect("publish");
        let history = store.target_history(GUN, "new").await.expect("history");
        assert_eq!(history[0].event.signer_canonical_ids.to_vec(), vec!["k2".to_owned()]);
        let mut connection = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("connect");
        let stored: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT name, signer_canonical_ids FROM target_history ORDER BY id")
                .fetch_all(&mut connection)
                .await
                .expect("rows");
        assert_eq!(stored, vec![("old".to_owned(), Some("[]".to_owned())), ("new".to_owned(), None)]);
    }

    async fn count_rows(connection: &mut SqliteConnection, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(connection).await.expect("count")
    }

    /// A small publish's index rows wait in `audit_pending`, in the database: a store reopened
    /// without having moved them still finds them. A pending row that was edited so it no longer
    /// parses stops the move with an error naming its entry, and nothing is moved.
    #[tokio::test]
    async fn pending_index_rows_survive_a_reopen_and_an_unreadable_one_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tufa.sqlite");
        let store = tufa_store::open_sqlite(&path).await.expect("open");
        let mut first = Repo::new(1, "v1").first_publish(GUN);
        let signers: std::sync::Arc<[String]> = vec!["k1".to_owned()].into();
        let event = |name: &str, version: i64| tufa_store::NewTargetEvent {
            name: name.into(),
            role: "targets".into(),
            version,
            change: "added".into(),
            sha256: None,
            length: None,
            signer_keys: signers.clone(),
            signer_canonical_ids: signers.clone(),
        };
        first.record.history = vec![event("v1", 1)];
        store.update(first).await.expect("publish");
        drop(store);

        let mut connection = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("connect");
        assert_eq!(count_rows(&mut connection, "audit_pending").await, 1);
        assert_eq!(count_rows(&mut connection, "target_history").await, 0);
        let store = tufa_store::open_sqlite(&path).await.expect("reopen");
        let history = store.target_history(GUN, "v1").await.expect("history");
        assert_eq!((history.len(), history[0].audit_seq), (1, Some(0)));
        assert_eq!(count_rows(&mut connection, "audit_pending").await, 0);

        let mut second = Repo::new(2, "v2").next_publish(GUN, 1);
        second.record.history = vec![event("v2", 2)];
        store.update(second).await.expect("second publish");
        connection.execute("UPDATE audit_pending SET rows = '{\"gun\": 1}'").await.expect("edit the pending row");
        let error = store.target_history(GUN, "v2").await.expect_err("an unreadable pending row");
        assert!(error.to_string().contains("audit_pending row of entry 1 is unreadable"), "{error}");
        assert_eq!(count_rows(&mut connection, "audit_pending").await, 1);
        assert_eq!(count_rows(&mut connection, "target_history").await, 1);
    }

    #[tokio::test]
    async fn url_forms_and_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested name.sqlite");
        let store = tufa_store::open(&url(&format!("sqlite://{}", path.display()))).await.expect("open sqlite://");
        assert_eq!(store.backend(), "sqlite");
        assert!(path.exists(), "the file is created");
        store.update(Repo::new(1, "v1").first_publish(GUN)).await.expect("publish");
        drop(store);

        // Reopening runs the migrations again (a no-op) and finds the data.
        let store = tufa_store::open(&url(&format!("sqlite:{}", path.display()))).await.expect("open sqlite:");
        store.ping().await.expect("ping");
        assert_eq!(store.current_all(GUN).await.expect("read").len(), 4);
    }

    /// `sqlite::memory:` is one database for the whole store: what the writer commits, the
    /// readers see.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_database_is_shared_by_reads_and_writes() {
        let store = tufa_store::open(&url("sqlite::memory:")).await.expect("open sqlite::memory:");
        assert_eq!(store.backend(), "sqlite");
        store.ping().await.expect("ping");
        let repo = Repo::new(1, "v1");
        store.update(repo.first_publish(GUN)).await.expect("publish");
        let mut readers = JoinSet::new();
        for _ in 0..8 {
            let store = store.clone();
            readers.spawn(async move { store.current_all(GUN).await.expect("read").len() });
        }
        while let Some(count) = readers.join_next().await {
            assert_eq!(count.expect("reader task"), 4);
        }
        let next = Repo::new(2, "v2");
        store.update(next.next_publish(GUN, 1)).await.expect("second publish");
        let timestamp = store.current(GUN, "timestamp").await.expect("read").expect("a current timestamp");
        assert_eq!(timestamp.data, next.timestamp.data);

        // A second in-memory store is a different database.
        let other = tufa_store::open(&url("sqlite::memory:")).await.expect("open a second one");
        assert_eq!(other.current_all(GUN).await.expect("read"), Vec::new());
    }

    #[tokio::test]
    async fn missing_directory_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("no such dir").join("tufa.sqlite");
        let result = tufa_store::open_sqlite(&path).await;
        let message = expect_unavailable(result);
        assert_eq!(
            message,
            format!("SQLite database: cannot create {}: No such file or directory (os error 2)", path.display())
        );
    }

    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())).permissions().mode()
            & 0o777
    }

    /// The database file and the `-wal` and `-shm` files SQLite makes beside it are created
    /// owner-only, whatever the umask; an existing file's mode is left as it is.
    #[tokio::test]
    async fn database_files_are_created_owner_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tufa.sqlite");
        let store = tufa_store::open_sqlite(&path).await.expect("open");
        store.update(Repo::new(1, "v1").first_publish(GUN)).await.expect("publish");
        assert_eq!(store.current_all(GUN).await.expect("read").len(), 4);
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("tufa.sqlite{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }

        let existing = dir.path().join("existing.sqlite");
        std::fs::write(&existing, b"").expect("create");
        std::fs::set_permissions(&existing, std::os::unix::fs::PermissionsExt::from_mode(0o640)).expect("chmod");
        tufa_store::create_sqlite_file(&existing).expect("existing file");
        assert_eq!(mode(&existing), 0o640);
    }

    /// Real SQLite errors: busy is transient, a constraint violation is not.
    #[tokio::test]
    async fn sqlite_errors_are_classified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("plain.sqlite"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut first = SqliteConnection::connect_with(&options).await.expect("first connection");
        first.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").await.expect("create table");
        first.execute("INSERT INTO t VALUES (1)").await.expect("insert");
        let duplicate = first.execute("INSERT INTO t VALUES (1)").await.expect_err("duplicate key");
        assert_eq!(duplicate.as_database_error().and_then(|error| error.code()).as_deref(), Some("1555"));
        assert!(!tufa_store::is_transient(&duplicate), "{duplicate}");

        first.execute("BEGIN IMMEDIATE").await.expect("take the write lock");
        let mut second = SqliteConnection::connect_with(&options).await.expect("second connection");
        let busy = second.execute("BEGIN IMMEDIATE").await.expect_err("busy");
        assert_eq!(busy.as_database_error().and_then(|error| error.code()).as_deref(), Some("5"));
        assert!(tufa_store::is_transient(&busy), "{busy}");
        first.execute("ROLLBACK").await.expect("release");
    }

    /// Two stores on one file (as two server processes would be) race to publish different
    /// versions on top of version 1: `BEGIN IMMEDIATE` plus the busy timeout serialise them
    /// and exactly one wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_race() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tufa.sqlite");
        let stores = [
            tufa_store::open_sqlite(&path).await.expect("open first"),
            tufa_store::open_sqlite(&path).await.expect("open second"),
        ];
        stores[0].update(Repo::new(1, "v1").first_publish(GUN)).await.expect("publish v1");

        let mut racers = Vec::new();
        for racer in 0..8_i64 {
            let store = stores[usize::from(racer % 2 == 1)].clone();
            let update = Repo::new(2 + racer, &format!("racer {racer}")).next_publish(GUN, 1);
            racers.push(tokio::spawn(async move { store.update(update).await }));
        }
        let mut winners = 0;
        for racer in racers {
            match racer.await.expect("racer task") {
                Ok(()) => winners += 1,
                Err(StoreError::OldVersion { .. }) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners, 1);
        let current = stores[1].current_all(GUN).await.expect("read");
        assert_eq!(current.len(), 4);
        let feed = stores[1].changefeed(Some(GUN), 0, 100).await.expect("feed");
        assert_eq!(feed.len(), 2);
    }

    /// Two stores on one file, as two server processes, race to create the first token CA key
    /// and then to rotate it: one creation wins, and rotations are serialised.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_share_token_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tufa.sqlite");
        let stores = [
            tufa_store::open_sqlite(&path).await.expect("open first"),
            tufa_store::open_sqlite(&path).await.expect("open second"),
        ];
        crate::suite::token_key_race(&stores).await;
    }

    /// Another process holding SQLite's write lock past the busy timeout makes writes
    /// Unavailable; reads carry on (WAL), and writes work again once the lock is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tufa.sqlite");
        let store = tufa_store::open_sqlite(&path).await.expect("open");

        let mut other = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
            .await
            .expect("second connection");
        other.execute("BEGIN IMMEDIATE").await.expect("take the write lock");

        let started = Instant::now();
        let result = store.update(Repo::new(1, "v1").first_publish(GUN)).await;
        let message = expect_unavailable(result);
        assert!(started.elapsed() >= Duration::from_secs(4), "waited {:?}", started.elapsed());
        assert!(message.contains("locked") || message.contains("busy"), "{message}");
        assert_eq!(store.current(GUN, "root").await.expect("read while locked"), None);

        other.execute("ROLLBACK").await.expect("release the lock");
        store.update(Repo::new(1, "v1").first_publish(GUN)).await.expect("publish after unlock");
    }
}

mod postgres {
    use super::*;

    /// A local port where nothing listens.
    async fn dead_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable_fast() {
        let port = dead_port().await;
        let url = format!("postgres://tufa:hunter2@127.0.0.1:{port}/notary");
        let started = Instant::now();
        let message = expect_unavailable(tufa_store::open(&crate::support::url(&url)).await);
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("tufa:***@127.0.0.1"), "{message}");
        assert!(message.contains("refused"), "{message}");
    }

    /// Real PostgreSQL errors with each SQLSTATE (raised with `RAISE … USING ERRCODE`): the
    /// transient ones are exactly the retryable classes.
    #[tokio::test]
    async fn postgres_errors_are_classified() {
        let db = PgDb::create().await;
        let mut connection = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        let cases = [
            ("40001", true),  // serialization_failure
            ("40P01", true),  // deadlock_detected
            ("55P03", true),  // lock_not_available
            ("57014", true),  // query_canceled (statement_timeout)
            ("57P01", true),  // admin_shutdown
            ("57P03", true),  // cannot_connect_now
            ("53300", true),  // too_many_connections
            ("53100", true),  // disk_full
            ("08006", true),  // connection_failure
            ("23505", false), // unique_violation
            ("42P01", false), // undefined_table
            ("22001", false), // string_data_right_truncation
            ("P0001", false), // raise_exception
            ("XX000", false), // internal_error
        ];
        for (code, transient) in cases {
            let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$");
            let error = connection.execute(sqlx::AssertSqlSafe(sql)).await.expect_err(code);
            assert_eq!(error.as_database_error().and_then(|error| error.code()).as_deref(), Some(code));
            assert_eq!(tufa_store::is_transient(&error), transient, "{code}");
        }
        // A real statement timeout, not only its code.
        connection.execute("SET statement_timeout = 50").await.expect("set timeout");
        let timeout = connection.execute("SELECT pg_sleep(2)").await.expect_err("timeout");
        assert_eq!(timeout.as_database_error().and_then(|error| error.code()).as_deref(), Some("57014"));
        assert!(tufa_store::is_transient(&timeout));
        connection.close().await.expect("close");
    }

    /// Two stores on one database, as two server processes, race to create the first token CA
    /// key and then to rotate it: one creation wins, and rotations are serialised.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_database_share_token_keys() {
        let db = PgDb::create().await;
        let stores = [db.open().await, db.open().await];
        crate::suite::token_key_race(&stores).await;
    }

    #[tokio::test]
    async fn reopening_keeps_data() {
        let db = PgDb::create().await;
        let store = db.open().await;
        assert_eq!(store.backend(), "postgres");
        store.update(Repo::new(1, "v1").first_publish(GUN)).await.expect("publish");
        drop(store);
        let store = db.open().await;
        store.ping().await.expect("ping");
        assert_eq!(store.current_all(GUN).await.expect("read").len(), 4);
    }

    /// Forwards every connection accepted on `listener` to `target` until aborted; aborting
    /// it drops every forwarded connection too.
    fn proxy(listener: TcpListener, target: String) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        })
    }

    /// The server going away mid-life gives Unavailable within the acquire timeout, and the
    /// pool reconnects by itself once the server is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_server_is_unavailable_then_recovers() {
        let db = PgDb::create().await;
        let options = PgConnectOptions::from_str(&db.url).expect("parse");
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url = options.host("127.0.0.1").port(port).to_url_lossy().to_string();

        let running = proxy(listener, target.clone());
        let store = tufa_store::open(&crate::support::url(&url)).await.expect("open through proxy");
        store.update(Repo::new(1, "v1").first_publish(GUN)).await.expect("publish");

        running.abort();
        let _ = running.await;
        let started = Instant::now();
        expect_unavailable(store.current(GUN, "root").await);
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("rebind");
        let running = proxy(listener, target);
        let root = store.current(GUN, "root").await.expect("read after recovery");
        assert_eq!(root.map(|file| file.version), Some(1));
        drop(store);
        running.abort();
    }
}
