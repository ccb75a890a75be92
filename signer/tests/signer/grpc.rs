//! notary-signer's gRPC protocol end to end: a real listener on 127.0.0.1:0 with the gen-certs
//! PKI, driven by the generated tonic clients over mutual TLS.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tufa_core::keys::{KeyType, PublicKey, sha256};
use tufa_signer::grpc::{self, TlsMaterial};
use tufa_signer::pki::{Pki, generate_pki};
use tufa_signer::service::SignerService;
use tufa_signer::store::{EventFilter, Store};
use tufa_signer_api::proto::key_management_client::KeyManagementClient;
use tufa_signer_api::proto::signer_client::SignerClient;
use tufa_signer_api::proto::{CreateKeyRequest, KeyId, SignatureRequest};
use tufa_signer_api::{HEALTH_KEY_MANAGEMENT, HEALTH_SIGNER};
use zeroize::Zeroizing;

use crate::support::{KEK_A, software, sqlite_store};

const GUN: &str = "docker.io/library/alpine";

struct Harness {
    address: SocketAddr,
    pki: Pki,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), grpc::ServeError>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let pki = generate_pki(&[], "tufa-server").unwrap();
        let tls = TlsMaterial::from_pem(
            pki.signer.cert_pem.clone().into_bytes(),
            Zeroizing::new(pki.signer.key_pem.as_bytes().to_vec()),
            pki.ca.cert_pem.clone().into_bytes(),
        )
        .unwrap();
        let (store, dir) = sqlite_store().await;
        let service = SignerService::new(store.clone(), software(&[("a", KEK_A)], "a"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            grpc::serve(listener, &tls, service, async move {
                let _ = stopped.await;
            })
            .await
        });
        Harness { address, pki, store, stop: Some(stop), server, _dir: dir }
    }

    /// A channel trusting the signer's CA, presenting `identity` (PEM certificate and key).
    async fn channel_with(&self, identity: Option<(&str, &str)>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pki.ca.cert_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://{}", self.address)).unwrap().tls_config(tls)?.connect().await
    }

    /// Asks for a key while presenting `identity`; the error (failed connect or RPC) as text.
    async fn create_key_as(&self, identity: Option<(&str, &str)>) -> Result<(), String> {
        match self.channel_with(identity).await {
            Ok(channel) => KeyManagementClient::new(channel)
                .create_key(create("ecdsa", "timestamp"))
                .await
                .map(drop)
                .map_err(|status| format!("{status:?}")),
            Err(error) => Err(format!("{error:?}")),
        }
    }

    async fn channel(&self) -> Channel {
        self.channel_with(Some((&self.pki.client.cert_pem, &self.pki.client.key_pem))).await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.unwrap().unwrap();
    }
}

fn create(algorithm: &str, role: &str) -> CreateKeyRequest {
    CreateKeyRequest { algorithm: algorithm.to_owned(), gun: GUN.to_owned(), role: role.to_owned() }
}

fn key_id(id: &str) -> KeyId {
    KeyId { id: id.to_owned() }
}

