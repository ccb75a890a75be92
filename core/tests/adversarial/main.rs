//! The adversarial corpus: one case per attack class a hostile client can send, each building
//! its upload from a real repository (certificate root key, ECDSA role keys, as the notary client
//! makes them) and asserting the exact `UpdateError` the verifier answers. A refused update
//! changes nothing: `validate` is a pure function, so a refusal leaves nothing to undo.
#![expect(clippy::unwrap_used, clippy::panic, reason = "test helpers outside #[test] functions fail by panicking")]

#[path = "../support/repo.rs"]
mod repo;

mod canonical;
mod fields;
mod json;
mod keys;
mod limits;
mod names;
mod threshold;
mod versions;

use std::collections::BTreeMap;

use chrono::Utc;
use tufa_core::canonical::to_canonical;
use tufa_core::metadata::{Signature, envelope};
use tufa_core::names::{Gun, RoleName};
use tufa_core::update::{Limits, RepoState, UpdateError, validate};

/// Validates `files` (role, bytes) against `state` with the default limits.
fn run(state: &RepoState, files: &[(&str, &[u8])]) -> Result<Vec<(String, i64)>, UpdateError> {
    let uploads: BTreeMap<RoleName, Vec<u8>> =
        files.iter().map(|(role, bytes)| (RoleName::parse(role).unwrap(), bytes.to_vec())).collect();
    let validated = validate(&Gun::parse(repo::GUN).unwrap(), state, uploads, Utc::now(), &Limits::default())?;
    Ok(validated.files.iter().map(|file| (file.role.as_str().to_owned(), file.version)).collect())
}

/// Asserts that `files` is refused with exactly `expected`.
fn refused(state: &RepoState, files: &[(&str, &[u8])], expected: UpdateError) {
    match run(state, files) {
        Ok(stored) => panic!("accepted (would store {stored:?}); expected {expected:?}"),
        Err(error) => assert_eq!(error, expected),
    }
}

/// An envelope whose `signed` member is `text` verbatim, signed by `keys` over the canonical
/// form of what `serde_json` reads from `text` (for repeated keys: the last value), which is what
/// an attacker signs to make the server's signature check pass.
fn envelope_around(text: &str, keys: &[&repo::Key]) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    let canonical = to_canonical(&value).unwrap();
    let signatures: Vec<Signature> = keys
        .iter()
        .map(|key| Signature {
            keyid: key.id(),
            method: key.private.method().into(),
            sig: key.private.sign(&canonical).unwrap(),
        })
        .collect();
    envelope(text.as_bytes(), &signatures)
}
