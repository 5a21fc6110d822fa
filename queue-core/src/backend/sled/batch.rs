//! Group commit: every write goes through one batch at a time.
//!
//! The first caller leads: it takes every waiting operation, runs them in
//! order (each sees the writes of those before it; one that fails leaves
//! nothing), commits the batch through the write-ahead record, flushes,
//! and hands over; whatever arrived meanwhile forms the next batch. Async
//! callers never lead (they must not block their runtime): the committer
//! thread leads for them.
//!
//! A batch is made atomic by a write-ahead record rather than a sled
//! transaction: sled serializes transactions and forces log writes for
//! each, which capped durable throughput at a third of what this design
//! reaches (see BENCHMARKS.md). The record is one sled insert per MiB
//! (pieces are only complete together); it is flushed and fdatasynced
//! before the trees are written; a reopen replays a record that a crash
//! interrupted. sled recovers a prefix of its log, so the trees are never
//! ahead of their record.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sled::IVec;

use super::codec::{self, decode_job, encode_event, job_revision};
use super::keys::{
    self, EVENT_SEQ, EVENTS, INDEX, JOBS, META, count_key, decode_u64, event_key, id_at_end,
    idem_key, job_key, queue_prefix, settings_key,
};
use super::{Store, storage};
use queue_proto::JobState;

use crate::backend::{Change, Expect, Revision};
use crate::rules::EventDraft;
use crate::settings::QueueSettings;
use crate::{Error, Event, Job, JobId, Result};

/// Writes of a batch: (tree, key) → new value, `None` for a removal.
pub(crate) type Writes = BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// Why an operation inside a batch gave up; its writes are discarded.
#[derive(Debug)]
pub(crate) enum TxError {
    /// A record is not what the decision was taken from: decide again.
    Stale,
    /// The operation cannot go on.
    Failed(Error),
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Failed(e)
    }
}

impl From<sled::Error> for TxError {
    fn from(e: sled::Error) -> Self {
        TxError::Failed(storage(e))
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, TxError>;

/// A change with everything that does not depend on the batch computed
/// beforehand, on the caller's thread (or, for a lease, once per job).
pub(crate) struct Prepared {
    id: JobId,
    expect: Expect,
    /// The (queue, key) a new job's idempotency key claims.
    claims: Option<(String, String)>,
    old: Option<(String, JobState)>,
    new: Option<(String, JobState)>,
    /// The new record's bytes (`None`: delete).
    bytes: Option<Vec<u8>>,
    remove: Vec<keys::Entry>,
    insert: Vec<keys::Entry>,
    events: Vec<EventDraft>,
}

impl Prepared {
    pub(crate) fn new(change: &Change) -> Result<Prepared> {
        let revision = match change.expect {
            Expect::Absent => Revision(1),
            Expect::At(revision) => revision.next(),
        };
        let old_entries = change.old.as_ref().map(keys::entries).unwrap_or_default();
        let new_entries = change.new_job().map(keys::entries).unwrap_or_default();
        let remove = old_entries
            .iter()
            .filter(|e| {
                !new_entries
                    .iter()
                    .any(|n| n.family == e.family && n.key == e.key)
            })
            .cloned()
            .collect();
        let insert = new_entries
            .into_iter()
            .filter(|e| !old_entries.contains(e))
            .collect();
        let bytes = match change.new_job() {
            Some(job) => Some(codec::encode_job(job, revision)?),
            None => None,
        };
        let claims = match (change.expect, change.new_job()) {
            (
                Expect::Absent,
                Some(Job {
                    queue,
                    idempotency_key: Some(key),
                    ..
                }),
            ) => Some((queue.clone(), key.clone())),
            _ => None,
        };
        let place = |job: &Job| (job.queue.clone(), job.state);
        Ok(Prepared {
            id: change.id,
            expect: change.expect,
            claims,
            old: change.old.as_ref().map(place),
            new: change.new_job().map(place),
            bytes,
            remove,
            insert,
            events: change.outcome.events().cloned().collect(),
        })
    }
}

/// One operation's view of the store: its own writes over the writes of
/// the earlier operations of its batch over the trees.
pub(crate) struct Tx<'a> {
    store: &'a Store,
    batch: &'a Writes,
    own: RefCell<Writes>,
    deltas: RefCell<BTreeMap<Vec<u8>, i64>>,
    events: RefCell<Vec<EventDraft>>,
}

impl Tx<'_> {
    fn get(&self, tree: u8, key: &[u8]) -> TxResult<Option<IVec>> {
        let k = (tree, key.to_vec());
        if let Some(v) = self.own.borrow().get(&k) {
            return Ok(v.as_deref().map(IVec::from));
        }
        if let Some(v) = self.batch.get(&k) {
            return Ok(v.as_deref().map(IVec::from));
        }
        Ok(self.store.tree(tree).get(key)?)
    }