#[tokio::test]
async fn create_get_sign_round_trip() {
    let harness = Harness::start().await;
    let channel = harness.channel().await;
    let mut keys = KeyManagementClient::new(channel.clone());
    let mut signer = SignerClient::new(channel);

    for (algorithm, method) in [("ecdsa", "ecdsa"), ("ed25519", "eddsa")] {
        let created = keys.create_key(create(algorithm, "timestamp")).await.unwrap().into_inner();
        let info = created.key_info.clone().unwrap();
        let id = info.key_id.unwrap().id;
        assert_eq!(info.algorithm.unwrap().algorithm, algorithm);

        // Idempotent until the key first signs.
        let again = keys.create_key(create(algorithm, "timestamp")).await.unwrap().into_inner();
        assert_eq!(again, created);

        // GetKeyInfo: the server rebuilds the key from (algorithm, publicKey) and recomputes its ID.
        let fetched = keys.get_key_info(key_id(&id)).await.unwrap().into_inner();
        assert_eq!(fetched.role, "timestamp");
        let fetched_info = fetched.key_info.unwrap();
        assert_eq!(fetched_info.key_id.unwrap().id, id);
        let keytype = fetched_info.algorithm.unwrap().algorithm;
        let public = PublicKey::new(KeyType::parse(&keytype), fetched.public_key.clone());
        assert_eq!(public.key_id(), id);
        assert_eq!(fetched.public_key, created.public_key);

        // Sign the full message; the signature verifies with the method Notary uses.
        let message = br#"{"_type":"Timestamp","version":1}"#.to_vec();
        let mut request = tonic::Request::new(SignatureRequest { key_id: Some(key_id(&id)), content: message.clone() });
        request.metadata_mut().insert("x-request-id", format!("req-{algorithm}").parse().unwrap());
        let response = signer.sign(request).await.unwrap();
        // The response metadata names the signature's entry in the signer's audit log.
        let seq: u64 = response.metadata().get("tufa-audit-seq").unwrap().to_str().unwrap().parse().unwrap();
        let signature = response.into_inner();
        assert_eq!(signature.algorithm.unwrap().algorithm, method);
        let signed_info = signature.key_info.unwrap();
        assert_eq!(signed_info.key_id.unwrap().id, id);
        assert_eq!(signed_info.algorithm.unwrap().algorithm, algorithm);
        public.verify(method, &message, &signature.content).unwrap();

        // Used now: CreateKey makes a new key.
        let fresh = keys.create_key(create(algorithm, "timestamp")).await.unwrap().into_inner();
        assert_ne!(fresh.key_info.unwrap().key_id.unwrap().id, id);

        // The audit trail names the client certificate.
        let filter = EventFilter { key_id: Some(id.clone()), ..EventFilter::default() };
        let events = harness.store.sign_events(&filter).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].client_subject, "CN=tufa-server");
        assert_eq!(events[0].payload_sha256, hex::encode(sha256(&message)));
        assert_eq!(events[0].audit_seq, Some(i64::try_from(seq).unwrap()));

        // The entry at that position is this signature, by this client, from this connection.
        let entry = harness.store.audit_entries(seq.checked_sub(1), 1).await.unwrap().remove(0).entry;
        assert_eq!(entry.seq, seq);
        assert_eq!(entry.kind, "sign");
        assert_eq!(entry.principal.as_deref(), Some("CN=tufa-server"));
        assert_eq!(entry.request_id, Some(format!("req-{algorithm}")));
        let address: SocketAddr = entry.address.unwrap().parse().unwrap();
        assert!(address.ip().is_loopback(), "{address}");
        let details: serde_json::Value = serde_json::from_str(&entry.details).unwrap();
        assert_eq!(details["key_id"], id.as_str());
        assert_eq!(details["algorithm"], algorithm);
        assert_eq!(details["payload_sha256"], hex::encode(sha256(&message)));
    }

    // DeleteKey is idempotent; the key is gone afterwards.
    let doomed = keys.create_key(create("ecdsa", "snapshot")).await.unwrap().into_inner();
    let doomed_id = doomed.key_info.unwrap().key_id.unwrap().id;
    keys.delete_key(key_id(&doomed_id)).await.unwrap();
    keys.delete_key(key_id(&doomed_id)).await.unwrap();
    assert_eq!(keys.get_key_info(key_id(&doomed_id)).await.unwrap_err().code(), Code::NotFound);
    harness.stop().await;
}

