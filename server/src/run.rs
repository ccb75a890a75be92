//! Start-up and shutdown of the tufa-server process: configuration to a running HTTPS server with
//! its store, in-process signer, generated TLS and the background timestamp re-signer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tufa_core::keys::Algorithm;
use tufa_core::names::Gun;

use crate::app::{AppState, HttpSettings, router};
use tufa_common::files;

use crate::auth::{Authenticator, Builtin, TokenMode};
use crate::body::BodyRules;
use crate::config::{AuthConfig, Config, KeyAlgorithm, LogFormat, TlsSource};
use crate::listener::ConnectionSettings;
use crate::metrics::Metrics;
use crate::remote_signer::RemoteSigner;
use crate::service::{Service, ServiceSettings};
use crate::signing::LocalSigner;
use crate::upload::UploadGate;
use crate::{listener, tls};
use tufa_auth::{TokenSettings, TokenVerifier};

/// A start-up failure, reported on stderr with a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    message: String,
    exit_code: u8,
}

impl StartError {
    fn new(message: String) -> StartError {
        StartError { message, exit_code: 1 }
    }

    /// The process exit status: 2 for a configuration the server refuses, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }
}

fn fail(context: &str) -> impl Fn(&dyn std::fmt::Display) -> StartError + '_ {
    move |error| StartError::new(format!("{context}: {error}"))
}

/// Builds the application state over an opened store and the in-process signer.
pub fn state(
    config: &Config,
    store: Arc<dyn tufa_store::Store>,
    signer: Arc<dyn crate::signing::OnlineSigner>,
    auth: Arc<Authenticator>,
) -> AppState {
    let key_algorithm = match config.key_algorithm {
        KeyAlgorithm::Ecdsa => Algorithm::Ecdsa,
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
    };
    let limits = config.limits.update_limits();
    let http = HttpSettings {
        current_max_age: u32::try_from(config.cache.current_max_age).unwrap_or(u32::MAX),
        consistent_max_age: u32::try_from(config.cache.consistent_max_age).unwrap_or(u32::MAX),
        max_body_bytes: config.limits.max_body_bytes,
        max_parts: config.limits.max_parts,
        gun_prefixes: config.gun_prefixes.clone(),
        uploads: UploadGate::new(
            config.uploads.max_concurrent,
            config.uploads.max_buffered_bytes,
            Duration::from_millis(config.uploads.wait_ms),
        ),
    };
    AppState {
        service: Service::new(store, signer, ServiceSettings { key_algorithm, limits }),
        http: Arc::new(http),
        metrics: Arc::new(Metrics::default()),
        auth,
    }
}

/// The listener's connection settings from the configuration.
pub fn connection_settings(config: &Config) -> ConnectionSettings {
    let connections = &config.connections;
    ConnectionSettings {
        handshake_timeout: Duration::from_secs(connections.handshake_timeout_secs),
        first_request_timeout: Duration::from_secs(connections.first_request_timeout_secs),
        idle_timeout: Duration::from_secs(connections.idle_timeout_secs),
        max_connections: connections.max_connections,
        max_concurrent_streams: connections.max_concurrent_streams,
        max_header_bytes: connections.max_header_bytes,
        body: BodyRules {
            timeout: Duration::from_secs(connections.body_timeout_secs),
            min_rate: connections.min_body_rate,
            rate_grace: Duration::from_secs(connections.body_rate_grace_secs),
            // A body left unread is drained up to the largest body the server would have read.
            drain_max_bytes: u64::try_from(config.limits.max_body_bytes).unwrap_or(u64::MAX),
            drain_timeout: BodyRules::default().drain_timeout,
        },
    }
}

/// How often the warning about running without authentication on a non-loopback address repeats.
const INSECURE_WARNING_INTERVAL: Duration = Duration::from_secs(3600);

fn warn_insecure(listen: std::net::SocketAddr) {
    tracing::warn!(
        listen = %listen,
        "running WITHOUT AUTHENTICATION on a non-loopback address (--insecure-no-auth): anyone who reaches \
         this port can delete and re-create every repository"
    );
}

