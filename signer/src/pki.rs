//! Secret files the operator generates with the binary: a small PKI for the signer's mutual TLS
//! (`tufa-signer gen-certs`) and key-encryption keys (`tufa-signer gen-kek`). Private keys are
//! written with mode 0600 and never overwrite an existing file unless asked to.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use chrono::{Datelike as _, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tufa_common::files::{self, Access, FileError};
use zeroize::Zeroizing;

use crate::backend::software::KEK_LEN;

/// Common name of the generated CA.
pub const CA_COMMON_NAME: &str = "Tufa signer CA";
/// Common name of the generated signer (server) certificate.
pub const SIGNER_COMMON_NAME: &str = "tufa-signer";
/// Default common name of the generated client certificate.
pub const DEFAULT_CLIENT_NAME: &str = "tufa-server";
/// Validity of the CA, in years.
const CA_YEARS: i32 = 10;
/// Validity of the leaf certificates, in years.
const LEAF_YEARS: i32 = 3;

/// Why generating or writing secrets failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A name is not usable in a certificate.
    #[error("invalid certificate name {0:?}")]
    InvalidName(String),
    /// A file could not be written.
    #[error("cannot write {path}: {reason}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file could not be created or written.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A certificate and its private key, both PEM.
pub struct CertifiedPem {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8), zeroized on drop.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for CertifiedPem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CertifiedPem").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// The three certificates of a signer deployment.
#[derive(Debug)]
pub struct Pki {
    /// The CA that issues both leaves; it is the signer's `--client-ca` and the server's trust anchor.
    pub ca: CertifiedPem,
    /// The signer's server certificate.
    pub signer: CertifiedPem,
    /// The client certificate tufa-server presents.
    pub client: CertifiedPem,
}

fn validity(params: &mut CertificateParams, years: i32) {
    let today = Utc::now().date_naive();
    // Day 28 exists in every month, so these dates are always valid.
    let day = u8::try_from(today.day().min(28)).unwrap_or(1);
    let month = u8::try_from(today.month()).unwrap_or(1);
    // Start a day early to tolerate clock skew between hosts.
    let yesterday = today.pred_opt().unwrap_or(today);
    let start_day = u8::try_from(yesterday.day().min(28)).unwrap_or(1);
    let start_month = u8::try_from(yesterday.month()).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(yesterday.year(), start_month, start_day);
    params.not_after = rcgen::date_time_ymd(today.year() + years, month, day);
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

fn generate_error(error: rcgen::Error) -> PkiError {
    PkiError::Generate(error.to_string())
}

/// Generates a CA, a signer certificate valid for `localhost`, `127.0.0.1` and `signer_names`,
/// and a client certificate with common name `client_name`. All keys are ECDSA P-256.
pub fn generate_pki(signer_names: &[String], client_name: &str) -> Result<Pki, PkiError> {
    if client_name.is_empty() || client_name.chars().any(char::is_control) {
        return Err(PkiError::InvalidName(client_name.to_owned()));
    }
    let ca_key = KeyPair::generate().map_err(generate_error)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
    ca_params.distinguished_name = common_name(CA_COMMON_NAME);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca_params, CA_YEARS);
    let ca_key_pem = Zeroizing::new(ca_key.serialize_pem());
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generate_error)?;

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for name in signer_names {
        if name.is_empty() || name.chars().any(|character| character.is_control() || character.is_whitespace()) {
            return Err(PkiError::InvalidName(name.clone()));
        }
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let signer_key = KeyPair::generate().map_err(generate_error)?;
    let mut signer_params =
        CertificateParams::new(names.clone()).map_err(|_| PkiError::InvalidName(names.join(", ")))?;
    signer_params.distinguished_name = common_name(SIGNER_COMMON_NAME);
    signer_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    signer_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    signer_params.use_authority_key_identifier_extension = true;
    validity(&mut signer_params, LEAF_YEARS);
    let signer_cert = signer_params.signed_by(&signer_key, &ca).map_err(generate_error)?;

    let client_key = KeyPair::generate().map_err(generate_error)?;
    let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
    client_params.distinguished_name = common_name(client_name);
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.use_authority_key_identifier_extension = true;
    validity(&mut client_params, LEAF_YEARS);
    let client_cert = client_params.signed_by(&client_key, &ca).map_err(generate_error)?;

    Ok(Pki {
        ca: CertifiedPem { cert_pem: ca.pem(), key_pem: ca_key_pem },
        signer: CertifiedPem { cert_pem: signer_cert.pem(), key_pem: Zeroizing::new(signer_key.serialize_pem()) },
        client: CertifiedPem { cert_pem: client_cert.pem(), key_pem: Zeroizing::new(client_key.serialize_pem()) },
    })
}

