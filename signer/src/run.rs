//! What the binary does with a resolved [`Config`]: open the store and backend, serve gRPC until
//! SIGTERM/SIGINT while signing audit checkpoints, print the audit trail, verify the audit log,
//! re-seal keys under the active KEK.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tufa_common::files;
use tufa_core::keys::Algorithm;

use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::software::{KekError, KeyRing, SoftwareBackend, kek_env_var};
use crate::backend::{BackendError, KeyBackend};
use tufa_store::SqliteLocation;

use crate::checkpoint::{self, Checkpointer, CheckpointerError};
use crate::config::{BackendSettings, Config, ConfigError, Pkcs11Settings, SoftwareSettings};
use crate::grpc::{self, ServeError, TlsMaterial};
use crate::service::SignerService;
use crate::store::{AuditCheckpoint, EventFilter, MAX_ENTRY_PAGE, MAX_EVENT_PAGE, Store, StoreError};
use tufa_audit::checkpoint::CheckpointKey;
use tufa_audit::verify::{LogVerifier, Report};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long the last audit checkpoint may take at shutdown.
const CHECKPOINT_GRACE: Duration = Duration::from_secs(10);
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
    /// The configured audit origin is not the stored checkpoint key's name.
    #[error("{0}")]
    AuditOrigin(String),
    /// The checkpoint key or a checkpoint could not be made.
    #[error("audit checkpoint: {0}")]
    Checkpoint(String),
    /// `audit verify` found problems in the log (exit status 1).
    #[error("the audit log has {0} problem(s)")]
    LogProblems(u64),
    /// `audit verify` could not check the log (exit status 2).
    #[error("the audit log could not be verified: {0}")]
    VerifyFailed(Box<RunError>),
    /// Anything else (I/O on the data directory, stdout).
    #[error("{0}")]
    Other(String),
}

/// What to change when the data directory cannot be created.
const DATA_DIR_HINT: &str =
    "choose a writable --data-dir (or set --database-url) or fix the owner of its parent directory";

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

impl RunError {
    /// The process exit status: 2 for an unusable configuration (as clap uses for usage errors),
    /// 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::KekMismatch(_) | Self::AuditOrigin(_) | Self::VerifyFailed(_) => {
                tufa_common::EXIT_CONFIG
            }
            _ => 1,
        }
    }
}

/// Opens and migrates the database.
pub async fn open_store(config: &Config) -> Result<Store, RunError> {
    if let Some(SqliteLocation::File(path)) = config.database.sqlite_location()
        && let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty())
    {
        files::create_private_dir(parent)
            .map_err(|error| RunError::Other(error.with_hint(DATA_DIR_HINT).to_string()))?;
    }
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    Ok(store)
}

