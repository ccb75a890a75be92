//! Checks on an [`Update`] that need no database, shared by both backends, plus the time
//! normalisation both backends apply.

use std::collections::HashSet;

use chrono::{DateTime, SubsecRound, Utc};

use crate::{NewFile, StoreError, TIMESTAMP_ROLE, Update};

/// Rejects a malformed update before any database work.
///
/// The same role and version twice in `files` is [`StoreError::OldVersion`] (Notary's rule);
/// everything else here is a caller bug and so [`StoreError::Internal`]: an empty GUN or
/// role, a checksum that is not lowercase hex or does not match the data, or a role that
/// appears twice in `current`.
pub(crate) fn check_update(update: &Update) -> Result<(), StoreError> {
    if update.gun.is_empty() {
        return Err(StoreError::Internal("update for an empty GUN".into()));
    }
    let mut seen_versions = HashSet::new();
    for file in &update.files {
        if file.role.is_empty() {
            return Err(StoreError::Internal("new file with an empty role".into()));
        }
        if !is_sha256_hex(&file.sha256) {
            return Err(StoreError::Internal(format!(
                "new file {} version {}: checksum {:?} is not 64 lowercase hex digits",
                file.role, file.version, file.sha256
            )));
        }
        if sha256_hex(&file.data) != file.sha256 {
            return Err(StoreError::Internal(format!(
                "new file {} version {}: checksum does not match its data",
                file.role, file.version
            )));
        }
        if !seen_versions.insert((file.role.as_str(), file.version)) {
            return Err(StoreError::OldVersion { role: file.role.clone() });
        }
    }
    let mut seen_roles = HashSet::new();
    for entry in &update.current {
        if entry.role.is_empty() {
            return Err(StoreError::Internal("current pointer with an empty role".into()));
        }
        if !is_sha256_hex(&entry.sha256) {
            return Err(StoreError::Internal(format!(
                "current pointer for {}: checksum {:?} is not 64 lowercase hex digits",
                entry.role, entry.sha256
            )));
        }
        if !seen_roles.insert(entry.role.as_str()) {
            return Err(StoreError::Internal(format!("current set names role {} twice", entry.role)));
        }
    }
    Ok(())
}

/// The inserted timestamp files of an update, lowest version first: each gets a changefeed
/// record.
pub(crate) fn inserted_timestamps(update: &Update) -> Vec<&NewFile> {
    let mut timestamps: Vec<&NewFile> = update.files.iter().filter(|file| file.role == TIMESTAMP_ROLE).collect();
    timestamps.sort_by_key(|file| file.version);
    timestamps
}

/// The error for a current pointer that names no stored file.
pub(crate) fn dangling_pointer(gun: &str, role: &str, sha256: &str) -> StoreError {
    StoreError::Internal(format!("current pointer for {gun} {role} names checksum {sha256}, which is not stored"))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Lowercase hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// Truncates to whole microseconds, the precision both backends store.
pub(crate) fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// The current time at storage precision.
pub(crate) fn now() -> DateTime<Utc> {
    to_micros(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CurrentEntry;

    fn file(role: &str, version: i64, data: &[u8]) -> NewFile {
        NewFile { role: role.into(), version, sha256: sha256_hex(data), data: data.to_vec(), expires: None }
    }

    fn update(files: Vec<NewFile>, current: Vec<CurrentEntry>) -> Update {
        Update {
            gun: "example.com/app".into(),
            files,
            current,
            expected_timestamp_version: None,
            record: crate::Record::new(tufa_audit::NewEntry::new("publish", serde_json::json!({}))),
        }
    }

    fn check(update: &Update) -> String {
        match check_update(update) {
            Ok(()) => "ok".into(),
            Err(StoreError::OldVersion { role }) => format!("old {role}"),
            Err(StoreError::Internal(message)) => format!("internal {message}"),
            Err(StoreError::Unavailable(message)) => format!("unavailable {message}"),
            Err(StoreError::Conflict(message)) => format!("conflict {message}"),
            Err(StoreError::NotFound(message)) => format!("not found {message}"),
        }
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn cases() {
        let good = file("root", 1, b"{}");
        let current = vec![CurrentEntry { role: "root".into(), sha256: good.sha256.clone() }];
        assert_eq!(check(&update(vec![good.clone()], current.clone())), "ok");

        let mut empty_gun = update(vec![], vec![]);
        empty_gun.gun.clear();
        assert_eq!(check(&empty_gun), "internal update for an empty GUN");

        let duplicate = vec![good.clone(), file("root", 1, b"{ }")];
        assert_eq!(check(&update(duplicate, vec![])), "old root");

        let mut upper = good.clone();
        upper.sha256 = upper.sha256.to_uppercase();
        assert!(check(&update(vec![upper], vec![])).contains("not 64 lowercase hex"));

        let mut wrong = good.clone();
        wrong.data = b"[]".to_vec();
        assert!(check(&update(vec![wrong], vec![])).contains("does not match its data"));

        let twice = vec![current[0].clone(), current[0].clone()];
        assert_eq!(check(&update(vec![good], twice)), "internal current set names role root twice");
    }

    #[test]
    fn timestamps_sorted() {
        let files = vec![file("timestamp", 3, b"3"), file("snapshot", 2, b"s"), file("timestamp", 2, b"2")];
        let update = update(files, vec![]);
        let versions: Vec<i64> = inserted_timestamps(&update).iter().map(|file| file.version).collect();
        assert_eq!(versions, [2, 3]);
    }
}
