//! The command line: global flags, commands and their arguments (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use queue_client::{CallbackState, CatchUp, JobState};

use crate::parse::{self, Setting};

/// What `--help` says after the commands: the environment and exit codes.
pub const AFTER_HELP: &str = "\
Environment:
  QUEUE_URL    the server's URL (as --url)
  QUEUE_TOKEN  the bearer token (as --token; unlike the flag, it does not
               show in the process list)

Exit codes:
  0  success
  1  the server refused the request (invalid_request, payload_too_large,
     unavailable, internal, ...), or some lines of `enqueue --jsonl` were
     refused
  2  usage error: a bad flag or argument (a payload that is not JSON, an
     unreadable file), or a confirmation that was refused or could not be
     asked
  3  not found (no such job or schedule)
  4  conflict (the operation does not fit the job's state, or an
     idempotency key reused with a different request)
  5  the server could not be reached or did not answer in time
  6  unauthorized: the token is missing or wrong
  7  `wait` or `enqueue --wait`: the job had not finished when the wait ended
  8  `wait` or `enqueue --wait`: the job finished dead or cancelled";

/// Administers a queue-server from the command line: enqueue jobs (one, or
/// many from a JSON-lines file), look at them, wait for them, list queues
/// and dead letters, pause, limit, requeue, follow events.
///
/// Human output is aligned tables with units; --json prints the API's own
/// JSON documents (one per command; JSON lines for streams and for
/// --all listings).
#[derive(Debug, Parser)]
#[command(name = "queuectl", version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The server's URL.
    #[arg(
        long,
        env = "QUEUE_URL",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub url: String,

    /// Bearer token, when the server has one (prefer QUEUE_TOKEN).
    #[arg(long, env = "QUEUE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Machine output: the API's JSON (one document per command; JSON
    /// lines for streams and --all listings). Errors are JSON on stderr.
    #[arg(long, global = true)]
    pub json: bool,

    /// The longest a command waits for an answer (e.g. 500ms, 30s, 5m);
    /// for `wait`, how long to wait for the job to finish.
    #[arg(long, global = true, default_value = "30s", value_parser = parse::duration)]
    pub timeout: Duration,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enqueue a job (payload as an argument, from --file, or `-` for
    /// stdin), or many from a JSON-lines file (--jsonl).
    Enqueue(Box<EnqueueArgs>),
    /// Show a job.
    Get {
        /// The job's id.
        id: String,
    },
    /// Wait (up to --timeout) for a job to finish; exit 0 when it
    /// completed, 7 when still running, 8 when dead or cancelled.
    Wait {
        /// The job's id.
        id: String,
    },
    /// Cancel a scheduled, ready or leased job.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Follow one job's events until it finishes.
    Events {
        /// The job's id.
        id: String,
    },
    /// List a queue's jobs in a state (`jobs <queue> --state ready`), or
    /// every job with a correlation id (`jobs --correlation-id req-1`),
    /// oldest first.
    Jobs(JobsArgs),
    /// Queue counts as a table: every queue, or one.
    Stats {
        /// Only this queue.
        queue: Option<String>,
    },
    /// Stop leasing from a queue (enqueues still work).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume leasing from a queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Show a queue's limits, or change them (`none` removes one).
    Limits(LimitsArgs),
    /// Dead letters: list, requeue, purge.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Schedules: list, get, put, delete, pause, resume, trigger.
    #[command(subcommand)]
    Schedules(ScheduleCommand),
    /// Follow the event stream (all queues, or filtered); resumable with
    /// --after, reconnecting by itself. Prints the last event id at the
    /// end.
    Tail(TailArgs),
    /// A queue's history as a table: per-minute counts, depths and
    /// run/wait percentiles (default: the last hour, one row a minute).
    History {
        /// The queue.
        queue: String,
        /// Start: a time (RFC 3339 or unix ms) or how long ago (e.g. 6h).
        #[arg(long, value_parser = parse::time_or_ago)]
        from: Option<u64>,
        /// End: a time or how long ago (default: now).
        #[arg(long, value_parser = parse::time_or_ago)]
        to: Option<u64>,
        /// Width of a row: a whole number of minutes (e.g. 5m, 1h).
        #[arg(long, value_parser = parse::duration)]
        step: Option<Duration>,
    },
    /// Callback deliveries: list by state, retry one.
    #[command(subcommand)]
    Callbacks(CallbackCommand),
    /// Print a shell completion script (e.g. `queuectl completions bash >
    /// /etc/bash_completion.d/queuectl`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The options every enqueue may carry (`EnqueueOptions`).
#[derive(Debug, Clone, Default, Args)]
pub struct JobOptions {
    /// Higher priorities lease first (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Run no earlier than this from now (e.g. 30s, 5m).
    #[arg(long, value_parser = parse::duration, conflicts_with = "run_at")]
    pub delay: Option<Duration>,
    /// Run no earlier than this time: RFC 3339 (2026-12-01T10:00:00Z) or
    /// unix milliseconds.
    #[arg(long, value_parser = parse::time)]
    pub run_at: Option<u64>,
    /// Attempts before the job is dead (1..=1000, default 5).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Base of the exponential retry back-off (default 1s).
    #[arg(long, value_parser = parse::duration)]
    pub backoff: Option<Duration>,
    /// Ties the job to the request that caused it.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// A string header, KEY=VALUE (repeatable).
    #[arg(long = "header", value_parser = parse::header)]
    pub headers: Vec<(String, String)>,
    /// The job's group (see `limits --group-max-leased`).
    #[arg(long)]
    pub group: Option<String>,
    /// The longest one attempt may run (e.g. 5m).
    #[arg(long, value_parser = parse::duration)]
    pub job_timeout: Option<Duration>,
    /// The job is dead if not leased within this (e.g. 1h).
    #[arg(long, value_parser = parse::duration, conflicts_with = "expires_at")]
    pub ttl: Option<Duration>,
    /// The job is dead if not leased by this time (RFC 3339 or unix ms).
    #[arg(long, value_parser = parse::time)]
    pub expires_at: Option<u64>,
    /// POST the job to this URL when it finishes.
    #[arg(long)]
    pub callback_url: Option<String>,
}

/// Where the lines of `--jsonl` come from and what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LineFormat {
    /// Each line is a job's payload; the flags give every job's options.
    Payload,
    /// Each line is an enqueue body as the API has it (`{"payload": …,
    /// "priority": …}`); its fields win over the flags.
    Body,
}

