//! The typed start-up configuration of the `tufa-server` binary: flags, `TUFA_*` variables and a TOML file, merged and validated once.
//!
//! Precedence, highest first: command-line flag, `TUFA_*` environment variable, the TOML file named by
//! `--config` (or `TUFA_CONFIG`), built-in default. A list (`--tls-name`, `tls_names`) from a higher layer
//! replaces the whole list of a lower one; lists are never merged.
//!
//! Relative paths written in the TOML file are resolved against the directory holding that file, as Notary
//! does; relative paths from flags or variables are left relative to the working directory.
//!
//! Environment variables are read through a lookup function handed to [`load_from`], never by clap itself,
//! so tests can supply an environment without mutating the process (`std::env::set_var` is `unsafe` in
//! edition 2024 and `unsafe` is forbidden here). The `env` attributes on the clap fields only document the
//! variables in `--help`; [`load_from`] strips them before parsing. A unit test checks that every variable
//! documented there is also read by [`env_layer`].
//!
//! Secrets (the database password, the key-encryption key) live in types whose `Debug` redacts them and
//! whose memory is zeroized on drop.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Seconds in a year: the upper bound of both cache lifetimes (Notary's limit).
const MAX_CACHE_AGE_SECS: u64 = 31_536_000;
/// One gibibyte, the largest accepted request-body limit.
const MAX_BODY_LIMIT: usize = 1 << 30;
/// Lifetime of a server-signed timestamp (14 days); the refresh window must be shorter.
const TIMESTAMP_LIFETIME_SECS: u64 = 14 * 24 * 60 * 60;
/// A key-encryption-key file longer than this cannot be a 64-character hex key plus whitespace.
const MAX_KEK_FILE_BYTES: u64 = 1024;

const ENV_HELP: &str = "\
Environment:
  Every flag above can also be set through the TUFA_* variable shown next to it; a flag wins over
  its variable, and a variable wins over the config file. TUFA_TLS_NAMES takes a comma-separated list.
  TUFA_KEK  the key-encryption key itself, 64 hex characters; there is deliberately no flag for it.
            When set, the --kek-file is neither read nor created.

Config file (TOML) keys without a flag:
  gun_prefixes, [cache] current_max_age / consistent_max_age, [limits] max_body_bytes /
  max_delegation_depth / max_parts, [timestamp] refresh_interval_secs / refresh_before_secs.
  See tufa-server.example.toml.";

// Command-line flags. Every field is optional so that an absent flag falls through to the lower layers.
// (Plain comments, not doc comments: clap would print doc comments as the long help's description.)
// This type deliberately does not implement `Debug`: it can hold the database URL with its password.
#[derive(Parser)]
#[command(
    name = "tufa-server",
    version,
    about = "Tufa: a Notary-v1-compatible TUF trust server.",
    after_long_help = ENV_HELP
)]
struct Cli {
    /// TOML configuration file. Flags and TUFA_* variables override the settings in it.
    #[arg(long, value_name = "FILE", env = "TUFA_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,

    /// Address and port to listen on, e.g. 0.0.0.0:4443 [default: 127.0.0.1:4443].
    #[arg(long, value_name = "ADDR:PORT", env = "TUFA_LISTEN", hide_env_values = true)]
    listen: Option<String>,

    /// Directory for the SQLite database, the generated TLS files and the key-encryption key
    /// [default: ./tufa-data].
    #[arg(long, value_name = "DIR", env = "TUFA_DATA_DIR", hide_env_values = true)]
    data_dir: Option<PathBuf>,

    /// Database URL: sqlite://PATH, sqlite::memory: or postgres://USER:PASSWORD@HOST/DB
    /// [default: sqlite://<data-dir>/tufa.db]. The password is never logged.
    #[arg(long, value_name = "URL", env = "TUFA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// PEM certificate chain to serve, leaf first. Needs --tls-key. Without both, a local CA and a
    /// server certificate are generated in <data-dir>/tls.
    #[arg(long, value_name = "FILE", env = "TUFA_TLS_CERT", hide_env_values = true)]
    tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", env = "TUFA_TLS_KEY", hide_env_values = true)]
    tls_key: Option<PathBuf>,

    /// PEM bundle of CA certificates. When set, every client must present a certificate issued by
    /// one of them (mutual TLS).
    #[arg(long, value_name = "FILE", env = "TUFA_TLS_CLIENT_CA", hide_env_values = true)]
    tls_client_ca: Option<PathBuf>,

    /// Extra DNS name or IP address for the generated server certificate (localhost, 127.0.0.1 and
    /// ::1 are always included). Repeatable; only valid without --tls-cert/--tls-key.
    #[arg(
        long = "tls-name",
        value_name = "NAME",
        env = "TUFA_TLS_NAMES",
        hide_env_values = true,
        value_delimiter = ','
    )]
    tls_names: Vec<String>,

    /// File holding the key-encryption key that seals the signing keys at rest: 32 random bytes
    /// written as 64 hex characters. Created with mode 0600 if absent; refused if readable by
    /// group or others [default: <data-dir>/kek.key].
    #[arg(long, value_name = "FILE", env = "TUFA_KEK_FILE", hide_env_values = true)]
    kek_file: Option<PathBuf>,

    /// Algorithm of the timestamp and snapshot keys the server creates [default: ecdsa].
    #[arg(long, value_name = "ALG", env = "TUFA_KEY_ALGORITHM", hide_env_values = true)]
    key_algorithm: Option<KeyAlgorithm>,

    /// Log filter, a level or tracing directives such as "info,tufa_server=debug" [default: info].
    #[arg(long, value_name = "FILTER", env = "TUFA_LOG", hide_env_values = true)]
    log_level: Option<String>,

    /// Log output format [default: text].
    #[arg(long, value_name = "FORMAT", env = "TUFA_LOG_FORMAT", hide_env_values = true)]
    log_format: Option<LogFormat>,

    /// URL of a separate signing service (tufa-signer or notary-signer), e.g.
    /// https://signer.internal:7899. With it the server holds no private key and signs every
    /// timestamp and snapshot through that service over mutual TLS; without it the in-process
    /// signer is used.
    #[arg(long, value_name = "URL", env = "TUFA_SIGNER_URL", hide_env_values = true)]
    signer_url: Option<String>,

    /// PEM bundle of the CA that issued the signer's certificate (required with --signer-url).
    #[arg(long, value_name = "FILE", env = "TUFA_SIGNER_CA", hide_env_values = true)]
    signer_ca: Option<PathBuf>,

    /// PEM client certificate this server presents to the signer (give with --signer-key).
    #[arg(long, value_name = "FILE", env = "TUFA_SIGNER_CERT", hide_env_values = true)]
    signer_cert: Option<PathBuf>,

    /// PEM private key of --signer-cert.
    #[arg(long, value_name = "FILE", env = "TUFA_SIGNER_KEY", hide_env_values = true)]
    signer_key: Option<PathBuf>,
}

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

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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

/// The database backend a [`DatabaseUrl`] selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// `sqlite://PATH` or `sqlite::memory:`.
    Sqlite,
    /// `postgres://` or `postgresql://`.
    Postgres,
}

/// A validated database URL. It may carry a password, so `Debug` shows the redacted form and the
/// memory is zeroized on drop; [`DatabaseUrl::expose`] gives the real string to the database driver.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: Zeroizing<String>,
    backend: DatabaseBackend,
}

