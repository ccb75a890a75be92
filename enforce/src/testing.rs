//! Test doubles shared by the crate's unit tests: a verifier answering from a map, a daemon client answering from
//! a map, the test policy and the recorded request bodies in `tests/data/`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tufa_policy::{ImageRef, Policy};

use crate::{DaemonClient, ImageVerifier, Verdict};

/// The signed digest of `registry.example.com/team/app:v1`.
pub(crate) const APP_V1: &str = "sha256:58a9dfbd5f30947506cb84c6f274080e2669b1afe7cb00d0f2c73d952aae1c85";
/// The ID of a local image with no names.
pub(crate) const UNTAGGED_ID: &str = "sha256:5dd8beef3ddceefe020274828de0bf8a2b6ee75e2cc7ab7b4d052fc0e65f4ec0";
/// The signed digest of `nginx:1.25`.
pub(crate) const NGINX: &str = "sha256:ee8033170a45643b1f4bc0f33ff4564b0922e6618fd0e93c0e15f64f9917e44c";
/// The signed digest of `registry.example.com/team/sidecar:1.4`.
pub(crate) const SIDECAR: &str = "sha256:19ce14beb45bb6ece1fe62f1cbf8b85f7d014b2d74f2478625d41ff5ab884038";
/// A signed digest of busybox.
pub(crate) const BUSYBOX: &str = "sha256:9d75f0d7c398df565d7ac04c6819b62d6d8f9560f5eb4672596ecd8f7e96ae91";
/// A digest nobody signed.
pub(crate) const OTHER: &str = "sha256:d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

/// The reason the test verifier gives for `registry.example.com/team/app:v2`.
pub(crate) const V2_REASON: &str =
    "tag v2 of registry.example.com/team/app is not signed by targets/qa; signed only by targets/releases";
/// The error the test verifier gives for `registry.example.com/team/flaky:v1`.
pub(crate) const FLAKY_ERROR: &str = "trust server https://trust.example.com is unreachable: connection refused";

/// The policy of the tests.
pub(crate) const POLICY: &str = r#"
[content-trust]
mode = "enforced"

[content-trust.trust-pinning.root-keys]
"*" = ["0b6101527b2ac766702e4b40aa2391805b70e5031c04714c748f914e89014403"]

[registries]
allowed = ["registry.example.com", "docker.io"]

[[rules]]
pattern = "registry.example.com/lab/*"
mode = "permissive"

[[rules]]
pattern = "registry.example.com/prod/*"
require-digest = true

[exemptions]
namespaces = ["kube-system"]
images = ["registry.example.com/debug/*"]

[run-options]
bind-mounts = ["/scratch"]
capabilities = ["NET_BIND_SERVICE"]
build = true
"#;

pub(crate) fn policy() -> Policy {
    Policy::from_toml_str(POLICY).unwrap()
}

/// The test policy with `extra` appended to its `[run-options]` table.
pub(crate) fn policy_with_run_options(extra: &str) -> Policy {
    Policy::from_toml_str(&format!("{POLICY}{extra}\n")).unwrap()
}

fn trusted(digest: &str, role: &str) -> Result<Verdict, String> {
    Ok(Verdict {
        trusted: true,
        digest: Some(digest.to_owned()),
        roles: vec![role.to_owned()],
        keys: vec!["7d3b0a2f".to_owned()],
        reason: "signed".to_owned(),
    })
}

/// A verifier answering from a map keyed by the normalised reference; unknown images are untrusted. It records
/// every image asked about.
pub(crate) struct TestVerifier {
    answers: BTreeMap<String, Result<Verdict, String>>,
    pub(crate) asked: Mutex<Vec<String>>,
}

impl TestVerifier {
    pub(crate) fn new() -> Self {
        let mut answers = BTreeMap::new();
        answers.insert("registry.example.com/team/app:v1".to_owned(), trusted(APP_V1, "targets/releases"));
        answers.insert(format!("registry.example.com/team/app@{APP_V1}"), trusted(APP_V1, "targets/releases"));
        answers.insert(format!("registry.example.com/team/app:v1@{APP_V1}"), trusted(APP_V1, "targets/releases"));
        answers.insert(
            "registry.example.com/team/app:v2".to_owned(),
            Ok(Verdict {
                trusted: false,
                digest: Some(OTHER.to_owned()),
                roles: vec!["targets/releases".to_owned()],
                keys: vec![],
                reason: V2_REASON.to_owned(),
            }),
        );
        answers.insert("registry.example.com/team/sidecar:1.4".to_owned(), trusted(SIDECAR, "targets"));
        answers.insert("docker.io/library/nginx:1.25".to_owned(), trusted(NGINX, "targets"));
        answers.insert(format!("docker.io/library/busybox@{BUSYBOX}"), trusted(BUSYBOX, "targets"));
        answers.insert("registry.example.com/team/flaky:v1".to_owned(), Err(FLAKY_ERROR.to_owned()));
        Self { answers, asked: Mutex::new(Vec::new()) }
    }
}

#[async_trait::async_trait]
impl ImageVerifier for TestVerifier {
    async fn verify(&self, image: &ImageRef) -> Result<Verdict, String> {
        let key = image.to_string();
        self.asked.lock().unwrap().push(key.clone());
        self.answers.get(&key).cloned().unwrap_or_else(|| {
            Ok(Verdict {
                trusted: false,
                digest: None,
                roles: vec![],
                keys: vec![],
                reason: format!("no trust data for {}", image.gun()),
            })
        })
    }
}

/// A daemon answering from a map keyed by the reference asked; unknown references are absent images.
pub(crate) struct TestDaemon {
    pub(crate) images: BTreeMap<String, Result<Option<Vec<String>>, String>>,
}

impl TestDaemon {
    /// The daemon of the tests: app:v1 pulled from the registry, a short ID naming it, an untagged image.
    pub(crate) fn new() -> Self {
        let app = Ok(Some(vec![
            "registry.example.com/team/app:v1".to_owned(),
            format!("registry.example.com/team/app@{APP_V1}"),
        ]));
        let mut images = BTreeMap::new();
        images.insert("registry.example.com/team/app:v1".to_owned(), app.clone());
        images.insert(format!("registry.example.com/team/app@{APP_V1}"), app.clone());
        images.insert("3fd9065eaf02".to_owned(), app);
        images.insert(UNTAGGED_ID.to_owned(), Ok(Some(vec![])));
        Self { images }
    }

    pub(crate) fn with(mut self, reference: &str, answer: Result<Option<Vec<String>>, String>) -> Self {
        self.images.insert(reference.to_owned(), answer);
        self
    }
}

#[async_trait::async_trait]
impl DaemonClient for TestDaemon {
    async fn image_repo_digests(&self, reference: &str) -> Result<Option<Vec<String>>, String> {
        self.images.get(reference).cloned().unwrap_or(Ok(None))
    }

    async fn network_driver(&self, reference: &str) -> Result<Option<String>, String> {
        Ok(match reference {
            HOST_NETWORK_ID => Some("host".to_owned()),
            "tufa-overlay" | "8d1f0c3b2a4e" => Some("overlay".to_owned()),
            _ => None,
        })
    }
}

/// The ID of the host network in the recorded swarm requests.
pub(crate) const HOST_NETWORK_ID: &str = "tv84yaq74tb7s76ghu5a29qiz";

/// A recorded request body from `tests/data/`.
pub(crate) fn data(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}
