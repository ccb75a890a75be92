//! Tests of the AuthZ decision over request bodies recorded as dockerd 20.10 sends them (`tests/data/authz/`).

use serde_json::json;

use super::*;
use crate::testing::{
    APP_V1, FLAKY_ERROR, HOST_NETWORK_ID, OTHER, TestDaemon, TestVerifier, UNTAGGED_ID, V2_REASON, data, policy,
    policy_with_run_options,
};

fn recorded(name: &str) -> AuthzRequest {
    serde_json::from_slice(&data(&format!("authz/{name}.json"))).unwrap()
}

async fn decide_with(request: &AuthzRequest, policy: &Policy, daemon: &TestDaemon) -> (AuthzResponse, Vec<String>) {
    let verifier = TestVerifier::new();
    let answer = decide(request, policy, &verifier, daemon).await;
    let asked = verifier.asked.lock().unwrap().clone();
    (answer, asked)
}

async fn run(name: &str) -> AuthzResponse {
    decide_with(&recorded(name), &policy(), &TestDaemon::new()).await.0
}

fn denied(msg: &str) -> AuthzResponse {
    AuthzResponse { allow: false, msg: msg.to_owned(), err: String::new() }
}

fn allowed() -> AuthzResponse {
    AuthzResponse::allow()
}

#[tokio::test]
async fn recorded_run_option_requests() {
    let privileged = denied("tufa: --privileged is not allowed by run-options.privileged");
    let cases = [
        ("create_privileged", privileged.clone()),
        ("create_lowercase_keys", privileged.clone()),
        ("create_encoded_path", privileged.clone()),
        ("start_old_api_privileged", privileged.clone()),
        // HostConfig fields at the top level of the body, which dockerd 20.10 applies when HostConfig is absent.
        ("create_toplevel_hostconfig", privileged),
        ("create_cap_sys_admin", denied("tufa: --cap-add SYS_ADMIN is not allowed by run-options.capabilities")),
        ("create_cap_sys_admin_lower", denied("tufa: --cap-add SYS_ADMIN is not allowed by run-options.capabilities")),
        ("create_cap_allowed", allowed()),
        (
            "create_bind_etc",
            denied(
                "tufa: -v bind mount of host path /etc is not allowed by run-options.bind-mounts (allowed: /scratch)",
            ),
        ),
        (
            "create_seccomp_unconfined",
            denied("tufa: --security-opt seccomp=unconfined is not allowed by run-options.seccomp-unconfined"),
        ),
        ("exec_privileged", denied("tufa: docker exec --privileged is not allowed by run-options.privileged-exec")),
        ("exec_plain", allowed()),
        (
            "volume_bind_etc",
            denied(
                "tufa: a volume with driver option device of host path /etc is not allowed by run-options.bind-mounts \
                 (allowed: /scratch)",
            ),
        ),
        ("volume_bind_scratch", allowed()),
        ("load", denied("tufa: docker load is not allowed by run-options.load (a loaded image is never verified)")),
        (
            "import",
            denied("tufa: docker import is not allowed by run-options.import (an imported image is never verified)"),
        ),
        ("build", allowed()),
        ("start_plain", allowed()),
        ("list_containers", allowed()),
    ];
    for (name, expected) in cases {
        assert_eq!(run(name).await, expected, "{name}");
    }
}

#[tokio::test]
async fn a_body_the_plugin_cannot_see_is_denied() {
    let expected = denied("tufa: request body not visible to the plugin (over 1 MiB?) (request)");
    assert_eq!(run("create_padded_no_body").await, expected);
    assert_eq!(run("create_chunked_no_body").await, expected);
    // The same for exec and volumes, whose bodies carry what is checked.
    let mut exec = recorded("exec_privileged");
    exec.request_body = None;
    assert_eq!(decide_with(&exec, &policy(), &TestDaemon::new()).await.0, expected);
    let mut start = recorded("start_old_api_privileged");
    start.request_body = Some(String::new());
    assert_eq!(decide_with(&start, &policy(), &TestDaemon::new()).await.0, expected);
}

