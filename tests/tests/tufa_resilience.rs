//! tufa-server under failure and scale-out, on PostgreSQL: the database goes away and comes
//! back; two server processes share one database.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use tufa_tests::notary::Notary;
use tufa_tests::postgres::PgDatabase;
use tufa_tests::proxy::TcpProxy;
use tufa_tests::tufa::{Options, start_with};

/// Splits `postgres://user@host:port/db` into the `host:port` part and the rest.
fn authority(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let (credentials, rest) = rest.split_once('@').map_or(("", rest), |(credentials, rest)| (credentials, rest));
    let (host_port, path) = rest.split_once('/').map_or((rest, ""), |(host_port, path)| (host_port, path));
    let prefix = if credentials.is_empty() { format!("{scheme}://") } else { format!("{scheme}://{credentials}@") };
    (prefix, host_port.to_owned(), format!("/{path}"))
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn database_outage_is_a_503_and_the_server_recovers() {
    let database = PgDatabase::create();
    let (prefix, host_port, path) = authority(database.url());
    let upstream: SocketAddr = host_port.to_socket_addrs().expect("resolve PostgreSQL").next().expect("an address");
    let proxy = TcpProxy::start(upstream);
    let proxied_url = format!("{prefix}{}{path}", proxy.address());
    let server = start_with(Options {
        name: "tufa-server (postgres behind a proxy)".into(),
        database_url: Some(proxied_url),
        database: Some(database),
        extra_args: Vec::new(),
    });
    let gun = "tufa.test/outage";
    let owner = Notary::new(&server, "owner");
    owner.ok(&["init", "-p", gun]);
    let file = owner.write_file("v1.bin", b"before the outage\n");
    owner.ok(&["add", "-p", gun, "v1", file.to_str().expect("UTF-8 path")]);
    let targets_before = server.metadata(gun, "targets.json");
    assert_eq!(targets_before.status, 200);

    proxy.cut();
    let started = Instant::now();
    let during = server.metadata(gun, "targets.json");
    assert_eq!(during.status, 503, "a read without a database: {during}");
    assert!(started.elapsed() < Duration::from_secs(10), "the failure must be fast, took {:?}", started.elapsed());
    assert_eq!(during.error_code().as_deref(), Some("UNAVAILABLE"));
    // The in-process signer keeps its keys in the same database, so both checks fail, each with
    // the fixed word and no internal error text.
    let health = server.get("/_notary_server/health");
    let both_down = serde_json::json!({"DB operational": "unavailable", "Trust operational": "unavailable"});
    assert_eq!((health.status, health.json()), (503, both_down), "{health}");
    let publish = server.post_update(gun, &[("targets", &targets_before.body)]);
    assert_eq!(publish.status, 503, "a publish without a database: {publish}");

    proxy.restore();
    wait_for("recovery after the database came back", Duration::from_secs(30), || {
        server.metadata(gun, "targets.json").status == 200
    });
    assert_eq!(server.metadata(gun, "targets.json").body, targets_before.body, "nothing changed during the outage");
    assert_eq!(server.get("/_notary_server/health").status, 200);
    let file = owner.write_file("v2.bin", b"after the outage\n");
    owner.ok(&["add", "-p", gun, "v2", file.to_str().expect("UTF-8 path")]);
    let names: Vec<String> = owner.list(gun, None).into_iter().map(|target| target.name).collect();
    assert_eq!(names, vec!["v1".to_owned(), "v2".to_owned()]);
}

#[test]
fn two_servers_on_one_database_never_serve_stale_metadata() {
    let database = PgDatabase::create();
    let url = database.url().to_owned();
    let first = start_with(Options {
        name: "tufa-server A".into(),
        database_url: Some(url.clone()),
        database: Some(database),
        extra_args: Vec::new(),
    });
    // Both processes must share the key-encryption key that seals the online keys.
    let kek = first.dir().join("data").join("kek.key");
    let second = start_with(Options {
        name: "tufa-server B".into(),
        database_url: Some(url),
        database: None,
        extra_args: vec!["--kek-file".into(), kek.to_str().expect("UTF-8 path").into()],
    });
    let gun = "tufa.test/scale-out";
    let owner_a = Notary::new(&first, "owner");
    owner_a.ok(&["init", "-p", gun]);
    let reader_b = Notary::new(&second, "reader");
    for round in 1..=3 {
        let name = format!("a{round}");
        let file = owner_a.write_file(&format!("{name}.bin"), name.as_bytes());
        owner_a.ok(&["add", "-p", gun, &name, file.to_str().expect("UTF-8 path")]);
        // Acknowledged by A: B must serve it at once.
        let names: Vec<String> = reader_b.list(gun, None).into_iter().map(|target| target.name).collect();
        assert!(names.contains(&name), "B serves stale metadata after round {round}: {names:?}");
        for file in ["timestamp.json", "snapshot.json", "targets.json", "root.json"] {
            assert_eq!(first.metadata(gun, file).body, second.metadata(gun, file).body, "{file} differs");
        }
    }
}

/// Writes a key-encryption key file (64 hex characters, owner-only) holding `byte` 32 times.
fn write_kek(path: &std::path::Path, byte: u8) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{}\n", format!("{byte:02x}").repeat(32))).expect("write KEK file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod KEK file");
}

