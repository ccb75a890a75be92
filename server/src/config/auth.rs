//! The `[auth]` settings: which authentication mode the server runs in (`none`, `token` or
//! `builtin`) and each mode's settings, layered like every other setting and checked together with
//! the listening address (`none` is only allowed on loopback unless explicitly made insecure).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tufa_common::layer::{ConfigError, Environment, FileOrigin, Setting, Sourced, first};

use super::cli::Cli;

pub(super) const AUTH: Setting = Setting::new("--auth", "TUFA_AUTH", "auth.type");
pub(super) const INSECURE_NO_AUTH: Setting =
    Setting::new("--insecure-no-auth", "TUFA_INSECURE_NO_AUTH", "auth.insecure_no_auth");
pub(super) const TOKEN_REALM: Setting = Setting::new("--auth-token-realm", "TUFA_AUTH_TOKEN_REALM", "auth.token.realm");
pub(super) const TOKEN_SERVICE: Setting =
    Setting::new("--auth-token-service", "TUFA_AUTH_TOKEN_SERVICE", "auth.token.service");
pub(super) const TOKEN_ISSUER: Setting =
    Setting::new("--auth-token-issuer", "TUFA_AUTH_TOKEN_ISSUER", "auth.token.issuer");
pub(super) const TOKEN_ROOTCERTBUNDLE: Setting =
    Setting::new("--auth-token-rootcertbundle", "TUFA_AUTH_TOKEN_ROOTCERTBUNDLE", "auth.token.rootcertbundle");
pub(super) const PUBLIC_URL: Setting = Setting::new("--public-url", "TUFA_PUBLIC_URL", "public_url");
pub(super) const BUILTIN_SERVICE: Setting =
    Setting::new("--auth-builtin-service", "TUFA_AUTH_BUILTIN_SERVICE", "auth.builtin.service");
pub(super) const BUILTIN_ISSUER: Setting =
    Setting::new("--auth-builtin-issuer", "TUFA_AUTH_BUILTIN_ISSUER", "auth.builtin.issuer");
pub(super) const BUILTIN_TOKEN_TTL: Setting =
    Setting::new("--auth-builtin-token-ttl", "TUFA_AUTH_BUILTIN_TOKEN_TTL", "auth.builtin.token_ttl");
pub(super) const BUILTIN_REGISTRIES: Setting =
    Setting::new("--auth-builtin-registry", "TUFA_AUTH_BUILTIN_REGISTRIES", "auth.builtin.registries");

/// Every variable of this module, for the `--help` completeness test.
#[cfg(test)]
pub(super) const ENV_VARIABLES: [&str; 11] = [
    AUTH.env,
    INSECURE_NO_AUTH.env,
    TOKEN_REALM.env,
    TOKEN_SERVICE.env,
    TOKEN_ISSUER.env,
    TOKEN_ROOTCERTBUNDLE.env,
    PUBLIC_URL.env,
    BUILTIN_SERVICE.env,
    BUILTIN_ISSUER.env,
    BUILTIN_TOKEN_TTL.env,
    BUILTIN_REGISTRIES.env,
];

/// The default service name of the trust server in builtin mode (the `aud` of its tokens).
pub const DEFAULT_BUILTIN_SERVICE: &str = "tufa";
/// The default issuer name of the builtin token service (the `iss` of its tokens).
pub const DEFAULT_BUILTIN_ISSUER: &str = "tufa";
/// How long builtin tokens live unless configured: removing a user takes effect within this.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// The shortest accepted token lifetime.
pub(super) const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The longest accepted token lifetime.
pub(super) const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Nobody is asked for credentials; every caller may do everything.
    #[default]
    None,
    /// Registry bearer tokens from an external token service, checked as notary-server checks them.
    Token,
    /// Tufa is its own token service: users, API tokens and roles kept in the database.
    Builtin,
}

