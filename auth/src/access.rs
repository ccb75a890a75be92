//! Access records (`{type, name, actions}`, the JWT `access` claim) and the one grant decision.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The action that grants every action on a resource.
pub const ALL_ACTIONS: &str = "*";

/// Actions on one resource, as in a registry token's `access` claim and in a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The resource type, for example `repository` or `registry`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The resource name, for example a GUN or `catalog`.
    pub name: String,
    /// The actions, for example `pull`, `push` or `*`; a missing list means no action.
    #[serde(default)]
    pub actions: BTreeSet<String>,
}

impl Access {
    /// Builds an access record from its parts.
    pub fn new(type_: &str, name: &str, actions: &[&str]) -> Self {
        Self {
            type_: type_.to_owned(),
            name: name.to_owned(),
            actions: actions.iter().map(|action| (*action).to_owned()).collect(),
        }
    }
}

/// Whether `granted` allows every action of `required`.
///
/// Each required action must be granted by an entry with exactly the same type and name; the actions of
/// several such entries add up, and a granted `*` grants every action. A required `*` is granted only by a
/// granted `*`. The order of actions never matters, and a requirement without actions is always met.
pub fn grants(granted: &[Access], required: &Access) -> bool {
    required.actions.iter().all(|action| {
        granted.iter().any(|entry| {
            entry.type_ == required.type_
                && entry.name == required.name
                && (entry.actions.contains(ALL_ACTIONS) || entry.actions.contains(action))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(granted: &[Access], required: Access, expected: bool) {
        assert_eq!(grants(granted, &required), expected, "granted {granted:?}, required {required:?}");
    }

    #[test]
    fn grants_table() {
        let gun = "example.com/app";
        let pull = Access::new("repository", gun, &["pull"]);
        let push_pull = Access::new("repository", gun, &["push", "pull"]);
        let star = Access::new("repository", gun, &["*"]);
        let other = Access::new("repository", "example.com/other", &["*"]);
        let catalog = Access::new("registry", "catalog", &["*"]);

        check(std::slice::from_ref(&pull), Access::new("repository", gun, &["pull"]), true);
        check(std::slice::from_ref(&pull), Access::new("repository", gun, &["pull", "push"]), false);
        check(std::slice::from_ref(&push_pull), Access::new("repository", gun, &["pull", "push"]), true);
        check(std::slice::from_ref(&push_pull), Access::new("repository", gun, &["push", "pull"]), true);
        check(std::slice::from_ref(&push_pull), Access::new("repository", gun, &["*"]), false);
        check(std::slice::from_ref(&star), Access::new("repository", gun, &["*"]), true);
        check(std::slice::from_ref(&star), Access::new("repository", gun, &["pull", "push"]), true);
        check(std::slice::from_ref(&other), Access::new("repository", gun, &["pull"]), false);
        check(std::slice::from_ref(&star), Access::new("registry", gun, &["pull"]), false);
        check(std::slice::from_ref(&catalog), Access::new("registry", "catalog", &["*"]), true);
        check(&[], Access::new("repository", gun, &["pull"]), false);
        check(&[], Access::new("repository", gun, &[]), true);
        // Actions granted by separate entries for the same resource add up.
        check(
            &[Access::new("repository", gun, &["pull"]), Access::new("repository", gun, &["push"])],
            Access::new("repository", gun, &["push", "pull"]),
            true,
        );
    }

    #[test]
    fn access_claim_round_trips_and_defaults_actions() {
        let parsed: Vec<Access> = serde_json::from_str(
            r#"[{"type":"repository","name":"a/b","actions":["push","pull"]},{"type":"registry","name":"catalog"}]"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![Access::new("repository", "a/b", &["pull", "push"]), Access::new("registry", "catalog", &[])]
        );
        assert_eq!(
            serde_json::to_string(&parsed[0]).unwrap(),
            r#"{"type":"repository","name":"a/b","actions":["pull","push"]}"#
        );
    }
}
