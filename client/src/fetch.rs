//! HTTP towards a Notary-compatible server: the metadata routes (`<role>.json`,
//! `<n>.root.json`, `<role>.<sha256 hex>.json`) with the client's size limits (spec §1.10) and
//! timeouts, and the registry-token dance (spec §6): on a 401 with a Bearer challenge, a token
//! is fetched from the realm with Basic credentials and the request retried; a tufa API token is
//! sent directly as Bearer. Credentials are never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use zeroize::Zeroizing;

/// Most bytes of `timestamp.json` (spec §1.10).
pub const MAX_TIMESTAMP_BYTES: u64 = 1024 * 1024;
/// Most bytes of a root file fetched without a known length (spec §1.10).
pub const MAX_ROOT_BYTES: u64 = 100 * 1024 * 1024;
/// Most bytes of a token response.
const MAX_TOKEN_BYTES: u64 = 1024 * 1024;
/// Lifetime assumed for a token whose response gives none (spec §6).
const DEFAULT_TOKEN_SECONDS: u64 = 60;

/// How the client authenticates to the trust server.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// Username and password, sent as Basic credentials to the token realm of a Bearer
    /// challenge (or to the server on a Basic challenge).
    Basic {
        /// The username.
        username: String,
        /// The password.
        password: Zeroizing<String>,
    },
    /// A bearer token sent on every request (a tufa API token `tufa_…`, or a registry token).
    Token(Zeroizing<String>),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => formatter.write_str("None"),
            Self::Basic { username, .. } => {
                write!(formatter, "Basic {{ username: {username:?}, password: <redacted> }}")
            }
            Self::Token(_) => formatter.write_str("Token(<redacted>)"),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 404: the file (or the repository) does not exist.
    #[error("not found")]
    NotFound,
    /// 401 even after authenticating (or with no credentials to offer).
    #[error("{0}")]
    Unauthorized(String),
    /// The server answered another error status.
    #[error("the server answered {0}")]
    Status(u16),
    /// The server could not be reached or the transfer failed.
    #[error("{0}")]
    Network(String),
    /// The body is larger than the limit.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was fetched.
        what: String,
        /// The limit.
        limit: u64,
    },
}

/// Where a verifier's metadata files come from: a trust server over HTTPS ([`Fetcher`]), or
/// inside tufa-server its own store (so its `/v1/verify` never calls itself over the network).
#[async_trait::async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// `<role>.json` of `gun`, at most `limit` bytes.
    async fn current(&self, gun: &str, role: &str, limit: u64) -> Result<Vec<u8>, FetchError>;
    /// `<version>.root.json` of `gun`.
    async fn root_version(&self, gun: &str, version: i64) -> Result<Vec<u8>, FetchError>;
    /// `<role>.<sha256 hex>.json` of `gun`, at most `length` bytes (the caller checks hashes).
    async fn by_checksum(&self, gun: &str, role: &str, sha256_hex: &str, length: u64) -> Result<Vec<u8>, FetchError>;
}

#[async_trait::async_trait]
impl Source for Fetcher {
    async fn current(&self, gun: &str, role: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        Fetcher::current(self, gun, role, limit).await
    }

    async fn root_version(&self, gun: &str, version: i64) -> Result<Vec<u8>, FetchError> {
        Fetcher::root_version(self, gun, version).await
    }

    async fn by_checksum(&self, gun: &str, role: &str, sha256_hex: &str, length: u64) -> Result<Vec<u8>, FetchError> {
        Fetcher::by_checksum(self, gun, role, sha256_hex, length).await
    }
}

/// A cached registry token.
struct CachedToken {
    token: Zeroizing<String>,
    until: Instant,
}

/// Fetches metadata files of GUNs from one server.
pub struct Fetcher {
    client: reqwest::Client,
    base: String,
    credentials: Credentials,
    /// Registry tokens by scope.
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Fetcher").field("base", &self.base).field("credentials", &self.credentials).finish()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter.
        service: Option<String>,
        /// The `scope` parameter.
        scope: Option<String>,
    },
    /// `Basic …`.
    Basic,
}

