//! What an accepted update means for the record: the grants a root or a targets-type file makes
//! (which keys may sign which role, for which paths, with which threshold) and the targets a
//! targets-type file adds, changes or removes. Pure functions of metadata bytes: no IO.
//!
//! Targets are read one entry at a time from the text of `signed.targets`, never as a tree: a
//! file may list 100,000 targets. Canonical JSON sorts object members byte-wise, so the entries
//! of two versions of a file are merged in one pass; a file whose targets are not in that order
//! is refused.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::keys::PublicKey;
use crate::metadata::{MetadataError, RoleKeys, Root, Signed, Targets, TargetsReading};
use crate::names::{BaseRole, RoleName};
use crate::x509;

/// Why a file's grants or targets could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a valid metadata file of the expected kind.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The role or the file is not of the kind asked for (not a targets-type role, not a
    /// `Targets` file), or its `targets` member is not an object whose entries are in canonical
    /// (byte-wise sorted) order.
    #[error("{0}")]
    Structure(String),
    /// One target's entry cannot be read.
    #[error("target {name:?} {problem}")]
    Target {
        /// The target's name.
        name: String,
        /// What is wrong with its entry.
        problem: String,
    },
}

fn structure(message: impl Into<String>) -> RecordError {
    RecordError::Structure(message.into())
}

/// One key a grant trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantKey {
    /// The key ID as the metadata lists it (for a certificate, the ID of the certificate key).
    pub key_id: String,
    /// The canonical key ID ([`PublicKey::canonical_id`]): for a certificate, the ID of the bare
    /// key inside it, which is how signers and key stores name the key.
    pub canonical_id: String,
    /// The subject of the key's certificate as an RFC 4514 string (last relative distinguished
    /// name first, such as `CN=example.com/app,O=Example`) when the key is a certificate
    /// (`ecdsa-x509`, `rsa-x509`; the first certificate of its bundle), else `None`.
    pub subject: Option<String>,
}

/// "`delegating_role` lets these keys sign `delegated_role` (for these paths) with this
/// threshold".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The role whose file makes the grant: `root` for the four base roles, otherwise the
    /// targets-type role whose `delegations` declare `delegated_role`.
    pub delegating_role: String,
    /// The role the grant is for.
    pub delegated_role: String,
    /// The keys the role lists, sorted by key ID, each once.
    pub keys: Vec<GrantKey>,
    /// The path patterns (target name prefixes; `""` is everything) of a delegation as a compact
    /// JSON array of strings, in file order; `[]` when the delegation lists none (it may then
    /// sign nothing). `None` for the base roles, which cover everything. Text, not a list, so a
    /// file with a million paths costs about its own size to record.
    pub paths: Option<String>,
    /// Distinct keys whose signatures the role needs.
    pub threshold: i64,
}

/// The grant of `role_keys` with keys looked up in `keys`.
fn grant(
    delegating_role: &str,
    delegated_role: &str,
    role_keys: &RoleKeys,
    keys: &BTreeMap<String, PublicKey>,
    paths: Option<String>,
) -> Grant {
    let listed: BTreeSet<&str> = role_keys.keyids.iter().map(String::as_str).collect();
    // Parsing checked that every listed key is among the keys, so none is left out here.
    let keys = listed.into_iter().filter_map(|key_id| keys.get(key_id).map(|key| grant_key(key_id, key))).collect();
    Grant {
        delegating_role: delegating_role.to_owned(),
        delegated_role: delegated_role.to_owned(),
        keys,
        paths,
        threshold: role_keys.threshold,
    }
}

fn grant_key(key_id: &str, key: &PublicKey) -> GrantKey {
    // Parsing checked every key's material, which for a certificate key means its first
    // certificate parses, so neither fallback below is taken for a parsed file.
    let canonical_id = key.canonical_id().unwrap_or_else(|_| key.key_id());
    let subject = if key.keytype().is_x509() {
        x509::first_certificate(key.public()).ok().map(|certificate| certificate.subject)
    } else {
        None
    };
    GrantKey { key_id: key_id.to_owned(), canonical_id, subject }
}

/// The grants a root makes: `root`, `targets`, `snapshot` and `timestamp`, in that order, each
/// with delegating role `root`, paths `None` and its keys sorted by key ID.
pub fn root_grants(root: &Root) -> Vec<Grant> {
    [BaseRole::Root, BaseRole::Targets, BaseRole::Snapshot, BaseRole::Timestamp]
        .into_iter()
        .filter_map(|base| root.role(base).map(|role_keys| grant("root", base.as_str(), role_keys, &root.keys, None)))
        .collect()
}

/// The grants a stored or uploaded file of `role` makes: [`root_grants`] for `root` (the file is
/// read as [`Root::from_signed`] reads it), [`delegation_grants`] for a targets-type role, and
/// none for `snapshot` and `timestamp`, which grant nothing. For backfilling the grants of
/// stored versions; signatures are not checked.
pub fn file_grants(role: &RoleName, bytes: &[u8]) -> Result<Vec<Grant>, RecordError> {
    if !role.is_targets_type() && role.as_str() != BaseRole::Root.as_str() {
        return Ok(Vec::new());
    }
    file_grants_of(role, &Signed::parse(bytes)?)
}

/// [`file_grants`] of a file already parsed as `signed`.
pub fn file_grants_of(role: &RoleName, signed: &Signed<'_>) -> Result<Vec<Grant>, RecordError> {
    if role.is_targets_type() {
        return delegation_grants_of(role, signed);
    }
    if role.as_str() == BaseRole::Root.as_str() {
        return Ok(root_grants(&Root::from_signed(signed)?));
    }
    Ok(Vec::new())
}

/// The `delegations.roles` entries of a targets file, reduced to their names and paths as
/// written (everything else is read by [`Targets::from_signed`]).
#[derive(serde::Deserialize)]
struct PathsSection<'a> {
    #[serde(default, borrow)]
    roles: Option<Vec<PathsEntry<'a>>>,
}

#[derive(serde::Deserialize)]
struct PathsEntry<'a> {
    name: String,
    #[serde(default, borrow)]
    paths: Option<&'a RawValue>,
}

/// A delegation's `paths` as compact JSON text (`[]` when missing or null): one string per
/// grant instead of one per path, so a file with a million paths is recorded in about its own
/// size.
fn paths_text(raw: Option<&RawValue>) -> Result<String, RecordError> {
    match raw.filter(|raw| raw.get() != "null") {
        None => Ok("[]".to_owned()),
        Some(raw) => compact_paths(raw.get()),
    }
}

/// The paths of a located grant (see [`delegation_grants_located`]) of `bytes` as the compact
/// JSON text [`Grant::paths`] holds.
pub fn paths_text_at(bytes: &[u8], range: PathsRange) -> Result<String, RecordError> {
    match range {
        None => Ok("[]".to_owned()),
        Some(_) => compact_paths(paths_at(bytes, range)?),
    }
}

/// A JSON array of path strings as compact text.
fn compact_paths(text: &str) -> Result<String, RecordError> {
    let paths: Vec<std::borrow::Cow<'_, str>> =
        serde_json::from_str(text).map_err(|error| structure(format!("paths cannot be read: {error}")))?;
    serde_json::to_string(&paths).map_err(|error| structure(format!("paths cannot be written: {error}")))
}

/// The grants a targets-type file of `role` makes through its `delegations`, sorted by delegated
/// role; none when it has no `delegations` section or declares no role. The delegations are read
/// as the update verifier reads them ([`Targets::from_signed`]: keys, key IDs, thresholds and the
/// names of direct children checked); the target entries and signatures are not checked.
pub fn delegation_grants(role: &RoleName, bytes: &[u8]) -> Result<Vec<Grant>, RecordError> {
    delegation_grants_of(role, &Signed::parse(bytes)?)
}

/// [`delegation_grants`] of a file already parsed as `signed`.
pub fn delegation_grants_of(role: &RoleName, signed: &Signed<'_>) -> Result<Vec<Grant>, RecordError> {
    delegations_with_paths(role, signed)?
        .into_iter()
        .map(|(mut grant, raw)| {
            grant.paths = Some(paths_text(raw)?);
            Ok(grant)
        })
        .collect()
}

/// Where a delegation's `paths` are written in its file: the byte range of the JSON array as
/// written, or `None` when the delegation lists no paths (they read as `[]`).
pub type PathsRange = Option<(usize, usize)>;

