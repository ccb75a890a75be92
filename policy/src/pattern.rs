//! Repository patterns as the MCR `trust-pinning.root-keys` block writes them: an exact GUN
//! (`registry.example.com/team/app`), a prefix ending in `*` (`registry.example.com/team/*`), or `*` alone; and the
//! one rule that picks the most specific of several matching patterns.

use std::fmt;

/// The longest pattern accepted, in bytes (a GUN is at most 255).
pub(crate) const MAX_PATTERN_LEN: usize = 256;

/// A repository pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Parses a pattern: non-empty, at most [`MAX_PATTERN_LEN`] bytes, printable ASCII without spaces, no upper-case
    /// letters in the repository path (Docker names are lowercase, so such a pattern could never match), and `*`
    /// only as the last character.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a pattern cannot be empty".to_owned());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("pattern is {} bytes long; at most {MAX_PATTERN_LEN} are allowed", text.len()));
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(format!("pattern {text:?} may only hold printable ASCII without spaces"));
        }
        if let Some(star) = text.find('*')
            && star + 1 != text.len()
        {
            return Err(format!("pattern {text:?} may only have '*' as its last character"));
        }
        let path = text.split_once('/').map_or("", |(_, path)| path);
        if path.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(format!("pattern {text:?} has upper-case letters in the repository path, which never match"));
        }
        Ok(Self { text: text.to_owned() })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a prefix pattern (ends in `*`, including `*` alone).
    pub fn is_prefix(&self) -> bool {
        self.text.ends_with('*')
    }

    /// Whether `gun` matches: equal for an exact pattern, starts with the part before `*` for a prefix.
    pub fn matches(&self, gun: &str) -> bool {
        match self.text.strip_suffix('*') {
            Some(prefix) => gun.starts_with(prefix),
            None => gun == self.text,
        }
    }

    /// How specific a match is: an exact match beats every prefix; a longer prefix beats a shorter one.
    fn specificity(&self) -> (bool, usize) {
        (!self.is_prefix(), self.text.len())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// The entry whose pattern matches `gun` most specifically (exact, else the longest prefix), if any. Patterns in
/// one table are unique, so there is never a tie.
pub(crate) fn most_specific<'a, T>(
    entries: impl IntoIterator<Item = (&'a Pattern, T)>,
    gun: &str,
) -> Option<(&'a Pattern, T)> {
    entries.into_iter().filter(|(pattern, _)| pattern.matches(gun)).max_by_key(|(pattern, _)| pattern.specificity())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refusals() {
        let cases = [
            ("", "a pattern cannot be empty"),
            ("a b", "pattern \"a b\" may only hold printable ASCII without spaces"),
            ("reg/*/app", "pattern \"reg/*/app\" may only have '*' as its last character"),
            ("**", "pattern \"**\" may only have '*' as its last character"),
            (
                "reg.io/Team/*",
                "pattern \"reg.io/Team/*\" has upper-case letters in the repository path, which never match",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(Pattern::parse(text), Err(message.to_owned()), "{text}");
        }
        assert_eq!(
            Pattern::parse(&"a".repeat(257)),
            Err("pattern is 257 bytes long; at most 256 are allowed".to_owned())
        );
    }

    #[test]
    fn matching_and_specificity() {
        let patterns: Vec<Pattern> = ["*", "reg.io/*", "reg.io/team/*", "reg.io/team/app", "reg.io/team/app*"]
            .iter()
            .map(|text| Pattern::parse(text).unwrap())
            .collect();
        let pick = |gun: &str| {
            most_specific(patterns.iter().map(|pattern| (pattern, ())), gun).map(|(pattern, ())| pattern.as_str())
        };
        assert_eq!(pick("reg.io/team/app"), Some("reg.io/team/app"));
        assert_eq!(pick("reg.io/team/app2"), Some("reg.io/team/app*"));
        assert_eq!(pick("reg.io/team/other"), Some("reg.io/team/*"));
        assert_eq!(pick("reg.io/x"), Some("reg.io/*"));
        assert_eq!(pick("docker.io/library/alpine"), Some("*"));
        let without_star = &patterns[1..];
        assert_eq!(most_specific(without_star.iter().map(|pattern| (pattern, ())), "docker.io/library/alpine"), None);
    }
}
