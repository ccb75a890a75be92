//! The builtin token service (`--auth builtin`) driven by the real notary CLI with `NOTARY_AUTH`
//! and by plain HTTPS: authorised flows pass, and every refused request gets the right answer and
//! changes nothing. Each scenario runs on its own server, once on SQLite and once on PostgreSQL.

use std::collections::BTreeSet;

use base64::Engine as _;

use tufa_tests::flows::{
    RELEASES, delegation_key, init_with_server_snapshot, path_arg, publish_delegated, publish_target, role_key_ids,
    sorted, version,
};
use tufa_tests::notary::{Notary, basic_credentials};
use tufa_tests::server::HttpResponse;
use tufa_tests::tufa::{AuthServer, Backend, start_builtin};

/// The repository most scenarios work on.
const GUN: &str = "tufa.test/app";

/// The password of every test user.
const PASSWORD: &str = "correct horse battery staple";

/// The metadata files compared before and after a refused request.
const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// A builtin-mode server with an `inspector` service account that may do everything (`admin` on
/// `*`), whose API token reads metadata for the checks.
struct Fixture {
    server: AuthServer,
    inspector: String,
}

impl Fixture {
    fn start(backend: Backend) -> Fixture {
        Fixture::start_with(backend, &[])
    }

    fn start_with(backend: Backend, extra_args: &[&str]) -> Fixture {
        let server = start_builtin(backend, extra_args);
        server.admin_ok(&["user", "add", "inspector", "--service"], b"");
        server.grant("inspector", "admin", "*");
        let inspector = format!("Bearer {}", server.create_token("inspector").text);
        Fixture { server, inspector }
    }

    /// `GET /v2/<gun>/_trust/tuf/<file>` as the inspector.
    fn metadata(&self, gun: &str, file: &str) -> HttpResponse {
        self.server.get_with(&format!("/v2/{gun}/_trust/tuf/{file}"), &self.inspector)
    }

    /// The status and body of each top-level role's metadata, to compare before and after.
    fn state(&self, gun: &str) -> Vec<(u16, Vec<u8>)> {
        ROLES.iter().map(|role| self.metadata(gun, &format!("{role}.json"))).map(|r| (r.status, r.body)).collect()
    }

    /// The current `<role>.json`, which must exist.
    fn json(&self, gun: &str, role: &str) -> serde_json::Value {
        let response = self.metadata(gun, &format!("{role}.json"));
        assert_eq!(response.status, 200, "GET {role}.json of {gun}: {response}");
        response.json()
    }

    /// A user with a password and one role.
    fn user(&self, name: &str, role: &str, pattern: &str) {
        self.server.add_user(name, PASSWORD);
        self.server.grant(name, role, pattern);
    }

    fn notary(&self, name: &str) -> Notary {
        Notary::with_auth(&self.server, name, name, PASSWORD)
    }

    /// Panics if any of the server's logs so far contains one of `secrets`.
    #[track_caller]
    fn assert_logs_free_of(&self, secrets: &[&str]) {
        let mut logs = 0;
        for entry in std::fs::read_dir(self.server.dir()).expect("list the server's directory") {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned();
            if !(name.starts_with("server-") && name.ends_with(".log")) {
                continue;
            }
            logs += 1;
            let text = std::fs::read_to_string(&path).expect("read the server log");
            assert!(text.contains(" TRACE ") || text.contains(" DEBUG "), "{name} is a verbose log");
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "the server log {name} contains a secret ({} characters)",
                    secret.len()
                );
            }
        }
        assert!(logs > 0, "the server wrote a log");
    }

    #[track_caller]
    fn assert_unchanged(&self, gun: &str, before: &[(u16, Vec<u8>)], what: &str) {
        assert!(self.state(gun) == before, "{what} changed the metadata of {gun}");
    }
}

/// The challenge a refused request to this server gets.
fn challenge(server: &AuthServer, scope: &str, error: Option<&str>) -> String {
    let mut text = format!("Bearer realm=\"{}/auth/token\",service=\"tufa\",scope=\"{scope}\"", server.url());
    if let Some(error) = error {
        text.push_str(&format!(",error=\"{error}\""));
    }
    text
}

/// A 401 with exactly `expected` as its challenge and distribution's `UNAUTHORIZED` error.
#[track_caller]
fn assert_refused(response: &HttpResponse, expected: &str, what: &str) {
    assert_eq!(response.status, 401, "{what}: {response}");
    assert_eq!(response.header("www-authenticate"), Some(expected), "{what}: challenge");
    assert_eq!(response.error_code().as_deref(), Some("UNAUTHORIZED"), "{what}: {response}");
}

