//! Notary's TUF metadata: the signed envelope and typed views of root, targets, snapshot and
//! timestamp bodies. Signatures are checked over the canonical form of the whole body (unknown
//! fields included), read from its text; the raw file bytes stay untouched. No file is held as
//! a generic JSON tree: the envelope keeps the text of each member of `signed`, and the typed
//! views read targets and delegations one entry at a time, so memory stays a small multiple of
//! the file however many entries it lists.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::Deserializer as _;
use serde::de::{Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::canonical::CanonicalError;
use crate::json::{self, StrictError, TextError};
use crate::keys::{PublicKey, sha256, sha512};
use crate::names::{BaseRole, RoleName, check_target_name};
use crate::time;

/// Why a metadata file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The bytes are not a JSON object of the envelope's shape.
    #[error("metadata is not valid JSON: {0}")]
    Json(String),
    /// The JSON does not have the structure this role requires.
    #[error("{0}")]
    Structure(String),
    /// The body has no canonical form (for example a non-integral number).
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// The JSON breaks a strict rule (a repeated key, too deep nesting).
    #[error("metadata JSON is refused: {0}")]
    Strict(#[from] StrictError),
}

fn structure(message: impl Into<String>) -> MetadataError {
    MetadataError::Structure(message.into())
}

/// The fields of each object notary clients decode into a Go struct. Go matches JSON names to
/// struct fields ignoring case (and folds `K` U+212A to `k`, `ſ` U+017F to `s`), so a name that
/// differs from one of these only in case is read by notary clients as that field, while this
/// server reads only the exact name; such names are refused.
mod fields {
    pub(super) const ENVELOPE: &[&str] = &["signatures", "signed"];
    pub(super) const SIGNATURE: &[&str] = &["keyid", "method", "sig"];
    pub(super) const ROOT: &[&str] = &["_type", "consistent_snapshot", "expires", "keys", "roles", "version"];
    pub(super) const TARGETS: &[&str] = &["_type", "delegations", "expires", "targets", "version"];
    pub(super) const SNAPSHOT: &[&str] = &["_type", "expires", "meta", "version"];
    pub(super) const KEY: &[&str] = &["keytype", "keyval"];
    pub(super) const KEYVAL: &[&str] = &["private", "public"];
    pub(super) const ROOT_ROLE: &[&str] = &["keyids", "threshold"];
    pub(super) const DELEGATIONS: &[&str] = &["keys", "roles"];
    pub(super) const DELEGATION: &[&str] = &["keyids", "name", "path_hash_prefixes", "paths", "threshold"];
    pub(super) const FILE_META: &[&str] = &["custom", "hashes", "length"];
}

/// Go's case folding of a name character, as far as it can make a name equal to an ASCII one.
fn go_fold(character: char) -> char {
    match character {
        '\u{212A}' => 'k',
        '\u{17F}' => 's',
        other => other.to_ascii_lowercase(),
    }
}

/// Refuses members of `object` (if it is an object) whose names differ from a field in `known`
/// only in case.
fn check_field_names(object: &Value, known: &[&str], what: &str) -> Result<(), MetadataError> {
    match object {
        Value::Object(members) => check_member_names(members, known, what),
        _ => Ok(()),
    }
}

/// Refuses members whose names differ from a field in `known` only in case.
fn check_member_names(members: &Map<String, Value>, known: &[&str], what: &str) -> Result<(), MetadataError> {
    check_names(members.keys(), known, what)
}

/// Refuses names that differ from a field in `known` only in case.
fn check_names<'n>(
    names: impl IntoIterator<Item = &'n String>,
    known: &[&str],
    what: &str,
) -> Result<(), MetadataError> {
    for name in names {
        if known.contains(&name.as_str()) {
            continue;
        }
        let folded = |text: &str| text.chars().map(go_fold).collect::<String>();
        let name_folded = folded(name);
        if let Some(field) = known.iter().find(|field| folded(field) == name_folded) {
            return Err(structure(format!(
                "{what} has the field {name:?}, which differs only in case from \"{field}\""
            )));
        }
    }
    Ok(())
}

/// One signature of the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The TUF key ID of the signing key.
    pub keyid: String,
    /// The signature method, lower-cased (`ecdsa`, `eddsa`, `rsapss`, ...).
    pub method: String,
    /// The raw signature bytes.
    pub sig: Vec<u8>,
}

impl Signature {
    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("keyid".into(), Value::String(self.keyid.clone()));
        object.insert("method".into(), Value::String(self.method.clone()));
        object.insert("sig".into(), Value::String(B64.encode(&self.sig)));
        Value::Object(object)
    }
}

/// A parsed metadata envelope: the members of the `signed` body (their text, not a parsed
/// tree), its canonical bytes and the signatures. It borrows the file's bytes: a large file is
/// never held as a generic JSON tree, each typed view reads only the members it needs, and the
/// canonical bytes are the text itself when a client wrote them as notary clients do.
#[derive(Debug, Clone)]
pub struct Signed<'a> {
    members: BTreeMap<String, &'a RawValue>,
    canonical: Cow<'a, [u8]>,
    signatures: Vec<Signature>,
}

