//! Separate signing services: `tufa-signer` (software keys sealed under a KEK, or keys in a
//! SoftHSM token) and Debian's Go `notary-signer`, each on a free 127.0.0.1 port with its own
//! mutual-TLS PKI; and [`Stack`], a trust server (tufa-server or Go notary-server) that signs
//! through one of them.
//!
//! Command-line contracts relied on here:
//! - `tufa-signer --config <toml> --listen 127.0.0.1:<port> --data-dir <dir> --tls-cert <f>
//!   --tls-key <f> --client-ca <f>`, `tufa-signer gen-certs --out <dir>` (ca.crt, signer.crt/.key
//!   for localhost and 127.0.0.1, client.crt/.key with CN tufa-server), `tufa-signer gen-kek
//!   --out <file>` and `tufa-signer audit` (one JSON object per signature on standard output);
//! - `notary-signer -config <json>` (memory storage);
//! - `tufa-server --signer-url https://<host:port> --signer-ca <f> --signer-cert <f> --signer-key <f>`.
//!
//! A signer is ready when its gRPC health service reports both of notary's service names
//! (`grpc.health.v1.Health.KeyManagement`, `grpc.health.v1.Health.Signer`) as SERVING to a
//! client presenting an accepted certificate. It is killed on drop, and its log is printed when
//! the test failed.
//!
//! Environment:
//! - `TUFA_SIGNER_BIN`: the tufa-signer binary (default: next to tufa-server, built by
//!   `cargo build --workspace`); `NOTARY_SIGNER_BIN`: the Go signer (default `notary-signer`).
//! - `SOFTHSM2_CONF`: a SoftHSM configuration whose token directory the SoftHSM variants may
//!   create tokens in (`scripts/test.sh` creates a throwaway one). Without it those tests fail.
//!   `PKCS11_MODULE` overrides the module path (default: Debian's libsofthsm2.so).

use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::go_notary::{self, GoServerConfig, RemoteTrustService};
use crate::pki::{CertifiedKey, Pki, Usage};
use crate::postgres::PgDatabase;
use crate::process::{
    CommandOutput, LOG_TAIL_BYTES, WaitError, describe, free_port, log_tail, run_tool, run_with_timeout, spawn_logged,
    stop_and_report, wait_ready,
};
use crate::proxy::TcpProxy;
use crate::server::Server;
use crate::tufa;

/// How long a signer may take from spawn to SERVING.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC health service names notary-server requires to be SERVING (spec §4.5).
pub const HEALTH_SERVICES: [&str; 2] = ["grpc.health.v1.Health.KeyManagement", "grpc.health.v1.Health.Signer"];

/// How many times start-up is retried with a new port when the port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// The user PIN of every test token.
const TOKEN_PIN: &str = "1234";

/// The security officer PIN of every test token.
const TOKEN_SO_PIN: &str = "5678";

/// Token labels made by this process differ by this counter.
static NEXT_TOKEN: AtomicU32 = AtomicU32::new(0);

/// Where tufa-signer keeps its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBackend {
    /// Software keys sealed under a key-encryption key (a `gen-kek` file named in the config).
    Software,
    /// Keys generated in and never leaving a fresh SoftHSM token.
    SoftHsm,
}

impl KeyBackend {
    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            KeyBackend::Software => "software",
            KeyBackend::SoftHsm => "softhsm",
        }
    }
}

/// Which implementation a [`Signer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerKind {
    /// The binary under test.
    Tufa(KeyBackend),
    /// Debian's Go notary-signer (memory storage).
    GoNotary,
}

/// The mutual-TLS material of one signer.
#[derive(Debug, Clone)]
pub struct SignerTls {
    /// The CA that issued the signer's certificate: what clients must trust.
    pub ca_cert: PathBuf,
    /// The signer's own certificate (valid for `127.0.0.1` and `localhost`) and key.
    pub server: CertifiedKey,
    /// The CA the signer accepts client certificates from (at start).
    pub client_ca: PathBuf,
    /// A client certificate issued by `client_ca`, for the trust server.
    pub client: CertifiedKey,
    /// The common name of `client`.
    pub client_name: String,
}