/// `enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue.
    pub queue: String,
    /// The payload as JSON, or `-` to read it from stdin.
    #[arg(conflicts_with_all = ["file", "jsonl"])]
    pub payload: Option<String>,
    /// Read the payload (one JSON document) from this file.
    #[arg(long, conflicts_with = "jsonl")]
    pub file: Option<PathBuf>,
    /// Enqueue one job per line of this JSON-lines file (`-`: stdin), in
    /// batches; reports how many were accepted, replayed and refused, and
    /// the line number of each refused line.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// What each --jsonl line holds.
    #[arg(long, value_enum, default_value_t = LineFormat::Payload, requires = "jsonl")]
    pub lines: LineFormat,
    /// Jobs per batch request with --jsonl (1..=1000).
    #[arg(long, default_value_t = 500, requires = "jsonl",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,
    /// Enqueue, then wait up to this long for the job to finish (exit
    /// codes as `wait`).
    #[arg(long, value_parser = parse::duration, conflicts_with = "jsonl")]
    pub wait: Option<Duration>,
    /// Makes the enqueue idempotent: while a job with this key is stored
    /// in the queue, enqueueing again returns it.
    #[arg(long, conflicts_with = "jsonl")]
    pub idempotency_key: Option<String>,
    /// The job's options.
    #[command(flatten)]
    pub options: JobOptions,
}

/// `limits`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// The queue.
    pub queue: String,
    /// At most N jobs leased at once, or `none`.
    #[arg(long, value_parser = parse::count_setting)]
    pub max_leased: Option<Setting<u32>>,
    /// A rate limit JOBS/DURATION (e.g. 100/1s, 5/1m), or `none`.
    #[arg(long, value_parser = parse::rate_setting)]
    pub rate: Option<Setting<(u32, Duration)>>,
    /// At most N jobs of one group leased at once, or `none`.
    #[arg(long, value_parser = parse::count_setting)]
    pub group_max_leased: Option<Setting<u32>>,
}

