//! The software backend: keys generated in process (aws-lc-rs through `tufa-core`), their PKCS#8
//! documents sealed with AES-256-GCM under named key-encryption keys (KEKs), decrypted keys cached
//! in memory.
//!
//! Several KEKs form a [`KeyRing`]: the active one seals new keys, all of them open old ones, so a
//! KEK can be replaced without downtime and existing keys re-sealed later ([`SoftwareBackend::reseal`]).
//! KEKs are 32 random bytes written as 64 hex digits, read from a file that only its owner may read
//! or from the environment variable `TUFA_SIGNER_KEK_<NAME>`; never from the command line.
//!
//! A sealed key (the `handle` the service stores) is self-describing:
//!
//! ```text
//! format (1 byte, = 1) | name length (1 byte) | KEK name | nonce (12 bytes) | ciphertext | GCM tag (16 bytes)
//! ```
//!
//! The additional authenticated data binds the header, the key's algorithm and its key ID, so a
//! sealed key cannot be moved to another row or relabelled without the open failing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use tufa_common::files::{self, FileError};
use tufa_core::keys::{Algorithm, PrivateKey};
use zeroize::Zeroizing;

use super::{BackendError, KeyBackend, NewKey};

/// Prefix of the environment variables holding KEKs: `TUFA_SIGNER_KEK_<NAME>`, name upper-cased.
pub const KEK_ENV_PREFIX: &str = "TUFA_SIGNER_KEK_";
/// Length of a KEK in bytes.
pub const KEK_LEN: usize = 32;
/// Longest KEK name.
pub const MAX_KEK_NAME_LEN: usize = 32;
/// The only sealed-key format so far.
const FORMAT_V1: u8 = 1;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Domain separation for the AAD.
const AAD_LABEL: &[u8] = b"tufa-signer sealed private key";
/// Largest KEK file accepted (64 hex digits plus whitespace).
const MAX_KEK_FILE_LEN: u64 = 1024;
/// Decrypted keys kept in memory at most; the cache is emptied when it is full.
const CACHE_CAPACITY: usize = 16_384;

/// Why a key ring could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// KEK names are 1 to 32 characters of `a-z`, `0-9` and `_`.
    #[error("invalid KEK name {0:?}: use 1 to 32 characters of a-z, 0-9 and _")]
    InvalidName(String),
    /// The same name was given twice.
    #[error("KEK {0:?} is configured more than once")]
    Duplicate(String),
    /// The KEK text is not 64 hex digits.
    #[error("KEK {name:?} from {source_description} is not 64 hex digits (32 bytes)")]
    Malformed {
        /// The KEK's name.
        name: String,
        /// Where it came from (a file path or an environment variable name).
        source_description: String,
    },
    /// A KEK file can be read by its group or by others.
    #[error(transparent)]
    InsecureFile(#[from] FileError),
    /// A KEK file could not be read.
    #[error("cannot read KEK file {path}: {reason}", path = path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A KEK listed without a file has no environment variable either.
    #[error("KEK {name:?} has no file and the environment variable {variable} is not set")]
    MissingEnv {
        /// The KEK's name.
        name: String,
        /// The variable looked for.
        variable: String,
    },
    /// No KEK at all.
    #[error(
        "no key-encryption key configured: add [[software.kek]] entries to the config file or set {KEK_ENV_PREFIX}<NAME> \
         (64 hex digits; `tufa-signer gen-kek --out FILE` makes one)"
    )]
    NoKeks,
    /// Several KEKs and no choice of the active one.
    #[error("several KEKs are configured ({0}); choose the one for new keys with software.active_kek or --active-kek")]
    NoActive(String),
    /// The active KEK is not among the configured ones.
    #[error("the active KEK {0:?} is not configured")]
    UnknownActive(String),
    /// The crypto library refused the key.
    #[error("KEK {0:?} was rejected by the crypto library")]
    Rejected(String),
}

/// Checks a KEK name: 1 to 32 characters of `a-z`, `0-9` and `_`.
pub fn check_kek_name(name: &str) -> Result<(), KekError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_KEK_NAME_LEN
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if valid { Ok(()) } else { Err(KekError::InvalidName(name.to_owned())) }
}

