//! Persisted per-GUN state in a directory: the trusted root's bytes, the highest version seen
//! per role (rollback protection) and the cached metadata with the time the server last
//! confirmed it, for offline use. One owner-only file per GUN, named by the SHA-256 of the GUN,
//! replaced atomically (temp file + rename), bounded in size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tufa_common::files::{Access, create_private_dir, read_limited, replace_file};

use crate::tuf::{Versions, sha256_hex};

/// Largest state file read or written. Cached metadata that would make the file larger is left
/// out (the root and the versions are always kept).
pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

/// The state of one GUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GunState {
    /// The GUN.
    pub gun: String,
    /// The bytes of the trusted root.
    pub root: Vec<u8>,
    /// The highest version seen per role.
    pub versions: Versions,
    /// Cached metadata by role (`timestamp`, `snapshot`, `targets`, delegations), if any.
    pub files: BTreeMap<String, Vec<u8>>,
    /// When the server last confirmed the cached metadata.
    pub fetched_at: DateTime<Utc>,
}

/// The on-disk form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    gun: String,
    root: String,
    versions: Versions,
    files: BTreeMap<String, String>,
    fetched_at: DateTime<Utc>,
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] tufa_common::files::FileError),
    /// The file is not a state file for this GUN.
    #[error("state file {path} is unreadable: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating, owner-only) the directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        create_private_dir(dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn path(&self, gun: &str) -> PathBuf {
        self.dir.join(format!("{}.json", sha256_hex(gun.as_bytes())))
    }

    /// Loads the state of `gun`, `None` when there is none.
    pub fn load(&self, gun: &str) -> Result<Option<GunState>, StateError> {
        let path = self.path(gun);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_limited("trust state", &path, MAX_STATE_BYTES as u64)?;
        let corrupt = |detail: String| StateError::Corrupt { path: path.clone(), detail };
        let file: StateFile = serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
        if file.gun != gun {
            return Err(corrupt(format!("it holds the state of {:?}", file.gun)));
        }
        let decode = |text: &str| B64.decode(text).map_err(|_| corrupt("a file is not base64".to_owned()));
        let mut files = BTreeMap::new();
        for (role, text) in &file.files {
            files.insert(role.clone(), decode(text)?);
        }
        Ok(Some(GunState {
            gun: file.gun.clone(),
            root: decode(&file.root)?,
            versions: file.versions,
            files,
            fetched_at: file.fetched_at,
        }))
    }

    /// Saves the state of its GUN, atomically. Cached files are left out when they would make
    /// the file larger than [`MAX_STATE_BYTES`].
    pub fn save(&self, state: &GunState) -> Result<(), StateError> {
        let mut file = StateFile {
            gun: state.gun.clone(),
            root: B64.encode(&state.root),
            versions: state.versions.clone(),
            files: state.files.iter().map(|(role, bytes)| (role.clone(), B64.encode(bytes))).collect(),
            fetched_at: state.fetched_at,
        };
        let path = self.path(&state.gun);
        let mut bytes = serde_json::to_vec(&file)
            .map_err(|error| StateError::Corrupt { path: path.clone(), detail: error.to_string() })?;
        if bytes.len() > MAX_STATE_BYTES {
            file.files.clear();
            bytes = serde_json::to_vec(&file)
                .map_err(|error| StateError::Corrupt { path: path.clone(), detail: error.to_string() })?;
            if bytes.len() > MAX_STATE_BYTES {
                return Err(StateError::Corrupt { path, detail: "the root alone is too large".to_owned() });
            }
        }
        replace_file(&path, &bytes, Access::Private)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample(gun: &str) -> GunState {
        let mut versions = Versions::new();
        versions.insert("targets".into(), 5);
        let mut files = BTreeMap::new();
        files.insert("targets/releases".into(), b"{\"x\":1}".to_vec());
        GunState {
            gun: gun.into(),
            root: b"root bytes".to_vec(),
            versions,
            files,
            fetched_at: DateTime::parse_from_rfc3339("2026-11-30T04:00:00Z").unwrap().with_timezone(&Utc),
        }
    }

    #[test]
    fn state_round_trips_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::open(&dir.path().join("state")).unwrap();
        assert_eq!(states.load("example.com/app").unwrap(), None);
        let state = sample("example.com/app");
        states.save(&state).unwrap();
        assert_eq!(states.load("example.com/app").unwrap(), Some(state.clone()));
        let path = states.path("example.com/app");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("state")).unwrap().permissions().mode() & 0o777, 0o700);
        // Saving again replaces the file and leaves no temporary behind.
        states.save(&state).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![format!("{}.json", sha256_hex(b"example.com/app"))]);
    }

    #[test]
    fn a_state_file_of_another_gun_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::open(dir.path()).unwrap();
        states.save(&sample("example.com/app")).unwrap();
        std::fs::rename(states.path("example.com/app"), states.path("example.com/other")).unwrap();
        let error = states.load("example.com/other").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "state file {} is unreadable: it holds the state of \"example.com/app\"",
                states.path("example.com/other").display()
            )
        );
    }
}
