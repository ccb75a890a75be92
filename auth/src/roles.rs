//! Roles bound to principals by GUN pattern, and the decision of which role a caller holds on a GUN.
//!
//! A binding says "principal P holds role R on every GUN matching pattern X". For one principal and GUN,
//! only the bindings with the most specific matching pattern count (an exact GUN beats any wildcard, a
//! longer prefix beats a shorter one, `*` alone is least specific), so a narrow binding can lower a broad
//! one: `alice admin team/*` with `alice reader team/app` leaves alice a reader on `team/app`. Grants to
//! the principal [`ANONYMOUS`] apply to every caller, signed in or not.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::access::{ALL_ACTIONS, Access};

/// The principal whose bindings apply to every caller, including unauthenticated ones.
pub const ANONYMOUS: &str = "anonymous";

/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 255;

/// What a principal may do on the GUNs of a pattern. Ordered by power: reader < publisher < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// May pull (read metadata).
    Reader,
    /// May pull and push (publish updates, create a repository's online keys).
    Publisher,
    /// May do everything (`*`): also delete and rotate online keys.
    Admin,
}

impl Role {
    /// Every role, from least to most powerful.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Publisher, Role::Admin];

    /// Parses a role name: `reader`, `publisher` or `admin`, exactly.
    pub fn parse(text: &str) -> Result<Self, RoleError> {
        Self::ALL.into_iter().find(|role| role.as_str() == text).ok_or_else(|| RoleError::UnknownRole(text.to_owned()))
    }

