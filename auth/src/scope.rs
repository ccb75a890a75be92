//! The `scope` parameter of a Docker token request (`repository:team/app:pull,push`), parsed into access
//! records.
//!
//! An entry is `type:name:actions`: the type runs to the first `:`, the actions follow the last `:` as a
//! comma-separated list, and the name is everything between, so a name with a registry port
//! (`repository:localhost:5000/app:pull`, as the notary CLI asks) keeps its `:`. A type may carry a class,
//! `repository(plugin)`, which is dropped as distribution drops it when granting. One parameter may hold
//! several entries separated by spaces, and a request may repeat the parameter ([`parse_scopes`]); entries
//! for the same resource are merged. The request is bounded (text, entries, actions per entry) so a token
//! request cannot make the server build large grants, and anything odd is refused rather than guessed at.

use std::collections::BTreeSet;

use crate::access::{ALL_ACTIONS, Access};

/// The most bytes of scope text accepted in one request.
pub const MAX_SCOPE_TEXT: usize = 4096;

/// The most scope entries accepted in one request.
pub const MAX_SCOPES: usize = 32;

/// The most actions accepted in one scope entry.
pub const MAX_ACTIONS: usize = 16;

/// The longest resource name accepted, in bytes (the longest GUN).
pub const MAX_NAME_LEN: usize = 255;

/// Why a scope is refused. Entries are quoted as Rust string literals, so control characters show escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The scope holds no entry.
    #[error("the scope is empty")]
    Empty,
    /// The scope text is longer than [`MAX_SCOPE_TEXT`].
    #[error("the scope is {len} bytes long, more than the {max} accepted")]
    TooLong {
        /// The length of the scope text in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request holds more than [`MAX_SCOPES`] entries.
    #[error("the request names more than {max} scopes")]
    TooManyScopes {
        /// The limit.
        max: usize,
    },
    /// An entry is not `type:name:actions`.
    #[error("scope {0:?} is not of the form type:name:actions")]
    NotTypeNameActions(String),
    /// An entry's type is not lowercase letters and digits, with an optional `(class)` of the same.
    #[error("scope {0:?} has a bad resource type: use lowercase letters and digits, optionally with a (class)")]
    BadType(String),
    /// An entry's name is empty, too long, or holds a control character.
    #[error("scope {scope:?} has a bad resource name: {reason}")]
    BadName {
        /// The entry.
        scope: String,
        /// What is wrong with the name.
        reason: &'static str,
    },
    /// An action is empty or not `*` or lowercase letters, digits, `-` and `_`.
    #[error("scope {0:?} has an empty or malformed action")]
    BadAction(String),
    /// An entry lists more than [`MAX_ACTIONS`] actions.
    #[error("scope {scope:?} lists more than {max} actions")]
    TooManyActions {
        /// The entry.
        scope: String,
        /// The limit.
        max: usize,
    },
}

/// Parses one `scope` parameter, which may hold several space-separated entries.
pub fn parse_scope(text: &str) -> Result<Vec<Access>, ScopeError> {
    parse_scopes([text])
}

/// Parses every `scope` parameter of one request together, applying the request's bounds to them all.
/// Entries for the same type and name are merged into one record, in the order first seen.
pub fn parse_scopes<'a>(parameters: impl IntoIterator<Item = &'a str>) -> Result<Vec<Access>, ScopeError> {
    let mut total_len = 0_usize;
    let mut entries = 0_usize;
    let mut merged: Vec<Access> = Vec::new();
    for parameter in parameters {
        total_len = total_len.saturating_add(parameter.len());
        if total_len > MAX_SCOPE_TEXT {
            return Err(ScopeError::TooLong { len: total_len, max: MAX_SCOPE_TEXT });
        }
        for entry in parameter.split(' ').filter(|entry| !entry.is_empty()) {
            entries += 1;
            if entries > MAX_SCOPES {
                return Err(ScopeError::TooManyScopes { max: MAX_SCOPES });
            }
            let access = parse_entry(entry)?;
            match merged.iter_mut().find(|known| known.type_ == access.type_ && known.name == access.name) {
                Some(known) => known.actions.extend(access.actions),
                None => merged.push(access),
            }
        }
    }
    if merged.is_empty() {
        return Err(ScopeError::Empty);
    }
    Ok(merged)
}

