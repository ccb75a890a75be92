//! `tufa-server admin …`: users, service accounts, API tokens, role bindings, tombstones and the
//! token-signing key, written straight to the server's database. They take the server's own
//! `--config`, `--data-dir` and `--database-url` (before or after the subcommand), work while
//! servers run on the same database (SQLite too) and take effect at once: servers read principals,
//! tokens and bindings from the database on every check.

use std::io::{BufRead, Write};
use std::sync::Arc;

use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;
use tufa_audit::NewEntry;
use tufa_audit::entry::kinds;
use tufa_auth::roles::{ANONYMOUS, Pattern, Role};
use tufa_store::{ApiToken, Principal, PrincipalKind, Record, Store};
use zeroize::Zeroizing;

use crate::config::Config;

/// The audit record of an admin command: the actor is `admin-cli:<login>` (the operating-system
/// user who ran it), since the command works on the database directly.
fn admin_record(kind: &str, details: serde_json::Value) -> Record {
    let login = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let actor = format!("admin-cli:{login}");
    Record::new(NewEntry::new(kind, details).by(Some(&actor)))
}

/// Sets the repository of an admin record.
trait RecordGun {
    fn gun_of(self, gun: &str) -> Self;
}

impl RecordGun for Record {
    fn gun_of(mut self, gun: &str) -> Self {
        self.entry = self.entry.gun(gun);
        self
    }
}

/// The longest principal name.
pub const MAX_NAME_LEN: usize = 64;

/// Subcommands of `tufa-server`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Manage users, API tokens, roles and tombstones in the server's database (works while the
    /// server runs; changes take effect at once).
    Admin(AdminArgs),
    /// Verify the audit log against its signed checkpoints, print checkpoints, export entries,
    /// and answer who may sign and who signed (read-only; works while the server runs).
    Audit(crate::audit_cli::AuditArgs),
    /// Verify an image against a trust policy: exit 0 allowed, 1 denied, 2 error (for Slurm
    /// prologs and container wrappers).
    Verify(crate::verify_cli::VerifyArgs),
    /// Serve `POST /v1/verify` and the Kubernetes admission webhooks (`/validate`, `/mutate`) over
    /// HTTPS for a trust policy, against any Notary-compatible trust server.
    VerifyServer(crate::verify_cli::VerifyServerArgs),
    /// Serve the Docker Engine authorization plugin `tufa` on a Unix socket for a trust policy.
    AuthzPlugin(crate::verify_cli::AuthzPluginArgs),
}

/// `tufa-server admin`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// The administration actions.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum AdminAction {
    /// Add, remove or change users and service accounts.
    #[command(subcommand)]
    User(UserAction),
    /// Create or revoke API tokens.
    #[command(subcommand)]
    Token(TokenAction),
    /// Bind a role (reader, publisher, admin) on a repository pattern (`team-a/*`, an exact GUN, or
    /// `*`) to a principal; `anonymous` stands for unauthenticated callers (reader only).
    Grant {
        /// User, service account or `anonymous`.
        principal: String,
        /// reader, publisher or admin.
        role: String,
        /// An exact GUN, a prefix ending in `*`, or `*` alone.
        pattern: String,
    },
    /// Remove a role binding made with `grant`.
    Revoke {
        /// User, service account or `anonymous`.
        principal: String,
        /// reader, publisher or admin.
        role: String,
        /// The pattern exactly as granted.
        pattern: String,
    },
    /// Manage the tombstones deleted repositories leave.
    #[command(subcommand)]
    Tombstone(TombstoneAction),
    /// Manage the builtin token service's signing key.
    #[command(subcommand, name = "token-signer")]
    TokenSigner(TokenSignerAction),
    /// List users, tokens (without secrets), role bindings and tombstones.
    List,
}

/// `admin user …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum UserAction {
    /// Add a user with a password (--password-stdin), or without one a service account that signs
    /// in with API tokens only.
    Add {
        /// The user name: letters, digits, `.`, `_`, `-`, `@`; at most 64 characters.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A service account: signs in with API tokens only, never with a password (the default
        /// without --password-stdin).
        #[arg(long, conflicts_with = "password_stdin")]
        service: bool,
    },
    /// Set a user's password (read from the first line of standard input).
    Password {
        /// The user name.
        name: String,
        /// Read the password from the first line of standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove a user or service account with its tokens and role bindings.
    Remove {
        /// The user name.
        name: String,
    },
}

