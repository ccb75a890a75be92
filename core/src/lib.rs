//! The Notary v1 TUF dialect: canonical JSON, names, keys, signatures, metadata and the update
//! verifier. This crate does no IO and knows neither the database nor HTTP.

pub mod canonical;
pub mod json;
pub mod keys;
pub mod metadata;
pub mod names;
pub mod record;
pub mod time;
pub mod update;
pub mod verify;
pub mod x509;
