//! The pushed results through the blocking client: event iterators (with
//! gaps, across a server restart), a job's events, the blocking worker's
//! progress and span, and the refusal to block inside a runtime.

use std::time::Duration;

use queue_client::blocking::{Client, Events, Worker};
use queue_client::{
    EnqueueOptions, Error, Event, EventFilter, EventType, Failure, Job, JobState, StreamItem,
};
use queue_server::ServerConfig;

use crate::both_blocking;
use crate::common::{
    Backend, Harness, Kind, PATIENCE, Server, Store, capture_job_spans, logged_in_job,
};

both_blocking!(
    blocking_job_events_follow_a_handler_to_the_end,
    a_blocking_event_iterator_yields_a_gap_as_a_value,
    the_blocking_handler_runs_in_a_span_with_the_job_and_its_correlation_id,
);

fn next_item(events: &mut Events) -> StreamItem {
    events
        .next_timeout(PATIENCE)
        .expect("the stream is open")
        .expect("an item in time, not an error")
}

fn next_event(events: &mut Events) -> Event {
    match next_item(events) {
        StreamItem::Event(event) => event,
        StreamItem::Gap(gap) => panic!("an event, not {gap:?}"),
    }
}

fn quick(worker: Worker) -> Worker {
    worker.poll_wait(Duration::from_millis(100))
}

fn blocking_job_events_follow_a_handler_to_the_end(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.blocking();
    let jobs = client.queue::<u32>("bjobs");
    let handle = jobs
        .enqueue_with(&4, EnqueueOptions::new().correlation_id("b-1"))
        .unwrap();
    let mut events = handle.events().unwrap();
    let worker = quick(Worker::new(client.clone(), "bjobs"));
    let stop = worker.shutdown_handle();
    let thread = std::thread::spawn(move || {
        worker.run(|job: Job<u32>| {
            if job.correlation_id.as_deref() != Some("b-1") {
                return Err(Failure::permanent("no correlation id"));
            }
            job.progress(&"half")?;
            Ok(job.payload * 2)
        })
    });

    let mut kinds = Vec::new();
    while let Some(item) = events.next_timeout(PATIENCE) {
        match item.expect("an event in time") {
            StreamItem::Event(event) => kinds.push(event.kind()),
            StreamItem::Gap(gap) => panic!("no gap expected: {gap:?}"),
        }
        assert!(kinds.len() <= 4, "{kinds:?}");
    }
    assert_eq!(
        kinds,
        [
            EventType::State(JobState::Ready),
            EventType::State(JobState::Leased),
            EventType::Progress,
            EventType::State(JobState::Completed),
        ]
    );
    assert_eq!(handle.wait::<u32>(PATIENCE).unwrap(), 8);
    stop.shutdown();
    assert_eq!(thread.join().unwrap().unwrap().completed, 1);
}

fn a_blocking_event_iterator_yields_a_gap_as_a_value(kind: Kind, backend: Backend) {
    let h = Harness::pruning(kind, backend, 4);
    let client = h.blocking();
    let mut watch = client.events(EventFilter::new().queue("bgap")).unwrap();
    let jobs = client.queue::<u32>("bgap");
    for i in 0..12 {
        jobs.enqueue(&i).unwrap();
    }
    let ids: Vec<u64> = (0..12).map(|_| next_event(&mut watch).event_id).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(runtime.block_on(h.core.run_due()).unwrap().pruned_events > 0);

    let mut late = client
        .events(EventFilter::new().queue("bgap").after(ids[0]))
        .unwrap();
    let StreamItem::Gap(gap) = next_item(&mut late) else {
        panic!("a gap first");
    };
    assert_eq!(gap.after, ids[0]);
    assert_eq!(late.last_event_id(), Some(gap.oldest - 1));
    let next = next_event(&mut late);
    assert_eq!(next.event_id, gap.oldest);
    assert!(ids.contains(&next.event_id) && next.event_id > ids[1]);
}

