//! Faults during real work: the signer killed, the database crashed and restarted, and the
//! connection to the database cut while several clients publish; a client vanishing in the middle
//! of an upload; SQLite running out of disk. No acknowledged publish is lost, no half-applied
//! publish is ever served, and the server recovers without being restarted.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use tufa_tests::load::{LoadReport, PublishLoad, Reads};
use tufa_tests::pg_cluster::PgCluster;
use tufa_tests::postgres::PgDatabase;
use tufa_tests::proxy::TcpProxy;
use tufa_tests::server::Server;
use tufa_tests::signer::{KeyBackend, Signer, Stack};
use tufa_tests::tufa::{Options, start_with};

/// One repository per concurrent publisher.
const GUNS: [&str; 4] = ["tufa.test/load-a", "tufa.test/load-b", "tufa.test/load-c", "tufa.test/load-d"];

/// How long the signer stays away.
const SIGNER_OUTAGE: Duration = Duration::from_secs(3);

/// How long the database stays away: longer than tufa-server's 3 s wait for a database
/// connection, so that requests fail rather than wait the outage out.
const DATABASE_OUTAGE: Duration = Duration::from_secs(6);

/// How soon after the dependency is back every publisher must have published again.
const RECOVERY: Duration = Duration::from_secs(10);

/// How long the load may take to get going (every publisher acknowledged once).
const WARM_UP: Duration = Duration::from_secs(20);

/// How long the load runs undisturbed before the fault and after the recovery.
const STEADY: Duration = Duration::from_secs(1);

/// When the dependency went away and came back, and how long recovery took.
struct Outage {
    began: Instant,
    ended: Instant,
    recovery: Duration,
}

/// What the fault function of [`load_through_outage`] is asked to do.
enum Phase {
    /// Take the dependency away.
    Down,
    /// Bring it back.
    Up,
}

/// Runs [`GUNS`] as a publish load on `server` while `fault` takes a dependency away
/// ([`Phase::Down`]) and, after `outage`, brings it back ([`Phase::Up`]); checks what must
/// hold of any such fault: every publish that failed during the outage printed
/// `expected_failure`, none that ran entirely inside it succeeded, the reader saw only whole,
/// acknowledged states, every publisher published again within [`RECOVERY`], and (in
/// [`PublishLoad::run`]) a fresh client lists exactly the targets of every repository.
fn load_through_outage(
    server: &Server,
    reads: Reads,
    outage: Duration,
    expected_failure: &str,
    mut fault: impl FnMut(Phase),
) -> LoadReport {
    let load = PublishLoad::prepare(server.url(), server.ca_cert(), &GUNS);
    let (outage, report) = load.run(reads, |handle| {
        handle.wait_until_all_publish_since(Instant::now(), WARM_UP);
        std::thread::sleep(STEADY);
        let began = Instant::now();
        fault(Phase::Down);
        std::thread::sleep(outage);
        let ended = Instant::now();
        fault(Phase::Up);
        let recovery = handle.wait_until_all_publish_since(ended, RECOVERY);
        std::thread::sleep(STEADY);
        Outage { began, ended, recovery }
    });
    eprintln!(
        "load: {} publishes acknowledged, {} failed during the outage; reads: {:?}; recovery took {:?}",
        report.acknowledged(),
        report.failures_since(outage.began).len(),
        report.reads,
        outage.recovery
    );
    // Publishes that began and ended while the dependency was away cannot have succeeded.
    for (gun, attempts) in &report.attempts {
        for attempt in attempts {
            if attempt.started > outage.began && attempt.finished < outage.ended {
                assert!(attempt.failure.is_some(), "{gun}: t{} was acknowledged during the outage", attempt.index);
            }
        }
    }
    let failed: Vec<_> =
        report.failures_since(outage.began).into_iter().filter(|attempt| attempt.started < outage.ended).collect();
    assert!(!failed.is_empty(), "no publish failed during the outage: the fault was never hit");
    for attempt in failed {
        let output = attempt.failure.as_deref().unwrap_or_default();
        assert!(
            output.contains(expected_failure),
            "t{} failed otherwise than with {expected_failure:?}:\n{output}",
            attempt.index
        );
    }
    assert!(report.reads.consistent_reads > 0, "the reader never read a whole state: {:?}", report.reads);
    if reads == Reads::AlwaysServed {
        assert!(report.reads.listings > 0, "no fresh client listed during the load: {:?}", report.reads);
    }
    let health = server.get("/_notary_server/health");
    assert_eq!(health.status, 200, "health after the load: {health}");
    report
}

