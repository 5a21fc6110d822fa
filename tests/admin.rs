//! Admin calls and event streams.

use std::time::Duration;

use queue_client::{
    CallbackState, EnqueueOptions, Error, EventFilter, Failure, HistoryQuery, JobId, JobState,
    LeaseOptions,
};

use crate::both;
use crate::common::{Harness, PATIENCE};
use crate::typed::{Email, email};

both!(
    stats_and_queue_listing,
    pause_stops_leasing_until_resumed,
    dead_letters_page_requeue_and_purge,
    events_follow_a_job_through_its_states,
    callbacks_are_listed_by_state_and_retried,
    history_counts_what_happened_and_refuses_bad_steps,
);

async fn stats_and_queue_listing(h: Harness) {
    let client = h.client();
    client.queue::<u32>("b").enqueue(&1).await.unwrap();
    client.queue::<u32>("a").enqueue(&1).await.unwrap();
    client.queue::<u32>("a").enqueue(&2).await.unwrap();
    let names: Vec<_> = client
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.queue, s.ready))
        .collect();
    assert_eq!(names, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    let unknown = client.stats("never-used").await.unwrap();
    assert_eq!((unknown.ready, unknown.paused), (0, false));
    client.health().await.unwrap();
}

async fn history_counts_what_happened_and_refuses_bad_steps(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<u32>("charted");
    for n in 0..3 {
        jobs.enqueue(&n).await.unwrap();
    }
    let leased = jobs
        .lease(&LeaseOptions::new().wait(PATIENCE))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    for job in leased {
        job.complete(&0).await.unwrap();
    }
    // The last hour in minutes (the work may straddle a minute).
    let history = client
        .history("charted", &HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(history.step_ms, 60_000);
    assert_eq!(history.points.len(), 61);
    let total =
        |f: fn(&queue_client::HistoryPoint) -> u64| history.points.iter().map(f).sum::<u64>();
    assert_eq!((total(|p| p.enqueued), total(|p| p.completed)), (3, 1));
    let last = history.points.last().unwrap();
    assert_eq!((last.ready, last.leased), (2, 0));
    let runs: Vec<_> = history.points.iter().filter_map(|p| p.run_ms_p50).collect();
    assert_eq!(runs.len(), 1, "one minute has the completion's run time");
    // Merged into one step of a day.
    let now = history.points.last().unwrap().at + 60_000;
    let day = client
        .history(
            "charted",
            &HistoryQuery {
                from: Some(now - 1),
                to: Some(now - 1),
                step: Some(Duration::from_secs(86_400)),
            },
        )
        .await
        .unwrap();
    assert_eq!(day.points.len(), 1);
    assert_eq!(day.points[0].enqueued, 3);
    let bad = client
        .history(
            "charted",
            &HistoryQuery {
                step: Some(Duration::from_secs(90)),
                ..HistoryQuery::default()
            },
        )
        .await;
    assert!(
        matches!(&bad, Err(Error::InvalidRequest { message }) if message.contains("step_ms")),
        "{bad:?}"
    );
    let empty = client
        .history("never-used", &HistoryQuery::default())
        .await
        .unwrap();
    assert!(empty.points.iter().all(|p| p.enqueued == 0 && p.ready == 0));
}

async fn pause_stops_leasing_until_resumed(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<u32>("paused");
    jobs.enqueue(&1).await.unwrap();
    assert!(jobs.pause().await.unwrap().paused);
    let leased = jobs
        .lease(&LeaseOptions::new().wait(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(leased.is_empty(), "a paused queue leases nothing");
    // Enqueueing still works while paused.
    jobs.enqueue(&2).await.unwrap();
    let stats = jobs.resume().await.unwrap();
    assert_eq!((stats.paused, stats.ready), (false, 2));
    let leased = jobs
        .lease(&LeaseOptions::new().max_jobs(5).wait(PATIENCE))
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
}

async fn dead_letters_page_requeue_and_purge(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<Email>("mail");
    let payloads: Vec<Email> = (0..5).map(email).collect();
    let handles = jobs.enqueue_batch(&payloads).await.unwrap();
    let leased = jobs.lease(&LeaseOptions::new().max_jobs(5)).await.unwrap();
    for job in leased {
        let n = job.payload().n;
        let state = job
            .fail(Failure::permanent(format!("bounce {n}")))
            .await
            .unwrap();
        assert_eq!(state, JobState::Dead);
    }
    let alive = jobs.enqueue(&email(99)).await.unwrap();

    // Paged, oldest first, typed or as JSON.
    let first = jobs.dead_letters(None, 2).await.unwrap();
    assert_eq!(first.jobs.len(), 2);
    let second = jobs.dead_letters(first.next.as_ref(), 2).await.unwrap();
    let third = jobs.dead_letters(second.next.as_ref(), 2).await.unwrap();
    assert_eq!((third.jobs.len(), third.next.clone()), (1, None));
    let seen: Vec<u32> = [&first, &second, &third]
        .iter()
        .flat_map(|page| page.jobs.iter().map(|j| j.payload.n))
        .collect();
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    let raw = client.dead_letters("mail", None, 1).await.unwrap();
    assert_eq!(raw.jobs[0].payload["to"], "user0@example.com");
    assert_eq!(raw.jobs[0].last_error.as_deref(), Some("bounce 0"));
    let error = client.dead_letters("mail", None, 0).await.unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");

    // A malformed id is refused and nothing changes; ids that are no dead
    // job of the queue are skipped.
    let bogus = [handles[0].id().clone(), JobId::from("bogus")];
    let error = jobs.requeue_dead(Some(&bogus)).await.unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
    assert_eq!(handles[0].status().await.unwrap(), JobState::Dead);
    let ids = [handles[0].id().clone(), alive.id().clone()];
    assert_eq!(jobs.requeue_dead(Some(&ids)).await.unwrap(), 1);
    let requeued = handles[0].get().await.unwrap();
    assert_eq!((requeued.state, requeued.attempts), (JobState::Ready, 0));
    assert_eq!(alive.status().await.unwrap(), JobState::Ready);

    // Purge the rest, then requeue-all finds nothing.
    assert_eq!(jobs.purge_dead().await.unwrap(), 4);
    assert_eq!(jobs.requeue_dead(None).await.unwrap(), 0);
    let stats = jobs.stats().await.unwrap();
    assert_eq!((stats.dead, stats.ready), (0, 2));
    assert!(matches!(
        handles[1].status().await,
        Err(Error::NotFound { .. })
    ));
}

async fn events_follow_a_job_through_its_states(h: Harness) {
    let client = h.client();
    let mut of_queue = client
        .events(EventFilter::new().queue("watched"))
        .await
        .unwrap();
    client.queue::<u32>("ignored").enqueue(&1).await.unwrap();
    let watched = client.queue::<u32>("watched");
    let handle = watched.enqueue(&1).await.unwrap();
    let mut of_job = client
        .events(EventFilter::new().job(handle.id().clone()))
        .await
        .unwrap();
    let other = watched.enqueue(&2).await.unwrap();
    let mut leased = watched
        .lease(&LeaseOptions::new().max_jobs(1))
        .await
        .unwrap();
    leased.pop().unwrap().complete(&()).await.unwrap();

    let next = async |stream: &mut queue_client::EventStream| {
        tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("an event, not an error")
            .into_event()
            .expect("an event, not a gap")
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = next(&mut of_queue).await;
        seen.push((event.id, event.state));
    }
    let (id, other_id) = (handle.id().to_string(), other.id().to_string());
    assert_eq!(
        seen,
        [
            (id.clone(), JobState::Ready),
            (other_id, JobState::Ready),
            (id.clone(), JobState::Leased),
            (id.clone(), JobState::Completed),
        ]
    );
    // Subscribed after the enqueue: this stream starts at the lease.
    assert_eq!(next(&mut of_job).await.state, JobState::Leased);
    assert_eq!(next(&mut of_job).await.state, JobState::Completed);

    let error = client
        .events(EventFilter::new().queue("bad name"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
}

async fn callbacks_are_listed_by_state_and_retried(h: Harness) {
    let client = h.client();
    // Nobody listens there: a delivery fails and stays pending (its next
    // attempt is seconds away), over HTTP; in process nothing delivers.
    let hook = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let queue = client.queue::<u32>("hooked");
    let hooked = queue
        .enqueue_with(&1, EnqueueOptions::new().callback_url(&hook))
        .await
        .unwrap();
    let plain = queue.enqueue(&2).await.unwrap();
    let error = client.retry_callback(hooked.id()).await.unwrap_err();
    assert!(
        matches!(error, Error::Conflict { .. }),
        "not finished: {error:?}"
    );
    hooked.cancel().await.unwrap();
    plain.cancel().await.unwrap();

    let pending = client
        .callbacks(CallbackState::Pending, None, 10)
        .await
        .unwrap();
    let ids: Vec<&JobId> = pending.jobs.iter().map(|j| &j.id).collect();
    assert_eq!((ids, pending.next.as_ref()), (vec![hooked.id()], None));
    let job = &pending.jobs[0];
    assert_eq!(job.callback_url.as_deref(), Some(hook.as_str()));
    assert_eq!(
        job.callback.as_ref().map(|c| c.state),
        Some(CallbackState::Pending)
    );
    assert_eq!(job.payload, serde_json::json!(1));
    for state in [CallbackState::Delivered, CallbackState::Failed] {
        let page = client.callbacks(state, None, 10).await.unwrap();
        assert!(page.jobs.is_empty(), "{state:?}");
    }
    let error = client
        .callbacks(CallbackState::Pending, None, 0)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
    let error = client.retry_callback(plain.id()).await.unwrap_err();
    assert!(
        matches!(error, Error::Conflict { .. }),
        "no callback: {error:?}"
    );
    let error = client
        .retry_callback(&JobId::from("nope"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");

    // The blocking client's are the same calls.
    let blocking = h.blocking();
    // (from a thread of its own: not inside the runtime).
    let listed = std::thread::spawn(move || {
        blocking
            .callbacks(CallbackState::Pending, None, 10)
            .map(|page| page.jobs.len())
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(listed, 1);

    // In process no attempt can be under way, so a retry is always taken;
    // over HTTP it is (see the CLI's test with a receiver).
    if h.url.is_none() {
        let retried = client.retry_callback(hooked.id()).await.unwrap();
        assert_eq!(retried.state, JobState::Cancelled);
        assert_eq!(
            retried.callback.map(|c| c.state),
            Some(CallbackState::Pending)
        );
    }
}
