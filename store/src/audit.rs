//! Rows of the audit tables: log entries, the Merkle tree's stored hashes, checkpoints, the
//! checkpoint key, delegation grants and target history. The store appends entries and keeps the
//! tree (tufa-audit decides the hashes); it never signs anything.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tufa_audit::{Entry, Hash, NewEntry};

/// What the store records with a change, in the same transaction: the audit entry, and for a
/// publish the grants and target events it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The audit entry.
    pub entry: NewEntry,
    /// Key IDs whose signatures the entry records, indexed to find every entry of a key.
    pub keys: Vec<String>,
    /// Grants this change ends, as (delegating role, delegated role): the grant in force of each
    /// is superseded (a changed grant is superseded, then made again in `grants`). Grants a new
    /// version of their file leaves unchanged are in neither list and stay in force.
    pub superseded: Vec<(String, String)>,
    /// Grants made by the files this change stores.
    pub grants: Vec<NewGrant>,
    /// Targets added, changed or removed by this change.
    pub history: Vec<NewTargetEvent>,
    /// More targets added, changed or removed, and more grants, a chunk at a time as the store
    /// reads them from the change's files: a publish of 100,000 targets or a million delegation
    /// paths never holds them in memory at once. The events are written before the entry, which
    /// [`EventSource::finish_entry`] then completes; the grants after the entry's own `grants`.
    pub streamed: Option<StreamedEvents>,
}

impl Record {
    /// A record of `entry` alone.
    pub fn new(entry: NewEntry) -> Record {
        Record {
            entry,
            keys: Vec::new(),
            superseded: Vec::new(),
            grants: Vec::new(),
            history: Vec::new(),
            streamed: None,
        }
    }
}

/// Grants and target events produced while a change is written, in order, a chunk at a time.
pub trait EventSource: Send {
    /// The next at most `max` events (at least one while any are left); none once all were
    /// given. `files` are the change's files with their bytes: the store asks before it inserts
    /// them. An error aborts the change (nothing is written).
    fn next_events(&mut self, files: &[crate::NewFile], max: usize) -> Result<Vec<NewTargetEvent>, String>;

    /// The next at most `max` grants, written after the entry and the record's own `grants`;
    /// none once all were given (the default: a source of events only).
    fn next_grants(&mut self, _files: &[crate::NewFile], _max: usize) -> Result<Vec<NewGrant>, String> {
        Ok(Vec::new())
    }

    /// Completes the record's entry once every event was given: what the entry says of the
    /// events (their counts and digest) is known only then. The store writes the events of a
    /// streamed record before its entry and calls this in between (the default changes nothing).
    fn finish_entry(&mut self, _entry: &mut NewEntry) {}
}

/// The [`EventSource`] of a [`Record`]. Clones share the source; two are equal when they are the
/// same source.
#[derive(Clone)]
pub struct StreamedEvents(Arc<std::sync::Mutex<Box<dyn EventSource>>>);

impl StreamedEvents {
    /// Shares `source`.
    pub fn new(source: Box<dyn EventSource>) -> StreamedEvents {
        StreamedEvents(Arc::new(std::sync::Mutex::new(source)))
    }

    /// The source's next at most `max` grants from `files` (see [`EventSource::next_grants`]).
    pub fn next_grants(&self, files: &[crate::NewFile], max: usize) -> Result<Vec<NewGrant>, String> {
        let mut source = self.0.lock().map_err(|_| "the grants' source failed earlier".to_owned())?;
        source.next_grants(files, max)
    }

    /// The source's next at most `max` events from `files` (see [`EventSource::next_events`]).
    pub fn next_events(&self, files: &[crate::NewFile], max: usize) -> Result<Vec<NewTargetEvent>, String> {
        let mut source = self.0.lock().map_err(|_| "the target events' source failed earlier".to_owned())?;
        source.next_events(files, max)
    }

