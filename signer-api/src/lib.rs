//! The server<->signer contract: notary-signer's gRPC protocol (proto3 package `proto`, spec
//! section 4.2), generated with tonic from `proto/signer.proto`.
//!
//! - Server side: implement [`proto::key_management_server::KeyManagement`] and
//!   [`proto::signer_server::Signer`], serve them with
//!   [`proto::key_management_server::KeyManagementServer`] and [`proto::signer_server::SignerServer`].
//! - Client side: [`proto::key_management_client::KeyManagementClient`] and
//!   [`proto::signer_client::SignerClient`] over a `tonic::transport::Channel`.

/// The generated messages, clients and servers. Names follow the `.proto` file, converted to
/// Rust conventions by prost (`keyID` is `key_id`, `ID` is `id`, `publicKey` is `public_key`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("proto");
}

/// The standard gRPC health service name notary-server checks for key management.
pub const HEALTH_KEY_MANAGEMENT: &str = "grpc.health.v1.Health.KeyManagement";

/// The standard gRPC health service name notary-server checks for signing.
pub const HEALTH_SIGNER: &str = "grpc.health.v1.Health.Signer";

/// Full gRPC service name of the key-management service.
pub const KEY_MANAGEMENT_SERVICE: &str = "proto.KeyManagement";

/// Full gRPC service name of the signing service.
pub const SIGNER_SERVICE: &str = "proto.Signer";
