//! Child processes with a deadline: run a command to completion and capture its output,
//! pick free TCP ports, and read log files for failure reports.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a waiting loop looks at a child process or a server again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

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

    /// Standard output followed by standard error, for searching messages that the notary
    /// CLI prints on either stream.
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

/// Runs `command` to completion, feeding it `input` on standard input, and kills it when it
/// is still running after `timeout`. Spawning failures panic with the command line.
pub fn run_with_timeout(command: &mut Command, input: &[u8], timeout: Duration) -> CommandOutput {
    let line = describe(command);
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start `{line}`: {error}"));

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
    CommandOutput {
        command: line,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
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

/// Runs a helper tool (openssl, psql, ...) and panics with its full output unless it succeeds.
pub fn run_tool(command: &mut Command) -> CommandOutput {
    let output = run_with_timeout(command, b"", Duration::from_secs(60));
    assert!(output.success(), "helper command failed:\n{output}");
    output
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Another process may still take it
/// before the server binds it, so server start-up retries on "address in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address of a bound socket").port()
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

/// How much of a process log is printed in failure reports.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// Stops a test's child process and, when the test is failing, prints the end of its log;
/// with `TUFA_TEST_KEEP` set, keeps its temporary directory for inspection.
pub fn stop_and_report(child: &mut std::process::Child, name: &str, log: &Path, dir: &mut tempfile::TempDir) {
    // SIGKILL also ends a paused process.
    let _ = child.kill();
    let _ = child.wait();
    if std::thread::panicking() {
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
