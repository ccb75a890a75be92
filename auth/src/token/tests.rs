//! Token verification tests with real keys (aws-lc-rs) and certificates (rcgen).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_RSA_SHA256, PKCS_RSA_SHA384, PKCS_RSA_SHA512,
    PublicKeyData as _, SignatureAlgorithm,
};
use serde_json::{Value, json};

use rustls_pki_types::pem::PemObject as _;

use super::*;

const ISSUER: &str = "auth.example.com";
const SERVICE: &str = "notary.example.com";
const NOW: i64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW as u64)
}

/// A private key that signs JWS payloads the way a token service does.
enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
}

impl Signer {
    fn from_rcgen(key: &KeyPair, jws_alg: &str) -> Self {
        let der = key.serialize_der();
        match jws_alg {
            "ES256" => Self::Ec(EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap()),
            "ES384" => Self::Ec(EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &der).unwrap()),
            "ES512" => Self::Ec(EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P521_SHA512_FIXED_SIGNING, &der).unwrap()),
            "RS256" => Self::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap(), &signature::RSA_PKCS1_SHA256),
            "RS384" => Self::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap(), &signature::RSA_PKCS1_SHA384),
            "RS512" => Self::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap(), &signature::RSA_PKCS1_SHA512),
            other => panic!("no test signer for {other}"),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Ec(key) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
            Self::Rsa(key, encoding) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(*encoding, &rng, message, &mut out).unwrap();
                out
            }
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds a compact JWS from a header and claims, signed by `signer`.
fn token(header: &Value, claims: &Value, signer: &Signer) -> String {
    let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = signer.sign(signed.as_bytes());
    format!("{signed}.{}", b64(&signature))
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": SERVICE,
        "exp": NOW + 300,
        "nbf": NOW - 10,
        "iat": NOW - 10,
        "jti": "token-1",
        "access": [{"type": "repository", "name": "example.com/app", "actions": ["push", "pull"]}],
    })
}

fn expected_claims() -> Claims {
    Claims {
        issuer: ISSUER.to_owned(),
        subject: "alice".to_owned(),
        audience: vec![SERVICE.to_owned()],
        expires_at: NOW + 300,
        not_before: Some(NOW - 10),
        issued_at: Some(NOW - 10),
        id: Some("token-1".to_owned()),
        access: vec![Access::new("repository", "example.com/app", &["pull", "push"])],
    }
}

fn ca(alg: &'static SignatureAlgorithm, name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate_for(alg).unwrap()).unwrap()
}

