//! Progress: reported by a worker's handler (`Job::progress`) or by hand
//! (`Leased::progress`), stored on the job and pushed as `progress` events.

use std::collections::HashMap;
use std::time::Duration;

use queue_client::{Error, EventFilter, EventType, Failure, Job, JobState, LeaseOptions, Worker};
use serde_json::json;

use crate::both;
use crate::common::{Backend, Harness, Kind, assert_ends, next_event};

both!(
    a_handler_reports_progress_as_an_event,
    the_latest_progress_is_sent_before_the_outcome,
    progress_by_hand_is_durable_on_return,
    progress_is_refused_outside_a_worker_and_over_the_limit,
    progress_extends_the_lease,
    a_timeout_ends_the_attempt_however_often_the_worker_reports,
);

async fn a_handler_reports_progress_as_an_event(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let imports = client.queue::<u32>("imports");
    let handle = imports.enqueue(&3).await.unwrap();
    let mut events = handle.events().await.unwrap();
    assert_eq!(next_event(&mut events).await.state, JobState::Ready);

    let worker = Worker::new(client.clone(), "imports").poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<u32>| async move {
        job.progress(&json!({"step": 1, "of": job.payload}))?;
        Ok::<_, Failure>(job.payload)
    }));

    let leased = next_event(&mut events).await;
    assert_eq!(leased.kind(), EventType::State(JobState::Leased));
    let progress = next_event(&mut events).await;
    assert_eq!(progress.kind(), EventType::Progress);
    assert_eq!(progress.state, JobState::Leased);
    assert_eq!(progress.id, handle.id().as_str());
    assert!(progress.event_id > leased.event_id);
    let reported: serde_json::Value =
        serde_json::from_str(progress.progress.as_ref().unwrap().get()).unwrap();
    assert_eq!(reported, json!({"step": 1, "of": 3}));
    // Sent before the outcome: the completed event comes after it.
    let completed = next_event(&mut events).await;
    assert_eq!(completed.kind(), EventType::State(JobState::Completed));
    assert_ends(&mut events).await;

    let job = handle.get().await.unwrap();
    assert_eq!(
        job.last_progress::<serde_json::Value>().unwrap(),
        Some(json!({"step": 1, "of": 3}))
    );
    stop.shutdown();
    running.await.unwrap().unwrap();
}

async fn the_latest_progress_is_sent_before_the_outcome(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let mut events = client
        .events(
            EventFilter::new()
                .queue("latest")
                .event_type(EventType::Progress)
                .event_type(EventType::State(JobState::Completed)),
        )
        .await
        .unwrap();
    let payloads: Vec<u32> = (0..8).collect();
    let handles = client
        .queue::<u32>("latest")
        .enqueue_batch(&payloads)
        .await
        .unwrap();
    // Reports made in a burst, the last one just before returning: only
    // the latest may be sent, but it always is, before the outcome.
    let worker = Worker::new(client.clone(), "latest")
        .concurrency(4)
        .poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<u32>| async move {
        for step in 1..=3 {
            job.progress(&step)?;
        }
        Ok::<_, Failure>(job.payload)
    }));
    let mut latest: HashMap<String, String> = HashMap::new();
    let mut completed = 0;
    while completed < handles.len() {
        let event = next_event(&mut events).await;
        match event.kind() {
            EventType::Progress => {
                latest.insert(event.id, event.progress.unwrap().get().to_owned());
            }
            _ => {
                assert_eq!(
                    latest.get(&event.id).map(String::as_str),
                    Some("3"),
                    "{event:?}"
                );
                completed += 1;
            }
        }
    }
    for handle in &handles {
        let job = handle.get().await.unwrap();
        assert_eq!(job.last_progress::<u32>().unwrap(), Some(3));
    }
    stop.shutdown();
    assert_eq!(running.await.unwrap().unwrap().completed, 8);
}

async fn progress_by_hand_is_durable_on_return(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let jobs = client.queue::<u32>("by-hand");
    let handle = jobs.enqueue(&1).await.unwrap();
    let untouched = jobs.enqueue(&2).await.unwrap();
    let mut events = handle.events().await.unwrap();
    assert_eq!(next_event(&mut events).await.state, JobState::Ready);

    let mut leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    assert_eq!(leased.job().id, *handle.id());
    leased.progress(&0.25).await.unwrap();
    leased.progress(&0.5).await.unwrap();
    assert_eq!(leased.job().last_progress::<f64>().unwrap(), Some(0.5));
    // Durable on return: a read sees it.
    let stored = handle.get().await.unwrap();
    assert_eq!(stored.last_progress_json(), Some("0.5"));
    assert_eq!(untouched.get().await.unwrap().last_progress_json(), None);
    leased.complete(&()).await.unwrap();

    let kinds: Vec<(EventType, Option<String>)> = {
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let event = next_event(&mut events).await;
            kinds.push((event.kind(), event.progress.map(|p| p.get().to_owned())));
        }
        kinds
    };
    assert_eq!(
        kinds,
        [
            (EventType::State(JobState::Leased), None),
            (EventType::Progress, Some("0.25".to_owned())),
            (EventType::Progress, Some("0.5".to_owned())),
            (EventType::State(JobState::Completed), None),
        ]
    );
    assert_ends(&mut events).await;
}

