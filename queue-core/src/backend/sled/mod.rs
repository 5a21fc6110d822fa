//! The embedded backend on sled, the only module that names it.
//!
//! Layout: [`keys`] (trees, keys and the entries derived from records),
//! [`codec`] (versioned records), [`batch`] (group commit through a
//! write-ahead log that also holds the newest events), [`verify`] (the
//! consistency check).
//!
//! Durability: sled's `flush` only calls `sync_file_range`, which neither
//! flushes the device cache nor the file size, and sled never syncs its
//! blob files. Every flush here is therefore followed by an `fdatasync` of
//! sled's log, and segments of 16 MiB with a 1.5 MiB payload cap keep every
//! record inside the log.

mod batch;
pub(crate) mod codec;
mod journal;
mod key;
mod keys;
mod pending;
mod starts;
mod verify;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sled::{IVec, Tree};
use tokio::sync::watch;

use self::batch::{Batcher, Gathered, Prepared, PreparedSchedule, Tail, TxError, Writes};
use self::key::Key;
use self::keys::{
    AGE, COUNT, EVENT_SEQ, EVENTS, INDEX, JOBS, META, PAUSED_V1, SETTINGS, event_key, id_at_end,
    idem_key, job_key, queue_prefix, settings_key, timer_key, u64_at,
};
use super::{
    Backend, BoxFuture, Change, Commit, Committed, Counts, Due, EventBounds, HistoryRange, Loaded,
    LoadedSchedule, Mode, Page, Policy,
};
use crate::error::StorageError;
use crate::rules::lease::{LeasePlan, Offer};
use crate::rules::{Deadline, TimerKind};
use crate::settings::QueueSettings;
use crate::{Config, Durability, Error, Event, JobId, LeaseId, Result, Storage, Verification};

/// sled log segment size. sled writes values larger than a quarter segment
/// to separate blob files that it never fsyncs; at 16 MiB every record the
/// payload limit allows stays inside the log.
const SEGMENT_SIZE: usize = 16 * 1024 * 1024;

/// Largest payload (and result) a [`Config`] may allow: a record holds both
/// plus small fields and must stay below sled's blob threshold (a quarter
/// of [`SEGMENT_SIZE`]).
const MAX_PAYLOAD_LIMIT: usize = crate::MAX_PAYLOAD_LIMIT;
const _: () = assert!(2 * MAX_PAYLOAD_LIMIT + 64 * 1024 < SEGMENT_SIZE / 4);

/// The layout version of the trees, kept under [`FORMAT_KEY`] in sled's
/// default tree. Format 1 (the first release) kept paused flags instead of
/// settings records and had no event log; format 2 (up to the operator
/// tools) had no listing entries (`j`, `o`) and kept the dead-letter list
/// in `d`; format 3 (up to the journal) wrote durable batches only into
/// sled's own log. Format 4 adds the `journal` file: a durable batch may be
/// only there until sled is flushed, so a build that does not read the
/// journal must refuse the directory (it would miss those batches after a
/// crash), which the format number makes it do. Format 5 adds the
/// journal's second file, `journal-2`: its laps alternate between the two,
/// so a build that reads only the first must refuse it too. Each older
/// format is upgraded at open, one step after the other.
const FORMAT_VERSION: u8 = 5;
const FORMAT_KEY: &[u8] = b"format";

/// The most entries one batch of a format upgrade writes.
const UPGRADE_BATCH: usize = 10_000;

pub(crate) fn storage(e: sled::Error) -> Error {
    Error::Storage(StorageError::from_source(e))
}

fn io(e: std::io::Error) -> Error {
    Error::Storage(StorageError::from_source(e))
}

/// The sled database, its trees and the batch machinery.
pub(crate) struct Store {
    db: sled::Db,
    /// The write-ahead log: slots, pieces of large records, the checkpoint.
    wal: Tree,
    /// Committed writes not yet in the trees (see [`pending`]): every read
    /// goes through [`Store::get`] and [`Store::scan`], which look here
    /// first. Shared with the checkpoint that applies its frozen layer
    /// behind (see [`Store::sync_group`]).
    pending: Arc<pending::Pending>,
    /// The checkpoint of the last journal lap, applying it to the trees
    /// behind (`Durability::Sync`): joined before the next lap ends, and
    /// at close.
    behind: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    /// Set when a batch could not be applied: the trees may be half-written
    /// until a reopen replays the write-ahead log, so nothing else is done.
    poisoned: AtomicBool,
    /// sled's log file, for the fsync that sled's own flush leaves out.
    log: File,
    /// The write-ahead log of durable batches (see [`journal`]); read at
    /// every open, written only under `Durability::Sync`.
    journal: Mutex<journal::Journal>,
    /// The journal's frames read at open, until they are replayed.
    journal_frames: Mutex<Vec<Vec<u8>>>,
    /// The journal's two files, synced by the flush thread under
    /// `Durability::Periodic` (see [`Store::sync_journal`]).
    journal_files: [File; 2],
    /// Whether a batch is flushed before its callers return.
    sync: bool,
    /// Under `Durability::Periodic`, how often the flush thread syncs the
    /// journal; told to stop at close.
    flush_every: Option<std::time::Duration>,
    flusher_stop: (Mutex<bool>, std::sync::Condvar),
    batcher: Batcher,
    /// How commits were grouped (see [`crate::CommitStats`]).
    commit_stats: crate::commit_stats::CommitCounters,
    /// The id of the latest event committed.
    event_seq: AtomicU64,
    /// The batch sequence and the events not yet in a chunk of the
    /// `events` tree as the batch leader sees them (staged batches
    /// included).
    gathered: Mutex<Gathered>,
    /// The events not yet in a chunk as readers see them: those of durable
    /// batches.
    published: Mutex<Gathered>,
    /// The writes of staged batches (decided, their frames not yet synced),
    /// oldest first: the next batches build on them, readers do not see
    /// them (see `batch::Staged`).
    inflight: Mutex<std::collections::VecDeque<Arc<Writes>>>,
    /// Where each queue's lease scan may start (see [`starts`]).
    ready_starts: starts::Starts,
    /// The record keys of the jobs the last lap's end carried into the
    /// current lap (see `Store::end_lap`).
    carried: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// The id of the latest event given to a batch (staged ones included).
    assigned: AtomicU64,
    /// Lets a test hold syncs back.
    #[cfg(test)]
    test_gate: pending::TestGate,
    /// The latest events, for subscribers that keep up.
    tail: Mutex<Tail>,
    /// Wakes event subscribers with the latest event id.
    latest: watch::Sender<u64>,
    jobs: Tree,
    index: Tree,
    timers: Tree,
    meta: Tree,
    events: Tree,
    /// How long history minutes are kept, in ms; 0: no history is written.
    history_ms: u64,
    /// Where the sweep over every queue's history minutes resumes (the
    /// last key it looked at; `None`: from the start). A hint only.
    history_sweep: Mutex<Option<Vec<u8>>>,
    /// The history minutes the last batches wrote or read, decoded, as the
    /// trees hold them (`None`: absent): a batch folds its samples into
    /// them without reading and decoding them again (that was a fifth of a
    /// batch's instructions). Only the batch leader writes history
    /// minutes, and it updates this once its batch is staged.
    history_cache: Mutex<batch::HistoryCache>,
    /// The settings of the queues the last batches read, as the trees hold
    /// them (see [`batch::Tx::settings`]); emptied by a batch that writes
    /// any.
    settings_cache: Mutex<batch::SettingsCache>,
}

impl Drop for Store {
    /// A checkpoint still applying a lap behind holds sled open: it
    /// finishes first, so that the directory can be opened again at once.
    fn drop(&mut self) {
        if let Err(e) = self.finish_behind() {
            tracing::error!(error = %e, "the last checkpoint failed");
        }
    }
}

