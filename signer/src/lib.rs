//! Tufa signer: a drop-in for notary-signer. It serves notary-signer's gRPC protocol over mutual
//! TLS, keeps online keys in a [`backend`] (software keys sealed under key-encryption keys, or a
//! PKCS#11 token), records key metadata and a tamper-evident audit log of every signature, key
//! creation and key deletion in its own database ([`store`]), signs checkpoints of that log with
//! its own checkpoint key ([`checkpoint`]), and implements the RPC semantics in [`service`];
//! [`grpc`] only translates.

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod grpc;
pub mod pki;
pub mod run;
pub mod service;
pub mod store;
