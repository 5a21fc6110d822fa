//! The in-process transport: calls on a `queue_core::Queue`, answered with
//! the same wire objects and error codes as the server.

use std::time::Duration;

use queue_core::{Failure, JobId, LeaseId, LeaseOptions, NewJob, Queue, RecvError};
use queue_proto::limits::MAX_WAIT_MS;
use queue_proto::{
    BatchRequest, CompleteRequest, DeadPage, EnqueueRequest, FailRequest, HeartbeatRequest, Job,
    LeaseRequest, QueueStats, ReleaseRequest, RequeueRequest,
};
use tokio::sync::mpsc;

use super::{EVENT_BUFFER, EventReceiver, JobView};
use crate::options::millis;
use crate::{Error, EventFilter, Result};

#[derive(Clone)]
pub(crate) struct Embedded {
    queue: Queue,
}

/// The same mapping as the server's: each engine outcome becomes the code a
/// client would get over HTTP.
fn map(error: queue_core::Error) -> Error {
    use queue_core::Error as E;
    let message = error.to_string();
    match error {
        E::InvalidArgument { .. } => Error::InvalidRequest { message },
        E::TooLarge { .. } => Error::PayloadTooLarge { message },
        E::NotFound { .. } => Error::NotFound { message },
        E::LeaseLost { .. } => Error::LeaseLost { message },
        E::Conflict { .. } => Error::Conflict { message },
        E::Closed => Error::Unavailable { message },
        E::Storage(e) => Error::Unavailable {
            message: format!("storage failed: {e}"),
        },
        _ => Error::Server {
            status: 500,
            code: "internal".to_owned(),
            message,
        },
    }
}

/// A malformed id names no job: not found, as over HTTP.
fn job_id(raw: &str) -> Result<JobId> {
    raw.parse().map_err(|_| Error::NotFound {
        message: format!("job {raw:?} not found"),
    })
}

fn check_wait(wait: Duration) -> Result<()> {
    if millis(wait) > MAX_WAIT_MS {
        return Err(Error::invalid(format!(
            "wait_ms must be in 0..={MAX_WAIT_MS}, got {}",
            millis(wait)
        )));
    }
    Ok(())
}

impl Embedded {
    pub(crate) fn new(queue: Queue) -> Embedded {
        Embedded { queue }
    }

