//! audit-bench: what the audit record costs. `audit-bench publish` compares publish latency of
//! two tufa-server binaries (with and without the record) under the same workload; `audit-bench
//! history` fills a store with a million audit entries and times "who signed tag T". It prints
//! figures and never asserts a speed.
//!
//! Usage:
//!   audit-bench publish --base BIN --head BIN [--base-label L] [--head-label L] [--publishes N]
//!                       [--warmup N] [--targets K]
//!   audit-bench history [--entries N] [--repos R] [--publishes P] [--tags T] [--queries Q] [--batch B]
//!                       [--server BIN] [--databases sqlite,postgres]
//! `DATABASE_URL` (a PostgreSQL URL whose user may create databases) adds a PostgreSQL run to
//! each. `bench/audit-overhead.sh` builds both servers and runs `publish`; see bench/README.md.

mod history;
mod pg;
mod publish;
#[path = "../signed.rs"]
mod signed;

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  audit-bench publish --base BIN --head BIN [--base-label L] [--head-label L] [--publishes N] [--warmup N] \
                     [--targets K]
  audit-bench history [--entries N] [--repos R] [--publishes P] [--tags T] [--queries Q] [--batch B] [--server BIN]
                      [--databases sqlite,postgres]
DATABASE_URL=postgres://... adds a PostgreSQL run (two or one scratch databases are created and dropped).";

/// Latency figures of one series of timed operations.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    /// How many operations were timed.
    pub(crate) count: usize,
    /// Median.
    pub(crate) p50: Duration,
    /// 90th percentile.
    pub(crate) p90: Duration,
    /// 99th percentile.
    pub(crate) p99: Duration,
    /// Slowest.
    pub(crate) max: Duration,
    /// Arithmetic mean.
    pub(crate) mean: Duration,
}

impl Summary {
    /// The figures of `samples` (nearest-rank percentiles).
    pub(crate) fn of(samples: &[Duration]) -> Summary {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let total: Duration = sorted.iter().sum();
        let count = sorted.len();
        let mean = if count == 0 { Duration::ZERO } else { total / u32::try_from(count).unwrap_or(u32::MAX) };
        Summary {
            count,
            p50: percentile(&sorted, 0.50),
            p90: percentile(&sorted, 0.90),
            p99: percentile(&sorted, 0.99),
            max: sorted.last().copied().unwrap_or_default(),
            mean,
        }
    }
}

/// The nearest-rank percentile of already sorted samples.
pub(crate) fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() as f64 * fraction).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied().unwrap_or_default()
}

/// Milliseconds with three decimals.
pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// The value after `flag` in `args`, parsed; `default` when the flag is absent.
fn flag<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> Result<T, String> {
    match args.iter().position(|arg| arg == flag) {
        None => Ok(default),
        Some(index) => {
            let value = args.get(index + 1).ok_or_else(|| format!("{flag} needs a value"))?;
            value.parse().map_err(|_| format!("{flag}: cannot read {value:?}"))
        }
    }
}

/// Every flag in `args` must be one of `known` and have a value.
fn check_flags(args: &[String], known: &[&str]) -> Result<(), String> {
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if !known.contains(&arg.as_str()) {
            return Err(format!("unknown argument {arg:?}"));
        }
        if rest.next().is_none() {
            return Err(format!("{arg} needs a value"));
        }
    }
    Ok(())
}

/// The machine, the load and the build, printed above every report.
pub(crate) fn describe_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("machine: {cpu} ({cpus} logical CPUs); build: {}", if cfg!(debug_assertions) { "debug" } else { "release" })
}

/// The load average, for the report.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let database_url = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty());
    match args.split_first() {
        Some((command, rest)) if command == "publish" => {
            check_flags(
                rest,
                &["--base", "--head", "--base-label", "--head-label", "--publishes", "--warmup", "--targets"],
            )?;
            let base: String = flag(rest, "--base", String::new())?;
            let head: String = flag(rest, "--head", String::new())?;
            if base.is_empty() || head.is_empty() {
                return Err("publish needs --base BIN and --head BIN".into());
            }
            let options = publish::Options {
                base_label: flag(rest, "--base-label", "base".to_owned())?,
                head_label: flag(rest, "--head-label", "head".to_owned())?,
                base: base.into(),
                head: head.into(),
                publishes: flag(rest, "--publishes", 300)?,
                warmup: flag(rest, "--warmup", 20)?,
                targets: flag(rest, "--targets", 100)?,
            };
            if options.publishes == 0 || options.targets == 0 {
                return Err("--publishes and --targets must be at least 1".into());
            }
            publish::run(&options, database_url.as_deref()).await
        }
        Some((command, rest)) if command == "history" => {
            check_flags(
                rest,
                &["--entries", "--repos", "--publishes", "--tags", "--queries", "--batch", "--server", "--databases"],
            )?;
            let databases: String = flag(rest, "--databases", "sqlite,postgres".to_owned())?;
            let mut sqlite = false;
            let mut postgres = false;
            for name in databases.split(',') {
                match name {
                    "sqlite" => sqlite = true,
                    "postgres" => postgres = true,
                    other => return Err(format!("--databases: unknown database {other:?} (sqlite, postgres)")),
                }
            }
            let server: String = flag(rest, "--server", String::new())?;
            let options = history::Options {
                entries: flag(rest, "--entries", 1_000_000)?,
                repos: flag(rest, "--repos", 500)?,
                publishes: flag(rest, "--publishes", 20)?,
                tags: flag(rest, "--tags", 50)?,
                queries: flag(rest, "--queries", 2000)?,
                batch: flag(rest, "--batch", 5000)?,
                server: (!server.is_empty()).then(|| server.into()),
                sqlite,
            };
            if options.repos == 0 || options.publishes == 0 || options.tags == 0 || options.queries == 0 {
                return Err("--repos, --publishes, --tags and --queries must be at least 1".into());
            }
            if options.batch == 0 {
                return Err("--batch must be at least 1".into());
            }
            history::run(&options, database_url.as_deref().filter(|_| postgres)).await
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if cfg!(debug_assertions) {
        eprintln!("audit-bench: WARNING: a debug build; build with --release for figures that mean something");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("audit-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("audit-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
