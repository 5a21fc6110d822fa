//! The only module that names sled.
//!
//! Five trees, keyed big-endian so that the hot operations are ordered range
//! scans:
//!
//! - `jobs`: job id → record (format version byte + bincode of [`Job`]).
//! - `index`: entries derived from records, one family per prefix byte:
//!   `r` ready by (queue, priority desc, run_at, id) for leasing,
//!   `a` ready by (queue, run_at, id) for the oldest-ready age,
//!   `d` dead by (queue, id) for the dead-letter list,
//!   `i` idempotency (queue, key) → id.
//! - `timers`: (kind, at, id) → lease id or nothing, for promotion, lease
//!   expiry and retention (see [`TimerKind`]).
//! - `meta`: per-(queue, state) counts, paused flags, the format version.
//! - `wal`: the write-ahead record of the batch being applied (empty when
//!   idle).
//!
//! Every entry of `index` and `timers` and every count is a function of the
//! records ([`entries`]); a [`Change`] replaces one record by another (or
//! none) and moves exactly the entries that differ, after checking that the
//! stored bytes are still those the decision was taken from.
//! [`Store::verify`] recomputes everything from the records.
//!
//! All writes go through [`Store::transact`], one batch at a time (group
//! commit). A batch is made atomic by a write-ahead record rather than a sled
//! transaction: sled serializes transactions and forces log writes for each,
//! which capped durable throughput at a third of what this design reaches
//! (see BENCHMARKS.md). The record is one sled insert (atomic); it is
//! flushed and fdatasynced before the trees are written; a reopen replays a
//! record that a crash interrupted. sled recovers a prefix of its log, so
//! the trees are never ahead of their record.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use queue_proto::JobState;
use sled::{IVec, Tree};

use crate::{Config, Durability, Error, Job, JobId, LeaseId, Result};

/// sled log segment size. sled writes values larger than a quarter segment
/// to separate blob files that it never fsyncs; at 16 MiB every record the
/// payload limit allows stays inside the log.
const SEGMENT_SIZE: usize = 16 * 1024 * 1024;

/// Largest payload (and result) a [`Config`] may allow: a record holds both
/// plus small fields and must stay below sled's blob threshold.
pub const MAX_PAYLOAD_LIMIT: usize = 3 * 1024 * 1024 / 2;

/// Version byte in front of every record.
const RECORD_VERSION: u8 = 1;
/// Version of the tree layout, kept in `meta`.
const FORMAT_VERSION: u8 = 1;
const FORMAT_KEY: &[u8] = b"format";

const READY: u8 = b'r';
const AGE: u8 = b'a';
const DEAD: u8 = b'd';
const IDEM: u8 = b'i';
const COUNT: u8 = b'c';
const PAUSED: u8 = b'p';

/// The kinds of timer entries, the first byte of a `timers` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A scheduled job's `run_at`.
    Promote = 0,
    /// A lease's `expires_at`; the value is the lease id.
    Expire = 1,
    /// A completed job's `finished_at` (due after the completed retention).
    RetainCompleted = 2,
    /// A dead job's `finished_at`.
    RetainDead = 3,
    /// A cancelled job's `finished_at`.
    RetainCancelled = 4,
}

impl Family {
    fn tree(self) -> u8 {
        match self {
            Family::Index => INDEX,
            Family::Timers => TIMERS,
        }
    }
}

impl TimerKind {
    pub(crate) const ALL: [TimerKind; 5] = [
        TimerKind::Promote,
        TimerKind::Expire,
        TimerKind::RetainCompleted,
        TimerKind::RetainDead,
        TimerKind::RetainCancelled,
    ];
}

// ---- codec -------------------------------------------------------------

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(crate) fn encode_job(job: &Job) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    bincode::serde::encode_into_std_write(job, &mut out, bincode_config())
        .map_err(|e| Error::Corrupt(format!("cannot encode job {}: {e}", job.id)))?;
    Ok(out)
}

pub(crate) fn decode_job(bytes: &[u8]) -> Result<Job> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::Corrupt("empty job record".into()));
    };
    if version != RECORD_VERSION {
        return Err(Error::Corrupt(format!(
            "job record version {version}, this build reads {RECORD_VERSION}"
        )));
    }
    let (job, used): (Job, usize) = bincode::serde::decode_from_slice(body, bincode_config())
        .map_err(|e| Error::Corrupt(format!("undecodable job record: {e}")))?;
    if used != body.len() {
        return Err(Error::Corrupt(format!(
            "job record {} has {} trailing bytes",
            job.id,
            body.len() - used
        )));
    }
    Ok(job)
}

// ---- keys ----------------------------------------------------------------

fn job_key(id: JobId) -> [u8; 8] {
    id.as_u64().to_be_bytes()
}

fn id_at_end(key: &[u8]) -> Result<JobId> {
    key.len()
        .checked_sub(8)
        .and_then(|start| key[start..].try_into().ok())
        .map(|bytes| JobId::from_u64(u64::from_be_bytes(bytes)))
        .ok_or_else(|| Error::Corrupt(format!("short index key {key:?}")))
}

