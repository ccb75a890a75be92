//! The server's online signing contract and its in-process implementation.
//!
//! The server only ever asks for timestamp and snapshot signatures. [`OnlineSigner`] is the narrow
//! contract (create a key, look a key up, sign); the embedded default is [`LocalSigner`], which
//! keeps software keys in the server's database sealed with AES-256-GCM under a key-encryption key
//! (KEK). A remote signer service implements the same trait.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::Utc;
use tufa_core::keys::{Algorithm, KeyType, PrivateKey, PublicKey};
use tufa_core::names::{BaseRole, Gun};
use tufa_store::{Store, StoredKey};
use zeroize::Zeroizing;

/// Why a signer request failed.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The signer has no key with this ID.
    #[error("key {0} not found")]
    NotFound(String),
    /// The signer (or its storage) cannot be reached now.
    #[error("signer unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("signer failure: {0}")]
    Internal(String),
}

/// A signature made by an online key.
#[derive(Debug, Clone)]
pub struct OnlineSignature {
    /// Signature method (`ecdsa`, `eddsa`).
    pub method: String,
    /// Raw signature bytes.
    pub bytes: Vec<u8>,
    /// The signature's position in the signer's own audit log, when the signer reports it
    /// (tufa-signer's `tufa-audit-seq` response metadata; the in-process signer's signatures are
    /// recorded in the server's log itself).
    pub signer_seq: Option<u64>,
}

/// The online-key operations the server needs.
#[async_trait]
pub trait OnlineSigner: Send + Sync + 'static {
    /// Returns a key for `gun`/`role`: an existing key that has never signed, or a new one.
    async fn create_key(&self, gun: &Gun, role: BaseRole, algorithm: Algorithm) -> Result<PublicKey, SignerError>;
    /// The public key with canonical ID `key_id`, if the signer holds it.
    async fn public_key(&self, key_id: &str) -> Result<Option<PublicKey>, SignerError>;
    /// Signs `message` (the full canonical bytes, not a digest) with key `key_id`.
    async fn sign(&self, key_id: &str, message: &[u8]) -> Result<OnlineSignature, SignerError>;
    /// Whether the signer is usable.
    async fn health(&self) -> Result<(), SignerError>;
}

/// A 256-bit key-encryption key with a short ID recorded next to every sealed key.
pub struct SealingKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SealingKey").field("id", &self.id).finish_non_exhaustive()
    }
}

const SEAL_FORMAT: u8 = 1;