#[tokio::test]
async fn errors_have_the_right_codes() {
    let harness = Harness::start().await;
    let channel = harness.channel().await;
    let mut keys = KeyManagementClient::new(channel.clone());
    let mut signer = SignerClient::new(channel);

    let unknown = "0f".repeat(32);
    let status = keys.get_key_info(key_id(&unknown)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), format!("key {unknown} not found"));
    let status =
        signer.sign(SignatureRequest { key_id: Some(key_id(&unknown)), content: b"m".to_vec() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let invalid = [
        keys.create_key(create("rsa", "timestamp")).await.map(drop),
        keys.create_key(create("ecdsa", "not-a-role")).await.map(drop),
        keys.create_key(CreateKeyRequest { gun: "x".repeat(300), ..create("ecdsa", "timestamp") }).await.map(drop),
        keys.get_key_info(key_id("abc")).await.map(drop),
        keys.delete_key(key_id("")).await.map(drop),
        signer.sign(SignatureRequest { key_id: None, content: b"m".to_vec() }).await.map(drop),
        signer.sign(SignatureRequest { key_id: Some(key_id(&unknown)), content: Vec::new() }).await.map(drop),
        signer
            .sign(SignatureRequest { key_id: Some(key_id(&unknown)), content: vec![0; 1024 * 1024 + 1] })
            .await
            .map(drop),
    ];
    let expected = [
        r#"unsupported key algorithm "rsa": expected ecdsa or ed25519"#,
        r#"invalid role "not-a-role": expected root, targets, snapshot, timestamp or a targets/… delegation"#,
        "invalid GUN: it is longer than 255 bytes",
        "key ID must be 64 lower-case hex digits (a TUF key ID); got 3 bytes",
        "key ID is missing",
        "key ID is missing",
        "content is empty: there is nothing to sign",
        "content is 1048577 bytes; at most 1048576 bytes are signed",
    ];
    assert_eq!(invalid.len(), expected.len());
    for (index, (result, message)) in invalid.into_iter().zip(expected).enumerate() {
        let status = result.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, message), "case {index}: {status:?}");
    }

    // Beyond the 4 MiB message limit the transport refuses before the service runs.
    let status = signer
        .sign(SignatureRequest { key_id: Some(key_id(&unknown)), content: vec![0; 5 * 1024 * 1024] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    harness.stop().await;
}

#[tokio::test]
async fn health_reports_serving_for_notary_names() {
    let harness = Harness::start().await;
    let mut health = HealthClient::new(harness.channel().await);
    for name in [HEALTH_KEY_MANAGEMENT, HEALTH_SIGNER, "", "proto.KeyManagement", "proto.Signer"] {
        let response = health.check(HealthCheckRequest { service: name.to_owned() }).await.unwrap().into_inner();
        assert_eq!(response.status, ServingStatus::Serving as i32, "service {name:?}");
    }
    let status = health.check(HealthCheckRequest { service: "unknown".to_owned() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    harness.stop().await;
}

#[tokio::test]
async fn clients_without_a_certificate_are_refused() {
    let harness = Harness::start().await;
    // With TLS 1.3 the connect may succeed; the first RPC must fail either way. The server asks
    // for a certificate and answers its absence with this alert; a signer that is down or not
    // speaking TLS would fail differently.
    let error = harness.create_key_as(None).await.unwrap_err();
    assert!(error.contains("CertificateRequired"), "{error}");
    let mut health = HealthClient::new(match harness.channel_with(None).await {
        Ok(channel) => channel,
        Err(_) => return harness.stop().await,
    });
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap_err();
    assert!(format!("{status:?}").contains("CertificateRequired"), "{status:?}");
    assert!(harness.store.unused_key(GUN, "timestamp", "ecdsa", "software").await.unwrap().is_none(), "no key created");
    harness.stop().await;
}

#[tokio::test]
async fn clients_with_a_certificate_from_another_ca_are_refused() {
    let harness = Harness::start().await;
    let stranger = generate_pki(&[], "tufa-server").unwrap();
    let error = harness.create_key_as(Some((&stranger.client.cert_pem, &stranger.client.key_pem))).await.unwrap_err();
    // The stranger's CA has the same name as the real one, so the signer finds an issuer by name
    // and the certificate's signature does not verify under it (TLS alert decrypt_error).
    assert!(error.contains("received fatal alert: DecryptError"), "{error}");
    assert!(harness.store.unused_key(GUN, "timestamp", "ecdsa", "software").await.unwrap().is_none(), "no key created");

    // The server certificate is not a client certificate either (wrong extended key usage).
    let error =
        harness.create_key_as(Some((&harness.pki.signer.cert_pem, &harness.pki.signer.key_pem))).await.unwrap_err();
    assert!(error.contains("UnsupportedCertificate"), "{error}");
    harness.stop().await;
}

#[tokio::test]
async fn serving_refuses_bad_tls_material() {
    let pki = generate_pki(&[], "tufa-server").unwrap();
    let no_ca = TlsMaterial::from_pem(
        pki.signer.cert_pem.clone().into_bytes(),
        Zeroizing::new(pki.signer.key_pem.as_bytes().to_vec()),
        b"not a certificate".to_vec(),
    );
    assert!(no_ca.unwrap_err().to_string().contains("client CA"));
    let no_key = TlsMaterial::from_pem(
        pki.signer.cert_pem.clone().into_bytes(),
        Zeroizing::new(Vec::new()),
        pki.ca.cert_pem.into_bytes(),
    );
    assert!(no_key.unwrap_err().to_string().contains("private key"));
}
