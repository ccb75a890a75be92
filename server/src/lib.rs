//! tufa-server: a Notary-v1-compatible TUF trust server. Only this crate knows HTTP.

pub mod app;
pub mod error;
pub mod metrics;
pub mod multipart;
pub mod routes;
pub mod service;
pub mod signing;
