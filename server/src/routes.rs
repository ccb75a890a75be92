//! Request routing in notary-server's order (spec §1.2). GUNs contain slashes and roles may too,
//! so paths are matched here rather than by the axum router.

use axum::http::Method;
use tufa_auth::Access;
use tufa_auth::access::ALL_ACTIONS;
use tufa_core::names::{BaseRole, Gun, RoleName};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/`
    Ping,
    /// `GET /_notary_server/health`
    Health,
    /// `GET /metrics`
    Metrics,
    /// `POST /v2/<gun>/_trust/tuf/`
    Update(Gun),
    /// `DELETE /v2/<gun>/_trust/tuf/`
    Delete(Gun),
    /// `GET .../<role>.<sha256>.json`
    ByChecksum(Gun, RoleName, String),
    /// `GET .../<version>.<role>.json`
    ByVersion(Gun, RoleName, i64),
    /// `GET .../<role>.json`
    Current(Gun, RoleName),
    /// `GET .../{snapshot,timestamp}.key`
    GetKey(Gun, BaseRole),
    /// `POST .../{snapshot,timestamp}.key`
    RotateKey(Gun, BaseRole),
    /// `GET /v2/<gun>/_trust/changefeed`
    GunChangefeed(Gun),
    /// `GET /v2/_trust/changefeed`
    Changefeed,
    /// `GET` or `POST /auth/token`: the builtin token service (404 in other modes).
    Token,
    /// `GET /auth/certs`: the builtin token service's CA bundle (404 in other modes).
    TokenCerts,
    /// `GET /v1/repositories/<gun>/grants`: who may sign what (audit API).
    Grants(Gun),
    /// `GET /v1/repositories/<gun>/grants/changes`: who added, changed or removed a delegate.
    GrantChanges(Gun),
    /// `GET /v1/repositories/<gun>/targets/<name>/history`: every version of a tag. The name is
    /// one path segment (a `/` in it is sent as `%2F`), so the GUN is everything before it.
    TargetHistory(Gun, String),
    /// `GET /v1/keys/<keyid>/grants`: where a key is trusted (the key ID as sent, decoded).
    KeyGrants(String),
    /// `GET /v1/audit`: the audit log, paged.
    AuditLog,
    /// `GET /v1/audit/checkpoint`: the latest signed checkpoint.
    AuditCheckpoint,
    /// `GET /v1/audit/entries/<seq>`: one entry (the position as sent, decoded).
    AuditEntry(String),
    /// `GET /v1/audit/proof/inclusion`.
    InclusionProof,
    /// `GET /v1/audit/proof/consistency`.
    ConsistencyProof,
    /// `POST /v1/verify`: whether an image is trusted, under the server's verification policy.
    /// The repository is in the body, so the access it needs (pull) is checked by the handler.
    Verify,
    /// A route exists but the GUN is not acceptable (POST and the audit API answer `INVALID_GUN`).
    BadGun(String),
    /// Caught by notary's catch-all: 404.
    NotFound,
    /// No route accepts this method: 405.
    MethodNotAllowed,
}

impl Route {
    /// The operation label used in metrics.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Ping => "Ping",
            Self::Health => "Health",
            Self::Metrics => "Metrics",
            Self::Update(_) => "UpdateTUF",
            Self::Delete(_) => "DeleteTUF",
            Self::ByChecksum(..) => "GetRoleByHash",
            Self::ByVersion(..) => "GetRoleByVersion",
            Self::Current(..) => "GetRole",
            Self::GetKey(..) => "GetKey",
            Self::RotateKey(..) => "RotateKey",
            Self::GunChangefeed(_) | Self::Changefeed => "Changefeed",
            Self::Token | Self::TokenCerts => "Token",
            Self::Grants(_) | Self::GrantChanges(_) | Self::KeyGrants(_) => "AuditGrants",
            Self::TargetHistory(..) => "AuditHistory",
            Self::AuditLog | Self::AuditEntry(_) => "AuditLog",
            Self::AuditCheckpoint | Self::InclusionProof | Self::ConsistencyProof => "AuditProof",
            Self::Verify => "Verify",
            Self::BadGun(_) | Self::NotFound | Self::MethodNotAllowed => "NotFound",
        }
    }

    /// What a registry token must grant for this request, as notary-server asks for it: the catalog
    /// for `GET /v2/` and the global changefeed, `pull` for reading a repository's metadata or
    /// changefeed, `pull,push` for an update and for reading (hence possibly creating) an online key,
    /// and `*` for deleting a repository or rotating its online keys. Probes, metrics and requests
    /// that match no route need nothing, so they never reveal whether a repository exists; the token
    /// service checks its own credentials.
    ///
    /// The audit API asks for `pull` on the repository for a repository's grants and tag history,
    /// and for the catalog (like the global changefeed) for everything else: its handlers then
    /// show each caller only the entries and grants of repositories it may read.
    pub fn required_access(&self) -> Vec<Access> {
        let repository = |gun: &Gun, actions: &[&str]| vec![Access::new("repository", gun.as_str(), actions)];
        match self {
            Self::Ping | Self::Changefeed => vec![Access::new("registry", "catalog", &[ALL_ACTIONS])],
            Self::KeyGrants(_)
            | Self::AuditLog
            | Self::AuditCheckpoint
            | Self::AuditEntry(_)
            | Self::InclusionProof
            | Self::ConsistencyProof => vec![Access::new("registry", "catalog", &[ALL_ACTIONS])],
            Self::ByChecksum(gun, ..)
            | Self::ByVersion(gun, ..)
            | Self::Current(gun, _)
            | Self::GunChangefeed(gun)
            | Self::Grants(gun)
            | Self::GrantChanges(gun)
            | Self::TargetHistory(gun, _) => repository(gun, &["pull"]),
            Self::Update(gun) | Self::GetKey(gun, _) => repository(gun, &["pull", "push"]),
            Self::Delete(gun) | Self::RotateKey(gun, _) => repository(gun, &[ALL_ACTIONS]),
            Self::Health
            | Self::Metrics
            | Self::Verify
            | Self::Token
            | Self::TokenCerts
            | Self::BadGun(_)
            | Self::NotFound
            | Self::MethodNotAllowed => Vec::new(),
        }
    }
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|digit| (*digit as char).to_digit(16))?;
            let low = bytes.get(index + 2).and_then(|digit| (*digit as char).to_digit(16))?;
            out.push(u8::try_from(high * 16 + low).ok()?);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is_hex_checksum(text: &str) -> bool {
    matches!(text.len(), 64 | 96 | 128) && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn is_version(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Methods some route accepts; others get 405 like gorilla/mux answers them.
fn known_method(method: &Method) -> bool {
    [Method::GET, Method::POST, Method::PUT, Method::HEAD, Method::DELETE].contains(method)
}

/// Matches a request to a route.
pub fn route(method: &Method, raw_path: &str) -> Route {
    if !known_method(method) {
        return Route::MethodNotAllowed;
    }
    if let Some(rest) = raw_path.strip_prefix("/v1/") {
        return match *method {
            Method::GET => audit_route(rest),
            Method::POST if rest == "verify" => Route::Verify,
            _ => Route::NotFound,
        };
    }
    let Some(path) = percent_decode(raw_path) else { return Route::NotFound };
    let get = *method == Method::GET;
    match path.as_str() {
        "/v2/" if get => return Route::Ping,
        "/_notary_server/health" if get => return Route::Health,
        "/metrics" if get => return Route::Metrics,
        "/v2/_trust/changefeed" if get => return Route::Changefeed,
        "/auth/token" if get || *method == Method::POST => return Route::Token,
        "/auth/certs" if get => return Route::TokenCerts,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return Route::NotFound };
    if let Some(gun) = rest.strip_suffix("/_trust/changefeed") {
        if !get {
            return Route::NotFound;
        }
        return match Gun::parse(gun) {
            Ok(gun) => Route::GunChangefeed(gun),
            Err(_) => Route::NotFound,
        };
    }
    let Some((gun, file)) = rest.split_once("/_trust/tuf/") else { return Route::NotFound };
    let gun = match Gun::parse(gun) {
        Ok(gun) => gun,
        Err(error) if file.is_empty() && *method == Method::POST => return Route::BadGun(error.to_string()),
        Err(_) => return Route::NotFound,
    };
    if file.is_empty() {
        return match *method {
            Method::POST => Route::Update(gun),
            Method::DELETE => Route::Delete(gun),
            _ => Route::NotFound,
        };
    }
    if let Some(role) = file.strip_suffix(".key") {
        let role = match role {
            "snapshot" => BaseRole::Snapshot,
            "timestamp" => BaseRole::Timestamp,
            _ => return Route::NotFound,
        };
        return match *method {
            Method::GET => Route::GetKey(gun, role),
            Method::POST => Route::RotateKey(gun, role),
            _ => Route::NotFound,
        };
    }
    if !get {
        return Route::NotFound;
    }
    let Some(stem) = file.strip_suffix(".json") else { return Route::NotFound };
    if let Some((role, checksum)) = stem.rsplit_once('.')
        && is_hex_checksum(checksum)
    {
        return match RoleName::parse(role) {
            Ok(role) => Route::ByChecksum(gun, role, checksum.to_ascii_lowercase()),
            Err(_) => Route::NotFound,
        };
    }
    if let Some((version, role)) = stem.split_once('.')
        && is_version(version)
    {
        return match (version.parse::<i64>(), RoleName::parse(role)) {
            (Ok(version), Ok(role)) => Route::ByVersion(gun, role, version),
            _ => Route::NotFound,
        };
    }
    match RoleName::parse(stem) {
        Ok(role) => Route::Current(gun, role),
        Err(_) => Route::NotFound,
    }
}

/// A GUN of the audit API, from its still-encoded path text: a bad GUN is a 400 there.
fn audit_gun(raw: &str) -> Result<Gun, Route> {
    let text = percent_decode(raw).ok_or(Route::NotFound)?;
    Gun::parse(&text).map_err(|error| Route::BadGun(error.to_string()))
}

/// Matches the audit API (`GET /v1/…`) on the raw path, before percent-decoding, so that an
/// encoded `/` (`%2F`) stays inside its segment: a target name is exactly one segment, and the
/// GUN is everything between `/v1/repositories/` and the route's fixed suffix
/// (`/grants`, `/grants/changes`, `/targets/<name>/history`). The suffixes are tried in that
/// order and each ends in a word no other suffix ends in, so every path has one reading.
fn audit_route(rest: &str) -> Route {
    let decoded = |raw: &str| percent_decode(raw).filter(|text| !text.contains('/'));
    match rest {
        "audit" => return Route::AuditLog,
        "audit/checkpoint" => return Route::AuditCheckpoint,
        "audit/proof/inclusion" => return Route::InclusionProof,
        "audit/proof/consistency" => return Route::ConsistencyProof,
        _ => {}
    }
    if let Some(seq) = rest.strip_prefix("audit/entries/")
        && !seq.contains('/')
    {
        return decoded(seq).map_or(Route::NotFound, Route::AuditEntry);
    }
    if let Some(key) = rest.strip_prefix("keys/").and_then(|tail| tail.strip_suffix("/grants"))
        && !key.contains('/')
    {
        return decoded(key).map_or(Route::NotFound, Route::KeyGrants);
    }
    let Some(repository) = rest.strip_prefix("repositories/") else { return Route::NotFound };
    let gun_route = |raw: &str, make: fn(Gun) -> Route| audit_gun(raw).map_or_else(|route| route, make);
    if let Some(gun) = repository.strip_suffix("/grants/changes") {
        return gun_route(gun, Route::GrantChanges);
    }
    if let Some(gun) = repository.strip_suffix("/grants") {
        return gun_route(gun, Route::Grants);
    }
    if let Some((gun, name)) = repository
        .strip_suffix("/history")
        .and_then(|tail| tail.rsplit_once('/'))
        .and_then(|(head, name)| Some((head.strip_suffix("/targets")?, name)))
    {
        let Some(name) = percent_decode(name) else { return Route::NotFound };
        return match audit_gun(gun) {
            Ok(gun) => Route::TargetHistory(gun, name),
            Err(route) => route,
        };
    }
    Route::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gun() -> Gun {
        Gun::parse("example.com/app").unwrap()
    }

    fn role(name: &str) -> RoleName {
        RoleName::parse(name).unwrap()
    }

    /// Each route's required access, through the real router, as notary-server's table has it.
    #[test]
    fn required_access_per_route() {
        let cases: [(Method, &str, &str); 14] = [
            (Method::GET, "/v2/", "registry:catalog:*"),
            (Method::GET, "/v2/_trust/changefeed", "registry:catalog:*"),
            (Method::GET, "/v2/example.com/app/_trust/changefeed", "repository:example.com/app:pull"),
            (Method::GET, "/v2/example.com/app/_trust/tuf/root.json", "repository:example.com/app:pull"),
            (Method::GET, "/v2/example.com/app/_trust/tuf/targets/releases.json", "repository:example.com/app:pull"),
            (Method::GET, "/v2/example.com/app/_trust/tuf/2.root.json", "repository:example.com/app:pull"),
            (
                Method::GET,
                "/v2/example.com/app/_trust/tuf/snapshot.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.json",
                "repository:example.com/app:pull",
            ),
            (Method::POST, "/v2/example.com/app/_trust/tuf/", "repository:example.com/app:pull,push"),
            (Method::GET, "/v2/example.com/app/_trust/tuf/timestamp.key", "repository:example.com/app:pull,push"),
            (Method::GET, "/v2/example.com/app/_trust/tuf/snapshot.key", "repository:example.com/app:pull,push"),
            (Method::POST, "/v2/example.com/app/_trust/tuf/timestamp.key", "repository:example.com/app:*"),
            (Method::DELETE, "/v2/example.com/app/_trust/tuf/", "repository:example.com/app:*"),
            (Method::GET, "/_notary_server/health", ""),
            (Method::GET, "/metrics", ""),
        ];
        for (method, path, expected) in cases {
            let scopes: Vec<String> = route(&method, path)
                .required_access()
                .iter()
                .map(|access| {
                    let actions: Vec<&str> = access.actions.iter().map(String::as_str).collect();
                    format!("{}:{}:{}", access.type_, access.name, actions.join(","))
                })
                .collect();
            assert_eq!(scopes.join(" "), expected, "{method} {path}");
        }
        for path in ["/v2/example.com/app/_trust/tuf/nope.txt", "/nowhere", "/v2/..%2F/_trust/tuf/root.json"] {
            assert_eq!(route(&Method::GET, path).required_access(), Vec::new(), "{path}");
        }
    }

    fn check(method: Method, path: &str, expected: Route) {
        assert_eq!(route(&method, path), expected, "{method} {path}");
    }

    #[test]
    fn routes_in_notary_order() {
        let hex = "a".repeat(64);
        check(Method::GET, "/v2/", Route::Ping);
        check(Method::POST, "/v2/", Route::NotFound);
        check(Method::GET, "/_notary_server/health", Route::Health);
        check(Method::GET, "/metrics", Route::Metrics);
        check(Method::GET, "/v2/_trust/changefeed", Route::Changefeed);
        check(Method::GET, "/v2/example.com/app/_trust/changefeed", Route::GunChangefeed(gun()));
        check(Method::POST, "/v2/example.com/app/_trust/tuf/", Route::Update(gun()));
        check(Method::DELETE, "/v2/example.com/app/_trust/tuf/", Route::Delete(gun()));
        check(Method::GET, "/v2/example.com/app/_trust/tuf/root.json", Route::Current(gun(), role("root")));
        check(
            Method::GET,
            "/v2/example.com/app/_trust/tuf/targets/releases.json",
            Route::Current(gun(), role("targets/releases")),
        );
        check(
            Method::GET,
            &format!("/v2/example.com/app/_trust/tuf/snapshot.{hex}.json"),
            Route::ByChecksum(gun(), role("snapshot"), hex.clone()),
        );
        check(
            Method::GET,
            &format!("/v2/example.com/app/_trust/tuf/targets/a.{}.json", "AB".repeat(32)),
            Route::ByChecksum(gun(), role("targets/a"), "ab".repeat(32)),
        );
        check(Method::GET, "/v2/example.com/app/_trust/tuf/3.root.json", Route::ByVersion(gun(), role("root"), 3));
        check(Method::GET, "/v2/example.com/app/_trust/tuf/0.root.json", Route::ByVersion(gun(), role("root"), 0));
        check(
            Method::GET,
            "/v2/example.com/app/_trust/tuf/12.targets/x.json",
            Route::ByVersion(gun(), role("targets/x"), 12),
        );
        check(Method::GET, "/v2/example.com/app/_trust/tuf/timestamp.key", Route::GetKey(gun(), BaseRole::Timestamp));
        check(Method::POST, "/v2/example.com/app/_trust/tuf/snapshot.key", Route::RotateKey(gun(), BaseRole::Snapshot));
        check(Method::GET, "/v2/example.com/app/_trust/tuf/root.key", Route::NotFound);
        check(Method::GET, "/v2/example.com/app/_trust/tuf/targets/Rel.json", Route::NotFound);
        check(Method::GET, "/v2/example.com/app/_trust/tuf/99999999999999999999.root.json", Route::NotFound);
        check(Method::PATCH, "/v2/example.com/app/_trust/tuf/", Route::MethodNotAllowed);
        check(Method::HEAD, "/v2/example.com/app/_trust/tuf/root.json", Route::NotFound);
        check(Method::GET, "/v2/example%2Ecom/app/_trust/tuf/root.json", Route::Current(gun(), role("root")));
        check(Method::GET, "/v2/bad%ZZ/_trust/tuf/root.json", Route::NotFound);
        check(Method::GET, "/v2/../etc/_trust/tuf/root.json", Route::NotFound);
        assert!(matches!(route(&Method::POST, "/v2/a/../b/_trust/tuf/"), Route::BadGun(_)));
        assert!(matches!(route(&Method::POST, "/v2/%2Fabs/_trust/tuf/"), Route::BadGun(_)));
        check(Method::GET, "/nothing", Route::NotFound);
    }

    /// The audit API's GUNs keep their slashes; the fixed suffix decides the route and the GUN is
    /// everything before it, so GUN segments named like the suffixes' words stay in the GUN.
    #[test]
    fn audit_routes_split_the_gun_by_suffix() {
        let named = |text: &str| Gun::parse(text).unwrap();
        check(Method::GET, "/v1/repositories/example.com/app/grants", Route::Grants(gun()));
        check(Method::GET, "/v1/repositories/example.com/app/grants/changes", Route::GrantChanges(gun()));
        check(
            Method::GET,
            "/v1/repositories/example.com/app/targets/v1/history",
            Route::TargetHistory(gun(), "v1".into()),
        );
        check(Method::GET, "/v1/repositories/a/grants/grants", Route::Grants(named("a/grants")));
        check(Method::GET, "/v1/repositories/a/grants/grants/changes", Route::GrantChanges(named("a/grants")));
        check(Method::GET, "/v1/repositories/a/targets/b/grants", Route::Grants(named("a/targets/b")));
        check(
            Method::GET,
            "/v1/repositories/a/targets/b/targets/c/history",
            Route::TargetHistory(named("a/targets/b"), "c".into()),
        );
        // A target name is one segment: a slash in it is sent encoded.
        check(
            Method::GET,
            "/v1/repositories/a/b/targets/dir%2Ffile/history",
            Route::TargetHistory(named("a/b"), "dir/file".into()),
        );
        check(Method::GET, "/v1/repositories/example%2Ecom/app/grants", Route::Grants(gun()));
        check(Method::GET, "/v1/repositories/a/b/targets//history", Route::TargetHistory(named("a/b"), String::new()));
        check(Method::GET, "/v1/repositories/a/b/history", Route::NotFound);
        check(Method::GET, "/v1/repositories/a/b/targets/x/history/", Route::NotFound);
        check(Method::GET, "/v1/repositories/a/b/targets/bad%ZZ/history", Route::NotFound);
        check(Method::GET, "/v1/repositories/grants", Route::NotFound);
        assert!(matches!(route(&Method::GET, "/v1/repositories/../etc/grants"), Route::BadGun(_)));
        assert!(matches!(route(&Method::GET, "/v1/repositories//grants"), Route::BadGun(_)));
        check(Method::GET, "/v1/keys/abc123/grants", Route::KeyGrants("abc123".into()));
        check(Method::GET, "/v1/keys/a%2Fb/grants", Route::NotFound);
        check(Method::GET, "/v1/keys/a/b/grants", Route::NotFound);
        check(Method::GET, "/v1/audit", Route::AuditLog);
        check(Method::GET, "/v1/audit/", Route::NotFound);
        check(Method::GET, "/v1/audit/checkpoint", Route::AuditCheckpoint);
        check(Method::GET, "/v1/audit/entries/7", Route::AuditEntry("7".into()));
        check(Method::GET, "/v1/audit/entries/7/x", Route::NotFound);
        check(Method::GET, "/v1/audit/proof/inclusion", Route::InclusionProof);
        check(Method::GET, "/v1/audit/proof/consistency", Route::ConsistencyProof);
        check(Method::POST, "/v1/audit", Route::NotFound);
        check(Method::DELETE, "/v1/repositories/example.com/app/grants", Route::NotFound);
        check(Method::PATCH, "/v1/audit", Route::MethodNotAllowed);
        let scopes = |path: &str| -> String {
            route(&Method::GET, path)
                .required_access()
                .iter()
                .map(|access| {
                    let actions: Vec<&str> = access.actions.iter().map(String::as_str).collect();
                    format!("{}:{}:{}", access.type_, access.name, actions.join(","))
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        for path in [
            "/v1/repositories/example.com/app/grants",
            "/v1/repositories/example.com/app/grants/changes",
            "/v1/repositories/example.com/app/targets/v1/history",
        ] {
            assert_eq!(scopes(path), "repository:example.com/app:pull", "{path}");
        }
        for path in [
            "/v1/keys/abc/grants",
            "/v1/audit",
            "/v1/audit/checkpoint",
            "/v1/audit/entries/0",
            "/v1/audit/proof/inclusion",
            "/v1/audit/proof/consistency",
        ] {
            assert_eq!(scopes(path), "registry:catalog:*", "{path}");
        }
        assert_eq!(scopes("/v1/repositories/../x/grants"), "");
    }
}
