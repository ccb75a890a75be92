//! tufa-server with a separate tufa-signer when the signer misbehaves: it goes away (the
//! connection is cut at a proxy), hangs (the process is frozen), or stops trusting the server's
//! client certificate. Reads never depend on the signer; publishes fail fast with 503
//! `UNAVAILABLE` and write nothing; everything works again once the signer is back, without
//! restarting the server.

use std::process::Command;
use std::time::{Duration, Instant};

use tufa_tests::notary::Notary;
use tufa_tests::pki::{Pki, Usage};
use tufa_tests::process::{run_tool, run_with_timeout};
use tufa_tests::server::{HttpResponse, Server};
use tufa_tests::signer::{KeyBackend, Signer, Stack};

/// How long a failing publish may take at most (the server's signer deadlines are 2 s to
/// connect and 5 s per call).
const FAIL_FAST: Duration = Duration::from_secs(10);

/// `notary init` plus `notary key rotate <gun> snapshot -r` (the server holds the snapshot key,
/// so an update with no parts is valid and makes the server sign a snapshot and a timestamp),
/// then `v1` published.
fn repository_with_server_snapshot(owner: &Notary, gun: &str) {
    owner.ok(&["init", gun]);
    owner.ok(&["key", "rotate", gun, "snapshot", "-r"]);
    publish(owner, gun, "v1");
}

fn publish(owner: &Notary, gun: &str, name: &str) {
    let file = owner.write_file(&format!("{name}.bin"), name.as_bytes());
    owner.ok(&["add", "-p", gun, name, file.to_str().expect("UTF-8 path")]);
}

fn target_names(client: &Notary, gun: &str) -> Vec<String> {
    client.list(gun, None).into_iter().map(|target| target.name).collect()
}

fn timestamp_version(server: &Server, gun: &str) -> u64 {
    server.metadata_json(gun, "timestamp")["signed"]["version"].as_u64().expect("timestamp version")
}

/// Lower-case hex SHA-256 of `bytes`, from coreutils' `sha256sum`.
fn sha256_hex(bytes: &[u8]) -> String {
    let output = run_with_timeout(&mut Command::new("sha256sum"), bytes, Duration::from_secs(30));
    assert!(output.success(), "sha256sum failed:\n{output}");
    output.stdout.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Every way a reader fetches `gun`'s metadata: current files, by version and by checksum,
/// each with the bytes served now.
fn reads(server: &Server, gun: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let current = server.metadata(gun, &format!("{role}.json"));
        assert_eq!(current.status, 200, "GET {role}.json: {current}");
        let body: serde_json::Value = current.json();
        let version = body["signed"]["version"].as_u64().expect("signed.version");
        files.push((format!("{version}.{role}.json"), current.body.clone()));
        files.push((format!("{role}.{}.json", sha256_hex(&current.body)), current.body.clone()));
        files.push((format!("{role}.json"), current.body));
    }
    files
}

/// Every read still answers 200 with the same bytes, quickly.
#[track_caller]
fn assert_reads_unchanged(server: &Server, gun: &str, expected: &[(String, Vec<u8>)], when: &str) {
    for (file, bytes) in expected {
        let started = Instant::now();
        let response = server.metadata(gun, file);
        assert_eq!(response.status, 200, "GET {file} {when}: {response}");
        assert!(response.body == *bytes, "GET {file} {when} serves other bytes than before");
        assert!(started.elapsed() < Duration::from_secs(2), "GET {file} {when} took {:?}", started.elapsed());
    }
}

/// `503` with the single error code `UNAVAILABLE`, within [`FAIL_FAST`].
#[track_caller]
fn assert_unavailable(what: &str, response: &HttpResponse, elapsed: Duration) {
    assert_eq!(response.status, 503, "{what}: {response}");
    assert_eq!(response.error_code().as_deref(), Some("UNAVAILABLE"), "{what}: {response}");
    assert!(elapsed < FAIL_FAST, "{what} took {elapsed:?}; it must fail within {FAIL_FAST:?}");
}

