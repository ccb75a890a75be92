//! `tufa-signer audit verify`, `audit checkpoint` and the signature listing, run as the binary
//! against a log built on SQLite and on PostgreSQL: the report, the JSON form, the exit statuses
//! (0 intact, 1 problems, 2 could not check) and the warning for a key read from the database.

use std::process::Command;
use std::time::Duration;

use tufa_testkit::process::{CommandOutput, run_with_timeout};

use crate::audit::tamper_target;
use crate::support::TestDb;

/// Runs `tufa-signer audit <arguments>` on `db`, with no TUFA_SIGNER_* variables.
fn audit(db: &TestDb, arguments: &[&str]) -> CommandOutput {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tufa-signer"));
    command.arg("audit").args(arguments).arg("--database-url").arg(db.url());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TUFA_SIGNER_") {
            command.env_remove(name);
        }
    }
    run_with_timeout(&mut command, b"", Duration::from_secs(60)).unwrap()
}

fn status(output: &CommandOutput) -> i32 {
    output.status.and_then(|status| status.code()).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_on_sqlite() {
    audit_commands(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_on_postgres() {
    audit_commands(TestDb::postgres()).await;
}

async fn audit_commands(db: TestDb) {
    let (store, checkpoints) = tamper_target(&db).await;
    let vkey = checkpoints.key().vkey();
    store.close().await;

    // The latest checkpoint and the key to pin.
    let checkpoint = audit(&db, &["checkpoint"]);
    assert_eq!(status(&checkpoint), 0, "{checkpoint}");
    let latest = store_latest_note(&db).await;
    assert_eq!(checkpoint.stdout, format!("{latest}\nvkey: {vkey}\n"));

    // Pinned: intact, exit 0, no warning.
    let pinned = audit(&db, &["verify", "--checkpoint-key", &vkey]);
    assert_eq!(status(&pinned), 0, "{pinned}");
    assert!(
        pinned.stdout.contains(&format!("checkpoint key: {vkey} (pinned)\nentries: 9\ncheckpoints verified: 1\n")),
        "{pinned}"
    );
    assert!(pinned.stdout.contains("\nOK: "), "{pinned}");
    assert!(!pinned.stderr.contains("warning"), "{pinned}");

    // Unpinned: the same verdict, with a warning naming the key to pin.
    let unpinned = audit(&db, &["verify"]);
    assert_eq!(status(&unpinned), 0, "{unpinned}");
    assert!(
        unpinned.stderr.contains(&format!(
            "warning: the checkpoint key was taken from the database being verified; pin it with --checkpoint-key {vkey}"
        )),
        "{unpinned}"
    );

    // The signature listing keeps working, now with each signature's log position.
    let listing = audit(&db, &["--limit", "2"]);
    assert_eq!(status(&listing), 0, "{listing}");
    let lines: Vec<serde_json::Value> =
        listing.stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["audit_seq"].as_i64(), lines[1]["audit_seq"].as_i64()), (Some(1), Some(2)));

    // Tampered: exit 1, each problem with its position; the JSON form says the same.
    db.execute(r#"UPDATE signer_audit_entries SET details = '{"forged":true}' WHERE seq = 3"#).await;
    let tampered = audit(&db, &["verify", "--checkpoint-key", &vkey]);
    assert_eq!(status(&tampered), 1, "{tampered}");
    assert!(
        tampered.stdout.contains("PROBLEMS: 2\n  position 3: edited: the entry at position 3 (sign, "),
        "{tampered}"
    );
    assert!(tampered.stdout.contains("\n  position 0: checkpoint_mismatch: "), "{tampered}");
    assert!(tampered.stderr.contains("the audit log has 2 problem(s)"), "{tampered}");
    let json = audit(&db, &["verify", "--checkpoint-key", &vkey, "--json"]);
    assert_eq!(status(&json), 1, "{json}");
    let report: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["checkpoint_key"], vkey.as_str());
    assert_eq!(report["checkpoint_key_pinned"], true);
    assert_eq!(report["report"]["entries"], 9);
    assert_eq!(report["report"]["problems"][0]["position"], 3);
    assert_eq!(report["report"]["problems"][0]["kind"], "edited");

    // No database where the flags point: the check cannot run, exit 2, and nothing is created.
    let nowhere = tempfile::tempdir().unwrap();
    let missing = nowhere.path().join("data").join("tufa-signer.db");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tufa-signer"));
    command.args(["audit", "verify", "--database-url"]).arg(format!("sqlite:{}", missing.display()));
    let absent = run_with_timeout(&mut command, b"", Duration::from_secs(60)).unwrap();
    assert_eq!(status(&absent), 2, "{absent}");
    assert!(absent.stderr.contains(&format!("there is no signer database at {}", missing.display())), "{absent}");
    assert!(!nowhere.path().join("data").exists(), "verify created nothing");

    // A key that cannot be read: the check cannot run, exit 2.
    let bad = audit(&db, &["verify", "--checkpoint-key", "nonsense"]);
    assert_eq!(status(&bad), 2, "{bad}");
    assert!(
        bad.stderr.contains("the audit log could not be verified: audit checkpoint: malformed checkpoint verifier key"),
        "{bad}"
    );
}

async fn store_latest_note(db: &TestDb) -> String {
    let store = db.store().await;
    let note = store.latest_checkpoint().await.unwrap().unwrap().note;
    store.close().await;
    note
}
