//! The route table. Each resource module owns its routes, its endpoints and
//! their handlers ([`jobs`], [`queues`], [`dead`], [`events`], [`callbacks`],
//! [`schedules`], [`ops`], the dashboard's [`ui`]) in a
//! table of its own ([`RouteSpec`]); this module tries the tables in turn
//! and matches requests without a socket, so that tests (and the OpenAPI
//! check) can use it. Patterns are described in [`spec`].

pub mod callbacks;
pub mod dead;
pub mod events;
pub mod jobs;
pub mod ops;
pub mod queues;
pub mod schedules;
pub mod spec;
pub mod ui;

use http::Method;

pub use self::spec::{Captures, RouteSpec};
use self::spec::{Match, find};
use crate::call::{Call, Handled};

/// What a request asks for, once routed: a resource and its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A job or a queue's jobs.
    Jobs(jobs::Endpoint),
    /// Queues: listing, stats, pause, resume, lease.
    Queues(queues::Endpoint),
    /// A queue's dead letters.
    Dead(dead::Endpoint),
    /// The event streams.
    Events(events::Endpoint),
    /// Callback deliveries.
    Callbacks(callbacks::Endpoint),
    /// Schedules.
    Schedules(schedules::Endpoint),
    /// Health and metrics.
    Ops(ops::Endpoint),
    /// The web dashboard's files and the redirect to them.
    Ui(ui::Endpoint),
}

impl Endpoint {
    /// Whether the endpoint reads a request body.
    pub fn reads_body(self) -> bool {
        match self {
            Endpoint::Jobs(e) => e.reads_body(),
            Endpoint::Queues(e) => e.reads_body(),
            Endpoint::Dead(e) => e.reads_body(),
            Endpoint::Schedules(e) => e.reads_body(),
            Endpoint::Events(_) | Endpoint::Callbacks(_) | Endpoint::Ops(_) | Endpoint::Ui(_) => {
                false
            }
        }
    }

    /// The query parameters the endpoint takes; any other one is a 400
    /// naming it (a typo such as `wiat_ms` must not silently change
    /// behaviour).
    pub fn query_params(self) -> &'static [&'static str] {
        match self {
            Endpoint::Jobs(jobs::Endpoint::Enqueue | jobs::Endpoint::Get) => &["wait_ms"],
            Endpoint::Jobs(jobs::Endpoint::List) => &["state", "limit", "after"],
            Endpoint::Jobs(jobs::Endpoint::ListByCorrelation) => {
                &["correlation_id", "limit", "after"]
            }
            Endpoint::Dead(dead::Endpoint::List) => &["limit", "after"],
            Endpoint::Queues(queues::Endpoint::History) => &["from", "to", "step_ms"],
            Endpoint::Callbacks(callbacks::Endpoint::List) => &["state", "limit", "after"],
            Endpoint::Events(events::Endpoint::Stream) => &["queue", "job", "type", "after"],
            Endpoint::Events(events::Endpoint::JobStream) => &["after"],
            Endpoint::Jobs(_)
            | Endpoint::Queues(_)
            | Endpoint::Dead(_)
            | Endpoint::Callbacks(_)
            | Endpoint::Schedules(_)
            | Endpoint::Ops(_)
            | Endpoint::Ui(_) => &[],
        }
    }

    /// Refuses a query parameter the endpoint does not take.
    ///
    /// # Errors
    /// 400 `invalid_request` naming the first unknown parameter.
    pub(crate) fn check_query(
        self,
        params: &crate::http::Params,
    ) -> Result<(), crate::error::ApiError> {
        let allowed = self.query_params();
        match params.names().find(|name| !allowed.contains(name)) {
            None => Ok(()),
            Some(unknown) if allowed.is_empty() => Err(crate::error::ApiError::invalid(format!(
                "unknown query parameter {unknown:?}; this route takes none"
            ))),
            Some(unknown) => Err(crate::error::ApiError::invalid(format!(
                "unknown query parameter {unknown:?}; this route takes {}",
                allowed.join(", ")
            ))),
        }
    }

    /// Whether the endpoint answers without the bearer token: the health
    /// check, and the dashboard's own files (the page asks for the token
    /// and sends it with its API calls).
    pub fn is_public(self) -> bool {
        matches!(self, Endpoint::Ops(ops::Endpoint::Health) | Endpoint::Ui(_))
    }

    /// Whether the endpoint is served while the server shuts down.
    pub fn serves_during_shutdown(self) -> bool {
        matches!(self, Endpoint::Ops(_))
    }
}

