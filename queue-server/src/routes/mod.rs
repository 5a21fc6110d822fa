//! The route table. Each resource module owns its routes, its endpoints and
//! their handlers ([`jobs`], [`queues`], [`dead`], [`events`], [`ops`]);
//! this module merges their tables and matches requests against them,
//! without a socket, so that tests (and the OpenAPI check) can use it.
//!
//! A pattern is a path of literal segments and captures: `{queue}` and
//! `{id}` capture one non-empty segment, and a last `{*rest}` captures the
//! remainder of the path (possibly empty), so that a resource can serve a
//! whole prefix.

pub mod dead;
pub mod events;
pub mod jobs;
pub mod ops;
pub mod queues;

use http::Method;

use crate::app::{Call, Handled};

/// What a request asks for, once routed: a resource and its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A job or a queue's jobs.
    Jobs(jobs::Endpoint),
    /// Queues: listing, stats, pause, resume, lease.
    Queues(queues::Endpoint),
    /// A queue's dead letters.
    Dead(dead::Endpoint),
    /// The event stream.
    Events(events::Endpoint),
    /// Health and metrics.
    Ops(ops::Endpoint),
}

impl Endpoint {
    /// Whether the endpoint reads a request body.
    pub fn reads_body(self) -> bool {
        match self {
            Endpoint::Jobs(e) => e.reads_body(),
            Endpoint::Queues(e) => e.reads_body(),
            Endpoint::Dead(e) => e.reads_body(),
            Endpoint::Events(_) | Endpoint::Ops(_) => false,
        }
    }

    /// Whether the endpoint answers without the bearer token.
    pub fn is_public(self) -> bool {
        matches!(self, Endpoint::Ops(ops::Endpoint::Health))
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
        Endpoint::Events(e) => events::handle(e, call),
        Endpoint::Ops(e) => ops::handle(e, call).await,
    }
}

/// One path pattern and the methods it answers.
#[derive(Debug)]
pub struct RouteSpec {
    /// The path with `{queue}` / `{id}` / `{*rest}` placeholders, as in the
    /// OpenAPI file.
    pub pattern: &'static str,
    /// Method name and endpoint.
    pub methods: &'static [(&'static str, Endpoint)],
}

/// Every route of the server: the resources' tables, merged.
pub fn table() -> impl Iterator<Item = &'static RouteSpec> {
    ops::ROUTES
        .iter()
        .chain(events::ROUTES)
        .chain(queues::ROUTES)
        .chain(jobs::ROUTES)
        .chain(dead::ROUTES)
}

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
    /// The path under a `{*rest}` pattern, if the pattern has one.
    pub rest: Option<String>,
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
    route_in(table(), method, path)
}

/// [`route`] over the routes of `specs`, in order.
///
/// # Errors
/// [`RouteError`] when nothing matches.
pub fn route_in<'a>(
    specs: impl IntoIterator<Item = &'a RouteSpec>,
    method: &Method,
    path: &str,
) -> Result<Routed, RouteError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for spec in specs {
        let Some(captures) = match_pattern(spec.pattern, &segments) else {
            continue;
        };
        return match spec.methods.iter().find(|(m, _)| *m == method.as_str()) {
            Some((_, endpoint)) => Ok(Routed {
                endpoint: *endpoint,
                pattern: spec.pattern,
                queue: captures.queue,
                id: captures.id,
                rest: captures.rest,
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

#[derive(Default)]
struct Captures {
    queue: Option<String>,
    id: Option<String>,
    rest: Option<String>,
}

fn match_pattern(pattern: &str, segments: &[&str]) -> Option<Captures> {
    let mut parts = pattern.trim_start_matches('/').split('/').peekable();
    let (mut queue, mut id) = (None, None);
    let mut i = 0;
    while let Some(part) = parts.next() {
        if part == "{*rest}" && parts.peek().is_none() {
            // At least the slash before the rest: `/ui/` matches, `/ui` not.
            let rest = segments.get(i..).filter(|rest| !rest.is_empty())?;
            return Some(Captures {
                queue: queue.map(str::to_owned),
                id: id.map(str::to_owned),
                rest: Some(rest.join("/")),
            });
        }
        let segment = *segments.get(i)?;
        match part {
            "{queue}" if !segment.is_empty() => queue = Some(segment),
            "{id}" if !segment.is_empty() => id = Some(segment),
            literal if literal == segment => {}
            _ => return None,
        }
        i += 1;
    }
    (i == segments.len()).then(|| Captures {
        queue: queue.map(str::to_owned),
        id: id.map(str::to_owned),
        rest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_capture_their_parameters() {
        let r = route(&Method::POST, "/v1/queues/emails/jobs").unwrap();
        assert_eq!(r.endpoint, Endpoint::Jobs(jobs::Endpoint::Enqueue));
        assert_eq!(r.queue.as_deref(), Some("emails"));
        let r = route(&Method::POST, "/v1/queues/emails/jobs/batch").unwrap();
        assert_eq!(r.endpoint, Endpoint::Jobs(jobs::Endpoint::EnqueueBatch));
        let r = route(&Method::DELETE, "/v1/jobs/00000000000000ab").unwrap();
        assert_eq!(r.endpoint, Endpoint::Jobs(jobs::Endpoint::Cancel));
        assert_eq!(r.id.as_deref(), Some("00000000000000ab"));
        let r = route(&Method::POST, "/v1/queues/q/dead/requeue").unwrap();
        assert_eq!(r.endpoint, Endpoint::Dead(dead::Endpoint::Requeue));
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

    #[test]
    fn a_rest_capture_serves_a_whole_prefix() {
        static FILES: &[RouteSpec] = &[RouteSpec {
            pattern: "/ui/{*rest}",
            methods: &[("GET", Endpoint::Ops(ops::Endpoint::Health))],
        }];
        for (path, rest) in [
            ("/ui/", ""),
            ("/ui/index.html", "index.html"),
            ("/ui/assets/app.js", "assets/app.js"),
        ] {
            let r = route_in(FILES, &Method::GET, path).unwrap();
            assert_eq!(r.rest.as_deref(), Some(rest), "{path}");
        }
        assert_eq!(
            route_in(FILES, &Method::GET, "/ui"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route_in(FILES, &Method::GET, "/other/x"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn every_pattern_is_listed_once() {
        let mut patterns: Vec<_> = table().map(|spec| spec.pattern).collect();
        let all = patterns.len();
        patterns.sort_unstable();
        patterns.dedup();
        assert_eq!(patterns.len(), all);
    }
}
