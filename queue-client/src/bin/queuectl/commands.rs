//! One function per command, each on the SDK's `Client`.

use std::future::Future;
use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use queue_client::{
    Client, ClientOptions, EventFilter, EventStream, HistoryQuery, Job, JobId, JobPage, Limits,
    QueueStats, StreamItem,
};
use serde_json::{Value, json};

use crate::args::{
    CallbackCommand, Cli, Command, DeadCommand, EnqueueArgs, JobsArgs, LimitsArgs, Paging,
    PutSchedule, ScheduleCommand, TailArgs,
};
use crate::context::{Ctx, job_options};
use crate::output::{self, print, print_json};
use crate::parse::Setting;
use crate::{Failure, Outcome, bulk};

/// Runs the command line's command.
pub async fn run(cli: Cli) -> Outcome {
    let Cli {
        url,
        token,
        json,
        timeout,
        command,
    } = cli;
    if let Command::Completions { shell } = command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "queuectl", &mut std::io::stdout());
        return Ok(());
    }
    let mut options = ClientOptions::new()
        .request_timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)));
    if let Some(token) = token {
        options = options.token(token);
    }
    let ctx = Ctx {
        client: Client::connect_with(&url, options)?,
        json,
        timeout,
    };
    match command {
        Command::Enqueue(args) => enqueue(&ctx, *args).await,
        Command::Get { id } => get(&ctx, &id).await,
        Command::Wait { id } => wait(&ctx, &id).await,
        Command::Cancel { id } => cancel(&ctx, &id).await,
        Command::Events { id } => job_events(&ctx, &id).await,
        Command::Jobs(args) => jobs(&ctx, args).await,
        Command::Stats { queue } => stats(&ctx, queue.as_deref()).await,
        Command::Pause { queue } => {
            let stats = ctx.client.pause(&queue).await?;
            show_stats(&ctx, &stats, &format!("queue {queue} is paused"));
            Ok(())
        }
        Command::Resume { queue } => {
            let stats = ctx.client.resume(&queue).await?;
            show_stats(&ctx, &stats, &format!("queue {queue} is leasing again"));
            Ok(())
        }
        Command::Limits(args) => limits(&ctx, args).await,
        Command::Dead(command) => dead(&ctx, command).await,
        Command::Schedules(command) => schedules(&ctx, command).await,
        Command::Tail(args) => tail(&ctx, args).await,
        Command::History {
            queue,
            from,
            to,
            step,
        } => {
            let query = HistoryQuery { from, to, step };
            let history = ctx.client.history(&queue, &query).await?;
            if ctx.json {
                print_json(&history);
            } else {
                print(&output::history_table(&history));
            }
            Ok(())
        }
        Command::Callbacks(command) => callbacks(&ctx, command).await,
        Command::Completions { .. } => Ok(()),
    }
}

/// A payload: the argument's JSON, `-` for stdin, or a file's.
pub fn read_payload(arg: Option<&str>, file: Option<&Path>) -> Result<Option<Value>, Failure> {
    let (text, source) = match (arg, file) {
        (Some("-"), _) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Usage(format!("cannot read the payload from stdin: {e}")))?;
            (text, "stdin".to_owned())
        }
        (Some(text), _) => (text.to_owned(), "the payload argument".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            (text, path.display().to_string())
        }
        (None, None) => return Ok(None),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Failure::Usage(format!("{source} is not JSON: {e}")))
}

fn show_job(ctx: &Ctx, job: &Job<Value>) {
    if ctx.json {
        print_json(job);
    } else {
        print(&output::job_details(job));
    }
}

