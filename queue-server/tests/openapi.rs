//! `docs/openapi.yaml` against the code, so that the two cannot drift: every
//! path and method of the router ([`queue_server::routes::ROUTES`]) is
//! documented and nothing else is; the document's enums (`ErrorCode`,
//! `JobState`, `EventType`, `CallbackState`, the callback `type`) list
//! exactly the wire names of the Rust enums; and the properties of the
//! document's object schemas (`Job`, `Event`, `CallbackInfo`, …) are exactly
//! the keys the `queue_proto` wire types serialize with every optional field
//! set, and their `required` lists exactly the keys present with every
//! optional field unset; and each operation documents exactly the query
//! parameters its route takes (any other is a `400`). The reader's
//! reference, `docs/HTTP.md`, is held to naming every routed `METHOD /path`
//! and every error code.
//!
//! The document is scanned as text (no YAML crate): it is block-style YAML
//! with 2-space indentation, so under the top-level `paths:` the path keys sit
//! at indent 2 and their operations at indent 4. Deeper lines (descriptions,
//! block scalars, schemas) never reach those columns, so they cannot be
//! mistaken for paths or methods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use queue_proto::{
    CallbackEvent, CallbackInfo, CallbackState, CatchUp, EnqueueRequest, ErrorCode, Event,
    EventType, Gap, HeartbeatRequest, Job, JobState, RawValue, Schedule, ScheduleList,
    ScheduleRequest,
};
use queue_server::routes;
use serde_json::{Value, json};

/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The other fixed fields of an OpenAPI path item.
const PATH_ITEM_FIELDS: [&str; 5] = ["$ref", "summary", "description", "servers", "parameters"];

const DOCUMENT: &str = "docs/openapi.yaml";

fn read_document() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One meaningful line: not blank, not a comment.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    /// 1-based line number, for messages.
    number: usize,
    /// Leading spaces.
    indent: usize,
    /// The line without its indentation and trailing whitespace.
    text: &'a str,
}

/// The meaningful lines of `doc`. Tabs in indentation are refused: YAML
/// forbids them and they would make every column below meaningless.
fn lines(doc: &str) -> Result<Vec<Line<'_>>, String> {
    let mut out = Vec::new();
    for (i, raw) in doc.lines().enumerate() {
        let raw = raw.trim_end();
        let text = raw.trim_start_matches(' ');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('\t') {
            return Err(format!(
                "{DOCUMENT}:{}: tab in indentation (YAML allows only spaces)",
                i + 1
            ));
        }
        out.push(Line {
            number: i + 1,
            indent: raw.len() - text.len(),
            text,
        });
    }
    Ok(out)
}

