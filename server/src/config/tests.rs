//! Tests of tufa-server's configuration: layering, origins in errors, aliases, the KEK file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use clap::error::ErrorKind;

use super::cli::Cli;
use super::resolve::ENV_VARIABLES;

/// Every variable the configuration reads: the core settings and the `[auth]` ones.
fn all_env_variables() -> Vec<&'static str> {
    ENV_VARIABLES.iter().chain(super::auth::ENV_VARIABLES.iter()).copied().collect()
}
use super::*;
use crate::kek::load_or_create_kek;

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
    assert_eq!(config.log.filter, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.cache, CacheConfig { current_max_age: 300, consistent_max_age: 2_592_000 });
    assert_eq!(
        config.limits,
        LimitsConfig {
            max_body_bytes: 32 * 1024 * 1024,
            max_delegation_depth: 16,
            max_parts: 1000,
            max_signatures: 64,
            max_root_keys: 256,
            max_role_keyids: 256,
            max_delegations: 1_000,
            max_delegation_keys: 2_000,
            max_delegation_paths: 1_000,
            max_targets: 50_000,
            max_upload_targets: 100_000,
        }
    );
    assert_eq!(config.timestamp.refresh_interval(), Duration::from_secs(300));
    assert_eq!(config.audit.checkpoint_interval(), Duration::from_secs(60));
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
    assert_eq!(from_file.log.filter, "warn");
    assert_eq!(from_file.key_algorithm, KeyAlgorithm::Ed25519);
    assert_eq!(from_file.log.format, LogFormat::Json);
    assert_eq!(from_file.config_file.as_deref(), Some(file.as_path()));

    let from_env =
        load_with(&["--config", file_arg], &[("TUFA_LISTEN", "127.0.0.1:1002"), ("TUFA_KEY_ALGORITHM", "ecdsa")])
            .unwrap();
    assert_eq!(from_env.listen.port(), 1002);
    assert_eq!(from_env.key_algorithm, KeyAlgorithm::Ecdsa);
    assert_eq!(from_env.log.filter, "warn", "unset variables fall through to the file");

    let from_flag = load_with(
        &["--config", file_arg, "--listen", "127.0.0.1:1003", "--log-format", "text"],
        &[("TUFA_LISTEN", "127.0.0.1:1002"), ("TUFA_LOG_FORMAT", "json")],
    )
    .unwrap();
    assert_eq!(from_flag.listen.port(), 1003);
    assert_eq!(from_flag.log.format, LogFormat::Text);
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
    let file = write_config(dir.path(), include_str!("../../../tufa-server.example.toml"));
    let example = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
    let defaults = load_with(&[], &[]).unwrap();
    // The example's relative data_dir is anchored at the file's directory; all else matches.
    assert_eq!(example.data_dir, dir.path().join("./tufa-data"));
    assert_eq!(example.listen, defaults.listen);
    assert_eq!(example.tls, defaults.tls);
    assert_eq!(example.tls_client_ca, defaults.tls_client_ca);
    assert_eq!(example.key_algorithm, defaults.key_algorithm);
    assert_eq!(example.auth, defaults.auth);
    assert_eq!(example.log, defaults.log);
    assert_eq!(example.cache, defaults.cache);
    assert_eq!(example.limits, defaults.limits);
    assert_eq!(example.connections, defaults.connections);
    assert_eq!(example.uploads, defaults.uploads);
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
         [limits]\nmax_body_bytes = 1024\nmax_parts = 5\nmax_targets = 500\nmax_delegations = 7\n\
         [timestamp]\nrefresh_interval_secs = 60\nrefresh_before_secs = 3600\n\
         [audit]\ncheckpoint_interval_secs = 5\n",
    );
    let config = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
    assert_eq!(config.gun_prefixes, ["docker.io/", "example.com/team/"]);
    assert_eq!(config.cache.current_max_age, 0);
    assert_eq!(config.cache.consistent_max_age, 2_592_000);
    assert_eq!(config.limits.max_body_bytes, 1024);
    assert_eq!(config.limits.max_parts, 5);
    assert_eq!((config.limits.max_targets, config.limits.max_delegations), (500, 7));
    // Unset, the per-update limit follows the per-file one.
    assert_eq!(config.limits.max_upload_targets, 1000);
    let update = config.limits.update_limits();
    assert_eq!((update.max_targets, update.max_delegations, update.max_signatures), (500, 7, 64));
    assert_eq!((update.max_upload_targets, update.max_replaced_bytes), (1000, 1024));
    assert_eq!(config.limits.max_delegation_depth, 16);
    assert_eq!(config.timestamp.refresh_interval_secs, 60);
    assert_eq!(config.audit.checkpoint_interval_secs, 5);
    assert_eq!(config.timestamp.refresh_before_secs, 3600);
}

