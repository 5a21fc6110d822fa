//! Schedules: store, list, read, delete, pause, resume and trigger the
//! periodic jobs the server enqueues.

use http::StatusCode;
use queue_core::service::RequestContext;
use queue_proto::ScheduleRequest;

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::http::json;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/schedules`
    List,
    /// `PUT /v1/schedules/{name}`
    Put,
    /// `GET /v1/schedules/{name}`
    Get,
    /// `DELETE /v1/schedules/{name}`
    Delete,
    /// `POST /v1/schedules/{name}/pause`
    Pause,
    /// `POST /v1/schedules/{name}/resume`
    Resume,
    /// `POST /v1/schedules/{name}/trigger`
    Trigger,
}

impl Endpoint {
    pub(crate) fn reads_body(self) -> bool {
        match self {
            Endpoint::Put => true,
            Endpoint::List
            | Endpoint::Get
            | Endpoint::Delete
            | Endpoint::Pause
            | Endpoint::Resume
            | Endpoint::Trigger => false,
        }
    }
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/v1/schedules",
        methods: &[("GET", Endpoint::List)],
    },
    RouteSpec {
        pattern: "/v1/schedules/{name}",
        methods: &[
            ("GET", Endpoint::Get),
            ("PUT", Endpoint::Put),
            ("DELETE", Endpoint::Delete),
        ],
    },
    RouteSpec {
        pattern: "/v1/schedules/{name}/pause",
        methods: &[("POST", Endpoint::Pause)],
    },
    RouteSpec {
        pattern: "/v1/schedules/{name}/resume",
        methods: &[("POST", Endpoint::Resume)],
    },
    RouteSpec {
        pattern: "/v1/schedules/{name}/trigger",
        methods: &[("POST", Endpoint::Trigger)],
    },
];

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    let service = call.service();
    let name = call.captures.name.as_deref().unwrap_or("");
    match endpoint {
        Endpoint::List => Ok(json(StatusCode::OK, &service.schedules().await?)),
        Endpoint::Get => Ok(json(StatusCode::OK, &service.schedule(name).await?)),
        Endpoint::Put => {
            let request: ScheduleRequest = call.json(false)?;
            let (schedule, created) = service.put_schedule(name, request).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json(status, &schedule))
        }
        Endpoint::Delete => Ok(json(StatusCode::OK, &service.delete_schedule(name).await?)),
        Endpoint::Pause | Endpoint::Resume => {
            let paused = endpoint == Endpoint::Pause;
            let schedule = service.set_schedule_paused(name, paused).await?;
            Ok(json(StatusCode::OK, &schedule))
        }
        Endpoint::Trigger => {
            let context = RequestContext {
                request_id: Some(call.request_id.to_owned()),
                ..RequestContext::default()
            };
            let job = service.trigger_schedule(name, &context).await?;
            Ok(json(StatusCode::ACCEPTED, &job))
        }
    }
}
