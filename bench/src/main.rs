//! Benchmark harness for the job queue.
//!
//! Each mode is a subcommand:
//!
//! - `core` drives `queue-core` in-process (no HTTP), after measuring the raw
//!   fsync rate of the disk it runs on;
//! - `http` drives the real `queue-server`, started in-process on loopback,
//!   over C keep-alive HTTP/1.1 connections;
//! - `compare` runs both back to back and prints one table;
//! - `peers` compares ours with beanstalkd, Redis + BullMQ and the physical
//!   limit of the disk behind a minimal HTTP server (`--targets`: the
//!   performance targets' rows, three rounds, ratios and medians);
//! - `sdk` compares the typed client SDK (`queue-client`, async and
//!   blocking, producers and workers) with raw HTTP load generators (one
//!   event loop, and one OS thread per connection);
//! - `push` measures callbacks (deliveries per second, completion to
//!   callback latency) and the SSE event fan-out (1, 100, 1000
//!   subscribers), next to a baseline enqueue and drain without them;
//! - `limits` measures lease throughput (lease 1 + complete) with no
//!   limits, with `max_leased`, with `group_max_leased` 1 over 1,000
//!   groups, and with a busy group of 100,000 ready jobs beside them;
//! - `ops` measures what the operator tools cost: HTTP enqueue then drain
//!   with history off, on, and on with an event subscriber like the
//!   dashboard's;
//! - `pg` runs enqueue then drain on the PostgreSQL backend with one, two
//!   and three `queue-server` processes on one database, against
//!   graphile-worker and BullMQ's PostgreSQL backend on the same cluster.
//!
//! All of them reuse [`stats`] for latency summaries and [`report`] for the
//! table.
//!
//! ```text
//! cargo run --release -p bench -- core [--jobs N] [--concurrency 1,8,64] \
//!     [--payload-bytes 200] [--max-seconds S] [--dir PATH]
//! cargo run --release -p bench -- http [same options]
//! cargo run --release -p bench -- compare [same options]
//! cargo run --release -p bench -- sdk [--jobs N] [--concurrency 1,8,64] \
//!     [--payload-bytes 200] [--max-seconds S] [--dir PATH] [--smoke]
//! cargo run --release -p bench -- push [--jobs 5000] [--fanout-jobs 1000] \
//!     [--subscribers 1,100,1000] [--connections 8] [--producers 1] \
//!     [--callback-concurrency 32] [--payload-bytes 200] [--max-seconds S] \
//!     [--dir PATH] [--smoke]
//! cargo run --release -p bench -- limits [--jobs 20000] [--concurrency 64] \
//!     [--busy-jobs 100000] [--runs 3] [--durability periodic|sync] \
//!     [--max-seconds S] [--dir PATH] [--smoke]
//! cargo run --release -p bench -- ops [--jobs 20000] [--concurrency 32] \
//!     [--runs 3] [--durability sync|periodic] [--max-seconds S] [--dir PATH] [--smoke]
//! cargo run --release -p bench -- pg [--jobs 10000] [--concurrency 32] [--runs 3] \
//!     [--servers 1,2,3] [--systems ours,graphile,bullmq] [--payload-bytes 200] \
//!     [--max-seconds S] [--database-url URL] [--smoke]
//! cargo run --release -p bench -- peers [--jobs N] [--concurrency 1,8,64] \
//!     [--systems embedded,http,limit,beanstalkd,bullmq] [--smoke]
//! cargo run --release -p bench -- peers --targets [--rounds 3] [--cpu-baseline-us US]
//! ```
//!
//! See `BENCHMARKS.md` at the repository root for what each phase measures.

/// The allocator the queue-server binary ships with (the `jemalloc`
/// feature), so that the server started in-process is measured as it runs.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator this build of the bench (and of the server and engine it
/// runs in-process) uses, for the reports: CPU per job depends on it.
pub(crate) const ALLOCATOR_NAME: &str = if cfg!(all(feature = "jemalloc", not(target_env = "msvc")))
{
    "jemalloc"
} else {
    "the system allocator"
};

