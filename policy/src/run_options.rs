//! Run-option rules for the Docker authorization plugin and their checks over Docker Engine API bodies:
//! ContainerCreate (privileges, host namespaces, host bind mounts, security profiles, capabilities, devices),
//! ExecCreate (privileged exec), VolumeCreate (driver options that bind host paths), and whether `docker load`,
//! `docker import` and `/build` are allowed. Every option is denied unless the policy allows it.
//!
//! The checks are strict about shape: a value of the wrong JSON type is denied with a reason, never ignored, since
//! the daemon may read it differently from what a lenient check assumed.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::locate::{Step, key};
use crate::policy::{Bad, bad, with};

/// Every Linux capability name Docker accepts (without `CAP_`), as of Linux 5.9.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A refused request: the policy setting that refuses it and a reason a person understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The setting, such as `run-options.privileged`.
    pub rule: String,
    /// Why, such as "--privileged is not allowed by run-options.privileged".
    pub reason: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.reason)
    }
}

fn deny(rule: &str, reason: impl Into<String>) -> Denial {
    Denial { rule: format!("run-options.{rule}"), reason: reason.into() }
}

/// A body that is not a JSON object cannot be checked, so it is refused whatever the rules say.
fn malformed(reason: &str) -> Denial {
    Denial { rule: "request".to_owned(), reason: reason.to_owned() }
}

/// The run-option rules. Every flag is `false` (denied) and every list empty unless the policy says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// `--privileged`.
    pub privileged: bool,
    /// `--pid=host`.
    pub host_pid: bool,
    /// `--ipc=host`.
    pub host_ipc: bool,
    /// `--network=host`.
    pub host_network: bool,
    /// `--uts=host`.
    pub host_uts: bool,
    /// `--userns=host` (leaves user-namespace remapping).
    pub host_userns: bool,
    /// `--cgroupns=host`.
    pub host_cgroupns: bool,
    /// Host path prefixes that may be bind-mounted (normalised, absolute); empty: none.
    pub bind_mounts: Vec<String>,
    /// `--security-opt seccomp=unconfined` and custom seccomp profiles.
    pub seccomp_unconfined: bool,
    /// `--security-opt apparmor=unconfined`.
    pub apparmor_unconfined: bool,
    /// `--security-opt label=disable` and the unconfined SELinux types.
    pub selinux_unconfined: bool,
    /// `--security-opt systempaths=unconfined` and explicit `MaskedPaths`/`ReadonlyPaths`.
    pub systempaths_unconfined: bool,
    /// Capabilities that may be added (upper case, without `CAP_`); `ALL` allows every one.
    pub capabilities: BTreeSet<String>,
    /// Host device paths (or prefixes, such as `/dev/dri`) that may be passed with `--device`.
    pub devices: Vec<String>,
    /// `--device-cgroup-rule`.
    pub device_cgroup_rules: bool,
    /// `--gpus` and other device requests.
    pub device_requests: bool,
    /// `docker load` (`POST /images/load`).
    pub load: bool,
    /// `docker import` (`POST /images/create?fromSrc=…`).
    pub import: bool,
    /// `docker build` (`POST /build`).
    pub build: bool,
    /// `docker exec --privileged`.
    pub privileged_exec: bool,
    /// Swarm mode: `docker swarm init` and `join`, and services (whose tasks the daemon creates without asking the
    /// plugin), each service's image and options checked as a pull and a container would be.
    pub swarm: bool,
    /// Managed plugins: `docker plugin install`, `upgrade`, `create` and `set` (a plugin runs with the host
    /// privileges it asks for).
    pub plugins: bool,
    /// Allow requests when the verifier cannot decide (default: deny).
    pub fail_open: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRunOptions {
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    host_pid: bool,
    #[serde(default)]
    host_ipc: bool,
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    host_uts: bool,
    #[serde(default)]
    host_userns: bool,
    #[serde(default)]
    host_cgroupns: bool,
    #[serde(default)]
    bind_mounts: Vec<String>,
    #[serde(default)]
    seccomp_unconfined: bool,
    #[serde(default)]
    apparmor_unconfined: bool,
    #[serde(default)]
    selinux_unconfined: bool,
    #[serde(default)]
    systempaths_unconfined: bool,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    device_cgroup_rules: bool,
    #[serde(default)]
    device_requests: bool,
    #[serde(default)]
    load: bool,
    #[serde(default)]
    import: bool,
    #[serde(default)]
    build: bool,
    #[serde(default)]
    privileged_exec: bool,
    #[serde(default)]
    swarm: bool,
    #[serde(default)]
    plugins: bool,
    #[serde(default)]
    fail_open: bool,
}