#[tokio::test]
async fn recorded_pulls() {
    let (answer, asked) = decide_with(&recorded("pull_tag"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec!["registry.example.com/team/app:v1".to_owned()]));
    let (answer, asked) = decide_with(&recorded("pull_digest"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec![format!("registry.example.com/team/app@{APP_V1}")]));
    assert_eq!(
        run("pull_untrusted_tag").await,
        denied(&format!(
            "tufa: image registry.example.com/team/app:v2 is not trusted: {V2_REASON} (mode enforced by \
             content-trust.mode)"
        ))
    );
    assert_eq!(
        run("pull_all_tags").await,
        denied(
            "tufa: image registry.example.com/team/app is not trusted: pulling every tag (docker pull --all-tags) \
             cannot be verified; pull one tag or digest (mode enforced by content-trust.mode)"
        )
    );
    assert_eq!(
        run("pull_disallowed_registry").await,
        denied(
            "tufa: image quay.io/evil/miner:latest is not allowed: registry quay.io is not in registries.allowed \
             (mode enforced by content-trust.mode)"
        )
    );
}

fn pull(from_image: &str, tag: &str) -> AuthzRequest {
    let mut request = recorded("pull_tag");
    request.request_uri = Some(format!("/v1.41/images/create?fromImage={from_image}&tag={tag}"));
    request
}