/// Builds the authenticator for the configured mode: reads the token-mode bundle, or makes sure
/// the builtin token service has its keys (sealed under the KEK) and loads them.
async fn authenticator(config: &Config, store: &Arc<dyn tufa_store::Store>) -> Result<Authenticator, StartError> {
    let config_error = |message: String| StartError { exit_code: tufa_common::EXIT_CONFIG, message };
    match &config.auth {
        AuthConfig::None { insecure } => {
            if *insecure {
                let listen = config.listen;
                warn_insecure(listen);
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(INSECURE_WARNING_INTERVAL);
                    ticker.tick().await;
                    loop {
                        ticker.tick().await;
                        warn_insecure(listen);
                    }
                });
            }
            Ok(Authenticator::None)
        }
        AuthConfig::Token(token) => {
            let bundle = tufa_common::files::read_limited(
                "token root certificate bundle",
                &token.root_cert_bundle,
                MAX_BUNDLE_BYTES,
            )
            .map_err(|error| config_error(format!("--auth-token-rootcertbundle: {error}")))?;
            let verifier = TokenVerifier::new(TokenSettings {
                issuer: token.issuer.clone(),
                service: token.service.clone(),
                root_certificates: bundle.to_vec(),
            })
            .map_err(|error| {
                config_error(format!("--auth-token-rootcertbundle {}: {error}", token.root_cert_bundle.display()))
            })?;
            Ok(Authenticator::Token(Box::new(TokenMode { verifier, config: token.clone() })))
        }
        AuthConfig::Builtin(builtin) => {
            let kek = crate::signing::load_checked_kek(store.as_ref(), config)
                .await
                .map_err(|error| StartError { exit_code: error.exit_code(), message: error.to_string() })?;
            let builtin =
                Builtin::start(builtin.clone(), store.clone(), kek).await.map_err(|error| fail("auth")(&error))?;
            Ok(Authenticator::Builtin(Arc::new(builtin)))
        }
    }
}

/// The largest token-mode root bundle read.
const MAX_BUNDLE_BYTES: u64 = 1024 * 1024;

/// How many expiring repositories the re-signer reads per page.
pub const RESIGN_PAGE: i64 = 500;
/// How often the re-signer warns about one repository it cannot refresh.
const RESIGN_WARNING_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Re-signs timestamps (and server-signed snapshots) that expire within `before`, every `interval`.
///
/// Each round pages through every expiring repository in expiry order, so repositories it cannot
/// re-sign (an expired snapshot whose key the publisher holds) never keep others waiting; each of
/// those gets one warning a day and counts in `tufa_resign_skipped_total`.
pub async fn refresh_loop(service: Service, metrics: Arc<Metrics>, interval: Duration, before: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: HashMap<String, std::time::Instant> = HashMap::new();
    loop {
        ticker.tick().await;
        warned.retain(|_, at| at.elapsed() < RESIGN_WARNING_INTERVAL);
        refresh_round(&service, &metrics, before, RESIGN_PAGE, &mut warned).await;
    }
}

/// One round of [`refresh_loop`]: every repository expiring within `before`, `page` at a time.
/// `warned` holds the repositories already warned about (and when).
pub async fn refresh_round(
    service: &Service,
    metrics: &Metrics,
    before: Duration,
    page: i64,
    warned: &mut HashMap<String, std::time::Instant>,
) {
    let deadline = Utc::now() + chrono::Duration::from_std(before).unwrap_or(chrono::Duration::days(1));
    let mut cursor: Option<tufa_store::ExpiringCursor> = None;
    loop {
        let found = match service.store.expiring_page(deadline, cursor.as_ref(), page).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(error = %error, "could not list expiring timestamps");
                return;
            }
        };
        for entry in &found {
            let Ok(gun) = Gun::parse(&entry.gun) else { continue };
            let problem = match service.refresh(&gun, deadline).await {
                Ok(true) => {
                    metrics.resigned();
                    continue;
                }
                Ok(false) => {
                    "its expiring snapshot key is held by the publisher (or another server re-signed it)".to_owned()
                }
                Err(error) => error.to_string(),
            };
            metrics.resign_skipped();
            if !warned.contains_key(&entry.gun) {
                tracing::warn!(gun = %gun, problem, "cannot re-sign an expiring repository; next warning in a day");
                warned.insert(entry.gun.clone(), std::time::Instant::now());
            }
        }
        if found.len() < usize::try_from(page).unwrap_or(usize::MAX) {
            return;
        }
        cursor = found.last().cloned();
    }
}

