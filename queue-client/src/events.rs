//! Event streams that outlive their connections: [`Client::events`] and
//! the stream behind [`JobHandle::events`](crate::JobHandle::events).
//!
//! A task follows the server's stream on the caller's behalf and hands the
//! items over a channel. It remembers the id of the last item it passed on
//! and, when the connection ends or fails, reconnects with that id as
//! `Last-Event-ID` after a back-off (100 ms, doubling up to 5 s; back to
//! 100 ms once items flow again), so the server replays exactly what came
//! after it. An item at or below that id is never passed on twice. A gap
//! (events pruned before they could be read) is an item like the others.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::transport::{Delivery, EventConnection, EventSource};
use crate::{Client, Error, EventFilter, Result, StreamItem};

/// Items buffered between the task that reads the stream and its consumer.
/// A consumer that falls behind holds up the reading task (and so its
/// connection); the server then keeps its place in the durable log.
const BUFFER: usize = 256;

/// The first wait before reconnecting, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Client {
    /// Subscribes to the queue's events, pushed by the server as they are
    /// committed (over Server-Sent Events, or the embedded queue's own
    /// feed): one [`StreamItem::Event`] per state change or progress
    /// report that matches `filter`, starting now or, with
    /// [`EventFilter::after`], with the retained events after that id.
    ///
    /// The stream does not end by itself. When its connection drops (the
    /// network, a server restart) it reconnects and resumes after the last
    /// item it passed on, so the caller sees every event once, in commit
    /// order, with no duplicate. If events were pruned before the stream
    /// could read them (it was away longer than the server's retention, or
    /// `after` is too old), it yields a [`StreamItem::Gap`] and goes on with
    /// the oldest retained event. Before its first item the stream has no
    /// position, so a connection lost then resumes from the time it
    /// reconnects. Errors the stream cannot get past by reconnecting
    /// ([`Error::Unauthorized`], for instance) are yielded and end it;
    /// failures to reconnect are logged and retried.
    ///
    /// ```no_run
    /// # async fn run(client: queue_client::Client) -> queue_client::Result<()> {
    /// use queue_client::{EventFilter, StreamItem};
    ///
    /// let mut events = client.events(EventFilter::new().queue("emails")).await?;
    /// while let Some(item) = events.next().await {
    ///     match item? {
    ///         StreamItem::Event(event) => println!("{} is now {}", event.id, event.state),
    ///         StreamItem::Gap(gap) => println!("missed events up to {}; re-reading", gap.oldest),
    ///     }
    ///     // events.last_event_id() is where a later stream may start (EventFilter::after).
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a queue filter that is no queue name;
    /// transport errors when the first connection cannot be made.
    pub async fn events(&self, filter: EventFilter) -> Result<EventStream> {
        let after = filter.after;
        EventStream::open(self, EventSource::Filter(filter), after).await
    }
}

/// A live, resuming stream of events, from [`Client::events`] or
/// [`JobHandle::events`](crate::JobHandle::events). It implements
/// [`Stream`](tokio_stream::Stream) and has an inherent
/// [`next`](EventStream::next). Dropping it closes its connection.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<Result<StreamItem>>,
    last: Option<u64>,
}

impl EventStream {
    /// Opens the first connection (so that a refusal is the caller's error)
    /// and starts the task that follows it.
    pub(crate) async fn open(
        client: &Client,
        source: EventSource,
        after: Option<u64>,
    ) -> Result<EventStream> {
        let connection = client.transport().open_events(&source, after).await?;
        let (sender, receiver) = mpsc::channel(BUFFER);
        let follower = Follower {
            client: client.clone(),
            source,
            last: after,
            sender,
        };
        let opened = Opened {
            resumed: after.is_some(),
            reread_after: None,
        };
        tokio::spawn(follower.run(connection, opened));
        Ok(EventStream {
            receiver,
            last: after,
        })
    }

    /// The next item; `None` once the stream has ended (a job stream after
    /// the job's terminal event, any stream after an error it cannot get
    /// past).
    pub async fn next(&mut self) -> Option<Result<StreamItem>> {
        let item = self.receiver.recv().await;
        self.note(item.as_ref());
        item
    }

    /// The id of the last item this stream handed out (an event's id, or
    /// the last id a gap covers): give it to [`EventFilter::after`] to start
    /// a later stream where this one stopped, in this process or another.
    /// Before the first item, where the stream started (`after`), if given.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last
    }

    fn note(&mut self, item: Option<&Result<StreamItem>>) {
        let id = match item {
            Some(Ok(item)) => item.last_event_id(),
            Some(Err(Error::EventTooLarge {
                event_id: Some(id), ..
            })) => *id,
            _ => return,
        };
        self.last = Some(self.last.map_or(id, |last| last.max(id)));
    }
}

impl tokio_stream::Stream for EventStream {
    type Item = Result<StreamItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.receiver.poll_recv(cx);
        if let Poll::Ready(item) = &polled {
            self.note(item.as_ref());
        }
        polled
    }
}

/// How a connection of the stream was opened.
#[derive(Debug, Clone, Copy)]
struct Opened {
    /// With a resume id (`Last-Event-ID`).
    resumed: bool,
    /// A job stream opened afresh after a gap: its first event (the job's
    /// current state) is new to the caller unless at or below this id.
    reread_after: Option<u64>,
}