impl<'a> Signed<'a> {
    /// Parses the envelope `{"signed":{...},"signatures":[...]}` of a metadata file, strictly:
    /// the JSON passes [`json::scan`] (no repeated keys, bounded nesting and density), the text
    /// of `signed` is its canonical form, and no envelope or signature field differs from a
    /// known one only in case.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MetadataError> {
        json::scan(bytes)?;
        if first_byte(bytes) != Some(b'{') {
            return Err(structure("metadata is not a JSON object"));
        }
        let envelope: BTreeMap<String, &'a RawValue> = from_json(bytes)?;
        check_names(envelope.keys(), fields::ENVELOPE, "the envelope")?;
        let Some(body) = envelope.get("signed").filter(|raw| first_byte(raw.get().as_bytes()) == Some(b'{')) else {
            return Err(structure("metadata has no \"signed\" object"));
        };
        let signatures = match envelope.get("signatures").map(|raw| first_byte(raw.get().as_bytes())) {
            Some(Some(b'[')) => {
                let items: Vec<&RawValue> = from_json(envelope.get("signatures").map_or("[]", |raw| raw.get()))?;
                items.into_iter().map(parse_signature).collect::<Result<Vec<_>, _>>()?
            }
            Some(Some(b'n')) | None => Vec::new(),
            Some(_) => return Err(structure("\"signatures\" is not a list")),
        };
        let text: &'a str = body.get();
        let members: BTreeMap<String, &'a RawValue> = from_json(text)?;
        // Notary clients sign the canonical bytes and write them verbatim into the envelope, so
        // the text of `signed` is its canonical form (up to whitespace and Go's escapes of
        // `<`, `>`, `&`, U+2028 and U+2029). Any other text means the bytes stored and served
        // are not the bytes signed, which readers may decode differently.
        let canonical = json::canonical_form(text.as_bytes()).map_err(|error| match error {
            TextError::Canonical(error) => MetadataError::Canonical(error),
            TextError::Number(error) => MetadataError::Json(error),
            TextError::NotCanonical => {
                structure("\"signed\" is not written in canonical JSON, so its text is not what was signed")
            }
        })?;
        Ok(Self { members, canonical, signatures })
    }

    /// The canonical bytes of the `signed` body: what signatures cover.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// The signatures, in file order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// The names of the `signed` body's members, in order.
    pub fn member_names(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// The text of the `signed` body's member `name`, if there is one.
    pub fn member(&self, name: &str) -> Option<&'a RawValue> {
        self.members.get(name).copied()
    }

    /// The member `name` of the `signed` body as a generic JSON value. Only for members whose
    /// size the caller has bounded: a value costs several times its text.
    pub fn value(&self, name: &str) -> Result<Option<Value>, MetadataError> {
        self.member(name).map(|raw| from_json(raw.get())).transpose()
    }

    /// How many members or items the member `name` has if it is an object or a list (0 for
    /// anything else), counted without parsing them.
    pub fn count(&self, name: &str) -> usize {
        count(self.member(name))
    }

    /// `signed.version`, which must be an integer.
    pub fn version(&self) -> Result<i64, MetadataError> {
        self.member("version")
            .and_then(|raw| serde_json::from_str::<i64>(raw.get()).ok())
            .ok_or_else(|| structure("\"version\" is missing or not an integer"))
    }

    /// `signed._type`.
    pub fn kind(&self) -> Option<&'a str> {
        self.member("_type").and_then(|raw| serde_json::from_str::<&str>(raw.get()).ok())
    }

    /// `signed.expires`, parsed.
    pub fn expires(&self) -> Result<DateTime<Utc>, MetadataError> {
        self.member("expires")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .and_then(|text| time::parse(&text))
            .ok_or_else(|| structure("\"expires\" is missing or not an RFC 3339 time"))
    }
}

/// The first byte of `bytes` that is not JSON whitespace.
fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Reads JSON text (already checked by [`json::scan`]) into `T`.
fn from_json<'de, T: serde::Deserialize<'de>>(text: &'de (impl AsRef<[u8]> + ?Sized)) -> Result<T, MetadataError> {
    serde_json::from_slice(text.as_ref()).map_err(|error| MetadataError::Json(error.to_string()))
}

/// How many targets a stored targets-type file lists, skimmed: the envelope's other members and
/// every target entry are skipped, not read. 0 for a file that does not parse (a stored file
/// passed the full parse when it was accepted).
pub fn stored_targets_count(bytes: &[u8]) -> usize {
    #[derive(serde::Deserialize)]
    struct Envelope {
        signed: Body,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        targets: Count,
    }
    serde_json::from_slice::<Envelope>(bytes).map_or(0, |envelope| envelope.signed.targets.0)
}

/// How many members or items `raw` has if it is an object or a list (0 for anything else or
/// nothing), counted without keeping them.
pub fn count(raw: Option<&RawValue>) -> usize {
    raw.and_then(|raw| serde_json::from_str::<Count>(raw.get()).ok()).map_or(0, |count| count.0)
}

/// The number of members or items of a JSON value (0 for anything but an object or a list),
/// read without keeping them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count(pub usize);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        let mut count = 0usize;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            count = count.saturating_add(1);
        }
        Ok(Count(count))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Count, A::Error> {
        let mut count = 0usize;
        while items.next_element::<IgnoredAny>()?.is_some() {
            count = count.saturating_add(1);
        }
        Ok(Count(count))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_str<E>(self, _: &str) -> Result<Count, E> {
        Ok(Count(0))
    }

    fn visit_unit<E>(self) -> Result<Count, E> {
        Ok(Count(0))
    }
}

fn parse_signature(raw: &RawValue) -> Result<Signature, MetadataError> {
    let value: Value = from_json(raw.get())?;
    let value = &value;
    check_field_names(value, fields::SIGNATURE, "a signature")?;
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let (Some(keyid), Some(method), Some(sig)) = (field("keyid"), field("method"), field("sig")) else {
        return Err(structure("a signature lacks \"keyid\", \"method\" or \"sig\""));
    };
    let sig = B64.decode(sig).map_err(|_| structure("a signature is not valid base64"))?;
    Ok(Signature { keyid: keyid.to_owned(), method: method.to_ascii_lowercase(), sig })
}

/// Serialises an envelope: the canonical body verbatim, then the signatures (Notary's layout).
pub fn envelope(canonical_body: &[u8], signatures: &[Signature]) -> Vec<u8> {
    let signatures = Value::Array(signatures.iter().map(Signature::to_json).collect());
    let mut out = Vec::with_capacity(canonical_body.len() + 256);
    out.extend_from_slice(b"{\"signed\":");
    out.extend_from_slice(canonical_body);
    out.extend_from_slice(b",\"signatures\":");
    // Serialising a tree of strings cannot fail; fall back to an empty list rather than panic.
    out.extend_from_slice(&serde_json::to_vec(&signatures).unwrap_or_else(|_| b"[]".to_vec()));
    out.push(b'}');
    out
}

/// The keys and threshold of one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleKeys {
    /// Key IDs allowed to sign for the role.
    pub keyids: Vec<String>,
    /// Distinct valid signatures required.
    pub threshold: i64,
}

/// Length and hashes of a file, as listed in snapshot, timestamp and targets metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Length in bytes.
    pub length: i64,
    /// Hash algorithm name → digest bytes.
    pub hashes: BTreeMap<String, Vec<u8>>,
}

