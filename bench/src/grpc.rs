//! The gRPC targets: tufa-signer (software and PKCS#11 backends) and Go notary-signer, each a
//! separate process on 127.0.0.1 speaking notary-signer's protocol over mutual TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tufa_core::keys::{KeyType, PublicKey};
use tufa_signer_api::proto::key_management_client::KeyManagementClient;
use tufa_signer_api::proto::signer_client::SignerClient;
use tufa_signer_api::proto::{CreateKeyRequest, KeyId, SignatureRequest};

use crate::measure::{SignFn, SignFuture};
use crate::process::{Server, clean_command, free_port, run_tool};

/// How long a signer may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// GUN and role of the benchmark key.
pub(crate) const GUN: &str = "bench.example/app";
/// Role of the benchmark key.
pub(crate) const ROLE: &str = "timestamp";
/// PIN of the throwaway SoftHSM token.
pub(crate) const TOKEN_PIN: &str = "1234";
/// Label of the throwaway SoftHSM token.
pub(crate) const TOKEN_LABEL: &str = "bench";
/// Environment variable that carries the token PIN to tufa-signer.
pub(crate) const PIN_ENV: &str = "TUFA_BENCH_PKCS11_PIN";
/// PKCS#11 sessions of the tufa-signer PKCS#11 backend.
pub(crate) const PKCS11_SESSIONS: usize = 4;

/// The mutual-TLS files written by `tufa-signer gen-certs`.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    /// The CA that issued both leaves.
    pub ca: PathBuf,
    /// The signer's server certificate (valid for localhost and 127.0.0.1).
    pub signer_cert: PathBuf,
    /// Its key.
    pub signer_key: PathBuf,
    /// The client certificate the benchmark presents.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Pki {
    /// Generates the PKI into `dir` with `tufa-signer gen-certs`.
    pub(crate) fn generate(tufa_signer: &Path, dir: &Path) -> Result<Pki, String> {
        run_tool(clean_command(tufa_signer).arg("gen-certs").arg("--out").arg(dir))?;
        Ok(Pki {
            ca: dir.join("ca.crt"),
            signer_cert: dir.join("signer.crt"),
            signer_key: dir.join("signer.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        })
    }

    fn client_tls(&self) -> Result<ClientTlsConfig, String> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()));
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.client_cert)?, read(&self.client_key)?))
            .domain_name("localhost"))
    }
}

/// A TOML basic string holding `path` (a JSON string literal is one).
fn toml_path(path: &Path) -> String {
    serde_json::Value::String(path.to_string_lossy().into_owned()).to_string()
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

fn tls_toml(pki: &Pki) -> String {
    format!(
        "[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
        toml_path(&pki.signer_cert),
        toml_path(&pki.signer_key),
        toml_path(&pki.ca)
    )
}

/// A signer process and the port it listens on.
#[derive(Debug)]
pub(crate) struct Running {
    /// The process.
    pub server: Server,
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
}

/// Starts tufa-signer with the software backend (KEK file from `tufa-signer gen-kek`, SQLite in
/// `dir`).
pub(crate) fn start_tufa_software(tufa_signer: &Path, pki: &Pki, dir: &Path, kek: &Path) -> Result<Running, String> {
    let port = free_port()?;
    let config = dir.join("tufa-signer-software.toml");
    write(
        &config,
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {}\n{}[backend]\ntype = \"software\"\n\n[software]\n\
             active_kek = \"bench\"\n\n[[software.kek]]\nname = \"bench\"\nfile = {}\n",
            toml_path(&dir.join("software-data")),
            tls_toml(pki),
            toml_path(kek)
        ),
    )?;
    let mut command = clean_command(tufa_signer);
    command.arg("--config").arg(&config);
    let server = Server::start("tufa-signer (software)", command, &dir.join("tufa-signer-software.log"))?;
    Ok(Running { server, port })
}

/// A throwaway SoftHSM token: its config file, token directory and module.
#[derive(Debug, Clone)]
pub(crate) struct SoftHsm {
    /// The SOFTHSM2_CONF file.
    pub config: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
}

impl SoftHsm {
    /// Writes a SoftHSM config under `dir` and initialises a token labelled [`TOKEN_LABEL`].
    pub(crate) fn create(dir: &Path, module: &Path) -> Result<SoftHsm, String> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|error| format!("cannot create {}: {error}", tokens.display()))?;
        let config = dir.join("softhsm2.conf");
        write(
            &config,
            &format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
        run_tool(clean_command("softhsm2-util").env("SOFTHSM2_CONF", &config).args([
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--pin",
            TOKEN_PIN,
            "--so-pin",
            "5678",
        ]))?;
        Ok(SoftHsm { config, module: module.to_owned() })
    }
}

/// Starts tufa-signer with the PKCS#11 backend on the SoftHSM token.
pub(crate) fn start_tufa_pkcs11(tufa_signer: &Path, pki: &Pki, dir: &Path, hsm: &SoftHsm) -> Result<Running, String> {
    let port = free_port()?;
    let config = dir.join("tufa-signer-pkcs11.toml");
    write(
        &config,
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {}\n{}[backend]\ntype = \"pkcs11\"\n\n[pkcs11]\nmodule = {}\n\
             token_label = \"{TOKEN_LABEL}\"\npin_env = \"{PIN_ENV}\"\nsessions = {PKCS11_SESSIONS}\n",
            toml_path(&dir.join("pkcs11-data")),
            tls_toml(pki),
            toml_path(&hsm.module)
        ),
    )?;
    let mut command = clean_command(tufa_signer);
    command.arg("--config").arg(&config).env("SOFTHSM2_CONF", &hsm.config).env(PIN_ENV, TOKEN_PIN);
    let server = Server::start("tufa-signer (pkcs11)", command, &dir.join("tufa-signer-pkcs11.log"))?;
    Ok(Running { server, port })
}

