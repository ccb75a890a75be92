//! The update verifier: from the current stored state of a GUN and the files a client uploaded,
//! decide whether the update is valid (spec §3.2) and what the server must sign and store.
//!
//! Tufa is stricter than notary-server where that cannot break real clients: a delegation's
//! targets must lie within the paths of every delegation above it, sub-delegations must stay
//! within their parent's paths, snapshot entries must match the exact stored bytes, and a stored
//! root's certificates are trusted without an expiry check so an expired certificate can always
//! be rotated out (notary-server bricks such a repository).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::keys::{PublicKey, sha256};
use crate::metadata::{
    Count, Delegation, FileMeta, MAX_VERSION, MetadataError, RoleKeys, Root, Signature, Signed, Snapshot, Targets,
    TargetsReading, Timestamp, count, envelope,
};
use crate::names::{BaseRole, Gun, RoleName};
use crate::record::TargetsView;
use crate::verify::check_threshold;
use crate::x509;

/// Lifetime of a server-generated snapshot (Notary's default: 3 years).
pub const SNAPSHOT_LIFETIME: Duration = Duration::days(3 * 365);
/// Lifetime of a server-generated timestamp (Notary's default: 14 days).
pub const TIMESTAMP_LIFETIME: Duration = Duration::days(14);

/// Explicit limits on what one update may contain. Each bounds the work one uploaded file can
/// cause; the defaults are well above what real Notary repositories hold (a few keys per role,
/// thousands of targets, hundreds of delegations). A file over a limit is refused with the error
/// of its role (`ErrBadRoot`, `ErrBadTargets`, `ErrBadSnapshot`) naming the limit and the value.
/// Limits apply to uploaded files only; stored files are never re-judged by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest delegation accepted, counted below `targets` (`targets/a` is 1). Default 16.
    pub max_delegation_depth: usize,
    /// Most signatures one file may carry (each costs a verification). Default 64.
    pub max_signatures: usize,
    /// Most keys the `keys` map of one root may declare (each is parsed and checked; a notary
    /// root holds four, a few more during rotations). Default 256.
    pub max_root_keys: usize,
    /// Most key IDs one role may list: a base role in the root, or one delegation. Default 256.
    pub max_role_keyids: usize,
    /// Most delegations the `delegations.roles` list of one targets file may declare. Default 1,000.
    pub max_delegations: usize,
    /// Most keys the `delegations.keys` map of one targets file may declare. Default 2,000.
    pub max_delegation_keys: usize,
    /// Most path prefixes one delegation may list. Default 1,000.
    pub max_delegation_paths: usize,
    /// Most targets one targets or delegation file may list. Default 50,000.
    pub max_targets: usize,
    /// Most targets one update may touch: those its targets-type files list, plus those listed
    /// by the stored files they replace (the server checks the second part; the verifier sees
    /// only the upload). Every one of them is read, and each added or removed one is a history
    /// row, so this bounds an update's work whatever the files it replaces hold. Default 100,000:
    /// twice `max_targets`, so a file at the per-file limit can always be replaced.
    pub max_upload_targets: usize,
    /// Most bytes the stored files one update replaces may hold together: the server reads them
    /// all to record what changed. The server sets it to its request body limit. Default 32 MiB.
    pub max_replaced_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_delegation_depth: 16,
            max_signatures: 64,
            max_root_keys: 256,
            max_role_keyids: 256,
            max_delegations: 1_000,
            max_delegation_keys: 2_000,
            max_delegation_paths: 1_000,
            max_targets: 50_000,
            max_upload_targets: 100_000,
            max_replaced_bytes: 32 << 20,
        }
    }
}

/// A rejected update, in the categories notary clients understand (spec §1.9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Generic validation failure (`ErrValidation`).
    #[error("{0}")]
    Validation(String),
    /// A role the update needs is missing (`ErrBadHierarchy`).
    #[error("{msg}")]
    BadHierarchy {
        /// The missing role.
        missing: String,
        /// What went wrong.
        msg: String,
    },
    /// The root is invalid (`ErrBadRoot`).
    #[error("{0}")]
    BadRoot(String),
    /// A targets or delegation file is invalid (`ErrBadTargets`).
    #[error("{0}")]
    BadTargets(String),
    /// The snapshot is invalid (`ErrBadSnapshot`).
    #[error("{0}")]
    BadSnapshot(String),
    /// The stored state of the repository cannot be loaded (no detail is given to clients).
    #[error("stored metadata is invalid: {0}")]
    StoredState(String),
    /// An uploaded file is not JSON metadata with a version (`ErrMalformedJSON`): the message
    /// starts with the role.
    #[error("{0}")]
    Malformed(String),
}

/// The current files of a GUN, by role, as stored.
#[derive(Debug, Clone, Default)]
pub struct RepoState {
    files: BTreeMap<String, Vec<u8>>,
    /// Current files whose bytes were not read that a new snapshot may keep listing.
    unchanged: Unchanged,
}

impl RepoState {
    /// Builds the state from the current files (role name → exact bytes).
    pub fn new(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Self { files: files.into_iter().collect(), unchanged: Unchanged::default() }
    }

    /// The state with current files left unread ([`Unchanged`]): an update that does not replace
    /// such a file needs only to know that its snapshot still describes it, which the stored
    /// snapshot's entry for it tells, so a repository's other files, however large, are not read.
    /// A file among the read ones is judged on its bytes.
    #[must_use]
    pub fn with_unchanged(mut self, unchanged: Unchanged) -> Self {
        self.unchanged = unchanged;
        self
    }

