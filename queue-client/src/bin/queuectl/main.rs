//! `queuectl`: the admin command line of the job queue, on the client SDK.
//!
//! Built with `cargo install --path queue-client --features cli`. It is a
//! binary of the SDK crate behind a feature rather than a crate of its own
//! because it is nothing but a front end of the SDK's calls (every request
//! goes through `queue_client::Client`, never by hand), and the feature
//! keeps its dependencies (clap, indicatif, jiff) out of library builds.
//!
//! - `args`: the command line (clap).
//! - `commands`: one function per command.
//! - `bulk`: `enqueue --jsonl`, batched, with a progress bar.
//! - `output`: tables, durations, times, JSON.
//! - `parse`: flag values.

mod args;
mod bulk;
mod commands;
mod context;
mod output;
mod parse;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use queue_client::Error;
use serde_json::json;

use crate::args::Cli;

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// A bad argument found before anything was sent (exit 2).
    Usage(String),
    /// What the SDK reported.
    Sdk(Error),
    /// Some lines of a bulk enqueue were refused; each was reported as it
    /// happened (exit 1).
    Partial(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Sdk(error)
    }
}

/// A command's outcome.
pub type Outcome = Result<(), Failure>;

/// The exit codes (see `--help`).
pub mod exit {
    /// The server refused the request; some bulk lines were refused.
    pub const REFUSED: u8 = 1;
    /// A bad flag or argument; a confirmation refused or not askable.
    pub const USAGE: u8 = 2;
    /// No such job or schedule.
    pub const NOT_FOUND: u8 = 3;
    /// The operation does not fit the job's state.
    pub const CONFLICT: u8 = 4;
    /// The server could not be reached or did not answer in time.
    pub const UNREACHABLE: u8 = 5;
    /// The token is missing or wrong.
    pub const UNAUTHORIZED: u8 = 6;
    /// The job had not finished when the wait ended.
    pub const WAIT_TIMED_OUT: u8 = 7;
    /// The job finished dead or cancelled.
    pub const JOB_FAILED: u8 = 8;
}

impl Failure {
    /// The exit code, the error code shown, and the message.
    fn describe(&self) -> (u8, String, String) {
        match self {
            Failure::Usage(message) => (exit::USAGE, "usage".to_owned(), message.clone()),
            Failure::Partial(message) => (exit::REFUSED, "refused".to_owned(), message.clone()),
            Failure::Sdk(error) => {
                let exit = match error {
                    Error::NotFound { .. } => exit::NOT_FOUND,
                    Error::Conflict { .. } | Error::LeaseLost { .. } => exit::CONFLICT,
                    Error::Transport(_) | Error::Timeout { .. } => exit::UNREACHABLE,
                    Error::Unauthorized { .. } => exit::UNAUTHORIZED,
                    Error::JobTimedOut { .. } => exit::WAIT_TIMED_OUT,
                    Error::JobFailed { .. } | Error::JobCancelled { .. } => exit::JOB_FAILED,
                    Error::InvalidUrl { .. } => exit::USAGE,
                    _ => exit::REFUSED,
                };
                let code = match error {
                    Error::Transport(_) | Error::Timeout { .. } => "unreachable".to_owned(),
                    Error::JobTimedOut { .. } => "wait_timed_out".to_owned(),
                    Error::JobFailed { .. } => "job_dead".to_owned(),
                    Error::JobCancelled { .. } => "job_cancelled".to_owned(),
                    Error::InvalidUrl { .. } => "usage".to_owned(),
                    Error::Server { code, .. } => code.clone(),
                    other => other
                        .code()
                        .map_or_else(|| "error".to_owned(), |c| c.as_str().to_owned()),
                };
                (exit, code, message(error))
            }
        }
    }
}

/// The server's own message for an error that carries one; the whole
/// error otherwise.
fn message(error: &Error) -> String {
    match error {
        Error::InvalidRequest { message }
        | Error::Unauthorized { message }
        | Error::NotFound { message }
        | Error::LeaseLost { message }
        | Error::Conflict { message }
        | Error::PayloadTooLarge { message }
        | Error::Unavailable { message }
        | Error::Server { message, .. } => message.clone(),
        Error::Transport(_) | Error::Timeout { .. } => {
            format!("cannot reach the server: {error}")
        }
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("queuectl: cannot start: {e}");
            return ExitCode::from(exit::REFUSED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (exit, code, message) = failure.describe();
            if json {
                eprintln!("{}", json!({"error": {"code": code, "message": message}}));
            } else {
                eprintln!("queuectl: error [{code}]: {message}");
            }
            ExitCode::from(exit)
        }
    }
}

/// Whether stdin is a terminal someone can answer a question on.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}
