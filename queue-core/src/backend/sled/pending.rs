//! Writes that are committed but not yet in sled's trees.
//!
//! A batch is committed once its write-ahead record is stored: a frame of
//! the journal (`Durability::Sync`) or a slot of the `wal` tree
//! (`Durability::Periodic`). Its writes then join this overlay instead of
//! going to the trees one by one; they reach the trees together at the
//! next checkpoint (the journal's cut, or before a slot that is still
//! needed would be reused), and leave the overlay then. Every read of the
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
//! Readers and the batch leader share it behind a lock: the leader adds a
//! batch's writes once the batch is durable, and empties the overlay only
//! after the trees hold its writes, so a reader that misses a key here
//! finds it (or an older value) in the tree. Scans copy the overlay's part
//! of their range a few entries at a time, never holding the lock while
//! they read sled (only [`Pending::last_in`] does, for one short reverse
//! read).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use sled::IVec;

/// Writes of a batch: (tree, key) → new value, `None` for a removal.
pub(crate) type Writes = BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>;

/// Trees with writes (tree ids 0 to 5, see [`keys`](super::keys)).
const TREES: usize = 6;

/// Overlay entries a scan copies at a time.
const CHUNK: usize = 64;

/// One tree's committed writes: key → value, `None` for a removal.
type TreeWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One write: key and value, `None` for a removal.
type Write = (Vec<u8>, Option<Vec<u8>>);

#[derive(Default)]
struct Inner {
    trees: [TreeWrites; TREES],
    /// Bytes of keys and values held (a bound on memory, and when to
    /// checkpoint).
    bytes: usize,
    /// How many times the overlay was emptied (its writes applied to the
    /// trees): a scan that sees it change reads the trees again from where
    /// it is (see [`Scan`]).
    generation: u64,
}

/// The committed writes not yet applied to the trees.
#[derive(Default)]
pub(crate) struct Pending {
    inner: RwLock<Inner>,
}

impl Pending {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The committed value of `key` in `tree` if the overlay holds it
    /// (`Some(None)` for a removal, which the overlay does not keep today:
    /// see [`Pending::absorb`]), `None` if the tree has the answer.
    pub(crate) fn get(&self, tree: u8, key: &[u8]) -> Option<Option<IVec>> {
        let inner = self.read();
        inner
            .trees
            .get(usize::from(tree))?
            .get(key)
            .map(|value| value.as_deref().map(IVec::from))
    }

