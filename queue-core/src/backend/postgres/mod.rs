//! The PostgreSQL backend: several processes on one database.
//!
//! Every table is described in [`schema`]. Commits and lease rounds go
//! through this process's [`writer`] (group commit: one transaction per
//! batch of waiting operations); reads go to a small set of pipelined
//! connections ([`conn::Pool`]); [`listen`] brings the other processes'
//! wake-ups. All of it runs on a runtime of the backend's own, so that the
//! futures it returns can be polled anywhere (the blocking API polls them
//! on a parked thread).
//!
//! Why tokio-postgres, and this pool: it is the async driver the others
//! build on (sqlx's PostgreSQL driver is a separate implementation with
//! compile-time checked queries we would not use), it pipelines the
//! queries of concurrent callers on one connection, and it gives
//! `LISTEN`'s notifications as they come. A connection multiplexes, so a
//! pool of a few shared connections (reconnected on first use after a
//! failure) serves many concurrent readers without a pool crate.

pub(crate) mod conn;
mod listen;
mod rows;
pub(crate) mod schema;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use queue_proto::JobState;
use tokio::sync::{mpsc, oneshot, watch};

use self::conn::{Conn, Pool, db_error};
use self::rows::{JobColumns, big, kind_code, state_code, state_of, unbig};
use self::writer::{Op, Writer, job_id};
use super::sled::codec;
use super::wake::Wake;
use super::{
    BoxFuture, Commit, Committed, Counts, Due, EventBounds, HistoryRange, Loaded, LoadedSchedule,
    Mode, Page, Revision,
};
use crate::rules::TimerKind;
use crate::rules::lease::LeasePlan;
use crate::settings::QueueSettings;
use crate::{Config, Error, Event, JobId, Result, Storage, Verification};

/// How many job ids one round trip reserves.
const ID_BLOCK: i64 = 32;

/// The backend's runtime, shut down without blocking whoever drops it.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) struct PgBackend {
    handle: tokio::runtime::Handle,
    runtime: Mutex<Runtime>,
    pool: Arc<Pool>,
    ops: Mutex<Option<mpsc::UnboundedSender<Op>>>,
    latest: Arc<watch::Sender<u64>>,
    sink: listen::Sink,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    /// Reserved job ids: the next one and the end of the block.
    ids: Mutex<(u64, u64)>,
}

impl PgBackend {
    pub(crate) fn open(config: &Config) -> Result<PgBackend> {
        let Storage::Postgres {
            url,
            max_connections,
        } = &config.storage
        else {
            return Err(Error::Internal("not a PostgreSQL configuration".into()));
        };
        let pg = conn::parse(url)?;
        let database = conn::describe(&pg);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("queue-core-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(crate::error::StorageError::from_source(e)))?;
        let handle = runtime.handle().clone();
        let runtime = Runtime(Some(runtime));
        // Connect and migrate on the backend's runtime; this thread only
        // waits (it may be a runtime's own thread).
        let setup = {
            let pg = pg.clone();
            let database = database.clone();
            handle.spawn(async move {
                let conn = Conn::connect(&pg).await.map_err(|e| {
                    Error::Storage(crate::error::StorageError::new(format!(
                        "cannot open the queue on {database}: {e}"
                    )))
                })?;
                schema::migrate(&conn, &database).await?;
                let row = conn
                    .client
                    .query_one("SELECT value FROM queue_meta WHERE key = 'last_event'", &[])
                    .await
                    .map_err(db_error)?;
                Ok::<u64, Error>(unbig(row.get(0)))
            })
        };
        let latest_event = crate::executor::block_on(setup)
            .map_err(|e| Error::Internal(format!("the opening task failed: {e}")))??;
        let latest = Arc::new(watch::channel(latest_event).0);
        // A random mark of this process (the standard library's hasher
        // keys are random per process).
        let origin = {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            hasher.finish()
        };
        let (ops, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            config: pg.clone(),
            history_ms: u64::try_from(config.history_retention.as_millis()).unwrap_or(u64::MAX),
            synchronous: config.durability == crate::Durability::Sync,
            latest: Arc::clone(&latest),
            origin,
            retention: config.retention,
        };
        handle.spawn(writer.run(receiver));
        let sink: listen::Sink = Arc::new(std::sync::RwLock::new(None));
        let (stop, stopped) = watch::channel(false);
        handle.spawn(listen::run(
            pg.clone(),
            origin,
            Arc::clone(&latest),
            Arc::clone(&sink),
            stopped,
        ));
        tracing::info!(database, "queue opened on PostgreSQL");
        Ok(PgBackend {
            handle,
            runtime: Mutex::new(runtime),
            pool: Arc::new(Pool::new(pg, *max_connections)),
            ops: Mutex::new(Some(ops)),
            latest,
            sink,
            stop,
            closed: AtomicBool::new(false),
            ids: Mutex::new((0, 0)),
        })
    }

    /// Runs `f` with the pool on the backend's runtime.
    fn read<'a, T, F, Fut>(&'a self, f: F) -> BoxFuture<'a, Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(Error::Closed)));
        }
        let task = self.handle.spawn(f(Arc::clone(&self.pool)));
        Box::pin(async move {
            task.await
                .map_err(|e| Error::Internal(format!("a database task failed: {e}")))?
        })
    }

    /// Hands `op` to the writer.
    fn send(&self, op: Op) -> Result<()> {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        match ops.as_ref() {
            Some(ops) if !self.closed.load(Ordering::SeqCst) => {
                ops.send(op).map_err(|_| Error::Closed)
            }
            _ => Err(Error::Closed),
        }
    }

    /// Sends the writer the operation `op` makes of a reply channel, and
    /// awaits its reply.
    fn ask<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op,
    ) -> BoxFuture<'static, Result<T>> {
        let (reply, answered) = oneshot::channel();
        let sent = self.send(op(reply));
        Box::pin(async move {
            sent?;
            answered.await.map_err(|_| Error::Closed)?
        })
    }
}