    /// The current files left unread that a new snapshot may keep listing.
    pub fn unchanged(&self) -> &Unchanged {
        &self.unchanged
    }

    /// Every current file, by role.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// The current bytes of `role`.
    pub fn file(&self, role: &str) -> Option<&[u8]> {
        self.files.get(role).map(Vec::as_slice)
    }

    /// Drops the current bytes of `role`: once an update is validated, the stored files it
    /// replaces are not needed any more, and each may be as large as an upload.
    pub fn forget(&mut self, role: &str) {
        self.files.remove(role);
    }
}

/// Current files whose bytes were not read, that a new snapshot may list unchanged: role → (the
/// stored snapshot's entry for it, the current file's hex SHA-256), for the roles whose stored
/// entry names the current file's SHA-256. A file becomes current only when the snapshot's entry
/// describes it, and changes only with the snapshot, so that is every role of a consistent
/// repository; and an entry that agrees with such a stored entry ([`FileMeta::matches_meta`])
/// describes the current file exactly as reading it would tell.
#[derive(Debug, Clone, Default)]
pub struct Unchanged(BTreeMap<String, (FileMeta, String)>);

impl Unchanged {
    /// From the stored snapshot's entries `stored` and the current files `current` (role, hex
    /// SHA-256): the roles whose stored entry names the current file.
    pub fn new<'a>(stored: &BTreeMap<String, FileMeta>, current: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            current
                .into_iter()
                .filter_map(|(role, sha256)| {
                    let entry =
                        stored.get(role).filter(|entry| entry.sha256().map(hex::encode).as_deref() == Some(sha256))?;
                    Some((role.to_owned(), (entry.clone(), sha256.to_owned())))
                })
                .collect(),
        )
    }

    /// [`Unchanged::new`] with the entries of the stored snapshot `snapshot` (its bytes); empty
    /// when it cannot be read.
    pub fn of_snapshot<'a>(snapshot: &[u8], current: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        match Signed::parse(snapshot).and_then(|signed| Snapshot::from_signed(&signed)) {
            Ok(stored) => Self::new(&stored.meta, current),
            Err(_) => Self::default(),
        }
    }

    /// Whether the stored snapshot's entry can judge `role`'s current file unread.
    pub fn contains(&self, role: &str) -> bool {
        self.0.contains_key(role)
    }

    /// The current file's hex SHA-256 when `entry` (a new snapshot's entry for `role`) describes
    /// the unread current file of `role`.
    pub fn current(&self, role: &str, entry: &FileMeta) -> Option<&str> {
        self.0.get(role).filter(|(stored, _)| entry.matches_meta(stored)).map(|(_, sha256)| sha256.as_str())
    }
}

/// A metadata file ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Its role.
    pub role: RoleName,
    /// `signed.version`.
    pub version: i64,
    /// `signed.expires`.
    pub expires: DateTime<Utc>,
    /// The exact bytes to store and serve.
    pub bytes: Vec<u8>,
}

/// An uploaded file found valid: what is stored beside its bytes.
struct FileHead {
    role: RoleName,
    version: i64,
    expires: DateTime<Utc>,
}

impl FileHead {
    fn of(role: &RoleName, version: i64, expires: DateTime<Utc>) -> Self {
        Self { role: role.clone(), version, expires }
    }
}

impl NewFile {
    /// Lower-case hex SHA-256 of the bytes.
    pub fn sha256_hex(&self) -> String {
        hex::encode(sha256(&self.bytes))
    }
}

/// A loaded targets-type file during validation.
struct LoadedTargets {
    body: Targets,
    /// The length and hashes of its exact bytes (the bytes themselves are in the update or the
    /// stored state, and are not copied).
    meta: FileMeta,
    /// The declarations of every delegation from the top down to this role (empty for
    /// `targets`), shared with the files below rather than copied: a child's chain is its
    /// parent's plus one pointer.
    chain: Vec<Arc<Delegation>>,
    /// The key IDs whose signatures were counted (see [`check_threshold`]).
    signers: Vec<String>,
    /// What the record reads of the file, for an uploaded one.
    view: Option<TargetsView>,
}

/// The outcome of a valid update, before the server signs what it must sign.
#[derive(Debug)]
pub struct Validated {
    /// The root in force after the update (uploaded or stored).
    pub root: Root,
    /// Uploaded files to store: root, targets and delegations, and the snapshot if uploaded.
    pub files: Vec<NewFile>,
    /// Role → length and hashes of the exact bytes of every file loaded during validation (root
    /// and targets-type files), which a generated snapshot must list.
    pub loaded: BTreeMap<String, FileMeta>,
    /// Whether the client uploaded the snapshot; if not the server must generate it.
    pub snapshot_uploaded: bool,
    /// Role name → the key IDs (as the metadata lists them) whose valid signatures were counted,
    /// in signature order, for every uploaded file: root (the keys counted by the new root and,
    /// on a rotation, by the previous one), targets, delegations and an uploaded snapshot.
    pub signers: BTreeMap<String, Vec<String>>,
    /// Role name → what the audit record reads of each uploaded targets-type file, taken while it
    /// was parsed here.
    pub views: BTreeMap<String, TargetsView>,
    /// How many targets the uploaded targets-type files list together (at most
    /// [`Limits::max_upload_targets`]).
    pub targets: usize,
}

