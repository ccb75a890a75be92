//! `tufa-server audit …`: what an auditor runs against the server's database (the same
//! `--config`, `--data-dir` and `--database-url` as the server), also while servers run: verify
//! the whole log offline against its signed checkpoints, print the latest checkpoint and its
//! verifier key, export entries as JSON lines, and answer who may sign and who signed.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::json;
use tufa_audit::CheckpointKey;
use tufa_audit::entry::{format_time, hash_hex};
use tufa_audit::verify::{LogVerifier, StoredCheckpoint};
use tufa_store::{AuditFilter, Store};

use crate::config::Config;

/// Entries read per database round trip while verifying or exporting.
const PAGE: u32 = 5000;

/// `tufa-server audit`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct AuditArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: AuditAction,
}

/// The audit actions.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// Check every entry against its hash, the chain and the signed checkpoints; exit status 0
    /// when intact, 1 when a problem was found (each named with its position), 2 on error.
    Verify {
        /// The checkpoint verifier key to trust (from `audit checkpoint`, kept somewhere the
        /// database's administrator cannot change). Without it the key recorded in the database
        /// is used, which only shows the log is consistent with itself.
        #[arg(long, value_name = "VKEY")]
        checkpoint_key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint and the verifier key of the checkpoint key.
    Checkpoint,
    /// Print audit entries as JSON lines (for a SIEM), oldest first.
    Log {
        /// Only entries about this repository.
        #[arg(long)]
        gun: Option<String>,
        /// Only entries by this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only entries recording a signature by this key ID.
        #[arg(long)]
        key: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only entries before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Only entries after this position.
        #[arg(long)]
        after: Option<u64>,
    },
    /// Who may sign what in a repository, now or at a past time.
    Grants {
        /// The repository.
        gun: String,
        /// The time to answer for (RFC 3339); now when absent.
        #[arg(long, value_parser = parse_time)]
        at: Option<DateTime<Utc>>,
    },
    /// Every grant, in every repository and at any time, that trusts a key.
    KeyGrants {
        /// The key ID as metadata lists it, or its canonical ID.
        key_id: String,
    },
    /// Who added, changed or removed a delegate (or a base role's keys), step by step.
    GrantChanges {
        /// The repository.
        gun: String,
    },
    /// Proofs an outside monitor checks against signed checkpoints.
    #[command(subcommand)]
    Prove(ProveAction),
    /// Every version of a tag: digest, signing keys, role, principal, time.
    History {
        /// The repository.
        gun: String,
        /// The target (tag) name.
        name: String,
    },
}

/// `audit prove …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum ProveAction {
    /// That entry INDEX is in the tree of SIZE entries (RFC 6962 audit path, hex hashes).
    Inclusion {
        /// The entry's position.
        index: u64,
        /// The tree size (a checkpoint's size).
        size: u64,
    },
    /// That the tree of OLD entries is a prefix of the tree of NEW entries.
    Consistency {
        /// The older tree size.
        old: u64,
        /// The newer tree size.
        new: u64,
    },
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("not an RFC 3339 time such as 2026-01-02T03:04:05Z: {error}"))
}

/// Why an audit command failed (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditCliError(String);

impl From<tufa_store::StoreError> for AuditCliError {
    fn from(error: tufa_store::StoreError) -> Self {
        AuditCliError(format!("database: {error}"))
    }
}

fn output(result: std::io::Result<()>) -> Result<(), AuditCliError> {
    result.map_err(|error| AuditCliError(format!("output: {error}")))
}

