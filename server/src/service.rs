//! What the server does, apart from HTTP: validate and store updates, sign snapshots and
//! timestamps through the online signer, re-sign timestamps before they expire, hand out
//! server-held keys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tufa_core::keys::{Algorithm, PublicKey};
use tufa_core::metadata::{Root, Signature, Signed, Snapshot};
use tufa_core::names::{BaseRole, Gun, RoleName};
use tufa_core::update::{self, Draft, Limits, NewFile, RepoState, Unchanged, UpdateError};
use tufa_store::{CurrentEntry, Store, StoredFile, Update};

use crate::audit::{self, OnlineSignatureRecord, Requester};
use crate::error::ApiError;
use crate::signing::OnlineSigner;

/// Settings the service needs.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Algorithm for new server-held keys.
    pub key_algorithm: Algorithm,
    /// Validation limits.
    pub limits: Limits,
}

/// The server's core operations over a store and an online signer.
#[derive(Clone)]
pub struct Service {
    /// Metadata storage.
    pub store: Arc<dyn Store>,
    /// Online signer for snapshot and timestamp keys.
    pub signer: Arc<dyn OnlineSigner>,
    /// Settings.
    pub settings: ServiceSettings,
    /// The audit checkpoint key's ID once known (it never changes), so publishes do not read it.
    audit_key: Arc<tokio::sync::OnceCell<String>>,
    /// The verifier behind `POST /v1/verify`: set at start-up (see [`Service::set_verifier`]), or
    /// made on first use with no policy file (see [`Service::verifier`]).
    verifier: Arc<std::sync::OnceLock<Arc<crate::verify::PolicyVerifier>>>,
}

/// Whether an update may re-create a deleted repository: the repository's tombstone, if it has
/// one, and whether the caller is an admin of it (with `--auth none` every caller is).
#[derive(Debug, Clone)]
pub struct Recreation {
    /// The tombstone left by the last delete.
    pub tombstone: Option<tufa_store::Tombstone>,
    /// Whether the caller may re-create the repository with any root.
    pub admin: bool,
    /// The caller, for the log line.
    pub principal: String,
}

impl Recreation {
    /// No tombstone: nothing to decide.
    pub fn none() -> Self {
        Self { tombstone: None, admin: false, principal: String::new() }
    }
}

fn to_store_file(file: NewFile) -> tufa_store::NewFile {
    tufa_store::NewFile {
        sha256: file.sha256_hex(),
        role: file.role.to_string(),
        version: file.version,
        expires: Some(file.expires),
        data: file.bytes,
    }
}

fn parse_root(bytes: &[u8]) -> Result<Root, ApiError> {
    Signed::parse(bytes)
        .and_then(|signed| Root::from_signed(&signed))
        .map_err(|error| ApiError::Internal(format!("stored root is unreadable: {error}")))
}

/// Updates up to this size (uploaded files plus the versions they replace) are read for the record
/// on the async worker: less than a millisecond of work, cheaper than a hop to the blocking pool.
const INLINE_RECORD_BYTES: usize = 256 * 1024;

/// The stored versions of targets files an update replaces, by role: version number and bytes.
type Replaced = BTreeMap<String, (i64, Vec<u8>)>;

/// Most keys one client address may hold for repositories that were never published, when
/// authentication is off; asking for more drops its oldest such keys.
pub const MAX_PENDING_KEYS_PER_REQUESTER: usize = 100;

/// Whether `root` lists `canonical_id` (compared by canonical key ID) for `role`.
fn root_lists(root: &Root, role: BaseRole, canonical_id: &str) -> bool {
    root.role(role).is_some_and(|keys| {
        keys.keyids.iter().any(|keyid| {
            root.keys.get(keyid).and_then(|key| key.canonical_id().ok()).is_some_and(|id| id == canonical_id)
        })
    })
}