/// `admin token …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum TokenAction {
    /// Create an API token for a user or service account; the token is printed once, alone on the
    /// last line, and only its hash is stored.
    Create {
        /// The owner.
        name: String,
        /// Lifetime, e.g. 3s, 15m, 12h, 90d, 2w [default: never expires].
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// Revoke an API token by its ID (as `admin list` shows it).
    Revoke {
        /// The token's ID.
        id: String,
    },
}

/// `admin tombstone …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum TombstoneAction {
    /// Forget a deleted repository's last root, so that anyone with push access may re-create it.
    Clear {
        /// The repository.
        gun: String,
    },
}

/// `admin token-signer …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum TokenSignerAction {
    /// Print the CA certificate (PEM) that registries and token-mode servers must trust
    /// (their rootcertbundle).
    Bundle,
    /// Replace the token-signing key with a new one under the same CA; running servers switch
    /// within seconds and tokens signed by the old key stay valid until they expire.
    Rotate,
}

/// Why an admin command failed. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The command's arguments or input are not acceptable (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The command could not be carried out (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    /// The process exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => tufa_common::EXIT_CONFIG,
            Self::Failed(_) => 1,
        }
    }
}

impl From<tufa_store::StoreError> for AdminError {
    fn from(error: tufa_store::StoreError) -> Self {
        Self::Failed(format!("database: {error}"))
    }
}

/// Checks a user or service-account name.
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'@'))
        && name.bytes().next().is_some_and(|byte| byte.is_ascii_alphanumeric());
    if !valid {
        return Err(AdminError::Usage(format!(
            "{name:?} is not a valid name: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_', '-' or '@', starting \
             with a letter or digit"
        )));
    }
    if name == ANONYMOUS {
        return Err(AdminError::Usage(format!("{ANONYMOUS:?} is reserved for unauthenticated callers")));
    }
    Ok(())
}

/// Reads one line (the password) from `input`, without its line ending.
fn read_password(input: &mut dyn BufRead) -> Result<Zeroizing<String>, AdminError> {
    let mut line = Zeroizing::new(String::new());
    let limit = u64::try_from(tufa_auth::password::MAX_PASSWORD_LEN + 2).unwrap_or(u64::MAX);
    std::io::Read::take(input, limit)
        .read_line(&mut line)
        .map_err(|error| AdminError::Usage(format!("cannot read the password from standard input: {error}")))?;
    let password = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    if password.is_empty() {
        return Err(AdminError::Usage("the password on standard input is empty".into()));
    }
    if password.len() > tufa_auth::password::MAX_PASSWORD_LEN {
        return Err(AdminError::Usage(format!(
            "the password is longer than {} bytes",
            tufa_auth::password::MAX_PASSWORD_LEN
        )));
    }
    Ok(password)
}

fn hash(password: &str) -> Result<String, AdminError> {
    tufa_auth::password::hash_password(password).map_err(|error| AdminError::Failed(format!("hashing: {error}")))
}

