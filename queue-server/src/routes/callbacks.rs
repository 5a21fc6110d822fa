//! Callback deliveries: list them by state, start a new one for a job.

use http::StatusCode;

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::http::json;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/callbacks`
    List,
    /// `POST /v1/jobs/{id}/callback/retry`
    Retry,
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/v1/callbacks",
        methods: &[("GET", Endpoint::List)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}/callback/retry",
        methods: &[("POST", Endpoint::Retry)],
    },
];

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    let service = call.service();
    match endpoint {
        Endpoint::List => {
            let page = service
                .callbacks(
                    call.params.get("state"),
                    call.params.get("after"),
                    call.number("limit")?,
                )
                .await?;
            Ok(json(StatusCode::OK, &page))
        }
        Endpoint::Retry => Ok(json(
            StatusCode::ACCEPTED,
            &service.retry_callback(call.id()).await?,
        )),
    }
}