/// Builds the signer's command line for a port and the client CA it should trust.
type SignerCommand = Box<dyn Fn(u16, &Path) -> Command>;

/// A signing service listening on `127.0.0.1:<port>` with gRPC over mutual TLS.
pub struct Signer {
    name: String,
    kind: SignerKind,
    child: Child,
    port: u16,
    tls: SignerTls,
    log: PathBuf,
    starts: usize,
    command: SignerCommand,
    /// `tufa-signer audit` with the same configuration (tufa-signer only).
    audit: Option<Box<dyn Fn() -> Command>>,
    // Dropped after the process is killed (in `Drop`), before the directory is removed.
    _held: Held,
    dir: TempDir,
}

/// What a signer uses and gives back only after it has stopped.
#[derive(Default)]
struct Held {
    /// Its SoftHSM token.
    _token: Option<SoftHsmToken>,
    /// Its PostgreSQL database.
    database: Option<PgDatabase>,
}

/// Why one start attempt failed.
enum StartFailure {
    /// The port was taken between choosing it and binding it: try another one.
    PortTaken,
    /// Anything else: give up with this description.
    Fatal(String),
}

impl Signer {
    /// Starts tufa-signer with `backend` keys and a PKI from `tufa-signer gen-certs`.
    ///
    /// The software backend reads its KEK from a `gen-kek` file named in a TOML config (path
    /// relative to the config file). The SoftHSM backend needs `SOFTHSM2_CONF`: it creates a
    /// fresh token there with `softhsm2-util` (deleted again on drop) and names it, the module
    /// and a PIN file in the config.
    pub fn tufa(backend: KeyBackend) -> Signer {
        Signer::tufa_with(backend, None)
    }

    /// Like [`Signer::tufa`], with the signer's database (keys and audit trail) in a fresh
    /// PostgreSQL database of the cluster `DATABASE_URL` names instead of SQLite. Without
    /// `DATABASE_URL` it fails.
    pub fn tufa_on_postgres(backend: KeyBackend) -> Signer {
        Signer::tufa_with(backend, Some(PgDatabase::create()))
    }

