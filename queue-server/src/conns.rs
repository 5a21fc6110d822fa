//! The connection table: which connections are open, and what each is
//! doing, so that a full table can make room for a new client.
//!
//! Every accepted connection takes a slot until it ends. A slot is in one
//! of four states:
//!
//! - [`State::Idle`]: no request under way (just accepted, or between
//!   keep-alive requests; request headers still arriving count as idle).
//! - [`State::Body`]: a request whose body is being read.
//! - [`State::Busy`]: a request being served (a long-poll included), or its
//!   answer being written.
//! - [`State::Stream`]: an open event stream (SSE or WebSocket).
//!
//! When the table is full and a new connection arrives, the table sheds
//! the connection idle the longest; with none idle, the one whose body has
//! been arriving the longest (a stalled upload). Busy connections and
//! streams are never shed: a table full of them makes new connections wait
//! (in the listen backlog) until one ends. Apart from that, a connection
//! idle for longer than the idle timeout is closed. A body slower than the
//! body timeout is answered 400 by the request itself (see
//! `crate::http::read_body`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::signal::Signal;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// No request under way.
    Idle,
    /// Reading a request body.
    Body,
    /// Serving a request or writing its answer.
    Busy,
    /// An open event stream.
    Stream,
}

impl State {
    fn from_u8(n: u8) -> State {
        match n {
            0 => State::Idle,
            1 => State::Body,
            2 => State::Busy,
            _ => State::Stream,
        }
    }
}

/// Why a connection is told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Idle: close it once no request is under way (at once, normally).
    Idle,
    /// A stalled body under a full table: drop it at once.
    Stalled,
}

/// What a connection is doing, and since when: written by the connection
/// without the table's lock (twice per request), read by the table's scans.
struct Slot {
    /// A [`State`].
    state: AtomicU8,
    /// Since when, in nanoseconds after the table's `epoch`.
    since: AtomicU64,
}

impl Slot {
    fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }
}

struct Entry {
    slot: Arc<Slot>,
    /// Tells the connection to close (and, for one told to close when idle
    /// that has started a request since, to drop it if that body stalls).
    shed: watch::Sender<Option<Shed>>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    entries: HashMap<u64, Entry>,
}

/// The table of open connections.
pub(crate) struct Table {
    cap: usize,
    slots: Mutex<Slots>,
    /// Signalled when a slot frees or changes state, for a connection
    /// waiting for room and the shutdown waiting for the last one to end
    /// (a change of state, which every request makes twice, costs nothing
    /// more when nobody waits).
    changed: Signal,
    /// What the slots' `since` count from.
    epoch: Instant,
}

impl Table {
    /// A table of at most `cap` connections.
    pub(crate) fn new(cap: usize) -> Arc<Table> {
        Arc::new(Table {
            cap: cap.max(1),
            slots: Mutex::default(),
            changed: Signal::default(),
            epoch: Instant::now(),
        })
    }

    /// Now, in nanoseconds after `epoch`.
    fn now(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection: at once if the table has room, else
    /// after shedding an idle or stalled connection, else when one ends.
    /// The receiver tells the connection when it must close.
    pub(crate) async fn admit(self: &Arc<Self>) -> (Conn, watch::Receiver<Option<Shed>>) {
        self.changed.wait_until(|| self.try_admit()).await
    }

    /// A slot at once if the table has room; else sheds an idle or stalled
    /// connection (unless one is already on its way out) and gives none.
    fn try_admit(self: &Arc<Self>) -> Option<(Conn, watch::Receiver<Option<Shed>>)> {
        let mut slots = self.slots();
        if slots.entries.len() < self.cap {
            let (tx, rx) = watch::channel(None);
            let id = slots.next;
            slots.next += 1;
            let slot = Arc::new(Slot {
                state: AtomicU8::new(State::Idle as u8),
                since: AtomicU64::new(self.now()),
            });
            slots.entries.insert(
                id,
                Entry {
                    slot: Arc::clone(&slot),
                    shed: tx,
                },
            );
            let conn = Conn(Arc::new(ConnInner {
                table: Arc::clone(self),
                id,
                slot,
            }));
            return Some((conn, rx));
        }
        // Full. Unless a connection told to close is already on its
        // way out, shed one: the longest idle, else the longest
        // stalled body. (One told to close when idle that has
        // started a request since is finishing it: it does not hold
        // the next shedding back, and its body can be shed too.)
        let closing = slots.entries.values().any(|e| match *e.shed.borrow() {
            Some(Shed::Stalled) => true,
            Some(Shed::Idle) => e.slot.state() == State::Idle,
            None => false,
        });
        if !closing {
            let victim = pick(&slots, State::Idle).or_else(|| pick(&slots, State::Body));
            if let Some((id, kind)) = victim {
                if let Some(entry) = slots.entries.get(&id) {
                    tracing::debug!(?kind, "connection table full: shedding a connection");
                    entry.shed.send_replace(Some(kind));
                }
            }
        }
        None
    }

    /// Closes the connections idle for longer than `idle_timeout`. Returns
    /// how many it told to close.
    pub(crate) fn shed_idle_since(&self, idle_timeout: Duration) -> usize {
        let now = self.now();
        let idle_timeout = u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        let mut shed = 0;
        for entry in self.slots().entries.values() {
            if entry.slot.state() == State::Idle
                && now.saturating_sub(entry.slot.since.load(Ordering::SeqCst)) >= idle_timeout
                && entry.shed.borrow().is_none()
            {
                entry.shed.send_replace(Some(Shed::Idle));
                shed += 1;
            }
        }
        shed
    }

    /// The number of open connections.
    pub(crate) fn len(&self) -> usize {
        self.slots().entries.len()
    }

    /// Waits until every connection has ended.
    pub(crate) async fn all_closed(&self) {
        self.changed
            .wait_until(|| (self.len() == 0).then_some(()))
            .await;
    }

    /// Records a connection's state, without the table's lock; signals
    /// `changed` only if a task waits for it.
    fn set(&self, slot: &Slot, state: State) {
        if slot.state() == state {
            return;
        }
        slot.since.store(self.now(), Ordering::SeqCst);
        slot.state.store(state as u8, Ordering::SeqCst);
        self.changed.changed();
    }
}

/// The oldest connection in `state` that can still be shed.
fn pick(slots: &Slots, state: State) -> Option<(u64, Shed)> {
    let kind = if state == State::Idle {
        Shed::Idle
    } else {
        Shed::Stalled
    };
    slots
        .entries
        .iter()
        .filter(|(_, e)| {
            e.slot.state() == state
                && match *e.shed.borrow() {
                    None => true,
                    // Told to close when idle, then a request began whose
                    // body stalls: it can still be dropped.
                    Some(Shed::Idle) => state == State::Body,
                    Some(Shed::Stalled) => false,
                }
        })
        .min_by_key(|(id, e)| (e.slot.since.load(Ordering::SeqCst), **id))
        .map(|(id, _)| (*id, kind))
}

struct ConnInner {
    table: Arc<Table>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.table.slots().entries.remove(&self.id);
        self.table.changed.changed();
    }
}

