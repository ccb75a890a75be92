//! HTTP wiring: the shared state, one dispatching handler in notary-server's route order, cache
//! headers, and request metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;
use tufa_core::keys::PublicKey;
use tufa_core::metadata::Signed;
use tufa_core::names::{BaseRole, Gun, RoleName};
use tufa_store::StoredFile;

use crate::auth::{Authenticator, Caller};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::multipart;
use crate::routes::{Route, route};
use crate::service::{Recreation, Service};
use crate::upload::{UploadGate, UploadPermit};

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `max-age` for current metadata, seconds (0 disables caching).
    pub current_max_age: u32,
    /// `max-age` for checksum- and version-addressed metadata, seconds (0 disables caching).
    pub consistent_max_age: u32,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most parts in one update.
    pub max_parts: usize,
    /// Accepted GUN prefixes (empty: all).
    pub gun_prefixes: Vec<String>,
    /// The server-wide bounds on uploads in progress (shared by every clone).
    pub uploads: UploadGate,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            current_max_age: 300,
            consistent_max_age: 2_592_000,
            max_body_bytes: 32 << 20,
            max_parts: 1000,
            gun_prefixes: Vec::new(),
            uploads: UploadGate::default(),
        }
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The server's operations.
    pub service: Service,
    /// HTTP settings.
    pub http: Arc<HttpSettings>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Who may do what.
    pub auth: Arc<Authenticator>,
}

/// The router: every request goes through [`dispatch`].
pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

enum Caching {
    Current,
    Consistent,
}

async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let matched = route(request.method(), request.uri().path());
    let operation = matched.operation();
    let request_id = crate::audit::request_id(request.headers());
    let mut response = match handle(&state, matched, request, request_id.clone()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(crate::audit::REQUEST_ID_HEADER, value);
    }
    state.metrics.observe(operation, response.status().as_u16(), started.elapsed());
    response
}

fn gun_allowed(state: &AppState, gun: &Gun) -> bool {
    state.http.gun_prefixes.is_empty()
        || state.http.gun_prefixes.iter().any(|prefix| gun.as_str().starts_with(prefix.as_str()))
}

