//! The Docker authorization plugin (`tufa-server authz-plugin`) driven by Debian's real dockerd
//! 20.10: an image is pushed into a local docker-registry by a daemon without the plugin, its tag
//! is signed with the real notary CLI against tufa-server (target = tag, digest and length of the
//! manifest, as `docker trust sign` does), and a second daemon that loads the plugin then allows
//! or denies real `docker pull`, `docker create` and `docker load` commands. Needs root; a
//! machine where dockerd cannot run fails the test with the daemon's log.

use std::fs;

use tufa_tests::dockerd::{AuthzPlugin, Dockerd};
use tufa_tests::flows::path_arg;
use tufa_tests::images::SignedImages;
use tufa_tests::registry::Registry;
use tufa_tests::tufa::{self, Backend};

/// The denial the Docker CLI prints for `message` from plugin `plugin`.
fn denied(plugin: &str, message: &str) -> String {
    format!("Error response from daemon: authorization denied by plugin {plugin}: tufa: {message}")
}

/// Prints the image's marker file with the shell's builtins (the test images hold only `/bin/sh`).
const READ_HELLO: &str = "read -r line < /hello; echo \"$line\"";

#[test]
fn the_plugin_allows_trusted_images_and_denies_the_rest_in_a_real_dockerd() {
    let server = tufa::start(Backend::Sqlite);
    let registry = Registry::start_open();
    let images = SignedImages::publish(&server, &registry);
    let (repo, signed, unsigned, digest) = (&images.repository, &images.signed, &images.unsigned, &images.digest);
    let work = tempfile::tempdir().unwrap();
    let allowed_dir = work.path().join("allowed");
    fs::create_dir_all(allowed_dir.join("data")).unwrap();
    let policy = images.write_policy(
        &server,
        &format!(
            "[run-options]\nbind-mounts = [\"{}\"]\ncapabilities = [\"NET_ADMIN\"]\nload = false\n",
            allowed_dir.display()
        ),
    );

    // The plugin first (dockerd looks for it by name in /run/docker/plugins), then the daemon.
    let daemon_socket = work.path().join("enforced.sock");
    let plugin = AuthzPlugin::start(&AuthzPlugin::unique_name("dockerd"), &policy, &daemon_socket, &[]);
    let name = plugin.name().to_owned();
    let daemon = Dockerd::start("enforced", Some(&name), Some(&daemon_socket));
    let info = daemon.ok(&["info", "--format", "{{json .Plugins.Authorization}}"]);
    assert_eq!(info.stdout.trim(), format!("[\"{name}\"]"), "dockerd loaded the plugin");

    // Running the trusted image before it is local: the CLI's create gets 404, it pulls (checked
    // on its own) and creates again; the container really runs.
    let run = daemon.ok(&["run", "--rm", "--network", "none", signed, "/bin/sh", "-c", READ_HELLO]);
    assert_eq!(run.stdout, "signed\n");
    assert!(run.stderr.contains(&format!("Digest: {digest}")), "{run}");

    // Pulls: the signed tag is allowed, the unsigned one denied with the reason.
    let pull = daemon.ok(&["pull", signed]);
    assert!(pull.stdout.contains(&format!("Digest: {digest}")), "{pull}");
    let pull = daemon.fails(&["pull", unsigned]);
    assert_eq!(
        pull.stderr.trim(),
        denied(
            &name,
            &format!(
                "image {unsigned} is not trusted: tag v2 of {repo} is not signed (mode enforced by content-trust.mode)"
            )
        )
    );

    // Creating a container of the trusted image: by tag, by digest and by local image ID.
    daemon.ok(&["create", signed, "/bin/sh"]);
    daemon.ok(&["create", &format!("{repo}@{digest}"), "/bin/sh"]);
    let id = daemon.ok(&["image", "inspect", "--format", "{{.Id}}", signed]).stdout.trim().to_owned();
    daemon.ok(&["create", &id, "/bin/sh"]);
    daemon.ok(&["create", "--cap-add", "CAP_NET_ADMIN", signed, "/bin/sh"]);
    let allowed_mount = format!("{}:/x", allowed_dir.join("data").display());
    daemon.ok(&["create", "-v", &allowed_mount, signed, "/bin/sh"]);

    // A local tag that is not signed, pointing at the trusted content, is denied by its name.
    daemon.ok(&["tag", signed, unsigned]);
    let create = daemon.fails(&["create", unsigned, "/bin/sh"]);
    assert_eq!(
        create.stderr.trim(),
        denied(
            &name,
            &format!(
                "image {unsigned} is not trusted: tag v2 of {repo} is not signed (mode enforced by content-trust.mode)"
            )
        )
    );

    // Dangerous run options, each naming its rule.
    let cases: [(&[&str], &str); 9] = [
        (&["--privileged"], "--privileged is not allowed by run-options.privileged"),
        (&["--cap-add", "SYS_ADMIN"], "--cap-add SYS_ADMIN is not allowed by run-options.capabilities"),
        (&["--cap-add", "CAP_SYS_ADMIN"], "--cap-add SYS_ADMIN is not allowed by run-options.capabilities"),
        (
            &["-v", "/etc:/x"],
            "-v bind mount of host path /etc is not allowed by run-options.bind-mounts (allowed: ALLOWED)",
        ),
        (
            &["--mount", "type=bind,src=/etc,dst=/y"],
            "--mount type=bind of host path /etc is not allowed by run-options.bind-mounts (allowed: ALLOWED)",
        ),
        (
            &["--security-opt", "seccomp=unconfined"],
            "--security-opt seccomp=unconfined is not allowed by run-options.seccomp-unconfined",
        ),
        (&["--pid", "host"], "--pid=host is not allowed by run-options.host-pid"),
        (&["--network", "host"], "--network=host is not allowed by run-options.host-network"),
        (&["--device", "/dev/null"], "--device /dev/null is not allowed by run-options.devices"),
    ];
    let allowed_text = allowed_dir.display().to_string();
    for (options, message) in cases {
        let mut args = vec!["create"];
        args.extend_from_slice(options);
        args.extend([signed.as_ref(), "/bin/sh"]);
        let create = daemon.fails(&args);
        assert_eq!(create.stderr.trim(), denied(&name, &message.replace("ALLOWED", &allowed_text)), "{options:?}");
    }

    // Exec into a running container is allowed, privileged exec is not.
    let container = daemon.ok(&["run", "-di", "--network", "none", signed, "/bin/sh"]).stdout.trim().to_owned();
    let exec = daemon.ok(&["exec", &container, "/bin/sh", "-c", "echo exec"]);
    assert_eq!(exec.stdout, "exec\n");
    let exec = daemon.fails(&["exec", "--privileged", &container, "/bin/sh", "-c", "echo exec"]);
    assert_eq!(
        exec.stderr.trim(),
        denied(&name, "docker exec --privileged is not allowed by run-options.privileged-exec")
    );

    // Volumes whose driver options bind host paths follow the bind-mount allow list.
    let device = format!("device={}", allowed_dir.join("data").display());
    daemon.ok(&["volume", "create", "-d", "local", "-o", "type=none", "-o", "o=bind", "-o", &device, "good"]);
    let volume = daemon.fails(&[
        "volume",
        "create",
        "-d",
        "local",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        "device=/etc",
        "bad",
    ]);
    assert_eq!(
        volume.stderr.trim(),
        denied(
            &name,
            &format!(
                "a volume with driver option device of host path /etc is not allowed by run-options.bind-mounts \
                 (allowed: {allowed_text})"
            )
        )
    );

    // A create padded past 1 MiB reaches the plugin without its body: denied, even privileged.
    let labels: String = (0..20_000).map(|index| format!("padding.{index}={}\n", "x".repeat(64))).collect();
    let label_file = work.path().join("labels");
    fs::write(&label_file, labels).unwrap();
    let create =
        daemon.fails(&["create", "--privileged", "--label-file", label_file.to_str().unwrap(), signed, "/bin/sh"]);
    assert_eq!(create.stderr.trim(), denied(&name, "request body not visible to the plugin (over 1 MiB?) (request)"));

    // Swarm mode and managed plugins would run containers the plugin never sees: denied by default.
    let swarm = daemon.fails(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    assert_eq!(
        swarm.stderr.trim(),
        denied(
            &name,
            "joining or starting a swarm is not allowed by run-options.swarm (swarm tasks are created by the daemon \
             without asking the plugin)"
        )
    );
    let service = daemon.fails(&["service", "create", "--detach", "--no-resolve-image", "--cap-add", "ALL", signed]);
    assert_eq!(
        service.stderr.trim(),
        denied(
            &name,
            "a swarm service is not allowed by run-options.swarm (swarm tasks are created by the daemon without \
             asking the plugin)"
        )
    );
    let plugin = daemon.fails(&["plugin", "set", "tufa-absent/plugin", "DEBUG=1"]);
    assert_eq!(
        plugin.stderr.trim(),
        denied(
            &name,
            "upgrading or reconfiguring a plugin is not allowed by run-options.plugins (a plugin runs with the host \
             privileges it asks for)"
        )
    );

    // docker load, import and build are denied as a whole by the policy.
    let load = daemon.fails(&["load", "-i", path_arg(&images.saved)]);
    assert_eq!(
        load.stderr.trim(),
        denied(&name, "docker load is not allowed by run-options.load (a loaded image is never verified)")
    );

    let import = daemon.fails(&["import", path_arg(&images.saved), "imported:1"]);
    assert_eq!(
        import.stderr.trim(),
        denied(&name, "docker import is not allowed by run-options.import (an imported image is never verified)")
    );
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
    let build = daemon.fails(&["build", "-t", "built:1", path_arg(&context)]);
    assert!(
        build.stderr.trim_end().ends_with(&denied(&name, "docker build is not allowed by run-options.build")),
        "{build}"
    );

    // Every allowed create made a container (five created, one left running); no denied one did.
    let containers = daemon.ok(&["ps", "-a", "--format", "{{.Image}}"]);
    assert_eq!(containers.stdout.lines().count(), 6, "{containers}");
    let images_listed = daemon.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images_listed.stdout.lines().count(), 2, "only v1 and its local tag v2: {images_listed}");
}

