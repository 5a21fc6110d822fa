//! The background timer: a thread that runs a pass over every due deadline
//! (promotion, lease expiry, retention, event pruning, schedule ticks), then sleeps until
//! the earliest stored deadline or a wake-up. Whoever stores a deadline
//! earlier than the one it sleeps towards wakes it ([`TimerWake::deadline_added`]),
//! and a manual clock wakes it when advanced, so it never polls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::{Clock, Result};

/// What one pass of the timers did (see [`Queue::run_due`](crate::Queue::run_due)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueReport {
    /// Scheduled jobs that became ready.
    pub promoted: u64,
    /// Leases that expired (their timeout included).
    pub expired: u64,
    /// Jobs given up at their `expires_at` before they ran.
    pub ttl_expired: u64,
    /// Finished jobs removed after their retention.
    pub removed: u64,
    /// Events dropped from the log after their retention.
    pub pruned_events: u64,
    /// Jobs enqueued by schedule ticks.
    pub ticks: u64,
    /// The earliest deadline still stored (unix ms), if any.
    pub next_due: Option<u64>,
}

impl DueReport {
    fn moved_anything(&self) -> bool {
        self.promoted
            + self.expired
            + self.ttl_expired
            + self.removed
            + self.pruned_events
            + self.ticks
            > 0
    }
}

struct WakeState {
    woken: bool,
    stop: bool,
}

/// How the timer thread is woken and stopped.
pub(crate) struct TimerWake {
    state: Mutex<WakeState>,
    cv: Condvar,
    /// The deadline the thread sleeps towards; 0 while it is computing one,
    /// so that any new deadline wakes it.
    planned: AtomicU64,
}

impl TimerWake {
    pub(crate) fn new() -> Self {
        TimerWake {
            state: Mutex::new(WakeState {
                woken: false,
                stop: false,
            }),
            cv: Condvar::new(),
            planned: AtomicU64::new(0),
        }
    }

    /// Runs a pass now.
    pub(crate) fn wake(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).woken = true;
        self.cv.notify_one();
    }

    /// A deadline at `at` (unix ms, retention included) was stored: wakes
    /// the timer if it sleeps towards a later one.
    pub(crate) fn deadline_added(&self, at: u64) {
        let planned = self.planned.load(Ordering::SeqCst);
        if planned == 0 || at < planned {
            self.wake();
        }
    }

    pub(crate) fn stop(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.cv.notify_one();
    }
}

/// Starts the timer thread: `pass` runs every due deadline and reports the
/// next one. Manual clock advances wake it.
pub(crate) fn spawn(
    wake: &Arc<TimerWake>,
    clock: Arc<dyn Clock>,
    mut pass: impl FnMut() -> Result<DueReport> + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let weak = Arc::downgrade(wake);
    clock.on_advance(Box::new(move || {
        if let Some(wake) = weak.upgrade() {
            wake.wake();
        }
    }));
    let wake = Arc::clone(wake);
    std::thread::Builder::new()
        .name("queue-core-timer".into())
        .spawn(move || run(&wake, clock.as_ref(), &mut pass))
}

fn run(wake: &TimerWake, clock: &dyn Clock, pass: &mut dyn FnMut() -> Result<DueReport>) {
    loop {
        wake.planned.store(0, Ordering::SeqCst);
        let next = match pass() {
            // Something due that the pass could not move (it would have
            // moved it if it could): look again in a second, not in a spin.
            Ok(report)
                if !report.moved_anything()
                    && report.next_due.is_some_and(|at| at <= clock.now_ms()) =>
            {
                Some(clock.now_ms().saturating_add(1000))
            }
            Ok(report) => report.next_due,
            Err(e) => {
                tracing::error!(error = %e, "timer run failed; retrying in one second");
                Some(clock.now_ms().saturating_add(1000))
            }
        };
        wake.planned
            .store(next.unwrap_or(u64::MAX).max(1), Ordering::SeqCst);
        let mut state = wake.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.stop {
                return;
            }
            if state.woken {
                state.woken = false;
                break;
            }
            match next.and_then(|at| clock.sleep_hint(at)) {
                Some(wait) if wait.is_zero() => break,
                Some(wait) => {
                    let (guard, timeout) = wake
                        .cv
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner());
                    state = guard;
                    if timeout.timed_out() {
                        break;
                    }
                }
                None => state = wake.cv.wait(state).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}