async fn enqueue(ctx: &Ctx, args: EnqueueArgs) -> Outcome {
    if let Some(path) = &args.jsonl {
        return bulk::enqueue_lines(ctx, &args, path).await;
    }
    let payload =
        read_payload(args.payload.as_deref(), args.file.as_deref())?.ok_or_else(|| {
            Failure::Usage(
                "give the payload: as an argument (JSON), with --file, `-` for stdin, or many \
             with --jsonl"
                    .to_owned(),
            )
        })?;
    let mut options = job_options(&args.options);
    if let Some(key) = &args.idempotency_key {
        options = options.idempotency_key(key);
    }
    let queue = ctx.client.queue::<Value>(args.queue.as_str());
    let handle = queue.enqueue_with(&payload, options).await?;
    let Some(patience) = args.wait else {
        let job = handle.get().await?;
        if ctx.json {
            print_json(&job);
        } else if handle.replayed() {
            print(&format!(
                "job {} already had this idempotency key in queue {}: nothing enqueued ({})\n",
                job.id, job.queue, job.state
            ));
        } else {
            print(&format!(
                "enqueued job {} in queue {} ({})\n",
                job.id, job.queue, job.state
            ));
        }
        return Ok(());
    };
    let outcome = handle.wait::<Value>(patience).await;
    finish_wait(ctx, handle.id(), outcome).await
}

/// Shows the job a wait was about and turns the wait's outcome into the
/// command's.
async fn finish_wait(ctx: &Ctx, id: &JobId, outcome: queue_client::Result<Value>) -> Outcome {
    match outcome {
        Ok(_)
        | Err(
            queue_client::Error::JobTimedOut { .. }
            | queue_client::Error::JobFailed { .. }
            | queue_client::Error::JobCancelled { .. },
        ) => {
            let job = ctx.client.job::<Value>(id.clone()).get().await?;
            show_job(ctx, &job);
            outcome.map(|_| ()).map_err(Failure::from)
        }
        Err(other) => Err(other.into()),
    }
}

async fn get(ctx: &Ctx, id: &str) -> Outcome {
    let job = ctx.client.job::<Value>(id).get().await?;
    show_job(ctx, &job);
    Ok(())
}

async fn wait(ctx: &Ctx, id: &str) -> Outcome {
    let handle = ctx.client.job::<Value>(id);
    let outcome = handle.wait::<Value>(ctx.timeout).await;
    finish_wait(ctx, handle.id(), outcome).await
}

async fn cancel(ctx: &Ctx, id: &str) -> Outcome {
    let handle = ctx.client.job::<Value>(id);
    handle.cancel().await?;
    if ctx.json {
        print_json(&handle.get().await?);
    } else {
        print(&format!("cancelled job {id}\n"));
    }
    Ok(())
}

fn show_item(ctx: &Ctx, item: &StreamItem) {
    if ctx.json {
        print_json(&output::item_json(item));
    } else {
        print(&format!("{}\n", output::item_line(item)));
    }
}

async fn job_events(ctx: &Ctx, id: &str) -> Outcome {
    let mut events = ctx.client.job::<Value>(id).events().await?;
    follow(ctx, &mut events, None).await
}

/// Prints a stream's items until it ends, `count` events were printed or
/// the user interrupts (Ctrl-C). The stream reconnects by itself after a
/// dropped connection; an error it passes on and goes on after (an event
/// that does not decode, or is too large) is a warning; one it ends with
/// (the server refused to resume, e.g. a token revoked) is the outcome.
async fn follow(ctx: &Ctx, events: &mut EventStream, count: Option<u64>) -> Outcome {
    let mut seen: u64 = 0;
    let mut pending: Option<queue_client::Error> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if count.is_some_and(|n| seen >= n) {
            break;
        }
        let item = tokio::select! {
            item = events.next() => item,
            _ = &mut interrupted => break,
        };
        match item {
            None => return pending.map_or(Ok(()), |e| Err(e.into())),
            Some(Ok(item)) => {
                if let Some(e) = pending.take() {
                    eprintln!("queuectl: warning: {e}");
                }
                if matches!(item, StreamItem::Event(_)) {
                    seen += 1;
                }
                show_item(ctx, &item);
            }
            Some(Err(e)) => {
                if let Some(earlier) = pending.replace(e) {
                    eprintln!("queuectl: warning: {earlier}");
                }
            }
        }
    }
    if let Some(e) = pending {
        eprintln!("queuectl: warning: {e}");
    }
    Ok(())
}

