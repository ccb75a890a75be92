//! Notary key objects and signatures: key types, TUF and canonical key IDs, signature
//! verification for every Notary method, and the software private keys the server and signer
//! sign with. All cryptography is aws-lc-rs.

use std::borrow::Cow;
use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsBigEndian as _, AsDer as _};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self as lc_signature, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::canonical;
use crate::x509::{self, SpkiKind};

/// Length of an Ed25519 public key.
const ED25519_PUBLIC_LEN: usize = 32;
/// Length of an Ed25519 signature.
const ED25519_SIGNATURE_LEN: usize = 64;
/// Largest RSA modulus aws-lc-rs verifies, in bits.
const MAX_RSA_BITS: usize = 8192;
/// Largest key material accepted in metadata, in bytes. A notary key is at most a certificate
/// chain of a few KiB; the bound keeps the work of re-reading a key for each signature that
/// names it (up to the signature limit) small.
pub const MAX_PUBLIC_KEY_BYTES: usize = 64 * 1024;

/// A Notary key type, the `keytype` string of a key object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `ecdsa`: `public` is a DER SubjectPublicKeyInfo.
    Ecdsa,
    /// `ecdsa-x509`: `public` is the PEM text of a certificate chain, leaf first.
    EcdsaX509,
    /// `rsa`: `public` is a DER SubjectPublicKeyInfo.
    Rsa,
    /// `rsa-x509`: `public` is the PEM text of a certificate chain, leaf first.
    RsaX509,
    /// `ed25519`: `public` is the raw 32-byte key.
    Ed25519,
    /// Any other string. Such keys are carried along but verify nothing.
    Other(String),
}

impl KeyType {
    /// The `keytype` string.
    pub fn as_str(&self) -> &str {
        match self {
            KeyType::Ecdsa => "ecdsa",
            KeyType::EcdsaX509 => "ecdsa-x509",
            KeyType::Rsa => "rsa",
            KeyType::RsaX509 => "rsa-x509",
            KeyType::Ed25519 => "ed25519",
            KeyType::Other(other) => other,
        }
    }

    /// Reads a `keytype` string; unknown strings are kept verbatim as [`KeyType::Other`].
    pub fn parse(keytype: &str) -> KeyType {
        match keytype {
            "ecdsa" => KeyType::Ecdsa,
            "ecdsa-x509" => KeyType::EcdsaX509,
            "rsa" => KeyType::Rsa,
            "rsa-x509" => KeyType::RsaX509,
            "ed25519" => KeyType::Ed25519,
            other => KeyType::Other(other.to_owned()),
        }
    }