/// Runs one audit command; returns the exit status (verify: 1 when a problem was found).
pub async fn run(config: &Config, action: &AuditAction, out: &mut dyn Write) -> Result<u8, AuditCliError> {
    let store = tufa_store::open(&config.database_url).await.map_err(|error| {
        AuditCliError(format!("cannot open the database {}: {error}", config.redacted_database_url()))
    })?;
    match action {
        AuditAction::Verify { checkpoint_key, json } => {
            verify(store.as_ref(), checkpoint_key.as_deref(), *json, out).await
        }
        AuditAction::Checkpoint => {
            let key = store.audit_signing_key().await?;
            let Some(key) = key else {
                output(writeln!(out, "no checkpoint key yet: the server creates one with its first checkpoint"))?;
                return Ok(0);
            };
            let key = crate::audit::stored_key(&key).map_err(|error| AuditCliError(error.to_string()))?;
            match store.latest_checkpoint().await? {
                Some(checkpoint) => output(write!(out, "{}", checkpoint.note))?,
                None => output(writeln!(out, "no checkpoint yet"))?,
            }
            output(writeln!(out, "\nverifier key: {}", key.vkey()))?;
            Ok(0)
        }
        AuditAction::Log { gun, principal, key, since, until, after } => {
            let mut filter = AuditFilter {
                gun: gun.clone(),
                principal: principal.clone(),
                key: key.clone(),
                since: *since,
                until: *until,
                after: *after,
                limit: PAGE,
            };
            loop {
                let page = store.audit_entries(&filter).await?;
                for stored in &page {
                    output(writeln!(out, "{}", entry_json(stored)))?;
                }
                match page.last() {
                    Some(last) if page.len() == PAGE as usize => filter.after = Some(last.entry.seq),
                    _ => return Ok(0),
                }
            }
        }
        AuditAction::Grants { gun, at } => {
            for grant in store.grants(gun, *at).await? {
                output(writeln!(out, "{}", grant_json(&grant)))?;
            }
            Ok(0)
        }
        AuditAction::KeyGrants { key_id } => {
            for grant in store.key_grants(key_id).await? {
                output(writeln!(out, "{}", grant_json(&grant)))?;
            }
            Ok(0)
        }
        AuditAction::GrantChanges { gun } => {
            for change in crate::audit_api::grant_changes(store.as_ref(), gun).await? {
                output(writeln!(out, "{change}"))?;
            }
            Ok(0)
        }
        AuditAction::Prove(prove) => {
            let answer = match prove {
                ProveAction::Inclusion { index, size } => {
                    crate::audit_api::inclusion_proof(store.as_ref(), *index, *size).await
                }
                ProveAction::Consistency { old, new } => {
                    crate::audit_api::consistency_proof(store.as_ref(), *old, *new).await
                }
            };
            let answer = answer.map_err(|error| AuditCliError(error.to_string()))?;
            output(writeln!(out, "{answer}"))?;
            Ok(0)
        }
        AuditAction::History { gun, name } => {
            for event in store.target_history(gun, name).await? {
                output(writeln!(out, "{}", history_json(&event)))?;
            }
            Ok(0)
        }
    }
}

