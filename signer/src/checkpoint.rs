//! Signed checkpoints of the signer's audit log: the checkpoint key (created once in the
//! configured [`KeyBackend`], so a PKCS#11 token can hold it, and recorded in the key table under
//! the reserved role [`CHECKPOINT_ROLE`] that no client can use), the C2SP checkpoints it signs,
//! and the loop that makes one whenever the log has grown, at a fixed interval and at shutdown.
//!
//! The checkpoint key's name is the log's origin. It is chosen when the key is created (the
//! configured origin, else `tufa-signer/<hostname>`), kept in the key's `gun` column, and from
//! then on every signer process on the database uses it; a configured origin that differs from
//! the stored one is refused.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tufa_audit::checkpoint::{self, CheckpointError, CheckpointKey, TreeHead, signed_note};
use tufa_core::keys::{Algorithm, KeyType, PublicKey};

use crate::backend::{BackendError, KeyBackend};
use crate::store::{CHECKPOINT_ROLE, KeyRecord, Store, StoreError};

/// Default time between checkpoints while the log grows.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The algorithm of checkpoint keys: ECDSA P-256, which every backend (and every PKCS#11 token)
/// supports.
pub const KEY_ALGORITHM: Algorithm = Algorithm::Ecdsa;

/// Why checkpointing failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointerError {
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The key backend failed.
    #[error("checkpoint key: {0}")]
    Backend(#[from] BackendError),
    /// The key, its name or a note is unusable.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// The configured origin is not the stored key's.
    #[error("{0}")]
    Origin(String),
}

/// The origin used when none is configured: `tufa-signer/<hostname>` (`localhost` when the host
/// name cannot be read), with characters a key name may not hold dropped.
pub fn default_origin() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| {
            name.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("tufa-signer/{host}")
}

/// Checks that `origin` can name a checkpoint key: the C2SP signed-note rule (non-empty, no
/// whitespace, no `+`).
pub fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if !origin.is_empty() && !origin.chars().any(char::is_whitespace) && !origin.contains('+') {
        Ok(())
    } else {
        Err(CheckpointError::KeyName(origin.to_owned()))
    }
}

/// The verifier key of a stored checkpoint key record.
pub fn verifier_key(record: &KeyRecord) -> Result<CheckpointKey, CheckpointError> {
    let keytype = match Algorithm::parse(&record.algorithm) {
        Ok(Algorithm::Ecdsa) => KeyType::Ecdsa,
        Ok(Algorithm::Ed25519) => KeyType::Ed25519,
        Err(_) => return Err(CheckpointError::KeyType(record.algorithm.clone())),
    };
    CheckpointKey::new(&record.gun, PublicKey::new(keytype, record.public.clone()))
}

/// A checkpoint just made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// Entries it covers.
    pub size: u64,
    /// The signed note.
    pub note: String,
}

