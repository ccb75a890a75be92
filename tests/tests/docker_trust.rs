//! `docker trust` (Docker CLI, no daemon) against the builtin trust server with credentials from
//! a Docker config: generate and load signer keys, add a signer (which initialises the
//! repository), inspect, sign a release, remove the signer; refused without credentials and for a
//! principal without a role, with nothing changed. Once on SQLite and once on PostgreSQL; the
//! signer lifecycle also runs against Debian's Go notary-server as the reference.

use tufa_tests::audit::ec_key_pair;
use tufa_tests::docker::DockerTrust;
use tufa_tests::flows::{RELEASES, path_arg};
use tufa_tests::go_notary::{GoServerConfig, start as start_go_notary};
use tufa_tests::notary::Notary;
use tufa_tests::server::Server;
use tufa_tests::tufa::{AuthServer, Backend, start_builtin};

/// The registry host of the image names (docker sends that host's credentials to the token service).
const REGISTRY_HOST: &str = "registry.tufa.test";

/// The image repository, which is the GUN.
const GUN: &str = "registry.tufa.test/team/app";

/// The password of every test user.
const PASSWORD: &str = "correct horse battery staple";

/// The metadata files compared before and after a refused request.
const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// A builtin-mode server where `alice` publishes `registry.tufa.test/team/*`, `mallory` has no
/// role, and an `inspector` token (admin of everything) reads metadata for the checks.
struct Fixture {
    server: AuthServer,
    inspector: String,
}

impl Fixture {
    fn start(backend: Backend) -> Fixture {
        let server = start_builtin(backend, &[]);
        server.add_user("alice", PASSWORD);
        server.grant("alice", "publisher", &format!("{REGISTRY_HOST}/team/*"));
        server.add_user("mallory", PASSWORD);
        server.admin_ok(&["user", "add", "inspector", "--service"], b"");
        server.grant("inspector", "admin", "*");
        let inspector = format!("Bearer {}", server.create_token("inspector").text);
        Fixture { server, inspector }
    }

    fn state(&self) -> Vec<(u16, Vec<u8>)> {
        ROLES
            .iter()
            .map(|role| self.server.get_with(&format!("/v2/{GUN}/_trust/tuf/{role}.json"), &self.inspector))
            .map(|response| (response.status, response.body))
            .collect()
    }
}

