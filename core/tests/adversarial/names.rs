//! Attack class: names that display as other names. Unicode control (Cc) and format (Cf)
//! characters — bidirectional overrides and isolates, zero-width characters — are refused in
//! GUNs and target names.

use serde_json::json;
use tufa_core::names::{Gun, NameError};
use tufa_core::update::UpdateError;

use crate::refused;
use crate::repo::{Repo, no_delegations, published, target};

#[test]
fn guns_with_bidi_controls_or_invisible_characters_are_refused() {
    for gun in [
        "example.com/\u{202E}ppa",
        "example.com/a\u{2066}pp\u{2069}",
        "example.com/a\u{200D}pp",
        "a\u{FEFF}",
        "a\u{9B}b",
    ] {
        assert_eq!(Gun::parse(gun), Err(NameError::Gun("it contains control or format characters")), "{gun:?}");
    }
}

#[test]
fn target_names_with_bidi_controls_or_invisible_characters_are_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    for name in ["release\u{202E}gpj.exe", "v1\u{2067}", "lat\u{200B}est", "v\u{E0041}1"] {
        let targets = repo.targets(3, json!({ name: target(b"x") }), no_delegations());
        refused(
            &state,
            &[("targets", &targets)],
            UpdateError::BadTargets("targets: invalid target name: it contains control or format characters".into()),
        );
    }
}
