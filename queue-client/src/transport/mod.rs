//! The two ways to reach a queue, behind one set of wire-level calls.
//!
//! Both speak the contract's wire types (`queue-proto`), so everything above
//! this module (typed queues, handles, the worker) is written once. The
//! embedded transport maps the engine's errors to the same codes the server
//! would send, so a program behaves the same on either.

use std::time::Duration;

use queue_proto::{
    BatchRequest, CompleteRequest, DeadPage, EnqueueRequest, FailRequest, HeartbeatRequest, Job,
    JobState, LeaseRequest, QueueStats, RawValue, ReleaseRequest, RequeueRequest, Schedule,
    ScheduleRequest, SettleRequest, validate_queue_name,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Error, EventFilter, JobId, Result, StreamItem};

#[cfg(feature = "embedded")]
mod embedded;
mod http;
mod pool;
mod sse;

#[cfg(feature = "embedded")]
pub(crate) use embedded::Embedded;
pub(crate) use http::Http;

/// What an event stream follows.
#[derive(Debug, Clone)]
pub(crate) enum EventSource {
    /// `GET /v1/events` with these filters (its `after` is where the stream
    /// first starts; each connection is told its own).
    Filter(EventFilter),
    /// `GET /v1/jobs/{id}/events`: one job's events, ending with it.
    Job(JobId),
}

/// One item read from an event connection, with the position the server
/// gave it (the SSE `id:` line), which an item that failed to decode still
/// has.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) id: Option<u64>,
    /// `None` for the connection's starting position (an `id:` with no
    /// data): where to resume if it drops before its first event.
    pub(crate) item: Option<Result<StreamItem>>,
}

/// One connection of an event stream (or, embedded, one feed). It ends
/// when the server ends the response, the connection fails (a transient
/// error item, then the end) or the feed ends.
pub(crate) enum EventConnection {
    Http(Box<http::HttpEvents>),
    #[cfg(feature = "embedded")]
    Embedded(Box<queue_core::service::EventFeed>),
}

impl EventConnection {
    /// The next item; `None` once the connection has ended.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        match self {
            EventConnection::Http(events) => events.next().await,
            #[cfg(feature = "embedded")]
            EventConnection::Embedded(feed) => embedded::next_delivery(feed).await,
        }
    }

    /// Whether the end of this connection is worth reconnecting after: a
    /// network connection may drop at any time; an in-process feed ends
    /// only when its queue is closed.
    pub(crate) fn resumable(&self) -> bool {
        match self {
            EventConnection::Http(_) => true,
            #[cfg(feature = "embedded")]
            EventConnection::Embedded(_) => false,
        }
    }
}

/// What a call reads of a job: the whole job object, or a [`Brief`]. Over
/// HTTP a reply parsed into a `Brief` skips the payload and the rest.
pub(crate) trait JobView: DeserializeOwned + Send + 'static {
    /// The view of a whole job object (embedded transport).
    #[cfg(feature = "embedded")]
    fn of(job: Job) -> Self;
}

impl JobView for Job {
    #[cfg(feature = "embedded")]
    fn of(job: Job) -> Self {
        job
    }
}

/// The fields of a job that enqueues, waits and settlements look at.
#[derive(Debug, Deserialize)]
pub(crate) struct Brief {
    pub(crate) id: String,
    pub(crate) state: JobState,
    pub(crate) attempts: u32,
    #[serde(default)]
    pub(crate) result: Option<Box<RawValue>>,
    #[serde(default)]
    pub(crate) last_error: Option<String>,
}

impl JobView for Brief {
    #[cfg(feature = "embedded")]
    fn of(job: Job) -> Self {
        Brief {
            id: job.id,
            state: job.state,
            attempts: job.attempts,
            result: job.result,
            last_error: job.last_error,
        }
    }
}

/// The answer to a settle, as a client reads it: each item's job only as
/// a [`Brief`] (over HTTP, the payloads are skipped), the leased jobs whole.
#[derive(Debug, Deserialize)]
pub(crate) struct SettleReply {
    pub(crate) results: Vec<ItemReply>,
    pub(crate) jobs: Vec<Job>,
}

