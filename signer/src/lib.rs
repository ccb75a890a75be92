//! Tufa signer: a drop-in for notary-signer. It serves notary-signer's gRPC protocol over mutual
//! TLS, keeps online keys in a [`backend`] (software keys sealed under key-encryption keys, or a
//! PKCS#11 token), records key metadata and an audit trail of every signature in its own
//! database ([`store`]), and implements the RPC semantics in [`service`]; [`grpc`] only translates.

pub mod backend;
pub mod config;
pub mod grpc;
pub mod pki;
pub mod run;
pub mod service;
pub mod store;