/// Opens the database to read it only: no directory or file is created and no migration or
/// backfill runs, so an auditor's read-only credentials suffice (`audit verify`, `audit
/// checkpoint`).
pub async fn open_existing_store(config: &Config) -> Result<Store, RunError> {
    if let Some(SqliteLocation::File(path)) = config.database.sqlite_location()
        && !path.is_file()
    {
        return Err(RunError::Other(format!(
            "there is no signer database at {}; give the signer's --config, --data-dir or --database-url",
            path.display()
        )));
    }
    Ok(Store::connect(&config.database).await?)
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
///
/// The configuration was validated before this is called; the TLS files and the backend's keys
/// are read (nothing is written), then the listener is bound, and only then is the database
/// opened, so a busy port or a bad setting leaves no data directory or database file behind.
pub async fn serve(config: &Config) -> Result<(), RunError> {
    let tls_paths = config.tls_paths()?;
    let tls = TlsMaterial::load(&tls_paths.cert, &tls_paths.key, &tls_paths.client_ca)?;
    warn_if_readable(&tls_paths.key);
    let (backend, software): (Arc<dyn KeyBackend>, Option<Arc<SoftwareBackend>>) = match &config.backend {
        BackendSettings::Software(settings) => {
            let software = Arc::new(open_software_backend(settings)?);
            (software.clone(), Some(software))
        }
        BackendSettings::Pkcs11(settings) => (open_pkcs11_backend(settings).await?, None),
    };
    backend.health().await?;
    let listener = TcpListener::bind(config.listen).await.map_err(|error| {
        RunError::Other(format!(
            "cannot listen on {}: {error}; stop the process using it or choose another --listen",
            config.listen
        ))
    })?;
    let address = listener.local_addr().map_err(|error| RunError::Other(error.to_string()))?;
    let store = open_store(config).await?;
    if let Some(software) = &software {
        check_sealed_keys(&store, software.ring()).await?;
    }
    let checkpointer = open_checkpointer(&store, backend.clone(), config.audit.origin.as_deref()).await?;
    let service = SignerService::new(store.clone(), backend);
    let backend_name = service.backend().name();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        backend = backend_name,
        database = %config.database,
        listen = %address,
        "tufa-signer {}: backend {backend_name}, store {}, listening on {address} (mutual TLS)",
        env!("CARGO_PKG_VERSION"),
        config.database,
    );
    tracing::info!(
        origin = checkpointer.key().name(),
        key.id = checkpointer.key_id(),
        vkey = %checkpointer.key().vkey(),
        interval_seconds = config.audit.checkpoint_interval.as_secs(),
        "audit log checkpoints signed by {}",
        checkpointer.key().vkey()
    );
    let (served, checkpoints_stop) = tokio::sync::watch::channel(false);
    let checkpoints = tokio::spawn(checkpointer.run(config.audit.checkpoint_interval, checkpoints_stop));

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
    // No more signatures: the checkpointer signs its last checkpoint and ends.
    let _ = served.send(true);
    if tokio::time::timeout(CHECKPOINT_GRACE, checkpoints).await.is_err() {
        tracing::warn!("the last audit checkpoint did not finish in time");
    }
    store.close().await;
    tracing::info!("tufa-signer stopped");
    result
}

