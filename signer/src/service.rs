//! The signer's operations (spec section 4.3) over a [`Store`] and a [`KeyBackend`], independent
//! of gRPC: request validation, CreateKey's reuse of never-used keys, key look-up, deletion,
//! signing, `last_used` bookkeeping and the audit trail (every signature, key creation and key
//! deletion is an entry of the tamper-evident log, written with its row). The signer's own
//! checkpoint key is never available to clients. `grpc.rs` only translates.

use std::fmt;
use std::sync::Arc;

use chrono::Utc;
use tufa_core::keys::{Algorithm, KeyType, PublicKey, sha256};
use tufa_core::names::{Gun, RoleName};

use crate::backend::{BackendError, KeyBackend};
use crate::store::{Actor, CHECKPOINT_ROLE, EventFilter, KeyRecord, NewSignEvent, SignEvent, Store, StoreError};

/// Largest message the signer signs (notary-server's metadata files are far smaller).
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Longest client subject recorded in the audit trail; longer ones are truncated.
pub const MAX_SUBJECT_CHARS: usize = 1024;
/// Length of a TUF key ID in hex digits.
pub const KEY_ID_HEX_LEN: usize = 64;

/// Why a request failed. The texts are safe to show to the client: they never contain key
/// material, and storage or backend details are logged instead of returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (gRPC `INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such key (gRPC `NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The key exists but this signer cannot use it as configured (gRPC `FAILED_PRECONDITION`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Storage or backend unreachable now; retry later (gRPC `UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (gRPC `INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

/// A key's public description, as CreateKey and GetKeyInfo return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// TUF key ID.
    pub key_id: String,
    /// Algorithm, which is also the public key's `keytype` (`ecdsa`, `ed25519`).
    pub algorithm: Algorithm,
    /// Raw public key bytes (ECDSA: DER SubjectPublicKeyInfo; Ed25519: 32 bytes).
    pub public: Vec<u8>,
    /// The role the key was created for.
    pub role: String,
}

impl KeyInfo {
    /// The public key as it appears in metadata.
    pub fn public_key(&self) -> PublicKey {
        let keytype = match self.algorithm {
            Algorithm::Ecdsa => KeyType::Ecdsa,
            Algorithm::Ed25519 => KeyType::Ed25519,
        };
        PublicKey::new(keytype, self.public.clone())
    }
}

/// A signature made by [`SignerService::sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The key that signed.
    pub key_id: String,
    /// The key's algorithm (= keytype).
    pub algorithm: Algorithm,
    /// Signature method per spec 2.6: `ecdsa` or `eddsa`.
    pub method: &'static str,
    /// Raw signature bytes (ECDSA P-256: 64 bytes `r‖s`; Ed25519: 64 bytes).
    pub signature: Vec<u8>,
    /// The position of the signature's entry in the audit log.
    pub audit_seq: u64,
}

/// The signature method Notary uses with keys of `algorithm`.
pub fn method_of(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ecdsa => "ecdsa",
        Algorithm::Ed25519 => "eddsa",
    }
}

/// Checks a key ID: 64 lower-case hex digits.
pub fn check_key_id(key_id: &str) -> Result<(), ServiceError> {
    if key_id.is_empty() {
        return Err(ServiceError::InvalidArgument("key ID is missing".to_owned()));
    }
    let well_formed = key_id.len() == KEY_ID_HEX_LEN
        && key_id.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !well_formed {
        return Err(ServiceError::InvalidArgument(format!(
            "key ID must be {KEY_ID_HEX_LEN} lower-case hex digits (a TUF key ID); got {} bytes",
            key_id.len()
        )));
    }
    Ok(())
}

fn parse_algorithm(algorithm: &str) -> Result<Algorithm, ServiceError> {
    if algorithm.is_empty() {
        return Err(ServiceError::InvalidArgument("algorithm is missing: expected ecdsa or ed25519".to_owned()));
    }
    Algorithm::parse(algorithm).map_err(|_| {
        let shown: String = algorithm.chars().take(32).collect();
        ServiceError::InvalidArgument(format!("unsupported key algorithm {shown:?}: expected ecdsa or ed25519"))
    })
}

