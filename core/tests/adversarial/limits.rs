//! Attack class: uploads built to exhaust the server. 40,000 delegations in one file (a
//! pairwise duplicate check made this cost seconds), one delegation with 40,000 paths (cloned
//! for each child), and bodies of empty arrays (each costing tens of bytes once parsed) are
//! refused by the limits before any per-item work, with errors naming the limit.

use serde_json::{Value, json};
use tufa_core::metadata::envelope;
use tufa_core::update::UpdateError;

use crate::refused;
use crate::repo::{Repo, expires, no_delegations, published};

fn unsigned_targets(delegations: Value) -> Vec<u8> {
    let body =
        json!({"_type": "Targets", "delegations": delegations, "expires": expires(10), "targets": {}, "version": 3});
    envelope(&tufa_core::canonical::to_canonical(&body).unwrap(), &[])
}

#[test]
fn forty_thousand_delegations_are_refused_by_the_limit() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let roles: Vec<Value> = (0..40_000)
        .map(|index| json!({"keyids": [], "name": format!("targets/r{index}"), "paths": [""], "threshold": 1}))
        .collect();
    let targets = unsigned_targets(json!({"keys": {}, "roles": roles}));
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::BadTargets("targets delegations: 40000 is more than the limit max_delegations = 1000".into()),
    );
}

#[test]
fn forty_thousand_paths_in_one_delegation_are_refused_by_the_limit() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let paths: Vec<String> = (0..40_000).map(|index| format!("p{index}/")).collect();
    let targets = unsigned_targets(json!({"keys": {}, "roles": [
        {"keyids": [], "name": "targets/wide", "paths": paths, "threshold": 1}
    ]}));
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::BadTargets(
            "targets delegation \"targets/wide\" paths: 40000 is more than the limit max_delegation_paths = 1000"
                .into(),
        ),
    );
}

#[test]
fn the_first_delegation_over_a_limit_is_named_whatever_the_shape_of_the_section() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let many_keyids: Vec<String> = (0..300).map(|index| format!("{index:064x}")).collect();
    let many_paths: Vec<String> = (0..1001).map(|index| format!("p{index}/")).collect();
    let keyids_error = "targets delegation \"targets/keys\" key IDs: 300 is more than the limit max_role_keyids = 256";
    let paths_error =
        "targets delegation \"targets/wide\" paths: 1001 is more than the limit max_delegation_paths = 1000";
    let unnamed_error =
        "targets delegation \"(unnamed)\" paths: 1001 is more than the limit max_delegation_paths = 1000";
    let cases = [
        // The usual shape, read in one pass: the first entry over a limit, key IDs before paths.
        (
            json!([{"keyids": [], "name": "targets/ok", "paths": [""], "threshold": 1},
                   {"keyids": many_keyids, "name": "targets/keys", "paths": many_paths, "threshold": 1},
                   {"keyids": [], "name": "targets/wide", "paths": many_paths, "threshold": 1}]),
            keyids_error,
        ),
        (
            json!([{"keyids": [], "name": "targets/wide", "paths": many_paths, "threshold": 1},
                   {"keyids": many_keyids, "name": "targets/keys", "paths": [], "threshold": 1}]),
            paths_error,
        ),
        (json!([{"keyids": [], "name": null, "paths": many_paths, "threshold": 1}]), unnamed_error),
        // Other shapes, counted member by member: a list among the entries counts as an entry
        // without members, and a name that is not a string as no name.
        (
            json!([["targets/list", many_keyids, many_paths],
                   {"keyids": [], "name": "targets/wide", "paths": many_paths, "threshold": 1}]),
            paths_error,
        ),
        (json!([{"keyids": [], "name": 7, "paths": many_paths, "threshold": 1}]), unnamed_error),
    ];
    for (roles, error) in cases {
        let targets = unsigned_targets(json!({"keys": {}, "roles": roles}));
        refused(&state, &[("targets", &targets)], UpdateError::BadTargets(error.into()));
    }
}

#[test]
fn a_body_of_empty_arrays_is_refused_before_it_is_parsed() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let body = format!("{{\"signed\":{{\"custom\":[{}[]]}},\"signatures\":[]}}", "[],".repeat(100_000));
    refused(
        &state,
        &[("targets", body.as_bytes())],
        UpdateError::Malformed(format!(
            "targets: metadata JSON is refused: 100005 JSON values in {} bytes is denser than metadata is (at most one per 8 bytes)",
            body.len()
        )),
    );
}
