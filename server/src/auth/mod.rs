//! Who may do what: every request's credentials are checked against the access its route needs
//! ([`crate::routes::Route::required_access`]) before the route runs.
//!
//! Three modes (see `crate::config::AuthConfig`):
//! * `none`: every caller may do everything (only allowed on loopback unless made insecure);
//! * `token`: notary-server's registry token auth: a bearer JWT from an external token service,
//!   checked by `tufa_auth::TokenVerifier`, whose `access` claim must grant what the route needs;
//! * `builtin`: Tufa is its own token service ([`endpoint`]); requests carry one of its JWTs, an
//!   API token (as a bearer token or as the password of Basic credentials), or nothing (anonymous),
//!   and roles bound to repository patterns in the database decide.
//!
//! A refused request gets notary's 401 with a `WWW-Authenticate: Bearer` challenge naming the scope
//! it needs, whether or not the repository exists, so refusals reveal nothing.

pub mod endpoint;
pub mod keys;
pub mod login;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use tufa_auth::roles::{ANONYMOUS, Binding, Pattern, Role, effective_role};
use tufa_auth::{Access, ApiTokenSecret, ChallengeError, TokenVerifier, grants};
use tufa_store::Store;
use zeroize::Zeroizing;

use crate::config::{BuiltinAuthConfig, TokenAuthConfig};
use crate::error::ApiError;

/// The identity behind a request, once its credentials were accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's name; `None` for an anonymous caller.
    pub principal: Option<String>,
    /// What the caller's bearer token grants (empty unless a JWT was presented).
    pub granted: Vec<Access>,
}

impl Caller {
    /// An unauthenticated caller.
    fn anonymous() -> Self {
        Self { principal: None, granted: Vec::new() }
    }

    /// The principal for logs: the name, or `anonymous`.
    pub fn name(&self) -> &str {
        self.principal.as_deref().unwrap_or(ANONYMOUS)
    }
}

/// What a request presented in its `Authorization` header.
pub(crate) enum Presented {
    /// No header.
    Nothing,
    /// `Bearer <token>`.
    Bearer(String),
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password (or API token).
        password: Zeroizing<String>,
    },
    /// A header that is neither.
    Malformed,
}

/// Reads the `Authorization` header. Its value is never logged.
pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Presented::Nothing };
    let Ok(text) = value.to_str() else { return Presented::Malformed };
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Presented::Bearer(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else { return Presented::Malformed };
        let decoded = Zeroizing::new(decoded);
        let Ok(text) = std::str::from_utf8(&decoded) else { return Presented::Malformed };
        let Some((user, password)) = text.split_once(':') else { return Presented::Malformed };
        return Presented::Basic { user: user.to_owned(), password: Zeroizing::new(password.to_owned()) };
    }
    Presented::Malformed
}

/// Token mode: an external token service's JWTs.
pub struct TokenMode {
    /// Checks signatures, issuer, audience and times.
    pub verifier: TokenVerifier,
    /// The settings (realm and service for challenges).
    pub config: TokenAuthConfig,
}

/// Builtin mode: the database's principals, API tokens and roles, and this server's own JWTs.
pub struct Builtin {
    /// The settings.
    pub config: BuiltinAuthConfig,
    /// Principals, API tokens, role bindings and token-signing keys.
    pub store: Arc<dyn Store>,
    /// Checks this server's JWTs for the trust service.
    pub verifier: TokenVerifier,
    /// Signs JWTs.
    pub keys: keys::TokenKeys,
    /// Bounds password hashing and failed logins.
    pub logins: login::LoginGuard,
}

/// How requests are authenticated.
pub enum Authenticator {
    /// Nobody is asked; everyone may do everything.
    None,
    /// External registry tokens.
    Token(Box<TokenMode>),
    /// The builtin token service.
    Builtin(Arc<Builtin>),
}