/// One item of a [`SettleReply`].
#[derive(Debug, Deserialize)]
pub(crate) struct ItemReply {
    pub(crate) id: String,
    pub(crate) status: u16,
    /// The state the job was left in (servers before it was added send
    /// only the job).
    #[serde(default)]
    pub(crate) state: Option<JobState>,
    /// The job, unless the request preferred `return=minimal`.
    #[serde(default)]
    pub(crate) job: Option<Brief>,
    #[serde(default)]
    pub(crate) error: Option<queue_proto::ErrorDetail>,
}

impl ItemReply {
    /// The item's outcome: the state its job was left in, or the error its
    /// single endpoint would have answered with.
    pub(crate) fn outcome(self) -> Result<JobState> {
        let state = self.state.or(self.job.map(|job| job.state));
        match (state, self.error) {
            (Some(state), None) if self.status == 200 => Ok(state),
            (_, Some(error)) => Err(Error::from_code(
                self.status,
                Some(error.code),
                error.message,
            )),
            (_, None) => Err(Error::from_code(
                self.status,
                None,
                format!(
                    "the settle answered {} for job {} without its state",
                    self.status, self.id
                ),
            )),
        }
    }
}

pub(crate) enum Transport {
    Http(Box<Http>),
    #[cfg(feature = "embedded")]
    Embedded(Embedded),
}

/// Runs the same call on whichever transport this is.
/// How long after sending a lease request a cancelled HTTP lease still
/// waits for its answer: longer than granting takes (a read and a durable
/// commit), far shorter than a long-poll.
pub(crate) const GRANT_GRACE: Duration = Duration::from_secs(1);

macro_rules! dispatch {
    ($self:ident, $t:ident => $call:expr) => {
        match $self {
            Transport::Http($t) => $call,
            #[cfg(feature = "embedded")]
            Transport::Embedded($t) => $call,
        }
    };
}

/// A queue name is checked before anything is sent: over HTTP it becomes a
/// path segment, and a name like `a/lease` must not reach another route.
fn check_queue(queue: &str) -> Result<()> {
    validate_queue_name(queue).map_err(|e| Error::invalid(format!("queue name: {e}")))
}

/// A schedule name is checked before anything is sent, as a queue name is.
fn check_schedule(name: &str) -> Result<()> {
    validate_queue_name(name).map_err(|e| Error::invalid(format!("schedule name: {e}")))
}

impl Transport {
    /// Enqueues one job; with `wait`, holds the answer until the job is
    /// terminal or the wait passes. Returns the job and whether the server
    /// replayed an earlier enqueue with the same idempotency key.
    pub(crate) async fn enqueue<V: JobView>(
        &self,
        queue: &str,
        request: &EnqueueRequest,
        wait: Option<Duration>,
    ) -> Result<(V, bool)> {
        check_queue(queue)?;
        dispatch!(self, t => t.enqueue(queue, request, wait).await)
    }

    pub(crate) async fn enqueue_batch<V: JobView>(
        &self,
        queue: &str,
        request: &BatchRequest,
    ) -> Result<Vec<V>> {
        check_queue(queue)?;
        dispatch!(self, t => t.enqueue_batch(queue, request).await)
    }

    pub(crate) async fn lease(&self, queue: &str, request: &LeaseRequest) -> Result<Vec<Job>> {
        check_queue(queue)?;
        dispatch!(self, t => t.lease(queue, request).await)
    }

