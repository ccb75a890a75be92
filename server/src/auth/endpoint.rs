//! The builtin token service: Docker's token flow at `/auth/token` (`GET` with Basic credentials,
//! or an OAuth2 `POST` with `grant_type=password`), answering with a short-lived ES256 JWT whose
//! `access` holds what the caller's roles grant of the requested scopes, for the trust server or a
//! configured registry. `GET /auth/certs` serves the CA certificate consumers trust.
//!
//! Wrong credentials get 401; no credentials get 200 and a token with the anonymous grants (the
//! notary CLI asks anonymously first, and a 401 there breaks it).

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde_json::json;
use tufa_auth::Access;
use tufa_auth::scope::parse_scopes;
use zeroize::Zeroizing;

use super::login::Refusal;
use super::{Builtin, Presented, presented};

/// The longest query string or form body accepted.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message}]}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

fn unauthorized(realm: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm={}", serde_json::Value::String(realm.to_owned()))) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, then `%XX` escapes.
fn form_decode(text: &str) -> Option<String> {
    crate::routes::percent_decode(&text.replace('+', " "))
}

/// Splits a query string or form body into decoded pairs; `None` when a part cannot be decoded.
fn form_pairs(text: &str) -> Option<Vec<(String, String)>> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((form_decode(key)?, form_decode(value)?))
        })
        .collect()
}

/// What a token request asks for.
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<Access>,
    /// OAuth2 password grant credentials, from a form body.
    form_credentials: Option<(String, Zeroizing<String>)>,
    oauth: bool,
}

/// A refused token request: status, code, message.
type Refused = (StatusCode, &'static str, String);

fn read_request(pairs: Vec<(String, String)>, oauth: bool) -> Result<TokenRequest, Refused> {
    let mut request = TokenRequest { service: None, scopes: Vec::new(), form_credentials: None, oauth };
    let mut scopes = Vec::new();
    let mut username = None;
    let mut password = None;
    for (key, value) in pairs {
        match key.as_str() {
            "service" => request.service = Some(value),
            "scope" if !value.trim().is_empty() => scopes.push(value),
            "grant_type" if oauth && value != "password" => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "only grant_type=password is supported; refresh tokens are not issued".into(),
                ));
            }
            "username" if oauth => username = Some(value),
            "password" if oauth => password = Some(Zeroizing::new(value)),
            _ => {}
        }
    }
    // All scope parameters together, under the request's bounds (text, entries, actions).
    if !scopes.is_empty() {
        request.scopes = parse_scopes(scopes.iter().map(String::as_str))
            .map_err(|reason| (StatusCode::BAD_REQUEST, "INVALID_REQUEST", reason.to_string()))?;
    }
    if let (Some(username), Some(password)) = (username, password) {
        request.form_credentials = Some((username, password));
    }
    Ok(request)
}

/// Who is asking, once the credentials were checked; `Err` is the answer to send.
async fn authenticate(
    builtin: &Builtin,
    headers: &HeaderMap,
    form: Option<(String, Zeroizing<String>)>,
    remote: Option<SocketAddr>,
) -> Result<Option<String>, Response> {
    let realm = builtin.config.realm.as_str();
    let credentials = match form {
        Some((user, password)) => Presented::Basic { user, password },
        None => presented(headers),
    };
    let address = remote.map(|remote| remote.ip());
    match credentials {
        Presented::Nothing => Ok(None),
        Presented::Malformed => Err(unauthorized(realm)),
        Presented::Bearer(token) => match builtin.api_token_principal(&token, None).await {
            Ok(Some(principal)) => Ok(Some(principal)),
            Ok(None) => {
                tracing::warn!(remote = ?remote, "token request with an unknown, revoked or expired API token");
                Err(unauthorized(realm))
            }
            Err(failure) => Err(failure.into_response()),
        },
        Presented::Basic { user, password } => {
            // An API token is a 256-bit secret checked with one hash: guessing it is hopeless and
            // cheap to refuse, so it is not rate-limited, and a user locked out by someone guessing
            // passwords keeps its automation working.
            if tufa_auth::ApiTokenSecret::parse(&password).is_some() {
                return match builtin.api_token_principal(&password, Some(&user)).await {
                    Ok(Some(principal)) => Ok(Some(principal)),
                    Ok(None) => {
                        tracing::warn!(user = %logged(&user), remote = ?remote, "token request with a bad API token");
                        Err(unauthorized(realm))
                    }
                    Err(failure) => Err(failure.into_response()),
                };
            }
            if let Err(refusal) = builtin.logins.begin(&user, address) {
                return Err(refused(refusal, &user, remote));
            }
            if password.len() > tufa_auth::password::MAX_PASSWORD_LEN {
                return Err(unauthorized(realm));
            }
            let principal = match builtin.store.principal(&user).await {
                Ok(principal) => principal,
                Err(failure) => return Err(crate::error::ApiError::from(failure).into_response()),
            };
            let hash = principal.and_then(|principal| principal.password_hash);
            match builtin.logins.verify(password, hash).await {
                Ok(true) => {
                    builtin.logins.succeeded(&user, address);
                    Ok(Some(user))
                }
                Ok(false) => {
                    tracing::warn!(user = %logged(&user), remote = ?remote, "failed login");
                    Err(unauthorized(realm))
                }
                Err(refusal) => Err(refused(refusal, &user, remote)),
            }
        }
    }
}

