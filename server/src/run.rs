//! Start-up and shutdown of the tufa-server process: configuration to a running HTTPS server with
//! its store, in-process signer, generated TLS and the background timestamp re-signer.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tufa_core::keys::Algorithm;
use tufa_core::names::Gun;
use tufa_core::update::Limits;

use crate::app::{AppState, HttpSettings, router};
use crate::config::{Config, KeyAlgorithm, LogFormat, TlsSource};
use crate::metrics::Metrics;
use crate::remote_signer::RemoteSigner;
use crate::service::{Service, ServiceSettings};
use crate::signing::LocalSigner;
use crate::{listener, tls};

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

/// Sets up logging from the configuration.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if result.is_err() {
        eprintln!("tufa-server: logging was already initialised");
    }
}

/// Builds the application state over an opened store and the in-process signer.
pub fn state(
    config: &Config,
    store: Arc<dyn tufa_store::Store>,
    signer: Arc<dyn crate::signing::OnlineSigner>,
) -> AppState {
    let key_algorithm = match config.key_algorithm {
        KeyAlgorithm::Ecdsa => Algorithm::Ecdsa,
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
    };
    let limits = Limits { max_delegation_depth: config.limits.max_delegation_depth, ..Limits::default() };
    let http = HttpSettings {
        current_max_age: u32::try_from(config.cache.current_max_age).unwrap_or(u32::MAX),
        consistent_max_age: u32::try_from(config.cache.consistent_max_age).unwrap_or(u32::MAX),
        max_body_bytes: config.limits.max_body_bytes,
        max_parts: config.limits.max_parts,
        gun_prefixes: config.gun_prefixes.clone(),
    };
    AppState {
        service: Service { store, signer, settings: ServiceSettings { key_algorithm, limits } },
        http: Arc::new(http),
        metrics: Arc::new(Metrics::default()),
    }
}

/// Re-signs timestamps (and server-signed snapshots) that expire within `before`, every `interval`.
pub async fn refresh_loop(service: Service, interval: Duration, before: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let deadline = Utc::now() + chrono::Duration::from_std(before).unwrap_or(chrono::Duration::days(1));
        let guns = match service.store.expiring(deadline, 500).await {
            Ok(guns) => guns,
            Err(error) => {
                tracing::warn!(error = %error, "could not list expiring timestamps");
                continue;
            }
        };
        for gun in guns {
            let Ok(gun) = Gun::parse(&gun) else { continue };
            if let Err(error) = service.refresh(&gun, deadline).await {
                tracing::warn!(gun = %gun, error = %error, "could not re-sign the timestamp");
            }
        }
    }
}

async fn shutdown_signal() {
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

/// Creates `dir` (and parents) readable only by the owner, if it does not exist yet.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), StartError> {
    create_private_dir(&config.data_dir).map_err(|error| fail("cannot create the data directory")(&error))?;
    let database_url = tufa_store::DatabaseUrl::parse(config.database_url.expose())
        .map_err(|error| StartError::new(format!("cannot open the database: {error}")))?;
    let store = tufa_store::open(&database_url).await.map_err(|error| {
        StartError::new(format!("cannot open the database {}: {error}", config.redacted_database_url()))
    })?;
    tracing::info!(database = %config.redacted_database_url(), backend = store.backend(), "database ready");
    // With a remote signer this process never loads a KEK or any private key.
    let signer: Arc<dyn crate::signing::OnlineSigner> = match &config.signer {
        Some(remote) => {
            tracing::info!(signer = %remote.url, "signing through a remote signer");
            Arc::new(RemoteSigner::connect(remote).map_err(|error| fail("signer")(&error))?)
        }
        None => {
            let sealing = crate::signing::load_checked_kek(store.as_ref(), &config)
                .await
                .map_err(|error| StartError { exit_code: error.exit_code(), message: error.to_string() })?;
            Arc::new(LocalSigner::new(store.clone(), sealing))
        }
    };
    let tls_config = match &config.tls {
        TlsSource::Files { cert, key } => tls::server_config(cert, key, config.tls_client_ca.as_deref()),
        TlsSource::Generated { extra_names } => {
            let generated =
                tls::ensure_generated(&config.data_dir, extra_names).map_err(|error| fail("TLS")(&error))?;
            println!("tufa-server: clients must trust the generated CA certificate {}", generated.ca_cert.display());
            tls::server_config(&generated.cert, &generated.key, config.tls_client_ca.as_deref())
        }
    }
    .map_err(|error| fail("TLS")(&error))?;
    let state = state(&config, store, signer);
    let listener = TcpListener::bind(config.listen).await.map_err(|error| fail("cannot listen")(&error))?;
    let address = listener.local_addr().map_err(|error| fail("cannot listen")(&error))?;
    println!("tufa-server: listening on https://{address}");
    let refresher = tokio::spawn(refresh_loop(
        state.service.clone(),
        config.timestamp.refresh_interval(),
        config.timestamp.refresh_before(),
    ));
    let served = listener::serve(listener, Some(tls_config), router(state), shutdown_signal()).await;
    refresher.abort();
    served.map_err(|error| fail("server")(&error))
}