    /// A lease whose wait ends, empty, when `cancel` completes (a worker's
    /// shutdown). In process the wait is cancelled inside the service, so a
    /// lease granted at that moment is still returned.
    ///
    /// Over HTTP there is no way to tell the server to stop waiting but to
    /// close the request's connection (the server then drops the wait), and
    /// a lease the server is granting at that moment would be answered to
    /// nobody. So a request sent less than [`GRANT_GRACE`] ago, which may be
    /// a grant on its way, is waited for until then; an older one is waiting
    /// on the server for a job, and is dropped at once. What remains is an
    /// enqueue landing in the very instant of the drop: its job comes back
    /// when its lease expires, as after a crash.
    pub(crate) async fn lease_until(
        &self,
        queue: &str,
        request: &LeaseRequest,
        cancel: impl Future<Output = ()> + Send,
    ) -> Result<Vec<Job>> {
        check_queue(queue)?;
        match self {
            Transport::Http(http) => {
                let sent = tokio::time::Instant::now();
                let reply = http.lease(queue, request);
                tokio::pin!(reply);
                tokio::select! {
                    biased;
                    reply = &mut reply => return reply,
                    () = cancel => {}
                }
                match tokio::time::timeout_at(sent + GRANT_GRACE, reply).await {
                    Ok(reply) => reply,
                    Err(_) => Ok(Vec::new()),
                }
            }
            #[cfg(feature = "embedded")]
            Transport::Embedded(embedded) => embedded.lease_until(queue, request, cancel).await,
        }
    }

    // The calls a lease holder makes about its job carry the job's
    // correlation id (`request_id`), sent over HTTP as `X-Request-Id` so
    // that the server's log lines of the job share one id. In process there
    // is no request line to put it in.

    pub(crate) async fn heartbeat(
        &self,
        id: &str,
        request: &HeartbeatRequest,
        request_id: Option<&str>,
    ) -> Result<Job> {
        dispatch!(self, t => t.heartbeat(id, request, request_id).await)
    }

    pub(crate) async fn complete<V: JobView>(
        &self,
        id: &str,
        request: &CompleteRequest,
        request_id: Option<&str>,
    ) -> Result<V> {
        dispatch!(self, t => t.complete(id, request, request_id).await)
    }

    pub(crate) async fn fail<V: JobView>(
        &self,
        id: &str,
        request: &FailRequest,
        request_id: Option<&str>,
    ) -> Result<V> {
        dispatch!(self, t => t.fail(id, request, request_id).await)
    }

    /// `POST /v1/queues/{queue}/settle`. Sent with `X-Request-Id:
    /// request_id` when given (the worker gives the job's correlation id
    /// when it settles one job).
    pub(crate) async fn settle(
        &self,
        queue: &str,
        request: &SettleRequest,
        request_id: Option<&str>,
    ) -> Result<SettleReply> {
        check_queue(queue)?;
        dispatch!(self, t => t.settle(queue, request, request_id).await)
    }

    pub(crate) async fn release<V: JobView>(
        &self,
        id: &str,
        request: &ReleaseRequest,
        request_id: Option<&str>,
    ) -> Result<V> {
        dispatch!(self, t => t.release(id, request, request_id).await)
    }

    /// Reads a job; with `wait`, holds the answer until it is terminal or the
    /// wait passes.
    pub(crate) async fn get<V: JobView>(&self, id: &str, wait: Option<Duration>) -> Result<V> {
        dispatch!(self, t => t.get(id, wait).await)
    }

    pub(crate) async fn cancel<V: JobView>(&self, id: &str) -> Result<V> {
        dispatch!(self, t => t.cancel(id).await)
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        check_queue(queue)?;
        dispatch!(self, t => t.stats(queue).await)
    }

    pub(crate) async fn history(
        &self,
        queue: &str,
        query: &queue_proto::HistoryQuery,
    ) -> Result<queue_proto::History> {
        check_queue(queue)?;
        dispatch!(self, t => t.history(queue, query).await)
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueStats>> {
        dispatch!(self, t => t.queues().await)
    }

    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueStats> {
        check_queue(queue)?;
        dispatch!(self, t => t.set_paused(queue, paused).await)
    }

    pub(crate) async fn patch_queue(
        &self,
        queue: &str,
        request: &queue_proto::PatchQueueRequest,
    ) -> Result<QueueStats> {
        check_queue(queue)?;
        dispatch!(self, t => t.patch_queue(queue, request).await)
    }

    pub(crate) async fn dead_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        check_queue(queue)?;
        dispatch!(self, t => t.dead_letters(queue, after, limit).await)
    }