/// Health answers 503 and names only the signer ("Trust operational"), without its error text.
#[track_caller]
fn assert_trust_unhealthy(server: &Server, when: &str) {
    let started = Instant::now();
    let health = server.get("/_notary_server/health");
    assert_eq!(health.status, 503, "health {when}: {health}");
    assert_eq!(health.json(), serde_json::json!({"Trust operational": "unavailable"}), "health {when}: {health}");
    assert!(started.elapsed() < FAIL_FAST, "health {when} took {:?}", started.elapsed());
}

/// While the signer is unusable: reads unchanged, health 503, key lookups and an update that
/// needs signatures 503 fast, `notary add -p` fails fast, and nothing is written.
#[track_caller]
fn assert_degraded(stack: &Stack, owner: &Notary, gun: &str, before: &[(String, Vec<u8>)], when: &str) {
    assert_reads_unchanged(stack, gun, before, when);
    assert_trust_unhealthy(stack, when);

    // Repeated: the first call on a broken connection and later ones may fail differently.
    for attempt in 1..=3 {
        let started = Instant::now();
        let key = stack.metadata(gun, "timestamp.key");
        assert_unavailable(&format!("GET timestamp.key {when} (attempt {attempt})"), &key, started.elapsed());

        let started = Instant::now();
        let update = stack.post_update(gun, &[]);
        let what = format!("an update that needs the server's signatures {when} (attempt {attempt})");
        assert_unavailable(&what, &update, started.elapsed());
    }

    let file = owner.write_file("v2.bin", b"v2");
    let started = Instant::now();
    let output = owner.fails(&["add", "-p", gun, "v2", file.to_str().expect("UTF-8 path")]);
    let elapsed = started.elapsed();
    assert!(elapsed < FAIL_FAST, "`notary add -p` {when} took {elapsed:?}:\n{output}");

    assert_reads_unchanged(stack, gun, before, &format!("{when}, after the failed publishes"));
}

/// Once the signer is back: health 200, the staged `v2` publishes, an empty update re-signs.
#[track_caller]
fn assert_recovered(stack: &Stack, owner: &Notary, gun: &str) {
    let health = stack.get("/_notary_server/health");
    assert_eq!(health.status, 200, "health once the signer is back: {health}");
    // The failed `add -p` left v2 in the client's change list.
    owner.ok(&["publish", gun]);
    assert_eq!(target_names(owner, gun), ["v1", "v2"]);
    let version = timestamp_version(stack, gun);
    let update = stack.post_update(gun, &[]);
    assert_eq!(update.status, 200, "an empty update once the signer is back: {update}");
    assert_eq!(timestamp_version(stack, gun), version + 1);
    assert_eq!(target_names(&Notary::new(stack, "reader"), gun), ["v1", "v2"]);
    stack.check_after_flow();
}

#[test]
fn signer_outage_keeps_reads_and_fails_publishes_fast() {
    let stack = Stack::tufa_server_via_proxy(Signer::tufa(KeyBackend::Software));
    let gun = "tufa.test/signer-outage";
    let owner = Notary::new(&stack, "owner");
    repository_with_server_snapshot(&owner, gun);
    // The empty update is valid: the server signs a new snapshot and timestamp.
    let version = timestamp_version(&stack, gun);
    let update = stack.post_update(gun, &[]);
    assert_eq!(update.status, 200, "an empty update with a server-held snapshot key: {update}");
    assert_eq!(timestamp_version(&stack, gun), version + 1);
    let before = reads(&stack, gun);

    stack.proxy().cut();
    assert_degraded(&stack, &owner, gun, &before, "while the signer is unreachable");

    stack.proxy().restore();
    assert_recovered(&stack, &owner, gun);
}

