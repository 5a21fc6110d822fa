//! Wake-ups for waiters (long-poll leases, waits for a terminal state),
//! usable from blocking threads and from async tasks alike. A signal exists
//! only while someone waits on it, so waits on arbitrary names cost nothing
//! once they end.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::watch;

pub(crate) struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
    watch: watch::Sender<u64>,
    /// Waiters inside a wait (tests use it to act only once one is parked).
    parked: AtomicUsize,
}

/// Counts a waiter as parked while it lives.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Parked(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Signal {
    fn bump(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *generation += 1;
        self.changed.notify_all();
        self.watch.send_replace(*generation);
    }
}

pub(crate) struct Signals<K: Hash + Eq + Clone> {
    map: Mutex<HashMap<K, Arc<Signal>>>,
}

impl<K: Hash + Eq + Clone> Signals<K> {
    pub(crate) fn new() -> Self {
        Signals {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes everyone waiting on `key`.
    pub(crate) fn bump(&self, key: &K) {
        let signal = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(signal) = signal {
            signal.bump();
        }
    }

    /// Wakes everyone waiting on any key (a manual clock moved: waits for
    /// a time, such as a token bucket's refill, may be over).
    pub(crate) fn bump_all(&self) {
        let signals: Vec<Arc<Signal>> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for signal in signals {
            signal.bump();
        }
    }

    /// How many waiters on `key` are inside a wait now.
    pub(crate) fn parked(&self, key: &K) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, |signal| signal.parked.load(Ordering::SeqCst))
    }

    /// Starts waiting on `key`. Register before checking the condition, so
    /// that a change between the check and the wait is not missed.
    pub(crate) fn register(&self, key: K) -> Registration<'_, K> {
        let signal = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Signal {
                    generation: Mutex::new(0),
                    changed: Condvar::new(),
                    watch: watch::Sender::new(0),
                    parked: AtomicUsize::new(0),
                })
            })
            .clone();
        // Read the generation and subscribe under the lock `bump` takes, so
        // the blocking and the async view start from the same generation.
        let (seen, rx) = {
            let generation = signal.generation.lock().unwrap_or_else(|p| p.into_inner());
            (*generation, signal.watch.subscribe())
        };
        Registration {
            owner: self,
            key,
            signal,
            seen,
            rx,
        }
    }
}

pub(crate) struct Registration<'a, K: Hash + Eq + Clone> {
    owner: &'a Signals<K>,
    key: K,
    signal: Arc<Signal>,
    seen: u64,
    rx: watch::Receiver<u64>,
}

impl<K: Hash + Eq + Clone> Registration<'_, K> {
    /// Blocks until the signal is bumped after the last wait (or the
    /// registration) or `deadline` passes; `false` on timeout.
    pub(crate) fn wait_until(&mut self, deadline: Instant) -> bool {
        let signal = Arc::clone(&self.signal);
        let _parked = Parked::new(&signal.parked);
        let mut generation = self
            .signal
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *generation == self.seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            generation = self
                .signal
                .changed
                .wait_timeout(generation, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.seen = *generation;
        true
    }

    /// Waits for the next bump after the last wait (or the registration).
    pub(crate) async fn changed(&mut self) {
        let signal = Arc::clone(&self.signal);
        let _parked = Parked::new(&signal.parked);
        // The sender lives in `self.signal`, so `changed` cannot fail.
        let _ = self.rx.changed().await;
        self.seen = *self.rx.borrow_and_update();
    }
}

impl<K: Hash + Eq + Clone> Drop for Registration<'_, K> {
    fn drop(&mut self) {
        let mut map = self.owner.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this registration: nobody else waits, forget the key.
        if Arc::strong_count(&self.signal) == 2 {
            map.remove(&self.key);
        }
    }
}
