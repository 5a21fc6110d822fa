//! Human output: aligned tables, durations with units, times with how
//! long ago (or ahead) they are; and JSON output.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_client::{History, Job, QueueStats, Schedule, StreamItem};
use serde::Serialize;
use serde_json::{Value, json};

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table printed with its columns padded to their widest cell.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table's text, a line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `text` to stdout; a closed pipe (`| head`) ends quietly.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(text.as_bytes()).is_err() || stdout.flush().is_err() {
        std::process::exit(0);
    }
}

/// Prints one JSON document on a line of its own.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    let text = serde_json::to_string(value).unwrap_or_else(|e| {
        // Only a serializer bug gets here: our values are plain JSON.
        json!({"error": {"code": "internal", "message": e.to_string()}}).to_string()
    });
    print(&format!("{text}\n"));
}

/// Now, as unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in at most two units: `850ms`, `12.5s`, `3m 20s`, `5h 2m`,
/// `2d 3h`.
pub fn duration(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let tenths = ms / 100;
        return if tenths % 10 == 0 {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let s = ms / 1_000;
    let (big, small, big_unit, small_unit) = if s < 3_600 {
        (s / 60, s % 60, "m", "s")
    } else if s < 86_400 {
        (s / 3_600, (s % 3_600) / 60, "h", "m")
    } else {
        (s / 86_400, (s % 86_400) / 3_600, "d", "h")
    };
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit} {small}{small_unit}")
    }
}

/// A unix ms time as UTC, with how far it is from now: `2026-12-01
/// 10:00:00Z (3m ago)`, `… (in 25s)`.
pub fn time(at_ms: u64) -> String {
    let absolute = i64::try_from(at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || format!("{at_ms} ms"),
            |t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        );
    format!("{absolute} ({})", relative(at_ms))
}

/// How far a unix ms time is from now: `3m ago`, `in 25s`, `now`.
pub fn relative(at_ms: u64) -> String {
    let now = now_ms();
    if at_ms.abs_diff(now) < 1_000 {
        "now".to_owned()
    } else if at_ms < now {
        format!("{} ago", duration(Duration::from_millis(now - at_ms)))
    } else {
        format!("in {}", duration(Duration::from_millis(at_ms - now)))
    }
}

