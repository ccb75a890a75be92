//! Tests of the PKCS#11 key backend against real SoftHSM2 tokens.
//!
//! SoftHSM reads `SOFTHSM2_CONF` when the module is initialised in this process, so the variable
//! must point at a throwaway configuration before the tests start; `scripts/test.sh` creates one
//! (a temporary, empty token directory) and exports it. Each test makes its own token there with
//! `C_InitToken`, so tests do not share keys or login state.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use tufa_core::keys::{Algorithm, KeyError, KeyType, PublicKey};
use tufa_signer::backend::pkcs11::Pkcs11Backend;
use tufa_signer::backend::{BackendError, KeyBackend, NewKey};
use tufa_signer::config::Pkcs11Settings;

/// The user PIN of every test token; chosen so that it cannot appear in an error text by chance.
const USER_PIN: &str = "73946128";
/// A wrong PIN, for the login-failure test.
const WRONG_PIN: &str = "24681357";
const SO_PIN: &str = "5678";

/// Serialises token creation with slot look-ups in this process, so that no backend picks the
/// free slot or a token that is still being set up.
static TOKEN_SETUP: Mutex<()> = Mutex::new(());

/// The SoftHSM module: `PKCS11_MODULE` if set, else Debian's path; fails the test when missing.
fn module() -> PathBuf {
    tufa_testkit::softhsm::module().unwrap_or_else(|error| panic!("{error}"))
}

/// A fresh SoftHSM token and a PIN file for it.
struct TestToken {
    label: String,
    pin_dir: tempfile::TempDir,
}

impl TestToken {
    /// Creates the token `<name>-<pid>` (at most 32 bytes) in `$SOFTHSM2_CONF`'s token directory.
    ///
    /// The token is made in this process with `C_InitToken` on SoftHSM's free slot: SoftHSM reads
    /// its token directory only at `C_Initialize`, so a token made afterwards by `softhsm2-util`
    /// would stay invisible to this process.
    fn new(name: &str) -> TestToken {
        let label = format!("{name}-{}", std::process::id());
        assert!(label.len() <= 32, "token label {label} is too long");
        let context = raw_context();
        let _setup = TOKEN_SETUP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let so_pin = AuthPin::from(SO_PIN);
        let free = context
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|slot| context.get_token_info(*slot).is_ok_and(|info| !info.token_initialized()))
            .expect("SoftHSM always offers a slot with an uninitialised token");
        context.init_token(free, &so_pin, &label).unwrap();
        // SoftHSM gives the new token another slot ID: look it up by label.
        let slot = find_slot(&context, &label);
        let session = context.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&so_pin)).unwrap();
        session.init_pin(&AuthPin::from(USER_PIN)).unwrap();
        // Login state is per process and token: the SO must leave before the user can log in.
        session.logout().unwrap();
        drop(session);

        let pin_dir = tempfile::tempdir().unwrap();
        // A trailing CRLF must be trimmed by the backend.
        write_pin_file(&pin_dir.path().join("pin"), &format!("{USER_PIN}\r\n"));
        write_pin_file(&pin_dir.path().join("wrong-pin"), &format!("{WRONG_PIN}\n"));
        TestToken { label, pin_dir }
    }

    fn settings(&self, sessions: usize) -> Pkcs11Settings {
        Pkcs11Settings {
            module: module(),
            token_label: Some(self.label.clone()),
            slot: None,
            pin_file: Some(self.pin_dir.path().join("pin")),
            pin_env: None,
            sessions,
        }
    }

    fn open(&self, sessions: usize) -> Pkcs11Backend {
        open(&self.settings(sessions)).unwrap()
    }
}

/// Opens a backend while no token is being created.
fn open(settings: &Pkcs11Settings) -> Result<Pkcs11Backend, BackendError> {
    let _setup = TOKEN_SETUP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Pkcs11Backend::open(settings)
}