impl FileMeta {
    /// The meta of `bytes`, with SHA-256 and SHA-512 as Notary writes them.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hashes = BTreeMap::new();
        hashes.insert("sha256".to_owned(), sha256(bytes).to_vec());
        hashes.insert("sha512".to_owned(), sha512(bytes).to_vec());
        Self { length: i64::try_from(bytes.len()).unwrap_or(i64::MAX), hashes }
    }

    /// Whether `bytes` matches: every known algorithm present matches, at least one is present,
    /// and the length agrees.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let mut known = 0;
        for (algorithm, digest) in &self.hashes {
            let matched = match algorithm.as_str() {
                "sha256" => sha256(bytes).as_slice() == digest.as_slice(),
                "sha512" => sha512(bytes).as_slice() == digest.as_slice(),
                _ => continue,
            };
            if !matched {
                return false;
            }
            known += 1;
        }
        known > 0 && usize::try_from(self.length).is_ok_and(|length| length == bytes.len())
    }

    /// Whether a file whose own meta is `file` (as [`FileMeta::of`] makes it) matches, by the
    /// rule of [`FileMeta::matches`].
    pub fn matches_meta(&self, file: &FileMeta) -> bool {
        let mut known = 0;
        for (algorithm, digest) in &self.hashes {
            if !matches!(algorithm.as_str(), "sha256" | "sha512") {
                continue;
            }
            if file.hashes.get(algorithm) != Some(digest) {
                return false;
            }
            known += 1;
        }
        known > 0 && self.length == file.length
    }

    /// The SHA-256 digest, if listed.
    pub fn sha256(&self) -> Option<&[u8]> {
        self.hashes.get("sha256").map(Vec::as_slice)
    }

    fn parse(value: &Value, what: &str) -> Result<Self, MetadataError> {
        check_field_names(value, fields::FILE_META, what)?;
        let length = value
            .get("length")
            .and_then(Value::as_i64)
            .filter(|length| *length >= 0)
            .ok_or_else(|| structure(format!("{what} has no valid length")))?;
        let mut hashes = BTreeMap::new();
        if let Some(Value::Object(map)) = value.get("hashes") {
            for (algorithm, digest) in map {
                let digest = digest
                    .as_str()
                    .and_then(|digest| B64.decode(digest).ok())
                    .ok_or_else(|| structure(format!("{what} has a hash that is not base64")))?;
                hashes.insert(algorithm.clone(), digest);
            }
        } else {
            return Err(structure(format!("{what} has no hashes")));
        }
        let sizes_ok = hashes.get("sha256").is_none_or(|digest| digest.len() == 32)
            && hashes.get("sha512").is_none_or(|digest| digest.len() == 64);
        if !sizes_ok {
            return Err(structure(format!("{what} has a hash of the wrong size")));
        }
        Ok(Self { length, hashes })
    }

    fn to_json(&self) -> Value {
        let hashes: Map<String, Value> =
            self.hashes.iter().map(|(name, digest)| (name.clone(), Value::String(B64.encode(digest)))).collect();
        let mut object = Map::new();
        object.insert("hashes".into(), Value::Object(hashes));
        object.insert("length".into(), Value::from(self.length));
        Value::Object(object)
    }
}

fn expect_type(signed: &Signed<'_>, kind: &str, known: &[&str]) -> Result<(), MetadataError> {
    check_names(signed.members.keys(), known, "\"signed\"")?;
    match signed.kind() {
        Some(found) if found == kind => Ok(()),
        _ => Err(structure(format!("\"_type\" must be {kind}"))),
    }
}

/// The highest version a metadata file may carry: 2^31 - 1. notary-server keeps versions in
/// 32-bit columns (`version integer` in PostgreSQL, `int(11)` in MySQL), and notary clients read
/// them into Go's `int`, which is 32 bits wide on the 32-bit platforms the client is built for
/// (386, arm). A larger version would be stored here but could be neither held by a notary
/// database nor read by those clients.
pub const MAX_VERSION: i64 = i32::MAX as i64;

fn positive_version(signed: &Signed<'_>) -> Result<i64, MetadataError> {
    let version = signed.version()?;
    if !(1..=MAX_VERSION).contains(&version) {
        return Err(structure(format!("\"version\" {version} is outside 1 to {MAX_VERSION}")));
    }
    Ok(version)
}

/// Parses a key map and checks that every map ID is the key's own TUF ID.
fn parse_keys(value: Option<&Value>, what: &str) -> Result<BTreeMap<String, PublicKey>, MetadataError> {
    let mut keys = BTreeMap::new();
    let map = match value {
        Some(Value::Object(map)) => map,
        Some(Value::Null) | None => return Ok(keys),
        Some(_) => return Err(structure(format!("{what} keys are not an object"))),
    };
    for (id, key) in map {
        check_field_names(key, fields::KEY, &format!("{what} key {id}"))?;
        if let Some(keyval) = key.get("keyval") {
            check_field_names(keyval, fields::KEYVAL, &format!("{what} key {id}"))?;
        }
        let key = PublicKey::from_json(key).map_err(|error| structure(format!("{what} key {id}: {error}")))?;
        key.check_material().map_err(|error| structure(format!("{what} key {id}: {error}")))?;
        if key.key_id() != *id {
            return Err(structure(format!("{what} key {id} does not match its key ID")));
        }
        keys.insert(id.clone(), key);
    }
    Ok(keys)
}

fn parse_role_keys(value: &Value, keys: &BTreeMap<String, PublicKey>, what: &str) -> Result<RoleKeys, MetadataError> {
    let threshold = value.get("threshold").and_then(Value::as_i64).unwrap_or(0);
    if threshold < 1 {
        return Err(structure(format!("{what} has a threshold below 1")));
    }
    let keyids: Vec<String> = match value.get("keyids") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str().map(str::to_owned).ok_or_else(|| structure(format!("{what} has a non-string key ID")))
            })
            .collect::<Result<_, _>>()?,
        // Go writes an empty key list as `null`: the notary client (and docker trust) do so when
        // the last key of a delegation is removed, and notary-server accepts it.
        Some(Value::Null) => Vec::new(),
        _ => return Err(structure(format!("{what} has no key IDs"))),
    };
    if let Some(missing) = keyids.iter().find(|id| !keys.contains_key(*id)) {
        return Err(structure(format!("{what} lists key {missing}, which is not among the keys")));
    }
    Ok(RoleKeys { keyids, threshold })
}

/// The body of `root.json`.
#[derive(Debug, Clone)]
pub struct Root {
    /// Version number.
    pub version: i64,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// Keys by TUF key ID (IDs checked).
    pub keys: BTreeMap<String, PublicKey>,
    /// Roles by name; the four base roles are present.
    pub roles: BTreeMap<String, RoleKeys>,
}

