//! API tokens: `tufa_<id>_<secret>`, shown once when created and stored only as a hash of the secret.
//!
//! The id is 12 lowercase hex characters (48 random bits), public, and the key under which the token is
//! stored; the secret is 32 random bytes in unpadded base64url (43 characters). Only the hex SHA-256 of the
//! secret's text is stored. A plain hash suffices here, unlike for passwords: a memory-hard hash exists to
//! slow the guessing of low-entropy secrets from a stolen hash, and a 256-bit random secret cannot be
//! guessed however fast the hash is, so SHA-256 (preimage resistant) loses nothing and keeps each API-token
//! login a microsecond instead of tens of milliseconds of CPU. Hashes are compared in constant time.
//! Randomness comes from aws-lc-rs's system generator.

use std::fmt;
use std::fmt::Write as _;
use std::ops::Deref;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// The text every API token starts with.
pub const API_TOKEN_PREFIX: &str = "tufa_";

/// The length of a token id in characters (lowercase hex).
pub const ID_LEN: usize = 12;

/// The number of random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// The length of a secret's text: 32 bytes in unpadded base64url.
const SECRET_LEN: usize = 43;

/// The system random generator failed, so no token was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomError;

/// The secret part of an API token. It is wiped from memory when dropped and never printed; it has no `==`
/// (compare hashes with [`ApiTokenSecret::hash_matches`], which takes constant time).
#[derive(Clone)]
pub struct ApiTokenSecret(Zeroizing<String>);

impl fmt::Debug for ApiTokenSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ApiTokenSecret(<redacted>)")
    }
}