impl Store {
    fn open(path: &std::path::Path, cache_capacity: u64, durability: Durability) -> Result<Store> {
        // Flushes of sled are explicit (batches reach the trees at a
        // checkpoint, which flushes and syncs them); sled's own periodic
        // flush stays on as a backstop for the rare write that no caller
        // waits for.
        let sled_config = sled::Config::new()
            .path(path)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(cache_capacity)
            .flush_every_ms(Some(1000));
        let db = open_waiting_for_lock(&sled_config, path)?;
        let format = match db.get(FORMAT_KEY).map_err(storage)? {
            None => {
                db.insert(FORMAT_KEY, &[FORMAT_VERSION]).map_err(storage)?;
                FORMAT_VERSION
            }
            Some(v) if matches!(v.as_ref(), [1..=FORMAT_VERSION]) => v[0],
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "data directory has format {v:?}; this build reads formats 1 to \
                     {FORMAT_VERSION} (was it written by a newer release?)"
                )));
            }
        };
        // The fdatasync target, and one sync of the directory so that the
        // files themselves are durable.
        let log = File::open(path.join("db")).map_err(io)?;
        File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
        let (journal, journal_frames) = journal::Journal::open(path)?;
        let journal_files = journal.handles()?;
        let open_tree = |name: &str| db.open_tree(name).map_err(storage);
        let store = Store {
            wal: open_tree("wal")?,
            pending: Arc::new(pending::Pending::default()),
            behind: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            log,
            journal: Mutex::new(journal),
            journal_frames: Mutex::new(journal_frames),
            journal_files,
            sync: durability == Durability::Sync,
            flush_every: match durability {
                Durability::Sync => None,
                Durability::Periodic(ms) => Some(std::time::Duration::from_millis(ms.max(1))),
            },
            flusher_stop: (Mutex::new(false), std::sync::Condvar::new()),
            batcher: Batcher::default(),
            commit_stats: crate::commit_stats::CommitCounters::default(),
            event_seq: AtomicU64::new(0),
            gathered: Mutex::new(Gathered::default()),
            published: Mutex::new(Gathered::default()),
            inflight: Mutex::new(std::collections::VecDeque::new()),
            ready_starts: starts::Starts::default(),
            carried: Mutex::new(std::collections::HashSet::new()),
            assigned: AtomicU64::new(0),
            #[cfg(test)]
            test_gate: pending::TestGate::default(),
            tail: Mutex::new(Tail::default()),
            latest: watch::Sender::new(0),
            jobs: open_tree("jobs")?,
            index: open_tree("index")?,
            timers: open_tree("timers")?,
            meta: open_tree("meta")?,
            events: open_tree("events")?,
            history_ms: 0,
            history_sweep: Mutex::new(None),
            history_cache: Mutex::new(std::collections::HashMap::new()),
            settings_cache: Mutex::new(std::collections::HashMap::new()),
            db,
        };
        let (slot_events, last_batch) = store.replay_wal()?;
        // Every batch the journal held is now in the trees, flushed, and
        // behind the checkpoint: its next frame starts a new lap.
        store.recover_events(slot_events, last_batch)?;
        if format < 2 {
            store.upgrade_from_format_1()?;
        }
        if format < 3 {
            store.upgrade_from_format_2()?;
        }
        if format < FORMAT_VERSION {
            // Nothing to convert: a format-3 directory has no journal yet,
            // a format-4 one no second journal file (an empty one reads
            // as no frames). The format key goes first, durably, before any
            // batch is acknowledged through the journal.
            store
                .db
                .insert(FORMAT_KEY, &[FORMAT_VERSION])
                .map_err(storage)?;
            store.flush_now()?;
            tracing::info!(
                "upgraded the data directory to format {FORMAT_VERSION} (the journal's two files)"
            );
        }
        // The trees are complete: from here on, keys of jobs whose ids
        // are generated from now on are known absent from them.
        let past_stored = match store.jobs.last().map_err(storage)? {
            Some((key, _)) => keys::u64_at(&key, 0).map_or(0, |id| id.saturating_add(1)),
            None => 0,
        };
        let next_id = store.db.generate_id().map_err(storage)?;
        store.pending.set_fresh_from(next_id.max(past_stored));
        Ok(store)
    }

    /// Format 1 → 2: paused flags become settings records (format 1 had no
    /// other settings and no event log). One atomic batch, then the format
    /// key; a crash in between redoes the (idempotent) batch.
    fn upgrade_from_format_1(&self) -> Result<()> {
        let mut writes = Writes::new();
        for key in self.meta.scan_prefix([PAUSED_V1]).keys() {
            let key = key.map_err(storage)?;
            let queue = std::str::from_utf8(&key[1..])
                .map_err(|_| Error::Corrupt(format!("bad paused key {key:?}")))?;
            let settings = QueueSettings {
                paused: true,
                ..QueueSettings::default()
            };
            writes.insert((META, Key::new(&key)), None);
            writes.insert(
                (META, settings_key(queue).into()),
                Some(codec::encode_settings(&settings)?),
            );
        }
        self.commit_upgrade(&writes)?;
        self.db.insert(FORMAT_KEY, &[2]).map_err(storage)?;
        self.flush_now()?;
        tracing::info!(
            paused = writes.len() / 2,
            "upgraded the data directory to format 2"
        );
        Ok(())
    }

    /// Format 2 → 3: the listing entries (`j` by queue, state and id for
    /// every job; `o` by correlation id and id for every job that has one)
    /// are built from the records, and format 2's dead-letter entries (`d`,
    /// which `j` replaces) are removed; then the format key.
    ///
    /// Until the format key says 3, the directory is upgraded again at the
    /// next open, from the records: the step first removes any `j` and `o`
    /// entry already there (left by an interrupted upgrade, perhaps since
    /// changed by a format-2 build), so an interrupted upgrade leaves
    /// nothing the next one does not redo, and no reader of this build sees
    /// a directory half upgraded. Its writes go through the write-ahead
    /// log in batches of at most [`UPGRADE_BATCH`] entries, so that its
    /// memory does not grow with the store.
    fn upgrade_from_format_2(&self) -> Result<()> {
        let mut writes = Writes::new();
        let flush = |writes: &mut Writes, force: bool| -> Result<()> {
            if force || writes.len() >= UPGRADE_BATCH {
                self.commit_upgrade(writes)?;
                writes.clear();
            }
            Ok(())
        };
        for family in [keys::STATE, keys::CORRELATION] {
            for key in self.index.scan_prefix([family]).keys() {
                writes.insert((INDEX, Key::new(&key.map_err(storage)?)), None);
                flush(&mut writes, false)?;
            }
        }
        flush(&mut writes, true)?;
        let mut jobs = 0u64;
        for bytes in self.jobs.iter().values() {
            let (job, _) = codec::decode_job(&bytes.map_err(storage)?)?;
            writes.insert(
                (INDEX, keys::state_key(&job.queue, job.state, job.id).into()),
                Some(Vec::new()),
            );
            if let Some(correlation_id) = &job.correlation_id {
                writes.insert(
                    (INDEX, keys::correlation_key(correlation_id, job.id).into()),
                    Some(Vec::new()),
                );
            }
            jobs += 1;
            flush(&mut writes, false)?;
        }
        for key in self.index.scan_prefix([keys::DEAD_V2]).keys() {
            writes.insert((INDEX, Key::new(&key.map_err(storage)?)), None);
            flush(&mut writes, false)?;
        }
        flush(&mut writes, true)?;
        self.db.insert(FORMAT_KEY, &[3]).map_err(storage)?;
        self.flush_now()?;
        tracing::info!(jobs, "upgraded the data directory to format 3");
        Ok(())
    }

    /// Commits the writes of an upgrade step as one batch of the
    /// write-ahead log (nothing when there are none).
    fn commit_upgrade(&self, writes: &Writes) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let record = batch::encode(writes)?;
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_pieces(writes, &record, gathered.next)?;
        gathered.next += 1;
        Ok(())
    }

    /// After a restart: the events still waiting in the write-ahead slots
    /// (newer than the last chunk, or than what pruning removed) go into a
    /// chunk of their own, then the checkpoint moves past every slot seen,
    /// so that the log is whole again and no slot needs replaying.
    fn recover_events(&self, mut slot_events: Vec<Event>, last_batch: u64) -> Result<()> {
        let pruned_upto = match self.meta.get(EVENT_SEQ).map_err(storage)? {
            Some(bytes) => keys::decode_u64(&bytes)?,
            None => 0,
        };
        let chunked = match self.events.last().map_err(storage)? {
            Some((key, value)) => last_event(&key, &value)?.0,
            None => 0,
        }
        .max(pruned_upto);
        slot_events.retain(|event| event.event_id > chunked);
        slot_events.sort_by_key(|event| event.event_id);
        slot_events.dedup_by_key(|event| event.event_id);
        let mut latest = chunked;
        if let Some(first) = slot_events.first() {
            let contiguous = slot_events
                .iter()
                .zip(first.event_id..)
                .all(|(event, id)| event.event_id == id);
            if first.event_id != chunked + 1 || !contiguous {
                tracing::error!(
                    after = chunked,
                    first = first.event_id,
                    "the event log has a gap"
                );
            }
            if let Some(last) = slot_events.last() {
                latest = last.event_id;
            }
            self.events
                .insert(
                    event_key(first.event_id),
                    codec::encode_chunk(&slot_events)?,
                )
                .map_err(storage)?;
        }
        // After the chunk: a checkpoint on disk means the chunk is too.
        self.wal
            .insert(keys::CHECKPOINT, &last_batch.to_be_bytes())
            .map_err(storage)?;
        self.flush_now()?;
        {
            let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
            gathered.checkpoint = last_batch;
            gathered.next = last_batch + 1;
        }
        self.event_seq.store(latest, Ordering::Release);
        self.assigned.store(latest, Ordering::Release);
        self.latest.send_replace(latest);
        Ok(())
    }

    fn tree(&self, id: u8) -> &Tree {
        match id {
            JOBS => &self.jobs,
            INDEX => &self.index,
            keys::TIMERS => &self.timers,
            EVENTS => &self.events,
            keys::WAL => &self.wal,
            _ => &self.meta,
        }
    }

    /// Writes `key` of `tree` directly (`None` removes it), bypassing the
    /// overlay: for checkpoints, replays and records in pieces.
    fn write_tree(&self, tree: u8, key: &[u8], value: Option<&[u8]>) -> sled::Result<()> {
        match value {
            Some(value) => {
                self.pending.stored_directly(tree, key);
                self.tree(tree).insert(key, value).map(drop)
            }
            None => self.tree(tree).remove(key).map(drop),
        }
    }

    /// The committed value of `key` in `tree`: the overlay's write, else
    /// the tree's.
    fn get(&self, tree: u8, key: &[u8]) -> Result<Option<IVec>> {
        match self.pending.get(tree, key) {
            Some(value) => Ok(value),
            None => self.stored(tree, key),
        }
    }

    /// The tree's value of `key`, for a read the overlay missed: none
    /// without a lookup for a key of a job newer than every lap's end
    /// (asked after the miss, see `Pending::never_stored`).
    fn stored(&self, tree: u8, key: &[u8]) -> Result<Option<IVec>> {
        if self.pending.never_stored(tree, key) {
            return Ok(None);
        }
        self.tree(tree).get(key).map_err(storage)
    }

    /// `read` of the committed value of `key` in `tree`, as [`Store::get`]
    /// but without copying a value the overlay holds (a job record, read
    /// to decode it or to check its revision).
    fn read<T>(&self, tree: u8, key: &[u8], read: impl Fn(Option<&[u8]>) -> T) -> Result<T> {
        if let Some(value) = self.pending.read(tree, key, &read) {
            return Ok(value);
        }
        Ok(read(self.stored(tree, key)?.as_deref()))
    }

    /// The committed entries of `tree` in a range, in key order.
    fn scan(&self, tree: u8, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> pending::Scan<'_> {
        pending::Scan::new(&self.pending, self.tree(tree), tree, from, to)
    }

    /// The committed entries of `tree` whose keys start with `prefix`.
    fn scan_prefix(&self, tree: u8, prefix: &[u8]) -> pending::Scan<'_> {
        self.scan(tree, Bound::Included(prefix.to_vec()), prefix_end(prefix))
    }

    /// The last committed entry of `tree` in a range.
    fn last_in(
        &self,
        tree: u8,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Result<Option<(IVec, IVec)>> {
        self.pending
            .last_in(self.tree(tree), tree, from, to)
            .map_err(storage)
    }

    /// Makes everything written so far durable: sled's flush writes its
    /// buffers, the fdatasync pushes them (and the file size) through the
    /// device cache.
    fn flush_now(&self) -> Result<()> {
        self.db.flush().map_err(storage)?;
        self.log.sync_data().map_err(io)?;
        Ok(())
    }

    fn load(&self, id: JobId) -> Result<Option<Loaded>> {
        self.read(JOBS, &job_key(id), |bytes| {
            bytes
                .map(|bytes| {
                    let (job, revision) = codec::decode_job(bytes)?;
                    Ok(Loaded { job, revision })
                })
                .transpose()
        })?
    }

    fn find_idempotent(&self, queue: &str, key: &str) -> Result<Option<Loaded>> {
        match self.get(INDEX, &idem_key(queue, key))? {
            Some(value) => {
                let id = u64_at(&value, 0).map(JobId::from_u64).ok_or_else(|| {
                    Error::Corrupt(format!("bad idempotency entry in queue {queue}"))
                })?;
                // A key always points at a stored job: both are written by
                // one batch and removed by one batch.
                self.load(id)?.map(Some).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "idempotency key of queue {queue} points at missing job {id}"
                    ))
                })
            }
            None => Ok(None),
        }
    }

    fn due(&self, kind: TimerKind, upto: u64, limit: usize) -> Result<Vec<Due>> {
        let start = timer_key(kind, 0, JobId::from_u64(0));
        let end = timer_key(kind, upto, JobId::from_u64(u64::MAX));
        self.scan(
            keys::TIMERS,
            Bound::Included(start.to_vec()),
            Bound::Included(end.to_vec()),
        )
        .take(limit)
        .map(|item| {
            let (key, value) = item.map_err(storage)?;
            let at = u64_at(&key, 1).ok_or_else(|| Error::Corrupt("short timer key".into()))?;
            Ok(Due {
                id: id_at_end(&key)?,
                deadline: Deadline {
                    kind,
                    at,
                    lease: u64_at(&value, 0).map(LeaseId::from_u64),
                },
            })
        })
        .collect()
    }

    fn first_due(&self, kind: TimerKind) -> Result<Option<u64>> {
        let start = timer_key(kind, 0, JobId::from_u64(0));
        let end = timer_key(kind, u64::MAX, JobId::from_u64(u64::MAX));
        let mut scan = self.scan(
            keys::TIMERS,
            Bound::Included(start.to_vec()),
            Bound::Included(end.to_vec()),
        );
        match scan.next() {
            Some(entry) => Ok(u64_at(&entry.map_err(storage)?.0, 1)),
            None => Ok(None),
        }
    }

    fn page(&self, page: &Page, after: Option<JobId>, limit: usize) -> Result<Vec<JobId>> {
        let prefix = match page {
            Page::Callbacks { status } => vec![keys::CALLBACKS, keys::callback_byte(*status)],
            Page::State { queue, state } => keys::state_prefix(queue, *state),
            Page::Correlation { id } => keys::correlation_prefix(id),
        };
        // Every key of a page is its prefix and an 8-byte id: the first key
        // after `after` is the one after prefix + id + 0.
        let start = match after {
            Some(id) => keys::just_after(&[prefix.as_slice(), &job_key(id)].concat()),
            None => prefix.clone(),
        };
        self.scan(INDEX, Bound::Included(start), prefix_end(&prefix))
            .take(limit)
            .map(|entry| id_at_end(&entry.map_err(storage)?.0))
            .collect()
    }

    fn history(&self, queue: &str, from: u64, to: u64) -> Result<HistoryRange> {
        let prefix = queue_prefix(keys::HISTORY, queue);
        let start = keys::history_key(queue, from);
        let before = match self.last_in(META, Bound::Included(&prefix), Bound::Excluded(&start))? {
            Some((_, value)) => Some(codec::decode_rollup(&value)?.depths),
            None => None,
        };
        let minutes = self
            .scan(
                META,
                Bound::Included(start),
                Bound::Included(keys::history_key(queue, to)),
            )
            .map(|item| {
                let (key, value) = item.map_err(storage)?;
                let minute = u64_at(&key, prefix.len())
                    .ok_or_else(|| Error::Corrupt(format!("short history key {key:?}")))?;
                Ok((minute, codec::decode_rollup(&value)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HistoryRange { before, minutes })
    }

    fn load_schedule(&self, name: &str) -> Result<Option<LoadedSchedule>> {
        match self.get(META, &keys::schedule_key(name))? {
            Some(bytes) => {
                let (schedule, revision) = codec::decode_schedule(&bytes)?;
                Ok(Some(LoadedSchedule { schedule, revision }))
            }
            None => Ok(None),
        }
    }

    fn schedules(&self) -> Result<Vec<LoadedSchedule>> {
        self.scan_prefix(META, &[keys::SCHEDULE])
            .map(|entry| {
                let (schedule, revision) = codec::decode_schedule(&entry.map_err(storage)?.1)?;
                Ok(LoadedSchedule { schedule, revision })
            })
            .collect()
    }

    fn due_schedules(&self, upto: u64, limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.scan_prefix(META, &[keys::SCHEDULE_DUE]) {
            let key = entry.map_err(storage)?.0;
            let at =
                u64_at(&key, 1).ok_or_else(|| Error::Corrupt("short schedule entry".into()))?;
            if at > upto || out.len() >= limit {
                break;
            }
            let name = std::str::from_utf8(&key[9..])
                .map_err(|_| Error::Corrupt(format!("bad schedule entry {key:?}")))?;
            out.push(name.to_owned());
        }
        Ok(out)
    }

    fn first_schedule_due(&self) -> Result<Option<u64>> {
        match self.scan_prefix(META, &[keys::SCHEDULE_DUE]).next() {
            Some(entry) => Ok(u64_at(&entry.map_err(storage)?.0, 1)),
            None => Ok(None),
        }
    }

    fn settings(&self, queue: &str) -> Result<QueueSettings> {
        match self.get(META, &settings_key(queue))? {
            Some(bytes) => codec::decode_settings(&bytes),
            None => Ok(QueueSettings::default()),
        }
    }

    fn counts(&self, queue: &str) -> Result<Counts> {
        let mut counts = Counts::default();
        let prefix = queue_prefix(COUNT, queue);
        for item in self.scan_prefix(META, &prefix) {
            let (key, value) = item.map_err(storage)?;
            let state = key.get(prefix.len()).and_then(|byte| {
                queue_proto::JobState::ALL
                    .into_iter()
                    .find(|s| keys::state_byte(*s) == *byte)
            });
            if let Some(state) = state {
                *counts.slot(state) = keys::decode_u64(&value)?;
            }
        }
        Ok(counts)
    }

    fn oldest_ready(&self, queue: &str) -> Result<Option<u64>> {
        let prefix = queue_prefix(AGE, queue);
        match self.scan_prefix(INDEX, &prefix).next() {
            Some(entry) => {
                let key = entry.map_err(storage)?.0;
                u64_at(&key, prefix.len())
                    .map(Some)
                    .ok_or_else(|| Error::Corrupt("short age key".into()))
            }
            None => Ok(None),
        }
    }

    fn queue_names(&self) -> Result<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        for entry in self.scan_prefix(META, &[COUNT]) {
            let key = entry.map_err(storage)?.0;
            if let Some(end) = key.iter().position(|b| *b == 0) {
                names.insert(String::from_utf8_lossy(&key[1..end]).into_owned());
            }
        }
        for entry in self.scan_prefix(META, &[SETTINGS]) {
            let key = entry.map_err(storage)?.0;
            names.insert(String::from_utf8_lossy(&key[1..]).into_owned());
        }
        Ok(names.into_iter().collect())
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let wanted = after.saturating_add(1);
        // The tail holds contiguous ids: when it starts at or before the
        // first event wanted, it holds all of them.
        if let Some(events) = self
            .tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(wanted, limit)?
        {
            return Ok(events);
        }
        // The chunk holding `wanted` starts at or before it.
        let start = match self.last_in(
            EVENTS,
            Bound::Unbounded,
            Bound::Included(&event_key(wanted)),
        )? {
            Some((key, _)) => key.to_vec(),
            None => event_key(wanted).to_vec(),
        };
        let latest = self.event_seq.load(Ordering::Acquire);
        let mut out = Vec::new();
        for item in self.scan(EVENTS, Bound::Included(start), Bound::Unbounded) {
            let (key, value) = item.map_err(storage)?;
            let first = u64_at(&key, 0).ok_or_else(|| Error::Corrupt("short event key".into()))?;
            for event in codec::decode_chunk(first, &value)? {
                if event.event_id > latest || out.len() >= limit {
                    return Ok(out);
                }
                if event.event_id >= wanted {
                    out.push(event);
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // Nothing chunked from `wanted` on (pruned, or not chunked yet):
        // the next events are the gathered ones, then the tail's. Whatever
        // lies between `wanted` and them is gone, which the reader reports
        // as a gap.
        {
            let gathered = self.published.lock().unwrap_or_else(|p| p.into_inner());
            if gathered.count > 0 && gathered.first.saturating_add(gathered.count) > wanted {
                out.extend(
                    codec::decode_items(gathered.first, &gathered.items)?
                        .into_iter()
                        .filter(|e| e.event_id >= wanted && e.event_id <= latest)
                        .take(limit),
                );
                if !out.is_empty() {
                    return Ok(out);
                }
            }
        }
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        match tail.first() {
            Some(first) if first > wanted => Ok(tail.read(first, limit)?.unwrap_or_default()),
            _ => Ok(out),
        }
    }

    fn event_bounds(&self) -> Result<EventBounds> {
        let first = self
            .scan(EVENTS, Bound::Unbounded, Bound::Unbounded)
            .next()
            .transpose()
            .map_err(storage)?;
        let oldest = match first {
            Some((key, value)) => {
                let first =
                    u64_at(&key, 0).ok_or_else(|| Error::Corrupt("short event key".into()))?;
                codec::decode_chunk(first, &value)?
                    .first()
                    .map(|e| (e.event_id, e.at))
            }
            // Nothing chunked yet: the oldest is among the gathered events.
            None => {
                let gathered = self.published.lock().unwrap_or_else(|p| p.into_inner());
                codec::decode_items(gathered.first, &gathered.items)?
                    .first()
                    .map(|e| (e.event_id, e.at))
            }
        };
        Ok(EventBounds {
            oldest,
            latest: self.event_seq.load(Ordering::Acquire),
        })
    }

    /// The id of the newest event that pruning removes: every event
    /// older than `before_at` from the start of the log, and every event
    /// beyond the `keep` newest. `None` when nothing goes.
    fn prune_cut(&self, before_at: u64, keep: u64) -> Result<Option<u64>> {
        let latest = self.event_seq.load(Ordering::Acquire);
        let mut cut = latest.saturating_sub(keep);
        let mut oldest = None;
        let mut young = false;
        for item in self.scan(EVENTS, Bound::Unbounded, Bound::Unbounded) {
            let (key, value) = item.map_err(storage)?;
            let first = u64_at(&key, 0).ok_or_else(|| Error::Corrupt("short event key".into()))?;
            for event in codec::decode_chunk(first, &value)? {
                oldest.get_or_insert(event.event_id);
                if event.at >= before_at {
                    young = true;
                    break;
                }
                cut = cut.max(event.event_id);
            }
            if young {
                break;
            }
        }
        if !young {
            let gathered = self.published.lock().unwrap_or_else(|p| p.into_inner());
            for event in codec::decode_items(gathered.first, &gathered.items)? {
                oldest.get_or_insert(event.event_id);
                if event.at >= before_at {
                    break;
                }
                cut = cut.max(event.event_id);
            }
        }
        Ok(oldest.filter(|oldest| *oldest <= cut).map(|_| cut))
    }

    /// Whether events up to `cut` are still gathered, not in a chunk.
    fn gathered_upto(&self, cut: u64) -> bool {
        let gathered = self.published.lock().unwrap_or_else(|p| p.into_inner());
        gathered.count > 0 && gathered.first <= cut
    }

    /// Trims the in-memory tail after pruning up to `cut`.
    fn trim_tail(&self, cut: u64) {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .trim(cut);
    }
}

/// The end (exclusive) of the keys that start with `prefix`: the prefix
/// with its last byte below 255 increased, shorter; none if it is all 255s.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// The id and time of the last event of the chunk stored at `key`.
fn last_event(key: &[u8], value: &[u8]) -> Result<(u64, u64)> {
    let first = u64_at(key, 0).ok_or_else(|| Error::Corrupt("short event key".into()))?;
    codec::decode_chunk(first, value)?
        .last()
        .map(|e| (e.event_id, e.at))
        .ok_or_else(|| Error::Corrupt(format!("event chunk {first} is empty")))
}

/// Opens sled. sled's directory lock is released only after the last
/// handle is dropped (spacejam/sled#1234), so a reopen in the same process
/// may find it still held: a directory this process has opened before is
/// waited for, up to 5 s. A directory this process never opened is held by
/// another process (another server, say): that fails at once, saying so.
fn open_waiting_for_lock(config: &sled::Config, path: &std::path::Path) -> Result<sled::Db> {
    static OPENED_HERE: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let ours = OPENED_HERE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&key);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if ours && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                return Err(Error::Storage(StorageError::new(format!(
                    "the data directory {} is in use by another process (is another \
                     queue-server running on it?); stop that process or use another \
                     data directory",
                    path.display()
                ))));
            }
            Ok(db) => {
                let mut opened = OPENED_HERE.lock().unwrap_or_else(|p| p.into_inner());
                let key = std::fs::canonicalize(path).unwrap_or(key);
                if !opened.contains(&key) {
                    opened.push(key);
                }
                return Ok(db);
            }
            Err(e) => return Err(storage(e)),
        }
    }
}

