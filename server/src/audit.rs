//! The server's side of the record: what an accepted update, a delete or a new key writes to the
//! audit log, the delegation grants and the target history (built here from the validated files,
//! stored by the store in the transaction of the change).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tufa_audit::NewEntry;
use tufa_audit::entry::kinds;
use tufa_core::record;
use tufa_core::update::NewFile;
use tufa_store::{GrantKey, NewGrant, NewTargetEvent, Record};

/// The header a request ID is read from and echoed in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request ID kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// Who made a change and through which request: written into every audit entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// The authenticated principal, if any.
    pub principal: Option<String>,
    /// The client address.
    pub address: Option<String>,
    /// The request ID.
    pub request_id: Option<String>,
}

impl Requester {
    /// `entry` attributed to this requester.
    pub fn attribute(&self, entry: NewEntry) -> NewEntry {
        entry.by(self.principal.as_deref()).from_request(self.address.as_deref(), self.request_id.as_deref())
    }
}

/// The request's ID: the client's `X-Request-Id` when it is 1 to 128 printable ASCII characters,
/// else a new random one.
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(value) = headers.get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok())
        && !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return value.to_owned();
    }
    let mut bytes = [0u8; 12];
    // Without randomness the ID is still unique enough within a log line; never fail a request.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// An online signature the server made for a change, as the audit entry references it: the
/// signer's own log records the same key and payload digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineSignatureRecord {
    /// `snapshot` or `timestamp`.
    pub role: String,
    /// The canonical key ID.
    pub key_id: String,
    /// Lowercase hex SHA-256 of the signed bytes.
    pub payload_sha256: String,
    /// The entry's position in the signer's own audit log, when the signer reports it.
    pub signer_seq: Option<u64>,
}

/// What the validated files of an update mean for the record, computed off the async workers.
#[derive(Debug, Default)]
pub struct PublishParts {
    /// Canonical key ID by key ID as metadata lists it, for every key the grants name.
    pub canonical: BTreeMap<String, String>,
    grants: Vec<NewGrant>,
    superseded: Vec<(String, String)>,
    /// The target events, when there are at most [`INLINE_TARGET_CHANGES`]; else none, and
    /// `streamed` produces them while the store writes the update.
    history: Vec<NewTargetEvent>,
    /// The count and digest of all the grants: `grants`, then the streamed ones.
    grants_digest: GrantsDigest,
    streamed: Option<RecordStream>,
}

/// Up to this many target changes are listed in a publish entry itself; a larger publish lists
/// counts and a digest of the changes instead (see [`target_changes_digest`]), since a listing of
/// 100,000 targets would cost the entry several times the upload's memory. The changes themselves
/// are in the target history, written in the same transaction, and the digest binds them to the
/// entry.
pub const INLINE_TARGET_CHANGES: usize = 100;

/// A targets-type file with more delegations than this, or more bytes of delegation paths than
/// [`STREAMED_PATHS_FROM`], has its grants' paths read from the file as the store writes them
/// instead of copied beforehand.
const STREAMED_GRANTS_FROM: usize = 64;
/// See [`STREAMED_GRANTS_FROM`].
const STREAMED_PATHS_FROM: usize = 64 * 1024;

/// SHA-256 (lowercase hex) over the target changes of a publish, in the order they are recorded:
/// for each, `role`, `name`, `change`, `sha256` (empty when none) and `length` (empty when none),
/// each followed by a newline (names cannot hold control characters). An auditor recomputes it
/// from the entry's target history rows (`audit_seq` = the entry's position) to show they are the
/// ones the entry recorded.
pub fn target_changes_digest(events: &[NewTargetEvent]) -> String {
    let mut summary = ChangesSummary::default();
    events.iter().for_each(|event| summary.add(event));
    summary.sha256()
}

/// The counts of a publish's target changes and their digest ([`target_changes_digest`]), built
/// one change at a time.
#[derive(Clone)]
struct ChangesSummary {
    count: usize,
    added: usize,
    changed: usize,
    removed: usize,
    digest: aws_lc_rs::digest::Context,
    /// The text of the change being added (kept to reuse its allocation).
    line: Vec<u8>,
}

impl Default for ChangesSummary {
    fn default() -> Self {
        Self {
            count: 0,
            added: 0,
            changed: 0,
            removed: 0,
            digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            line: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ChangesSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ChangesSummary").field("count", &self.count).finish_non_exhaustive()
    }
}

impl ChangesSummary {
    fn add(&mut self, event: &NewTargetEvent) {
        self.count = self.count.saturating_add(1);
        match event.change.as_str() {
            "added" => self.added = self.added.saturating_add(1),
            "changed" => self.changed = self.changed.saturating_add(1),
            "removed" => self.removed = self.removed.saturating_add(1),
            _ => {}
        }
        // One change's fields are written into one buffer and hashed at once: a publish may
        // record 100,000 changes, and each update of the digest has its own cost.
        let line = &mut self.line;
        line.clear();
        for field in [&event.role, &event.name, &event.change, event.sha256.as_deref().unwrap_or("")] {
            line.extend_from_slice(field.as_bytes());
            line.push(b'\n');
        }
        if let Some(length) = event.length {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(line, "{length}");
        }
        line.push(b'\n');
        self.digest.update(line);
    }

    fn sha256(&self) -> String {
        hex::encode(self.digest.clone().finish().as_ref())
    }

