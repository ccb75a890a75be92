//! The timing loop: a number of workers call one signing operation as fast as they can for a
//! fixed time, each recording the latency of every call; the cell's throughput is the number of
//! completed calls over the wall-clock time from the start until the last worker stopped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// One signature in flight: resolves to the signature bytes or a description of the failure.
pub(crate) type SignFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Starts one signing call for worker `index` (workers may use different connections).
pub(crate) type SignFn = Arc<dyn Fn(usize) -> SignFuture + Send + Sync>;

/// How long and how hard each cell runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Calls made (spread over the workers) before timing starts.
    pub warmup: usize,
    /// How long each cell is timed.
    pub duration: Duration,
}

/// The result of one timed cell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    /// Completed calls.
    pub ops: u64,
    /// From the start until the last worker stopped.
    pub elapsed: Duration,
    /// Median latency of one call.
    pub p50: Duration,
    /// 99th-percentile latency of one call.
    pub p99: Duration,
}

impl Stats {
    /// Completed calls per second.
    pub(crate) fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 { self.ops as f64 / seconds } else { 0.0 }
    }
}

/// The value below which `fraction` of the sorted `samples` lie (nearest-rank method).
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied().unwrap_or_default()
}

async fn collect(mut workers: JoinSet<Result<Vec<Duration>, String>>) -> Result<Vec<Duration>, String> {
    let mut all = Vec::new();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(latencies)) => all.extend(latencies),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(format!("a worker task failed: {error}"));
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(all),
    }
}

/// Runs one cell: one checked call, the warm-up, then `concurrency` workers for `plan.duration`.
/// `check` is applied to the first signature, so that a cell only counts real signatures.
pub(crate) async fn run_cell(
    sign: &SignFn,
    concurrency: usize,
    plan: Plan,
    check: &(dyn Fn(&[u8]) -> Result<(), String> + Sync),
) -> Result<Stats, String> {
    let concurrency = concurrency.max(1);
    let signature = sign(0).await?;
    check(&signature).map_err(|error| format!("the returned signature is wrong: {error}"))?;

    let per_worker = plan.warmup.div_ceil(concurrency);
    let mut warmup = JoinSet::new();
    for index in 0..concurrency {
        let sign = sign.clone();
        warmup.spawn(async move {
            for _ in 0..per_worker {
                sign(index).await?;
                tokio::task::yield_now().await;
            }
            Ok(Vec::new())
        });
    }
    collect(warmup).await?;

    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut workers = JoinSet::new();
    for index in 0..concurrency {
        let sign = sign.clone();
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let before = Instant::now();
                sign(index).await?;
                latencies.push(before.elapsed());
                // Lets workers share the runtime's threads even when a call never waits (the
                // in-process rows), as separate clients would.
                tokio::task::yield_now().await;
            }
            Ok(latencies)
        });
    }
    let mut latencies = collect(workers).await?;
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Stats {
        ops: latencies.len() as u64,
        elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}
