//! The enforcement subcommands: `tufa-server verify IMAGE` (for Slurm prologs and container
//! wrappers: exit 0 allowed, 1 denied, 2 error), `tufa-server verify-server` (`POST /v1/verify`
//! and the Kubernetes admission webhooks `/validate` and `/mutate` over HTTPS) and
//! `tufa-server authz-plugin` (the Docker Engine authorization plugin on a Unix socket). Each
//! reads a trust policy file (tufa-policy) and verifies with [`crate::verify::PolicyVerifier`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use serde_json::json;
use tufa_enforce::ImageVerifier;
use tufa_enforce::admission::ReviewKind;
use tufa_policy::{ImageRef, PolicyHandle, Reloader};

use crate::config::{Config, TlsSource};
use crate::verify::{Answer, PolicyVerifier, ServerOverride, answer};

/// Exit status: the image may run.
pub const EXIT_ALLOWED: u8 = 0;
/// Exit status: the image is denied.
pub const EXIT_DENIED: u8 = 1;
/// Exit status: bad input, a bad policy, or trust could not be decided.
pub const EXIT_ERROR: u8 = 2;

/// Where trust data comes from, replacing the policy's `[trust-server]` settings.
#[derive(Args, Clone, Debug, PartialEq, Eq, Default)]
pub struct TrustArgs {
    /// The trust policy file (TOML; or JSON, such as a whole daemon.json with a `content-trust` block).
    #[arg(long, value_name = "FILE", env = "TUFA_POLICY", hide_env_values = true)]
    pub policy: PathBuf,
    /// The Notary-compatible trust server for every registry (replaces the policy's `[trust-server] url`).
    #[arg(long = "trust-server", value_name = "URL", env = "TUFA_TRUST_SERVER", hide_env_values = true)]
    pub trust_server: Option<String>,
    /// A PEM file of CA certificates for the trust server (replaces the policy's).
    #[arg(long = "trust-ca", value_name = "FILE", env = "TUFA_TRUST_CA", hide_env_values = true)]
    pub trust_ca: Option<PathBuf>,
    /// User name at the trust server's token service (with --password-file).
    #[arg(long, value_name = "NAME", requires = "password_file")]
    pub username: Option<String>,
    /// A file holding the password of --username.
    #[arg(long = "password-file", value_name = "FILE", requires = "username", conflicts_with = "token_file")]
    pub password_file: Option<PathBuf>,
    /// A file holding a tufa API token for the trust server.
    #[arg(long = "token-file", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where rollback-protection state and cached trust data are kept [default: <data-dir>/verify].
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `tufa-server verify`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct VerifyArgs {
    /// The image: `registry/name:tag`, `name@sha256:<hex>`, `docker://…` (Docker's defaults apply:
    /// docker.io, library/, latest).
    pub image: String,
    /// Where trust data comes from.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the answer as one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// `tufa-server verify-server`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct VerifyServerArgs {
    /// Where trust data comes from.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// How often the policy file is checked for changes, in seconds.
    #[arg(long = "policy-reload-secs", value_name = "SECONDS", default_value_t = 5)]
    pub policy_reload_secs: u64,
}

/// `tufa-server authz-plugin`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct AuthzPluginArgs {
    /// Where trust data comes from.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The plugin's socket; Docker finds a plugin named `tufa` at /run/docker/plugins/tufa.sock.
    #[arg(long, value_name = "PATH", default_value = tufa_enforce::plugin::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The Docker daemon's socket, asked which digests a local image has.
    #[arg(long = "docker-socket", value_name = "PATH", default_value = tufa_enforce::plugin::DEFAULT_DOCKER_SOCKET)]
    pub docker_socket: PathBuf,
    /// How often the policy file is checked for changes, in seconds.
    #[arg(long = "policy-reload-secs", value_name = "SECONDS", default_value_t = 5)]
    pub policy_reload_secs: u64,
}

impl TrustArgs {
    /// The command line's replacements for the policy's trust-server settings.
    fn server_override(&self) -> ServerOverride {
        let credentials = match (&self.username, &self.password_file, &self.token_file) {
            (Some(username), Some(password_file), _) => Some(tufa_policy::Credentials::Password {
                username: username.clone(),
                password_file: password_file.clone(),
            }),
            (_, _, Some(token_file)) => Some(tufa_policy::Credentials::Token { token_file: token_file.clone() }),
            _ => None,
        };
        ServerOverride { url: self.trust_server.clone(), ca: self.trust_ca.clone(), credentials }
    }

