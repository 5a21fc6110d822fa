//! The only module that names sled.
//!
//! Four trees, keyed big-endian so that the hot operations are ordered range
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
//!
//! Every entry of `index` and `timers` and every count is a function of the
//! records ([`entries`]); a [`Change`] replaces one record by another (or
//! none) and moves exactly the entries that differ, inside one transaction
//! that also checks the stored bytes are still those the decision was taken
//! from. [`Store::verify`] recomputes everything from the records.

use std::cell::RefCell;
use std::collections::BTreeMap;

use queue_proto::JobState;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::{IVec, Transactional, Tree};

use crate::{Config, Durability, Error, Job, JobId, LeaseId, Result};

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
/// transaction so that the closure stays pure and cheap.
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

/// Why a transaction gave up.
#[derive(Debug)]
pub(crate) enum Abort {
    /// A record is not what the decision was taken from: decide again.
    Stale,
    /// The operation cannot go on; nothing is written.
    Failed(Error),
}

/// The transactional view handed to operation closures.
pub(crate) struct Tx<'a> {
    jobs: &'a TransactionalTree,
    index: &'a TransactionalTree,
    timers: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    deltas: RefCell<BTreeMap<Vec<u8>, i64>>,
}

type TxResult<T> = ConflictableTransactionResult<T, Abort>;

impl Tx<'_> {
    /// Whether the stored record is still what `change` was decided from.
    pub(crate) fn is_current(&self, change: &Change) -> TxResult<bool> {
        let stored = self.jobs.get(job_key(change.id))?;
        Ok(stored == change.expect)
    }

    /// Applies `change` if it is current, else aborts the whole transaction.
    pub(crate) fn apply_or_abort(&self, change: &Change) -> TxResult<()> {
        if !self.is_current(change)? {
            return Err(ConflictableTransactionError::Abort(Abort::Stale));
        }
        self.apply(change)
    }

    /// Applies `change` (the caller has checked it is current).
    pub(crate) fn apply(&self, change: &Change) -> TxResult<()> {
        let key = job_key(change.id);
        match &change.new {
            Some((_, bytes)) => {
                self.jobs.insert(&key, bytes.as_slice())?;
            }
            None => {
                self.jobs.remove(&key)?;
            }
        }
        for entry in &change.remove {
            self.tree(entry.family).remove(entry.key.as_slice())?;
        }
        for entry in &change.insert {
            self.tree(entry.family)
                .insert(entry.key.as_slice(), entry.value.as_slice())?;
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
        Ok(())
    }

    /// The stored record of `id` with its bytes, as seen by this transaction.
    pub(crate) fn load(&self, id: JobId) -> TxResult<Option<(IVec, Job)>> {
        match self.jobs.get(job_key(id))? {
            Some(bytes) => match decode_job(&bytes) {
                Ok(job) => Ok(Some((bytes, job))),
                Err(e) => Err(ConflictableTransactionError::Abort(Abort::Failed(e))),
            },
            None => Ok(None),
        }
    }

    /// The job an idempotency key points at, as seen by this transaction
    /// (including keys inserted earlier in it).
    pub(crate) fn idempotent(&self, queue: &str, key: &str) -> TxResult<Option<JobId>> {
        match self.index.get(idem_key(queue, key))? {
            Some(value) => match <[u8; 8]>::try_from(value.as_ref()) {
                Ok(bytes) => Ok(Some(JobId::from_u64(u64::from_be_bytes(bytes)))),
                Err(_) => Err(ConflictableTransactionError::Storage(
                    sled::Error::Unsupported("bad idempotency entry".into()),
                )),
            },
            None => Ok(None),
        }
    }

    /// Whether `queue` is paused, as seen by this transaction.
    pub(crate) fn paused(&self, queue: &str) -> TxResult<bool> {
        Ok(self.meta.get(paused_key(queue))?.is_some())
    }

    /// Sets or clears the paused flag of `queue`.
    pub(crate) fn set_paused(&self, queue: &str, paused: bool) -> TxResult<()> {
        if paused {
            self.meta.insert(paused_key(queue), &[])?;
        } else {
            self.meta.remove(paused_key(queue))?;
        }
        Ok(())
    }

    fn tree(&self, family: Family) -> &TransactionalTree {
        match family {
            Family::Index => self.index,
            Family::Timers => self.timers,
        }
    }

    /// Writes the accumulated count changes; zero counts are removed so that
    /// a queue whose jobs are all gone stops being listed.
    fn write_counts(&self) -> TxResult<()> {
        for (key, delta) in self.deltas.borrow().iter() {
            if *delta == 0 {
                continue;
            }
            let current = match self.meta.get(key)? {
                Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0),
                None => 0,
            };
            let next = current.saturating_add_signed(*delta);
            if next == 0 {
                self.meta.remove(key.as_slice())?;
            } else {
                self.meta.insert(key.as_slice(), &next.to_be_bytes())?;
            }
        }
        Ok(())
    }
}

// ---- the store ----------------------------------------------------------------

/// The sled database and its trees.
pub(crate) struct Store {
    db: sled::Db,
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
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(flush_every_ms)
            .open()?;
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
        Ok(Store {
            jobs: db.open_tree("jobs")?,
            index: db.open_tree("index")?,
            timers: db.open_tree("timers")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    pub(crate) fn generate_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Runs `f` as one transaction over all trees. `Ok(None)` means `f`
    /// aborted because a record changed under it: decide again.
    pub(crate) fn transact<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<Option<R>> {
        let outcome = (&self.jobs, &self.index, &self.timers, &self.meta).transaction(
            |(jobs, index, timers, meta)| {
                let tx = Tx {
                    jobs,
                    index,
                    timers,
                    meta,
                    deltas: RefCell::new(BTreeMap::new()),
                };
                let value = f(&tx)?;
                tx.write_counts()?;
                Ok(value)
            },
        );
        match outcome {
            Ok(value) => Ok(Some(value)),
            Err(TransactionError::Abort(Abort::Stale)) => Ok(None),
            Err(TransactionError::Abort(Abort::Failed(e))) => Err(e),
            Err(TransactionError::Storage(e)) => Err(Error::Storage(e)),
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

    /// The first `limit` ready jobs of `queue` in lease order.
    pub(crate) fn ready_ids(&self, queue: &str, limit: usize) -> Result<Vec<JobId>> {
        self.index
            .scan_prefix(queue_prefix(READY, queue))
            .keys()
            .take(limit)
            .map(|key| id_at_end(&key?))
            .collect()
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
