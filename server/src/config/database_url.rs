//! The server's database URL: a checked URL whose password never reaches a log. (To be replaced by
//! `tufa_store::DatabaseUrl`, the one parser both binaries use, once it lands.)

use std::fmt;
use std::path::Path;

use tufa_common::layer::ConfigError;
use zeroize::Zeroizing;

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
    pub(super) fn parse(url: Zeroizing<String>) -> Result<Self, String> {
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
pub(crate) fn redact_url(url: &str) -> String {
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

/// `sqlite://<data_dir>/tufa.db`, refused for directory names that would be misread inside a URL.
pub(super) fn default_database_url(data_dir: &Path) -> Result<DatabaseUrl, ConfigError> {
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
