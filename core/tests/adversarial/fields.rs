//! Attack class: field names that differ only in case from a known field. Go's JSON decoder
//! matches struct fields ignoring case, so the notary client read `"Targets"` (placed beside
//! `"targets"`) as the targets, and listed `../escape`, while the server checked only the exact
//! name.

use serde_json::json;
use tufa_core::update::UpdateError;

use crate::repo::{Repo, expires, no_delegations, published, sign, target};
use crate::{envelope_around, refused};

#[test]
fn targets_beside_targets_is_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let body = json!({
        "_type": "Targets", "delegations": no_delegations(), "expires": expires(10), "version": 3,
        "targets": {}, "Targets": {"../escape": target(b"x")},
    });
    let targets = sign(&body, &[&repo.targets]);
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::BadTargets(
            "targets: \"signed\" has the field \"Targets\", which differs only in case from \"targets\"".into(),
        ),
    );
}

#[test]
fn case_variants_are_refused_in_every_struct_notary_decodes() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    // Go also folds the Kelvin sign to `k` and the long s to `s`.
    let mut root = repo.root_body(2);
    root["\u{212A}eys"] = json!({});
    let root = sign(&root, &[&repo.root_key]);
    refused(
        &state,
        &[("root", &root)],
        UpdateError::BadRoot(
            "\"signed\" has the field \"\u{212A}eys\", which differs only in case from \"keys\"".into(),
        ),
    );
    let mut root = repo.root_body(2);
    root["roles"]["targets"]["Threshold"] = json!(5);
    let root = sign(&root, &[&repo.root_key]);
    refused(
        &state,
        &[("root", &root)],
        UpdateError::BadRoot(
            "root role targets has the field \"Threshold\", which differs only in case from \"threshold\"".into(),
        ),
    );
    let delegate = repo.targets.public.clone();
    let delegations = json!({
        "keys": {repo.targets.id(): delegate.to_json()},
        "roles": [{"keyids": [repo.targets.id()], "name": "targets/a", "paths": ["a/"], "Paths": [""], "threshold": 1}]
    });
    let targets = repo.targets(3, json!({}), delegations);
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::BadTargets(
            "targets: a delegation has the field \"Paths\", which differs only in case from \"paths\"".into(),
        ),
    );
    let targets =
        repo.targets(3, json!({"v": {"hashes": target(b"a")["hashes"], "length": 1, "LENGTH": 2}}), no_delegations());
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::BadTargets(
            "targets: target \"v\" has the field \"LENGTH\", which differs only in case from \"length\"".into(),
        ),
    );
    // In the envelope, and in a signature.
    let good = String::from_utf8(repo.targets(3, json!({}), no_delegations())).unwrap();
    let shadowed = good.replacen("{\"signed\":", "{\"\u{17F}igned\":{},\"signed\":", 1);
    refused(
        &state,
        &[("targets", shadowed.as_bytes())],
        UpdateError::Malformed(
            "targets: the envelope has the field \"\u{17F}igned\", which differs only in case from \"signed\"".into(),
        ),
    );
    let renamed = good.replacen("\"keyid\":", "\"KeyID\":", 1);
    refused(
        &state,
        &[("targets", renamed.as_bytes())],
        UpdateError::Malformed(
            "targets: a signature has the field \"KeyID\", which differs only in case from \"keyid\"".into(),
        ),
    );
    // Unknown fields that are not case variants are carried along, as notary does.
    let text = format!(
        r#"{{"_type":"Targets","delegations":{{"keys":{{}},"roles":[]}},"expires":"{}","targets":{{}},"vendor":1,"version":3}}"#,
        expires(10)
    );
    let targets = envelope_around(&text, &[&repo.targets]);
    assert_eq!(crate::run(&state, &[("targets", &targets)]).unwrap(), vec![("targets".to_owned(), 3)]);
}
