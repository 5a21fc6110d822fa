//! Part 3 of `bench push`: S subscribers on `GET /v1/events?queue=…`
//! while a producer enqueues M jobs on that queue; the events' arrival at
//! every subscriber, matched to the enqueue responses by job id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use queue_core::Durability;
use queue_server::ServerConfig;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, watch};

use super::sse;
use super::{
    CONNECT_TIMEOUT, CONNECTING_AT_ONCE, Op, Plan, PushRow, SERVER_THREAD, STALL_GRACE,
    SUBSCRIBER_THREAD, ThreadCpu, job_number, phase,
};
use crate::client;
use crate::http::Server;
use crate::stats::{Latency, Summary};

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Subscribed {
    /// Per event: its job and when it arrived.
    events: Vec<(u64, Instant)>,
    /// Keep-alive comments seen.
    keep_alives: usize,
    /// What went wrong, if anything (its events so far are kept).
    error: Option<String>,
}

/// The part of an event's data a subscriber reads.
#[derive(Deserialize)]
struct EventRef<'a> {
    event_id: u64,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// An event stream, open: its opening frame has been read.
struct Opened {
    stream: TcpStream,
    body: Body,
    /// Holds whatever arrived after the opening frame.
    frames: sse::FrameReader,
    /// The event id the stream opened at (`id:` of its opening frame).
    position: u64,
}

/// Opens `GET path` as an event stream on `addr` and reads up to its
/// opening frame (`: connected`, `id: <position>`).
async fn open_stream(addr: SocketAddr, path: &str) -> anyhow::Result<Opened> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let get = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(get.as_bytes()).await?;
    let mut raw = Vec::with_capacity(4096);
    let head = loop {
        if let Some(head) = sse::parse_stream_head(&raw)? {
            break head;
        }
        let read = stream.read_buf(&mut raw).await?;
        ensure!(read > 0, "the server closed the stream before its head");
    };
    let mut body = Body::new(head.chunked);
    let mut frames = sse::FrameReader::default();
    body.feed(&raw[head.head_len..], frames.buffer())?;
    // The stream opens with `: connected` and the position.
    loop {
        if let Some(frame) = frames.next_frame()? {
            ensure!(
                frame.comments.iter().any(|c| c == "connected") && frame.event.is_none(),
                "the stream did not open with `: connected`: {frame:?}"
            );
            let position = frame.id.as_deref().unwrap_or_default();
            let position = position
                .parse::<u64>()
                .with_context(|| format!("the opening frame's id {position:?}"))?;
            return Ok(Opened {
                stream,
                body,
                frames,
                position,
            });
        }
        raw.clear();
        let read = stream.read_buf(&mut raw).await?;
        ensure!(read > 0, "the server closed the stream before it opened");
        body.feed(&raw, frames.buffer())?;
    }
}

/// An event stream's body coding.
enum Body {
    Chunked(sse::Dechunker),
    /// Until the connection closes.
    Plain,
}

impl Body {
    fn new(chunked: bool) -> Body {
        if chunked {
            Body::Chunked(sse::Dechunker::default())
        } else {
            Body::Plain
        }
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        match self {
            Body::Chunked(decoder) => decoder.feed(input, out),
            Body::Plain => {
                out.extend_from_slice(input);
                Ok(())
            }
        }
    }

    fn ended(&self) -> bool {
        matches!(self, Body::Chunked(decoder) if decoder.done())
    }
}