impl Root {
    /// Reads and checks a root body: `_type`, version, expiry, keys, and all four base roles.
    pub fn from_signed(signed: &Signed<'_>) -> Result<Self, MetadataError> {
        expect_type(signed, "Root", fields::ROOT)?;
        let version = positive_version(signed)?;
        let expires = signed.expires()?;
        let keys = parse_keys(signed.value("keys")?.as_ref(), "root")?;
        let Some(Value::Object(role_map)) = signed.value("roles")? else {
            return Err(structure("root has no roles"));
        };
        let mut roles = BTreeMap::new();
        for (name, value) in role_map {
            check_field_names(&value, fields::ROOT_ROLE, &format!("root role {name}"))?;
            let role_keys = parse_role_keys(&value, &keys, &format!("root role {name}"))?;
            roles.insert(name, role_keys);
        }
        for base in [BaseRole::Root, BaseRole::Targets, BaseRole::Snapshot, BaseRole::Timestamp] {
            if !roles.contains_key(base.as_str()) {
                return Err(structure(format!("root does not define the {} role", base.as_str())));
            }
        }
        Ok(Self { version, expires, keys, roles })
    }

    /// The keys and threshold of a base role (always present after parsing).
    pub fn role(&self, role: BaseRole) -> Option<&RoleKeys> {
        self.roles.get(role.as_str())
    }
}

/// A set of target-name prefixes kept for O(log n) queries: sorted, with every prefix that
/// another prefix in the set already covers left out (so no kept prefix starts another). The
/// kept prefixes are stored one after another in one string, so a set costs little more than
/// its text however many prefixes it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathPrefixes {
    /// The kept prefixes, sorted and prefix-free, one after another.
    text: String,
    /// Where each kept prefix ends in `text` (32 bits: half the memory of `usize` offsets, for
    /// sets that may hold a million prefixes).
    ends: Vec<u32>,
}

impl PathPrefixes {
    /// Builds the set from prefixes in any order; O(n log n). `None` if the kept prefixes hold
    /// more than 4 GiB of text.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut sorted: Vec<&str> = paths.into_iter().collect();
        sorted.sort_unstable();
        let mut set = Self::default();
        for path in sorted {
            // In sorted order, a prefix of `path` that is kept is the last one kept: anything
            // sorting between a string and its extension starts with that string.
            if set.ends.len().checked_sub(1).and_then(|last| set.get(last)).is_some_and(|kept| path.starts_with(kept)) {
                continue;
            }
            set.text.push_str(path);
            set.ends.push(u32::try_from(set.text.len()).ok()?);
        }
        // Growing by doubling leaves up to half of each unused; a file may hold a thousand sets.
        set.text.shrink_to_fit();
        set.ends.shrink_to_fit();
        Some(set)
    }

    /// The kept prefix at `index`.
    fn get(&self, index: usize) -> Option<&str> {
        let start = match index.checked_sub(1) {
            Some(before) => usize::try_from(*self.ends.get(before)?).ok()?,
            None => 0,
        };
        self.text.get(start..usize::try_from(*self.ends.get(index)?).ok()?)
    }

    /// The kept prefixes, in order: every prefix of the set is started by one of them.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len()).filter_map(|index| self.get(index))
    }

    /// Whether some prefix in the set starts `name`; O(log n). The only candidate is the
    /// greatest kept prefix that sorts at or before `name`.
    pub fn allows(&self, name: &str) -> bool {
        // The number of kept prefixes that sort at or before `name`.
        let (mut low, mut high) = (0, self.ends.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.get(middle).is_some_and(|prefix| prefix <= name) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1).and_then(|index| self.get(index)).is_some_and(|prefix| name.starts_with(prefix))
    }
}

/// A delegation declared in a targets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The delegated role.
    pub name: RoleName,
    /// Keys and threshold.
    pub keys: RoleKeys,
    /// The target name prefixes the role may sign for (`""` is everything), indexed; `None` when
    /// the file was read without keeping this delegation's paths (see [`TargetsReading`]), in
    /// which case the delegation allows nothing.
    prefixes: Option<PathPrefixes>,
}

impl Delegation {
    /// Whether `target` lies within this delegation's paths; O(log n) in the number of paths.
    /// Always false when the paths were not kept.
    pub fn allows(&self, target: &str) -> bool {
        self.prefixes.as_ref().is_some_and(|prefixes| prefixes.allows(target))
    }

    /// Whether every path of `child` lies within one of this delegation's paths; O(m log n).
    /// False when the child's paths were not kept.
    pub fn contains_paths_of(&self, child: &Delegation) -> bool {
        child.prefixes.as_ref().is_some_and(|prefixes| self.contains(prefixes))
    }

    /// Whether every prefix of `set` lies within one of this delegation's paths.
    fn contains(&self, set: &PathPrefixes) -> bool {
        // Checking the kept prefixes is enough: each path of the set extends one of them.
        set.iter().all(|path| self.allows(path))
    }

    /// The delegation's paths, without those another of its paths already covers, sorted;
    /// `None` when they were not kept.
    pub fn prefixes(&self) -> Option<&PathPrefixes> {
        self.prefixes.as_ref()
    }
}

/// What [`Targets::read`] checks while it reads a targets body, and which delegations' paths
/// it keeps. A file may declare a thousand delegations of a thousand paths each; indexing them
/// costs about as much memory as the file, so a caller that needs only a few keeps only those.
pub struct TargetsReading<'a, F> {
    /// Called with each target name; the first for which it is true is reported (the names
    /// themselves are not kept).
    pub outside: F,
    /// Every delegation's paths must lie within these (the role's own declaration); the first
    /// delegation whose paths do not is reported.
    pub within: Option<&'a Delegation>,
    /// Which delegations keep their paths (all when `None`).
    pub keep_paths: Option<&'a dyn Fn(&RoleName) -> bool>,
    /// Whether the target entries are read and checked. A reader that needs only the
    /// delegations of a file the update verifier read before (the record of a publish) skips
    /// them: `targets` is then only checked to be an object or `null`, and `target_count` is 0.
    pub read_targets: bool,
}

/// What [`Targets::read`] found beside the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetsFindings {
    /// The first target name, in file order, for which [`TargetsReading::outside`] was true.
    pub first_outside: Option<String>,
    /// The first delegation, in file order, with paths outside [`TargetsReading::within`].
    pub delegation_outside: Option<RoleName>,
}

