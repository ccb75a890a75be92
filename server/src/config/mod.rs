//! The typed start-up configuration of the `tufa-server` binary: flags, `TUFA_*` variables and a TOML file, merged and validated once.
//!
//! Precedence, highest first: command-line flag, `TUFA_*` environment variable, the TOML file named by
//! `--config` (or `TUFA_CONFIG`), built-in default. A list (`--tls-name`, `tls_names`) from a higher layer
//! replaces the whole list of a lower one; lists are never merged. The layering machinery (origins in
//! error messages, variable and key aliases) is `tufa_common::layer`, shared with tufa-signer.
//!
//! Relative paths written in the TOML file are resolved against the directory holding that file, as Notary
//! does; relative paths from flags or variables are left relative to the working directory.
//!
//! The jobs are split: [`cli`] is the clap command line, [`resolve`] merges the layers and checks every
//! value, the database URL is parsed by `tufa_store::DatabaseUrl` (the one parser both binaries use), and
//! the key-encryption key file is `crate::kek`.
//!
//! Secrets (the database password, the key-encryption key) live in types whose `Debug` redacts them and
//! whose memory is zeroized on drop.

mod auth;
mod cli;
mod resolve;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

pub use tufa_common::layer::ConfigError;
pub use tufa_common::logging::{LogFormat, LogSettings};
pub use tufa_store::{Backend as DatabaseBackend, DatabaseUrl};

pub use auth::{
    AuthConfig, AuthMode, BuiltinAuthConfig, DEFAULT_BUILTIN_ISSUER, DEFAULT_BUILTIN_SERVICE, DEFAULT_TOKEN_TTL,
    RegistryService, TokenAuthConfig,
};

use crate::admin::AdminCommand;
use crate::kek::KekMaterial;

/// Algorithm of the keys the server generates for the timestamp and snapshot roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256, Notary's usual choice.
    #[default]
    Ecdsa,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ecdsa => "ecdsa",
            Self::Ed25519 => "ed25519",
        })
    }
}

/// Where the server's TLS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-supplied PEM files.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key of the leaf.
        key: PathBuf,
    },
    /// A local CA and server certificate kept in `<data_dir>/tls` (see `tls::ensure_generated`).
    Generated {
        /// DNS names and IP addresses added to `localhost`, `127.0.0.1` and `::1`.
        extra_names: Vec<String>,
    },
}

/// How to reach a separate signing service over mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerConfig {
    /// `https://HOST:PORT`.
    pub url: String,
    /// The host part of the URL: the name the signer's certificate must carry.
    pub host: String,
    /// CA bundle that issued the signer's certificate.
    pub ca: PathBuf,
    /// Client certificate and key presented to the signer.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `Cache-Control: max-age` lifetimes, in seconds (`[cache]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// For "current" metadata (`<role>.json`); 0 means `no-cache`. Default 300.
    pub current_max_age: u64,
    /// For content-addressed metadata (`<role>.<checksum>.json`, `<n>.root.json`). Default 2592000 (30 days).
    pub consistent_max_age: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { current_max_age: 300, consistent_max_age: 2_592_000 }
    }
}

/// Bounds on untrusted input (`[limits]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest accepted request body in bytes. Default 32 MiB, at most 1 GiB.
    pub max_body_bytes: usize,
    /// Deepest accepted delegation (`targets/a/b` has depth 2). Default 16.
    pub max_delegation_depth: usize,
    /// Most parts accepted in one multipart update. Default 1000.
    pub max_parts: usize,
    /// Most signatures one metadata file may carry. Default 64.
    pub max_signatures: usize,
    /// Most keys one root may declare. Default 256.
    pub max_root_keys: usize,
    /// Most key IDs one role (a base role or a delegation) may list. Default 256.
    pub max_role_keyids: usize,
    /// Most delegations one targets file may declare. Default 1,000.
    pub max_delegations: usize,
    /// Most keys the delegations of one targets file may declare. Default 2,000.
    pub max_delegation_keys: usize,
    /// Most path prefixes one delegation may list. Default 1,000.
    pub max_delegation_paths: usize,
    /// Most targets one targets or delegation file may list. Default 50,000.
    pub max_targets: usize,
    /// Most targets one update may touch: those its files list plus those the stored files it
    /// replaces list. Default twice `max_targets` (100,000).
    pub max_upload_targets: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let update = tufa_core::update::Limits::default();
        Self {
            max_body_bytes: 32 << 20,
            max_delegation_depth: update.max_delegation_depth,
            max_parts: 1000,
            max_signatures: update.max_signatures,
            max_root_keys: update.max_root_keys,
            max_role_keyids: update.max_role_keyids,
            max_delegations: update.max_delegations,
            max_delegation_keys: update.max_delegation_keys,
            max_delegation_paths: update.max_delegation_paths,
            max_targets: update.max_targets,
            max_upload_targets: update.max_upload_targets,
        }
    }
}

