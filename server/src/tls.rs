//! TLS material and rustls configurations: the generated local CA and server certificate, and the
//! server and client configs, always built on the aws-lc-rs provider (never the process default).
//!
//! Generated files live in `<data_dir>/tls/` (mode 0700): `ca.crt`, `ca.key`, `server.crt`, `server.key`,
//! keys with mode 0600. The CA (P-256, ten years) is created once and then only reused; the server
//! certificate (P-256, one year) is issued again whenever its names no longer match the configuration,
//! it expires within 30 days, it no longer chains to the CA, or its key does not match it.
//! Each file is written to a temporary name and renamed into place, so a crash leaves either the old
//! file or the new one; a key written without its certificate is caught by the key-match check.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tufa_common::files::{self, Access, FileError};
use zeroize::Zeroizing;

const CA_COMMON_NAME: &str = "Tufa local CA";
const SERVER_COMMON_NAME: &str = "tufa-server";
const DAY_SECS: u64 = 24 * 60 * 60;
const CA_LIFETIME_SECS: u64 = 3650 * DAY_SECS;
const SERVER_LIFETIME_SECS: u64 = 365 * DAY_SECS;
/// A server certificate expiring sooner than this is replaced at start-up.
const RENEW_BEFORE_SECS: u64 = 30 * DAY_SECS;
/// `notBefore` is set this far in the past to tolerate clients whose clocks run slightly behind.
const BACKDATE_SECS: u64 = 60 * 60;
/// Names every generated server certificate carries.
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// ALPN protocols offered by both configs, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Largest PEM file (certificate chain, CA bundle or private key) read.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;
/// TLS 1.3 and 1.2 only.
static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Paths of the generated TLS files the server uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedTls {
    /// The local CA certificate; give it to clients (`notary --tlscacert`, Docker's `certs.d`).
    pub ca_cert: PathBuf,
    /// The server certificate, signed by the local CA.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

/// Why TLS material could not be produced or loaded. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or directory could not be read, written or created.
    #[error("cannot {action} {path}: {source}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "read" or "write".
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A certificate file is not valid PEM or holds no certificate.
    #[error("{path} is not a usable PEM certificate file: {reason}", path = path.display())]
    BadCertificateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file holds no usable private key. The file's content is never quoted.
    #[error(
        "{path} holds no usable private key (expected one PEM PKCS#8, PKCS#1 or SEC1 key): {reason}",
        path = path.display()
    )]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key in {key} does not match the certificate in {cert}", key = key.display(), cert = cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the material for another reason.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being configured, naming the files.
        context: String,
        /// The rustls error.
        source: rustls::Error,
    },
    /// A generated file could not be written, or a generated private key is readable by group or others.
    #[error(transparent)]
    File(#[from] FileError),
    /// A configured certificate name is neither an IP address nor a DNS name.
    #[error("{name:?} is neither an IP address nor a valid DNS name")]
    InvalidName {
        /// The name as configured.
        name: String,
    },
    /// The generated material in the directory is inconsistent or could not be generated.
    #[error("TLS material in {dir}: {reason}", dir = dir.display())]
    Generate {
        /// `<data_dir>/tls`.
        dir: PathBuf,
        /// What went wrong and how to fix it.
        reason: String,
    },
}