/// [`delegation_grants_of`] of `bytes` (parsed as `signed`), each grant without its paths
/// (`paths: None`) but with where they are written in `bytes`, to be read with [`paths_at`]
/// when needed: a file with a million paths never has them copied all at once.
pub fn delegation_grants_located(
    role: &RoleName,
    bytes: &[u8],
    signed: &Signed<'_>,
) -> Result<Vec<(Grant, PathsRange)>, RecordError> {
    locate_paths(bytes, delegations_with_paths(role, signed)?)
}

/// The paths text at `range` of `bytes` (see [`delegation_grants_located`]): the JSON array as
/// written, `[]` for none.
pub fn paths_at(bytes: &[u8], range: PathsRange) -> Result<&str, RecordError> {
    match range {
        None => Ok("[]"),
        Some((start, end)) => bytes
            .get(start..end)
            .and_then(|text| std::str::from_utf8(text).ok())
            .filter(|text| text.starts_with('['))
            .ok_or_else(|| structure("the paths are not where they were found")),
    }
}

/// Where `text`, a piece of a parse of `bytes` (which borrows it), lies in `bytes`: the distance
/// between the two addresses, checked against the bytes.
fn range_in(bytes: &[u8], text: &str) -> Option<(usize, usize)> {
    let text = text.as_bytes();
    let start = (text.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
    let end = start.checked_add(text.len()).filter(|end| *end <= bytes.len())?;
    (bytes.get(start..end) == Some(text)).then_some((start, end))
}

/// What the record reads of an uploaded targets-type file, taken while the update verifier has it
/// parsed ([`TargetsView::of`]) so that the record does not parse it again: where its target
/// entries are, and its delegation grants with where their paths are written.
#[derive(Debug, Clone)]
pub struct TargetsView {
    entries: EntriesCursor,
    /// [`delegation_grants_located`] of the file.
    pub grants: Vec<(Grant, PathsRange)>,
}

impl TargetsView {
    /// The view of `bytes`, a targets-type file of `role` parsed as `signed` whose body the
    /// verifier read as `body`.
    pub fn of(role: &RoleName, bytes: &[u8], signed: &Signed<'_>, body: &Targets) -> Result<Self, RecordError> {
        let entries = EntriesCursor::of(bytes, signed)?;
        let grants = locate_paths(bytes, grants_with_paths(role, signed, body)?)?;
        Ok(Self { entries, grants })
    }
}

/// Each grant with the byte range of its paths in `bytes` (which `raw` borrows from).
fn locate_paths(
    bytes: &[u8],
    grants: Vec<(Grant, Option<&RawValue>)>,
) -> Result<Vec<(Grant, PathsRange)>, RecordError> {
    grants
        .into_iter()
        .map(|(grant, raw)| {
            let range = match raw.filter(|raw| raw.get() != "null") {
                None => None,
                Some(raw) => Some(
                    range_in(bytes, raw.get()).ok_or_else(|| structure("the paths cannot be located in the file"))?,
                ),
            };
            Ok((grant, range))
        })
        .collect()
}

/// The grants of `signed`'s delegations (without paths, sorted by delegated role), each with its
/// `paths` member as written.
fn delegations_with_paths<'a>(
    role: &RoleName,
    signed: &Signed<'a>,
) -> Result<Vec<(Grant, Option<&'a RawValue>)>, RecordError> {
    if !role.is_targets_type() {
        return Err(structure(format!("{role} is not a targets role")));
    }
    // The delegations read as the verifier reads them, without indexing any delegation's paths
    // (the grants keep them as text) and without the target entries, which grants do not name.
    let keep_none = |_: &RoleName| false;
    let reading =
        TargetsReading { outside: |_: &str| false, within: None, keep_paths: Some(&keep_none), read_targets: false };
    let (targets, _) = Targets::read(signed, role, reading)?;
    grants_with_paths(role, signed, &targets)
}

/// [`delegations_with_paths`] with the delegations already read as `targets`.
fn grants_with_paths<'a>(
    role: &RoleName,
    signed: &Signed<'a>,
    targets: &Targets,
) -> Result<Vec<(Grant, Option<&'a RawValue>)>, RecordError> {
    if !role.is_targets_type() {
        return Err(structure(format!("{role} is not a targets role")));
    }
    let mut paths: BTreeMap<String, Option<&'a RawValue>> = BTreeMap::new();
    if let Some(section) = signed.member("delegations").filter(|raw| raw.get().starts_with('{')) {
        let section: PathsSection<'a> = serde_json::from_str(section.get())
            .map_err(|error| structure(format!("the delegations cannot be read: {error}")))?;
        for entry in section.roles.unwrap_or_default() {
            paths.insert(entry.name, entry.paths);
        }
    }
    let mut grants: Vec<(Grant, Option<&'a RawValue>)> = targets
        .delegations
        .iter()
        .map(|delegation| {
            let name = delegation.name.as_str();
            let own_paths = paths.remove(name).flatten();
            (grant(role.as_str(), name, &delegation.keys, &targets.delegation_keys, None), own_paths)
        })
        .collect();
    grants.sort_by(|a, b| a.0.delegated_role.cmp(&b.0.delegated_role));
    Ok(grants)
}

/// How a grant changed between two versions of the file that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantChange {
    /// Added (a new delegate), changed (its keys, paths or threshold differ) or removed.
    pub kind: ChangeKind,
    /// The grant in force after the change; for [`ChangeKind::Removed`] the grant revoked.
    pub grant: Grant,
}

/// What changed between the grants of two versions of one file (`previous` empty for the first
/// version: every grant is added), matched by delegated role, in delegated role order. A grant
/// whose keys (by key ID), paths or threshold differ is changed; an unchanged grant is left out.
pub fn grant_changes(previous: &[Grant], new: &[Grant]) -> Vec<GrantChange> {
    let before: BTreeMap<&str, &Grant> = previous.iter().map(|grant| (grant.delegated_role.as_str(), grant)).collect();
    let after: BTreeMap<&str, &Grant> = new.iter().map(|grant| (grant.delegated_role.as_str(), grant)).collect();
    let roles: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    roles
        .into_iter()
        .filter_map(|role| match (before.get(role), after.get(role)) {
            (None, Some(grant)) => Some(GrantChange { kind: ChangeKind::Added, grant: (*grant).clone() }),
            (Some(grant), None) => Some(GrantChange { kind: ChangeKind::Removed, grant: (*grant).clone() }),
            (Some(old), Some(grant)) if old.shape(old.paths.as_deref()) != grant.shape(grant.paths.as_deref()) => {
                Some(GrantChange { kind: ChangeKind::Changed, grant: (*grant).clone() })
            }
            _ => None,
        })
        .collect()
}

/// What tells a grant apart from another of the same delegated role: its keys (by key ID), its
/// threshold and its paths. A new version of a file keeps in force each grant whose shape it
/// leaves as it was (the grant's record is not rewritten), and supersedes the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantShape<'a> {
    /// The role the grant is for.
    pub delegated_role: Cow<'a, str>,
    /// The key IDs as the metadata lists them, each once.
    pub key_ids: BTreeSet<Cow<'a, str>>,
    /// Distinct keys whose signatures the role needs.
    pub threshold: i64,
    /// The delegation's paths as written (`[]` when it lists none); `None` for a base role.
    pub paths: Option<Cow<'a, str>>,
}

impl Grant {
    /// The grant's shape, with `paths` as the file writes them (`None` for a base role).
    pub fn shape<'a>(&'a self, paths: Option<&'a str>) -> GrantShape<'a> {
        GrantShape {
            delegated_role: Cow::Borrowed(&self.delegated_role),
            key_ids: self.keys.iter().map(|key| Cow::Borrowed(key.key_id.as_str())).collect(),
            threshold: self.threshold,
            paths: paths.map(Cow::Borrowed),
        }
    }
}