    /// Adds a durable batch's writes, each replacing what the overlay held
    /// for its key. A removal is not kept: the key leaves the overlay, and
    /// the tree (`trees` gives it by id) if it holds the key, at once. So
    /// the overlay holds no removals for scans to step over (a queue
    /// drained between checkpoints would otherwise make every lease walk
    /// the ready entries of the jobs leased before it), and an entry added
    /// and removed between checkpoints costs the tree one lookup.
    ///
    /// The tree's removal comes first, then the overlay's, so that a reader
    /// meanwhile finds the overlay's value (as before the batch), never an
    /// older one of the tree. Like the overlay's writes, it comes after the
    /// batch's record is stored: the trees are never ahead of the records.
    pub(crate) fn absorb<'t>(
        &self,
        writes: Writes,
        trees: impl Fn(u8) -> &'t sled::Tree,
    ) -> sled::Result<()> {
        for ((tree, key), value) in &writes {
            if value.is_none() && usize::from(*tree) < TREES {
                let tree = trees(*tree);
                if tree.contains_key(key)? {
                    tree.remove(key)?;
                }
            }
        }
        let mut inner = self.write();
        for ((tree, key), value) in writes {
            let Some(map) = inner.trees.get_mut(usize::from(tree)) else {
                continue;
            };
            let key_len = key.len();
            let added = key_len + value.as_ref().map_or(0, Vec::len);
            let old = match value {
                Some(value) => map.insert(key, Some(value)),
                None => map.remove(&key),
            };
            let removed = old.map_or(0, |value| key_len + value.map_or(0, |v| v.len()));
            inner.bytes = inner.bytes.saturating_add(added).saturating_sub(removed);
        }
        Ok(())
    }

    /// About how many bytes the overlay holds.
    pub(crate) fn bytes(&self) -> usize {
        self.read().bytes
    }

    /// Calls `f` with each write, in (tree, key) order, under the read lock
    /// (readers go on; only the batch leader writes the overlay, and it is
    /// the caller).
    pub(crate) fn for_each<E>(
        &self,
        mut f: impl FnMut(u8, &[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let inner = self.read();
        for (tree, map) in inner.trees.iter().enumerate() {
            let tree = u8::try_from(tree).unwrap_or(u8::MAX);
            for (key, value) in map {
                f(tree, key, value.as_deref())?;
            }
        }
        Ok(())
    }

    /// Forgets every write: the trees hold them now.
    pub(crate) fn clear(&self) {
        let mut inner = self.write();
        for map in &mut inner.trees {
            map.clear();
        }
        inner.bytes = 0;
        inner.generation += 1;
    }

    /// Up to [`CHUNK`] writes of `tree` from `from` on (in key order),
    /// below `to`, and the overlay's generation when they were copied.
    fn chunk(&self, tree: u8, from: Bound<&[u8]>, to: Bound<&[u8]>) -> (Vec<Write>, u64) {
        let inner = self.read();
        let generation = inner.generation;
        let Some(map) = inner.trees.get(usize::from(tree)) else {
            return (Vec::new(), generation);
        };
        if map.is_empty() || !valid(from, to) {
            return (Vec::new(), generation);
        }
        let chunk = map
            .range::<[u8], _>((from, to))
            .take(CHUNK)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        (chunk, generation)
    }

    fn generation(&self) -> u64 {
        self.read().generation
    }

    /// The last entry of `tree` in the range as committed: the overlay's
    /// last live write in it, or the tree's last entry that the overlay
    /// does not hold, whichever sorts later.
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
        let inner = self.read();
        let map = inner.trees.get(usize::from(id));
        let ours = map.and_then(|map| {
            map.range::<[u8], _>((from, to))
                .rev()
                .find_map(|(key, value)| value.as_ref().map(|v| (key, v)))
        });
        let range = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        let mut theirs = None;
        for item in tree.range(range).rev() {
            let (key, value) = item?;
            if map.is_some_and(|map| map.contains_key(key.as_ref())) {
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
        }
    }

    /// Copies the next writes of the overlay if those copied are merged.
    fn refill(&mut self) {
        if !self.writes.is_empty() || self.writes_done {
            return;
        }
        let (chunk, generation) =
            self.pending
                .chunk(self.id, as_slice(&self.next_from), as_slice(&self.to));
        if generation != self.generation {
            self.generation = generation;
            self.stored = stored_range(&self.tree, &self.at, &self.to).peekable();
        }
        if chunk.len() < CHUNK {
            self.writes_done = true;
        }
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
            writes.insert((1, key(n)), value);
        }
        // Another tree's writes are not this tree's.
        writes.insert((2, key(1)), Some(b"other".to_vec()));
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
        for to in [0u32, 1, 10, 11, 21, 40, 41, 399, 400] {
            let got = pending
                .last_in(&tree, 1, Bound::Unbounded, Bound::Included(&key(to)))
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
    fn a_scan_reads_the_tree_again_when_the_overlay_is_applied_meanwhile() {
        let (_db, tree, pending, model) = fixture();
        let mut scan = Scan::new(&pending, &tree, 1, Bound::Unbounded, Bound::Unbounded);
        let mut got: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for item in scan.by_ref().take(10) {
            let (k, v) = item.unwrap();
            got.push((k.to_vec(), v.to_vec()));
        }
        // A checkpoint: the overlay goes to the tree, then is emptied.
        pending
            .for_each(|id, key, value| match (id, value) {
                (1, Some(value)) => tree.insert(key, value).map(drop),
                (1, None) => tree.remove(key).map(drop),
                _ => Ok(()),
            })
            .unwrap();
        pending.clear();
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
        writes.insert((1, born.clone()), Some(b"x".to_vec()));
        pending.absorb(writes, |_| &other).unwrap();
        assert!(pending.get(1, &born).is_some());
        let bytes = pending.bytes();
        let mut writes = Writes::new();
        writes.insert((1, born.clone()), None);
        pending.absorb(writes, |_| &other).unwrap();
        assert_eq!(pending.get(1, &born), None);
        assert!(tree.get(&born).unwrap().is_none());
        assert!(pending.bytes() < bytes);
        let all = scanned(Scan::new(
            &pending,
            &tree,
            1,
            Bound::Unbounded,
            Bound::Unbounded,
        ));
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn clearing_forgets_the_writes_and_their_bytes() {
        let (_db, tree, pending, _) = fixture();
        assert!(pending.bytes() > 0);
        let mut seen = 0;
        pending
            .for_each::<()>(|tree, _, _| {
                assert!(tree == 1 || tree == 2);
                seen += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, 80 + 67 + 1, "every write but the removals, once");
        pending.clear();
        assert_eq!(pending.bytes(), 0);
        let all = scanned(Scan::new(
            &pending,
            &tree,
            1,
            Bound::Unbounded,
            Bound::Unbounded,
        ));
        assert_eq!(all.len(), 160, "the tree alone, less the removed entries");
    }
}
