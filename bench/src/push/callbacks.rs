//! Part 2 of `bench push`: jobs with a `callback_url`, drained while the
//! server delivers their callbacks to the bench's [`Receiver`]; then the
//! checks (every callback in, the server's view, signatures).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, ensure};
use queue_core::Durability;
use queue_server::ServerConfig;
use serde::Deserialize;
use tokio::runtime::Runtime;

use super::receiver::{self, Receiver};
use super::{
    JOB_SAMPLE, Op, Plan, PushRow, SERVER_THREAD, SETTLE_WAIT, STALL_GRACE, ThreadCpu,
    enqueue_phase, get_json, phase, secret,
};
use crate::http::Server;
use crate::stats::Summary;

/// A page of `GET /v1/callbacks`.
#[derive(Debug, Deserialize)]
struct CallbackPage {
    jobs: Vec<CallbackJob>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallbackJob {
    id: String,
    #[serde(default)]
    callback: Option<CallbackInfo>,
}

#[derive(Debug, Deserialize)]
struct CallbackInfo {
    state: String,
    attempts: u32,
}

/// Part 2: enqueue with `callback_url`, drain, and the deliveries.
pub(super) fn callbacks(
    plan: &Plan,
    config: &ServerConfig,
    client: &Runtime,
) -> anyhow::Result<(Vec<PushRow>, Vec<String>)> {
    let receiver = Receiver::start()?;
    let server = match Server::start_with(&plan.parent, Durability::Sync, config.clone()) {
        Ok(server) => server,
        Err(e) => {
            receiver.stop();
            return Err(e);
        }
    };
    let outcome = callbacks_on(plan, client, &server, &receiver);
    let stopped = server.stop();
    receiver.stop();
    let outcome = outcome?;
    stopped.context("stopping the server")?;
    Ok(outcome)
}

fn callbacks_on(
    plan: &Plan,
    client: &Runtime,
    server: &Server,
    receiver: &Receiver,
) -> anyhow::Result<(Vec<PushRow>, Vec<String>)> {
    let queue = "push-callbacks".to_owned();
    let extra = format!(
        r#","callback_url":{}"#,
        serde_json::to_string(&receiver.url())?
    );
    let body = Arc::new(plan.enqueue_body(&extra));
    let c = plan.connections;
    let enqueue = enqueue_phase(plan, client, server.addr, &queue, body)?;
    let enqueued = enqueue.acks.len();

    let receiver_cpu = ThreadCpu::start(receiver::THREAD);
    let server_cpu = ThreadCpu::start(SERVER_THREAD);
    let drain = phase(
        client,
        server.addr,
        c,
        enqueued,
        plan.limit,
        &Op::Drain {
            queue: queue.clone(),
        },
    )
    .context("drain")?;
    let completed = drain.acks.len();
    // Every completed job's callback, within the time limit from the
    // drain's start (plus the grace).
    let mut distinct = receiver.distinct();
    let give_up = drain.started + plan.limit + STALL_GRACE;
    let all_in = client.block_on(async {
        tokio::time::timeout_at(
            tokio::time::Instant::from_std(give_up),
            distinct.wait_for(|d| *d >= completed),
        )
        .await
        .is_ok()
    });
    let waited = drain.started.elapsed();
    let receiver_share = receiver_cpu.share(waited);
    let server_share = server_cpu.share(waited);
    let seen = receiver.take();
    ensure!(
        seen.bad.is_empty(),
        "the receiver got {} requests that were not job.completed callbacks, first: {}",
        seen.bad.len(),
        seen.bad[0]
    );

    // The first arrival of each job's callback.
    let completed_at: HashMap<u64, Instant> = drain.acks.iter().copied().collect();
    let mut first: HashMap<u64, Instant> = HashMap::with_capacity(completed);
    for &(job, at) in &seen.arrivals {
        ensure!(
            completed_at.contains_key(&job),
            "a callback arrived for job {job:016x}, which the drain did not complete"
        );
        first
            .entry(job)
            .and_modify(|seen| *seen = (*seen).min(at))
            .or_insert(at);
    }
    let duplicates = seen.arrivals.len() - first.len();
    let missing: Vec<u64> = completed_at
        .keys()
        .filter(|job| !first.contains_key(job))
        .copied()
        .collect();
    ensure!(
        all_in && missing.is_empty(),
        "{} of {completed} completed jobs had no callback {} s after the drain started (first \
         missing: {:016x})",
        missing.len(),
        give_up.duration_since(drain.started).as_secs(),
        missing.first().copied().unwrap_or_default()
    );
    let mut early = 0usize;
    let latencies: Vec<Duration> = first
        .iter()
        .map(|(job, at)| {
            let done = completed_at[job];
            if *at < done {
                early += 1;
            }
            at.saturating_duration_since(done)
        })
        .collect();
    let first_done = drain
        .acks
        .iter()
        .map(|(_, at)| *at)
        .min()
        .unwrap_or(drain.started);
    let last_callback = first.values().copied().max().unwrap_or(first_done);
    let delivery = PushRow {
        part: "callbacks".to_owned(),
        phase: "delivery",
        conns: plan.callback_concurrency,
        subscribers: None,
        count: first.len(),
        target: completed,
        elapsed: last_callback.saturating_duration_since(first_done),
        latency: Summary::of(latencies),
        notes: format!(
            "duplicates {duplicates}, early {early}; CPU (drain start to last callback): \
             receiver {receiver_share}, server {server_share}"
        ),
    };

    // The server's view: every delivery recorded as delivered.
    let (listed, listing) = wait_listed_delivered(client, server.addr, completed)?;
    for state in ["pending", "failed"] {
        let page: CallbackPage = client.block_on(get_json(
            server.addr,
            &format!("/v1/callbacks?state={state}&limit=10"),
        ))?;
        ensure!(
            page.jobs.is_empty(),
            "GET /v1/callbacks?state={state} lists {} jobs (first {}), expected none",
            page.jobs.len(),
            page.jobs[0].id
        );
    }
    let step = (completed / JOB_SAMPLE).max(1);
    let mut sampled = 0;
    for &(job, _) in drain.acks.iter().step_by(step).take(JOB_SAMPLE) {
        let object: CallbackJob =
            client.block_on(get_json(server.addr, &format!("/v1/jobs/{job:016x}")))?;
        let info = object
            .callback
            .with_context(|| format!("job {job:016x} has no callback object"))?;
        ensure!(
            info.state == "delivered" && info.attempts >= 1,
            "job {job:016x}: callback {} after {} attempts, expected delivered",
            info.state,
            info.attempts
        );
        sampled += 1;
    }
    // Signatures, checked outside the clock.
    let secrets = [secret()?];
    for (i, delivery) in seen.samples.iter().enumerate() {
        queue_proto::webhooks::verify(
            &secrets,
            &delivery.headers,
            &delivery.body,
            SystemTime::now(),
        )
        .map_err(|e| anyhow!("delivery {i}: the signature does not verify: {e}"))?;
    }
    let note = format!(
        "callbacks checked: {completed} completed jobs, {} callbacks received ({} distinct jobs, \
         {duplicates} duplicates), none missing or unexpected; GET /v1/callbacks?state=delivered \
         lists {listed} (paged, {} ms after the last callback arrived), none pending or failed; \
         {sampled} job objects say delivered; {} signatures verified.",
        seen.arrivals.len(),
        first.len(),
        listing.as_millis(),
        seen.samples.len()
    );
    Ok((
        vec![
            enqueue.row("callbacks", "enqueue", c, None, plan.jobs),
            drain.row("callbacks", "drain", c, None, enqueued),
            delivery,
        ],
        vec![note],
    ))
}

/// Pages `GET /v1/callbacks?state=delivered` until it lists `n` jobs (the
/// server records a delivery after the receiver's answer), for at most
/// [`SETTLE_WAIT`]. Returns the count and how long it took.
fn wait_listed_delivered(
    client: &Runtime,
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    loop {
        let mut listed = 0;
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(after) => format!("/v1/callbacks?state=delivered&limit=1000&after={after}"),
                None => "/v1/callbacks?state=delivered&limit=1000".to_owned(),
            };
            let page: CallbackPage = client.block_on(get_json(addr, &path))?;
            for job in &page.jobs {
                let state = job.callback.as_ref().map(|c| c.state.as_str());
                ensure!(
                    state == Some("delivered"),
                    "GET /v1/callbacks?state=delivered lists job {} with callback {state:?}",
                    job.id
                );
            }
            listed += page.jobs.len();
            match page.next {
                Some(next) if !page.jobs.is_empty() => after = Some(next),
                _ => break,
            }
        }
        if listed >= n {
            ensure!(
                listed == n,
                "GET /v1/callbacks?state=delivered lists {listed} jobs, {n} were completed"
            );
            return Ok((listed, started.elapsed()));
        }
        ensure!(
            started.elapsed() < SETTLE_WAIT,
            "GET /v1/callbacks?state=delivered lists {listed} of {n} jobs {} s after every \
             callback arrived",
            SETTLE_WAIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
