//! The server's key-encryption key (KEK): read from `TUFA_KEK` or from the KEK file, which is
//! created owner-only with 32 random bytes when missing. The KEK seals the in-process signer's
//! private keys (see [`crate::signing::SealingKey`]); losing it makes them unreadable.

use std::fmt;
use std::io;
use std::path::Path;

use tufa_common::files::{self, Access, FileError};
use zeroize::Zeroizing;

use crate::config::Config;

/// A KEK file longer than this cannot be a 64-character hex key plus whitespace.
const MAX_KEK_FILE_BYTES: u64 = 1024;
/// What error messages call the file.
const WHAT: &str = "key-encryption key file";
/// What to change when the KEK file's directory is not writable.
const HINT: &str = "choose a writable --kek-file or --data-dir, or fix the owner of its directory";

/// Why the key-encryption key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// The key is not 32 bytes written as 64 hex characters.
    #[error("invalid key-encryption key in {origin}: {reason}")]
    Format {
        /// `TUFA_KEK` or the key file's path.
        origin: String,
        /// What is wrong (the key material is never quoted).
        reason: String,
    },
    /// The key file cannot be read or created, or group or others may read it.
    #[error(transparent)]
    File(#[from] FileError),
}

/// 32 key bytes, zeroized on drop.
#[derive(Clone)]
pub(crate) struct KekMaterial(Zeroizing<[u8; 32]>);

impl KekMaterial {
    /// Parses 64 hex characters, ignoring surrounding whitespace. Errors never quote the input.
    pub(crate) fn from_hex(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if trimmed.len() != 64 {
            return Err(format!("expected 64 hex characters (32 bytes), found {} characters", trimmed.len()));
        }
        hex::decode_to_slice(trimmed, key.as_mut_slice())
            .map_err(|_| "expected only hex digits 0-9 and a-f".to_owned())?;
        Ok(Self(key))
    }

    fn generate() -> Result<Self, io::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut_slice())
            .map_err(|_| io::Error::other("the system random number generator failed"))?;
        Ok(Self(key))
    }
}

impl fmt::Debug for KekMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KekMaterial([redacted])")
    }
}

/// The key-encryption key that seals the in-process signer's private keys at rest.
///
/// `Debug` shows only the [`Kek::id`]; the key bytes are zeroized on drop.
pub struct Kek {
    /// A public label for rows sealed under this key: the first 16 hex characters of SHA-256(key).
    pub id: String,
    key: Zeroizing<[u8; 32]>,
}

impl Kek {
    /// The 32 key bytes.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn new(material: KekMaterial) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material.0.as_slice());
        let id = hex::encode(digest.as_ref().get(..8).unwrap_or_default());
        Self { id, key: material.0 }
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).field("key", &"[redacted]").finish()
    }
}

/// Returns the key-encryption key: from `TUFA_KEK` if set, else from [`Config::kek_file`], which is
/// created with 32 random bytes (mode 0600, its directory 0700 if missing) when it does not exist.
///
/// The file holds the key as 64 hex characters; surrounding whitespace is ignored. A file readable by
/// group or others is refused. Losing this key makes every sealed signing key unreadable: back it up.
pub fn load_or_create_kek(config: &Config) -> Result<Kek, KekError> {
    if let Some(material) = &config.kek_from_env {
        return Ok(Kek::new(material.clone()));
    }
    let path = &config.kek_file;
    match read_kek_file(path) {
        Ok(material) => Ok(Kek::new(material)),
        Err(KekError::File(error)) if error.io_kind() == Some(io::ErrorKind::NotFound) => {
            match create_kek_file(path) {
                Ok(material) => {
                    let kek = Kek::new(material);
                    tracing::warn!(
                        path = %path.display(),
                        kek.id = %kek.id,
                        "generated a new key-encryption key; back this file up, without it the sealed signing keys cannot be recovered"
                    );
                    Ok(kek)
                }
                // Another process created it between our read and our create: use theirs.
                Err(KekError::File(error)) if error.io_kind() == Some(io::ErrorKind::AlreadyExists) => {
                    read_kek_file(path).map(Kek::new)
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

fn read_kek_file(path: &Path) -> Result<KekMaterial, KekError> {
    let file = files::open_owner_only(WHAT, path)?;
    let format = |reason: String| KekError::Format { origin: path.display().to_string(), reason };
    let bytes = files::read_limited_from(WHAT, path, file, MAX_KEK_FILE_BYTES).map_err(|error| match error {
        FileError::TooLarge { max_bytes, .. } => format(format!("file is larger than {max_bytes} bytes")),
        other => KekError::File(other),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format("the file is not UTF-8 text".to_owned()))?;
    KekMaterial::from_hex(text).map_err(format)
}

fn create_kek_file(path: &Path) -> Result<KekMaterial, KekError> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        files::create_private_dir(parent).map_err(|error| error.with_hint(HINT))?;
    }
    let material = KekMaterial::generate().map_err(|error| KekError::Format {
        origin: path.display().to_string(),
        reason: format!("cannot generate a key: {error}"),
    })?;
    let mut text = Zeroizing::new(hex::encode(material.0.as_slice()));
    text.push('\n');
    files::write_new_file(path, text.as_bytes(), Access::Private, false).map_err(|error| error.with_hint(HINT))?;
    Ok(material)
}
