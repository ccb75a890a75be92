//! One audit entry: the columns a store keeps and the exact bytes its leaf hash covers.
//!
//! Every stored column is part of the hashed bytes, including the entry's position (`seq`) and
//! the hash of the entry before it (`prev`), so an edited, moved, inserted or deleted row no
//! longer matches its own hash or breaks the chain after it. The hashed bytes are a JSON object
//! with a fixed member order written by this module; they are never parsed back, so the format
//! only has to be deterministic, and it is versioned (`"v": 1`) so it can change without
//! re-hashing history.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use tlog_tiles::Hash;

/// The version of the hashed form written by [`Entry::leaf_bytes`].
pub const LEAF_FORMAT: u32 = 1;

/// Longest `kind`, `gun`, `principal`, `address` or `request_id` an entry keeps, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// An entry to append: what happened. The store adds the position, the time and the previous
/// entry's hash when it appends, inside the transaction of the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// What happened, e.g. `publish`, `delete`, `key.create`, `principal.add` (see [`kinds`]).
    pub kind: String,
    /// The repository concerned, if any.
    pub gun: Option<String>,
    /// Who did it: the authenticated principal, if any.
    pub principal: Option<String>,
    /// The client address, if the change came over the network.
    pub address: Option<String>,
    /// The request ID of the HTTP request or gRPC call, if any.
    pub request_id: Option<String>,
    /// The details as a JSON object; written in its compact form with sorted member names.
    pub details: serde_json::Value,
}

impl NewEntry {
    /// An entry of `kind` with the given details and nothing else set.
    pub fn new(kind: &str, details: serde_json::Value) -> NewEntry {
        NewEntry { kind: kind.to_owned(), gun: None, principal: None, address: None, request_id: None, details }
    }

    /// The same entry about repository `gun`.
    pub fn gun(mut self, gun: &str) -> NewEntry {
        self.gun = Some(gun.to_owned());
        self
    }

    /// The same entry, done by `principal` (ignored when `None`).
    pub fn by(mut self, principal: Option<&str>) -> NewEntry {
        self.principal = principal.map(str::to_owned);
        self
    }

    /// The same entry, from `address` with request ID `request_id` (each ignored when `None`).
    pub fn from_request(mut self, address: Option<&str>, request_id: Option<&str>) -> NewEntry {
        self.address = address.map(str::to_owned);
        self.request_id = request_id.map(str::to_owned);
        self
    }

    /// The entry at position `seq`, written at `time`, after the entry whose leaf hash is `prev`.
    /// Text fields longer than [`MAX_FIELD_BYTES`] are cut at a character boundary, and the time
    /// is truncated to microseconds, which both databases store exactly.
    pub fn at(&self, seq: u64, time: DateTime<Utc>, prev: Option<Hash>) -> Entry {
        Entry {
            seq,
            time: time.trunc_subsecs(6),
            kind: bounded(&self.kind),
            gun: self.gun.as_deref().map(bounded),
            principal: self.principal.as_deref().map(bounded),
            address: self.address.as_deref().map(bounded),
            request_id: self.request_id.as_deref().map(bounded),
            details: self.details.to_string(),
            prev,
        }
    }
}