impl AuthMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token => "token",
            Self::Builtin => "builtin",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "none" => Ok(Self::None),
            "token" => Ok(Self::Token),
            "builtin" => Ok(Self::Builtin),
            other => Err(format!("unknown mode {other:?}; use none, token or builtin")),
        }
    }
}

/// notary-server's `auth.options` for the token mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuthConfig {
    /// Where clients get tokens (the challenge's `realm`).
    pub realm: String,
    /// This server's service name: every token's `aud` must hold it.
    pub service: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// PEM bundle of the certificates that sign tokens or root their `x5c` chains.
    pub root_cert_bundle: PathBuf,
}

/// A Docker registry that takes tokens from the builtin token service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryService {
    /// The registry's service name (its `auth.token.service`): the `service` of token requests.
    pub service: String,
    /// The registry's host as it appears in GUNs (`registry.example.com` or `host:5000`); it is
    /// prefixed to the registry's repository names before they are matched against role patterns.
    pub host: String,
}

/// Settings of the builtin token service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinAuthConfig {
    /// The trust server's own service name.
    pub service: String,
    /// The `iss` of issued tokens.
    pub issuer: String,
    /// The URL clients reach this server at, without a trailing slash.
    pub public_url: String,
    /// `<public_url>/auth/token`.
    pub realm: String,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Registries served by the token service.
    pub registries: Vec<RegistryService>,
}

impl BuiltinAuthConfig {
    /// The registry whose service name is `service`.
    pub fn registry(&self, service: &str) -> Option<&RegistryService> {
        self.registries.iter().find(|registry| registry.service == service)
    }
}

/// The authentication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    /// No authentication. `insecure` is set when the operator allowed it on a non-loopback address.
    None {
        /// Whether `--insecure-no-auth` was given.
        insecure: bool,
    },
    /// External registry tokens.
    Token(TokenAuthConfig),
    /// The builtin token service.
    Builtin(BuiltinAuthConfig),
}

impl AuthConfig {
    /// The mode.
    pub fn mode(&self) -> AuthMode {
        match self {
            Self::None { .. } => AuthMode::None,
            Self::Token(_) => AuthMode::Token,
            Self::Builtin(_) => AuthMode::Builtin,
        }
    }
}

/// The flags of this module.
#[derive(clap::Args, Default)]
pub(super) struct AuthFlags {
    /// Authentication: none (only on a loopback address unless --insecure-no-auth), token
    /// (registry bearer tokens from an existing token service, as notary-server's token auth), or
    /// builtin (Tufa is its own token service, with users, API tokens and roles) [default: none].
    #[arg(long = "auth", value_name = "MODE", env = "TUFA_AUTH", hide_env_values = true, global = true)]
    pub(super) auth: Option<AuthMode>,

    /// Allow --auth none on an address other than loopback: anyone who reaches the port may then
    /// delete and re-create every repository. Logged as a warning at start-up and every hour.
    #[arg(long = "insecure-no-auth", env = "TUFA_INSECURE_NO_AUTH", hide_env_values = true, global = true)]
    pub(super) insecure_no_auth: bool,

