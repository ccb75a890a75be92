//! The trust policy file: the Mirantis Container Runtime `content-trust` block as-is, Tufa's additions (trust server,
//! cache, allowed registries, per-pattern rules, exemptions, run options), its validation with errors that name the
//! line, and [`Policy::decide`], the one place that says which rules apply to an image.
//!
//! Facts about the `content-trust` block, from Mirantis's "Runtime Enforcement with Docker Content Trust" page
//! (docs.mirantis.com/mcr/…/security/content-trust/runtime-enforcement.html, the same text as Docker Enterprise's
//! `engine/security/trust/content_trust.md`) and the engine's `daemon/config` content-trust types:
//! - `mode` is `disabled` (the default: nothing is verified and the rest of the block is ignored), `permissive`
//!   (verified, failures only logged) or `enforced` (an image that cannot be verified is not pulled or run).
//! - `trust-pinning.root-keys` maps a repository or a prefix ending in `*` (for example `mydtr/user1/*`, or `*`) to
//!   canonical root key IDs (the ID of the root key on the signer's machine, shared by every repository it
//!   initialised); "the most specific key IDs are chosen for a particular repo"; "root key lists cannot be empty".
//! - `trust-pinning.cert-ids` maps exact repositories ("wildcards are not supported") to the root key IDs that
//!   repository's root.json lists (per repository, what `docker trust inspect` shows); as it is more granular it
//!   "would take priority if a conflict occurs over a root ID".
//! - `trust-pinning.official-library-images` trusts `docker.io/library/*` with the root keys of Docker's official
//!   images, which are pinned in the engine; a user's own `docker.io/library/*` entry in `root-keys` takes precedence.
//! - `allow-expired-cached-trust-data` lets expired trust data from the cache be used (for hosts that are often
//!   offline); "trust data that is downloaded from a server still cannot be expired even if this is set to true".
//!
//! Two places where Tufa differs from the engine: the engine refuses a `content-trust` block without any pin at
//! start-up, while the documentation shows `{"content-trust": {"mode": "enforced"}}` alone; Tufa accepts it and
//! then trusts no repository (every decision has [`RootPin::None`]). Key IDs must be 64 hexadecimal digits here
//! (the engine accepts any string and then fails to match).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::image::ImageRef;
use crate::locate::{self, Step, key};
use crate::pattern::{Pattern, most_specific};
use crate::roles::{RoleRequirement, check_role_name};
use crate::run_options::{RawRunOptions, RunOptions};

/// The root key IDs of Docker's official library images (`docker.io/library/*`), as the Docker Enterprise /
/// Mirantis engine pins them for `official-library-images` (`officialImagesRootKeys` in the engine's
/// `daemon/trust/trust.go`).
pub const OFFICIAL_LIBRARY_ROOT_KEYS: [&str; 18] = [
    "487731f3a9ef2a094d456b37ea7880def4ced3de6f7876ed6258527ac35bcca2",
    "c6faa6d9c53edc26a372c20875f24407584674b834c719aca8c2a781a3fab49d",
    "35ecc5282ec9e9571910bd6fddd7e3b676ef3a480011b4d6e2e7a9ba9d1af1c7",
    "8530a0b0ff0d2c4db50c990faa9ba15d3593292f66312df1cb510a769388ccfa",
    "178c56227f727505bc3181c7fd33af583a6bd5dabdec6c9b3b2faa104386168a",
    "5a740b368b3b71088472e55d17e3a9e7e4bc9ef338bbf3fff3b8475911d803f7",
    "b4147b452cbb17b56eeaca3600244082bb73b2a82f986c8d549eee92baa360a1",
    "26488584f9b21efa90d15e8865c6fa22876e1b3bfc87ec79ba0d7e8aad720a03",
    "6e6beebc7346e7e7320166407b940f4283c8acb0c4940fac8c6f5c0b8dbcf3bb",
    "993134909608be52c5d833a9c6fd4626dc5b78502b4bf74bfc9bc62d290f18a0",
    "93a7bb6c0b1e5c74a141f6e4612e6f2cca1c5e29ce86fd70c61ab2b302ac5275",
    "ee3512f3b31a4a2ac723f31acf1850c1e4a0da124766a3e89c474af6b5c828eb",
    "2f1e6afeea89d56c92ed39ce661f6b29d93b20a1f1b082bc18ff0913b6bb73b5",
    "ac05a3f109ffedf8460a16f287747b04a3db877603a259a31b6ac55cd2b4ff50",
    "99185eb2ab3ccb10f8fa9f354c8c6e7bae8101c4a01dc4021e7a0446e17a50ae",
    "ee3aafa9fec9d3e458dcf56e025e5ebdc99183bd82cbe812d0d55853adc85ff1",
    "00981ccd5e43972e8885e6363a0318d9a02cab371311cd23ffd459c4731b9530",
    "c15164663f80d58bf3d8d5a0cd08b8086cba02065feb00421fc2a5436c563210",
];

