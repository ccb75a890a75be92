//! Token mode (`--auth token`, notary-server's registry token auth) against a real token service:
//! a second tufa-server in builtin mode whose service name is the token-mode server's
//! `--auth-token-service`. The notary CLI signs in there with `NOTARY_AUTH`; hand-made tokens
//! (expired, wrong issuer, wrong audience, an untrusted CA, another repository's scope) are refused
//! with the right challenge and change nothing. Once on SQLite and once on PostgreSQL.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tufa_auth::{Access, TokenIssuer, generate_ca, generate_signing, pem};
use tufa_tests::flows::{
    RELEASES, delegation_key, init_with_server_snapshot, path_arg, publish_delegated, publish_target, role_key_ids,
    sorted, version,
};
use tufa_tests::notary::Notary;
use tufa_tests::process::CommandOutput;
use tufa_tests::server::HttpResponse;
use tufa_tests::tufa::{AuthServer, Backend, start_builtin, start_with_auth};

/// The token-mode server's service name, which its tokens' `aud` must be.
const SERVICE: &str = "trust.tufa.test";

/// The token service's issuer name.
const ISSUER: &str = "tufa-token-service";

/// The repository the scenarios work on.
const GUN: &str = "tufa.test/app";

/// The password of every test user.
const PASSWORD: &str = "correct horse battery staple";

/// The metadata files compared before and after a refused request.
const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// A test CA the token-mode server also trusts, to make tokens with chosen claims.
struct Minter {
    key: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

impl Minter {
    fn new() -> Minter {
        let now = SystemTime::now();
        let (ca_key, ca) = generate_ca(now).expect("generate a test token CA");
        let (key, leaf) = generate_signing(&ca_key, &ca, now).expect("generate a test signing certificate");
        Minter { key: key.to_vec(), chain: vec![leaf, ca] }
    }

    /// The CA certificate as PEM.
    fn ca_pem(&self) -> String {
        pem(&self.chain[1])
    }

    /// A token from `issuer` for `audience` with `access`, issued at `issued` for `ttl`.
    fn token(&self, issuer: &str, audience: &str, access: &[Access], issued: SystemTime, ttl: Duration) -> String {
        let minter = TokenIssuer::new(&self.key, self.chain.clone(), issuer.to_owned()).expect("a token issuer");
        minter.issue("mallory", audience, access, issued, ttl).expect("issue a token").token
    }

    /// A valid token for the trust server granting `actions` on `gun`.
    fn valid(&self, gun: &str, actions: &[&str]) -> String {
        let access = [Access::new("repository", gun, actions)];
        self.token(ISSUER, SERVICE, &access, SystemTime::now(), Duration::from_secs(300))
    }
}

/// The builtin token service and the token-mode trust server that relies on it.
struct Stack {
    // Field order: the trust server stops before the token service (whose directory holds the
    // bundles the trust server reads).
    trust: AuthServer,
    tokens: AuthServer,
    minter: Minter,
    /// Both servers' TLS CAs, for clients that talk to both.
    clients_ca: PathBuf,
}

impl Stack {
    fn start(backend: Backend) -> Stack {
        let tokens = start_builtin(backend, &["--auth-builtin-service", SERVICE, "--auth-builtin-issuer", ISSUER]);
        let bundle = tokens.admin_ok(&["token-signer", "bundle"], b"").stdout;
        let served = tokens.get("/auth/certs");
        assert_eq!(served.status, 200, "GET /auth/certs: {served}");
        assert_eq!(String::from_utf8_lossy(&served.body), bundle, "/auth/certs serves the admin command's bundle");
        let minter = Minter::new();
        let bundle_file = tokens.dir().join("token-bundle.pem");
        fs::write(&bundle_file, format!("{bundle}{}", minter.ca_pem())).expect("write the token root bundle");
        let trust = start_with_auth(
            backend,
            "tufa-server token",
            vec![
                "--auth".into(),
                "token".into(),
                "--auth-token-realm".into(),
                format!("{}/auth/token", tokens.url()),
                "--auth-token-service".into(),
                SERVICE.into(),
                "--auth-token-issuer".into(),
                ISSUER.into(),
                "--auth-token-rootcertbundle".into(),
                bundle_file.to_str().expect("UTF-8 path").into(),
            ],
        );
        let clients_ca = tokens.dir().join("clients-ca.pem");
        let cas = [trust.ca_cert(), tokens.ca_cert()].map(|path| fs::read_to_string(path).expect("read a TLS CA"));
        fs::write(&clients_ca, cas.concat()).expect("write the clients' CA bundle");
        Stack { trust, tokens, minter, clients_ca }
    }