    fn tufa_with(backend: KeyBackend, database: Option<PgDatabase>) -> Signer {
        // Check the prerequisites before creating anything.
        let binary = tufa::workspace_binary("tufa-signer", "TUFA_SIGNER_BIN");
        let dir = tempfile::Builder::new().prefix("tufa-signer-").tempdir().expect("create temp dir");
        let pki_dir = dir.path().join("pki");
        run_tool(Command::new(&binary).arg("gen-certs").arg("--out").arg(&pki_dir));
        let tls = SignerTls {
            ca_cert: pki_dir.join("ca.crt"),
            server: CertifiedKey { cert: pki_dir.join("signer.crt"), key: pki_dir.join("signer.key") },
            client_ca: pki_dir.join("ca.crt"),
            client: CertifiedKey { cert: pki_dir.join("client.crt"), key: pki_dir.join("client.key") },
            client_name: "tufa-server".to_owned(),
        };

        let config = dir.path().join("tufa-signer.toml");
        let (config_text, token) = match backend {
            KeyBackend::Software => {
                run_tool(Command::new(&binary).arg("gen-kek").arg("--out").arg(dir.path().join("kek-test")));
                let text = "[backend]\ntype = \"software\"\n\n[software]\nactive_kek = \"test\"\n\n\
                            [[software.kek]]\nname = \"test\"\nfile = \"kek-test\"\n";
                (text.to_owned(), None)
            }
            KeyBackend::SoftHsm => {
                let token = SoftHsmToken::create();
                let pin_file = dir.path().join("pkcs11-pin");
                write_private_file(&pin_file, format!("{TOKEN_PIN}\n").as_bytes());
                let text = format!(
                    "[backend]\ntype = \"pkcs11\"\n\n[pkcs11]\nmodule = {}\ntoken_label = {}\n\
                     pin_file = \"pkcs11-pin\"\nsessions = 4\n",
                    toml_string(&softhsm_module().to_string_lossy()),
                    toml_string(&token.label),
                );
                (text, Some(token))
            }
        };
        fs::write(&config, config_text).expect("write tufa-signer config");
        let data_dir = dir.path().join("data");
        // `--database-url` (else SQLite in the data directory) for serving and for `audit`.
        let mut store_args = vec![OsString::from("--data-dir"), data_dir.into_os_string()];
        if let Some(database) = &database {
            store_args.extend([OsString::from("--database-url"), OsString::from(database.url())]);
        }
        let store = match database {
            Some(_) => "postgres",
            None => "sqlite",
        };

        let serve = {
            let (binary, config, store_args, tls) = (binary.clone(), config.clone(), store_args.clone(), tls.clone());
            move |port: u16, client_ca: &Path| {
                let mut command = Command::new(&binary);
                command
                    .arg("--config")
                    .arg(&config)
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(&store_args)
                    .arg("--tls-cert")
                    .arg(&tls.server.cert)
                    .arg("--tls-key")
                    .arg(&tls.server.key)
                    .arg("--client-ca")
                    .arg(client_ca);
                isolate_tufa_env(&mut command);
                command
            }
        };
        let audit = move || {
            let mut command = Command::new(&binary);
            command.arg("audit").arg("--config").arg(&config).args(&store_args);
            isolate_tufa_env(&mut command);
            command
        };
        Signer::start(
            format!("tufa-signer ({}, {store})", backend.name()),
            SignerKind::Tufa(backend),
            dir,
            tls,
            Box::new(serve),
            Some(Box::new(audit)),
            Held { _token: token, database },
        )
    }