async fn handle(state: &AppState, matched: Route, request: Request, request_id: String) -> Result<Response, ApiError> {
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    if matches!(matched, Route::Token | Route::TokenCerts) {
        let Authenticator::Builtin(builtin) = state.auth.as_ref() else { return Err(ApiError::NoRoute) };
        if matched == Route::TokenCerts {
            return Ok(crate::auth::endpoint::certs(builtin));
        }
        let (parts, body) = request.into_parts();
        let body = (parts.method == axum::http::Method::POST).then_some(body);
        return Ok(crate::auth::endpoint::token(builtin, &parts.headers, parts.uri.query(), body, remote).await);
    }
    // Credentials are checked first, so a refusal is the same whether or not the repository exists.
    let caller = state.auth.authorize(request.headers(), &matched.required_access(), remote).await?;
    let requester = crate::audit::Requester {
        principal: caller.principal.clone(),
        address: remote.map(|address| address.ip().to_string()),
        request_id: Some(request_id),
    };
    // notary-server's GUN prefix filter runs before everything else on GUN routes.
    let gun = match &matched {
        Route::Update(gun)
        | Route::Delete(gun)
        | Route::ByChecksum(gun, ..)
        | Route::ByVersion(gun, ..)
        | Route::Current(gun, _)
        | Route::GetKey(gun, _)
        | Route::RotateKey(gun, _)
        | Route::GunChangefeed(gun)
        | Route::Grants(gun)
        | Route::GrantChanges(gun)
        | Route::TargetHistory(gun, _) => Some(gun),
        _ => None,
    };
    if let Some(gun) = gun
        && !gun_allowed(state, gun)
    {
        if matches!(matched, Route::Update(_)) {
            let prefixes = state.http.gun_prefixes.join(" ");
            return Err(ApiError::InvalidGun(format!("Require GUNs with prefix: [{prefixes}]")));
        }
        return Err(ApiError::NoRoute);
    }
    match matched {
        Route::Ping => Ok(json_response(StatusCode::OK, "{}".into())),
        Route::Health => Ok(health(state).await),
        Route::Metrics => {
            Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response())
        }
        Route::Update(gun) => {
            // The permit bounds the uploads in progress; it is held until the update is stored.
            let (uploads, _permit) = read_update(state, request).await?;
            let recreation = recreation(state, &caller, &gun).await?;
            state.service.publish(&gun, uploads, &recreation, &requester).await?;
            Ok(StatusCode::OK.into_response())
        }
        Route::Delete(gun) => {
            let deleted = state
                .service
                .store
                .delete_gun(gun.as_str(), crate::audit::delete_record(gun.as_str(), &requester))
                .await?;
            tracing::info!(gun = %gun, deleted, principal = caller.name(), "deleted repository");
            Ok(StatusCode::OK.into_response())
        }
        Route::ByChecksum(gun, role, checksum) => {
            let file = state.service.store.by_checksum(gun.as_str(), role.as_str(), &checksum).await?;
            metadata(state, file, Caching::Consistent)
        }
        Route::ByVersion(gun, role, version) => {
            let file = state.service.store.by_version(gun.as_str(), role.as_str(), version).await?;
            metadata(state, file, Caching::Consistent)
        }
        Route::Current(gun, role) => current(state, &gun, &role).await,
        Route::GetKey(gun, role) => server_key(state, &gun, role, false, &requester).await,
        Route::RotateKey(gun, role) => server_key(state, &gun, role, true, &requester).await,
        Route::GunChangefeed(gun) => changefeed(state, &caller, Some(&gun), request.uri().query()).await,
        Route::Changefeed => changefeed(state, &caller, None, request.uri().query()).await,
        route @ (Route::Grants(_)
        | Route::GrantChanges(_)
        | Route::TargetHistory(..)
        | Route::KeyGrants(_)
        | Route::AuditLog
        | Route::AuditCheckpoint
        | Route::AuditEntry(_)
        | Route::InclusionProof
        | Route::ConsistencyProof) => crate::audit_api::handle(state, &caller, route, request.uri().query()).await,
        Route::Verify => verify(state, request, remote).await,
        Route::Token | Route::TokenCerts => Err(ApiError::NoRoute),
        Route::BadGun(reason) => Err(ApiError::InvalidGun(reason)),
        Route::NotFound => Err(ApiError::NoRoute),
        Route::MethodNotAllowed => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
    }
}

/// `POST /v1/verify`: reads `{"image": "..."}` (at most 16 KiB), checks that the caller may pull
/// the image's repository, and answers whether it is trusted under the server's verification
/// policy, verified from this server's own store.
async fn verify(state: &AppState, request: Request, remote: Option<SocketAddr>) -> Result<Response, ApiError> {
    const LIMIT: usize = 16 * 1024;
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, LIMIT);
    let bytes = match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": "the request is larger than 16 KiB"}).to_string(),
            ));
        }
    };
    // A body that names no valid image is refused before credentials are read: it reveals nothing.
    let image = match crate::verify_cli::verify_body(&bytes) {
        Ok(image) => image,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let access = [tufa_auth::access::Access::new("repository", &image.gun(), &["pull"])];
    state.auth.authorize(&parts.headers, &access, remote).await?;
    let verifier = state.service.verifier()?;
    Ok(crate::verify_cli::verify_response(&verifier, &image).await)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

/// The value a failing check has in the health body. Like every other response, the body never
/// carries internal error text (notary clients only read the status); the detail is logged.
pub const HEALTH_PROBLEM: &str = "unavailable";

/// `GET /_notary_server/health`: `200 {}` when the database and the signer answer, else `503`
/// with one fixed entry per failing check (notary-server's check names).
async fn health(state: &AppState) -> Response {
    let mut problems = serde_json::Map::new();
    if let Err(error) = state.service.store.ping().await {
        tracing::warn!(error = %error, "health check: the database is not operational");
        problems.insert("DB operational".into(), json!(HEALTH_PROBLEM));
    }
    if let Err(error) = state.service.signer.health().await {
        tracing::warn!(error = %error, "health check: the signer is not operational");
        problems.insert("Trust operational".into(), json!(HEALTH_PROBLEM));
    }
    if problems.is_empty() {
        json_response(StatusCode::OK, "{}".into())
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, serde_json::Value::Object(problems).to_string())
    }
}

