//! Schedules: periodic jobs the server stores and enqueues at each tick.
//!
//! [`Client::schedule`] starts a [`ScheduleBuilder`]; [`ScheduleBuilder::put`]
//! stores it (creating or replacing) and returns the stored [`Schedule`].
//! The other calls are on [`Client`]: [`Client::schedules`],
//! [`Client::get_schedule`], [`Client::delete_schedule`],
//! [`Client::pause_schedule`], [`Client::resume_schedule`] and
//! [`Client::trigger_schedule`].

use std::time::Duration;

use queue_proto::{CatchUp, EnqueueRequest, RawValue, ScheduleRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::options::millis;
use crate::{Client, EnqueueOptions, Error, JobHandle, JobId, Result};

/// A stored schedule. Times are unix epoch milliseconds, as on the wire.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// Its cron expression, if it has one.
    pub cron: Option<String>,
    /// Its fixed period, if it has one.
    pub every: Option<Duration>,
    /// The IANA time zone of `cron`.
    pub timezone: String,
    /// What happens to ticks missed while no server ran.
    pub catch_up: CatchUp,
    /// A paused schedule does not fire.
    pub paused: bool,
    /// Unix ms of the next tick (`None` while paused).
    pub next_run_at: Option<u64>,
    /// Unix ms of the latest tick fired.
    pub last_run_at: Option<u64>,
    /// The job the latest tick or trigger enqueued.
    pub last_job_id: Option<JobId>,
    /// Unix ms of its creation.
    pub created_at: u64,
    /// Unix ms of its latest change.
    pub updated_at: u64,
    job: EnqueueRequest,
}

impl Schedule {
    pub(crate) fn from_wire(schedule: queue_proto::Schedule) -> Schedule {
        Schedule {
            name: schedule.name,
            queue: schedule.queue,
            cron: schedule.cron,
            every: schedule.every_ms.map(Duration::from_millis),
            timezone: schedule.timezone,
            catch_up: schedule.catch_up,
            paused: schedule.paused,
            next_run_at: schedule.next_run_at,
            last_run_at: schedule.last_run_at,
            last_job_id: schedule.last_job_id.map(JobId::from),
            created_at: schedule.created_at,
            updated_at: schedule.updated_at,
            job: schedule.job,
        }
    }

    /// The payload each tick's job carries, decoded as `T`.
    ///
    /// # Errors
    /// [`Error::Decode`] when it is not a `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.job.payload.get())
            .map_err(|e| Error::decode(format!("schedule {}'s payload", self.name), e))
    }

    /// The job body each tick enqueues, as on the wire.
    pub fn job(&self) -> &EnqueueRequest {
        &self.job
    }
}

/// What a schedule is made of, before it is stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScheduleSpec {
    pub(crate) name: String,
    pub(crate) queue: Option<String>,
    pub(crate) cron: Option<String>,
    pub(crate) every: Option<Duration>,
    pub(crate) timezone: Option<String>,
    pub(crate) catch_up: Option<CatchUp>,
    pub(crate) paused: Option<bool>,
    pub(crate) options: EnqueueOptions,
    /// The payload, encoded (or why it could not be).
    pub(crate) payload: Option<std::result::Result<Box<RawValue>, String>>,
}

impl ScheduleSpec {
    /// The `PUT` body. The queue defaults to the schedule's name.
    pub(crate) fn request(&self) -> Result<ScheduleRequest> {
        let payload = match &self.payload {
            Some(Ok(payload)) => payload.clone(),
            Some(Err(e)) => return Err(Error::invalid(format!("schedule payload: {e}"))),
            None => {
                return Err(Error::invalid(format!(
                    "schedule {}: no job (call .job(&payload))",
                    self.name
                )));
            }
        };
        Ok(ScheduleRequest {
            queue: self.queue.clone().unwrap_or_else(|| self.name.clone()),
            cron: self.cron.clone(),
            every_ms: self.every.map(millis),
            timezone: self.timezone.clone(),
            job: self.options.clone().into_template(payload),
            catch_up: self.catch_up,
            paused: self.paused,
        })
    }

    pub(crate) fn set_job<T: Serialize + ?Sized>(&mut self, payload: &T) {
        self.payload = Some(serde_json::value::to_raw_value(payload).map_err(|e| e.to_string()));
    }
}

/// Builds a schedule to store, from [`Client::schedule`]; give exactly one
/// of [`cron`](ScheduleBuilder::cron) and [`every`](ScheduleBuilder::every),
/// and the [`job`](ScheduleBuilder::job).
///
/// ```no_run
/// # async fn f(client: queue_client::Client) -> queue_client::Result<()> {
/// use queue_client::{CatchUp, EnqueueOptions};
/// let nightly = client
///     .schedule("nightly")
///     .cron("0 3 * * *")
///     .timezone("Europe/Paris")
///     .catch_up(CatchUp::All)
///     .queue("reports")
///     .options(EnqueueOptions::new().max_attempts(3))
///     .job(&serde_json::json!({"report": "sales"}))
///     .put()
///     .await?;
/// println!("next run at {:?}", nightly.next_run_at);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a schedule is stored by .put()"]
pub struct ScheduleBuilder {
    client: Client,
    spec: ScheduleSpec,
}