/// Completes at SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: no new connections, draining open ones");
}

/// What to change when the data directory cannot be created.
const DATA_DIR_HINT: &str = "choose a writable --data-dir or fix the owner of its parent directory";

/// Prints a start-up line meant for people and scripts on stdout in text format; in JSON format
/// it becomes a log event instead, so that every line the server writes is JSON.
fn announce(config: &Config, message: &str) {
    match config.log.format {
        LogFormat::Text => println!("tufa-server: {message}"),
        LogFormat::Json => tracing::info!("{message}"),
    }
}

/// Runs the server until SIGTERM or SIGINT.
///
/// Order matters: the configuration was validated before this is called, and the listener is bound
/// before anything is created on disk, so a busy port or a bad setting leaves no data directory,
/// key file or database behind.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Files the operator supplied are only read, so they are checked before anything is written.
    let supplied_tls = match &config.tls {
        TlsSource::Files { cert, key } => {
            Some(tls::server_config(cert, key, config.tls_client_ca.as_deref()).map_err(|error| fail("TLS")(&error))?)
        }
        TlsSource::Generated { .. } => None,
    };
    let remote = match &config.signer {
        Some(remote) => {
            let signer = RemoteSigner::connect(remote).map_err(|error| fail("signer")(&error))?;
            Some((signer, format!("remote {}", remote.url)))
        }
        None => None,
    };
    // An existing KEK (file or TUFA_KEK) is read and its file mode checked now, before anything is
    // written; a missing KEK file is only created later, once the database says that is safe.
    if config.signer.is_none() && config.kek_exists() {
        crate::kek::load_or_create_kek(&config).map_err(|error| StartError {
            exit_code: tufa_common::EXIT_CONFIG,
            message: format!("key-encryption key: {error}"),
        })?;
    }
    let listener = TcpListener::bind(config.listen).await.map_err(|error| {
        StartError::new(format!(
            "cannot listen on {}: {error}; stop the process using it or choose another --listen",
            config.listen
        ))
    })?;
    let address = listener
        .local_addr()
        .map_err(|error| StartError::new(format!("cannot listen on {}: {error}", config.listen)))?;
    // From here on files may be created: the data directory, the database, the KEK, generated TLS.
    files::create_private_dir(&config.data_dir)
        .map_err(|error| StartError::new(error.with_hint(DATA_DIR_HINT).to_string()))?;
    let store = tufa_store::open(&config.database_url).await.map_err(|error| {
        StartError::new(format!("cannot open the database {}: {error}", config.redacted_database_url()))
    })?;
    let backend = store.backend();
    // With a remote signer this process never loads a KEK or any private key.
    let (signer, signer_summary): (Arc<dyn crate::signing::OnlineSigner>, String) = match remote {
        Some((signer, summary)) => (Arc::new(signer), summary),
        None => {
            let sealing = crate::signing::load_checked_kek(store.as_ref(), &config)
                .await
                .map_err(|error| StartError { exit_code: error.exit_code(), message: error.to_string() })?;
            let summary = format!("in-process (KEK {})", sealing.id());
            (Arc::new(LocalSigner::new(store.clone(), sealing)), summary)
        }
    };
    let tls_config = match (supplied_tls, &config.tls) {
        (Some(tls_config), _) => tls_config,
        (None, TlsSource::Generated { extra_names }) => {
            let generated =
                tls::ensure_generated(&config.data_dir, extra_names).map_err(|error| fail("TLS")(&error))?;
            announce(
                &config,
                &format!("clients must trust the generated CA certificate {}", generated.ca_cert.display()),
            );
            tls::server_config(&generated.cert, &generated.key, config.tls_client_ca.as_deref())
                .map_err(|error| fail("TLS")(&error))?
        }
        (None, TlsSource::Files { cert, key }) => {
            tls::server_config(cert, key, config.tls_client_ca.as_deref()).map_err(|error| fail("TLS")(&error))?
        }
    };
    // A database from a version without the record gets its grants and tag history rebuilt from
    // the stored metadata, once. A failure is reported and retried at the next start; serving
    // does not depend on it.
    if let Err(error) = crate::audit::backfill(store.as_ref()).await {
        tracing::error!(%error, "could not rebuild grants and target history from stored metadata; will retry at the next start");
    }
    let auth = Arc::new(authenticator(&config, &store).await?);
    let auth_mode = auth.mode();
    let state = state(&config, store, signer, auth);
    // `POST /v1/verify` applies the configured policy (reloaded when the file changes), with
    // its rollback state in the data directory; without one, the built-in policy.
    let (verify_policy, unpinned) = match &config.verify.policy {
        Some(path) => {
            let (handle, reloader) = tufa_policy::Reloader::start(path)
                .map_err(|error| StartError::new(format!("the verification policy: {error}")))?;
            reloader.spawn(Duration::from_secs(5));
            (handle, crate::verify::Unpinned::Deny)
        }
        None => (
            tufa_policy::PolicyHandle::new(crate::verify::default_policy().map_err(StartError::new)?),
            crate::verify::Unpinned::TrustOnFirstUse,
        ),
    };
    state.service.set_verifier(crate::verify::PolicyVerifier::local(
        verify_policy,
        config.data_dir.join("verify"),
        state.service.for_verifier(),
        unpinned,
    ));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        store = backend,
        database = %config.redacted_database_url(),
        signer = %signer_summary,
        key_algorithm = %config.key_algorithm,
        auth = auth_mode,
        client_certificates = config.tls_client_ca.is_some(),
        listen = %address,
        "tufa-server {}: store {backend} {}, signer {signer_summary}, keys {}, auth {auth_mode}, listening on https://{address}",
        env!("CARGO_PKG_VERSION"),
        config.redacted_database_url(),
        config.key_algorithm,
    );
    announce(&config, &format!("listening on https://{address}"));
    let refresher = tokio::spawn(refresh_loop(
        state.service.clone(),
        state.metrics.clone(),
        config.timestamp.refresh_interval(),
        config.timestamp.refresh_before(),
    ));
    let checkpointer = crate::audit::Checkpointer::new(state.service.store.clone(), state.service.signer.clone());
    // The checkpoint key exists from the start, so publishes find (and keep) its ID at once.
    if let Err(error) = checkpointer.key().await {
        tracing::warn!(%error, "could not create the audit checkpoint key yet; the checkpointer will retry");
    }
    let checkpoints = tokio::spawn(checkpointer.clone().run(config.audit.checkpoint_interval()));
    let store = state.service.store.clone();
    let index = tokio::spawn(crate::audit::flush_index_loop(store.clone(), crate::audit::INDEX_FLUSH_INTERVAL));
    let connections = connection_settings(&config);
    let served = listener::serve(listener, Some(tls_config), router(state), connections, shutdown_signal()).await;
    refresher.abort();
    checkpoints.abort();
    index.abort();
    if let Err(error) = store.flush_audit_index().await {
        tracing::warn!(%error, "could not move pending audit index rows at shutdown; the next start or query will");
    }
    // A last checkpoint covers everything recorded before shutdown.
    match checkpointer.checkpoint().await {
        Ok(Some(size)) => tracing::info!(size, "signed the audit checkpoint at shutdown"),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "could not sign the audit checkpoint at shutdown"),
    }
    served.map_err(|error| fail("server")(&error))
}
