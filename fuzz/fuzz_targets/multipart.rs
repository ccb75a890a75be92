//! Fuzz target: the strict reader of the update POST's multipart body. For any content type and
//! body, finding the boundary and reading the parts never panics, never returns more parts than
//! allowed, and every part it returns lies within the body.
#![no_main]

// The reader is one dependency-free file of the server; compiling it here keeps the sanitizer
// build to this file instead of the whole server.
#[path = "../../server/src/multipart.rs"]
#[allow(dead_code, unreachable_pub, reason = "the fuzz target uses only part of the module")]
mod multipart;

use libfuzzer_sys::fuzz_target;

const MAX_PARTS: usize = 16;

fuzz_target!(|data: &[u8]| {
    // The first line is the content type, the rest the body.
    let split = data.iter().position(|byte| *byte == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let content_type = String::from_utf8_lossy(header);
    let Ok(boundary) = multipart::boundary(&content_type) else {
        return;
    };
    if let Ok(parts) = multipart::parse(body, &boundary, MAX_PARTS) {
        assert!(parts.len() <= MAX_PARTS, "more parts than allowed");
        let total: usize = parts.iter().map(|part| part.body.len()).sum();
        assert!(total <= body.len(), "parts larger than the body");
    }
});
