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
    // The same proofs and answers as the API, from the CLI: the inclusion of the last entry and
    // the consistency of the first entry's tree with the checkpoint's.
    let json_report = server.audit(&["verify", "--checkpoint-key", &vkey, "--json"]);
    let json_report: serde_json::Value = serde_json::from_str(&json_report.stdout).expect("JSON report");
    let checkpoint_size = json_report["latest"]["size"].as_u64().expect("size");
    let root = json_report["latest"]["root"].clone();
    let last = (checkpoint_size - 1).to_string();
    let inclusion = lines(&server.audit(&["prove", "inclusion", &last, &checkpoint_size.to_string()]).stdout);
    assert_eq!(inclusion[0]["root"], root, "{inclusion:?}");
    let consistency = lines(&server.audit(&["prove", "consistency", "1", &checkpoint_size.to_string()]).stdout);
    assert_eq!(consistency[0]["new_root"], root, "{consistency:?}");
    let refused = server.audit(&["prove", "inclusion", "5", "1000000"]);
    assert_eq!(refused.status.and_then(|status| status.code()), Some(2), "{refused}");
    let changes = lines(&server.audit(&["grant-changes", GUN]).stdout);
    assert!(
        changes.iter().any(|change| change["role"] == RELEASES && change["change"] == "added"),
        "the delegate's addition: {changes:?}"
    );
    // The checkpoint key was created (and recorded) at start-up; the shutdown checkpoint adds no entry.
    let size = log(&server).len();
    assert_eq!(size, entries.len());

    // Who signed a tag, rewritten behind the server's back: the entry that recorded the publish
    // names other signing keys for the delegate's file.
    let recorded_by = history[0]["audit_seq"].as_u64().expect("audit_seq");
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 0, "{report}");
    tamper(&server, "UPDATE target_history SET signer_keys = '[\"0000\"]' WHERE name = 'v1'");
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!(
            "PROBLEM at {recorded_by}: the tag history of the entry at position {recorded_by} names other signing keys"
        )),
        "{report}"
    );
    // Put back, the log verifies again; then who published it, rewritten.
    let signers = serde_json::to_string(&history[0]["signer_keys"]).expect("signer keys");
    tamper(&server, &format!("UPDATE target_history SET signer_keys = '{signers}' WHERE name = 'v1'"));
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 0, "{report}");
    tamper(&server, "UPDATE target_history SET principal = 'mallory' WHERE name = 'v1'");
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains(&format!("PROBLEM at {recorded_by}: the tag history of the entry")), "{report}");

    // A tag-history row rewritten behind the server's back: the entry that wrote it disagrees.
    tamper(&server, "UPDATE target_history SET sha256 = '00' WHERE name = 'v1'");
    let (code, report) = verify(&server, &vkey);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!("PROBLEM at {recorded_by}: the tag history of the entry at position {recorded_by}")),
        "{report}"
    );

    // A delegate's grant widened behind the server's back: the entry that wrote it disagrees.
    let granted_by = releases[0]["audit_seq"].as_u64().expect("audit_seq");
    tamper(&server, "UPDATE grants SET threshold = 0 WHERE delegated_role = 'targets/releases'");
    let (_, report) = verify(&server, &vkey);
    assert!(
        report.contains(&format!("PROBLEM at {granted_by}: the grants of the entry at position {granted_by}")),
        "{report}"
    );

    // A delegate in force removed behind the server's back, in the name of the last publish: that
    // publish recorded the grants it ended, and this one is not among them.
    tamper(
        &server,
        &format!(
            "UPDATE grants SET superseded_at = created_at, superseded_seq = {recorded_by} \
             WHERE delegated_role = 'targets/releases'"
        ),
    );
    let (_, report) = verify(&server, &vkey);
    assert!(
        report.contains(&format!("PROBLEM at {recorded_by}: the grants ended by the entry at position {recorded_by}")),
        "{report}"
    );
    // A base role's grant given an end that no entry recorded: reported at the entry that made it.
    let snapshot_grant = grants
        .iter()
        .find(|grant| grant["delegating_role"] == "root" && grant["role"] == "snapshot")
        .expect("the snapshot grant");
    let made_by = snapshot_grant["audit_seq"].as_u64().expect("audit_seq");
    tamper(
        &server,
        "UPDATE grants SET superseded_at = created_at WHERE delegating_role = 'root' AND delegated_role = 'snapshot'",
    );
    let (_, report) = verify(&server, &vkey);
    assert!(
        report.contains(&format!("PROBLEM at {made_by}: a grant made by the entry at position {made_by} has an end")),
        "{report}"
    );

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

