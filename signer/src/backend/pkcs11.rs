//! The PKCS#11 key backend: private keys are generated inside a token (an HSM such as a YubiHSM 2,
//! or SoftHSM) and never leave it; signing runs on a pool of logged-in sessions through cryptoki.
//!
//! Shape of the backend:
//! * one `Pkcs11` context per module and process (`C_Initialize` runs once, see `context_for`);
//! * a fixed number of pool tickets, each holding at most one R/W session and a small cache of
//!   object handles. A ticket has exactly one owner at a time (the blocking task that took it), so a
//!   session is never used from two threads at once, and concurrent signs use different sessions;
//! * every PKCS#11 call runs on `tokio::task::spawn_blocking`, so the async runtime never blocks on
//!   the token;
//! * a lost session (token removed and re-inserted, session closed, login lost) is replaced once
//!   per operation: the slot is looked up again by label, a session opened, and the user logged in.
//!
//! ECDSA keys are P-256. The message is hashed with SHA-256 in software and the digest signed with
//! `CKM_ECDSA`, which every token has (SoftHSM 2.6 lacks `CKM_ECDSA_SHA256`); the result is the raw
//! `r‖s` Notary expects. Ed25519 is offered only when the token advertises
//! `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA`.
//!
//! Keys are named by a random 16-byte `CKA_ID` (the handle the service stores). Tokens that only
//! take their own IDs cannot generate keys here: ykcs11 (YubiKey PIV) accepts only 1-byte PIV
//! slot numbers and generates only when logged in as SO; those requests fail as `Unsupported`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use tokio::sync::Semaphore;
use tufa_common::files::{self, FileError};
use tufa_core::keys::{Algorithm, KeyType, PublicKey};
use zeroize::Zeroizing;

use super::{BackendError, KeyBackend, NewKey};
use crate::config::Pkcs11Settings;

/// The backend's name in logs and in the key table's `sealed_with` column.
const BACKEND_NAME: &str = "pkcs11";
/// Length of the random `CKA_ID` given to generated keys.
const KEY_ID_LEN: usize = 16;
/// Longest `CKA_ID` accepted as a handle (tokens use 1 to 20 bytes in practice).
const MAX_HANDLE_LEN: usize = 255;
/// Largest PIN file read, in bytes; a PIN is far shorter.
const MAX_PIN_FILE_LEN: u64 = 4096;
/// Largest pool accepted; tokens limit sessions far below this.
const MAX_SESSIONS: usize = 1024;
/// `CKA_LABEL` given at generation, replaced by `tufa:<key id prefix>` once the key ID is known.
const PROVISIONAL_LABEL: &str = "tufa";
/// How long a cached object handle is used before it is checked again (see `KeyCache::private_key`).
const REVALIDATE_AFTER: Duration = Duration::from_secs(5);
/// How many hex digits of the TUF key ID go into `CKA_LABEL`.
const LABEL_KEY_ID_DIGITS: usize = 16;

/// DER OID of prime256v1 (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of P-256 keys.
const P256_OID_DER: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DER OID of Ed25519 (1.3.101.112, RFC 8410), the `CKA_EC_PARAMS` of Ed25519 keys.
const ED25519_OID_DER: [u8; 5] = [0x06, 0x03, 0x2B, 0x65, 0x70];
/// Everything of a P-256 SubjectPublicKeyInfo before the 65-byte uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (no unused bits) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, // SEQUENCE, 89 bytes
    0x30, 0x13, // SEQUENCE, 19 bytes: AlgorithmIdentifier
    0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, // OID 1.2.840.10045.2.1 id-ecPublicKey
    0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, // OID 1.2.840.10045.3.1.7 prime256v1
    0x03, 0x42, 0x00, // BIT STRING, 66 bytes, 0 unused bits
];
/// Length of an uncompressed SEC 1 P-256 point (`04 ‖ X ‖ Y`).
const P256_POINT_LEN: usize = 65;
/// Byte length of a P-256 scalar (`r`, `s`).
const P256_SCALAR_LEN: usize = 32;
/// Length of an Ed25519 public key and of half an Ed25519 signature.
const ED25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
const ED25519_SIGNATURE_LEN: usize = 64;

/// Keys held in a PKCS#11 token, used through a pool of logged-in sessions.
///
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Pkcs11Backend {
    shared: Arc<Shared>,
}

