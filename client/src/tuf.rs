//! The verification, pure over fetched bytes and persisted state: the trusted root (pin, rotation
//! chain), then timestamp → snapshot → targets → delegations with hashes, lengths, thresholds,
//! expiry, delegation paths and rollback checks, giving [`TrustData`]; and [`decide`], which
//! answers whether a tag or digest is signed as a [`Requirement`](crate::Requirement) asks.
//! Signatures are only ever counted by `tufa_core::verify::check_threshold`.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tufa_core::keys::sha256;
use tufa_core::metadata::{FileMeta, PathPrefixes, RoleKeys, Root, Signed, Snapshot, Targets, Timestamp};
use tufa_core::names::{BaseRole, RoleName};
use tufa_core::time;
use tufa_core::verify::check_threshold;

use crate::{RoleRequirement, RootPin, Verdict};

/// Deepest delegation followed below `targets` (`targets/a` is 1).
pub const MAX_DELEGATION_DEPTH: usize = 16;
/// Most targets-type roles (targets and delegations) one repository may have.
pub const MAX_ROLES: usize = 1_000;

/// Highest version seen per role (`root`, `timestamp`, `snapshot`, `targets`, delegations):
/// no verified file may carry a lower one.
pub type Versions = BTreeMap<String, i64>;

/// Why trust data was refused: a decided "no", with a reason a person understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server has no trust data for the GUN.
    #[error("no trust data for {0}")]
    NoTrustData(String),
    /// A file cannot be read as its role's metadata.
    #[error("{role} metadata of {gun} is malformed: {detail}")]
    Malformed {
        /// The GUN.
        gun: String,
        /// The role.
        role: String,
        /// What is wrong.
        detail: String,
    },
    /// A file's signatures do not meet its role's keys and threshold.
    #[error("{role} metadata of {gun} is not properly signed: {detail}")]
    Signature {
        /// The GUN.
        gun: String,
        /// The role.
        role: String,
        /// What is wrong.
        detail: String,
    },
    /// The root is not signed by a threshold of pinned keys.
    #[error("root key {keys} is not pinned for {gun}")]
    RootNotPinned {
        /// The GUN.
        gun: String,
        /// The root role's key IDs, comma-separated.
        keys: String,
    },
    /// A root of the rotation chain is not signed by the previous root.
    #[error("root version {version} of {gun} is not signed by the keys of root version {previous}: {detail}")]
    RootChain {
        /// The GUN.
        gun: String,
        /// The refused root's version.
        version: i64,
        /// The version of the root that should have signed it.
        previous: i64,
        /// What is wrong.
        detail: String,
    },
    /// A file has expired.
    #[error("{role} of {gun} expired at {at}")]
    Expired {
        /// The GUN.
        gun: String,
        /// The role.
        role: String,
        /// The expiry, RFC 3339.
        at: String,
    },
    /// A file's version is lower than one already seen.
    #[error("{role} version {version} of {gun} is older than the {seen} already seen (rollback)")]
    Rollback {
        /// The GUN.
        gun: String,
        /// The role.
        role: String,
        /// The version offered.
        version: i64,
        /// The highest version seen before.
        seen: i64,
    },
    /// A file does not match the length and hashes its parent lists.
    #[error("{role} metadata of {gun} does not match the hashes {parent} lists")]
    HashMismatch {
        /// The GUN.
        gun: String,
        /// The role.
        role: String,
        /// The listing role.
        parent: String,
    },
    /// A file the snapshot or timestamp lists is not at hand.
    #[error("{role} metadata of {gun} is missing")]
    Missing {
        /// The GUN.
        gun: String,
        /// The role.
        role: String,
    },
    /// The snapshot lists another root than the trusted one: the root must be updated first.
    #[error("the snapshot of {0} lists a newer root than the trusted one")]
    StaleRoot(String),
    /// The repository exceeds a bound of this client.
    #[error("trust data of {gun} exceeds a limit: {detail}")]
    Limit {
        /// The GUN.
        gun: String,
        /// What is exceeded.
        detail: String,
    },
}

/// A root that is trusted: its bytes, parsed body and the key IDs that signed it.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// The exact bytes of the root file.
    pub bytes: Vec<u8>,
    /// The parsed body.
    pub root: Root,
}