    fn put(&self, tree: u8, key: &[u8], value: Option<&[u8]>) {
        self.own
            .borrow_mut()
            .insert((tree, key.to_vec()), value.map(<[u8]>::to_vec));
    }

    /// Whether the store is as `prepared` expects: the record at its
    /// revision, or, for a new job, no record and its idempotency key free.
    pub(crate) fn is_current(&self, prepared: &Prepared) -> TxResult<bool> {
        let stored = self.get(JOBS, &job_key(prepared.id))?;
        match (prepared.expect, stored) {
            (Expect::Absent, Some(_)) => Ok(false),
            (Expect::Absent, None) => match &prepared.claims {
                Some((queue, key)) => Ok(self.get(INDEX, &idem_key(queue, key))?.is_none()),
                None => Ok(true),
            },
            (Expect::At(_), None) => Ok(false),
            (Expect::At(revision), Some(bytes)) => Ok(job_revision(&bytes)? == revision),
        }
    }

    /// Applies `prepared` (the caller has checked it is current).
    pub(crate) fn apply(&self, prepared: &Prepared) {
        self.put(JOBS, &job_key(prepared.id), prepared.bytes.as_deref());
        for entry in &prepared.remove {
            self.put(entry.family.tree(), &entry.key, None);
        }
        for entry in &prepared.insert {
            self.put(entry.family.tree(), &entry.key, Some(&entry.value));
        }
        if prepared.old != prepared.new {
            let mut deltas = self.deltas.borrow_mut();
            if let Some((queue, state)) = &prepared.old {
                *deltas.entry(count_key(queue, *state)).or_default() -= 1;
            }
            if let Some((queue, state)) = &prepared.new {
                *deltas.entry(count_key(queue, *state)).or_default() += 1;
            }
        }
        self.events
            .borrow_mut()
            .extend(prepared.events.iter().cloned());
    }