/// tufa-server with a remote tufa-signer; four clients publish in a loop (server-held snapshot
/// keys, so every publish needs the signer twice); the signer is killed with SIGKILL and started
/// again on the same port and keys after [`SIGNER_OUTAGE`].
#[test]
fn signer_killed_during_a_publish_load() {
    let mut stack = Stack::tufa_server(Signer::tufa(KeyBackend::Software));
    let (server, signer) = stack.server_and_signer_mut();
    // tufa-server answers 503 UNAVAILABLE when it cannot reach its signer.
    let expected = "* fatal: unable to reach trust server at this time: 503.";
    let fault = |phase| match phase {
        Phase::Down => signer.kill(),
        Phase::Up => signer.start_again(),
    };
    let report = load_through_outage(server, Reads::AlwaysServed, SIGNER_OUTAGE, expected, fault);
    // Reads never need the signer.
    assert_eq!(report.reads.unavailable_reads, 0, "{:?}", report.reads);
    stack.check_after_flow();
}

/// tufa-server on PostgreSQL (in-process signer, whose keys are in the same database) reaching
/// the database through a [`TcpProxy`]; four clients publish in a loop; the proxy cuts every
/// connection and refuses new ones for [`DATABASE_OUTAGE`], then forwards again: the network
/// between server and database fails without a word from the database (unlike the restart in
/// [`database_crashed_and_restarted_during_a_publish_load`]), on the shared throwaway cluster.
#[test]
fn database_cut_during_a_publish_load() {
    let database = PgDatabase::create();
    let (prefix, host_port, path) = split_database_url(database.url());
    let upstream: SocketAddr = host_port.to_socket_addrs().expect("resolve PostgreSQL").next().expect("an address");
    let proxy = TcpProxy::start(upstream);
    let server = start_with(Options {
        name: "tufa-server (postgres behind a proxy)".into(),
        database_url: Some(format!("{prefix}{}{path}", proxy.address())),
        database: Some(database),
        extra_args: Vec::new(),
    });
    // Without its database the server answers 503 UNAVAILABLE to reads and publishes alike.
    let expected = "* fatal: unable to reach trust server at this time: 503.";
    let fault = |phase| match phase {
        Phase::Down => proxy.cut(),
        Phase::Up => proxy.restore(),
    };
    let report = load_through_outage(&server, Reads::MayBeUnavailable, DATABASE_OUTAGE, expected, fault);
    assert!(report.reads.unavailable_reads > 0, "the reader never saw the outage: {:?}", report.reads);
}

/// tufa-server on a PostgreSQL cluster of its own (so that restarting it disturbs no other test);
/// four clients publish in a loop; the cluster is stopped with `pg_ctl stop -m immediate` (every
/// PostgreSQL process quits at once, as in a crash) and started again on the same port after
/// [`DATABASE_OUTAGE`], recovering from its write-ahead log.
#[test]
fn database_crashed_and_restarted_during_a_publish_load() {
    let cluster = PgCluster::start();
    let server = start_with(Options {
        name: "tufa-server (postgres, private cluster)".into(),
        database_url: Some(cluster.url()),
        database: None,
        extra_args: Vec::new(),
    });
    let expected = "* fatal: unable to reach trust server at this time: 503.";
    let fault = |phase| match phase {
        Phase::Down => cluster.stop("immediate"),
        Phase::Up => cluster.start_again(),
    };
    let report = load_through_outage(&server, Reads::MayBeUnavailable, DATABASE_OUTAGE, expected, fault);
    assert!(report.reads.unavailable_reads > 0, "the reader never saw the outage: {:?}", report.reads);
    // The server stops before its database.
    drop(server);
}

