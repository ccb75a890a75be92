//! Layered settings: each value is taken from the command line, else the environment, else the
//! TOML file, else a default, and keeps its [`Origin`] so that an error names where the bad value
//! was written (`--listen`, `TUFA_LISTEN` or a key in a named config file).
//!
//! The environment is read through a lookup function, never from the process directly, so that
//! tests can supply one without `std::env::set_var` (which is `unsafe` in edition 2024).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Why a configuration cannot be used. Every message names the flag, variable or file key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad command line, or `--help` / `--version`: call [`clap::Error::exit`] on it, which prints
    /// and exits with clap's status (0 for help and version, 2 for usage errors).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {reason}", path = path.display())]
    ReadFile {
        /// The file named by `--config` or its variable.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config file is not valid TOML, has unknown keys or wrongly typed values. The offending
    /// line is not quoted, because it might hold a password.
    #[error("invalid config file {path}: {reason}", path = path.display())]
    ParseFile {
        /// The file named by `--config` or its variable.
        path: PathBuf,
        /// Line, column and parser message.
        reason: String,
    },
    /// One setting has a bad value.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// Where the value came from, as [`Origin::describe`] puts it.
        setting: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// Settings that cannot be combined, or one setting given twice under two names.
    #[error("{0}")]
    Conflict(String),
}

/// The names of one setting: its flag, its variable (plus older variable names still read) and
/// its key in the TOML file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The long flag, e.g. `--listen`.
    pub flag: &'static str,
    /// The environment variable, e.g. `TUFA_LISTEN`.
    pub env: &'static str,
    /// Older variable names that still work; setting one of them and [`Setting::env`] to different
    /// values is an error.
    pub env_aliases: &'static [&'static str],
    /// The key in the TOML file, dotted for a key inside a table (`tls.cert`).
    pub key: &'static str,
}

impl Setting {
    /// A setting without variable aliases.
    pub const fn new(flag: &'static str, env: &'static str, key: &'static str) -> Self {
        Self { flag, env, env_aliases: &[], key }
    }