/// The key of a `key: value` (or `key:`) line and the rest of the line after
/// the colon, trimmed and without a trailing comment. Quoted keys are
/// unquoted. `None` for lines that are not mapping entries (`- item`,
/// continuation text).
fn key_of(text: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(quote @ ('\'' | '"')) = text.chars().next() {
        let close = text[1..].find(quote)? + 1;
        let rest = text[close + 1..].trim_start().strip_prefix(':')?;
        (text[1..close].to_owned(), rest)
    } else {
        if text.starts_with("- ") || text == "-" {
            return None;
        }
        let colon = text
            .match_indices(':')
            .map(|(i, _)| i)
            .find(|&i| text[i + 1..].is_empty() || text[i + 1..].starts_with(' '))?;
        (text[..colon].trim_end().to_owned(), &text[colon + 1..])
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim();
    let rest = if rest.starts_with('#') {
        ""
    } else {
        rest.split(" #").next().unwrap_or(rest).trim_end()
    };
    Some((key, rest))
}

/// The lines nested under `lines[at]`: those after it indented deeper, and
/// `- ` items at its own indentation (YAML lets a sequence sit level with its
/// key).
fn children<'a>(lines: &'a [Line<'a>], at: usize) -> &'a [Line<'a>] {
    let indent = lines[at].indent;
    let rest = &lines[at + 1..];
    let end = rest
        .iter()
        .position(|l| l.indent < indent || (l.indent == indent && !l.text.starts_with('-')))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The position of the entry `name` among the lines at `indent`.
fn find_key(lines: &[Line<'_>], indent: usize, name: &str) -> Option<usize> {
    lines
        .iter()
        .position(|l| l.indent == indent && key_of(l.text).is_some_and(|(k, _)| k == name))
}

/// A documented path: where it is and its operations.
#[derive(Debug, Default)]
struct PathItem {
    line: usize,
    /// Method (lowercase) → whether the operation has an `operationId`.
    methods: BTreeMap<String, bool>,
}

/// The `paths:` section: path → its operations. Every structural oddity is
/// reported rather than skipped, so that a malformed file cannot pass by
/// hiding a path from the scan.
fn scan_paths(doc: &str) -> Result<BTreeMap<String, PathItem>, Vec<String>> {
    let lines = lines(doc).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let top: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.indent == 0 && key_of(l.text).is_some_and(|(k, _)| k == "paths"))
        .map(|(i, _)| i)
        .collect();
    let at = match top.as_slice() {
        [at] => *at,
        [] => return Err(vec![format!("{DOCUMENT}: no top-level `paths:` key")]),
        [_, second, ..] => {
            return Err(vec![format!(
                "{DOCUMENT}:{}: a second top-level `paths:` key",
                lines[*second].number
            )]);
        }
    };
    if let Some((_, value)) = key_of(lines[at].text).filter(|(_, v)| !v.is_empty()) {
        return Err(vec![format!(
            "{DOCUMENT}:{}: `paths:` must be a block mapping, found `{value}` after it",
            lines[at].number
        )]);
    }
    let mut paths: BTreeMap<String, PathItem> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (i, line) in children(&lines, at).iter().enumerate() {
        let here = format!("{DOCUMENT}:{}", line.number);
        match line.indent {
            2 => {
                let Some((path, value)) = key_of(line.text) else {
                    problems.push(format!(
                        "{here}: expected a path key, found `{}`",
                        line.text
                    ));
                    current = None;
                    continue;
                };
                if path.starts_with("x-") {
                    current = None;
                    continue;
                }
                if !path.starts_with('/') {
                    problems.push(format!("{here}: path `{path}` does not start with `/`"));
                }
                if !value.is_empty() {
                    problems.push(format!(
                        "{here}: path `{path}` must be a block mapping, found `{value}`"
                    ));
                }
                if let Some(first) = paths.get(&path) {
                    problems.push(format!(
                        "{here}: path `{path}` appears twice (first at line {})",
                        first.line
                    ));
                } else {
                    paths.insert(
                        path.clone(),
                        PathItem {
                            line: line.number,
                            methods: BTreeMap::new(),
                        },
                    );
                }
                current = Some(path);
            }
            4 => {
                let Some(path) = current.as_ref() else {
                    problems.push(format!("{here}: `{}` is not under a path key", line.text));
                    continue;
                };
                let Some((field, _)) = key_of(line.text) else {
                    problems.push(format!(
                        "{here}: expected a method or path-item field under `{path}`, found `{}`",
                        line.text
                    ));
                    continue;
                };
                if METHODS.contains(&field.as_str()) {
                    let nested = children(&lines[at + 1..], i);
                    let has_id = nested.iter().any(|l| {
                        l.indent == 6
                            && key_of(l.text)
                                .is_some_and(|(k, v)| k == "operationId" && !v.is_empty())
                    });
                    let item = paths.entry(path.clone()).or_default();
                    if item.methods.insert(field.clone(), has_id).is_some() {
                        problems.push(format!("{here}: `{field}` appears twice under `{path}`"));
                    }
                } else if METHODS.contains(&field.to_ascii_lowercase().as_str()) {
                    problems.push(format!(
                        "{here}: method `{field}` under `{path}` must be lowercase"
                    ));
                } else if !(PATH_ITEM_FIELDS.contains(&field.as_str()) || field.starts_with("x-")) {
                    problems.push(format!(
                        "{here}: `{field}` under `{path}` is neither a method nor a path-item field"
                    ));
                }
            }
            0 | 1 | 3 => problems.push(format!(
                "{here}: indentation of {} spaces inside `paths:` (the file uses 2-space steps)",
                line.indent
            )),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(paths)
    } else {
        Err(problems)
    }
}

/// The entry at `path` (a chain of mapping keys from the top level): the
/// lines it sits among and its position in them.
fn locate<'a>(lines: &'a [Line<'a>], path: &[&str]) -> Result<(&'a [Line<'a>], usize), String> {
    let dotted = path.join(".");
    let mut scope = lines;
    let mut indent = 0;
    for (depth, name) in path.iter().enumerate() {
        let at = find_key(scope, indent, name)
            .ok_or_else(|| format!("{DOCUMENT}: no `{dotted}` (missing `{name}:`)"))?;
        if depth + 1 == path.len() {
            return Ok((scope, at));
        }
        let nested = children(scope, at);
        indent = nested
            .first()
            .map(|l| l.indent)
            .ok_or_else(|| format!("{DOCUMENT}:{}: `{name}:` is empty", scope[at].number))?;
        scope = nested;
    }
    Err(format!("{DOCUMENT}: an empty path"))
}

/// The items of the sequence at `path`, in block (`- a`) or flow (`[a, b]`)
/// style.
fn list_at(doc: &str, path: &[&str]) -> Result<Vec<String>, String> {
    let lines = lines(doc)?;
    let (scope, at) = locate(&lines, path)?;
    let unquote = |item: &str| item.trim().trim_matches(['\'', '"']).to_owned();
    if let Some((_, flow)) = key_of(scope[at].text).filter(|(_, v)| !v.is_empty()) {
        let inner = flow
            .strip_prefix('[')
            .and_then(|f| f.strip_suffix(']'))
            .ok_or_else(|| {
                format!(
                    "{DOCUMENT}:{}: unreadable list `{}`",
                    scope[at].number,
                    path.join(".")
                )
            })?;
        return Ok(inner
            .split(',')
            .map(unquote)
            .filter(|item| !item.is_empty())
            .collect());
    }
    children(scope, at)
        .iter()
        .map(|l| {
            l.text
                .strip_prefix("- ")
                .map(unquote)
                .ok_or_else(|| format!("{DOCUMENT}:{}: expected `- item`", l.number))
        })
        .collect()
}

/// The keys of the block mapping at `path`, in document order (a key given
/// twice appears twice).
fn keys_at(doc: &str, path: &[&str]) -> Result<Vec<String>, String> {
    let lines = lines(doc)?;
    let (scope, at) = locate(&lines, path)?;
    let here = format!("{DOCUMENT}:{}", scope[at].number);
    if let Some((_, value)) = key_of(scope[at].text).filter(|(_, v)| !v.is_empty()) {
        return Err(format!(
            "{here}: `{}` must be a block mapping, found `{value}`",
            path.join(".")
        ));
    }
    let nested = children(scope, at);
    let indent = nested
        .first()
        .map(|l| l.indent)
        .ok_or_else(|| format!("{here}: `{}` is empty", path.join(".")))?;
    nested
        .iter()
        .filter(|l| l.indent == indent)
        .map(|l| {
            key_of(l.text).map(|(key, _)| key).ok_or_else(|| {
                format!(
                    "{DOCUMENT}:{}: expected a key, found `{}`",
                    l.number, l.text
                )
            })
        })
        .collect()
}

/// The items of the `enum:` of the schema `components.schemas.<schema>`,
/// in block (`- a`) or flow (`[a, b]`) style.
fn schema_enum(doc: &str, schema: &str) -> Result<Vec<String>, String> {
    list_at(doc, &["components", "schemas", schema, "enum"])
}

/// What differs between the router and the document's paths.
fn route_differences(documented: &BTreeMap<String, PathItem>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut routed = BTreeSet::new();
    for spec in routes::table() {
        if !routed.insert(spec.pattern) {
            problems.push(format!("the route table lists `{}` twice", spec.pattern));
        }
        let methods: Vec<String> = spec
            .methods
            .iter()
            .map(|m| m.to_ascii_lowercase())
            .collect();
        let Some(item) = documented.get(spec.pattern) else {
            problems.push(format!(
                "missing path `{}` (routed methods: {})",
                spec.pattern,
                methods.join(", ")
            ));
            continue;
        };
        for method in &methods {
            match item.methods.get(method) {
                None => problems.push(format!(
                    "missing method `{method}` under `{}` (line {})",
                    spec.pattern, item.line
                )),
                Some(false) => {
                    problems.push(format!("`{method} {}` has no operationId", spec.pattern))
                }
                Some(true) => {}
            }
        }
        for method in item.methods.keys() {
            if !methods.contains(method) {
                problems.push(format!(
                    "documented method `{method}` under `{}` (line {}) is not routed",
                    spec.pattern, item.line
                ));
            }
        }
    }
    for (path, item) in documented {
        if !routed.contains(path.as_str()) {
            problems.push(format!(
                "documented path `{path}` (line {}) is not in the route table",
                item.line
            ));
        }
    }
    problems
}

/// Differences between the document's enum and the code's wire names.
fn enum_differences(doc: &str, schema: &str, expected: &[&str]) -> Vec<String> {
    let documented = match schema_enum(doc, schema) {
        Ok(values) => values,
        Err(e) => return vec![e],
    };
    list_differences(&documented, expected, &format!("{schema} enum"))
}

/// What `documented` (a list of the document named `what`) lacks of
/// `expected`, has beyond it, or repeats.
fn list_differences(documented: &[String], expected: &[&str], what: &str) -> Vec<String> {
    let mut problems: Vec<String> = expected
        .iter()
        .filter(|name| !documented.iter().any(|d| d == *name))
        .map(|name| format!("`{name}` is missing from the {what}"))
        .collect();
    problems.extend(
        documented
            .iter()
            .filter(|d| !expected.contains(&d.as_str()))
            .map(|d| format!("the {what} lists `{d}`, which the code does not have")),
    );
    let mut seen = BTreeSet::new();
    problems.extend(
        documented
            .iter()
            .filter(|d| !seen.insert(d.as_str()))
            .map(|d| format!("the {what} lists `{d}` twice")),
    );
    problems
}

/// The keys of a serialized wire value (which must be a JSON object).
fn wire_keys(value: &Value) -> Vec<&str> {
    match value {
        Value::Object(map) => map.keys().map(String::as_str).collect(),
        other => panic!("a wire type serialized as {other}, not as an object"),
    }
}

/// Differences between the object schema `components.schemas.<schema>` and
/// a wire type: its `properties` must be the keys of `full` (the value with
/// every optional field set), its `required` the keys of `minimal` (every
/// optional field unset: the keys that are always sent).
fn object_differences(doc: &str, schema: &str, full: &Value, minimal: &Value) -> Vec<String> {
    let path = ["components", "schemas", schema];
    let mut problems = Vec::new();
    match keys_at(doc, &[&path[..], &["properties"]].concat()) {
        Ok(properties) => problems.extend(list_differences(
            &properties,
            &wire_keys(full),
            &format!("properties of {schema}"),
        )),
        Err(e) => problems.push(e),
    }
    match list_at(doc, &[&path[..], &["required"]].concat()) {
        Ok(required) => problems.extend(list_differences(
            &required,
            &wire_keys(minimal),
            &format!("required of {schema} (the fields always sent)"),
        )),
        Err(e) => problems.push(e),
    }
    problems
}

fn report(what: &str, problems: &[String]) -> String {
    format!(
        "{DOCUMENT} has drifted from {what}:\n  - {}\n",
        problems.join("\n  - ")
    )
}

#[test]
fn openapi_documents_every_route_and_method() {
    let doc = read_document();
    let documented = scan_paths(&doc).unwrap_or_else(|problems| {
        panic!("{}", report("the expected layout", &problems));
    });
    let problems = route_differences(&documented);
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_server::routes::table()", &problems)
    );
}

#[test]
fn openapi_lists_every_error_code() {
    let doc = read_document();
    let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut problems = enum_differences(&doc, "ErrorCode", &names);
    problems.extend(
        names
            .iter()
            .filter(|name| !doc.contains(*name))
            .map(|name| format!("error code `{name}` appears nowhere")),
    );
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_proto::ErrorCode", &problems)
    );
}

#[test]
fn openapi_lists_every_job_state() {
    let doc = read_document();
    let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    for state in JobState::ALL {
        assert_eq!(
            serde_json::to_value(state).ok(),
            Some(serde_json::Value::from(state.as_str()))
        );
    }
    let problems = enum_differences(&doc, "JobState", &names);
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_proto::JobState", &problems)
    );
}

fn raw(value: Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("JSON")
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("a wire type serializes")
}

/// A job with every optional field set (`full`) or unset. A struct literal
/// on purpose: a field added to `queue_proto::Job` does not compile here
/// until it is added, and then the document is checked for it.
fn wire_job(full: bool) -> Job {
    let some = |text: &str| full.then(|| text.to_owned());
    Job {
        id: "00000000000000a1".into(),
        queue: "emails".into(),
        state: JobState::Completed,
        payload: raw(json!({"to": "ada@example.com"})),
        priority: 0,
        attempts: 1,
        max_attempts: 5,
        backoff_ms: 1000,
        created_at: 1_764_000_000_000,
        updated_at: 1_764_000_002_000,
        run_at: 1_764_000_000_000,
        lease_expires_at: full.then_some(1_764_000_030_000),
        worker: some("worker-1"),
        idempotency_key: some("welcome-ada"),
        result: full.then(|| raw(json!({"sent": true}))),
        last_error: some("timed out"),
        finished_at: full.then_some(1_764_000_002_000),
        lease_id: some("00000000000000b2"),
        correlation_id: some("signup-8f2c"),
        headers: if full {
            BTreeMap::from([("tenant".to_owned(), "acme".to_owned())])
        } else {
            BTreeMap::new()
        },
        progress: full.then(|| raw(json!({"done": 10}))),
        callback_url: some("https://hooks.example.com/jobs"),
        callback: full.then(|| wire_callback(true)),
        group: some("tenant-acme"),
        timeout_ms: full.then_some(300_000),
        expires_at: full.then_some(1_764_003_600_000),
        started_at: full.then_some(1_764_000_001_000),
        schedule: some("nightly-report"),
    }
}

fn wire_callback(full: bool) -> CallbackInfo {
    CallbackInfo {
        state: CallbackState::Delivered,
        attempts: 1,
        last_status: full.then_some(200),
        last_error: full.then(|| "the receiver answered 500".to_owned()),
        next_attempt_at: full.then_some(1_764_000_007_000),
        delivered_at: full.then_some(1_764_000_002_150),
    }
}

fn wire_event(full: bool) -> Event {
    Event {
        event_id: 43,
        id: "00000000000000a1".into(),
        queue: "emails".into(),
        state: JobState::Completed,
        attempts: 1,
        at: 1_764_000_002_000,
        correlation_id: full.then(|| "signup-8f2c".to_owned()),
        result: full.then(|| raw(json!({"sent": true}))),
        last_error: full.then(|| "timed out".to_owned()),
        progress: full.then(|| raw(json!({"done": 10}))),
    }
}

fn wire_enqueue(full: bool) -> EnqueueRequest {
    let some = |text: &str| full.then(|| text.to_owned());
    EnqueueRequest {
        payload: raw(json!({"to": "ada@example.com"})),
        priority: full.then_some(1),
        delay_ms: full.then_some(5000),
        run_at: full.then_some(1_764_000_000_000),
        max_attempts: full.then_some(5),
        backoff_ms: full.then_some(1000),
        idempotency_key: some("welcome-ada"),
        correlation_id: some("signup-8f2c"),
        headers: full.then(|| BTreeMap::from([("tenant".to_owned(), "acme".to_owned())])),
        callback_url: some("https://hooks.example.com/jobs"),
        group: some("tenant-acme"),
        timeout_ms: full.then_some(300_000),
        ttl_ms: full.then_some(3_600_000),
        expires_at: full.then_some(1_764_003_600_000),
    }
}

fn wire_heartbeat(full: bool) -> HeartbeatRequest {
    HeartbeatRequest {
        lease_id: "00000000000000b2".into(),
        lease_ms: full.then_some(30_000),
        progress: full.then(|| raw(json!({"done": 3}))),
    }
}

fn wire_callback_event(full: bool) -> CallbackEvent {
    CallbackEvent {
        kind: "job.completed".into(),
        timestamp: queue_proto::rfc3339_ms(1_764_000_002_000),
        data: wire_job(full),
    }
}

#[test]
fn openapi_job_schema_matches_the_wire_job() {
    let doc = read_document();
    let problems = object_differences(
        &doc,
        "Job",
        &to_json(&wire_job(true)),
        &to_json(&wire_job(false)),
    );
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_proto::Job", &problems)
    );
}

#[test]
fn openapi_queue_stats_and_limits_match_the_wire_types() {
    let doc = read_document();
    let stats = |limits: queue_proto::QueueLimits| queue_proto::QueueStats {
        queue: "q".into(),
        paused: false,
        limits,
        scheduled: 0,
        ready: 0,
        leased: 0,
        completed: 0,
        dead: 0,
        cancelled: 0,
        oldest_ready_age_ms: Some(1),
    };
    let full = queue_proto::QueueLimits {
        max_leased: Some(1),
        rate_limit: Some(queue_proto::RateLimit { jobs: 1, per_ms: 1 }),
        group_max_leased: Some(1),
    };
    let mut problems = object_differences(
        &doc,
        "QueueStats",
        &to_json(&stats(full)),
        &to_json(&stats(queue_proto::QueueLimits::default())),
    );
    // Every limit is always sent, null when not set.
    problems.extend(object_differences(
        &doc,
        "QueueLimits",
        &to_json(&full),
        &to_json(&queue_proto::QueueLimits::default()),
    ));
    problems.extend(object_differences(
        &doc,
        "RateLimit",
        &to_json(&full.rate_limit),
        &to_json(&full.rate_limit),
    ));
    let patch = queue_proto::PatchQueueRequest {
        paused: Some(true),
        max_leased: Some(None),
        rate_limit: Some(None),
        group_max_leased: Some(None),
    };
    match keys_at(
        &doc,
        &["components", "schemas", "PatchQueueRequest", "properties"],
    ) {
        Ok(properties) => problems.extend(list_differences(
            &properties,
            &wire_keys(&to_json(&patch)),
            "properties of PatchQueueRequest",
        )),
        Err(e) => problems.push(e),
    }
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_proto::QueueStats", &problems)
    );
}