async fn progress_is_refused_outside_a_worker_and_over_the_limit(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let jobs = client.queue::<u32>("limits");
    let handle = jobs.enqueue(&1).await.unwrap();
    let read = handle.get().await.unwrap();
    assert!(matches!(
        read.progress(&1),
        Err(Error::InvalidRequest { .. })
    ));
    let mut leased = jobs.lease(&LeaseOptions::new()).await.unwrap().remove(0);
    let big = "x".repeat(64 * 1024);
    assert!(matches!(
        leased.progress(&big).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    // Nothing was sent: no progress on the job.
    assert_eq!(handle.get().await.unwrap().last_progress_json(), None);
    leased.release().await.unwrap();

    // In a handler too, before anything is sent.
    let worker = Worker::new(client.clone(), "limits").poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(move |job: Job<u32>| {
        let big = big.clone();
        async move {
            match job.progress(&big) {
                Err(Error::PayloadTooLarge { .. }) => Ok::<_, Failure>("refused"),
                other => Err(Failure::permanent(format!("{other:?}"))),
            }
        }
    }));
    assert_eq!(
        handle
            .wait::<String>(crate::common::PATIENCE)
            .await
            .unwrap(),
        "refused"
    );
    assert_eq!(handle.get().await.unwrap().last_progress_json(), None);
    stop.shutdown();
    running.await.unwrap().unwrap();
}

/// A handler that only reports progress keeps its job: each report is a
/// heartbeat. The worker's own heartbeats are an hour apart here, so
/// without the reports the one-second lease would end mid-run.
async fn progress_extends_the_lease(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let imports = client.queue::<u32>("imports");
    let handle = imports
        .enqueue_with(&6, queue_client::EnqueueOptions::new().max_attempts(1))
        .await
        .unwrap();
    let worker = Worker::new(client.clone(), "imports")
        .lease(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_secs(3600))
        .poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<u32>| async move {
        for step in 1..=job.payload {
            // The work itself: 300 ms a step, 1.8 s in all.
            tokio::time::sleep(Duration::from_millis(300)).await;
            job.progress(&json!({"step": step}))?;
        }
        Ok::<_, Failure>(job.payload)
    }));
    let done = handle.wait::<u32>(Duration::from_secs(30)).await.unwrap();
    assert_eq!(done, 6);
    let job = handle.get().await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Completed, 1));
    assert_eq!(
        job.last_progress::<serde_json::Value>().unwrap(),
        Some(json!({"step": 6}))
    );
    stop.shutdown();
    running.await.unwrap().unwrap();
}

/// `timeout` bounds an attempt however alive its worker is: the handler
/// runs on, reporting progress, and still loses the job at the timeout,
/// which counts the attempt and records why.
async fn a_timeout_ends_the_attempt_however_often_the_worker_reports(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let imports = client.queue::<u32>("imports");
    let handle = imports
        .enqueue_with(
            &1,
            queue_client::EnqueueOptions::new()
                .max_attempts(1)
                .timeout(Duration::from_millis(700)),
        )
        .await
        .unwrap();
    let worker = Worker::new(client.clone(), "imports")
        .lease(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_millis(100))
        .poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<u32>| async move {
        // Reports until the worker learns that the lease is gone.
        let mut step = 0u32;
        loop {
            tokio::select! {
                () = job.lease_lost() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    step += 1;
                    job.progress(&json!({"step": step}))?;
                }
            }
        }
        Ok::<_, Failure>(step)
    }));
    let err = handle
        .wait::<u32>(Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::JobFailed { .. }), "{err:?}");
    let job = handle.get().await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
    assert_eq!(job.last_error.as_deref(), Some("timed out after 700 ms"));
    assert_eq!(job.timeout_ms, Some(700));
    let started = job.started_at.unwrap();
    assert!(job.finished_at.unwrap() >= started + 700);
    stop.shutdown();
    running.await.unwrap().unwrap();
}