/// The shapes of the grants a stored targets file's `delegations` member (as written) makes, in
/// file order. The file was checked when it was stored, so only what a shape holds is read.
fn stored_grant_shapes(delegations: Option<&RawValue>) -> Result<Vec<GrantShape<'_>>, RecordError> {
    #[derive(serde::Deserialize)]
    struct Delegations<'a> {
        #[serde(borrow, default)]
        roles: Option<Vec<Delegation<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct Delegation<'a> {
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow, default)]
        keyids: Option<Vec<Cow<'a, str>>>,
        #[serde(default)]
        threshold: i64,
        #[serde(borrow, default)]
        paths: Option<&'a RawValue>,
    }
    let Some(raw) = delegations.filter(|raw| raw.get() != "null") else { return Ok(Vec::new()) };
    let read: Delegations<'_> = serde_json::from_str(raw.get())
        .map_err(|error| structure(format!("the stored delegations cannot be read: {error}")))?;
    Ok(read
        .roles
        .unwrap_or_default()
        .into_iter()
        .map(|role| GrantShape {
            delegated_role: role.name,
            key_ids: role.keyids.unwrap_or_default().into_iter().collect(),
            threshold: role.threshold,
            paths: Some(Cow::Borrowed(role.paths.map(RawValue::get).filter(|text| *text != "null").unwrap_or("[]"))),
        })
        .collect())
}

/// How a target's listing, or a grant, changed between two versions of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Listed in the new version only.
    Added,
    /// Listed in both, and different: another length, hash or `custom` value for a target;
    /// other keys, paths or threshold for a grant.
    Changed,
    /// Listed in the previous version only.
    Removed,
}

impl ChangeKind {
    /// `added`, `changed` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
        }
    }
}

/// A target as a targets file lists it, and how its listing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChange {
    /// The target's name.
    pub name: String,
    /// Added, changed or removed.
    pub kind: ChangeKind,
    /// The `sha256` hash of the entry as lower-case hex (TUF writes it in base64): of the new
    /// entry, or for `Removed` of the previous one. `None` when the entry lists no `sha256`.
    pub sha256: Option<String>,
    /// The entry's `length`: of the new entry, or for `Removed` of the previous one.
    pub length: Option<i64>,
    /// For `Changed`, the previous entry's `sha256` as lower-case hex; otherwise `None`.
    pub previous_sha256: Option<String>,
    /// For `Changed`, the previous entry's `length`; otherwise `None`.
    pub previous_length: Option<i64>,
}

/// What changed between two versions of one targets-type file (`previous` `None`: every target
/// is added), in name order (byte-wise). A target counts as changed when its length, any of its
/// hashes or its `custom` value differs. Both files are read one entry at a time and merged in
/// one pass; signatures are not checked.
pub fn target_changes(previous: Option<&[u8]>, new: &[u8]) -> Result<Vec<TargetChange>, RecordError> {
    let mut stream = TargetChangeStream::new(previous, new)?;
    stream.next_chunk(previous, new, usize::MAX)
}

/// The target changes between two versions of a targets-type file (as [`target_changes`] lists
/// them), produced a chunk at a time, so a publish of 100,000 targets never holds its changes in
/// memory at once. The stream keeps only where it stopped in each file; each call is given the
/// same two files again, so the caller keeps them where they already are.
#[derive(Debug, Clone)]
pub struct TargetChangeStream {
    old: EntriesCursor,
    new: EntriesCursor,
}

impl TargetChangeStream {
    /// Checks that both files are targets files (each parsed once, here) and finds their targets.
    pub fn new(previous: Option<&[u8]>, new: &[u8]) -> Result<Self, RecordError> {
        let old = match previous {
            Some(bytes) => EntriesCursor::of(bytes, &Signed::parse(bytes)?)?,
            None => EntriesCursor::default(),
        };
        Ok(Self { old, new: EntriesCursor::of(new, &Signed::parse(new)?)? })
    }

    /// [`TargetChangeStream::new`] for a `new` file the verifier saw as `view`. `previous` is a
    /// version stored before (it passed [`Signed::parse`] then), so it is only skimmed: its
    /// `targets` member located, and beside the stream, the shapes of the grants it makes (none
    /// without one), what a new version's grants are compared with to keep the unchanged ones in
    /// force ([`GrantShape`]).
    pub fn of_view_with_grants<'a>(
        previous: Option<&'a [u8]>,
        view: &TargetsView,
    ) -> Result<(Self, Vec<GrantShape<'a>>), RecordError> {
        let (old, grants) = match previous {
            Some(bytes) => {
                let (cursor, delegations) = EntriesCursor::of_stored(bytes)?;
                (cursor, stored_grant_shapes(delegations)?)
            }
            None => (EntriesCursor::default(), Vec::new()),
        };
        Ok((Self { old, new: view.entries.clone() }, grants))
    }

    /// The next at most `max` changes, in order; fewer only at the end, none once every change
    /// was returned. `previous` and `new` must be the bytes the stream was made from: other
    /// bytes give an error (or other changes), never a panic.
    pub fn next_chunk(
        &mut self,
        previous: Option<&[u8]>,
        new: &[u8],
        max: usize,
    ) -> Result<Vec<TargetChange>, RecordError> {
        let mut old_entries = self.old.resume(previous.unwrap_or_default())?;
        let mut new_entries = self.new.resume(new)?;
        let mut changes = Vec::new();
        // Each lookahead is read with the position it was read from, so a stop can resume there.
        let mut old_from = old_entries.mark();
        let mut old = old_entries.next_entry()?;
        let mut new_from = new_entries.mark();
        let mut current = new_entries.next_entry()?;
        loop {
            if changes.len() >= max {
                self.old.save(old_from);
                self.new.save(new_from);
                return Ok(changes);
            }
            let order = match (&old, &current) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(old), Some(current)) => old.name.cmp(&current.name),
            };
            match order {
                Ordering::Less => {
                    if let Some(removed) = old.take() {
                        changes.push(removed.change(ChangeKind::Removed)?);
                    }
                    old_from = old_entries.mark();
                    old = old_entries.next_entry()?;
                }
                Ordering::Greater => {
                    if let Some(added) = current.take() {
                        changes.push(added.change(ChangeKind::Added)?);
                    }
                    new_from = new_entries.mark();
                    current = new_entries.next_entry()?;
                }
                Ordering::Equal => {
                    if let (Some(before), Some(after)) = (old.take(), current.take())
                        && before.text != after.text
                    {
                        let previous = before.meta()?;
                        if previous != after.meta()? {
                            let mut change = after.change(ChangeKind::Changed)?;
                            change.previous_sha256 = previous.sha256_hex();
                            change.previous_length = Some(previous.length);
                            changes.push(change);
                        }
                    }
                    old_from = old_entries.mark();
                    old = old_entries.next_entry()?;
                    new_from = new_entries.mark();
                    current = new_entries.next_entry()?;
                }
            }
        }
        self.old.save(old_entries.mark());
        self.new.save(new_entries.mark());
        Ok(changes)
    }
}

/// Every target of a targets-type file in name order, each as [`ChangeKind::Added`] (for the
/// first version of a file and for history queries).
pub fn targets_of(bytes: &[u8]) -> Result<Vec<TargetChange>, RecordError> {
    target_changes(None, bytes)
}

/// The parts of one target entry that tell versions apart.
#[derive(Debug, PartialEq)]
struct TargetMeta {
    length: i64,
    /// Hash algorithm → digest bytes.
    hashes: BTreeMap<String, Vec<u8>>,
    custom: Option<Value>,
}

impl TargetMeta {
    fn sha256_hex(&self) -> Option<String> {
        self.hashes.get("sha256").map(|digest| lower_hex(digest))
    }
}

/// `bytes` as lower-case hex (a table per nibble: this runs once per target of a large publish).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len().saturating_mul(2));
    for byte in bytes {
        // A nibble is below 16, so the lookups always succeed.
        for nibble in [byte >> 4, byte & 0x0f] {
            text.push(char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    text
}

/// The `sha256` (lower-case hex) and `length` of one target entry, what an added or removed
/// target's change records. The usual entry is read without building its other hashes or its
/// `custom` value; anything else is read by [`target_meta`], which also gives the error.
fn digest_and_length(name: &str, text: &str) -> Result<(Option<String>, i64), RecordError> {
    #[derive(serde::Deserialize)]
    struct Quick<'a> {
        #[serde(borrow, default)]
        hashes: Option<QuickHashes<'a>>,
        #[serde(default)]
        length: Option<i64>,
    }
    #[derive(serde::Deserialize)]
    struct QuickHashes<'a> {
        #[serde(borrow, default)]
        sha256: Option<&'a str>,
    }
    let quick =
        Some(text).filter(|text| text.starts_with('{')).and_then(|text| serde_json::from_str::<Quick<'_>>(text).ok());
    let mut digest = [0_u8; 64];
    if let Some(Quick { hashes: Some(QuickHashes { sha256: Some(encoded) }), length: Some(length) }) = quick
        && length >= 0
        && let Ok(32) = B64.decode_slice(encoded.as_bytes(), &mut digest)
    {
        return Ok((Some(lower_hex(digest.get(..32).unwrap_or_default())), length));
    }
    let meta = target_meta(name, text)?;
    Ok((meta.sha256_hex(), meta.length))
}

/// The members of one target entry, as text.
#[derive(serde::Deserialize)]
struct MetaFields<'a> {
    #[serde(borrow, default)]
    length: Option<&'a RawValue>,
    #[serde(borrow, default)]
    hashes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    custom: Option<&'a RawValue>,
}

