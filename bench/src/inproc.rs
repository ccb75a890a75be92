//! The in-process rows: the same signing code without gRPC, TLS or a second process, to show
//! where the time goes. The PKCS#11 backend runs in a child process of this binary, because
//! SoftHSM reads `SOFTHSM2_CONF` from the environment at `C_Initialize` and this crate does not
//! change its own environment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tufa_core::keys::{Algorithm, PrivateKey, PublicKey};
use tufa_signer::backend::KeyBackend as _;
use tufa_signer::backend::pkcs11::Pkcs11Backend;
use tufa_signer::backend::software::{Kek, KeyRing, SoftwareBackend};
use tufa_signer::config::Pkcs11Settings;
use tufa_signer::service::SignerService;
use tufa_signer::store::Store;

use crate::grpc::{GUN, PIN_ENV, PKCS11_SESSIONS, ROLE, SoftHsm, TOKEN_LABEL, TOKEN_PIN};
use crate::measure::{Plan, SignFn, SignFuture, Stats, run_cell};

/// Name of the hidden subcommand that runs the PKCS#11 rows in a child process.
pub(crate) const PKCS11_CHILD: &str = "__pkcs11-child";
/// Client subject recorded in the audit trail by the in-process service row.
const SUBJECT: &str = "CN=signer-bench";

/// A signing operation ready to be timed, with the public key that checks its output.
pub(crate) struct Subject {
    /// Starts one signature.
    pub sign: SignFn,
    /// Verifies the signatures.
    pub public: PublicKey,
}

fn checker(public: &PublicKey, message: &Arc<Vec<u8>>) -> impl Fn(&[u8]) -> Result<(), String> + Sync + use<> {
    let public = public.clone();
    let message = message.clone();
    move |signature: &[u8]| public.verify("ecdsa", &message, signature).map_err(|error| error.to_string())
}

/// Times `subject` at `concurrency`.
pub(crate) async fn run(
    subject: &Subject,
    concurrency: usize,
    plan: Plan,
    message: &Arc<Vec<u8>>,
) -> Result<Stats, String> {
    let check = checker(&subject.public, message);
    run_cell(&subject.sign, concurrency, plan, &check).await
}

/// `PrivateKey::sign` (aws-lc-rs ECDSA P-256): the ceiling for every software path.
pub(crate) fn raw_key(message: &Arc<Vec<u8>>) -> Result<Subject, String> {
    let key = Arc::new(PrivateKey::generate(Algorithm::Ecdsa).map_err(|error| error.to_string())?);
    let public = key.public_key();
    let message = message.clone();
    let sign: SignFn = Arc::new(move |_worker: usize| -> SignFuture {
        let result = key.sign(&message).map_err(|error| error.to_string());
        Box::pin(async move { result })
    });
    Ok(Subject { sign, public })
}

/// The software backend (KEK-sealed key, unsealed once and cached), without store or gRPC.
pub(crate) async fn software_backend(
    kek: &Path,
    message: &Arc<Vec<u8>>,
) -> Result<(Subject, Arc<SoftwareBackend>), String> {
    let kek = Kek::from_file("bench", kek).map_err(|error| error.to_string())?;
    let ring = KeyRing::new(vec![kek], Some("bench")).map_err(|error| error.to_string())?;
    let backend = Arc::new(SoftwareBackend::new(ring));
    let created = backend.generate(Algorithm::Ecdsa).await.map_err(|error| error.to_string())?;
    let (key_id, handle) = (Arc::new(created.key_id), Arc::new(created.handle));
    let message = message.clone();
    let signer = backend.clone();
    let sign: SignFn = Arc::new(move |_worker: usize| -> SignFuture {
        let (backend, key_id, handle, message) = (signer.clone(), key_id.clone(), handle.clone(), message.clone());
        Box::pin(async move {
            backend.sign(&key_id, Algorithm::Ecdsa, &handle, &message).await.map_err(|error| error.to_string())
        })
    });
    Ok((Subject { sign, public: created.public }, backend))
}

/// The signer service over the software backend and a SQLite store in `dir`: key look-up, signing
/// and the audit row per signature, as tufa-signer does behind gRPC (without its log output).
pub(crate) async fn software_service(
    backend: Arc<SoftwareBackend>,
    dir: &Path,
    message: &Arc<Vec<u8>>,
) -> Result<(Subject, Store), String> {
    let store = Store::open_sqlite_file(&dir.join("in-process.db")).await.map_err(|error| error.to_string())?;
    store.migrate().await.map_err(|error| error.to_string())?;
    let service = SignerService::new(store.clone(), backend);
    let info = service.create_key("ecdsa", GUN, ROLE).await.map_err(|error| error.to_string())?;
    let public = info.public_key();
    let key_id = Arc::new(info.key_id);
    let message = message.clone();
    let sign: SignFn = Arc::new(move |_worker: usize| -> SignFuture {
        let (service, key_id, message) = (service.clone(), key_id.clone(), message.clone());
        Box::pin(async move {
            let signed = service.sign(&key_id, &message, SUBJECT).await.map_err(|error| error.to_string())?;
            Ok(signed.signature)
        })
    });
    Ok((Subject { sign, public }, store))
}

