//! The audit API (`GET /v1/…`, see README "Audit API"): a repository's grants now or at a time,
//! who changed them, where a key is trusted, every version of a tag, the audit log (paged), the
//! latest signed checkpoint, single entries, and inclusion and consistency proofs. Answers are
//! JSON in the shapes `tufa-server audit …` prints, and each caller sees only what it may read.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tufa_audit::entry::{format_time, hash_hex};
use tufa_audit::{Entry, Hash, tree};
use tufa_auth::Access;
use tufa_auth::roles::{Binding, Role, effective_role};
use tufa_core::record;
use tufa_store::{AuditFilter, Grant, Store};

use crate::app::AppState;
use crate::audit_cli::{entry_json, grant_json, grant_keys_json, history_json};
use crate::auth::{Authenticator, Caller};
use crate::error::ApiError;
use crate::routes::{Route, percent_decode};

/// Entries one page of `GET /v1/audit` holds when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 100;

/// The most entries one page of `GET /v1/audit` may ask for.
pub const MAX_PAGE: u32 = 1000;

/// Longest key ID accepted in `/v1/keys/<keyid>/grants` (key IDs are SHA-256 hex, 64 characters).
const MAX_KEY_ID: usize = 128;

/// Longest parameter value repeated in an error message.
const MAX_ECHO: usize = 64;

/// What the caller may see, decided once per request from its credentials.
enum Visibility {
    /// No authentication: everything.
    All,
    /// A registry token: the repositories its `access` claim grants `pull` on.
    Token(Vec<Access>),
    /// The builtin mode: the caller's role bindings (its own and `anonymous`'s).
    Builtin {
        /// The caller's principal, if it authenticated.
        principal: Option<String>,
        /// Its bindings and `anonymous`'s.
        bindings: Vec<Binding>,
    },
}

impl Visibility {
    async fn of(state: &AppState, caller: &Caller) -> Result<Visibility, ApiError> {
        Ok(match state.auth.as_ref() {
            Authenticator::None => Visibility::All,
            Authenticator::Token(_) => Visibility::Token(caller.granted.clone()),
            Authenticator::Builtin(builtin) => Visibility::Builtin {
                principal: caller.principal.clone(),
                bindings: builtin.bindings_for(caller.principal.as_deref()).await?,
            },
        })
    }

    /// Whether the caller may read repository `gun`.
    fn may_read(&self, gun: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Token(granted) => tufa_auth::grants(granted, &Access::new("repository", gun, &["pull"])),
            Visibility::Builtin { principal, bindings } => {
                effective_role(bindings, principal.as_deref(), gun).is_some()
            }
        }
    }

    /// Whether the caller may see entries about no repository (account and role changes): an
    /// admin of `*` (builtin), a token granting `repository:*:*` (token mode), everyone without
    /// authentication.
    fn sees_everything(&self) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Token(granted) => tufa_auth::grants(granted, &Access::new("repository", "*", &["*"])),
            Visibility::Builtin { principal, bindings } => bindings.iter().any(|binding| {
                binding.role == Role::Admin
                    && binding.pattern.as_str() == "*"
                    && principal.as_deref() == Some(binding.principal.as_str())
            }),
        }
    }

    /// Whether the caller may read anything at all, which is what checkpoints, entries and
    /// proofs need: a token the server accepted for the catalog, or any role binding.
    fn reads_anything(&self) -> bool {
        match self {
            Visibility::All | Visibility::Token(_) => true,
            Visibility::Builtin { bindings, .. } => !bindings.is_empty(),
        }
    }

    /// Whether the caller may see `entry`.
    fn may_see(&self, entry: &Entry) -> bool {
        match &entry.gun {
            Some(gun) => self.may_read(gun),
            None => self.sees_everything(),
        }
    }

    fn require_some_read(&self) -> Result<(), ApiError> {
        if self.reads_anything() {
            Ok(())
        } else {
            Err(ApiError::Denied("the audit log is readable by callers who may read some repository".into()))
        }
    }
}

