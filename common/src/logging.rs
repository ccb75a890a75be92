//! Log settings and start-up of the `tracing` subscriber, the same for both binaries: a filter
//! checked before anything else happens, text or JSON lines on stderr.

use std::fmt;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` (any case).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown format {text:?}; use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The validated log settings of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// A `tracing` filter that [`check_filter`] accepted.
    pub filter: String,
    /// Line format.
    pub format: LogFormat,
}

/// The level names a directive may end in.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter: comma-separated directives, each a level (`info`) or `TARGET=LEVEL`
/// (`tufa_server=debug`). `EnvFilter` alone would read a bare unknown word such as `verbose` as a
/// target name and silently switch every other log line off, so each directive must end in a
/// level name here.
pub fn check_filter(filter: &str) -> Result<(), String> {
    let expected = "use a level (trace, debug, info, warn, error, off) or directives such as \
                    \"info,tufa_store=debug\"";
    if filter.trim().is_empty() {
        return Err(format!("the log filter is empty; {expected}"));
    }
    for directive in filter.split(',').map(str::trim).filter(|directive| !directive.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            _ => directive,
        };
        if !LEVELS.iter().any(|name| name.eq_ignore_ascii_case(level.trim())) {
            return Err(format!("{directive:?} is not a log level or TARGET=LEVEL; {expected}"));
        }
    }
    EnvFilter::try_new(filter).map(|_| ()).map_err(|error| format!("{filter:?}: {error}; {expected}"))
}

/// Installs the process's log subscriber on stderr. In JSON format every line, including
/// start-up and fatal errors logged through `tracing`, is one JSON object.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    check_filter(&settings.filter)?;
    let filter = EnvFilter::try_new(&settings.filter).map_err(|error| error.to_string())?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    result.map_err(|error| format!("cannot install the log subscriber: {error}"))
}

/// Reports a fatal error once: as a `tracing` error event in JSON format (so that every line stays
/// JSON), or as a plain `program: error` line on stderr in text format.
pub fn report_fatal(program: &str, format: LogFormat, error: &dyn fmt::Display) {
    match format {
        LogFormat::Json => tracing::error!(error = %error, "{program} stopped"),
        LogFormat::Text => eprintln!("{program}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted() {
        for filter in ["info", "WARN", "off", "info,tufa_server=debug", "tufa_signer::store=trace", "debug,h2=warn"] {
            assert_eq!(check_filter(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn words_that_are_not_levels_are_refused() {
        let expected = "use a level (trace, debug, info, warn, error, off) or directives such as \
                        \"info,tufa_store=debug\"";
        assert_eq!(check_filter("verbose"), Err(format!("\"verbose\" is not a log level or TARGET=LEVEL; {expected}")));
        assert_eq!(
            check_filter("info,tufa_server=loud"),
            Err(format!("\"tufa_server=loud\" is not a log level or TARGET=LEVEL; {expected}"))
        );
        assert_eq!(
            check_filter("tufa_server"),
            Err(format!("\"tufa_server\" is not a log level or TARGET=LEVEL; {expected}"))
        );
        assert_eq!(check_filter("=info"), Err(format!("\"=info\" is not a log level or TARGET=LEVEL; {expected}")));
        assert_eq!(check_filter(" "), Err(format!("the log filter is empty; {expected}")));
    }

    #[test]
    fn formats_parse() {
        assert_eq!(LogFormat::parse("JSON"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse("xml"), Err("unknown format \"xml\"; use text or json".to_owned()));
    }
}