/// How a connection ended.
enum End {
    /// The stream is over: its consumer is gone, its job finished, or an
    /// error it cannot get past was passed on.
    Over,
    /// The connection ended or failed: reconnect after the last item.
    Dropped,
    /// A job stream resumed into a gap, which may hide the job's last
    /// events (its terminal one too): open it afresh, from the job's current
    /// state. `after` is the gap's: what the caller had seen.
    Reread { after: u64 },
}

/// The task behind an [`EventStream`].
struct Follower {
    client: Client,
    source: EventSource,
    /// The id of the last item passed on: where a reconnection resumes.
    last: Option<u64>,
    sender: mpsc::Sender<Result<StreamItem>>,
}

impl Follower {
    async fn run(mut self, mut connection: EventConnection, mut opened: Opened) {
        let mut backoff = Backoff::default();
        loop {
            let resumable = connection.resumable();
            let end = self.pump(&mut connection, opened, &mut backoff).await;
            // Closed before the wait, not left open through it.
            drop(connection);
            let (next, wait) = match end {
                End::Over => return,
                End::Dropped if !resumable => return,
                End::Dropped => (
                    Opened {
                        resumed: self.last.is_some(),
                        reread_after: None,
                    },
                    true,
                ),
                End::Reread { after } => (
                    Opened {
                        resumed: false,
                        reread_after: Some(after),
                    },
                    false,
                ),
            };
            let after = if next.resumed { self.last } else { None };
            connection = match self.reconnect(after, wait, &mut backoff).await {
                Some(connection) => connection,
                None => return,
            };
            opened = next;
        }
    }

    /// Passes the items of one connection on, until it ends.
    async fn pump(
        &mut self,
        connection: &mut EventConnection,
        opened: Opened,
        backoff: &mut Backoff,
    ) -> End {
        let job_stream = matches!(self.source, EventSource::Job(_));
        let mut reread_after = opened.reread_after;
        // A fresh job stream starts with the job's current state; a gap
        // right after it lies past the job's latest event, so it hides
        // nothing of the job.
        let mut snapshot: Option<u64> = None;
        let mut first = true;
        loop {
            let delivery = tokio::select! {
                () = self.sender.closed() => return End::Over,
                delivery = connection.next() => delivery,
            };
            let Some(Delivery { id, item }) = delivery else {
                return End::Dropped;
            };
            let Some(item) = item else {
                // The connection's starting position: a drop before its
                // first event resumes from here. (A job stream's first
                // event is its snapshot, at that very position.)
                if !job_stream {
                    self.advance(id);
                }
                continue;
            };
            let item = match item {
                Ok(item) => item,
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "event stream connection lost; reconnecting");
                    return End::Dropped;
                }
                Err(e) => {
                    self.advance(id);
                    if self.sender.send(Err(e)).await.is_err() {
                        return End::Over;
                    }
                    continue;
                }
            };
            let position = id.unwrap_or_else(|| item.last_event_id());
            let is_first = std::mem::replace(&mut first, false);
            let seen = match &item {
                StreamItem::Event(_) => {
                    if is_first && job_stream && !opened.resumed {
                        snapshot = Some(position);
                    }
                    reread_after.take().or(self.last)
                }
                StreamItem::Gap(gap) => {
                    if snapshot.is_some_and(|s| s == gap.after) {
                        self.advance(Some(position));
                        continue;
                    }
                    self.last
                }
            };
            if seen.is_some_and(|seen| position <= seen) {
                continue;
            }
            self.advance(Some(position));
            backoff.reset();
            let over = job_stream && item.is_terminal();
            let reread = match &item {
                StreamItem::Gap(gap) if job_stream && opened.resumed => Some(gap.after),
                _ => None,
            };
            if self.sender.send(Ok(item)).await.is_err() {
                return End::Over;
            }
            if over {
                return End::Over;
            }
            if let Some(after) = reread {
                return End::Reread { after };
            }
        }
    }

    fn advance(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            self.last = Some(self.last.map_or(id, |last| last.max(id)));
        }
    }

    /// Opens the next connection, resuming after `after`; waits the
    /// back-off first when `wait`, and between failed tries. `None` when
    /// the stream is over (its consumer left, or the server refused it for
    /// good, which the consumer is told).
    async fn reconnect(
        &self,
        after: Option<u64>,
        mut wait: bool,
        backoff: &mut Backoff,
    ) -> Option<EventConnection> {
        loop {
            if wait {
                let pause = backoff.next();
                tokio::select! {
                    () = self.sender.closed() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            wait = true;
            let opened = tokio::select! {
                () = self.sender.closed() => return None,
                opened = self.client.transport().open_events(&self.source, after) => opened,
            };
            match opened {
                Ok(connection) => return Some(connection),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "event stream cannot reconnect yet; trying again");
                }
                Err(e) => {
                    let _ = self.sender.send(Err(e)).await;
                    return None;
                }
            }
        }
    }
}

/// The wait before each reconnection: doubling from [`FIRST_BACKOFF`] up
/// to [`MAX_BACKOFF`], back to the first once items flow again.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = pause.saturating_mul(2).min(MAX_BACKOFF);
        pause
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), FIRST_BACKOFF);
    }
}
