//! tufa-server: a Notary-v1-compatible TUF trust server. Only this crate knows HTTP.

pub mod admin;
pub mod app;
pub mod audit;
pub mod audit_api;
pub mod audit_cli;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod kek;
pub mod listener;
pub mod metrics;
pub mod multipart;
pub mod remote_signer;
pub mod routes;
pub mod run;
pub mod service;
pub mod signing;
pub mod tls;
pub mod upload;
pub mod verify;
pub mod verify_cli;