/// A failed notary command that reports the server's refusal.
#[track_caller]
fn assert_not_authorized(output: &tufa_tests::process::CommandOutput, what: &str) {
    let text = output.combined();
    assert!(
        text.contains("you are not authorized to perform this operation"),
        "{what}: the CLI reports the refusal:\n{output}"
    );
}

/// A failed notary command whose credentials the token endpoint refused (401).
#[track_caller]
fn assert_bad_credentials(output: &tufa_tests::process::CommandOutput, what: &str) {
    assert!(output.stdout.contains("* fatal: unauthorized"), "{what}: the CLI reports bad credentials:\n{output}");
}

/// Init (with a server-held snapshot key), publish, delegate to a publisher who signs in with an
/// API token as the password, rotate the timestamp key, delete: all with credentials.
fn notary_flows_with_credentials(backend: Backend) {
    // At the most verbose log level, so the check at the end covers every log line.
    let fixture = Fixture::start_with(backend, &["--log-level", "trace"]);
    fixture.user("alice", "admin", "tufa.test/*");
    fixture.user("bob", "publisher", GUN);
    let bob_token = fixture.server.create_token("bob");
    let alice = fixture.notary("alice");
    let bob = Notary::with_auth(&fixture.server, "bob", "bob", &bob_token.text);

    init_with_server_snapshot(&alice, GUN);
    let mut expected = vec![publish_target(&alice, GUN, "v1", b"one\n")];
    assert_eq!(alice.list(GUN, None), sorted(&expected));

    let key = delegation_key(&bob);
    alice.ok(&["delegation", "add", "-p", GUN, RELEASES, path_arg(&key.cert), "--all-paths"]);
    expected.push(publish_delegated(&bob, GUN, "v2", b"two\n", RELEASES));
    assert_eq!(alice.list(GUN, None), sorted(&expected), "the owner sees the delegate's target");
    assert_eq!(bob.list(GUN, None), sorted(&expected));

    let root_before = fixture.json(GUN, "root");
    alice.ok(&["key", "rotate", GUN, "timestamp", "-r"]);
    let root_after = fixture.json(GUN, "root");
    assert_eq!(version(&root_after), version(&root_before) + 1, "the rotation publishes a new root");
    assert_ne!(role_key_ids(&root_after, "timestamp"), role_key_ids(&root_before, "timestamp"));
    assert_eq!(bob.list(GUN, None), sorted(&expected));

    alice.ok(&["delete", GUN, "--remote"]);
    for role in ROLES {
        let response = fixture.metadata(GUN, &format!("{role}.json"));
        assert_eq!(response.status, 404, "{role}.json after delete: {response}");
    }

    // Passwords, API tokens and Authorization headers never reach the log.
    let alice_basic = basic_credentials("alice", PASSWORD);
    let bob_basic = basic_credentials("bob", &bob_token.text);
    // The secret is everything after `tufa_<id>_` (base64url, which may itself contain `_`).
    let (_, bob_secret) = tufa_auth::ApiTokenSecret::parse(&bob_token.text).expect("an API token");
    let bob_secret: &str = &bob_secret;
    let inspector = fixture.inspector.trim_start_matches("Bearer ");
    // `eyJ0eXAiOiJKV1Qi` opens every JWT the server issues (`{"typ":"JWT"`).
    let jwt = "eyJ0eXAiOiJKV1Qi";
    fixture.assert_logs_free_of(&[PASSWORD, &alice_basic, &bob_basic, &bob_token.text, bob_secret, inspector, jwt]);
}