impl Deref for ApiTokenSecret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl ApiTokenSecret {
    /// Makes a new token: returns its id, its full text (to show once, never to store or log) and the
    /// hash of its secret (to store).
    pub fn generate() -> Result<(String, Zeroizing<String>, String), RandomError> {
        let rng = SystemRandom::new();
        let mut id_bytes = [0_u8; ID_LEN / 2];
        rng.fill(&mut id_bytes).map_err(|_| RandomError)?;
        let mut secret_bytes = Zeroizing::new([0_u8; SECRET_BYTES]);
        rng.fill(secret_bytes.as_mut()).map_err(|_| RandomError)?;
        let id = to_hex(&id_bytes);
        let secret = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret_bytes.as_ref()));
        let hash = Self::secret_hash(&secret);
        let mut text = Zeroizing::new(String::with_capacity(API_TOKEN_PREFIX.len() + ID_LEN + 1 + SECRET_LEN));
        text.push_str(API_TOKEN_PREFIX);
        text.push_str(&id);
        text.push('_');
        text.push_str(&secret);
        Ok((id, text, hash))
    }

    /// Splits a token's text into its id and secret, or `None` unless it has exactly the shape
    /// [`ApiTokenSecret::generate`] makes (prefix, 12 lowercase hex characters, `_`, 43 characters of
    /// canonical base64url for 32 bytes).
    pub fn parse(text: &str) -> Option<(String, ApiTokenSecret)> {
        let rest = text.strip_prefix(API_TOKEN_PREFIX)?;
        let (id, secret) = rest.split_at_checked(ID_LEN)?;
        let secret = secret.strip_prefix('_')?;
        if !id.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
            return None;
        }
        if secret.len() != SECRET_LEN {
            return None;
        }
        // The decoder refuses padding, other alphabets and non-zero trailing bits, so the text is canonical.
        let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(secret).ok()?);
        if decoded.len() != SECRET_BYTES {
            return None;
        }
        Some((id.to_owned(), ApiTokenSecret(Zeroizing::new(secret.to_owned()))))
    }

    /// The value stored for a secret: the lowercase hex SHA-256 of its text.
    pub fn secret_hash(secret: &str) -> String {
        to_hex(digest(&SHA256, secret.as_bytes()).as_ref())
    }

    /// Whether `secret` hashes to `stored_hex` (as [`ApiTokenSecret::secret_hash`] writes it), compared in
    /// constant time.
    pub fn hash_matches(stored_hex: &str, secret: &str) -> bool {
        let computed = Self::secret_hash(secret);
        aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), stored_hex.as_bytes()).is_ok()
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn generated_tokens_parse_and_match_their_hash() {
        let (id, text, hash) = ApiTokenSecret::generate().unwrap();
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()), "{id}");
        assert_eq!(text.len(), 5 + 12 + 1 + 43);
        assert!(text.starts_with(&format!("tufa_{id}_")));
        let (parsed_id, secret) = ApiTokenSecret::parse(&text).unwrap();
        assert_eq!(parsed_id, id);
        assert_eq!(hash, ApiTokenSecret::secret_hash(&secret));
        assert!(ApiTokenSecret::hash_matches(&hash, &secret));
        let (other_id, other_text, other_hash) = ApiTokenSecret::generate().unwrap();
        assert_ne!((other_id, other_text.as_str()), (id, text.as_str()));
        assert!(!ApiTokenSecret::hash_matches(&other_hash, &secret));
    }

    #[test]
    fn secret_hash_is_sha256_hex_of_the_text() {
        // echo -n AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8 | sha256sum
        assert_eq!(
            ApiTokenSecret::secret_hash(SECRET),
            "ea866a757e4c38babfa8127cbe9a409d3e1f93a00ff1488ff735fcf917afffd0"
        );
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn hash_matches_table() {
        let hash = ApiTokenSecret::secret_hash(SECRET);
        let wrong_secret = SECRET.replace('A', "B");
        for (stored, secret, expected) in [
            (hash.as_str(), SECRET, true),
            (hash.as_str(), wrong_secret.as_str(), false),
            (&hash[..63], SECRET, false),
            (&hash.to_uppercase(), SECRET, false),
            ("", SECRET, false),
            ("", "", false),
        ] {
            assert_eq!(ApiTokenSecret::hash_matches(stored, secret), expected, "{stored:?} {secret:?}");
        }
    }

    #[test]
    fn parse_is_strict() {
        let good = format!("tufa_0123456789ab_{SECRET}");
        assert_eq!(
            ApiTokenSecret::parse(&good).map(|(id, secret)| (id, secret.to_string())),
            Some(("0123456789ab".to_owned(), SECRET.to_owned()))
        );
        // The last character of 32 bytes in base64 carries 2 padding bits, which must be zero.
        let noncanonical = format!("tufa_0123456789ab_{}", SECRET.replace("Hh8", "Hh9"));
        for bad in [
            "".to_owned(),
            "tufa_".to_owned(),
            format!("Tufa_0123456789ab_{SECRET}"),
            format!("tufa-0123456789ab_{SECRET}"),
            format!("tufa_0123456789AB_{SECRET}"),
            format!("tufa_0123456789a_{SECRET}"),
            format!("tufa_0123456789abc_{SECRET}"),
            format!("tufa_0123456789ag_{SECRET}"),
            format!("tufa_0123456789ab-{SECRET}"),
            format!("tufa_0123456789ab_{SECRET}="),
            format!("tufa_0123456789ab_{SECRET}A"),
            format!("tufa_0123456789ab_{}", &SECRET[1..]),
            format!("tufa_0123456789ab_{}", SECRET.replace('A', "+")),
            format!(" tufa_0123456789ab_{SECRET}"),
            format!("tufa_0123456789ab_{SECRET}\n"),
            format!("tufa_é123456789ab_{SECRET}"),
            noncanonical,
        ] {
            assert_eq!(ApiTokenSecret::parse(&bad).map(|(id, _)| id), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let (_, secret) = ApiTokenSecret::parse(&format!("tufa_0123456789ab_{SECRET}")).unwrap();
        assert_eq!(format!("{secret:?}"), "ApiTokenSecret(<redacted>)");
    }
}
