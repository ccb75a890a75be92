//! Attack class: one key counted twice toward a threshold. A bare key and a certificate holding
//! it (or two certificates for one key) have different key IDs; a threshold counts public keys,
//! compared by their canonical key ID.

use serde_json::json;
use tufa_core::update::{RepoState, UpdateError};

use crate::repo::{GUN, Key, Repo, no_delegations, sign};
use crate::{refused, run};

#[test]
fn a_bare_key_and_its_certificate_count_once() {
    let repo = Repo::new();
    let certificate = repo.targets.reissued(GUN);
    let mut body = repo.root_body(1);
    body["keys"][certificate.id()] = certificate.public.to_json();
    body["roles"]["targets"] = json!({"keyids": [repo.targets.id(), certificate.id()], "threshold": 2});
    let root = sign(&body, &[&repo.root_key]);
    let targets = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": crate::repo::expires(10), "targets": {}, "version": 1}),
        &[&repo.targets, &certificate],
    );
    refused(
        &RepoState::default(),
        &[("root", &root), ("targets", &targets)],
        UpdateError::BadTargets("valid signatures did not meet threshold for targets".into()),
    );
    // Two distinct keys meet the same threshold.
    let other = Key::ecdsa();
    let mut body = repo.root_body(1);
    body["keys"][other.id()] = other.public.to_json();
    body["roles"]["targets"] = json!({"keyids": [repo.targets.id(), other.id()], "threshold": 2});
    let root = sign(&body, &[&repo.root_key]);
    let targets = sign(
        &json!({"_type": "Targets", "delegations": no_delegations(), "expires": crate::repo::expires(10), "targets": {}, "version": 1}),
        &[&repo.targets, &other],
    );
    assert_eq!(
        run(&RepoState::default(), &[("root", &root), ("targets", &targets)]).unwrap(),
        vec![("root".to_owned(), 1), ("targets".to_owned(), 1)]
    );
}

#[test]
fn two_certificates_for_one_root_key_count_once() {
    let repo = Repo::new();
    let second = repo.root_key.reissued(GUN);
    let mut body = repo.root_body(1);
    body["keys"][second.id()] = second.public.to_json();
    body["roles"]["root"] = json!({"keyids": [repo.root_key.id(), second.id()], "threshold": 2});
    let root = sign(&body, &[&repo.root_key, &second]);
    let targets = repo.targets(1, json!({}), no_delegations());
    refused(
        &RepoState::default(),
        &[("root", &root), ("targets", &targets)],
        UpdateError::BadRoot("valid signatures did not meet threshold for root".into()),
    );
}
