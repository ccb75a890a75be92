//! Durations written by people (`3s`, `15m`, `12h`, `90d`, `2w`), as token lifetimes and expiries take them.
//!
//! A duration is one whole number and one unit. A bare number is refused rather than read as seconds,
//! because `90` meant as days would silently become a minute and a half; zero is refused because no
//! setting here means "expire at once"; and anything over [`MAX_DURATION`] (100 years) is refused, so the
//! result can be added to any current date without overflowing a timestamp type.

use std::time::Duration;

/// The longest duration accepted: 100 years of 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Why a duration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("the duration is empty: write a number and a unit, such as 15m or 90d")]
    Empty,
    /// The text is a number without a unit.
    #[error("the duration {0:?} has no unit: add a unit: s, m, h, d, w")]
    MissingUnit(String),
    /// The text does not end in a known unit.
    #[error("the duration {0:?} has no known unit: end it with one of s, m, h, d, w")]
    UnknownUnit(String),
    /// The part before the unit is not a whole number.
    #[error("the duration {0:?} is not a whole number followed by one unit (s, m, h, d, w), such as 15m")]
    BadNumber(String),
    /// The duration is zero.
    #[error("the duration {0:?} is zero")]
    Zero(String),
    /// The duration is longer than [`MAX_DURATION`].
    #[error("the duration {0:?} is longer than 100 years")]
    TooLong(String),
}

/// Parses a duration such as `3s`, `15m`, `12h`, `90d` or `2w` (seconds, minutes, hours, days, weeks).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let owned = || text.to_owned();
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(DurationError::MissingUnit(owned()));
    }
    let Some(unit) = text.chars().last() else {
        return Err(DurationError::Empty);
    };
    let seconds_per_unit: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return Err(DurationError::UnknownUnit(owned())),
    };
    let number = text.get(..text.len() - unit.len_utf8()).unwrap_or_default();
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(DurationError::BadNumber(owned()));
    }
    // Only digits remain, so a parse failure means the number does not fit in 64 bits.
    let count: u64 = number.parse().map_err(|_| DurationError::TooLong(owned()))?;
    if count == 0 {
        return Err(DurationError::Zero(owned()));
    }
    let seconds = count.checked_mul(seconds_per_unit).ok_or_else(|| DurationError::TooLong(owned()))?;
    let duration = Duration::from_secs(seconds);
    if duration > MAX_DURATION {
        return Err(DurationError::TooLong(owned()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_table() {
        let owned = |text: &str| text.to_owned();
        let cases: Vec<(&str, Result<u64, DurationError>)> = vec![
            ("3s", Ok(3)),
            ("15m", Ok(900)),
            ("12h", Ok(43_200)),
            ("90d", Ok(7_776_000)),
            ("2w", Ok(1_209_600)),
            ("007m", Ok(420)),
            ("36500d", Ok(3_153_600_000)),
            ("", Err(DurationError::Empty)),
            ("90", Err(DurationError::MissingUnit(owned("90")))),
            ("0", Err(DurationError::MissingUnit(owned("0")))),
            ("5y", Err(DurationError::UnknownUnit(owned("5y")))),
            ("15M", Err(DurationError::UnknownUnit(owned("15M")))),
            ("15m ", Err(DurationError::UnknownUnit(owned("15m ")))),
            ("1ms", Err(DurationError::BadNumber(owned("1ms")))),
            ("1h30m", Err(DurationError::BadNumber(owned("1h30m")))),
            ("1.5h", Err(DurationError::BadNumber(owned("1.5h")))),
            ("-5m", Err(DurationError::BadNumber(owned("-5m")))),
            ("+5m", Err(DurationError::BadNumber(owned("+5m")))),
            (" 5m", Err(DurationError::BadNumber(owned(" 5m")))),
            ("m", Err(DurationError::BadNumber(owned("m")))),
            ("٣s", Err(DurationError::BadNumber(owned("٣s")))),
            ("5é", Err(DurationError::UnknownUnit(owned("5é")))),
            ("0s", Err(DurationError::Zero(owned("0s")))),
            ("00w", Err(DurationError::Zero(owned("00w")))),
            ("36501d", Err(DurationError::TooLong(owned("36501d")))),
            ("99999999999999999999s", Err(DurationError::TooLong(owned("99999999999999999999s")))),
            ("30500000000000000w", Err(DurationError::TooLong(owned("30500000000000000w")))),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), expected.map(Duration::from_secs), "{text:?}");
        }
    }

    #[test]
    fn messages_tell_what_to_write() {
        assert_eq!(
            parse_duration("90").unwrap_err().to_string(),
            "the duration \"90\" has no unit: add a unit: s, m, h, d, w"
        );
        assert_eq!(parse_duration("0s").unwrap_err().to_string(), "the duration \"0s\" is zero");
        assert_eq!(
            parse_duration("5y").unwrap_err().to_string(),
            "the duration \"5y\" has no known unit: end it with one of s, m, h, d, w"
        );
    }
}