/// Counts from `(state, n)` rows.
pub(crate) fn counts_of(rows: &[tokio_postgres::Row]) -> Counts {
    let mut counts = Counts::default();
    for row in rows {
        if let Some(state) = state_of(row.get(0)) {
            *counts.slot(state) = unbig(row.get(1));
        }
    }
    counts
}

pub(crate) const COUNTS: &str = "SELECT state, n FROM queue_counts WHERE queue = $1";

fn loaded(row: &tokio_postgres::Row) -> Result<Loaded> {
    let revision: i64 = row.get(0);
    let (job, _) = codec::decode_job(row.get(1))?;
    Ok(Loaded {
        job,
        revision: Revision(unbig(revision)),
    })
}

fn loaded_schedule(row: &tokio_postgres::Row) -> Result<LoadedSchedule> {
    let revision: i64 = row.get(0);
    let (schedule, _) = codec::decode_schedule(row.get(1))?;
    Ok(LoadedSchedule {
        schedule,
        revision: Revision(unbig(revision)),
    })
}

impl super::Backend for PgBackend {
    fn next_job_id(&self) -> BoxFuture<'_, Result<JobId>> {
        {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            if ids.0 < ids.1 {
                let id = ids.0;
                ids.0 += 1;
                return Box::pin(std::future::ready(Ok(JobId::from_u64(id))));
            }
        }
        let block = self.read(|pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt("SELECT nextval('queue_ids') FROM generate_series(1, $1::bigint)")
                .await?;
            let rows = conn
                .client
                .query(&stmt, &[&ID_BLOCK])
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| unbig(row.get::<_, i64>(0)))
                .collect::<Vec<u64>>())
        });
        Box::pin(async move {
            let block = block.await?;
            let (first, rest) = block
                .split_first()
                .ok_or_else(|| Error::Internal("the id sequence gave nothing".into()))?;
            // The block is contiguous unless another process took ids in
            // between: keep the contiguous run after `first`.
            let run = rest
                .iter()
                .zip(first + 1..)
                .take_while(|(id, expected)| **id == *expected)
                .count() as u64;
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            if ids.0 >= ids.1 {
                *ids = (first + 1, first + 1 + run);
            }
            Ok(JobId::from_u64(*first))
        })
    }

    fn load(&self, id: JobId) -> BoxFuture<'_, Result<Option<Loaded>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt("SELECT revision, record FROM queue_jobs WHERE id = $1")
                .await?;
            let rows = conn
                .client
                .query(&stmt, &[&big(id.as_u64())])
                .await
                .map_err(db_error)?;
            rows.first().map(loaded).transpose()
        })
    }

    fn find_idempotent<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Loaded>>> {
        let (queue, key) = (queue.to_owned(), key.to_owned());
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt(
                    "SELECT revision, record FROM queue_jobs \
                     WHERE queue = $1 AND idempotency_key = $2",
                )
                .await?;
            let rows = conn
                .client
                .query(&stmt, &[&queue, &key])
                .await
                .map_err(db_error)?;
            rows.first().map(loaded).transpose()
        })
    }

    fn commit(&self, commit: Commit, _mode: Mode) -> BoxFuture<'_, Result<Option<Committed>>> {
        self.ask(|reply| Op::Commit { commit, reply })
    }

    fn lease<'a>(
        &'a self,
        queue: &'a str,
        plan: LeasePlan,
        _mode: Mode,
    ) -> BoxFuture<'a, Result<Committed>> {
        self.ask(|reply| Op::Lease {
            queue: queue.to_owned(),
            plan,
            reply,
        })
    }

    fn commit_and_lease<'a>(
        &'a self,
        commit: Commit,
        queue: &'a str,
        plan: LeasePlan,
        _mode: Mode,
    ) -> BoxFuture<'a, Result<Option<(Committed, Committed)>>> {
        self.ask(|reply| Op::CommitAndLease {
            commit,
            queue: queue.to_owned(),
            plan,
            reply,
        })
    }

    fn due(&self, kind: TimerKind, upto: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Due>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = match (kind, kind_code(kind)) {
                (_, Some(code)) => {
                    let stmt = conn
                        .stmt(
                            "SELECT id, due_at, due_lease FROM queue_jobs WHERE due_kind = $1 \
                             AND due_at <= $2 ORDER BY due_at, id LIMIT $3",
                        )
                        .await?;
                    conn.client
                        .query(&stmt, &[&code, &big(upto), &limit])
                        .await
                        .map_err(db_error)?
                }
                (TimerKind::Callback, None) => {
                    let stmt = conn
                        .stmt(
                            "SELECT id, due_callback, NULL::bigint FROM queue_jobs WHERE \
                             due_callback <= $1 ORDER BY due_callback, id LIMIT $2",
                        )
                        .await?;
                    conn.client
                        .query(&stmt, &[&big(upto), &limit])
                        .await
                        .map_err(db_error)?
                }
                (_, None) => {
                    let stmt = conn
                        .stmt(
                            "SELECT id, due_ttl, NULL::bigint FROM queue_jobs WHERE \
                             due_ttl <= $1 ORDER BY due_ttl, id LIMIT $2",
                        )
                        .await?;
                    conn.client
                        .query(&stmt, &[&big(upto), &limit])
                        .await
                        .map_err(db_error)?
                }
            };
            Ok(rows
                .iter()
                .map(|row| Due {
                    id: job_id(row.get(0)),
                    deadline: crate::rules::Deadline {
                        kind,
                        at: unbig(row.get(1)),
                        lease: row
                            .get::<_, Option<i64>>(2)
                            .map(|l| crate::LeaseId::from_u64(unbig(l))),
                    },
                })
                .collect())
        })
    }

    fn first_due(&self, kind: TimerKind) -> BoxFuture<'_, Result<Option<u64>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let rows = match kind_code(kind) {
                Some(code) => {
                    let stmt = conn
                        .stmt(
                            "SELECT due_at FROM queue_jobs WHERE due_kind = $1 \
                             ORDER BY due_at LIMIT 1",
                        )
                        .await?;
                    conn.client.query(&stmt, &[&code]).await
                }
                None if kind == TimerKind::Callback => {
                    let stmt = conn
                        .stmt(
                            "SELECT due_callback FROM queue_jobs WHERE due_callback IS NOT NULL \
                             ORDER BY due_callback LIMIT 1",
                        )
                        .await?;
                    conn.client.query(&stmt, &[]).await
                }
                None => {
                    let stmt = conn
                        .stmt(
                            "SELECT due_ttl FROM queue_jobs WHERE due_ttl IS NOT NULL \
                             ORDER BY due_ttl LIMIT 1",
                        )
                        .await?;
                    conn.client.query(&stmt, &[]).await
                }
            }
            .map_err(db_error)?;
            Ok(rows.first().map(|row| unbig(row.get(0))))
        })
    }

    fn page<'a>(
        &'a self,
        page: &'a Page,
        after: Option<JobId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<JobId>>> {
        let page = page.clone();
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let after = after.map(|id| big(id.as_u64())).unwrap_or(-1);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = match &page {
                Page::State { queue, state } => {
                    let stmt = conn
                        .stmt(
                            "SELECT id FROM queue_jobs WHERE queue = $1 AND state = $2 \
                             AND id > $3 ORDER BY id LIMIT $4",
                        )
                        .await?;
                    conn.client
                        .query(&stmt, &[queue, &state_code(*state), &after, &limit])
                        .await
                }
                Page::Correlation { id } => {
                    let stmt = conn
                        .stmt(
                            "SELECT id FROM queue_jobs WHERE correlation_id = $1 \
                             AND id > $2 ORDER BY id LIMIT $3",
                        )
                        .await?;
                    conn.client.query(&stmt, &[id, &after, &limit]).await
                }
                Page::Callbacks { status } => {
                    let stmt = conn
                        .stmt(
                            "SELECT id FROM queue_jobs WHERE callback_status = $1 \
                             AND id > $2 ORDER BY id LIMIT $3",
                        )
                        .await?;
                    conn.client
                        .query(&stmt, &[&rows::callback_code(*status), &after, &limit])
                        .await
                }
            }
            .map_err(db_error)?;
            Ok(rows.iter().map(|row| job_id(row.get(0))).collect())
        })
    }

    fn settings<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<QueueSettings>> {
        let queue = queue.to_owned();
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt("SELECT record FROM queue_settings WHERE queue = $1")
                .await?;
            let rows = conn
                .client
                .query(&stmt, &[&queue])
                .await
                .map_err(db_error)?;
            match rows.first() {
                Some(row) => codec::decode_settings(row.get(0)),
                None => Ok(QueueSettings::default()),
            }
        })
    }

    fn counts<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Counts>> {
        let queue = queue.to_owned();
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn.stmt(COUNTS).await?;
            let rows = conn
                .client
                .query(&stmt, &[&queue])
                .await
                .map_err(db_error)?;
            Ok(counts_of(&rows))
        })
    }

    fn oldest_ready<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        let queue = queue.to_owned();
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt(
                    "SELECT run_at FROM queue_jobs WHERE queue = $1 AND state = 1 \
                     ORDER BY run_at LIMIT 1",
                )
                .await?;
            let rows = conn
                .client
                .query(&stmt, &[&queue])
                .await
                .map_err(db_error)?;
            Ok(rows.first().map(|row| unbig(row.get(0))))
        })
    }

    fn queue_names(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt(
                    "SELECT queue FROM queue_counts WHERE n > 0 \
                     UNION SELECT queue FROM queue_settings ORDER BY 1",
                )
                .await?;
            let rows = conn.client.query(&stmt, &[]).await.map_err(db_error)?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn events_after(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt("SELECT id, record FROM queue_events WHERE id > $1 ORDER BY id LIMIT $2")
                .await?;
            let rows = conn
                .client
                .query(
                    &stmt,
                    &[&big(after), &i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(db_error)?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                events.extend(codec::decode_items(unbig(row.get(0)), row.get(1))?);
            }
            Ok(events)
        })
    }

    fn event_bounds(&self) -> BoxFuture<'_, Result<EventBounds>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let oldest = conn
                .stmt("SELECT id, at FROM queue_events ORDER BY id LIMIT 1")
                .await?;
            let latest = conn
                .stmt("SELECT value FROM queue_meta WHERE key = 'last_event'")
                .await?;
            // The latest first: an event pruned in between leaves the
            // oldest later, never before the latest.
            let latest = conn
                .client
                .query_one(&latest, &[])
                .await
                .map_err(db_error)?;
            let oldest = conn.client.query(&oldest, &[]).await.map_err(db_error)?;
            Ok(EventBounds {
                oldest: oldest
                    .first()
                    .map(|row| (unbig(row.get(0)), unbig(row.get(1)))),
                latest: unbig(latest.get(0)),
            })
        })
    }

    fn watch_events(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    fn history<'a>(
        &'a self,
        queue: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<HistoryRange>> {
        let queue = queue.to_owned();
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let range = conn
                .stmt(
                    "SELECT minute, record FROM queue_history WHERE queue = $1 \
                     AND minute >= $2 AND minute <= $3 ORDER BY minute",
                )
                .await?;
            let before = conn
                .stmt(
                    "SELECT record FROM queue_history WHERE queue = $1 AND minute < $2 \
                     ORDER BY minute DESC LIMIT 1",
                )
                .await?;
            let rows = conn
                .client
                .query(&range, &[&queue, &big(from), &big(to)])
                .await
                .map_err(db_error)?;
            let earlier = conn
                .client
                .query(&before, &[&queue, &big(from)])
                .await
                .map_err(db_error)?;
            let mut minutes = Vec::with_capacity(rows.len());
            for row in &rows {
                minutes.push((unbig(row.get(0)), codec::decode_rollup(row.get(1))?));
            }
            let before = match earlier.first() {
                Some(row) => Some(codec::decode_rollup(row.get(0))?.depths),
                None => None,
            };
            Ok(HistoryRange { before, minutes })
        })
    }

    fn prune_events(&self, before_at: u64, keep: u64, _mode: Mode) -> BoxFuture<'_, Result<u64>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            // One statement: the oldest events while older than
            // `before_at` (up to the first that is not) or beyond the
            // newest `keep`.
            let stmt = conn
                .stmt(
                    "DELETE FROM queue_events WHERE id <= GREATEST(\
                     (SELECT value FROM queue_meta WHERE key = 'last_event') - $2, \
                     COALESCE((SELECT min(id) FROM queue_events WHERE at >= $1) - 1, \
                     (SELECT value FROM queue_meta WHERE key = 'last_event')))",
                )
                .await?;
            let removed = conn
                .client
                .execute(&stmt, &[&big(before_at), &big(keep)])
                .await
                .map_err(db_error)?;
            Ok(removed)
        })
    }

    fn load_schedule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<LoadedSchedule>>> {
        let name = name.to_owned();
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt("SELECT revision, record FROM queue_schedules WHERE name = $1")
                .await?;
            let rows = conn.client.query(&stmt, &[&name]).await.map_err(db_error)?;
            rows.first().map(loaded_schedule).transpose()
        })
    }

    fn schedules(&self) -> BoxFuture<'_, Result<Vec<LoadedSchedule>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt("SELECT revision, record FROM queue_schedules ORDER BY name")
                .await?;
            let rows = conn.client.query(&stmt, &[]).await.map_err(db_error)?;
            rows.iter().map(loaded_schedule).collect()
        })
    }

    fn due_schedules(&self, upto: u64, limit: usize) -> BoxFuture<'_, Result<Vec<String>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt(
                    "SELECT name FROM queue_schedules WHERE next_run_at <= $1 \
                     ORDER BY next_run_at, name LIMIT $2",
                )
                .await?;
            let rows = conn
                .client
                .query(
                    &stmt,
                    &[&big(upto), &i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn first_schedule_due(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            let stmt = conn
                .stmt(
                    "SELECT next_run_at FROM queue_schedules WHERE next_run_at IS NOT NULL \
                     ORDER BY next_run_at LIMIT 1",
                )
                .await?;
            let rows = conn.client.query(&stmt, &[]).await.map_err(db_error)?;
            Ok(rows.first().map(|row| unbig(row.get(0))))
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        // A transaction with an id, committed synchronously, flushes the
        // WAL up to it: every earlier commit (those of `Periodic`
        // durability included) is durable after it.
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            conn.client
                .batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT",
                )
                .await
                .map_err(db_error)
        })
    }

    fn verify(&self) -> BoxFuture<'_, Result<Verification>> {
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            verify(&conn).await
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
        candidate: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.read(move |pool| async move {
            let conn = pool.get().await?;
            conn.client
                .execute(
                    "INSERT INTO queue_secrets (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &candidate],
                )
                .await
                .map_err(db_error)?;
            let row = conn
                .client
                .query_one("SELECT value FROM queue_secrets WHERE name = $1", &[&name])
                .await
                .map_err(db_error)?;
            Ok(Some(row.get(0)))
        })
    }

    fn set_wake_sink(&self, sink: Arc<dyn Fn(&Wake) + Send + Sync>) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.stop.send(true);
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.sink.write().unwrap_or_else(|p| p.into_inner()).take();
        let runtime = std::mem::replace(
            &mut *self.runtime.lock().unwrap_or_else(|p| p.into_inner()),
            Runtime(None),
        );
        drop(runtime);
    }
}

