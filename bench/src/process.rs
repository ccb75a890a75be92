//! Child processes of the benchmark: signer processes that are killed (and reaped) when their
//! guard is dropped, and commands that do not inherit the signers' configuration. Running tools,
//! free ports and log tails come from `tufa-testkit`, shared with the black-box tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub(crate) use tufa_testkit::process::{free_port, run_tool};
use tufa_testkit::process::{log_tail, spawn_logged};

/// Prefixes of environment variables that configure the signers; children never inherit them, so
/// that the configuration the benchmark writes is the one that applies.
const CONFIG_ENV_PREFIXES: [&str; 3] = ["TUFA_SIGNER_", "NOTARY_SIGNER_", "SOFTHSM2_CONF"];

/// How much of a signer's log an error message shows.
const LOG_TAIL_BYTES: usize = 4 * 1024;

/// `command` with the signer-configuring environment variables removed.
pub(crate) fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if CONFIG_ENV_PREFIXES.iter().any(|prefix| text.starts_with(prefix)) {
            command.env_remove(&name);
        }
    }
    command
}

/// A running server process, killed and reaped on drop. Its output goes to a log file.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `command` with standard output and error written to `log`.
    pub(crate) fn start(name: &str, mut command: Command, log: &Path) -> Result<Server, String> {
        let child = spawn_logged(&mut command, log).map_err(|error| format!("cannot start {name}: {error}"))?;
        Ok(Server { name: name.to_owned(), child, log: log.to_owned() })
    }

    /// `Err` with the end of the log when the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                Err(format!("{} exited ({status}); its log ends with:\n{}", self.name, self.log_tail()))
            }
            Err(error) => Err(format!("cannot watch {}: {error}", self.name)),
        }
    }

    /// The end of the process's log.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log, LOG_TAIL_BYTES)
    }

    /// Bytes the process has written to its log so far.
    pub(crate) fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|metadata| metadata.len()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