impl SealingKey {
    /// Wraps raw KEK bytes. The bytes are copied into aws-lc's key schedule; the caller's copy
    /// should be zeroized by its owner.
    pub fn new(id: String, key: &[u8; 32]) -> Result<Self, SignerError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| SignerError::Internal("invalid KEK".into()))?;
        Ok(Self { id, key: LessSafeKey::new(unbound) })
    }

    /// The KEK's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(key_id: &str) -> Vec<u8> {
        format!("tufa-online-key:{key_id}").into_bytes()
    }

    /// Seals `plaintext`, bound to `key_id`: format byte, 96-bit random nonce, ciphertext, tag.
    pub fn seal(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, SignerError> {
        let mut nonce = [0_u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SignerError::Internal("no randomness".into()))?;
        let mut sealed = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(Self::aad(key_id)), &mut *sealed)
            .map_err(|_| SignerError::Internal("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEAL_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`SealingKey::seal`] produced for `key_id`.
    pub fn open(&self, key_id: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SignerError> {
        let failure = || SignerError::Internal(format!("key {key_id} cannot be decrypted with KEK {}", self.id));
        let (format, rest) = sealed.split_first().ok_or_else(failure)?;
        if *format != SEAL_FORMAT || rest.len() < NONCE_LEN {
            return Err(failure());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failure())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext =
            self.key.open_in_place(nonce, Aad::from(Self::aad(key_id)), &mut buffer).map_err(|_| failure())?;
        Ok(Zeroizing::new(plaintext.to_vec()))
    }
}

/// Why the server refuses its key-encryption key at start-up: the database holds online keys it
/// cannot open. Without this check the server would report healthy and answer every publish
/// that needs a server-held key with 500.
#[derive(Debug, thiserror::Error)]
pub enum KekCheckError {
    /// There is no KEK yet, but the database already holds keys sealed by other KEKs; a new KEK
    /// (which would be generated and written now) could open none of them.
    #[error(
        "the database holds online keys sealed by key-encryption key {held}, but {origin} does not exist; \
         a new KEK could decrypt none of them, so none was generated: give this server the KEK of the \
         server that created those keys (copy its kek.key, or set --kek-file or TUFA_KEK), or use another database"
    )]
    Missing {
        /// Where the KEK was expected (`TUFA_KEK` or the KEK file).
        origin: String,
        /// The KEK ids the database's keys need, comma-separated.
        held: String,
    },
    /// The database holds keys sealed by a KEK other than this one.
    #[error(
        "the key-encryption key from {origin} (id {id}) does not match the database: its online keys are \
         sealed by key-encryption key {held}; give this server the KEK of the server that created those keys \
         (--kek-file or TUFA_KEK), or use another database"
    )]
    Mismatch {
        /// Where the KEK came from.
        origin: String,
        /// The KEK's id.
        id: String,
        /// The KEK ids the database's keys need, comma-separated.
        held: String,
    },
    /// A key the database records as sealed by this KEK does not open with it.
    #[error(
        "the key-encryption key from {origin} (id {id}) cannot decrypt online key {key_id}, which the database \
         records as sealed by it: the key or its sealed copy is damaged"
    )]
    Unopenable {
        /// Where the KEK came from.
        origin: String,
        /// The KEK's id.
        id: String,
        /// The key that did not open.
        key_id: String,
    },
    /// The KEK could not be read or created.
    #[error("key-encryption key: {0}")]
    Load(String),
    /// The database could not be asked.
    #[error("cannot check the key-encryption key against the database: {0}")]
    Store(tufa_store::StoreError),
}

impl KekCheckError {
    /// The process exit status for this error: 1 when the database could not be asked (it may
    /// work on a retry), 2 for a key-encryption key that does not fit (a configuration error).
    pub fn exit_code(&self) -> u8 {
        match self {
            KekCheckError::Store(_) => 1,
            _ => 2,
        }
    }
}

/// Loads the configured key-encryption key and checks it against the keys in `store` (see
/// [`check_kek`]). A new KEK file is generated only when the database holds no keys at all, so a
/// server pointed at another server's database never writes a KEK that cannot open its keys.
pub async fn load_checked_kek(store: &dyn Store, config: &crate::config::Config) -> Result<SealingKey, KekCheckError> {
    let source = config.kek_source();
    let held = store.kek_ids().await.map_err(KekCheckError::Store)?;
    if !held.is_empty() && !config.kek_exists() {
        return Err(KekCheckError::Missing { origin: source, held: held.join(", ") });
    }
    let kek = crate::kek::load_or_create_kek(config).map_err(|error| KekCheckError::Load(error.to_string()))?;
    let sealing = SealingKey::new(kek.id.clone(), kek.key()).map_err(|error| KekCheckError::Load(error.to_string()))?;
    drop(kek);
    check_kek(store, &sealing, &source, &held).await?;
    Ok(sealing)
}

