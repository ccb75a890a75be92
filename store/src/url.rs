//! Database URLs: the one parser both binaries use, and the one function that redacts a URL
//! for logs and error messages.
//!
//! Accepted forms, as users of sqlx write them:
//!
//! * `sqlite:/abs/path`, `sqlite:///abs/path`, `sqlite:relative/path`, `sqlite://relative/path`:
//!   a database file, created when missing. The path is taken literally (no percent-decoding).
//!   The only query parameter accepted is `mode=rwc`, which is what Tufa does anyway.
//! * `sqlite::memory:` (or `sqlite://:memory:`): one in-memory database for the process's store.
//! * `postgres://…` and `postgresql://…`: checked with sqlx's own parser.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use sqlx::postgres::PgConnectOptions;
use zeroize::Zeroizing;

/// The accepted forms, named in every "unsupported" error.
const ACCEPTED_FORMS: &str = "use sqlite:PATH, sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH, sqlite::memory:, \
     postgres://USER@HOST/DATABASE or postgresql://USER@HOST/DATABASE";

/// Which database a [`DatabaseUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite: a file, or an in-memory database.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend's name: `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// A database file, created when missing.
    File(PathBuf),
    /// An in-memory database that lives as long as the store that opened it.
    Memory,
}

/// Why a database URL was refused. The message never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL is empty or only white space.
    #[error("the database URL is empty; {ACCEPTED_FORMS}")]
    Empty,
    /// The scheme is not one of the accepted ones.
    #[error("unsupported database URL {url}: {ACCEPTED_FORMS}")]
    Unsupported {
        /// The URL, redacted.
        url: String,
    },
    /// A `sqlite:` URL without a file path.
    #[error("the SQLite URL {url} names no file: use e.g. sqlite:///var/lib/tufa/tufa.db or sqlite::memory:")]
    NoSqlitePath {
        /// The URL, redacted.
        url: String,
    },
    /// A `sqlite:` URL whose path ends in `/`, so it names a directory.
    #[error("the SQLite URL {url} names a directory, not a database file")]
    SqliteDirectory {
        /// The URL, redacted.
        url: String,
    },
    /// A `sqlite:` URL with a query parameter other than `mode=rwc`.
    #[error(
        "the SQLite URL {url} has the unsupported query parameter {parameter:?}: Tufa always opens the \
         database read-write and creates it when missing (mode=rwc), and takes no other parameters"
    )]
    SqliteParameter {
        /// The URL, redacted.
        url: String,
        /// The refused parameter, as written (`key` or `key=value`).
        parameter: String,
    },
    /// A `postgres://` URL that sqlx cannot use.
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    Postgres {
        /// The URL, redacted.
        url: String,
        /// sqlx's reason, with any password removed.
        reason: String,
    },
}

/// A checked database URL. It may carry a password, so it is zeroized on drop and both `Debug`
/// and `Display` show the redacted form; [`DatabaseUrl::expose`] gives the real text for
/// connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    text: Zeroizing<String>,
    backend: Backend,
    sqlite: Option<SqliteLocation>,
}

