//! The tufa-signer command line and configuration: flags (each also a `TUFA_SIGNER_*` environment
//! variable), an optional TOML file (`--config`), and the typed, validated settings built from
//! them. Precedence: flag, then environment, then file, then default, with the origin of a bad
//! value in its error (the layering is `tufa_common::layer`, shared with tufa-server). Relative
//! paths in the file are resolved against the file's directory. Key-encryption keys and PINs are
//! never flags.
//!
//! The names match tufa-server's for the same things (`--tls-client-ca`, `--log-level`,
//! `--log-format`, a `[tls]` table); the older `--client-ca`, `--log`, `TUFA_SIGNER_CLIENT_CA` and
//! file key `log` still work. Environment variables are read through a lookup function (see
//! [`load_from`]), not by clap, so tests never touch the process environment.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
pub use tufa_common::layer::ConfigError;
use tufa_common::layer::{self, Environment, FileOrigin, Setting, first};
use tufa_common::logging::{LogFormat, LogSettings};
use tufa_common::settings;

use tufa_store::DatabaseUrl;

use crate::backend::software::KekSpec;

/// Default listen address (notary-signer's conventional port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7899";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./tufa-signer-data";
/// The SQLite file inside the data directory.
pub const SQLITE_FILE_NAME: &str = "tufa-signer.db";
/// Default number of PKCS#11 sessions.
pub const DEFAULT_PKCS11_SESSIONS: usize = 4;
/// Default log filter. cryptoki logs every mechanism number it does not know at error level
/// while the PKCS#11 backend lists a token's mechanisms; that is noise, not a failure.
pub const DEFAULT_LOG: &str = "info,cryptoki::mechanism=off";
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

const ABOUT: &str = "Tufa signer: a drop-in for notary-signer (gRPC over mutual TLS) holding online keys in software \
                     (sealed at rest) or a PKCS#11 HSM.";