    /// Starts Debian's Go notary-signer with memory storage and an openssl-made PKI
    /// ([`crate::pki`]): a server certificate for `127.0.0.1`/`localhost` and a client
    /// certificate with CN `tufa-server`, both from one CA.
    pub fn go_notary() -> Signer {
        let binary =
            std::env::var_os("NOTARY_SIGNER_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("notary-signer"));
        let dir = tempfile::Builder::new().prefix("tufa-go-signer-").tempdir().expect("create temp dir");
        let pki = Pki::create(&dir.path().join("pki"));
        let server = pki.issue("notary-signer", &["127.0.0.1", "localhost"], Usage::Server);
        let client = pki.issue("tufa-server", &[], Usage::Client);
        let tls = SignerTls {
            ca_cert: pki.ca_cert().to_path_buf(),
            server: server.clone(),
            client_ca: pki.ca_cert().to_path_buf(),
            client,
            client_name: "tufa-server".to_owned(),
        };
        let config_dir = dir.path().to_path_buf();
        let serve = move |port: u16, client_ca: &Path| {
            let config = json!({
                "server": {
                    "grpc_addr": format!("127.0.0.1:{port}"),
                    "tls_cert_file": server.cert,
                    "tls_key_file": server.key,
                    "client_ca_file": client_ca,
                },
                "storage": {"backend": "memory"},
                "logging": {"level": "info"},
            });
            let file = config_dir.join(format!("notary-signer-{port}.json"));
            fs::write(&file, config.to_string()).expect("write notary-signer config");
            let mut command = Command::new(&binary);
            command.arg("-config").arg(&file);
            // Only the config file configures the signer: no NOTARY_SIGNER_* overrides.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("NOTARY_") {
                    command.env_remove(&key);
                }
            }
            command
        };
        Signer::start(
            "Go notary-signer".to_owned(),
            SignerKind::GoNotary,
            dir,
            tls,
            Box::new(serve),
            None,
            Held::default(),
        )
    }

    fn start(
        name: String,
        kind: SignerKind,
        dir: TempDir,
        tls: SignerTls,
        command: SignerCommand,
        audit: Option<Box<dyn Fn() -> Command>>,
        held: Held,
    ) -> Signer {
        let mut last_failure = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("signer-{attempt}.log"));
            let process = command(port, &tls.client_ca);
            let line = describe(&process);
            match spawn_ready(&name, process, port, &log, &tls.ca_cert, &tls.client) {
                Ok(child) => {
                    return Signer {
                        name,
                        kind,
                        child,
                        port,
                        tls,
                        log,
                        starts: attempt,
                        command,
                        audit,
                        _held: held,
                        dir,
                    };
                }
                Err(StartFailure::PortTaken) => last_failure = format!("port {port} was taken (attempt {attempt})"),
                Err(StartFailure::Fatal(reason)) => panic!(
                    "{name} did not become ready: {reason}\ncommand: {line}\n--- signer log {} ---\n{}",
                    log.display(),
                    log_tail(&log, LOG_TAIL_BYTES)
                ),
            }
        }
        panic!("{name} could not get a free port: {last_failure}");
    }

    /// Stops the signer and starts it again on the same port and data, now accepting only
    /// client certificates issued by `client_ca`; `probe` (a certificate from that CA) checks
    /// that it is ready. Keys survive (except in Go notary-signer's memory storage).
    pub fn restart_trusting(&mut self, client_ca: &Path, probe: &CertifiedKey) {
        self.kill();
        self.start_trusting(client_ca, probe);
    }

    /// Kills the signer with SIGKILL (no chance to clean up) and waits until it is gone. Until
    /// [`Signer::start_again`] nothing listens on its port.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the signer again (after [`Signer::kill`]) on the same port, keys and data, trusting
    /// the client CA it was first started with, and waits until it is SERVING.
    pub fn start_again(&mut self) {
        let (client_ca, probe) = (self.tls.client_ca.clone(), self.tls.client.clone());
        self.start_trusting(&client_ca, &probe);
    }

    /// Starts the (stopped) signer on its port, accepting client certificates of `client_ca`.
    fn start_trusting(&mut self, client_ca: &Path, probe: &CertifiedKey) {
        self.starts += 1;
        let log = self.dir.path().join(format!("signer-{}.log", self.starts));
        let command = (self.command)(self.port, client_ca);
        let line = describe(&command);
        match spawn_ready(&self.name, command, self.port, &log, &self.tls.ca_cert, probe) {
            Ok(child) => {
                self.child = child;
                self.log = log;
            }
            Err(failure) => {
                let reason = match failure {
                    StartFailure::PortTaken => format!("port {} was taken meanwhile", self.port),
                    StartFailure::Fatal(reason) => reason,
                };
                panic!(
                    "{} did not come back: {reason}\ncommand: {line}\n--- signer log {} ---\n{}",
                    self.name,
                    log.display(),
                    log_tail(&log, LOG_TAIL_BYTES)
                );
            }
        }
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which implementation and backend this is.
    pub fn kind(&self) -> SignerKind {
        self.kind
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The signer's TLS material.
    pub fn tls(&self) -> &SignerTls {
        &self.tls
    }

    /// A directory private to this signer (its PKI, config and data live below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the signer's serve command once more, beside the running process, on a new port, and
    /// waits up to `timeout` for it to exit: for configurations it must refuse at start-up. A
    /// signer that starts serving instead is killed at the deadline (its status is then `None`).
    pub fn run_again_until_exit(&self, timeout: Duration) -> CommandOutput {
        let mut command = (self.command)(free_port(), &self.tls.client_ca);
        run_with_timeout(&mut command, b"", timeout)
    }

    /// Asks the gRPC health service, presenting `client`, whether both of notary's services
    /// are SERVING.
    pub fn health_with(&self, client: &CertifiedKey) -> Result<(), String> {
        let http = grpc_client(&self.tls.ca_cert, client)?;
        check_health(&http, self.port)
    }

    /// Freezes the process (SIGSTOP): connections are still accepted by the kernel, but nothing
    /// answers. [`Signer::resume`] undoes it.
    pub fn pause(&self) {
        signal(&self.child, "STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        signal(&self.child, "CONT");
    }

    /// The `--signer-*` arguments that make tufa-server sign through this signer, reached at
    /// `address` (the signer itself, or a proxy in front of it).
    pub fn tufa_server_args(&self, address: SocketAddr) -> Vec<String> {
        let path = |path: &Path| path.to_str().expect("test paths are UTF-8").to_owned();
        vec![
            "--signer-url".to_owned(),
            format!("https://{address}"),
            "--signer-ca".to_owned(),
            path(&self.tls.ca_cert),
            "--signer-cert".to_owned(),
            path(&self.tls.client.cert),
            "--signer-key".to_owned(),
            path(&self.tls.client.key),
        ]
    }

    /// Go notary-server's `trust_service` for this signer (ECDSA keys).
    pub fn remote_trust_service(&self) -> RemoteTrustService {
        RemoteTrustService {
            hostname: "127.0.0.1".to_owned(),
            port: self.port,
            tls_ca_file: self.tls.ca_cert.clone(),
            tls_client: Some(self.tls.client.clone()),
            key_algorithm: "ecdsa".to_owned(),
        }
    }

    /// Runs `tufa-signer audit <args>` with the signer's configuration and database (also after
    /// it stopped), e.g. `["verify", "--checkpoint-key", vkey]` or `["checkpoint"]`. Panics for Go
    /// notary-signer, which keeps no audit log.
    pub fn audit_command(&self, args: &[&str]) -> CommandOutput {
        let audit = self.audit.as_ref().unwrap_or_else(|| panic!("{} keeps no audit log", self.name));
        run_with_timeout(audit().args(args), b"", STARTUP_TIMEOUT)
    }

    /// Stops the signer as an operator would (SIGTERM) and waits up to 30 s for it to exit, so
    /// that its shutdown work (the last audit checkpoint) is done. Panics if it does not exit.
    pub fn terminate(&mut self) {
        signal(&self.child, "TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().expect("wait for the signer").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit within 30 s of SIGTERM", self.name);
    }

    /// The URL of the signer's PostgreSQL database ([`Signer::tufa_on_postgres`]), else `None`.
    pub fn database_url(&self) -> Option<&str> {
        self._held.database.as_ref().map(PgDatabase::url)
    }

    /// The SQLite database file of a tufa-signer started without PostgreSQL.
    pub fn sqlite_file(&self) -> PathBuf {
        assert!(matches!(self.kind, SignerKind::Tufa(_)), "{} has no database file", self.name);
        self.dir.path().join("data").join("tufa-signer.db")
    }

    /// `tufa-signer audit`: every recorded signature, oldest first, as JSON objects with
    /// `key_id`, `gun`, `role`, `client_subject`, `payload_sha256` and `created_at`.
    /// Panics for Go notary-signer, which keeps no audit trail.
    pub fn audit(&self) -> Vec<Value> {
        let audit = self.audit.as_ref().unwrap_or_else(|| panic!("{} keeps no audit trail", self.name));
        let output = run_tool(&mut audit());
        output
            .stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("audit line is not JSON ({error}): {line}\n{output}"))
            })
            .collect()
    }

    /// Every signature in the audit trail was requested by a client presenting a certificate
    /// with CN = [`SignerTls::client_name`], and there is at least one; returns the events.
    #[track_caller]
    pub fn assert_audited_signatures(&self) -> Vec<Value> {
        let events = self.audit();
        assert!(!events.is_empty(), "{}: the audit trail lists no signature", self.name);
        let expected_subject = format!("CN={}", self.tls.client_name);
        for event in &events {
            assert_eq!(event["client_subject"], expected_subject.as_str(), "{}: audit event {event}", self.name);
            let role = event["role"].as_str().unwrap_or_default();
            assert!(
                role == "timestamp" || role == "snapshot",
                "{}: the signer signed for role {role:?}, but holds only online keys: {event}",
                self.name
            );
            let key_id = event["key_id"].as_str().unwrap_or_default();
            assert!(key_id.len() == 64 && key_id.bytes().all(|byte| byte.is_ascii_hexdigit()), "{event}");
        }
        events
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        stop_and_report(&mut self.child, &self.name, &self.log, &mut self.dir);
    }
}

