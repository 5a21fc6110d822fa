//! `/metrics` in the Prometheus text format (version 0.0.4): per-queue
//! gauges from the store; per-queue transition counters and the run-time
//! and queue-wait histograms from the core; HTTP requests by route, method
//! and status and their duration by route and method; callback attempts by
//! queue and outcome; the embedded store's batches, commits and journal
//! syncs.
//!
//! Every family is written by [`Family`], which writes its `# HELP` and
//! `# TYPE` once and escapes label values, so the output stays parseable
//! whatever a queue is called. Label sets are bounded: `route` is a pattern
//! of the route table (or `unmatched`), `method` one of the standard
//! methods (or `other`), `queue` a queue the store lists or that had a
//! transition since the server started.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_core::{CommitStats, Counters, QueueStats, RUN_TIME_BOUNDS_MS, WAIT_TIME_BOUNDS_MS};

use crate::callbacks::{CallbackMetrics, CallbackOutcome};

/// Upper bounds (inclusive, in µs) of the HTTP request-duration buckets:
/// 1 ms to 60 s (the longest long-poll), a last implicit bucket above.
pub const REQUEST_DURATION_BOUNDS_US: [u64; 15] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// One route's request durations.
#[derive(Debug, Clone)]
struct Durations {
    /// One count per bound of [`REQUEST_DURATION_BOUNDS_US`], plus the last.
    buckets: [u64; REQUEST_DURATION_BOUNDS_US.len() + 1],
    sum_us: u64,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            buckets: [0; REQUEST_DURATION_BOUNDS_US.len() + 1],
            sum_us: 0,
        }
    }
}

/// What the request counters hold, under one lock (one request takes it
/// once).
#[derive(Default, Clone)]
struct Requests {
    /// Requests by (route pattern, method, status).
    counts: BTreeMap<(&'static str, &'static str, u16), u64>,
    /// Durations by (route pattern, method).
    durations: HashMap<(&'static str, &'static str), Durations>,
}

/// Requests served, by (route pattern, method, status), their durations,
/// and the event streams open.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<Requests>,
    sse_open: Arc<AtomicUsize>,
    websockets_open: Arc<AtomicUsize>,
}

/// Which kind of event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Server-sent events.
    Sse,
    /// A WebSocket.
    WebSocket,
}

/// Counts one open event stream until dropped.
pub(crate) struct StreamOpen(Arc<AtomicUsize>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The method as a label: the standard ones by name, anything else as
/// `other` (a client may send any token as a method; the label set must
/// stay bounded).
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

impl HttpMetrics {
    /// Counts an event stream as open for as long as the guard lives.
    pub(crate) fn stream_opened(&self, transport: Transport) -> StreamOpen {
        let gauge = match transport {
            Transport::Sse => &self.sse_open,
            Transport::WebSocket => &self.websockets_open,
        };
        gauge.fetch_add(1, Ordering::Relaxed);
        StreamOpen(Arc::clone(gauge))
    }

    /// Counts one request that took `elapsed` to its response head. Routes
    /// are patterns and methods are [`method_label`]s, so the label set is
    /// bounded.
    pub fn record(
        &self,
        route: &'static str,
        method: &http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = REQUEST_DURATION_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(REQUEST_DURATION_BOUNDS_US.len());
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.counts.entry((route, method, status)).or_default() += 1;
        let durations = requests.durations.entry((route, method)).or_default();
        durations.buckets[bucket] += 1;
        durations.sum_us = durations.sum_us.saturating_add(us);
    }

    fn snapshot(&self) -> Requests {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A label value escaped as the text format wants (`\`, `"`, newline).
fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its `# HELP` and `# TYPE` once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// One sample of the family, `suffix` (`_bucket`, `_sum`, `_count`)
    /// appended to its name.
    fn sample_with(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl Display) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        self.sample_with("", labels, value);
    }

    /// The series of one histogram: cumulative `_bucket`s with `le` in
    /// seconds (`bounds` are in `unit`s of a second), `+Inf`, `_sum` and
    /// `_count`. `buckets` holds one count per bound plus a last one.
    fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        bounds: &[u64],
        unit: f64,
        buckets: &[u64],
        sum: u64,
    ) {
        let mut cumulative = 0u64;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += buckets.get(i).copied().unwrap_or(0);
            let le = (*bound as f64 / unit).to_string();
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample_with("_bucket", &with_le, cumulative);
        }
        let count: u64 = buckets.iter().sum();
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample_with("_bucket", &with_le, count);
        self.sample_with("_sum", labels, sum as f64 / unit);
        self.sample_with("_count", labels, count);
    }
}

/// What `/metrics` shows.
pub(crate) struct Snapshot<'a> {
    /// Each queue the store lists.
    pub(crate) queues: &'a [QueueStats],
    /// Each queue's counters since the start.
    pub(crate) counters: &'a BTreeMap<String, Counters>,
    pub(crate) http: &'a HttpMetrics,
    /// Requests being served.
    pub(crate) in_flight: usize,
    pub(crate) callbacks: &'a CallbackMetrics,
    /// How the embedded store grouped its commits (`None` on a database).
    pub(crate) commits: Option<CommitStats>,
}

