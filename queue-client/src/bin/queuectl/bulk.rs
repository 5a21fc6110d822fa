//! `enqueue --jsonl`: one job per line, in batches, with a progress bar.
//!
//! Lines are sent through the batch endpoint (all or nothing per batch),
//! so a batch the server refuses because of one line is sent again
//! without that line: the server names the item (`jobs[3]: …`), and that
//! line alone is refused. A batch refused as a whole for another reason
//! (too large a body, a conflict) is sent again one line at a time, so
//! that each line gets its own answer.
//!
//! The batch endpoint does not say which jobs were idempotent replays, so
//! lines that carry their own `idempotency_key` (`--lines body`) are sent
//! one at a time, whose answer says it; lines without one get a key from
//! the SDK (a retry after a lost answer never makes a second job) and are
//! always new.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use queue_client::{EnqueueOptions, EnqueueRequest, Error, TypedQueue};
use serde_json::{Value, json};

use crate::args::{EnqueueArgs, LineFormat};
use crate::context::{Ctx, job_options};
use crate::output::{self, print, print_json};
use crate::{Failure, Outcome};

/// A line to enqueue.
struct Line {
    number: u64,
    payload: Value,
    options: EnqueueOptions,
}

/// A refused line.
struct Refusal {
    line: u64,
    code: String,
    message: String,
}

/// What happened to the lines so far.
#[derive(Default)]
struct Tally {
    lines: u64,
    accepted: u64,
    replayed: u64,
    refusals: Vec<Refusal>,
}

/// The run: where jobs go, what was done, and the bar that shows it.
struct Run<'a> {
    ctx: &'a Ctx,
    queue: TypedQueue<Value>,
    tally: Tally,
    bar: ProgressBar,
}

impl Run<'_> {
    fn refuse(&mut self, line: u64, code: &str, message: String) {
        if !self.ctx.json {
            self.bar
                .suspend(|| eprintln!("line {line}: refused [{code}]: {message}"));
        }
        self.tally.refusals.push(Refusal {
            line,
            code: code.to_owned(),
            message,
        });
        self.show();
    }

    fn show(&self) {
        self.bar.set_message(format!(
            "{} accepted, {} replayed, {} refused",
            output::count(self.tally.accepted),
            output::count(self.tally.replayed),
            output::count(self.tally.refusals.len() as u64)
        ));
    }

    /// Sends one line by itself. A refusal of the line is counted; a
    /// failure to reach the server (or a wrong token) ends the run.
    async fn send_one(&mut self, line: Line) -> Result<(), Error> {
        match self.queue.enqueue_with(&line.payload, line.options).await {
            Ok(handle) if handle.replayed() => self.tally.replayed += 1,
            Ok(_) => self.tally.accepted += 1,
            Err(e) if ends_the_run(&e) => return Err(e),
            Err(e) => {
                let code = code_of(&e);
                self.refuse(line.number, &code, crate::message(&e));
            }
        }
        self.show();
        Ok(())
    }

    /// Sends a batch; see the module's docs for refusals.
    async fn send_batch(&mut self, mut lines: Vec<Line>) -> Result<(), Error> {
        // Each pass either succeeds, removes one line, or falls back to
        // single sends, so this ends within `lines.len() + 1` passes.
        while !lines.is_empty() {
            let items = lines.iter().map(|l| (&l.payload, l.options.clone()));
            match self.queue.enqueue_batch_with(items).await {
                Ok(handles) => {
                    self.tally.accepted += handles.len() as u64;
                    self.show();
                    return Ok(());
                }
                Err(e) if ends_the_run(&e) => return Err(e),
                Err(Error::InvalidRequest { message }) => match item_index(&message) {
                    Some((index, rest)) if index < lines.len() => {
                        let line = lines.remove(index);
                        self.refuse(line.number, "invalid_request", rest);
                    }
                    _ => return self.send_each(lines).await,
                },
                Err(_) => return self.send_each(lines).await,
            }
        }
        Ok(())
    }

    async fn send_each(&mut self, lines: Vec<Line>) -> Result<(), Error> {
        for line in lines {
            self.send_one(line).await?;
        }
        Ok(())
    }
}

