//! Writes that are committed but not yet in sled's trees.
//!
//! A batch is committed once its write-ahead record is stored: a frame of
//! the journal, synced (`Durability::Sync`) or written
//! (`Durability::Periodic`). Its writes then join this overlay instead of
//! going to the trees one by one; they reach the trees together at the
//! next checkpoint (the journal's cut), and leave the overlay then. Every read of the
//! store looks here first ([`Store::get`](super::Store) and
//! [`Store::scan`](super::Store)), so a reader sees the trees as if every
//! committed batch were applied.
//!
//! Why: a job lives through a few batches (enqueue, lease, complete) that
//! write its record three times and add and remove its ready, age, listing
//! and lease-timer entries. sled pays for every write (a copy of the leaf,
//! a log record, a deferred free: about half of a transition's
//! instructions, see BENCHMARKS.md), whatever it holds. In the overlay the
//! writes of a key between two checkpoints fold into the last one, and an
//! entry added and removed meanwhile never reaches sled at all: a job that
//! is enqueued and done between two checkpoints costs sled its final
//! record, its listing entry and its retention timer.
//!
//! Crash safety is the write-ahead log's, unchanged: a batch's record is
//! stored before its writes join the overlay, and the checkpoint that
//! lets a reopen skip a record is written to sled only with (after, in the
//! same apply) every write the overlay held. A reopen replays the records
//! after the checkpoint into the trees, so the overlay starts empty.
//!
//! The overlay has two layers. When a journal
//! lap ends, its writes (the current layer) are frozen and a thread
//! applies them to the trees behind, in (tree, key) order, a chunk at a
//! time, then flushes sled and releases the frozen layer; the next
//! batches go into a new current layer, whose write of a key replaces the
//! frozen one's. A batch that removes a key of the frozen layer takes it
//! out of it (so the apply never writes it back; if the key is in the
//! chunk being written, the batch waits for that chunk, and removes it
//! from the tree again). Before this, a journal cut applied the whole
//! overlay while every batch waited: pauses of 0.2 to 0.5 s at 8 MiB laps
//! (see BENCHMARKS.md).
//!
//! Readers and the batch leader share it behind locks: the syncer adds a
//! batch's writes once the batch is durable, and a layer is emptied only
//! after the trees hold its writes, so a reader that misses a key here
//! finds it (or an older value) in the tree. Scans copy the overlay's part
//! of their range a few entries at a time (2, then 4, up to 64: most
//! scans read the head of a range), never holding a lock while they read
//! sled (only [`Pending::last_in`] does, for one short reverse read).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sled::IVec;

use super::key::Key;
use super::keys;

/// Writes of a batch: (tree, key) → new value, `None` for a removal.
pub(crate) type Writes = BTreeMap<(u8, Key), Option<Vec<u8>>>;

/// Trees with writes (tree ids 0 to 5, see [`keys`](super::keys)).
pub(crate) const TREES: usize = 6;

/// Overlay entries a scan copies at a time, at most; its first copy is of
/// [`FIRST_CHUNK`] entries, and each next one twice the last (most scans
/// read one entry or a few: the head of a queue's ready entries).
const CHUNK: usize = 64;

/// Overlay entries a scan copies first.
const FIRST_CHUNK: usize = 2;

/// Keys [`Pending::carry`] moves under one hold of the locks.
const CARRY_CHUNK: usize = 1024;

/// One tree's committed writes: key → value, `None` for a removal.
pub(crate) type TreeWrites = BTreeMap<Key, Option<Vec<u8>>>;

/// One write: key and value, `None` for a removal.
type Write = (Vec<u8>, Option<Vec<u8>>);

/// Writes of one layer of the overlay, tree by tree.
#[derive(Default)]
struct Layer {
    trees: [TreeWrites; TREES],
    /// Bytes of keys and values held (a bound on memory, and when to
    /// checkpoint).
    bytes: usize,
    /// The frozen layer's apply: the chunk being written to the trees
    /// (tree, first and last key), and the last key written.
    in_flight: Option<(usize, Vec<u8>, Vec<u8>)>,
    applied: Option<(usize, Vec<u8>)>,
    /// The removals this layer keeps as tombstones until the journal is
    /// synced (`Durability::Periodic`, see [`Pending::absorb_keeping_removals`]),
    /// in the order they came.
    deferred: Vec<(u8, Vec<u8>)>,
    /// Past the largest id of a job ([`keys::job_of_key`]) whose key this
    /// layer writes a value to: where the fresh mark goes when it freezes.
    past_jobs: u64,
}

impl Layer {
    /// Notes a value written to `key` of `tree` (see `past_jobs`).
    fn note(&mut self, tree: u8, key: &[u8]) {
        if let Some(id) = keys::job_of_key(tree, key) {
            self.past_jobs = self.past_jobs.max(id.saturating_add(1));
        }
    }

    fn is_empty(&self) -> bool {
        self.trees.iter().all(BTreeMap::is_empty)
    }

    /// Takes `key` out of `tree`'s writes, with its bytes; whether it
    /// held it.
    fn remove(&mut self, tree: usize, key: &[u8]) -> bool {
        let Some(old) = self
            .trees
            .get_mut(tree)
            .and_then(|map| map.remove(&Key::new(key)))
        else {
            return false;
        };
        let removed = key.len() + old.map_or(0, |v| v.len());
        self.bytes = self.bytes.saturating_sub(removed);
        true
    }

    /// Whether the chunk being written to the trees holds `key` of `tree`.
    fn writing(&self, tree: usize, key: &[u8]) -> bool {
        self.in_flight.as_ref().is_some_and(|(t, first, last)| {
            *t == tree && first.as_slice() <= key && key <= last.as_slice()
        })
    }

