//! Queues: the list with stats, one queue's stats, pause and resume, its
//! settings and limits (PATCH), leasing its jobs (with a long-poll),
//! settling many of its leased jobs and leasing the next in one call, and
//! its per-minute history.

use http::StatusCode;
use queue_core::service::Return;
use queue_proto::{LeaseRequest, PatchQueueRequest, SettleRequest};

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::http::json;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/queues`
    List,
    /// `GET /v1/queues/{queue}`
    Stats,
    /// `PATCH /v1/queues/{queue}`
    Patch,
    /// `POST /v1/queues/{queue}/pause`
    Pause,
    /// `POST /v1/queues/{queue}/resume`
    Resume,
    /// `POST /v1/queues/{queue}/lease`
    Lease,
    /// `POST /v1/queues/{queue}/settle`
    Settle,
    /// `GET /v1/queues/{queue}/history`
    History,
}

impl Endpoint {
    pub(crate) fn reads_body(self) -> bool {
        match self {
            Endpoint::Lease | Endpoint::Settle | Endpoint::Patch => true,
            Endpoint::List
            | Endpoint::Stats
            | Endpoint::Pause
            | Endpoint::Resume
            | Endpoint::History => false,
        }
    }
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/v1/queues",
        methods: &[("GET", Endpoint::List)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}",
        methods: &[("GET", Endpoint::Stats), ("PATCH", Endpoint::Patch)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/lease",
        methods: &[("POST", Endpoint::Lease)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/settle",
        methods: &[("POST", Endpoint::Settle)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/history",
        methods: &[("GET", Endpoint::History)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/pause",
        methods: &[("POST", Endpoint::Pause)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/resume",
        methods: &[("POST", Endpoint::Resume)],
    },
];

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    let service = call.service();
    match endpoint {
        Endpoint::List => Ok(json(StatusCode::OK, &service.queues().await?)),
        Endpoint::Stats => Ok(json(StatusCode::OK, &service.stats(call.queue()).await?)),
        Endpoint::Pause | Endpoint::Resume => {
            let paused = endpoint == Endpoint::Pause;
            let stats = service.set_paused(call.queue(), paused).await?;
            Ok(json(StatusCode::OK, &stats))
        }
        Endpoint::Patch => {
            let request: PatchQueueRequest = call.json(true)?;
            Ok(json(
                StatusCode::OK,
                &service.patch_queue(call.queue(), &request).await?,
            ))
        }
        Endpoint::History => {
            let history = service
                .history(
                    call.queue(),
                    call.number("from")?,
                    call.number("to")?,
                    call.number("step_ms")?,
                )
                .await?;
            Ok(json(StatusCode::OK, &history))
        }
        Endpoint::Lease => {
            let request: LeaseRequest = call.json(true)?;
            Ok(json(
                StatusCode::OK,
                &service.lease(call.queue(), request).await?,
            ))
        }
        Endpoint::Settle => {
            let request: SettleRequest = call.json(true)?;
            let give = if prefers_minimal(call.headers) {
                Return::Minimal
            } else {
                Return::Representation
            };
            let settled = service
                .settle_until(call.queue(), request, give, std::future::pending())
                .await?;
            let mut response = json(StatusCode::OK, &settled);
            if give == Return::Minimal {
                response.headers_mut().insert(
                    http::HeaderName::from_static("preference-applied"),
                    http::HeaderValue::from_static("return=minimal"),
                );
            }
            Ok(response)
        }
    }
}

/// Whether the request's `Prefer` headers (RFC 7240) hold `return=minimal`:
/// preferences are comma-separated, each `name[=value]` with parameters
/// after `;`, names and these values compared without case. Anything else
/// (another preference, a malformed one) is ignored, as the RFC asks.
fn prefers_minimal(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            let preference = preference.split(';').next()?;
            let (name, value) = preference.split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
        .any(|(name, value)| {
            name.eq_ignore_ascii_case("return") && value.eq_ignore_ascii_case("minimal")
        })
}

#[cfg(test)]
mod tests {
    use super::prefers_minimal;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append("prefer", http::HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn return_minimal_is_found_among_the_preferences() {
        for values in [
            &["return=minimal"][..],
            &["Return = Minimal"],
            &["respond-async, return=minimal; foo=bar"],
            &["wait=10", "return=\"minimal\""],
        ] {
            assert!(prefers_minimal(&headers(values)), "{values:?}");
        }
        for values in [
            &[][..],
            &["return=representation"],
            &["return"],
            &["minimal"],
            &["handling=lenient; return=minimal"],
            &["returns=minimal"],
        ] {
            assert!(!prefers_minimal(&headers(values)), "{values:?}");
        }
    }
}