    /// Lets the source complete `entry` (see [`EventSource::finish_entry`]).
    pub fn finish_entry(&self, entry: &mut NewEntry) -> Result<(), String> {
        let mut source = self.0.lock().map_err(|_| "the target events' source failed earlier".to_owned())?;
        source.finish_entry(entry);
        Ok(())
    }
}

impl std::fmt::Debug for StreamedEvents {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("StreamedEvents(..)")
    }
}

impl PartialEq for StreamedEvents {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StreamedEvents {}

/// One key a grant trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantKey {
    /// The key ID as the metadata lists it.
    pub key_id: String,
    /// The canonical key ID (of the bare public key).
    pub canonical_id: String,
    /// The certificate subject, when the key is a certificate.
    pub subject: Option<String>,
}

/// A grant to store: `delegating_role` at `version` lets `keys` sign `delegated_role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    /// The role whose file makes the grant (`root` for the base roles).
    pub delegating_role: String,
    /// The role granted.
    pub delegated_role: String,
    /// The version of the delegating role's file.
    pub version: i64,
    /// How many of the keys must sign.
    pub threshold: i64,
    /// Path patterns as a JSON array of strings (stored and returned as this text), or `None`
    /// for everything (base roles).
    pub paths: Option<String>,
    /// The keys.
    pub keys: Vec<GrantKey>,
}

/// A stored grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Row id.
    pub id: i64,
    /// The repository.
    pub gun: String,
    /// The grant.
    pub grant: NewGrant,
    /// Who published the file that made it, when known.
    pub principal: Option<String>,
    /// The audit entry that recorded it (none for backfilled grants).
    pub audit_seq: Option<i64>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When a newer file of the delegating role replaced it, or the repository was deleted.
    pub superseded_at: Option<DateTime<Utc>>,
    /// The audit entry of the change that ended it.
    pub superseded_seq: Option<i64>,
}

/// A target event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTargetEvent {
    /// The target name (tag).
    pub name: String,
    /// The targets-type role whose file lists it.
    pub role: String,
    /// That file's version.
    pub version: i64,
    /// `added`, `changed` or `removed`.
    pub change: String,
    /// Lowercase hex SHA-256 (for `removed`, the digest it had).
    pub sha256: Option<String>,
    /// Length in bytes.
    pub length: Option<i64>,
    /// Key IDs whose signatures on the file counted, as the metadata lists them (shared by all
    /// the events of one file).
    pub signer_keys: Arc<[String]>,
    /// The canonical key IDs of those keys, where known (shared likewise).
    pub signer_canonical_ids: Arc<[String]>,
}

/// A stored target event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEvent {
    /// Row id (increasing).
    pub id: i64,
    /// The repository.
    pub gun: String,
    /// The event.
    pub event: NewTargetEvent,
    /// Who published it, when known.
    pub principal: Option<String>,
    /// The audit entry that recorded it (none for backfilled events).
    pub audit_seq: Option<i64>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// Which audit entries to list; filters combine; results are in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries about this repository.
    pub gun: Option<String>,
    /// Only entries by this principal.
    pub principal: Option<String>,
    /// Only entries recording a signature by this key ID.
    pub key: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries after this position (the paging cursor).
    pub after: Option<u64>,
    /// Page size.
    pub limit: u32,
}

/// A stored entry with the leaf hash stored beside it (`None` when that column is unreadable).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// The entry's columns.
    pub entry: Entry,
    /// The stored leaf hash.
    pub leaf_hash: Option<Hash>,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Row id.
    pub id: i64,
    /// The tree size it covers.
    pub size: u64,
    /// Its root hash, lowercase hex.
    pub root: String,
    /// The signed note.
    pub note: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// The key checkpoints are signed with: held by the signer, recorded here so every process
/// signs with the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSigningKey {
    /// The signer's key ID.
    pub key_id: String,
    /// The key name (the log's origin).
    pub name: String,
    /// `ecdsa` or `ed25519`.
    pub keytype: String,
    /// The public key bytes as the signer reports them.
    pub public: Vec<u8>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}
