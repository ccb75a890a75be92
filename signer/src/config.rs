//! The tufa-signer command line and configuration: flags (each also a `TUFA_SIGNER_*` environment
//! variable), an optional TOML file (`--config`), and the typed, validated settings built from
//! them. Precedence: flag, then environment, then file, then default. Relative paths in the file
//! are resolved against the file's directory. Key-encryption keys and PINs are never flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

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
grpc.health.v1.Health) over mutual TLS: clients must present a certificate issued by --client-ca. Every signature is
recorded (key ID, client certificate subject, SHA-256 of the payload, time); `tufa-signer audit` prints the trail.

Without a subcommand, the signer serves. Getting started:
  tufa-signer gen-certs --out pki                 # CA, signer (server) and client certificates
  tufa-signer gen-kek --out kek-1                  # a key-encryption key for the software backend
  TUFA_SIGNER_KEK_K1=$(cat kek-1) tufa-signer --tls-cert pki/signer.crt --tls-key pki/signer.key --client-ca pki/ca.crt";

const CONFIG_HELP: &str = "\
CONFIGURATION FILE (--config FILE, TOML; every key optional; flags and environment variables win):
  listen = \"127.0.0.1:7899\"
  data_dir = \"/var/lib/tufa-signer\"           # holds tufa-signer.db unless database_url is set
  database_url = \"postgres://signer@db/signer\" # or sqlite:/path/file.db
  log = \"info\"                                 # tracing filter, e.g. \"info,tufa_signer=debug\"
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

KEY-ENCRYPTION KEYS (software backend): 32 random bytes as 64 hex digits, from a [[software.kek]] file or from
TUFA_SIGNER_KEK_<NAME> (every such variable adds a KEK named <name> in lower case). Never from the command line.
With a single KEK it is the active one. Rotate: add a new KEK, make it active, restart, run `tufa-signer rotate-kek`,
then retire the old one.";

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

/// Flags shared by all subcommands.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// TOML configuration file (see the end of --help).
    #[arg(long, env = "TUFA_SIGNER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory; holds the SQLite database tufa-signer.db unless --database-url is given
    /// [default: ./tufa-signer-data].
    #[arg(long, env = "TUFA_SIGNER_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: postgres://user@host/db or sqlite:/path/file.db [default: the data directory's SQLite file].
    #[arg(long, env = "TUFA_SIGNER_DATABASE_URL", global = true, hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Key backend: software (keys sealed in the database) or pkcs11 (an HSM) [default: software].
    #[arg(long, env = "TUFA_SIGNER_BACKEND", global = true, value_parser = ["software", "pkcs11"])]
    pub backend: Option<String>,
    /// Name of the key-encryption key that seals new software keys (the KEKs themselves come from
    /// files or TUFA_SIGNER_KEK_<NAME>).
    #[arg(long, env = "TUFA_SIGNER_ACTIVE_KEK", global = true, value_name = "NAME")]
    pub active_kek: Option<String>,
    /// Log filter (tracing syntax), e.g. info or info,tufa_signer=debug [default: info,cryptoki::mechanism=off].
    #[arg(long, env = "TUFA_SIGNER_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

/// Flags of the gRPC listener.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7899].
    #[arg(long, env = "TUFA_SIGNER_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// The signer's TLS certificate (PEM chain, leaf first). Required.
    #[arg(long, env = "TUFA_SIGNER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The signer's TLS private key (PEM). Required.
    #[arg(long, env = "TUFA_SIGNER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that client certificates must chain to. Required: clients
    /// without such a certificate are refused.
    #[arg(long, env = "TUFA_SIGNER_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
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
    /// Print recorded signatures as JSON lines, oldest first.
    Audit {
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

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {reason}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config file is not valid TOML for this program.
    #[error("invalid config file {path}: {reason}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
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

/// Where the database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A database URL (`postgres://…`, `sqlite:…`).
    Url(String),
    /// The default SQLite file.
    SqliteFile(PathBuf),
}