/// The body of `targets.json` or of a delegated targets file.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Version number.
    pub version: i64,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// How many targets the file lists (0 when [`TargetsReading::read_targets`] was false). Each
    /// name and meta is checked as it is read and then dropped: nothing after the checks needs
    /// them, and a file may list 100,000 targets.
    pub target_count: usize,
    /// Keys of the delegations (IDs checked).
    pub delegation_keys: BTreeMap<String, PublicKey>,
    /// Delegated roles, in file order.
    pub delegations: Vec<Delegation>,
    /// Delegation name → its index in `delegations`.
    by_name: BTreeMap<RoleName, usize>,
}

impl Targets {
    /// Reads and checks a targets body written for `role`: delegations must be direct children
    /// of `role`, and target names must be clean.
    pub fn from_signed(signed: &Signed<'_>, role: &RoleName) -> Result<Self, MetadataError> {
        Self::from_signed_with(signed, role, |_| false).map(|(targets, _)| targets)
    }

    /// [`Targets::from_signed`], also returning the first target name (in file order) for which
    /// `outside` is true: how a caller checks every name against what it allows without the
    /// names being kept.
    pub fn from_signed_with(
        signed: &Signed<'_>,
        role: &RoleName,
        outside: impl FnMut(&str) -> bool,
    ) -> Result<(Self, Option<String>), MetadataError> {
        let reading = TargetsReading { outside, within: None, keep_paths: None, read_targets: true };
        Self::read(signed, role, reading).map(|(targets, findings)| (targets, findings.first_outside))
    }

    /// [`Targets::from_signed`], checking target names and delegation paths as
    /// `reading` says and keeping the paths only of the delegations it names.
    pub fn read<F: FnMut(&str) -> bool>(
        signed: &Signed<'_>,
        role: &RoleName,
        reading: TargetsReading<'_, F>,
    ) -> Result<(Self, TargetsFindings), MetadataError> {
        let TargetsReading { outside, within, keep_paths, read_targets } = reading;
        expect_type(signed, "Targets", fields::TARGETS)?;
        let version = positive_version(signed)?;
        let expires = signed.expires()?;
        let mut entries = TargetEntries { count: 0, outside, first_outside: None, problem: None };
        match signed.member("targets") {
            Some(raw) if first_byte(raw.get().as_bytes()) == Some(b'{') && !read_targets => {}
            Some(raw) if first_byte(raw.get().as_bytes()) == Some(b'{') => {
                let mut reader = serde_json::Deserializer::from_str(raw.get());
                let read = reader.deserialize_map(&mut entries);
                match (read, entries.problem.take()) {
                    (_, Some(problem)) => return Err(problem),
                    (Err(error), None) => return Err(MetadataError::Json(error.to_string())),
                    (Ok(()), None) => {}
                }
            }
            Some(raw) if !is_null(raw) => return Err(structure("\"targets\" is not an object")),
            _ => {}
        }
        let mut delegation_outside = None;
        let (delegation_keys, delegations, by_name) = match signed.member("delegations") {
            Some(raw) if first_byte(raw.get().as_bytes()) == Some(b'{') => {
                let keep = |name: &RoleName| keep_paths.is_none_or(|keep| keep(name));
                parse_delegations(raw, role, within, &keep, &mut delegation_outside)?
            }
            Some(raw) if !is_null(raw) => return Err(structure("\"delegations\" is not an object")),
            _ => (BTreeMap::new(), Vec::new(), BTreeMap::new()),
        };
        let targets = Self { version, expires, target_count: entries.count, delegation_keys, delegations, by_name };
        Ok((targets, TargetsFindings { first_outside: entries.first_outside, delegation_outside }))
    }

    /// The declaration of the direct child `child`, if this file declares it.
    pub fn delegation(&self, child: &RoleName) -> Option<&Delegation> {
        self.by_name.get(child).and_then(|index| self.delegations.get(*index))
    }
}

/// Reads the `targets` object entry by entry, checking each name and meta as it goes and
/// keeping none of them: the first refused entry is left in `problem`, the first name
/// `outside` calls outside in `first_outside`.
struct TargetEntries<F> {
    count: usize,
    outside: F,
    first_outside: Option<String>,
    problem: Option<MetadataError>,
}

impl<'de, F: FnMut(&str) -> bool> Visitor<'de> for &mut TargetEntries<F> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a map of targets")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            // One entry's meta as its text, checked without a tree where it has the usual shape.
            let meta: &'de RawValue = map.next_value()?;
            let checked = check_target_name(&name)
                .map_err(|error| structure(error.to_string()))
                .and_then(|_| check_target_meta(&name, meta.get()));
            if let Err(error) = checked {
                self.problem = Some(error);
                return Err(A::Error::custom("a target is refused"));
            }
            if self.first_outside.is_none() && (self.outside)(&name) {
                self.first_outside = Some(name.into_owned());
            }
            self.count = self.count.saturating_add(1);
        }
        Ok(())
    }
}

/// Checks one target's meta (its JSON text) as [`FileMeta::parse`] does. An entry whose members
/// are exactly `length`, `hashes` and maybe `custom`, with a non-negative integer length and
/// string hashes that decode (SHA-256 and SHA-512 of their sizes), is accepted as it is read,
/// without a tree or a copy; any other entry is read as a tree by [`FileMeta::parse`], which
/// accepts it or says what is wrong. Both accept the same entries: this runs for each of up to
/// 100,000 targets per file.
fn check_target_meta(name: &str, text: &str) -> Result<(), MetadataError> {
    if text.starts_with('{') && serde_json::from_str::<QuickMeta<'_>>(text).is_ok_and(|meta| meta.length >= 0) {
        return Ok(());
    }
    let meta: Value = from_json(text)?;
    FileMeta::parse(&meta, &format!("target {name:?}")).map(drop)
}

/// A target's meta in its usual shape: see [`check_target_meta`]. Any other member, or a member
/// of another type, fails the read (and the entry is read the slow way).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuickMeta<'a> {
    length: i64,
    /// Read only to check that every digest decodes.
    #[serde(rename = "hashes")]
    _hashes: QuickHashes,
    /// Read only to skip it: `custom` may hold anything.
    #[serde(rename = "custom", borrow, default)]
    _custom: Option<&'a RawValue>,
}

/// The `hashes` of a [`QuickMeta`]: an object of base64 strings, read without being kept; a
/// digest that does not decode, or a SHA-256 or SHA-512 digest of the wrong size, fails the read.
struct QuickHashes;

impl<'de> serde::Deserialize<'de> for QuickHashes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(QuickHashes)
    }
}