#[test]
fn connection_and_upload_bounds_default_and_are_read() {
    let defaults = load_with(&[], &[]).unwrap();
    assert_eq!(
        defaults.connections,
        ConnectionsConfig {
            handshake_timeout_secs: 10,
            first_request_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 1024,
            max_concurrent_streams: 100,
            max_header_bytes: 32768,
            body_timeout_secs: 60,
            min_body_rate: 1024,
            body_rate_grace_secs: 10,
        }
    );
    assert_eq!(defaults.uploads, UploadsConfig { max_concurrent: 4, max_buffered_bytes: 64 << 20, wait_ms: 5000 });

    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[limits]\nmax_body_bytes = 1000\n\
         [connections]\nhandshake_timeout_secs = 2\nfirst_request_timeout_secs = 3\nidle_timeout_secs = 4\n\
         max_connections = 5\nmax_concurrent_streams = 6\nmax_header_bytes = 9000\nbody_timeout_secs = 7\n\
         min_body_rate = 0\n\
         body_rate_grace_secs = 0\n\
         [uploads]\nmax_concurrent = 1\nmax_buffered_bytes = 1000\nwait_ms = 0\n",
    );
    let config = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
    assert_eq!(
        config.connections,
        ConnectionsConfig {
            handshake_timeout_secs: 2,
            first_request_timeout_secs: 3,
            idle_timeout_secs: 4,
            max_connections: 5,
            max_concurrent_streams: 6,
            max_header_bytes: 9000,
            body_timeout_secs: 7,
            min_body_rate: 0,
            body_rate_grace_secs: 0,
        }
    );
    assert_eq!(config.uploads, UploadsConfig { max_concurrent: 1, max_buffered_bytes: 1000, wait_ms: 0 });

    // The listener gets exactly these values.
    let settings = crate::run::connection_settings(&config);
    assert_eq!(settings.handshake_timeout, Duration::from_secs(2));
    assert_eq!(settings.first_request_timeout, Duration::from_secs(3));
    assert_eq!(settings.idle_timeout, Duration::from_secs(4));
    assert_eq!(settings.max_connections, 5);
    assert_eq!(settings.max_concurrent_streams, 6);
    assert_eq!(settings.max_header_bytes, 9000);
    assert_eq!(settings.body.timeout, Duration::from_secs(7));
    assert_eq!(settings.body.min_rate, 0);
    assert_eq!(settings.body.drain_max_bytes, 1000);
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
        ("[limits]\nmax_targets = 0\n", "`limits.max_targets` in"),
        ("[limits]\nmax_targets = 500\nmax_upload_targets = 499\n", "`limits.max_upload_targets` in"),
        ("[limits]\nmax_root_keys = 3\n", "`limits.max_root_keys` in"),
        ("[limits]\nmax_signatures = 1001\n", "`limits.max_signatures` in"),
        ("[connections]\nhandshake_timeout_secs = 0\n", "`connections.handshake_timeout_secs` in"),
        ("[connections]\nhandshake_timeout_secs = 61\n", "outside 1..=60"),
        ("[connections]\nfirst_request_timeout_secs = 301\n", "`connections.first_request_timeout_secs` in"),
        ("[connections]\nidle_timeout_secs = 0\n", "`connections.idle_timeout_secs` in"),
        ("[connections]\nmax_connections = 0\n", "`connections.max_connections` in"),
        ("[connections]\nmax_concurrent_streams = 10001\n", "`connections.max_concurrent_streams` in"),
        ("[connections]\nmax_header_bytes = 8191\n", "`connections.max_header_bytes` in"),
        ("[connections]\nmax_header_bytes = 1048577\n", "outside 8192..=1048576"),
        ("[connections]\nbody_timeout_secs = 0\n", "`connections.body_timeout_secs` in"),
        ("[connections]\nmin_body_rate = 1073741825\n", "`connections.min_body_rate` in"),
        ("[connections]\nbody_rate_grace_secs = 3601\n", "`connections.body_rate_grace_secs` in"),
        ("[connections]\nmax_streams = 1\n", "unknown field `max_streams`"),
        ("[uploads]\nmax_concurrent = 0\n", "`uploads.max_concurrent` in"),
        ("[uploads]\nmax_buffered_bytes = 1000\n", "must be at least limits.max_body_bytes (33554432)"),
        ("[uploads]\nmax_buffered_bytes = 17179869185\n", "`uploads.max_buffered_bytes` in"),
        ("[uploads]\nwait_ms = 60001\n", "`uploads.wait_ms` in"),
        ("[timestamp]\nrefresh_interval_secs = 0\n", "`timestamp.refresh_interval_secs` in"),
        ("[audit]\ncheckpoint_interval_secs = 0\n", "`audit.checkpoint_interval_secs` in"),
        ("[audit]\ncheckpoint_interval_secs = 61\n", "`audit.checkpoint_interval_secs` in"),
        ("[audit]\ncheckpoint_every = 5\n", "checkpoint_every"),
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
fn database_urls_are_parsed_by_the_store_and_errors_name_their_origin() {
    let accepted = [
        ("sqlite:///var/lib/tufa/tufa.db", DatabaseBackend::Sqlite),
        ("sqlite:/var/lib/tufa/tufa.db", DatabaseBackend::Sqlite),
        ("sqlite://relative/tufa.db", DatabaseBackend::Sqlite),
        ("sqlite:tufa.db", DatabaseBackend::Sqlite),
        ("sqlite::memory:", DatabaseBackend::Sqlite),
        ("postgres://tufa@db/tufa", DatabaseBackend::Postgres),
        ("postgresql://tufa:pw@db:5432/tufa?sslmode=require", DatabaseBackend::Postgres),
    ];
    for (url, backend) in accepted {
        let config = load_with(&["--database-url", url], &[]).unwrap();
        assert_eq!(config.database_url.backend(), backend, "{url}");
        assert_eq!(config.database_url.expose(), url);
    }
    for url in ["mysql://db/x", "file:///x", "postgres:/db"] {
        let message = error_text(load_with(&["--database-url", url], &[]));
        let expected = DatabaseUrl::parse(url).unwrap_err().to_string();
        assert_eq!(message, format!("invalid --database-url: {expected}"), "{url}");
    }
    let message = error_text(load_with(&[], &[("TUFA_DATABASE_URL", "mysql://u:hunter2@db/x")]));
    assert!(message.starts_with("invalid TUFA_DATABASE_URL: unsupported database URL mysql://u:***@db/x"), "{message}");
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

    let message = error_text(load_with(&["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-name", "x.example"], &[]));
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
    for variable in all_env_variables() {
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
    let read = all_env_variables();
    assert_eq!(documented.len(), read.len() - 1, "all but TUFA_KEK have a flag");
    for name in &documented {
        assert!(read.contains(&name.as_str()), "{name} is documented but not read");
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
    assert_eq!(config.log.filter, "debug");
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
    assert_eq!(message, "invalid TUFA_KEK: expected 64 hex characters (32 bytes), found 2 characters");
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

#[test]
fn tls_table_and_the_older_flat_keys_are_the_same_settings() {
    let dir = tempfile::tempdir().unwrap();
    let table = write_config(dir.path(), "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n");
    let from_table = load_with(&["--config", table.to_str().unwrap()], &[]).unwrap();
    assert_eq!(from_table.tls, TlsSource::Files { cert: dir.path().join("c.pem"), key: dir.path().join("k.pem") });
    assert_eq!(from_table.tls_client_ca, Some(dir.path().join("ca.pem")));
    let flat = write_config(dir.path(), "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"\n");
    let from_flat = load_with(&["--config", flat.to_str().unwrap()], &[]).unwrap();
    assert_eq!((from_flat.tls, from_flat.tls_client_ca), (from_table.tls, from_table.tls_client_ca));
    let names = write_config(dir.path(), "[tls]\nnames = [\"a.example\"]\n");
    let config = load_with(&["--config", names.to_str().unwrap()], &[]).unwrap();
    assert_eq!(config.tls, TlsSource::Generated { extra_names: vec!["a.example".into()] });

    let both = write_config(dir.path(), "tls_cert = \"a.pem\"\n[tls]\ncert = \"b.pem\"\n");
    let message = error_text(load_with(&["--config", both.to_str().unwrap()], &[]));
    assert_eq!(
        message,
        format!(
            "config file {}: both `tls.cert` and `tls_cert` are set; `tls_cert` is an older name for `tls.cert`, \
             keep only `tls.cert`",
            both.display()
        )
    );
    let half = write_config(dir.path(), "[tls]\ncert = \"c.pem\"\n");
    let message = error_text(load_with(&["--config", half.to_str().unwrap()], &[]));
    assert!(
        message.starts_with(&format!("key `tls.cert` in config file {} is set but no TLS key is", half.display())),
        "{message}"
    );
}

#[test]
fn log_filters_must_name_levels_wherever_they_come_from() {
    let expected = "is not a log level or TARGET=LEVEL; use a level (trace, debug, info, warn, error, off) or \
                    directives such as \"info,tufa_store=debug\"";
    let message = error_text(load_with(&["--log-level", "verbose"], &[]));
    assert_eq!(message, format!("invalid --log-level: \"verbose\" {expected}"));
    let message = error_text(load_with(&[], &[("TUFA_LOG", "info,tufa_server")]));
    assert_eq!(message, format!("invalid TUFA_LOG: \"tufa_server\" {expected}"));
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "log_level = \"loud\"\n");
    let message = error_text(load_with(&["--config", file.to_str().unwrap()], &[]));
    assert_eq!(message, format!("invalid key `log_level` in config file {}: \"loud\" {expected}", file.display()));
    let config = load_with(&["--log-level", "warn,tufa_server=trace"], &[]).unwrap();
    assert_eq!(config.log.filter, "warn,tufa_server=trace");
}

#[test]
fn auth_defaults_to_none_on_loopback_and_is_refused_elsewhere_without_the_insecure_flag() {
    let config = load_with(&[], &[]).unwrap();
    assert_eq!(config.auth, AuthConfig::None { insecure: false });
    assert_eq!(config.command, None);
    let message = error_text(load_with(&["--listen", "0.0.0.0:4443"], &[]));
    assert!(
        message.starts_with(
            "0.0.0.0:4443 is not a loopback address and no authentication is configured (the default --auth none)"
        ),
        "{message}"
    );
    let config = load_with(&["--listen", "0.0.0.0:4443", "--insecure-no-auth"], &[]).unwrap();
    assert_eq!(config.auth, AuthConfig::None { insecure: true });
    let config = load_with(&["--listen", "10.1.2.3:4443"], &[("TUFA_INSECURE_NO_AUTH", "true")]).unwrap();
    assert_eq!(config.auth, AuthConfig::None { insecure: true });
    let message = error_text(load_with(&["--auth", "builtin", "--insecure-no-auth"], &[]));
    assert_eq!(message, "--insecure-no-auth only applies to --auth none, but --auth is builtin");
    let message = error_text(load_with(&[], &[("TUFA_AUTH", "ldap")]));
    assert_eq!(message, "invalid TUFA_AUTH: unknown mode \"ldap\"; use none, token or builtin");
}

#[test]
fn token_mode_needs_all_four_settings_named_as_in_notary() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "listen = \"0.0.0.0:4443\"\n[auth]\ntype = \"token\"\n[auth.token]\nrealm = \"https://auth.example.com/token\"\n\
         service = \"notary\"\nissuer = \"auth.example.com\"\nrootcertbundle = \"bundle.pem\"\n",
    );
    let config = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
    assert_eq!(
        config.auth,
        AuthConfig::Token(TokenAuthConfig {
            realm: "https://auth.example.com/token".into(),
            service: "notary".into(),
            issuer: "auth.example.com".into(),
            root_cert_bundle: dir.path().join("bundle.pem"),
        })
    );
    // The environment overrides the file, per setting.
    let config = load_with(&["--config", file.to_str().unwrap()], &[("TUFA_AUTH_TOKEN_SERVICE", "other")]).unwrap();
    let AuthConfig::Token(token) = config.auth else { panic!("token mode expected") };
    assert_eq!(token.service, "other");
    let message = error_text(load_with(&["--auth", "token", "--auth-token-realm", "https://a/token"], &[]));
    assert_eq!(
        message,
        "--auth is token, which needs --auth-token-service (or TUFA_AUTH_TOKEN_SERVICE, or `auth.token.service` in \
         the config file)"
    );
    let message = error_text(load_with(
        &["--auth", "token", "--auth-token-realm", "ftp://a", "--auth-token-service", "s", "--auth-token-issuer", "i"],
        &[("TUFA_AUTH_TOKEN_ROOTCERTBUNDLE", "/b.pem")],
    ));
    assert_eq!(message, "invalid --auth-token-realm: \"ftp://a\" must start with https:// or http://");
    let message = error_text(load_with(&["--auth-token-service", "s"], &[]));
    assert_eq!(message, "--auth-token-service only applies to --auth token, but the default --auth none is none");
    let message = error_text(load_with(
        &["--auth", "token", "--auth-token-realm", "https://a/t", "--auth-token-service", "bad name"],
        &[("TUFA_AUTH_TOKEN_ISSUER", "i"), ("TUFA_AUTH_TOKEN_ROOTCERTBUNDLE", "/b.pem")],
    ));
    assert_eq!(
        message,
        "invalid --auth-token-service: \"bad name\" may hold only printable ASCII without spaces, quotes or backslashes"
    );
}

#[test]
fn builtin_mode_has_defaults_a_realm_and_checked_registries() {
    let config = load_with(&["--auth", "builtin"], &[]).unwrap();
    assert_eq!(
        config.auth,
        AuthConfig::Builtin(BuiltinAuthConfig {
            service: "tufa".into(),
            issuer: "tufa".into(),
            public_url: "https://127.0.0.1:4443".into(),
            realm: "https://127.0.0.1:4443/auth/token".into(),
            token_ttl: Duration::from_secs(300),
            registries: vec![],
        })
    );
    let config = load_with(
        &[
            "--auth",
            "builtin",
            "--listen",
            "0.0.0.0:443",
            "--public-url",
            "https://tufa.example.com/",
            "--auth-builtin-registry",
            "registry=registry.example.com",
            "--auth-builtin-registry",
            "lab=10.0.0.5:5000",
        ],
        &[("TUFA_AUTH_BUILTIN_TOKEN_TTL", "15m")],
    )
    .unwrap();
    let AuthConfig::Builtin(builtin) = config.auth else { panic!("builtin mode expected") };
    assert_eq!(builtin.realm, "https://tufa.example.com/auth/token");
    assert_eq!(builtin.token_ttl, Duration::from_secs(900));
    assert_eq!(
        builtin.registries,
        vec![
            RegistryService { service: "registry".into(), host: "registry.example.com".into() },
            RegistryService { service: "lab".into(), host: "10.0.0.5:5000".into() },
        ]
    );
    let message = error_text(load_with(&["--auth", "builtin", "--listen", "0.0.0.0:443"], &[]));
    assert!(message.starts_with("0.0.0.0:443 is not an address clients can reach"), "{message}");
    let message = error_text(load_with(&["--auth", "builtin", "--auth-builtin-token-ttl", "5s"], &[]));
    assert_eq!(message, "invalid --auth-builtin-token-ttl: \"5s\" is outside 60s..=3600s");
    let message = error_text(load_with(&["--auth", "builtin", "--auth-builtin-registry", "tufa=r.example.com"], &[]));
    assert!(message.contains("the service name \"tufa\" is used twice"), "{message}");
    let message = error_text(load_with(&["--auth", "builtin", "--auth-builtin-registry", "registry"], &[]));
    assert_eq!(message, "invalid --auth-builtin-registry: \"registry\" is not SERVICE=HOST");
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[auth]\ntype = \"builtin\"\n[auth.builtin]\nservice = \"trust\"\n[[auth.builtin.registries]]\n\
         service = \"registry\"\nhost = \"registry.example.com:5000\"\n",
    );
    let config = load_with(&["--config", file.to_str().unwrap()], &[]).unwrap();
    let AuthConfig::Builtin(builtin) = config.auth else { panic!("builtin mode expected") };
    assert_eq!(builtin.service, "trust");
    assert_eq!(builtin.registry("registry").map(|registry| registry.host.as_str()), Some("registry.example.com:5000"));
}

#[test]
fn admin_subcommands_take_the_server_settings_before_or_after_them() {
    use crate::admin::{AdminAction, AdminArgs, AdminCommand, UserAction};
    let config = load_with(&["--data-dir", "/srv/a", "admin", "user", "remove", "bob"], &[]).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/srv/a"));
    assert_eq!(
        config.command,
        Some(AdminCommand::Admin(AdminArgs { action: AdminAction::User(UserAction::Remove { name: "bob".into() }) }))
    );
    let config =
        load_with(&["admin", "list", "--data-dir", "/srv/b", "--database-url", "sqlite::memory:"], &[]).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/srv/b"));
    assert_eq!(config.database_url.expose(), "sqlite::memory:");
    assert_eq!(config.command, Some(AdminCommand::Admin(AdminArgs { action: AdminAction::List })));
}