    /// Token mode: where clients get tokens (the challenge's realm), e.g. https://auth.example.com/token.
    #[arg(
        long = "auth-token-realm",
        value_name = "URL",
        env = "TUFA_AUTH_TOKEN_REALM",
        hide_env_values = true,
        global = true
    )]
    pub(super) token_realm: Option<String>,

    /// Token mode: this server's service name; every token's audience must hold it.
    #[arg(
        long = "auth-token-service",
        value_name = "NAME",
        env = "TUFA_AUTH_TOKEN_SERVICE",
        hide_env_values = true,
        global = true
    )]
    pub(super) token_service: Option<String>,

    /// Token mode: the issuer every token must name.
    #[arg(
        long = "auth-token-issuer",
        value_name = "NAME",
        env = "TUFA_AUTH_TOKEN_ISSUER",
        hide_env_values = true,
        global = true
    )]
    pub(super) token_issuer: Option<String>,

    /// Token mode: PEM bundle of the certificates that sign tokens or root their x5c chains.
    #[arg(
        long = "auth-token-rootcertbundle",
        value_name = "FILE",
        env = "TUFA_AUTH_TOKEN_ROOTCERTBUNDLE",
        hide_env_values = true,
        global = true
    )]
    pub(super) token_rootcertbundle: Option<PathBuf>,

    /// The URL clients reach this server at (behind a proxy); the builtin realm is <URL>/auth/token
    /// [default: https://<listen address>].
    #[arg(long = "public-url", value_name = "URL", env = "TUFA_PUBLIC_URL", hide_env_values = true, global = true)]
    pub(super) public_url: Option<String>,

    /// Builtin mode: this trust server's service name [default: tufa].
    #[arg(
        long = "auth-builtin-service",
        value_name = "NAME",
        env = "TUFA_AUTH_BUILTIN_SERVICE",
        hide_env_values = true,
        global = true
    )]
    pub(super) builtin_service: Option<String>,

    /// Builtin mode: the issuer named in issued tokens [default: tufa].
    #[arg(
        long = "auth-builtin-issuer",
        value_name = "NAME",
        env = "TUFA_AUTH_BUILTIN_ISSUER",
        hide_env_values = true,
        global = true
    )]
    pub(super) builtin_issuer: Option<String>,

    /// Builtin mode: lifetime of issued tokens, e.g. 5m (1m to 1h; Docker clients treat shorter as 1m) [default: 5m].
    #[arg(
        long = "auth-builtin-token-ttl",
        value_name = "DURATION",
        env = "TUFA_AUTH_BUILTIN_TOKEN_TTL",
        hide_env_values = true,
        global = true
    )]
    pub(super) builtin_token_ttl: Option<String>,

    /// Builtin mode: a Docker registry served by the token service, as SERVICE=HOST (HOST as in
    /// image names, prefixed to the registry's repository names for role patterns). Repeatable;
    /// the variable takes a comma-separated list.
    #[arg(
        long = "auth-builtin-registry",
        value_name = "SERVICE=HOST",
        env = "TUFA_AUTH_BUILTIN_REGISTRIES",
        hide_env_values = true,
        global = true,
        value_delimiter = ','
    )]
    pub(super) builtin_registries: Vec<String>,
}

/// `[auth]` as written in the file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    #[serde(rename = "type")]
    mode: Option<AuthMode>,
    insecure_no_auth: Option<bool>,
    token: Option<FileToken>,
    builtin: Option<FileBuiltin>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    realm: Option<String>,
    service: Option<String>,
    issuer: Option<String>,
    rootcertbundle: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBuiltin {
    service: Option<String>,
    issuer: Option<String>,
    token_ttl: Option<String>,
    registries: Option<Vec<FileRegistry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRegistry {
    service: String,
    host: String,
}

/// The auth settings one source provides.
#[derive(Default)]
pub(super) struct AuthLayer {
    mode: Option<Sourced<AuthMode>>,
    insecure_no_auth: Option<Sourced<bool>>,
    token_realm: Option<Sourced<String>>,
    token_service: Option<Sourced<String>>,
    token_issuer: Option<Sourced<String>>,
    token_rootcertbundle: Option<Sourced<PathBuf>>,
    public_url: Option<Sourced<String>>,
    builtin_service: Option<Sourced<String>>,
    builtin_issuer: Option<Sourced<String>>,
    builtin_token_ttl: Option<Sourced<String>>,
    builtin_registries: Option<Sourced<Vec<(String, String)>>>,
}

fn split_registry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((service, host)) if !service.trim().is_empty() && !host.trim().is_empty() => {
            Ok((service.trim().to_owned(), host.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not SERVICE=HOST")),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is not a boolean; use true or false")),
    }
}

