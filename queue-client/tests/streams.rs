//! `Client::events`: filters, a start id, gaps as values, and resuming
//! after a lost connection (a server restart, connections cut mid-event)
//! with nothing seen twice and nothing missed.

use queue_client::{
    Client, EnqueueOptions, Error, EventFilter, EventStream, EventType, JobState, LeaseOptions,
    StreamItem,
};
use queue_core::Queue;
use queue_server::ServerConfig;

use crate::both;
use crate::common::{
    Backend, CuttingProxy, Harness, Kind, PATIENCE, Server, Store, next_event, next_item, pruning,
};

both!(
    filters_choose_queues_jobs_and_types,
    after_replays_the_retained_events_then_goes_live,
    a_start_id_whose_events_were_pruned_yields_a_gap_then_the_rest,
);

/// Enqueues `n` payloads to `queue` and returns the job ids in order.
async fn enqueue_n(client: &Client, queue: &str, n: u32) -> Vec<String> {
    let jobs = client.queue::<u32>(queue);
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(jobs.enqueue(&i).await.unwrap().id().to_string());
    }
    ids
}

/// Reads `n` events, which must all be `ready` events of `queue`; returns
/// (event id, job id) pairs.
async fn read_ready(stream: &mut EventStream, queue: &str, n: usize) -> Vec<(u64, String)> {
    let mut read = Vec::new();
    for _ in 0..n {
        let event = next_event(stream).await;
        assert_eq!(
            (event.queue.as_str(), event.state),
            (queue, JobState::Ready)
        );
        read.push((event.event_id, event.id));
    }
    read
}