/// Runs one admin command against the configured database, reading a password from `input` and
/// writing results to `out`.
pub async fn run(
    config: &Config,
    action: &AdminAction,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let store = tufa_store::open(&config.database_url).await.map_err(|error| {
        AdminError::Failed(format!("cannot open the database {}: {error}", config.redacted_database_url()))
    })?;
    let written = |result: std::io::Result<()>| result.map_err(|error| AdminError::Failed(format!("output: {error}")));
    match action {
        AdminAction::User(UserAction::Add { name, password_stdin, service }) => {
            check_name(name)?;
            let (kind, password_hash) = match (password_stdin, service) {
                (true, _) => (PrincipalKind::User, Some(hash(&read_password(input)?)?)),
                // Without a password the principal signs in with API tokens only: a service account.
                (false, _) => (PrincipalKind::Service, None),
            };
            let principal = Principal { name: name.clone(), kind, password_hash, created_at: Utc::now() };
            store
                .add_principal(
                    &principal,
                    &admin_record(kinds::PRINCIPAL_ADD, json!({"name": name, "kind": kind.as_str()})),
                )
                .await
                .map_err(|error| match error {
                    tufa_store::StoreError::Conflict(_) => AdminError::Failed(format!("{name:?} already exists")),
                    other => other.into(),
                })?;
            tracing::info!(principal = %name, kind = kind.as_str(), "admin: added a principal");
            let note = match kind {
                PrincipalKind::User => "",
                PrincipalKind::Service => " (no password: it signs in with API tokens, see `admin token create`)",
            };
            written(writeln!(out, "added {} {name}{note}", kind.as_str()))
        }
        AdminAction::User(UserAction::Password { name, .. }) => {
            let principal =
                store.principal(name).await?.ok_or_else(|| AdminError::Failed(format!("there is no user {name:?}")))?;
            if principal.kind == PrincipalKind::Service {
                return Err(AdminError::Usage(format!(
                    "{name:?} is a service account, which signs in with API tokens only"
                )));
            }
            let password_hash = hash(&read_password(input)?)?;
            if !store
                .set_password_hash(
                    name,
                    Some(&password_hash),
                    &admin_record(kinds::PRINCIPAL_PASSWORD, json!({"name": name})),
                )
                .await?
            {
                return Err(AdminError::Failed(format!("there is no user {name:?}")));
            }
            tracing::info!(principal = %name, "admin: changed a password");
            written(writeln!(out, "changed the password of {name}"))
        }
        AdminAction::User(UserAction::Remove { name }) => {
            if !store.remove_principal(name, &admin_record(kinds::PRINCIPAL_REMOVE, json!({"name": name}))).await? {
                return Err(AdminError::Failed(format!("there is no user or service account {name:?}")));
            }
            tracing::info!(principal = %name, "admin: removed a principal");
            written(writeln!(out, "removed {name} with its tokens and role bindings"))
        }
        AdminAction::Token(TokenAction::Create { name, expires }) => {
            let lifetime = expires
                .as_deref()
                .map(|text| {
                    tufa_auth::duration::parse_duration(text)
                        .map_err(|error| AdminError::Usage(format!("--expires {text:?}: {error}")))
                })
                .transpose()?;
            if store.principal(name).await?.is_none() {
                return Err(AdminError::Failed(format!(
                    "there is no user or service account {name:?}; add it with `tufa-server admin user add`"
                )));
            }
            let now = Utc::now();
            let expires_at = match lifetime {
                Some(lifetime) => Some(
                    chrono::Duration::from_std(lifetime)
                        .ok()
                        .and_then(|lifetime| now.checked_add_signed(lifetime))
                        .ok_or_else(|| AdminError::Usage("--expires is too long".into()))?,
                ),
                None => None,
            };
            let (id, text, secret_hash) = tufa_auth::ApiTokenSecret::generate()
                .map_err(|error| AdminError::Failed(format!("cannot make a token: {error}")))?;
            let token =
                ApiToken { id, principal: name.clone(), secret_hash, created_at: now, expires_at, revoked_at: None };
            store
                .insert_api_token(
                    &token,
                    &admin_record(
                        kinds::TOKEN_CREATE,
                        json!({"id": token.id, "principal": name, "expires": expires_at.map(|at| at.to_rfc3339())}),
                    ),
                )
                .await?;
            tracing::info!(principal = %name, id = %token.id, "admin: created an API token");
            let until =
                expires_at.map_or_else(|| "never expires".to_owned(), |at| format!("expires {}", at.to_rfc3339()));
            written(writeln!(out, "created token {} for {name} ({until}); it is shown only once:", token.id))?;
            written(writeln!(out, "{}", text.as_str()))
        }
        AdminAction::Token(TokenAction::Revoke { id }) => {
            if !store.revoke_api_token(id, Utc::now(), &admin_record(kinds::TOKEN_REVOKE, json!({"id": id}))).await? {
                return Err(AdminError::Failed(format!("there is no unrevoked token {id:?}")));
            }
            tracing::info!(id = %id, "admin: revoked an API token");
            written(writeln!(out, "revoked token {id}"))
        }
        AdminAction::Grant { principal, role, pattern } => {
            let (role, pattern) = binding(store.as_ref(), principal, role, pattern).await?;
            if principal == ANONYMOUS && role != Role::Reader {
                return Err(AdminError::Usage(format!(
                    "{ANONYMOUS} may only be granted reader: unauthenticated callers must never publish or delete"
                )));
            }
            let added = store
                .add_binding(
                    principal,
                    role.as_str(),
                    pattern.as_str(),
                    &admin_record(
                        kinds::ROLE_GRANT,
                        json!({"principal": principal, "role": role.as_str(), "pattern": pattern.as_str()}),
                    ),
                )
                .await?;
            tracing::info!(principal = %principal, role = role.as_str(), pattern = %pattern.as_str(), "admin: granted a role");
            let note = if added { "granted" } else { "already granted" };
            written(writeln!(out, "{note}: {principal} {} {}", role.as_str(), pattern.as_str()))
        }
        AdminAction::Revoke { principal, role, pattern } => {
            let role = role.parse::<Role>().map_err(|error| AdminError::Usage(error.to_string()))?;
            if !store
                .remove_binding(
                    principal,
                    role.as_str(),
                    pattern,
                    &admin_record(
                        kinds::ROLE_REVOKE,
                        json!({"principal": principal, "role": role.as_str(), "pattern": pattern}),
                    ),
                )
                .await?
            {
                return Err(AdminError::Failed(format!("{principal} has no role {} on {pattern:?}", role.as_str())));
            }
            tracing::info!(principal = %principal, role = role.as_str(), pattern = %pattern, "admin: revoked a role");
            written(writeln!(out, "revoked: {principal} {} {pattern}", role.as_str()))
        }
        AdminAction::Tombstone(TombstoneAction::Clear { gun }) => {
            if !store.clear_tombstone(gun, &admin_record(kinds::TOMBSTONE_CLEAR, json!({})).gun_of(gun)).await? {
                return Err(AdminError::Failed(format!("{gun:?} has no tombstone")));
            }
            tracing::warn!(gun = %gun, "admin: cleared a tombstone; anyone with push access may re-create the repository");
            written(writeln!(out, "cleared the tombstone of {gun}"))
        }
        AdminAction::TokenSigner(TokenSignerAction::Bundle) => {
            let bundle = crate::auth::keys::bundle(store.as_ref())
                .await
                .map_err(|error| AdminError::Failed(error.to_string()))?
                .ok_or_else(|| {
                    AdminError::Failed("there is no token CA yet: start the server once with --auth builtin".into())
                })?;
            written(write!(out, "{bundle}"))
        }
        AdminAction::TokenSigner(TokenSignerAction::Rotate) => {
            let kek = crate::signing::load_checked_kek(store.as_ref(), config)
                .await
                .map_err(|error| AdminError::Failed(error.to_string()))?;
            let id = crate::auth::keys::rotate(store.as_ref(), &kek)
                .await
                .map_err(|error| AdminError::Failed(error.to_string()))?;
            written(writeln!(out, "the token-signing key is now {id}; servers switch within seconds"))
        }
        AdminAction::List => list(store, out).await,
    }
}