/// Creates or reuses the local CA and server certificate in `<data_dir>/tls/` and returns their paths.
///
/// The server certificate covers `localhost`, `127.0.0.1`, `::1` and every entry of `extra_names`
/// (IP addresses become IP SANs, DNS names are compared case-insensitively).
pub fn ensure_generated(data_dir: &Path, extra_names: &[String]) -> Result<GeneratedTls, TlsError> {
    let names = SubjectNames::new(extra_names)?;
    let dir = data_dir.join("tls");
    create_private_dir(&dir)?;
    let paths = GeneratedTls { ca_cert: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") };
    let now = unix_now(&dir)?;
    let ca = load_or_create_ca(&dir, &paths.ca_cert, &dir.join("ca.key"), now)?;
    match reason_to_reissue(&paths, &names, &ca, now)? {
        None => tracing::debug!(path = %paths.cert.display(), "reusing the generated server certificate"),
        Some(reason) => {
            tracing::info!(path = %paths.cert.display(), reason, "issuing a new server certificate");
            issue_server_cert(&dir, &paths, &names, &ca, now, SERVER_LIFETIME_SECS)?;
        }
    }
    Ok(paths)
}

/// Builds the listener's TLS configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, and with
/// `client_ca` a required client certificate that must chain to one of the CAs in that file.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert_file)?;
    let key = read_private_key(key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls { context: "cannot select TLS versions".to_owned(), source })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let roots = read_roots(ca_file)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().map_err(|error| {
                    TlsError::BadCertificateFile {
                        path: ca_file.to_path_buf(),
                        reason: format!("cannot verify clients with it: {error}"),
                    }
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|source| pair_error(cert_file, key_file, source))?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Builds a client configuration that trusts only the CAs in `ca` and, if given, authenticates
/// with a certificate chain and key (mutual TLS to the signer). ALPN offers `h2` then `http/1.1`.
pub fn client_config(ca: &Path, client_cert_and_key: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls { context: "cannot select TLS versions".to_owned(), source })?
        .with_root_certificates(roots);
    let mut config = match client_cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => builder
            .with_client_auth_cert(read_certificates(cert_file)?, read_private_key(key_file)?)
            .map_err(|source| pair_error(cert_file, key_file, source))?,
    };
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn pair_error(cert: &Path, key: &Path, source: rustls::Error) -> TlsError {
    match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        source => TlsError::Rustls {
            context: format!("cannot use certificate {} with key {}", cert.display(), key.display()),
            source,
        },
    }
}

/// Reads every certificate in a PEM file, refusing a file without any.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad_pem = |error: pem::Error| match error {
        pem::Error::Io(source) => TlsError::Io { path: path.to_path_buf(), action: "read", source },
        other => TlsError::BadCertificateFile { path: path.to_path_buf(), reason: other.to_string() },
    };
    let bytes = files::read_limited("certificate file", path, MAX_PEM_FILE_BYTES)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(bad_pem)?;
    if certificates.is_empty() {
        return Err(TlsError::BadCertificateFile {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE section found".to_owned(),
        });
    }
    Ok(certificates)
}

/// Reads the first private key in a PEM file. Parse errors are summarised, never quoted.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = files::read_limited("private key file", path, MAX_PEM_FILE_BYTES)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        pem::Error::Io(source) => TlsError::Io { path: path.to_path_buf(), action: "read", source },
        pem::Error::NoItemsFound => {
            TlsError::BadKeyFile { path: path.to_path_buf(), reason: "no private key section found" }
        }
        _ => TlsError::BadKeyFile { path: path.to_path_buf(), reason: "malformed PEM" },
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|error| TlsError::BadCertificateFile {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {error}"),
        })?;
    }
    Ok(roots)
}

/// One name on the server certificate.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SubjectName {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for SubjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(address) => address.fmt(f),
        }
    }
}

/// The full, de-duplicated set of names a generated server certificate must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SubjectNames(BTreeSet<SubjectName>);

impl SubjectNames {
    fn new(extra_names: &[String]) -> Result<Self, TlsError> {
        let mut names = BTreeSet::new();
        for name in DEFAULT_NAMES.iter().copied().chain(extra_names.iter().map(String::as_str)) {
            names.insert(parse_name(name)?);
        }
        Ok(Self(names))
    }

    fn to_sans(&self) -> Result<Vec<SanType>, rcgen::Error> {
        self.0
            .iter()
            .map(|name| match name {
                SubjectName::Ip(address) => Ok(SanType::IpAddress(*address)),
                SubjectName::Dns(name) => Ok(SanType::DnsName(Ia5String::try_from(name.as_str())?)),
            })
            .collect()
    }
}