impl RunOptions {
    pub(crate) fn from_raw(raw: RawRunOptions, path: &[Step]) -> Result<Self, Bad> {
        let absolute_list = |name: &str, list: Vec<String>| -> Result<Vec<String>, Bad> {
            list.into_iter()
                .enumerate()
                .map(|(index, entry)| {
                    if entry.starts_with('/') {
                        Ok(normalise_path(&entry))
                    } else {
                        Err(bad(
                            &with(&with(path, key(name)), Step::Index(index)),
                            format!("{entry:?} is not an absolute path"),
                        ))
                    }
                })
                .collect()
        };
        let bind_mounts = absolute_list("bind-mounts", raw.bind_mounts)?;
        let devices = absolute_list("devices", raw.devices)?;
        let mut capabilities = BTreeSet::new();
        for (index, name) in raw.capabilities.iter().enumerate() {
            match capability_name(name) {
                Some(canonical) => {
                    capabilities.insert(canonical);
                }
                None => {
                    return Err(bad(
                        &with(&with(path, key("capabilities")), Step::Index(index)),
                        format!("{name:?} is not a Linux capability (such as NET_ADMIN or CAP_NET_ADMIN) or ALL"),
                    ));
                }
            }
        }
        Ok(Self {
            privileged: raw.privileged,
            host_pid: raw.host_pid,
            host_ipc: raw.host_ipc,
            host_network: raw.host_network,
            host_uts: raw.host_uts,
            host_userns: raw.host_userns,
            host_cgroupns: raw.host_cgroupns,
            bind_mounts,
            seccomp_unconfined: raw.seccomp_unconfined,
            apparmor_unconfined: raw.apparmor_unconfined,
            selinux_unconfined: raw.selinux_unconfined,
            systempaths_unconfined: raw.systempaths_unconfined,
            capabilities,
            devices,
            device_cgroup_rules: raw.device_cgroup_rules,
            device_requests: raw.device_requests,
            load: raw.load,
            import: raw.import,
            build: raw.build,
            privileged_exec: raw.privileged_exec,
            swarm: raw.swarm,
            plugins: raw.plugins,
            fail_open: raw.fail_open,
        })
    }

    /// Whether `docker load` is allowed.
    ///
    /// # Errors
    /// The [`Denial`] when it is not.
    pub fn check_load(&self) -> Result<(), Denial> {
        if self.load {
            Ok(())
        } else {
            Err(deny("load", "docker load is not allowed by run-options.load (a loaded image is never verified)"))
        }
    }

    /// Whether `docker import` is allowed.
    ///
    /// # Errors
    /// The [`Denial`] when it is not.
    pub fn check_import(&self) -> Result<(), Denial> {
        if self.import {
            Ok(())
        } else {
            Err(deny(
                "import",
                "docker import is not allowed by run-options.import (an imported image is never verified)",
            ))
        }
    }

    /// Whether `docker build` is allowed.
    ///
    /// # Errors
    /// The [`Denial`] when it is not.
    pub fn check_build(&self) -> Result<(), Denial> {
        if self.build { Ok(()) } else { Err(deny("build", "docker build is not allowed by run-options.build")) }
    }

    /// Whether the node may enter swarm mode (`docker swarm init` and `join`) and run services.
    ///
    /// # Errors
    /// The [`Denial`] when it may not.
    pub fn check_swarm(&self, what: &str) -> Result<(), Denial> {
        if self.swarm {
            Ok(())
        } else {
            Err(deny(
                "swarm",
                format!(
                    "{what} is not allowed by run-options.swarm (swarm tasks are created by the daemon without \
                     asking the plugin)"
                ),
            ))
        }
    }

    /// Whether managed plugins may be installed, upgraded, created or reconfigured.
    ///
    /// # Errors
    /// The [`Denial`] when they may not.
    pub fn check_plugins(&self, what: &str) -> Result<(), Denial> {
        if self.plugins {
            Ok(())
        } else {
            Err(deny(
                "plugins",
                format!(
                    "{what} is not allowed by run-options.plugins (a plugin runs with the host privileges it asks for)"
                ),
            ))
        }
    }

    fn bind_allowed(&self, host_path: &str) -> bool {
        let normal = normalise_path(host_path);
        self.bind_mounts.iter().any(|prefix| under(&normal, prefix))
    }