impl DatabaseUrl {
    /// Checks the scheme and returns the URL, or a reason naming the accepted forms.
    fn parse(url: Zeroizing<String>) -> Result<Self, String> {
        let backend = if url.as_str() == "sqlite::memory:" {
            DatabaseBackend::Sqlite
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path.starts_with('?') {
                return Err("sqlite:// needs a file path, e.g. sqlite:///var/lib/tufa/tufa.db".into());
            }
            DatabaseBackend::Sqlite
        } else if let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) {
            if rest.is_empty() {
                return Err("postgres:// needs a host, e.g. postgres://tufa@db.example/tufa".into());
            }
            DatabaseBackend::Postgres
        } else {
            return Err(format!(
                "unsupported scheme in {}; use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB",
                redact_url(&url)
            ));
        };
        Ok(Self { url, backend })
    }

    /// The full URL including any password. Hand it to the database driver; never log it.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The backend selected by the URL's scheme.
    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// The URL with the password (in the user-info part and in `password=`/`sslpassword=` query
    /// parameters) replaced by `***`; safe to log.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted()).finish()
    }
}

/// Replaces the password parts of a URL with `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|index| index + 3) else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&redacted.join("&"));
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
    out
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_body_bytes: 32 << 20, max_delegation_depth: 16, max_parts: 1000 }
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
    kek_from_env: Option<KekMaterial>,
    /// The separate signing service, if one is configured.
    pub signer: Option<SignerConfig>,
    /// Algorithm for server-created timestamp and snapshot keys.
    pub key_algorithm: KeyAlgorithm,
    /// `tracing` filter directives.
    pub log_level: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// Cache lifetimes.
    pub cache: CacheConfig,
    /// Input bounds.
    pub limits: LimitsConfig,
    /// Timestamp re-signing.
    pub timestamp: TimestampConfig,
    /// If non-empty, only GUNs starting with one of these prefixes are served.
    pub gun_prefixes: Vec<String>,
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
    /// so that [`load_or_create_kek`] will not generate one.
    pub fn kek_exists(&self) -> bool {
        self.kek_from_env.is_some() || self.kek_file.exists()
    }
}

/// Why the configuration could not be loaded. Messages name the flag, variable or file key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad command line, or `--help` / `--version`: call [`clap::Error::exit`] on it.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}", path = path.display())]
    ReadFile {
        /// The file named by `--config` or `TUFA_CONFIG`.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or wrongly typed values.
    /// (The offending line is not quoted, because it might hold a password.)
    #[error("invalid config file {path}: {reason}", path = path.display())]
    ParseFile {
        /// The file named by `--config` or `TUFA_CONFIG`.
        path: PathBuf,
        /// Line, column and parser message.
        reason: String,
    },
    /// One setting has a bad value.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// Where the value came from, e.g. `--listen`, `TUFA_LISTEN` or `` `listen` in /etc/tufa.toml ``.
        setting: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// Settings that cannot be combined.
    #[error("{0}")]
    Conflict(String),
    /// The key-encryption key file is readable by group or others.
    #[error(
        "key-encryption key file {path} is readable by group or others (mode {mode:03o}); \
         restrict it with `chmod 600 {path}`",
        path = path.display()
    )]
    KekPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key-encryption key file could not be read or created.
    #[error("cannot {action} key-encryption key file {path}: {source}", path = path.display())]
    KekFile {
        /// The key file.
        path: PathBuf,
        /// What was being done: "read", "create" or "create the directory of".
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The key-encryption key is not 32 bytes written as 64 hex characters.
    #[error("invalid key-encryption key in {origin}: {reason}")]
    KekFormat {
        /// `TUFA_KEK` or the key file's path.
        origin: String,
        /// What is wrong (the key material is never quoted).
        reason: String,
    },
}

/// Where a value came from, for error messages.
#[derive(Clone, Debug)]
enum Origin {
    Flag,
    Env,
    File(PathBuf),
    Default,
}

/// The three names of one setting.
#[derive(Clone, Copy)]
struct Setting {
    flag: &'static str,
    env: &'static str,
    key: &'static str,
}

const LISTEN: Setting = Setting { flag: "--listen", env: "TUFA_LISTEN", key: "listen" };
const DATA_DIR: Setting = Setting { flag: "--data-dir", env: "TUFA_DATA_DIR", key: "data_dir" };
const DATABASE_URL: Setting = Setting { flag: "--database-url", env: "TUFA_DATABASE_URL", key: "database_url" };
const TLS_CERT: Setting = Setting { flag: "--tls-cert", env: "TUFA_TLS_CERT", key: "tls_cert" };
const TLS_KEY: Setting = Setting { flag: "--tls-key", env: "TUFA_TLS_KEY", key: "tls_key" };
const TLS_CLIENT_CA: Setting = Setting { flag: "--tls-client-ca", env: "TUFA_TLS_CLIENT_CA", key: "tls_client_ca" };
const TLS_NAMES: Setting = Setting { flag: "--tls-name", env: "TUFA_TLS_NAMES", key: "tls_names" };
const KEK_FILE: Setting = Setting { flag: "--kek-file", env: "TUFA_KEK_FILE", key: "kek_file" };
const KEY_ALGORITHM: Setting = Setting { flag: "--key-algorithm", env: "TUFA_KEY_ALGORITHM", key: "key_algorithm" };
const LOG_LEVEL: Setting = Setting { flag: "--log-level", env: "TUFA_LOG", key: "log_level" };
const LOG_FORMAT: Setting = Setting { flag: "--log-format", env: "TUFA_LOG_FORMAT", key: "log_format" };
const SIGNER_URL: Setting = Setting { flag: "--signer-url", env: "TUFA_SIGNER_URL", key: "signer_url" };
const SIGNER_CA: Setting = Setting { flag: "--signer-ca", env: "TUFA_SIGNER_CA", key: "signer_ca" };
const SIGNER_CERT: Setting = Setting { flag: "--signer-cert", env: "TUFA_SIGNER_CERT", key: "signer_cert" };
const SIGNER_KEY: Setting = Setting { flag: "--signer-key", env: "TUFA_SIGNER_KEY", key: "signer_key" };
/// Only in the environment.
const ENV_CONFIG: &str = "TUFA_CONFIG";
/// Only in the environment.
const ENV_KEK: &str = "TUFA_KEK";

/// Every variable [`env_layer`] reads; the tests compare it with the clap attributes.
#[cfg(test)]
const ENV_VARIABLES: [&str; 17] = [
    ENV_CONFIG,
    LISTEN.env,
    DATA_DIR.env,
    DATABASE_URL.env,
    TLS_CERT.env,
    TLS_KEY.env,
    TLS_CLIENT_CA.env,
    TLS_NAMES.env,
    KEK_FILE.env,
    ENV_KEK,
    KEY_ALGORITHM.env,
    LOG_LEVEL.env,
    LOG_FORMAT.env,
    SIGNER_URL.env,
    SIGNER_CA.env,
    SIGNER_CERT.env,
    SIGNER_KEY.env,
];

impl Origin {
    fn describe(&self, setting: Setting) -> String {
        match self {
            Self::Flag => setting.flag.to_owned(),
            Self::Env => setting.env.to_owned(),
            Self::File(path) => format!("`{}` in {}", setting.key, path.display()),
            Self::Default => format!("default {}", setting.key),
        }
    }
}

/// A value and where it came from.
struct Sourced<T> {
    value: T,
    origin: Origin,
}

impl<T> Sourced<T> {
    fn invalid(&self, setting: Setting, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { setting: self.origin.describe(setting), reason: reason.into() }
    }
}