impl<'de> Visitor<'de> for QuickHashes {
    type Value = QuickHashes;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an object of base64 digests")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<QuickHashes, A::Error> {
        let mut decoded = [0_u8; 128];
        while let Some(algorithm) = map.next_key::<Cow<'de, str>>()? {
            let digest = map.next_value::<Cow<'de, str>>()?;
            let size = match algorithm.as_ref() {
                "sha256" => Some(32),
                "sha512" => Some(64),
                _ => None,
            };
            let fits = match size {
                Some(size) => B64.decode_slice(digest.as_bytes(), &mut decoded).is_ok_and(|length| length == size),
                None => B64.decode(digest.as_bytes()).is_ok(),
            };
            if !fits {
                return Err(A::Error::custom("a digest is not what the slow read accepts"));
            }
        }
        Ok(QuickHashes)
    }
}

type DelegationSection = (BTreeMap<String, PublicKey>, Vec<Delegation>, BTreeMap<RoleName, usize>);

/// One delegation path as written: borrowed from the text unless it holds an escape.
#[derive(serde::Deserialize)]
struct PathText<'a>(#[serde(borrow)] Cow<'a, str>);

/// A list of delegation paths read only to check that each is a string; nothing is kept.
struct PathStrings;

impl<'de> serde::Deserialize<'de> for PathStrings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PathStrings)
    }
}

impl<'de> Visitor<'de> for PathStrings {
    type Value = PathStrings;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<PathStrings, A::Error> {
        while items.next_element::<PathText<'de>>()?.is_some() {}
        Ok(PathStrings)
    }
}

/// Whether `raw` is the JSON `null`.
fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// Reads the `delegations` section from its text, one delegation at a time: no generic tree of
/// the whole section (which may hold a million paths) is built, and each delegation for which
/// `keep` is true keeps its paths as one indexed prefix set (the others are checked and dropped).
/// The first delegation whose paths are not all within `within` is left in `outside`.
fn parse_delegations(
    section: &RawValue,
    role: &RoleName,
    within: Option<&Delegation>,
    keep: &dyn Fn(&RoleName) -> bool,
    outside: &mut Option<RoleName>,
) -> Result<DelegationSection, MetadataError> {
    let section: BTreeMap<String, &RawValue> = from_json(section.get())?;
    check_names(section.keys(), fields::DELEGATIONS, "\"delegations\"")?;
    let keys = match section.get("keys") {
        Some(raw) => parse_keys(Some(&from_json::<Value>(raw.get())?), "delegation")?,
        None => BTreeMap::new(),
    };
    let mut delegations: Vec<Delegation> = Vec::new();
    let mut by_name: BTreeMap<RoleName, usize> = BTreeMap::new();
    let entries: Vec<&RawValue> = match section.get("roles") {
        Some(raw) if first_byte(raw.get().as_bytes()) == Some(b'[') => from_json(raw.get())?,
        Some(raw) if !is_null(raw) => return Err(structure("delegation roles are not a list")),
        _ => Vec::new(),
    };
    for entry in entries {
        let entry: BTreeMap<String, &RawValue> = match first_byte(entry.get().as_bytes()) {
            Some(b'{') => from_json(entry.get())?,
            _ => BTreeMap::new(),
        };
        check_names(entry.keys(), fields::DELEGATION, "a delegation")?;
        let name = entry
            .get("name")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .and_then(|name| RoleName::parse(&name).ok())
            .filter(RoleName::is_delegation)
            .ok_or_else(|| structure("a delegation has an invalid role name"))?;
        if name.parent().as_ref() != Some(role) {
            return Err(structure(format!("delegation {name} is not a direct child of {role}")));
        }
        if by_name.contains_key(&name) {
            return Err(structure(format!("delegation {name} is declared twice")));
        }
        // The key IDs and threshold as a small tree, read as a root role's are.
        let mut keys_and_threshold = Map::new();
        for field in ["keyids", "threshold"] {
            if let Some(raw) = entry.get(field) {
                keys_and_threshold.insert(field.to_owned(), from_json(raw.get())?);
            }
        }
        let role_keys = parse_role_keys(&Value::Object(keys_and_threshold), &keys, &format!("delegation {name}"))?;
        // The paths are indexed only when they are kept or checked against `within`; otherwise
        // they are only checked to be strings (a file may declare a million paths).
        let indexed = within.is_some() || keep(&name);
        let prefixes = match entry.get("paths") {
            Some(raw) if first_byte(raw.get().as_bytes()) == Some(b'[') && !indexed => {
                serde_json::from_str::<PathStrings>(raw.get())
                    .map_err(|_| structure("a delegation path is not a string"))?;
                PathPrefixes::default()
            }
            Some(raw) if first_byte(raw.get().as_bytes()) == Some(b'[') => {
                let paths: Vec<PathText<'_>> =
                    serde_json::from_str(raw.get()).map_err(|_| structure("a delegation path is not a string"))?;
                PathPrefixes::new(paths.iter().map(|path| path.0.as_ref()))
                    .ok_or_else(|| structure(format!("delegation {name} has more path text than 4 GiB")))?
            }
            Some(raw) if !is_null(raw) => return Err(structure("delegation paths are not a list")),
            _ => PathPrefixes::default(),
        };
        if entry.get("path_hash_prefixes").is_some_and(|raw| !is_null(raw)) {
            return Err(structure("path_hash_prefixes are not supported"));
        }
        if outside.is_none() && within.is_some_and(|within| !within.contains(&prefixes)) {
            *outside = Some(name.clone());
        }
        let prefixes = keep(&name).then_some(prefixes);
        by_name.insert(name.clone(), delegations.len());
        delegations.push(Delegation { name, keys: role_keys, prefixes });
    }
    Ok((keys, delegations, by_name))
}

/// The body of `snapshot.json`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Version number.
    pub version: i64,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// Role name → meta of that role's current file (`root` and `targets` present).
    pub meta: BTreeMap<String, FileMeta>,
}

impl Snapshot {
    /// Reads and checks a snapshot body.
    pub fn from_signed(signed: &Signed<'_>) -> Result<Self, MetadataError> {
        expect_type(signed, "Snapshot", fields::SNAPSHOT)?;
        let version = positive_version(signed)?;
        let expires = signed.expires()?;
        let Some(Value::Object(map)) = signed.value("meta")? else {
            return Err(structure("snapshot has no meta"));
        };
        let mut meta = BTreeMap::new();
        for (name, value) in map {
            let entry = FileMeta::parse(&value, &format!("snapshot entry {name}"))?;
            meta.insert(name, entry);
        }
        for required in ["root", "targets"] {
            if meta.get(required).and_then(FileMeta::sha256).is_none() {
                return Err(structure(format!("snapshot has no sha256 for {required}")));
            }
        }
        Ok(Self { version, expires, meta })
    }