fn json_response(value: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// A parameter value for an error message: quoted, and cut to a bounded length.
fn echo(text: &str) -> String {
    let cut: String = text.chars().take(MAX_ECHO).collect();
    if cut.len() < text.len() { format!("{cut:?}...") } else { format!("{cut:?}") }
}

/// The decoded query parameters, each at most once and each one of `allowed`.
fn parameters(query: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut values = BTreeMap::new();
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || ApiError::InvalidParameters(format!("malformed percent-encoding in {}", echo(pair)));
        let name = percent_decode(name).ok_or_else(bad)?;
        let value = percent_decode(value).ok_or_else(bad)?;
        if !allowed.contains(&name.as_str()) {
            let expected = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            return Err(ApiError::InvalidParameters(format!(
                "unknown parameter {}; this endpoint accepts: {expected}",
                echo(&name)
            )));
        }
        if values.insert(name.clone(), value).is_some() {
            return Err(ApiError::InvalidParameters(format!("parameter {name} is given more than once")));
        }
    }
    Ok(values)
}

/// A position or size: a decimal integer from 0 to 2^63 - 1 (what the database can hold).
fn number(name: &str, text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().ok().filter(|value| i64::try_from(*value).is_ok()).ok_or_else(|| {
        ApiError::InvalidParameters(format!("invalid {name}: {} is not an integer from 0 to {}", echo(text), i64::MAX))
    })
}

fn time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text).map(|time| time.with_timezone(&Utc)).map_err(|_| {
        ApiError::InvalidParameters(format!(
            "invalid {name}: {} is not an RFC 3339 time such as 2026-01-02T03:04:05Z",
            echo(text)
        ))
    })
}

fn required<'a>(values: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    values
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::InvalidParameters(format!("parameter {name} is required")))
}

/// A window of a list answer (tag history, key grants, grant changes), which only grows at its
/// end: `offset` items are skipped and at most `limit` returned (1 to [`MAX_PAGE`], default
/// [`MAX_PAGE`]); `next` is the offset of the following window, `null` after the last.
struct Window {
    offset: u64,
    limit: u32,
}

impl Window {
    fn of(values: &BTreeMap<String, String>) -> Result<Window, ApiError> {
        let offset = values.get("offset").map(|text| number("offset", text)).transpose()?.unwrap_or(0);
        let limit = values.get("limit").map(|text| limit(text)).transpose()?.unwrap_or(MAX_PAGE);
        Ok(Window { offset, limit })
    }

    fn cut(&self, items: Vec<Value>) -> (Vec<Value>, Option<u64>) {
        let total = u64::try_from(items.len()).unwrap_or(u64::MAX);
        let skip = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let window: Vec<Value> = items.into_iter().skip(skip).take(self.limit as usize).collect();
        let end = self.offset.saturating_add(u64::try_from(window.len()).unwrap_or(u64::MAX));
        (window, (end < total).then_some(end))
    }
}

fn limit(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>().ok().filter(|limit| (1..=MAX_PAGE).contains(limit)).ok_or_else(|| {
        ApiError::InvalidParameters(format!("invalid limit: {} is not an integer from 1 to {MAX_PAGE}", echo(text)))
    })
}

