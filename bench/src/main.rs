//! Benchmark harness for the job queue.
//!
//! Each mode is a subcommand; today there is `core`, which drives
//! `queue-core` in-process (no HTTP), after measuring the raw fsync rate of
//! the disk it runs on. Modes that go through the HTTP server will sit beside
//! it, reusing [`stats`] for latency summaries and [`report`] for the table.
//!
//! ```text
//! cargo run --release -p bench -- core [--jobs N] [--concurrency 1,8,64] \
//!     [--payload-bytes 200] [--max-seconds S] [--dir PATH]
//! ```
//!
//! See `BENCHMARKS.md` at the repository root for what each phase measures.

mod core;
mod fsync;
mod report;
mod stats;

use clap::{Parser, Subcommand};

/// Benchmark harness for the job queue.
#[derive(Debug, Parser)]
#[command(name = "bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// The benchmark modes.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Embedded mode: `queue-core` in-process, under each durability, at
    /// each concurrency; preceded by a raw fsync probe of the same disk.
    Core(core::CoreArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Core(args) => core::run(&args),
    }
}
