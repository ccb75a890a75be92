//! Attack class: JSON that readers disagree on. A repeated key is read as its last value by Go
//! and `serde_json` but as its first by other readers; nesting without bound exhausts stacks.

use serde_json::json;
use tufa_core::json::MAX_DEPTH;
use tufa_core::update::UpdateError;

use crate::repo::{Repo, expires, no_delegations, published, target};
use crate::{envelope_around, refused};

#[test]
fn a_repeated_key_in_signed_is_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let evil = serde_json::to_string(&json!({"../escape": target(b"x")})).unwrap();
    let text = format!(
        r#"{{"_type":"Targets","delegations":{{"keys":{{}},"roles":[]}},"expires":"{}","targets":{{}},"targets":{evil},"version":3}}"#,
        expires(10)
    );
    let targets = envelope_around(&text, &[&repo.targets]);
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::Malformed("targets: metadata JSON is refused: an object repeats the key \"targets\"".into()),
    );
}

#[test]
fn a_repeated_key_in_the_envelope_or_a_map_is_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let good = repo.targets(3, json!({"v1": target(b"a")}), no_delegations());
    let text = String::from_utf8(good.clone()).unwrap();
    // A second `signatures` member after the first.
    let doubled = format!("{},\"signatures\":[]}}", text.strip_suffix('}').unwrap());
    refused(
        &state,
        &[("targets", doubled.as_bytes())],
        UpdateError::Malformed("targets: metadata JSON is refused: an object repeats the key \"signatures\"".into()),
    );
    // The same target twice, the second spelled with an escape.
    let meta = serde_json::to_string(&target(b"a")).unwrap();
    let text = format!(
        r#"{{"_type":"Targets","delegations":{{"keys":{{}},"roles":[]}},"expires":"{}","targets":{{"v1":{meta},"\u0076\u0031":{meta}}},"version":3}}"#,
        expires(10)
    );
    let targets = envelope_around(&text, &[&repo.targets]);
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::Malformed("targets: metadata JSON is refused: an object repeats the key \"v1\"".into()),
    );
}

#[test]
fn nesting_beyond_the_bound_is_refused_without_exhausting_the_stack() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let depth = 100_000;
    let text = format!(
        r#"{{"signed":{{"_type":"Targets","custom":{}{}}},"signatures":[]}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    refused(
        &state,
        &[("targets", text.as_bytes())],
        UpdateError::Malformed(format!("targets: metadata JSON is refused: JSON nests deeper than {MAX_DEPTH} levels")),
    );
}
