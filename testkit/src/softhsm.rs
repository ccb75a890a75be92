//! Where the SoftHSM2 PKCS#11 module and the test token directory are: the module path
//! (`PKCS11_MODULE`, else Debian's), and a checked `SOFTHSM2_CONF` that names a scratch token
//! directory, so that no test ever touches the system's tokens.

use std::path::PathBuf;

/// Debian's path of the SoftHSM2 module (package `softhsm2`).
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The module path: `PKCS11_MODULE` if set, else [`DEFAULT_MODULE`]. Not checked.
pub fn module_path() -> PathBuf {
    std::env::var_os("PKCS11_MODULE")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from)
}

/// The module path of [`module_path`], which must be an existing file.
pub fn module() -> Result<PathBuf, String> {
    let module = module_path();
    if module.is_file() {
        Ok(module)
    } else {
        Err(format!(
            "the SoftHSM2 module {} does not exist: install the softhsm2 package (scripts/test.sh does) or set \
             PKCS11_MODULE",
            module.display()
        ))
    }
}

/// `SOFTHSM2_CONF`, checked: it is set, readable, and its `directories.tokendir` exists.
pub fn conf() -> Result<PathBuf, String> {
    let conf = match std::env::var_os("SOFTHSM2_CONF") {
        Some(conf) if !conf.is_empty() => PathBuf::from(conf),
        _ => {
            return Err("SOFTHSM2_CONF is not set, so this SoftHSM test cannot run. Run the suite via \
                        scripts/test.sh (it creates a throwaway SoftHSM token directory and exports \
                        SOFTHSM2_CONF), or export SOFTHSM2_CONF pointing at a config whose \
                        directories.tokendir is a scratch directory."
                .to_owned());
        }
    };
    let text = std::fs::read_to_string(&conf)
        .map_err(|error| format!("SOFTHSM2_CONF={}: cannot read it: {error}", conf.display()))?;
    let token_dir = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == "directories.tokendir")
        .map(|(_, value)| PathBuf::from(value.trim()))
        .ok_or_else(|| format!("SOFTHSM2_CONF={} sets no directories.tokendir", conf.display()))?;
    if !token_dir.is_dir() {
        return Err(format!(
            "the SoftHSM token directory {} (from SOFTHSM2_CONF={}) does not exist",
            token_dir.display(),
            conf.display()
        ));
    }
    Ok(conf)
}
