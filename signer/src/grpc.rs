//! The gRPC face of the signer: notary-signer's `proto.KeyManagement` and `proto.Signer`
//! services translated to [`SignerService`] calls, the standard health service, and the
//! mutual-TLS listener that refuses clients without a certificate from the configured CA.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tufa_signer_api::proto::key_management_server::{KeyManagement, KeyManagementServer};
use tufa_signer_api::proto::signer_server::{Signer, SignerServer};
use tufa_signer_api::proto::{self, CreateKeyRequest, GetKeyInfoResponse, KeyId, SignatureRequest, Void};
use tufa_signer_api::{HEALTH_KEY_MANAGEMENT, HEALTH_SIGNER, KEY_MANAGEMENT_SERVICE, SIGNER_SERVICE};
use zeroize::Zeroizing;

use crate::service::{KeyInfo, ServiceError, SignerService};
use crate::store::Actor;

/// The response metadata of a Sign call that gives the position of the signature's entry in the
/// signer's audit log, so that tufa-server can reference it. Go's notary-server ignores it.
pub const AUDIT_SEQ_METADATA: &str = "tufa-audit-seq";
/// The request metadata whose value is recorded as the request ID of an audit entry.
pub const REQUEST_ID_METADATA: &str = "x-request-id";

/// Largest request or response message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// TLS handshake deadline.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one RPC.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the health service re-checks the store and backend.
const HEALTH_INTERVAL: Duration = Duration::from_secs(15);
/// Largest PEM file read for TLS.
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Recorded as the client subject when a request carries no client certificate (which mutual
/// TLS prevents; kept for in-process use).
pub const NO_CLIENT_CERTIFICATE: &str = "(no client certificate)";

/// Why the listener could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A TLS file is missing or malformed.
    #[error("{0}")]
    Tls(String),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(String),
}

/// The signer's TLS identity and the CA that client certificates must chain to.
pub struct TlsMaterial {
    cert_pem: Vec<u8>,
    key_pem: Zeroizing<Vec<u8>>,
    client_ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, ServeError> {
    tufa_common::files::read_limited(what, path, MAX_PEM_BYTES)
        .map(|bytes| bytes.to_vec())
        .map_err(|error| ServeError::Tls(error.to_string()))
}

impl TlsMaterial {
    /// Checks and wraps PEM data: `cert_pem` one or more certificates (leaf first), `key_pem` the
    /// leaf's private key, `client_ca_pem` one or more CA certificates.
    pub fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
        client_ca_pem: Vec<u8>,
    ) -> Result<TlsMaterial, ServeError> {
        let certificates = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>();
        if !matches!(certificates, Ok(ref list) if !list.is_empty()) {
            return Err(ServeError::Tls("the TLS certificate file holds no PEM certificate".to_owned()));
        }
        if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
            return Err(ServeError::Tls("the TLS key file holds no PEM private key".to_owned()));
        }
        let authorities = CertificateDer::pem_slice_iter(&client_ca_pem).collect::<Result<Vec<_>, _>>();
        if !matches!(authorities, Ok(ref list) if !list.is_empty()) {
            return Err(ServeError::Tls("the client CA file holds no PEM certificate".to_owned()));
        }
        Ok(TlsMaterial { cert_pem, key_pem, client_ca_pem })
    }

    /// Reads and checks the three PEM files.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<TlsMaterial, ServeError> {
        let cert_pem = read_pem(cert, "TLS certificate")?;
        let key_pem = Zeroizing::new(read_pem(key, "TLS key")?);
        let client_ca_pem = read_pem(client_ca, "client CA certificate")?;
        TlsMaterial::from_pem(cert_pem, key_pem, client_ca_pem)
    }

    fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, self.key_pem.as_slice()))
            .client_ca_root(Certificate::from_pem(&self.client_ca_pem))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

fn status(error: ServiceError) -> Status {
    match error {
        ServiceError::InvalidArgument(message) => Status::invalid_argument(message),
        ServiceError::NotFound(message) => Status::not_found(message),
        ServiceError::FailedPrecondition(message) => Status::failed_precondition(message),
        ServiceError::Unavailable(message) => Status::unavailable(message),
        ServiceError::Internal(message) => Status::internal(message),
    }
}

/// The subject DN of the client certificate that made `request` (`CN=tufa-server` style).
pub fn client_subject<T>(request: &Request<T>) -> String {
    let Some(chain) = request.peer_certs() else {
        return NO_CLIENT_CERTIFICATE.to_owned();
    };
    let Some(leaf) = chain.first() else {
        return NO_CLIENT_CERTIFICATE.to_owned();
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, certificate)) => certificate.subject().to_string(),
        Err(_) => "(unparsable client certificate)".to_owned(),
    }
}

/// Who made `request`, as the audit log records it: the client certificate's subject, the peer
/// address, and the `x-request-id` metadata when it is printable ASCII.
pub fn actor<T>(request: &Request<T>) -> Actor {
    Actor {
        principal: Some(client_subject(request)),
        address: request.remote_addr().map(|address| address.to_string()),
        request_id: request
            .metadata()
            .get(REQUEST_ID_METADATA)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
            .map(str::to_owned),
    }
}

