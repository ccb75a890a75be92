//! The harness's view of the process helpers in `tufa-testkit`: the same functions, but a
//! failure fails the test (panics with the command line and output) instead of returning an error.

use std::process::Command;
use std::time::Duration;

pub use tufa_testkit::process::{
    CommandOutput, LOG_TAIL_BYTES, POLL_INTERVAL, WaitError, describe, log_tail, spawn_logged, stop_and_report,
    wait_ready,
};

/// Runs `command` to completion, feeding it `input` on standard input, and kills it when it is
/// still running after `timeout`. Panics with the command line when it cannot be started.
pub fn run_with_timeout(command: &mut Command, input: &[u8], timeout: Duration) -> CommandOutput {
    tufa_testkit::process::run_with_timeout(command, input, timeout).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs a helper tool (openssl, psql, ...) and panics with its full output unless it succeeds.
pub fn run_tool(command: &mut Command) -> CommandOutput {
    tufa_testkit::process::run_tool(command).unwrap_or_else(|error| panic!("{error}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (see [`tufa_testkit::process::free_port`]).
pub fn free_port() -> u16 {
    tufa_testkit::process::free_port().unwrap_or_else(|error| panic!("{error}"))
}
