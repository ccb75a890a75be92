//! A Notary v1 TUF client: fetches a GUN's trust data from a Notary-compatible server
//! (tufa-server or Go notary-server), verifies it as the notary client does (pinned or trusted
//! root, rotation chain, timestamp, snapshot, targets and delegations, expiry, thresholds,
//! rollback against persisted state) and answers whether a tag or digest is signed as a
//! [`Requirement`] asks.
//!
//! Layout: `fetch` (HTTP and the registry-token dance), `tuf` (pure verification over fetched
//! bytes and state, and the decision for one image), `state` (the persisted per-GUN state),
//! `verifier` (the cache and the orchestration).

pub mod fetch;
pub mod state;
pub mod tuf;
pub mod verifier;

#[cfg(test)]
mod testutil;

pub use fetch::Credentials;
pub use tufa_core::names::RoleName;
pub use verifier::{Config, Verifier};

/// How the root of a GUN is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPin {
    /// Trust on first use, then the persisted root (and the roots it signs into).
    None,
    /// The root role must be signed, to its threshold, by keys whose canonical key IDs are listed
    /// here (a certificate key's canonical ID is the ID of the public key inside it).
    RootKeys(Vec<String>),
    /// The root role must be signed, to its threshold, by keys whose IDs as root.json lists them
    /// are listed here (MCR's `cert-ids`, notary's `trust_pinning.certs`).
    CertIds(Vec<String>),
}

/// Which signing roles a target must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRequirement {
    /// Notary's rule: the first of `targets` and its delegations (pre-order, in the order each
    /// parent lists them) that lists the tag decides its digest.
    Any,
    /// Every one of these roles must sign the target with the same digest.
    AllOf(Vec<RoleName>),
    /// At least `min` of these roles must sign the target with the same digest.
    AtLeast {
        /// The roles that count.
        roles: Vec<RoleName>,
        /// How many of them must sign.
        min: usize,
    },
}

/// What a verification requires: the root pin, the signing roles, and whether expired trust
/// data may be used when it comes from the cache (the server being unreachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// How the root is trusted.
    pub pin: RootPin,
    /// Which roles must sign.
    pub roles: RoleRequirement,
    /// Whether expired data from the cache (never freshly fetched data) is accepted.
    pub allow_expired_cached: bool,
}

/// The answer to a verification that could decide.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Whether the image is signed as required.
    pub trusted: bool,
    /// The signed manifest digest, `sha256:<hex>`, when one was found.
    pub digest: Option<String>,
    /// The roles that signed the target with that digest, in priority order.
    pub roles: Vec<String>,
    /// The key IDs (as the metadata lists them) whose signatures those roles' files carry.
    pub keys: Vec<String>,
    /// Why, in words a person understands.
    pub reason: String,
}

/// Why a verification could not decide (as opposed to an untrusted [`Verdict`], which is a
/// decided "no").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The request itself is malformed (a bad GUN, neither tag nor digest, a bad digest).
    #[error("invalid request: {0}")]
    Input(String),
    /// The trust server could not be reached or answered with an error, and no usable cached
    /// data was at hand.
    #[error("trust server unavailable: {0}")]
    Unavailable(String),
    /// The trust server refused the credentials.
    #[error("not authorized by the trust server: {0}")]
    Unauthorized(String),
    /// The client is misconfigured (bad CA, unusable state directory).
    #[error("client configuration: {0}")]
    Config(String),
}
