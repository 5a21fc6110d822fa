//! A change signal that costs an atomic load when nobody waits: for state
//! that every request changes (what a connection is doing, how many
//! requests are in flight) but that only a few tasks ever wait on (a
//! connection waiting for room, a shutdown or a test waiting for a count).
//! A [`Notify`] signalled on every change would take its lock twice per
//! request.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Wakes the tasks in [`Signal::wait_until`] when told of a change.
#[derive(Default)]
pub(crate) struct Signal {
    notify: Notify,
    /// Tasks in `wait_until`.
    waiting: AtomicUsize,
}

impl Signal {
    /// Tells the waiting tasks that the state changed, if there are any.
    /// The change must be made before: with sequentially consistent
    /// atomics, or under a lock that the waiters' check takes.
    pub(crate) fn changed(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until `check` gives a value: it runs now, then after every
    /// change signalled meanwhile. The task counts as waiting before each
    /// check, so a change made after the check reads the state is
    /// signalled, and one made before is seen by it.
    pub(crate) async fn wait_until<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let _waiting = Waiting::new(&self.waiting);
            if let Some(value) = check() {
                return value;
            }
            notified.await;
        }
    }

    /// Tasks waiting now (tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Counts a task as waiting while it lives (its future may be dropped
/// while it waits).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_sees_every_change_made_while_or_before_it_checks() {
        // Many rounds of a change racing a waiter's check: a change lost
        // between the check and the wait would leave the waiter asleep.
        for round in 0..2000u64 {
            let state = Arc::new((AtomicU64::new(0), Signal::default()));
            let changer = {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    state.0.store(round + 1, Ordering::SeqCst);
                    state.1.changed();
                })
            };
            let seen = tokio::time::timeout(
                Duration::from_secs(10),
                state.1.wait_until(|| {
                    let n = state.0.load(Ordering::SeqCst);
                    (n > 0).then_some(n)
                }),
            )
            .await
            .expect("a change was lost");
            assert_eq!(seen, round + 1);
            changer.await.unwrap();
            assert_eq!(state.1.waiting(), 0);
        }
    }

    #[tokio::test]
    async fn a_change_with_nobody_waiting_wakes_nothing_later() {
        let signal = Signal::default();
        signal.changed();
        // The change above left no permit: a waiter whose check fails
        // waits for the next change.
        let mut calls = 0;
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            signal.wait_until(|| {
                calls += 1;
                None::<()>
            }),
        )
        .await;
        assert!(waited.is_err());
        assert_eq!(calls, 1, "checked once, then waited");
        assert_eq!(signal.waiting(), 0, "a dropped wait stops counting");
    }
}
