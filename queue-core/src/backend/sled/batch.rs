//! Group commit: every write goes through one batch at a time.
//!
//! The first caller leads: it takes every waiting operation, runs them in
//! order (each sees the writes of those before it; one that fails leaves
//! nothing), commits the batch through the write-ahead record, and hands
//! over; whatever arrived meanwhile forms the next batch. Async callers
//! never lead (they must not block their runtime): the batch threads lead
//! for them.
//!
//! Durable batches are pipelined: the leader encodes the batch's journal
//! frame and stages it ([`Staged`]), and the next leader decides the next
//! batch on top of the staged writes while a syncer writes the staged
//! frames and syncs them once (a thread caller whose operation is staged,
//! or a batch thread for async callers: the one that staged the batch, while
//! the other leads the next). Only then are the batches'
//! writes readable and their callers answered, in order; a batch that
//! wrote nothing is answered after the batches it may have read. So an
//! `fdatasync` overlaps the work of the next batch instead of stopping
//! every caller.
//!
//! A batch is made atomic by a write-ahead record rather than a sled
//! transaction: sled serializes transactions and forces log writes for
//! each, which capped durable throughput at a third of what this design
//! reaches (see BENCHMARKS.md). The record is one frame of the journal, a
//! file of its own (see [`journal`]), written in place; under
//! `Durability::Sync` it is fdatasynced before anything else, under
//! `Durability::Periodic` a flush thread syncs the journal every interval
//! ([`Store::sync_journal`]). Then the batch's writes join the overlay of
//! committed writes ([`pending`]), which every read consults before the
//! trees; the trees get the overlay at the next checkpoint, when a journal
//! lap ends: the overlay is frozen and applied to the trees behind, on a
//! thread of its own, and sled flushed, while the next batches go on into
//! a new layer and the journal's other file (see [`Store::end_lap`]). A
//! reopen replays the records (frames, and the slots of older releases)
//! after the checkpoint. sled recovers a prefix of its log, and nothing
//! reaches the trees before its frame is synced (under `Periodic` a
//! batch's removals wait in the overlay as tombstones until the flush
//! thread's sync), so the trees are never ahead of their records.
//!
//! [`pending`]: super::pending
//!
//! The event log rides on the same records: a batch's events are in its
//! slot, and every so often a batch gathers them into one chunk of the
//! `events` tree (see [`codec`] for why this costs less than a write per
//! batch).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use sled::IVec;

use super::codec::{self, decode_job, job_revision};
use super::key::Key;
use super::keys::{
    self, EVENTS, INDEX, JOBS, META, ORDER_LEN, count_key, decode_u64, event_key, group_head_key,
    group_leased_key, group_prefix, id_at_end, idem_key, job_key, queue_prefix, ready_key_of,
    settings_key,
};
use super::{Store, io, journal, pending, storage};
use queue_proto::{HISTORY_MINUTE_MS, JobState};

use crate::backend::{Change, Expect, Revision, ScheduleChange};
use crate::rules::history::{self, Depths, Rollup, Sample};
use crate::settings::QueueSettings;
use crate::{Error, Event, Job, JobId, Result};

pub(crate) use super::pending::Writes;

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
        let mut events =
            Vec::with_capacity(change.outcome.events().map(codec::item_size_hint).sum());
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
    /// The writes of the durable batches before this one whose frames are
    /// not synced yet, oldest first: decided, so this batch builds on
    /// them, but not readable outside the batches until they are durable.
    inflight: &'a [Arc<Writes>],
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
    /// Where this operation's lease scans found each queue's `r` entries
    /// to start: prefix and key, for the store's starts if it succeeds
    /// (see [`starts`](super::starts)).
    scanned: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// History minutes by key, decoded; `None`: removed.
pub(crate) type Rollups = BTreeMap<Vec<u8>, Option<Rollup>>;

/// A cache of decoded `meta` records as the trees hold them, by key (see
/// [`Tx::meta_cached`]).
pub(crate) type MetaCache<V> = std::collections::HashMap<Vec<u8>, V>;

/// The store's cache of history minutes, decoded (`None`: known absent).
pub(crate) type HistoryCache = MetaCache<Option<Rollup>>;

/// The store's cache of queue settings, by settings key (the defaults for
/// a queue that has none stored).
pub(crate) type SettingsCache = MetaCache<QueueSettings>;

/// The most history minutes the store keeps decoded (see
/// [`Store::history_cache`](super::Store)); past it the cache starts over.
const HISTORY_CACHE: usize = 4096;

/// The most queues whose settings the store keeps decoded (see
/// [`Tx::settings`]); past it the cache starts over.
const SETTINGS_CACHE: usize = 4096;