#[test]
fn openapi_history_schemas_match_the_wire_types() {
    let doc = read_document();
    let point = |percentile: Option<u64>| queue_proto::HistoryPoint {
        run_ms_p50: percentile,
        run_ms_p95: percentile,
        wait_ms_p50: percentile,
        wait_ms_p95: percentile,
        ..queue_proto::HistoryPoint::default()
    };
    let mut problems = object_differences(
        &doc,
        "HistoryPoint",
        &to_json(&point(Some(1))),
        &to_json(&point(None)),
    );
    let history = queue_proto::History {
        step_ms: 60_000,
        points: vec![point(Some(1))],
    };
    problems.extend(object_differences(
        &doc,
        "History",
        &to_json(&history),
        &to_json(&history),
    ));
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_proto::History", &problems)
    );
}

#[test]
fn openapi_event_schema_matches_the_wire_event() {
    let doc = read_document();
    let problems = object_differences(
        &doc,
        "Event",
        &to_json(&wire_event(true)),
        &to_json(&wire_event(false)),
    );
    assert!(
        problems.is_empty(),
        "{}",
        report("queue_proto::Event", &problems)
    );
}

#[test]
fn openapi_push_schemas_match_the_wire_types() {
    let doc = read_document();
    let gap = to_json(&Gap {
        after: 3,
        oldest: 10,
    });
    let checks = [
        (
            "CallbackInfo",
            to_json(&wire_callback(true)),
            to_json(&wire_callback(false)),
        ),
        (
            "CallbackEvent",
            to_json(&wire_callback_event(true)),
            to_json(&wire_callback_event(false)),
        ),
        ("Gap", gap.clone(), gap),
        (
            "EnqueueRequest",
            to_json(&wire_enqueue(true)),
            to_json(&wire_enqueue(false)),
        ),
        (
            "HeartbeatRequest",
            to_json(&wire_heartbeat(true)),
            to_json(&wire_heartbeat(false)),
        ),
    ];
    let mut problems = Vec::new();
    for (schema, full, minimal) in &checks {
        problems.extend(object_differences(&doc, schema, full, minimal));
    }
    assert!(
        problems.is_empty(),
        "{}",
        report("the queue_proto wire types", &problems)
    );
}