    /// The canonical body of a snapshot.
    pub fn body(&self) -> Value {
        let meta: Map<String, Value> = self.meta.iter().map(|(name, meta)| (name.clone(), meta.to_json())).collect();
        let mut body = Map::new();
        body.insert("_type".into(), Value::String("Snapshot".into()));
        body.insert("expires".into(), Value::String(time::format(self.expires)));
        body.insert("meta".into(), Value::Object(meta));
        body.insert("version".into(), Value::from(self.version));
        Value::Object(body)
    }
}

/// The body of `timestamp.json`.
#[derive(Debug, Clone)]
pub struct Timestamp {
    /// Version number.
    pub version: i64,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// Meta of the current snapshot.
    pub snapshot: FileMeta,
}

impl Timestamp {
    /// Reads and checks a timestamp body.
    pub fn from_signed(signed: &Signed<'_>) -> Result<Self, MetadataError> {
        expect_type(signed, "Timestamp", fields::SNAPSHOT)?;
        let version = positive_version(signed)?;
        let expires = signed.expires()?;
        let meta = signed.value("meta")?;
        let snapshot = meta
            .as_ref()
            .and_then(|meta| meta.get("snapshot"))
            .ok_or_else(|| structure("timestamp has no snapshot meta"))?;
        let snapshot = FileMeta::parse(snapshot, "timestamp snapshot entry")?;
        if snapshot.sha256().is_none() {
            return Err(structure("timestamp has no sha256 for the snapshot"));
        }
        Ok(Self { version, expires, snapshot })
    }