/// Refuses `kek` (from `source`, for messages) unless every stored key was sealed by it
/// (`held` is what [`Store::kek_ids`] returned), and proves it by opening one of them. A
/// database without keys accepts any KEK.
pub async fn check_kek(
    store: &dyn Store,
    kek: &SealingKey,
    source: &str,
    held: &[String],
) -> Result<(), KekCheckError> {
    if held.is_empty() {
        return Ok(());
    }
    if held.iter().any(|id| id != kek.id()) {
        return Err(KekCheckError::Mismatch {
            origin: source.to_owned(),
            id: kek.id().to_owned(),
            held: held.join(", "),
        });
    }
    let unopenable = |key_id: &str| KekCheckError::Unopenable {
        origin: source.to_owned(),
        id: kek.id().to_owned(),
        key_id: key_id.to_owned(),
    };
    // The keys may have been deleted since `held` was read; then there is nothing to open.
    if let Some(sample) = store.key_sealed_with(kek.id()).await.map_err(KekCheckError::Store)? {
        kek.open(&sample.key_id, &sample.sealed_private).map_err(|_| unopenable(&sample.key_id))?;
        return Ok(());
    }
    // A database of a builtin-auth server may hold only token-signing keys.
    let token_keys = store.token_keys().await.map_err(KekCheckError::Store)?;
    if let Some(sample) = token_keys.iter().find(|key| key.kek_id == kek.id()) {
        kek.open(&crate::auth::keys::sealing_label(&sample.id), &sample.sealed_private)
            .map_err(|_| unopenable(&sample.id))?;
    }
    Ok(())
}

/// Most decrypted online keys the in-process signer keeps in memory.
pub const MAX_CACHED_KEYS: usize = 10_000;

/// The embedded signer: software keys stored sealed in the server's database.
pub struct LocalSigner {
    store: Arc<dyn Store>,
    kek: SealingKey,
    /// Decrypted keys by key ID; each entry also records whether `last_used` is already set.
    cache: RwLock<HashMap<String, (Arc<PrivateKey>, bool)>>,
}

impl LocalSigner {
    /// A signer over `store` whose keys are sealed with `kek`.
    pub fn new(store: Arc<dyn Store>, kek: SealingKey) -> Self {
        Self { store, kek, cache: RwLock::new(HashMap::new()) }
    }

    fn cached(&self, key_id: &str) -> Option<(Arc<PrivateKey>, bool)> {
        self.cache.read().ok().and_then(|cache| cache.get(key_id).cloned())
    }

    fn remember(&self, key_id: &str, key: Arc<PrivateKey>, used: bool) {
        if let Ok(mut cache) = self.cache.write() {
            // Bounded: past the cap an arbitrary entry makes room (it is re-read from the store
            // when next needed), so creating keys for many names cannot grow memory without end.
            if cache.len() >= MAX_CACHED_KEYS
                && !cache.contains_key(key_id)
                && let Some(evicted) = cache.keys().next().cloned()
            {
                cache.remove(&evicted);
            }
            cache.insert(key_id.to_owned(), (key, used));
        }
    }

    /// How many decrypted keys are cached.
    pub fn cached_keys(&self) -> usize {
        self.cache.read().map(|cache| cache.len()).unwrap_or(0)
    }
}

fn store_error(error: tufa_store::StoreError) -> SignerError {
    match error {
        tufa_store::StoreError::Unavailable(message) => SignerError::Unavailable(message),
        other => SignerError::Internal(other.to_string()),
    }
}

fn public_of(stored: &StoredKey) -> PublicKey {
    let keytype = match stored.algorithm.as_str() {
        "ed25519" => KeyType::Ed25519,
        _ => KeyType::Ecdsa,
    };
    PublicKey::new(keytype, stored.public.clone())
}

