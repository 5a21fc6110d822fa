//! The counter every benchmark loop draws its operations from.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// Hands out up to `target` operations to concurrent callers, until a
/// deadline or until one caller fails.
#[derive(Debug)]
pub struct Claims {
    target: usize,
    claimed: AtomicUsize,
    stopped: AtomicBool,
    timed_out: AtomicBool,
}

impl Claims {
    /// Claims for `target` operations.
    pub fn new(target: usize) -> Claims {
        Claims {
            target,
            claimed: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
        }
    }

    /// Claims the next operation: `false` once the count is reached,
    /// `deadline` has passed (which marks the run as timed out) or a caller
    /// called [`Claims::stop`].
    pub fn claim(&self, deadline: Instant) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        if Instant::now() >= deadline {
            self.timed_out.store(true, Ordering::Relaxed);
            return false;
        }
        self.claimed.fetch_add(1, Ordering::Relaxed) < self.target
    }

    /// Stops every caller (one of them failed).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether a caller ran into the deadline.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn claims_stop_at_the_target_the_deadline_or_a_failure() {
        let later = Instant::now() + Duration::from_secs(60);
        let claims = Claims::new(2);
        assert!(claims.claim(later) && claims.claim(later));
        assert!(!claims.claim(later));
        assert!(!claims.timed_out());
        assert!(!claims.claim(Instant::now()));
        assert!(claims.timed_out());
        let stopped = Claims::new(5);
        stopped.stop();
        assert!(!stopped.claim(later));
    }
}