    fn check_host_path(&self, host_path: &str, what: &str) -> Result<(), Denial> {
        if self.bind_allowed(host_path) {
            return Ok(());
        }
        let normal = normalise_path(host_path);
        let allowed = if self.bind_mounts.is_empty() {
            "no host paths are allowed".to_owned()
        } else {
            format!("allowed: {}", self.bind_mounts.join(", "))
        };
        Err(deny(
            "bind-mounts",
            format!("{what} of host path {normal} is not allowed by run-options.bind-mounts ({allowed})"),
        ))
    }

    /// Checks volume driver options for host paths: the local driver's `o=bind` (or `rbind`) and any `device` or
    /// other option naming an absolute path must be under an allowed bind-mount prefix.
    fn check_driver_options(
        &self,
        driver: Option<&str>,
        options: &Map<String, Value>,
        field: &str,
    ) -> Result<(), Denial> {
        let local = driver.is_none_or(|driver| driver.is_empty() || driver == "local");
        let text = |name: &str| -> Result<Option<&str>, Denial> {
            match options.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text)),
                Some(_) => Err(deny("bind-mounts", format!("{field}.{name} must be a string"))),
            }
        };
        if local {
            let binds = text("o")?
                .is_some_and(|options| options.split(',').any(|option| option == "bind" || option == "rbind"));
            match text("device")? {
                Some(device) if device.starts_with('/') => {
                    self.check_host_path(device, "a volume with driver option device")?;
                }
                Some(device) if binds => {
                    return Err(deny(
                        "bind-mounts",
                        format!("a bind volume needs an absolute device path, not {device:?}"),
                    ));
                }
                _ => {}
            }
            return Ok(());
        }
        // Other drivers' options are their own; any absolute path among them is treated as a host path.
        for (name, value) in options {
            match value {
                Value::String(text) if text.starts_with('/') => {
                    self.check_host_path(text, &format!("a volume with driver option {name}"))?;
                }
                Value::String(_) | Value::Null => {}
                _ => return Err(deny("bind-mounts", format!("{field}.{name} must be a string"))),
            }
        }
        Ok(())
    }
}

/// The canonical name of a capability: upper case without `CAP_`, or `ALL`; `None` for an unknown name.
pub fn capability_name(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" || CAPABILITIES.contains(&bare) { Some(bare.to_owned()) } else { None }
}

/// Normalises an absolute path: `//` and `.` dropped, `..` applied (never above `/`), no trailing `/`.
pub fn normalise_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether normalised `path` is `prefix` or under it, by whole components.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// The object at `field` of `object`, absent and `null` being `None`.
fn object_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    rule: &str,
) -> Result<Option<&'a Map<String, Value>>, Denial> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(deny(rule, format!("{field} must be an object, found {}", kind(other)))),
    }
}

/// The array at `field`, absent and `null` being empty.
fn array_field<'a>(object: &'a Map<String, Value>, field: &str, rule: &str) -> Result<&'a [Value], Denial> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(deny(rule, format!("HostConfig.{field} must be an array, found {}", kind(other)))),
    }
}

/// The strings of the array at `field`.
fn string_array<'a>(object: &'a Map<String, Value>, field: &str, rule: &str) -> Result<Vec<&'a str>, Denial> {
    array_field(object, field, rule)?
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(text.as_str()),
            other => Err(deny(rule, format!("HostConfig.{field} must hold strings, found {}", kind(other)))),
        })
        .collect()
}

fn bool_field(object: &Map<String, Value>, field: &str, rule: &str, prefix: &str) -> Result<bool, Denial> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(deny(rule, format!("{prefix}{field} must be true or false, found {}", kind(other)))),
    }
}