/// Reads events from an opened stream until `expected` (once known) have
/// arrived, `stop` turns true, or something is wrong.
async fn subscriber(
    mut opened: Opened,
    mut expected: watch::Receiver<Option<usize>>,
    mut stop: watch::Receiver<bool>,
    capacity: usize,
) -> Subscribed {
    let mut seen = Subscribed {
        events: Vec::with_capacity(capacity),
        ..Subscribed::default()
    };
    let mut raw = Vec::with_capacity(64 * 1024);
    let mut last_event = opened.position;
    // Frames that came with the opening one arrived before now.
    let mut at = Instant::now();
    let outcome: anyhow::Result<()> = async {
        loop {
            while let Some(frame) = opened.frames.next_frame()? {
                let Some(kind) = frame.event.as_deref() else {
                    if frame.comments.iter().any(|c| c == "keep-alive") {
                        seen.keep_alives += 1;
                    }
                    continue;
                };
                ensure!(kind != "gap", "a gap event: {:?}", frame.data);
                let data = frame.data.as_deref().unwrap_or_default();
                let event: EventRef<'_> = serde_json::from_str(data)
                    .with_context(|| format!("a {kind} event's data: {data}"))?;
                ensure!(
                    frame.id.as_deref() == Some(event.event_id.to_string().as_str()),
                    "event {} came with id: {:?}",
                    event.event_id,
                    frame.id
                );
                ensure!(
                    event.event_id > last_event,
                    "event {} after event {last_event}: out of order",
                    event.event_id
                );
                last_event = event.event_id;
                seen.events.push((job_number(&event.id)?, at));
            }
            let wanted = *expected.borrow_and_update();
            if wanted.is_some_and(|n| seen.events.len() >= n) {
                return Ok(());
            }
            ensure!(!opened.body.ended(), "the server ended the stream");
            raw.clear();
            let read = tokio::select! {
                read = opened.stream.read_buf(&mut raw) => read?,
                changed = expected.changed() => {
                    changed.context("the producer went away")?;
                    continue;
                }
                _ = stop.wait_for(|s| *s) => bail!("stopped by the time limit"),
            };
            at = Instant::now();
            ensure!(read > 0, "the server closed the stream");
            opened.body.feed(&raw, opened.frames.buffer())?;
        }
    }
    .await;
    if let Err(e) = outcome {
        seen.error = Some(format!("{e:#}"));
    }
    seen
}

/// Part 3: S subscribers while the producer enqueues M jobs.
pub(super) fn fanout(
    plan: &Plan,
    config: &ServerConfig,
    client: &Runtime,
    s: usize,
) -> anyhow::Result<Vec<PushRow>> {
    let server = Server::start_with(&plan.parent, Durability::Sync, config.clone())?;
    let subscribers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(SUBSCRIBER_THREAD)
        .build()
        .context("building the subscribers' runtime");
    let outcome = match subscribers {
        Ok(runtime) => {
            let outcome = fanout_on(plan, client, &server, &runtime, s);
            runtime.shutdown_timeout(Duration::from_secs(5));
            outcome
        }
        Err(e) => Err(e),
    };
    let stopped = server.stop();
    let rows = outcome?;
    stopped.context("stopping the server")?;
    Ok(rows)
}

