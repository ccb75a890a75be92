//! A throwaway test PKI made with the `openssl` command: one P-256 CA that issues server
//! and client certificates, plus self-signed delegation certificates.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run_tool;

/// A certificate file and the unencrypted private key file that belongs to it.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM PKCS#8 private key, unencrypted.
    pub key: PathBuf,
}

/// A certificate authority living in one directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedKey,
}

/// What a certificate issued by [`Pki::issue`] may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server certificate.
    Server,
    /// A TLS client certificate (for mutual TLS, e.g. notary-server towards a signer).
    Client,
}

impl Pki {
    /// Creates a CA (`ca.crt`, `ca.key`) in `dir`, which is created if needed.
    pub fn create(dir: &Path) -> Pki {
        fs::create_dir_all(dir).expect("create PKI directory");
        let ca = CertifiedKey { cert: dir.join("ca.crt"), key: dir.join("ca.key") };
        generate_p256_key(&ca.key);
        let config = dir.join("ca.cnf");
        fs::write(
            &config,
            "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
             [dn]\nCN = tufa test CA\n\
             [ext]\nbasicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n",
        )
        .expect("write CA openssl config");
        run_tool(
            Command::new("openssl")
                .args(["req", "-new", "-x509", "-sha256", "-days", "30", "-config"])
                .arg(&config)
                .arg("-key")
                .arg(&ca.key)
                .arg("-out")
                .arg(&ca.cert),
        );
        Pki { dir: dir.to_path_buf(), ca }
    }

    /// The CA certificate clients should trust.
    pub fn ca_cert(&self) -> &Path {
        &self.ca.cert
    }

    /// Issues a certificate named `name` (also the file stem) for the given DNS names and IP
    /// addresses, e.g. `&["localhost", "127.0.0.1"]`.
    pub fn issue(&self, name: &str, hosts: &[&str], usage: Usage) -> CertifiedKey {
        let issued =
            CertifiedKey { cert: self.dir.join(format!("{name}.crt")), key: self.dir.join(format!("{name}.key")) };
        generate_p256_key(&issued.key);
        let csr = self.dir.join(format!("{name}.csr"));
        run_tool(
            Command::new("openssl")
                .args(["req", "-new", "-sha256", "-subj"])
                .arg(format!("/CN={name}"))
                .arg("-key")
                .arg(&issued.key)
                .arg("-out")
                .arg(&csr),
        );
        let alt_names: Vec<String> =
            hosts
                .iter()
                .map(|host| {
                    if host.parse::<std::net::IpAddr>().is_ok() { format!("IP:{host}") } else { format!("DNS:{host}") }
                })
                .collect();
        let extended_usage = match usage {
            Usage::Server => "serverAuth",
            Usage::Client => "clientAuth",
        };
        let mut extensions = format!(
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = {extended_usage}\n"
        );
        if !alt_names.is_empty() {
            extensions.push_str(&format!("subjectAltName = {}\n", alt_names.join(", ")));
        }
        let extensions_file = self.dir.join(format!("{name}.ext"));
        fs::write(&extensions_file, extensions).expect("write certificate extensions");
        run_tool(
            Command::new("openssl")
                .args(["x509", "-req", "-sha256", "-days", "30", "-set_serial"])
                .arg(serial())
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca.cert)
                .arg("-CAkey")
                .arg(&self.ca.key)
                .arg("-extfile")
                .arg(&extensions_file)
                .arg("-out")
                .arg(&issued.cert),
        );
        issued
    }
}

/// Creates a P-256 key and a self-signed certificate with subject `CN=<common_name>` in
/// `dir` (`<stem>.key`, `<stem>.crt`): the form `notary delegation add` and
/// `docker trust signer add` accept for a delegation key.
pub fn self_signed(dir: &Path, stem: &str, common_name: &str) -> CertifiedKey {
    let pair = CertifiedKey { cert: dir.join(format!("{stem}.crt")), key: dir.join(format!("{stem}.key")) };
    generate_p256_key(&pair.key);
    run_tool(
        Command::new("openssl")
            .args(["req", "-new", "-x509", "-sha256", "-days", "365", "-subj"])
            .arg(format!("/CN={common_name}"))
            .arg("-key")
            .arg(&pair.key)
            .arg("-out")
            .arg(&pair.cert),
    );
    pair
}

/// Writes an unencrypted PKCS#8 P-256 private key (`-----BEGIN PRIVATE KEY-----`).
fn generate_p256_key(path: &Path) {
    run_tool(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
            .arg(path),
    );
}

/// A serial number unlikely to repeat between two certificates of one CA.
fn serial() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{}", nanos ^ u128::from(std::process::id()))
}
