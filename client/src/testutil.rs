//! Test support: repositories built from software keys (root, targets, delegations, snapshot,
//! timestamp), signed as notary clients sign them.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use tufa_core::canonical::to_canonical;
use tufa_core::keys::{Algorithm, PrivateKey, sha256, sha512};
use tufa_core::metadata::{Signature, envelope};
use tufa_core::time;

use crate::tuf::RepoFiles;

pub(crate) const GUN: &str = "registry.example.com/app";

pub(crate) fn key() -> PrivateKey {
    PrivateKey::generate(Algorithm::Ecdsa).unwrap()
}

pub(crate) fn digest(seed: &str) -> String {
    hex::encode(sha256(seed.as_bytes()))
}

pub(crate) fn sign(body: &Value, keys: &[&PrivateKey]) -> Vec<u8> {
    let canonical = to_canonical(body).unwrap();
    let signatures: Vec<Signature> = keys
        .iter()
        .map(|key| Signature {
            keyid: key.key_id().to_owned(),
            method: key.method().to_owned(),
            sig: key.sign(&canonical).unwrap(),
        })
        .collect();
    envelope(&canonical, &signatures)
}

pub(crate) fn meta(bytes: &[u8]) -> Value {
    json!({"hashes": {"sha256": B64.encode(sha256(bytes)), "sha512": B64.encode(sha512(bytes))}, "length": bytes.len()})
}

pub(crate) fn target_entry(sha256_hex: &str) -> Value {
    json!({"hashes": {"sha256": B64.encode(hex::decode(sha256_hex).unwrap())}, "length": 1234})
}

pub(crate) fn later(days: i64) -> String {
    time::format(Utc::now() + Duration::days(days))
}

/// One delegation of the test repository.
pub(crate) struct Delegated {
    pub(crate) name: &'static str,
    pub(crate) keys: Vec<PrivateKey>,
    pub(crate) threshold: usize,
    /// How many of `keys` sign the file.
    pub(crate) signing: usize,
    pub(crate) paths: Vec<&'static str>,
    pub(crate) targets: Vec<(&'static str, String)>,
    pub(crate) version: i64,
    pub(crate) expires_days: i64,
}

impl Delegated {
    pub(crate) fn new(name: &'static str, targets: Vec<(&'static str, String)>) -> Self {
        Self {
            name,
            keys: vec![key()],
            threshold: 1,
            signing: 1,
            paths: vec![""],
            targets,
            version: 1,
            expires_days: 365,
        }
    }
}

/// A repository built from software keys.
pub(crate) struct Repo {
    pub(crate) root_keys: Vec<PrivateKey>,
    /// Keys outside the root role that sign the root too (the old keys of a rotation).
    pub(crate) extra_root_signers: Vec<PrivateKey>,
    /// The root file to use instead of one signed anew (signatures and expiry differ each time).
    pub(crate) root_file: Option<Vec<u8>>,
    pub(crate) root_threshold: usize,
    pub(crate) targets_keys: Vec<PrivateKey>,
    pub(crate) targets_threshold: usize,
    pub(crate) targets_signing: usize,
    pub(crate) snapshot_key: PrivateKey,
    pub(crate) timestamp_key: PrivateKey,
    pub(crate) root_version: i64,
    pub(crate) targets_version: i64,
    pub(crate) timestamp_expires_days: i64,
    pub(crate) targets: Vec<(&'static str, String)>,
    pub(crate) delegations: Vec<Delegated>,
}

impl Repo {
    pub(crate) fn new() -> Self {
        Self {
            root_keys: vec![key()],
            extra_root_signers: Vec::new(),
            root_file: None,
            root_threshold: 1,
            targets_keys: vec![key()],
            targets_threshold: 1,
            targets_signing: 1,
            snapshot_key: key(),
            timestamp_key: key(),
            root_version: 1,
            targets_version: 3,
            timestamp_expires_days: 14,
            targets: vec![("v1", digest("v1"))],
            delegations: Vec::new(),
        }
    }