/// `family` + queue name + 0 (a byte no queue name contains).
fn queue_prefix(family: u8, queue: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(queue.len() + 40);
    key.push(family);
    key.extend_from_slice(queue.as_bytes());
    key.push(0);
    key
}

/// Higher priorities sort first.
fn priority_key(priority: i32) -> [u8; 4] {
    (!((priority as u32) ^ 0x8000_0000)).to_be_bytes()
}

fn ready_key(job: &Job) -> Vec<u8> {
    let mut key = queue_prefix(READY, &job.queue);
    key.extend_from_slice(&priority_key(job.priority));
    key.extend_from_slice(&job.run_at.to_be_bytes());
    key.extend_from_slice(&job_key(job.id));
    key
}

fn age_key(job: &Job) -> Vec<u8> {
    let mut key = queue_prefix(AGE, &job.queue);
    key.extend_from_slice(&job.run_at.to_be_bytes());
    key.extend_from_slice(&job_key(job.id));
    key
}

fn dead_key(queue: &str, id: JobId) -> Vec<u8> {
    let mut key = queue_prefix(DEAD, queue);
    key.extend_from_slice(&job_key(id));
    key
}

fn idem_key(queue: &str, idempotency_key: &str) -> Vec<u8> {
    let mut key = queue_prefix(IDEM, queue);
    key.extend_from_slice(idempotency_key.as_bytes());
    key
}

fn timer_key(kind: TimerKind, at: u64, id: JobId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = kind as u8;
    key[1..9].copy_from_slice(&at.to_be_bytes());
    key[9..].copy_from_slice(&job_key(id));
    key
}

fn state_byte(state: JobState) -> u8 {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

fn count_key(queue: &str, state: JobState) -> Vec<u8> {
    let mut key = queue_prefix(COUNT, queue);
    key.push(state_byte(state));
    key
}

fn paused_key(queue: &str) -> Vec<u8> {
    let mut key = vec![PAUSED];
    key.extend_from_slice(queue.as_bytes());
    key
}

fn decode_u64(bytes: &[u8]) -> Result<u64> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("bad counter value {bytes:?}")))
}

// ---- derived entries -------------------------------------------------------

/// Which tree an [`Entry`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Family {
    Index,
    Timers,
}

/// One index or timer entry implied by a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    family: Family,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Every index and timer entry `job` implies. This function is the single
/// definition of what the secondary trees hold.
pub(crate) fn entries(job: &Job) -> Vec<Entry> {
    let index = |key: Vec<u8>, value: Vec<u8>| Entry {
        family: Family::Index,
        key,
        value,
    };
    let timer = |kind: TimerKind, at: u64, value: Vec<u8>| Entry {
        family: Family::Timers,
        key: timer_key(kind, at, job.id).to_vec(),
        value,
    };
    let mut out = Vec::with_capacity(3);
    if let Some(key) = &job.idempotency_key {
        out.push(index(idem_key(&job.queue, key), job_key(job.id).to_vec()));
    }
    let finished = job.finished_at.unwrap_or(job.updated_at);
    match job.state {
        JobState::Ready => {
            out.push(index(ready_key(job), Vec::new()));
            out.push(index(age_key(job), Vec::new()));
        }
        JobState::Scheduled => out.push(timer(TimerKind::Promote, job.run_at, Vec::new())),
        JobState::Leased => {
            if let Some(lease) = &job.lease {
                out.push(timer(
                    TimerKind::Expire,
                    lease.expires_at,
                    lease.id.as_u64().to_be_bytes().to_vec(),
                ));
            }
        }
        JobState::Completed => out.push(timer(TimerKind::RetainCompleted, finished, Vec::new())),
        JobState::Dead => {
            out.push(index(dead_key(&job.queue, job.id), Vec::new()));
            out.push(timer(TimerKind::RetainDead, finished, Vec::new()));
        }
        JobState::Cancelled => out.push(timer(TimerKind::RetainCancelled, finished, Vec::new())),
    }
    out
}

// ---- changes -----------------------------------------------------------------

/// One record replaced by another, with everything precomputed outside the
/// batch so that operations stay pure and cheap.
pub(crate) struct Change {
    id: JobId,
    /// The stored bytes the decision was taken from; `None`: must not exist.
    expect: Option<IVec>,
    old: Option<Job>,
    new: Option<(Job, Vec<u8>)>,
    remove: Vec<Entry>,
    insert: Vec<Entry>,
}

impl Change {
    /// Replaces `old` (read as `expect`) by `new` (`None`: delete the job).
    pub(crate) fn new(expect: Option<IVec>, old: Option<Job>, new: Option<Job>) -> Result<Change> {
        let id = match (&old, &new) {
            (_, Some(job)) | (Some(job), None) => job.id,
            (None, None) => return Err(Error::Corrupt("empty change".into())),
        };
        let old_entries = old.as_ref().map(entries).unwrap_or_default();
        let new_entries = new.as_ref().map(entries).unwrap_or_default();
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
        let new = match new {
            Some(job) => {
                let bytes = encode_job(&job)?;
                Some((job, bytes))
            }
            None => None,
        };
        Ok(Change {
            id,
            expect,
            old,
            new,
            remove,
            insert,
        })
    }