/// The pattern `official-library-images` pins.
pub const OFFICIAL_LIBRARY_PATTERN: &str = "docker.io/library/*";

/// The largest policy file read, in bytes.
pub const MAX_POLICY_BYTES: u64 = 4 * 1024 * 1024;

/// A policy that cannot be used, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct PolicyError {
    /// The file, when the policy was loaded from one.
    pub file: Option<PathBuf>,
    /// The 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The 1-based column of the offending value, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl PolicyError {
    fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(&file.display().to_string());
            out.push_str(": ");
        }
        match (self.line, self.column) {
            (Some(line), Some(column)) => out.push_str(&format!("line {line}, column {column}: ")),
            (Some(line), None) => out.push_str(&format!("line {line}: ")),
            _ => {}
        }
        out.push_str(&self.message);
        out
    }

    fn plain(message: String) -> Self {
        Self { file: None, line: None, column: None, message }
    }
}

/// How strictly content trust applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing is verified.
    #[default]
    Disabled,
    /// Verified; failures are logged and audited but allowed.
    Permissive,
    /// Verified; failures are denied.
    Enforced,
}

impl fmt::Display for Mode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Disabled => "disabled",
            Self::Permissive => "permissive",
            Self::Enforced => "enforced",
        })
    }
}

/// Which root keys a repository's root.json must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPin {
    /// Nothing is pinned for this repository: as in MCR, its trust data cannot be verified, so it is untrusted.
    None,
    /// Canonical root key IDs (`trust-pinning.root-keys` or the official library keys).
    RootKeys(Vec<String>),
    /// Root key IDs as the repository's root.json lists them (`trust-pinning.cert-ids`).
    CertIds(Vec<String>),
}

/// Which setting chose a part of a [`Decision`], so a reason can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A built-in default.
    Default,
    /// `content-trust.mode`.
    ContentTrustMode,
    /// The `[[rules]]` entry with this pattern.
    Rule(Pattern),
    /// The `trust-pinning.root-keys` entry with this pattern.
    RootKeys(Pattern),
    /// The `trust-pinning.cert-ids` entry for this repository.
    CertIds(String),
    /// `trust-pinning.official-library-images`.
    OfficialLibraryImages,
    /// The `exemptions.images` entry with this pattern.
    Exemption(Pattern),
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => formatter.write_str("the default"),
            Self::ContentTrustMode => formatter.write_str("content-trust.mode"),
            Self::Rule(pattern) => write!(formatter, "rule {:?}", pattern.as_str()),
            Self::RootKeys(pattern) => write!(formatter, "trust-pinning.root-keys {:?}", pattern.as_str()),
            Self::CertIds(gun) => write!(formatter, "trust-pinning.cert-ids {gun:?}"),
            Self::OfficialLibraryImages => formatter.write_str("trust-pinning.official-library-images"),
            Self::Exemption(pattern) => write!(formatter, "exemptions.images {:?}", pattern.as_str()),
        }
    }
}