/// Runs SQL against a database given by URL or SQLite file.
fn sql(database_url: Option<&str>, sqlite: &std::path::Path, statement: &str) {
    let status = match database_url {
        Some(url) => Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", statement]).status(),
        None => Command::new("sqlite3").arg(sqlite).arg(statement).status(),
    }
    .expect("run the database client");
    assert!(status.success(), "{statement:?} failed");
}

/// The fields of a JSON line that a rebuild can know (no principal, no audit entry, no times).
fn without(mut value: serde_json::Value, fields: &[&str]) -> serde_json::Value {
    let object = value.as_object_mut().expect("an object");
    for field in fields {
        object.remove(*field);
    }
    value
}

/// A database from before the record: the server rebuilds grants and tag history from the stored
/// metadata at its next start, records that it did, and the log still verifies.
fn backfill(backend: Backend) {
    use tufa_tests::flows::publish_target;
    use tufa_tests::tufa::{Options, audit, start_with_data_dir};
    let database = (backend == Backend::Postgres).then(tufa_tests::postgres::PgDatabase::create);
    let url = database.as_ref().map(|database| database.url().to_owned());
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let options = || Options {
        name: format!("tufa-server backfill ({})", backend.name()),
        database_url: url.clone(),
        database: None,
        extra_args: Vec::new(),
    };
    let run = |args: &[&str]| {
        let output = audit(&data, url.as_deref(), args);
        assert!(output.success(), "audit {args:?}: {output}");
        lines(&output.stdout)
    };
    let mut server = start_with_data_dir(options(), &data);
    let owner = Notary::new(&server, "owner");
    init_with_server_snapshot(&owner, GUN);
    publish_target(&owner, GUN, "v1", b"first\n");
    publish_target(&owner, GUN, "v1", b"second\n");
    let grants = run(&["grants", GUN]);
    let history = run(&["history", GUN, "v1"]);
    assert_eq!(history.len(), 2, "{history:#?}");
    server.terminate();
    drop(server);

    // Forget the record, as a database of the previous version would not have it.
    let sqlite = data.join("tufa.db");
    for statement in [
        "DELETE FROM grant_keys",
        "DELETE FROM grants",
        "DELETE FROM target_history",
        "DELETE FROM audit_state",
        "DELETE FROM audit_keys_used",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_hashes",
        "DELETE FROM audit_log",
        "DELETE FROM audit_signing_keys",
    ] {
        sql(url.as_deref(), &sqlite, statement);
    }
    assert_eq!(run(&["grants", GUN]), Vec::<serde_json::Value>::new());

    let mut server = start_with_data_dir(options(), &data);
    let unknowable = ["principal", "audit_seq", "since", "until", "until_seq", "time"];
    let rebuilt: Vec<serde_json::Value> = run(&["grants", GUN]).into_iter().map(|g| without(g, &unknowable)).collect();
    let expected: Vec<serde_json::Value> = grants.into_iter().map(|g| without(g, &unknowable)).collect();
    assert_eq!(rebuilt, expected);
    for grant in run(&["grants", GUN]) {
        assert_eq!(
            (grant["principal"].clone(), grant["audit_seq"].clone()),
            (serde_json::Value::Null, serde_json::Value::Null)
        );
    }
    let rebuilt: Vec<serde_json::Value> =
        run(&["history", GUN, "v1"]).into_iter().map(|e| without(e, &unknowable)).collect();
    let expected: Vec<serde_json::Value> = history.into_iter().map(|e| without(e, &unknowable)).collect();
    assert_eq!(rebuilt, expected);
    let backfills: Vec<serde_json::Value> =
        run(&["log"]).into_iter().filter(|entry| entry["kind"] == "backfill").collect();
    assert_eq!(backfills.len(), 2, "one for the repository, one for the whole run: {backfills:?}");
    assert_eq!(backfills[0]["gun"], GUN);
    // A second start rebuilds nothing again.
    server.terminate();
    drop(server);
    let mut server = start_with_data_dir(options(), &data);
    server.terminate();
    let backfills = run(&["log"]).into_iter().filter(|entry| entry["kind"] == "backfill").count();
    assert_eq!(backfills, 2);
    let checkpoint = run_text(&data, url.as_deref(), &["checkpoint"]);
    let vkey = checkpoint.lines().find_map(|line| line.strip_prefix("verifier key: ")).expect("vkey").to_owned();
    let output = audit(&data, url.as_deref(), &["verify", "--checkpoint-key", &vkey]);
    assert!(output.success(), "{output}");
    drop(server);
    drop(database);
}

fn run_text(data: &std::path::Path, url: Option<&str>, args: &[&str]) -> String {
    let output = tufa_tests::tufa::audit(data, url, args);
    assert!(output.success(), "{output}");
    output.stdout
}

#[test]
fn backfill_sqlite() {
    backfill(Backend::Sqlite);
}

#[test]
fn backfill_postgres() {
    backfill(Backend::Postgres);
}