async fn filters_choose_queues_jobs_and_types(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let mut two_queues = client
        .events(EventFilter::new().queue("fa").queue("fb"))
        .await
        .unwrap();
    let mut outcomes = client
        .events(
            EventFilter::new()
                .event_type(EventType::State(JobState::Completed))
                .event_type(EventType::Progress),
        )
        .await
        .unwrap();
    let fc = client.queue::<u32>("fc").enqueue(&0).await.unwrap();
    let mut one_job = client
        .events(EventFilter::new().job(fc.id().clone()))
        .await
        .unwrap();
    let fa = client.queue::<u32>("fa").enqueue(&1).await.unwrap();
    let fb = client.queue::<u32>("fb").enqueue(&2).await.unwrap();

    let mut leased = client
        .queue::<u32>("fc")
        .lease(&LeaseOptions::new())
        .await
        .unwrap()
        .remove(0);
    leased.progress(&"half").await.unwrap();
    leased.complete(&3).await.unwrap();

    let a = next_event(&mut two_queues).await;
    let b = next_event(&mut two_queues).await;
    assert_eq!(
        [(a.id, a.queue), (b.id, b.queue)],
        [
            (fa.id().to_string(), "fa".to_owned()),
            (fb.id().to_string(), "fb".to_owned())
        ]
    );

    let progress = next_event(&mut outcomes).await;
    let completed = next_event(&mut outcomes).await;
    assert_eq!(
        [progress.kind(), completed.kind()],
        [EventType::Progress, EventType::State(JobState::Completed)]
    );
    assert_eq!(completed.result.as_ref().map(|r| r.get()), Some("3"));

    // Subscribed after fc's enqueue: its lease, progress and completion.
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut one_job).await;
        assert_eq!(event.id, fc.id().as_str());
        kinds.push(event.kind());
    }
    assert_eq!(
        kinds,
        [
            EventType::State(JobState::Leased),
            EventType::Progress,
            EventType::State(JobState::Completed)
        ]
    );

    let error = client
        .events(EventFilter::new().queue("fa").queue("bad name"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
}

async fn after_replays_the_retained_events_then_goes_live(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let mut first = client
        .events(EventFilter::new().queue("replay"))
        .await
        .unwrap();
    assert_eq!(first.last_event_id(), None);
    let ids = enqueue_n(&client, "replay", 3).await;
    let read = read_ready(&mut first, "replay", 3).await;
    assert_eq!(first.last_event_id(), Some(read[2].0));

    // A second stream starting after the first event: the other two, then
    // what happens next.
    let mut second = client
        .events(EventFilter::new().queue("replay").after(read[0].0))
        .await
        .unwrap();
    assert_eq!(second.last_event_id(), Some(read[0].0));
    let replayed = read_ready(&mut second, "replay", 2).await;
    assert_eq!(replayed, read[1..]);
    let live = enqueue_n(&client, "replay", 1).await;
    let next = read_ready(&mut second, "replay", 1).await;
    assert_eq!(next[0].1, live[0]);
    assert!(next[0].0 > read[2].0);
    assert_eq!(second.last_event_id(), Some(next[0].0));
    assert_eq!(
        read.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        ids
    );
}

async fn a_start_id_whose_events_were_pruned_yields_a_gap_then_the_rest(
    kind: Kind,
    backend: Backend,
) {
    let h = Harness::pruning(kind, backend, 4);
    let client = h.client();
    let mut watch = client
        .events(EventFilter::new().queue("pruned"))
        .await
        .unwrap();
    enqueue_n(&client, "pruned", 12).await;
    let read = read_ready(&mut watch, "pruned", 12).await;
    let report = h.core.run_due().await.unwrap();
    assert!(report.pruned_events > 0, "{report:?}");

    let mut late = client
        .events(EventFilter::new().queue("pruned").after(read[1].0))
        .await
        .unwrap();
    let StreamItem::Gap(gap) = next_item(&mut late).await else {
        panic!("a gap first");
    };
    assert_eq!(gap.after, read[1].0);
    assert!(gap.oldest > read[2].0, "{gap:?}: something was pruned");
    assert_eq!(late.last_event_id(), Some(gap.oldest - 1));
    // Then every retained event, in order, and live ones after them.
    let retained: Vec<_> = read.iter().filter(|(e, _)| *e >= gap.oldest).collect();
    assert!(!retained.is_empty() && retained.len() < 12);
    for expected in retained {
        let event = next_event(&mut late).await;
        assert_eq!((&event.event_id, &event.id), (&expected.0, &expected.1));
    }
    let live = enqueue_n(&client, "pruned", 1).await;
    assert_eq!(next_event(&mut late).await.id, live[0]);
}

async fn a_stream_resumes_across_a_server_restart_without_duplicates_or_losses(backend: Backend) {
    let dir = Store::new(backend);
    let config = || dir.config();
    let server = Server::start(config());
    let (url, addr) = (server.url.clone(), server.addr.to_string());
    let client = Client::connect(&url).unwrap();
    let mut stream = client
        .events(EventFilter::new().queue("restart"))
        .await
        .unwrap();
    let mut expected = enqueue_n(&client, "restart", 3).await;
    let before = read_ready(&mut stream, "restart", 3).await;

    // The server goes away (its streams end); meanwhile jobs are enqueued
    // on its data directory, one of them to a queue the stream filters out.
    server.stop().await;
    {
        let offline = Client::embedded(Queue::open_with(config()).unwrap());
        expected.extend(enqueue_n(&offline, "restart", 3).await);
        enqueue_n(&offline, "elsewhere", 1).await;
    }
    let server = Server::start_with(config(), ServerConfig::default(), &addr);
    expected.extend(enqueue_n(&client, "restart", 2).await);

    let after = read_ready(&mut stream, "restart", 5).await;
    let all: Vec<_> = before.iter().chain(&after).collect();
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase: {all:?}"
    );
    assert_eq!(
        all.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        expected,
        "every job once, in order"
    );
    // Nothing else is in between: the next item is the next job's.
    let sentinel = enqueue_n(&client, "restart", 1).await;
    assert_eq!(next_event(&mut stream).await.id, sentinel[0]);
    server.stop().await;
}