impl TrustedRoot {
    /// Parses a root already trusted (persisted after an earlier verification).
    pub fn from_trusted_bytes(gun: &str, bytes: Vec<u8>) -> Result<Self, Refusal> {
        let root = parse_root(gun, &bytes)?;
        Ok(Self { bytes, root })
    }

    /// The root's version.
    pub fn version(&self) -> i64 {
        self.root.version
    }
}

fn malformed(gun: &str, role: &str, detail: impl ToString) -> Refusal {
    Refusal::Malformed { gun: gun.to_owned(), role: role.to_owned(), detail: detail.to_string() }
}

fn bad_signature(gun: &str, role: &str, detail: impl ToString) -> Refusal {
    Refusal::Signature { gun: gun.to_owned(), role: role.to_owned(), detail: detail.to_string() }
}

fn parse_root(gun: &str, bytes: &[u8]) -> Result<Root, Refusal> {
    let signed = Signed::parse(bytes).map_err(|error| malformed(gun, "root", error))?;
    Root::from_signed(&signed).map_err(|error| malformed(gun, "root", error))
}

/// The keys and threshold of a base role; a parsed root always has all four.
fn base_role(gun: &str, root: &Root, role: BaseRole) -> Result<RoleKeys, Refusal> {
    root.role(role).cloned().ok_or_else(|| malformed(gun, "root", format!("it has no {} role", role.as_str())))
}

/// Establishes the trusted root: `trusted` (persisted, already trusted) or, on first use, the
/// first of `newer` checked against its own threshold; then each further root of `newer` (in
/// increasing versions) must be signed by a threshold of the previous root's root keys and of
/// its own. The final root must not be older than `seen` and must satisfy `pin`.
pub fn trust_root(
    gun: &str,
    trusted: Option<&[u8]>,
    newer: &[Vec<u8>],
    pin: &RootPin,
    seen: &Versions,
) -> Result<TrustedRoot, Refusal> {
    let mut chain = newer.iter();
    let mut current = match trusted {
        Some(bytes) => TrustedRoot::from_trusted_bytes(gun, bytes.to_vec())?,
        None => {
            let Some(first) = chain.next() else {
                return Err(Refusal::NoTrustData(gun.to_owned()));
            };
            let signed = Signed::parse(first).map_err(|error| malformed(gun, "root", error))?;
            let root = Root::from_signed(&signed).map_err(|error| malformed(gun, "root", error))?;
            let own = base_role(gun, &root, BaseRole::Root)?;
            check_threshold("root", &signed, &root.keys, &own).map_err(|error| bad_signature(gun, "root", error))?;
            TrustedRoot { bytes: first.clone(), root }
        }
    };
    for bytes in chain {
        let signed = Signed::parse(bytes).map_err(|error| malformed(gun, "root", error))?;
        let root = Root::from_signed(&signed).map_err(|error| malformed(gun, "root", error))?;
        let previous = current.version();
        let chain_error =
            |detail: String| Refusal::RootChain { gun: gun.to_owned(), version: root.version, previous, detail };
        if root.version <= previous {
            return Err(chain_error(format!("its version is not above {previous}")));
        }
        let previous_role = base_role(gun, &current.root, BaseRole::Root)?;
        check_threshold("root", &signed, &current.root.keys, &previous_role)
            .map_err(|error| chain_error(error.to_string()))?;
        let own = base_role(gun, &root, BaseRole::Root)?;
        check_threshold("root", &signed, &root.keys, &own).map_err(|error| bad_signature(gun, "root", error))?;
        current = TrustedRoot { bytes: bytes.clone(), root };
    }
    check_version(gun, "root", current.version(), seen)?;
    check_pin(gun, &current, pin)?;
    Ok(current)
}