    pub(crate) async fn jobs(
        &self,
        queue: &str,
        state: queue_proto::JobState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<queue_proto::JobPage> {
        check_queue(queue)?;
        dispatch!(self, t => t.jobs(queue, state, after, limit).await)
    }

    pub(crate) async fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<queue_proto::JobPage> {
        dispatch!(self, t => t.jobs_by_correlation(correlation_id, after, limit).await)
    }

    pub(crate) async fn requeue_dead(&self, queue: &str, request: &RequeueRequest) -> Result<u64> {
        check_queue(queue)?;
        dispatch!(self, t => t.requeue_dead(queue, request).await)
    }

    pub(crate) async fn purge_dead(&self, queue: &str) -> Result<u64> {
        check_queue(queue)?;
        dispatch!(self, t => t.purge_dead(queue).await)
    }

    /// Opens one connection of an event stream, resuming after event
    /// `after` (`None`: from now on, or for a job, from its current state).
    pub(crate) async fn open_events(
        &self,
        source: &EventSource,
        after: Option<u64>,
    ) -> Result<EventConnection> {
        if let EventSource::Filter(filter) = source {
            for queue in &filter.queues {
                check_queue(queue)?;
            }
        }
        dispatch!(self, t => t.open_events(source, after).await)
    }

    /// Stores a schedule; `true` when it is new.
    pub(crate) async fn put_schedule(
        &self,
        name: &str,
        request: &ScheduleRequest,
    ) -> Result<(Schedule, bool)> {
        check_schedule(name)?;
        dispatch!(self, t => t.put_schedule(name, request).await)
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<Schedule>> {
        dispatch!(self, t => t.schedules().await)
    }

    pub(crate) async fn schedule(&self, name: &str) -> Result<Schedule> {
        check_schedule(name)?;
        dispatch!(self, t => t.schedule(name).await)
    }

    pub(crate) async fn delete_schedule(&self, name: &str) -> Result<Schedule> {
        check_schedule(name)?;
        dispatch!(self, t => t.delete_schedule(name).await)
    }

    pub(crate) async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Schedule> {
        check_schedule(name)?;
        dispatch!(self, t => t.set_schedule_paused(name, paused).await)
    }

    pub(crate) async fn trigger_schedule<V: JobView>(&self, name: &str) -> Result<V> {
        check_schedule(name)?;
        dispatch!(self, t => t.trigger_schedule(name).await)
    }

    /// One page of the jobs whose callback delivery is in `state`.
    pub(crate) async fn callbacks(
        &self,
        state: queue_proto::CallbackState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        dispatch!(self, t => t.callbacks(state, after, limit).await)
    }

    /// Starts a new delivery of a finished job's callback.
    pub(crate) async fn retry_callback<V: JobView>(&self, id: &str) -> Result<V> {
        dispatch!(self, t => t.retry_callback(id).await)
    }

    pub(crate) async fn health(&self) -> Result<()> {
        dispatch!(self, t => t.health().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> ItemReply {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_settled_item_s_state_is_read_with_or_without_its_job() {
        // Under `Prefer: return=minimal`.
        let minimal = item(r#"{"id":"a","status":200,"state":"dead"}"#);
        assert_eq!(minimal.outcome().unwrap(), JobState::Dead);
        // A server before `state` was added: the job's.
        let whole =
            item(r#"{"id":"a","status":200,"job":{"id":"a","state":"scheduled","attempts":1}}"#);
        assert_eq!(whole.outcome().unwrap(), JobState::Scheduled);
        let both = item(
            r#"{"id":"a","status":200,"state":"completed","job":{"id":"a","state":"completed","attempts":1}}"#,
        );
        assert_eq!(both.outcome().unwrap(), JobState::Completed);
        let lost =
            item(r#"{"id":"a","status":409,"error":{"code":"lease_lost","message":"gone"}}"#);
        assert!(matches!(lost.outcome(), Err(Error::LeaseLost { .. })));
        let neither = item(r#"{"id":"a","status":200}"#);
        let error = neither.outcome().unwrap_err();
        assert!(error.to_string().contains("without its state"), "{error}");
    }
}
