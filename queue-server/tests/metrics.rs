//! `/metrics`: exact per-queue counters and histograms after a known
//! workload on the manual clock (two queues, leases, completions, failures,
//! callbacks answered by real receivers on 127.0.0.1), request durations by
//! route pattern, the text format parsed line by line, and the Grafana
//! dashboard in `docs/` checked against what a real server exposes.

// A test reports a failure by panicking; `unwrap` says where.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use queue_core::{Config, ManualClock};
use queue_server::{CallbackConfig, ServerConfig};
use serde_json::{Value, json};

use crate::callbacks::{Answer, Receiver};
use crate::common::{Backend, Store, TestServer};

const T0: u64 = 1_800_000_000_000;

/// One sample line: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A parsed exposition: families (name → type) and samples in order.
#[derive(Debug)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format strictly: every sample belongs to a family
    /// declared before it by exactly one `# HELP` and one `# TYPE`, label
    /// values are properly quoted and escaped, values are numbers, and a
    /// family's samples are contiguous.
    fn parse(text: &str) -> Exposition {
        let mut helps = BTreeSet::new();
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        let mut finished = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty(), "empty help: {line}");
                assert!(helps.insert(name.to_owned()), "two HELP for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helps.contains(name), "TYPE before HELP: {line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "two TYPE for {name}"
                );
                if let Some(previous) = current.replace(name.to_owned()) {
                    finished.insert(previous);
                }
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            assert!(!line.is_empty(), "an empty line");
            let sample = parse_sample(line);
            let family = current.as_deref().expect("a sample before any TYPE");
            let kind = &types[family];
            let allowed: Vec<String> = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{family}{s}"))
                    .collect()
            } else {
                vec![family.to_owned()]
            };
            assert!(
                allowed.contains(&sample.name),
                "{} outside its family {family}",
                sample.name
            );
            assert!(!finished.contains(family));
            if family.ends_with("_total") {
                assert_eq!(kind, "counter", "{family}");
            }
            samples.push(sample);
        }
        Exposition { types, samples }
    }

    /// The value of the one sample `name{labels}` (exactly these labels).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "one {name}{labels:?}, found {found:?}");
        found[0].value
    }

    fn samples_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Checks every series of every histogram: buckets in increasing `le`
    /// order and cumulative, `+Inf` last and equal to `_count`, and `_sum`
    /// within what the buckets allow (each observation between its
    /// bucket's bounds).
    fn check_histograms(&self) {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let bucket_name = format!("{family}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in self.samples_of(&bucket_name) {
                let mut labels = sample.labels.clone();
                let le = labels.remove("le").expect("a bucket has le");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                series.entry(labels).or_default().push((le, sample.value));
            }
            for (labels, buckets) in &series {
                let label_pairs: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let count = self.value(&format!("{family}_count"), &label_pairs);
                let sum = self.value(&format!("{family}_sum"), &label_pairs);
                assert_eq!(
                    buckets.last().unwrap().0,
                    f64::INFINITY,
                    "{family}{labels:?}"
                );
                assert_eq!(buckets.last().unwrap().1, count, "{family}{labels:?}");
                let (mut low, mut high) = (0.0, 0.0);
                let (mut previous_le, mut previous_n) = (0.0, 0.0);
                for &(le, n) in buckets {
                    assert!(le > previous_le || previous_le == 0.0, "le order {family}");
                    assert!(n >= previous_n, "{family}{labels:?} not cumulative");
                    let in_bucket = n - previous_n;
                    if in_bucket > 0.0 {
                        low += in_bucket * previous_le;
                        high += in_bucket * le;
                    }
                    (previous_le, previous_n) = (le, n);
                }
                let slack = 1e-6 * (1.0 + sum);
                assert!(
                    sum >= low - slack && sum <= high + slack,
                    "{family}{labels:?}: sum {sum} outside [{low}, {high}]"
                );
            }
        }
    }
}