/// Checks that `root` is signed, to its root role's threshold, by pinned keys: with
/// [`RootPin::RootKeys`] keys of the root role whose canonical ID is pinned, with
/// [`RootPin::CertIds`] keys whose ID as root.json lists them is pinned.
pub fn check_pin(gun: &str, root: &TrustedRoot, pin: &RootPin) -> Result<(), Refusal> {
    let role = base_role(gun, &root.root, BaseRole::Root)?;
    let pinned: Vec<String> = match pin {
        RootPin::None => return Ok(()),
        RootPin::RootKeys(ids) => role
            .keyids
            .iter()
            .filter(|id| {
                root.root
                    .keys
                    .get(*id)
                    .and_then(|key| key.canonical_id().ok())
                    .is_some_and(|canonical| ids.iter().any(|pinned| pinned.eq_ignore_ascii_case(&canonical)))
            })
            .cloned()
            .collect(),
        RootPin::CertIds(ids) => {
            role.keyids.iter().filter(|id| ids.iter().any(|pinned| pinned.eq_ignore_ascii_case(id))).cloned().collect()
        }
    };
    let not_pinned = || {
        let keys: Vec<String> = role
            .keyids
            .iter()
            .map(|id| match pin {
                RootPin::RootKeys(_) => root.root.keys.get(id).and_then(|key| key.canonical_id().ok()),
                _ => Some(id.clone()),
            })
            .map(|id| id.unwrap_or_else(|| "(unreadable)".to_owned()))
            .collect();
        Refusal::RootNotPinned { gun: gun.to_owned(), keys: keys.join(", ") }
    };
    if pinned.is_empty() {
        return Err(not_pinned());
    }
    let signed = Signed::parse(&root.bytes).map_err(|error| malformed(gun, "root", error))?;
    let pinned_role = RoleKeys { keyids: pinned, threshold: role.threshold };
    check_threshold("root", &signed, &root.root.keys, &pinned_role).map(|_| ()).map_err(|_| not_pinned())
}

fn check_version(gun: &str, role: &str, version: i64, seen: &Versions) -> Result<(), Refusal> {
    match seen.get(role) {
        Some(seen) if version < *seen => {
            Err(Refusal::Rollback { gun: gun.to_owned(), role: role.to_owned(), version, seen: *seen })
        }
        _ => Ok(()),
    }
}

/// When and how the files were obtained, which decides whether expired data is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The time expiry is judged against.
    pub now: DateTime<Utc>,
    /// Whether the files come from the cache without the server confirming them.
    pub from_cache: bool,
    /// Whether expired data may be used when it comes from the cache.
    pub allow_expired_cached: bool,
}

impl Freshness {
    fn expired_ok(&self) -> bool {
        self.from_cache && self.allow_expired_cached
    }

    fn check(&self, gun: &str, role: &str, expires: DateTime<Utc>) -> Result<(), Refusal> {
        if expires < self.now && !self.expired_ok() {
            return Err(Refusal::Expired { gun: gun.to_owned(), role: role.to_owned(), at: time::format(expires) });
        }
        Ok(())
    }
}

/// The files of one repository besides the root: the timestamp, the snapshot, and the
/// targets-type files (`targets` and delegations) by role name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoFiles {
    /// `timestamp.json`.
    pub timestamp: Vec<u8>,
    /// The snapshot the timestamp lists.
    pub snapshot: Vec<u8>,
    /// Role name → the file the snapshot lists.
    pub roles: BTreeMap<String, Vec<u8>>,
}

/// One signed target as a role lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTarget {
    /// The SHA-256 of the target (for an image, the manifest digest), lower-case hex.
    pub sha256: String,
    /// The target's length.
    pub length: i64,
}

/// The verified targets of one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleTargets {
    /// The role.
    pub name: String,
    /// The key IDs whose signatures on the role's file were counted.
    pub signers: Vec<String>,
    /// Target name → target, only those within the role's (effective) paths.
    pub targets: BTreeMap<String, SignedTarget>,
}

/// Verified trust data of one GUN: the roles that verified, in notary's priority order
/// (pre-order from `targets`, children in the order their parent lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustData {
    /// The GUN.
    pub gun: String,
    /// The trusted root's version.
    pub root_version: i64,
    /// The timestamp's version.
    pub timestamp_version: i64,
    /// The verified roles, in priority order.
    pub roles: Vec<RoleTargets>,
    /// Delegations left out, with why (expired, under-signed, not in the snapshot).
    pub skipped: BTreeMap<String, String>,
    /// The earliest expiry among the files used (root, timestamp, snapshot, used roles).
    pub expires: DateTime<Utc>,
    /// The versions to persist: the highest seen per role, these files' included.
    pub versions: Versions,
}