/// An optional time, or `-`.
pub fn opt_time(at_ms: Option<u64>) -> String {
    at_ms.map_or_else(|| "-".to_owned(), relative)
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text cut to `max` characters, with an ellipsis when cut, on one line.
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A queue's limits in words.
pub fn limits(stats: &QueueStats) -> String {
    let mut parts = Vec::new();
    if let Some(n) = stats.limits.max_leased {
        parts.push(format!("max_leased {n}"));
    }
    if let Some(rate) = stats.limits.rate_limit {
        parts.push(format!(
            "rate {}/{}",
            rate.jobs,
            duration(Duration::from_millis(rate.per_ms))
        ));
    }
    if let Some(n) = stats.limits.group_max_leased {
        parts.push(format!("group_max_leased {n}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The queues' counts as a table.
pub fn stats_table(queues: &[QueueStats]) -> String {
    let mut table = Table::new(&[
        ("QUEUE", Align::Left),
        ("PAUSED", Align::Left),
        ("SCHEDULED", Align::Right),
        ("READY", Align::Right),
        ("LEASED", Align::Right),
        ("COMPLETED", Align::Right),
        ("DEAD", Align::Right),
        ("CANCELLED", Align::Right),
        ("OLDEST READY", Align::Right),
        ("LIMITS", Align::Left),
    ]);
    for q in queues {
        table.row(vec![
            q.queue.clone(),
            if q.paused { "paused" } else { "-" }.to_owned(),
            count(q.scheduled),
            count(q.ready),
            count(q.leased),
            count(q.completed),
            count(q.dead),
            count(q.cancelled),
            q.oldest_ready_age_ms
                .map_or_else(|| "-".to_owned(), |ms| duration(Duration::from_millis(ms))),
            limits(q),
        ]);
    }
    if table.is_empty() {
        return "no queues yet\n".to_owned();
    }
    table.render()
}

/// Jobs as a table, one line each.
pub fn jobs_table(jobs: &[Job<Value>]) -> String {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("QUEUE", Align::Left),
        ("STATE", Align::Left),
        ("PRI", Align::Right),
        ("ATTEMPTS", Align::Right),
        ("CREATED", Align::Right),
        ("UPDATED", Align::Right),
        ("LAST ERROR", Align::Left),
    ]);
    for job in jobs {
        table.row(vec![
            job.id.to_string(),
            job.queue.clone(),
            job.state.to_string(),
            job.priority.to_string(),
            format!("{}/{}", job.attempts, job.max_attempts),
            relative(job.created_at),
            relative(job.updated_at),
            job.last_error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| clip(e, 60)),
        ]);
    }
    table.render()
}

/// Jobs with their callback delivery, as a table.
pub fn callbacks_table(jobs: &[Job<Value>]) -> String {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("QUEUE", Align::Left),
        ("JOB", Align::Left),
        ("CALLBACK", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("LAST STATUS", Align::Right),
        ("NEXT ATTEMPT", Align::Right),
        ("URL", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for job in jobs {
        let callback = job.callback.as_ref();
        table.row(vec![
            job.id.to_string(),
            job.queue.clone(),
            job.state.to_string(),
            callback.map_or_else(|| "-".to_owned(), |c| c.state.as_str().to_owned()),
            callback.map_or_else(|| "-".to_owned(), |c| c.attempts.to_string()),
            callback
                .and_then(|c| c.last_status)
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            opt_time(callback.and_then(|c| c.next_attempt_at)),
            job.callback_url
                .as_deref()
                .map_or_else(|| "-".to_owned(), |u| clip(u, 50)),
            callback
                .and_then(|c| c.last_error.as_deref())
                .map_or_else(|| "-".to_owned(), |e| clip(e, 50)),
        ]);
    }
    table.render()
}

/// A history as a table: a row per step, percentiles in ms units.
pub fn history_table(history: &History) -> String {
    let mut table = Table::new(&[
        ("AT (UTC)", Align::Left),
        ("ENQUEUED", Align::Right),
        ("COMPLETED", Align::Right),
        ("FAILED", Align::Right),
        ("DEAD", Align::Right),
        ("EXPIRED", Align::Right),
        ("READY", Align::Right),
        ("SCHEDULED", Align::Right),
        ("LEASED", Align::Right),
        ("RUN P50", Align::Right),
        ("RUN P95", Align::Right),
        ("WAIT P50", Align::Right),
        ("WAIT P95", Align::Right),
    ]);
    let ms =
        |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |ms| duration(Duration::from_millis(ms)));
    for p in &history.points {
        let at = i64::try_from(p.at)
            .ok()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map_or_else(
                || p.at.to_string(),
                |t| t.strftime("%Y-%m-%d %H:%M").to_string(),
            );
        table.row(vec![
            at,
            count(p.enqueued),
            count(p.completed),
            count(p.failed),
            count(p.dead),
            count(p.expired),
            count(p.ready),
            count(p.scheduled),
            count(p.leased),
            ms(p.run_ms_p50),
            ms(p.run_ms_p95),
            ms(p.wait_ms_p50),
            ms(p.wait_ms_p95),
        ]);
    }
    format!(
        "{}steps of {}\n",
        table.render(),
        duration(Duration::from_millis(history.step_ms))
    )
}

/// One job, a field per line.
pub fn job_details(job: &Job<Value>) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", job.id.to_string()),
        ("queue", job.queue.clone()),
        ("state", job.state.to_string()),
        ("payload", clip(&job.payload.to_string(), 200)),
        ("priority", job.priority.to_string()),
        (
            "attempts",
            format!("{} of {}", job.attempts, job.max_attempts),
        ),
        ("backoff", duration(Duration::from_millis(job.backoff_ms))),
        ("created", time(job.created_at)),
        ("updated", time(job.updated_at)),
        ("run at", time(job.run_at)),
    ];
    let mut optional = |name, value: Option<String>| {
        if let Some(value) = value {
            lines.push((name, value));
        }
    };
    optional("lease expires", job.lease_expires_at.map(time));
    optional("started", job.started_at.map(time));
    optional("finished", job.finished_at.map(time));
    optional("result", job.result_json().map(|r| clip(r, 200)));
    optional("last error", job.last_error.clone());
    optional("progress", job.last_progress_json().map(|p| clip(p, 200)));
    optional("correlation id", job.correlation_id.clone());
    optional("idempotency key", job.idempotency_key.clone());
    optional("group", job.group.clone());
    optional(
        "timeout",
        job.timeout_ms.map(|ms| duration(Duration::from_millis(ms))),
    );
    optional("expires", job.expires_at.map(time));
    optional("schedule", job.schedule.clone());
    optional("callback url", job.callback_url.clone());
    optional(
        "callback",
        job.callback.as_ref().map(|c| {
            let mut text = format!("{} after {} attempt(s)", c.state.as_str(), c.attempts);
            if let Some(status) = c.last_status {
                text.push_str(&format!(", last status {status}"));
            }
            if let Some(error) = &c.last_error {
                text.push_str(&format!(", last error {}", clip(error, 80)));
            }
            if let Some(next) = c.next_attempt_at {
                text.push_str(&format!(", next attempt {}", relative(next)));
            }
            text
        }),
    );
    for (key, value) in &job.headers {
        lines.push(("header", format!("{key}: {value}")));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// A schedule as the API's object.
pub fn schedule_json(s: &Schedule) -> Value {
    json!({
        "name": s.name,
        "queue": s.queue,
        "cron": s.cron,
        "every_ms": s.every.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "timezone": s.timezone,
        "job": s.job(),
        "catch_up": s.catch_up,
        "paused": s.paused,
        "next_run_at": s.next_run_at,
        "last_run_at": s.last_run_at,
        "last_job_id": s.last_job_id.as_ref().map(|id| id.as_str()),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    })
}

/// When a schedule fires, in words.
fn schedule_when(s: &Schedule) -> String {
    match (&s.cron, s.every) {
        (Some(cron), _) if s.timezone == "UTC" => format!("cron {cron}"),
        (Some(cron), _) => format!("cron {cron} ({})", s.timezone),
        (None, Some(every)) => format!("every {}", duration(every)),
        (None, None) => "-".to_owned(),
    }
}

/// Schedules as a table.
pub fn schedules_table(schedules: &[Schedule]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("QUEUE", Align::Left),
        ("WHEN", Align::Left),
        ("PAUSED", Align::Left),
        ("NEXT RUN", Align::Right),
        ("LAST RUN", Align::Right),
        ("LAST JOB", Align::Left),
    ]);
    for s in schedules {
        table.row(vec![
            s.name.clone(),
            s.queue.clone(),
            schedule_when(s),
            if s.paused { "paused" } else { "-" }.to_owned(),
            opt_time(s.next_run_at),
            opt_time(s.last_run_at),
            s.last_job_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
        ]);
    }
    if table.is_empty() {
        return "no schedules\n".to_owned();
    }
    table.render()
}

/// One schedule, a field per line.
pub fn schedule_details(s: &Schedule) -> String {
    let mut lines = vec![
        ("name", s.name.clone()),
        ("queue", s.queue.clone()),
        ("when", schedule_when(s)),
        ("catch up", s.catch_up.to_string()),
        ("paused", s.paused.to_string()),
        (
            "next run",
            s.next_run_at.map_or_else(|| "-".to_owned(), time),
        ),
        (
            "last run",
            s.last_run_at.map_or_else(|| "-".to_owned(), time),
        ),
        (
            "last job",
            s.last_job_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
        ),
        ("payload", clip(s.job().payload.get(), 200)),
        ("created", time(s.created_at)),
        ("updated", time(s.updated_at)),
    ];
    lines.retain(|(_, v)| !v.is_empty());
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// A stream item as the API's WebSocket message: `{"type": <event>,
/// …data}`, or `{"type": "gap", "after", "oldest"}`.
pub fn item_json(item: &StreamItem) -> Value {
    match item {
        StreamItem::Event(event) => {
            let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("type".to_owned(), json!(event.kind().as_str()));
            }
            value
        }
        StreamItem::Gap(gap) => json!({"type": "gap", "after": gap.after, "oldest": gap.oldest}),
    }
}

/// A stream item on one line.
pub fn item_line(item: &StreamItem) -> String {
    match item {
        StreamItem::Event(event) => {
            let at = i64::try_from(event.at)
                .ok()
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map_or_else(
                    || event.at.to_string(),
                    |t| t.strftime("%H:%M:%S%.3f").to_string(),
                );
            let mut line = format!(
                "{:>8}  {at}  {:<9}  {}  {}  attempts={}",
                event.event_id,
                event.kind().as_str(),
                event.queue,
                event.id,
                event.attempts
            );
            if let Some(id) = &event.correlation_id {
                line.push_str(&format!("  correlation={id}"));
            }
            if let Some(progress) = &event.progress {
                line.push_str(&format!("  progress={}", clip(progress.get(), 80)));
            }
            if let Some(result) = &event.result {
                line.push_str(&format!("  result={}", clip(result.get(), 80)));
            }
            if let Some(error) = &event.last_error {
                line.push_str(&format!("  error={}", clip(error, 80)));
            }
            line
        }
        StreamItem::Gap(gap) => format!(
            "     gap  events {}..{} are no longer retained: re-read the state you need",
            gap.after + 1,
            gap.oldest.saturating_sub(1)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_two_units_at_most() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_500)), "12.5s");
        assert_eq!(duration(Duration::from_secs(5)), "5s");
        assert_eq!(duration(Duration::from_secs(200)), "3m 20s");
        assert_eq!(duration(Duration::from_secs(5 * 3600 + 120)), "5h 2m");
        assert_eq!(duration(Duration::from_secs(2 * 86_400)), "2d");
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn tables_align_numbers_right() {
        let mut table = Table::new(&[("NAME", Align::Left), ("N", Align::Right)]);
        table.row(vec!["a".into(), "1".into()]);
        table.row(vec!["bbbb".into(), "1,000".into()]);
        assert_eq!(table.render(), "NAME      N\na         1\nbbbb  1,000\n");
    }
}