fn leaf(alg: &'static SignatureAlgorithm, issuer: &CertifiedIssuer<'static, KeyPair>) -> (Vec<u8>, KeyPair) {
    let mut params = CertificateParams::new(vec!["token-signer.example.com".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "token signer");
    let key = KeyPair::generate_for(alg).unwrap();
    let certificate = params.signed_by(&key, issuer).unwrap();
    (certificate.der().to_vec(), key)
}

fn verifier(roots: &[&CertifiedIssuer<'static, KeyPair>]) -> TokenVerifier {
    let bundle: String = roots.iter().map(|root| root.pem()).collect();
    TokenVerifier::new(TokenSettings {
        issuer: ISSUER.to_owned(),
        service: SERVICE.to_owned(),
        root_certificates: bundle.into_bytes(),
    })
    .unwrap()
}

/// A root in the bundle and a leaf it certifies, both of one key type.
struct Fixture {
    root: CertifiedIssuer<'static, KeyPair>,
    verifier: TokenVerifier,
    leaf_der: Vec<u8>,
    leaf_signer: Signer,
    leaf_key: KeyPair,
    jws_alg: &'static str,
}

fn fixture(alg: &'static SignatureAlgorithm, jws_alg: &'static str) -> Fixture {
    let root = ca(alg, "Test Root");
    let verifier = verifier(&[&root]);
    let (leaf_der, leaf_key) = leaf(alg, &root);
    let leaf_signer = Signer::from_rcgen(&leaf_key, jws_alg);
    Fixture { root, verifier, leaf_der, leaf_signer, leaf_key, jws_alg }
}

impl Fixture {
    fn x5c_header(&self) -> Value {
        json!({"typ": "JWT", "alg": self.jws_alg, "x5c": [STANDARD.encode(&self.leaf_der)]})
    }

    fn x5c_token(&self, claims: &Value) -> String {
        token(&self.x5c_header(), claims, &self.leaf_signer)
    }

    fn check(&self, token: &str, expected: Result<Claims, TokenError>) {
        assert_eq!(self.verifier.verify(token, now()), expected);
    }
}

#[test]
fn es256_via_x5c_is_accepted() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    fixture.check(&fixture.x5c_token(&claims()), Ok(expected_claims()));
}

#[test]
fn es384_via_x5c_is_accepted() {
    let fixture = fixture(&PKCS_ECDSA_P384_SHA384, "ES384");
    fixture.check(&fixture.x5c_token(&claims()), Ok(expected_claims()));
}

#[test]
fn rs256_via_x5c_is_accepted() {
    let fixture = fixture(&PKCS_RSA_SHA256, "RS256");
    fixture.check(&fixture.x5c_token(&claims()), Ok(expected_claims()));
}

#[test]
fn every_algorithm_is_accepted_via_x5c_and_kid() {
    for (alg, jws_alg) in [
        (&PKCS_ECDSA_P256_SHA256, "ES256"),
        (&PKCS_ECDSA_P384_SHA384, "ES384"),
        (&PKCS_ECDSA_P521_SHA512, "ES512"),
        (&PKCS_RSA_SHA256, "RS256"),
        (&PKCS_RSA_SHA384, "RS384"),
        (&PKCS_RSA_SHA512, "RS512"),
    ] {
        let fixture = fixture(alg, jws_alg);
        fixture.check(&fixture.x5c_token(&claims()), Ok(expected_claims()));
        let kid = libtrust_key_id(&fixture.root.key().subject_public_key_info());
        let root_signer = Signer::from_rcgen(fixture.root.key(), jws_alg);
        fixture.check(&token(&json!({"alg": jws_alg, "kid": kid}), &claims(), &root_signer), Ok(expected_claims()));
    }
}

#[test]
fn rsa_signature_with_another_hash_is_refused() {
    let fixture = fixture(&PKCS_RSA_SHA256, "RS256");
    let mut header = fixture.x5c_header();
    header["alg"] = json!("RS512");
    fixture.check(&token(&header, &claims(), &fixture.leaf_signer), Err(TokenError::BadSignature));
}

#[test]
fn x5c_through_an_intermediate_is_accepted() {
    let root = ca(&PKCS_ECDSA_P256_SHA256, "Test Root");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "Test Intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let intermediate =
        CertifiedIssuer::signed_by(params, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(), &root).unwrap();
    let (leaf_der, leaf_key) = leaf(&PKCS_ECDSA_P256_SHA256, &intermediate);
    let header = json!({"alg": "ES256", "x5c": [STANDARD.encode(&leaf_der), STANDARD.encode(intermediate.der())]});
    let token = token(&header, &claims(), &Signer::from_rcgen(&leaf_key, "ES256"));
    assert_eq!(verifier(&[&root]).verify(&token, now()), Ok(expected_claims()));
}

#[test]
fn x5c_leaf_that_is_a_bundle_ca_certificate_is_accepted() {
    // A self-signed CA certificate listed in the bundle and sent as the whole chain, as
    // `openssl req -x509` set-ups do.
    let root = ca(&PKCS_ECDSA_P256_SHA256, "Token Signer");
    let header = json!({"alg": "ES256", "x5c": [STANDARD.encode(root.der())]});
    let token = token(&header, &claims(), &Signer::from_rcgen(root.key(), "ES256"));
    assert_eq!(verifier(&[&root]).verify(&token, now()), Ok(expected_claims()));
}

#[test]
fn x5c_chain_to_an_untrusted_root_is_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let chain_token = |stranger: &CertifiedIssuer<'static, KeyPair>| {
        let (leaf_der, leaf_key) = leaf(&PKCS_ECDSA_P256_SHA256, stranger);
        let header = json!({"alg": "ES256", "x5c": [STANDARD.encode(&leaf_der), STANDARD.encode(stranger.der())]});
        token(&header, &claims(), &Signer::from_rcgen(&leaf_key, "ES256"))
    };
    // A root with another name, sent along in the chain, is still not a bundle root.
    let other_name = ca(&PKCS_ECDSA_P256_SHA256, "Other Root");
    fixture.check(&chain_token(&other_name), Err(TokenError::UntrustedChain("UnknownIssuer".to_owned())));
    // A root that copies the trusted root's name but not its key.
    let same_name = ca(&PKCS_ECDSA_P256_SHA256, "Test Root");
    fixture.check(&chain_token(&same_name), Err(TokenError::UntrustedChain("InvalidSignatureForPublicKey".to_owned())));
}