/// The environment variable that holds KEK `name`.
pub fn kek_env_var(name: &str) -> String {
    format!("{KEK_ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// One named key-encryption key. It never prints its key material.
pub struct Kek {
    name: String,
    key: LessSafeKey,
}

impl fmt::Debug for Kek {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Kek").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Kek {
    /// Wraps 32 key bytes. aws-lc copies them into its key schedule; the caller zeroizes its copy.
    pub fn new(name: &str, bytes: &[u8; KEK_LEN]) -> Result<Kek, KekError> {
        check_kek_name(name)?;
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KekError::Rejected(name.to_owned()))?;
        Ok(Kek { name: name.to_owned(), key: LessSafeKey::new(unbound) })
    }

    /// Reads 64 hex digits (surrounding whitespace ignored). `source_description` names the origin
    /// in error messages; the text itself is never included.
    pub fn from_hex(name: &str, text: &str, source_description: &str) -> Result<Kek, KekError> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        hex::decode_to_slice(text.trim(), bytes.as_mut_slice()).map_err(|_| KekError::Malformed {
            name: name.to_owned(),
            source_description: source_description.to_owned(),
        })?;
        Kek::new(name, &bytes)
    }

    /// Reads a KEK file, refusing files that group or others may read.
    pub fn from_file(name: &str, path: &Path) -> Result<Kek, KekError> {
        check_kek_name(name)?;
        let unreadable = |reason: String| KekError::Unreadable { path: path.to_owned(), reason };
        let metadata = std::fs::metadata(path).map_err(|error| unreadable(error.to_string()))?;
        if !metadata.is_file() {
            return Err(unreadable("not a regular file".to_owned()));
        }
        files::check_owner_only("KEK file", path, &metadata)?;
        let text = files::read_limited_text("KEK file", path, MAX_KEK_FILE_LEN).map_err(|error| match error {
            files::FileError::TooLarge { max_bytes, .. } => unreadable(format!("larger than {max_bytes} bytes")),
            files::FileError::Io { source, .. } => unreadable(source.to_string()),
            other => unreadable(other.to_string()),
        })?;
        Kek::from_hex(name, &text, &path.display().to_string())
    }

    /// The KEK's name, recorded next to every key it seals.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Where one configured KEK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekSpec {
    /// The KEK's name.
    pub name: String,
    /// A file holding 64 hex digits; `None` reads `TUFA_SIGNER_KEK_<NAME>` instead.
    pub file: Option<PathBuf>,
}

