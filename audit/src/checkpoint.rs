//! Signed checkpoints: the log's tree head (origin, size, root hash, time) in the C2SP
//! tlog-checkpoint format, signed as a C2SP signed note.
//!
//! The signature is made elsewhere (by the signer that holds the checkpoint key, possibly in an
//! HSM): [`TreeHead::text`] gives the bytes to sign and [`signed_note`] assembles the note from the
//! signature. [`open`] verifies a note against a pinned [`CheckpointKey`] and reads it back.
//!
//! Key IDs follow C2SP signed-note: `SHA-256(name || 0x0A || type || key)[:4]`. An Ed25519 key uses
//! the standard type 0x01 with its raw 32 bytes, so any signed-note verifier accepts it; an ECDSA
//! P-256 key (the only kind PKCS#11 tokens and notary-signer hold) uses 0xFF, the type reserved for
//! other algorithms, followed by `ecdsa:` and its DER SubjectPublicKeyInfo. The signature bytes are
//! what the Notary signers produce: raw `r||s` over SHA-256 for ECDSA, pure Ed25519.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use signed_note::{Note, Signature, Verifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};
use tufa_core::keys::{KeyType, PublicKey};

use crate::entry::format_time;

/// Largest checkpoint note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// Why a checkpoint could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The key name is empty or holds a space or `+`.
    #[error("checkpoint key name {0:?} is not valid (non-empty, no spaces, no '+')")]
    KeyName(String),
    /// The key is neither ECDSA nor Ed25519.
    #[error("checkpoint keys must be ecdsa or ed25519, not {0}")]
    KeyType(String),
    /// A verifier key string could not be read.
    #[error("malformed checkpoint verifier key: {0}")]
    VerifierKey(String),
    /// The note or the tree head in it is malformed.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// The note carries no valid signature by the pinned key.
    #[error("checkpoint is not signed by key {name}+{id:08x}: {reason}")]
    Signature {
        /// The key name.
        name: String,
        /// The key ID.
        id: u32,
        /// What was wrong.
        reason: String,
    },
}

/// The public key checkpoints are verified with, and its name (the log's origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointKey {
    name: String,
    key: PublicKey,
}

const TYPE_ED25519: u8 = 0x01;
const TYPE_OTHER: u8 = 0xFF;

impl CheckpointKey {
    /// The key `key` under `name`. Only `ecdsa` and `ed25519` keys sign checkpoints.
    pub fn new(name: &str, key: PublicKey) -> Result<CheckpointKey, CheckpointError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(CheckpointError::KeyName(name.to_owned()));
        }
        match key.keytype() {
            KeyType::Ecdsa | KeyType::Ed25519 => {}
            other => return Err(CheckpointError::KeyType(other.to_string())),
        }
        key.check_material().map_err(|error| CheckpointError::KeyType(error.to_string()))?;
        Ok(CheckpointKey { name: name.to_owned(), key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The signature type and key bytes the key ID covers.
    fn encoded(&self) -> Vec<u8> {
        match self.key.keytype() {
            KeyType::Ed25519 => [&[TYPE_ED25519][..], self.key.public()].concat(),
            other => [&[TYPE_OTHER][..], other.as_str().as_bytes(), b":", self.key.public()].concat(),
        }
    }

    /// The 32-bit key ID in every signature line.
    pub fn key_id(&self) -> u32 {
        signed_note::key_id(&self.name, &self.encoded())
    }

    /// The verifier key text `name+id+base64(type || key)`, which [`CheckpointKey::from_vkey`]
    /// reads: what an auditor pins.
    pub fn vkey(&self) -> String {
        format!("{}+{:08x}+{}", self.name, self.key_id(), STANDARD.encode(self.encoded()))
    }

    /// Reads a verifier key written by [`CheckpointKey::vkey`], checking its key ID.
    pub fn from_vkey(text: &str) -> Result<CheckpointKey, CheckpointError> {
        let bad = |what: &str| CheckpointError::VerifierKey(what.to_owned());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+id+key"));
        };
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key ID is not 8 hex digits"))?;
        let data = STANDARD.decode(data).map_err(|_| bad("the key is not base64"))?;
        let key = match data.split_first() {
            Some((&TYPE_ED25519, raw)) => PublicKey::new(KeyType::Ed25519, raw.to_vec()),
            Some((&TYPE_OTHER, rest)) => match rest.strip_prefix(b"ecdsa:") {
                Some(der) => PublicKey::new(KeyType::Ecdsa, der.to_vec()),
                None => return Err(bad("unknown key type")),
            },
            _ => return Err(bad("unknown key type")),
        };
        let key = CheckpointKey::new(name, key)?;
        if key.key_id() != id {
            return Err(bad("the key ID does not match the key"));
        }
        Ok(key)
    }

    fn method(&self) -> &'static str {
        match self.key.keytype() {
            KeyType::Ed25519 => "eddsa",
            _ => "ecdsa",
        }
    }
}

impl Verifier for CheckpointKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        CheckpointKey::key_id(self)
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.key.verify(self.method(), msg, sig).is_ok()
    }
}

/// A log's tree head at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeHead {
    /// The log's identity, also the checkpoint key's name.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// RFC 6962 root hash of those entries.
    pub root: Hash,
    /// When the checkpoint was made (an extension line `time <RFC 3339>`).
    pub time: DateTime<Utc>,
}

impl TreeHead {
    /// The checkpoint body: origin, size, base64 root, and the time extension line.
    pub fn text(&self) -> Result<Vec<u8>, CheckpointError> {
        let extension = format!("time {}\n", format_time(self.time));
        let checkpoint = Checkpoint::new(&self.origin, self.size, self.root, &extension)
            .map_err(|error| CheckpointError::Malformed(error.to_string()))?;
        Ok(checkpoint.to_bytes())
    }
}

