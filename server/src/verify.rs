//! Enforcement: an image judged against the trust policy (tufa-policy) by a full TUF client
//! (tufa-client), the one path behind every enforcement point: `tufa-server verify`,
//! `POST /v1/verify` (on the trust server and on `tufa-server verify-server`), the admission
//! webhooks and the Docker authorization plugin (tufa-enforce decides what each request means).
//!
//! [`PolicyVerifier`] is the verifier: for an image it takes the policy's decision (root pin,
//! required roles, expired cached data) and asks a [`Verifier`] for the trust server the policy
//! names for the image's registry (one per server, made on first use). Inside tufa-server the
//! metadata comes from the server's own store ([`StoreSource`]), never over the network to
//! itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tufa_client::fetch::{FetchError, Source};
use tufa_client::{Config as ClientConfig, Credentials, Requirement, Verifier};
use tufa_enforce::{ImageVerifier, Judgement, Verdict};
use tufa_policy::{ImageRef, Policy, PolicyHandle, RoleRequirement, RootPin};
use zeroize::Zeroizing;

/// The policy of tufa-server's `POST /v1/verify` when no policy file is configured: content trust
/// enforced for every repository, any role signing (with [`Unpinned::TrustOnFirstUse`]).
pub fn default_policy() -> Result<Policy, String> {
    Policy::from_toml_str("[content-trust]\nmode = \"enforced\"\n").map_err(|error| error.to_string())
}

/// What to do with an image whose repository has no pinned root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpinned {
    /// Untrusted, with the reason (a policy file's rule, as in Mirantis Container Runtime).
    Deny,
    /// Trust the root the source holds on first use, then only roots it signs into. For
    /// tufa-server's own `/v1/verify` without a policy file: the store is the source of truth.
    TrustOnFirstUse,
}

/// Settings given on the command line that replace the policy's `[trust-server]` ones.
#[derive(Debug, Clone, Default)]
pub struct ServerOverride {
    /// The trust server for every registry.
    pub url: Option<String>,
    /// A PEM file of CA certificates for it.
    pub ca: Option<PathBuf>,
    /// Credentials to present.
    pub credentials: Option<tufa_policy::Credentials>,
}

/// The [`ImageVerifier`] of every enforcement point.
pub struct PolicyVerifier {
    policy: PolicyHandle,
    state_dir: PathBuf,
    unpinned: Unpinned,
    local: Option<Arc<dyn Source>>,
    server: ServerOverride,
    verifiers: Mutex<HashMap<String, Arc<Verifier>>>,
}