fn string_field<'a>(object: &'a Map<String, Value>, field: &str, rule: &str) -> Result<Option<&'a str>, Denial> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(deny(rule, format!("HostConfig.{field} must be a string, found {}", kind(other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a `POST /containers/create` body against the run-option rules.
///
/// # Errors
/// The first [`Denial`] found.
pub fn check_container_create(body: &Value, rules: &RunOptions) -> Result<(), Denial> {
    let Value::Object(body) = body else {
        return Err(malformed("the container create body is not a JSON object"));
    };
    let host = match body.get("HostConfig") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(host)) => host,
        Some(other) => return Err(malformed(&format!("HostConfig must be an object, found {}", kind(other)))),
    };

    if bool_field(host, "Privileged", "privileged", "HostConfig.")? && !rules.privileged {
        return Err(deny("privileged", "--privileged is not allowed by run-options.privileged"));
    }

    let namespaces = [
        ("PidMode", "--pid=host", "host-pid", rules.host_pid),
        ("IpcMode", "--ipc=host", "host-ipc", rules.host_ipc),
        ("NetworkMode", "--network=host", "host-network", rules.host_network),
        ("UTSMode", "--uts=host", "host-uts", rules.host_uts),
        ("UsernsMode", "--userns=host", "host-userns", rules.host_userns),
        ("CgroupnsMode", "--cgroupns=host", "host-cgroupns", rules.host_cgroupns),
    ];
    for (field, flag, rule, allowed) in namespaces {
        // Compared without case, so that a daemon reading the mode loosely is never given "HOST" unchecked.
        if string_field(host, field, rule)?.is_some_and(|mode| mode.eq_ignore_ascii_case("host")) && !allowed {
            return Err(deny(rule, format!("{flag} is not allowed by run-options.{rule}")));
        }
    }

    check_security_options(host, rules)?;

    for field in ["CapAdd", "Capabilities"] {
        for name in string_array(host, field, "capabilities")? {
            check_capability(name, rules)?;
        }
    }

    for bind in string_array(host, "Binds", "bind-mounts")? {
        // "src:dst[:opts]"; a source that is not an absolute path is a named volume.
        let source = bind.split(':').next().unwrap_or_default();
        if source.starts_with('/') {
            rules.check_host_path(source, "-v bind mount")?;
        }
    }

    for mount in array_field(host, "Mounts", "bind-mounts")? {
        check_mount(mount, rules)?;
    }

    for device in array_field(host, "Devices", "devices")? {
        let Value::Object(device) = device else {
            return Err(deny("devices", format!("HostConfig.Devices must hold objects, found {}", kind(device))));
        };
        let Some(Value::String(path)) = device.get("PathOnHost") else {
            return Err(deny("devices", "HostConfig.Devices entries need a PathOnHost string"));
        };
        let normal = normalise_path(path);
        if !rules.devices.iter().any(|prefix| under(&normal, prefix)) {
            return Err(deny("devices", format!("--device {normal} is not allowed by run-options.devices")));
        }
    }

    if !array_field(host, "DeviceCgroupRules", "device-cgroup-rules")?.is_empty() && !rules.device_cgroup_rules {
        return Err(deny(
            "device-cgroup-rules",
            "--device-cgroup-rule is not allowed by run-options.device-cgroup-rules",
        ));
    }
    if !array_field(host, "DeviceRequests", "device-requests")?.is_empty() && !rules.device_requests {
        return Err(deny(
            "device-requests",
            "--gpus and device requests are not allowed by run-options.device-requests",
        ));
    }
    Ok(())
}

fn check_security_options(host: &Map<String, Value>, rules: &RunOptions) -> Result<(), Denial> {
    for option in string_array(host, "SecurityOpt", "security-opt")? {
        // Both "name=value" and the older "name:value" forms are accepted by the daemon.
        let (name, value) = match (option.split_once('='), option.split_once(':')) {
            (Some((name, value)), _) if !name.contains(':') => (name, value),
            (_, Some((name, value))) => (name, value),
            _ => (option, ""),
        };
        match name {
            "seccomp" if value == "unconfined" && !rules.seccomp_unconfined => {
                return Err(deny(
                    "seccomp-unconfined",
                    "--security-opt seccomp=unconfined is not allowed by run-options.seccomp-unconfined",
                ));
            }
            "seccomp" if value != "unconfined" && value != "builtin" && !rules.seccomp_unconfined => {
                return Err(deny(
                    "seccomp-unconfined",
                    "a custom seccomp profile is not allowed by run-options.seccomp-unconfined (it can allow \
                     every system call)",
                ));
            }
            "apparmor" if value == "unconfined" && !rules.apparmor_unconfined => {
                return Err(deny(
                    "apparmor-unconfined",
                    "--security-opt apparmor=unconfined is not allowed by run-options.apparmor-unconfined",
                ));
            }
            "label"
                if (value == "disable" || value == "type:spc_t" || value == "type:unconfined_t")
                    && !rules.selinux_unconfined =>
            {
                return Err(deny(
                    "selinux-unconfined",
                    format!("--security-opt {option} is not allowed by run-options.selinux-unconfined"),
                ));
            }
            "systempaths" if value == "unconfined" && !rules.systempaths_unconfined => {
                return Err(deny(
                    "systempaths-unconfined",
                    "--security-opt systempaths=unconfined is not allowed by run-options.systempaths-unconfined",
                ));
            }
            _ => {}
        }
    }
    for field in ["MaskedPaths", "ReadonlyPaths"] {
        if !matches!(host.get(field), None | Some(Value::Null)) && !rules.systempaths_unconfined {
            return Err(deny(
                "systempaths-unconfined",
                format!("setting HostConfig.{field} is not allowed by run-options.systempaths-unconfined"),
            ));
        }
    }
    Ok(())
}

