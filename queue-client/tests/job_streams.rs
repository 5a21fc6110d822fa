//! `JobHandle::events`: one job's events, from its current state to its
//! terminal event, across cut connections and gaps.

use std::time::Duration;

use queue_client::{
    Client, Error, EventType, Failure, Job, JobState, LeaseOptions, StreamItem, Worker,
};
use queue_core::Queue;
use queue_server::ServerConfig;

use crate::both;
use crate::common::{
    Backend, CuttingProxy, Harness, Kind, Server, Store, assert_ends, next_event, next_item,
    pruning,
};

both!(
    a_job_stream_ends_after_the_terminal_event,
    a_job_stream_of_a_finished_job_is_its_last_event,
    a_fresh_job_stream_of_a_job_whose_events_were_pruned_shows_no_gap,
);

async fn a_job_stream_ends_after_the_terminal_event(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let jobs = client.queue::<u32>("ends");
    let done = jobs.enqueue(&20).await.unwrap();
    let cancelled = jobs.enqueue(&0).await.unwrap();
    let mut done_events = done.events().await.unwrap();
    let mut cancelled_events = cancelled.events().await.unwrap();
    let first = next_event(&mut done_events).await;
    assert_eq!(
        (first.id.as_str(), first.state),
        (done.id().as_str(), JobState::Ready)
    );
    assert_eq!(
        next_event(&mut cancelled_events).await.state,
        JobState::Ready
    );

    cancelled.cancel().await.unwrap();
    let worker = Worker::new(client.clone(), "ends").poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running =
        tokio::spawn(worker.run(|job: Job<u32>| async move { Ok::<_, Failure>(job.payload + 1) }));

    assert_eq!(next_event(&mut done_events).await.state, JobState::Leased);
    let last = next_event(&mut done_events).await;
    assert_eq!(last.state, JobState::Completed);
    assert_eq!(last.result.as_ref().map(|r| r.get()), Some("21"));
    assert_ends(&mut done_events).await;
    assert_eq!(done_events.last_event_id(), Some(last.event_id));

    let last = next_event(&mut cancelled_events).await;
    assert_eq!(last.state, JobState::Cancelled);
    assert_ends(&mut cancelled_events).await;

    // A job that goes dead ends its stream too, with its last error.
    stop.shutdown();
    running.await.unwrap().unwrap();
    let dead = jobs.enqueue(&0).await.unwrap();
    let mut dead_events = dead.events().await.unwrap();
    assert_eq!(next_event(&mut dead_events).await.state, JobState::Ready);
    let leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    leased.fail(Failure::permanent("broken")).await.unwrap();
    assert_eq!(next_event(&mut dead_events).await.state, JobState::Leased);
    let last = next_event(&mut dead_events).await;
    assert_eq!(
        (last.state, last.last_error.as_deref()),
        (JobState::Dead, Some("broken"))
    );
    assert_ends(&mut dead_events).await;

    let error = client.job::<u32>("999999").events().await.unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
}

async fn a_job_stream_of_a_finished_job_is_its_last_event(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let jobs = client.queue::<u32>("finished");
    let handle = jobs.enqueue(&1).await.unwrap();
    let other = jobs.enqueue(&2).await.unwrap();
    let leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    leased.complete(&"one").await.unwrap();

    let mut events = handle.events().await.unwrap();
    let only = next_event(&mut events).await;
    assert_eq!(
        (only.id.as_str(), only.state),
        (handle.id().as_str(), JobState::Completed)
    );
    assert_eq!(only.result.as_ref().map(|r| r.get()), Some("\"one\""));
    assert_ends(&mut events).await;
    // The other job is unaffected and its stream goes on.
    let mut others = other.events().await.unwrap();
    assert_eq!(next_event(&mut others).await.state, JobState::Ready);
}

async fn a_fresh_job_stream_of_a_job_whose_events_were_pruned_shows_no_gap(
    kind: Kind,
    backend: Backend,
) {
    let h = Harness::pruning(kind, backend, 4);
    let client = h.client();
    let jobs = client.queue::<u32>("old");
    let old = jobs.enqueue(&1).await.unwrap();
    let others = client.queue::<u32>("busy");
    for i in 0..10 {
        others.enqueue(&i).await.unwrap();
    }
    assert!(h.core.run_due().await.unwrap().pruned_events > 0);

    // Its current state (whose event is gone), then what happens next; the
    // server's gap after that state hides nothing of this job.
    let mut events = old.events().await.unwrap();
    assert_eq!(next_event(&mut events).await.state, JobState::Ready);
    let leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    leased.complete(&()).await.unwrap();
    let mut states = Vec::new();
    for _ in 0..2 {
        match next_item(&mut events).await {
            StreamItem::Event(event) => states.push(event.state),
            StreamItem::Gap(gap) => panic!("no gap expected: {gap:?}"),
        }
    }
    assert_eq!(states, [JobState::Leased, JobState::Completed]);
    assert_ends(&mut events).await;
}

