//! Where a lease's scan of a queue's ready entries may start.
//!
//! A lease reads the queue's `r` entries in lease order from the first.
//! The jobs it takes leave `r` in its batch's writes, but they stay in
//! the trees (or the overlay) until their batch is durable and absorbed,
//! and the batches decided meanwhile (up to eight in flight, each with
//! up to 64 operations) build on those writes. So before this, every
//! lease stepped over every entry taken by the batches in flight and by
//! the earlier operations of its own batch: at 64 callers about 60
//! entries, each a step of sled's iterator plus a copy of the write that
//! removed it. That was half of the batch leader's time in a drain over
//! HTTP (see BENCHMARKS.md).
//!
//! The leader remembers, per queue, a key before which the queue has no
//! `r` entry as the next operation sees the store (the batches in flight
//! included): the first entry its last scan found and kept, or just after
//! the last one it took. Only the batch leader changes `r` (every write
//! goes through an operation of a batch), so the start holds until an
//! operation puts an entry before it (a job enqueued with a higher
//! priority, a lease that expired, a group's new head...): the start then
//! moves back to that entry. Removals never move it back. An operation's
//! starts and entries count only if it succeeds (its writes join the
//! batch); if a batch's writes are dropped after its operations ran (a
//! failed commit), every start is forgotten, and the next scans start
//! from each queue's first entry again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::key::Key;
use super::keys::{INDEX, READY};
use super::pending::Writes;

/// The most queues whose start is remembered; past it they are forgotten
/// (a start is only a hint: a scan without one reads from the first entry).
const MAX_QUEUES: usize = 4096;

/// Per queue (its `r` prefix), the key from which its scan may start.
#[derive(Default)]
pub(crate) struct Starts {
    by_prefix: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl Starts {
    /// Where a scan of the `r` entries with `prefix` starts for an operation
    /// whose own writes so far are `own`: the remembered start, or the
    /// first entry `own` puts before it, or the prefix itself.
    pub(crate) fn start(&self, prefix: &[u8], own: &Writes) -> Vec<u8> {
        let remembered = self
            .by_prefix
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(prefix)
            .cloned();
        let Some(start) = remembered else {
            return prefix.to_vec();
        };
        let first_own = own
            .range((INDEX, Key::new(prefix))..(INDEX, Key::new(&start)))
            .find(|(_, value)| value.is_some())
            .map(|((_, key), _)| key.to_vec());
        first_own.unwrap_or(start)
    }

    /// Records what a successful operation leaves: the starts its scans
    /// found (`scanned`: prefix and start, in the order of the scans),
    /// then moves back the start of every queue to which its writes (`own`)
    /// add an `r` entry before it.
    pub(crate) fn commit(&self, scanned: Vec<(Vec<u8>, Vec<u8>)>, own: &Writes) {
        let mut added = own
            .range((INDEX, Key::new(&[READY]))..(INDEX, Key::new(&[READY + 1])))
            .filter(|(_, value)| value.is_some())
            .map(|((_, key), _)| key)
            .peekable();
        if scanned.is_empty() && added.peek().is_none() {
            // An operation that neither scans nor adds a ready entry (a
            // completion, a heartbeat...) takes no lock.
            return;
        }
        let mut by_prefix = self.by_prefix.lock().unwrap_or_else(|p| p.into_inner());
        for (prefix, start) in scanned {
            if by_prefix.len() >= MAX_QUEUES && !by_prefix.contains_key(&prefix) {
                by_prefix.clear();
            }
            by_prefix.insert(prefix, start);
        }
        if by_prefix.is_empty() {
            return;
        }
        for key in added {
            // The queue's prefix: `r` + queue + 0 (queue names have no 0).
            let Some(end) = key.iter().skip(1).position(|b| *b == 0) else {
                continue;
            };
            if let Some(start) = by_prefix.get_mut(&key[..end + 2]) {
                if key.as_slice() < start.as_slice() {
                    start.clear();
                    start.extend_from_slice(key);
                }
            }
        }
    }

    /// Forgets every start: the writes of operations that counted are
    /// dropped.
    pub(crate) fn forget(&self) {
        self.by_prefix
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sled::keys::queue_prefix;

    fn entry(queue: &str, order: u8) -> Vec<u8> {
        let mut key = queue_prefix(READY, queue);
        key.push(order);
        key
    }

    fn writes(entries: &[(Vec<u8>, bool)]) -> Writes {
        entries
            .iter()
            .map(|(key, present)| ((INDEX, Key::new(key)), present.then(Vec::new)))
            .collect()
    }

    #[test]
    fn a_queue_without_a_start_is_scanned_from_its_first_entry() {
        let starts = Starts::default();
        let prefix = queue_prefix(READY, "q");
        assert_eq!(starts.start(&prefix, &Writes::new()), prefix);
    }

    #[test]
    fn an_entry_put_before_the_start_moves_it_back_and_a_removal_does_not() {
        let starts = Starts::default();
        let q = queue_prefix(READY, "q");
        let other = queue_prefix(READY, "q2");
        starts.commit(
            vec![(q.clone(), entry("q", 5)), (other.clone(), entry("q2", 5))],
            &Writes::new(),
        );
        assert_eq!(starts.start(&q, &Writes::new()), entry("q", 5));
        // Removed entries and entries after the start leave it; an entry of
        // another queue leaves this one's.
        starts.commit(
            Vec::new(),
            &writes(&[
                (entry("q", 2), false),
                (entry("q", 9), true),
                (entry("q2", 1), true),
            ]),
        );
        assert_eq!(starts.start(&q, &Writes::new()), entry("q", 5));
        assert_eq!(starts.start(&other, &Writes::new()), entry("q2", 1));
        starts.commit(Vec::new(), &writes(&[(entry("q", 3), true)]));
        assert_eq!(starts.start(&q, &Writes::new()), entry("q", 3));
    }

    #[test]
    fn an_operations_own_entry_before_the_start_is_scanned() {
        let starts = Starts::default();
        let q = queue_prefix(READY, "q");
        starts.commit(vec![(q.clone(), entry("q", 5))], &Writes::new());
        let own = writes(&[(entry("q", 1), false), (entry("q", 4), true)]);
        assert_eq!(starts.start(&q, &own), entry("q", 4));
    }

    #[test]
    fn forgotten_starts_scan_from_the_first_entry() {
        let starts = Starts::default();
        let q = queue_prefix(READY, "q");
        starts.commit(vec![(q.clone(), entry("q", 5))], &Writes::new());
        starts.forget();
        assert_eq!(starts.start(&q, &Writes::new()), q);
    }
}