    /// The stored record of `id` with its revision, as this operation sees it.
    pub(crate) fn load(&self, id: JobId) -> TxResult<Option<(Job, Revision)>> {
        match self.get(JOBS, &job_key(id))? {
            Some(bytes) => Ok(Some(decode_job(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The ready jobs of `queue` in lease order, as this operation sees
    /// them: the stored index without the entries that earlier operations
    /// of the batch (or this one) removed. The trees do not change during a
    /// batch, so the scan is stable. Jobs that became ready earlier in the
    /// same batch are not listed; the next batch sees them.
    pub(crate) fn ready_jobs<'s>(
        &'s self,
        queue: &str,
    ) -> impl Iterator<Item = TxResult<JobId>> + 's {
        self.store
            .index
            .scan_prefix(queue_prefix(keys::READY, queue))
            .keys()
            .filter_map(move |key| match key {
                Err(e) => Some(Err(TxError::from(e))),
                Ok(key) => {
                    let k = (INDEX, key.to_vec());
                    let removed = matches!(self.own.borrow().get(&k), Some(None))
                        || matches!(self.batch.get(&k), Some(None));
                    (!removed).then(|| id_at_end(&key).map_err(TxError::Failed))
                }
            })
    }

    /// A fresh id from sled's monotonic generator (never reused).
    pub(crate) fn generate_id(&self) -> TxResult<u64> {
        Ok(self.store.db.generate_id()?)
    }

    /// The settings of `queue`, as seen by this operation.
    pub(crate) fn settings(&self, queue: &str) -> TxResult<QueueSettings> {
        match self.get(META, &settings_key(queue))? {
            Some(bytes) => Ok(codec::decode_settings(&bytes)?),
            None => Ok(QueueSettings::default()),
        }
    }

    /// Stores the settings of `queue`; the defaults are stored as nothing.
    pub(crate) fn set_settings(&self, queue: &str, settings: &QueueSettings) -> TxResult<()> {
        if *settings == QueueSettings::default() {
            self.put(META, &settings_key(queue), None);
        } else {
            let bytes = codec::encode_settings(settings)?;
            self.put(META, &settings_key(queue), Some(&bytes));
        }
        Ok(())
    }

    /// Writes the accumulated count changes; zero counts are removed so that
    /// a queue whose jobs are all gone stops being listed.
    fn write_counts(&self) -> TxResult<()> {
        let deltas = std::mem::take(&mut *self.deltas.borrow_mut());
        for (key, delta) in deltas {
            if delta == 0 {
                continue;
            }
            let current = match self.get(META, &key)? {
                Some(bytes) => decode_u64(&bytes)?,
                None => 0,
            };
            let next = current.saturating_add_signed(delta);
            let value = next.to_be_bytes();
            self.put(META, &key, (next != 0).then_some(&value[..]));
        }
        Ok(())
    }
}

// ---- batching ----------------------------------------------------------------

/// The queue of operations waiting for a batch.
#[derive(Default)]
pub(crate) struct Batcher {
    state: Mutex<BatchState>,
    /// Wakes the committer thread, which leads when no thread caller does.
    committer: Condvar,
}

/// How a waiting caller is woken (one each, so that a handover wakes only
/// the callers concerned).
enum Wake {
    /// A thread sleeping on its own condition variable; it may lead.
    Thread(Arc<Condvar>),
    /// An async task awaiting the operation's `Notify`; it never leads.
    Task,
}

type Waiter = (Arc<dyn PendingOp>, Wake);

#[derive(Default)]
struct BatchState {
    pending: Vec<Waiter>,
    leading: bool,
    stop: bool,
}

impl Batcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A batch being run: its writes and the events its operations emitted.
pub(crate) struct Running {
    writes: Writes,
    events: Vec<Event>,
    next_event: u64,
}

/// One caller's operation waiting in a batch.
trait PendingOp: Send + Sync {
    /// Runs the operation over the batch and records its outcome; on
    /// success its writes and events join the batch.
    fn run(&self, store: &Store, batch: &mut Running);
    /// Turns a successful outcome into an error: the batch could not be
    /// made durable, so the change is not acknowledged.
    fn not_durable(&self, error: &Error);
    /// Marks the outcome final and wakes an async waiter.
    fn finish(&self);
}

/// What an operation returns: its value and the events it emitted, with
/// their ids; `None` if it gave up as stale.
pub(crate) type OpOutcome<R> = Result<Option<(R, Vec<Event>)>>;

struct Op<F, R> {
    f: F,
    notify: tokio::sync::Notify,
    outcome: Mutex<Option<OpOutcome<R>>>,
    done: AtomicBool,
}

impl<F, R> Op<F, R> {
    fn new(f: F) -> Arc<Op<F, R>> {
        Arc::new(Op {
            f,
            notify: tokio::sync::Notify::new(),
            outcome: Mutex::new(None),
            done: AtomicBool::new(false),
        })
    }

    fn take_outcome(&self) -> OpOutcome<R> {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        outcome.unwrap_or_else(|| Err(Error::Internal("operation produced no outcome".into())))
    }

    fn record(&self, outcome: OpOutcome<R>) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }
}

impl<F, R> PendingOp for Op<F, R>
where
    F: Fn(&Tx<'_>) -> TxResult<R> + Send + Sync,
    R: Send,
{
    fn run(&self, store: &Store, batch: &mut Running) {
        let (outcome, own, drafts) = {
            let tx = Tx {
                store,
                batch: &batch.writes,
                own: RefCell::new(Writes::new()),
                deltas: RefCell::new(BTreeMap::new()),
                events: RefCell::new(Vec::new()),
            };
            let outcome = (self.f)(&tx).and_then(|value| tx.write_counts().map(|()| value));
            (outcome, tx.own.into_inner(), tx.events.into_inner())
        };
        match outcome {
            Ok(value) => match batch.add(own, drafts) {
                Ok(events) => self.record(Ok(Some((value, events)))),
                Err(e) => self.record(Err(e)),
            },
            Err(TxError::Stale) => self.record(Ok(None)),
            Err(TxError::Failed(e)) => self.record(Err(e)),
        }
    }

    fn not_durable(&self, error: &Error) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*outcome, Some(Ok(Some(_)))) {
            *outcome = Some(Err(Error::Storage(crate::error::StorageError::new(
                format!("commit failed: {error}"),
            ))));
        }
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        // A permit is stored if the task is not waiting yet.
        self.notify.notify_one();
    }
}

impl Running {
    /// Merges an operation's writes and gives its events their ids.
    fn add(&mut self, own: Writes, drafts: Vec<EventDraft>) -> Result<Vec<Event>> {
        self.writes.extend(own);
        let mut events = Vec::with_capacity(drafts.len());
        for draft in drafts {
            self.next_event += 1;
            let event = Event {
                event_id: self.next_event,
                id: draft.job,
                queue: draft.queue,
                state: draft.state,
                attempts: draft.attempts,
                at: draft.at,
                transition: draft.transition,
            };
            self.writes.insert(
                (EVENTS, event_key(event.event_id).to_vec()),
                Some(encode_event(&event)?),
            );
            events.push(event);
        }
        if !events.is_empty() {
            self.writes.insert(
                (META, EVENT_SEQ.to_vec()),
                Some(self.next_event.to_be_bytes().to_vec()),
            );
        }
        self.events.extend(events.iter().cloned());
        Ok(events)
    }
}

impl Store {
    /// Runs `f` atomically, batched with the operations of concurrent
    /// callers, on this thread (which may lead the batch, fsync included).
    /// Under `Sync` durability it returns after the batch is flushed.
    /// `Ok(None)`: `f` gave up as stale.
    ///
    /// `f` may only read and write through the [`Tx`].
    pub(crate) fn transact<R, F>(&self, f: F) -> OpOutcome<R>
    where
        F: Fn(&Tx<'_>) -> TxResult<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        let op = Op::new(f);
        let as_pending: Arc<dyn PendingOp> = op.clone();
        let cv = Arc::new(Condvar::new());
        let mut state = self.batcher.lock();
        if state.stop {
            return Err(Error::Closed);
        }
        state
            .pending
            .push((as_pending, Wake::Thread(Arc::clone(&cv))));
        while !op.done.load(Ordering::Acquire) {
            if state.leading {
                state = cv.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state = self.lead(state);
        }
        drop(state);
        op.take_outcome()
    }

    /// [`Store::transact`] for async callers: the operation joins the next
    /// batch and the task awaits it without blocking its thread.
    pub(crate) async fn transact_async<R, F>(&self, f: F) -> OpOutcome<R>
    where
        F: Fn(&Tx<'_>) -> TxResult<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        let op = Op::new(f);
        let as_pending: Arc<dyn PendingOp> = op.clone();
        {
            let mut state = self.batcher.lock();
            if state.stop {
                return Err(Error::Closed);
            }
            state.pending.push((as_pending, Wake::Task));
            if !state.leading {
                self.batcher.committer.notify_one();
            }
        }
        while !op.done.load(Ordering::Acquire) {
            op.notify.notified().await;
        }
        op.take_outcome()
    }

    /// Leads one batch: takes every waiting operation, runs and commits
    /// them, wakes their callers and hands over to the next leader.
    fn lead<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, BatchState>,
    ) -> std::sync::MutexGuard<'a, BatchState> {
        state.leading = true;
        let batch = std::mem::take(&mut state.pending);
        drop(state);
        let ops: Vec<Arc<dyn PendingOp>> = batch.iter().map(|(op, _)| Arc::clone(op)).collect();
        self.run_batch(&ops);
        let mut state = self.batcher.lock();
        state.leading = false;
        for (_, wake) in &batch {
            if let Wake::Thread(cv) = wake {
                cv.notify_one();
            }
        }
        // The next batch needs a leader: the oldest waiting thread, or the
        // committer thread when the oldest waiter is a task.
        match state.pending.first() {
            Some((_, Wake::Thread(cv))) => cv.notify_one(),
            Some((_, Wake::Task)) => self.batcher.committer.notify_one(),
            None => {}
        }
        state
    }

