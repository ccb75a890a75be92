//! Issuing registry tokens as the built-in token service: ES256 compact JWS with an `x5c` chain, in the
//! shape Docker distribution's token verifier (and this crate's [`TokenVerifier`](crate::TokenVerifier))
//! accepts.
//!
//! The header is `{"typ":"JWT","alg":"ES256","x5c":[leaf, CA]}` with standard base64 DER certificates, so
//! a consumer whose root bundle holds the CA verifies the leaf's chain (Go with `ExtKeyUsageAny` and every
//! certificate's validity period) and takes the key from the leaf. The claims are `iss`, `sub`, `aud` (one
//! string, as distribution v2.7.1 reads it), `exp`, `nbf` and `iat` (whole seconds; `nbf` is `now`, since
//! verifiers allow 60 s of clock skew), a random 128-bit `jti` in hex, and `access` (an empty list for a
//! token without access, as the notary CLI's anonymous reads need). The signature is ECDSA P-256 SHA-256
//! as fixed-length r||s, as JWS requires, made by aws-lc-rs with a fresh random nonce.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::access::Access;
use crate::apitoken::to_hex;

/// The most certificates a chain may hold (as the verifier accepts).
const MAX_CHAIN_LEN: usize = 8;

/// Why an issuer cannot be built or a token issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The signing key is not a PKCS#8 ECDSA P-256 key.
    #[error("the token signing key is not a PKCS#8 ECDSA P-256 key")]
    BadKey,
    /// The chain is empty or longer than accepted.
    #[error("the token certificate chain must hold 1 to 8 certificates")]
    BadChainLength,
    /// A chain entry is not a DER certificate.
    #[error("certificate {index} of the token certificate chain is not a valid X.509 certificate")]
    BadCertificate {
        /// The position in the chain, from 0 (the leaf).
        index: usize,
    },
    /// The leaf certificate does not hold the signing key's public key.
    #[error("the token signing key does not match the first certificate of the chain")]
    KeyDoesNotMatchCertificate,
    /// The issuer name is empty.
    #[error("the token issuer name is empty")]
    EmptyIssuer,
    /// The audience is empty.
    #[error("the token audience (service) is empty")]
    EmptyAudience,
    /// The lifetime is under one second.
    #[error("the token lifetime must be at least one second")]
    LifetimeTooShort,
    /// `now` is before 1970, or `now` plus the lifetime is out of range.
    #[error("the token times are out of range")]
    TimeOutOfRange,
    /// The system random generator or the signer failed.
    #[error("signing the token failed")]
    Signing,
}

/// A token and what the token endpoint answers with it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// Its lifetime in seconds (`expires_in`).
    pub expires_in: u64,
    /// When it was issued (`issued_at`).
    pub issued_at: SystemTime,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// The protected header, in the order it is written.
#[derive(Serialize)]
struct Header<'a> {
    typ: &'a str,
    alg: &'a str,
    x5c: Vec<String>,
}

/// The claim set, in the order it is written.
#[derive(Serialize)]
struct ClaimSet<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [Access],
}