pub(super) fn flag_layer(flags: &mut Cli) -> Result<AuthLayer, ConfigError> {
    let flags = std::mem::take(&mut flags.auth);
    let registries = if flags.builtin_registries.is_empty() {
        None
    } else {
        let pairs = flags
            .builtin_registries
            .iter()
            .map(|text| split_registry(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::Invalid { setting: BUILTIN_REGISTRIES.flag.to_owned(), reason })?;
        Some(pairs)
    };
    Ok(AuthLayer {
        mode: AUTH.from_flag(flags.auth),
        insecure_no_auth: INSECURE_NO_AUTH.from_flag(flags.insecure_no_auth.then_some(true)),
        token_realm: TOKEN_REALM.from_flag(flags.token_realm),
        token_service: TOKEN_SERVICE.from_flag(flags.token_service),
        token_issuer: TOKEN_ISSUER.from_flag(flags.token_issuer),
        token_rootcertbundle: TOKEN_ROOTCERTBUNDLE.from_flag(flags.token_rootcertbundle),
        public_url: PUBLIC_URL.from_flag(flags.public_url),
        builtin_service: BUILTIN_SERVICE.from_flag(flags.builtin_service),
        builtin_issuer: BUILTIN_ISSUER.from_flag(flags.builtin_issuer),
        builtin_token_ttl: BUILTIN_TOKEN_TTL.from_flag(flags.builtin_token_ttl),
        builtin_registries: BUILTIN_REGISTRIES.from_flag(registries),
    })
}

pub(super) fn env_layer(env: &Environment<'_>) -> Result<AuthLayer, ConfigError> {
    let registries = env.parsed(BUILTIN_REGISTRIES, |text| {
        text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(split_registry).collect()
    })?;
    Ok(AuthLayer {
        mode: env.parsed(AUTH, AuthMode::parse)?,
        insecure_no_auth: env.parsed(INSECURE_NO_AUTH, parse_bool)?,
        token_realm: env.text(TOKEN_REALM)?,
        token_service: env.text(TOKEN_SERVICE)?,
        token_issuer: env.text(TOKEN_ISSUER)?,
        token_rootcertbundle: env.path(TOKEN_ROOTCERTBUNDLE)?,
        public_url: env.text(PUBLIC_URL)?,
        builtin_service: env.text(BUILTIN_SERVICE)?,
        builtin_issuer: env.text(BUILTIN_ISSUER)?,
        builtin_token_ttl: env.text(BUILTIN_TOKEN_TTL)?,
        builtin_registries: registries,
    })
}

pub(super) fn file_layer(auth: Option<FileAuth>, public_url: Option<String>, origin: &FileOrigin) -> AuthLayer {
    let auth = auth.unwrap_or_default();
    let token = auth.token.unwrap_or_default();
    let builtin = auth.builtin.unwrap_or_default();
    AuthLayer {
        mode: origin.value(AUTH, auth.mode),
        insecure_no_auth: origin.value(INSECURE_NO_AUTH, auth.insecure_no_auth),
        token_realm: origin.value(TOKEN_REALM, token.realm),
        token_service: origin.value(TOKEN_SERVICE, token.service),
        token_issuer: origin.value(TOKEN_ISSUER, token.issuer),
        token_rootcertbundle: origin.path_value(TOKEN_ROOTCERTBUNDLE, token.rootcertbundle),
        public_url: origin.value(PUBLIC_URL, public_url),
        builtin_service: origin.value(BUILTIN_SERVICE, builtin.service),
        builtin_issuer: origin.value(BUILTIN_ISSUER, builtin.issuer),
        builtin_token_ttl: origin.value(BUILTIN_TOKEN_TTL, builtin.token_ttl),
        builtin_registries: origin.value(
            BUILTIN_REGISTRIES,
            builtin
                .registries
                .map(|registries| registries.into_iter().map(|entry| (entry.service, entry.host)).collect()),
        ),
    }
}

/// A service or issuer name: printable ASCII without spaces or quotes (it is quoted in challenges).
fn check_name(name: &Sourced<String>) -> Result<String, ConfigError> {
    let text = name.value.trim();
    if text.is_empty() || text.len() > 255 {
        return Err(name.invalid("must be 1 to 255 characters"));
    }
    if !text.bytes().all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\') {
        return Err(
            name.invalid(format!("{text:?} may hold only printable ASCII without spaces, quotes or backslashes"))
        );
    }
    Ok(text.to_owned())
}