/// Parses a `WWW-Authenticate` value (quoted or bare parameters, commas inside quotes kept).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut parameters: HashMap<String, String> = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted.get(..end)?.to_owned(), quoted.get(end + 1..)?)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after.get(..end)?.trim().to_owned(), after.get(end..)?)
        };
        parameters.insert(key, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: parameters.remove("realm")?,
        service: parameters.remove("service"),
        scope: parameters.remove("scope"),
    })
}

impl Fetcher {
    /// A fetcher for the server at `base_url` (`https://host:port`), trusting only `ca_pem` when
    /// given (else the platform's roots), with `timeout` per request.
    pub fn new(
        base_url: &str,
        ca_pem: Option<&[u8]>,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|error| format!("the CA bundle cannot be read: {error}"))?;
            if certificates.is_empty() {
                return Err("the CA bundle holds no certificate".to_owned());
            }
            builder = builder.tls_certs_only(certificates);
        }
        let client = builder.build().map_err(|error| format!("the HTTP client cannot be built: {error}"))?;
        Ok(Self {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            credentials,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The URL of `file` of `gun`.
    fn url(&self, gun: &str, file: &str) -> String {
        format!("{}/v2/{gun}/_trust/tuf/{file}", self.base)
    }

    /// GET `<role>.json` with at most `limit` bytes.
    pub async fn current(&self, gun: &str, role: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        self.get(gun, &format!("{role}.json"), limit).await
    }

    /// GET `<version>.root.json`.
    pub async fn root_version(&self, gun: &str, version: i64) -> Result<Vec<u8>, FetchError> {
        self.get(gun, &format!("{version}.root.json"), MAX_ROOT_BYTES).await
    }

    /// GET `<role>.<sha256 hex>.json` of exactly `length` bytes (at most; the caller checks hashes).
    pub async fn by_checksum(
        &self,
        gun: &str,
        role: &str,
        sha256_hex: &str,
        length: u64,
    ) -> Result<Vec<u8>, FetchError> {
        self.get(gun, &format!("{role}.{sha256_hex}.json"), length).await
    }

    async fn get(&self, gun: &str, file: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let url = self.url(gun, file);
        let scope = format!("repository:{gun}:pull");
        let mut authorization = self.authorization(&scope);
        for attempt in 0..2 {
            let mut request = self.client.get(&url);
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value.as_str());
            }
            let response = request.send().await.map_err(|error| FetchError::Network(network_text(&error)))?;
            match response.status() {
                StatusCode::OK => return read_limited(response, file, limit).await,
                StatusCode::NOT_FOUND => return Err(FetchError::NotFound),
                StatusCode::UNAUTHORIZED if matches!(self.credentials, Credentials::Token(_)) => {
                    return Err(FetchError::Unauthorized(format!("the server refused the token for {gun}")));
                }
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    let challenge = response
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|value| value.to_str().ok())
                        .and_then(parse_challenge);
                    authorization = Some(self.answer(challenge, &scope).await?);
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(FetchError::Unauthorized(format!("the server refused the credentials for {gun}")));
                }
                status => return Err(FetchError::Status(status.as_u16())),
            }
        }
        Err(FetchError::Unauthorized(format!("the server refused the credentials for {gun}")))
    }

    /// The Authorization header to send up front: a configured token, or a cached registry token.
    fn authorization(&self, scope: &str) -> Option<Zeroizing<String>> {
        match &self.credentials {
            Credentials::Token(token) => Some(Zeroizing::new(format!("Bearer {}", token.as_str()))),
            Credentials::None => None,
            Credentials::Basic { .. } => {
                let tokens = self.tokens.lock().ok()?;
                let cached = tokens.get(scope).filter(|cached| cached.until > Instant::now())?;
                Some(Zeroizing::new(format!("Bearer {}", cached.token.as_str())))
            }
        }
    }

    /// Answers a 401's challenge: a registry token from the realm, or Basic credentials.
    async fn answer(
        &self,
        challenge: Option<Challenge>,
        fallback_scope: &str,
    ) -> Result<Zeroizing<String>, FetchError> {
        let Credentials::Basic { username, password } = &self.credentials else {
            return Err(FetchError::Unauthorized("the server requires credentials".to_owned()));
        };
        let basic = || {
            use base64::Engine as _;
            let pair = Zeroizing::new(format!("{username}:{}", password.as_str()));
            Zeroizing::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())))
        };
        let (realm, service, scope) = match challenge {
            Some(Challenge::Basic) => return Ok(basic()),
            Some(Challenge::Bearer { realm, service, scope }) => (realm, service, scope),
            None => return Err(FetchError::Unauthorized("the server sent no usable challenge".to_owned())),
        };
        let scope = scope.unwrap_or_else(|| fallback_scope.to_owned());
        let mut query: Vec<(&str, &str)> = vec![("scope", scope.as_str()), ("account", username.as_str())];
        if let Some(service) = &service {
            query.push(("service", service.as_str()));
        }
        let url = reqwest::Url::parse_with_params(&realm, &query)
            .map_err(|_| FetchError::Unauthorized(format!("the token realm {realm:?} is not a URL")))?;
        // A password goes to an https realm only, unless the trust server itself is plain http
        // (a test set-up): a challenge must not make the client send it in the clear.
        if url.scheme() != "https" && self.base.starts_with("https:") {
            return Err(FetchError::Unauthorized(format!("the token realm {realm:?} is not https")));
        }
        let response = self
            .client
            .get(url)
            .header(AUTHORIZATION, basic().as_str())
            .send()
            .await
            .map_err(|error| FetchError::Network(format!("the token service: {}", network_text(&error))))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(FetchError::Unauthorized("the token service refused the credentials".to_owned()));
            }
            status => return Err(FetchError::Status(status.as_u16())),
        }
        let body = Zeroizing::new(read_limited(response, "token response", MAX_TOKEN_BYTES).await?);
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| FetchError::Unauthorized("the token service answered no token".to_owned()))?;
        let token = Zeroizing::new(
            parsed
                .token
                .filter(|token| !token.is_empty())
                .or(parsed.access_token)
                .ok_or_else(|| FetchError::Unauthorized("the token service answered no token".to_owned()))?,
        );
        // Use a token a little before it expires.
        let seconds = parsed.expires_in.unwrap_or(DEFAULT_TOKEN_SECONDS).saturating_sub(5).max(1);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(
                scope.clone(),
                CachedToken { token: token.clone(), until: Instant::now() + Duration::from_secs(seconds) },
            );
        }
        Ok(Zeroizing::new(format!("Bearer {}", token.as_str())))
    }
}

