//! Black-box tests of tufa-signer: the service semantics and the audit log on SQLite and
//! PostgreSQL, KEK rotation, and the gRPC protocol end to end over mutual TLS.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod audit;
mod cli;
mod grpc;
mod serve;
mod service;
mod support;
