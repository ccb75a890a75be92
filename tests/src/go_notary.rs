//! The reference implementation: Debian's Go `notary-server` (v0.7.0), started with a
//! generated JSON config. The flows are proven against it, so a failure against tufa-server
//! points at tufa-server rather than at the harness.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::pki::{CertifiedKey, Pki, Usage};
use crate::server::{Launch, Server};

/// Where notary-server's keys come from (`trust_service` in its config).
#[derive(Debug, Clone)]
pub enum TrustService {
    /// In-process Ed25519 keys, lost on restart.
    Local,
    /// A notary-signer compatible gRPC service.
    Remote(RemoteTrustService),
}

/// `trust_service` settings for `type = remote`.
#[derive(Debug, Clone)]
pub struct RemoteTrustService {
    /// Host name the signer's certificate must be valid for.
    pub hostname: String,
    /// Signer port.
    pub port: u16,
    /// CA that verifies the signer's certificate.
    pub tls_ca_file: PathBuf,
    /// Client certificate and key for mutual TLS, if the signer requires one.
    pub tls_client: Option<CertifiedKey>,
    /// Algorithm for server-created keys: `ecdsa` or `ed25519`.
    pub key_algorithm: String,
}

/// `storage` in notary-server's config.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In-memory, lost on restart.
    Memory,
    /// An SQL database, e.g. `backend = "postgres"` with a DSN already migrated for notary.
    Sql {
        /// `postgres` or `mysql`.
        backend: String,
        /// The DSN.
        db_url: String,
    },
}

/// The parts of a notary-server config that tests vary.
#[derive(Debug, Clone)]
pub struct GoServerConfig {
    /// Key management.
    pub trust_service: TrustService,
    /// Metadata storage.
    pub storage: Storage,
    /// `logging.level`: `debug`, `info`, `warn`, `error`.
    pub logging_level: String,
}

impl Default for GoServerConfig {
    /// Local keys and memory storage: needs nothing but the binary.
    fn default() -> Self {
        GoServerConfig {
            trust_service: TrustService::Local,
            storage: Storage::Memory,
            logging_level: "info".to_owned(),
        }
    }
}

impl GoServerConfig {
    /// The same config with keys from a remote signer.
    pub fn with_remote_signer(mut self, remote: RemoteTrustService) -> Self {
        self.trust_service = TrustService::Remote(remote);
        self
    }

    /// The config file's JSON for a server listening on `http_addr` with `tls`.
    pub fn to_json(&self, http_addr: &str, tls: &CertifiedKey) -> Value {
        let trust_service = match &self.trust_service {
            TrustService::Local => json!({"type": "local"}),
            TrustService::Remote(remote) => {
                let mut service = json!({
                    "type": "remote",
                    "hostname": remote.hostname,
                    "port": remote.port.to_string(),
                    "tls_ca_file": remote.tls_ca_file,
                    "key_algorithm": remote.key_algorithm,
                });
                if let Some(client) = &remote.tls_client {
                    service["tls_client_cert"] = json!(client.cert);
                    service["tls_client_key"] = json!(client.key);
                }
                service
            }
        };
        let storage = match &self.storage {
            Storage::Memory => json!({"backend": "memory"}),
            Storage::Sql { backend, db_url } => json!({"backend": backend, "db_url": db_url}),
        };
        json!({
            "server": {
                "http_addr": http_addr,
                "tls_cert_file": tls.cert,
                "tls_key_file": tls.key,
            },
            "trust_service": trust_service,
            "storage": storage,
            "logging": {"level": self.logging_level},
        })
    }
}

/// The notary-server binary: `NOTARY_SERVER_BIN` if set, else `notary-server` from `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("NOTARY_SERVER_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("notary-server"))
}

/// Starts Go notary-server with a fresh CA and a server certificate for `127.0.0.1` and
/// `localhost`.
pub fn start(config: &GoServerConfig) -> Server {
    let dir = tempfile::Builder::new().prefix("tufa-go-notary-").tempdir().expect("create temp dir");
    let pki = Pki::create(&dir.path().join("pki"));
    let tls = pki.issue("notary-server", &["127.0.0.1", "localhost"], Usage::Server);
    let ca_cert = pki.ca_cert().to_path_buf();
    let config = config.clone();
    let config_dir = dir.path().to_path_buf();
    let command = move |port: u16| {
        let config_file = config_dir.join(format!("server-{port}.json"));
        let body = config.to_json(&format!("127.0.0.1:{port}"), &tls);
        std::fs::write(&config_file, body.to_string()).expect("write notary-server config");
        let mut command = Command::new(binary());
        command.arg("-config").arg(&config_file);
        command
    };
    Server::start(Launch {
        name: "Go notary-server".to_owned(),
        dir,
        ca_cert,
        command: Box::new(command),
        database: None,
    })
}