/// Reads one target's entry, with the rules the update verifier applies to it.
fn target_meta(name: &str, text: &str) -> Result<TargetMeta, RecordError> {
    let problem = |problem: &str| RecordError::Target { name: name.to_owned(), problem: problem.to_owned() };
    // A derived struct also reads a list (its items as the fields in order), so the object is
    // checked first.
    let fields: MetaFields<'_> = Some(text)
        .filter(|text| text.starts_with('{'))
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| problem("is not an object"))?;
    let length = fields
        .length
        .and_then(|raw| serde_json::from_str::<i64>(raw.get()).ok())
        .filter(|length| *length >= 0)
        .ok_or_else(|| problem("has no valid length"))?;
    let Some(hashes) = fields.hashes.filter(|raw| raw.get().starts_with('{')) else {
        return Err(problem("has no hashes"));
    };
    let hashes: BTreeMap<String, Cow<'_, str>> =
        serde_json::from_str(hashes.get()).map_err(|_| problem("has a hash that is not base64"))?;
    let hashes = hashes
        .into_iter()
        .map(|(algorithm, digest)| B64.decode(digest.as_bytes()).map(|digest| (algorithm, digest)))
        .collect::<Result<BTreeMap<String, Vec<u8>>, _>>()
        .map_err(|_| problem("has a hash that is not base64"))?;
    let sizes_ok = hashes.get("sha256").is_none_or(|digest| digest.len() == 32)
        && hashes.get("sha512").is_none_or(|digest| digest.len() == 64);
    if !sizes_ok {
        return Err(problem("has a hash of the wrong size"));
    }
    let custom = fields
        .custom
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
        .transpose()
        .map_err(|_| problem("has a custom value that cannot be read"))?
        .filter(|custom| !custom.is_null());
    Ok(TargetMeta { length, hashes, custom })
}

/// One target entry read from a file.
struct TargetEntry<'a> {
    name: Cow<'a, str>,
    /// The entry's value as written; read by [`TargetEntry::meta`] only when needed: an entry
    /// whose text did not change between two versions did not change.
    text: &'a str,
}

impl TargetEntry<'_> {
    fn meta(&self) -> Result<TargetMeta, RecordError> {
        target_meta(&self.name, self.text)
    }

    fn change(self, kind: ChangeKind) -> Result<TargetChange, RecordError> {
        let (sha256, length) = digest_and_length(&self.name, self.text)?;
        Ok(TargetChange {
            sha256,
            length: Some(length),
            name: self.name.into_owned(),
            kind,
            previous_sha256: None,
            previous_length: None,
        })
    }
}

/// The entries of a `targets` object, read from its text one at a time, in order.
struct TargetEntries<'a> {
    /// The text of the object (checked as JSON before; each piece read is checked as UTF-8).
    text: &'a [u8],
    /// Where reading continues: just after `{` or after the last value read.
    position: usize,
    /// Whether an entry was read (so the next is preceded by `,`).
    started: bool,
    /// Whether the closing `}` was reached.
    done: bool,
    /// The last name read, which the next must sort after.
    last: Option<Cow<'a, str>>,
}

/// Where a [`TargetEntries`] stood: enough to read on from there later.
struct Mark<'a> {
    position: usize,
    started: bool,
    done: bool,
    last: Option<Cow<'a, str>>,
}

/// Where one file's `targets` object is and how far it was read, kept between the calls of a
/// [`TargetChangeStream`] (positions, not borrowed text).
#[derive(Debug, Clone, Default)]
struct EntriesCursor {
    /// Byte range of the `targets` object in the file; `None` when the file lists no targets.
    range: Option<(usize, usize)>,
    position: usize,
    started: bool,
    done: bool,
    last: Option<String>,
}

impl EntriesCursor {
    /// The cursor at the first entry of `bytes`, whose parse is `signed`: refused unless it is a
    /// `Targets` file whose `targets` member is an object, `null` or absent (no targets).
    fn of(bytes: &[u8], signed: &Signed<'_>) -> Result<Self, RecordError> {
        if signed.kind() != Some("Targets") {
            return Err(structure("the file is not a targets file"));
        }
        Self::at(bytes, signed.member("targets"))
    }

    /// The cursor at the first entry of `bytes`, a targets file that was stored (and so checked)
    /// before: its envelope and `signed` are only skimmed to locate the `targets` member. Beside
    /// it, the file's `delegations` member as written, if any.
    fn of_stored(bytes: &[u8]) -> Result<(Self, Option<&RawValue>), RecordError> {
        // One pass over the file: its `signed` object is read as the members below, the others
        // only skipped.
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            signed: Body<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(rename = "_type", borrow, default)]
            kind: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            targets: Option<&'a RawValue>,
            #[serde(borrow, default)]
            delegations: Option<&'a RawValue>,
        }
        let unreadable =
            |error: serde_json::Error| structure(format!("the stored targets file cannot be read: {error}"));
        let body = serde_json::from_slice::<Envelope<'_>>(bytes).map_err(unreadable)?.signed;
        if body.kind.as_deref() != Some("Targets") {
            return Err(structure("the file is not a targets file"));
        }
        Ok((Self::at(bytes, body.targets)?, body.delegations))
    }

    /// The cursor at the first entry of the `targets` member `targets` of `bytes`.
    fn at(bytes: &[u8], targets: Option<&RawValue>) -> Result<Self, RecordError> {
        match targets {
            Some(raw) if raw.get().starts_with('{') => match range_in(bytes, raw.get()) {
                Some(range) => Ok(Self { range: Some(range), position: 1, ..Self::default() }),
                None => Err(structure("the targets cannot be located in the file")),
            },
            Some(raw) if raw.get() != "null" => Err(structure("\"targets\" is not an object")),
            _ => Ok(Self { done: true, ..Self::default() }),
        }
    }

    /// Reading on in `bytes` (the file the cursor was made from) where the cursor stopped.
    fn resume<'a>(&self, bytes: &'a [u8]) -> Result<TargetEntries<'a>, RecordError> {
        let text = match self.range {
            Some((start, end)) => {
                bytes.get(start..end).ok_or_else(|| structure("the targets are not where they were found"))?
            }
            None => &[],
        };
        Ok(TargetEntries {
            text,
            position: self.position,
            started: self.started,
            done: self.done || self.range.is_none(),
            last: self.last.clone().map(Cow::Owned),
        })
    }

    /// Remembers `mark` to resume from it.
    fn save(&mut self, mark: Mark<'_>) {
        self.position = mark.position;
        self.started = mark.started;
        self.done = mark.done;
        self.last = mark.last.map(Cow::into_owned);
    }
}