/// Signs registry tokens with one key and certificate chain.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    header: String,
    issuer: String,
    rng: SystemRandom,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("TokenIssuer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Builds an issuer from the signing key (PKCS#8 DER), its chain (DER, the signing certificate first,
    /// then the CA) and the issuer name (`iss`). The first certificate must hold the key.
    pub fn new(signing_key_pkcs8: &[u8], chain: Vec<Vec<u8>>, issuer: String) -> Result<Self, IssueError> {
        if issuer.is_empty() {
            return Err(IssueError::EmptyIssuer);
        }
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, signing_key_pkcs8)
            .map_err(|_| IssueError::BadKey)?;
        if chain.is_empty() || chain.len() > MAX_CHAIN_LEN {
            return Err(IssueError::BadChainLength);
        }
        for (index, der) in chain.iter().enumerate() {
            let (rest, certificate) =
                X509Certificate::from_der(der).map_err(|_| IssueError::BadCertificate { index })?;
            if !rest.is_empty() {
                return Err(IssueError::BadCertificate { index });
            }
            if index == 0 && certificate.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
                return Err(IssueError::KeyDoesNotMatchCertificate);
            }
        }
        let header = Header { typ: "JWT", alg: "ES256", x5c: chain.iter().map(|der| STANDARD.encode(der)).collect() };
        let header = serde_json::to_vec(&header).map_err(|_| IssueError::Signing)?;
        Ok(Self { key, header: URL_SAFE_NO_PAD.encode(header), issuer, rng: SystemRandom::new() })
    }

    /// Issues a token for `subject` (empty for an anonymous caller) to `audience` (the service), granting
    /// `access`, valid from `now` for `ttl` (whole seconds; at least one).
    pub fn issue(
        &self,
        subject: &str,
        audience: &str,
        access: &[Access],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<IssuedToken, IssueError> {
        if audience.is_empty() {
            return Err(IssueError::EmptyAudience);
        }
        let expires_in = ttl.as_secs();
        if expires_in == 0 {
            return Err(IssueError::LifetimeTooShort);
        }
        let issued = now.duration_since(UNIX_EPOCH).map_err(|_| IssueError::TimeOutOfRange)?.as_secs();
        let expires = issued.checked_add(expires_in).ok_or(IssueError::TimeOutOfRange)?;
        // Verifiers read `exp` as a signed 64-bit number.
        if i64::try_from(expires).is_err() {
            return Err(IssueError::TimeOutOfRange);
        }
        let mut id = [0_u8; 16];
        self.rng.fill(&mut id).map_err(|_| IssueError::Signing)?;
        let claims = ClaimSet {
            iss: &self.issuer,
            sub: subject,
            aud: audience,
            exp: expires,
            nbf: issued,
            iat: issued,
            jti: to_hex(&id),
            access,
        };
        let claims = serde_json::to_vec(&claims).map_err(|_| IssueError::Signing)?;
        let mut token = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let signature = self.key.sign(&self.rng, token.as_bytes()).map_err(|_| IssueError::Signing)?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(IssuedToken { token, expires_in, issued_at: now })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use zeroize::Zeroizing;

    use super::*;
    use crate::certs::{generate_ca, generate_signing, pem};
    use crate::token::{Claims, TokenError, TokenSettings, TokenVerifier};

    const ISSUER: &str = "tufa-token-service";
    const SERVICE: &str = "tufa-server";
    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    struct Pki {
        ca_key: Zeroizing<Vec<u8>>,
        ca: Vec<u8>,
        key: Zeroizing<Vec<u8>>,
        leaf: Vec<u8>,
    }

    fn pki() -> Pki {
        let (ca_key, ca) = generate_ca(now()).unwrap();
        let (key, leaf) = generate_signing(&ca_key, &ca, now()).unwrap();
        Pki { ca_key, ca, key, leaf }
    }

    fn issuer(pki: &Pki) -> TokenIssuer {
        TokenIssuer::new(&pki.key, vec![pki.leaf.clone(), pki.ca.clone()], ISSUER.to_owned()).unwrap()
    }

    fn verifier(bundle: &[&[u8]]) -> TokenVerifier {
        let pem: String = bundle.iter().map(|der| pem(der)).collect();
        TokenVerifier::new(TokenSettings {
            issuer: ISSUER.to_owned(),
            service: SERVICE.to_owned(),
            root_certificates: pem.into_bytes(),
        })
        .unwrap()
    }

    fn part(token: &str, index: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(token.split('.').nth(index).unwrap()).unwrap()
    }

    #[test]
    fn issued_tokens_verify_with_the_crates_verifier() {
        let pki = pki();
        let access = vec![
            Access::new("repository", "registry.example.com/team/app", &["pull", "push"]),
            Access::new("registry", "catalog", &["*"]),
        ];
        let issued = issuer(&pki).issue("alice", SERVICE, &access, now(), Duration::from_secs(300)).unwrap();
        assert_eq!(issued.expires_in, 300);
        assert_eq!(issued.issued_at, now());

        let claims = verifier(&[&pki.ca]).verify(&issued.token, now()).unwrap();
        let jti = claims.id.clone().unwrap();
        assert_eq!(jti.len(), 32);
        assert!(jti.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()), "{jti}");
        assert_eq!(
            claims,
            Claims {
                issuer: ISSUER.to_owned(),
                subject: "alice".to_owned(),
                audience: vec![SERVICE.to_owned()],
                expires_at: NOW as i64 + 300,
                not_before: Some(NOW as i64),
                issued_at: Some(NOW as i64),
                id: Some(jti),
                access,
            }
        );
        // Valid until the lifetime and the verifier's leeway have passed.
        let verifier = verifier(&[&pki.ca]);
        assert_eq!(verifier.verify(&issued.token, now() + Duration::from_secs(360)).map(|_| ()), Ok(()));
        assert_eq!(verifier.verify(&issued.token, now() + Duration::from_secs(361)), Err(TokenError::Expired));
    }

    #[test]
    fn header_and_claims_are_written_exactly() {
        let pki = pki();
        let issued = issuer(&pki).issue("", SERVICE, &[], now(), Duration::from_millis(60_900)).unwrap();
        assert_eq!(issued.expires_in, 60);
        let header = String::from_utf8(part(&issued.token, 0)).unwrap();
        assert_eq!(
            header,
            format!(
                r#"{{"typ":"JWT","alg":"ES256","x5c":["{}","{}"]}}"#,
                STANDARD.encode(&pki.leaf),
                STANDARD.encode(&pki.ca)
            )
        );
        let claims: Value = serde_json::from_slice(&part(&issued.token, 1)).unwrap();
        let jti = claims["jti"].as_str().unwrap().to_owned();
        let expected = format!(
            r#"{{"iss":"tufa-token-service","sub":"","aud":"tufa-server","exp":{},"nbf":{NOW},"iat":{NOW},"jti":"{jti}","access":[]}}"#,
            NOW + 60
        );
        assert_eq!(String::from_utf8(part(&issued.token, 1)).unwrap(), expected);
        assert_eq!(claims["access"], json!([]));
        // ES256 in JWS is the fixed 64-byte r||s.
        assert_eq!(part(&issued.token, 2).len(), 64);

        // An anonymous token without access verifies too.
        let claims = verifier(&[&pki.ca]).verify(&issued.token, now()).unwrap();
        assert_eq!((claims.subject.as_str(), claims.access.len()), ("", 0));
    }

    #[test]
    fn each_token_has_its_own_id_and_signature() {
        let pki = pki();
        let issuer = issuer(&pki);
        let first = issuer.issue("alice", SERVICE, &[], now(), Duration::from_secs(60)).unwrap();
        let second = issuer.issue("alice", SERVICE, &[], now(), Duration::from_secs(60)).unwrap();
        assert_ne!(part(&first.token, 1), part(&second.token, 1));
        assert_ne!(part(&first.token, 2), part(&second.token, 2));
    }

    #[test]
    fn tokens_from_another_ca_or_for_another_service_are_refused() {
        let pki = pki();
        let other = self::pki();
        let token = issuer(&other).issue("alice", SERVICE, &[], now(), Duration::from_secs(300)).unwrap().token;
        assert_eq!(
            verifier(&[&pki.ca]).verify(&token, now()),
            Err(TokenError::UntrustedChain("InvalidSignatureForPublicKey".to_owned()))
        );
        // Trusting both CAs accepts it.
        assert_eq!(
            verifier(&[&pki.ca, &other.ca]).verify(&token, now()).map(|claims| claims.subject),
            Ok("alice".to_owned())
        );

        let token = issuer(&pki).issue("alice", "registry", &[], now(), Duration::from_secs(300)).unwrap().token;
        assert_eq!(verifier(&[&pki.ca]).verify(&token, now()), Err(TokenError::WrongAudience));

        // A signing certificate that has expired is refused by the chain check.
        let token = issuer(&pki).issue("alice", SERVICE, &[], now(), Duration::from_secs(300)).unwrap().token;
        let after_leaf = now() + Duration::from_secs(366 * 86_400);
        assert_eq!(
            verifier(&[&pki.ca]).verify(&token, after_leaf),
            Err(TokenError::UntrustedChain(
                "CertExpired { time: UnixTime(1831622400), not_after: UnixTime(1831536000) }".to_owned()
            ))
        );
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let pki = pki();
        let token = issuer(&pki).issue("alice", SERVICE, &[], now(), Duration::from_secs(300)).unwrap().token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let claims = String::from_utf8(part(&token, 1)).unwrap().replace("alice", "admin");
        parts[1] = URL_SAFE_NO_PAD.encode(claims);
        assert_eq!(verifier(&[&pki.ca]).verify(&parts.join("."), now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn issuer_construction_errors() {
        let pki = pki();
        let other = self::pki();
        let chain = || vec![pki.leaf.clone(), pki.ca.clone()];
        let owned = |text: &str| text.to_owned();
        type Case<'a> = (&'a [u8], Vec<Vec<u8>>, String, IssueError);
        let cases: Vec<Case<'_>> = vec![
            (&pki.key, chain(), owned(""), IssueError::EmptyIssuer),
            (b"not a key", chain(), owned(ISSUER), IssueError::BadKey),
            (&other.key, chain(), owned(ISSUER), IssueError::KeyDoesNotMatchCertificate),
            // The CA's key with the chain led by the leaf does not match either.
            (&pki.ca_key, chain(), owned(ISSUER), IssueError::KeyDoesNotMatchCertificate),
            (&pki.key, vec![], owned(ISSUER), IssueError::BadChainLength),
            (&pki.key, vec![pki.leaf.clone(); 9], owned(ISSUER), IssueError::BadChainLength),
            (
                &pki.key,
                vec![pki.leaf.clone(), b"junk".to_vec()],
                owned(ISSUER),
                IssueError::BadCertificate { index: 1 },
            ),
            (&pki.key, vec![b"junk".to_vec()], owned(ISSUER), IssueError::BadCertificate { index: 0 }),
        ];
        for (key, chain, issuer, expected) in cases {
            assert_eq!(TokenIssuer::new(key, chain, issuer).map(|_| ()), Err(expected.clone()), "{expected:?}");
        }
    }

    #[test]
    fn issuer_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TokenIssuer>();
        shareable::<IssuedToken>();
    }

    #[test]
    fn issue_errors() {
        let pki = pki();
        let issuer = issuer(&pki);
        for (audience, now, ttl, expected) in [
            ("", now(), Duration::from_secs(60), IssueError::EmptyAudience),
            (SERVICE, now(), Duration::ZERO, IssueError::LifetimeTooShort),
            (SERVICE, now(), Duration::from_millis(999), IssueError::LifetimeTooShort),
            (SERVICE, UNIX_EPOCH - Duration::from_secs(1), Duration::from_secs(60), IssueError::TimeOutOfRange),
            (SERVICE, now(), Duration::from_secs(u64::MAX), IssueError::TimeOutOfRange),
            (SERVICE, now(), Duration::from_secs(i64::MAX as u64), IssueError::TimeOutOfRange),
        ] {
            assert_eq!(
                issuer.issue("alice", audience, &[], now, ttl).map(|_| ()),
                Err(expected.clone()),
                "{expected:?}"
            );
        }
        let issued = issuer.issue("alice", SERVICE, &[], now(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            format!("{issued:?}"),
            format!("IssuedToken {{ token: \"<redacted>\", expires_in: 60, issued_at: {:?} }}", now())
        );
        assert_eq!(format!("{issuer:?}"), "TokenIssuer { issuer: \"tufa-token-service\", .. }");
    }
}
