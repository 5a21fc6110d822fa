//! Route patterns and their matching, shared by every resource's table.
//!
//! A pattern is a path of literal segments and captures: `{queue}`, `{id}`
//! and `{name}` capture one non-empty segment, and a last `{*rest}` captures the
//! remainder of the path (possibly empty), so that a resource can serve a
//! whole prefix.

use http::Method;

/// One path pattern and the methods it answers, with the resource's own
/// endpoint type `E`.
#[derive(Debug)]
pub struct RouteSpec<E: 'static> {
    /// The path with `{queue}` / `{id}` / `{*rest}` placeholders, as in the
    /// OpenAPI file.
    pub pattern: &'static str,
    /// Method name and endpoint.
    pub methods: &'static [(&'static str, E)],
}

/// The captured segments of a matched path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// The `{queue}` segment, if the pattern has one.
    pub queue: Option<String>,
    /// The `{id}` segment, if the pattern has one.
    pub id: Option<String>,
    /// The `{name}` segment (a schedule's), if the pattern has one.
    pub name: Option<String>,
    /// The path under a `{*rest}` pattern, if the pattern has one.
    pub rest: Option<String>,
}

/// What a table makes of a request.
#[derive(Debug)]
pub(crate) enum Match<E> {
    /// This endpoint, under this pattern.
    Found(E, &'static str, Captures),
    /// A pattern matches, not the method: the pattern and its methods.
    WrongMethod(&'static str, String),
    /// No pattern matches.
    None,
}

/// Matches `method` and the path `segments` against `specs`, in order.
pub(crate) fn find<E: Copy>(
    specs: &[RouteSpec<E>],
    method: &Method,
    segments: &[&str],
) -> Match<E> {
    for spec in specs {
        let Some(captures) = match_pattern(spec.pattern, segments) else {
            continue;
        };
        return match spec.methods.iter().find(|(m, _)| *m == method.as_str()) {
            Some((_, endpoint)) => Match::Found(*endpoint, spec.pattern, captures),
            None => Match::WrongMethod(
                spec.pattern,
                spec.methods
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        };
    }
    Match::None
}

fn match_pattern(pattern: &str, segments: &[&str]) -> Option<Captures> {
    // A pattern without a rest matches only paths of as many segments: the
    // count is cheaper than a walk (every request tries the patterns in
    // order until one matches).
    if !pattern.ends_with("{*rest}")
        && pattern.bytes().filter(|b| *b == b'/').count() != segments.len()
    {
        return None;
    }
    let mut parts = pattern.trim_start_matches('/').split('/').peekable();
    let (mut queue, mut id, mut name) = (None, None, None);
    let mut i = 0;
    while let Some(part) = parts.next() {
        if part == "{*rest}" && parts.peek().is_none() {
            // At least the slash before the rest: `/ui/` matches, `/ui` not.
            let rest = segments.get(i..).filter(|rest| !rest.is_empty())?;
            return Some(Captures {
                queue: queue.map(str::to_owned),
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                rest: Some(rest.join("/")),
            });
        }
        let segment = *segments.get(i)?;
        match part {
            "{queue}" if !segment.is_empty() => queue = Some(segment),
            "{id}" if !segment.is_empty() => id = Some(segment),
            "{name}" if !segment.is_empty() => name = Some(segment),
            literal if literal == segment => {}
            _ => return None,
        }
        i += 1;
    }
    (i == segments.len()).then(|| Captures {
        queue: queue.map(str::to_owned),
        id: id.map(str::to_owned),
        name: name.map(str::to_owned),
        rest: None,
    })
}
