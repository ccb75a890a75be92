//! Attack class: a `signed` object that is not written in canonical form. The server checks
//! signatures over the canonical re-encoding, so such a file verifies, but the bytes stored and
//! served are not the bytes signed. Also integers that notary clients read as float64 and so
//! re-encode differently (their signatures cannot verify there).

use serde_json::json;
use tufa_core::update::UpdateError;

use crate::repo::{Repo, expires, no_delegations, published, target};
use crate::{envelope_around, refused, run};

const NOT_CANONICAL: &str = "targets: \"signed\" is not written in canonical JSON, so its text is not what was signed";

fn targets_text(targets: &str, version: &str) -> String {
    format!(
        r#"{{"_type":"Targets","delegations":{{"keys":{{}},"roles":[]}},"expires":"{}","targets":{targets},"version":{version}}}"#,
        expires(10)
    )
}

#[test]
fn non_canonical_signed_text_is_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let meta = serde_json::to_string(&target(b"a")).unwrap();
    let cases = [
        // Members out of order.
        format!(
            r#"{{"version":3,"_type":"Targets","delegations":{{"keys":{{}},"roles":[]}},"expires":"{}","targets":{{}}}}"#,
            expires(10)
        ),
        // An escape canonical JSON does not write.
        targets_text(&format!(r#"{{"\u00761":{meta}}}"#), "3"),
        targets_text(&format!(r#"{{"a\/b":{meta}}}"#), "3"),
        // A number not written plainly.
        targets_text("{}", "3.0"),
        targets_text("{}", "3e0"),
    ];
    for text in cases {
        let targets = envelope_around(&text, &[&repo.targets]);
        match run(&state, &[("targets", &targets)]) {
            Err(error) => assert_eq!(error, UpdateError::Malformed(NOT_CANONICAL.into()), "{text}"),
            Ok(stored) => panic!("accepted {text}: {stored:?}"),
        }
    }
}

#[test]
fn pretty_printed_envelopes_and_go_escapes_are_accepted() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let meta = serde_json::to_string(&target(b"a")).unwrap();
    // What `json.Marshal` writes around a canonical `signed` holding `&`, `<` and `>`.
    let text = targets_text(&format!(r#"{{"a\u0026b\u003cc\u003e":{meta}}}"#), "3");
    let targets = envelope_around(&text, &[&repo.targets]);
    assert_eq!(run(&state, &[("targets", &targets)]).unwrap(), vec![("targets".to_owned(), 3)]);
    // The same file indented.
    let value: serde_json::Value =
        serde_json::from_slice(&repo.targets(3, json!({"v": target(b"a")}), no_delegations())).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    assert_eq!(run(&state, &[("targets", &pretty)]).unwrap(), vec![("targets".to_owned(), 3)]);
}

#[test]
fn integers_beyond_two_to_the_53_are_refused() {
    let repo = Repo::new();
    let state = published(&repo, &repo.targets(2, json!({}), no_delegations()));
    let huge =
        r#"{"v":{"hashes":{"sha256":"LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="},"length":9007199254740993}}"#;
    // No signature is needed: the file is refused before signatures are looked at.
    let targets = tufa_core::metadata::envelope(targets_text(huge, "3").as_bytes(), &[]);
    refused(
        &state,
        &[("targets", &targets)],
        UpdateError::Malformed(
            "targets: integer 9007199254740993 is beyond ±2^53, which notary clients cannot verify".into(),
        ),
    );
}