fn warn_if_readable(path: &Path) {
    if let Ok(metadata) = std::fs::metadata(path)
        && let Err(error) = files::check_owner_only("TLS private key file", path, &metadata)
    {
        tracing::warn!(file = %path.display(), "{error}");
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

/// The checkpointer of the audit log over the backend's checkpoint key (created on first use).
pub async fn open_checkpointer(
    store: &Store,
    backend: Arc<dyn KeyBackend>,
    origin: Option<&str>,
) -> Result<Checkpointer, RunError> {
    Checkpointer::open(store.clone(), backend, origin).await.map_err(|error| match error {
        CheckpointerError::Origin(message) => RunError::AuditOrigin(message),
        CheckpointerError::Store(error) => RunError::Store(error),
        CheckpointerError::Backend(error) => RunError::Backend(error),
        CheckpointerError::Checkpoint(error) => RunError::Checkpoint(error.to_string()),
    })
}

/// Where `audit verify` took the checkpoint key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--checkpoint-key`.
    Pinned,
    /// The signer's database (not independent of what is checked).
    Database,
}

/// The outcome of [`verify_log`].
#[derive(Debug, Clone)]
pub struct Verification {
    /// The checkpoint key the checkpoints were verified with.
    pub key: CheckpointKey,
    /// Where the key came from.
    pub source: KeySource,
    /// What the verifier found.
    pub report: Report,
}

/// The checkpoint key recorded in the database: the signer of the latest checkpoint, else the
/// oldest checkpoint key.
async fn stored_checkpoint_key(store: &Store) -> Result<CheckpointKey, RunError> {
    let record = match store.latest_checkpoint().await? {
        Some(latest) => store.key(&latest.key_id).await?.ok_or_else(|| {
            RunError::Other(format!(
                "the latest checkpoint names checkpoint key {}, which the database no longer holds; pin the key with \
                 --checkpoint-key",
                latest.key_id
            ))
        })?,
        None => store.checkpoint_key(None).await?.ok_or_else(|| {
            RunError::Other(
                "the database holds no checkpoint key: start the signer once (it creates the key), or pin one with \
                 --checkpoint-key"
                    .to_owned(),
            )
        })?,
    };
    checkpoint::verifier_key(&record).map_err(|error| RunError::Checkpoint(error.to_string()))
}

/// Checks the whole audit log: every entry in position order against its hash and the chain,
/// and against every stored checkpoint verified with `pinned` (a verifier key), else with the
/// key the database records.
pub async fn verify_log(store: &Store, pinned: Option<&str>) -> Result<Verification, RunError> {
    let (key, source) = match pinned {
        Some(vkey) => (
            CheckpointKey::from_vkey(vkey).map_err(|error| RunError::Checkpoint(error.to_string()))?,
            KeySource::Pinned,
        ),
        None => (stored_checkpoint_key(store).await?, KeySource::Database),
    };
    let checkpoints: Vec<_> = store.checkpoints().await?.iter().map(AuditCheckpoint::stored).collect();
    let mut verifier = LogVerifier::new(&key, &checkpoints);
    let mut after = None;
    loop {
        let page = store.audit_entries(after, MAX_ENTRY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.entry.seq);
        for stored in &page {
            verifier.push(&stored.entry, Some(stored.leaf_hash));
        }
        if page.len() < usize::try_from(MAX_ENTRY_PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    Ok(Verification { key, source, report: verifier.finish() })
}

/// Writes a verification for a person (`json` false) or as one JSON object.
pub fn print_verification(
    verification: &Verification,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), RunError> {
    let write_error = |error: std::io::Error| RunError::Other(format!("cannot write: {error}"));
    let report = &verification.report;
    let pinned = verification.source == KeySource::Pinned;
    if json {
        let value = serde_json::json!({
            "ok": report.ok(),
            "checkpoint_key": verification.key.vkey(),
            "checkpoint_key_pinned": pinned,
            "report": report,
        });
        writeln!(out, "{value}").map_err(write_error)?;
        return out.flush().map_err(write_error);
    }
    let source = if pinned { "pinned" } else { "taken from the database" };
    writeln!(out, "checkpoint key: {} ({source})", verification.key.vkey()).map_err(write_error)?;
    writeln!(out, "entries: {}", report.entries).map_err(write_error)?;
    writeln!(out, "checkpoints verified: {}", report.checkpoints).map_err(write_error)?;
    if let Some(latest) = &report.latest {
        writeln!(
            out,
            "latest verified checkpoint: {} entries, root {}, {}",
            latest.size,
            latest.root,
            tufa_audit::entry::format_time(latest.time)
        )
        .map_err(write_error)?;
    }
    if report.ok() {
        writeln!(out, "OK: every entry matches its hash and the chain, and every checkpoint matches the entries")
            .map_err(write_error)?;
    } else {
        let total = report.problems.len() as u64 + report.more_problems;
        writeln!(out, "PROBLEMS: {total}").map_err(write_error)?;
        for problem in &report.problems {
            let position = problem.position.map_or_else(|| "-".to_owned(), |position| position.to_string());
            let kind = serde_json::to_value(problem.kind)
                .ok()
                .and_then(|kind| kind.as_str().map(str::to_owned))
                .unwrap_or_default();
            writeln!(out, "  position {position}: {kind}: {}", problem.message).map_err(write_error)?;
        }
        if report.more_problems > 0 {
            writeln!(out, "  … and {} more", report.more_problems).map_err(write_error)?;
        }
    }
    out.flush().map_err(write_error)
}

/// The latest checkpoint and the verifier key of the key that signed it.
pub async fn latest_checkpoint(store: &Store) -> Result<(AuditCheckpoint, CheckpointKey), RunError> {
    let latest = store.latest_checkpoint().await?.ok_or_else(|| {
        RunError::Other("no audit checkpoint has been signed yet: the signer signs one while it serves".to_owned())
    })?;
    let record = store
        .key(&latest.key_id)
        .await?
        .ok_or_else(|| RunError::Other(format!("the database no longer holds the checkpoint key {}", latest.key_id)))?;
    let key = checkpoint::verifier_key(&record).map_err(|error| RunError::Checkpoint(error.to_string()))?;
    Ok((latest, key))
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
