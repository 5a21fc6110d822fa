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
//! reaches (see BENCHMARKS.md). Under `Durability::Sync` the record is one
//! frame of the journal, a file of its own (see [`journal`]), written in
//! place and fdatasynced before the trees are written; sled is flushed
//! only when the journal is cut. Under `Durability::Periodic` it is one
//! sled insert (into the batch's slot, or in pieces of a MiB for large
//! batches) before the trees are written, flushed with them. A reopen
//! replays the records (frames and slots) after the checkpoint. sled
//! recovers a prefix of its log, so the trees are never ahead of their
//! record.
//!
//! The event log rides on the same records: a batch's events are in its
//! slot, and every so often a batch gathers them into one chunk of the
//! `events` tree (see [`codec`] for why this costs less than a write per
//! batch).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sled::IVec;

use super::codec::{self, decode_job, job_revision};
use super::keys::{
    self, EVENTS, INDEX, JOBS, META, ORDER_LEN, count_key, decode_u64, event_key, group_head_key,
    group_leased_key, group_prefix, id_at_end, idem_key, job_key, queue_prefix, ready_key_of,
    settings_key,
};
use super::{Store, journal, storage};
use queue_proto::{HISTORY_MINUTE_MS, JobState};

use crate::backend::{Change, Expect, Revision, ScheduleChange};
use crate::rules::history::{self, Depths, Rollup, Sample};
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
    /// The job's group (it never changes).
    group: Option<String>,
    /// The new record's bytes (`None`: delete).
    bytes: Option<Vec<u8>>,
    remove: Vec<keys::Entry>,
    insert: Vec<keys::Entry>,
    /// The change's events, encoded (their ids are given at commit).
    events: Vec<u8>,
    event_count: u64,
    /// What the change adds to its queue's history.
    history: Option<Sample>,
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
        let mut events = Vec::new();
        let mut event_count = 0;
        for event in change.outcome.events() {
            codec::encode_item(event, &mut events)?;
            event_count += 1;
        }
        Ok(Prepared {
            id: change.id,
            expect: change.expect,
            claims,
            old: change.old.as_ref().map(place),
            new: change.new_job().map(place),
            group: change
                .new_job()
                .or(change.old.as_ref())
                .and_then(|job| job.group.clone()),
            bytes,
            remove,
            insert,
            events,
            event_count,
            history: history::sample(change.old.as_ref(), &change.outcome),
        })
    }
}

/// A schedule change with its bytes and due entries computed beforehand.
pub(crate) struct PreparedSchedule {
    key: Vec<u8>,
    expect: Expect,
    bytes: Option<Vec<u8>>,
    remove_due: Option<Vec<u8>>,
    insert_due: Option<Vec<u8>>,
}