    /// The verifier over the policy in `handle`.
    fn verifier(&self, config: &Config, handle: PolicyHandle) -> PolicyVerifier {
        let state_dir = self.state_dir.clone().unwrap_or_else(|| config.data_dir.join("verify"));
        PolicyVerifier::remote(handle, state_dir, self.server_override())
    }
}

/// Runs `tufa-server verify`: prints the answer and returns the exit status.
pub async fn run_verify(config: &Config, args: &VerifyArgs, out: &mut impl Write) -> u8 {
    let policy = match tufa_policy::Policy::load(&args.trust.policy) {
        Ok(policy) => policy,
        Err(error) => return report_error(out, args.json, &args.image, &error.to_string()),
    };
    let verifier = args.trust.verifier(config, PolicyHandle::new(policy));
    let answer = match ImageRef::parse(&args.image) {
        Ok(reference) => answer(&reference, &verifier).await,
        Err(error) => return report_error(out, args.json, &args.image, &error.to_string()),
    };
    let status = if answer.undecided {
        EXIT_ERROR
    } else if answer.allowed {
        EXIT_ALLOWED
    } else {
        EXIT_DENIED
    };
    let printed = if args.json {
        serde_json::to_string(&answer).map_err(std::io::Error::other).and_then(|line| writeln!(out, "{line}"))
    } else {
        writeln!(out, "{}", sentence(&answer))
    };
    match printed {
        Ok(()) => status,
        Err(_) => EXIT_ERROR,
    }
}

/// The answer as one line for a person.
fn sentence(answer: &Answer) -> String {
    match (answer.trusted, answer.allowed) {
        (true, _) => format!(
            "trusted: {} is {} signed by {}",
            answer.image,
            answer.digest.as_deref().unwrap_or("-"),
            answer.roles.join(", ")
        ),
        (false, true) => format!("allowed: {}: {}", answer.image, answer.reason),
        (false, false) if answer.undecided => format!("error: {}", answer.reason),
        (false, false) => format!("denied: {}", answer.reason),
    }
}

/// Prints an error about `image` and returns [`EXIT_ERROR`].
fn report_error(out: &mut impl Write, json: bool, image: &str, reason: &str) -> u8 {
    let _ = if json {
        writeln!(out, "{}", json!({"image": image, "error": reason}))
    } else {
        writeln!(out, "error: {image}: {reason}")
    };
    EXIT_ERROR
}

/// The policy file loaded and reloaded every `interval` (a bad reload keeps the previous policy
/// and is logged).
fn watched_policy(args: &TrustArgs, interval: u64) -> Result<PolicyHandle, String> {
    let (handle, reloader) = Reloader::start(&args.policy).map_err(|error| error.to_string())?;
    reloader.spawn(Duration::from_secs(interval.max(1)));
    Ok(handle)
}

/// The shared state of the verification server's handlers.
#[derive(Clone)]
struct VerifyState {
    verifier: Arc<PolicyVerifier>,
}

/// `value` as a JSON response with `status`.
fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Largest `POST /v1/verify` body.
const MAX_VERIFY_BODY: usize = 16 * 1024;

/// Why a `POST /v1/verify` body was refused: 413 or 400, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVerifyBody {
    /// The HTTP status.
    pub status: StatusCode,
    /// The reason, answered as `{"error": ...}`.
    pub message: String,
}

impl IntoResponse for BadVerifyBody {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({"error": self.message}))
    }
}

/// The image a `POST /v1/verify` body (`{"image": "..."}`, at most 16 KiB) names, or why it is
/// refused: too large, malformed, or naming no valid image.
pub fn verify_body(body: &[u8]) -> Result<ImageRef, BadVerifyBody> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        image: String,
    }
    let bad = |message: String| BadVerifyBody { status: StatusCode::BAD_REQUEST, message };
    if body.len() > MAX_VERIFY_BODY {
        return Err(BadVerifyBody {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: "the request is larger than 16 KiB".to_owned(),
        });
    }
    let request: Request = serde_json::from_slice(body)
        .map_err(|error| bad(format!("the body must be {{\"image\": \"<reference>\"}}: {error}")))?;
    ImageRef::parse(&request.image).map_err(|error| bad(format!("image {}: {error}", shown(&request.image))))
}

/// `text` quoted for an error message, cut to its first 200 characters when longer.
fn shown(text: &str) -> String {
    const SHOWN: usize = 200;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}...", text.get(..end).unwrap_or_default()),
        None => format!("{text:?}"),
    }
}

