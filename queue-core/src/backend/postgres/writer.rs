//! The writer: every commit, lease round and event pruning of this process
//! goes through one connection, in batches: the operations waiting when a
//! batch starts run in one transaction, so that they share one commit (and
//! one WAL flush); a commit and lease ([`Op::CommitAndLease`]) is one
//! operation, so both its parts are in that one transaction. The rows
//! every transaction touches (counts, the event counter, history minutes)
//! are locked once per batch and in key order, released at its commit.
//! Other processes' writers serialize with this one on those rows, never
//! deadlock on them.
//!
//! An operation whose expectation does not hold (stale) changes nothing:
//! a single change is an `UPDATE … WHERE revision = $r` that matches no
//! row, or an `INSERT … ON CONFLICT DO NOTHING` that inserts none; an
//! operation of several changes runs under a savepoint, rolled back when
//! one of them is stale. A database error fails the batch's transaction:
//! a deadlock or serialization failure reruns it; any other error reruns
//! its operations one per transaction, so that only the operation that
//! causes it fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use queue_proto::{HISTORY_MINUTE_MS, JobState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;

use super::conn::{Conn, db_error, is_retryable};
use super::rows::{JobColumns, big, state_code, unbig};
use crate::backend::sled::codec;
use crate::backend::wake::Wake;
use crate::backend::{Change, Commit, Committed, Expect, Policy, Revision, ScheduleChange};
use crate::rules::history::{self, Depths, Rollup};
use crate::rules::lease::{LeasePlan, Offer};
use crate::settings::QueueSettings;
use crate::{Error, Job, JobId, LeaseId, Result};

/// The most operations one batch takes.
const MAX_BATCH: usize = 256;
/// How many times a batch that deadlocked is run again.
const RETRIES: usize = 5;
/// History minutes removed per step (as in the embedded store).
const HISTORY_PRUNE: i64 = 64;

/// An operation for the writer.
pub(crate) enum Op {
    Commit {
        commit: Commit,
        reply: oneshot::Sender<Result<Option<Committed>>>,
    },
    Lease {
        queue: String,
        plan: LeasePlan,
        reply: oneshot::Sender<Result<Committed>>,
    },
    /// A commit and a lease round on `queue` in the same transaction:
    /// the commit is applied at its place in the batch, the round with the
    /// batch's other lease calls of its queue (after every commit, so it
    /// sees this one's changes). No round runs if the commit is stale.
    CommitAndLease {
        commit: Commit,
        queue: String,
        plan: LeasePlan,
        reply: oneshot::Sender<Result<Option<(Committed, Committed)>>>,
    },
}

impl Op {
    /// The commit of this operation, if it has one that is simple (see
    /// [`simple`]).
    fn simple_commit(&self) -> Option<&Commit> {
        match self {
            Op::Commit { commit, .. } | Op::CommitAndLease { commit, .. } if simple(commit) => {
                Some(commit)
            }
            Op::Commit { .. } | Op::CommitAndLease { .. } | Op::Lease { .. } => None,
        }
    }
}

/// What an operation did, before its event ids are known.
enum Done {
    Commit(Option<Committed>),
    Lease(Committed),
    /// The commit's part and the round's (`None`: the commit was stale).
    CommitAndLease(Option<(Committed, Committed)>),
}

impl Done {
    /// What `commit` answered, for an operation made of it.
    fn of_commit(op: &Op, committed: Option<Committed>) -> Done {
        match op {
            Op::CommitAndLease { .. } => {
                Done::CommitAndLease(committed.map(|c| (c, Committed::default())))
            }
            Op::Commit { .. } | Op::Lease { .. } => Done::Commit(committed),
        }
    }

    /// The part `part` of what the operation applied (a commit or a lease
    /// is one part; a commit and lease both).
    fn part(&self, part: Part) -> Option<&Committed> {
        match (self, part) {
            (Done::Commit(committed), Part::Commit) => committed.as_ref(),
            (Done::Lease(committed), Part::Lease) => Some(committed),
            (Done::CommitAndLease(Some((committed, _))), Part::Commit) => Some(committed),
            (Done::CommitAndLease(Some((_, leased))), Part::Lease) => Some(leased),
            (Done::Commit(_), Part::Lease)
            | (Done::Lease(_), Part::Commit)
            | (Done::CommitAndLease(None), _) => None,
        }
    }
}

/// A part of an operation, in the order the batch applied them: a commit
/// (applied at the operation's place in the batch) or a lease round
/// (applied after every commit of the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Commit,
    Lease,
}

/// What a batch gathers from its operations, written at its end.
#[derive(Default)]
struct Gathered {
    counts: BTreeMap<(String, i16), i64>,
    groups: BTreeMap<(String, String), i64>,
    /// Encoded events with their times and jobs, in commit order.
    events: Vec<(i64, i64, Vec<u8>)>,
    history: BTreeMap<(String, u64), Rollup>,
    wake: Wake,
}

/// The writer's settings.
pub(crate) struct Writer {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) history_ms: u64,
    pub(crate) synchronous: bool,
    pub(crate) latest: Arc<watch::Sender<u64>>,
    /// This process's mark on its `NOTIFY` payloads (the engine wakes
    /// its own waiters itself).
    pub(crate) origin: u64,
    pub(crate) retention: crate::Retention,
}

