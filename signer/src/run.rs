//! What the binary does with a resolved [`Config`]: open the store and backend, serve gRPC until
//! SIGTERM/SIGINT, print the audit trail, re-seal keys under the active KEK.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tufa_core::keys::Algorithm;

use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::software::{KekError, KeyRing, SoftwareBackend, kek_env_var};
use crate::backend::{BackendError, KeyBackend};
use crate::config::{BackendSettings, Config, ConfigError, Database, Pkcs11Settings, SoftwareSettings};
use crate::grpc::{self, ServeError, TlsMaterial};
use crate::service::SignerService;
use crate::store::{EventFilter, MAX_EVENT_PAGE, Store, StoreError};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Keys re-sealed per database round trip.
const RESEAL_BATCH: u32 = 100;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key-encryption keys are unusable.
    #[error(transparent)]
    Kek(#[from] KekError),
    /// The backend could not be opened or is unhealthy.
    #[error("key backend: {0}")]
    Backend(#[from] BackendError),
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The listener failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The database holds software keys that the configured KEKs cannot open.
    #[error("{0}")]
    KekMismatch(String),
    /// Anything else (I/O on the data directory, stdout).
    #[error("{0}")]
    Other(String),
}

impl RunError {
    /// The process exit status: 2 for configured KEKs that do not fit the database (a
    /// configuration error), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::KekMismatch(_) => 2,
            _ => 1,
        }
    }
}

/// Refuses `ring` unless every KEK that sealed a software key in `store` is configured and
/// opens one of those keys. Without this check a signer with the wrong KEK would start, report
/// healthy, and fail every signature with those keys.
pub async fn check_sealed_keys(store: &Store, ring: &KeyRing) -> Result<(), RunError> {
    let configured: Vec<&str> = ring.names().collect();
    for name in store.sealed_with_names(SoftwareBackend::NAME).await? {
        let Some(sample) = store.key_sealed_with(SoftwareBackend::NAME, &name).await? else { continue };
        if !configured.contains(&name.as_str()) {
            return Err(RunError::KekMismatch(format!(
                "the database holds software keys sealed with KEK {name:?} (for example key {}), which is not \
                 configured (configured: {}); add it as a [[software.kek]] entry or set {}",
                sample.key_id,
                configured.join(", "),
                kek_env_var(&name)
            )));
        }
        let opened = Algorithm::parse(&sample.algorithm).map_err(|error| error.to_string()).and_then(|algorithm| {
            ring.open(&sample.key_id, algorithm, &sample.handle).map_err(|error| error.to_string())
        });
        if let Err(reason) = opened {
            return Err(RunError::KekMismatch(format!(
                "the configured KEK {name:?} cannot open key {}, which the database records as sealed with it \
                 ({reason}): it is not the KEK that sealed the keys; configure the right one",
                sample.key_id
            )));
        }
    }
    Ok(())
}

/// Installs the log subscriber (stderr; `config.log` is a tracing filter).
pub fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn create_private_dir(dir: &Path) -> Result<(), RunError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|error| RunError::Other(format!("cannot create the data directory {}: {error}", dir.display())))
}

/// Opens and migrates the database.
pub async fn open_store(config: &Config) -> Result<Store, RunError> {
    let store = match &config.database {
        Database::Url(url) => Store::connect(&tufa_store::DatabaseUrl::parse(url).map_err(StoreError::from)?).await?,
        Database::SqliteFile(path) => {
            if let Some(parent) = path.parent() {
                create_private_dir(parent)?;
            }
            Store::open_sqlite_file(path).await?
        }
    };
    store.migrate().await?;
    Ok(store)
}

/// Loads the software backend's key ring from the configured KEK files and the environment.
pub fn open_software_backend(settings: &SoftwareSettings) -> Result<SoftwareBackend, RunError> {
    // Variables whose name or value is not Unicode cannot be KEKs; skip them instead of panicking.
    let environment =
        std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let ring = KeyRing::load(&settings.keks, settings.active_kek.as_deref(), environment)?;
    tracing::info!(active = ring.active_name(), keks = ?ring.names().collect::<Vec<_>>(), "key-encryption keys loaded");
    Ok(SoftwareBackend::new(ring))
}

/// Opens the PKCS#11 backend (blocking token calls run off the async runtime).
pub async fn open_pkcs11_backend(settings: &Pkcs11Settings) -> Result<Arc<dyn KeyBackend>, RunError> {
    tracing::info!(
        module = %settings.module.display(),
        token = ?settings.token_label,
        slot = ?settings.slot,
        sessions = settings.sessions,
        "opening PKCS#11 token"
    );
    let settings = settings.clone();
    let backend = tokio::task::spawn_blocking(move || Pkcs11Backend::open(&settings))
        .await
        .map_err(|error| RunError::Other(format!("opening the PKCS#11 token failed: {error}")))??;
    Ok(Arc::new(backend))
}

/// Opens the configured backend.
pub async fn open_backend(config: &Config) -> Result<Arc<dyn KeyBackend>, RunError> {
    match &config.backend {
        BackendSettings::Software(settings) => Ok(Arc::new(open_software_backend(settings)?)),
        BackendSettings::Pkcs11(settings) => open_pkcs11_backend(settings).await,
    }
}