fn store_failure(operation: &str, error: StoreError) -> ServiceError {
    match error {
        StoreError::Unavailable(detail) => {
            tracing::warn!(operation, error = %detail, "key database unavailable");
            ServiceError::Unavailable("the signer's key database is unavailable; try again later".to_owned())
        }
        StoreError::Internal(detail) => {
            tracing::error!(operation, error = %detail, "key database failure");
            ServiceError::Internal(format!("{operation} failed"))
        }
    }
}

fn backend_failure(operation: &str, key_id: Option<&str>, error: BackendError) -> ServiceError {
    let key_id = key_id.unwrap_or("-");
    match error {
        BackendError::Unavailable(detail) => {
            tracing::warn!(operation, key.id = key_id, error = %detail, "key backend unavailable");
            ServiceError::Unavailable("the signer's key backend is unavailable; try again later".to_owned())
        }
        BackendError::Unsupported(detail) => {
            tracing::warn!(operation, key.id = key_id, error = %detail, "key backend refused the operation");
            ServiceError::FailedPrecondition(format!("{operation} failed: the key backend does not support it"))
        }
        BackendError::NotFound(detail) | BackendError::Internal(detail) => {
            tracing::error!(operation, key.id = key_id, error = %detail, "key backend failure");
            ServiceError::Internal(format!("{operation} failed"))
        }
    }
}

/// Refuses the signer's own checkpoint key to clients: it signs only the audit log's checkpoints.
fn refuse_checkpoint_key(record: &KeyRecord) -> Result<(), ServiceError> {
    if record.role == CHECKPOINT_ROLE {
        tracing::warn!(key.id = %record.key_id, "a client asked to use the audit checkpoint key");
        return Err(ServiceError::FailedPrecondition(format!(
            "key {} is the signer's audit checkpoint key and signs only audit checkpoints",
            record.key_id
        )));
    }
    Ok(())
}

fn record_algorithm(record: &KeyRecord) -> Result<Algorithm, ServiceError> {
    Algorithm::parse(&record.algorithm).map_err(|_| {
        tracing::error!(key.id = %record.key_id, algorithm = %record.algorithm, "stored key has an unknown algorithm");
        ServiceError::Internal("stored key is unusable".to_owned())
    })
}

fn info_of(record: &KeyRecord) -> Result<KeyInfo, ServiceError> {
    Ok(KeyInfo {
        key_id: record.key_id.clone(),
        algorithm: record_algorithm(record)?,
        public: record.public.clone(),
        role: record.role.clone(),
    })
}

/// The signer: keys in one backend, metadata and the audit trail in one store.
#[derive(Clone)]
pub struct SignerService {
    store: Store,
    backend: Arc<dyn KeyBackend>,
}

impl fmt::Debug for SignerService {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SignerService")
            .field("store", &self.store)
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl SignerService {
    /// A service over a migrated store and a backend.
    pub fn new(store: Store, backend: Arc<dyn KeyBackend>) -> SignerService {
        SignerService { store, backend }
    }

    /// The store (for the audit trail and maintenance).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn KeyBackend> {
        &self.backend
    }

    /// CreateKey for an unnamed caller; see [`SignerService::create_key_as`].
    pub async fn create_key(&self, algorithm: &str, gun: &str, role: &str) -> Result<KeyInfo, ServiceError> {
        self.create_key_as(algorithm, gun, role, &Actor::default()).await
    }

