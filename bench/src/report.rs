//! The printed table.

use std::fmt::Write as _;

use crate::measure::Stats;

/// One line of the table.
#[derive(Debug)]
pub(crate) struct Row {
    /// What signs (`tufa-signer software`, `notary-signer memory`, ...).
    pub target: String,
    /// `gRPC` or `in-process`.
    pub via: &'static str,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections the calls share (`None` in process).
    pub connections: Option<usize>,
    /// The measurement, or why it failed.
    pub outcome: Result<Stats, String>,
}

/// `1234567.8` as `1,234,568`.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn millis(duration: std::time::Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// Signs per second of the Go notary-signer row with the same concurrency and connections.
fn go_reference(rows: &[Row], row: &Row) -> Option<f64> {
    rows.iter()
        .filter(|other| other.target.starts_with("notary-signer"))
        .find(|other| other.concurrency == row.concurrency && other.connections == row.connections)
        .and_then(|other| other.outcome.as_ref().ok())
        .map(Stats::per_second)
        .filter(|rate| *rate > 0.0)
}

/// Renders the table as Markdown-compatible text.
pub(crate) fn table(rows: &[Row]) -> String {
    let headers = ["target", "via", "concurrency", "conns", "signs/s", "p50 ms", "p99 ms", "vs Go"];
    let mut cells: Vec<[String; 8]> = Vec::with_capacity(rows.len());
    for row in rows {
        let connections = row.connections.map_or_else(|| "-".to_owned(), |count| count.to_string());
        let (rate, p50, p99, versus) = match &row.outcome {
            Ok(stats) => {
                let versus = match (row.via, go_reference(rows, row)) {
                    ("gRPC", Some(go)) => format!("{:.2}x", stats.per_second() / go),
                    _ => "-".to_owned(),
                };
                (grouped(stats.per_second()), millis(stats.p50), millis(stats.p99), versus)
            }
            Err(_) => ("FAILED".to_owned(), "-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        cells.push([
            row.target.clone(),
            row.via.to_owned(),
            row.concurrency.to_string(),
            connections,
            rate,
            p50,
            p99,
            versus,
        ]);
    }
    let mut widths = headers.map(str::len);
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let render = |out: &mut String, line: &[String]| {
        out.push('|');
        for (index, (cell, width)) in line.iter().zip(widths).enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            if index < 2 {
                let _ = write!(out, " {cell:<width$} |");
            } else {
                let _ = write!(out, " {cell:>width$} |");
            }
        }
        out.push('\n');
    };
    render(&mut out, &headers.map(str::to_owned));
    out.push('|');
    for (index, width) in widths.iter().enumerate() {
        let dashes = "-".repeat(*width);
        if index < 2 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for line in &cells {
        render(&mut out, line);
    }
    out
}