#[tokio::test]
async fn pull_rules_exemptions_and_modes() {
    // A tag in fromImage and a tag parameter: the parameter wins, as in the daemon.
    let (answer, asked) =
        decide_with(&pull("registry.example.com/team/app:v9", "v1"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec!["registry.example.com/team/app:v1".to_owned()]));
    // An exempt image is never verified.
    let (answer, asked) =
        decide_with(&pull("registry.example.com/debug/shell", "1"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), Vec::<String>::new()));
    // Permissive rule: untrusted but allowed.
    let (answer, asked) =
        decide_with(&pull("registry.example.com/lab/exp", "latest"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec!["registry.example.com/lab/exp:latest".to_owned()]));
    // require-digest.
    let (answer, asked) =
        decide_with(&pull("registry.example.com/prod/api", "v1"), &policy(), &TestDaemon::new()).await;
    assert_eq!(
        (answer, asked),
        (
            denied(
                "tufa: image registry.example.com/prod/api:v1 is not allowed: rule \"registry.example.com/prod/*\" \
                 requires registry.example.com/prod/api to be named by digest (@sha256:…); \
                 registry.example.com/prod/api:v1 names none (mode enforced by content-trust.mode)"
            ),
            Vec::<String>::new()
        )
    );
    // The verifier cannot decide: closed, unless fail-open.
    let flaky = pull("registry.example.com/team/flaky", "v1");
    assert_eq!(
        decide_with(&flaky, &policy(), &TestDaemon::new()).await.0,
        denied(&format!(
            "tufa: image registry.example.com/team/flaky:v1 is not trusted: trust could not be decided: \
             {FLAKY_ERROR} (run-options.fail-open is off)"
        ))
    );
    let open = policy_with_run_options("fail-open = true");
    assert_eq!(decide_with(&flaky, &open, &TestDaemon::new()).await.0, allowed());
    // Parameters in a form body cannot be seen, so they are refused.
    let mut form = pull("registry.example.com/team/app", "v1");
    form.request_headers =
        Some([("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned())].into_iter().collect());
    assert_eq!(
        decide_with(&form, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: image parameters sent in a form body are not visible to the plugin (request)")
    );
    // A bad reference.
    assert_eq!(
        decide_with(&pull("Bad", "v1"), &policy(), &TestDaemon::new()).await.0,
        denied("tufa: cannot pull \"Bad\": repository name \"Bad\" must be lowercase (request)")
    );
}

#[tokio::test]
async fn recorded_creates_by_tag_digest_and_id() {
    let (answer, asked) = decide_with(&recorded("create_trusted_tag"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec!["registry.example.com/team/app:v1".to_owned()]));
    assert_eq!(run("create_by_digest").await, allowed());
    // A short ID: judged by the image's names.
    let (answer, asked) = decide_with(&recorded("create_by_id"), &policy(), &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec!["registry.example.com/team/app:v1".to_owned()]));
    assert_eq!(
        run("create_by_full_id").await,
        denied(&format!(
            "tufa: image {UNTAGGED_ID} is not trusted: the local image has no repository tag or digest to verify \
             (mode enforced by content-trust.mode)"
        ))
    );
    assert_eq!(
        run("create_untrusted").await,
        denied(&format!(
            "tufa: image registry.example.com/team/app:v2 is not trusted: {V2_REASON} (mode enforced by \
             content-trust.mode)"
        ))
    );
}

#[tokio::test]
async fn a_local_image_must_carry_the_signed_digest() {
    // app:v1 was retagged locally from something else: its RepoDigests do not hold the signed digest.
    let retagged = TestDaemon::new().with(
        "registry.example.com/team/app:v1",
        Ok(Some(vec![
            "registry.example.com/team/app:v1".to_owned(),
            format!("registry.example.com/team/other@{APP_V1}"),
        ])),
    );
    assert_eq!(
        decide_with(&recorded("create_retagged"), &policy(), &retagged).await.0,
        denied(&format!(
            "tufa: image registry.example.com/team/app:v1 is not trusted: the local image is not the signed content: \
             registry.example.com/team/app:v1 is signed as {APP_V1}, but the local image's repository digests are \
             registry.example.com/team/other@{APP_V1} (mode enforced by content-trust.mode)"
        ))
    );
    // The same digest under another repository does not count, nor does another digest of the repository.
    let other = TestDaemon::new()
        .with("registry.example.com/team/app:v1", Ok(Some(vec![format!("registry.example.com/team/app@{OTHER}")])));
    assert_eq!(
        decide_with(&recorded("create_retagged"), &policy(), &other).await.0,
        denied(&format!(
            "tufa: image registry.example.com/team/app:v1 is not trusted: the local image is not the signed content: \
             registry.example.com/team/app:v1 is signed as {APP_V1}, but the local image's repository digests are \
             registry.example.com/team/app@{OTHER} (mode enforced by content-trust.mode)"
        ))
    );
    // Not present locally: the daemon answers 404 and the CLI pulls, which is checked on its own.
    let absent = TestDaemon::new().with("registry.example.com/team/app:v1", Ok(None));
    assert_eq!(decide_with(&recorded("create_trusted_tag"), &policy(), &absent).await.0, allowed());
    // The daemon cannot be asked: closed.
    let broken = TestDaemon::new().with("registry.example.com/team/app:v1", Err("connection refused".to_owned()));
    assert_eq!(
        decide_with(&recorded("create_trusted_tag"), &policy(), &broken).await.0,
        denied(
            "tufa: image registry.example.com/team/app:v1 is not trusted: trust could not be decided: the Docker \
             daemon could not be asked about the image: connection refused (run-options.fail-open is off)"
        )
    );
    // An image ID whose only name is untrusted.
    let untrusted_id =
        TestDaemon::new().with("3fd9065eaf02", Ok(Some(vec!["registry.example.com/team/app:v2".to_owned()])));
    assert_eq!(
        decide_with(&recorded("create_by_id"), &policy(), &untrusted_id).await.0,
        denied(&format!(
            "tufa: image 3fd9065eaf02 is not trusted: none of its names is trusted \
             (registry.example.com/team/app:v2: {V2_REASON}) (every name of the image)"
        ))
    );
    // An ID the daemon does not have: it answers 404.
    let unknown = TestDaemon::new().with("3fd9065eaf02", Ok(None));
    assert_eq!(decide_with(&recorded("create_by_id"), &policy(), &unknown).await.0, allowed());
}

#[tokio::test]
async fn disabled_mode_still_checks_run_options() {
    let disabled = Policy::from_toml_str("[content-trust]\nmode = \"disabled\"\n").unwrap();
    let daemon = TestDaemon::new();
    assert_eq!(decide_with(&recorded("create_untrusted"), &disabled, &daemon).await, (allowed(), Vec::new()));
    assert_eq!(
        decide_with(&recorded("create_privileged"), &disabled, &daemon).await.0,
        denied("tufa: --privileged is not allowed by run-options.privileged")
    );
}

#[tokio::test]
async fn malformed_bodies_are_denied() {
    let mut request = recorded("create_trusted_tag");
    request.request_body = Some("!!!".to_owned());
    let answer = decide_with(&request, &policy(), &TestDaemon::new()).await.0;
    assert_eq!(
        answer,
        denied("tufa: the forwarded request body is not valid base64: Invalid symbol 33, offset 0. (request)")
    );
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(b"[1]"));
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: the container create body is not a JSON object (request)")
    );
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(br#"{"Image": 7}"#));
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: the container create body's Image must be a string (request)")
    );
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(br#"{"Cmd": ["sh"]}"#));
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: the container create body names no image (request)")
    );
    request.request_body = Some(
        base64::engine::general_purpose::STANDARD
            .encode(br#"{"Image": "a", "HostConfig": {"Privileged": false, "privileged": true}}"#),
    );
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied(
            "tufa: the body spells the field Privileged more than once (as \"privileged\" and another spelling), \
             which the daemon reads case-insensitively (request)"
        )
    );
}

