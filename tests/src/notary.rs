//! The real `notary` CLI (v0.7.0) as a test client: each [`Notary`] has its own trust
//! directory, config file and passphrases, so several clients (owner, delegate, a reader
//! with a stale cache) can work on one repository side by side.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use tempfile::TempDir;

use crate::process::{CommandOutput, run_with_timeout};
use crate::server::Server;

/// Deadline for one notary CLI invocation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The passphrase every test key is encrypted with.
pub const PASSPHRASE: &str = "tufa-test-passphrase";

/// The notary CLI prints this and exits with status 0 when a confirmation prompt was not
/// answered with "yes"; a command that printed it did nothing.
const ABORTED: &str = "Aborting action";

/// One notary client with a private trust directory, configured for one server.
pub struct Notary {
    name: String,
    dir: TempDir,
    config: PathBuf,
    auth: Option<String>,
    trust_dir: PathBuf,
    passphrase: String,
}

/// One row of `notary list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTarget {
    /// Target name.
    pub name: String,
    /// Lower-case hex SHA-256 of the target.
    pub digest: String,
    /// Length in bytes.
    pub size: u64,
    /// The role that signed it, e.g. `targets` or `targets/releases`.
    pub role: String,
}

impl Notary {
    /// A new client called `name` (used in messages) that trusts `server`'s CA.
    pub fn new(server: &Server, name: &str) -> Notary {
        Notary::for_url(server.url(), server.ca_cert(), name)
    }

    /// A new client called `name` for the trust server at `url`, trusting the CA certificates in
    /// `root_ca` (a PEM bundle may hold several, e.g. the trust server's and its token service's).
    pub fn for_url(url: &str, root_ca: &Path, name: &str) -> Notary {
        Notary::in_trust_dir(url, root_ca, name, None, PASSPHRASE)
    }

    /// A new client called `name` for `server` that works in an existing trust directory whose
    /// keys are encrypted with `passphrase`: for example the `trust/` directory of a Docker CLI
    /// configuration ([`crate::docker::DockerTrust::trust_dir`], with
    /// [`crate::docker::PASSPHRASE`]), so that one owner uses both CLIs with the same keys.
    pub fn sharing_trust_dir(server: &Server, name: &str, trust_dir: &Path, passphrase: &str) -> Notary {
        Notary::in_trust_dir(server.url(), server.ca_cert(), name, Some(trust_dir), passphrase)
    }

    fn in_trust_dir(url: &str, root_ca: &Path, name: &str, trust_dir: Option<&Path>, passphrase: &str) -> Notary {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tufa-notary-{name}-"))
            .tempdir()
            .expect("create notary trust dir");
        let trust_dir = trust_dir.map_or_else(|| dir.path().join("trust"), Path::to_path_buf);
        fs::create_dir_all(&trust_dir).expect("create trust dir");
        let config = dir.path().join("config.json");
        let body = json!({
            "trust_dir": trust_dir,
            "remote_server": {"url": url, "root_ca": root_ca},
        });
        fs::write(&config, body.to_string()).expect("write notary config");
        Notary { name: name.to_owned(), dir, config, auth: None, trust_dir, passphrase: passphrase.to_owned() }
    }

    /// A new client like [`Notary::new`] that signs in as `user` with `password` (or an API
    /// token as the password) through `NOTARY_AUTH`.
    pub fn with_auth(server: &Server, name: &str, user: &str, password: &str) -> Notary {
        let mut notary = Notary::new(server, name);
        notary.set_auth(Some((user, password)));
        notary
    }

    /// Sets (or, with `None`, clears) the credentials this client sends as `NOTARY_AUTH`
    /// (`base64(user:password)`).
    pub fn set_auth(&mut self, credentials: Option<(&str, &str)>) {
        self.auth = credentials.map(|(user, password)| basic_credentials(user, password));
    }

    /// The trust directory (`tuf/`, `private/`, ...).
    pub fn trust_dir(&self) -> PathBuf {
        self.trust_dir.clone()
    }

    /// The locally cached copy of `<role>.json` for `gun`, as the CLI last verified it.
    pub fn cached_metadata(&self, gun: &str, role: &str) -> PathBuf {
        self.trust_dir().join("tuf").join(gun).join("metadata").join(format!("{role}.json"))
    }