/// This process's handle on the SoftHSM module (the backend's is separate; `C_Initialize` runs
/// once and later calls report CKR_CRYPTOKI_ALREADY_INITIALIZED), used to make tokens and to poke
/// at them the way another part of the process could.
fn raw_context() -> Pkcs11 {
    static CONTEXT: OnceLock<Pkcs11> = OnceLock::new();
    CONTEXT
        .get_or_init(|| {
            match std::env::var_os("SOFTHSM2_CONF") {
                None => panic!(
                    "SOFTHSM2_CONF is not set. Run the tests via scripts/test.sh, which creates a throwaway \
                     SoftHSM token dir and exports SOFTHSM2_CONF (the PKCS#11 tests never use the system token dir)"
                ),
                Some(config) if PathBuf::from(&config).starts_with("/etc") => panic!(
                    "SOFTHSM2_CONF points at the system configuration {}; the PKCS#11 tests need a throwaway \
                     one (run them via scripts/test.sh)",
                    PathBuf::from(&config).display()
                ),
                Some(_) => {}
            }
            // SoftHSM's C_Initialize must not run concurrently with the backend's (or any other call).
            let _setup = TOKEN_SETUP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let context = Pkcs11::new(module()).unwrap();
            match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(error) => panic!("C_Initialize: {error}"),
            }
            context
        })
        .clone()
}

/// The slot of the token labelled `label`.
fn find_slot(context: &Pkcs11, label: &str) -> cryptoki::slot::Slot {
    context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).is_ok_and(|info| info.label().trim_end() == label))
        .expect("the test token is present")
}

fn slot_of(context: &Pkcs11, label: &str) -> cryptoki::slot::Slot {
    let _setup = TOKEN_SETUP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    find_slot(context, label)
}

