//! Attack class: versions notary cannot hold. notary-server stores versions in 32-bit columns
//! and 32-bit notary clients read them into a 32-bit `int`, so a version past 2^31 - 1 would be
//! accepted here and then unreadable there, and the next server-made version would overflow.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;
use tufa_core::metadata::{FileMeta, MAX_VERSION};
use tufa_core::update::{UpdateError, draft_snapshot};

use crate::refused;
use crate::repo::{Repo, no_delegations, published, target};

#[test]
fn versions_outside_the_32_bit_range_are_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    for version in [MAX_VERSION + 1, 1 << 40, 0, -1] {
        let targets = repo.targets(version, json!({"v": target(b"a")}), no_delegations());
        refused(
            &state,
            &[("targets", &targets)],
            UpdateError::BadTargets(format!("targets: \"version\" {version} is outside 1 to 2147483647")),
        );
    }
    let root = repo.root(MAX_VERSION + 1);
    refused(
        &state,
        &[("root", &root)],
        UpdateError::BadRoot("\"version\" 2147483648 is outside 1 to 2147483647".into()),
    );
    // The largest version is accepted.
    let targets = repo.targets(MAX_VERSION, json!({}), no_delegations());
    assert_eq!(crate::run(&state, &[("targets", &targets)]).unwrap(), vec![("targets".to_owned(), MAX_VERSION)]);
}

#[test]
fn the_server_never_drafts_past_the_largest_version() {
    let repo = Repo::new();
    let root = repo.root(1);
    let targets = repo.targets(1, json!({}), no_delegations());
    let snapshot = repo.snapshot(MAX_VERSION, &[("root", &root), ("targets", &targets)]);
    let loaded = BTreeMap::from([("targets".to_owned(), FileMeta::of(&targets))]);
    assert_eq!(
        draft_snapshot(Some(&snapshot), &loaded, Utc::now()).map(|draft| draft.version),
        Err(UpdateError::Validation("the snapshot version cannot go past 2147483647".into()))
    );
}