/// Remembers `value` for `key` in `cache`, which starts over once it holds
/// `limit` other keys.
fn remember<V>(cache: &mut MetaCache<V>, limit: usize, key: Vec<u8>, value: V) {
    if cache.len() >= limit && !cache.contains_key(&key) {
        cache.clear();
    }
    cache.insert(key, value);
}

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
        for item in self.store.scan(EVENTS, Bound::Unbounded, Bound::Unbounded) {
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
        if let Some(value) = self.written(tree, key, |v| v.map(IVec::from)) {
            return Ok(value);
        }
        Ok(self.store.get(tree, key)?)
    }

    /// `read` of the value of `key` in `tree` as this view sees it, as
    /// [`Tx::get`] but without copying it out (a job record, read to
    /// decode it or to check its revision).
    fn read<T>(&self, tree: u8, key: &[u8], read: impl Fn(Option<&[u8]>) -> T) -> TxResult<T> {
        if let Some(value) = self.written(tree, key, &read) {
            return Ok(value);
        }
        Ok(self.store.read(tree, key, read)?)
    }

    /// `read` of the newest value this view's writes hold for `key` of
    /// `tree` (its own, the batch's, the staged batches'; `None` inside:
    /// removed), or `None` if none of them wrote it: the trees have the
    /// answer.
    fn written<T>(&self, tree: u8, key: &[u8], read: impl FnOnce(Option<&[u8]>) -> T) -> Option<T> {
        let key = &(tree, Key::new(key));
        match self.written_in_batch(key, read) {
            Ok(found) => Some(found),
            Err(read) => self.written_staged(key, read),
        }
    }

    /// [`Tx::written`] over this operation's and its batch's writes only;
    /// `Err` gives `read` back if neither wrote `key`.
    fn written_in_batch<T, F: FnOnce(Option<&[u8]>) -> T>(
        &self,
        key: &(u8, Key),
        read: F,
    ) -> Result<T, F> {
        if let Some(v) = self.own.borrow().get(key) {
            return Ok(read(v.as_deref()));
        }
        match self.batch.get(key) {
            Some(v) => Ok(read(v.as_deref())),
            None => Err(read),
        }
    }

    /// [`Tx::written`] over the staged batches' writes only.
    fn written_staged<T>(
        &self,
        key: &(u8, Key),
        read: impl FnOnce(Option<&[u8]>) -> T,
    ) -> Option<T> {
        self.inflight
            .iter()
            .rev()
            .find_map(|writes| writes.get(key))
            .map(|v| read(v.as_deref()))
    }

    /// Writes `key` of `tree` (tests of the write-ahead log).
    #[cfg(test)]
    pub(crate) fn put_for_test(&self, tree: u8, key: &[u8], value: Option<&[u8]>) {
        self.put(tree, key, value);
    }

    fn put(&self, tree: u8, key: &[u8], value: Option<&[u8]>) {
        self.own
            .borrow_mut()
            .insert((tree, Key::new(key)), value.map(<[u8]>::to_vec));
    }

    /// Whether the store is as `prepared` expects: the record at its
    /// revision, or, for a new job, no record and its idempotency key free.
    pub(crate) fn is_current(&self, prepared: &Prepared) -> TxResult<bool> {
        let stored = self.read(JOBS, &job_key(prepared.id), |bytes| {
            bytes.map(job_revision).transpose()
        })??;
        match (prepared.expect, stored) {
            (Expect::Absent, Some(_)) => Ok(false),
            (Expect::Absent, None) => match &prepared.claims {
                Some((queue, key)) => Ok(self.get(INDEX, &idem_key(queue, key))?.is_none()),
                None => Ok(true),
            },
            (Expect::At(_), None) => Ok(false),
            (Expect::At(revision), Some(stored)) => Ok(stored == revision),
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
        Ok(self.read(JOBS, &job_key(id), |bytes| {
            bytes.map(decode_job).transpose()
        })??)
    }

    /// The `r` entries of `queue` in lease order (its ready jobs without a
    /// group and the head of each group), as this operation sees them when
    /// the scan starts: the stored index with the writes of the earlier
    /// operations of the batch and this one's so far. Each yields the lease
    /// order suffix, the job id and, for a group's head, the group (the
    /// entry's value), so that a group at its limit is skipped without
    /// loading its job.
    ///
    /// The scan starts where the store's [`starts`](super::starts) say the
    /// queue's first entry may be (the entries before it were taken by
    /// earlier batches that are not yet durable, or by earlier operations
    /// of this one); a lease round says where the next may start with
    /// [`Tx::ready_scanned`].
    pub(crate) fn ready_heads<'s>(
        &'s self,
        queue: &str,
    ) -> impl Iterator<Item = TxResult<ReadyHead>> + 's {
        let prefix = queue_prefix(keys::READY, queue);
        let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let own = self.own.borrow();
        let start = self.store.ready_starts.start(&prefix, &own);
        let layers = self
            .inflight
            .iter()
            .map(|writes| &**writes)
            .chain([self.batch, &*own]);
        for writes in layers {
            for ((_, key), value) in writes
                .range((INDEX, Key::new(&start))..)
                .take_while(|((t, k), _)| *t == INDEX && k.starts_with(&prefix))
            {
                overlay.insert(key.to_vec(), value.clone());
            }
        }
        let added: VecDeque<(Vec<u8>, Vec<u8>)> = overlay
            .iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| (key.clone(), v.clone())))
            .collect();
        let stored = self
            .store
            .scan(INDEX, Bound::Included(start), super::prefix_end(&prefix));
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

    /// Says where the next scan of `queue`'s `r` entries may start, as this
    /// operation leaves them: `order` is the lease order suffix of an entry
    /// before which none is left (see [`Tx::ready_heads`]), and `after`
    /// whether that entry is gone too. Counted only if the operation
    /// succeeds.
    pub(crate) fn ready_scanned(&self, queue: &str, order: &[u8; ORDER_LEN], after: bool) {
        let key = keys::ready_key_of(queue, order);
        let start = if after { keys::just_after(&key) } else { key };
        self.scanned
            .borrow_mut()
            .push((queue_prefix(keys::READY, queue), start));
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
            Some(after) => keys::just_after(after),
            None => prefix.to_vec(),
        };
        let own = self.own.borrow();
        let present = |key: &[u8]| -> Option<bool> {
            let k = (tree, Key::new(key));
            own.get(&k)
                .or_else(|| self.batch.get(&k))
                .or_else(|| self.inflight.iter().rev().find_map(|w| w.get(&k)))
                .map(Option::is_some)
        };
        let in_range = |t: u8, key: &[u8]| t == tree && key.starts_with(prefix);
        let mut best: Option<Vec<u8>> = None;
        let mut consider = |key: Vec<u8>| {
            if best.as_ref().is_none_or(|b| key < *b) {
                best = Some(key);
            }
        };
        let from = (tree, Key::new(&start));
        if let Some(((_, key), _)) = own
            .range(from.clone()..)
            .take_while(|((t, k), _)| in_range(*t, k))
            .find(|(_, value)| value.is_some())
        {
            consider(key.to_vec());
        }
        for layer in std::iter::once(self.batch).chain(self.inflight.iter().map(|w| &**w)) {
            if let Some(((_, key), _)) = layer
                .range(from.clone()..)
                .take_while(|((t, k), _)| in_range(*t, k))
                .find(|((_, k), _)| present(k) == Some(true))
            {
                consider(key.to_vec());
            }
        }
        for entry in self
            .store
            .scan(tree, Bound::Included(start), super::prefix_end(prefix))
        {
            let key = entry?.0;
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

    /// The settings of `queue`, as seen by this operation: its own writes,
    /// the batch's, the staged batches', then the store's cache of the
    /// settings the trees hold (every lease round reads its queue's, most
    /// often the defaults, which are stored as nothing: a lookup through
    /// the overlay and the tree that finds nothing), then the tree, whose
    /// answer the cache keeps.
    pub(crate) fn settings(&self, queue: &str) -> TxResult<QueueSettings> {
        self.meta_cached(
            &settings_key(queue),
            &self.store.settings_cache,
            SETTINGS_CACHE,
            false,
            |bytes| {
                Ok(bytes
                    .map(codec::decode_settings)
                    .transpose()?
                    .unwrap_or_default())
            },
        )
    }

    /// `decode` of the `meta` record at `key` as this view sees it: its
    /// own writes and the batch's, then `cache`, then the staged batches'
    /// writes, then the trees (through the overlay), whose answer the
    /// cache keeps until it holds `limit` keys. `take`: the caller writes
    /// the record again, so a cached value is moved out, not cloned (the
    /// cache learns the new one when the batch is staged).
    ///
    /// The cache holds what the staged batches and the trees hold: only
    /// batch leaders write the records cached so, one batch at a time, and
    /// each updates or empties the cache once its batch is staged (see
    /// `Store::run_batch`). So it is read before the staged batches'
    /// writes: the history minute a batch folds its samples into was
    /// nearly always written by the batch before, still staged, and the
    /// cache has it decoded.
    fn meta_cached<V: Clone>(
        &self,
        key: &[u8],
        cache: &Mutex<MetaCache<V>>,
        limit: usize,
        take: bool,
        decode: impl Fn(Option<&[u8]>) -> Result<V>,
    ) -> TxResult<V> {
        let written = (META, Key::new(key));
        if let Ok(found) = self.written_in_batch(&written, &decode) {
            return Ok(found?);
        }
        let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
        let cached = if take {
            lock().remove(key)
        } else {
            lock().get(key).cloned()
        };
        if let Some(cached) = cached {
            return Ok(cached);
        }
        if let Some(staged) = self.written_staged(&written, &decode) {
            return Ok(staged?);
        }
        let stored = self.store.read(META, key, &decode)??;
        remember(&mut lock(), limit, key.to_vec(), stored.clone());
        Ok(stored)
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
            let mut rollup = match self.rollup_at(&key, true)? {
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
            if let Some(mut later) = self.rollup_at(&next, false)? {
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
        if let Some(stored) = self.rollup_at(key, false)? {
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
    /// what the staged batches and the trees hold, absences included),
    /// then the staged batches' writes, then the tree, whose answer the
    /// cache keeps (see [`Tx::meta_cached`]). Every batch looks for the
    /// minute after the one it writes, which is nearly always absent: known
    /// absent, that costs no lookup in the overlay and the tree. `take`:
    /// the caller writes the minute again, so a cached one is moved out
    /// rather than cloned.
    fn rollup_at(&self, key: &[u8], take: bool) -> TxResult<Option<Rollup>> {
        self.meta_cached(
            key,
            &self.store.history_cache,
            HISTORY_CACHE,
            take,
            |bytes| bytes.map(codec::decode_rollup).transpose(),
        )
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
struct MergedEntries<'s> {
    stored: std::iter::Peekable<super::pending::Scan<'s>>,
    /// Every key of the prefix the writes touch: its value after them, or
    /// `None` if removed.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The entries present after the writes, in order.
    added: VecDeque<(Vec<u8>, Vec<u8>)>,
}

impl Iterator for MergedEntries<'_> {
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
    /// Wakes the batch threads, which lead and sync for async callers
    /// (see [`Store::run_worker`]).
    workers: Condvar,
}

/// How a waiting caller is woken (one each, so that a handover wakes only
/// the callers concerned).
enum Wake {
    /// A thread sleeping on its own [`Parker`]; it may lead.
    Thread(Arc<Parker>),
    /// An async task awaiting the operation's `Notify`; it never leads.
    Task,
}

type Waiter = (Arc<dyn PendingOp>, Wake);

/// A waiting thread caller's own wake-up. It sleeps without the batcher's
/// lock: a caller woken because its operation is done returns at once,
/// instead of waking only to wait for the lock that the thread that woke it
/// and the other callers it woke are taking. Only a caller woken to lead or
/// to sync takes the lock again.
#[derive(Default)]
struct Parker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Parker {
    /// Wakes the caller (now, or at its next [`Parker::wait`]).
    fn notify_one(&self) {
        *self.woken.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Sleeps until [`Parker::notify_one`] (at once if it came meanwhile).
    fn wait(&self) {
        let mut woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        while !*woken {
            woken = self.cv.wait(woken).unwrap_or_else(|p| p.into_inner());
        }
        *woken = false;
    }
}

#[derive(Default)]
struct BatchState {
    pending: Vec<Waiter>,
    leading: bool,
    stop: bool,
    /// Durable batches decided and encoded, in order, waiting for their
    /// frames to be synced ([`Store::sync`]).
    staged: VecDeque<Staged>,
    /// Someone is syncing a group of staged batches.
    syncing: bool,
    /// Staged batches not finished yet (those being synced included).
    in_flight: usize,
    /// Batch threads waiting for work, and signals sent to them that no
    /// wake-up has answered yet (see [`Store::wake_worker`]).
    idle_workers: usize,
    workers_signalled: usize,
}

impl BatchState {
    /// Whether a waiting caller should lead the next batch now.
    fn may_lead(&self) -> bool {
        !self.leading && !self.pending.is_empty() && self.in_flight < MAX_IN_FLIGHT
    }

    /// Whether a waiting caller should sync staged batches now.
    fn may_sync(&self) -> bool {
        !self.syncing && !self.staged.is_empty()
    }
}

/// Durable batches that may be staged at once: a leader decides the next
/// batch while these are written and synced, and waits past this many.
const MAX_IN_FLIGHT: usize = 8;

/// A durable batch decided and encoded, waiting for its journal frame to
/// be written and synced ([`Store::sync`]): only then do its writes join
/// the overlay of committed writes and its callers learn their outcomes.
/// Meanwhile the next batches are decided on top of its writes (the
/// store's `inflight` list, see [`Tx`]), so the `fdatasync` of one batch
/// overlaps the work of the next.
pub(crate) struct Staged {
    /// The journal frame; `None` for a batch that wrote nothing, which
    /// still waits for the batches before it (its operations may have read
    /// their writes).
    frame: Option<Vec<u8>>,
    /// The checkpoint is in this batch: once synced, the overlay goes to
    /// the trees, sled is flushed and the journal cut.
    checkpoint: bool,
    /// The batch's sequence number (a checkpoint's next one is its lap's
    /// carry, see [`Store::end_lap`]).
    seq: u64,
    /// The batch's events went into a chunk (the readers' view of the
    /// gathered events is updated as the leader's was).
    sealed: bool,
    first: u64,
    count: u64,
    next_event: u64,
    items: Vec<u8>,
    ops: Vec<Arc<dyn PendingOp>>,
    threads: Vec<Arc<Parker>>,
}

impl Batcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A batch being run: its writes and the events its operations emitted.
pub(crate) struct Running {
    writes: Writes,
    /// The writes of the batches staged before this one, not yet durable
    /// (see [`Tx`]), oldest first.
    inflight: Vec<Arc<Writes>>,
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
                inflight: &batch.inflight,
                own: RefCell::new(Writes::new()),
                deltas: RefCell::new(BTreeMap::new()),
                touched: RefCell::new(BTreeSet::new()),
                events: RefCell::new(TxEvents::default()),
                seal: std::cell::Cell::new(false),
                history: RefCell::new(BTreeMap::new()),
                rollups: RefCell::new(Rollups::new()),
                scanned: RefCell::new(Vec::new()),
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
                (
                    tx.events.into_inner(),
                    seal,
                    tx.history.into_inner(),
                    tx.scanned.into_inner(),
                ),
            )
        };
        let (drafts, seal, history, scanned) = drafts;
        match outcome {
            Ok(value) => {
                store.ready_starts.commit(scanned, &own);
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
            if let Some(Some(bytes)) = own.get_mut(&(JOBS, Key::new(&job_key(*job)))) {
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
    /// callers, on this thread (which may lead the batch, or sync staged
    /// batches, fsync included). Under `Sync` durability it returns after
    /// the batch is durable. `Ok(None)`: `f` gave up as stale.
    ///
    /// `f` may only read and write through the [`Tx`].
    pub(crate) fn transact<R, F>(&self, f: F) -> OpOutcome<R>
    where
        F: Fn(&Tx<'_>) -> TxResult<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        let op = Op::new(f);
        let as_pending: Arc<dyn PendingOp> = op.clone();
        let me = Arc::new(Parker::default());
        let mut state = self.batcher.lock();
        if state.stop {
            return Err(Error::Closed);
        }
        state
            .pending
            .push((as_pending, Wake::Thread(Arc::clone(&me))));
        while !op.done.load(Ordering::Acquire) {
            // Syncing first: while this thread waits in `fdatasync`, the
            // next leader (woken by the hand-over) decides the next batch.
            if state.may_sync() {
                state = self.sync(state, false);
            } else if state.may_lead() {
                state = self.lead(state, Some(&me));
            } else {
                // Whoever changes what this caller waits for (its
                // operation done, a batch to lead or to sync) wakes it
                // after the change: a wake-up that comes before the wait
                // is kept by the parker.
                drop(state);
                me.wait();
                if op.done.load(Ordering::Acquire) {
                    return op.take_outcome();
                }
                state = self.batcher.lock();
            }
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
            if state.may_lead() {
                self.wake_worker(&mut state);
            }
        }
        while !op.done.load(Ordering::Acquire) {
            op.notify.notified().await;
        }
        op.take_outcome()
    }

    /// Leads one batch: takes every waiting operation and runs them; a
    /// durable batch is then staged for its sync (its callers are answered
    /// by [`Store::sync`]), any other is committed and its callers woken.
    /// Then hands over to the next leader.
    /// `me`: the leading thread caller's wake-up (`None`: a batch thread).
    fn lead<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, BatchState>,
        me: Option<&Arc<Parker>>,
    ) -> std::sync::MutexGuard<'a, BatchState> {
        state.leading = true;
        let batch = std::mem::take(&mut state.pending);
        drop(state);
        let ops: Vec<Arc<dyn PendingOp>> = batch.iter().map(|(op, _)| Arc::clone(op)).collect();
        let started = std::time::Instant::now();
        let count = ops.len();
        let staged = self.run_batch(ops);
        self.commit_stats.batch(count, started.elapsed());
        let mut state = self.batcher.lock();
        state.leading = false;
        let threads = batch.into_iter().filter_map(|(_, wake)| match wake {
            Wake::Thread(parker) => Some(parker),
            Wake::Task => None,
        });
        match staged {
            Some(mut staged) => {
                staged.threads = threads.collect();
                // Someone must sync it: a leading thread caller with an
                // operation in it, or a leading batch thread, syncs it
                // itself once it stops leading; else a thread caller of
                // the batch (waiting, and unable to lead), or a batch
                // thread for a batch of tasks. A sync under way hands over
                // to the next one itself.
                let mine = me.is_none_or(|me| staged.threads.iter().any(|p| Arc::ptr_eq(p, me)));
                if !mine && !state.syncing {
                    match staged.threads.first() {
                        Some(parker) => parker.notify_one(),
                        None => self.wake_worker(&mut state),
                    }
                }
                state.staged.push_back(staged);
                state.in_flight += 1;
                #[cfg(test)]
                self.test_gate.arrive();
            }
            None => {
                // Woken after the lock is released (see `sync`).
                let threads: Vec<Arc<Parker>> = threads.collect();
                drop(state);
                for parker in &threads {
                    parker.notify_one();
                }
                state = self.batcher.lock();
            }
        }
        self.hand_over(&mut state);
        state
    }

    /// Wakes the next leader if a batch is waiting and may start: the
    /// oldest waiting thread, or a batch thread when the oldest waiter is a
    /// task.
    fn hand_over(&self, state: &mut BatchState) {
        if !state.may_lead() {
            return;
        }
        match state.pending.first() {
            Some((_, Wake::Thread(parker))) => parker.notify_one(),
            Some((_, Wake::Task)) => self.wake_worker(state),
            None => {}
        }
    }

    /// How many batch threads wait for work.
    #[cfg(test)]
    pub(crate) fn idle_workers(&self) -> usize {
        self.batcher.lock().idle_workers
    }

    /// Wakes a batch thread waiting for work, unless every one waiting was
    /// signalled already and has not woken yet: an operation that joins
    /// the pending ones while a woken thread gets going does not signal
    /// again (a `Condvar` signal is a system call even when nobody waits).
    fn wake_worker(&self, state: &mut BatchState) {
        if state.idle_workers > state.workers_signalled {
            state.workers_signalled += 1;
            self.batcher.workers.notify_one();
        }
    }

    /// Syncs the staged batches up to the next checkpoint (one `fdatasync`
    /// for all their frames), then, in order, makes their writes readable,
    /// publishes their events and answers their callers.
    /// `worker`: a batch thread syncs, which syncs the next staged batch
    /// itself if there is one.
    fn sync<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, BatchState>,
        worker: bool,
    ) -> std::sync::MutexGuard<'a, BatchState> {
        state.syncing = true;
        let mut group = Vec::new();
        while let Some(staged) = state.staged.pop_front() {
            let checkpoint = staged.checkpoint;
            group.push(staged);
            if checkpoint {
                break;
            }
        }
        drop(state);
        let started = std::time::Instant::now();
        let synced = self.sync_group(&group);
        if let Err(e) = &synced {
            // The frames may be in the journal and replayed at the next
            // open: stop until then (the batches staged after these were
            // decided on their writes, and fail too).
            tracing::error!(error = %e, "commit failed");
            self.poisoned.store(true, Ordering::Release);
            self.ready_starts.forget();
            self.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        for staged in &mut group {
            match &synced {
                Ok(()) => {
                    self.gather_published(staged.sealed, staged.first, staged.count, &staged.items);
                    self.publish(
                        staged.first,
                        staged.count,
                        staged.next_event,
                        std::mem::take(&mut staged.items),
                    );
                }
                Err(e) => {
                    for op in &staged.ops {
                        op.not_durable(e);
                    }
                }
            }
            for op in &staged.ops {
                op.finish();
            }
        }
        if synced.is_ok() {
            self.commit_stats.commit(
                group.iter().map(|staged| staged.ops.len()).sum(),
                started.elapsed(),
            );
        }
        let mut state = self.batcher.lock();
        state.syncing = false;
        state.in_flight = state.in_flight.saturating_sub(group.len());
        drop(state);
        // Woken after the lock is released, so that a woken caller does
        // not wake only to wait for the lock (each one's `done` is set
        // before, so a caller that has not slept yet will not).
        for staged in &group {
            for parker in &staged.threads {
                parker.notify_one();
            }
        }
        let mut state = self.batcher.lock();
        if state.may_sync() {
            // Whoever may sync next: a thread caller of the next staged
            // batch, or a batch thread for a batch of tasks (this one, if
            // it is one).
            match state.staged.front().and_then(|s| s.threads.first()) {
                Some(parker) => parker.notify_one(),
                None if !worker => self.wake_worker(&mut state),
                None => {}
            }
        }
        self.hand_over(&mut state);
        state
    }

    /// Writes the frames of `group` (staged batches in order, a checkpoint
    /// only last), syncs them once, then adds their writes to the overlay
    /// in order; at a checkpoint the overlay goes to the trees, sled is
    /// flushed and the journal cut.
    fn sync_group(&self, group: &[Staged]) -> Result<()> {
        #[cfg(test)]
        self.test_gate.wait_open();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Storage(crate::error::StorageError::new(
                "an earlier batch failed to commit; reopen the queue",
            )));
        }
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let frames: Vec<&[u8]> = group
            .iter()
            .filter_map(|staged| staged.frame.as_deref())
            .collect();
        if !frames.is_empty() {
            journal.write(&frames)?;
            if self.sync {
                let started = std::time::Instant::now();
                journal.sync()?;
                self.commit_stats.fdatasync(started.elapsed());
            }
        }
        for staged in group {
            if staged.frame.is_none() {
                continue;
            }
            {
                // Under the list's lock, so that a leader taking its view
                // finds these writes in the list or in the overlay.
                let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                let writes = inflight
                    .pop_front()
                    .ok_or_else(|| Error::Internal("a staged batch without its writes".into()))?;
                let writes = Arc::try_unwrap(writes).unwrap_or_else(|shared| (*shared).clone());
                if self.sync {
                    self.pending
                        .absorb(writes, |id| self.tree(id))
                        .map_err(storage)?;
                } else {
                    // Not synced yet: its removals wait for the flush.
                    self.pending.absorb_keeping_removals(writes);
                }
            }
            if staged.checkpoint {
                // The batch wrote the checkpoint, after the last frame of
                // the lap: the lap's writes go to the trees behind, and
                // the next lap to the other file.
                self.end_lap(&mut journal, staged.seq + 1)?;
            }
        }
        Ok(())
    }

    /// Ends a journal lap whose last batch (holding the checkpoint) is in
    /// the overlay. The next lap goes to the journal's other file, which
    /// holds the lap before this one: so first that lap's checkpoint must
    /// be finished (applied and flushed). Then the overlay is frozen and a
    /// thread applies it to the trees, the checkpoint key last (its tree
    /// sorts last), and flushes sled, while the next batches go on into a
    /// new layer. A crash before that flush replays this lap's frames
    /// (and the next lap's) from both files.
    ///
    /// Only if the lap before is still being applied when this one ends
    /// (its writes took longer than this whole lap) do batches wait here.
    ///
    /// The jobs still waiting at the lap's end are carried into the next
    /// lap instead (up to [`CARRY_MAX`] bytes, in lease order): their
    /// records and entries stay in the overlay's new layer, and are
    /// journaled again as the next lap's first frame, the batch `carry`
    /// (the sequence number the checkpoint kept), synced before the
    /// checkpoint starts. A job leased in the next lap then never costs
    /// the trees its waiting record, its ready, age and listing entries,
    /// nor their removals. A reopen replays the carry after the
    /// checkpoint like any batch (its writes are absolute); a crash before
    /// the checkpoint is in sled replays the lap before it, then the carry.
    fn end_lap(&self, journal: &mut journal::Journal, carry: u64) -> Result<()> {
        self.finish_behind()?;
        if !self.sync {
            // The lap's frames are durable before its writes (tombstones
            // included) go to the trees: sled may write them to disk at
            // any time.
            journal.sync()?;
        }
        // No batch adds writes meanwhile: they do it under the journal's
        // lock, which this holds.
        let mut carried_before = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = self
            .pending
            .with_current(|trees| pick_waiting(trees, CARRY_MAX, &carried_before));
        *carried_before = waiting
            .iter()
            .filter(|(tree, _)| *tree == JOBS)
            .map(|(_, key)| key.clone())
            .collect();
        drop(carried_before);
        self.pending
            .freeze()
            .map_err(|e| Error::Internal(e.into()))?;
        let carried = self.pending.carry(&waiting);
        journal.cut();
        let frame = codec::encode_slot(carry, 0, &[], &carried)?;
        // Written now, before the next lap's frames; synced by the
        // checkpoint before it writes anything to the trees (and by the
        // next sync of this file, under `Sync`).
        journal.write(&[&frame])?;
        self.gathered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal_at += journal::frame_len(frame.len());
        let carry_file = journal.current_file()?;
        let behind = self.behind_job(carry_file.try_clone().map_err(io)?)?;
        let spawned = std::thread::Builder::new()
            .name("queue-core-checkpoint".into())
            .spawn(move || behind.run());
        match spawned {
            Ok(handle) => {
                *self.behind.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                Ok(())
            }
            // No thread: the checkpoint is applied here, before the next
            // batch.
            Err(_) => self.behind_job(carry_file)?.run(),
        }
    }

    fn behind_job(&self, carry: std::fs::File) -> Result<Behind> {
        Ok(Behind {
            carry,
            pending: Arc::clone(&self.pending),
            trees: std::array::from_fn(|id| self.tree(u8::try_from(id).unwrap_or(u8::MAX)).clone()),
            db: self.db.clone(),
            log: self.log.try_clone().map_err(io)?,
        })
    }

    /// Waits for the checkpoint applying the last lap behind, if one is
    /// running, and returns how it ended.
    pub(crate) fn finish_behind(&self) -> Result<()> {
        let handle = self.behind.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle.map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(Error::Internal("the checkpoint thread panicked".into())),
        }
    }

    /// A batch thread's body, until [`Store::stop_workers`] and nothing is
    /// left: it does for async callers what a waiting thread caller does,
    /// syncing first, then leading. Under `Durability::Sync` there are two:
    /// the one that staged a batch syncs it at once (no hand-over to
    /// another thread between the two), while the other decides the next
    /// batch.
    pub(crate) fn run_worker(&self) {
        let mut state = self.batcher.lock();
        loop {
            if state.may_sync() {
                state = self.sync(state, true);
                continue;
            }
            if state.may_lead() {
                state = self.lead(state, None);
                continue;
            }
            if state.stop
                && state.pending.is_empty()
                && state.staged.is_empty()
                && !state.leading
                && !state.syncing
            {
                // The other batch thread, if waiting, stops too.
                self.batcher.workers.notify_all();
                return;
            }
            state.idle_workers += 1;
            state = self
                .batcher
                .workers
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
            state.idle_workers -= 1;
            // This wake-up answers one signal, if one was sent (a spurious
            // one makes the count low, which only costs a signal).
            state.workers_signalled = state.workers_signalled.saturating_sub(1);
        }
    }

    /// Stops the batch threads once nothing is pending, and the flush
    /// thread; later operations fail with [`Error::Closed`].
    pub(crate) fn stop_workers(&self) {
        self.batcher.lock().stop = true;
        self.batcher.workers.notify_all();
        let (stopped, told) = &self.flusher_stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        told.notify_all();
    }

    /// The flush thread's body under `Durability::Periodic`: every flush
    /// interval it syncs the journal ([`Store::sync_journal`]), until
    /// [`Store::stop_workers`] (close syncs it a last time).
    pub(crate) fn run_flusher(&self) {
        let Some(every) = self.flush_every else {
            return;
        };
        let (stopped, told) = &self.flusher_stop;
        let mut stop = stopped.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let deadline = std::time::Instant::now() + every;
            while !*stop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                stop = told
                    .wait_timeout(stop, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if *stop {
                return;
            }
            drop(stop);
            if let Err(e) = self.sync_journal() {
                tracing::error!(error = %e, "the periodic sync of the journal failed");
            }
            stop = stopped.lock().unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Under `Durability::Periodic`, where batches are answered once their
    /// frames are written: makes those frames durable (`fdatasync` of
    /// both journal files; a lap's end syncs its file too), then lets the
    /// removals of their batches, kept as tombstones in the overlay until
    /// now, reach the trees (see [`Pending::absorb_keeping_removals`]).
    /// A failed sync stops the store, as under `Sync`: the frames may be
    /// lost, and nothing tells which.
    ///
    /// [`Pending::absorb_keeping_removals`]: super::pending::Pending::absorb_keeping_removals
    pub(crate) fn sync_journal(&self) -> Result<()> {
        if self.sync {
            return Ok(());
        }
        // Taken first: every removal taken belongs to a batch whose frame
        // was written before it joined the overlay, so the sync covers it.
        let removals = self.pending.take_removals();
        let synced = self
            .journal_files
            .iter()
            .try_for_each(|file| {
                let started = std::time::Instant::now();
                file.sync_data()?;
                self.commit_stats.fdatasync(started.elapsed());
                Ok(())
            })
            .map_err(io);
        if let Err(e) = synced {
            self.poisoned.store(true, Ordering::Release);
            return Err(e);
        }
        self.pending
            .drop_removals(&removals, |id| self.tree(id))
            .map_err(storage)
    }

    fn run_batch(&self, batch: Vec<Arc<dyn PendingOp>>) -> Option<Staged> {
        if self.poisoned.load(Ordering::Acquire) {
            let e = Error::Storage(crate::error::StorageError::new(
                "an earlier batch failed to commit; reopen the queue",
            ));
            for op in &batch {
                op.not_durable(&e);
                op.finish();
            }
            return None;
        }
        let latest = self.assigned.load(Ordering::Acquire);
        let inflight: Vec<Arc<Writes>> = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut running = Running {
            writes: Writes::new(),
            inflight,
            items: Vec::new(),
            first: latest + 1,
            next_event: latest,
            seal: false,
            history: BTreeMap::new(),
            rollups: Rollups::new(),
        };
        for op in &batch {
            op.run(self, &mut running);
        }
        if let Err(e) = self.write_batch_history(&mut running) {
            // Nothing of the batch is written: its operations fail.
            tracing::error!(error = %e, "history of a batch could not be written");
            self.ready_starts.forget();
            for op in &batch {
                op.not_durable(&e);
                op.finish();
            }
            return None;
        }
        // The staged batches' writes are read no more: dropping this view
        // lets the syncer move them into the overlay instead of copying.
        let built_on_staged = !running.inflight.is_empty();
        running.inflight = Vec::new();
        let settings_written = running
            .writes
            .range((META, Key::new(&[keys::SETTINGS]))..(META, Key::new(&[keys::SETTINGS + 1])))
            .next()
            .is_some();
        let mut committed = Ok(None);
        if !running.writes.is_empty() || running.seal {
            committed = self.commit_batch(&mut running).map(Some);
            if committed.is_err() {
                // The batch could not be encoded, and the batches staged
                // after it would be decided on its writes: stop until a
                // reopen.
                self.poisoned.store(true, Ordering::Release);
                self.ready_starts.forget();
            }
        }
        let mut cache = self.history_cache.lock().unwrap_or_else(|p| p.into_inner());
        if committed.is_ok() {
            // The minutes as committed (or, staged, as the next batches
            // build on them; a failed sync stops the store).
            for (key, rollup) in std::mem::take(&mut running.rollups) {
                remember(&mut cache, HISTORY_CACHE, key, rollup);
            }
        } else {
            cache.clear();
        }
        drop(cache);
        if settings_written || committed.is_err() {
            self.settings_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        match committed {
            Ok(Some(mut staged)) => {
                self.assigned.store(running.next_event, Ordering::Release);
                staged.ops = batch;
                return Some(staged);
            }
            Ok(None) if built_on_staged => {
                // Nothing to write, but its operations may have read the
                // writes of staged batches: answered after them.
                return Some(Staged {
                    frame: None,
                    checkpoint: false,
                    seq: 0,
                    sealed: false,
                    first: running.first,
                    count: 0,
                    next_event: running.next_event,
                    items: Vec::new(),
                    ops: batch,
                    threads: Vec::new(),
                });
            }
            Ok(None) => {
                self.assigned.store(running.next_event, Ordering::Release);
                self.publish(
                    running.first,
                    running.count(),
                    running.next_event,
                    std::mem::take(&mut running.items),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                for op in &batch {
                    op.not_durable(&e);
                }
            }
        }
        for op in &batch {
            op.finish();
        }
        None
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
                inflight: &running.inflight,
                own: RefCell::new(Writes::new()),
                deltas: RefCell::new(BTreeMap::new()),
                touched: RefCell::new(BTreeSet::new()),
                events: RefCell::new(TxEvents::default()),
                seal: std::cell::Cell::new(false),
                history: RefCell::new(std::mem::take(&mut running.history)),
                rollups: RefCell::new(Rollups::new()),
                scanned: RefCell::new(Vec::new()),
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
    /// write-ahead record first, then (under `Sync`) its sync, then the
    /// writes join the overlay of committed writes ([`pending`]), which
    /// every read consults before the trees; the trees get them at the
    /// next checkpoint. Since the writes are readable only after the
    /// record is stored (and, under `Sync`, synced), readers never see a
    /// change that a crash could still take back (under `Periodic`, one
    /// that a crash of the process could).
    ///
    /// The batch is staged: the record is encoded as a frame of the
    /// journal, and its writing, sync and the rest are left to
    /// [`Store::sync`], while the next batch is decided on top of these
    /// writes (the `inflight` list).
    ///
    /// The batch's events go with the record (see [`codec`]). Once enough
    /// events are gathered, or an operation asks, or at a checkpoint, the
    /// batch also writes them as one chunk of the `events` tree.
    ///
    /// A checkpoint applies the overlay to the trees (the checkpoint key
    /// last, its tree sorts last) and forgets it, behind the next batches
    /// ([`Store::end_lap`]): when the journal's lap ends, or when the
    /// overlay passes [`PENDING_MAX`] bytes. (Before the journal took
    /// `Periodic` batches too, they wrote their records to 1,024 slots of
    /// the `wal` tree, and a record larger than 16 KiB in pieces with a
    /// checkpoint applied at once: about forty jobs' batch, so at 64
    /// callers most periodic batches stopped to write the whole overlay.)
    ///
    /// [`pending`]: super::pending
    fn commit_batch(&self, running: &mut Running) -> Result<Staged> {
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let seq = gathered.next;
        let count = gathered.count + running.count();
        let checkpoint =
            gathered.journal_at >= journal::CUT_AT || self.pending.bytes() >= PENDING_MAX;
        // Events leave the write-ahead records at a checkpoint: they go
        // into a chunk then at the latest.
        let sealed = count >= CHUNK_EVENTS || running.seal || checkpoint;
        if sealed {
            Self::add_chunk(&gathered, running);
        }
        if checkpoint {
            Self::add_checkpoint(running, seq);
        }
        let record = encode(&running.writes)?;
        let items: &[u8] = if sealed { &[] } else { &running.items };
        // Staged: the frame is written (and under `Sync` synced) before
        // anything is readable or answered.
        let frame = codec::encode_slot(seq, running.first, items, &record)?;
        gathered.journal_at = if checkpoint {
            0
        } else {
            gathered.journal_at + journal::frame_len(frame.len())
        };
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Arc::new(std::mem::take(&mut running.writes)));
        // A checkpoint keeps the next sequence number for its lap's carry.
        gathered.next = if checkpoint { seq + 2 } else { seq + 1 };
        gather(
            &mut gathered,
            sealed,
            running.first,
            running.count(),
            &running.items,
        );
        if checkpoint {
            gathered.checkpoint = seq;
        }
        Ok(Staged {
            frame: Some(frame),
            checkpoint,
            seq,
            sealed,
            first: running.first,
            count: running.count(),
            next_event: running.next_event,
            items: running.items.clone(),
            ops: Vec::new(),
            threads: Vec::new(),
        })
    }

    /// Updates the readers' view of the events not yet in a chunk as a
    /// durable batch leaves them.
    fn gather_published(&self, sealed: bool, first: u64, count: u64, items: &[u8]) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        gather(&mut published, sealed, first, count, items);
    }

    /// Adds to the batch's writes the chunk of the gathered and its own
    /// events, if any.
    fn add_chunk(gathered: &Gathered, running: &mut Running) {
        let first = if gathered.count > 0 {
            gathered.first
        } else {
            running.first
        };
        if gathered.count + running.count() > 0 {
            running.writes.insert(
                (EVENTS, Key::new(&event_key(first))),
                Some(codec::chunk_value(&[&gathered.items, &running.items])),
            );
        }
    }

    /// Adds to the batch `seq`'s writes the checkpoint `seq`. It is
    /// written last of all (its tree sorts last), so a checkpoint on disk
    /// means the writes before it are too.
    fn add_checkpoint(running: &mut Running, seq: u64) {
        running.writes.insert(
            (keys::WAL, Key::new(keys::CHECKPOINT)),
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
            self.write_tree(*tree, key, value.as_deref())
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
            self.write_tree(tree, &key, value.as_deref())
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Announces a durable batch's events (`count` from `first`, the last
    /// `next_event`): the in-memory tail and the subscribers' wake-up.
    fn publish(&self, first: u64, count: u64, next_event: u64, items: Vec<u8>) {
        if count == 0 {
            return;
        }
        self.event_seq.store(next_event, Ordering::Release);
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(first, count, items);
        self.latest.send_replace(next_event);
    }
}

/// A journal lap's checkpoint, applied to the trees behind the batches
/// that follow it (see [`Store::end_lap`]): what it needs of the store.
struct Behind {
    /// The next lap's journal file, whose first frame (the carry) must be
    /// durable before the checkpoint is.
    carry: std::fs::File,
    pending: Arc<pending::Pending>,
    /// The trees by id.
    trees: [sled::Tree; pending::TREES],
    db: sled::Db,
    /// sled's log file, for the fsync that sled's own flush leaves out.
    log: std::fs::File,
}

impl Behind {
    /// Writes the frozen layer of the overlay to the trees, flushes sled
    /// (durably), then lets the overlay forget the layer.
    fn run(self) -> Result<()> {
        let outcome = self
            .carry
            .sync_data()
            .map_err(io)
            .and_then(|()| {
                self.pending
                    .apply_frozen(|tree, key, value| {
                        let tree = &self.trees[usize::from(tree)];
                        match value {
                            Some(value) => tree.insert(key, value).map(drop),
                            None => tree.remove(key).map(drop),
                        }
                    })
                    .map_err(storage)
            })
            .and_then(|()| {
                let started = std::time::Instant::now();
                watched(
                    || self.db.flush().map(drop),
                    FLUSH_WARN_EVERY,
                    move || {
                        tracing::error!(
                            waited_s = started.elapsed().as_secs(),
                            "the checkpoint's flush of sled has not returned; every \
                             write waits for it at the next lap's end (the journal \
                             keeps the lap: a restart replays it)"
                        );
                    },
                )
                .map_err(storage)
            })
            .and_then(|()| self.log.sync_data().map_err(io));
        match outcome {
            Ok(()) => {
                self.pending.release_frozen();
                Ok(())
            }
            Err(e) => {
                // The layer stays readable; the next lap's end reports it,
                // and the store stops then (the journal still holds both
                // laps for a reopen).
                tracing::error!(error = %e, "checkpoint failed");
                Err(e)
            }
        }
    }
}

/// How long a checkpoint's flush of sled may take before [`watched`] says
/// so (and again after each further such wait). A lap's flush takes well
/// under a second here; sled 0.34.7 as published could wait forever (see
/// vendor/sled/PATCHED.md).
const FLUSH_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `work` on this thread while a watchdog thread calls `warn` each
/// time `every` passes before it returns: a stall that would otherwise be
/// silent (every caller waiting, no error) shows in the log. Without a
/// thread to spare, `work` runs unwatched.
pub(crate) fn watched<T>(
    work: impl FnOnce() -> T,
    every: std::time::Duration,
    warn: impl Fn() + Send + 'static,
) -> T {
    let (done, watching) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::Builder::new()
        .name("queue-core-watchdog".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watching.recv_timeout(every)
            {
                warn();
            }
        });
    let outcome = work();
    drop(done);
    if let Ok(watchdog) = watchdog {
        let _ = watchdog.join();
    }
    outcome
}

/// Events kept in memory for subscribers that keep up (more than every
/// event not yet in a chunk: fewer than [`CHUNK_EVENTS`]).
pub(crate) const TAIL: u64 = 4096;

/// The bytes of waiting jobs' writes a lap's end carries into the next lap
/// at most (see [`Store::end_lap`]): a quarter of a lap, so that a standing
/// backlog costs the journal at most that much again per lap.
pub(crate) const CARRY_MAX: usize = 8 * 1024 * 1024;

/// The writes of the jobs waiting at a lap's end that the lap carries
/// into the next one: in lease order (the ready entries, then the groups'
/// own), for each job its record, its ready (or group) entry, its age
/// entry and its listing entry, those the overlay holds, while the total
/// stays within `max` bytes. The keys come from the ready entry (queue and
/// lease order), without decoding the record: the lap's end holds every
/// batch back while it picks. A job whose record the overlay does not
/// hold (it is in the trees already) is left to the trees, and so are its
/// other entries (an idempotency key, a correlation, a deadline). So is a
/// job whose record key is in `before` (the records the last lap carried):
/// a job still waiting after a whole lap is carried once, not lap after
/// lap (a standing backlog, or a paused queue, would otherwise cost the
/// journal its first `max` bytes again at every lap's end).
pub(crate) fn pick_waiting(
    trees: &[pending::TreeWrites; pending::TREES],
    max: usize,
    before: &std::collections::HashSet<Vec<u8>>,
) -> Vec<(u8, Vec<u8>)> {
    let mut picked = Vec::new();
    let mut bytes = 0usize;
    let (Some(index), Some(jobs)) = (trees.get(usize::from(INDEX)), trees.get(usize::from(JOBS)))
    else {
        return picked;
    };
    let held = |tree: u8, key: &[u8]| -> Option<usize> {
        match trees.get(usize::from(tree)).and_then(|map| map.get(key)) {
            Some(Some(value)) => Some(key.len() + value.len()),
            _ => None,
        }
    };
    for family in [keys::READY, keys::GROUP_READY] {
        let live = index
            .range::<[u8], _>((
                Bound::Included(&[family][..]),
                Bound::Excluded(&[family + 1][..]),
            ))
            .filter(|(_, value)| value.is_some());
        for (key, _) in live {
            // family, queue, 0, (group,) lease order: priority, run_at, id.
            let Some(order) = key
                .len()
                .checked_sub(ORDER_LEN)
                .and_then(|at| key.get(at..))
            else {
                continue;
            };
            let Some(queue) = key
                .get(1..)
                .and_then(|rest| rest.iter().position(|b| *b == 0))
                .and_then(|end| key.get(1..=end))
                .and_then(|queue| std::str::from_utf8(queue).ok())
            else {
                continue;
            };
            let Some(id) = keys::u64_at(order, 12).map(JobId::from_u64) else {
                continue;
            };
            let record = job_key(id).to_vec();
            if before.contains(&record) {
                continue;
            }
            let Some(record_bytes) = jobs
                .get(record.as_slice())
                .and_then(|value| value.as_ref())
                .map(|value| record.len() + value.len())
            else {
                continue;
            };
            let age = keys::age_key_of(queue, order);
            let listing = keys::state_key(queue, JobState::Ready, id);
            let mut own = vec![(INDEX, key.to_vec())];
            let mut size = record_bytes + key.len();
            for (tree, key) in [(INDEX, age), (INDEX, listing)] {
                if let Some(n) = held(tree, &key) {
                    size += n;
                    own.push((tree, key));
                }
            }
            if bytes + size > max {
                return picked;
            }
            bytes += size;
            picked.push((JOBS, record));
            picked.extend(own);
        }
    }
    picked
}

/// The bytes of committed writes the overlay's current layer holds (see
/// [`pending`](super::pending)) past which the next batch applies them to
/// the trees. It bounds the overlay's memory: a lap of the journal
/// ([`journal::CUT_AT`]) holds about as much, so under `Sync` a lap ends
/// first, and the overlay holds at most two of them (the current layer and
/// the frozen one being applied).
pub(crate) const PENDING_MAX: usize = 32 * 1024 * 1024;

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
    /// Where the next journal frame goes, as the staged batches leave it
    /// (`Durability::Sync`; a new lap starts at every open).
    pub(crate) journal_at: u64,
}

/// Adds a batch's events to `gathered` (events committed but not yet in a
/// chunk), or empties it when the batch wrote them all into a chunk.
fn gather(gathered: &mut Gathered, sealed: bool, first: u64, count: u64, items: &[u8]) {
    if sealed {
        gathered.items.clear();
        gathered.count = 0;
    } else if count > 0 {
        if gathered.count == 0 {
            gathered.first = first;
        }
        gathered.items.extend_from_slice(items);
        gathered.count += count;
    }
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

#[cfg(test)]
mod tests {
    use super::Parker;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Starts a wait on `parker` on a thread of its own, then runs `wake`:
    /// whether the wait returned (within a deadline: not a sleep, the
    /// answer comes as soon as the wait returns).
    fn wait_returns_after(parker: &Arc<Parker>, wake: impl FnOnce(&Parker)) -> bool {
        let (tx, rx) = mpsc::channel();
        let waiter = Arc::clone(parker);
        std::thread::spawn(move || {
            waiter.wait();
            let _ = tx.send(());
        });
        wake(parker);
        rx.recv_timeout(Duration::from_secs(30)).is_ok()
    }

    #[test]
    fn a_wake_up_before_the_wait_is_kept_and_used_once() {
        let parker = Arc::new(Parker::default());
        parker.notify_one();
        assert!(
            wait_returns_after(&parker, |_| {}),
            "a wake-up that came before the wait was lost"
        );
        // Used up: the next wait sleeps until the next wake-up.
        assert!(
            !*parker.woken.lock().unwrap(),
            "a wake-up was used and kept for the next wait"
        );
        assert!(
            wait_returns_after(&parker, |p| p.notify_one()),
            "a sleeping waiter was not woken"
        );
    }
}