    /// Whether `public` holds a PEM certificate chain rather than a bare key.
    pub fn is_x509(&self) -> bool {
        matches!(self, KeyType::EcdsaX509 | KeyType::RsaX509)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A signature method, the `method` string of a signature object (spec 2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureMethod {
    /// `ecdsa`: SHA-256, raw `r‖s`.
    Ecdsa,
    /// `rsapss`: PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsaPss,
    /// `rsapkcs1v15`: PKCS#1 v1.5 with SHA-256.
    RsaPkcs1v15,
    /// `pycrypto-pkcs#1 pss`: PSS as `rsapss`, for `rsa` keys whose `public` is PEM.
    PyCryptoPss,
    /// `eddsa`: pure Ed25519.
    EdDsa,
}

impl SignatureMethod {
    /// The canonical (lower-case) method string.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::Ecdsa => "ecdsa",
            SignatureMethod::RsaPss => "rsapss",
            SignatureMethod::RsaPkcs1v15 => "rsapkcs1v15",
            SignatureMethod::PyCryptoPss => "pycrypto-pkcs#1 pss",
            SignatureMethod::EdDsa => "eddsa",
        }
    }

    /// Reads a method string, ignoring ASCII case.
    pub fn parse(method: &str) -> Option<SignatureMethod> {
        [
            SignatureMethod::Ecdsa,
            SignatureMethod::RsaPss,
            SignatureMethod::RsaPkcs1v15,
            SignatureMethod::PyCryptoPss,
            SignatureMethod::EdDsa,
        ]
        .into_iter()
        .find(|candidate| candidate.as_str().eq_ignore_ascii_case(method))
    }
}

impl fmt::Display for SignatureMethod {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why a key could not be read, used, or created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A required member of a key object is absent.
    #[error("key object has no {0}")]
    MissingField(&'static str),
    /// A member of a key object has the wrong JSON type.
    #[error("key object member {0} has the wrong type")]
    WrongFieldType(&'static str),
    /// A base64 member does not decode.
    #[error("key object member {0} is not valid base64")]
    InvalidBase64(&'static str),
    /// A key object in metadata carries private key material.
    #[error("key object carries a private key; metadata may only hold public keys")]
    PrivateKeyPresent,
    /// The signature method is not one Notary knows.
    #[error("unknown signature method {0:?}")]
    UnknownMethod(String),
    /// The signature method cannot be used with the key's type.
    #[error("signature method {method} cannot be used with {keytype} keys")]
    MethodMismatch {
        /// The method as given.
        method: String,
        /// The key's type.
        keytype: String,
    },
    /// The public key bytes are malformed or hold the wrong kind of key.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The key material is larger than [`MAX_PUBLIC_KEY_BYTES`].
    #[error("key material of {bytes} bytes is larger than the limit of {MAX_PUBLIC_KEY_BYTES} bytes")]
    KeyTooLarge {
        /// Size of the decoded `public` bytes.
        bytes: usize,
    },
    /// The key material is not of the declared key type (for example an `ed25519` key carrying
    /// an ECDSA SubjectPublicKeyInfo), which notary clients cannot use.
    #[error("key declared {keytype} holds {found}")]
    MaterialMismatch {
        /// The declared `keytype`.
        keytype: String,
        /// What the material holds instead.
        found: &'static str,
    },
    /// An ECDSA key on a curve other than P-256 or P-384.
    #[error("unsupported elliptic curve; only P-256 and P-384 are supported")]
    UnsupportedCurve,
    /// An RSA key too short to be safe, or too long to verify.
    #[error("RSA key of {bits} bits is outside the accepted range of 2048 to 8192 bits")]
    RsaKeySize {
        /// Bit length of the modulus.
        bits: usize,
    },
    /// The signature has the wrong length for the key (for example a DER-encoded ECDSA
    /// signature).
    #[error("signature is {actual} bytes long; expected {expected}")]
    SignatureLength {
        /// The length the key requires.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The signature does not verify.
    #[error("signature is not valid")]
    BadSignature,
    /// PEM text is malformed.
    #[error("invalid PEM data: {0}")]
    InvalidPem(&'static str),
    /// PEM text holds no usable certificate.
    #[error("no certificate found in PEM data")]
    NoCertificate,
    /// A certificate does not parse.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A private key algorithm name is not `ecdsa` or `ed25519`.
    #[error("unknown key algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// Private key bytes were rejected.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(&'static str),
    /// The crypto library failed to generate a key.
    #[error("key generation failed")]
    KeyGeneration,
    /// The crypto library failed to sign.
    #[error("signing failed")]
    SigningFailed,
}

/// A public key as it appears in Notary metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    keytype: KeyType,
    public: Vec<u8>,
}

impl PublicKey {
    /// Builds a key from its type and its `public` bytes (already base64-decoded).
    pub fn new(keytype: KeyType, public: Vec<u8>) -> PublicKey {
        PublicKey { keytype, public }
    }

    /// The key type.
    pub fn keytype(&self) -> &KeyType {
        &self.keytype
    }

    /// The decoded `public` bytes.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The key object, `{"keytype":…,"keyval":{"private":null,"public":<base64>}}`.
    pub fn to_json(&self) -> Value {
        let mut keyval = Map::new();
        keyval.insert("private".to_owned(), Value::Null);
        keyval.insert("public".to_owned(), Value::String(STANDARD.encode(&self.public)));
        let mut object = Map::new();
        object.insert("keytype".to_owned(), Value::String(self.keytype.as_str().to_owned()));
        object.insert("keyval".to_owned(), Value::Object(keyval));
        Value::Object(object)
    }

    /// Reads a key object from metadata.
    ///
    /// `keytype` must be a string and `keyval.public` a base64 string; `keyval.private` must be
    /// absent or `null`. Other members are ignored (they do not take part in the key ID).
    pub fn from_json(value: &Value) -> Result<PublicKey, KeyError> {
        let object = value.as_object().ok_or(KeyError::WrongFieldType("key"))?;
        let keytype = object
            .get("keytype")
            .ok_or(KeyError::MissingField("keytype"))?
            .as_str()
            .ok_or(KeyError::WrongFieldType("keytype"))?;
        let keyval = object
            .get("keyval")
            .ok_or(KeyError::MissingField("keyval"))?
            .as_object()
            .ok_or(KeyError::WrongFieldType("keyval"))?;
        match keyval.get("private") {
            None | Some(Value::Null) => {}
            Some(_) => return Err(KeyError::PrivateKeyPresent),
        }
        let public = keyval
            .get("public")
            .ok_or(KeyError::MissingField("keyval.public"))?
            .as_str()
            .ok_or(KeyError::WrongFieldType("keyval.public"))?;
        let public = STANDARD.decode(public).map_err(|_| KeyError::InvalidBase64("keyval.public"))?;
        Ok(PublicKey::new(KeyType::parse(keytype), public))
    }

    /// The TUF key ID: lower-case hex SHA-256 of the canonical key object (spec 2.5).
    pub fn key_id(&self) -> String {
        // A key object holds only strings and null, which always have a canonical form, so the
        // fallback is never taken.
        let bytes = canonical::to_canonical(&self.to_json()).unwrap_or_default();
        hex::encode(sha256(&bytes))
    }

    /// The canonical key ID used by key stores and signer look-ups (spec 2.5): for `*-x509`
    /// keys the TUF ID of the bare key inside the first certificate, otherwise [`Self::key_id`].
    pub fn canonical_id(&self) -> Result<String, KeyError> {
        let bare_type = match self.keytype {
            KeyType::EcdsaX509 => KeyType::Ecdsa,
            KeyType::RsaX509 => KeyType::Rsa,
            _ => return Ok(self.key_id()),
        };
        let certificate = x509::first_certificate(&self.public)?;
        Ok(PublicKey::new(bare_type, certificate.spki_der).key_id())
    }

    /// Verifies `signature` over `message` (the canonical `signed` bytes) with signature
    /// method `method` (compared ignoring case), per spec 2.6.
    pub fn verify(&self, method: &str, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let parsed = SignatureMethod::parse(method).ok_or_else(|| KeyError::UnknownMethod(method.to_owned()))?;
        let mismatch = || KeyError::MethodMismatch {
            method: parsed.as_str().to_owned(),
            keytype: self.keytype.as_str().to_owned(),
        };
        match (parsed, &self.keytype) {
            (SignatureMethod::Ecdsa, KeyType::Ecdsa | KeyType::EcdsaX509) => {
                verify_ecdsa(&self.spki()?, message, signature)
            }
            (SignatureMethod::RsaPss, KeyType::Rsa | KeyType::RsaX509) => {
                verify_rsa(&self.spki()?, &lc_signature::RSA_PSS_2048_8192_SHA256, message, signature)
            }
            (SignatureMethod::RsaPkcs1v15, KeyType::Rsa | KeyType::RsaX509) => {
                verify_rsa(&self.spki()?, &lc_signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
            }
            (SignatureMethod::PyCryptoPss, KeyType::Rsa) => {
                let block = x509::PemBlocks::new(&self.public)
                    .next()
                    .ok_or(KeyError::InvalidPublicKey("no PEM block in the public key"))??;
                verify_rsa(&block.contents, &lc_signature::RSA_PSS_2048_8192_SHA256, message, signature)
            }
            (SignatureMethod::EdDsa, KeyType::Ed25519) => verify_ed25519(&self.public, message, signature),
            _ => Err(mismatch()),
        }
    }

    /// Checks that the key material is at most [`MAX_PUBLIC_KEY_BYTES`] long and is what the
    /// declared type says, the way notary clients read it: `ed25519` is 32 raw bytes of a valid
    /// point; `ecdsa` a DER SubjectPublicKeyInfo of an EC key (on P-256 and P-384 the point must
    /// be on the curve); `rsa` a DER (or, for PyCrypto keys, PEM) SubjectPublicKeyInfo of an RSA
    /// key; `ecdsa-x509`/`rsa-x509` a PEM bundle whose first certificate holds such a key. Keys of
    /// other types are carried along unchecked (they verify nothing).
    pub fn check_material(&self) -> Result<(), KeyError> {
        if self.public.len() > MAX_PUBLIC_KEY_BYTES {
            return Err(KeyError::KeyTooLarge { bytes: self.public.len() });
        }
        let mismatch =
            |found: &'static str| KeyError::MaterialMismatch { keytype: self.keytype.as_str().to_owned(), found };
        match &self.keytype {
            KeyType::Ed25519 => {
                if self.public.len() != ED25519_PUBLIC_LEN {
                    return Err(mismatch(describe_material(&self.public)));
                }
                ParsedPublicKey::new(&lc_signature::ED25519, &self.public)
                    .map(|_| ())
                    .map_err(|_| KeyError::InvalidPublicKey("malformed Ed25519 public key"))
            }
            KeyType::Ecdsa => check_ec_spki(&self.public)
                .map_err(|found| found.map_or_else(|| mismatch(describe_material(&self.public)), mismatch)),
            KeyType::EcdsaX509 => {
                let spki = x509::first_certificate(&self.public)?.spki_der;
                check_ec_spki(&spki).map_err(|found| mismatch(found.unwrap_or("a certificate of another key type")))
            }
            KeyType::Rsa => {
                let spki = if self.public.starts_with(b"-----BEGIN") {
                    x509::PemBlocks::new(&self.public)
                        .next()
                        .ok_or(KeyError::InvalidPublicKey("no PEM block in the public key"))??
                        .contents
                } else {
                    self.public.clone()
                };
                match x509::classify_spki_der(&spki) {
                    Ok(SpkiKind::Rsa { .. }) => Ok(()),
                    _ => Err(mismatch(describe_material(&spki))),
                }
            }
            KeyType::RsaX509 => {
                let spki = x509::first_certificate(&self.public)?.spki_der;
                match x509::classify_spki_der(&spki) {
                    Ok(SpkiKind::Rsa { .. }) => Ok(()),
                    Ok(SpkiKind::EcdsaP256 | SpkiKind::EcdsaP384 | SpkiKind::EcdsaOtherCurve) => {
                        Err(mismatch("a certificate of an ECDSA key"))
                    }
                    _ => Err(mismatch("a certificate of another key type")),
                }
            }
            KeyType::Other(_) => Ok(()),
        }
    }

    /// The DER SubjectPublicKeyInfo of an `ecdsa`/`rsa` key, or of the leaf certificate of a
    /// `*-x509` key.
    fn spki(&self) -> Result<Cow<'_, [u8]>, KeyError> {
        if self.keytype.is_x509() {
            Ok(Cow::Owned(x509::first_certificate(&self.public)?.spki_der))
        } else {
            Ok(Cow::Borrowed(&self.public))
        }
    }
}

/// Checks an ECDSA SubjectPublicKeyInfo; on failure says what it holds instead (`None`: it is
/// no SubjectPublicKeyInfo at all).
fn check_ec_spki(spki: &[u8]) -> Result<(), Option<&'static str>> {
    let algorithm: &'static dyn VerificationAlgorithm = match x509::classify_spki_der(spki) {
        Ok(SpkiKind::EcdsaP256) => &lc_signature::ECDSA_P256_SHA256_FIXED,
        Ok(SpkiKind::EcdsaP384) => &lc_signature::ECDSA_P384_SHA256_ASN1,
        Ok(SpkiKind::EcdsaOtherCurve) => return Ok(()),
        Ok(SpkiKind::Rsa { .. }) => return Err(Some("an RSA key")),
        Ok(SpkiKind::Other) => return Err(Some("a key of another algorithm")),
        Err(_) => return Err(None),
    };
    ParsedPublicKey::new(algorithm, spki).map(|_| ()).map_err(|_| Some("an EC point that is not on its curve"))
}

/// Names what unrecognised key material holds, for [`KeyError::MaterialMismatch`].
fn describe_material(public: &[u8]) -> &'static str {
    match x509::classify_spki_der(public) {
        Ok(SpkiKind::EcdsaP256 | SpkiKind::EcdsaP384 | SpkiKind::EcdsaOtherCurve) => "an ECDSA key",
        Ok(SpkiKind::Rsa { .. }) => "an RSA key",
        Ok(SpkiKind::Other) => "a key of another algorithm",
        Err(_) if public.starts_with(b"-----BEGIN") => "PEM text",
        Err(_) if public.len() == ED25519_PUBLIC_LEN => "32 raw bytes (an Ed25519 key)",
        Err(_) => "bytes that are not a public key of that type",
    }
}

fn verify_ecdsa(spki: &[u8], message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    // Notary hashes with SHA-256 whatever the curve, and sends r‖s, each padded to the size of
    // the curve.
    let (algorithm, scalar_len): (&'static dyn VerificationAlgorithm, usize) = match x509::classify_spki_der(spki)? {
        SpkiKind::EcdsaP256 => (&lc_signature::ECDSA_P256_SHA256_FIXED, 32),
        // aws-lc-rs has no fixed-length P-384/SHA-256 verifier, only the ASN.1 one.
        SpkiKind::EcdsaP384 => (&lc_signature::ECDSA_P384_SHA256_ASN1, 48),
        SpkiKind::EcdsaOtherCurve => return Err(KeyError::UnsupportedCurve),
        SpkiKind::Rsa { .. } | SpkiKind::Other => {
            return Err(KeyError::InvalidPublicKey("not an ECDSA key"));
        }
    };
    let expected = 2 * scalar_len;
    if signature.len() != expected {
        return Err(KeyError::SignatureLength { expected, actual: signature.len() });
    }
    let key =
        ParsedPublicKey::new(algorithm, spki).map_err(|_| KeyError::InvalidPublicKey("malformed ECDSA public key"))?;
    let signature: Cow<'_, [u8]> = if scalar_len == 32 {
        Cow::Borrowed(signature)
    } else {
        Cow::Owned(fixed_signature_to_der(signature, scalar_len)?)
    };
    key.verify_sig(message, &signature).map_err(|_| KeyError::BadSignature)
}

fn verify_rsa(
    spki: &[u8],
    parameters: &'static lc_signature::RsaParameters,
    message: &[u8],
    signature: &[u8],
) -> Result<(), KeyError> {
    let bits = match x509::classify_spki_der(spki)? {
        SpkiKind::Rsa { bits } => bits,
        _ => return Err(KeyError::InvalidPublicKey("not an RSA key")),
    };
    if !(x509::MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeyError::RsaKeySize { bits });
    }
    let key =
        ParsedPublicKey::new(parameters, spki).map_err(|_| KeyError::InvalidPublicKey("malformed RSA public key"))?;
    key.verify_sig(message, signature).map_err(|_| KeyError::BadSignature)
}