    /// The `targets` member of a publish entry with more than [`INLINE_TARGET_CHANGES`] changes.
    fn details(&self) -> Value {
        json!({
            "count": self.count,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "sha256": self.sha256(),
        })
    }
}

/// One targets-type file of a publish whose target events are written as the store reads them.
struct StreamedFile {
    role: String,
    version: i64,
    /// The version it replaces (the stream's other input), if any.
    previous: Option<Vec<u8>>,
    stream: record::TargetChangeStream,
    signer_keys: std::sync::Arc<[String]>,
    signer_canonical_ids: std::sync::Arc<[String]>,
}

/// The grants of one targets-type file with too many delegation paths to hold: everything but
/// the paths, which are read from the file (in the store's hands) as each grant is written.
struct StreamedGrants {
    role: String,
    grants: std::collections::VecDeque<(NewGrant, record::PathsRange)>,
}

/// The grants and target events of a publish with too many to hold, produced a chunk at a time
/// from the uploaded files (in the store's hands) and the versions they replace (kept here).
#[derive(Default)]
pub struct RecordStream {
    grants: std::collections::VecDeque<StreamedGrants>,
    files: std::collections::VecDeque<StreamedFile>,
    /// The counts and digest of the events given so far: the entry's `targets` once all were.
    summary: ChangesSummary,
    /// Whether the entry's `targets` are the streamed events' (else the entry lists them).
    counts_targets: bool,
}

/// The bytes of `role`'s file among the files of an update.
fn file_bytes<'a>(files: &'a [tufa_store::NewFile], role: &str) -> Result<&'a [u8], String> {
    files
        .iter()
        .find(|stored| stored.role == role)
        .map(|stored| stored.data.as_slice())
        .ok_or_else(|| format!("the update has no {role} file to read its record from"))
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RecordStream")
            .field("grants", &self.grants.len())
            .field("files", &self.files.len())
            .finish()
    }
}

impl tufa_store::EventSource for RecordStream {
    fn next_grants(&mut self, files: &[tufa_store::NewFile], max: usize) -> Result<Vec<NewGrant>, String> {
        while let Some(file) = self.grants.front_mut() {
            if file.grants.is_empty() {
                self.grants.pop_front();
                continue;
            }
            let bytes = file_bytes(files, &file.role)?;
            let mut chunk = Vec::new();
            while chunk.len() < max.max(1) {
                let Some((mut grant, range)) = file.grants.pop_front() else { break };
                let paths = record::paths_at(bytes, range).map_err(|error| format!("{}: {error}", file.role))?;
                grant.paths = Some(paths.to_owned());
                chunk.push(grant);
            }
            return Ok(chunk);
        }
        Ok(Vec::new())
    }

    fn next_events(&mut self, files: &[tufa_store::NewFile], max: usize) -> Result<Vec<NewTargetEvent>, String> {
        while let Some(file) = self.files.front_mut() {
            let bytes = file_bytes(files, &file.role)?;
            let changes = file
                .stream
                .next_chunk(file.previous.as_deref(), bytes, max)
                .map_err(|error| format!("{}: {error}", file.role))?;
            if changes.is_empty() {
                self.files.pop_front();
                continue;
            }
            let summary = &mut self.summary;
            return Ok(changes
                .into_iter()
                .map(|change| {
                    let mut event = target_event(change, &file.role, file.version, &file.signer_keys);
                    event.signer_canonical_ids = file.signer_canonical_ids.clone();
                    summary.add(&event);
                    event
                })
                .collect());
        }
        Ok(Vec::new())
    }

    fn finish_entry(&mut self, entry: &mut tufa_audit::NewEntry) {
        if !self.counts_targets {
            return;
        }
        if let Some(details) = entry.details.as_object_mut() {
            details.insert("targets".to_owned(), self.summary.details());
        }
    }
}

/// The target event of `change` in version `version` of `role`'s file, signed by `signer_keys`.
fn target_event(
    change: record::TargetChange,
    role: &str,
    version: i64,
    signer_keys: &std::sync::Arc<[String]>,
) -> NewTargetEvent {
    NewTargetEvent {
        name: change.name,
        role: role.to_owned(),
        version,
        change: change.kind.as_str().to_owned(),
        sha256: change.sha256,
        length: change.length,
        signer_keys: signer_keys.clone(),
        signer_canonical_ids: std::sync::Arc::from(Vec::new()),
    }
}

/// SHA-256 (lowercase hex) over the grants a publish wrote, in the order written: for each, its
/// delegating role, delegated role, version, threshold and paths text (empty for the base roles),
/// then its keys sorted by key ID, each as key ID, canonical ID and subject (empty when none);
/// every field is written as its length in bytes, `:`, the bytes. `tufa-server audit verify`
/// recomputes it from the grant rows of the entry.
pub fn grants_digest(grants: &[NewGrant]) -> String {
    let mut digest = GrantsDigest::default();
    grants.iter().for_each(|grant| digest.add(grant));
    digest.sha256()
}

/// [`grants_digest`] built one grant at a time.
#[derive(Clone)]
struct GrantsDigest {
    count: usize,
    context: aws_lc_rs::digest::Context,
}

impl Default for GrantsDigest {
    fn default() -> Self {
        Self { count: 0, context: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256) }
    }
}

impl std::fmt::Debug for GrantsDigest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GrantsDigest").field("count", &self.count).finish_non_exhaustive()
    }
}

impl GrantsDigest {
    fn add(&mut self, grant: &NewGrant) {
        self.add_with_paths(grant, grant.paths.as_deref().unwrap_or(""));
    }

