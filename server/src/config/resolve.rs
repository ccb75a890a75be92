//! Merging the layers of tufa-server's settings (flag > `TUFA_*` variable > config file > default)
//! and checking every value, with the origin of a bad value in its error.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Deserialize;
use tufa_common::layer::{self, ConfigError, Environment, FileOrigin, Setting, Sourced, first};
use tufa_common::logging::LogFormat;
use tufa_common::settings;
use zeroize::Zeroizing;

use super::auth::{self as auth_settings, AuthLayer, FileAuth};
use super::cli::Cli;
use super::{
    AuditConfig, CacheConfig, Config, ConnectionsConfig, DatabaseUrl, KeyAlgorithm, LimitsConfig, SignerConfig,
    TimestampConfig, TlsSource, UploadsConfig, VerifyConfig,
};
use crate::kek::KekMaterial;

/// Seconds in a year: the upper bound of both cache lifetimes (Notary's limit).
const MAX_CACHE_AGE_SECS: u64 = 31_536_000;
/// One gibibyte, the largest accepted request-body limit.
const MAX_BODY_LIMIT: usize = 1 << 30;
/// Lifetime of a server-signed timestamp (14 days); the refresh window must be shorter.
const TIMESTAMP_LIFETIME_SECS: u64 = 14 * 24 * 60 * 60;
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The default data directory.
const DEFAULT_DATA_DIR: &str = "./tufa-data";
/// The default filter.
const DEFAULT_LOG: &str = "info";

pub(super) const LISTEN: Setting = Setting::new("--listen", "TUFA_LISTEN", "listen");
pub(super) const DATA_DIR: Setting = Setting::new("--data-dir", "TUFA_DATA_DIR", "data_dir");
pub(super) const DATABASE_URL: Setting = Setting::new("--database-url", "TUFA_DATABASE_URL", "database_url");
pub(super) const TLS_CERT: Setting = Setting::new("--tls-cert", "TUFA_TLS_CERT", "tls.cert");
pub(super) const TLS_KEY: Setting = Setting::new("--tls-key", "TUFA_TLS_KEY", "tls.key");
pub(super) const TLS_CLIENT_CA: Setting = Setting::new("--tls-client-ca", "TUFA_TLS_CLIENT_CA", "tls.client_ca");
pub(super) const TLS_NAMES: Setting = Setting::new("--tls-name", "TUFA_TLS_NAMES", "tls.names");
pub(super) const KEK_FILE: Setting = Setting::new("--kek-file", "TUFA_KEK_FILE", "kek_file");
pub(super) const KEY_ALGORITHM: Setting = Setting::new("--key-algorithm", "TUFA_KEY_ALGORITHM", "key_algorithm");
pub(super) const LOG_LEVEL: Setting = Setting::new("--log-level", "TUFA_LOG", "log_level");
pub(super) const LOG_FORMAT: Setting = Setting::new("--log-format", "TUFA_LOG_FORMAT", "log_format");
pub(super) const SIGNER_URL: Setting = Setting::new("--signer-url", "TUFA_SIGNER_URL", "signer_url");
pub(super) const SIGNER_CA: Setting = Setting::new("--signer-ca", "TUFA_SIGNER_CA", "signer_ca");
pub(super) const SIGNER_CERT: Setting = Setting::new("--signer-cert", "TUFA_SIGNER_CERT", "signer_cert");
pub(super) const SIGNER_KEY: Setting = Setting::new("--signer-key", "TUFA_SIGNER_KEY", "signer_key");
/// Only in the environment.
pub(super) const ENV_CONFIG: &str = "TUFA_CONFIG";
/// Only in the environment.
pub(super) const ENV_KEK: &str = "TUFA_KEK";