#[test]
fn x5c_problems_are_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let empty = token(&json!({"alg": "ES256", "x5c": []}), &claims(), &fixture.leaf_signer);
    fixture.check(&empty, Err(TokenError::NoKey));
    let leaf = STANDARD.encode(&fixture.leaf_der);
    let long = token(&json!({"alg": "ES256", "x5c": vec![leaf; 9]}), &claims(), &fixture.leaf_signer);
    fixture.check(&long, Err(TokenError::BadChainLength));
    let garbage = token(&json!({"alg": "ES256", "x5c": ["%%%"]}), &claims(), &fixture.leaf_signer);
    fixture.check(&garbage, Err(TokenError::BadCertificate { index: 0 }));
    let not_der = token(&json!({"alg": "ES256", "x5c": [STANDARD.encode(b"nope")]}), &claims(), &fixture.leaf_signer);
    fixture.check(&not_der, Err(TokenError::BadCertificate { index: 0 }));
}

#[test]
fn kid_of_a_bundle_key_is_accepted_and_unknown_kid_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let kid = libtrust_key_id(&fixture.root.key().subject_public_key_info());
    assert_eq!(fixture.verifier.trusted_key_ids().collect::<Vec<_>>(), vec![kid.as_str()]);
    let root_signer = Signer::from_rcgen(fixture.root.key(), "ES256");
    fixture.check(&token(&json!({"alg": "ES256", "kid": kid}), &claims(), &root_signer), Ok(expected_claims()));

    let unknown = "AAAA:AAAA:AAAA:AAAA:AAAA:AAAA:AAAA:AAAA:AAAA:AAAA:AAAA:AAAA";
    fixture.check(
        &token(&json!({"alg": "ES256", "kid": unknown}), &claims(), &root_signer),
        Err(TokenError::UnknownKeyId),
    );
}

#[test]
fn rs256_via_kid_is_accepted() {
    let fixture = fixture(&PKCS_RSA_SHA256, "RS256");
    let kid = libtrust_key_id(&fixture.root.key().subject_public_key_info());
    let root_signer = Signer::from_rcgen(fixture.root.key(), "RS256");
    fixture.check(&token(&json!({"alg": "RS256", "kid": kid}), &claims(), &root_signer), Ok(expected_claims()));
}

fn ec_jwk(key: &KeyPair) -> Value {
    let point = key.public_key_raw();
    let half = (point.len() - 1) / 2;
    json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..=half]), "y": b64(&point[half + 1..])})
}

#[test]
fn jwk_of_a_bundle_key_is_accepted_and_other_jwk_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let root_signer = Signer::from_rcgen(fixture.root.key(), "ES256");
    let header = json!({"alg": "ES256", "jwk": ec_jwk(fixture.root.key())});
    fixture.check(&token(&header, &claims(), &root_signer), Ok(expected_claims()));

    let stranger = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let header = json!({"alg": "ES256", "jwk": ec_jwk(&stranger)});
    let token = token(&header, &claims(), &Signer::from_rcgen(&stranger, "ES256"));
    fixture.check(&token, Err(TokenError::UntrustedJwk));
}

#[test]
fn jwk_with_a_chain_to_the_bundle_is_accepted_when_it_is_the_leaf_key() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let mut jwk = ec_jwk(&fixture.leaf_key);
    jwk["x5c"] = json!([STANDARD.encode(&fixture.leaf_der)]);
    fixture.check(&token(&json!({"alg": "ES256", "jwk": jwk}), &claims(), &fixture.leaf_signer), Ok(expected_claims()));

    let stranger = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut jwk = ec_jwk(&stranger);
    jwk["x5c"] = json!([STANDARD.encode(&fixture.leaf_der)]);
    let token = token(&json!({"alg": "ES256", "jwk": jwk}), &claims(), &Signer::from_rcgen(&stranger, "ES256"));
    fixture.check(&token, Err(TokenError::JwkChainMismatch));
}