fn fanout_on(
    plan: &Plan,
    client: &Runtime,
    server: &Server,
    subscribers: &Runtime,
    s: usize,
) -> anyhow::Result<Vec<PushRow>> {
    let queue = format!("push-fanout-s{s}");
    let path = format!("/v1/events?queue={}", client::path_segment(&queue));
    let addr = server.addr;
    let (expected_tx, expected) = watch::channel(None::<usize>);
    let (stop_tx, stop) = watch::channel(false);
    // Streams opened, and subscribers that failed to open theirs.
    let (opened_tx, mut opened) = watch::channel((0usize, 0usize));
    let opened_tx = Arc::new(opened_tx);
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));

    // Connect every subscriber (a few at a time) before the clock starts.
    let mut handles = Vec::with_capacity(s);
    for _ in 0..s {
        let (path, expected, stop) = (path.clone(), expected.clone(), stop.clone());
        let (opened_tx, connecting) = (Arc::clone(&opened_tx), Arc::clone(&connecting));
        let capacity = plan.fanout_jobs;
        handles.push(subscribers.spawn(async move {
            let permit = connecting.acquire_owned().await;
            let open = tokio::time::timeout(CONNECT_TIMEOUT, open_stream(addr, &path)).await;
            drop(permit);
            let error = match open {
                Ok(Ok(open)) => {
                    opened_tx.send_modify(|(n, _)| *n += 1);
                    return subscriber(open, expected, stop, capacity).await;
                }
                Ok(Err(e)) => format!("opening the stream: {e:#}"),
                Err(_) => format!(
                    "the stream did not open within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            };
            opened_tx.send_modify(|(_, failed)| *failed += 1);
            Subscribed {
                error: Some(error),
                ..Subscribed::default()
            }
        }));
    }
    let connect_started = Instant::now();
    let settled = client.block_on(async {
        tokio::time::timeout(
            CONNECT_TIMEOUT + STALL_GRACE,
            opened.wait_for(|(n, failed)| n + failed >= s),
        )
        .await
        .is_ok()
    });
    let connect_time = connect_started.elapsed();
    let (open, _) = *opened.borrow();
    if !settled || open < s {
        let _ = stop_tx.send(true);
        let outcomes = join_subscribers(client, handles);
        let first_error = outcomes.iter().find_map(|o| o.error.clone());
        bail!(
            "only {open} of {s} subscribers opened their stream within {} s (first error: {})",
            (CONNECT_TIMEOUT + STALL_GRACE).as_secs(),
            first_error.unwrap_or_else(|| "none".to_owned())
        );
    }

    let subscriber_cpu = ThreadCpu::start(SUBSCRIBER_THREAD);
    let server_cpu = ThreadCpu::start(SERVER_THREAD);
    let body = Arc::new(plan.enqueue_body(""));
    let produced = phase(
        client,
        addr,
        plan.producers,
        plan.fanout_jobs,
        plan.limit,
        &Op::Enqueue {
            queue: queue.clone(),
            body,
        },
    );
    let produced = match produced {
        Ok(produced) => produced,
        Err(e) => {
            let _ = stop_tx.send(true);
            join_subscribers(client, handles);
            return Err(e.context("the producer"));
        }
    };
    let m = produced.acks.len();
    let _ = expected_tx.send(Some(m));
    // Every subscriber has all M events by the time limit from the
    // producer's start (plus the grace), or is stopped.
    let give_up = produced.started + plan.limit + STALL_GRACE;
    let stopper = subscribers.spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(give_up)).await;
        let _ = stop_tx.send(true);
    });
    let outcomes = join_subscribers(client, handles);
    stopper.abort();
    let wall = produced.started.elapsed();
    let subscriber_share = subscriber_cpu.share(wall);
    let server_share = server_cpu.share(wall);

    // Checks: every subscriber, every job's event, once, in order.
    let acked: HashMap<u64, Instant> = produced.acks.iter().copied().collect();
    // When each enqueue request was sent: its response's arrival less its
    // latency (the two lists are in the same order).
    let sent: HashMap<u64, Instant> = produced
        .acks
        .iter()
        .zip(&produced.samples)
        .map(|(&(job, at), &took)| (job, at - took))
        .collect();
    let mut from_request = Vec::with_capacity(s * m);
    let mut acked_ids: Vec<u64> = acked.keys().copied().collect();
    acked_ids.sort_unstable();
    let mut failures = Vec::new();
    let mut latencies = Vec::with_capacity(s * m);
    let mut early = 0usize;
    let mut last = produced.started;
    let mut keep_alives = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        keep_alives += outcome.keep_alives;
        if let Some(error) = &outcome.error {
            failures.push(format!(
                "subscriber {i}: {error} ({} of {m} events)",
                outcome.events.len()
            ));
            continue;
        }
        let mut jobs: Vec<u64> = outcome.events.iter().map(|(job, _)| *job).collect();
        jobs.sort_unstable();
        if jobs != acked_ids {
            let missed = acked_ids
                .iter()
                .filter(|id| jobs.binary_search(id).is_err())
                .count();
            failures.push(format!(
                "subscriber {i}: {} events for {m} jobs, {missed} jobs missed",
                jobs.len()
            ));
            continue;
        }
        for &(job, at) in &outcome.events {
            let done = acked[&job];
            if at < done {
                early += 1;
            }
            latencies.push(at.saturating_duration_since(done));
            from_request.push(at.saturating_duration_since(sent[&job]));
            last = last.max(at);
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {s} subscribers failed the check: {}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    let events = latencies.len();
    let part = format!("fan-out S={s}");
    let mut producer = produced.row(&part, "enqueue", plan.producers, Some(s), plan.fanout_jobs);
    producer.notes = format!(
        "{}; {s} streams opened in {:.2} s",
        producer.notes,
        connect_time.as_secs_f64()
    );
    let delivered = PushRow {
        part,
        phase: "events",
        conns: plan.producers,
        subscribers: Some(s),
        count: events,
        target: s * m,
        elapsed: last.saturating_duration_since(produced.started),
        latency: Summary::of(latencies),
        notes: String::new(),
    };
    let from_request = Summary::of(from_request);
    let mut notes = vec![
        format!("early {early}"),
        format!(
            "from request sent: p50 {}, p99 {}",
            Latency(from_request.p50),
            Latency(from_request.p99)
        ),
    ];
    if keep_alives > 0 {
        notes.push(format!("keep-alives {keep_alives}"));
    }
    notes.push(format!(
        "CPU (producer start to last event): subscribers {subscriber_share}, server {server_share}"
    ));
    let delivered = PushRow {
        notes: notes.join("; "),
        ..delivered
    };
    Ok(vec![producer, delivered])
}

