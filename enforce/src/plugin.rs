//! The Docker authorization plugin served on a Unix socket (HTTP/1.1 via hyper): `/Plugin.Activate`,
//! `/AuthZPlugin.AuthZReq` (decided by [`crate::authz::decide`] with the policy in force) and
//! `/AuthZPlugin.AuthZRes` (always allowed), with bounded bodies; and [`UnixDaemonClient`], which asks the Docker
//! daemon about local images over its own socket.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tufa_policy::PolicyHandle;

use crate::authz::{AuthzRequest, AuthzResponse, decide};
use crate::{DaemonClient, ImageVerifier};

/// The plugin's default socket: the daemon finds plugin `tufa` there.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/tufa.sock";
/// The Docker daemon's default socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The largest plugin request body accepted: an AuthZReq carries a JSON body of up to 1 MiB in base64 plus headers.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
/// The largest daemon answer about an image that is read.
const MAX_DAEMON_BYTES: usize = 4 * 1024 * 1024;
/// How long the daemon gets to answer about an image.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client gets to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);
/// The content type of plugin API answers.
const PLUGIN_CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Where the plugin listens and how it reaches the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// The plugin's socket (its directory is created with mode 0755; the socket gets mode 0660).
    pub socket: PathBuf,
    /// The Docker daemon's socket, asked about local images.
    pub docker_socket: PathBuf,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self { socket: PathBuf::from(DEFAULT_SOCKET), docker_socket: PathBuf::from(DEFAULT_DOCKER_SOCKET) }
    }
}

/// Why the plugin could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The socket's directory could not be created.
    #[error("cannot create the plugin socket directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Something that is not a socket is at the socket path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another process serves the socket.
    #[error("{0} is in use by a running process")]
    InUse(PathBuf),
    /// The socket could not be bound or its mode set.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Binds the plugin socket: creates its directory (0755), replaces a stale socket (one nobody answers on), refuses
/// to replace anything else, and sets the socket's mode to 0660.
///
/// # Errors
/// A [`PluginError`] naming the path.
pub async fn bind_socket(path: &Path) -> Result<UnixListener, PluginError> {
    if let Some(directory) = path.parent()
        && !directory.as_os_str().is_empty()
        && !directory.exists()
    {
        std::fs::create_dir_all(directory)
            .and_then(|()| std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755)))
            .map_err(|source| PluginError::Directory { path: directory.to_owned(), source })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(PluginError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(|source| PluginError::Bind { path: path.to_owned(), source })?;
        }
        Ok(_) => return Err(PluginError::NotASocket(path.to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(PluginError::Bind { path: path.to_owned(), source }),
    }
    let listener = UnixListener::bind(path).map_err(|source| PluginError::Bind { path: path.to_owned(), source })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|source| PluginError::Bind { path: path.to_owned(), source })?;
    Ok(listener)
}

/// Serves the plugin on `config.socket` until `shutdown` completes, then stops accepting, lets open requests finish
/// (for a short while) and removes the socket.
///
/// # Errors
/// A [`PluginError`] when the socket cannot be bound.
pub async fn serve_plugin(
    config: PluginConfig,
    policy: PolicyHandle,
    verifier: Arc<dyn ImageVerifier>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), PluginError> {
    let listener = bind_socket(&config.socket).await?;
    let daemon: Arc<dyn DaemonClient> = Arc::new(UnixDaemonClient::new(config.docker_socket.clone()));
    tracing::info!(socket = %config.socket.display(), "Docker authorization plugin listening");
    serve_listener(listener, policy, verifier, daemon, shutdown).await;
    if let Err(error) = std::fs::remove_file(&config.socket) {
        tracing::warn!(socket = %config.socket.display(), %error, "could not remove the plugin socket");
    }
    Ok(())
}

/// Serves plugin requests on an already bound listener until `shutdown` completes.
pub async fn serve_listener(
    listener: UnixListener,
    policy: PolicyHandle,
    verifier: Arc<dyn ImageVerifier>,
    daemon: Arc<dyn DaemonClient>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let policy = policy.clone();
                    let verifier = Arc::clone(&verifier);
                    let daemon = Arc::clone(&daemon);
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let policy = policy.clone();
                            let verifier = Arc::clone(&verifier);
                            let daemon = Arc::clone(&daemon);
                            async move { Ok::<_, Infallible>(handle(request, &policy, &*verifier, &*daemon).await) }
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "plugin connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a plugin connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// A JSON answer with `status`.
fn reply(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(PLUGIN_CONTENT_TYPE));
    response
}

/// An error answer in the plugin protocol's shape (`{"Err": "..."}`).
fn error_reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, &json!({ "Err": message }))
}