/// Spawns `command` with its output in `log` and waits until its health service reports
/// SERVING to a client presenting `client`; kills it on failure.
fn spawn_ready(
    name: &str,
    mut command: Command,
    port: u16,
    log: &Path,
    ca_cert: &Path,
    client: &CertifiedKey,
) -> Result<Child, StartFailure> {
    let mut child = spawn_logged(&mut command, log).unwrap_or_else(|error| {
        panic!(
            "cannot start {name}: {error} (install Debian's notary package for notary-signer; \
             build the workspace for tufa-signer; scripts/test.sh does both)"
        )
    });
    let ready = grpc_client(ca_cert, client).map_err(StartFailure::Fatal).and_then(|http| {
        wait_ready(&mut child, log, STARTUP_TIMEOUT, || check_health(&http, port)).map_err(|failure| match failure {
            WaitError::Exited { port_taken: true, .. } => StartFailure::PortTaken,
            other => StartFailure::Fatal(other.to_string()),
        })
    });
    match ready {
        Ok(()) => Ok(child),
        Err(failure) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failure)
        }
    }
}

/// An HTTP/2 client that trusts only `ca_cert` and presents `client`.
fn grpc_client(ca_cert: &Path, client: &CertifiedKey) -> Result<Client, String> {
    let read = |path: &Path| fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()));
    let ca = reqwest::Certificate::from_pem(&read(ca_cert)?)
        .map_err(|error| format!("{} is not a PEM certificate: {error}", ca_cert.display()))?;
    let mut identity = read(&client.cert)?;
    identity.extend_from_slice(b"\n");
    identity.extend_from_slice(&read(&client.key)?);
    let identity = reqwest::Identity::from_pem(&identity)
        .map_err(|error| format!("{} / {} is no identity: {error}", client.cert.display(), client.key.display()))?;
    Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|error| format!("cannot build the gRPC client: {error:?}"))
}