    /// A user of the token service with one role.
    fn user(&self, name: &str, role: &str, pattern: &str) {
        self.tokens.add_user(name, PASSWORD);
        self.tokens.grant(name, role, pattern);
    }

    /// A notary client of the trust server signing in at the token service as `user`.
    fn notary(&self, name: &str, user: &str, password: &str) -> Notary {
        let mut notary = Notary::for_url(self.trust.url(), &self.clients_ca, name);
        notary.set_auth(Some((user, password)));
        notary
    }

    /// `GET /v2/<gun>/_trust/tuf/<file>` on the trust server with a valid pull token.
    fn metadata(&self, gun: &str, file: &str) -> HttpResponse {
        let token = self.minter.valid(gun, &["pull"]);
        self.trust.get_with(&format!("/v2/{gun}/_trust/tuf/{file}"), &format!("Bearer {token}"))
    }

    fn state(&self, gun: &str) -> Vec<(u16, Vec<u8>)> {
        ROLES
            .iter()
            .map(|role| self.metadata(gun, &format!("{role}.json")))
            .map(|response| (response.status, response.body))
            .collect()
    }

    fn json(&self, gun: &str, role: &str) -> serde_json::Value {
        let response = self.metadata(gun, &format!("{role}.json"));
        assert_eq!(response.status, 200, "GET {role}.json of {gun}: {response}");
        response.json()
    }

    #[track_caller]
    fn assert_unchanged(&self, gun: &str, before: &[(u16, Vec<u8>)], what: &str) {
        assert!(self.state(gun) == before, "{what} changed the metadata of {gun}");
    }

