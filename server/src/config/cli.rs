//! The tufa-server command line (clap): every flag, its variable as documented in `--help`, and
//! parsing with clap's own environment reading switched off (variables are read by
//! [`super::resolve`] through a lookup function, so tests never touch the process environment).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use tufa_common::logging::LogFormat;

use super::KeyAlgorithm;
use super::auth::AuthFlags;
use crate::admin::AdminCommand;

const ENV_HELP: &str = "\
Environment:
  Every flag above can also be set through the TUFA_* variable shown next to it; a flag wins over
  its variable, and a variable wins over the config file. TUFA_TLS_NAMES takes a comma-separated list.
  TUFA_KEK  the key-encryption key itself, 64 hex characters; there is deliberately no flag for it.
            When set, the --kek-file is neither read nor created.

Config file (TOML):
  The flags' keys are listen, data_dir, database_url, kek_file, key_algorithm, log_level, log_format,
  signer_url, signer_ca, signer_cert, signer_key, public_url, a [tls] table with cert, key, client_ca
  and names (the older flat keys tls_cert, tls_key, tls_client_ca and tls_names still work; one
  setting written both ways is an error), and an [auth] table: type, insecure_no_auth,
  [auth.token] realm / service / issuer / rootcertbundle, [auth.builtin] service / issuer /
  token_ttl and [[auth.builtin.registries]] service / host. Keys without a flag: gun_prefixes, [cache] current_max_age /
  consistent_max_age, [limits] max_body_bytes / max_delegation_depth / max_parts / max_signatures /
  max_root_keys / max_role_keyids / max_delegations / max_delegation_keys / max_delegation_paths /
  max_targets / max_upload_targets, the [connections] and [uploads] keys, [timestamp]
  refresh_interval_secs / refresh_before_secs, [audit] checkpoint_interval_secs. See tufa-server.example.toml.

Administration (users, API tokens, roles, tombstones; works while the server runs):
  tufa-server admin --help

Exit status: 0 after a clean shutdown, 2 for a bad configuration or command line, 1 for any other
start-up or runtime failure.";

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
pub(super) struct Cli {
    /// TOML configuration file. Flags and TUFA_* variables override the settings in it.
    #[arg(long, value_name = "FILE", env = "TUFA_CONFIG", hide_env_values = true, global = true)]
    pub(super) config: Option<PathBuf>,

    /// Address and port to listen on, e.g. 0.0.0.0:4443 [default: 127.0.0.1:4443].
    #[arg(long, value_name = "ADDR:PORT", env = "TUFA_LISTEN", hide_env_values = true, global = true)]
    pub(super) listen: Option<String>,

    /// Directory for the SQLite database, the generated TLS files and the key-encryption key
    /// [default: ./tufa-data].
    #[arg(long, value_name = "DIR", env = "TUFA_DATA_DIR", hide_env_values = true, global = true)]
    pub(super) data_dir: Option<PathBuf>,

    /// Database URL: sqlite:PATH (also sqlite:///ABS/PATH, sqlite://REL/PATH), sqlite::memory:,
    /// or postgres://USER:PASSWORD@HOST/DB (also postgresql://) [default: <data-dir>/tufa.db].
    /// The password is never logged. The same forms as tufa-signer's --database-url.
    #[arg(long, value_name = "URL", env = "TUFA_DATABASE_URL", hide_env_values = true, global = true)]
    pub(super) database_url: Option<String>,

    /// PEM certificate chain to serve, leaf first. Needs --tls-key. Without both, a local CA and a
    /// server certificate are generated in <data-dir>/tls.
    #[arg(long, value_name = "FILE", env = "TUFA_TLS_CERT", hide_env_values = true, global = true)]
    pub(super) tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", env = "TUFA_TLS_KEY", hide_env_values = true, global = true)]
    pub(super) tls_key: Option<PathBuf>,

    /// PEM bundle of CA certificates. When set, every client must present a certificate issued by
    /// one of them (mutual TLS). The same flag as tufa-signer's.
    #[arg(long, value_name = "FILE", env = "TUFA_TLS_CLIENT_CA", hide_env_values = true, global = true)]
    pub(super) tls_client_ca: Option<PathBuf>,

    /// Extra DNS name or IP address for the generated server certificate (localhost, 127.0.0.1 and
    /// ::1 are always included). Repeatable; only valid without --tls-cert/--tls-key.
    #[arg(
        long = "tls-name",
        value_name = "NAME",
        env = "TUFA_TLS_NAMES",
        hide_env_values = true,
        global = true,
        value_delimiter = ','
    )]
    pub(super) tls_names: Vec<String>,

    /// File holding the key-encryption key that seals the signing keys at rest: 32 random bytes
    /// written as 64 hex characters. Created with mode 0600 if absent; refused if readable by
    /// group or others [default: <data-dir>/kek.key].
    #[arg(long, value_name = "FILE", env = "TUFA_KEK_FILE", hide_env_values = true, global = true)]
    pub(super) kek_file: Option<PathBuf>,

    /// Algorithm of the timestamp and snapshot keys the server creates [default: ecdsa].
    #[arg(long, value_name = "ALG", env = "TUFA_KEY_ALGORITHM", hide_env_values = true, global = true)]
    pub(super) key_algorithm: Option<KeyAlgorithm>,

    /// Log filter: a level (trace, debug, info, warn, error, off) or directives such as
    /// "info,tufa_server=debug"; anything else is refused [default: info].
    #[arg(long, value_name = "FILTER", env = "TUFA_LOG", hide_env_values = true, global = true)]
    pub(super) log_level: Option<String>,

    /// Log output format [default: text].
    #[arg(long, value_name = "FORMAT", env = "TUFA_LOG_FORMAT", hide_env_values = true, global = true)]
    pub(super) log_format: Option<LogFormat>,

    /// URL of a separate signing service (tufa-signer or notary-signer), e.g.
    /// https://signer.internal:7899. With it the server holds no private key and signs every
    /// timestamp and snapshot through that service over mutual TLS; without it the in-process
    /// signer is used.
    #[arg(long, value_name = "URL", env = "TUFA_SIGNER_URL", hide_env_values = true, global = true)]
    pub(super) signer_url: Option<String>,

    /// PEM bundle of the CA that issued the signer's certificate (required with --signer-url).
    #[arg(long, value_name = "FILE", env = "TUFA_SIGNER_CA", hide_env_values = true, global = true)]
    pub(super) signer_ca: Option<PathBuf>,

    /// PEM client certificate this server presents to the signer (give with --signer-key).
    #[arg(long, value_name = "FILE", env = "TUFA_SIGNER_CERT", hide_env_values = true, global = true)]
    pub(super) signer_cert: Option<PathBuf>,

    /// PEM private key of --signer-cert.
    #[arg(long, value_name = "FILE", env = "TUFA_SIGNER_KEY", hide_env_values = true, global = true)]
    pub(super) signer_key: Option<PathBuf>,

    #[command(flatten)]
    pub(super) auth: AuthFlags,

    #[command(subcommand)]
    pub(super) command: Option<AdminCommand>,
}

/// Parses the flags with clap's own environment reading switched off (see the module docs).
pub(super) fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    tufa_common::layer::parse_flags(args)
}
