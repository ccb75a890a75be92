//! A private Docker daemon (Debian's `dockerd` 20.10, package docker.io) for the authorization
//! plugin tests, and `tufa-server authz-plugin` serving it: [`Dockerd`] runs one daemon without
//! iptables or a bridge, on the vfs storage driver, with its own data root, exec root, pid file
//! and socket in a temporary directory (optionally with `--authorization-plugin`); [`AuthzPlugin`]
//! runs the plugin on `/run/docker/plugins/<name>.sock`, where the daemon finds a plugin by name.
//! Both need root; without it they panic saying so.
//!
//! Environment: `DOCKERD_BIN`, the daemon (default: `dockerd` from `PATH`); `DOCKER_BIN`, the
//! Docker CLI (default: `docker` from `PATH`).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{CommandOutput, LOG_TAIL_BYTES, describe, log_tail, run_with_timeout, spawn_logged, wait_ready};

/// How long the daemon (or the plugin) may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline for one docker command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// The directory where dockerd looks for plugin sockets by name.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// The daemon binary: `DOCKERD_BIN` if set, else `dockerd` from `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("DOCKERD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("dockerd"))
}

/// Panics unless the tests run as root (dockerd, the plugin directory, podman's and Slurm's
/// daemons need it).
pub fn require_root() {
    let output = run_with_timeout(Command::new("id").arg("-u"), b"", Duration::from_secs(10));
    assert!(
        output.success() && output.stdout.trim() == "0",
        "the Docker daemon tests need root (dockerd and {PLUGIN_DIR}); `id -u` says {:?}",
        output.stdout.trim()
    );
}

/// Sends SIGTERM to `child`, waits up to `timeout` for it, and kills it if it is still running.
pub fn terminate(child: &mut Child, timeout: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Prints `name`'s log when the test is failing, and keeps `dir` when `TUFA_TEST_KEEP` is set.
pub fn report(name: &str, log: &Path, dir: &mut TempDir) {
    if thread::panicking() {
        eprintln!(
            "--- {name} log ({}) ---\n{}\n--- end of {name} log ---",
            log.display(),
            log_tail(log, LOG_TAIL_BYTES)
        );
    }
    if std::env::var_os("TUFA_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("TUFA_TEST_KEEP is set: kept {}", dir.path().display());
    }
}

/// One running dockerd, stopped (SIGTERM, so it also stops its containerd) on drop.
pub struct Dockerd {
    name: String,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    config_dir: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    /// Starts a daemon called `name` (in messages), listening on `socket` (default: one in its
    /// temporary directory), with `--authorization-plugin=<plugin>` when `plugin` is given (the
    /// plugin must already be listening), and waits until `docker version` reaches it. Panics with
    /// the daemon's log when it does not come up.
    pub fn start(name: &str, plugin: Option<&str>, socket: Option<&Path>) -> Dockerd {
        require_root();
        // Short paths: the exec root holds containerd's socket, whose path must fit a sockaddr_un.
        let dir = tempfile::Builder::new().prefix("tufa-dockerd-").tempdir_in("/tmp").expect("create dockerd dir");
        let socket = socket.map_or_else(|| dir.path().join("docker.sock"), Path::to_path_buf);
        let log = dir.path().join("dockerd.log");
        let config_dir = dir.path().join("cli");
        fs::create_dir_all(&config_dir).expect("create the Docker CLI config dir");
        fs::write(config_dir.join("config.json"), "{}").expect("write the Docker CLI config");
        let mut command = Command::new(binary());
        command
            .arg("--iptables=false")
            .arg("--ip6tables=false")
            .arg("--bridge=none")
            .arg("--storage-driver=vfs")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("--config-file")
            .arg(write_daemon_json(dir.path()))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()));
        if let Some(plugin) = plugin {
            command.arg(format!("--authorization-plugin={plugin}"));
        }
        let line = describe(&command);
        let mut child = spawn_logged(&mut command, &log).unwrap_or_else(|error| panic!("{error}"));
        let probe = || {
            let output = run_docker(&socket, &config_dir, &["version", "--format", "{{.Server.Version}}"]);
            if output.success() { Ok(output.stdout.trim().to_owned()) } else { Err(output.combined()) }
        };
        if let Err(error) = wait_ready(&mut child, &log, STARTUP_TIMEOUT, probe) {
            terminate(&mut child, STOP_TIMEOUT);
            panic!("dockerd {name} did not start: {error}\ncommand: {line}\n{}", log_tail(&log, LOG_TAIL_BYTES));
        }
        Dockerd { name: name.to_owned(), child, socket, log, config_dir, dir }
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `docker <args>` against this daemon (a private CLI config; no other `DOCKER_*`
    /// setting leaks in).
    pub fn docker(&self, args: &[&str]) -> CommandOutput {
        run_docker(&self.socket, &self.config_dir, args)
    }

    /// Runs a docker command that must succeed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> CommandOutput {
        let output = self.docker(args);
        assert!(output.success(), "docker against {} was expected to succeed:\n{output}", self.name);
        output
    }

    /// Runs a docker command that must fail (exit status not 0, not killed by the deadline).
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> CommandOutput {
        let output = self.docker(args);
        assert!(
            output.status.is_some() && !output.success(),
            "docker against {} was expected to fail:\n{output}",
            self.name
        );
        output
    }
}

