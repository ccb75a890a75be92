//! X.509 certificates as Notary uses them: PEM chains carried in `ecdsa-x509`/`rsa-x509` keys,
//! the public key inside a certificate, and the rules a root-role certificate must satisfy.
//!
//! Notary never checks a certificate's own signature or chain; a certificate is only a
//! container for a public key plus a name (the GUN) and a validity window.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use x509_parser::asn1_rs::{Any, Tag, ToDer as _};
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey as SpkiPublicKey;

use crate::keys::KeyError;

/// OID of `id-ecPublicKey` (RFC 5480).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the named curve P-256 (`prime256v1`).
const OID_CURVE_P256: &str = "1.2.840.10045.3.1.7";
/// OID of the named curve P-384 (`secp384r1`).
const OID_CURVE_P384: &str = "1.3.132.0.34";
/// OID of `rsaEncryption` (RFC 8017).
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// Signature algorithm OIDs that use SHA-1, the set Go's `ValidateCertificate` rejects:
/// sha1WithRSAEncryption, its old OIW alias, dsa-with-sha1 and ecdsa-with-SHA1.
const SHA1_SIGNATURE_OIDS: [&str; 4] =
    ["1.2.840.113549.1.1.5", "1.3.14.3.2.29", "1.2.840.10040.4.3", "1.2.840.10045.4.1"];

/// Smallest RSA modulus Notary accepts, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The kind of public key a certificate (or a bare SubjectPublicKeyInfo) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKey {
    /// ECDSA on the NIST P-256 curve.
    EcdsaP256,
    /// ECDSA on the NIST P-384 curve.
    EcdsaP384,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Bit length of the modulus.
        bits: usize,
    },
    /// Any other key: another curve, Ed25519, DSA, and so on. Such keys cannot verify Notary
    /// signatures.
    Other,
}

impl CertKey {
    /// Classifies a DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> Result<CertKey, KeyError> {
        classify_spki_der(spki_der).map(SpkiKind::cert_key)
    }
}

/// A finer classification than [`CertKey`], used by signature verification to tell an
/// unsupported curve apart from a key that is not an EC key at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpkiKind {
    EcdsaP256,
    EcdsaP384,
    EcdsaOtherCurve,
    Rsa { bits: usize },
    Other,
}

impl SpkiKind {
    fn cert_key(self) -> CertKey {
        match self {
            SpkiKind::EcdsaP256 => CertKey::EcdsaP256,
            SpkiKind::EcdsaP384 => CertKey::EcdsaP384,
            SpkiKind::Rsa { bits } => CertKey::Rsa { bits },
            SpkiKind::EcdsaOtherCurve | SpkiKind::Other => CertKey::Other,
        }
    }
}

/// Parses a DER SubjectPublicKeyInfo (with nothing after it) and classifies its key.
pub(crate) fn classify_spki_der(spki_der: &[u8]) -> Result<SpkiKind, KeyError> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| KeyError::InvalidPublicKey("not a DER SubjectPublicKeyInfo"))?;
    if !rest.is_empty() {
        return Err(KeyError::InvalidPublicKey("trailing data after the SubjectPublicKeyInfo"));
    }
    classify_spki(&spki)
}

fn classify_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<SpkiKind, KeyError> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    if algorithm == OID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .clone()
            .and_then(|parameters| x509_parser::asn1_rs::Oid::try_from(parameters).ok())
            .map(|oid| oid.to_id_string());
        return Ok(match curve.as_deref() {
            Some(OID_CURVE_P256) => SpkiKind::EcdsaP256,
            Some(OID_CURVE_P384) => SpkiKind::EcdsaP384,
            _ => SpkiKind::EcdsaOtherCurve,
        });
    }
    if algorithm == OID_RSA_ENCRYPTION {
        return match spki.parsed() {
            Ok(SpkiPublicKey::RSA(rsa)) => Ok(SpkiKind::Rsa { bits: bit_length(rsa.modulus) }),
            _ => Err(KeyError::InvalidPublicKey("malformed RSA public key")),
        };
    }
    Ok(SpkiKind::Other)
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_length(big_endian: &[u8]) -> usize {
    let mut digits = big_endian.iter().skip_while(|byte| **byte == 0);
    match digits.next() {
        None => 0,
        Some(first) => {
            let first_bits = 8 - first.leading_zeros() as usize;
            first_bits + 8 * digits.count()
        }
    }
}

