//! The one place where errors become HTTP: notary's error codes, messages and statuses (spec
//! §1.9). Internal error text is logged here once and never sent to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tufa_core::update::UpdateError;
use tufa_store::StoreError;

use crate::signing::SignerError;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing stored under this name (`METADATA_NOT_FOUND`, detail `{}`).
    #[error("metadata not found")]
    MetadataNotFound,
    /// No route matched (`METADATA_NOT_FOUND` without detail).
    #[error("no such route")]
    NoRoute,
    /// A multipart part has no filename.
    #[error("no filename")]
    NoFilename,
    /// A part names an invalid role.
    #[error("invalid role {0:?}")]
    InvalidRole(String),
    /// A part is not JSON metadata.
    #[error("malformed JSON in {0}")]
    MalformedJson(String),
    /// The body is not a usable multipart upload.
    #[error("malformed upload: {0}")]
    MalformedUpload(String),
    /// The body exceeds the configured limit.
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time or arrived too slowly (`408`, `MALFORMED_UPLOAD`).
    #[error("request body cut: {0}")]
    BodyCut(String),
    /// The server is at its bound on uploads in progress (`503`, `UNAVAILABLE`); a client may retry.
    #[error("busy: {0}")]
    Busy(String),
    /// The update failed validation.
    #[error("invalid update: {0}")]
    InvalidUpdate(UpdateError),
    /// A newer version is already stored, or a concurrent update won.
    #[error("old version of {0}")]
    OldVersion(String),
    /// The GUN is not acceptable for this server.
    #[error("invalid GUN: {0}")]
    InvalidGun(String),
    /// Query parameters are invalid.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// Storage failed while writing.
    #[error("storage failure while updating: {0}")]
    Updating(String),
    /// The database or the signer cannot be reached right now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request's credentials are missing, invalid or do not grant what it needs: 401 with a
    /// bearer challenge and distribution's `UNAUTHORIZED` body.
    #[error("unauthorized")]
    Unauthorized {
        /// The `WWW-Authenticate` value.
        challenge: String,
        /// What the request needed.
        required: Vec<tufa_auth::Access>,
    },
    /// The caller is known but the request is refused for a reason a token cannot change (`DENIED`).
    #[error("denied: {0}")]
    Denied(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::OldVersion { role } => Self::OldVersion(role),
            StoreError::Unavailable(message) => Self::Unavailable(format!("database: {message}")),
            StoreError::Internal(message) | StoreError::Conflict(message) | StoreError::NotFound(message) => {
                Self::Internal(format!("database: {message}"))
            }
        }
    }
}

impl From<SignerError> for ApiError {
    fn from(error: SignerError) -> Self {
        match error {
            SignerError::Unavailable(message) => Self::Unavailable(format!("signer: {message}")),
            other => Self::Internal(format!("signer: {other}")),
        }
    }
}

impl ApiError {
    /// A refused update: `MALFORMED_JSON` for a file that is not metadata, `INVALID_UPDATE` otherwise.
    pub fn of_update(error: UpdateError) -> Self {
        match error {
            UpdateError::Malformed(problem) => Self::MalformedJson(problem),
            error => Self::InvalidUpdate(error),
        }
    }