/// `grpc.health.v1.Health/Check` for each of [`HEALTH_SERVICES`], by hand: a gRPC call is an
/// HTTP/2 POST whose body is a 5-byte frame header and the protobuf message.
fn check_health(http: &Client, port: u16) -> Result<(), String> {
    for service in HEALTH_SERVICES {
        // HealthCheckRequest { string service = 1; }
        let mut message = vec![0x0a, u8::try_from(service.len()).expect("short service name")];
        message.extend_from_slice(service.as_bytes());
        let mut body = vec![0];
        body.extend_from_slice(&u32::try_from(message.len()).expect("short message").to_be_bytes());
        body.extend_from_slice(&message);
        let response = http
            .post(format!("https://127.0.0.1:{port}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .send()
            .map_err(|error| format!("health check of {service} failed: {error:?}"))?;
        let header = |name: &str| {
            response.headers().get(name).map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        // A call that fails at once answers with the status in the headers ("trailers-only").
        if let Some(code) = header("grpc-status").filter(|code| code != "0") {
            return Err(format!(
                "health check of {service}: gRPC status {code} {}",
                header("grpc-message").unwrap_or_default()
            ));
        }
        let status = response.status();
        let reply = response.bytes().map_err(|error| format!("health reply of {service}: {error:?}"))?;
        // HealthCheckResponse { ServingStatus status = 1; }, SERVING = 1.
        if status.as_u16() != 200 || reply.get(5..) != Some(&[0x08, 0x01][..]) {
            return Err(format!("{service} is not SERVING: HTTP {status}, reply {reply:02x?}"));
        }
    }
    Ok(())
}

/// Sends `kill -<name>` to a child this harness started.
fn signal(child: &Child, name: &str) {
    run_tool(Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()));
}

/// Removes every `TUFA_*` variable except the signer's log filter: only the command line and
/// the config file configure the signer (no KEKs or backends leak in from the environment).
fn isolate_tufa_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("TUFA_") && key_text != "TUFA_SIGNER_LOG" {
            command.env_remove(&key);
        }
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string is JSON")
}

/// Writes a file readable only by its owner (KEK and PIN files must be).
fn write_private_file(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, contents).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// The SoftHSM PKCS#11 module; panics with instructions when it is missing.
fn softhsm_module() -> PathBuf {
    tufa_testkit::softhsm::module().unwrap_or_else(|error| panic!("{error}"))
}

/// `SOFTHSM2_CONF`, checked; panics with instructions otherwise: the SoftHSM variants must never
/// pass without SoftHSM, and must never touch the system's token directory.
fn softhsm_conf() -> PathBuf {
    tufa_testkit::softhsm::conf().unwrap_or_else(|error| panic!("{error}"))
}

/// A SoftHSM token created for one signer and deleted on drop.
struct SoftHsmToken {
    label: String,
    conf: PathBuf,
}

impl SoftHsmToken {
    /// `softhsm2-util --init-token --free` with a label unique to this process and counter,
    /// user PIN [`TOKEN_PIN`].
    fn create() -> SoftHsmToken {
        let conf = softhsm_conf();
        softhsm_module();
        let label = format!("tufa-it-{}-{}", std::process::id(), NEXT_TOKEN.fetch_add(1, Ordering::Relaxed));
        assert!(label.len() <= 32, "token label {label} is too long");
        run_tool(Command::new("softhsm2-util").env("SOFTHSM2_CONF", &conf).args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--pin",
            TOKEN_PIN,
            "--so-pin",
            TOKEN_SO_PIN,
        ]));
        SoftHsmToken { label, conf }
    }
}