    /// [`GrantsDigest::add`] of `grant` with the paths text `paths` (read from the file where
    /// they are written, not copied into the grant).
    fn add_with_paths(&mut self, grant: &NewGrant, paths: &str) {
        self.count = self.count.saturating_add(1);
        let context = &mut self.context;
        let mut field = |text: &str| {
            context.update(text.len().to_string().as_bytes());
            context.update(b":");
            context.update(text.as_bytes());
        };
        field(&grant.delegating_role);
        field(&grant.delegated_role);
        field(&grant.version.to_string());
        field(&grant.threshold.to_string());
        field(paths);
        let mut keys: Vec<&GrantKey> = grant.keys.iter().collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        keys.dedup_by(|a, b| a.key_id == b.key_id);
        field(&keys.len().to_string());
        for key in keys {
            field(&key.key_id);
            field(&key.canonical_id);
            field(key.subject.as_deref().unwrap_or(""));
        }
    }

    fn sha256(&self) -> String {
        hex::encode(self.context.clone().finish().as_ref())
    }
}

/// The `targets` member of a publish entry's details: the changes themselves when there are
/// few, else their counts and digest.
fn targets_details<'a, I>(events: I) -> Value
where
    I: IntoIterator<Item = &'a NewTargetEvent>,
    I::IntoIter: ExactSizeIterator,
{
    let events = events.into_iter();
    if events.len() <= INLINE_TARGET_CHANGES {
        return inline_targets(events);
    }
    let mut summary = ChangesSummary::default();
    events.for_each(|event| summary.add(event));
    summary.details()
}

/// The changes themselves, as a publish entry lists up to [`INLINE_TARGET_CHANGES`] of them.
fn inline_targets<'a>(events: impl IntoIterator<Item = &'a NewTargetEvent>) -> Value {
    Value::Array(
        events
            .into_iter()
            .map(|event| {
                json!({
                    "role": event.role,
                    "name": event.name,
                    "change": event.change,
                    "sha256": event.sha256,
                    "length": event.length,
                })
            })
            .collect(),
    )
}

/// Shapes by delegated role (a file lists each delegated role once).
fn shapes_by_role<'a>(
    shapes: impl IntoIterator<Item = record::GrantShape<'a>>,
) -> BTreeMap<String, record::GrantShape<'a>> {
    shapes.into_iter().map(|shape| (shape.delegated_role.clone().into_owned(), shape)).collect()
}

/// Whether a new version of `role`'s file changes the grant of shape `shape`: true when
/// `before` (the shapes of the version it replaces, by delegated role) has none for its role or
/// another one, which it then supersedes. The role's entry is taken out of `before`, so what is
/// left there at the end are the grants the new version no longer makes.
fn supersedes(
    role: &str,
    shape: record::GrantShape<'_>,
    before: &mut BTreeMap<String, record::GrantShape<'_>>,
    parts: &mut PublishParts,
) -> bool {
    match before.remove(shape.delegated_role.as_ref()) {
        Some(old) if old == shape => false,
        Some(_) => {
            parts.superseded.push((role.to_owned(), shape.delegated_role.into_owned()));
            true
        }
        None => true,
    }
}

fn store_grant(grant: record::Grant, version: i64) -> NewGrant {
    NewGrant {
        delegating_role: grant.delegating_role,
        delegated_role: grant.delegated_role,
        version,
        threshold: grant.threshold,
        paths: grant.paths,
        keys: grant
            .keys
            .into_iter()
            .map(|key| GrantKey { key_id: key.key_id, canonical_id: key.canonical_id, subject: key.subject })
            .collect(),
    }
}

