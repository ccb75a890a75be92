//! Child processes with a deadline: run a command to completion and capture its output, start a
//! server with its output in a log file, wait until it is ready, read the end of its log, pick
//! free TCP ports, and stop it with a report when the test failed.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a waiting loop looks at a child process or a server again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// How much of a process log is printed in failure reports.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// How long a helper tool (openssl, psql, `tufa-signer gen-certs`, ...) may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The captured result of a finished command.
#[derive(Debug)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the command was killed after its deadline.
    pub status: Option<ExitStatus>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Wall-clock time the command took.
    pub elapsed: Duration,
}

impl CommandOutput {
    /// True when the command exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// Standard output followed by standard error, for searching messages that a tool prints
    /// on either stream.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for CommandOutput {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(status) => status.to_string(),
            None => "killed after its deadline".to_owned(),
        };
        writeln!(formatter, "$ {}", self.command)?;
        writeln!(formatter, "status: {status} after {:.2?}", self.elapsed)?;
        writeln!(formatter, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(formatter, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Renders a command as a shell-like line for messages.
pub fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for argument in command.get_args() {
        line.push(' ');
        line.push_str(&argument.to_string_lossy());
    }
    line
}

/// Runs `command` to completion, feeding it `input` on standard input, and kills it when it is
/// still running after `timeout` (the output then has no status). The only error is a command
/// that cannot be started; it names the command line.
pub fn run_with_timeout(command: &mut Command, input: &[u8], timeout: Duration) -> Result<CommandOutput, String> {
    let line = describe(command);
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start `{line}`: {error}"))?;

    let stdin = child.stdin.take();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A command that exits without reading its input closes the pipe; that is fine.
            let _ = stdin.write_all(&input);
        }
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let status = wait_until(&mut child, started + timeout);
    let _ = writer.join();
    Ok(CommandOutput {
        command: line,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}

/// Runs a helper tool with no input for at most [`TOOL_TIMEOUT`]; anything but a zero exit
/// status is an error carrying the command line, its status and both output streams.
pub fn run_tool(command: &mut Command) -> Result<CommandOutput, String> {
    let output = run_with_timeout(command, b"", TOOL_TIMEOUT)?;
    if output.success() { Ok(output) } else { Err(format!("helper command failed:\n{output}")) }
}

/// Waits for `child` until `deadline`; kills it and returns `None` if it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Reads a pipe to its end on a separate thread so that a chatty child never blocks.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may still take it before
/// the server binds it, so start-up should retry when [`WaitError::Exited`] says `port_taken`.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|error| format!("cannot bind 127.0.0.1:0 for a free port: {error}"))?;
    let address = listener.local_addr().map_err(|error| format!("cannot read the free port's address: {error}"))?;
    Ok(address.port())
}

/// Starts `command` with no standard input and both output streams written to a new file at
/// `log`. Errors name the log file or the command line.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Result<Child, String> {
    let file = File::create(log).map_err(|error| format!("cannot create log file {}: {error}", log.display()))?;
    let copy = file.try_clone().map_err(|error| format!("cannot open log file {} twice: {error}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(copy))
        .stderr(Stdio::from(file))
        .spawn()
        .map_err(|error| format!("cannot start `{}`: {error}", describe(command)))
}

/// The last `limit` bytes of a log file (lossily decoded), or a note saying why there is none.
pub fn log_tail(path: &Path, limit: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(limit);
            let prefix = if start > 0 { "[... earlier lines cut ...]\n" } else { "" };
            format!("{prefix}{}", String::from_utf8_lossy(bytes.get(start..).unwrap_or(&[])))
        }
        Err(error) => format!("(no log at {}: {error})", path.display()),
    }
}

/// Why [`wait_ready`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The process exited before it was ready.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// True when its log says the address was in use: start again on another port.
        port_taken: bool,
    },
    /// The probe never succeeded before the deadline.
    TimedOut {
        /// How long was waited.
        waited: Duration,
        /// The probe's last error.
        last_problem: String,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Exited { status, port_taken: true } => {
                write!(formatter, "the process exited early with {status}: its port was taken")
            }
            WaitError::Exited { status, port_taken: false } => {
                write!(formatter, "the process exited early with {status}")
            }
            WaitError::TimedOut { waited, last_problem } => {
                write!(formatter, "not ready within {waited:?}; last problem: {last_problem}")
            }
        }
    }
}

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, the child exits, or `timeout`
/// has passed. When the child has exited, its log at `log` tells whether its port was taken.
pub fn wait_ready<T>(
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, WaitError> {
    let started = Instant::now();
    let mut last_problem = String::from("the probe never ran");
    while started.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(WaitError::Exited { status, port_taken: says_address_in_use(&log_tail(log, LOG_TAIL_BYTES)) });
        }
        match probe() {
            Ok(ready) => return Ok(ready),
            Err(problem) => last_problem = problem,
        }
        thread::sleep(POLL_INTERVAL);
    }
    Err(WaitError::TimedOut { waited: started.elapsed(), last_problem })
}

