//! Time, injectable so that tests move it instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in unix milliseconds.
///
/// The queue reads `now` once per operation, before deciding it, and its
/// background timer asks [`Clock::sleep_hint`] how long to wait for a deadline.
pub trait Clock: Send + Sync + 'static {
    /// The current time in unix milliseconds.
    fn now_ms(&self) -> u64;

    /// How much real time to wait until `deadline_ms` is reached, or `None`
    /// if time only moves when someone advances it (a manual clock), in which
    /// case the waiter relies on [`Clock::on_advance`] to wake it.
    fn sleep_hint(&self, deadline_ms: u64) -> Option<Duration>;

    /// Registers a callback run after every manual advance of the clock. The
    /// system clock never calls it.
    fn on_advance(&self, callback: Box<dyn Fn() + Send + Sync>);
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn sleep_hint(&self, deadline_ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(
            deadline_ms.saturating_sub(self.now_ms()),
        ))
    }

    fn on_advance(&self, _callback: Box<dyn Fn() + Send + Sync>) {}
}

/// A clock that only moves when told to; cheap to clone, clones share time.
///
/// ```
/// use queue_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    now: AtomicU64,
    callbacks: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl ManualClock {
    /// A clock that reads `start_ms` until advanced.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                now: AtomicU64::new(start_ms),
                callbacks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Moves time forward by `by` and wakes the timers that watch this clock.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.now.fetch_add(ms, Ordering::SeqCst);
        let callbacks = self
            .inner
            .callbacks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for callback in callbacks.iter() {
            callback();
        }
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.inner.now.load(Ordering::SeqCst)
    }

    fn sleep_hint(&self, _deadline_ms: u64) -> Option<Duration> {
        None
    }

    fn on_advance(&self, callback: Box<dyn Fn() + Send + Sync>) {
        self.inner
            .callbacks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(callback);
    }
}
