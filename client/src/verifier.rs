//! The verifier: a bounded LRU of per-GUN trust data in memory, each GUN behind its own async
//! lock so concurrent requests for one GUN share one fetch; a fresh entry (younger than
//! `refresh`) answers without a network call, an older one re-fetches the timestamp (and only
//! what changed); when the server cannot be reached, persisted data younger than
//! `max_staleness` is used (expired data only when the requirement allows expired cached data).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tufa_core::metadata::{FileMeta, Root, Signed, Snapshot, Timestamp};
use tufa_core::names::{Gun, check_target_name};

use crate::fetch::{FetchError, Fetcher, MAX_ROOT_BYTES, MAX_TIMESTAMP_BYTES, Source};
use crate::state::{GunState, StateDir};
use crate::tuf::{self, Freshness, MAX_ROLES, Refusal, RepoFiles, TrustData, TrustedRoot, Versions, normalize_digest};
use crate::{Credentials, Requirement, RoleRequirement, RootPin, Verdict, VerifyError};

/// Timeout of each HTTP request to the trust server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a refresh that changed nothing but the confirmation time writes the state.
pub const PERSIST_CONFIRMATION_EVERY: Duration = Duration::from_secs(60);
/// The shortest time before a server found unreachable is asked again (the refresh interval
/// when that is longer).
pub const MIN_OFFLINE_RETRY: Duration = Duration::from_secs(5);
/// Most bytes of one targets-type file, whatever its parent lists.
pub const MAX_METADATA_BYTES: u64 = 100 * 1024 * 1024;
/// Most bytes of all targets-type files of one repository together.
pub const MAX_REPOSITORY_BYTES: u64 = 256 * 1024 * 1024;
/// How many files of one repository are fetched at the same time.
pub const FETCH_CONCURRENCY: usize = 8;
/// Most root versions walked in one rotation chain.
pub const MAX_ROOT_ROTATIONS: i64 = 1_024;

/// How a [`Verifier`] reaches its trust server and keeps its state.
#[derive(Debug, Clone)]
pub struct Config {
    /// The trust server, e.g. `https://notary.example.com:4443`.
    pub server_url: String,
    /// The CA certificate(s), PEM, that are the only roots trusted for the server; `None` uses
    /// the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How to authenticate.
    pub credentials: Credentials,
    /// Where the per-GUN state is persisted (created owner-only).
    pub state_dir: PathBuf,
    /// Most GUNs kept in memory.
    pub max_repositories: usize,
    /// How long verified trust data is used without asking the server.
    pub refresh: Duration,
    /// How old persisted data may be when the server cannot be reached.
    pub max_staleness: Duration,
}

/// The in-memory state of one GUN.
#[derive(Default)]
struct SlotState {
    /// Whether the persisted state was read.
    loaded: bool,
    /// The persisted state (trusted root, versions, cached files).
    state: Option<GunState>,
    /// The trust data verified from it, with the root, and when the server last confirmed it.
    verified: Option<Verified>,
    /// When the state was last written.
    persisted: Option<Instant>,
    /// When the server was last found unreachable for this GUN (cleared by a good refresh).
    unreachable_at: Option<Instant>,
}

/// Verified trust data, its root, and when the server last confirmed it.
type Verified = (Arc<TrustData>, Arc<TrustedRoot>, Instant);

/// One GUN: the verified data readable without waiting (cache hits take only a read lock), and
/// the state behind an async lock held across a refresh, so concurrent requests share one fetch.
#[derive(Default)]
struct Slot {
    fresh: std::sync::RwLock<Option<Verified>>,
    state: tokio::sync::Mutex<SlotState>,
    /// The trusted root and the pin it last passed, so a cache hit with the same pin does not
    /// check the root's signatures and certificates again.
    pinned: std::sync::Mutex<Option<(Arc<TrustedRoot>, RootPin)>>,
}

impl Slot {
    /// Whether `root` passed `pin` before.
    fn passed(&self, root: &Arc<TrustedRoot>, pin: &RootPin) -> bool {
        self.pinned.lock().ok().is_some_and(|pinned| {
            pinned.as_ref().is_some_and(|(known, known_pin)| Arc::ptr_eq(known, root) && known_pin == pin)
        })
    }

