//! Schedules: periodic jobs stored with the queue and enqueued by its timer
//! at each tick (see [`Queue::put_schedule`](crate::Queue::put_schedule)).

use queue_proto::CatchUp;

use crate::JobId;

/// A stored schedule.
///
/// Invariants: exactly one of `cron` and `every_ms` is set; `next_run_at`
/// is `None` while `paused` (and for a cron expression that matches no
/// later date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Its name (a queue name's syntax).
    pub name: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The cron expression, if the schedule has one.
    pub cron: Option<String>,
    /// The fixed period in ms, if the schedule has one.
    pub every_ms: Option<u64>,
    /// The IANA time zone of `cron`.
    pub timezone: String,
    /// The enqueue body each tick uses, as JSON text (checked when stored).
    pub job: String,
    /// What happens to ticks missed while no server ran.
    pub catch_up: CatchUp,
    /// A paused schedule does not fire.
    pub paused: bool,
    /// Unix ms of the next tick.
    pub next_run_at: Option<u64>,
    /// Unix ms of the latest tick fired.
    pub last_run_at: Option<u64>,
    /// The job the latest tick or trigger enqueued.
    pub last_job_id: Option<JobId>,
    /// Unix ms of its creation.
    pub created_at: u64,
    /// Unix ms of its latest change.
    pub updated_at: u64,
}

/// What [`Queue::put_schedule`](crate::Queue::put_schedule) stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSchedule {
    /// The schedule as stored.
    pub schedule: Schedule,
    /// No schedule of that name existed before.
    pub created: bool,
}

// ---- the engine's schedule operations -----------------------------------------

use queue_proto::{EnqueueRequest, ScheduleRequest, validate_queue_name};

use crate::backend::{Change, Commit, LoadedSchedule, Mode, Policy, ScheduleChange};
use crate::engine::Engine;
use crate::rules::schedule::{self as rule, Timing};
use crate::{Error, Job, NewJob, Result};

/// Ticks enqueued per commit when a schedule catches up.
const TICK_BATCH: usize = 128;
/// Schedules looked at per timer pass step.
const DUE_BATCH: usize = 64;

fn check_name(name: &str) -> Result<()> {
    validate_queue_name(name).map_err(|e| Error::invalid("name", e.to_string()))
}

