//! Start-up tells the truth, for both binaries: a busy port is named and leaves nothing on disk,
//! an invalid log filter is a configuration error (status 2), `--help` and `--version` succeed,
//! and with `--log-format json` every line written to stderr is JSON.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tufa_tests::process::{CommandOutput, run_with_timeout};
use tufa_tests::tufa;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The server, with no log filter inherited from the test's environment.
fn server() -> Command {
    let mut command = Command::new(tufa::binary());
    command.env_remove("TUFA_LOG").env_remove("TUFA_LOG_FORMAT");
    command
}

/// The signer, with no log filter inherited from the test's environment.
fn signer() -> Command {
    let mut command = Command::new(tufa::workspace_binary("tufa-signer", "TUFA_SIGNER_BIN"));
    command.env_remove("TUFA_SIGNER_LOG").env_remove("TUFA_SIGNER_LOG_FORMAT");
    command
}

fn run(command: &mut Command) -> CommandOutput {
    run_with_timeout(command, b"", TIMEOUT)
}

fn exit_code(output: &CommandOutput) -> Option<i32> {
    output.status.and_then(|status| status.code())
}

/// A listener holding a port, and the `127.0.0.1:PORT` text of it.
fn occupied_port() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

#[test]
fn server_on_a_busy_port_names_it_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_held, address) = occupied_port();
    let output = run(server().args(["--listen", &address, "--data-dir"]).arg(&data));
    assert_eq!(exit_code(&output), Some(1), "{output}");
    let expected = format!("tufa-server: cannot listen on {address}: Address already in use");
    assert!(output.stderr.starts_with(&expected), "{output}");
    assert!(output.stderr.contains("choose another --listen"), "{output}");
    assert!(!data.exists(), "the data directory was created before the listener was bound:\n{output}");
}

/// A KEK file that group or others may read is refused with status 2 and the `chmod` that fixes it,
/// before the data directory or the database is created.
#[test]
fn server_refuses_a_group_readable_kek_file_and_creates_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = run(server().args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).arg("--kek-file").arg(&kek));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    let shown = kek.display();
    assert_eq!(
        output.stderr.trim_end(),
        format!(
            "tufa-server: key-encryption key: key-encryption key file {shown} is readable by group or others \
             (mode 640); restrict it with `chmod 600 {shown}`"
        )
    );
    assert!(!data.exists(), "the data directory was created before the KEK file was checked:\n{output}");
}

#[test]
fn server_refuses_an_unknown_log_level_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = run(server().args(["--listen", "127.0.0.1:0", "--log-level", "verbose", "--data-dir"]).arg(&data));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    assert_eq!(
        output.stderr.trim_end(),
        "tufa-server: invalid --log-level: \"verbose\" is not a log level or TARGET=LEVEL; use a level (trace, \
         debug, info, warn, error, off) or directives such as \"info,tufa_store=debug\""
    );
    assert!(!data.exists(), "{output}");
    let output =
        run(server().args(["--listen", "127.0.0.1:0"]).env("TUFA_LOG", "tufa_server").arg("--data-dir").arg(&data));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    assert!(output.stderr.starts_with("tufa-server: invalid TUFA_LOG: \"tufa_server\" is not a log level"), "{output}");
}

#[test]
fn server_json_logs_keep_every_stderr_line_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, address) = occupied_port();
    let output =
        run(server().args(["--listen", &address, "--log-format", "json", "--data-dir"]).arg(dir.path().join("d")));
    assert_eq!(exit_code(&output), Some(1), "{output}");
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert!(!lines.is_empty(), "{output}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}\n{output}"));
        assert_eq!(value["level"], "ERROR", "{line}");
        let error = value["fields"]["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("cannot listen on {address}: ")), "{line}");
    }
}

#[test]
fn help_and_version_exit_0_and_usage_errors_exit_2() {
    for (binary, make) in [("tufa-server", server as fn() -> Command), ("tufa-signer", signer)] {
        let output = run(make().arg("--version"));
        assert_eq!(exit_code(&output), Some(0), "{output}");
        assert_eq!(output.stdout.trim_end(), format!("{binary} {}", env!("CARGO_PKG_VERSION")));
        let output = run(make().arg("--help"));
        assert_eq!(exit_code(&output), Some(0), "{output}");
        assert!(output.stdout.contains("--tls-client-ca"), "{output}");
        assert!(output.stdout.contains("--log-format"), "{output}");
        let output = run(make().arg("--no-such-flag"));
        assert_eq!(exit_code(&output), Some(2), "{output}");
    }
}

/// Writes a test PKI with `tufa-signer gen-certs` into `dir`.
fn gen_certs(dir: &Path) {
    let output = run(signer().arg("gen-certs").arg("--out").arg(dir));
    assert_eq!(exit_code(&output), Some(0), "{output}");
}

#[test]
fn signer_on_a_busy_port_names_it_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    gen_certs(&pki);
    let data = dir.path().join("data");
    let (_held, address) = occupied_port();
    let output = run(signer()
        .args(["--listen", &address])
        .arg("--tls-cert")
        .arg(pki.join("signer.crt"))
        .arg("--tls-key")
        .arg(pki.join("signer.key"))
        // The older flag name still works.
        .arg("--client-ca")
        .arg(pki.join("ca.crt"))
        .arg("--data-dir")
        .arg(&data)
        .env("TUFA_SIGNER_KEK_K1", "11".repeat(32)));
    assert_eq!(exit_code(&output), Some(1), "{output}");
    let expected = format!("cannot listen on {address}: Address already in use");
    assert!(output.stderr.lines().any(|line| line.starts_with(&format!("tufa-signer: {expected}"))), "{output}");
    assert!(!data.exists(), "the data directory was created before the listener was bound:\n{output}");
}

#[test]
fn signer_refuses_bad_configuration_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = run(signer().args(["--log", "verbose", "--data-dir"]).arg(&data));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    assert!(
        output.stderr.starts_with("tufa-signer: invalid --log-level: \"verbose\" is not a log level or TARGET=LEVEL"),
        "{output}"
    );
    let output = run(signer().arg("--data-dir").arg(&data).env("TUFA_SIGNER_KEK_K1", "11".repeat(32)));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    assert!(output.stderr.starts_with("tufa-signer: missing --tls-cert, --tls-key, --tls-client-ca"), "{output}");
    assert!(!data.exists(), "{output}");
}

/// A config file that never ends (a device) is refused at its size limit, not read forever.
#[test]
fn endless_config_files_are_refused_with_status_2() {
    let output = run(server().args(["--config", "/dev/zero"]));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    assert_eq!(output.stderr.trim_end(), "tufa-server: cannot read config file /dev/zero: larger than 1048576 bytes");
    let output = run(signer().args(["--config", "/dev/zero"]));
    assert_eq!(exit_code(&output), Some(2), "{output}");
    assert_eq!(output.stderr.trim_end(), "tufa-signer: cannot read config file /dev/zero: larger than 1048576 bytes");
}