/// What the policy says about one image, with the setting behind each part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The repository (GUN) decided on.
    pub gun: String,
    /// How strictly trust applies.
    pub mode: Mode,
    /// Where `mode` came from.
    pub mode_origin: Origin,
    /// The root keys trust data must chain to.
    pub pin: RootPin,
    /// Where `pin` came from (`Origin::Default` for `RootPin::None`).
    pub pin_origin: Origin,
    /// The roles that must have signed the tag.
    pub required: RoleRequirement,
    /// Whether the image must be named by digest.
    pub require_digest: bool,
    /// The most specific `[[rules]]` entry matching the image, which set `required`, `require_digest` and (when it
    /// has one) `mode`.
    pub rule: Option<Pattern>,
    /// Whether the image's registry is allowed at all (true when no list is configured).
    pub registry_allowed: bool,
    /// The exemption pattern that frees this image from checks, if any.
    pub exempt: Option<Pattern>,
    /// Whether expired trust data from the cache (never from the server) may be used.
    pub allow_expired_cached: bool,
}

impl Decision {
    /// Checks what needs no trust data: the registry must be allowed and, when a rule requires it, `image` must
    /// name a digest. An exempt image passes. The caller applies `mode` to a failure (permissive: log and allow).
    ///
    /// # Errors
    /// A reason a person understands, naming the setting.
    pub fn precheck(&self, image: &ImageRef) -> Result<(), String> {
        if self.exempt.is_some() {
            return Ok(());
        }
        if !self.registry_allowed {
            return Err(format!("registry {} is not in registries.allowed", image.registry()));
        }
        if self.require_digest && image.digest().is_none() {
            let rule = self.rule.as_ref().map_or_else(String::new, |rule| format!("rule {:?} ", rule.as_str()));
            return Err(format!("{rule}requires {} to be named by digest (@sha256:…); {image} names none", self.gun));
        }
        Ok(())
    }

    /// Why trust data for this repository cannot be verified when nothing is pinned, or `None` when a pin applies.
    pub fn missing_pin_reason(&self) -> Option<String> {
        match self.pin {
            RootPin::None => Some(format!(
                "no root key is pinned for {}: no trust-pinning.cert-ids or trust-pinning.root-keys entry matches it",
                self.gun
            )),
            RootPin::RootKeys(_) | RootPin::CertIds(_) => None,
        }
    }
}

/// How to reach the trust server and prove who we are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustServer {
    /// The trust server for every registry without an override; `None` means the registry's own host
    /// (`https://<registry>`, and `https://notary.docker.io` for `docker.io`), as Docker does.
    pub url: Option<String>,
    /// A PEM file of CA certificates to trust for the server (resolved against the policy's directory).
    pub ca: Option<PathBuf>,
    /// The credentials to present.
    pub credentials: Credentials,
    /// Per-registry trust servers: registry (`host[:port]`) → URL.
    pub registries: BTreeMap<String, String>,
}

/// Credentials for the trust server; secrets stay in files the integrator reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// A user name and a file holding the password.
    Password {
        /// The user name.
        username: String,
        /// The file holding the password.
        password_file: PathBuf,
    },
    /// A file holding a tufa API token.
    Token {
        /// The file holding the token.
        token_file: PathBuf,
    },
}

/// The verifier's cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// How many repositories' trust data are kept.
    pub max_repositories: usize,
    /// How often a cached repository's timestamp is re-checked, in seconds.
    pub refresh_secs: u64,
    /// How old cached data may be and still be served when the server cannot be reached, in seconds (0: never).
    pub max_staleness_secs: u64,
    /// Where rollback-protection state (last seen versions and roots) is persisted.
    pub state_dir: Option<PathBuf>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { max_repositories: 1024, refresh_secs: 60, max_staleness_secs: 0, state_dir: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: Pattern,
    mode: Option<Mode>,
    require_digest: Option<bool>,
    required: Option<RoleRequirement>,
}

/// A validated trust policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    mode: Mode,
    root_keys: Vec<(Pattern, Vec<String>, Origin)>,
    cert_ids: BTreeMap<String, Vec<String>>,
    allow_expired_cached: bool,
    trust_server: TrustServer,
    cache: CacheSettings,
    allowed_registries: Option<BTreeSet<String>>,
    rules: Vec<Rule>,
    exempt_namespaces: BTreeSet<String>,
    exempt_images: Vec<Pattern>,
    run_options: RunOptions,
}