/// The settings one source (flags, environment or file) provides, still unvalidated.
#[derive(Default)]
struct Layer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<Zeroizing<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_names: Option<Vec<String>>,
    kek_file: Option<PathBuf>,
    key_algorithm: Option<KeyAlgorithm>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    signer_url: Option<String>,
    signer_ca: Option<PathBuf>,
    signer_cert: Option<PathBuf>,
    signer_key: Option<PathBuf>,
}

/// The TOML file, as written. Unknown keys are errors so that typos do not pass silently.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_names: Option<Vec<String>>,
    kek_file: Option<PathBuf>,
    key_algorithm: Option<KeyAlgorithm>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    signer_url: Option<String>,
    signer_ca: Option<PathBuf>,
    signer_cert: Option<PathBuf>,
    signer_key: Option<PathBuf>,
    gun_prefixes: Option<Vec<String>>,
    cache: Option<FileCache>,
    limits: Option<FileLimits>,
    timestamp: Option<FileTimestamp>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    current_max_age: Option<u64>,
    consistent_max_age: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    max_delegation_depth: Option<usize>,
    max_parts: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimestamp {
    refresh_interval_secs: Option<u64>,
    refresh_before_secs: Option<u64>,
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
    let cli = parse_cli(&args)?;
    let lookup = |name: &str| env(name).filter(|value| !value.is_empty());

    let config_file = match cli.config.clone() {
        Some(path) => Some(path),
        None => lookup(ENV_CONFIG).map(PathBuf::from),
    };
    let file = match &config_file {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let kek_from_env = match lookup(ENV_KEK) {
        Some(value) => {
            let text = Zeroizing::new(value.into_string().map_err(|_| ConfigError::KekFormat {
                origin: ENV_KEK.to_owned(),
                reason: "not valid UTF-8".to_owned(),
            })?);
            Some(KekMaterial::from_hex(&text, ENV_KEK)?)
        }
        None => None,
    };
    let flags = flag_layer(cli);
    let environment = env_layer(&lookup)?;
    let base_dir = config_file.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let (file_layer, file_rest) = file_layer(file, &base_dir);
    let file_origin = config_file.clone().map(Origin::File).unwrap_or(Origin::Default);

    resolve(ResolveInput { flags, environment, file: file_layer, file_rest, file_origin, config_file, kek_from_env })
}

/// Parses the flags with clap's own environment reading switched off (see the module docs).
fn parse_cli(args: &[OsString]) -> Result<Cli, clap::Error> {
    let command = Cli::command().mut_args(|arg| arg.env(None));
    match command.try_get_matches_from(args) {
        Ok(matches) => Cli::from_arg_matches(&matches),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            // Render help again from the full command so that it lists each flag's variable.
            Err(Cli::command().try_get_matches_from(args).err().unwrap_or(error))
        }
        Err(error) => Err(error),
    }
}

fn flag_layer(cli: Cli) -> Layer {
    Layer {
        listen: cli.listen,
        data_dir: cli.data_dir,
        database_url: cli.database_url.map(Zeroizing::new),
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
        tls_client_ca: cli.tls_client_ca,
        tls_names: (!cli.tls_names.is_empty()).then_some(cli.tls_names),
        kek_file: cli.kek_file,
        key_algorithm: cli.key_algorithm,
        log_level: cli.log_level,
        log_format: cli.log_format,
        signer_url: cli.signer_url,
        signer_ca: cli.signer_ca,
        signer_cert: cli.signer_cert,
        signer_key: cli.signer_key,
    }
}

/// Reads the `TUFA_*` variables through `lookup` (which already treats empty values as unset).
fn env_layer(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Layer, ConfigError> {
    let text = |setting: Setting| -> Result<Option<String>, ConfigError> {
        lookup(setting.env)
            .map(|value| {
                value.into_string().map_err(|_| ConfigError::Invalid {
                    setting: setting.env.to_owned(),
                    reason: "not valid UTF-8".to_owned(),
                })
            })
            .transpose()
    };
    let key_algorithm = match text(KEY_ALGORITHM)? {
        Some(value) => Some(KeyAlgorithm::from_str(&value, false).map_err(|_| ConfigError::Invalid {
            setting: KEY_ALGORITHM.env.to_owned(),
            reason: format!("unknown algorithm {value:?}; use ecdsa or ed25519"),
        })?),
        None => None,
    };
    let log_format = match text(LOG_FORMAT)? {
        Some(value) => Some(LogFormat::from_str(&value, false).map_err(|_| ConfigError::Invalid {
            setting: LOG_FORMAT.env.to_owned(),
            reason: format!("unknown format {value:?}; use text or json"),
        })?),
        None => None,
    };
    Ok(Layer {
        listen: text(LISTEN)?,
        data_dir: lookup(DATA_DIR.env).map(PathBuf::from),
        database_url: text(DATABASE_URL)?.map(Zeroizing::new),
        tls_cert: lookup(TLS_CERT.env).map(PathBuf::from),
        tls_key: lookup(TLS_KEY.env).map(PathBuf::from),
        tls_client_ca: lookup(TLS_CLIENT_CA.env).map(PathBuf::from),
        tls_names: text(TLS_NAMES)?
            .map(|list| list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect()),
        kek_file: lookup(KEK_FILE.env).map(PathBuf::from),
        key_algorithm,
        log_level: text(LOG_LEVEL)?,
        log_format,
        signer_url: text(SIGNER_URL)?,
        signer_ca: lookup(SIGNER_CA.env).map(PathBuf::from),
        signer_cert: lookup(SIGNER_CERT.env).map(PathBuf::from),
        signer_key: lookup(SIGNER_KEY.env).map(PathBuf::from),
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = Zeroizing::new(
        fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?,
    );
    toml::from_str(&text).map_err(|error| {
        let position = match error.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or_default();
                let line = before.matches('\n').count() + 1;
                let column = before.rfind('\n').map_or(before.len(), |newline| before.len() - newline - 1) + 1;
                format!("line {line}, column {column}: ")
            }
            None => String::new(),
        };
        ConfigError::ParseFile { path: path.to_path_buf(), reason: format!("{position}{}", error.message().trim_end()) }
    })
}

/// The file's settings that have no flag or variable.
#[derive(Default)]
struct FileRest {
    gun_prefixes: Option<Vec<String>>,
    cache: FileCache,
    limits: FileLimits,
    timestamp: FileTimestamp,
}

/// Splits the file into the layered settings (with relative paths anchored at `base_dir`) and the rest.
fn file_layer(file: FileConfig, base_dir: &Path) -> (Layer, FileRest) {
    // An empty path stays empty so that validation reports it instead of silently meaning `base_dir`.
    let anchor =
        |path: Option<PathBuf>| path.map(|path| if path.as_os_str().is_empty() { path } else { base_dir.join(path) });
    let layer = Layer {
        listen: file.listen,
        data_dir: anchor(file.data_dir),
        database_url: file.database_url.map(Zeroizing::new),
        tls_cert: anchor(file.tls_cert),
        tls_key: anchor(file.tls_key),
        tls_client_ca: anchor(file.tls_client_ca),
        tls_names: file.tls_names,
        kek_file: anchor(file.kek_file),
        key_algorithm: file.key_algorithm,
        log_level: file.log_level,
        log_format: file.log_format,
        signer_url: file.signer_url,
        signer_ca: anchor(file.signer_ca),
        signer_cert: anchor(file.signer_cert),
        signer_key: anchor(file.signer_key),
    };
    let rest = FileRest {
        gun_prefixes: file.gun_prefixes,
        cache: file.cache.unwrap_or_default(),
        limits: file.limits.unwrap_or_default(),
        timestamp: file.timestamp.unwrap_or_default(),
    };
    (layer, rest)
}

struct ResolveInput {
    flags: Layer,
    environment: Layer,
    file: Layer,
    file_rest: FileRest,
    file_origin: Origin,
    config_file: Option<PathBuf>,
    kek_from_env: Option<KekMaterial>,
}

/// Picks the highest layer that sets a value.
fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>, file_origin: &Origin) -> Option<Sourced<T>> {
    if let Some(value) = flag {
        return Some(Sourced { value, origin: Origin::Flag });
    }
    if let Some(value) = env {
        return Some(Sourced { value, origin: Origin::Env });
    }
    file.map(|value| Sourced { value, origin: file_origin.clone() })
}