#[test]
fn header_without_key_is_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    fixture.check(&token(&json!({"alg": "ES256"}), &claims(), &fixture.leaf_signer), Err(TokenError::NoKey));
}

#[test]
fn algorithms_none_and_hmac_are_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let x5c = fixture.x5c_header()["x5c"].clone();
    let claims_part = b64(claims().to_string().as_bytes());
    let none = format!("{}.{claims_part}.", b64(json!({"alg": "none", "x5c": x5c}).to_string().as_bytes()));
    fixture.check(&none, Err(TokenError::UnsupportedAlgorithm));
    let hmac = format!("{}.{claims_part}.c2ln", b64(json!({"alg": "HS256", "x5c": x5c}).to_string().as_bytes()));
    fixture.check(&hmac, Err(TokenError::UnsupportedAlgorithm));
}

#[test]
fn critical_header_is_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let mut header = fixture.x5c_header();
    header["crit"] = json!(["exp"]);
    fixture.check(&token(&header, &claims(), &fixture.leaf_signer), Err(TokenError::CriticalHeader));
}

#[test]
fn bad_signature_is_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let other = Signer::from_rcgen(&KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(), "ES256");
    fixture.check(&token(&fixture.x5c_header(), &claims(), &other), Err(TokenError::BadSignature));

    // Claims changed after signing.
    let good = fixture.x5c_token(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let mut changed = claims();
    changed["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], b64(changed.to_string().as_bytes()), parts[2]);
    fixture.check(&tampered, Err(TokenError::BadSignature));
}

#[test]
fn key_that_does_not_fit_the_algorithm_is_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let mut header = fixture.x5c_header();
    header["alg"] = json!("RS256");
    fixture.check(&token(&header, &claims(), &fixture.leaf_signer), Err(TokenError::KeyDoesNotFitAlgorithm));
    header["alg"] = json!("ES384");
    fixture.check(&token(&header, &claims(), &fixture.leaf_signer), Err(TokenError::KeyDoesNotFitAlgorithm));
}

#[test]
fn claim_checks() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let with = |field: &str, value: Value| {
        let mut changed = claims();
        changed[field] = value;
        fixture.x5c_token(&changed)
    };
    let without = |field: &str| {
        let mut changed = claims();
        changed.as_object_mut().unwrap().remove(field);
        fixture.x5c_token(&changed)
    };

    fixture.check(&with("iss", json!("evil.example.com")), Err(TokenError::WrongIssuer));
    fixture.check(&without("iss"), Err(TokenError::WrongIssuer));
    fixture.check(&with("aud", json!("registry.example.com")), Err(TokenError::WrongAudience));
    fixture.check(&with("aud", json!(["registry.example.com"])), Err(TokenError::WrongAudience));
    fixture.check(&without("aud"), Err(TokenError::WrongAudience));
    let mut both = expected_claims();
    both.audience = vec!["registry.example.com".to_owned(), SERVICE.to_owned()];
    fixture.check(&with("aud", json!(["registry.example.com", SERVICE])), Ok(both));

    fixture.check(&without("exp"), Err(TokenError::MissingExpiry));
    fixture.check(&with("exp", json!(NOW - 61)), Err(TokenError::Expired));
    let mut edge = expected_claims();
    edge.expires_at = NOW - 60;
    fixture.check(&with("exp", json!(NOW - 60)), Ok(edge));
    // Past the leeway by a fraction of a second is expired, as Go compares times with nanoseconds.
    assert_eq!(
        fixture.verifier.verify(&with("exp", json!(NOW - 60)), now() + Duration::from_millis(1)),
        Err(TokenError::Expired)
    );

    fixture.check(&with("nbf", json!(NOW + 61)), Err(TokenError::NotYetValid));
    let mut early = expected_claims();
    early.not_before = Some(NOW + 60);
    fixture.check(&with("nbf", json!(NOW + 60)), Ok(early));

    let mut anonymous = expected_claims();
    anonymous.subject = String::new();
    anonymous.access = Vec::new();
    let mut changed = claims();
    changed.as_object_mut().unwrap().remove("sub");
    changed.as_object_mut().unwrap().remove("access");
    fixture.check(&fixture.x5c_token(&changed), Ok(anonymous));
}

