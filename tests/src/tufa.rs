//! Starting the binary under test, `tufa-server`, on SQLite or PostgreSQL.
//!
//! Command-line contract relied on here:
//! `tufa-server --listen 127.0.0.1:<port> --data-dir <dir> [--database-url <url>]`.
//! Without `--tls-cert`/`--tls-key` the server writes a CA and a server certificate to
//! `<dir>/tls/{ca.crt,server.crt,server.key}` and serves HTTPS; clients trust `ca.crt`.
//! Without `--database-url` it stores metadata in SQLite at `<dir>/tufa.db`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::postgres::PgDatabase;
use crate::server::{Launch, Server};

/// The metadata store a tufa-server test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file in the data directory (the default).
    Sqlite,
    /// A fresh database in the cluster named by `DATABASE_URL`.
    Postgres,
}

impl Backend {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Locates the tufa-server binary: `TUFA_SERVER_BIN` if set, else as [`workspace_binary`] finds it.
/// Panics with a build hint when none exists.
pub fn binary() -> PathBuf {
    workspace_binary("tufa-server", "TUFA_SERVER_BIN")
}

/// Locates a binary of this workspace called `name`: the file named by the environment variable
/// `env_var` if set; else next to the running test binary's profile directory
/// (`<target>/<profile>/<name>`, which follows `CARGO_TARGET_DIR`); else
/// `<CARGO_TARGET_DIR or workspace/target>/debug/<name>`. Panics with a build hint when none exists.
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env_var} points at {}, which is not a file", path.display());
        return path;
    }
    let mut candidates = Vec::new();
    // Test binaries live in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.join(name));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    let fallback = target_dir.join("debug").join(name);
    if !candidates.contains(&fallback) {
        candidates.push(fallback);
    }
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return found.clone();
    }
    let looked: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
    panic!(
        "{name} binary not found (looked at: {}). Build it first with `cargo build --workspace` \
         (scripts/test.sh does), or point {env_var} at it.",
        looked.join(", ")
    );
}

/// Starts tufa-server on a free port with a fresh data directory (and, for PostgreSQL, a
/// fresh database) and waits until it is healthy.
pub fn start(backend: Backend) -> Server {
    // Create the database first: without DATABASE_URL the test must fail with that message
    // even before the server exists.
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create()),
    };
    let database_url = database.as_ref().map(|database| database.url().to_owned());
    start_with(Options {
        name: format!("tufa-server ({})", backend.name()),
        database_url,
        database,
        extra_args: Vec::new(),
    })
}

/// What [`start_with`] runs.
pub struct Options {
    /// Name for messages.
    pub name: String,
    /// `--database-url`, if any (else SQLite in the data directory).
    pub database_url: Option<String>,
    /// A database to drop after the server has stopped.
    pub database: Option<PgDatabase>,
    /// More command-line arguments.
    pub extra_args: Vec<String>,
}

/// Starts tufa-server with explicit options on a free port and a fresh data directory.
pub fn start_with(options: Options) -> Server {
    let Options { name, database_url, database, extra_args } = options;
    let binary = binary();
    let dir = tempfile::Builder::new().prefix("tufa-server-").tempdir().expect("create temp dir");
    let data_dir = dir.path().join("data");
    let ca_cert = data_dir.join("tls").join("ca.crt");
    let command = move |port: u16| {
        let mut command = Command::new(&binary);
        command.arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--data-dir").arg(&data_dir);
        if let Some(url) = &database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(&extra_args);
        // Only the command line configures the server: no TUFA_* settings leak in from the
        // developer's environment (except the log filter, which helps debugging).
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("TUFA_") && key_text != "TUFA_LOG" {
                command.env_remove(&key);
            }
        }
        command
    };
    Server::start(Launch { name, dir, ca_cert, command: Box::new(command), database })
}