/// Paging of a listing.
#[derive(Debug, Clone, Args)]
pub struct Paging {
    /// Jobs per page (1..=1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Start after this job id (the `next` of an earlier page).
    #[arg(long)]
    pub after: Option<String>,
    /// Follow `next` to the end (JSON lines with --json).
    #[arg(long)]
    pub all: bool,
}

/// `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The queue (with --state).
    #[arg(requires = "state")]
    pub queue: Option<String>,
    /// The state: scheduled, ready, leased, completed, dead, cancelled.
    #[arg(long, value_parser = parse::job_state, requires = "queue")]
    pub state: Option<JobState>,
    /// Every stored job with this correlation id, in any queue.
    #[arg(long, conflicts_with_all = ["queue", "state"])]
    pub correlation_id: Option<String>,
    /// Paging.
    #[command(flatten)]
    pub paging: Paging,
}

/// `dead …`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List a queue's dead jobs, oldest first.
    List {
        /// The queue.
        queue: String,
        /// Paging.
        #[command(flatten)]
        paging: Paging,
    },
    /// Requeue dead jobs (given ids, or --all): ready at once, attempts 0.
    Requeue {
        /// The queue.
        queue: String,
        /// The jobs to requeue.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Requeue every dead job of the queue (asks first unless --yes).
        #[arg(long)]
        all: bool,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Delete every dead job of a queue (asks first unless --yes).
    Purge {
        /// The queue.
        queue: String,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// How often a schedule fires: exactly one of the two.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct When {
    /// A cron expression (five fields, or six with seconds; @hourly …).
    #[arg(long)]
    pub cron: Option<String>,
    /// A fixed period (at least 1s).
    #[arg(long, value_parser = parse::duration)]
    pub every: Option<Duration>,
}

/// `schedules …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List every schedule.
    List,
    /// Show a schedule.
    Get {
        /// The schedule's name.
        name: String,
    },
    /// Create or replace a schedule.
    Put(Box<PutSchedule>),
    /// Delete a schedule (the jobs it enqueued stay).
    Delete {
        /// The schedule's name.
        name: String,
    },
    /// Pause a schedule.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a schedule.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Enqueue the schedule's job now (its next tick does not move).
    Trigger {
        /// The schedule's name.
        name: String,
    },
}

/// `schedules put`.
#[derive(Debug, Args)]
pub struct PutSchedule {
    /// The schedule's name.
    pub name: String,
    /// The queue its jobs go to (default: the schedule's name).
    #[arg(long)]
    pub queue: Option<String>,
    /// When it fires.
    #[command(flatten)]
    pub when: When,
    /// The IANA time zone of --cron (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Ticks missed while no server ran.
    #[arg(long, value_enum)]
    pub catch_up: Option<CatchUpArg>,
    /// Store it paused.
    #[arg(long)]
    pub paused: bool,
    /// Each job's payload as JSON, or `-` for stdin (default null).
    #[arg(conflicts_with = "file")]
    pub payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The jobs' options.
    #[command(flatten)]
    pub options: JobOptions,
}

/// `--catch-up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatchUpArg {
    /// Skip missed ticks.
    None,
    /// Fire the latest missed tick.
    Latest,
    /// Fire each missed tick (at most 1,000).
    All,
}

impl From<CatchUpArg> for CatchUp {
    fn from(value: CatchUpArg) -> Self {
        match value {
            CatchUpArg::None => CatchUp::None,
            CatchUpArg::Latest => CatchUp::Latest,
            CatchUpArg::All => CatchUp::All,
        }
    }
}

/// `tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only this queue's events (repeatable).
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    /// Only this job's events.
    #[arg(long)]
    pub job: Option<String>,
    /// Only events of this type (repeatable): a state, or `progress`.
    #[arg(long = "type", value_parser = parse::event_type)]
    pub types: Vec<queue_client::EventType>,
    /// Start after this event id (the last id an earlier tail printed):
    /// the retained events after it first, then live ones.
    #[arg(long)]
    pub after: Option<u64>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `callbacks …`.
#[derive(Debug, Subcommand)]
pub enum CallbackCommand {
    /// List the jobs whose callback delivery is in a state.
    List {
        /// The delivery state.
        #[arg(long, value_parser = parse::callback_state)]
        state: CallbackState,
        /// Paging.
        #[command(flatten)]
        paging: Paging,
    },
    /// Start a new delivery of a finished job's callback, now.
    Retry {
        /// The job's id.
        id: String,
    },
}
