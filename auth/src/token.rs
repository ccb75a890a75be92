//! Verification of registry bearer tokens as Docker distribution's `registry/auth/token` verifies them:
//! a compact JWS whose key comes from an `x5c` chain to the root bundle, a trusted `jwk`, or a `kid`
//! naming a bundle key, followed by the issuer, audience and time checks of the claim set.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use crate::access::Access;
use crate::keys::{Algorithm, Jwk, PublicKey, SignatureFailure, libtrust_key_id};

/// The longest token accepted, in bytes; longer tokens are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// How far `exp` and `nbf` may be off from the clock, in seconds, as in distribution.
pub const LEEWAY_SECONDS: i64 = 60;

/// The most certificates accepted in an `x5c` header.
const MAX_CHAIN_LEN: usize = 8;

/// What a token must match to be accepted (notary-server's `auth.options` for the token mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The service name, which every token's `aud` must contain.
    pub service: String,
    /// The PEM bundle of root certificates whose keys sign tokens or certify their `x5c` chains.
    pub root_certificates: Vec<u8>,
}

/// Why the settings cannot make a verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The bundle is not a readable PEM file.
    #[error("the root certificate bundle is not valid PEM")]
    BadPem,
    /// The bundle holds no certificate.
    #[error("the root certificate bundle holds no certificate")]
    NoCertificates,
    /// A certificate of the bundle cannot be used.
    #[error("certificate {index} of the root certificate bundle cannot be used: {reason}")]
    BadCertificate {
        /// The position of the certificate in the bundle, from 0.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The part of a compact JWS an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPart {
    /// The protected header.
    Header,
    /// The claim set.
    Claims,
    /// The signature.
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Header => "header",
            Self::Claims => "claim set",
            Self::Signature => "signature",
        })
    }
}