impl DatabaseUrl {
    /// Checks `text` and returns the URL, or an error naming the accepted forms.
    pub fn parse(text: &str) -> Result<DatabaseUrl, UrlError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(UrlError::Empty);
        }
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            return parse_postgres(trimmed);
        }
        if let Some(rest) = trimmed.strip_prefix("sqlite:") {
            let location = parse_sqlite(trimmed, rest.strip_prefix("//").unwrap_or(rest))?;
            return Ok(DatabaseUrl {
                text: Zeroizing::new(trimmed.to_owned()),
                backend: Backend::Sqlite,
                sqlite: Some(location),
            });
        }
        Err(UrlError::Unsupported { url: redact_url(trimmed) })
    }

    /// The URL of the SQLite database file at `path` (the data directory's `tufa.db` default).
    /// The path is kept exactly, even where it is not valid UTF-8.
    pub fn sqlite_file(path: &Path) -> DatabaseUrl {
        DatabaseUrl {
            text: Zeroizing::new(format!("sqlite://{}", path.display())),
            backend: Backend::Sqlite,
            sqlite: Some(SqliteLocation::File(path.to_path_buf())),
        }
    }

    /// The backend the URL selects.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The full URL including any password. Hand it to the database driver; never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The URL with its password replaced by `***` and its query string removed; safe to log.
    pub fn redacted(&self) -> String {
        redact_url(&self.text)
    }

    /// Where the SQLite database is; `None` for PostgreSQL.
    pub fn sqlite_location(&self) -> Option<&SqliteLocation> {
        self.sqlite.as_ref()
    }

    /// `message` with every secret of this URL (the user-info password and the values of
    /// `password`/`sslpassword` query parameters, as written and percent-decoded) replaced by
    /// `***`. Database drivers sometimes quote the URL they failed on.
    pub fn scrub(&self, message: &str) -> String {
        let mut scrubbed = message.to_owned();
        for secret in secrets(&self.text) {
            if !secret.is_empty() {
                scrubbed = scrubbed.replace(secret.as_str(), "***");
            }
        }
        scrubbed
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_postgres(text: &str) -> Result<DatabaseUrl, UrlError> {
    let url = DatabaseUrl { text: Zeroizing::new(text.to_owned()), backend: Backend::Postgres, sqlite: None };
    let after_scheme = text.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.is_empty() {
        return Err(UrlError::Postgres {
            url: url.redacted(),
            reason: "no host or database: use e.g. postgres://tufa@db.example/tufa".to_owned(),
        });
    }
    match PgConnectOptions::from_str(text) {
        Ok(_) => Ok(url),
        Err(error) => Err(UrlError::Postgres { url: url.redacted(), reason: url.scrub(&error.to_string()) }),
    }
}

/// Parses what follows `sqlite:` (and an optional `//`); `whole` is the full URL for errors.
fn parse_sqlite(whole: &str, rest: &str) -> Result<SqliteLocation, UrlError> {
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query {
        for parameter in query.split('&').filter(|parameter| !parameter.is_empty()) {
            if parameter != "mode=rwc" {
                return Err(UrlError::SqliteParameter { url: redact_url(whole), parameter: parameter.to_owned() });
            }
        }
    }
    if path == ":memory:" {
        return Ok(SqliteLocation::Memory);
    }
    if path.is_empty() {
        return Err(UrlError::NoSqlitePath { url: redact_url(whole) });
    }
    if path.ends_with('/') {
        return Err(UrlError::SqliteDirectory { url: redact_url(whole) });
    }
    Ok(SqliteLocation::File(PathBuf::from(path)))
}

/// The secrets a URL may carry: the user-info password and `password`/`sslpassword` query
/// values, each as written and percent-decoded.
fn secrets(text: &str) -> Vec<Zeroizing<String>> {
    let mut found = Vec::new();
    if let Some((_, rest)) = text.split_once("://")
        && let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(Zeroizing::new(password.to_owned()));
    }
    if let Some((_, query)) = text.split_once('?') {
        for (key, value) in query.split(['&', '#']).filter_map(|pair| pair.split_once('=')) {
            if key == "password" || key == "sslpassword" {
                found.push(Zeroizing::new(value.to_owned()));
            }
        }
    }
    let decoded: Vec<Zeroizing<String>> =
        found.iter().filter_map(|secret| percent_decode(secret).filter(|decoded| **decoded != **secret)).collect();
    found.extend(decoded);
    found
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. Other characters pass through.
fn percent_decode(text: &str) -> Option<Zeroizing<String>> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = match (byte, bytes.get(index + 1), bytes.get(index + 2)) {
            (b'%', Some(&high), Some(&low)) => hex_value(high).zip(hex_value(low)).map(|(high, low)| high * 16 + low),
            _ => None,
        };
        match escaped {
            Some(value) => {
                out.push(value);
                index += 3;
            }
            None => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out.to_vec()).ok().map(Zeroizing::new)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|value| u8::try_from(value).ok())
}

