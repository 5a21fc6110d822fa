//! `bench compare`: the embedded mode, then the HTTP mode with the same
//! options, in one table, and what the HTTP layer costs.

use crate::core::{self, CoreArgs};
use crate::http;
use crate::report::{self, Row};

/// The HTTP / embedded ratio the target is stated for: durable enqueue
/// throughput over HTTP at least half the embedded one, at 64 callers.
pub const TARGET: f64 = 0.5;

/// Runs both modes and prints the fsync line, one table (embedded rows
/// labelled `embedded <durability>`, HTTP rows `http <durability>`), the
/// embedded derived lines and the HTTP / embedded ratios.
///
/// # Errors
/// Those of either mode.
pub fn run(args: &CoreArgs) -> anyhow::Result<()> {
    let embedded = core::measure(args)?;
    let over_http = http::measure(&args.run)?;
    let mut rows: Vec<Row> = embedded
        .rows
        .iter()
        .map(|row| Row {
            mode: format!("embedded {}", row.mode),
            ..row.clone()
        })
        .collect();
    let http_rows: Vec<Row> = over_http.iter().map(|r| r.row.clone()).collect();
    rows.extend(http_rows.iter().cloned());

    println!();
    println!(
        "Embedded mode (queue-core in-process) and {}",
        http::header(&args.run)
    );
    println!();
    println!("{}", embedded.fsync_line());
    println!();
    print!("{}", report::table(&rows));
    println!();
    for line in embedded.derived() {
        println!("{line}");
    }
    for line in ratios(&embedded.rows, &http_rows, args.run.periodic_ms) {
        println!("{line}");
    }
    println!("{}", http::client_line(&over_http));
    Ok(())
}

/// `http enqueue@C / embedded durable enqueue@C = X×` for durable runs (with
/// the verdict) and, without a target, the same for periodic runs; C is 64
/// when both modes ran it, else the largest concurrency both ran.
fn ratios(embedded: &[Row], http: &[Row], periodic_ms: u64) -> Vec<String> {
    let mut lines = Vec::new();
    for durability in [
        queue_core::Durability::Sync,
        queue_core::Durability::Periodic(periodic_ms),
    ] {
        let mode = core::mode_name(durability);
        let enqueue = |rows: &[Row], c: usize| {
            rows.iter()
                .find(|r| r.mode.ends_with(&mode) && r.phase == "enqueue" && r.concurrency == c)
                .cloned()
        };
        let both: Vec<usize> = embedded
            .iter()
            .filter(|r| r.mode == mode && r.phase == "enqueue")
            .map(|r| r.concurrency)
            .filter(|&c| enqueue(http, c).is_some())
            .collect();
        let c = if both.contains(&64) {
            Some(64)
        } else {
            both.iter().copied().max()
        };
        let durable = durability == queue_core::Durability::Sync;
        let pair = c.and_then(|c| Some((c, enqueue(http, c)?, enqueue(embedded, c)?)));
        match pair {
            Some((c, over_http, inside)) if inside.rate() > 0.0 => {
                let ratio = over_http.rate() / inside.rate();
                let what = if durable {
                    "durable".to_owned()
                } else {
                    mode.clone()
                };
                let judged = if !durable {
                    " (no target)".to_owned()
                } else if c == 64 {
                    format!(
                        " (target ≥ {TARGET}×: {})",
                        if ratio >= TARGET {
                            "meets target"
                        } else {
                            "BELOW target"
                        }
                    )
                } else {
                    format!(" (target ≥ {TARGET}× is stated for 64 callers)")
                };
                lines.push(format!(
                    "http enqueue@{c} / embedded {what} enqueue@{c} = {ratio:.2}× ({:.0} / {:.0} jobs/s, {mode}){judged}",
                    over_http.rate(),
                    inside.rate()
                ));
            }
            _ if durable => lines.push(
                "http enqueue / embedded durable enqueue: n/a (needs sync enqueue runs of both modes at one concurrency)"
                    .to_owned(),
            ),
            _ => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::Summary;

    fn row(mode: &str, phase: &'static str, c: usize, jobs: usize) -> Row {
        Row {
            mode: mode.to_owned(),
            phase,
            concurrency: c,
            target: jobs,
            elapsed: Duration::from_secs(1),
            latency: Summary::of(vec![Duration::from_millis(1); jobs]),
            timed_out: false,
        }
    }

    #[test]
    fn ratio_at_64_is_judged() {
        let embedded = [
            row("sync", "enqueue", 1, 100),
            row("sync", "enqueue", 64, 1000),
            row("periodic(100ms)", "enqueue", 64, 4000),
        ];
        let http = [
            row("http sync", "enqueue", 1, 50),
            row("http sync", "enqueue", 64, 600),
            row("http sync", "cycle", 64, 10),
            row("http periodic(100ms)", "enqueue", 64, 1000),
        ];
        let lines = ratios(&embedded, &http, 100);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("http enqueue@64 / embedded durable enqueue@64 = 0.60×"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("meets target"), "{}", lines[0]);
        assert!(lines[1].contains("= 0.25×") && lines[1].contains("no target"));
    }

    #[test]
    fn ratio_falls_back_to_the_largest_shared_concurrency() {
        let embedded = [row("sync", "enqueue", 8, 1000)];
        let http = [row("http sync", "enqueue", 8, 400)];
        let lines = ratios(&embedded, &http, 100);
        assert!(lines[0].starts_with("http enqueue@8 /"), "{}", lines[0]);
        assert!(lines[0].contains("stated for 64 callers"));
        assert!(ratios(&[], &http, 100)[0].contains("n/a"));
    }
}