/// Answers an audit API route; other routes are not found.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    route: Route,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let store = state.service.store.as_ref();
    // A repository's own routes were authorised for it; the others filter by what the caller reads.
    let visibility = match route {
        Route::Grants(_) | Route::GrantChanges(_) | Route::TargetHistory(..) => Visibility::All,
        _ => Visibility::of(state, caller).await?,
    };
    match route {
        Route::Grants(gun) => {
            let values = parameters(query, &["at"])?;
            let at = values.get("at").map(|text| time("at", text)).transpose()?;
            let grants = store.grants(gun.as_str(), at).await?;
            Ok(json_response(&json!({
                "gun": gun.as_str(),
                "at": at.map(format_time),
                "grants": grants.iter().map(grant_json).collect::<Vec<_>>(),
            })))
        }
        Route::GrantChanges(gun) => {
            let window = Window::of(&parameters(query, &["offset", "limit"])?)?;
            let (changes, next) = window.cut(grant_changes(store, gun.as_str()).await?);
            Ok(json_response(&json!({"gun": gun.as_str(), "changes": changes, "next": next})))
        }
        Route::TargetHistory(gun, name) => {
            let window = Window::of(&parameters(query, &["offset", "limit"])?)?;
            if name.is_empty() {
                return Err(ApiError::InvalidParameters("the target name is empty".into()));
            }
            let history = store.target_history(gun.as_str(), &name).await?;
            let (history, next) = window.cut(history.iter().map(history_json).collect());
            Ok(json_response(&json!({"gun": gun.as_str(), "name": name, "history": history, "next": next})))
        }
        Route::KeyGrants(key_id) => {
            let window = Window::of(&parameters(query, &["offset", "limit"])?)?;
            if key_id.is_empty() || key_id.len() > MAX_KEY_ID || !key_id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                return Err(ApiError::InvalidParameters(format!(
                    "invalid key ID {}: expected 1 to {MAX_KEY_ID} hexadecimal digits",
                    echo(&key_id)
                )));
            }
            let grants = store.key_grants(&key_id).await?;
            let visible: Vec<Value> =
                grants.iter().filter(|grant| visibility.may_read(&grant.gun)).map(grant_json).collect();
            let (grants, next) = window.cut(visible);
            Ok(json_response(&json!({"key_id": key_id, "grants": grants, "next": next})))
        }
        Route::AuditLog => audit_log(store, &visibility, query).await,
        Route::AuditCheckpoint => {
            parameters(query, &[])?;
            visibility.require_some_read()?;
            checkpoint(store).await
        }
        Route::AuditEntry(seq) => {
            parameters(query, &[])?;
            visibility.require_some_read()?;
            let seq = number("entry position", &seq)?;
            let entry = entry_at(store, seq).await?.ok_or(ApiError::MetadataNotFound)?;
            if !visibility.may_see(&entry.entry) {
                return Err(ApiError::Denied(format!("entry {seq} is about something you may not read")));
            }
            Ok(json_response(&entry_json(&entry)))
        }
        Route::InclusionProof => {
            let values = parameters(query, &["index", "size"])?;
            visibility.require_some_read()?;
            let index = number("index", required(&values, "index")?)?;
            let size = number("size", required(&values, "size")?)?;
            inclusion(store, index, size).await
        }
        Route::ConsistencyProof => {
            let values = parameters(query, &["old", "new"])?;
            visibility.require_some_read()?;
            let old = number("old", required(&values, "old")?)?;
            let new = number("new", required(&values, "new")?)?;
            consistency(store, old, new).await
        }
        _ => Err(ApiError::NoRoute),
    }
}

/// `GET /v1/audit`: one page of entries the caller may see, oldest first, and the cursor of the
/// next page. A page scans `limit` entries of the log; hidden ones are left out, so a page may
/// hold fewer (even none) while `next` is set. `next` is `null` once the log is exhausted.
async fn audit_log(store: &dyn Store, visibility: &Visibility, query: Option<&str>) -> Result<Response, ApiError> {
    let values = parameters(query, &["gun", "principal", "key", "since", "until", "after", "limit"])?;
    let limit = values.get("limit").map(|text| limit(text)).transpose()?.unwrap_or(DEFAULT_PAGE);
    let filter = AuditFilter {
        gun: values.get("gun").cloned(),
        principal: values.get("principal").cloned(),
        key: values.get("key").cloned(),
        since: values.get("since").map(|text| time("since", text)).transpose()?,
        until: values.get("until").map(|text| time("until", text)).transpose()?,
        after: values.get("after").map(|text| number("after", text)).transpose()?,
        limit,
    };
    let page = store.audit_entries(&filter).await?;
    let next = match page.last() {
        Some(last) if page.len() == limit as usize => Some(last.entry.seq),
        _ => None,
    };
    let entries: Vec<Value> = page.iter().filter(|stored| visibility.may_see(&stored.entry)).map(entry_json).collect();
    Ok(json_response(&json!({"entries": entries, "next": next})))
}