fn parse_signed<'a>(bytes: &'a [u8], role: &str) -> Result<Signed<'a>, String> {
    Signed::parse(bytes).map_err(|error| format!("{role}: {error}"))
}

fn not_expired(role: &str, expires: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    if expires < now {
        return Err(format!("{role} metadata has expired"));
    }
    Ok(())
}

/// Refuses a count above its limit, naming the limit and both values.
fn within(what: &str, count: usize, limit_name: &str, limit: usize) -> Result<(), String> {
    if count > limit {
        return Err(format!("{what}: {count} is more than the limit {limit_name} = {limit}"));
    }
    Ok(())
}

fn signature_count(role: &str, signed: &Signed<'_>, limits: &Limits) -> Result<(), String> {
    within(&format!("{role} signatures"), signed.signatures().len(), "max_signatures", limits.max_signatures)
}

/// The members of a JSON object (its text), or nothing when `raw` is not an object.
fn object_members(raw: Option<&RawValue>) -> BTreeMap<String, &RawValue> {
    raw.filter(|raw| raw.get().starts_with('{'))
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default()
}

/// Checks an uploaded root's counts on the text of the body, before any key is parsed.
fn root_counts(signed: &Signed<'_>, limits: &Limits) -> Result<(), String> {
    signature_count("root", signed, limits)?;
    within("root keys", signed.count("keys"), "max_root_keys", limits.max_root_keys)?;
    for (name, role) in object_members(signed.member("roles")) {
        let what = format!("root role {name} key IDs");
        let keyids = count(object_members(Some(role)).get("keyids").copied());
        within(&what, keyids, "max_role_keyids", limits.max_role_keyids)?;
    }
    Ok(())
}

/// Checks an uploaded targets-type file's counts on the text of the body, before anything in it
/// is parsed.
fn targets_counts(role: &RoleName, signed: &Signed<'_>, limits: &Limits) -> Result<(), String> {
    // The targets were counted with the other uploaded files' ([`upload_targets`]).
    signature_count(role.as_str(), signed, limits)?;
    let Some(section) = signed.member("delegations").filter(|raw| raw.get().starts_with('{')) else {
        return Ok(());
    };
    // The usual shape is counted in one pass over the section; any other is counted member by
    // member below, with the same result.
    let mut reader = serde_json::Deserializer::from_str(section.get());
    if let Ok(counts) = serde::de::DeserializeSeed::deserialize(SectionCountsSeed(limits), &mut reader) {
        let keys = count(counts.keys);
        within(&format!("{role} delegation keys"), keys, "max_delegation_keys", limits.max_delegation_keys)?;
        within(&format!("{role} delegations"), counts.roles, "max_delegations", limits.max_delegations)?;
        if let Some((name, what, (found, limit_name, limit))) = counts.first_over {
            let name = name.as_deref().unwrap_or("(unnamed)");
            return within(&format!("{role} delegation {name:?} {what}"), found, limit_name, limit);
        }
        return Ok(());
    }
    let section = object_members(Some(section));
    let keys = count(section.get("keys").copied());
    within(&format!("{role} delegation keys"), keys, "max_delegation_keys", limits.max_delegation_keys)?;
    let roles = section.get("roles").copied();
    within(&format!("{role} delegations"), count(roles), "max_delegations", limits.max_delegations)?;
    let entries: Vec<&RawValue> = roles
        .filter(|raw| raw.get().starts_with('['))
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    for entry in entries {
        let entry = object_members(Some(entry));
        let name = entry.get("name").and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
        let name = name.as_deref().unwrap_or("(unnamed)");
        let what = format!("{role} delegation {name:?} key IDs");
        within(&what, count(entry.get("keyids").copied()), "max_role_keyids", limits.max_role_keyids)?;
        let what = format!("{role} delegation {name:?} paths");
        within(&what, count(entry.get("paths").copied()), "max_delegation_paths", limits.max_delegation_paths)?;
    }
    Ok(())
}

/// The counts [`targets_counts`] checks in a `delegations` section of the usual shape (`roles` a
/// list of objects whose `name`, if any, is a string or `null`), read in one pass: the keys, how
/// many delegations, and the first delegation over a per-delegation limit. Nothing else is kept
/// (a hostile file may hold millions of entries).
struct SectionCounts<'a> {
    keys: Option<&'a RawValue>,
    roles: usize,
    /// The first delegation over a limit: its name, what is over, and the limit check.
    first_over: Option<(Option<String>, &'static str, EntryLimit)>,
}

/// A per-delegation limit check: what was found, the limit's name, its value.
type EntryLimit = (usize, &'static str, usize);

/// A delegation entry's counts, read from an object only (a derived struct would also read a
/// list, which member by member counts as an entry without members).
#[derive(Default)]
struct EntryCounts {
    name: Option<String>,
    keyids: Count,
    paths: Count,
}

impl<'de> serde::Deserialize<'de> for EntryCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntryCountsVisitor)
    }
}

struct EntryCountsVisitor;

impl<'de> serde::de::Visitor<'de> for EntryCountsVisitor {
    type Value = EntryCounts;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a delegation")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EntryCounts, A::Error> {
        let mut entry = EntryCounts::default();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match name.as_ref() {
                "name" => entry.name = map.next_value()?,
                "keyids" => entry.keyids = map.next_value()?,
                "paths" => entry.paths = map.next_value()?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(entry)
    }
}