/// Recomputes the derived columns and the counts from the records.
/// Compares a count table (`sql` selects key, key, count) with the counts
/// the records imply, noting a difference among `problems`.
async fn compare_counts<K>(
    conn: &Conn,
    sql: &str,
    what: &str,
    expected: &std::collections::BTreeMap<(String, K), i64>,
    problems: &mut Vec<String>,
) -> Result<()>
where
    K: Ord + std::fmt::Debug + for<'a> tokio_postgres::types::FromSql<'a>,
{
    let rows = conn.client.query(sql, &[]).await.map_err(db_error)?;
    let stored: std::collections::BTreeMap<(String, K), i64> = rows
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    if &stored != expected {
        problems.push(format!(
            "stored {what} {stored:?} differ from the records' {expected:?}"
        ));
    }
    Ok(())
}

async fn verify(conn: &Conn) -> Result<Verification> {
    let mut report = Verification {
        jobs: 0,
        by_state: [0; 6],
        problems: Vec::new(),
    };
    let mut counts: std::collections::BTreeMap<(String, i16), i64> = Default::default();
    let mut groups: std::collections::BTreeMap<(String, String), i64> = Default::default();
    let stmt = conn
        .stmt(
            "SELECT id, revision, queue, state, lease_rank, run_at, grp, idempotency_key, \
             correlation_id, callback_status, due_kind, due_at, due_lease, due_callback, \
             due_ttl, record FROM queue_jobs WHERE id > $1 ORDER BY id LIMIT 1000",
        )
        .await?;
    let mut after: i64 = -1;
    loop {
        let rows = conn
            .client
            .query(&stmt, &[&after])
            .await
            .map_err(db_error)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let id: i64 = row.get(0);
            after = id;
            let (job, revision) = match codec::decode_job(row.get(15)) {
                Ok(decoded) => decoded,
                Err(e) => {
                    report.problems.push(format!("job {id}: {e}"));
                    continue;
                }
            };
            report.jobs += 1;
            report.by_state[crate::counts::state_index(job.state)] += 1;
            if big(job.id.as_u64()) != id {
                report
                    .problems
                    .push(format!("row {id} holds the record of job {}", job.id));
            }
            if big(revision.0) != row.get::<_, i64>(1) {
                report.problems.push(format!(
                    "job {id}: revision column {} but record {}",
                    row.get::<_, i64>(1),
                    revision.0
                ));
            }
            let stored = JobColumns {
                queue: row.get(2),
                state: row.get(3),
                lease_rank: row.get(4),
                run_at: row.get(5),
                group: row.get(6),
                idempotency_key: row.get(7),
                correlation_id: row.get(8),
                callback_status: row.get(9),
                due_kind: row.get(10),
                due_at: row.get(11),
                due_lease: row.get(12),
                due_callback: row.get(13),
                due_ttl: row.get(14),
            };
            let derived = JobColumns::of(&job);
            if stored != derived {
                report.problems.push(format!(
                    "job {id}: columns {stored:?} differ from its record's {derived:?}"
                ));
            }
            report
                .problems
                .extend(crate::verification::invariant_problems(&job));
            *counts
                .entry((job.queue.clone(), state_code(job.state)))
                .or_default() += 1;
            if let (Some(group), JobState::Leased) = (&job.group, job.state) {
                *groups
                    .entry((job.queue.clone(), group.clone()))
                    .or_default() += 1;
            }
        }
    }
    compare_counts(
        conn,
        "SELECT queue, state, n FROM queue_counts WHERE n <> 0",
        "counts",
        &counts,
        &mut report.problems,
    )
    .await?;
    compare_counts(
        conn,
        "SELECT queue, grp, n FROM queue_group_leased WHERE n <> 0",
        "group counts",
        &groups,
        &mut report.problems,
    )
    .await?;
    let rows = conn
        .client
        .query(
            "SELECT name, revision, next_run_at, record FROM queue_schedules",
            &[],
        )
        .await
        .map_err(db_error)?;
    for row in &rows {
        let name: String = row.get(0);
        match codec::decode_schedule(row.get(3)) {
            Ok((schedule, revision)) => {
                let due = schedule.next_run_at.filter(|_| !schedule.paused).map(big);
                if due != row.get::<_, Option<i64>>(2) || big(revision.0) != row.get::<_, i64>(1) {
                    report
                        .problems
                        .push(format!("schedule {name:?}: columns differ from its record"));
                }
            }
            Err(e) => report.problems.push(format!("schedule {name:?}: {e}")),
        }
    }
    let rows = conn
        .client
        .query("SELECT queue, minute, record FROM queue_history", &[])
        .await
        .map_err(db_error)?;
    for row in &rows {
        let bytes: &[u8] = row.get(2);
        if let Err(e) = codec::decode_rollup(bytes) {
            let queue: String = row.get(0);
            let minute: i64 = row.get(1);
            report
                .problems
                .push(format!("history of {queue:?} at {minute}: {e}"));
        }
    }
    Ok(report)
}