fn show_stats(ctx: &Ctx, stats: &QueueStats, headline: &str) {
    if ctx.json {
        print_json(stats);
    } else {
        print(&format!(
            "{headline}\n{}",
            output::stats_table(std::slice::from_ref(stats))
        ));
    }
}

async fn stats(ctx: &Ctx, queue: Option<&str>) -> Outcome {
    match queue {
        Some(queue) => {
            let stats = ctx.client.stats(queue).await?;
            if ctx.json {
                print_json(&stats);
            } else {
                print(&output::stats_table(std::slice::from_ref(&stats)));
            }
        }
        None => {
            let queues = ctx.client.queues().await?;
            if ctx.json {
                print_json(&json!({ "queues": queues }));
            } else {
                print(&output::stats_table(&queues));
            }
        }
    }
    Ok(())
}

async fn limits(ctx: &Ctx, args: LimitsArgs) -> Outcome {
    let mut change = Limits::new();
    let mut changed = false;
    if let Some(setting) = args.max_leased {
        changed = true;
        change = match setting {
            Setting::Set(n) => change.max_leased(n),
            Setting::Remove => change.no_max_leased(),
        };
    }
    if let Some(setting) = args.rate {
        changed = true;
        change = match setting {
            Setting::Set((jobs, per)) => change.rate_limit(jobs, per),
            Setting::Remove => change.no_rate_limit(),
        };
    }
    if let Some(setting) = args.group_max_leased {
        changed = true;
        change = match setting {
            Setting::Set(n) => change.group_max_leased(n),
            Setting::Remove => change.no_group_max_leased(),
        };
    }
    let stats = if changed {
        ctx.client.set_limits(&args.queue, &change).await?
    } else {
        ctx.client.stats(&args.queue).await?
    };
    if ctx.json {
        print_json(&stats.limits);
        return Ok(());
    }
    let limits = stats.limits;
    let or_none = |n: Option<u32>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
    let rate = limits.rate_limit.map_or_else(
        || "none".to_owned(),
        |r| {
            format!(
                "{} jobs per {}",
                r.jobs,
                output::duration(Duration::from_millis(r.per_ms))
            )
        },
    );
    print(&format!(
        "queue             {}\nmax_leased        {}\nrate_limit        {rate}\ngroup_max_leased  {}\n",
        stats.queue,
        or_none(limits.max_leased),
        or_none(limits.group_max_leased),
    ));
    Ok(())
}