fn resolve(input: ResolveInput) -> Result<Config, ConfigError> {
    let ResolveInput { flags, environment, file, file_rest, file_origin, config_file, kek_from_env } = input;
    let origin = &file_origin;

    let listen = match pick(flags.listen, environment.listen, file.listen, origin) {
        Some(listen) => listen.value.trim().parse::<SocketAddr>().map_err(|_| {
            listen.invalid(
                LISTEN,
                format!("{:?} is not ADDR:PORT; use e.g. 127.0.0.1:4443, 0.0.0.0:4443 or [::]:4443", listen.value),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 4443)),
    };

    let data_dir = match pick(flags.data_dir, environment.data_dir, file.data_dir, origin) {
        Some(dir) if dir.value.as_os_str().is_empty() => {
            return Err(dir.invalid(DATA_DIR, "must not be empty"));
        }
        Some(dir) => dir.value,
        None => PathBuf::from("./tufa-data"),
    };

    let database_url = match pick(flags.database_url, environment.database_url, file.database_url, origin) {
        Some(url) => {
            let describe = url.origin.describe(DATABASE_URL);
            DatabaseUrl::parse(url.value).map_err(|reason| ConfigError::Invalid { setting: describe, reason })?
        }
        None => default_database_url(&data_dir)?,
    };

    let tls_cert = pick(flags.tls_cert, environment.tls_cert, file.tls_cert, origin);
    let tls_key = pick(flags.tls_key, environment.tls_key, file.tls_key, origin);
    let tls_names = pick(flags.tls_names, environment.tls_names, file.tls_names, origin);
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            if let Some(names) = tls_names.filter(|names| !names.value.is_empty()) {
                return Err(ConfigError::Conflict(format!(
                    "{} only applies to the generated certificate; remove it or remove {} and {}",
                    names.origin.describe(TLS_NAMES),
                    cert.origin.describe(TLS_CERT),
                    key.origin.describe(TLS_KEY),
                )));
            }
            TlsSource::Files { cert: cert.value, key: key.value }
        }
        (Some(cert), None) => {
            return Err(ConfigError::Conflict(format!(
                "{} is set but no TLS key is: give both --tls-cert and --tls-key, or neither to use \
                 a generated certificate",
                cert.origin.describe(TLS_CERT)
            )));
        }
        (None, Some(key)) => {
            return Err(ConfigError::Conflict(format!(
                "{} is set but no TLS certificate is: give both --tls-cert and --tls-key, or neither \
                 to use a generated certificate",
                key.origin.describe(TLS_KEY)
            )));
        }
        (None, None) => {
            let extra_names = match tls_names {
                Some(names) => {
                    for name in &names.value {
                        check_tls_name(name).map_err(|reason| names.invalid(TLS_NAMES, reason))?;
                    }
                    names.value
                }
                None => Vec::new(),
            };
            TlsSource::Generated { extra_names }
        }
    };
    let tls_client_ca =
        pick(flags.tls_client_ca, environment.tls_client_ca, file.tls_client_ca, origin).map(|ca| ca.value);

    let kek_file = match pick(flags.kek_file, environment.kek_file, file.kek_file, origin) {
        Some(kek_file) if kek_from_env.is_some() => {
            return Err(ConfigError::Conflict(format!(
                "both {ENV_KEK} and {} are set; use only one source for the key-encryption key",
                kek_file.origin.describe(KEK_FILE)
            )));
        }
        Some(kek_file) => kek_file.value,
        None => data_dir.join("kek.key"),
    };

    let key_algorithm = pick(flags.key_algorithm, environment.key_algorithm, file.key_algorithm, origin)
        .map(|algorithm| algorithm.value)
        .unwrap_or_default();
    let log_format = pick(flags.log_format, environment.log_format, file.log_format, origin)
        .map(|format| format.value)
        .unwrap_or_default();
    let log_level = match pick(flags.log_level, environment.log_level, file.log_level, origin) {
        Some(level) => {
            tracing_subscriber::EnvFilter::try_new(&level.value)
                .map_err(|error| level.invalid(LOG_LEVEL, format!("{:?}: {error}", level.value)))?;
            level.value
        }
        None => "info".to_owned(),
    };

    let signer = resolve_signer(
        pick(flags.signer_url, environment.signer_url, file.signer_url, origin),
        pick(flags.signer_ca, environment.signer_ca, file.signer_ca, origin),
        pick(flags.signer_cert, environment.signer_cert, file.signer_cert, origin),
        pick(flags.signer_key, environment.signer_key, file.signer_key, origin),
    )?;

    let FileRest { gun_prefixes, cache, limits, timestamp } = file_rest;
    let in_file = |key: &str| match &file_origin {
        Origin::File(path) => format!("`{key}` in {}", path.display()),
        _ => format!("default {key}"),
    };
    let check = |key: &str, value: u64, min: u64, max: u64| -> Result<(), ConfigError> {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError::Invalid { setting: in_file(key), reason: format!("{value} is outside {min}..={max}") })
        }
    };

    let cache_defaults = CacheConfig::default();
    let cache = CacheConfig {
        current_max_age: cache.current_max_age.unwrap_or(cache_defaults.current_max_age),
        consistent_max_age: cache.consistent_max_age.unwrap_or(cache_defaults.consistent_max_age),
    };
    check("cache.current_max_age", cache.current_max_age, 0, MAX_CACHE_AGE_SECS)?;
    check("cache.consistent_max_age", cache.consistent_max_age, 0, MAX_CACHE_AGE_SECS)?;

    let limit_defaults = LimitsConfig::default();
    let limits = LimitsConfig {
        max_body_bytes: limits.max_body_bytes.unwrap_or(limit_defaults.max_body_bytes),
        max_delegation_depth: limits.max_delegation_depth.unwrap_or(limit_defaults.max_delegation_depth),
        max_parts: limits.max_parts.unwrap_or(limit_defaults.max_parts),
    };
    let as_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    check("limits.max_body_bytes", as_u64(limits.max_body_bytes), 1, as_u64(MAX_BODY_LIMIT))?;
    check("limits.max_delegation_depth", as_u64(limits.max_delegation_depth), 1, 255)?;
    check("limits.max_parts", as_u64(limits.max_parts), 1, 100_000)?;

    let timestamp_defaults = TimestampConfig::default();
    let timestamp = TimestampConfig {
        refresh_interval_secs: timestamp.refresh_interval_secs.unwrap_or(timestamp_defaults.refresh_interval_secs),
        refresh_before_secs: timestamp.refresh_before_secs.unwrap_or(timestamp_defaults.refresh_before_secs),
    };
    check("timestamp.refresh_interval_secs", timestamp.refresh_interval_secs, 1, 86_400)?;
    check("timestamp.refresh_before_secs", timestamp.refresh_before_secs, 60, TIMESTAMP_LIFETIME_SECS - 1)?;
    if timestamp.refresh_interval_secs >= timestamp.refresh_before_secs {
        return Err(ConfigError::Invalid {
            setting: in_file("timestamp.refresh_interval_secs"),
            reason: format!(
                "{} must be shorter than timestamp.refresh_before_secs ({}), or timestamps could \
                 expire between two checks",
                timestamp.refresh_interval_secs, timestamp.refresh_before_secs
            ),
        });
    }

    let gun_prefixes = gun_prefixes.unwrap_or_default();
    for prefix in &gun_prefixes {
        check_gun_prefix(prefix).map_err(|reason| ConfigError::Invalid {
            setting: in_file("gun_prefixes"),
            reason: format!("{prefix:?} {reason}"),
        })?;
    }

    Ok(Config {
        config_file,
        listen,
        data_dir,
        database_url,
        tls,
        tls_client_ca,
        kek_file,
        kek_from_env,
        key_algorithm,
        log_level,
        log_format,
        cache,
        limits,
        timestamp,
        gun_prefixes,
        signer,
    })
}

