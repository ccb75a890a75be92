//! The audit log end to end, on SQLite and PostgreSQL: a delegated publish with the real notary
//! CLI is recorded with its grants and tag history, a refused publish records nothing, the
//! shutdown checkpoint makes `tufa-server audit verify` pass, and rows edited, deleted, inserted or
//! reordered behind the server's back are each reported with their position.

use std::process::Command;

use tufa_tests::flows::{RELEASES, delegation_key, init_with_server_snapshot, path_arg, publish_delegated};
use tufa_tests::notary::Notary;
use tufa_tests::tufa::{AuthServer, Backend, start_with_auth};

const GUN: &str = "tufa.test/audited";

fn lines(output: &str) -> Vec<serde_json::Value> {
    output.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

fn log(server: &AuthServer) -> Vec<serde_json::Value> {
    let output = server.audit(&["log"]);
    assert!(output.success(), "audit log: {output}");
    lines(&output.stdout)
}

/// Runs one SQL statement against the server's database behind its back.
fn tamper(server: &AuthServer, sql: &str) {
    let status = match server.database_url() {
        Some(url) => Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]).status(),
        None => Command::new("sqlite3").arg(server.data_dir().join("tufa.db")).arg(sql).status(),
    }
    .expect("run the database client");
    assert!(status.success(), "tampering with {sql:?} failed");
}

fn verify(server: &AuthServer, vkey: &str) -> (i32, String) {
    let output = server.audit(&["verify", "--checkpoint-key", vkey]);
    let code = output.status.and_then(|status| status.code()).expect("verify exited");
    (code, output.stdout)
}

fn scenario(backend: Backend) {
    let mut server = start_with_auth(backend, "tufa-server audit", Vec::new());
    let owner = Notary::new(&server, "owner");
    let delegate = Notary::new(&server, "delegate");
    init_with_server_snapshot(&owner, GUN);
    let key = delegation_key(&delegate);
    owner.ok(&["delegation", "add", "-p", GUN, RELEASES, path_arg(&key.cert), "--all-paths"]);
    let target = publish_delegated(&delegate, GUN, "v1", b"release one\n", RELEASES);

    // Who may sign: the delegation, with the delegate's certificate key.
    let grants = server.audit(&["grants", GUN]);
    assert!(grants.success(), "{grants}");
    let grants = lines(&grants.stdout);
    let releases: Vec<&serde_json::Value> = grants.iter().filter(|grant| grant["role"] == RELEASES).collect();
    assert_eq!(releases.len(), 1, "{grants:?}");
    assert_eq!(releases[0]["delegating_role"], "targets");
    assert_eq!(releases[0]["paths"], serde_json::json!([""]));
    let keyid = releases[0]["keys"][0]["keyid"].as_str().expect("key id").to_owned();
    assert!(releases[0]["keys"][0]["subject"].as_str().is_some(), "{:?}", releases[0]);
    let key_grants = lines(&server.audit(&["key-grants", &keyid]).stdout);
    assert_eq!(key_grants.len(), 1, "{key_grants:?}");
    assert_eq!(key_grants[0]["gun"], GUN);
    for base in ["root", "targets", "snapshot", "timestamp"] {
        assert!(grants.iter().any(|grant| grant["delegating_role"] == "root" && grant["role"] == base), "{base}");
    }

    // Who signed tag v1: the delegate's key, through targets/releases.
    let history = lines(&server.audit(&["history", GUN, "v1"]).stdout);
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["change"], "added");
    assert_eq!(history[0]["sha256"], target.digest.as_str());
    assert_eq!(history[0]["length"], target.size);
    assert_eq!(history[0]["role"], RELEASES);
    assert_eq!(history[0]["signer_keys"], serde_json::json!([keyid]));

    // A refused publish records nothing.
    let before = log(&server).len();
    let refused = server.post_update(GUN, &[("targets", b"{\"signed\": {}}" as &[u8])]);
    assert_eq!(refused.status, 400, "{refused}");
    assert_eq!(log(&server).len(), before);
    let entries = log(&server);
    let kinds: Vec<&str> = entries.iter().map(|entry| entry["kind"].as_str().expect("kind")).collect();
    assert!(kinds.contains(&"publish") && kinds.contains(&"key.create"), "{kinds:?}");
    let publishes = entries.iter().filter(|entry| entry["kind"] == "publish").count();
    assert_eq!(publishes, 3, "init, delegation add, delegated publish: {kinds:?}");

    // The shutdown checkpoint covers everything; the log verifies against the pinned key.
    server.server_mut().terminate();
    let checkpoint = server.audit(&["checkpoint"]);
    assert!(checkpoint.success(), "{checkpoint}");
    let vkey = checkpoint.stdout.lines().find_map(|line| line.strip_prefix("verifier key: ")).expect("vkey").to_owned();
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("OK: the log is intact"), "{report}");
    // The shutdown checkpoint created the checkpoint key, which is recorded too.
    let size = log(&server).len();
    assert_eq!(size, entries.len() + 1);

    // Edited.
    tamper(&server, "UPDATE audit_log SET details = '{\"forged\":true}' WHERE seq = 1");
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("PROBLEM at 1: the entry at position 1"), "{report}");
    // Deleted.
    tamper(&server, "DELETE FROM audit_keys_used WHERE seq = 3");
    tamper(&server, "DELETE FROM audit_log WHERE seq = 3");
    let (_, report) = verify(&server, &vkey);
    assert!(report.contains("PROBLEM at 3: the entry at position 3 is missing"), "{report}");
    // Inserted beyond the end: a gap, and a checkpoint that no longer matches.
    tamper(
        &server,
        &format!(
            "INSERT INTO audit_log (seq, created_at, kind, details, leaf_hash) VALUES ({}, {}, 'publish', '{{}}', '00')",
            size + 5,
            if server.database_url().is_some() { "now()" } else { "0" }
        ),
    );
    let (_, report) = verify(&server, &vkey);
    assert!(report.contains(&format!("PROBLEM at {size}: the entries at positions {size} to")), "{report}");
    // Reordered: entries 0 and 2 swap places.
    tamper(&server, "DELETE FROM audit_keys_used WHERE seq IN (0, 2)");
    tamper(&server, "UPDATE audit_log SET seq = 1000000 WHERE seq = 0");
    tamper(&server, "UPDATE audit_log SET seq = 0 WHERE seq = 2");
    tamper(&server, "UPDATE audit_log SET seq = 2 WHERE seq = 1000000");
    let (_, report) = verify(&server, &vkey);
    assert!(report.contains("PROBLEM at 0: the entry at position 0"), "{report}");
    assert!(report.contains("PROBLEM at 2: the entry at position 2"), "{report}");
}

#[test]
fn sqlite() {
    scenario(Backend::Sqlite);
}

#[test]
fn postgres() {
    scenario(Backend::Postgres);
}
