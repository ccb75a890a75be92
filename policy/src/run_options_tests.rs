//! Tests of the run-option checks: each option allowed and denied, shapes that are wrong, and path normalisation.

use serde_json::json;

use super::*;
use crate::Policy;

fn rules(toml: &str) -> RunOptions {
    Policy::from_toml_str(&format!("[run-options]\n{toml}")).unwrap().run_options().clone()
}

fn denial(rule: &str, reason: &str) -> Result<(), Denial> {
    Err(Denial { rule: rule.to_owned(), reason: reason.to_owned() })
}

fn create(host_config: Value) -> Value {
    json!({"Image": "alpine", "Cmd": ["true"], "HostConfig": host_config})
}

#[test]
fn plain_container_is_allowed() {
    let none = RunOptions::default();
    assert_eq!(check_container_create(&json!({"Image": "alpine"}), &none), Ok(()));
    assert_eq!(check_container_create(&json!({"Image": "alpine", "HostConfig": null}), &none), Ok(()));
    let ordinary = create(json!({
        "Privileged": false, "NetworkMode": "default", "PidMode": "", "IpcMode": "private", "UTSMode": "",
        "Binds": ["data:/data", "cache:/cache:ro"], "CapAdd": null, "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
        "Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}, {"Type": "tmpfs", "Target": "/tmp"}],
        "Devices": [], "DeviceRequests": null
    }));
    assert_eq!(check_container_create(&ordinary, &none), Ok(()));
}

#[test]
fn privileged() {
    let body = create(json!({"Privileged": true}));
    assert_eq!(
        check_container_create(&body, &RunOptions::default()),
        denial("run-options.privileged", "--privileged is not allowed by run-options.privileged")
    );
    assert_eq!(check_container_create(&body, &rules("privileged = true")), Ok(()));
    assert_eq!(
        check_container_create(&create(json!({"Privileged": "true"})), &rules("privileged = true")),
        denial("run-options.privileged", "HostConfig.Privileged must be true or false, found a string")
    );
}

#[test]
fn host_namespaces() {
    let cases = [
        ("PidMode", "host-pid", "--pid=host"),
        ("IpcMode", "host-ipc", "--ipc=host"),
        ("NetworkMode", "host-network", "--network=host"),
        ("UTSMode", "host-uts", "--uts=host"),
        ("UsernsMode", "host-userns", "--userns=host"),
        ("CgroupnsMode", "host-cgroupns", "--cgroupns=host"),
    ];
    for (field, rule, flag) in cases {
        let body = create(json!({ field: "host" }));
        assert_eq!(
            check_container_create(&body, &RunOptions::default()),
            denial(&format!("run-options.{rule}"), &format!("{flag} is not allowed by run-options.{rule}")),
            "{field}"
        );
        assert_eq!(check_container_create(&body, &rules(&format!("{rule} = true"))), Ok(()), "{field}");
        assert_eq!(
            check_container_create(&create(json!({ field: "HOST" })), &RunOptions::default()),
            denial(&format!("run-options.{rule}"), &format!("{flag} is not allowed by run-options.{rule}")),
            "{field}"
        );
        // Sharing another container's namespace is not the host's.
        assert_eq!(check_container_create(&create(json!({ field: "container:abc" })), &RunOptions::default()), Ok(()));
        assert_eq!(
            check_container_create(&create(json!({ field: ["host"] })), &RunOptions::default()),
            denial(&format!("run-options.{rule}"), &format!("HostConfig.{field} must be a string, found an array"))
        );
    }
}