/// The names of the delegations `targets.json` of [`GUN`] declares, sorted.
fn delegations(server: &Server, authorization: Option<&str>) -> Vec<String> {
    let response = server.request("GET", &format!("/v2/{GUN}/_trust/tuf/targets.json"), authorization, None);
    assert_eq!(response.status, 200, "targets.json: {response}");
    let roles = response.json()["signed"]["delegations"]["roles"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = roles.iter().filter_map(|role| role["name"].as_str().map(str::to_owned)).collect();
    names.sort();
    names
}

#[track_caller]
fn assert_not_authorized(output: &tufa_tests::process::CommandOutput) {
    assert!(
        output.combined().contains("you are not authorized to perform this operation"),
        "docker reports the refusal:\n{output}"
    );
}

/// Key generation, signer add (initialising the repository) and inspect by a publisher; refusals
/// without credentials and without a role, which change nothing; a reader inspects.
fn docker_trust_with_credentials(backend: Backend) {
    let fixture = Fixture::start(backend);
    let server = &fixture.server;

    let nobody = DockerTrust::new(server, "nobody", REGISTRY_HOST, None);
    let output = nobody.ok(&["trust", "key", "generate", "nobody"]);
    assert!(output.stdout.contains("Successfully generated and loaded private key."), "{output}");
    assert_not_authorized(&nobody.fails(&["trust", "signer", "add", "--key", "nobody.pub", "nobody", GUN]));
    let mallory = DockerTrust::new(server, "mallory", REGISTRY_HOST, Some(("mallory", PASSWORD)));
    mallory.ok(&["trust", "key", "generate", "mallory"]);
    assert_not_authorized(&mallory.fails(&["trust", "signer", "add", "--key", "mallory.pub", "mallory", GUN]));
    assert!(fixture.state().iter().all(|(status, _)| *status == 404), "no repository was created");

    let alice = DockerTrust::new(server, "alice", REGISTRY_HOST, Some(("alice", PASSWORD)));
    let output = alice.ok(&["trust", "key", "generate", "alice"]);
    assert!(output.stdout.contains("Successfully generated and loaded private key."), "{output}");
    let output = alice.ok(&["trust", "signer", "add", "--key", "alice.pub", "alice", GUN]);
    assert!(output.stdout.contains(&format!("Successfully initialized \"{GUN}\"")), "{output}");
    assert!(output.stdout.contains(&format!("Successfully added signer: alice to {GUN}")), "{output}");
    assert_eq!(delegations(server, Some(&fixture.inspector)), ["targets/alice", "targets/releases"]);
    let inspected = alice.inspect(GUN);
    assert_eq!(inspected[0]["Name"], GUN);
    assert_eq!(inspected[0]["Signers"][0]["Name"], "alice", "{inspected}");
    assert_eq!(inspected[0]["SignedTags"], serde_json::json!([]), "{inspected}");

    let before = fixture.state();
    assert!(before.iter().all(|(status, _)| *status == 200), "the inspector reads every role");
    assert_not_authorized(&mallory.fails(&["trust", "signer", "add", "--key", "mallory.pub", "mallory", GUN]));
    assert!(fixture.state() == before, "a refused signer add changed the repository");
    assert_not_authorized(&nobody.fails(&["trust", "signer", "remove", "alice", GUN]));
    assert!(fixture.state() == before, "a refused signer remove changed the repository");
    server.grant("mallory", "reader", GUN);
    assert_eq!(mallory.inspect(GUN)[0]["Signers"][0]["Name"], "alice", "a reader inspects");
}

/// The signer lifecycle on any trust server: load a key, add the signer, sign a release with it
/// (with the notary CLI: `docker trust sign` needs a daemon to find the image), remove the signer.
/// `credentials` go into the Docker config and `NOTARY_AUTH`; `inspector` reads metadata.
fn signer_lifecycle(server: &Server, credentials: Option<(&str, &str)>, inspector: Option<&str>) {
    let alice = DockerTrust::new(server, "alice", REGISTRY_HOST, credentials);
    let (key, public) = ec_key_pair(alice.config_dir(), "alice-signer");
    let output = alice.ok(&["trust", "key", "load", path_arg(&key), "--name", "alice"]);
    assert!(output.stdout.contains("Successfully imported key from"), "{output}");
    alice.ok(&["trust", "signer", "add", "--key", path_arg(&public), "alice", GUN]);

    let mut signer = Notary::new(server, "alice-notary");
    signer.set_auth(credentials);
    signer.ok(&["key", "import", path_arg(&key), "--role", RELEASES]);
    let file = signer.write_file("v1.bin", b"an image manifest stand-in\n");
    signer.ok(&["add", "-p", GUN, "v1", path_arg(&file), "--roles", RELEASES]);
    let inspected = alice.inspect(GUN);
    assert_eq!(inspected[0]["SignedTags"][0]["SignedTag"], "v1", "{inspected}");
    // (docker names the release's signer "Repo Admin": `docker trust sign` would also have
    // signed `targets/alice`, which the notary CLI does not.)

    // Docker CLI 28.2 removes a signer only once its last-signer prompt is answered "y": with
    // `--force`, or for a signer that is not the last, it exits 0 having done nothing.
    let output = alice.ok_with_input(b"y\n", &["trust", "signer", "remove", "alice", GUN]);
    assert!(output.stdout.contains(&format!("Successfully removed alice from {GUN}")), "{output}");
    assert_eq!(delegations(server, inspector), ["targets/releases"]);
    assert_eq!(alice.inspect(GUN)[0]["Signers"], serde_json::json!([]));
}

fn docker_trust_signer_lifecycle(backend: Backend) {
    let fixture = Fixture::start(backend);
    signer_lifecycle(&fixture.server, Some(("alice", PASSWORD)), Some(&fixture.inspector));
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

per_backend!(docker_trust_with_credentials, docker_trust_signer_lifecycle);

/// The same signer lifecycle against Debian's Go notary-server (no auth): what Tufa must match.
#[test]
fn go_reference_signer_lifecycle() {
    let server = start_go_notary(&GoServerConfig::default());
    signer_lifecycle(&server, None, None);
}