impl std::fmt::Debug for PolicyVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PolicyVerifier")
            .field("state_dir", &self.state_dir)
            .field("unpinned", &self.unpinned)
            .field("local", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

/// The one local source's name in messages and state.
const LOCAL: &str = "local store";

impl PolicyVerifier {
    /// A verifier that asks the trust servers the policy names, keeping rollback state under
    /// `state_dir` (the policy's `[cache] state-dir` wins when set).
    pub fn remote(policy: PolicyHandle, state_dir: PathBuf, server: ServerOverride) -> Self {
        Self { policy, state_dir, unpinned: Unpinned::Deny, local: None, server, verifiers: Mutex::new(HashMap::new()) }
    }

    /// A verifier over tufa-server's own store.
    pub fn local(
        policy: PolicyHandle,
        state_dir: PathBuf,
        service: crate::service::Service,
        unpinned: Unpinned,
    ) -> Self {
        Self {
            policy,
            state_dir,
            unpinned,
            local: Some(Arc::new(StoreSource { service })),
            server: ServerOverride::default(),
            verifiers: Mutex::new(HashMap::new()),
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// The verifier for the trust server of `registry` under `policy`.
    fn verifier_for(&self, policy: &Policy, registry: &str) -> Result<Arc<Verifier>, String> {
        let url = match (&self.local, &self.server.url) {
            (Some(_), _) => LOCAL.to_owned(),
            (None, Some(url)) => url.clone(),
            (None, None) => policy.trust_server_url(registry),
        };
        let mut verifiers = self.verifiers.lock().map_err(|_| "the verifier table failed earlier".to_owned())?;
        if let Some(verifier) = verifiers.get(&url) {
            return Ok(verifier.clone());
        }
        let cache = policy.cache();
        let base = cache.state_dir.clone().unwrap_or_else(|| self.state_dir.clone());
        // One state directory per trust server: their roots and versions are not comparable.
        let state_dir = base.join(hex::encode(tufa_core::keys::sha256(url.as_bytes())).get(..16).unwrap_or("server"));
        let trust = policy.trust_server();
        let config = ClientConfig {
            server_url: url.clone(),
            ca_pem: match self.server.ca.as_ref().or(trust.ca.as_ref()) {
                Some(path) => Some(read_file(path, "the trust server's CA file")?),
                None => None,
            },
            credentials: credentials(self.server.credentials.as_ref().unwrap_or(&trust.credentials))?,
            state_dir,
            max_repositories: cache.max_repositories.max(1),
            refresh: Duration::from_secs(cache.refresh_secs),
            max_staleness: Duration::from_secs(cache.max_staleness_secs),
        };
        let verifier = match &self.local {
            Some(source) => Verifier::with_source(config, source.clone()),
            None => Verifier::new(config),
        }
        .map_err(|error| error.to_string())?;
        let verifier = Arc::new(verifier);
        verifiers.insert(url, verifier.clone());
        Ok(verifier)
    }
}

/// The bytes of `path`, or why they cannot be read.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{what} {} cannot be read: {error}", path.display()))
}

/// A secret read from `path`, without its trailing line end.
fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let bytes = Zeroizing::new(read_file(path, what)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{what} {} is not UTF-8", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    Ok(Zeroizing::new(secret.to_owned()))
}

/// The client's credentials for the policy's.
fn credentials(credentials: &tufa_policy::Credentials) -> Result<Credentials, String> {
    Ok(match credentials {
        tufa_policy::Credentials::None => Credentials::None,
        tufa_policy::Credentials::Password { username, password_file } => Credentials::Basic {
            username: username.clone(),
            password: read_secret(password_file, "the trust server's password file")?,
        },
        tufa_policy::Credentials::Token { token_file } => {
            Credentials::Token(read_secret(token_file, "the trust server's token file")?)
        }
    })
}

/// The client's role requirement for the policy's.
fn requirement_roles(required: &RoleRequirement) -> Result<tufa_client::RoleRequirement, String> {
    let names = |roles: &[String]| -> Result<Vec<tufa_client::RoleName>, String> {
        roles
            .iter()
            .map(|role| tufa_client::RoleName::parse(role).map_err(|error| format!("role {role:?}: {error}")))
            .collect()
    };
    Ok(match required {
        RoleRequirement::Any => tufa_client::RoleRequirement::Any,
        RoleRequirement::AllOf(roles) => tufa_client::RoleRequirement::AllOf(names(roles)?),
        RoleRequirement::AtLeast { roles, min } => {
            tufa_client::RoleRequirement::AtLeast { roles: names(roles)?, min: *min }
        }
    })
}

#[async_trait::async_trait]
impl ImageVerifier for PolicyVerifier {
    async fn verify(&self, image: &ImageRef) -> Result<Verdict, String> {
        let policy = self.policy.current();
        let decision = policy.decide(image);
        let pin = match (&decision.pin, self.unpinned) {
            (RootPin::None, Unpinned::Deny) => {
                return Ok(Verdict {
                    trusted: false,
                    digest: None,
                    roles: Vec::new(),
                    keys: Vec::new(),
                    reason: decision.missing_pin_reason().unwrap_or_default(),
                });
            }
            (RootPin::None, Unpinned::TrustOnFirstUse) => tufa_client::RootPin::None,
            (RootPin::RootKeys(keys), _) => tufa_client::RootPin::RootKeys(keys.clone()),
            (RootPin::CertIds(keys), _) => tufa_client::RootPin::CertIds(keys.clone()),
        };
        let requirement = Requirement {
            pin,
            roles: requirement_roles(&decision.required)?,
            allow_expired_cached: decision.allow_expired_cached,
        };
        let verifier = self.verifier_for(&policy, image.registry())?;
        let verdict = verifier
            .verify(&image.gun(), image.tag(), image.digest(), &requirement)
            .await
            .map_err(|error| error.to_string())?;
        Ok(Verdict {
            trusted: verdict.trusted,
            digest: verdict.digest,
            roles: verdict.roles,
            keys: verdict.keys,
            reason: verdict.reason,
        })
    }
}

/// Metadata read from tufa-server's own store, as the server serves it (an expired timestamp
/// re-signed first, as `GET timestamp.json` does).
pub struct StoreSource {
    service: crate::service::Service,
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("StoreSource").field("store", &self.service.store.backend()).finish()
    }
}

/// The stored bytes, or not found, or too large for `limit`.
fn found(file: Option<tufa_store::StoredFile>, what: String, limit: u64) -> Result<Vec<u8>, FetchError> {
    let file = file.ok_or(FetchError::NotFound)?;
    if u64::try_from(file.data.len()).unwrap_or(u64::MAX) > limit {
        return Err(FetchError::TooLarge { what, limit });
    }
    Ok(file.data)
}

fn store_failure(error: tufa_store::StoreError) -> FetchError {
    FetchError::Network(format!("the store could not be read: {error}"))
}

#[async_trait::async_trait]
impl Source for StoreSource {
    async fn current(&self, gun: &str, role: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let (Ok(parsed_gun), Ok(parsed_role)) =
            (tufa_core::names::Gun::parse(gun), tufa_core::names::RoleName::parse(role))
        else {
            return Err(FetchError::NotFound);
        };
        let file = self
            .service
            .current_served(&parsed_gun, &parsed_role)
            .await
            .map_err(|error| FetchError::Network(format!("the store could not be read: {error}")))?;
        found(file, format!("{role}.json of {gun}"), limit)
    }

    async fn root_version(&self, gun: &str, version: i64) -> Result<Vec<u8>, FetchError> {
        let file = self.service.store.by_version(gun, "root", version).await.map_err(store_failure)?;
        found(file, format!("{version}.root.json of {gun}"), tufa_client::fetch::MAX_ROOT_BYTES)
    }

    async fn by_checksum(&self, gun: &str, role: &str, sha256_hex: &str, length: u64) -> Result<Vec<u8>, FetchError> {
        let file = self.service.store.by_checksum(gun, role, sha256_hex).await.map_err(store_failure)?;
        found(file, format!("{role}.{sha256_hex}.json of {gun}"), length)
    }
}

/// The answer about one image: `POST /v1/verify`'s body and `tufa-server verify --json`'s line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The image as normalised (`registry/path:tag` or `@sha256:…`).
    pub image: String,
    /// Whether the image was verified trusted.
    pub trusted: bool,
    /// Whether the policy lets it run: trusted, or exempt, or content trust disabled or
    /// permissive for it, or fail-open when trust could not be decided.
    pub allowed: bool,
    /// The signed digest (`sha256:<hex>`), when one was found.
    pub digest: Option<String>,
    /// The roles that signed it.
    pub roles: Vec<String>,
    /// The key IDs whose signatures counted.
    pub keys: Vec<String>,
    /// Why, in words a person understands.
    pub reason: String,
    /// True when trust could not be decided (the trust server unreachable without usable cached
    /// data, a misconfiguration): `tufa-server verify` exits 2.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undecided: bool,
}

