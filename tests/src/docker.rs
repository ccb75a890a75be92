//! The Docker CLI's `docker trust` commands as a test client of a trust server. Each
//! [`DockerTrust`] has its own `DOCKER_CONFIG` directory holding the registry credentials
//! (`config.json` `auths`), the trust server's CA (`tls/<host:port>/ca.crt`, where the CLI looks
//! for it) and the trust directory (`trust/`). `DOCKER_HOST` points at a socket that does not
//! exist, so a command that needed a Docker daemon would fail: these commands need none.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::notary::basic_credentials;
use crate::process::{CommandOutput, run_with_timeout};
use crate::server::Server;

/// Deadline for one docker command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The passphrase of the root and repository keys docker makes.
pub const PASSPHRASE: &str = "tufa-docker-passphrase";

/// One Docker CLI configuration directory for one trust server.
pub struct DockerTrust {
    name: String,
    dir: TempDir,
    server_url: String,
}

/// The docker binary: `DOCKER_BIN` if set, else `docker` from `PATH`.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("DOCKER_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("docker"))
}

impl DockerTrust {
    /// A new client called `name` for the trust server `server`, holding credentials for
    /// `registry_host` (the host part of the image names) when `credentials` is given.
    pub fn new(server: &Server, name: &str, registry_host: &str, credentials: Option<(&str, &str)>) -> DockerTrust {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tufa-docker-{name}-"))
            .tempdir()
            .expect("create DOCKER_CONFIG dir");
        let auths = match credentials {
            Some((user, password)) => json!({ registry_host: {"auth": basic_credentials(user, password)} }),
            None => json!({}),
        };
        fs::write(dir.path().join("config.json"), json!({ "auths": auths }).to_string()).expect("write config.json");
        let host_port = server.url().trim_start_matches("https://");
        let tls = dir.path().join("tls").join(host_port);
        fs::create_dir_all(&tls).expect("create the tls dir");
        fs::copy(server.ca_cert(), tls.join("ca.crt")).expect("copy the trust server's CA");
        DockerTrust { name: name.to_owned(), dir, server_url: server.url().to_owned() }
    }

    /// The `DOCKER_CONFIG` directory.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The trust directory (`$DOCKER_CONFIG/trust`), which the notary CLI can use too.
    pub fn trust_dir(&self) -> PathBuf {
        self.dir.path().join("trust")
    }

    /// Runs `docker <args>` in the config directory with empty standard input.
    pub fn run(&self, args: &[&str]) -> CommandOutput {
        self.run_with_input(b"", args)
    }

    /// Runs `docker <args>` in the config directory with `input` on standard input (answers to
    /// prompts).
    pub fn run_with_input(&self, input: &[u8], args: &[&str]) -> CommandOutput {
        let mut command = Command::new(binary());
        command.args(args).current_dir(self.dir.path());
        for (key, _) in std::env::vars_os() {
            let text = key.to_string_lossy();
            if text.starts_with("DOCKER_") || text.starts_with("NOTARY_") {
                command.env_remove(&key);
            }
        }
        command
            .env("HOME", self.dir.path())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("DOCKER_CONFIG", self.dir.path())
            .env("DOCKER_HOST", format!("unix://{}/no-daemon.sock", self.dir.path().display()))
            .env("DOCKER_CONTENT_TRUST_SERVER", &self.server_url)
            .env("DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE", PASSPHRASE)
            .env("DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE", PASSPHRASE);
        run_with_timeout(&mut command, input, COMMAND_TIMEOUT)
    }

    /// Runs a command that must succeed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> CommandOutput {
        self.ok_with_input(b"", args)
    }

    /// Like [`DockerTrust::ok`], with `input` on standard input.
    #[track_caller]
    pub fn ok_with_input(&self, input: &[u8], args: &[&str]) -> CommandOutput {
        let output = self.run_with_input(input, args);
        assert!(output.success(), "docker client `{}` was expected to succeed:\n{output}", self.name);
        output
    }

    /// Runs a command that must fail (exit status not 0, not killed by the deadline).
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> CommandOutput {
        let output = self.run(args);
        assert!(
            output.status.is_some() && !output.success(),
            "docker client `{}` was expected to fail:\n{output}",
            self.name
        );
        output
    }

    /// `docker trust inspect <gun>` parsed as JSON (an array with one entry per repository).
    #[track_caller]
    pub fn inspect(&self, gun: &str) -> serde_json::Value {
        let output = self.ok(&["trust", "inspect", gun]);
        serde_json::from_str(&output.stdout)
            .unwrap_or_else(|error| panic!("`docker trust inspect` JSON: {error}\n{output}"))
    }
}
