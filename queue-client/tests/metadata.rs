//! What ties a job to its origin (correlation id, headers) and where its
//! outcome goes (callback URL): from the enqueue to the worker's handler,
//! the worker's calls about the job, its `tracing` span, and the events.

use std::collections::BTreeMap;
use std::time::Duration;

use queue_client::{
    Client, EnqueueOptions, Error, EventFilter, Failure, Job, JobState, LeaseOptions, Worker,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::both;
use crate::common::{
    Backend, Harness, Kind, PATIENCE, Recorded, RecordingProxy, capture_job_spans, logged_in_job,
    next_event,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn quick(worker: Worker) -> Worker {
    worker.poll_wait(Duration::from_millis(100))
}

both!(
    enqueue_options_round_trip,
    the_handler_runs_in_a_span_with_the_job_and_its_correlation_id,
);

async fn enqueue_options_round_trip(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let meta = client.queue::<u32>("meta");
    let mut events = client
        .events(EventFilter::new().queue("meta"))
        .await
        .unwrap();
    let handle = meta
        .enqueue_with(
            &7,
            EnqueueOptions::new()
                .correlation_id("order-7")
                .header("tenant", "acme")
                .header("traceparent", TRACEPARENT)
                .callback_url("http://127.0.0.1:9/hooks"),
        )
        .await
        .unwrap();
    let plain = meta.enqueue(&8).await.unwrap();

    let job = handle.get().await.unwrap();
    assert_eq!(job.correlation_id.as_deref(), Some("order-7"));
    let headers = BTreeMap::from([
        ("tenant".to_owned(), "acme".to_owned()),
        ("traceparent".to_owned(), TRACEPARENT.to_owned()),
    ]);
    assert_eq!(job.headers, headers);
    assert_eq!(
        job.callback_url.as_deref(),
        Some("http://127.0.0.1:9/hooks")
    );
    assert!(job.callback.is_none(), "not finished: no delivery yet");
    // The other job has none of it (over HTTP its correlation id is the
    // server-made id of its enqueue request).
    let other = plain.get().await.unwrap();
    assert_ne!(other.correlation_id.as_deref(), Some("order-7"));
    assert!(other.headers.is_empty() && other.callback_url.is_none());

    // A lease hands the worker the same.
    let mut leased = meta.lease(&LeaseOptions::new().max_jobs(2)).await.unwrap();
    assert_eq!(leased.len(), 2);
    let first = leased.remove(0);
    assert_eq!(first.job().id, job.id);
    assert_eq!(first.job().correlation_id.as_deref(), Some("order-7"));
    assert_eq!(first.job().headers, headers);
    first.complete(&70).await.unwrap();
    leased.remove(0).complete(&80).await.unwrap();
    // Finished: its callback delivery is on record.
    let done = handle.get().await.unwrap();
    assert!(done.callback.is_some(), "{done:?}");

    // Every event of the job carries its correlation id.
    let mut ours = Vec::new();
    for _ in 0..6 {
        let event = next_event(&mut events).await;
        if event.id == job.id.as_str() {
            ours.push((event.state, event.correlation_id));
        }
    }
    let corr = Some("order-7".to_owned());
    assert_eq!(
        ours,
        [
            (JobState::Ready, corr.clone()),
            (JobState::Leased, corr.clone()),
            (JobState::Completed, corr),
        ]
    );
}

async fn the_handler_runs_in_a_span_with_the_job_and_its_correlation_id(
    kind: Kind,
    backend: Backend,
) {
    capture_job_spans();
    let h = Harness::new(kind, backend);
    let client = h.client();
    let queue = format!("spans-async-{kind:?}-{backend}");
    let jobs = client.queue::<u32>(&queue);
    // Another job first, so that the span's job is not simply the first.
    let other = jobs
        .enqueue_with(&1, EnqueueOptions::new().correlation_id("span-other"))
        .await
        .unwrap();
    let handle = jobs
        .enqueue_with(&2, EnqueueOptions::new().correlation_id("span-corr"))
        .await
        .unwrap();
    let worker = quick(Worker::new(client.clone(), &queue));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<u32>| async move {
        tokio::task::yield_now().await;
        tracing::info!(payload = job.payload, "handling");
        Ok::<_, Failure>(job.payload)
    }));
    assert_eq!(other.wait::<u32>(PATIENCE).await.unwrap(), 1);
    assert_eq!(handle.wait::<u32>(PATIENCE).await.unwrap(), 2);
    stop.shutdown();
    running.await.unwrap().unwrap();

    let logged: Vec<_> = logged_in_job(&queue, handle.id().as_str())
        .into_iter()
        .filter(|e| e.message == "handling")
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let span = &logged[0].span;
    assert_eq!(span["job_id"], handle.id().as_str());
    assert_eq!(span["queue"], queue);
    assert_eq!(span["attempt"], "1");
    assert_eq!(span["correlation_id"], "span-corr");
}