/// Grants and target changes of the uploaded files, against `previous`: the stored current file
/// of each uploaded targets-type role, by role, and `previous_root`: the grants of the stored
/// root when the update uploads a root. `signers` are the key IDs counted per role.
///
/// Only the grants a file changes are recorded: a grant whose keys, threshold and paths are
/// those of the version it replaces stays in force as it was recorded (so a grant's version and
/// time say since when it is in force); a changed one supersedes its predecessor, and a
/// delegate the new version no longer lists has its grant superseded.
///
/// Up to [`INLINE_TARGET_CHANGES`] + 1 changes are read here. When they all fit, they are the
/// entry's own list; otherwise the changes are read once, while the store writes them, which
/// counts and digests them for the entry (the replaced versions move into that stream).
pub fn publish_parts(
    mut previous: BTreeMap<String, Vec<u8>>,
    previous_root: &[record::Grant],
    files: &[NewFile],
    signers: &BTreeMap<String, Vec<String>>,
    mut views: BTreeMap<String, record::TargetsView>,
) -> Result<PublishParts, String> {
    let mut parts = PublishParts::default();
    let mut streamed = RecordStream::default();
    for file in files {
        let role = file.role.as_str();
        let is_root = role == "root";
        let is_targets = file.role.is_targets_type();
        if !is_root && !is_targets {
            continue;
        }
        if !is_targets {
            let signed = tufa_core::metadata::Signed::parse(&file.bytes).map_err(|error| format!("{role}: {error}"))?;
            let grants = record::file_grants_of(&file.role, &signed).map_err(|error| format!("{role}: {error}"))?;
            grants.iter().for_each(|grant| note_canonical(&mut parts, grant));
            let mut before = shapes_by_role(previous_root.iter().map(|grant| grant.shape(None)));
            let changed: Vec<bool> =
                grants.iter().map(|grant| supersedes(role, grant.shape(None), &mut before, &mut parts)).collect();
            parts.superseded.extend(before.into_keys().map(|delegated| (role.to_owned(), delegated)));
            let kept = grants.into_iter().zip(changed).filter_map(|(grant, changed)| changed.then_some(grant));
            parts.grants.extend(kept.map(|grant| store_grant(grant, file.version)));
            continue;
        }
        // Read by the verifier as it checked the file: it sees every uploaded targets-type file.
        let mut view = views.remove(role).ok_or_else(|| format!("{role}: the verifier left no view of the file"))?;
        let replaced = previous.remove(role);
        let (stream, before) = record::TargetChangeStream::of_view_with_grants(replaced.as_deref(), &view)
            .map_err(|error| format!("{role}: {error}"))?;
        // Only the grants this version changes are recorded; the others stay in force.
        let mut before = shapes_by_role(before);
        let mut located = Vec::with_capacity(view.grants.len());
        for (grant, range) in std::mem::take(&mut view.grants) {
            note_canonical(&mut parts, &grant);
            let paths = record::paths_at(&file.bytes, range).map_err(|error| format!("{role}: {error}"))?;
            if supersedes(role, grant.shape(Some(paths)), &mut before, &mut parts) {
                located.push((grant, range));
            }
        }
        parts.superseded.extend(before.into_keys().map(|delegated| (role.to_owned(), delegated)));
        // A file with many delegations or long path lists keeps its grants' paths where they are
        // written, for the store to read as it writes each grant; a small one is recorded here.
        let paths_bytes: usize =
            located.iter().filter_map(|(_, range)| *range).map(|(start, end)| end.saturating_sub(start)).sum();
        if located.len() <= STREAMED_GRANTS_FROM && paths_bytes <= STREAMED_PATHS_FROM {
            for (mut grant, range) in located {
                grant.paths =
                    Some(record::paths_text_at(&file.bytes, range).map_err(|error| format!("{role}: {error}"))?);
                parts.grants.push(store_grant(grant, file.version));
            }
        } else {
            streamed.grants.push_back(StreamedGrants {
                role: role.to_owned(),
                grants: located.into_iter().map(|(grant, range)| (store_grant(grant, file.version), range)).collect(),
            });
        }
        let signer_keys: std::sync::Arc<[String]> = signers.get(role).cloned().unwrap_or_default().into();
        // The changes are read here only while they may still fit in the entry: past
        // INLINE_TARGET_CHANGES they are read once, as the store writes them.
        let mut counting = stream.clone();
        while parts.history.len() <= INLINE_TARGET_CHANGES {
            let wanted = INLINE_TARGET_CHANGES + 1 - parts.history.len();
            let changes = counting
                .next_chunk(replaced.as_deref(), &file.bytes, wanted)
                .map_err(|error| format!("{role}: {error}"))?;
            if changes.is_empty() {
                break;
            }
            parts
                .history
                .extend(changes.into_iter().map(|change| target_event(change, role, file.version, &signer_keys)));
        }
        streamed.files.push_back(StreamedFile {
            role: role.to_owned(),
            version: file.version,
            previous: replaced,
            stream,
            signer_keys,
            signer_canonical_ids: std::sync::Arc::from(Vec::new()),
        });
    }
    // The grants in the order the store writes them: the record's own, then the streamed ones.
    parts.grants.iter().for_each(|grant| parts.grants_digest.add(grant));
    for file in &streamed.grants {
        let bytes = files
            .iter()
            .find(|uploaded| uploaded.role.as_str() == file.role)
            .map(|uploaded| uploaded.bytes.as_slice())
            .unwrap_or_default();
        for (grant, range) in &file.grants {
            let paths = record::paths_at(bytes, *range).map_err(|error| format!("{}: {error}", file.role))?;
            parts.grants_digest.add_with_paths(grant, paths);
        }
    }
    if parts.history.len() <= INLINE_TARGET_CHANGES {
        streamed.files.clear();
    } else {
        parts.history = Vec::new();
        streamed.counts_targets = true;
    }
    if !streamed.files.is_empty() || !streamed.grants.is_empty() {
        parts.streamed = Some(streamed);
    }
    Ok(parts)
}

/// Notes the canonical IDs of `grant`'s keys: every grant an uploaded file makes, changed or
/// not, names keys whose signatures the update may count.
fn note_canonical(parts: &mut PublishParts, grant: &record::Grant) {
    for key in &grant.keys {
        if !parts.canonical.contains_key(&key.key_id) {
            parts.canonical.insert(key.key_id.clone(), key.canonical_id.clone());
        }
    }
}

impl PublishParts {
    /// Adds the canonical IDs of keys named by grants already in force (the keys that signed a
    /// file may be granted by a file this update does not replace), and fills in each target
    /// event's canonical signer IDs.
    pub fn resolve_canonical(&mut self, in_force: &[tufa_store::Grant]) {
        for grant in in_force {
            for key in &grant.grant.keys {
                self.canonical.entry(key.key_id.clone()).or_insert_with(|| key.canonical_id.clone());
            }
        }
        // One shared list per file (per role), not one per target.
        let mut per_role: BTreeMap<String, std::sync::Arc<[String]>> = BTreeMap::new();
        let canonical = &self.canonical;
        let mut ids_of = |role: &str, keys: &[String]| {
            per_role
                .entry(role.to_owned())
                .or_insert_with(|| keys.iter().filter_map(|key| canonical.get(key).cloned()).collect::<Vec<_>>().into())
                .clone()
        };
        for event in &mut self.history {
            event.signer_canonical_ids = ids_of(&event.role, &event.signer_keys);
        }
        for file in self.streamed.iter_mut().flat_map(|streamed| streamed.files.iter_mut()) {
            file.signer_canonical_ids = ids_of(&file.role, &file.signer_keys);
        }
    }
}