/// The embedded backend: a [`Store`] and the batch threads that lead and
/// sync batches for async callers.
pub(crate) struct SledBackend {
    store: Arc<Store>,
    /// The batch threads: two under `Durability::Sync` (one syncs the batch
    /// it staged while the other decides the next), one otherwise.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl SledBackend {
    /// Opens (or creates) the store `config` describes.
    pub(crate) fn open(config: &Config) -> Result<SledBackend> {
        if config.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(Error::invalid(
                "max_payload",
                format!(
                    "{} exceeds the limit of {MAX_PAYLOAD_LIMIT} bytes",
                    config.max_payload
                ),
            ));
        }
        let Storage::Embedded {
            path,
            cache_capacity,
        } = &config.storage
        else {
            return Err(Error::Internal(
                "not an embedded store's configuration".into(),
            ));
        };
        let mut store = Store::open(path, *cache_capacity, config.durability)?;
        store.history_ms = u64::try_from(config.history_retention.as_millis()).unwrap_or(u64::MAX);
        let store = Arc::new(store);
        // Two batch threads (one writes and syncs the batches staged while
        // the other decides the next one), and under `Periodic` the thread
        // that syncs the journal.
        let mut threads = Vec::new();
        let mut spawn = |name: &str, body: fn(&Store)| {
            let store = Arc::clone(&store);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&store))
                .map(|thread| threads.push(thread))
        };
        let mut spawned = spawn("queue-core-batch", Store::run_worker)
            .and_then(|()| spawn("queue-core-batch", Store::run_worker));
        if store.flush_every.is_some() {
            spawned = spawned.and_then(|()| spawn("queue-core-flush", Store::run_flusher));
        }
        if let Err(e) = spawned {
            store.stop_workers();
            for thread in threads {
                let _ = thread.join();
            }
            return Err(io(e));
        }
        Ok(SledBackend {
            store,
            threads: Mutex::new(threads),
        })
    }

    async fn run<R, F>(&self, mode: Mode, f: F) -> batch::OpOutcome<R>
    where
        F: Fn(&batch::Tx<'_>) -> batch::TxResult<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        match mode {
            Mode::Blocking => self.store.transact(f),
            Mode::Async => self.store.transact_async(f).await,
        }
    }
}

/// A commit with everything that does not depend on the batch computed
/// beforehand, on the caller's thread.
struct PreparedCommit {
    changes: Vec<Prepared>,
    schedules: Vec<PreparedSchedule>,
    settings: Vec<(String, crate::settings::SettingsUpdate)>,
    policy: Policy,
}

impl PreparedCommit {
    fn new(commit: &Commit) -> Result<PreparedCommit> {
        Ok(PreparedCommit {
            changes: commit
                .changes
                .iter()
                .map(Prepared::new)
                .collect::<Result<Vec<_>>>()?,
            schedules: commit
                .schedules
                .iter()
                .map(PreparedSchedule::new)
                .collect::<Result<Vec<_>>>()?,
            settings: commit.settings.clone(),
            policy: commit.policy,
        })
    }