/// Starts Go notary-signer with the in-memory key store.
pub(crate) fn start_notary_signer(notary_signer: &Path, pki: &Pki, dir: &Path) -> Result<Running, String> {
    let port = free_port()?;
    let config = dir.join("notary-signer.json");
    let path = |path: &Path| path.to_string_lossy().into_owned();
    let document = serde_json::json!({
        "server": {
            "grpc_addr": format!("127.0.0.1:{port}"),
            "tls_cert_file": path(&pki.signer_cert),
            "tls_key_file": path(&pki.signer_key),
            "client_ca_file": path(&pki.ca),
        },
        "storage": { "backend": "memory" },
    });
    write(&config, &document.to_string())?;
    let mut command = clean_command(notary_signer);
    command.arg("-config").arg(&config);
    let server = Server::start("notary-signer", command, &dir.join("notary-signer.log"))?;
    Ok(Running { server, port })
}

/// Opens one HTTP/2 connection to the signer on `port`.
pub(crate) async fn connect(pki: &Pki, port: u16) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|error| error.to_string())?
        .tls_config(pki.client_tls()?)
        .map_err(|error| format!("client TLS configuration: {error}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(RPC_TIMEOUT)
        .connect()
        .await
        .map_err(|error| format!("cannot connect to 127.0.0.1:{port}: {error}"))
}

/// Waits until `running` accepts a connection (or exits), then returns that connection.
pub(crate) async fn wait_ready(running: &mut Running, pki: &Pki) -> Result<Channel, String> {
    let started = Instant::now();
    loop {
        running.server.check_running()?;
        match connect(pki, running.port).await {
            Ok(channel) => return Ok(channel),
            Err(error) if started.elapsed() > START_TIMEOUT => {
                return Err(format!("not ready after {START_TIMEOUT:?}: {error}\n{}", running.server.log_tail()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The key the benchmark signs with.
#[derive(Debug, Clone)]
pub(crate) struct BenchKey {
    /// Its ID as the signer reported it.
    pub key_id: String,
    /// The public key.
    pub public: PublicKey,
}

/// `CreateKey{ecdsa, GUN, ROLE}` and a check that the reported ID is the public key's TUF ID.
pub(crate) async fn create_key(channel: &Channel) -> Result<BenchKey, String> {
    let request = CreateKeyRequest { algorithm: "ecdsa".to_owned(), gun: GUN.to_owned(), role: ROLE.to_owned() };
    let response = KeyManagementClient::new(channel.clone())
        .create_key(request)
        .await
        .map_err(|status| format!("CreateKey failed: {status}"))?
        .into_inner();
    let key_id =
        response.key_info.and_then(|info| info.key_id).map(|key_id| key_id.id).ok_or("CreateKey returned no key ID")?;
    let public = PublicKey::new(KeyType::Ecdsa, response.public_key);
    if public.key_id() != key_id {
        return Err(format!("CreateKey returned key ID {key_id}, but its public key has ID {}", public.key_id()));
    }
    Ok(BenchKey { key_id, public })
}

/// One Sign RPC with every field of the answer checked: key ID, method and signature.
pub(crate) async fn sign_checked(channel: &Channel, key: &BenchKey, message: &[u8]) -> Result<(), String> {
    let request = SignatureRequest { key_id: Some(KeyId { id: key.key_id.clone() }), content: message.to_vec() };
    let response = SignerClient::new(channel.clone())
        .sign(request)
        .await
        .map_err(|status| format!("Sign failed: {status}"))?
        .into_inner();
    let reported_id = response.key_info.and_then(|info| info.key_id).map(|key_id| key_id.id).unwrap_or_default();
    if reported_id != key.key_id {
        return Err(format!("Sign answered for key {reported_id:?}, not {}", key.key_id));
    }
    let method = response.algorithm.map(|algorithm| algorithm.algorithm).unwrap_or_default();
    if method != "ecdsa" {
        return Err(format!("Sign returned signature method {method:?}, not \"ecdsa\""));
    }
    key.public
        .verify("ecdsa", message, &response.content)
        .map_err(|error| format!("the signature does not verify: {error}"))
}

/// A [`SignFn`] that sends Sign RPCs; worker `i` uses `channels[i % channels.len()]`.
pub(crate) fn sign_fn(channels: Vec<Channel>, key_id: &str, message: Arc<Vec<u8>>) -> SignFn {
    let clients: Vec<SignerClient<Channel>> = channels.into_iter().map(SignerClient::new).collect();
    let key_id = key_id.to_owned();
    Arc::new(move |worker: usize| -> SignFuture {
        let client = clients.get(worker % clients.len().max(1)).cloned();
        let request = SignatureRequest { key_id: Some(KeyId { id: key_id.clone() }), content: message.to_vec() };
        Box::pin(async move {
            let mut client = client.ok_or("no connection")?;
            let response = client.sign(request).await.map_err(|status| format!("Sign failed: {status}"))?;
            Ok(response.into_inner().content)
        })
    })
}