/// The PKCS#11 backend on the SoftHSM token, without store or gRPC. Runs in the child.
async fn pkcs11_backend(module: PathBuf, message: &Arc<Vec<u8>>) -> Result<Subject, String> {
    let settings = Pkcs11Settings {
        module,
        token_label: Some(TOKEN_LABEL.to_owned()),
        slot: None,
        pin_file: None,
        pin_env: Some(PIN_ENV.to_owned()),
        sessions: PKCS11_SESSIONS,
    };
    let backend = tokio::task::spawn_blocking(move || Pkcs11Backend::open(&settings))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let created = backend.generate(Algorithm::Ecdsa).await.map_err(|error| error.to_string())?;
    let (key_id, handle) = (Arc::new(created.key_id), Arc::new(created.handle));
    let message = message.clone();
    let sign: SignFn = Arc::new(move |_worker: usize| -> SignFuture {
        let (backend, key_id, handle, message) = (backend.clone(), key_id.clone(), handle.clone(), message.clone());
        Box::pin(async move {
            backend.sign(&key_id, Algorithm::Ecdsa, &handle, &message).await.map_err(|error| error.to_string())
        })
    });
    Ok(Subject { sign, public: created.public })
}

fn stats_json(concurrency: usize, outcome: &Result<Stats, String>) -> serde_json::Value {
    match outcome {
        Ok(stats) => serde_json::json!({
            "concurrency": concurrency,
            "ops": stats.ops,
            "elapsed_ns": stats.elapsed.as_nanos() as u64,
            "p50_ns": stats.p50.as_nanos() as u64,
            "p99_ns": stats.p99.as_nanos() as u64,
        }),
        Err(error) => serde_json::json!({ "concurrency": concurrency, "error": error }),
    }
}

fn stats_from_json(value: &serde_json::Value) -> Option<(usize, Result<Stats, String>)> {
    let concurrency = usize::try_from(value.get("concurrency")?.as_u64()?).ok()?;
    if let Some(error) = value.get("error") {
        return Some((concurrency, Err(error.as_str().unwrap_or("unknown error").to_owned())));
    }
    let nanos = |name: &str| value.get(name).and_then(serde_json::Value::as_u64).map(Duration::from_nanos);
    let stats = Stats {
        ops: value.get("ops")?.as_u64()?,
        elapsed: nanos("elapsed_ns")?,
        p50: nanos("p50_ns")?,
        p99: nanos("p99_ns")?,
    };
    Some((concurrency, Ok(stats)))
}

/// The child's side: opens the backend and prints one JSON line per concurrency level.
pub(crate) async fn child_main(
    module: PathBuf,
    levels: &[usize],
    plan: Plan,
    message: Arc<Vec<u8>>,
) -> Result<(), String> {
    let subject = pkcs11_backend(module, &message).await?;
    for &concurrency in levels {
        let outcome = run(&subject, concurrency, plan, &message).await;
        println!("{}", stats_json(concurrency, &outcome));
    }
    Ok(())
}

/// The parent's side: runs this binary as the PKCS#11 child with the token's configuration and
/// returns the result per concurrency level.
pub(crate) async fn pkcs11_in_child(
    hsm: &SoftHsm,
    levels: &[usize],
    plan: Plan,
) -> Result<Vec<(usize, Result<Stats, String>)>, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find this program: {error}"))?;
    let mut command = tokio::process::Command::from(crate::process::clean_command(&exe));
    command
        .arg(PKCS11_CHILD)
        .arg(&hsm.module)
        .arg(plan.duration.as_millis().to_string())
        .arg(plan.warmup.to_string())
        .args(levels.iter().map(ToString::to_string))
        .env("SOFTHSM2_CONF", &hsm.config)
        .env(PIN_ENV, TOKEN_PIN)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = command.output().await.map_err(|error| format!("cannot run the PKCS#11 child: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the PKCS#11 child failed ({}): {}{}",
            output.status,
            stdout.trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .as_ref()
                .and_then(stats_from_json)
                .ok_or_else(|| format!("unreadable line from the PKCS#11 child: {line}"))
        })
        .collect()
}