async fn a_stream_resumes_after_connections_cut_in_the_middle_of_events(backend: Backend) {
    let h = Harness::new(Kind::Http, backend);
    let url = h.server.as_ref().unwrap().url.clone();
    // Each connection passes 600 to ~1000 bytes of the answer: its head and
    // one to three events, and then part of one.
    let proxy = CuttingProxy::start(&url, |n| 600 + (n * 137) % 400).await;
    let direct = Client::connect(&url).unwrap();
    let flaky = Client::connect(&proxy.url).unwrap();
    let mut stream = flaky.events(EventFilter::new().queue("cut")).await.unwrap();
    let jobs = direct.queue::<u32>("cut");
    let mut expected = Vec::new();
    for i in 0..12 {
        let options = EnqueueOptions::new().correlation_id(format!("cut-{i}"));
        expected.push(
            jobs.enqueue_with(&i, options)
                .await
                .unwrap()
                .id()
                .to_string(),
        );
    }
    let read = read_ready(&mut stream, "cut", 12).await;
    assert!(read.windows(2).all(|w| w[0].0 < w[1].0), "{read:?}");
    assert_eq!(
        read.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        proxy.connections() >= 4,
        "the stream reconnected ({} connections)",
        proxy.connections()
    );
    let sentinel = enqueue_n(&direct, "cut", 1).await;
    assert_eq!(next_event(&mut stream).await.id, sentinel[0]);
}

async fn a_stream_that_resumes_after_pruned_events_reports_the_gap(backend: Backend) {
    let dir = Store::new(backend);
    let server = Server::start(pruning(&dir, 4));
    let addr = server.addr.to_string();
    let client = Client::connect(&server.url).unwrap();
    let mut stream = client
        .events(EventFilter::new().queue("away"))
        .await
        .unwrap();
    enqueue_n(&client, "away", 2).await;
    let before = read_ready(&mut stream, "away", 2).await;

    server.stop().await;
    let offline_ids = {
        let core = Queue::open_with(pruning(&dir, 4)).unwrap();
        let offline = Client::embedded(core.clone());
        let ids = enqueue_n(&offline, "away", 10).await;
        let report = core.run_due().await.unwrap();
        assert!(report.pruned_events > 0);
        ids
    };
    let server = Server::start_with(pruning(&dir, 4), ServerConfig::default(), &addr);

    let StreamItem::Gap(gap) = next_item(&mut stream).await else {
        panic!("a gap first");
    };
    assert_eq!(gap.after, before[1].0);
    assert_eq!(stream.last_event_id(), Some(gap.oldest - 1));
    // The retained events follow: the last of the jobs enqueued offline.
    let first_after = next_event(&mut stream).await;
    assert_eq!(first_after.event_id, gap.oldest);
    let position = offline_ids
        .iter()
        .position(|id| *id == first_after.id)
        .expect("one of the jobs enqueued offline");
    assert!(position > 0, "the oldest offline events were pruned");
    for expected in &offline_ids[position + 1..] {
        assert_eq!(&next_event(&mut stream).await.id, expected);
    }
    let sentinel = enqueue_n(&client, "away", 1).await;
    assert_eq!(next_event(&mut stream).await.id, sentinel[0]);
    server.stop().await;
}

async fn a_stream_ends_with_an_error_it_cannot_get_past(backend: Backend) {
    // A token the restarted server refuses: reconnecting cannot help.
    let dir = Store::new(backend);
    let server = Server::start(dir.config());
    let addr = server.addr.to_string();
    let client = Client::connect(&server.url).unwrap();
    let mut stream = client.events(EventFilter::new()).await.unwrap();
    enqueue_n(&client, "any", 1).await;
    next_event(&mut stream).await;
    server.stop().await;
    let locked = ServerConfig {
        token: Some("s3cret".to_owned()),
        ..ServerConfig::default()
    };
    let server = Server::start_with(dir.config(), locked, &addr);
    let end = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("an item in time");
    assert!(
        matches!(end, Some(Err(Error::Unauthorized { .. }))),
        "{end:?}"
    );
    let end = tokio::time::timeout(PATIENCE, stream.next()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_resumes_across_a_server_restart_without_duplicates_or_losses;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_resumes_after_connections_cut_in_the_middle_of_events;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_that_resumes_after_pruned_events_reports_the_gap;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_ends_with_an_error_it_cannot_get_past;
}