async fn generate_ecdsa(backend: &Pkcs11Backend) -> NewKey {
    backend.generate(Algorithm::Ecdsa).await.unwrap()
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, BackendError>) {
    match result {
        Err(BackendError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn generated_key_signs_and_verifies() {
    let token = TestToken::new("gen");
    let backend = token.open(2);
    assert_eq!(backend.name(), "pkcs11");
    backend.health().await.unwrap();

    let key = generate_ecdsa(&backend).await;
    assert_eq!(key.public.keytype(), &KeyType::Ecdsa);
    assert_eq!(key.sealed_with, "pkcs11");
    assert_eq!(key.handle.len(), 16);
    assert_eq!(key.key_id.len(), 64);
    assert!(key.key_id.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
    // The key ID is the TUF ID of the public key, recomputed from its bytes.
    assert_eq!(key.key_id, PublicKey::new(KeyType::Ecdsa, key.public.public().to_vec()).key_id());

    // The public key is a DER SubjectPublicKeyInfo of an EC key on P-256.
    use x509_parser::prelude::FromDer as _;
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(key.public.public()).unwrap();
    assert!(rest.is_empty());
    assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    let curve = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
    assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");
    assert_eq!(spki.subject_public_key.data.len(), 65);

    let message = br#"{"_type":"Timestamp","expires":"2030-01-01T00:00:00Z","version":1}"#;
    let signature = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, message).await.unwrap();
    assert_eq!(signature.len(), 64, "raw r||s");
    key.public.verify("ecdsa", message, &signature).unwrap();
    let mut tampered = message.to_vec();
    tampered[10] ^= 1;
    assert_eq!(key.public.verify("ecdsa", &tampered, &signature), Err(KeyError::BadSignature));
    let mut bad_signature = signature.clone();
    bad_signature[5] ^= 1;
    assert_eq!(key.public.verify("ecdsa", message, &bad_signature), Err(KeyError::BadSignature));

    // A second key gets its own ID and handle.
    let other = generate_ecdsa(&backend).await;
    assert_ne!(other.key_id, key.key_id);
    assert_ne!(other.handle, key.handle);
    let other_signature = backend.sign(&other.key_id, Algorithm::Ecdsa, &other.handle, message).await.unwrap();
    assert_eq!(key.public.verify("ecdsa", message, &other_signature), Err(KeyError::BadSignature));
    other.public.verify("ecdsa", message, &other_signature).unwrap();
}

#[tokio::test]
async fn keys_persist_on_the_token() {
    let token = TestToken::new("persist");
    let key = {
        let backend = token.open(1);
        generate_ecdsa(&backend).await
    };
    // A new backend (new sessions) finds the token object by its CKA_ID; the key is unchanged.
    let backend = token.open(1);
    let message = b"persisted";
    let signature = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, message).await.unwrap();
    key.public.verify("ecdsa", message, &signature).unwrap();
    assert_eq!(key.public.key_id(), key.key_id);
}

#[tokio::test]
async fn private_key_is_sensitive_and_not_extractable() {
    let token = TestToken::new("attrs");
    let backend = token.open(1);
    let key = generate_ecdsa(&backend).await;
    let protection = backend.inspect(&key.handle).await.unwrap();
    assert_eq!(protection.token, Some(true));
    assert_eq!(protection.private, Some(true));
    assert_eq!(protection.sensitive, Some(true));
    assert_eq!(protection.extractable, Some(false));
    assert_eq!(protection.always_sensitive, Some(true));
    assert_eq!(protection.never_extractable, Some(true));
    assert!(protection.has_public_object);
    assert_eq!(protection.label, format!("tufa:{}", &key.key_id[..16]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_signing_with_a_pool_of_four() {
    let token = TestToken::new("conc");
    let backend = Arc::new(token.open(4));
    let keys = Arc::new(vec![generate_ecdsa(&backend).await, generate_ecdsa(&backend).await]);

    let tasks = 16;
    let per_task = 50;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let backend = Arc::clone(&backend);
        let keys = Arc::clone(&keys);
        handles.push(tokio::spawn(async move {
            let mut signed = Vec::new();
            for round in 0..per_task {
                let key = &keys[(task + round) % keys.len()];
                let message = format!("task {task} round {round}").into_bytes();
                let signature = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, &message).await.unwrap();
                signed.push(((task + round) % keys.len(), message, signature));
            }
            signed
        }));
    }
    let mut count = 0;
    for handle in handles {
        for (key, message, signature) in handle.await.unwrap() {
            keys[key].public.verify("ecdsa", &message, &signature).unwrap();
            count += 1;
        }
    }
    assert_eq!(count, tasks * per_task);
    eprintln!("{count} concurrent signs on 4 sessions took {:?}", started.elapsed());
    backend.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_serves_many_tasks() {
    let token = TestToken::new("one");
    let backend = Arc::new(token.open(1));
    let key = Arc::new(generate_ecdsa(&backend).await);
    let mut handles = Vec::new();
    for task in 0..12 {
        let backend = Arc::clone(&backend);
        let key = Arc::clone(&key);
        handles.push(tokio::spawn(async move {
            let message = format!("task {task}").into_bytes();
            let signature = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, &message).await.unwrap();
            key.public.verify("ecdsa", &message, &signature).unwrap();
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

#[tokio::test]
async fn cancelled_requests_return_their_session() {
    let token = TestToken::new("cancel");
    let backend = token.open(1);
    let key = generate_ecdsa(&backend).await;
    // Start signs and drop them half-way; the single session must come back to the pool.
    for _ in 0..20 {
        let sign = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"cancelled");
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), sign).await;
    }
    let signature = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"after"),
    )
    .await
    .expect("the session came back to the pool")
    .unwrap();
    key.public.verify("ecdsa", b"after", &signature).unwrap();
}

#[tokio::test]
async fn unknown_handles_are_not_found() {
    let token = TestToken::new("unknown");
    let backend = token.open(1);
    let key = generate_ecdsa(&backend).await;
    let mut unknown = key.handle.clone();
    unknown[0] ^= 0xFF;
    assert_not_found(backend.sign("unknown", Algorithm::Ecdsa, &unknown, b"message").await);
    assert_not_found(backend.sign("empty", Algorithm::Ecdsa, &[], b"message").await);
    assert_not_found(backend.inspect(&unknown).await);
    // Destroying an unknown key is not an error.
    backend.destroy("unknown", &unknown).await.unwrap();
    // The real key is untouched.
    backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"message").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_keys_are_not_found_on_any_session() {
    let token = TestToken::new("destroy");
    let backend = Arc::new(token.open(3));
    let key = Arc::new(generate_ecdsa(&backend).await);
    let keep = generate_ecdsa(&backend).await;

    // Warm the object-handle caches of every session.
    let sign_all = |expect_ok: bool| {
        let mut handles = Vec::new();
        for task in 0..12 {
            let backend = Arc::clone(&backend);
            let key = Arc::clone(&key);
            handles.push(tokio::spawn(async move {
                let result =
                    backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, format!("{task}").as_bytes()).await;
                assert_eq!(result.is_ok(), expect_ok, "{result:?}");
                if !expect_ok {
                    assert_not_found(result);
                }
            }));
        }
        handles
    };
    for handle in sign_all(true) {
        handle.await.unwrap();
    }
    backend.destroy(&key.key_id, &key.handle).await.unwrap();
    for handle in sign_all(false) {
        handle.await.unwrap();
    }
    assert_not_found(backend.inspect(&key.handle).await);
    // Idempotent.
    backend.destroy(&key.key_id, &key.handle).await.unwrap();
    // Other keys still sign, and new keys work after the destroy.
    backend.sign(&keep.key_id, Algorithm::Ecdsa, &keep.handle, b"kept").await.unwrap();
    let fresh = generate_ecdsa(&backend).await;
    let signature = backend.sign(&fresh.key_id, Algorithm::Ecdsa, &fresh.handle, b"fresh").await.unwrap();
    fresh.public.verify("ecdsa", b"fresh", &signature).unwrap();
}

#[tokio::test]
async fn wrong_pin_fails_without_revealing_it() {
    let token = TestToken::new("pin");
    let mut settings = token.settings(2);
    settings.pin_file = Some(token.pin_dir.path().join("wrong-pin"));
    let error = open(&settings).unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains(WRONG_PIN), "the error reveals the PIN: {text}");
    assert!(!text.contains(USER_PIN), "the error reveals a PIN: {text}");
    assert!(text.contains("PIN"), "the error should say the PIN was rejected: {text}");
    assert!(matches!(error, BackendError::Internal(_)), "{error:?}");

    // The right PIN still works (the failed attempt did not poison anything process-wide).
    let backend = token.open(1);
    let key = generate_ecdsa(&backend).await;
    backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"ok").await.unwrap();
    assert!(!format!("{backend:?}").contains(USER_PIN));
}

