//! The builtin token service's keys: a long-lived CA (its certificate is the bundle registries and
//! token-mode servers trust) and a signing key certified by it (rotatable without touching any
//! consumer). Both private keys are kept in the database sealed under the KEK, so every server
//! process on one database signs with the same key and sees a rotation within seconds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tufa_auth::certs;
use tufa_auth::issue::TokenIssuer;
use tufa_store::{Store, StoreError, TokenKey, TokenKeyKind};

use crate::signing::SealingKey;

/// How often a running server looks for a signing key rotated by another process.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// A signing certificate closer than this to its expiry is replaced at start-up.
const RENEW_BEFORE: chrono::Duration = chrono::Duration::days(30);

/// Why the token keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The database failed.
    #[error("token-signing keys: {0}")]
    Store(#[from] StoreError),
    /// A key could not be made, sealed or opened.
    #[error("token-signing keys: {0}")]
    Crypto(String),
}

/// What a token key's sealing is bound to, so that a sealed token key can never be opened as an
/// online TUF key or the other way round.
pub(crate) fn sealing_label(id: &str) -> String {
    format!("token-key:{id}")
}

fn random_id() -> Result<String, KeysError> {
    let mut bytes = [0_u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeysError::Crypto("no randomness".into()))?;
    Ok(hex::encode(bytes))
}

fn active(keys: &[TokenKey], kind: TokenKeyKind) -> Option<&TokenKey> {
    keys.iter().rev().find(|key| key.kind == kind && key.retired_at.is_none())
}

fn not_after(certificate: &[u8]) -> Option<DateTime<Utc>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(certificate).ok()?;
    DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
}

/// Makes a new signing key under the CA and seals it.
fn new_signing_key(ca: &TokenKey, kek: &SealingKey, now: DateTime<Utc>) -> Result<TokenKey, KeysError> {
    let ca_private =
        kek.open(&sealing_label(&ca.id), &ca.sealed_private).map_err(|error| KeysError::Crypto(error.to_string()))?;
    let (private, certificate) = certs::generate_signing(&ca_private, &ca.certificate, SystemTime::from(now))
        .map_err(|error| KeysError::Crypto(error.to_string()))?;
    let id = random_id()?;
    let sealed = kek.seal(&sealing_label(&id), &private).map_err(|error| KeysError::Crypto(error.to_string()))?;
    Ok(TokenKey {
        id,
        kind: TokenKeyKind::Signing,
        algorithm: "ecdsa-p256".into(),
        certificate,
        sealed_private: sealed,
        kek_id: kek.id().to_owned(),
        created_at: now,
        retired_at: None,
    })
}