#[test]
fn openapi_lists_every_event_type_and_callback_state() {
    let doc = read_document();
    let types: Vec<EventType> = JobState::ALL
        .into_iter()
        .map(EventType::State)
        .chain([EventType::Progress])
        .collect();
    // Exhaustive: a new kind of event fails to compile until it is listed.
    let names: Vec<&str> = types
        .iter()
        .map(|t| match t {
            EventType::State(_) | EventType::Progress => t.as_str(),
        })
        .collect();
    let mut problems = enum_differences(&doc, "EventType", &names);
    let states: Vec<&str> = CallbackState::ALL.iter().map(|s| s.as_str()).collect();
    for state in CallbackState::ALL {
        assert_eq!(to_json(&state), Value::from(state.as_str()));
    }
    problems.extend(enum_differences(&doc, "CallbackState", &states));
    let kinds: Vec<&str> = JobState::ALL
        .into_iter()
        .filter_map(CallbackEvent::kind_of)
        .collect();
    match list_at(
        &doc,
        &[
            "components",
            "schemas",
            "CallbackEvent",
            "properties",
            "type",
            "enum",
        ],
    ) {
        Ok(documented) => {
            problems.extend(list_differences(
                &documented,
                &kinds,
                "CallbackEvent type enum",
            ));
        }
        Err(e) => problems.push(e),
    }
    assert!(
        problems.is_empty(),
        "{}",
        report(
            "queue_proto::{EventType, CallbackState, CallbackEvent}",
            &problems
        )
    );
}