    /// Runs a synchronous engine call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Queue) -> queue_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || call(&queue))
            .await
            .map_err(|e| Error::Server {
                status: 500,
                code: "internal".to_owned(),
                message: format!("embedded call failed: {e}"),
            })?
            .map_err(map)
    }

    async fn load(&self, id: JobId) -> Result<queue_core::Job> {
        self.blocking(move |q| q.get(id))
            .await?
            .ok_or_else(|| map(queue_core::Error::NotFound { id }))
    }

    /// Parses a lease id; a malformed one cannot be the job's lease, so the
    /// answer is lease lost, or not found when the job is unknown too.
    async fn lease_id(&self, id: JobId, raw: &str) -> Result<LeaseId> {
        match raw.parse() {
            Ok(lease) => Ok(lease),
            Err(_) => {
                self.load(id).await?;
                Err(map(queue_core::Error::LeaseLost { id }))
            }
        }
    }

    pub(crate) async fn enqueue<V: JobView>(
        &self,
        queue: &str,
        request: &EnqueueRequest,
        wait: Option<Duration>,
    ) -> Result<(V, bool)> {
        let wait = wait.unwrap_or_default();
        check_wait(wait)?;
        let enqueued = self
            .queue
            .enqueue_async(queue, NewJob::from(request.clone()))
            .await
            .map_err(map)?;
        let mut job = enqueued.job;
        if !wait.is_zero() && !job.state.is_terminal() {
            job = self.queue.wait_terminal(job.id, wait).await.map_err(map)?;
        }
        Ok((V::of(&job), enqueued.replayed))
    }

    pub(crate) async fn enqueue_batch<V: JobView>(
        &self,
        queue: &str,
        request: &BatchRequest,
    ) -> Result<Vec<V>> {
        let jobs = request.jobs.iter().cloned().map(NewJob::from).collect();
        let enqueued = self
            .queue
            .enqueue_batch_async(queue, jobs)
            .await
            .map_err(map)?;
        Ok(enqueued.iter().map(|e| V::of(&e.job)).collect())
    }

    pub(crate) async fn lease(&self, queue: &str, request: &LeaseRequest) -> Result<Vec<Job>> {
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
        check_wait(wait)?;
        let opts = LeaseOptions::from(request.clone());
        let leased = if wait.is_zero() {
            self.queue.lease_async(queue, &opts).await
        } else {
            self.queue.lease_wait(queue, &opts, wait).await
        }
        .map_err(map)?;
        Ok(leased
            .iter()
            .map(|l| l.job.to_wire(Some(l.lease_id)))
            .collect())
    }

    pub(crate) async fn heartbeat(&self, id: &str, request: &HeartbeatRequest) -> Result<Job> {
        let id = job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let job = self
            .queue
            .heartbeat_async(id, lease, request.lease_ms)
            .await
            .map_err(map)?;
        Ok(job.to_wire(None))
    }

    pub(crate) async fn complete<V: JobView>(
        &self,
        id: &str,
        request: &CompleteRequest,
    ) -> Result<V> {
        let id = job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let result = request
            .result
            .as_ref()
            .map(|raw| raw.get().as_bytes().to_vec());
        let job = self
            .queue
            .complete_async(id, lease, result)
            .await
            .map_err(map)?;
        Ok(V::of(&job))
    }

    pub(crate) async fn fail<V: JobView>(&self, id: &str, request: &FailRequest) -> Result<V> {
        let id = job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let failure = Failure::from(request.clone());
        let job = self
            .queue
            .fail_async(id, lease, &failure)
            .await
            .map_err(map)?;
        Ok(V::of(&job))
    }

    pub(crate) async fn release<V: JobView>(
        &self,
        id: &str,
        request: &ReleaseRequest,
    ) -> Result<V> {
        let id = job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let job = self.queue.release_async(id, lease).await.map_err(map)?;
        Ok(V::of(&job))
    }

    pub(crate) async fn get<V: JobView>(&self, id: &str, wait: Option<Duration>) -> Result<V> {
        let id = job_id(id)?;
        let wait = wait.unwrap_or_default();
        check_wait(wait)?;
        let job = if wait.is_zero() {
            self.load(id).await?
        } else {
            self.queue.wait_terminal(id, wait).await.map_err(map)?
        };
        Ok(V::of(&job))
    }

    pub(crate) async fn cancel<V: JobView>(&self, id: &str) -> Result<V> {
        let id = job_id(id)?;
        let job = self.queue.cancel_async(id).await.map_err(map)?;
        Ok(V::of(&job))
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let queue = queue.to_owned();
        self.blocking(move |q| q.stats(&queue)).await
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueStats>> {
        self.blocking(Queue::queues).await
    }

    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueStats> {
        let queue = queue.to_owned();
        self.blocking(move |q| {
            if paused {
                q.pause(&queue)
            } else {
                q.resume(&queue)
            }
        })
        .await
    }

    pub(crate) async fn dead_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        // An `after` that is no id of ours cannot be passed; over HTTP the
        // server answers the same 400.
        let after = match after {
            Some(raw) => Some(
                raw.parse::<JobId>()
                    .map_err(|_| Error::invalid(format!("after: {raw:?} is not a job id")))?,
            ),
            None => None,
        };
        let queue = queue.to_owned();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = self
            .blocking(move |q| q.dead_letters(&queue, after, limit))
            .await?;
        Ok(DeadPage {
            jobs: page.jobs.iter().map(|j| j.to_wire(None)).collect(),
            next: page.next.map(|id| id.to_string()),
        })
    }

    pub(crate) async fn requeue_dead(&self, queue: &str, request: &RequeueRequest) -> Result<u64> {
        // A malformed id is refused, as the server refuses it; well-formed
        // ids that are no dead job of the queue are skipped by the engine.
        let ids = match &request.ids {
            Some(ids) => Some(
                ids.iter()
                    .map(|raw| {
                        raw.parse::<JobId>()
                            .map_err(|_| Error::invalid(format!("ids: {raw:?} is not a job id")))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        let queue = queue.to_owned();
        self.blocking(move |q| q.requeue_dead(&queue, ids.as_deref()))
            .await
    }

    pub(crate) async fn purge_dead(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_owned();
        self.blocking(move |q| q.purge_dead(&queue)).await
    }

    pub(crate) async fn events(&self, filter: &EventFilter) -> Result<EventReceiver> {
        let mut subscription = self.queue.subscribe();
        let filter = filter.clone();
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    () = tx.closed() => return,
                    received = subscription.recv() => received,
                };
                let item = match received {
                    Ok(event) => {
                        let event = event.to_wire();
                        if filter.queue.as_deref().is_some_and(|q| q != event.queue)
                            || filter.job.as_ref().is_some_and(|j| j.as_str() != event.id)
                        {
                            continue;
                        }
                        Ok(event)
                    }
                    Err(RecvError::Lagged(missed)) => Err(Error::EventsMissed { missed }),
                    Err(RecvError::Closed) => return,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    pub(crate) async fn health(&self) -> Result<()> {
        Ok(())
    }
}