    /// Whether the apply has written `key` of `tree` (it goes in (tree,
    /// key) order).
    fn written(&self, tree: usize, key: &[u8]) -> bool {
        self.applied
            .as_ref()
            .is_some_and(|(t, last)| *t > tree || (*t == tree && key <= last.as_slice()))
    }
}

/// The committed writes not yet applied to the trees: the current layer,
/// and the layer of the lap before while a checkpoint applies it behind
/// (`Durability::Sync`, see [`Pending::freeze`]). The current layer's
/// write of a key replaces the frozen one's.
#[derive(Default)]
pub(crate) struct Pending {
    current: RwLock<Layer>,
    /// Being applied to the trees; empty when no checkpoint is behind.
    frozen: RwLock<Layer>,
    /// How many times writes left the overlay for the trees (the current
    /// layer applied and emptied, or the frozen one released): a scan that
    /// sees it change reads the trees again from where it is (see
    /// [`Scan`]). Changed under the write lock of the layer emptied.
    generation: AtomicU64,
    /// How many chunks of frozen layers were written to the trees, and its
    /// signal, for a batch waiting for the chunk that holds a key it
    /// removes (taken under the frozen layer's lock, never the reverse).
    chunks: Mutex<u64>,
    chunk_done: Condvar,
    /// Job ids from which on no key of a job ([`keys::job_of_key`]) has a
    /// value in the trees or the frozen layer (see [`Pending::never_stored`]).
    fresh: FreshFrom,
    /// Told when a batch waits for a chunk (tests).
    #[cfg(test)]
    waiting: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// Holds a checkpoint before it writes the frozen layer (tests).
    #[cfg(test)]
    pub(crate) hold: TestGate,
}

/// The first job id of [`Pending::never_stored`]: `u64::MAX` (no job's
/// keys known absent from the trees) until the store sets it at open.
struct FreshFrom(AtomicU64);

impl Default for FreshFrom {
    fn default() -> Self {
        FreshFrom(AtomicU64::new(u64::MAX))
    }
}

/// A test's hold on a step of the store: while closed, the step waits
/// ([`TestGate::wait_open`]); the gate also counts arrivals at a point
/// ([`TestGate::arrive`]). The store has one on its syncs (closed: a
/// sync waits before writing frames; arrivals: batches staged), the
/// overlay one on its checkpoint behind (closed: it waits before writing
/// anything; arrivals: checkpoints started).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestGate {
    /// (closed, arrivals)
    state: Mutex<(bool, u64)>,
    changed: Condvar,
}

#[cfg(test)]
impl TestGate {
    /// Closes (`true`) or opens the gate.
    pub(crate) fn set_closed(&self, closed: bool) {
        self.state.lock().unwrap().0 = closed;
        self.changed.notify_all();
    }

    pub(crate) fn wait_open(&self) {
        let mut state = self.state.lock().unwrap();
        while state.0 {
            state = self.changed.wait(state).unwrap();
        }
    }

    pub(crate) fn arrive(&self) {
        self.state.lock().unwrap().1 += 1;
        self.changed.notify_all();
    }

    /// Waits until `n` arrivals in all (at most 10 s).
    pub(crate) fn wait_arrived(&self, n: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut state = self.state.lock().unwrap();
        while state.1 < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        true
    }
}

/// Writes of the frozen layer a checkpoint writes to the trees at a time
/// (a batch that removes one of them waits for the chunk, see
/// [`Pending::absorb`]).
const APPLY_CHUNK: usize = 64;