impl Service {
    /// The service over `store` and `signer`.
    pub fn new(store: Arc<dyn Store>, signer: Arc<dyn OnlineSigner>, settings: ServiceSettings) -> Service {
        Service {
            store,
            signer,
            settings,
            audit_key: Arc::new(tokio::sync::OnceCell::new()),
            verifier: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// This service for the verifier's own use: the same store, signer and settings, without the
    /// verifier (which holds it), so the two do not keep each other alive.
    pub fn for_verifier(&self) -> Service {
        Service { verifier: Arc::new(std::sync::OnceLock::new()), ..self.clone() }
    }

    /// Sets the verifier of `POST /v1/verify` (once; later calls change nothing).
    pub fn set_verifier(&self, verifier: crate::verify::PolicyVerifier) {
        let _ = self.verifier.set(Arc::new(verifier));
    }

    /// The verifier of `POST /v1/verify`. Without one set, the verifier of a server without a
    /// verification policy: every repository in this server's store, its stored root trusted
    /// on first use, any role signing (notary's rule); rollback state in a temporary directory.
    pub fn verifier(&self) -> Result<Arc<crate::verify::PolicyVerifier>, ApiError> {
        if let Some(verifier) = self.verifier.get() {
            return Ok(verifier.clone());
        }
        let policy = crate::verify::default_policy().map_err(ApiError::Internal)?;
        let state_dir = std::env::temp_dir().join(format!("tufa-verify-{}", std::process::id()));
        let verifier = crate::verify::PolicyVerifier::local(
            tufa_policy::PolicyHandle::new(policy),
            state_dir,
            self.for_verifier(),
            crate::verify::Unpinned::TrustOnFirstUse,
        );
        Ok(self.verifier.get_or_init(|| Arc::new(verifier)).clone())
    }

    /// The audit checkpoint key's ID, if it was created yet.
    async fn audit_key_id(&self) -> Result<Option<String>, ApiError> {
        if let Some(id) = self.audit_key.get() {
            return Ok(Some(id.clone()));
        }
        let Some(key) = self.store.audit_signing_key().await? else { return Ok(None) };
        let _ = self.audit_key.set(key.key_id.clone());
        Ok(Some(key.key_id))
    }

    /// Whether the online key `canonical_id` may sign `role` of `gun`: it must have been issued for
    /// exactly that repository and role. A key with no recorded owner (made by a remote signer
    /// before owners were recorded) is claimed by the repository whose stored root already lists
    /// it for that role, and by no other; an upload can never claim a key by listing it.
    async fn key_belongs(
        &self,
        gun: &Gun,
        role: BaseRole,
        canonical_id: &str,
        stored_root: Option<&Root>,
    ) -> Result<bool, ApiError> {
        match self.store.key_owner(canonical_id).await? {
            Some(owner) => {
                let belongs = owner.gun == gun.as_str() && owner.role == role.as_str();
                if !belongs {
                    tracing::warn!(
                        gun = %gun,
                        role = role.as_str(),
                        key.id = %canonical_id,
                        owner = %owner.gun,
                        "refusing to sign with an online key issued for another repository or role"
                    );
                }
                Ok(belongs)
            }
            None => {
                if !stored_root.is_some_and(|stored| root_lists(stored, role, canonical_id)) {
                    return Ok(false);
                }
                let owner = tufa_store::KeyOwner {
                    key_id: canonical_id.to_owned(),
                    gun: gun.as_str().to_owned(),
                    role: role.as_str().to_owned(),
                    requester: None,
                    created_at: Utc::now(),
                };
                let recorded = self.store.record_key_owner(&owner).await?;
                Ok(recorded.gun == owner.gun && recorded.role == owner.role)
            }
        }
    }

    /// Signs a draft for `gun` with the keys of its role in `root` that the signer holds and that
    /// were issued for this repository and role, up to the role's threshold. `stored_root` is the
    /// repository's root before this update. `Ok(None)` when no such key is held.
    async fn sign_draft(
        &self,
        gun: &Gun,
        stored_root: Option<&Root>,
        root: &Root,
        draft: Draft,
    ) -> Result<Option<(NewFile, Vec<OnlineSignatureRecord>)>, ApiError> {
        let Some(role_keys) = root.role(draft.role) else { return Ok(None) };
        let payload_sha256 = hex::encode(tufa_core::keys::sha256(&draft.canonical));
        let audit_key = self.audit_key_id().await?;
        let mut records = Vec::new();
        let threshold = usize::try_from(role_keys.threshold).unwrap_or(usize::MAX);
        let mut signatures = Vec::new();
        for keyid in &role_keys.keyids {
            let Some(key) = root.keys.get(keyid) else { continue };
            let Ok(canonical_id) = key.canonical_id() else { continue };
            // The checkpoint key signs the audit log and nothing else, whatever a root lists.
            if audit_key.as_deref() == Some(canonical_id.as_str()) {
                continue;
            }
            if !self.key_belongs(gun, draft.role, &canonical_id, stored_root).await? {
                continue;
            }
            if self.signer.public_key(&canonical_id).await?.is_none() {
                continue;
            }
            let signature = self.signer.sign(&canonical_id, &draft.canonical).await?;
            // Never store a signature that does not verify, whatever the signer returned.
            key.verify(&signature.method, &draft.canonical, &signature.bytes)
                .map_err(|error| ApiError::Internal(format!("signer returned a bad signature for {keyid}: {error}")))?;
            let signer_seq = signature.signer_seq;
            signatures.push(Signature { keyid: keyid.clone(), method: signature.method, sig: signature.bytes });
            records.push(OnlineSignatureRecord {
                role: draft.role.as_str().to_owned(),
                key_id: canonical_id.clone(),
                payload_sha256: payload_sha256.clone(),
                signer_seq,
            });
            if signatures.len() >= threshold {
                break;
            }
        }
        if signatures.len() < threshold {
            return Ok(None);
        }
        Ok(Some((draft.finish(&signatures), records)))
    }

    /// Validates and stores one update (spec §3.2): all files, the snapshot (uploaded or
    /// generated) and a new timestamp, in one transaction.
    ///
    /// A repository that was deleted keeps a tombstone of its last root; a new root for it is
    /// accepted only when signed by that root's keys or when the caller is an admin, so deleting
    /// a repository never lets someone else take its name over.
    pub async fn publish(
        &self,
        gun: &Gun,
        uploads: BTreeMap<RoleName, Vec<u8>>,
        recreation: &Recreation,
        requester: &Requester,
    ) -> Result<(), ApiError> {
        let now = Utc::now();
        // The record compares the uploaded targets files with the versions they replace. A small
        // update reads those in the same query as the files its validation needs; a large one
        // after it is verified, so that the two never sit in memory beside the verification's own.
        let replaced: Vec<String> =
            uploads.keys().filter(|role| role.is_targets_type()).map(|role| role.as_str().to_owned()).collect();
        // What the current files are, without their bytes: the stored files the update replaces
        // are read whole (below), however small the upload, so their size is checked first; and
        // the files it leaves alone are named by their digests, not read.
        let heads = self.store.current_heads(gun.as_str()).await?;
        update::check_replaced_size(
            heads
                .iter()
                .filter(|(role, _, _)| replaced.contains(role))
                .map(|(_, _, size)| u64::try_from(*size).unwrap_or(0)),
            &self.settings.limits,
        )
        .map_err(ApiError::InvalidUpdate)?;
        let digests: BTreeMap<&str, &str> =
            heads.iter().map(|(role, sha256, _)| (role.as_str(), sha256.as_str())).collect();
        let small = uploads.values().map(Vec::len).sum::<usize>() <= INLINE_RECORD_BYTES;
        let (current, unchanged, previous) =
            self.current_for_update(gun, &uploads, if small { replaced.as_slice() } else { &[] }, &digests).await?;
        let previous = small.then_some(previous);
        let had_root = current.iter().any(|file| file.role == "root");
        let expected_timestamp_version = current.iter().find(|file| file.role == "timestamp").map(|file| file.version);
        let stored_root = match current.iter().find(|file| file.role == "root") {
            Some(file) => Some(parse_root(&file.data)?),
            None => None,
        };
        let state = RepoState::new(current.into_iter().map(|file| (file.role, file.data))).with_unchanged(unchanged);
        // Verification is CPU-bound (parsing, canonical JSON, signatures): it runs on the blocking
        // pool so that it never holds up the async workers serving other requests.
        let verification = {
            let gun = gun.clone();
            let limits = self.settings.limits;
            tokio::task::spawn_blocking(move || {
                let validated = update::validate(&gun, &state, uploads, now, &limits);
                (state, validated)
            })
        };
        let verified = verification.await;
        let (state, validated) =
            verified.map_err(|error| ApiError::Internal(format!("update verification stopped: {error}")))?;
        let validated = validated.map_err(ApiError::of_update)?;
        // A file no newer than the one it replaces is refused now, as the store would refuse it, before the
        // record reads the stored one against it: for a large file, as much memory and a pass as long again.
        let previous = match previous {
            Some(previous) => {
                refuse_old_versions(&validated.files, |role| previous.get(role).map(|(version, _)| *version))?;
                previous
            }
            None => {
                let stored: BTreeMap<String, i64> =
                    self.store.current_versions(gun.as_str()).await?.into_iter().collect();
                refuse_old_versions(&validated.files, |role| stored.get(role).copied())?;
                self.replaced_files(gun, &replaced).await?
            }
        };
        // What the update touches is what it uploads and what the files it replaces hold.
        update::check_replaced(
            validated.targets,
            previous.values().map(|(_, data)| data.as_slice()),
            &self.settings.limits,
        )
        .map_err(ApiError::InvalidUpdate)?;
        let previous = previous.into_iter().map(|(role, (_, data))| (role, data)).collect();
        // The stored root and snapshot, read although an update may replace them, are not needed
        // any more once it is validated.
        let mut state = state;
        for file in &validated.files {
            state.forget(file.role.as_str());
        }
        // A new root's grants are compared with the stored root's, as targets files' with the
        // versions they replace.
        let previous_root = match &stored_root {
            Some(root) if validated.files.iter().any(|file| file.role.as_base() == Some(BaseRole::Root)) => {
                tufa_core::record::root_grants(root)
            }
            _ => Vec::new(),
        };
        let (validated, parts) = self.record_parts(gun, validated, previous, previous_root).await?;
        let mut online = Vec::new();
        let recreated = match (&recreation.tombstone, had_root) {
            (Some(tombstone), false) => Some(self.check_recreation(gun, tombstone, &validated.files, recreation)?),
            _ => None,
        };

        let mut files = validated.files;
        let snapshot = match files.iter().find(|file| file.role.as_base() == Some(BaseRole::Snapshot)) {
            Some(uploaded) => uploaded.clone(),
            None => {
                let draft = update::draft_snapshot(state.file("snapshot"), &validated.loaded, now)
                    .map_err(ApiError::InvalidUpdate)?;
                let (generated, signed) = self.sign_draft(gun, stored_root.as_ref(), &validated.root, draft).await?.ok_or_else(|| {
                    ApiError::InvalidUpdate(UpdateError::BadHierarchy {
                        missing: "snapshot".into(),
                        msg: "no snapshot was included in update and server does not hold current snapshot key for repository".into(),
                    })
                })?;
                online.extend(signed);
                files.push(generated.clone());
                generated
            }
        };
        let draft =
            update::draft_timestamp(state.file("timestamp"), &snapshot.bytes, now).map_err(ApiError::InvalidUpdate)?;
        let (timestamp, signed) =
            self.sign_draft(gun, stored_root.as_ref(), &validated.root, draft).await?.ok_or_else(|| {
                ApiError::InvalidUpdate(UpdateError::BadRoot("no  timestamp keys exist on the server".into()))
            })?;
        online.extend(signed);
        files.push(timestamp.clone());

        // The files by role, borrowed: a copy of an upload's bytes would double its memory.
        let mut available: BTreeMap<String, &[u8]> =
            state.files().iter().map(|(role, bytes)| (role.clone(), bytes.as_slice())).collect();
        for file in &files {
            available.insert(file.role.to_string(), &file.bytes);
        }
        let current = update::current_set_with(&snapshot, &timestamp, &available, state.unchanged())
            .map_err(ApiError::InvalidUpdate)?;
        let record = audit::publish_record(
            gun.as_str(),
            requester,
            &audit::stored_roles(&files),
            &validated.signers,
            &online,
            parts,
        );
        self.store
            .update(Update {
                gun: gun.as_str().to_owned(),
                files: files.into_iter().map(to_store_file).collect(),
                current: current.into_iter().map(|(role, sha256)| CurrentEntry { role, sha256 }).collect(),
                expected_timestamp_version,
                record,
            })
            .await?;
        match recreated {
            Some(reason) => tracing::warn!(
                gun = %gun,
                principal = %recreation.principal,
                reason,
                "re-created a deleted repository"
            ),
            None => tracing::info!(gun = %gun, "published update"),
        }
        Ok(())
    }

    /// The current files of `gun` that validating `uploads` needs, the current files it leaves
    /// unread ([`Unchanged`], from `digests`: every current file's hex SHA-256 by role), and beside them, by role, the current versions and bytes of
    /// `replaced` (uploaded roles the caller wants, read in the same query).
    ///
    /// Read: the root, snapshot and timestamp; the stored parents of uploaded delegations (their
    /// signatures and paths judge the upload); and the rare current file that the stored
    /// snapshot's entry cannot judge: one it does not name by its current SHA-256, or one the
    /// uploaded snapshot lists with a hash that entry lacks. Every other current file is left
    /// unread: the update does not replace it, and the stored snapshot's entry for it tells
    /// whether the new snapshot's entry describes it ([`RepoState::unchanged`]), right or wrong,
    /// exactly as its bytes would. So an update of one file costs what that file and its parents
    /// cost, not what the repository's other files hold, whatever its snapshot lists. If the stored snapshot cannot be read,
    /// every current file is read, as before. The reads are not one transaction: an update
    /// committed between them makes this one fail, at the latest on the store's
    /// timestamp-version check, as any concurrent update would.
    async fn current_for_update(
        &self,
        gun: &Gun,
        uploads: &BTreeMap<RoleName, Vec<u8>>,
        replaced: &[String],
        digests: &BTreeMap<&str, &str>,
    ) -> Result<(Vec<StoredFile>, Unchanged, Replaced), ApiError> {
        const BASE: [&str; 3] = ["root", "snapshot", "timestamp"];
        let first: Vec<&str> = BASE
            .iter()
            .copied()
            .chain(replaced.iter().map(String::as_str).filter(|role| !BASE.contains(role)))
            .collect();
        let (mut current, previous): (Vec<StoredFile>, Vec<StoredFile>) = self
            .store
            .current_many(gun.as_str(), &first)
            .await?
            .into_iter()
            .partition(|file| !replaced.contains(&file.role));
        let previous: Replaced = previous.into_iter().map(|file| (file.role, (file.version, file.data))).collect();
        let stored = current
            .iter()
            .find(|file| file.role == "snapshot")
            .map(|file| Signed::parse(&file.data).and_then(|signed| Snapshot::from_signed(&signed)));
        let stored = match stored {
            None => return Ok((current, Unchanged::default(), previous)),
            Some(Ok(snapshot)) => snapshot.meta,
            Some(Err(error)) => {
                tracing::warn!(gun = %gun, %error, "the stored snapshot is unreadable; reading every current file");
                return Ok((self.store.current_all(gun.as_str()).await?, Unchanged::default(), previous));
            }
        };
        let uploaded: BTreeSet<&str> = uploads.keys().map(RoleName::as_str).collect();
        let others = |role: &&str| !BASE.contains(role) && !uploaded.contains(role);
        let candidates: Vec<&str> = stored.keys().map(String::as_str).filter(others).collect();
        let unchanged =
            Unchanged::new(&stored, candidates.iter().filter_map(|role| Some((*role, *digests.get(role)?))));
        // Read besides: the parents of every uploaded delegation, up to `targets` (validation
        // reads them); a file the stored snapshot's entry cannot judge unread (it does not name the
        // current file's SHA-256); and one the uploaded snapshot lists with a hash the stored
        // entry lacks. Any other entry is judged exactly by the stored entry, which has every hash
        // it lists: one that differs (a wrong entry) is refused without reading the file.
        let mut needed: BTreeSet<&str> = BTreeSet::new();
        for role in uploads.keys() {
            let mut parent = role.parent();
            while let Some(role) = parent {
                parent = role.parent();
                if let Some((name, _)) = stored.get_key_value(role.as_str()) {
                    needed.insert(name.as_str());
                }
            }
        }
        let uploaded_snapshot = uploads
            .get(&RoleName::base(BaseRole::Snapshot))
            .and_then(|bytes| Signed::parse(bytes).and_then(|signed| Snapshot::from_signed(&signed)).ok());
        for (role, entry) in &stored {
            let unknown_hash =
                uploaded_snapshot.as_ref().and_then(|snapshot| snapshot.meta.get(role)).is_some_and(|new| {
                    new.hashes.keys().any(|algorithm| {
                        matches!(algorithm.as_str(), "sha256" | "sha512") && !entry.hashes.contains_key(algorithm)
                    })
                });
            if !unchanged.contains(role) || unknown_hash {
                needed.insert(role.as_str());
            }
        }
        let rest: Vec<&str> = candidates.iter().copied().filter(|role| needed.contains(role)).collect();
        if !rest.is_empty() {
            current.extend(self.store.current_many(gun.as_str(), &rest).await?);
        }
        Ok((current, unchanged, previous))
    }

    /// The stored versions of the targets files `roles` that an update replaces, by role: their version
    /// numbers and bytes.
    async fn replaced_files(&self, gun: &Gun, roles: &[String]) -> Result<Replaced, ApiError> {
        let mut previous = BTreeMap::new();
        if !roles.is_empty() {
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            for stored in self.store.current_many(gun.as_str(), &roles).await? {
                previous.insert(stored.role, (stored.version, stored.data));
            }
        }
        Ok(previous)
    }

    /// What a validated update means for the record: against the versions it replaces
    /// (`previous`, and `previous_root`: the stored root's grants when it uploads a root), the
    /// grants it changes and its target changes.
    async fn record_parts(
        &self,
        gun: &Gun,
        mut validated: update::Validated,
        previous: BTreeMap<String, Vec<u8>>,
        previous_root: Vec<tufa_core::record::Grant>,
    ) -> Result<(update::Validated, audit::PublishParts), ApiError> {
        // Small updates are read here; large ones on the blocking pool, like their verification.
        let size: usize = validated.files.iter().map(|file| file.bytes.len()).sum::<usize>()
            + previous.values().map(Vec::len).sum::<usize>();
        let read = move || {
            let views = std::mem::take(&mut validated.views);
            let parts = audit::publish_parts(previous, &previous_root, &validated.files, &validated.signers, views);
            (validated, parts)
        };
        let parts = if size <= INLINE_RECORD_BYTES {
            Ok(read())
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|error| ApiError::Internal(format!("reading the update for the record stopped: {error}")))
        }
        .and_then(|(validated, parts)| {
            let parts =
                parts.map_err(|error| ApiError::Internal(format!("reading the update for the record: {error}")))?;
            Ok((validated, parts))
        })?;
        let (validated, mut parts) = parts;
        // Canonical IDs of the keys that signed: the root in force names the base roles' keys and
        // this update's grants its delegations'; only keys granted by files it does not replace
        // need the stored grants. Only signing keys not named yet are looked up: a root key's
        // canonical ID means parsing its certificate.
        for id in validated.signers.values().flatten() {
            if !parts.canonical.contains_key(id)
                && let Some(Ok(canonical)) = validated.root.keys.get(id).map(PublicKey::canonical_id)
            {
                parts.canonical.insert(id.clone(), canonical);
            }
        }
        let unresolved = validated.signers.values().flatten().any(|key| !parts.canonical.contains_key(key));
        let in_force = if unresolved { self.store.grants(gun.as_str(), None).await? } else { Vec::new() };
        parts.resolve_canonical(&in_force);
        Ok((validated, parts))
    }

    /// Decides whether the new root may replace a deleted repository's last root; returns why.
    fn check_recreation(
        &self,
        gun: &Gun,
        tombstone: &tufa_store::Tombstone,
        files: &[NewFile],
        recreation: &Recreation,
    ) -> Result<&'static str, ApiError> {
        let Some(root) = files.iter().find(|file| file.role.as_base() == Some(BaseRole::Root)) else {
            // The validator requires a root for a repository without one; this is a safeguard.
            return Err(ApiError::Denied(format!("{gun} was deleted; re-creating it needs a new root")));
        };
        match tufa_core::verify::signed_by_previous_root(&tombstone.root, &root.bytes) {
            Ok(()) => Ok("signed by the deleted repository's root keys"),
            Err(_) if recreation.admin => Ok("by an admin"),
            Err(reason) => {
                tracing::warn!(gun = %gun, principal = %recreation.principal, %reason, "refused to re-create a deleted repository");
                Err(ApiError::Denied(format!(
                    "{gun} was deleted on {}; a new root for it must be signed by the deleted root's keys, or be \
                     published by an admin of the repository (or clear the tombstone: tufa-server admin tombstone \
                     clear {gun}): {reason}",
                    tombstone.deleted_at.format("%Y-%m-%d %H:%M:%S UTC")
                )))
            }
        }
    }