fn the_blocking_handler_runs_in_a_span_with_the_job_and_its_correlation_id(
    kind: Kind,
    backend: Backend,
) {
    capture_job_spans();
    let h = Harness::new(kind, backend);
    let client = h.blocking();
    let queue = format!("spans-blocking-{kind:?}-{backend}");
    let handle = client
        .queue::<u32>(&queue)
        .enqueue_with(&3, EnqueueOptions::new().correlation_id("bspan"))
        .unwrap();
    let worker = quick(Worker::new(client.clone(), &queue));
    let stop = worker.shutdown_handle();
    let thread = std::thread::spawn(move || {
        worker.run(|job: Job<u32>| {
            tracing::info!("blocking handling");
            Ok::<_, Failure>(job.payload)
        })
    });
    assert_eq!(handle.wait::<u32>(PATIENCE).unwrap(), 3);
    stop.shutdown();
    thread.join().unwrap().unwrap();
    let logged: Vec<_> = logged_in_job(&queue, handle.id().as_str())
        .into_iter()
        .filter(|e| e.message == "blocking handling")
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].span["correlation_id"], "bspan");
    assert_eq!(logged[0].span["attempt"], "1");
}

fn a_blocking_stream_resumes_across_a_server_restart(backend: Backend) {
    let dir = Store::new(backend);
    let config = || dir.config();
    let server = Server::start(config());
    let addr = server.addr.to_string();
    let client = Client::connect(&server.url).unwrap();
    let mut events = client.events(EventFilter::new().queue("bres")).unwrap();
    let jobs = client.queue::<u32>("bres");
    let mut expected = Vec::new();
    for i in 0..2 {
        expected.push(jobs.enqueue(&i).unwrap().id().to_string());
    }
    let mut seen: Vec<Event> = (0..2).map(|_| next_event(&mut events)).collect();
    // Jobs enqueued while the server is away, and one after it is back.
    server.stop_blocking();
    // On a thread of its own, whose end lets go of the queue (a blocking
    // client keeps a thread's runtime and connections until then).
    let config_offline = config();
    let offline = std::thread::spawn(move || {
        let queue = queue_core::Queue::open_with(config_offline).unwrap();
        let jobs = Client::embedded(queue).queue::<u32>("bres");
        (2..4)
            .map(|i| jobs.enqueue(&i).unwrap().id().to_string())
            .collect::<Vec<_>>()
    });
    expected.extend(offline.join().unwrap());
    let server = Server::start_with(config(), ServerConfig::default(), &addr);
    expected.push(jobs.enqueue(&4).unwrap().id().to_string());
    seen.extend((0..3).map(|_| next_event(&mut events)));
    assert!(seen.windows(2).all(|w| w[0].event_id < w[1].event_id));
    assert_eq!(
        seen.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        expected
    );
    server.stop_blocking();
}

async fn blocking_streams_refuse_to_run_inside_a_runtime(backend: Backend) {
    for kind in [Kind::Http, Kind::Embedded] {
        let h = Harness::new(kind, backend);
        let client = h.blocking();
        assert!(matches!(
            client.events(EventFilter::new()),
            Err(Error::BlockingInRuntime)
        ));
        assert!(matches!(
            client.job::<u32>("1").events(),
            Err(Error::BlockingInRuntime)
        ));
        // Opened on a thread without a runtime, then used in one: one
        // refusal, then the end.
        let mut events = std::thread::spawn(move || client.events(EventFilter::new()).unwrap())
            .join()
            .unwrap();
        assert!(matches!(events.next(), Some(Err(Error::BlockingInRuntime))));
        assert!(events.next().is_none());
        assert!(events.next_timeout(Duration::from_millis(1)).is_none());
    }
}

test_support::backend_tests! {
    #[test]
    fn a_blocking_stream_resumes_across_a_server_restart;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_streams_refuse_to_run_inside_a_runtime;
}