/// Runs tufa-server against `url` with a fresh data directory and `extra_args`, expecting it to
/// refuse to start; returns its output and its data directory.
fn refused_start(url: &str, extra_args: &[&str]) -> (tufa_tests::process::CommandOutput, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("tufa-server-refused-").tempdir().expect("temp dir");
    let mut command = std::process::Command::new(tufa_tests::tufa::binary());
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", tufa_tests::process::free_port()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--database-url")
        .arg(url)
        .args(extra_args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TUFA_") {
            command.env_remove(&key);
        }
    }
    let output = tufa_tests::process::run_with_timeout(&mut command, b"", Duration::from_secs(60));
    (output, dir)
}

/// A second server on the same PostgreSQL with a key-encryption key of its own (or none, which
/// it would generate) cannot open the online keys there: it must refuse to start with exit
/// status 2 and a message naming the KEKs, and must not write a new KEK file.
#[test]
fn a_server_whose_kek_does_not_match_the_database_refuses_to_start() {
    // The ids are the first 16 hex digits of SHA-256 over the 32 key bytes.
    const KEK_A_ID: &str = "02d449a31fbb267c";
    const KEK_B_ID: &str = "9f72ea0cf49536e3";
    let keys = tempfile::tempdir().expect("temp dir");
    let (kek_a, kek_b) = (keys.path().join("kek-a.key"), keys.path().join("kek-b.key"));
    write_kek(&kek_a, 0x11);
    write_kek(&kek_b, 0x22);
    let database = PgDatabase::create();
    let url = database.url().to_owned();
    let first = start_with(Options {
        name: "tufa-server A".into(),
        database_url: Some(url.clone()),
        database: Some(database),
        extra_args: vec!["--kek-file".into(), kek_a.to_str().expect("UTF-8 path").into()],
    });
    // Asking for a GUN's timestamp key makes A create one, sealed with KEK A.
    let key = first.get("/v2/tufa.test/kek/_trust/tuf/timestamp.key");
    assert_eq!(key.status, 200, "{key}");

    // No KEK at all: the default kek.key would be generated, so nothing may be written.
    let (output, dir) = refused_start(&url, &[]);
    let kek_file = dir.path().join("data").join("kek.key");
    let expected = format!(
        "tufa-server: the database holds online keys sealed by key-encryption key {KEK_A_ID}, but the KEK file {} \
         does not exist; a new KEK could decrypt none of them, so none was generated: give this server the KEK of \
         the server that created those keys (copy its kek.key, or set --kek-file or TUFA_KEK), or use another \
         database",
        kek_file.display()
    );
    assert_eq!(output.status.and_then(|status| status.code()), Some(2), "{output}");
    assert!(output.stderr.lines().any(|line| line == expected), "expected {expected:?} in\n{output}");
    assert!(!kek_file.exists(), "a KEK file was written");

    // A KEK of its own.
    let (output, _dir) = refused_start(&url, &["--kek-file", kek_b.to_str().expect("UTF-8 path")]);
    let expected = format!(
        "tufa-server: the key-encryption key from the KEK file {} (id {KEK_B_ID}) does not match the database: its \
         online keys are sealed by key-encryption key {KEK_A_ID}; give this server the KEK of the server that \
         created those keys (--kek-file or TUFA_KEK), or use another database",
        kek_b.display()
    );
    assert_eq!(output.status.and_then(|status| status.code()), Some(2), "{output}");
    assert!(output.stderr.lines().any(|line| line == expected), "expected {expected:?} in\n{output}");

    // A still serves: the refused servers changed nothing.
    assert_eq!(first.get("/v2/tufa.test/kek/_trust/tuf/timestamp.key").body, key.body);
}