fn verify_ed25519(public: &[u8], message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    if public.len() != ED25519_PUBLIC_LEN {
        return Err(KeyError::InvalidPublicKey("an Ed25519 public key must be 32 bytes"));
    }
    if signature.len() != ED25519_SIGNATURE_LEN {
        return Err(KeyError::SignatureLength { expected: ED25519_SIGNATURE_LEN, actual: signature.len() });
    }
    let key = ParsedPublicKey::new(&lc_signature::ED25519, public)
        .map_err(|_| KeyError::InvalidPublicKey("malformed Ed25519 public key"))?;
    key.verify_sig(message, signature).map_err(|_| KeyError::BadSignature)
}

/// Re-encodes a fixed-length `r‖s` ECDSA signature as a DER `Ecdsa-Sig-Value`.
fn fixed_signature_to_der(signature: &[u8], scalar_len: usize) -> Result<Vec<u8>, KeyError> {
    let (r, s) = signature
        .split_at_checked(scalar_len)
        .ok_or(KeyError::SignatureLength { expected: 2 * scalar_len, actual: signature.len() })?;
    let mut body = Vec::with_capacity(signature.len() + 8);
    der_unsigned_integer(r, &mut body);
    der_unsigned_integer(s, &mut body);
    let mut der = Vec::with_capacity(body.len() + 4);
    der.push(0x30);
    der_length(body.len(), &mut der);
    der.extend_from_slice(&body);
    Ok(der)
}

fn der_unsigned_integer(big_endian: &[u8], out: &mut Vec<u8>) {
    let start = big_endian.iter().position(|byte| *byte != 0).unwrap_or(big_endian.len());
    let digits = big_endian.get(start..).unwrap_or_default();
    let needs_pad = digits.first().is_none_or(|first| first & 0x80 != 0);
    out.push(0x02);
    der_length(digits.len() + usize::from(needs_pad), out);
    if needs_pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant: Vec<u8> = bytes.iter().copied().skip_while(|byte| *byte == 0).collect();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(&significant);
    }
}

/// The algorithm of a software private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256.
    Ecdsa,
    /// Ed25519.
    Ed25519,
}