/// Reads a [`SectionCounts`] under `limits`.
struct SectionCountsSeed<'l>(&'l Limits);

impl<'de> serde::de::DeserializeSeed<'de> for SectionCountsSeed<'_> {
    type Value = SectionCounts<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SectionCountsSeed<'_> {
    type Value = SectionCounts<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a delegations section")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut counts = SectionCounts { keys: None, roles: 0, first_over: None };
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match name.as_ref() {
                "keys" => counts.keys = Some(map.next_value()?),
                "roles" => (counts.roles, counts.first_over) = map.next_value_seed(RolesSeed(self.0))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(counts)
    }
}

/// Reads the `roles` list of a [`SectionCounts`]: how many, and the first over a limit.
struct RolesSeed<'l>(&'l Limits);

impl<'de> serde::de::DeserializeSeed<'de> for RolesSeed<'_> {
    type Value = (usize, Option<(Option<String>, &'static str, EntryLimit)>);

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RolesSeed<'_> {
    type Value = (usize, Option<(Option<String>, &'static str, EntryLimit)>);

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a list of delegations")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let limits = self.0;
        let (mut count, mut first_over) = (0_usize, None);
        while let Some(entry) = items.next_element::<EntryCounts>()? {
            count = count.saturating_add(1);
            if first_over.is_some() {
                continue;
            }
            // Key IDs are checked before paths, as member by member.
            let checks = [
                ("key IDs", (entry.keyids.0, "max_role_keyids", limits.max_role_keyids)),
                ("paths", (entry.paths.0, "max_delegation_paths", limits.max_delegation_paths)),
            ];
            if let Some((what, check)) = checks.into_iter().find(|(_, (found, _, limit))| found > limit) {
                first_over = Some((entry.name, what, check));
            }
        }
        Ok((count, first_over))
    }
}

/// Root-role keys that are acceptable root certificates for `gun`; `check_validity` also
/// requires the certificate to be currently valid.
fn valid_root_keys(
    root: &Root,
    gun: &Gun,
    now: DateTime<Utc>,
    check_validity: bool,
) -> (BTreeMap<String, PublicKey>, Option<String>) {
    let mut valid = BTreeMap::new();
    let mut last_problem = None;
    let Some(role) = root.role(BaseRole::Root) else {
        return (valid, Some("root role is missing".into()));
    };
    // Each key once, however often the role lists it.
    let listed: BTreeSet<&String> = role.keyids.iter().collect();
    for id in listed {
        let Some(key) = root.keys.get(id) else {
            continue;
        };
        let verdict = x509::parse_pem_chain(key.public()).map_err(|error| error.to_string()).and_then(|chain| {
            let leaf = x509::leaf_certificate(&chain)?;
            x509::check_root_certificate(leaf, gun.as_str(), now, check_validity)
        });
        match verdict {
            Ok(()) => {
                valid.insert(id.clone(), key.clone());
            }
            Err(problem) => last_problem = Some(format!("root key {id}: {problem}")),
        }
    }
    (valid, last_problem)
}

/// Loads and checks the stored root: structure, certificates for the GUN (expiry not checked so
/// that an expired certificate can be rotated out), and signed by its own threshold.
fn load_stored_root(gun: &Gun, state: &RepoState, now: DateTime<Utc>) -> Result<Option<(Root, FileMeta)>, UpdateError> {
    let Some(bytes) = state.file("root") else {
        return Ok(None);
    };
    let signed = Signed::parse(bytes).map_err(|error| UpdateError::StoredState(error.to_string()))?;
    let root = Root::from_signed(&signed).map_err(|error| UpdateError::StoredState(error.to_string()))?;
    let (valid, problem) = valid_root_keys(&root, gun, now, false);
    if valid.is_empty() {
        return Err(UpdateError::StoredState(problem.unwrap_or_else(|| "no valid root certificates".into())));
    }
    let threshold = root.role(BaseRole::Root).map_or(1, |role| role.threshold);
    let own = RoleKeys { keyids: valid.keys().cloned().collect(), threshold };
    check_threshold("root", &signed, &valid, &own).map_err(|error| UpdateError::StoredState(error.to_string()))?;
    Ok(Some((root, FileMeta::of(bytes))))
}

/// Validates an uploaded root against the previous one (if any).
fn validate_new_root(
    gun: &Gun,
    signed: &Signed<'_>,
    previous: Option<&Root>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(Root, FileHead, Vec<String>), String> {
    root_counts(signed, limits)?;
    let root = Root::from_signed(signed).map_err(|error| error.to_string())?;
    let current = previous.map_or(1, |root| root.version);
    if root.version != current && root.version != current.saturating_add(1) {
        return Err(format!("Root modifications must increment the version. Current {current}, new {}", root.version));
    }
    let (valid, problem) = valid_root_keys(&root, gun, now, true);
    if valid.is_empty() {
        return Err(problem.unwrap_or_else(|| "no valid root certificates for this repository".into()));
    }
    let mut signers = BTreeSet::new();
    if let Some(previous) = previous {
        let (previous_keys, _) = valid_root_keys(previous, gun, now, false);
        let threshold = previous.role(BaseRole::Root).map_or(1, |role| role.threshold);
        let previous_role = RoleKeys { keyids: previous_keys.keys().cloned().collect(), threshold };
        signers.extend(
            check_threshold("root", signed, &previous_keys, &previous_role)
                .map_err(|_| "new root is not signed by the previous root's keys".to_owned())?,
        );
    }
    let threshold = root.role(BaseRole::Root).map_or(1, |role| role.threshold);
    let own = RoleKeys { keyids: valid.keys().cloned().collect(), threshold };
    signers.extend(check_threshold("root", signed, &valid, &own).map_err(|error| error.to_string())?);
    not_expired("root", root.expires, now)?;
    // The keys counted by either root, in signature order.
    let mut named = BTreeSet::new();
    let signers: Vec<String> = signed
        .signatures()
        .iter()
        .filter(|signature| signers.contains(&signature.keyid) && named.insert(signature.keyid.as_str()))
        .map(|signature| signature.keyid.clone())
        .collect();
    let head = FileHead::of(&RoleName::base(BaseRole::Root), root.version, root.expires);
    Ok((root, head, signers))
}

/// Validation of one update. See the module documentation.
///
/// Every uploaded file is parsed once, first: one that is not JSON metadata with a version is
/// refused with [`UpdateError::Malformed`] before anything else is judged.
pub fn validate(
    gun: &Gun,
    state: &RepoState,
    mut uploads: BTreeMap<RoleName, Vec<u8>>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Validated, UpdateError> {
    let checked = {
        let parsed = parse_uploads(&uploads)?;
        check_update(gun, state, &uploads, parsed, now, limits)?
    };
    // The uploaded bytes move into the files to store; they are never copied.
    let mut files = Vec::with_capacity(checked.heads.len());
    for FileHead { role, version, expires } in checked.heads {
        let bytes = uploads
            .remove(&role)
            .ok_or_else(|| UpdateError::Validation(format!("{role} was validated but is not in the update")))?;
        files.push(NewFile { role, version, expires, bytes });
    }
    Ok(Validated {
        root: checked.root,
        files,
        loaded: checked.loaded,
        snapshot_uploaded: checked.snapshot_uploaded,
        signers: checked.signers,
        views: checked.views,
        targets: checked.targets,
    })
}

/// Parses every uploaded file, which must be JSON metadata with a version.
fn parse_uploads(uploads: &BTreeMap<RoleName, Vec<u8>>) -> Result<BTreeMap<&RoleName, Signed<'_>>, UpdateError> {
    uploads
        .iter()
        .map(|(role, bytes)| {
            Signed::parse(bytes)
                .and_then(|signed| signed.version().map(|_| (role, signed)))
                .map_err(|error| UpdateError::Malformed(format!("{role}: {error}")))
        })
        .collect()
}

/// A valid update before its files take their bytes: [`Validated`] with heads for files.
struct Checked {
    root: Root,
    heads: Vec<FileHead>,
    loaded: BTreeMap<String, FileMeta>,
    snapshot_uploaded: bool,
    signers: BTreeMap<String, Vec<String>>,
    views: BTreeMap<String, TargetsView>,
    targets: usize,
}

/// The targets the uploaded targets-type files list, counted on their text before anything in
/// them is verified: each file within [`Limits::max_targets`], all of them together within
/// [`Limits::max_upload_targets`].
fn upload_targets(parsed: &BTreeMap<&RoleName, Signed<'_>>, limits: &Limits) -> Result<usize, UpdateError> {
    let mut total = 0_usize;
    for (role, signed) in parsed.iter().filter(|(role, _)| role.is_targets_type()) {
        let count = signed.count("targets");
        within(&format!("{role} targets"), count, "max_targets", limits.max_targets)
            .map_err(UpdateError::BadTargets)?;
        total = total.saturating_add(count);
    }
    within("the uploaded files' targets", total, "max_upload_targets", limits.max_upload_targets)
        .map_err(UpdateError::BadTargets)?;
    Ok(total)
}

/// Checks what an update replaces against the limits, once the server has read the stored
/// targets-type files it replaces (`replaced`, their bytes): together with the `uploaded`
/// targets ([`Validated::targets`]), their targets must stay within
/// [`Limits::max_upload_targets`]. The stored files are only skimmed.
pub fn check_replaced<'a>(
    uploaded: usize,
    replaced: impl IntoIterator<Item = &'a [u8]>,
    limits: &Limits,
) -> Result<(), UpdateError> {
    let stored: usize = replaced.into_iter().map(crate::metadata::stored_targets_count).fold(0, usize::saturating_add);
    if stored == 0 {
        return Ok(());
    }
    let total = uploaded.saturating_add(stored);
    if total > limits.max_upload_targets {
        return Err(UpdateError::BadTargets(format!(
            "the uploaded files list {uploaded} targets and the stored files they replace {stored}: {total} is more \
             than the limit max_upload_targets = {}; replace them in separate updates",
            limits.max_upload_targets
        )));
    }
    Ok(())
}

/// Checks the size of the stored files an update replaces, `sizes` (in bytes), before the server
/// reads them: together at most [`Limits::max_replaced_bytes`].
pub fn check_replaced_size(sizes: impl IntoIterator<Item = u64>, limits: &Limits) -> Result<(), UpdateError> {
    let total = sizes.into_iter().fold(0_u64, u64::saturating_add);
    let limit = u64::try_from(limits.max_replaced_bytes).unwrap_or(u64::MAX);
    if total > limit {
        return Err(UpdateError::BadTargets(format!(
            "the stored files this update replaces hold {total} bytes, more than the limit of {limit} bytes one update \
             may replace (the request body limit); replace them in separate updates"
        )));
    }
    Ok(())
}

/// Judges the parsed uploads (`uploads` holds their bytes) against the stored `state`.
fn check_update(
    gun: &Gun,
    state: &RepoState,
    uploads: &BTreeMap<RoleName, Vec<u8>>,
    mut parsed: BTreeMap<&RoleName, Signed<'_>>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Checked, UpdateError> {
    let targets = upload_targets(&parsed, limits)?;
    let stored_root = load_stored_root(gun, state, now)?;
    let mut heads = Vec::new();
    let mut loaded: BTreeMap<String, FileMeta> = BTreeMap::new();
    let mut signers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let bytes_of = |role: &RoleName| uploads.get(role).map(Vec::as_slice).unwrap_or_default();
    let root_role = RoleName::base(BaseRole::Root);
    let snapshot_role = RoleName::base(BaseRole::Snapshot);

    // Root.
    let (root, root_meta) = match (parsed.remove(&root_role), stored_root) {
        (Some(signed), previous) => {
            let previous = previous.map(|(root, _)| root);
            let meta = FileMeta::of(bytes_of(&root_role));
            let (root, head, root_signers) =
                validate_new_root(gun, &signed, previous.as_ref(), now, limits).map_err(UpdateError::BadRoot)?;
            heads.push(head);
            signers.insert("root".into(), root_signers);
            (root, meta)
        }
        (None, Some((root, meta))) => (root, meta),
        (None, None) => {
            return Err(UpdateError::Validation("no pre-existing root and no root provided in update.".into()));
        }
    };
    loaded.insert("root".into(), root_meta);
    let snapshot = parsed.remove(&snapshot_role);

    // Targets and delegations, shallowest first.
    let mut targets_uploads: Vec<(&RoleName, Signed<'_>)> =
        parsed.into_iter().filter(|(role, _)| role.is_targets_type()).collect();
    targets_uploads.sort_by(|(a, _), (b, _)| a.depth().cmp(&b.depth()).then_with(|| a.cmp(b)));
    let needed = needed_declarations(targets_uploads.iter().map(|(role, _)| *role));
    let mut targets_files: BTreeMap<RoleName, LoadedTargets> = BTreeMap::new();
    let mut views = BTreeMap::new();
    for (role, signed) in targets_uploads {
        if role.depth().saturating_sub(1) > limits.max_delegation_depth {
            return Err(UpdateError::BadTargets(format!(
                "{role} is deeper than the limit of {} delegation levels",
                limits.max_delegation_depth
            )));
        }
        if let Some(parent) = role.parent() {
            load_ancestors(&parent, state, &root, &mut targets_files, now, &needed)?;
        }
        let mut loaded_file =
            load_targets(role, (bytes_of(role), &signed), &root, &targets_files, now, Some(limits), &needed)
                .map_err(UpdateError::BadTargets)?;
        signers.insert(role.to_string(), std::mem::take(&mut loaded_file.signers));
        if let Some(view) = loaded_file.view.take() {
            views.insert(role.to_string(), view);
        }
        heads.push(FileHead::of(role, loaded_file.body.version, loaded_file.body.expires));
        targets_files.insert(role.clone(), loaded_file);
    }
    for (role, file) in targets_files {
        loaded.insert(role.to_string(), file.meta);
    }

    // Snapshot.
    let snapshot_uploaded = match snapshot {
        Some(signed) => {
            let (head, snapshot_signers) =
                validate_snapshot(&signed, &root, &loaded, state, now, limits).map_err(UpdateError::BadSnapshot)?;
            heads.push(head);
            signers.insert("snapshot".into(), snapshot_signers);
            true
        }
        None => {
            if state.file("snapshot").is_none() && !loaded.contains_key("targets") {
                return Err(UpdateError::BadHierarchy {
                    missing: "targets".into(),
                    msg: "no targets metadata to build the first snapshot from".into(),
                });
            }
            false
        }
    };
    Ok(Checked { root, heads, loaded, snapshot_uploaded, signers, views, targets })
}

/// The delegations whose declared paths validating `roles` consults: each of those roles and
/// every delegation above it. Only these keep their paths when a targets file is read (a file
/// may declare a thousand delegations of a thousand paths; indexing them all would cost about
/// as much memory again as the file).
fn needed_declarations<'a>(roles: impl Iterator<Item = &'a RoleName>) -> BTreeSet<RoleName> {
    let mut needed = BTreeSet::new();
    for role in roles {
        let mut current = Some(role.clone());
        while let Some(role) = current.filter(RoleName::is_delegation) {
            current = role.parent();
            if !needed.insert(role) {
                break;
            }
        }
    }
    needed
}

/// Loads `role` and its ancestors from storage into `loaded` (expiry ignored, signatures checked),
/// keeping the paths of the `needed` delegations.
fn load_ancestors(
    role: &RoleName,
    state: &RepoState,
    root: &Root,
    loaded: &mut BTreeMap<RoleName, LoadedTargets>,
    now: DateTime<Utc>,
    needed: &BTreeSet<RoleName>,
) -> Result<(), UpdateError> {
    if loaded.contains_key(role) {
        return Ok(());
    }
    if let Some(parent) = role.parent() {
        load_ancestors(&parent, state, root, loaded, now, needed)?;
    }
    let Some(bytes) = state.file(role.as_str()) else {
        return Err(UpdateError::BadTargets(format!("parent role {role} does not exist on the server")));
    };
    let stored = |problem: String| UpdateError::BadTargets(format!("stored {role} is no longer valid: {problem}"));
    let signed = parse_signed(bytes, role.as_str()).map_err(stored)?;
    let file = load_targets(role, (bytes, &signed), root, loaded, now, None, needed).map_err(stored)?;
    loaded.insert(role.clone(), file);
    Ok(())
}

/// Verifies one targets-type file (its bytes and their parse) against its parent. `limits` is `Some` for uploaded files,
/// which must also be unexpired; stored ancestors pass `None`. Only the `needed` delegations
/// the file declares keep their paths.
fn load_targets(
    role: &RoleName,
    (bytes, signed): (&[u8], &Signed<'_>),
    root: &Root,
    loaded: &BTreeMap<RoleName, LoadedTargets>,
    now: DateTime<Utc>,
    limits: Option<&Limits>,
    needed: &BTreeSet<RoleName>,
) -> Result<LoadedTargets, String> {
    if let Some(limits) = limits {
        targets_counts(role, signed, limits)?;
    }
    // The declarations above this role, found before its body is read so that each target
    // name is checked against them as it is read (none is kept); a problem finding them is
    // reported after the body's own problems, as it always was.
    let chain: Result<Vec<Arc<Delegation>>, String> = match role.parent() {
        None => Ok(Vec::new()),
        Some(parent_role) => loaded
            .get(&parent_role)
            .ok_or_else(|| format!("parent role {parent_role} is not available"))
            .and_then(|parent| {
                let declaration = parent
                    .body
                    .delegation(role)
                    .ok_or_else(|| format!("{role} is not a delegation of {parent_role}"))?;
                let mut chain = Vec::with_capacity(parent.chain.len().saturating_add(1));
                chain.extend(parent.chain.iter().cloned());
                chain.push(Arc::new(declaration.clone()));
                Ok(chain)
            }),
    };
    let outside = |name: &str| chain.as_ref().is_ok_and(|chain| !chain.iter().all(|level| level.allows(name)));
    let keep_paths = |name: &RoleName| needed.contains(name);
    let reading = TargetsReading {
        outside,
        // Sub-delegations must stay within this role's own paths: checked as they are read.
        within: chain.as_ref().ok().and_then(|chain| chain.last()).map(AsRef::as_ref),
        keep_paths: Some(&keep_paths),
        read_targets: true,
    };
    let (body, findings) = Targets::read(signed, role, reading).map_err(|error| format!("{role}: {error}"))?;
    let chain = chain?;
    let signers = match (role.parent(), chain.last()) {
        (Some(parent_role), Some(declaration)) => {
            let parent =
                loaded.get(&parent_role).ok_or_else(|| format!("parent role {parent_role} is not available"))?;
            check_threshold(role.as_str(), signed, &parent.body.delegation_keys, &declaration.keys)
                .map_err(|error| error.to_string())?
        }
        (None, _) => {
            let role_keys = root.role(BaseRole::Targets).ok_or("root has no targets role")?;
            check_threshold(role.as_str(), signed, &root.keys, role_keys).map_err(|error| error.to_string())?
        }
        (Some(_), None) => return Err(format!("{role} has no declaration")),
    };
    // Strict: every target must lie within the paths of this role and of every role above it.
    if let Some(name) = findings.first_outside {
        return Err(format!("target {name:?} is outside the paths delegated to {role}"));
    }
    // Strict: sub-delegations must stay within this role's own paths.
    if let Some(child) = findings.delegation_outside {
        return Err(format!("delegation {child} has paths outside those of {role}"));
    }
    let view = match limits {
        Some(_) => {
            not_expired(role.as_str(), body.expires, now)?;
            Some(TargetsView::of(role, bytes, signed, &body).map_err(|error| format!("{role}: {error}"))?)
        }
        None => None,
    };
    Ok(LoadedTargets { body, meta: FileMeta::of(bytes), chain, signers, view })
}

fn validate_snapshot(
    signed: &Signed<'_>,
    root: &Root,
    loaded: &BTreeMap<String, FileMeta>,
    state: &RepoState,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(FileHead, Vec<String>), String> {
    signature_count("snapshot", signed, limits)?;
    let role_keys = root.role(BaseRole::Snapshot).ok_or("root has no snapshot role")?;
    let signers = check_threshold("snapshot", signed, &root.keys, role_keys).map_err(|error| error.to_string())?;
    let snapshot = Snapshot::from_signed(signed).map_err(|error| error.to_string())?;
    for (role, file) in loaded {
        let entry = snapshot.meta.get(role).ok_or_else(|| format!("snapshot is missing metadata for {role}"))?;
        if !entry.matches_meta(file) {
            return Err(format!("snapshot does not match the {role} metadata"));
        }
    }
    // Strict: entries for roles not in this update must describe the server's current file,
    // read or, when it was not read, described by the stored snapshot's entry for it.
    let unchanged = state.unchanged();
    for (role, entry) in &snapshot.meta {
        if loaded.contains_key(role) {
            continue;
        }
        let current = match state.file(role) {
            Some(bytes) => entry.matches(bytes),
            None => unchanged.current(role, entry).is_some(),
        };
        if !current {
            return Err(format!("snapshot lists {role} metadata that the server does not have"));
        }
    }
    not_expired("snapshot", snapshot.expires, now)?;
    Ok((FileHead::of(&RoleName::base(BaseRole::Snapshot), snapshot.version, snapshot.expires), signers))
}

/// An unsigned snapshot or timestamp the server is about to sign.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Which role.
    pub role: BaseRole,
    /// Version of the draft.
    pub version: i64,
    /// Expiry of the draft.
    pub expires: DateTime<Utc>,
    /// The canonical body: the exact bytes to sign.
    pub canonical: Vec<u8>,
}

impl Draft {
    /// Wraps the signed draft into the file to store.
    pub fn finish(self, signatures: &[Signature]) -> NewFile {
        NewFile {
            role: RoleName::base(self.role),
            version: self.version,
            expires: self.expires,
            bytes: envelope(&self.canonical, signatures),
        }
    }
}

fn draft(role: BaseRole, version: i64, expires: DateTime<Utc>, body: &Value) -> Result<Draft, UpdateError> {
    let canonical = crate::canonical::to_canonical(body).map_err(|error| UpdateError::Validation(error.to_string()))?;
    Ok(Draft { role, version, expires, canonical })
}

/// The version after `previous`, refused past [`MAX_VERSION`].
fn next_version(role: &str, previous: i64) -> Result<i64, UpdateError> {
    match previous.checked_add(1) {
        Some(next) if next <= MAX_VERSION => Ok(next),
        _ => Err(UpdateError::Validation(format!("the {role} version cannot go past {MAX_VERSION}"))),
    }
}

/// Drafts the next snapshot: the previous one's entries (if any), with every file in `loaded`
/// listed by its exact bytes; version previous + 1; expiry now + 3 years.
pub fn draft_snapshot(
    previous: Option<&[u8]>,
    loaded: &BTreeMap<String, FileMeta>,
    now: DateTime<Utc>,
) -> Result<Draft, UpdateError> {
    let (mut meta, version) = match previous {
        Some(bytes) => {
            let snapshot = Signed::parse(bytes)
                .and_then(|signed| Snapshot::from_signed(&signed))
                .map_err(|error: MetadataError| UpdateError::StoredState(format!("stored snapshot: {error}")))?;
            (snapshot.meta, snapshot.version)
        }
        None => (BTreeMap::new(), 0),
    };
    for (role, file) in loaded {
        meta.insert(role.clone(), file.clone());
    }
    let snapshot = Snapshot { version: next_version("snapshot", version)?, expires: now + SNAPSHOT_LIFETIME, meta };
    draft(BaseRole::Snapshot, snapshot.version, snapshot.expires, &snapshot.body())
}

/// Drafts the next timestamp for `snapshot`: version previous + 1, expiry now + 14 days.
pub fn draft_timestamp(previous: Option<&[u8]>, snapshot: &[u8], now: DateTime<Utc>) -> Result<Draft, UpdateError> {
    let version = match previous {
        Some(bytes) => {
            Signed::parse(bytes)
                .and_then(|signed| Timestamp::from_signed(&signed))
                .map_err(|error| UpdateError::StoredState(format!("stored timestamp: {error}")))?
                .version
        }
        None => 0,
    };
    let timestamp = Timestamp {
        version: next_version("timestamp", version)?,
        expires: now + TIMESTAMP_LIFETIME,
        snapshot: FileMeta::of(snapshot),
    };
    draft(BaseRole::Timestamp, timestamp.version, timestamp.expires, &timestamp.body())
}

/// The roles a snapshot makes current, with the lower-case hex SHA-256 of each file, limited to
/// roles whose file is among `available` (role → bytes), plus the snapshot and timestamp.
pub fn current_set(
    snapshot: &NewFile,
    timestamp: &NewFile,
    available: &BTreeMap<String, &[u8]>,
) -> Result<Vec<(String, String)>, UpdateError> {
    current_set_with(snapshot, timestamp, available, &Unchanged::default())
}

/// [`current_set`], where the roles not among `available` keep their current file when the
/// snapshot lists it as the stored snapshot did (`unchanged`, see [`Unchanged`]).
pub fn current_set_with(
    snapshot: &NewFile,
    timestamp: &NewFile,
    available: &BTreeMap<String, &[u8]>,
    unchanged: &Unchanged,
) -> Result<Vec<(String, String)>, UpdateError> {
    let parsed = Signed::parse(&snapshot.bytes)
        .and_then(|signed| Snapshot::from_signed(&signed))
        .map_err(|error| UpdateError::StoredState(format!("snapshot: {error}")))?;
    let mut set: Vec<(String, String)> = parsed
        .meta
        .iter()
        .filter_map(|(role, entry)| match available.get(role.as_str()) {
            Some(bytes) => entry.matches(bytes).then(|| (role.clone(), hex::encode(sha256(bytes)))),
            None => unchanged.current(role, entry).map(|sha256| (role.clone(), sha256.to_owned())),
        })
        .collect();
    set.push(("snapshot".into(), snapshot.sha256_hex()));
    set.push(("timestamp".into(), timestamp.sha256_hex()));
    Ok(set)
}
