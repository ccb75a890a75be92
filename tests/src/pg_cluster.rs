//! A PostgreSQL cluster private to one test, which the test may stop and start again (a real
//! restart, or a crash with `-m immediate`) without disturbing the tests that share the
//! throwaway cluster of `scripts/pg-throwaway.sh`.
//!
//! Like that script, it runs the PostgreSQL binaries as the `postgres` OS user when the tests
//! run as root (initdb refuses root), and directly otherwise. Binaries come from `PG_BINDIR`
//! (which the script exports), else the newest `/usr/lib/postgresql/<version>/bin`.
//! Commits are durable against a crash of the server process (`synchronous_commit` stays on);
//! only `fsync` is off, which matters for a crash of the machine alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{CommandOutput, free_port, run_with_timeout};

/// How long `initdb`, `pg_ctl start` and `pg_ctl stop` may take.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(90);

/// A running (or deliberately stopped) PostgreSQL cluster on `127.0.0.1:<port>`.
pub struct PgCluster {
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
    // Removed after the cluster is stopped in `Drop`.
    dir: TempDir,
}

impl PgCluster {
    /// `initdb` in a fresh directory and `pg_ctl start` on a free port; panics with the tools'
    /// output when either fails.
    pub fn start() -> PgCluster {
        let bindir = bindir();
        let as_postgres = is_root();
        // A short path: the Unix socket path (dir + /.s.PGSQL.NNNNN) must stay under 108 bytes.
        let dir = tempfile::Builder::new().prefix("tufa-pg-").tempdir_in("/tmp").expect("create cluster directory");
        if as_postgres {
            let output = run_with_timeout(Command::new("chown").arg("postgres:").arg(dir.path()), b"", PG_CTL_TIMEOUT);
            assert!(output.success(), "cannot hand {} to the postgres user:\n{output}", dir.path().display());
        }
        let cluster = PgCluster { bindir, port: free_port(), as_postgres, dir };
        let data = cluster.data_dir();
        let output = cluster.run("initdb", |command| {
            command.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
        });
        assert!(output.success(), "initdb of a private cluster failed:\n{output}");
        cluster.start_again();
        cluster
    }

    /// The superuser URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl stop -m <mode>` (`fast`: sessions are ended and the server shuts down cleanly;
    /// `immediate`: every server process quits at once, as in a crash, and the next start
    /// recovers from the write-ahead log). Panics unless the cluster stopped.
    pub fn stop(&self, mode: &str) {
        let data = self.data_dir();
        let output = self.run("pg_ctl", |command| {
            command.arg("-D").arg(&data).args(["-m", mode, "-w", "-t", "60", "stop"]);
        });
        assert!(output.success(), "pg_ctl stop -m {mode} failed:\n{output}");
    }

    /// `pg_ctl start` on the cluster's port, waiting until it accepts connections.
    pub fn start_again(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let output = self.run("pg_ctl", |command| {
            command.arg("-D").arg(&data).arg("-l").arg(&log).args(["-w", "-t", "60", "-o", &options, "start"]);
        });
        assert!(
            output.success(),
            "pg_ctl start of the private cluster on port {} failed:\n{output}\n--- server log ---\n{}",
            self.port,
            crate::process::log_tail(&log, 4000)
        );
    }

    /// The cluster's directory (data, socket and server log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs PostgreSQL's `tool`, as the `postgres` user when the tests run as root, from the
    /// cluster directory (which that user can read).
    fn run(&self, tool: &str, arguments: impl FnOnce(&mut Command)) -> CommandOutput {
        let program = self.bindir.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.current_dir(self.dir.path());
        arguments(&mut command);
        run_with_timeout(&mut command, b"", PG_CTL_TIMEOUT)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Never a panic here: this may run while the test is already unwinding. A cluster that
        // is already stopped makes pg_ctl fail, which is fine.
        let data = self.data_dir();
        let program = self.bindir.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.current_dir(self.dir.path()).arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]);
        let _ = tufa_testkit::process::run_with_timeout(&mut command, b"", PG_CTL_TIMEOUT);
    }
}

/// `PG_BINDIR`, else the newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries: set PG_BINDIR or install PostgreSQL (apt-get install postgresql)")
    })
}

/// Whether this process runs as root (`id -u` prints 0).
fn is_root() -> bool {
    let output = run_with_timeout(Command::new("id").arg("-u"), b"", PG_CTL_TIMEOUT);
    output.stdout.trim() == "0"
}