mod claims;
mod client;
mod compare;
mod core;
mod fsync;
mod http;
mod limit;
mod limits;
mod ops;
mod peers;
mod pg;
mod push;
mod report;
mod sdk;
mod shed;
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
    /// HTTP mode: the real `queue-server` in-process on 127.0.0.1, driven
    /// by C keep-alive HTTP/1.1 connections, under each durability.
    Http(http::HttpArgs),
    /// Both: the embedded mode, then the HTTP mode with the same options;
    /// one combined table and the HTTP / embedded ratio.
    Compare(core::CoreArgs),
    /// Ours (embedded and HTTP) against beanstalkd, Redis + BullMQ and the
    /// physical limit, same workload, same run (`--smoke`: ours and the
    /// limit only, tiny N, for CI; `--targets`: the targets' ratios).
    Peers(peers::PeersArgs),
    /// The client SDK (async and blocking producers, async and blocking
    /// workers) against raw HTTP on the same durable server; SDK / raw
    /// throughput against the 0.85 target (`--smoke`: tiny N, for CI).
    Sdk(sdk::SdkArgs),
    /// The push features: callbacks (deliveries/s, complete-to-callback
    /// latency) and SSE fan-out to 1, 100, 1000 subscribers (events/s,
    /// enqueue-to-event latency), next to a baseline without them
    /// (`--smoke`: tiny N, 1 and 10 subscribers, for CI).
    Push(push::PushArgs),
    /// Lease throughput under queue limits: none, max_leased 32,
    /// group_max_leased 1 over 1,000 groups, and a busy group of 100,000
    /// ready jobs beside them; medians of three runs and ratios to none
    /// (`--smoke`: tiny N, one run, for CI).
    Limits(limits::LimitsArgs),
    /// What the operator tools cost: HTTP enqueue-then-drain throughput
    /// with history off, on, and on with a dashboard-like event
    /// subscriber; medians of three alternating rounds and ratios to off
    /// (`--smoke`: tiny N, one round, for CI).
    Ops(ops::OpsArgs),
    /// A connection table filled by one client with stalled bodies and idle
    /// connections: the time for each new well-behaved client to be served,
    /// against the 2 s target.
    Shed(shed::ShedArgs),
    /// Enqueue then drain on the PostgreSQL backend with one, two and three
    /// servers on one database, against graphile-worker and BullMQ's
    /// PostgreSQL backend on the same cluster; medians of alternating
    /// rounds, every job drained exactly once (`--smoke`: ours only, tiny
    /// N, for CI).
    Pg(pg::PgArgs),
    /// One `queue-server` (its own flags) that prints its address once it
    /// listens and stops when its stdin closes: the server processes of
    /// `bench pg`.
    #[command(hide = true)]
    PgServe(queue_server::cli::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Core(args) => core::run(&args),
        Mode::Http(args) => http::run(&args),
        Mode::Compare(args) => compare::run(&args),
        Mode::Peers(args) => peers::run(&args),
        Mode::Sdk(args) => sdk::run(&args),
        Mode::Push(args) => push::run(&args),
        Mode::Limits(args) => limits::run(&args),
        Mode::Ops(args) => ops::run(&args),
        Mode::Shed(args) => shed::run(&args),
        Mode::Pg(args) => pg::run(&args),
        Mode::PgServe(args) => pg::serve(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn peers_targets_excludes_smoke_and_systems() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["bench", "peers"][..], args].concat());
        let Mode::Peers(args) = parse(&["--targets", "--rounds", "5"]).unwrap().mode else {
            panic!("not peers");
        };
        assert!(args.targets && args.rounds == 5 && args.cpu_baseline_us.is_none());
        assert!(parse(&["--targets", "--smoke"]).is_err());
        assert!(parse(&["--targets", "--systems", "http"]).is_err());
        assert!(parse(&["--rounds", "2"]).is_err());
        assert!(parse(&["--cpu-baseline-us", "200"]).is_err());
        assert!(parse(&["--systems", "limit,bullmq"]).is_ok());
    }
}