/// Whether an error is about the server or the client, not the line: the
/// run cannot go on.
fn ends_the_run(error: &Error) -> bool {
    error.is_transient() || matches!(error, Error::Unauthorized { .. })
}

fn code_of(error: &Error) -> String {
    error
        .code()
        .map_or_else(|| "error".to_owned(), |c| c.as_str().to_owned())
}

/// The item a batch refusal names, and the message without the name:
/// `invalid max_attempts: jobs[3]: must be …` → `(3, "invalid
/// max_attempts: must be …")` (the service and the engine put the item's
/// name in different places).
fn item_index(message: &str) -> Option<(usize, String)> {
    let start = message.find("jobs[")?;
    let rest = &message[start + "jobs[".len()..];
    let (index, after) = rest.split_once("]: ")?;
    let index = index.parse().ok()?;
    Some((index, format!("{}{after}", &message[..start])))
}

/// The options of a body line: the flags', then the line's own fields.
fn body_options(base: &EnqueueOptions, body: &EnqueueRequest) -> Result<EnqueueOptions, String> {
    if body.delay_ms.is_some() && body.run_at.is_some() {
        return Err("delay_ms and run_at are exclusive".to_owned());
    }
    if body.ttl_ms.is_some() && body.expires_at.is_some() {
        return Err("ttl_ms and expires_at are exclusive".to_owned());
    }
    let at = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(ms);
    let mut options = base.clone();
    if let Some(p) = body.priority {
        options = options.priority(p);
    }
    if let Some(ms) = body.delay_ms {
        options = options.delay(Duration::from_millis(ms));
    }
    if let Some(ms) = body.run_at {
        options = options.run_at(at(ms));
    }
    if let Some(n) = body.max_attempts {
        options = options.max_attempts(n);
    }
    if let Some(ms) = body.backoff_ms {
        options = options.backoff(Duration::from_millis(ms));
    }
    if let Some(key) = &body.idempotency_key {
        options = options.idempotency_key(key);
    }
    if let Some(id) = &body.correlation_id {
        options = options.correlation_id(id);
    }
    for (key, value) in body.headers.iter().flatten() {
        options = options.header(key, value);
    }
    if let Some(url) = &body.callback_url {
        options = options.callback_url(url);
    }
    if let Some(group) = &body.group {
        options = options.group(group);
    }
    if let Some(ms) = body.timeout_ms {
        options = options.timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = body.ttl_ms {
        options = options.ttl(Duration::from_millis(ms));
    }
    if let Some(ms) = body.expires_at {
        options = options.expires_at(at(ms));
    }
    Ok(options)
}

/// A line's payload and options, and whether it carries its own key.
fn parse_line(
    format: LineFormat,
    base: &EnqueueOptions,
    text: &str,
) -> Result<(Value, EnqueueOptions, bool), String> {
    match format {
        LineFormat::Payload => serde_json::from_str::<Value>(text)
            .map(|payload| (payload, base.clone(), false))
            .map_err(|e| format!("not JSON: {e}")),
        LineFormat::Body => {
            let body: EnqueueRequest =
                serde_json::from_str(text).map_err(|e| format!("not an enqueue body: {e}"))?;
            let payload =
                serde_json::from_str(body.payload.get()).map_err(|e| format!("payload: {e}"))?;
            let options = body_options(base, &body)?;
            Ok((payload, options, body.idempotency_key.is_some()))
        }
    }
}

fn progress_bar(ctx: &Ctx, total: Option<u64>) -> ProgressBar {
    if ctx.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(bytes) => {
            let bar = ProgressBar::new(bytes);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {elapsed_precise} {binary_bytes} {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }
    }
}

/// `enqueue <queue> --jsonl FILE`.
pub async fn enqueue_lines(ctx: &Ctx, args: &EnqueueArgs, path: &Path) -> Outcome {
    let (reader, total): (Box<dyn BufRead>, Option<u64>) = if path == Path::new("-") {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let file = File::open(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        let total = file.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::new(file)), total)
    };
    let base = job_options(&args.options);
    let mut run = Run {
        ctx,
        queue: ctx.client.queue::<Value>(args.queue.as_str()),
        tally: Tally::default(),
        bar: progress_bar(ctx, total),
    };
    run.show();
    let outcome = read_and_send(&mut run, args, &base, reader).await;
    run.bar.finish_and_clear();
    // Refused as found: a bad line before a batch the server refused one
    // of. Reported in file order.
    run.tally.refusals.sort_by_key(|r| r.line);
    let tally = &run.tally;
    let summary = format!(
        "{} line(s): {} accepted, {} replayed, {} refused",
        output::count(tally.lines),
        output::count(tally.accepted),
        output::count(tally.replayed),
        output::count(tally.refusals.len() as u64)
    );
    match outcome {
        Err(failure) => {
            eprintln!("queuectl: stopped after {summary}");
            Err(failure)
        }
        Ok(()) => {
            if ctx.json {
                let errors: Vec<Value> = tally
                    .refusals
                    .iter()
                    .map(|r| json!({"line": r.line, "code": r.code, "message": r.message}))
                    .collect();
                print_json(&json!({
                    "lines": tally.lines,
                    "accepted": tally.accepted,
                    "replayed": tally.replayed,
                    "refused": tally.refusals.len(),
                    "errors": errors,
                }));
            } else {
                print(&format!("{summary}\n"));
            }
            match tally.refusals.len() {
                0 => Ok(()),
                n => Err(Failure::Partial(format!(
                    "{} of {} line(s) were refused (first: line {})",
                    output::count(n as u64),
                    output::count(tally.lines),
                    tally.refusals[0].line
                ))),
            }
        }
    }
}

