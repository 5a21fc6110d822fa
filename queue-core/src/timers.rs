//! The background timer: promotes due scheduled jobs, expires due leases and
//! removes finished jobs past their retention. It sleeps until the earliest
//! stored deadline or a wake-up; every deadline lives in the `timers` tree,
//! so a restart loses none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use crate::queue::Shared;

struct WakeState {
    woken: bool,
    stop: bool,
}

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

    pub(crate) fn wake(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).woken = true;
        self.cv.notify_one();
    }

    /// Wakes the timer if `at` is earlier than what it sleeps towards.
    pub(crate) fn deadline_added(&self, at: u64) {
        if at < self.planned.load(Ordering::SeqCst) || self.planned.load(Ordering::SeqCst) == 0 {
            self.wake();
        }
    }

    pub(crate) fn stop(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.cv.notify_one();
    }
}

/// Hooks the timer to manual clock advances and returns the thread body.
pub(crate) fn start(shared: &Arc<Shared>) -> impl FnOnce() + Send + 'static {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    shared.clock().on_advance(Box::new(move || {
        if let Some(shared) = weak.upgrade() {
            shared.timer.wake();
        }
    }));
    let shared = Arc::clone(shared);
    move || run(&shared)
}

fn run(shared: &Shared) {
    let wake = &shared.timer;
    loop {
        wake.planned.store(0, Ordering::SeqCst);
        let next = match shared.run_due() {
            // Something due that the pass could not move (it would have
            // moved it if it could): look again in a second, not in a spin.
            Ok(report)
                if report.promoted + report.expired + report.removed == 0
                    && report
                        .next_due
                        .is_some_and(|at| at <= shared.clock().now_ms()) =>
            {
                Some(shared.clock().now_ms().saturating_add(1000))
            }
            Ok(report) => report.next_due,
            Err(e) => {
                tracing::error!(error = %e, "timer run failed; retrying in one second");
                Some(shared.clock().now_ms().saturating_add(1000))
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
            match next.and_then(|at| shared.clock().sleep_hint(at)) {
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
