//! Request metrics in the Prometheus text format: a counter and a latency histogram per
//! operation and status, kept in memory without an exporter dependency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Request counters and latencies by (operation, status code).
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(&'static str, u16), Series>>,
    resigned: AtomicU64,
    resign_skipped: AtomicU64,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, operation: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Ok(mut series) = self.series.lock() {
            let entry = series.entry((operation, status)).or_default();
            entry.count += 1;
            entry.sum_seconds += seconds;
            for (bound, bucket) in BUCKETS.iter().zip(entry.buckets.iter_mut()) {
                if seconds <= *bound {
                    *bucket += 1;
                }
            }
        }
    }

    /// Counts a repository the background re-signer refreshed.
    pub fn resigned(&self) {
        self.resigned.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a repository the background re-signer could not refresh (its expiring snapshot key
    /// is held by the publisher, or re-signing failed).
    pub fn resign_skipped(&self) {
        self.resign_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let snapshot = self.series.lock().map(|series| series.clone()).unwrap_or_default();
        let mut out = String::new();
        out.push_str("# HELP tufa_resign_total Repositories whose timestamp the background re-signer refreshed.\n");
        out.push_str("# TYPE tufa_resign_total counter\n");
        let _ = writeln!(out, "tufa_resign_total {}", self.resigned.load(Ordering::Relaxed));
        out.push_str(
            "# HELP tufa_resign_skipped_total Expiring repositories the background re-signer could not refresh.\n",
        );
        out.push_str("# TYPE tufa_resign_skipped_total counter\n");
        let _ = writeln!(out, "tufa_resign_skipped_total {}", self.resign_skipped.load(Ordering::Relaxed));
        out.push_str("# HELP tufa_http_requests_total HTTP requests by operation and status code.\n");
        out.push_str("# TYPE tufa_http_requests_total counter\n");
        for ((operation, code), series) in &snapshot {
            let _ =
                writeln!(out, "tufa_http_requests_total{{operation=\"{operation}\",code=\"{code}\"}} {}", series.count);
        }
        out.push_str("# HELP tufa_http_request_duration_seconds HTTP request latency by operation.\n");
        out.push_str("# TYPE tufa_http_request_duration_seconds histogram\n");
        for ((operation, code), series) in &snapshot {
            let labels = format!("operation=\"{operation}\",code=\"{code}\"");
            for (bound, count) in BUCKETS.iter().zip(series.buckets.iter()) {
                let _ = writeln!(out, "tufa_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "tufa_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", series.count);
            let _ = writeln!(out, "tufa_http_request_duration_seconds_sum{{{labels}}} {}", series.sum_seconds);
            let _ = writeln!(out, "tufa_http_request_duration_seconds_count{{{labels}}} {}", series.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let metrics = Metrics::default();
        metrics.observe("GetRole", 200, Duration::from_micros(700));
        metrics.observe("GetRole", 200, Duration::from_millis(30));
        let text = metrics.render();
        assert!(text.contains("tufa_http_requests_total{operation=\"GetRole\",code=\"200\"} 2"), "{text}");
        assert!(text.contains("le=\"0.001\"} 1"), "{text}");
        assert!(text.contains("le=\"0.05\"} 2"), "{text}");
    }
}
