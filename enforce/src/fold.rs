//! Docker request bodies read the way the daemon reads them: Go's `encoding/json` matches object keys to struct
//! fields case-insensitively (`"privileged": true` sets `Privileged`, `"PRIVILEGED"` too, and `"ſecurityopt"`, spelled
//! with U+017F, sets `SecurityOpt`), so a check that looks only at the canonical spelling can be bypassed. This module rewrites
//! the keys of struct-typed objects to their canonical names before the run-option checks see them, and refuses a
//! body whose object holds two spellings of one field (Go would keep whichever comes last in the document, an order
//! the parsed value no longer has).

use serde_json::{Map, Value};

/// The Docker API field names the checks read (ContainerCreate, HostConfig, Mount, ExecCreate, VolumeCreate, and the
/// swarm ServiceSpec, TaskSpec, ContainerSpec and Privileges).
const FIELDS: &[&str] = &[
    "Image",
    "HostConfig",
    "Privileged",
    "PidMode",
    "IpcMode",
    "NetworkMode",
    "UTSMode",
    "UsernsMode",
    "CgroupnsMode",
    "SecurityOpt",
    "MaskedPaths",
    "ReadonlyPaths",
    "CapAdd",
    "Capabilities",
    "Binds",
    "Mounts",
    "Type",
    "Source",
    "VolumeOptions",
    "DriverConfig",
    "Name",
    "Options",
    "Devices",
    "PathOnHost",
    "DeviceCgroupRules",
    "DeviceRequests",
    "Driver",
    "DriverOpts",
    "Cmd",
    "User",
    "TaskTemplate",
    "ContainerSpec",
    "PluginSpec",
    "Runtime",
    "Networks",
    "Target",
    "CapabilityAdd",
    "Privileges",
    "SELinuxContext",
    "Disable",
    "Seccomp",
    "AppArmor",
    "Mode",
];

/// Fields whose values are free-form maps (Go `map[string]…`), whose keys are data, matched exactly.
const FREE_FORM: [&str; 12] = [
    "Labels",
    "Options",
    "DriverOpts",
    "ExposedPorts",
    "Volumes",
    "EndpointsConfig",
    "Tmpfs",
    "StorageOpt",
    "Sysctls",
    "Config",
    "PortBindings",
    "Annotations",
];

/// Folds a key as Go's `bytes.EqualFold` compares it with an ASCII name: ASCII letters to lower case, U+017F (long
/// s) to `s`, U+212A (Kelvin sign) to `k`.
fn fold(key: &str) -> String {
    key.chars()
        .map(|character| match character {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// The canonical field name `key` reaches in Go, if it is one the checks read.
fn canonical(key: &str) -> Option<&'static str> {
    if let Some(exact) = FIELDS.iter().find(|field| **field == key) {
        return Some(exact);
    }
    let folded = fold(key);
    FIELDS.iter().find(|field| field.to_ascii_lowercase() == folded).copied()
}

/// Rewrites the keys of `value` (recursively, except inside free-form maps) to their canonical spellings.
///
/// # Errors
/// A reason when one object holds two spellings of the same field.
pub(crate) fn canonicalise(value: Value) -> Result<Value, String> {
    match value {
        Value::Object(object) => {
            let mut result = Map::new();
            for (key, inner) in object {
                let (name, free_form) = match canonical(&key) {
                    Some(name) => (name.to_owned(), FREE_FORM.contains(&name)),
                    None => {
                        let free_form = FREE_FORM.iter().any(|field| field.to_ascii_lowercase() == fold(&key));
                        (key.clone(), free_form)
                    }
                };
                let inner = if free_form { inner } else { canonicalise(inner)? };
                if result.contains_key(&name) {
                    return Err(format!(
                        "the body spells the field {name} more than once (as {key:?} and another spelling), which \
                         the daemon reads case-insensitively"
                    ));
                }
                result.insert(name, inner);
            }
            Ok(Value::Object(result))
        }
        Value::Array(items) => Ok(Value::Array(items.into_iter().map(canonicalise).collect::<Result<_, _>>()?)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_fold_as_go_reads_them() {
        let body = json!({"image": "alpine", "hostconfig": {"PRIVILEGED": true, "SecurityOpt": [], "ſecurityopt": ["x"]},
            "Labels": {"privileged": "label"}});
        assert_eq!(
            canonicalise(body).map_err(|error| error.contains("SecurityOpt")),
            Err(true),
            "two spellings of SecurityOpt in one object"
        );
        let body = json!({"image": "alpine", "hostconfig": {"PRIVILEGED": true, "capAdd": ["x"],
            "Mounts": [{"tYpe": "bind", "ſource": "/etc"}], "LogConfig": {"Config": {"type": "x"}}},
            "Labels": {"privileged": "label"}, "Env": ["A=1"]});
        assert_eq!(
            canonicalise(body),
            Ok(json!({"Image": "alpine", "HostConfig": {"Privileged": true, "CapAdd": ["x"],
                "Mounts": [{"Type": "bind", "Source": "/etc"}], "LogConfig": {"Config": {"type": "x"}}},
                "Labels": {"privileged": "label"}, "Env": ["A=1"]}))
        );
        assert_eq!(canonicalise(json!({"\u{212A}ey": 1, "Name": "x"})), Ok(json!({"\u{212A}ey": 1, "Name": "x"})));
    }
}
