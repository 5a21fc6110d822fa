use tokio::sync::broadcast;

use crate::Event;

/// A stream of [`Event`]s from [`Queue::subscribe`](crate::Queue::subscribe).
///
/// Events are buffered in a bounded ring shared by all subscribers; a
/// subscriber that falls behind by more than its capacity gets
/// [`RecvError::Lagged`] once (with the number of events it missed) and then
/// continues with the oldest event still buffered. Writers never wait for
/// subscribers.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// This subscriber fell behind and missed this many events.
    #[error("subscriber fell behind and missed {0} events")]
    Lagged(u64),
    /// The queue was closed (every handle dropped).
    #[error("the queue was closed")]
    Closed,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        Subscription { rx }
    }

    /// The next event, waiting for one.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] after falling behind (call again to go on),
    /// [`RecvError::Closed`] when the queue is gone.
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        self.rx.recv().await.map_err(map_error)
    }

    /// The blocking form of [`Subscription::recv`].
    ///
    /// # Panics
    /// If called from within an asynchronous runtime (tokio's rule for
    /// blocking receives); use [`Subscription::recv`] there.
    ///
    /// # Errors
    /// As [`Subscription::recv`].
    pub fn recv_blocking(&mut self) -> Result<Event, RecvError> {
        self.rx.blocking_recv().map_err(map_error)
    }

    /// The next event if one is buffered, `Ok(None)` if none is.
    ///
    /// # Errors
    /// As [`Subscription::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Event>, RecvError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(RecvError::Closed),
        }
    }
}

fn map_error(e: broadcast::error::RecvError) -> RecvError {
    match e {
        broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
        broadcast::error::RecvError::Closed => RecvError::Closed,
    }
}