/// A connection's slot in the table; it frees when the last clone drops
/// (an upgraded WebSocket keeps a clone for as long as it is open).
#[derive(Clone)]
pub(crate) struct Conn(Arc<ConnInner>);

impl Conn {
    /// Records what the connection is doing.
    pub(crate) fn set(&self, state: State) {
        self.0.table.set(&self.0.slot, state);
    }

    /// What the connection is doing.
    #[cfg(test)]
    pub(crate) fn state(&self) -> State {
        self.0.slot.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_table_sheds_the_oldest_idle_then_the_oldest_stalled_body() {
        let table = Table::new(3);
        let (a, mut a_shed) = table.admit().await;
        let (b, b_shed) = table.admit().await;
        let (c, mut c_shed) = table.admit().await;
        a.set(State::Body);
        b.set(State::Stream);
        c.set(State::Busy);
        c.set(State::Idle);
        // Full: the next one sheds c (idle), and waits for it to go.
        let table2 = Arc::clone(&table);
        let next = tokio::spawn(async move { table2.admit().await });
        c_shed.wait_for(Option::is_some).await.unwrap();
        assert_eq!(*c_shed.borrow(), Some(Shed::Idle));
        assert_eq!(*a_shed.borrow(), None);
        drop(c);
        let (d, _d_shed) = next.await.unwrap();
        d.set(State::Busy);
        // Full again, nothing idle: the stalled body goes.
        let table2 = Arc::clone(&table);
        let next = tokio::spawn(async move { table2.admit().await });
        a_shed.wait_for(Option::is_some).await.unwrap();
        assert_eq!(*a_shed.borrow(), Some(Shed::Stalled));
        drop(a);
        let (e, _e_shed) = next.await.unwrap();
        // Streams and busy connections are never shed.
        e.set(State::Busy);
        assert_eq!(table.len(), 3);
        let waited = tokio::time::timeout(Duration::from_millis(50), table.admit()).await;
        assert!(
            waited.is_err(),
            "a table of busy and streaming connections has no room"
        );
        assert_eq!(*b_shed.borrow(), None);
        drop(b);
        let _ = table.admit().await;
    }

    #[tokio::test]
    async fn idle_connections_time_out_and_streams_never_do() {
        let table = Table::new(4);
        let (a, a_shed) = table.admit().await;
        let (b, b_shed) = table.admit().await;
        b.set(State::Stream);
        assert_eq!(table.shed_idle_since(Duration::from_secs(3600)), 0);
        assert_eq!(table.shed_idle_since(Duration::ZERO), 1);
        assert_eq!(*a_shed.borrow(), Some(Shed::Idle));
        assert_eq!(*b_shed.borrow(), None);
        assert_eq!(a.state(), State::Idle);
        assert_eq!(b.state(), State::Stream);
    }

    #[tokio::test]
    async fn a_connection_waiting_for_room_is_let_in_when_a_busy_one_turns_idle() {
        let table = Table::new(2);
        let (a, mut a_shed) = table.admit().await;
        let (b, b_shed) = table.admit().await;
        a.set(State::Busy);
        b.set(State::Busy);
        let table2 = Arc::clone(&table);
        let mut next = tokio::spawn(async move { table2.admit().await });
        // Full of busy connections: it waits (and counts as waiting).
        tokio::select! {
            _ = &mut next => panic!("admitted into a full table of busy connections"),
            () = async {
                while table.changed.waiting() == 0 {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
        // Only the change of state can wake it: nothing ends.
        a.set(State::Idle);
        tokio::time::timeout(Duration::from_secs(10), a_shed.wait_for(Option::is_some))
            .await
            .expect("the waiting admission was not woken by the change of state")
            .unwrap();
        assert_eq!(*a_shed.borrow(), Some(Shed::Idle));
        assert_eq!(*b_shed.borrow(), None);
        drop(a);
        let _ = next.await.unwrap();
        assert_eq!(table.changed.waiting(), 0);
    }
}