/// Parses `name{a="x",b="y"} value` (no timestamps: the server writes none).
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect("a name");
    let name = &line[..name_end];
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "name {name}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // A label name up to '='.
            let start = chars.peek().unwrap().0;
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
                assert!(
                    c.is_ascii_alphanumeric() || c == '_',
                    "label name in {line}"
                );
            }
            let label = &after[start..eq.unwrap()];
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().unwrap().1 {
                    '\\' => match chars.next().unwrap().1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other} in {line}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in {line}"),
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(label.to_owned(), value).is_none(),
                "label twice: {line}"
            );
            match chars.next().unwrap() {
                (_, ',') => continue,
                (i, '}') => {
                    rest = &after[i + 1..];
                    break;
                }
                (_, c) => panic!("unexpected {c} in {line}"),
            }
        }
    }
    let value = rest.strip_prefix(' ').expect("a space before the value");
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().unwrap_or_else(|_| panic!("value of {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// A server on the manual clock at `T0`, delivering callbacks.
async fn server(backend: Backend) -> (TestServer, ManualClock, Store) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let core = clock.clone();
    let server = TestServer::start_at(
        &dir,
        ServerConfig {
            callbacks: CallbackConfig {
                secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap()],
                timeout: Duration::from_secs(10),
                ..CallbackConfig::default()
            },
            ..ServerConfig::default()
        },
        move |c: Config| c.clock(core),
    )
    .await;
    (server, clock, dir)
}

