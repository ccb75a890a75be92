//! In-process tests of the builtin auth mode: the real router, a real SQLite store with principals,
//! API tokens and role bindings, the real token service and its keys. Every refusal is checked for
//! its exact status and challenge, and for changing nothing.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

#[path = "../../core/tests/support/repo.rs"]
mod repo;
#[path = "support/router.rs"]
mod router;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use chrono::Utc;
use repo::{GUN, Key, Repo, no_delegations, sign, target};
use router::{Reply, multipart, send};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tufa_core::keys::{Algorithm, PublicKey};
use tufa_core::update::Limits;
use tufa_server::app::{AppState, HttpSettings, router};
use tufa_server::auth::{Authenticator, Builtin};
use tufa_server::config::{BuiltinAuthConfig, RegistryService};
use tufa_server::metrics::Metrics;
use tufa_server::service::{Service, ServiceSettings};
use tufa_server::signing::{LocalSigner, SealingKey};
use tufa_store::{ApiToken, Principal, PrincipalKind, Store};

const REALM: &str = "https://tufa.test/auth/token";

struct Harness {
    app: Router,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

/// The claims of the token in a token-endpoint answer.
fn token_claims(reply: &Reply) -> Value {
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The `Authorization` value for the token in a token-endpoint answer.
fn bearer(reply: &Reply) -> String {
    format!("Bearer {}", reply.json()["token"].as_str().unwrap())
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = tufa_store::open_sqlite(&dir.path().join("tufa.db")).await.unwrap();
    let signer = Arc::new(LocalSigner::new(store.clone(), SealingKey::new("test".into(), &[9; 32]).unwrap()));
    let config = BuiltinAuthConfig {
        service: "tufa".into(),
        issuer: "tufa-test".into(),
        public_url: "https://tufa.test".into(),
        realm: REALM.into(),
        token_ttl: Duration::from_secs(300),
        registries: vec![RegistryService { service: "registry".into(), host: "reg.example.com".into() }],
    };
    let builtin =
        Builtin::start(config, store.clone(), SealingKey::new("test".into(), &[9; 32]).unwrap()).await.unwrap();
    let state = AppState {
        service: Service::new(
            store.clone(),
            signer,
            ServiceSettings { key_algorithm: Algorithm::Ecdsa, limits: Limits::default() },
        ),
        http: Arc::new(HttpSettings::default()),
        metrics: Arc::new(Metrics::default()),
        auth: Arc::new(Authenticator::Builtin(Arc::new(builtin))),
    };
    Harness { app: router(state), store, _dir: dir }
}

impl Harness {
    async fn call(&self, method: Method, path: &str, auth: Option<&str>, body: Option<(String, Vec<u8>)>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let body = match body {
            Some((content_type, body)) => {
                builder = builder.header("content-type", content_type);
                Body::from(body)
            }
            None => Body::empty(),
        };
        send(&self.app, builder.body(body).unwrap()).await
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call(Method::GET, path, auth, None).await
    }

    async fn token(&self, query: &str, auth: Option<&str>) -> Reply {
        self.get(&format!("/auth/token?{query}"), auth).await
    }

    async fn add_user(&self, name: &str, password: &str) {
        let hash = tufa_auth::hash_password(password).unwrap();
        let principal = Principal {
            name: name.into(),
            kind: PrincipalKind::User,
            password_hash: Some(hash),
            created_at: Utc::now(),
        };
        self.store.add_principal(&principal, &test_change()).await.unwrap();
    }

    async fn grant(&self, principal: &str, role: &str, pattern: &str) {
        assert!(self.store.add_binding(principal, role, pattern, &test_change()).await.unwrap());
    }

    /// A fresh API token for `principal`; returns (id, text).
    async fn api_token(&self, principal: &str) -> (String, String) {
        let (id, text, secret_hash) = tufa_auth::ApiTokenSecret::generate().unwrap();
        let token = ApiToken {
            id: id.clone(),
            principal: principal.into(),
            secret_hash,
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
        };
        self.store.insert_api_token(&token, &test_change()).await.unwrap();
        (id, text.to_string())
    }

    /// A token from the token endpoint for `user` with the given scope.
    async fn token_for(&self, user: &str, password: &str, scope: &str) -> String {
        let reply = self.token(&format!("service=tufa&scope={scope}"), Some(&basic(user, password))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        bearer(&reply)
    }

    async fn server_key(&self, gun: &str, role: &str, auth: &str) -> PublicKey {
        let reply = self.get(&format!("/v2/{gun}/_trust/tuf/{role}.key"), Some(auth)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        PublicKey::from_json(&reply.json()).unwrap()
    }

    /// Publishes root, targets and snapshot of `repo` for `gun` (the server holds the timestamp key).
    async fn publish(&self, gun: &str, repo: &Repo, auth: &str) -> Reply {
        let timestamp = self.server_key(gun, "timestamp", auth).await;
        let mut body = repo.root_body(1);
        body["keys"][timestamp.key_id()] = timestamp.to_json();
        body["roles"]["timestamp"] = json!({"keyids": [timestamp.key_id()], "threshold": 1});
        let root = sign(&body, &[&repo.root_key]);
        let targets = repo.targets(2, json!({"v1": target(b"hello")}), no_delegations());
        let snapshot = repo.snapshot(2, &[("root", &root), ("targets", &targets)]);
        let (content_type, payload) =
            multipart(&[("root", root.as_slice()), ("targets", targets.as_slice()), ("snapshot", snapshot.as_slice())]);
        self.call(Method::POST, &format!("/v2/{gun}/_trust/tuf/"), Some(auth), Some((content_type, payload))).await
    }
}

/// A repository whose root certificate is made for `gun`.
fn repo_for(gun: &str) -> Repo {
    let mut repo = Repo::new();
    repo.root_key = Key::root(gun);
    repo
}

#[tokio::test]
async fn requests_without_credentials_get_the_challenge_and_probes_stay_open() {
    let harness = harness().await;
    let reply = harness.get("/v2/", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge(), format!("Bearer realm=\"{REALM}\",service=\"tufa\",scope=\"registry:catalog:*\""));
    let reply = harness.get(&format!("/v2/{GUN}/_trust/tuf/root.json"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge(), format!("Bearer realm=\"{REALM}\",service=\"tufa\",scope=\"repository:{GUN}:pull\""));
    assert_eq!(
        reply.json(),
        json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
            "detail": [{"Type": "repository", "Class": "", "Name": GUN, "Action": "pull"}]}]})
    );
    // The same answer whether or not the repository exists: nothing is revealed.
    let missing = harness.get("/v2/nobody.example/none/_trust/tuf/root.json", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(harness.get("/_notary_server/health", None).await.status, StatusCode::OK);
    assert_eq!(harness.get("/metrics", Some("Bearer garbage")).await.status, StatusCode::OK);
    // A malformed or foreign bearer token is an invalid token.
    let reply = harness.get("/v2/", Some("Bearer not.a.jwt")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.challenge(),
        format!("Bearer realm=\"{REALM}\",service=\"tufa\",scope=\"registry:catalog:*\",error=\"invalid_token\"")
    );
    // A password is never checked outside the token endpoint.
    harness.add_user("alice", "alice-password").await;
    let reply = harness.get("/v2/", Some(&basic("alice", "alice-password"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().ends_with(",error=\"invalid_token\""), "{}", reply.challenge());
}

#[tokio::test]
async fn the_token_endpoint_grants_what_roles_allow_and_answers_anonymous_requests() {
    let harness = harness().await;
    harness.add_user("alice", "alice-password").await;
    harness.grant("alice", "publisher", "example.com/*").await;
    harness.grant("anonymous", "reader", "public/*").await;
    let scope = "service=tufa&scope=repository:example.com/app:pull,push,*&scope=repository:other.com/x:pull\
                 &scope=repository:public/app:pull";
    let reply = harness.token(scope, Some(&basic("alice", "alice-password"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["expires_in"], json!(300));
    let claims = token_claims(&reply);
    assert_eq!(claims["iss"], json!("tufa-test"));
    assert_eq!(claims["sub"], json!("alice"));
    assert_eq!(claims["aud"], json!("tufa"));
    assert_eq!(
        claims["access"],
        json!([
            {"type": "repository", "name": "example.com/app", "actions": ["pull", "push"]},
            {"type": "repository", "name": "public/app", "actions": ["pull"]},
        ])
    );
    // Anonymous: 200 and only the anonymous grants (the notary CLI asks anonymously first).
    let reply = harness.token(scope, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(token_claims(&reply)["sub"], json!(""));
    assert_eq!(
        token_claims(&reply)["access"],
        json!([{"type": "repository", "name": "public/app", "actions": ["pull"]}])
    );
    // Wrong credentials: 401 with a Basic challenge.
    let reply = harness.token(scope, Some(&basic("alice", "wrong"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge(), format!("Basic realm=\"{REALM}\""));
    let reply = harness.token(scope, Some(&basic("mallory", "anything"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Bad requests: an unknown service, a malformed scope.
    let reply = harness.token("service=elsewhere", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["errors"][0]["message"], json!("unknown service \"elsewhere\""));
    let reply = harness.token("service=tufa&scope=repository", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["errors"][0]["code"], json!("INVALID_REQUEST"));
}

#[tokio::test]
async fn registry_scopes_are_matched_with_the_registry_host_prefixed() {
    let harness = harness().await;
    harness.add_user("alice", "alice-password").await;
    harness.grant("alice", "publisher", "reg.example.com/team/*").await;
    let query = "service=registry&scope=repository:team/app:pull,push&scope=repository:other/app:pull\
                 &scope=registry:catalog:*";
    let reply = harness.token(query, Some(&basic("alice", "alice-password"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let claims = token_claims(&reply);
    assert_eq!(claims["aud"], json!("registry"));
    assert_eq!(claims["access"], json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]));
    // A registry token is not a trust-server token.
    let reply = harness.get("/v2/", Some(&bearer(&reply))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().ends_with(",error=\"invalid_token\""), "{}", reply.challenge());
}

#[tokio::test]
async fn a_publisher_publishes_but_may_neither_delete_nor_rotate() {
    let harness = harness().await;
    harness.add_user("pat", "pat-password").await;
    harness.grant("pat", "publisher", "example.com/*").await;
    let publish = harness.token_for("pat", "pat-password", &format!("repository:{GUN}:pull,push")).await;
    let reply = harness.publish(GUN, &Repo::new(), &publish).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let before = harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json"), Some(&publish)).await;
    assert_eq!(before.status, StatusCode::OK);
    // The CLI asks for `*` to delete; a publisher's token holds only pull,push.
    let token = harness.token_for("pat", "pat-password", &format!("repository:{GUN}:*")).await;
    for (method, path) in [
        (Method::DELETE, format!("/v2/{GUN}/_trust/tuf/")),
        (Method::POST, format!("/v2/{GUN}/_trust/tuf/snapshot.key")),
    ] {
        let reply = harness.call(method, &path, Some(&token), None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.challenge(),
            format!(
                "Bearer realm=\"{REALM}\",service=\"tufa\",scope=\"repository:{GUN}:*\",error=\"insufficient_scope\""
            )
        );
    }
    let after = harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json"), Some(&publish)).await;
    assert_eq!(after.body, before.body);
    // A reader may read but not publish.
    harness.add_user("rita", "rita-password").await;
    harness.grant("rita", "reader", "example.com/*").await;
    let token = harness.token_for("rita", "rita-password", &format!("repository:{GUN}:pull,push")).await;
    assert_eq!(harness.get(&format!("/v2/{GUN}/_trust/tuf/targets.json"), Some(&token)).await.status, StatusCode::OK);
    let reply = harness.get(&format!("/v2/{GUN}/_trust/tuf/timestamp.key"), Some(&token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_tokens_work_as_bearer_and_basic_and_stop_at_once_when_revoked_or_removed() {
    let harness = harness().await;
    harness.add_user("ci", "ci-password").await;
    harness.grant("ci", "reader", "*").await;
    let (id, text) = harness.api_token("ci").await;
    let path = "/v2/_trust/changefeed?records=10";
    assert_eq!(harness.get(path, Some(&format!("Bearer {text}"))).await.status, StatusCode::OK);
    assert_eq!(harness.get(path, Some(&basic("ci", &text))).await.status, StatusCode::OK);
    // Another user's name with this token is refused.
    assert_eq!(harness.get(path, Some(&basic("someone", &text))).await.status, StatusCode::UNAUTHORIZED);
    // At the token endpoint too, as the password and as a bearer token.
    let reply = harness.token("scope=repository:a/b:pull", Some(&basic("ci", &text))).await;
    assert_eq!(token_claims(&reply)["sub"], json!("ci"));
    let reply = harness.token("scope=repository:a/b:pull", Some(&format!("Bearer {text}"))).await;
    assert_eq!(token_claims(&reply)["access"], json!([{"type": "repository", "name": "a/b", "actions": ["pull"]}]));
    // A wrong secret for a real id is refused.
    let forged = format!("{}{}", &text[..text.len() - 2], if text.ends_with("AA") { "BA" } else { "AA" });
    assert_eq!(harness.get(path, Some(&format!("Bearer {forged}"))).await.status, StatusCode::UNAUTHORIZED);
    assert!(harness.store.revoke_api_token(&id, Utc::now(), &test_change()).await.unwrap());
    let reply = harness.get(path, Some(&format!("Bearer {text}"))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().ends_with(",error=\"invalid_token\""));
    let (_, second) = harness.api_token("ci").await;
    assert_eq!(harness.get(path, Some(&format!("Bearer {second}"))).await.status, StatusCode::OK);
    assert!(harness.store.remove_principal("ci", &test_change()).await.unwrap());
    assert_eq!(harness.get(path, Some(&format!("Bearer {second}"))).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_logins_are_limited_per_user() {
    let harness = harness().await;
    harness.add_user("alice", "alice-password").await;
    for _ in 0..tufa_server::auth::login::MAX_FAILURES_PER_USER_AND_ADDRESS {
        let reply = harness.token("scope=repository:a/b:pull", Some(&basic("alice", "guess"))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = harness.token("scope=repository:a/b:pull", Some(&basic("alice", "alice-password"))).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // Its API tokens keep working, and another user is not affected.
    let (_, token) = harness.api_token("alice").await;
    let reply = harness.token("scope=repository:a/b:pull", Some(&basic("alice", &token))).await;
    assert_eq!(reply.status, StatusCode::OK);
    harness.add_user("bob", "bob-password").await;
    let reply = harness.token("scope=repository:a/b:pull", Some(&basic("bob", "bob-password"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Concurrent guesses cannot slip under the limit together: attempts count before they are checked.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let app = harness.app.clone();
        let request = Request::get("/auth/token").header("authorization", basic("bob", "guess")).body(Body::empty());
        attempts.spawn(async move { app.oneshot(request.unwrap()).await.unwrap().status() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = attempts.join_next().await {
        statuses.push(status.unwrap());
    }
    let refused = statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count();
    let failed = statuses.iter().filter(|status| **status == StatusCode::UNAUTHORIZED).count();
    assert_eq!((failed, refused), (10, 20));
}

#[tokio::test]
async fn the_global_changefeed_shows_only_readable_repositories() {
    let harness = harness().await;
    harness.add_user("root", "root-password").await;
    harness.grant("root", "admin", "*").await;
    let other = "other.com/app";
    let everything = harness
        .token_for(
            "root",
            "root-password",
            &format!("repository:{GUN}:pull,push+repository:{other}:pull,push+registry:catalog:*"),
        )
        .await;
    assert_eq!(harness.publish(GUN, &Repo::new(), &everything).await.status, StatusCode::OK);
    assert_eq!(harness.publish(other, &repo_for(other), &everything).await.status, StatusCode::OK);
    harness.add_user("rita", "rita-password").await;
    harness.grant("rita", "reader", "example.com/*").await;
    let token = harness.token_for("rita", "rita-password", "registry:catalog:*").await;
    let reply = harness.get("/v2/_trust/changefeed?records=10", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let records = reply.json()["records"].clone();
    let guns: Vec<Value> = records.as_array().unwrap().iter().map(|record| record["GUN"].clone()).collect();
    assert_eq!(guns, vec![json!(GUN)]);
    let all = harness.get("/v2/_trust/changefeed?records=10", Some(&everything)).await.json();
    assert_eq!(all["count"], json!(2));
}

#[tokio::test]
async fn a_deleted_repository_is_re_created_only_by_its_root_keys_or_an_admin() {
    let harness = harness().await;
    harness.add_user("ada", "ada-password").await;
    harness.grant("ada", "admin", "example.com/*").await;
    harness.add_user("pat", "pat-password").await;
    harness.grant("pat", "publisher", "example.com/*").await;
    let admin = harness.token_for("ada", "ada-password", &format!("repository:{GUN}:*")).await;
    let publisher = harness.token_for("pat", "pat-password", &format!("repository:{GUN}:pull,push")).await;
    let owner = Repo::new();
    assert_eq!(harness.publish(GUN, &owner, &admin).await.status, StatusCode::OK);
    let reply = harness.call(Method::DELETE, &format!("/v2/{GUN}/_trust/tuf/"), Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(harness.store.tombstone(GUN).await.unwrap().is_some());
    // A publisher with a new root key: refused, nothing stored.
    let reply = harness.publish(GUN, &Repo::new(), &publisher).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["errors"][0]["code"], json!("DENIED"));
    assert!(harness.store.current_all(GUN).await.unwrap().is_empty());
    // The same publisher with the deleted root's key: accepted, and the tombstone is gone.
    let mut continued = Repo::new();
    continued.root_key = owner.root_key.reissued(GUN);
    let reply = harness.publish(GUN, &continued, &publisher).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert!(harness.store.tombstone(GUN).await.unwrap().is_none());
    // After another delete, an admin may re-create it with any root.
    assert_eq!(
        harness.call(Method::DELETE, &format!("/v2/{GUN}/_trust/tuf/"), Some(&admin), None).await.status,
        StatusCode::OK
    );
    assert_eq!(harness.publish(GUN, &Repo::new(), &admin).await.status, StatusCode::OK);
}

/// A token service for token mode: a CA, a signing key it certifies, and an issuer name.
struct TokenService {
    ca_pem: String,
    key: Vec<u8>,
    chain: Vec<Vec<u8>>,
    issuer: tufa_auth::issue::TokenIssuer,
}

impl TokenService {
    fn new(issuer: &str) -> Self {
        let now = std::time::SystemTime::now();
        let (ca_key, ca) = tufa_auth::generate_ca(now).unwrap();
        let (key, leaf) = tufa_auth::generate_signing(&ca_key, &ca, now).unwrap();
        let ca_pem = tufa_auth::pem(&ca);
        let chain = vec![leaf, ca];
        let issuer = tufa_auth::issue::TokenIssuer::new(&key, chain.clone(), issuer.into()).unwrap();
        Self { ca_pem, key: key.to_vec(), chain, issuer }
    }

    /// The same keys under another issuer name.
    fn renamed(&self, issuer: &str) -> Self {
        let renamed = tufa_auth::issue::TokenIssuer::new(&self.key, self.chain.clone(), issuer.into()).unwrap();
        Self { ca_pem: self.ca_pem.clone(), key: self.key.clone(), chain: self.chain.clone(), issuer: renamed }
    }

    fn bearer(&self, audience: &str, access: &[tufa_auth::Access], issued: std::time::SystemTime) -> String {
        let token = self.issuer.issue("alice", audience, access, issued, Duration::from_secs(300)).unwrap();
        format!("Bearer {}", token.token)
    }
}

async fn token_mode_harness(service: &TokenService) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = tufa_store::open_sqlite(&dir.path().join("tufa.db")).await.unwrap();
    let signer = Arc::new(LocalSigner::new(store.clone(), SealingKey::new("test".into(), &[9; 32]).unwrap()));
    let verifier = tufa_auth::TokenVerifier::new(tufa_auth::TokenSettings {
        issuer: "auth.test".into(),
        service: "notary.test".into(),
        root_certificates: service.ca_pem.clone().into_bytes(),
    })
    .unwrap();
    let config = tufa_server::config::TokenAuthConfig {
        realm: "https://auth.test/token".into(),
        service: "notary.test".into(),
        issuer: "auth.test".into(),
        root_cert_bundle: dir.path().join("unused.pem"),
    };
    let state = AppState {
        service: Service::new(
            store.clone(),
            signer,
            ServiceSettings { key_algorithm: Algorithm::Ecdsa, limits: Limits::default() },
        ),
        http: Arc::new(HttpSettings::default()),
        metrics: Arc::new(Metrics::default()),
        auth: Arc::new(Authenticator::Token(Box::new(tufa_server::auth::TokenMode { verifier, config }))),
    };
    Harness { app: router(state), store, _dir: dir }
}

#[tokio::test]
async fn token_mode_accepts_exactly_the_tokens_notary_server_accepts() {
    use tufa_auth::Access;
    let service = TokenService::new("auth.test");
    let harness = token_mode_harness(&service).await;
    let now = std::time::SystemTime::now();
    let push = [Access::new("repository", GUN, &["pull", "push"])];
    let good = service.bearer("notary.test", &push, now);
    assert_eq!(harness.publish(GUN, &Repo::new(), &good).await.status, StatusCode::OK);
    let path = format!("/v2/{GUN}/_trust/tuf/root.json");
    assert_eq!(harness.get(&path, Some(&good)).await.status, StatusCode::OK);
    let challenge = |error: &str| {
        format!(
            "Bearer realm=\"https://auth.test/token\",service=\"notary.test\",scope=\"repository:{GUN}:pull\"{error}"
        )
    };
    let reply = harness.get(&path, None).await;
    assert_eq!((reply.status, reply.challenge()), (StatusCode::UNAUTHORIZED, challenge("")));
    let invalid = challenge(",error=\"invalid_token\"");
    let expired = service.bearer("notary.test", &push, now - Duration::from_secs(3600));
    let wrong_audience = service.bearer("registry.test", &push, now);
    let wrong_issuer = service.renamed("someone.else").bearer("notary.test", &push, now);
    let other_ca = TokenService::new("auth.test").bearer("notary.test", &push, now);
    let cases = [
        ("expired", expired),
        ("wrong audience", wrong_audience),
        ("wrong issuer", wrong_issuer),
        ("another CA", other_ca),
        ("garbage", "Bearer e30.e30.AAAA".to_owned()),
    ];
    for (what, token) in cases {
        let reply = harness.get(&path, Some(&token)).await;
        assert_eq!((reply.status, reply.challenge()), (StatusCode::UNAUTHORIZED, invalid.clone()), "{what}");
    }
    // Another repository's scope, and pull without push for a publish.
    let elsewhere = service.bearer("notary.test", &[Access::new("repository", "other.com/app", &["*"])], now);
    let reply = harness.get(&path, Some(&elsewhere)).await;
    assert_eq!(
        (reply.status, reply.challenge()),
        (StatusCode::UNAUTHORIZED, challenge(",error=\"insufficient_scope\""))
    );
    let pull = service.bearer("notary.test", &[Access::new("repository", GUN, &["pull"])], now);
    let reply = harness.call(Method::DELETE, &format!("/v2/{GUN}/_trust/tuf/"), Some(&pull), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!harness.store.current_all(GUN).await.unwrap().is_empty());
    // A delete with `*`, then re-creation: a new root needs the tombstone cleared (or a `*` token).
    let all = service.bearer("notary.test", &[Access::new("repository", GUN, &["*"])], now);
    let reply = harness.call(Method::DELETE, &format!("/v2/{GUN}/_trust/tuf/"), Some(&all), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(harness.publish(GUN, &Repo::new(), &good).await.status, StatusCode::FORBIDDEN);
    assert!(harness.store.clear_tombstone(GUN, &test_change()).await.unwrap());
    assert_eq!(harness.publish(GUN, &Repo::new(), &good).await.status, StatusCode::OK);
}

/// An audit record for changes a test writes straight into the store.
fn test_change() -> tufa_store::Record {
    tufa_store::Record::new(tufa_audit::NewEntry::new("role.grant", serde_json::json!({"test": true})))
}