fn check_capability(name: &str, rules: &RunOptions) -> Result<(), Denial> {
    if rules.capabilities.contains("ALL") {
        return Ok(());
    }
    match capability_name(name) {
        Some(canonical) if canonical == "ALL" => {
            Err(deny("capabilities", "--cap-add ALL is not allowed by run-options.capabilities"))
        }
        Some(canonical) if rules.capabilities.contains(&canonical) => Ok(()),
        Some(canonical) => {
            Err(deny("capabilities", format!("--cap-add {canonical} is not allowed by run-options.capabilities")))
        }
        None => Err(deny(
            "capabilities",
            format!(
                "--cap-add {name:?} is not a known Linux capability and is not allowed by run-options.capabilities"
            ),
        )),
    }
}

fn check_mount(mount: &Value, rules: &RunOptions) -> Result<(), Denial> {
    let Value::Object(mount) = mount else {
        return Err(deny("bind-mounts", format!("HostConfig.Mounts must hold objects, found {}", kind(mount))));
    };
    let mount_type = match mount.get("Type") {
        Some(Value::String(mount_type)) => mount_type.as_str(),
        _ => return Err(deny("bind-mounts", "HostConfig.Mounts entries need a Type string")),
    };
    match mount_type {
        "bind" => match mount.get("Source") {
            Some(Value::String(source)) if source.starts_with('/') => {
                rules.check_host_path(source, "--mount type=bind")
            }
            _ => Err(deny("bind-mounts", "a bind mount needs an absolute Source path")),
        },
        "volume" => {
            let Some(options) = object_field(mount, "VolumeOptions", "bind-mounts")? else {
                return Ok(());
            };
            let Some(driver) = object_field(options, "DriverConfig", "bind-mounts")? else {
                return Ok(());
            };
            let name = match driver.get("Name") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name.as_str()),
                Some(_) => return Err(deny("bind-mounts", "VolumeOptions.DriverConfig.Name must be a string")),
            };
            match object_field(driver, "Options", "bind-mounts")? {
                Some(driver_options) => {
                    rules.check_driver_options(name, driver_options, "VolumeOptions.DriverConfig.Options")
                }
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Checks a `POST /containers/{id}/exec` body: `Privileged` needs `run-options.privileged-exec`.
///
/// # Errors
/// The [`Denial`] when it is refused.
pub fn check_exec_create(body: &Value, rules: &RunOptions) -> Result<(), Denial> {
    let Value::Object(body) = body else {
        return Err(malformed("the exec create body is not a JSON object"));
    };
    if bool_field(body, "Privileged", "privileged-exec", "")? && !rules.privileged_exec {
        return Err(deny("privileged-exec", "docker exec --privileged is not allowed by run-options.privileged-exec"));
    }
    Ok(())
}

/// Checks a `POST /volumes/create` body: driver options that bind host paths need them under an allowed
/// bind-mount prefix.
///
/// # Errors
/// The [`Denial`] when it is refused.
pub fn check_volume_create(body: &Value, rules: &RunOptions) -> Result<(), Denial> {
    let Value::Object(body) = body else {
        return Err(malformed("the volume create body is not a JSON object"));
    };
    let driver = match body.get("Driver") {
        None | Some(Value::Null) => None,
        Some(Value::String(driver)) => Some(driver.as_str()),
        Some(other) => return Err(deny("bind-mounts", format!("Driver must be a string, found {}", kind(other)))),
    };
    match body.get("DriverOpts") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(options)) => rules.check_driver_options(driver, options, "DriverOpts"),
        Some(other) => Err(deny("bind-mounts", format!("DriverOpts must be an object, found {}", kind(other)))),
    }
}

