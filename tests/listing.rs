//! Listing jobs through the SDK: by state (typed and as JSON) and by
//! correlation id, paged, on both transports, async and blocking.

use queue_client::{EnqueueOptions, Error, Failure, JobId, JobState, LeaseOptions};

use crate::common::Harness;
use crate::typed::{Email, email};
use crate::{both, both_blocking};

both!(
    jobs_by_state_page_oldest_first_typed_or_as_json,
    jobs_of_a_correlation_id_span_queues,
    bad_listing_arguments_are_invalid_requests,
);

both_blocking!(the_blocking_client_lists_jobs_too);

async fn jobs_by_state_page_oldest_first_typed_or_as_json(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<Email>("mail");
    let payloads: Vec<Email> = (0..5).map(email).collect();
    let handles = jobs.enqueue_batch(&payloads).await.unwrap();
    let ready: Vec<JobId> = handles.iter().map(|h| h.id().clone()).collect();
    client
        .queue::<Email>("other")
        .enqueue(&email(50))
        .await
        .unwrap();

    let first = jobs.jobs(JobState::Ready, None, 2).await.unwrap();
    let ids = |page: &[queue_client::Job<Email>]| -> Vec<JobId> {
        page.iter().map(|j| j.id.clone()).collect()
    };
    assert_eq!(ids(&first.jobs), ready[..2]);
    assert_eq!(first.jobs[0].payload, email(0));
    assert_eq!(first.next.as_ref(), Some(&ready[1]));
    let second = jobs
        .jobs(JobState::Ready, first.next.as_ref(), 2)
        .await
        .unwrap();
    let third = jobs
        .jobs(JobState::Ready, second.next.as_ref(), 2)
        .await
        .unwrap();
    assert_eq!(ids(&second.jobs), ready[2..4]);
    assert_eq!((ids(&third.jobs), third.next), (ready[4..].to_vec(), None));

    // Two leased, one of them failed for good: each state lists its own.
    let leased = jobs.lease(&LeaseOptions::new().max_jobs(2)).await.unwrap();
    let mut leased = leased.into_iter();
    let dead = leased.next().unwrap();
    let dead_id = dead.job().id.clone();
    dead.fail(Failure::permanent("bounce")).await.unwrap();
    let held = leased.next().unwrap();
    let as_json = client
        .jobs("mail", JobState::Leased, None, 10)
        .await
        .unwrap();
    assert_eq!(as_json.jobs.len(), 1);
    assert_eq!(as_json.jobs[0].id, held.job().id);
    assert_eq!(as_json.jobs[0].payload["n"], 1);
    let dead_page = client.jobs("mail", JobState::Dead, None, 10).await.unwrap();
    assert_eq!(dead_page.jobs.len(), 1);
    assert_eq!(dead_page.jobs[0].id, dead_id);
    assert_eq!(dead_page.jobs[0].state, JobState::Dead);
    let still_ready = jobs.jobs(JobState::Ready, None, 10).await.unwrap();
    assert_eq!(ids(&still_ready.jobs), ready[2..]);
    // The dead-letter list is the same page type.
    let dead_letters: queue_client::JobPage<Email> = jobs.dead_letters(None, 10).await.unwrap();
    assert_eq!(ids(&dead_letters.jobs), [dead_id]);
    // An unknown queue: an empty page.
    let none = client
        .jobs("never-used", JobState::Ready, None, 10)
        .await
        .unwrap();
    assert!(none.jobs.is_empty() && none.next.is_none());
}

async fn jobs_of_a_correlation_id_span_queues(h: Harness) {
    let client = h.client();
    let with = |id: &str| EnqueueOptions::new().correlation_id(id);
    let a = client
        .queue::<Email>("mail")
        .enqueue_with(&email(1), with("order-17"))
        .await
        .unwrap();
    client
        .queue::<Email>("mail")
        .enqueue_with(&email(2), with("order-170"))
        .await
        .unwrap();
    let b = client
        .queue::<u32>("sms")
        .enqueue_with(&3, with("order-17"))
        .await
        .unwrap();
    let odd = client
        .queue::<u32>("sms")
        .enqueue_with(&4, with("a&b+c=d%/?#"))
        .await
        .unwrap();
    let page = client
        .jobs_by_correlation("order-17", None, 1)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(&page.jobs[0].id, a.id());
    assert_eq!(page.jobs[0].queue, "mail");
    let rest = client
        .jobs_by_correlation("order-17", page.next.as_ref(), 10)
        .await
        .unwrap();
    assert_eq!(rest.jobs.len(), 1);
    assert_eq!(&rest.jobs[0].id, b.id());
    assert_eq!(rest.jobs[0].queue, "sms");
    assert_eq!(rest.jobs[0].correlation_id.as_deref(), Some("order-17"));
    assert!(rest.next.is_none());
    let odd_page = client
        .jobs_by_correlation("a&b+c=d%/?#", None, 10)
        .await
        .unwrap();
    assert_eq!(odd_page.jobs.len(), 1);
    assert_eq!(&odd_page.jobs[0].id, odd.id());
}

async fn bad_listing_arguments_are_invalid_requests(h: Harness) {
    let client = h.client();
    client.queue::<u32>("q").enqueue(&1).await.unwrap();
    let invalid = |r: queue_client::Result<queue_client::JobPage<serde_json::Value>>,
                   what: &str| match r {
        Err(Error::InvalidRequest { message }) => {
            assert!(message.contains(what), "{what}: {message}");
        }
        other => panic!("{what}: {other:?}"),
    };
    invalid(client.jobs("q", JobState::Ready, None, 0).await, "limit");
    invalid(client.jobs("q", JobState::Ready, None, 1001).await, "limit");
    invalid(client.jobs("a b", JobState::Ready, None, 10).await, "queue");
    let bogus = JobId::from("not-an-id");
    invalid(
        client.jobs("q", JobState::Ready, Some(&bogus), 10).await,
        "after",
    );
    invalid(
        client.jobs_by_correlation("", None, 10).await,
        "correlation_id",
    );
    invalid(
        client.jobs_by_correlation("has space", None, 10).await,
        "correlation_id",
    );
    invalid(
        client.jobs_by_correlation(&"x".repeat(129), None, 10).await,
        "correlation_id",
    );
    invalid(client.jobs_by_correlation("x", None, 0).await, "limit");
}

fn the_blocking_client_lists_jobs_too(h: Harness) {
    let client = h.blocking();
    let jobs = client.queue::<u32>("b");
    let first = jobs
        .enqueue_with(&1, EnqueueOptions::new().correlation_id("batch-9"))
        .unwrap();
    let second = jobs.enqueue(&2).unwrap();
    let page = jobs.jobs(JobState::Ready, None, 10).unwrap();
    let ids: Vec<&JobId> = page.jobs.iter().map(|j| &j.id).collect();
    assert_eq!(ids, [first.id(), second.id()]);
    assert_eq!(page.jobs[1].payload, 2);
    let as_json = client.jobs("b", JobState::Ready, None, 1).unwrap();
    assert_eq!(as_json.next.as_ref(), Some(first.id()));
    let by = client.jobs_by_correlation("batch-9", None, 10).unwrap();
    assert_eq!(by.jobs.len(), 1);
    assert_eq!(&by.jobs[0].id, first.id());
}