    /// The challenge the trust server answers a refused request with.
    fn challenge(&self, scope: &str, error: Option<&str>) -> String {
        let mut text =
            format!("Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\",scope=\"{scope}\"", self.tokens.url());
        if let Some(error) = error {
            text.push_str(&format!(",error=\"{error}\""));
        }
        text
    }
}

/// A 401 with exactly `expected` as its challenge and distribution's `UNAUTHORIZED` error.
#[track_caller]
fn assert_refused(response: &HttpResponse, expected: &str, what: &str) {
    assert_eq!(response.status, 401, "{what}: {response}");
    assert_eq!(response.header("www-authenticate"), Some(expected), "{what}: challenge");
    assert_eq!(response.error_code().as_deref(), Some("UNAUTHORIZED"), "{what}: {response}");
}

/// A failed notary command that reports the trust server's refusal.
#[track_caller]
fn assert_not_authorized(output: &CommandOutput, what: &str) {
    assert!(
        output.combined().contains("you are not authorized to perform this operation"),
        "{what}: the CLI reports the refusal:\n{output}"
    );
}

/// Init, server-held snapshot key (a rotation, which needs `*`), publish, delegation to a publisher
/// signing in with an API token, reads by a reader, a reader's refused publish, delete.
fn notary_flows_through_the_token_service(backend: Backend) {
    let stack = Stack::start(backend);
    stack.user("alice", "admin", "tufa.test/*");
    stack.user("bob", "publisher", GUN);
    stack.user("rita", "reader", GUN);
    let bob_token = stack.tokens.create_token("bob");
    let mut alice = stack.notary("alice", "alice", PASSWORD);
    let bob = stack.notary("bob", "bob", &bob_token.text);

    init_with_server_snapshot(&alice, GUN);
    let mut expected = vec![publish_target(&alice, GUN, "v1", b"one\n")];
    let key = delegation_key(&bob);
    alice.ok(&["delegation", "add", "-p", GUN, RELEASES, path_arg(&key.cert), "--all-paths"]);
    expected.push(publish_delegated(&bob, GUN, "v2", b"two\n", RELEASES));
    assert_eq!(alice.list(GUN, None), sorted(&expected));
    let rita = stack.notary("rita", "rita", PASSWORD);
    assert_eq!(rita.list(GUN, None), sorted(&expected), "a reader reads");

    let root_before = stack.json(GUN, "root");
    alice.ok(&["key", "rotate", GUN, "timestamp", "-r"]);
    let root_after = stack.json(GUN, "root");
    assert_eq!(version(&root_after), version(&root_before) + 1);
    assert_ne!(role_key_ids(&root_after, "timestamp"), role_key_ids(&root_before, "timestamp"));

    // The owner's client (holding the keys) with the reader's or the publisher's credentials.
    let before = stack.state(GUN);
    assert!(before.iter().all(|(status, _)| *status == 200), "the inspector reads every role");
    let file = alice.write_file("v3.bin", b"three\n");
    alice.set_auth(Some(("rita", PASSWORD)));
    assert_not_authorized(&alice.fails(&["add", "-p", GUN, "v3", path_arg(&file)]), "a reader publishing");
    stack.assert_unchanged(GUN, &before, "a reader publishing");
    alice.set_auth(Some(("bob", &bob_token.text)));
    assert_not_authorized(&alice.fails(&["key", "rotate", GUN, "snapshot", "-r"]), "a publisher rotating");
    stack.assert_unchanged(GUN, &before, "a publisher rotating");
    assert_not_authorized(&alice.fails(&["delete", GUN, "--remote"]), "a publisher deleting");
    stack.assert_unchanged(GUN, &before, "a publisher deleting");
    alice.set_auth(None);
    assert_not_authorized(&alice.fails(&["publish", GUN]), "publishing without credentials");
    stack.assert_unchanged(GUN, &before, "publishing without credentials");

    alice.set_auth(Some(("alice", PASSWORD)));
    alice.ok(&["delete", GUN, "--remote"]);
    for (status, _) in stack.state(GUN) {
        assert_eq!(status, 404, "the repository is deleted");
    }
}

/// Hand-made tokens: each flaw is refused with the exact challenge, and nothing changes.
fn crafted_tokens_are_refused(backend: Backend) {
    let stack = Stack::start(backend);
    stack.user("alice", "admin", "tufa.test/*");
    let alice = stack.notary("alice", "alice", PASSWORD);
    alice.ok(&["init", "-p", GUN]);
    let before = stack.state(GUN);
    assert!(before.iter().all(|(status, _)| *status == 200), "the inspector reads every role");
    let trust = &stack.trust;
    let root = format!("/v2/{GUN}/_trust/tuf/root.json");
    let pull = format!("repository:{GUN}:pull");
    let bearer = |token: &str| format!("Bearer {token}");
    let minter = &stack.minter;
    let now = SystemTime::now();
    let pull_access = [Access::new("repository", GUN, &["pull"])];

    // The control: a valid token reads.
    assert_eq!(trust.get_with(&root, &bearer(&minter.valid(GUN, &["pull"]))).status, 200, "a valid token");

    assert_refused(&trust.get(&root), &stack.challenge(&pull, None), "no token");
    let ping = trust.get("/v2/");
    assert_refused(&ping, &stack.challenge("registry:catalog:*", None), "no token for GET /v2/");
    let invalid = stack.challenge(&pull, Some("invalid_token"));
    let hour_ago = now - Duration::from_secs(3600);
    let cases = [
        ("an expired token", minter.token(ISSUER, SERVICE, &pull_access, hour_ago, Duration::from_secs(60))),
        (
            "a token from another issuer",
            minter.token("someone-else", SERVICE, &pull_access, now, Duration::from_secs(300)),
        ),
        (
            "a token for another audience",
            minter.token(ISSUER, "registry.tufa.test", &pull_access, now, Duration::from_secs(300)),
        ),
        ("a token signed by an untrusted CA", Minter::new().valid(GUN, &["pull"])),
        ("a malformed token", "not.a.token".to_owned()),
    ];
    for (what, token) in &cases {
        assert_refused(&trust.get_with(&root, &bearer(token)), &invalid, what);
    }
    assert_refused(
        &trust.get_with(&root, &format!("Basic {}", tufa_tests::notary::basic_credentials("alice", PASSWORD))),
        &invalid,
        "Basic credentials instead of a token",
    );

    let insufficient = |scope: &str| stack.challenge(scope, Some("insufficient_scope"));
    let other = minter.valid("tufa.test/other", &["*"]);
    assert_refused(&trust.get_with(&root, &bearer(&other)), &insufficient(&pull), "another repository's scope");
    let reader = bearer(&minter.valid(GUN, &["pull"]));
    let update = trust.request("POST", &format!("/v2/{GUN}/_trust/tuf/"), Some(&reader), Some(b"--x--\r\n".to_vec()));
    assert_refused(&update, &insufficient(&format!("repository:{GUN}:pull,push")), "an update with a pull token");
    let publisher = bearer(&minter.valid(GUN, &["push", "pull"]));
    let delete = trust.request("DELETE", &format!("/v2/{GUN}/_trust/tuf/"), Some(&publisher), None);
    assert_refused(&delete, &insufficient(&format!("repository:{GUN}:*")), "a delete with a push token");
    let rotate = trust.request("POST", &format!("/v2/{GUN}/_trust/tuf/snapshot.key"), Some(&publisher), None);
    assert_refused(&rotate, &insufficient(&format!("repository:{GUN}:*")), "a key rotation with a push token");
    // A token the token service issued works here for the repository it was asked for only.
    let alice_basic = format!("Basic {}", tufa_tests::notary::basic_credentials("alice", PASSWORD));
    let issued = |scope: &str| -> String {
        let response = stack.tokens.get_with(&format!("/auth/token?service={SERVICE}&scope={scope}"), &alice_basic);
        assert_eq!(response.status, 200, "token for {scope}: {response}");
        response.json()["token"].as_str().expect("a token").to_owned()
    };
    assert_eq!(trust.get_with(&root, &bearer(&issued(&pull))).status, 200, "an issued pull token");
    let elsewhere = issued("repository:tufa.test/other:pull");
    assert_refused(
        &trust.get_with(&root, &bearer(&elsewhere)),
        &insufficient(&pull),
        "an issued token for another repository",
    );
    stack.assert_unchanged(GUN, &before, "the refused requests");
    let health = trust.get("/_notary_server/health");
    assert_eq!(health.status, 200, "health is open: {health}");
}

/// In token mode clients never ask for `*` to init, so even an admin's new root for a deleted
/// repository is refused until `admin tombstone clear`; the old root key is accepted.
fn tombstone_needs_an_admin_clear(backend: Backend) {
    let stack = Stack::start(backend);
    stack.user("alice", "admin", "tufa.test/*");
    stack.user("bob", "publisher", "tufa.test/*");
    let mut owner = stack.notary("alice", "alice", PASSWORD);
    owner.ok(&["init", "-p", GUN]);
    owner.ok(&["delete", GUN, "--remote"]);
    let gone = stack.state(GUN);
    assert!(gone.iter().all(|(status, _)| *status == 404), "the repository is deleted");

    for (name, user) in [("bob", "bob"), ("alice-new-root", "alice")] {
        let output = stack.notary(name, user, PASSWORD).fails(&["init", "-p", GUN]);
        assert!(
            output.combined().contains("unable to reach trust server at this time: 403"),
            "{name}: a new root for a tombstoned repository is refused:\n{output}"
        );
        stack.assert_unchanged(GUN, &gone, "a new root for a tombstoned repository");
    }

    // The old root key with a publisher's credentials is accepted.
    owner.set_auth(Some(("bob", PASSWORD)));
    owner.ok(&["init", "-p", GUN]);
    let kept_root = role_key_ids(&stack.json(GUN, "root"), "root");
    owner.set_auth(Some(("alice", PASSWORD)));
    owner.ok(&["delete", GUN, "--remote"]);

    let cleared = stack.trust.admin_ok(&["tombstone", "clear", GUN], b"");
    assert_eq!(cleared.stdout.trim(), format!("cleared the tombstone of {GUN}"));
    let bob = stack.notary("bob-after-clear", "bob", PASSWORD);
    bob.ok(&["init", "-p", GUN]);
    assert_ne!(role_key_ids(&stack.json(GUN, "root"), "root"), kept_root, "bob's own root");
    publish_target(&bob, GUN, "v1", b"bob's\n");
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

per_backend!(notary_flows_through_the_token_service, crafted_tokens_are_refused, tombstone_needs_an_admin_clear);