    /// Writes a file into this client's directory (outside the trust dir) and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, contents).expect("write client file");
        path
    }

    /// A scratch directory private to this client.
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `notary -c <config> <args>` with empty standard input.
    pub fn run(&self, args: &[&str]) -> CommandOutput {
        self.run_with_input(b"", args)
    }

    /// Runs `notary -c <config> <args>` with `input` on standard input (answers to prompts).
    pub fn run_with_input(&self, input: &[u8], args: &[&str]) -> CommandOutput {
        let mut command = Command::new(binary());
        command.arg("-c").arg(&self.config).args(args);
        // Only this client's settings count: no inherited NOTARY_* variables, no ~/.notary.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NOTARY_") {
                command.env_remove(&key);
            }
        }
        command
            .env("HOME", self.dir.path())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("NOTARY_ROOT_PASSPHRASE", &self.passphrase)
            .env("NOTARY_TARGETS_PASSPHRASE", &self.passphrase)
            .env("NOTARY_SNAPSHOT_PASSPHRASE", &self.passphrase)
            .env("NOTARY_DELEGATION_PASSPHRASE", &self.passphrase);
        if let Some(auth) = &self.auth {
            command.env("NOTARY_AUTH", auth);
        }
        run_with_timeout(&mut command, input, COMMAND_TIMEOUT)
    }

    /// Runs a command that must succeed (and not silently abort at a prompt).
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> CommandOutput {
        self.ok_with_input(b"", args)
    }

    /// Like [`Notary::ok`], with `input` on standard input.
    #[track_caller]
    pub fn ok_with_input(&self, input: &[u8], args: &[&str]) -> CommandOutput {
        let output = self.run_with_input(input, args);
        assert!(
            output.success() && !output.combined().contains(ABORTED),
            "notary client `{}` was expected to succeed:\n{output}",
            self.name
        );
        output
    }

    /// Runs a command that must fail (exit status not 0, and not killed by the deadline).
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> CommandOutput {
        let output = self.run(args);
        assert!(
            output.status.is_some() && !output.success(),
            "notary client `{}` was expected to fail:\n{output}",
            self.name
        );
        output
    }

    /// `notary list <gun> [--roles <role>]`, parsed, rows sorted by name
    /// (then role), so comparisons do not depend on the CLI's order.
    #[track_caller]
    pub fn list(&self, gun: &str, role: Option<&str>) -> Vec<ListedTarget> {
        let mut args = vec!["list", gun];
        if let Some(role) = role {
            args.extend(["--roles", role]);
        }
        let output = self.ok(&args);
        let mut rows =
            parse_list(&output.stdout).unwrap_or_else(|| panic!("unexpected `notary list` output:\n{output}"));
        rows.sort_by(|left, right| left.name.cmp(&right.name).then_with(|| left.role.cmp(&right.role)));
        rows
    }
}

/// `base64(user:password)`, the value of `NOTARY_AUTH` and of a Basic `Authorization` header.
pub fn basic_credentials(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// The notary binary: `NOTARY_BIN` if set, else `notary` from `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("NOTARY_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("notary"))
}

/// Parses the table printed by `notary list`; `None` if the text has neither a table nor
/// the "no targets" message.
pub fn parse_list(stdout: &str) -> Option<Vec<ListedTarget>> {
    if stdout.contains("No targets present in this repository.") {
        return Some(Vec::new());
    }
    let mut lines = stdout.lines().skip_while(|line| !line.trim_start().starts_with("----"));
    lines.next()?;
    let mut targets = Vec::new();
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, digest, size, role] = fields.as_slice() else {
            return None;
        };
        targets.push(ListedTarget {
            name: (*name).to_owned(),
            digest: (*digest).to_owned(),
            size: size.parse().ok()?,
            role: (*role).to_owned(),
        });
    }
    Some(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_output() {
        let table = "NAME    DIGEST    SIZE (BYTES)    ROLE\n----    ------    ------------    ----\n\
                     v1      abc1      6               targets\nv2      def2      17              targets/releases\n\n";
        let parsed = parse_list(table).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].name, "v2");
        assert_eq!(parsed[1].size, 17);
        assert_eq!(parsed[1].role, "targets/releases");
        assert_eq!(parse_list("\nNo targets present in this repository.\n\n"), Some(Vec::new()));
        assert_eq!(parse_list("garbage"), None);
    }

    #[test]
    fn encodes_basic_credentials() {
        assert_eq!(basic_credentials("alice", "pw"), "YWxpY2U6cHc=");
        assert_eq!(basic_credentials("ab", "c"), "YWI6Yw==");
        assert_eq!(basic_credentials("abc", "de"), "YWJjOmRl");
    }
}
