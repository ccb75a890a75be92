//! Black-box tests of tufa-signer: the service semantics on SQLite and PostgreSQL, KEK rotation,
//! and the gRPC protocol end to end over mutual TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod grpc;
mod service;
mod support;