/// Makes sure the database holds an active CA and an active, not soon expiring, signing key.
/// Safe to run from several processes at once: the store keeps one active key per kind.
pub async fn ensure(store: &dyn Store, kek: &SealingKey) -> Result<(), KeysError> {
    let now = Utc::now();
    let keys = store.token_keys().await?;
    if active(&keys, TokenKeyKind::Ca).is_none() {
        let (private, certificate) =
            certs::generate_ca(SystemTime::from(now)).map_err(|error| KeysError::Crypto(error.to_string()))?;
        let id = random_id()?;
        let sealed = kek.seal(&sealing_label(&id), &private).map_err(|error| KeysError::Crypto(error.to_string()))?;
        let ca = TokenKey {
            id,
            kind: TokenKeyKind::Ca,
            algorithm: "ecdsa-p256".into(),
            certificate,
            sealed_private: sealed,
            kek_id: kek.id().to_owned(),
            created_at: now,
            retired_at: None,
        };
        if store.insert_token_key(&ca).await? {
            tracing::info!(id = %ca.id, "created the token-signing CA");
        }
    }
    let keys = store.token_keys().await?;
    let ca = active(&keys, TokenKeyKind::Ca).ok_or_else(|| KeysError::Crypto("no active token CA".into()))?;
    match active(&keys, TokenKeyKind::Signing) {
        None => {
            let signing = new_signing_key(ca, kek, now)?;
            if store.insert_token_key(&signing).await? {
                tracing::info!(id = %signing.id, "created a token-signing key");
            }
        }
        Some(signing) if not_after(&signing.certificate).is_none_or(|end| end - now < RENEW_BEFORE) => {
            rotate(store, kek).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Replaces the active signing key with a new one under the same CA; returns the new key's ID.
/// Tokens signed by the old key stay valid until they expire, since their chain still ends at
/// the CA.
pub async fn rotate(store: &dyn Store, kek: &SealingKey) -> Result<String, KeysError> {
    let now = Utc::now();
    let keys = store.token_keys().await?;
    let ca = active(&keys, TokenKeyKind::Ca)
        .ok_or_else(|| KeysError::Crypto("there is no token CA yet; start the server in builtin mode once".into()))?;
    let signing = new_signing_key(ca, kek, now)?;
    let record = tufa_store::Record::new(tufa_audit::NewEntry::new(
        tufa_audit::entry::kinds::TOKEN_SIGNER_ROTATE,
        serde_json::json!({"id": signing.id}),
    ));
    store.rotate_token_key(&signing, now, &record).await?;
    tracing::info!(id = %signing.id, "rotated the token-signing key");
    Ok(signing.id)
}

/// The PEM bundle consumers trust: the active CA's certificate.
pub async fn bundle(store: &dyn Store) -> Result<Option<String>, KeysError> {
    let keys = store.token_keys().await?;
    Ok(active(&keys, TokenKeyKind::Ca).map(|ca| certs::pem(&ca.certificate)))
}

struct Loaded {
    signing_id: String,
    issuer: Arc<TokenIssuer>,
    checked: Instant,
}

/// The signer of a running server: the active signing key, reloaded when another process rotates it.
pub struct TokenKeys {
    store: Arc<dyn Store>,
    kek: SealingKey,
    issuer_name: String,
    /// The CA certificate in PEM, served to consumers and used to verify this server's tokens.
    pub ca_pem: String,
    loaded: Mutex<Option<Loaded>>,
}

impl TokenKeys {
    /// Loads the active keys (run [`ensure`] first).
    pub async fn load(store: Arc<dyn Store>, kek: SealingKey, issuer_name: String) -> Result<Self, KeysError> {
        let ca_pem = bundle(store.as_ref()).await?.ok_or_else(|| KeysError::Crypto("no active token CA".into()))?;
        let keys = Self { store, kek, issuer_name, ca_pem, loaded: Mutex::new(None) };
        keys.issuer().await?;
        Ok(keys)
    }

    /// The issuer for the active signing key.
    pub async fn issuer(&self) -> Result<Arc<TokenIssuer>, KeysError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(current) = loaded.as_ref()
            && current.checked.elapsed() < RELOAD_INTERVAL
        {
            return Ok(current.issuer.clone());
        }
        let keys = self.store.token_keys().await?;
        let ca = active(&keys, TokenKeyKind::Ca).ok_or_else(|| KeysError::Crypto("no active token CA".into()))?;
        let signing = active(&keys, TokenKeyKind::Signing)
            .ok_or_else(|| KeysError::Crypto("no active token-signing key".into()))?;
        if let Some(current) = loaded.as_mut()
            && current.signing_id == signing.id
        {
            current.checked = Instant::now();
            return Ok(current.issuer.clone());
        }
        let private = self
            .kek
            .open(&sealing_label(&signing.id), &signing.sealed_private)
            .map_err(|error| KeysError::Crypto(error.to_string()))?;
        let issuer = TokenIssuer::new(
            &private,
            vec![signing.certificate.clone(), ca.certificate.clone()],
            self.issuer_name.clone(),
        )
        .map_err(|error| KeysError::Crypto(error.to_string()))?;
        let issuer = Arc::new(issuer);
        if loaded.is_some() {
            tracing::info!(id = %signing.id, "now signing tokens with a rotated key");
        }
        *loaded = Some(Loaded { signing_id: signing.id.clone(), issuer: issuer.clone(), checked: Instant::now() });
        Ok(issuer)
    }
}
