//! Reading the durable event log: [`Subscription`].
//!
//! Every state change is an entry of the event log, committed with the
//! change itself. A subscription is a cursor over the log: it reads what was
//! committed after its position and, when it has read everything, waits for
//! the backend's wake-up (the latest committed id). Writers never wait for
//! subscribers; a subscriber that falls behind simply reads older entries,
//! until they pass their retention, which it learns as a
//! [`RecvError::Gap`].

use std::collections::VecDeque;
use std::sync::Weak;

use tokio::sync::watch;

use crate::Event;
use crate::backend::Backend;

/// Entries read from the log at a time.
const READ_AHEAD: usize = 256;

/// A stream of [`Event`]s from [`Queue::subscribe`](crate::Queue::subscribe)
/// or [`Queue::subscribe_after`](crate::Queue::subscribe_after), in commit
/// order, each delivered once.
pub struct Subscription {
    backend: Weak<dyn Backend>,
    latest: watch::Receiver<u64>,
    /// The id of the last event delivered (or skipped by a gap).
    cursor: u64,
    buffer: VecDeque<Event>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("cursor", &self.cursor)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The events after `after` up to `oldest` (exclusive) are no longer
    /// retained; the subscription goes on from `oldest`. Whoever relies on
    /// having seen every change re-reads the state it cares about.
    #[error("events after {after} are no longer retained; resuming at {oldest}")]
    Gap {
        /// The last event id the subscription had delivered.
        after: u64,
        /// The oldest retained event, delivered next.
        oldest: u64,
    },
    /// The queue was closed (every handle dropped).
    #[error("the queue was closed")]
    Closed,
    /// Reading the log failed.
    #[error("reading the event log failed: {0}")]
    Failed(String),
}

impl RecvError {
    /// How many events a gap skipped.
    pub fn missed(&self) -> u64 {
        match self {
            RecvError::Gap { after, oldest } => oldest.saturating_sub(after.saturating_add(1)),
            RecvError::Closed | RecvError::Failed(_) => 0,
        }
    }
}

impl Subscription {
    /// A subscription delivering the events after `cursor`.
    pub(crate) fn new(
        backend: Weak<dyn Backend>,
        latest: watch::Receiver<u64>,
        cursor: u64,
    ) -> Self {
        Subscription {
            backend,
            latest,
            cursor,
            buffer: VecDeque::new(),
        }
    }

    /// The id of the last event delivered: pass it to
    /// [`Queue::subscribe_after`](crate::Queue::subscribe_after) to resume
    /// after it, in this process or after a restart.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// The next event, waiting for one to be committed.
    ///
    /// # Errors
    /// [`RecvError::Gap`] when events were pruned before they could be read
    /// (call again to go on), [`RecvError::Closed`] when the queue is gone,
    /// [`RecvError::Failed`] when the log could not be read.
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        loop {
            if let Some(event) = self.next_buffered()? {
                return Ok(event);
            }
            if *self.latest.borrow_and_update() <= self.cursor {
                // Everything committed is delivered: wait for more.
                if self.latest.changed().await.is_err() {
                    return Err(RecvError::Closed);
                }
                continue;
            }
            self.fill().await?;
        }
    }

    /// An event if one is committed and not yet delivered; `Ok(None)` if
    /// none is. Reads the log, but never waits for new events.
    pub(crate) async fn poll_committed(&mut self) -> Result<Option<Event>, RecvError> {
        if let Some(event) = self.next_buffered()? {
            return Ok(Some(event));
        }
        if *self.latest.borrow_and_update() <= self.cursor {
            return Ok(None);
        }
        self.fill().await?;
        self.next_buffered()
    }

    fn next_buffered(&mut self) -> Result<Option<Event>, RecvError> {
        let Some(event) = self.buffer.pop_front() else {
            return Ok(None);
        };
        if event.event_id > self.cursor.saturating_add(1) {
            // The next retained event is not the next one: a gap. Deliver
            // it on the next call.
            let gap = RecvError::Gap {
                after: self.cursor,
                oldest: event.event_id,
            };
            self.cursor = event.event_id - 1;
            self.buffer.push_front(event);
            return Err(gap);
        }
        self.cursor = event.event_id;
        Ok(Some(event))
    }

    async fn fill(&mut self) -> Result<(), RecvError> {
        let backend = self.backend.upgrade().ok_or(RecvError::Closed)?;
        let events = backend
            .events_after(self.cursor, READ_AHEAD)
            .await
            .map_err(|e| RecvError::Failed(e.to_string()))?;
        if events.is_empty() {
            // Committed but pruned already, up to the latest: a gap to it.
            let latest = *self.latest.borrow();
            if latest > self.cursor {
                let gap = RecvError::Gap {
                    after: self.cursor,
                    oldest: latest + 1,
                };
                self.cursor = latest;
                return Err(gap);
            }
        }
        self.buffer.extend(events);
        Ok(())
    }
}
