//! A queue's dead letters: browse (paged), requeue some or all, purge.

use http::StatusCode;
use queue_proto::RequeueRequest;

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::http::json;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/queues/{queue}/dead`
    List,
    /// `POST /v1/queues/{queue}/dead/requeue`
    Requeue,
    /// `DELETE /v1/queues/{queue}/dead`
    Purge,
}

impl Endpoint {
    pub(crate) fn reads_body(self) -> bool {
        match self {
            Endpoint::Requeue => true,
            Endpoint::List | Endpoint::Purge => false,
        }
    }
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/v1/queues/{queue}/dead",
        methods: &[("GET", Endpoint::List), ("DELETE", Endpoint::Purge)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/dead/requeue",
        methods: &[("POST", Endpoint::Requeue)],
    },
];

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    let service = call.service();
    match endpoint {
        Endpoint::List => {
            let limit = call.number("limit")?;
            let after = call.params.get("after");
            let page = service.dead_letters(call.queue(), after, limit).await?;
            Ok(json(StatusCode::OK, &page))
        }
        Endpoint::Requeue => {
            let request: RequeueRequest = call.json(true)?;
            let requeued = service.requeue_dead(call.queue(), request).await?;
            Ok(json(StatusCode::OK, &requeued))
        }
        Endpoint::Purge => Ok(json(
            StatusCode::OK,
            &service.purge_dead(call.queue()).await?,
        )),
    }
}