/// `text` made safe to log: a user-info password becomes `***`, the query string and fragment
/// (which may carry `password=`) are removed, and control characters are dropped. Where it is
/// unclear which part is the user information, all of it is replaced. This is the one redaction
/// function; both binaries use it for every URL they print.
pub fn redact_url(text: &str) -> String {
    let clean: String = text.chars().filter(|character| !character.is_control()).collect();
    let (scheme, separator, rest) = match clean.split_once("://") {
        Some((scheme, rest)) => (scheme, "://", rest),
        None => match clean.split_once(':') {
            Some((scheme, rest)) => (scheme, ":", rest),
            None => ("", "", clean.as_str()),
        },
    };
    // A password may contain '/', '?' or '#' written raw, so the user information runs to the
    // last '@' of the whole text.
    let (user, host_and_path) = match rest.rsplit_once('@') {
        Some((userinfo, host_and_path)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _password)| user);
            let has_password = userinfo.contains(':');
            // Anything that is not a plain user name might be a query holding a secret.
            let plain = !user.contains(['/', '?', '#', '&', '=']);
            let shown = match (plain, has_password) {
                (true, true) => format!("{user}:***@"),
                (true, false) => format!("{user}@"),
                (false, _) => "***@".to_owned(),
            };
            (shown, host_and_path)
        }
        None => (String::new(), rest),
    };
    let end = host_and_path.find(['?', '#']).unwrap_or(host_and_path.len());
    let host_and_path = host_and_path.get(..end).unwrap_or(host_and_path);
    format!("{scheme}{separator}{user}{host_and_path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Option<SqliteLocation> {
        Some(SqliteLocation::File(PathBuf::from(path)))
    }

    #[test]
    fn accepted_forms() {
        let cases = [
            ("sqlite:/var/lib/tufa/tufa.db", Backend::Sqlite, file("/var/lib/tufa/tufa.db")),
            ("sqlite:///var/lib/tufa/tufa.db", Backend::Sqlite, file("/var/lib/tufa/tufa.db")),
            ("sqlite:////var/lib/tufa/tufa.db", Backend::Sqlite, file("//var/lib/tufa/tufa.db")),
            ("sqlite://data/tufa.db", Backend::Sqlite, file("data/tufa.db")),
            ("sqlite:tufa.db", Backend::Sqlite, file("tufa.db")),
            ("sqlite://./tufa-data/tufa.db", Backend::Sqlite, file("./tufa-data/tufa.db")),
            ("sqlite://nested name.db", Backend::Sqlite, file("nested name.db")),
            ("sqlite://a%20b.db", Backend::Sqlite, file("a%20b.db")),
            ("sqlite://data/tufa.db?mode=rwc", Backend::Sqlite, file("data/tufa.db")),
            ("sqlite:tufa.db?", Backend::Sqlite, file("tufa.db")),
            ("sqlite::memory:", Backend::Sqlite, Some(SqliteLocation::Memory)),
            ("sqlite://:memory:", Backend::Sqlite, Some(SqliteLocation::Memory)),
            ("sqlite::memory:?mode=rwc", Backend::Sqlite, Some(SqliteLocation::Memory)),
            ("  sqlite:tufa.db\n", Backend::Sqlite, file("tufa.db")),
            ("postgres://tufa@db/tufa", Backend::Postgres, None),
            ("postgresql://tufa:pw@db:5432/tufa?sslmode=require", Backend::Postgres, None),
            ("postgres://localhost", Backend::Postgres, None),
            ("postgres://u:p%40ss@h/d", Backend::Postgres, None),
            ("postgres:///tufa?host=/run/postgresql", Backend::Postgres, None),
        ];
        for (text, backend, location) in cases {
            let url = DatabaseUrl::parse(text).unwrap_or_else(|error| panic!("{text:?} refused: {error}"));
            assert_eq!(url.backend(), backend, "{text}");
            assert_eq!(url.sqlite_location(), location.as_ref(), "{text}");
            assert_eq!(url.expose(), text.trim(), "{text}");
        }
    }

    #[test]
    fn refused_forms() {
        let forms = format!(": {ACCEPTED_FORMS}");
        let cases: [(&str, UrlError, String); 14] = [
            ("", UrlError::Empty, format!("the database URL is empty; {ACCEPTED_FORMS}")),
            (" \t", UrlError::Empty, format!("the database URL is empty; {ACCEPTED_FORMS}")),
            (
                "mysql://u:hunter2@db/x",
                UrlError::Unsupported { url: "mysql://u:***@db/x".into() },
                format!("unsupported database URL mysql://u:***@db/x{forms}"),
            ),
            (
                "nonsense",
                UrlError::Unsupported { url: "nonsense".into() },
                format!("unsupported database URL nonsense{forms}"),
            ),
            (
                "file:///x",
                UrlError::Unsupported { url: "file:///x".into() },
                format!("unsupported database URL file:///x{forms}"),
            ),
            (
                "postgres:/u:hunter2@db",
                UrlError::Unsupported { url: "postgres:***@db".into() },
                format!("unsupported database URL postgres:***@db{forms}"),
            ),
            (
                "SQLITE:tufa.db",
                UrlError::Unsupported { url: "SQLITE:tufa.db".into() },
                format!("unsupported database URL SQLITE:tufa.db{forms}"),
            ),
            (
                "sqlite:",
                UrlError::NoSqlitePath { url: "sqlite:".into() },
                "the SQLite URL sqlite: names no file: use e.g. sqlite:///var/lib/tufa/tufa.db or sqlite::memory:"
                    .into(),
            ),
            (
                "sqlite://",
                UrlError::NoSqlitePath { url: "sqlite://".into() },
                "the SQLite URL sqlite:// names no file: use e.g. sqlite:///var/lib/tufa/tufa.db or sqlite::memory:"
                    .into(),
            ),
            (
                "sqlite://?mode=rwc",
                UrlError::NoSqlitePath { url: "sqlite://".into() },
                "the SQLite URL sqlite:// names no file: use e.g. sqlite:///var/lib/tufa/tufa.db or sqlite::memory:"
                    .into(),
            ),
            (
                "sqlite:///var/lib/tufa/",
                UrlError::SqliteDirectory { url: "sqlite:///var/lib/tufa/".into() },
                "the SQLite URL sqlite:///var/lib/tufa/ names a directory, not a database file".into(),
            ),
            (
                "sqlite://x.db?mode=ro",
                UrlError::SqliteParameter { url: "sqlite://x.db".into(), parameter: "mode=ro".into() },
                "the SQLite URL sqlite://x.db has the unsupported query parameter \"mode=ro\": Tufa always opens \
                 the database read-write and creates it when missing (mode=rwc), and takes no other parameters"
                    .into(),
            ),
            (
                "sqlite://x.db?mode=rwc&cache=shared",
                UrlError::SqliteParameter { url: "sqlite://x.db".into(), parameter: "cache=shared".into() },
                "the SQLite URL sqlite://x.db has the unsupported query parameter \"cache=shared\": Tufa always \
                 opens the database read-write and creates it when missing (mode=rwc), and takes no other parameters"
                    .into(),
            ),
            (
                "postgres://",
                UrlError::Postgres {
                    url: "postgres://".into(),
                    reason: "no host or database: use e.g. postgres://tufa@db.example/tufa".into(),
                },
                "invalid PostgreSQL URL postgres://: no host or database: use e.g. postgres://tufa@db.example/tufa"
                    .into(),
            ),
        ];
        for (text, expected, message) in cases {
            let error = DatabaseUrl::parse(text).map(|url| url.redacted()).unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            assert_eq!(error.to_string(), message, "{text:?}");
        }
    }

    #[test]
    fn invalid_postgres_urls_never_show_the_password() {
        for text in ["postgres://u:hunter2@db:notaport/x", "postgres://u:hunter2@db/x?sslmode=sometimes"] {
            match DatabaseUrl::parse(text) {
                Err(UrlError::Postgres { url, reason }) => {
                    assert_eq!(url, text.split('?').next().unwrap().replace("hunter2", "***"), "{text}");
                    assert!(!reason.contains("hunter2"), "{text}: {reason}");
                    assert!(!reason.is_empty(), "{text}");
                }
                other => panic!("{text}: expected a PostgreSQL URL error, got {other:?}"),
            }
        }
    }

    #[test]
    fn redaction() {
        let cases = [
            ("postgres://u:p@h/d?password=x&sslmode=require", "postgres://u:***@h/d"),
            (
                "postgres://tufa:s3cr/e?t@db.example:5432/notary?sslmode=require&password=x",
                "postgres://tufa:***@db.example:5432/notary",
            ),
            ("postgres://tufa:hunter2@db:5432/tufa", "postgres://tufa:***@db:5432/tufa"),
            ("postgres://tufa:p@ss@db/tufa", "postgres://tufa:***@db/tufa"),
            ("postgresql://tufa@localhost/notary", "postgresql://tufa@localhost/notary"),
            ("postgres://localhost", "postgres://localhost"),
            ("postgres://db/tufa?user=u&password=hunter2&sslmode=require", "postgres://db/tufa"),
            ("postgres://db?sslpassword=hunter2#frag", "postgres://db"),
            // An '@' in the query: the user information cannot be told apart, so all of it goes.
            ("postgres://db/x?password=hunter2&user=a@b", "postgres://***@b"),
            ("postgres://db/x?password=hunter2&user=a:b@c", "postgres://***@c"),
            ("postgres://u:pw\n@db/x", "postgres://u:***@db/x"),
            ("postgres://db/x\r\nfake log line", "postgres://db/xfake log line"),
            ("mysql:u:hunter2@db", "mysql:u:***@db"),
            ("sqlite:///data/tufa.db", "sqlite:///data/tufa.db"),
            ("sqlite:///data/tufa.db?mode=rwc", "sqlite:///data/tufa.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("nonsense", "nonsense"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_url(text), expected, "{text:?}");
        }
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let url = DatabaseUrl::parse("postgres://tufa:hunter2@db/tufa?password=hunter3").unwrap();
        assert_eq!(format!("{url:?}"), "DatabaseUrl(\"postgres://tufa:***@db/tufa\")");
        assert_eq!(url.to_string(), "postgres://tufa:***@db/tufa");
        assert_eq!(url.redacted(), "postgres://tufa:***@db/tufa");
        assert_eq!(url.expose(), "postgres://tufa:hunter2@db/tufa?password=hunter3");
    }

    #[test]
    fn scrubbing_removes_every_form_of_the_password() {
        let url = DatabaseUrl::parse("postgres://tufa:p%40ss@db/tufa?sslpassword=k3y&password=other").unwrap();
        assert_eq!(
            url.scrub("auth failed for p%40ss (p@ss), key k3y, other"),
            "auth failed for *** (***), key ***, ***"
        );
        let plain = DatabaseUrl::parse("postgres://tufa@db/tufa").unwrap();
        assert_eq!(plain.scrub("nothing secret"), "nothing secret");
    }

    #[test]
    fn sqlite_file_keeps_the_path() {
        let url = DatabaseUrl::sqlite_file(Path::new("/srv/tufa data/tufa.db"));
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(url.expose(), "sqlite:///srv/tufa data/tufa.db");
        assert_eq!(url.sqlite_location(), file("/srv/tufa data/tufa.db").as_ref());
        let relative = DatabaseUrl::sqlite_file(Path::new("tufa-data/tufa.db"));
        assert_eq!(relative.expose(), "sqlite://tufa-data/tufa.db");
        assert_eq!(DatabaseUrl::parse(relative.expose()).unwrap(), relative);
    }

    #[test]
    fn backend_names() {
        assert_eq!(Backend::Sqlite.as_str(), "sqlite");
        assert_eq!(Backend::Postgres.to_string(), "postgres");
    }
}