/// Checks a swarm service spec (`POST /services/create` and `/services/{id}/update`) against the run-option rules:
/// swarm mode itself, plugin services, the container's mounts, privileges (SELinux disabled, seccomp unconfined or
/// custom, AppArmor disabled), added capabilities and the host network when it is named `host`. Returns the service's
/// image, which the caller verifies as it would a pull, and the other network targets (the Docker CLI sends network
/// IDs), which the caller resolves with the daemon when `host-network` is off.
///
/// # Errors
/// The first [`Denial`] found.
pub fn check_service_spec<'a>(body: &'a Value, rules: &RunOptions) -> Result<ServiceSpec<'a>, Denial> {
    rules.check_swarm("a swarm service")?;
    let Value::Object(spec) = body else {
        return Err(malformed("the service spec is not a JSON object"));
    };
    let task = object_field(spec, "TaskTemplate", "swarm")?
        .ok_or_else(|| malformed("the service spec has no TaskTemplate"))?;
    let runtime = match task.get("Runtime") {
        None | Some(Value::Null) => "",
        Some(Value::String(runtime)) => runtime.as_str(),
        Some(other) => return Err(malformed(&format!("TaskTemplate.Runtime must be a string, found {}", kind(other)))),
    };
    if runtime.eq_ignore_ascii_case("plugin") || !matches!(task.get("PluginSpec"), None | Some(Value::Null)) {
        rules.check_plugins("a plugin service")?;
        return Ok(ServiceSpec { image: None, networks: Vec::new() });
    }
    if !runtime.is_empty() && !runtime.eq_ignore_ascii_case("container") {
        return Err(malformed(&format!("TaskTemplate.Runtime {runtime:?} cannot be checked")));
    }
    let mut networks = Vec::new();
    for listed in [array_field(spec, "Networks", "host-network")?, array_field(task, "Networks", "host-network")?] {
        for network in listed {
            let target = match network {
                Value::Object(network) => string_field(network, "Target", "host-network")?,
                other => return Err(malformed(&format!("Networks must hold objects, found {}", kind(other)))),
            };
            match target {
                Some(target) if target.eq_ignore_ascii_case("host") && !rules.host_network => {
                    return Err(deny("host-network", "--network host is not allowed by run-options.host-network"));
                }
                Some(target) if !rules.host_network => networks.push(target),
                _ => {}
            }
        }
    }
    let container = object_field(task, "ContainerSpec", "swarm")?
        .ok_or_else(|| malformed("the service spec has no ContainerSpec"))?;
    for mount in array_field(container, "Mounts", "bind-mounts")? {
        check_mount(mount, rules)?;
    }
    for name in string_array(container, "CapabilityAdd", "capabilities")? {
        check_capability(name, rules)?;
    }
    if let Some(privileges) = object_field(container, "Privileges", "security-opt")? {
        check_service_privileges(privileges, rules)?;
    }
    match container.get("Image") {
        Some(Value::String(image)) if !image.is_empty() => Ok(ServiceSpec { image: Some(image), networks }),
        _ => Err(malformed("the service's ContainerSpec.Image must be a non-empty string")),
    }
}

/// What [`check_service_spec`] leaves to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec<'a> {
    /// The image every task runs, as the spec names it; `None` for a plugin service (allowed by `plugins`).
    pub image: Option<&'a str>,
    /// Network targets other than `host` that must not be the host network (empty when `host-network` is on).
    pub networks: Vec<&'a str>,
}

/// The confinement a service's `Privileges` lifts: SELinux, seccomp and AppArmor.
fn check_service_privileges(privileges: &Map<String, Value>, rules: &RunOptions) -> Result<(), Denial> {
    if let Some(selinux) = object_field(privileges, "SELinuxContext", "selinux-unconfined")?
        && bool_field(selinux, "Disable", "selinux-unconfined", "Privileges.SELinuxContext.")?
        && !rules.selinux_unconfined
    {
        return Err(deny(
            "selinux-unconfined",
            "disabling SELinux labels is not allowed by run-options.selinux-unconfined",
        ));
    }
    let profiles = [
        ("Seccomp", "seccomp", "seccomp-unconfined", rules.seccomp_unconfined),
        ("AppArmor", "AppArmor", "apparmor-unconfined", rules.apparmor_unconfined),
    ];
    for (field, shown, rule, allowed) in profiles {
        if let Some(profile) = object_field(privileges, field, rule)?
            && let Some(mode) = string_field(profile, "Mode", rule)?
            && !mode.eq_ignore_ascii_case("default")
            && !allowed
        {
            return Err(deny(rule, format!("{shown} mode {mode:?} is not allowed by run-options.{rule}")));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "run_options_tests.rs"]
mod tests;