    /// The committer thread's body: leads batches for async callers until
    /// [`Store::stop_committer`].
    pub(crate) fn run_committer(&self) {
        let mut state = self.batcher.lock();
        loop {
            if !state.leading && !state.pending.is_empty() {
                state = self.lead(state);
                continue;
            }
            if state.stop {
                return;
            }
            state = self
                .batcher
                .committer
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Stops the committer thread once nothing is pending; later
    /// operations fail with [`Error::Closed`].
    pub(crate) fn stop_committer(&self) {
        self.batcher.lock().stop = true;
        self.batcher.committer.notify_all();
    }

    fn run_batch(&self, batch: &[Arc<dyn PendingOp>]) {
        if self.poisoned.load(Ordering::Acquire) {
            let e = Error::Storage(crate::error::StorageError::new(
                "an earlier batch failed to commit; reopen the queue",
            ));
            for op in batch {
                op.not_durable(&e);
                op.finish();
            }
            return;
        }
        let mut running = Running {
            writes: Writes::new(),
            events: Vec::new(),
            next_event: self.event_seq.load(Ordering::Acquire),
        };
        for op in batch {
            op.run(self, &mut running);
        }
        let mut committed = Ok(());
        if !running.writes.is_empty() {
            committed = self.commit_writes(&running.writes);
            if committed.is_err() {
                // The record may be stored and replayed at the next open, or
                // the trees half-written: stop until then.
                self.poisoned.store(true, Ordering::Release);
            }
        }
        match committed {
            Ok(()) => self.publish(running.next_event, running.events),
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                for op in batch {
                    op.not_durable(&e);
                }
            }
        }
        for op in batch {
            op.finish();
        }
    }

    /// Writes a batch so that a crash leaves all of it or none of it: the
    /// write-ahead record first, then (under `Sync`) the flush, then the
    /// trees, then the record is removed. sled recovers a prefix of its log,
    /// so the trees are never ahead of the record; and since the trees are
    /// written only after the flush, readers never see a change that a crash
    /// could still take back.
    pub(crate) fn commit_writes(&self, writes: &Writes) -> Result<()> {
        let record = codec::encode_writes(
            writes
                .iter()
                .map(|((tree, key), value)| (*tree, key.as_slice(), value.as_deref())),
        )?;
        let seq = self.wal_seq.fetch_add(1, Ordering::Relaxed);
        let pieces: Vec<&[u8]> = record.chunks(WAL_CHUNK).collect();
        let parts = u32::try_from(pieces.len())
            .map_err(|_| Error::Internal("write-ahead record too large".into()))?;
        let keys: Vec<[u8; 16]> = (0..parts).map(|part| wal_key(seq, part, parts)).collect();
        for (key, piece) in keys.iter().zip(&pieces) {
            self.wal.insert(key, *piece).map_err(storage)?;
        }
        if self.sync {
            self.flush_now()?;
        }
        for ((tree, key), value) in writes {
            match value {
                Some(value) => self.tree(*tree).insert(key.as_slice(), value.as_slice()),
                None => self.tree(*tree).remove(key.as_slice()),
            }
            .map_err(storage)?;
        }
        for key in &keys {
            self.wal.remove(key).map_err(storage)?;
        }
        Ok(())
    }

    /// Finishes batches that a crash interrupted: a complete write-ahead
    /// record is applied again (its writes are absolute, so this is
    /// idempotent); an incomplete one was never applied and is dropped.
    pub(crate) fn replay_wal(&self) -> Result<()> {
        let mut records: BTreeMap<u64, (u32, Vec<(IVec, IVec)>)> = BTreeMap::new();
        for item in self.wal.iter() {
            let (key, value) = item.map_err(storage)?;
            let field = |at: usize| {
                key.get(at..at + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
            };
            let (Some(seq), Some(_part), Some(parts)) =
                (keys::u64_at(&key, 0), field(8), field(12))
            else {
                return Err(Error::Corrupt(format!("bad write-ahead key {key:?}")));
            };
            let entry = records.entry(seq).or_insert((parts, Vec::new()));
            entry.1.push((key, value));
        }
        if records.is_empty() {
            return Ok(());
        }
        for (seq, (parts, pieces)) in records {
            if pieces.len() == parts as usize {
                let mut bytes = Vec::new();
                for (_, value) in &pieces {
                    bytes.extend_from_slice(value);
                }
                let writes = codec::decode_writes(&bytes)?;
                tracing::warn!(seq, writes = writes.len(), "replaying an interrupted batch");
                for (tree, key, value) in writes {
                    match value {
                        Some(value) => self.tree(tree).insert(key, value),
                        None => self.tree(tree).remove(key),
                    }
                    .map_err(storage)?;
                }
            } else {
                tracing::warn!(seq, "dropping an incomplete write-ahead record");
            }
            for (key, _) in pieces {
                self.wal.remove(key).map_err(storage)?;
            }
        }
        self.flush_now()
    }

    /// Announces a durable batch's events: the in-memory tail and the
    /// subscribers' wake-up.
    fn publish(&self, latest: u64, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.event_seq.store(latest, Ordering::Release);
        {
            let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            for event in events {
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(event);
            }
        }
        self.latest.send_replace(latest);
    }
}

/// Events kept in memory for subscribers that keep up.
pub(crate) const TAIL: usize = 4096;

/// The recent events, oldest first.
pub(crate) type Tail = Mutex<VecDeque<Event>>;

/// Largest piece of a write-ahead record, well below sled's blob threshold.
const WAL_CHUNK: usize = 1024 * 1024;

/// Key of one piece of a write-ahead record: sequence, piece, piece count.
pub(crate) fn wal_key(seq: u64, part: u32, parts: u32) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..12].copy_from_slice(&part.to_be_bytes());
    key[12..].copy_from_slice(&parts.to_be_bytes());
    key
}