/// Writes `contents` to `path`, readable as `access` says; refuses to replace an existing file
/// unless `overwrite`.
pub fn write_file(path: &Path, contents: &[u8], access: Access, overwrite: bool) -> Result<(), PkiError> {
    files::write_new_file(path, contents, access, overwrite).map_err(|error| {
        if error.io_kind() == Some(std::io::ErrorKind::AlreadyExists) {
            PkiError::Write { path: path.to_owned(), reason: "the file exists (use --force to overwrite)".to_owned() }
        } else {
            PkiError::File(error)
        }
    })
}

/// Writes the PKI into `dir` (created if missing): `ca.crt`, `ca.key`, `signer.crt`,
/// `signer.key`, `client.crt`, `client.key`. Returns the files written.
pub fn write_pki(dir: &Path, pki: &Pki, overwrite: bool) -> Result<Vec<PathBuf>, PkiError> {
    std::fs::create_dir_all(dir)
        .map_err(|error| PkiError::Write { path: dir.to_owned(), reason: error.to_string() })?;
    let outputs: [(&str, &[u8], Access); 6] = [
        ("ca.crt", pki.ca.cert_pem.as_bytes(), Access::Public),
        ("ca.key", pki.ca.key_pem.as_bytes(), Access::Private),
        ("signer.crt", pki.signer.cert_pem.as_bytes(), Access::Public),
        ("signer.key", pki.signer.key_pem.as_bytes(), Access::Private),
        ("client.crt", pki.client.cert_pem.as_bytes(), Access::Public),
        ("client.key", pki.client.key_pem.as_bytes(), Access::Private),
    ];
    if !overwrite {
        for (name, _, _) in &outputs {
            let path = dir.join(name);
            if path.exists() {
                return Err(PkiError::Write { path, reason: "the file exists (use --force to overwrite)".to_owned() });
            }
        }
    }
    let mut written = Vec::with_capacity(outputs.len());
    for (name, contents, access) in outputs {
        let path = dir.join(name);
        write_file(&path, contents, access, overwrite)?;
        written.push(path);
    }
    Ok(written)
}

/// Creates a new KEK file at `path`: 32 random bytes as 64 hex digits and a newline, mode 0600.
/// Never overwrites.
pub fn write_new_kek(path: &Path) -> Result<(), PkiError> {
    let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
    SystemRandom::new()
        .fill(bytes.as_mut_slice())
        .map_err(|_| PkiError::Generate("the system random generator failed".to_owned()))?;
    let mut text = Zeroizing::new(hex::encode(bytes.as_slice()));
    text.push('\n');
    write_file(path, text.as_bytes(), Access::Private, false)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    use super::*;
    use crate::backend::software::Kek;

    #[test]
    fn pki_files_have_the_right_modes_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate_pki(&["signer.internal".to_owned(), "10.1.2.3".to_owned()], DEFAULT_CLIENT_NAME).unwrap();
        let written = write_pki(dir.path(), &pki, false).unwrap();
        assert_eq!(written.len(), 6);
        for path in &written {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let expected = if path.extension().unwrap() == "key" { 0o600 } else { 0o644 };
            assert_eq!(mode, expected, "{}", path.display());
        }
        let signer = std::fs::read(dir.path().join("signer.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(&signer).unwrap();
        let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let names = certificate.subject_alternative_name().unwrap().unwrap().value.general_names.len();
        assert_eq!(names, 4);
        let client = std::fs::read(dir.path().join("client.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(&client).unwrap();
        let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert_eq!(certificate.subject().to_string(), "CN=tufa-server");

        let error = write_pki(dir.path(), &pki, false).unwrap_err();
        assert!(error.to_string().contains("--force"), "{error}");
        write_pki(dir.path(), &pki, true).unwrap();
    }

    #[test]
    fn kek_files_are_private_and_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        write_new_kek(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        Kek::from_file("k", &path).unwrap();
        // An existing KEK is never overwritten.
        let existing = std::fs::read(&path).unwrap();
        assert_eq!(
            write_new_kek(&path).unwrap_err().to_string(),
            format!("cannot write {}: the file exists (use --force to overwrite)", path.display())
        );
        assert_eq!(std::fs::read(&path).unwrap(), existing);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(generate_pki(&["bad name".to_owned()], "x"), Err(PkiError::InvalidName(_))));
        assert!(matches!(generate_pki(&[], ""), Err(PkiError::InvalidName(_))));
    }
}