/// The entry at `seq`, if the log has one.
async fn entry_at(store: &dyn Store, seq: u64) -> Result<Option<tufa_store::StoredEntry>, ApiError> {
    let filter = AuditFilter { after: seq.checked_sub(1), limit: 1, ..AuditFilter::default() };
    let page = store.audit_entries(&filter).await?;
    Ok(page.into_iter().find(|stored| stored.entry.seq == seq))
}

/// `GET /v1/audit/checkpoint`: the latest signed note, its verifier key and what it says.
async fn checkpoint(store: &dyn Store) -> Result<Response, ApiError> {
    let (Some(latest), Some(key)) = (store.latest_checkpoint().await?, store.audit_signing_key().await?) else {
        return Err(ApiError::MetadataNotFound);
    };
    let key = crate::audit::stored_key(&key).map_err(|error| ApiError::Internal(format!("checkpoint key: {error}")))?;
    let head = tufa_audit::checkpoint::open(&latest.note, &key)
        .map_err(|error| ApiError::Internal(format!("the latest checkpoint does not verify: {error}")))?;
    Ok(json_response(&json!({
        "origin": head.origin,
        "size": head.size,
        "root": hash_hex(&head.root),
        "time": format_time(head.time),
        "note": latest.note,
        "vkey": key.vkey(),
    })))
}

/// The current number of entries; `what` of `value` must not exceed it.
async fn within_log(store: &dyn Store, what: &str, value: u64) -> Result<u64, ApiError> {
    let size = store.audit_size().await?;
    if value > size {
        return Err(ApiError::InvalidParameters(format!("{what} {value} exceeds the log's {size} entries")));
    }
    Ok(size)
}

fn tree_failure(error: tree::TreeError) -> ApiError {
    ApiError::Internal(format!("audit tree: {error}"))
}

fn hashes_json(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hash_hex).collect()
}

/// `GET /v1/audit/proof/inclusion?index=N&size=M`.
async fn inclusion(store: &dyn Store, index: u64, size: u64) -> Result<Response, ApiError> {
    Ok(json_response(&inclusion_proof(store, index, size).await?))
}

/// The inclusion proof of entry `index` in the tree of `size` entries, with the leaf hash and the
/// root, as the API and `tufa-server audit prove` answer it.
pub async fn inclusion_proof(store: &dyn Store, index: u64, size: u64) -> Result<Value, ApiError> {
    if index >= size {
        return Err(ApiError::InvalidParameters(format!("index {index} must be below size {size}")));
    }
    within_log(store, "size", size).await?;
    let mut reads = tree::inclusion_reads(index, size);
    reads.extend(tree::root_reads(size));
    reads.push(tree::leaf_index(index));
    reads.sort_unstable();
    reads.dedup();
    let hashes = store.audit_hashes(&reads).await?;
    let proof = tree::inclusion(index, size, &hashes).map_err(tree_failure)?;
    let root = tree::root(size, &hashes).map_err(tree_failure)?;
    let leaf = hashes.get(&tree::leaf_index(index)).ok_or(tree::TreeError::Missing(index)).map_err(tree_failure)?;
    Ok(json!({
        "index": index,
        "size": size,
        "leaf_hash": hash_hex(leaf),
        "root": hash_hex(&root),
        "proof": hashes_json(&proof),
    }))
}

/// `GET /v1/audit/proof/consistency?old=A&new=B`.
async fn consistency(store: &dyn Store, old: u64, new: u64) -> Result<Response, ApiError> {
    Ok(json_response(&consistency_proof(store, old, new).await?))
}

/// The consistency proof from the tree of `old` entries to the tree of `new` entries, with both
/// roots, as the API and `tufa-server audit prove` answer it.
pub async fn consistency_proof(store: &dyn Store, old: u64, new: u64) -> Result<Value, ApiError> {
    if old == 0 || old > new {
        return Err(ApiError::InvalidParameters(format!("need 1 <= old <= new; got old {old}, new {new}")));
    }
    within_log(store, "new", new).await?;
    let mut reads = tree::consistency_reads(old, new);
    reads.extend(tree::root_reads(old));
    reads.extend(tree::root_reads(new));
    reads.sort_unstable();
    reads.dedup();
    let hashes = store.audit_hashes(&reads).await?;
    let proof = tree::consistency(old, new, &hashes).map_err(tree_failure)?;
    let old_root = tree::root(old, &hashes).map_err(tree_failure)?;
    let new_root = tree::root(new, &hashes).map_err(tree_failure)?;
    Ok(json!({
        "old": old,
        "new": new,
        "old_root": hash_hex(&old_root),
        "new_root": hash_hex(&new_root),
        "proof": hashes_json(&proof),
    }))
}