/// Whether `byte` is JSON whitespace.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> TargetEntries<'a> {
    /// Where reading stands now.
    fn mark(&self) -> Mark<'a> {
        Mark { position: self.position, started: self.started, done: self.done, last: self.last.clone() }
    }

    fn broken(&self) -> RecordError {
        structure(format!("the targets cannot be read at byte {}", self.position))
    }

    fn skip_space(&mut self) {
        while self.text.get(self.position).copied().is_some_and(is_space) {
            self.position = self.position.saturating_add(1);
        }
    }

    /// The byte at the reading position.
    fn peek(&self) -> Option<u8> {
        self.text.get(self.position).copied()
    }

    /// The text from the reading position to `end`.
    fn piece(&self, end: usize) -> Result<&'a str, RecordError> {
        self.text.get(self.position..end).and_then(|piece| std::str::from_utf8(piece).ok()).ok_or_else(|| self.broken())
    }

    /// The next entry, or `None` after the last.
    fn next_entry(&mut self) -> Result<Option<TargetEntry<'a>>, RecordError> {
        if self.done {
            return Ok(None);
        }
        self.skip_space();
        match (self.peek(), self.started) {
            (Some(b'}'), _) => {
                self.done = true;
                return Ok(None);
            }
            (Some(b','), true) => {
                self.position = self.position.saturating_add(1);
                self.skip_space();
            }
            (Some(b'"'), false) => {}
            _ => return Err(self.broken()),
        }
        let name_end = value_end(self.text, self.position).ok_or_else(|| self.broken())?;
        let name_text = self.piece(name_end)?;
        // A name without escapes is the text between its quotes (the file was checked as JSON,
        // so it holds no control characters); one with escapes is decoded.
        let plain = name_text
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .filter(|inner| !inner.contains('\\') && !inner.contains('"'));
        let name: Cow<'a, str> = match plain {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(serde_json::from_str::<String>(name_text).map_err(|_| self.broken())?),
        };
        self.position = name_end;
        self.skip_space();
        if self.peek() != Some(b':') {
            return Err(self.broken());
        }
        self.position = self.position.saturating_add(1);
        self.skip_space();
        let value_end = value_end(self.text, self.position).ok_or_else(|| self.broken())?;
        let value_text = self.piece(value_end)?;
        self.position = value_end;
        self.started = true;
        if self.last.as_ref().is_some_and(|last| *last >= name) {
            return Err(structure(format!("the targets are not in canonical order at {name:?}")));
        }
        self.last = Some(name.clone());
        Ok(Some(TargetEntry { name, text: value_text }))
    }
}

