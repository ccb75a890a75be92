//! The one threshold check. Every role — root, targets, delegations, snapshot, timestamp — is
//! verified by [`check_threshold`], which counts each public key at most once, however many key
//! IDs name it.

use std::collections::{BTreeMap, BTreeSet};

use crate::keys::PublicKey;
use crate::metadata::{RoleKeys, Root, Signed};
use crate::names::BaseRole;

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
/// public keys among `role_keys.keyids`, with keys looked up in `keys`, and returns the key IDs
/// (as `role_keys` lists them) whose signatures were counted, in signature order.
///
/// Signatures by keys outside the role are ignored; a signature that names a listed key whose
/// recomputed ID differs is an error; repeated signatures by one key count once, and so do
/// signatures under several key IDs of one public key (a bare key and a certificate holding it,
/// or two certificates for one key), which are compared by their canonical key ID. Every valid
/// signature is checked, also after the threshold is met, so the answer names every counted key;
/// for one public key it names the first key ID whose signature verified.
pub fn check_threshold(
    role: &str,
    signed: &Signed<'_>,
    keys: &BTreeMap<String, PublicKey>,
    role_keys: &RoleKeys,
) -> Result<Vec<String>, VerifyError> {
    if role_keys.threshold < 1 {
        return Err(VerifyError::BadThreshold(role.to_owned()));
    }
    if signed.signatures().is_empty() {
        return Err(VerifyError::NoSignatures(role.to_owned()));
    }
    let listed: BTreeSet<&str> = role_keys.keyids.iter().map(String::as_str).collect();
    let mut valid: BTreeSet<&str> = BTreeSet::new();
    let mut counted: BTreeSet<String> = BTreeSet::new();
    let mut signers: Vec<String> = Vec::new();
    for signature in signed.signatures() {
        if valid.contains(signature.keyid.as_str()) || !listed.contains(signature.keyid.as_str()) {
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
            // A key that verified has a readable public key, so its canonical ID exists.
            if let Ok(canonical) = key.canonical_id()
                && counted.insert(canonical)
            {
                signers.push(signature.keyid.clone());
            }
        }
    }
    let needed = usize::try_from(role_keys.threshold).unwrap_or(usize::MAX);
    if counted.len() < needed {
        return Err(VerifyError::Threshold(role.to_owned()));
    }
    Ok(signers)
}

/// Whether `new_root` (a root file's bytes) is signed by a threshold of the root keys of
/// `previous_root`, the last root of a deleted repository, with keys compared by their public key
/// (their canonical ID) rather than by key ID: the notary client re-issues a root key's
/// certificate when it re-creates a repository, which changes the key ID but not the key.
///
/// Each previous key counts once; the threshold is the previous root role's.
pub fn signed_by_previous_root(previous_root: &[u8], new_root: &[u8]) -> Result<(), String> {
    let previous_signed = Signed::parse(previous_root).map_err(|error| format!("the previous root: {error}"))?;
    let previous = Root::from_signed(&previous_signed).map_err(|error| format!("the previous root: {error}"))?;
    let signed = Signed::parse(new_root).map_err(|error| format!("the new root: {error}"))?;
    let new = Root::from_signed(&signed).map_err(|error| format!("the new root: {error}"))?;
    let Some(previous_role) = previous.role(BaseRole::Root) else {
        return Err("the previous root has no root role".into());
    };
    let mut trusted: BTreeMap<String, &PublicKey> = BTreeMap::new();
    for keyid in &previous_role.keyids {
        if let Some(key) = previous.keys.get(keyid)
            && let Ok(canonical) = key.canonical_id()
        {
            trusted.insert(canonical, key);
        }
    }
    let mut counted: BTreeSet<String> = BTreeSet::new();
    for signature in signed.signatures() {
        let Some(named) = new.keys.get(&signature.keyid).or_else(|| previous.keys.get(&signature.keyid)) else {
            continue;
        };
        let Ok(canonical) = named.canonical_id() else { continue };
        if counted.contains(&canonical) {
            continue;
        }
        let Some(key) = trusted.get(&canonical) else { continue };
        if key.verify(&signature.method, signed.canonical(), &signature.sig).is_ok() {
            counted.insert(canonical);
        }
    }
    let needed = usize::try_from(previous_role.threshold.max(1)).unwrap_or(usize::MAX);
    if counted.len() >= needed {
        Ok(())
    } else {
        Err(format!(
            "the new root is signed by {} of the {needed} required keys of the deleted repository's last root",
            counted.len()
        ))
    }
}
