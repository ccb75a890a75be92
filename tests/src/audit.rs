//! Helpers for the audit-record tests: the JSON lines `tufa-server audit` prints, times to compare
//! with the server's, P-256 key pairs and their TUF key IDs computed without the code under test,
//! the private keys of a notary/docker trust directory by role, and signed checkpoint notes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::process::{CommandOutput, run_tool, run_with_timeout};

/// Each non-empty line of `output` (a successful command) parsed as JSON.
#[track_caller]
pub fn json_lines(output: &CommandOutput) -> Vec<Value> {
    assert!(output.success(), "the command was expected to succeed:\n{output}");
    output
        .stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}")))
        .collect()
}

/// The current time as RFC 3339 in UTC with microseconds, read from coreutils' `date` (the
/// machine's clock, which the server under test reads too).
pub fn now() -> String {
    let output = run_tool(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]));
    output.stdout.trim().to_owned()
}

/// An RFC 3339 UTC time (`...Z`, with any number of fraction digits up to 9) rewritten with
/// exactly nine, so that times compare as strings.
#[track_caller]
pub fn sortable_time(time: &str) -> String {
    let body = time.strip_suffix('Z').unwrap_or_else(|| panic!("{time:?} is not a UTC time"));
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    assert!(seconds.len() == 19 && fraction.len() <= 9, "unexpected time {time:?}");
    format!("{seconds}.{fraction:0<9}Z")
}

/// Whether `time` lies strictly between `after` and `before` (all RFC 3339 UTC times).
pub fn between(after: &str, time: &str, before: &str) -> bool {
    let (after, time, before) = (sortable_time(after), sortable_time(time), sortable_time(before));
    after < time && time < before
}

/// A P-256 key pair made with openssl in `dir`: `<stem>.key` (PKCS#8) and `<stem>.pub` (a
/// `PUBLIC KEY` PEM, the form `docker trust key generate` writes and `docker trust signer add
/// --key` reads).
pub fn ec_key_pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{stem}.key"));
    let public = dir.join(format!("{stem}.pub"));
    run_tool(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
            .arg(&key),
    );
    run_tool(Command::new("openssl").arg("pkey").arg("-in").arg(&key).args(["-pubout", "-out"]).arg(&public));
    (key, public)
}

/// The TUF key ID notary and docker give the bare ECDSA public key in the `PUBLIC KEY` PEM file
/// `public`: the SHA-256 of the canonical JSON `{"keytype":"ecdsa","keyval":{"private":null,
/// "public":"<base64 DER SubjectPublicKeyInfo>"}}`, computed with openssl and sha256sum.
pub fn ecdsa_key_id(public: &Path) -> String {
    let der = run_tool(
        Command::new("sh")
            .arg("-c")
            .arg("openssl pkey -pubin -in \"$1\" -outform DER | base64 -w0")
            .arg("sh")
            .arg(public),
    );
    let canonical = format!(r#"{{"keytype":"ecdsa","keyval":{{"private":null,"public":"{}"}}}}"#, der.stdout.trim());
    sha256_hex(canonical.as_bytes())
}

/// The TUF key ID notary gives the certificate in the PEM file `cert` (what `notary delegation
/// add <cert>` lists): the SHA-256 of the canonical JSON `{"keytype":"ecdsa-x509","keyval":
/// {"private":null,"public":"<base64 of the certificate PEM>"}}`.
pub fn ecdsa_x509_key_id(cert: &Path) -> String {
    use base64::Engine as _;
    let pem = fs::read(cert).unwrap_or_else(|error| panic!("read {}: {error}", cert.display()));
    let public = base64::engine::general_purpose::STANDARD.encode(pem);
    sha256_hex(format!(r#"{{"keytype":"ecdsa-x509","keyval":{{"private":null,"public":"{public}"}}}}"#).as_bytes())
}

/// The canonical key ID of the certificate in `cert`: the ID of its bare public key (see
/// [`ecdsa_key_id`]), extracted with openssl into `<cert>.pub`.
pub fn certificate_canonical_id(cert: &Path) -> String {
    let public = cert.with_extension("pub");
    run_tool(Command::new("openssl").arg("x509").arg("-in").arg(cert).args(["-pubkey", "-noout", "-out"]).arg(&public));
    ecdsa_key_id(&public)
}

/// Lower-case hex SHA-256 of `bytes`, from coreutils' `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let output = run_with_timeout(&mut Command::new("sha256sum"), bytes, std::time::Duration::from_secs(30));
    assert!(output.success(), "sha256sum failed:\n{output}");
    let digest = output.stdout.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(digest.len(), 64, "sha256sum printed {output}");
    digest
}

/// The private keys in a notary or docker trust directory (`private/<key id>.key`, each with a
/// `role:` PEM header), grouped by role: role name to key IDs, sorted.
pub fn private_keys_by_role(trust_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let dir = trust_dir.join("private");
    for entry in fs::read_dir(&dir).unwrap_or_else(|error| panic!("list {}: {error}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let Some(key_id) = path.file_name().and_then(|name| name.to_str()).and_then(|name| name.strip_suffix(".key"))
        else {
            continue;
        };
        let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        let role = text
            .lines()
            .find_map(|line| line.strip_prefix("role: "))
            .unwrap_or_else(|| panic!("{} has no role header", path.display()));
        keys.entry(role.trim().to_owned()).or_default().push(key_id.to_owned());
    }
    for ids in keys.values_mut() {
        ids.sort();
    }
    keys
}

/// A signed checkpoint as `audit checkpoint` prints it: the note's body (the signed text), its
/// size line, and the verifier key printed after it.
#[derive(Debug, Clone)]
pub struct PrintedCheckpoint {
    /// The checkpoint text the signature covers: origin, size, root hash and extension lines,
    /// each ending in a newline.
    pub body: String,
    /// The log's origin (the checkpoint key's name).
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The verifier key (`name+hash+key`).
    pub vkey: String,
}

/// Reads the output of `tufa-server audit checkpoint` (`vkey_prefix` = `"verifier key: "`) or
/// `tufa-signer audit checkpoint` (`"vkey: "`).
#[track_caller]
pub fn printed_checkpoint(output: &CommandOutput, vkey_prefix: &str) -> PrintedCheckpoint {
    assert!(output.success(), "audit checkpoint:\n{output}");
    let text = &output.stdout;
    let (body, _) = text.split_once("\n\n").unwrap_or_else(|| panic!("no signed note in:\n{output}"));
    let body = format!("{body}\n");
    let mut lines = body.lines();
    let origin = lines.next().expect("origin line").to_owned();
    let size = lines.next().and_then(|line| line.parse().ok()).unwrap_or_else(|| panic!("no size line:\n{output}"));
    let vkey = text
        .lines()
        .find_map(|line| line.strip_prefix(vkey_prefix))
        .unwrap_or_else(|| panic!("no {vkey_prefix:?} line:\n{output}"))
        .trim()
        .to_owned();
    PrintedCheckpoint { body, origin, size, vkey }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_times_compare_in_time_order() {
        assert_eq!(sortable_time("2026-11-30T00:53:21.4913Z"), "2026-11-30T00:53:21.491300000Z");
        assert_eq!(sortable_time("2026-11-30T00:53:21Z"), "2026-11-30T00:53:21.000000000Z");
        assert!(between("2026-11-30T00:53:21Z", "2026-11-30T00:53:21.000001Z", "2026-11-30T00:53:21.1Z"));
        assert!(!between("2026-11-30T00:53:21.5Z", "2026-11-30T00:53:21.49Z", "2026-11-30T00:53:22Z"));
    }
}