async fn verify(
    store: &dyn Store,
    pinned: Option<&str>,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<u8, AuditCliError> {
    let key = match pinned {
        Some(vkey) => CheckpointKey::from_vkey(vkey).map_err(|error| AuditCliError(error.to_string()))?,
        None => {
            let Some(stored) = store.audit_signing_key().await? else {
                return Err(AuditCliError(
                    "no checkpoint key is recorded and none was given with --checkpoint-key".into(),
                ));
            };
            eprintln!(
                "tufa-server audit verify: WARNING: the checkpoint key was read from the database itself; pin it with \
                 --checkpoint-key so that a database administrator cannot replace it"
            );
            crate::audit::stored_key(&stored).map_err(|error| AuditCliError(error.to_string()))?
        }
    };
    let checkpoints: Vec<StoredCheckpoint> = store
        .checkpoints()
        .await?
        .into_iter()
        .map(|checkpoint| StoredCheckpoint { size: checkpoint.size, note: checkpoint.note })
        .collect();
    let mut verifier = LogVerifier::new(&key, &checkpoints);
    let mut filter = AuditFilter { limit: PAGE, ..AuditFilter::default() };
    let mut record_problems = Vec::new();
    loop {
        let page = store.audit_entries(&filter).await?;
        for stored in &page {
            verifier.push(&stored.entry, stored.leaf_hash);
        }
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            let history = store.history_of_entries(first.entry.seq, last.entry.seq).await?;
            let grants = store.grants_of_entries(first.entry.seq, last.entry.seq).await?;
            let ended = store.grants_ended_by_entries(first.entry.seq, last.entry.seq).await?;
            record_problems.extend(crate::audit::check_history(&page, &history, &grants, &ended));
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => filter.after = Some(last.entry.seq),
            _ => break,
        }
    }
    let mut report = verifier.finish();
    report.problems.extend(record_problems);
    if as_json {
        let text = serde_json::to_string_pretty(&report).map_err(|error| AuditCliError(error.to_string()))?;
        output(writeln!(out, "{text}"))?;
    } else {
        output(writeln!(out, "entries: {}", report.entries))?;
        output(writeln!(out, "checkpoints verified: {} (key {})", report.checkpoints, key.vkey()))?;
        if let Some(latest) = &report.latest {
            output(writeln!(
                out,
                "latest checkpoint: {} entries, root {}, {}; entries after it: {}",
                latest.size,
                latest.root,
                format_time(latest.time),
                report.entries.saturating_sub(latest.size)
            ))?;
        }
        for problem in &report.problems {
            let position = problem.position.map_or_else(|| "-".to_owned(), |position| position.to_string());
            output(writeln!(out, "PROBLEM at {position}: {}", problem.message))?;
        }
        if report.more_problems > 0 {
            output(writeln!(out, "... and {} more problems", report.more_problems))?;
        }
        output(writeln!(out, "{}", if report.ok() { "OK: the log is intact" } else { "FAILED: the log was changed" }))?;
    }
    Ok(if report.ok() { 0 } else { 1 })
}

/// An entry as a JSON line.
pub fn entry_json(stored: &tufa_store::StoredEntry) -> serde_json::Value {
    let entry = &stored.entry;
    json!({
        "seq": entry.seq,
        "time": format_time(entry.time),
        "kind": entry.kind,
        "gun": entry.gun,
        "principal": entry.principal,
        "address": entry.address,
        "request_id": entry.request_id,
        "details": entry.details_json(),
        "prev": entry.prev.as_ref().map(hash_hex),
        "leaf_hash": stored.leaf_hash.as_ref().map(hash_hex),
    })
}

/// A grant's stored paths (a JSON array's text) as JSON; `null` for the base roles.
pub fn paths_value(paths: Option<&str>) -> serde_json::Value {
    match paths {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
        None => serde_json::Value::Null,
    }
}

/// A grant as JSON.
pub fn grant_json(grant: &tufa_store::Grant) -> serde_json::Value {
    json!({
        "gun": grant.gun,
        "delegating_role": grant.grant.delegating_role,
        "role": grant.grant.delegated_role,
        "version": grant.grant.version,
        "threshold": grant.grant.threshold,
        "paths": paths_value(grant.grant.paths.as_deref()),
        "keys": grant_keys_json(&grant.grant.keys),
        "principal": grant.principal,
        "audit_seq": grant.audit_seq,
        "since": format_time(grant.created_at),
        "until": grant.superseded_at.map(format_time),
        "until_seq": grant.superseded_seq,
    })
}

/// The keys of a grant as JSON: each key ID as the metadata lists it, its canonical ID and its
/// certificate subject (`null` for a bare key).
pub fn grant_keys_json(keys: &[tufa_store::GrantKey]) -> serde_json::Value {
    keys.iter()
        .map(|key| json!({"keyid": key.key_id, "canonical_id": key.canonical_id, "subject": key.subject}))
        .collect()
}

/// A target event as JSON.
pub fn history_json(event: &tufa_store::TargetEvent) -> serde_json::Value {
    json!({
        "gun": event.gun,
        "name": event.event.name,
        "change": event.event.change,
        "sha256": event.event.sha256,
        "length": event.event.length,
        "role": event.event.role,
        "version": event.event.version,
        "signer_keys": event.event.signer_keys,
        "signer_canonical_ids": event.event.signer_canonical_ids,
        "principal": event.principal,
        "audit_seq": event.audit_seq,
        "time": format_time(event.created_at),
    })
}