/// An enqueue with `X-Request-Id` and `traceparent` request headers, made
/// without the SDK (which sets neither); returns the job's id.
async fn enqueue_with_request_headers(url: &str, queue: &str, payload: u32) -> String {
    let address = url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = format!("{{\"payload\":{payload}}}");
    let request = format!(
        "POST /v1/queues/{queue}/jobs HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: application/json\r\nX-Request-Id: req-abc-123\r\n\
         traceparent: {TRACEPARENT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, socket.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let json = response.split("\r\n\r\n").nth(1).unwrap();
    let job: serde_json::Value = serde_json::from_str(json).unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// The requests about job `id` (`/v1/jobs/{id}/…`), as (action, request id).
fn calls_about(requests: &[Recorded], id: &str) -> Vec<(String, Option<String>)> {
    let prefix = format!("/v1/jobs/{id}/");
    requests
        .iter()
        .filter_map(|r| {
            let action = r.path.strip_prefix(&prefix)?;
            Some((action.to_owned(), r.headers.get("x-request-id").cloned()))
        })
        .collect()
}

async fn a_request_id_given_at_enqueue_follows_the_job_to_the_worker_and_its_events(
    backend: Backend,
) {
    let h = Harness::new(Kind::Http, backend);
    let url = h.server.as_ref().unwrap().url.clone();
    let proxy = RecordingProxy::start(&url).await;
    let client = h.client();
    let mut events = client
        .events(EventFilter::new().queue("xrid"))
        .await
        .unwrap();
    let id = enqueue_with_request_headers(&url, "xrid", 5).await;

    let (seen, mut handed) = mpsc::unbounded_channel();
    let worker = quick(Worker::new(Client::connect(&proxy.url).unwrap(), "xrid"));
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(move |job: Job<u32>| {
        let seen = seen.clone();
        async move {
            seen.send((job.correlation_id.clone(), job.headers.clone()))
                .unwrap();
            Ok::<_, Failure>(job.payload + 1)
        }
    }));
    let handle = client.job::<u32>(id.as_str());
    assert_eq!(handle.wait::<u32>(PATIENCE).await.unwrap(), 6);
    stop.shutdown();
    running.await.unwrap().unwrap();

    let (correlation_id, headers) = handed.recv().await.unwrap();
    assert_eq!(correlation_id.as_deref(), Some("req-abc-123"));
    assert_eq!(headers["traceparent"], TRACEPARENT);
    for state in [JobState::Ready, JobState::Leased, JobState::Completed] {
        let event = next_event(&mut events).await;
        assert_eq!((event.id.as_str(), event.state), (id.as_str(), state));
        assert_eq!(event.correlation_id.as_deref(), Some("req-abc-123"));
    }
    // The worker settled its one job with a settle request, which carries
    // the job's correlation id as its own complete call would.
    let completed = proxy
        .wait_for("settling the job", |r| r.path.ends_with("/settle"))
        .await;
    assert_eq!(
        (completed.method.as_str(), completed.path.as_str()),
        ("POST", "/v1/queues/xrid/settle")
    );
    assert_eq!(completed.headers["x-request-id"], "req-abc-123");
}

/// With one call per job (`settle_and_lease(false)`), every call carries
/// the job's correlation id. (With settle, a request about one job does;
/// see the test above.)
async fn the_worker_sends_the_correlation_id_on_every_call_about_the_job(backend: Backend) {
    let h = Harness::new(Kind::Http, backend);
    let proxy = RecordingProxy::start(&h.server.as_ref().unwrap().url).await;
    let client = h.client();
    let calls = client.queue::<String>("calls");
    let enqueue = |what: &'static str| {
        let calls = calls.clone();
        async move {
            calls
                .enqueue_with(
                    &what.to_owned(),
                    EnqueueOptions::new().correlation_id(format!("corr-{what}")),
                )
                .await
                .unwrap()
        }
    };
    let completes = enqueue("complete").await;
    let fails = enqueue("fail").await;
    let released = enqueue("release").await;

    let worker = Worker::new(Client::connect(&proxy.url).unwrap(), "calls")
        .settle_and_lease(false)
        .concurrency(3)
        .poll_wait(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(20))
        .shutdown_timeout(Duration::ZERO);
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(|job: Job<String>| async move {
        match job.payload.as_str() {
            "complete" => {
                job.progress(&"half")?;
                Ok("done".to_owned())
            }
            "fail" => Err(Failure::permanent("no")),
            // Runs until the worker gives it up at shutdown.
            _ => std::future::pending().await,
        }
    }));
    assert_eq!(completes.wait::<String>(PATIENCE).await.unwrap(), "done");
    assert!(matches!(
        fails.wait::<String>(PATIENCE).await,
        Err(Error::JobFailed { .. })
    ));
    let heartbeat = format!("/v1/jobs/{}/heartbeat", released.id());
    proxy
        .wait_for("a heartbeat of the running job", |r| r.path == heartbeat)
        .await;
    stop.shutdown();
    let report = running.await.unwrap().unwrap();
    assert_eq!(
        (report.completed, report.failed, report.released),
        (1, 1, 1)
    );
    assert_eq!(released.status().await.unwrap(), JobState::Ready);

    let requests = proxy.requests();
    for (handle, what, actions) in [
        (&completes, "complete", &["heartbeat", "complete"][..]),
        (&fails, "fail", &["fail"][..]),
        (&released, "release", &["heartbeat", "release"][..]),
    ] {
        let calls = calls_about(&requests, handle.id().as_str());
        for action in actions {
            assert!(
                calls.iter().any(|(a, _)| a == action),
                "no {action} of {what}: {calls:?}"
            );
        }
        for (action, request_id) in &calls {
            assert_eq!(
                request_id.as_deref(),
                Some(format!("corr-{what}").as_str()),
                "{action} of {what}"
            );
        }
    }
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_id_given_at_enqueue_follows_the_job_to_the_worker_and_its_events;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_worker_sends_the_correlation_id_on_every_call_about_the_job;
}
