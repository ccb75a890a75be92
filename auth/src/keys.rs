//! Public keys that check token signatures: read from a certificate's SubjectPublicKeyInfo, named by
//! their libtrust key ID, matched against a JWS `jwk` header, and used to verify a JWS signature.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::public_key::PublicKey as ParsedKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// A JWS signature algorithm that registry tokens may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Es256,
    Es384,
    Es512,
    Rs256,
    Rs384,
    Rs512,
}

impl Algorithm {
    /// Reads the header's `alg`; every other value, `none` and the HMAC algorithms included, is refused.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "ES384" => Some(Self::Es384),
            "ES512" => Some(Self::Es512),
            "RS256" => Some(Self::Rs256),
            "RS384" => Some(Self::Rs384),
            "RS512" => Some(Self::Rs512),
            _ => None,
        }
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureFailure {
    /// The key's type or curve cannot make signatures of the token's algorithm.
    KeyDoesNotFitAlgorithm,
    /// The signature does not verify under the key.
    BadSignature,
}

/// The material of an ECDSA or RSA public key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    /// An uncompressed curve point (`04 || x || y`); its length fixes the curve.
    Ec { point: Vec<u8> },
    /// An RSA key: the PKCS#1 `RSAPublicKey` DER and its modulus and exponent without leading zeros.
    Rsa { pkcs1: Vec<u8>, modulus: Vec<u8>, exponent: Vec<u8> },
}

/// A public key that may verify token signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    material: Material,
}

/// Lengths of uncompressed points on P-256, P-384 and P-521.
const P256_POINT: usize = 65;
const P384_POINT: usize = 97;
const P521_POINT: usize = 133;

impl PublicKey {
    /// Reads a parsed SubjectPublicKeyInfo holding an EC or RSA key; other key types give `None`.
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Option<Self> {
        let algorithm = &spki.algorithm.algorithm;
        let key_bytes = spki.subject_public_key.data.as_ref();
        if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let uncompressed = key_bytes.first() == Some(&4);
            let known_length = matches!(key_bytes.len(), P256_POINT | P384_POINT | P521_POINT);
            return (uncompressed && known_length)
                .then(|| Self { material: Material::Ec { point: key_bytes.to_vec() } });
        }
        if *algorithm == OID_PKCS1_RSAENCRYPTION {
            let Ok(ParsedKey::RSA(rsa)) = spki.parsed() else {
                return None;
            };
            return Some(Self {
                material: Material::Rsa {
                    pkcs1: key_bytes.to_vec(),
                    modulus: strip_leading_zeros(rsa.modulus).to_vec(),
                    exponent: strip_leading_zeros(rsa.exponent).to_vec(),
                },
            });
        }
        None
    }

    /// Whether a JWS `jwk` header names exactly this key.
    pub(crate) fn matches_jwk(&self, jwk: &Jwk) -> bool {
        let decode = |field: &Option<String>| field.as_deref().and_then(|text| URL_SAFE_NO_PAD.decode(text).ok());
        match (&self.material, jwk.kty.as_str()) {
            (Material::Ec { point }, "EC") => match (decode(&jwk.x), decode(&jwk.y)) {
                (Some(x), Some(y)) => {
                    let mut candidate = Vec::with_capacity(1 + x.len() + y.len());
                    candidate.push(4);
                    candidate.extend_from_slice(&x);
                    candidate.extend_from_slice(&y);
                    x.len() == y.len() && candidate == *point
                }
                _ => false,
            },
            (Material::Rsa { modulus, exponent, .. }, "RSA") => match (decode(&jwk.n), decode(&jwk.e)) {
                (Some(n), Some(e)) => strip_leading_zeros(&n) == modulus && strip_leading_zeros(&e) == exponent,
                _ => false,
            },
            _ => false,
        }
    }

    /// Verifies a JWS signature (raw `r || s` for ECDSA, PKCS#1 v1.5 for RSA) over `message`.
    pub(crate) fn verify(
        &self,
        algorithm: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureFailure> {
        let (verification, key): (&'static dyn VerificationAlgorithm, &[u8]) = match (algorithm, &self.material) {
            (Algorithm::Es256, Material::Ec { point }) if point.len() == P256_POINT => {
                (&signature::ECDSA_P256_SHA256_FIXED, point)
            }
            (Algorithm::Es384, Material::Ec { point }) if point.len() == P384_POINT => {
                (&signature::ECDSA_P384_SHA384_FIXED, point)
            }
            (Algorithm::Es512, Material::Ec { point }) if point.len() == P521_POINT => {
                (&signature::ECDSA_P521_SHA512_FIXED, point)
            }
            (Algorithm::Rs256, Material::Rsa { pkcs1, .. }) => (&signature::RSA_PKCS1_2048_8192_SHA256, pkcs1),
            (Algorithm::Rs384, Material::Rsa { pkcs1, .. }) => (&signature::RSA_PKCS1_2048_8192_SHA384, pkcs1),
            (Algorithm::Rs512, Material::Rsa { pkcs1, .. }) => (&signature::RSA_PKCS1_2048_8192_SHA512, pkcs1),
            _ => return Err(SignatureFailure::KeyDoesNotFitAlgorithm),
        };
        UnparsedPublicKey::new(verification, key).verify(message, signature).map_err(|_| SignatureFailure::BadSignature)
    }
}