impl Algorithm {
    /// The algorithm name as notary-signer spells it (`ecdsa`, `ed25519`); it is also the
    /// `keytype` of the public key.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ecdsa => "ecdsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Reads an algorithm name.
    pub fn parse(name: &str) -> Result<Algorithm, KeyError> {
        match name {
            "ecdsa" => Ok(Algorithm::Ecdsa),
            "ed25519" => Ok(Algorithm::Ed25519),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

enum KeyPair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A software private key. Its PKCS#8 form is zeroized on drop and it never prints key
/// material.
pub struct PrivateKey {
    algorithm: Algorithm,
    pair: KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
    key_id: String,
}

const ECDSA_SIGNING: &lc_signature::EcdsaSigningAlgorithm = &lc_signature::ECDSA_P256_SHA256_FIXED_SIGNING;

impl PrivateKey {
    /// Generates a new key.
    pub fn generate(algorithm: Algorithm) -> Result<PrivateKey, KeyError> {
        let pkcs8 = match algorithm {
            Algorithm::Ecdsa => EcdsaKeyPair::generate(ECDSA_SIGNING)
                .and_then(|pair| pair.to_pkcs8v1())
                .map_err(|_| KeyError::KeyGeneration)?,
            Algorithm::Ed25519 => {
                Ed25519KeyPair::generate().and_then(|pair| pair.to_pkcs8()).map_err(|_| KeyError::KeyGeneration)?
            }
        };
        PrivateKey::from_pkcs8(algorithm, pkcs8.as_ref())
    }

    /// Loads a key from an unencrypted PKCS#8 document (v1, or v2 for Ed25519).
    pub fn from_pkcs8(algorithm: Algorithm, pkcs8: &[u8]) -> Result<PrivateKey, KeyError> {
        let pair = match algorithm {
            Algorithm::Ecdsa => EcdsaKeyPair::from_pkcs8(ECDSA_SIGNING, pkcs8).map(KeyPair::Ecdsa),
            Algorithm::Ed25519 => Ed25519KeyPair::from_pkcs8(pkcs8).map(KeyPair::Ed25519),
        }
        .map_err(|rejected| KeyError::InvalidPrivateKey(rejected.description_()))?;
        PrivateKey::from_pair(algorithm, pair, Zeroizing::new(pkcs8.to_vec()))
    }

    /// Loads a key from the plaintext a Go notary-signer stores (spec 4.6): for ECDSA a DER
    /// SEC 1 `ECPrivateKey` (PKCS#8 is accepted too), for Ed25519 96 bytes: public key, seed,
    /// public key.
    pub fn from_notary_signer_plaintext(algorithm: Algorithm, plaintext: &[u8]) -> Result<PrivateKey, KeyError> {
        let rejected = |rejected: aws_lc_rs::error::KeyRejected| KeyError::InvalidPrivateKey(rejected.description_());
        let pkcs8 = match algorithm {
            Algorithm::Ecdsa => {
                EcdsaKeyPair::from_private_key_der(ECDSA_SIGNING, plaintext).map_err(rejected)?.to_pkcs8v1()
            }
            Algorithm::Ed25519 => {
                let (public, rest) = plaintext
                    .split_at_checked(ED25519_PUBLIC_LEN)
                    .ok_or(KeyError::InvalidPrivateKey("Ed25519 key must be 96 bytes"))?;
                let (seed, public_again) =
                    rest.split_at_checked(32).ok_or(KeyError::InvalidPrivateKey("Ed25519 key must be 96 bytes"))?;
                if public_again != public {
                    return Err(KeyError::InvalidPrivateKey(
                        "Ed25519 key must be 96 bytes: public key, seed, public key",
                    ));
                }
                Ed25519KeyPair::from_seed_and_public_key(seed, public).map_err(rejected)?.to_pkcs8()
            }
        }
        .map_err(|_| KeyError::InvalidPrivateKey("cannot encode the key as PKCS#8"))?;
        PrivateKey::from_pkcs8(algorithm, pkcs8.as_ref())
    }

    fn from_pair(algorithm: Algorithm, pair: KeyPair, pkcs8: Zeroizing<Vec<u8>>) -> Result<PrivateKey, KeyError> {
        let public = match &pair {
            KeyPair::Ecdsa(pair) => {
                let spki = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| KeyError::InvalidPrivateKey("cannot encode the public key"))?;
                PublicKey::new(KeyType::Ecdsa, spki.as_ref().to_vec())
            }
            KeyPair::Ed25519(pair) => PublicKey::new(KeyType::Ed25519, pair.public_key().as_ref().to_vec()),
        };
        let key_id = public.key_id();
        Ok(PrivateKey { algorithm, pair, pkcs8, public, key_id })
    }

    /// The PKCS#8 document, to be stored encrypted.
    pub fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The plaintext a Go notary-signer would store for this key (see
    /// [`Self::from_notary_signer_plaintext`]).
    pub fn notary_signer_plaintext(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let failed = |_| KeyError::InvalidPrivateKey("cannot export the private key");
        match &self.pair {
            KeyPair::Ecdsa(pair) => {
                let der = pair.private_key().as_der().map_err(failed)?;
                Ok(Zeroizing::new(der.as_ref().to_vec()))
            }
            KeyPair::Ed25519(pair) => {
                let seed = pair.seed().map_err(failed)?;
                let seed = seed.as_be_bytes().map_err(failed)?;
                let public = self.public.public();
                let mut out = Zeroizing::new(Vec::with_capacity(96));
                out.extend_from_slice(public);
                out.extend_from_slice(seed.as_ref());
                out.extend_from_slice(public);
                Ok(out)
            }
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public half, as it appears in metadata.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The TUF key ID of the public half.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signature method for metadata signatures made with this key.
    pub fn method(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Ecdsa => SignatureMethod::Ecdsa.as_str(),
            Algorithm::Ed25519 => SignatureMethod::EdDsa.as_str(),
        }
    }

    /// Signs `message` (the canonical `signed` bytes): ECDSA gives SHA-256 then 64-byte `r‖s`,
    /// Ed25519 a 64-byte signature over the message itself.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signature = match &self.pair {
            KeyPair::Ecdsa(pair) => pair.sign(&SystemRandom::new(), message),
            KeyPair::Ed25519(pair) => pair.try_sign(message),
        }
        .map_err(|_| KeyError::SigningFailed)?;
        Ok(signature.as_ref().to_vec())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm.as_str())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    copy_digest(&digest::SHA256, data, &mut out);
    out
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    copy_digest(&digest::SHA512, data, &mut out);
    out
}

fn copy_digest(algorithm: &'static digest::Algorithm, data: &[u8], out: &mut [u8]) {
    let computed = digest::digest(algorithm, data);
    for (slot, byte) in out.iter_mut().zip(computed.as_ref()) {
        *slot = *byte;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::RsaKeyPair;
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, IsCa, KeyPair as RcgenKeyPair, PKCS_ECDSA_P256_SHA256,
        PKCS_RSA_SHA256, PublicKeyData as _, RsaKeySize,
    };
    use serde_json::json;

    const ROOT_JSON: &[u8] = include_bytes!("../tests/data/notary-0.7/root.json");
    const TARGETS_JSON: &[u8] = include_bytes!("../tests/data/notary-0.7/targets.json");
    const SNAPSHOT_JSON: &[u8] = include_bytes!("../tests/data/notary-0.7/snapshot.json");
    const TIMESTAMP_JSON: &[u8] = include_bytes!("../tests/data/notary-0.7/timestamp.json");
    const SHA1_P384_PEM: &[u8] = include_bytes!("../tests/data/sha1-ecdsa-p384.pem");
    const RSA1024_PEM: &[u8] = include_bytes!("../tests/data/rsa1024.pem");

    /// The fixture's root key (an `ecdsa-x509` key) and its canonical ID, observed as the name
    /// of the notary client's private key file.
    const ROOT_KEY_ID: &str = "fef8b12d427a6bbb039d8e1e9fc0613a13102bf63a07932fb50457118b691fc6";
    const ROOT_CANONICAL_ID: &str = "0cdcd2b393b808641d235400c416a865c4a39033d3dbc10a88162a92bb1978c7";

    /// A P-384 key and an OpenSSL signature (SHA-256 digest, raw r‖s) of `P384_MESSAGE`; the
    /// same key is in `sha1-ecdsa-p384.pem`.
    const P384_SPKI: &str = "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEeMoCB22QYczcBPu/KAvJG5YD6hLTsUVunIlb/o3MuMIinMcjbU5REkhZn8In2Tb/ARkHMg9VE97FWlP14UbDxedbmD6xoM+hIi2OAb9zsJ+0+ZN2Vrxx02j/UJ6fJ7w0";
    const P384_SIGNATURE: &str = "aOT8rpbZD3dBaXxP/IIbPoEOSA15pVCsHpUvpXzk2tGm+pTh7iSozSsUIBcaTkT/YJVWrBIjoFv0MlyRT1laVbTiLnSZH2vEXTsueUpe9BmsHZtJrLFx+lCsHySCa7dX";
    const P384_MESSAGE: &[u8] = b"tufa p384 message";

    fn b64(text: &str) -> Vec<u8> {
        STANDARD.decode(text).unwrap()
    }

    fn tampered(bytes: &[u8]) -> Vec<u8> {
        let mut copy = bytes.to_vec();
        copy[10] ^= 0x01;
        copy
    }

    /// Splits a metadata file into its canonical `signed` bytes and its signatures.
    /// A signature as (key ID, method, signature bytes).
    type RawSignature = (String, String, Vec<u8>);

    fn signed_and_signatures(file: &[u8]) -> (Value, Vec<u8>, Vec<RawSignature>) {
        let envelope: Value = serde_json::from_slice(file).unwrap();
        let message = canonical::to_canonical(&envelope["signed"]).unwrap();
        let signatures = envelope["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|signature| {
                (
                    signature["keyid"].as_str().unwrap().to_owned(),
                    signature["method"].as_str().unwrap().to_owned(),
                    b64(signature["sig"].as_str().unwrap()),
                )
            })
            .collect();
        (envelope["signed"].clone(), message, signatures)
    }

    fn fixture_keys() -> Vec<(String, PublicKey)> {
        let (signed, _, _) = signed_and_signatures(ROOT_JSON);
        signed["keys"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, key)| (id.clone(), PublicKey::from_json(key).unwrap()))
            .collect()
    }