    /// The role's name as written in bindings and commands.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Publisher => "publisher",
            Self::Admin => "admin",
        }
    }

    /// The registry-token actions the role grants.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Self::Reader => &["pull"],
            Self::Publisher => &["pull", "push"],
            Self::Admin => &[ALL_ACTIONS],
        }
    }

    /// Whether the role grants `action` (admin grants every action, including `*`).
    fn allows(self, action: &str) -> bool {
        self == Self::Admin || self.actions().contains(&action)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Why a role name or a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The role is not one of the three roles.
    #[error("unknown role {0:?}: use reader, publisher or admin")]
    UnknownRole(String),
    /// The pattern is empty.
    #[error("the pattern is empty: use a GUN, a prefix ending in `*`, or `*` alone")]
    EmptyPattern,
    /// The pattern is longer than [`MAX_PATTERN_LEN`].
    #[error("the pattern is {len} bytes long, more than the {max} accepted")]
    PatternTooLong {
        /// The pattern's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The pattern holds whitespace or a control character.
    #[error("the pattern contains whitespace or a control character")]
    PatternBadCharacter,
    /// The pattern has a `*` that is not its last character.
    #[error("the pattern has a `*` before its end: `*` may only be the last character")]
    MisplacedWildcard,
}

/// A GUN pattern: `*` alone (every GUN), an exact GUN, or a prefix followed by `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Parses a pattern (see [`RoleError`] for what is refused).
    pub fn parse(text: &str) -> Result<Self, RoleError> {
        if text.is_empty() {
            return Err(RoleError::EmptyPattern);
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(RoleError::PatternTooLong { len: text.len(), max: MAX_PATTERN_LEN });
        }
        if text.chars().any(|character| character.is_whitespace() || character.is_control()) {
            return Err(RoleError::PatternBadCharacter);
        }
        if text.find('*').is_some_and(|position| position + 1 != text.len()) {
            return Err(RoleError::MisplacedWildcard);
        }
        Ok(Self { text: text.to_owned() })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern is `*` alone, which matches every GUN.
    pub fn is_everything(&self) -> bool {
        self.text == "*"
    }

    /// The prefix of a wildcard pattern (empty for `*`), or `None` for an exact GUN.
    fn prefix(&self) -> Option<&str> {
        self.text.strip_suffix('*')
    }

    /// Whether the pattern matches `gun`.
    pub fn matches(&self, gun: &str) -> bool {
        match self.prefix() {
            Some(prefix) => gun.starts_with(prefix),
            None => gun == self.text,
        }
    }

    /// How specific the pattern is; greater is more specific. An exact GUN beats every wildcard, and among
    /// wildcards a longer prefix beats a shorter one (`*` alone has the empty prefix).
    fn specificity(&self) -> (bool, usize) {
        match self.prefix() {
            Some(prefix) => (false, prefix.len()),
            None => (true, self.text.len()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl FromStr for Pattern {
    type Err = RoleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// One grant: `principal` holds `role` on every GUN matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The principal's name, or [`ANONYMOUS`].
    pub principal: String,
    /// The role granted.
    pub role: Role,
    /// The GUNs it applies to.
    pub pattern: Pattern,
}

impl Binding {
    /// Builds a binding from its stored text form, refusing an unknown role or a bad pattern.
    pub fn parse(principal: &str, role: &str, pattern: &str) -> Result<Self, RoleError> {
        Ok(Self { principal: principal.to_owned(), role: role.parse()?, pattern: Pattern::parse(pattern)? })
    }
}

/// The role `principal` holds on `gun` through its own bindings only.
///
/// Among the principal's bindings whose pattern matches, only those with the most specific pattern count,
/// and the highest role among them is the answer. `None` when no binding matches.
pub fn role_for(bindings: &[Binding], principal: &str, gun: &str) -> Option<Role> {
    let matching = bindings.iter().filter(|binding| binding.principal == principal && binding.pattern.matches(gun));
    let best = matching.clone().map(|binding| binding.pattern.specificity()).max()?;
    matching.filter(|binding| binding.pattern.specificity() == best).map(|binding| binding.role).max()
}

/// The role a caller holds on `gun`: the higher of its own role and the role of [`ANONYMOUS`], which
/// applies to everyone. `principal` is `None` for an unauthenticated caller.
pub fn effective_role(bindings: &[Binding], principal: Option<&str>, gun: &str) -> Option<Role> {
    let own = principal.and_then(|name| role_for(bindings, name, gun));
    let anonymous = role_for(bindings, ANONYMOUS, gun);
    own.max(anonymous)
}

/// The part of `requested` that `role` allows: reader grants `pull`, publisher `pull` and `push`, admin
/// every action including `*` (and a requested `*` needs admin). `None` when nothing is granted.
///
/// The role must be the caller's role on the resource `requested` names; this function does not look at
/// the resource.
pub fn grant(role: Option<Role>, requested: &Access) -> Option<Access> {
    let role = role?;
    let actions: BTreeSet<String> = requested.actions.iter().filter(|action| role.allows(action)).cloned().collect();
    if actions.is_empty() {
        return None;
    }
    Some(Access { type_: requested.type_.clone(), name: requested.name.clone(), actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_print_order_and_actions() {
        for (text, role, actions) in [
            ("reader", Role::Reader, &["pull"][..]),
            ("publisher", Role::Publisher, &["pull", "push"][..]),
            ("admin", Role::Admin, &["*"][..]),
        ] {
            assert_eq!(text.parse::<Role>(), Ok(role));
            assert_eq!(Role::parse(text), Ok(role));
            assert_eq!(role.as_str(), text);
            assert_eq!(role.to_string(), text);
            assert_eq!(role.actions(), actions);
        }
        assert!(Role::Reader < Role::Publisher && Role::Publisher < Role::Admin);
        for bad in ["", "Reader", "owner", " admin"] {
            assert_eq!(bad.parse::<Role>(), Err(RoleError::UnknownRole(bad.to_owned())));
        }
        assert_eq!(
            "owner".parse::<Role>().unwrap_err().to_string(),
            "unknown role \"owner\": use reader, publisher or admin"
        );
    }

    #[test]
    fn pattern_parsing() {
        let long_ok = "a".repeat(255);
        let long_bad = "a".repeat(256);
        let cases: Vec<(&str, Result<&str, RoleError>)> = vec![
            ("*", Ok("*")),
            ("a/b", Ok("a/b")),
            ("registry.example.com/team-a/*", Ok("registry.example.com/team-a/*")),
            ("team*", Ok("team*")),
            ("localhost:5000/app", Ok("localhost:5000/app")),
            (&long_ok, Ok(&long_ok)),
            ("", Err(RoleError::EmptyPattern)),
            (&long_bad, Err(RoleError::PatternTooLong { len: 256, max: 255 })),
            ("a b", Err(RoleError::PatternBadCharacter)),
            ("a/\tb", Err(RoleError::PatternBadCharacter)),
            ("a/\u{7f}", Err(RoleError::PatternBadCharacter)),
            ("a/b\n", Err(RoleError::PatternBadCharacter)),
            ("*/app", Err(RoleError::MisplacedWildcard)),
            ("team/*/app", Err(RoleError::MisplacedWildcard)),
            ("**", Err(RoleError::MisplacedWildcard)),
        ];
        for (text, expected) in cases {
            let parsed = Pattern::parse(text);
            assert_eq!(parsed.as_ref().map(Pattern::as_str).map_err(Clone::clone), expected, "{text:?}");
        }
        assert_eq!(
            Pattern::parse("*/app").unwrap_err().to_string(),
            "the pattern has a `*` before its end: `*` may only be the last character"
        );
    }

    #[test]
    fn only_a_lone_star_is_everything() {
        for (text, expected) in [("*", true), ("a*", false), ("a/b", false)] {
            assert_eq!(Pattern::parse(text).unwrap().is_everything(), expected, "{text}");
        }
    }

    #[test]
    fn pattern_matching() {
        for (pattern, gun, expected) in [
            ("*", "anything/at/all", true),
            ("a/b", "a/b", true),
            ("a/b", "a/bc", false),
            ("a/b", "a", false),
            ("registry.example.com/team-a/*", "registry.example.com/team-a/app", true),
            ("registry.example.com/team-a/*", "registry.example.com/team-a/x/y", true),
            ("registry.example.com/team-a/*", "registry.example.com/team-a", false),
            ("registry.example.com/team-a/*", "registry.example.com/team-ab/app", false),
            ("team*", "team-b/app", true),
            ("team*", "tea", false),
        ] {
            assert_eq!(Pattern::parse(pattern).unwrap().matches(gun), expected, "{pattern} on {gun}");
        }
    }

    fn bindings(rows: &[(&str, &str, &str)]) -> Vec<Binding> {
        rows.iter().map(|(principal, role, pattern)| Binding::parse(principal, role, pattern).unwrap()).collect()
    }

    #[test]
    fn binding_parse_errors() {
        assert_eq!(Binding::parse("alice", "root", "*"), Err(RoleError::UnknownRole("root".to_owned())));
        assert_eq!(Binding::parse("alice", "admin", ""), Err(RoleError::EmptyPattern));
        assert_eq!(
            Binding::parse("alice", "admin", "a/*"),
            Ok(Binding { principal: "alice".to_owned(), role: Role::Admin, pattern: Pattern::parse("a/*").unwrap() })
        );
    }

    #[test]
    fn role_for_takes_the_most_specific_pattern() {
        let table = bindings(&[
            ("alice", "admin", "team/*"),
            ("alice", "reader", "team/app"),
            ("alice", "publisher", "*"),
            ("alice", "reader", "team/lib/*"),
            ("alice", "publisher", "team/lib/*"),
            ("alice", "reader", "team/l*"),
            ("bob", "admin", "*"),
            ("carol", "reader", "x/*"),
        ]);
        for (principal, gun, expected) in [
            // The exact pattern beats the wildcard, even though the wildcard grants more.
            ("alice", "team/app", Some(Role::Reader)),
            ("alice", "team/other", Some(Role::Admin)),
            ("alice", "elsewhere/app", Some(Role::Publisher)),
            // Two bindings with the same pattern: the higher role.
            ("alice", "team/lib/core", Some(Role::Publisher)),
            // `team/l*` (prefix 6) beats `team/*` (prefix 5).
            ("alice", "team/lx", Some(Role::Reader)),
            ("bob", "team/app", Some(Role::Admin)),
            ("carol", "y/app", None),
            ("dave", "team/app", None),
            // Names are compared exactly.
            ("Alice", "team/app", None),
        ] {
            assert_eq!(role_for(&table, principal, gun), expected, "{principal} on {gun}");
        }
    }

    #[test]
    fn effective_role_adds_anonymous_grants() {
        let table = bindings(&[
            ("anonymous", "reader", "pub/*"),
            ("alice", "publisher", "pub/app"),
            ("bob", "reader", "priv/*"),
        ]);
        for (principal, gun, expected) in [
            (None, "pub/app", Some(Role::Reader)),
            (None, "priv/app", None),
            (Some("alice"), "pub/app", Some(Role::Publisher)),
            (Some("alice"), "pub/other", Some(Role::Reader)),
            (Some("bob"), "priv/app", Some(Role::Reader)),
            (Some("bob"), "pub/x", Some(Role::Reader)),
            (Some("carol"), "priv/app", None),
        ] {
            assert_eq!(effective_role(&table, principal, gun), expected, "{principal:?} on {gun}");
        }
    }

    #[test]
    fn grant_narrows_the_request() {
        let gun = "a/b";
        let request = |actions: &[&str]| Access::new("repository", gun, actions);
        for (role, requested, expected) in [
            (None, request(&["pull"]), None),
            (Some(Role::Reader), request(&["pull"]), Some(request(&["pull"]))),
            (Some(Role::Reader), request(&["pull", "push"]), Some(request(&["pull"]))),
            (Some(Role::Reader), request(&["push"]), None),
            (Some(Role::Reader), request(&["*"]), None),
            (Some(Role::Publisher), request(&["push", "pull"]), Some(request(&["pull", "push"]))),
            (Some(Role::Publisher), request(&["*"]), None),
            (Some(Role::Publisher), request(&["pull", "delete"]), Some(request(&["pull"]))),
            (Some(Role::Admin), request(&["*"]), Some(request(&["*"]))),
            (Some(Role::Admin), request(&["pull", "push", "delete"]), Some(request(&["delete", "pull", "push"]))),
            (Some(Role::Admin), request(&[]), None),
        ] {
            assert_eq!(grant(role, &requested), expected, "{role:?} asking {requested:?}");
        }
        let catalog = Access::new("registry", "catalog", &["*"]);
        assert_eq!(grant(Some(Role::Admin), &catalog), Some(catalog.clone()));
    }
}