    /// Remembers that `root` passed `pin`.
    fn pass(&self, root: &Arc<TrustedRoot>, pin: &RootPin) {
        if let Ok(mut pinned) = self.pinned.lock() {
            *pinned = Some((root.clone(), pin.clone()));
        }
    }

    /// The verified data, if younger than `refresh` and unexpired.
    fn hit(&self, refresh: Duration) -> Option<(Arc<TrustData>, Arc<TrustedRoot>)> {
        let fresh = self.fresh.read().ok()?;
        let (data, root, checked) = fresh.as_ref()?;
        (checked.elapsed() < refresh && data.expires > Utc::now()).then(|| (data.clone(), root.clone()))
    }
}

/// The bounded map of GUN slots, least recently used evicted first.
struct Slots {
    slots: HashMap<String, (Arc<Slot>, u64)>,
    clock: u64,
}

/// Verifies tags and digests of GUNs against one trust server.
pub struct Verifier {
    fetcher: Arc<dyn Source>,
    states: StateDir,
    config: Config,
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Verifier").field("fetcher", &self.fetcher).field("config", &self.config).finish()
    }
}

/// How a refresh ended without trust data.
enum Failure {
    /// A decided "no".
    Refused(Refusal),
    /// The server could not be asked; cached data may serve.
    Unreachable(String),
    /// Could not decide, and cached data must not serve.
    Error(VerifyError),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// Maps a fetch failure of `what` (a file of `gun`) to a refresh failure.
fn fetch_failure(gun: &str, role: &str, error: FetchError) -> Failure {
    match error {
        FetchError::NotFound if role == "root" || role == "timestamp" => {
            Failure::Refused(Refusal::NoTrustData(gun.to_owned()))
        }
        FetchError::NotFound => Failure::Refused(Refusal::Missing { gun: gun.to_owned(), role: role.to_owned() }),
        FetchError::Unauthorized(text) => Failure::Error(VerifyError::Unauthorized(text)),
        FetchError::TooLarge { what, limit } => Failure::Refused(Refusal::Limit {
            gun: gun.to_owned(),
            detail: format!("{what} is larger than {limit} bytes"),
        }),
        FetchError::Status(status) => Failure::Unreachable(format!("{role} of {gun}: the server answered {status}")),
        FetchError::Network(text) => Failure::Unreachable(format!("{role} of {gun}: {text}")),
    }
}

/// Fetches the file of `role` by the SHA-256 its parent lists, at most the listed length (and
/// never more than [`MAX_METADATA_BYTES`]).
async fn fetch_listed(fetcher: &dyn Source, gun: &str, role: &str, meta: &FileMeta) -> Result<Vec<u8>, Failure> {
    let Some(sha256) = meta.sha256() else {
        return Err(Refusal::Malformed {
            gun: gun.to_owned(),
            role: role.to_owned(),
            detail: "its parent lists no sha256".to_owned(),
        }
        .into());
    };
    let length = u64::try_from(meta.length).unwrap_or(0);
    if length > MAX_METADATA_BYTES {
        return Err(Refusal::Limit {
            gun: gun.to_owned(),
            detail: format!("{role} is listed with {length} bytes, more than {MAX_METADATA_BYTES}"),
        }
        .into());
    }
    fetcher.by_checksum(gun, role, &hex::encode(sha256), length).await.map_err(|error| fetch_failure(gun, role, error))
}

/// The result of one fetch task.
fn joined(
    gun: &str,
    done: Result<(String, Result<Vec<u8>, Failure>), tokio::task::JoinError>,
) -> Result<(String, Vec<u8>), Failure> {
    match done {
        Ok((role, Ok(bytes))) => Ok((role, bytes)),
        Ok((_, Err(failure))) => Err(failure),
        Err(error) => Err(Failure::Unreachable(format!("a fetch for {gun} did not finish: {error}"))),
    }
}

impl Verifier {
    /// A verifier for `config`: builds the HTTP client (with the CA as the only root) and opens
    /// the state directory.
    pub fn new(config: Config) -> Result<Self, VerifyError> {
        let fetcher =
            Fetcher::new(&config.server_url, config.ca_pem.as_deref(), config.credentials.clone(), REQUEST_TIMEOUT)
                .map_err(VerifyError::Config)?;
        Self::with_source(config, Arc::new(fetcher))
    }