const LONG_ABOUT: &str = "\
Tufa signer: a drop-in for notary-signer. Serves notary-signer's gRPC protocol (proto.KeyManagement, proto.Signer and
grpc.health.v1.Health) over mutual TLS: clients must present a certificate issued by --tls-client-ca. Every signature is
recorded (key ID, client certificate subject, SHA-256 of the payload, time); `tufa-signer audit` prints the trail.
Signatures, key creations and deletions are also entries of a tamper-evident log (a Merkle tree with checkpoints signed by
the signer's own checkpoint key); `tufa-signer audit verify` checks it, `tufa-signer audit checkpoint` prints the latest
checkpoint and the key to pin.

Without a subcommand, the signer serves. Getting started:
  tufa-signer gen-certs --out pki                 # CA, signer (server) and client certificates
  tufa-signer gen-kek --out kek-1                  # a key-encryption key for the software backend
  TUFA_SIGNER_KEK_K1=$(cat kek-1) tufa-signer --tls-cert pki/signer.crt --tls-key pki/signer.key --tls-client-ca pki/ca.crt";

const CONFIG_HELP: &str = "\
CONFIGURATION FILE (--config FILE, TOML; every key optional; flags and environment variables win):
  listen = \"127.0.0.1:7899\"
  data_dir = \"/var/lib/tufa-signer\"           # holds tufa-signer.db unless database_url is set
  database_url = \"postgres://signer@db/signer\" # or sqlite:/path/file.db
  log_level = \"info\"                           # tracing filter, e.g. \"info,tufa_signer=debug\" (old name: log)
  log_format = \"text\"                          # or \"json\": one JSON object per log line
  [tls]
  cert = \"signer.crt\"                          # PEM chain, leaf first
  key = \"signer.key\"                           # PEM private key
  client_ca = \"ca.crt\"                         # required: clients without a certificate from it are refused
  [backend]
  type = \"software\"                            # or \"pkcs11\"
  [software]
  active_kek = \"k2\"                            # seals new keys; every listed KEK still opens old ones
  [[software.kek]]
  name = \"k2\"
  file = \"/etc/tufa-signer/kek-k2\"             # 64 hex digits, mode 0600 or stricter
  [[software.kek]]
  name = \"k1\"                                  # no file: read from TUFA_SIGNER_KEK_K1
  [pkcs11]
  module = \"/usr/lib/softhsm/libsofthsm2.so\"
  token_label = \"tufa\"                         # or slot = 0
  pin_file = \"/etc/tufa-signer/pin\"            # or pin_env = \"TUFA_SIGNER_PKCS11_PIN\"
  sessions = 4
  [audit]
  origin = \"signer.example.com/audit\"        # checkpoint key name, fixed when the key is made
  checkpoint_interval = 60                     # seconds (or \"5m\"), while the log grows

KEY-ENCRYPTION KEYS (software backend): 32 random bytes as 64 hex digits, from a [[software.kek]] file or from
TUFA_SIGNER_KEK_<NAME> (every such variable adds a KEK named <name> in lower case). Never from the command line.
With a single KEK it is the active one. Rotate: add a new KEK, make it active, restart, run `tufa-signer rotate-kek`,
then retire the old one.

OLDER NAMES (still read): --client-ca and TUFA_SIGNER_CLIENT_CA for --tls-client-ca, --log and the file key `log` for
--log-level, flat file keys tls_cert / tls_key / tls_client_ca for the [tls] table. One setting given both ways in
the same place is an error.

EXIT STATUS: 0 on success, 2 for a bad configuration or command line, 1 for any other failure.";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "tufa-signer", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = CONFIG_HELP)]
pub struct Cli {
    /// What to do; without a subcommand the signer serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings every subcommand uses.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Settings of the gRPC listener.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags shared by all subcommands. Every variable named here is read by [`load_from`], not by clap.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// TOML configuration file (see the end of --help).
    #[arg(long, env = "TUFA_SIGNER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory; holds the SQLite database tufa-signer.db unless --database-url is given
    /// [default: ./tufa-signer-data].
    #[arg(long, env = "TUFA_SIGNER_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: postgres://user@host/db (also postgresql://), sqlite:/path/file.db (also
    /// sqlite:///abs/path, sqlite://rel/path) or sqlite::memory: [default: the data directory's SQLite file].
    #[arg(long, env = "TUFA_SIGNER_DATABASE_URL", global = true, hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Key backend: software (keys sealed in the database) or pkcs11 (an HSM) [default: software].
    #[arg(long, env = "TUFA_SIGNER_BACKEND", global = true, value_parser = ["software", "pkcs11"])]
    pub backend: Option<String>,
    /// Name of the key-encryption key that seals new software keys (the KEKs themselves come from
    /// files or TUFA_SIGNER_KEK_<NAME>).
    #[arg(long, env = "TUFA_SIGNER_ACTIVE_KEK", global = true, value_name = "NAME")]
    pub active_kek: Option<String>,
    /// Log filter: a level (trace, debug, info, warn, error, off) or directives such as
    /// info,tufa_signer=debug; anything else is refused [default: info,cryptoki::mechanism=off].
    /// (--log is the older name.)
    #[arg(long, alias = "log", env = "TUFA_SIGNER_LOG", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log output format: text, or json for one JSON object per log line [default: text].
    #[arg(long, env = "TUFA_SIGNER_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Flags of the gRPC listener.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7899].
    #[arg(long, env = "TUFA_SIGNER_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The signer's TLS certificate (PEM chain, leaf first). Required.
    #[arg(long, env = "TUFA_SIGNER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The signer's TLS private key (PEM). Required.
    #[arg(long, env = "TUFA_SIGNER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that client certificates must chain to. Required: clients
    /// without such a certificate are refused. (--client-ca and TUFA_SIGNER_CLIENT_CA are the
    /// older names.)
    #[arg(long, alias = "client-ca", env = "TUFA_SIGNER_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// The audit log's origin: the name of its checkpoint key and the first line of every
    /// checkpoint. Used when the checkpoint key is created; afterwards it must match the stored
    /// one [default: tufa-signer/<hostname>].
    #[arg(long, env = "TUFA_SIGNER_AUDIT_ORIGIN", value_name = "NAME")]
    pub audit_origin: Option<String>,
    /// How often a checkpoint of the audit log is signed while it grows: seconds, or a number
    /// with s, m or h (one more is signed at shutdown) [default: 60s].
    #[arg(long, env = "TUFA_SIGNER_AUDIT_CHECKPOINT_INTERVAL", value_name = "DURATION")]
    pub audit_checkpoint_interval: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a small PKI for mutual TLS: ca.crt/ca.key, signer.crt/signer.key (server certificate
    /// for localhost, 127.0.0.1 and every --signer-name) and client.crt/client.key (CN tufa-server).
    /// Private keys are written with mode 0600.
    GenCerts {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Extra DNS name or IP address for the signer certificate (repeatable), e.g. the
        /// hostname tufa-server dials.
        #[arg(long = "signer-name", value_name = "NAME")]
        signer_names: Vec<String>,
        /// Common name of the client certificate.
        #[arg(long, default_value = "tufa-server", value_name = "CN")]
        client_name: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Write a new random key-encryption key (64 hex digits) to a file created with mode 0600.
    GenKek {
        /// The file to create; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print recorded signatures as JSON lines, oldest first; `audit verify` checks the
    /// tamper-evident audit log, `audit checkpoint` prints its latest signed checkpoint.
    Audit {
        /// Verify the log or print its checkpoint instead of listing signatures.
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Only signatures by this key.
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
        /// Only signatures at or after this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        since: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Only signatures before this time (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        until: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Only events after this event ID (to continue a previous listing).
        #[arg(long, value_name = "ID")]
        after_id: Option<i64>,
        /// Print at most this many events (all when omitted).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Re-seal every software key that is sealed with another KEK under the active KEK.
    RotateKek,
}

/// What `tufa-signer audit` does besides listing signatures.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Check the whole audit log offline: every entry against its hash and the chain, and the
    /// entries against every signed checkpoint. Exit status 0 when the log is intact, 1 when
    /// problems were found (each named with its position), 2 when the check could not run.
    Verify {
        /// Pin the checkpoint key: its verifier key (name+id+key) as `audit checkpoint` prints
        /// it. Without it the key is read from the database, with a warning.
        #[arg(long, value_name = "VKEY")]
        checkpoint_key: Option<String>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint (a C2SP signed note) and the checkpoint key's verifier
    /// key.
    Checkpoint,
}

/// PKCS#11 backend settings (`[pkcs11]`). The PIN is read from `pin_file` or the environment
/// variable `pin_env`, never from the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Settings {
    /// Path of the PKCS#11 module (for SoftHSM: /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// Token label to use.
    #[serde(default)]
    pub token_label: Option<String>,
    /// Slot ID to use (when no label is given).
    #[serde(default)]
    pub slot: Option<u64>,
    /// File holding the user PIN.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    #[serde(default)]
    pub pin_env: Option<String>,
    /// Number of sessions (parallel signers).
    #[serde(default = "default_sessions")]
    pub sessions: usize,
}

fn default_sessions() -> usize {
    DEFAULT_PKCS11_SESSIONS
}

/// Software backend settings (`[software]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftwareSettings {
    /// The KEK sealing new keys; optional with a single KEK.
    pub active_kek: Option<String>,
    /// Configured KEKs (more are added from `TUFA_SIGNER_KEK_<NAME>`).
    pub keks: Vec<KekSpec>,
}

/// The chosen key backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSettings {
    /// Keys in software, sealed under KEKs.
    Software(SoftwareSettings),
    /// Keys in a PKCS#11 token.
    Pkcs11(Pkcs11Settings),
}

/// Settings of the audit log (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The configured origin (checkpoint key name), if any.
    pub origin: Option<String>,
    /// Time between checkpoints while the log grows.
    pub checkpoint_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { origin: None, checkpoint_interval: crate::checkpoint::DEFAULT_INTERVAL }
    }
}