    /// CreateKey: a never-used key for this GUN, role and algorithm if one exists (lowest key
    /// ID), else a new key from the backend, recorded with its audit entry naming `actor`.
    pub async fn create_key_as(
        &self,
        algorithm: &str,
        gun: &str,
        role: &str,
        actor: &Actor,
    ) -> Result<KeyInfo, ServiceError> {
        if role == CHECKPOINT_ROLE {
            return Err(ServiceError::InvalidArgument(format!(
                "role {CHECKPOINT_ROLE:?} is reserved for the signer's audit checkpoint key"
            )));
        }
        let algorithm = parse_algorithm(algorithm)?;
        let gun = Gun::parse(gun).map_err(|error| ServiceError::InvalidArgument(error.to_string()))?;
        let role = RoleName::parse(role).map_err(|_| {
            let shown: String = role.chars().take(64).collect();
            ServiceError::InvalidArgument(format!(
                "invalid role {shown:?}: expected root, targets, snapshot, timestamp or a targets/… delegation"
            ))
        })?;
        let backend = self.backend.name();
        if let Some(existing) = self
            .store
            .unused_key(gun.as_str(), role.as_str(), algorithm.as_str(), backend)
            .await
            .map_err(|error| store_failure("key creation", error))?
        {
            tracing::debug!(key.id = %existing.key_id, gun = %gun, role = %role, "returning a never-used key");
            return info_of(&existing);
        }
        let new_key =
            self.backend.generate(algorithm).await.map_err(|error| backend_failure("key creation", None, error))?;
        let record = KeyRecord {
            key_id: new_key.key_id.clone(),
            gun: gun.as_str().to_owned(),
            role: role.as_str().to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            public: new_key.public.public().to_vec(),
            backend: backend.to_owned(),
            handle: new_key.handle,
            sealed_with: new_key.sealed_with,
            created_at: Utc::now(),
            last_used: None,
        };
        if let Err(error) = self.store.insert_key(&record, actor).await {
            // Do not leave an orphan behind in a backend that keeps its own objects.
            if let Err(destroy_error) = self.backend.destroy(&record.key_id, &record.handle).await {
                tracing::warn!(key.id = %record.key_id, error = %destroy_error, "could not remove an unrecorded key");
            }
            return Err(store_failure("key creation", error));
        }
        tracing::info!(key.id = %record.key_id, gun = %gun, role = %role, algorithm = %algorithm, backend, "key created");
        info_of(&record)
    }

    /// GetKeyInfo. Does not mark the key used.
    pub async fn key_info(&self, key_id: &str) -> Result<KeyInfo, ServiceError> {
        check_key_id(key_id)?;
        let record = self.find(key_id, "key lookup").await?;
        info_of(&record)
    }

    /// DeleteKey for an unnamed caller; see [`SignerService::delete_key_as`].
    pub async fn delete_key(&self, key_id: &str) -> Result<(), ServiceError> {
        self.delete_key_as(key_id, &Actor::default()).await
    }

    /// DeleteKey: removes the key from the backend and the table, with its audit entry naming
    /// `actor`; succeeds when absent.
    pub async fn delete_key_as(&self, key_id: &str, actor: &Actor) -> Result<(), ServiceError> {
        check_key_id(key_id)?;
        let Some(record) = self.store.key(key_id).await.map_err(|error| store_failure("key deletion", error))? else {
            return Ok(());
        };
        refuse_checkpoint_key(&record)?;
        self.check_backend(&record)?;
        self.backend
            .destroy(key_id, &record.handle)
            .await
            .map_err(|error| backend_failure("key deletion", Some(key_id), error))?;
        self.store.delete_key(key_id, actor).await.map_err(|error| store_failure("key deletion", error))?;
        tracing::info!(key.id = %key_id, gun = %record.gun, role = %record.role, "key deleted");
        Ok(())
    }

    /// Sign for the client `client_subject`; see [`SignerService::sign_as`].
    pub async fn sign(&self, key_id: &str, content: &[u8], client_subject: &str) -> Result<Signed, ServiceError> {
        let actor = Actor { principal: Some(client_subject.to_owned()), address: None, request_id: None };
        self.sign_as(key_id, content, &actor).await
    }