    /// The record after the change, if any.
    pub(crate) fn new_job(&self) -> Option<&Job> {
        self.new.as_ref().map(|(job, _)| job)
    }

    /// The record before the change, if any.
    pub(crate) fn old_job(&self) -> Option<&Job> {
        self.old.as_ref()
    }

    /// Consumes the change, giving the new record.
    pub(crate) fn into_new_job(self) -> Option<Job> {
        self.new.map(|(job, _)| job)
    }
}

/// Why an operation gave up.
#[derive(Debug)]
pub(crate) enum Abort {
    /// A record is not what the decision was taken from: decide again.
    Stale,
    /// The operation cannot go on.
    Failed(Error),
}

/// How an operation inside a batch ends early; its writes are discarded.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The operation gave up.
    Abort(Abort),
    /// Reading the store failed.
    Storage(sled::Error),
}

impl From<sled::Error> for TxError {
    fn from(e: sled::Error) -> Self {
        TxError::Storage(e)
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, TxError>;

/// Tree ids in write sets and the write-ahead log.
const JOBS: u8 = 0;
const INDEX: u8 = 1;
const TIMERS: u8 = 2;
const META: u8 = 3;

/// Writes of a batch: (tree, key) → new value, `None` for a removal.
type Writes = BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// One operation's view of the store: its own writes over the writes of the
/// earlier operations of its batch over the trees. An operation that fails
/// leaves nothing behind; one that succeeds has its writes merged into the
/// batch, which is committed as a whole (see [`Store::transact`]).
pub(crate) struct Tx<'a> {
    store: &'a Store,
    batch: &'a Writes,
    own: RefCell<Writes>,
    deltas: RefCell<BTreeMap<Vec<u8>, i64>>,
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

    /// Whether the stored record is still what `change` was decided from.
    pub(crate) fn is_current(&self, change: &Change) -> TxResult<bool> {
        let stored = self.get(JOBS, &job_key(change.id))?;
        Ok(stored == change.expect)
    }

    /// Applies `change` if it is current, else gives up with [`Abort::Stale`].
    pub(crate) fn apply_or_abort(&self, change: &Change) -> TxResult<()> {
        if !self.is_current(change)? {
            return Err(TxError::Abort(Abort::Stale));
        }
        self.apply(change);
        Ok(())
    }

    /// Applies `change` (the caller has checked it is current).
    pub(crate) fn apply(&self, change: &Change) {
        let key = job_key(change.id);
        self.put(
            JOBS,
            &key,
            change.new.as_ref().map(|(_, bytes)| bytes.as_slice()),
        );
        for entry in &change.remove {
            self.put(entry.family.tree(), &entry.key, None);
        }
        for entry in &change.insert {
            self.put(entry.family.tree(), &entry.key, Some(&entry.value));
        }
        let old = change.old.as_ref().map(|j| (j.queue.as_str(), j.state));
        let new = change
            .new
            .as_ref()
            .map(|(j, _)| (j.queue.as_str(), j.state));
        if old != new {
            let mut deltas = self.deltas.borrow_mut();
            if let Some((queue, state)) = old {
                *deltas.entry(count_key(queue, state)).or_default() -= 1;
            }
            if let Some((queue, state)) = new {
                *deltas.entry(count_key(queue, state)).or_default() += 1;
            }
        }
    }

    /// The stored record of `id` with its bytes, as seen by this operation.
    pub(crate) fn load(&self, id: JobId) -> TxResult<Option<(IVec, Job)>> {
        match self.get(JOBS, &job_key(id))? {
            Some(bytes) => match decode_job(&bytes) {
                Ok(job) => Ok(Some((bytes, job))),
                Err(e) => Err(TxError::Abort(Abort::Failed(e))),
            },
            None => Ok(None),
        }
    }

    /// The job an idempotency key points at, as seen by this operation
    /// (including keys written earlier in its batch).
    pub(crate) fn idempotent(&self, queue: &str, key: &str) -> TxResult<Option<JobId>> {
        match self.get(INDEX, &idem_key(queue, key))? {
            Some(value) => match <[u8; 8]>::try_from(value.as_ref()) {
                Ok(bytes) => Ok(Some(JobId::from_u64(u64::from_be_bytes(bytes)))),
                Err(_) => Err(TxError::Abort(Abort::Failed(Error::Corrupt(format!(
                    "bad idempotency entry in queue {queue}"
                ))))),
            },
            None => Ok(None),
        }
    }

    /// The ready jobs of `queue` in lease order, as this operation sees
    /// them: the stored index without the entries that earlier operations of
    /// the batch (or this one) removed. The trees do not change during a
    /// batch, so the scan is stable. Jobs that became ready earlier in the
    /// same batch are not listed; the next batch sees them.
    pub(crate) fn ready_jobs<'s>(
        &'s self,
        queue: &str,
    ) -> impl Iterator<Item = TxResult<JobId>> + 's {
        self.store
            .index
            .scan_prefix(queue_prefix(READY, queue))
            .keys()
            .filter_map(move |key| match key {
                Err(e) => Some(Err(TxError::Storage(e))),
                Ok(key) => {
                    let k = (INDEX, key.to_vec());
                    let removed = matches!(self.own.borrow().get(&k), Some(None))
                        || matches!(self.batch.get(&k), Some(None));
                    (!removed)
                        .then(|| id_at_end(&key).map_err(|e| TxError::Abort(Abort::Failed(e))))
                }
            })
    }

    /// A fresh id from sled's monotonic generator (never reused).
    pub(crate) fn generate_id(&self) -> TxResult<u64> {
        Ok(self.store.db.generate_id()?)
    }

    /// Whether `queue` is paused, as seen by this operation.
    pub(crate) fn paused(&self, queue: &str) -> TxResult<bool> {
        Ok(self.get(META, &paused_key(queue))?.is_some())
    }

    /// Sets or clears the paused flag of `queue`.
    pub(crate) fn set_paused(&self, queue: &str, paused: bool) -> TxResult<()> {
        self.put(META, &paused_key(queue), paused.then_some(&[][..]));
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
                Some(bytes) => decode_u64(&bytes).map_err(|e| TxError::Abort(Abort::Failed(e)))?,
                None => 0,
            };
            let next = current.saturating_add_signed(delta);
            let value = next.to_be_bytes();
            self.put(META, &key, (next != 0).then_some(&value[..]));
        }
        Ok(())
    }
}