/// The record of an accepted publish: the entry (roles and versions stored, targets changed,
/// key IDs counted per role, the server's online signatures) with its grants and history.
pub fn publish_record(
    gun: &str,
    requester: &Requester,
    stored: &[(String, i64)],
    signers: &BTreeMap<String, Vec<String>>,
    online: &[OnlineSignatureRecord],
    parts: PublishParts,
) -> Record {
    let roles: BTreeMap<&str, i64> = stored.iter().map(|(role, version)| (role.as_str(), *version)).collect();
    let online_json: Vec<Value> = online
        .iter()
        .map(|signature| {
            json!({
                "role": signature.role,
                "key_id": signature.key_id,
                "payload_sha256": signature.payload_sha256,
                "signer_seq": signature.signer_seq,
            })
        })
        .collect();
    let details = json!({
        "roles": roles,
        "signers": signers,
        "online_signatures": online_json,
        // A streamed record's target changes are counted as the store writes them, and this
        // member completed then (RecordStream::finish_entry).
        "targets": match parts.streamed.as_ref().is_some_and(|streamed| streamed.counts_targets) {
            true => Value::Null,
            false => inline_targets(&parts.history),
        },
        "grants": {"count": parts.grants_digest.count, "sha256": parts.grants_digest.sha256()},
        "ended_grants": tufa_audit::entry::ended_grants(parts.superseded.iter().map(|(a, b)| (a.as_str(), b.as_str()))),
    });
    let mut keys: Vec<String> = signers.values().flatten().cloned().collect();
    // Also under their canonical IDs, so a key is found however it is named.
    let canonical: Vec<String> = keys.iter().filter_map(|key| parts.canonical.get(key).cloned()).collect();
    keys.extend(canonical);
    keys.extend(online.iter().map(|signature| signature.key_id.clone()));
    let entry = requester.attribute(NewEntry::new(kinds::PUBLISH, details).gun(gun));
    Record {
        entry,
        keys,
        superseded: parts.superseded,
        grants: parts.grants,
        history: parts.history,
        streamed: parts
            .streamed
            .map(|streamed| tufa_store::StreamedEvents::new(Box::new(streamed) as Box<dyn tufa_store::EventSource>)),
    }
}

/// The record of the server re-signing a repository's timestamp (and snapshot) on its own.
pub fn resign_record(gun: &str, stored: &[(String, i64)], online: &[OnlineSignatureRecord]) -> Record {
    let mut record =
        publish_record(gun, &Requester::default(), stored, &BTreeMap::new(), online, PublishParts::default());
    record.entry.kind = kinds::RESIGN.to_owned();
    record
}

/// The record of deleting a repository.
pub fn delete_record(gun: &str, requester: &Requester) -> Record {
    Record::new(requester.attribute(NewEntry::new(kinds::DELETE, json!({})).gun(gun)))
}

/// The record of an online key issued for a repository and role.
pub fn key_record(gun: &str, role: &str, key_id: &str, rotate: bool, requester: &Requester) -> Record {
    let details = json!({"role": role, "key_id": key_id, "rotation": rotate});
    let mut record = Record::new(requester.attribute(NewEntry::new(kinds::KEY_CREATE, details).gun(gun)));
    record.keys = vec![key_id.to_owned()];
    record
}

/// The role names of `files` with their versions, for the entry.
pub fn stored_roles(files: &[NewFile]) -> Vec<(String, i64)> {
    files.iter().map(|file| (file.role.to_string(), file.version)).collect()
}

/// The repository name the checkpoint key is created under at the signer. The key is recorded as
/// the audit log's key and is never used for repository metadata.
pub const CHECKPOINT_KEY_GUN: &str = "tufa-audit-checkpoints";

/// Signs checkpoints of the audit log with a key held by the online signer (in-process, or a
/// remote tufa-signer or notary-signer, so an HSM-held key works).
#[derive(Clone)]
pub struct Checkpointer {
    store: std::sync::Arc<dyn tufa_store::Store>,
    signer: std::sync::Arc<dyn crate::signing::OnlineSigner>,
}