#[test]
fn bind_mounts() {
    let allowed = rules("bind-mounts = [\"/scratch\", \"/home/\"]");
    let bind = |source: &str| create(json!({"Binds": [format!("{source}:/mnt:ro")]}));
    assert_eq!(check_container_create(&bind("/scratch"), &allowed), Ok(()));
    assert_eq!(check_container_create(&bind("/scratch/job/1"), &allowed), Ok(()));
    assert_eq!(check_container_create(&bind("/home//alice/./x"), &allowed), Ok(()));
    assert_eq!(
        check_container_create(&bind("/scratch/../etc"), &allowed),
        denial(
            "run-options.bind-mounts",
            "-v bind mount of host path /etc is not allowed by run-options.bind-mounts (allowed: /scratch, /home)"
        )
    );
    assert_eq!(
        check_container_create(&bind("/scratchpad"), &allowed),
        denial(
            "run-options.bind-mounts",
            "-v bind mount of host path /scratchpad is not allowed by run-options.bind-mounts (allowed: /scratch, /home)"
        )
    );
    assert_eq!(
        check_container_create(&bind("/"), &RunOptions::default()),
        denial(
            "run-options.bind-mounts",
            "-v bind mount of host path / is not allowed by run-options.bind-mounts (no host paths are allowed)"
        )
    );
    let mount = |source: &str| create(json!({"Mounts": [{"Type": "bind", "Source": source, "Target": "/mnt"}]}));
    assert_eq!(check_container_create(&mount("/scratch/a"), &allowed), Ok(()));
    assert_eq!(
        check_container_create(&mount("/var/run/docker.sock"), &allowed),
        denial(
            "run-options.bind-mounts",
            "--mount type=bind of host path /var/run/docker.sock is not allowed by run-options.bind-mounts (allowed: \
             /scratch, /home)"
        )
    );
    assert_eq!(
        check_container_create(&mount("relative"), &allowed),
        denial("run-options.bind-mounts", "a bind mount needs an absolute Source path")
    );
    // A volume mount whose local driver binds a host path is a bind mount.
    let volume_bind = create(json!({"Mounts": [{"Type": "volume", "Target": "/mnt", "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}}}]}));
    assert_eq!(
        check_container_create(&volume_bind, &allowed),
        denial(
            "run-options.bind-mounts",
            "a volume with driver option device of host path /etc is not allowed by run-options.bind-mounts \
             (allowed: /scratch, /home)"
        )
    );
    assert_eq!(
        check_container_create(&create(json!({"Binds": "/etc:/etc"})), &allowed),
        denial("run-options.bind-mounts", "HostConfig.Binds must be an array, found a string")
    );
    assert_eq!(
        check_container_create(&create(json!({"Mounts": [{"Source": "/etc"}]})), &allowed),
        denial("run-options.bind-mounts", "HostConfig.Mounts entries need a Type string")
    );
    let everything = rules("bind-mounts = [\"/\"]");
    assert_eq!(check_container_create(&bind("/etc"), &everything), Ok(()));
}

#[test]
fn security_options() {
    let none = RunOptions::default();
    let option = |text: &str| create(json!({"SecurityOpt": [text]}));
    let cases = [
        (
            "seccomp=unconfined",
            "seccomp-unconfined",
            "--security-opt seccomp=unconfined is not allowed by run-options.seccomp-unconfined",
        ),
        (
            "seccomp:unconfined",
            "seccomp-unconfined",
            "--security-opt seccomp=unconfined is not allowed by run-options.seccomp-unconfined",
        ),
        (
            "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}",
            "seccomp-unconfined",
            "a custom seccomp profile is not allowed by run-options.seccomp-unconfined (it can allow every system call)",
        ),
        (
            "apparmor=unconfined",
            "apparmor-unconfined",
            "--security-opt apparmor=unconfined is not allowed by run-options.apparmor-unconfined",
        ),
        (
            "apparmor:unconfined",
            "apparmor-unconfined",
            "--security-opt apparmor=unconfined is not allowed by run-options.apparmor-unconfined",
        ),
        (
            "label=disable",
            "selinux-unconfined",
            "--security-opt label=disable is not allowed by run-options.selinux-unconfined",
        ),
        (
            "label:type:spc_t",
            "selinux-unconfined",
            "--security-opt label:type:spc_t is not allowed by run-options.selinux-unconfined",
        ),
        (
            "systempaths=unconfined",
            "systempaths-unconfined",
            "--security-opt systempaths=unconfined is not allowed by run-options.systempaths-unconfined",
        ),
    ];
    for (text, rule, reason) in cases {
        assert_eq!(
            check_container_create(&option(text), &none),
            denial(&format!("run-options.{rule}"), reason),
            "{text}"
        );
        assert_eq!(check_container_create(&option(text), &rules(&format!("{rule} = true"))), Ok(()), "{text}");
    }
    for harmless in [
        "no-new-privileges",
        "no-new-privileges:true",
        "apparmor=docker-default",
        "seccomp=builtin",
        "label=level:s0:c100",
    ] {
        assert_eq!(check_container_create(&option(harmless), &none), Ok(()), "{harmless}");
    }
    assert_eq!(
        check_container_create(&create(json!({"MaskedPaths": []})), &none),
        denial(
            "run-options.systempaths-unconfined",
            "setting HostConfig.MaskedPaths is not allowed by run-options.systempaths-unconfined"
        )
    );
    assert_eq!(
        check_container_create(&create(json!({"SecurityOpt": "seccomp=unconfined"})), &none),
        denial("run-options.security-opt", "HostConfig.SecurityOpt must be an array, found a string")
    );
    assert_eq!(
        check_container_create(&create(json!({"SecurityOpt": [1]})), &none),
        denial("run-options.security-opt", "HostConfig.SecurityOpt must hold strings, found a number")
    );
}

#[test]
fn capabilities() {
    let some = rules("capabilities = [\"net_bind_service\", \"CAP_SYS_PTRACE\"]");
    let add = |names: Value| create(json!({"CapAdd": names}));
    assert_eq!(check_container_create(&add(json!(["NET_BIND_SERVICE", "cap_sys_ptrace"])), &some), Ok(()));
    assert_eq!(
        check_container_create(&add(json!(["CAP_SYS_ADMIN"])), &some),
        denial("run-options.capabilities", "--cap-add SYS_ADMIN is not allowed by run-options.capabilities")
    );
    assert_eq!(
        check_container_create(&add(json!(["all"])), &some),
        denial("run-options.capabilities", "--cap-add ALL is not allowed by run-options.capabilities")
    );
    assert_eq!(
        check_container_create(&add(json!(["CAP_MADE_UP"])), &some),
        denial(
            "run-options.capabilities",
            "--cap-add \"CAP_MADE_UP\" is not a known Linux capability and is not allowed by run-options.capabilities"
        )
    );
    assert_eq!(
        check_container_create(&add(json!("SYS_ADMIN")), &some),
        denial("run-options.capabilities", "HostConfig.CapAdd must be an array, found a string")
    );
    // API 1.40's Capabilities (a whole set) is checked like CapAdd.
    assert_eq!(
        check_container_create(&create(json!({"Capabilities": ["CAP_SYS_MODULE"]})), &some),
        denial("run-options.capabilities", "--cap-add SYS_MODULE is not allowed by run-options.capabilities")
    );
    let all = rules("capabilities = [\"ALL\"]");
    assert_eq!(check_container_create(&add(json!(["ALL", "SYS_ADMIN", "anything"])), &all), Ok(()));
    assert_eq!(capability_name(" cap_chown "), Some("CHOWN".to_owned()));
    assert_eq!(capability_name("CAP_"), None);
}

#[test]
fn devices() {
    let fuse = rules("devices = [\"/dev/fuse\", \"/dev/dri\"]");
    let device = |path: &str| {
        create(json!({"Devices": [{"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"}]}))
    };
    assert_eq!(check_container_create(&device("/dev/fuse"), &fuse), Ok(()));
    assert_eq!(check_container_create(&device("/dev/dri/card0"), &fuse), Ok(()));
    assert_eq!(
        check_container_create(&device("/dev/sda"), &fuse),
        denial("run-options.devices", "--device /dev/sda is not allowed by run-options.devices")
    );
    assert_eq!(
        check_container_create(&device("/dev/dri/../sda"), &fuse),
        denial("run-options.devices", "--device /dev/sda is not allowed by run-options.devices")
    );
    assert_eq!(
        check_container_create(&create(json!({"Devices": ["/dev/sda"]})), &fuse),
        denial("run-options.devices", "HostConfig.Devices must hold objects, found a string")
    );
    assert_eq!(
        check_container_create(&create(json!({"DeviceCgroupRules": ["c *:* rwm"]})), &fuse),
        denial(
            "run-options.device-cgroup-rules",
            "--device-cgroup-rule is not allowed by run-options.device-cgroup-rules"
        )
    );
    assert_eq!(
        check_container_create(
            &create(json!({"DeviceCgroupRules": ["c *:* rwm"]})),
            &rules("device-cgroup-rules = true")
        ),
        Ok(())
    );
    let gpus = create(json!({"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}));
    assert_eq!(
        check_container_create(&gpus, &fuse),
        denial(
            "run-options.device-requests",
            "--gpus and device requests are not allowed by run-options.device-requests"
        )
    );
    assert_eq!(check_container_create(&gpus, &rules("device-requests = true")), Ok(()));
}

#[test]
fn malformed_bodies() {
    let none = RunOptions::default();
    let malformed = |reason: &str| Err(Denial { rule: "request".to_owned(), reason: reason.to_owned() });
    assert_eq!(check_container_create(&json!([]), &none), malformed("the container create body is not a JSON object"));
    assert_eq!(
        check_container_create(&json!({"HostConfig": "x"}), &none),
        malformed("HostConfig must be an object, found a string")
    );
    assert_eq!(check_exec_create(&json!(null), &none), malformed("the exec create body is not a JSON object"));
    assert_eq!(check_volume_create(&json!("x"), &none), malformed("the volume create body is not a JSON object"));
}

#[test]
fn exec() {
    let none = RunOptions::default();
    assert_eq!(check_exec_create(&json!({"Cmd": ["sh"], "Privileged": false}), &none), Ok(()));
    assert_eq!(
        check_exec_create(&json!({"Cmd": ["sh"], "Privileged": true}), &none),
        denial("run-options.privileged-exec", "docker exec --privileged is not allowed by run-options.privileged-exec")
    );
    assert_eq!(check_exec_create(&json!({"Privileged": true}), &rules("privileged-exec = true")), Ok(()));
    assert_eq!(
        check_exec_create(&json!({"Privileged": 1}), &none),
        denial("run-options.privileged-exec", "Privileged must be true or false, found a number")
    );
}

#[test]
fn volumes() {
    let allowed = rules("bind-mounts = [\"/scratch\"]");
    let volume = |driver: Value, options: Value| json!({"Name": "v", "Driver": driver, "DriverOpts": options});
    assert_eq!(check_volume_create(&json!({"Name": "v"}), &allowed), Ok(()));
    assert_eq!(
        check_volume_create(&volume(json!("local"), json!({"type": "tmpfs", "device": "tmpfs"})), &allowed),
        Ok(())
    );
    assert_eq!(
        check_volume_create(
            &volume(json!("local"), json!({"type": "nfs", "o": "addr=10.0.0.1", "device": ":/export"})),
            &allowed
        ),
        Ok(())
    );
    assert_eq!(
        check_volume_create(
            &volume(json!("local"), json!({"type": "none", "o": "bind", "device": "/scratch/v"})),
            &allowed
        ),
        Ok(())
    );
    assert_eq!(
        check_volume_create(&volume(json!(null), json!({"type": "none", "o": "rbind,ro", "device": "/etc"})), &allowed),
        denial(
            "run-options.bind-mounts",
            "a volume with driver option device of host path /etc is not allowed by run-options.bind-mounts (allowed: /scratch)"
        )
    );
    assert_eq!(
        check_volume_create(&volume(json!("local"), json!({"o": "bind", "device": "etc"})), &allowed),
        denial("run-options.bind-mounts", "a bind volume needs an absolute device path, not \"etc\"")
    );
    // A block device is a host path too.
    assert_eq!(
        check_volume_create(&volume(json!("local"), json!({"type": "ext4", "device": "/dev/sdb1"})), &allowed),
        denial(
            "run-options.bind-mounts",
            "a volume with driver option device of host path /dev/sdb1 is not allowed by run-options.bind-mounts \
             (allowed: /scratch)"
        )
    );
    assert_eq!(
        check_volume_create(&volume(json!("local-persist"), json!({"mountpoint": "/root"})), &allowed),
        denial(
            "run-options.bind-mounts",
            "a volume with driver option mountpoint of host path /root is not allowed by run-options.bind-mounts \
             (allowed: /scratch)"
        )
    );
    assert_eq!(
        check_volume_create(&volume(json!("local"), json!({"o": ["bind"]})), &allowed),
        denial("run-options.bind-mounts", "DriverOpts.o must be a string")
    );
    assert_eq!(
        check_volume_create(&volume(json!("local"), json!("o=bind")), &allowed),
        denial("run-options.bind-mounts", "DriverOpts must be an object, found a string")
    );
}

#[test]
fn load_import_build() {
    let none = RunOptions::default();
    assert_eq!(
        none.check_load(),
        denial("run-options.load", "docker load is not allowed by run-options.load (a loaded image is never verified)")
    );
    assert_eq!(
        none.check_import(),
        denial(
            "run-options.import",
            "docker import is not allowed by run-options.import (an imported image is never verified)"
        )
    );
    assert_eq!(none.check_build(), denial("run-options.build", "docker build is not allowed by run-options.build"));
    let all = rules("load = true\nimport = true\nbuild = true\nfail-open = true");
    assert_eq!((all.check_load(), all.check_import(), all.check_build()), (Ok(()), Ok(()), Ok(())));
    assert!(all.fail_open);
    assert!(!none.fail_open);
}

#[test]
fn path_normalisation() {
    let cases = [
        ("/", "/"),
        ("//", "/"),
        ("/a//b/", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../etc", "/etc"),
        ("/a/b/..", "/a"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalise_path(input), expected, "{input}");
    }
    assert!(under("/a/b", "/a"));
    assert!(under("/a", "/a"));
    assert!(!under("/ab", "/a"));
    assert!(under("/anything", "/"));
}
