//! Test support shared by core's and the server's tests: builds TUF repositories the way the
//! notary client does (a self-signed certificate as root key, ECDSA role keys), signed with real keys.
// Included by two test crates (core and server), each using a different subset: an `expect` of
// `dead_code` would be unfulfilled in one of them, so this stays an `allow`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "shared fixture code; failing loudly is how a fixture reports a broken expectation"
)]

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use tufa_core::canonical::to_canonical;
use tufa_core::keys::{Algorithm, KeyType, PrivateKey, PublicKey};
use tufa_core::metadata::{FileMeta, Signature, envelope};
use tufa_core::update::RepoState;

pub(crate) const GUN: &str = "example.com/app";

pub(crate) struct Key {
    pub private: PrivateKey,
    pub public: PublicKey,
}

impl Key {
    pub(crate) fn ecdsa() -> Self {
        let private = PrivateKey::generate(Algorithm::Ecdsa).unwrap();
        let public = private.public_key();
        Self { private, public }
    }

    /// A root key: a self-signed certificate with CN = `common_name`, as the notary client makes.
    pub(crate) fn root(common_name: &str) -> Self {
        Self::root_with(PrivateKey::generate(Algorithm::Ecdsa).unwrap(), common_name)
    }

    /// A new certificate for this key's private key, as the notary client issues when it
    /// re-creates a repository: another key ID, the same public key.
    pub(crate) fn reissued(&self, common_name: &str) -> Self {
        let private = PrivateKey::from_pkcs8(Algorithm::Ecdsa, &self.private.pkcs8()).unwrap();
        Self::root_with(private, common_name)
    }

    fn root_with(private: PrivateKey, common_name: &str) -> Self {
        let pkcs8 = private.pkcs8();
        let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key_pair).unwrap();
        let public = PublicKey::new(KeyType::EcdsaX509, cert.pem().into_bytes());
        Self { private, public }
    }

    pub(crate) fn id(&self) -> String {
        self.public.key_id()
    }
}

pub(crate) fn expires(days: i64) -> String {
    tufa_core::time::format(Utc::now() + Duration::days(days))
}

pub(crate) fn sign(body: &Value, keys: &[&Key]) -> Vec<u8> {
    let canonical = to_canonical(body).unwrap();
    let signatures: Vec<Signature> = keys
        .iter()
        .map(|key| Signature {
            keyid: key.id(),
            method: key.private.method().into(),
            sig: key.private.sign(&canonical).unwrap(),
        })
        .collect();
    envelope(&canonical, &signatures)
}

pub(crate) fn meta(bytes: &[u8]) -> Value {
    let file = FileMeta::of(bytes);
    use base64::Engine as _;
    let hashes: serde_json::Map<String, Value> = file
        .hashes
        .iter()
        .map(|(name, digest)| (name.clone(), Value::String(base64::engine::general_purpose::STANDARD.encode(digest))))
        .collect();
    json!({"hashes": hashes, "length": file.length})
}

pub(crate) struct Repo {
    pub root_key: Key,
    pub targets: Key,
    pub snapshot: Key,
    pub timestamp: Key,
}

impl Repo {
    pub(crate) fn new() -> Self {
        Self { root_key: Key::root(GUN), targets: Key::ecdsa(), snapshot: Key::ecdsa(), timestamp: Key::ecdsa() }
    }

    pub(crate) fn root_body(&self, version: i64) -> Value {
        let keys: serde_json::Map<String, Value> = [&self.root_key, &self.targets, &self.snapshot, &self.timestamp]
            .iter()
            .map(|key| (key.id(), key.public.to_json()))
            .collect();
        json!({
            "_type": "Root", "consistent_snapshot": false, "expires": expires(3650), "keys": keys, "version": version,
            "roles": {
                "root": {"keyids": [self.root_key.id()], "threshold": 1},
                "targets": {"keyids": [self.targets.id()], "threshold": 1},
                "snapshot": {"keyids": [self.snapshot.id()], "threshold": 1},
                "timestamp": {"keyids": [self.timestamp.id()], "threshold": 1},
            }
        })
    }

    pub(crate) fn root(&self, version: i64) -> Vec<u8> {
        sign(&self.root_body(version), &[&self.root_key])
    }

    pub(crate) fn targets(&self, version: i64, targets: Value, delegations: Value) -> Vec<u8> {
        sign(
            &json!({"_type": "Targets", "delegations": delegations, "expires": expires(1095), "targets": targets, "version": version}),
            &[&self.targets],
        )
    }

    pub(crate) fn snapshot(&self, version: i64, files: &[(&str, &[u8])]) -> Vec<u8> {
        let meta: serde_json::Map<String, Value> =
            files.iter().map(|(role, bytes)| ((*role).to_owned(), meta(bytes))).collect();
        sign(
            &json!({"_type": "Snapshot", "expires": expires(1095), "meta": meta, "version": version}),
            &[&self.snapshot],
        )
    }
}

pub(crate) fn target(content: &[u8]) -> Value {
    meta(content)
}

pub(crate) fn no_delegations() -> Value {
    json!({"keys": {}, "roles": []})
}

/// A repository as stored after a first publish of root, targets and snapshot (plus a timestamp).
pub(crate) fn published(repo: &Repo, targets: &[u8]) -> RepoState {
    let root = repo.root(1);
    let snapshot = repo.snapshot(2, &[("root", &root), ("targets", targets)]);
    let timestamp = sign(
        &json!({"_type": "Timestamp", "expires": expires(14), "meta": {"snapshot": meta(&snapshot)}, "version": 1}),
        &[&repo.timestamp],
    );
    RepoState::new([
        ("root".to_owned(), root),
        ("targets".to_owned(), targets.to_vec()),
        ("snapshot".to_owned(), snapshot),
        ("timestamp".to_owned(), timestamp),
    ])
}
