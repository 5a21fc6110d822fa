//! The bounds of the contract. Every one of them is enforced by the core, so
//! an embedded user and an HTTP user meet the same limits.

use std::fmt;

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 128;
/// Most jobs in one batch enqueue.
pub const MAX_BATCH: usize = 1000;
/// Most jobs handed out by one lease call.
pub const MAX_LEASE_JOBS: u32 = 1000;
/// Longest lease, in milliseconds (12 hours).
pub const MAX_LEASE_MS: u64 = 43_200_000;
/// Lease length when the caller gives none, in milliseconds.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Longest server-side wait (`wait_ms`) of a long-poll, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Smallest allowed `max_attempts`.
pub const MIN_ATTEMPTS: u32 = 1;
/// Largest allowed `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 1000;
/// `max_attempts` when the caller gives none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Base of the exponential retry back-off when the caller gives none, in ms.
pub const DEFAULT_BACKOFF_MS: u64 = 1000;
/// Ceiling of any computed back-off, in milliseconds (one hour).
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Longest `worker` label of a lease, in bytes.
pub const MAX_WORKER_LEN: usize = 256;
/// Longest error text kept by `fail`, in bytes; longer texts are truncated
/// at a character boundary rather than refused, because a worker reporting a
/// failure must not fail to report it.
pub const MAX_ERROR_LEN: usize = 16 * 1024;
/// Default body limit of the HTTP server, and the default payload limit of the
/// core, in bytes (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Longest correlation id, in bytes (visible ASCII).
pub const MAX_CORRELATION_ID_LEN: usize = 128;
/// Most entries of a job's `headers`.
pub const MAX_HEADERS: usize = 32;
/// Longest header key, in bytes (`[A-Za-z0-9_.-]`).
pub const MAX_HEADER_KEY_LEN: usize = 64;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 1024;
/// Longest callback URL, in bytes.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;
/// Largest progress value a heartbeat may store, in bytes.
pub const MAX_PROGRESS_LEN: usize = 64 * 1024;
/// Longest `group` name, in bytes.
pub const MAX_GROUP_LEN: usize = 128;
/// Longest `timeout_ms` of a job: the longest one attempt may run (12 hours).
pub const MAX_TIMEOUT_MS: u64 = 43_200_000;
/// Largest delay or absolute `run_at` distance from now, in milliseconds
/// (about 10 years); it keeps every time computation far from overflow.
pub const MAX_DELAY_MS: u64 = 10 * 365 * 24 * 3_600_000;
/// The shortest period of a schedule's `every_ms` (one second).
pub const MIN_SCHEDULE_EVERY_MS: u64 = 1_000;
/// The longest period of a schedule's `every_ms` (365 days).
pub const MAX_SCHEDULE_EVERY_MS: u64 = 31_536_000_000;
/// The most missed ticks a schedule with `catch_up: all` fires at once.
pub const MAX_CATCH_UP_TICKS: usize = 1_000;
/// Longest cron expression accepted, in bytes.
pub const MAX_CRON_LEN: usize = 256;

/// Deepest nesting of arrays and objects in a payload, a result or a
/// progress value (`[[1]]` is 2 deep, a scalar 0). serde_json refuses more
/// than 128 levels when it parses a value, and many clients crash on deeper
/// documents (a recursive parser per level), so the queue stores nothing it
/// could not hand back safely.
pub const MAX_JSON_DEPTH: usize = 64;

/// How deeply arrays and objects nest in the JSON text `json` (a scalar is
/// 0 deep). The text is scanned, not parsed: brackets inside strings do not
/// count, and text that is not JSON gets a depth all the same.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks that `json` nests at most [`MAX_JSON_DEPTH`] levels deep.
///
/// # Errors
/// A message saying how deep it goes (the caller names the field).
pub fn check_json_depth(json: &[u8]) -> Result<(), String> {
    let depth = json_depth(json);
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "nests {depth} levels of arrays and objects, the limit is {MAX_JSON_DEPTH}"
        ));
    }
    Ok(())
}

/// Largest `max_leased` of a queue (PATCH `/v1/queues/{queue}`).
pub const MAX_MAX_LEASED: u32 = 1_000_000;
/// Largest `group_max_leased` of a queue.
pub const MAX_GROUP_MAX_LEASED: u32 = 1_000_000;
/// Largest `rate_limit.jobs` (the token bucket's capacity).
pub const MAX_RATE_JOBS: u32 = 1_000_000;
/// Longest `rate_limit.per_ms` (one day).
pub const MAX_RATE_PER_MS: u64 = 86_400_000;

/// Why a queue name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueNameError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_QUEUE_NAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9_.-]`.
    BadChar {
        /// The first offending character.
        ch: char,
    },
}

impl fmt::Display for QueueNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueNameError::Empty => write!(f, "queue name is empty"),
            QueueNameError::TooLong { len } => write!(
                f,
                "queue name is {len} bytes long, the limit is {MAX_QUEUE_NAME_LEN}"
            ),
            QueueNameError::BadChar { ch } => write!(
                f,
                "queue name contains {ch:?}; allowed are A-Z, a-z, 0-9, '_', '.' and '-'"
            ),
        }
    }
}

impl std::error::Error for QueueNameError {}

/// Checks a queue name against `^[A-Za-z0-9_.-]{1,128}$`.
///
/// # Errors
/// [`QueueNameError`] saying what is wrong with the name.
pub fn validate_queue_name(name: &str) -> Result<(), QueueNameError> {
    if name.is_empty() {
        return Err(QueueNameError::Empty);
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(QueueNameError::BadChar { ch });
    }
    if name.len() > MAX_QUEUE_NAME_LEN {
        return Err(QueueNameError::TooLong { len: name.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_arrays_and_objects_outside_strings() {
        for (text, depth) in [
            ("1", 0),
            ("\"[[[\"", 0),
            ("[]", 1),
            ("{\"a\": [1, {\"b\": []}]}", 4),
            ("[\"]\\\"[\", [2]]", 2),
            ("[[1], [[2]]]", 3),
        ] {
            assert_eq!(json_depth(text.as_bytes()), depth, "{text}");
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_json_depth(deep(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let err = check_json_depth(deep(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(err.contains("65 levels"), "{err}");
        assert!(check_json_depth(deep(10_000).as_bytes()).is_err());
    }

    #[test]
    fn queue_names_follow_the_contract() {
        assert!(validate_queue_name("a").is_ok());
        assert!(validate_queue_name("Emails_v2.high-prio").is_ok());
        assert!(validate_queue_name(&"x".repeat(128)).is_ok());
        assert_eq!(validate_queue_name(""), Err(QueueNameError::Empty));
        assert_eq!(
            validate_queue_name(&"x".repeat(129)),
            Err(QueueNameError::TooLong { len: 129 })
        );
        assert_eq!(
            validate_queue_name("a/b"),
            Err(QueueNameError::BadChar { ch: '/' })
        );
        assert_eq!(
            validate_queue_name("é"),
            Err(QueueNameError::BadChar { ch: 'é' })
        );
        assert_eq!(
            validate_queue_name("a\0"),
            Err(QueueNameError::BadChar { ch: '\0' })
        );
    }
}