/// Where the JSON value starting at `start` in `bytes` ends (one past its last byte), found by
/// its brackets and strings alone: the text was checked as JSON before. `None` when the value
/// does not end.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut index = start;
    loop {
        if in_string {
            // Straight to the string's next quote or backslash: most of an entry is strings.
            index = index.checked_add(memchr::memchr2(b'"', b'\\', bytes.get(index..)?)?)?;
        }
        let byte = *bytes.get(index)?;
        if in_string {
            match byte {
                b'\\' => index = index.checked_add(1)?,
                b'"' => {
                    in_string = false;
                    if depth == 0 {
                        return index.checked_add(1);
                    }
                }
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => depth = depth.checked_add(1)?,
                b'}' | b']' => {
                    // A closing bracket at depth 0 ends a number, literal or the object itself.
                    let Some(inner) = depth.checked_sub(1) else {
                        return (index > start).then_some(index);
                    };
                    depth = inner;
                    if depth == 0 {
                        return index.checked_add(1);
                    }
                }
                b',' if depth == 0 => return (index > start).then_some(index),
                other if depth == 0 && is_space(other) => return (index > start).then_some(index),
                _ => {}
            }
        }
        index = index.checked_add(1)?;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::canonical::to_canonical;
    use crate::keys::{Algorithm, KeyType, PrivateKey};
    use crate::metadata::envelope;

    const ROOT: &[u8] = include_bytes!("../tests/data/notary-0.7/root.json");
    const TARGETS: &[u8] = include_bytes!("../tests/data/notary-0.7/targets.json");
    const SNAPSHOT: &[u8] = include_bytes!("../tests/data/notary-0.7/snapshot.json");

    /// An unsigned envelope around the canonical form of `body` (nothing here checks signatures).
    fn unsigned(body: &Value) -> Vec<u8> {
        envelope(&to_canonical(body).unwrap(), &[])
    }

    fn targets_file(targets: Value, delegations: Value) -> Vec<u8> {
        unsigned(&json!({
            "_type": "Targets", "delegations": delegations, "expires": "2030-01-01T00:00:00Z",
            "targets": targets, "version": 1
        }))
    }

    /// A target entry whose SHA-256 digest is 32 bytes of `fill`.
    fn entry(fill: u8, length: i64) -> Value {
        json!({"hashes": {"sha256": B64.encode([fill; 32])}, "length": length})
    }

    /// The lower-case hex digest of [`entry`]`(fill, _)`.
    fn digest(fill: u8) -> Option<String> {
        Some(hex::encode([fill; 32]))
    }

    fn change(name: &str, kind: ChangeKind, sha256: Option<String>, length: i64) -> TargetChange {
        TargetChange {
            name: name.into(),
            kind,
            sha256,
            length: Some(length),
            previous_sha256: None,
            previous_length: None,
        }
    }

    fn ecdsa() -> PublicKey {
        PrivateKey::generate(Algorithm::Ecdsa).unwrap().public_key()
    }

    fn bare(key: &PublicKey) -> GrantKey {
        GrantKey { key_id: key.key_id(), canonical_id: key.key_id(), subject: None }
    }

    fn delegations(keys: &[&PublicKey], roles: Value) -> Value {
        let keys: serde_json::Map<String, Value> = keys.iter().map(|key| (key.key_id(), key.to_json())).collect();
        json!({"keys": keys, "roles": roles})
    }

    fn role(name: &str) -> RoleName {
        RoleName::parse(name).unwrap()
    }

    #[test]
    fn a_real_notary_root_grants_its_four_roles() {
        let signed = Signed::parse(ROOT).unwrap();
        let root = Root::from_signed(&signed).unwrap();
        let key = |key_id: &str| GrantKey { key_id: key_id.into(), canonical_id: key_id.into(), subject: None };
        let base = |role: &str, key: GrantKey| Grant {
            delegating_role: "root".into(),
            delegated_role: role.into(),
            keys: vec![key],
            paths: None,
            threshold: 1,
        };
        // The root key is a certificate; its canonical ID is the ID of the bare key inside it,
        // under which the notary client stored its private key (see tests/data/README.md).
        let root_key = GrantKey {
            key_id: "fef8b12d427a6bbb039d8e1e9fc0613a13102bf63a07932fb50457118b691fc6".into(),
            canonical_id: "0cdcd2b393b808641d235400c416a865c4a39033d3dbc10a88162a92bb1978c7".into(),
            subject: Some("CN=example.com/app".into()),
        };
        assert_eq!(
            root_grants(&root),
            vec![
                base("root", root_key),
                base("targets", key("e61df8269e58704223ba935bec0f4ddd9e86aaa1792a7dc5e22b9f48a302f30c")),
                base("snapshot", key("1bae43e71976b718d60a344ece15ac363b2f341804ec502b2087a0d07fd1be15")),
                base("timestamp", key("1f9163e758775587dd4cf7bf197155ba515dc698f2305467fdbf2ed193c27489")),
            ]
        );
        assert_eq!(file_grants(&role("root"), ROOT), Ok(root_grants(&root)));
        // Its targets file delegates nothing and lists no targets.
        assert_eq!(delegation_grants(&role("targets"), TARGETS), Ok(vec![]));
        assert_eq!(file_grants(&role("targets"), TARGETS), Ok(vec![]));
        assert_eq!(file_grants(&role("snapshot"), SNAPSHOT), Ok(vec![]));
        assert_eq!(file_grants(&role("timestamp"), b"not even JSON"), Ok(vec![]));
        assert_eq!(
            file_grants(&role("root"), TARGETS),
            Err(RecordError::Metadata(MetadataError::Structure("\"_type\" must be Root".into())))
        );
        assert_eq!(targets_of(TARGETS), Ok(vec![]));
    }

    #[test]
    fn root_grant_keys_are_sorted_and_listed_once() {
        let (first, second) = (ecdsa(), ecdsa());
        let mut ids = [first.key_id(), second.key_id()];
        ids.sort();
        let body = json!({
            "_type": "Root", "consistent_snapshot": false, "expires": "2030-01-01T00:00:00Z", "version": 1,
            "keys": {first.key_id(): first.to_json(), second.key_id(): second.to_json()},
            "roles": {
                "root": {"keyids": [ids[1], ids[0], ids[1]], "threshold": 2},
                "targets": {"keyids": [first.key_id()], "threshold": 1},
                "snapshot": {"keyids": [first.key_id()], "threshold": 1},
                "timestamp": {"keyids": [second.key_id()], "threshold": 1},
                "targets/extra": {"keyids": [second.key_id()], "threshold": 1},
            }
        });
        let bytes = unsigned(&body);
        let root = Root::from_signed(&Signed::parse(&bytes).unwrap()).unwrap();
        let grants = root_grants(&root);
        let roles: Vec<(&str, Vec<&str>, i64)> = grants
            .iter()
            .map(|grant| {
                let keys = grant.keys.iter().map(|key| key.key_id.as_str()).collect();
                (grant.delegated_role.as_str(), keys, grant.threshold)
            })
            .collect();
        let first_id = first.key_id();
        let second_id = second.key_id();
        assert_eq!(
            roles,
            vec![
                ("root", vec![ids[0].as_str(), ids[1].as_str()], 2),
                ("targets", vec![first_id.as_str()], 1),
                ("snapshot", vec![first_id.as_str()], 1),
                ("timestamp", vec![second_id.as_str()], 1),
            ]
        );
    }

    #[test]
    fn a_delegation_is_followed_from_its_grant_to_its_removal() {
        let releases = role("targets");
        let (alice, bob) = (ecdsa(), ecdsa());
        let declared = |keys: &[&PublicKey], paths: Value, threshold: i64| {
            let ids: Vec<String> = keys.iter().map(|key| key.key_id()).collect();
            targets_file(
                json!({}),
                delegations(
                    keys,
                    json!([{"keyids": ids, "name": "targets/releases", "paths": paths, "threshold": threshold}]),
                ),
            )
        };
        let grant = |keys: Vec<GrantKey>, paths: &[&str], threshold: i64| Grant {
            delegating_role: "targets".into(),
            delegated_role: "targets/releases".into(),
            keys,
            paths: Some(serde_json::to_string(paths).unwrap()),
            threshold,
        };
        let mut both = vec![bare(&alice), bare(&bob)];
        both.sort_by(|a, b| a.key_id.cmp(&b.key_id));

        let none = targets_file(json!({}), json!({"keys": {}, "roles": []}));
        let added = declared(&[&alice], json!(["release/"]), 1);
        let keys_changed = declared(&[&alice, &bob], json!(["release/"]), 2);
        let paths_changed = declared(&[&alice, &bob], json!(["release/", "beta/", "release/v1/"]), 2);
        // What the notary client uploads when the delegation's last key is removed.
        let last_key_removed = targets_file(
            json!({}),
            json!({"keys": {}, "roles": [{"keyids": null, "name": "targets/releases", "paths": ["release/"], "threshold": 1}]}),
        );
        let versions = [&none, &added, &keys_changed, &paths_changed, &last_key_removed, &none];
        let grants: Vec<Vec<Grant>> =
            versions.iter().map(|bytes| delegation_grants(&releases, bytes).unwrap()).collect();
        assert_eq!(
            grants,
            vec![
                vec![],
                vec![grant(vec![bare(&alice)], &["release/"], 1)],
                vec![grant(both.clone(), &["release/"], 2)],
                vec![grant(both.clone(), &["release/", "beta/", "release/v1/"], 2)],
                vec![grant(vec![], &["release/"], 1)],
                vec![],
            ]
        );
        let changes: Vec<Vec<GrantChange>> = grants.windows(2).map(|pair| grant_changes(&pair[0], &pair[1])).collect();
        let with = |kind: ChangeKind, grant: &Grant| vec![GrantChange { kind, grant: grant.clone() }];
        assert_eq!(
            changes,
            vec![
                with(ChangeKind::Added, &grants[1][0]),
                with(ChangeKind::Changed, &grants[2][0]),
                with(ChangeKind::Changed, &grants[3][0]),
                with(ChangeKind::Changed, &grants[4][0]),
                with(ChangeKind::Removed, &grants[4][0]),
            ]
        );
        // Republishing the same grants changes nothing.
        assert_eq!(grant_changes(&grants[3], &grants[3]), vec![]);
    }

    #[test]
    fn delegations_are_sorted_by_role_and_missing_paths_are_empty() {
        let key = ecdsa();
        let id = key.key_id();
        let bytes = targets_file(
            json!({}),
            delegations(
                &[&key],
                json!([
                    {"keyids": [id], "name": "targets/zeta", "paths": [""], "threshold": 1},
                    {"keyids": [id], "name": "targets/alpha", "threshold": 1},
                    {"keyids": [id], "name": "targets/mid", "paths": null, "threshold": 1},
                ]),
            ),
        );
        let grants = delegation_grants(&role("targets"), &bytes).unwrap();
        let summary: Vec<(&str, Option<String>)> =
            grants.iter().map(|grant| (grant.delegated_role.as_str(), grant.paths.clone())).collect();
        assert_eq!(
            summary,
            vec![
                ("targets/alpha", Some("[]".to_owned())),
                ("targets/mid", Some("[]".to_owned())),
                ("targets/zeta", Some(r#"[""]"#.to_owned()))
            ]
        );
        // A delegation's own file declares its children, granted by it.
        let child = targets_file(
            json!({}),
            delegations(&[&key], json!([{"keyids": [id], "name": "targets/zeta/x", "paths": ["a"], "threshold": 1}])),
        );
        let grants = delegation_grants(&role("targets/zeta"), &child).unwrap();
        assert_eq!(
            grants,
            vec![Grant {
                delegating_role: "targets/zeta".into(),
                delegated_role: "targets/zeta/x".into(),
                keys: vec![bare(&key)],
                paths: Some(r#"["a"]"#.to_owned()),
                threshold: 1,
            }]
        );
        // No delegations section at all, or a null one.
        let bare_file =
            unsigned(&json!({"_type": "Targets", "expires": "2030-01-01T00:00:00Z", "targets": {}, "version": 1}));
        assert_eq!(delegation_grants(&role("targets"), &bare_file), Ok(vec![]));
        assert_eq!(delegation_grants(&role("targets"), &targets_file(json!({}), Value::Null)), Ok(vec![]));
    }

    #[test]
    fn a_certificate_delegate_carries_its_subject() {
        let private = PrivateKey::generate(Algorithm::Ecdsa).unwrap();
        let key_pair = rcgen::KeyPair::try_from(private.pkcs8().as_slice()).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let certificate = params.self_signed(&key_pair).unwrap();
        let key = PublicKey::new(KeyType::EcdsaX509, certificate.pem().into_bytes());
        // The bare key inside the certificate, as the notary client names it.
        let inner = private.public_key();
        let id = key.key_id();
        let bytes = targets_file(
            json!({}),
            delegations(&[&key], json!([{"keyids": [id], "name": "targets/alice", "paths": [""], "threshold": 1}])),
        );
        let grants = delegation_grants(&role("targets"), &bytes).unwrap();
        let keys: Vec<&GrantKey> = grants.iter().flat_map(|grant| &grant.keys).collect();
        assert_eq!(
            keys,
            vec![&GrantKey { key_id: id, canonical_id: inner.key_id(), subject: Some("CN=alice,O=Example".into()) }]
        );
    }

    #[test]
    fn malformed_files_are_refused_with_a_record_error() {
        let key = ecdsa();
        let targets = role("targets");
        assert_eq!(
            delegation_grants(&role("snapshot"), TARGETS),
            Err(RecordError::Structure("snapshot is not a targets role".into()))
        );
        assert_eq!(
            delegation_grants(&targets, ROOT),
            Err(RecordError::Metadata(MetadataError::Structure("\"_type\" must be Targets".into())))
        );
        assert_eq!(
            delegation_grants(&targets, b"{\"signed\":"),
            Err(RecordError::Metadata(Signed::parse(b"{\"signed\":").unwrap_err()))
        );
        let missing_key = targets_file(
            json!({}),
            json!({"keys": {}, "roles": [{"keyids": [key.key_id()], "name": "targets/a", "paths": [""], "threshold": 1}]}),
        );
        assert_eq!(
            delegation_grants(&targets, &missing_key),
            Err(RecordError::Metadata(MetadataError::Structure(format!(
                "delegation targets/a lists key {}, which is not among the keys",
                key.key_id()
            ))))
        );
        let grandchild = targets_file(
            json!({}),
            delegations(&[&key], json!([{"keyids": [], "name": "targets/a/b", "paths": [""], "threshold": 1}])),
        );
        assert_eq!(
            delegation_grants(&targets, &grandchild),
            Err(RecordError::Metadata(MetadataError::Structure(
                "delegation targets/a/b is not a direct child of targets".into()
            )))
        );
        assert_eq!(target_changes(None, ROOT), Err(RecordError::Structure("the file is not a targets file".into())));
        assert_eq!(
            target_changes(Some(ROOT), TARGETS),
            Err(RecordError::Structure("the file is not a targets file".into()))
        );
        assert_eq!(
            targets_of(&targets_file(json!([]), Value::Null)),
            Err(RecordError::Structure("\"targets\" is not an object".into()))
        );
    }

    #[test]
    fn target_changes_name_every_added_changed_and_removed_target_in_order() {
        let first = targets_file(json!({"b": entry(2, 20), "a": entry(1, 10), "c": entry(3, 30)}), Value::Null);
        let second = targets_file(json!({"a": entry(1, 10), "b": entry(9, 21), "d": entry(4, 40)}), Value::Null);
        assert_eq!(
            targets_of(&first),
            Ok(vec![
                change("a", ChangeKind::Added, digest(1), 10),
                change("b", ChangeKind::Added, digest(2), 20),
                change("c", ChangeKind::Added, digest(3), 30),
            ])
        );
        assert_eq!(target_changes(None, &first), targets_of(&first));
        let mut changed = change("b", ChangeKind::Changed, digest(9), 21);
        changed.previous_sha256 = digest(2);
        changed.previous_length = Some(20);
        assert_eq!(
            target_changes(Some(&first), &second),
            Ok(vec![
                changed,
                change("c", ChangeKind::Removed, digest(3), 30),
                change("d", ChangeKind::Added, digest(4), 40)
            ])
        );
        // Nothing changed; everything removed; everything added.
        assert_eq!(target_changes(Some(&second), &second), Ok(vec![]));
        let empty = targets_file(json!({}), Value::Null);
        assert_eq!(
            target_changes(Some(&second), &empty),
            Ok(vec![
                change("a", ChangeKind::Removed, digest(1), 10),
                change("b", ChangeKind::Removed, digest(9), 21),
                change("d", ChangeKind::Removed, digest(4), 40),
            ])
        );
        assert_eq!(target_changes(Some(&empty), &second), targets_of(&second));
        assert_eq!(targets_of(&targets_file(Value::Null, Value::Null)), Ok(vec![]));
    }

    #[test]
    fn a_stream_in_chunks_of_any_size_gives_the_changes_of_one_pass() {
        let first = targets_file(
            json!({"a": entry(1, 10), "b": entry(2, 20), "c\u{e9}": entry(3, 30), "e": entry(5, 50)}),
            Value::Null,
        );
        let second = targets_file(
            json!({"a": entry(1, 10), "b": entry(9, 21), "c\u{e9}": entry(3, 30), "d": entry(4, 40), "f": entry(6, 6)}),
            Value::Null,
        );
        for (previous, new) in [(None, &first), (Some(&first), &second), (Some(&second), &first)] {
            let previous = previous.map(Vec::as_slice);
            let whole = target_changes(previous, new).unwrap();
            assert!(!whole.is_empty());
            for max in 1..=whole.len() + 1 {
                let mut stream = TargetChangeStream::new(previous, new).unwrap();
                let mut streamed = Vec::new();
                loop {
                    let chunk = stream.next_chunk(previous, new, max).unwrap();
                    assert!(chunk.len() <= max, "max {max}");
                    if chunk.is_empty() {
                        break;
                    }
                    streamed.extend(chunk);
                }
                assert_eq!(streamed, whole, "max {max}");
                // A finished stream stays finished.
                assert_eq!(stream.next_chunk(previous, new, max), Ok(vec![]));
            }
        }
    }

    /// The view of `bytes`, a `targets` file, taken from a reading as the update verifier makes
    /// it (target entries read, `keep`'s delegation paths kept).
    fn verified_view(bytes: &[u8], keep: &dyn Fn(&RoleName) -> bool) -> TargetsView {
        let signed = Signed::parse(bytes).unwrap();
        let reading =
            TargetsReading { outside: |_: &str| false, within: None, keep_paths: Some(keep), read_targets: true };
        let (body, _) = Targets::read(&signed, &role("targets"), reading).unwrap();
        TargetsView::of(&role("targets"), bytes, &signed, &body).unwrap()
    }

    #[test]
    fn a_stream_of_a_viewed_file_skims_the_stored_version_only() {
        let first = targets_file(json!({"a": entry(1, 10), "b": entry(2, 20)}), Value::Null);
        let second = targets_file(json!({"b": entry(3, 20), "c": entry(4, 40)}), Value::Null);
        let view = verified_view(&second, &|_| false);
        let mut stream = TargetChangeStream::of_view_with_grants(Some(&first), &view).unwrap().0;
        assert_eq!(stream.next_chunk(Some(&first), &second, 10), target_changes(Some(&first), &second));
        // A stored version that is not a targets file, or not JSON, is still refused.
        let root = TargetChangeStream::of_view_with_grants(Some(ROOT), &view).unwrap_err();
        assert_eq!(root, RecordError::Structure("the file is not a targets file".into()));
        assert!(matches!(
            TargetChangeStream::of_view_with_grants(Some(b"{"), &view).map(|_| ()),
            Err(RecordError::Structure(message)) if message.starts_with("the stored targets file cannot be read")
        ));
    }

    #[test]
    fn located_grants_read_their_paths_from_the_file() {
        let key = ecdsa();
        let roles = json!([
            {"keyids": [key.key_id()], "name": "targets/a", "paths": ["a/", "b\"c"], "threshold": 1},
            {"keyids": [key.key_id()], "name": "targets/b", "threshold": 1},
            {"keyids": [key.key_id()], "name": "targets/c", "paths": null, "threshold": 1}
        ]);
        let bytes = targets_file(json!({}), delegations(&[&key], roles));
        let signed = Signed::parse(&bytes).unwrap();
        let located = delegation_grants_located(&role("targets"), &bytes, &signed).unwrap();
        let whole = delegation_grants(&role("targets"), &bytes).unwrap();
        assert_eq!(located.len(), 3);
        for ((grant, range), expected) in located.into_iter().zip(whole) {
            assert_eq!(grant.paths, None);
            let text = paths_at(&bytes, range).unwrap();
            let read: Value = serde_json::from_str(text).unwrap();
            let expected_paths: Value = serde_json::from_str(expected.paths.as_deref().unwrap()).unwrap();
            assert_eq!(read, expected_paths, "{}", grant.delegated_role);
            assert_eq!(Grant { paths: expected.paths.clone(), ..grant }, expected);
        }
        assert_eq!(
            paths_at(b"[]", Some((0, 9))),
            Err(RecordError::Structure("the paths are not where they were found".into()))
        );
    }

    #[test]
    fn the_view_taken_from_the_verifiers_reading_is_the_views_own_reading() {
        let key = ecdsa();
        let other = ecdsa();
        let roles = json!([
            {"keyids": [key.key_id(), other.key_id()], "name": "targets/a", "paths": ["a/", "b\"c"], "threshold": 2},
            {"keyids": [other.key_id()], "name": "targets/b", "threshold": 1},
            {"keyids": [key.key_id()], "name": "targets/c", "paths": null, "threshold": 1}
        ]);
        let old = targets_file(json!({"a/1": entry(1, 10), "a/2": entry(2, 20)}), Value::Null);
        let new = targets_file(json!({"a/2": entry(3, 30), "a/3": entry(4, 40)}), delegations(&[&key, &other], roles));
        let signed = Signed::parse(&new).unwrap();
        // One delegation's paths kept by the verifier, as for an update that uploads it too.
        let view = verified_view(&new, &|name| name.as_str() == "targets/a");
        assert_eq!(view.grants, delegation_grants_located(&role("targets"), &new, &signed).unwrap());
        let with_paths: Vec<Grant> = view
            .grants
            .iter()
            .map(|(grant, range)| Grant { paths: Some(paths_text_at(&new, *range).unwrap()), ..grant.clone() })
            .collect();
        assert_eq!(with_paths, delegation_grants(&role("targets"), &new).unwrap());
        let expected = target_changes(Some(&old), &new).unwrap();
        let (mut stream, shapes) = TargetChangeStream::of_view_with_grants(Some(&old), &view).unwrap();
        assert_eq!(stream.next_chunk(Some(&old), &new, 100).unwrap(), expected);
        assert_eq!(expected.len(), 3, "a/1 removed, a/2 changed, a/3 added: {expected:?}");
        assert_eq!(shapes, vec![], "the old version delegates nothing");
    }

    #[test]
    fn a_stored_files_grant_shapes_are_those_of_the_verifiers_view_of_it() {
        let (key, other) = (ecdsa(), ecdsa());
        let roles = json!([
            {"keyids": [key.key_id(), other.key_id()], "name": "targets/a", "paths": ["a/", "b\"c"], "threshold": 2},
            {"keyids": [other.key_id()], "name": "targets/b", "threshold": 1},
            {"keyids": [key.key_id()], "name": "targets/c", "paths": null, "threshold": 1}
        ]);
        let stored = targets_file(json!({"a/1": entry(1, 10)}), delegations(&[&key, &other], roles.clone()));
        // The same delegations in the next version: every grant has the shape it had.
        let view = verified_view(&stored, &|_| false);
        let (_, before) = TargetChangeStream::of_view_with_grants(Some(&stored), &view).unwrap();
        let shapes: Vec<GrantShape<'_>> =
            view.grants.iter().map(|(grant, range)| grant.shape(Some(paths_at(&stored, *range).unwrap()))).collect();
        assert_eq!(before, shapes);
        // Another key, threshold or paths gives another shape.
        let mut changed = roles;
        changed[0]["threshold"] = json!(1);
        changed[1]["keyids"] = json!([key.key_id()]);
        changed[2]["paths"] = json!(["c/"]);
        let new = targets_file(json!({}), delegations(&[&key, &other], changed));
        let view = verified_view(&new, &|_| false);
        for ((grant, range), old) in view.grants.iter().zip(&before) {
            assert_eq!(grant.delegated_role, old.delegated_role);
            assert_ne!(&grant.shape(Some(paths_at(&new, *range).unwrap())), old, "{}", grant.delegated_role);
        }
    }

    #[test]
    fn a_stream_given_other_bytes_errs_without_a_panic() {
        let first = targets_file(json!({"a": entry(1, 10), "b": entry(2, 20)}), Value::Null);
        let mut stream = TargetChangeStream::new(None, &first).unwrap();
        assert_eq!(stream.next_chunk(None, &first, 1).unwrap().len(), 1);
        assert_eq!(
            stream.next_chunk(None, b"{}", 1),
            Err(RecordError::Structure("the targets are not where they were found".into()))
        );
        let shifted = [b"  ".as_slice(), &first].concat();
        assert!(matches!(stream.next_chunk(None, &shifted, 1), Err(RecordError::Structure(_))));
    }

    #[test]
    fn any_difference_in_an_entry_is_a_change() {
        let sha512_only = json!({"hashes": {"sha512": B64.encode([7u8; 64])}, "length": 5});
        let with_custom = json!({"custom": {"note": "x"}, "hashes": {"sha256": B64.encode([1u8; 32])}, "length": 10});
        let before = targets_file(
            json!({"custom": entry(1, 10), "length": entry(1, 10), "sha512": entry(5, 5), "null-custom": entry(6, 6)}),
            Value::Null,
        );
        let mut null_custom = entry(6, 6);
        null_custom["custom"] = Value::Null;
        let after = targets_file(
            json!({"custom": with_custom, "length": entry(1, 11), "sha512": sha512_only, "null-custom": null_custom}),
            Value::Null,
        );
        let changed = |name: &str, sha256: Option<String>, length: i64, previous: (Option<String>, i64)| TargetChange {
            previous_sha256: previous.0,
            previous_length: Some(previous.1),
            ..change(name, ChangeKind::Changed, sha256, length)
        };
        // A `custom` of null is the same as none.
        assert_eq!(
            target_changes(Some(&before), &after),
            Ok(vec![
                changed("custom", digest(1), 10, (digest(1), 10)),
                changed("length", digest(1), 11, (digest(1), 10)),
                changed("sha512", None, 5, (digest(5), 5)),
            ])
        );
    }

    #[test]
    fn names_with_escapes_are_read_as_their_text() {
        // Canonical JSON escapes only `"` and `\`; Go's encoder also writes `<` as \u003c.
        let body = json!({
            "_type": "Targets", "expires": "2030-01-01T00:00:00Z", "version": 1,
            "targets": {"a\"quote": entry(1, 1), "b\\slash": entry(2, 2), "c<angle": entry(3, 3), "d": entry(4, 4)}
        });
        let canonical = String::from_utf8(to_canonical(&body).unwrap()).unwrap().replace('<', "\\u003c");
        let bytes = envelope(canonical.as_bytes(), &[]);
        let expected = Ok(vec![
            change("a\"quote", ChangeKind::Added, digest(1), 1),
            change("b\\slash", ChangeKind::Added, digest(2), 2),
            change("c<angle", ChangeKind::Added, digest(3), 3),
            change("d", ChangeKind::Added, digest(4), 4),
        ]);
        assert_eq!(targets_of(&bytes), expected);
        // Whitespace between tokens, which canonical text may carry, is skipped.
        let pretty = serde_json::to_string_pretty(&body).unwrap();
        assert!(pretty.contains("\n    \"a\\\"quote\": {\n"), "{pretty}");
        let bytes = envelope(pretty.as_bytes(), &[]);
        assert_eq!(targets_of(&bytes), expected);
        assert_eq!(target_changes(Some(&bytes), &bytes), Ok(vec![]));
    }

    #[test]
    fn malformed_target_entries_are_refused_by_name() {
        let check = |meta: Value, problem: &str| {
            let bytes = targets_file(json!({"ok": entry(1, 1), "t": meta}), Value::Null);
            let expected = Err(RecordError::Target { name: "t".into(), problem: problem.into() });
            assert_eq!(targets_of(&bytes), expected, "as the new file");
            let good = targets_file(json!({}), Value::Null);
            assert_eq!(target_changes(Some(&bytes), &good), expected, "as the previous file");
        };
        check(json!({"hashes": {"sha256": B64.encode([1u8; 32])}}), "has no valid length");
        check(json!({"hashes": {"sha256": B64.encode([1u8; 32])}, "length": -1}), "has no valid length");
        check(json!({"hashes": {"sha256": B64.encode([1u8; 32])}, "length": "1"}), "has no valid length");
        check(json!({"length": 1}), "has no hashes");
        check(json!({"hashes": [], "length": 1}), "has no hashes");
        check(json!({"hashes": {"sha256": "not base64!"}, "length": 1}), "has a hash that is not base64");
        check(json!({"hashes": {"sha256": 7}, "length": 1}), "has a hash that is not base64");
        check(json!({"hashes": {"sha256": B64.encode([1u8; 31])}, "length": 1}), "has a hash of the wrong size");
        check(json!({"hashes": {"sha512": B64.encode([1u8; 32])}, "length": 1}), "has a hash of the wrong size");
        check(json!([1]), "is not an object");
        check(json!("text"), "is not an object");
    }

    #[test]
    fn every_cut_of_a_file_is_refused_without_a_panic() {
        let bytes = targets_file(
            json!({"a\"b": entry(1, 1), "c": {"custom": [1, {"x": "]}"}], "hashes": {}, "length": 0}}),
            Value::Null,
        );
        assert_eq!(targets_of(&bytes).map(|changes| changes.len()), Ok(2));
        for end in 0..bytes.len() {
            let cut = bytes.get(..end).unwrap();
            assert!(matches!(targets_of(cut), Err(RecordError::Metadata(_))), "cut at {end}");
            assert!(matches!(target_changes(Some(cut), &bytes), Err(RecordError::Metadata(_))), "cut at {end}");
            assert!(matches!(delegation_grants(&role("targets"), cut), Err(RecordError::Metadata(_))), "cut at {end}");
        }
    }

    #[test]
    fn values_end_where_their_brackets_and_strings_say() {
        let check = |text: &str, expected: Option<&str>| {
            let end = value_end(text.as_bytes(), 0);
            assert_eq!(end.map(|end| &text[..end]), expected, "{text}");
        };
        check(r#""a\"b" : 1"#, Some(r#""a\"b""#));
        check(r#""a\\" , 1"#, Some(r#""a\\""#));
        check(r#"{"x":"}","y":[1,{"z":"]"}]},"next""#, Some(r#"{"x":"}","y":[1,{"z":"]"}]}"#));
        check("123}", Some("123"));
        check("true,", Some("true"));
        check("null \n", Some("null"));
        check(r#"{"open":"#, None);
        check(r#""unterminated\""#, None);
        check("}", None);
        check("", None);
    }
}