// ----- The file's shape. -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPolicy {
    content_trust: Option<RawContentTrust>,
    trust_server: Option<RawTrustServer>,
    cache: Option<RawCache>,
    registries: Option<RawRegistries>,
    #[serde(default)]
    rules: Vec<RawRule>,
    exemptions: Option<RawExemptions>,
    run_options: Option<RawRunOptions>,
}

/// The top-level keys of a Tufa policy; a JSON file with other keys is read as a whole daemon.json.
const POLICY_KEYS: [&str; 7] =
    ["content-trust", "trust-server", "cache", "registries", "rules", "exemptions", "run-options"];

#[derive(Debug, Deserialize)]
struct RawDaemonJson {
    #[serde(rename = "content-trust")]
    content_trust: Option<RawContentTrust>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawContentTrust {
    mode: Option<Mode>,
    trust_pinning: Option<RawTrustPinning>,
    allow_expired_cached_trust_data: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTrustPinning {
    #[serde(default, deserialize_with = "unique_keys")]
    root_keys: BTreeMap<String, Vec<String>>,
    #[serde(default, deserialize_with = "unique_keys")]
    cert_ids: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    official_library_images: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTrustServer {
    url: Option<String>,
    ca: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "unique_keys")]
    registries: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCache {
    max_repositories: Option<usize>,
    refresh_secs: Option<u64>,
    max_staleness_secs: Option<u64>,
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRegistries {
    allowed: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRule {
    pattern: String,
    mode: Option<Mode>,
    require_digest: Option<bool>,
    required_roles: Option<RawRoles>,
}

/// A map that refuses a key given twice (TOML refuses it while parsing; JSON readers keep the last one, which would
/// let a second entry silently replace a pin).
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Visitor<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a table")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("{name:?} is given twice")));
                }
                let value = map.next_value()?;
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visitor(std::marker::PhantomData))
}

/// `required-roles`: a list (all of them) or `{ roles = [...], min = k }`.
#[derive(Debug)]
enum RawRoles {
    AllOf(Vec<String>),
    AtLeast { roles: Vec<String>, min: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAtLeast {
    roles: Vec<String>,
    min: usize,
}

impl<'de> Deserialize<'de> for RawRoles {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawRoles;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list of roles (all required) or a table { roles = [...], min = N }")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawRoles, A::Error> {
                Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(RawRoles::AllOf)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawRoles, A::Error> {
                let raw = RawAtLeast::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRoles::AtLeast { roles: raw.roles, min: raw.min })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExemptions {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    images: Vec<String>,
}

/// A problem found after parsing: the path of the offending value and what is wrong.
pub(crate) struct Bad {
    pub(crate) path: locate::Path,
    pub(crate) message: String,
}

pub(crate) fn bad(path: &[Step], message: impl Into<String>) -> Bad {
    Bad { path: path.to_vec(), message: message.into() }
}

pub(crate) fn with(path: &[Step], step: Step) -> locate::Path {
    let mut out = path.to_vec();
    out.push(step);
    out
}

#[derive(Clone, Copy)]
enum Format {
    Toml,
    Json,
}

impl Policy {
    /// Parses a TOML policy. Relative paths in it stay relative (to the working directory); [`Policy::load`]
    /// resolves them against the file's directory.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the line of the offending value.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        Self::parse(text, Format::Toml, None)
    }

    /// Parses a JSON policy, or a whole daemon.json, from which only `content-trust` is read (a JSON object with
    /// keys other than a policy's is taken for a daemon.json).
    ///
    /// # Errors
    /// A [`PolicyError`] naming the line of the offending value.
    pub fn from_json_str(text: &str) -> Result<Self, PolicyError> {
        Self::parse(text, Format::Json, None)
    }

    /// Reads a policy file: `.toml` or `.json` by extension; relative paths in it are resolved against its
    /// directory.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the file and, for bad content, the line.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let in_file = |mut error: PolicyError| {
            error.file = Some(path.to_path_buf());
            error
        };
        let format = match path.extension().and_then(|extension| extension.to_str()) {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ => {
                return Err(in_file(PolicyError::plain("the policy file name must end in .toml or .json".to_owned())));
            }
        };
        let text = read_bounded(path).map_err(|message| in_file(PolicyError::plain(message)))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, format, Some(&base)).map_err(in_file)
    }

