//! Operations: `/healthz` and `/metrics`.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::http::{full, json};
use crate::metrics;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /healthz` (no token needed)
    Health,
    /// `GET /metrics`
    Metrics,
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/healthz",
        methods: &[("GET", Endpoint::Health)],
    },
    RouteSpec {
        pattern: "/metrics",
        methods: &[("GET", Endpoint::Metrics)],
    },
];

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    match endpoint {
        Endpoint::Health => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        Endpoint::Metrics => {
            let queues = call.service().queues().await?.queues;
            let shared = call.shared;
            let counters = shared.service.queue().queue_counters();
            let text = metrics::render(&metrics::Snapshot {
                queues: &queues,
                counters: &counters,
                http: &shared.http,
                in_flight: shared.in_flight.get(),
                callbacks: &shared.callbacks,
                commits: shared.service.queue().commit_stats(),
            });
            let mut response = Response::new(full(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
    }
}