async fn a_job_stream_resumes_after_cut_connections_and_still_ends(backend: Backend) {
    let h = Harness::new(Kind::Http, backend);
    let url = h.server.as_ref().unwrap().url.clone();
    let proxy = CuttingProxy::start(&url, |n| 560 + (n * 211) % 500).await;
    let direct = Client::connect(&url).unwrap();
    let flaky = Client::connect(&proxy.url).unwrap();
    let jobs = direct.queue::<u32>("steps");
    let handle = jobs.enqueue(&1).await.unwrap();
    let mut events = flaky
        .job::<u32>(handle.id().clone())
        .events()
        .await
        .unwrap();

    let mut leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    for step in 0..8 {
        leased.progress(&step).await.unwrap();
    }
    leased.complete(&"all done").await.unwrap();

    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut events).await;
        let progress = event.progress.as_ref().map(|p| p.get().to_owned());
        seen.push((event.kind(), progress));
        if event.state.is_terminal() {
            break;
        }
        assert!(seen.len() < 11, "{seen:?}");
    }
    let mut expected = vec![
        (EventType::State(JobState::Ready), None),
        (EventType::State(JobState::Leased), None),
    ];
    expected.extend((0..8).map(|step| (EventType::Progress, Some(step.to_string()))));
    expected.push((EventType::State(JobState::Completed), None));
    assert_eq!(seen, expected);
    assert_ends(&mut events).await;
    assert!(
        proxy.connections() >= 3,
        "{} connections",
        proxy.connections()
    );
}

async fn a_job_stream_rereads_the_job_after_a_gap_and_still_ends(backend: Backend) {
    let dir = Store::new(backend);
    let server = Server::start(pruning(&dir, 4));
    let addr = server.addr.to_string();
    let client = Client::connect(&server.url).unwrap();
    let handle = client.queue::<u32>("reread").enqueue(&1).await.unwrap();
    let mut events = handle.events().await.unwrap();
    let ready = next_event(&mut events).await;
    assert_eq!(ready.state, JobState::Ready);

    // While the server is away the job finishes, and so many other events
    // happen that its own are pruned: resuming, the stream gets a gap.
    server.stop().await;
    {
        let core = Queue::open_with(pruning(&dir, 4)).unwrap();
        let offline = Client::embedded(core.clone());
        let jobs = offline.queue::<u32>("reread");
        let leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
        leased.complete(&"done offline").await.unwrap();
        let busy = offline.queue::<u32>("busy");
        for i in 0..10 {
            busy.enqueue(&i).await.unwrap();
        }
        assert!(core.run_due().await.unwrap().pruned_events > 0);
    }
    let server = Server::start_with(pruning(&dir, 4), ServerConfig::default(), &addr);

    let StreamItem::Gap(gap) = next_item(&mut events).await else {
        panic!("a gap first");
    };
    assert_eq!(gap.after, ready.event_id);
    // Then the job's current state, read again, which ends the stream.
    let last = next_event(&mut events).await;
    assert_eq!(last.state, JobState::Completed);
    assert_eq!(
        last.result.as_ref().map(|r| r.get()),
        Some("\"done offline\"")
    );
    assert_ends(&mut events).await;
    server.stop().await;
}

async fn a_job_stream_passes_over_a_gap_that_hid_nothing_of_its_job(backend: Backend) {
    let dir = Store::new(backend);
    let server = Server::start(pruning(&dir, 4));
    let addr = server.addr.to_string();
    let client = Client::connect(&server.url).unwrap();
    let jobs = client.queue::<u32>("quiet");
    let handle = jobs.enqueue(&1).await.unwrap();
    let mut events = handle.events().await.unwrap();
    let ready = next_event(&mut events).await;
    assert_eq!(ready.state, JobState::Ready);

    // While the server is away, nothing happens to the job, but its event
    // is pruned under other jobs' events.
    server.stop().await;
    {
        let core = Queue::open_with(pruning(&dir, 4)).unwrap();
        let busy = Client::embedded(core.clone()).queue::<u32>("busy");
        for i in 0..10 {
            busy.enqueue(&i).await.unwrap();
        }
        assert!(core.run_due().await.unwrap().pruned_events > 0);
    }
    let server = Server::start_with(pruning(&dir, 4), ServerConfig::default(), &addr);
    // The resumed stream has missed nothing of this job: no gap, just what
    // happens to it next.
    let leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    leased.complete(&()).await.unwrap();
    let mut states = Vec::new();
    for _ in 0..2 {
        match next_item(&mut events).await {
            StreamItem::Event(event) => {
                assert!(event.event_id > ready.event_id, "{event:?}");
                states.push(event.state);
            }
            StreamItem::Gap(gap) => panic!("no gap: nothing of the job was hidden: {gap:?}"),
        }
    }
    assert_eq!(states, [JobState::Leased, JobState::Completed]);
    assert_ends(&mut events).await;
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_stream_resumes_after_cut_connections_and_still_ends;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_stream_rereads_the_job_after_a_gap_and_still_ends;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_stream_passes_over_a_gap_that_hid_nothing_of_its_job;
}