/// Reads a duration: whole seconds, or a whole number followed by `s`, `m` or `h`; at least one
/// second and at most a day.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?} is not a duration: expected seconds, or a number with s, m or h")),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a duration: expected seconds, or a number with s, m or h"))?;
    if !(1..=86_400).contains(&seconds) {
        return Err(format!("{text:?} is out of range: between 1s and 24h"));
    }
    Ok(Duration::from_secs(seconds))
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The database: `--database-url`, or the data directory's SQLite file. Parsed by
    /// `tufa_store::DatabaseUrl`, the parser tufa-server uses too; `Debug` hides the password.
    pub database: DatabaseUrl,
    /// Log filter and format.
    pub log: LogSettings,
    /// TLS certificate file, if configured.
    pub tls_cert: Option<PathBuf>,
    /// TLS key file, if configured.
    pub tls_key: Option<PathBuf>,
    /// Client CA file, if configured.
    pub tls_client_ca: Option<PathBuf>,
    /// The key backend.
    pub backend: BackendSettings,
    /// The audit log's origin and checkpoint interval.
    pub audit: AuditSettings,
}

/// The TLS files serving needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA for client certificates.
    pub client_ca: PathBuf,
}

impl Config {
    /// The TLS files, all three required: the signer never serves without mutual TLS.
    pub fn tls_paths(&self) -> Result<TlsPaths, ConfigError> {
        let missing: Vec<&str> = [
            (self.tls_cert.is_none(), TLS_CERT.flag),
            (self.tls_key.is_none(), TLS_KEY.flag),
            (self.tls_client_ca.is_none(), TLS_CLIENT_CA.flag),
        ]
        .into_iter()
        .filter_map(|(absent, flag)| absent.then_some(flag))
        .collect();
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => {
                Ok(TlsPaths { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() })
            }
            _ => Err(ConfigError::Conflict(format!(
                "missing {}: the signer only serves over mutual TLS and refuses to start without a server certificate, \
                 its key and a client CA (flags, TUFA_SIGNER_* variables or [tls] in the config file); \
                 `tufa-signer gen-certs --out DIR` writes a test PKI",
                missing.join(", ")
            ))),
        }
    }
}

const CONFIG: Setting = Setting::new("--config", "TUFA_SIGNER_CONFIG", "");
const LISTEN: Setting = Setting::new("--listen", "TUFA_SIGNER_LISTEN", "listen");
const DATA_DIR: Setting = Setting::new("--data-dir", "TUFA_SIGNER_DATA_DIR", "data_dir");
const DATABASE_URL: Setting = Setting::new("--database-url", "TUFA_SIGNER_DATABASE_URL", "database_url");
const BACKEND: Setting = Setting::new("--backend", "TUFA_SIGNER_BACKEND", "backend.type");
const ACTIVE_KEK: Setting = Setting::new("--active-kek", "TUFA_SIGNER_ACTIVE_KEK", "software.active_kek");
const LOG_LEVEL: Setting = Setting::new("--log-level", "TUFA_SIGNER_LOG", "log_level");
const LOG_FORMAT: Setting = Setting::new("--log-format", "TUFA_SIGNER_LOG_FORMAT", "log_format");
const TLS_CERT: Setting = Setting::new("--tls-cert", "TUFA_SIGNER_TLS_CERT", "tls.cert");
const TLS_KEY: Setting = Setting::new("--tls-key", "TUFA_SIGNER_TLS_KEY", "tls.key");
const TLS_CLIENT_CA: Setting = Setting::new("--tls-client-ca", "TUFA_SIGNER_TLS_CLIENT_CA", "tls.client_ca")
    .with_env_aliases(&["TUFA_SIGNER_CLIENT_CA"]);
const AUDIT_ORIGIN: Setting = Setting::new("--audit-origin", "TUFA_SIGNER_AUDIT_ORIGIN", "audit.origin");
const AUDIT_CHECKPOINT_INTERVAL: Setting =
    Setting::new("--audit-checkpoint-interval", "TUFA_SIGNER_AUDIT_CHECKPOINT_INTERVAL", "audit.checkpoint_interval");

