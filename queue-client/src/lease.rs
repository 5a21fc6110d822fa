//! The calls a lease holder makes (heartbeat, complete, fail, release),
//! shared by [`Leased`](crate::Leased), the worker and the blocking API, and
//! the rule for a retry whose earlier try landed but lost its answer.

use std::time::Duration;

use queue_proto::{
    CompleteRequest, FailRequest, HeartbeatRequest, JobState, RawValue, ReleaseRequest,
};

use crate::options::millis;
use crate::transport::Brief;
use crate::{Client, Error, Failure, Job, Result};

/// Extends a lease (see [`Leased::heartbeat`](crate::Leased::heartbeat)),
/// reporting `progress` if given, and notes the job's new deadline and
/// progress on `job`.
pub(crate) async fn heartbeat_lease<T>(
    client: &Client,
    job: &mut Job<T>,
    lease_id: &str,
    length: Option<Duration>,
    progress: Option<Box<RawValue>>,
) -> Result<()> {
    let request = HeartbeatRequest {
        lease_id: lease_id.to_owned(),
        lease_ms: length.map(millis),
        progress,
    };
    let reply = client
        .transport()
        .heartbeat(job.id.as_str(), &request, job.correlation_id.as_deref())
        .await?;
    job.lease_expires_at = reply.lease_expires_at;
    job.updated_at = reply.updated_at;
    if request.progress.is_some() {
        job.set_progress(reply.progress);
    }
    Ok(())
}

/// The job a settlement is about: its id, its lease, and its correlation id
/// (sent as `X-Request-Id`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held<'a> {
    pub(crate) id: &'a str,
    pub(crate) lease_id: &'a str,
    pub(crate) correlation_id: Option<&'a str>,
}

/// Completes a leased job (see [`fenced`] for retries).
pub(crate) async fn settle_complete(
    client: &Client,
    held: Held<'_>,
    result: Option<Box<RawValue>>,
) -> Result<()> {
    let Held {
        id,
        lease_id,
        correlation_id,
    } = held;
    let request = CompleteRequest {
        lease_id: lease_id.to_owned(),
        result,
    };
    let call = || client.transport().complete(id, &request, correlation_id);
    fenced(client, id, call, |state| state == JobState::Completed)
        .await
        .map(|_| ())
}

/// Fails a leased job (see [`fenced`] for retries); returns the state it
/// went to.
pub(crate) async fn settle_fail(
    client: &Client,
    held: Held<'_>,
    failure: &Failure,
) -> Result<JobState> {
    let Held {
        id,
        lease_id,
        correlation_id,
    } = held;
    let request = FailRequest {
        lease_id: lease_id.to_owned(),
        error: failure.message().to_owned(),
        retry_in_ms: failure.retry_delay().map(millis),
        retryable: failure.is_retryable(),
    };
    let call = || client.transport().fail(id, &request, correlation_id);
    fenced(client, id, call, |state| state != JobState::Leased).await
}

/// Releases a leased job (see [`fenced`] for retries).
pub(crate) async fn settle_release(client: &Client, held: Held<'_>) -> Result<()> {
    let Held {
        id,
        lease_id,
        correlation_id,
    } = held;
    let request = ReleaseRequest {
        lease_id: lease_id.to_owned(),
    };
    let call = || client.transport().release(id, &request, correlation_id);
    fenced(client, id, call, |state| state == JobState::Ready)
        .await
        .map(|_| ())
}

/// Runs a call fenced by a lease, retrying transient failures, and returns
/// the state it left the job in. A retry refused with `lease_lost` means an
/// earlier try may have landed (its answer was lost): when the job is in a
/// state that try would have left it in, that is success.
async fn fenced<F, Fut>(
    client: &Client,
    id: &str,
    call: F,
    landed: impl Fn(JobState) -> bool,
) -> Result<JobState>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Brief>>,
{
    let mut retried = false;
    let outcome = client
        .retrying(|attempt| {
            retried = attempt > 0;
            call()
        })
        .await;
    match outcome {
        Ok(job) => Ok(job.state),
        Err(Error::LeaseLost { message }) if retried => {
            match client.transport().get::<Brief>(id, None).await {
                Ok(job) if landed(job.state) => Ok(job.state),
                _ => Err(Error::LeaseLost { message }),
            }
        }
        Err(e) => Err(e),
    }
}
