//! The enforcement points end to end: the real notary CLI publishes an image's trust data (a GUN
//! named like the image, tags signed by the top-level targets role and by the delegation
//! targets/releases) to a real tufa-server (and Go notary-server), and the real binary judges it
//! under a policy file the test writes: `tufa-server verify` (exit status, `--json` answer, the
//! sentence for a person) for trusted, unsigned, unpinned root, missing required role, wrong
//! digest, exempt, permissive, unreachable server, bad policy and offline-from-cache cases, trust
//! data rolled back behind the verifier's back, and expired trust data (published over the Notary
//! API with a targets file that expires in seconds, with and without
//! `allow-expired-cached-trust-data`); and
//! `tufa-server verify-server` (`POST /v1/verify`, the admission webhooks `/validate` and
//! `/mutate`) over HTTPS with its generated CA.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tufa_core::keys::PublicKey;
use tufa_tests::flows::{
    RELEASES, delegation_key, init_with_server_snapshot, path_arg, publish_delegated, publish_target,
};
use tufa_tests::go_notary;
use tufa_tests::notary::{ListedTarget, Notary};
use tufa_tests::process::{
    CommandOutput, LOG_TAIL_BYTES, free_port, log_tail, run_with_timeout, spawn_logged, wait_ready,
};
use tufa_tests::server::Server;
use tufa_tests::tufa::{self, Backend};

/// The image whose trust data the owner publishes.
const APP: &str = "registry.example.com/team/app";
/// An image of another owner, with a root key of its own.
const OTHER: &str = "registry.example.com/team/other";
/// Deadline for one `tufa-server verify`.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the owner published to one server.
struct Published {
    /// `v1`, signed by the top-level targets role.
    top: ListedTarget,
    /// `v2`, signed by the delegation targets/releases.
    released: ListedTarget,
    /// The canonical ID of APP's root key.
    root_key: String,
    /// APP's root key ID as root.json lists it.
    root_cert_id: String,
    /// The key ID of APP's targets role.
    targets_key: String,
    /// The key ID of the delegation targets/releases.
    releases_key: String,
}