/// Waits for every subscriber task (they end by themselves: all events
/// in, an error, or the stop signal, which the caller arms).
fn join_subscribers(
    client: &Runtime,
    handles: Vec<tokio::task::JoinHandle<Subscribed>>,
) -> Vec<Subscribed> {
    client.block_on(async {
        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            outcomes.push(handle.await.unwrap_or_else(|e| Subscribed {
                error: Some(format!("the subscriber task failed: {e}")),
                ..Subscribed::default()
            }));
        }
        outcomes
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A fake server that answers one event stream with `frames`, each as
    /// one chunk, then keeps the connection open for `hold`.
    fn fake_stream(
        frames: Vec<String>,
        hold: Duration,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                )
                .unwrap();
            for frame in frames {
                socket
                    .write_all(format!("{:X}\r\n{frame}\r\n", frame.len()).as_bytes())
                    .unwrap();
            }
            std::thread::sleep(hold);
        });
        (addr, thread)
    }

    fn event(event_id: u64, job: u64) -> String {
        format!(
            "id: {event_id}\nevent: ready\ndata: {{\"event_id\":{event_id},\"id\":\"{job:016x}\",\
             \"queue\":\"q\",\"state\":\"ready\"}}\n\n"
        )
    }

    /// Reads the fake stream of `frames` expecting `n` events; the
    /// subscriber is stopped after `stop_after`, the stream closed after
    /// `hold`.
    fn read_for(frames: Vec<String>, n: usize, stop_after: Duration, hold: Duration) -> Subscribed {
        let (addr, server) = fake_stream(frames, hold);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen = runtime.block_on(async {
            let open = open_stream(addr, "/v1/events?queue=q").await.unwrap();
            let (_expected_tx, expected) = watch::channel(Some(n));
            let (stop_tx, stop) = watch::channel(false);
            let stopper = tokio::spawn(async move {
                tokio::time::sleep(stop_after).await;
                let _ = stop_tx.send(true);
            });
            let seen = subscriber(open, expected, stop, n).await;
            stopper.abort();
            seen
        });
        server.join().unwrap();
        seen
    }

    fn read(frames: Vec<String>, n: usize) -> Subscribed {
        read_for(
            frames,
            n,
            Duration::from_secs(5),
            Duration::from_millis(300),
        )
    }

    #[test]
    fn a_subscriber_reads_events_in_order() {
        let frames = vec![
            ": connected\nid: 5\n\n".to_owned(),
            ": keep-alive\n\n".to_owned(),
            event(6, 0xa) + &event(7, 0xb),
            event(9, 0xc),
        ];
        let seen = read(frames, 3);
        assert_eq!(seen.error, None);
        let jobs: Vec<u64> = seen.events.iter().map(|(job, _)| *job).collect();
        assert_eq!(jobs, vec![0xa, 0xb, 0xc]);
        assert_eq!(seen.keep_alives, 1);
    }

    #[test]
    fn a_subscriber_refuses_disorder_gaps_and_missing_events() {
        let opening = ": connected\nid: 5\n\n".to_owned();
        let disorder = read(vec![opening.clone(), event(7, 1), event(6, 2)], 2);
        assert!(
            disorder.error.as_deref().unwrap().contains("out of order"),
            "{disorder:?}"
        );
        assert_eq!(disorder.events.len(), 1);
        let gap = read(
            vec![
                opening.clone(),
                "id: 9\nevent: gap\ndata: {\"after\":5,\"oldest\":10}\n\n".to_owned(),
            ],
            1,
        );
        assert!(gap.error.as_deref().unwrap().contains("gap"), "{gap:?}");
        let mismatched = read(
            vec![
                opening.clone(),
                "id: 8\nevent: ready\ndata: {\"event_id\":7,\"id\":\"0000000000000001\"}\n\n"
                    .to_owned(),
            ],
            1,
        );
        assert!(
            mismatched
                .error
                .as_deref()
                .unwrap()
                .contains("came with id"),
            "{mismatched:?}"
        );
        // Two events of three, then silence: stopped by the time limit.
        let missing = read_for(
            vec![opening.clone(), event(6, 1), event(7, 2)],
            3,
            Duration::from_millis(200),
            Duration::from_secs(1),
        );
        assert!(
            missing.error.as_deref().unwrap().contains("time limit"),
            "{missing:?}"
        );
        assert_eq!(missing.events.len(), 2);
        // Or the stream closed before all of them.
        let closed = read(vec![opening, event(6, 1)], 2);
        assert!(
            closed.error.as_deref().unwrap().contains("closed"),
            "{closed:?}"
        );
    }
}