/// Why a checkpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFailure {
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] tufa_store::StoreError),
    /// The signer failed.
    #[error("signer: {0}")]
    Signer(#[from] crate::signing::SignerError),
    /// The tree, key or note was inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl Checkpointer {
    /// A checkpointer over the server's store and online signer.
    pub fn new(
        store: std::sync::Arc<dyn tufa_store::Store>,
        signer: std::sync::Arc<dyn crate::signing::OnlineSigner>,
    ) -> Checkpointer {
        Checkpointer { store, signer }
    }

    /// The checkpoint key and its signer key ID: the recorded one, or a new ECDSA key from the
    /// signer recorded now (the first of several racing processes wins; the others use it).
    pub async fn key(&self) -> Result<(String, tufa_audit::CheckpointKey), CheckpointFailure> {
        if let Some(stored) = self.store.audit_signing_key().await? {
            return Ok((stored.key_id.clone(), stored_key(&stored)?));
        }
        let gun = tufa_core::names::Gun::parse(CHECKPOINT_KEY_GUN)
            .map_err(|error| CheckpointFailure::Invalid(error.to_string()))?;
        let public = self
            .signer
            .create_key(&gun, tufa_core::names::BaseRole::Timestamp, tufa_core::keys::Algorithm::Ecdsa)
            .await?;
        let key_id = public.canonical_id().map_err(|error| CheckpointFailure::Invalid(error.to_string()))?;
        // Owned by a repository name of its own, so no repository's root can claim it.
        self.store
            .record_key_owner(&tufa_store::KeyOwner {
                key_id: key_id.clone(),
                gun: CHECKPOINT_KEY_GUN.to_owned(),
                role: "timestamp".to_owned(),
                requester: None,
                created_at: chrono::Utc::now(),
            })
            .await?;
        let record = tufa_store::AuditSigningKey {
            key_id: key_id.clone(),
            name: format!("tufa-server.audit/{}", key_id.get(..16).unwrap_or(&key_id)),
            keytype: public.keytype().as_str().to_owned(),
            public: public.public().to_vec(),
            created_at: chrono::Utc::now(),
        };
        if !self.store.insert_audit_signing_key(&record).await? {
            let stored = self
                .store
                .audit_signing_key()
                .await?
                .ok_or_else(|| CheckpointFailure::Invalid("the checkpoint key vanished".into()))?;
            return Ok((stored.key_id.clone(), stored_key(&stored)?));
        }
        let details = json!({"role": "checkpoint", "key_id": key_id, "name": record.name});
        let mut entry = Record::new(NewEntry::new(kinds::KEY_CREATE, details).gun(CHECKPOINT_KEY_GUN));
        entry.keys = vec![key_id.clone()];
        self.store.append_audit(entry).await?;
        tracing::info!(key.id = %key_id, name = %record.name, "created the audit checkpoint key");
        Ok((key_id, stored_key(&record)?))
    }

    /// Signs and stores a checkpoint of the whole log if it grew since the last one. Returns the
    /// new checkpoint's size.
    pub async fn checkpoint(&self) -> Result<Option<u64>, CheckpointFailure> {
        let size = self.store.audit_size().await?;
        let latest = self.store.latest_checkpoint().await?;
        if latest.as_ref().is_some_and(|latest| latest.size >= size) || size == 0 {
            return Ok(None);
        }
        // The key first: creating it appends its own entry, which this checkpoint then covers.
        let (key_id, key) = self.key().await?;
        let size = self.store.audit_size().await?;
        let hashes = self.store.audit_hashes(&tufa_audit::tree::root_reads(size)).await?;
        let root =
            tufa_audit::tree::root(size, &hashes).map_err(|error| CheckpointFailure::Invalid(error.to_string()))?;
        let head = tufa_audit::TreeHead { origin: key.name().to_owned(), size, root, time: chrono::Utc::now() };
        let text = head.text().map_err(|error| CheckpointFailure::Invalid(error.to_string()))?;
        let signature = self.signer.sign(&key_id, &text).await?;
        let note = tufa_audit::checkpoint::signed_note(&text, &key, signature.bytes)
            .map_err(|error| CheckpointFailure::Invalid(error.to_string()))?;
        // Never store a checkpoint that does not verify, whatever the signer returned.
        tufa_audit::checkpoint::open(&note, &key).map_err(|error| CheckpointFailure::Invalid(error.to_string()))?;
        self.store.insert_checkpoint(size, &tufa_audit::entry::hash_hex(&root), &note).await?;
        tracing::debug!(size, "signed an audit checkpoint");
        Ok(Some(size))
    }

    /// Signs a checkpoint every `interval` while the log grows, until the task is dropped.
    pub async fn run(self, interval: std::time::Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.checkpoint().await {
                tracing::warn!(%error, "could not sign an audit checkpoint; will retry");
            }
        }
    }
}

/// How often the server moves the index rows small audit entries leave pending into their
/// tables (see [`tufa_store::Store::flush_audit_index`]): a publish writes one row for them, and
/// a batch of entries is written at once, which costs less than a row per key and target in each.
pub const INDEX_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Moves pending index rows into their tables every `interval`, until the task is dropped.
pub async fn flush_index_loop(store: std::sync::Arc<dyn tufa_store::Store>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        match store.flush_audit_index().await {
            Ok(_) => failing = false,
            // Once per run of failures: the rows stay pending and are moved by the next try,
            // and by any query that reads them.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "could not move pending audit index rows; will retry");
            }
            Err(_) => {}
        }
    }
}

/// The verifying key of a recorded checkpoint key.
pub fn stored_key(stored: &tufa_store::AuditSigningKey) -> Result<tufa_audit::CheckpointKey, CheckpointFailure> {
    let key = tufa_core::keys::PublicKey::new(tufa_core::keys::KeyType::parse(&stored.keytype), stored.public.clone());
    tufa_audit::CheckpointKey::new(&stored.name, key).map_err(|error| CheckpointFailure::Invalid(error.to_string()))
}

/// A problem of the record at entry `position`: rows that no longer match what it recorded.
fn record_mismatch(position: u64, message: String) -> tufa_audit::Problem {
    tufa_audit::Problem { position: Some(position), kind: tufa_audit::ProblemKind::RecordMismatch, message }
}

/// The entries (by position) that made a grant of `grants` whose end no later entry recorded: an
/// end time without the entry that ended it, or the other way round, or an end before it was made.
fn badly_ended(grants: &[tufa_store::Grant]) -> BTreeSet<i64> {
    grants
        .iter()
        .filter_map(|grant| {
            let made_by = grant.audit_seq?;
            let consistent = match (grant.superseded_at, grant.superseded_seq) {
                (None, None) => true,
                (Some(_), Some(ended_by)) => ended_by > made_by,
                _ => false,
            };
            (!consistent).then_some(made_by)
        })
        .collect()
}

/// Whether the grants `ended` by `entry` are what it recorded: a publish or deletion of their
/// repository, at its time, and (when its `details` carry one) the count and digest of them.
fn ended_as_recorded(entry: &tufa_audit::Entry, details: Option<&Value>, ended: &[&tufa_store::Grant]) -> bool {
    let ends_grants = entry.kind == kinds::PUBLISH || entry.kind == kinds::DELETE;
    let in_place = ended.iter().all(|grant| {
        ends_grants && entry.gun.as_deref() == Some(grant.gun.as_str()) && grant.superseded_at == Some(entry.time)
    });
    // Entries written before ends were digested carry no `ended_grants`.
    let recorded = details.and_then(|details| details.get("ended_grants"));
    let pairs = ended.iter().map(|grant| (grant.grant.delegating_role.as_str(), grant.grant.delegated_role.as_str()));
    in_place && recorded.is_none_or(|recorded| *recorded == tufa_audit::entry::ended_grants(pairs))
}

/// The audit state row that says the backfill ran.
pub const BACKFILL_STATE: &str = "backfill";