#[tokio::test]
async fn ed25519_works_only_where_the_token_has_it() {
    let token = TestToken::new("ed");
    let backend = token.open(1);
    eprintln!("the token supports Ed25519: {}", backend.supports_ed25519());
    if backend.supports_ed25519() {
        let key = backend.generate(Algorithm::Ed25519).await.unwrap();
        assert_eq!(key.public.keytype(), &KeyType::Ed25519);
        assert_eq!(key.public.public().len(), 32);
        let message = b"pure ed25519 over the whole message";
        let signature = backend.sign(&key.key_id, Algorithm::Ed25519, &key.handle, message).await.unwrap();
        assert_eq!(signature.len(), 64);
        key.public.verify("eddsa", message, &signature).unwrap();
        assert_eq!(key.public.verify("eddsa", b"another message", &signature), Err(KeyError::BadSignature));
        let protection = backend.inspect(&key.handle).await.unwrap();
        assert_eq!((protection.sensitive, protection.extractable), (Some(true), Some(false)));
        // The algorithm must match the key.
        match backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, message).await {
            Err(BackendError::Internal(text)) => {
                assert_eq!(text, format!("key {} in the token is not an ecdsa key", key.key_id));
            }
            other => panic!("expected a key-type mismatch, got {other:?}"),
        }
    } else {
        match backend.generate(Algorithm::Ed25519).await {
            Err(BackendError::Unsupported(text)) => assert!(text.contains("Ed25519"), "{text}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    let ecdsa = generate_ecdsa(&backend).await;
    match backend.sign(&ecdsa.key_id, Algorithm::Ed25519, &ecdsa.handle, b"x").await {
        Err(BackendError::Internal(text)) => {
            assert_eq!(text, format!("key {} in the token is not an ed25519 key", ecdsa.key_id));
        }
        other => panic!("expected a key-type mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn token_found_by_slot_number() {
    let token = TestToken::new("slot");
    let context = raw_context();
    let slot = slot_of(&context, &token.label);
    let mut settings = token.settings(1);
    settings.token_label = None;
    settings.slot = Some(slot.id());
    let backend = open(&settings).unwrap();
    let key = generate_ecdsa(&backend).await;
    let signature = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"by slot").await.unwrap();
    key.public.verify("ecdsa", b"by slot", &signature).unwrap();
}

#[tokio::test]
async fn lost_login_is_restored() {
    let token = TestToken::new("relogin");
    let backend = token.open(2);
    let key = generate_ecdsa(&backend).await;
    backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"before").await.unwrap();

    // Another part of the process logs out of the token: login state is per process and token,
    // so every session of the backend loses its login.
    let context = raw_context();
    let session = context.open_ro_session(slot_of(&context, &token.label)).unwrap();
    session.logout().unwrap();
    drop(session);

    for round in 0..4 {
        let message = format!("after logout {round}").into_bytes();
        let signature = backend.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, &message).await.unwrap();
        key.public.verify("ecdsa", &message, &signature).unwrap();
    }
    backend.health().await.unwrap();

    // Once more, and this time the first call after the logout is a destroy: it must not report
    // success having seen no objects.
    let session = context.open_ro_session(slot_of(&context, &token.label)).unwrap();
    session.logout().unwrap();
    drop(session);
    backend.destroy(&key.key_id, &key.handle).await.unwrap();
    assert_not_found(backend.inspect(&key.handle).await);
}

#[tokio::test]
async fn missing_token_and_bad_settings_are_reported() {
    let token = TestToken::new("cfg");
    let with = |change: &dyn Fn(&mut Pkcs11Settings)| {
        let mut settings = token.settings(1);
        change(&mut settings);
        settings
    };
    let check = |settings: Pkcs11Settings, expected: &str| {
        let error = open(&settings).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(expected), "expected {expected:?} in {text:?}");
        assert!(!text.contains(USER_PIN), "{text}");
    };

    check(
        with(&|settings| {
            settings.token_label = Some("no-such-token".to_owned());
        }),
        "no PKCS#11 token labelled 'no-such-token'",
    );

    check(
        with(&|settings| {
            settings.slot = Some(1);
        }),
        "exactly one of pkcs11.token_label and pkcs11.slot",
    );

    check(
        with(&|settings| {
            settings.token_label = None;
        }),
        "exactly one of pkcs11.token_label and pkcs11.slot",
    );

    check(
        with(&|settings| {
            settings.pin_env = Some("TUFA_TEST_PIN_THAT_IS_NOT_SET".to_owned());
        }),
        "exactly one of pkcs11.pin_file and pkcs11.pin_env",
    );

    check(
        with(&|settings| {
            settings.pin_file = None;
            settings.pin_env = Some("TUFA_TEST_PIN_THAT_IS_NOT_SET".to_owned());
        }),
        "TUFA_TEST_PIN_THAT_IS_NOT_SET is not set",
    );

    let empty = token.pin_dir.path().join("empty-pin");
    write_pin_file(&empty, "\n");
    check(
        with(&|settings| {
            settings.pin_file = Some(empty.clone());
        }),
        "is empty",
    );

    check(
        with(&|settings| {
            settings.pin_file = Some(token.pin_dir.path().join("absent"));
        }),
        "cannot read the PIN file",
    );

    let readable_pin = token.pin_dir.path().join("group-readable-pin");
    write_pin_file(&readable_pin, "1234\n");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&readable_pin, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    check(
        with(&|settings| {
            settings.pin_file = Some(readable_pin.clone());
        }),
        &format!(
            "PKCS#11 PIN file {0} is readable by group or others (mode 640); restrict it with `chmod 600 {0}`",
            readable_pin.display()
        ),
    );

    check(
        with(&|settings| {
            settings.sessions = 0;
        }),
        "pkcs11.sessions must be between 1 and",
    );

    check(
        with(&|settings| {
            settings.module = PathBuf::from("/nonexistent/libpkcs11.so");
        }),
        "cannot load the PKCS#11 module /nonexistent/libpkcs11.so",
    );

    // Several backends on one token share the process's login and each other's keys.
    let first = token.open(1);
    let second = token.open(2);
    let key = generate_ecdsa(&first).await;
    let signature = second.sign(&key.key_id, Algorithm::Ecdsa, &key.handle, b"shared").await.unwrap();
    key.public.verify("ecdsa", b"shared", &signature).unwrap();
    let handles: HashSet<Vec<u8>> = [key.handle.clone(), generate_ecdsa(&second).await.handle].into();
    assert_eq!(handles.len(), 2);
}