/// The signed note: `text` (from [`TreeHead::text`]) with one signature line by `key`.
pub fn signed_note(text: &[u8], key: &CheckpointKey, signature: Vec<u8>) -> Result<String, CheckpointError> {
    let line = Signature::new(key.name.clone(), key.key_id(), signature)
        .map_err(|error| CheckpointError::Malformed(error.to_string()))?;
    let note = Note::new(text, &[line]).map_err(|error| CheckpointError::Malformed(error.to_string()))?;
    String::from_utf8(note.to_bytes()).map_err(|error| CheckpointError::Malformed(error.to_string()))
}

/// Verifies a checkpoint note against `key` and reads its tree head. The origin must be the
/// key's name; signatures by other keys (witnesses) are ignored.
pub fn open(note: &str, key: &CheckpointKey) -> Result<TreeHead, CheckpointError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(CheckpointError::Malformed(format!("note of {} bytes; at most {MAX_NOTE_BYTES}", note.len())));
    }
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|error| CheckpointError::Malformed(error.to_string()))?;
    let verifiers = VerifierList::new(vec![Box::new(key.clone())]);
    parsed.verify(&verifiers).map_err(|error| CheckpointError::Signature {
        name: key.name.clone(),
        id: key.key_id(),
        reason: match error {
            signed_note::NoteError::UnverifiedNote => "no signature by this key".to_owned(),
            other => other.to_string(),
        },
    })?;
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|error| CheckpointError::Malformed(error.to_string()))?;
    if checkpoint.origin() != key.name {
        return Err(CheckpointError::Malformed(format!(
            "origin {:?} is not the key's name {:?}",
            checkpoint.origin(),
            key.name
        )));
    }
    let time = checkpoint
        .extension()
        .lines()
        .find_map(|line| line.strip_prefix("time "))
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .ok_or_else(|| CheckpointError::Malformed("no time extension line".to_owned()))?;
    Ok(TreeHead { origin: checkpoint.origin().to_owned(), size: checkpoint.size(), root: *checkpoint.hash(), time })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tufa_core::keys::{Algorithm, PrivateKey};

    fn head() -> TreeHead {
        TreeHead {
            origin: "tufa.example.com/audit".into(),
            size: 42,
            root: Hash([9; 32]),
            time: Utc.timestamp_opt(1_700_000_000, 5_000).single().unwrap(),
        }
    }

    fn sign(algorithm: Algorithm) -> (CheckpointKey, String) {
        let private = PrivateKey::generate(algorithm).unwrap();
        let key = CheckpointKey::new("tufa.example.com/audit", private.public_key()).unwrap();
        let text = head().text().unwrap();
        let note = signed_note(&text, &key, private.sign(&text).unwrap()).unwrap();
        (key, note)
    }

    #[test]
    fn the_checkpoint_text_is_c2sp() {
        assert_eq!(
            String::from_utf8(head().text().unwrap()).unwrap(),
            format!("tufa.example.com/audit\n42\n{}\ntime 2023-11-14T22:13:20.000005Z\n", STANDARD.encode([9u8; 32]))
        );
    }

    #[test]
    fn notes_signed_with_ecdsa_and_ed25519_open_with_their_key_only() {
        for algorithm in [Algorithm::Ecdsa, Algorithm::Ed25519] {
            let (key, note) = sign(algorithm);
            assert!(note.contains("\n\n\u{2014} tufa.example.com/audit "), "{note}");
            assert_eq!(open(&note, &key).unwrap(), head());
            let (other, _) = sign(algorithm);
            assert!(matches!(open(&note, &other), Err(CheckpointError::Signature { .. })), "{algorithm:?}");
            let tampered = note.replacen("\n42\n", "\n43\n", 1);
            assert!(matches!(open(&tampered, &key), Err(CheckpointError::Signature { .. })), "{algorithm:?}");
        }
    }

    #[test]
    fn verifier_keys_round_trip_and_bad_ones_are_refused() {
        let (key, _) = sign(Algorithm::Ecdsa);
        assert_eq!(CheckpointKey::from_vkey(&key.vkey()).unwrap(), key);
        let (ed, _) = sign(Algorithm::Ed25519);
        assert_eq!(CheckpointKey::from_vkey(&ed.vkey()).unwrap(), ed);
        // The standard Ed25519 verifier key format of signed-note and Go's note package.
        assert!(ed.vkey().split('+').nth(2).unwrap().starts_with(&STANDARD.encode([1u8])[..1]));
        let wrong_id = format!("tufa.example.com/audit+00000000+{}", key.vkey().splitn(3, '+').nth(2).unwrap());
        assert_eq!(
            CheckpointKey::from_vkey(&wrong_id),
            Err(CheckpointError::VerifierKey("the key ID does not match the key".into()))
        );
        assert!(matches!(CheckpointKey::from_vkey("nonsense"), Err(CheckpointError::VerifierKey(_))));
        assert!(matches!(CheckpointKey::new("has space", key.public_key().clone()), Err(CheckpointError::KeyName(_))));
    }

    #[test]
    fn malformed_notes_are_errors_not_panics() {
        let (key, note) = sign(Algorithm::Ecdsa);
        let unsigned = format!("{}\n", note.split("\n\n").next().unwrap());
        for bad in ["", "x", "a\n\n", &unsigned, &"a".repeat(MAX_NOTE_BYTES + 1)] {
            assert!(open(bad, &key).is_err(), "{bad:?}");
        }
    }
}