/// Runs `docker <args>` against the daemon on `socket` with the CLI configuration in `config_dir`
/// (no other `DOCKER_*` setting leaks in; content trust is off, the daemon's plugin is the check).
fn run_docker(socket: &Path, config_dir: &Path, args: &[&str]) -> CommandOutput {
    let mut command = Command::new(crate::docker::binary());
    command.args(args).current_dir(config_dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DOCKER_") {
            command.env_remove(&key);
        }
    }
    command
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", config_dir)
        .env("DOCKER_CONTENT_TRUST", "0")
        .env("NO_PROXY", "127.0.0.1,localhost");
    run_with_timeout(&mut command, b"", COMMAND_TIMEOUT)
}

/// An empty daemon.json (so no system /etc/docker/daemon.json is read) in `dir`.
fn write_daemon_json(dir: &Path) -> PathBuf {
    let path = dir.join("daemon.json");
    fs::write(&path, "{}").expect("write daemon.json");
    path
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        terminate(&mut self.child, STOP_TIMEOUT);
        report(&format!("dockerd {}", self.name), &self.log, &mut self.dir);
    }
}

/// One running `tufa-server authz-plugin`, killed (and its socket removed) on drop.
pub struct AuthzPlugin {
    name: String,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl AuthzPlugin {
    /// A plugin name unique to this test process and `suffix`: `tufa-<pid>-<suffix>`.
    pub fn unique_name(suffix: &str) -> String {
        format!("tufa-{}-{suffix}", std::process::id())
    }

    /// Starts `tufa-server authz-plugin --policy <policy> --socket /run/docker/plugins/<name>.sock
    /// --docker-socket <docker_socket>` with `extra_args` and a private data and state directory,
    /// and waits until its socket accepts connections.
    pub fn start(name: &str, policy: &Path, docker_socket: &Path, extra_args: &[&str]) -> AuthzPlugin {
        require_root();
        let dir = tempfile::Builder::new().prefix("tufa-authz-plugin-").tempdir().expect("create plugin dir");
        let socket = Path::new(PLUGIN_DIR).join(format!("{name}.sock"));
        let log = dir.path().join("plugin.log");
        let mut command = Command::new(crate::tufa::binary());
        command
            .arg("authz-plugin")
            .arg("--policy")
            .arg(policy)
            .arg("--socket")
            .arg(&socket)
            .arg("--docker-socket")
            .arg(docker_socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--policy-reload-secs")
            .arg("1")
            .args(extra_args)
            .env("TUFA_LOG", "info");
        for (key, _) in std::env::vars_os() {
            let text = key.to_string_lossy();
            if text.starts_with("TUFA_") && text != "TUFA_LOG" {
                command.env_remove(&key);
            }
        }
        let line = describe(&command);
        let mut child = spawn_logged(&mut command, &log).unwrap_or_else(|error| panic!("{error}"));
        let probe =
            || UnixStream::connect(&socket).map(drop).map_err(|error| format!("connect {}: {error}", socket.display()));
        if let Err(error) = wait_ready(&mut child, &log, STARTUP_TIMEOUT, probe) {
            terminate(&mut child, STOP_TIMEOUT);
            panic!(
                "the authorization plugin did not start: {error}\ncommand: {line}\n{}",
                log_tail(&log, LOG_TAIL_BYTES)
            );
        }
        AuthzPlugin { name: name.to_owned(), child, socket, log, dir }
    }

    /// The plugin's name (what `--authorization-plugin` takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The plugin's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AuthzPlugin {
    fn drop(&mut self) {
        terminate(&mut self.child, STOP_TIMEOUT);
        let _ = fs::remove_file(&self.socket);
        report(&format!("authorization plugin {}", self.name), &self.log, &mut self.dir);
    }
}
