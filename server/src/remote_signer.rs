//! The server side of the server<->signer contract: an [`OnlineSigner`] that asks a separate
//! signing service (tufa-signer or Go notary-signer) over gRPC with mutual TLS. The server then
//! holds no private key.
//!
//! The channel connects lazily and every call has a deadline, so a signer that is down or slow
//! makes publishes fail fast with 503 while reads keep being served from storage; the channel
//! reconnects by itself when the signer is back.

use std::time::Duration;

use async_trait::async_trait;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tufa_core::keys::{Algorithm, KeyType, PublicKey};
use tufa_core::names::{BaseRole, Gun};
use tufa_signer_api::proto::key_management_client::KeyManagementClient;
use tufa_signer_api::proto::signer_client::SignerClient;
use tufa_signer_api::proto::{CreateKeyRequest, KeyId, KeyInfo, SignatureRequest};

use crate::config::SignerConfig;
use crate::signing::{OnlineSignature, OnlineSigner, SignerError};

/// The response metadata in which tufa-signer reports a signature's position in its audit log.
const AUDIT_SEQ_METADATA: &str = "tufa-audit-seq";
/// How long establishing a connection to the signer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one signer call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The gRPC health service names notary-server checks (spec §4.5).
const HEALTH_SERVICES: [&str; 2] = [tufa_signer_api::HEALTH_KEY_MANAGEMENT, tufa_signer_api::HEALTH_SIGNER];

/// A signer reached over gRPC.
#[derive(Clone)]
pub struct RemoteSigner {
    keys: KeyManagementClient<Channel>,
    signer: SignerClient<Channel>,
    health: HealthClient<Channel>,
}

/// Largest certificate or key file read for the connection to the signer.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, SignerError> {
    tufa_common::files::read_limited(what, path, MAX_PEM_FILE_BYTES)
        .map(|bytes| bytes.to_vec())
        .map_err(|error| SignerError::Internal(format!("signer connection: {error}")))
}

/// Whether the call failed in the connection to the signer (TLS refused, reset, closed) rather
/// than in the signer: tonic then reports `Code::Unknown` with the channel's transport error as
/// the status's source.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

fn status_error(status: &tonic::Status) -> SignerError {
    match status.code() {
        Code::NotFound => SignerError::NotFound(status.message().to_owned()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            SignerError::Unavailable(format!("{:?}: {}", status.code(), status.message()))
        }
        _ if is_transport_failure(status) => {
            SignerError::Unavailable(format!("connection to the signer failed: {}", status.message()))
        }
        other => SignerError::Internal(format!("{other:?}: {}", status.message())),
    }
}

/// Rebuilds the public key the signer described and checks that it hashes to the ID it claims.
fn public_key(info: Option<KeyInfo>, public: Vec<u8>, expected_id: Option<&str>) -> Result<PublicKey, SignerError> {
    let info = info.ok_or_else(|| SignerError::Internal("signer response lacks keyInfo".into()))?;
    let algorithm = info.algorithm.map(|algorithm| algorithm.algorithm).unwrap_or_default();
    let claimed = info.key_id.map(|id| id.id).unwrap_or_default();
    let key = PublicKey::new(KeyType::parse(&algorithm), public);
    let actual = key.key_id();
    if actual != claimed || expected_id.is_some_and(|expected| expected != actual) {
        return Err(SignerError::Internal(format!(
            "signer returned a public key whose ID {actual} does not match {claimed}"
        )));
    }
    Ok(key)
}

/// The signature method notary uses for a key type (notary-server derives it the same way).
fn method_for(keytype: &str) -> &'static str {
    match keytype {
        "ed25519" => "eddsa",
        "rsa" | "rsa-x509" => "rsapss",
        _ => "ecdsa",
    }
}

impl RemoteSigner {
    /// Prepares a lazily connecting client; fails only on unreadable or invalid TLS files.
    pub fn connect(config: &SignerConfig) -> Result<Self, SignerError> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&config.ca, "CA")?))
            .domain_name(config.host.clone());
        if let Some((cert, key)) = &config.client {
            let key_pem = zeroize::Zeroizing::new(read(key, "client key")?);
            tls = tls.identity(Identity::from_pem(read(cert, "client certificate")?, key_pem.as_slice()));
        }
        let endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(|error| SignerError::Internal(format!("invalid signer URL: {error}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tls_config(tls)
            .map_err(|error| SignerError::Internal(format!("signer TLS settings: {error}")))?;
        let channel = endpoint.connect_lazy();
        Ok(Self {
            keys: KeyManagementClient::new(channel.clone()),
            signer: SignerClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }
}

#[async_trait]
impl OnlineSigner for RemoteSigner {
    async fn create_key(&self, gun: &Gun, role: BaseRole, algorithm: Algorithm) -> Result<PublicKey, SignerError> {
        let request = CreateKeyRequest {
            algorithm: algorithm.as_str().to_owned(),
            gun: gun.as_str().to_owned(),
            role: role.as_str().to_owned(),
        };
        let reply = self.keys.clone().create_key(request).await.map_err(|status| status_error(&status))?.into_inner();
        public_key(reply.key_info, reply.public_key, None)
    }

    async fn public_key(&self, key_id: &str) -> Result<Option<PublicKey>, SignerError> {
        match self.keys.clone().get_key_info(KeyId { id: key_id.to_owned() }).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                public_key(reply.key_info, reply.public_key, Some(key_id)).map(Some)
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status_error(&status)),
        }
    }

    async fn sign(&self, key_id: &str, message: &[u8]) -> Result<OnlineSignature, SignerError> {
        let request = SignatureRequest { key_id: Some(KeyId { id: key_id.to_owned() }), content: message.to_vec() };
        let response = self.signer.clone().sign(request).await.map_err(|status| status_error(&status))?;
        // tufa-signer reports where it recorded the signature in its own audit log; Go
        // notary-signer sends nothing, and a malformed value is ignored.
        let signer_seq = response
            .metadata()
            .get(AUDIT_SEQ_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        let reply = response.into_inner();
        let keytype =
            reply.key_info.and_then(|info| info.algorithm).map(|algorithm| algorithm.algorithm).unwrap_or_default();
        Ok(OnlineSignature { method: method_for(&keytype).to_owned(), bytes: reply.content, signer_seq })
    }

    async fn health(&self) -> Result<(), SignerError> {
        for service in HEALTH_SERVICES {
            let reply = self
                .health
                .clone()
                .check(HealthCheckRequest { service: service.to_owned() })
                .await
                .map_err(|status| status_error(&status))?
                .into_inner();
            if reply.status != ServingStatus::Serving as i32 {
                return Err(SignerError::Unavailable(format!("{service} is not serving")));
            }
        }
        Ok(())
    }
}