/// Opens sled, waiting up to five seconds for its file lock: sled 0.34
/// releases the lock from a background thread some time after the last
/// handle is dropped (spacejam/sled#1234), so a reopen in the same process
/// may find it still held. A directory held by another process still fails,
/// after that wait.
fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

// ---- batching ----------------------------------------------------------------

#[derive(Default)]
struct Batcher {
    state: Mutex<BatchState>,
    /// Wakes the committer thread, which leads when no thread caller does.
    committer: Condvar,
}

/// How a waiting caller is woken (one each, so that a handover wakes only
/// the callers concerned).
enum Wake {
    /// A thread sleeping on its own condition variable; it may lead.
    Thread(Arc<Condvar>),
    /// An async task awaiting the operation's `Notify`; it never leads (it
    /// must not block its runtime), the committer thread does.
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

    fn wait<'a>(
        cv: &Condvar,
        guard: std::sync::MutexGuard<'a, BatchState>,
    ) -> std::sync::MutexGuard<'a, BatchState> {
        cv.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

/// One caller's operation waiting in a batch.
trait PendingOp: Send + Sync {
    /// Runs the operation over the batch's writes and records its outcome;
    /// on success its writes join the batch, on failure they are dropped.
    fn run(&self, store: &Store, batch: &mut Writes);
    /// Turns a successful outcome into an error: the batch could not be
    /// made durable, so the change is not acknowledged.
    fn not_durable(&self, error: &Error);
    /// Marks the outcome final and wakes an async waiter.
    fn finish(&self);
}

struct Op<F, R> {
    f: F,
    notify: tokio::sync::Notify,
    outcome: Mutex<Option<Result<Option<R>>>>,
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

    fn take_outcome(&self) -> Result<Option<R>> {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        outcome.unwrap_or_else(|| Err(Error::Corrupt("operation produced no outcome".into())))
    }

    fn record(&self, outcome: Result<Option<R>>) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }
}

impl<F, R> PendingOp for Op<F, R>
where
    F: Fn(&Tx<'_>) -> TxResult<R> + Send + Sync,
    R: Send,
{
    fn run(&self, store: &Store, batch: &mut Writes) {
        let (outcome, own) = {
            let tx = Tx {
                store,
                batch,
                own: RefCell::new(Writes::new()),
                deltas: RefCell::new(BTreeMap::new()),
            };
            let outcome = (self.f)(&tx).and_then(|value| tx.write_counts().map(|()| value));
            (outcome, tx.own.into_inner())
        };
        match outcome {
            Ok(value) => {
                batch.extend(own);
                self.record(Ok(Some(value)));
            }
            Err(TxError::Abort(Abort::Stale)) => self.record(Ok(None)),
            Err(TxError::Abort(Abort::Failed(e))) => self.record(Err(e)),
            Err(TxError::Storage(e)) => self.record(Err(Error::Storage(e))),
        }
    }

    fn not_durable(&self, error: &Error) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*outcome, Some(Ok(Some(_)))) {
            *outcome = Some(Err(Error::Storage(sled::Error::Io(std::io::Error::other(
                format!("commit failed: {error}"),
            )))));
        }
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        // A permit is stored if the task is not waiting yet.
        self.notify.notify_one();
    }
}

/// Largest piece of a write-ahead record, well below sled's blob threshold.
const WAL_CHUNK: usize = 1024 * 1024;

/// One write of a write-ahead record: tree, key, new value (`None`: remove).
type WalWrite = (u8, Vec<u8>, Option<Vec<u8>>);
type WalWriteRef<'a> = (u8, &'a [u8], Option<&'a [u8]>);
/// The pieces of one stored write-ahead record: (piece, key, bytes).
type WalPieces = Vec<(u32, IVec, IVec)>;

