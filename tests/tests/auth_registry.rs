//! The real Docker distribution registry (Debian's `docker-registry`) trusting tokens from Tufa's
//! builtin token service: a publisher's `pull,push` token pushes an image, a reader's pulls it, and
//! tokens without the scope, for another repository, for another audience, anonymous ones and
//! requests without a token are refused. Once on SQLite and once on PostgreSQL.

use std::fs;
use std::process::Command;

use base64::Engine as _;

use tufa_tests::notary::basic_credentials;
use tufa_tests::process::run_with_timeout;
use tufa_tests::registry::{Registry, TokenAuth};
use tufa_tests::server::HttpResponse;
use tufa_tests::tufa::{AuthServer, Backend, start_builtin};

/// The registry's service name at the token service.
const REGISTRY_SERVICE: &str = "registry.tufa.test";

/// The registry's host name, which prefixes its repository names to form GUN patterns.
const REGISTRY_HOST: &str = "registry.tufa.test";

/// The password of every test user.
const PASSWORD: &str = "correct horse battery staple";

/// The media type of a Docker image manifest (schema 2).
const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A token from the builtin service for `service` and `scope`, as `user` (or anonymously).
fn token(tokens: &AuthServer, user: Option<&str>, service: &str, scope: &str) -> String {
    let path = format!("/auth/token?service={service}&scope={scope}");
    let response = match user {
        Some(user) => tokens.get_with(&path, &format!("Basic {}", basic_credentials(user, PASSWORD))),
        None => tokens.get(&path),
    };
    assert_eq!(response.status, 200, "token for {scope} at {service}: {response}");
    response.json()["token"].as_str().expect("the answer holds a token").to_owned()
}

/// `sha256:<hex>` of `bytes`, from coreutils' `sha256sum`.
fn digest(bytes: &[u8]) -> String {
    let output = run_with_timeout(&mut Command::new("sha256sum"), bytes, std::time::Duration::from_secs(10));
    assert!(output.success(), "{output}");
    format!("sha256:{}", output.stdout.split_whitespace().next().unwrap_or_default())
}

/// A 401 from the registry with exactly `challenge`.
#[track_caller]
fn assert_refused(response: &HttpResponse, challenge: &str, what: &str) {
    assert_refused_with_one_of(response, &[challenge], what);
}

/// A 401 from the registry with one of `challenges` (the registry lists a resource's actions in
/// map order, so `pull,push` and `push,pull` both occur).
#[track_caller]
fn assert_refused_with_one_of(response: &HttpResponse, challenges: &[&str], what: &str) {
    assert_eq!(response.status, 401, "{what}: {response}");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenges.contains(&challenge), "{what}: challenge {challenge:?} is none of {challenges:?}");
    assert_eq!(response.error_code().as_deref(), Some("UNAUTHORIZED"), "{what}: {response}");
}