impl Drop for SoftHsmToken {
    fn drop(&mut self) {
        // Best effort: a failing clean-up must not hide the test's own failure, and the
        // throwaway token directory goes away with scripts/test.sh anyway.
        let output = run_with_timeout(
            Command::new("softhsm2-util").env("SOFTHSM2_CONF", &self.conf).args([
                "--delete-token",
                "--token",
                &self.label,
            ]),
            b"",
            Duration::from_secs(30),
        );
        if !output.success() {
            eprintln!("could not delete SoftHSM token {}:\n{output}", self.label);
        }
    }
}

/// Which trust server a [`Stack`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// tufa-server (SQLite or PostgreSQL) with `--signer-url`.
    Tufa,
    /// Go notary-server (memory storage) with `trust_service.type = remote`.
    GoNotary,
}

/// A trust server that signs through a separate signer (possibly through a proxy that a test
/// can cut). Dereferences to the [`Server`], so the flows run on it unchanged.
pub struct Stack {
    // Field order matters: the server stops before its signer.
    server: Server,
    kind: ServerKind,
    proxy: Option<TcpProxy>,
    database_url: Option<String>,
    signer: Signer,
}

impl Deref for Stack {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Stack {
    /// Go notary-server (memory storage) signing through `signer`.
    pub fn go_server(signer: Signer) -> Stack {
        let config = GoServerConfig::default().with_remote_signer(signer.remote_trust_service());
        let server = go_notary::start(&config);
        Stack { server, kind: ServerKind::GoNotary, proxy: None, database_url: None, signer }
    }

    /// tufa-server (SQLite) signing through `signer`.
    pub fn tufa_server(signer: Signer) -> Stack {
        let server = start_tufa_server(&signer, signer.address(), "");
        Stack { server, kind: ServerKind::Tufa, proxy: None, database_url: None, signer }
    }

