//! Child processes of the benchmark: one-shot tools whose output is captured, and signer
//! processes that are killed (and reaped) when their guard is dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Prefixes of environment variables that configure the signers; children never inherit them, so
/// that the configuration the benchmark writes is the one that applies.
const CONFIG_ENV_PREFIXES: [&str; 3] = ["TUFA_SIGNER_", "NOTARY_SIGNER_", "SOFTHSM2_CONF"];

/// A command line as text, for messages.
pub fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for argument in command.get_args() {
        line.push(' ');
        line.push_str(&argument.to_string_lossy());
    }
    line
}

/// `command` with the signer-configuring environment variables removed.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if CONFIG_ENV_PREFIXES.iter().any(|prefix| text.starts_with(prefix)) {
            command.env_remove(&name);
        }
    }
    command
}

/// Runs `command` to completion and returns its standard output; a failure carries the command
/// line and both output streams.
pub fn run_tool(command: &mut Command) -> Result<String, String> {
    let line = describe(command);
    let output = command.stdin(Stdio::null()).output().map_err(|error| format!("cannot run `{line}`: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{line}` failed ({}):\n{}{}",
            output.status,
            stdout.trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns; the signer binds it right after).
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("cannot find a free port: {error}"))?;
    listener.local_addr().map(|address| address.port()).map_err(|error| format!("cannot find a free port: {error}"))
}

/// A running server process, killed and reaped on drop. Its output goes to a log file.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `command` with standard output and error appended to `log`.
    pub fn start(name: &str, mut command: Command, log: &Path) -> Result<Server, String> {
        let line = describe(&command);
        let file = File::create(log).map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let copy = file.try_clone().map_err(|error| format!("cannot open {}: {error}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(copy))
            .stderr(Stdio::from(file))
            .spawn()
            .map_err(|error| format!("cannot start {name} (`{line}`): {error}"))?;
        Ok(Server { name: name.to_owned(), child, log: log.to_owned() })
    }

    /// `Err` with the end of the log when the process has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                Err(format!("{} exited ({status}); its log ends with:\n{}", self.name, self.log_tail()))
            }
            Err(error) => Err(format!("cannot watch {}: {error}", self.name)),
        }
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Bytes the process has written to its log so far.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|metadata| metadata.len()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
