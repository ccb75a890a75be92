//! The row types of the auth tables (principals, API tokens, role bindings, tombstones and
//! token-signing keys). The store keeps them as strings, hashes and bytes: it never hashes a
//! password or a token secret and never interprets a role or a GUN pattern.
//!
//! `Debug` never prints a secret or a hash of one: password and secret hashes, sealed private
//! keys and stored root bytes show only whether or how much is there.

use std::fmt;

use chrono::{DateTime, Utc};

/// Whether a principal is a person or a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A person; normally logs in with a password.
    User,
    /// A service account; normally authenticates with API tokens only.
    Service,
}

impl PrincipalKind {
    /// The stored spelling: `user` or `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
        }
    }

    /// Parses the stored spelling; anything else is `None`.
    pub fn parse(text: &str) -> Option<PrincipalKind> {
        match text {
            "user" => Some(PrincipalKind::User),
            "service" => Some(PrincipalKind::Service),
            _ => None,
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user or service account of the built-in token service.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The unique name the principal logs in with.
    pub name: String,
    /// User or service account.
    pub kind: PrincipalKind,
    /// The password's PHC string; `None` means no password login (service accounts).
    pub password_hash: Option<String>,
    /// When the principal was added.
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<set>"))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An API token of a principal. The store holds only the hash of the token's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The token's public id (short and printable); unique.
    pub id: String,
    /// The name of the principal the token authenticates; it must exist.
    pub principal: String,
    /// Hex SHA-256 of the token's secret; never the secret itself.
    pub secret_hash: String,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// When the token stops working, `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the token was revoked, `None` while it is not.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .field("secret_hash", &"<hidden>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// A grant of a role on the GUNs matching a pattern. The store compares the three strings
/// for equality only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleBinding {
    /// The principal's name, or `anonymous` for unauthenticated callers (which is not a stored
    /// principal).
    pub principal: String,
    /// The role's name, e.g. `reader`, `publisher` or `admin`.
    pub role: String,
    /// The GUN pattern text.
    pub pattern: String,
    /// When the binding was added.
    pub created_at: DateTime<Utc>,
}

/// What remains of a deleted GUN: its last current root, so that a new root for the GUN can be
/// checked against the old one's keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The deleted GUN.
    pub gun: String,
    /// The exact bytes of the GUN's last current `root.json`.
    pub root: Vec<u8>,
    /// When the GUN was (last) deleted.
    pub deleted_at: DateTime<Utc>,
}

impl fmt::Debug for Tombstone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tombstone")
            .field("gun", &self.gun)
            .field("root_len", &self.root.len())
            .field("deleted_at", &self.deleted_at)
            .finish()
    }
}

/// What a token-signing key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKeyKind {
    /// The token service's certificate authority, whose certificate consumers trust.
    Ca,
    /// The key that signs tokens, certified by the CA.
    Signing,
}

impl TokenKeyKind {
    /// The stored spelling: `ca` or `signing`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKeyKind::Ca => "ca",
            TokenKeyKind::Signing => "signing",
        }
    }

    /// Parses the stored spelling; anything else is `None`.
    pub fn parse(text: &str) -> Option<TokenKeyKind> {
        match text {
            "ca" => Some(TokenKeyKind::Ca),
            "signing" => Some(TokenKeyKind::Signing),
            _ => None,
        }
    }
}

impl fmt::Display for TokenKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key of the built-in token service, with its certificate. The private half arrives sealed
/// under a key-encryption key; the store never sees plaintext key material.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    /// The key's unique id.
    pub id: String,
    /// CA or signing key.
    pub kind: TokenKeyKind,
    /// The key algorithm, e.g. `ecdsa-p256`.
    pub algorithm: String,
    /// The key's certificate, DER.
    pub certificate: Vec<u8>,
    /// The private key, encrypted by the server.
    pub sealed_private: Vec<u8>,
    /// Which key-encryption key sealed `sealed_private`.
    pub kek_id: String,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When the key was retired (replaced by a newer key of its kind); `None` while active.
    pub retired_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("algorithm", &self.algorithm)
            .field("certificate_len", &self.certificate.len())
            .field("sealed_private", &"<sealed>")
            .field("kek_id", &self.kek_id)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for kind in [PrincipalKind::User, PrincipalKind::Service] {
            assert_eq!(PrincipalKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(PrincipalKind::User.as_str(), "user");
        assert_eq!(PrincipalKind::Service.as_str(), "service");
        assert_eq!(PrincipalKind::parse("User"), None);
        assert_eq!(PrincipalKind::parse(""), None);
        for kind in [TokenKeyKind::Ca, TokenKeyKind::Signing] {
            assert_eq!(TokenKeyKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(TokenKeyKind::Ca.as_str(), "ca");
        assert_eq!(TokenKeyKind::Signing.as_str(), "signing");
        assert_eq!(TokenKeyKind::parse("CA"), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_000_000).unwrap();
        let principal = Principal {
            name: "alice".into(),
            kind: PrincipalKind::User,
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            created_at: at,
        };
        let shown = format!("{principal:?}");
        assert!(shown.contains("alice") && shown.contains("<set>"), "{shown}");
        assert!(!shown.contains("argon2id"), "{shown}");

        let token = ApiToken {
            id: "0123456789ab".into(),
            principal: "alice".into(),
            secret_hash: "f".repeat(64),
            created_at: at,
            expires_at: None,
            revoked_at: None,
        };
        let shown = format!("{token:?}");
        assert!(shown.contains("0123456789ab") && !shown.contains("ffff"), "{shown}");

        let key = TokenKey {
            id: "k1".into(),
            kind: TokenKeyKind::Signing,
            algorithm: "ecdsa-p256".into(),
            certificate: vec![0x30, 0x82],
            sealed_private: b"SEALEDBYTES".to_vec(),
            kek_id: "kek".into(),
            created_at: at,
            retired_at: None,
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("<sealed>") && shown.contains("certificate_len: 2"), "{shown}");
        assert!(!shown.contains("83, 69") && !shown.contains("SEALED"), "{shown}");

        let tombstone = Tombstone { gun: "a/b".into(), root: b"{\"signed\":{}}".to_vec(), deleted_at: at };
        assert_eq!(format!("{tombstone:?}"), format!("Tombstone {{ gun: \"a/b\", root_len: 13, deleted_at: {at:?} }}"));
    }
}
