//! The `WWW-Authenticate` challenge and the JSON body of a request refused for missing or insufficient
//! credentials, in the exact shape Docker distribution's token access controller writes them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::access::Access;

/// Why a request that carried a token is refused; a request without a token has no error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// The token is malformed or fails verification (`error="invalid_token"`).
    InvalidToken,
    /// The token is valid but does not grant the required access (`error="insufficient_scope"`).
    InsufficientScope,
}

impl ChallengeError {
    /// The value of the challenge's `error` parameter.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

/// The value of the `WWW-Authenticate` header for a refused request.
///
/// It reads `Bearer realm="…",service="…"`, then `,scope="…"` when anything is required, then
/// `,error="…"` when a token was presented. The scope lists one `type:name:actions` entry per resource,
/// separated by spaces, with the required actions of that resource merged, sorted and comma-separated
/// (`repository:example.com/app:pull,push`). Values are quoted as Go's `%q` quotes them.
pub fn challenge(realm: &str, service: &str, required: &[Access], error: Option<ChallengeError>) -> String {
    let mut header = format!("Bearer realm={},service={}", quote(realm), quote(service));
    let scope = scope_param(required);
    if !scope.is_empty() {
        let _ = write!(header, ",scope={}", quote(&scope));
    }
    if let Some(error) = error {
        let _ = write!(header, ",error={}", quote(error.code()));
    }
    header
}

/// The JSON body of a 401 answer: distribution's `UNAUTHORIZED` error with one detail entry per required
/// action. Each entry is the Go `auth.Access` notary-server serialises (distribution v2.7.1, the version
/// notary builds with): `{"Type","Class","Name","Action"}`, where `Class` is always empty.
pub fn unauthorized_body(required: &[Access]) -> Value {
    let detail: Vec<Value> = required
        .iter()
        .flat_map(|access| {
            access
                .actions
                .iter()
                .map(|action| json!({"Type": access.type_, "Class": "", "Name": access.name, "Action": action}))
        })
        .collect();
    json!({
        "errors": [{
            "code": "UNAUTHORIZED",
            "message": "authentication required",
            "detail": detail,
        }]
    })
}

/// The scope parameter: resources in first-seen order, actions of one resource merged and sorted.
fn scope_param(required: &[Access]) -> String {
    let mut merged: Vec<(&str, &str, BTreeSet<&str>)> = Vec::new();
    for access in required {
        let actions = access.actions.iter().map(String::as_str);
        match merged.iter_mut().find(|(type_, name, _)| *type_ == access.type_ && *name == access.name) {
            Some((_, _, existing)) => existing.extend(actions),
            None => merged.push((&access.type_, &access.name, actions.collect())),
        }
    }
    merged
        .iter()
        .filter(|(_, _, actions)| !actions.is_empty())
        .map(|(type_, name, actions)| {
            format!("{type_}:{name}:{}", actions.iter().copied().collect::<Vec<_>>().join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a value as Go's `%q` does: backslash and double quote escaped, control characters written as
/// Go's escapes (`\n`, `\x01`, `\u0085`, …), so a header can never be split.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            control if control.is_ascii_control() => {
                let _ = write!(quoted, "\\x{:02x}", u32::from(control));
            }
            control if control.is_control() => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(control));
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "https://auth.example.com/token";
    const SERVICE: &str = "notary.example.com";

    #[test]
    fn challenge_without_token() {
        let required = [Access::new("repository", "example.com/app", &["push", "pull"])];
        assert_eq!(
            challenge(REALM, SERVICE, &required, None),
            r#"Bearer realm="https://auth.example.com/token",service="notary.example.com",scope="repository:example.com/app:pull,push""#
        );
    }

    #[test]
    fn challenge_with_errors() {
        let required = [Access::new("repository", "example.com/app", &["*"])];
        assert_eq!(
            challenge(REALM, SERVICE, &required, Some(ChallengeError::InvalidToken)),
            r#"Bearer realm="https://auth.example.com/token",service="notary.example.com",scope="repository:example.com/app:*",error="invalid_token""#
        );
        assert_eq!(
            challenge(REALM, SERVICE, &required, Some(ChallengeError::InsufficientScope)),
            r#"Bearer realm="https://auth.example.com/token",service="notary.example.com",scope="repository:example.com/app:*",error="insufficient_scope""#
        );
    }

    #[test]
    fn challenge_merges_resources_and_separates_scopes_with_spaces() {
        let required = [
            Access::new("registry", "catalog", &["*"]),
            Access::new("repository", "a/b", &["push"]),
            Access::new("repository", "a/b", &["pull"]),
        ];
        assert_eq!(
            challenge(REALM, SERVICE, &required, None),
            r#"Bearer realm="https://auth.example.com/token",service="notary.example.com",scope="registry:catalog:* repository:a/b:pull,push""#
        );
    }

    #[test]
    fn challenge_without_requirements_has_no_scope_and_quotes_values() {
        assert_eq!(
            challenge("a\"b\\c\r\nd\u{7f}\u{e9}", "s\u{1}\u{85}", &[], None),
            "Bearer realm=\"a\\\"b\\\\c\\r\\nd\\x7f\u{e9}\",service=\"s\\x01\\u0085\""
        );
    }

    #[test]
    fn unauthorized_body_lists_each_action() {
        let required = [Access::new("repository", "example.com/app", &["push", "pull"])];
        assert_eq!(
            unauthorized_body(&required),
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": [
                {"Type": "repository", "Class": "", "Name": "example.com/app", "Action": "pull"},
                {"Type": "repository", "Class": "", "Name": "example.com/app", "Action": "push"},
            ]}]})
        );
        assert_eq!(
            unauthorized_body(&[]),
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": []}]})
        );
    }
}