/// Protection attributes of a private key object, read back from the token by
/// [`Pkcs11Backend::inspect`]. Values a token declines to report are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_LABEL` of the private key, lossily decoded as UTF-8.
    pub label: String,
    /// `CKA_TOKEN`: the key is stored on the token (not a session object).
    pub token: Option<bool>,
    /// `CKA_PRIVATE`: the key is only visible after login.
    pub private: Option<bool>,
    /// `CKA_SENSITIVE`: the key value cannot be read in plaintext.
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`: the key could be wrapped out of the token.
    pub extractable: Option<bool>,
    /// `CKA_ALWAYS_SENSITIVE`: the key has been sensitive since it was made.
    pub always_sensitive: Option<bool>,
    /// `CKA_NEVER_EXTRACTABLE`: the key has never been extractable.
    pub never_extractable: Option<bool>,
    /// Whether a public key object with the same `CKA_ID` exists too.
    pub has_public_object: bool,
}

/// State shared by the backend handle and the blocking tasks that use the token.
struct Shared {
    context: Pkcs11,
    module: PathBuf,
    token: TokenSelector,
    /// The slot the token was last found in (SoftHSM and hot-plugged readers renumber slots).
    slot: Mutex<Slot>,
    pin: AuthPin,
    /// Set once the token rejects the PIN: later re-logins are refused so that a token with a
    /// retry counter (YubiKey PIV, smart cards) is not locked by the signer retrying.
    pin_rejected: AtomicBool,
    mechanisms: Mechanisms,
    /// Pool tickets not in use. `permits` has as many permits as there are tickets, so a task
    /// that holds a permit always finds a ticket here.
    idle: Mutex<Vec<Ticket>>,
    permits: Arc<Semaphore>,
    /// Bumped after every destroy, so that sessions drop cached object handles that may now be
    /// stale (a token may reuse a destroyed object's handle for a new object).
    destroy_epoch: AtomicU64,
}

/// How the token is chosen.
#[derive(Clone, Debug)]
enum TokenSelector {
    Label(String),
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(label) => write!(f, "token '{label}'"),
            TokenSelector::Slot(slot) => write!(f, "the token in slot {slot}"),
        }
    }
}

/// The mechanisms this backend uses that the token advertises.
#[derive(Clone, Copy, Debug, Default)]
struct Mechanisms {
    ec_key_pair_gen: bool,
    ecdsa: bool,
    edwards_key_pair_gen: bool,
    eddsa: bool,
}

impl Mechanisms {
    fn ed25519(self) -> bool {
        self.edwards_key_pair_gen && self.eddsa
    }
}

/// One place in the pool: a session (absent until opened or after it was lost) and the object
/// handles it has looked up.
struct Ticket {
    session: Option<Session>,
    keys: HashMap<Vec<u8>, CachedKey>,
    /// The value of `Shared::destroy_epoch` when `keys` was last known to be current.
    epoch: u64,
}

impl Ticket {
    fn empty() -> Ticket {
        Ticket { session: None, keys: HashMap::new(), epoch: 0 }
    }
}

/// A private key object found by `CKA_ID`.
#[derive(Clone, Copy, Debug)]
struct CachedKey {
    object: ObjectHandle,
    kind: KeyKind,
    /// When the handle was last confirmed to name this key.
    checked: Instant,
}

/// The key types this backend signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Ec,
    Edwards,
    Other,
}

impl KeyKind {
    fn from_ck(key_type: CkKeyType) -> KeyKind {
        if key_type == CkKeyType::EC {
            KeyKind::Ec
        } else if key_type == CkKeyType::EC_EDWARDS {
            KeyKind::Edwards
        } else {
            KeyKind::Other
        }
    }

    fn for_algorithm(algorithm: Algorithm) -> KeyKind {
        match algorithm {
            Algorithm::Ecdsa => KeyKind::Ec,
            Algorithm::Ed25519 => KeyKind::Edwards,
        }
    }
}

/// Why an operation on a session failed.
enum OpError {
    /// A PKCS#11 call failed; `what` says what the backend was doing.
    Call { what: &'static str, error: CkError },
    /// An outcome that retrying on a new session would not change.
    Final(BackendError),
}

impl OpError {
    fn call(what: &'static str) -> impl FnOnce(CkError) -> OpError {
        move |error| OpError::Call { what, error }
    }
}

impl From<BackendError> for OpError {
    fn from(error: BackendError) -> OpError {
        OpError::Final(error)
    }
}

impl Pkcs11Backend {
    /// Loads the module (once per process), finds the token, logs in as the user and opens
    /// `settings.sessions` R/W sessions.
    ///
    /// This makes blocking PKCS#11 calls; call it at start-up or from `spawn_blocking`.
    /// Login state is per process and token in PKCS#11: a second backend on a token this process
    /// is already logged in to shares that login and does not check its own PIN.
    pub fn open(settings: &Pkcs11Settings) -> Result<Pkcs11Backend, BackendError> {
        let token = match (&settings.token_label, settings.slot) {
            (Some(label), None) if !label.trim().is_empty() => TokenSelector::Label(label.trim_end().to_owned()),
            (Some(_), None) => return Err(config_error("pkcs11.token_label is empty")),
            (None, Some(slot)) => TokenSelector::Slot(slot),
            _ => return Err(config_error("set exactly one of pkcs11.token_label and pkcs11.slot")),
        };
        if settings.sessions == 0 || settings.sessions > MAX_SESSIONS {
            return Err(config_error(&format!("pkcs11.sessions must be between 1 and {MAX_SESSIONS}")));
        }
        let pin = read_pin(settings)?;
        let context = context_for(&settings.module)?;
        let slot = find_slot(&context, &token)?;
        let mechanisms = read_mechanisms(&context, slot, &token)?;
        if !mechanisms.ecdsa {
            return Err(BackendError::Unsupported(format!(
                "{token} does not offer CKM_ECDSA, which this backend signs with"
            )));
        }

        let shared = Arc::new(Shared {
            context,
            module: settings.module.clone(),
            token,
            slot: Mutex::new(slot),
            pin,
            pin_rejected: AtomicBool::new(false),
            mechanisms,
            idle: Mutex::new(Vec::with_capacity(settings.sessions)),
            permits: Arc::new(Semaphore::new(settings.sessions)),
            destroy_epoch: AtomicU64::new(0),
        });
        // Open every session now, so that a wrong PIN or a token short of sessions shows at start-up.
        let mut tickets = Vec::with_capacity(settings.sessions);
        for _ in 0..settings.sessions {
            let session = shared.open_session()?;
            tickets.push(Ticket { session: Some(session), keys: HashMap::new(), epoch: 0 });
        }
        *lock(&shared.idle) = tickets;
        tracing::info!(
            module = %shared.module.display(),
            token = %shared.token,
            slot = slot.id(),
            sessions = settings.sessions,
            ed25519 = mechanisms.ed25519(),
            "PKCS#11 backend ready"
        );
        Ok(Pkcs11Backend { shared })
    }

    /// Whether the token can generate and use Ed25519 keys.
    pub fn supports_ed25519(&self) -> bool {
        self.shared.mechanisms.ed25519()
    }

    /// Reads the protection attributes of the private key with `CKA_ID` = `handle`, to check that
    /// a key is sensitive and not extractable.
    pub async fn inspect(&self, handle: &[u8]) -> Result<KeyProtection, BackendError> {
        check_handle(handle)?;
        let handle = handle.to_vec();
        self.with_session("inspect", move |session, _cache| inspect_key(session, &handle)).await
    }

    /// Runs `op` on a pooled session inside `spawn_blocking`, replacing a lost session once.
    ///
    /// The ticket goes back to the pool from inside the blocking task, so dropping the returned
    /// future (a cancelled request) neither leaks a session nor hands it out while in use.
    async fn with_session<T, F>(&self, operation: &'static str, op: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: Fn(&Session, &mut KeyCache<'_>) -> Result<T, OpError> + Send + 'static,
    {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| BackendError::Unavailable("the PKCS#11 session pool is closed".to_owned()))?;
        let shared = Arc::clone(&self.shared);
        let task = tokio::task::spawn_blocking(move || {
            let mut ticket = lock(&shared.idle).pop().unwrap_or_else(Ticket::empty);
            let result = shared.run(operation, &mut ticket, &op);
            lock(&shared.idle).push(ticket);
            drop(permit);
            result
        });
        task.await.map_err(|_| BackendError::Internal(format!("the PKCS#11 {operation} task failed")))?
    }
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.shared.module)
            .field("token", &self.shared.token)
            .field("idle_sessions", &self.shared.permits.available_permits())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    async fn generate(&self, algorithm: Algorithm) -> Result<NewKey, BackendError> {
        let mechanisms = self.shared.mechanisms;
        match algorithm {
            Algorithm::Ecdsa if !mechanisms.ec_key_pair_gen => {
                return Err(BackendError::Unsupported(format!(
                    "{} cannot generate EC keys (no CKM_EC_KEY_PAIR_GEN)",
                    self.shared.token
                )));
            }
            Algorithm::Ed25519 if !mechanisms.ed25519() => {
                return Err(BackendError::Unsupported(format!(
                    "{} cannot generate or use Ed25519 keys (it lacks CKM_EC_EDWARDS_KEY_PAIR_GEN or \
                     CKM_EDDSA); use ecdsa keys with this backend",
                    self.shared.token
                )));
            }
            _ => {}
        }
        let new_key = self
            .with_session("generate", move |session, _cache| {
                let mut id = vec![0u8; KEY_ID_LEN];
                aws_lc_rs::rand::fill(&mut id)
                    .map_err(|_| BackendError::Internal("the random number generator failed".to_owned()))?;
                generate_key_pair(session, algorithm, id)
            })
            .await?;
        tracing::info!(key.id = %new_key.key_id, algorithm = %algorithm, token = %self.shared.token, "generated a key in the PKCS#11 token");
        Ok(new_key)
    }

    async fn sign(
        &self,
        key_id: &str,
        algorithm: Algorithm,
        handle: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        check_handle(handle).map_err(|_| BackendError::NotFound(key_id.to_owned()))?;
        if algorithm == Algorithm::Ed25519 && !self.shared.mechanisms.ed25519() {
            return Err(BackendError::Unsupported(format!("{} cannot sign with Ed25519", self.shared.token)));
        }
        // ECDSA signs the SHA-256 digest (hashed here, in software); Ed25519 signs the message.
        let input = match algorithm {
            Algorithm::Ecdsa => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref().to_vec(),
            Algorithm::Ed25519 => message.to_vec(),
        };
        let handle = handle.to_vec();
        let key_id = key_id.to_owned();
        self.with_session("sign", move |session, cache| {
            let mut looked_up_again = false;
            let signature = loop {
                let key = cache.private_key(session, &handle, &key_id)?;
                if key.kind != KeyKind::for_algorithm(algorithm) {
                    return Err(OpError::Final(BackendError::Internal(format!(
                        "key {key_id} in the token is not an {algorithm} key"
                    ))));
                }
                let signed = match algorithm {
                    Algorithm::Ecdsa => session.sign(&Mechanism::Ecdsa, key.object, &input),
                    Algorithm::Ed25519 => session.sign(
                        &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                        key.object,
                        &input,
                    ),
                };
                match signed {
                    Ok(signature) => break signature,
                    // A cached handle went stale (the key was destroyed elsewhere, or the token
                    // was reset): look the key up again, once.
                    Err(error) if is_stale_object(&error) && !looked_up_again => {
                        cache.forget(&handle);
                        looked_up_again = true;
                    }
                    Err(error) if is_stale_object(&error) => {
                        cache.forget(&handle);
                        return Err(OpError::Final(BackendError::NotFound(key_id.clone())));
                    }
                    Err(error) => return Err(OpError::Call { what: "signing", error }),
                }
            };
            match algorithm {
                Algorithm::Ecdsa => ecdsa_raw_signature(&signature).map_err(OpError::Final),
                Algorithm::Ed25519 if signature.len() == ED25519_SIGNATURE_LEN => Ok(signature),
                Algorithm::Ed25519 => Err(OpError::Final(BackendError::Internal(format!(
                    "the token returned a {}-byte Ed25519 signature",
                    signature.len()
                )))),
            }
        })
        .await
    }

    async fn destroy(&self, key_id: &str, handle: &[u8]) -> Result<(), BackendError> {
        check_handle(handle).map_err(|_| BackendError::NotFound(key_id.to_owned()))?;
        let handle = handle.to_vec();
        let destroyed = self.with_session("destroy", move |session, _cache| destroy_objects(session, &handle)).await;
        // Bump even after a failure: some objects may be gone.
        self.shared.destroy_epoch.fetch_add(1, Ordering::AcqRel);
        let destroyed = destroyed?;
        tracing::info!(key.id = %key_id, objects = destroyed, token = %self.shared.token, "destroyed a key in the PKCS#11 token");
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        if self.shared.pin_rejected.load(Ordering::Acquire) {
            return Err(pin_rejected_error(&self.shared.token));
        }
        let shared = Arc::clone(&self.shared);
        self.with_session("health check", move |session, _cache| {
            // Logged out behind our back: `run` logs in again on a new session.
            ensure_logged_in(session, Function::GetSessionInfo)?;
            let slot = *lock(&shared.slot);
            let token = shared.context.get_token_info(slot).map_err(OpError::call("reading the token information"))?;
            if token.error_state() {
                return Err(OpError::Final(BackendError::Unavailable(format!(
                    "{} reports an error state",
                    shared.token
                ))));
            }
            Ok(())
        })
        .await
    }
}

impl Shared {
    /// Runs `op` on the ticket's session, opening a session first if it has none and replacing a
    /// session that turns out to be lost (once).
    fn run<T>(
        &self,
        operation: &'static str,
        ticket: &mut Ticket,
        op: &dyn Fn(&Session, &mut KeyCache<'_>) -> Result<T, OpError>,
    ) -> Result<T, BackendError> {
        let mut fresh = false;
        loop {
            let session = match ticket.session.take() {
                Some(session) => session,
                None => {
                    fresh = true;
                    ticket.keys.clear();
                    self.open_session()?
                }
            };
            let epoch = self.destroy_epoch.load(Ordering::Acquire);
            if ticket.epoch != epoch {
                ticket.keys.clear();
                ticket.epoch = epoch;
            }
            let result = op(&session, &mut KeyCache { keys: &mut ticket.keys });
            match result {
                Ok(value) => {
                    ticket.session = Some(session);
                    return Ok(value);
                }
                Err(OpError::Final(error)) => {
                    ticket.session = Some(session);
                    return Err(error);
                }
                Err(OpError::Call { what, error }) if is_session_lost(&error) && !fresh => {
                    tracing::warn!(
                        token = %self.token,
                        operation,
                        error = %short_error(&error),
                        "PKCS#11 session lost while {what}; opening a new session and retrying once"
                    );
                    // Dropping the session closes it; an already closed handle is ignored.
                    drop(session);
                    ticket.keys.clear();
                }
                Err(OpError::Call { what, error }) => {
                    let lost = is_session_lost(&error);
                    if !lost {
                        ticket.session = Some(session);
                    }
                    return Err(classify(&self.token, what, &error));
                }
            }
        }
    }

    /// Opens a R/W session on the token (finding its slot again if needed) and logs in.
    fn open_session(&self) -> Result<Session, BackendError> {
        if self.pin_rejected.load(Ordering::Acquire) {
            return Err(pin_rejected_error(&self.token));
        }
        let mut slot = *lock(&self.slot);
        let session = match self.context.open_rw_session(slot) {
            Ok(session) => session,
            Err(error) if is_session_lost(&error) || is_slot_gone(&error) => {
                // The token may have moved to another slot (re-plugged, re-initialised).
                slot = find_slot(&self.context, &self.token)?;
                *lock(&self.slot) = slot;
                self.context
                    .open_rw_session(slot)
                    .map_err(|error| classify(&self.token, "opening a session", &error))?
            }
            Err(error) => return Err(classify(&self.token, "opening a session", &error)),
        };
        self.login(&session)?;
        Ok(session)
    }

    /// Logs the user in unless this process already is (login is per process and token).
    fn login(&self, session: &Session) -> Result<(), BackendError> {
        let info =
            session.get_session_info().map_err(|error| classify(&self.token, "reading the session state", &error))?;
        if matches!(info.session_state(), SessionState::RwUser | SessionState::RoUser) {
            return Ok(());
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinLocked
                | RvError::PinExpired),
                _,
            )) => {
                self.pin_rejected.store(true, Ordering::Release);
                Err(BackendError::Internal(format!(
                    "logging in to {} failed: the token rejected the configured PIN ({rv:?})",
                    self.token
                )))
            }
            Err(error) => Err(classify(&self.token, "logging in", &error)),
        }
    }
}

/// The cache of private-key object handles of one session, keyed by `CKA_ID`.
struct KeyCache<'a> {
    keys: &'a mut HashMap<Vec<u8>, CachedKey>,
}

impl KeyCache<'_> {
    /// Finds the private key with `CKA_ID` = `id`, from the cache or the token.
    ///
    /// A cached handle older than `REVALIDATE_AFTER` is first checked with one
    /// `C_GetAttributeValue`: a key destroyed by another process could otherwise leave a handle that
    /// the token later reuses for a different object. (Destroys through this backend clear every
    /// session's cache at once; see `Shared::destroy_epoch`.)
    fn private_key(&mut self, session: &Session, id: &[u8], key_id: &str) -> Result<CachedKey, OpError> {
        if let Some(key) = self.keys.get_mut(id) {
            if key.checked.elapsed() < REVALIDATE_AFTER {
                return Ok(*key);
            }
            let still_valid = match session.get_attributes(key.object, &[AttributeType::Class, AttributeType::Id]) {
                Ok(attributes) => {
                    attributes.contains(&Attribute::Class(ObjectClass::PRIVATE_KEY))
                        && attributes.contains(&Attribute::Id(id.to_vec()))
                }
                Err(error) if is_stale_object(&error) => false,
                Err(error) => return Err(OpError::Call { what: "checking a cached key handle", error }),
            };
            if still_valid {
                key.checked = Instant::now();
                return Ok(*key);
            }
            self.keys.remove(id);
        }
        // C_FindObjects is the slow part: SoftHSM compares the CKA_ID of every private object,
        // decrypting each (about 8 ms with 100 keys on the token, against 0.1 ms for C_Sign).
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Id(id.to_vec())])
            .map_err(OpError::call("looking up the key"))?;
        let object = match found.as_slice() {
            [] => {
                // A session that lost its login sees no private objects at all.
                ensure_logged_in(session, Function::FindObjects)?;
                return Err(OpError::Final(BackendError::NotFound(key_id.to_owned())));
            }
            [object] => *object,
            _ => {
                return Err(OpError::Final(BackendError::Internal(format!(
                    "{} private keys in the token share the CKA_ID of key {key_id}",
                    found.len()
                ))));
            }
        };
        let attributes = match session.get_attributes(object, &[AttributeType::KeyType]) {
            Ok(attributes) => attributes,
            Err(error) if is_stale_object(&error) => {
                return Err(OpError::Final(BackendError::NotFound(key_id.to_owned())));
            }
            Err(error) => return Err(OpError::Call { what: "reading the key type", error }),
        };
        let kind = attributes
            .iter()
            .find_map(|attribute| match attribute {
                Attribute::KeyType(key_type) => Some(KeyKind::from_ck(*key_type)),
                _ => None,
            })
            .unwrap_or(KeyKind::Other);
        let key = CachedKey { object, kind, checked: Instant::now() };
        self.keys.insert(id.to_vec(), key);
        Ok(key)
    }

    fn forget(&mut self, id: &[u8]) {
        self.keys.remove(id);
    }
}

/// Generates a key pair with `CKA_ID` = `id` and builds the `NewKey` for it.
fn generate_key_pair(session: &Session, algorithm: Algorithm, id: Vec<u8>) -> Result<NewKey, OpError> {
    let (mechanism, key_type, params) = match algorithm {
        Algorithm::Ecdsa => (Mechanism::EccKeyPairGen, CkKeyType::EC, P256_OID_DER.to_vec()),
        Algorithm::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, CkKeyType::EC_EDWARDS, ED25519_OID_DER.to_vec()),
    };
    let label = PROVISIONAL_LABEL.as_bytes().to_vec();
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::KeyType(key_type),
        Attribute::Verify(true),
        Attribute::EcParams(params),
        Attribute::Id(id.clone()),
        Attribute::Label(label.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::KeyType(key_type),
        Attribute::Id(id.clone()),
        Attribute::Label(label),
    ];
    let (public_object, private_object) = session
        .generate_key_pair(&mechanism, &public_template, &private_template)
        .map_err(OpError::call("generating a key pair"))?;

    let public = match read_public_key(session, public_object, algorithm) {
        Ok(public) => public,
        Err(error) => {
            // Do not leave a key behind that the service will never know about.
            for object in [public_object, private_object] {
                if let Err(cleanup) = session.destroy_object(object) {
                    tracing::warn!(error = %short_error(&cleanup), "could not remove a half-made key from the token");
                }
            }
            return Err(error);
        }
    };
    let key_id = public.key_id();

    // Name the objects after the key, for people browsing the token. Some tokens do not allow
    // changing CKA_LABEL; the key works without it.
    let prefix = key_id.get(..LABEL_KEY_ID_DIGITS).unwrap_or(&key_id);
    let label = format!("tufa:{prefix}").into_bytes();
    for object in [public_object, private_object] {
        if let Err(error) = session.update_attributes(object, &[Attribute::Label(label.clone())]) {
            tracing::debug!(key.id = %key_id, error = %short_error(&error), "could not set CKA_LABEL on a new key");
        }
    }
    Ok(NewKey { key_id, public, handle: id, sealed_with: BACKEND_NAME.to_owned() })
}

/// Reads the public key of a new key pair from its `CKA_EC_POINT`.
fn read_public_key(session: &Session, object: ObjectHandle, algorithm: Algorithm) -> Result<PublicKey, OpError> {
    let attributes =
        session.get_attributes(object, &[AttributeType::EcPoint]).map_err(OpError::call("reading the public key"))?;
    let point = attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        })
        .ok_or_else(|| BackendError::Internal("the token did not return CKA_EC_POINT".to_owned()))?;
    let public = match algorithm {
        Algorithm::Ecdsa => PublicKey::new(KeyType::Ecdsa, p256_spki(&point)?),
        Algorithm::Ed25519 => PublicKey::new(KeyType::Ed25519, ed25519_public(&point)?),
    };
    Ok(public)
}

/// Destroys the private and public key objects with `CKA_ID` = `id`; returns how many there were.
fn destroy_objects(session: &Session, id: &[u8]) -> Result<usize, OpError> {
    // A session without login sees no private keys and would "destroy" nothing.
    ensure_logged_in(session, Function::FindObjects)?;
    let mut destroyed = 0;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        let objects = session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(OpError::call("looking up the key"))?;
        for object in objects {
            match session.destroy_object(object) {
                Ok(()) => destroyed += 1,
                // Destroyed concurrently by someone else: that is what we wanted.
                Err(error) if is_stale_object(&error) => {}
                Err(error) => return Err(OpError::Call { what: "destroying the key", error }),
            }
        }
    }
    Ok(destroyed)
}

/// Fails with a session-lost error (which makes `Shared::run` log in again on a new session) if
/// the session is no longer logged in, for example after another part of the process logged out.
fn ensure_logged_in(session: &Session, function: Function) -> Result<(), OpError> {
    let info = session.get_session_info().map_err(OpError::call("reading the session state"))?;
    match info.session_state() {
        SessionState::RwUser | SessionState::RoUser => Ok(()),
        _ => Err(OpError::Call {
            what: "checking the login state",
            error: CkError::Pkcs11(RvError::UserNotLoggedIn, function),
        }),
    }
}

/// Reads the protection attributes of the private key with `CKA_ID` = `id`.
fn inspect_key(session: &Session, id: &[u8]) -> Result<KeyProtection, OpError> {
    let find = |class| {
        session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(OpError::call("looking up the key"))
    };
    let private = find(ObjectClass::PRIVATE_KEY)?;
    let object = match private.as_slice() {
        [object] => *object,
        [] => {
            ensure_logged_in(session, Function::FindObjects)?;
            return Err(OpError::Final(BackendError::NotFound(hex::encode(id))));
        }
        _ => return Err(OpError::Final(BackendError::Internal("several private keys share this CKA_ID".to_owned()))),
    };
    let has_public_object = !find(ObjectClass::PUBLIC_KEY)?.is_empty();
    let attributes = session
        .get_attributes(
            object,
            &[
                AttributeType::Label,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(OpError::call("reading the key attributes"))?;
    let mut protection = KeyProtection {
        label: String::new(),
        token: None,
        private: None,
        sensitive: None,
        extractable: None,
        always_sensitive: None,
        never_extractable: None,
        has_public_object,
    };
    for attribute in attributes {
        match attribute {
            Attribute::Label(label) => protection.label = String::from_utf8_lossy(&label).into_owned(),
            Attribute::Token(value) => protection.token = Some(value),
            Attribute::Private(value) => protection.private = Some(value),
            Attribute::Sensitive(value) => protection.sensitive = Some(value),
            Attribute::Extractable(value) => protection.extractable = Some(value),
            Attribute::AlwaysSensitive(value) => protection.always_sensitive = Some(value),
            Attribute::NeverExtractable(value) => protection.never_extractable = Some(value),
            _ => {}
        }
    }
    Ok(protection)
}

/// The process-wide context for `module`: `C_Initialize` runs once per module and process.
fn context_for(module: &Path) -> Result<Pkcs11, BackendError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    // Symlinked paths of one library share a context.
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = lock(CONTEXTS.get_or_init(Mutex::default));
    if let Some(context) = contexts.get(&key) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(&key).map_err(|error| {
        BackendError::Unavailable(format!("cannot load the PKCS#11 module {}: {error}", module.display()))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Already initialised by other code in this process: the module is usable.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => {
            return Err(BackendError::Unavailable(format!(
                "initialising the PKCS#11 module {} failed: {}",
                module.display(),
                short_error(&error)
            )));
        }
    }
    contexts.insert(key, context.clone());
    Ok(context)
}

/// Finds the slot holding the configured token.
fn find_slot(context: &Pkcs11, token: &TokenSelector) -> Result<Slot, BackendError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|error| BackendError::Unavailable(format!("listing PKCS#11 slots failed: {}", short_error(&error))))?;
    match token {
        TokenSelector::Slot(wanted) => slots
            .into_iter()
            .find(|slot| slot.id() == *wanted)
            .ok_or_else(|| BackendError::Unavailable(format!("no token is present in PKCS#11 slot {wanted}"))),
        TokenSelector::Label(wanted) => {
            let mut labels = Vec::new();
            let mut matching = Vec::new();
            for slot in slots {
                // A slot whose token cannot be read now is skipped; it may be the one being re-plugged.
                let Ok(info) = context.get_token_info(slot) else { continue };
                // SoftHSM always offers one free slot with an uninitialised, unlabelled token.
                if !info.token_initialized() {
                    continue;
                }
                let label = info.label().trim_end().to_owned();
                if label == *wanted {
                    matching.push(slot);
                }
                labels.push(label);
            }
            match matching.as_slice() {
                [slot] => Ok(*slot),
                [] => Err(BackendError::Unavailable(format!(
                    "no PKCS#11 token labelled '{wanted}' is present (tokens present: {})",
                    if labels.is_empty() { "none".to_owned() } else { labels.join(", ") }
                ))),
                _ => Err(BackendError::Internal(format!(
                    "{} PKCS#11 tokens are labelled '{wanted}'; choose one with pkcs11.slot",
                    matching.len()
                ))),
            }
        }
    }
}

fn read_mechanisms(context: &Pkcs11, slot: Slot, token: &TokenSelector) -> Result<Mechanisms, BackendError> {
    let list = context.get_mechanism_list(slot).map_err(|error| {
        BackendError::Unavailable(format!("reading the mechanisms of {token} failed: {}", short_error(&error)))
    })?;
    let has = |wanted: MechanismType| list.contains(&wanted);
    Ok(Mechanisms {
        ec_key_pair_gen: has(MechanismType::ECC_KEY_PAIR_GEN),
        ecdsa: has(MechanismType::ECDSA),
        edwards_key_pair_gen: has(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN),
        eddsa: has(MechanismType::EDDSA),
    })
}

/// Reads the user PIN from `pin_file` or `pin_env`. Trailing line breaks are removed.
fn read_pin(settings: &Pkcs11Settings) -> Result<AuthPin, BackendError> {
    let (text, source) = match (&settings.pin_file, &settings.pin_env) {
        (Some(path), None) => (read_pin_file(path)?, format!("PIN file {}", path.display())),
        (None, Some(variable)) => {
            let value = match std::env::var(variable) {
                Ok(value) => Zeroizing::new(value),
                Err(std::env::VarError::NotPresent) => {
                    return Err(config_error(&format!("the PIN variable {variable} is not set")));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(config_error(&format!("the PIN variable {variable} is not valid UTF-8")));
                }
            };
            (value, format!("PIN variable {variable}"))
        }
        _ => return Err(config_error("set exactly one of pkcs11.pin_file and pkcs11.pin_env")),
    };
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(config_error(&format!("the {source} is empty")));
    }
    // `From<&str>` copies into an exactly sized box, which zeroizes on drop; `text` zeroizes too.
    Ok(AuthPin::from(pin))
}

/// What error messages call the PIN file.
const PIN_FILE: &str = "PKCS#11 PIN file";

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, BackendError> {
    let unreadable =
        |error: std::io::Error| config_error(&format!("cannot read the PIN file {}: {error}", path.display()));
    // A PIN file others may read is refused, like a key-encryption key file.
    let file = files::open_owner_only(PIN_FILE, path).map_err(|error| match error {
        FileError::Io { source, .. } => unreadable(source),
        other => config_error(&other.to_string()),
    })?;
    let bytes = files::read_limited_from(PIN_FILE, path, file, MAX_PIN_FILE_LEN).map_err(|error| match error {
        FileError::Io { source, .. } => unreadable(source),
        FileError::TooLarge { .. } => {
            config_error(&format!("the PIN file {} is longer than {MAX_PIN_FILE_LEN} bytes", path.display()))
        }
        other => config_error(&other.to_string()),
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| config_error(&format!("the PIN file {} is not UTF-8 text", path.display())))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Builds the DER SubjectPublicKeyInfo of a P-256 key from its `CKA_EC_POINT`, which is a DER
/// OCTET STRING wrapping the uncompressed point (PKCS#11 2.40) or, on some tokens, the bare point.
fn p256_spki(ec_point: &[u8]) -> Result<Vec<u8>, BackendError> {
    let point = unwrap_ec_point(ec_point, P256_POINT_LEN)
        .filter(|point| point.first() == Some(&0x04))
        .ok_or_else(|| malformed_point(ec_point.len()))?;
    let mut spki = Vec::with_capacity(P256_SPKI_PREFIX.len() + P256_POINT_LEN);
    spki.extend_from_slice(&P256_SPKI_PREFIX);
    spki.extend_from_slice(point);
    // Reject a point that is not on the curve now rather than at every verification.
    aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, &spki)
        .map_err(|_| BackendError::Internal("the token returned a P-256 point that is not on the curve".to_owned()))?;
    Ok(spki)
}

/// Extracts the 32-byte Ed25519 key from `CKA_EC_POINT` (a DER OCTET STRING or the bare key).
fn ed25519_public(ec_point: &[u8]) -> Result<Vec<u8>, BackendError> {
    unwrap_ec_point(ec_point, ED25519_KEY_LEN).map(<[u8]>::to_vec).ok_or_else(|| malformed_point(ec_point.len()))
}

/// Returns the `expected_len` bytes of an EC point given either bare or as a DER OCTET STRING.
fn unwrap_ec_point(ec_point: &[u8], expected_len: usize) -> Option<&[u8]> {
    if ec_point.len() == expected_len {
        return Some(ec_point);
    }
    let (tag, rest) = ec_point.split_first()?;
    if *tag != 0x04 {
        return None;
    }
    let (content, trailing) = der_content(rest)?;
    (trailing.is_empty() && content.len() == expected_len).then_some(content)
}

/// Splits a DER length and its content off `input`; returns the content and what follows.
fn der_content(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (first, rest) = input.split_first()?;
    let (len, rest) = match *first {
        short @ 0..=0x7F => (usize::from(short), rest),
        0x81 => {
            let (len, rest) = rest.split_first()?;
            if *len < 0x80 {
                return None; // not minimal
            }
            (usize::from(*len), rest)
        }
        0x82 => {
            let (len, rest) = rest.split_at_checked(2)?;
            let len = u16::from_be_bytes([*len.first()?, *len.get(1)?]);
            if len < 0x100 {
                return None; // not minimal
            }
            (usize::from(len), rest)
        }
        _ => return None,
    };
    rest.split_at_checked(len)
}

/// Normalises a token's ECDSA P-256 signature to raw `r‖s` (64 bytes): `CKM_ECDSA` returns that
/// already, but some tokens return a DER `Ecdsa-Sig-Value`.
fn ecdsa_raw_signature(signature: &[u8]) -> Result<Vec<u8>, BackendError> {
    if signature.len() == 2 * P256_SCALAR_LEN {
        return Ok(signature.to_vec());
    }
    let malformed =
        || BackendError::Internal(format!("the token returned a malformed {}-byte ECDSA signature", signature.len()));
    let (tag, rest) = signature.split_first().ok_or_else(malformed)?;
    if *tag != 0x30 {
        return Err(malformed());
    }
    let (body, trailing) = der_content(rest).ok_or_else(malformed)?;
    if !trailing.is_empty() {
        return Err(malformed());
    }
    let (r, body) = der_unsigned_integer(body).ok_or_else(malformed)?;
    let (s, body) = der_unsigned_integer(body).ok_or_else(malformed)?;
    if !body.is_empty() {
        return Err(malformed());
    }
    let mut raw = vec![0u8; 2 * P256_SCALAR_LEN];
    for (scalar, start) in [(r, 0), (s, P256_SCALAR_LEN)] {
        if scalar.len() > P256_SCALAR_LEN {
            return Err(malformed());
        }
        let offset = start + P256_SCALAR_LEN - scalar.len();
        raw.get_mut(offset..start + P256_SCALAR_LEN).ok_or_else(malformed)?.copy_from_slice(scalar);
    }
    Ok(raw)
}

/// Reads a DER INTEGER that must be positive; returns its magnitude without leading zeros.
fn der_unsigned_integer(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, rest) = input.split_first()?;
    if *tag != 0x02 {
        return None;
    }
    let (digits, rest) = der_content(rest)?;
    let (first, _) = digits.split_first()?;
    if first & 0x80 != 0 {
        return None; // negative
    }
    let start = digits.iter().position(|byte| *byte != 0).unwrap_or(digits.len());
    Some((digits.get(start..)?, rest))
}

fn check_handle(handle: &[u8]) -> Result<(), BackendError> {
    if handle.is_empty() || handle.len() > MAX_HANDLE_LEN {
        return Err(BackendError::NotFound(format!("a PKCS#11 key with a {}-byte CKA_ID", handle.len())));
    }
    Ok(())
}

/// Whether the error means the session or login is gone, so a new session may succeed.
fn is_session_lost(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Whether opening a session failed because the slot no longer holds the token.
fn is_slot_gone(error: &CkError) -> bool {
    matches!(error, CkError::Pkcs11(RvError::SlotIdInvalid, _))
}

/// Whether the error means an object handle is no longer valid.
fn is_stale_object(error: &CkError) -> bool {
    matches!(error, CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _))
}

/// Maps a PKCS#11 failure to a backend error. The text names the call and the return value only.
fn classify(token: &TokenSelector, what: &str, error: &CkError) -> BackendError {
    let text = format!("{what} on {token} failed: {}", short_error(error));
    match error {
        // The token cannot do what was asked the way it was asked: for example a YubiKey (ykcs11)
        // accepts only 1-byte PIV slot numbers as CKA_ID and key generation only as SO.
        CkError::Pkcs11(
            RvError::KeyTypeInconsistent
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
            | RvError::TemplateInconsistent
            | RvError::TemplateIncomplete
            | RvError::AttributeTypeInvalid
            | RvError::AttributeValueInvalid
            | RvError::UserTypeInvalid
            | RvError::CurveNotSupported,
            _,
        ) => BackendError::Unsupported(text),
        CkError::Pkcs11(RvError::DeviceMemory | RvError::SessionCount | RvError::FunctionCanceled, _) => {
            BackendError::Unavailable(text)
        }
        CkError::LibraryLoading(_) => BackendError::Unavailable(text),
        error if is_session_lost(error) || is_slot_gone(error) => BackendError::Unavailable(text),
        _ => BackendError::Internal(text),
    }
}

/// A one-line description of a cryptoki error: `C_Sign: PinIncorrect` rather than the crate's
/// paragraph-long return-value texts.
fn short_error(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

fn pin_rejected_error(token: &TokenSelector) -> BackendError {
    BackendError::Unavailable(format!(
        "{token} rejected the configured PIN; not retrying (fix the PIN and restart the signer)"
    ))
}

fn malformed_point(len: usize) -> BackendError {
    BackendError::Internal(format!("the token returned a malformed {len}-byte CKA_EC_POINT"))
}

fn config_error(text: &str) -> BackendError {
    BackendError::Internal(format!("PKCS#11 settings: {text}"))
}

/// Locks a mutex; a poisoned lock is still usable because every critical section here leaves
/// the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_group_readable_pin_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = read_pin_file(&path).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{}",
                config_error(&format!(
                    "PKCS#11 PIN file {0} is readable by group or others (mode 640); restrict it with `chmod 600 {0}`",
                    path.display()
                ))
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_pin_file(&path).unwrap().as_str(), "1234\n");
    }

    /// A P-256 public point (the generator G), uncompressed.
    fn generator_point() -> Vec<u8> {
        let mut point = vec![0x04];
        point.extend(hex::decode("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296").unwrap());
        point.extend(hex::decode("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5").unwrap());
        point
    }

    #[test]
    fn spki_from_der_octet_string_and_bare_point() {
        let point = generator_point();
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&point);
        let from_der = p256_spki(&wrapped).unwrap();
        let from_bare = p256_spki(&point).unwrap();
        assert_eq!(from_der, from_bare);
        assert_eq!(from_der.len(), 91);
        // The SPKI parses as an EC public key on prime256v1 with x509-parser too.
        use x509_parser::prelude::FromDer as _;
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&from_der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let curve = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");
        assert_eq!(spki.subject_public_key.data.as_ref(), point.as_slice());
    }

    /// The text of an `Internal` error, failing the test on anything else.
    fn internal<T: std::fmt::Debug>(result: Result<T, BackendError>) -> String {
        match result {
            Err(BackendError::Internal(text)) => text,
            other => panic!("expected an internal error, got {other:?}"),
        }
    }

    #[test]
    fn spki_rejects_bad_points() {
        let point = generator_point();
        // Long-form length, trailing byte, wrong tag, compressed point, point off the curve.
        let mut long_form = vec![0x04, 0x81, 0x41];
        long_form.extend_from_slice(&point);
        assert_eq!(internal(p256_spki(&long_form)), "the token returned a malformed 68-byte CKA_EC_POINT");
        let mut trailing = vec![0x04, 0x41];
        trailing.extend_from_slice(&point);
        trailing.push(0);
        assert_eq!(internal(p256_spki(&trailing)), "the token returned a malformed 68-byte CKA_EC_POINT");
        let mut wrong_tag = vec![0x03, 0x41];
        wrong_tag.extend_from_slice(&point);
        assert_eq!(internal(p256_spki(&wrong_tag)), "the token returned a malformed 67-byte CKA_EC_POINT");
        let mut compressed = point.clone();
        compressed[0] = 0x02;
        assert_eq!(internal(p256_spki(&compressed)), "the token returned a malformed 65-byte CKA_EC_POINT");
        let mut off_curve = point;
        off_curve[64] ^= 1;
        assert_eq!(internal(p256_spki(&off_curve)), "the token returned a P-256 point that is not on the curve");
        assert_eq!(internal(p256_spki(&[])), "the token returned a malformed 0-byte CKA_EC_POINT");
    }

    #[test]
    fn ed25519_point_forms() {
        let key = [7u8; 32];
        assert_eq!(ed25519_public(&key).unwrap(), key);
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&key);
        assert_eq!(ed25519_public(&wrapped).unwrap(), key);
        assert_eq!(internal(ed25519_public(&wrapped[..33])), "the token returned a malformed 33-byte CKA_EC_POINT");
    }

    #[test]
    fn raw_signature_passes_through() {
        let raw: Vec<u8> = (0..64).collect();
        assert_eq!(ecdsa_raw_signature(&raw).unwrap(), raw);
    }

    #[test]
    fn der_signature_becomes_padded_raw() {
        // r = 0x00ff.. (33 bytes with a sign pad), s = 0x01 (short): both normalised to 32 bytes.
        let r = [0xFFu8; 32];
        let mut der = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        der.extend_from_slice(&r);
        der.extend_from_slice(&[0x02, 0x01, 0x01]);
        let raw = ecdsa_raw_signature(&der).unwrap();
        assert_eq!(&raw[..32], &r);
        assert_eq!(&raw[32..63], &[0u8; 31]);
        assert_eq!(raw[63], 1);
    }

    #[test]
    fn malformed_der_signatures_are_rejected() {
        let check = |der: &[u8]| {
            let expected = format!("the token returned a malformed {}-byte ECDSA signature", der.len());
            assert_eq!(internal(ecdsa_raw_signature(der)), expected, "{der:02x?}");
        };
        check(&[]);
        check(&[0x30]);
        check(&[0x30, 0x03, 0x02, 0x01, 0x01]); // one integer only
        check(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01]); // negative r
        check(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00]); // trailing byte
        let mut too_long = vec![0x30, 0x27, 0x02, 0x22, 0x01];
        too_long.extend_from_slice(&[0u8; 33]);
        too_long.extend_from_slice(&[0x02, 0x01, 0x01]);
        check(&too_long);
    }

    #[test]
    fn der_signature_from_aws_lc_round_trips() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
        )
        .unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        let spki = p256_spki(pair.public_key().as_ref()).unwrap();
        let public = PublicKey::new(KeyType::Ecdsa, spki);
        for message in [&b"one"[..], b"two", b"three", b"four"] {
            let der = pair.sign(&rng, message).unwrap();
            let raw = ecdsa_raw_signature(der.as_ref()).unwrap();
            public.verify("ecdsa", message, &raw).unwrap();
        }
    }

    #[test]
    fn empty_and_oversized_handles_are_not_found() {
        let not_found = |result: Result<(), BackendError>| match result {
            Err(BackendError::NotFound(text)) => text,
            other => panic!("expected not found, got {other:?}"),
        };
        assert_eq!(not_found(check_handle(&[])), "a PKCS#11 key with a 0-byte CKA_ID");
        assert_eq!(not_found(check_handle(&[0; 256])), "a PKCS#11 key with a 256-byte CKA_ID");
        assert_eq!(check_handle(&[1; 16]).map_err(|error| error.to_string()), Ok(()));
    }

    #[test]
    fn short_errors_name_the_call() {
        let error = CkError::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert_eq!(short_error(&error), "C_Login returned PinIncorrect");
        let token = TokenSelector::Label("t".to_owned());
        assert!(matches!(
            classify(&token, "x", &CkError::Pkcs11(RvError::DeviceRemoved, Function::Sign)),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            classify(&token, "x", &CkError::Pkcs11(RvError::MechanismInvalid, Function::SignInit)),
            BackendError::Unsupported(_)
        ));
        assert!(matches!(
            classify(&token, "x", &CkError::Pkcs11(RvError::GeneralError, Function::Sign)),
            BackendError::Internal(_)
        ));
    }
}