/// A user name as the log shows it: a client chose it, so it must not be able to forge or hide
/// log lines (see [`tufa_core::names::printable`]).
fn logged(user: &str) -> String {
    tufa_core::names::printable(user, 128)
}

fn refused(refusal: Refusal, user: &str, remote: Option<SocketAddr>) -> Response {
    match refusal {
        Refusal::Limited(wait) => {
            tracing::debug!(user = %logged(user), remote = ?remote, "login refused: too many failed logins");
            let mut response =
                error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "too many failed logins; try again later");
            if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Refusal::Busy => error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the token service is busy; try again"),
    }
}

/// Answers `GET /auth/token` (query) or `POST /auth/token` (form body).
pub async fn token(
    builtin: &Builtin,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Option<Body>,
    remote: Option<SocketAddr>,
) -> Response {
    let oauth = body.is_some();
    let text = match body {
        Some(body) => match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
            Ok(collected) => match String::from_utf8(collected.to_bytes().to_vec()) {
                Ok(text) => Zeroizing::new(text),
                Err(_) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "the form is not UTF-8"),
            },
            Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_REQUEST", "the form is too large"),
        },
        None => Zeroizing::new(query.unwrap_or_default().to_owned()),
    };
    if text.len() > MAX_REQUEST_BYTES {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "the query string is too long");
    }
    let Some(pairs) = form_pairs(&text) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "the parameters are not valid URL encoding");
    };
    let request = match read_request(pairs, oauth) {
        Ok(request) => request,
        Err((status, code, message)) => return error(status, code, &message),
    };
    let config = &builtin.config;
    let service = request.service.clone().unwrap_or_else(|| config.service.clone());
    let registry_host = if service == config.service {
        None
    } else {
        match config.registry(&service) {
            Some(registry) => Some(registry.host.clone()),
            None => {
                return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", &format!("unknown service {service:?}"));
            }
        }
    };
    let principal = match authenticate(builtin, headers, request.form_credentials, remote).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let bindings = match builtin.bindings_for(principal.as_deref()).await {
        Ok(bindings) => bindings,
        Err(failure) => return failure.into_response(),
    };
    let granted: Vec<Access> = request
        .scopes
        .iter()
        .filter_map(|requested| builtin.grant(&bindings, principal.as_deref(), requested, registry_host.as_deref()))
        .collect();
    let issuer = match builtin.keys.issuer().await {
        Ok(issuer) => issuer,
        Err(failure) => return crate::error::ApiError::Internal(failure.to_string()).into_response(),
    };
    let now = SystemTime::now();
    let issued = match issuer.issue(principal.as_deref().unwrap_or_default(), &service, &granted, now, config.token_ttl)
    {
        Ok(issued) => issued,
        Err(failure) => return crate::error::ApiError::Internal(failure.to_string()).into_response(),
    };
    tracing::info!(
        principal = principal.as_deref().unwrap_or(tufa_auth::roles::ANONYMOUS),
        service = %service,
        requested = request.scopes.len(),
        granted = granted.len(),
        "issued a token"
    );
    let issued_at =
        chrono::DateTime::<chrono::Utc>::from(issued.issued_at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = if request.oauth {
        json!({"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in, "issued_at": issued_at})
    } else {
        json!({"token": issued.token, "access_token": issued.token, "expires_in": issued.expires_in, "issued_at": issued_at})
    };
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /auth/certs`: the PEM bundle registries and token-mode servers trust.
pub fn certs(builtin: &Builtin) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-pem-file")], builtin.keys.ca_pem.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_percent_and_plus_and_keep_repeats() {
        let pairs = form_pairs("service=tufa&scope=repository%3Aa%2Fb%3Apull&scope=x+y&account=").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("service".to_owned(), "tufa".to_owned()),
                ("scope".to_owned(), "repository:a/b:pull".to_owned()),
                ("scope".to_owned(), "x y".to_owned()),
                ("account".to_owned(), String::new()),
            ]
        );
        assert_eq!(form_pairs("a=%zz"), None);
        assert_eq!(form_pairs("a=%e2%82"), None);
    }
}