/// Requests without credentials, with a wrong password, and by principals whose role is too small
/// are refused, and none of them changes the repository.
fn refusals_change_nothing(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("alice", "admin", GUN);
    fixture.user("rita", "reader", GUN);
    fixture.user("paul", "publisher", GUN);
    let mut owner = fixture.notary("alice");
    owner.ok(&["init", "-p", GUN]);
    let expected = vec![publish_target(&owner, GUN, "v1", b"one\n")];
    let before = fixture.state(GUN);
    assert!(before.iter().all(|(status, _)| *status == 200), "the inspector reads every role");
    let server = &fixture.server;

    // Plain HTTP without credentials: the exact challenge for each kind of request.
    let update = server.request("POST", &format!("/v2/{GUN}/_trust/tuf/"), None, Some(b"--x--\r\n".to_vec()));
    assert_refused(&update, &challenge(server, &format!("repository:{GUN}:pull,push"), None), "anonymous update");
    let delete = server.request("DELETE", &format!("/v2/{GUN}/_trust/tuf/"), None, None);
    assert_refused(&delete, &challenge(server, &format!("repository:{GUN}:*"), None), "anonymous delete");
    let rotate = server.request("POST", &format!("/v2/{GUN}/_trust/tuf/snapshot.key"), None, None);
    assert_refused(&rotate, &challenge(server, &format!("repository:{GUN}:*"), None), "anonymous key rotation");
    let read = server.get(&format!("/v2/{GUN}/_trust/tuf/root.json"));
    assert_refused(&read, &challenge(server, &format!("repository:{GUN}:pull"), None), "anonymous read");
    let ping = server.get("/v2/");
    assert_refused(&ping, &challenge(server, "registry:catalog:*", None), "anonymous ping");
    assert_eq!(
        ping.json()["errors"][0]["detail"],
        serde_json::json!([{"Type": "registry", "Class": "", "Name": "catalog", "Action": "*"}])
    );
    // A bad bearer token says so; a reader's token lacks the scope.
    let forged = server.get_with(&format!("/v2/{GUN}/_trust/tuf/root.json"), "Bearer not.a.token");
    assert_refused(
        &forged,
        &challenge(server, &format!("repository:{GUN}:pull"), Some("invalid_token")),
        "a malformed bearer token",
    );
    let rita_token = server.create_token("rita");
    let as_reader =
        server.request("DELETE", &format!("/v2/{GUN}/_trust/tuf/"), Some(&format!("Bearer {}", rita_token.text)), None);
    assert_refused(
        &as_reader,
        &challenge(server, &format!("repository:{GUN}:*"), Some("insufficient_scope")),
        "a reader's delete",
    );
    fixture.assert_unchanged(GUN, &before, "requests without credentials");

    // The owner's client (holding every key) with credentials that do not allow the change.
    let file = owner.write_file("v2.bin", b"two\n");
    owner.set_auth(None);
    let output = owner.fails(&["add", "-p", GUN, "v2", path_arg(&file)]);
    assert_not_authorized(&output, "publishing without credentials");
    fixture.assert_unchanged(GUN, &before, "publishing without credentials");

    owner.set_auth(Some(("alice", "wrong password")));
    let output = owner.fails(&["publish", GUN]);
    assert_bad_credentials(&output, "publishing with a wrong password");
    fixture.assert_unchanged(GUN, &before, "publishing with a wrong password");
    let wrong = server.get_with("/auth/token?service=tufa", &format!("Basic {}", basic_credentials("alice", "nope")));
    assert_eq!(wrong.status, 401, "a wrong password at the token endpoint: {wrong}");

    owner.set_auth(Some(("rita", PASSWORD)));
    let output = owner.fails(&["publish", GUN]);
    assert_not_authorized(&output, "a reader publishing");
    fixture.assert_unchanged(GUN, &before, "a reader publishing");

    owner.set_auth(Some(("paul", PASSWORD)));
    let output = owner.fails(&["key", "rotate", GUN, "snapshot", "-r"]);
    assert_not_authorized(&output, "a publisher rotating the snapshot key");
    fixture.assert_unchanged(GUN, &before, "a publisher rotating the snapshot key");
    let output = owner.fails(&["delete", GUN, "--remote"]);
    assert_not_authorized(&output, "a publisher deleting");
    fixture.assert_unchanged(GUN, &before, "a publisher deleting");

    // The publisher may publish; the admin sees it.
    let output = owner.ok(&["add", "-p", GUN, "v2", path_arg(&file)]);
    assert!(output.combined().contains("Successfully published changes"), "{output}");
    let mut after = expected.clone();
    after.push(tufa_tests::flows::listed("v2", &file, "targets"));
    owner.set_auth(Some(("alice", PASSWORD)));
    assert_eq!(owner.list(GUN, None), sorted(&after));
}