/// The fields of a target entry this client reads.
#[derive(Deserialize)]
struct TargetEntry {
    length: i64,
    hashes: BTreeMap<String, String>,
}

/// Verifies the repository's files against the trusted root: timestamp (root's timestamp keys),
/// the snapshot it lists (hashes, snapshot keys), `targets` (hashes from the snapshot, root's
/// targets keys) and every delegation reachable from it that the snapshot lists (hashes from the
/// snapshot, keys and threshold from the parent's declaration, paths narrowed by every
/// ancestor's). Versions never go below `seen`; expiry is judged by `freshness`. A delegation that
/// is expired or under-signed is skipped, as the notary client does, and noted in
/// [`TrustData::skipped`]; anything else wrong refuses the whole repository.
pub fn verify_repository(
    gun: &str,
    root: &TrustedRoot,
    files: &RepoFiles,
    seen: &Versions,
    freshness: Freshness,
) -> Result<TrustData, Refusal> {
    let mut versions = seen.clone();
    let mut raise = |role: &str, version: i64| {
        let entry = versions.entry(role.to_owned()).or_insert(version);
        *entry = (*entry).max(version);
    };
    check_version(gun, "root", root.version(), seen)?;
    raise("root", root.version());
    freshness.check(gun, "root", root.root.expires)?;
    let mut expires = root.root.expires;

    // Timestamp.
    let signed = Signed::parse(&files.timestamp).map_err(|error| malformed(gun, "timestamp", error))?;
    let timestamp = Timestamp::from_signed(&signed).map_err(|error| malformed(gun, "timestamp", error))?;
    let keys = base_role(gun, &root.root, BaseRole::Timestamp)?;
    check_threshold("timestamp", &signed, &root.root.keys, &keys)
        .map_err(|error| bad_signature(gun, "timestamp", error))?;
    check_version(gun, "timestamp", timestamp.version, seen)?;
    freshness.check(gun, "timestamp", timestamp.expires)?;
    raise("timestamp", timestamp.version);
    expires = expires.min(timestamp.expires);

    // Snapshot.
    if !timestamp.snapshot.matches(&files.snapshot) {
        return Err(Refusal::HashMismatch { gun: gun.to_owned(), role: "snapshot".into(), parent: "timestamp".into() });
    }
    let signed = Signed::parse(&files.snapshot).map_err(|error| malformed(gun, "snapshot", error))?;
    let snapshot = Snapshot::from_signed(&signed).map_err(|error| malformed(gun, "snapshot", error))?;
    let keys = base_role(gun, &root.root, BaseRole::Snapshot)?;
    check_threshold("snapshot", &signed, &root.root.keys, &keys)
        .map_err(|error| bad_signature(gun, "snapshot", error))?;
    check_version(gun, "snapshot", snapshot.version, seen)?;
    freshness.check(gun, "snapshot", snapshot.expires)?;
    raise("snapshot", snapshot.version);
    expires = expires.min(snapshot.expires);
    if snapshot.meta.get("root").is_some_and(|meta| !meta.matches(&root.bytes)) {
        return Err(Refusal::StaleRoot(gun.to_owned()));
    }
    if snapshot.meta.len() > MAX_ROLES.saturating_add(1) {
        return Err(Refusal::Limit { gun: gun.to_owned(), detail: format!("more than {MAX_ROLES} roles") });
    }

    // Targets, then delegations in pre-order.
    let targets_role = RoleName::base(BaseRole::Targets);
    let targets_bytes = listed_file(gun, &snapshot, files, "targets")?;
    let signed = Signed::parse(targets_bytes).map_err(|error| malformed(gun, "targets", error))?;
    let targets = Targets::from_signed(&signed, &targets_role).map_err(|error| malformed(gun, "targets", error))?;
    let keys = base_role(gun, &root.root, BaseRole::Targets)?;
    let signers = check_threshold("targets", &signed, &root.root.keys, &keys)
        .map_err(|error| bad_signature(gun, "targets", error))?;
    check_version(gun, "targets", targets.version, seen)?;
    freshness.check(gun, "targets", targets.expires)?;
    raise("targets", targets.version);
    expires = expires.min(targets.expires);

    let everything = PathPrefixes::new([""]).unwrap_or_default();
    let mut roles = vec![RoleTargets {
        name: "targets".to_owned(),
        signers,
        targets: read_targets(gun, "targets", &signed, &everything)?,
    }];
    let mut skipped = BTreeMap::new();
    // The walk: a stack of (parent file, its effective paths, index of the next child to visit).
    struct Frame {
        targets: Targets,
        paths: PathPrefixes,
        next: usize,
    }
    let mut stack = vec![Frame { targets, paths: everything, next: 0 }];
    while let Some(frame) = stack.last_mut() {
        let Some(child) = frame.targets.delegations.get(frame.next).cloned() else {
            stack.pop();
            continue;
        };
        frame.next += 1;
        let name = child.name.as_str().to_owned();
        if child.name.depth() > MAX_DELEGATION_DEPTH.saturating_add(1) {
            return Err(Refusal::Limit {
                gun: gun.to_owned(),
                detail: format!("{name} is deeper than {MAX_DELEGATION_DEPTH} delegations"),
            });
        }
        // Notary's Restrict: the child keeps the paths that lie within its parent's.
        let kept: Vec<&str> = child
            .prefixes()
            .map(|set| set.iter().filter(|path| frame.paths.allows(path)).collect())
            .unwrap_or_default();
        let paths = PathPrefixes::new(kept).unwrap_or_default();
        let parent_keys = frame.targets.delegation_keys.clone();
        let Some(meta) = snapshot.meta.get(&name) else {
            skipped.insert(name.clone(), format!("{name} is not listed in the snapshot"));
            continue;
        };
        let Some(bytes) = files.roles.get(&name) else {
            return Err(Refusal::Missing { gun: gun.to_owned(), role: name });
        };
        if !meta.matches(bytes) {
            return Err(Refusal::HashMismatch { gun: gun.to_owned(), role: name, parent: "snapshot".into() });
        }
        let signed = Signed::parse(bytes).map_err(|error| malformed(gun, &name, error))?;
        let delegated = Targets::from_signed(&signed, &child.name).map_err(|error| malformed(gun, &name, error))?;
        check_version(gun, &name, delegated.version, seen)?;
        let signers = match check_threshold(&name, &signed, &parent_keys, &child.keys) {
            Ok(signers) => signers,
            Err(error) => {
                skipped.insert(name.clone(), format!("{name} is not properly signed: {error}"));
                continue;
            }
        };
        if let Err(refusal) = freshness.check(gun, &name, delegated.expires) {
            skipped.insert(name.clone(), refusal.to_string());
            continue;
        }
        raise(&name, delegated.version);
        expires = expires.min(delegated.expires);
        if roles.len() >= MAX_ROLES {
            return Err(Refusal::Limit { gun: gun.to_owned(), detail: format!("more than {MAX_ROLES} roles") });
        }
        roles.push(RoleTargets { name, signers, targets: read_targets(gun, child.name.as_str(), &signed, &paths)? });
        stack.push(Frame { targets: delegated, paths, next: 0 });
    }
    Ok(TrustData {
        gun: gun.to_owned(),
        root_version: root.version(),
        timestamp_version: timestamp.version,
        roles,
        skipped,
        expires,
        versions,
    })
}