/// The API name of a field of a schedule's `job`.
fn job_field(field: &'static str) -> &'static str {
    match field {
        "payload" => "job.payload",
        "priority" => "job.priority",
        "delay_ms" => "job.delay_ms",
        "run_at" => "job.run_at",
        "max_attempts" => "job.max_attempts",
        "backoff_ms" => "job.backoff_ms",
        "idempotency_key" => "job.idempotency_key",
        "correlation_id" => "job.correlation_id",
        "headers" => "job.headers",
        "callback_url" => "job.callback_url",
        "group" => "job.group",
        "timeout_ms" => "job.timeout_ms",
        "ttl_ms" => "job.ttl_ms",
        "expires_at" => "job.expires_at",
        _ => "job",
    }
}

fn commit_of(changes: Vec<Change>, schedule: ScheduleChange) -> Commit {
    Commit {
        changes,
        settings: Vec::new(),
        schedules: vec![schedule],
        policy: Policy::AllOrNothing,
    }
}

/// The job a stored schedule's body describes.
fn template(schedule: &Schedule) -> Result<NewJob> {
    let request: EnqueueRequest = serde_json::from_str(&schedule.job).map_err(|e| {
        Error::Corrupt(format!(
            "schedule {:?} has a bad job body: {e}",
            schedule.name
        ))
    })?;
    let mut spec = NewJob::from(request);
    spec.schedule = Some(schedule.name.clone());
    Ok(spec)
}

impl Engine {
    /// Checks a schedule's job body as an enqueue would, and returns it as
    /// the JSON text to store. The fields a tick sets are refused.
    fn job_body(&self, job: &EnqueueRequest, now: u64) -> Result<String> {
        for (field, given) in [
            ("job.run_at", job.run_at.is_some()),
            ("job.delay_ms", job.delay_ms.is_some()),
            ("job.idempotency_key", job.idempotency_key.is_some()),
            ("job.expires_at", job.expires_at.is_some()),
        ] {
            if given {
                return Err(Error::invalid(
                    field,
                    "a schedule sets it for each tick (run_at and the key \
                     schedule:<name>:<tick>); use ttl_ms for an expiry",
                ));
            }
        }
        let spec = NewJob::from(job.clone());
        crate::rules::enqueue::validate(&spec, now, self.config.max_payload).map_err(
            |e| match e {
                Error::InvalidArgument { field, message } => Error::InvalidArgument {
                    field: job_field(field),
                    message,
                },
                Error::TooLarge { what, size, limit } => Error::invalid(
                    "job.payload",
                    format!("{what} is {size} bytes, the limit is {limit}"),
                ),
                other => other,
            },
        )?;
        serde_json::to_string(job)
            .map_err(|e| Error::Internal(format!("cannot encode a job body: {e}")))
    }

    /// Wakes the timer if `schedule`'s next tick is earlier than what it
    /// sleeps towards.
    fn schedule_stored(&self, schedule: &Schedule) {
        if let Some(at) = schedule.next_run_at.filter(|_| !schedule.paused) {
            self.timer.deadline_added(at);
        }
    }

    async fn load_schedule(&self, name: &str) -> Result<LoadedSchedule> {
        check_name(name)?;
        self.backend
            .load_schedule(name)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound {
                name: name.to_owned(),
            })
    }

    pub(crate) async fn put_schedule(
        &self,
        mode: Mode,
        name: &str,
        request: &ScheduleRequest,
    ) -> Result<PutSchedule> {
        check_name(name)?;
        crate::engine::check_queue(&request.queue)?;
        let now = self.now();
        let timezone = request.timezone.as_deref().unwrap_or("UTC");
        let timing = Timing::parse(request.cron.as_deref(), request.every_ms, timezone, now)?;
        let job = self.job_body(&request.job, now)?;
        loop {
            let existing = self.backend.load_schedule(name).await?;
            let schedule = rule::put(
                name,
                existing.as_ref().map(|l| &l.schedule),
                request,
                job.clone(),
                &timing,
                now,
            );
            let change = match &existing {
                Some(loaded) => ScheduleChange::of(loaded, Some(schedule.clone())),
                None => ScheduleChange::insert(schedule.clone()),
            };
            if self
                .backend
                .commit(commit_of(Vec::new(), change), mode)
                .await?
                .is_none()
            {
                continue;
            }
            self.schedule_stored(&schedule);
            return Ok(PutSchedule {
                schedule,
                created: existing.is_none(),
            });
        }
    }

    pub(crate) async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        check_name(name)?;
        Ok(self
            .backend
            .load_schedule(name)
            .await?
            .map(|loaded| loaded.schedule))
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self
            .backend
            .schedules()
            .await?
            .into_iter()
            .map(|loaded| loaded.schedule)
            .collect())
    }

    pub(crate) async fn delete_schedule(&self, mode: Mode, name: &str) -> Result<Schedule> {
        loop {
            let loaded = self.load_schedule(name).await?;
            let change = ScheduleChange::of(&loaded, None);
            if self
                .backend
                .commit(commit_of(Vec::new(), change), mode)
                .await?
                .is_some()
            {
                return Ok(loaded.schedule);
            }
        }
    }

    /// Pauses (`true`) or resumes schedule `name`; doing it twice changes
    /// nothing.
    pub(crate) async fn set_schedule_paused(
        &self,
        mode: Mode,
        name: &str,
        paused: bool,
    ) -> Result<Schedule> {
        loop {
            let loaded = self.load_schedule(name).await?;
            if loaded.schedule.paused == paused {
                return Ok(loaded.schedule);
            }
            let now = self.now();
            let schedule = if paused {
                rule::pause(&loaded.schedule, now)
            } else {
                rule::resume(&loaded.schedule, &Timing::of(&loaded.schedule)?, now)
            };
            let change = ScheduleChange::of(&loaded, Some(schedule.clone()));
            if self
                .backend
                .commit(commit_of(Vec::new(), change), mode)
                .await?
                .is_some()
            {
                self.schedule_stored(&schedule);
                return Ok(schedule);
            }
        }
    }

    /// Enqueues schedule `name`'s job now, without an idempotency key
    /// (each trigger is a new job); its correlation id is the body's, else
    /// `correlation_id`. The next tick does not move.
    pub(crate) async fn trigger_schedule(
        &self,
        mode: Mode,
        name: &str,
        correlation_id: Option<String>,
    ) -> Result<Job> {
        loop {
            let loaded = self.load_schedule(name).await?;
            let now = self.now();
            let mut spec = template(&loaded.schedule)?;
            if spec.correlation_id.is_none() {
                spec.correlation_id = correlation_id.clone();
            }
            crate::rules::enqueue::validate(&spec, now, self.config.max_payload)?;
            let id = self.backend.next_job_id().await?;
            let outcome = crate::rules::enqueue::enqueue(id, &loaded.schedule.queue, &spec, now);
            let schedule = rule::triggered(&loaded.schedule, id, now);
            let commit = commit_of(
                vec![Change::insert(id, outcome)],
                ScheduleChange::of(&loaded, Some(schedule)),
            );
            let Some(committed) = self.backend.commit(commit, mode).await? else {
                continue;
            };
            let committed = self.announce(committed);
            return committed
                .applied
                .into_iter()
                .next()
                .and_then(|change| change.outcome.job)
                .ok_or_else(|| Error::Internal("a trigger without a job".into()));
        }
    }

    /// Fires every schedule due at `now` (see [`rule::plan`]); returns how
    /// many jobs the ticks enqueued.
    pub(crate) async fn run_schedules(&self, mode: Mode, now: u64) -> Result<u64> {
        let mut fired = 0;
        // Bounded: a pass handles what is due now; the next pass the rest.
        for _ in 0..64 {
            let due = self.backend.due_schedules(now, DUE_BATCH).await?;
            let mut moved = false;
            for name in &due {
                let (jobs, advanced) = self.fire_schedule(mode, name, now).await?;
                fired += jobs;
                moved |= advanced;
            }
            if due.len() < DUE_BATCH || !moved {
                break;
            }
        }
        Ok(fired)
    }

    /// Fires the due ticks of schedule `name`: each commit enqueues up to
    /// [`TICK_BATCH`] ticks' jobs and moves the schedule past them, under a
    /// compare-and-swap on its revision, so that a tick is fired once
    /// whatever crashes or runs concurrently. A tick whose key already
    /// names a stored job (fired before the schedule was recreated) counts
    /// as fired. Returns the jobs enqueued and whether the schedule moved.
    async fn fire_schedule(&self, mode: Mode, name: &str, now: u64) -> Result<(u64, bool)> {
        let mut fired = 0;
        let mut moved = false;
        for _ in 0..64 {
            let Some(loaded) = self.backend.load_schedule(name).await? else {
                break;
            };
            let schedule = &loaded.schedule;
            let timing = match Timing::of(schedule) {
                Ok(timing) => timing,
                Err(e) => {
                    tracing::error!(schedule = %name, error = %e, "schedule cannot fire");
                    break;
                }
            };
            let Some(plan) = rule::plan(schedule, &timing, now) else {
                break;
            };
            // A record that does not read is logged and left as it is: it
            // must not stop the timer's other work.
            let spec = match template(schedule) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(schedule = %name, error = %e, "schedule cannot fire");
                    break;
                }
            };
            let batch = &plan.fire[..plan.fire.len().min(TICK_BATCH)];
            let more = plan.fire.get(TICK_BATCH).copied();
            let mut changes = Vec::with_capacity(batch.len());
            let mut last = None;
            for &at in batch {
                let key = rule::tick_key(name, at);
                if let Some(stored) = self.backend.find_idempotent(&schedule.queue, &key).await? {
                    last = Some((at, stored.job.id));
                    continue;
                }
                let mut job = spec.clone();
                job.run_at = Some(at);
                job.correlation_id.get_or_insert_with(|| key.clone());
                job.idempotency_key = Some(key);
                let id = self.backend.next_job_id().await?;
                changes.push(Change::insert(
                    id,
                    crate::rules::enqueue::enqueue(id, &schedule.queue, &job, now),
                ));
                last = Some((at, id));
            }
            let next = more.or(plan.next_run_at);
            let advanced = rule::advance(schedule, last, next, now);
            let created = changes.len() as u64;
            let commit = commit_of(changes, ScheduleChange::of(&loaded, Some(advanced)));
            let Some(committed) = self.backend.commit(commit, mode).await? else {
                continue;
            };
            self.announce(committed);
            fired += created;
            moved = true;
            if plan.skipped > 0 {
                tracing::warn!(schedule = %name, skipped = plan.skipped,
                    catch_up = %schedule.catch_up, "schedule skipped missed ticks");
            }
            if more.is_none() {
                break;
            }
        }
        Ok((fired, moved))
    }
}