#[test]
fn hung_signer_fails_publishes_within_the_deadline() {
    let stack = Stack::tufa_server(Signer::tufa(KeyBackend::Software));
    let gun = "tufa.test/signer-hangs";
    let owner = Notary::new(&stack, "owner");
    repository_with_server_snapshot(&owner, gun);
    let before = reads(&stack, gun);

    // Frozen, the signer accepts connections but never answers: every signer call runs into
    // the server's deadline. (Shorter than assert_degraded: each failure takes the deadline.)
    stack.signer().pause();
    assert_reads_unchanged(&stack, gun, &before, "while the signer hangs");
    let started = Instant::now();
    let update = stack.post_update(gun, &[]);
    assert_unavailable(
        "an update that needs the server's signatures while the signer hangs",
        &update,
        started.elapsed(),
    );
    assert_reads_unchanged(&stack, gun, &before, "while the signer hangs, after the failed update");

    stack.signer().resume();
    publish(&owner, gun, "v2");
    assert_eq!(target_names(&owner, gun), ["v1", "v2"]);
    assert_eq!(stack.get("/_notary_server/health").status, 200);
    stack.check_after_flow();
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let mut stack = Stack::tufa_server(Signer::tufa(KeyBackend::Software));
    let gun = "tufa.test/signer-distrust";
    let owner = Notary::new(&stack, "owner");
    repository_with_server_snapshot(&owner, gun);
    let before = reads(&stack, gun);

    // The signer now accepts only clients of another CA: tufa-server's certificate is foreign.
    let other = Pki::create(&stack.signer().dir().join("other-ca"));
    let stranger = other.issue("stranger", &[], Usage::Client);
    stack.signer_mut().restart_trusting(other.ca_cert(), &stranger);
    // The signer is up and serving clients of the other CA, and the request with tufa-server's
    // certificate fails in the transport (TLS), not with a health status.
    assert_eq!(stack.signer().health_with(&stranger), Ok(()));
    let refused = stack.signer().health_with(&stack.signer().tls().client.clone()).unwrap_err();
    assert!(
        refused.starts_with("health check of grpc.health.v1.Health.KeyManagement failed: reqwest::Error"),
        "the signer must refuse tufa-server's certificate after the restart: {refused}"
    );
    assert_degraded(&stack, &owner, gun, &before, "while the signer refuses tufa-server's certificate");

    let client_ca = stack.signer().tls().client_ca.clone();
    let client = stack.signer().tls().client.clone();
    stack.signer_mut().restart_trusting(&client_ca, &client);
    assert_recovered(&stack, &owner, gun);
}

/// A tufa-signer whose KEK file was replaced by another KEK refuses to start, with status 2 and
/// a message naming the KEK, instead of serving and failing every signature with the keys the
/// old KEK sealed.
#[test]
fn signer_with_a_kek_that_does_not_open_its_keys_refuses_to_start() {
    let stack = Stack::tufa_server(Signer::tufa(KeyBackend::Software));
    let owner = Notary::new(stack.server(), "owner");
    repository_with_server_snapshot(&owner, "example.com/kek");

    // The running signer keeps its KEK in memory; the file on disk now holds another KEK.
    let kek_file = stack.signer().dir().join("kek-test");
    std::fs::remove_file(&kek_file).expect("remove the KEK file");
    let binary = tufa_tests::tufa::workspace_binary("tufa-signer", "TUFA_SIGNER_BIN");
    run_tool(Command::new(binary).arg("gen-kek").arg("--out").arg(&kek_file));

    let output = stack.signer().run_again_until_exit(Duration::from_secs(60));
    assert_eq!(output.status.and_then(|status| status.code()), Some(2), "{output}");
    assert!(output.stderr.contains("the configured KEK \"test\" cannot open key "), "{output}");
    assert!(output.stderr.contains("it is not the KEK that sealed the keys; configure the right one"), "{output}");
}