/// Every field of the schedule types, written out on purpose (as
/// [`wire_job`]).
fn wire_schedule_request(full: bool) -> ScheduleRequest {
    ScheduleRequest {
        queue: "reports".into(),
        cron: full.then(|| "0 3 * * *".to_owned()),
        every_ms: full.then_some(60_000),
        timezone: full.then(|| "Europe/Paris".to_owned()),
        job: wire_enqueue(false),
        catch_up: full.then_some(CatchUp::All),
        paused: full.then_some(true),
    }
}

fn wire_schedule() -> Schedule {
    Schedule {
        name: "nightly".into(),
        queue: "reports".into(),
        cron: Some("0 3 * * *".into()),
        every_ms: None,
        timezone: "Europe/Paris".into(),
        job: wire_enqueue(false),
        catch_up: CatchUp::Latest,
        paused: false,
        next_run_at: Some(1_764_000_000_000),
        last_run_at: None,
        last_job_id: None,
        created_at: 1_763_000_000_000,
        updated_at: 1_763_000_000_000,
    }
}

#[test]
fn openapi_schedule_schemas_match_the_wire_types() {
    let doc = read_document();
    // Every field of the schedule object is always sent (null when unset).
    let schedule = to_json(&wire_schedule());
    let list = to_json(&ScheduleList {
        schedules: vec![wire_schedule()],
    });
    let checks = [
        (
            "ScheduleRequest",
            to_json(&wire_schedule_request(true)),
            to_json(&wire_schedule_request(false)),
        ),
        ("Schedule", schedule.clone(), schedule),
        ("ScheduleList", list.clone(), list),
    ];
    let mut problems = Vec::new();
    for (schema, full, minimal) in &checks {
        problems.extend(object_differences(&doc, schema, full, minimal));
    }
    let policies: Vec<&str> = CatchUp::ALL.iter().map(|c| c.as_str()).collect();
    for policy in CatchUp::ALL {
        assert_eq!(to_json(&policy), Value::from(policy.as_str()));
    }
    problems.extend(enum_differences(&doc, "CatchUp", &policies));
    assert!(
        problems.is_empty(),
        "{}",
        report("the queue_proto schedule types", &problems)
    );
}