fn parse_name(name: &str) -> Result<SubjectName, TlsError> {
    let trimmed = name.trim();
    if let Ok(address) = trimmed.parse::<IpAddr>() {
        return Ok(SubjectName::Ip(address));
    }
    let lower = trimmed.to_ascii_lowercase();
    match rustls_pki_types::DnsName::try_from(lower.as_str()) {
        Ok(_) if !lower.is_empty() => Ok(SubjectName::Dns(lower)),
        _ => Err(TlsError::InvalidName { name: name.to_owned() }),
    }
}

/// The loaded or freshly created local CA.
struct LocalCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_after: u64,
}

fn load_or_create_ca(dir: &Path, cert_path: &Path, key_path: &Path, now: u64) -> Result<LocalCa, TlsError> {
    let generate_error = |reason: String| TlsError::Generate { dir: dir.to_path_buf(), reason };
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|error| generate_error(format!("cannot generate the CA key: {error}")))?;
            let not_after = now.saturating_add(CA_LIFETIME_SECS);
            let params = ca_params(dir, now.saturating_sub(BACKDATE_SECS), not_after)?;
            let cert = params
                .self_signed(&key)
                .map_err(|error| generate_error(format!("cannot sign the CA certificate: {error}")))?;
            write_file(key_path, Zeroizing::new(key.serialize_pem()).as_bytes(), Access::Private)?;
            write_file(cert_path, cert.pem().as_bytes(), Access::Public)?;
            tracing::info!(path = %cert_path.display(), "created a local CA; clients must trust this certificate");
            Ok(LocalCa { cert: cert.der().clone(), issuer: Issuer::new(params, key), not_after })
        }
        (true, true) => {
            check_private_mode(key_path)?;
            let key = read_generated_key(key_path)?;
            let cert = read_certificates(cert_path)?
                .into_iter()
                .next()
                .ok_or_else(|| generate_error(format!("{} is empty", cert_path.display())))?;
            let parsed = ParsedCert::parse(&cert)
                .map_err(|reason| generate_error(format!("cannot parse {}: {reason}", cert_path.display())))?;
            let start_over =
                format!("to start over, delete {} (clients must then trust the new ca.crt)", dir.display());
            if parsed.subject != format!("CN={CA_COMMON_NAME}") {
                return Err(generate_error(format!(
                    "{} is not a Tufa local CA (subject {}); {start_over}",
                    cert_path.display(),
                    parsed.subject
                )));
            }
            if parsed.public_key != key.subject_public_key_info() {
                return Err(generate_error(format!(
                    "{} and {} do not belong together; {start_over}",
                    cert_path.display(),
                    key_path.display()
                )));
            }
            if parsed.not_after <= now {
                return Err(generate_error(format!("the local CA {} has expired; {start_over}", cert_path.display())));
            }
            if parsed.not_after < now.saturating_add(RENEW_BEFORE_SECS) {
                tracing::warn!(path = %cert_path.display(), "the local CA expires within 30 days; {start_over}");
            }
            // Re-deriving the CA's parameters reproduces its subject name and key identifier, which
            // is all an `Issuer` needs; the chain check after issuing confirms the result.
            let params = ca_params(dir, parsed.not_before, parsed.not_after)?;
            Ok(LocalCa { cert, issuer: Issuer::new(params, key), not_after: parsed.not_after })
        }
        (has_cert, _) => {
            let (present, missing) = if has_cert { (cert_path, key_path) } else { (key_path, cert_path) };
            Err(generate_error(format!(
                "found {} but not {}; restore it, or delete {} to create a new CA (clients must then \
                 trust the new ca.crt)",
                present.display(),
                missing.display(),
                dir.display()
            )))
        }
    }
}

fn ca_params(dir: &Path, not_before: u64, not_after: u64) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after);
    params.serial_number = Some(random_serial(dir)?);
    Ok(params)
}