/// Checks a grant's parts; the principal must exist unless it is `anonymous`.
async fn binding(store: &dyn Store, principal: &str, role: &str, pattern: &str) -> Result<(Role, Pattern), AdminError> {
    let role = role.parse::<Role>().map_err(|error| AdminError::Usage(error.to_string()))?;
    let pattern = Pattern::parse(pattern).map_err(|error| AdminError::Usage(error.to_string()))?;
    if principal != ANONYMOUS && store.principal(principal).await?.is_none() {
        return Err(AdminError::Failed(format!(
            "there is no user or service account {principal:?}; add it with `tufa-server admin user add` (or grant \
             to {ANONYMOUS})"
        )));
    }
    Ok((role, pattern))
}

async fn list(store: Arc<dyn Store>, out: &mut dyn Write) -> Result<(), AdminError> {
    let principals = store.principals().await?;
    let tokens = store.api_tokens().await?;
    let bindings = store.bindings().await?;
    let tombstones = store.tombstones().await?;
    let mut text = String::new();
    let time = |at: chrono::DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    text.push_str("PRINCIPALS (name kind created)\n");
    for principal in &principals {
        text.push_str(&format!("  {} {} {}\n", principal.name, principal.kind.as_str(), time(principal.created_at)));
    }
    text.push_str("TOKENS (id owner created expires state)\n");
    let now = Utc::now();
    for token in &tokens {
        let expires = token.expires_at.map_or_else(|| "never".to_owned(), time);
        let state = match (token.revoked_at, token.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(expires)) if expires <= now => "expired",
            _ => "active",
        };
        text.push_str(&format!(
            "  {} {} {} {} {}\n",
            token.id,
            token.principal,
            time(token.created_at),
            expires,
            state
        ));
    }
    text.push_str("BINDINGS (principal role pattern)\n");
    for binding in &bindings {
        text.push_str(&format!("  {} {} {}\n", binding.principal, binding.role, binding.pattern));
    }
    text.push_str("TOMBSTONES (gun deleted)\n");
    for tombstone in &tombstones {
        text.push_str(&format!("  {} {}\n", tombstone.gun, time(tombstone.deleted_at)));
    }
    out.write_all(text.as_bytes()).map_err(|error| AdminError::Failed(format!("output: {error}")))
}