/// Reads the multipart body of an update and splits it into files by role (each is parsed by the verifier).
///
/// The body is buffered under the server's upload budget; the parsing runs on the blocking pool
/// once a verification slot is free. The returned permit holds both until it is dropped.
async fn read_update(
    state: &AppState,
    request: Request,
) -> Result<(BTreeMap<RoleName, Vec<u8>>, UploadPermit), ApiError> {
    let limit = state.http.max_body_bytes;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| ApiError::MalformedUpload("missing content type".into()))?;
    let boundary = multipart::boundary(content_type).map_err(|error| ApiError::MalformedUpload(error.to_string()))?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let body = state.http.uploads.read_body(request.into_body(), declared, limit).await?;
    let slot = state.http.uploads.verification_slot().await?;
    let (bytes, permit) = body.into_parts(slot);
    let max_parts = state.http.max_parts;
    let uploads = tokio::task::spawn_blocking(move || parse_update(bytes, &boundary, max_parts))
        .await
        .map_err(|error| ApiError::Internal(format!("parsing an upload stopped: {error}")))??;
    Ok((uploads, permit))
}

/// Splits an update into its parts and checks each names a role. CPU-bound; runs on the blocking
/// pool.
///
/// The largest file kept takes over the body's buffer (its bytes are moved to the front, in
/// place) and only the others are copied, so an upload costs its body once here, not twice.
fn parse_update(mut body: Vec<u8>, boundary: &str, max_parts: usize) -> Result<BTreeMap<RoleName, Vec<u8>>, ApiError> {
    let parts =
        multipart::parse(&body, boundary, max_parts).map_err(|error| ApiError::MalformedUpload(error.to_string()))?;
    // Where each kept file lies in the body; a later part for the same role replaces an earlier one.
    let mut kept: BTreeMap<RoleName, Range<usize>> = BTreeMap::new();
    for part in parts {
        let name = part.filename.filter(|name| !name.is_empty()).ok_or(ApiError::NoFilename)?;
        let name = name.strip_suffix(".json").unwrap_or(&name);
        let role = RoleName::parse(name).map_err(|_| ApiError::InvalidRole(name.to_owned()))?;
        // The server always makes its own timestamp; a client's is ignored, as notary does, once it
        // is known to be metadata. Every other file is parsed once, by the verifier, which refuses
        // one that is not metadata as malformed JSON before judging anything.
        if role.as_base() == Some(BaseRole::Timestamp) {
            Signed::parse(part.body)
                .and_then(|signed| signed.version())
                .map_err(|error| ApiError::MalformedJson(format!("{role}: {error}")))?;
            continue;
        }
        kept.insert(role, part.range);
    }
    let largest = kept.iter().max_by_key(|(_, range)| range.len()).map(|(role, _)| role.clone());
    let mut uploads = BTreeMap::new();
    let mut in_place = None;
    for (role, range) in kept {
        if Some(&role) == largest.as_ref() {
            in_place = Some((role, range));
        } else {
            uploads.insert(role, body.get(range).unwrap_or_default().to_vec());
        }
    }
    if let Some((role, range)) = in_place {
        body.truncate(range.end);
        body.drain(..range.start);
        uploads.insert(role, body);
    }
    Ok(uploads)
}