impl Database {
    /// A description for logs: the URL without its password, or the file path.
    pub fn describe(&self) -> String {
        match self {
            Database::Url(url) => redact_url(url),
            Database::SqliteFile(path) => format!("sqlite file {}", path.display()),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.describe())
    }
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
    .chars()
    .filter(|character| !character.is_control())
    .collect::<String>()
    .split('?')
    .next()
    .unwrap_or_default()
    .to_owned()
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database location.
    pub database: Database,
    /// Log filter.
    pub log: String,
    /// TLS certificate file, if configured.
    pub tls_cert: Option<PathBuf>,
    /// TLS key file, if configured.
    pub tls_key: Option<PathBuf>,
    /// Client CA file, if configured.
    pub client_ca: Option<PathBuf>,
    /// The key backend.
    pub backend: BackendSettings,
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
            (self.tls_cert.is_none(), "--tls-cert"),
            (self.tls_key.is_none(), "--tls-key"),
            (self.client_ca.is_none(), "--client-ca"),
        ]
        .into_iter()
        .filter_map(|(absent, flag)| absent.then_some(flag))
        .collect();
        match (&self.tls_cert, &self.tls_key, &self.client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => {
                Ok(TlsPaths { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() })
            }
            _ => Err(ConfigError::Invalid(format!(
                "missing {}: the signer only serves over mutual TLS and refuses to start without a server certificate, \
                 its key and a client CA (flags, TUFA_SIGNER_* variables or [tls] in the config file); \
                 `tufa-signer gen-certs --out DIR` writes a test PKI",
                missing.join(", ")
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log: Option<String>,
    tls: Option<FileTls>,
    backend: Option<FileBackend>,
    software: Option<FileSoftware>,
    pkcs11: Option<Pkcs11Settings>,
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

fn resolve(base: Option<&Path>, path: PathBuf) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_error = |reason: String| ConfigError::Read { path: path.to_owned(), reason };
    let metadata = std::fs::metadata(path).map_err(|error| read_error(error.to_string()))?;
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(read_error(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|error| read_error(error.to_string()))?;
    parse_file_config(&text).map_err(|reason| ConfigError::Parse { path: path.to_owned(), reason })
}

fn parse_file_config(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|error| error.to_string())
}

/// Builds the configuration from parsed flags (which already include the environment) and the
/// config file they name.
pub fn resolve_config(common: &CommonArgs, serve: &ServeArgs) -> Result<Config, ConfigError> {
    let (file, base) = match &common.config {
        Some(path) => {
            let file = read_file_config(path)?;
            let base = path.parent().map(|parent| if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
            (file, base.map(Path::to_path_buf))
        }
        None => (FileConfig::default(), None),
    };
    build_config(common, serve, file, base.as_deref())
}

fn build_config(
    common: &CommonArgs,
    serve: &ServeArgs,
    file: FileConfig,
    base: Option<&Path>,
) -> Result<Config, ConfigError> {
    let listen = match (serve.listen, &file.listen) {
        (Some(listen), _) => listen,
        (None, Some(text)) => text
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("invalid listen address {text:?}: expected ADDR:PORT")))?,
        (None, None) => {
            DEFAULT_LISTEN.parse().map_err(|_| ConfigError::Invalid("invalid default listen address".to_owned()))?
        }
    };
    let data_dir = common
        .data_dir
        .clone()
        .or_else(|| file.data_dir.map(|path| resolve(base, path)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let database = match common.database_url.clone().or(file.database_url) {
        Some(url) if url.trim().is_empty() => return Err(ConfigError::Invalid("the database URL is empty".to_owned())),
        Some(url) => Database::Url(url),
        None => Database::SqliteFile(data_dir.join(SQLITE_FILE_NAME)),
    };
    let file_tls = file.tls.unwrap_or_default();
    let pick = |flag: &Option<PathBuf>, from_file: Option<PathBuf>| {
        flag.clone().or_else(|| from_file.map(|path| resolve(base, path)))
    };
    let tls_cert = pick(&serve.tls_cert, file_tls.cert);
    let tls_key = pick(&serve.tls_key, file_tls.key);
    let client_ca = pick(&serve.client_ca, file_tls.client_ca);

    let kind =
        common.backend.clone().or(file.backend.map(|backend| backend.kind)).unwrap_or_else(|| "software".to_owned());
    let backend = match kind.as_str() {
        "software" => {
            let software = file.software.unwrap_or_default();
            let keks = software
                .kek
                .into_iter()
                .map(|kek| KekSpec { name: kek.name, file: kek.file.map(|path| resolve(base, path)) })
                .collect();
            BackendSettings::Software(SoftwareSettings {
                active_kek: common.active_kek.clone().or(software.active_kek),
                keks,
            })
        }
        "pkcs11" => {
            let mut settings = file.pkcs11.ok_or_else(|| {
                ConfigError::Invalid(
                    "backend pkcs11 needs a [pkcs11] section with at least `module` in the config file".to_owned(),
                )
            })?;
            if settings.sessions == 0 {
                return Err(ConfigError::Invalid("pkcs11.sessions must be at least 1".to_owned()));
            }
            if settings.token_label.is_none() && settings.slot.is_none() {
                return Err(ConfigError::Invalid("pkcs11 needs token_label or slot".to_owned()));
            }
            if settings.pin_file.is_none() && settings.pin_env.is_none() {
                return Err(ConfigError::Invalid(
                    "pkcs11 needs pin_file or pin_env (the PIN is never a flag)".to_owned(),
                ));
            }
            settings.module = resolve(base, settings.module);
            settings.pin_file = settings.pin_file.map(|path| resolve(base, path));
            BackendSettings::Pkcs11(settings)
        }
        other => {
            return Err(ConfigError::Invalid(format!("unknown backend type {other:?}: expected software or pkcs11")));
        }
    };
    let log = common.log.clone().or(file.log).unwrap_or_else(|| DEFAULT_LOG.to_owned());
    Ok(Config { listen, data_dir, database, log, tls_cert, tls_key, client_ca, backend })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tufa-signer").chain(arguments.iter().copied())).unwrap()
    }

    fn config(arguments: &[&str], file: &str) -> Result<Config, ConfigError> {
        let cli = parse(arguments);
        let file = parse_file_config(file).map_err(ConfigError::Invalid)?;
        build_config(&cli.common, &cli.serve, file, Some(Path::new("/etc/tufa")))
    }

    #[test]
    fn defaults() {
        let config = config(&[], "").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.database, Database::SqliteFile(PathBuf::from(DEFAULT_DATA_DIR).join(SQLITE_FILE_NAME)));
        assert_eq!(config.backend, BackendSettings::Software(SoftwareSettings::default()));
        let error = config.tls_paths().unwrap_err().to_string();
        assert!(error.contains("--tls-cert, --tls-key, --client-ca"), "{error}");
        assert!(error.contains("mutual TLS"), "{error}");
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
        assert!(super::tests::config(&[], "[backend]\ntype = \"pkcs11\"\n").is_err());
        let no_pin = "[backend]\ntype = \"pkcs11\"\n[pkcs11]\nmodule = \"m.so\"\nslot = 1\n";
        assert!(super::tests::config(&[], no_pin).unwrap_err().to_string().contains("pin_file or pin_env"));
    }

    #[test]
    fn example_config_is_valid() {
        let file = parse_file_config(include_str!("../tufa-signer.example.toml")).unwrap();
        let config =
            build_config(&CommonArgs::default(), &ServeArgs::default(), file, Some(Path::new("/etc/tufa"))).unwrap();
        assert_eq!(config.tls_paths().unwrap().client_ca, PathBuf::from("/etc/tufa/pki/ca.crt"));
        assert!(matches!(config.backend, BackendSettings::Software(_)));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(parse_file_config("unknown_key = 1").is_err());
        assert!(parse_file_config("[software]\nkek = [{ name = \"a\", secret = \"00\" }]").is_err());
        assert!(config(&[], "listen = \"nope\"").is_err());
        assert!(config(&[], "[backend]\ntype = \"hsm\"").is_err());
        assert!(config(&[], "database_url = \" \"").is_err());
    }

    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(redact_url("postgres://user:secret@db:5432/signer"), "postgres://user:***@db:5432/signer");
        assert_eq!(redact_url("postgres://user@db/signer"), "postgres://user@db/signer");
        assert_eq!(redact_url("postgres://u:p@db/s?password=x"), "postgres://u:***@db/s");
        let config = config(&["--database-url", "postgres://u:hunter2@h/d"], "").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
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
        assert!(Cli::try_parse_from(["tufa-signer", "--kek", "00"]).is_err());
    }
}