/// The named KEKs: one active for sealing, all usable for opening.
pub struct KeyRing {
    active: String,
    keks: BTreeMap<String, Kek>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KeyRing")
            .field("active", &self.active)
            .field("keks", &self.keks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// Builds a ring. `active` may be omitted when there is exactly one KEK.
    pub fn new(keks: Vec<Kek>, active: Option<&str>) -> Result<KeyRing, KekError> {
        let mut by_name = BTreeMap::new();
        for kek in keks {
            if by_name.contains_key(&kek.name) {
                return Err(KekError::Duplicate(kek.name));
            }
            by_name.insert(kek.name.clone(), kek);
        }
        let active = match active {
            Some(active) if by_name.contains_key(active) => active.to_owned(),
            Some(active) => return Err(KekError::UnknownActive(active.to_owned())),
            None => {
                let mut names = by_name.keys();
                match (names.next(), names.next()) {
                    (None, _) => return Err(KekError::NoKeks),
                    (Some(only), None) => only.clone(),
                    (Some(_), Some(_)) => {
                        return Err(KekError::NoActive(by_name.keys().cloned().collect::<Vec<_>>().join(", ")));
                    }
                }
            }
        };
        Ok(KeyRing { active, keks: by_name })
    }

    /// Loads the configured KEKs plus any further `TUFA_SIGNER_KEK_<NAME>` found in `environment`
    /// (name lower-cased), then builds the ring. `environment` is the process environment in
    /// production (`std::env::vars()`), a list in tests.
    pub fn load(
        specs: &[KekSpec],
        active: Option<&str>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<KeyRing, KekError> {
        let mut from_env: BTreeMap<String, (String, Zeroizing<String>)> = BTreeMap::new();
        for (variable, value) in environment {
            if let Some(suffix) = variable.strip_prefix(KEK_ENV_PREFIX) {
                from_env.insert(suffix.to_ascii_lowercase(), (variable.clone(), Zeroizing::new(value)));
            }
        }
        let mut keks = Vec::new();
        for spec in specs {
            check_kek_name(&spec.name)?;
            let kek = match &spec.file {
                Some(path) => Kek::from_file(&spec.name, path)?,
                None => {
                    let variable = kek_env_var(&spec.name);
                    let (_, value) = from_env
                        .get(&spec.name)
                        .ok_or_else(|| KekError::MissingEnv { name: spec.name.clone(), variable: variable.clone() })?;
                    Kek::from_hex(&spec.name, value, &variable)?
                }
            };
            keks.push(kek);
        }
        for (name, (variable, value)) in &from_env {
            if specs.iter().any(|spec| &spec.name == name) {
                continue;
            }
            keks.push(Kek::from_hex(name, value, variable)?);
        }
        KeyRing::new(keks, active)
    }

    /// The name of the KEK that seals new keys.
    pub fn active_name(&self) -> &str {
        &self.active
    }

    /// Every KEK name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keks.keys().map(String::as_str)
    }

    /// Seals `plaintext` (a PKCS#8 document) for key `key_id` under the active KEK.
    pub fn seal(&self, key_id: &str, algorithm: Algorithm, plaintext: &[u8]) -> Result<Vec<u8>, BackendError> {
        let kek = self
            .keks
            .get(&self.active)
            .ok_or_else(|| BackendError::Internal("the active KEK is missing from the ring".to_owned()))?;
        let name_len =
            u8::try_from(kek.name.len()).map_err(|_| BackendError::Internal("KEK name too long".to_owned()))?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| BackendError::Internal("the system random generator failed".to_owned()))?;

        let mut sealed = Vec::with_capacity(2 + kek.name.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.push(FORMAT_V1);
        sealed.push(name_len);
        sealed.extend_from_slice(kek.name.as_bytes());
        let aad = additional_data(&sealed, algorithm, key_id);
        sealed.extend_from_slice(&nonce);

        let mut in_out = plaintext.to_vec();
        kek.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_slice()), &mut in_out)
            .map_err(|_| BackendError::Internal("sealing the private key failed".to_owned()))?;
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens a sealed key with whichever KEK sealed it.
    pub fn open(&self, key_id: &str, algorithm: Algorithm, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let parsed = SealedKey::parse(sealed)?;
        let kek = self.keks.get(parsed.kek_name).ok_or_else(|| {
            BackendError::Unavailable(format!(
                "key {key_id} is sealed with KEK {:?}, which is not configured",
                parsed.kek_name
            ))
        })?;
        let aad = additional_data(parsed.header, algorithm, key_id);
        let nonce = Nonce::try_assume_unique_for_key(parsed.nonce)
            .map_err(|_| BackendError::Internal(format!("sealed key {key_id} is malformed")))?;
        let mut in_out = Zeroizing::new(parsed.ciphertext.to_vec());
        let plaintext_len = kek
            .key
            .open_in_place(nonce, Aad::from(aad.as_slice()), in_out.as_mut_slice())
            .map_err(|_| {
                BackendError::Internal(format!(
                    "sealed key {key_id} does not open with KEK {:?} (wrong KEK or tampered data)",
                    parsed.kek_name
                ))
            })?
            .len();
        in_out.truncate(plaintext_len);
        Ok(in_out)
    }
}

/// The name of the KEK that sealed `handle`, if it is a sealed key this backend understands.
pub fn sealed_with(handle: &[u8]) -> Option<&str> {
    SealedKey::parse(handle).ok().map(|parsed| parsed.kek_name)
}

