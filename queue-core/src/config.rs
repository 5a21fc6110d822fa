use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use queue_proto::limits::DEFAULT_MAX_PAYLOAD;

use crate::clock::{Clock, SystemClock};

/// When a successful operation is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every operation that changes state returns only after its change is
    /// flushed (fsync). Concurrent callers share one flush (group commit), so
    /// throughput grows with concurrency. The default.
    Sync,
    /// Operations return once their batch is written to the journal,
    /// before its fsync; the journal is fsynced every this many
    /// milliseconds. A crash of the process loses nothing acknowledged; a
    /// crash of the machine can lose the changes of the last interval
    /// (acknowledged enqueues and completions included), but never leaves a
    /// job half-changed.
    Periodic(u64),
}

/// How long finished jobs are kept before the timer removes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed jobs; default 24 hours.
    pub completed: Duration,
    /// Dead jobs; default 7 days.
    pub dead: Duration,
    /// Cancelled jobs; default 7 days.
    pub cancelled: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            completed: Duration::from_secs(24 * 3600),
            dead: Duration::from_secs(7 * 24 * 3600),
            cancelled: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Where the jobs are stored.
///
/// Its `Display` and `Debug` never show a database password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storage {
    /// The embedded store in a local data directory (the default): one
    /// process at a time opens it.
    Embedded {
        /// The data directory (created if missing).
        path: PathBuf,
        /// Bytes of page cache; default 64 MiB.
        cache_capacity: u64,
    },
    /// A PostgreSQL database that several processes may share (see
    /// [`Config::postgres`]): every table the queue uses lives in the
    /// database the URL names, prefixed `queue_`, created or migrated at
    /// open.
    Postgres {
        /// A `postgres://user:password@host:port/database` URL (or the
        /// `key=value` form libpq accepts).
        url: String,
        /// How many connections each process opens for reads and lease
        /// rounds (writes go through one more, group-committed); default 8.
        max_connections: usize,
    },
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Embedded { path, .. } => write!(f, "the data directory {}", path.display()),
            Storage::Postgres { url, .. } => match crate::backend::postgres::conn::parse(url) {
                Ok(config) => write!(
                    f,
                    "the database {}",
                    crate::backend::postgres::conn::describe(&config)
                ),
                Err(_) => f.write_str("the database (a URL that does not parse)"),
            },
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Embedded {
                path,
                cache_capacity,
            } => f
                .debug_struct("Embedded")
                .field("path", path)
                .field("cache_capacity", cache_capacity)
                .finish(),
            Storage::Postgres {
                max_connections, ..
            } => f
                .debug_struct("Postgres")
                .field("url", &self.to_string())
                .field("max_connections", max_connections)
                .finish(),
        }
    }
}

/// How to open a [`Queue`](crate::Queue).
///
/// ```no_run
/// use queue_core::{Config, Durability, Queue};
///
/// let queue = Queue::open_with(
///     Config::new("./queue-data").durability(Durability::Periodic(50)),
/// )?;
/// # Ok::<(), queue_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    /// Where the jobs are stored; [`Config::new`] picks the embedded store.
    pub storage: Storage,
    /// When writes are durable; default [`Durability::Sync`].
    pub durability: Durability,
    /// Retention of finished jobs.
    pub retention: Retention,
    /// Largest payload or result in bytes; default 1 MiB, at most 1.5 MiB
    /// (so that a record always stays in the embedded store's fsynced log).
    pub max_payload: usize,
    /// How long events stay in the durable event log; default 24 hours.
    pub event_retention: Duration,
    /// How many events the log keeps at most (the oldest go first);
    /// default 1,000,000.
    pub max_events: u64,
    /// How long the per-minute history of each queue is kept
    /// ([`Queue::history`](crate::Queue::history)); default 7 days.
    /// [`Duration::ZERO`] turns history off: nothing is recorded and
    /// history reads as zeros.
    pub history_retention: Duration,
    /// The clock; default the system clock.
    pub clock: Arc<dyn Clock>,
    /// Seed of the back-off jitter; default derived from the clock.
    pub seed: Option<u64>,
    /// Whether a background thread runs the timers (promotion, lease expiry,
    /// retention). Default `true`; tests that want to step time themselves turn
    /// it off and call [`Queue::run_due`](crate::Queue::run_due).
    pub background_timers: bool,
}

impl Config {
    /// The defaults, with the embedded store's data directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Config {
            storage: Storage::Embedded {
                path: path.into(),
                cache_capacity: 64 * 1024 * 1024,
            },
            durability: Durability::Sync,
            retention: Retention::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            event_retention: Duration::from_secs(24 * 3600),
            max_events: 1_000_000,
            history_retention: Duration::from_secs(7 * 24 * 3600),
            clock: Arc::new(SystemClock),
            seed: None,
            background_timers: true,
        }
    }

    /// The defaults, with the jobs in the PostgreSQL database at `url`.
    ///
    /// Several processes (servers, or programs embedding the queue) may
    /// open the same database at once: leases, timers, schedules,
    /// callbacks and queue limits are safe across them, and waits and event
    /// streams wake across them (`LISTEN/NOTIFY`). Under
    /// [`Durability::Sync`] an operation returns after PostgreSQL committed
    /// it (durable as the server's `synchronous_commit` makes it);
    /// [`Durability::Periodic`] commits the same way (PostgreSQL has no
    /// cheaper mode the queue could use without losing atomicity).
    ///
    /// ```no_run
    /// use queue_core::{Config, Queue};
    ///
    /// let queue = Queue::open_with(Config::postgres("postgres://queue@127.0.0.1:5432/jobs"))?;
    /// # Ok::<(), queue_core::Error>(())
    /// ```
    pub fn postgres(url: impl Into<String>) -> Self {
        Config {
            storage: Storage::Postgres {
                url: url.into(),
                max_connections: 8,
            },
            ..Config::new("")
        }
    }

    /// Sets [`Config::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`Config::retention`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the embedded store's page cache size (no effect on
    /// PostgreSQL).
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        if let Storage::Embedded { cache_capacity, .. } = &mut self.storage {
            *cache_capacity = bytes;
        }
        self
    }

    /// Sets [`Config::max_payload`].
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets [`Config::event_retention`].
    pub fn event_retention(mut self, retention: Duration) -> Self {
        self.event_retention = retention;
        self
    }

    /// Sets [`Config::max_events`].
    pub fn max_events(mut self, events: u64) -> Self {
        self.max_events = events;
        self
    }

    /// Sets [`Config::history_retention`] (`Duration::ZERO`: no history).
    pub fn history_retention(mut self, retention: Duration) -> Self {
        self.history_retention = retention;
        self
    }

    /// Sets [`Config::clock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets [`Config::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets [`Config::background_timers`].
    pub fn background_timers(mut self, on: bool) -> Self {
        self.background_timers = on;
        self
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("storage", &self.storage)
            .field("durability", &self.durability)
            .field("retention", &self.retention)
            .field("max_payload", &self.max_payload)
            .field("event_retention", &self.event_retention)
            .field("max_events", &self.max_events)
            .field("history_retention", &self.history_retention)
            .field("seed", &self.seed)
            .field("background_timers", &self.background_timers)
            .finish_non_exhaustive()
    }
}