/// An `http://` or `https://` URL with a host and no query, fragment or quotes; returned without a
/// trailing slash.
fn check_url(url: &Sourced<String>) -> Result<String, ConfigError> {
    let text = url.value.trim().trim_end_matches('/');
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err(url.invalid(format!("{text:?} must start with https:// or http://")));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || text.contains(['?', '#', '"', '\\', ' ']) || !text.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return Err(url.invalid(format!("{text:?} is not a URL with a host and without a query or fragment")));
    }
    Ok(text.to_owned())
}

/// A registry host as it appears in image names: a DNS name or IP address, optionally with a port.
fn check_registry_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') || name.starts_with('[') => (name, Some(port)),
        _ => (host, None),
    };
    if port.is_some_and(|port| port.parse::<u16>().is_err()) {
        return Err(format!("{host:?} has an invalid port"));
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || rustls_pki_types::DnsName::try_from(bare).is_ok() {
        Ok(())
    } else {
        Err(format!("{host:?} is not HOST or HOST:PORT"))
    }
}

/// A duration such as `5m`, within the token lifetime bounds.
fn check_ttl(ttl: &Sourced<String>) -> Result<Duration, ConfigError> {
    let value = tufa_auth::duration::parse_duration(&ttl.value).map_err(|error| ttl.invalid(error.to_string()))?;
    if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&value) {
        return Err(ttl.invalid(format!(
            "{:?} is outside {}s..={}s",
            ttl.value,
            MIN_TOKEN_TTL.as_secs(),
            MAX_TOKEN_TTL.as_secs()
        )));
    }
    Ok(value)
}

