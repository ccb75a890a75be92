//! Key backends: where the signer's private keys live. Each backend implements [`KeyBackend`];
//! the signer service above them owns key metadata (GUN, role, last use) and the audit trail.

pub mod pkcs11;
pub mod software;

use async_trait::async_trait;
use tufa_core::keys::{Algorithm, PublicKey};

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend holds no private key for this ID.
    #[error("key {0} not found in the backend")]
    NotFound(String),
    /// The backend cannot do this (for example Ed25519 on a token without it).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The backend (token, database) cannot be reached now; retrying later may work.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else. The text must not contain key material or PINs.
    #[error("backend failure: {0}")]
    Internal(String),
}

/// A private key the backend made, as the service records it.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The TUF key ID of `public`.
    pub key_id: String,
    /// The public key (`ecdsa`: DER SubjectPublicKeyInfo of a P-256 key; `ed25519`: 32 raw bytes).
    pub public: PublicKey,
    /// Opaque bytes the backend needs to use the key later, stored by the service next to the key's
    /// metadata: the sealed PKCS#8 document for the software backend, the token object's CKA_ID for
    /// PKCS#11. Never plaintext key material.
    pub handle: Vec<u8>,
    /// Label of the key-encryption key that sealed `handle` (software backend), or the backend's name.
    pub sealed_with: String,
}

/// Where private keys live and how they sign.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// A short name for logs and the key table (`software`, `pkcs11`).
    fn name(&self) -> &'static str;
    /// Generates a key pair for `algorithm`.
    async fn generate(&self, algorithm: Algorithm) -> Result<NewKey, BackendError>;
    /// Signs `message` (the full canonical bytes, not a digest) with the key `key_id` whose stored
    /// handle is `handle`: ECDSA P-256 signs SHA-256(message) and returns raw r||s (64 bytes);
    /// Ed25519 returns the 64-byte signature of the message.
    async fn sign(
        &self,
        key_id: &str,
        algorithm: Algorithm,
        handle: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>, BackendError>;
    /// Destroys the private key, if the backend holds it outside the service's table.
    async fn destroy(&self, key_id: &str, handle: &[u8]) -> Result<(), BackendError>;
    /// Whether the backend is usable (token present and logged in, KEKs loaded).
    async fn health(&self) -> Result<(), BackendError>;
}