/// Serves a routed call.
pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    match endpoint {
        Endpoint::Jobs(e) => jobs::handle(e, call).await,
        Endpoint::Queues(e) => queues::handle(e, call).await,
        Endpoint::Dead(e) => dead::handle(e, call).await,
        Endpoint::Events(e) => events::handle(e, call).await,
        Endpoint::Callbacks(e) => callbacks::handle(e, call).await,
        Endpoint::Schedules(e) => schedules::handle(e, call).await,
        Endpoint::Ops(e) => ops::handle(e, call).await,
        Endpoint::Ui(e) => ui::handle(e, call).await,
    }
}

/// One route of the merged table: its pattern and methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The pattern, as in the OpenAPI file.
    pub pattern: &'static str,
    /// The methods it answers.
    pub methods: Vec<&'static str>,
}

fn info<E>(specs: &'static [RouteSpec<E>]) -> impl Iterator<Item = RouteInfo> {
    specs.iter().map(|spec| RouteInfo {
        pattern: spec.pattern,
        methods: spec.methods.iter().map(|(m, _)| *m).collect(),
    })
}

/// Every route of the server: the resources' tables, merged in the order
/// they are tried.
pub fn table() -> impl Iterator<Item = RouteInfo> {
    info(ops::ROUTES)
        .chain(info(events::ROUTES))
        .chain(info(queues::ROUTES))
        .chain(info(jobs::ROUTES))
        .chain(info(dead::ROUTES))
        .chain(info(callbacks::ROUTES))
        .chain(info(schedules::ROUTES))
        .chain(info(ui::ROUTES))
}

/// A routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The matched pattern (a low-cardinality label for logs and metrics).
    pub pattern: &'static str,
    /// The captured segments.
    pub captures: Captures,
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