/// The parts of an X.509 certificate that Notary looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The subject's common name (the last one if there are several, as Go reads it).
    pub common_name: Option<String>,
    /// The whole subject as an RFC 4514 string, last relative distinguished name first, such as
    /// `CN=example.com/app,O=Example,C=DE` for a subject written C, O, CN.
    pub subject: String,
    /// Start of the validity window.
    pub not_before: DateTime<Utc>,
    /// End of the validity window.
    pub not_after: DateTime<Utc>,
    /// Whether basicConstraints says `cA: TRUE`.
    pub is_ca: bool,
    /// Whether the certificate's signature algorithm uses SHA-1.
    pub signature_uses_sha1: bool,
    /// The DER SubjectPublicKeyInfo of the certificate's key.
    pub spki_der: Vec<u8>,
    /// What kind of key the certificate holds.
    pub public_key: CertKey,
    /// The whole certificate, DER-encoded.
    pub der: Vec<u8>,
}

impl Certificate {
    /// Parses one DER-encoded certificate (with nothing after it).
    pub fn from_der(der: &[u8]) -> Result<Certificate, KeyError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|error| KeyError::InvalidCertificate(error.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::InvalidCertificate("trailing data after the certificate".to_owned()));
        }
        let common_name =
            cert.subject().iter_common_name().filter_map(|attribute| attribute.as_str().ok()).last().map(str::to_owned);
        let subject = rfc4514(cert.subject());
        let validity = cert.validity();
        let not_before = timestamp(validity.not_before.timestamp())?;
        let not_after = timestamp(validity.not_after.timestamp())?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|error| KeyError::InvalidCertificate(error.to_string()))?
            .is_some_and(|constraints| constraints.value.ca);
        let signature_algorithm = cert.signature_algorithm.algorithm.to_id_string();
        let signature_uses_sha1 = SHA1_SIGNATURE_OIDS.contains(&signature_algorithm.as_str());
        let spki = cert.public_key();
        let public_key = classify_spki(spki)?.cert_key();
        Ok(Certificate {
            common_name,
            subject,
            not_before,
            not_after,
            is_ca,
            signature_uses_sha1,
            spki_der: spki.raw.to_vec(),
            public_key,
            der: der.to_vec(),
        })
    }

    /// Encodes the certificate as one PEM block the way Go's `pem.Encode` does: 64-character
    /// lines and a final newline.
    pub fn to_pem(&self) -> String {
        let body = STANDARD.encode(&self.der);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let mut rest = body.as_str();
        // Base64 text is ASCII, so every split point is a character boundary.
        while let Some((line, tail)) = rest.split_at_checked(rest.len().min(64))
            && !line.is_empty()
        {
            pem.push_str(line);
            pem.push('\n');
            rest = tail;
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }
}

/// RFC 4514 short names of the attribute types it lists (section 3), by OID.
const RFC4514_NAMES: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// A distinguished name as an RFC 4514 string: the relative distinguished names last first,
/// separated by `,`; the attributes of a multi-valued one separated by `+`; the types RFC 4514
/// names (CN, L, ST, O, OU, C, STREET, DC, UID) by that name and any other by its dotted OID.
/// A value of a known type held in a string type (UTF8String, PrintableString, IA5String,
/// NumericString, TeletexString, VisibleString) is written as its text with RFC 4514's escapes
/// (`"`, `+`, `,`, `;`, `<`, `>`, `\`, a leading `#` or space, a trailing space, NUL as `\00`);
/// every other value, and every value of a type named by OID, is `#` followed by the lower-case
/// hex of its DER encoding (RFC 4514 section 2.4).
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (index, rdn) in rdns.iter().rev().enumerate() {
        if index > 0 {
            out.push(',');
        }
        for (position, attribute) in rdn.iter().enumerate() {
            if position > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            let short = RFC4514_NAMES.iter().find(|(known, _)| *known == oid).map(|(_, short)| *short);
            out.push_str(short.unwrap_or(&oid));
            out.push('=');
            match short.and_then(|_| string_value(attribute.attr_value())) {
                Some(text) => escape_rfc4514(text, &mut out),
                None => {
                    out.push('#');
                    // Re-encoding a parsed value only fails for values too large to encode;
                    // such a value is written as its content octets instead.
                    let der = attribute.attr_value().to_der_vec().unwrap_or_else(|_| attribute.as_slice().to_vec());
                    out.push_str(&hex::encode(der));
                }
            }
        }
    }
    out
}