/// The bytes of `role` from `files`, checked against the snapshot's entry.
fn listed_file<'f>(gun: &str, snapshot: &Snapshot, files: &'f RepoFiles, role: &str) -> Result<&'f [u8], Refusal> {
    let meta: &FileMeta =
        snapshot.meta.get(role).ok_or_else(|| Refusal::Missing { gun: gun.to_owned(), role: role.to_owned() })?;
    let bytes = files.roles.get(role).ok_or_else(|| Refusal::Missing { gun: gun.to_owned(), role: role.to_owned() })?;
    if !meta.matches(bytes) {
        return Err(Refusal::HashMismatch { gun: gun.to_owned(), role: role.to_owned(), parent: "snapshot".into() });
    }
    Ok(bytes)
}

/// Reads the targets of a verified file, keeping those within `paths` that carry a SHA-256.
fn read_targets(
    gun: &str,
    role: &str,
    signed: &Signed<'_>,
    paths: &PathPrefixes,
) -> Result<BTreeMap<String, SignedTarget>, Refusal> {
    let Some(raw) = signed.member("targets") else {
        return Ok(BTreeMap::new());
    };
    if raw.get() == "null" {
        return Ok(BTreeMap::new());
    }
    let entries: BTreeMap<String, TargetEntry> =
        serde_json::from_str(raw.get()).map_err(|error| malformed(gun, role, error))?;
    let mut targets = BTreeMap::new();
    for (name, entry) in entries {
        if !paths.allows(&name) {
            continue;
        }
        let Some(digest) = entry.hashes.get("sha256").and_then(|digest| B64.decode(digest).ok()) else {
            continue;
        };
        if digest.len() != 32 {
            continue;
        }
        targets.insert(name, SignedTarget { sha256: hex::encode(digest), length: entry.length });
    }
    Ok(targets)
}