    /// Sign: signs the full `content` with the key, sets its `last_used` and records the sign
    /// event and its audit log entry for `actor` (whose principal is the client certificate's
    /// subject). The signature is returned only once both are stored; a failed signature
    /// records nothing.
    pub async fn sign_as(&self, key_id: &str, content: &[u8], actor: &Actor) -> Result<Signed, ServiceError> {
        check_key_id(key_id)?;
        if content.is_empty() {
            return Err(ServiceError::InvalidArgument("content is empty: there is nothing to sign".to_owned()));
        }
        if content.len() > MAX_CONTENT_BYTES {
            return Err(ServiceError::InvalidArgument(format!(
                "content is {} bytes; at most {MAX_CONTENT_BYTES} bytes are signed",
                content.len()
            )));
        }
        let record = self.find(key_id, "signing").await?;
        let algorithm = record_algorithm(&record)?;
        self.check_backend(&record)?;
        let signature = self
            .backend
            .sign(key_id, algorithm, &record.handle, content)
            .await
            .map_err(|error| backend_failure("signing", Some(key_id), error))?;
        let client_subject = actor.principal.as_deref().unwrap_or(crate::grpc::NO_CLIENT_CERTIFICATE);
        let subject: String = client_subject.chars().take(MAX_SUBJECT_CHARS).collect();
        let event = NewSignEvent {
            key_id: key_id.to_owned(),
            gun: record.gun.clone(),
            role: record.role.clone(),
            algorithm: algorithm.as_str().to_owned(),
            client_subject: subject,
            payload_sha256: hex::encode(sha256(content)),
            address: actor.address.clone(),
            request_id: actor.request_id.clone(),
        };
        let stored = self.store.record_signature(&event).await.map_err(|error| store_failure("signing", error))?;
        // Per signature: debug only, the audit table is the record (`tufa-signer audit`).
        tracing::debug!(
            key.id = %key_id,
            gun = %record.gun,
            role = %record.role,
            client = %stored.client_subject,
            payload.sha256 = %stored.payload_sha256,
            event.id = stored.id,
            audit.seq = stored.audit_seq,
            "signed"
        );
        let audit_seq = stored
            .audit_seq
            .and_then(|seq| u64::try_from(seq).ok())
            .ok_or_else(|| ServiceError::Internal("signing failed".to_owned()))?;
        Ok(Signed { key_id: key_id.to_owned(), algorithm, method: method_of(algorithm), signature, audit_seq })
    }

    /// The audit trail.
    pub async fn sign_events(&self, filter: &EventFilter) -> Result<Vec<SignEvent>, ServiceError> {
        self.store.sign_events(filter).await.map_err(|error| store_failure("audit listing", error))
    }

    /// Whether both the store and the backend are usable.
    pub async fn health(&self) -> Result<(), ServiceError> {
        self.store.ping().await.map_err(|error| store_failure("health check", error))?;
        self.backend.health().await.map_err(|error| backend_failure("health check", None, error))
    }

    /// A key a client may use: not found, or refused when it is the checkpoint key.
    async fn find(&self, key_id: &str, operation: &str) -> Result<KeyRecord, ServiceError> {
        let record = self
            .store
            .key(key_id)
            .await
            .map_err(|error| store_failure(operation, error))?
            .ok_or_else(|| ServiceError::NotFound(format!("key {key_id} not found")))?;
        refuse_checkpoint_key(&record)?;
        Ok(record)
    }

    fn check_backend(&self, record: &KeyRecord) -> Result<(), ServiceError> {
        if record.backend == self.backend.name() {
            return Ok(());
        }
        tracing::warn!(key.id = %record.key_id, key.backend = %record.backend, backend = self.backend.name(), "key held by another backend");
        Err(ServiceError::FailedPrecondition(format!(
            "key {} is held by the {} backend, which this signer is not configured with",
            record.key_id, record.backend
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_must_be_lower_case_hex() {
        check_key_id(&"0a".repeat(32)).unwrap();
        for bad in ["", "abc", &"0A".repeat(32), &"0g".repeat(32), &"a".repeat(65)] {
            assert!(matches!(check_key_id(bad), Err(ServiceError::InvalidArgument(_))), "{bad:?}");
        }
    }

    #[test]
    fn algorithms_are_ecdsa_or_ed25519() {
        assert_eq!(parse_algorithm("ecdsa").unwrap(), Algorithm::Ecdsa);
        assert_eq!(parse_algorithm("ed25519").unwrap(), Algorithm::Ed25519);
        for bad in ["", "rsa", "ECDSA", "ecdsa-x509"] {
            assert!(matches!(parse_algorithm(bad), Err(ServiceError::InvalidArgument(_))), "{bad:?}");
        }
    }

    #[test]
    fn methods_follow_spec() {
        assert_eq!(method_of(Algorithm::Ecdsa), "ecdsa");
        assert_eq!(method_of(Algorithm::Ed25519), "eddsa");
    }
}