/// The owner publishes APP (v1 top-level, v2 by targets/releases); with `stranger`, another
/// client with its own root key publishes OTHER:v1.
fn publish(server: &Server, stranger: bool) -> Published {
    let owner = Notary::new(server, "owner");
    let delegate = Notary::new(server, "delegate");
    init_with_server_snapshot(&owner, APP);
    let top = publish_target(&owner, APP, "v1", b"top-level release of the app\n");
    let key = delegation_key(&delegate);
    owner.ok(&["delegation", "add", "-p", APP, RELEASES, path_arg(&key.cert), "--all-paths"]);
    let released = publish_delegated(&delegate, APP, "v2", b"delegated release of the app\n", RELEASES);
    if stranger {
        let other = Notary::new(server, "stranger");
        init_with_server_snapshot(&other, OTHER);
        publish_target(&other, OTHER, "v1", b"another owner's release\n");
    }
    let root = server.metadata_json(APP, "root");
    let root_cert_id = root["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap().to_owned();
    let root_key = PublicKey::from_json(&root["signed"]["keys"][&root_cert_id]).unwrap().canonical_id().unwrap();
    let targets_key = root["signed"]["roles"]["targets"]["keyids"][0].as_str().unwrap().to_owned();
    let targets = server.metadata_json(APP, "targets");
    let delegated = targets["signed"]["delegations"]["roles"].as_array().unwrap();
    assert_eq!(delegated.len(), 1, "{targets}");
    let releases_key = delegated[0]["keyids"][0].as_str().unwrap().to_owned();
    Published { top, released, root_key, root_cert_id, targets_key, releases_key }
}

/// A directory holding policy files and the verifier's state.
struct Setup {
    dir: tempfile::TempDir,
    url: String,
    ca: PathBuf,
}

impl Setup {
    fn new(server: &Server) -> Setup {
        Setup { dir: tempfile::tempdir().unwrap(), url: server.url().to_owned(), ca: server.ca_cert().to_path_buf() }
    }

    /// Writes `text` as the policy file `name`.
    fn policy(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tufa-server verify IMAGE --policy P --trust-server URL --trust-ca CA --state-dir S [--json]`.
    fn verify(&self, image: &str, policy: &Path, state: &Path, json: bool) -> CommandOutput {
        self.verify_at(&self.url, image, policy, state, json)
    }

    fn verify_at(&self, url: &str, image: &str, policy: &Path, state: &Path, json: bool) -> CommandOutput {
        let mut command = Command::new(tufa::binary());
        command
            .arg("verify")
            .arg(image)
            .arg("--policy")
            .arg(policy)
            .arg("--trust-server")
            .arg(url)
            .arg("--trust-ca")
            .arg(&self.ca)
            .arg("--state-dir")
            .arg(state)
            .env_remove("TUFA_POLICY")
            .env_remove("TUFA_TRUST_SERVER")
            .env_remove("TUFA_TRUST_CA");
        if json {
            command.arg("--json");
        }
        run_with_timeout(&mut command, b"", VERIFY_TIMEOUT)
    }
}

/// The exit status of `output` (-1 when it was killed or timed out).
fn code(output: &CommandOutput) -> i32 {
    output.status.and_then(|status| status.code()).unwrap_or(-1)
}

/// The exit status and, parsed, the one JSON line of `output`.
#[track_caller]
fn json_answer(output: &CommandOutput) -> (i32, Value) {
    let line = output.stdout.trim();
    let value = serde_json::from_str(line).unwrap_or_else(|error| panic!("not one JSON line ({error}):\n{output}"));
    (code(output), value)
}

/// The exit status and the one line printed.
#[track_caller]
fn sentence(output: &CommandOutput) -> (i32, String) {
    assert_eq!(output.stdout.lines().count(), 1, "one line expected:\n{output}");
    (code(output), output.stdout.trim_end().to_owned())
}

/// The policy pinning `pattern` to `root_key`, enforced, with `extra` appended.
/// The JSON answer for `image` signed with `digest` (hex) by one `role` with `key`.
fn trusted(image: &str, digest: &str, role: &str, key: &str) -> Value {
    let tag = image.rsplit_once(':').map_or(image, |(_, tag)| tag);
    let repository = image.rsplit_once(':').map_or(image, |(repository, _)| repository);
    json!({
        "image": image,
        "trusted": true,
        "allowed": true,
        "digest": format!("sha256:{digest}"),
        "roles": [role],
        "keys": [key],
        "reason": format!("tag {tag} of {repository} is signed with digest sha256:{digest} by {role}"),
    })
}

/// The JSON answer for `image`, not trusted (and allowed or not) for `reason`.
fn untrusted(image: &str, allowed: bool, reason: &str) -> Value {
    json!({"image": image, "trusted": false, "allowed": allowed, "digest": null, "roles": [], "keys": [],
        "reason": reason})
}

fn pinned_policy(pattern: &str, root_key: &str, extra: &str) -> String {
    format!(
        "[content-trust]\nmode = \"enforced\"\n\n[content-trust.trust-pinning.root-keys]\n\"{pattern}\" = [\"{root_key}\"]\n\n{extra}"
    )
}

#[test]
fn tufa_server_verify_judges_what_notary_published() {
    let mut server = tufa::start(Backend::Sqlite);
    let published = publish(&server, true);
    let setup = Setup::new(&server);
    let Published { top, released, root_key, root_cert_id, targets_key, releases_key } = &published;
    let policy = setup.policy(
        "policy.toml",
        &pinned_policy(
            "registry.example.com/team/*",
            root_key,
            "[exemptions]\nimages = [\"registry.example.com/debug/*\"]\n\n\
             [[rules]]\npattern = \"registry.example.com/lab/*\"\nmode = \"permissive\"\n",
        ),
    );
    let state = setup.state("state");

    // Trusted: the top-level tag, with the digest notary lists.
    let output = setup.verify(&format!("{APP}:v1"), &policy, &state, true);
    assert_eq!(
        json_answer(&output),
        (0, trusted(&format!("{APP}:v1"), &top.digest, "targets", targets_key)),
        "{output}"
    );
    let output = setup.verify(&format!("{APP}:v1"), &policy, &state, false);
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v1 is sha256:{} signed by targets", top.digest)));
    // Many verifications at once on one fresh state directory (jobs starting together on a node).
    let shared = setup.state("shared");
    let children: Vec<_> = (0..8)
        .map(|index| {
            let tag = if index % 2 == 0 { "v1" } else { "v2" };
            Command::new(tufa::binary())
                .arg("verify")
                .arg(format!("{APP}:{tag}"))
                .arg("--policy")
                .arg(&policy)
                .arg("--trust-server")
                .arg(&setup.url)
                .arg("--trust-ca")
                .arg(&setup.ca)
                .arg("--state-dir")
                .arg(&shared)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).starts_with(&format!("trusted: {APP}:v")));
    }

    // Trusted: the delegated tag, by tag and by its digest.
    let output = setup.verify(&format!("{APP}:v2"), &policy, &state, true);
    assert_eq!(
        json_answer(&output),
        (0, trusted(&format!("{APP}:v2"), &released.digest, RELEASES, releases_key)),
        "{output}"
    );
    let output = setup.verify(&format!("{APP}@sha256:{}", released.digest), &policy, &state, false);
    assert_eq!(
        sentence(&output),
        (0, format!("trusted: {APP}@sha256:{} is sha256:{} signed by {RELEASES}", released.digest, released.digest))
    );
    // Pinned by cert-ids (the key ID root.json lists) instead of the canonical ID.
    let by_cert_id = setup.policy(
        "cert-ids.toml",
        &format!(
            "[content-trust]\nmode = \"enforced\"\n\n[content-trust.trust-pinning.cert-ids]\n\"{APP}\" = [\"{root_cert_id}\"]\n"
        ),
    );
    let output = setup.verify(&format!("{APP}:v1"), &by_cert_id, &setup.state("cert-ids"), false);
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v1 is sha256:{} signed by targets", top.digest)));

    // The trust server and its CA named by the policy (a path relative to the policy file), not by flags.
    fs::copy(&setup.ca, setup.dir.path().join("trust-ca.pem")).unwrap();
    let from_policy = setup.policy(
        "from-policy.toml",
        &pinned_policy(
            "registry.example.com/team/*",
            root_key,
            &format!("[trust-server]\nurl = \"{}\"\nca = \"trust-ca.pem\"\n", setup.url),
        ),
    );
    let output = run_with_timeout(
        Command::new(tufa::binary())
            .arg("verify")
            .arg(format!("{APP}:v1"))
            .arg("--policy")
            .arg(&from_policy)
            .arg("--state-dir")
            .arg(setup.state("from-policy"))
            .env_remove("TUFA_POLICY")
            .env_remove("TUFA_TRUST_SERVER")
            .env_remove("TUFA_TRUST_CA"),
        b"",
        VERIFY_TIMEOUT,
    );
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v1 is sha256:{} signed by targets", top.digest)));

    // Unsigned tag.
    let output = setup.verify(&format!("{APP}:v9"), &policy, &state, true);
    let (status, answer) = json_answer(&output);
    assert_eq!(status, 1, "{output}");
    assert_eq!(
        answer,
        untrusted(
            &format!("{APP}:v9"),
            false,
            &format!(
                "image {APP}:v9 is not trusted: tag v9 of {APP} is not signed (mode enforced by content-trust.mode)"
            )
        )
    );
    let output = setup.verify(&format!("{APP}:v9"), &policy, &state, false);
    assert_eq!(
        sentence(&output),
        (
            1,
            format!(
                "denied: image {APP}:v9 is not trusted: tag v9 of {APP} is not signed (mode enforced by content-trust.mode)"
            )
        )
    );

    // Signed, but by a root that is not pinned.
    let output = setup.verify(&format!("{OTHER}:v1"), &policy, &state, false);
    let other_root = server.metadata_json(OTHER, "root");
    let other_id = other_root["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap();
    let other_key = PublicKey::from_json(&other_root["signed"]["keys"][other_id]).unwrap().canonical_id().unwrap();
    assert_ne!(&other_key, root_key);
    assert_eq!(
        sentence(&output),
        (
            1,
            format!(
                "denied: image {OTHER}:v1 is not trusted: root key {other_key} is not pinned for {OTHER} \
                 (mode enforced by content-trust.mode)"
            )
        )
    );
    // A repository no pattern pins.
    let output = setup.verify("registry.example.com/elsewhere/app:v1", &policy, &state, false);
    let (status, line) = sentence(&output);
    assert_eq!(status, 1, "{output}");
    assert!(
        line.starts_with(
            "denied: image registry.example.com/elsewhere/app:v1 is not trusted: no root key is pinned for \
             registry.example.com/elsewhere/app"
        ),
        "{line}"
    );

    // Wrong digest: a tag with another tag's digest, and a digest no tag has.
    let output = setup.verify(&format!("{APP}:v1@sha256:{}", released.digest), &policy, &state, false);
    assert_eq!(
        sentence(&output),
        (
            1,
            format!(
                "denied: image {APP}:v1@sha256:{} is not trusted: tag v1 of {APP} is signed with digest sha256:{}, \
                 not sha256:{} (mode enforced by content-trust.mode)",
                released.digest, top.digest, released.digest
            )
        )
    );
    let stranger_digest = "ab".repeat(32);
    let output = setup.verify(&format!("{APP}@sha256:{stranger_digest}"), &policy, &state, false);
    assert_eq!(
        sentence(&output),
        (
            1,
            format!(
                "denied: image {APP}@sha256:{stranger_digest} is not trusted: no signed tag of {APP} has the digest \
                 sha256:{stranger_digest} (mode enforced by content-trust.mode)"
            )
        )
    );

    // Exempt: allowed, not verified.
    let output = setup.verify("registry.example.com/debug/shell:latest", &policy, &state, true);
    assert_eq!(
        json_answer(&output),
        (
            0,
            untrusted(
                "registry.example.com/debug/shell:latest",
                true,
                "not verified: exempt by exemptions.images \"registry.example.com/debug/*\""
            )
        ),
        "{output}"
    );

    // Permissive: untrusted, allowed with a warning.
    let output = setup.verify("registry.example.com/lab/try:v1", &policy, &state, false);
    assert_eq!(
        sentence(&output),
        (
            0,
            "allowed: registry.example.com/lab/try:v1: allowed with a warning: image registry.example.com/lab/try:v1 \
             is not trusted: no root key is pinned for registry.example.com/lab/try: no trust-pinning.cert-ids or \
             trust-pinning.root-keys entry matches it (mode permissive by rule \"registry.example.com/lab/*\")"
                .to_owned()
        )
    );

    // A required role that did not sign.
    let qa = setup.policy(
        "qa.toml",
        &pinned_policy(
            "registry.example.com/team/*",
            root_key,
            &format!("[[rules]]\npattern = \"{APP}\"\nrequired-roles = [\"{RELEASES}\", \"targets/qa\"]\n"),
        ),
    );
    let output = setup.verify(&format!("{APP}:v2"), &qa, &state, true);
    let (status, answer) = json_answer(&output);
    assert_eq!((status, answer["trusted"].clone(), answer["allowed"].clone()), (1, json!(false), json!(false)));
    assert_eq!(
        answer["reason"],
        format!(
            "image {APP}:v2 is not trusted: tag v2 of {APP} is not signed by targets/qa; signed only by {RELEASES} \
             (mode enforced by content-trust.mode)"
        ),
        "{output}"
    );

    // A bad policy: the error names the line.
    let bad = setup.policy(
        "bad.toml",
        "[content-trust]\nmode = \"enforced\"\n\n[content-trust.trust-pinning.root-keys]\n\"registry.example.com/*\" = []\n",
    );
    let output = setup.verify(&format!("{APP}:v1"), &bad, &state, false);
    assert_eq!(
        sentence(&output),
        (2, format!("error: {APP}:v1: {}: line 5, column 28: the list of root key IDs cannot be empty", bad.display()))
    );
    let output = setup.verify(&format!("{APP}:v1"), &bad, &state, true);
    let (status, answer) = json_answer(&output);
    assert_eq!(status, 2, "{output}");
    assert_eq!(answer["image"], format!("{APP}:v1"));
    assert!(answer["error"].as_str().unwrap().ends_with("line 5, column 28: the list of root key IDs cannot be empty"));

    // A malformed image reference.
    let output = setup.verify("registry.example.com/Team/App:v1", &policy, &state, false);
    let (status, line) = sentence(&output);
    assert_eq!(status, 2, "{output}");
    assert!(line.starts_with("error: registry.example.com/Team/App:v1: "), "{line}");

    // The trust server cannot be reached and nothing is cached.
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let output = setup.verify_at(&nowhere, &format!("{APP}:v1"), &policy, &setup.state("fresh"), true);
    let (status, answer) = json_answer(&output);
    assert_eq!((status, answer["trusted"].clone(), answer["allowed"].clone()), (2, json!(false), json!(false)));
    let reason = answer["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("image {APP}:v1 is not trusted: trust could not be decided: ")), "{output}");
    assert!(reason.ends_with("(run-options.fail-open is off)"), "{output}");
    // Permissive images stay allowed when the server is unreachable.
    let output = setup.verify_at(&nowhere, "registry.example.com/lab/try:v1", &policy, &setup.state("fresh"), false);
    assert_eq!(code(&output), 0, "{output}");

    // Offline: the server stops; what the state directory holds is used within max-staleness.
    let offline = setup.policy(
        "offline.toml",
        &pinned_policy(
            "registry.example.com/team/*",
            root_key,
            "[cache]\nrefresh-secs = 1\nmax-staleness-secs = 3600\n",
        ),
    );
    let too_old = setup.policy(
        "too-old.toml",
        &pinned_policy("registry.example.com/team/*", root_key, "[cache]\nrefresh-secs = 1\nmax-staleness-secs = 0\n"),
    );
    let cached = setup.state("cached");
    let output = setup.verify(&format!("{APP}:v2"), &offline, &cached, false);
    assert_eq!(code(&output), 0, "{output}");
    server.terminate();
    // Past refresh-secs, so the verifier must ask the (stopped) server before using its cache.
    std::thread::sleep(Duration::from_millis(1100));
    let output = setup.verify(&format!("{APP}:v2"), &offline, &cached, true);
    let (status, answer) = json_answer(&output);
    assert_eq!(
        (status, answer["trusted"].clone(), answer["digest"].clone()),
        (0, json!(true), json!(format!("sha256:{}", released.digest))),
        "{output}"
    );
    let output = setup.verify(&format!("{APP}:v1"), &offline, &cached, false);
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v1 is sha256:{} signed by targets", top.digest)));
    let output = setup.verify(&format!("{APP}:v2"), &too_old, &cached, false);
    let (status, line) = sentence(&output);
    assert_eq!(status, 2, "{output}");
    assert!(line.contains(&format!("the cached trust data of {APP} is ")), "{line}");
    assert!(line.contains("s old, more than the 0s allowed"), "{line}");
}

#[test]
fn tufa_server_verify_against_go_notary_server() {
    let server = go_notary::start(&go_notary::GoServerConfig::default());
    let published = publish(&server, false);
    let setup = Setup::new(&server);
    let policy = setup.policy("policy.toml", &pinned_policy(APP, &published.root_key, ""));
    let output = setup.verify(&format!("{APP}:v2"), &policy, &setup.state("state"), true);
    assert_eq!(
        json_answer(&output),
        (0, trusted(&format!("{APP}:v2"), &published.released.digest, RELEASES, &published.releases_key)),
        "{output}"
    );
    let output = setup.verify(&format!("{APP}:v9"), &policy, &setup.state("state"), false);
    assert_eq!(code(&output), 1, "{output}");
}

/// A running `tufa-server verify-server`, killed on drop.
struct VerifyServer {
    child: Child,
    url: String,
    http: reqwest::blocking::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for VerifyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- verify-server log ---\n{}", log_tail(&self.log, LOG_TAIL_BYTES));
        }
    }
}

impl VerifyServer {
    fn start(policy: &Path, trust_server: &str, trust_ca: &Path) -> VerifyServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("verify-server.log");
        let port = free_port();
        let mut command = Command::new(tufa::binary());
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("verify-server")
            .arg("--policy")
            .arg(policy)
            .arg("--trust-server")
            .arg(trust_server)
            .arg("--trust-ca")
            .arg(trust_ca)
            .env_remove("TUFA_POLICY")
            .env_remove("TUFA_TRUST_SERVER")
            .env_remove("TUFA_TRUST_CA");
        let mut child = spawn_logged(&mut command, &log).unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let ca = data.join("tls").join("ca.crt");
        let probe = || {
            let http = tufa_tests::server::https_client(&ca)?;
            match http.get(format!("{url}/healthz")).send() {
                Ok(response) if response.status().as_u16() == 200 => Ok(http),
                Ok(response) => Err(format!("healthz answered {}", response.status())),
                Err(error) => Err(format!("healthz failed: {error:?}")),
            }
        };
        let http = wait_ready(&mut child, &log, Duration::from_secs(30), probe)
            .unwrap_or_else(|error| panic!("verify-server did not start: {error}\n{}", log_tail(&log, LOG_TAIL_BYTES)));
        VerifyServer { child, url, http, log, _dir: dir }
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|error| panic!("{path} answered {status} without JSON ({error}): {bytes:?}"));
        (status, value)
    }
}

/// An AdmissionReview v1 of a Pod created in namespace `team-a` with `containers` and
/// `init_containers` images, as the API server sends it.
fn pod_review(uid: &str, containers: &[&str], init_containers: &[&str]) -> Value {
    let container = |(index, image): (usize, &&str)| {
        json!({
            "name": format!("c{index}"),
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        })
    };
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web",
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice@example.com", "groups": ["team-a", "system:authenticated"]},
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {"name": "web", "namespace": "team-a", "creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "initContainers": init_containers.iter().enumerate().map(container).collect::<Vec<_>>(),
                    "containers": containers.iter().enumerate().map(container).collect::<Vec<_>>(),
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default",
                    "schedulerName": "default-scheduler",
                    "enableServiceLinks": true,
                    "preemptionPolicy": "PreemptLowerPriority",
                },
                "status": {},
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"},
        },
    })
}

#[test]
fn verify_server_answers_v1_verify_and_admission_reviews() {
    let server = tufa::start(Backend::Sqlite);
    let published = publish(&server, false);
    let setup = Setup::new(&server);
    let policy = setup.policy("policy.toml", &pinned_policy("registry.example.com/team/*", &published.root_key, ""));
    let verifier = VerifyServer::start(&policy, server.url(), server.ca_cert());
    let top = &published.top;
    let released = &published.released;

    // POST /v1/verify: trusted, then untrusted.
    let (status, answer) = verifier.post("/v1/verify", json!({"image": format!("{APP}:v2")}).to_string().as_bytes());
    assert_eq!(
        (status, answer),
        (200, trusted(&format!("{APP}:v2"), &released.digest, RELEASES, &published.releases_key))
    );
    let (status, answer) = verifier.post("/v1/verify", json!({"image": format!("{APP}:v9")}).to_string().as_bytes());
    assert_eq!(
        (status, answer),
        (
            200,
            untrusted(
                &format!("{APP}:v9"),
                false,
                &format!(
                    "image {APP}:v9 is not trusted: tag v9 of {APP} is not signed (mode enforced by content-trust.mode)"
                )
            )
        )
    );
    // Bad input: 400 with the reason.
    let (status, answer) = verifier.post("/v1/verify", br#"{"image": "UPPER"}"#);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("image \"UPPER\": "), "{answer}");
    let (status, answer) = verifier.post("/v1/verify", b"image=registry.example.com/team/app:v1");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("the body must be {\"image\": \"<reference>\"}: "),
        "{answer}"
    );
    // Oversized bodies: 413 with a JSON reason, and a long reference is not echoed whole.
    let (status, answer) = verifier.post("/v1/verify", &vec![b' '; 64 * 1024]);
    assert_eq!((status, answer), (413, json!({"error": "the request is larger than 16 KiB"})));
    let (status, answer) = verifier.post("/validate", &vec![b' '; 4 * 1024 * 1024]);
    assert_eq!((status, answer), (413, json!({"error": "the admission review is larger than 3 MiB"})));
    let long = format!("{APP}{}:v1", "/x".repeat(600));
    let (status, answer) = verifier.post("/v1/verify", json!({"image": long}).to_string().as_bytes());
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("image {:?}...: ", &long[..200])), "{answer}");
    assert!(error.len() < 400, "{answer}");

    // /validate: a Pod whose images are all trusted is admitted; one untrusted image denies it.
    let trusted = [format!("{APP}:v1"), format!("{APP}:v2")];
    let review = pod_review("5f4c7e2a-8d1b-4c3e-9a6f-0b2d4e6f8a1c", &[&trusted[1]], &[&trusted[0]]);
    let (status, answer) = verifier.post("/validate", review.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "5f4c7e2a-8d1b-4c3e-9a6f-0b2d4e6f8a1c", "allowed": true},
        })
    );
    let unsigned = format!("{APP}:v9");
    let review = pod_review("0e9d8c7b-6a5f-4e3d-2c1b-0a9f8e7d6c5b", &[&trusted[1]], &[&unsigned]);
    let (status, answer) = verifier.post("/validate", review.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": "0e9d8c7b-6a5f-4e3d-2c1b-0a9f8e7d6c5b",
                "allowed": false,
                "status": {
                    "code": 403,
                    "message": format!(
                        "{APP}:v9: tag v9 of {APP} is not signed (mode enforced by content-trust.mode)"
                    ),
                },
            },
        })
    );

    // /mutate: tags are pinned to the signed digests; the untrusted Pod is denied as by /validate.
    let review = pod_review("7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d", &[&trusted[1]], &[&trusted[0]]);
    let (status, answer) = verifier.post("/mutate", review.to_string().as_bytes());
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(
        (response["uid"].clone(), response["allowed"].clone(), response["patchType"].clone()),
        (json!("7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"), json!(true), json!("JSONPatch")),
        "{answer}"
    );
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let mut operations = patch.as_array().unwrap().clone();
    operations.sort_by_key(|operation| operation["path"].as_str().unwrap().to_owned());
    assert_eq!(
        Value::Array(operations),
        json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": format!("{APP}@sha256:{}", released.digest)},
            {"op": "replace", "path": "/spec/initContainers/0/image", "value": format!("{APP}@sha256:{}", top.digest)},
        ])
    );
    let review = pod_review("1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e", &[&trusted[1]], &[&unsigned]);
    let (status, answer) = verifier.post("/mutate", review.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(
        (answer["response"]["allowed"].clone(), answer["response"]["status"]["code"].clone()),
        (json!(false), json!(403)),
        "{answer}"
    );
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    drop(verifier);

    // A verify-server whose trust server cannot be reached answers 503 with the reason.
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let stranded = VerifyServer::start(&policy, &nowhere, server.ca_cert());
    let (status, answer) = stranded.post("/v1/verify", json!({"image": format!("{APP}:v1")}).to_string().as_bytes());
    assert_eq!((status, answer["trusted"].clone(), answer["allowed"].clone()), (503, json!(false), json!(false)));
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("image {APP}:v1 is not trusted: trust could not be decided: ")),
        "{answer}"
    );
}

/// A TCP forwarder on a fixed address whose upstream port can be switched: one URL in front of
/// successive trust servers, so the verifier's state (kept per server URL) carries over.
struct Forwarder {
    port: u16,
    upstream: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Forwarder {
    fn start(upstream: u16) -> Forwarder {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(upstream));
        let shared = target.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let upstream = shared.load(std::sync::atomic::Ordering::SeqCst);
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (mut client_read, mut server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut server_read, mut client_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut server_write);
                    let _ = server_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_read, &mut client_write);
                    let _ = client_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Forwarder { port, upstream: target }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn switch_to(&self, server: &Server) {
        let port = server.url().rsplit(':').next().unwrap().parse().unwrap();
        self.upstream.store(port, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A tufa-server on the data directory `data`.
fn tufa_on(data: &Path) -> Server {
    tufa::start_with_data_dir(
        tufa::Options {
            name: "tufa-server (sqlite)".to_owned(),
            database_url: None,
            database: None,
            extra_args: Vec::new(),
        },
        data,
    )
}

#[test]
fn tufa_server_verify_refuses_rolled_back_trust_data() {
    // The owner publishes v1, the server's data is copied, the owner publishes v2; a verifier
    // that saw v2 is then served the old copy.
    let dir = tempfile::tempdir().unwrap();
    let (data, old_data) = (dir.path().join("data"), dir.path().join("old-data"));
    let mut first = tufa_on(&data);
    let forwarder = Forwarder::start(0);
    forwarder.switch_to(&first);
    let owner = Notary::for_url(&forwarder.url(), first.ca_cert(), "owner");
    init_with_server_snapshot(&owner, APP);
    let top = publish_target(&owner, APP, "v1", b"first release\n");
    let root = first.metadata_json(APP, "root");
    let root_id = root["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap().to_owned();
    let root_key = PublicKey::from_json(&root["signed"]["keys"][&root_id]).unwrap().canonical_id().unwrap();
    let old_timestamp = tufa_tests::flows::version(&first.metadata_json(APP, "timestamp"));
    first.terminate();
    let copied = Command::new("cp").arg("-a").arg(&data).arg(&old_data).status().unwrap();
    assert!(copied.success());

    let second = tufa_on(&data);
    forwarder.switch_to(&second);
    let second_top = publish_target(&owner, APP, "v2", b"second release\n");
    let new_timestamp = tufa_tests::flows::version(&second.metadata_json(APP, "timestamp"));
    assert!(new_timestamp > old_timestamp);

    let setup = Setup { dir: tempfile::tempdir().unwrap(), url: forwarder.url(), ca: second.ca_cert().to_path_buf() };
    let policy = setup.policy(
        "policy.toml",
        &pinned_policy(APP, &root_key, "[cache]\nrefresh-secs = 1\nmax-staleness-secs = 3600\n"),
    );
    let state = setup.state("state");
    let output = setup.verify(&format!("{APP}:v2"), &policy, &state, false);
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v2 is sha256:{} signed by targets", second_top.digest)));
    let output = setup.verify(&format!("{APP}:v1"), &policy, &state, false);
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v1 is sha256:{} signed by targets", top.digest)));
    drop(second);

    // The old data, served at the same URL: v1 was signed there too, but the metadata is older
    // than what the verifier has seen.
    let old = tufa_on(&old_data);
    forwarder.switch_to(&old);
    std::thread::sleep(Duration::from_millis(1100));
    let output = setup.verify(&format!("{APP}:v1"), &policy, &state, true);
    assert_eq!(
        json_answer(&output),
        (
            1,
            untrusted(
                &format!("{APP}:v1"),
                false,
                &format!(
                    "image {APP}:v1 is not trusted: timestamp version {old_timestamp} of {APP} is older than the \
                     {new_timestamp} already seen (rollback) (mode enforced by content-trust.mode)"
                )
            )
        )
    );
    // A fresh verifier has no memory of v2 and accepts the old data.
    let output = setup.verify(&format!("{APP}:v1"), &policy, &setup.state("fresh"), false);
    assert_eq!(sentence(&output), (0, format!("trusted: {APP}:v1 is sha256:{} signed by targets", top.digest)));
}

/// `body` canonicalised and signed by `key` (whose public half has the ID `key_id`).
fn signed(body: &Value, key: &tufa_core::keys::PrivateKey, key_id: &str) -> Vec<u8> {
    let canonical = tufa_core::canonical::to_canonical(body).unwrap();
    let sig = key.sign(&canonical).unwrap();
    tufa_core::metadata::envelope(
        &canonical,
        &[tufa_core::metadata::Signature { keyid: key_id.to_owned(), method: key.method().to_owned(), sig }],
    )
}

/// The `meta` entry of `bytes` in snapshot and targets files.
fn meta(bytes: &[u8]) -> Value {
    let digest = tufa_core::keys::sha256(bytes);
    json!({"length": bytes.len(), "hashes": {"sha256": base64::engine::general_purpose::STANDARD.encode(digest)}})
}

/// UTC time `seconds` from now in TUF's format, from coreutils' `date`.
fn utc_in(seconds: u64) -> String {
    let output = tufa_tests::process::run_tool(
        Command::new("date").arg("-u").arg("-d").arg(format!("+{seconds} seconds")).arg("+%Y-%m-%dT%H:%M:%SZ"),
    );
    output.stdout.trim().to_owned()
}

#[test]
fn tufa_server_verify_refuses_expired_trust_data() {
    use tufa_core::keys::{Algorithm, KeyType, PrivateKey, PublicKey as Public};
    // A repository published straight over the Notary API (the notary CLI always signs for
    // years) whose targets file expires a few seconds after publishing.
    let mut server = tufa::start(Backend::Sqlite);
    let gun = "registry.example.com/team/short-lived";
    let scratch = tempfile::tempdir().unwrap();
    // The root key as the notary client makes it: a self-signed leaf certificate with CN = the GUN.
    let (key_file, cert_file) = (scratch.path().join("root.key"), scratch.path().join("root.crt"));
    tufa_tests::process::run_tool(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
            .arg(&key_file),
    );
    tufa_tests::process::run_tool(
        Command::new("openssl")
            .args(["req", "-new", "-x509", "-sha256", "-days", "3650", "-extensions", "v3_req", "-subj"])
            .arg(format!("/CN={}", gun.replace('/', "\\/")))
            .arg("-key")
            .arg(&key_file)
            .arg("-out")
            .arg(&cert_file),
    );
    let pem = fs::read_to_string(&key_file).unwrap();
    let der: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let root_private =
        PrivateKey::from_pkcs8(Algorithm::Ecdsa, &base64::engine::general_purpose::STANDARD.decode(der).unwrap())
            .unwrap();
    let root_public = Public::new(KeyType::EcdsaX509, fs::read(&cert_file).unwrap());
    let (targets_key, snapshot_key) =
        (PrivateKey::generate(Algorithm::Ecdsa).unwrap(), PrivateKey::generate(Algorithm::Ecdsa).unwrap());
    let timestamp = Public::from_json(&server.get(&format!("/v2/{gun}/_trust/tuf/timestamp.key")).json()).unwrap();
    let mut keys = serde_json::Map::new();
    for key in [&root_public, &targets_key.public_key(), &snapshot_key.public_key(), &timestamp] {
        keys.insert(key.key_id(), key.to_json());
    }
    let root = signed(
        &json!({"_type": "Root", "consistent_snapshot": false, "expires": utc_in(3_600_000), "version": 1, "keys": keys,
        "roles": {
            "root": {"keyids": [root_public.key_id()], "threshold": 1},
            "targets": {"keyids": [targets_key.public_key().key_id()], "threshold": 1},
            "snapshot": {"keyids": [snapshot_key.public_key().key_id()], "threshold": 1},
            "timestamp": {"keyids": [timestamp.key_id()], "threshold": 1},
        }}),
        &root_private,
        &root_public.key_id(),
    );
    let content = b"short-lived release\n";
    let targets_expire = utc_in(4);
    let targets = signed(
        &json!({"_type": "Targets", "expires": targets_expire, "version": 1, "targets": {"v1": meta(content)},
            "delegations": {"keys": {}, "roles": []}}),
        &targets_key,
        &targets_key.public_key().key_id(),
    );
    let snapshot = signed(
        &json!({"_type": "Snapshot", "expires": utc_in(3_600_000), "version": 1,
            "meta": {"root": meta(&root), "targets": meta(&targets)}}),
        &snapshot_key,
        &snapshot_key.public_key().key_id(),
    );
    let response = server.post_update(gun, &[("root", &root), ("targets", &targets), ("snapshot", &snapshot)]);
    assert_eq!(response.status, 200, "{response}");
    let digest = hex_of(&tufa_core::keys::sha256(content));

    let setup = Setup::new(&server);
    let root_key = root_public.canonical_id().unwrap();
    let policy = setup.policy(
        "policy.toml",
        &pinned_policy(gun, &root_key, "[cache]\nrefresh-secs = 1\nmax-staleness-secs = 3600\n"),
    );
    let lenient = setup.policy(
        "lenient.toml",
        &format!(
            "[content-trust]\nmode = \"enforced\"\nallow-expired-cached-trust-data = true\n\n\
             [content-trust.trust-pinning.root-keys]\n\"{gun}\" = [\"{root_key}\"]\n\n\
             [cache]\nrefresh-secs = 1\nmax-staleness-secs = 3600\n"
        ),
    );
    let state = setup.state("state");
    let output = setup.verify(&format!("{gun}:v1"), &policy, &state, false);
    assert_eq!(sentence(&output), (0, format!("trusted: {gun}:v1 is sha256:{digest} signed by targets")));

    // Expired, as the server serves it.
    std::thread::sleep(Duration::from_secs(5));
    let expired = format!(
        "image {gun}:v1 is not trusted: targets of {gun} expired at {targets_expire} (mode enforced by content-trust.mode)"
    );
    let output = setup.verify(&format!("{gun}:v1"), &policy, &state, true);
    assert_eq!(json_answer(&output), (1, untrusted(&format!("{gun}:v1"), false, &expired)));
    // allow-expired-cached-trust-data does not apply to data the server serves.
    let output = setup.verify(&format!("{gun}:v1"), &lenient, &state, true);
    let (status, answer) = json_answer(&output);
    assert_eq!((status, answer["reason"].clone()), (1, json!(expired)), "{output}");
    // It does to cached data when the server cannot be reached.
    server.terminate();
    std::thread::sleep(Duration::from_millis(1100));
    let output = setup.verify(&format!("{gun}:v1"), &lenient, &state, false);
    assert_eq!(sentence(&output), (0, format!("trusted: {gun}:v1 is sha256:{digest} signed by targets")));
    let output = setup.verify(&format!("{gun}:v1"), &policy, &state, false);
    assert_eq!(sentence(&output), (1, format!("denied: {expired}")));
}

/// Lower-case hex of `bytes`.
fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