/// Merges the three layers and checks the result against the listening address.
pub(super) fn merge(
    flags: AuthLayer,
    env: AuthLayer,
    file: AuthLayer,
    listen: SocketAddr,
) -> Result<AuthConfig, ConfigError> {
    let mode = first([flags.mode, env.mode, file.mode]);
    let insecure = first([flags.insecure_no_auth, env.insecure_no_auth, file.insecure_no_auth]);
    let token = [
        first([flags.token_realm, env.token_realm, file.token_realm]),
        first([flags.token_service, env.token_service, file.token_service]),
        first([flags.token_issuer, env.token_issuer, file.token_issuer]),
    ];
    let bundle = first([flags.token_rootcertbundle, env.token_rootcertbundle, file.token_rootcertbundle]);
    let public_url = first([flags.public_url, env.public_url, file.public_url]);
    let builtin_names = [
        first([flags.builtin_service, env.builtin_service, file.builtin_service]),
        first([flags.builtin_issuer, env.builtin_issuer, file.builtin_issuer]),
        first([flags.builtin_token_ttl, env.builtin_token_ttl, file.builtin_token_ttl]),
    ];
    let registries = first([flags.builtin_registries, env.builtin_registries, file.builtin_registries]);
    let mode_value = mode.as_ref().map(|mode| mode.value).unwrap_or_default();
    let mode_origin = mode.as_ref().map_or_else(|| "the default --auth none".to_owned(), |mode| mode.origin.describe());

    let misplaced = |setting: Option<String>, needs: &str| match setting {
        Some(origin) => Err(ConfigError::Conflict(format!(
            "{origin} only applies to --auth {needs}, but {mode_origin} is {}",
            mode_value.as_str()
        ))),
        None => Ok(()),
    };
    if mode_value != AuthMode::Token {
        let set = token.iter().flatten().map(|value| value.origin.describe()).next();
        misplaced(set.or_else(|| bundle.as_ref().map(|bundle| bundle.origin.describe())), "token")?;
    }
    if mode_value != AuthMode::Builtin {
        let set = builtin_names.iter().flatten().map(|value| value.origin.describe()).next();
        misplaced(set.or_else(|| registries.as_ref().map(|value| value.origin.describe())), "builtin")?;
    }
    if mode_value != AuthMode::None {
        misplaced(insecure.as_ref().filter(|insecure| insecure.value).map(|value| value.origin.describe()), "none")?;
    }

    match mode_value {
        AuthMode::None => {
            let insecure = insecure.is_some_and(|insecure| insecure.value);
            if !listen.ip().is_loopback() && !insecure {
                return Err(ConfigError::Conflict(format!(
                    "{listen} is not a loopback address and no authentication is configured ({mode_origin}): \
                     anyone who reaches the port could delete and re-create every repository. Choose --auth \
                     builtin or --auth token, or pass --insecure-no-auth to accept that"
                )));
            }
            Ok(AuthConfig::None { insecure })
        }
        AuthMode::Token => {
            let [realm, service, issuer] = token;
            let missing = |setting: Setting| {
                ConfigError::Conflict(format!(
                    "{mode_origin} is token, which needs {} (or {}, or `{}` in the config file)",
                    setting.flag, setting.env, setting.key
                ))
            };
            let realm = realm.ok_or_else(|| missing(TOKEN_REALM))?;
            let service = service.ok_or_else(|| missing(TOKEN_SERVICE))?;
            let issuer = issuer.ok_or_else(|| missing(TOKEN_ISSUER))?;
            let bundle = bundle.ok_or_else(|| missing(TOKEN_ROOTCERTBUNDLE))?;
            Ok(AuthConfig::Token(TokenAuthConfig {
                realm: check_url(&realm)?,
                service: check_name(&service)?,
                issuer: check_name(&issuer)?,
                root_cert_bundle: bundle.value,
            }))
        }
        AuthMode::Builtin => {
            let [service, issuer, ttl] = builtin_names;
            let service =
                service.as_ref().map(check_name).transpose()?.unwrap_or_else(|| DEFAULT_BUILTIN_SERVICE.into());
            let issuer = issuer.as_ref().map(check_name).transpose()?.unwrap_or_else(|| DEFAULT_BUILTIN_ISSUER.into());
            let token_ttl = ttl.as_ref().map(check_ttl).transpose()?.unwrap_or(DEFAULT_TOKEN_TTL);
            let public_url = match &public_url {
                Some(url) => check_url(url)?,
                None if listen.ip().is_unspecified() => {
                    return Err(ConfigError::Conflict(format!(
                        "{listen} is not an address clients can reach, so the token realm cannot default to it: \
                         set {} (or {}, or `{}` in the config file) to the URL clients use, e.g. \
                         https://tufa.example.com",
                        PUBLIC_URL.flag, PUBLIC_URL.env, PUBLIC_URL.key
                    )));
                }
                None => format!("https://{listen}"),
            };
            let mut checked: Vec<RegistryService> = Vec::new();
            if let Some(registries) = &registries {
                for (registry_service, host) in &registries.value {
                    let named = Sourced { value: registry_service.clone(), origin: registries.origin.clone() };
                    let registry_service = check_name(&named)?;
                    check_registry_host(host).map_err(|reason| registries.invalid(reason))?;
                    if registry_service == service || checked.iter().any(|known| known.service == registry_service) {
                        return Err(registries.invalid(format!(
                            "the service name {registry_service:?} is used twice (the trust server's own service \
                             is {service:?}); each consumer needs its own"
                        )));
                    }
                    checked.push(RegistryService { service: registry_service, host: host.clone() });
                }
            }
            Ok(AuthConfig::Builtin(BuiltinAuthConfig {
                realm: format!("{public_url}/auth/token"),
                public_url,
                service,
                issuer,
                token_ttl,
                registries: checked,
            }))
        }
    }
}