/// Prints a listing: one page (the API's `{"jobs", "next"}` with --json),
/// or with `--all` every page (JSON lines with --json).
async fn list<F, Fut>(
    ctx: &Ctx,
    paging: &Paging,
    empty: &str,
    table: fn(&[Job<Value>]) -> String,
    mut fetch: F,
) -> Outcome
where
    F: FnMut(Option<JobId>, u32) -> Fut,
    Fut: Future<Output = queue_client::Result<JobPage<Value>>>,
{
    let mut after = paging.after.clone().map(JobId::from);
    if !paging.all {
        let page = fetch(after, paging.limit).await?;
        if ctx.json {
            print_json(&json!({"jobs": page.jobs, "next": page.next.as_ref().map(JobId::as_str)}));
        } else {
            if page.jobs.is_empty() {
                print(&format!("{empty}\n"));
            } else {
                print(&table(&page.jobs));
            }
            // A page may be short (even empty) and still not the last.
            if let Some(next) = page.next {
                print(&format!(
                    "more after this page: add --after {next} (or --all)\n"
                ));
            }
        }
        return Ok(());
    }
    let mut all = Vec::new();
    loop {
        let page = fetch(after.take(), paging.limit).await?;
        if ctx.json {
            for job in &page.jobs {
                print_json(job);
            }
        } else {
            all.extend(page.jobs);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if !ctx.json {
        if all.is_empty() {
            print(&format!("{empty}\n"));
        } else {
            print(&table(&all));
        }
    }
    Ok(())
}

async fn jobs(ctx: &Ctx, args: JobsArgs) -> Outcome {
    let client = &ctx.client;
    match (args.queue, args.state, args.correlation_id) {
        (Some(queue), Some(state), None) => {
            let queue = queue.as_str();
            list(
                ctx,
                &args.paging,
                &format!("no {state} jobs in queue {queue}"),
                output::jobs_table,
                |after, limit| async move { client.jobs(queue, state, after.as_ref(), limit).await },
            )
            .await
        }
        (None, None, Some(id)) => {
            let id = id.as_str();
            list(
                ctx,
                &args.paging,
                &format!("no stored job has correlation id {id}"),
                output::jobs_table,
                |after, limit| async move {
                    client.jobs_by_correlation(id, after.as_ref(), limit).await
                },
            )
            .await
        }
        _ => Err(Failure::Usage(
            "give a queue and --state, or --correlation-id".to_owned(),
        )),
    }
}

/// Asks `question` on the terminal unless `yes`; refuses when nobody can
/// answer.
fn confirm(question: &str, yes: bool) -> Outcome {
    if yes {
        return Ok(());
    }
    if !crate::stdin_is_terminal() {
        return Err(Failure::Usage(format!(
            "{question} Refusing without --yes: stdin is not a terminal to ask on. Nothing \
             was changed."
        )));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::Usage(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::Usage(
            "not confirmed: nothing was changed".to_owned(),
        ))
    }
}

async fn dead(ctx: &Ctx, command: DeadCommand) -> Outcome {
    match command {
        DeadCommand::List { queue, paging } => {
            let client = &ctx.client;
            let queue = queue.as_str();
            list(
                ctx,
                &paging,
                &format!("no dead jobs in queue {queue}"),
                output::jobs_table,
                |after, limit| async move { client.dead_letters(queue, after.as_ref(), limit).await },
            )
            .await
        }
        DeadCommand::Requeue {
            queue,
            ids,
            all,
            yes,
        } => {
            let requeued = if all {
                let dead = ctx.client.stats(&queue).await?.dead;
                confirm(
                    &format!(
                        "Requeue every dead job of queue {queue} ({} now)?",
                        output::count(dead)
                    ),
                    yes,
                )?;
                ctx.client.requeue_dead(&queue, None).await?
            } else {
                let ids: Vec<JobId> = ids.into_iter().map(JobId::from).collect();
                let mut requeued = 0;
                for chunk in ids.chunks(1000) {
                    requeued += ctx.client.requeue_dead(&queue, Some(chunk)).await?;
                }
                requeued
            };
            if ctx.json {
                print_json(&json!({ "requeued": requeued }));
            } else {
                print(&format!(
                    "requeued {} dead job(s) of queue {queue}\n",
                    output::count(requeued)
                ));
            }
            Ok(())
        }
        DeadCommand::Purge { queue, yes } => {
            let dead = ctx.client.stats(&queue).await?.dead;
            confirm(
                &format!(
                    "Delete every dead job of queue {queue} ({} now) for good?",
                    output::count(dead)
                ),
                yes,
            )?;
            let deleted = ctx.client.purge_dead(&queue).await?;
            if ctx.json {
                print_json(&json!({ "deleted": deleted }));
            } else {
                print(&format!(
                    "deleted {} dead job(s) of queue {queue}\n",
                    output::count(deleted)
                ));
            }
            Ok(())
        }
    }
}

fn show_schedule(ctx: &Ctx, schedule: &queue_client::Schedule) {
    if ctx.json {
        print_json(&output::schedule_json(schedule));
    } else {
        print(&output::schedule_details(schedule));
    }
}

async fn schedules(ctx: &Ctx, command: ScheduleCommand) -> Outcome {
    let client = &ctx.client;
    match command {
        ScheduleCommand::List => {
            let schedules = client.schedules().await?;
            if ctx.json {
                let list: Vec<Value> = schedules.iter().map(output::schedule_json).collect();
                print_json(&json!({ "schedules": list }));
            } else {
                print(&output::schedules_table(&schedules));
            }
        }
        ScheduleCommand::Get { name } => show_schedule(ctx, &client.get_schedule(&name).await?),
        ScheduleCommand::Put(put) => {
            let PutSchedule {
                name,
                queue,
                when,
                timezone,
                catch_up,
                paused,
                payload,
                file,
                options,
            } = *put;
            let payload = read_payload(payload.as_deref(), file.as_deref())?.unwrap_or(Value::Null);
            let mut builder = client
                .schedule(name.as_str())
                .options(job_options(&options));
            if let Some(cron) = when.cron {
                builder = builder.cron(cron);
            }
            if let Some(every) = when.every {
                builder = builder.every(every);
            }
            if let Some(zone) = timezone {
                builder = builder.timezone(zone);
            }
            if let Some(catch_up) = catch_up {
                builder = builder.catch_up(catch_up.into());
            }
            if let Some(queue) = queue {
                builder = builder.queue(queue);
            }
            let schedule = builder.paused(paused).job(&payload).put().await?;
            show_schedule(ctx, &schedule);
        }
        ScheduleCommand::Delete { name } => {
            show_schedule(ctx, &client.delete_schedule(&name).await?);
        }
        ScheduleCommand::Pause { name } => {
            show_schedule(ctx, &client.pause_schedule(&name).await?);
        }
        ScheduleCommand::Resume { name } => {
            show_schedule(ctx, &client.resume_schedule(&name).await?);
        }
        ScheduleCommand::Trigger { name } => {
            let handle = client.trigger_schedule::<Value>(&name).await?;
            let job = handle.get().await?;
            if ctx.json {
                print_json(&job);
            } else {
                print(&format!(
                    "schedule {name} enqueued job {} in queue {} ({})\n",
                    job.id, job.queue, job.state
                ));
            }
        }
    }
    Ok(())
}

async fn tail(ctx: &Ctx, args: TailArgs) -> Outcome {
    let mut filter = EventFilter::new();
    for queue in args.queues {
        filter = filter.queue(queue);
    }
    if let Some(job) = args.job {
        filter = filter.job(job);
    }
    for kind in args.types {
        filter = filter.event_type(kind);
    }
    if let Some(after) = args.after {
        filter = filter.after(after);
    }
    let mut events = ctx.client.events(filter).await?;
    let outcome = follow(ctx, &mut events, args.count).await;
    match events.last_event_id() {
        Some(id) => eprintln!("last event id: {id} (resume with: queuectl tail --after {id})"),
        None => eprintln!("no events seen"),
    }
    outcome
}

async fn callbacks(ctx: &Ctx, command: CallbackCommand) -> Outcome {
    let client = &ctx.client;
    match command {
        CallbackCommand::List { state, paging } => {
            list(
                ctx,
                &paging,
                &format!("no jobs with a {} callback", state.as_str()),
                output::callbacks_table,
                |after, limit| async move { client.callbacks(state, after.as_ref(), limit).await },
            )
            .await
        }
        CallbackCommand::Retry { id } => {
            let job = client.retry_callback(&JobId::from(id)).await?;
            if ctx.json {
                print_json(&job);
            } else {
                let state = job
                    .callback
                    .as_ref()
                    .map_or("pending", |c| c.state.as_str());
                print(&format!(
                    "job {}: a new delivery of its callback to {} starts now ({state})\n",
                    job.id,
                    job.callback_url.as_deref().unwrap_or("-"),
                ));
            }
            Ok(())
        }
    }
}