fn additional_data(header: &[u8], algorithm: Algorithm, key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + key_id.len() + 16);
    aad.extend_from_slice(AAD_LABEL);
    aad.push(0);
    aad.extend_from_slice(header);
    aad.extend_from_slice(algorithm.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

struct SealedKey<'a> {
    header: &'a [u8],
    kek_name: &'a str,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> SealedKey<'a> {
    fn parse(sealed: &'a [u8]) -> Result<SealedKey<'a>, BackendError> {
        let malformed = || BackendError::Internal("sealed key is malformed".to_owned());
        let (&format, rest) = sealed.split_first().ok_or_else(malformed)?;
        if format != FORMAT_V1 {
            return Err(BackendError::Internal(format!("sealed key has unknown format {format}")));
        }
        let (&name_len, rest) = rest.split_first().ok_or_else(malformed)?;
        let (name, rest) = rest.split_at_checked(usize::from(name_len)).ok_or_else(malformed)?;
        let kek_name = std::str::from_utf8(name).map_err(|_| malformed())?;
        let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or_else(malformed)?;
        if ciphertext.len() < TAG_LEN {
            return Err(malformed());
        }
        let header = sealed.get(..2 + usize::from(name_len)).ok_or_else(malformed)?;
        Ok(SealedKey { header, kek_name, nonce, ciphertext })
    }
}

/// A key re-sealed under the active KEK.
#[derive(Debug, Clone)]
pub struct Resealed {
    /// The new sealed document.
    pub handle: Vec<u8>,
    /// The KEK that sealed it (the active one).
    pub sealed_with: String,
}

/// The software backend.
pub struct SoftwareBackend {
    ring: KeyRing,
    cache: RwLock<HashMap<String, Arc<PrivateKey>>>,
}

impl fmt::Debug for SoftwareBackend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cache.read().unwrap_or_else(PoisonError::into_inner).len();
        formatter.debug_struct("SoftwareBackend").field("ring", &self.ring).field("cached_keys", &cached).finish()
    }
}

impl SoftwareBackend {
    /// The backend's name in the key table.
    pub const NAME: &'static str = "software";

    /// A backend sealing with `ring`.
    pub fn new(ring: KeyRing) -> SoftwareBackend {
        SoftwareBackend { ring, cache: RwLock::new(HashMap::new()) }
    }

    /// The key ring.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Re-seals a stored key under the active KEK. `Ok(None)` when it already is.
    pub fn reseal(&self, key_id: &str, algorithm: Algorithm, handle: &[u8]) -> Result<Option<Resealed>, BackendError> {
        let current = SealedKey::parse(handle)?.kek_name;
        if current == self.ring.active {
            return Ok(None);
        }
        let plaintext = self.ring.open(key_id, algorithm, handle)?;
        // Check the document before sealing it again, so a damaged key is not carried forward.
        let key = PrivateKey::from_pkcs8(algorithm, &plaintext)
            .map_err(|error| BackendError::Internal(format!("sealed key {key_id} holds an unusable key: {error}")))?;
        if key.key_id() != key_id {
            return Err(BackendError::Internal(format!("sealed key {key_id} holds a different key")));
        }
        let handle = self.ring.seal(key_id, algorithm, &plaintext)?;
        Ok(Some(Resealed { handle, sealed_with: self.ring.active.clone() }))
    }

    fn cached(&self, key_id: &str) -> Option<Arc<PrivateKey>> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner).get(key_id).cloned()
    }

    fn remember(&self, key: Arc<PrivateKey>) {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key.key_id().to_owned(), key);
    }

    fn unseal(&self, key_id: &str, algorithm: Algorithm, handle: &[u8]) -> Result<Arc<PrivateKey>, BackendError> {
        if let Some(key) = self.cached(key_id)
            && key.algorithm() == algorithm
        {
            return Ok(key);
        }
        let plaintext = self.ring.open(key_id, algorithm, handle)?;
        let key = PrivateKey::from_pkcs8(algorithm, &plaintext)
            .map_err(|error| BackendError::Internal(format!("sealed key {key_id} holds an unusable key: {error}")))?;
        if key.key_id() != key_id {
            return Err(BackendError::Internal(format!("sealed key {key_id} holds a different key")));
        }
        let key = Arc::new(key);
        self.remember(key.clone());
        Ok(key)
    }
}

