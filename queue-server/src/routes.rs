//! The route table: every endpoint of the v1 contract in one place, matched
//! without a socket so that tests (and the OpenAPI check) can use it.

use http::Method;

/// What a request asks for, once routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/queues/{queue}/jobs`
    Enqueue,
    /// `POST /v1/queues/{queue}/jobs/batch`
    EnqueueBatch,
    /// `POST /v1/queues/{queue}/lease`
    Lease,
    /// `POST /v1/jobs/{id}/heartbeat`
    Heartbeat,
    /// `POST /v1/jobs/{id}/complete`
    Complete,
    /// `POST /v1/jobs/{id}/fail`
    Fail,
    /// `POST /v1/jobs/{id}/release`
    Release,
    /// `GET /v1/jobs/{id}`
    GetJob,
    /// `DELETE /v1/jobs/{id}`
    CancelJob,
    /// `GET /v1/queues`
    ListQueues,
    /// `GET /v1/queues/{queue}`
    QueueStats,
    /// `POST /v1/queues/{queue}/pause`
    Pause,
    /// `POST /v1/queues/{queue}/resume`
    Resume,
    /// `GET /v1/queues/{queue}/dead`
    ListDead,
    /// `POST /v1/queues/{queue}/dead/requeue`
    RequeueDead,
    /// `DELETE /v1/queues/{queue}/dead`
    PurgeDead,
    /// `GET /v1/events`
    Events,
    /// `GET /healthz`
    Health,
    /// `GET /metrics`
    Metrics,
}

/// One path pattern and the methods it answers.
#[derive(Debug)]
pub struct RouteSpec {
    /// The path with `{queue}` / `{id}` placeholders, as in the OpenAPI file.
    pub pattern: &'static str,
    /// Method name and endpoint.
    pub methods: &'static [(&'static str, Endpoint)],
}

/// Every route of the server.
pub static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        pattern: "/healthz",
        methods: &[("GET", Endpoint::Health)],
    },
    RouteSpec {
        pattern: "/metrics",
        methods: &[("GET", Endpoint::Metrics)],
    },
    RouteSpec {
        pattern: "/v1/events",
        methods: &[("GET", Endpoint::Events)],
    },
    RouteSpec {
        pattern: "/v1/queues",
        methods: &[("GET", Endpoint::ListQueues)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}",
        methods: &[("GET", Endpoint::QueueStats)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/jobs",
        methods: &[("POST", Endpoint::Enqueue)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/jobs/batch",
        methods: &[("POST", Endpoint::EnqueueBatch)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/lease",
        methods: &[("POST", Endpoint::Lease)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/pause",
        methods: &[("POST", Endpoint::Pause)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/resume",
        methods: &[("POST", Endpoint::Resume)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/dead",
        methods: &[("GET", Endpoint::ListDead), ("DELETE", Endpoint::PurgeDead)],
    },
    RouteSpec {
        pattern: "/v1/queues/{queue}/dead/requeue",
        methods: &[("POST", Endpoint::RequeueDead)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}",
        methods: &[("GET", Endpoint::GetJob), ("DELETE", Endpoint::CancelJob)],
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

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The matched pattern (a low-cardinality label for logs and metrics).
    pub pattern: &'static str,
    /// The `{queue}` segment, if the pattern has one.
    pub queue: Option<String>,
    /// The `{id}` segment, if the pattern has one.
    pub id: Option<String>,
}

/// Why a request matched no endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No pattern matches the path.
    NotFound,
    /// A pattern matches but not with this method.
    MethodNotAllowed {
        /// The matched pattern.
        pattern: &'static str,
        /// The `Allow` header: comma-separated allowed methods.
        allow: String,
    },
}

/// Finds the endpoint for `method` and `path` (without query string).
///
/// # Errors
/// [`RouteError`] when nothing matches.
pub fn route(method: &Method, path: &str) -> Result<Routed, RouteError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for spec in ROUTES {
        let Some((queue, id)) = match_pattern(spec.pattern, &segments) else {
            continue;
        };
        return match spec.methods.iter().find(|(m, _)| *m == method.as_str()) {
            Some((_, endpoint)) => Ok(Routed {
                endpoint: *endpoint,
                pattern: spec.pattern,
                queue,
                id,
            }),
            None => Err(RouteError::MethodNotAllowed {
                pattern: spec.pattern,
                allow: spec
                    .methods
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    Err(RouteError::NotFound)
}

type Captures = (Option<String>, Option<String>);

fn match_pattern(pattern: &str, segments: &[&str]) -> Option<Captures> {
    let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let (mut queue, mut id) = (None, None);
    for (part, segment) in parts.iter().zip(segments) {
        match *part {
            "{queue}" if !segment.is_empty() => queue = Some((*segment).to_owned()),
            "{id}" if !segment.is_empty() => id = Some((*segment).to_owned()),
            literal if literal == *segment => {}
            _ => return None,
        }
    }
    Some((queue, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_capture_their_parameters() {
        let r = route(&Method::POST, "/v1/queues/emails/jobs").unwrap();
        assert_eq!(r.endpoint, Endpoint::Enqueue);
        assert_eq!(r.queue.as_deref(), Some("emails"));
        let r = route(&Method::POST, "/v1/queues/emails/jobs/batch").unwrap();
        assert_eq!(r.endpoint, Endpoint::EnqueueBatch);
        let r = route(&Method::DELETE, "/v1/jobs/00000000000000ab").unwrap();
        assert_eq!(r.endpoint, Endpoint::CancelJob);
        assert_eq!(r.id.as_deref(), Some("00000000000000ab"));
        let r = route(&Method::POST, "/v1/queues/q/dead/requeue").unwrap();
        assert_eq!(r.endpoint, Endpoint::RequeueDead);
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        assert_eq!(route(&Method::GET, "/v2/queues"), Err(RouteError::NotFound));
        assert_eq!(
            route(&Method::GET, "/v1/queues//jobs"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(&Method::GET, "/v1/jobs/x/explode"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route(&Method::PUT, "/v1/queues/q/dead"),
            Err(RouteError::MethodNotAllowed {
                pattern: "/v1/queues/{queue}/dead",
                allow: "GET, DELETE".into()
            })
        );
        assert!(matches!(
            route(&Method::GET, "/v1/queues/q/jobs"),
            Err(RouteError::MethodNotAllowed { .. })
        ));
    }
}
