//! One result row per (mode, phase, concurrency) and the markdown table that
//! shows them; shared by every benchmark mode.

use std::fmt::Write as _;
use std::time::Duration;

use crate::fsync::per_second;
use crate::stats::{Latency, Summary};

/// The outcome of one timed run.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured against, e.g. `sync` or `periodic(100ms)`.
    pub mode: String,
    /// What each counted operation was, e.g. `enqueue` or `cycle`.
    pub phase: &'static str,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Operations asked for.
    pub target: usize,
    /// Wall time from the start signal until the last caller stopped.
    pub elapsed: Duration,
    /// Latency of each completed operation (its count is the jobs done).
    pub latency: Summary,
    /// Whether the time limit stopped the run before `target`.
    pub timed_out: bool,
}

impl Row {
    /// Operations completed.
    pub fn jobs(&self) -> usize {
        self.latency.count
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        per_second(self.jobs(), self.elapsed)
    }

    /// A one-line summary, for progress output.
    pub fn line(&self) -> String {
        format!(
            "{} {} C={}: {} jobs in {:.2} s = {:.0} jobs/s, p50 {}, p99 {}, max {}{}",
            self.mode,
            self.phase,
            self.concurrency,
            self.jobs(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            Latency(self.latency.p50),
            Latency(self.latency.p99),
            Latency(self.latency.max),
            if self.timed_out {
                format!(" (stopped by the time limit, {} asked for)", self.target)
            } else {
                String::new()
            }
        )
    }
}

/// The rows as a markdown table with columns mode, phase, C, jobs, seconds,
/// jobs/s, p50, p99. A run stopped by the time limit has its jobs marked `*`
/// and a footnote.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "mode", "phase", "C", "jobs", "seconds", "jobs/s", "p50", "p99",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.mode.clone(),
                row.phase.to_owned(),
                row.concurrency.to_string(),
                format!("{}{}", row.jobs(), if row.timed_out { "*" } else { "" }),
                format!("{:.2}", row.elapsed.as_secs_f64()),
                format!("{:.0}", row.rate()),
                Latency(row.latency.p50).to_string(),
                Latency(row.latency.p99).to_string(),
            ]
        })
        .collect();
    // Text columns left-aligned, numbers right-aligned.
    let right = [false, false, true, true, true, true, true, true];
    let mut out = markdown(&header, &right, &cells);
    if rows.iter().any(|row| row.timed_out) {
        out.push_str(TIMED_OUT_NOTE);
    }
    out
}

/// The footnote of a table with a run stopped by the time limit.
pub const TIMED_OUT_NOTE: &str =
    "\n\\* stopped by the time limit before reaching the requested count.\n";

/// A markdown table with aligned columns: `header`, then `rows` (each as
/// many cells as the header); columns with `right` set are right-aligned.
pub fn markdown(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let is_right = |i: usize| right.get(i).copied().unwrap_or(false);
    // At least 3 wide, so that the markdown rule fits.
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        out.push('|');
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            let pad = width.saturating_sub(cell.chars().count());
            let (l, r) = if is_right(i) { (pad, 0) } else { (0, pad) };
            let _ = write!(out, " {}{cell}{} |", " ".repeat(l), " ".repeat(r));
        }
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if is_right(i) {
                format!("{}:", "-".repeat(w - 1))
            } else {
                "-".repeat(*w)
            }
        })
        .collect();
    line(&rule);
    for row in rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_run_and_marks_timeouts() {
        let row = |timed_out| Row {
            mode: "sync".into(),
            phase: "enqueue",
            concurrency: 8,
            target: 100,
            elapsed: Duration::from_secs(2),
            latency: Summary::of(vec![Duration::from_millis(1); 50]),
            timed_out,
        };
        let text = table(&[row(false), row(true)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("| mode"));
        assert!(lines[2].contains("| 50 |") || lines[2].contains(" 50 |"));
        assert!(lines[2].contains(" 25 |"), "{text}");
        assert!(lines[3].contains("50*"));
        assert!(text.contains("stopped by the time limit"));
        // Every table line has the same width.
        let widths: Vec<usize> = lines[..4].iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
    }
}