/// The lower-case hex of a digest given as `sha256:<hex>` or bare hex.
pub fn normalize_digest(digest: &str) -> Option<String> {
    let hex_part = digest.strip_prefix("sha256:").unwrap_or(digest).to_ascii_lowercase();
    (hex_part.len() == 64 && hex_part.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some(hex_part)
}

/// The SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// Decides whether `tag` and/or `digest` (`sha256:<hex>` or hex, see [`normalize_digest`]) of `data`'s
/// GUN is signed as `requirement` asks. At least one of `tag` and `digest` must be given.
pub fn decide(data: &TrustData, tag: Option<&str>, digest: Option<&str>, requirement: &RoleRequirement) -> Verdict {
    let gun = data.gun.as_str();
    let normalized = digest.map(|text| normalize_digest(text).unwrap_or_else(|| text.to_ascii_lowercase()));
    let digest = normalized.as_deref();
    // Candidate target names: the tag, or every name some role lists with the digest.
    let names: BTreeSet<&str> = match (tag, digest) {
        (Some(tag), _) => [tag].into_iter().collect(),
        (None, Some(wanted)) => data
            .roles
            .iter()
            .flat_map(|role| {
                role.targets.iter().filter(|(_, target)| target.sha256 == wanted).map(|(name, _)| name.as_str())
            })
            .collect(),
        (None, None) => BTreeSet::new(),
    };
    let mut first: Option<Verdict> = None;
    for name in names {
        let verdict = decide_name(data, name, &format!("tag {name} of {gun}"), digest, requirement);
        if verdict.trusted {
            return verdict;
        }
        first.get_or_insert(verdict);
    }
    match (first, tag) {
        (Some(verdict), _) => verdict,
        (None, Some(tag)) => untrusted(format!("tag {tag} of {gun} is not signed"), None, Vec::new()),
        (None, None) => untrusted(
            format!("no signed tag of {gun} has the digest sha256:{}", digest.unwrap_or_default()),
            None,
            Vec::new(),
        ),
    }
}

fn untrusted(reason: String, digest: Option<String>, roles: Vec<String>) -> Verdict {
    Verdict { trusted: false, digest, roles, keys: Vec::new(), reason }
}

/// The roles that list `name`, in priority order, with the digest each gives.
fn listings<'d>(data: &'d TrustData, name: &str) -> Vec<(&'d RoleTargets, &'d str)> {
    data.roles.iter().filter_map(|role| role.targets.get(name).map(|target| (role, target.sha256.as_str()))).collect()
}