fn registry_accepts_tufa_tokens(backend: Backend) {
    let tokens = start_builtin(backend, &["--auth-builtin-registry", &format!("{REGISTRY_SERVICE}={REGISTRY_HOST}")]);
    tokens.add_user("alice", PASSWORD);
    tokens.grant("alice", "publisher", &format!("{REGISTRY_HOST}/team/*"));
    tokens.add_user("rita", PASSWORD);
    tokens.grant("rita", "reader", &format!("{REGISTRY_HOST}/team/*"));
    let bundle = tokens.dir().join("token-bundle.pem");
    fs::write(&bundle, tokens.admin_ok(&["token-signer", "bundle"], b"").stdout).expect("write the bundle");
    let registry = Registry::start(&TokenAuth {
        realm: format!("{}/auth/token", tokens.url()),
        service: REGISTRY_SERVICE.to_owned(),
        issuer: "tufa".to_owned(),
        rootcertbundle: bundle,
    });
    let challenge = |scope: &str, error: Option<&str>| {
        let mut text = format!("Bearer realm=\"{}/auth/token\",service=\"{REGISTRY_SERVICE}\"", tokens.url());
        text.push_str(&format!(",scope=\"{scope}\""));
        if let Some(error) = error {
            text.push_str(&format!(",error=\"{error}\""));
        }
        text
    };
    let pull = "repository:team/app:pull";
    let push_pull = "repository:team/app:pull,push";

    // The publisher's token: the repository is unknown, not forbidden; an upload starts.
    let alice = token(&tokens, Some("alice"), REGISTRY_SERVICE, push_pull);
    let tags = registry.request("GET", "/v2/team/app/tags/list", Some(&alice), &[], None);
    assert_eq!(tags.status, 404, "tags of a new repository: {tags}");
    assert_eq!(tags.error_code().as_deref(), Some("NAME_UNKNOWN"), "{tags}");
    let upload = registry.request("POST", "/v2/team/app/blobs/uploads/", Some(&alice), &[], None);
    assert_eq!(upload.status, 202, "an upload starts: {upload}");

    // Push a tiny image: a layer, a config and the manifest naming them.
    let layer = b"not really a tarball, the registry does not look\n".to_vec();
    let layer_digest = digest(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}},"config":{{}}}}"#
    )
    .into_bytes();
    let config_digest = digest(&config);
    for (blob, blob_digest) in [(&layer, &layer_digest), (&config, &config_digest)] {
        // Distribution 2.8 takes a blob as POST (start) then PUT (the whole blob, with its digest).
        let started = registry.request("POST", "/v2/team/app/blobs/uploads/", Some(&alice), &[], None);
        assert_eq!(started.status, 202, "an upload starts: {started}");
        let location = started.header("location").expect("the upload's location");
        let path = location.strip_prefix(registry.url()).unwrap_or(location);
        let path = format!("{path}&digest={blob_digest}");
        let pushed = registry.request(
            "PUT",
            &path,
            Some(&alice),
            &[("content-type", "application/octet-stream")],
            Some(blob.clone()),
        );
        assert_eq!(pushed.status, 201, "the blob is stored: {pushed}");
        assert_eq!(pushed.header("docker-content-digest"), Some(blob_digest.as_str()));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": layer_digest}],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = digest(&manifest);
    let put = registry.request(
        "PUT",
        "/v2/team/app/manifests/v1",
        Some(&alice),
        &[("content-type", MANIFEST_TYPE)],
        Some(manifest.clone()),
    );
    assert_eq!(put.status, 201, "the manifest is stored: {put}");
    assert_eq!(put.header("docker-content-digest"), Some(manifest_digest.as_str()));

    // A reader's pull token reads it back.
    let rita_pull = token(&tokens, Some("rita"), REGISTRY_SERVICE, pull);
    let tags_body = |token: &str| {
        let response = registry.request("GET", "/v2/team/app/tags/list", Some(token), &[], None);
        assert_eq!(response.status, 200, "tags: {response}");
        response.json()
    };
    assert_eq!(tags_body(&rita_pull), serde_json::json!({"name": "team/app", "tags": ["v1"]}));
    let fetched =
        registry.request("GET", "/v2/team/app/manifests/v1", Some(&rita_pull), &[("accept", MANIFEST_TYPE)], None);
    assert_eq!(fetched.status, 200, "{fetched}");
    assert!(fetched.body == manifest, "the pulled manifest is the pushed one");

    // Refusals.
    assert_refused(
        &registry.request("GET", "/v2/team/app/tags/list", None, &[], None),
        &challenge(pull, None),
        "no token",
    );
    // The reader asked for pull and push and got pull only.
    let rita = token(&tokens, Some("rita"), REGISTRY_SERVICE, push_pull);
    let upload = registry.request("POST", "/v2/team/app/blobs/uploads/", Some(&rita), &[], None);
    let either_order = [
        challenge(push_pull, Some("insufficient_scope")),
        challenge("repository:team/app:push,pull", Some("insufficient_scope")),
    ];
    let either_order = [either_order[0].as_str(), either_order[1].as_str()];
    assert_refused_with_one_of(&upload, &either_order, "a reader's upload");
    let overwrite = registry.request(
        "PUT",
        "/v2/team/app/manifests/v1",
        Some(&rita),
        &[("content-type", MANIFEST_TYPE)],
        Some(manifest),
    );
    assert_refused_with_one_of(&overwrite, &either_order, "a reader's manifest push");
    let elsewhere = token(&tokens, Some("alice"), REGISTRY_SERVICE, "repository:other/app:pull,push");
    assert_refused(
        &registry.request("GET", "/v2/other/app/tags/list", Some(&elsewhere), &[], None),
        &challenge("repository:other/app:pull", Some("insufficient_scope")),
        "a repository outside the publisher's pattern",
    );
    let alice_for_team = token(&tokens, Some("alice"), REGISTRY_SERVICE, push_pull);
    assert_refused(
        &registry.request("GET", "/v2/other/app/tags/list", Some(&alice_for_team), &[], None),
        &challenge("repository:other/app:pull", Some("insufficient_scope")),
        "a token for another repository",
    );
    let anonymous = token(&tokens, None, REGISTRY_SERVICE, pull);
    assert_refused(
        &registry.request("GET", "/v2/team/app/tags/list", Some(&anonymous), &[], None),
        &challenge(pull, Some("insufficient_scope")),
        "an anonymous token",
    );
    // A token for the trust service (another audience), even with the matching GUN's access.
    let for_trust = token(&tokens, Some("alice"), "tufa", &format!("repository:{REGISTRY_HOST}/team/app:pull,push"));
    assert_refused(
        &registry.request("GET", "/v2/team/app/tags/list", Some(&for_trust), &[], None),
        &challenge(pull, Some("invalid_token")),
        "a token for the trust service",
    );
    assert_eq!(tags_body(&rita_pull), serde_json::json!({"name": "team/app", "tags": ["v1"]}), "nothing changed");

    // Rotating the token-signing key needs no change at the registry, which trusts the CA: new
    // tokens (signed by the new key once the server has reloaded it) and old ones both work.
    let leaf = |token: &str| -> String {
        let header = token.split('.').next().unwrap_or_default();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64url header");
        let header: serde_json::Value = serde_json::from_slice(&header).expect("JSON header");
        header["x5c"][0].as_str().expect("an x5c chain").to_owned()
    };
    let old_leaf = leaf(&rita_pull);
    let rotated = tokens.admin_ok(&["token-signer", "rotate"], b"");
    assert!(rotated.stdout.starts_with("the token-signing key is now "), "{rotated}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let fresh = loop {
        let candidate = token(&tokens, Some("rita"), REGISTRY_SERVICE, pull);
        if leaf(&candidate) != old_leaf {
            break candidate;
        }
        assert!(std::time::Instant::now() < deadline, "the server still signs with the old key after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(tags_body(&fresh)["tags"], serde_json::json!(["v1"]), "a token from the rotated key");
    assert_eq!(tags_body(&rita_pull)["tags"], serde_json::json!(["v1"]), "a token from the old key");
}

/// One `#[test]` per store.
mod sqlite {
    #[test]
    fn registry_accepts_tufa_tokens() {
        super::registry_accepts_tufa_tokens(tufa_tests::tufa::Backend::Sqlite);
    }
}

mod postgres {
    #[test]
    fn registry_accepts_tufa_tokens() {
        super::registry_accepts_tufa_tokens(tufa_tests::tufa::Backend::Postgres);
    }
}