impl Authenticator {
    /// The mode's name, for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token(_) => "token",
            Self::Builtin(_) => "builtin",
        }
    }

    fn refuse(&self, required: &[Access], error: Option<ChallengeError>) -> ApiError {
        let (realm, service) = match self {
            Self::None => ("", ""),
            Self::Token(mode) => (mode.config.realm.as_str(), mode.config.service.as_str()),
            Self::Builtin(builtin) => (builtin.config.realm.as_str(), builtin.config.service.as_str()),
        };
        ApiError::Unauthorized {
            challenge: tufa_auth::challenge(realm, service, required, error),
            required: required.to_vec(),
        }
    }

    /// Checks the request's credentials against `required` and returns the caller, or the 401 to
    /// answer. `remote` is only used in log lines.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        required: &[Access],
        remote: Option<SocketAddr>,
    ) -> Result<Caller, ApiError> {
        match self {
            Self::None => Ok(Caller::anonymous()),
            // Probes, metrics and unknown routes need nothing; their credentials are not even read.
            _ if required.is_empty() => Ok(Caller::anonymous()),
            Self::Token(mode) => {
                let token = match presented(headers) {
                    Presented::Nothing => return Err(self.refuse(required, None)),
                    Presented::Bearer(token) => token,
                    Presented::Basic { .. } | Presented::Malformed => {
                        return Err(self.refuse(required, Some(ChallengeError::InvalidToken)));
                    }
                };
                self.jwt_caller(&mode.verifier, &token, required, remote)
            }
            Self::Builtin(builtin) => builtin.authorize(self, headers, required, remote).await,
        }
    }

    /// The caller of a registry JWT checked by `verifier`, whose `access` must grant all of `required`.
    fn jwt_caller(
        &self,
        verifier: &TokenVerifier,
        token: &str,
        required: &[Access],
        remote: Option<SocketAddr>,
    ) -> Result<Caller, ApiError> {
        let claims = verifier.verify(token, SystemTime::now()).map_err(|error| {
            tracing::info!(remote = ?remote, reason = %error, "refused a bearer token");
            self.refuse(required, Some(ChallengeError::InvalidToken))
        })?;
        if !required.iter().all(|access| grants(&claims.access, access)) {
            return Err(self.refuse(required, Some(ChallengeError::InsufficientScope)));
        }
        let principal = (!claims.subject.is_empty()).then_some(claims.subject);
        Ok(Caller { principal, granted: claims.access })
    }
}

impl Builtin {
    /// Makes sure the database holds the token CA and signing key (sealed under `kek`), loads
    /// them, and builds the verifier for this server's own tokens.
    pub async fn start(
        config: BuiltinAuthConfig,
        store: Arc<dyn Store>,
        kek: crate::signing::SealingKey,
    ) -> Result<Self, keys::KeysError> {
        keys::ensure(store.as_ref(), &kek).await?;
        let keys = keys::TokenKeys::load(store.clone(), kek, config.issuer.clone()).await?;
        let verifier = TokenVerifier::new(tufa_auth::TokenSettings {
            issuer: config.issuer.clone(),
            service: config.service.clone(),
            root_certificates: keys.ca_pem.clone().into_bytes(),
        })
        .map_err(|error| keys::KeysError::Crypto(format!("the token CA: {error}")))?;
        Ok(Self { config, store, verifier, keys, logins: login::LoginGuard::new() })
    }

    async fn authorize(
        &self,
        outer: &Authenticator,
        headers: &HeaderMap,
        required: &[Access],
        remote: Option<SocketAddr>,
    ) -> Result<Caller, ApiError> {
        let invalid = || outer.refuse(required, Some(ChallengeError::InvalidToken));
        let (caller, presented_token) = match presented(headers) {
            Presented::Nothing => (Caller::anonymous(), false),
            Presented::Bearer(token) if ApiTokenSecret::parse(&token).is_some() => {
                let principal = self.api_token_principal(&token, None).await?.ok_or_else(invalid)?;
                (Caller { principal: Some(principal), granted: Vec::new() }, true)
            }
            Presented::Bearer(token) => return outer.jwt_caller(&self.verifier, &token, required, remote),
            Presented::Basic { user, password } => {
                // Only API tokens are accepted here: checking a password on every request would
                // make each request cost a memory-hard hash. Passwords go to the token endpoint.
                let principal = self.api_token_principal(&password, Some(&user)).await?.ok_or_else(invalid)?;
                (Caller { principal: Some(principal), granted: Vec::new() }, true)
            }
            Presented::Malformed => return Err(invalid()),
        };
        let bindings = self.bindings_for(caller.principal.as_deref()).await?;
        // A request without credentials never gets the catalog (`GET /v2/`): the notary CLI and
        // docker learn from that ping's challenge where to get tokens, and only retry with one
        // after a 401 there. Once they hold a token (even an anonymous one) the catalog is theirs.
        let granted: Vec<Access> = required
            .iter()
            .filter(|access| presented_token || access.type_ != "registry")
            .filter_map(|access| self.grant(&bindings, caller.principal.as_deref(), access, None))
            .collect();
        if required.iter().all(|access| grants(&granted, access)) {
            Ok(caller)
        } else {
            let error = presented_token.then_some(ChallengeError::InsufficientScope);
            Err(outer.refuse(required, error))
        }
    }