    /// The current file of `role` as `GET <role>.json` serves it: an expired timestamp (or a
    /// timestamp whose snapshot expired) is re-signed first when the server holds the keys.
    pub async fn current_served(&self, gun: &Gun, role: &RoleName) -> Result<Option<tufa_store::StoredFile>, ApiError> {
        let Some(base @ (BaseRole::Timestamp | BaseRole::Snapshot)) = role.as_base() else {
            return Ok(self.store.current(gun.as_str(), role.as_str()).await?);
        };
        let now = Utc::now();
        let mut pair = self.store.current_many(gun.as_str(), &["timestamp", "snapshot"]).await?;
        let expired = pair.iter().any(|file| file.expires.is_some_and(|expires| expires < now));
        if expired && pair.iter().any(|file| file.role == "timestamp") {
            match self.refresh(gun, now).await {
                Ok(true) => pair = self.store.current_many(gun.as_str(), &["timestamp", "snapshot"]).await?,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(gun = %gun, error = %error, "could not re-sign an expired timestamp; serving the stored one")
                }
            }
        }
        let wanted = base.as_str();
        Ok(pair.into_iter().find(|file| file.role == wanted))
    }

    /// Re-signs the timestamp (and a server-signed snapshot) of `gun` if either expires before
    /// `deadline`. Returns whether anything was written. Losing a race to another writer is fine.
    pub async fn refresh(&self, gun: &Gun, deadline: DateTime<Utc>) -> Result<bool, ApiError> {
        let now = Utc::now();
        // Only the files it re-signs or signs with are read; the others stay current as the stored
        // snapshot describes them (see `RepoState::unchanged`), however large they are.
        let current = self.store.current_many(gun.as_str(), &["root", "snapshot", "timestamp"]).await?;
        let find = |role: &str| current.iter().find(|file| file.role == role);
        let (Some(timestamp), Some(snapshot), Some(root)) = (find("timestamp"), find("snapshot"), find("root")) else {
            return Ok(false);
        };
        let expiring = |file: &StoredFile| file.expires.is_some_and(|expires| expires < deadline);
        if !expiring(timestamp) && !expiring(snapshot) {
            return Ok(false);
        }
        let root = parse_root(&root.data)?;
        let mut files = Vec::new();
        let mut online = Vec::new();
        let mut snapshot_bytes = snapshot.data.clone();
        if expiring(snapshot) {
            let draft =
                update::draft_snapshot(Some(&snapshot.data), &BTreeMap::new(), now).map_err(ApiError::InvalidUpdate)?;
            match self.sign_draft(gun, Some(&root), &root, draft).await? {
                Some((file, signed)) => {
                    snapshot_bytes = file.bytes.clone();
                    files.push(file);
                    online.extend(signed);
                }
                None => tracing::debug!(gun = %gun, "snapshot expires soon but its key is held by the publisher"),
            }
        }
        if files.is_empty() && !expiring(timestamp) {
            return Ok(false);
        }
        let draft =
            update::draft_timestamp(Some(&timestamp.data), &snapshot_bytes, now).map_err(ApiError::InvalidUpdate)?;
        let Some((new_timestamp, signed)) = self.sign_draft(gun, Some(&root), &root, draft).await? else {
            return Err(ApiError::Internal(format!("no timestamp key for {gun} is held by the signer")));
        };
        online.extend(signed);
        let new_snapshot = files.first().cloned().unwrap_or_else(|| NewFile {
            role: RoleName::base(BaseRole::Snapshot),
            version: snapshot.version,
            expires: snapshot.expires.unwrap_or(now),
            bytes: snapshot.data.clone(),
        });
        let mut available: BTreeMap<String, &[u8]> =
            current.iter().map(|file| (file.role.clone(), file.data.as_slice())).collect();
        let heads = self.store.current_heads(gun.as_str()).await?;
        let unchanged = Unchanged::of_snapshot(
            &snapshot.data,
            heads
                .iter()
                .filter(|(role, _, _)| !available.contains_key(role.as_str()))
                .map(|(role, sha256, _)| (role.as_str(), sha256.as_str())),
        );
        available.insert("snapshot".into(), &new_snapshot.bytes);
        let entries = update::current_set_with(&new_snapshot, &new_timestamp, &available, &unchanged)
            .map_err(ApiError::InvalidUpdate)?;
        files.push(new_timestamp);
        let record = audit::resign_record(gun.as_str(), &audit::stored_roles(&files), &online);
        let result = self
            .store
            .update(Update {
                gun: gun.as_str().to_owned(),
                files: files.into_iter().map(to_store_file).collect(),
                current: entries.into_iter().map(|(role, sha256)| CurrentEntry { role, sha256 }).collect(),
                expected_timestamp_version: Some(timestamp.version),
                record,
            })
            .await;
        match result {
            Ok(()) => {
                tracing::info!(gun = %gun, "re-signed timestamp");
                Ok(true)
            }
            Err(tufa_store::StoreError::OldVersion { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The server-held key for `role`: with `rotate`, always the signer's answer to a create
    /// request; otherwise the key the current root lists that the signer holds and that belongs to
    /// this repository, or a new one. Every key handed out is recorded as issued for `gun` and
    /// `role`. With `bound_pending` (authentication off), a client address holding
    /// [`MAX_PENDING_KEYS_PER_REQUESTER`] keys of never-published repositories loses its oldest.
    pub async fn server_key(
        &self,
        gun: &Gun,
        role: BaseRole,
        rotate: bool,
        who: &Requester,
        bound_pending: bool,
    ) -> Result<PublicKey, ApiError> {
        let requester = who.address.as_deref();
        let stored = self.store.current(gun.as_str(), "root").await?;
        let published = stored.is_some();
        if !rotate && let Some(root) = stored {
            let root = parse_root(&root.data)?;
            for keyid in root.role(role).map(|keys| keys.keyids.as_slice()).unwrap_or_default() {
                let Some(key) = root.keys.get(keyid) else { continue };
                let Ok(canonical_id) = key.canonical_id() else { continue };
                if !self.key_belongs(gun, role, &canonical_id, Some(&root)).await? {
                    continue;
                }
                if let Some(found) = self.signer.public_key(&canonical_id).await? {
                    return Ok(found);
                }
            }
        }
        if bound_pending
            && !published
            && let Some(requester) = requester
        {
            let pending = self.store.pending_keys(requester).await?;
            let excess = (pending.len() + 1).saturating_sub(MAX_PENDING_KEYS_PER_REQUESTER);
            if excess > 0 {
                let dropped: Vec<String> = pending.into_iter().take(excess).map(|owner| owner.key_id).collect();
                self.store.drop_keys(&dropped).await?;
                tracing::info!(
                    requester,
                    dropped = dropped.len(),
                    "dropped the oldest keys of never-published repositories"
                );
            }
        }
        let key = self.signer.create_key(gun, role, self.settings.key_algorithm).await?;
        let canonical_id = key
            .canonical_id()
            .map_err(|error| ApiError::Internal(format!("the signer returned a bad key: {error}")))?;
        let owner = tufa_store::KeyOwner {
            key_id: canonical_id.clone(),
            gun: gun.as_str().to_owned(),
            role: role.as_str().to_owned(),
            requester: requester.map(str::to_owned),
            created_at: Utc::now(),
        };
        let recorded = self.store.record_key_owner(&owner).await?;
        if recorded.gun != owner.gun || recorded.role != owner.role {
            return Err(ApiError::Internal(format!(
                "the signer returned key {canonical_id} for {gun} {}, but it was issued for {} {}",
                role.as_str(),
                recorded.gun,
                recorded.role
            )));
        }
        // A key made by a remote signer is a change in another database; the server's record of
        // it is this entry, appended once its owner is recorded.
        self.store.append_audit(audit::key_record(gun.as_str(), role.as_str(), &canonical_id, rotate, who)).await?;
        Ok(key)
    }
}

/// Refuses, as the store would, an update with a file no newer than the current version of its role
/// (`stored(role)`).
fn refuse_old_versions(files: &[update::NewFile], stored: impl Fn(&str) -> Option<i64>) -> Result<(), ApiError> {
    match files.iter().find(|file| stored(file.role.as_str()).is_some_and(|version| version >= file.version)) {
        Some(file) => Err(tufa_store::StoreError::OldVersion { role: file.role.to_string() }.into()),
        None => Ok(()),
    }
}
