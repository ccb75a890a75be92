//! Names that arrive from clients, parsed into types that cannot hold bad values:
//! GUNs, role names and target names.

use std::fmt;

/// Longest accepted GUN in bytes (the storage column of notary-server is 255 characters).
pub const MAX_GUN_BYTES: usize = 255;
/// Longest accepted role name in bytes (Notary requires fewer than 256).
pub const MAX_ROLE_BYTES: usize = 255;
/// Longest accepted target name in bytes.
pub const MAX_TARGET_NAME_BYTES: usize = 4096;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The GUN is not acceptable.
    #[error("invalid GUN: {0}")]
    Gun(&'static str),
    /// The role name is not acceptable.
    #[error("invalid role name")]
    Role,
    /// The target name is not acceptable.
    #[error("invalid target name: {0}")]
    Target(&'static str),
}

/// The Unicode format characters (general category Cf, Unicode 16.0): invisible characters
/// that change how text displays or joins, such as the bidirectional overrides U+202A..U+202E
/// and isolates U+2066..U+2069 and the zero-width characters U+200B..U+200F, which can make a
/// name read as another.
const FORMAT_CHARACTERS: [(char, char); 21] = [
    ('\u{AD}', '\u{AD}'),
    ('\u{600}', '\u{605}'),
    ('\u{61C}', '\u{61C}'),
    ('\u{6DD}', '\u{6DD}'),
    ('\u{70F}', '\u{70F}'),
    ('\u{890}', '\u{891}'),
    ('\u{8E2}', '\u{8E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `character` is a Unicode format character (Cf).
fn is_format_character(character: char) -> bool {
    FORMAT_CHARACTERS.iter().any(|(first, last)| (*first..=*last).contains(&character))
}

/// `text` as one line of visible text for a log: control and format characters (line breaks,
/// terminal escapes, bidirectional overrides) are written as escapes (`\n`, `\u{1b}`), a
/// backslash as `\\`, and at most `max_chars` characters are kept (then `…`). For text a
/// client chose, such as a user name, so that it cannot forge or hide log lines.
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    for (index, character) in text.chars().enumerate() {
        if index == max_chars {
            out.push('…');
            break;
        }
        if character == '\\' || character.is_control() || (!character.is_ascii() && is_format_character(character)) {
            out.extend(character.escape_debug());
        } else {
            out.push(character);
        }
    }
    out
}

/// Checks the path-like rules shared by GUNs and target names; returns the reason on failure.
fn path_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        return Some("it is empty");
    }
    if text.starts_with('/') {
        return Some("it starts with '/'");
    }
    if text.chars().any(|character| character.is_control() || (!character.is_ascii() && is_format_character(character)))
    {
        return Some("it contains control or format characters");
    }
    if text.split('/').any(|segment| segment == "..") {
        return Some("it contains a '..' segment");
    }
    None
}

/// A Globally Unique Name: the repository a set of TUF metadata belongs to.
///
/// Accepted: 1 to 255 bytes of UTF-8 without control (Cc) or format (Cf) characters, whitespace
/// or `*`; no leading or
/// trailing `/`, no empty, `.`, `..` or `_trust` segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gun(String);

