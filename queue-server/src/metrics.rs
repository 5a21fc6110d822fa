//! `/metrics` in the Prometheus text format: per-queue gauges from the
//! store, transition counters and the run-time histogram from the core, and
//! HTTP requests by route, method and status.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use std::sync::atomic::Ordering;

use queue_core::{Counters, QueueStats, RUN_TIME_BOUNDS_MS};

use crate::callbacks::CallbackMetrics;

/// Requests served, by (route pattern, method, status), and the event
/// streams open.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
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

    /// Counts one request. Routes are patterns, so the label set is bounded.
    pub fn record(&self, route: &'static str, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests
            .entry((route, method.to_owned(), status))
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(&'static str, String, u16), u64> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders everything.
pub fn render(
    queues: &[QueueStats],
    counters: &Counters,
    http: &HttpMetrics,
    in_flight: usize,
    callbacks: &CallbackMetrics,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = render_into(&mut out, queues, counters, http, in_flight);
    let _ = render_callbacks(&mut out, callbacks);
    out
}

fn render_into(
    out: &mut String,
    queues: &[QueueStats],
    counters: &Counters,
    http: &HttpMetrics,
    in_flight: usize,
) -> std::fmt::Result {
    writeln!(out, "# HELP queue_jobs Jobs stored, by queue and state.")?;
    writeln!(out, "# TYPE queue_jobs gauge")?;
    for q in queues {
        let queue = escape(&q.queue);
        for (state, n) in [
            ("scheduled", q.scheduled),
            ("ready", q.ready),
            ("leased", q.leased),
            ("completed", q.completed),
            ("dead", q.dead),
            ("cancelled", q.cancelled),
        ] {
            writeln!(out, "queue_jobs{{queue=\"{queue}\",state=\"{state}\"}} {n}")?;
        }
    }
    writeln!(
        out,
        "# HELP queue_paused Whether leasing from the queue is paused."
    )?;
    writeln!(out, "# TYPE queue_paused gauge")?;
    for q in queues {
        writeln!(
            out,
            "queue_paused{{queue=\"{}\"}} {}",
            escape(&q.queue),
            u8::from(q.paused)
        )?;
    }
    writeln!(
        out,
        "# HELP queue_oldest_ready_age_seconds Age of the oldest ready job."
    )?;
    writeln!(out, "# TYPE queue_oldest_ready_age_seconds gauge")?;
    for q in queues {
        let age = q.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0;
        writeln!(
            out,
            "queue_oldest_ready_age_seconds{{queue=\"{}\"}} {age}",
            escape(&q.queue)
        )?;
    }
    for (name, help, value) in [
        (
            "enqueued",
            "Jobs enqueued (idempotent replays excluded).",
            counters.enqueued,
        ),
        ("leased", "Leases handed out.", counters.leased),
        ("completed", "Jobs completed.", counters.completed),
        ("failed", "Failures reported by workers.", counters.failed),
        ("dead", "Jobs that became dead.", counters.dead),
        (
            "expired",
            "Leases that expired (at their end or the job's timeout).",
            counters.expired,
        ),
        (
            "ttl_expired",
            "Jobs given up at their expires_at before they ran.",
            counters.ttl_expired,
        ),
        ("released", "Leases given back.", counters.released),
        ("cancelled", "Jobs cancelled.", counters.cancelled),
        ("requeued", "Dead jobs requeued.", counters.requeued),
        (
            "removed",
            "Finished jobs removed by retention or purge.",
            counters.removed,
        ),
    ] {
        writeln!(out, "# HELP queue_jobs_{name}_total {help}")?;
        writeln!(out, "# TYPE queue_jobs_{name}_total counter")?;
        writeln!(out, "queue_jobs_{name}_total {value}")?;
    }
    writeln!(
        out,
        "# HELP queue_job_run_seconds Run time of completed jobs, lease to completion."
    )?;
    writeln!(out, "# TYPE queue_job_run_seconds histogram")?;
    let mut cumulative = 0u64;
    for (i, bound) in RUN_TIME_BOUNDS_MS.iter().enumerate() {
        cumulative += counters.run_time_buckets.get(i).copied().unwrap_or(0);
        let le = *bound as f64 / 1000.0;
        writeln!(
            out,
            "queue_job_run_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        )?;
    }
    let total: u64 = counters.run_time_buckets.iter().sum();
    writeln!(out, "queue_job_run_seconds_bucket{{le=\"+Inf\"}} {total}")?;
    writeln!(
        out,
        "queue_job_run_seconds_sum {}",
        counters.run_time_sum_ms as f64 / 1000.0
    )?;
    writeln!(out, "queue_job_run_seconds_count {total}")?;
    writeln!(
        out,
        "# HELP queue_http_requests_total HTTP requests by route, method and status."
    )?;
    writeln!(out, "# TYPE queue_http_requests_total counter")?;
    for ((route, method, status), n) in http.snapshot() {
        writeln!(
            out,
            "queue_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
            escape(route),
            escape(&method)
        )?;
    }
    writeln!(
        out,
        "# HELP queue_http_requests_in_flight Requests being served (long-polls included)."
    )?;
    writeln!(out, "# TYPE queue_http_requests_in_flight gauge")?;
    writeln!(out, "queue_http_requests_in_flight {in_flight}")?;
    writeln!(
        out,
        "# HELP queue_event_streams_open Event streams open (GET /v1/events and \
         /v1/jobs/{{id}}/events), by transport."
    )?;
    writeln!(out, "# TYPE queue_event_streams_open gauge")?;
    writeln!(
        out,
        "queue_event_streams_open{{transport=\"sse\"}} {}",
        http.sse_open.load(Ordering::Relaxed)
    )?;
    writeln!(
        out,
        "queue_event_streams_open{{transport=\"websocket\"}} {}",
        http.websockets_open.load(Ordering::Relaxed)
    )?;
    Ok(())
}

fn render_callbacks(out: &mut String, callbacks: &CallbackMetrics) -> std::fmt::Result {
    writeln!(
        out,
        "# HELP queue_callback_attempts_total Callback attempts by outcome: delivered (2xx), \
         retried (will be tried again), failed (410 Gone or attempts used up), stale (settled \
         after it was given up as lost)."
    )?;
    writeln!(out, "# TYPE queue_callback_attempts_total counter")?;
    for (outcome, n) in [
        ("delivered", &callbacks.delivered),
        ("retried", &callbacks.retried),
        ("failed", &callbacks.failed),
        ("stale", &callbacks.stale),
    ] {
        writeln!(
            out,
            "queue_callback_attempts_total{{outcome=\"{outcome}\"}} {}",
            n.load(Ordering::Relaxed)
        )?;
    }
    writeln!(
        out,
        "# HELP queue_callback_attempts_in_flight Callback attempts under way."
    )?;
    writeln!(out, "# TYPE queue_callback_attempts_in_flight gauge")?;
    writeln!(
        out,
        "queue_callback_attempts_in_flight {}",
        callbacks.in_flight.load(Ordering::Relaxed)
    )
}