/// Renders everything.
pub(crate) fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::new();
    render_queues(&mut out, snapshot);
    render_http(&mut out, snapshot);
    render_callbacks(&mut out, snapshot.callbacks);
    if let Some(commits) = &snapshot.commits {
        render_commits(&mut out, commits);
    }
    out
}

/// The embedded store's batches, commits and journal syncs since it was
/// opened (see [`CommitStats`]).
fn render_commits(out: &mut String, commits: &CommitStats) {
    let counters: [(&'static str, &str, f64); 8] = [
        (
            "queue_store_batches_total",
            "Batches the store's leader ran (each decides every operation waiting).",
            commits.batches as f64,
        ),
        (
            "queue_store_batch_operations_total",
            "Operations those batches ran.",
            commits.batch_operations as f64,
        ),
        (
            "queue_store_batch_seconds_total",
            "Time spent running batches (one at a time: its rate is how busy the leader is).",
            commits.batch_time.as_secs_f64(),
        ),
        (
            "queue_store_commits_total",
            "Groups of batches committed together (one journal write and, under sync \
             durability, one fdatasync each).",
            commits.commits as f64,
        ),
        (
            "queue_store_commit_operations_total",
            "Operations those groups held.",
            commits.commit_operations as f64,
        ),
        (
            "queue_store_commit_seconds_total",
            "Time from a group's journal write to its callers being answered, summed.",
            commits.commit_time.as_secs_f64(),
        ),
        (
            "queue_store_fdatasyncs_total",
            "fdatasyncs of the journal that commits wait for (under periodic durability, the \
             flush thread's and the final flush's).",
            commits.fdatasyncs as f64,
        ),
        (
            "queue_store_fdatasync_seconds_total",
            "Time spent in those fdatasyncs.",
            commits.fdatasync_time.as_secs_f64(),
        ),
    ];
    for (name, help, value) in counters {
        Family::new(out, name, "counter", help).sample(&[], value);
    }
}

fn render_queues(out: &mut String, snapshot: &Snapshot<'_>) {
    let queues = snapshot.queues;
    let mut family = Family::new(
        out,
        "queue_jobs",
        "gauge",
        "Jobs stored, by queue and state.",
    );
    for q in queues {
        for (state, n) in [
            ("scheduled", q.scheduled),
            ("ready", q.ready),
            ("leased", q.leased),
            ("completed", q.completed),
            ("dead", q.dead),
            ("cancelled", q.cancelled),
        ] {
            family.sample(&[("queue", &q.queue), ("state", state)], n);
        }
    }
    let mut family = Family::new(
        out,
        "queue_paused",
        "gauge",
        "Whether leasing from the queue is paused (1) or not (0).",
    );
    for q in queues {
        family.sample(&[("queue", &q.queue)], u8::from(q.paused));
    }
    let mut family = Family::new(
        out,
        "queue_oldest_ready_age_seconds",
        "gauge",
        "Age of the oldest ready job (0 when none is ready).",
    );
    for q in queues {
        let age = q.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
        family.sample(&[("queue", &q.queue)], age);
    }

    // Counters and histograms: every queue the store lists or that had a
    // transition since the start, zero until its first of a kind, so that
    // a rate over a queue's first jobs sees them.
    let zero = Counters::zero();
    let names: BTreeSet<&str> = queues
        .iter()
        .map(|q| q.queue.as_str())
        .chain(snapshot.counters.keys().map(String::as_str))
        .collect();
    let per_queue: Vec<(&str, &Counters)> = names
        .into_iter()
        .map(|name| (name, snapshot.counters.get(name).unwrap_or(&zero)))
        .collect();
    type Get = fn(&Counters) -> u64;
    let counters: [(&'static str, &str, Get); 11] = [
        (
            "queue_jobs_enqueued_total",
            "Jobs enqueued, by queue (idempotent replays excluded).",
            |c| c.enqueued,
        ),
        (
            "queue_jobs_leased_total",
            "Leases handed out, by queue.",
            |c| c.leased,
        ),
        (
            "queue_jobs_completed_total",
            "Jobs completed, by queue.",
            |c| c.completed,
        ),
        (
            "queue_jobs_failed_total",
            "Failures reported by workers, by queue (retried or not).",
            |c| c.failed,
        ),
        (
            "queue_jobs_dead_total",
            "Jobs that became dead, by queue (failures, expiries, time-to-live).",
            |c| c.dead,
        ),
        (
            "queue_jobs_expired_total",
            "Leases that expired (at their end or the job's timeout), by queue.",
            |c| c.expired,
        ),
        (
            "queue_jobs_ttl_expired_total",
            "Jobs given up at their expires_at before they ran, by queue.",
            |c| c.ttl_expired,
        ),
        (
            "queue_jobs_released_total",
            "Leases given back, by queue.",
            |c| c.released,
        ),
        (
            "queue_jobs_cancelled_total",
            "Jobs cancelled, by queue.",
            |c| c.cancelled,
        ),
        (
            "queue_jobs_requeued_total",
            "Dead jobs requeued, by queue.",
            |c| c.requeued,
        ),
        (
            "queue_jobs_removed_total",
            "Finished jobs removed by retention or purge, by queue.",
            |c| c.removed,
        ),
    ];
    for (name, help, get) in counters {
        let mut family = Family::new(out, name, "counter", help);
        for (queue, c) in &per_queue {
            family.sample(&[("queue", queue)], get(c));
        }
    }
    let mut family = Family::new(
        out,
        "queue_job_run_seconds",
        "histogram",
        "Run time of completed jobs, from the attempt's lease to its completion, by queue.",
    );
    for (queue, c) in &per_queue {
        family.histogram(
            &[("queue", queue)],
            &RUN_TIME_BOUNDS_MS,
            1000.0,
            &c.run_time_buckets,
            c.run_time_sum_ms,
        );
    }
    let mut family = Family::new(
        out,
        "queue_job_wait_seconds",
        "histogram",
        "Queue wait of leased jobs, from when the job could be leased (its run_at, not before \
         its enqueue; a released job from its release) to its lease, by queue.",
    );
    for (queue, c) in &per_queue {
        family.histogram(
            &[("queue", queue)],
            &WAIT_TIME_BOUNDS_MS,
            1000.0,
            &c.wait_time_buckets,
            c.wait_time_sum_ms,
        );
    }
}

fn render_http(out: &mut String, snapshot: &Snapshot<'_>) {
    let requests = snapshot.http.snapshot();
    let mut family = Family::new(
        out,
        "queue_http_requests_total",
        "counter",
        "HTTP requests by route pattern, method and status.",
    );
    for ((route, method, status), n) in &requests.counts {
        let status = status.to_string();
        family.sample(
            &[("route", route), ("method", method), ("status", &status)],
            n,
        );
    }
    let mut family = Family::new(
        out,
        "queue_http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response head, by route pattern and method \
         (long-polls include their wait; an event stream counts until it is open).",
    );
    let durations: BTreeMap<_, _> = requests.durations.into_iter().collect();
    for ((route, method), d) in &durations {
        family.histogram(
            &[("route", route), ("method", method)],
            &REQUEST_DURATION_BOUNDS_US,
            1_000_000.0,
            &d.buckets,
            d.sum_us,
        );
    }
    let mut family = Family::new(
        out,
        "queue_http_requests_in_flight",
        "gauge",
        "Requests being served (long-polls included).",
    );
    family.sample(&[], snapshot.in_flight);
    let mut family = Family::new(
        out,
        "queue_event_streams_open",
        "gauge",
        "Event streams open (GET /v1/events and /v1/jobs/{id}/events), by transport.",
    );
    family.sample(
        &[("transport", "sse")],
        snapshot.http.sse_open.load(Ordering::Relaxed),
    );
    family.sample(
        &[("transport", "websocket")],
        snapshot.http.websockets_open.load(Ordering::Relaxed),
    );
}

fn render_callbacks(out: &mut String, callbacks: &CallbackMetrics) {
    let mut family = Family::new(
        out,
        "queue_callback_attempts_total",
        "counter",
        "Callback attempts by queue and outcome: delivered (2xx), retried (failed, will be \
         tried again), failed (410 Gone or the last attempt failed: given up), stale (settled \
         after it was given up as lost).",
    );
    for (queue, counts) in callbacks.by_queue() {
        for outcome in CallbackOutcome::ALL {
            family.sample(
                &[("queue", &queue), ("outcome", outcome.as_str())],
                counts.get(outcome),
            );
        }
    }
    let mut family = Family::new(
        out,
        "queue_callback_attempts_in_flight",
        "gauge",
        "Callback attempts under way.",
    );
    family.sample(&[], callbacks.in_flight.load(Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        let mut family = Family::new(&mut out, "x", "gauge", "X.");
        family.sample(&[("queue", "a\"b\\c\nd")], 1);
        assert!(out.ends_with("x{queue=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_its_count() {
        let mut out = String::new();
        let mut family = Family::new(&mut out, "h", "histogram", "H.");
        family.histogram(&[("queue", "q")], &[5, 10], 1000.0, &[1, 0, 2], 1234);
        assert_eq!(
            out.lines().skip(2).collect::<Vec<_>>(),
            [
                "h_bucket{queue=\"q\",le=\"0.005\"} 1",
                "h_bucket{queue=\"q\",le=\"0.01\"} 1",
                "h_bucket{queue=\"q\",le=\"+Inf\"} 3",
                "h_sum{queue=\"q\"} 1.234",
                "h_count{queue=\"q\"} 3",
            ]
        );
    }

    #[test]
    fn methods_are_a_bounded_set() {
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        let odd = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