/// The write-ahead log codec: a batch's writes as (tree, key, value) triples.
fn encode_writes(writes: &Writes) -> Result<Vec<u8>> {
    let list: Vec<WalWriteRef<'_>> = writes
        .iter()
        .map(|((tree, key), value)| (*tree, key.as_slice(), value.as_deref()))
        .collect();
    let mut out = vec![RECORD_VERSION];
    bincode::serde::encode_into_std_write(&list, &mut out, bincode_config())
        .map_err(|e| Error::Corrupt(format!("cannot encode a write-ahead record: {e}")))?;
    Ok(out)
}

fn decode_writes(bytes: &[u8]) -> Result<Vec<WalWrite>> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::Corrupt("empty write-ahead record".into()));
    };
    if version != RECORD_VERSION {
        return Err(Error::Corrupt(format!(
            "write-ahead record version {version}"
        )));
    }
    let (list, used): (Vec<WalWrite>, usize) =
        bincode::serde::decode_from_slice(body, bincode_config())
            .map_err(|e| Error::Corrupt(format!("undecodable write-ahead record: {e}")))?;
    if used != body.len() {
        return Err(Error::Corrupt(
            "trailing bytes in a write-ahead record".into(),
        ));
    }
    Ok(list)
}

/// Key of one piece of a write-ahead record: sequence, piece, piece count.
fn wal_key(seq: u64, part: u32, parts: u32) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..12].copy_from_slice(&part.to_be_bytes());
    key[12..].copy_from_slice(&parts.to_be_bytes());
    key
}

// ---- the store ----------------------------------------------------------------

/// The sled database and its trees.
pub(crate) struct Store {
    db: sled::Db,
    /// Write-ahead records of batches being applied (empty when idle).
    wal: Tree,
    wal_seq: AtomicU64,
    /// Set when a batch could not be applied: the trees may be half-written
    /// until a reopen replays the write-ahead log, so nothing else is done.
    poisoned: AtomicBool,
    /// sled's log file, for the fsync that sled's own flush leaves out.
    log: File,
    /// Whether a batch is flushed before its callers return.
    sync: bool,
    batcher: Batcher,
    jobs: Tree,
    index: Tree,
    timers: Tree,
    meta: Tree,
}

/// Counts of one queue, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts(pub(crate) [u64; 6]);

impl Counts {
    pub(crate) fn get(&self, state: JobState) -> u64 {
        self.0[usize::from(state_byte(state))]
    }
}