    /// tufa-server on a fresh PostgreSQL database (of the cluster `DATABASE_URL` names) signing
    /// through `signer`. Without `DATABASE_URL` it fails.
    pub fn tufa_server_on_postgres(signer: Signer) -> Stack {
        let database = PgDatabase::create();
        let database_url = Some(database.url().to_owned());
        let server = tufa::start_with(tufa::Options {
            name: format!("tufa-server (postgres, signing through {})", signer.name()),
            database_url: Some(database.url().to_owned()),
            database: Some(database),
            extra_args: signer.tufa_server_args(signer.address()),
        });
        Stack { server, kind: ServerKind::Tufa, proxy: None, database_url, signer }
    }

    /// tufa-server (SQLite) signing through `signer` behind a [`TcpProxy`], so that a test can
    /// take the signer away ([`TcpProxy::cut`]) and bring it back.
    pub fn tufa_server_via_proxy(signer: Signer) -> Stack {
        let proxy = TcpProxy::start(signer.address());
        let server = start_tufa_server(&signer, proxy.address(), " via a proxy");
        Stack { server, kind: ServerKind::Tufa, proxy: Some(proxy), database_url: None, signer }
    }

    /// The trust server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The trust server, mutably (to stop it with [`Server::terminate`]).
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// Runs `tufa-server audit <args>` against tufa-server's data directory and database (also
    /// after the server stopped).
    pub fn audit(&self, args: &[&str]) -> CommandOutput {
        tufa::audit(&self.tufa_data_dir(), self.database_url.as_deref(), args)
    }

    /// The signer, to restart it.
    pub fn signer_mut(&mut self) -> &mut Signer {
        &mut self.signer
    }

    /// The server, and the signer to kill and restart while clients use the server.
    pub fn server_and_signer_mut(&mut self) -> (&Server, &mut Signer) {
        (&self.server, &mut self.signer)
    }

    /// The proxy between server and signer; panics if the stack has none.
    pub fn proxy(&self) -> &TcpProxy {
        self.proxy.as_ref().expect("this stack was started without a proxy (use Stack::tufa_server_via_proxy)")
    }

    /// tufa-server's data directory (`--data-dir`).
    pub fn tufa_data_dir(&self) -> PathBuf {
        assert_eq!(self.kind, ServerKind::Tufa, "only tufa-server has a data directory here");
        self.server.dir().join("data")
    }

    /// A tufa-server with a remote signer never had a private key: no KEK file in its data
    /// directory (nor anywhere below it).
    #[track_caller]
    pub fn assert_server_holds_no_key(&self) {
        let data_dir = self.tufa_data_dir();
        assert!(data_dir.is_dir(), "tufa-server's data directory {} does not exist", data_dir.display());
        let mut found = Vec::new();
        let mut pending = vec![data_dir.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap_or_else(|error| panic!("list {}: {error}", dir.display())) {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.file_name().is_some_and(|name| name.to_string_lossy().contains("kek")) {
                    found.push(path);
                }
            }
        }
        assert!(
            found.is_empty(),
            "tufa-server signs through {} but created key-encryption key file(s): {found:?}",
            self.signer.name()
        );
    }

    /// What must hold after any flow: tufa-server kept no key, and tufa-signer recorded every
    /// signature with the trust server's client certificate.
    #[track_caller]
    pub fn check_after_flow(&self) {
        if self.kind == ServerKind::Tufa {
            self.assert_server_holds_no_key();
        }
        if matches!(self.signer.kind(), SignerKind::Tufa(_)) {
            self.signer.assert_audited_signatures();
        }
    }
}

fn start_tufa_server(signer: &Signer, address: SocketAddr, how: &str) -> Server {
    tufa::start_with(tufa::Options {
        name: format!("tufa-server (sqlite, signing through {}{how})", signer.name()),
        database_url: None,
        database: None,
        extra_args: signer.tufa_server_args(address),
    })
}
