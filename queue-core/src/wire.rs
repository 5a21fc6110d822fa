//! Conversions between the core's records and the wire types of
//! `queue-proto`, shared by the HTTP server and the client SDK's embedded
//! transport so that both present exactly the same job object.

use queue_proto::limits::{DEFAULT_BACKOFF_MS, DEFAULT_LEASE_MS, DEFAULT_MAX_ATTEMPTS};
use queue_proto::{
    CallbackInfo, CallbackState, EnqueueRequest, FailRequest, LeaseRequest, RawValue,
};

use crate::{Callback, CallbackStatus, Event, Failure, Job, LeaseId, LeaseOptions, NewJob};

impl Job {
    /// The job object of the HTTP contract; `lease_id` is set only in lease
    /// responses. Payload and result bytes that are not JSON (an embedded
    /// user may store anything) are shown as a JSON string.
    pub fn to_wire(&self, lease_id: Option<LeaseId>) -> queue_proto::Job {
        queue_proto::Job {
            id: self.id.to_string(),
            queue: self.queue.clone(),
            state: self.state,
            payload: raw_json(&self.payload),
            priority: self.priority,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            created_at: self.created_at,
            updated_at: self.updated_at,
            run_at: self.run_at,
            lease_expires_at: self.lease_expires_at(),
            worker: self.lease.as_ref().and_then(|lease| lease.worker.clone()),
            idempotency_key: self.idempotency_key.clone(),
            result: self.result.as_deref().map(raw_json),
            last_error: self.last_error.clone(),
            finished_at: self.finished_at,
            lease_id: lease_id.map(|id| id.to_string()),
            correlation_id: self.correlation_id.clone(),
            headers: self.headers.clone(),
            progress: self.progress.as_deref().map(raw_json),
            callback_url: self.callback_url.clone(),
            callback: self.callback.as_ref().map(Callback::to_wire),
            group: self.group.clone(),
            timeout_ms: self.timeout_ms,
            expires_at: self.expires_at,
            started_at: self.started_at,
            schedule: self.schedule.clone(),
        }
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