/// The grants of one delegating role in force at one moment, by delegated role.
type InForce<'a> = BTreeMap<&'a str, &'a Grant>;

/// The grants of `in_force` for the delegated roles `roles`.
fn in_force_of<'a>(in_force: &InForce<'a>, roles: &BTreeSet<&'a str>) -> InForce<'a> {
    roles.iter().filter_map(|role| Some((*role, *in_force.get(role)?))).collect()
}

/// `grants` as the record's core type, to compare them.
fn core_grants(grants: &InForce<'_>) -> Vec<record::Grant> {
    grants
        .values()
        .map(|grant| {
            let mut keys: Vec<record::GrantKey> = grant
                .grant
                .keys
                .iter()
                .map(|key| record::GrantKey {
                    key_id: key.key_id.clone(),
                    canonical_id: key.canonical_id.clone(),
                    subject: key.subject.clone(),
                })
                .collect();
            keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            record::Grant {
                delegating_role: grant.grant.delegating_role.clone(),
                delegated_role: grant.grant.delegated_role.clone(),
                keys,
                paths: grant.grant.paths.clone(),
                threshold: grant.grant.threshold,
            }
        })
        .collect()
}

/// What a change is attributed to: when, by whom, through which entry, and which file version
/// (none when the grants ended without a new version of their file: a file without
/// delegations, or the repository deleted).
struct Cause<'a> {
    time: DateTime<Utc>,
    principal: Option<&'a str>,
    audit_seq: Option<i64>,
    version: Option<i64>,
}

fn grant_fields(grant: &Grant) -> Value {
    json!({
        "version": grant.grant.version,
        "threshold": grant.grant.threshold,
        "paths": crate::audit_cli::paths_value(grant.grant.paths.as_deref()),
        "keys": grant_keys_json(&grant.grant.keys),
    })
}

/// The changes between the grants in force before and after one moment, as JSON objects.
fn compare(before: &InForce<'_>, after: &InForce<'_>, cause: &Cause<'_>) -> Vec<Value> {
    record::grant_changes(&core_grants(before), &core_grants(after))
        .into_iter()
        .filter_map(|change| {
            let role = change.grant.delegated_role.as_str();
            let previous = before.get(role).copied();
            let current = match change.kind {
                record::ChangeKind::Removed => previous,
                _ => after.get(role).copied(),
            }?;
            let previous = match change.kind {
                record::ChangeKind::Changed => previous.map(grant_fields),
                _ => None,
            };
            Some(json!({
                "change": change.kind.as_str(),
                "time": format_time(cause.time),
                "principal": cause.principal,
                "audit_seq": cause.audit_seq,
                "delegating_role": change.grant.delegating_role,
                "role": role,
                "version": cause.version,
                "threshold": current.grant.threshold,
                "paths": crate::audit_cli::paths_value(current.grant.paths.as_deref()),
                "keys": grant_keys_json(&current.grant.keys),
                "previous": previous,
            }))
        })
        .collect()
}