/// Checks the remote-signer settings: a URL `https://HOST:PORT` with a CA, and a client
/// certificate and key given together.
fn resolve_signer(
    url: Option<Sourced<String>>,
    ca: Option<Sourced<PathBuf>>,
    cert: Option<Sourced<PathBuf>>,
    key: Option<Sourced<PathBuf>>,
) -> Result<Option<SignerConfig>, ConfigError> {
    let Some(url) = url else {
        if let Some(extra) = ca
            .as_ref()
            .map(|ca| ca.origin.describe(SIGNER_CA))
            .or_else(|| cert.as_ref().map(|cert| cert.origin.describe(SIGNER_CERT)))
        {
            return Err(ConfigError::Conflict(format!("{extra} is set but --signer-url is not")));
        }
        return Ok(None);
    };
    let text = url.value.trim().to_owned();
    let Some(authority) = text.strip_prefix("https://") else {
        return Err(
            url.invalid(SIGNER_URL, format!("{text:?} must start with https:// (the signer is only reached over TLS)"))
        );
    };
    let authority = authority.trim_end_matches('/');
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(url.invalid(SIGNER_URL, format!("{text:?} needs a port, e.g. https://signer:7899")));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
        return Err(url.invalid(SIGNER_URL, format!("{text:?} is not https://HOST:PORT")));
    }
    let Some(ca) = ca else {
        return Err(ConfigError::Conflict(
            "--signer-url is set but --signer-ca is not: give the CA that issued the signer's certificate".into(),
        ));
    };
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert.value, key.value)),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(ConfigError::Conflict(format!(
                "{} is set but --signer-key is not",
                cert.origin.describe(SIGNER_CERT)
            )));
        }
        (None, Some(key)) => {
            return Err(ConfigError::Conflict(format!(
                "{} is set but --signer-cert is not",
                key.origin.describe(SIGNER_KEY)
            )));
        }
    };
    let host = host.to_owned();
    Ok(Some(SignerConfig { url: text, host, ca: ca.value, client }))
}

/// `sqlite://<data_dir>/tufa.db`, refused for directory names that would be misread inside a URL.
fn default_database_url(data_dir: &Path) -> Result<DatabaseUrl, ConfigError> {
    let path = data_dir.join("tufa.db");
    let invalid = |reason: &str| ConfigError::Invalid {
        setting: "default database_url".to_owned(),
        reason: format!("{reason}; set --database-url explicitly"),
    };
    let Some(text) = path.to_str() else {
        return Err(invalid("the data directory is not valid UTF-8"));
    };
    if text.contains(['?', '#']) {
        return Err(invalid("the data directory contains '?' or '#'"));
    }
    DatabaseUrl::parse(Zeroizing::new(format!("sqlite://{text}"))).map_err(|reason| invalid(&reason))
}

/// A name for the generated certificate: an IP address or a syntactically valid DNS name.
fn check_tls_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    match rustls_pki_types::DnsName::try_from(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{name:?} is neither an IP address nor a valid DNS name")),
    }
}

/// Notary's rule: ends in `/`, does not start with `/`, and is path-clean (no empty, `.` or `..` segment).
fn check_gun_prefix(prefix: &str) -> Result<(), &'static str> {
    let Some(body) = prefix.strip_suffix('/') else {
        return Err("must end with '/'");
    };
    if prefix.starts_with('/') {
        return Err("must not start with '/'");
    }
    if body.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err("must be a clean path (no empty, '.' or '..' segments)");
    }
    Ok(())
}

/// 32 key bytes, zeroized on drop.
#[derive(Clone)]
struct KekMaterial(Zeroizing<[u8; 32]>);

impl KekMaterial {
    /// Parses 64 hex characters, ignoring surrounding whitespace. Errors never quote the input.
    fn from_hex(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let trimmed = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if trimmed.len() != 64 {
            return Err(ConfigError::KekFormat {
                origin: origin.to_owned(),
                reason: format!("expected 64 hex characters (32 bytes), found {} characters", trimmed.len()),
            });
        }
        hex::decode_to_slice(trimmed, key.as_mut_slice()).map_err(|_| ConfigError::KekFormat {
            origin: origin.to_owned(),
            reason: "expected only hex digits 0-9 and a-f".to_owned(),
        })?;
        Ok(Self(key))
    }

    fn generate() -> Result<Self, io::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut_slice())
            .map_err(|_| io::Error::other("the system random number generator failed"))?;
        Ok(Self(key))
    }
}

impl fmt::Debug for KekMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KekMaterial([redacted])")
    }
}

/// The key-encryption key that seals the in-process signer's private keys at rest.
///
/// `Debug` shows only the [`Kek::id`]; the key bytes are zeroized on drop.
pub struct Kek {
    /// A public label for rows sealed under this key: the first 16 hex characters of SHA-256(key).
    pub id: String,
    key: Zeroizing<[u8; 32]>,
}

impl Kek {
    /// The 32 key bytes.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn new(material: KekMaterial) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material.0.as_slice());
        let id = hex::encode(digest.as_ref().get(..8).unwrap_or_default());
        Self { id, key: material.0 }
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).field("key", &"[redacted]").finish()
    }
}