/// Finds the endpoint for `method` and `path` (without query string). Each
/// segment is percent-decoded after the path is split, so a capture holds
/// what the client meant (`a%20b` is the queue name `a b`, refused as such,
/// and `a%2Fb` one segment `a/b`).
///
/// # Errors
/// [`RouteError`] when nothing matches.
pub fn route(method: &Method, path: &str) -> Result<Routed, RouteError> {
    let decoded: Vec<std::borrow::Cow<'_, str>> = path
        .trim_start_matches('/')
        .split('/')
        .map(|segment| crate::http::decode(segment, false))
        .collect();
    let segments: Vec<&str> = decoded.iter().map(|segment| &**segment).collect();
    let found = |m: Match<Endpoint>| -> Option<Result<Routed, RouteError>> {
        match m {
            Match::Found(endpoint, pattern, captures) => Some(Ok(Routed {
                endpoint,
                pattern,
                captures,
            })),
            Match::WrongMethod(pattern, allow) => {
                Some(Err(RouteError::MethodNotAllowed { pattern, allow }))
            }
            Match::None => None,
        }
    };
    fn wrap<E: Copy>(m: Match<E>, into: fn(E) -> Endpoint) -> Match<Endpoint> {
        match m {
            Match::Found(e, pattern, captures) => Match::Found(into(e), pattern, captures),
            Match::WrongMethod(pattern, allow) => Match::WrongMethod(pattern, allow),
            Match::None => Match::None,
        }
    }
    found(wrap(find(ops::ROUTES, method, &segments), Endpoint::Ops))
        .or_else(|| {
            found(wrap(
                find(events::ROUTES, method, &segments),
                Endpoint::Events,
            ))
        })
        .or_else(|| {
            found(wrap(
                find(queues::ROUTES, method, &segments),
                Endpoint::Queues,
            ))
        })
        .or_else(|| found(wrap(find(jobs::ROUTES, method, &segments), Endpoint::Jobs)))
        .or_else(|| found(wrap(find(dead::ROUTES, method, &segments), Endpoint::Dead)))
        .or_else(|| {
            found(wrap(
                find(callbacks::ROUTES, method, &segments),
                Endpoint::Callbacks,
            ))
        })
        .or_else(|| {
            found(wrap(
                find(schedules::ROUTES, method, &segments),
                Endpoint::Schedules,
            ))
        })
        .or_else(|| found(wrap(find(ui::ROUTES, method, &segments), Endpoint::Ui)))
        .unwrap_or(Err(RouteError::NotFound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_capture_their_parameters() {
        let r = route(&Method::POST, "/v1/queues/emails/jobs").unwrap();
        assert_eq!(r.endpoint, Endpoint::Jobs(jobs::Endpoint::Enqueue));
        assert_eq!(r.captures.queue.as_deref(), Some("emails"));
        let r = route(&Method::POST, "/v1/queues/emails/jobs/batch").unwrap();
        assert_eq!(r.endpoint, Endpoint::Jobs(jobs::Endpoint::EnqueueBatch));
        let r = route(&Method::DELETE, "/v1/jobs/00000000000000ab").unwrap();
        assert_eq!(r.endpoint, Endpoint::Jobs(jobs::Endpoint::Cancel));
        assert_eq!(r.captures.id.as_deref(), Some("00000000000000ab"));
        let r = route(&Method::POST, "/v1/queues/q/dead/requeue").unwrap();
        assert_eq!(r.endpoint, Endpoint::Dead(dead::Endpoint::Requeue));
    }

    #[test]
    fn captures_are_percent_decoded() {
        for (path, queue) in [
            ("/v1/queues/a%20b/jobs", "a b"),
            ("/v1/queues/a%2Fb/jobs", "a/b"),
            ("/v1/queues/%C3%A9/jobs", "\u{e9}"),
            ("/v1/queues/100%25/jobs", "100%"),
            ("/v1/queues/a+b/jobs", "a+b"),
        ] {
            let r = route(&Method::POST, path).unwrap();
            assert_eq!(r.captures.queue.as_deref(), Some(queue), "{path}");
        }
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
        assert_eq!(
            route(&Method::PUT, "/v1/queues/q/jobs"),
            Err(RouteError::MethodNotAllowed {
                pattern: "/v1/queues/{queue}/jobs",
                allow: "GET, POST".into()
            })
        );
        assert_eq!(
            route(&Method::GET, "/v1/queues/q/jobs").map(|r| r.endpoint),
            Ok(Endpoint::Jobs(jobs::Endpoint::List))
        );
        assert_eq!(
            route(&Method::GET, "/v1/jobs").map(|r| r.endpoint),
            Ok(Endpoint::Jobs(jobs::Endpoint::ListByCorrelation))
        );
    }

    #[test]
    fn a_rest_capture_serves_a_whole_prefix() {
        static FILES: &[RouteSpec<u8>] = &[RouteSpec {
            pattern: "/ui/{*rest}",
            methods: &[("GET", 7)],
        }];
        let get = |path: &str| {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match find(FILES, &Method::GET, &segments) {
                Match::Found(7, _, captures) => captures.rest,
                _ => None,
            }
        };
        for (path, rest) in [
            ("/ui/", ""),
            ("/ui/index.html", "index.html"),
            ("/ui/assets/app.js", "assets/app.js"),
        ] {
            assert_eq!(get(path).as_deref(), Some(rest), "{path}");
        }
        assert_eq!(get("/ui"), None);
        assert_eq!(get("/other/x"), None);
    }

    #[test]
    fn every_pattern_is_listed_once() {
        let mut patterns: Vec<_> = table().map(|route| route.pattern).collect();
        let all = patterns.len();
        patterns.sort_unstable();
        patterns.dedup();
        assert_eq!(patterns.len(), all);
    }
}