/// The scanner itself, on a small document with the traps a real one has.
#[test]
fn openapi_scanner_reads_paths_methods_and_enums() {
    let doc = "\
openapi: 3.1.0
info:
  description: |
    paths:
      /not/a/path:
        get: {}
# a comment
paths:
  '/quoted/{id}':
    parameters: []
    get:
      operationId: getIt
      description: |
        # not a comment, a line of text
        post: not a method
    DELETE:
      operationId: bad
  /plain: # trailing comment
    post:
      summary: no id
    x-extension: 1
components:
  schemas:
    Flow:
      enum: [a, 'b']
    Block:
      type: string
      enum:
      - c
      - \"d\"
    Thing:
      type: object
      required: [a, 'b']
      properties:
        a:
          description: |
            c: not a property, a line of text
        'b':
          type: object
          required:
            - d
          properties:
            d:
              type: string
      example:
        e: 1
";
    let problems = scan_paths(doc).expect_err("an uppercase method is refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`DELETE`") && problems[0].contains(":16:"));
    let fixed = doc.replace("DELETE", "delete");
    let paths = scan_paths(&fixed).expect("scans");
    assert_eq!(paths.keys().collect::<Vec<_>>(), ["/plain", "/quoted/{id}"]);
    let quoted = &paths["/quoted/{id}"].methods;
    assert_eq!(quoted.keys().collect::<Vec<_>>(), ["delete", "get"]);
    assert!(quoted["get"] && quoted["delete"]);
    assert_eq!(paths["/plain"].methods.get("post"), Some(&false));
    assert_eq!(schema_enum(doc, "Flow").expect("flow"), ["a", "b"]);
    assert_eq!(schema_enum(doc, "Block").expect("block"), ["c", "d"]);
    assert!(schema_enum(doc, "Missing").is_err());
    assert!(
        list_at("a:\n  b: []\n", &["a", "b"])
            .expect("empty")
            .is_empty()
    );
    let thing = ["components", "schemas", "Thing"];
    assert_eq!(
        keys_at(doc, &[&thing[..], &["properties"]].concat()).expect("keys"),
        ["a", "b"]
    );
    assert_eq!(
        list_at(doc, &[&thing[..], &["required"]].concat()).expect("flow"),
        ["a", "b"]
    );
    let nested = [&thing[..], &["properties", "b", "properties"]].concat();
    assert_eq!(keys_at(doc, &nested).expect("nested keys"), ["d"]);
    assert!(keys_at(doc, &[&thing[..], &["required"]].concat()).is_err());
    assert!(keys_at(doc, &[&thing[..], &["missing"]].concat()).is_err());
    let full = json!({"a": 1, "b": 2, "c": 3});
    let minimal = json!({"a": 1});
    let problems = object_differences(doc, "Thing", &full, &minimal);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`c` is missing from the properties of Thing"));
    assert!(problems[1].contains("lists `b`"));
    assert!(scan_paths("openapi: 3.1.0\n").is_err());
    assert!(scan_paths("paths:\n   /odd:\n").is_err());
    assert!(scan_paths("paths:\n  /a:\n    get: {}\n  /a:\n    get: {}\n").is_err());
    assert!(scan_paths("paths: {}\n").is_err());
}