    /// The same setting, also read from the variables `aliases`.
    pub const fn with_env_aliases(self, aliases: &'static [&'static str]) -> Self {
        Self { env_aliases: aliases, ..self }
    }

    /// Every variable this setting is read from, the canonical one first.
    pub fn env_names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.env).chain(self.env_aliases.iter().copied())
    }

    /// Wraps a value parsed from this setting's flag.
    pub fn from_flag<T>(&self, value: Option<T>) -> Option<Sourced<T>> {
        value.map(|value| Sourced { value, origin: Origin::Flag(self.flag) })
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// A key in the TOML file at `path`.
    File {
        /// The config file.
        path: PathBuf,
        /// The key as written in the file (dotted inside a table).
        key: &'static str,
    },
    /// The built-in default of the named key.
    Default(&'static str),
}

impl Origin {
    /// How error messages name the origin: `--listen`, `TUFA_LISTEN`,
    /// ``key `listen` in config file /etc/tufa.toml`` or ``default listen``.
    pub fn describe(&self) -> String {
        match self {
            Self::Flag(flag) => (*flag).to_owned(),
            Self::Env(name) => (*name).to_owned(),
            Self::File { path, key } => format!("key `{key}` in config file {}", path.display()),
            Self::Default(key) => format!("default {key}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value as given.
    pub value: T,
    /// Its origin.
    pub origin: Origin,
}

impl<T> Sourced<T> {
    /// An error saying this value is invalid, naming its origin.
    pub fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { setting: self.origin.describe(), reason: reason.into() }
    }

    /// Converts the value, keeping the origin; a failure becomes [`Sourced::invalid`].
    pub fn parse<U>(self, parse: impl FnOnce(&T) -> Result<U, String>) -> Result<Sourced<U>, ConfigError> {
        match parse(&self.value) {
            Ok(value) => Ok(Sourced { value, origin: self.origin }),
            Err(reason) => Err(self.invalid(reason)),
        }
    }
}

/// The highest layer that sets a value: pass the flag, environment and file candidates in that order.
pub fn first<T>(layers: [Option<Sourced<T>>; 3]) -> Option<Sourced<T>> {
    layers.into_iter().flatten().next()
}

/// The process environment (or a test's), with empty variables counted as unset, as clap does.
pub struct Environment<'a> {
    lookup: &'a dyn Fn(&str) -> Option<OsString>,
}

impl<'a> Environment<'a> {
    /// Reads variables through `lookup`.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<OsString>) -> Self {
        Self { lookup }
    }

    /// The raw value of one variable, `None` when unset or empty.
    pub fn var(&self, name: &str) -> Option<OsString> {
        (self.lookup)(name).filter(|value| !value.is_empty())
    }

    /// The setting's value from its variable or one of its aliases. Two of them set to different
    /// values is an error naming both.
    pub fn raw(&self, setting: Setting) -> Result<Option<Sourced<OsString>>, ConfigError> {
        let mut found: Option<Sourced<OsString>> = None;
        for name in setting.env_names() {
            let Some(value) = self.var(name) else { continue };
            match &found {
                Some(earlier) if earlier.value != value => {
                    return Err(ConfigError::Conflict(format!(
                        "both {} and {name} are set, to different values; {name} is an older name for {}, \
                         set only {}",
                        earlier.origin, setting.env, setting.env
                    )));
                }
                Some(_) => {}
                None => found = Some(Sourced { value, origin: Origin::Env(name) }),
            }
        }
        Ok(found)
    }

    /// The setting's value as text; a value that is not UTF-8 is an error.
    pub fn text(&self, setting: Setting) -> Result<Option<Sourced<String>>, ConfigError> {
        self.raw(setting)?
            .map(|raw| {
                let origin = raw.origin;
                match raw.value.into_string() {
                    Ok(value) => Ok(Sourced { value, origin }),
                    Err(_) => {
                        Err(ConfigError::Invalid { setting: origin.describe(), reason: "not valid UTF-8".into() })
                    }
                }
            })
            .transpose()
    }

    /// The setting's value as a secret string that is zeroized on drop.
    pub fn secret(&self, setting: Setting) -> Result<Option<Sourced<Zeroizing<String>>>, ConfigError> {
        Ok(self.text(setting)?.map(|text| Sourced { value: Zeroizing::new(text.value), origin: text.origin }))
    }

    /// The setting's value as a path.
    pub fn path(&self, setting: Setting) -> Result<Option<Sourced<PathBuf>>, ConfigError> {
        Ok(self.raw(setting)?.map(|raw| Sourced { value: PathBuf::from(raw.value), origin: raw.origin }))
    }

    /// The setting's value as a comma-separated list; blank items are dropped.
    pub fn list(&self, setting: Setting) -> Result<Option<Sourced<Vec<String>>>, ConfigError> {
        Ok(self.text(setting)?.map(|text| Sourced {
            value: text.value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect(),
            origin: text.origin,
        }))
    }

    /// The setting's value converted by `parse`; a failure names the variable.
    pub fn parsed<T>(
        &self,
        setting: Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<Sourced<T>>, ConfigError> {
        self.text(setting)?.map(|text| text.parse(|value| parse(value))).transpose()
    }
}

/// The config file that was read, for tagging its values with their origin and anchoring its
/// relative paths at its directory.
#[derive(Clone, Debug, Default)]
pub struct FileOrigin {
    path: Option<PathBuf>,
}

impl FileOrigin {
    /// Values from the file at `path`; `None` when no file was given (every value is then absent).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }

    /// The file, if one was read.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The origin of `key` in this file (or its default when no file was read).
    pub fn origin(&self, key: &'static str) -> Origin {
        match &self.path {
            Some(path) => Origin::File { path: path.clone(), key },
            None => Origin::Default(key),
        }
    }

    /// Tags the value of the setting's key.
    pub fn value<T>(&self, setting: Setting, value: Option<T>) -> Option<Sourced<T>> {
        self.keyed(setting.key, value)
    }

    /// Tags the value of `key`.
    pub fn keyed<T>(&self, key: &'static str, value: Option<T>) -> Option<Sourced<T>> {
        value.map(|value| Sourced { value, origin: self.origin(key) })
    }

    /// Resolves a relative path against the file's directory. An empty path stays empty so that
    /// validation reports it instead of silently meaning the directory.
    pub fn anchor(&self, path: PathBuf) -> PathBuf {
        let base = self.path.as_deref().and_then(Path::parent);
        match base {
            Some(base) if path.is_relative() && !path.as_os_str().is_empty() => base.join(path),
            _ => path,
        }
    }

    /// Tags and anchors the path of the setting's key.
    pub fn path_value(&self, setting: Setting, value: Option<PathBuf>) -> Option<Sourced<PathBuf>> {
        self.value(setting, value.map(|path| self.anchor(path)))
    }

    /// One setting that the file may hold under its current key or under an older one (`alias`).
    /// Both present is an error naming both, even when the values agree.
    pub fn aliased<T>(
        &self,
        current: (&'static str, Option<T>),
        alias: (&'static str, Option<T>),
    ) -> Result<Option<Sourced<T>>, ConfigError> {
        match (current.1, alias.1) {
            (Some(_), Some(_)) => Err(ConfigError::Conflict(format!(
                "config file {}: both `{}` and `{}` are set; `{}` is an older name for `{}`, keep only `{}`",
                self.path.as_deref().map(Path::display).map(|path| path.to_string()).unwrap_or_default(),
                current.0,
                alias.0,
                alias.0,
                current.0,
                current.0
            ))),
            (Some(value), None) => Ok(self.keyed(current.0, Some(value))),
            (None, Some(value)) => Ok(self.keyed(alias.0, Some(value))),
            (None, None) => Ok(None),
        }
    }
}

/// Reads and parses a TOML config file of at most `max_bytes`. Parse errors give the line and
/// column and the parser's message but never quote the line (it might hold a password).
pub fn read_toml<T: DeserializeOwned>(path: &Path, max_bytes: u64) -> Result<T, ConfigError> {
    let read_error = |reason: String| ConfigError::ReadFile { path: path.to_path_buf(), reason };
    let text = crate::files::read_limited_text("config file", path, max_bytes).map_err(|error| {
        read_error(match error {
            crate::files::FileError::TooLarge { max_bytes, .. } => format!("larger than {max_bytes} bytes"),
            crate::files::FileError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        })
    })?;
    parse_toml(&text).map_err(|reason| ConfigError::ParseFile { path: path.to_path_buf(), reason })
}

/// Parses TOML text; the error gives the position and message without quoting the input.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|error| {
        let position = match error.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or_default();
                let line = before.matches('\n').count() + 1;
                let column = before.rfind('\n').map_or(before.len(), |newline| before.len() - newline - 1) + 1;
                format!("line {line}, column {column}: ")
            }
            None => String::new(),
        };
        format!("{position}{}", error.message().trim_end())
    })
}