/// Signs checkpoints of the log with the checkpoint key.
#[derive(Clone)]
pub struct Checkpointer {
    store: Store,
    backend: Arc<dyn KeyBackend>,
    record: KeyRecord,
    algorithm: Algorithm,
    key: CheckpointKey,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Checkpointer")
            .field("key_id", &self.record.key_id)
            .field("origin", &self.key.name())
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Checkpointer {
    /// The checkpointer over the backend's checkpoint key, created (and recorded with its log
    /// entry) when the database has none for this backend. `origin` is the configured log
    /// origin, if any.
    pub async fn open(
        store: Store,
        backend: Arc<dyn KeyBackend>,
        origin: Option<&str>,
    ) -> Result<Checkpointer, CheckpointerError> {
        let record = match store.checkpoint_key(Some(backend.name())).await? {
            Some(record) => record,
            None => Self::create_key(&store, backend.as_ref(), origin).await?,
        };
        if let Some(origin) = origin
            && origin != record.gun
        {
            return Err(CheckpointerError::Origin(format!(
                "the audit log's origin is {:?} (the name of its checkpoint key {}), not the configured {origin:?}; \
                 remove the audit origin setting or set it to {:?}",
                record.gun, record.key_id, record.gun
            )));
        }
        let algorithm =
            Algorithm::parse(&record.algorithm).map_err(|_| CheckpointError::KeyType(record.algorithm.clone()))?;
        let key = verifier_key(&record)?;
        Ok(Checkpointer { store, backend, record, algorithm, key })
    }

    async fn create_key(
        store: &Store,
        backend: &dyn KeyBackend,
        origin: Option<&str>,
    ) -> Result<KeyRecord, CheckpointerError> {
        let origin = origin.map_or_else(default_origin, str::to_owned);
        check_origin(&origin)?;
        let new = backend.generate(KEY_ALGORITHM).await?;
        let record = KeyRecord {
            key_id: new.key_id,
            gun: origin,
            role: CHECKPOINT_ROLE.to_owned(),
            algorithm: KEY_ALGORITHM.as_str().to_owned(),
            public: new.public.public().to_vec(),
            backend: backend.name().to_owned(),
            handle: new.handle,
            sealed_with: new.sealed_with,
            created_at: Utc::now(),
            last_used: None,
        };
        let stored = match store.insert_checkpoint_key(&record).await {
            Ok(stored) => stored,
            Err(error) => {
                discard(backend, &record).await;
                return Err(error.into());
            }
        };
        if stored.key_id == record.key_id {
            tracing::info!(key.id = %record.key_id, origin = %record.gun, backend = backend.name(), "audit checkpoint key created");
        } else {
            // Another signer process recorded its key first; ours is not needed.
            discard(backend, &record).await;
        }
        Ok(stored)
    }

    /// The verifier key auditors pin.
    pub fn key(&self) -> &CheckpointKey {
        &self.key
    }

    /// The checkpoint key's ID.
    pub fn key_id(&self) -> &str {
        &self.record.key_id
    }

    /// Signs and stores a checkpoint of the log as it stands, unless a stored checkpoint
    /// already covers every entry (or the log is empty). The note is checked against the key
    /// before it is stored.
    pub async fn checkpoint(&self) -> Result<Option<Made>, CheckpointerError> {
        let latest = self.store.latest_checkpoint().await?.map_or(0, |latest| latest.size);
        let (size, root, time) = self.store.audit_tree_head().await?;
        if size <= latest {
            return Ok(None);
        }
        let head = TreeHead { origin: self.key.name().to_owned(), size, root, time };
        let text = head.text()?;
        let signature = self.backend.sign(&self.record.key_id, self.algorithm, &self.record.handle, &text).await?;
        let note = signed_note(&text, &self.key, signature)?;
        checkpoint::open(&note, &self.key)?;
        self.store.insert_checkpoint(size, &root, &note, &self.record.key_id, time).await?;
        tracing::debug!(size, key.id = %self.record.key_id, "audit checkpoint signed");
        Ok(Some(Made { size, note }))
    }

    /// Makes a checkpoint every `interval` while the log grows, until `stop` turns true (or
    /// its sender is gone), then one last one. Failures are logged and retried next time.
    pub async fn run(self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = ticker.tick() => self.checkpoint_logged().await,
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        self.checkpoint_logged().await;
    }

    /// [`Checkpointer::checkpoint`], with a failure logged.
    pub async fn checkpoint_logged(&self) {
        if let Err(error) = self.checkpoint().await {
            tracing::warn!(error = %error, "could not sign an audit checkpoint; retrying at the next interval");
        }
    }
}

/// Destroys a checkpoint key that was not recorded, so no orphan stays in a token.
async fn discard(backend: &dyn KeyBackend, record: &KeyRecord) {
    if let Err(error) = backend.destroy(&record.key_id, &record.handle).await {
        tracing::warn!(key.id = %record.key_id, error = %error, "could not remove an unrecorded checkpoint key");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_origin_is_a_valid_key_name() {
        let origin = default_origin();
        assert!(origin.starts_with("tufa-signer/"), "{origin}");
        check_origin(&origin).unwrap();
    }

    #[test]
    fn origins_with_spaces_or_plus_are_refused() {
        for bad in ["", "has space", "a+b"] {
            assert_eq!(check_origin(bad), Err(CheckpointError::KeyName(bad.to_owned())));
        }
        check_origin("signer.example.com/audit").unwrap();
    }
}
