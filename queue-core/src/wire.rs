//! Conversions between the core's records and the wire types of
//! `queue-proto`, shared by the HTTP server and the client SDK's embedded
//! transport so that both present exactly the same job object.

use queue_proto::limits::{DEFAULT_BACKOFF_MS, DEFAULT_LEASE_MS, DEFAULT_MAX_ATTEMPTS};
use queue_proto::{
    CallbackInfo, CallbackState, EnqueueRequest, FailRequest, LeaseRequest, RawValue,
};

use crate::{Callback, CallbackStatus, Event, Failure, Job, LeaseId, LeaseOptions, NewJob};

/// The job object of `$job` (a `Job` or a `&Job`), each text, map and
/// the lease taken by `$take`: `moved!` for [`Job::into_wire`], `cloned!`
/// for [`Job::to_wire`]. One list of the fields for both.
macro_rules! wire_job {
    ($job:expr, $lease_id:expr, $take:ident) => {{
        let lease_expires_at = $job.lease_expires_at();
        queue_proto::Job {
            id: $job.id.to_string(),
            queue: $take!($job.queue),
            state: $job.state,
            payload: raw_json(&$job.payload),
            priority: $job.priority,
            attempts: $job.attempts,
            max_attempts: $job.max_attempts,
            backoff_ms: $job.backoff_ms,
            created_at: $job.created_at,
            updated_at: $job.updated_at,
            run_at: $job.run_at,
            lease_expires_at,
            worker: $take!($job.lease).and_then(|lease| lease.worker),
            idempotency_key: $take!($job.idempotency_key),
            result: $job.result.as_deref().map(raw_json),
            last_error: $take!($job.last_error),
            finished_at: $job.finished_at,
            lease_id: $lease_id.map(|id: LeaseId| id.to_string()),
            correlation_id: $take!($job.correlation_id),
            headers: $take!($job.headers),
            progress: $job.progress.as_deref().map(raw_json),
            callback_url: $take!($job.callback_url),
            callback: $job.callback.as_ref().map(Callback::to_wire),
            group: $take!($job.group),
            timeout_ms: $job.timeout_ms,
            expires_at: $job.expires_at,
            started_at: $job.started_at,
            schedule: $take!($job.schedule),
        }
    }};
}

macro_rules! moved {
    ($field:expr) => {
        $field
    };
}

macro_rules! cloned {
    ($field:expr) => {
        $field.clone()
    };
}

impl Job {
    /// The job object of the HTTP contract; `lease_id` is set only in lease
    /// responses. Payload and result bytes that are not JSON (an embedded
    /// user may store anything) are shown as a JSON string.
    pub fn to_wire(&self, lease_id: Option<LeaseId>) -> queue_proto::Job {
        wire_job!(self, lease_id, cloned)
    }

    /// [`Job::to_wire`] of a job the caller no longer needs: its texts and
    /// headers move into the wire object instead of being copied (a lease,
    /// settle or enqueue response's jobs). The payload, result and progress
    /// are copied still: a JSON value is checked as it is made, and a
    /// failed check would leave nothing to show as a string.
    pub fn into_wire(self, lease_id: Option<LeaseId>) -> queue_proto::Job {
        wire_job!(self, lease_id, moved)
    }
}

impl Job {
    /// The job's current state as an event of the stream, with id
    /// `event_id` (the job's latest): what a job's own stream starts with.
    pub fn to_wire_event(&self, event_id: u64) -> queue_proto::Event {
        let terminal = self.state.is_terminal();
        queue_proto::Event {
            event_id,
            id: self.id.to_string(),
            queue: self.queue.clone(),
            state: self.state,
            attempts: self.attempts,
            at: self.updated_at,
            correlation_id: self.correlation_id.clone(),
            result: (self.state == queue_proto::JobState::Completed)
                .then(|| self.result.as_deref().map(raw_json))
                .flatten(),
            last_error: terminal.then(|| self.last_error.clone()).flatten(),
            progress: None,
        }
    }
}