    pub(crate) fn root_body(&self) -> Value {
        let mut keys = serde_json::Map::new();
        let ids = |list: &[PrivateKey]| list.iter().map(|key| key.key_id().to_owned()).collect::<Vec<_>>();
        for key in self.root_keys.iter().chain(&self.targets_keys).chain([&self.snapshot_key, &self.timestamp_key]) {
            keys.insert(key.key_id().to_owned(), key.public_key().to_json());
        }
        json!({
            "_type": "Root", "consistent_snapshot": false, "expires": later(3650), "keys": keys,
            "roles": {
                "root": {"keyids": ids(&self.root_keys), "threshold": self.root_threshold},
                "targets": {"keyids": ids(&self.targets_keys), "threshold": self.targets_threshold},
                "snapshot": {"keyids": [self.snapshot_key.key_id()], "threshold": 1},
                "timestamp": {"keyids": [self.timestamp_key.key_id()], "threshold": 1},
            },
            "version": self.root_version,
        })
    }

    pub(crate) fn root(&self) -> Vec<u8> {
        let signers: Vec<&PrivateKey> = self.extra_root_signers.iter().chain(&self.root_keys).collect();
        sign(&self.root_body(), &signers)
    }

    /// The targets-type body of `role`: its targets and the delegations directly below it.
    pub(crate) fn targets_body(
        &self,
        role: &str,
        targets: &[(&str, String)],
        version: i64,
        expires_days: i64,
    ) -> Value {
        let mut keys = serde_json::Map::new();
        let mut roles = Vec::new();
        for child in
            self.delegations.iter().filter(|child| child.name.rsplit_once('/').map(|(parent, _)| parent) == Some(role))
        {
            for key in &child.keys {
                keys.insert(key.key_id().to_owned(), key.public_key().to_json());
            }
            roles.push(json!({
                "keyids": child.keys.iter().map(|key| key.key_id().to_owned()).collect::<Vec<_>>(),
                "name": child.name, "paths": child.paths, "threshold": child.threshold,
            }));
        }
        let entries: serde_json::Map<String, Value> =
            targets.iter().map(|(name, sha)| ((*name).to_owned(), target_entry(sha))).collect();
        json!({
            "_type": "Targets", "delegations": {"keys": keys, "roles": roles}, "expires": later(expires_days),
            "targets": entries, "version": version,
        })
    }

    /// The root bytes and the other files, each role's file changed by `tamper` before the
    /// snapshot lists it.
    pub(crate) fn build_with(&self, tamper: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> (Vec<u8>, RepoFiles) {
        let root = self.root_file.clone().unwrap_or_else(|| self.root());
        let mut roles = BTreeMap::new();
        let signers: Vec<&PrivateKey> = self.targets_keys.iter().take(self.targets_signing).collect();
        let targets = sign(&self.targets_body("targets", &self.targets, self.targets_version, 365), &signers);
        roles.insert("targets".to_owned(), tamper("targets", targets));
        for child in &self.delegations {
            let signers: Vec<&PrivateKey> = child.keys.iter().take(child.signing).collect();
            let body = self.targets_body(child.name, &child.targets, child.version, child.expires_days);
            roles.insert(child.name.to_owned(), tamper(child.name, sign(&body, &signers)));
        }
        let mut snapshot_meta = serde_json::Map::new();
        snapshot_meta.insert("root".into(), meta(&root));
        for (role, bytes) in &roles {
            snapshot_meta.insert(role.clone(), meta(bytes));
        }
        let snapshot = sign(
            &json!({"_type": "Snapshot", "expires": later(1095), "meta": snapshot_meta, "version": 4}),
            &[&self.snapshot_key],
        );
        let timestamp = sign(
            &json!({"_type": "Timestamp", "expires": later(self.timestamp_expires_days),
                    "meta": {"snapshot": meta(&snapshot)}, "version": 7}),
            &[&self.timestamp_key],
        );
        (root, RepoFiles { timestamp, snapshot, roles })
    }

    pub(crate) fn build(&self) -> (Vec<u8>, RepoFiles) {
        self.build_with(|_, bytes| bytes)
    }
}