/// The text of a value held in one of the string types read as UTF-8, if it is one.
fn string_value<'a>(value: &'a Any<'_>) -> Option<&'a str> {
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::TeletexString
        | Tag::VisibleString => std::str::from_utf8(value.data).ok(),
        _ => None,
    }
}

/// Appends `text` with the escapes of RFC 4514 section 2.4.
fn escape_rfc4514(text: &str, out: &mut String) {
    let last = text.chars().count().saturating_sub(1);
    for (index, character) in text.chars().enumerate() {
        match character {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(character);
            }
            '#' if index == 0 => out.push_str("\\#"),
            ' ' if index == 0 || index == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            other => out.push(other),
        }
    }
}

fn timestamp(seconds: i64) -> Result<DateTime<Utc>, KeyError> {
    DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| KeyError::InvalidCertificate("validity time is out of range".to_owned()))
}

/// Parses a PEM bundle of one or more `CERTIFICATE` blocks, in order.
///
/// Text around the blocks is ignored; any other block type, a malformed block or a certificate
/// that does not parse is an error, as is input without any block.
pub fn parse_pem_chain(pem: &[u8]) -> Result<Vec<Certificate>, KeyError> {
    let mut certificates = Vec::new();
    for block in PemBlocks::new(pem) {
        let block = block?;
        if block.label != "CERTIFICATE" {
            return Err(KeyError::InvalidPem("a block is not a CERTIFICATE"));
        }
        certificates.push(Certificate::from_der(&block.contents)?);
    }
    if certificates.is_empty() {
        return Err(KeyError::NoCertificate);
    }
    Ok(certificates)
}

/// Encodes certificates as one PEM bundle, in the given order (Go's `CertChainToPEM`).
pub fn encode_pem_chain<'a>(certificates: impl IntoIterator<Item = &'a Certificate>) -> String {
    certificates.into_iter().map(Certificate::to_pem).collect()
}

/// The first certificate of a PEM bundle, read the way Notary's `LoadCertFromPEM` does:
/// blocks that are malformed, not `CERTIFICATE` blocks, carry headers or do not parse are
/// skipped.
pub fn first_certificate(pem: &[u8]) -> Result<Certificate, KeyError> {
    PemBlocks::new(pem)
        .filter_map(Result::ok)
        .filter(|block| block.label == "CERTIFICATE" && !block.has_headers)
        .find_map(|block| Certificate::from_der(&block.contents).ok())
        .ok_or(KeyError::NoCertificate)
}

/// Picks the leaf of a root key's certificate bundle: Notary requires exactly one certificate
/// that is not a CA; the others are intermediates.
pub fn leaf_certificate(chain: &[Certificate]) -> Result<&Certificate, String> {
    let mut leaves = chain.iter().filter(|certificate| !certificate.is_ca);
    match (leaves.next(), leaves.next()) {
        (Some(leaf), None) => Ok(leaf),
        (None, _) => Err("the certificate bundle holds no leaf (non-CA) certificate".to_owned()),
        (Some(_), Some(_)) => Err("the certificate bundle holds more than one leaf (non-CA) certificate".to_owned()),
    }
}

/// Whether a certificate common name authorises a GUN: equal to it, or ending in `*` with the
/// part before the trailing `*`s being a prefix of the GUN.
pub fn common_name_matches_gun(common_name: &str, gun: &str) -> bool {
    match common_name.strip_suffix('*') {
        Some(_) => gun.starts_with(common_name.trim_end_matches('*')),
        None => common_name == gun,
    }
}

