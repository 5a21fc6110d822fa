//! Jobs: enqueue (one or a batch) into a queue, list a queue's jobs by
//! state or every job of a correlation id, and a job's own calls — read
//! (with a long-poll), cancel, and the lease-fenced heartbeat, complete,
//! fail and release.

use http::StatusCode;
use http::header::{HeaderValue, LOCATION};
use queue_core::service::RequestContext;
use queue_proto::{
    BatchRequest, CompleteRequest, EnqueueRequest, FailRequest, HeartbeatRequest, ReleaseRequest,
};

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::error::ApiError;
use crate::http::json;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/queues/{queue}/jobs`
    Enqueue,
    /// `POST /v1/queues/{queue}/jobs/batch`
    EnqueueBatch,
    /// `GET /v1/queues/{queue}/jobs?state&limit&after`
    List,
    /// `GET /v1/jobs?correlation_id&limit&after`
    ListByCorrelation,
    /// `GET /v1/jobs/{id}`
    Get,
    /// `DELETE /v1/jobs/{id}`
    Cancel,
    /// `POST /v1/jobs/{id}/heartbeat`
    Heartbeat,
    /// `POST /v1/jobs/{id}/complete`
    Complete,
    /// `POST /v1/jobs/{id}/fail`
    Fail,
    /// `POST /v1/jobs/{id}/release`
    Release,
}

impl Endpoint {
    pub(crate) fn reads_body(self) -> bool {
        match self {
            Endpoint::Get | Endpoint::Cancel | Endpoint::List | Endpoint::ListByCorrelation => {
                false
            }
            Endpoint::Enqueue
            | Endpoint::EnqueueBatch
            | Endpoint::Heartbeat
            | Endpoint::Complete
            | Endpoint::Fail
            | Endpoint::Release => true,
        }
    }
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/v1/queues/{queue}/jobs",
        methods: &[("GET", Endpoint::List), ("POST", Endpoint::Enqueue)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/jobs/batch",
        methods: &[("POST", Endpoint::EnqueueBatch)],
    },
    RouteSpec {
        pattern: "/v1/jobs",
        methods: &[("GET", Endpoint::ListByCorrelation)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}",
        methods: &[("GET", Endpoint::Get), ("DELETE", Endpoint::Cancel)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}/heartbeat",
        methods: &[("POST", Endpoint::Heartbeat)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}/complete",
        methods: &[("POST", Endpoint::Complete)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}/fail",
        methods: &[("POST", Endpoint::Fail)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}/release",
        methods: &[("POST", Endpoint::Release)],
    },
];

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    let service = call.service();
    let job = match endpoint {
        Endpoint::Enqueue => return enqueue(call).await,
        Endpoint::EnqueueBatch => {
            let request: BatchRequest = call.json(false)?;
            let reply = service
                .enqueue_batch(call.queue(), request, &context(call)?)
                .await?;
            return Ok(json(StatusCode::ACCEPTED, &reply));
        }
        Endpoint::List => {
            let page = service
                .jobs(
                    call.queue(),
                    call.params.get("state"),
                    call.params.get("after"),
                    call.number("limit")?,
                )
                .await?;
            return Ok(json(StatusCode::OK, &page));
        }
        Endpoint::ListByCorrelation => {
            let page = service
                .jobs_by_correlation(
                    call.params.get("correlation_id"),
                    call.params.get("after"),
                    call.number("limit")?,
                )
                .await?;
            return Ok(json(StatusCode::OK, &page));
        }
        Endpoint::Get => {
            let wait_ms = call.number("wait_ms")?.unwrap_or(0);
            service.get(call.id(), wait_ms).await?
        }
        Endpoint::Cancel => service.cancel(call.id()).await?,
        Endpoint::Heartbeat => {
            let request: HeartbeatRequest = call.json(false)?;
            service.heartbeat(call.id(), request).await?
        }
        Endpoint::Complete => {
            let request: CompleteRequest = call.json(false)?;
            service.complete(call.id(), request).await?
        }
        Endpoint::Fail => {
            let request: FailRequest = call.json(false)?;
            service.fail(call.id(), request).await?
        }
        Endpoint::Release => {
            let request: ReleaseRequest = call.json(false)?;
            service.release(call.id(), request).await?
        }
    };
    Ok(json(StatusCode::OK, &job))
}

async fn enqueue(call: &Call<'_>) -> Handled {
    let wait_ms = call.number("wait_ms")?.unwrap_or(0);
    let request: EnqueueRequest = call.json(false)?;
    let reply = call
        .service()
        .enqueue(call.queue(), request, &context(call)?, wait_ms)
        .await?;
    let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::ACCEPTED);
    let mut response = json(status, &reply.job);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", reply.job.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    if reply.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// What an enqueue request carries besides its body: its idempotency key,
/// its request id (the job's correlation id unless the body names one) and
/// its W3C trace context.
fn context(call: &Call<'_>) -> Result<RequestContext, ApiError> {
    let text = |name: &str, shown: &str| -> Result<Option<String>, ApiError> {
        match call.headers.get(name) {
            Some(value) => value
                .to_str()
                .map(|v| Some(v.to_owned()))
                .map_err(|_| ApiError::invalid(format!("{shown} must be visible ASCII"))),
            None => Ok(None),
        }
    };
    Ok(RequestContext {
        idempotency_key: text("idempotency-key", "Idempotency-Key")?,
        request_id: Some(call.request_id.to_owned()),
        traceparent: text("traceparent", "traceparent")?,
        tracestate: text("tracestate", "tracestate")?,
    })
}