/// Handles one plugin request.
async fn handle(
    request: Request<Incoming>,
    policy: &PolicyHandle,
    verifier: &dyn ImageVerifier,
    daemon: &dyn DaemonClient,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let known = matches!(path.as_str(), "/Plugin.Activate" | "/AuthZPlugin.AuthZReq" | "/AuthZPlugin.AuthZRes");
    if !known {
        return error_reply(StatusCode::NOT_FOUND, &format!("unknown plugin endpoint {path}"));
    }
    if request.method() != Method::POST {
        return error_reply(StatusCode::METHOD_NOT_ALLOWED, &format!("{path} takes POST"));
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return error_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {MAX_REQUEST_BYTES} bytes"),
            );
        }
        Err(error) => {
            return error_reply(StatusCode::BAD_REQUEST, &format!("reading the request body failed: {error}"));
        }
    };
    match path.as_str() {
        "/Plugin.Activate" => reply(StatusCode::OK, &json!({ "Implements": ["authz"] })),
        "/AuthZPlugin.AuthZRes" => reply(StatusCode::OK, &AuthzResponse::allow()),
        _ => {
            let authz: AuthzRequest = match serde_json::from_slice(&body) {
                Ok(authz) => authz,
                Err(error) => {
                    return error_reply(StatusCode::BAD_REQUEST, &format!("the AuthZReq body is not valid: {error}"));
                }
            };
            let policy = policy.current();
            let answer = decide(&authz, &policy, verifier, daemon).await;
            if !answer.allow {
                tracing::info!(
                    user = authz.user.as_deref().unwrap_or_default(),
                    method = authz.request_method.as_deref().unwrap_or_default(),
                    uri = authz.request_uri.as_deref().unwrap_or_default(),
                    msg = answer.msg.as_str(),
                    "Docker request denied"
                );
            }
            reply(StatusCode::OK, &answer)
        }
    }
}

/// Asks the Docker daemon about local images and networks over its Unix socket (`GET /images/{name}/json`,
/// `GET /networks/{id}`).
#[derive(Debug, Clone)]
pub struct UnixDaemonClient {
    socket: PathBuf,
}

impl UnixDaemonClient {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    async fn inspect(&self, reference: &str) -> Result<Option<Vec<String>>, String> {
        match self.get_json(&format!("/images/{}/json", encode_path(reference))).await? {
            Some(body) => parse_inspect(&body).map(Some),
            None => Ok(None),
        }
    }

    async fn network(&self, reference: &str) -> Result<Option<String>, String> {
        let Some(body) = self.get_json(&format!("/networks/{}", encode_path(reference))).await? else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| format!("the daemon's network answer is not JSON: {error}"))?;
        match value.get("Driver") {
            Some(serde_json::Value::String(driver)) => Ok(Some(driver.clone())),
            _ => Err("the daemon's network answer has no Driver".to_owned()),
        }
    }

    /// `GET path` of the daemon: the body of a 200 answer, `None` for 404.
    async fn get_json(&self, path: &str) -> Result<Option<Bytes>, String> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", self.socket.display()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("HTTP handshake with the daemon failed: {error}"))?;
        let driver = tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|error| format!("cannot build the daemon request: {error}"))?;
        let response =
            sender.send_request(request).await.map_err(|error| format!("the daemon request failed: {error}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_DAEMON_BYTES)
            .collect()
            .await
            .map_err(|error| format!("reading the daemon's answer failed: {error}"))?
            .to_bytes();
        driver.abort();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("the daemon answered {status}: {}", text.trim()));
        }
        Ok(Some(body))
    }
}

/// The RepoTags and RepoDigests of an image inspect answer.
fn parse_inspect(body: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("the daemon's image answer is not JSON: {error}"))?;
    let mut names = Vec::new();
    for field in ["RepoTags", "RepoDigests"] {
        match value.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    match item {
                        serde_json::Value::String(name) => names.push(name.clone()),
                        _ => return Err(format!("the daemon's {field} holds a non-string")),
                    }
                }
            }
            Some(_) => return Err(format!("the daemon's {field} is not a list")),
        }
    }
    Ok(names)
}

/// Percent-encodes a reference for a URL path, keeping `/`, `:` and `@` (the daemon's route takes `{name:.*}`).
fn encode_path(reference: &str) -> String {
    let mut out = String::with_capacity(reference.len());
    for byte in reference.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[async_trait::async_trait]
impl DaemonClient for UnixDaemonClient {
    async fn image_repo_digests(&self, reference: &str) -> Result<Option<Vec<String>>, String> {
        tokio::time::timeout(DAEMON_TIMEOUT, self.inspect(reference))
            .await
            .unwrap_or_else(|_| Err(format!("the daemon did not answer within {} seconds", DAEMON_TIMEOUT.as_secs())))
    }

    async fn network_driver(&self, reference: &str) -> Result<Option<String>, String> {
        tokio::time::timeout(DAEMON_TIMEOUT, self.network(reference))
            .await
            .unwrap_or_else(|_| Err(format!("the daemon did not answer within {} seconds", DAEMON_TIMEOUT.as_secs())))
    }
}

#[cfg(test)]
#[path = "plugin_tests.rs"]
mod tests;
