//! Canonical JSON as Notary (docker/go `canonical/json`) produces it: sorted keys, no whitespace,
//! only `"` and `\` escaped, integral numbers only.

use serde_json::{Map, Value};

/// Why a JSON value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A number that is not an integer (Notary cannot sign these).
    #[error("number {0} is not an integer and has no canonical form")]
    NonIntegralNumber(String),
    /// An integer beyond ±2^53. Notary's verifier decodes numbers into Go's float64 and
    /// re-encodes them, which changes such integers, so no notary client can verify them.
    #[error("integer {0} is beyond ±2^53, which notary clients cannot verify")]
    UnsafeInteger(String),
}

/// Encodes `value` canonically.
///
/// Object members are sorted byte-wise by key (`serde_json`'s map is a `BTreeMap<String, _>`,
/// whose order is exactly byte-wise order for UTF-8 strings).
pub fn to_canonical(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Encodes the object with `members` canonically, without building a [`Value`] around it.
pub fn object_to_canonical(members: &Map<String, Value>) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_object(members, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(members, out)?,
    }
    Ok(())
}

fn write_object(members: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    out.push(b'{');
    for (index, (key, item)) in members.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_value(item, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// 2^53: every integer up to this magnitude is exact as a float64.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

pub(crate) fn write_number(number: &serde_json::Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(int) = number.as_i64() {
        if int.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(number.to_string()));
        }
        out.extend_from_slice(int.to_string().as_bytes());
        return Ok(());
    }
    if number.as_u64().is_some() {
        return Err(CanonicalError::UnsafeInteger(number.to_string()));
    }
    // Go decodes every number into a float64 and encodes integral floats as integers, so
    // `1.0` and `1e3` have canonical forms; `1.5` has none.
    match number.as_f64() {
        Some(float) if float.is_finite() && float.fract() == 0.0 && float.abs() < 9.007_199_254_740_992e15 => {
            // The bound keeps the cast exact (|float| < 2^53). (clippy's `cast_possible_truncation`,
            // which would flag it, is a pedantic lint the workspace does not enable.)
            let int = float as i64;
            out.extend_from_slice(int.to_string().as_bytes());
            Ok(())
        }
        _ => Err(CanonicalError::NonIntegralNumber(number.to_string())),
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for byte in text.bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            other => out.push(other),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let value: Value = serde_json::from_str(input).unwrap_or(Value::Null);
        let encoded = to_canonical(&value).unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&encoded), expected, "input {input}");
    }

    #[test]
    fn sorts_keys_bytewise_and_drops_whitespace() {
        check(r#"{ "b": 1, "_type": "x", "a": [true, false, null] }"#, r#"{"_type":"x","a":[true,false,null],"b":1}"#);
        check(r#"{"Z":1,"a":2,"_":3}"#, r#"{"Z":1,"_":3,"a":2}"#);
    }

    #[test]
    fn escapes_only_quote_and_backslash() {
        check(r#"{"k":"a\"b\\c<>&\u2028\n\u0001é"}"#, "{\"k\":\"a\\\"b\\\\c<>&\u{2028}\n\u{1}é\"}");
    }

    #[test]
    fn numbers_must_be_integral() {
        check(
            r#"[1, -2, 9007199254740992, -9007199254740992, 1.0, 1e3]"#,
            "[1,-2,9007199254740992,-9007199254740992,1,1000]",
        );
        let value: Value = serde_json::from_str("[1.5]").unwrap_or(Value::Null);
        assert_eq!(to_canonical(&value), Err(CanonicalError::NonIntegralNumber("1.5".into())));
        for big in ["9007199254740993", "-9007199254740993", "18446744073709551615"] {
            let value: Value = serde_json::from_str(big).unwrap_or(Value::Null);
            assert_eq!(to_canonical(&value), Err(CanonicalError::UnsafeInteger(big.into())));
        }
    }
}