impl Writer {
    /// Runs batches until every sender is gone.
    pub(crate) async fn run(self, mut ops: mpsc::UnboundedReceiver<Op>) {
        let mut conn: Option<Conn> = None;
        while let Some(first) = ops.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                match self.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        fail_all(batch, &e);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_ref() else { continue };
            self.run_batch(c, batch).await;
        }
    }

    async fn connect(&self) -> Result<Conn> {
        let conn = Conn::connect(&self.config).await?;
        if !self.synchronous {
            conn.client
                .batch_execute("SET synchronous_commit = off")
                .await
                .map_err(db_error)?;
        }
        Ok(conn)
    }

    async fn run_batch(&self, conn: &Conn, batch: Vec<Op>) {
        let mut attempts = 0;
        loop {
            match self.transaction(conn, &batch).await {
                Ok((done, order, gathered, first_event)) => {
                    self.finished(batch, done, &order, gathered, first_event);
                    return;
                }
                Err(Failure::Retry) if attempts < RETRIES => attempts += 1,
                Err(Failure::Retry) | Err(Failure::Db(_)) if batch.len() > 1 => {
                    // Find the operation at fault: each alone.
                    for op in batch {
                        Box::pin(self.run_batch(conn, vec![op])).await;
                    }
                    return;
                }
                Err(Failure::Retry) => {
                    fail_all(
                        batch,
                        &Error::Storage(crate::error::StorageError::new(
                            "PostgreSQL kept aborting the transaction (deadlocks)",
                        )),
                    );
                    return;
                }
                Err(Failure::Db(e)) | Err(Failure::Engine(e)) => {
                    fail_all(batch, &e);
                    return;
                }
            }
        }
    }

    /// Answers the operations of a committed batch and announces it.
    fn finished(
        &self,
        batch: Vec<Op>,
        done: Vec<Done>,
        order: &[(usize, Part)],
        gathered: Gathered,
        first_event: u64,
    ) {
        // Subscribers may read the events before anyone is answered.
        if !gathered.events.is_empty() {
            let latest = first_event + gathered.events.len() as u64 - 1;
            self.latest
                .send_modify(|value| *value = (*value).max(latest));
        }
        let events_of = |committed: &Committed| -> u64 {
            committed
                .applied
                .iter()
                .map(|c| c.outcome.events().count() as u64)
                .sum()
        };
        // The events were logged in the order the parts were applied: the
        // first event id of each operation's commit part and lease part.
        let mut firsts = vec![(0, 0); done.len()];
        let mut next_event = first_event;
        for &(i, part) in order {
            match part {
                Part::Commit => firsts[i].0 = next_event,
                Part::Lease => firsts[i].1 = next_event,
            }
            next_event += done[i].part(part).map_or(0, events_of);
        }
        for ((op, done), (first, first_leased)) in batch.into_iter().zip(done).zip(firsts) {
            let stamp = |mut committed: Committed, first: u64| {
                committed.events = events_of(&committed);
                committed.first_event = first;
                committed
            };
            match (op, done) {
                (Op::Commit { reply, .. }, Done::Commit(committed)) => {
                    let _ = reply.send(Ok(committed.map(|c| stamp(c, first))));
                }
                (Op::Lease { reply, .. }, Done::Lease(committed)) => {
                    let _ = reply.send(Ok(stamp(committed, first_leased)));
                }
                (Op::CommitAndLease { reply, .. }, Done::CommitAndLease(parts)) => {
                    let _ = reply.send(Ok(parts.map(|(committed, leased)| {
                        (stamp(committed, first), stamp(leased, first_leased))
                    })));
                }
                (Op::Commit { reply, .. }, Done::Lease(_) | Done::CommitAndLease(_)) => {
                    let _ = reply.send(Err(Error::Internal("writer answers mixed up".into())));
                }
                (Op::Lease { reply, .. }, Done::Commit(_) | Done::CommitAndLease(_)) => {
                    let _ = reply.send(Err(Error::Internal("writer answers mixed up".into())));
                }
                (Op::CommitAndLease { reply, .. }, Done::Commit(_) | Done::Lease(_)) => {
                    let _ = reply.send(Err(Error::Internal("writer answers mixed up".into())));
                }
            }
        }
    }

    /// Runs `batch` in one transaction and commits it.
    async fn transaction(
        &self,
        conn: &Conn,
        batch: &[Op],
    ) -> std::result::Result<(Vec<Done>, Vec<(usize, Part)>, Gathered, u64), Failure> {
        conn.client
            .batch_execute("BEGIN")
            .await
            .map_err(Failure::of)?;
        match self.body(conn, batch).await {
            Ok(result) => {
                conn.client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(Failure::of)?;
                Ok(result)
            }
            Err(e) => {
                let _ = conn.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn body(
        &self,
        conn: &Conn,
        batch: &[Op],
    ) -> std::result::Result<(Vec<Done>, Vec<(usize, Part)>, Gathered, u64), Failure> {
        let mut gathered = Gathered::default();
        let mut done: Vec<Option<Done>> = batch.iter().map(|_| None).collect();
        // The order the parts of the operations are applied in (their
        // events' order).
        let mut order = Vec::with_capacity(batch.len());
        // The operations with a lease round, in batch order.
        let mut leases: Vec<usize> = Vec::new();
        let mut at = 0;
        while at < batch.len() {
            if let Op::Lease { .. } = &batch[at] {
                leases.push(at);
                at += 1;
                continue;
            }
            // A run of simple commits (no savepoint, nothing to decide
            // between their statements) is sent pipelined: one round trip
            // for the run instead of one per operation.
            let run = batch[at..]
                .iter()
                .take_while(|op| op.simple_commit().is_some())
                .count();
            if run > 1 {
                let commits: Vec<&Commit> = batch[at..at + run]
                    .iter()
                    .filter_map(Op::simple_commit)
                    .collect();
                let answers = self.simple_commits(conn, &commits, &mut gathered).await?;
                for (offset, committed) in answers.into_iter().enumerate() {
                    let i = at + offset;
                    if matches!(batch[i], Op::CommitAndLease { .. }) && committed.is_some() {
                        leases.push(i);
                    }
                    done[i] = Some(Done::of_commit(&batch[i], committed));
                    order.push((i, Part::Commit));
                }
                at += run;
                continue;
            }
            match &batch[at] {
                Op::Commit { commit, .. } => {
                    let committed = self.commit(conn, commit, &mut gathered).await?;
                    done[at] = Some(Done::Commit(committed));
                    order.push((at, Part::Commit));
                }
                Op::CommitAndLease { commit, .. } => {
                    let committed = self.commit(conn, commit, &mut gathered).await?;
                    if committed.is_some() {
                        leases.push(at);
                    }
                    done[at] = Some(Done::of_commit(&batch[at], committed));
                    order.push((at, Part::Commit));
                }
                Op::Lease { .. } => {}
            }
            at += 1;
        }
        // The lease calls last (they were concurrent with the rest: any
        // order is one they could have run in, and this one lets them
        // take what the batch's settlements freed; a commit and lease's
        // round comes after its own commit, as it must), those on one
        // queue served from the same candidate rows one call after the
        // other.
        let lease_of = |i: usize| match &batch[i] {
            Op::Lease { queue, plan, .. } | Op::CommitAndLease { queue, plan, .. } => {
                Some((queue.as_str(), plan))
            }
            Op::Commit { .. } => None,
        };
        leases.sort_unstable();
        let mut queues: Vec<&str> = Vec::new();
        for &i in &leases {
            if let Some((queue, _)) = lease_of(i) {
                if !queues.contains(&queue) {
                    queues.push(queue);
                }
            }
        }
        for queue in queues {
            let calls: Vec<(usize, &LeasePlan)> = leases
                .iter()
                .filter_map(|&i| match lease_of(i) {
                    Some((q, plan)) if q == queue => Some((i, plan)),
                    _ => None,
                })
                .collect();
            let plans: Vec<&LeasePlan> = calls.iter().map(|(_, plan)| *plan).collect();
            let answers = self.lease(conn, queue, &plans, &mut gathered).await?;
            for ((i, _), committed) in calls.into_iter().zip(answers) {
                match &mut done[i] {
                    Some(Done::CommitAndLease(Some((_, leased)))) => *leased = committed,
                    slot => *slot = Some(Done::Lease(committed)),
                }
                order.push((i, Part::Lease));
            }
        }
        let done = done
            .into_iter()
            .map(|d| {
                d.ok_or_else(|| Failure::Engine(Error::Internal("an operation was not run".into())))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let first_event = self.write_end(conn, &mut gathered).await?;
        Ok((done, order, gathered, first_event))
    }

    /// Simple commits (see [`simple`]), their writes pipelined; each
    /// change applies or not on its own (an all-or-nothing commit has one).
    async fn simple_commits(
        &self,
        conn: &Conn,
        commits: &[&Commit],
        gathered: &mut Gathered,
    ) -> std::result::Result<Vec<Option<Committed>>, Failure> {
        let mut writes = Vec::new();
        for commit in commits {
            for change in &commit.changes {
                writes.push(Write::of(change).map_err(Failure::Engine)?);
            }
        }
        for write in &writes {
            write.statement(conn).await?;
        }
        let results =
            futures_util::future::join_all(writes.iter().map(|write| write.execute(conn))).await;
        let mut results = results.into_iter();
        let mut answers = Vec::with_capacity(commits.len());
        for commit in commits {
            let mut applied = Vec::new();
            for change in &commit.changes {
                let written = results.next().ok_or_else(|| {
                    Failure::Engine(Error::Internal("a pipelined write went missing".into()))
                })??;
                if written == 1 {
                    gathered.change(change, self.history_ms > 0, &self.retention);
                    applied.push(change.clone());
                }
            }
            let stale =
                commit.policy == Policy::AllOrNothing && applied.len() < commit.changes.len();
            answers.push((!stale).then_some(Committed {
                applied,
                events: 0,
                first_event: 0,
                retry_at: None,
            }));
        }
        Ok(answers)
    }

    // ---- one commit ------------------------------------------------------

    async fn commit(
        &self,
        conn: &Conn,
        commit: &Commit,
        gathered: &mut Gathered,
    ) -> std::result::Result<Option<Committed>, Failure> {
        let guarded = commit.policy == Policy::AllOrNothing && commit.changes.len() > 1
            || !commit.schedules.is_empty()
            || !commit.settings.is_empty();
        if guarded {
            conn.client
                .batch_execute("SAVEPOINT op")
                .await
                .map_err(Failure::of)?;
        }
        let mut own = Gathered::default();
        let mut applied = Vec::with_capacity(commit.changes.len());
        let mut stale = false;
        for change in &commit.changes {
            if self.apply(conn, change, &mut own).await? {
                applied.push(change.clone());
            } else if commit.policy == Policy::AllOrNothing {
                stale = true;
                break;
            }
        }
        if !stale {
            for schedule in &commit.schedules {
                if !apply_schedule(conn, schedule).await? {
                    stale = true;
                    break;
                }
            }
        }
        if !stale {
            for (queue, update) in &commit.settings {
                let stored = settings_for_update(conn, queue).await?;
                put_settings(conn, queue, &update.apply(&stored)).await?;
                own.wake.queues.insert(queue.clone());
            }
        }
        if stale {
            if guarded {
                conn.client
                    .batch_execute("ROLLBACK TO SAVEPOINT op")
                    .await
                    .map_err(Failure::of)?;
            }
            return Ok(None);
        }
        if guarded {
            conn.client
                .batch_execute("RELEASE SAVEPOINT op")
                .await
                .map_err(Failure::of)?;
        }
        if !commit.schedules.is_empty() {
            own.wake.timer = true;
        }
        gathered.absorb(own);
        Ok(Some(Committed {
            applied,
            events: 0,
            first_event: 0,
            retry_at: None,
        }))
    }

    /// Writes `change` if its expectation holds; gathers its effects.
    async fn apply(
        &self,
        conn: &Conn,
        change: &Change,
        gathered: &mut Gathered,
    ) -> std::result::Result<bool, Failure> {
        let write = Write::of(change).map_err(Failure::Engine)?;
        let written = write.execute(conn).await?;
        if written != 1 {
            return Ok(false);
        }
        gathered.change(change, self.history_ms > 0, &self.retention);
        Ok(true)
    }

    // ---- one lease round -------------------------------------------------

    /// The lease calls `plans` on `queue`, one round after the other (each
    /// starting from the settings, bucket and leased count the one before
    /// left), served from one scan of the ready rows in lease order; their
    /// writes go pipelined at the end.
    async fn lease(
        &self,
        conn: &Conn,
        queue: &str,
        plans: &[&LeasePlan],
        gathered: &mut Gathered,
    ) -> std::result::Result<Vec<Committed>, Failure> {
        let stmt = conn
            .stmt(SETTINGS_AND_LEASED)
            .await
            .map_err(Failure::Engine)?;
        let row = conn
            .client
            .query_one(&stmt, &[&queue])
            .await
            .map_err(Failure::of)?;
        let mut settings = match row.get::<_, Option<&[u8]>>(0) {
            Some(bytes) => codec::decode_settings(bytes).map_err(Failure::Engine)?,
            None => QueueSettings::default(),
        };
        let mut leased_stored = row.get::<_, Option<i64>>(1).unwrap_or(0);
        let limited = settings.limits.max_leased.is_some()
            || settings.limits.rate_limit.is_some()
            || settings.limits.group_max_leased.is_some();
        if limited {
            // Serializes the lease rounds of this queue across processes:
            // the count read next is not exceeded by a concurrent round.
            settings = settings_for_update(conn, queue).await?;
            leased_stored = count(conn, queue, JobState::Leased).await?;
        }
        let leased_before = unbig(
            (leased_stored
                + gathered
                    .counts
                    .get(&(queue.to_owned(), state_code(JobState::Leased)))
                    .copied()
                    .unwrap_or(0))
            .max(0),
        );
        let group_limit = settings.limits.group_max_leased.map(i64::from);
        let mut scan = Scan {
            after: (i32::MIN, i64::MIN, i64::MIN),
            rows: std::collections::VecDeque::new(),
            done: false,
            group_counts: HashMap::new(),
        };
        // Jobs taken by the earlier calls of this group, per job group.
        let mut taken_in_group: HashMap<String, u64> = HashMap::new();
        let mut taken_total: u64 = 0;
        let mut bucket_changed = false;
        let mut answers = Vec::with_capacity(plans.len());
        let mut writes: Vec<(usize, Change, Write)> = Vec::new();
        for (call, plan) in plans.iter().enumerate() {
            let mut round = plan.round(&settings, leased_before + taken_total);
            let before_this_call = taken_in_group.clone();
            while round.wants_more() {
                let Some(row) = scan.next(conn, queue, group_limit, gathered).await? else {
                    break;
                };
                let revision: i64 = row.get(3);
                let bytes: &[u8] = row.get(5);
                let (job, _) = codec::decode_job(bytes).map_err(Failure::Engine)?;
                let group_leased = job
                    .group
                    .as_ref()
                    .map(|g| {
                        scan.group_counts.get(g).copied().unwrap_or(0)
                            + before_this_call.get(g).copied().unwrap_or(0)
                    })
                    .unwrap_or(0);
                let lease_id = LeaseId::from_u64(unbig(row.get::<_, i64>(6)));
                let group = job.group.clone();
                if let Offer::Take(outcome) = round.offer(&job, lease_id, group_leased) {
                    let change = Change::of(
                        crate::backend::Loaded {
                            job,
                            revision: Revision(unbig(revision)),
                        },
                        *outcome,
                    );
                    let write = Write::of(&change).map_err(Failure::Engine)?;
                    writes.push((call, change, write));
                    taken_total += 1;
                    if let Some(group) = group {
                        *taken_in_group.entry(group).or_default() += 1;
                    }
                }
            }
            let end = round.finish();
            if let Some(bucket) = end.bucket {
                settings.bucket = Some(bucket);
                bucket_changed = true;
            }
            answers.push(Committed {
                applied: Vec::new(),
                events: 0,
                first_event: 0,
                retry_at: end.retry_at,
            });
        }
        if let Some((_, _, write)) = writes.first() {
            write.statement(conn).await?;
        }
        let written =
            futures_util::future::join_all(writes.iter().map(|(_, _, write)| write.execute(conn)))
                .await;
        for ((call, change, _), written) in writes.into_iter().zip(written) {
            if written? != 1 {
                return Err(Failure::Engine(Error::Internal(format!(
                    "job {} changed under its row lock",
                    change.id
                ))));
            }
            gathered.change(&change, self.history_ms > 0, &self.retention);
            answers[call].applied.push(change);
        }
        if bucket_changed {
            put_settings(conn, queue, &settings).await?;
        }
        Ok(answers)
    }

    // ---- the end of a batch ---------------------------------------------

    /// Writes the batch's counts, events, history and wake-up; returns the
    /// id of its first event. Two pipelined round trips: the counts, the
    /// events and the reads of the history minutes (after the counts, so
    /// they see them), then the history minutes and the `NOTIFY`.
    async fn write_end(
        &self,
        conn: &Conn,
        gathered: &mut Gathered,
    ) -> std::result::Result<u64, Failure> {
        let c = &conn.client;
        let add_counts = conn.stmt(ADD_COUNTS).await.map_err(Failure::Engine)?;
        let add_groups = conn.stmt(ADD_GROUPS).await.map_err(Failure::Engine)?;
        let log_events = conn.stmt(LOG_EVENTS).await.map_err(Failure::Engine)?;
        let read_minutes = conn.stmt(HISTORY_MINUTES).await.map_err(Failure::Engine)?;
        let read_counts = conn.stmt(super::COUNTS).await.map_err(Failure::Engine)?;
        let put = conn.stmt(PUT_HISTORY).await.map_err(Failure::Engine)?;
        let notify = conn.stmt(NOTIFY).await.map_err(Failure::Engine)?;

        let changed: Vec<_> = gathered.counts.iter().filter(|(_, d)| **d != 0).collect();
        let count_queues: Vec<&str> = changed.iter().map(|((q, _), _)| q.as_str()).collect();
        let count_states: Vec<i16> = changed.iter().map(|((_, s), _)| *s).collect();
        let count_deltas: Vec<i64> = changed.iter().map(|(_, d)| **d).collect();
        let groups: Vec<_> = gathered.groups.iter().filter(|(_, d)| **d != 0).collect();
        let group_queues: Vec<&str> = groups.iter().map(|((q, _), _)| q.as_str()).collect();
        let group_names: Vec<&str> = groups.iter().map(|((_, g), _)| g.as_str()).collect();
        let group_deltas: Vec<i64> = groups.iter().map(|(_, d)| **d).collect();
        let n = gathered.events.len() as i64;
        let ats: Vec<i64> = gathered.events.iter().map(|(at, _, _)| *at).collect();
        let records: Vec<&[u8]> = gathered
            .events
            .iter()
            .map(|(_, _, r)| r.as_slice())
            .collect();
        // Each job's record notes its latest event (the job streams start
        // from it): the position of its last event in this batch, 1-based.
        let mut last_of_job: BTreeMap<i64, i64> = BTreeMap::new();
        for (at, (_, job, _)) in gathered.events.iter().enumerate() {
            last_of_job.insert(*job, at as i64 + 1);
        }
        let stamped: Vec<i64> = last_of_job.keys().copied().collect();
        let ordinals: Vec<i64> = last_of_job.values().copied().collect();
        let history = std::mem::take(&mut gathered.history);
        let keys: Vec<(String, i64, i64)> = history
            .keys()
            .map(|(queue, minute)| {
                (
                    queue.clone(),
                    big(*minute),
                    big(minute.saturating_add(HISTORY_MINUTE_MS)),
                )
            })
            .collect();

        let counts_done = async {
            if count_queues.is_empty() {
                return Ok(0);
            }
            c.execute(&add_counts, &[&count_queues, &count_states, &count_deltas])
                .await
        };
        let groups_done = async {
            if group_queues.is_empty() {
                return Ok(0);
            }
            c.execute(&add_groups, &[&group_queues, &group_names, &group_deltas])
                .await
        };
        let events_done = async {
            if n == 0 {
                return Ok(None);
            }
            c.query_one(&log_events, &[&n, &ats, &records, &stamped, &ordinals])
                .await
                .map(|row| Some(row.get::<_, i64>(0)))
        };
        let reads = futures_util::future::join_all(keys.iter().map(|(queue, minute, next)| {
            let (read_minutes, read_counts) = (&read_minutes, &read_counts);
            async move {
                let minutes = c.query(read_minutes, &[queue, minute, next]).await?;
                let counts = c.query(read_counts, &[queue]).await?;
                Ok::<_, tokio_postgres::Error>((minutes, counts))
            }
        }));
        let (counts_done, groups_done, events_done, reads) =
            futures_util::future::join4(counts_done, groups_done, events_done, reads).await;
        counts_done.map_err(Failure::of)?;
        groups_done.map_err(Failure::of)?;
        let mut first_event = 0;
        if let Some(last) = events_done.map_err(Failure::of)? {
            first_event = unbig(last - n + 1);
            gathered.wake.latest_event = unbig(last);
        }

        let mut puts: Vec<(String, i64, Vec<u8>)> = Vec::new();
        for (((queue, minute), added), read) in history.into_iter().zip(reads) {
            let (minutes, counts) = read.map_err(Failure::of)?;
            let this = big(minute);
            let mut stored = None;
            let mut later = None;
            for row in &minutes {
                let at: i64 = row.get(0);
                let rollup = codec::decode_rollup(row.get(1)).map_err(Failure::Engine)?;
                if at == this {
                    stored = Some(rollup);
                } else {
                    later = Some((at, rollup));
                }
            }
            let mut rollup = match stored {
                Some(rollup) => rollup,
                None => {
                    if let Some(cutoff) = minute.checked_sub(self.history_ms) {
                        prune_history(conn, &queue, cutoff).await?;
                        sweep_history(conn, cutoff).await?;
                    }
                    Rollup::default()
                }
            };
            rollup.merge(&added);
            let counts = super::counts_of(&counts);
            let depths = Depths {
                ready: counts.get(JobState::Ready),
                scheduled: counts.get(JobState::Scheduled),
                leased: counts.get(JobState::Leased),
            };
            rollup.depths = depths;
            puts.push((
                queue.clone(),
                this,
                codec::encode_rollup(&rollup).map_err(Failure::Engine)?,
            ));
            // A later minute already written (a change whose time was
            // taken just before the minute ended) gets the latest depths
            // too.
            if let Some((at, mut later)) = later {
                if later.depths != depths {
                    later.depths = depths;
                    puts.push((
                        queue,
                        at,
                        codec::encode_rollup(&later).map_err(Failure::Engine)?,
                    ));
                }
            }
        }
        let payload = (!gathered.wake.is_empty()).then(|| gathered.wake.payload(self.origin));
        let puts_done =
            futures_util::future::join_all(puts.iter().map(|(queue, minute, bytes)| {
                let put = &put;
                async move { c.execute(put, &[queue, minute, bytes]).await }
            }));
        let notified = async {
            match &payload {
                Some(payload) => c.execute(&notify, &[payload]).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (puts_done, notified) = futures_util::future::join(puts_done, notified).await;
        for done in puts_done {
            done.map_err(Failure::of)?;
        }
        notified.map_err(Failure::of)?;
        Ok(first_event)
    }
}

/// The ready rows of one queue in lease order, read a page at a time,
/// locked (`FOR UPDATE SKIP LOCKED`) as they are read.
struct Scan {
    /// The lease order of the last row read.
    after: (i32, i64, i64),
    rows: std::collections::VecDeque<tokio_postgres::Row>,
    /// No row after `after`.
    done: bool,
    /// Leased jobs per job group (stored, plus this batch's earlier
    /// changes), for the groups of the rows read.
    group_counts: HashMap<String, u64>,
}

impl Scan {
    /// The next candidate, reading the next page when needed.
    async fn next(
        &mut self,
        conn: &Conn,
        queue: &str,
        group_limit: Option<i64>,
        gathered: &Gathered,
    ) -> std::result::Result<Option<tokio_postgres::Row>, Failure> {
        if self.rows.is_empty() && !self.done {
            let page: i64 = 64;
            let (pending_groups, pending_deltas): (Vec<&str>, Vec<i64>) = gathered
                .groups
                .iter()
                .filter(|((q, _), delta)| q == queue && **delta != 0)
                .map(|((_, group), delta)| (group.as_str(), *delta))
                .unzip();
            let stmt = conn.stmt(READY_PAGE).await.map_err(Failure::Engine)?;
            let rows = conn
                .client
                .query(
                    &stmt,
                    &[
                        &queue,
                        &self.after.0,
                        &self.after.1,
                        &self.after.2,
                        &group_limit,
                        &page,
                        &pending_groups,
                        &pending_deltas,
                    ],
                )
                .await
                .map_err(Failure::of)?;
            self.done = (rows.len() as i64) < page;
            if let Some(last) = rows.last() {
                self.after = (last.get(1), last.get(2), last.get(0));
            }
            let missing: Vec<String> = rows
                .iter()
                .filter_map(|row| row.get::<_, Option<String>>(4))
                .filter(|g| !self.group_counts.contains_key(g))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !missing.is_empty() {
                let stmt = conn.stmt(GROUP_COUNTS).await.map_err(Failure::Engine)?;
                let mut stored: HashMap<String, i64> = HashMap::new();
                for row in conn
                    .client
                    .query(&stmt, &[&queue, &missing])
                    .await
                    .map_err(Failure::of)?
                {
                    stored.insert(row.get(0), row.get(1));
                }
                for group in missing {
                    let pending = gathered
                        .groups
                        .get(&(queue.to_owned(), group.clone()))
                        .copied()
                        .unwrap_or(0);
                    let n = stored.get(&group).copied().unwrap_or(0);
                    self.group_counts
                        .insert(group, unbig(n.saturating_add(pending).max(0)));
                }
            }
            self.rows.extend(rows);
        }
        Ok(self.rows.pop_front())
    }
}

/// Whether a commit needs no decision between its statements: no
/// savepoint (at most one change when all or nothing) and no schedule or
/// settings.
fn simple(commit: &Commit) -> bool {
    commit.schedules.is_empty()
        && commit.settings.is_empty()
        && (commit.policy == Policy::EachIfCurrent || commit.changes.len() <= 1)
}

/// One job row written under its expectation, with its parameters.
enum Write {
    Insert {
        id: i64,
        revision: i64,
        columns: JobColumns,
        record: Vec<u8>,
    },
    Update {
        id: i64,
        expected: i64,
        revision: i64,
        columns: JobColumns,
        record: Vec<u8>,
    },
    Delete {
        id: i64,
        expected: i64,
    },
    /// A new job that is not stored: nothing to write.
    Nothing,
}

impl Write {
    fn of(change: &Change) -> Result<Write> {
        let revision = match change.expect {
            Expect::Absent => Revision(1),
            Expect::At(revision) => revision.next(),
        };
        let id = big(change.id.as_u64());
        Ok(match (change.expect, change.new_job()) {
            (Expect::Absent, Some(job)) => Write::Insert {
                id,
                revision: big(revision.0),
                columns: JobColumns::of(job),
                record: codec::encode_job(job, revision)?,
            },
            (Expect::At(expected), Some(job)) => Write::Update {
                id,
                expected: big(expected.0),
                revision: big(revision.0),
                columns: JobColumns::of(job),
                record: codec::encode_job(job, revision)?,
            },
            (Expect::At(expected), None) => Write::Delete {
                id,
                expected: big(expected.0),
            },
            (Expect::Absent, None) => Write::Nothing,
        })
    }

    /// Prepares the statement (once per connection), so that the writes
    /// themselves pipeline.
    async fn statement(&self, conn: &Conn) -> std::result::Result<(), Failure> {
        let sql = match self {
            Write::Insert { .. } => INSERT_JOB,
            Write::Update { .. } => UPDATE_JOB,
            Write::Delete { .. } => DELETE_JOB,
            Write::Nothing => return Ok(()),
        };
        conn.stmt(sql).await.map_err(Failure::Engine)?;
        Ok(())
    }

    /// Rows written: 1, or 0 when the expectation does not hold.
    async fn execute(&self, conn: &Conn) -> std::result::Result<u64, Failure> {
        /// The row's values, in the order both statements number them.
        fn row<'a>(
            id: &'a i64,
            revision: &'a i64,
            c: &'a JobColumns,
            record: &'a Vec<u8>,
        ) -> Vec<&'a (dyn ToSql + Sync)> {
            vec![
                id,
                revision,
                &c.queue,
                &c.state,
                &c.lease_rank,
                &c.run_at,
                &c.group,
                &c.idempotency_key,
                &c.correlation_id,
                &c.callback_status,
                &c.due_kind,
                &c.due_at,
                &c.due_lease,
                &c.due_callback,
                &c.due_ttl,
                record,
            ]
        }
        match self {
            Write::Insert {
                id,
                revision,
                columns,
                record,
            } => {
                let stmt = conn.stmt(INSERT_JOB).await.map_err(Failure::Engine)?;
                let params = row(id, revision, columns, record);
                conn.client
                    .execute(&stmt, &params)
                    .await
                    .map_err(Failure::of)
            }
            Write::Update {
                id,
                expected,
                revision,
                columns,
                record,
            } => {
                let stmt = conn.stmt(UPDATE_JOB).await.map_err(Failure::Engine)?;
                let mut params = row(id, revision, columns, record);
                params.push(expected);
                conn.client
                    .execute(&stmt, &params)
                    .await
                    .map_err(Failure::of)
            }
            Write::Delete { id, expected } => {
                let stmt = conn.stmt(DELETE_JOB).await.map_err(Failure::Engine)?;
                conn.client
                    .execute(&stmt, &[id, expected])
                    .await
                    .map_err(Failure::of)
            }
            Write::Nothing => Ok(1),
        }
    }
}

impl Gathered {
    /// Gathers what the applied `change` implies.
    fn change(&mut self, change: &Change, history_on: bool, retention: &crate::Retention) {
        let old = change.old.as_ref();
        let new = change.new_job();
        let place = |job: &Job| (job.queue.clone(), state_code(job.state));
        let (old_place, new_place) = (old.map(place), new.map(place));
        if old_place != new_place {
            if let Some(key) = old_place.clone() {
                *self.counts.entry(key).or_default() -= 1;
            }
            if let Some(key) = new_place.clone() {
                *self.counts.entry(key).or_default() += 1;
            }
            let group = new.or(old).and_then(|job| job.group.clone());
            if let Some(group) = group {
                let leased = state_code(JobState::Leased);
                if let Some((queue, _)) = old_place.filter(|(_, s)| *s == leased) {
                    *self.groups.entry((queue, group.clone())).or_default() -= 1;
                }
                if let Some((queue, _)) = new_place.filter(|(_, s)| *s == leased) {
                    *self.groups.entry((queue, group)).or_default() += 1;
                }
            }
        }
        for event in change.outcome.events() {
            let mut bytes = Vec::new();
            // Encoding an event the rules built cannot fail; if it did,
            // the event would be lost silently: say so loudly instead.
            match codec::encode_item(event, &mut bytes) {
                Ok(()) => self
                    .events
                    .push((big(event.at), big(change.id.as_u64()), bytes)),
                Err(e) => tracing::error!(error = %e, "an event could not be encoded"),
            }
        }
        if history_on {
            if let Some(sample) = history::sample(old, &change.outcome) {
                self.history
                    .entry((sample.queue.clone(), sample.minute))
                    .or_default()
                    .add(&sample);
            }
        }
        self.wake.change(change, retention);
    }

    fn absorb(&mut self, other: Gathered) {
        for (key, delta) in other.counts {
            *self.counts.entry(key).or_default() += delta;
        }
        for (key, delta) in other.groups {
            *self.groups.entry(key).or_default() += delta;
        }
        self.events.extend(other.events);
        for (key, rollup) in other.history {
            self.history.entry(key).or_default().merge(&rollup);
        }
        self.wake.absorb(other.wake);
    }
}

/// Why a batch's transaction did not commit.
enum Failure {
    /// A deadlock or serialization failure: run it again.
    Retry,
    /// The database refused or the connection failed.
    Db(Error),
    /// The engine's own error (encoding, an invariant).
    Engine(Error),
}

impl Failure {
    fn of(e: tokio_postgres::Error) -> Failure {
        if is_retryable(&e) {
            Failure::Retry
        } else {
            Failure::Db(db_error(e))
        }
    }
}

fn fail_all(batch: Vec<Op>, error: &Error) {
    let again = || match error {
        Error::Storage(e) => Error::Storage(crate::error::StorageError::new(e.to_string())),
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        other => Error::Internal(other.to_string()),
    };
    for op in batch {
        match op {
            Op::Commit { reply, .. } => {
                let _ = reply.send(Err(again()));
            }
            Op::Lease { reply, .. } => {
                let _ = reply.send(Err(again()));
            }
            Op::CommitAndLease { reply, .. } => {
                let _ = reply.send(Err(again()));
            }
        }
    }
}

async fn settings_for_update(
    conn: &Conn,
    queue: &str,
) -> std::result::Result<QueueSettings, Failure> {
    let stmt = conn
        .stmt(SETTINGS_FOR_UPDATE)
        .await
        .map_err(Failure::Engine)?;
    let rows = conn
        .client
        .query(&stmt, &[&queue])
        .await
        .map_err(Failure::of)?;
    decode_settings_rows(&rows)
}

fn decode_settings_rows(
    rows: &[tokio_postgres::Row],
) -> std::result::Result<QueueSettings, Failure> {
    match rows.first() {
        Some(row) => codec::decode_settings(row.get(0)).map_err(Failure::Engine),
        None => Ok(QueueSettings::default()),
    }
}

async fn put_settings(
    conn: &Conn,
    queue: &str,
    settings: &QueueSettings,
) -> std::result::Result<(), Failure> {
    // The defaults are stored as no row (as in the embedded store: a
    // queue with neither jobs nor settings is not listed).
    if *settings == QueueSettings::default() {
        let stmt = conn.stmt(DELETE_SETTINGS).await.map_err(Failure::Engine)?;
        conn.client
            .execute(&stmt, &[&queue])
            .await
            .map_err(Failure::of)?;
        return Ok(());
    }
    let bytes = codec::encode_settings(settings).map_err(Failure::Engine)?;
    let stmt = conn.stmt(PUT_SETTINGS).await.map_err(Failure::Engine)?;
    conn.client
        .execute(&stmt, &[&queue, &bytes])
        .await
        .map_err(Failure::of)?;
    Ok(())
}

async fn count(conn: &Conn, queue: &str, state: JobState) -> std::result::Result<i64, Failure> {
    let stmt = conn.stmt(COUNT).await.map_err(Failure::Engine)?;
    let rows = conn
        .client
        .query(&stmt, &[&queue, &state_code(state)])
        .await
        .map_err(Failure::of)?;
    Ok(rows.first().map(|row| row.get::<_, i64>(0)).unwrap_or(0))
}

/// Removes up to [`HISTORY_PRUNE`] minutes of `queue` older than `cutoff`,
/// oldest first; the newest of them stays, as depths only (or goes, if
/// they are all zero): the steps after it carry its depths forward.
async fn prune_history(conn: &Conn, queue: &str, cutoff: u64) -> std::result::Result<(), Failure> {
    let c = &conn.client;
    let stmt = conn.stmt(OLD_MINUTES).await.map_err(Failure::Engine)?;
    let rows = c
        .query(&stmt, &[&queue, &big(cutoff), &(HISTORY_PRUNE + 1)])
        .await
        .map_err(Failure::of)?;
    let mut old: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let newest = if old.len() as i64 > HISTORY_PRUNE {
        old.truncate(HISTORY_PRUNE as usize);
        None
    } else {
        old.pop()
    };
    if !old.is_empty() {
        let stmt = conn.stmt(DELETE_MINUTES).await.map_err(Failure::Engine)?;
        c.execute(&stmt, &[&queue, &old])
            .await
            .map_err(Failure::of)?;
    }
    if let Some(newest) = newest {
        reduce_minute(conn, queue, newest).await?;
    }
    Ok(())
}

/// One bounded step over every queue's minutes older than `cutoff` (those
/// of queues gone idle): the same as [`prune_history`] does for one.
async fn sweep_history(conn: &Conn, cutoff: u64) -> std::result::Result<(), Failure> {
    let c = &conn.client;
    let stmt = conn.stmt(SWEEP_HISTORY).await.map_err(Failure::Engine)?;
    c.execute(&stmt, &[&big(cutoff), &HISTORY_PRUNE])
        .await
        .map_err(Failure::of)?;
    let stmt = conn.stmt(UNREDUCED).await.map_err(Failure::Engine)?;
    let rows = c
        .query(&stmt, &[&big(cutoff), &HISTORY_PRUNE])
        .await
        .map_err(Failure::of)?;
    for row in rows {
        let queue: String = row.get(0);
        reduce_minute(conn, &queue, row.get(1)).await?;
    }
    Ok(())
}

/// Reduces a stored minute to its depths (or removes it if they are all
/// zero).
async fn reduce_minute(conn: &Conn, queue: &str, minute: i64) -> std::result::Result<(), Failure> {
    let c = &conn.client;
    let stmt = conn.stmt(REDUCE_MINUTE).await.map_err(Failure::Engine)?;
    let Some(row) = c
        .query(&stmt, &[&queue, &minute])
        .await
        .map_err(Failure::of)?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    let kept = codec::decode_rollup(row.get(0))
        .map_err(Failure::Engine)?
        .depths_only();
    if kept.depths == Depths::default() {
        let stmt = conn.stmt(DELETE_MINUTES).await.map_err(Failure::Engine)?;
        c.execute(&stmt, &[&queue, &vec![minute]])
            .await
            .map_err(Failure::of)?;
    } else {
        let bytes = codec::encode_rollup(&kept).map_err(Failure::Engine)?;
        let stmt = conn.stmt(PUT_DEPTHS).await.map_err(Failure::Engine)?;
        c.execute(&stmt, &[&queue, &minute, &bytes])
            .await
            .map_err(Failure::of)?;
    }
    Ok(())
}

/// Writes a schedule change if its expectation holds.
async fn apply_schedule(
    conn: &Conn,
    change: &ScheduleChange,
) -> std::result::Result<bool, Failure> {
    let revision = match change.expect {
        Expect::Absent => Revision(1),
        Expect::At(revision) => revision.next(),
    };
    let c = &conn.client;
    let n = match (&change.new, change.expect) {
        (Some(schedule), expect) => {
            let bytes = codec::encode_schedule(schedule, revision).map_err(Failure::Engine)?;
            let due = schedule.next_run_at.filter(|_| !schedule.paused).map(big);
            match expect {
                Expect::Absent => {
                    let stmt = conn.stmt(INSERT_SCHEDULE).await.map_err(Failure::Engine)?;
                    c.execute(&stmt, &[&change.name, &big(revision.0), &due, &bytes])
                        .await
                        .map_err(Failure::of)?
                }
                Expect::At(expected) => {
                    let stmt = conn.stmt(UPDATE_SCHEDULE).await.map_err(Failure::Engine)?;
                    c.execute(
                        &stmt,
                        &[
                            &change.name,
                            &big(expected.0),
                            &big(revision.0),
                            &due,
                            &bytes,
                        ],
                    )
                    .await
                    .map_err(Failure::of)?
                }
            }
        }
        (None, Expect::At(expected)) => {
            let stmt = conn.stmt(DELETE_SCHEDULE).await.map_err(Failure::Engine)?;
            c.execute(&stmt, &[&change.name, &big(expected.0)])
                .await
                .map_err(Failure::of)?
        }
        (None, Expect::Absent) => 1,
    };
    Ok(n == 1)
}

/// The id of a job in a row.
pub(crate) fn job_id(v: i64) -> JobId {
    JobId::from_u64(unbig(v))
}

const INSERT_JOB: &str = "INSERT INTO queue_jobs (id, revision, queue, state, lease_rank, run_at, \
    grp, idempotency_key, correlation_id, callback_status, due_kind, due_at, due_lease, \
    due_callback, due_ttl, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
    $13, $14, $15, $16) ON CONFLICT DO NOTHING";
const UPDATE_JOB: &str = "UPDATE queue_jobs SET revision = $2, queue = $3, state = $4, \
    lease_rank = $5, run_at = $6, grp = $7, idempotency_key = $8, correlation_id = $9, \
    callback_status = $10, due_kind = $11, due_at = $12, due_lease = $13, due_callback = $14, \
    due_ttl = $15, record = $16 WHERE id = $1 AND revision = $17";
const DELETE_JOB: &str = "DELETE FROM queue_jobs WHERE id = $1 AND revision = $2";
/// The next ready jobs in lease order after a position, skipping those
/// other transactions hold and (when the queue has a group limit) the
/// groups at it.
///
/// Groups at their limit (`$5`) are left out, their leased counts being the
/// stored ones plus the changes of the batch not yet written (`$7`, `$8`:
/// groups and deltas), so that a settlement earlier in the batch that
/// freed a group's slot lets a lease take from it.
const READY_PAGE: &str = "SELECT id, lease_rank, run_at, revision, grp, record, \
    nextval('queue_ids') FROM queue_jobs \
    WHERE queue = $1 AND state = 1 AND (lease_rank, run_at, id) > ($2, $3, $4) \
    AND ($5::bigint IS NULL OR grp IS NULL OR grp NOT IN (SELECT g.grp FROM queue_group_leased g \
    LEFT JOIN unnest($7::text[], $8::bigint[]) AS p(grp, d) ON p.grp = g.grp \
    WHERE g.queue = $1 AND g.n + coalesce(p.d, 0) >= $5)) \
    ORDER BY lease_rank, run_at, id LIMIT $6 FOR UPDATE SKIP LOCKED";
/// A queue's settings and leased count, in one round trip.
const SETTINGS_AND_LEASED: &str = "SELECT (SELECT record FROM queue_settings WHERE queue = $1), \
    (SELECT n FROM queue_counts WHERE queue = $1 AND state = 2)";
const GROUP_COUNTS: &str =
    "SELECT grp, n FROM queue_group_leased WHERE queue = $1 AND grp = ANY($2)";
const SETTINGS_FOR_UPDATE: &str = "SELECT record FROM queue_settings WHERE queue = $1 FOR UPDATE";
const PUT_SETTINGS: &str = "INSERT INTO queue_settings (queue, record) VALUES ($1, $2) \
    ON CONFLICT (queue) DO UPDATE SET record = excluded.record";
const DELETE_SETTINGS: &str = "DELETE FROM queue_settings WHERE queue = $1";
const COUNT: &str = "SELECT n FROM queue_counts WHERE queue = $1 AND state = $2";
const ADD_COUNTS: &str = "INSERT INTO queue_counts (queue, state, n) \
    SELECT * FROM unnest($1::text[], $2::smallint[], $3::bigint[]) \
    ON CONFLICT (queue, state) DO UPDATE SET n = queue_counts.n + excluded.n";
const ADD_GROUPS: &str = "INSERT INTO queue_group_leased (queue, grp, n) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
    ON CONFLICT (queue, grp) DO UPDATE SET n = queue_group_leased.n + excluded.n";
/// Takes the next `$1` event ids (the counter row stays locked until the
/// commit, so ids increase in commit order across processes), logs the
/// events under them, and writes each job's latest event id into its
/// record (the big-endian `u64` at bytes 9..17 of the encoding, see
/// `codec::LAST_EVENT_AT`); answers the last id.
const LOG_EVENTS: &str = "WITH ids AS (UPDATE queue_meta SET value = value + $1 \
    WHERE key = 'last_event' RETURNING value), \
    logged AS (INSERT INTO queue_events (id, at, record) \
    SELECT ids.value - $1 + e.ord, e.at, e.record FROM ids, \
    unnest($2::bigint[], $3::bytea[]) WITH ORDINALITY AS e(at, record, ord)), \
    stamped AS (UPDATE queue_jobs j SET record = overlay(j.record PLACING \
    int8send(ids.value - $1 + s.ord) FROM 10 FOR 8) FROM ids, \
    unnest($4::bigint[], $5::bigint[]) AS s(id, ord) WHERE j.id = s.id) \
    SELECT value FROM ids";
const NOTIFY: &str = "SELECT pg_notify('queue_wake', $1)";
/// A queue's minute and the next one, locked.
const HISTORY_MINUTES: &str = "SELECT minute, record FROM queue_history WHERE queue = $1 \
    AND minute IN ($2, $3) FOR UPDATE";
const PUT_HISTORY: &str = "INSERT INTO queue_history (queue, minute, record) VALUES ($1, $2, $3) \
    ON CONFLICT (queue, minute) DO UPDATE SET record = excluded.record, depths_only = false";
/// A queue's minutes older than a cutoff, oldest first.
const OLD_MINUTES: &str = "SELECT minute FROM queue_history WHERE queue = $1 AND minute < $2 \
    ORDER BY minute LIMIT $3";
const DELETE_MINUTES: &str = "DELETE FROM queue_history WHERE queue = $1 AND minute = ANY($2)";
/// Every queue's old minutes but the newest of each, a bounded number.
const SWEEP_HISTORY: &str = "DELETE FROM queue_history WHERE ctid IN (SELECT ctid FROM \
    (SELECT ctid, minute, max(minute) OVER (PARTITION BY queue) AS newest FROM queue_history \
    WHERE minute < $1) old WHERE minute < newest LIMIT $2)";
/// Every queue's newest old minute not yet reduced to its depths.
const UNREDUCED: &str = "SELECT queue, minute FROM (SELECT queue, minute, depths_only, \
    max(minute) OVER (PARTITION BY queue) AS newest FROM queue_history WHERE minute < $1) old \
    WHERE minute = newest AND NOT depths_only LIMIT $2";
const REDUCE_MINUTE: &str = "SELECT record FROM queue_history WHERE queue = $1 AND minute = $2 \
    FOR UPDATE";
const PUT_DEPTHS: &str = "UPDATE queue_history SET record = $3, depths_only = true \
    WHERE queue = $1 AND minute = $2";
const INSERT_SCHEDULE: &str = "INSERT INTO queue_schedules (name, revision, next_run_at, record) \
    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
const UPDATE_SCHEDULE: &str = "UPDATE queue_schedules SET revision = $3, next_run_at = $4, \
    record = $5 WHERE name = $1 AND revision = $2";
const DELETE_SCHEDULE: &str = "DELETE FROM queue_schedules WHERE name = $1 AND revision = $2";

#[cfg(test)]
mod tests {
    use crate::backend::sled::codec;

    #[test]
    fn the_event_id_is_stamped_where_the_record_keeps_it() {
        // LOG_EVENTS overlays 8 bytes from (1-based) byte 10.
        assert_eq!(codec::LAST_EVENT_AT, 9..17);
        assert!(super::LOG_EVENTS.contains("FROM 10 FOR 8"));
    }
}