    /// The canonical body of a timestamp.
    pub fn body(&self) -> Value {
        let mut meta = Map::new();
        meta.insert("snapshot".into(), self.snapshot.to_json());
        let mut body = Map::new();
        body.insert("_type".into(), Value::String("Timestamp".into()));
        body.insert("expires".into(), Value::String(time::format(self.expires)));
        body.insert("meta".into(), Value::Object(meta));
        body.insert("version".into(), Value::from(self.version));
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_notary_client_files_pass_the_strict_parser() {
        let read = |bytes: &'static [u8]| Signed::parse(bytes).unwrap();
        let root = Root::from_signed(&read(include_bytes!("../tests/data/notary-0.7/root.json"))).unwrap();
        assert_eq!((root.version, root.keys.len()), (1, 4));
        let targets_role = RoleName::base(BaseRole::Targets);
        let targets = read(include_bytes!("../tests/data/notary-0.7/targets.json"));
        assert_eq!(Targets::from_signed(&targets, &targets_role).unwrap().version, 1);
        let snapshot = read(include_bytes!("../tests/data/notary-0.7/snapshot.json"));
        assert_eq!(Snapshot::from_signed(&snapshot).unwrap().meta.len(), 2);
        let timestamp = read(include_bytes!("../tests/data/notary-0.7/timestamp.json"));
        assert_eq!(Timestamp::from_signed(&timestamp).unwrap().snapshot.length, 682);
    }

    #[test]
    fn the_quick_target_check_accepts_and_refuses_what_file_meta_does() {
        let sha256 = "LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=";
        let sha512 = B64.encode([7_u8; 64]);
        let slow =
            |text: &str| FileMeta::parse(&serde_json::from_str::<Value>(text).unwrap(), "target \"t\"").map(drop);
        let bad = |problem: &str| Err(structure(format!("target \"t\" {problem}")));
        let cases: Vec<(String, Result<(), MetadataError>)> = vec![
            (format!(r#"{{"hashes":{{"sha256":"{sha256}"}},"length":1}}"#), Ok(())),
            (
                format!(
                    r#"{{"custom":{{"a":[1,null]}},"hashes":{{"sha256":"{sha256}","sha512":"{sha512}"}},"length":0}}"#
                ),
                Ok(()),
            ),
            (r#"{"custom":null,"hashes":{"md5":"AAAA"},"length":3}"#.to_owned(), Ok(())),
            (r#"{"hashes":{},"length":3}"#.to_owned(), Ok(())),
            (format!(r#"{{"hashes":{{"sha256":"{sha256}"}},"length":-1}}"#), bad("has no valid length")),
            (format!(r#"{{"hashes":{{"sha256":"{sha256}"}},"length":1.5}}"#), bad("has no valid length")),
            (
                format!(r#"{{"hashes":{{"sha256":"{sha256}"}},"length":9223372036854775808}}"#),
                bad("has no valid length"),
            ),
            (format!(r#"{{"hashes":{{"sha256":"{sha256}"}}}}"#), bad("has no valid length")),
            (r#"{"hashes":{"sha256":"AAAA"},"length":1}"#.to_owned(), bad("has a hash of the wrong size")),
            (format!(r#"{{"hashes":{{"sha512":"{sha256}"}},"length":1}}"#), bad("has a hash of the wrong size")),
            (r#"{"hashes":{"sha256":"not base64!"},"length":1}"#.to_owned(), bad("has a hash that is not base64")),
            (r#"{"hashes":{"sha256":7},"length":1}"#.to_owned(), bad("has a hash that is not base64")),
            (r#"{"hashes":[],"length":1}"#.to_owned(), bad("has no hashes")),
            (
                format!(r#"{{"Hashes":{{"sha256":"{sha256}"}},"hashes":{{"sha256":"{sha256}"}},"length":1}}"#),
                Err(structure("target \"t\" has the field \"Hashes\", which differs only in case from \"hashes\"")),
            ),
            (format!(r#"{{"extra":1,"hashes":{{"sha256":"{sha256}"}},"length":1}}"#), Ok(())),
        ];
        for (text, expected) in cases {
            assert_eq!(slow(&text), expected, "FileMeta::parse of {text}");
            assert_eq!(check_target_meta("t", &text), expected, "check_target_meta of {text}");
        }
    }

    #[test]
    fn targets_are_checked_as_they_are_read_and_not_kept() {
        let meta = r#"{"hashes":{"sha256":"LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="},"length":1}"#;
        let file = |targets: &str| {
            let body = format!(
                r#"{{"_type":"Targets","delegations":{{"keys":{{}},"roles":[]}},"expires":"2030-01-01T00:00:00Z","targets":{targets},"version":2}}"#
            );
            envelope(body.as_bytes(), &[])
        };
        let role = RoleName::base(BaseRole::Targets);
        let bytes = file(&format!(r#"{{"a/1":{meta},"b/2":{meta},"c/3":{meta}}}"#));
        let signed = Signed::parse(&bytes).unwrap();
        let (targets, outside) = Targets::from_signed_with(&signed, &role, |name| !name.starts_with("a/")).unwrap();
        assert_eq!((targets.target_count, outside.as_deref()), (3, Some("b/2")));
        let (_, outside) = Targets::from_signed_with(&signed, &role, |_| false).unwrap();
        assert_eq!(outside, None);
        // A bad entry is refused with its own error, whatever comes after it.
        let bytes = file(&format!(r#"{{"a/1":{meta},"b/2":{{"length":1}},"c/3":7}}"#));
        let signed = Signed::parse(&bytes).unwrap();
        assert_eq!(
            Targets::from_signed(&signed, &role).unwrap_err(),
            MetadataError::Structure("target \"b/2\" has no hashes".into())
        );
        let bytes = file("[]");
        let signed = Signed::parse(&bytes).unwrap();
        assert_eq!(
            Targets::from_signed(&signed, &role).unwrap_err(),
            MetadataError::Structure("\"targets\" is not an object".into())
        );
        let bytes = file("null");
        assert_eq!(Targets::from_signed(&Signed::parse(&bytes).unwrap(), &role).unwrap().target_count, 0);
    }

    #[test]
    fn delegation_paths_are_kept_only_where_asked_and_checked_against_the_role_own() {
        let key = crate::keys::PrivateKey::generate(crate::keys::Algorithm::Ecdsa).unwrap().public_key();
        let id = key.key_id();
        let file = |roles: Value| {
            let body = serde_json::json!({"_type": "Targets", "expires": "2030-01-01T00:00:00Z", "targets": {},
                "version": 2, "delegations": {"keys": {id.clone(): key.to_json()}, "roles": roles}});
            envelope(&crate::canonical::to_canonical(&body).unwrap(), &[])
        };
        let role = |name: &str| RoleName::parse(name).unwrap();
        let declare = |name: &str, paths: &[&str]| serde_json::json!({"keyids": [id], "name": name, "paths": paths, "threshold": 1});
        // The declaration of targets/a, as its parent makes it.
        let top = file(serde_json::json!([declare("targets/a", &["a/"])]));
        let top = Targets::from_signed(&Signed::parse(&top).unwrap(), &RoleName::base(BaseRole::Targets)).unwrap();
        let own = top.delegation(&role("targets/a")).unwrap();
        assert_eq!(own.prefixes().map(|set| set.iter().collect::<Vec<_>>()), Some(vec!["a/"]));

        let bytes =
            file(serde_json::json!([declare("targets/a/x", &["a/x/"]), declare("targets/a/y", &["b/", "a/y/"])]));
        let signed = Signed::parse(&bytes).unwrap();
        let keep = |name: &RoleName| name.as_str() == "targets/a/x";
        let reading =
            TargetsReading { outside: |_: &str| false, within: Some(own), keep_paths: Some(&keep), read_targets: true };
        let (body, findings) = Targets::read(&signed, &role("targets/a"), reading).unwrap();
        assert_eq!(findings, TargetsFindings { first_outside: None, delegation_outside: Some(role("targets/a/y")) });
        let kept = body.delegation(&role("targets/a/x")).unwrap();
        assert!(kept.allows("a/x/1") && !kept.allows("a/y/1"));
        // A delegation whose paths were not kept allows nothing, and contains nothing.
        let dropped = body.delegation(&role("targets/a/y")).unwrap();
        assert_eq!(dropped.prefixes(), None);
        assert!(!dropped.allows("a/y/1"));
        assert!(!own.contains_paths_of(dropped));
        assert!(own.contains_paths_of(kept));

        // Without a filter every delegation keeps its paths; without `within` nothing is outside.
        let reading = TargetsReading { outside: |_: &str| false, within: None, keep_paths: None, read_targets: true };
        let (body, findings) = Targets::read(&signed, &role("targets/a"), reading).unwrap();
        assert_eq!(findings, TargetsFindings::default());
        assert!(body.delegation(&role("targets/a/y")).unwrap().allows("b/1"));
    }

    #[test]
    fn members_are_counted_without_parsing_them() {
        let raw = |text: &str| serde_json::from_str::<Box<RawValue>>(text).unwrap();
        assert_eq!(count(Some(&raw(r#"{"a":[1,{"b":2}],"c":null}"#))), 2);
        assert_eq!(count(Some(&raw(r#"[[],{},"x",1,true,null]"#))), 6);
        for scalar in ["1", "-1.5", "\"x\"", "true", "null"] {
            assert_eq!(count(Some(&raw(scalar))), 0, "{scalar}");
        }
        assert_eq!(count(None), 0);
    }

    /// The quadratic definition the indexed set must agree with.
    fn naive(paths: &[&str], name: &str) -> bool {
        paths.iter().any(|prefix| name.starts_with(prefix))
    }

    #[test]
    fn path_prefixes_agree_with_the_pairwise_definition() {
        let path_sets: [&[&str]; 7] = [
            &[],
            &[""],
            &["a/", "a/b/", "b"],
            &["release/", "rel", "release/v1/", "z", "a"],
            &["ab", "a", "abc", "b/", "ba"],
            &["x/é", "x/", "x/\u{10ffff}"],
            &["v1", "v10", "v2", "v1.0/"],
        ];
        let names = [
            "",
            "a",
            "a/",
            "a/b/c",
            "ab",
            "abc",
            "b",
            "b/x",
            "ba",
            "bb",
            "rel",
            "release/v1/x",
            "release",
            "x/é",
            "x",
            "x/ü",
            "z",
            "zz",
            "v1",
            "v10x",
            "v2",
            "v3",
            "v1.0/a",
            "\u{10ffff}",
        ];
        for paths in path_sets {
            let set = PathPrefixes::new(paths.iter().copied()).unwrap();
            for name in names {
                assert_eq!(set.allows(name), naive(paths, name), "paths {paths:?}, name {name:?}");
            }
        }
    }

    #[test]
    fn covered_prefixes_are_dropped() {
        let set = PathPrefixes::new(["a/b/", "a/", "c", "a/c", "cd"]).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), ["a/", "c"]);
        assert_eq!(PathPrefixes::new(["x", ""]).unwrap().iter().collect::<Vec<_>>(), [""]);
    }
}