async fn read_and_send(
    run: &mut Run<'_>,
    args: &EnqueueArgs,
    base: &EnqueueOptions,
    mut reader: Box<dyn BufRead>,
) -> Outcome {
    let batch_size = usize::try_from(args.batch_size).unwrap_or(1000);
    let mut batch: Vec<Line> = Vec::with_capacity(batch_size);
    let mut number: u64 = 0;
    let mut text = String::new();
    loop {
        text.clear();
        let read = reader
            .read_line(&mut text)
            .map_err(|e| Failure::Usage(format!("cannot read line {}: {e}", number + 1)))?;
        if read == 0 {
            break;
        }
        number += 1;
        run.bar.inc(read as u64);
        if text.trim().is_empty() {
            continue;
        }
        run.tally.lines += 1;
        match parse_line(args.lines, base, text.trim()) {
            Err(message) => run.refuse(number, "invalid_request", message),
            Ok((payload, options, keyed)) => {
                let line = Line {
                    number,
                    payload,
                    options,
                };
                if keyed {
                    // In order: what came before goes first.
                    run.send_batch(std::mem::take(&mut batch)).await?;
                    run.send_one(line).await?;
                } else {
                    batch.push(line);
                    if batch.len() >= batch_size {
                        run.send_batch(std::mem::take(&mut batch)).await?;
                    }
                }
            }
        }
    }
    run.send_batch(batch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refused_item_of_a_batch_is_found_in_the_message() {
        assert_eq!(
            item_index("jobs[12]: max_attempts: 0 is out of range"),
            Some((12, "max_attempts: 0 is out of range".to_owned()))
        );
        assert_eq!(
            item_index("invalid max_attempts: jobs[1]: must be in 1..=1000"),
            Some((1, "invalid max_attempts: must be in 1..=1000".to_owned()))
        );
        assert_eq!(item_index("queue name: bad"), None);
    }

    #[test]
    fn a_body_line_keeps_its_own_fields_over_the_flags() {
        let base = EnqueueOptions::new().priority(1).max_attempts(3);
        let (payload, options, keyed) = parse_line(
            LineFormat::Body,
            &base,
            r#"{"payload": {"n": 1}, "priority": 9, "idempotency_key": "k"}"#,
        )
        .unwrap();
        assert_eq!(payload, json!({"n": 1}));
        assert!(keyed);
        assert_eq!(
            options,
            EnqueueOptions::new()
                .priority(9)
                .max_attempts(3)
                .idempotency_key("k")
        );
        let refused = parse_line(LineFormat::Body, &base, r#"{"payload": 1, "prority": 2}"#);
        assert!(refused.unwrap_err().contains("prority"));
        let both = parse_line(
            LineFormat::Body,
            &base,
            r#"{"payload": 1, "delay_ms": 2, "run_at": 3}"#,
        );
        assert!(both.unwrap_err().contains("exclusive"));
    }
}
