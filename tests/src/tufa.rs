//! Starting the binary under test, `tufa-server`, on SQLite or PostgreSQL.
//!
//! Command-line contract relied on here:
//! `tufa-server --listen 127.0.0.1:<port> --data-dir <dir> [--database-url <url>]`.
//! Without `--tls-cert`/`--tls-key` the server writes a CA and a server certificate to
//! `<dir>/tls/{ca.crt,server.crt,server.key}` and serves HTTPS; clients trust `ca.crt`.
//! Without `--database-url` it stores metadata in SQLite at `<dir>/tufa.db`.
//! With auth (`--auth builtin|token`, see [`start_with_auth`]) the admin commands run as
//! `tufa-server admin <action> --data-dir <dir> [--database-url <url>]` against the same data
//! while the server runs; `admin token create` prints the token alone on its last line.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::postgres::PgDatabase;
use crate::process::{CommandOutput, run_with_timeout};
use crate::server::{Launch, Server};

/// Deadline for one `tufa-server admin` command.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

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
    start_in(options, None)
}

/// Like [`start_with`], with `data_dir` as the server's `--data-dir` (e.g. on a small file
/// system) instead of one in the server's temporary directory. The caller keeps it, and must
/// keep it until the server is dropped.
pub fn start_with_data_dir(options: Options, data_dir: &Path) -> Server {
    start_in(options, Some(data_dir.to_path_buf()))
}

fn start_in(options: Options, data_dir: Option<PathBuf>) -> Server {
    let Options { name, database_url, database, extra_args } = options;
    let binary = binary();
    let dir = tempfile::Builder::new().prefix("tufa-server-").tempdir().expect("create temp dir");
    let data_dir = data_dir.unwrap_or_else(|| dir.path().join("data"));
    let ca_cert = data_dir.join("tls").join("ca.crt");
    let command = move |port: u16| {
        let mut command = Command::new(&binary);
        command.arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--data-dir").arg(&data_dir);
        if let Some(url) = &database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(&extra_args);
        clear_tufa_env(&mut command);
        command
    };
    Server::start(Launch { name, dir, ca_cert, command: Box::new(command), database })
}

/// Only the command line configures the server: no TUFA_* settings leak in from the
/// developer's environment (except the log filter, which helps debugging).
fn clear_tufa_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("TUFA_") && key_text != "TUFA_LOG" {
            command.env_remove(&key);
        }
    }
}

/// Runs `tufa-server audit <args> --data-dir <data_dir> [--database-url <url>]`, the auditor's
/// commands against a server's data (while it runs or after it stopped).
pub fn audit(data_dir: &Path, database_url: Option<&str>, args: &[&str]) -> CommandOutput {
    let mut command = Command::new(binary());
    command.arg("audit").args(args).arg("--data-dir").arg(data_dir);
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    clear_tufa_env(&mut command);
    run_with_timeout(&mut command, b"", ADMIN_TIMEOUT)
}

/// A tufa-server started by [`start_with_auth`]: the running [`Server`] and what the admin
/// commands need to reach its data (`--data-dir`, `--database-url`).
pub struct AuthServer {
    server: Server,
    data_dir: PathBuf,
    database_url: Option<String>,
}

impl Deref for AuthServer {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

/// An API token made by [`AuthServer::create_token`].
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// The token's id (for `admin token revoke`).
    pub id: String,
    /// The whole token text (`tufa_<id>_<secret>`).
    pub text: String,
}

/// Starts tufa-server on `backend` with `extra_args` (e.g. `--auth builtin`) and keeps what
/// [`AuthServer::admin`] needs to run admin commands against its data.
pub fn start_with_auth(backend: Backend, name: &str, extra_args: Vec<String>) -> AuthServer {
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create()),
    };
    let database_url = database.as_ref().map(|database| database.url().to_owned());
    let server = start_with(Options {
        name: format!("{name} ({})", backend.name()),
        database_url: database_url.clone(),
        database,
        extra_args,
    });
    let data_dir = server.dir().join("data");
    AuthServer { server, data_dir, database_url }
}

/// Starts tufa-server in builtin auth mode (`--auth builtin`) with `extra_args` after it.
pub fn start_builtin(backend: Backend, extra_args: &[&str]) -> AuthServer {
    let mut args = vec!["--auth".to_owned(), "builtin".to_owned()];
    args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
    start_with_auth(backend, "tufa-server builtin", args)
}

impl AuthServer {
    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `tufa-server admin <args> --data-dir <dir> [--database-url <url>]` with `input` on
    /// standard input, while the server runs.
    pub fn admin(&self, args: &[&str], input: &[u8]) -> CommandOutput {
        let mut command = Command::new(binary());
        command.arg("admin").args(args).arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        clear_tufa_env(&mut command);
        run_with_timeout(&mut command, input, ADMIN_TIMEOUT)
    }

    /// Runs `tufa-server audit <args> --data-dir <dir> [--database-url <url>]` (also after the
    /// server stopped).
    pub fn audit(&self, args: &[&str]) -> CommandOutput {
        audit(&self.data_dir, self.database_url.as_deref(), args)
    }

    /// The database URL, when the server runs on PostgreSQL.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The running server, mutably (to stop it).
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// Like [`AuthServer::admin`], and panics unless the command succeeded.
    #[track_caller]
    pub fn admin_ok(&self, args: &[&str], input: &[u8]) -> CommandOutput {
        let output = self.admin(args, input);
        assert!(output.success(), "admin command was expected to succeed:\n{output}");
        output
    }

    /// `admin user add <name> --password-stdin` with `password`.
    pub fn add_user(&self, name: &str, password: &str) {
        self.admin_ok(&["user", "add", name, "--password-stdin"], format!("{password}\n").as_bytes());
    }

    /// `admin grant <principal> <role> <pattern>`.
    pub fn grant(&self, principal: &str, role: &str, pattern: &str) {
        self.admin_ok(&["grant", principal, role, pattern], b"");
    }

    /// `admin token create <name>`: the new API token.
    pub fn create_token(&self, name: &str) -> ApiToken {
        let output = self.admin_ok(&["token", "create", name], b"");
        let text = output.stdout.lines().last().unwrap_or_default().trim().to_owned();
        let id = text
            .strip_prefix("tufa_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id.to_owned())
            .unwrap_or_else(|| panic!("`admin token create` printed no token on its last line:\n{output}"));
        assert!(
            output.stdout.contains(&format!("created token {id} for {name}")),
            "`admin token create` names the token's id:\n{output}"
        );
        ApiToken { id, text }
    }
}
