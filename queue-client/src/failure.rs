//! A handler's report of a failed attempt.

use std::fmt;
use std::time::Duration;

/// A handler's report of a failed attempt: its message, and whether and when
/// the job should be tried again.
///
/// Any `std::error::Error` converts into a retryable `Failure` (its message
/// includes the chain of sources), so `?` works in handlers. `Failure` itself
/// is deliberately not a `std::error::Error`, which is what makes that
/// conversion possible.
///
/// ```
/// use std::time::Duration;
/// use queue_client::Failure;
///
/// let later = Failure::new("SMTP server busy").retry_in(Duration::from_secs(30));
/// let never = Failure::permanent("no such mailbox");
/// assert!(later.is_retryable() && !never.is_retryable());
///
/// fn parse(text: &str) -> Result<u32, Failure> {
///     Ok(text.parse::<u32>()?) // ParseIntError -> Failure
/// }
/// assert!(parse("x").unwrap_err().message().contains("invalid digit"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    message: String,
    retryable: bool,
    retry_in: Option<Duration>,
}

impl Failure {
    /// A failed attempt that is retried after the job's back-off (or dead
    /// once its attempts run out).
    pub fn new(message: impl fmt::Display) -> Self {
        Failure {
            message: message.to_string(),
            retryable: true,
            retry_in: None,
        }
    }

    /// A failure no retry can fix: the job goes straight to the dead letters.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Failure {
            retryable: false,
            ..Failure::new(message)
        }
    }

    /// Retries after `delay` instead of the back-off.
    pub fn retry_in(mut self, delay: Duration) -> Self {
        self.retry_in = Some(delay);
        self
    }

    /// The text kept as the job's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the job may be tried again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The requested retry delay, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_in
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure::new(message)
    }
}
