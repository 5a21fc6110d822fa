//! Core records to wire JSON.

use queue_core::{Job, LeaseId};
use queue_proto::RawValue;

/// Bytes stored as JSON become raw JSON; bytes that are not JSON (an embedded
/// user may store anything) are shown as a JSON string rather than failing.
fn raw_json(bytes: &[u8]) -> Box<RawValue> {
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_owned()).ok())
    {
        Some(raw) => raw,
        None => {
            let text = String::from_utf8_lossy(bytes);
            serde_json::value::to_raw_value(&text).unwrap_or_else(|_| null())
        }
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable_null())
}

// `"null"` always parses; this keeps the conversion free of panics anyway.
fn unreachable_null() -> Box<RawValue> {
    serde_json::value::to_raw_value(&()).unwrap_or_default()
}

/// The job object of the contract; `lease_id` only in lease responses.
pub fn job_json(job: &Job, lease_id: Option<LeaseId>) -> queue_proto::Job {
    queue_proto::Job {
        id: job.id.to_string(),
        queue: job.queue.clone(),
        state: job.state,
        payload: raw_json(&job.payload),
        priority: job.priority,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        backoff_ms: job.backoff_ms,
        created_at: job.created_at,
        updated_at: job.updated_at,
        run_at: job.run_at,
        lease_expires_at: job.lease_expires_at(),
        worker: job.lease.as_ref().and_then(|lease| lease.worker.clone()),
        idempotency_key: job.idempotency_key.clone(),
        result: job.result.as_deref().map(raw_json),
        last_error: job.last_error.clone(),
        lease_id: lease_id.map(|id| id.to_string()),
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
}