/// Rebuilds grants and target history from the stored metadata versions of every repository
/// that has none yet (a deployment upgraded from a version without the record), once per
/// database. Principals are unknown for the past; each repository's rebuild is recorded as a
/// `backfill` entry. Returns how many repositories were rebuilt.
pub async fn backfill(store: &dyn tufa_store::Store) -> Result<u64, tufa_store::StoreError> {
    if store.audit_state(BACKFILL_STATE).await?.is_some() {
        return Ok(0);
    }
    let mut rebuilt = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = store.guns_with_files(after.as_deref(), 100).await?;
        let Some(last) = page.last().cloned() else { break };
        for gun in &page {
            // Published since the upgrade (or rebuilt by another process): its record exists.
            if !store.grant_history(gun).await?.is_empty() {
                continue;
            }
            let (grants, history, versions) = rebuild(store, gun).await?;
            let details = json!({"versions": versions, "grants": grants.len(), "target_events": history.len()});
            let record = Record::new(NewEntry::new(kinds::BACKFILL, details).gun(gun));
            store.backfill(gun, grants, history, Some(&record), None).await?;
            rebuilt += 1;
        }
        after = Some(last);
    }
    // A new database has nothing to rebuild: only the state is set, and nothing recorded.
    let record = Record::new(NewEntry::new(kinds::BACKFILL, json!({"repositories": rebuilt})));
    let record = (rebuilt > 0).then_some(&record);
    store.backfill("", Vec::new(), Vec::new(), record, Some((BACKFILL_STATE, "done"))).await?;
    if rebuilt > 0 {
        tracing::info!(repositories = rebuilt, "rebuilt grants and target history from stored metadata");
    }
    Ok(rebuilt)
}