/// Parses `args` into the binary's clap type `C` with clap's own environment reading switched
/// off: the `env` attributes only document each flag's variable in `--help`, and the variables
/// are read by the layering (with their origin), never by clap. Help and version are rendered
/// from the full command, so that they list each flag's variable.
pub fn parse_flags<C: clap::Parser>(args: &[std::ffi::OsString]) -> Result<C, clap::Error> {
    use clap::error::ErrorKind;
    let command = C::command().mut_args(|arg| arg.env(None));
    match command.try_get_matches_from(args) {
        Ok(matches) => C::from_arg_matches(&matches),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            Err(C::command().try_get_matches_from(args).err().unwrap_or(error))
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LISTEN: Setting = Setting::new("--listen", "TUFA_LISTEN", "listen");
    const CLIENT_CA: Setting = Setting::new("--tls-client-ca", "TUFA_SIGNER_TLS_CLIENT_CA", "tls.client_ca")
        .with_env_aliases(&["TUFA_SIGNER_CLIENT_CA"]);

    fn with_env<R>(pairs: &[(&str, &str)], body: impl FnOnce(&Environment<'_>) -> R) -> R {
        let map: HashMap<String, OsString> =
            pairs.iter().map(|(name, value)| ((*name).to_owned(), OsString::from(value))).collect();
        let lookup = move |name: &str| map.get(name).cloned();
        body(&Environment::new(&lookup))
    }

    #[test]
    fn each_origin_is_named_in_errors() {
        let flag = LISTEN.from_flag(Some("x".to_owned())).unwrap();
        assert_eq!(flag.invalid("bad").to_string(), "invalid --listen: bad");
        let env = with_env(&[("TUFA_LISTEN", "x")], |env| env.text(LISTEN).unwrap().unwrap());
        assert_eq!(env.invalid("bad").to_string(), "invalid TUFA_LISTEN: bad");
        let file = FileOrigin::new(Some(PathBuf::from("/etc/tufa.toml")));
        let value = file.value(LISTEN, Some("x")).unwrap();
        assert_eq!(value.invalid("bad").to_string(), "invalid key `listen` in config file /etc/tufa.toml: bad");
        let default = FileOrigin::new(None).value(LISTEN, Some("x")).unwrap();
        assert_eq!(default.invalid("bad").to_string(), "invalid default listen: bad");
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = FileOrigin::new(Some(PathBuf::from("/f.toml")));
        let pick = |flag: Option<u8>, env: Option<u8>, from_file: Option<u8>| {
            first([
                LISTEN.from_flag(flag),
                env.map(|value| Sourced { value, origin: Origin::Env(LISTEN.env) }),
                file.value(LISTEN, from_file),
            ])
        };
        assert_eq!(pick(Some(1), Some(2), Some(3)).unwrap().value, 1);
        assert_eq!(pick(None, Some(2), Some(3)).unwrap().origin, Origin::Env("TUFA_LISTEN"));
        assert_eq!(
            pick(None, None, Some(3)).unwrap().origin,
            Origin::File { path: PathBuf::from("/f.toml"), key: "listen" }
        );
        assert_eq!(pick(None, None, None), None);
    }

    #[test]
    fn env_aliases_are_read_and_must_agree() {
        with_env(&[("TUFA_SIGNER_CLIENT_CA", "/old")], |env| {
            let value = env.path(CLIENT_CA).unwrap().unwrap();
            assert_eq!(value.value, PathBuf::from("/old"));
            assert_eq!(value.origin, Origin::Env("TUFA_SIGNER_CLIENT_CA"));
        });
        with_env(&[("TUFA_SIGNER_CLIENT_CA", "/same"), ("TUFA_SIGNER_TLS_CLIENT_CA", "/same")], |env| {
            assert_eq!(env.path(CLIENT_CA).unwrap().unwrap().origin, Origin::Env("TUFA_SIGNER_TLS_CLIENT_CA"));
        });
        with_env(&[("TUFA_SIGNER_CLIENT_CA", "/old"), ("TUFA_SIGNER_TLS_CLIENT_CA", "/new")], |env| {
            assert_eq!(
                env.path(CLIENT_CA).unwrap_err().to_string(),
                "both TUFA_SIGNER_TLS_CLIENT_CA and TUFA_SIGNER_CLIENT_CA are set, to different values; \
                 TUFA_SIGNER_CLIENT_CA is an older name for TUFA_SIGNER_TLS_CLIENT_CA, set only TUFA_SIGNER_TLS_CLIENT_CA"
            );
        });
        with_env(&[("TUFA_LISTEN", "")], |env| assert_eq!(env.text(LISTEN).unwrap(), None));
    }

    #[test]
    fn file_aliases_conflict_when_both_are_given() {
        let file = FileOrigin::new(Some(PathBuf::from("/f.toml")));
        let error = file.aliased(("log_level", Some("info")), ("log", Some("info"))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "config file /f.toml: both `log_level` and `log` are set; `log` is an older name for `log_level`, \
             keep only `log_level`"
        );
        let old = file.aliased(("log_level", None), ("log", Some("debug"))).unwrap().unwrap();
        assert_eq!(old.origin, Origin::File { path: PathBuf::from("/f.toml"), key: "log" });
        assert_eq!(file.aliased::<&str>(("log_level", None), ("log", None)).unwrap(), None);
    }

    #[test]
    fn file_paths_are_anchored_at_the_file() {
        let file = FileOrigin::new(Some(PathBuf::from("/etc/tufa/tufa.toml")));
        assert_eq!(file.anchor(PathBuf::from("data")), PathBuf::from("/etc/tufa/data"));
        assert_eq!(file.anchor(PathBuf::from("/abs")), PathBuf::from("/abs"));
        assert_eq!(file.anchor(PathBuf::new()), PathBuf::new());
        assert_eq!(FileOrigin::new(None).anchor(PathBuf::from("data")), PathBuf::from("data"));
    }

    #[test]
    fn toml_errors_give_a_position_without_the_line() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            listen: Option<String>,
        }
        assert_eq!(parse_toml::<File>("listen = \"a\"").unwrap().listen.as_deref(), Some("a"));
        let error = parse_toml::<File>("listen = \"a\"\npassword = hunter2\n").unwrap_err();
        assert!(error.starts_with("line 2, column "), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