/// Writes a PIN file readable only by its owner, as the backend requires.
fn write_pin_file(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The audit log's checkpoint key lives in the token: created there once, recorded under the
/// reserved role, refused to clients, and the checkpoints it signs verify with its verifier key,
/// also after the backend is reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_checkpoints_are_signed_by_a_token_key() {
    use tufa_signer::checkpoint::Checkpointer;
    use tufa_signer::service::{ServiceError, SignerService};
    use tufa_signer::store::{CHECKPOINT_ROLE, Store};

    let token = TestToken::new("audit");
    let backend: Arc<dyn KeyBackend> = Arc::new(token.open(2));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite_file(&dir.path().join("tufa-signer.db")).await.unwrap();
    store.migrate().await.unwrap();
    let signer = SignerService::new(store.clone(), backend.clone());
    let key = signer.create_key("ecdsa", "docker.io/library/alpine", "timestamp").await.unwrap();
    signer.sign(&key.key_id, b"payload", "CN=tufa-server").await.unwrap();

    let checkpoints = Checkpointer::open(store.clone(), backend.clone(), Some("hsm.example/audit")).await.unwrap();
    let record = store.key(checkpoints.key_id()).await.unwrap().unwrap();
    assert_eq!((record.backend.as_str(), record.role.as_str()), ("pkcs11", CHECKPOINT_ROLE));
    assert_eq!(record.handle.len(), 16, "a token object ID, not key material");
    assert!(matches!(
        signer.sign(checkpoints.key_id(), b"m", "CN=tufa-server").await,
        Err(ServiceError::FailedPrecondition(_))
    ));

    let made = checkpoints.checkpoint().await.unwrap().unwrap();
    assert_eq!(made.size, 3);
    let vkey = checkpoints.key().vkey();
    assert!(vkey.starts_with("hsm.example/audit+"), "{vkey}");
    let pinned = tufa_audit::CheckpointKey::from_vkey(&vkey).unwrap();
    let head = tufa_audit::checkpoint::open(&made.note, &pinned).unwrap();
    assert_eq!((head.origin.as_str(), head.size), ("hsm.example/audit", 3));

    // Reopened (a restart): the same token key signs the next checkpoint.
    let reopened: Arc<dyn KeyBackend> = Arc::new(token.open(1));
    let again = Checkpointer::open(store.clone(), reopened.clone(), None).await.unwrap();
    assert_eq!(again.key_id(), checkpoints.key_id());
    SignerService::new(store.clone(), reopened).sign(&key.key_id, b"again", "CN=tufa-server").await.unwrap();
    assert_eq!(again.checkpoint().await.unwrap().map(|made| made.size), Some(4));

    let verification = tufa_signer::run::verify_log(&store, Some(&vkey)).await.unwrap();
    assert!(verification.report.ok(), "{:?}", verification.report);
    assert_eq!((verification.report.entries, verification.report.checkpoints), (4, 2));
}