/// Who added, changed or removed a delegate (or a base role's keys) in `gun`, oldest first.
///
/// A new version of a delegating role's file records only the grants it changes (an unchanged
/// grant stays in force), so each delegating role's grants in force are replayed moment by
/// moment: at each time a grant was made or ended, the grants in force before and after are
/// compared. A moment that made grants is attributed to them (their principal, entry and file
/// version); one that only ended grants (a delegate removed, a file without delegations, the
/// repository deleted) to the audit entry of that moment. Grants recorded before unchanged
/// grants were kept in force (one row per version) give the same answers. Public so that a CLI
/// subcommand can give the same answer.
pub async fn grant_changes(store: &dyn Store, gun: &str) -> Result<Vec<Value>, tufa_store::StoreError> {
    let history = store.grant_history(gun).await?;
    // Per delegating role, each moment's grants made and ended, so that replaying them costs what
    // they hold.
    type Moments<'a> = BTreeMap<DateTime<Utc>, (Vec<&'a Grant>, Vec<&'a Grant>)>;
    let mut roles: BTreeMap<&str, Moments<'_>> = BTreeMap::new();
    for grant in &history {
        let moments = roles.entry(grant.grant.delegating_role.as_str()).or_default();
        moments.entry(grant.created_at).or_default().0.push(grant);
        if let Some(ended) = grant.superseded_at {
            moments.entry(ended).or_default().1.push(grant);
        }
    }
    // Moments that ended grants without making any of the same delegating role: their entries,
    // looked up once per moment.
    let mut endings: BTreeMap<DateTime<Utc>, Option<Entry>> = BTreeMap::new();
    for (moment, _) in roles.values().flatten().filter(|(_, (made, _))| made.is_empty()) {
        if endings.contains_key(moment) {
            continue;
        }
        let filter = AuditFilter {
            gun: Some(gun.to_owned()),
            since: Some(*moment),
            until: moment.checked_add_signed(chrono::Duration::microseconds(1)),
            limit: 1,
            ..AuditFilter::default()
        };
        let entry = store.audit_entries(&filter).await?.into_iter().next().map(|stored| stored.entry);
        endings.insert(*moment, entry);
    }
    let mut changes: Vec<(DateTime<Utc>, Value)> = Vec::new();
    for (delegating_role, moments) in &roles {
        let mut in_force: InForce<'_> = BTreeMap::new();
        for (moment, (made, ended)) in moments {
            let moment = *moment;
            // Only the delegated roles this moment touches can change.
            let touched: BTreeSet<&str> =
                made.iter().chain(ended).map(|grant| grant.grant.delegated_role.as_str()).collect();
            let before = in_force_of(&in_force, &touched);
            for grant in ended {
                let role = grant.grant.delegated_role.as_str();
                if in_force.get(role).is_some_and(|current| current.id == grant.id) {
                    in_force.remove(role);
                }
            }
            for grant in made {
                in_force.insert(grant.grant.delegated_role.as_str(), grant);
            }
            let after = in_force_of(&in_force, &touched);
            let cause = match made.first() {
                Some(grant) => Cause {
                    time: moment,
                    principal: grant.principal.as_deref(),
                    audit_seq: grant.audit_seq,
                    version: Some(grant.grant.version),
                },
                None => {
                    let entry = endings.get(&moment).and_then(Option::as_ref);
                    // The version of the delegating role's file the entry stored, if it stored one.
                    let version = entry
                        .and_then(|entry| serde_json::from_str::<Value>(&entry.details).ok())
                        .and_then(|details| details.get("roles")?.get(*delegating_role)?.as_i64());
                    Cause {
                        time: moment,
                        principal: entry.and_then(|entry| entry.principal.as_deref()),
                        audit_seq: entry.and_then(|entry| i64::try_from(entry.seq).ok()),
                        version,
                    }
                }
            };
            changes.extend(compare(&before, &after, &cause).into_iter().map(|change| (moment, change)));
        }
    }
    // Oldest first; within one moment, in delegating role then role order (as computed).
    changes.sort_by_key(|(time, _)| *time);
    Ok(changes.into_iter().map(|(_, change)| change).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(gun: Option<&str>) -> Entry {
        let entry = tufa_audit::NewEntry::new("publish", json!({}));
        let entry = match gun {
            Some(gun) => entry.gun(gun),
            None => entry,
        };
        entry.at(0, Utc::now(), None)
    }

    /// Token mode: `pull` on a repository shows its entries; `repository:*:*` shows entries
    /// about no repository; any accepted token may read checkpoints and proofs.
    #[test]
    fn token_visibility_follows_the_access_claim() {
        let reader = Visibility::Token(vec![Access::new("repository", "example.com/app", &["pull"])]);
        assert!(reader.may_read("example.com/app"));
        assert!(!reader.may_read("example.com/other"));
        assert!(reader.may_see(&entry(Some("example.com/app"))));
        assert!(!reader.may_see(&entry(Some("example.com/other"))));
        assert!(!reader.may_see(&entry(None)));
        assert!(reader.reads_anything());
        let pusher = Visibility::Token(vec![Access::new("repository", "example.com/app", &["push"])]);
        assert!(!pusher.may_read("example.com/app"));
        let everything = Visibility::Token(vec![Access::new("repository", "*", &["*"])]);
        assert!(everything.may_see(&entry(None)));
        let star_on_one = Visibility::Token(vec![Access::new("repository", "example.com/app", &["*"])]);
        assert!(star_on_one.may_read("example.com/app"));
        assert!(!star_on_one.may_see(&entry(None)));
    }

    /// Builtin mode: role bindings decide; only an admin of `*` sees entries about no
    /// repository; a caller without any binding reads nothing.
    #[test]
    fn builtin_visibility_follows_the_role_bindings() {
        let binding = |principal: &str, role: &str, pattern: &str| Binding::parse(principal, role, pattern).unwrap();
        let reader = Visibility::Builtin {
            principal: Some("rita".into()),
            bindings: vec![binding("rita", "reader", "example.com/*"), binding("anonymous", "reader", "public/*")],
        };
        assert!(reader.may_read("example.com/app"));
        assert!(reader.may_read("public/x"));
        assert!(!reader.may_read("other/x"));
        assert!(!reader.may_see(&entry(None)));
        assert!(reader.reads_anything());
        let admin_of_some = Visibility::Builtin {
            principal: Some("ada".into()),
            bindings: vec![binding("ada", "admin", "example.com/*")],
        };
        assert!(!admin_of_some.may_see(&entry(None)));
        let admin = Visibility::Builtin { principal: Some("ada".into()), bindings: vec![binding("ada", "admin", "*")] };
        assert!(admin.may_see(&entry(None)));
        let nobody = Visibility::Builtin { principal: Some("nobody".into()), bindings: Vec::new() };
        assert!(!nobody.reads_anything());
        assert!(!nobody.may_read("example.com/app"));
        assert!(matches!(nobody.require_some_read(), Err(ApiError::Denied(_))));
        assert!(Visibility::All.may_see(&entry(None)));
    }

    #[test]
    fn parameters_are_decoded_once_each() {
        let values = parameters(Some("gun=a%2Fb&&since=2026-01-01T00:00:00+01:00&"), &["gun", "since"]).unwrap();
        assert_eq!(values.get("gun").map(String::as_str), Some("a/b"));
        assert_eq!(values.get("since").map(String::as_str), Some("2026-01-01T00:00:00+01:00"));
        assert_eq!(parameters(None, &[]).unwrap(), BTreeMap::new());
        let detail = |query: &str| match parameters(Some(query), &["gun"]) {
            Err(ApiError::InvalidParameters(detail)) => detail,
            other => format!("{other:?}"),
        };
        // A name without `=` has the empty value.
        assert_eq!(parameters(Some("gun"), &["gun"]).unwrap().get("gun").map(String::as_str), Some(""));
        assert_eq!(detail("gun=1&gun=2"), "parameter gun is given more than once");
        assert_eq!(detail("x=1"), "unknown parameter \"x\"; this endpoint accepts: gun");
        assert_eq!(
            detail(&format!("{}=1", "y".repeat(100))),
            format!("unknown parameter {:?}...; this endpoint accepts: gun", "y".repeat(64))
        );
        assert_eq!(number("n", "18446744073709551615").ok(), None);
        assert_eq!(number("n", "9223372036854775807").ok(), Some(9_223_372_036_854_775_807));
        assert_eq!(
            time("t", "2026-01-01T00:00:00+01:00").ok().map(format_time),
            Some("2025-12-31T23:00:00.000000Z".to_owned())
        );
    }
}