/// Judges `reference` under the verifier's current policy.
pub async fn answer(reference: &ImageRef, verifier: &PolicyVerifier) -> Answer {
    let policy = verifier.policy();
    let judgement = tufa_enforce::judge(reference, &policy, verifier).await;
    let image = reference.to_string();
    let answer = |trusted: bool, allowed: bool, reason: String| Answer {
        image: image.clone(),
        trusted,
        allowed,
        digest: None,
        roles: Vec::new(),
        keys: Vec::new(),
        reason,
        undecided: false,
    };
    match judgement {
        Judgement::Trusted(verdict) => Answer {
            digest: verdict.digest,
            roles: verdict.roles,
            keys: verdict.keys,
            ..answer(true, true, verdict.reason)
        },
        Judgement::Skipped(why) => answer(false, true, format!("not verified: {why}")),
        Judgement::Warned(failure) => {
            answer(false, true, format!("allowed with a warning: {}", failure.sentence(&image)))
        }
        Judgement::Denied(failure) => Answer {
            undecided: failure.reason.starts_with("trust could not be decided"),
            ..answer(false, false, failure.sentence(&image))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policy_enforces_and_pins_nothing() {
        let policy = default_policy().unwrap();
        let decision = policy.decide(&ImageRef::parse("example.com/app:v1").unwrap());
        assert_eq!((decision.mode, decision.pin), (tufa_policy::Mode::Enforced, RootPin::None));
        assert_eq!(decision.required, RoleRequirement::Any);
    }
}