fn read(lock: &RwLock<Layer>) -> RwLockReadGuard<'_, Layer> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write(lock: &RwLock<Layer>) -> RwLockWriteGuard<'_, Layer> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Pending {
    /// The committed value of `key` in `tree` if the overlay holds it
    /// (`Some(None)` for a removal, which only batches not yet synced
    /// leave: see [`Pending::absorb_keeping_removals`]), `None` if the tree
    /// has the answer.
    pub(crate) fn get(&self, tree: u8, key: &[u8]) -> Option<Option<IVec>> {
        self.read(tree, key, |value| value.map(IVec::from))
    }

    /// `with` the committed value of `key` in `tree` if the overlay holds
    /// it, as [`Pending::get`] but without copying the value out.
    pub(crate) fn read<T>(
        &self,
        tree: u8,
        key: &[u8],
        with: impl FnOnce(Option<&[u8]>) -> T,
    ) -> Option<T> {
        let tree = usize::from(tree);
        let key = Key::new(key);
        {
            let current = read(&self.current);
            if let Some(value) = current.trees.get(tree).and_then(|map| map.get(&key)) {
                return Some(with(value.as_deref()));
            }
        }
        let frozen = read(&self.frozen);
        let value = frozen.trees.get(tree)?.get(&key)?;
        Some(with(value.as_deref()))
    }

    /// Whether `key` of `tree` is a key of a job ([`keys::job_of_key`])
    /// whose id is at least the fresh mark: no such key has a value in
    /// the trees or in the frozen layer, so a reader that did not find it
    /// in the overlay need not look in the tree, and its removal need not
    /// remove it there. (The frozen layer may hold a periodic batch's
    /// tombstone of one, a removal of a key never written: readers find
    /// it there first, and the checkpoint's removal of it is harmless.)
    /// Readers ask after a miss in the overlay ([`Pending::read`]).
    ///
    /// Why it holds: the store sets the mark at open past every job the
    /// trees hold and every id generated before (sled's ids only grow,
    /// across restarts too), and each freeze raises it past every job the
    /// frozen layer writes a value to ([`Pending::freeze`]). The trees get
    /// values only from frozen layers, from a reopen's replay (before the
    /// mark is set) and from [`Pending::stored_directly`] writes, which
    /// raise it too. A reader that
    /// missed a key in both layers after the frozen layer holding it was
    /// released reads the mark raised by that layer's freeze (the release
    /// comes after it, and the reader takes the lock after the release).
    /// A removal is absorbed under the journal's lock, as a freeze is
    /// made, so the mark it reads is the one of the layers it changes.
    pub(crate) fn never_stored(&self, tree: u8, key: &[u8]) -> bool {
        keys::job_of_key(tree, key).is_some_and(|id| id >= self.fresh.0.load(Ordering::Acquire))
    }

    /// Sets the fresh mark ([`Pending::never_stored`]) at open: past every
    /// job id the trees hold and every id generated before.
    pub(crate) fn set_fresh_from(&self, id: u64) {
        self.fresh.0.store(id, Ordering::Release);
    }

    /// A write that goes to the trees without the overlay (a record in
    /// pieces, a test's): raises the fresh mark past its job's id.
    pub(crate) fn stored_directly(&self, tree: u8, key: &[u8]) {
        if let Some(id) = keys::job_of_key(tree, key) {
            self.fresh
                .0
                .fetch_max(id.saturating_add(1), Ordering::AcqRel);
        }
    }

    /// Adds a durable batch's writes, each replacing what the overlay held
    /// for its key. A removal is not kept: the key leaves the tree
    /// (`trees` gives it by id) and the overlay (both layers) at once. So
    /// the overlay holds no removals for scans to step over (a queue
    /// drained between checkpoints would otherwise make every lease walk
    /// the ready entries of the jobs leased before it), and an entry added
    /// and removed between checkpoints costs the tree one lookup (sled's
    /// removal of a missing key writes nothing).
    ///
    /// The tree's removal comes first, then the overlay's, so that a reader
    /// meanwhile finds the overlay's value (as before the batch), never an
    /// older one of the tree. A checkpoint applying the frozen layer
    /// behind may write the key to the tree meanwhile: a key in the chunk
    /// it is writing waits for the chunk, and a key it has written is
    /// removed from the tree again (once the frozen layer no longer holds
    /// it, nothing writes it back). Like the overlay's writes, removals
    /// come after the batch's record is stored: the trees are never ahead
    /// of the records.
    pub(crate) fn absorb<'t>(
        &self,
        writes: Writes,
        trees: impl Fn(u8) -> &'t sled::Tree,
    ) -> sled::Result<()> {
        for ((tree, key), value) in &writes {
            if value.is_none() {
                self.remove_stored(*tree, key, &trees)?;
            }
        }
        self.add(writes, false);
        Ok(())
    }

    /// [`Pending::absorb`] for a batch whose journal frame is written but
    /// not yet synced (`Durability::Periodic`): its removals must not reach
    /// the trees before the frame is durable, since sled may write them to
    /// disk at any time, and a machine crash that lost the frame would
    /// then leave the trees ahead of the journal (a job's ready entry gone
    /// while its record, as the journal replays it, still waits). So a
    /// removal stays in the current layer as a tombstone, which readers
    /// take as the key's absence, until [`Pending::drop_removals`] removes
    /// it from the trees and from here once the journal is synced; a
    /// checkpoint applies the tombstones it finds like any write. Lease
    /// scans start after the tombstones of the jobs they took (see
    /// [`starts`](super::starts)); other scans step over at most a flush
    /// interval's worth of them.
    pub(crate) fn absorb_keeping_removals(&self, writes: Writes) {
        self.add(writes, true);
    }

    /// Adds a batch's writes to the current layer; a removal is kept as a
    /// tombstone (`keep`) or takes the key out.
    fn add(&self, writes: Writes, keep: bool) {
        let mut current = write(&self.current);
        for ((tree, key), value) in writes {
            if usize::from(tree) >= TREES {
                continue;
            }
            if keep && value.is_none() {
                current.deferred.push((tree, key.to_vec()));
            }
            if value.is_some() {
                current.note(tree, &key);
            }
            let Some(map) = current.trees.get_mut(usize::from(tree)) else {
                continue;
            };
            let key_len = key.len();
            let added = key_len + value.as_ref().map_or(0, Vec::len);
            let old = match value {
                Some(value) => map.insert(key, Some(value)),
                None if keep => map.insert(key, None),
                None => map.remove(&key),
            };
            let removed = old.map_or(0, |value| key_len + value.map_or(0, |v| v.len()));
            current.bytes = current.bytes.saturating_add(added).saturating_sub(removed);
        }
    }

    /// Removes `key` from `tree` (given by id by `trees`) and from the
    /// frozen layer, the tree first, so that a reader meanwhile finds the
    /// overlay's value, never an older one of the tree. A checkpoint
    /// applying the frozen layer behind may write the key to the tree
    /// meanwhile: a key in the chunk it is writing waits for the chunk,
    /// and a key it has written is removed from the tree again (once the
    /// frozen layer no longer holds it, nothing writes it back).
    fn remove_stored<'t>(
        &self,
        tree: u8,
        key: &[u8],
        trees: &impl Fn(u8) -> &'t sled::Tree,
    ) -> sled::Result<()> {
        let id = usize::from(tree);
        if id >= TREES || self.never_stored(tree, key) {
            return Ok(());
        }
        trees(tree).remove(key)?;
        let written_back = loop {
            let mut frozen = write(&self.frozen);
            if frozen.is_empty() {
                break false;
            }
            if frozen.writing(id, key) {
                let seen = *self.chunks.lock().unwrap_or_else(|p| p.into_inner());
                drop(frozen);
                #[cfg(test)]
                if let Some(waiting) = &*self.waiting.lock().unwrap() {
                    let _ = waiting.send(());
                }
                self.wait_for_chunk(seen);
                continue;
            }
            let held = frozen.remove(id, key);
            break held && frozen.written(id, key);
        };
        if written_back {
            trees(tree).remove(key)?;
        }
        Ok(())
    }

    /// The tombstones the current layer kept since the last call (see
    /// [`Pending::absorb_keeping_removals`]): their batches' frames are
    /// written, so once the journal is synced they may reach the trees
    /// ([`Pending::drop_removals`]).
    pub(crate) fn take_removals(&self) -> Vec<(u8, Vec<u8>)> {
        std::mem::take(&mut write(&self.current).deferred)
    }

    /// Applies `removals` (from [`Pending::take_removals`], their frames
    /// synced since) to the trees and the frozen layer, then forgets the
    /// current layer's tombstones of them (a key written again meanwhile
    /// keeps its new value). A scan that meanwhile read a tree reads it
    /// again (the generation moves), so it never takes a removed key's old
    /// value for a live one once the tombstone is gone.
    pub(crate) fn drop_removals<'t>(
        &self,
        removals: &[(u8, Vec<u8>)],
        trees: impl Fn(u8) -> &'t sled::Tree,
    ) -> sled::Result<()> {
        if removals.is_empty() {
            return Ok(());
        }
        for (tree, key) in removals {
            self.remove_stored(*tree, key, &trees)?;
        }
        let mut current = write(&self.current);
        for (tree, key) in removals {
            let Some(map) = current.trees.get_mut(usize::from(*tree)) else {
                continue;
            };
            let key = Key::new(key);
            if matches!(map.get(&key), Some(None)) {
                map.remove(&key);
                current.bytes = current.bytes.saturating_sub(key.len());
            }
        }
        // Under the lock: a scan copies the overlay and reads the
        // generation under it.
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(current);
        Ok(())
    }

    /// Waits until the frozen layer's chunk count passes `seen` (a chunk
    /// written to the trees).
    fn wait_for_chunk(&self, seen: u64) {
        let mut done = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        while *done == seen {
            done = self
                .chunk_done
                .wait(done)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// About how many bytes the current layer holds.
    pub(crate) fn bytes(&self) -> usize {
        read(&self.current).bytes
    }

    /// Makes the current layer the frozen one, for a checkpoint to apply
    /// behind ([`Pending::apply_frozen`], then [`Pending::release_frozen`]);
    /// the next writes start a new current layer. Readers see the same
    /// writes before and after. Fails if the last frozen layer was not
    /// released (its checkpoint did not finish). The fresh mark rises
    /// past every job the frozen layer writes ([`Pending::never_stored`]).
    pub(crate) fn freeze(&self) -> Result<(), &'static str> {
        let mut current = write(&self.current);
        let mut frozen = write(&self.frozen);
        if !frozen.is_empty() {
            return Err("the overlay's last checkpoint did not finish");
        }
        self.fresh.0.fetch_max(current.past_jobs, Ordering::AcqRel);
        std::mem::swap(&mut *current, &mut *frozen);
        // The checkpoint applies the frozen tombstones itself (the journal
        // is synced before it starts).
        frozen.deferred = Vec::new();
        Ok(())
    }

    /// Calls `f` with the current layer's writes, tree by tree, under its
    /// read lock (readers go on).
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&[TreeWrites; TREES]) -> R) -> R {
        f(&read(&self.current).trees)
    }

    /// Moves `keys` from the frozen layer to the current one, before a
    /// checkpoint applies the frozen layer, so that the trees do not get
    /// them; returns the write-ahead record of their values (only live
    /// values move). The value of a key is the same in both layers, so
    /// readers see no change; the move goes [`CARRY_CHUNK`] keys at a time,
    /// each under the layers' write locks. Only the batch that ends a lap
    /// calls it, while no batch adds writes (see `Store::end_lap`).
    pub(crate) fn carry(&self, keys: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut count = 0u64;
        for chunk in keys.chunks(CARRY_CHUNK) {
            let mut current = write(&self.current);
            let mut frozen = write(&self.frozen);
            for (tree, key) in chunk {
                let id = usize::from(*tree);
                let (Some(from), true) = (frozen.trees.get_mut(id), id < TREES) else {
                    continue;
                };
                let Some((key, value)) = from.remove_entry(&Key::new(key)) else {
                    continue;
                };
                let Some(value) = value else {
                    // A removal stays for the checkpoint.
                    from.insert(key, None);
                    continue;
                };
                let bytes = key.len() + value.len();
                frozen.bytes = frozen.bytes.saturating_sub(bytes);
                current.bytes = current.bytes.saturating_add(bytes);
                super::codec::encode_write(&mut body, *tree, &key, Some(&value));
                count += 1;
                current.note(*tree, &key);
                current.trees[id].insert(key, Some(value));
            }
        }
        super::codec::writes_record(count, &body)
    }

    /// Calls `f` with each write of the frozen layer, in (tree, key)
    /// order, [`APPLY_CHUNK`] writes at a time: each chunk is copied and
    /// marked as being written under the layer's lock, then written
    /// without it (so readers and batches go on while sled writes, which
    /// may wait for its own I/O), then marked as written. A batch that
    /// removes a key of the chunk being written waits for it (see
    /// [`Pending::absorb`]).
    pub(crate) fn apply_frozen<E>(
        &self,
        mut f: impl FnMut(u8, &[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        #[cfg(test)]
        {
            self.hold.arrive();
            self.hold.wait_open();
        }
        for tree in 0..TREES {
            let id = u8::try_from(tree).unwrap_or(u8::MAX);
            let mut after: Option<Key> = None;
            loop {
                let chunk: Vec<(Key, Option<Vec<u8>>)> = {
                    let mut frozen = write(&self.frozen);
                    let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                    let chunk: Vec<(Key, Option<Vec<u8>>)> = frozen.trees[tree]
                        .range::<Key, _>((from, Bound::Unbounded))
                        .take(APPLY_CHUNK)
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect();
                    if let (Some((first, _)), Some((last, _))) = (chunk.first(), chunk.last()) {
                        frozen.in_flight = Some((tree, first.to_vec(), last.to_vec()));
                    }
                    chunk
                };
                let Some((last, _)) = chunk.last() else {
                    break;
                };
                let last = last.clone();
                let outcome = chunk
                    .iter()
                    .try_for_each(|(key, value)| f(id, key, value.as_deref()));
                {
                    let mut frozen = write(&self.frozen);
                    frozen.in_flight = None;
                    frozen.applied = Some((tree, last.to_vec()));
                    *self.chunks.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                }
                self.chunk_done.notify_all();
                outcome?;
                if chunk.len() < APPLY_CHUNK {
                    break;
                }
                after = Some(last);
            }
        }
        Ok(())
    }

    /// Forgets the frozen layer: the trees hold its writes now.
    pub(crate) fn release_frozen(&self) {
        let mut frozen = write(&self.frozen);
        *frozen = Layer::default();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Up to `limit` writes of `tree` from `from` on (in key order),
    /// below `to`, both layers merged (the current one's write of a key
    /// replaces the frozen one's), and the overlay's generation when they
    /// were copied.
    fn chunk(
        &self,
        tree: u8,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> (Vec<Write>, u64) {
        let current = read(&self.current);
        let frozen = read(&self.frozen);
        let generation = self.generation.load(Ordering::Acquire);
        let (Some(ours), Some(older)) = (
            current.trees.get(usize::from(tree)),
            frozen.trees.get(usize::from(tree)),
        ) else {
            return (Vec::new(), generation);
        };
        if (ours.is_empty() && older.is_empty()) || !valid(from, to) {
            return (Vec::new(), generation);
        }
        let range = (from.map(Key::new), to.map(Key::new));
        let mut ours = ours.range::<Key, _>(range.clone()).peekable();
        let mut older = older.range::<Key, _>(range).peekable();
        let mut chunk = Vec::new();
        while chunk.len() < limit {
            let next = match (ours.peek(), older.peek()) {
                (None, None) => break,
                (Some(_), None) => ours.next(),
                (None, Some(_)) => older.next(),
                (Some((a, _)), Some((b, _))) => match a.cmp(b) {
                    std::cmp::Ordering::Less => ours.next(),
                    std::cmp::Ordering::Greater => older.next(),
                    std::cmp::Ordering::Equal => {
                        older.next();
                        ours.next()
                    }
                },
            };
            if let Some((key, value)) = next {
                chunk.push((key.to_vec(), value.clone()));
            }
        }
        (chunk, generation)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The last entry of `tree` in the range as committed: the overlay's
    /// last live write in it (either layer), or the tree's last entry
    /// that the overlay does not hold, whichever sorts later.
    pub(crate) fn last_in(
        &self,
        tree: &sled::Tree,
        id: u8,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> sled::Result<Option<(IVec, IVec)>> {
        if !valid(from, to) {
            return Ok(None);
        }
        let current = read(&self.current);
        let frozen = read(&self.frozen);
        let maps: Vec<&TreeWrites> = [&*current, &*frozen]
            .into_iter()
            .filter_map(|layer| layer.trees.get(usize::from(id)))
            .collect();
        // The overlay's last live key in the range: walking both layers
        // backwards, the current layer's write of a key (a tombstone
        // included) replaces the frozen one's.
        let mut ours = None;
        if let [newer, rest @ ..] = maps.as_slice() {
            let mut newer = newer.range::<[u8], _>((from, to)).rev().peekable();
            let mut older = rest
                .first()
                .map(|map| map.range::<[u8], _>((from, to)).rev().peekable());
            loop {
                let older_key = older
                    .as_mut()
                    .and_then(|older| older.peek().map(|(key, _)| *key));
                let next = match (newer.peek().map(|(key, _)| *key), older_key) {
                    (None, None) => break,
                    (Some(a), Some(b)) if a < b => older.as_mut().and_then(Iterator::next),
                    (Some(a), Some(b)) => {
                        if a == b {
                            older.as_mut().and_then(Iterator::next);
                        }
                        newer.next()
                    }
                    (Some(_), None) => newer.next(),
                    (None, Some(_)) => older.as_mut().and_then(Iterator::next),
                };
                if let Some((key, Some(value))) = next {
                    ours = Some((key, value));
                    break;
                }
            }
        }
        let range = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        let mut theirs = None;
        for item in tree.range(range).rev() {
            let (key, value) = item?;
            if maps.iter().any(|map| map.contains_key(key.as_ref())) {
                continue;
            }
            theirs = Some((key, value));
            break;
        }
        Ok(match (ours, theirs) {
            (Some((key, _)), Some(stored)) if stored.0.as_ref() > key.as_slice() => Some(stored),
            (Some((key, value)), _) => {
                Some((IVec::from(key.as_slice()), IVec::from(value.as_slice())))
            }
            (None, theirs) => theirs,
        })
    }
}

/// Whether a range is not empty in the way `BTreeMap::range` would panic
/// on (start after end, or equal and not both included).
fn valid(from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
        _ => true,
    }
}

/// The entries of a tree in a range as committed: the tree's merged with
/// the overlay's writes, in key order (the item type of sled's own
/// iterators).
///
/// The overlay is copied a chunk at a time while sled's iterator runs. If
/// the overlay is applied to the tree and emptied meanwhile, a chunk not
/// yet copied is gone from it, and sled's iterator may hold a part of the
/// tree read before the apply: so when a copy finds the overlay's
/// generation changed, the scan reads the tree again, from its position
/// on (the apply is complete before the overlay is emptied).
pub(crate) struct Scan<'a> {
    pending: &'a Pending,
    id: u8,
    tree: sled::Tree,
    generation: u64,
    /// Just after the last key the scan consumed (from either side).
    at: Bound<IVec>,
    stored: std::iter::Peekable<sled::Iter>,
    /// The overlay's writes copied so far and not yet merged.
    writes: std::collections::VecDeque<Write>,
    /// Where the next copy of the overlay starts.
    next_from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    /// The overlay has nothing more in the range.
    writes_done: bool,
    /// How many writes the next copy takes.
    chunk: usize,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(
        pending: &'a Pending,
        tree: &sled::Tree,
        id: u8,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
    ) -> Scan<'a> {
        let generation = pending.generation();
        Scan {
            pending,
            id,
            tree: tree.clone(),
            generation,
            at: from.clone().map(IVec::from),
            stored: stored_range(tree, &from.clone().map(IVec::from), &to).peekable(),
            writes: std::collections::VecDeque::new(),
            next_from: from,
            to,
            writes_done: false,
            chunk: FIRST_CHUNK,
        }
    }

    /// Copies the next writes of the overlay if those copied are merged.
    fn refill(&mut self) {
        if !self.writes.is_empty() || self.writes_done {
            return;
        }
        let (chunk, generation) = self.pending.chunk(
            self.id,
            as_slice(&self.next_from),
            as_slice(&self.to),
            self.chunk,
        );
        if generation != self.generation {
            self.generation = generation;
            self.stored = stored_range(&self.tree, &self.at, &self.to).peekable();
        }
        if chunk.len() < self.chunk {
            self.writes_done = true;
        }
        self.chunk = (self.chunk * 2).min(CHUNK);
        if let Some((last, _)) = chunk.last() {
            self.next_from = Bound::Excluded(last.clone());
        }
        self.writes.extend(chunk);
    }
}

/// sled's iterator over a range; empty for an inverted range (on which
/// sled, like `BTreeMap`, would panic).
fn stored_range(tree: &sled::Tree, from: &Bound<IVec>, to: &Bound<Vec<u8>>) -> sled::Iter {
    let from_slice = match from {
        Bound::Included(key) => Bound::Included(key.as_ref()),
        Bound::Excluded(key) => Bound::Excluded(key.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    };
    if valid(from_slice, as_slice(to)) {
        tree.range((from.clone(), to.clone().map(IVec::from)))
    } else {
        tree.range(Vec::<u8>::new()..Vec::new())
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Iterator for Scan<'_> {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.refill();
            let stored_key = match self.stored.peek() {
                Some(Err(_)) => return self.stored.next(),
                Some(Ok((key, _))) => Some(key.clone()),
                None => None,
            };
            let write_key = self.writes.front().map(|(key, _)| key.as_slice());
            match (stored_key, write_key) {
                (None, None) => return None,
                (Some(stored), Some(write)) if stored.as_ref() < write => {
                    self.at = Bound::Excluded(stored);
                    return self.stored.next();
                }
                (Some(stored), None) => {
                    self.at = Bound::Excluded(stored);
                    return self.stored.next();
                }
                (stored, Some(write)) => {
                    if stored.is_some_and(|stored| stored.as_ref() == write) {
                        // The overlay's value replaces the tree's.
                        self.stored.next();
                    }
                    let Some((key, value)) = self.writes.pop_front() else {
                        continue;
                    };
                    let key = IVec::from(key);
                    self.at = Bound::Excluded(key.clone());
                    if let Some(value) = value {
                        return Some(Ok((key, IVec::from(value))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    /// A tree holding the even keys 0..400 (value: the key), and an
    /// overlay over it (tree id 1) that removes the multiples of 10 (from
    /// the tree, at once), replaces the multiples of 4 and adds the odd
    /// multiples of 3.
    fn fixture() -> (sled::Db, sled::Tree, Pending, BTreeMap<Vec<u8>, Vec<u8>>) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut model = BTreeMap::new();
        for n in (0..400).step_by(2) {
            tree.insert(key(n), key(n)).unwrap();
            model.insert(key(n), key(n));
        }
        let pending = Pending::default();
        let mut writes = Writes::new();
        for n in 0..400u32 {
            let value = if n % 10 == 0 {
                model.remove(&key(n));
                None
            } else if n % 4 == 0 || (n % 3 == 0 && n % 2 == 1) {
                let value = format!("new {n}").into_bytes();
                model.insert(key(n), value.clone());
                Some(value)
            } else {
                continue;
            };
            writes.insert((1, key(n).into()), value);
        }
        // Another tree's writes are not this tree's.
        writes.insert((2, key(1).into()), Some(b"other".to_vec()));
        let other = db.open_tree("other").unwrap();
        pending
            .absorb(writes, |id| if id == 1 { &tree } else { &other })
            .unwrap();
        (db, tree, pending, model)
    }

    fn scanned(scan: Scan<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan.map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
    }

    #[test]
    fn a_scan_merges_the_overlay_over_the_tree_across_chunks() {
        let (_db, tree, pending, model) = fixture();
        let all = scanned(Scan::new(
            &pending,
            &tree,
            1,
            Bound::Unbounded,
            Bound::Unbounded,
        ));
        let expected: Vec<_> = model.clone().into_iter().collect();
        assert!(all.len() > 3 * CHUNK, "the overlay spans several chunks");
        assert_eq!(all, expected);
        for (from, to) in [(0u32, 400u32), (7, 8), (9, 300), (100, 100), (398, 399)] {
            for (lo, hi) in [
                (Bound::Included(key(from)), Bound::Excluded(key(to))),
                (Bound::Excluded(key(from)), Bound::Included(key(to))),
            ] {
                let got = scanned(Scan::new(&pending, &tree, 1, lo.clone(), hi.clone()));
                let want: Vec<_> = model
                    .range::<Vec<u8>, _>((lo.clone(), hi.clone()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "{lo:?}..{hi:?}");
            }
        }
        // An inverted range is empty, as sled's would be, without a panic.
        let none = Scan::new(
            &pending,
            &tree,
            1,
            Bound::Included(key(9)),
            Bound::Excluded(key(3)),
        );
        assert_eq!(scanned(none), vec![]);
    }

    /// A whole scan of the overlay over `tree` gives the model.
    fn assert_scans_as(pending: &Pending, tree: &sled::Tree, model: BTreeMap<Vec<u8>, Vec<u8>>) {
        let all = scanned(Scan::new(
            pending,
            tree,
            1,
            Bound::Unbounded,
            Bound::Unbounded,
        ));
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }

    /// The overlay's last entry up to each key of `tos` is the model's.
    fn assert_last_in(
        pending: &Pending,
        tree: &sled::Tree,
        model: &BTreeMap<Vec<u8>, Vec<u8>>,
        tos: &[u32],
    ) {
        for &to in tos {
            let got = pending
                .last_in(tree, 1, Bound::Unbounded, Bound::Included(&key(to)))
                .unwrap()
                .map(|(k, v)| (k.to_vec(), v.to_vec()));
            let want = model
                .range(..=key(to))
                .next_back()
                .map(|(k, v)| (k.clone(), v.clone()));
            assert_eq!(got, want, "..={to}");
        }
    }

    #[test]
    fn point_reads_and_the_last_entry_of_a_range_see_the_overlay() {
        let (_db, tree, pending, model) = fixture();
        assert_eq!(pending.get(1, &key(10)), None, "removed: not kept");
        assert!(
            tree.get(key(10)).unwrap().is_none(),
            "removed from the tree"
        );
        assert_eq!(
            pending.get(1, &key(8)).flatten().map(|v| v.to_vec()),
            Some(b"new 8".to_vec())
        );
        assert_eq!(pending.get(1, &key(2)), None, "the tree answers");
        assert_last_in(
            &pending,
            &tree,
            &model,
            &[0, 1, 10, 11, 21, 40, 41, 399, 400],
        );
    }

    #[test]
    fn a_scan_reads_the_tree_again_when_the_overlay_is_applied_meanwhile() {
        let (_db, tree, pending, model) = fixture();
        let mut scan = Scan::new(&pending, &tree, 1, Bound::Unbounded, Bound::Unbounded);
        let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for item in scan.by_ref().take(10) {
            let (k, v) = item.unwrap();
            got.push((k.to_vec(), v.to_vec()));
        }
        // A checkpoint: the overlay goes to the tree, then is released.
        pending.freeze().unwrap();
        apply_to(&pending, &tree);
        pending.release_frozen();
        for item in scan {
            let (k, v) = item.unwrap();
            got.push((k.to_vec(), v.to_vec()));
        }
        let expected: Vec<_> = model.into_iter().collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn an_entry_added_and_removed_between_checkpoints_leaves_no_trace() {
        let (_db, tree, pending, model) = fixture();
        let other = tree.clone();
        let born = key(1001);
        let mut writes = Writes::new();
        writes.insert((1, born.clone().into()), Some(b"x".to_vec()));
        pending.absorb(writes, |_| &other).unwrap();
        assert!(pending.get(1, &born).is_some());
        let bytes = pending.bytes();
        let mut writes = Writes::new();
        writes.insert((1, born.clone().into()), None);
        pending.absorb(writes, |_| &other).unwrap();
        assert_eq!(pending.get(1, &born), None);
        assert!(tree.get(&born).unwrap().is_none());
        assert!(pending.bytes() < bytes);
        assert_scans_as(&pending, &tree, model);
    }

    /// Removes `removed` in one periodic batch (the removals kept), then
    /// writes `back` again with `value` in a later one; `model` follows.
    fn remove_then_write_back(
        pending: &Pending,
        model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        removed: &[u32],
        back: u32,
        value: &[u8],
    ) {
        let mut writes = Writes::new();
        for &n in removed {
            writes.insert((1, key(n).into()), None);
            model.remove(&key(n));
        }
        pending.absorb_keeping_removals(writes);
        let mut again = Writes::new();
        again.insert((1, key(back).into()), Some(value.to_vec()));
        model.insert(key(back), value.to_vec());
        pending.absorb_keeping_removals(again);
    }

    #[test]
    fn kept_removals_read_as_absent_and_reach_the_tree_only_when_dropped() {
        let (_db, tree, pending, mut model) = fixture();
        let other = tree.clone();
        // Keys of the tree (2, 398: the last), of the overlay (8), and one
        // removed, then written again by a later batch (4).
        remove_then_write_back(&pending, &mut model, &[2, 398, 8, 4], 4, b"again");
        assert_eq!(pending.get(1, &key(2)), Some(None), "a tombstone");
        assert!(tree.get(key(2)).unwrap().is_some(), "still in the tree");
        assert!(tree.get(key(398)).unwrap().is_some());
        assert_scans_as(&pending, &tree, model.clone());
        assert_last_in(&pending, &tree, &model, &[2, 3, 8, 9, 398, 399]);
        // Frozen, the tombstones still hide the tree's entries under a new
        // layer.
        pending.freeze().unwrap();
        assert_scans_as(&pending, &tree, model.clone());
        assert_last_in(&pending, &tree, &model, &[2, 398, 399]);
        // A tombstone in the new layer hides the frozen layer's write.
        let mut writes = Writes::new();
        writes.insert((1, key(396).into()), None);
        model.remove(&key(396));
        pending.absorb_keeping_removals(writes);
        assert_scans_as(&pending, &tree, model.clone());
        assert_last_in(&pending, &tree, &model, &[396, 397, 399]);
        apply_to(&pending, &tree);
        pending.release_frozen();
        assert!(
            tree.get(key(2)).unwrap().is_none(),
            "the checkpoint applied it"
        );
        assert_scans_as(&pending, &tree, model.clone());
        // Kept in a current layer, then dropped.
        remove_then_write_back(&pending, &mut model, &[6, 12, 4], 12, b"back");
        assert!(tree.get(key(6)).unwrap().is_some());
        let removals = pending.take_removals();
        assert_eq!(removals.len(), 4, "396 and these three");
        assert!(pending.take_removals().is_empty(), "taken once");
        pending.drop_removals(&removals, |_| &other).unwrap();
        assert!(tree.get(key(6)).unwrap().is_none(), "removed from the tree");
        assert_eq!(pending.get(1, &key(6)), None, "the tombstone is gone");
        assert_eq!(
            pending.get(1, &key(12)).flatten().map(|v| v.to_vec()),
            Some(b"back".to_vec()),
            "a key written again keeps its value"
        );
        assert_scans_as(&pending, &tree, model.clone());
        assert_last_in(&pending, &tree, &model, &[4, 6, 12, 398, 399]);
    }

    /// Applies the frozen layer of `pending` to the tree of id 1.
    fn apply_to(pending: &Pending, tree: &sled::Tree) {
        pending
            .apply_frozen(|id, key, value| match (id, value) {
                (1, Some(value)) => tree.insert(key, value).map(drop),
                (1, None) => tree.remove(key).map(drop),
                _ => Ok(()),
            })
            .unwrap();
    }

    #[test]
    fn a_frozen_layer_reads_as_before_under_the_next_writes_until_released() {
        let (_db, tree, pending, mut model) = fixture();
        pending.freeze().unwrap();
        assert_eq!(pending.bytes(), 0, "a new current layer");
        assert!(pending.freeze().is_err(), "one frozen layer at a time");
        let all = |pending: &Pending| {
            scanned(Scan::new(
                pending,
                &tree,
                1,
                Bound::Unbounded,
                Bound::Unbounded,
            ))
        };
        assert_eq!(all(&pending), model.clone().into_iter().collect::<Vec<_>>());
        // The next writes replace the frozen ones and add their own.
        let mut writes = Writes::new();
        for n in [8u32, 9, 12, 500, 501] {
            let value = format!("newer {n}").into_bytes();
            model.insert(key(n), value.clone());
            writes.insert((1, key(n).into()), Some(value));
        }
        pending.absorb(writes, |_| &tree).unwrap();
        assert_eq!(
            pending.get(1, &key(8)).flatten().map(|v| v.to_vec()),
            Some(b"newer 8".to_vec())
        );
        assert_eq!(
            pending.get(1, &key(4)).flatten().map(|v| v.to_vec()),
            Some(b"new 4".to_vec()),
            "the frozen layer answers"
        );
        assert_eq!(all(&pending), model.clone().into_iter().collect::<Vec<_>>());
        assert_last_in(&pending, &tree, &model, &[3, 8, 9, 13, 399, 499, 500, 600]);
        // Applied and released: the tree holds the frozen writes, the
        // current layer still replaces some of them.
        let generation = pending.generation();
        apply_to(&pending, &tree);
        pending.release_frozen();
        assert!(pending.generation() > generation);
        assert_eq!(
            tree.get(key(4)).unwrap().map(|v| v.to_vec()),
            Some(b"new 4".to_vec())
        );
        assert_eq!(
            tree.get(key(8)).unwrap().map(|v| v.to_vec()),
            Some(b"new 8".to_vec())
        );
        assert!(
            tree.get(key(500)).unwrap().is_none(),
            "current: not applied"
        );
        assert_eq!(all(&pending), model.into_iter().collect::<Vec<_>>());
        pending.freeze().unwrap();
    }

    #[test]
    fn a_key_removed_while_its_frozen_layer_is_applied_is_not_written_back() {
        let (_db, tree, pending, model) = fixture();
        pending.freeze().unwrap();
        // The first chunk of writes holds keys 3 to 100 or so; 8 is in
        // it, 392 in a later one.
        let (early, late) = (key(8), key(392));
        assert!(pending.get(1, &early).is_some() && pending.get(1, &late).is_some());
        let (removing, removed) = std::sync::mpsc::channel::<()>();
        let (waiting, waits) = std::sync::mpsc::channel::<()>();
        *pending.waiting.lock().unwrap() = Some(waiting);
        let remover = {
            let tree = tree.clone();
            let (early, late) = (early.clone(), late.clone());
            let pending = &pending;
            move || {
                removed.recv().unwrap();
                let mut writes = Writes::new();
                writes.insert((1, early.into()), None);
                writes.insert((1, late.into()), None);
                pending.absorb(writes, |_| &tree).unwrap();
            }
        };
        std::thread::scope(|scope| {
            let remover = scope.spawn(remover);
            let mut written = 0;
            pending
                .apply_frozen(|id, key, value| {
                    written += 1;
                    if written == 1 {
                        // The first chunk is being written, 8 not yet: the
                        // removal takes 8 from the tree, then waits for
                        // the chunk, which writes 8 back.
                        removing.send(()).unwrap();
                        waits.recv().unwrap();
                    }
                    match (id, value) {
                        (1, Some(value)) => tree.insert(key, value).map(drop),
                        (1, None) => tree.remove(key).map(drop),
                        _ => Ok(()),
                    }
                })
                .unwrap();
            remover.join().unwrap();
        });
        pending.release_frozen();
        assert!(
            tree.get(&early).unwrap().is_none(),
            "removed after its chunk"
        );
        assert!(
            tree.get(&late).unwrap().is_none(),
            "removed before its chunk"
        );
        let mut model = model;
        model.remove(&early);
        model.remove(&late);
        assert_scans_as(&pending, &tree, model);
    }
}