/// `text` cut to at most [`MAX_FIELD_BYTES`] bytes at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_FIELD_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// The entry kinds Tufa writes. A log may hold others (a newer version's); they verify alike.
pub mod kinds {
    /// An accepted update of a repository (client upload, or the server's re-signing).
    pub const PUBLISH: &str = "publish";
    /// The server re-signed a repository's timestamp (and snapshot) before they expired.
    pub const RESIGN: &str = "resign";
    /// Grants and target history rebuilt from a repository's stored metadata on upgrade.
    pub const BACKFILL: &str = "backfill";
    /// A repository deleted.
    pub const DELETE: &str = "delete";
    /// A server-held online key created for a repository and role.
    pub const KEY_CREATE: &str = "key.create";
    /// A principal (user or service account) added.
    pub const PRINCIPAL_ADD: &str = "principal.add";
    /// A principal's password set or changed.
    pub const PRINCIPAL_PASSWORD: &str = "principal.password";
    /// A principal removed, with its tokens and role bindings.
    pub const PRINCIPAL_REMOVE: &str = "principal.remove";
    /// An API token created.
    pub const TOKEN_CREATE: &str = "token.create";
    /// An API token revoked.
    pub const TOKEN_REVOKE: &str = "token.revoke";
    /// A role granted on a pattern.
    pub const ROLE_GRANT: &str = "role.grant";
    /// A role revoked on a pattern.
    pub const ROLE_REVOKE: &str = "role.revoke";
    /// A deleted repository's tombstone cleared by an admin.
    pub const TOMBSTONE_CLEAR: &str = "tombstone.clear";
    /// The token-signing key rotated.
    pub const TOKEN_SIGNER_ROTATE: &str = "token-signer.rotate";
    /// A signature made by tufa-signer.
    pub const SIGN: &str = "sign";
    /// A key created by tufa-signer.
    pub const SIGNER_KEY_CREATE: &str = "signer.key.create";
    /// A key deleted by tufa-signer.
    pub const SIGNER_KEY_DELETE: &str = "signer.key.delete";
}

/// A stored audit entry: every column the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// When the entry was appended (microseconds).
    pub time: DateTime<Utc>,
    /// What happened.
    pub kind: String,
    /// The repository concerned, if any.
    pub gun: Option<String>,
    /// Who did it, if known.
    pub principal: Option<String>,
    /// The client address, if any.
    pub address: Option<String>,
    /// The request ID, if any.
    pub request_id: Option<String>,
    /// The details: a JSON object's text, kept and hashed verbatim.
    pub details: String,
    /// The leaf hash of the entry at `seq - 1`; `None` only for the first entry.
    pub prev: Option<Hash>,
}

/// The hashed form, member by member in this order.
#[derive(Serialize)]
struct Leaf<'a> {
    v: u32,
    seq: u64,
    time: String,
    kind: &'a str,
    gun: Option<&'a str>,
    principal: Option<&'a str>,
    address: Option<&'a str>,
    request_id: Option<&'a str>,
    details: &'a str,
    prev: Option<String>,
}

/// An entry time as hashed and shown: RFC 3339 in UTC with exactly six fractional digits.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Entry {
    /// The bytes the leaf hash covers: every column, in a fixed order.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let leaf = Leaf {
            v: LEAF_FORMAT,
            seq: self.seq,
            time: format_time(self.time),
            kind: &self.kind,
            gun: self.gun.as_deref(),
            principal: self.principal.as_deref(),
            address: self.address.as_deref(),
            request_id: self.request_id.as_deref(),
            details: &self.details,
            prev: self.prev.map(|hash| hex::encode(hash.0)),
        };
        // Serialising a struct of strings and integers into a Vec cannot fail.
        serde_json::to_vec(&leaf).unwrap_or_default()
    }

    /// The RFC 6962 leaf hash: SHA-256(0x00 || leaf bytes).
    pub fn leaf_hash(&self) -> Hash {
        tlog_tiles::record_hash(&self.leaf_bytes())
    }

    /// The details parsed, or the text as a JSON string when it is not JSON (a tampered row).
    pub fn details_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.details).unwrap_or_else(|_| serde_json::Value::String(self.details.clone()))
    }
}

/// What an entry records about the grants its change ended, given as (delegating role, delegated
/// role) pairs: `{"count": N, "sha256": D}`, where `D` is the SHA-256 (lowercase hex) of the pairs
/// in byte order, each name followed by a newline (role names hold no control characters). A
/// publish or a deletion records it as `ended_grants`; `audit verify` recomputes it from the grant
/// rows whose `superseded_seq` is the entry's position.
pub fn ended_grants<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> serde_json::Value {
    let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    let mut text = Vec::new();
    for (delegating, delegated) in &pairs {
        for name in [delegating, delegated] {
            text.extend_from_slice(name.as_bytes());
            text.push(b'\n');
        }
    }
    serde_json::json!({"count": pairs.len(), "sha256": hex::encode(tufa_core::keys::sha256(&text))})
}

