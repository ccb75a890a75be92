//! The one threshold check. Every role — root, targets, delegations, snapshot, timestamp — is
//! verified by [`check_threshold`], which counts each key ID at most once.

use std::collections::{BTreeMap, BTreeSet};

use crate::keys::PublicKey;
use crate::metadata::{RoleKeys, Signed};

/// Why a file's signatures do not satisfy its role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The role requires no signature, which Notary never accepts.
    #[error("role {0} has a threshold below 1")]
    BadThreshold(String),
    /// The file carries no signatures at all.
    #[error("no signatures on {0}")]
    NoSignatures(String),
    /// A signature names a key whose content hashes to another ID.
    #[error("key ID {0} does not match its key")]
    KeyIdMismatch(String),
    /// Fewer distinct valid signatures than the threshold.
    #[error("valid signatures did not meet threshold for {0}")]
    Threshold(String),
}

/// Checks that `signed` carries valid signatures from at least `role_keys.threshold` distinct
/// keys among `role_keys.keyids`, with keys looked up in `keys`.
///
/// Signatures by keys outside the role are ignored; a signature that names a listed key whose
/// recomputed ID differs is an error; repeated signatures by one key count once.
pub fn check_threshold(
    role: &str,
    signed: &Signed,
    keys: &BTreeMap<String, PublicKey>,
    role_keys: &RoleKeys,
) -> Result<(), VerifyError> {
    if role_keys.threshold < 1 {
        return Err(VerifyError::BadThreshold(role.to_owned()));
    }
    if signed.signatures().is_empty() {
        return Err(VerifyError::NoSignatures(role.to_owned()));
    }
    let mut valid: BTreeSet<&str> = BTreeSet::new();
    for signature in signed.signatures() {
        if valid.contains(signature.keyid.as_str()) || !role_keys.keyids.contains(&signature.keyid) {
            continue;
        }
        let Some(key) = keys.get(&signature.keyid) else {
            continue;
        };
        if key.key_id() != signature.keyid {
            return Err(VerifyError::KeyIdMismatch(signature.keyid.clone()));
        }
        if key.verify(&signature.method, signed.canonical(), &signature.sig).is_ok() {
            valid.insert(signature.keyid.as_str());
        }
    }
    let needed = usize::try_from(role_keys.threshold).unwrap_or(usize::MAX);
    if valid.len() < needed {
        return Err(VerifyError::Threshold(role.to_owned()));
    }
    Ok(())
}
