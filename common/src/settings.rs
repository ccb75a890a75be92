//! The settings both binaries have, resolved the same way: the listen address, the data
//! directory, a TLS certificate and key given together, and the log settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::layer::{ConfigError, FileOrigin, Sourced};
use crate::logging::{LogFormat, LogSettings, check_filter};

/// The listen address from the highest layer that sets it, else `default`.
pub fn listen(value: Option<Sourced<String>>, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
    match value {
        Some(listen) => listen
            .parse(|text| {
                text.trim().parse::<SocketAddr>().map_err(|_| {
                    format!(
                        "{text:?} is not ADDR:PORT; use e.g. 127.0.0.1:{port}, 0.0.0.0:{port} or [::]:{port}",
                        port = default.port()
                    )
                })
            })
            .map(|listen| listen.value),
        None => Ok(default),
    }
}

/// The data directory from the highest layer that sets it (never empty), else `default`.
pub fn data_dir(value: Option<Sourced<PathBuf>>, default: &str) -> Result<PathBuf, ConfigError> {
    match value {
        Some(dir) if dir.value.as_os_str().is_empty() => Err(dir.invalid("must not be empty")),
        Some(dir) => Ok(dir.value),
        None => Ok(PathBuf::from(default)),
    }
}

/// The TLS file paths a config file gives, each with its origin and anchored at the file's directory.
#[derive(Debug, Default)]
pub struct FileTlsPaths {
    /// `[tls] cert`, or the older `tls_cert`.
    pub cert: Option<Sourced<PathBuf>>,
    /// `[tls] key`, or the older `tls_key`.
    pub key: Option<Sourced<PathBuf>>,
    /// `[tls] client_ca`, or the older `tls_client_ca`.
    pub client_ca: Option<Sourced<PathBuf>>,
}

/// Reads the TLS paths of a config file from its `[tls]` table (`table`: cert, key, client CA) or
/// from their older flat names (`flat`, same order); one path given under both names is an error.
pub fn file_tls_paths(
    origin: &FileOrigin,
    table: [Option<PathBuf>; 3],
    flat: [Option<PathBuf>; 3],
) -> Result<FileTlsPaths, ConfigError> {
    let anchor = |path: Option<PathBuf>| path.map(|path| origin.anchor(path));
    let [cert, key, client_ca] = table;
    let [flat_cert, flat_key, flat_client_ca] = flat;
    Ok(FileTlsPaths {
        cert: origin.aliased(("tls.cert", anchor(cert)), ("tls_cert", anchor(flat_cert)))?,
        key: origin.aliased(("tls.key", anchor(key)), ("tls_key", anchor(flat_key)))?,
        client_ca: origin.aliased(("tls.client_ca", anchor(client_ca)), ("tls_client_ca", anchor(flat_client_ca)))?,
    })
}

/// A certificate file and its key file, each with its origin.
pub type TlsPair = (Sourced<PathBuf>, Sourced<PathBuf>);

/// A certificate and its key, which must be given together; `None` when neither is.
pub fn tls_pair(cert: Option<Sourced<PathBuf>>, key: Option<Sourced<PathBuf>>) -> Result<Option<TlsPair>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(cert), None) => Err(ConfigError::Conflict(format!(
            "{} is set but no TLS key is: give the certificate and its key together (--tls-cert and --tls-key)",
            cert.origin
        ))),
        (None, Some(key)) => Err(ConfigError::Conflict(format!(
            "{} is set but no TLS certificate is: give the certificate and its key together (--tls-cert and \
             --tls-key)",
            key.origin
        ))),
    }
}

/// The log filter (checked by [`check_filter`]) and format, each from its highest layer.
pub fn log(
    filter: Option<Sourced<String>>,
    format: Option<Sourced<LogFormat>>,
    default_filter: &str,
) -> Result<LogSettings, ConfigError> {
    let filter = match filter {
        Some(filter) => filter.parse(|text| check_filter(text).map(|()| text.clone()))?.value,
        None => default_filter.to_owned(),
    };
    Ok(LogSettings { filter, format: format.map(|format| format.value).unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Origin;

    fn from_env<T>(name: &'static str, value: T) -> Option<Sourced<T>> {
        Some(Sourced { value, origin: Origin::Env(name) })
    }

    #[test]
    fn listen_addresses() {
        let default: SocketAddr = "127.0.0.1:7899".parse().unwrap();
        assert_eq!(listen(None, default).unwrap(), default);
        assert_eq!(listen(from_env("L", " [::]:1 ".into()), default).unwrap(), "[::]:1".parse().unwrap());
        assert_eq!(
            listen(from_env("TUFA_SIGNER_LISTEN", "localhost:1".into()), default).unwrap_err().to_string(),
            "invalid TUFA_SIGNER_LISTEN: \"localhost:1\" is not ADDR:PORT; use e.g. 127.0.0.1:7899, 0.0.0.0:7899 \
             or [::]:7899"
        );
    }

    #[test]
    fn data_dirs() {
        assert_eq!(data_dir(None, "./d").unwrap(), PathBuf::from("./d"));
        assert_eq!(data_dir(from_env("D", PathBuf::from("/x")), "./d").unwrap(), PathBuf::from("/x"));
        assert_eq!(
            data_dir(from_env("D", PathBuf::new()), "./d").unwrap_err().to_string(),
            "invalid D: must not be empty"
        );
    }

    #[test]
    fn tls_pairs_come_together() {
        assert_eq!(tls_pair(None, None).unwrap(), None);
        let cert = from_env("TUFA_TLS_CERT", PathBuf::from("c"));
        let key = Some(Sourced { value: PathBuf::from("k"), origin: Origin::Flag("--tls-key") });
        assert_eq!(
            tls_pair(cert.clone(), None).unwrap_err().to_string(),
            "TUFA_TLS_CERT is set but no TLS key is: give the certificate and its key together (--tls-cert and \
             --tls-key)"
        );
        assert_eq!(
            tls_pair(None, key.clone()).unwrap_err().to_string(),
            "--tls-key is set but no TLS certificate is: give the certificate and its key together (--tls-cert \
             and --tls-key)"
        );
        let (cert, key) = tls_pair(cert, key).unwrap().unwrap();
        assert_eq!((cert.value, key.value), (PathBuf::from("c"), PathBuf::from("k")));
    }

    #[test]
    fn log_settings() {
        let settings = log(None, None, "info").unwrap();
        assert_eq!(settings, LogSettings { filter: "info".into(), format: LogFormat::Text });
        let flag = Some(Sourced { value: "verbose".to_owned(), origin: Origin::Flag("--log-level") });
        let error = log(flag, None, "info").unwrap_err().to_string();
        assert!(error.starts_with("invalid --log-level: \"verbose\" is not a log level"), "{error}");
        let settings = log(from_env("TUFA_LOG", "debug".into()), from_env("F", LogFormat::Json), "info").unwrap();
        assert_eq!(settings, LogSettings { filter: "debug".into(), format: LogFormat::Json });
    }
}