fn http_date(time: DateTime<Utc>) -> String {
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn cache_headers(headers: &mut HeaderMap, max_age: u32) {
    if max_age == 0 {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0, no-cache, no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    } else if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}, s-maxage={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
}

fn metadata(state: &AppState, file: Option<StoredFile>, caching: Caching) -> Result<Response, ApiError> {
    let file = file.ok_or(ApiError::MetadataNotFound)?;
    Ok(metadata_response(state, file.data, file.created_at, caching))
}

fn metadata_response(state: &AppState, data: Vec<u8>, modified: DateTime<Utc>, caching: Caching) -> Response {
    let mut response = Response::new(Body::from(data));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&http_date(modified)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    match caching {
        Caching::Current if state.http.current_max_age > 0 => {
            let age = state.http.current_max_age;
            if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={age}, s-maxage={age}, must-revalidate"))
            {
                headers.insert(header::CACHE_CONTROL, value);
            }
        }
        Caching::Current => cache_headers(headers, 0),
        Caching::Consistent => cache_headers(headers, state.http.consistent_max_age),
    }
    response
}

/// Current metadata: one indexed lookup. For timestamp and snapshot the stored pair is served
/// unless one has expired, in which case it is re-signed first (spec §3.6). If re-signing fails
/// the stored files are served, so reads never depend on the signer.
async fn current(state: &AppState, gun: &Gun, role: &RoleName) -> Result<Response, ApiError> {
    let file = state.service.current_served(gun, role).await?;
    // The timestamp's Last-Modified is when it was made, as notary reports its update time.
    metadata(state, file, Caching::Current)
}

/// `GET` (or with `rotate`, `POST`) of `<gun>/_trust/tuf/<role>.key`. Without authentication the
/// keys each client address may hold for never-published repositories are bounded.
async fn server_key(
    state: &AppState,
    gun: &Gun,
    role: BaseRole,
    rotate: bool,
    requester: &crate::audit::Requester,
) -> Result<Response, ApiError> {
    let bound = matches!(state.auth.as_ref(), Authenticator::None);
    key_response(state.service.server_key(gun, role, rotate, requester, bound).await?)
}

fn key_response(key: PublicKey) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let public = base64::engine::general_purpose::STANDARD.encode(key.public());
    // Go struct order, as notary-server writes it.
    let body = format!(
        "{{\"keytype\":{},\"keyval\":{{\"public\":{},\"private\":null}}}}",
        serde_json::Value::String(key.keytype().as_str().to_owned()),
        serde_json::Value::String(public)
    );
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Most records one changefeed page returns.
pub const MAX_CHANGEFEED_RECORDS: i64 = 1000;

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// What decides whether an update may re-create a deleted repository: its tombstone (if any) and
/// whether the caller is an admin of the repository.
async fn recreation(state: &AppState, caller: &Caller, gun: &Gun) -> Result<Recreation, ApiError> {
    let Some(tombstone) = state.service.store.tombstone(gun.as_str()).await? else {
        return Ok(Recreation { tombstone: None, admin: false, principal: caller.name().to_owned() });
    };
    let admin = match state.auth.as_ref() {
        // Without authentication every caller counts as an admin.
        Authenticator::None => true,
        // The notary CLI asks only for `pull,push` to create a repository, so this holds only when the
        // token service grants `*` anyway; otherwise an admin command clears the tombstone first.
        Authenticator::Token(_) => {
            tufa_auth::grants(&caller.granted, &tufa_auth::Access::new("repository", gun.as_str(), &["*"]))
        }
        Authenticator::Builtin(builtin) => builtin.is_admin(caller, gun.as_str()).await?,
    };
    Ok(Recreation { tombstone: Some(tombstone), admin, principal: caller.name().to_owned() })
}

async fn changefeed(
    state: &AppState,
    caller: &Caller,
    gun: Option<&Gun>,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let records = query_value(query, "records").unwrap_or_default();
    let records: i32 = records.parse().map_err(|_| {
        ApiError::InvalidParameters(format!("invalid records parameter: {records:?} is not a 32-bit integer"))
    })?;
    let change_id = match query_value(query, "change_id") {
        None | Some("") => 0,
        Some(text) => text.parse::<i32>().map_err(|_| {
            ApiError::InvalidParameters(format!("invalid change_id parameter: {text:?} is not a 32-bit integer"))
        })?,
    };
    let records = match i64::from(records) {
        0 => 100,
        other => other.clamp(-MAX_CHANGEFEED_RECORDS, MAX_CHANGEFEED_RECORDS),
    };
    let mut changes = state.service.store.changefeed(gun.map(Gun::as_str), i64::from(change_id), records).await?;
    // The global feed shows a builtin caller only the repositories it may read.
    if gun.is_none()
        && let Authenticator::Builtin(builtin) = state.auth.as_ref()
    {
        let bindings = builtin.bindings_for(caller.principal.as_deref()).await?;
        changes.retain(|change| builtin.may_read(&bindings, caller, &change.gun));
    }
    let items: Vec<serde_json::Value> = changes
        .iter()
        .map(|change| {
            json!({
                "ID": change.id.to_string(),
                "CreatedAt": tufa_core::time::format(change.created_at),
                "GUN": change.gun,
                "Version": change.version,
                "SHA256": change.sha256,
                "Category": change.category.as_str(),
            })
        })
        .collect();
    let records = if items.is_empty() { serde_json::Value::Null } else { serde_json::Value::Array(items) };
    Ok(json_response(StatusCode::OK, json!({"count": changes.len(), "records": records}).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: u32, padding: usize) -> Vec<u8> {
        let body = format!(r#"{{"pad":"{}","version":{version}}}"#, "x".repeat(padding));
        tufa_core::metadata::envelope(body.as_bytes(), &[])
    }

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, content) in parts {
            out.extend_from_slice(
                format!("--B\r\nContent-Disposition: form-data; filename=\"{name}\"\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--B--\r\n");
        out
    }

    #[test]
    fn the_largest_file_keeps_the_body_buffer_and_the_others_are_copied() {
        let (root, old_targets, targets, timestamp) = (file(1, 10), file(1, 20), file(2, 5000), file(3, 10));
        let parts: [(&str, &[u8]); 4] =
            [("root.json", &root), ("targets", &old_targets), ("timestamp", &timestamp), ("targets", &targets)];
        let data = body(&parts);
        let buffer = data.as_ptr();
        let uploads = parse_update(data, "B", 10).unwrap();
        // The client's timestamp is ignored; a later part for a role replaces an earlier one.
        let roles: Vec<&str> = uploads.keys().map(RoleName::as_str).collect();
        assert_eq!(roles, ["root", "targets"]);
        assert_eq!(uploads[&RoleName::base(BaseRole::Root)], root);
        let kept = &uploads[&RoleName::base(BaseRole::Targets)];
        assert_eq!(kept, &targets);
        // Moved to the front of the request body's own buffer, not copied.
        assert_eq!(kept.as_ptr(), buffer);
    }

    #[test]
    fn ignored_timestamps_and_unnamed_parts_are_refused() {
        // A client's timestamp is dropped here, so here is where it must be found to be metadata;
        // every other file is parsed by the verifier.
        let error = parse_update(body(&[("timestamp", b"{}")]), "B", 10).unwrap_err();
        assert_eq!(error.to_string(), "malformed JSON in timestamp: metadata has no \"signed\" object");
        let uploads = parse_update(body(&[("root", b"{}")]), "B", 10).unwrap();
        assert_eq!(uploads[&RoleName::base(BaseRole::Root)], b"{}");
        let error = parse_update(body(&[("", &file(1, 1))]), "B", 10).unwrap_err();
        assert_eq!(error.to_string(), "no filename");
    }
}