/// The text of a reqwest error without the URL's query (which holds no secret here, but keep
/// messages short) and with its cause.
fn network_text(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if error.is_timeout() { "timed out".to_owned() } else { error.to_string() };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a body of at most `limit` bytes: a larger `Content-Length` is refused up front, and the
/// read stops past the limit.
async fn read_limited(mut response: reqwest::Response, what: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::TooLarge { what: what.to_owned(), limit };
    let announced = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(announced.unwrap_or(0).min(limit)).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(|error| FetchError::Network(network_text(&error)))? {
        if u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX) > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="notary",scope="repository:a/b:push,pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("notary".into()),
                scope: Some("repository:a/b:push,pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm="https://r/t", error="invalid_token""#),
            Some(Challenge::Bearer { realm: "https://r/t".into(), service: None, scope: None })
        );
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }

    #[tokio::test]
    async fn a_password_is_not_sent_to_a_plain_http_realm() {
        let credentials = Credentials::Basic { username: "alice".into(), password: Zeroizing::new("hunter2".into()) };
        let fetcher = Fetcher::new("https://notary.example.com", None, credentials, Duration::from_secs(1)).unwrap();
        let challenge = Challenge::Bearer { realm: "http://evil.example.com/token".into(), service: None, scope: None };
        assert_eq!(
            fetcher.answer(Some(challenge), "repository:a:pull").await.unwrap_err(),
            FetchError::Unauthorized("the token realm \"http://evil.example.com/token\" is not https".into())
        );
        let anonymous =
            Fetcher::new("https://notary.example.com", None, Credentials::None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            anonymous.answer(Some(Challenge::Basic), "repository:a:pull").await.unwrap_err(),
            FetchError::Unauthorized("the server requires credentials".into())
        );
    }

    #[test]
    fn credentials_never_print() {
        let basic = Credentials::Basic { username: "alice".into(), password: Zeroizing::new("hunter2".into()) };
        assert_eq!(format!("{basic:?}"), "Basic { username: \"alice\", password: <redacted> }");
        assert_eq!(format!("{:?}", Credentials::Token(Zeroizing::new("tufa_secret".into()))), "Token(<redacted>)");
    }
}