/// The fields of a JWS `jwk` header that name an EC or RSA public key.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Jwk {
    /// The key type, `EC` or `RSA`.
    kty: String,
    /// The EC x coordinate, base64url.
    #[serde(default)]
    x: Option<String>,
    /// The EC y coordinate, base64url.
    #[serde(default)]
    y: Option<String>,
    /// The RSA modulus, base64url.
    #[serde(default)]
    n: Option<String>,
    /// The RSA public exponent, base64url.
    #[serde(default)]
    e: Option<String>,
    /// A certificate chain for the key, as in a JWS `x5c` header.
    #[serde(default)]
    x5c: Option<Vec<String>>,
}

impl Jwk {
    /// The certificate chain the key carries, if any.
    pub(crate) fn chain(&self) -> Option<&[String]> {
        self.x5c.as_deref()
    }
}

/// The libtrust key ID of a DER SubjectPublicKeyInfo: the first 240 bits of its SHA-256, in base32
/// without padding, as 12 groups of 4 characters separated by `:`.
pub(crate) fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = digest(&SHA256, spki_der);
    let encoded = base32_no_padding(hash.as_ref().get(..30).unwrap_or_default());
    let groups: Vec<&str> =
        encoded.as_bytes().chunks(4).map(|group| std::str::from_utf8(group).unwrap_or_default()).collect();
    groups.join(":")
}

/// RFC 4648 base32 with the standard alphabet and no padding.
fn base32_no_padding(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let symbol = |value: u16| ALPHABET.get(usize::from(value & 31)).copied().map(char::from).unwrap_or('A');
    let mut encoded = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u16::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            encoded.push(symbol(buffer >> bits));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        encoded.push(symbol(buffer << (5 - bits)));
    }
    encoded
}

/// The big-endian integer without its leading zero bytes.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|byte| *byte != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_no_padding(input.as_bytes()), expected, "input {input:?}");
        }
    }

    #[test]
    fn libtrust_key_id_has_twelve_groups_of_four() {
        // SHA-256 of the empty input starts e3b0c442 98fc1c14 …; its first 30 bytes in base32.
        let id = libtrust_key_id(b"");
        assert_eq!(id, "4OYM:IQUY:7QOB:JGX3:6TEJ:S35Z:EQT2:4QPE:MSNZ:GTFE:SWMR:W6CS");
        assert_eq!(id.split(':').count(), 12);
    }
}