    /// A verifier that reads metadata from `source` instead of `config.server_url` (which then
    /// only names the source in messages); the rest of `config` applies as in [`Verifier::new`].
    pub fn with_source(config: Config, source: Arc<dyn Source>) -> Result<Self, VerifyError> {
        let states = StateDir::open(&config.state_dir).map_err(|error| VerifyError::Config(error.to_string()))?;
        Ok(Self { fetcher: source, states, config, slots: Mutex::new(Slots { slots: HashMap::new(), clock: 0 }) })
    }

    /// The slot of `gun`, created if needed; evicts the least recently used slot beyond the bound.
    fn slot(&self, gun: &str) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            // A poisoned map only means another thread panicked mid-update; serve from a
            // throw-away slot (persisted state still applies).
            return Arc::new(Slot::default());
        };
        slots.clock = slots.clock.wrapping_add(1);
        let clock = slots.clock;
        if let Some((slot, used)) = slots.slots.get_mut(gun) {
            *used = clock;
            return slot.clone();
        }
        let slot = Arc::new(Slot::default());
        slots.slots.insert(gun.to_owned(), (slot.clone(), clock));
        while slots.slots.len() > self.config.max_repositories.max(1) {
            let oldest = slots.slots.iter().min_by_key(|(_, (_, used))| *used).map(|(name, _)| name.clone());
            match oldest {
                Some(name) => slots.slots.remove(&name),
                None => break,
            };
        }
        slot
    }

    /// Verifies `tag` and/or `digest` (`sha256:<hex>`) of `gun` as `requirement` asks. A decided
    /// answer is a [`Verdict`] (trusted or not, with the reason); [`VerifyError`] means the
    /// verifier could not decide (bad input, server unreachable without usable cached data).
    pub async fn verify(
        &self,
        gun: &str,
        tag: Option<&str>,
        digest: Option<&str>,
        requirement: &Requirement,
    ) -> Result<Verdict, VerifyError> {
        Gun::parse(gun)
            .map_err(|error| VerifyError::Input(format!("{gun:?} is not a valid repository name: {error}")))?;
        if let Some(tag) = tag {
            check_target_name(tag)
                .map_err(|error| VerifyError::Input(format!("{tag:?} is not a valid tag: {error}")))?;
        }
        let digest = match digest {
            Some(text) => Some(
                normalize_digest(text).ok_or_else(|| VerifyError::Input(format!("{text:?} is not a sha256 digest")))?,
            ),
            None => None,
        };
        if tag.is_none() && digest.is_none() {
            return Err(VerifyError::Input("neither a tag nor a digest was given".to_owned()));
        }
        match &requirement.roles {
            RoleRequirement::AllOf(roles) if roles.is_empty() => {
                return Err(VerifyError::Input("the list of required roles is empty".to_owned()));
            }
            RoleRequirement::AtLeast { roles, min } if *min == 0 || *min > roles.len() => {
                return Err(VerifyError::Input(format!(
                    "at least {min} of {} roles can never be required",
                    roles.len()
                )));
            }
            _ => {}
        }
        let slot = self.slot(gun);
        let untrusted =
            |reason: String| Verdict { trusted: false, digest: None, roles: Vec::new(), keys: Vec::new(), reason };
        let found = match slot.hit(self.config.refresh) {
            Some(found) => Ok(found),
            None => {
                let mut guard = slot.state.lock().await;
                let found = self.trust_data(gun, &mut guard, requirement).await;
                if let Ok(mut fresh) = slot.fresh.write() {
                    fresh.clone_from(&guard.verified);
                }
                found
            }
        };
        let (data, root) = match found {
            Ok(found) => found,
            Err(Failure::Refused(refusal)) => return Ok(untrusted(refusal.to_string())),
            Err(Failure::Unreachable(text)) => return Err(VerifyError::Unavailable(text)),
            Err(Failure::Error(error)) => return Err(error),
        };
        if !slot.passed(&root, &requirement.pin) {
            if let Err(refusal) = tuf::check_pin(gun, &root, &requirement.pin) {
                return Ok(untrusted(refusal.to_string()));
            }
            slot.pass(&root, &requirement.pin);
        }
        Ok(tuf::decide(&data, tag, digest.as_deref(), &requirement.roles))
    }

    /// The verified trust data of `gun`: fresh from memory, refreshed from the server, or (the
    /// server unreachable) from persisted data within the allowed staleness.
    async fn trust_data(
        &self,
        gun: &str,
        slot: &mut SlotState,
        requirement: &Requirement,
    ) -> Result<(Arc<TrustData>, Arc<TrustedRoot>), Failure> {
        if !slot.loaded {
            slot.state = self
                .states
                .load(gun)
                .map_err(|error| Failure::Error(VerifyError::Config(format!("trust state of {gun}: {error}"))))?;
            slot.loaded = true;
        }
        if let Some((data, root, checked)) = &slot.verified
            && checked.elapsed() < self.config.refresh
            && data.expires > Utc::now()
        {
            return Ok((data.clone(), root.clone()));
        }
        // A server found unreachable is not asked again for a while: each attempt may cost a
        // connection timeout, and the cached answer would be the same.
        let retry = self.config.refresh.max(MIN_OFFLINE_RETRY);
        if slot.unreachable_at.is_some_and(|at| at.elapsed() < retry) {
            return self.cached(gun, slot, requirement, format!("the trust server was unreachable for {gun} just now"));
        }
        match self.refresh(gun, slot, &requirement.pin).await {
            Ok(found) => {
                slot.unreachable_at = None;
                Ok(found)
            }
            Err(Failure::Unreachable(text)) => {
                tracing::warn!(gun, error = %text, "the trust server is unreachable; trying cached trust data");
                slot.unreachable_at = Some(Instant::now());
                self.cached(gun, slot, requirement, text)
            }
            Err(other) => Err(other),
        }
    }

    /// Verifies the persisted files without the server.
    fn cached(
        &self,
        gun: &str,
        slot: &SlotState,
        requirement: &Requirement,
        unreachable: String,
    ) -> Result<(Arc<TrustData>, Arc<TrustedRoot>), Failure> {
        let Some(state) = &slot.state else {
            return Err(Failure::Unreachable(unreachable));
        };
        let now = Utc::now();
        let age = now.signed_duration_since(state.fetched_at).to_std().unwrap_or(Duration::ZERO);
        if age > self.config.max_staleness {
            return Err(Failure::Unreachable(format!(
                "{unreachable}; the cached trust data of {gun} is {}s old, more than the {}s allowed",
                age.as_secs(),
                self.config.max_staleness.as_secs()
            )));
        }
        let (Some(timestamp), Some(snapshot)) = (state.files.get("timestamp"), state.files.get("snapshot")) else {
            return Err(Failure::Unreachable(format!("{unreachable}; no cached trust data of {gun}")));
        };
        let root = Arc::new(TrustedRoot::from_trusted_bytes(gun, state.root.clone())?);
        let files = RepoFiles {
            timestamp: timestamp.clone(),
            snapshot: snapshot.clone(),
            roles: state
                .files
                .iter()
                .filter(|(role, _)| role.starts_with("targets"))
                .map(|(role, bytes)| (role.clone(), bytes.clone()))
                .collect(),
        };
        let freshness = Freshness { now, from_cache: true, allow_expired_cached: requirement.allow_expired_cached };
        let data = tuf::verify_repository(gun, &root, &files, &state.versions, freshness)?;
        Ok((Arc::new(data), root))
    }

    /// Fetches what changed and verifies it; on success the slot and the persisted state hold
    /// the new data.
    async fn refresh(
        &self,
        gun: &str,
        slot: &mut SlotState,
        pin: &RootPin,
    ) -> Result<(Arc<TrustData>, Arc<TrustedRoot>), Failure> {
        let seen: Versions = slot.state.as_ref().map(|state| state.versions.clone()).unwrap_or_default();
        let mut root = match &slot.state {
            Some(state) => TrustedRoot::from_trusted_bytes(gun, state.root.clone())?,
            None => {
                let bytes = self
                    .fetcher
                    .current(gun, "root", MAX_ROOT_BYTES)
                    .await
                    .map_err(|error| fetch_failure(gun, "root", error))?;
                tuf::trust_root(gun, None, &[bytes], pin, &seen)?
            }
        };
        let timestamp = self
            .fetcher
            .current(gun, "timestamp", MAX_TIMESTAMP_BYTES)
            .await
            .map_err(|error| fetch_failure(gun, "timestamp", error))?;
        // An unchanged timestamp: everything it covers is unchanged.
        if let (Some(state), Some((data, trusted, _))) = (&mut slot.state, &slot.verified)
            && state.files.get("timestamp") == Some(&timestamp)
            && data.expires > Utc::now()
        {
            let found = (data.clone(), trusted.clone());
            state.fetched_at = Utc::now();
            // Only the confirmation time changed: write it now and then, not on every refresh.
            if slot.persisted.is_none_or(|written| written.elapsed() >= PERSIST_CONFIRMATION_EVERY) {
                self.persist(state);
                slot.persisted = Some(Instant::now());
            }
            slot.verified = Some((found.0.clone(), found.1.clone(), Instant::now()));
            return Ok(found);
        }
        let cached = slot.state.as_ref().map(|state| &state.files);
        let mut rotated = false;
        loop {
            let files = self.assemble(gun, &timestamp, cached).await?;
            let freshness = Freshness { now: Utc::now(), from_cache: false, allow_expired_cached: false };
            match tuf::verify_repository(gun, &root, &files, &seen, freshness) {
                Ok(data) => {
                    let mut stored: BTreeMap<String, Vec<u8>> = files.roles;
                    stored.insert("timestamp".to_owned(), files.timestamp);
                    stored.insert("snapshot".to_owned(), files.snapshot);
                    let state = GunState {
                        gun: gun.to_owned(),
                        root: root.bytes.clone(),
                        versions: data.versions.clone(),
                        files: stored,
                        fetched_at: Utc::now(),
                    };
                    self.persist(&state);
                    slot.persisted = Some(Instant::now());
                    let data = Arc::new(data);
                    let root = Arc::new(root);
                    slot.state = Some(state);
                    slot.verified = Some((data.clone(), root.clone(), Instant::now()));
                    return Ok((data, root));
                }
                // The root changed (the snapshot lists another, or the timestamp or snapshot keys
                // no longer verify): walk the rotation chain once, then try again.
                Err(refusal @ (Refusal::StaleRoot(_) | Refusal::Signature { .. })) if !rotated => {
                    rotated = true;
                    match self.rotate(gun, &root, pin, &seen).await? {
                        Some(newer) => root = newer,
                        None => return Err(refusal.into()),
                    }
                }
                Err(refusal) => return Err(refusal.into()),
            }
        }
    }

    /// Walks from `current` to the server's latest root (`root.json`), fetching each version in
    /// between; `None` when the server has no newer root.
    async fn rotate(
        &self,
        gun: &str,
        current: &TrustedRoot,
        pin: &RootPin,
        seen: &Versions,
    ) -> Result<Option<TrustedRoot>, Failure> {
        let latest = self
            .fetcher
            .current(gun, "root", MAX_ROOT_BYTES)
            .await
            .map_err(|error| fetch_failure(gun, "root", error))?;
        let signed = Signed::parse(&latest).map_err(|error| Refusal::Malformed {
            gun: gun.to_owned(),
            role: "root".into(),
            detail: error.to_string(),
        })?;
        let version = Root::from_signed(&signed)
            .map_err(|error| Refusal::Malformed {
                gun: gun.to_owned(),
                role: "root".into(),
                detail: error.to_string(),
            })?
            .version;
        if version <= current.version() {
            return Ok(None);
        }
        if version - current.version() > MAX_ROOT_ROTATIONS {
            return Err(Refusal::Limit {
                gun: gun.to_owned(),
                detail: format!("more than {MAX_ROOT_ROTATIONS} root versions to walk"),
            }
            .into());
        }
        let mut chain = Vec::new();
        for between in current.version() + 1..version {
            chain.push(
                self.fetcher.root_version(gun, between).await.map_err(|error| fetch_failure(gun, "root", error))?,
            );
        }
        chain.push(latest);
        Ok(Some(tuf::trust_root(gun, Some(&current.bytes), &chain, pin, seen)?))
    }

    /// The files the timestamp covers: each from the cache when its bytes match what its parent
    /// lists, else fetched by checksum.
    async fn assemble(
        &self,
        gun: &str,
        timestamp: &[u8],
        cached: Option<&BTreeMap<String, Vec<u8>>>,
    ) -> Result<RepoFiles, Failure> {
        let malformed = |role: &str, error: tufa_core::metadata::MetadataError| {
            Failure::Refused(Refusal::Malformed {
                gun: gun.to_owned(),
                role: role.to_owned(),
                detail: error.to_string(),
            })
        };
        let signed = Signed::parse(timestamp).map_err(|error| malformed("timestamp", error))?;
        let listed = Timestamp::from_signed(&signed).map_err(|error| malformed("timestamp", error))?;
        let snapshot = self.listed_file(gun, "snapshot", &listed.snapshot, cached).await?;
        let signed = Signed::parse(&snapshot).map_err(|error| malformed("snapshot", error))?;
        let parsed = Snapshot::from_signed(&signed).map_err(|error| malformed("snapshot", error))?;
        if parsed.meta.len() > MAX_ROLES.saturating_add(1) {
            return Err(Refusal::Limit { gun: gun.to_owned(), detail: format!("more than {MAX_ROLES} roles") }.into());
        }
        let listed: Vec<(&String, &FileMeta)> =
            parsed.meta.iter().filter(|(role, _)| *role == "targets" || role.starts_with("targets/")).collect();
        let total =
            listed.iter().fold(0u64, |sum, (_, meta)| sum.saturating_add(u64::try_from(meta.length).unwrap_or(0)));
        if total > MAX_REPOSITORY_BYTES {
            return Err(Refusal::Limit {
                gun: gun.to_owned(),
                detail: format!("its targets files hold more than {MAX_REPOSITORY_BYTES} bytes"),
            }
            .into());
        }
        // Files the cache holds are used as they are; the others are fetched a few at a time, so a
        // cold verification costs about one round trip per level rather than one per file.
        let mut roles = BTreeMap::new();
        let mut fetches = tokio::task::JoinSet::new();
        for (role, meta) in listed {
            if let Some(bytes) = cached.and_then(|files| files.get(role)).filter(|bytes| meta.matches(bytes)) {
                roles.insert(role.clone(), bytes.clone());
                continue;
            }
            if fetches.len() >= FETCH_CONCURRENCY
                && let Some(done) = fetches.join_next().await
            {
                let (role, bytes) = joined(gun, done)?;
                roles.insert(role, bytes);
            }
            let (fetcher, gun, role, meta) = (self.fetcher.clone(), gun.to_owned(), role.clone(), meta.clone());
            fetches.spawn(async move {
                let bytes = fetch_listed(fetcher.as_ref(), &gun, &role, &meta).await;
                (role, bytes)
            });
        }
        while let Some(done) = fetches.join_next().await {
            let (role, bytes) = joined(gun, done)?;
            roles.insert(role, bytes);
        }
        Ok(RepoFiles { timestamp: timestamp.to_vec(), snapshot, roles })
    }

    async fn listed_file(
        &self,
        gun: &str,
        role: &str,
        meta: &FileMeta,
        cached: Option<&BTreeMap<String, Vec<u8>>>,
    ) -> Result<Vec<u8>, Failure> {
        if let Some(bytes) = cached.and_then(|files| files.get(role)).filter(|bytes| meta.matches(bytes)) {
            return Ok(bytes.clone());
        }
        fetch_listed(self.fetcher.as_ref(), gun, role, meta).await
    }

    /// Saves the state; a failure is logged (the verification itself stands).
    fn persist(&self, state: &GunState) {
        if let Err(error) = self.states.save(state) {
            tracing::warn!(gun = %state.gun, %error, "the trust state could not be saved");
        }
    }
}

#[cfg(test)]
mod tests;