/// The known workload, all on the manual clock (every time below is
/// exact):
///
/// - `mail`: 3 jobs calling back receivers answering 200, 500 and 410;
///   leased 250 ms after their enqueue, completed 40 ms later.
/// - `sms`: 2 jobs leased 300 ms after their enqueue; one fails (retried
///   later), one fails for good (dead).
///
/// Returns the ids of the jobs, after the three callback attempts are
/// settled (delivered, retried, failed).
async fn known_workload(server: &TestServer, clock: &ManualClock) -> Vec<String> {
    let c = &server.client;
    let ok = Receiver::start(&[Answer::Status(200, None)]).await;
    let busy = Receiver::start(&[Answer::Status(500, None)]).await;
    let gone = Receiver::start(&[Answer::Status(410, None)]).await;
    let mut ids = Vec::new();
    for receiver in [&ok, &busy, &gone] {
        let job = c
            .enqueue(
                "mail",
                json!({"payload": 1, "callback_url": receiver.url()}),
            )
            .await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for n in 0..2 {
        let job = c.enqueue("sms", json!({"payload": n})).await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    clock.advance(Duration::from_millis(250));
    let mail = c.lease("mail", 3, 60_000).await;
    assert_eq!(mail.len(), 3);
    clock.advance(Duration::from_millis(40));
    for job in &mail {
        let done = c
            .post(
                &format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
                json!({"lease_id": job["lease_id"]}),
            )
            .await;
        assert_eq!(done.status, 200, "{}", done.text);
    }
    clock.advance(Duration::from_millis(10));
    let sms = c.lease("sms", 2, 60_000).await;
    assert_eq!(sms.len(), 2);
    for (job, retryable) in sms.iter().zip([true, false]) {
        let failed = c
            .post(
                &format!("/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
                json!({"lease_id": job["lease_id"], "error": "no", "retryable": retryable}),
            )
            .await;
        assert_eq!(failed.status, 200, "{}", failed.text);
    }
    // A read by id, a wrong method and an unknown route, for the request
    // metrics.
    assert_eq!(c.get(&format!("/v1/jobs/{}", ids[0])).await.status, 200);
    assert_eq!(c.delete("/v1/queues/mail/lease").await.status, 405);
    assert_eq!(c.get("/v2/nothing").await.status, 404);
    // The three callback attempts (the 500's retry is due in 5 s ± 20 %,
    // and the clock stays put).
    let mut settled = server.app.callback_metrics().settled();
    tokio::time::timeout(Duration::from_secs(30), settled.wait_for(|n| *n >= 3))
        .await
        .expect("three attempts settled within 30 s")
        .unwrap();
    ids
}

async fn metrics_count_a_known_workload_per_queue(backend: Backend) {
    let (server, clock, _dir) = server(backend).await;
    let ids = known_workload(&server, &clock).await;
    let reply = server.client.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = &reply.text;
    let m = Exposition::parse(text);
    let mail = [("queue", "mail")];
    let sms = [("queue", "sms")];

    // Counters, exactly, per queue.
    for (name, want_mail, want_sms) in [
        ("queue_jobs_enqueued_total", 3.0, 2.0),
        ("queue_jobs_leased_total", 3.0, 2.0),
        ("queue_jobs_completed_total", 3.0, 0.0),
        ("queue_jobs_failed_total", 0.0, 2.0),
        ("queue_jobs_dead_total", 0.0, 1.0),
        ("queue_jobs_expired_total", 0.0, 0.0),
        ("queue_jobs_cancelled_total", 0.0, 0.0),
    ] {
        assert_eq!(m.value(name, &mail), want_mail, "{name} mail");
        assert_eq!(m.value(name, &sms), want_sms, "{name} sms");
        assert_eq!(m.types[name], "counter");
    }
    // How the store grouped its commits: the embedded store counts its
    // batches, commits and journal syncs; a database groups its own.
    let store = [
        "queue_store_batches_total",
        "queue_store_batch_operations_total",
        "queue_store_batch_seconds_total",
        "queue_store_commits_total",
        "queue_store_commit_operations_total",
        "queue_store_commit_seconds_total",
        "queue_store_fdatasyncs_total",
        "queue_store_fdatasync_seconds_total",
    ];
    match backend {
        Backend::Sled => {
            for name in store {
                assert_eq!(m.types[name], "counter", "{name}");
            }
            // Five enqueues, five leases, three completions, two failures
            // at least (timers and callbacks add their own).
            // A background batch (the callback dispatcher's, the timers')
            // may be led and not yet committed when the page is read.
            let operations = m.value("queue_store_batch_operations_total", &[]);
            let committed = m.value("queue_store_commit_operations_total", &[]);
            assert!(
                (15.0..=operations).contains(&committed),
                "{committed} committed of {operations}"
            );
            let commits = m.value("queue_store_commits_total", &[]);
            assert!(
                (1.0..=m.value("queue_store_batches_total", &[])).contains(&commits),
                "{commits}"
            );
            // One sync per commit, but for a commit whose batches wrote
            // nothing (no frame to sync).
            let syncs = m.value("queue_store_fdatasyncs_total", &[]);
            assert!((1.0..=commits).contains(&syncs), "{syncs} of {commits}");
            assert!(m.value("queue_store_fdatasync_seconds_total", &[]) > 0.0);
        }
        Backend::Postgres => {
            for name in store {
                assert!(!m.types.contains_key(name), "{name} on PostgreSQL");
            }
        }
    }

    // Gauges.
    let state = |queue, state| m.value("queue_jobs", &[("queue", queue), ("state", state)]);
    assert_eq!(state("mail", "completed"), 3.0);
    assert_eq!(
        (state("sms", "scheduled"), state("sms", "dead")),
        (1.0, 1.0)
    );

    // Run time: mail's three completions took 40 ms each.
    assert_eq!(m.types["queue_job_run_seconds"], "histogram");
    assert_eq!(m.value("queue_job_run_seconds_count", &mail), 3.0);
    assert!((m.value("queue_job_run_seconds_sum", &mail) - 0.12).abs() < 1e-9);
    let run_le = |le| {
        m.value(
            "queue_job_run_seconds_bucket",
            &[("queue", "mail"), ("le", le)],
        )
    };
    assert_eq!((run_le("0.025"), run_le("0.05")), (0.0, 3.0));
    assert_eq!(m.value("queue_job_run_seconds_count", &sms), 0.0);

    // Queue wait: mail waited 250 ms (×3), sms 300 ms (×2).
    assert_eq!(m.types["queue_job_wait_seconds"], "histogram");
    assert_eq!(m.value("queue_job_wait_seconds_count", &mail), 3.0);
    assert!((m.value("queue_job_wait_seconds_sum", &mail) - 0.75).abs() < 1e-9);
    let wait_le = |queue, le| {
        m.value(
            "queue_job_wait_seconds_bucket",
            &[("queue", queue), ("le", le)],
        )
    };
    assert_eq!(
        (wait_le("mail", "0.1"), wait_le("mail", "0.25")),
        (0.0, 3.0)
    );
    assert_eq!((wait_le("sms", "0.25"), wait_le("sms", "0.5")), (0.0, 2.0));
    assert!((m.value("queue_job_wait_seconds_sum", &sms) - 0.6).abs() < 1e-9);

    // Callbacks, by queue and outcome; sms has none.
    let callback = |outcome| {
        m.value(
            "queue_callback_attempts_total",
            &[("queue", "mail"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (
            callback("delivered"),
            callback("retried"),
            callback("failed"),
            callback("stale")
        ),
        (1.0, 1.0, 1.0, 0.0)
    );
    assert_eq!(
        m.samples_of("queue_callback_attempts_total")
            .filter(|s| s.label("queue") == "sms")
            .count(),
        0
    );

    // Requests: labelled by route pattern, never by a raw path; every
    // (route, method) with requests has a duration series with the same
    // count.
    let patterns: BTreeSet<&str> = queue_server::routes::table()
        .map(|route| route.pattern)
        .chain(["unmatched"])
        .collect();
    let mut by_route: BTreeMap<(String, String), f64> = BTreeMap::new();
    for sample in m.samples_of("queue_http_requests_total") {
        assert!(
            patterns.contains(sample.label("route")),
            "a raw path as a label: {sample:?}"
        );
        *by_route
            .entry((sample.label("route").into(), sample.label("method").into()))
            .or_default() += sample.value;
    }
    for id in &ids {
        assert!(!text.contains(id.as_str()), "job id {id} in a label");
    }
    let complete = [("route", "/v1/jobs/{id}/complete"), ("method", "POST")];
    assert_eq!(
        m.value(
            "queue_http_requests_total",
            &[complete[0], complete[1], ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "queue_http_requests_total",
            &[
                ("route", "/v1/queues/{queue}/lease"),
                ("method", "DELETE"),
                ("status", "405")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value("queue_http_request_duration_seconds_count", &complete),
        3.0
    );
    let durations: BTreeMap<(String, String), f64> = m
        .samples_of("queue_http_request_duration_seconds_count")
        .map(|s| ((s.label("route").into(), s.label("method").into()), s.value))
        .collect();
    // The scrape itself is counted after it is rendered.
    by_route.remove(&("/metrics".into(), "GET".into()));
    let mut durations_but_metrics = durations.clone();
    durations_but_metrics.remove(&("/metrics".to_owned(), "GET".to_owned()));
    assert_eq!(durations_but_metrics, by_route);
    assert!(
        durations.contains_key(&("/v1/jobs/{id}".to_owned(), "GET".to_owned())),
        "{durations:?}"
    );

    m.check_histograms();
    server.stop().await;
}

/// The metric names a PromQL expression uses: identifiers starting with
/// `queue_` (no label or function of ours starts so).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word.starts_with("queue_") {
                names.insert(word);
            }
        } else if c == '"' {
            // Skip string literals (label values, $queue).
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                i += 1 + usize::from(bytes[i] == '\\');
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

/// Every string under a key named `key`, anywhere in `value`.
fn strings_under(value: &Value, key: &str, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    if let Some(s) = v.as_str() {
                        into.push(s.to_owned());
                    }
                }
                strings_under(v, key, into);
            }
        }
        Value::Array(items) => {
            for item in items {
                strings_under(item, key, into);
            }
        }
        _ => {}
    }
}

async fn the_grafana_dashboard_uses_only_series_the_server_exposes(backend: Backend) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");

    // Importable: a Prometheus datasource input, a schema version, a
    // `queue` variable from label_values, panels with unique ids, each on
    // the input's datasource with at least one expression.
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let inputs = dashboard["__inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let queue = variables
        .iter()
        .find(|v| v["name"] == "queue")
        .expect("a queue variable");
    assert_eq!(queue["type"], "query");
    let query = queue["query"]["query"]
        .as_str()
        .or_else(|| queue["query"].as_str())
        .unwrap();
    assert!(query.starts_with("label_values("), "{query}");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = vec![query.to_owned()];
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        let mut own = Vec::new();
        strings_under(&panel["targets"], "expr", &mut own);
        assert!(!own.is_empty(), "panel {} has no query", panel["title"]);
        exprs.extend(own);
    }
    assert!(panels.len() >= 8, "the panels the README promises");

    // Every name used is exposed by a real server after the workload
    // (which makes every family have samples).
    let (server, clock, _dir) = server(backend).await;
    known_workload(&server, &clock).await;
    // Once more so that /metrics itself has a request series.
    server.client.get("/metrics").await;
    let text = server.client.get("/metrics").await.text;
    let exposition = Exposition::parse(&text);
    let exposed: BTreeSet<&str> = exposition.samples.iter().map(|s| s.name.as_str()).collect();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exposed.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses {missing:?}, which the server does not expose"
    );
    // Quantiles are taken over rates of buckets, by le.
    for expr in exprs.iter().filter(|e| e.contains("histogram_quantile")) {
        assert!(
            expr.contains("(rate(") && expr.contains("_bucket") && expr.contains(", le)"),
            "{expr}"
        );
    }
    server.stop().await;
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (queue, le) (rate(queue_job_wait_seconds_bucket{queue=~"$queue", x="queue_not_a_name"}[5m])))"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["queue_job_wait_seconds_bucket"]
    );
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_count_a_known_workload_per_queue;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_grafana_dashboard_uses_only_series_the_server_exposes;
}