    /// The principal an API token belongs to, if the token is valid now (known, secret matches,
    /// not revoked, not expired, principal still present). With `user`, the token must belong to
    /// that principal.
    pub(crate) async fn api_token_principal(&self, text: &str, user: Option<&str>) -> Result<Option<String>, ApiError> {
        let Some((id, secret)) = ApiTokenSecret::parse(text) else { return Ok(None) };
        let Some(token) = self.store.api_token(&id).await? else { return Ok(None) };
        if !ApiTokenSecret::hash_matches(&token.secret_hash, &secret) {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|expires| expires <= now) {
            return Ok(None);
        }
        if user.is_some_and(|user| !user.is_empty() && user != token.principal) {
            return Ok(None);
        }
        if self.store.principal(&token.principal).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(token.principal))
    }

    /// The role bindings of `principal` and of `anonymous`, parsed. Unparseable stored bindings
    /// (which the admin commands never write) are skipped with a warning.
    pub(crate) async fn bindings_for(&self, principal: Option<&str>) -> Result<Vec<Binding>, ApiError> {
        let mut names = vec![ANONYMOUS];
        if let Some(principal) = principal {
            names.push(principal);
        }
        let stored = self.store.bindings_for(&names).await?;
        Ok(stored
            .into_iter()
            .filter_map(|binding| {
                let parsed = binding.role.parse::<Role>().ok().zip(Pattern::parse(&binding.pattern).ok());
                if parsed.is_none() {
                    tracing::warn!(principal = %binding.principal, role = %binding.role, "skipping an unreadable role binding");
                }
                parsed.map(|(role, pattern)| Binding { principal: binding.principal, role, pattern })
            })
            .collect())
    }

    /// What `bindings` grant of `requested`. `registry_host` is set when the request is for a
    /// registry's service: its repository names are then prefixed with the host to form GUNs.
    pub(crate) fn grant(
        &self,
        bindings: &[Binding],
        principal: Option<&str>,
        requested: &Access,
        registry_host: Option<&str>,
    ) -> Option<Access> {
        match (requested.type_.as_str(), registry_host) {
            ("repository", host) => {
                let gun = match host {
                    Some(host) => format!("{host}/{}", requested.name),
                    None => requested.name.clone(),
                };
                tufa_auth::roles::grant(effective_role(bindings, principal, &gun), requested)
            }
            // The trust server's catalog is the global changefeed, which shows each caller only
            // the repositories it may read, and `GET /v2/`: every caller may ask for them.
            ("registry", None) if requested.name == "catalog" => Some(requested.clone()),
            // A registry's catalog lists every repository it holds: only admins of everything.
            ("registry", Some(_)) if requested.name == "catalog" => {
                let everything = bindings.iter().any(|binding| {
                    binding.role == Role::Admin
                        && binding.pattern.as_str() == "*"
                        && principal.is_some_and(|principal| binding.principal == principal)
                });
                everything.then(|| requested.clone())
            }
            _ => None,
        }
    }

    /// Whether the caller is an admin of `gun` by its role bindings.
    pub(crate) async fn is_admin(&self, caller: &Caller, gun: &str) -> Result<bool, ApiError> {
        let Some(principal) = caller.principal.as_deref() else { return Ok(false) };
        let bindings = self.bindings_for(Some(principal)).await?;
        Ok(tufa_auth::roles::role_for(&bindings, principal, gun) == Some(Role::Admin))
    }

    /// Whether the caller may read `gun` (used to filter the global changefeed).
    pub(crate) fn may_read(&self, bindings: &[Binding], caller: &Caller, gun: &str) -> bool {
        effective_role(bindings, caller.principal.as_deref(), gun).is_some()
    }
}