#[test]
fn uris_are_read_as_the_daemon_routes_them() {
    let route = parse_uri("/v1.41//containers/./x/../create?name=a%20b&x=1;y=2&tag=").unwrap();
    assert_eq!(route.segments, vec!["containers", "create"]);
    assert_eq!(route.query, vec![("name".to_owned(), "a b".to_owned()), ("tag".to_owned(), String::new())]);
    assert_eq!(parse_uri("/images/create").unwrap().segments, vec!["images", "create"]);
    assert_eq!(parse_uri("/v1.41/version").unwrap().segments, vec!["version"]);
    assert_eq!(
        parse_uri("/%zz").map(|route| route.segments),
        Err("the request path \"/%zz\" cannot be decoded".to_owned())
    );
    // The absolute form is routed on its path.
    let route = parse_uri("http://docker/v1.41/containers/create?name=x").unwrap();
    assert_eq!(
        (route.segments, route.query),
        (vec!["containers".to_owned(), "create".to_owned()], vec![("name".to_owned(), "x".to_owned())])
    );
    assert_eq!(parse_uri("http://docker?fromImage=a").unwrap().query, vec![("fromImage".to_owned(), "a".to_owned())]);
    assert_eq!(parse_uri("http://docker").unwrap().segments, Vec::<String>::new());
    assert_eq!(
        parse_uri("containers/create").map(|route| route.segments),
        Err("the request URI \"containers/create\" is neither a path nor an absolute URL".to_owned())
    );
}

#[tokio::test]
async fn buildkit_routes_follow_the_build_rule() {
    let no_build = Policy::from_toml_str("[content-trust]\nmode = \"enforced\"\n").unwrap();
    for uri in ["/v1.41/build", "/session", "/v1.41/grpc"] {
        let mut request = recorded("build");
        request.request_uri = Some(uri.to_owned());
        assert_eq!(
            decide_with(&request, &no_build, &TestDaemon::new()).await.0,
            denied("tufa: docker build is not allowed by run-options.build"),
            "{uri}"
        );
        assert_eq!(decide_with(&request, &policy(), &TestDaemon::new()).await.0, allowed(), "{uri}");
    }
    // RUN steps with the host's network follow the host-network rule.
    let mut host = recorded("build");
    host.request_uri = host.request_uri.map(|uri| uri.replace("networkmode=default", "networkmode=host"));
    assert_eq!(
        decide_with(&host, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: docker build --network host is not allowed by run-options.host-network")
    );
    let host_network = policy_with_run_options("host-network = true");
    assert_eq!(decide_with(&host, &host_network, &TestDaemon::new()).await.0, allowed());
}

#[tokio::test]
async fn an_absolute_form_uri_is_checked_like_a_path() {
    let mut request = recorded("create_privileged");
    request.request_uri = Some("http://docker/v1.41/containers/create".to_owned());
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: --privileged is not allowed by run-options.privileged")
    );
}