    /// The commit's body inside its batch operation: returns the indices
    /// of the changes applied.
    fn run(&self, tx: &batch::Tx<'_>) -> batch::TxResult<Vec<usize>> {
        let mut applied = Vec::with_capacity(self.changes.len());
        for (i, prepared) in self.changes.iter().enumerate() {
            if tx.is_current(prepared)? {
                tx.apply(prepared);
                applied.push(i);
            } else if self.policy == Policy::AllOrNothing {
                return Err(TxError::Stale);
            }
        }
        for schedule in &self.schedules {
            if !tx.schedule_is_current(schedule)? {
                return Err(TxError::Stale);
            }
            tx.apply_schedule(schedule);
        }
        for (queue, update) in &self.settings {
            let stored = tx.settings(queue)?;
            tx.set_settings(queue, &update.apply(&stored))?;
        }
        Ok(applied)
    }
}

/// The changes of `changes` whose indices are in `applied` (ascending).
fn applied_changes(mut changes: Vec<Change>, applied: &[usize]) -> Vec<Change> {
    if applied.len() < changes.len() {
        let mut index = 0;
        changes.retain(|_| {
            index += 1;
            applied.binary_search(&(index - 1)).is_ok()
        });
    }
    changes
}

/// A lease round's body inside its batch operation: what it took, and when
/// the rate limit's next token arrives if its tokens bounded the round.
///
/// The scan runs inside the batch, where writes are serialized: ready jobs
/// taken by earlier operations of the batch are skipped, and the counts the
/// limits are checked against include their leases and settlements, so a
/// lease never comes back empty while a job it could take is ready, and no
/// limit is exceeded by concurrent calls.
fn lease_round(
    tx: &batch::Tx<'_>,
    queue: &str,
    plan: &LeasePlan,
) -> batch::TxResult<(Vec<Change>, Option<u64>)> {
    let settings = tx.settings(queue)?;
    // The leased count bounds the round only under a limit on it: without
    // one (most queues) it is not read.
    let leased = if settings.limits.max_leased.is_some() && !settings.paused {
        tx.count(queue, queue_proto::JobState::Leased)?
    } else {
        0
    };
    let mut round = plan.round(&settings, leased);
    let mut taken = Vec::with_capacity(plan.opts.max_jobs.min(64) as usize);
    // Candidates in lease order: the `r` entries (jobs without a group, and
    // each group's head), merged with the next job of each group this
    // round took from.
    let mut heads = tx.ready_heads(queue).peekable();
    let mut next_of_group: BinaryHeap<Reverse<([u8; keys::ORDER_LEN], JobId)>> = BinaryHeap::new();
    // Where the next round may start: the first `r` entry this one leaves
    // in place, else just after the last one it takes (see `starts`).
    let mut first_left: Option<[u8; keys::ORDER_LEN]> = None;
    let mut last_taken: Option<[u8; keys::ORDER_LEN]> = None;
    while round.wants_more() {
        let from_heads = match heads.peek() {
            Some(Ok(head)) => Some(head.order),
            Some(Err(_)) => {
                return Err(heads.next().and_then(|r| r.err()).unwrap_or(TxError::Stale));
            }
            None => None,
        };
        let from_group = next_of_group.peek().map(|Reverse((order, _))| *order);
        let take_group = match (from_heads, from_group) {
            (Some(h), Some(g)) => g < h,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let (order, id) = if take_group {
            match next_of_group.pop() {
                Some(Reverse(candidate)) => candidate,
                None => break,
            }
        } else {
            match heads.next() {
                Some(head) => {
                    let head = head?;
                    // A group at its limit costs this entry only: its job
                    // is not even loaded.
                    if let Some(group) = &head.group {
                        let leased = tx.group_leased(queue, group)?;
                        if !round.group_has_room(group, leased) {
                            first_left.get_or_insert(head.order);
                            continue;
                        }
                    }
                    (head.order, head.id)
                }
                None => break,
            }
        };
        // Whether the candidate is an `r` entry, which leaves `r` if taken.
        let from_heads = !take_group;
        let Some((job, revision)) = tx.load(id)? else {
            if from_heads {
                first_left.get_or_insert(order);
            }
            continue;
        };
        let group_leased = match &job.group {
            Some(group) => tx.group_leased(queue, group)?,
            None => 0,
        };
        let lease_id = LeaseId::from_u64(tx.generate_id()?);
        let group = job.group.clone();
        if let Offer::Take(outcome) = round.offer(&job, lease_id, group_leased) {
            let change = Change::of(Loaded { job, revision }, *outcome);
            tx.apply(&Prepared::new(&change)?);
            taken.push(change);
            if from_heads {
                last_taken = Some(order);
            }
            // The group's next job becomes a candidate if the group may
            // give another.
            if let Some(group) = group {
                if round.wants_more() && round.group_has_room(&group, group_leased) {
                    if let Some(next) = tx.next_in_group(queue, &group, &order)? {
                        next_of_group.push(Reverse(next));
                    }
                }
            }
        } else if from_heads {
            first_left.get_or_insert(order);
        }
    }
    match (first_left, last_taken) {
        (Some(order), _) => tx.ready_scanned(queue, &order, false),
        (None, Some(order)) => tx.ready_scanned(queue, &order, true),
        (None, None) => {}
    }
    let end = round.finish();
    if let Some(bucket) = end.bucket {
        let mut stored = settings;
        stored.bucket = Some(bucket);
        tx.set_settings(queue, &stored)?;
    }
    Ok((taken, end.retry_at))
}

/// A future already resolved: sled's reads are synchronous.
fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Backend for SledBackend {
    fn next_job_id(&self) -> BoxFuture<'_, Result<JobId>> {
        ready(
            self.store
                .db
                .generate_id()
                .map(JobId::from_u64)
                .map_err(storage),
        )
    }

    fn load(&self, id: JobId) -> BoxFuture<'_, Result<Option<Loaded>>> {
        ready(self.store.load(id))
    }

    fn find_idempotent<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Loaded>>> {
        ready(self.store.find_idempotent(queue, key))
    }

    fn commit(&self, commit: Commit, mode: Mode) -> BoxFuture<'_, Result<Option<Committed>>> {
        Box::pin(async move {
            let prepared = PreparedCommit::new(&commit)?;
            let outcome = self.run(mode, move |tx| prepared.run(tx)).await?;
            let Some((applied, logged)) = outcome else {
                return Ok(None);
            };
            Ok(Some(Committed {
                applied: applied_changes(commit.changes, &applied),
                events: logged.count,
                first_event: logged.first,
                retry_at: None,
            }))
        })
    }

    fn lease<'a>(
        &'a self,
        queue: &'a str,
        plan: LeasePlan,
        mode: Mode,
    ) -> BoxFuture<'a, Result<Committed>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let outcome = self
                .run(mode, move |tx| lease_round(tx, &queue, &plan))
                .await?;
            let ((applied, retry_at), logged) =
                outcome.ok_or_else(|| Error::Internal("a lease round went stale".into()))?;
            Ok(Committed {
                applied,
                events: logged.count,
                first_event: logged.first,
                retry_at,
            })
        })
    }

    fn commit_and_lease<'a>(
        &'a self,
        commit: Commit,
        queue: &'a str,
        plan: LeasePlan,
        mode: Mode,
    ) -> BoxFuture<'a, Result<Option<(Committed, Committed)>>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let prepared = PreparedCommit::new(&commit)?;
            // One operation of the batch: the commit's body, then the
            // round's, which reads the counts and group heads as the
            // commit leaves them.
            let outcome = self
                .run(mode, move |tx| {
                    let applied = prepared.run(tx)?;
                    tx.bring_derived_up_to_date()?;
                    let round = lease_round(tx, &queue, &plan)?;
                    Ok((applied, round))
                })
                .await?;
            let Some(((applied, (leased, retry_at)), logged)) = outcome else {
                return Ok(None);
            };
            let settled = applied_changes(commit.changes, &applied);
            // The operation's events are the commit's, then the round's.
            let settled_events: u64 = settled
                .iter()
                .map(|change| change.outcome.events().count() as u64)
                .sum();
            Ok(Some((
                Committed {
                    applied: settled,
                    events: settled_events,
                    first_event: logged.first,
                    retry_at: None,
                },
                Committed {
                    applied: leased,
                    events: logged.count.saturating_sub(settled_events),
                    first_event: logged.first + settled_events,
                    retry_at,
                },
            )))
        })
    }

    fn due(&self, kind: TimerKind, upto: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Due>>> {
        ready(self.store.due(kind, upto, limit))
    }

    fn first_due(&self, kind: TimerKind) -> BoxFuture<'_, Result<Option<u64>>> {
        ready(self.store.first_due(kind))
    }

    fn page<'a>(
        &'a self,
        page: &'a Page,
        after: Option<JobId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<JobId>>> {
        ready(self.store.page(page, after, limit))
    }

    fn settings<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<QueueSettings>> {
        ready(self.store.settings(queue))
    }

    fn counts<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Counts>> {
        ready(self.store.counts(queue))
    }

    fn oldest_ready<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        ready(self.store.oldest_ready(queue))
    }

    fn queue_names(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        ready(self.store.queue_names())
    }

    fn events_after(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>>> {
        ready(self.store.events_after(after, limit))
    }

    fn event_bounds(&self) -> BoxFuture<'_, Result<EventBounds>> {
        ready(self.store.event_bounds())
    }

    fn watch_events(&self) -> watch::Receiver<u64> {
        self.store.latest.subscribe()
    }

    fn history<'a>(
        &'a self,
        queue: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<HistoryRange>> {
        ready(self.store.history(queue, from, to))
    }

    fn prune_events(&self, before_at: u64, keep: u64, mode: Mode) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let Some(cut) = self.store.prune_cut(before_at, keep)? else {
                return Ok(0);
            };
            if self.store.gathered_upto(cut) {
                // Those events go into a chunk first (a batch of their own).
                self.run(mode, |tx| {
                    tx.seal_events();
                    Ok(())
                })
                .await?;
            }
            // Removing whole chunks and cutting the one that straddles `cut`
            // is one atomic batch; the latest id is noted in it, so that ids
            // go on increasing after a restart even if every event went.
            let outcome = self.run(mode, move |tx| tx.prune_chunks(cut)).await?;
            let (removed, _) = outcome.unwrap_or_default();
            self.store.trim_tail(cut);
            Ok(removed)
        })
    }

    fn load_schedule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<LoadedSchedule>>> {
        ready(self.store.load_schedule(name))
    }

    fn schedules(&self) -> BoxFuture<'_, Result<Vec<LoadedSchedule>>> {
        ready(self.store.schedules())
    }

    fn due_schedules(&self, upto: u64, limit: usize) -> BoxFuture<'_, Result<Vec<String>>> {
        ready(self.store.due_schedules(upto, limit))
    }

    fn first_schedule_due(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        ready(self.store.first_schedule_due())
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        ready(
            self.store
                .sync_journal()
                .and_then(|()| self.store.flush_now()),
        )
    }

    fn verify(&self) -> BoxFuture<'_, Result<Verification>> {
        ready(verify::verify(&self.store))
    }

    fn commit_stats(&self) -> Option<crate::CommitStats> {
        Some(self.store.commit_stats.snapshot())
    }

    fn close(&self) {
        self.store.stop_workers();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        if let Err(e) = self.store.finish_behind() {
            tracing::error!(error = %e, "the last checkpoint failed");
        }
        if let Err(e) = self.store.sync_journal() {
            tracing::error!(error = %e, "the final sync of the journal failed");
        }
        if let Err(e) = self.store.flush_now() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{leased_job, ready_job};

    /// The enqueue event `event_id` of `job`, as the log holds it.
    fn enqueue_event(event_id: u64, job: &crate::Job) -> Event {
        Event {
            event_id,
            id: job.id,
            queue: job.queue.clone(),
            state: job.state,
            attempts: 0,
            at: job.updated_at,
            transition: crate::Transition::Enqueue,
            correlation_id: job.correlation_id.clone(),
            result: None,
            last_error: None,
            progress: None,
        }
    }

    fn writes_of(job: &crate::Job) -> Writes {
        let mut writes = Writes::new();
        writes.insert(
            (JOBS, job_key(job.id).to_vec().into()),
            Some(codec::encode_job(job, super::super::Revision(1)).unwrap()),
        );
        for entry in keys::entries(job) {
            writes.insert((entry.family.tree(), entry.key.into()), Some(entry.value));
        }
        writes.insert(
            (META, keys::count_key(&job.queue, job.state).into()),
            Some(1u64.to_be_bytes().to_vec()),
        );
        writes
    }

    #[test]
    fn reopening_replays_a_complete_write_ahead_record_and_drops_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let job = ready_job();
        let mut torn = leased_job(9);
        torn.id = JobId::from_u64(99);
        let encode = |writes: &Writes| batch::encode(writes).unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            // As if the process died after writing the records but before
            // applying them: one complete record, one missing its last piece.
            store
                .wal
                .insert(batch::wal_key(1, 0, 1), encode(&writes_of(&job)))
                .unwrap();
            store
                .wal
                .insert(batch::wal_key(2, 0, 2), encode(&writes_of(&torn)))
                .unwrap();
            store.flush_now().unwrap();
            assert!(store.load(job.id).unwrap().is_none());
        }
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        assert_eq!(
            store.load(job.id).unwrap().map(|l| l.job),
            Some(job.clone())
        );
        assert!(store.load(torn.id).unwrap().is_none());
        assert!(
            store.wal.iter().keys().all(|key| key.unwrap().len() != 16),
            "no record in pieces is left"
        );
        let report = verify::verify(&store).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.jobs, 1);
    }

    #[test]
    fn reopening_replays_the_slots_after_the_checkpoint_and_chunks_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let applied = ready_job();
        let mut pending = ready_job();
        pending.id = JobId::from_u64(8);
        pending.queue = "r".into();
        let event = enqueue_event;
        let (first, second) = (event(1, &applied), event(2, &pending));
        let encode = |writes: &Writes| batch::encode(writes).unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            // As if the process died with batch 5 applied and batch 6 only
            // recorded, both with their events still in their slots; the
            // slot of batch 1 is before the checkpoint (4) and stays as is.
            store
                .wal
                .insert(keys::CHECKPOINT, &4u64.to_be_bytes())
                .unwrap();
            let item = |event: &Event| {
                let mut items = Vec::new();
                codec::encode_item(&crate::rules::EventDraft::from(event), &mut items).unwrap();
                items
            };
            let stale = codec::encode_slot(1, 0, &[], &encode(&writes_of(&pending))).unwrap();
            store.wal.insert(keys::slot_key(1), stale).unwrap();
            let writes = writes_of(&applied);
            store.apply(&writes).unwrap();
            let applied_slot = codec::encode_slot(5, 1, &item(&first), &encode(&writes)).unwrap();
            store.wal.insert(keys::slot_key(5), applied_slot).unwrap();
            let pending_slot =
                codec::encode_slot(6, 2, &item(&second), &encode(&writes_of(&pending))).unwrap();
            store.wal.insert(keys::slot_key(6), pending_slot).unwrap();
            store.flush_now().unwrap();
            assert!(store.load(pending.id).unwrap().is_none());
        }
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        assert_eq!(
            store.load(pending.id).unwrap().map(|l| l.job),
            Some(pending)
        );
        assert_eq!(store.events_after(0, 10).unwrap(), vec![first, second]);
        assert_eq!(store.event_seq.load(Ordering::Acquire), 2);
        let gathered = store.gathered.lock().unwrap();
        assert_eq!((gathered.checkpoint, gathered.next), (6, 7));
        drop(gathered);
        let report = verify::verify(&store).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[test]
    fn reopening_replays_the_journal_after_the_checkpoint_once_and_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let applied = ready_job();
        let mut pending = ready_job();
        pending.id = JobId::from_u64(8);
        pending.queue = "r".into();
        let mut stale = ready_job();
        stale.id = JobId::from_u64(77);
        let event = enqueue_event;
        let (first, second) = (event(1, &applied), event(2, &pending));
        let item = |event: &Event| {
            let mut items = Vec::new();
            codec::encode_item(&crate::rules::EventDraft::from(event), &mut items).unwrap();
            items
        };
        let encode = |writes: &Writes| batch::encode(writes).unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            store
                .wal
                .insert(keys::CHECKPOINT, &4u64.to_be_bytes())
                .unwrap();
            let mut journal = store.journal.lock().unwrap();
            // As if the process died with batch 5 synced and applied, and
            // batch 6 synced to the journal only (the crash between the
            // append and the trees); batch 3 is before the checkpoint, as
            // after a cut whose truncation a crash took back.
            journal
                .append(&codec::encode_slot(3, 0, &[], &encode(&writes_of(&stale))).unwrap())
                .unwrap();
            let writes = writes_of(&applied);
            journal
                .append(&codec::encode_slot(5, 1, &item(&first), &encode(&writes)).unwrap())
                .unwrap();
            store.apply(&writes).unwrap();
            journal
                .append(
                    &codec::encode_slot(6, 2, &item(&second), &encode(&writes_of(&pending)))
                        .unwrap(),
                )
                .unwrap();
            drop(journal);
            store.flush_now().unwrap();
            assert!(store.load(pending.id).unwrap().is_none());
        }
        for reopen in 0..2 {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            assert_eq!(
                store.load(pending.id).unwrap().map(|l| l.job),
                Some(pending.clone()),
                "reopen {reopen}"
            );
            assert!(
                store.load(stale.id).unwrap().is_none(),
                "before the checkpoint"
            );
            // Each event once, however often the directory is reopened.
            assert_eq!(
                store.events_after(0, 10).unwrap(),
                vec![first.clone(), second.clone()]
            );
            assert_eq!(store.event_seq.load(Ordering::Acquire), 2);
            let gathered = store.gathered.lock().unwrap();
            assert_eq!((gathered.checkpoint, gathered.next), (6, 7));
            drop(gathered);
            assert_eq!(store.journal.lock().unwrap().len(), 0, "a new lap at open");
            let report = verify::verify(&store).unwrap();
            assert!(report.is_ok(), "{:?}", report.problems);
        }
    }

    #[test]
    fn every_batch_goes_through_the_journal_in_both_durabilities() {
        let dir = tempfile::tempdir().unwrap();
        let job = ready_job();
        let frames = || {
            let journal = std::fs::read(dir.path().join(journal::FILES[0])).unwrap();
            let (frames, _) = journal::read_frames(&journal);
            frames
                .iter()
                .map(|frame| codec::decode_slot(frame).unwrap().seq)
                .collect::<Vec<u64>>()
        };
        {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            commit_writes(&store, writes_of(&job));
            assert_eq!(frames(), vec![1], "one frame for the batch");
            assert!(
                store.wal.get(keys::slot_key(1)).unwrap().is_none(),
                "no slot written"
            );
        }
        let store = Store::open(dir.path(), 1 << 20, Durability::Periodic(100)).unwrap();
        assert_eq!(
            store.load(job.id).unwrap().map(|l| l.job),
            Some(job.clone())
        );
        let mut other = ready_job();
        other.id = JobId::from_u64(5);
        commit_writes(&store, writes_of(&other));
        // The reopen replayed batch 1 and started a new lap with batch 2.
        assert_eq!(frames(), vec![2]);
        assert!(store.wal.get(keys::slot_key(2)).unwrap().is_none());
    }

    /// What a machine crash under `Durability::Periodic` may leave: sled's
    /// files with everything sled was given (it writes its log whenever it
    /// likes), and the journal as of its last sync. Copies `dir` so into
    /// `to`, the journal files from `synced`.
    fn power_loss_copy(
        store: &Store,
        dir: &std::path::Path,
        synced: &[Vec<u8>; 2],
        to: &std::path::Path,
    ) {
        store.db.flush().unwrap();
        copy_dir(dir, to);
        for (name, bytes) in journal::FILES.iter().zip(synced) {
            std::fs::write(to.join(name), bytes).unwrap();
        }
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    #[test]
    fn a_periodic_batch_changes_nothing_in_the_trees_before_its_frame_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, Durability::Periodic(3_600_000)).unwrap();
        // Leased: a lap's end writes them to the trees (it would carry
        // waiting jobs into the next lap).
        let jobs: Vec<crate::Job> = (1..=20)
            .map(|n| {
                let mut job = leased_job(n);
                job.id = JobId::from_u64(n);
                job
            })
            .collect();
        let mut writes = Writes::new();
        for job in &jobs {
            writes.extend(writes_of(job));
        }
        // `writes_of` counts each job alone: one count for the queue.
        let count = (
            META,
            Key::from(keys::count_key(&jobs[0].queue, jobs[0].state)),
        );
        writes.insert(count.clone(), Some(20u64.to_be_bytes().to_vec()));
        commit_writes(&store, writes);
        // A lap's end puts them in the trees, with the checkpoint: as if
        // the lap were full, the next batch ends it.
        store.gathered.lock().unwrap().journal_at = journal::CUT_AT;
        commit_writes(
            &store,
            [((META, Key::new(b"filler")), Some(b"1".to_vec()))].into(),
        );
        store.finish_behind().unwrap();
        assert!(store.wal.get(keys::CHECKPOINT).unwrap().is_some());
        assert!(store.jobs.get(job_key(jobs[0].id)).unwrap().is_some());
        store.sync_journal().unwrap();
        let synced = journal::FILES.map(|name| std::fs::read(dir.path().join(name)).unwrap());
        // Then half of them are removed, with their entries, by batches
        // whose frames are written and not synced.
        for job in &jobs[..10] {
            let gone: Writes = writes_of(job).into_keys().map(|key| (key, None)).collect();
            let mut gone = gone;
            gone.remove(&count);
            commit_writes(&store, gone);
        }
        commit_writes(
            &store,
            [(count.clone(), Some(10u64.to_be_bytes().to_vec()))].into(),
        );
        assert!(
            store.load(jobs[0].id).unwrap().is_none(),
            "removed as readers see it"
        );
        let lost = tempfile::tempdir().unwrap();
        power_loss_copy(&store, dir.path(), &synced, lost.path());
        {
            let reopened = Store::open(lost.path(), 1 << 20, Durability::Periodic(100)).unwrap();
            for job in &jobs {
                assert!(
                    reopened.load(job.id).unwrap().is_some(),
                    "the removals were lost"
                );
            }
            let report = verify::verify(&reopened).unwrap();
            assert!(
                report.is_ok(),
                "the trees got ahead of the journal: {:?}",
                report.problems
            );
        }
        // Once the journal is synced, the removals reach the trees, and a
        // crash then keeps them.
        store.sync_journal().unwrap();
        assert!(store.jobs.get(job_key(jobs[0].id)).unwrap().is_none());
        let synced = journal::FILES.map(|name| std::fs::read(dir.path().join(name)).unwrap());
        let later = tempfile::tempdir().unwrap();
        power_loss_copy(&store, dir.path(), &synced, later.path());
        let reopened = Store::open(later.path(), 1 << 20, Durability::Periodic(100)).unwrap();
        for (n, job) in jobs.iter().enumerate() {
            assert_eq!(reopened.load(job.id).unwrap().is_some(), n >= 10);
        }
        let report = verify::verify(&reopened).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    /// Runs one batch that writes `writes`.
    fn commit_writes(store: &Store, writes: Writes) {
        store
            .transact(move |tx| {
                for ((tree, key), value) in &writes {
                    tx.put_for_test(*tree, key, value.as_deref());
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn an_async_operation_after_the_batch_threads_went_idle_wakes_one() {
        // One operation at a time: the batch threads have nothing to do
        // between them and wait, so each operation must signal one (the
        // count of signals not yet answered must come back down).
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(&Config::new(dir.path())).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        for i in 0..50u32 {
            let key = format!("op-{i:04}").into_bytes();
            let store = Arc::clone(&backend.store);
            let done = runtime.block_on(async move {
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    store.transact_async(move |tx| {
                        tx.put_for_test(META, &key, Some(b"1"));
                        Ok(())
                    }),
                )
                .await
            });
            assert!(
                matches!(done, Ok(Ok(Some(_)))),
                "operation {i} answered within 10 s"
            );
            // Until both batch threads wait again.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while backend.store.idle_workers() < 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the batch threads went idle"
                );
                std::thread::yield_now();
            }
        }
        backend.close();
    }

    #[test]
    fn the_batch_threads_answer_every_async_operation_and_stop_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(&Config::new(dir.path())).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        // Syncs held: one batch thread waits in its sync while the other
        // leads what else is pending and then has nothing it may do.
        backend.store.test_gate.set_closed(true);
        const OPS: u32 = 200;
        let tasks: Vec<_> = (0..OPS)
            .map(|i| {
                let backend = Arc::clone(&backend);
                runtime.spawn(async move {
                    let key = format!("op-{i:04}").into_bytes();
                    backend
                        .store
                        .transact_async(move |tx| {
                            tx.put_for_test(META, &key, Some(b"1"));
                            Ok(())
                        })
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        assert!(backend.store.test_gate.wait_arrived(1), "a batch is staged");
        // Closed with batches staged and their sync held; the operations
        // not yet joined are refused.
        backend.store.stop_workers();
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let closer = {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                backend.close();
                closed_tx.send(()).unwrap();
            })
        };
        backend.store.test_gate.set_closed(false);
        assert!(
            closed
                .recv_timeout(std::time::Duration::from_secs(60))
                .is_ok(),
            "close returns: both batch threads stopped"
        );
        closer.join().unwrap();
        let outcomes: Vec<Result<()>> = tasks
            .into_iter()
            .map(|task| {
                runtime
                    .block_on(async {
                        tokio::time::timeout(std::time::Duration::from_secs(60), task).await
                    })
                    .expect("every operation is answered")
                    .unwrap()
            })
            .collect();
        for outcome in &outcomes {
            assert!(
                matches!(outcome, Ok(()) | Err(Error::Closed)),
                "{outcome:?}"
            );
        }
        let done: Vec<u32> = (0..OPS).filter(|i| outcomes[*i as usize].is_ok()).collect();
        assert!(!done.is_empty());
        drop(backend);
        // What was answered as done is durable, and only that.
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        for i in 0..OPS {
            let key = format!("op-{i:04}").into_bytes();
            assert_eq!(
                store.get(META, &key).unwrap().is_some(),
                done.contains(&i),
                "op {i}"
            );
        }
    }

    #[test]
    fn lease_starts_are_forgotten_when_a_batch_is_dropped_after_its_operations_ran() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        store.history_ms = 7 * 24 * 3_600_000;
        let first = ready_job();
        let mut second = ready_job();
        second.id = JobId::from_u64(first.id.as_u64() + 1);
        commit_writes(&store, writes_of(&first));
        commit_writes(&store, writes_of(&second));
        let plan = LeasePlan {
            opts: crate::LeaseOptions::default(),
            now: first.run_at + 1_000,
        };
        let lease = |store: &Store| {
            let plan = plan.clone();
            store
                .transact(move |tx| {
                    let (taken, _) = lease_round(tx, "q", &plan)?;
                    Ok(taken.iter().map(|change| change.id).collect::<Vec<_>>())
                })
                .map(|outcome| outcome.map(|(ids, _)| ids))
        };
        // The lease's history minute cannot be decoded: its batch fails
        // after the round ran, took `first` and moved the queue's start.
        let minute = keys::history_key("q", crate::rules::history::minute_of(plan.now));
        let mut corrupt = Writes::new();
        corrupt.insert(
            (META, minute.clone().into()),
            Some(b"not a minute".to_vec()),
        );
        commit_writes(&store, corrupt);
        assert!(lease(&store).is_err());
        // Repaired, the next round finds `first` again: the batch's writes
        // were dropped, and so was the start it left.
        let mut repair = Writes::new();
        repair.insert((META, minute.into()), None);
        commit_writes(&store, repair);
        assert_eq!(lease(&store).unwrap(), Some(vec![first.id]));
        assert_eq!(lease(&store).unwrap(), Some(vec![second.id]));
    }

    /// The keys `job` writes: its record and every entry it implies.
    fn keys_of(job: &crate::Job) -> Vec<(u8, Vec<u8>)> {
        let mut keys = vec![(JOBS, job_key(job.id).to_vec())];
        keys.extend(
            keys::entries(job)
                .into_iter()
                .map(|e| (e.family.tree(), e.key)),
        );
        keys
    }

    #[test]
    fn a_lap_carries_its_waiting_jobs_into_the_next_lap_and_a_reopen_replays_them() {
        let dir = tempfile::tempdir().unwrap();
        let waiting = ready_job();
        let mut leased = leased_job(4);
        leased.id = JobId::from_u64(8);
        {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            commit_writes(&store, writes_of(&waiting));
            commit_writes(&store, writes_of(&leased));
            // As if the lap were full: the next batch (3) ends it, and
            // keeps 4 for the carry.
            store.gathered.lock().unwrap().journal_at = journal::CUT_AT;
            commit_writes(
                &store,
                [((META, Key::new(b"t-filler")), Some(b"1".to_vec()))].into(),
            );
            store.finish_behind().unwrap();
            let checkpoint = store.wal.get(keys::CHECKPOINT).unwrap().unwrap();
            assert_eq!(keys::decode_u64(&checkpoint).unwrap(), 3);
            // The leased job is in the trees; the waiting one is not, and
            // reads as before from the overlay.
            for (tree, key) in keys_of(&leased) {
                assert!(store.tree(tree).get(&key).unwrap().is_some(), "{key:?}");
            }
            for (tree, key) in keys_of(&waiting) {
                assert!(
                    store.tree(tree).get(&key).unwrap().is_none(),
                    "{key:?} carried"
                );
                assert!(store.get(tree, &key).unwrap().is_some(), "{key:?} readable");
            }
            // The next lap's file starts with the carry: batch 4, the
            // waiting job's writes.
            let journal = std::fs::read(dir.path().join(journal::FILES[1])).unwrap();
            let (frames, _) = journal::read_frames(&journal);
            let carry = codec::decode_slot(&frames[0]).unwrap();
            assert_eq!(carry.seq, 4);
            let mut carried: Vec<(u8, Vec<u8>)> = codec::decode_writes(&carry.record)
                .unwrap()
                .into_iter()
                .map(|(tree, key, _)| (tree, key))
                .collect();
            carried.sort();
            let mut expected = keys_of(&waiting);
            expected.sort();
            assert_eq!(carried, expected);
            // The next batch is 5, after the carry.
            commit_writes(
                &store,
                [((META, Key::new(b"t-next")), Some(b"1".to_vec()))].into(),
            );
            let journal = std::fs::read(dir.path().join(journal::FILES[1])).unwrap();
            let (frames, _) = journal::read_frames(&journal);
            let seqs: Vec<u64> = frames
                .iter()
                .map(|frame| codec::decode_slot(frame).unwrap().seq)
                .collect();
            assert_eq!(seqs, vec![4, 5]);
            let report = verify::verify(&store).unwrap();
            assert!(report.is_ok(), "{:?}", report.problems);
            // Still waiting at the next lap's end (batch 6 ends it): not
            // carried again, the trees get it.
            store.gathered.lock().unwrap().journal_at = journal::CUT_AT;
            commit_writes(
                &store,
                [((META, Key::new(b"t-filler")), Some(b"2".to_vec()))].into(),
            );
            store.finish_behind().unwrap();
            for (tree, key) in keys_of(&waiting) {
                assert!(
                    store.tree(tree).get(&key).unwrap().is_some(),
                    "{key:?} applied"
                );
            }
            let journal = std::fs::read(dir.path().join(journal::FILES[0])).unwrap();
            let (frames, _) = journal::read_frames(&journal);
            let carry = codec::decode_slot(&frames[0]).unwrap();
            assert_eq!(carry.seq, 7);
            assert!(codec::decode_writes(&carry.record).unwrap().is_empty());
        }
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        for job in [&waiting, &leased] {
            assert_eq!(
                store.load(job.id).unwrap().map(|l| l.job).as_ref(),
                Some(job)
            );
        }
        let report = verify::verify(&store).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[test]
    fn a_crash_after_a_lap_carried_its_waiting_jobs_replays_the_carry() {
        let dir = tempfile::tempdir().unwrap();
        let waiting = ready_job();
        {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            commit_writes(&store, writes_of(&waiting));
            store.gathered.lock().unwrap().journal_at = journal::CUT_AT;
            commit_writes(
                &store,
                [((META, Key::new(b"t-filler")), Some(b"1".to_vec()))].into(),
            );
            store.finish_behind().unwrap();
            assert!(
                store.jobs.get(job_key(waiting.id)).unwrap().is_none(),
                "carried"
            );
        }
        // A crash (the store dropped, nothing closed): the reopen replays
        // the carry after the checkpoint.
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        assert_eq!(
            store.load(waiting.id).unwrap().map(|l| l.job).as_ref(),
            Some(&waiting)
        );
        for (tree, key) in keys_of(&waiting) {
            assert!(
                store.tree(tree).get(&key).unwrap().is_some(),
                "{key:?} replayed"
            );
        }
        let report = verify::verify(&store).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[test]
    fn a_lap_carries_whole_waiting_jobs_in_lease_order_up_to_its_bound() {
        // Three waiting jobs (the second with a higher priority, so first
        // in lease order), one in a group, and a leased one.
        let mut jobs: Vec<crate::Job> = (1..=4)
            .map(|n| {
                let mut job = ready_job();
                job.id = JobId::from_u64(n);
                job
            })
            .collect();
        jobs[1].priority = 5;
        jobs[2].group = Some("g".into());
        jobs[3] = leased_job(2);
        jobs[3].id = JobId::from_u64(4);
        let mut trees: [pending::TreeWrites; pending::TREES] = Default::default();
        let mut size = |job: &crate::Job| -> usize {
            let mut bytes = 0;
            for ((tree, key), value) in writes_of(job) {
                let value = value.unwrap();
                if tree != META {
                    bytes += key.len() + value.len();
                }
                trees[usize::from(tree)].insert(key, Some(value));
            }
            bytes
        };
        let sizes: Vec<usize> = jobs.iter().map(&mut size).collect();
        // A job whose record is in the trees already is left to them.
        let mut stored = ready_job();
        stored.id = JobId::from_u64(9);
        for entry in keys::entries(&stored) {
            trees[usize::from(entry.family.tree())].insert(entry.key.into(), Some(entry.value));
        }
        let picked = |max: usize| -> Vec<(u8, Vec<u8>)> {
            let mut picked = batch::pick_waiting(&trees, max, &Default::default());
            picked.sort();
            picked
        };
        let whole = |chosen: &[&crate::Job]| -> Vec<(u8, Vec<u8>)> {
            let mut keys: Vec<(u8, Vec<u8>)> = chosen.iter().flat_map(|job| keys_of(job)).collect();
            keys.sort();
            keys
        };
        assert_eq!(picked(usize::MAX), whole(&[&jobs[0], &jobs[1], &jobs[2]]));
        // The bound: the first in lease order, then the next whole or not.
        assert_eq!(picked(sizes[1]), whole(&[&jobs[1]]));
        assert_eq!(picked(sizes[1] + sizes[0] - 1), whole(&[&jobs[1]]));
        assert_eq!(picked(sizes[1] + sizes[0]), whole(&[&jobs[1], &jobs[0]]));
        assert_eq!(picked(sizes[1] - 1), vec![]);
        // A job the last lap carried is not carried again.
        let before = [job_key(jobs[1].id).to_vec()].into_iter().collect();
        let mut again = batch::pick_waiting(&trees, usize::MAX, &before);
        again.sort();
        assert_eq!(again, whole(&[&jobs[0], &jobs[2]]));
    }

    /// A job whose id is newer than every lap's end is known absent from
    /// the trees (its reads and removals skip them); once a lap's end
    /// takes it, or a reopen finds it, it is looked up there again, and
    /// its removal reaches the trees.
    #[test]
    fn only_jobs_newer_than_the_last_lap_skip_the_trees() {
        let dir = tempfile::tempdir().unwrap();
        let fresh =
            |store: &Store, job: &crate::Job| store.pending.never_stored(JOBS, &job_key(job.id));
        let new_job = |store: &Store| {
            let mut job = ready_job();
            job.id = JobId::from_u64(store.db.generate_id().unwrap());
            job
        };
        let (older, newer) = {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            // Finished: a lap's end carries waiting jobs into the next lap
            // instead of writing them to the trees.
            let mut older = new_job(&store);
            older.state = queue_proto::JobState::Completed;
            older.finished_at = Some(older.updated_at);
            commit_writes(&store, writes_of(&older));
            assert!(fresh(&store, &older), "only in the overlay's current layer");
            for entry in keys::entries(&older) {
                let tree = entry.family.tree();
                let job_entry = keys::job_of_key(tree, &entry.key).is_some();
                assert_eq!(store.pending.never_stored(tree, &entry.key), job_entry);
            }
            // The lap ends: its checkpoint writes `older` to the trees.
            store.gathered.lock().unwrap().journal_at = journal::CUT_AT;
            let newer = new_job(&store);
            commit_writes(&store, writes_of(&newer));
            store.finish_behind().unwrap();
            assert!(store.jobs.get(job_key(older.id)).unwrap().is_some());
            assert!(!fresh(&store, &older), "in the trees now");
            assert!(
                !fresh(&store, &newer),
                "in the lap that ended (then carried): the mark passed it"
            );
            assert!(
                store.jobs.get(job_key(newer.id)).unwrap().is_none(),
                "carried"
            );
            // Removed: from the trees too, although the overlay never held
            // it since.
            let gone: Writes = writes_of(&older).into_keys().map(|k| (k, None)).collect();
            commit_writes(&store, gone);
            assert!(store.jobs.get(job_key(older.id)).unwrap().is_none());
            assert!(store.load(older.id).unwrap().is_none());
            assert_eq!(
                store.load(newer.id).unwrap().map(|l| l.job),
                Some(newer.clone())
            );
            let later = new_job(&store);
            assert!(fresh(&store, &later), "newer than the lap's end");
            let report = verify::verify(&store).unwrap();
            assert!(report.is_ok(), "{:?}", report.problems);
            (older, newer)
        };
        // Reopened: the journal's replay put `newer` in the trees.
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        assert!(!fresh(&store, &newer));
        assert_eq!(
            store.load(newer.id).unwrap().map(|l| l.job),
            Some(newer.clone())
        );
        assert!(store.load(older.id).unwrap().is_none());
        assert!(fresh(&store, &new_job(&store)));
        // A job the trees hold with an id sled never gave (a test's, or a
        // directory whose id counter lagged) is looked up as well.
        let mut odd = ready_job();
        odd.id = JobId::from_u64(newer.id.as_u64() + 1_000_000_000);
        store.apply(&writes_of(&odd)).unwrap();
        assert!(!fresh(&store, &odd));
        drop(store);
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        assert!(!fresh(&store, &odd), "past every job the trees hold");
        assert_eq!(store.load(odd.id).unwrap().map(|l| l.job), Some(odd));
    }

    #[test]
    fn the_batches_after_a_lap_commit_while_its_checkpoint_is_applied_behind() {
        let dir = tempfile::tempdir().unwrap();
        // Leased: the lap's end writes it to the trees (it would carry a
        // waiting job into the next lap).
        let job = leased_job(3);
        let mut later = ready_job();
        later.id = JobId::from_u64(9);
        later.queue = "later".into();
        let filler_key = (META, Key::new(b"t-filler"));
        {
            let store = Arc::new(Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap());
            store.pending.hold.set_closed(true);
            // One batch fills a lap of the journal; the next one, which
            // writes the job, ends the lap (and holds its checkpoint key).
            let size = usize::try_from(journal::CUT_AT).unwrap();
            let filler: Writes = [(filler_key.clone(), Some(vec![7u8; size]))].into();
            commit_writes(&store, filler);
            let ending = {
                let store = Arc::clone(&store);
                let writes = writes_of(&job);
                std::thread::spawn(move || commit_writes(&store, writes))
            };
            let reached = store.pending.hold.wait_arrived(1);
            // Held before it writes anything: the next batch commits
            // meanwhile (a checkpoint applied in the batch would hold it).
            let (done, committed) = std::sync::mpsc::channel();
            let next = {
                let store = Arc::clone(&store);
                let writes = writes_of(&later);
                std::thread::spawn(move || {
                    commit_writes(&store, writes);
                    let _ = done.send(());
                })
            };
            let in_time = committed
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok();
            let loaded: Vec<Option<crate::Job>> = [&job, &later]
                .iter()
                .map(|j| store.load(j.id).unwrap().map(|l| l.job))
                .collect();
            let in_trees = store.jobs.get(job_key(job.id)).unwrap().is_some();
            store.pending.hold.set_closed(false);
            ending.join().unwrap();
            next.join().unwrap();
            assert!(reached, "the lap's checkpoint started");
            assert!(
                in_time,
                "the next batch committed while the checkpoint was held"
            );
            assert_eq!(loaded, vec![Some(job.clone()), Some(later.clone())]);
            assert!(!in_trees, "nothing applied while held");
            store.finish_behind().unwrap();
            // The ended lap is in the trees, the next one still in the
            // overlay.
            assert!(store.jobs.get(job_key(job.id)).unwrap().is_some());
            assert!(store.jobs.get(job_key(later.id)).unwrap().is_none());
            let checkpoint = store.wal.get(keys::CHECKPOINT).unwrap().unwrap();
            assert_eq!(keys::decode_u64(&checkpoint).unwrap(), 2);
            commit_writes(&store, [(filler_key, None)].into());
            let report = verify::verify(&store).unwrap();
            assert!(report.is_ok(), "{:?}", report.problems);
        }
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        for expected in [&job, &later] {
            let loaded = store.load(expected.id).unwrap().map(|l| l.job);
            assert_eq!(loaded.as_ref(), Some(expected));
        }
        let report = verify::verify(&store).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[test]
    fn committed_writes_are_read_from_the_overlay_until_a_checkpoint_applies_them() {
        for durability in [Durability::Sync, Durability::Periodic(100)] {
            let dir = tempfile::tempdir().unwrap();
            let job = ready_job();
            let listed = Page::State {
                queue: job.queue.clone(),
                state: job.state,
            };
            let mut other = ready_job();
            other.id = JobId::from_u64(5);
            {
                let store = Store::open(dir.path(), 1 << 20, durability).unwrap();
                commit_writes(&store, writes_of(&job));
                // Committed and readable, not in the trees yet.
                assert_eq!(
                    store.load(job.id).unwrap().map(|l| l.job),
                    Some(job.clone())
                );
                assert_eq!(store.page(&listed, None, 10).unwrap(), vec![job.id]);
                assert_eq!(store.counts(&job.queue).unwrap().get(job.state), 1);
                assert!(store.jobs.get(job_key(job.id)).unwrap().is_none());
                // Removed again before a checkpoint: the trees never see it.
                let gone: Writes = writes_of(&job).into_keys().map(|k| (k, None)).collect();
                commit_writes(&store, gone);
                assert!(store.load(job.id).unwrap().is_none());
                assert_eq!(store.page(&listed, None, 10).unwrap(), vec![]);
                commit_writes(&store, writes_of(&other));
                assert_eq!(store.index.len(), 0, "{durability:?}");
                assert!(verify::verify(&store).unwrap().is_ok());
                if durability != Durability::Sync {
                    // Periodic: the removals stay in the overlay until the
                    // journal is synced, then leave it for the trees.
                    assert!(matches!(
                        store.pending.get(JOBS, &job_key(job.id)),
                        Some(None)
                    ));
                    store.sync_journal().unwrap();
                    assert_eq!(store.pending.get(JOBS, &job_key(job.id)), None);
                    assert!(store.load(job.id).unwrap().is_none());
                    let report = verify::verify(&store).unwrap();
                    assert!(report.is_ok(), "{:?}", report.problems);
                }
            }
            // A reopen replays what the trees missed, and only that.
            let store = Store::open(dir.path(), 1 << 20, durability).unwrap();
            assert!(store.jobs.get(job_key(other.id)).unwrap().is_some());
            assert!(store.load(job.id).unwrap().is_none());
            assert_eq!(store.page(&listed, None, 1).unwrap(), vec![other.id]);
            let report = verify::verify(&store).unwrap();
            assert!(report.is_ok(), "{durability:?}: {:?}", report.problems);
        }
    }

    #[test]
    fn a_durable_batch_is_decided_while_the_one_before_syncs_and_answered_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap());
        let job = ready_job();
        store.test_gate.set_closed(true);
        let first = {
            let store = Arc::clone(&store);
            let writes = writes_of(&job);
            std::thread::spawn(move || commit_writes(&store, writes))
        };
        assert!(store.test_gate.wait_arrived(1), "the first batch is staged");
        // The second batch reads what the first wrote: decided on top of
        // it while its sync is held back.
        let (saw, seen) = std::sync::mpsc::channel();
        let second = {
            let store = Arc::clone(&store);
            let id = job.id;
            std::thread::spawn(move || {
                store
                    .transact(move |tx| {
                        let record = tx.load(id)?;
                        saw.send(record.is_some()).unwrap();
                        tx.put_for_test(META, b"second", Some(b"1"));
                        Ok(())
                    })
                    .unwrap()
            })
        };
        assert!(
            store.test_gate.wait_arrived(2),
            "the second batch is staged too"
        );
        assert!(seen.recv().unwrap(), "it saw the first batch's write");
        // Neither is readable nor answered before the frames are synced.
        assert!(store.load(job.id).unwrap().is_none());
        assert!(store.get(META, b"second").unwrap().is_none());
        assert!(!first.is_finished() && !second.is_finished());
        assert_eq!(store.journal.lock().unwrap().len(), 0, "no frame written");
        store.test_gate.set_closed(false);
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(
            store.load(job.id).unwrap().map(|l| l.job),
            Some(job.clone())
        );
        assert!(store.get(META, b"second").unwrap().is_some());
        let journal = std::fs::read(dir.path().join(journal::FILES[0])).unwrap();
        let (frames, _) = journal::read_frames(&journal);
        let seqs: Vec<u64> = frames
            .iter()
            .map(|frame| codec::decode_slot(frame).unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![1, 2], "both frames, in order");
    }

    #[test]
    fn verify_checks_the_due_entries_of_schedules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        let schedule = crate::Schedule {
            name: "s".into(),
            queue: "q".into(),
            cron: None,
            every_ms: Some(1000),
            timezone: "UTC".into(),
            job: r#"{"payload":1}"#.into(),
            catch_up: queue_proto::CatchUp::All,
            paused: false,
            next_run_at: Some(5_000),
            last_run_at: None,
            last_job_id: None,
            created_at: 4_000,
            updated_at: 4_000,
        };
        let record = codec::encode_schedule(&schedule, super::super::Revision(1)).unwrap();
        store.meta.insert(keys::schedule_key("s"), record).unwrap();
        let problems = |store: &Store| verify::verify(store).unwrap().problems;
        assert_eq!(problems(&store).len(), 1, "the due entry is missing");
        let due = keys::schedule_due_key(&schedule).unwrap();
        store.meta.insert(&due, &[]).unwrap();
        assert!(problems(&store).is_empty(), "{:?}", problems(&store));
        assert_eq!(
            store.due_schedules(4_999, 10).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(store.due_schedules(5_000, 10).unwrap(), ["s"]);
        assert_eq!(store.first_schedule_due().unwrap(), Some(5_000));
        // An entry that no schedule implies (a paused one has none).
        let mut paused = schedule;
        paused.paused = true;
        let record = codec::encode_schedule(&paused, super::super::Revision(2)).unwrap();
        store.meta.insert(keys::schedule_key("s"), record).unwrap();
        assert_eq!(problems(&store).len(), 1, "a stray due entry");
        store.meta.remove(&due).unwrap();
        assert!(problems(&store).is_empty());
    }

    /// Jobs 10..=15 of queue `q` (and job 16 of queue `other`), in various
    /// states; jobs 11, 13 and 16 share the correlation id `req-1`.
    fn listing_jobs() -> Vec<crate::Job> {
        use queue_proto::JobState;
        let states = [
            JobState::Ready,
            JobState::Dead,
            JobState::Ready,
            JobState::Completed,
            JobState::Ready,
            JobState::Dead,
            JobState::Ready,
        ];
        states
            .iter()
            .enumerate()
            .map(|(i, state)| {
                let mut job = ready_job();
                job.id = JobId::from_u64(10 + i as u64);
                job.state = *state;
                if state.is_terminal() {
                    job.finished_at = Some(job.updated_at);
                }
                if i == 6 {
                    job.queue = "other".into();
                }
                if matches!(i, 1 | 3 | 6) {
                    job.correlation_id = Some("req-1".into());
                }
                job
            })
            .collect()
    }

    fn store_with(dir: &std::path::Path, jobs: &[crate::Job]) -> Store {
        let store = Store::open(dir, 1 << 20, Durability::Sync).unwrap();
        let mut writes = Writes::new();
        for job in jobs {
            writes.extend(writes_of(job));
        }
        // writes_of counts each job as the only one of its state.
        let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for job in jobs {
            *counts
                .entry(keys::count_key(&job.queue, job.state))
                .or_default() += 1;
        }
        for (key, count) in counts {
            writes.insert((META, key.into()), Some(count.to_be_bytes().to_vec()));
        }
        store.apply(&writes).unwrap();
        store.flush_now().unwrap();
        store
    }

    fn ids(ids: &[u64]) -> Vec<JobId> {
        ids.iter().copied().map(JobId::from_u64).collect()
    }

    #[test]
    fn pages_by_state_and_by_correlation_come_from_the_index_in_id_order() {
        use queue_proto::JobState;
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &listing_jobs());
        assert!(verify::verify(&store).unwrap().is_ok());
        let ready = Page::State {
            queue: "q".into(),
            state: JobState::Ready,
        };
        assert_eq!(store.page(&ready, None, 10).unwrap(), ids(&[10, 12, 14]));
        assert_eq!(store.page(&ready, None, 2).unwrap(), ids(&[10, 12]));
        assert_eq!(
            store.page(&ready, Some(JobId::from_u64(12)), 10).unwrap(),
            ids(&[14])
        );
        // `after` need not be on the page itself.
        assert_eq!(
            store.page(&ready, Some(JobId::from_u64(11)), 10).unwrap(),
            ids(&[12, 14])
        );
        let dead = Page::State {
            queue: "q".into(),
            state: JobState::Dead,
        };
        assert_eq!(store.page(&dead, None, 10).unwrap(), ids(&[11, 15]));
        let leased = Page::State {
            queue: "q".into(),
            state: JobState::Leased,
        };
        assert!(store.page(&leased, None, 10).unwrap().is_empty());
        let unknown = Page::State {
            queue: "q2".into(),
            state: JobState::Ready,
        };
        assert!(store.page(&unknown, None, 10).unwrap().is_empty());
        let correlated = Page::Correlation { id: "req-1".into() };
        assert_eq!(
            store.page(&correlated, None, 10).unwrap(),
            ids(&[11, 13, 16])
        );
        assert_eq!(
            store
                .page(&correlated, Some(JobId::from_u64(13)), 10)
                .unwrap(),
            ids(&[16])
        );
        let prefix_of_it = Page::Correlation { id: "req-".into() };
        assert!(store.page(&prefix_of_it, None, 10).unwrap().is_empty());
    }

    #[test]
    fn verify_finds_a_missing_or_extra_listing_entry() {
        use queue_proto::JobState;
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &listing_jobs());
        let problems = |store: &Store| verify::verify(store).unwrap().problems;
        assert!(problems(&store).is_empty(), "{:?}", problems(&store));
        let id = JobId::from_u64(12);
        let listed = keys::state_key("q", JobState::Ready, id);
        store.index.remove(&listed).unwrap();
        assert!(!problems(&store).is_empty(), "a missing state entry");
        store.index.insert(&listed, &[]).unwrap();
        assert!(problems(&store).is_empty());
        let stray = keys::state_key("q", JobState::Leased, id);
        store.index.insert(&stray, &[]).unwrap();
        assert!(!problems(&store).is_empty(), "an extra state entry");
        store.index.remove(&stray).unwrap();
        let correlated = keys::correlation_key("req-1", JobId::from_u64(13));
        store.index.remove(&correlated).unwrap();
        assert!(!problems(&store).is_empty(), "a missing correlation entry");
        store.index.insert(&correlated, &[]).unwrap();
        let stray = keys::correlation_key("req-2", JobId::from_u64(13));
        store.index.insert(&stray, &[]).unwrap();
        assert!(!problems(&store).is_empty(), "an extra correlation entry");
        store.index.remove(&stray).unwrap();
        assert!(problems(&store).is_empty());
    }

    #[test]
    fn a_format_2_directory_gets_its_listing_entries_at_open_once() {
        use queue_proto::JobState;
        let dir = tempfile::tempdir().unwrap();
        let jobs = listing_jobs();
        {
            // As format 2 left it: no `j` or `o` entries, the dead-letter
            // list in `d`; and, as if an upgrade had been interrupted and a
            // format-2 build had run since, a stale `j` entry.
            let store = store_with(dir.path(), &jobs);
            let listing: Vec<_> = store
                .index
                .iter()
                .keys()
                .map(|k| k.unwrap())
                .filter(|k| matches!(k[0], keys::STATE | keys::CORRELATION))
                .collect();
            assert_eq!(listing.len(), jobs.len() + 3);
            for key in listing {
                store.index.remove(key).unwrap();
            }
            for job in jobs.iter().filter(|j| j.state == JobState::Dead) {
                let mut key = queue_prefix(keys::DEAD_V2, &job.queue);
                key.extend_from_slice(&job_key(job.id));
                store.index.insert(key, &[]).unwrap();
            }
            store
                .index
                .insert(
                    keys::state_key("q", JobState::Leased, JobId::from_u64(12)),
                    &[],
                )
                .unwrap();
            store.db.insert(FORMAT_KEY, &[2]).unwrap();
            store.flush_now().unwrap();
            assert!(!verify::verify(&store).unwrap().is_ok());
        }
        for _ in 0..2 {
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            let report = verify::verify(&store).unwrap();
            assert!(report.is_ok(), "{:?}", report.problems);
            assert_eq!(
                store.db.get(FORMAT_KEY).unwrap().as_deref(),
                Some(&[FORMAT_VERSION][..])
            );
            assert_eq!(store.index.scan_prefix([keys::DEAD_V2]).count(), 0);
            let dead = Page::State {
                queue: "q".into(),
                state: JobState::Dead,
            };
            assert_eq!(store.page(&dead, None, 10).unwrap(), ids(&[11, 15]));
            let leased = Page::State {
                queue: "q".into(),
                state: JobState::Leased,
            };
            assert!(store.page(&leased, None, 10).unwrap().is_empty());
            let correlated = Page::Correlation { id: "req-1".into() };
            assert_eq!(
                store.page(&correlated, None, 10).unwrap(),
                ids(&[11, 13, 16])
            );
        }
    }

    #[test]
    fn an_upgrade_larger_than_one_batch_builds_every_entry() {
        use queue_proto::JobState;
        let dir = tempfile::tempdir().unwrap();
        let count = UPGRADE_BATCH as u64 + 7;
        let jobs: Vec<_> = (0..count)
            .map(|i| {
                let mut job = ready_job();
                job.id = JobId::from_u64(100 + i);
                job
            })
            .collect();
        {
            let store = store_with(dir.path(), &jobs);
            let listing: Vec<_> = store
                .index
                .scan_prefix([keys::STATE])
                .keys()
                .map(|k| k.unwrap())
                .collect();
            for key in listing {
                store.index.remove(key).unwrap();
            }
            store.db.insert(FORMAT_KEY, &[2]).unwrap();
            store.flush_now().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        let report = verify::verify(&store).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let ready = Page::State {
            queue: "q".into(),
            state: JobState::Ready,
        };
        let last = store
            .page(&ready, Some(JobId::from_u64(100 + count - 3)), 10)
            .unwrap();
        assert_eq!(last, ids(&[100 + count - 2, 100 + count - 1]));
    }

    #[test]
    fn verify_checks_that_history_minutes_decode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
        let problems = |store: &Store| verify::verify(store).unwrap().problems;
        let key = keys::history_key("q", 120_000);
        let rollup = crate::rules::history::Rollup::default();
        store
            .meta
            .insert(&key, codec::encode_rollup(&rollup).unwrap())
            .unwrap();
        assert!(problems(&store).is_empty(), "{:?}", problems(&store));
        assert_eq!(
            store.history("q", 0, 600_000).unwrap().minutes,
            vec![(120_000, rollup)]
        );
        store.meta.insert(&key, &[1, 9]).unwrap();
        assert_eq!(problems(&store).len(), 1, "a damaged minute");
        store.meta.remove(&key).unwrap();
        store
            .meta
            .insert(
                keys::history_key("q", 1),
                codec::encode_rollup(&Default::default()).unwrap(),
            )
            .unwrap();
        assert_eq!(problems(&store).len(), 1, "not a minute");
    }

    /// The checkpoint's flush is watched: a wait longer than the interval
    /// is reported, again after each further interval, and not once the
    /// work has returned (the watchdog has stopped: its end of the channel
    /// is gone).
    #[test]
    fn a_watched_wait_is_reported_while_it_lasts_and_not_after() {
        use std::sync::mpsc::{TryRecvError, channel};
        use std::time::Duration;
        let (release, released) = channel::<()>();
        let (warned_to, warned) = channel::<()>();
        let work = std::thread::spawn(move || {
            batch::watched(
                move || released.recv().map(|()| 7),
                Duration::from_millis(10),
                move || {
                    let _ = warned_to.send(());
                },
            )
        });
        for nth in ["first", "second", "third"] {
            warned
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {nth} report while the work waits"));
        }
        release.send(()).unwrap();
        assert_eq!(work.join().unwrap(), Ok(7));
        while warned.try_recv().is_ok() {}
        assert_eq!(warned.try_recv(), Err(TryRecvError::Disconnected));

        // Work that returns within the interval is never reported.
        let (warned_to, warned) = channel::<()>();
        let outcome = batch::watched(
            || 1,
            Duration::from_secs(3600),
            move || {
                let _ = warned_to.send(());
            },
        );
        assert_eq!(outcome, 1);
        assert_eq!(warned.try_recv(), Err(TryRecvError::Disconnected));
    }

    /// sled 0.34.7 as published loses a 16 MiB segment whose first buffer
    /// a claim fills to its last byte (the header's 24-bit offset carries
    /// into the writer count), and every flush after it waits forever:
    /// vendor/sled/PATCHED.md. This sequence of writes (one thread, sled's
    /// own flusher off, so the layout of the log is the same on every run)
    /// ends such a claim exactly there; against the unpatched crate the
    /// flush below never returns and the test fails at its deadline.
    #[test]
    fn a_segment_filled_to_its_last_byte_is_written_and_flush_returns() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(SEGMENT_SIZE)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let tree = db.open_tree("t").unwrap();
        let value = [7u8; 31];
        for i in 0..180_000u64 {
            tree.insert(i.to_be_bytes(), &value[..]).unwrap();
        }
        let (told, flushed) = std::sync::mpsc::channel();
        let flushing = db.clone();
        std::thread::spawn(move || {
            let _ = told.send(flushing.flush());
        });
        // A deadline, not a sleep: the answer comes as soon as the flush
        // returns; only a flush that never returns waits it out.
        let outcome = flushed
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("sled's flush never returned: a segment was never written");
        outcome.unwrap();
        assert_eq!(tree.len(), 180_000);
    }

    #[test]
    fn a_data_directory_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(SEGMENT_SIZE)
                .open()
                .unwrap();
            db.insert(FORMAT_KEY, &[FORMAT_VERSION + 1]).unwrap();
            db.flush().unwrap();
        }
        let error = Store::open(dir.path(), 1 << 20, Durability::Sync)
            .err()
            .expect("refused");
        assert!(
            matches!(&error, Error::Corrupt(m) if m.contains("format [6]")),
            "{error}"
        );
    }

    #[test]
    fn an_older_directory_becomes_format_5_so_that_older_builds_refuse_it() {
        for older in [3u8, 4] {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
                store.db.insert(FORMAT_KEY, &[older]).unwrap();
                store.flush_now().unwrap();
            }
            let store = Store::open(dir.path(), 1 << 20, Durability::Sync).unwrap();
            assert_eq!(
                store.db.get(FORMAT_KEY).unwrap().as_deref(),
                Some(&[5u8][..]),
                "from format {older}"
            );
        }
    }
}