/// The query parameters each operation documents, `(path, METHOD)` →
/// names: inline items with `in: query` and `$ref`s to entries of
/// `components.parameters` with `in: query`.
fn documented_query_params(
    doc: &str,
) -> Result<BTreeMap<(String, String), BTreeSet<String>>, String> {
    let lines = lines(doc)?;
    let unquote = |v: &str| v.trim().trim_matches(['\'', '"']).to_owned();
    // The fields of one parameter: its first line and those indented under
    // it, up to the next item.
    let field = |texts: &[&str], name: &str| -> Option<String> {
        texts.iter().find_map(|t| {
            key_of(t)
                .filter(|(k, _)| k == name)
                .map(|(_, v)| unquote(v))
        })
    };
    let (scope, at) = locate(&lines, &["components", "parameters"])?;
    let nested = children(scope, at);
    let indent = nested.first().map_or(0, |l| l.indent);
    let mut components = BTreeMap::new();
    for (i, line) in nested.iter().enumerate() {
        let Some((key, _)) = key_of(line.text).filter(|_| line.indent == indent) else {
            continue;
        };
        let texts: Vec<&str> = nested[i + 1..]
            .iter()
            .take_while(|l| l.indent > indent)
            .filter(|l| l.indent == indent + 2)
            .map(|l| l.text)
            .collect();
        if field(&texts, "in").as_deref() == Some("query") {
            components.insert(key, field(&texts, "name").unwrap_or_default());
        }
    }
    let (scope, at) = locate(&lines, &["paths"])?;
    let paths = children(scope, at);
    let mut out = BTreeMap::new();
    let mut path = String::new();
    for (i, line) in paths.iter().enumerate() {
        let Some((key, _)) = key_of(line.text) else {
            continue;
        };
        if line.indent == 2 {
            path = key;
            continue;
        }
        if line.indent != 4 || !METHODS.contains(&key.as_str()) {
            continue;
        }
        let operation = children(paths, i);
        let mut names = BTreeSet::new();
        if let Some(p) = find_key(operation, 6, "parameters") {
            let items = children(operation, p);
            for (j, item) in items.iter().enumerate() {
                let Some(first) = item.text.strip_prefix("- ").filter(|_| item.indent == 8) else {
                    continue;
                };
                let mut texts = vec![first];
                texts.extend(
                    items[j + 1..]
                        .iter()
                        .take_while(|l| l.indent > 8)
                        .filter(|l| l.indent == 10)
                        .map(|l| l.text),
                );
                if let Some(target) = field(&texts, "$ref") {
                    let name = target.trim_start_matches("#/components/parameters/");
                    if let Some(query) = components.get(name) {
                        names.insert(query.clone());
                    }
                } else if field(&texts, "in").as_deref() == Some("query") {
                    names.insert(field(&texts, "name").unwrap_or_default());
                }
            }
        }
        out.insert((path.clone(), key.to_ascii_uppercase()), names);
    }
    Ok(out)
}