/// Returns `None` if the existing server certificate can be kept, or why it must be issued again.
fn reason_to_reissue(
    paths: &GeneratedTls,
    names: &SubjectNames,
    ca: &LocalCa,
    now: u64,
) -> Result<Option<String>, TlsError> {
    match (paths.cert.exists(), paths.key.exists()) {
        (false, false) => return Ok(Some("no server certificate yet".to_owned())),
        (true, true) => {}
        _ => return Ok(Some("the server certificate or its key is missing".to_owned())),
    }
    check_private_mode(&paths.key)?;
    let Ok(key) = read_generated_key(&paths.key) else {
        return Ok(Some("the server key cannot be read".to_owned()));
    };
    let Some(cert) = read_certificates(&paths.cert).ok().and_then(|certs| certs.into_iter().next()) else {
        return Ok(Some("the server certificate cannot be read".to_owned()));
    };
    let parsed = match ParsedCert::parse(&cert) {
        Ok(parsed) => parsed,
        Err(reason) => return Ok(Some(format!("the server certificate cannot be parsed: {reason}"))),
    };
    if parsed.public_key != key.subject_public_key_info() {
        return Ok(Some("the server key does not match the certificate".to_owned()));
    }
    if parsed.names != *names {
        return Ok(Some(format!(
            "the configured names changed (certificate has {}, configuration wants {})",
            parsed.names, names
        )));
    }
    if parsed.not_after < now.saturating_add(RENEW_BEFORE_SECS) {
        return Ok(Some("the server certificate expires within 30 days".to_owned()));
    }
    if let Err(reason) = verify_chain(&cert, &ca.cert, now) {
        return Ok(Some(format!("the server certificate does not chain to the local CA: {reason}")));
    }
    Ok(None)
}

impl fmt::Display for SubjectNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(", "))
    }
}

fn issue_server_cert(
    dir: &Path,
    paths: &GeneratedTls,
    names: &SubjectNames,
    ca: &LocalCa,
    now: u64,
    lifetime_secs: u64,
) -> Result<(), TlsError> {
    let generate_error = |reason: String| TlsError::Generate { dir: dir.to_path_buf(), reason };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|error| generate_error(format!("cannot generate the server key: {error}")))?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, SERVER_COMMON_NAME);
    params.distinguished_name = subject;
    params.subject_alt_names =
        names.to_sans().map_err(|error| generate_error(format!("invalid certificate name: {error}")))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial(dir)?);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now.saturating_sub(BACKDATE_SECS));
    // Never outlive the CA: such a certificate would fail verification before its own expiry.
    let not_after = now.saturating_add(lifetime_secs).min(ca.not_after);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|error| generate_error(format!("cannot sign the server certificate: {error}")))?;
    verify_chain(cert.der(), &ca.cert, now).map_err(|reason| {
        generate_error(format!(
            "the new server certificate does not verify against {} ({reason}); delete {} to start over",
            paths.ca_cert.display(),
            dir.display()
        ))
    })?;
    write_file(&paths.key, Zeroizing::new(key.serialize_pem()).as_bytes(), Access::Private)?;
    write_file(&paths.cert, cert.pem().as_bytes(), Access::Public)?;
    Ok(())
}

/// Checks with webpki that `cert` chains to `ca` and is valid for `localhost` at `at`.
fn verify_chain(cert: &CertificateDer<'_>, ca: &CertificateDer<'static>, at: u64) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|error| error.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| error.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|error| error.to_string())?;
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::since_unix_epoch(Duration::from_secs(at)))
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// The parts of a certificate the reuse decision needs.
struct ParsedCert {
    subject: String,
    public_key: Vec<u8>,
    names: SubjectNames,
    not_before: u64,
    not_after: u64,
}

impl ParsedCert {
    fn parse(cert: &CertificateDer<'_>) -> Result<Self, String> {
        use x509_parser::extensions::GeneralName;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|error| error.to_string())?;
        let mut names = BTreeSet::new();
        if let Some(extension) = parsed.subject_alternative_name().map_err(|error| error.to_string())? {
            for name in &extension.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => {
                        names.insert(SubjectName::Dns(dns.to_ascii_lowercase()));
                    }
                    GeneralName::IPAddress(bytes) => {
                        let address = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                            16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                            _ => None,
                        };
                        names.insert(SubjectName::Ip(address.ok_or("malformed IP address SAN")?));
                    }
                    _ => {}
                }
            }
        }
        let validity = parsed.validity();
        let seconds = |timestamp: i64| u64::try_from(timestamp).unwrap_or(0);
        Ok(Self {
            subject: parsed.subject().to_string(),
            public_key: parsed.public_key().raw.to_vec(),
            names: SubjectNames(names),
            not_before: seconds(validity.not_before.timestamp()),
            not_after: seconds(validity.not_after.timestamp()),
        })
    }
}