    fn fixture_key(id: &str) -> PublicKey {
        fixture_keys().into_iter().find(|(key_id, _)| key_id == id).unwrap().1
    }

    /// A Notary-style root certificate: self-signed, CN = GUN, not a CA.
    fn root_cert(key: &RcgenKeyPair, gun: &str) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, gun);
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.self_signed(key).unwrap().pem()
    }

    #[test]
    fn key_types_round_trip() {
        for name in ["ecdsa", "ecdsa-x509", "rsa", "rsa-x509", "ed25519", "ECDSA", "x25519", ""] {
            assert_eq!(KeyType::parse(name).as_str(), name);
        }
        assert_eq!(KeyType::parse("ECDSA"), KeyType::Other("ECDSA".to_owned()));
        assert!(KeyType::EcdsaX509.is_x509() && KeyType::RsaX509.is_x509());
        assert!(!KeyType::Ecdsa.is_x509());
    }

    #[test]
    fn signature_methods_ignore_case() {
        let cases = [
            ("ecdsa", Some(SignatureMethod::Ecdsa)),
            ("ECDSA", Some(SignatureMethod::Ecdsa)),
            ("RsaPss", Some(SignatureMethod::RsaPss)),
            ("rsapkcs1v15", Some(SignatureMethod::RsaPkcs1v15)),
            ("PyCrypto-PKCS#1 PSS", Some(SignatureMethod::PyCryptoPss)),
            ("EdDSA", Some(SignatureMethod::EdDsa)),
            ("ed25519", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(SignatureMethod::parse(input), expected, "{input}");
        }
    }

    #[test]
    fn key_id_hashes_exact_canonical_bytes() {
        let cases = [
            (KeyType::Ed25519, b"abc".to_vec(), "ed25519", "YWJj"),
            (KeyType::Ecdsa, vec![0xff, 0xfe], "ecdsa", "//4="),
            (KeyType::Other("we\"ird".to_owned()), vec![], "we\\\"ird", ""),
        ];
        for (keytype, public, keytype_text, public_text) in cases {
            let expected_bytes =
                format!(r#"{{"keytype":"{keytype_text}","keyval":{{"private":null,"public":"{public_text}"}}}}"#);
            let key = PublicKey::new(keytype, public);
            assert_eq!(key.key_id(), hex::encode(sha256(expected_bytes.as_bytes())));
            assert_eq!(key.canonical_id().unwrap(), key.key_id());
        }
    }

    #[test]
    fn real_root_key_ids() {
        let keys = fixture_keys();
        assert_eq!(keys.len(), 4);
        let mut seen_types: Vec<&str> = Vec::new();
        for (id, key) in &keys {
            assert_eq!(&key.key_id(), id, "{}", key.keytype());
            seen_types.push(key.keytype().as_str());
        }
        seen_types.sort_unstable();
        assert_eq!(seen_types, ["ecdsa", "ecdsa", "ecdsa-x509", "ed25519"]);
        assert_eq!(fixture_key(ROOT_KEY_ID).canonical_id().unwrap(), ROOT_CANONICAL_ID);
    }

    #[test]
    fn real_metadata_signatures_verify() {
        let keys = fixture_keys();
        let mut methods = Vec::new();
        for file in [ROOT_JSON, TARGETS_JSON, SNAPSHOT_JSON, TIMESTAMP_JSON] {
            let (_, message, signatures) = signed_and_signatures(file);
            assert_eq!(signatures.len(), 1);
            for (key_id, method, signature) in signatures {
                let key = &keys.iter().find(|(id, _)| *id == key_id).unwrap().1;
                key.verify(&method, &message, &signature).unwrap();
                assert_eq!(key.verify(&method, &tampered(&message), &signature), Err(KeyError::BadSignature));
                methods.push(method);
            }
        }
        assert_eq!(methods, ["ecdsa", "ecdsa", "ecdsa", "eddsa"]);
    }

    #[test]
    fn real_root_certificate_passes_root_rules() {
        let root = fixture_key(ROOT_KEY_ID);
        let chain = x509::parse_pem_chain(root.public()).unwrap();
        let leaf = x509::leaf_certificate(&chain).unwrap();
        assert_eq!(leaf.public_key, x509::CertKey::EcdsaP256);
        let issued = leaf.not_before;
        assert_eq!(x509::check_root_certificate(leaf, "example.com/app", issued, true), Ok(()));
        // Re-encoding the chain reproduces the PEM the Go client wrote, so the key ID holds.
        let reencoded = PublicKey::new(KeyType::EcdsaX509, x509::encode_pem_chain(&chain).into_bytes());
        assert_eq!(reencoded.key_id(), ROOT_KEY_ID);
    }

    #[test]
    fn x509_key_canonical_id_is_bare_spki_key_id() {
        let key = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = root_cert(&key, "example.com/app");
        let cert_key = PublicKey::new(KeyType::EcdsaX509, pem.clone().into_bytes());
        let bare = PublicKey::new(KeyType::Ecdsa, key.subject_public_key_info());
        assert_eq!(cert_key.canonical_id().unwrap(), bare.key_id());
        assert_ne!(cert_key.key_id(), bare.key_id());
        // The ID does not depend on certificates after the first.
        let other = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let bundle = format!("{pem}{}", root_cert(&other, "intermediate"));
        let bundle_key = PublicKey::new(KeyType::EcdsaX509, bundle.into_bytes());
        assert_eq!(bundle_key.canonical_id().unwrap(), bare.key_id());

        let not_pem = PublicKey::new(KeyType::EcdsaX509, b"not pem".to_vec());
        assert_eq!(not_pem.canonical_id(), Err(KeyError::NoCertificate));
    }

    #[test]
    fn x509_key_verifies_with_leaf_key() {
        let key = RcgenKeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let signer = PrivateKey::from_pkcs8(Algorithm::Ecdsa, key.serialized_der()).unwrap();
        let cert_key = PublicKey::new(KeyType::EcdsaX509, root_cert(&key, "example.com/app").into_bytes());
        let message = b"{\"_type\":\"Root\"}";
        let signature = signer.sign(message).unwrap();
        cert_key.verify("ecdsa", message, &signature).unwrap();
        assert_eq!(cert_key.verify("ecdsa", &message[1..], &signature), Err(KeyError::BadSignature));
    }

    fn check_round_trip(algorithm: Algorithm) {
        let key = PrivateKey::generate(algorithm).unwrap();
        let public = key.public_key();
        assert_eq!(key.algorithm(), algorithm);
        assert_eq!(key.key_id(), public.key_id());
        let message = b"{\"_type\":\"Timestamp\",\"version\":1}";
        let signature = key.sign(message).unwrap();
        assert_eq!(signature.len(), 64);
        public.verify(key.method(), message, &signature).unwrap();
        public.verify(&key.method().to_uppercase(), message, &signature).unwrap();
        assert_eq!(public.verify(key.method(), &tampered(message), &signature), Err(KeyError::BadSignature));
        assert_eq!(public.verify(key.method(), message, &tampered(&signature)), Err(KeyError::BadSignature));
        assert_eq!(
            public.verify(key.method(), message, &signature[..63]),
            Err(KeyError::SignatureLength { expected: 64, actual: 63 })
        );
        // Reloading the PKCS#8 document gives the same key.
        let reloaded = PrivateKey::from_pkcs8(algorithm, &key.pkcs8()).unwrap();
        assert_eq!(reloaded.public_key(), public);
        public.verify(key.method(), message, &reloaded.sign(message).unwrap()).unwrap();
        // So does the Go notary-signer plaintext.
        let plaintext = key.notary_signer_plaintext().unwrap();
        let from_go = PrivateKey::from_notary_signer_plaintext(algorithm, &plaintext).unwrap();
        assert_eq!(from_go.public_key(), public);
    }

    #[test]
    fn ecdsa_sign_verify_round_trip() {
        check_round_trip(Algorithm::Ecdsa);
        let key = PrivateKey::generate(Algorithm::Ecdsa).unwrap();
        assert_eq!(key.method(), "ecdsa");
        assert_eq!(key.public_key().keytype(), &KeyType::Ecdsa);
        assert_eq!(x509::CertKey::from_spki(key.public_key().public()).unwrap(), x509::CertKey::EcdsaP256);
    }

    #[test]
    fn ed25519_sign_verify_round_trip() {
        check_round_trip(Algorithm::Ed25519);
        let key = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        assert_eq!(key.method(), "eddsa");
        assert_eq!(key.public_key().keytype(), &KeyType::Ed25519);
        assert_eq!(key.public_key().public().len(), 32);
    }

    #[test]
    fn der_encoded_ecdsa_signature_is_rejected() {
        let key = PrivateKey::generate(Algorithm::Ecdsa).unwrap();
        let asn1 = EcdsaKeyPair::from_pkcs8(&lc_signature::ECDSA_P256_SHA256_ASN1_SIGNING, &key.pkcs8()).unwrap();
        let message = b"message";
        let der = asn1.sign(&SystemRandom::new(), message).unwrap();
        let result = key.public_key().verify("ecdsa", message, der.as_ref());
        assert!(matches!(result, Err(KeyError::SignatureLength { expected: 64, .. })), "{result:?}");
    }

    #[test]
    fn p384_signatures_use_sha256() {
        let bare = PublicKey::new(KeyType::Ecdsa, b64(P384_SPKI));
        let cert = PublicKey::new(KeyType::EcdsaX509, SHA1_P384_PEM.to_vec());
        let signature = b64(P384_SIGNATURE);
        for key in [&bare, &cert] {
            key.verify("ecdsa", P384_MESSAGE, &signature).unwrap();
            assert_eq!(key.verify("ecdsa", b"other message", &signature), Err(KeyError::BadSignature));
            assert_eq!(
                key.verify("ecdsa", P384_MESSAGE, &signature[..64]),
                Err(KeyError::SignatureLength { expected: 96, actual: 64 })
            );
        }
        assert_eq!(cert.canonical_id().unwrap(), bare.key_id());
    }

    #[test]
    fn rsa_signatures() {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let spki = pair.public_key().as_der().unwrap().as_ref().to_vec();
        let message = b"{\"_type\":\"Targets\"}";
        let rng = SystemRandom::new();
        let sign = |encoding: &'static dyn lc_signature::RsaEncoding| {
            let mut signature = vec![0u8; pair.public_modulus_len()];
            pair.sign(encoding, &rng, message, &mut signature).unwrap();
            signature
        };
        let pss = sign(&lc_signature::RSA_PSS_SHA256);
        let pkcs1 = sign(&lc_signature::RSA_PKCS1_SHA256);
        let key = PublicKey::new(KeyType::Rsa, spki.clone());
        key.verify("rsapss", message, &pss).unwrap();
        key.verify("RSAPKCS1V15", message, &pkcs1).unwrap();
        assert_eq!(key.verify("rsapss", message, &pkcs1), Err(KeyError::BadSignature));
        assert_eq!(key.verify("rsapkcs1v15", message, &pss), Err(KeyError::BadSignature));
        assert_eq!(key.verify("rsapss", &tampered(message), &pss), Err(KeyError::BadSignature));

        // The PyCrypto method takes the key as PEM.
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&spki));
        let pem_key = PublicKey::new(KeyType::Rsa, pem.into_bytes());
        pem_key.verify("pycrypto-pkcs#1 pss", message, &pss).unwrap();
        assert_eq!(
            key.verify("pycrypto-pkcs#1 pss", message, &pss),
            Err(KeyError::InvalidPublicKey("no PEM block in the public key"))
        );
    }

    #[test]
    fn rsa_x509_signatures() {
        let key = RcgenKeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
        let pair = RsaKeyPair::from_pkcs8(key.serialized_der()).unwrap();
        let cert_key = PublicKey::new(KeyType::RsaX509, root_cert(&key, "example.com/app").into_bytes());
        let message = b"{\"_type\":\"Root\"}";
        let mut signature = vec![0u8; pair.public_modulus_len()];
        pair.sign(&lc_signature::RSA_PSS_SHA256, &SystemRandom::new(), message, &mut signature).unwrap();
        cert_key.verify("rsapss", message, &signature).unwrap();
        let bare = PublicKey::new(KeyType::Rsa, key.subject_public_key_info());
        assert_eq!(cert_key.canonical_id().unwrap(), bare.key_id());
    }

    #[test]
    fn verification_errors() {
        let ecdsa = PrivateKey::generate(Algorithm::Ecdsa).unwrap().public_key();
        let ed25519 = PrivateKey::generate(Algorithm::Ed25519).unwrap().public_key();
        let rsa_spki = x509::parse_pem_chain(RSA1024_PEM).unwrap()[0].spki_der.clone();
        let mismatch = |method: &str, keytype: &str| KeyError::MethodMismatch {
            method: method.to_owned(),
            keytype: keytype.to_owned(),
        };
        let sig64 = [1u8; 64];
        let cases: Vec<(&str, PublicKey, &str, KeyError)> = vec![
            ("unknown method", ecdsa.clone(), "hmac", KeyError::UnknownMethod("hmac".to_owned())),
            ("eddsa on ecdsa", ecdsa.clone(), "eddsa", mismatch("eddsa", "ecdsa")),
            ("rsapss on ecdsa", ecdsa.clone(), "rsapss", mismatch("rsapss", "ecdsa")),
            ("ecdsa on ed25519", ed25519.clone(), "ecdsa", mismatch("ecdsa", "ed25519")),
            ("ed25519 method name", ed25519.clone(), "ed25519", KeyError::UnknownMethod("ed25519".to_owned())),
            (
                "unknown key type",
                PublicKey::new(KeyType::Other("x".to_owned()), vec![0; 32]),
                "eddsa",
                mismatch("eddsa", "x"),
            ),
            (
                "pycrypto on rsa-x509",
                PublicKey::new(KeyType::RsaX509, RSA1024_PEM.to_vec()),
                "pycrypto-pkcs#1 pss",
                mismatch("pycrypto-pkcs#1 pss", "rsa-x509"),
            ),
            (
                "ecdsa key holding RSA",
                PublicKey::new(KeyType::Ecdsa, rsa_spki.clone()),
                "ecdsa",
                KeyError::InvalidPublicKey("not an ECDSA key"),
            ),
            (
                "rsa key holding ECDSA",
                PublicKey::new(KeyType::Rsa, ecdsa.public().to_vec()),
                "rsapss",
                KeyError::InvalidPublicKey("not an RSA key"),
            ),
            ("short RSA key", PublicKey::new(KeyType::Rsa, rsa_spki), "rsapss", KeyError::RsaKeySize { bits: 1024 }),
            (
                "short RSA certificate",
                PublicKey::new(KeyType::RsaX509, RSA1024_PEM.to_vec()),
                "rsapkcs1v15",
                KeyError::RsaKeySize { bits: 1024 },
            ),
            (
                "garbage ecdsa key",
                PublicKey::new(KeyType::Ecdsa, b"garbage".to_vec()),
                "ecdsa",
                KeyError::InvalidPublicKey("not a DER SubjectPublicKeyInfo"),
            ),
            (
                "ecdsa-x509 without PEM",
                PublicKey::new(KeyType::EcdsaX509, ecdsa.public().to_vec()),
                "ecdsa",
                KeyError::NoCertificate,
            ),
            (
                "short ed25519 key",
                PublicKey::new(KeyType::Ed25519, vec![0; 31]),
                "eddsa",
                KeyError::InvalidPublicKey("an Ed25519 public key must be 32 bytes"),
            ),
        ];
        for (name, key, method, expected) in cases {
            assert_eq!(key.verify(method, b"message", &sig64), Err(expected), "case {name}");
        }
    }

    #[test]
    fn unsupported_curve_is_rejected() {
        // A P-521 key (curve OID 1.3.132.0.35) with a dummy point.
        let mut spki = vec![
            0x30, 0x1a, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
            0x00, 0x23, 0x03, 0x06, 0x00,
        ];
        spki.extend_from_slice(&[4, 1, 2, 3, 4]);
        let key = PublicKey::new(KeyType::Ecdsa, spki);
        assert_eq!(key.verify("ecdsa", b"message", &[0; 132]), Err(KeyError::UnsupportedCurve));
    }

    #[test]
    fn key_material_must_match_its_declared_type() {
        // Real notary keys pass: ecdsa, ed25519 and ecdsa-x509.
        for (id, key) in fixture_keys() {
            assert_eq!(key.check_material(), Ok(()), "fixture key {id}");
        }
        let ecdsa = PrivateKey::generate(Algorithm::Ecdsa).unwrap().public_key();
        let ed25519 = PrivateKey::generate(Algorithm::Ed25519).unwrap().public_key();
        let rsa_cert = RSA1024_PEM.to_vec();
        let rsa_spki = x509::first_certificate(RSA1024_PEM).unwrap().spki_der;
        let ecdsa_cert = fixture_key(ROOT_KEY_ID).public().to_vec();
        let rsa_pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&rsa_spki));
        let mismatch =
            |keytype: &str, found: &'static str| Err(KeyError::MaterialMismatch { keytype: keytype.to_owned(), found });
        let mut cases: Vec<(KeyType, Vec<u8>, Result<(), KeyError>)> = vec![
            (KeyType::Rsa, rsa_spki.clone(), Ok(())),
            (KeyType::Rsa, rsa_pem.into_bytes(), Ok(())),
            (KeyType::RsaX509, rsa_cert.clone(), Ok(())),
            (KeyType::Ed25519, ecdsa.public().to_vec(), mismatch("ed25519", "an ECDSA key")),
            (KeyType::Ed25519, rsa_spki.clone(), mismatch("ed25519", "an RSA key")),
            (KeyType::Ed25519, vec![7; 31], mismatch("ed25519", "bytes that are not a public key of that type")),
            (KeyType::Ecdsa, ed25519.public().to_vec(), mismatch("ecdsa", "32 raw bytes (an Ed25519 key)")),
            (KeyType::Ecdsa, rsa_spki.clone(), mismatch("ecdsa", "an RSA key")),
            (KeyType::Ecdsa, ecdsa_cert.clone(), mismatch("ecdsa", "PEM text")),
            (KeyType::Rsa, ecdsa.public().to_vec(), mismatch("rsa", "an ECDSA key")),
            (KeyType::Rsa, ed25519.public().to_vec(), mismatch("rsa", "32 raw bytes (an Ed25519 key)")),
            (KeyType::EcdsaX509, rsa_cert, mismatch("ecdsa-x509", "an RSA key")),
            (KeyType::RsaX509, ecdsa_cert, mismatch("rsa-x509", "a certificate of an ECDSA key")),
            (KeyType::EcdsaX509, ecdsa.public().to_vec(), Err(KeyError::NoCertificate)),
            (KeyType::Other("future".into()), vec![1, 2, 3], Ok(())),
        ];
        cases.push((
            KeyType::Other("future".into()),
            vec![0; MAX_PUBLIC_KEY_BYTES + 1],
            Err(KeyError::KeyTooLarge { bytes: MAX_PUBLIC_KEY_BYTES + 1 }),
        ));
        for (keytype, public, expected) in cases {
            let name = keytype.to_string();
            assert_eq!(PublicKey::new(keytype, public).check_material(), expected, "{name}");
        }
        // A P-256 point that is not on the curve.
        let mut off_curve = ecdsa.public().to_vec();
        let last = off_curve.len() - 1;
        off_curve[last] ^= 0x01;
        assert_eq!(
            PublicKey::new(KeyType::Ecdsa, off_curve).check_material(),
            mismatch("ecdsa", "an EC point that is not on its curve")
        );
    }

    fn check_from_json(name: &str, value: Value, expected: Result<PublicKey, KeyError>) {
        assert_eq!(PublicKey::from_json(&value), expected, "case {name}");
    }

    #[test]
    fn key_objects_from_json() {
        let good = PublicKey::new(KeyType::Ed25519, b"abc".to_vec());
        check_from_json(
            "canonical",
            json!({"keytype": "ed25519", "keyval": {"private": null, "public": "YWJj"}}),
            Ok(good.clone()),
        );
        check_from_json(
            "no private, extra members",
            json!({"keytype": "ed25519", "keyval": {"public": "YWJj"}, "scheme": "x"}),
            Ok(good.clone()),
        );
        check_from_json(
            "unknown type kept",
            json!({"keytype": "x25519", "keyval": {"public": ""}}),
            Ok(PublicKey::new(KeyType::Other("x25519".to_owned()), vec![])),
        );
        let errors = [
            ("not an object", json!("key"), KeyError::WrongFieldType("key")),
            ("no keytype", json!({"keyval": {"public": "YWJj"}}), KeyError::MissingField("keytype")),
            (
                "numeric keytype",
                json!({"keytype": 1, "keyval": {"public": "YWJj"}}),
                KeyError::WrongFieldType("keytype"),
            ),
            ("no keyval", json!({"keytype": "ecdsa"}), KeyError::MissingField("keyval")),
            ("keyval not an object", json!({"keytype": "ecdsa", "keyval": "YWJj"}), KeyError::WrongFieldType("keyval")),
            (
                "no public",
                json!({"keytype": "ecdsa", "keyval": {"private": null}}),
                KeyError::MissingField("keyval.public"),
            ),
            (
                "public not a string",
                json!({"keytype": "ecdsa", "keyval": {"public": null}}),
                KeyError::WrongFieldType("keyval.public"),
            ),
            (
                "public not base64",
                json!({"keytype": "ecdsa", "keyval": {"public": "YWJj!"}}),
                KeyError::InvalidBase64("keyval.public"),
            ),
            (
                "public without padding",
                json!({"keytype": "ecdsa", "keyval": {"public": "YWI"}}),
                KeyError::InvalidBase64("keyval.public"),
            ),
            (
                "private key present",
                json!({"keytype": "ecdsa", "keyval": {"private": "YWJj", "public": "YWJj"}}),
                KeyError::PrivateKeyPresent,
            ),
            (
                "empty private string",
                json!({"keytype": "ecdsa", "keyval": {"private": "", "public": "YWJj"}}),
                KeyError::PrivateKeyPresent,
            ),
        ];
        for (name, value, expected) in errors {
            check_from_json(name, value, Err(expected));
        }
    }

    #[test]
    fn key_object_json_round_trip() {
        for key in fixture_keys().into_iter().map(|(_, key)| key) {
            let json = key.to_json();
            assert_eq!(json["keyval"]["private"], Value::Null);
            assert_eq!(PublicKey::from_json(&json).unwrap(), key);
        }
    }

    #[test]
    fn private_key_errors() {
        let ecdsa = PrivateKey::generate(Algorithm::Ecdsa).unwrap();
        let ed25519 = PrivateKey::generate(Algorithm::Ed25519).unwrap();
        assert!(matches!(
            PrivateKey::from_pkcs8(Algorithm::Ed25519, &ecdsa.pkcs8()),
            Err(KeyError::InvalidPrivateKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pkcs8(Algorithm::Ecdsa, &ed25519.pkcs8()),
            Err(KeyError::InvalidPrivateKey(_))
        ));
        assert!(matches!(PrivateKey::from_pkcs8(Algorithm::Ecdsa, b"junk"), Err(KeyError::InvalidPrivateKey(_))));
        let mut plaintext = ed25519.notary_signer_plaintext().unwrap().to_vec();
        plaintext[95] ^= 1;
        assert_eq!(
            PrivateKey::from_notary_signer_plaintext(Algorithm::Ed25519, &plaintext).unwrap_err(),
            KeyError::InvalidPrivateKey("Ed25519 key must be 96 bytes: public key, seed, public key")
        );
        assert_eq!(
            PrivateKey::from_notary_signer_plaintext(Algorithm::Ed25519, &plaintext[..50]).unwrap_err(),
            KeyError::InvalidPrivateKey("Ed25519 key must be 96 bytes")
        );
    }

    #[test]
    fn private_key_debug_hides_material() {
        for algorithm in [Algorithm::Ecdsa, Algorithm::Ed25519] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let printed = format!("{key:?}");
            assert_eq!(
                printed,
                format!("PrivateKey {{ algorithm: {:?}, key_id: {:?}, .. }}", algorithm.as_str(), key.key_id())
            );
            let pkcs8 = key.pkcs8();
            assert!(!printed.contains(&hex::encode(&pkcs8[pkcs8.len() - 8..])));
        }
    }

    #[test]
    fn algorithm_names() {
        for algorithm in [Algorithm::Ecdsa, Algorithm::Ed25519] {
            assert_eq!(Algorithm::parse(algorithm.as_str()), Ok(algorithm));
        }
        assert_eq!(Algorithm::parse("rsa"), Err(KeyError::UnknownAlgorithm("rsa".to_owned())));
    }

    #[test]
    fn digests() {
        assert_eq!(hex::encode(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            hex::encode(sha512(b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn fixed_signatures_to_der() {
        let cases: [(&[u8], usize, &[u8]); 3] = [
            (&[0, 1, 0, 2], 2, &[0x30, 6, 2, 1, 1, 2, 1, 2]),
            (&[0x80, 0, 0, 0], 2, &[0x30, 8, 2, 3, 0, 0x80, 0, 2, 1, 0]),
            (&[0, 0, 0x7f, 0xff], 2, &[0x30, 7, 2, 1, 0, 2, 2, 0x7f, 0xff]),
        ];
        for (fixed, scalar_len, der) in cases {
            assert_eq!(fixed_signature_to_der(fixed, scalar_len).unwrap(), der);
        }
        let mut long = Vec::new();
        der_length(300, &mut long);
        assert_eq!(long, [0x82, 0x01, 0x2c]);
    }
}