/// Anonymous reads are refused until `anonymous` is granted reader on a pattern, and then work
/// for that pattern only; the health probe is always open.
fn anonymous_reads(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("alice", "admin", "tufa.test/*");
    let alice = fixture.notary("alice");
    let other = "tufa.test/private";
    alice.ok(&["init", "-p", GUN]);
    alice.ok(&["init", "-p", other]);
    let expected = vec![publish_target(&alice, GUN, "v1", b"public\n")];
    let server = &fixture.server;

    let health = server.get("/_notary_server/health");
    assert_eq!((health.status, health.body.as_slice()), (200, b"{}".as_slice()), "health is open: {health}");

    let anonymous = Notary::new(server, "anonymous");
    let output = anonymous.fails(&["list", GUN]);
    assert_not_authorized(&output, "an anonymous read before the grant");

    server.grant("anonymous", "reader", GUN);
    assert_eq!(anonymous.list(GUN, None), sorted(&expected), "anonymous reads after the grant");
    let output = anonymous.fails(&["list", other]);
    assert_not_authorized(&output, "an anonymous read of a repository outside the grant");
    let read = server.get(&format!("/v2/{GUN}/_trust/tuf/root.json"));
    assert_eq!(read.status, 200, "an anonymous GET after the grant: {read}");

    // Anonymous callers can only ever be readers.
    let refused = server.admin(&["grant", "anonymous", "publisher", "*"], b"");
    assert_eq!(refused.status.and_then(|status| status.code()), Some(2), "{refused}");
    let update = server.request("POST", &format!("/v2/{GUN}/_trust/tuf/"), None, Some(b"--x--\r\n".to_vec()));
    assert_refused(&update, &challenge(server, &format!("repository:{GUN}:pull,push"), None), "anonymous update");

    server.admin_ok(&["revoke", "anonymous", "reader", GUN], b"");
    let output = Notary::new(server, "anonymous-again").fails(&["list", GUN]);
    assert_not_authorized(&output, "an anonymous read after the revocation");
}

/// A deleted repository keeps a tombstone: a publisher's new root is refused, the old root key is
/// accepted, and an admin may re-create it with a new root.
fn tombstone_guards_recreation(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("alice", "admin", "tufa.test/*");
    fixture.user("bob", "publisher", "tufa.test/*");
    let mut alice = fixture.notary("alice");
    alice.ok(&["init", "-p", GUN]);
    let old_root = fixture.json(GUN, "root");
    alice.ok(&["delete", GUN, "--remote"]);
    let gone = fixture.state(GUN);
    assert!(gone.iter().all(|(status, _)| *status == 404), "the repository is deleted");

    let bob = fixture.notary("bob");
    let output = bob.fails(&["init", "-p", GUN]);
    assert!(
        output.combined().contains("unable to reach trust server at this time: 403"),
        "a publisher's new root for a tombstoned repository is refused:\n{output}"
    );
    fixture.assert_unchanged(GUN, &gone, "a publisher re-creating with a new root");

    // The same root key (alice's client) with only the publisher's credentials is accepted.
    alice.set_auth(Some(("bob", PASSWORD)));
    alice.ok(&["init", "-p", GUN]);
    let new_root = fixture.json(GUN, "root");
    assert_eq!(role_key_ids(&new_root, "root").len(), 1);
    assert_ne!(new_root["signed"], old_root["signed"], "a new root was published");
    publish_target(&alice, GUN, "v1", b"back\n");

    // An admin may re-create it with a root of its own.
    alice.set_auth(Some(("alice", PASSWORD)));
    alice.ok(&["delete", GUN, "--remote"]);
    let fresh_admin = fixture.notary("alice");
    fresh_admin.ok(&["init", "-p", GUN]);
    assert_ne!(role_key_ids(&fixture.json(GUN, "root"), "root"), role_key_ids(&new_root, "root"));
}

