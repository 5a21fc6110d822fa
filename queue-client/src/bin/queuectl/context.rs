//! What every command shares: the client and how to print, and the
//! enqueue options the job flags give (used by `enqueue` and its bulk form).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_client::{Client, EnqueueOptions};

use crate::args::JobOptions;

/// What every command has: the client and how to print.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
    pub timeout: Duration,
}

fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The enqueue options the flags give.
pub fn job_options(flags: &JobOptions) -> EnqueueOptions {
    let mut options = EnqueueOptions::new();
    if let Some(priority) = flags.priority {
        options = options.priority(priority);
    }
    if let Some(delay) = flags.delay {
        options = options.delay(delay);
    }
    if let Some(at) = flags.run_at {
        options = options.run_at(system_time(at));
    }
    if let Some(n) = flags.max_attempts {
        options = options.max_attempts(n);
    }
    if let Some(backoff) = flags.backoff {
        options = options.backoff(backoff);
    }
    if let Some(id) = &flags.correlation_id {
        options = options.correlation_id(id);
    }
    for (key, value) in &flags.headers {
        options = options.header(key, value);
    }
    if let Some(group) = &flags.group {
        options = options.group(group);
    }
    if let Some(timeout) = flags.job_timeout {
        options = options.timeout(timeout);
    }
    if let Some(ttl) = flags.ttl {
        options = options.ttl(ttl);
    }
    if let Some(at) = flags.expires_at {
        options = options.expires_at(system_time(at));
    }
    if let Some(url) = &flags.callback_url {
        options = options.callback_url(url);
    }
    options
}