impl LimitsConfig {
    /// The limits the update verifier applies.
    pub fn update_limits(&self) -> tufa_core::update::Limits {
        tufa_core::update::Limits {
            max_delegation_depth: self.max_delegation_depth,
            max_signatures: self.max_signatures,
            max_root_keys: self.max_root_keys,
            max_role_keyids: self.max_role_keyids,
            max_delegations: self.max_delegations,
            max_delegation_keys: self.max_delegation_keys,
            max_delegation_paths: self.max_delegation_paths,
            max_targets: self.max_targets,
            max_upload_targets: self.max_upload_targets,
            max_replaced_bytes: self.max_body_bytes,
        }
    }
}

/// Timers and caps of client connections (`[connections]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionsConfig {
    /// Longest TLS handshake, seconds. Default 10 (1..=60).
    pub handshake_timeout_secs: u64,
    /// A connection must send its first request within this many seconds. Default 30 (1..=300).
    pub first_request_timeout_secs: u64,
    /// A connection with no request in flight for this many seconds is closed (HTTP/2 `GOAWAY`).
    /// Default 60 (1..=3600).
    pub idle_timeout_secs: u64,
    /// Most open connections; more are closed at once. Default 1024 (1..=1000000).
    pub max_connections: usize,
    /// Most concurrent streams on one HTTP/2 connection. Default 100 (1..=10000).
    pub max_concurrent_streams: u32,
    /// Most bytes of a request's head: over HTTP/1.1 its request line and headers as sent, over
    /// HTTP/2 its header list as HPACK counts it; a larger one gets `431`. Default 32768
    /// (8192..=1048576).
    pub max_header_bytes: usize,
    /// A request body must be complete within this many seconds of its headers. Default 60 (1..=3600).
    pub body_timeout_secs: u64,
    /// After [`Self::body_rate_grace_secs`], a body arriving slower than this many bytes per second
    /// on average is cut; 0 disables the check. Default 1024.
    pub min_body_rate: u64,
    /// Head start before [`Self::min_body_rate`] applies, seconds. Default 10 (0..=3600).
    pub body_rate_grace_secs: u64,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: 10,
            first_request_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 1024,
            max_concurrent_streams: 100,
            max_header_bytes: 32 * 1024,
            body_timeout_secs: 60,
            min_body_rate: 1024,
            body_rate_grace_secs: 10,
        }
    }
}

/// Bounds on uploads in progress across the whole server (`[uploads]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadsConfig {
    /// Most uploads parsed and verified at once (off the async workers). Default 4 (1..=1024).
    pub max_concurrent: usize,
    /// Most bytes of upload bodies held in memory at once, across the server. Default 64 MiB; at
    /// least `limits.max_body_bytes`, at most 16 GiB.
    pub max_buffered_bytes: u64,
    /// How long an upload waits for a verification slot or for buffer space before it is refused
    /// with 503, milliseconds. Default 5000 (0..=60000).
    pub wait_ms: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self { max_concurrent: 4, max_buffered_bytes: 64 << 20, wait_ms: 5000 }
    }
}

/// `POST /v1/verify` of the trust server (`[verify]` in the TOML file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyConfig {
    /// The trust policy file (tufa-policy) the endpoint applies; none: every repository of this
    /// server, its stored root trusted on first use, any role signing.
    pub policy: Option<PathBuf>,
}

/// The audit log's signed checkpoints (`[audit]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// How often a checkpoint is signed while the log grows, in seconds (1 to 60). Default 60.
    pub checkpoint_interval_secs: u64,
}

impl AuditConfig {
    /// [`Self::checkpoint_interval_secs`] as a `Duration`.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_interval_secs)
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { checkpoint_interval_secs: 60 }
    }
}