/// The grants and target events of one repository's stored versions, oldest first.
async fn rebuild(
    store: &dyn tufa_store::Store,
    gun: &str,
) -> Result<(Vec<tufa_store::Grant>, Vec<tufa_store::TargetEvent>, usize), tufa_store::StoreError> {
    let versions = store.file_versions(gun).await?;
    let mut grants: Vec<tufa_store::Grant> = Vec::new();
    let mut history = Vec::new();
    // Per delegating role: its grants in force, by delegated role, with their positions in `grants`.
    let mut latest: BTreeMap<String, BTreeMap<String, (usize, record::Grant)>> = BTreeMap::new();
    let mut previous: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (role_name, version, at) in &versions {
        let Ok(role) = tufa_core::names::RoleName::parse(role_name) else { continue };
        if role_name != "root" && !role.is_targets_type() {
            continue;
        }
        let Some(file) = store.by_version(gun, role_name, *version).await? else { continue };
        let made = match record::file_grants(&role, &file.data) {
            Ok(made) => made,
            Err(error) => {
                tracing::warn!(gun, role = %role_name, version, %error, "backfill: skipped an unreadable stored file");
                continue;
            }
        };
        // As a publish records them: a grant this version leaves unchanged stays in force, a
        // changed one and one it no longer makes are superseded.
        let mut before = latest.remove(role_name.as_str()).unwrap_or_default();
        let mut positions = BTreeMap::new();
        for grant in made {
            let role = grant.delegated_role.clone();
            match before.remove(&role) {
                Some((index, kept)) if kept.shape(kept.paths.as_deref()) == grant.shape(grant.paths.as_deref()) => {
                    positions.insert(role, (index, kept));
                    continue;
                }
                Some((index, _)) => {
                    if let Some(ended) = grants.get_mut(index) {
                        ended.superseded_at = Some(*at);
                    }
                }
                None => {}
            }
            positions.insert(role, (grants.len(), grant.clone()));
            grants.push(tufa_store::Grant {
                id: 0,
                gun: gun.to_owned(),
                grant: store_grant(grant, *version),
                principal: None,
                audit_seq: None,
                created_at: *at,
                superseded_at: None,
                superseded_seq: None,
            });
        }
        for (index, _) in before.into_values() {
            if let Some(ended) = grants.get_mut(index) {
                ended.superseded_at = Some(*at);
            }
        }
        latest.insert(role_name.clone(), positions);
        if !role.is_targets_type() {
            continue;
        }
        let changes = match record::target_changes(previous.get(role_name).map(Vec::as_slice), &file.data) {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(gun, role = %role_name, version, %error, "backfill: skipped the targets of a stored file");
                continue;
            }
        };
        // The keys that signed the stored file (it was accepted, so they satisfied its role).
        let signer_keys: std::sync::Arc<[String]> = tufa_core::metadata::Signed::parse(&file.data)
            .map(|signed| signed.signatures().iter().map(|signature| signature.keyid.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into();
        for change in changes {
            history.push(tufa_store::TargetEvent {
                id: 0,
                gun: gun.to_owned(),
                event: NewTargetEvent {
                    name: change.name,
                    role: role_name.clone(),
                    version: *version,
                    change: change.kind.as_str().to_owned(),
                    sha256: change.sha256,
                    length: change.length,
                    signer_keys: signer_keys.clone(),
                    signer_canonical_ids: std::sync::Arc::from(Vec::new()),
                },
                principal: None,
                audit_seq: None,
                created_at: *at,
            });
        }
        previous.insert(role_name.clone(), file.data);
    }
    let canonical: BTreeMap<&str, &str> = grants
        .iter()
        .flat_map(|grant| grant.grant.keys.iter())
        .map(|key| (key.key_id.as_str(), key.canonical_id.as_str()))
        .collect();
    for event in &mut history {
        let ids: Vec<String> = event
            .event
            .signer_keys
            .iter()
            .filter_map(|key| canonical.get(key.as_str()).map(|id| (*id).to_owned()))
            .collect();
        event.event.signer_canonical_ids = ids.into();
    }
    Ok((grants, history, versions.len()))
}

/// Whether the history rows of an entry say what the entry recorded of them: its repository,
/// principal and time, and for each row's role the version and the signing keys (in order) the
/// entry names. The rows' changes are checked against the entry's digest apart.
fn attributed_as_recorded(
    entry: &tufa_audit::Entry,
    details: Option<&Value>,
    rows: &[&tufa_store::TargetEvent],
) -> bool {
    let mut by_role: BTreeMap<&str, (Option<i64>, Vec<&str>)> = BTreeMap::new();
    rows.iter().all(|row| {
        let role = row.event.role.as_str();
        let (version, signers) = by_role.entry(role).or_insert_with(|| {
            let member = |name: &str| details.and_then(|details| details.get(name)).and_then(|member| member.get(role));
            let signers = member("signers")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (member("roles").and_then(Value::as_i64), signers)
        });
        Some(row.gun.as_str()) == entry.gun.as_deref()
            && row.principal == entry.principal
            && row.created_at == entry.time
            && *version == Some(row.event.version)
            && row.event.signer_keys.iter().map(String::as_str).eq(signers.iter().copied())
    })
}

/// Checks the tag history rows of the publish entries of `entries` (one page, in order) against
/// what each entry recorded: the changes themselves, or their counts and digest, and who signed
/// them, in which version, by whom and when (see `attributed_as_recorded`). `history` holds
/// the rows whose `audit_seq` lies in the page, ordered by entry, then as written. The same for
/// grants: `grants` are the ones the page's entries made, checked against each entry's grant
/// digest and for a consistent end; `ended` the ones they ended, checked against the entry that
/// ended them (a publish or delete of the same repository, at its time) and its `ended_grants`
/// digest. Returns the problems, each at the entry's position.
pub fn check_history(
    entries: &[tufa_store::StoredEntry],
    history: &[tufa_store::TargetEvent],
    grants: &[tufa_store::Grant],
    ended: &[tufa_store::Grant],
) -> Vec<tufa_audit::Problem> {
    let mut problems: Vec<tufa_audit::Problem> = badly_ended(grants)
        .into_iter()
        .filter_map(|made_by| u64::try_from(made_by).ok())
        .map(|position| {
            record_mismatch(
                position,
                format!(
                    "a grant made by the entry at position {position} has an end that no later entry recorded: \
                     its superseded_at or superseded_seq was edited"
                ),
            )
        })
        .collect();
    let mut grants_by_entry: BTreeMap<i64, Vec<NewGrant>> = BTreeMap::new();
    for grant in grants {
        if let Some(seq) = grant.audit_seq {
            grants_by_entry.entry(seq).or_default().push(grant.grant.clone());
        }
    }
    let mut ended_by_entry: BTreeMap<i64, Vec<&tufa_store::Grant>> = BTreeMap::new();
    for grant in ended {
        if let Some(seq) = grant.superseded_seq {
            ended_by_entry.entry(seq).or_default().push(grant);
        }
    }
    let mut by_entry: BTreeMap<i64, Vec<&tufa_store::TargetEvent>> = BTreeMap::new();
    for event in history {
        if let Some(seq) = event.audit_seq {
            by_entry.entry(seq).or_default().push(event);
        }
    }
    for stored in entries {
        let entry = &stored.entry;
        let Ok(seq) = i64::try_from(entry.seq) else { continue };
        let rows = by_entry.remove(&seq).unwrap_or_default();
        let written = grants_by_entry.remove(&seq).unwrap_or_default();
        let ended = ended_by_entry.remove(&seq).unwrap_or_default();
        // Read once: publishes record targets, grants and ended grants; deletions ended grants.
        let details = (entry.kind == kinds::PUBLISH || entry.kind == kinds::DELETE).then(|| entry.details_json());
        if !ended_as_recorded(entry, details.as_ref(), &ended) {
            problems.push(record_mismatch(
                entry.seq,
                format!(
                    "the grants ended by the entry at position {} ({} rows) do not match what the entry recorded: \
                     grants were ended, revived or moved behind the server's back",
                    entry.seq,
                    ended.len()
                ),
            ));
        }
        // Publish entries written before grants were digested carry no `grants` member.
        if let Some(recorded) = details.as_ref().and_then(|details| details.get("grants")) {
            let expected = json!({"count": written.len(), "sha256": grants_digest(&written)});
            if *recorded != expected {
                problems.push(record_mismatch(
                    entry.seq,
                    format!(
                        "the grants of the entry at position {} ({} rows) do not match what the entry recorded: \
                         grant rows or their keys were edited, inserted or deleted",
                        entry.seq,
                        written.len()
                    ),
                ));
            }
        }
        let recorded = if let Some(details) = &details {
            details.get("targets").cloned().unwrap_or(Value::Array(Vec::new()))
        } else if rows.is_empty() {
            continue;
        } else {
            Value::Array(Vec::new())
        };
        if !attributed_as_recorded(entry, details.as_ref(), &rows) {
            problems.push(record_mismatch(
                entry.seq,
                format!(
                    "the tag history of the entry at position {} names other signing keys, another version, \
                     principal, repository or time than the entry recorded: history rows were edited",
                    entry.seq
                ),
            ));
        }
        if targets_details(rows.iter().map(|row| &row.event)) != recorded {
            problems.push(record_mismatch(
                entry.seq,
                format!(
                    "the tag history of the entry at position {} ({} rows) does not match what the entry recorded: \
                     history rows were edited, inserted or deleted",
                    entry.seq,
                    rows.len()
                ),
            ));
        }
    }
    problems
}