    fn parse(text: &str, format: Format, base: Option<&Path>) -> Result<Self, PolicyError> {
        let raw = match format {
            Format::Toml => toml::from_str::<RawPolicy>(text).map_err(|error| {
                let (line, column) = match error.span() {
                    Some(span) => {
                        let (line, column) = locate::line_column(text, span.start);
                        (Some(line), Some(column))
                    }
                    None => (None, None),
                };
                PolicyError { file: None, line, column, message: error.message().trim_end().to_owned() }
            })?,
            Format::Json => parse_json(text)?,
        };
        Self::validate(raw, base).map_err(|problem| {
            let offset = match format {
                Format::Toml => locate::toml_offset(text, &problem.path),
                Format::Json => locate::json_offset(text, &problem.path),
            };
            let (line, column) = match offset {
                Some(offset) => {
                    let (line, column) = locate::line_column(text, offset);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            PolicyError { file: None, line, column, message: problem.message }
        })
    }

    fn validate(raw: RawPolicy, base: Option<&Path>) -> Result<Self, Bad> {
        let resolve = |path: PathBuf| match base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        };
        let mut policy = Self::default();

        let content_trust_path = [key("content-trust")];
        if let Some(content_trust) = raw.content_trust {
            policy.mode = content_trust.mode.unwrap_or_default();
            policy.allow_expired_cached = content_trust.allow_expired_cached_trust_data.unwrap_or(false);
            let pinning = content_trust.trust_pinning.unwrap_or_default();
            let pinning_path = with(&content_trust_path, key("trust-pinning"));
            let root_keys_path = with(&pinning_path, key("root-keys"));
            for (text, ids) in pinning.root_keys {
                let entry_path = with(&root_keys_path, key(&text));
                let pattern = Pattern::parse(&text).map_err(|message| bad(&entry_path, message))?;
                let ids = key_ids(&entry_path, ids, "root key")?;
                policy.root_keys.push((pattern.clone(), ids, Origin::RootKeys(pattern)));
            }
            if pinning.official_library_images
                && !policy.root_keys.iter().any(|(pattern, _, _)| pattern.as_str() == OFFICIAL_LIBRARY_PATTERN)
            {
                let pattern =
                    Pattern::parse(OFFICIAL_LIBRARY_PATTERN).map_err(|message| bad(&pinning_path, message))?;
                let ids = OFFICIAL_LIBRARY_ROOT_KEYS.iter().map(|id| (*id).to_owned()).collect();
                policy.root_keys.push((pattern, ids, Origin::OfficialLibraryImages));
            }
            let cert_ids_path = with(&pinning_path, key("cert-ids"));
            for (gun, ids) in pinning.cert_ids {
                let entry_path = with(&cert_ids_path, key(&gun));
                let pattern = Pattern::parse(&gun).map_err(|message| bad(&entry_path, message))?;
                if pattern.is_prefix() {
                    return Err(bad(
                        &entry_path,
                        format!("cert-ids names repositories exactly; the wildcard in {gun:?} is not supported"),
                    ));
                }
                let ids = key_ids(&entry_path, ids, "certificate")?;
                policy.cert_ids.insert(gun, ids);
            }
        }

        if let Some(server) = raw.trust_server {
            let server_path = [key("trust-server")];
            if let Some(url) = &server.url {
                check_url(&with(&server_path, key("url")), url)?;
            }
            let credentials = match (server.username, server.password_file, server.token_file) {
                (None, None, None) => Credentials::None,
                (Some(username), Some(password_file), None) if !username.is_empty() => {
                    Credentials::Password { username, password_file: resolve(password_file) }
                }
                (None, None, Some(token_file)) => Credentials::Token { token_file: resolve(token_file) },
                (_, _, Some(_)) => {
                    return Err(bad(
                        &with(&server_path, key("token-file")),
                        "use either token-file or username with password-file, not both",
                    ));
                }
                (Some(_), None, None) => {
                    return Err(bad(&with(&server_path, key("username")), "username needs password-file"));
                }
                (None, Some(_), None) => {
                    return Err(bad(&with(&server_path, key("password-file")), "password-file needs username"));
                }
                (Some(_), Some(_), None) => {
                    return Err(bad(&with(&server_path, key("username")), "username cannot be empty"));
                }
            };
            let registries_path = with(&server_path, key("registries"));
            let mut registries = BTreeMap::new();
            for (registry, url) in server.registries {
                let entry_path = with(&registries_path, key(&registry));
                let registry = normalise_registry(&entry_path, &registry)?;
                check_url(&entry_path, &url)?;
                registries.insert(registry, url);
            }
            policy.trust_server = TrustServer { url: server.url, ca: server.ca.map(resolve), credentials, registries };
        }

        if let Some(cache) = raw.cache {
            let cache_path = [key("cache")];
            let defaults = CacheSettings::default();
            let max_repositories = cache.max_repositories.unwrap_or(defaults.max_repositories);
            if !(1..=1_000_000).contains(&max_repositories) {
                return Err(bad(
                    &with(&cache_path, key("max-repositories")),
                    "max-repositories must be between 1 and 1000000",
                ));
            }
            let refresh_secs = cache.refresh_secs.unwrap_or(defaults.refresh_secs);
            if !(1..=86_400).contains(&refresh_secs) {
                return Err(bad(&with(&cache_path, key("refresh-secs")), "refresh-secs must be between 1 and 86400"));
            }
            policy.cache = CacheSettings {
                max_repositories,
                refresh_secs,
                max_staleness_secs: cache.max_staleness_secs.unwrap_or(defaults.max_staleness_secs),
                state_dir: cache.state_dir.map(resolve),
            };
        }

        if let Some(registries) = raw.registries {
            let allowed_path = [key("registries"), key("allowed")];
            let mut allowed = BTreeSet::new();
            for (index, registry) in registries.allowed.iter().enumerate() {
                allowed.insert(normalise_registry(&with(&allowed_path, Step::Index(index)), registry)?);
            }
            policy.allowed_registries = Some(allowed);
        }

        let mut seen = BTreeSet::new();
        for (index, rule) in raw.rules.into_iter().enumerate() {
            let rule_path = [key("rules"), Step::Index(index)];
            let pattern_path = with(&rule_path, key("pattern"));
            let pattern = Pattern::parse(&rule.pattern).map_err(|message| bad(&pattern_path, message))?;
            if !seen.insert(rule.pattern.clone()) {
                return Err(bad(&pattern_path, format!("a rule for pattern {:?} is already defined", rule.pattern)));
            }
            let roles_path = with(&rule_path, key("required-roles"));
            let required = match rule.required_roles {
                None => None,
                Some(RawRoles::AllOf(roles)) => Some(RoleRequirement::AllOf(role_list(&roles_path, roles)?)),
                Some(RawRoles::AtLeast { roles, min }) => {
                    let roles_path = with(&roles_path, key("roles"));
                    let roles = role_list(&roles_path, roles)?;
                    if min == 0 || min > roles.len() {
                        return Err(bad(
                            &with(&with(&rule_path, key("required-roles")), key("min")),
                            format!("min must be between 1 and the number of roles ({})", roles.len()),
                        ));
                    }
                    Some(RoleRequirement::AtLeast { roles, min })
                }
            };
            policy.rules.push(Rule { pattern, mode: rule.mode, require_digest: rule.require_digest, required });
        }

        if let Some(exemptions) = raw.exemptions {
            for (index, namespace) in exemptions.namespaces.into_iter().enumerate() {
                let valid = !namespace.is_empty()
                    && namespace.len() <= 63
                    && namespace.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
                    && !namespace.starts_with('-')
                    && !namespace.ends_with('-');
                if !valid {
                    return Err(bad(
                        &[key("exemptions"), key("namespaces"), Step::Index(index)],
                        format!("{namespace:?} is not a Kubernetes namespace name (a DNS label)"),
                    ));
                }
                policy.exempt_namespaces.insert(namespace);
            }
            for (index, text) in exemptions.images.iter().enumerate() {
                let pattern = Pattern::parse(text)
                    .map_err(|message| bad(&[key("exemptions"), key("images"), Step::Index(index)], message))?;
                policy.exempt_images.push(pattern);
            }
        }

        if let Some(run_options) = raw.run_options {
            policy.run_options = RunOptions::from_raw(run_options, &[key("run-options")])?;
        }
        Ok(policy)
    }

    /// Says which rules apply to `image`: mode, root pin, required roles, digest requirement, registry and
    /// exemption, each with the setting that chose it.
    pub fn decide(&self, image: &ImageRef) -> Decision {
        let gun = image.gun();
        let rule = most_specific(self.rules.iter().map(|rule| (&rule.pattern, rule)), &gun).map(|(_, rule)| rule);
        let (mode, mode_origin) = match rule.and_then(|rule| rule.mode.map(|mode| (mode, rule))) {
            Some((mode, rule)) => (mode, Origin::Rule(rule.pattern.clone())),
            None => (self.mode, Origin::ContentTrustMode),
        };
        let (pin, pin_origin) = if let Some(ids) = self.cert_ids.get(&gun) {
            (RootPin::CertIds(ids.clone()), Origin::CertIds(gun.clone()))
        } else {
            match most_specific(self.root_keys.iter().map(|(pattern, ids, origin)| (pattern, (ids, origin))), &gun) {
                Some((_, (ids, origin))) => (RootPin::RootKeys(ids.clone()), origin.clone()),
                None => (RootPin::None, Origin::Default),
            }
        };
        let registry_allowed =
            self.allowed_registries.as_ref().is_none_or(|allowed| allowed.contains(image.registry()));
        let exempt = most_specific(self.exempt_images.iter().map(|pattern| (pattern, ())), &gun)
            .map(|(pattern, ())| pattern.clone());
        Decision {
            gun,
            mode,
            mode_origin,
            pin,
            pin_origin,
            required: rule.and_then(|rule| rule.required.clone()).unwrap_or_default(),
            require_digest: rule.and_then(|rule| rule.require_digest).unwrap_or(false),
            rule: rule.map(|rule| rule.pattern.clone()),
            registry_allowed,
            exempt,
            allow_expired_cached: self.allow_expired_cached,
        }
    }

    /// Whether pods in this Kubernetes namespace are exempt from checks.
    pub fn namespace_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.contains(namespace)
    }

