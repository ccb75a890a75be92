//! Image references as users type them (`app`, `registry:5000/team/app:v2`, `…@sha256:…`), parsed and normalised
//! the way Docker does (distribution's `reference` package: `ParseNormalizedNamed` and `TagNameOnly`).
//!
//! Normalisation: a reference without a registry is on `docker.io`; `index.docker.io` is `docker.io`; a single path
//! component on `docker.io` is under `library/`; a reference with neither tag nor digest gets the tag `latest`.
//! A leading `docker://` (the transport prefix Podman, Apptainer and Singularity callers pass) is accepted.

use std::fmt;

/// The longest repository name (registry and path) Docker accepts, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// The longest tag Docker accepts, in bytes.
pub const MAX_TAG_LEN: usize = 128;
/// The longest reference this parser looks at, in bytes (name, tag and digest with separators, plus room for a
/// transport prefix).
pub(crate) const MAX_REFERENCE_LEN: usize = 1024;

/// The registry a reference without one means.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// The reference is empty.
    #[error("the image reference is empty")]
    Empty,
    /// The reference is longer than [`MAX_REFERENCE_LEN`].
    #[error("the image reference is {0} bytes long; at most {MAX_REFERENCE_LEN} are accepted")]
    TooLong(usize),
    /// The repository name is longer than [`MAX_NAME_LEN`].
    #[error("repository name {name:?} is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong {
        /// The normalised name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The repository path has upper-case letters.
    #[error("repository name {0:?} must be lowercase")]
    Uppercase(String),
    /// The repository is a 64-hex image ID, which Docker refuses as a name.
    #[error("{0:?} is an image ID (64 hexadecimal digits), not a repository name")]
    ImageId(String),
    /// The registry part is not a host name or address with an optional port.
    #[error("registry {0:?} is not a valid host[:port]")]
    BadRegistry(String),
    /// A path component does not match Docker's component grammar.
    #[error(
        "repository path component {0:?} is not valid: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    BadComponent(String),
    /// The tag does not match `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error(
        "tag {0:?} is not valid: it must start with a letter, digit or '_' and have at most 128 of letters, digits, '_', '.' and '-'"
    )]
    BadTag(String),
    /// The digest is not `sha256:` followed by 64 lowercase hexadecimal digits.
    #[error("digest {0:?} is not valid: expected sha256: followed by 64 lowercase hexadecimal digits")]
    BadDigest(String),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses what a user typed, accepting a leading `docker://`.
    ///
    /// # Errors
    /// An [`ImageRefError`] naming the part that is wrong.
    pub fn parse(input: &str) -> Result<Self, ImageRefError> {
        if input.len() > MAX_REFERENCE_LEN {
            return Err(ImageRefError::TooLong(input.len()));
        }
        let text = input.strip_prefix("docker://").unwrap_or(input);
        if text.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag is what follows the last ':' when that ':' comes after the last '/' (otherwise it is a port).
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                let tag = rest.get(colon + 1..).unwrap_or_default();
                check_tag(tag)?;
                (rest.get(..colon).unwrap_or_default(), Some(tag.to_owned()))
            }
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if name.len() == 64 && name.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(ImageRefError::ImageId(name.to_owned()));
        }
        let (registry, path) = split_registry(name);
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_owned() } else { registry.to_owned() };
        check_registry(&registry)?;
        if path.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(ImageRefError::Uppercase(path.to_owned()));
        }
        for component in path.split('/') {
            check_component(component)?;
        }
        let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let full_len = registry.len() + 1 + path.len();
        if full_len > MAX_NAME_LEN {
            return Err(ImageRefError::NameTooLong { name: format!("{registry}/{path}"), len: full_len });
        }
        let tag = if tag.is_none() && digest.is_none() { Some(DEFAULT_TAG.to_owned()) } else { tag };
        Ok(Self { registry, path, tag, digest })
    }

    /// The registry host (and port), normalised: `docker.io`, `registry.example.com:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/app`, `team/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository as Notary names it (its GUN): `docker.io/library/app`.
    pub fn gun(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// The tag: the one typed, `latest` when neither tag nor digest was typed, `None` for a digest-only reference.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest typed (`sha256:<64 hex>`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The same repository with its tag and without digest (what a verifier resolves to a signed digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ImageRefError> {
        check_tag(tag)?;
        Ok(Self { registry: self.registry.clone(), path: self.path.clone(), tag: Some(tag.to_owned()), digest: None })
    }

    /// The same repository pinned to `digest`, keeping the tag (the form a mutating webhook writes).
    pub fn with_digest(&self, digest: &str) -> Result<Self, ImageRefError> {
        check_digest(digest)?;
        Ok(Self {
            registry: self.registry.clone(),
            path: self.path.clone(),
            tag: self.tag.clone(),
            digest: Some(digest.to_owned()),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.registry, self.path)?;
        if let Some(tag) = &self.tag {
            write!(formatter, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(formatter, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

/// Splits `name` into registry and path by Docker's rule: the first component is a registry when there is a '/'
/// and that component has a '.' or ':', is `localhost`, or has an upper-case letter.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

/// Checks a registry: host name labels or a bracketed IPv6 address, then an optional numeric port.
fn check_registry(registry: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::BadRegistry(registry.to_owned());
    let (host, port) = if let Some(after_bracket) = registry.strip_prefix('[') {
        let (address, rest) = after_bracket.split_once(']').ok_or_else(bad)?;
        if address.is_empty() || !address.bytes().all(|byte| byte.is_ascii_hexdigit() || byte == b':' || byte == b'.') {
            return Err(bad());
        }
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return Err(bad()),
        };
        (None, port)
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(())
}

/// Checks one path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_component(component: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::BadComponent(component.to_owned());
    let bytes = component.as_bytes();
    let alnum = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    if bytes.is_empty() || !bytes.first().copied().is_some_and(alnum) || !bytes.last().copied().is_some_and(alnum) {
        return Err(bad());
    }
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes.get(index).copied().unwrap_or_default();
        if alnum(byte) {
            index += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = index;
        while bytes.get(index).is_some_and(|byte| !alnum(*byte)) {
            index += 1;
        }
        let separator = component.get(start..index).unwrap_or_default();
        let valid = separator == "." || separator == "_" || separator == "__" || separator.bytes().all(|b| b == b'-');
        if !valid {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), ImageRefError> {
    let word = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let valid = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|byte| word(byte) || byte == b'.' || byte == b'-');
    if valid { Ok(()) } else { Err(ImageRefError::BadTag(tag.to_owned())) }
}

/// Checks `sha256:<64 lowercase hex>`, the only digest Notary targets carry for images.
pub fn check_digest(digest: &str) -> Result<(), ImageRefError> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    });
    if valid { Ok(()) } else { Err(ImageRefError::BadDigest(digest.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    /// Parses `input` and checks registry, path, tag, digest and the normalised display form.
    fn check(input: &str, registry: &str, path: &str, tag: Option<&str>, digest: Option<&str>, shown: &str) {
        let image = ImageRef::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"));
        assert_eq!(image.registry(), registry, "{input}");
        assert_eq!(image.path(), path, "{input}");
        assert_eq!(image.tag(), tag, "{input}");
        assert_eq!(image.digest(), digest, "{input}");
        assert_eq!(image.to_string(), shown, "{input}");
        assert_eq!(image.gun(), format!("{registry}/{path}"), "{input}");
    }

    #[test]
    fn docker_normalisation_examples() {
        // Cases from distribution's reference/normalize_test.go and reference_test.go.
        check("test_com", "docker.io", "library/test_com", Some("latest"), None, "docker.io/library/test_com:latest");
        check("test.com:tag", "docker.io", "library/test.com", Some("tag"), None, "docker.io/library/test.com:tag");
        check("test.com:5000", "docker.io", "library/test.com", Some("5000"), None, "docker.io/library/test.com:5000");
        check("test.com/repo:tag", "test.com", "repo", Some("tag"), None, "test.com/repo:tag");
        check("test:5000/repo", "test:5000", "repo", Some("latest"), None, "test:5000/repo:latest");
        check("test:5000/repo:tag", "test:5000", "repo", Some("tag"), None, "test:5000/repo:tag");
        let with_digest = format!("test:5000/repo@sha256:{HEX}");
        let digest = format!("sha256:{HEX}");
        check(&with_digest, "test:5000", "repo", None, Some(&digest), &with_digest);
        let both = format!("test:5000/repo:tag@sha256:{HEX}");
        check(&both, "test:5000", "repo", Some("tag"), Some(&digest), &both);
        check(
            "lowercase:Uppercase",
            "docker.io",
            "library/lowercase",
            Some("Uppercase"),
            None,
            "docker.io/library/lowercase:Uppercase",
        );
        check(
            "foo_bar.com:8080",
            "docker.io",
            "library/foo_bar.com",
            Some("8080"),
            None,
            "docker.io/library/foo_bar.com:8080",
        );
        check(
            "foo/foo_bar.com:8080",
            "docker.io",
            "foo/foo_bar.com",
            Some("8080"),
            None,
            "docker.io/foo/foo_bar.com:8080",
        );
        check(
            "xn--n3h.com/myimage:xn--n3h.com",
            "xn--n3h.com",
            "myimage",
            Some("xn--n3h.com"),
            None,
            "xn--n3h.com/myimage:xn--n3h.com",
        );
        check(
            "docker.io/library/ubuntu",
            "docker.io",
            "library/ubuntu",
            Some("latest"),
            None,
            "docker.io/library/ubuntu:latest",
        );
        check("index.docker.io/foo", "docker.io", "library/foo", Some("latest"), None, "docker.io/library/foo:latest");
        check("index.docker.io/user/foo:v1", "docker.io", "user/foo", Some("v1"), None, "docker.io/user/foo:v1");
        check("localhost/foo", "localhost", "foo", Some("latest"), None, "localhost/foo:latest");
        check("localhost:5000/a/b/c:1.0", "localhost:5000", "a/b/c", Some("1.0"), None, "localhost:5000/a/b/c:1.0");
        check("[fe80::1]:5000/repo:v1", "[fe80::1]:5000", "repo", Some("v1"), None, "[fe80::1]:5000/repo:v1");
        check("Example.COM/app", "Example.COM", "app", Some("latest"), None, "Example.COM/app:latest");
        check("a__b/c.d_e-f--g:h", "docker.io", "a__b/c.d_e-f--g", Some("h"), None, "docker.io/a__b/c.d_e-f--g:h");
    }

    #[test]
    fn what_users_type() {
        check("app", "docker.io", "library/app", Some("latest"), None, "docker.io/library/app:latest");
        check("library/app:v1", "docker.io", "library/app", Some("v1"), None, "docker.io/library/app:v1");
        check(
            "registry.example.com:5000/team/app:v2",
            "registry.example.com:5000",
            "team/app",
            Some("v2"),
            None,
            "registry.example.com:5000/team/app:v2",
        );
        check(
            "docker://alpine:3.19",
            "docker.io",
            "library/alpine",
            Some("3.19"),
            None,
            "docker.io/library/alpine:3.19",
        );
        check(
            "docker://registry.example.com/app",
            "registry.example.com",
            "app",
            Some("latest"),
            None,
            "registry.example.com/app:latest",
        );
    }

    #[test]
    fn refusals() {
        let cases: Vec<(String, ImageRefError)> = vec![
            (String::new(), ImageRefError::Empty),
            ("docker://".into(), ImageRefError::Empty),
            (":justtag".into(), ImageRefError::Empty),
            (format!("@sha256:{HEX}"), ImageRefError::Empty),
            ("Uppercase:tag".into(), ImageRefError::Uppercase("Uppercase".into())),
            ("test:5000/Uppercase/lowercase:tag".into(), ImageRefError::Uppercase("Uppercase/lowercase".into())),
            ("aa/asdf$$^/aa".into(), ImageRefError::BadComponent("asdf$$^".into())),
            ("validname@invaliddigest:ffff".into(), ImageRefError::BadDigest("invaliddigest:ffff".into())),
            ("repo@sha256:abc".into(), ImageRefError::BadDigest("sha256:abc".into())),
            (
                format!("repo@sha256:{}", HEX.to_uppercase()),
                ImageRefError::BadDigest(format!("sha256:{}", HEX.to_uppercase())),
            ),
            ("repo:".into(), ImageRefError::BadTag(String::new())),
            ("repo:-bad".into(), ImageRefError::BadTag("-bad".into())),
            (format!("repo:{}", "t".repeat(129)), ImageRefError::BadTag("t".repeat(129))),
            (HEX.into(), ImageRefError::ImageId(HEX.into())),
            ("a..b/c".into(), ImageRefError::BadRegistry("a..b".into())),
            ("host:port/c".into(), ImageRefError::BadRegistry("host:port".into())),
            ("-host.com/c".into(), ImageRefError::BadRegistry("-host.com".into())),
            ("repo_/x".into(), ImageRefError::BadComponent("repo_".into())),
            ("a/b//c".into(), ImageRefError::BadComponent(String::new())),
            ("a___b".into(), ImageRefError::BadComponent("a___b".into())),
            (
                format!("example.com/{}", "a".repeat(250)),
                ImageRefError::NameTooLong { name: format!("example.com/{}", "a".repeat(250)), len: 262 },
            ),
            ("x".repeat(1025), ImageRefError::TooLong(1025)),
        ];
        for (input, expected) in cases {
            assert_eq!(ImageRef::parse(&input), Err(expected), "{input}");
        }
        // A 255-byte name is the longest accepted.
        let longest = format!("example.com/{}", "a".repeat(243));
        assert_eq!(ImageRef::parse(&longest).map(|image| image.gun().len()), Ok(255));
    }

    #[test]
    fn refusal_messages_read_well() {
        assert_eq!(
            ImageRef::parse("Uppercase:tag").map_err(|error| error.to_string()),
            Err("repository name \"Uppercase\" must be lowercase".to_owned())
        );
    }

    #[test]
    fn with_tag_and_digest() {
        let image = ImageRef::parse("registry.example.com/app:v1").unwrap();
        let pinned = image.with_digest(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(pinned.to_string(), format!("registry.example.com/app:v1@sha256:{HEX}"));
        assert_eq!(pinned.with_tag("v2").unwrap().to_string(), "registry.example.com/app:v2");
        assert_eq!(image.with_digest("md5:00"), Err(ImageRefError::BadDigest("md5:00".into())));
    }
}