/// Why a token is refused. No message repeats any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes long, more than the {max} accepted")]
    TooLong {
        /// The token's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not three dot-separated parts.
    #[error("token is not a compact JWS of three dot-separated parts")]
    NotCompact,
    /// A part is not unpadded base64url.
    #[error("token {0} is not valid base64url")]
    BadBase64(TokenPart),
    /// A part is not JSON of the expected shape.
    #[error("token {0} is not JSON of the expected shape")]
    BadJson(TokenPart),
    /// The header's `alg` is not an accepted algorithm.
    #[error("token algorithm is not one of ES256, ES384, ES512, RS256, RS384, RS512")]
    UnsupportedAlgorithm,
    /// The header lists critical extensions, which are not understood.
    #[error("token header lists critical extensions")]
    CriticalHeader,
    /// The header names no key.
    #[error("token header names no key (x5c, jwk or kid)")]
    NoKey,
    /// An `x5c` entry is not a base64 DER certificate.
    #[error("token x5c certificate {index} is not a base64 DER certificate")]
    BadCertificate {
        /// The position of the certificate in `x5c`, from 0.
        index: usize,
    },
    /// The `x5c` chain is empty or longer than accepted.
    #[error("token x5c chain must hold 1 to 8 certificates")]
    BadChainLength,
    /// The `x5c` chain does not lead to a root of the bundle.
    #[error("token certificate chain is not trusted: {0}")]
    UntrustedChain(String),
    /// The `jwk` header is not a key of the bundle.
    #[error("token jwk is not a trusted key")]
    UntrustedJwk,
    /// The `jwk` header carries a certificate chain whose leaf holds another key.
    #[error("token jwk is not the key of its certificate chain")]
    JwkChainMismatch,
    /// The `kid` header names no key of the bundle.
    #[error("token kid names no trusted key")]
    UnknownKeyId,
    /// The key cannot make signatures of the token's algorithm.
    #[error("token signing key does not fit the token algorithm")]
    KeyDoesNotFitAlgorithm,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// The `iss` claim is not the configured issuer.
    #[error("token issuer is not the trusted issuer")]
    WrongIssuer,
    /// The `aud` claim does not contain the service.
    #[error("token audience does not contain this service")]
    WrongAudience,
    /// The `exp` claim is missing.
    #[error("token has no expiry")]
    MissingExpiry,
    /// The token expired more than the leeway ago.
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` is further in the future than the leeway.
    #[error("token is not valid yet")]
    NotYetValid,
}

/// The verified claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `iss`.
    pub issuer: String,
    /// `sub`, empty when absent (an anonymous token).
    pub subject: String,
    /// `aud`, as a list even when the token holds a single string.
    pub audience: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
    /// `nbf`, seconds since the Unix epoch.
    pub not_before: Option<i64>,
    /// `iat`, seconds since the Unix epoch.
    pub issued_at: Option<i64>,
    /// `jti`.
    pub id: Option<String>,
    /// `access`; empty when absent.
    pub access: Vec<Access>,
}

/// The protected header fields that matter here.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jwk: Option<Jwk>,
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// An `aud` claim: one string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claim set as it is written.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    access: Option<Vec<Access>>,
}

/// A key of the root bundle with its libtrust key ID.
#[derive(Debug)]
struct TrustedKey {
    key_id: String,
    key: PublicKey,
}

/// Checks registry tokens against fixed settings.
#[derive(Debug)]
pub struct TokenVerifier {
    issuer: String,
    service: String,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    keys: Vec<TrustedKey>,
}

impl TokenVerifier {
    /// Reads the root bundle and keeps the settings.
    pub fn new(settings: TokenSettings) -> Result<Self, SettingsError> {
        let roots = CertificateDer::pem_slice_iter(&settings.root_certificates)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SettingsError::BadPem)?;
        if roots.is_empty() {
            return Err(SettingsError::NoCertificates);
        }
        let mut anchors = Vec::with_capacity(roots.len());
        let mut keys = Vec::with_capacity(roots.len());
        for (index, root) in roots.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(root)
                .map_err(|_| SettingsError::BadCertificate { index, reason: "not a valid X.509 certificate" })?;
            anchors.push(anchor.to_owned());
            let (_, certificate) = X509Certificate::from_der(root)
                .map_err(|_| SettingsError::BadCertificate { index, reason: "not a valid X.509 certificate" })?;
            let spki = certificate.public_key();
            let key = PublicKey::from_spki(spki)
                .ok_or(SettingsError::BadCertificate { index, reason: "its key is neither ECDSA nor RSA" })?;
            keys.push(TrustedKey { key_id: libtrust_key_id(spki.raw), key });
        }
        Ok(Self { issuer: settings.issuer, service: settings.service, roots, anchors, keys })
    }

    /// The libtrust key IDs of the bundle's keys, in bundle order (the values a `kid` header may take).
    pub fn trusted_key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|trusted| trusted.key_id.as_str())
    }

    /// Verifies a token at time `now` and returns its claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len(), max: MAX_TOKEN_LEN });
        }
        let mut parts = token.split('.');
        let (Some(header_text), Some(claims_text), Some(signature_text), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotCompact);
        };
        let header: Header = decode_json(header_text, TokenPart::Header)?;
        let algorithm = Algorithm::from_name(&header.alg).ok_or(TokenError::UnsupportedAlgorithm)?;
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let claims_bytes = decode_base64url(claims_text, TokenPart::Claims)?;
        let signature = decode_base64url(signature_text, TokenPart::Signature)?;
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let now_seconds = since_epoch.as_secs();

        let key = self.signing_key(&header, now_seconds)?;
        let signed_len = header_text.len() + 1 + claims_text.len();
        let signed = token.as_bytes().get(..signed_len).ok_or(TokenError::NotCompact)?;
        key.verify(algorithm, signed, &signature).map_err(|failure| match failure {
            SignatureFailure::KeyDoesNotFitAlgorithm => TokenError::KeyDoesNotFitAlgorithm,
            SignatureFailure::BadSignature => TokenError::BadSignature,
        })?;

        let raw: RawClaims =
            serde_json::from_slice(&claims_bytes).map_err(|_| TokenError::BadJson(TokenPart::Claims))?;
        self.check_claims(raw, i128::try_from(since_epoch.as_nanos()).unwrap_or(i128::MAX))
    }

    /// Finds the key that must have signed the token: `x5c`, else `jwk`, else `kid`.
    ///
    /// A `jwk` is trusted when it is exactly a key of the bundle (distribution compares libtrust key IDs,
    /// which name the same keys), or when it carries an `x5c` chain to the bundle whose leaf holds it.
    fn signing_key(&self, header: &Header, now_seconds: u64) -> Result<PublicKey, TokenError> {
        // As in distribution, an empty `x5c` list counts as absent.
        if let Some(chain) = header.x5c.as_ref().filter(|chain| !chain.is_empty()) {
            return self.chain_key(chain, now_seconds);
        }
        if let Some(jwk) = &header.jwk {
            if let Some(chain) = jwk.chain() {
                let key = self.chain_key(chain, now_seconds)?;
                return if key.matches_jwk(jwk) { Ok(key) } else { Err(TokenError::JwkChainMismatch) };
            }
            return self
                .keys
                .iter()
                .find(|trusted| trusted.key.matches_jwk(jwk))
                .map(|trusted| trusted.key.clone())
                .ok_or(TokenError::UntrustedJwk);
        }
        if let Some(kid) = &header.kid {
            return self
                .keys
                .iter()
                .find(|trusted| trusted.key_id == *kid)
                .map(|trusted| trusted.key.clone())
                .ok_or(TokenError::UnknownKeyId);
        }
        Err(TokenError::NoKey)
    }

    /// Verifies an `x5c` chain to the bundle and returns the leaf's key.
    ///
    /// A leaf that is itself a bundle certificate is trusted as it is (distribution's Go verifier accepts
    /// such a leaf even when it is a CA certificate, as `openssl req -x509` makes them), provided it is
    /// within its validity period. Any other leaf must chain through the other `x5c` certificates to a
    /// bundle root; extended key usages are not restricted, as with Go's `ExtKeyUsageAny`.
    fn chain_key(&self, chain: &[String], now_seconds: u64) -> Result<PublicKey, TokenError> {
        if chain.is_empty() || chain.len() > MAX_CHAIN_LEN {
            return Err(TokenError::BadChainLength);
        }
        let certificates = chain
            .iter()
            .enumerate()
            .map(|(index, text)| {
                STANDARD.decode(text).map(CertificateDer::from).map_err(|_| TokenError::BadCertificate { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Some((leaf_der, intermediates)) = certificates.split_first() else {
            return Err(TokenError::BadChainLength);
        };
        let (rest, leaf) = X509Certificate::from_der(leaf_der).map_err(|_| TokenError::BadCertificate { index: 0 })?;
        if !rest.is_empty() {
            return Err(TokenError::BadCertificate { index: 0 });
        }
        if self.roots.iter().any(|root| root.as_ref() == leaf_der.as_ref()) {
            let now = ASN1Time::from_timestamp(i64::try_from(now_seconds).unwrap_or(i64::MAX))
                .map_err(|_| TokenError::UntrustedChain("the current time is out of range".to_owned()))?;
            if !leaf.validity().is_valid_at(now) {
                return Err(TokenError::UntrustedChain("the certificate is expired or not yet valid".to_owned()));
            }
        } else {
            let end_entity = EndEntityCert::try_from(leaf_der).map_err(|_| TokenError::BadCertificate { index: 0 })?;
            end_entity
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &self.anchors,
                    intermediates,
                    UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_seconds)),
                    AnyExtendedKeyUsage,
                    None,
                    None,
                )
                .map_err(|error| TokenError::UntrustedChain(format!("{error:?}")))?;
        }
        PublicKey::from_spki(leaf.public_key()).ok_or(TokenError::KeyDoesNotFitAlgorithm)
    }

    /// Checks issuer, audience and times (`now_nanos` since the epoch, compared exactly as Go compares
    /// times), and returns the claims.
    fn check_claims(&self, raw: RawClaims, now_nanos: i128) -> Result<Claims, TokenError> {
        const NANOS: i128 = 1_000_000_000;
        let issuer = raw.iss.unwrap_or_default();
        if issuer != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let audience = match raw.aud {
            Some(Audience::One(one)) => vec![one],
            Some(Audience::Many(many)) => many,
            None => Vec::new(),
        };
        if !audience.contains(&self.service) {
            return Err(TokenError::WrongAudience);
        }
        let expires_at = raw.exp.ok_or(TokenError::MissingExpiry)?;
        if now_nanos > (i128::from(expires_at) + i128::from(LEEWAY_SECONDS)) * NANOS {
            return Err(TokenError::Expired);
        }
        if let Some(not_before) = raw.nbf
            && now_nanos < (i128::from(not_before) - i128::from(LEEWAY_SECONDS)) * NANOS
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(Claims {
            issuer,
            subject: raw.sub.unwrap_or_default(),
            audience,
            expires_at,
            not_before: raw.nbf,
            issued_at: raw.iat,
            id: raw.jti,
            access: raw.access.unwrap_or_default(),
        })
    }
}

/// Accepts any extended key usage, as Go's `x509.ExtKeyUsageAny` does, but refuses a malformed extension.
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// Decodes one unpadded base64url part.
fn decode_base64url(text: &str, part: TokenPart) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| TokenError::BadBase64(part))
}

/// Decodes one base64url part holding JSON.
fn decode_json<T: for<'de> Deserialize<'de>>(text: &str, part: TokenPart) -> Result<T, TokenError> {
    let bytes = decode_base64url(text, part)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::BadJson(part))
}

#[cfg(test)]
mod tests;