    /// The `content-trust.mode` (rules may override it per image; see [`Policy::decide`]).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The trust server settings.
    pub fn trust_server(&self) -> &TrustServer {
        &self.trust_server
    }

    /// The trust server URL for `registry`: its override, else `trust-server.url`, else Docker's default (the
    /// registry's own host over HTTPS, `https://notary.docker.io` for `docker.io`).
    pub fn trust_server_url(&self, registry: &str) -> String {
        if let Some(url) = self.trust_server.registries.get(registry) {
            return url.clone();
        }
        if let Some(url) = &self.trust_server.url {
            return url.clone();
        }
        if registry == crate::image::DEFAULT_REGISTRY {
            "https://notary.docker.io".to_owned()
        } else {
            format!("https://{registry}")
        }
    }

    /// The verifier's cache settings.
    pub fn cache(&self) -> &CacheSettings {
        &self.cache
    }

    /// The run-option rules for the Docker authorization plugin.
    pub fn run_options(&self) -> &RunOptions {
        &self.run_options
    }
}

fn parse_json(text: &str) -> Result<RawPolicy, PolicyError> {
    let json_error = |error: serde_json::Error| {
        let full = error.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full.get(..at).unwrap_or(&full).to_owned(),
            None => full,
        };
        let located = error.line() > 0;
        PolicyError {
            file: None,
            line: located.then_some(error.line()),
            column: located.then_some(error.column()),
            message,
        }
    };
    let keys: BTreeMap<String, serde::de::IgnoredAny> = serde_json::from_str(text).map_err(json_error)?;
    let daemon_json = keys.keys().any(|name| !POLICY_KEYS.contains(&name.as_str()))
        && !keys.keys().any(|name| name != "content-trust" && POLICY_KEYS.contains(&name.as_str()));
    if daemon_json {
        // A daemon.json key that is a near miss of a policy section is taken for a typo, not a daemon option.
        if let Some((typo, meant)) = keys.keys().find_map(|name| {
            POLICY_KEYS
                .iter()
                .find(|wanted| name != *wanted && edit_distance(name, wanted) <= 2)
                .map(|wanted| (name, wanted))
        }) {
            let offset = locate::json_offset(text, &[key(typo)]).unwrap_or_default();
            let (line, column) = locate::line_column(text, offset);
            return Err(PolicyError {
                file: None,
                line: Some(line),
                column: Some(column),
                message: format!("unknown field `{typo}`; did you mean `{meant}`?"),
            });
        }
        let daemon: RawDaemonJson = serde_json::from_str(text).map_err(json_error)?;
        let Some(content_trust) = daemon.content_trust else {
            return Err(PolicyError {
                file: None,
                line: Some(1),
                column: Some(1),
                message: format!(
                    "this JSON has none of the policy's keys ({}) and no \"content-trust\" block",
                    POLICY_KEYS.join(", ")
                ),
            });
        };
        Ok(RawPolicy {
            content_trust: Some(content_trust),
            trust_server: None,
            cache: None,
            registries: None,
            rules: Vec::new(),
            exemptions: None,
            run_options: None,
        })
    } else {
        serde_json::from_str(text).map_err(json_error)
    }
}