impl crate::Schedule {
    /// The schedule object of the HTTP contract.
    ///
    /// # Errors
    /// [`Error::Corrupt`](crate::Error::Corrupt) if the stored job body
    /// does not read as an enqueue body (it was checked when stored).
    pub fn to_wire(&self) -> crate::Result<queue_proto::Schedule> {
        let job = serde_json::from_str(&self.job).map_err(|e| {
            crate::Error::Corrupt(format!("schedule {:?} has a bad job body: {e}", self.name))
        })?;
        Ok(queue_proto::Schedule {
            name: self.name.clone(),
            queue: self.queue.clone(),
            cron: self.cron.clone(),
            every_ms: self.every_ms,
            timezone: self.timezone.clone(),
            job,
            catch_up: self.catch_up,
            paused: self.paused,
            next_run_at: self.next_run_at,
            last_run_at: self.last_run_at,
            last_job_id: self.last_job_id.map(|id| id.to_string()),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Callback {
    /// The job object's `callback` field.
    pub fn to_wire(&self) -> CallbackInfo {
        CallbackInfo {
            state: match self.status {
                CallbackStatus::Pending => CallbackState::Pending,
                CallbackStatus::Delivered => CallbackState::Delivered,
                CallbackStatus::Failed => CallbackState::Failed,
            },
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error.clone(),
            next_attempt_at: self.next_attempt_at,
            delivered_at: self.delivered_at,
        }
    }
}

impl From<CallbackState> for CallbackStatus {
    fn from(state: CallbackState) -> Self {
        match state {
            CallbackState::Pending => CallbackStatus::Pending,
            CallbackState::Delivered => CallbackStatus::Delivered,
            CallbackState::Failed => CallbackStatus::Failed,
        }
    }
}

impl Event {
    /// The event as sent on the event stream.
    pub fn to_wire(&self) -> queue_proto::Event {
        queue_proto::Event {
            event_id: self.event_id,
            id: self.id.to_string(),
            queue: self.queue.clone(),
            state: self.state,
            attempts: self.attempts,
            at: self.at,
            correlation_id: self.correlation_id.clone(),
            result: self.result.as_deref().map(raw_json),
            last_error: self.last_error.clone(),
            progress: self.progress.as_deref().map(raw_json),
        }
    }
}

/// An enqueue body with the contract's defaults filled in. The body's
/// `idempotency_key` is kept; a caller with a second source of the key (the
/// HTTP header) reconciles the two before converting.
impl From<EnqueueRequest> for NewJob {
    fn from(request: EnqueueRequest) -> Self {
        NewJob {
            payload: request.payload.get().as_bytes().to_vec(),
            priority: request.priority.unwrap_or(0),
            delay_ms: request.delay_ms,
            run_at: request.run_at,
            max_attempts: request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            backoff_ms: request.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS),
            idempotency_key: request.idempotency_key,
            correlation_id: request.correlation_id,
            headers: request.headers.unwrap_or_default(),
            callback_url: request.callback_url,
            group: request.group,
            timeout_ms: request.timeout_ms,
            ttl_ms: request.ttl_ms,
            expires_at: request.expires_at,
            schedule: None,
            request_digest: None,
        }
    }
}

/// A lease body with the contract's defaults; `wait_ms` is the caller's to
/// honour (see [`Queue::lease_wait`](crate::Queue::lease_wait)).
impl From<LeaseRequest> for LeaseOptions {
    fn from(request: LeaseRequest) -> Self {
        LeaseOptions {
            max_jobs: request.max_jobs.unwrap_or(1),
            lease_ms: request.lease_ms.unwrap_or(DEFAULT_LEASE_MS),
            worker: request.worker,
        }
    }
}

impl From<FailRequest> for Failure {
    fn from(request: FailRequest) -> Self {
        Failure {
            error: request.error,
            retry_in_ms: request.retry_in_ms,
            retryable: request.retryable,
        }
    }
}

fn raw_json(bytes: &[u8]) -> Box<RawValue> {
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_owned()).ok())
    {
        Some(raw) => raw,
        None => {
            // A string always encodes; the fallback keeps this free of panics.
            let text = String::from_utf8_lossy(bytes);
            serde_json::value::to_raw_value(&text)
                .or_else(|_| serde_json::value::to_raw_value(&()))
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_json_bytes_become_a_string() {
        assert_eq!(raw_json(br#"{"a":1}"#).get(), r#"{"a":1}"#);
        assert_eq!(raw_json(b"not json").get(), r#""not json""#);
        assert_eq!(raw_json(&[0xff, b'a']).get(), "\"\u{fffd}a\"");
    }

    #[test]
    fn a_job_moves_into_the_wire_object_field_by_field() {
        let mut job = crate::rules::testing::full_job();
        job.last_error = Some("boom".into());
        job.finished_at = Some(91);
        if let Some(lease) = &mut job.lease {
            lease.worker = Some("w-1".into());
        }
        let lease_id = job.lease.as_ref().map(|lease| lease.id);
        let wire = job.clone().into_wire(lease_id);
        assert_eq!(wire.id, job.id.to_string());
        assert_eq!(wire.queue, job.queue);
        assert_eq!(wire.state, job.state);
        assert_eq!(wire.payload.get().as_bytes(), &job.payload[..]);
        assert_eq!(
            (
                wire.priority,
                wire.attempts,
                wire.max_attempts,
                wire.backoff_ms
            ),
            (job.priority, job.attempts, job.max_attempts, job.backoff_ms)
        );
        assert_eq!(
            (wire.created_at, wire.updated_at, wire.run_at),
            (job.created_at, job.updated_at, job.run_at)
        );
        assert_eq!(wire.lease_expires_at, job.lease_expires_at());
        assert_eq!(wire.worker.as_deref(), Some("w-1"));
        assert_eq!(wire.idempotency_key, job.idempotency_key);
        assert_eq!(
            wire.result.as_ref().map(|r| r.get().as_bytes().to_vec()),
            job.result
        );
        assert_eq!(wire.last_error, job.last_error);
        assert_eq!(wire.finished_at, job.finished_at);
        assert_eq!(wire.lease_id, lease_id.map(|id| id.to_string()));
        assert_eq!(wire.correlation_id, job.correlation_id);
        assert_eq!(wire.headers, job.headers);
        assert_eq!(
            wire.progress.as_ref().map(|p| p.get().as_bytes().to_vec()),
            job.progress
        );
        assert_eq!(wire.callback_url, job.callback_url);
        assert_eq!(wire.callback, job.callback.as_ref().map(Callback::to_wire));
        assert_eq!(wire.group, job.group);
        assert_eq!(
            (wire.timeout_ms, wire.expires_at, wire.started_at),
            (job.timeout_ms, job.expires_at, job.started_at)
        );
        assert_eq!(wire.schedule, job.schedule);
        // A copy of a job shows the same.
        assert_eq!(
            serde_json::to_string(&job.to_wire(lease_id)).unwrap(),
            serde_json::to_string(&wire).unwrap()
        );
    }

    #[test]
    fn requests_get_the_contract_defaults() {
        let request: EnqueueRequest = serde_json::from_str(r#"{"payload": [1]}"#).unwrap();
        let job = NewJob::from(request);
        assert_eq!(job.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(job.backoff_ms, DEFAULT_BACKOFF_MS);
        assert_eq!(job.payload, b"[1]");
        let opts = LeaseOptions::from(LeaseRequest::default());
        assert_eq!(opts, LeaseOptions::default());
    }
}