fn key_info_message(key_id: &str, keytype: &str) -> proto::KeyInfo {
    proto::KeyInfo {
        key_id: Some(KeyId { id: key_id.to_owned() }),
        algorithm: Some(proto::Algorithm { algorithm: keytype.to_owned() }),
    }
}

fn public_key_message(info: &KeyInfo) -> proto::PublicKey {
    proto::PublicKey {
        key_info: Some(key_info_message(&info.key_id, info.algorithm.as_str())),
        public_key: info.public.clone(),
    }
}

fn requested_key_id(key_id: Option<&KeyId>) -> &str {
    key_id.map(|key_id| key_id.id.as_str()).unwrap_or_default()
}

/// `proto.KeyManagement` over a [`SignerService`].
#[derive(Debug, Clone)]
pub struct KeyManagementApi {
    service: SignerService,
}

impl KeyManagementApi {
    /// Wraps the service.
    pub fn new(service: SignerService) -> KeyManagementApi {
        KeyManagementApi { service }
    }
}

#[tonic::async_trait]
impl KeyManagement for KeyManagementApi {
    async fn create_key(&self, request: Request<CreateKeyRequest>) -> Result<Response<proto::PublicKey>, Status> {
        let actor = actor(&request);
        let body = request.get_ref();
        let info = self.service.create_key_as(&body.algorithm, &body.gun, &body.role, &actor).await.map_err(status)?;
        Ok(Response::new(public_key_message(&info)))
    }

    async fn delete_key(&self, request: Request<KeyId>) -> Result<Response<Void>, Status> {
        let actor = actor(&request);
        let key_id = request.get_ref().id.as_str();
        self.service.delete_key_as(key_id, &actor).await.map_err(status)?;
        tracing::info!(key.id = %key_id, client = actor.principal.as_deref().unwrap_or_default(), "delete requested");
        Ok(Response::new(Void {}))
    }

    async fn get_key_info(&self, request: Request<KeyId>) -> Result<Response<GetKeyInfoResponse>, Status> {
        let info = self.service.key_info(&request.get_ref().id).await.map_err(status)?;
        Ok(Response::new(GetKeyInfoResponse {
            key_info: Some(key_info_message(&info.key_id, info.algorithm.as_str())),
            public_key: info.public,
            role: info.role,
        }))
    }
}

/// `proto.Signer` over a [`SignerService`].
#[derive(Debug, Clone)]
pub struct SignerApi {
    service: SignerService,
}

impl SignerApi {
    /// Wraps the service.
    pub fn new(service: SignerService) -> SignerApi {
        SignerApi { service }
    }
}

#[tonic::async_trait]
impl Signer for SignerApi {
    async fn sign(&self, request: Request<SignatureRequest>) -> Result<Response<proto::Signature>, Status> {
        let actor = actor(&request);
        let body = request.get_ref();
        let signed = self
            .service
            .sign_as(requested_key_id(body.key_id.as_ref()), &body.content, &actor)
            .await
            .map_err(status)?;
        let audit_seq = signed.audit_seq;
        let mut response = Response::new(proto::Signature {
            key_info: Some(key_info_message(&signed.key_id, signed.algorithm.as_str())),
            algorithm: Some(proto::Algorithm { algorithm: signed.method.to_owned() }),
            content: signed.signature,
        });
        response.metadata_mut().insert(AUDIT_SEQ_METADATA, MetadataValue::from(audit_seq));
        Ok(response)
    }
}

/// Every service name the health service reports on: the overall server (""), the names
/// notary-server checks, and the plain gRPC service names.
pub const HEALTH_NAMES: [&str; 5] = ["", HEALTH_KEY_MANAGEMENT, HEALTH_SIGNER, KEY_MANAGEMENT_SERVICE, SIGNER_SERVICE];

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Re-checks the store and backend periodically and reports NOT_SERVING while either fails.
async fn watch_health(reporter: HealthReporter, service: SignerService) {
    let mut serving = true;
    let mut ticker = tokio::time::interval(HEALTH_INTERVAL);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let healthy = service.health().await.is_ok();
        if healthy != serving {
            serving = healthy;
            if healthy {
                tracing::info!("store and backend healthy again: SERVING");
                set_health(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!("store or backend unhealthy: NOT_SERVING");
                set_health(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
}

/// Serves the signer on `listener` with mutual TLS until `shutdown` completes, then drains
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    tls: &TlsMaterial,
    service: SignerService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // One process-wide crypto provider: aws-lc-rs. Installing twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (reporter, health_server) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::Serving).await;
    let watcher = tokio::spawn(watch_health(reporter, service.clone()));

    let key_management = KeyManagementServer::new(KeyManagementApi::new(service.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let signer = SignerServer::new(SignerApi::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let result = Server::builder()
        .tls_config(tls.server_config())
        .map_err(|error| ServeError::Tls(format!("invalid TLS configuration: {error}")))?
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(256)
        .add_service(health_server)
        .add_service(key_management)
        .add_service(signer)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
        .map_err(|error| ServeError::Transport(error.to_string()));
    watcher.abort();
    result
}