impl Gun {
    /// Parses a GUN.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if let Some(problem) = path_problem(text) {
            return Err(NameError::Gun(problem));
        }
        if text.len() > MAX_GUN_BYTES {
            return Err(NameError::Gun("it is longer than 255 bytes"));
        }
        if text.chars().any(char::is_whitespace) || text.contains('*') {
            return Err(NameError::Gun("it contains whitespace or '*'"));
        }
        if text.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "_trust") {
            return Err(NameError::Gun("it contains an empty, '.' or '_trust' segment"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The GUN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Gun {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// One of the four top-level roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaseRole {
    /// `root`
    Root,
    /// `targets`
    Targets,
    /// `snapshot`
    Snapshot,
    /// `timestamp`
    Timestamp,
}

impl BaseRole {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Targets => "targets",
            Self::Snapshot => "snapshot",
            Self::Timestamp => "timestamp",
        }
    }
}

/// A valid role name: a base role or a delegation `targets/...` (spec §2.3).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Parses a role name under Notary's rules: a base role, or `targets/` followed by
    /// path-clean segments of `[-a-z0-9_]`, shorter than 256 bytes.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        match text {
            "root" | "targets" | "snapshot" | "timestamp" => return Ok(Self(text.to_owned())),
            _ => {}
        }
        let Some(rest) = text.strip_prefix("targets/") else {
            return Err(NameError::Role);
        };
        if text.len() > MAX_ROLE_BYTES || rest.is_empty() {
            return Err(NameError::Role);
        }
        let charset_ok = rest
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'/'));
        if !charset_ok || rest.split('/').any(str::is_empty) {
            return Err(NameError::Role);
        }
        Ok(Self(text.to_owned()))
    }

    /// The base role named `role`.
    pub fn base(role: BaseRole) -> Self {
        Self(role.as_str().to_owned())
    }

    /// The role name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The base role this name is, if it is one.
    pub fn as_base(&self) -> Option<BaseRole> {
        match self.0.as_str() {
            "root" => Some(BaseRole::Root),
            "targets" => Some(BaseRole::Targets),
            "snapshot" => Some(BaseRole::Snapshot),
            "timestamp" => Some(BaseRole::Timestamp),
            _ => None,
        }
    }

    /// Whether this is `targets` or a delegation below it.
    pub fn is_targets_type(&self) -> bool {
        self.0 == "targets" || self.is_delegation()
    }

    /// Whether this is a delegation (`targets/...`).
    pub fn is_delegation(&self) -> bool {
        self.0.starts_with("targets/")
    }

    /// The number of `/`-separated segments: 1 for `targets`, 2 for `targets/releases`.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// The parent of a delegation (`targets/a/b` → `targets/a`); `None` for base roles.
    pub fn parent(&self) -> Option<RoleName> {
        if !self.is_delegation() {
            return None;
        }
        self.0.rsplit_once('/').map(|(parent, _)| Self(parent.to_owned()))
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Checks a target name: no `..` segments, no leading `/`, no control (Cc) or format (Cf)
/// characters, bounded length.
/// (Invalid UTF-8 cannot reach here: JSON parsing refuses it.)
pub fn check_target_name(name: &str) -> Result<(), NameError> {
    if let Some(problem) = path_problem(name) {
        return Err(NameError::Target(problem));
    }
    if name.len() > MAX_TARGET_NAME_BYTES {
        return Err(NameError::Target("it is longer than 4096 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_cannot_break_or_hide_a_log_line() {
        assert_eq!(printable("alice", 64), "alice");
        assert_eq!(printable("élise", 64), "élise");
        assert_eq!(printable("eve\r\nINFO issued", 64), "eve\\r\\nINFO issued");
        assert_eq!(printable("eve\u{1b}[2J", 64), "eve\\u{1b}[2J");
        assert_eq!(printable("a\u{202e}b", 64), "a\\u{202e}b");
        assert_eq!(printable("a\\nb", 64), "a\\\\nb");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("", 3), "");
    }

    #[test]
    fn guns() {
        for good in ["example.com/app", "docker.io/library/alpine", "registry.example.com:5000/team/app", "a", "é/ü"]
        {
            assert_eq!(Gun::parse(good).as_ref().map(Gun::as_str), Ok(good), "{good}");
        }
        let empty_segment = "it contains an empty, '.' or '_trust' segment";
        for (bad, problem) in [
            ("", "it is empty"),
            ("/abs", "it starts with '/'"),
            ("trailing/", empty_segment),
            ("a//b", empty_segment),
            ("a/../b", "it contains a '..' segment"),
            ("..", "it contains a '..' segment"),
            ("a/./b", empty_segment),
            ("sp ace", "it contains whitespace or '*'"),
            ("star*", "it contains whitespace or '*'"),
            ("ctl\u{1}x", "it contains control or format characters"),
            ("x/_trust/y", empty_segment),
            ("tab\t", "it contains control or format characters"),
            ("del\u{7f}", "it contains control or format characters"),
        ] {
            assert_eq!(Gun::parse(bad), Err(NameError::Gun(problem)), "{bad:?}");
        }
        // Format characters (Cf), at both ends of every range, and the neighbours that are not.
        for (first, last) in FORMAT_CHARACTERS {
            for character in [first, last] {
                let gun = format!("example.com/a{character}pp");
                assert_eq!(
                    Gun::parse(&gun),
                    Err(NameError::Gun("it contains control or format characters")),
                    "U+{:04X}",
                    u32::from(character)
                );
            }
        }
        for neighbour in ['\u{AC}', '\u{AE}', '\u{2065}', '\u{2070}', '\u{FEFE}', '\u{E0080}', '\u{200A}'] {
            let gun = format!("a{neighbour}b");
            let expected = if neighbour.is_whitespace() {
                Err(NameError::Gun("it contains whitespace or '*'"))
            } else {
                Ok(gun.clone())
            };
            assert_eq!(Gun::parse(&gun).map(|gun| gun.as_str().to_owned()), expected, "U+{:04X}", u32::from(neighbour));
        }
        assert_eq!(Gun::parse(&"a".repeat(256)), Err(NameError::Gun("it is longer than 255 bytes")));
        assert_eq!(Gun::parse(&"a".repeat(255)).map(|gun| gun.as_str().len()), Ok(255));
    }

    #[test]
    fn roles() {
        for good in ["root", "targets", "snapshot", "timestamp", "targets/releases", "targets/a/b-c_d/9"] {
            assert_eq!(RoleName::parse(good).as_ref().map(RoleName::as_str), Ok(good), "{good}");
        }
        for bad in [
            "",
            "Root",
            "targets/",
            "targets/Rel",
            "targets//a",
            "targets/a/",
            "targets/./a",
            "targets/../x",
            "foo",
            "targets/a b",
            "timestamp/x",
            "targetsx",
        ] {
            assert_eq!(RoleName::parse(bad), Err(NameError::Role), "{bad:?}");
        }
        let long = format!("targets/{}", "a".repeat(248));
        assert_eq!(RoleName::parse(&long), Err(NameError::Role));
        let role = RoleName::parse("targets/a/b").unwrap();
        assert_eq!(role.parent().unwrap().as_str(), "targets/a");
        assert_eq!(role.depth(), 3);
        assert_eq!(RoleName::parse("targets/a").unwrap().parent().unwrap().as_str(), "targets");
        assert_eq!(RoleName::parse("targets").unwrap().parent(), None);
    }

    #[test]
    fn target_names() {
        for good in ["v1", "dir/file.txt", "a..b", "latest", "..hidden"] {
            assert_eq!(check_target_name(good), Ok(()), "{good}");
        }
        let dot_dot = "it contains a '..' segment";
        for (bad, problem) in [
            ("", "it is empty"),
            ("/etc/passwd", "it starts with '/'"),
            ("../x", dot_dot),
            ("a/../../b", dot_dot),
            ("a/..", dot_dot),
            ("nl\nx", "it contains control or format characters"),
            ("nul\u{0}", "it contains control or format characters"),
            ("v1\u{202E}txt.exe", "it contains control or format characters"),
            ("zero\u{200B}width", "it contains control or format characters"),
            ("c1\u{85}", "it contains control or format characters"),
        ] {
            assert_eq!(check_target_name(bad), Err(NameError::Target(problem)), "{bad:?}");
        }
        assert_eq!(check_target_name(&"a".repeat(4097)), Err(NameError::Target("it is longer than 4096 bytes")));
        assert_eq!(check_target_name(&"a".repeat(4096)), Ok(()));
    }
}