fn trusted(what: &str, digest: &str, roles: &[&RoleTargets], how: &str) -> Verdict {
    let names: Vec<String> = roles.iter().map(|role| role.name.clone()).collect();
    let mut keys: Vec<String> = Vec::new();
    for role in roles {
        for key in &role.signers {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    Verdict {
        trusted: true,
        digest: Some(format!("sha256:{digest}")),
        reason: format!("{what} is signed with digest sha256:{digest} by {}{how}", names.join(", ")),
        roles: names,
        keys,
    }
}

fn decide_name(
    data: &TrustData,
    name: &str,
    what: &str,
    digest: Option<&str>,
    requirement: &RoleRequirement,
) -> Verdict {
    let listed = listings(data, name);
    let signed_by = |roles: &[(&RoleTargets, &str)]| {
        roles.iter().map(|(role, _)| role.name.as_str()).collect::<Vec<_>>().join(", ")
    };
    if listed.is_empty() {
        return untrusted(format!("{what} is not signed"), None, Vec::new());
    }
    match requirement {
        RoleRequirement::Any => {
            // Notary's rule: the highest-priority role listing the name decides its digest.
            let Some((_, decided)) = listed.first().copied() else {
                return untrusted(format!("{what} is not signed"), None, Vec::new());
            };
            let with_digest: Vec<&RoleTargets> =
                listed.iter().filter(|(_, sha)| *sha == decided).map(|(role, _)| *role).collect();
            match digest {
                Some(wanted) if wanted != decided => untrusted(
                    format!("{what} is signed with digest sha256:{decided}, not sha256:{wanted}"),
                    Some(format!("sha256:{decided}")),
                    with_digest.iter().map(|role| role.name.clone()).collect(),
                ),
                _ => trusted(what, decided, &with_digest, ""),
            }
        }
        RoleRequirement::AllOf(required) => {
            let required: Vec<&str> = required.iter().map(RoleName::as_str).collect();
            decide_count(data, what, digest, &listed, &required, required.len(), &signed_by(&listed), true)
        }
        RoleRequirement::AtLeast { roles, min } => {
            let required: Vec<&str> = roles.iter().map(RoleName::as_str).collect();
            decide_count(data, what, digest, &listed, &required, *min, &signed_by(&listed), false)
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "one private helper shared by the two counting rules")]
fn decide_count(
    data: &TrustData,
    what: &str,
    digest: Option<&str>,
    listed: &[(&RoleTargets, &str)],
    required: &[&str],
    min: usize,
    signed_by: &str,
    all: bool,
) -> Verdict {
    // Candidate digests: the one asked for, or each digest a required role gives (priority order).
    let mut candidates: Vec<&str> = Vec::new();
    match digest {
        Some(wanted) => candidates.push(wanted),
        None => {
            for (role, sha) in listed {
                if required.contains(&role.name.as_str()) && !candidates.contains(sha) {
                    candidates.push(sha);
                }
            }
        }
    }
    let mut best: Option<(&str, Vec<&RoleTargets>)> = None;
    for candidate in candidates {
        let signing: Vec<&RoleTargets> = listed
            .iter()
            .filter(|(role, sha)| *sha == candidate && required.contains(&role.name.as_str()))
            .map(|(role, _)| *role)
            .collect();
        if signing.len() >= min.max(1) {
            let how = if all { String::new() } else { format!(" ({} of the required {min})", signing.len()) };
            return trusted(what, candidate, &signing, &how);
        }
        if best.as_ref().is_none_or(|(_, roles)| signing.len() > roles.len()) {
            best = Some((candidate, signing));
        }
    }
    let (found_digest, signing) = best.unwrap_or(("", Vec::new()));
    let signing_names: Vec<&str> = signing.iter().map(|role| role.name.as_str()).collect();
    let digest_text = digest.map(|wanted| format!(" with digest sha256:{wanted}")).unwrap_or_default();
    let mut reason = if all {
        let missing: Vec<&str> = required.iter().filter(|name| !signing_names.contains(name)).copied().collect();
        format!("{what} is not signed{digest_text} by {}; signed only by {signed_by}", missing.join(", "))
    } else {
        format!(
            "{what} is signed{digest_text} by {} of the required {min} of {}; signed only by {signed_by}",
            signing.len(),
            required.join(", ")
        )
    };
    if let Some(wanted) = digest
        && listed.iter().all(|(_, sha)| *sha != wanted)
    {
        let given: BTreeSet<&str> = listed.iter().map(|(_, sha)| *sha).collect();
        let given: Vec<String> = given.into_iter().map(|sha| format!("sha256:{sha}")).collect();
        reason = format!("{what} is signed with digest {}, not sha256:{wanted}", given.join(", "));
    }
    for name in required {
        if let Some(why) = data.skipped.get(*name) {
            reason.push_str(&format!(" ({why})"));
        }
    }
    let digest = (!found_digest.is_empty()).then(|| format!("sha256:{found_digest}"));
    untrusted(reason, digest, signing_names.iter().map(|name| (*name).to_owned()).collect())
}

#[cfg(test)]
mod tests;