#[tokio::test]
async fn field_names_are_read_case_insensitively_as_the_daemon_does() {
    let body =
        br#"{"image": "registry.example.com/team/app:v1", "hostConfig": {"\u017FecurityOpt": ["seccomp=unconfined"]}}"#;
    let mut request = recorded("create_trusted_tag");
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(body));
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: --security-opt seccomp=unconfined is not allowed by run-options.seccomp-unconfined")
    );
    let exec = br#"{"PRIVILEGED": true, "Cmd": ["sh"]}"#;
    let mut request = recorded("exec_plain");
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(exec));
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied("tufa: docker exec --privileged is not allowed by run-options.privileged-exec")
    );
    let volume = br#"{"driver": "local", "driveropts": {"device": "/etc", "o": "bind", "type": "none"}}"#;
    let mut request = recorded("volume_bind_scratch");
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(volume));
    assert_eq!(
        decide_with(&request, &policy(), &TestDaemon::new()).await.0,
        denied(
            "tufa: a volume with driver option device of host path /etc is not allowed by run-options.bind-mounts \
             (allowed: /scratch)"
        )
    );
}

#[tokio::test]
async fn a_prefixed_image_id_is_judged_by_its_names() {
    let daemon = TestDaemon::new().with(
        &format!("sha256:{}", "3fd9065eaf02feaf94d68376da52541925650b81698c53c6824d92ff63f98353"),
        Ok(Some(vec![format!("registry.example.com/team/app@{APP_V1}")])),
    );
    let mut request = recorded("create_by_id");
    let body = br#"{"Image": "sha256:3fd9065eaf02feaf94d68376da52541925650b81698c53c6824d92ff63f98353"}"#;
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(body));
    let (answer, asked) = decide_with(&request, &policy(), &daemon).await;
    assert_eq!((answer, asked), (allowed(), vec![format!("registry.example.com/team/app@{APP_V1}")]));
}

/// `recorded(name)` with its body replaced by `body`.
fn with_json_body(name: &str, body: &serde_json::Value) -> AuthzRequest {
    let mut request = recorded(name);
    let bytes = serde_json::to_vec(body).unwrap();
    request.request_body = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
    request
}

#[tokio::test]
async fn swarm_and_plugins_are_denied_by_default() {
    let swarm = "tufa: joining or starting a swarm is not allowed by run-options.swarm (swarm tasks are created by \
                 the daemon without asking the plugin)";
    let service = "tufa: a swarm service is not allowed by run-options.swarm (swarm tasks are created by the daemon \
                   without asking the plugin)";
    let install = "tufa: installing a plugin is not allowed by run-options.plugins (a plugin runs with the host privileges it \
         asks for)";
    let set = "tufa: upgrading or reconfiguring a plugin is not allowed by run-options.plugins (a plugin runs with \
               the host privileges it asks for)";
    for (name, message) in [
        ("swarm_init", swarm),
        ("swarm_join", swarm),
        ("service_create_plain", service),
        ("service_update_untrusted", service),
        ("plugin_install", install),
        ("plugin_set", set),
    ] {
        let (answer, asked) = decide_with(&recorded(name), &policy(), &TestDaemon::new()).await;
        assert_eq!((answer, asked), (denied(message), vec![]), "{name}");
    }
    // An upgrade names the plugin with its slashes before the action.
    let mut upgrade = recorded("plugin_set");
    upgrade.request_uri = Some("/v1.41/plugins/vieux/sshfs:latest/upgrade?remote=vieux%2Fsshfs%3Anext".to_owned());
    assert_eq!(run_request(&upgrade, &policy()).await, denied(set));
    let plugins = policy_with_run_options("plugins = true");
    assert_eq!(run_request(&recorded("plugin_install"), &plugins).await, allowed());
    assert_eq!(run_request(&upgrade, &plugins).await, allowed());
}

async fn run_request(request: &AuthzRequest, policy: &Policy) -> AuthzResponse {
    decide_with(request, policy, &TestDaemon::new()).await.0
}