#[test]
fn openapi_documents_exactly_the_query_parameters_each_route_takes() {
    let doc = read_document();
    let documented = documented_query_params(&doc).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    for route in routes::table() {
        let concrete = route
            .pattern
            .replace("{queue}", "q")
            .replace("{id}", "0000000000000001")
            .replace("{name}", "n")
            .replace("{*rest}", "x");
        for method in &route.methods {
            let Ok(routed) = routes::route(&method.parse().unwrap_or_default(), &concrete) else {
                problems.push(format!("{method} {concrete} does not route"));
                continue;
            };
            let taken: BTreeSet<String> = routed
                .endpoint
                .query_params()
                .iter()
                .map(|p| (*p).to_owned())
                .collect();
            let key = (route.pattern.to_owned(), (*method).to_owned());
            let listed = documented.get(&key).cloned().unwrap_or_default();
            if listed != taken {
                problems.push(format!(
                    "{method} {}: the document lists {listed:?}, the route takes {taken:?}",
                    route.pattern
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}",
        report("query parameters", &problems)
    );
}

/// The reader's reference, `docs/HTTP.md`, names every routed method and
/// path (as `METHOD /path`) and every error code, so it cannot fall behind
/// the router.
#[test]
fn the_http_reference_names_every_route_and_error_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/HTTP.md");
    let reference = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut problems = Vec::new();
    for spec in routes::table() {
        for method in spec.methods {
            let route = format!("{} {}", method.to_ascii_uppercase(), spec.pattern);
            if !reference.contains(&route) {
                problems.push(format!("`{route}` is not in docs/HTTP.md"));
            }
        }
    }
    for code in ErrorCode::ALL {
        if !reference.contains(&format!("`{}`", code.as_str())) {
            problems.push(format!(
                "error code `{}` is not in docs/HTTP.md",
                code.as_str()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/HTTP.md has fallen behind the router:\n  - {}",
        problems.join("\n  - ")
    );
}