/// A hash as lowercase hex, the form the stores and the API use.
pub fn hash_hex(hash: &Hash) -> String {
    hex::encode(hash.0)
}

/// Parses a 64-character lowercase or uppercase hex hash.
pub fn parse_hash_hex(text: &str) -> Option<Hash> {
    let bytes = hex::decode(text).ok()?;
    let array: [u8; 32] = bytes.try_into().ok()?;
    Some(Hash(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Entry {
        NewEntry::new(kinds::PUBLISH, serde_json::json!({"roles": {"targets": 2}, "a": 1}))
            .gun("example.com/app")
            .by(Some("alice"))
            .from_request(Some("10.0.0.1"), Some("req-1"))
            .at(3, Utc.timestamp_opt(1_700_000_000, 123_456_789).single().unwrap(), Some(Hash([7; 32])))
    }

    #[test]
    fn the_hashed_bytes_hold_every_column_in_a_fixed_order() {
        let entry = sample();
        assert_eq!(
            String::from_utf8(entry.leaf_bytes()).unwrap(),
            format!(
                r#"{{"v":1,"seq":3,"time":"2023-11-14T22:13:20.123456Z","kind":"publish","gun":"example.com/app","principal":"alice","address":"10.0.0.1","request_id":"req-1","details":"{{\"a\":1,\"roles\":{{\"targets\":2}}}}","prev":"{}"}}"#,
                "07".repeat(32)
            )
        );
    }

    #[test]
    fn changing_any_column_changes_the_hash() {
        let base = sample();
        let hash = base.leaf_hash();
        let mut variants = Vec::new();
        let mut e = base.clone();
        e.seq = 4;
        variants.push(e);
        let mut e = base.clone();
        e.time += chrono::Duration::microseconds(1);
        variants.push(e);
        let mut e = base.clone();
        e.kind = "delete".into();
        variants.push(e);
        let mut e = base.clone();
        e.gun = None;
        variants.push(e);
        let mut e = base.clone();
        e.principal = Some("mallory".into());
        variants.push(e);
        let mut e = base.clone();
        e.address = None;
        variants.push(e);
        let mut e = base.clone();
        e.request_id = Some("req-2".into());
        variants.push(e);
        let mut e = base.clone();
        e.details = r#"{"a":2}"#.into();
        variants.push(e);
        let mut e = base.clone();
        e.prev = Some(Hash([8; 32]));
        variants.push(e);
        for variant in variants {
            assert_ne!(variant.leaf_hash(), hash, "{variant:?}");
        }
    }

    #[test]
    fn the_leaf_hash_is_rfc6962() {
        let entry = sample();
        let mut data = vec![0u8];
        data.extend(entry.leaf_bytes());
        let expected: [u8; 32] = tufa_core::keys::sha256(&data);
        assert_eq!(entry.leaf_hash().0, expected);
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary_and_times_to_microseconds() {
        let long = "é".repeat(MAX_FIELD_BYTES);
        let entry = NewEntry::new("x", serde_json::json!({})).by(Some(&long)).at(
            0,
            Utc.timestamp_opt(0, 999_999_999).single().unwrap(),
            None,
        );
        let principal = entry.principal.unwrap();
        assert_eq!(principal.len(), MAX_FIELD_BYTES);
        assert!(principal.chars().all(|c| c == 'é'));
        assert_eq!(format_time(entry.time), "1970-01-01T00:00:00.999999Z");
    }

    #[test]
    fn hashes_round_trip_as_hex() {
        let hash = Hash([0xab; 32]);
        assert_eq!(parse_hash_hex(&hash_hex(&hash)), Some(hash));
        assert_eq!(parse_hash_hex("ab"), None);
        assert_eq!(parse_hash_hex(&"zz".repeat(32)), None);
    }
}