/// Background re-signing of timestamps that are about to expire (`[timestamp]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampConfig {
    /// How often the background task looks for timestamps to refresh, in seconds. Default 300.
    pub refresh_interval_secs: u64,
    /// Re-sign a timestamp when it expires within this many seconds. Default 86400 (one day).
    pub refresh_before_secs: u64,
}

impl TimestampConfig {
    /// [`Self::refresh_interval_secs`] as a `Duration`.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_interval_secs)
    }

    /// [`Self::refresh_before_secs`] as a `Duration`.
    pub fn refresh_before(&self) -> Duration {
        Duration::from_secs(self.refresh_before_secs)
    }
}

impl Default for TimestampConfig {
    fn default() -> Self {
        Self { refresh_interval_secs: 300, refresh_before_secs: 86_400 }
    }
}

/// The validated configuration of one `tufa-server` process. `Debug` never shows secrets.
#[derive(Clone, Debug)]
pub struct Config {
    /// The TOML file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Listening address.
    pub listen: SocketAddr,
    /// Directory for local state (SQLite database, generated TLS files, key-encryption key).
    pub data_dir: PathBuf,
    /// Database to use.
    pub database_url: DatabaseUrl,
    /// Server certificate source.
    pub tls: TlsSource,
    /// CA bundle for client certificates; `Some` means mutual TLS is required.
    pub tls_client_ca: Option<PathBuf>,
    /// File holding the key-encryption key; unused when `TUFA_KEK` is set.
    pub kek_file: PathBuf,
    /// The key-encryption key given directly in `TUFA_KEK`.
    pub(crate) kek_from_env: Option<KekMaterial>,
    /// The separate signing service, if one is configured.
    pub signer: Option<SignerConfig>,
    /// Algorithm for server-created timestamp and snapshot keys.
    pub key_algorithm: KeyAlgorithm,
    /// Log filter and format.
    pub log: LogSettings,
    /// Cache lifetimes.
    pub cache: CacheConfig,
    /// Input bounds.
    pub limits: LimitsConfig,
    /// Connection timers and caps.
    pub connections: ConnectionsConfig,
    /// Bounds on uploads in progress.
    pub uploads: UploadsConfig,
    /// Timestamp re-signing.
    pub timestamp: TimestampConfig,
    /// The audit log's checkpoints.
    pub audit: AuditConfig,
    /// `POST /v1/verify`.
    pub verify: VerifyConfig,
    /// If non-empty, only GUNs starting with one of these prefixes are served.
    pub gun_prefixes: Vec<String>,
    /// Authentication.
    pub auth: AuthConfig,
    /// The administration command to run instead of the server, if one was given.
    pub command: Option<AdminCommand>,
}

impl Config {
    /// The database URL with its password replaced by `***`, for logs and start-up banners.
    pub fn redacted_database_url(&self) -> String {
        self.database_url.redacted()
    }

    /// Where the key-encryption key comes from, for messages: `TUFA_KEK` or the KEK file.
    pub fn kek_source(&self) -> String {
        match self.kek_from_env {
            Some(_) => "TUFA_KEK".to_owned(),
            None => format!("the KEK file {}", self.kek_file.display()),
        }
    }

    /// Whether the key-encryption key exists already (`TUFA_KEK` is set or the KEK file exists),
    /// so that loading it will not generate a new one.
    pub fn kek_exists(&self) -> bool {
        self.kek_from_env.is_some() || self.kek_file.exists()
    }
}

/// Loads the configuration from the process's arguments and environment.
///
/// On `Err(ConfigError::Cli(error))` the caller should call `error.exit()`, which prints help,
/// the version or a usage error with clap's exit code.
pub fn load() -> Result<Config, ConfigError> {
    load_from(std::env::args_os(), |name| std::env::var_os(name))
}

/// Loads the configuration from `args` (including the program name, as in `std::env::args_os`)
/// and from the environment as seen through `env`, which maps a variable name to its value.
///
/// Tests pass a closure over a map; the process environment is never consulted by this function.
/// Empty variables count as unset, as in clap.
pub fn load_from<I, T>(args: I, env: impl Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = cli::parse(&args)?;
    resolve::resolve(cli, &env)
}
