//! Group commit: writers register after their transaction and wait until a
//! flush that started after their registration has finished. One flusher
//! thread runs flushes back to back while there are waiters, so every flush
//! covers all the writers that arrived while the previous one ran.

use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::storage::Store;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Every ticket up to this one is on disk.
    durable: u64,
    /// Every ticket up to this one whose flush failed (and that no later
    /// flush has covered) gets an error.
    failed_through: u64,
}

impl Progress {
    fn outcome(&self, ticket: u64) -> Option<Result<()>> {
        if self.durable >= ticket {
            Some(Ok(()))
        } else if self.failed_through >= ticket {
            Some(Err(Error::Storage(sled::Error::Io(std::io::Error::other(
                "flush to disk failed",
            )))))
        } else {
            None
        }
    }
}

struct State {
    requested: u64,
    progress: Progress,
    stop: bool,
}

pub(crate) struct GroupCommit {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    watch: watch::Sender<Progress>,
}

impl GroupCommit {
    pub(crate) fn new() -> Self {
        GroupCommit {
            state: Mutex::new(State {
                requested: 0,
                progress: Progress::default(),
                stop: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            watch: watch::Sender::new(Progress::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a writer whose transaction has committed; the flush that
    /// satisfies the returned ticket starts after this call.
    pub(crate) fn ticket(&self) -> u64 {
        let mut state = self.lock();
        state.requested += 1;
        self.work.notify_one();
        state.requested
    }

    /// Blocks until `ticket` is on disk.
    pub(crate) fn wait(&self, ticket: u64) -> Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.progress.outcome(ticket) {
                return outcome;
            }
            state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits, without holding a thread, until `ticket` is on disk.
    pub(crate) async fn wait_async(&self, ticket: u64) -> Result<()> {
        let mut rx = self.watch.subscribe();
        let progress = rx
            .wait_for(|p| p.outcome(ticket).is_some())
            .await
            .map_err(|_| Error::Closed)?;
        progress.outcome(ticket).unwrap_or(Err(Error::Closed))
    }

    /// The flusher thread's body: runs until [`GroupCommit::stop`], flushing
    /// whatever was requested before it returns.
    pub(crate) fn run(&self, store: &Store) {
        let mut state = self.lock();
        loop {
            let settled = state.progress.durable.max(state.progress.failed_through);
            if state.requested == settled {
                if state.stop {
                    return;
                }
                state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let target = state.requested;
            drop(state);
            let flushed = store.flush();
            state = self.lock();
            match flushed {
                Ok(()) => state.progress.durable = target,
                Err(ref e) => {
                    tracing::error!(error = %e, "flush failed");
                    state.progress.failed_through = target;
                }
            }
            self.watch.send_replace(state.progress);
            self.done.notify_all();
        }
    }

    /// Asks the flusher to finish pending work and return.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_all();
    }
}