/// Every variable [`load_from`] reads for a flag; the tests compare it with the clap attributes.
#[cfg(test)]
const SETTINGS: [Setting; 13] = [
    CONFIG,
    LISTEN,
    DATA_DIR,
    DATABASE_URL,
    BACKEND,
    ACTIVE_KEK,
    LOG_LEVEL,
    LOG_FORMAT,
    TLS_CERT,
    TLS_KEY,
    TLS_CLIENT_CA,
    AUDIT_ORIGIN,
    AUDIT_CHECKPOINT_INTERVAL,
];

/// The TOML file as written. The TLS files may also be given as flat `tls_cert`, `tls_key` and
/// `tls_client_ca` keys, as in tufa-server's file; `log` is the older name of `log_level`. One
/// setting written both ways is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_level: Option<String>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    tls: Option<FileTls>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    backend: Option<FileBackend>,
    software: Option<FileSoftware>,
    pkcs11: Option<Pkcs11Settings>,
    audit: Option<FileAudit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    origin: Option<String>,
    checkpoint_interval: Option<FileInterval>,
}

/// A checkpoint interval in the file: whole seconds, or text such as "5m".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileInterval {
    Seconds(u64),
    Text(String),
}

impl FileInterval {
    fn text(self) -> String {
        match self {
            FileInterval::Seconds(seconds) => seconds.to_string(),
            FileInterval::Text(text) => text,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSoftware {
    active_kek: Option<String>,
    #[serde(default)]
    kek: Vec<FileKek>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKek {
    name: String,
    file: Option<PathBuf>,
}

/// Parses the command line with clap's own environment reading switched off (variables are read
/// by [`load_from`] with their origin). Help is rendered from the full command so that it lists
/// each flag's variable.
pub fn parse_cli(args: &[OsString]) -> Result<Cli, ConfigError> {
    Ok(tufa_common::layer::parse_flags(args)?)
}

/// Builds the configuration from parsed flags, the environment as seen through `env` (empty
/// variables count as unset) and the config file named by `--config` or `TUFA_SIGNER_CONFIG`.
pub fn load_from(
    common: &CommonArgs,
    serve: &ServeArgs,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Config, ConfigError> {
    let environment = Environment::new(env);
    let path = match &common.config {
        Some(path) => Some(path.clone()),
        None => environment.path(CONFIG)?.map(|path| path.value),
    };
    let file = match &path {
        Some(path) => layer::read_toml(path, MAX_CONFIG_BYTES)?,
        None => FileConfig::default(),
    };
    build_config(common, serve, &environment, file, &FileOrigin::new(path))
}

/// [`load_from`] over the process environment.
pub fn load(common: &CommonArgs, serve: &ServeArgs) -> Result<Config, ConfigError> {
    load_from(common, serve, &|name| std::env::var_os(name))
}

fn build_config(
    common: &CommonArgs,
    serve: &ServeArgs,
    env: &Environment<'_>,
    file: FileConfig,
    origin: &FileOrigin,
) -> Result<Config, ConfigError> {
    let default_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7899));
    let listen = settings::listen(
        first([LISTEN.from_flag(serve.listen.clone()), env.text(LISTEN)?, origin.value(LISTEN, file.listen)]),
        default_listen,
    )?;
    let data_dir = settings::data_dir(
        first([
            DATA_DIR.from_flag(common.data_dir.clone()),
            env.path(DATA_DIR)?,
            origin.path_value(DATA_DIR, file.data_dir),
        ]),
        DEFAULT_DATA_DIR,
    )?;
    let database = match first([
        DATABASE_URL.from_flag(common.database_url.clone()),
        env.text(DATABASE_URL)?,
        origin.value(DATABASE_URL, file.database_url),
    ]) {
        Some(url) => DatabaseUrl::parse(&url.value).map_err(|error| url.invalid(error.to_string()))?,
        None => DatabaseUrl::sqlite_file(&data_dir.join(SQLITE_FILE_NAME)),
    };
    let file_tls = file.tls.unwrap_or_default();
    let file_tls = tufa_common::settings::file_tls_paths(
        origin,
        [file_tls.cert, file_tls.key, file_tls.client_ca],
        [file.tls_cert, file.tls_key, file.tls_client_ca],
    )?;
    let tls_cert =
        first([TLS_CERT.from_flag(serve.tls_cert.clone()), env.path(TLS_CERT)?, file_tls.cert]).map(|cert| cert.value);
    let tls_key =
        first([TLS_KEY.from_flag(serve.tls_key.clone()), env.path(TLS_KEY)?, file_tls.key]).map(|key| key.value);
    let tls_client_ca =
        first([TLS_CLIENT_CA.from_flag(serve.tls_client_ca.clone()), env.path(TLS_CLIENT_CA)?, file_tls.client_ca])
            .map(|ca| ca.value);

    let kind = first([
        BACKEND.from_flag(common.backend.clone()),
        env.text(BACKEND)?,
        origin.value(BACKEND, file.backend.map(|backend| backend.kind)),
    ]);
    let backend = match kind.as_ref().map(|kind| kind.value.as_str()).unwrap_or("software") {
        "software" => {
            let software = file.software.unwrap_or_default();
            let keks = software
                .kek
                .into_iter()
                .map(|kek| KekSpec { name: kek.name, file: kek.file.map(|path| origin.anchor(path)) })
                .collect();
            let active_kek = first([
                ACTIVE_KEK.from_flag(common.active_kek.clone()),
                env.text(ACTIVE_KEK)?,
                origin.value(ACTIVE_KEK, software.active_kek),
            ]);
            BackendSettings::Software(SoftwareSettings { active_kek: active_kek.map(|name| name.value), keks })
        }
        "pkcs11" => {
            let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
                setting: origin.origin(key).describe(),
                reason: reason.to_owned(),
            };
            let Some(mut settings) = file.pkcs11 else {
                return Err(ConfigError::Conflict(
                    "backend pkcs11 needs a [pkcs11] section with at least `module` in the config file".to_owned(),
                ));
            };
            if settings.sessions == 0 {
                return Err(invalid("pkcs11.sessions", "must be at least 1"));
            }
            if settings.token_label.is_none() && settings.slot.is_none() {
                return Err(ConfigError::Conflict("pkcs11 needs token_label or slot".to_owned()));
            }
            if settings.pin_file.is_none() && settings.pin_env.is_none() {
                return Err(ConfigError::Conflict(
                    "pkcs11 needs pin_file or pin_env (the PIN is never a flag)".to_owned(),
                ));
            }
            settings.module = origin.anchor(settings.module);
            settings.pin_file = settings.pin_file.map(|path| origin.anchor(path));
            BackendSettings::Pkcs11(settings)
        }
        other => {
            let reason = format!("unknown backend type {other:?}: expected software or pkcs11");
            return Err(match &kind {
                Some(kind) => kind.invalid(reason),
                None => ConfigError::Conflict(reason),
            });
        }
    };
    let log = settings::log(
        first([
            LOG_LEVEL.from_flag(common.log_level.clone()),
            env.text(LOG_LEVEL)?,
            origin.aliased(("log_level", file.log_level), ("log", file.log))?,
        ]),
        first([
            LOG_FORMAT.from_flag(common.log_format),
            env.parsed(LOG_FORMAT, LogFormat::parse)?,
            origin.value(LOG_FORMAT, file.log_format),
        ]),
        DEFAULT_LOG,
    )?;
    let file_audit = file.audit.unwrap_or_default();
    let audit_origin = first([
        AUDIT_ORIGIN.from_flag(serve.audit_origin.clone()),
        env.text(AUDIT_ORIGIN)?,
        origin.value(AUDIT_ORIGIN, file_audit.origin),
    ])
    .map(|name| {
        crate::checkpoint::check_origin(&name.value).map_err(|error| name.invalid(error.to_string()))?;
        Ok::<_, ConfigError>(name.value)
    })
    .transpose()?;
    let checkpoint_interval = first([
        AUDIT_CHECKPOINT_INTERVAL.from_flag(serve.audit_checkpoint_interval.clone()),
        env.text(AUDIT_CHECKPOINT_INTERVAL)?,
        origin.value(AUDIT_CHECKPOINT_INTERVAL, file_audit.checkpoint_interval.map(FileInterval::text)),
    ])
    .map(|interval| interval.parse(|text| parse_interval(text)))
    .transpose()?
    .map_or(crate::checkpoint::DEFAULT_INTERVAL, |interval| interval.value);
    let audit = AuditSettings { origin: audit_origin, checkpoint_interval };
    Ok(Config { listen, data_dir, database, log, tls_cert, tls_key, tls_client_ca, backend, audit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;
    use std::collections::HashMap;

    fn parse(arguments: &[&str]) -> Cli {
        let args: Vec<OsString> =
            std::iter::once("tufa-signer").chain(arguments.iter().copied()).map(OsString::from).collect();
        parse_cli(&args).unwrap()
    }

    /// Builds a configuration from flags, environment pairs and the text of a file that lives in /etc/tufa.
    fn config_env(arguments: &[&str], env: &[(&str, &str)], file: &str) -> Result<Config, ConfigError> {
        let cli = parse(arguments);
        let env: HashMap<String, OsString> =
            env.iter().map(|(name, value)| ((*name).to_owned(), OsString::from(value))).collect();
        let lookup = move |name: &str| env.get(name).cloned();
        let file = layer::parse_toml(file)
            .map_err(|reason| ConfigError::ParseFile { path: PathBuf::from("/etc/tufa/signer.toml"), reason })?;
        let origin = FileOrigin::new(Some(PathBuf::from("/etc/tufa/signer.toml")));
        build_config(&cli.common, &cli.serve, &Environment::new(&lookup), file, &origin)
    }

    fn config(arguments: &[&str], file: &str) -> Result<Config, ConfigError> {
        config_env(arguments, &[], file)
    }

    #[test]
    fn defaults() {
        let config = config(&[], "").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.database, DatabaseUrl::sqlite_file(&PathBuf::from(DEFAULT_DATA_DIR).join(SQLITE_FILE_NAME)));
        assert_eq!(config.backend, BackendSettings::Software(SoftwareSettings::default()));
        assert_eq!(config.log, LogSettings { filter: DEFAULT_LOG.to_owned(), format: LogFormat::Text });
        let error = config.tls_paths().unwrap_err().to_string();
        assert!(
            error.starts_with("missing --tls-cert, --tls-key, --tls-client-ca: the signer only serves over mutual TLS"),
            "{error}"
        );
    }

    #[test]
    fn file_values_resolve_relative_to_the_file_and_flags_win() {
        let file = r#"
            listen = "0.0.0.0:7899"
            data_dir = "data"
            [tls]
            cert = "signer.crt"
            key = "/abs/signer.key"
            client_ca = "ca.crt"
            [software]
            active_kek = "k2"
            [[software.kek]]
            name = "k2"
            file = "kek-k2"
            [[software.kek]]
            name = "k1"
        "#;
        let from_file = config(&[], file).unwrap();
        assert_eq!(from_file.listen.to_string(), "0.0.0.0:7899");
        assert_eq!(from_file.data_dir, PathBuf::from("/etc/tufa/data"));
        let tls = from_file.tls_paths().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/tufa/signer.crt"));
        assert_eq!(tls.key, PathBuf::from("/abs/signer.key"));
        assert_eq!(tls.client_ca, PathBuf::from("/etc/tufa/ca.crt"));
        let BackendSettings::Software(software) = &from_file.backend else { panic!("not software") };
        assert_eq!(software.active_kek.as_deref(), Some("k2"));
        assert_eq!(software.keks[0], KekSpec { name: "k2".into(), file: Some(PathBuf::from("/etc/tufa/kek-k2")) });
        assert_eq!(software.keks[1], KekSpec { name: "k1".into(), file: None });

        let flags = config(
            &["--listen", "127.0.0.1:1234", "--data-dir", "/d", "--tls-cert", "c.pem", "--active-kek", "k1"],
            file,
        )
        .unwrap();
        assert_eq!(flags.listen.to_string(), "127.0.0.1:1234");
        assert_eq!(flags.data_dir, PathBuf::from("/d"));
        assert_eq!(flags.tls_paths().unwrap().cert, PathBuf::from("c.pem"));
        let BackendSettings::Software(software) = &flags.backend else { panic!("not software") };
        assert_eq!(software.active_kek.as_deref(), Some("k1"));
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = "listen = \"127.0.0.1:1001\"\nlog_level = \"warn\"\n";
        let from_env =
            config_env(&[], &[("TUFA_SIGNER_LISTEN", "127.0.0.1:1002"), ("TUFA_SIGNER_LOG_FORMAT", "json")], file)
                .unwrap();
        assert_eq!(from_env.listen.port(), 1002);
        assert_eq!(from_env.log, LogSettings { filter: "warn".into(), format: LogFormat::Json });
        let from_flag = config_env(
            &["--listen", "127.0.0.1:1003", "--log-format", "text"],
            &[("TUFA_SIGNER_LISTEN", "127.0.0.1:1002")],
            file,
        )
        .unwrap();
        assert_eq!((from_flag.listen.port(), from_flag.log.format), (1003, LogFormat::Text));
        assert_eq!(config(&[], file).unwrap().listen.port(), 1001);
    }

    #[test]
    fn old_names_still_work() {
        let config = config_env(&["--client-ca", "/flag-ca", "--log", "debug"], &[], "").unwrap();
        assert_eq!((config.tls_client_ca, config.log.filter), (Some(PathBuf::from("/flag-ca")), "debug".to_owned()));
        let config = config_env(&[], &[("TUFA_SIGNER_CLIENT_CA", "/env-ca")], "").unwrap();
        assert_eq!(config.tls_client_ca, Some(PathBuf::from("/env-ca")));
        let config = config_env(&["--tls-client-ca", "/new"], &[], "log = \"warn\"\n").unwrap();
        assert_eq!((config.tls_client_ca, config.log.filter), (Some(PathBuf::from("/new")), "warn".to_owned()));
        let flat = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"\n";
        let tls = super::tests::config(&[], flat).unwrap().tls_paths().unwrap();
        assert_eq!(
            tls,
            TlsPaths {
                cert: PathBuf::from("/etc/tufa/c.pem"),
                key: PathBuf::from("/etc/tufa/k.pem"),
                client_ca: PathBuf::from("/etc/tufa/ca.pem")
            }
        );
    }

    #[test]
    fn a_setting_given_under_both_names_is_refused() {
        let error = config(&[], "log = \"info\"\nlog_level = \"info\"\n").unwrap_err().to_string();
        assert_eq!(
            error,
            "config file /etc/tufa/signer.toml: both `log_level` and `log` are set; `log` is an older name for \
             `log_level`, keep only `log_level`"
        );
        let error = config(&[], "tls_client_ca = \"a\"\n[tls]\nclient_ca = \"b\"\n").unwrap_err().to_string();
        assert!(
            error.starts_with("config file /etc/tufa/signer.toml: both `tls.client_ca` and `tls_client_ca` are set"),
            "{error}"
        );
        let error = config_env(&[], &[("TUFA_SIGNER_CLIENT_CA", "/a"), ("TUFA_SIGNER_TLS_CLIENT_CA", "/b")], "")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("both TUFA_SIGNER_TLS_CLIENT_CA and TUFA_SIGNER_CLIENT_CA are set"), "{error}");
        let error = Cli::try_parse_from(["tufa-signer", "--client-ca", "a", "--tls-client-ca", "b"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn bad_values_name_their_origin() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case<'_>; 6] = [
            (&["--listen", "nope"], &[], "", "invalid --listen: \"nope\" is not ADDR:PORT"),
            (&[], &[("TUFA_SIGNER_LISTEN", "nope")], "", "invalid TUFA_SIGNER_LISTEN: \"nope\" is not ADDR:PORT"),
            (&[], &[], "listen = \"nope\"", "invalid key `listen` in config file /etc/tufa/signer.toml: \"nope\""),
            (&["--log-level", "verbose"], &[], "", "invalid --log-level: \"verbose\" is not a log level"),
            (&[], &[("TUFA_SIGNER_LOG", "loud")], "", "invalid TUFA_SIGNER_LOG: \"loud\" is not a log level"),
            (&[], &[], "log = \"verbose\"", "invalid key `log` in config file /etc/tufa/signer.toml: \"verbose\""),
        ];
        for (args, env, file, expected) in cases {
            let error = config_env(args, env, file).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{args:?} {env:?} {file:?}: {error}");
        }
        let error = config_env(&[], &[("TUFA_SIGNER_LOG_FORMAT", "xml")], "").unwrap_err().to_string();
        assert_eq!(error, "invalid TUFA_SIGNER_LOG_FORMAT: unknown format \"xml\"; use text or json");
        let error = config_env(&[], &[("TUFA_SIGNER_BACKEND", "hsm")], "").unwrap_err().to_string();
        assert_eq!(error, "invalid TUFA_SIGNER_BACKEND: unknown backend type \"hsm\": expected software or pkcs11");
    }

    #[test]
    fn audit_settings_from_flag_env_and_file() {
        let defaults = config(&[], "").unwrap().audit;
        assert_eq!(defaults, AuditSettings { origin: None, checkpoint_interval: Duration::from_secs(60) });
        let file = "[audit]\norigin = \"file.example/audit\"\ncheckpoint_interval = 30\n";
        assert_eq!(
            config(&[], file).unwrap().audit,
            AuditSettings { origin: Some("file.example/audit".into()), checkpoint_interval: Duration::from_secs(30) }
        );
        let text_interval = "[audit]\ncheckpoint_interval = \"2m\"\n";
        assert_eq!(config(&[], text_interval).unwrap().audit.checkpoint_interval, Duration::from_secs(120));
        let env = [("TUFA_SIGNER_AUDIT_ORIGIN", "env.example/audit"), ("TUFA_SIGNER_AUDIT_CHECKPOINT_INTERVAL", "1h")];
        assert_eq!(
            config_env(&[], &env, file).unwrap().audit,
            AuditSettings { origin: Some("env.example/audit".into()), checkpoint_interval: Duration::from_secs(3600) }
        );
        let flags = ["--audit-origin", "flag.example/audit", "--audit-checkpoint-interval", "5"];
        assert_eq!(
            config_env(&flags, &env, file).unwrap().audit,
            AuditSettings { origin: Some("flag.example/audit".into()), checkpoint_interval: Duration::from_secs(5) }
        );
        let error = config(&["--audit-origin", "has space"], "").unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid --audit-origin: checkpoint key name \"has space\" is not valid (non-empty, no spaces, no '+')"
        );
        let error = config_env(&[], &[("TUFA_SIGNER_AUDIT_CHECKPOINT_INTERVAL", "0")], "").unwrap_err().to_string();
        assert_eq!(error, "invalid TUFA_SIGNER_AUDIT_CHECKPOINT_INTERVAL: \"0\" is out of range: between 1s and 24h");
        let error = config(&[], "[audit]\ncheckpoint_interval = \"soon\"\n").unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid key `audit.checkpoint_interval` in config file /etc/tufa/signer.toml: \"soon\" is not a duration: \
             expected seconds, or a number with s, m or h"
        );
    }

    #[test]
    fn intervals_parse_with_units_and_bounds() {
        assert_eq!(parse_interval("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_interval("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_interval("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("25h"), Err("\"25h\" is out of range: between 1s and 24h".to_owned()));
        for bad in ["", "m", "1.5m", "-3", "10 d", "99999999999999999999"] {
            assert!(parse_interval(bad).unwrap_err().contains("is not a duration"), "{bad:?}");
        }
    }

    #[test]
    fn audit_subcommands_parse() {
        let cli =
            parse(&["audit", "verify", "--checkpoint-key", "k+1+AA==", "--json", "--database-url", "sqlite::memory:"]);
        let Some(Command::Audit { action: Some(AuditAction::Verify { checkpoint_key, json }), .. }) = cli.command
        else {
            panic!("not audit verify")
        };
        assert_eq!((checkpoint_key.as_deref(), json), (Some("k+1+AA=="), true));
        assert_eq!(cli.common.database_url.as_deref(), Some("sqlite::memory:"));
        let cli = parse(&["audit", "checkpoint", "--data-dir", "/x"]);
        assert!(matches!(cli.command, Some(Command::Audit { action: Some(AuditAction::Checkpoint), .. })));
        let cli = parse(&["audit", "--limit", "3"]);
        assert!(matches!(cli.command, Some(Command::Audit { action: None, limit: Some(3), .. })));
    }

    #[test]
    fn pkcs11_section() {
        let file = r#"
            [backend]
            type = "pkcs11"
            [pkcs11]
            module = "/usr/lib/softhsm/libsofthsm2.so"
            token_label = "tufa"
            pin_env = "PIN"
        "#;
        let config = config(&[], file).unwrap();
        assert_eq!(
            config.backend,
            BackendSettings::Pkcs11(Pkcs11Settings {
                module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
                token_label: Some("tufa".into()),
                slot: None,
                pin_file: None,
                pin_env: Some("PIN".into()),
                sessions: DEFAULT_PKCS11_SESSIONS,
            })
        );
        assert_eq!(
            super::tests::config(&[], "[backend]\ntype = \"pkcs11\"\n").unwrap_err().to_string(),
            "backend pkcs11 needs a [pkcs11] section with at least `module` in the config file"
        );
        let no_pin = "[backend]\ntype = \"pkcs11\"\n[pkcs11]\nmodule = \"m.so\"\nslot = 1\n";
        assert_eq!(
            super::tests::config(&[], no_pin).unwrap_err().to_string(),
            "pkcs11 needs pin_file or pin_env (the PIN is never a flag)"
        );
    }

    #[test]
    fn example_config_is_valid() {
        let config = config(&[], include_str!("../tufa-signer.example.toml")).unwrap();
        assert_eq!(config.tls_paths().unwrap().client_ca, PathBuf::from("/etc/tufa/pki/ca.crt"));
        assert!(matches!(config.backend, BackendSettings::Software(_)));
        assert_eq!(config.log, LogSettings { filter: "info".into(), format: LogFormat::Text });
    }

    #[test]
    fn bad_files_are_refused() {
        let error = config(&[], "unknown_key = 1").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "invalid config file /etc/tufa/signer.toml: line 1, column 1: unknown field `unknown_key`"
            ),
            "{error}"
        );
        let error = config(&[], "[software]\nkek = [{ name = \"a\", secret = \"00\" }]").unwrap_err().to_string();
        assert!(error.contains("unknown field `secret`"), "{error}");
        let error = config(&[], "[backend]\ntype = \"hsm\"").unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid key `backend.type` in config file /etc/tufa/signer.toml: unknown backend type \"hsm\": expected \
             software or pkcs11"
        );
        let error = config(&[], "database_url = \" \"").unwrap_err().to_string();
        assert_eq!(
            error,
            format!("invalid key `database_url` in config file /etc/tufa/signer.toml: {}", tufa_store::UrlError::Empty)
        );
    }

    #[test]
    fn database_urls_use_the_store_parser_and_never_show_the_password() {
        let config = config(&["--database-url", "postgres://u:hunter2@h/d"], "").unwrap();
        assert_eq!(config.database.backend(), tufa_store::Backend::Postgres);
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("postgres://u:***@h/d"), "{debug}");
        let config = config_env(&[], &[("TUFA_SIGNER_DATABASE_URL", "sqlite::memory:")], "").unwrap();
        assert_eq!(config.database.sqlite_location(), Some(&tufa_store::SqliteLocation::Memory));
        let error = config_env(&[], &[("TUFA_SIGNER_DATABASE_URL", "mysql://u:hunter2@db/x")], "").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("invalid TUFA_SIGNER_DATABASE_URL: {}", DatabaseUrl::parse("mysql://u:hunter2@db/x").unwrap_err())
        );
        assert!(!error.to_string().contains("hunter2"));
    }

    /// Guards against a variable documented in `--help` that [`load_from`] does not read.
    #[test]
    fn every_documented_variable_is_read() {
        let command = Cli::command();
        let mut documented: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        documented.sort();
        let mut read: Vec<String> = SETTINGS.iter().map(|setting| setting.env.to_owned()).collect();
        read.sort();
        assert_eq!(documented, read);
        let help = command.clone().render_long_help().to_string();
        for setting in SETTINGS {
            assert!(help.contains(setting.flag), "help lacks {}", setting.flag);
            assert!(help.contains(setting.env), "help lacks {}", setting.env);
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for flag in ["--help", "--version"] {
            let error = parse_cli(&[OsString::from("tufa-signer"), OsString::from(flag)]).unwrap_err();
            let ConfigError::Cli(error) = error else { panic!("{flag} should be a clap error") };
            assert_eq!(error.exit_code(), 0, "{flag}");
        }
        let error = parse_cli(&[OsString::from("tufa-signer"), OsString::from("--nope")]).unwrap_err();
        let ConfigError::Cli(error) = error else { panic!("a usage error should be a clap error") };
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn subcommands_parse() {
        let cli =
            parse(&["audit", "--key-id", "ab", "--since", "2026-01-02T03:04:05Z", "--limit", "5", "--data-dir", "/x"]);
        assert!(matches!(cli.command, Some(Command::Audit { limit: Some(5), .. })));
        assert_eq!(cli.common.data_dir, Some(PathBuf::from("/x")));
        let cli =
            parse(&["gen-certs", "--out", "pki", "--signer-name", "signer.internal", "--signer-name", "10.0.0.5"]);
        let Some(Command::GenCerts { signer_names, .. }) = cli.command else { panic!("not gen-certs") };
        assert_eq!(signer_names, ["signer.internal", "10.0.0.5"]);
        let error = Cli::try_parse_from(["tufa-signer", "--kek", "00"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    }
}