/// Checks a root-role certificate for `gun` (spec 2.7).
///
/// The common name must match the GUN (see [`common_name_matches_gun`]); the certificate must
/// not be a CA, must not be signed with SHA-1, must have a sane validity window and, for RSA,
/// at least 2048 bits. With `check_validity`, it must also be currently valid, allowing a
/// `not_before` up to one day in the future. The error is a reason fit to show a client.
pub fn check_root_certificate(
    cert: &Certificate,
    gun: &str,
    now: DateTime<Utc>,
    check_validity: bool,
) -> Result<(), String> {
    match cert.common_name.as_deref() {
        None => return Err("root certificate has no common name".to_owned()),
        Some(common_name) if !common_name_matches_gun(common_name, gun) => {
            return Err(format!("root certificate common name {common_name:?} does not match {gun:?}"));
        }
        Some(_) => {}
    }
    if cert.is_ca {
        return Err("root certificate is a CA certificate, not a leaf".to_owned());
    }
    if cert.not_before > cert.not_after {
        return Err("root certificate validity window is invalid".to_owned());
    }
    if cert.signature_uses_sha1 {
        return Err("root certificate uses a SHA-1 signature algorithm".to_owned());
    }
    if let CertKey::Rsa { bits } = cert.public_key
        && bits < MIN_RSA_BITS
    {
        return Err(format!("root certificate RSA key has {bits} bits, fewer than {MIN_RSA_BITS}"));
    }
    if check_validity {
        let tomorrow = now.checked_add_signed(Duration::days(1)).unwrap_or(now);
        if cert.not_before > tomorrow {
            return Err(format!("root certificate is not valid before {}", cert.not_before.to_rfc3339()));
        }
        if cert.not_after < now {
            return Err(format!("root certificate expired at {}", cert.not_after.to_rfc3339()));
        }
    }
    Ok(())
}

/// One decoded PEM block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PemBlock {
    /// The type after `BEGIN`, e.g. `CERTIFICATE`.
    pub(crate) label: String,
    /// The decoded body.
    pub(crate) contents: Vec<u8>,
    /// Whether `Name: value` header lines preceded the body.
    pub(crate) has_headers: bool,
}

/// Iterates over the PEM blocks of a buffer, like repeated calls to Go's `pem.Decode`.
///
/// Text outside blocks is skipped. A malformed block yields one error and the search goes
/// on after it; an unterminated block ends the iteration with an error.
pub(crate) struct PemBlocks<'a> {
    lines: std::slice::Split<'a, u8, fn(&u8) -> bool>,
}

impl<'a> PemBlocks<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        fn is_newline(byte: &u8) -> bool {
            *byte == b'\n'
        }
        PemBlocks { lines: input.split(is_newline as fn(&u8) -> bool) }
    }
}