impl Store {
    pub(crate) fn open(config: &Config) -> Result<Store> {
        let flush_every_ms = match config.durability {
            // Flushes are explicit; sled's own periodic flush stays on as a
            // backstop for the rare write that no caller waits for.
            Durability::Sync => Some(1000),
            Durability::Periodic(ms) => Some(ms.max(1)),
        };
        let sled_config = sled::Config::new()
            .path(&config.path)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(flush_every_ms);
        let db = open_waiting_for_lock(&sled_config)?;
        match db.get(FORMAT_KEY)? {
            None => {
                db.insert(FORMAT_KEY, &[FORMAT_VERSION])?;
                db.flush()?;
            }
            Some(v) if v.as_ref() == [FORMAT_VERSION] => {}
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "data directory has format {v:?}, this build reads {FORMAT_VERSION}"
                )));
            }
        }
        // sled's flush writes its buffers with sync_file_range, which neither
        // flushes the device cache nor the file size: an fdatasync of the log
        // after it is what makes a flush survive a machine crash. The
        // directory is synced once so the files themselves are durable.
        let log = File::open(config.path.join("db")).map_err(sled::Error::Io)?;
        File::open(&config.path)
            .and_then(|dir| dir.sync_all())
            .map_err(sled::Error::Io)?;
        let wal = db.open_tree("wal")?;
        let store = Store {
            wal,
            wal_seq: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            log,
            sync: config.durability == Durability::Sync,
            batcher: Batcher::default(),
            jobs: db.open_tree("jobs")?,
            index: db.open_tree("index")?,
            timers: db.open_tree("timers")?,
            meta: db.open_tree("meta")?,
            db,
        };
        store.replay_wal()?;
        Ok(store)
    }

    fn tree(&self, id: u8) -> &Tree {
        match id {
            JOBS => &self.jobs,
            INDEX => &self.index,
            TIMERS => &self.timers,
            _ => &self.meta,
        }
    }

    /// Finishes batches that a crash interrupted: a complete write-ahead
    /// record is applied again (its writes are absolute, so this is
    /// idempotent); an incomplete one was never applied and is dropped.
    fn replay_wal(&self) -> Result<()> {
        let mut records: BTreeMap<u64, (u32, WalPieces)> = BTreeMap::new();
        for item in self.wal.iter() {
            let (key, value) = item?;
            let field = |range: std::ops::Range<usize>| {
                key.get(range)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
            };
            let seq = key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let (Some(seq), Some(part), Some(parts)) = (seq, field(8..12), field(12..16)) else {
                return Err(Error::Corrupt(format!("bad write-ahead key {key:?}")));
            };
            let entry = records.entry(seq).or_insert((parts, Vec::new()));
            entry.1.push((part, key, value));
        }
        if records.is_empty() {
            return Ok(());
        }
        for (seq, (parts, pieces)) in records {
            if pieces.len() == parts as usize {
                let mut bytes = Vec::new();
                for (_, _, value) in &pieces {
                    bytes.extend_from_slice(value);
                }
                let writes = decode_writes(&bytes)?;
                tracing::warn!(seq, writes = writes.len(), "replaying an interrupted batch");
                for (tree, key, value) in writes {
                    match value {
                        Some(value) => self.tree(tree).insert(key, value)?,
                        None => self.tree(tree).remove(key)?,
                    };
                }
            } else {
                tracing::warn!(seq, "dropping an incomplete write-ahead record");
            }
            for (_, key, _) in pieces {
                self.wal.remove(key)?;
            }
        }
        self.flush()
    }

    /// Writes a batch so that a crash leaves all of it or none of it: the
    /// write-ahead record first, then (under `Sync`) the flush, then the
    /// trees, then the record is removed. sled recovers a prefix of its log,
    /// so the trees are never ahead of the record; and since the trees are
    /// written only after the flush, readers never see a change that a crash
    /// could still take back.
    fn commit_writes(&self, writes: &Writes) -> Result<()> {
        let record = encode_writes(writes)?;
        let seq = self.wal_seq.fetch_add(1, Ordering::Relaxed);
        let pieces: Vec<&[u8]> = record.chunks(WAL_CHUNK).collect();
        let parts = u32::try_from(pieces.len())
            .map_err(|_| Error::Corrupt("write-ahead record too large".into()))?;
        let keys: Vec<[u8; 16]> = (0..parts).map(|part| wal_key(seq, part, parts)).collect();
        for (key, piece) in keys.iter().zip(&pieces) {
            self.wal.insert(key, *piece)?;
        }
        if self.sync {
            self.flush()?;
        }
        for ((tree, key), value) in writes {
            match value {
                Some(value) => self.tree(*tree).insert(key.as_slice(), value.as_slice())?,
                None => self.tree(*tree).remove(key.as_slice())?,
            };
        }
        for key in &keys {
            self.wal.remove(key)?;
        }
        Ok(())
    }

    pub(crate) fn generate_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Makes everything written so far durable: sled's flush writes its
    /// buffers, the fdatasync pushes them (and the file size) through the
    /// device cache.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.log.sync_data().map_err(sled::Error::Io)?;
        Ok(())
    }

    /// Runs `f` atomically, batched with the operations of concurrent
    /// callers, and under `Sync` durability flushes (fdatasync) before
    /// returning: group commit.
    ///
    /// All writes go through here, one batch at a time. The first caller
    /// leads: it takes every waiting operation, runs them in order (each sees
    /// the writes of those before it; one that fails leaves nothing), commits
    /// the batch through the write-ahead log, flushes, and hands over;
    /// whatever arrived meanwhile forms the next batch. `Ok(None)` means `f`
    /// gave up with [`Abort::Stale`]: decide again.
    ///
    /// `f` may only read and write through the [`Tx`].
    pub(crate) fn transact<R, F>(&self, f: F) -> Result<Option<R>>
    where
        F: Fn(&Tx<'_>) -> TxResult<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        let op = Op::new(f);
        let as_pending: Arc<dyn PendingOp> = op.clone();
        let cv = Arc::new(Condvar::new());
        let batcher = &self.batcher;
        let mut state = batcher.lock();
        state
            .pending
            .push((as_pending, Wake::Thread(Arc::clone(&cv))));
        while !op.done.load(Ordering::Acquire) {
            if state.leading {
                state = Batcher::wait(&cv, state);
                continue;
            }
            state = self.lead(state);
        }
        drop(state);
        op.take_outcome()
    }

    /// [`Store::transact`] for async callers: the operation joins the next
    /// batch and the task awaits it without blocking its runtime.
    pub(crate) async fn transact_async<R, F>(&self, f: F) -> Result<Option<R>>
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

    /// Stops the committer thread once nothing is pending.
    pub(crate) fn stop_committer(&self) {
        self.batcher.lock().stop = true;
        self.batcher.committer.notify_all();
    }

    fn run_batch(&self, batch: &[Arc<dyn PendingOp>]) {
        let mut writes = Writes::new();
        if self.poisoned.load(Ordering::Acquire) {
            let e = Error::Storage(sled::Error::Io(std::io::Error::other(
                "an earlier batch failed to commit; reopen the queue",
            )));
            for op in batch {
                op.not_durable(&e);
                op.finish();
            }
            return;
        }
        for op in batch {
            op.run(self, &mut writes);
        }
        let mut committed = Ok(());
        if !writes.is_empty() {
            committed = self.commit_writes(&writes);
            if committed.is_err() {
                // The record may be stored and replayed at the next open, or
                // the trees half-written: stop until then.
                self.poisoned.store(true, Ordering::Release);
            }
        }
        if let Err(e) = committed {
            tracing::error!(error = %e, "commit failed");
            for op in batch {
                op.not_durable(&e);
            }
        }
        for op in batch {
            op.finish();
        }
    }

    /// The record of `id` with the bytes it was decoded from.
    pub(crate) fn load(&self, id: JobId) -> Result<Option<(IVec, Job)>> {
        match self.jobs.get(job_key(id))? {
            Some(bytes) => {
                let job = decode_job(&bytes)?;
                Ok(Some((bytes, job)))
            }
            None => Ok(None),
        }
    }

    /// `run_at` of the oldest ready job of `queue`.
    pub(crate) fn oldest_ready(&self, queue: &str) -> Result<Option<u64>> {
        let prefix = queue_prefix(AGE, queue);
        match self.index.scan_prefix(&prefix).keys().next() {
            Some(key) => {
                let key = key?;
                let at = key
                    .get(prefix.len()..prefix.len() + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| Error::Corrupt("short age key".into()))?;
                Ok(Some(at))
            }
            None => Ok(None),
        }
    }

    /// Dead job ids of `queue` after `after` (exclusive), oldest first.
    pub(crate) fn dead_ids(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>> {
        let prefix = queue_prefix(DEAD, queue);
        let start = match after {
            Some(id) => {
                let mut key = dead_key(queue, id);
                key.push(0);
                key
            }
            None => prefix.clone(),
        };
        self.index
            .range(start..)
            .keys()
            .take_while(|key| key.as_ref().map_or(true, |k| k.starts_with(&prefix)))
            .take(limit)
            .map(|key| id_at_end(&key?))
            .collect()
    }

    /// Timer entries of `kind` whose time is `<= upto`, earliest first.
    pub(crate) fn due(
        &self,
        kind: TimerKind,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(JobId, Option<LeaseId>)>> {
        let start = timer_key(kind, 0, JobId::from_u64(0));
        let end = timer_key(kind, upto, JobId::from_u64(u64::MAX));
        self.timers
            .range(start..=end)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let lease = <[u8; 8]>::try_from(value.as_ref())
                    .ok()
                    .map(|b| LeaseId::from_u64(u64::from_be_bytes(b)));
                Ok((id_at_end(&key)?, lease))
            })
            .collect()
    }

    /// The earliest time of any timer entry of `kind`.
    pub(crate) fn first_timer(&self, kind: TimerKind) -> Result<Option<u64>> {
        let start = timer_key(kind, 0, JobId::from_u64(0));
        let end = timer_key(kind, u64::MAX, JobId::from_u64(u64::MAX));
        match self.timers.range(start..=end).keys().next() {
            Some(key) => {
                let key = key?;
                Ok(key
                    .get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn counts(&self, queue: &str) -> Result<Counts> {
        let mut counts = Counts::default();
        let prefix = queue_prefix(COUNT, queue);
        for item in self.meta.scan_prefix(&prefix) {
            let (key, value) = item?;
            if let Some(&state) = key.get(prefix.len()) {
                if let Some(slot) = counts.0.get_mut(usize::from(state)) {
                    *slot = decode_u64(&value)?;
                }
            }
        }
        Ok(counts)
    }

    pub(crate) fn is_paused(&self, queue: &str) -> Result<bool> {
        Ok(self.meta.get(paused_key(queue))?.is_some())
    }

    /// Every queue that has jobs or is paused, by name.
    pub(crate) fn queue_names(&self) -> Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        for key in self.meta.scan_prefix([COUNT]).keys() {
            let key = key?;
            if let Some(end) = key.iter().position(|b| *b == 0) {
                names.insert(String::from_utf8_lossy(&key[1..end]).into_owned());
            }
        }
        for key in self.meta.scan_prefix([PAUSED]).keys() {
            let key = key?;
            names.insert(String::from_utf8_lossy(&key[1..]).into_owned());
        }
        Ok(names.into_iter().collect())
    }

    /// Recomputes every index entry, timer entry and count from the records
    /// and compares them with what is stored.
    pub(crate) fn verify(&self) -> Result<Verification> {
        let mut problems = Vec::new();
        let mut expected_index = 0usize;
        let mut expected_timers = 0usize;
        let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut by_state = [0u64; 6];
        for item in self.jobs.iter() {
            let (key, bytes) = item?;
            let job = match decode_job(&bytes) {
                Ok(job) => job,
                Err(e) => {
                    problems.push(format!("record {key:?}: {e}"));
                    continue;
                }
            };
            if key.as_ref() != job_key(job.id) {
                problems.push(format!("record under key {key:?} has id {}", job.id));
            }
            problems.extend(invariant_problems(&job));
            by_state[usize::from(state_byte(job.state))] += 1;
            *counts.entry(count_key(&job.queue, job.state)).or_default() += 1;
            for entry in entries(&job) {
                let tree = match entry.family {
                    Family::Index => {
                        expected_index += 1;
                        &self.index
                    }
                    Family::Timers => {
                        expected_timers += 1;
                        &self.timers
                    }
                };
                match tree.get(&entry.key)? {
                    Some(v) if v.as_ref() == entry.value.as_slice() => {}
                    Some(_) => problems.push(format!(
                        "{:?} entry of job {} has a wrong value",
                        entry.family, job.id
                    )),
                    None => problems.push(format!(
                        "{:?} entry of job {} ({:?}) is missing",
                        entry.family, job.id, job.state
                    )),
                }
            }
        }
        let index_len = self.index.len();
        if index_len != expected_index {
            problems.push(format!(
                "index holds {index_len} entries, the records imply {expected_index}"
            ));
        }
        let timers_len = self.timers.len();
        if timers_len != expected_timers {
            problems.push(format!(
                "timers hold {timers_len} entries, the records imply {expected_timers}"
            ));
        }
        let mut stored_counts = BTreeMap::new();
        for item in self.meta.scan_prefix([COUNT]) {
            let (key, value) = item?;
            stored_counts.insert(key.to_vec(), decode_u64(&value)?);
        }
        if stored_counts != counts {
            problems.push(format!(
                "stored counts {stored_counts:?} differ from the records' {counts:?}"
            ));
        }
        Ok(Verification {
            jobs: by_state.iter().sum(),
            by_state,
            problems,
        })
    }
}

fn invariant_problems(job: &Job) -> Vec<String> {
    let mut problems = Vec::new();
    if job.lease.is_some() != (job.state == JobState::Leased) {
        problems.push(format!(
            "job {} is {} with lease {:?}",
            job.id, job.state, job.lease
        ));
    }
    if job.finished_at.is_some() != job.state.is_terminal() {
        problems.push(format!(
            "job {} is {} with finished_at {:?}",
            job.id, job.state, job.finished_at
        ));
    }
    if job.attempts > job.max_attempts {
        problems.push(format!(
            "job {} has {} attempts of {}",
            job.id, job.attempts, job.max_attempts
        ));
    }
    problems
}

/// What [`Queue::verify`](crate::Queue::verify) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Job records stored.
    pub jobs: u64,
    /// Records per state, in the order of [`JobState::ALL`].
    pub by_state: [u64; 6],
    /// Every disagreement found; empty when the store is consistent.
    pub problems: Vec<String>,
}

impl Verification {
    /// `true` when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        self.by_state[usize::from(state_byte(state))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{leased_job, ready_job};

    fn writes_of(job: &Job) -> Writes {
        let mut writes = Writes::new();
        writes.insert(
            (JOBS, job_key(job.id).to_vec()),
            Some(encode_job(job).unwrap()),
        );
        for entry in entries(job) {
            writes.insert((entry.family.tree(), entry.key), Some(entry.value));
        }
        writes.insert(
            (META, count_key(&job.queue, job.state)),
            Some(1u64.to_be_bytes().to_vec()),
        );
        writes
    }

    #[test]
    fn reopening_replays_a_complete_write_ahead_record_and_drops_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path());
        let job = ready_job();
        let mut torn = leased_job(9);
        torn.id = JobId::from_u64(99);
        {
            let store = Store::open(&config).unwrap();
            // As if the process died after writing the records but before
            // applying them: one complete record, one missing its last piece.
            let complete = encode_writes(&writes_of(&job)).unwrap();
            store.wal.insert(wal_key(1, 0, 1), complete).unwrap();
            let partial = encode_writes(&writes_of(&torn)).unwrap();
            store.wal.insert(wal_key(2, 0, 2), partial).unwrap();
            store.flush().unwrap();
            assert!(store.load(job.id).unwrap().is_none());
        }
        let store = Store::open(&config).unwrap();
        assert_eq!(
            store.load(job.id).unwrap().map(|(_, j)| j),
            Some(job.clone())
        );
        assert!(store.load(torn.id).unwrap().is_none());
        assert_eq!(store.wal.len(), 0);
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.jobs, 1);
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        let job = leased_job(3);
        let bytes = encode_job(&job).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode_job(&bytes).unwrap(), job);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode_job(&trailing), Err(Error::Corrupt(_))));
        let mut version = bytes.clone();
        version[0] = 9;
        assert!(matches!(decode_job(&version), Err(Error::Corrupt(_))));
        assert!(matches!(
            decode_job(&bytes[..bytes.len() - 1]),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(decode_job(&[]), Err(Error::Corrupt(_))));
    }

    #[test]
    fn priority_keys_sort_high_first() {
        let order = [i32::MAX, 10, 1, 0, -1, -10, i32::MIN];
        let keys: Vec<_> = order.iter().map(|p| priority_key(*p)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn entries_follow_the_state() {
        let ready = ready_job();
        assert_eq!(entries(&ready).len(), 2);
        let leased = leased_job(1);
        let e = entries(&leased);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].family, Family::Timers);
        assert_eq!(e[0].value, 1u64.to_be_bytes().to_vec());
        let mut keyed = ready_job();
        keyed.idempotency_key = Some("k".into());
        assert_eq!(entries(&keyed).len(), 3);
    }
}