/// The Levenshtein distance between two short ASCII keys.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current = vec![row + 1];
        for (column, right_char) in right.iter().enumerate() {
            let substitution =
                previous.get(column).copied().unwrap_or_default() + usize::from(left_char != *right_char);
            let deletion = previous.get(column + 1).copied().unwrap_or_default() + 1;
            let insertion = current.last().copied().unwrap_or_default() + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or_default()
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|error| format!("cannot read the policy: {error}"))?;
    let mut text = String::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read the policy: {error}"))?;
    if text.len() as u64 > MAX_POLICY_BYTES {
        return Err(format!("the policy is larger than {MAX_POLICY_BYTES} bytes"));
    }
    Ok(text)
}

/// Checks a non-empty list of 64-hex key IDs, returning them in lowercase.
fn key_ids(path: &[Step], ids: Vec<String>, what: &str) -> Result<Vec<String>, Bad> {
    if ids.is_empty() {
        return Err(bad(path, format!("the list of {what} IDs cannot be empty")));
    }
    ids.into_iter()
        .enumerate()
        .map(|(index, id)| {
            if id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                Ok(id.to_ascii_lowercase())
            } else {
                Err(bad(&with(path, Step::Index(index)), format!("{id:?} is not a key ID (64 hexadecimal digits)")))
            }
        })
        .collect()
}