#[test]
fn malformed_tokens_are_refused() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let header = b64(fixture.x5c_header().to_string().as_bytes());
    let claims_part = b64(claims().to_string().as_bytes());

    fixture.check("", Err(TokenError::NotCompact));
    fixture.check("a.b", Err(TokenError::NotCompact));
    fixture.check("a.b.c.d", Err(TokenError::NotCompact));
    fixture.check(&format!("!!.{claims_part}.c2ln"), Err(TokenError::BadBase64(TokenPart::Header)));
    fixture.check(&format!("{}.{claims_part}.c2ln", b64(b"not json")), Err(TokenError::BadJson(TokenPart::Header)));
    fixture.check(&format!("{}.{claims_part}.c2ln", b64(b"{}")), Err(TokenError::BadJson(TokenPart::Header)));
    fixture.check(&format!("{header}.a=b.c2ln"), Err(TokenError::BadBase64(TokenPart::Claims)));
    fixture.check(&format!("{header}.{claims_part}.c2ln="), Err(TokenError::BadBase64(TokenPart::Signature)));

    // Claims that are signed but not a claim set.
    let signed = format!("{header}.{}", b64(b"[1,2]"));
    let signature = fixture.leaf_signer.sign(signed.as_bytes());
    fixture.check(&format!("{signed}.{}", b64(&signature)), Err(TokenError::BadJson(TokenPart::Claims)));
    let mut float_expiry = claims();
    float_expiry["exp"] = json!(1.5);
    fixture.check(&fixture.x5c_token(&float_expiry), Err(TokenError::BadJson(TokenPart::Claims)));
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    fixture.check(&huge, Err(TokenError::TooLong { len: MAX_TOKEN_LEN + 1, max: MAX_TOKEN_LEN }));
    assert_eq!(
        TokenError::TooLong { len: MAX_TOKEN_LEN + 1, max: MAX_TOKEN_LEN }.to_string(),
        "token is 65537 bytes long, more than the 65536 accepted"
    );
}

#[test]
fn error_messages_never_repeat_the_token() {
    let fixture = fixture(&PKCS_ECDSA_P256_SHA256, "ES256");
    let marker = "SECRETMARKER";
    let mut changed = claims();
    changed["iss"] = json!(marker);
    let error = fixture.verifier.verify(&fixture.x5c_token(&changed), now()).unwrap_err();
    assert_eq!(error.to_string(), "token issuer is not the trusted issuer");
    let header = format!("{{\"alg\":\"{marker}\"}}");
    let error = fixture.verifier.verify(&format!("{}.e30.c2ln", b64(header.as_bytes())), now()).unwrap_err();
    assert_eq!(error.to_string(), "token algorithm is not one of ES256, ES384, ES512, RS256, RS384, RS512");
}