#[async_trait]
impl OnlineSigner for LocalSigner {
    async fn create_key(&self, gun: &Gun, role: BaseRole, algorithm: Algorithm) -> Result<PublicKey, SignerError> {
        if let Some(existing) =
            self.store.unused_key(gun.as_str(), role.as_str(), algorithm.as_str()).await.map_err(store_error)?
        {
            return Ok(public_of(&existing));
        }
        let private = PrivateKey::generate(algorithm).map_err(|error| SignerError::Internal(error.to_string()))?;
        let public = private.public_key();
        let key_id = public.key_id();
        let sealed = self.kek.seal(&key_id, &private.pkcs8())?;
        let stored = StoredKey {
            key_id: key_id.clone(),
            gun: gun.as_str().to_owned(),
            role: role.as_str().to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            public: public.public().to_vec(),
            sealed_private: sealed,
            kek_id: self.kek.id().to_owned(),
            created_at: Utc::now(),
            last_used: None,
        };
        self.store.insert_key(&stored).await.map_err(store_error)?;
        tracing::info!(gun = %gun, role = role.as_str(), key.id = %key_id, "created online key");
        self.remember(&key_id, Arc::new(private), false);
        Ok(public)
    }

    async fn public_key(&self, key_id: &str) -> Result<Option<PublicKey>, SignerError> {
        if let Some((key, _)) = self.cached(key_id) {
            return Ok(Some(key.public_key()));
        }
        Ok(self.store.key(key_id).await.map_err(store_error)?.as_ref().map(public_of))
    }

    async fn sign(&self, key_id: &str, message: &[u8]) -> Result<OnlineSignature, SignerError> {
        let (key, used) = match self.cached(key_id) {
            Some(entry) => entry,
            None => {
                let stored = self
                    .store
                    .key(key_id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| SignerError::NotFound(key_id.to_owned()))?;
                let algorithm = Algorithm::parse(&stored.algorithm)
                    .map_err(|error| SignerError::Internal(format!("key {key_id}: {error}")))?;
                let pkcs8 = self.kek.open(key_id, &stored.sealed_private)?;
                let key = Arc::new(
                    PrivateKey::from_pkcs8(algorithm, &pkcs8)
                        .map_err(|error| SignerError::Internal(error.to_string()))?,
                );
                (key, stored.last_used.is_some())
            }
        };
        let bytes = key.sign(message).map_err(|error| SignerError::Internal(error.to_string()))?;
        if !used {
            self.store.mark_key_used(key_id).await.map_err(store_error)?;
        }
        let method = key.method().to_owned();
        self.remember(key_id, key, true);
        Ok(OnlineSignature { method, bytes, signer_seq: None })
    }