/// Returns the key-encryption key: from `TUFA_KEK` if set, else from [`Config::kek_file`], which is
/// created with 32 random bytes (mode 0600, its directory 0700 if missing) when it does not exist.
///
/// The file holds the key as 64 hex characters; surrounding whitespace is ignored. A file readable by
/// group or others is refused. Losing this key makes every sealed signing key unreadable: back it up.
pub fn load_or_create_kek(config: &Config) -> Result<Kek, ConfigError> {
    if let Some(material) = &config.kek_from_env {
        return Ok(Kek::new(material.clone()));
    }
    let path = &config.kek_file;
    match read_kek_file(path) {
        Ok(material) => Ok(Kek::new(material)),
        Err(ConfigError::KekFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            match create_kek_file(path) {
                Ok(material) => {
                    let kek = Kek::new(material);
                    tracing::warn!(
                        path = %path.display(),
                        kek.id = %kek.id,
                        "generated a new key-encryption key; back this file up, without it the sealed signing keys cannot be recovered"
                    );
                    Ok(kek)
                }
                // Another process created it between our read and our create: use theirs.
                Err(ConfigError::KekFile { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                    read_kek_file(path).map(Kek::new)
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

fn read_kek_file(path: &Path) -> Result<KekMaterial, ConfigError> {
    let io_error = |source| ConfigError::KekFile { path: path.to_path_buf(), action: "read", source };
    let file = fs::File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(io_error(io::Error::other("not a regular file")));
    }
    check_private_mode(path, &metadata)?;
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEK_FILE_BYTES + 1).read_to_string(&mut text).map_err(io_error)?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_KEK_FILE_BYTES {
        return Err(ConfigError::KekFormat {
            origin: path.display().to_string(),
            reason: format!("file is larger than {MAX_KEK_FILE_BYTES} bytes"),
        });
    }
    KekMaterial::from_hex(&text, &path.display().to_string())
}

#[cfg(unix)]
fn check_private_mode(path: &Path, metadata: &fs::Metadata) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::KekPermissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _metadata: &fs::Metadata) -> Result<(), ConfigError> {
    Ok(())
}

fn create_kek_file(path: &Path) -> Result<KekMaterial, ConfigError> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_private_dir(parent).map_err(|source| ConfigError::KekFile {
            path: path.to_path_buf(),
            action: "create the directory of",
            source,
        })?;
    }
    let io_error = |source| ConfigError::KekFile { path: path.to_path_buf(), action: "create", source };
    let material = KekMaterial::generate().map_err(io_error)?;
    let mut text = Zeroizing::new(hex::encode(material.0.as_slice()));
    text.push('\n');
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if let Err(source) = written {
        // Do not leave a truncated key behind for the next start to trip over.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(io_error(source));
    }
    Ok(material)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Loads with the given flags (program name added) and environment pairs.
    fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, OsString> =
            env.iter().map(|(name, value)| ((*name).to_owned(), OsString::from(value))).collect();
        let argv = std::iter::once("tufa-server").chain(args.iter().copied());
        load_from(argv, |name| env.get(name).cloned())
    }

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("tufa.toml");
        fs::write(&path, text).unwrap();
        path
    }

    fn error_text(result: Result<Config, ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply_without_any_source() {
        let config = load_with(&[], &[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:4443".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./tufa-data"));
        assert_eq!(config.database_url.expose(), "sqlite://./tufa-data/tufa.db");
        assert_eq!(config.database_url.backend(), DatabaseBackend::Sqlite);
        assert_eq!(config.tls, TlsSource::Generated { extra_names: vec![] });
        assert_eq!(config.tls_client_ca, None);
        assert_eq!(config.kek_file, PathBuf::from("./tufa-data/kek.key"));
        assert_eq!(config.key_algorithm, KeyAlgorithm::Ecdsa);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.cache, CacheConfig { current_max_age: 300, consistent_max_age: 2_592_000 });
        assert_eq!(
            config.limits,
            LimitsConfig { max_body_bytes: 32 * 1024 * 1024, max_delegation_depth: 16, max_parts: 1000 }
        );
        assert_eq!(config.timestamp.refresh_interval(), Duration::from_secs(300));
        assert_eq!(config.timestamp.refresh_before(), Duration::from_secs(86_400));
        assert!(config.gun_prefixes.is_empty());
        assert_eq!(config.config_file, None);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(
            dir.path(),
            "listen = \"127.0.0.1:1001\"\nlog_level = \"warn\"\nkey_algorithm = \"ed25519\"\nlog_format = \"json\"\n",
        );
        let file_arg = file.to_str().unwrap();

        let from_file = load_with(&["--config", file_arg], &[]).unwrap();
        assert_eq!(from_file.listen.port(), 1001);
        assert_eq!(from_file.log_level, "warn");
        assert_eq!(from_file.key_algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(from_file.log_format, LogFormat::Json);
        assert_eq!(from_file.config_file.as_deref(), Some(file.as_path()));

        let from_env =
            load_with(&["--config", file_arg], &[("TUFA_LISTEN", "127.0.0.1:1002"), ("TUFA_KEY_ALGORITHM", "ecdsa")])
                .unwrap();
        assert_eq!(from_env.listen.port(), 1002);
        assert_eq!(from_env.key_algorithm, KeyAlgorithm::Ecdsa);
        assert_eq!(from_env.log_level, "warn", "unset variables fall through to the file");

        let from_flag = load_with(
            &["--config", file_arg, "--listen", "127.0.0.1:1003", "--log-format", "text"],
            &[("TUFA_LISTEN", "127.0.0.1:1002"), ("TUFA_LOG_FORMAT", "json")],
        )
        .unwrap();
        assert_eq!(from_flag.listen.port(), 1003);
        assert_eq!(from_flag.log_format, LogFormat::Text);
    }

    #[test]
    fn config_file_can_come_from_the_environment_and_empty_variables_are_unset() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), "listen = \"[::1]:2000\"\n");
        let config = load_with(&[], &[("TUFA_CONFIG", file.to_str().unwrap()), ("TUFA_LISTEN", "")]).unwrap();
        assert_eq!(config.listen, "[::1]:2000".parse().unwrap());
    }

    #[test]
    fn relative_paths_in_the_file_are_anchored_at_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(
            dir.path(),
            "data_dir = \"state\"\ntls_cert = \"certs/server.crt\"\ntls_key = \"/abs/server.key\"\n",
        );
        let config = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
        assert_eq!(config.data_dir, dir.path().join("state"));
        assert_eq!(
            config.tls,
            TlsSource::Files { cert: dir.path().join("certs/server.crt"), key: PathBuf::from("/abs/server.key") }
        );
        let expected_db = format!("sqlite://{}", dir.path().join("state/tufa.db").display());
        assert_eq!(config.database_url.expose(), expected_db);
        assert_eq!(config.kek_file, dir.path().join("state/kek.key"));

        // The same relative path from a flag stays relative to the working directory.
        let flagged = load_with(&["--config", file.to_str().unwrap(), "--data-dir", "state"], &[]).unwrap();
        assert_eq!(flagged.data_dir, PathBuf::from("state"));
    }

    #[test]
    fn example_config_parses_to_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), include_str!("../../tufa-server.example.toml"));
        let example = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
        let defaults = load_with(&[], &[]).unwrap();
        // The example's relative data_dir is anchored at the file's directory; all else matches.
        assert_eq!(example.data_dir, dir.path().join("./tufa-data"));
        assert_eq!(example.listen, defaults.listen);
        assert_eq!(example.tls, defaults.tls);
        assert_eq!(example.tls_client_ca, defaults.tls_client_ca);
        assert_eq!(example.key_algorithm, defaults.key_algorithm);
        assert_eq!(example.log_level, defaults.log_level);
        assert_eq!(example.log_format, defaults.log_format);
        assert_eq!(example.cache, defaults.cache);
        assert_eq!(example.limits, defaults.limits);
        assert_eq!(example.timestamp, defaults.timestamp);
        assert_eq!(example.gun_prefixes, defaults.gun_prefixes);
    }

    #[test]
    fn toml_only_sections_are_read_and_range_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(
            dir.path(),
            "gun_prefixes = [\"docker.io/\", \"example.com/team/\"]\n\
             [cache]\ncurrent_max_age = 0\n\
             [limits]\nmax_body_bytes = 1024\nmax_parts = 5\n\
             [timestamp]\nrefresh_interval_secs = 60\nrefresh_before_secs = 3600\n",
        );
        let config = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
        assert_eq!(config.gun_prefixes, ["docker.io/", "example.com/team/"]);
        assert_eq!(config.cache.current_max_age, 0);
        assert_eq!(config.cache.consistent_max_age, 2_592_000);
        assert_eq!(config.limits.max_body_bytes, 1024);
        assert_eq!(config.limits.max_parts, 5);
        assert_eq!(config.limits.max_delegation_depth, 16);
        assert_eq!(config.timestamp.refresh_interval_secs, 60);
        assert_eq!(config.timestamp.refresh_before_secs, 3600);
    }

    /// Each case is a config file and a fragment its error message must contain.
    #[test]
    fn invalid_file_values_are_rejected_with_the_key_named() {
        let cases = [
            ("[cache]\ncurrent_max_age = 31536001\n", "`cache.current_max_age` in"),
            ("[cache]\nconsistent_max_age = -1\n", "line 2"),
            ("[limits]\nmax_body_bytes = 0\n", "`limits.max_body_bytes` in"),
            ("[limits]\nmax_body_bytes = 1073741825\n", "outside 1..=1073741824"),
            ("[limits]\nmax_parts = 0\n", "`limits.max_parts` in"),
            ("[limits]\nmax_delegation_depth = 0\n", "`limits.max_delegation_depth` in"),
            ("[timestamp]\nrefresh_interval_secs = 0\n", "`timestamp.refresh_interval_secs` in"),
            ("[timestamp]\nrefresh_before_secs = 1209600\n", "`timestamp.refresh_before_secs` in"),
            ("[timestamp]\nrefresh_interval_secs = 4000\nrefresh_before_secs = 3600\n", "must be shorter"),
            ("gun_prefixes = [\"docker.io\"]\n", "must end with '/'"),
            ("gun_prefixes = [\"/docker.io/\"]\n", "must not start with '/'"),
            ("gun_prefixes = [\"a/../b/\"]\n", "clean path"),
            ("gun_prefixes = [\"a//\"]\n", "clean path"),
            ("gun_prefixes = [\"/\"]\n", "must not start with '/'"),
            ("listen = \"localhost:4443\"\n", "`listen` in"),
            ("lisen = \"127.0.0.1:1\"\n", "unknown field `lisen`"),
            ("[cache]\nmax_age = 1\n", "unknown field `max_age`"),
            ("key_algorithm = \"rsa\"\n", "unknown variant `rsa`"),
            ("log_level = \"info,[[\"\n", "`log_level` in"),
            ("database_url = \"mysql://u:hunter2@db/x\"\n", "mysql://u:***@db/x"),
            ("data_dir = \"\"\n", "must not be empty"),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in cases {
            let file = write_config(dir.path(), text);
            let message = error_text(load_with(&["--config", file.to_str().unwrap()], &[]));
            assert!(message.contains(expected), "{text:?}: {message:?} lacks {expected:?}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn toml_syntax_errors_give_a_position_without_quoting_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), "listen = \"127.0.0.1:1\"\ndatabase_url = postgres://u:hunter2@db/x\n");
        let message = error_text(load_with(&["--config", file.to_str().unwrap()], &[]));
        assert!(message.contains("line 2, column 16"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let message = error_text(load_with(&["--config", "/nonexistent/tufa.toml"], &[]));
        assert!(message.starts_with("cannot read config file /nonexistent/tufa.toml"), "{message}");
    }

    #[test]
    fn bad_flag_and_env_values_name_their_source() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case<'_>; 7] = [
            (&["--listen", "4443"], &[], "invalid --listen"),
            (&[], &[("TUFA_LISTEN", "nope")], "invalid TUFA_LISTEN"),
            (&[], &[("TUFA_KEY_ALGORITHM", "rsa")], "invalid TUFA_KEY_ALGORITHM"),
            (&[], &[("TUFA_LOG_FORMAT", "xml")], "invalid TUFA_LOG_FORMAT"),
            (&["--database-url", "sqlite://"], &[], "invalid --database-url"),
            (&[], &[("TUFA_DATABASE_URL", "postgres://")], "invalid TUFA_DATABASE_URL"),
            (&["--tls-name", "bad name!"], &[], "invalid --tls-name"),
        ];
        for (args, env, expected) in cases {
            let message = error_text(load_with(args, env));
            assert!(message.starts_with(expected), "{args:?} {env:?}: {message}");
        }
    }

    #[test]
    fn unknown_flag_enum_values_are_clap_errors() {
        let error = load_with(&["--key-algorithm", "rsa"], &[]).unwrap_err();
        assert!(matches!(error, ConfigError::Cli(ref e) if e.kind() == ErrorKind::InvalidValue), "{error}");
        let error = load_with(&["--no-such-flag"], &[]).unwrap_err();
        assert!(matches!(error, ConfigError::Cli(ref e) if e.kind() == ErrorKind::UnknownArgument), "{error}");
    }

    #[test]
    fn database_urls_are_checked_and_redacted() {
        let accepted = [
            ("sqlite:///var/lib/tufa/tufa.db", DatabaseBackend::Sqlite),
            ("sqlite::memory:", DatabaseBackend::Sqlite),
            ("postgres://tufa@db/tufa", DatabaseBackend::Postgres),
            ("postgresql://tufa:pw@db:5432/tufa?sslmode=require", DatabaseBackend::Postgres),
        ];
        for (url, backend) in accepted {
            let config = load_with(&["--database-url", url], &[]).unwrap();
            assert_eq!(config.database_url.backend(), backend, "{url}");
            assert_eq!(config.database_url.expose(), url);
        }
        for url in ["mysql://db/x", "sqlite:tufa.db", "file:///x", "postgres:/db"] {
            assert!(load_with(&["--database-url", url], &[]).is_err(), "{url} accepted");
        }

        let redactions = [
            ("postgres://tufa:hunter2@db:5432/tufa", "postgres://tufa:***@db:5432/tufa"),
            ("postgres://tufa@db/tufa", "postgres://tufa@db/tufa"),
            ("postgres://tufa:p@ss@db/tufa", "postgres://tufa:***@db/tufa"),
            (
                "postgres://db/tufa?user=u&password=hunter2&sslmode=require",
                "postgres://db/tufa?user=u&password=***&sslmode=require",
            ),
            ("postgres://db?sslpassword=hunter2#frag", "postgres://db?sslpassword=***#frag"),
            ("sqlite:///data/tufa.db", "sqlite:///data/tufa.db"),
        ];
        for (url, expected) in redactions {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let key = "ab".repeat(32);
        let config =
            load_with(&["--database-url", "postgres://tufa:hunter2@db/tufa"], &[("TUFA_KEK", key.as_str())]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(&key), "{debug}");
        assert!(!debug.to_lowercase().contains("abababab"), "{debug}");
        assert!(debug.contains("postgres://tufa:***@db/tufa"), "{debug}");
        assert_eq!(config.redacted_database_url(), "postgres://tufa:***@db/tufa");

        let kek = load_or_create_kek(&config).unwrap();
        let debug = format!("{kek:?}");
        assert!(!debug.contains("abab"), "{debug}");
        assert!(debug.contains(&kek.id), "{debug}");
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let message = error_text(load_with(&["--tls-cert", "server.crt"], &[]));
        assert!(message.starts_with("--tls-cert is set but no TLS key is"), "{message}");
        let message = error_text(load_with(&[], &[("TUFA_TLS_KEY", "server.key")]));
        assert!(message.starts_with("TUFA_TLS_KEY is set but no TLS certificate is"), "{message}");

        let config = load_with(&["--tls-cert", "c.pem"], &[("TUFA_TLS_KEY", "k.pem")]).unwrap();
        assert_eq!(config.tls, TlsSource::Files { cert: PathBuf::from("c.pem"), key: PathBuf::from("k.pem") });
    }

    #[test]
    fn tls_names_are_repeatable_comma_separated_and_only_for_generated_certificates() {
        let config = load_with(&["--tls-name", "tufa.example", "--tls-name", "10.0.0.7,fe80::1"], &[]).unwrap();
        assert_eq!(
            config.tls,
            TlsSource::Generated { extra_names: vec!["tufa.example".into(), "10.0.0.7".into(), "fe80::1".into()] }
        );
        let config = load_with(&[], &[("TUFA_TLS_NAMES", "a.example, b.example,")]).unwrap();
        assert_eq!(config.tls, TlsSource::Generated { extra_names: vec!["a.example".into(), "b.example".into()] });
        // A flag list replaces the variable's list.
        let config = load_with(&["--tls-name", "c.example"], &[("TUFA_TLS_NAMES", "a.example")]).unwrap();
        assert_eq!(config.tls, TlsSource::Generated { extra_names: vec!["c.example".into()] });

        let message =
            error_text(load_with(&["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-name", "x.example"], &[]));
        assert!(message.starts_with("--tls-name only applies to the generated certificate"), "{message}");
    }

    #[test]
    fn help_documents_every_flag_and_variable() {
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--config",
            "--listen",
            "--data-dir",
            "--database-url",
            "--tls-cert",
            "--tls-key",
            "--tls-client-ca",
            "--tls-name",
            "--kek-file",
            "--key-algorithm",
            "--log-level",
            "--log-format",
            "--signer-url",
            "--signer-ca",
            "--signer-cert",
            "--signer-key",
        ] {
            assert!(help.contains(flag), "help lacks {flag}");
        }
        for variable in ENV_VARIABLES {
            assert!(help.contains(variable), "help lacks {variable}");
        }
        let error = load_with(&["--help"], &[]).unwrap_err();
        let ConfigError::Cli(error) = error else { panic!("--help should be a clap error") };
        assert_eq!(error.kind(), ErrorKind::DisplayHelp);
        assert!(error.to_string().contains("TUFA_DATABASE_URL"), "{error}");
    }

    /// Guards against a variable documented in `--help` that `env_layer` forgets to read.
    #[test]
    fn every_documented_variable_is_read() {
        let command = Cli::command();
        let documented: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        assert_eq!(documented.len(), ENV_VARIABLES.len() - 1, "all but TUFA_KEK have a flag");
        for name in &documented {
            assert!(ENV_VARIABLES.contains(&name.as_str()), "{name} is documented but not read");
        }
        // The path-valued variables not covered elsewhere reach the result.
        let config = load_with(
            &[],
            &[
                ("TUFA_DATA_DIR", "/env-data"),
                ("TUFA_TLS_CERT", "/env-cert"),
                ("TUFA_TLS_KEY", "/env-key"),
                ("TUFA_TLS_CLIENT_CA", "/env-ca"),
                ("TUFA_KEK_FILE", "/env-kek"),
                ("TUFA_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/env-data"));
        assert_eq!(config.tls, TlsSource::Files { cert: PathBuf::from("/env-cert"), key: PathBuf::from("/env-key") });
        assert_eq!(config.tls_client_ca, Some(PathBuf::from("/env-ca")));
        assert_eq!(config.kek_file, PathBuf::from("/env-kek"));
        assert_eq!(config.log_level, "debug");
    }

    #[test]
    fn signer_settings() {
        let full = [
            "--signer-url",
            "https://signer.internal:7899",
            "--signer-ca",
            "/ca.crt",
            "--signer-cert",
            "/client.crt",
            "--signer-key",
            "/client.key",
        ];
        let config = load_with(&full, &[]).unwrap();
        assert_eq!(
            config.signer,
            Some(SignerConfig {
                url: "https://signer.internal:7899".into(),
                host: "signer.internal".into(),
                ca: PathBuf::from("/ca.crt"),
                client: Some((PathBuf::from("/client.crt"), PathBuf::from("/client.key"))),
            })
        );
        assert_eq!(load_with(&[], &[]).unwrap().signer, None);
        let from_env =
            load_with(&[], &[("TUFA_SIGNER_URL", "https://[::1]:7899"), ("TUFA_SIGNER_CA", "/env-ca.crt")]).unwrap();
        let signer = from_env.signer.unwrap();
        assert_eq!((signer.host.as_str(), signer.client), ("::1", None));
        for (args, expected) in [
            (&["--signer-url", "http://signer:7899", "--signer-ca", "/ca"][..], "must start with https://"),
            (&["--signer-url", "https://signer", "--signer-ca", "/ca"][..], "needs a port"),
            (&["--signer-url", "https://signer:99999", "--signer-ca", "/ca"][..], "is not https://HOST:PORT"),
            (&["--signer-url", "https://signer:7899/x", "--signer-ca", "/ca"][..], "is not https://HOST:PORT"),
            (&["--signer-url", "https://signer:7899"][..], "--signer-ca is not"),
            (&["--signer-ca", "/ca"][..], "--signer-url is not"),
            (&["--signer-url", "https://s:1", "--signer-ca", "/ca", "--signer-cert", "/c"][..], "--signer-key is not"),
        ] {
            let message = error_text(load_with(args, &[]));
            assert!(message.contains(expected), "{args:?}: {message}");
        }
    }

    #[test]
    fn kek_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config = load_with(&["--data-dir", data_dir.to_str().unwrap()], &[]).unwrap();
        let first = load_or_create_kek(&config).unwrap();
        let path = data_dir.join("kek.key");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(hex::decode(text.trim()).unwrap(), first.key());
        assert_eq!(first.id.len(), 16);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777, 0o700);
        }
        let second = load_or_create_kek(&config).unwrap();
        assert_eq!(second.key(), first.key());
        assert_eq!(second.id, first.id);
    }

    #[test]
    fn kek_id_is_the_sha256_prefix() {
        let key = "00".repeat(32);
        let config = load_with(&[], &[("TUFA_KEK", key.as_str())]).unwrap();
        let kek = load_or_create_kek(&config).unwrap();
        assert_eq!(kek.key(), &[0u8; 32]);
        // SHA-256 of 32 zero bytes starts with 66687aadf862bd77.
        assert_eq!(kek.id, "66687aadf862bd77");
    }

    #[cfg(unix)]
    #[test]
    fn kek_file_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        fs::write(&path, "11".repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let config = load_with(&["--kek-file", path.to_str().unwrap()], &[]).unwrap();
        let message = load_or_create_kek(&config).unwrap_err().to_string();
        assert!(message.contains("mode 640"), "{message}");
        assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        let kek = load_or_create_kek(&config).unwrap();
        assert_eq!(kek.key(), &[0x11u8; 32]);
    }

    #[test]
    fn malformed_keks_are_refused_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("abc".to_owned(), "found 3 characters"),
            (format!("{}zz", "a".repeat(62)), "only hex digits"),
            ("a".repeat(2000), "larger than 1024 bytes"),
        ];
        for (content, expected) in &cases {
            let path = dir.path().join("kek.key");
            let _ = fs::remove_file(&path);
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options.open(&path).unwrap().write_all(content.as_bytes()).unwrap();
            let config = load_with(&["--kek-file", path.to_str().unwrap()], &[]).unwrap();
            let message = load_or_create_kek(&config).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("aaaa"), "{message}");
        }
        let message = error_text(load_with(&[], &[("TUFA_KEK", "zz")]));
        assert!(message.starts_with("invalid key-encryption key in TUFA_KEK"), "{message}");
    }

    #[test]
    fn kek_from_env_conflicts_with_an_explicit_kek_file() {
        let key = "22".repeat(32);
        let message = error_text(load_with(&["--kek-file", "/k"], &[("TUFA_KEK", key.as_str())]));
        assert!(message.starts_with("both TUFA_KEK and --kek-file are set"), "{message}");
    }

    #[test]
    fn kek_in_a_missing_directory_path_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let path = blocker.join("kek.key");
        let config = load_with(&["--kek-file", path.to_str().unwrap()], &[]).unwrap();
        let message = load_or_create_kek(&config).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}