/// Opens the configured backend, then the database; a software backend's KEKs are checked
/// against the keys in the database ([`check_sealed_keys`]). The KEKs are read before the
/// database is opened, so a KEK configuration error leaves nothing on disk.
pub async fn open_backend_and_store(config: &Config) -> Result<(Arc<dyn KeyBackend>, Store), RunError> {
    match &config.backend {
        BackendSettings::Software(settings) => {
            let backend = open_software_backend(settings)?;
            let store = open_store(config).await?;
            check_sealed_keys(&store, backend.ring()).await?;
            Ok((Arc::new(backend), store))
        }
        BackendSettings::Pkcs11(settings) => {
            let backend = open_pkcs11_backend(settings).await?;
            Ok((backend, open_store(config).await?))
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot watch SIGTERM; only SIGINT stops the signer");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received; shutting down");
    }
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(config: &Config) -> Result<(), RunError> {
    let tls_paths = config.tls_paths()?;
    let tls = TlsMaterial::load(&tls_paths.cert, &tls_paths.key, &tls_paths.client_ca)?;
    warn_if_readable(&tls_paths.key);
    let (backend, store) = open_backend_and_store(config).await?;
    tracing::info!(database = %config.database.describe(), "database ready");
    backend.health().await?;
    let service = SignerService::new(store.clone(), backend);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| RunError::Other(format!("cannot listen on {}: {error}", config.listen)))?;
    let address = listener.local_addr().map_err(|error| RunError::Other(error.to_string()))?;
    tracing::info!(address = %address, backend = service.backend().name(), "tufa-signer listening (mutual TLS)");

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_sender.send(true);
    });
    let mut server_stop = stop.clone();
    let server = grpc::serve(listener, &tls, service, async move {
        let _ = server_stop.wait_for(|stopping| *stopping).await;
    });
    let mut grace_stop = stop;
    let result = tokio::select! {
        result = server => result.map_err(RunError::from),
        () = async {
            // A closed channel also counts as a stop request.
            let _ = grace_stop.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("in-flight requests did not finish in time; stopping anyway");
            Ok(())
        }
    };
    store.close().await;
    tracing::info!("tufa-signer stopped");
    result
}

fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the TLS key file is readable by group or others; chmod 600 it");
        }
    }
}

/// Prints audit events matching `filter` as JSON lines to `out`, following pages until `limit`
/// events (or all) are printed. Returns the number printed.
pub async fn print_audit(
    store: &Store,
    mut filter: EventFilter,
    limit: Option<u64>,
    out: &mut dyn std::io::Write,
) -> Result<u64, RunError> {
    let mut printed = 0u64;
    loop {
        let remaining = limit.map_or(u64::MAX, |limit| limit.saturating_sub(printed));
        if remaining == 0 {
            break;
        }
        filter.limit = u32::try_from(remaining.min(u64::from(MAX_EVENT_PAGE))).unwrap_or(MAX_EVENT_PAGE);
        let page = store.sign_events(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.after_id = Some(last.id);
        for event in &page {
            let line = serde_json::to_string(event).map_err(|error| RunError::Other(error.to_string()))?;
            writeln!(out, "{line}").map_err(|error| RunError::Other(format!("cannot write: {error}")))?;
            printed += 1;
        }
        if page.len() < usize::try_from(filter.limit).unwrap_or(usize::MAX) {
            break;
        }
    }
    out.flush().map_err(|error| RunError::Other(format!("cannot write: {error}")))?;
    Ok(printed)
}

/// What [`rotate_kek`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Keys now sealed with the active KEK that were not before.
    pub resealed: u64,
    /// Keys that could not be re-sealed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Re-seals every software key sealed with a KEK other than the active one. Keys that fail (for
/// example because their KEK is no longer configured) are reported and left as they are.
pub async fn rotate_kek(store: &Store, backend: &SoftwareBackend) -> Result<RotationReport, RunError> {
    let active = backend.ring().active_name().to_owned();
    let mut report = RotationReport::default();
    let mut after = String::new();
    loop {
        let batch = store.keys_sealed_with_other(SoftwareBackend::NAME, &active, &after, RESEAL_BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.key_id.clone();
        for record in &batch {
            let outcome = match Algorithm::parse(&record.algorithm) {
                Ok(algorithm) => {
                    backend.reseal(&record.key_id, algorithm, &record.handle).map_err(|error| error.to_string())
                }
                Err(error) => Err(error.to_string()),
            };
            match outcome {
                Ok(Some(resealed)) => {
                    if store
                        .replace_handle(&record.key_id, &record.handle, &resealed.handle, &resealed.sealed_with)
                        .await?
                    {
                        tracing::info!(key.id = %record.key_id, from = %record.sealed_with, to = %resealed.sealed_with, "key re-sealed");
                        report.resealed += 1;
                    } else {
                        report
                            .failed
                            .push((record.key_id.clone(), "the key changed or was deleted meanwhile".to_owned()));
                    }
                }
                // Already sealed with the active KEK; only the label was stale.
                Ok(None) => {
                    store.replace_handle(&record.key_id, &record.handle, &record.handle, &active).await?;
                }
                Err(reason) => {
                    tracing::warn!(key.id = %record.key_id, error = %reason, "key not re-sealed");
                    report.failed.push((record.key_id.clone(), reason));
                }
            }
        }
    }
    Ok(report)
}
