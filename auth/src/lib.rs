//! Registry token auth and the built-in token service as pure functions: access grants, verification of
//! Docker-distribution-compatible bearer tokens, the challenge and body of a refused request, roles by GUN
//! pattern, token-request scopes, password and API-token hashing, the token service's certificates, and
//! issuing tokens. This crate does no IO and knows neither HTTP frameworks nor SQL: every decision is a
//! function of its inputs and the time it is given (only key, salt and token-id generation read the
//! system random generator).
pub mod access;
pub mod apitoken;
pub mod certs;
pub mod challenge;
pub mod duration;
pub mod issue;
mod keys;
pub mod password;
pub mod roles;
pub mod scope;
pub mod token;

pub use access::{Access, grants};
pub use apitoken::{API_TOKEN_PREFIX, ApiTokenSecret, RandomError};
pub use certs::{CertError, KeyAndCertificate, generate_ca, generate_signing, pem};
pub use challenge::{ChallengeError, challenge, unauthorized_body};
pub use duration::{DurationError, MAX_DURATION, parse_duration};
pub use issue::{IssueError, IssuedToken, TokenIssuer};
pub use password::{MAX_PASSWORD_LEN, PasswordError, hash_password, verify_password, verify_without_hash};
pub use roles::{ANONYMOUS, Binding, Pattern, Role, RoleError, effective_role, grant, role_for};
pub use scope::{ScopeError, parse_scope, parse_scopes};
pub use token::{
    Claims, LEEWAY_SECONDS, MAX_TOKEN_LEN, SettingsError, TokenError, TokenPart, TokenSettings, TokenVerifier,
};