    /// Status, code, message and detail of the error body.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, Option<Value>) {
        match self {
            Self::MetadataNotFound => (
                StatusCode::NOT_FOUND,
                "METADATA_NOT_FOUND",
                "You have requested metadata that does not exist.",
                Some(json!({})),
            ),
            Self::NoRoute => {
                (StatusCode::NOT_FOUND, "METADATA_NOT_FOUND", "You have requested metadata that does not exist.", None)
            }
            Self::NoFilename => (StatusCode::BAD_REQUEST, "NO_FILENAME", "No file/role name provided.", None),
            Self::InvalidRole(role) => (
                StatusCode::BAD_REQUEST,
                "INVALID_ROLE",
                "The role you are attempting to operate on is invalid.",
                Some(Value::String(role.chars().take(300).collect())),
            ),
            Self::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                "JSON sent by the client could not be parsed by the server",
                None,
            ),
            Self::MalformedUpload(reason) => (
                StatusCode::BAD_REQUEST,
                "MALFORMED_UPLOAD",
                "The body of your request is malformed.",
                Some(Value::String(reason.clone())),
            ),
            Self::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "MALFORMED_UPLOAD",
                "The body of your request is malformed.",
                Some(Value::String(format!("request body exceeds the limit of {limit} bytes"))),
            ),
            Self::BodyCut(reason) => (
                StatusCode::REQUEST_TIMEOUT,
                "MALFORMED_UPLOAD",
                "The body of your request is malformed.",
                Some(Value::String(reason.clone())),
            ),
            Self::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is temporarily unavailable; try again later.",
                None,
            ),
            Self::InvalidUpdate(error) => (
                StatusCode::BAD_REQUEST,
                "INVALID_UPDATE",
                "Update sent by the client is invalid.",
                update_detail(error),
            ),
            Self::OldVersion(_) => (
                StatusCode::BAD_REQUEST,
                "VERSION",
                "A newer version of metadata is already available.",
                Some(json!({})),
            ),
            Self::InvalidGun(reason) => (
                StatusCode::BAD_REQUEST,
                "INVALID_GUN",
                "The server does not support actions on images of this name.",
                Some(Value::String(reason.clone())),
            ),
            Self::InvalidParameters(reason) => (
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETERS",
                "The parameters provided are not valid.",
                Some(Value::String(reason.clone())),
            ),
            Self::Updating(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "UPDATING",
                "An error has occurred while updating the TUF repository.",
                None,
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is temporarily unavailable; try again later.",
                None,
            ),
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required", None),
            Self::Denied(reason) => (
                StatusCode::FORBIDDEN,
                "DENIED",
                "requested access to the resource is denied",
                Some(Value::String(reason.clone())),
            ),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "unknown error", None),
        }
    }
}

/// The structured detail notary clients parse for `INVALID_UPDATE` (spec §1.9). Messages are
/// bounded so the whole body stays under the 1 KiB clients read.
fn update_detail(error: &UpdateError) -> Option<Value> {
    let short = |message: &str| -> String { message.chars().take(600).collect() };
    match error {
        UpdateError::Validation(msg) => Some(json!({"Name": "ErrValidation", "Error": {"Msg": short(msg)}})),
        UpdateError::BadHierarchy { missing, msg } => {
            Some(json!({"Name": "ErrBadHierarchy", "Error": {"Missing": missing, "Msg": short(msg)}}))
        }
        UpdateError::BadRoot(msg) => Some(json!({"Name": "ErrBadRoot", "Error": {"Msg": short(msg)}})),
        UpdateError::BadTargets(msg) => Some(json!({"Name": "ErrBadTargets", "Error": {"Msg": short(msg)}})),
        UpdateError::BadSnapshot(msg) => Some(json!({"Name": "ErrBadSnapshot", "Error": {"Msg": short(msg)}})),
        // A malformed file is answered as `MALFORMED_JSON` (see `ApiError::of_update`), never with this detail.
        UpdateError::StoredState(_) | UpdateError::Malformed(_) => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Unauthorized { challenge, required } = &self {
            let mut body = tufa_auth::unauthorized_body(required).to_string();
            body.push('\n');
            let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            if let Ok(value) = HeaderValue::from_str(challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
            return response;
        }
        let (status, code, message, detail) = self.parts();
        // Messages quote what a client sent (names, parse errors): escaped for the text log, and
        // only when the line is logged (a field is evaluated only for an enabled level).
        let logged = || tufa_core::names::printable(&self.to_string(), 2048);
        if let Self::Busy(_) = self {
            // Load shedding is expected under load; it is not a failure of the server.
            tracing::info!(error = %logged(), code, "request refused for now");
        } else if status.is_server_error() {
            tracing::error!(error = %logged(), code, "request failed");
        } else {
            tracing::debug!(error = %logged(), code, "request rejected");
        }
        let mut entry = json!({"code": code, "message": message});
        if let (Some(detail), Value::Object(map)) = (detail, &mut entry) {
            map.insert("detail".into(), detail);
        }
        let mut body = json!({"errors": [entry]}).to_string();
        body.push('\n');
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        response
    }
}