/// Revoking an API token or removing its owner takes effect at the next request.
fn revocation_is_immediate(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("alice", "admin", GUN);
    fixture.user("carol", "reader", GUN);
    let alice = fixture.notary("alice");
    alice.ok(&["init", "-p", GUN]);
    let server = &fixture.server;
    let path = format!("/v2/{GUN}/_trust/tuf/root.json");
    let pull = challenge(server, &format!("repository:{GUN}:pull"), Some("invalid_token"));

    let first = server.create_token("carol");
    let bearer = format!("Bearer {}", first.text);
    let basic = format!("Basic {}", basic_credentials("carol", &first.text));
    assert_eq!(server.get_with(&path, &bearer).status, 200, "an API token as a bearer token");
    assert_eq!(server.get_with(&path, &basic).status, 200, "an API token as the Basic password");
    assert_eq!(server.get_with("/auth/token?service=tufa", &basic).status, 200, "the token endpoint takes it");
    let via_cli = Notary::with_auth(server, "carol", "carol", &first.text);
    via_cli.list(GUN, None);

    server.admin_ok(&["token", "revoke", &first.id], b"");
    assert_refused(&server.get_with(&path, &bearer), &pull, "a revoked API token");
    assert_refused(&server.get_with(&path, &basic), &pull, "a revoked API token as the password");
    assert_eq!(server.get_with("/auth/token?service=tufa", &basic).status, 401, "the token endpoint refuses it");
    // (A client with a cache falls back to it when the server refuses; a fresh one has none.)
    let fresh = Notary::with_auth(server, "carol-fresh", "carol", &first.text);
    assert_bad_credentials(&fresh.fails(&["list", GUN]), "the CLI with a revoked API token");

    let second = server.create_token("carol");
    let bearer = format!("Bearer {}", second.text);
    assert_eq!(server.get_with(&path, &bearer).status, 200, "a new API token works");
    server.admin_ok(&["user", "remove", "carol"], b"");
    assert_refused(&server.get_with(&path, &bearer), &pull, "the API token of a removed user");
    let login = server.get_with("/auth/token?service=tufa", &format!("Basic {}", basic_credentials("carol", PASSWORD)));
    assert_eq!(login.status, 401, "a removed user cannot sign in: {login}");
}

/// The global changefeed shows a caller only the repositories it may read.
fn changefeed_is_filtered(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("alice", "admin", "tufa.test/*");
    let alice = fixture.notary("alice");
    let hidden = "tufa.test/hidden";
    alice.ok(&["init", "-p", GUN]);
    alice.ok(&["init", "-p", hidden]);
    fixture.server.admin_ok(&["user", "add", "dave", "--service"], b"");
    fixture.server.grant("dave", "reader", GUN);
    let dave = format!("Bearer {}", fixture.server.create_token("dave").text);

    let guns = |authorization: &str| -> BTreeSet<String> {
        let response = fixture.server.get_with("/v2/_trust/changefeed?change_id=0&records=100", authorization);
        assert_eq!(response.status, 200, "changefeed: {response}");
        let body = response.json();
        let records = body["records"].as_array().cloned().unwrap_or_default();
        assert_eq!(body["count"], records.len(), "count matches the records: {body}");
        records.iter().map(|record| record["GUN"].as_str().unwrap_or_default().to_owned()).collect()
    };
    assert_eq!(guns(&fixture.inspector), BTreeSet::from([GUN.to_owned(), hidden.to_owned()]));
    assert_eq!(guns(&dave), BTreeSet::from([GUN.to_owned()]), "dave sees only what he may read");

    let repository = fixture.server.get_with(&format!("/v2/{hidden}/_trust/changefeed"), &dave);
    assert_refused(
        &repository,
        &challenge(&fixture.server, &format!("repository:{hidden}:pull"), Some("insufficient_scope")),
        "another repository's changefeed",
    );
}

/// Ten wrong passwords lock the user name out: the eleventh attempt gets 429 even with the right
/// password.
fn failed_logins_are_rate_limited(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("erin", "reader", GUN);
    let server = &fixture.server;
    let path = format!("/auth/token?service=tufa&scope=repository:{GUN}:pull");
    let right = format!("Basic {}", basic_credentials("erin", PASSWORD));
    assert_eq!(server.get_with(&path, &right).status, 200, "the right password works at first");
    for attempt in 1..=10 {
        let response =
            server.get_with(&path, &format!("Basic {}", basic_credentials("erin", &format!("guess {attempt}"))));
        assert_eq!(response.status, 401, "wrong password {attempt}: {response}");
    }
    let locked = server.get_with(&path, &right);
    assert_eq!(locked.status, 429, "the 11th attempt is refused: {locked}");
    assert_eq!(locked.error_code().as_deref(), Some("TOOMANYREQUESTS"), "{locked}");
    // The lock lasts until the 5-minute failure window that began with the first failure ends.
    let retry_after: u64 = locked.header("retry-after").and_then(|value| value.parse().ok()).unwrap_or_default();
    assert!((240..=300).contains(&retry_after), "Retry-After {retry_after} is the rest of the window");
    // Only that user name is locked.
    fixture.user("frank", "reader", GUN);
    let other = server.get_with(&path, &format!("Basic {}", basic_credentials("frank", PASSWORD)));
    assert_eq!(other.status, 200, "another user still signs in: {other}");
}

