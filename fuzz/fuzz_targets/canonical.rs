//! Fuzz target: canonical JSON. For any JSON input, the canonical encoding (when there is one)
//! is its own canonical text, is idempotent whenever it reads back as JSON (canonical JSON writes
//! control characters raw, which JSON readers refuse; integral floats such as `1.0` become `1`,
//! so the value itself may change once), and is never malformed for the strict scanner.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tufa_core::canonical::to_canonical;
use tufa_core::json;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(once) = to_canonical(&value) else {
        return;
    };
    assert!(json::is_canonical_text(&once, &once), "canonical text is not canonical");
    if let Ok(reread) = serde_json::from_slice::<Value>(&once) {
        assert_eq!(to_canonical(&reread).ok().as_deref(), Some(once.as_slice()), "canonical JSON is not idempotent");
        // Reading back as JSON means no raw control characters and no repeated keys, so the
        // strict scanner can refuse it only for its shape (nesting or density), never as
        // malformed.
        match json::scan(&once) {
            Ok(_) | Err(json::StrictError::TooDeep | json::StrictError::TooDense { .. }) => {}
            Err(error) => panic!("scanner refused canonical output: {error}"),
        }
    }
});