/// The setters shared by the async and the blocking builder.
macro_rules! schedule_setters {
    () => {
        /// A cron expression: five fields (minute hour day-of-month month
        /// day-of-week), an optional leading seconds field, or an alias
        /// (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
        /// `@midnight`, `@hourly`).
        pub fn cron(mut self, expr: impl Into<String>) -> Self {
            self.spec.cron = Some(expr.into());
            self
        }

        /// A fixed period (1 s to 365 days, whole milliseconds), plain
        /// elapsed time.
        pub fn every(mut self, period: std::time::Duration) -> Self {
            self.spec.every = Some(period);
            self
        }

        /// The IANA time zone the cron expression is read in (default
        /// `UTC`).
        pub fn timezone(mut self, zone: impl Into<String>) -> Self {
            self.spec.timezone = Some(zone.into());
            self
        }

        /// What happens to ticks missed while no server ran (default
        /// [`CatchUp::Latest`](queue_proto::CatchUp::Latest)).
        pub fn catch_up(mut self, catch_up: queue_proto::CatchUp) -> Self {
            self.spec.catch_up = Some(catch_up);
            self
        }

        /// Stores the schedule paused (or not).
        pub fn paused(mut self, paused: bool) -> Self {
            self.spec.paused = Some(paused);
            self
        }

        /// The queue its jobs go to (default: the schedule's name).
        pub fn queue(mut self, queue: impl Into<String>) -> Self {
            self.spec.queue = Some(queue.into());
            self
        }

        /// Options of each tick's job (priority, attempts, back-off,
        /// headers, group, timeout, time-to-live, callback). The delay,
        /// `run_at`, expiry and idempotency key are the tick's own: a
        /// schedule with them is refused.
        pub fn options(mut self, options: $crate::EnqueueOptions) -> Self {
            self.spec.options = options;
            self
        }

        /// The payload of each tick's job.
        pub fn job<T: serde::Serialize + ?Sized>(mut self, payload: &T) -> Self {
            self.spec.set_job(payload);
            self
        }
    };
}
pub(crate) use schedule_setters;

impl ScheduleBuilder {
    schedule_setters!();

    /// Stores the schedule, creating it or replacing the one of that name
    /// (a replacement with the same timing keeps its next tick). Durable
    /// on return.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming the field at fault (nothing is
    /// stored); transport errors.
    pub async fn put(self) -> Result<Schedule> {
        put(&self.client, &self.spec).await
    }
}

/// Stores `spec` (a `PUT`, safe to retry).
pub(crate) async fn put(client: &Client, spec: &ScheduleSpec) -> Result<Schedule> {
    let request = spec.request()?;
    let name = spec.name.as_str();
    let (schedule, _) = client
        .retrying(|_| client.transport().put_schedule(name, &request))
        .await?;
    Ok(Schedule::from_wire(schedule))
}

impl Client {
    /// Starts a schedule named `name` (a queue name's syntax), stored by
    /// [`ScheduleBuilder::put`].
    pub fn schedule(&self, name: impl Into<String>) -> ScheduleBuilder {
        ScheduleBuilder {
            client: self.clone(),
            spec: ScheduleSpec {
                name: name.into(),
                ..ScheduleSpec::default()
            },
        }
    }

    /// Every stored schedule, by name.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        let list = self.retrying(|_| self.transport().schedules()).await?;
        Ok(list.into_iter().map(Schedule::from_wire).collect())
    }

    /// The stored schedule `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; transport errors.
    pub async fn get_schedule(&self, name: &str) -> Result<Schedule> {
        let schedule = self.retrying(|_| self.transport().schedule(name)).await?;
        Ok(Schedule::from_wire(schedule))
    }

    /// Removes schedule `name` and returns it (the jobs it enqueued stay).
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; transport errors.
    pub async fn delete_schedule(&self, name: &str) -> Result<Schedule> {
        Ok(Schedule::from_wire(
            self.transport().delete_schedule(name).await?,
        ))
    }

    /// Pauses schedule `name`: it fires nothing until resumed.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; transport errors.
    pub async fn pause_schedule(&self, name: &str) -> Result<Schedule> {
        let schedule = self
            .retrying(|_| self.transport().set_schedule_paused(name, true))
            .await?;
        Ok(Schedule::from_wire(schedule))
    }

    /// Resumes schedule `name`; its next tick is the first after now.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; transport errors.
    pub async fn resume_schedule(&self, name: &str) -> Result<Schedule> {
        let schedule = self
            .retrying(|_| self.transport().set_schedule_paused(name, false))
            .await?;
        Ok(Schedule::from_wire(schedule))
    }

    /// Enqueues schedule `name`'s job now (its next tick does not move)
    /// and returns a handle on it, with payloads of type `T`. Each call
    /// enqueues a new job, so it is not retried.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; transport errors.
    pub async fn trigger_schedule<T>(&self, name: &str) -> Result<JobHandle<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let job: crate::transport::Brief = self.transport().trigger_schedule(name).await?;
        Ok(JobHandle::new(self.clone(), JobId::from(job.id), false))
    }
}