/// The answer of `POST /v1/verify` about `image`: 200, or 503 when trust could not be decided.
pub async fn verify_response(verifier: &PolicyVerifier, image: &ImageRef) -> Response {
    let answer = answer(image, verifier).await;
    let status = if answer.undecided { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    json_response(status, &answer)
}

/// The answer to an admission review over tufa-enforce's limit.
const REVIEW_TOO_LARGE: &str = "the admission review is larger than 3 MiB";

/// A body the extractor refused (too large, or cut off), answered as JSON with its status.
fn body_refused(rejection: &BytesRejection, too_large: &str) -> Response {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        too_large.to_owned()
    } else {
        format!("the request body could not be read: {}", rejection.body_text())
    };
    json_response(status, &json!({"error": message}))
}

async fn verify_handler(State(state): State<VerifyState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_refused(&rejection, "the request is larger than 16 KiB"),
    };
    match verify_body(&body) {
        Ok(image) => verify_response(&state.verifier, &image).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn review_handler(state: &VerifyState, body: &[u8], kind: ReviewKind) -> Response {
    let policy = state.verifier.policy();
    let verifier: &dyn ImageVerifier = state.verifier.as_ref();
    match tufa_enforce::admission::review(body, kind, &policy, verifier).await {
        Ok(review) => ([(header::CONTENT_TYPE, "application/json")], review).into_response(),
        Err(error) => json_response(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            &json!({"error": error.to_string()}),
        ),
    }
}

async fn validate_handler(State(state): State<VerifyState>, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(body) => review_handler(&state, &body, ReviewKind::Validate).await,
        Err(rejection) => body_refused(&rejection, REVIEW_TOO_LARGE),
    }
}

async fn mutate_handler(State(state): State<VerifyState>, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(body) => review_handler(&state, &body, ReviewKind::Mutate).await,
        Err(rejection) => body_refused(&rejection, REVIEW_TOO_LARGE),
    }
}

/// The verification server's routes: `POST /v1/verify`, `POST /validate`, `POST /mutate`,
/// `GET /healthz`. Bodies are bounded (admission reviews by tufa-enforce's limit).
pub fn verify_router(verifier: Arc<PolicyVerifier>) -> Router {
    let limit = tufa_enforce::admission::MAX_REVIEW_BYTES.saturating_add(1);
    Router::new()
        .route(
            "/v1/verify",
            post(verify_handler).layer(axum::extract::DefaultBodyLimit::max(MAX_VERIFY_BODY.saturating_add(1))),
        )
        .route("/validate", post(validate_handler))
        .route("/mutate", post(mutate_handler))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(VerifyState { verifier })
}

/// Runs `tufa-server verify-server` until SIGINT or SIGTERM.
pub async fn run_verify_server(config: &Config, args: &VerifyServerArgs) -> Result<(), String> {
    let handle = watched_policy(&args.trust, args.policy_reload_secs)?;
    let verifier = Arc::new(args.trust.verifier(config, handle));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let tls = match &config.tls {
        TlsSource::Files { cert, key } => crate::tls::server_config(cert, key, config.tls_client_ca.as_deref()),
        TlsSource::Generated { extra_names } => {
            tufa_common::files::create_private_dir(&config.data_dir).map_err(|error| error.to_string())?;
            let generated =
                crate::tls::ensure_generated(&config.data_dir, extra_names).map_err(|error| error.to_string())?;
            eprintln!(
                "tufa-server verify-server: clients must trust the generated CA certificate {}",
                generated.ca_cert.display()
            );
            crate::tls::server_config(&generated.cert, &generated.key, config.tls_client_ca.as_deref())
        }
    }
    .map_err(|error| error.to_string())?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    tracing::info!(listen = %address, policy = %args.trust.policy.display(), "verification server listening");
    eprintln!("tufa-server verify-server: listening on https://{address}");
    crate::listener::serve(
        listener,
        Some(tls),
        verify_router(verifier),
        crate::run::connection_settings(config),
        crate::run::shutdown_signal(),
    )
    .await
    .map_err(|error| error.to_string())
}

/// Runs `tufa-server authz-plugin` until SIGINT or SIGTERM.
pub async fn run_authz_plugin(config: &Config, args: &AuthzPluginArgs) -> Result<(), String> {
    let handle = watched_policy(&args.trust, args.policy_reload_secs)?;
    let verifier: Arc<dyn ImageVerifier> = Arc::new(args.trust.verifier(config, handle.clone()));
    let plugin =
        tufa_enforce::plugin::PluginConfig { socket: args.socket.clone(), docker_socket: args.docker_socket.clone() };
    eprintln!("tufa-server authz-plugin: listening on {}", args.socket.display());
    tufa_enforce::plugin::serve_plugin(plugin, handle, verifier, crate::run::shutdown_signal())
        .await
        .map_err(|error| error.to_string())
}