fn role_list(path: &[Step], roles: Vec<String>) -> Result<Vec<String>, Bad> {
    if roles.is_empty() {
        return Err(bad(path, "the list of required roles cannot be empty"));
    }
    let mut seen = BTreeSet::new();
    for (index, role) in roles.iter().enumerate() {
        let role_path = with(path, Step::Index(index));
        check_role_name(role).map_err(|message| bad(&role_path, message))?;
        if !seen.insert(role.as_str()) {
            return Err(bad(&role_path, format!("role {role:?} is listed twice")));
        }
    }
    Ok(roles)
}

fn normalise_registry(path: &[Step], registry: &str) -> Result<String, Bad> {
    // A registry is checked by parsing a reference on it, which applies Docker's rules (index.docker.io is docker.io).
    let probe = format!("{registry}/probe");
    match ImageRef::parse(&probe) {
        Ok(image) if !registry.contains('/') && (registry.contains(['.', ':']) || registry == "localhost") => {
            Ok(image.registry().to_owned())
        }
        _ => Err(bad(path, format!("{registry:?} is not a registry host[:port] (such as registry.example.com:5000)"))),
    }
}

fn check_url(path: &[Step], url: &str) -> Result<(), Bad> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !url.bytes().any(|byte| byte.is_ascii_whitespace() || byte.is_ascii_control()) =>
        {
            Ok(())
        }
        _ => Err(bad(path, format!("{url:?} is not an http:// or https:// URL"))),
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