#[async_trait]
impl KeyBackend for SoftwareBackend {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn generate(&self, algorithm: Algorithm) -> Result<NewKey, BackendError> {
        let key = PrivateKey::generate(algorithm)
            .map_err(|error| BackendError::Internal(format!("key generation failed: {error}")))?;
        let key_id = key.key_id().to_owned();
        let handle = self.ring.seal(&key_id, algorithm, &key.pkcs8())?;
        let public = key.public_key();
        self.remember(Arc::new(key));
        Ok(NewKey { key_id, public, handle, sealed_with: self.ring.active.clone() })
    }

    async fn sign(
        &self,
        key_id: &str,
        algorithm: Algorithm,
        handle: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let key = self.unseal(key_id, algorithm, handle)?;
        key.sign(message).map_err(|error| BackendError::Internal(format!("signing with key {key_id} failed: {error}")))
    }

    async fn destroy(&self, key_id: &str, _handle: &[u8]) -> Result<(), BackendError> {
        // The sealed document lives only in the service's table, which the service deletes.
        self.cache.write().unwrap_or_else(PoisonError::into_inner).remove(key_id);
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        if self.ring.keks.contains_key(&self.ring.active) {
            Ok(())
        } else {
            Err(BackendError::Unavailable("the active KEK is not loaded".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const HEX_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const HEX_B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

    fn kek(name: &str, hex: &str) -> Kek {
        Kek::from_hex(name, hex, "test").unwrap()
    }

    fn ring(keks: Vec<Kek>, active: &str) -> KeyRing {
        KeyRing::new(keks, Some(active)).unwrap()
    }

    fn write_kek_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn seal_then_open_round_trips() {
        let ring = ring(vec![kek("one", HEX_A)], "one");
        let sealed = ring.seal("abc", Algorithm::Ecdsa, b"secret pkcs8").unwrap();
        assert_eq!(sealed_with(&sealed), Some("one"));
        assert!(!sealed.windows(6).any(|window| window == b"secret"));
        assert_eq!(ring.open("abc", Algorithm::Ecdsa, &sealed).unwrap().as_slice(), b"secret pkcs8");
    }

    #[test]
    fn sealing_twice_uses_fresh_nonces() {
        let ring = ring(vec![kek("one", HEX_A)], "one");
        let first = ring.seal("abc", Algorithm::Ecdsa, b"same").unwrap();
        let second = ring.seal("abc", Algorithm::Ecdsa, b"same").unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn open_binds_key_id_and_algorithm() {
        let ring = ring(vec![kek("one", HEX_A)], "one");
        let sealed = ring.seal("abc", Algorithm::Ecdsa, b"secret").unwrap();
        assert!(matches!(ring.open("abd", Algorithm::Ecdsa, &sealed), Err(BackendError::Internal(_))));
        assert!(matches!(ring.open("abc", Algorithm::Ed25519, &sealed), Err(BackendError::Internal(_))));
    }

    #[test]
    fn tampered_or_truncated_sealed_keys_are_refused() {
        let ring = ring(vec![kek("one", HEX_A)], "one");
        let sealed = ring.seal("abc", Algorithm::Ecdsa, b"secret").unwrap();
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let tampered = r#"sealed key abc does not open with KEK "one" (wrong KEK or tampered data)"#;
        let internal = |result: Result<Zeroizing<Vec<u8>>, BackendError>| match result {
            Err(BackendError::Internal(text)) => text,
            other => panic!("expected an internal error, got {other:?}"),
        };
        assert_eq!(internal(ring.open("abc", Algorithm::Ecdsa, &flipped)), tampered);
        for cut in 0..sealed.len() {
            // Depending on where the cut falls: the framing breaks, the KEK name loses letters, or
            // the ciphertext is short.
            match ring.open("abc", Algorithm::Ecdsa, &sealed[..cut]) {
                Err(BackendError::Internal(text)) => {
                    assert!(text == "sealed key is malformed" || text == tampered, "cut at {cut}: {text}");
                }
                Err(BackendError::Unavailable(text)) => {
                    assert!(text.starts_with("key abc is sealed with KEK \"o"), "cut at {cut}: {text}");
                    assert!(text.ends_with("\", which is not configured"), "cut at {cut}: {text}");
                }
                other => panic!("cut at {cut}: expected a refusal, got {other:?}"),
            }
        }
        let mut other_format = sealed;
        other_format[0] = 2;
        assert_eq!(internal(ring.open("abc", Algorithm::Ecdsa, &other_format)), "sealed key has unknown format 2");
    }

    #[test]
    fn old_kek_still_opens_after_rotation() {
        let old_ring = ring(vec![kek("old", HEX_A)], "old");
        let sealed_old = old_ring.seal("abc", Algorithm::Ed25519, b"old secret").unwrap();
        let new_ring = ring(vec![kek("old", HEX_A), kek("new", HEX_B)], "new");
        assert_eq!(new_ring.open("abc", Algorithm::Ed25519, &sealed_old).unwrap().as_slice(), b"old secret");
        let sealed_new = new_ring.seal("abc", Algorithm::Ed25519, b"new secret").unwrap();
        assert_eq!(sealed_with(&sealed_new), Some("new"));
        // The old ring cannot open what the new KEK sealed.
        assert!(matches!(old_ring.open("abc", Algorithm::Ed25519, &sealed_new), Err(BackendError::Unavailable(_))));
    }

    #[test]
    fn wrong_kek_under_the_same_name_fails() {
        let sealed = ring(vec![kek("one", HEX_A)], "one").seal("abc", Algorithm::Ecdsa, b"secret").unwrap();
        let impostor = ring(vec![kek("one", HEX_B)], "one");
        let error = impostor.open("abc", Algorithm::Ecdsa, &sealed).unwrap_err();
        assert!(error.to_string().contains("wrong KEK"), "{error}");
    }

    #[test]
    fn ring_construction_rules() {
        assert!(matches!(KeyRing::new(vec![], None), Err(KekError::NoKeks)));
        assert!(matches!(KeyRing::new(vec![kek("a", HEX_A), kek("b", HEX_B)], None), Err(KekError::NoActive(_))));
        assert!(matches!(KeyRing::new(vec![kek("a", HEX_A)], Some("b")), Err(KekError::UnknownActive(_))));
        assert!(matches!(KeyRing::new(vec![kek("a", HEX_A), kek("a", HEX_B)], None), Err(KekError::Duplicate(_))));
        assert_eq!(KeyRing::new(vec![kek("a", HEX_A)], None).unwrap().active_name(), "a");
    }

    #[test]
    fn kek_names_and_hex_are_checked() {
        for bad in ["", "Upper", "has-dash", "has space", &"x".repeat(33)] {
            assert!(matches!(check_kek_name(bad), Err(KekError::InvalidName(_))), "{bad:?}");
        }
        check_kek_name("kek_2026_01").unwrap();
        assert!(matches!(Kek::from_hex("a", "00", "test"), Err(KekError::Malformed { .. })));
        assert!(matches!(Kek::from_hex("a", &"zz".repeat(32), "test"), Err(KekError::Malformed { .. })));
        Kek::from_hex("a", &format!("  {}\n", HEX_A.to_uppercase()), "test").unwrap();
    }

    #[test]
    fn kek_debug_never_prints_key_material() {
        let text = format!("{:?} {:?}", kek("one", HEX_A), ring(vec![kek("one", HEX_A)], "one"));
        assert!(text.contains("one"));
        assert!(!text.contains("0001020304"), "{text}");
    }

    #[test]
    fn kek_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
            let path = write_kek_file(dir.path(), "kek", HEX_A, mode);
            let error = Kek::from_file("one", &path).unwrap_err();
            assert!(matches!(error, KekError::InsecureFile(FileError::TooOpen { .. })), "mode {mode:o}: {error}");
            assert_eq!(
                error.to_string(),
                format!(
                    "KEK file {0} is readable by group or others (mode {mode:03o}); restrict it with `chmod 600 {0}`",
                    path.display()
                )
            );
        }
        for mode in [0o600, 0o400] {
            let path = write_kek_file(dir.path(), "kek", HEX_A, mode);
            assert_eq!(Kek::from_file("one", &path).unwrap().name(), "one");
        }
        let path = write_kek_file(dir.path(), "garbage", "not hex at all", 0o600);
        let error = Kek::from_file("one", &path).unwrap_err();
        assert!(matches!(error, KekError::Malformed { .. }));
        assert!(!error.to_string().contains("not hex at all"));
        assert!(matches!(Kek::from_file("one", &dir.path().join("absent")), Err(KekError::Unreadable { .. })));
    }

    #[test]
    fn load_combines_files_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_kek_file(dir.path(), "kek-file", HEX_A, 0o600);
        let specs = vec![
            KekSpec { name: "from_file".into(), file: Some(path) },
            KekSpec { name: "from_env".into(), file: None },
        ];
        let environment = vec![
            ("TUFA_SIGNER_KEK_FROM_ENV".to_owned(), HEX_B.to_owned()),
            ("TUFA_SIGNER_KEK_EXTRA".to_owned(), HEX_A.to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let ring = KeyRing::load(&specs, Some("from_env"), environment).unwrap();
        assert_eq!(ring.names().collect::<Vec<_>>(), ["extra", "from_env", "from_file"]);
        assert_eq!(ring.active_name(), "from_env");

        let error = KeyRing::load(&specs, Some("from_env"), Vec::new()).unwrap_err();
        assert!(matches!(error, KekError::MissingEnv { ref variable, .. } if variable == "TUFA_SIGNER_KEK_FROM_ENV"));
        assert!(matches!(KeyRing::load(&[], None, Vec::new()), Err(KekError::NoKeks)));
    }

    #[tokio::test]
    async fn backend_signs_with_generated_keys_and_reseals() {
        let backend = SoftwareBackend::new(ring(vec![kek("old", HEX_A)], "old"));
        for algorithm in [Algorithm::Ecdsa, Algorithm::Ed25519] {
            let new_key = backend.generate(algorithm).await.unwrap();
            assert_eq!(new_key.sealed_with, "old");
            assert_eq!(new_key.public.key_id(), new_key.key_id);
            let signature = backend.sign(&new_key.key_id, algorithm, &new_key.handle, b"message").await.unwrap();
            let method = if algorithm == Algorithm::Ecdsa { "ecdsa" } else { "eddsa" };
            new_key.public.verify(method, b"message", &signature).unwrap();

            // A fresh backend (empty cache) with a rotated ring still opens the key.
            let rotated = SoftwareBackend::new(ring(vec![kek("old", HEX_A), kek("new", HEX_B)], "new"));
            let resealed = rotated.reseal(&new_key.key_id, algorithm, &new_key.handle).unwrap().unwrap();
            assert_eq!(resealed.sealed_with, "new");
            assert!(rotated.reseal(&new_key.key_id, algorithm, &resealed.handle).unwrap().is_none());
            let only_new = SoftwareBackend::new(ring(vec![kek("new", HEX_B)], "new"));
            let signature = only_new.sign(&new_key.key_id, algorithm, &resealed.handle, b"again").await.unwrap();
            new_key.public.verify(method, b"again", &signature).unwrap();
            // The old handle needs the old KEK, which a backend without it cannot open.
            let fresh = SoftwareBackend::new(ring(vec![kek("new", HEX_B)], "new"));
            let error = fresh.sign(&new_key.key_id, algorithm, &new_key.handle, b"x").await.unwrap_err();
            assert!(matches!(error, BackendError::Unavailable(_)), "{error}");
        }
    }

    #[tokio::test]
    async fn backend_refuses_a_handle_for_another_key() {
        let backend = SoftwareBackend::new(ring(vec![kek("one", HEX_A)], "one"));
        let first = backend.generate(Algorithm::Ecdsa).await.unwrap();
        let second = backend.generate(Algorithm::Ecdsa).await.unwrap();
        let fresh = SoftwareBackend::new(ring(vec![kek("one", HEX_A)], "one"));
        match fresh.sign(&first.key_id, Algorithm::Ecdsa, &second.handle, b"m").await {
            Err(BackendError::Internal(text)) => assert_eq!(
                text,
                format!(r#"sealed key {} does not open with KEK "one" (wrong KEK or tampered data)"#, first.key_id)
            ),
            other => panic!("expected the handle to be refused, got {other:?}"),
        }
    }
}