/// Every variable [`resolve`] reads; the tests compare it with the clap attributes.
#[cfg(test)]
pub(super) const ENV_VARIABLES: [&str; 17] = [
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

/// The settings one source (flags, environment or file) provides, tagged with their origin, still unchecked.
#[derive(Default)]
struct Layer {
    listen: Option<Sourced<String>>,
    data_dir: Option<Sourced<PathBuf>>,
    database_url: Option<Sourced<Zeroizing<String>>>,
    tls_cert: Option<Sourced<PathBuf>>,
    tls_key: Option<Sourced<PathBuf>>,
    tls_client_ca: Option<Sourced<PathBuf>>,
    tls_names: Option<Sourced<Vec<String>>>,
    kek_file: Option<Sourced<PathBuf>>,
    key_algorithm: Option<Sourced<KeyAlgorithm>>,
    log_level: Option<Sourced<String>>,
    log_format: Option<Sourced<LogFormat>>,
    signer_url: Option<Sourced<String>>,
    signer_ca: Option<Sourced<PathBuf>>,
    signer_cert: Option<Sourced<PathBuf>>,
    signer_key: Option<Sourced<PathBuf>>,
    auth: AuthLayer,
}

/// The TOML file, as written. Unknown keys are errors so that typos do not pass silently. The TLS
/// settings live in a `[tls]` table as in tufa-signer's file; the flat `tls_*` keys of earlier
/// releases still work, but one setting written both ways is an error.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    tls: Option<FileTls>,
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
    public_url: Option<String>,
    auth: Option<FileAuth>,
    cache: Option<FileCache>,
    limits: Option<FileLimits>,
    connections: Option<FileConnections>,
    uploads: Option<FileUploads>,
    timestamp: Option<FileTimestamp>,
    audit: Option<FileAudit>,
    verify: Option<FileVerify>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    names: Option<Vec<String>>,
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
    max_signatures: Option<usize>,
    max_root_keys: Option<usize>,
    max_role_keyids: Option<usize>,
    max_delegations: Option<usize>,
    max_delegation_keys: Option<usize>,
    max_delegation_paths: Option<usize>,
    max_targets: Option<usize>,
    max_upload_targets: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConnections {
    handshake_timeout_secs: Option<u64>,
    first_request_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<u64>,
    max_concurrent_streams: Option<u64>,
    max_header_bytes: Option<u64>,
    body_timeout_secs: Option<u64>,
    min_body_rate: Option<u64>,
    body_rate_grace_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUploads {
    max_concurrent: Option<u64>,
    max_buffered_bytes: Option<u64>,
    wait_ms: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVerify {
    policy: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    checkpoint_interval_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimestamp {
    refresh_interval_secs: Option<u64>,
    refresh_before_secs: Option<u64>,
}

/// The file's settings that have no flag or variable.
#[derive(Default)]
struct FileRest {
    gun_prefixes: Option<Vec<String>>,
    cache: FileCache,
    limits: FileLimits,
    connections: FileConnections,
    uploads: FileUploads,
    timestamp: FileTimestamp,
    audit: FileAudit,
    verify: FileVerify,
}

/// Reads the config file and the environment, and merges them under the flags.
pub(super) fn resolve(mut cli: Cli, lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError> {
    let auth_flags = auth_settings::flag_layer(&mut cli)?;
    let command = cli.command.take();
    let environment = Environment::new(lookup);
    let config_file = match cli.config.clone() {
        Some(path) => Some(path),
        None => environment.var(ENV_CONFIG).map(PathBuf::from),
    };
    let file = match &config_file {
        Some(path) => layer::read_toml(path, MAX_CONFIG_BYTES)?,
        None => FileConfig::default(),
    };
    let kek_from_env = match environment.var(ENV_KEK) {
        Some(value) => {
            let invalid =
                |reason: &str| ConfigError::Invalid { setting: ENV_KEK.to_owned(), reason: reason.to_owned() };
            let text = Zeroizing::new(value.into_string().map_err(|_| invalid("not valid UTF-8"))?);
            Some(KekMaterial::from_hex(&text).map_err(|reason| invalid(&reason))?)
        }
        None => None,
    };
    let origin = FileOrigin::new(config_file.clone());
    let mut flags = flag_layer(cli);
    flags.auth = auth_flags;
    let env = env_layer(&environment)?;
    let (from_file, file_rest) = file_layer(file, &origin)?;
    let mut config = merge(flags, env, from_file, file_rest, origin, config_file, kek_from_env)?;
    config.command = command;
    Ok(config)
}

fn flag_layer(cli: Cli) -> Layer {
    Layer {
        listen: LISTEN.from_flag(cli.listen),
        data_dir: DATA_DIR.from_flag(cli.data_dir),
        database_url: DATABASE_URL.from_flag(cli.database_url.map(Zeroizing::new)),
        tls_cert: TLS_CERT.from_flag(cli.tls_cert),
        tls_key: TLS_KEY.from_flag(cli.tls_key),
        tls_client_ca: TLS_CLIENT_CA.from_flag(cli.tls_client_ca),
        tls_names: TLS_NAMES.from_flag((!cli.tls_names.is_empty()).then_some(cli.tls_names)),
        kek_file: KEK_FILE.from_flag(cli.kek_file),
        key_algorithm: KEY_ALGORITHM.from_flag(cli.key_algorithm),
        log_level: LOG_LEVEL.from_flag(cli.log_level),
        log_format: LOG_FORMAT.from_flag(cli.log_format),
        signer_url: SIGNER_URL.from_flag(cli.signer_url),
        signer_ca: SIGNER_CA.from_flag(cli.signer_ca),
        signer_cert: SIGNER_CERT.from_flag(cli.signer_cert),
        signer_key: SIGNER_KEY.from_flag(cli.signer_key),
        auth: AuthLayer::default(),
    }
}

/// Reads the `TUFA_*` variables (empty values count as unset).
fn env_layer(env: &Environment<'_>) -> Result<Layer, ConfigError> {
    Ok(Layer {
        listen: env.text(LISTEN)?,
        data_dir: env.path(DATA_DIR)?,
        database_url: env.secret(DATABASE_URL)?,
        tls_cert: env.path(TLS_CERT)?,
        tls_key: env.path(TLS_KEY)?,
        tls_client_ca: env.path(TLS_CLIENT_CA)?,
        tls_names: env.list(TLS_NAMES)?,
        kek_file: env.path(KEK_FILE)?,
        key_algorithm: env.parsed(KEY_ALGORITHM, |value| {
            KeyAlgorithm::from_str(value, false)
                .map_err(|_| format!("unknown algorithm {value:?}; use ecdsa or ed25519"))
        })?,
        log_level: env.text(LOG_LEVEL)?,
        log_format: env.parsed(LOG_FORMAT, LogFormat::parse)?,
        signer_url: env.text(SIGNER_URL)?,
        signer_ca: env.path(SIGNER_CA)?,
        signer_cert: env.path(SIGNER_CERT)?,
        signer_key: env.path(SIGNER_KEY)?,
        auth: auth_settings::env_layer(env)?,
    })
}

/// Splits the file into the layered settings (relative paths anchored at its directory) and the rest.
fn file_layer(file: FileConfig, origin: &FileOrigin) -> Result<(Layer, FileRest), ConfigError> {
    let tls = file.tls.unwrap_or_default();
    let tls_paths = tufa_common::settings::file_tls_paths(
        origin,
        [tls.cert, tls.key, tls.client_ca],
        [file.tls_cert, file.tls_key, file.tls_client_ca],
    )?;
    let layer = Layer {
        listen: origin.value(LISTEN, file.listen),
        data_dir: origin.path_value(DATA_DIR, file.data_dir),
        database_url: origin.value(DATABASE_URL, file.database_url.map(Zeroizing::new)),
        tls_cert: tls_paths.cert,
        tls_key: tls_paths.key,
        tls_client_ca: tls_paths.client_ca,
        tls_names: origin.aliased(("tls.names", tls.names), ("tls_names", file.tls_names))?,
        kek_file: origin.path_value(KEK_FILE, file.kek_file),
        key_algorithm: origin.value(KEY_ALGORITHM, file.key_algorithm),
        log_level: origin.value(LOG_LEVEL, file.log_level),
        log_format: origin.value(LOG_FORMAT, file.log_format),
        signer_url: origin.value(SIGNER_URL, file.signer_url),
        signer_ca: origin.path_value(SIGNER_CA, file.signer_ca),
        signer_cert: origin.path_value(SIGNER_CERT, file.signer_cert),
        signer_key: origin.path_value(SIGNER_KEY, file.signer_key),
        auth: auth_settings::file_layer(file.auth, file.public_url, origin),
    };
    let rest = FileRest {
        gun_prefixes: file.gun_prefixes,
        cache: file.cache.unwrap_or_default(),
        limits: file.limits.unwrap_or_default(),
        connections: file.connections.unwrap_or_default(),
        uploads: file.uploads.unwrap_or_default(),
        timestamp: file.timestamp.unwrap_or_default(),
        audit: file.audit.unwrap_or_default(),
        verify: file.verify.unwrap_or_default(),
    };
    Ok((layer, rest))
}

fn merge(
    flags: Layer,
    env: Layer,
    file: Layer,
    file_rest: FileRest,
    file_origin: FileOrigin,
    config_file: Option<PathBuf>,
    kek_from_env: Option<KekMaterial>,
) -> Result<Config, ConfigError> {
    let listen =
        settings::listen(first([flags.listen, env.listen, file.listen]), SocketAddr::from(([127, 0, 0, 1], 4443)))?;
    let data_dir = settings::data_dir(first([flags.data_dir, env.data_dir, file.data_dir]), DEFAULT_DATA_DIR)?;

    let database_url = match first([flags.database_url, env.database_url, file.database_url]) {
        Some(url) => DatabaseUrl::parse(&url.value).map_err(|error| url.invalid(error.to_string()))?,
        None => DatabaseUrl::sqlite_file(&data_dir.join("tufa.db")),
    };

    let tls_names = first([flags.tls_names, env.tls_names, file.tls_names]);
    let tls = match settings::tls_pair(
        first([flags.tls_cert, env.tls_cert, file.tls_cert]),
        first([flags.tls_key, env.tls_key, file.tls_key]),
    )? {
        Some((cert, key)) => {
            if let Some(names) = tls_names.filter(|names| !names.value.is_empty()) {
                return Err(ConfigError::Conflict(format!(
                    "{} only applies to the generated certificate; remove it or remove {} and {}",
                    names.origin, cert.origin, key.origin,
                )));
            }
            TlsSource::Files { cert: cert.value, key: key.value }
        }
        None => {
            let extra_names = match tls_names {
                Some(names) => {
                    for name in &names.value {
                        check_tls_name(name).map_err(|reason| names.invalid(reason))?;
                    }
                    names.value
                }
                None => Vec::new(),
            };
            TlsSource::Generated { extra_names }
        }
    };
    let tls_client_ca = first([flags.tls_client_ca, env.tls_client_ca, file.tls_client_ca]).map(|ca| ca.value);

    let kek_file = match first([flags.kek_file, env.kek_file, file.kek_file]) {
        Some(kek_file) if kek_from_env.is_some() => {
            return Err(ConfigError::Conflict(format!(
                "both {ENV_KEK} and {} are set; use only one source for the key-encryption key",
                kek_file.origin
            )));
        }
        Some(kek_file) => kek_file.value,
        None => data_dir.join("kek.key"),
    };

    let key_algorithm = first([flags.key_algorithm, env.key_algorithm, file.key_algorithm])
        .map(|algorithm| algorithm.value)
        .unwrap_or_default();
    let log = settings::log(
        first([flags.log_level, env.log_level, file.log_level]),
        first([flags.log_format, env.log_format, file.log_format]),
        DEFAULT_LOG,
    )?;

    let signer = resolve_signer(
        first([flags.signer_url, env.signer_url, file.signer_url]),
        first([flags.signer_ca, env.signer_ca, file.signer_ca]),
        first([flags.signer_cert, env.signer_cert, file.signer_cert]),
        first([flags.signer_key, env.signer_key, file.signer_key]),
    )?;

    let FileRest { gun_prefixes, cache, limits, connections, uploads, timestamp, audit, verify } = file_rest;
    let auth = auth_settings::merge(flags.auth, env.auth, file.auth, listen)?;
    let check = |key: &'static str, value: u64, min: u64, max: u64| -> Result<(), ConfigError> {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                setting: file_origin.origin(key).describe(),
                reason: format!("{value} is outside {min}..={max}"),
            })
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
        max_signatures: limits.max_signatures.unwrap_or(limit_defaults.max_signatures),
        max_root_keys: limits.max_root_keys.unwrap_or(limit_defaults.max_root_keys),
        max_role_keyids: limits.max_role_keyids.unwrap_or(limit_defaults.max_role_keyids),
        max_delegations: limits.max_delegations.unwrap_or(limit_defaults.max_delegations),
        max_delegation_keys: limits.max_delegation_keys.unwrap_or(limit_defaults.max_delegation_keys),
        max_delegation_paths: limits.max_delegation_paths.unwrap_or(limit_defaults.max_delegation_paths),
        max_targets: limits.max_targets.unwrap_or(limit_defaults.max_targets),
        // Unset, it follows `max_targets`, so that a file at that limit can always be replaced.
        max_upload_targets: limits.max_upload_targets.unwrap_or_else(|| {
            limits.max_targets.map_or(limit_defaults.max_upload_targets, |max| max.saturating_mul(2))
        }),
    };
    let as_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    check("limits.max_body_bytes", as_u64(limits.max_body_bytes), 1, as_u64(MAX_BODY_LIMIT))?;
    check("limits.max_delegation_depth", as_u64(limits.max_delegation_depth), 1, 255)?;
    check("limits.max_parts", as_u64(limits.max_parts), 1, 100_000)?;
    // Upper bounds keep every limit's worst case within the per-request CPU and memory budget.
    check("limits.max_signatures", as_u64(limits.max_signatures), 1, 1_000)?;
    check("limits.max_root_keys", as_u64(limits.max_root_keys), 4, 10_000)?;
    check("limits.max_role_keyids", as_u64(limits.max_role_keyids), 1, 10_000)?;
    check("limits.max_delegations", as_u64(limits.max_delegations), 1, 100_000)?;
    check("limits.max_delegation_keys", as_u64(limits.max_delegation_keys), 1, 100_000)?;
    check("limits.max_delegation_paths", as_u64(limits.max_delegation_paths), 1, 100_000)?;
    check("limits.max_targets", as_u64(limits.max_targets), 1, 10_000_000)?;
    check("limits.max_upload_targets", as_u64(limits.max_upload_targets), as_u64(limits.max_targets), 20_000_000)?;

    let connection_defaults = ConnectionsConfig::default();
    let handshake_timeout_secs =
        connections.handshake_timeout_secs.unwrap_or(connection_defaults.handshake_timeout_secs);
    check("connections.handshake_timeout_secs", handshake_timeout_secs, 1, 60)?;
    let first_request_timeout_secs =
        connections.first_request_timeout_secs.unwrap_or(connection_defaults.first_request_timeout_secs);
    check("connections.first_request_timeout_secs", first_request_timeout_secs, 1, 300)?;
    let idle_timeout_secs = connections.idle_timeout_secs.unwrap_or(connection_defaults.idle_timeout_secs);
    check("connections.idle_timeout_secs", idle_timeout_secs, 1, 3600)?;
    let max_connections = connections.max_connections.unwrap_or(as_u64(connection_defaults.max_connections));
    check("connections.max_connections", max_connections, 1, 1_000_000)?;
    let max_concurrent_streams =
        connections.max_concurrent_streams.unwrap_or(u64::from(connection_defaults.max_concurrent_streams));
    check("connections.max_concurrent_streams", max_concurrent_streams, 1, 10_000)?;
    let max_header_bytes = connections.max_header_bytes.unwrap_or(as_u64(connection_defaults.max_header_bytes));
    check("connections.max_header_bytes", max_header_bytes, 8192, 1 << 20)?;
    let body_timeout_secs = connections.body_timeout_secs.unwrap_or(connection_defaults.body_timeout_secs);
    check("connections.body_timeout_secs", body_timeout_secs, 1, 3600)?;
    let min_body_rate = connections.min_body_rate.unwrap_or(connection_defaults.min_body_rate);
    check("connections.min_body_rate", min_body_rate, 0, 1 << 30)?;
    let body_rate_grace_secs = connections.body_rate_grace_secs.unwrap_or(connection_defaults.body_rate_grace_secs);
    check("connections.body_rate_grace_secs", body_rate_grace_secs, 0, 3600)?;
    let connections = ConnectionsConfig {
        handshake_timeout_secs,
        first_request_timeout_secs,
        idle_timeout_secs,
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_concurrent_streams: u32::try_from(max_concurrent_streams).unwrap_or(u32::MAX),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        body_timeout_secs,
        min_body_rate,
        body_rate_grace_secs,
    };

    let upload_defaults = UploadsConfig::default();
    let max_concurrent = uploads.max_concurrent.unwrap_or(as_u64(upload_defaults.max_concurrent));
    check("uploads.max_concurrent", max_concurrent, 1, 1024)?;
    let max_buffered_bytes = uploads.max_buffered_bytes.unwrap_or(upload_defaults.max_buffered_bytes);
    check("uploads.max_buffered_bytes", max_buffered_bytes, 1, 16 << 30)?;
    if max_buffered_bytes < as_u64(limits.max_body_bytes) {
        return Err(ConfigError::Invalid {
            setting: file_origin.origin("uploads.max_buffered_bytes").describe(),
            reason: format!(
                "{max_buffered_bytes} must be at least limits.max_body_bytes ({}), or the largest allowed upload \
                 could never be read",
                limits.max_body_bytes
            ),
        });
    }
    let wait_ms = uploads.wait_ms.unwrap_or(upload_defaults.wait_ms);
    check("uploads.wait_ms", wait_ms, 0, 60_000)?;
    let uploads = UploadsConfig {
        max_concurrent: usize::try_from(max_concurrent).unwrap_or(usize::MAX),
        max_buffered_bytes,
        wait_ms,
    };

    let timestamp_defaults = TimestampConfig::default();
    let timestamp = TimestampConfig {
        refresh_interval_secs: timestamp.refresh_interval_secs.unwrap_or(timestamp_defaults.refresh_interval_secs),
        refresh_before_secs: timestamp.refresh_before_secs.unwrap_or(timestamp_defaults.refresh_before_secs),
    };
    check("timestamp.refresh_interval_secs", timestamp.refresh_interval_secs, 1, 86_400)?;
    check("timestamp.refresh_before_secs", timestamp.refresh_before_secs, 60, TIMESTAMP_LIFETIME_SECS - 1)?;
    if timestamp.refresh_interval_secs >= timestamp.refresh_before_secs {
        return Err(ConfigError::Invalid {
            setting: file_origin.origin("timestamp.refresh_interval_secs").describe(),
            reason: format!(
                "{} must be shorter than timestamp.refresh_before_secs ({}), or timestamps could \
                 expire between two checks",
                timestamp.refresh_interval_secs, timestamp.refresh_before_secs
            ),
        });
    }

    let audit = AuditConfig {
        checkpoint_interval_secs: audit
            .checkpoint_interval_secs
            .unwrap_or(AuditConfig::default().checkpoint_interval_secs),
    };
    // At least a checkpoint a minute while the log grows: a longer interval would widen what an
    // intruder can drop unnoticed.
    check("audit.checkpoint_interval_secs", audit.checkpoint_interval_secs, 1, 60)?;

    let gun_prefixes = gun_prefixes.unwrap_or_default();
    for prefix in &gun_prefixes {
        check_gun_prefix(prefix).map_err(|reason| ConfigError::Invalid {
            setting: file_origin.origin("gun_prefixes").describe(),
            reason: format!("{prefix:?} {reason}"),
        })?;
    }

    // A relative policy path is relative to the configuration file, like the file's other paths.
    let verify = VerifyConfig {
        policy: verify.policy.map(|path| match (&config_file, path.is_relative()) {
            (Some(file), true) => file.parent().map_or(path.clone(), |dir| dir.join(&path)),
            _ => path,
        }),
    };

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
        log,
        cache,
        limits,
        connections,
        uploads,
        timestamp,
        audit,
        verify,
        gun_prefixes,
        signer,
        auth,
        command: None,
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
        if let Some(extra) =
            ca.as_ref().map(|ca| ca.origin.describe()).or_else(|| cert.as_ref().map(|cert| cert.origin.describe()))
        {
            return Err(ConfigError::Conflict(format!("{extra} is set but --signer-url is not")));
        }
        return Ok(None);
    };
    let text = url.value.trim().to_owned();
    let Some(authority) = text.strip_prefix("https://") else {
        return Err(url.invalid(format!("{text:?} must start with https:// (the signer is only reached over TLS)")));
    };
    let authority = authority.trim_end_matches('/');
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(url.invalid(format!("{text:?} needs a port, e.g. https://signer:7899")));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
        return Err(url.invalid(format!("{text:?} is not https://HOST:PORT")));
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
            return Err(ConfigError::Conflict(format!("{} is set but --signer-key is not", cert.origin)));
        }
        (None, Some(key)) => {
            return Err(ConfigError::Conflict(format!("{} is set but --signer-cert is not", key.origin)));
        }
    };
    let host = host.to_owned();
    Ok(Some(SignerConfig { url: text, host, ca: ca.value, client }))
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