/// Loads a key this module generated (PKCS#8 PEM). Its text is zeroized after parsing.
fn read_generated_key(path: &Path) -> Result<KeyPair, TlsError> {
    let text = files::read_limited_text("generated private key file", path, MAX_PEM_FILE_BYTES)?;
    KeyPair::from_pem(&text)
        .map_err(|_| TlsError::BadKeyFile { path: path.to_path_buf(), reason: "not a PKCS#8 key generated by Tufa" })
}

fn random_serial(dir: &Path) -> Result<SerialNumber, TlsError> {
    let mut bytes = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TlsError::Generate {
        dir: dir.to_path_buf(),
        reason: "the system random number generator failed".to_owned(),
    })?;
    // Keep the serial positive and exactly 16 bytes long once DER-encoded.
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    Ok(SerialNumber::from(bytes))
}

fn unix_now(dir: &Path) -> Result<u64, TlsError> {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).map_err(|_| TlsError::Generate {
        dir: dir.to_path_buf(),
        reason: "the system clock is set before 1970".to_owned(),
    })
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    files::create_private_dir(dir).map_err(|error| {
        TlsError::File(error.with_hint("choose a writable --data-dir or fix the owner of its directory"))
    })
}

fn check_private_mode(path: &Path) -> Result<(), TlsError> {
    let metadata =
        fs::metadata(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), action: "inspect", source })?;
    Ok(files::check_owner_only("generated TLS private key", path, &metadata)?)
}

