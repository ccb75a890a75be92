//! Times as Notary writes them: RFC 3339 with Go's "nano" precision (trailing zeros trimmed).

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Parses any RFC 3339 time (fractional seconds and offsets allowed) into UTC.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|time| time.with_timezone(&Utc))
}

/// Formats a UTC time the way Go's `time.RFC3339Nano` does: `2026-11-22T06:05:59.48740678Z`.
pub fn format(time: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    // Leap seconds are folded into the nanosecond field by chrono; cap them like Go would.
    let nanos = time.nanosecond().min(999_999_999);
    if nanos > 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_go_nano_form() {
        for text in ["2029-11-21T06:05:59.48740678Z", "2026-12-06T06:05:59Z", "2026-12-06T06:05:59.1Z"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        let offset = parse("2116-07-03T17:56:36.027379879-05:00").unwrap();
        assert_eq!(format(offset), "2116-07-03T22:56:36.027379879Z");
        assert_eq!(parse("2026-12-06 06:05:59"), None);
        assert_eq!(parse("yesterday"), None);
    }
}