impl Iterator for PemBlocks<'_> {
    type Item = Result<PemBlock, KeyError>;

    fn next(&mut self) -> Option<Self::Item> {
        let label = loop {
            let line = self.lines.next()?.trim_ascii_end();
            if let Some(label) = line.strip_prefix(b"-----BEGIN ").and_then(|rest| rest.strip_suffix(b"-----")) {
                break label;
            }
        };
        let mut body = Vec::new();
        let mut has_headers = false;
        let mut malformed = false;
        for line in self.lines.by_ref() {
            let line = line.trim_ascii();
            if let Some(end_label) = line.strip_prefix(b"-----END ").and_then(|rest| rest.strip_suffix(b"-----")) {
                if end_label != label {
                    return Some(Err(KeyError::InvalidPem("END line does not match BEGIN")));
                }
                if malformed {
                    return Some(Err(KeyError::InvalidPem("malformed header line")));
                }
                let Ok(label) = std::str::from_utf8(label) else {
                    return Some(Err(KeyError::InvalidPem("block type is not UTF-8")));
                };
                let compact: Vec<u8> = body.iter().copied().filter(|byte: &u8| !byte.is_ascii_whitespace()).collect();
                return Some(match STANDARD.decode(compact) {
                    Ok(contents) => Ok(PemBlock { label: label.to_owned(), contents, has_headers }),
                    Err(_) => Err(KeyError::InvalidPem("block body is not valid base64")),
                });
            }
            if line.is_empty() {
                continue;
            }
            if line.contains(&b':') {
                // Headers may only come before the body.
                if body.is_empty() {
                    has_headers = true;
                } else {
                    malformed = true;
                }
                continue;
            }
            body.extend_from_slice(line);
        }
        Some(Err(KeyError::InvalidPem("block has no END line")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256, date_time_ymd};

    const SHA1_P384_PEM: &[u8] = include_bytes!("../tests/data/sha1-ecdsa-p384.pem");
    const RSA1024_PEM: &[u8] = include_bytes!("../tests/data/rsa1024.pem");

    fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
    }

    /// Builds a Notary-style self-signed P-256 certificate and returns its PEM.
    fn make_cert(common_name: &str, is_ca: bool, from: (i32, u8, u8), to: (i32, u8, u8)) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = if is_ca { IsCa::Ca(rcgen::BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(to.0, to.1, to.2);
        params.self_signed(&key).unwrap().pem()
    }

    /// A self-signed certificate whose subject holds `attributes` in order.
    fn with_subject(attributes: &[(DnType, &str)]) -> Certificate {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = DistinguishedName::new();
        for (kind, value) in attributes {
            name.push(kind.clone(), *value);
        }
        params.distinguished_name = name;
        first_certificate(params.self_signed(&key).unwrap().pem().as_bytes()).unwrap()
    }

    #[test]
    fn subjects_are_written_as_rfc_4514_strings() {
        // What `openssl x509 -subject -nameopt RFC2253` prints for the same subject.
        let certificate = with_subject(&[
            (DnType::CountryName, "DE"),
            (DnType::OrganizationName, "Example, Inc."),
            (DnType::CommonName, "#team "),
        ]);
        assert_eq!(certificate.subject, r"CN=\#team\ ,O=Example\, Inc.,C=DE");
        // Every escaped character; a type RFC 4514 does not name is written by OID with the hex
        // of its DER value (a UTF8String "x": 0c 01 78).
        let certificate = with_subject(&[
            (DnType::CustomDnType(vec![1, 2, 3, 4]), "x"),
            (DnType::OrganizationalUnitName, "a\"b+c;d<e>f\\g\0"),
            (DnType::LocalityName, " lead"),
            (DnType::StateOrProvinceName, "Ünïcode"),
            (DnType::CommonName, "example.com/app"),
        ]);
        assert_eq!(
            certificate.subject,
            r#"CN=example.com/app,ST=Ünïcode,L=\ lead,OU=a\"b\+c\;d\<e\>f\\g\00,1.2.3.4=#0c0178"#
        );
        assert_eq!(leaf("example.com/app").subject, "CN=example.com/app");
    }

    fn leaf(common_name: &str) -> Certificate {
        let pem = make_cert(common_name, false, (2025, 1, 1), (2035, 1, 1));
        parse_pem_chain(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn parses_rcgen_leaf() {
        let pem = make_cert("example.com/app", false, (2025, 1, 1), (2035, 1, 1));
        let chain = parse_pem_chain(pem.as_bytes()).unwrap();
        assert_eq!(chain.len(), 1);
        let cert = &chain[0];
        assert_eq!(cert.common_name.as_deref(), Some("example.com/app"));
        assert_eq!(cert.not_before, at(2025, 1, 1));
        assert_eq!(cert.not_after, at(2035, 1, 1));
        assert!(!cert.is_ca);
        assert!(!cert.signature_uses_sha1);
        assert_eq!(cert.public_key, CertKey::EcdsaP256);
        assert_eq!(CertKey::from_spki(&cert.spki_der).unwrap(), CertKey::EcdsaP256);
        // Re-encoding gives back the same PEM text rcgen wrote.
        assert_eq!(cert.to_pem(), pem.replace("\r\n", "\n"));
    }

    #[test]
    fn parses_openssl_fixtures() {
        let sha1 = &parse_pem_chain(SHA1_P384_PEM).unwrap()[0];
        assert!(sha1.signature_uses_sha1);
        assert_eq!(sha1.public_key, CertKey::EcdsaP384);
        assert!(!sha1.is_ca);
        let rsa = &parse_pem_chain(RSA1024_PEM).unwrap()[0];
        assert_eq!(rsa.public_key, CertKey::Rsa { bits: 1024 });
        assert!(!rsa.signature_uses_sha1);
        assert_eq!(rsa.common_name.as_deref(), Some("example.com/app"));
    }

    #[test]
    fn parses_chains_in_order() {
        let first = make_cert("example.com/app", false, (2025, 1, 1), (2035, 1, 1));
        let second = make_cert("intermediate", true, (2025, 1, 1), (2035, 1, 1));
        let bundle = format!("leading text\n{first}\n{second}trailing text\n");
        let chain = parse_pem_chain(bundle.as_bytes()).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].common_name.as_deref(), Some("example.com/app"));
        assert!(chain[1].is_ca);
        assert_eq!(encode_pem_chain(&chain), format!("{first}{second}"));
        assert_eq!(leaf_certificate(&chain).unwrap(), &chain[0]);
        assert_eq!(first_certificate(bundle.as_bytes()).unwrap(), chain[0].clone());
    }

    #[test]
    fn rejects_bad_pem() {
        let good = make_cert("example.com/app", false, (2025, 1, 1), (2035, 1, 1));
        let truncated = &good[..good.len() - 10];
        let wrong_type = good.replace("CERTIFICATE", "PUBLIC KEY");
        let bad_base64 = good.replacen("MII", "M!I", 1);
        let mismatched_end = good.replace("END CERTIFICATE", "END X509 CRL");
        let garbage_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let cases: &[(&str, &[u8], KeyError)] = &[
            ("empty", b"", KeyError::NoCertificate),
            ("no block", b"just some text\n", KeyError::NoCertificate),
            ("truncated", truncated.as_bytes(), KeyError::InvalidPem("block has no END line")),
            ("wrong type", wrong_type.as_bytes(), KeyError::InvalidPem("a block is not a CERTIFICATE")),
            ("bad base64", bad_base64.as_bytes(), KeyError::InvalidPem("block body is not valid base64")),
            ("mismatched end", mismatched_end.as_bytes(), KeyError::InvalidPem("END line does not match BEGIN")),
        ];
        for (name, input, expected) in cases {
            assert_eq!(parse_pem_chain(input).unwrap_err(), *expected, "case {name}");
        }
        assert!(matches!(parse_pem_chain(garbage_der.as_bytes()).unwrap_err(), KeyError::InvalidCertificate(_)));
    }

    #[test]
    fn first_certificate_skips_what_go_skips() {
        let good = make_cert("example.com/app", false, (2025, 1, 1), (2035, 1, 1));
        let input = format!(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n\
             -----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{good}"
        );
        let cert = first_certificate(input.as_bytes()).unwrap();
        assert_eq!(cert.common_name.as_deref(), Some("example.com/app"));
        assert_eq!(first_certificate(b"nothing here").unwrap_err(), KeyError::NoCertificate);
    }

    #[test]
    fn pem_headers_are_recorded() {
        let good = make_cert("example.com/app", false, (2025, 1, 1), (2035, 1, 1));
        let with_header =
            good.replacen("-----BEGIN CERTIFICATE-----\n", "-----BEGIN CERTIFICATE-----\nrole: root\n\n", 1);
        let blocks: Vec<_> = PemBlocks::new(with_header.as_bytes()).collect();
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].as_ref().unwrap().has_headers);
        // Go's LoadCertFromPEM skips blocks with headers.
        assert_eq!(first_certificate(with_header.as_bytes()).unwrap_err(), KeyError::NoCertificate);
    }

    #[test]
    fn leaf_selection() {
        let leaf_a = leaf("a");
        let leaf_b = leaf("b");
        let mut ca = leaf("ca");
        ca.is_ca = true;
        assert_eq!(leaf_certificate(&[ca.clone(), leaf_a.clone()]).unwrap(), &leaf_a);
        assert_eq!(
            leaf_certificate(std::slice::from_ref(&ca)).unwrap_err(),
            "the certificate bundle holds no leaf (non-CA) certificate"
        );
        assert_eq!(
            leaf_certificate(&[leaf_a, leaf_b]).unwrap_err(),
            "the certificate bundle holds more than one leaf (non-CA) certificate"
        );
    }

    #[test]
    fn common_name_matching() {
        let cases = [
            ("example.com/app", "example.com/app", true),
            ("example.com/app", "example.com/app2", false),
            ("example.com/*", "example.com/app", true),
            ("example.com/app*", "example.com/app", true),
            ("example.com/a**", "example.com/app", true),
            ("*", "anything", true),
            ("example.org/*", "example.com/app", false),
            ("Example.com/app", "example.com/app", false),
            ("*example.com", "example.com", false),
        ];
        for (common_name, gun, expected) in cases {
            assert_eq!(common_name_matches_gun(common_name, gun), expected, "{common_name} vs {gun}");
        }
    }

    fn check(cert: &Certificate, gun: &str, now: DateTime<Utc>, validity: bool, expected: Result<(), &str>) {
        assert_eq!(
            check_root_certificate(cert, gun, now, validity),
            expected.map_err(str::to_owned),
            "gun {gun}, now {now}, check_validity {validity}"
        );
    }

    #[test]
    fn root_certificate_rules() {
        let now = at(2030, 6, 1);
        let good = leaf("example.com/app");
        check(&good, "example.com/app", now, true, Ok(()));
        check(
            &good,
            "example.com/other",
            now,
            true,
            Err("root certificate common name \"example.com/app\" does not match \"example.com/other\""),
        );
        check(&leaf("example.com/*"), "example.com/app", now, true, Ok(()));

        let mut no_name = good.clone();
        no_name.common_name = None;
        check(&no_name, "example.com/app", now, false, Err("root certificate has no common name"));

        let mut ca = good.clone();
        ca.is_ca = true;
        check(&ca, "example.com/app", now, false, Err("root certificate is a CA certificate, not a leaf"));

        let mut window = good.clone();
        window.not_before = at(2036, 1, 1);
        check(&window, "example.com/app", now, false, Err("root certificate validity window is invalid"));

        let sha1 = parse_pem_chain(SHA1_P384_PEM).unwrap().remove(0);
        check(&sha1, "example.com/app", now, false, Err("root certificate uses a SHA-1 signature algorithm"));

        let rsa_short = parse_pem_chain(RSA1024_PEM).unwrap().remove(0);
        check(
            &rsa_short,
            "example.com/app",
            now,
            false,
            Err("root certificate RSA key has 1024 bits, fewer than 2048"),
        );
        let mut rsa_ok = good.clone();
        rsa_ok.public_key = CertKey::Rsa { bits: 2048 };
        check(&rsa_ok, "example.com/app", now, true, Ok(()));
    }

    #[test]
    fn root_certificate_validity() {
        let cert = leaf("example.com/app"); // 2025-01-01 .. 2035-01-01
        let expired = at(2035, 1, 2);
        check(&cert, "example.com/app", expired, true, Err("root certificate expired at 2035-01-01T00:00:00+00:00"));
        check(&cert, "example.com/app", expired, false, Ok(()));
        // The last instant of the window is still valid.
        check(&cert, "example.com/app", at(2035, 1, 1), true, Ok(()));
        // One day of leeway for a not_before in the future.
        check(&cert, "example.com/app", at(2024, 12, 31), true, Ok(()));
        let too_early = at(2024, 12, 30);
        check(
            &cert,
            "example.com/app",
            too_early,
            true,
            Err("root certificate is not valid before 2025-01-01T00:00:00+00:00"),
        );
        check(&cert, "example.com/app", too_early, false, Ok(()));
    }

    #[test]
    fn bit_lengths() {
        let cases: [(&[u8], usize); 6] =
            [(&[], 0), (&[0, 0], 0), (&[1], 1), (&[0, 0x80, 0], 16), (&[0x7f, 0xff], 15), (&[0x01, 0, 0], 17)];
        for (input, expected) in cases {
            assert_eq!(bit_length(input), expected, "{input:?}");
        }
    }

    #[test]
    fn classify_rejects_bad_spki() {
        let cases: &[(&[u8], KeyError)] = &[
            (b"", KeyError::InvalidPublicKey("not a DER SubjectPublicKeyInfo")),
            (b"\x30\x00", KeyError::InvalidPublicKey("not a DER SubjectPublicKeyInfo")),
        ];
        for (input, expected) in cases {
            assert_eq!(CertKey::from_spki(input).unwrap_err(), *expected);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        spki.push(0);
        assert_eq!(
            CertKey::from_spki(&spki).unwrap_err(),
            KeyError::InvalidPublicKey("trailing data after the SubjectPublicKeyInfo")
        );
    }
}