/// True when a process log reports that its listening address was already in use.
pub fn says_address_in_use(log: &str) -> bool {
    let log = log.to_lowercase();
    log.contains("address already in use") || log.contains("addrinuse")
}

/// Stops a test's child process and, when the test is failing, prints the end of its log; with
/// `TUFA_TEST_KEEP` set, keeps its temporary directory for inspection.
pub fn stop_and_report(child: &mut Child, name: &str, log: &Path, dir: &mut tempfile::TempDir) {
    // SIGKILL also ends a paused process.
    let _ = child.kill();
    let _ = child.wait();
    if thread::panicking() {
        eprintln!(
            "--- {name} log ({}) ---\n{}\n--- end of {name} log ---",
            log.display(),
            log_tail(log, LOG_TAIL_BYTES)
        );
    }
    if std::env::var_os("TUFA_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("TUFA_TEST_KEEP is set: kept {}", dir.path().display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_feeds_input_and_captures_both_streams() {
        let output = run_with_timeout(
            Command::new("sh").args(["-c", "cat; echo oops >&2; exit 3"]),
            b"hello",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(output.stdout, "hello");
        assert_eq!(output.stderr, "oops\n");
        assert_eq!(output.status.and_then(|status| status.code()), Some(3));
        assert!(!output.success());
        assert_eq!(output.command, "sh -c cat; echo oops >&2; exit 3");
    }

    #[test]
    fn kills_a_command_after_its_deadline() {
        let output = run_with_timeout(Command::new("sleep").arg("30"), b"", Duration::from_millis(200)).unwrap();
        assert_eq!(output.status, None);
        assert!(output.elapsed < Duration::from_secs(10), "{:?}", output.elapsed);
        assert!(output.to_string().contains("status: killed after its deadline"), "{output}");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let error = run_with_timeout(&mut Command::new("/nonexistent/tool"), b"", TOOL_TIMEOUT).unwrap_err();
        assert_eq!(error, "cannot start `/nonexistent/tool`: No such file or directory (os error 2)");
    }

    #[test]
    fn a_failing_tool_reports_its_output() {
        let error = run_tool(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 1"])).unwrap_err();
        assert!(
            error.starts_with(
                "helper command failed:\n$ sh -c echo out; echo err >&2; exit 1\nstatus: exit status: 1 after "
            ),
            "{error}"
        );
        assert!(error.ends_with("--- stdout ---\nout\n--- stderr ---\nerr"), "{error}");
    }

    #[test]
    fn log_tail_keeps_the_end_and_says_when_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "0123456789").unwrap();
        assert_eq!(log_tail(&log, 100), "0123456789");
        assert_eq!(log_tail(&log, 4), "[... earlier lines cut ...]\n6789");
        let missing = dir.path().join("missing.log");
        assert_eq!(
            log_tail(&missing, 4),
            format!("(no log at {}: No such file or directory (os error 2))", missing.display())
        );
    }

    #[test]
    fn wait_ready_reports_an_early_exit_and_a_taken_port() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut child = spawn_logged(
            Command::new("sh").args(["-c", "echo 'Error: Address already in use (os error 98)'; exit 2"]),
            &log,
        )
        .unwrap();
        let result: Result<(), WaitError> =
            wait_ready(&mut child, &log, Duration::from_secs(10), || Err("not yet".to_owned()));
        match result {
            Err(WaitError::Exited { status, port_taken }) => {
                assert_eq!(status.code(), Some(2));
                assert!(port_taken);
            }
            other => panic!("expected an early exit, got {other:?}"),
        }
    }

    #[test]
    fn wait_ready_returns_the_probe_result_or_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut child = spawn_logged(Command::new("sleep").arg("30"), &log).unwrap();
        let mut calls = 0;
        let ready = wait_ready(&mut child, &log, Duration::from_secs(10), || {
            calls += 1;
            if calls == 3 { Ok(calls) } else { Err(format!("call {calls}")) }
        });
        assert_eq!(ready, Ok(3));
        let timed_out: Result<(), WaitError> =
            wait_ready(&mut child, &log, Duration::from_millis(100), || Err("still starting".to_owned()));
        match timed_out {
            Err(WaitError::TimedOut { last_problem, .. }) => assert_eq!(last_problem, "still starting"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