/// Writes `contents` to `path` atomically (see [`files::replace_file`]).
fn write_file(path: &Path, contents: &[u8], access: Access) -> Result<(), TlsError> {
    Ok(files::replace_file(path, contents, access)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn verify_name(tls: &GeneratedTls, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&tls.ca_cert).unwrap()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        let cert = CertificateDer::from_pem_file(&tls.cert).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &ServerName::try_from(name.to_owned()).unwrap(), &[], UnixTime::now())
            .map(|_| ())
    }

    /// Checks that the certificate was refused because it does not cover `name` (and for no other
    /// reason, such as an untrusted issuer).
    fn assert_not_valid_for(result: Result<(), rustls::Error>, name: &str) {
        match result {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected,
                ..
            })) => assert_eq!(expected, ServerName::try_from(name.to_owned()).unwrap()),
            other => panic!("expected a name mismatch for {name}, got {other:?}"),
        }
    }

    #[test]
    fn generated_files_are_private_and_verify_for_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &["Tufa.Example".into(), "192.0.2.7".into()]).unwrap();
        let tls_dir = dir.path().join("tls");
        assert_eq!(tls.ca_cert, tls_dir.join("ca.crt"));
        assert_eq!(tls.cert, tls_dir.join("server.crt"));
        assert_eq!(tls.key, tls_dir.join("server.key"));
        assert_eq!(mode(&tls_dir), 0o700);
        assert_eq!(mode(&tls_dir.join("ca.key")), 0o600);
        assert_eq!(mode(&tls.key), 0o600);
        assert_eq!(mode(&tls.cert), 0o644);
        for name in ["localhost", "127.0.0.1", "::1", "tufa.example", "192.0.2.7"] {
            verify_name(&tls, name).unwrap_or_else(|error| panic!("{name}: {error}"));
        }
        assert_not_valid_for(verify_name(&tls, "other.example"), "other.example");
        assert!(!tls_dir.join("server.crt.tmp").exists());

        let ca = ParsedCert::parse(&CertificateDer::from_pem_file(&tls.ca_cert).unwrap()).unwrap();
        assert_eq!(ca.subject, "CN=Tufa local CA");
        let ca_years = (ca.not_after - ca.not_before) / (365 * DAY_SECS);
        assert_eq!(ca_years, 10);
        let server = ParsedCert::parse(&CertificateDer::from_pem_file(&tls.cert).unwrap()).unwrap();
        let server_days = (server.not_after - server.not_before) / DAY_SECS;
        assert_eq!(server_days, 365);

        // The server config loads the generated pair.
        server_config(&tls.cert, &tls.key, None).unwrap();
        client_config(&tls.ca_cert, None).unwrap();
    }

    #[test]
    fn second_call_reuses_and_a_name_change_reissues_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_generated(dir.path(), &["a.example".into()]).unwrap();
        let ca = fs::read(&first.ca_cert).unwrap();
        let ca_key = fs::read(dir.path().join("tls/ca.key")).unwrap();
        let cert = fs::read(&first.cert).unwrap();
        let key = fs::read(&first.key).unwrap();

        // Same names, different spelling and order: reused byte for byte.
        let second = ensure_generated(dir.path(), &["A.EXAMPLE".into(), "localhost".into()]).unwrap();
        assert_eq!(second, first);
        assert_eq!(fs::read(&second.cert).unwrap(), cert);
        assert_eq!(fs::read(&second.key).unwrap(), key);

        let third = ensure_generated(dir.path(), &["b.example".into()]).unwrap();
        assert_ne!(fs::read(&third.cert).unwrap(), cert);
        assert_ne!(fs::read(&third.key).unwrap(), key);
        assert_eq!(fs::read(&third.ca_cert).unwrap(), ca);
        assert_eq!(fs::read(dir.path().join("tls/ca.key")).unwrap(), ca_key);
        verify_name(&third, "b.example").unwrap();
        assert_not_valid_for(verify_name(&third, "a.example"), "a.example");

        // Removing a name also re-issues.
        let third_cert = fs::read(&third.cert).unwrap();
        ensure_generated(dir.path(), &[]).unwrap();
        assert_ne!(fs::read(&third.cert).unwrap(), third_cert);
        assert_not_valid_for(verify_name(&third, "b.example"), "b.example");
    }

    #[test]
    fn expiring_server_certificate_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &[]).unwrap();
        let tls_dir = dir.path().join("tls");
        let now = unix_now(&tls_dir).unwrap();
        let ca = load_or_create_ca(&tls_dir, &tls.ca_cert, &tls_dir.join("ca.key"), now).unwrap();
        let names = SubjectNames::new(&[]).unwrap();
        issue_server_cert(&tls_dir, &tls, &names, &ca, now, 10 * DAY_SECS).unwrap();
        let short = fs::read(&tls.cert).unwrap();
        assert_eq!(
            reason_to_reissue(&tls, &names, &ca, now).unwrap().as_deref(),
            Some("the server certificate expires within 30 days")
        );
        ensure_generated(dir.path(), &[]).unwrap();
        assert_ne!(fs::read(&tls.cert).unwrap(), short);
        assert_eq!(reason_to_reissue(&tls, &names, &ca, now).unwrap(), None);
    }

    #[test]
    fn mismatched_or_foreign_server_material_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &[]).unwrap();
        // A key that does not belong to the certificate.
        write_file(&tls.key, KeyPair::generate().unwrap().serialize_pem().as_bytes(), Access::Private).unwrap();
        let cert = fs::read(&tls.cert).unwrap();
        ensure_generated(dir.path(), &[]).unwrap();
        assert_ne!(fs::read(&tls.cert).unwrap(), cert);
        server_config(&tls.cert, &tls.key, None).unwrap();

        // A certificate from another CA with the right names.
        let other = tempfile::tempdir().unwrap();
        let foreign = ensure_generated(other.path(), &[]).unwrap();
        fs::copy(&foreign.cert, &tls.cert).unwrap();
        fs::copy(&foreign.key, &tls.key).unwrap();
        ensure_generated(dir.path(), &[]).unwrap();
        assert_ne!(fs::read(&tls.cert).unwrap(), fs::read(&foreign.cert).unwrap());
        verify_name(&tls, "localhost").unwrap();

        // A deleted certificate.
        fs::remove_file(&tls.cert).unwrap();
        ensure_generated(dir.path(), &[]).unwrap();
        verify_name(&tls, "localhost").unwrap();
    }

    #[test]
    fn inconsistent_ca_material_is_an_error_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &[]).unwrap();
        let ca_key = dir.path().join("tls/ca.key");

        let saved = fs::read(&ca_key).unwrap();
        fs::remove_file(&ca_key).unwrap();
        let message = ensure_generated(dir.path(), &[]).unwrap_err().to_string();
        assert!(message.contains("found") && message.contains("but not") && message.contains("ca.key"), "{message}");

        // A CA key that does not match ca.crt.
        write_file(&ca_key, KeyPair::generate().unwrap().serialize_pem().as_bytes(), Access::Private).unwrap();
        let message = ensure_generated(dir.path(), &[]).unwrap_err().to_string();
        assert!(message.contains("do not belong together"), "{message}");

        // A foreign CA certificate.
        write_file(&ca_key, &saved, Access::Private).unwrap();
        let other = tempfile::tempdir().unwrap();
        let foreign = ensure_generated(other.path(), &[]).unwrap();
        fs::copy(&foreign.cert, &tls.ca_cert).unwrap();
        let message = ensure_generated(dir.path(), &[]).unwrap_err().to_string();
        assert!(message.contains("is not a Tufa local CA"), "{message}");
    }

    #[test]
    fn group_readable_generated_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &[]).unwrap();
        fs::set_permissions(&tls.key, fs::Permissions::from_mode(0o644)).unwrap();
        let message = ensure_generated(dir.path(), &[]).unwrap_err().to_string();
        assert!(message.contains(&format!("chmod 600 {}", tls.key.display())), "{message}");
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "bad name", "a..b", "-"] {
            let error = ensure_generated(dir.path(), &[name.to_owned()]).unwrap_err();
            assert!(matches!(error, TlsError::InvalidName { .. }), "{name:?}: {error}");
        }
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &[]).unwrap();
        let missing = dir.path().join("missing.pem");

        let message = server_config(&missing, &tls.key, None).unwrap_err().to_string();
        assert!(message.starts_with(&format!("cannot read {}", missing.display())), "{message}");
        let message = server_config(&tls.cert, &missing, None).unwrap_err().to_string();
        assert!(message.starts_with(&format!("cannot read {}", missing.display())), "{message}");

        // A key file given as the certificate, and a certificate given as the key.
        let message = server_config(&tls.key, &tls.key, None).unwrap_err().to_string();
        assert!(message.contains("no CERTIFICATE section found"), "{message}");
        let message = server_config(&tls.cert, &tls.cert, None).unwrap_err().to_string();
        assert!(message.contains("no private key section found"), "{message}");
        assert!(message.contains(&tls.cert.display().to_string()), "{message}");

        // Garbage inside a PEM section.
        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let message = server_config(&garbage, &tls.key, None).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{} is not a usable PEM certificate file", garbage.display())),
            "{message}"
        );

        // The CA's key with the server's certificate.
        let error = server_config(&tls.cert, &dir.path().join("tls/ca.key"), None).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
        assert!(error.to_string().contains("does not match the certificate in"), "{error}");

        let message = server_config(&tls.cert, &tls.key, Some(&missing)).unwrap_err().to_string();
        assert!(message.contains(&missing.display().to_string()), "{message}");
        let message = client_config(&missing, None).unwrap_err().to_string();
        assert!(message.contains(&missing.display().to_string()), "{message}");
        let error = client_config(&tls.ca_cert, Some((&tls.cert, &dir.path().join("tls/ca.key")))).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn server_config_offers_h2_and_http1() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_generated(dir.path(), &[]).unwrap();
        let config = server_config(&tls.cert, &tls.key, Some(&tls.ca_cert)).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}