impl PreparedSchedule {
    pub(crate) fn new(change: &ScheduleChange) -> Result<PreparedSchedule> {
        let revision = match change.expect {
            Expect::Absent => Revision(1),
            Expect::At(revision) => revision.next(),
        };
        let bytes = match &change.new {
            Some(schedule) => Some(codec::encode_schedule(schedule, revision)?),
            None => None,
        };
        let old_due = change.old.as_ref().and_then(keys::schedule_due_key);
        let new_due = change.new.as_ref().and_then(keys::schedule_due_key);
        Ok(PreparedSchedule {
            key: keys::schedule_key(&change.name),
            expect: change.expect,
            bytes,
            remove_due: old_due.clone().filter(|old| new_due.as_ref() != Some(old)),
            insert_due: new_due.filter(|new| old_due.as_ref() != Some(new)),
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
    /// The (queue, group)s whose ready jobs changed: their heads are
    /// brought up to date when the operation ends.
    touched: RefCell<BTreeSet<(String, String)>>,
    /// Encoded events of this operation, and whose.
    events: RefCell<TxEvents>,
    seal: std::cell::Cell<bool>,
    /// The history samples of this operation, folded per (queue, minute):
    /// handed to the batch if the operation succeeds, which writes them
    /// once for all its operations, with the depths it leaves.
    history: RefCell<BTreeMap<(String, u64), Rollup>>,
    /// The history minutes this view wrote (`None`: removed), decoded, for
    /// the store's cache once the batch is durable.
    rollups: RefCell<Rollups>,
}

/// History minutes by key, decoded; `None`: removed.
pub(crate) type Rollups = BTreeMap<Vec<u8>, Option<Rollup>>;

/// The most history minutes the store keeps decoded (see
/// [`Store::history_cache`](super::Store)); past it the cache starts over.
const HISTORY_CACHE: usize = 4096;

impl Tx<'_> {
    /// Asks the batch to write the events gathered so far as a chunk.
    pub(crate) fn seal_events(&self) {
        self.seal.set(true);
    }

    /// Removes the events up to `cut` from the chunks of the log: whole
    /// chunks, and the older part of the one that straddles it. Returns
    /// how many events went.
    pub(crate) fn prune_chunks(&self, cut: u64) -> TxResult<u64> {
        let mut removed = 0;
        for item in self.store.events.iter() {
            let (key, value) = item?;
            let first =
                keys::u64_at(&key, 0).ok_or_else(|| Error::Corrupt("short event key".into()))?;
            if first > cut {
                break;
            }
            let events = codec::decode_chunk(first, &value)?;
            let all = events.len() as u64;
            self.put(EVENTS, &key, None);
            let kept: Vec<Event> = events.into_iter().filter(|e| e.event_id > cut).collect();
            removed += all - kept.len() as u64;
            if let Some(next) = kept.first() {
                self.put(
                    EVENTS,
                    &event_key(next.event_id),
                    Some(&codec::encode_chunk(&kept)?),
                );
                break;
            }
        }
        let latest = self.store.event_seq.load(Ordering::Acquire);
        self.put(META, keys::EVENT_SEQ, Some(&latest.to_be_bytes()));
        Ok(removed)
    }

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

    /// Writes `key` of `tree` (tests of the write-ahead log).
    #[cfg(test)]
    pub(crate) fn put_for_test(&self, tree: u8, key: &[u8], value: Option<&[u8]>) {
        self.put(tree, key, value);
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

    /// Whether the schedule is stored as `prepared` expects.
    pub(crate) fn schedule_is_current(&self, prepared: &PreparedSchedule) -> TxResult<bool> {
        let stored = self.get(META, &prepared.key)?;
        match (prepared.expect, stored) {
            (Expect::Absent, stored) => Ok(stored.is_none()),
            (Expect::At(_), None) => Ok(false),
            (Expect::At(revision), Some(bytes)) => {
                Ok(codec::schedule_revision(&bytes)? == revision)
            }
        }
    }

    /// Applies a schedule change (the caller has checked it is current).
    pub(crate) fn apply_schedule(&self, prepared: &PreparedSchedule) {
        self.put(META, &prepared.key, prepared.bytes.as_deref());
        if let Some(key) = &prepared.remove_due {
            self.put(META, key, None);
        }
        if let Some(key) = &prepared.insert_due {
            self.put(META, key, Some(&[]));
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
            if let Some(group) = &prepared.group {
                if let Some((queue, JobState::Leased)) = &prepared.old {
                    *deltas.entry(group_leased_key(queue, group)).or_default() -= 1;
                }
                if let Some((queue, JobState::Leased)) = &prepared.new {
                    *deltas.entry(group_leased_key(queue, group)).or_default() += 1;
                }
            }
        }
        if let Some(group) = &prepared.group {
            let ready = |place: &Option<(String, JobState)>| {
                place
                    .as_ref()
                    .filter(|(_, state)| *state == JobState::Ready)
                    .map(|(queue, _)| queue.clone())
            };
            for queue in [ready(&prepared.old), ready(&prepared.new)]
                .into_iter()
                .flatten()
            {
                self.touched.borrow_mut().insert((queue, group.clone()));
            }
        }
        if let Some(sample) = prepared
            .history
            .as_ref()
            .filter(|_| self.store.history_ms > 0)
        {
            self.history
                .borrow_mut()
                .entry((sample.queue.clone(), sample.minute))
                .or_default()
                .add(sample);
        }
        if prepared.event_count > 0 {
            let mut events = self.events.borrow_mut();
            events.items.extend_from_slice(&prepared.events);
            events.jobs.push((prepared.id, prepared.event_count));
        }
    }

    /// The stored record of `id` with its revision, as this operation sees it.
    pub(crate) fn load(&self, id: JobId) -> TxResult<Option<(Job, Revision)>> {
        match self.get(JOBS, &job_key(id))? {
            Some(bytes) => Ok(Some(decode_job(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The `r` entries of `queue` in lease order (its ready jobs without a
    /// group and the head of each group), as this operation sees them when
    /// the scan starts: the stored index with the writes of the earlier
    /// operations of the batch and this one's so far. Each yields the lease
    /// order suffix, the job id and, for a group's head, the group (the
    /// entry's value), so that a group at its limit is skipped without
    /// loading its job.
    pub(crate) fn ready_heads<'s>(
        &'s self,
        queue: &str,
    ) -> impl Iterator<Item = TxResult<ReadyHead>> + 's {
        let prefix = queue_prefix(keys::READY, queue);
        let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for writes in [self.batch, &*self.own.borrow()] {
            for ((_, key), value) in writes
                .range((INDEX, prefix.clone())..)
                .take_while(|((t, k), _)| *t == INDEX && k.starts_with(&prefix))
            {
                overlay.insert(key.clone(), value.clone());
            }
        }
        let added: VecDeque<(Vec<u8>, Vec<u8>)> = overlay
            .iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| (key.clone(), v.clone())))
            .collect();
        let stored = self.store.index.scan_prefix(&prefix);
        MergedEntries {
            stored: stored.peekable(),
            overlay,
            added,
        }
        .map(|entry| {
            let (key, value) = entry?;
            let order = <[u8; ORDER_LEN]>::try_from(&key[key.len().saturating_sub(ORDER_LEN)..])
                .map_err(|_| Error::Corrupt(format!("short ready key {key:?}")))?;
            let group = if value.is_empty() {
                None
            } else {
                Some(String::from_utf8(value).map_err(|_| {
                    Error::Corrupt(format!("group of ready entry {key:?} is not UTF-8"))
                })?)
            };
            Ok(ReadyHead {
                order,
                id: id_at_end(&key)?,
                group,
            })
        })
    }

    /// The first key of `tree` with `prefix` after `after` (exclusive; from
    /// the start of the prefix with `None`), as this operation sees it:
    /// its own writes over the batch's over the tree.
    pub(crate) fn first_after(
        &self,
        tree: u8,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> TxResult<Option<Vec<u8>>> {
        let start = match after {
            Some(after) => {
                let mut key = after.to_vec();
                key.push(0);
                key
            }
            None => prefix.to_vec(),
        };
        let own = self.own.borrow();
        let present = |key: &[u8]| -> Option<bool> {
            let k = (tree, key.to_vec());
            own.get(&k)
                .or_else(|| self.batch.get(&k))
                .map(Option::is_some)
        };
        let in_range = |t: u8, key: &[u8]| t == tree && key.starts_with(prefix);
        let mut best: Option<Vec<u8>> = None;
        let mut consider = |key: Vec<u8>| {
            if best.as_ref().is_none_or(|b| key < *b) {
                best = Some(key);
            }
        };
        if let Some(((_, key), _)) = own
            .range((tree, start.clone())..)
            .take_while(|((t, k), _)| in_range(*t, k))
            .find(|(_, value)| value.is_some())
        {
            consider(key.clone());
        }
        if let Some(((_, key), _)) = self
            .batch
            .range((tree, start.clone())..)
            .take_while(|((t, k), _)| in_range(*t, k))
            .find(|((_, k), _)| present(k) == Some(true))
        {
            consider(key.clone());
        }
        for key in self.store.tree(tree).range(start..).keys() {
            let key = key?;
            if !key.starts_with(prefix) {
                break;
            }
            if present(&key) != Some(false) {
                consider(key.to_vec());
                break;
            }
        }
        Ok(best)
    }

    /// The head of the ready jobs of (`queue`, `group`) as this operation
    /// sees them: its lease order suffix.
    fn group_head(&self, queue: &str, group: &str) -> TxResult<Option<Vec<u8>>> {
        let prefix = group_prefix(keys::GROUP_READY, queue, group);
        let first = self.first_after(INDEX, &prefix, None)?;
        Ok(first.map(|key| key[key.len().saturating_sub(ORDER_LEN)..].to_vec()))
    }

    /// The ready job of (`queue`, `group`) after the one with lease order
    /// `suffix`, as this operation sees them.
    pub(crate) fn next_in_group(
        &self,
        queue: &str,
        group: &str,
        suffix: &[u8],
    ) -> TxResult<Option<([u8; ORDER_LEN], JobId)>> {
        let prefix = group_prefix(keys::GROUP_READY, queue, group);
        let mut after = prefix.clone();
        after.extend_from_slice(suffix);
        let next = self.first_after(INDEX, &prefix, Some(&after))?;
        next.map(|key| {
            let order = <[u8; ORDER_LEN]>::try_from(&key[key.len().saturating_sub(ORDER_LEN)..])
                .map_err(|_| Error::Corrupt(format!("short group key {key:?}")))?;
            Ok((order, id_at_end(&key)?))
        })
        .transpose()
    }

    /// Writes what this operation's changes so far imply for the group
    /// heads and the counts (as its end does), so that what it reads next
    /// sees them: [`Tx::count`], [`Tx::group_leased`] and
    /// [`Tx::ready_heads`] then count its own changes too. For an
    /// operation that commits and then runs a lease round.
    pub(crate) fn bring_derived_up_to_date(&self) -> TxResult<()> {
        self.update_heads()?;
        self.write_counts()
    }

    /// Brings the head entry (in `r`) and its pointer (in `meta`) of every
    /// group whose ready jobs this operation changed up to date.
    fn update_heads(&self) -> TxResult<()> {
        let touched = std::mem::take(&mut *self.touched.borrow_mut());
        for (queue, group) in touched {
            let pointer = group_head_key(&queue, &group);
            let old = self.get(META, &pointer)?.map(|v| v.to_vec());
            let new = self
                .group_head(&queue, &group)?
                .map(|suffix| ready_key_of(&queue, &suffix));
            if old == new {
                continue;
            }
            if let Some(old) = &old {
                self.put(INDEX, old, None);
            }
            if let Some(new) = &new {
                // The head's value is its group: a lease skips a group at
                // its limit without loading the job.
                self.put(INDEX, new, Some(group.as_bytes()));
            }
            self.put(META, &pointer, new.as_deref());
        }
        Ok(())
    }

    /// The count of `queue`'s jobs in `state`, as this operation sees it
    /// (the changes of earlier operations of the batch included, this
    /// operation's own not).
    pub(crate) fn count(&self, queue: &str, state: JobState) -> TxResult<u64> {
        self.meta_u64(&count_key(queue, state))
    }

    /// The count of leased jobs of (`queue`, `group`), as [`Tx::count`].
    pub(crate) fn group_leased(&self, queue: &str, group: &str) -> TxResult<u64> {
        self.meta_u64(&group_leased_key(queue, group))
    }

    fn meta_u64(&self, key: &[u8]) -> TxResult<u64> {
        match self.get(META, key)? {
            Some(bytes) => Ok(decode_u64(&bytes)?),
            None => Ok(0),
        }
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

    /// Folds the history samples gathered in this view (a whole batch's,
    /// see [`Store::write_batch_history`]) into the stored minutes, each
    /// with its queue's depths as the batch leaves them. A queue's first
    /// record of a minute also prunes its minutes older than the
    /// retention, and takes a step of the sweep over every queue's.
    fn write_history(&self) -> TxResult<()> {
        let pending = std::mem::take(&mut *self.history.borrow_mut());
        for ((queue, minute), added) in pending {
            let key = keys::history_key(&queue, minute);
            let mut rollup = match self.rollup_at(&key)? {
                Some(rollup) => rollup,
                None => {
                    self.prune_history(&queue, minute)?;
                    self.sweep_history(minute)?;
                    Rollup::default()
                }
            };
            rollup.merge(&added);
            let depths = Depths {
                ready: self.meta_u64(&count_key(&queue, JobState::Ready))?,
                scheduled: self.meta_u64(&count_key(&queue, JobState::Scheduled))?,
                leased: self.meta_u64(&count_key(&queue, JobState::Leased))?,
            };
            rollup.depths = depths;
            self.put_rollup(&key, Some(rollup))?;
            // A change whose time was taken just before a minute ended may
            // commit after a change of the next minute: that minute's
            // depths must include it too (they are the latest).
            let next = keys::history_key(&queue, minute.saturating_add(HISTORY_MINUTE_MS));
            if let Some(mut later) = self.rollup_at(&next)? {
                if later.depths != depths {
                    later.depths = depths;
                    self.put_rollup(&next, Some(later))?;
                }
            }
        }
        Ok(())
    }

    /// Removes up to [`HISTORY_PRUNE`] minutes of `queue` that started more
    /// than the retention before `minute`, oldest first. The newest of
    /// them stays, as depths only (or goes, if they are all zero): the
    /// steps after it carry its depths forward.
    fn prune_history(&self, queue: &str, minute: u64) -> TxResult<()> {
        let Some(cutoff) = minute.checked_sub(self.store.history_ms) else {
            return Ok(());
        };
        let prefix = queue_prefix(keys::HISTORY, queue);
        let mut old = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while old.len() <= HISTORY_PRUNE {
            let Some(key) = self.first_after(META, &prefix, after.as_deref())? else {
                break;
            };
            let at = keys::u64_at(&key, prefix.len())
                .ok_or_else(|| Error::Corrupt(format!("short history key {key:?}")))?;
            if at >= cutoff {
                break;
            }
            after = Some(key.clone());
            old.push(key);
        }
        if old.len() > HISTORY_PRUNE {
            // More than a batch's worth: the next new minutes go on.
            old.truncate(HISTORY_PRUNE);
            for key in &old {
                self.put_rollup(key, None)?;
            }
            return Ok(());
        }
        let Some(newest) = old.pop() else {
            return Ok(());
        };
        for key in &old {
            self.put_rollup(key, None)?;
        }
        self.keep_depths(&newest)
    }

    /// One step of the sweep over every queue's history minutes: up to
    /// [`HISTORY_SWEEP`] of them, from where the last step stopped (at the
    /// end, it starts over), removing those older than the retention
    /// before `minute` but the newest of each queue (kept as depths only,
    /// as [`Tx::prune_history`] does). A queue that has gone idle has its
    /// old minutes removed this way while any queue is written; while
    /// nothing is written, nothing grows.
    fn sweep_history(&self, minute: u64) -> TxResult<()> {
        let Some(cutoff) = minute.checked_sub(self.store.history_ms) else {
            return Ok(());
        };
        let family = [keys::HISTORY];
        let mut cursor = self
            .store
            .history_sweep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // An old minute whose fate depends on the next key: removed if the
        // next is an old minute of the same queue, else kept as depths.
        let mut held: Option<(Vec<u8>, usize)> = None;
        let mut before_held = cursor.clone();
        for _ in 0..HISTORY_SWEEP {
            let Some(key) = self.first_after(META, &family, cursor.as_deref())? else {
                cursor = None;
                break;
            };
            let split = key
                .iter()
                .position(|b| *b == 0)
                .map(|at| at + 1)
                .ok_or_else(|| Error::Corrupt(format!("bad history key {key:?}")))?;
            let at = keys::u64_at(&key, split)
                .ok_or_else(|| Error::Corrupt(format!("short history key {key:?}")))?;
            if let Some((old, old_split)) = held.take() {
                if at < cutoff && key[..split] == old[..old_split] {
                    self.put_rollup(&old, None)?;
                } else {
                    self.keep_depths(&old)?;
                }
            }
            if at < cutoff {
                before_held = cursor.clone();
                held = Some((key.clone(), split));
            }
            cursor = Some(key);
        }
        match held {
            // Decided by the next step, which starts just before it.
            Some(_) if cursor.is_some() => cursor = before_held,
            Some((old, _)) => self.keep_depths(&old)?,
            None => {}
        }
        *self
            .store
            .history_sweep
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
        Ok(())
    }

    /// Reduces the stored minute at `key` to its depths (or removes it if
    /// they are all zero).
    fn keep_depths(&self, key: &[u8]) -> TxResult<()> {
        if let Some(stored) = self.rollup_at(key)? {
            let kept = stored.depths_only();
            if kept.depths == Depths::default() {
                self.put_rollup(key, None)?;
            } else if kept != stored {
                self.put_rollup(key, Some(kept))?;
            }
        }
        Ok(())
    }

    /// The history minute at `key` as this view sees it: its own writes,
    /// the batch's, then the store's cache of decoded minutes (which holds
    /// what the trees hold), then the tree.
    fn rollup_at(&self, key: &[u8]) -> TxResult<Option<Rollup>> {
        let k = (META, key.to_vec());
        let written = self.own.borrow().get(&k).cloned();
        if let Some(value) = written.or_else(|| self.batch.get(&k).cloned()) {
            return Ok(value.as_deref().map(codec::decode_rollup).transpose()?);
        }
        let cached = self
            .store
            .history_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(rollup) = cached {
            return Ok(Some(rollup));
        }
        match self.store.meta.get(key)? {
            Some(bytes) => Ok(Some(codec::decode_rollup(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes (or removes) the history minute at `key`, and remembers it
    /// decoded for the store's cache.
    fn put_rollup(&self, key: &[u8], rollup: Option<Rollup>) -> TxResult<()> {
        match &rollup {
            Some(rollup) => self.put(META, key, Some(&codec::encode_rollup(rollup)?)),
            None => self.put(META, key, None),
        }
        self.rollups.borrow_mut().insert(key.to_vec(), rollup);
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

/// An `r` entry: a ready job without a group, or the head of a group.
pub(crate) struct ReadyHead {
    /// The job's lease order suffix.
    pub(crate) order: [u8; ORDER_LEN],
    pub(crate) id: JobId,
    /// The group, for a group's head.
    pub(crate) group: Option<String>,
}

/// Entries of a tree's prefix merged with a batch's writes to it: stored
/// entries the writes do not touch, and the entries the writes put, in
/// key order.
struct MergedEntries {
    stored: std::iter::Peekable<sled::Iter>,
    /// Every key of the prefix the writes touch: its value after them, or
    /// `None` if removed.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The entries present after the writes, in order.
    added: VecDeque<(Vec<u8>, Vec<u8>)>,
}

impl Iterator for MergedEntries {
    type Item = TxResult<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let stored = match self.stored.peek() {
                Some(Err(_)) => {
                    return self
                        .stored
                        .next()
                        .and_then(|item| item.err())
                        .map(|e| Err(TxError::from(e)));
                }
                Some(Ok((key, value))) => Some((key.to_vec(), value.to_vec())),
                None => None,
            };
            if let Some((key, _)) = &stored {
                if self.overlay.contains_key(key) {
                    // Yielded from `added` if present, skipped if removed.
                    self.stored.next();
                    continue;
                }
            }
            return match (stored, self.added.front()) {
                (Some((key, _)), Some((added, _))) if *added < key => {
                    self.added.pop_front().map(Ok)
                }
                (Some(entry), _) => {
                    self.stored.next();
                    Some(Ok(entry))
                }
                (None, _) => self.added.pop_front().map(Ok),
            };
        }
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
    /// The batch's events, encoded, the first with id `first`.
    items: Vec<u8>,
    first: u64,
    /// The id of the batch's last event (of the previous batch's if none).
    next_event: u64,
    /// An operation asked for the gathered events to go into a chunk now.
    seal: bool,
    /// The history samples of the batch's operations, per (queue, minute),
    /// written once at the end of the batch ([`Store::write_batch_history`]).
    history: BTreeMap<(String, u64), Rollup>,
    /// The history minutes the batch writes, decoded (for the cache).
    rollups: Rollups,
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

/// The events of one operation, in the order of its changes.
#[derive(Default)]
pub(crate) struct TxEvents {
    items: Vec<u8>,
    /// Each job with events, and how many.
    jobs: Vec<(JobId, u64)>,
}

/// The events an operation logged: `count` of them, from id `first`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) first: u64,
    pub(crate) count: u64,
}

/// What an operation returns: its value and the events it logged; `None`
/// if it gave up as stale.
pub(crate) type OpOutcome<R> = Result<Option<(R, Logged)>>;

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
                touched: RefCell::new(BTreeSet::new()),
                events: RefCell::new(TxEvents::default()),
                seal: std::cell::Cell::new(false),
                history: RefCell::new(BTreeMap::new()),
                rollups: RefCell::new(Rollups::new()),
            };
            let outcome = (self.f)(&tx).and_then(|value| {
                tx.update_heads()?;
                tx.write_counts()?;
                Ok(value)
            });
            let seal = tx.seal.get();
            (
                outcome,
                tx.own.into_inner(),
                (tx.events.into_inner(), seal, tx.history.into_inner()),
            )
        };
        let (drafts, seal, history) = drafts;
        match outcome {
            Ok(value) => {
                batch.seal |= seal;
                for (key, rollup) in history {
                    batch.history.entry(key).or_default().merge(&rollup);
                }
                let events = batch.add(own, drafts);
                self.record(Ok(Some((value, events))));
            }
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
    /// Merges an operation's writes and events: the events get their ids,
    /// and each job record is told the id of its latest event (written into
    /// the record's header, without encoding it again).
    fn add(&mut self, mut own: Writes, events: TxEvents) -> Logged {
        let first = self.next_event + 1;
        for (job, count) in &events.jobs {
            self.next_event += count;
            if let Some(Some(bytes)) = own.get_mut(&(JOBS, job_key(*job).to_vec())) {
                if bytes.first() == Some(&codec::JOB_VERSION) {
                    if let Some(slot) = bytes.get_mut(codec::LAST_EVENT_AT) {
                        slot.copy_from_slice(&self.next_event.to_be_bytes());
                    }
                }
            }
        }
        self.writes.extend(own);
        self.items.extend_from_slice(&events.items);
        Logged {
            first,
            count: self.next_event + 1 - first,
        }
    }

    fn count(&self) -> u64 {
        self.next_event + 1 - self.first
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
        let latest = self.event_seq.load(Ordering::Acquire);
        let mut running = Running {
            writes: Writes::new(),
            items: Vec::new(),
            first: latest + 1,
            next_event: latest,
            seal: false,
            history: BTreeMap::new(),
            rollups: Rollups::new(),
        };
        for op in batch {
            op.run(self, &mut running);
        }
        if let Err(e) = self.write_batch_history(&mut running) {
            // Nothing of the batch is written: its operations fail.
            tracing::error!(error = %e, "history of a batch could not be written");
            for op in batch {
                op.not_durable(&e);
                op.finish();
            }
            return;
        }
        let mut committed = Ok(());
        if !running.writes.is_empty() || running.seal {
            committed = self.commit_batch(&mut running);
            if committed.is_err() {
                // The record may be stored and replayed at the next open, or
                // the trees half-written: stop until then.
                self.poisoned.store(true, Ordering::Release);
            }
        }
        let mut cache = self.history_cache.lock().unwrap_or_else(|p| p.into_inner());
        if committed.is_ok() {
            // The trees hold these minutes now.
            for (key, rollup) in std::mem::take(&mut running.rollups) {
                match rollup {
                    Some(rollup) => {
                        if cache.len() >= HISTORY_CACHE {
                            cache.clear();
                        }
                        cache.insert(key, rollup);
                    }
                    None => {
                        cache.remove(&key);
                    }
                }
            }
        } else {
            cache.clear();
        }
        drop(cache);
        match committed {
            Ok(()) => self.publish(running),
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

    /// Folds the history samples of the batch's operations into the stored
    /// minutes, with the depths the batch leaves: one read and one write
    /// per (queue, minute) per batch, in the batch's own writes (so in its
    /// atomic commit).
    fn write_batch_history(&self, running: &mut Running) -> Result<()> {
        if running.history.is_empty() {
            return Ok(());
        }
        let own = {
            let tx = Tx {
                store: self,
                batch: &running.writes,
                own: RefCell::new(Writes::new()),
                deltas: RefCell::new(BTreeMap::new()),
                touched: RefCell::new(BTreeSet::new()),
                events: RefCell::new(TxEvents::default()),
                seal: std::cell::Cell::new(false),
                history: RefCell::new(std::mem::take(&mut running.history)),
                rollups: RefCell::new(Rollups::new()),
            };
            match tx.write_history() {
                Ok(()) => {
                    running.rollups = tx.rollups.into_inner();
                    tx.own.into_inner()
                }
                Err(TxError::Failed(e)) => return Err(e),
                Err(TxError::Stale) => {
                    return Err(Error::Internal("writing history went stale".into()));
                }
            }
        };
        running.writes.extend(own);
        Ok(())
    }

    /// Commits a batch so that a crash leaves all of it or none of it: the
    /// write-ahead record first, then (under `Sync`) the flush, then the
    /// trees. sled recovers a prefix of its log, so the trees are never
    /// ahead of the record; and since the trees are written only after the
    /// flush, readers never see a change that a crash could still take back.
    ///
    /// The record goes to the batch's slot, with the batch's events (see
    /// [`codec`]). Once enough events are gathered, or their oldest slot is
    /// about to be reused, or an operation asks, the batch also writes them
    /// as one chunk of the `events` tree, and the checkpoint.
    fn commit_batch(&self, running: &mut Running) -> Result<()> {
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let seq = gathered.next;
        let count = gathered.count + running.count();
        let mut journal = if self.sync {
            Some(self.journal.lock().unwrap_or_else(|p| p.into_inner()))
        } else {
            None
        };
        // A journal past its size is cut after a sealed batch.
        let cut = journal.as_ref().is_some_and(|j| j.len() >= journal::CUT_AT);
        let mut sealed = count >= CHUNK_EVENTS
            || seq.saturating_sub(gathered.checkpoint) >= SLOTS - 1
            || running.seal
            || cut;
        if sealed {
            Self::add_checkpoint(&gathered, running, seq);
        }
        let mut record = encode(&running.writes)?;
        if let Some(journal) = journal.as_mut() {
            // Durable: the frame is synced, then the trees are written
            // (sled is not flushed: the journal holds the batch).
            let items: &[u8] = if sealed { &[] } else { &running.items };
            journal.append(&codec::encode_slot(seq, running.first, items, &record)?)?;
            self.apply(&running.writes)?;
            if cut {
                // This batch wrote the checkpoint `seq`, after the last
                // frame: once sled is flushed, no frame is needed.
                self.flush_now()?;
                journal.cut();
            }
        } else if record.len() <= SLOT_RECORD_MAX {
            let items: &[u8] = if sealed { &[] } else { &running.items };
            self.wal
                .insert(
                    keys::slot_key(seq % SLOTS),
                    codec::encode_slot(seq, running.first, items, &record)?,
                )
                .map_err(storage)?;
            if self.sync {
                self.flush_now()?;
            }
            self.apply(&running.writes)?;
        } else {
            // Too large for a slot: the record is stored in pieces (removed
            // once applied), with a checkpoint, since no slot holds this
            // batch.
            if !sealed {
                Self::add_checkpoint(&gathered, running, seq);
                sealed = true;
                record = encode(&running.writes)?;
            }
            self.commit_pieces(&running.writes, &record, seq)?;
        }
        gathered.next = seq + 1;
        if sealed {
            gathered.items.clear();
            gathered.count = 0;
            gathered.checkpoint = seq;
            self.chunked.store(running.next_event, Ordering::Release);
        } else if running.count() > 0 {
            if gathered.count == 0 {
                gathered.first = running.first;
            }
            gathered.items.extend_from_slice(&running.items);
            gathered.count += running.count();
        }
        Ok(())
    }

    /// Adds to the batch `seq`'s writes the chunk of the gathered and its
    /// own events, if any, and the checkpoint `seq`. The checkpoint is
    /// written last of all (its tree sorts last), so a checkpoint on disk
    /// means the chunk is too.
    fn add_checkpoint(gathered: &Gathered, running: &mut Running, seq: u64) {
        let first = if gathered.count > 0 {
            gathered.first
        } else {
            running.first
        };
        if gathered.count + running.count() > 0 {
            running.writes.insert(
                (EVENTS, event_key(first).to_vec()),
                Some(codec::chunk_value(&[&gathered.items, &running.items])),
            );
        }
        running.writes.insert(
            (keys::WAL, keys::CHECKPOINT.to_vec()),
            Some(seq.to_be_bytes().to_vec()),
        );
    }

    /// Writes `writes` (encoded as `record`) as batch `seq`, the record
    /// stored in pieces under fresh keys of the `wal` tree and removed once
    /// applied: for records too large for a slot, and for the format
    /// upgrade.
    pub(crate) fn commit_pieces(&self, writes: &Writes, record: &[u8], seq: u64) -> Result<()> {
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
        self.apply(writes)?;
        for key in &keys {
            self.wal.remove(key).map_err(storage)?;
        }
        Ok(())
    }

    /// Writes a batch's writes to the trees, in (tree, key) order.
    pub(crate) fn apply(&self, writes: &Writes) -> Result<()> {
        for ((tree, key), value) in writes {
            match value {
                Some(value) => self.tree(*tree).insert(key.as_slice(), value.as_slice()),
                None => self.tree(*tree).remove(key.as_slice()),
            }
            .map_err(storage)?;
        }
        Ok(())
    }

    /// Finishes what a crash interrupted: every slot after the checkpoint
    /// and every complete record in pieces is applied again, in batch
    /// order (their writes are absolute: records already applied rewrite
    /// what later records rewrite in turn, so the result is the state after
    /// the last); an incomplete record in pieces was never applied and is
    /// dropped. Returns the events of the replayed slots and the last batch
    /// sequence number seen.
    pub(crate) fn replay_wal(&self) -> Result<(Vec<Event>, u64)> {
        let checkpoint = match self.wal.get(keys::CHECKPOINT).map_err(storage)? {
            Some(bytes) => keys::decode_u64(&bytes)?,
            None => 0,
        };
        let mut last = checkpoint;
        let mut records: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut pieces: BTreeMap<u64, (u32, Vec<(IVec, IVec)>)> = BTreeMap::new();
        for item in self.wal.iter() {
            let (key, value) = item.map_err(storage)?;
            match key.len() {
                8 => {
                    let slot = codec::decode_slot(&value)?;
                    if slot.seq > checkpoint {
                        last = last.max(slot.seq);
                        events.extend(slot.events);
                        records.insert(slot.seq, slot.record);
                    }
                }
                16 => {
                    let parts = key
                        .get(12..16)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(u32::from_be_bytes);
                    let (Some(seq), Some(parts)) = (keys::u64_at(&key, 0), parts) else {
                        return Err(Error::Corrupt(format!("bad write-ahead key {key:?}")));
                    };
                    let entry = pieces.entry(seq).or_insert((parts, Vec::new()));
                    entry.1.push((key, value));
                }
                _ if key.as_ref() == keys::CHECKPOINT => {}
                _ => return Err(Error::Corrupt(format!("bad write-ahead key {key:?}"))),
            }
        }
        // The journal's frames are slots written to a file (see
        // [`journal`]); a directory last opened in another durability may
        // have both, numbered in one sequence.
        let frames = std::mem::take(
            &mut *self
                .journal_frames
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for frame in frames {
            let slot = codec::decode_slot(&frame)?;
            if slot.seq > checkpoint {
                last = last.max(slot.seq);
                events.extend(slot.events);
                records.insert(slot.seq, slot.record);
            }
        }
        for (seq, (parts, pieces)) in pieces {
            if pieces.len() == parts as usize {
                let mut bytes = Vec::new();
                for (_, value) in &pieces {
                    bytes.extend_from_slice(value);
                }
                last = last.max(seq);
                records.insert(seq, bytes);
            } else {
                tracing::warn!(seq, "dropping an incomplete write-ahead record");
                for (key, _) in pieces {
                    self.wal.remove(key).map_err(storage)?;
                }
            }
        }
        if !records.is_empty() {
            tracing::info!(batches = records.len(), "replaying the write-ahead log");
        }
        for (_, record) in records {
            self.apply_decoded(codec::decode_writes(&record)?)?;
        }
        // Records in pieces are applied now: they go.
        let leftovers: Vec<IVec> = self
            .wal
            .iter()
            .keys()
            .filter_map(|key| key.ok().filter(|key| key.len() == 16))
            .collect();
        for key in leftovers {
            self.wal.remove(key).map_err(storage)?;
        }
        self.flush_now()?;
        Ok((events, last))
    }

    fn apply_decoded(&self, writes: Vec<codec::WalWrite>) -> Result<()> {
        for (tree, key, value) in writes {
            match value {
                Some(value) => self.tree(tree).insert(key, value),
                None => self.tree(tree).remove(key),
            }
            .map_err(storage)?;
        }
        Ok(())
    }

    /// Announces a durable batch's events: the in-memory tail and the
    /// subscribers' wake-up.
    fn publish(&self, running: Running) {
        if running.count() == 0 {
            return;
        }
        let latest = running.next_event;
        self.event_seq.store(latest, Ordering::Release);
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).push(
            running.first,
            running.count(),
            running.items,
        );
        self.latest.send_replace(latest);
    }
}

/// Events kept in memory for subscribers that keep up (more than every
/// event not yet in a chunk: fewer than [`CHUNK_EVENTS`]).
pub(crate) const TAIL: u64 = 4096;

/// Slots of the write-ahead log, used in turn. A slot holds its record
/// until it is reused, so this bounds the log's size too.
pub(crate) const SLOTS: u64 = 64;

/// The largest record kept in a slot (`Durability::Periodic`: durable
/// batches go through the journal). sled rewrites a page whole now and
/// then, so the slots' page must stay small; larger batches (many jobs, or
/// large payloads) write their record in pieces, removed once applied.
/// A record in pieces costs an insert and a removal of fresh keys, whose
/// splits and merges cost more than the copying of a larger slot: 16 KiB
/// holds a batch of about forty 200-byte jobs (it was 2 KiB, five jobs).
pub(crate) const SLOT_RECORD_MAX: usize = 16 * 1024;

/// Events gathered in slots before a batch writes them as one chunk.
pub(crate) const CHUNK_EVENTS: u64 = 64;

/// The events committed but not yet in a chunk (each is in the slot of its
/// batch), and the batch sequence. Only the batch leader (and the open)
/// touches it.
#[derive(Default)]
pub(crate) struct Gathered {
    /// The first gathered event's id, their count and their encodings.
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) items: Vec<u8>,
    /// The last batch whose slot (and earlier ones) need no replaying.
    pub(crate) checkpoint: u64,
    /// The sequence number of the next batch: its slot is `next % SLOTS`.
    pub(crate) next: u64,
}

/// A batch's writes as a write-ahead record.
pub(crate) fn encode(writes: &Writes) -> Result<Vec<u8>> {
    codec::encode_writes(
        writes
            .iter()
            .map(|((tree, key), value)| (*tree, key.as_slice(), value.as_deref())),
    )
}

/// The recent events, oldest first, as committed: batches of encoded
/// events, decoded when read.
#[derive(Default)]
pub(crate) struct Tail {
    batches: VecDeque<(u64, u64, Vec<u8>)>,
    events: u64,
}

impl Tail {
    fn push(&mut self, first: u64, count: u64, items: Vec<u8>) {
        self.batches.push_back((first, count, items));
        self.events += count;
        while self.events > TAIL {
            match self.batches.pop_front() {
                Some((_, count, _)) => self.events -= count,
                None => break,
            }
        }
    }

    /// The id of the oldest event held.
    pub(crate) fn first(&self) -> Option<u64> {
        self.batches.front().map(|(first, _, _)| *first)
    }

    /// Up to `limit` events with ids from `from` on, if the tail holds
    /// `from`.
    pub(crate) fn read(&self, from: u64, limit: usize) -> Result<Option<Vec<Event>>> {
        if self.first().is_none_or(|first| first > from) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for (first, count, items) in &self.batches {
            if first + count <= from {
                continue;
            }
            for event in codec::decode_items(*first, items)? {
                if out.len() >= limit {
                    return Ok(Some(out));
                }
                if event.event_id >= from {
                    out.push(event);
                }
            }
        }
        Ok(Some(out))
    }

    /// Drops the events up to `cut` (pruned).
    pub(crate) fn trim(&mut self, cut: u64) {
        while let Some((first, count, _)) = self.batches.front() {
            if first + count - 1 > cut {
                break;
            }
            self.events -= count;
            self.batches.pop_front();
        }
    }
}

/// History minutes older than the retention removed at most per new
/// minute record of a queue (bounded work per batch; each new minute
/// removes at least the one that aged out, so pruning keeps up).
const HISTORY_PRUNE: usize = 64;

/// History minutes looked at per step of the sweep over every queue.
const HISTORY_SWEEP: usize = 64;

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