#[tokio::test]
async fn swarm_services_are_checked_as_pulls_and_containers() {
    let swarm = policy_with_run_options("swarm = true");
    assert_eq!(run_request(&recorded("swarm_init"), &swarm).await, allowed());
    let (answer, asked) = decide_with(&recorded("service_create_plain"), &swarm, &TestDaemon::new()).await;
    assert_eq!((answer, asked), (allowed(), vec!["registry.example.com/team/app:v1".to_owned()]));
    assert_eq!(
        run_request(&recorded("service_update_untrusted"), &swarm).await,
        denied(
            "tufa: image quay.io/evil/miner:latest is not allowed: registry quay.io is not in registries.allowed \
             (mode enforced by content-trust.mode)"
        )
    );
    assert_eq!(
        run_request(&recorded("service_create_bind_cap"), &swarm).await,
        denied(
            "tufa: --mount type=bind of host path /etc is not allowed by run-options.bind-mounts (allowed: /scratch)"
        )
    );
    // The Docker CLI sends --network host as the host network's ID; the daemon says what it is.
    assert_eq!(
        run_request(&recorded("service_create_host_network"), &swarm).await,
        denied(&format!(
            "tufa: --network host is not allowed by run-options.host-network (network {HOST_NETWORK_ID} is the host \
             network)"
        ))
    );
    let host_network = policy_with_run_options("swarm = true\nhost-network = true");
    assert_eq!(run_request(&recorded("service_create_host_network"), &host_network).await, allowed());

    let image = "registry.example.com/team/app:v1";
    let cases = [
        // Keys spelled as Go reads them, case-insensitively.
        (
            json!({"tasktemplate": {"containerspec": {"image": image,
                "MOUNTS": [{"type": "bind", "ſource": "/", "target": "/host"}]}}}),
            "tufa: --mount type=bind of host path / is not allowed by run-options.bind-mounts (allowed: /scratch)",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Image": image, "CapabilityAdd": ["sys_admin"]}}}),
            "tufa: --cap-add SYS_ADMIN is not allowed by run-options.capabilities",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Image": image,
                "Privileges": {"Seccomp": {"Mode": "unconfined"}}}}}),
            "tufa: seccomp mode \"unconfined\" is not allowed by run-options.seccomp-unconfined",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Image": image,
                "Privileges": {"AppArmor": {"Mode": "disabled"}}}}}),
            "tufa: AppArmor mode \"disabled\" is not allowed by run-options.apparmor-unconfined",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Image": image,
                "Privileges": {"SELinuxContext": {"Disable": true}}}}}),
            "tufa: disabling SELinux labels is not allowed by run-options.selinux-unconfined",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Image": image}}, "Networks": [{"Target": "HOST"}]}),
            "tufa: --network host is not allowed by run-options.host-network",
        ),
        (
            json!({"TaskTemplate": {"Runtime": "plugin", "PluginSpec": {"Remote": "vieux/sshfs"}}}),
            "tufa: a plugin service is not allowed by run-options.plugins (a plugin runs with the host privileges \
             it asks for)",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {"Image": "registry.example.com/team/app:v2"}}}),
            "tufa: image registry.example.com/team/app:v2 is not trusted: tag v2 of registry.example.com/team/app \
             is not signed by targets/qa; signed only by targets/releases (mode enforced by content-trust.mode)",
        ),
        (
            json!({"TaskTemplate": {"ContainerSpec": {}}}),
            "tufa: the service's ContainerSpec.Image must be a non-empty string (request)",
        ),
        (json!({"Name": "x"}), "tufa: the service spec has no TaskTemplate (request)"),
        (json!(["not", "a", "spec"]), "tufa: the service spec is not a JSON object (request)"),
    ];
    for (body, message) in cases {
        let request = with_json_body("service_create_plain", &body);
        assert_eq!(run_request(&request, &swarm).await, denied(message), "{body}");
    }
    // A network that is not the host network, by name or ID, is fine.
    let overlay = json!({"TaskTemplate": {"ContainerSpec": {"Image": image},
        "Networks": [{"Target": "tufa-overlay"}, {"Target": "8d1f0c3b2a4e"}]}});
    assert_eq!(run_request(&with_json_body("service_create_plain", &overlay), &swarm).await, allowed());
    // A plugin service is a plugin install.
    let plugin = json!({"TaskTemplate": {"Runtime": "plugin", "PluginSpec": {"Remote": "vieux/sshfs"}}});
    let both = policy_with_run_options("swarm = true\nplugins = true");
    assert_eq!(run_request(&with_json_body("service_create_plain", &plugin), &both).await, allowed());
    // A service body over the daemon's 1 MiB forwarding limit arrives without its body.
    let mut hidden = recorded("service_create_plain");
    hidden.request_body = None;
    assert_eq!(
        run_request(&hidden, &swarm).await,
        denied("tufa: request body not visible to the plugin (over 1 MiB?) (request)")
    );
}