/// The token endpoint's answers: Docker's GET with Basic credentials, the OAuth2 password grant
/// (POST), an API token as a bearer credential, anonymous requests, and refusals.
fn token_endpoint_answers(backend: Backend) {
    let fixture = Fixture::start(backend);
    fixture.user("alice", "publisher", GUN);
    let server = &fixture.server;
    let scope = format!("repository:{GUN}:pull,push,*");
    let claims = |token: &str| -> serde_json::Value {
        let part = token.split('.').nth(1).expect("a JWS has a payload");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url claims");
        serde_json::from_slice(&bytes).expect("JSON claims")
    };
    let granted = serde_json::json!([{"type": "repository", "name": GUN, "actions": ["pull", "push"]}]);

    let basic = format!("Basic {}", basic_credentials("alice", PASSWORD));
    let answer = server.get_with(&format!("/auth/token?service=tufa&scope={scope}"), &basic);
    assert_eq!(answer.status, 200, "{answer}");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let body = answer.json();
    assert_eq!(body["token"], body["access_token"], "{body}");
    assert_eq!(body["expires_in"], 300, "the default lifetime is 5 minutes: {body}");
    let token = body["token"].as_str().expect("a token");
    let claims_of_alice = claims(token);
    assert_eq!(claims_of_alice["sub"], "alice");
    assert_eq!(claims_of_alice["aud"], "tufa");
    assert_eq!(claims_of_alice["iss"], "tufa");
    assert_eq!(claims_of_alice["access"], granted, "a publisher gets pull and push, not *");
    let lifetime =
        claims_of_alice["exp"].as_i64().unwrap_or_default() - claims_of_alice["iat"].as_i64().unwrap_or_default();
    assert_eq!(lifetime, 300);

    let form = format!(
        "grant_type=password&username=alice&password={}&service=tufa&scope={}",
        PASSWORD.replace(' ', "+"),
        scope.replace(':', "%3A").replace(',', "%2C").replace('*', "%2A")
    );
    let oauth = server.request("POST", "/auth/token", None, Some(form.into_bytes()));
    assert_eq!(oauth.status, 200, "{oauth}");
    let body = oauth.json();
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(claims(body["access_token"].as_str().expect("an access token"))["access"], granted);

    let api_token = server.create_token("alice");
    let with_api_token =
        server.get_with(&format!("/auth/token?service=tufa&scope={scope}"), &format!("Bearer {}", api_token.text));
    assert_eq!(with_api_token.status, 200, "{with_api_token}");
    assert_eq!(claims(with_api_token.json()["token"].as_str().expect("a token"))["sub"], "alice");

    let anonymous = server.get(&format!("/auth/token?service=tufa&scope={scope}"));
    assert_eq!(anonymous.status, 200, "anonymous requests get a token without access: {anonymous}");
    let anonymous_claims = claims(anonymous.json()["token"].as_str().expect("a token"));
    assert_eq!(
        (anonymous_claims["sub"].clone(), anonymous_claims["access"].clone()),
        (serde_json::json!(""), serde_json::json!([]))
    );

    let wrong = server.get_with("/auth/token?service=tufa", &format!("Basic {}", basic_credentials("alice", "nope")));
    assert_eq!(wrong.status, 401, "{wrong}");
    assert_eq!(wrong.header("www-authenticate"), Some(format!("Basic realm=\"{}/auth/token\"", server.url()).as_str()));
    let unknown = server.get_with("/auth/token?service=elsewhere", &basic);
    assert_eq!((unknown.status, unknown.error_code().as_deref()), (400, Some("INVALID_REQUEST")), "{unknown}");
    let refresh =
        server.request("POST", "/auth/token", None, Some(b"grant_type=refresh_token&refresh_token=x".to_vec()));
    assert_eq!((refresh.status, refresh.error_code().as_deref()), (400, Some("UNSUPPORTED")), "{refresh}");
}

/// One `#[test]` per scenario and store.
macro_rules! per_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(#[test] fn $scenario() { super::$scenario(tufa_tests::tufa::Backend::Sqlite); })+
        }
        mod postgres {
            $(#[test] fn $scenario() { super::$scenario(tufa_tests::tufa::Backend::Postgres); })+
        }
    };
}

per_backend!(
    notary_flows_with_credentials,
    refusals_change_nothing,
    anonymous_reads,
    tombstone_guards_recreation,
    revocation_is_immediate,
    changefeed_is_filtered,
    failed_logins_are_rate_limited,
    token_endpoint_answers,
);
