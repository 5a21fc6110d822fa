//! What only the HTTP transport has: auth, URLs, unreachable or silent
//! servers, and retry safety when a response is lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use queue_client::{Client, ClientOptions, EnqueueOptions, Error, RetryPolicy};
use queue_server::ServerConfig;

use crate::common::{Backend, Harness, Kind, LossyProxy, no_retries, silent_server};

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

async fn the_bearer_token_is_sent_and_a_wrong_one_is_unauthorized(backend: Backend) {
    let config = ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let h = Harness::with_config(Kind::Http, backend, config);
    let url = h.url.clone().unwrap();
    for options in [ClientOptions::new(), ClientOptions::new().token("wrong")] {
        let client = Client::connect_with(&url, options).unwrap();
        let error = client.queue::<u32>("q").enqueue(&1).await.unwrap_err();
        assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
        assert!(!error.is_transient());
        // Health needs no token.
        client.health().await.unwrap();
    }
    let client = Client::connect_with(&url, ClientOptions::new().token("s3cret")).unwrap();
    client.queue::<u32>("q").enqueue(&1).await.unwrap();
    assert_eq!(h.core.stats("q").await.unwrap().ready, 1);
    let error = Client::connect_with(&url, ClientOptions::new().token("bad\ntoken")).unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
}

#[test]
fn urls_that_cannot_work_are_refused_up_front() {
    for url in [
        "https://example.com",
        "localhost:7878",
        "http://h/?q=1",
        "",
        "ftp://h",
    ] {
        assert!(
            matches!(Client::connect(url), Err(Error::InvalidUrl { .. })),
            "{url:?}"
        );
    }
    Client::connect("http://127.0.0.1:7878/prefix/").unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error_after_the_retries() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = Client::connect_with(
        &format!("http://{closed}"),
        ClientOptions::new().retry(quick_retries()),
    )
    .unwrap();
    let error = client.queue::<u32>("q").enqueue(&1).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(client.health().await.is_err());
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let url = silent_server().await;
    let options = no_retries().request_timeout(Duration::from_millis(200));
    let client = Client::connect_with(&url, options).unwrap();
    let error = client.stats("q").await.unwrap_err();
    assert!(
        matches!(error, Error::Timeout { after } if after == Duration::from_millis(200)),
        "{error:?}"
    );
}

async fn a_lost_response_without_retries_still_took_effect(backend: Backend) {
    // The premise of the retry tests: the proxy really loses responses of
    // requests that did take effect.
    let h = Harness::new(Kind::Http, backend);
    let proxy = LossyProxy::start(h.url.as_ref().unwrap(), 1).await;
    let client = Client::connect_with(&proxy.url, no_retries()).unwrap();
    let error = client.queue::<u32>("q").enqueue(&1).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert_eq!(proxy.swallowed.load(Ordering::SeqCst), 1);
    assert_eq!(h.core.stats("q").await.unwrap().ready, 1);
}

async fn a_retried_enqueue_whose_response_was_lost_creates_one_job(backend: Backend) {
    let h = Harness::new(Kind::Http, backend);
    let proxy = LossyProxy::start(h.url.as_ref().unwrap(), 1).await;
    let client =
        Client::connect_with(&proxy.url, ClientOptions::new().retry(quick_retries())).unwrap();
    let handle = client.queue::<u32>("q").enqueue(&7).await.unwrap();
    assert_eq!(
        proxy.swallowed.load(Ordering::SeqCst),
        1,
        "a response was lost"
    );
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        2,
        "and the enqueue retried"
    );
    assert!(
        !handle.replayed(),
        "our own retry is not the caller's replay"
    );
    assert_eq!(h.core.stats("q").await.unwrap().ready, 1, "exactly one job");
    assert_eq!(handle.get().await.unwrap().payload, 7);
}

async fn retried_batches_and_keyed_enqueues_create_each_job_once(backend: Backend) {
    let h = Harness::new(Kind::Http, backend);
    let proxy = LossyProxy::start(h.url.as_ref().unwrap(), 2).await;
    let client =
        Client::connect_with(&proxy.url, ClientOptions::new().retry(quick_retries())).unwrap();
    let queue = client.queue::<u32>("q");
    let handles = queue.enqueue_batch(&[1, 2, 3, 4, 5]).await.unwrap();
    let keyed = queue
        .enqueue_with(&6, EnqueueOptions::new().idempotency_key("order-6"))
        .await
        .unwrap();
    assert_eq!(proxy.swallowed.load(Ordering::SeqCst), 2);
    assert_eq!(handles.len(), 5);
    assert_eq!(keyed.get().await.unwrap().payload, 6);
    assert_eq!(
        h.core.stats("q").await.unwrap().ready,
        6,
        "five plus one, no duplicates"
    );
}

async fn a_completion_whose_answer_was_lost_is_retried_and_reported_done(backend: Backend) {
    let h = Harness::new(Kind::Http, backend);
    let direct = h.client();
    let handle = direct.queue::<u32>("q").enqueue(&1).await.unwrap();
    // Leased through a proxy that loses the second connection's answer:
    // the lease goes through, the complete lands but its answer is lost.
    let proxy = LossyProxy::start_dropping(h.url.as_ref().unwrap(), &[1]).await;
    let options = ClientOptions::new()
        .retry(quick_retries())
        .pool_max_idle_per_host(0);
    let via_proxy = Client::connect_with(&proxy.url, options).unwrap();
    let mut leased = via_proxy
        .queue::<u32>("q")
        .lease(&queue_client::LeaseOptions::new())
        .await
        .unwrap();
    leased.pop().unwrap().complete(&"done").await.unwrap();
    assert_eq!(proxy.swallowed.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.wait::<String>(Duration::from_secs(5)).await.unwrap(),
        "done"
    );
}

async fn a_worker_started_before_its_server_waits_for_it_and_then_works(backend: Backend) {
    let addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let client = Client::connect(&format!("http://{addr}")).unwrap();
    let worker =
        queue_client::Worker::new(client.clone(), "late").poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run(|job: queue_client::Job<u32>| async move {
        Ok::<_, queue_client::Failure>(job.payload + 1)
    }));
    // The worker's first leases are refused connections: it retries.
    let error = client.stats("late").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");

    let h = Harness::http_at(backend, &addr.to_string());
    let handle = h.client().queue::<u32>("late").enqueue(&41).await.unwrap();
    assert_eq!(
        handle.wait::<u32>(crate::common::PATIENCE).await.unwrap(),
        42
    );
    stop.shutdown();
    assert_eq!(task.await.unwrap().unwrap().completed, 1);
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bearer_token_is_sent_and_a_wrong_one_is_unauthorized;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_response_without_retries_still_took_effect;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_enqueue_whose_response_was_lost_creates_one_job;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retried_batches_and_keyed_enqueues_create_each_job_once;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_completion_whose_answer_was_lost_is_retried_and_reported_done;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_started_before_its_server_waits_for_it_and_then_works;
}