/// Splits `postgres://user@host:port/db` into the part before `host:port`, `host:port`, and the rest.
fn split_database_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let (credentials, rest) = rest.split_once('@').map_or(("", rest), |(credentials, rest)| (credentials, rest));
    let (host_port, path) = rest.split_once('/').map_or((rest, ""), |(host_port, path)| (host_port, path));
    let prefix = if credentials.is_empty() { format!("{scheme}://") } else { format!("{scheme}://{credentials}@") };
    (prefix, host_port.to_owned(), format!("/{path}"))
}

/// The boundary of the hand-made update bodies.
const BOUNDARY: &str = "tufa-fault-boundary-5d1e";

/// An update with no parts after a 256 KiB multipart preamble (which multipart readers skip): a
/// valid update for a repository whose snapshot key the server holds (the server signs a new
/// snapshot and timestamp), and large enough that half of it is a real partial upload.
fn padded_empty_update() -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < 256 * 1024 {
        body.extend_from_slice(b"preamble text that a multipart reader skips, up to the first boundary\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The request line and headers of an HTTP/1.1 update POST of `length` bytes.
fn update_head(gun: &str, port: u16, length: usize) -> Vec<u8> {
    format!(
        "POST /v2/{gun}/_trust/tuf/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// `openssl s_client` connected to `server` over TLS (HTTP/1.1), with standard input piped.
fn raw_tls_client(server: &Server) -> std::process::Child {
    let port = server_port(server);
    std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-alpn", "http/1.1", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(server.ca_cert())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start openssl s_client")
}

fn server_port(server: &Server) -> u16 {
    server.url().rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port in the server URL")
}

/// A body that yields its first half, then fails: reqwest gives up on the request, which over
/// HTTP/2 resets the stream (RST_STREAM) in the middle of the body.
struct HalfThenFail {
    body: Vec<u8>,
    position: usize,
}

impl std::io::Read for HalfThenFail {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let half = self.body.len() / 2;
        if self.position >= half {
            // Give the server time to read the first half before the stream is reset.
            std::thread::sleep(Duration::from_millis(200));
            return Err(std::io::Error::other("the client gives up half-way"));
        }
        let count = buffer.len().min(half - self.position).min(16 * 1024);
        buffer[..count].copy_from_slice(&self.body[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

/// Every current metadata file of `gun` and its timestamp version.
fn served(server: &Server, gun: &str) -> Vec<(String, Vec<u8>)> {
    ["root", "targets", "snapshot", "timestamp"]
        .iter()
        .map(|role| {
            let response = server.metadata(gun, &format!("{role}.json"));
            assert_eq!(response.status, 200, "GET {role}.json of {gun}: {response}");
            (format!("{role}.json"), response.body)
        })
        .collect()
}

/// A client that sends the headers and half the body of an update and then goes away, over
/// HTTP/1.1 (the TLS connection closed by killing `openssl s_client`) and over HTTP/2 (the stream
/// reset): the server stores nothing of it, stays healthy, and the next publish succeeds.
#[test]
fn client_disconnecting_mid_upload_changes_nothing() {
    let server = tufa_tests::tufa::start(tufa_tests::tufa::Backend::Sqlite);
    let gun = "tufa.test/half-upload";
    let owner = tufa_tests::notary::Notary::new(&server, "owner");
    tufa_tests::flows::init_with_server_snapshot(&owner, gun);
    let v1 = tufa_tests::flows::publish_target(&owner, gun, "v1", b"one\n");
    let body = padded_empty_update();
    let port = server_port(&server);

    // The whole body is a valid update: the server signs a new timestamp.
    let version = tufa_tests::flows::version(&server.metadata_json(gun, "timestamp"));
    let mut request = update_head(gun, port, body.len());
    request.extend_from_slice(&body);
    let mut control = raw_tls_client(&server);
    std::io::Write::write_all(control.stdin.as_mut().expect("stdin"), &request).expect("send the whole update");
    let output = control.wait_with_output().expect("s_client output");
    let reply = String::from_utf8_lossy(&output.stdout);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "the whole padded update: {reply}");
    assert_eq!(tufa_tests::flows::version(&server.metadata_json(gun, "timestamp")), version + 1);
    let before = served(&server, gun);

    for attempt in 1..=5 {
        // HTTP/1.1: headers and half the body, then the connection is gone.
        let mut client = raw_tls_client(&server);
        let stdin = client.stdin.as_mut().expect("stdin");
        std::io::Write::write_all(stdin, &update_head(gun, port, body.len())).expect("send headers");
        std::io::Write::write_all(stdin, &body[..body.len() / 2]).expect("send half the body");
        std::thread::sleep(Duration::from_millis(200));
        let still_connected = client.try_wait().expect("s_client status").is_none();
        assert!(still_connected, "openssl s_client ended before it was killed (attempt {attempt})");
        client.kill().expect("kill s_client");
        let output = client.wait_with_output().expect("s_client output");
        assert!(
            output.stdout.is_empty(),
            "the server answered a half upload: {}",
            String::from_utf8_lossy(&output.stdout)
        );

        // HTTP/2: the stream is reset half-way through the body.
        let http2 = reqwest::blocking::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(&std::fs::read(server.ca_cert()).expect("read CA")).expect("PEM CA")
            ])
            .http2_prior_knowledge()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP/2 client");
        let reader = HalfThenFail { body: body.clone(), position: 0 };
        let result = http2
            .post(format!("{}/v2/{gun}/_trust/tuf/", server.url()))
            .header("Content-Type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(reqwest::blocking::Body::sized(reader, body.len() as u64))
            .send();
        let error = result.expect_err("a request whose body fails cannot succeed");
        assert!(format!("{error:?}").contains("the client gives up half-way"), "attempt {attempt}: {error:?}");

        assert_eq!(served(&server, gun), before, "a half upload changed what is served (attempt {attempt})");
        let health = server.get("/_notary_server/health");
        assert_eq!(health.status, 200, "health after half uploads (attempt {attempt}): {health}");
    }

    let v2 = tufa_tests::flows::publish_target(&owner, gun, "v2", b"two\n");
    let reader = tufa_tests::notary::Notary::new(&server, "reader");
    assert_eq!(reader.list(gun, None), tufa_tests::flows::sorted(&[v1, v2]));
}

/// Size of the tmpfs the SQLite test runs on.
const DISK_KIB: u64 = 16 * 1024;

/// Size of the file placed on it beforehand, deleted to free space again.
const FILLER_BYTES: usize = 8 << 20;

/// Size of the custom data that makes each published targets file large.
const CUSTOM_BYTES: usize = 1 << 20;

/// A JSON object with a string of `length` pseudo-random letters and digits, different for every
/// `seed` (so nothing can share storage between rounds).
fn custom_json(length: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut text = b"{\"filler\":\"".to_vec();
    for _ in 0..length {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
    }
    text.extend_from_slice(b"\"}");
    text
}

/// tufa-server on SQLite with its data directory on a 12 MiB tmpfs that also holds a 3 MiB
/// filler file. A client publishes a 1 MiB targets file (a target with large custom data) again
/// and again until the disk is full: the failing publish is answered with a 5xx, not a crash;
/// reads keep serving the last acknowledged state; once the filler is deleted the staged publish
/// succeeds, without a restart.
#[test]
fn sqlite_on_a_full_disk_fails_publishes_and_recovers() {
    let disk = tufa_tests::tmpfs::Tmpfs::mount(DISK_KIB);
    let filler = disk.path().join("filler.bin");
    std::fs::write(&filler, vec![0x5a; FILLER_BYTES]).expect("write the filler file");
    let data_dir = disk.path().join("data");
    let server = tufa_tests::tufa::start_with_data_dir(
        Options {
            name: "tufa-server (sqlite on a small tmpfs)".into(),
            database_url: None,
            database: None,
            extra_args: Vec::new(),
        },
        &data_dir,
    );
    let gun = "tufa.test/full-disk";
    let owner = tufa_tests::notary::Notary::new(&server, "owner");
    tufa_tests::flows::init_with_server_snapshot(&owner, gun);
    let v1 = tufa_tests::flows::publish_target(&owner, gun, "v1", b"one\n");

    // Round k replaces target "big" by a file saying k, with 1 MiB of custom data of its own.
    let stage = |round: u64| {
        let file = owner.write_file(&format!("big{round}.bin"), format!("round {round}\n").as_bytes());
        let custom = owner.write_file("custom.json", &custom_json(CUSTOM_BYTES, round));
        (file, custom)
    };
    let mut acknowledged = served(&server, gun);
    let mut round = 0;
    let failure = loop {
        round += 1;
        assert!(round <= 30, "{DISK_KIB} KiB held 30 publishes of 1 MiB: the disk never filled");
        let (file, custom) = stage(round);
        let output = owner.run(&[
            "add",
            "-p",
            gun,
            "big",
            tufa_tests::flows::path_arg(&file),
            "--custom",
            tufa_tests::flows::path_arg(&custom),
        ]);
        if !output.success() {
            break output;
        }
        acknowledged = served(&server, gun);
    };
    assert!(round > 1, "the first large publish already failed:\n{failure}");
    // A full disk is a 503 UNAVAILABLE (SQLite's "database or disk is full" is a passing
    // condition), which the notary client reports with the status.
    assert!(
        failure.stdout.contains("* fatal: unable to reach trust server at this time: 503."),
        "the publish that found the disk full (round {round}):\n{failure}"
    );

    // Reads serve the last acknowledged state, and the server is healthy for reads.
    assert_eq!(served(&server, gun), acknowledged, "what is served after the failed publish");
    let health = server.get("/_notary_server/health");
    assert_eq!((health.status, health.json()), (200, serde_json::json!({})), "health on a full disk: {health}");

    // Space again: the publish the client still has staged goes through at once, then another.
    std::fs::remove_file(&filler).expect("delete the filler file");
    let output = owner.run(&["publish", gun]);
    assert!(
        output.success(),
        "once space was freed, the publish the client had staged must succeed without a restart of the server; \
         server log:\n{}\n{output}",
        tufa_tests::process::log_tail(server.log(), 2000)
    );
    let (file, _) = stage(round);
    let big = tufa_tests::flows::listed("big", &file, "targets");
    let reader = tufa_tests::notary::Notary::new(&server, "reader");
    assert_eq!(reader.list(gun, None), tufa_tests::flows::sorted(&[big, v1.clone()]));
    let small = owner.write_file("v2.bin", b"two\n");
    let output = owner.run(&["add", "-p", gun, "v2", tufa_tests::flows::path_arg(&small)]);
    assert!(
        output.success(),
        "a second publish after space was freed must succeed; server log:\n{}\n{output}",
        tufa_tests::process::log_tail(server.log(), 3000)
    );
    let v2 = tufa_tests::flows::listed("v2", &small, "targets");
    let big = tufa_tests::flows::listed("big", &file, "targets");
    assert_eq!(reader.list(gun, None), tufa_tests::flows::sorted(&[big, v1, v2]));
    assert_eq!(server.get("/_notary_server/health").status, 200);
    // The server stops before the tmpfs under its data directory is unmounted.
    drop(server);
    drop(disk);
}