#[test]
fn with_swarm_allowed_services_are_checked_like_pulls_and_containers_in_a_real_dockerd() {
    let server = tufa::start(Backend::Sqlite);
    let registry = Registry::start_open();
    let images = SignedImages::publish(&server, &registry);
    let (repo, signed, unsigned) = (&images.repository, &images.signed, &images.unsigned);
    let work = tempfile::tempdir().unwrap();
    let policy = images.write_policy(&server, "[run-options]\nswarm = true\n");
    let daemon_socket = work.path().join("swarm.sock");
    let plugin = AuthzPlugin::start(&AuthzPlugin::unique_name("swarm"), &policy, &daemon_socket, &[]);
    let name = plugin.name().to_owned();
    let daemon = Dockerd::start("swarm", Some(&name), Some(&daemon_socket));
    daemon.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);

    // The signed image as a service is allowed; the unsigned one is denied as its pull would be.
    daemon.ok(&["service", "create", "--detach", "--no-resolve-image", "--name", "good", signed]);
    let service = daemon.fails(&["service", "create", "--detach", "--no-resolve-image", unsigned]);
    let untrusted = format!(
        "image {unsigned} is not trusted: tag v2 of {repo} is not signed (mode enforced by content-trust.mode)"
    );
    assert_eq!(service.stderr.trim(), denied(&name, &untrusted));
    let update = daemon.fails(&["service", "update", "--detach", "--no-resolve-image", "--image", unsigned, "good"]);
    assert_eq!(update.stderr.trim(), denied(&name, &untrusted));

    // The service's options follow the run-option rules, whatever swarm allows.
    let cases: [(&[&str], &str); 2] = [
        (
            &["--mount", "type=bind,src=/etc,dst=/host-etc"],
            "--mount type=bind of host path /etc is not allowed by run-options.bind-mounts (no host paths are \
             allowed)",
        ),
        (&["--cap-add", "SYS_ADMIN"], "--cap-add SYS_ADMIN is not allowed by run-options.capabilities"),
    ];
    for (options, message) in cases {
        let mut args = vec!["service", "create", "--detach", "--no-resolve-image"];
        args.extend_from_slice(options);
        args.push(signed);
        let service = daemon.fails(&args);
        assert_eq!(service.stderr.trim(), denied(&name, message), "{options:?}");
    }
    // The CLI sends --network host as the host network's swarm-scope ID; the plugin asks the daemon what it is.
    let service = daemon.fails(&["service", "create", "--detach", "--no-resolve-image", "--network", "host", signed]);
    let prefix = denied(&name, "--network host is not allowed by run-options.host-network (network ");
    let message = service.stderr.trim();
    assert!(message.starts_with(&prefix) && message.ends_with(" is the host network)"), "{service}");
    let id = &message[prefix.len()..message.len() - " is the host network)".len()];
    assert!(id != "host" && id.bytes().all(|byte| byte.is_ascii_alphanumeric()), "a network ID, not a name: {id}");
    let services = daemon.ok(&["service", "ls", "--format", "{{.Name}} {{.Image}}"]);
    assert_eq!(services.stdout.trim(), format!("good {signed}"), "only the allowed service exists");
    daemon.ok(&["swarm", "leave", "--force"]);
}