#[test]
fn bad_bundles_are_refused() {
    let settings = |bundle: &[u8]| TokenSettings {
        issuer: ISSUER.to_owned(),
        service: SERVICE.to_owned(),
        root_certificates: bundle.to_vec(),
    };
    assert_eq!(TokenVerifier::new(settings(b"")).unwrap_err(), SettingsError::NoCertificates);
    assert_eq!(TokenVerifier::new(settings(b"just text\n")).unwrap_err(), SettingsError::NoCertificates);
    assert_eq!(
        TokenVerifier::new(settings(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")).unwrap_err(),
        SettingsError::BadPem
    );
    let not_der = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", STANDARD.encode(b"nope"));
    assert_eq!(
        TokenVerifier::new(settings(not_der.as_bytes())).unwrap_err(),
        SettingsError::BadCertificate { index: 0, reason: "not a valid X.509 certificate" }
    );
}

/// Certificates and keys made by `openssl req -x509` (so CA certificates), with libtrust key IDs computed
/// independently from `openssl pkey -pubin -outform DER` and Python's hashlib and base64.
const OPENSSL_EC_CERT: &str = include_str!("testdata/openssl-token-signer.crt");
const OPENSSL_EC_KEY: &str = include_str!("testdata/openssl-token-signer.key");
const OPENSSL_EC_KID: &str = "NZKV:V2U2:MTUR:CMFE:KHG2:GKH2:4BVN:WXRH:FIVZ:EO3L:BWC6:R2GG";
const OPENSSL_RSA_CERT: &str = include_str!("testdata/openssl-rsa-signer.crt");
const OPENSSL_RSA_KEY: &str = include_str!("testdata/openssl-rsa-signer.key");
const OPENSSL_RSA_KID: &str = "CUXH:Q3EV:XBLD:ESXC:UKMD:5VBB:IJMU:M4KM:2CQD:GRDQ:22VF:KSYJ";

fn openssl_verifier(pem: &str) -> TokenVerifier {
    TokenVerifier::new(TokenSettings {
        issuer: ISSUER.to_owned(),
        service: SERVICE.to_owned(),
        root_certificates: pem.as_bytes().to_vec(),
    })
    .unwrap()
}

#[test]
fn libtrust_key_ids_match_an_independent_computation() {
    assert_eq!(openssl_verifier(OPENSSL_EC_CERT).trusted_key_ids().collect::<Vec<_>>(), vec![OPENSSL_EC_KID]);
    assert_eq!(openssl_verifier(OPENSSL_RSA_CERT).trusted_key_ids().collect::<Vec<_>>(), vec![OPENSSL_RSA_KID]);
    let both = format!("{OPENSSL_EC_CERT}{OPENSSL_RSA_CERT}");
    assert_eq!(openssl_verifier(&both).trusted_key_ids().collect::<Vec<_>>(), vec![OPENSSL_EC_KID, OPENSSL_RSA_KID]);
}

#[test]
fn openssl_ca_certificate_signs_via_x5c_and_kid() {
    let verifier = openssl_verifier(OPENSSL_EC_CERT);
    let signer = Signer::from_rcgen(&KeyPair::from_pem(OPENSSL_EC_KEY).unwrap(), "ES256");
    let der = CertificateDer::from_pem_slice(OPENSSL_EC_CERT.as_bytes()).unwrap();
    let x5c = json!({"alg": "ES256", "x5c": [STANDARD.encode(&der)]});
    assert_eq!(verifier.verify(&token(&x5c, &claims(), &signer), now()), Ok(expected_claims()));
    let kid = json!({"alg": "ES256", "kid": OPENSSL_EC_KID});
    assert_eq!(verifier.verify(&token(&kid, &claims(), &signer), now()), Ok(expected_claims()));

    let verifier = openssl_verifier(OPENSSL_RSA_CERT);
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(OPENSSL_RSA_KEY, &PKCS_RSA_SHA256).unwrap();
    let signer = Signer::from_rcgen(&key, "RS256");
    let kid = json!({"alg": "RS256", "kid": OPENSSL_RSA_KID});
    assert_eq!(verifier.verify(&token(&kid, &claims(), &signer), now()), Ok(expected_claims()));
}

#[test]
fn bundle_certificate_used_as_leaf_must_be_within_its_validity() {
    // The openssl certificates are valid from 2026-11-29 on.
    let verifier = openssl_verifier(OPENSSL_EC_CERT);
    let signer = Signer::from_rcgen(&KeyPair::from_pem(OPENSSL_EC_KEY).unwrap(), "ES256");
    let der = CertificateDer::from_pem_slice(OPENSSL_EC_CERT.as_bytes()).unwrap();
    let before = 1_700_000_000;
    let mut early = claims();
    early["exp"] = json!(before + 300);
    early["nbf"] = json!(before);
    let token = token(&json!({"alg": "ES256", "x5c": [STANDARD.encode(&der)]}), &early, &signer);
    assert_eq!(
        verifier.verify(&token, UNIX_EPOCH + Duration::from_secs(before as u64)),
        Err(TokenError::UntrustedChain("the certificate is expired or not yet valid".to_owned()))
    );
}

#[test]
fn expired_leaf_certificate_is_refused() {
    let root = ca(&PKCS_ECDSA_P256_SHA256, "Test Root");
    let mut params = CertificateParams::new(vec!["token-signer.example.com".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf_der = params.signed_by(&key, &root).unwrap().der().to_vec();
    let header = json!({"alg": "ES256", "x5c": [STANDARD.encode(&leaf_der)]});
    let token = token(&header, &claims(), &Signer::from_rcgen(&key, "ES256"));
    assert_eq!(
        verifier(&[&root]).verify(&token, now()),
        Err(TokenError::UntrustedChain(
            "CertExpired { time: UnixTime(1800000000), not_after: UnixTime(1577836800) }".to_owned()
        ))
    );
}
