//! `docs/openapi.yaml` against the code, so that the two cannot drift: every
//! path and method of the router ([`queue_server::routes::ROUTES`]) is
//! documented and nothing else is, and the document's `ErrorCode` and
//! `JobState` enums list exactly the wire names of the Rust enums.
//!
//! The document is scanned as text (no YAML crate): it is block-style YAML
//! with 2-space indentation, so under the top-level `paths:` the path keys sit
//! at indent 2 and their operations at indent 4. Deeper lines (descriptions,
//! block scalars, schemas) never reach those columns, so they cannot be
//! mistaken for paths or methods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use queue_proto::{ErrorCode, JobState};
use queue_server::routes;

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

/// The items of the `enum:` of the schema `components.schemas.<schema>`,
/// in block (`- a`) or flow (`[a, b]`) style.
fn schema_enum(doc: &str, schema: &str) -> Result<Vec<String>, String> {
    let lines = lines(doc)?;
    let mut scope: &[Line<'_>] = &lines;
    let mut indent = 0;
    for name in ["components", "schemas", schema, "enum"] {
        let at = find_key(scope, indent, name).ok_or_else(|| {
            format!("{DOCUMENT}: no `components.schemas.{schema}.enum` (missing `{name}:`)")
        })?;
        if name == "enum" {
            let unquote = |item: &str| item.trim().trim_matches(['\'', '"']).to_owned();
            if let Some((_, flow)) = key_of(scope[at].text).filter(|(_, v)| !v.is_empty()) {
                let inner = flow
                    .strip_prefix('[')
                    .and_then(|f| f.strip_suffix(']'))
                    .ok_or_else(|| format!("{DOCUMENT}:{}: unreadable enum", scope[at].number))?;
                return Ok(inner.split(',').map(unquote).collect());
            }
            return children(scope, at)
                .iter()
                .map(|l| {
                    l.text
                        .strip_prefix("- ")
                        .map(unquote)
                        .ok_or_else(|| format!("{DOCUMENT}:{}: expected `- item`", l.number))
                })
                .collect();
        }
        let nested = children(scope, at);
        indent = nested
            .first()
            .map(|l| l.indent)
            .ok_or_else(|| format!("{DOCUMENT}:{}: `{name}:` is empty", scope[at].number))?;
        scope = nested;
    }
    Err(format!("{DOCUMENT}: no `components.schemas.{schema}.enum`"))
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
    let mut problems: Vec<String> = expected
        .iter()
        .filter(|name| !documented.iter().any(|d| d == *name))
        .map(|name| format!("`{name}` is missing from the {schema} enum"))
        .collect();
    problems.extend(
        documented
            .iter()
            .filter(|d| !expected.contains(&d.as_str()))
            .map(|d| format!("the {schema} enum lists `{d}`, which the code does not have")),
    );
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
    assert!(scan_paths("openapi: 3.1.0\n").is_err());
    assert!(scan_paths("paths:\n   /odd:\n").is_err());
    assert!(scan_paths("paths:\n  /a:\n    get: {}\n  /a:\n    get: {}\n").is_err());
    assert!(scan_paths("paths: {}\n").is_err());
}
