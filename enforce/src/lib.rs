//! Tufa's enforcement points as pure decisions over the trust policy and an image verifier: the Docker Engine
//! authorization plugin ([`authz::decide`], served on a Unix socket by [`plugin::serve_plugin`]) and the Kubernetes
//! admission review, validating and mutating ([`admission::review`]).
//!
//! The TUF verification itself is behind [`ImageVerifier`]: the verifier applies the policy's root pins, required
//! roles and expiry rules; this crate applies exemptions, the allowed registries, `require-digest`, the mode
//! (disabled, permissive, enforced), fail-open and the run-option rules, all through one function ([`judge`]).
pub mod admission;
pub mod authz;
mod fold;
mod gate;
pub mod plugin;
#[cfg(test)]
mod testing;

pub use gate::{Failure, Judgement, judge};

/// The answer of a verification: decided trusted or not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Whether the image is trusted under the policy.
    pub trusted: bool,
    /// The signed digest the image resolves to (`sha256:<hex>`), when one was found.
    pub digest: Option<String>,
    /// The roles that signed the resolved target.
    pub roles: Vec<String>,
    /// The key IDs whose signatures counted.
    pub keys: Vec<String>,
    /// Why, in words a person understands.
    pub reason: String,
}

/// Verifies images (the integrator implements it over tufa-client with the policy's decision).
#[async_trait::async_trait]
pub trait ImageVerifier: Send + Sync {
    /// Err(reason) when it could not decide (server unreachable, ...): callers fail closed unless the policy says fail-open.
    async fn verify(&self, image: &tufa_policy::ImageRef) -> Result<Verdict, String>;
}

/// What the Docker daemon knows about a local image (asked by the authorization plugin, which sees only names).
#[async_trait::async_trait]
pub trait DaemonClient: Send + Sync {
    /// The RepoDigests (`name@sha256:…`) and RepoTags (`name:tag`) of the local image `reference` (a name, a
    /// name with tag or digest, or a full or short image ID) as the daemon resolves it; `Ok(None)` when the daemon
    /// has no such image.
    ///
    /// # Errors
    /// A reason when the daemon could not be asked or answered something unexpected.
    async fn image_repo_digests(&self, reference: &str) -> Result<Option<Vec<String>>, String>;

    /// The driver (`host`, `bridge`, `overlay`, ...) of the network `reference` (a name or a full or short ID) as the
    /// daemon resolves it; `Ok(None)` when the daemon has no such network.
    ///
    /// # Errors
    /// A reason when the daemon could not be asked or answered something unexpected.
    async fn network_driver(&self, reference: &str) -> Result<Option<String>, String>;
}
