//! Attack class: key material that does not match its declared type. notary-server accepted a
//! root whose `ed25519` or `rsa` key carried ECDSA bytes, after which the notary client could no
//! longer validate the repository.

use serde_json::json;
use tufa_core::keys::{KeyType, PublicKey};
use tufa_core::update::{RepoState, UpdateError};

use crate::refused;
use crate::repo::{Repo, no_delegations, published, sign};

#[test]
fn a_root_key_declared_ed25519_holding_ecdsa_bytes_is_refused() {
    let repo = Repo::new();
    let mut body = repo.root_body(1);
    // The timestamp key's ECDSA material, declared as ed25519 under the ID that declaration hashes to.
    let forged = PublicKey::new(KeyType::Ed25519, repo.timestamp.public.public().to_vec());
    body["keys"].as_object_mut().unwrap().remove(&repo.timestamp.id());
    body["keys"][forged.key_id()] = forged.to_json();
    body["roles"]["timestamp"]["keyids"] = json!([forged.key_id()]);
    let root = sign(&body, &[&repo.root_key]);
    let targets = repo.targets(1, json!({}), no_delegations());
    refused(
        &RepoState::default(),
        &[("root", &root), ("targets", &targets)],
        UpdateError::BadRoot(format!("root key {}: key declared ed25519 holds an ECDSA key", forged.key_id())),
    );
}

#[test]
fn a_root_key_declared_rsa_holding_ecdsa_bytes_is_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let mut body = repo.root_body(2);
    let forged = PublicKey::new(KeyType::Rsa, repo.snapshot.public.public().to_vec());
    body["keys"][forged.key_id()] = forged.to_json();
    let root = sign(&body, &[&repo.root_key]);
    refused(
        &state,
        &[("root", &root)],
        UpdateError::BadRoot(format!("root key {}: key declared rsa holds an ECDSA key", forged.key_id())),
    );
}

#[test]
fn a_delegation_key_declared_ecdsa_holding_ed25519_bytes_is_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let forged = PublicKey::new(KeyType::Ecdsa, vec![9; 32]);
    let delegations = json!({
        "keys": {forged.key_id(): forged.to_json()},
        "roles": [{"keyids": [forged.key_id()], "name": "targets/a", "paths": [""], "threshold": 1}]
    });
    let targets = repo.targets(3, json!({}), delegations);
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::BadTargets(format!(
            "targets: delegation key {}: key declared ecdsa holds 32 raw bytes (an Ed25519 key)",
            forged.key_id()
        )),
    );
}