    async fn health(&self) -> Result<(), SignerError> {
        self.store.ping().await.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory_store() -> Arc<dyn Store> {
        tufa_store::open(&tufa_store::DatabaseUrl::parse("sqlite::memory:").unwrap()).await.unwrap()
    }

    /// Creates one key through a signer holding `kek`, as a running server would.
    async fn key_sealed_by(store: &Arc<dyn Store>, kek: SealingKey, gun: &str) -> PublicKey {
        let signer = LocalSigner::new(store.clone(), kek);
        signer.create_key(&Gun::parse(gun).unwrap(), BaseRole::Timestamp, Algorithm::Ecdsa).await.unwrap()
    }

    #[tokio::test]
    async fn an_empty_database_accepts_any_kek() {
        let store = memory_store().await;
        let kek = SealingKey::new("aaaa".into(), &[1; 32]).unwrap();
        let held = store.kek_ids().await.unwrap();
        assert_eq!(held, Vec::<String>::new());
        check_kek(store.as_ref(), &kek, "TUFA_KEK", &held).await.unwrap();
    }

    #[tokio::test]
    async fn the_kek_that_sealed_the_keys_is_accepted_and_another_is_refused() {
        let store = memory_store().await;
        key_sealed_by(&store, SealingKey::new("aaaa".into(), &[1; 32]).unwrap(), "example.com/one").await;
        let held = store.kek_ids().await.unwrap();
        assert_eq!(held, ["aaaa"]);
        let same = SealingKey::new("aaaa".into(), &[1; 32]).unwrap();
        check_kek(store.as_ref(), &same, "TUFA_KEK", &held).await.unwrap();

        let other = SealingKey::new("bbbb".into(), &[2; 32]).unwrap();
        let error = check_kek(store.as_ref(), &other, "the KEK file /data/kek.key", &held).await.unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "the key-encryption key from the KEK file /data/kek.key (id bbbb) does not match the database: its \
             online keys are sealed by key-encryption key aaaa; give this server the KEK of the server that \
             created those keys (--kek-file or TUFA_KEK), or use another database"
        );

        // Keys under two KEKs: neither KEK alone can serve them all.
        key_sealed_by(&store, SealingKey::new("bbbb".into(), &[2; 32]).unwrap(), "example.com/two").await;
        let held = store.kek_ids().await.unwrap();
        assert_eq!(held, ["aaaa", "bbbb"]);
        let error = check_kek(store.as_ref(), &same, "TUFA_KEK", &held).await.unwrap_err();
        assert!(
            matches!(&error, KekCheckError::Mismatch { id, held, .. } if id == "aaaa" && held == "aaaa, bbbb"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_kek_with_the_right_id_must_also_open_the_keys() {
        let store = memory_store().await;
        let public = key_sealed_by(&store, SealingKey::new("aaaa".into(), &[1; 32]).unwrap(), "example.com/one").await;
        // Same id, different bytes: what a damaged key file or a forged id would look like.
        let impostor = SealingKey::new("aaaa".into(), &[9; 32]).unwrap();
        let held = store.kek_ids().await.unwrap();
        let error = check_kek(store.as_ref(), &impostor, "TUFA_KEK", &held).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the key-encryption key from TUFA_KEK (id aaaa) cannot decrypt online key {}, which the database \
                 records as sealed by it: the key or its sealed copy is damaged",
                public.key_id()
            )
        );
        assert_eq!(error.exit_code(), 2);
    }

    #[tokio::test]
    async fn a_database_with_only_token_signing_keys_is_checked_too() {
        let store = memory_store().await;
        let kek = SealingKey::new("bbbb".into(), &[2; 32]).unwrap();
        crate::auth::keys::ensure(store.as_ref(), &kek).await.unwrap();
        let held = store.kek_ids().await.unwrap();
        assert_eq!(held, vec!["bbbb".to_owned()]);
        check_kek(store.as_ref(), &kek, "TUFA_KEK", &held).await.unwrap();
        let impostor = SealingKey::new("bbbb".into(), &[3; 32]).unwrap();
        let error = check_kek(store.as_ref(), &impostor, "TUFA_KEK", &held).await.unwrap_err();
        assert!(
            error.to_string().starts_with("the key-encryption key from TUFA_KEK (id bbbb) cannot decrypt online key "),
            "{error}"
        );
    }

    #[test]
    fn sealing_round_trips_and_binds_key_id() {
        let kek = SealingKey::new("k1".into(), &[7; 32]).unwrap();
        let sealed = kek.seal("abc", b"secret").unwrap();
        assert_eq!(kek.open("abc", &sealed).unwrap().as_slice(), b"secret");
        let refused = |kek: &SealingKey, key_id: &str, sealed: &[u8]| match kek.open(key_id, sealed) {
            Err(SignerError::Internal(text)) => text,
            Err(other) => panic!("expected an internal error, got {other:?}"),
            Ok(_) => panic!("{key_id} opened"),
        };
        // Bound to its key ID, to the KEK, and to every byte.
        assert_eq!(refused(&kek, "abd", &sealed), "key abd cannot be decrypted with KEK k1");
        let other = SealingKey::new("k2".into(), &[8; 32]).unwrap();
        assert_eq!(refused(&other, "abc", &sealed), "key abc cannot be decrypted with KEK k2");
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(refused(&kek, "abc", &tampered), "key abc cannot be decrypted with KEK k1");
        assert_eq!(refused(&kek, "abc", &[]), "key abc cannot be decrypted with KEK k1");
        assert!(!format!("{kek:?}").contains('7'));
    }
}