/// Parses one `type:name:actions` entry.
fn parse_entry(entry: &str) -> Result<Access, ScopeError> {
    let owned = || entry.to_owned();
    let Some((type_text, rest)) = entry.split_once(':') else {
        return Err(ScopeError::NotTypeNameActions(owned()));
    };
    let Some((name, action_list)) = rest.rsplit_once(':') else {
        return Err(ScopeError::NotTypeNameActions(owned()));
    };
    let type_ = resource_type(type_text).ok_or_else(|| ScopeError::BadType(owned()))?;
    let bad_name = |reason| ScopeError::BadName { scope: owned(), reason };
    if name.is_empty() {
        return Err(bad_name("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad_name("it is longer than 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad_name("it contains a control character"));
    }
    let mut actions = BTreeSet::new();
    for (count, action) in action_list.split(',').enumerate() {
        if count >= MAX_ACTIONS {
            return Err(ScopeError::TooManyActions { scope: owned(), max: MAX_ACTIONS });
        }
        if !valid_action(action) {
            return Err(ScopeError::BadAction(owned()));
        }
        actions.insert(action.to_owned());
    }
    Ok(Access { type_: type_.to_owned(), name: name.to_owned(), actions })
}

/// The type of a `type` or `type(class)` word, if it is lowercase letters and digits (as distribution's
/// `^([a-z0-9]+)(\([a-z0-9]+\))?$`).
fn resource_type(text: &str) -> Option<&str> {
    let word =
        |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    let type_ = match text.split_once('(') {
        Some((type_, class)) => class.strip_suffix(')').filter(|class| word(class)).map(|_| type_)?,
        None => text,
    };
    word(type_).then_some(type_)
}

/// Whether an action is `*` or lowercase letters, digits, `-` and `_`.
fn valid_action(action: &str) -> bool {
    action == ALL_ACTIONS
        || (!action.is_empty()
            && action
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, actions: &[&str]) -> Access {
        Access::new("repository", name, actions)
    }

    #[test]
    fn parse_scope_table() {
        let owned = |text: &str| text.to_owned();
        let cases: Vec<(&str, Result<Vec<Access>, ScopeError>)> = vec![
            ("repository:team/app:pull", Ok(vec![repo("team/app", &["pull"])])),
            ("repository:team/app:push,pull", Ok(vec![repo("team/app", &["pull", "push"])])),
            ("repository:team/app:*", Ok(vec![repo("team/app", &["*"])])),
            ("repository:localhost:5000/app:pull,push", Ok(vec![repo("localhost:5000/app", &["pull", "push"])])),
            ("repository(plugin):team/app:pull", Ok(vec![repo("team/app", &["pull"])])),
            ("registry:catalog:*", Ok(vec![Access::new("registry", "catalog", &["*"])])),
            ("repository:a/b:pull repository:c/d:push", Ok(vec![repo("a/b", &["pull"]), repo("c/d", &["push"])])),
            ("repository:a/b:pull  repository:a/b:push ", Ok(vec![repo("a/b", &["pull", "push"])])),
            ("repository:a/b:pull,pull", Ok(vec![repo("a/b", &["pull"])])),
            ("", Err(ScopeError::Empty)),
            ("   ", Err(ScopeError::Empty)),
            ("repository", Err(ScopeError::NotTypeNameActions(owned("repository")))),
            ("repository:a/b", Err(ScopeError::NotTypeNameActions(owned("repository:a/b")))),
            ("repository::pull", Err(ScopeError::BadName { scope: owned("repository::pull"), reason: "it is empty" })),
            ("Repository:a/b:pull", Err(ScopeError::BadType(owned("Repository:a/b:pull")))),
            (":a/b:pull", Err(ScopeError::BadType(owned(":a/b:pull")))),
            ("repository():a/b:pull", Err(ScopeError::BadType(owned("repository():a/b:pull")))),
            ("repository(x:a/b:pull", Err(ScopeError::BadType(owned("repository(x:a/b:pull")))),
            ("(x):a/b:pull", Err(ScopeError::BadType(owned("(x):a/b:pull")))),
            ("repository:a/b:", Err(ScopeError::BadAction(owned("repository:a/b:")))),
            ("repository:a/b:pull,", Err(ScopeError::BadAction(owned("repository:a/b:pull,")))),
            ("repository:a/b:Pull", Err(ScopeError::BadAction(owned("repository:a/b:Pull")))),
            ("repository:a/b:pu*ll", Err(ScopeError::BadAction(owned("repository:a/b:pu*ll")))),
            (
                "repository:a\u{1}b:pull",
                Err(ScopeError::BadName {
                    scope: owned("repository:a\u{1}b:pull"),
                    reason: "it contains a control character",
                }),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_scope(text), expected, "{text:?}");
        }
    }

    #[test]
    fn bounds() {
        let long_name = format!("repository:{}:pull", "a".repeat(256));
        assert_eq!(
            parse_scope(&long_name),
            Err(ScopeError::BadName { scope: long_name.clone(), reason: "it is longer than 255 bytes" })
        );
        let name_255 = "a".repeat(255);
        assert_eq!(parse_scope(&format!("repository:{name_255}:pull")), Ok(vec![repo(&name_255, &["pull"])]));

        let sixteen: Vec<String> = (0..16).map(|index| format!("a{index}")).collect();
        let entry = format!("repository:x:{}", sixteen.join(","));
        assert_eq!(parse_scope(&entry).map(|parsed| parsed[0].actions.len()), Ok(16));
        let entry = format!("{entry},a16");
        assert_eq!(parse_scope(&entry), Err(ScopeError::TooManyActions { scope: entry.clone(), max: 16 }));

        let entries: Vec<String> = (0..32).map(|index| format!("repository:r{index}:pull")).collect();
        assert_eq!(parse_scope(&entries.join(" ")).map(|parsed| parsed.len()), Ok(32));
        // The bound applies across the parameters of one request.
        let (first, second) = entries.split_at(20);
        let mut second = second.to_vec();
        second.push("repository:r32:pull".to_owned());
        assert_eq!(
            parse_scopes([first.join(" ").as_str(), second.join(" ").as_str()]),
            Err(ScopeError::TooManyScopes { max: 32 })
        );

        let text = format!("repository:{}:pull", "a".repeat(4096 - 16));
        assert_eq!(text.len(), 4096);
        // Exactly at the text limit the name bound still applies.
        assert_eq!(
            parse_scope(&text),
            Err(ScopeError::BadName { scope: text.clone(), reason: "it is longer than 255 bytes" })
        );
        let longer = format!("{text} ");
        assert_eq!(parse_scope(&longer), Err(ScopeError::TooLong { len: 4097, max: 4096 }));
        assert_eq!(
            parse_scopes(["repository:a:pull", &" ".repeat(4080)]),
            Err(ScopeError::TooLong { len: 4097, max: 4096 })
        );
    }

    #[test]
    fn parameters_merge_and_keep_first_seen_order() {
        assert_eq!(
            parse_scopes(["repository:b:push", "repository:a:pull repository:b:pull"]),
            Ok(vec![repo("b", &["pull", "push"]), repo("a", &["pull"])])
        );
        assert_eq!(parse_scopes(["", " "]), Err(ScopeError::Empty));
        assert_eq!(parse_scopes(std::iter::empty()), Err(ScopeError::Empty));
    }

    #[test]
    fn messages() {
        assert_eq!(
            parse_scope("repository:a/b").unwrap_err().to_string(),
            "scope \"repository:a/b\" is not of the form type:name:actions"
        );
        assert_eq!(
            parse_scope("repository::pull").unwrap_err().to_string(),
            "scope \"repository::pull\" has a bad resource name: it is empty"
        );
    }
}
