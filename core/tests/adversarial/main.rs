//! The adversarial corpus: one case per attack class a hostile client can send, each building
//! its upload from a real repository (certificate root key, ECDSA role keys, as the notary client
//! makes them) and asserting the exact `UpdateError` the verifier answers. A refused update
//! changes nothing: `validate` is a pure function, so a refusal leaves nothing to undo.
#![expect(clippy::unwrap_used, clippy::panic, reason = "test helpers outside #[test] functions fail by panicking")]

#[path = "../support/repo.rs"]
mod repo;

mod keys;

use std::collections::BTreeMap;

use chrono::Utc;
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
